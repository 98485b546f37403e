"""Runs the CUDA or the Metal build of Folio's decode kernels on the CPU (tests/kernel_emu).

`emulated(monkeypatch, cache, backend)` makes `kernels.decode_attention` take that backend's path
here: each kernel it builds is the source MLX would compile (`kernels.cuda_source`,
`kernels.metal_source`), with the CUDA build's four inline PTX statements swapped for the
emulator's calls and the Metal build's threadgroup declarations made static, compiled once by g++
against folio_cuda_emu.h or the executable metal_stdlib here, and run over the launch's grid one
block after another (emu_threads.h). What this checks is the kernels' logic (fragment layouts,
loads, masks, the merges) against the references on any machine; a GPU remains the judge of the
hardware's own numerics and of speed.
"""

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import mlx.core as mx
import numpy as np

from app.engine import kernels

HERE = Path(__file__).parent
STUBS = {
    # MLX's Shape and Strides (kernel arguments by value: an input's `_shape`, `_strides`).
    "mlx/backend/cuda/device/utils.cuh": ("#pragma once\n#include <array>\n#include <cstdint>\nnamespace mlx::core::cu {\n"
                                          "using Shape = std::array<int32_t, 8>;\nusing Strides = std::array<int64_t, 8>;\n}\n"),
    "cooperative_groups.h": "#pragma once\nnamespace cooperative_groups {}\n",
    "cuda_fp16.h": "#pragma once\n",
}
# cuda_header.h's inline PTX and what stands in for each (the kernel's only asm statements).
PTX = [
    (r'asm\("ex2\.approx\.ftz\.f32.*?"f"\(x\)\);', "y = exp2f(x);"),
    (r'asm\("lop3\.b32.*?"r"\(0x64006400u\)\);', "y = (x & mask) | 0x64006400u;"),
    (r'asm\("mma\.sync\.aligned\.m16n8k16.*?"r"\(b1\)\);', "emu_mma(c, a0, a1, a2, a3, b0, b1);"),
    (r'asm\("movmatrix\.sync\.aligned\.m8n8\.trans\.b16.*?"r"\(x\)\);', "y = emu_movmatrix(x);"),
]
ALIGN = 64
EMU_STRIDES = """
static mlx::core::cu::Strides emu_strides(const char* p) {
  mlx::core::cu::Strides s;
  std::memcpy(s.data(), p, sizeof(s));
  return s;
}
"""


def available() -> bool:
    return shutil.which("g++") is not None


def cpu_source(backend: str, src: str) -> str:
    """MLX's source for a kernel, made for the emulator: CUDA's PTX swapped for its calls, Metal's
    threadgroup arrays static (shared by the block's threads; blocks run one at a time)."""
    if backend == "metal":
        out, n = re.subn(r"^#define SHARED threadgroup$", "#define SHARED static", src, flags=re.M)
        assert n == 1, "the Metal prelude's SHARED qualifier moved"
        return out
    out = src
    for pattern, repl in PTX:
        out, n = re.subn(pattern, repl, out, flags=re.S)
        assert n == 1, f"inline PTX not found once: {pattern}"
    assert "asm(" not in out and "asm volatile(" not in out, "an inline PTX statement the emulator does not know"
    return '#include "folio_cuda_emu.h"\n' + out


# What the driver passes for each Metal thread attribute the generated signature names.
METAL_ARGS = {
    "thread_index_in_simdgroup": "(emu_tid & 31u)",
    "simdgroup_index_in_threadgroup": "(emu_tid / 32u)",
    "thread_index_in_threadgroup": "emu_tid",
    "threadgroup_position_in_grid": "uint3{emu_bx, emu_by, 0}",
    "thread_position_in_threadgroup": "uint3{emu_tid, 0, 0}",
}


def strided(src: str, inputs) -> list[int]:
    """Which inputs the kernel takes the strides of (as MLX decides: the name in the source)."""
    for n, _d, _s, ndim in inputs:
        assert not (ndim > 0 and (n + "_shape" in src or n + "_ndim" in src)), f"the emulator does not pass {n}'s shape"
    return [i for i, (n, _d, _s, ndim) in enumerate(inputs) if ndim > 0 and n + "_strides" in src]


def driver(backend: str, kernel: str, src: str, inputs, outputs) -> str:
    """main(): reads the inputs (each at a 64-byte boundary of inputs.bin, then the strides of
    those strided() names, 8 int64 each), fills the outputs with the init value, runs the grid,
    writes the outputs back in order."""
    ctype = kernels.CUDA_TYPES if backend == "cuda" else kernels.METAL_TYPES
    with_strides = strided(src, inputs)
    args = []
    for i, (_n, d, _s, _k) in enumerate(inputs):
        args.append(f"(const {ctype[d]}*)(in + off[{i}])")
        if i in with_strides:
            at = f"in + off[{len(inputs) + with_strides.index(i)}]"
            args.append(f"emu_strides({at})" if backend == "cuda" else f"(const int64_t*)({at})")
    args += [f"({ctype[d]}*)(outb + ooff[{i}])" for i, (_n, d) in enumerate(outputs)]
    if backend == "metal":
        named = [a for a, _t in kernels.METAL_ATTRIBUTES if a in src]
        unknown = set(named) - set(METAL_ARGS)
        assert not unknown, f"thread attributes the emulator does not pass: {unknown}"
        args += [METAL_ARGS[a] for a in named]
    call = f"mlx::core::cu::{kernel}" if backend == "cuda" else kernel
    return f"""
#include <cstdio>
#include <cstdlib>
{EMU_STRIDES if backend == "cuda" else ""}
int main(int argc, char** argv) {{
  // argv: inputs.bin outputs.bin gx gy nth init (1: NaN, 0: zeros), the input byte offsets, the output byte sizes
  const int n_in = {len(inputs) + len(with_strides)}, n_out = {len(outputs)};
  FILE* f = std::fopen(argv[1], "rb");
  std::fseek(f, 0, SEEK_END); const long size = std::ftell(f); std::fseek(f, 0, SEEK_SET);
  char* in = static_cast<char*>(std::aligned_alloc({ALIGN}, (size + {ALIGN} - 1) / {ALIGN} * {ALIGN}));
  if (std::fread(in, 1, size, f) != size_t(size)) return 2;
  std::fclose(f);
  const int gx = std::atoi(argv[3]), gy = std::atoi(argv[4]), nth = std::atoi(argv[5]);
  const int init = std::atoi(argv[6]);
  long off[n_in], ooff[n_out], osize[n_out], total = 0;
  for (int i = 0; i < n_in; ++i) off[i] = std::atol(argv[7 + i]);
  for (int i = 0; i < n_out; ++i) {{ osize[i] = std::atol(argv[7 + n_in + i]); ooff[i] = total; total += (osize[i] + {ALIGN} - 1) / {ALIGN} * {ALIGN}; }}
  char* outb = static_cast<char*>(std::aligned_alloc({ALIGN}, total + {ALIGN}));
  std::memset(outb, init == 1 ? 0xFF : 0, total);   // all-ones bytes: NaN in fp16, bf16 and fp32
  emu_launch(gx, gy, nth, [&] {{ {call}({", ".join(args)}); }});
  FILE* o = std::fopen(argv[2], "wb");
  for (int i = 0; i < n_out; ++i) std::fwrite(outb + ooff[i], 1, osize[i], o);
  std::fclose(o);
  return 0;
}}
"""


def _np(a: mx.array) -> np.ndarray:
    if a.dtype == mx.bfloat16:
        return np.array(a.view(mx.uint16))
    return np.array(a)


_DTYPES = {"float16": np.float16, "float32": np.float32, "int32": np.int32, "uint32": np.uint32, "uint8": np.uint8,
           "bfloat16": np.uint16}   # bfloat16 travels as its bits


def _compile(src: str, cache: Path) -> Path:
    key = hashlib.sha1(src.encode()).hexdigest()[:16]
    exe = cache / f"k_{key}"
    if exe.exists():
        return exe
    for rel, text in STUBS.items():
        p = cache / "inc" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    cpp = cache / f"k_{key}.cpp"
    cpp.write_text(src)
    r = subprocess.run(["g++", "-std=c++20", "-O1", "-pthread", "-w", "-Wno-attributes", "-I", str(HERE),
                        "-I", str(cache / "inc"), str(cpp), "-o", str(exe)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-4000:]
    return exe


def fake_build(cache: Path):
    """A stand-in for kernels._build: the kernel object it returns runs on the emulator."""

    def build(kernel, backend, input_names, output_names, template):
        def call(*, inputs, output_shapes, output_dtypes, grid, threadgroup, init_value=None, verbose=False, **_):
            arrays = [mx.array(x) if not isinstance(x, mx.array) else x for x in inputs]
            mx.eval(arrays)
            descr = [(n, kernels._type_name(a.dtype), a.size, a.ndim) for n, a in zip(input_names, arrays)]
            outs = [(n, kernels._type_name(d)) for n, d in zip(output_names, output_dtypes)]
            name, mlx_src = kernels.mlx_source(kernel, backend, template, descr, outs)
            src = cpu_source(backend, mlx_src) + driver(backend, name, mlx_src, descr, outs)
            exe = _compile(src, cache)
            blob, offsets = bytearray(), []
            strides = [np.array(memoryview(arrays[i]).strides, np.int64) // arrays[i].itemsize
                       for i in strided(mlx_src, descr)]
            for data in [_np(a).tobytes() for a in arrays] + [np.pad(s, (0, 8 - len(s))).tobytes() for s in strides]:
                offsets.append(len(blob))
                blob += data + bytes((-len(data)) % ALIGN)
            (cache / "in.bin").write_bytes(bytes(blob) or b"\0")
            sizes = [int(np.prod(s)) * np.dtype(_DTYPES[kernels._type_name(d)]).itemsize
                     for s, d in zip(output_shapes, output_dtypes)]
            init = "1" if init_value is not None and np.isnan(init_value) else "0"
            gx, gy = grid[0] // threadgroup[0], grid[1] // threadgroup[1]
            r = subprocess.run([str(exe), str(cache / "in.bin"), str(cache / "out.bin"), str(gx), str(gy),
                                str(threadgroup[0]), init, *map(str, offsets), *map(str, sizes)],
                               capture_output=True, text=True, timeout=600)
            assert r.returncode == 0, r.stderr[-2000:]
            raw, results, at = (cache / "out.bin").read_bytes(), [], 0
            for s, d, n in zip(output_shapes, output_dtypes, sizes):
                x = mx.array(np.frombuffer(raw[at:at + n], dtype=_DTYPES[kernels._type_name(d)]).reshape(s))
                results.append(x.view(mx.bfloat16) if d == mx.bfloat16 else x)
                at += n
            return results

        return call

    return build


def emulated(monkeypatch, cache: Path, backend: str = "cuda"):
    """decode_attention on `backend`'s path, every kernel run by the emulator."""
    monkeypatch.setattr(kernels, "available", lambda: backend)
    monkeypatch.setattr(kernels, "_build", fake_build(cache))
    monkeypatch.setattr(kernels, "COMPILED", False)
    forget()


def forget():
    """Drop the launchers and variants kernels.py keeps: they hold whichever builder made them
    (the emulator's after `emulated`, MLX's before and after)."""
    kernels.forget()
