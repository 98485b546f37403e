"""The fused decode-attention kernel against the references, on a real GPU (Metal or CUDA).

Skipped where neither backend exists (CI's Linux runners). Fresh random inputs every run; the
outputs are poisoned with NaN first, so an element the kernel never writes fails the test. The
oracle is fp32 attention over the dequantized cache, plus H1's reference where it runs.
"""

import os

import mlx.core as mx
import pytest

from app.engine import kernels

pytestmark = pytest.mark.skipif(kernels.available() is None, reason="no Metal or CUDA device: the kernel cannot run here")
# FOLIO_TEST_PLAN="pipeline:step:min_blocks:warps:target_blocks" (kernels.set_plan) runs the suite
# under a candidate launch plan, to check it on the device before it ships.
TEST_PLAN = os.environ.get("FOLIO_TEST_PLAN")


@pytest.fixture(autouse=True, scope="module")
def launch_plan():
    if not TEST_PLAN:
        yield
        return
    pf, step, minb, nw, tb = (int(x) for x in TEST_PLAN.split(":"))
    before = dict(pipeline=kernels.PIPELINE, step=kernels.STEP_TOKENS, min_blocks=kernels.MIN_BLOCKS_PER_SM,
                  warps=kernels.WARPS, target_blocks=kernels.TARGET_BLOCKS)
    kernels.set_plan(pipeline=pf, step=step, min_blocks=minb, warps=nw, target_blocks=tb)
    yield
    kernels.set_plan(**before)

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


@pytest.mark.parametrize("gqa", [1, 4, 8])
@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("length", [1, 63, 4097])
@pytest.mark.parametrize("window", [None, 1000])
def test_decode_matches_reference(gqa, head_dim, length, window):
    n_kv = 2
    check(1, n_kv * gqa, n_kv, head_dim, length, t_alloc=length + 37, window=window)


@pytest.mark.parametrize("gqa", [1, 4, 8])
@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("window", [None, 4096])
def test_decode_long_context(gqa, head_dim, window):
    check(1, 2 * gqa, 2, head_dim, 131072, t_alloc=131072 + 256, window=window)


@pytest.mark.parametrize("k_bits,v_bits,k_group,v_group", [(8, 4, 64, 64), (4, 4, 32, 128), (8, 8, 128, 32)])
def test_mixed_precision_and_groups(k_bits, v_bits, k_group, v_group):
    check(2, 16, 4, 128, 2049, k_bits=k_bits, v_bits=v_bits, k_group=k_group, v_group=v_group)


def test_bfloat16_queries_and_batch():
    check(3, 32, 8, 128, 999, dtype=mx.bfloat16)


def test_unsupported_shape_is_a_clear_error():
    q = mx.zeros((1, 4, 1, 96), dtype=mx.float16)
    kq = quantized(1, 1, 8, 96, 4, 32)
    with pytest.raises(kernels.KernelUnsupported, match="head_dim 96"):
        kernels.decode_attention(q, kq, kq, scale=1.0, length=8, k_bits=4, v_bits=4, k_group=32, v_group=32)


def test_gqa_above_eight_is_a_clear_error():
    # One matrix fragment holds 8 query heads; wider groups take the reference path.
    q = mx.zeros((1, 16, 1, 128), dtype=mx.float16)
    kq = quantized(1, 1, 64, 128, 4, 64)
    with pytest.raises(kernels.KernelUnsupported, match="GQA ratio 16"):
        kernels.decode_attention(q, kq, kq, scale=1.0, length=64, k_bits=4, v_bits=4, k_group=64, v_group=64)


@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("rotate_q,center,rotate_out", [(True, True, True), (True, False, False), (False, True, True)])
def test_rotation_and_centering_inside_the_kernels(head_dim, rotate_q, center, rotate_out):
    # What the cache did before quantizing, undone inside the kernels: q rotated like the keys,
    # V's mean added back and the output rotated back (app.engine.attention passes these flags).
    B, n_kv, G, D, length = 1, 2, 4, head_dim, 3001
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


@pytest.mark.parametrize("gqa", [1, 4, 8])
@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("length,n_tail", [(1, 1), (63, 37), (4097, 64)])
def test_exact_tail_block(gqa, head_dim, length, n_tail):
    # The newest decode tokens, unquantized and untransformed, read by the last split's block and
    # brought into the cache's space (rotated, centered) there; odd fills, every flag on.
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


@pytest.mark.parametrize("gqa", [1, 8])
@pytest.mark.parametrize("head_dim", [64, 256])
@pytest.mark.parametrize("skip", [(0, 3), (1000, 24), (4090, 11)])   # at the start, inside, wrapping
def test_ring_slots_out_of_sight(gqa, head_dim, skip):
    # A sliding-window ring with an exact tail: a run of its slots (possibly wrapping past the
    # last) is out of the window and must not be seen; the tail is.
    from app import selftest

    B, n_kv, D, W = 1, 2, head_dim, 4096
    q = mx.random.normal((B, n_kv * gqa, 1, D)).astype(mx.float16)
    kq, vq = quantized(B, n_kv, W, D, 4, 64), quantized(B, n_kv, W, D, 4, 64)
    tail = tuple(mx.random.normal((B, n_kv, 64, D)).astype(mx.float16) for _ in range(2)) + (skip[1],)
    args = dict(scale=D**-0.5, length=W, k_bits=4, v_bits=4, k_group=64, v_group=64, tail=tail, skip=skip)
    out = kernels.decode_attention(q, kq, vq, poison=True, **args)
    assert not mx.any(mx.isnan(out)).item(), "an output element was never written"
    ref = selftest.undo_transforms(selftest.dequantized_attention)(q.astype(mx.float32), kq, vq, **args)
    err = rel_err(out, ref)
    assert err < TOL, f"relative error {err:.2e}"


def test_independent_calls_evaluated_together_agree():
    # MLX may run independent kernels of one command buffer at once; one-pass decode counts finished
    # blocks in device memory, so concurrent calls (and every later call) must each see their own
    # counters at zero. Forty calls over three caches, evaluated together, twice.
    D, H, n_kv = 128, 32, 8
    caches = [(quantized(1, n_kv, n, D, 4, 64), quantized(1, n_kv, n, D, 4, 64), n) for n in (4097, 20000, 63)]
    q = mx.random.normal((1, H, 1, D)).astype(mx.float16)
    args = dict(scale=D**-0.5, k_bits=4, v_bits=4, k_group=64, v_group=64)
    alone = [kernels.decode_attention(q, kq, vq, length=n, **args) for kq, vq, n in caches]
    mx.eval(alone)
    for _ in range(2):
        together = [kernels.decode_attention(q, *caches[i % 3][:2], length=caches[i % 3][2], **args) for i in range(40)]
        mx.eval(together)
        for i, out in enumerate(together):
            assert rel_err(out, alone[i % 3].astype(mx.float32)) < 1e-6, f"call {i}"
