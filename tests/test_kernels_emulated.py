"""The fused decode kernels' CUDA and Metal builds, run on the CPU (tests/kernel_emu), against the
references.

The same cases as test_kernels_device.py (kernel_cases.py), at sizes a CPU runs in seconds: every
head_dim and a spread of GQA ratios, one and several splits, windows, mixed bits and groups, the
cache's transforms, the exact tail and a ring's hidden slots. They check the kernels' logic (which
lane loads which word, fragment layouts, masks, the one-pass merge on CUDA, the combine launch on
Metal) on any machine with g++; a GPU still judges the hardware's numerics and speed. Run them
before spending device time on a change; for Metal they are the only place the kernel runs until
a Mac does.
"""

import mlx.core as mx
import pytest

from kernel_emu import emulate
from kernel_cases import (check, check_model_space_prefill, check_prefill, check_ring, check_span, check_tail,
                          check_transforms)

pytestmark = pytest.mark.skipif(not emulate.available(), reason="g++ is not installed: the emulator cannot build")


@pytest.fixture(autouse=True, params=["cuda", "metal"])
def on_the_emulator(request, monkeypatch, tmp_path_factory):
    emulate.emulated(monkeypatch, tmp_path_factory.getbasetemp() / "kernel_emu", request.param)
    yield
    emulate.forget()


@pytest.mark.parametrize("gqa,head_dim", [(1, 64), (8, 64), (4, 128), (8, 128), (1, 256), (8, 256)])
@pytest.mark.parametrize("length,window", [(1, None), (63, None), (1500, None), (1500, 1000)])
def test_decode_matches_reference(gqa, head_dim, length, window):
    check(1, 2 * gqa, 2, head_dim, length, t_alloc=length + 37, window=window)


@pytest.mark.parametrize("k_bits,v_bits,k_group,v_group", [(8, 4, 64, 64), (4, 4, 32, 128), (8, 8, 128, 32),
                                                            (4, 8, 128, 64)])
def test_mixed_precision_and_groups(k_bits, v_bits, k_group, v_group):
    check(2, 16, 4, 128, 1100, k_bits=k_bits, v_bits=v_bits, k_group=k_group, v_group=v_group)


def test_float32_queries_and_batch():
    check(3, 16, 4, 128, 700, dtype=mx.float32)


@pytest.mark.parametrize("head_dim,flags", [(64, (True, True, True)), (128, (True, True, True)),
                                            (128, (True, False, False)), (128, (False, True, True)),
                                            (256, (True, True, True))])
def test_rotation_and_centering_inside_the_kernels(head_dim, flags):
    check_transforms(head_dim, *flags, length=1100)


@pytest.mark.parametrize("gqa,head_dim", [(1, 128), (8, 64), (8, 256)])
@pytest.mark.parametrize("length,n_tail", [(1, 1), (63, 37), (1100, 64)])
def test_exact_tail_block(gqa, head_dim, length, n_tail):
    check_tail(gqa, head_dim, length, n_tail)


@pytest.mark.parametrize("skip", [(0, 3), (700, 24), (1530, 11)])   # at the start, inside, wrapping
def test_ring_slots_out_of_sight(skip):
    check_ring(8, 128, skip, ring=1536)


@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("n_past,L,lo", [(1, 0, 0), (63, 37, 0), (1500, 1, 0), (700, 37, 301), (0, 37, 0)])
def test_prefill_span_matches_the_dequantized_cache(head_dim, n_past, L, lo):
    check_span(n_past, L, head_dim, lo=lo)


@pytest.mark.parametrize("k_bits,v_bits,k_group,v_group", [(8, 4, 128, 64), (4, 8, 32, 32), (8, 8, 64, 128)])
@pytest.mark.parametrize("dtype,fresh_dtype", [(mx.float16, mx.float16), (mx.float32, mx.bfloat16)])
def test_prefill_span_bits_groups_and_dtypes(k_bits, v_bits, k_group, v_group, dtype, fresh_dtype):
    check_span(301, 13, 128, B=2, k_bits=k_bits, v_bits=v_bits, k_group=k_group, v_group=v_group, dtype=dtype,
               fresh_dtype=fresh_dtype)


@pytest.mark.parametrize("gqa,head_dim", [(1, 64), (4, 128), (8, 256)])
@pytest.mark.parametrize("window", [None, 200])
def test_prefill_attention_through_the_span_kernel(gqa, head_dim, window):
    check_prefill(gqa, head_dim, 677, 45, window=window)


@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("n_past,L", [(63, 37), (700, 0), (1, 5)])
def test_prefill_span_brings_the_past_back_to_the_model_space(head_dim, n_past, L):
    check_span(n_past, L, head_dim, transforms=True, k_bits=8, k_group=min(head_dim, 128))


@pytest.mark.parametrize("head_dim,window", [(64, None), (128, None), (256, None), (128, 200)])
@pytest.mark.parametrize("mode", ["int4", "auto", "k4g64v4g64"])
def test_prefill_in_the_model_space_matches_the_reference_path(head_dim, mode, window):
    from app.engine import attention

    attention.path.cache_clear()  # decided before the emulator stood in for a GPU
    check_model_space_prefill(mode, head_dim, chunks=(300, 77, 150), window=window)
    attention.path.cache_clear()


def test_self_test_prefill_check_passes_on_the_emulated_kernels():
    from app import selftest
    from app.engine import attention

    attention.path.cache_clear()
    assert "matches the reference path" in selftest.check_prefill()
    attention.path.cache_clear()
