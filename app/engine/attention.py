"""Attention over the compressed KV cache: the reference (MLX ops), the dispatch to a fused kernel,
and the one seam through which mlx-lm's models reach them.

The seam: every mlx-lm model we run calls `mlx_lm.models.base.scaled_dot_product_attention`,
which hands any cache with a `bits` attribute to `base.quantized_scaled_dot_product_attention`,
looked up in base's globals at call time. `install()` wraps that one global: when the keys it
receives are a `Compressed` view (what Folio's caches return from `update_and_fetch`), Folio's
attention runs; anything else goes to mlx-lm's original. `check_seam()` fails loudly if a future
mlx-lm moves it, and tests/test_attention_reference.py runs it.

The reference walks the cache in blocks with an online softmax (fp32). Decode scores each block
with `mx.quantized_matmul` straight on the packed codes; prefill unpacks one block at a time for
a plain matmul. No fp16 K or V of the context is ever materialized, and peak memory stays a few
blocks above the cache itself. On a GPU, decode runs the fused kernels, and a prefill chunk
dequantizes the past it sees once (a bounded transient copy for one layer) for MLX's fused SDPA,
the blocked reference being launch- and sync-bound there. docs/kv-cache.md has the layout, the
seam and the measurements.
"""

import functools
import math
import os
from dataclasses import dataclass

import mlx.core as mx
from mlx_lm.models import base

from app import log
from app.engine import layout, prefill_span, rotation
from app.engine.errors import FolioError

logger = log.get("attention")

# Masked scores: finite, so a row with no visible key in a block gives exp(0)=1 garbage that the
# next block's larger running max multiplies by exp(-huge)=0, instead of NaN from -inf - -inf.
_NEG = -1e30
DECODE_BLOCK = 8192
# Prefill score blocks are sized to about this many bytes of fp32 scores.
PREFILL_SCORE_BYTES = 4 * 2**20
# From this many query rows per KV head, a block is unpacked to float32 for a plain matmul.
UNPACK_ROWS = 32
# Evaluate the softmax state after each prefill block (False: MLX schedules all blocks at once).
EVAL_BLOCKS = True
# A GPU prefill chunk brings the past back to the model's space in the span kernel instead of
# rotating q and the output around SDPA (_prefill_model_space): three launches a layer fewer.
# Measured on an H100 and an H200 (docs/benchmarks.md, eleventh session: as fast or faster end to
# end in every mirrored pair); False takes the rotated path (bench/e2e_device.py's -rotated modes).
PREFILL_MODEL_SPACE = True
# Decode runs through mx.compile'd steps (one trace per variant): the same arithmetic in fewer
# dispatched ops. False takes the plain-ops path (tests compare the two).
COMPILE = True


class SeamMoved(FolioError):
    """mlx-lm no longer routes quantized caches where Folio expects."""


# -- the reference -----------------------------------------------------------------------------
def _blocks(start: int, stop: int, size: int):
    for j in range(start, stop, size):
        yield j, min(j + size, stop)


def _slice(t: tuple, j0: int, j1: int, dtype) -> tuple:
    packed, scales, biases = (x[:, :, j0:j1] for x in t)
    return packed, scales.astype(dtype), biases.astype(dtype)


def _attend(q, k, v, *, scale, length, k_bits, v_bits, k_group, v_group, window, block, fresh=None, unpack=None,
            tail=None, skip=None):
    """q (B, n_heads, L, D); the L queries are the last L of `length` positions.

    `fresh` = the exact (K, V) of those L positions, float32 (B, n_kv_heads, L, D): a prefill
    chunk's own keys and values are in memory anyway, so only the past is read compressed.
    `tail` = a decode's ExactTail, the newest tokens after the `length` quantized ones, which
    the query sees whole; `skip` = (first slot, count) of slots it does not see (Compressed).
    """
    B, Hq, L, D = q.shape
    Hkv = k[0].shape[1]
    R = Hq // Hkv
    f32 = mx.float32
    # GQA without copies: the R query heads sharing a KV head become R*L rows against it.
    x = (q.astype(f32) * scale).reshape(B, Hkv, R * L, D)
    first = length - L  # position of the first query
    lo, stop = _visible(length, L, window, fresh)
    run = None  # (running max, running sum, accumulator) of the online softmax

    def fold(run, s, j0, j1, values):
        # Causal/window mask only where this block is not fully visible to every query.
        if j0 is not None and (j1 - 1 > first or (window is not None and j0 <= length - 1 - window)):
            qpos = mx.arange(first, length)[:, None]
            kpos = mx.arange(j0, j1)[None]
            visible = kpos <= qpos
            if window is not None:
                visible = visible & (kpos > qpos - window)
            s = mx.where(visible, s.reshape(B, Hkv, R, L, j1 - j0), _NEG).reshape(B, Hkv, R * L, j1 - j0)
        if skip is not None and j0 is not None:
            s = mx.where(_skipped(skip, j0, j1, k[0].shape[2]), _NEG, s)
        bm = s.max(axis=-1, keepdims=True)
        if run is None:
            p = mx.exp(s - bm)
            return bm, p.sum(axis=-1, keepdims=True), values(p)
        m, l, acc = run
        m_new = mx.maximum(m, bm)
        alpha = mx.exp(m - m_new)
        p = mx.exp(s - m_new)
        return m_new, l * alpha + p.sum(axis=-1, keepdims=True), acc * alpha + values(p)

    # Few query rows (decode): multiply straight on the packed codes. Many rows (prefill): unpack
    # one block to float32 and use a plain matmul, whose cost the rows amortize (6x faster on CPU).
    if unpack is None:
        unpack = R * L >= UNPACK_ROWS
    for j0, j1 in _blocks(lo, stop, block):
        kb, vb = _slice(k, j0, j1, f32), _slice(v, j0, j1, f32)
        if unpack:
            kd = mx.dequantize(*kb, group_size=k_group, bits=k_bits)
            vd = mx.dequantize(*vb, group_size=v_group, bits=v_bits)
            run = fold(run, x @ kd.swapaxes(-1, -2), j0, j1, lambda p, vd=vd: p @ vd)
            if EVAL_BLOCKS and (j1 < stop or fresh is not None):
                # MLX would otherwise schedule every block's scores before folding any of them
                # (after the last block there is nothing left to schedule: no sync needed).
                mx.eval(run)
        else:
            s = mx.quantized_matmul(x, *kb, transpose=True, group_size=k_group, bits=k_bits)
            run = fold(run, s, j0, j1,
                       lambda p, vb=vb: mx.quantized_matmul(p, *vb, transpose=False, group_size=v_group, bits=v_bits))
    if fresh is not None:
        kf, vf = (a.astype(f32) for a in fresh)
        run = fold(run, x @ kf.swapaxes(-1, -2), first, length, lambda p: p @ vf)
    if tail is not None:
        kt, vt = tail.stored()
        run = fold(run, x @ kt.swapaxes(-1, -2), None, None, lambda p: p @ vt)
    if run is None:
        raise ValueError("attention over an empty cache")
    _, l, acc = run
    return (acc / l).reshape(B, Hq, L, D).astype(q.dtype)


def _skipped(skip: tuple, j0: int, j1: int, slots: int) -> mx.array:
    """Which of slots [j0, j1) lie in the skipped run of `skip` = (first, count), modulo `slots`."""
    rel = (mx.arange(j0, j1) - skip[0]) % slots
    return rel < skip[1]


def _qmm_fails_here() -> bool:
    # MLX's CUDA quantized_matmul has no implementation for small float32 problems (H2 measured
    # "[quantized_matmul] No implementation for problem shape: 1x63x128x2" on the H200); the
    # unpack path (dequantize one block, plain matmul) runs on every backend for every shape.
    return mx.default_device() == mx.gpu and hasattr(mx, "cuda") and mx.cuda.is_available()


@functools.lru_cache(maxsize=64)
def _decode_steps(scale: float, dtype, k_bits: int, k_group: int, v_bits: int, v_group: int):
    """Compiled online-softmax steps of a decode over packed blocks: (single, first, next, finish).

    The same arithmetic as `_attend`'s decode (quantized_matmul on the codes, fp32 state), traced
    once per variant. shapeless=True because a block grows by one slot every token; the slicing
    to `length` stays outside, where it is a view.
    """
    f32 = mx.float32

    def scores(q, kp, ks, kb):
        x = q.astype(f32) * scale
        return mx.quantized_matmul(x, kp, ks.astype(f32), kb.astype(f32), transpose=True,
                                   group_size=k_group, bits=k_bits)

    def values(p, vp, vs, vb):
        return mx.quantized_matmul(p, vp, vs.astype(f32), vb.astype(f32), transpose=False,
                                   group_size=v_group, bits=v_bits)

    def first(q, kp, ks, kb, vp, vs, vb):
        s = scores(q, kp, ks, kb)
        m = s.max(axis=-1, keepdims=True)
        p = mx.exp(s - m)
        return m, p.sum(axis=-1, keepdims=True), values(p, vp, vs, vb)

    def step(m, l, acc, q, kp, ks, kb, vp, vs, vb):
        s = scores(q, kp, ks, kb)
        m_new = mx.maximum(m, s.max(axis=-1, keepdims=True))
        alpha = mx.exp(m - m_new)
        p = mx.exp(s - m_new)
        return m_new, l * alpha + p.sum(axis=-1, keepdims=True), acc * alpha + values(p, vp, vs, vb)

    def finish(m, l, acc):
        return (acc / l).astype(dtype)

    def single(*args):
        return finish(*first(*args))

    return tuple(mx.compile(f, shapeless=True) for f in (single, first, step, finish))


@functools.lru_cache(maxsize=64)
def _exact_tail_step(scale: float, dtype, rotate_k: bool, rotate_v: bool, k_centered: bool, v_centered: bool):
    """Compiled: the exact tail folded into a decode's online softmax, then the normalization.

    Takes the tail's whole buffers and its fill `n` as an array, so the trace holds while the
    tail fills; slots past n are masked. (A shapeless trace over the valid rows instead crashes
    MLX 0.32 when there is one row: tried.) The tail goes into the cache's space first
    (`_as_stored`, as ExactTail.stored() does).
    """
    f32 = mx.float32

    def fold(m, l, acc, q, tk, tv, n, *means):
        means = iter(means)
        tk, tv = _as_stored(tk, tv, rotate_k, rotate_v, next(means) if k_centered else None,
                            next(means) if v_centered else None)
        s = (q.astype(f32) * scale) @ tk.swapaxes(-1, -2)
        s = mx.where(mx.arange(tk.shape[2]) < n, s, _NEG)
        m_new = mx.maximum(m, s.max(axis=-1, keepdims=True))
        alpha = mx.exp(m - m_new)
        p = mx.exp(s - m_new)
        return ((acc * alpha + p @ tv) / (l * alpha + p.sum(axis=-1, keepdims=True))).astype(dtype)

    return mx.compile(fold)


@functools.lru_cache(maxsize=256)
def _count(n: int) -> mx.array:
    # The tail's fill, one small array per value (a decode step passes the same few).
    a = mx.array(n, dtype=mx.int32)
    mx.eval(a)
    return a


def reference_decode_attention(q, k, v, *, scale, length, k_bits, v_bits, k_group, v_group, window=None,
                               tail=None, skip=None):
    """One query token per head over `length` valid slots of a compressed cache (less the `skip`
    run, if any), then the ExactTail `tail`, if any -> (B, n_heads, 1, D)."""
    B, Hq, L, D = q.shape
    # A decode query sees every slot from the window's start, so no block needs a mask.
    lo = 0 if window is None else max(0, length - window)
    # A one-slot block takes the plain ops: MLX 0.32's shapeless compile crashes on it (measured).
    # A ring with a skipped run takes them too: the mask lives there.
    if (not COMPILE or L != 1 or _qmm_fails_here() or (length - lo) % DECODE_BLOCK == 1 or length <= 0
            or skip is not None):
        return _attend(q, k, v, scale=scale, length=length, k_bits=k_bits, v_bits=v_bits, k_group=k_group,
                       v_group=v_group, window=window, block=DECODE_BLOCK, unpack=_qmm_fails_here() or None,
                       tail=tail, skip=skip)
    Hkv = k[0].shape[1]
    single, first, step, finish = _decode_steps(float(scale), q.dtype, k_bits, k_group, v_bits, v_group)
    xq = q.reshape(B, Hkv, Hq // Hkv, D)
    blocks = list(_blocks(lo, length, DECODE_BLOCK))
    if len(blocks) == 1 and tail is None:
        return single(xq, *(a[:, :, lo:length] for a in (*k, *v))).reshape(B, Hq, 1, D)
    run = None
    for j0, j1 in blocks:
        kv = (a[:, :, j0:j1] for a in (*k, *v))
        run = first(xq, *kv) if run is None else step(*run, xq, *kv)
    if tail is None:
        return finish(*run).reshape(B, Hq, 1, D)
    fold = _exact_tail_step(float(scale), q.dtype, tail.rotate_k, tail.rotate_v, tail.k_mean is not None,
                            tail.v_mean is not None)
    means = [m for m in (tail.k_mean, tail.v_mean) if m is not None]
    return fold(*run, xq, tail.k, tail.v, _count(tail.n), *means).reshape(B, Hq, 1, D)


def reference_prefill_attention(q, k, v, *, scale, length, k_bits, v_bits, k_group, v_group, window=None,
                                fresh=None):
    """L causal queries, the last L of `length` positions stored in temporal order -> (B, n_heads, L, D).

    With `fresh` (the chunk's exact K and V), positions [length - L, length) are read from it.
    """
    B, Hq, L, _ = q.shape
    rows = max(1, B * Hq * L)
    block = max(256, 2 ** int(math.log2(max(1, PREFILL_SCORE_BYTES // (4 * rows)))))
    return _attend(q, k, v, scale=scale, length=length, k_bits=k_bits, v_bits=v_bits, k_group=k_group,
                   v_group=v_group, window=window, block=block, fresh=fresh)


# -- dispatch ------------------------------------------------------------------------------------
_forced_reference: bool | None = None


def force_reference(on: bool | None):
    """The `force_reference_attention` setting; None goes back to env/settings."""
    global _forced_reference
    _forced_reference = on
    path.cache_clear()


def _force_from_env_or_settings() -> bool:
    if _forced_reference is not None:
        return _forced_reference
    if os.environ.get("FOLIO_REFERENCE_ATTENTION", "") not in ("", "0"):
        return True
    try:
        from app.settings import Settings

        return bool(Settings().force_reference_attention)
    except Exception:  # an unreadable settings file must not break attention
        return False


def _kernels():
    try:
        from app.engine import kernels
    except ImportError:
        return None
    return kernels


def kernel_backend() -> str | None:
    """The fused kernel's backend on this machine ("metal", "cuda"), or None."""
    kernels = _kernels()
    return kernels.available() if kernels is not None else None


@functools.lru_cache(maxsize=1)
def path() -> str:
    """'metal', 'cuda' (a fused kernel) or 'reference'; logged once when first decided."""
    backend = kernel_backend()
    if backend and _force_from_env_or_settings():
        logger.info("attention path: reference (forced; %s kernel available)", backend)
        return "reference"
    if backend:
        logger.info("attention path: %s kernel", backend)
        return backend
    logger.info("attention path: reference (MLX ops; no fused kernel on this machine)")
    return "reference"


def _unsupported(kernels):
    return getattr(kernels, "KernelUnsupported", ())


@functools.lru_cache(maxsize=32)
def _say_fallback(what: str):
    logger.info("attention path: reference for %s (the kernel does not cover it)", what)


def decode_attention(q, k, v, **kw):
    if path() != "reference":
        out = _kernel_decode(q, k, v, **kw)
        if out is not None:
            return out
    return reference_decode_attention(q, k, v, **kw)


def _kernel_decode(q, k, v, **kw):
    """The fused kernels' decode, or None where they do not cover the shape (logged once)."""
    kernels = _kernels()
    try:
        return kernels.decode_attention(q, k, v, **kw)
    except _unsupported(kernels) as e:
        _say_fallback(str(e))
        return None


def prefill_attention(q, k, v, fresh=None, **kw):
    """A prefill chunk's attention: on a GPU (the fused-kernel path, not forced to the reference)
    the visible past is dequantized once and handed to MLX's fused SDPA when that transient copy
    fits `sdpa_prefill_budget()`; else, and on the CPU, the blocked reference."""
    if path() != "reference" and sdpa_prefill_bytes(q, k, v, fresh=fresh, **kw) <= sdpa_prefill_budget():
        return sdpa_prefill_attention(q, k, v, fresh=fresh, **kw)
    return reference_prefill_attention(q, k, v, fresh=fresh, **kw)


# The GPU prefill's transient copies of one layer's visible past (K and V, and their
# concatenation with the chunk), at most: None = a 64th of the memory budget, up to 1 GiB (a
# 128K-token past of a Llama-3.1-70B layer in fp16, 8 KV heads x 128), so the copies stay inside the
# headroom memory.py keeps for activations. The resident cache stays compressed; the copies live
# for one layer's attention. An int sets it (tests).
PREFILL_SDPA_BYTES = None


def sdpa_prefill_budget() -> int:
    if PREFILL_SDPA_BYTES is not None:
        return PREFILL_SDPA_BYTES
    return _memory_share()


@functools.lru_cache(maxsize=1)
def _memory_share() -> int:
    from app.engine import memory

    return min(1 << 30, memory.budget_bytes() // 64)


def _visible(length: int, L: int, window, fresh) -> tuple[int, int]:
    """[lo, stop): the cache slots a chunk of L queries ending at `length` reads compressed."""
    first = length - L
    lo = 0 if window is None else max(0, first - window + 1)
    return lo, (first if fresh is not None else length)


def _sdpa_dtype(dtype):
    # fp16 keeps 10 mantissa bits, enough for 8-bit codes (what the decode kernel's products see
    # too); bf16's 7 would add as much error as 8-bit keys themselves, which models with attention
    # scale 1.0 amplify, so bf16 models attend in fp32.
    return mx.float16 if dtype == mx.float16 else mx.float32


def sdpa_prefill_bytes(q, k, v, *, length, k_bits, v_bits, k_group, v_group, window=None, fresh=None, **kw) -> int:
    B, _, L, D = q.shape
    lo, stop = _visible(length, L, window, fresh)
    dt = _sdpa_dtype(q.dtype)
    # The span kernel writes past + chunk once; MLX ops write the dequantized past, then past + chunk.
    copies = prefill_span.copies(k, v, fresh if stop > lo else None, dt, k_bits, v_bits, k_group, v_group)
    return copies * 2 * B * k[0].shape[1] * (length - lo) * D * dt.size


def sdpa_prefill_attention(q, k, v, *, scale, length, k_bits, v_bits, k_group, v_group, window=None, fresh=None,
                           **transforms):
    """Same contract as `reference_prefill_attention`, for a GPU: the visible past dequantized (fp16
    for fp16 models, else fp32) with the chunk's exact K/V after it (prefill_span: one launch where
    the span kernel runs, else MLX ops), then one call of
    mx.fast.scaled_dot_product_attention (fused: no score matrix in memory), which for a prefill is
    compute-bound anyway, so reading the past in fp16 costs little next to the products.
    `transforms` (prefill_span.reference's rotate_k, rotate_v, k_mean, v_mean) bring the past back
    to the model's space on the way: then q and fresh are the model's own, and so is the output."""
    B, Hq, L, D = q.shape
    dt = _sdpa_dtype(q.dtype)
    lo, stop = _visible(length, L, window, fresh)
    keys, values = prefill_span.gather(k, v, lo=lo, stop=stop, fresh=fresh, dtype=dt, k_bits=k_bits, v_bits=v_bits,
                                       k_group=k_group, v_group=v_group, **transforms)
    # Keys cover positions [lo, length), queries [length - L, length): MLX's "causal" aligns the
    # last query with the last key, which is exactly this. A window needs its explicit band.
    if window is None:
        mask = "causal" if L > 1 else None
    else:
        qpos = mx.arange(length - L, length)[:, None]
        kpos = mx.arange(lo, length)[None]
        mask = (kpos <= qpos) & (kpos > qpos - window)
    out = mx.fast.scaled_dot_product_attention(q.astype(dt), keys, values, scale=scale, mask=mask)
    return out.astype(q.dtype)


# -- what a Folio cache hands to attention -------------------------------------------------------
@dataclass
class Compressed:
    """Keys and values a Folio cache returns from update_and_fetch: slots [0, length) are valid.

    In prefill the slots are in temporal order and `window` masks by position; in decode a
    sliding-window layer's ring holds exactly the window, so `window` is None.
    """

    k: tuple
    v: tuple
    length: int
    spec: layout.LayerSpec
    window: int | None = None
    v_mean: mx.array | None = None  # added back to the output when V was centered
    fresh: tuple | None = None  # a prefill chunk's exact (K, V), as stored before quantizing
    # The same chunk as the model made it (before rotation and centering), and K's centering mean:
    # the GPU prefill brings the past back to the model's space instead (see _prefill_model_space).
    fresh_raw: tuple | None = None
    k_mean: mx.array | None = None
    tail: "ExactTail | None" = None  # decode: the newest tokens, exact, after the `length` slots
    # Decode on a window layer with a tail: (first slot, count) of ring slots out of the window
    # (the oldest positions, which the tail's newer ones pushed out); may wrap past the last slot.
    skip: tuple | None = None


@dataclass(frozen=True)
class ExactTail:
    """A decode's newest n tokens, exact and as they came (not rotated or centered), after the
    quantized slots: buffers (B, n_kv_heads, capacity, head_dim), the first n valid, and what the
    cache does to the rest before quantizing (rotation, then centering by these means)."""

    k: mx.array
    v: mx.array
    n: int
    rotate_k: bool = False
    rotate_v: bool = False
    k_mean: mx.array | None = None
    v_mean: mx.array | None = None

    def stored(self) -> tuple:
        """The n tokens' (K, V) as the cache stores the rest (float32)."""
        tk, tv = (a[:, :, : self.n] for a in (self.k, self.v))
        return _as_stored(tk, tv, self.rotate_k, self.rotate_v, self.k_mean, self.v_mean)


def _as_stored(tk, tv, rotate_k: bool, rotate_v: bool, k_mean, v_mean) -> tuple:
    """Exact K, V into the space the cache quantizes in: float32, rotated, then centered."""
    tk, tv = tk.astype(mx.float32), tv.astype(mx.float32)
    tk = rotation.rotate(tk) if rotate_k else tk
    tv = rotation.rotate(tv) if rotate_v else tv
    return (tk if k_mean is None else tk - k_mean), (tv if v_mean is None else tv - v_mean)


calls = 0  # how many times Folio's attention ran through the seam (the route probe reads it)


def attend(queries: mx.array, kv: Compressed, scale: float) -> mx.array:
    global calls
    calls += 1
    k, v = kv.spec.k, kv.spec.v
    kw = dict(scale=scale, length=kv.length, k_bits=k.bits, v_bits=v.bits, k_group=k.group, v_group=v.group,
              window=kv.window)
    if queries.shape[2] == 1 and path() != "reference":
        out = _fused_decode(queries, kv, **kw)
        if out is not None:
            return out
    if queries.shape[2] > 1 and PREFILL_MODEL_SPACE and path() != "reference":
        out = _prefill_model_space(queries, kv, **kw)
        if out is not None:
            return out
    if k.rotate:
        queries = rotation.rotate(queries)
    if queries.shape[2] == 1:  # the fused kernels, where they exist, were offered this step above
        out = reference_decode_attention(queries, kv.k, kv.v, tail=kv.tail, skip=kv.skip, **kw)
    else:
        out = prefill_attention(queries, kv.k, kv.v, fresh=kv.fresh, **kw)
    if COMPILE and queries.shape[2] == 1:
        restore = _restore_output(v.rotate, kv.v_mean is not None)
        return restore(out, kv.v_mean) if kv.v_mean is not None else restore(out)
    return uncenter_unrotate(out, kv.v_mean, v.rotate)


def _fused_decode(queries, kv: Compressed, **kw):
    """The fused kernels with the query rotation and the output's un-centering and rotation back
    inside them (one launch per layer on CUDA, two on Metal), or None where they do not cover the shape."""
    t = kv.tail
    return _kernel_decode(queries, kv.k, kv.v, rotate_q=kv.spec.k.rotate, v_mean=kv.v_mean,
                          rotate_out=kv.spec.v.rotate, tail=None if t is None else (t.k, t.v, t.n),
                          k_mean=None if t is None else t.k_mean, skip=kv.skip, **kw)


def _prefill_model_space(queries, kv: Compressed, **kw):
    """A GPU prefill chunk with the past brought back to the model's space by the span kernel
    (the means added back, the rotations undone): the queries go in and the output comes out as
    the model has them, three launches a layer fewer than rotating q and the output around SDPA.
    None where the span kernel does not cover it or the copy passes the budget (the caller's path)."""
    fresh = kv.fresh_raw if kv.fresh is not None else None
    if kv.fresh is not None and fresh is None:
        return None
    spec = kv.spec
    if not prefill_span.covers(kv.k, kv.v, fresh, _sdpa_dtype(queries.dtype), spec.k.bits, spec.v.bits, spec.k.group,
                               spec.v.group, rotate=spec.k.rotate or spec.v.rotate):
        return None
    if sdpa_prefill_bytes(queries, kv.k, kv.v, fresh=fresh, **kw) > sdpa_prefill_budget():
        return None
    return sdpa_prefill_attention(queries, kv.k, kv.v, fresh=fresh, rotate_k=spec.k.rotate, rotate_v=spec.v.rotate,
                                  k_mean=kv.k_mean, v_mean=kv.v_mean, **kw)


def uncenter_unrotate(out, v_mean, rotate: bool):
    """Undo V's centering (add its mean back: the weights sum to 1) and its rotation."""
    if v_mean is not None:
        B, Hq, L, D = out.shape
        Hkv = v_mean.shape[1]
        out = (out.reshape(B, Hkv, Hq // Hkv, L, D) + v_mean[:, :, None].astype(out.dtype)).reshape(B, Hq, L, D)
    return rotation.rotate(out) if rotate else out


@functools.lru_cache(maxsize=8)
def _restore_output(rotate: bool, centered: bool):
    # Traced once per decode shape (which stays fixed for a conversation); prefill chunks vary in
    # length and take the plain ops instead of a trace per chunk size.
    if centered:
        return mx.compile(lambda out, v_mean: uncenter_unrotate(out, v_mean, rotate))
    return mx.compile(lambda out: uncenter_unrotate(out, None, rotate))


# -- the seam ------------------------------------------------------------------------------------
def check_seam():
    """Raise SeamMoved unless mlx-lm still routes caches with `bits` through base's global."""
    sdpa = getattr(base, "scaled_dot_product_attention", None)
    qsdpa = getattr(base, "quantized_scaled_dot_product_attention", None)
    if sdpa is None or qsdpa is None:
        raise SeamMoved("mlx-lm moved its attention functions out of mlx_lm.models.base; Folio's int4 cache cannot attach.")
    names = sdpa.__code__.co_names
    if "quantized_scaled_dot_product_attention" not in names or "hasattr" not in names:
        raise SeamMoved("mlx-lm's scaled_dot_product_attention no longer dispatches quantized caches by `bits`; "
                        "Folio's int4 cache cannot attach.")


def install():
    """Route Folio's caches to Folio's attention; idempotent, other caches are untouched."""
    current = base.quantized_scaled_dot_product_attention
    if getattr(current, "_folio", False):
        return
    check_seam()
    original = current

    @functools.wraps(original)
    def routed(queries, q_keys, q_values, scale, mask, group_size=64, bits=8):
        if isinstance(q_keys, Compressed):
            return attend(queries, q_keys, scale)
        return original(queries, q_keys, q_values, scale=scale, mask=mask, group_size=group_size, bits=bits)

    routed._folio = True
    routed._original = original
    base.quantized_scaled_dot_product_attention = routed
    logger.info("attention seam installed on mlx_lm.models.base.quantized_scaled_dot_product_attention")
