"""A prefill chunk's keys and values for MLX's fused SDPA on a GPU: the visible past of the
quantized cache dequantized, with the chunk's own exact K/V after it, in one buffer each.

With MLX ops that is `mx.dequantize` then `mx.concatenate`, which writes the past twice and reads
it once more; `shaders/prefill_span.body` writes each element once, in one launch for K and V.
`gather` takes the kernel where it runs and covers the layout, else the MLX ops (`reference`, also
the tests' oracle); `ENABLED = False` switches the kernel off (benches' A/B). docs/kernels.md,
"Prefill".
"""

import functools

import mlx.core as mx

from app import log
from app.engine import kernels, layout, rotation

logger = log.get("attention")

ENABLED = True
TPB = 256                      # threads per block: 256 pieces of 8 elements, 4 KB of fp16 per block
INPUTS = ("kp", "ks", "kb", "vp", "vs", "vb", "fk", "fv", "kmean", "vmean", "params")
OUTPUTS = ("ko", "vo")


def reference(k, v, *, lo, stop, fresh, dtype, k_bits, v_bits, k_group, v_group, rotate_k=False, rotate_v=False,
              k_mean=None, v_mean=None) -> tuple:
    """(keys, values) (B, Hkv, (stop - lo) + L, D) in dtype, by MLX ops: slots [lo, stop) of the
    cache dequantized (in dtype), then the chunk's (fresh) K and V, if any. With the transforms,
    the slots go back to the model's space first (mean added, rotation undone, in float32), and
    fresh is the chunk as the model made it."""
    parts_k, parts_v = [], []
    if stop > lo:
        for parts, t, bits, group, rot, mean in ((parts_k, k, k_bits, k_group, rotate_k, k_mean),
                                                 (parts_v, v, v_bits, v_group, rotate_v, v_mean)):
            plain = not rot and mean is None
            x = layout.dequantize(tuple(a[:, :, lo:stop] for a in t), layout.Quant(bits, group),
                                  dtype if plain else mx.float32)
            if not plain:
                x = x if mean is None else x + mean.astype(mx.float32)
                x = (rotation.rotate(x) if rot else x).astype(dtype)
            parts.append(x)
    if fresh is not None:
        parts_k.append(fresh[0].astype(dtype))
        parts_v.append(fresh[1].astype(dtype))
    keys = parts_k[0] if len(parts_k) == 1 else mx.concatenate(parts_k, axis=2)
    values = parts_v[0] if len(parts_v) == 1 else mx.concatenate(parts_v, axis=2)
    return keys, values


def covers(k, v, fresh, dtype, k_bits, v_bits, k_group, v_group, rotate=False) -> bool:
    """Whether the kernel takes this call (else `gather` uses the MLX ops). `rotate`: the call
    undoes a rotation, whose butterflies run across a row's D/8 lanes of one warp."""
    D = fresh[0].shape[-1] if fresh is not None else k[0].shape[-1] * 32 // k_bits
    return (ENABLED and kernels.available() is not None and dtype in (mx.float16, mx.float32)
            and k_bits in kernels.BITS and v_bits in kernels.BITS and D % 8 == 0
            and all(g % 8 == 0 and D % g == 0 for g in (k_group, v_group))
            and all(a[1].dtype == a[2].dtype == mx.float16 for a in (k, v))
            and (fresh is None or fresh[0].dtype == fresh[1].dtype)
            and (not rotate or (D & (D - 1) == 0 and D // 8 <= 32)))


def copies(k, v, fresh, dtype, k_bits, v_bits, k_group, v_group) -> int:
    """Buffers of the span's size a gather writes: one with the kernel; with the MLX ops two when
    a dequantized past is concatenated with the chunk (the prefill's memory budget counts them)."""
    if covers(k, v, fresh, dtype, k_bits, v_bits, k_group, v_group):
        return 1
    return 2 if fresh is not None else 1


def gather(k, v, *, lo, stop, fresh, dtype, k_bits, v_bits, k_group, v_group, poison=False, **transforms) -> tuple:
    """`reference`'s result, by the kernel where `covers` says it runs (transforms: reference's
    rotate_k, rotate_v, k_mean, v_mean)."""
    kw = dict(k_bits=k_bits, v_bits=v_bits, k_group=k_group, v_group=v_group)
    rotate = transforms.get("rotate_k", False) or transforms.get("rotate_v", False)
    if not covers(k, v, fresh, dtype, rotate=rotate, **kw):
        _say("MLX ops (dequantize, then concatenate)")
        return reference(k, v, lo=lo, stop=stop, fresh=fresh, dtype=dtype, **kw, **transforms)
    _say(f"{kernels.available()} span kernel")
    return launch(k, v, lo=lo, stop=stop, fresh=fresh, dtype=dtype, poison=poison, **kw, **transforms)


@functools.lru_cache(maxsize=4)
def _say(how: str):
    logger.info("prefill: the past dequantized for SDPA by the %s", how)


def template(dtype, fresh_dtype, D, k_bits, v_bits, k_group, v_group, rotate_k=False, rotate_v=False,
             k_centered=False, v_centered=False) -> tuple:
    return (("TO", dtype), ("TF", fresh_dtype), ("D", D), ("KBITS", k_bits), ("VBITS", v_bits),
            ("KGROUP", k_group), ("VGROUP", v_group), ("TPB", TPB), ("ROTK", bool(rotate_k)),
            ("ROTV", bool(rotate_v)), ("KCTR", bool(k_centered)), ("VCTR", bool(v_centered)))


def launch(k, v, *, lo, stop, fresh, dtype, k_bits, v_bits, k_group, v_group, rotate_k=False, rotate_v=False,
           k_mean=None, v_mean=None, poison=False) -> tuple:
    """The kernel's call (see shaders/prefill_span.body); `poison` fills the outputs with NaN first
    (tests: every element written)."""
    backend = kernels.available()
    B, n_kv, t_alloc = k[0].shape[:3]
    D = k[0].shape[3] * 32 // k_bits
    n = max(0, stop - lo)
    if not (0 <= lo and stop <= t_alloc):
        raise kernels.KernelUnsupported(f"slots [{lo}, {stop}) are outside the cache's {t_alloc}.")
    fk, fv = fresh if fresh is not None else (kernels._unused(), kernels._unused())
    L = fk.shape[2] if fresh is not None else 0
    if L and (fk.shape != (B, n_kv, L, D) or fv.shape != fk.shape):
        raise kernels.KernelUnsupported(f"chunk of shape {fk.shape} does not match the cache.")
    rows = n + L
    if rows == 0:
        empty = mx.zeros((B, n_kv, 0, D), dtype=dtype)
        return empty, empty
    means = [kernels._unused() if m is None else m.astype(mx.float32) for m in (k_mean, v_mean)]
    build = kernels._build("prefill_span", backend, INPUTS, OUTPUTS,
                           template(dtype, fk.dtype, D, k_bits, v_bits, k_group, v_group, rotate_k, rotate_v,
                                    k_mean is not None, v_mean is not None))
    blocks = -(-rows * (D // 8) // TPB)
    ko, vo = build(inputs=[*k, *v, fk, fv, *means, kernels._params(lo, n, L, t_alloc)],
                   grid=(blocks * TPB, B * n_kv * 2, 1), threadgroup=(TPB, 1, 1),
                   output_shapes=[(B, n_kv, rows, D)] * 2, output_dtypes=[dtype] * 2,
                   init_value=float("nan") if poison else None)
    return ko, vo


def mlx_source(backend: str, D=128, k_bits=4, v_bits=4, k_group=64, v_group=64, dtype="float16",
               fresh_dtype="float32", transforms: bool = True) -> str:
    """The kernel's whole source for one variant, assembled as MLX would (the compile checks)."""
    tpl = template(getattr(mx, dtype), getattr(mx, fresh_dtype), D, k_bits, v_bits, k_group, v_group,
                   *(transforms,) * 4)
    inputs = [("kp", "uint32", 4096, 4), ("ks", "float16", 4096, 4), ("kb", "float16", 4096, 4),
              ("vp", "uint32", 4096, 4), ("vs", "float16", 4096, 4), ("vb", "float16", 4096, 4),
              ("fk", fresh_dtype, 4096, 4), ("fv", fresh_dtype, 4096, 4), ("kmean", "float32", 128, 4),
              ("vmean", "float32", 128, 4), ("params", "uint8", 1, 2)]
    return kernels.mlx_source("prefill_span", backend, tpl, inputs, [("ko", dtype), ("vo", dtype)])[1]
