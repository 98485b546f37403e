"""The kernel sources compile, on Linux CI, exactly as MLX would assemble them.

Metal: the prelude + body with the signature MLX generates (`kernels.metal_source`), compiled as C++
by g++ against the stand-in for <metal_stdlib> in tests/kernel_emu; a deliberate typo must make it
fail. CUDA: the same body with MLX's CUDA assembly (`kernels.cuda_source`, checked
byte for byte against MLX's own verbose output on the H200), compiled by `nvcc -c -arch=sm_90`.
"""

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from app.engine import kernels, prefill_span

# The executable stand-in for <metal_stdlib> the emulated tests run the Metal build on
# (tests/kernel_emu): here it only has to compile.
METAL_STDLIB = Path(__file__).parent / "kernel_emu"

VARIANTS = [  # (head_dim, gqa, k_bits, v_bits, k_group, v_group, query dtype)
    (128, 8, 4, 4, 64, 64, "float16"),
    (64, 1, 8, 4, 32, 128, "bfloat16"),
    (256, 4, 4, 8, 128, 32, "float32"),
    (128, 8, 8, 8, 64, 64, "float16"),
    (64, 4, 4, 4, 128, 32, "float16"),
]


def gxx_check(tmp_path, source: str, name: str = "k"):
    src = tmp_path / f"{name}.metal.cpp"
    src.write_text(source)
    return subprocess.run(["g++", "-std=c++20", "-fsyntax-only", "-Wno-attributes", "-I", str(METAL_STDLIB), str(src)],
                          capture_output=True, text=True)


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"d{v[0]}-g{v[1]}-k{v[2]}v{v[3]}-{v[6]}")
@pytest.mark.parametrize("extras", [True, False], ids=["tail-transforms", "plain"])
def test_metal_source_compiles_as_cpp(tmp_path, variant, extras):
    # With a tail and the transforms every optional input is handed over; without, each is a
    # null pointer declared before the body (kernels.absent).
    D, G, kb, vb, kg, vg, dtype = variant
    for i, src in enumerate(kernels.decode_sources("metal", D, G, kb, vb, kg, vg, dtype, rotate=extras, tail=extras)):
        r = gxx_check(tmp_path, src, f"k{i}")
        assert r.returncode == 0, r.stderr[-3000:]


SPAN_VARIANTS = [  # (head_dim, k_bits, v_bits, k_group, v_group, output dtype, chunk dtype, model-space transforms)
    (128, 4, 4, 64, 64, "float16", "float32", False),
    (64, 8, 4, 32, 64, "float32", "bfloat16", True),
    (256, 4, 8, 128, 32, "float16", "float16", True),
]


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")
@pytest.mark.parametrize("variant", SPAN_VARIANTS, ids=lambda v: f"d{v[0]}-k{v[1]}v{v[2]}-{v[5]}")
def test_metal_prefill_span_compiles_as_cpp(tmp_path, variant):
    src = prefill_span.mlx_source("metal", *variant)
    assert "uint3 threadgroup_position_in_grid [[threadgroup_position_in_grid]]" in src
    r = gxx_check(tmp_path, src)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")
def test_metal_check_catches_a_typo(tmp_path):
    partial, _ = kernels.decode_sources("metal")
    assert gxx_check(tmp_path, partial).returncode == 0
    broken = partial.replace("pv_tile<D, VBITS, VWL>(oacc", "pv_tile<D, VBITS, VWL>(oac", 1)
    assert broken != partial
    r = gxx_check(tmp_path, broken)
    assert r.returncode != 0 and "oac" in r.stderr


def test_metal_signature_is_generated_like_mlx():
    partial, combine = kernels.decode_sources("metal", 128, 8)
    # Thread indices reach the signature only through names in the body: the index prelude.
    for attr in ("uint thread_index_in_simdgroup [[thread_index_in_simdgroup]]",
                 "uint simdgroup_index_in_threadgroup [[simdgroup_index_in_threadgroup]]",
                 "uint3 threadgroup_position_in_grid [[threadgroup_position_in_grid]]"):
        assert attr in partial and attr in combine
    assert "const device uint32_t* kp [[buffer(1)]]" in partial
    assert "const constant uint8_t* params [[buffer(7)]]" in partial  # fewer than 8 elements: constant
    assert "const constant int64_t* params_strides [[buffer(8)]]" in partial  # named in the body
    assert "const device float16_t* tk [[buffer(9)]]" in partial
    assert "device float* ml_part [[buffer(14)]]" in partial
    # The variant's constants open the body; MLX gets no template arguments, so no instantiation.
    assert "[[kernel]] void custom_kernel_folio_decode_partial_" in partial and "[[host_name(" not in partial
    assert "[[threadgroup_position_in_grid]]) {\ntypedef float16_t T;\nconstexpr int D = 128;\n" in partial
    # A variant that reads no tail and no means is not handed them: they are null pointers.
    plain, plain_combine = kernels.decode_sources("metal", 128, 8, rotate=False, tail=False)
    for name, t in (("tk", "TT"), ("tv", "TT"), ("kmean", "float"), ("vmean", "float")):
        assert f"const device {t}* const {name} = nullptr;\n" in plain and f"{name} [[buffer(" not in plain
    assert "device float* o_part [[buffer(9)]]" in plain
    assert "const device float* const vmean = nullptr;\n" in plain_combine and "vmean [[buffer(" not in plain_combine


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed (CUDA toolkit absent)")
def test_cuda_source_compiles_for_sm90(tmp_path):
    # MLX's default header includes its own device utils; this stand-in gives the same includes
    # and types (the real file ships inside libmlx.so of the CUDA wheel, not as a header).
    utils = tmp_path / "mlx" / "backend" / "cuda" / "device"
    utils.mkdir(parents=True)
    (utils / "utils.cuh").write_text(
        "#pragma once\n#include <cuda_bf16.h>\n#include <cuda_fp16.h>\n#include <cuda/std/array>\n"
        "#include <cuda/std/limits>\n#include <cuda/std/tuple>\n#include <cuda/std/type_traits>\n"
        "namespace mlx::core::cu {\nusing Shape = cuda::std::array<int32_t, 10>;\n"
        "using Strides = cuda::std::array<int64_t, 10>;\n}\n")
    jobs = []
    for n, (D, G, kb, vb, kg, vg, dtype) in enumerate(VARIANTS[:3]):
        extras = n != 1   # one variant without the optional inputs (null pointers: kernels.absent)
        for i, src in enumerate(kernels.decode_sources("cuda", D, G, kb, vb, kg, vg, dtype, rotate=extras, tail=extras)):
            if i == 1 and n > 0:
                continue  # one combine kernel is enough
            f = tmp_path / f"k{n}_{i}.cu"
            f.write_text(src)
            jobs.append(f)

    def nvcc(f):
        return f, subprocess.run(["nvcc", "-c", "-arch=sm_90", "-I", str(tmp_path), str(f), "-o", str(f) + ".o"],
                                 capture_output=True, text=True)

    for n, variant in enumerate(SPAN_VARIANTS):
        f = tmp_path / f"span{n}.cu"
        f.write_text(prefill_span.mlx_source("cuda", *variant))
        jobs.append(f)

    with ThreadPoolExecutor(2) as pool:
        for f, r in pool.map(nvcc, jobs):
            assert r.returncode == 0, f"{f.name}: {r.stderr[-3000:]}"


def test_cuda_assembly_matches_mlx_layout():
    partial, _ = kernels.decode_sources("cuda", 128, 8)
    assert partial.startswith(kernels.CUDA_DEFAULT_HEADER)
    assert "namespace mlx::core::cu {\n\nnamespace cg = cooperative_groups;\n\n__global__ void custom_kernel_folio_" in partial
    assert ") {\ntypedef __half T;\nconstexpr int D = 128;\nconstexpr int G = 8;\n" in partial
    assert "    const uint32_t* kp,\n" in partial and "    const __half* tk,\n" in partial
    # One-pass: the partials and the counters go to one work input, the partial kernel's one
    # output is the result.
    assert "    const float* work,\n    __half* out) {\n" in partial
    plain, _ = kernels.decode_sources("cuda", 128, 8, rotate=False, tail=False)
    assert "    const uint8_t* params,\n    const __grid_constant__ Strides params_strides,\n    const float* work,\n" in plain
    assert "const float* const vmean = nullptr;\n" in plain and "const TT* const tk = nullptr;\n" in plain


def test_kernel_names_change_with_the_source():
    # MLX's CUDA backend caches compiled kernels on disk by name.
    a = kernels.kernel_name("decode_partial", "cuda")
    assert a != kernels.kernel_name("decode_combine", "cuda")
    assert a != kernels.kernel_name("decode_partial", "metal")


@pytest.mark.parametrize("n", [1, 63, 127, 128, 4097, 131072, 1_000_003])
@pytest.mark.parametrize("head_dim,gqa", [(64, 1), (128, 8), (256, 4)])
@pytest.mark.parametrize("extra", [0, 1])
def test_split_plan_covers_every_token_once(n, head_dim, gqa, extra):
    nw, nt = kernels.warps_per_block(head_dim, "cuda"), kernels.step_tokens(head_dim)
    splits, chunk = kernels.split_plan(n, 8, nw, nt, extra=extra)
    assert chunk % (nw * nt) == 0
    assert (splits - 1) * chunk < n <= splits * chunk  # no empty split, nothing left over
    assert splits + extra <= kernels.MAX_SPLITS
    # With the exact tail's block (split 0) the whole grid still fits the one-wave target.
    assert (splits + extra) * 8 <= max(kernels.TARGET_BLOCKS, 8 * (1 + extra))
    for backend in ("cuda", "metal"):
        nw = kernels.warps_per_block(head_dim, backend)
        assert nw >= 3  # the tail's block keeps scores and output in warps 1 and 2's buffers
        assert kernels.shared_bytes(head_dim, nw) <= kernels.SHARED_LIMIT[backend]


def test_no_gpu_is_a_clear_fallback_signal():
    if kernels.available() is not None:
        pytest.skip("a GPU backend is present")
    q = kernels.mx.zeros((1, 2, 1, 64), dtype=kernels.mx.float16)
    kq = kernels.mx.quantize(kernels.mx.zeros((1, 1, 8, 64), dtype=kernels.mx.float16), 64, 4)
    with pytest.raises(kernels.KernelUnsupported, match="No Metal or CUDA device"):
        kernels.decode_attention(q, kq, kq, scale=1.0, length=8, k_bits=4, v_bits=4, k_group=64, v_group=64)


def test_edited_shaders_copy_the_shipped_set_with_one_file_changed():
    # Benches A/B an edited kernel through set_shaders; every other file must be the shipped one.
    from pathlib import Path

    shipped = Path(kernels.__file__).parent / "shaders"
    folder = Path(kernels.edited_shaders("decode_partial.body", lambda t: t + "// edited\n"))
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in shipped.iterdir())
    for p in shipped.iterdir():
        want = p.read_text() + ("// edited\n" if p.name == "decode_partial.body" else "")
        assert (folder / p.name).read_text() == want
