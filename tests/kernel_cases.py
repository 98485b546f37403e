"""The fused decode kernel's cases and oracles, shared by the GPU tests (test_kernels_device.py, full
sizes) and the CPU emulation of the CUDA build (test_kernels_emulated.py, smaller ones).

Fresh random inputs every call; the outputs are poisoned with NaN first, so an element the kernel
never writes fails the check. The oracle is fp32 attention over the dequantized cache, plus H1's
reference where it runs.
"""

import mlx.core as mx

from app.engine import kernels

TOL = 2e-3


def dequantized_reference(q, kq, vq, *, scale, length, k_bits, v_bits, k_group, v_group, window=None):
    """fp32 attention over the dequantized cache: independent of both the kernel and H1's reference."""
    start = max(0, length - window) if window else 0
    k = mx.dequantize(*kq, group_size=k_group, bits=k_bits)[:, :, start:length].astype(mx.float32)
    v = mx.dequantize(*vq, group_size=v_group, bits=v_bits)[:, :, start:length].astype(mx.float32)
    B, H, _, D = q.shape
    G = H // k.shape[1]
    qf = q.astype(mx.float32).reshape(B, k.shape[1], G, D) * scale
    s = mx.softmax(qf @ k.swapaxes(-1, -2), axis=-1)
    return (s @ v).reshape(B, H, 1, D)


def folio_reference(q, kq, vq, **args):
    """H1's reference path (app.engine.attention), where it runs on this backend, else None.

    On MLX's CUDA backend, mx.quantized_matmul has no kernel for its small fp32-activation shapes
    (seen with MLX 0.32.4 on the H200), so there the dequantized oracle stands alone.
    """
    try:
        from app.engine.attention import reference_decode_attention
    except ImportError:
        return None
    try:
        ref = reference_decode_attention(q, kq, vq, **args).astype(mx.float32)
        mx.eval(ref)
        return ref
    except RuntimeError:
        return None


def rel_err(out, ref) -> float:
    return (mx.linalg.norm((out.astype(mx.float32) - ref).flatten()) / mx.linalg.norm(ref.flatten())).item()


def quantized(B, n_kv, t_alloc, D, bits, group):
    x = mx.random.normal((B, n_kv, t_alloc, D)).astype(mx.float16)
    return mx.quantize(x, group, bits)


def check(B, H, n_kv, D, length, *, t_alloc=None, window=None, k_bits=4, v_bits=4, k_group=64, v_group=64,
          dtype=mx.float16):
    """One decode call on random data against both oracles; returns the relative error."""
    t_alloc = t_alloc or length
    q = mx.random.normal((B, H, 1, D)).astype(dtype)
    kq = quantized(B, n_kv, t_alloc, D, k_bits, k_group)
    vq = quantized(B, n_kv, t_alloc, D, v_bits, v_group)
    args = dict(scale=D**-0.5, length=length, k_bits=k_bits, v_bits=v_bits, k_group=k_group, v_group=v_group,
                window=window)
    out = kernels.decode_attention(q, kq, vq, poison=True, **args)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert not mx.any(mx.isnan(out)).item(), "an output element was never written"
    err = rel_err(out, dequantized_reference(q, kq, vq, **args))
    assert err < TOL, f"relative error {err:.2e} against fp32 attention over the dequantized cache"
    ref = folio_reference(q, kq, vq, **args)
    if ref is not None:
        err_ref = rel_err(out, ref)
        assert err_ref < TOL, f"relative error {err_ref:.2e} against app.engine.attention's reference"
    return err


def check_transforms(head_dim, rotate_q, center, rotate_out, length=3001):
    """What the cache did before quantizing, undone inside the kernels: q rotated like the keys,
    V's mean added back and the output rotated back (app.engine.attention passes these flags)."""
    B, n_kv, G, D = 1, 2, 4, head_dim
    q = mx.random.normal((B, n_kv * G, 1, D)).astype(mx.float16)
    kq, vq = quantized(B, n_kv, length, D, 4, 64), quantized(B, n_kv, length, D, 4, 64)
    v_mean = mx.random.normal((B, n_kv, 1, D)) if center else None
    args = dict(scale=D**-0.5, length=length, k_bits=4, v_bits=4, k_group=64, v_group=64)
    out = kernels.decode_attention(q, kq, vq, rotate_q=rotate_q, v_mean=v_mean, rotate_out=rotate_out, poison=True,
                                   **args)
    assert not mx.any(mx.isnan(out)).item(), "an output element was never written"
    qr = mx.hadamard_transform(q.astype(mx.float32), scale=D**-0.5) if rotate_q else q
    ref = dequantized_reference(qr, kq, vq, **args)
    if center:
        ref = (ref.reshape(B, n_kv, G, 1, D) + v_mean[:, :, None]).reshape(B, n_kv * G, 1, D)
    if rotate_out:
        ref = mx.hadamard_transform(ref, scale=D**-0.5)
    err = rel_err(out, ref)
    assert err < TOL, f"relative error {err:.2e}"


def check_tail(gqa, head_dim, length, n_tail):
    """The newest decode tokens, unquantized and untransformed, read by the last split's block and
    brought into the cache's space (rotated, centered) there; odd fills, every flag on."""
    from app import selftest

    B, n_kv, D, cap = 1, 2, head_dim, 64
    dtype = mx.bfloat16 if head_dim == 64 else mx.float16
    q = mx.random.normal((B, n_kv * gqa, 1, D)).astype(dtype)
    kq, vq = quantized(B, n_kv, length + 5, D, 8, 64), quantized(B, n_kv, length + 5, D, 4, 64)
    tail = tuple(mx.random.normal((B, n_kv, cap, D)).astype(dtype) for _ in range(2)) + (n_tail,)
    k_mean, v_mean = mx.random.normal((B, n_kv, 1, D)), mx.random.normal((B, n_kv, 1, D))
    args = dict(scale=D**-0.5, length=length, k_bits=8, v_bits=4, k_group=64, v_group=64, rotate_q=True,
                v_mean=v_mean, rotate_out=True, tail=tail, k_mean=k_mean)
    out = kernels.decode_attention(q, kq, vq, poison=True, **args)
    assert not mx.any(mx.isnan(out)).item(), "an output element was never written"
    # The oracle rotates q in float32, as the kernel does (a bfloat16 rotation alone errs by 4e-3).
    ref = selftest.undo_transforms(selftest.dequantized_attention)(q.astype(mx.float32), kq, vq, **args)
    err = rel_err(out, ref)
    assert err < TOL, f"relative error {err:.2e}"


def check_ring(gqa, head_dim, skip, ring=4096):
    """A sliding-window ring of `ring` slots with an exact tail: a run of its slots (possibly
    wrapping past the last) is out of the window and must not be seen; the tail is."""
    from app import selftest

    B, n_kv, D, W = 1, 2, head_dim, ring
    q = mx.random.normal((B, n_kv * gqa, 1, D)).astype(mx.float16)
    kq, vq = quantized(B, n_kv, W, D, 4, 64), quantized(B, n_kv, W, D, 4, 64)
    tail = tuple(mx.random.normal((B, n_kv, 64, D)).astype(mx.float16) for _ in range(2)) + (skip[1],)
    args = dict(scale=D**-0.5, length=W, k_bits=4, v_bits=4, k_group=64, v_group=64, tail=tail, skip=skip)
    out = kernels.decode_attention(q, kq, vq, poison=True, **args)
    assert not mx.any(mx.isnan(out)).item(), "an output element was never written"
    ref = selftest.undo_transforms(selftest.dequantized_attention)(q.astype(mx.float32), kq, vq, **args)
    err = rel_err(out, ref)
    assert err < TOL, f"relative error {err:.2e}"


def check_span(n_past, L, head_dim, *, lo=0, B=1, n_kv=2, k_bits=4, v_bits=4, k_group=64, v_group=64,
               dtype=mx.float16, fresh_dtype=mx.float32, transforms=False):
    """The prefill span kernel against an fp32 oracle: slots [lo, lo + n_past) of a random cache
    dequantized (with `transforms`, brought back to the model's space: means added, rotations
    undone), then L chunk rows. Each element is one rounding of a float32 value to dtype, so the
    check is elementwise: within half an ulp of the oracle, plus float32's own noise."""
    from app.engine import prefill_span

    D, stop = head_dim, lo + n_past
    t_alloc = stop + 29                      # slots past the visible ones are never read
    kq = quantized(B, n_kv, t_alloc, D, k_bits, k_group)
    vq = quantized(B, n_kv, t_alloc, D, v_bits, v_group)
    fresh = tuple(mx.random.normal((B, n_kv, L, D)).astype(fresh_dtype) for _ in range(2)) if L else None
    args = dict(lo=lo, stop=stop, fresh=fresh, k_bits=k_bits, v_bits=v_bits, k_group=k_group, v_group=v_group)
    if transforms:
        args.update(rotate_k=True, rotate_v=True, k_mean=mx.random.normal((B, n_kv, 1, D)),
                    v_mean=mx.random.normal((B, n_kv, 1, D)))
    ko, vo = prefill_span.launch(kq, vq, dtype=dtype, poison=True, **args)
    exact = prefill_span.reference(kq, vq, dtype=mx.float32, **args)
    half_ulp = 2.0**-11 if dtype == mx.float16 else 2.0**-23
    noise = 2e-5 if transforms else 1e-6      # float32 butterflies in another order than MLX's
    for out, ref, name in zip((ko, vo), exact, "KV"):
        assert out.shape == (B, n_kv, n_past + L, D) and out.dtype == dtype
        assert not mx.any(mx.isnan(out)).item(), f"a {name} element was never written"
        worst = mx.max(mx.abs(out.astype(mx.float32) - ref) - (half_ulp * mx.abs(ref) + noise)).item()
        assert worst <= 0, f"{name}: an element is {worst:.2e} beyond half an ulp of the exact value"
        if L:  # the chunk's rows: exactly its values rounded to dtype
            assert mx.array_equal(out[:, :, n_past:], ref[:, :, n_past:].astype(dtype)).item()


def check_prefill(gqa, head_dim, length, L, *, window=None, dtype=mx.float16):
    """A prefill chunk's attention through the GPU path (span kernel, then MLX's SDPA) against the
    blocked reference, on a cache made by Folio's own int4 layout (rotated, centered)."""
    from app.engine import attention

    B, n_kv, D = 1, 2, head_dim
    q = mx.random.normal((B, n_kv * gqa, L, D)).astype(dtype)
    kq = quantized(B, n_kv, length + 11, D, 4, 64)
    vq = quantized(B, n_kv, length + 11, D, 8, 32)
    fresh = tuple(mx.random.normal((B, n_kv, L, D)) for _ in range(2))
    args = dict(scale=D**-0.5, length=length, k_bits=4, v_bits=8, k_group=64, v_group=32, window=window,
                fresh=fresh)
    out = attention.sdpa_prefill_attention(q, kq, vq, **args)
    ref = attention.reference_prefill_attention(q, kq, vq, **args).astype(mx.float32)
    err = rel_err(out, ref)
    assert err < TOL, f"relative error {err:.2e} against the blocked reference"
    return err


def check_model_space_prefill(mode, head_dim, *, gqa=4, chunks=(300, 77), window=None, dtype=mx.float16):
    """Folio's cache in KV mode `mode` fed chunk by chunk; each chunk's attention through the GPU
    path that brings the past back to the model's space against the reference path (the cases are
    the self-test's: app.selftest.model_space_prefill_cases)."""
    from app.selftest import model_space_prefill_cases

    for L, out, ref in model_space_prefill_cases(mode, head_dim, gqa=gqa, chunks=chunks, window=window, dtype=dtype):
        err = rel_err(out, ref.astype(mx.float32))
        assert err < TOL, f"relative error {err:.2e} against the reference path (chunk of {L})"
