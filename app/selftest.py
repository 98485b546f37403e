"""`folio --self-test`: checks this installation, prints a readable report, exits 0 or 1.

The same checks run on every platform and inside the bundle (`Folio.app/Contents/MacOS/Folio
--self-test`): the MLX backend (on a Mac this is where a missing mlx.metallib shows), the fused
attention kernel against the reference on fresh random inputs where a kernel exists, the GPU
prefill (span kernel + SDPA) against the reference path where a kernel exists, a tiny
random model's forward pass and cached decode, the data dir, the HF cache and Qt's platform plugin.
Each check catches its own failure, so one broken piece never hides the others.
"""

import importlib
import os
import platform
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from app import __version__, log

logger = log.get("selftest")

# Relative error allowed between the kernel and the reference: both accumulate in fp32, and the
# outputs are rounded to fp16 (2^-11 ~ 5e-4), so a correct kernel stays well inside this.
KERNEL_TOLERANCE = 1e-2
# The reference against fp32 attention over the dequantized cache: same maths, other order.
REFERENCE_TOLERANCE = 1e-2
# Decode-step logits against the same position in one full forward pass (fp32 model).
FORWARD_TOLERANCE = 1e-3

# (batch, heads, kv_heads, head_dim, length, k_bits, v_bits, k_group, v_group, window)
ATTENTION_CASES = [
    (1, 4, 4, 64, 37, 4, 4, 64, 64, None),
    (1, 8, 2, 128, 301, 8, 4, 64, 64, None),
    (2, 8, 1, 128, 517, 4, 4, 32, 64, 128),
    (1, 4, 1, 256, 130, 4, 8, 128, 64, None),
]

QT_PLATFORM_PLUGINS = {"darwin": ["libqcocoa.dylib"], "win32": ["qwindows.dll"]}


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


class CheckFailed(Exception):
    """A check ran and found something wrong; the message says what."""


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


# -- backend ---------------------------------------------------------------
def check_backend() -> str:
    import mlx.core as mx

    from app import blas
    from app.engine import memory

    backend = memory.backend()
    try:
        a = mx.arange(12, dtype=mx.float32).reshape(3, 4)
        got = (a @ a.T).tolist()
    except RuntimeError as e:
        hint = ""
        if "metallib" in str(e):
            hint = " (MLX's mlx.metallib must sit beside libmlx.dylib; rebuild or reinstall Folio)"
        raise CheckFailed(f"{backend}: MLX cannot run a matmul: {_one_line(e)}{hint}") from None
    want = [[sum(i * j for i, j in zip(r, c)) for c in _rows(3, 4)] for r in _rows(3, 4)]
    if got != want:
        raise CheckFailed(f"{backend}: a 3x4 matmul gave wrong numbers")
    info = mx.device_info()
    parts = [backend]
    if info.get("architecture"):
        parts.append(str(info["architecture"]))
    parts.append(f"{memory.fmt(memory.budget_bytes())} for MLX")
    if sys.platform.startswith("linux"):
        parts.append(f"BLAS {blas.preloaded() or 'reference (slow; install OpenBLAS)'}")
    return ", ".join(parts) + "; matmul correct"


def _rows(n, m):
    return [list(range(i * m, (i + 1) * m)) for i in range(n)]


# -- attention ---------------------------------------------------------------
def _optional(module: str):
    """A Folio module that may not exist in this build yet; None when absent."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        return None


def _random_case(case, dtype):
    import mlx.core as mx

    B, H, KVH, D, T, k_bits, v_bits, k_group, v_group, window = case
    T_alloc = T + 13  # slots past `length` hold garbage that must never be read
    q = mx.random.normal((B, H, 1, D)).astype(dtype)
    k = mx.quantize(mx.random.normal((B, KVH, T_alloc, D)).astype(dtype), group_size=k_group, bits=k_bits)
    v = mx.quantize(mx.random.normal((B, KVH, T_alloc, D)).astype(dtype), group_size=v_group, bits=v_bits)
    kw = dict(scale=D**-0.5, length=T, k_bits=k_bits, v_bits=v_bits, k_group=k_group, v_group=v_group, window=window)
    return q, k, v, kw


def dequantized_attention(q, k, v, *, scale, length, k_bits, v_bits, k_group, v_group, window=None, tail=None,
                          skip=None):
    """Plain fp32 attention over the dequantized cache (less the `skip` run of slots, then the
    ExactTail `tail`, if any): the oracle for the reference itself."""
    import mlx.core as mx

    start = max(0, length - window) if window else 0
    seen = [j for j in range(start, length) if not skip or (j - skip[0]) % k[0].shape[2] >= skip[1]]
    seen = mx.array(seen)
    keys = mx.take(mx.dequantize(*k, group_size=k_group, bits=k_bits), seen, axis=2).astype(mx.float32)
    values = mx.take(mx.dequantize(*v, group_size=v_group, bits=v_bits), seen, axis=2).astype(mx.float32)
    if tail is not None:
        tk, tv = tail.stored()
        keys, values = mx.concatenate([keys, tk], axis=2), mx.concatenate([values, tv], axis=2)
    return mx.fast.scaled_dot_product_attention(
        q.astype(mx.float32), keys, values, scale=scale
    ).astype(q.dtype)


def undo_transforms(attend):
    """`attend(q, k, v, **kw)` extended to the fused kernels' full contract: q rotated like the
    cache's keys first, the exact tail (raw buffers + fill) handed on as an ExactTail, V's mean
    added back and the output rotated back after (kernels.py)."""

    def run(q, k, v, *, rotate_q=False, v_mean=None, rotate_out=False, tail=None, k_mean=None, **kw):
        from app.engine import rotation
        from app.engine.attention import ExactTail, uncenter_unrotate

        if tail is not None:
            tail = ExactTail(*tail, rotate_k=rotate_q, rotate_v=rotate_out, k_mean=k_mean, v_mean=v_mean)
        out = attend(rotation.rotate(q) if rotate_q else q, k, v, tail=tail, **kw)
        return uncenter_unrotate(out, v_mean, rotate_out)

    return run


TAIL_CASE = (64, 37)  # an exact tail's capacity and fill in the transformed check


def _with_transforms(fn):
    """fn called as attention on a rotated and centered cache with an exact tail of decode tokens
    (what Folio's int4 layers pass while decoding)."""

    def run(q, k, v, **kw):
        import mlx.core as mx

        B, KVH, D = k[0].shape[0], k[0].shape[1], q.shape[-1]
        key = mx.random.key(B * 1000 + KVH * 10 + D)
        k_mean, v_mean, tk, tv = (mx.random.normal(s, key=mx.random.split(key, 4)[i]) for i, s in enumerate(
            [(B, KVH, 1, D)] * 2 + [(B, KVH, TAIL_CASE[0], D)] * 2))
        tail = (tk.astype(q.dtype), tv.astype(q.dtype), TAIL_CASE[1])
        # As a sliding-window ring with a tail: a few slots out of sight, a run wrapping past the
        # last slot to the first three.
        skip = None if kw.get("window") else (k[0].shape[2] - 2, 5)
        return fn(q, k, v, rotate_q=True, v_mean=v_mean, rotate_out=True, tail=tail, k_mean=k_mean, skip=skip, **kw)

    return run


def _relative_error(got, want) -> float:
    import mlx.core as mx

    got, want = got.astype(mx.float32), want.astype(mx.float32)
    if got.shape != want.shape:
        raise CheckFailed(f"output shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    if not mx.all(mx.isfinite(got)).item():
        raise CheckFailed("output holds NaN or infinity")
    return (mx.max(mx.abs(got - want)) / mx.maximum(mx.max(mx.abs(want)), 1e-6)).item()


def _compare(fn, oracle, dtype, tolerance, what) -> float:
    import mlx.core as mx

    worst = 0.0
    for case in ATTENTION_CASES:
        q, k, v, kw = _random_case(case, dtype)
        err = _relative_error(fn(q, k, v, **kw), oracle(q, k, v, **kw))
        if err > tolerance:
            B, H, KVH, D, T, *_ = case
            raise CheckFailed(
                f"{what}: relative error {err:.2e} > {tolerance:.0e} at heads {H}/{KVH}, "
                f"head_dim {D}, length {T}, bits {kw['k_bits']}/{kw['v_bits']}, window {kw['window']}"
            )
        worst = max(worst, err)
    mx.clear_cache()
    return worst


def check_attention() -> str:
    import mlx.core as mx

    kernels = _optional("app.engine.kernels")
    attention = _optional("app.engine.attention")
    reference = getattr(attention, "reference_decode_attention", None)
    oracle = reference or dequantized_attention
    oracle_name = "the reference" if reference else "dequantized attention"
    mx.random.seed(int(time.time()))  # fresh inputs each run
    kernel = kernels.available() if kernels else None
    n = len(ATTENTION_CASES)
    if kernel:
        err = _compare(kernels.decode_attention, oracle, mx.float16, KERNEL_TOLERANCE, f"{kernel} kernel vs {oracle_name}")
        what = f"{kernel} kernel vs {oracle_name} (rotated, centered cache, exact tail, ring slots skipped)"
        err = max(err, _compare(_with_transforms(kernels.decode_attention), _with_transforms(undo_transforms(oracle)),
                                mx.float16, KERNEL_TOLERANCE, what))
        return f"{kernel} kernel matches {oracle_name} on {2 * n} random cases (max rel. error {err:.1e})"
    note = "no GPU kernel on this backend"
    if reference is None:
        return f"{note}; no compressed-cache attention in this build"
    err = _compare(reference, dequantized_attention, mx.float32, REFERENCE_TOLERANCE, "reference vs dequantized attention")
    return f"{note}; reference matches dequantized attention on {n} random cases (max rel. error {err:.1e})"


# (KV mode, head_dim, window): a prefill fed in chunks of PREFILL_CHUNKS tokens
PREFILL_CASES = [("int4", 64, None), ("auto", 128, 200), ("int4", 256, None)]
PREFILL_CHUNKS = (300, 77)


def model_space_prefill_cases(mode, head_dim, *, gqa=4, chunks=PREFILL_CHUNKS, window=None, dtype=None):
    """Folio's cache in KV mode `mode` fed chunk by chunk, yielding each chunk's (length, the GPU
    path's output, the reference path's output). The GPU path brings the past back to the model's
    space (the span kernel with the transforms, then SDPA on the model's own queries); the reference
    rotates q, runs the blocked attention and transforms the output. Raises CheckFailed where the
    span kernel does not take a chunk. tests/kernel_cases.py runs the same cases on a GPU and on the
    emulated kernels."""
    import mlx.core as mx

    from app.engine import attention, kvcache, policy
    from app.engine.loader import ModelShape

    dtype = dtype or mx.float16
    B, n_kv, D = 1, 2, head_dim
    shape = ModelShape(n_layers=1, n_kv_heads=n_kv, head_dim=D, windows=[window], attention_scale=None,
                       max_context=sum(chunks))
    spec = policy.choose(shape, mode).layers[0]
    cache = kvcache.QuantizedCache(spec, window)
    for L in chunks:
        keys, values = (mx.random.normal((B, n_kv, L, D)).astype(dtype) for _ in range(2))
        q = mx.random.normal((B, n_kv * gqa, L, D)).astype(dtype)
        view, _ = cache.update_and_fetch(keys, values)
        out = attention._prefill_model_space(q, view, scale=D**-0.5, length=view.length, k_bits=spec.k.bits,
                                             v_bits=spec.v.bits, k_group=spec.k.group, v_group=spec.v.group,
                                             window=view.window)
        if out is None:
            raise CheckFailed(f"the prefill span kernel did not take a chunk of {L} (KV mode {mode}, head_dim {D})")
        attention.force_reference(True)
        try:
            ref = attention.attend(q, view, D**-0.5)
        finally:
            attention.force_reference(None)
        yield L, out, ref


def check_prefill() -> str:
    import mlx.core as mx

    kernels = _optional("app.engine.kernels")
    kernel = kernels.available() if kernels else None
    if not kernel:
        return "no GPU kernel on this backend: prefill runs the blocked reference"
    mx.random.seed(int(time.time()))
    worst, n = 0.0, 0
    for mode, D, window in PREFILL_CASES:
        for L, out, ref in model_space_prefill_cases(mode, D, window=window):
            err = _relative_error(out, ref)
            if err > KERNEL_TOLERANCE:
                raise CheckFailed(f"{kernel} prefill (span kernel + SDPA) vs the reference path: relative error "
                                  f"{err:.2e} > {KERNEL_TOLERANCE:.0e} at KV mode {mode}, head_dim {D}, chunk of {L}, "
                                  f"window {window}")
            worst, n = max(worst, err), n + 1
    mx.clear_cache()
    return f"{kernel} prefill (span kernel in the model's space + SDPA) matches the reference path on {n} chunks " \
           f"(max rel. error {worst:.1e})"


# -- forward pass ------------------------------------------------------------
def check_forward() -> str:
    import mlx.core as mx
    from mlx_lm.models import llama
    from mlx_lm.models.cache import make_prompt_cache

    args = llama.ModelArgs(
        model_type="llama", hidden_size=128, num_hidden_layers=2, intermediate_size=256,
        num_attention_heads=4, num_key_value_heads=2, head_dim=64, rms_norm_eps=1e-5, vocab_size=97,
    )
    mx.random.seed(0)
    model = llama.Model(args)
    tokens = mx.array([[5, 17, 42, 8, 64, 3, 90, 11, 27]])
    full = model(tokens)  # (1, 9, vocab): every position in one pass
    cache = make_prompt_cache(model)
    model(tokens[:, :-1], cache=cache)
    step = model(tokens[:, -1:], cache=cache)  # (1, 1, vocab): the last position from the cache
    mx.eval(full, step)
    if not mx.all(mx.isfinite(full)).item():
        raise CheckFailed("tiny random llama: logits hold NaN or infinity")
    err = mx.max(mx.abs(step[:, -1] - full[:, -1])).item()
    if err > FORWARD_TOLERANCE:
        raise CheckFailed(f"tiny random llama: cached decode differs from the full pass by {err:.2e}")
    return f"tiny random llama: prefill + cached decode step agree (max diff {err:.1e})"


# -- files -------------------------------------------------------------------
def check_data_dir() -> str:
    from app import paths

    where = []
    for name, get in (("data", paths.data_dir), ("cache", paths.cache_dir)):
        try:
            folder = get()
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".selftest-")
            with os.fdopen(fd, "w") as f:
                f.write("folio")
            ok = Path(tmp).read_text() == "folio"
            os.unlink(tmp)
        except OSError as e:
            raise CheckFailed(f"the {name} dir is not writable: {_one_line(e)}") from None
        if not ok:
            raise CheckFailed(f"the {name} dir {folder} did not read back what was written")
        where.append(str(folder))
    return "writable: " + ", ".join(where)


def check_hf_cache() -> str:
    from huggingface_hub import constants, scan_cache_dir

    from app.units import fmt

    cache = Path(constants.HF_HUB_CACHE)
    if not cache.exists():
        parent = next((p for p in cache.parents if p.exists()), None)
        if parent is None or not os.access(parent, os.W_OK):
            raise CheckFailed(f"{cache} does not exist and {parent} is not writable: downloads would fail")
        return f"{cache} not created yet (no models downloaded); downloads can create it"
    if not (cache.is_dir() and os.access(cache, os.R_OK | os.X_OK)):
        raise CheckFailed(f"{cache} is not a readable folder")
    try:
        info = scan_cache_dir(cache)
    except (OSError, ValueError) as e:
        raise CheckFailed(f"{cache} cannot be read: {_one_line(e)}") from None
    models = [r for r in info.repos if r.repo_type == "model"]
    text = f"{cache} readable: {len(models)} model{'s' if len(models) != 1 else ''}, {fmt(info.size_on_disk)}"
    if info.warnings:
        text += f" ({len(info.warnings)} unreadable entr{'ies' if len(info.warnings) != 1 else 'y'} skipped)"
    return text


def check_qt() -> str:
    import PySide6
    from PySide6.QtCore import QLibraryInfo

    plugins = Path(QLibraryInfo.path(QLibraryInfo.LibraryPath.PluginsPath)) / "platforms"
    wanted = QT_PLATFORM_PLUGINS.get(sys.platform, ["libqxcb.so", "libqoffscreen.so"])
    found = [p for p in wanted if (plugins / p).exists()]
    if not found:
        raise CheckFailed(f"no Qt platform plugin ({' or '.join(wanted)}) in {plugins}: the window cannot open")
    return f"PySide6 {PySide6.__version__}, platform plugin {found[0]}"


CHECKS = [
    ("backend", check_backend),
    ("attention", check_attention),
    ("prefill", check_prefill),
    ("forward pass", check_forward),
    ("data dir", check_data_dir),
    ("HF cache", check_hf_cache),
    ("Qt", check_qt),
]


def run_checks(checks=None) -> list[Check]:
    results = []
    for name, fn in checks or CHECKS:
        try:
            results.append(Check(name, True, fn()))
        except CheckFailed as e:
            results.append(Check(name, False, str(e)))
        except Exception as e:  # a crash inside a check is itself the finding
            logger.error("self-test %s crashed:\n%s", name, traceback.format_exc())
            results.append(Check(name, False, _one_line(e)))
    return results


def versions() -> str:
    # Module attributes, not package metadata: a py2app bundle may not carry the dist-info.
    parts = [f"Python {platform.python_version()}", f"{platform.system()} {platform.release()} {platform.machine()}"]
    for label, module in (("MLX", "mlx.core"), ("mlx-lm", "mlx_lm"), ("PySide6", "PySide6")):
        try:
            parts.append(f"{label} {importlib.import_module(module).__version__}")
        except Exception as e:  # a broken install is reported here, not raised
            parts.append(f"{label} unavailable ({_one_line(e)})")
    return ", ".join(parts)


def run(out=None) -> int:
    out = out or sys.stdout
    print(f"Folio {__version__} self-test", file=out)
    print(f"  {versions()}", file=out)
    results = run_checks()
    width = max(len(c.name) for c in results)
    for c in results:
        print(f"  {'ok  ' if c.ok else 'FAIL'}  {c.name:<{width}}  {c.detail}", file=out)
        logger.info("self-test %s: %s: %s", c.name, "ok" if c.ok else "FAIL", c.detail)
    failed = [c.name for c in results if not c.ok]
    if failed:
        print(f"{len(failed)} of {len(results)} checks failed: {', '.join(failed)}.", file=out)
        return 1
    print(f"All {len(results)} checks passed.", file=out)
    return 0
