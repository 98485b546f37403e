"""Runs the CUDA build of Folio's decode kernel on the CPU (tests/cuda_emu/folio_cuda_emu.h).

`emulated(monkeypatch)` makes `kernels.decode_attention` take the CUDA path here: each kernel it
builds is the source MLX would compile (`kernels.cuda_source`), its four inline PTX statements
swapped for the emulator's, compiled once by g++ and run over the launch's grid, one block after
another. What this checks is the kernel's logic (fragment layouts, loads, masks, the one-pass
merge) against the reference, on any machine; the H200 remains the judge of the hardware's own
numerics and of speed.
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
    "mlx/backend/cuda/device/utils.cuh": "#pragma once\nnamespace mlx::core::cu {}\n",
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


def available() -> bool:
    return shutil.which("g++") is not None


def cpu_source(cuda_src: str) -> str:
    """MLX's CUDA source for a kernel with its PTX swapped for the emulator's calls."""
    out = cuda_src
    for pattern, repl in PTX:
        out, n = re.subn(pattern, repl, out, flags=re.S)
        assert n == 1, f"inline PTX not found once: {pattern}"
    assert "asm(" not in out and "asm volatile(" not in out, "an inline PTX statement the emulator does not know"
    return '#include "folio_cuda_emu.h"\n' + out


def driver(kernel: str, inputs, outputs) -> str:
    """main(): reads the inputs (each at a 64-byte boundary of inputs.bin), fills the outputs with
    the init value, runs the grid, writes the outputs back in order."""
    ctype = kernels.CUDA_TYPES
    args = [f"(const {ctype[d]}*)(in + off[{i}])" for i, (_n, d, _s, _k) in enumerate(inputs)]
    args += [f"({ctype[d]}*)(outb + ooff[{i}])" for i, (_n, d) in enumerate(outputs)]
    return f"""
#include <cstdio>
#include <cstdlib>
int main(int argc, char** argv) {{
  // argv: inputs.bin outputs.bin gx gy nth init (1: NaN, 0: zeros), the input byte offsets, the output byte sizes
  const int n_in = {len(inputs)}, n_out = {len(outputs)};
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
  emu_launch(gx, gy, nth, [&] {{ mlx::core::cu::{kernel}({", ".join(args)}); }});
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


_DTYPES = {"float16": np.float16, "float32": np.float32, "int32": np.int32, "uint32": np.uint32,
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
    r = subprocess.run(["g++", "-std=c++20", "-O1", "-pthread", "-w", "-I", str(HERE), "-I", str(cache / "inc"),
                        str(cpp), "-o", str(exe)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-4000:]
    return exe


def fake_build(cache: Path):
    """A stand-in for kernels._build: the kernel object it returns runs on the emulator."""

    def build(kernel, backend, input_names, output_names, template):
        assert backend == "cuda"
        hdr = kernels.variant_header(kernel, backend, template)
        body = kernels.source(kernel, backend, template)
        name = kernels.mlx_kernel_name(backend, kernels.kernel_name(kernel, backend, template), [], [])

        def call(*, inputs, output_shapes, output_dtypes, grid, threadgroup, init_value=None, verbose=False, **_):
            arrays = [mx.array(x) if not isinstance(x, mx.array) else x for x in inputs]
            mx.eval(arrays)
            descr = [(n, kernels._type_name(a.dtype), a.size, a.ndim) for n, a in zip(input_names, arrays)]
            outs = [(n, kernels._type_name(d)) for n, d in zip(output_names, output_dtypes)]
            src = cpu_source(kernels.cuda_source(name, hdr, body, descr, outs)) + driver(name, descr, outs)
            exe = _compile(src, cache)
            blob, offsets = bytearray(), []
            for a in arrays:
                data = _np(a).tobytes()
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


def emulated(monkeypatch, cache: Path):
    """decode_attention on the CUDA path, every kernel run by the emulator."""
    monkeypatch.setattr(kernels, "available", lambda: "cuda")
    monkeypatch.setattr(kernels, "_build", fake_build(cache))
    monkeypatch.setattr(kernels, "COMPILED", False)
    kernels._variant.cache_clear()
    kernels._launcher.cache_clear()
    kernels._pools.clear()
