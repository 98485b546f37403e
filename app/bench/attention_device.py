"""One decode step of one attention layer on a GPU: Folio's fused kernel against MLX's paths and the byte floor.

`folio bench attention` hands its rows to `rows_for` when the kernel's backend is a GPU.

Timing follows ../shared/cuda/README.md: CALLS calls evaluated back to back per timing, median of
REPEATS timings, after warm-up; that timing builds the calls' graphs before any runs, so each call's
host time (Python, MLX's graph building and launch encoding) adds to its GPU time. A second
figure, "at the GPU's pace", builds PACE_CALLS calls untimed and times their evaluation only: MLX
encodes launches while earlier ones run, so it reads the GPU's time per call where the host keeps
up (as in decode, where one step's graph is built while the previous step runs). The floor is the
int4 cache's bytes over the copy bandwidth measured in the same run (bytes read plus written by a
large elementwise op).
"""

import time

from app.bench.common import emit, machine, median, table

CALLS, REPEATS, WARMUP = 10, 20, 3
PACE_CALLS, PACE_REPEATS = 40, 7
GROUP, BITS = 64, 4


def add_arguments(p):
    p.add_argument("--backend", default="auto", choices=("auto", "cuda", "metal"))
    p.add_argument("--contexts", default="4096,32768,131072")
    p.add_argument("--heads", type=int, default=64)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--json", action="store_true")


def time_ms(fn, calls: int = CALLS, repeats: int = REPEATS) -> float:
    """ms per call: `calls` calls evaluated together, median of `repeats` such timings, after warm-up."""
    import mlx.core as mx

    for _ in range(WARMUP):
        mx.eval(fn())
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        mx.eval([fn() for _ in range(calls)])
        samples.append((time.perf_counter() - t) * 1e3 / calls)
    return median(samples)


def pace_ms(fn, calls: int = PACE_CALLS, repeats: int = PACE_REPEATS) -> float:
    """ms per call at the GPU's pace: `calls` calls built untimed, their evaluation timed, median of
    `repeats`, after warm-up."""
    import mlx.core as mx

    for _ in range(WARMUP):
        mx.eval(fn())
    samples = []
    for _ in range(repeats):
        built = [fn() for _ in range(calls)]
        t = time.perf_counter()
        mx.eval(built)
        samples.append((time.perf_counter() - t) * 1e3 / calls)
        del built
    return median(samples)


def copy_bandwidth() -> float:
    """Bytes per second read plus written by a large elementwise op."""
    import mlx.core as mx

    x = mx.random.normal((1 << 28,)).astype(mx.float16)
    mx.eval(x)
    ms = time_ms(lambda: x * 2)
    return 2 * x.nbytes / (ms / 1e3)


def cache_bytes(n_kv, tokens, head_dim, bits=BITS, group=GROUP) -> int:
    per_row = head_dim * bits // 8 + 2 * 2 * head_dim // group
    return 2 * n_kv * tokens * per_row


def measure(context, heads, kv_heads, head_dim, bandwidth) -> dict:
    import mlx.core as mx
    from mlx_lm.models.base import quantized_scaled_dot_product_attention

    from app.engine import attention

    scale = head_dim**-0.5
    q = mx.random.normal((1, heads, 1, head_dim)).astype(mx.float16)
    k = mx.random.normal((1, kv_heads, context, head_dim)).astype(mx.float16)
    v = mx.random.normal((1, kv_heads, context, head_dim)).astype(mx.float16)
    kq = mx.quantize(k, GROUP, BITS)
    vq = mx.quantize(v, GROUP, BITS)
    mx.eval(q, k, v, kq, vq)

    def sdpa():
        return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale)

    def dequant_sdpa():
        kd = mx.dequantize(*kq, group_size=GROUP, bits=BITS)
        vd = mx.dequantize(*vq, group_size=GROUP, bits=BITS)
        return mx.fast.scaled_dot_product_attention(q, kd, vd, scale=scale)

    # Folio's seam may wrap mlx-lm's function; time mlx-lm's own. It scales its queries in place.
    original = getattr(quantized_scaled_dot_product_attention, "_original", quantized_scaled_dot_product_attention)

    def mlx_lm_path():
        return original(q * 1, kq, vq, scale, None, group_size=GROUP, bits=BITS)

    def folio():
        # Folio's dispatching entry point: the fused kernel here (its one log line names the path).
        return attention.decode_attention(q, kq, vq, scale=scale, length=context, k_bits=BITS, v_bits=BITS,
                                          k_group=GROUP, v_group=GROUP)

    floor_bytes = cache_bytes(kv_heads, context, head_dim) + 2 * 2 * heads * head_dim
    row = {"context": context, "fp16_sdpa_ms": time_ms(sdpa), "dequant_sdpa_ms": time_ms(dequant_sdpa),
           "mlx_lm_quantized_ms": time_ms(mlx_lm_path), "folio_ms": time_ms(folio),
           "floor_ms": floor_bytes / bandwidth * 1e3}
    row["speedup_vs_mlx_lm"] = row["mlx_lm_quantized_ms"] / row["folio_ms"]
    row["speedup_vs_fp16"] = row["fp16_sdpa_ms"] / row["folio_ms"]
    row["over_floor"] = row["folio_ms"] / row["floor_ms"]
    # At the GPU's pace (dequantize + SDPA left out: 40 calls' dequantized copies at once would
    # need 21 GB at 128K, and no target names it).
    row["pace"] = {"fp16_sdpa_ms": pace_ms(sdpa), "mlx_lm_quantized_ms": pace_ms(mlx_lm_path), "folio_ms": pace_ms(folio)}
    return row


def rows_for(contexts, heads, kv_heads, head_dim) -> tuple[list[dict], float]:
    bandwidth = copy_bandwidth()
    return [measure(c, heads, kv_heads, head_dim, bandwidth) for c in contexts], bandwidth


def run(args) -> int:
    from app.engine import kernels

    have = kernels.available()
    if have is None or args.backend not in ("auto", have):
        print(f"folio bench attention: the {args.backend} backend is not available here (found {have or 'none'}).")
        return 2
    contexts = [int(c) for c in args.contexts.split(",")]
    rows, bw = rows_for(contexts, args.heads, args.kv_heads, args.head_dim)
    result = {"backend": have, "machine": machine(), "copy_bandwidth_gbs": bw / 1e9, "rows": rows}
    headers = ["context", "fp16 SDPA ms", "dequant+SDPA ms", "mlx-lm quant ms", "folio ms", "floor ms",
               "x SDPA", "x mlx-lm", "/ floor"]
    text_rows = [[r["context"], r["fp16_sdpa_ms"], r["dequant_sdpa_ms"], r["mlx_lm_quantized_ms"], r["folio_ms"],
                  r["floor_ms"], r["fp16_sdpa_ms"] / r["folio_ms"], r["mlx_lm_quantized_ms"] / r["folio_ms"],
                  r["folio_ms"] / r["floor_ms"]] for r in rows]
    pace_headers = ["context", "fp16 SDPA ms", "mlx-lm quant ms", "folio ms", "floor ms", "x SDPA", "x mlx-lm",
                    "/ floor"]
    pace_rows = [[r["context"], p["fp16_sdpa_ms"], p["mlx_lm_quantized_ms"], p["folio_ms"], r["floor_ms"],
                  p["fp16_sdpa_ms"] / p["folio_ms"], p["mlx_lm_quantized_ms"] / p["folio_ms"],
                  p["folio_ms"] / r["floor_ms"]] for r in rows for p in [r["pace"]]]
    emit(args, result, f"copy bandwidth {bw / 1e12:.2f} TB/s ({have})\n" + table(headers, text_rows)
         + f"\n\nAt the GPU's pace ({PACE_CALLS} calls built, then their evaluation timed):\n"
         + table(pace_headers, pace_rows))
    return 0


if __name__ == "__main__":
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
