"""The compressed KV layout, defined once: read by the cache, the reference attention, the kernels,
save/restore and the stats.

K and V of a layer are each stored exactly as `mx.quantize(x, group_size, bits)` returns them
(MLX's affine format): `packed` uint32 (B, n_kv_heads, T_alloc, head_dim * bits / 32) and
`scales`, `biases` float16 (B, n_kv_heads, T_alloc, head_dim / group_size); element i of a group
is `scale * q_i + bias`. Only the first `length` slots are valid. K and V may differ in bits and
group size, and either may be Hadamard-rotated along head_dim before quantizing (rotation.py).
"""

from dataclasses import dataclass

import mlx.core as mx

BITS = (4, 8)
GROUPS = (32, 64, 128)
SCALE_DTYPE = mx.float16
SCALE_BYTES = 2  # scale and bias are float16


@dataclass(frozen=True)
class Quant:
    """How one of K or V is stored."""

    bits: int = 4
    group: int = 64
    rotate: bool = False  # Hadamard rotation along head_dim before quantizing
    # Subtract a per-head mean vector fixed at the first update before quantizing: it shrinks
    # each group's range, and softmax ignores a shift shared by all keys (for V, Σp = 1 adds it back).
    center: bool = False

    def __post_init__(self):
        if self.bits not in BITS or self.group not in GROUPS:
            raise ValueError(f"unsupported quantization bits={self.bits} group={self.group}")

    @property
    def bits_per_element(self) -> float:
        # The code itself, plus one fp16 scale and one fp16 bias per group.
        return self.bits + 2 * SCALE_BYTES * 8 / self.group

    def bytes_per_vector(self, head_dim: int) -> int:
        return head_dim * self.bits // 8 + 2 * SCALE_BYTES * (head_dim // self.group)

    def fits(self, head_dim: int) -> bool:
        return head_dim % self.group == 0 and (head_dim * self.bits) % 32 == 0

    def tag(self) -> str:
        return f"{self.bits}b/g{self.group}" + ("+rot" if self.rotate else "") + ("+ctr" if self.center else "")


@dataclass(frozen=True)
class LayerSpec:
    """The storage of one layer's cache: K and V quantizations."""

    k: Quant
    v: Quant

    @property
    def bits_per_element(self) -> float:
        return (self.k.bits_per_element + self.v.bits_per_element) / 2

    def bytes_per_token(self, n_kv_heads: int, head_dim: int) -> int:
        return n_kv_heads * (self.k.bytes_per_vector(head_dim) + self.v.bytes_per_vector(head_dim))

    def tag(self) -> str:
        return f"K {self.k.tag()} V {self.v.tag()}"

    def to_dict(self) -> dict:
        return {"k": [self.k.bits, self.k.group, self.k.rotate, self.k.center],
                "v": [self.v.bits, self.v.group, self.v.rotate, self.v.center]}

    @classmethod
    def from_dict(cls, d: dict) -> "LayerSpec":
        return cls(Quant(*d["k"]), Quant(*d["v"]))


def quantize(x: mx.array, q: Quant) -> tuple[mx.array, mx.array, mx.array]:
    """(..., head_dim) -> (packed, scales, biases) in the layout above (rotation not applied here)."""
    packed, scales, biases = mx.quantize(x.astype(SCALE_DTYPE), group_size=q.group, bits=q.bits)
    return packed, scales, biases


def dequantize(t: tuple, q: Quant, dtype=mx.float32) -> mx.array:
    """The stored values in `dtype`, computed in `dtype` (so float32 is not rounded through fp16)."""
    packed, scales, biases = t
    return mx.dequantize(packed, scales.astype(dtype), biases.astype(dtype), group_size=q.group, bits=q.bits)


def empty(B: int, n_kv_heads: int, slots: int, head_dim: int, q: Quant) -> tuple:
    shape = (B, n_kv_heads, slots)
    return (
        mx.zeros((*shape, head_dim * q.bits // 32), dtype=mx.uint32),
        mx.zeros((*shape, head_dim // q.group), dtype=SCALE_DTYPE),
        mx.zeros((*shape, head_dim // q.group), dtype=SCALE_DTYPE),
    )
