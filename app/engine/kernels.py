"""Fused attention kernels on the quantized KV cache: one body per kernel, built for Metal or CUDA.

The kernel bodies in shaders/ are written once against a small per-backend prelude (qualifiers,
barriers, shuffles, thread indices) and handed to `mx.fast.metal_kernel` or `mx.fast.cuda_kernel`,
each built once per variant. Decode is split-K (flash-decoding): one partial softmax state per
(head, split), then merged: on CUDA by the last block of each KV head in the same launch, on Metal
by a second launch. See docs/kernels.md.
"""

import functools
import hashlib
import itertools
import math
import re
import struct
from importlib import resources
from pathlib import Path

import mlx.core as mx

from app.engine.errors import FolioError

HEAD_DIMS = (64, 128, 256)
BITS = (4, 8)
GROUPS = (32, 64, 128)
INPUTS = ("q", "kp", "ks", "kb", "vp", "vs", "vb", "params")   # what every decode variant reads
# Inputs a kernel reads only under one of its constants, (name, constant, pointee type): a variant
# without it is not handed the array and declares the name as a null pointer instead (absent()).
# MLX's host time per custom-kernel call grows with its inputs (bench/host_probe.py, H100 hosts: a
# trivial kernel's build and evaluation 5.6 us with 1 input, 8.4 with 9, 9.1 with 13-14; 12.7 with
# 13-14 on a slower host), and a plain decode reads none of these.
OPTIONAL_INPUTS = {
    "decode_partial": (("tk", "TAILK", "TT"), ("tv", "TAILK", "TT"), ("kmean", "KCTR", "float"),
                       ("vmean", "CENTER", "float")),
    "decode_combine": (("vmean", "CENTER", "float"),),
}
PARTIAL_OUTPUTS = ("o_part", "ml_part")
# One-pass decode (the partial kernel's last block per KV head merges the splits; FOLIO_ONE_PASS in
# the backend's prelude): one launch per layer instead of two. Its inputs add one working buffer,
# `work`: float32 room for the partials, then the per-KV-head counters (an input the kernel writes:
# MLX's host time per launch grows by several microseconds per output); its one output is the result.
ONE_PASS = {"cuda": True, "metal": False}
ONE_PASS_OUTPUTS = ("out",)
BUFFER_POOL = 64               # one-pass buffers in turn: more than the calls one MLX command buffer runs at once (20)
COMBINE_INPUTS = ("o_part", "ml_part", "params")
# Blocks a decode step aims for: two per SM on an H200 (132 SMs). Kernel time under ncu
# (bench/kernel_probe.py --once, bench/ncu_table.py; 2026-11-29, fifth session), head_dim 128,
# 4-bit: pipelined 32-token steps 77.8 us at 128K tokens with 264 blocks against 86.3 with 528 and
# 88.7-101.5 for unpipelined or 16-token plans, 46.0 us at 32K against 48.3-59.7; a launch bound
# for four blocks per SM (MIN_BLOCKS_PER_SM) did not help. See docs/kernels.md.
TARGET_BLOCKS = 264
PIPELINE = True                # PF in decode_partial.body where the registers allow it (pipelined())
STEP_TOKENS = 32               # NT at head_dim <= 128 (step_tokens)
WARPS = 4                      # NW, where threadgroup memory allows (warps_per_block)
MIN_BLOCKS_PER_SM = 0          # CUDA: a launch bound capping the decode kernel's registers (0: none)
MIN_TOKENS_PER_BLOCK = 512     # ncu, 4K tokens: 31.9 us with 512 (8 splits per KV head) against 43.1 with 128
COMBINE_PARTS = 4              # P in decode_combine.body: threads per head_dim element
MAX_SPLITS = 1024              # beyond this more splits only add partials to merge
VERBOSE = False                # print the generated source as MLX assembles it (debugging)
COMPILED = True                # the kernel calls go through mx.compile (_launcher: host time)


class KernelUnsupported(FolioError):
    """The fused kernel does not cover this shape; the reference path does."""


@functools.lru_cache(maxsize=1)  # asked on every decode call; the machine does not change
def available() -> str | None:
    """The GPU backend the kernels run on here: "metal", "cuda", or None (use the reference)."""
    if mx.metal.is_available():
        return "metal"
    if hasattr(mx, "cuda") and mx.cuda.is_available():
        return "cuda"
    return None


# -- source -------------------------------------------------------------------------------------
_shader_dir: str | None = None   # set_shaders: another folder of shader files (benches)


@functools.lru_cache(maxsize=None)
def shader(name: str) -> str:
    """A shader file as handed to MLX: without its comments, blank lines and indentation. MLX copies
    the source on every call of a custom kernel (a 30 KB header cost 2-3 us per call on the H200,
    bench/host_probe.py); this halves it. The files keep the comments."""
    if _shader_dir is not None:
        return _compact(Path(_shader_dir, name).read_text())
    return _compact(resources.files("app.engine").joinpath("shaders", name).read_text())


def set_shaders(folder: str | None = None):
    """Reads the shader files from `folder` (same names) instead of the package, for a bench's A/B
    of edited kernels (bench/kernel_probe.py's PROBE_ALT; bench/step_stamps.py's stamped kernel and
    bench/host_probe.py's kernel that does nothing, both made by edited_shaders); None goes back
    to the shipped ones. Kernel names hash their source, so the two sets never share
    a compiled build; the per-variant caches are dropped."""
    global _shader_dir
    _shader_dir = folder
    shader.cache_clear()
    set_plan()


def edited_shaders(name: str, edit, prefix: str = "folio_shaders_") -> str:
    """A new temporary folder holding the shipped shader files with `name`'s text passed through
    `edit`, for set_shaders (bench/step_stamps.py's stamped kernel, bench/host_probe.py's kernel
    that does nothing)."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix=prefix))
    for f in resources.files("app.engine").joinpath("shaders").iterdir():
        text = f.read_text()
        (folder / f.name).write_text(edit(text) if f.name == name else text)
    return str(folder)


def _compact(text: str) -> str:
    out = []
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("//"):
            continue
        if s.endswith("\\"):                       # a macro goes on: keep the continuation
            s = s[:-1].rstrip() + " \\"
        elif "//" in s and '"' not in s:           # a trailing comment (no string literal on the line)
            s = s[: s.index("//")].rstrip()
        out.append(s)
    return "\n".join(out) + "\n"


def header(backend: str) -> str:
    return shader(f"{backend}_header.h")


def variant_header(kernel: str, backend: str, template=()) -> str:
    """The header handed to MLX with one variant: the backend's prelude, and on CUDA, where the
    variant's MINB (MIN_BLOCKS_PER_SM) is set, a launch bound on the kernel, which makes ptxas fit
    its registers to that many blocks per SM. MLX writes the kernel's signature itself, so the
    bound rides on the `__global__` it spells there."""
    hdr = header(backend)
    consts = dict(template)
    if backend == "cuda" and consts.get("MINB"):
        hdr += (f"#undef __global__\n#define __global__ __location__(global) "
                f"__launch_bounds__({consts['NW'] * 32}, {consts['MINB']})\n")
    return hdr


def body(kernel: str, backend: str) -> str:
    """The kernel body: the backend's index prelude, then the shared body, with its
    `#include "x.inc"` lines replaced by those shared pieces (MLX compiles one string)."""
    text = shader(f"{kernel}.body")
    text = re.sub(r'^#include "([a-z_]+\.inc)"$', lambda m: shader(m.group(1)).rstrip("\n"), text, flags=re.M)
    return shader(f"{backend}_indices.h") + text


# How MLX names each dtype in the generated source.
METAL_TYPES = {"float16": "float16_t", "bfloat16": "bfloat16_t", "float32": "float",
               "uint32": "uint32_t", "int32": "int32_t", "uint8": "uint8_t"}
CUDA_TYPES = {"float16": "__half", "bfloat16": "__nv_bfloat16", "float32": "float",
              "uint32": "uint32_t", "int32": "int32_t", "uint8": "uint8_t"}


def _type_name(dtype) -> str:
    return dtype if isinstance(dtype, str) else str(dtype).rsplit(".", 1)[-1]


def constants(backend: str, template) -> str:
    """A variant's compile-time constants as declarations. They open the source handed to MLX
    instead of going as MLX template arguments: MLX converts and formats those on every call
    (measured on the H200: 4 us per call for the partial kernel's 16)."""
    types = CUDA_TYPES if backend == "cuda" else METAL_TYPES
    out = []
    for name, value in template:
        if isinstance(value, bool):
            out.append(f"constexpr bool {name} = {'true' if value else 'false'};\n")
        elif isinstance(value, int):
            out.append(f"constexpr int {name} = {value};\n")
        else:
            out.append(f"typedef {types[_type_name(value)]} {name};\n")
    return "".join(out)


def present(kernel: str, template) -> tuple[str, ...]:
    """The optional inputs (OPTIONAL_INPUTS) a variant of `kernel` reads, in order."""
    consts = dict(template)
    return tuple(name for name, flag, _t in OPTIONAL_INPUTS.get(kernel, ()) if consts.get(flag, True))


def absent(kernel: str, backend: str, template) -> str:
    """Declarations of the optional inputs a variant does not read, as null pointers of the type
    MLX would have declared them with: the body names them in code its constants switch off."""
    consts, space = dict(template), "device " if backend == "metal" else ""
    return "".join(f"const {space}{t}* const {name} = nullptr;\n"
                   for name, flag, t in OPTIONAL_INPUTS.get(kernel, ()) if not consts.get(flag, True))


def source(kernel: str, backend: str, template=()) -> str:
    """The source handed to MLX for one variant: its constants, the inputs it goes without, then
    the kernel body."""
    return constants(backend, template) + absent(kernel, backend, template) + body(kernel, backend)


def kernel_name(kernel: str, backend: str, template=()) -> str:
    # MLX's CUDA backend caches compiled PTX on disk by kernel name: a hash of the source in the
    # name keeps an edited kernel (or another variant) from loading a stale build.
    digest = hashlib.sha1((variant_header(kernel, backend, template) + source(kernel, backend, template)).encode())
    digest = digest.hexdigest()[:10]
    return f"folio_{kernel}_{digest}"


@functools.lru_cache(maxsize=None)
def _build(kernel: str, backend: str, input_names: tuple, output_names: tuple, template: tuple):
    """One variant's kernel, built once (template: its constants, as (name, value) pairs)."""
    name, src = kernel_name(kernel, backend, template), source(kernel, backend, template)
    hdr = variant_header(kernel, backend, template)
    if backend == "metal":
        return mx.fast.metal_kernel(name=name, input_names=list(input_names),
                                    output_names=list(output_names), source=src, header=hdr)
    return mx.fast.cuda_kernel(name=name, input_names=list(input_names),
                               output_names=list(output_names), source=src, header=hdr)


# -- launch geometry ----------------------------------------------------------------------------
MAX_GQA = 8                    # query heads per KV head: one matrix fragment's width
SHARED_LIMIT = {"cuda": 48 * 1024, "metal": 32 * 1024}   # static threadgroup memory per block


def step_tokens(head_dim: int) -> int:
    """NT in the kernel body: tokens a warp loads per step. 32 beat 16 on the H200 at head_dim 128
    (above); at 256, 32 tokens' registers would not fit (ptxas puts an array on the stack)."""
    return STEP_TOKENS if head_dim <= 128 else 16


def pipelined(head_dim: int, k_bits: int, v_bits: int) -> bool:
    """PF in the kernel body: the next step's loads are issued before this step is computed,
    which holds two steps' words in registers. Where a step's words are few enough (head_dim 64,
    or 128 with 4-bit K and V: 159-204 registers, no spills, by ptxas -v) that is the faster plan;
    wider steps (8-bit at 128, anything at 256) would spill, and load then compute."""
    return PIPELINE and head_dim * (k_bits + v_bits) <= 128 * 8


def shared_bytes(head_dim: int, nw: int) -> int:
    """Threadgroup memory of decode_partial (must match the SHARED arrays in its body)."""
    return nw * (MAX_GQA * head_dim * 4 + 2 * MAX_GQA * 4)


def warps_per_block(head_dim: int, backend: str = "cuda") -> int:
    nw = WARPS  # at least 3: the tail's block keeps its scores and output in warps 1 and 2's buffers
    while nw > 3 and shared_bytes(head_dim, nw) > SHARED_LIMIT[backend]:
        nw -= 1
    return nw


def set_plan(*, pipeline=None, step=None, min_blocks=None, warps=None, target_blocks=None, min_tokens=None):
    """Switches the launch plan: for bench/kernel_probe.py's sweeps, and to run the device tests
    under a candidate plan (FOLIO_TEST_PLAN) before it ships. None leaves a setting as it is; step
    and warps apply where registers and threadgroup memory allow (step_tokens, warps_per_block).
    The per-variant caches are dropped: they hold what the old settings made."""
    global PIPELINE, STEP_TOKENS, MIN_BLOCKS_PER_SM, WARPS, TARGET_BLOCKS, MIN_TOKENS_PER_BLOCK
    PIPELINE = PIPELINE if pipeline is None else bool(pipeline)
    STEP_TOKENS = STEP_TOKENS if step is None else step
    MIN_BLOCKS_PER_SM = MIN_BLOCKS_PER_SM if min_blocks is None else min_blocks
    WARPS = WARPS if warps is None else warps
    TARGET_BLOCKS = TARGET_BLOCKS if target_blocks is None else target_blocks
    MIN_TOKENS_PER_BLOCK = MIN_TOKENS_PER_BLOCK if min_tokens is None else min_tokens
    forget()


def forget():
    """Drops what the per-variant caches hold (built kernels, launch functions, call plans, which
    hold the launch functions): after a change of plan or shaders, or of the builder (tests)."""
    for cached in (_variant, _build, _launcher, _scratch_plan, _call_plan):
        if hasattr(cached, "cache_clear"):  # tests and benches put recorders in _build's place
            cached.cache_clear()


def _wave_splits(n_blocks_per_split: int) -> int:
    """Splits that fill TARGET_BLOCKS with n_blocks_per_split blocks each (at least one)."""
    return max(1, math.ceil(TARGET_BLOCKS / max(1, n_blocks_per_split)))


def split_plan(n_tokens: int, n_blocks_per_split: int, nw: int, nt: int, extra: int = 0) -> tuple[int, int]:
    """(number of splits, tokens per split) for one decode step over n_tokens, leaving room in
    the wave for `extra` more splits (the exact tail's)."""
    tile = nw * nt
    want = max(1, _wave_splits(n_blocks_per_split) - extra)
    splits = max(1, min(want, n_tokens // MIN_TOKENS_PER_BLOCK, MAX_SPLITS - extra))
    chunk = math.ceil(math.ceil(n_tokens / splits) / tile) * tile
    return math.ceil(n_tokens / chunk), chunk


@functools.lru_cache(maxsize=256)
def _params(*values) -> mx.array:
    """A call's 32-bit values as the kernels take them (shaders/call_params.inc): the strides of a
    one-element view, two values to a stride, which MLX hands the kernel by value. Not an array of
    them: on MLX's CUDA backend an array made from host data is managed memory, and the kernel's
    first touch of it stalled every block (bench/step_stamps.py). Every layer of a decode step
    passes the same values: each view is made once."""
    if not all(-(1 << 31) <= v < 1 << 31 for v in values):
        raise KernelUnsupported(f"kernel parameters {values} do not fit 32 bits.")
    pairs = zip(values[::2], values[1::2] + (0,) * (len(values) % 2))
    strides = [int.from_bytes(struct.pack("<ii", lo, hi), "little", signed=True) for lo, hi in pairs]
    assert len(strides) <= 8, "MLX passes at most 8 strides (its MAX_NDIM on CUDA)"
    # Left lazy: the first kernel that takes it evaluates it. An eval here would wait for every
    # operation queued on the stream before it: a decode step's first layer would stall its graph
    # building until the previous step had finished, undoing generate_step's overlap of the two.
    return mx.as_strided(_anchor(), (1,) * len(strides), strides)


@functools.cache
def _anchor() -> mx.array:
    # The views' one element, never read; a byte, so that the strides read back in bytes
    # (param_values) are the strides themselves and cannot overflow.
    a = mx.zeros((1,), dtype=mx.uint8)
    mx.eval(a)
    return a


def param_values(params: mx.array) -> list[int]:
    """The values a _params view carries (tests and the CPU emulator read them back)."""
    strides = memoryview(params).strides
    return list(struct.unpack(f"<{2 * len(strides)}i", struct.pack(f"<{len(strides)}q", *strides)))


def f32_bits(x: float) -> int:
    """The int whose bits are float32 x (a kernel reads it back with F32_BITS)."""
    return struct.unpack("<i", struct.pack("<f", x))[0]


_pools: dict[tuple, list] = {}
_turn = itertools.count()


def _work_buffer(n_counters: int, n_floats: int) -> mx.array:
    """A one-pass call's working memory, one float32 buffer: n_floats for the splits' partials, then
    n_counters int32 counters, zero (the kernel leaves them at zero; 0.0f is all zero bits). Calls
    take them in turn from a pool, so calls that run at once (independent ones in one MLX command
    buffer) never share one."""
    pool = _pools.get((n_counters, n_floats))
    if pool is None:
        # Computed by the device, not mx.zeros (a broadcast scalar has no buffer of its own to write
        # into) nor from a Python list: MLX's CUDA memory is managed, and a buffer the host wrote
        # migrates on the kernel's first touch, a page fault inside the launch (ncu, H200: 150-300
        # us launches until every pool entry had been used once). All made at once: the eval waits
        # for whatever the stream has queued, once rather than at each of the first turns.
        pool = [mx.arange(n_floats + n_counters, dtype=mx.float32) * 0 for _ in range(BUFFER_POOL)]
        mx.eval(pool)
        _pools[n_counters, n_floats] = pool
    return pool[next(_turn) % BUFFER_POOL]


def max_splits(n_blocks_per_split: int) -> int:
    """The most splits split_plan gives a launch of n_blocks_per_split blocks per split, its tail's
    included: the one-pass work buffer is sized for it, so one buffer serves every length."""
    return min(MAX_SPLITS, _wave_splits(n_blocks_per_split)) + 1


@functools.lru_cache(maxsize=64)
def _scratch_plan(B: int, H: int, n_kv: int, D: int) -> tuple[int, int, int]:
    """(most splits, where ml_part starts, the partials' floats: where the counters start) of a
    one-pass launch shape's work buffer."""
    cap = max_splits(B * n_kv)
    return cap, B * H * cap * D, B * H * cap * (D + 2)


@functools.cache
def _unused() -> mx.array:
    """What a variant that never reads an input (no tail, no centering) is handed for it."""
    a = mx.zeros((1,), dtype=mx.float32)
    mx.eval(a)
    return a


@functools.lru_cache(maxsize=128)
def _variant(backend, dtype, L, H, D, n_kv, k_bits, v_bits, k_group, v_group, scale_dtypes, rotate_q, centered,
             rotate_out, tail_dtype, tail_k_centered) -> tuple:
    """What stays fixed while a layer decodes, checked and built once: (nw, nt, the partial's and
    the combine's constants). Raises KernelUnsupported for a shape the kernels do not take."""
    if L != 1:
        raise KernelUnsupported(f"decode_attention takes one query token, got {L}.")
    if D not in HEAD_DIMS:
        raise KernelUnsupported(f"head_dim {D} is not supported by the fused kernel (64, 128 or 256).")
    if k_bits not in BITS or v_bits not in BITS:
        raise KernelUnsupported(f"KV bits {k_bits}/{v_bits} are not supported by the fused kernel (4 or 8).")
    if k_group not in GROUPS or v_group not in GROUPS:
        raise KernelUnsupported(f"group sizes {k_group}/{v_group} are not supported (32, 64 or 128).")
    if H % n_kv:
        raise KernelUnsupported(f"{H} query heads do not divide into {n_kv} KV heads.")
    G = H // n_kv
    if G > MAX_GQA:
        raise KernelUnsupported(f"GQA ratio {G} is not supported by the fused kernel (at most {MAX_GQA}).")
    if any(d != mx.float16 for d in scale_dtypes):
        raise KernelUnsupported("The fused kernel reads float16 scales and biases.")
    nw, nt = warps_per_block(D, backend), step_tokens(D)
    tail = tail_dtype is not None
    partial = (("T", dtype), ("D", D), ("G", G), ("KBITS", k_bits), ("VBITS", v_bits), ("KGROUP", k_group),
               ("VGROUP", v_group), ("NW", nw), ("NT", nt), ("PF", pipelined(D, k_bits, v_bits)), ("ROTQ", rotate_q),
               ("TT", tail_dtype if tail else mx.float32), ("TAILK", tail), ("KCTR", tail and tail_k_centered),
               ("VCTR", tail and centered), ("ROTV", tail and rotate_out), ("CENTER", centered),
               ("ROTO", rotate_out), ("MINB", MIN_BLOCKS_PER_SM if backend == "cuda" else 0))
    combine = (("T", dtype), ("D", D), ("P", COMBINE_PARTS), ("CENTER", centered), ("ROTO", rotate_out))
    return nw, nt, partial, combine


def decode_inputs(partial_template, one_pass: bool) -> tuple[str, ...]:
    """The decode_partial variant's input names, in the order decode_attention passes the arrays."""
    return INPUTS + present("decode_partial", partial_template) + (("work",) if one_pass else ())


def decode_attention(q, k, v, *, scale, length, k_bits, v_bits, k_group, v_group, window=None,
                     rotate_q: bool = False, v_mean=None, rotate_out: bool = False, tail=None, k_mean=None,
                     skip=None, poison: bool = False):
    """Attention of one query token per head over the first `length` slots of a quantized cache.

    q: (B, n_heads, 1, head_dim); k, v: (packed, scales, biases) in mx.quantize's layout with shape
    (B, n_kv_heads, T_alloc, ...). Returns (B, n_heads, 1, head_dim) in q.dtype. What the cache did
    before quantizing is undone inside the kernels: `rotate_q` rotates q by the cache's Hadamard
    transform (keys stored rotated), `v_mean` (B, n_kv_heads, 1, head_dim) float32 is added back
    and `rotate_out` rotates the output back (values stored centered and rotated). `tail` =
    (tail_k, tail_v, n): n more tokens after `length`, exact and as they came (not rotated or
    centered), in buffers (B, n_kv_heads, capacity, head_dim); `k_mean` is K's centering mean,
    which the tail's scores are shifted by like the stored keys'. `skip` = (first slot, count):
    slots the query does not see, a run that may wrap past the last slot (a sliding-window ring
    whose oldest entries the tail pushed out of the window). `poison` fills the outputs with NaN
    before the kernels run (tests use it to prove every element is written).
    """
    backend = available()
    if backend is None:
        raise KernelUnsupported("No Metal or CUDA device: the fused attention kernel cannot run here.")
    n_tail = tail[2] if tail is not None else 0
    centered = v_mean is not None
    run, params, work = _call_plan(
        backend, q.shape, q.dtype, k[0].shape, (k[1].dtype, v[1].dtype), k_bits, v_bits, k_group, v_group,
        int(length), window and int(window), bool(rotate_q), centered, bool(rotate_out),
        (tail[0].shape, tail[1].shape, tail[0].dtype) if n_tail else None, n_tail, k_mean is not None,
        tuple(skip) if skip else None, float(scale), bool(poison))
    # In the order decode_inputs lists them for this variant.
    inputs = [q, *k, *v, params]
    if n_tail:
        inputs += tail[:2] if k_mean is None else (*tail[:2], k_mean)
    if centered:
        inputs.append(v_mean.astype(mx.float32))
    if work:
        inputs.append(_work_buffer(*work))
    return run(*inputs)


@functools.lru_cache(maxsize=256)
def _call_plan(backend, q_shape, dtype, k_shape, scale_dtypes, k_bits, v_bits, k_group, v_group, length, window,
               rotate_q, centered, rotate_out, tail, n_tail, tail_k_centered, skip, scale, poison) -> tuple:
    """What decode_attention hands MLX besides the arrays, from the call's shapes and values:
    (the launch function, the params view, the one-pass work buffer's counters and floats, or
    None). Checked and worked out once per distinct call: every layer of a decode step makes the
    same one, and the split plan, the params and the checks were half of a call's Python
    (bench/host_probe.py)."""
    B, H, L, D = q_shape
    n_kv, t_alloc = k_shape[1], k_shape[2]
    tail_dtype = tail[2] if tail else None
    nw, nt, partial_template, combine_template = _variant(
        backend, dtype, L, H, D, n_kv, k_bits, v_bits, k_group, v_group, scale_dtypes, rotate_q, centered,
        rotate_out, tail_dtype, tail_k_centered)
    if not 0 < length <= t_alloc:
        raise KernelUnsupported(f"length {length} is outside the cache's {t_alloc} slots.")
    if n_tail:
        tk_shape, tv_shape, _ = tail
        if tk_shape[:2] != (B, n_kv) or tk_shape[3] != D or tv_shape != tk_shape or n_tail > tk_shape[2]:
            raise KernelUnsupported(f"tail of shape {tk_shape} does not match the cache.")
    G = H // n_kv
    if n_tail * G > MAX_GQA * D:
        raise KernelUnsupported(f"a tail of {n_tail} tokens is longer than the kernel's buffer ({MAX_GQA * D // G}).")
    start = max(0, length - window) if window else 0
    splits, chunk = split_plan(length - start, B * n_kv, nw, nt, extra=bool(n_tail))
    splits += bool(n_tail)  # the tail's own block: split 0
    skip_from, skip_n = skip if skip else (0, 0)
    one_pass = ONE_PASS[backend]
    cap, ml_at, n_scratch = _scratch_plan(B, H, n_kv, D) if one_pass else (splits, 0, 0)
    assert splits <= cap, (splits, cap)
    params = _params(start, length, chunk, n_kv, t_alloc, H, splits, n_tail, tail[0][2] if n_tail else 0,
                     skip_from, skip_n, ml_at, f32_bits(scale), n_scratch)
    run = _launcher(backend, partial_template, combine_template, B, H, n_kv, splits, t_alloc, poison)
    return run, params, ((B * n_kv, n_scratch) if one_pass else None)


@functools.lru_cache(maxsize=256)
def _launcher(backend, partial_template, combine_template, B, H, n_kv, splits, t_alloc, poison):
    """A decode's kernel calls for one launch shape, as a function of the input arrays (the order
    decode_attention lists them): one launch on one-pass backends, else the partial and the combine.
    With COMPILED it goes through mx.compile, traced once and replayed after: a direct
    custom-kernel call has MLX assemble the kernel's source and convert its arguments every time
    (on the H200, bench/host_probe.py: 14.1 us of host time per call against 5.6 compiled, and a
    whole decode_attention call 31.5 against 18.6; same output), and decode makes one such call
    per layer per token. The cache's slot count is in the key although the function would take
    any: MLX keeps a compiled function's traces, one per input shape, and searches them on every
    call, so a cache growing 256 slots at a time would make that search longer and longer; one
    function per shape keeps it to one trace, and the LRU drops (and MLX erases) old ones."""
    consts = dict(partial_template)
    D, nw, dtype = consts["D"], consts["NW"], consts["T"]
    launch = dict(grid=(splits * nw * 32, B * n_kv, 1), threadgroup=(nw * 32, 1, 1),
                  init_value=float("nan") if poison else None, verbose=VERBOSE)
    partial_inputs = decode_inputs(partial_template, ONE_PASS[backend])
    if ONE_PASS[backend]:
        one_pass = _build("decode_partial", backend, partial_inputs, ONE_PASS_OUTPUTS, partial_template)

        def run(*inputs):
            (out,) = one_pass(inputs=list(inputs), output_shapes=[(B, H, 1, D)], output_dtypes=[dtype], **launch)
            return out
    else:
        partial = _build("decode_partial", backend, partial_inputs, PARTIAL_OUTPUTS, partial_template)
        combine_inputs = COMBINE_INPUTS + present("decode_combine", combine_template)
        combine = _build("decode_combine", backend, combine_inputs, ("out",), combine_template)
        combine_params = _params(splits, H // n_kv, H)
        v_mean_at = partial_inputs.index("vmean") if "vmean" in combine_inputs else None

        def run(*inputs):
            o_part, ml_part = partial(inputs=list(inputs), output_shapes=[(B * H, splits, D), (B * H, splits, 2)],
                                      output_dtypes=[mx.float32, mx.float32], **launch)
            extra = [] if v_mean_at is None else [inputs[v_mean_at]]
            (out,) = combine(inputs=[o_part, ml_part, combine_params, *extra],
                             grid=(D * COMBINE_PARTS, B * H, 1), threadgroup=(D * COMBINE_PARTS, 1, 1),
                             output_shapes=[(B, H, 1, D)], output_dtypes=[dtype], init_value=launch["init_value"])
            return out
    return mx.compile(run) if COMPILED else run


# -- the generated source, as MLX assembles it (for the compile checks) -------------------------
METAL_ATTRIBUTES = (
    ("dispatch_quadgroups_per_threadgroup", "uint"), ("dispatch_simdgroups_per_threadgroup", "uint"),
    ("dispatch_threads_per_threadgroup", "uint3"), ("grid_origin", "uint3"), ("grid_size", "uint3"),
    ("quadgroup_index_in_threadgroup", "uint"), ("quadgroups_per_threadgroup", "uint"),
    ("simdgroup_index_in_threadgroup", "uint"), ("simdgroups_per_threadgroup", "uint"),
    ("thread_execution_width", "uint"), ("thread_index_in_quadgroup", "uint"),
    ("thread_index_in_simdgroup", "uint"), ("thread_index_in_threadgroup", "uint"),
    ("thread_position_in_grid", "uint3"), ("thread_position_in_threadgroup", "uint3"),
    ("threadgroup_position_in_grid", "uint3"), ("threadgroups_per_grid", "uint3"),
    ("threads_per_grid", "uint3"), ("threads_per_simdgroup", "uint"), ("threads_per_threadgroup", "uint3"),
)


def mlx_kernel_name(backend, name, inputs, outputs) -> str:
    """The name MLX gives the generated kernel (it is part of the source), for a kernel called
    without template arguments, as Folio's are (kernels.constants)."""
    if backend == "cuda":
        return "custom_kernel_" + name
    out = "custom_kernel_" + name
    for _n, dtype, size, ndim in inputs:
        out += "_" + METAL_TYPES[dtype] + ("s" if ndim == 0 else "c" if size < 8 else "")
    return out + "".join("_" + METAL_TYPES[d] for _n, d in outputs)


def metal_source(name, hdr, src, inputs, outputs) -> str:
    """MLX's metal_kernel assembly (write_signature) without template arguments: inputs are
    (name, dtype, size, ndim), outputs (name, dtype)."""
    params, index = [], 0
    for n, dtype, size, ndim in inputs:
        loc = "constant" if size < 8 else "device"
        params.append(f"  const {loc} {METAL_TYPES[dtype]}{'&' if ndim == 0 else '*'} {n} [[buffer({index})]]")
        index += 1
        for suffix, decl in (("_shape", "const constant int*"), ("_strides", "const constant int64_t*"),
                             ("_ndim", "const constant int&")):
            if ndim > 0 and n + suffix in src:
                params.append(f"  {decl} {n}{suffix} [[buffer({index})]]")
                index += 1
    for n, dtype in outputs:
        params.append(f"  device {METAL_TYPES[dtype]}* {n} [[buffer({index})]]")
        index += 1
    params += [f"  {t} {a} [[{a}]]" for a, t in METAL_ATTRIBUTES if a in src]
    return hdr + f"[[kernel]] void {name}(\n" + ",\n".join(params) + ") {\n" + src + "\n}\n"


# MLX 0.32's default CUDA header (checked byte for byte against its verbose output on the H200).
CUDA_DEFAULT_HEADER = """
#include "mlx/backend/cuda/device/utils.cuh"

#include <cooperative_groups.h>

"""


def cuda_source(name, hdr, src, inputs, outputs) -> str:
    """MLX's cuda_kernel assembly (build_kernel) without template arguments, with the same argument
    shapes as metal_source."""
    out = [CUDA_DEFAULT_HEADER, hdr, "namespace mlx::core::cu {\n\nnamespace cg = cooperative_groups;\n\n",
           f"__global__ void {name}(\n"]
    for n, dtype, _size, ndim in inputs:
        out.append(f"    const {CUDA_TYPES[dtype]}* {n},\n")
        for suffix, decl in (("_shape", "const __grid_constant__ Shape"),
                             ("_strides", "const __grid_constant__ Strides"), ("_ndim", "const __grid_constant__ int")):
            if ndim > 0 and n + suffix in src:
                out.append(f"    {decl} {n}{suffix},\n")
    out.append(",\n".join(f"    {CUDA_TYPES[d]}* {n}" for n, d in outputs) + ") {\n")
    out.append(src + "\n}\n\n} // namespace mlx::core::cu\n")
    return "".join(out)


def mlx_source(kernel: str, backend: str, template, inputs, outputs) -> tuple[str, str]:
    """(the generated kernel's name, its whole source) for one variant called with these inputs
    and outputs (as metal_source takes them), as MLX assembles them for decode_attention's calls:
    the constants in the source, no MLX template arguments."""
    name = mlx_kernel_name(backend, kernel_name(kernel, backend, template), inputs, outputs)
    build = metal_source if backend == "metal" else cuda_source
    return name, build(name, variant_header(kernel, backend, template), source(kernel, backend, template),
                       inputs, outputs)


def decode_sources(backend: str, D=128, G=8, k_bits=4, v_bits=4, k_group=64, v_group=64, dtype="float16",
                   rotate: bool = True, tail: bool = True):
    """Both decode kernels' full source for one variant, assembled as MLX would for `backend` (on a
    one-pass backend the partial kernel is the whole decode; the combine kernel is still checked),
    handed the inputs that variant takes (decode_inputs)."""
    def assemble(kernel, names, outputs, tpl):
        return mlx_source(kernel, backend, tpl, [described[n] for n in names], outputs)[1]

    # The constants decode_attention would build for this variant (G query heads on one KV head,
    # a tail of the query's dtype or none, every transform on or off together).
    mx_dtype = getattr(mx, dtype)
    _nw, _nt, tpl, combine_tpl = _variant(backend, mx_dtype, 1, G, D, 1, k_bits, v_bits, k_group, v_group,
                                          (mx.float16, mx.float16), rotate, rotate, rotate,
                                          mx_dtype if tail else None, rotate)
    described = {n: (n, t, size, ndim) for n, t, size, ndim in (
        ("q", dtype, 4096, 4), ("kp", "uint32", 4096, 4), ("ks", "float16", 4096, 4), ("kb", "float16", 4096, 4),
        ("vp", "uint32", 4096, 4), ("vs", "float16", 4096, 4), ("vb", "float16", 4096, 4), ("params", "uint8", 1, 7),
        ("tk", dtype, 4096, 4), ("tv", dtype, 4096, 4), ("kmean", "float32", 128, 4), ("vmean", "float32", 128, 4),
        ("work", "float32", 4096, 1), ("o_part", "float32", 4096, 3), ("ml_part", "float32", 4096, 3))}
    one_pass = ONE_PASS[backend]
    outputs = [("out", dtype)] if one_pass else [("o_part", "float32"), ("ml_part", "float32")]
    partial = assemble("decode_partial", decode_inputs(tpl, one_pass), outputs, tpl)
    described["params"] = ("params", "uint8", 1, 2)
    combine = assemble("decode_combine", COMBINE_INPUTS + present("decode_combine", combine_tpl), [("out", dtype)],
                       combine_tpl)
    return partial, combine
