"""End to end on a GPU: prefill and decode tok/s of a Llama-3.1-8B-shaped model with random 4-bit weights.

Folio's int4 cache (H1's QuantizedCache, decode through the fused kernel) against mlx-lm's fp16
cache (which is also Folio's fp16 mode: Folio decodes with mlx-lm's generate_step). Both use the
same loop: the app's chunked prefill (app.engine.prefill.feed), then generate_step for the decode.
A prefill that runs past
--budget-s is stopped and reported as such rather than waited for. Decode-only rows
(--fill-contexts) also give a step's graph-building and evaluation time, one step at a time.

    python3 bench/e2e_device.py --contexts 32768 --decode 64 --json out.json
"""

import argparse
import json
import time
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.generate import generate_step
from mlx_lm.models import llama
from mlx_lm.models.cache import make_prompt_cache

from app.engine import kvcache, prefill

DEFAULT_TAIL = kvcache.TAIL
LLAMA_31_8B = {
    "model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "intermediate_size": 14336,
    "num_attention_heads": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-5, "vocab_size": 128256,
    "rope_theta": 500000.0, "max_position_embeddings": 131072, "tie_word_embeddings": False,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
}


def build():
    from app.engine.loader import LoadedModel, probe_shape

    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs.from_dict(LLAMA_31_8B))
    model.set_dtype(mx.float16)
    nn.quantize(model, group_size=64, bits=4)
    mx.eval(model.parameters())
    shape = probe_shape(model, LLAMA_31_8B)
    return LoadedModel(model, None, Path("."), "llama-3.1-8b-shaped-random-4bit", LLAMA_31_8B, shape, 0, 0.0)


def run_one(loaded, caches, context, decode, chunk, budget_s) -> dict:
    """Prefill `context` random tokens through the app's loop (app.engine.prefill.feed, which
    evaluates each chunk before building the next, as mlx-lm's generate_step does), then decode."""
    model = loaded.model
    tokens = mx.random.randint(0, LLAMA_31_8B["vocab_size"], (context,))
    mx.reset_peak_memory()
    t0 = time.perf_counter()
    done = prefill.feed(model, caches, tokens[:-1].tolist(), chunk, lambda: time.perf_counter() - t0 > budget_s)
    if done < context - 1:
        return {"prefill_tps": done / (time.perf_counter() - t0), "prefilled": done, "stopped": True}
    prefill_s = time.perf_counter() - t0
    # Peak memory by phase: the prefill's (its chunks' transient copies) apart from the decode's.
    prefill_peak = mx.get_peak_memory()
    mx.reset_peak_memory()
    t_first, n = None, 0
    for _tok, _ in generate_step(tokens[-1:], model, prompt_cache=caches, max_tokens=decode + 1):
        n += 1
        if t_first is None:
            t_first = time.perf_counter()
    decode_s = time.perf_counter() - t_first
    kv = sum(c.nbytes for c in caches if hasattr(c, "nbytes"))
    decode_peak = mx.get_peak_memory()
    return {"prefill_tps": (context - 1) / prefill_s, "decode_tps": (n - 1) / decode_s, "kv_gb": kv / 1e9,
            "peak_gb": max(prefill_peak, decode_peak) / 1e9, "prefill_peak_gb": prefill_peak / 1e9,
            "decode_peak_gb": decode_peak / 1e9, "stopped": False}


def fill(caches, context):
    """Fill each cache with `context` random tokens directly, 8,192 at a time (no model, no prefill)."""
    B, H, D = 1, LLAMA_31_8B["num_key_value_heads"], LLAMA_31_8B["hidden_size"] // LLAMA_31_8B["num_attention_heads"]
    for c in caches:
        for i in range(0, context, 8192):
            n = min(8192, context - i)
            c.update_and_fetch(mx.random.normal((B, H, n, D)).astype(mx.float16),
                               mx.random.normal((B, H, n, D)).astype(mx.float16))
            mx.eval([x for x in (c.state if isinstance(c.state, (list, tuple)) else [c.state]) if x is not None])


def run_decode_only(loaded, caches, context, decode) -> dict:
    """Fill every layer's cache with `context` random tokens directly (no prefill), then decode;
    then a step's host time to build its graph and its evaluation time, one step at a time."""
    fill(caches, context)
    mx.reset_peak_memory()
    t_first, n = None, 0
    for _tok, _ in generate_step(mx.array([1]), loaded.model, prompt_cache=caches, max_tokens=decode + 1):
        n += 1
        if t_first is None:
            t_first = time.perf_counter()
    decode_s = time.perf_counter() - t_first
    kv = sum(c.nbytes for c in caches if hasattr(c, "nbytes"))
    return {"prefill_tps": float("nan"), "decode_tps": (n - 1) / decode_s, "kv_gb": kv / 1e9,
            "peak_gb": mx.get_peak_memory() / 1e9, "stopped": False, "filled_directly": True,
            **step_split(loaded.model, caches)}


def step_split(model, caches, steps: int = 16) -> dict:
    """Median ms of a decode step's graph building (host) and of its evaluation (host encoding and
    GPU, not overlapped with the next step's building as generate_step overlaps them): which of
    the two bounds a step."""
    build, run = [], []
    y = mx.array([[1]])
    for _ in range(steps):
        t0 = time.perf_counter()
        logits = model(y, cache=caches)
        t1 = time.perf_counter()
        mx.eval(logits)
        run.append(time.perf_counter() - t1)
        build.append(t1 - t0)
    return {"build_ms": sorted(build)[steps // 2] * 1e3, "eval_ms": sorted(run)[steps // 2] * 1e3}


def caches_for(loaded, mode: str, default_blocks: int):
    """mlx-lm's fp16 cache (mlx-lm-fp16, which is also Folio's fp16 mode), or Folio's int4 cache,
    with any of these suffixes: @N the kernel planned for N blocks; -notail every decode token
    quantized at once, no exact tail; -nospan the prefill's past dequantized and concatenated by
    MLX ops instead of the span kernel; -rotated the prefill's past left in the cache's space, q
    and the output rotated around SDPA (attention.PREFILL_MODEL_SPACE off)."""
    from app.engine import attention, kernels, prefill_span

    if mode == "mlx-lm-fp16":
        return make_prompt_cache(loaded.model)
    mode, _, blocks = mode.partition("@")
    kernels.set_plan(target_blocks=int(blocks) if blocks else default_blocks)
    kvcache.TAIL = 0 if "-notail" in mode else DEFAULT_TAIL
    prefill_span.ENABLED = "-nospan" not in mode
    attention.PREFILL_MODEL_SPACE = "-rotated" not in mode
    return kvcache.make_cache(loaded, "int4")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--contexts", default="32768")
    p.add_argument("--decode", type=int, default=64)
    p.add_argument("--chunk", type=int, default=4096)
    p.add_argument("--budget-s", type=float, default=150.0, help="stop a prefill that runs longer than this")
    p.add_argument("--modes", default="mlx-lm-fp16,folio-int4",
                   help="folio-int4@N runs the int4 cache with the kernel's TARGET_BLOCKS set to N; "
                        "folio-int4-notail without the exact tail")
    p.add_argument("--fill-contexts", default="", help="decode-only contexts: caches filled directly, no prefill")
    p.add_argument("--warmup", type=int, default=4096,
                   help="tokens prefilled and decoded per mode before any timing (0: none): MLX compiles each "
                        "kernel on first use, and a cold first row once made fp16 prefill look 10x slower")
    p.add_argument("--json")
    args = p.parse_args()

    from app.engine import attention, kernels

    default_blocks = kernels.TARGET_BLOCKS
    loaded = build()
    modes = args.modes.split(",")
    if args.warmup:
        for mode in modes:
            run_one(loaded, caches_for(loaded, mode, default_blocks), args.warmup, 4, args.chunk, args.budget_s)
            mx.clear_cache()
    runs = [(int(c), lambda caches, c: run_one(loaded, caches, c, args.decode, args.chunk, args.budget_s))
            for c in args.contexts.split(",") if c]
    runs += [(int(c), lambda caches, c: run_decode_only(loaded, caches, c, args.decode))
             for c in args.fill_contexts.split(",") if c]
    rows = []
    for context, run in runs:
        for mode in modes:
            caches = caches_for(loaded, mode, default_blocks)
            row = {"context": context, "mode": mode, **run(caches, context)}
            if mode != "mlx-lm-fp16":
                row["attention_path"] = attention.path()
            rows.append(row)
            print(json.dumps(row), flush=True)
            del caches
            mx.clear_cache()
    if args.json:
        Path(args.json).write_text(json.dumps({"model": loaded.model_id, "device": mx.device_info().get("device_name"),
                                               "rows": rows}, indent=2))
        print(json.dumps(rows))
    print("context  mode                   prefill tok/s  decode tok/s  KV GB  peak GB prefill / decode"
          "  step build / eval ms")
    nan = float("nan")
    for r in rows:
        split = f"  {r['build_ms']:.2f} / {r['eval_ms']:.2f}" if "build_ms" in r else ""
        peaks = f"  {r.get('prefill_peak_gb', nan):7.2f} / {r.get('decode_peak_gb', r.get('peak_gb', nan)):6.2f}"
        print(f"{r['context']:7d}  {r['mode']:21s}  {r['prefill_tps']:13.0f}  {r.get('decode_tps', nan):12.1f}"
              f"  {r.get('kv_gb', nan):5.2f}{peaks}{split}{'  (prefill stopped)' if r['stopped'] else ''}")


if __name__ == "__main__":
    main()
