"""Which precision each layer's K and V get: the modes fp16, int8, int4 and auto, and the rule
behind auto (evidence in docs/kv-cache.md).

Why keys and values differ: a key error reaches the softmax multiplied by the attention scale
(and by |q|), a value error only averages into the output. The key-error gain of a model is
`attention_scale * sqrt(head_dim)`: 1 for the usual 1/sqrt(d) scale, 16 for a 256-dim head
with scale 1.0 (Gemma 4, tiny-gemma).

Besides the four modes, an explicit spec such as `k8g128v4g64r` (K 8-bit group 128, V 4-bit
group 64 rotated; a `c` after `r` centers) is accepted by the benchmarks, so any candidate can be measured the same way.
"""

import math
import re
from dataclasses import dataclass

from app.engine import rotation
from app.engine.errors import FolioError
from app.engine.layout import LayerSpec, Quant

MODES = ("auto", "int4", "int8", "fp16")
_SPEC = re.compile(r"^k(4|8)g(32|64|128)(r?)(c?)v(4|8)g(32|64|128)(r?)(c?)$")
# Every compressed mode rotates and centers: both are free at attention time and won every
# measurement (docs/kv-cache.md).
INT4 = Quant(4, 64, rotate=True, center=True)
INT8 = Quant(8, 64, rotate=True, center=True)


class PolicyError(FolioError):
    pass


@dataclass(frozen=True)
class Policy:
    """A name for the stats and one LayerSpec per KV layer (None keeps mlx-lm's fp16 cache)."""

    name: str
    layers: tuple

    def bits_per_element(self, shape, tokens: int | None = None) -> float:
        """Mean stored bits per K/V element with `tokens` of context (sliding windows held to their size)."""
        tokens = tokens or shape.max_context
        held = [min(tokens, w) if w else tokens for w in shape.windows]
        bits = [s.bits_per_element if s else 16.0 for s in self.layers]
        return sum(b * n for b, n in zip(bits, held)) / max(1, sum(held))

    def bytes_per_token(self, shape) -> float:
        """Bytes one more token costs over all KV layers (the upper bound the memory guard uses)."""
        return float(sum(
            s.bytes_per_token(shape.n_kv_heads, shape.head_dim) if s else 2 * shape.n_kv_heads * shape.head_dim * 2
            for s in self.layers
        ))


def key_gain(shape) -> float:
    scale = shape.attention_scale if shape.attention_scale is not None else shape.head_dim**-0.5
    return scale * math.sqrt(shape.head_dim)


def parse_spec(text: str, head_dim: int) -> LayerSpec:
    m = _SPEC.match(text)
    if not m:
        raise PolicyError(f"KV mode {text!r} is not one of {', '.join(MODES)} or a spec like k8g128v4g64r.")
    kb, kg, kr, kc, vb, vg, vr, vc = m.groups()
    spec = LayerSpec(Quant(int(kb), int(kg), bool(kr), bool(kc)), Quant(int(vb), int(vg), bool(vr), bool(vc)))
    _check(spec, head_dim)
    return spec


def _check(spec: LayerSpec, head_dim: int):
    for name, q in (("K", spec.k), ("V", spec.v)):
        if not q.fits(head_dim):
            raise PolicyError(f"{name} group {q.group} does not divide this model's head_dim {head_dim}.")
        if q.rotate and not rotation.supports(head_dim):
            raise PolicyError(f"A Hadamard rotation needs a power-of-two head_dim; this model has {head_dim}.")


def _fit(q: Quant, head_dim: int) -> Quant:
    """The nearest variant of `q` this head_dim can store: no rotation or smaller groups if needed."""
    rotate = q.rotate and rotation.supports(head_dim)
    group = q.group
    while head_dim % group and group > 32:
        group //= 2
    return Quant(q.bits, group, rotate, q.center)


def choose(shape, mode: str) -> Policy:
    """The policy for `mode` on a model of this shape; raises PolicyError for what cannot be stored."""
    n = shape.kv_layers
    if mode == "fp16":
        return Policy("fp16", (None,) * n)
    if shape.head_dim % 32:
        raise PolicyError(f"Compressed KV modes need a head_dim divisible by 32; this model has {shape.head_dim}.")
    d = shape.head_dim
    if mode == "int8":
        spec = LayerSpec(_fit(INT8, d), _fit(INT8, d))
    elif mode == "int4":
        spec = LayerSpec(_fit(INT4, d), _fit(INT4, d))
    elif mode == "auto":
        spec = _auto(shape)
        return Policy(f"auto ({spec.tag()}; key gain {key_gain(shape):.3g})", (spec,) * n)
    else:
        return Policy(mode, (parse_spec(mode, d),) * n)
    return Policy(mode, (spec,) * n)


def _auto(shape) -> LayerSpec:
    """8-bit keys (group 128) and 4-bit values, both rotated and centered: 6.375 bits per element.

    Measured (docs/kv-cache.md): on tiny-gemma (key gain 16) 4-bit keys lose 10x more KL than
    this; on tiny-llama (gain 1) int4 meets auto's targets at 1,024 tokens but not at 3,072, where
    8-bit keys cut the KL 16x. So every model gets 8-bit keys; what depends on the shape is what
    its head_dim can store (groups, rotation), and the key gain is kept in the policy's name.
    """
    d = shape.head_dim
    return LayerSpec(_fit(Quant(8, 128, True, True), d), _fit(INT4, d))
