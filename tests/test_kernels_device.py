"""The fused decode-attention kernel against the references, on a real GPU (Metal or CUDA).

Skipped where neither backend exists (CI's Linux runners). Fresh random inputs every run; the
outputs are poisoned with NaN first, so an element the kernel never writes fails the test. The
oracle is fp32 attention over the dequantized cache, plus H1's reference where it runs.
"""

import os

import mlx.core as mx
import pytest

from app.engine import kernels
from kernel_cases import (check, check_model_space_prefill, check_prefill, check_ring, check_span, check_tail,
                          check_transforms, quantized, rel_err)

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
    check_transforms(head_dim, rotate_q, center, rotate_out)


@pytest.mark.parametrize("gqa", [1, 4, 8])
@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("length,n_tail", [(1, 1), (63, 37), (4097, 64)])
def test_exact_tail_block(gqa, head_dim, length, n_tail):
    check_tail(gqa, head_dim, length, n_tail)


@pytest.mark.parametrize("gqa", [1, 8])
@pytest.mark.parametrize("head_dim", [64, 256])
@pytest.mark.parametrize("skip", [(0, 3), (1000, 24), (4090, 11)])   # at the start, inside, wrapping
def test_ring_slots_out_of_sight(gqa, head_dim, skip):
    check_ring(gqa, head_dim, skip)


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


@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("n_past,L,lo", [(1, 0, 0), (63, 37, 0), (4097, 1, 0), (4097, 513, 1000), (0, 63, 0),
                                         (131072, 4096, 0)])
def test_prefill_span_matches_the_dequantized_cache(head_dim, n_past, L, lo):
    check_span(n_past, L, head_dim, lo=lo)


@pytest.mark.parametrize("k_bits,v_bits,k_group,v_group", [(8, 4, 128, 64), (4, 8, 32, 32), (8, 8, 64, 128)])
@pytest.mark.parametrize("dtype,fresh_dtype", [(mx.float16, mx.float16), (mx.float32, mx.bfloat16)])
def test_prefill_span_bits_groups_and_dtypes(k_bits, v_bits, k_group, v_group, dtype, fresh_dtype):
    check_span(4097, 77, 128, B=2, k_bits=k_bits, v_bits=v_bits, k_group=k_group, v_group=v_group, dtype=dtype,
               fresh_dtype=fresh_dtype)


@pytest.mark.parametrize("gqa", [1, 4, 8])
@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("window", [None, 1000])
def test_prefill_attention_through_the_span_kernel(gqa, head_dim, window):
    check_prefill(gqa, head_dim, 4097, 513, window=window)


@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("n_past,L", [(63, 37), (4097, 0), (131072, 4096)])
def test_prefill_span_brings_the_past_back_to_the_model_space(head_dim, n_past, L):
    check_span(n_past, L, head_dim, transforms=True, k_bits=8, k_group=min(head_dim, 128))


@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("mode", ["int4", "auto", "k4g64v4g64"])
@pytest.mark.parametrize("window", [None, 1000])
def test_prefill_in_the_model_space_matches_the_reference_path(head_dim, mode, window):
    check_model_space_prefill(mode, head_dim, chunks=(2048, 1500, 513), window=window)
