"""`folio bench attention`: one decode step of one attention layer over an int4 cache, four ways.

fp16 `mx.fast.scaled_dot_product_attention`, dequantize + SDPA, mlx-lm's quantized path
(`base.quantized_scaled_dot_product_attention`) and Folio's path: the dispatching entry point
`attention.decode_attention`, which is the fused kernel where one exists and the reference
otherwise (`--backend reference` forces the reference). Each timing evaluates several calls back
to back; the median of the repeats is reported. `floor_ms` (the int4 bytes over the measured copy
bandwidth) is filled where the backend's bandwidth is measured (the GPU benchmark); None here.
"""

from app.bench.common import emit, machine, median, table

BITS, GROUP = 4, 64


def add_arguments(p):
    p.add_argument("--backend", default="auto", choices=("auto", "reference", "cuda", "metal"),
                   help="Folio's path: auto = the kernel where one exists, else the reference")
    p.add_argument("--contexts", default="4096,32768", help="comma-separated context lengths")
    p.add_argument("--heads", type=int, default=64)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--calls", type=int, default=2, help="calls evaluated back to back per timing")
    p.add_argument("--prefill-memory", metavar="MODEL",
                   help="instead: peak memory of a chunked prefill of MODEL per KV mode, against the fp16 cache size")
    p.add_argument("--tokens", type=int, default=16384, help="prefill length for --prefill-memory")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"),
                   help="cast the weights for --prefill-memory (bfloat16 matmuls are slow on CPU)")
    p.add_argument("--json", action="store_true")


def time_ms(fn, repeats: int, calls: int) -> float:
    import time

    import mlx.core as mx

    mx.eval(fn())  # warm-up: build, allocate
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        mx.eval([fn() for _ in range(calls)])
        samples.append((time.perf_counter() - t0) * 1e3 / calls)
    return median(samples)


def measure(context: int, heads: int, kv_heads: int, head_dim: int, repeats: int, calls: int) -> dict:
    import mlx.core as mx
    from mlx_lm.models import base

    from app.engine import attention, layout
    from app.engine.layout import Quant

    q4 = Quant(BITS, GROUP)
    mx.random.seed(context)
    q = mx.random.normal((1, heads, 1, head_dim)).astype(mx.float16)
    k = mx.random.normal((1, kv_heads, context, head_dim)).astype(mx.float16)
    v = mx.random.normal((1, kv_heads, context, head_dim)).astype(mx.float16)
    kq, vq = layout.quantize(k, q4), layout.quantize(v, q4)
    mx.eval(q, k, v, kq, vq)
    scale = head_dim**-0.5
    original = getattr(base.quantized_scaled_dot_product_attention, "_original",
                       base.quantized_scaled_dot_product_attention)

    def dequant_sdpa():
        kd = mx.dequantize(*kq, group_size=GROUP, bits=BITS)
        vd = mx.dequantize(*vq, group_size=GROUP, bits=BITS)
        return mx.fast.scaled_dot_product_attention(q, kd, vd, scale=scale)

    row = {
        "context": context,
        "fp16_sdpa_ms": time_ms(lambda: mx.fast.scaled_dot_product_attention(q, k, v, scale=scale), repeats, calls),
        "dequant_sdpa_ms": time_ms(dequant_sdpa, repeats, calls),
        # mlx-lm scales its queries in place: each call gets a copy.
        "mlx_lm_quantized_ms": time_ms(lambda: original(q * 1, kq, vq, scale=scale, mask=None, group_size=GROUP,
                                                        bits=BITS), repeats, calls),
        "folio_ms": time_ms(lambda: attention.decode_attention(q, kq, vq, scale=scale, length=context, k_bits=BITS,
                                                               v_bits=BITS, k_group=GROUP, v_group=GROUP),
                            repeats, calls),
        "floor_ms": None,
    }
    row["speedup_vs_mlx_lm"] = row["mlx_lm_quantized_ms"] / row["folio_ms"]
    row["speedup_vs_fp16"] = row["fp16_sdpa_ms"] / row["folio_ms"]
    return row


def prefill_memory(model: str, tokens: int, chunk: int = 512, dtype: str | None = None) -> dict:
    """Peak MLX memory above the loaded weights while prefilling `tokens` in chunks, per KV mode."""
    import mlx.core as mx
    from mlx_lm.models.cache import QuantizedKVCache

    from app.engine import kvcache, loader

    loaded = loader.load(model)
    if dtype:
        loaded.model.set_dtype(getattr(mx, dtype))
        loaded.shape.dtype = dtype
    mx.random.seed(0)
    prompt = mx.random.randint(10, min(loaded.config.get("vocab_size", 1000), 5000), (tokens,))
    # Warm-up, so first-call allocations are not charged to the first mode.
    mx.eval(loaded.model(prompt[None, :chunk], cache=kvcache.make_cache(loaded, "int4")))
    rows = []
    for mode in ("fp16", "int4", "mlx-lm-4bit"):
        if mode == "mlx-lm-4bit":
            caches = [QuantizedKVCache(group_size=GROUP, bits=BITS) for _ in loaded.shape.windows]
        else:
            caches = kvcache.make_cache(loaded, mode)
        mx.clear_cache()
        base_bytes = mx.get_active_memory()
        mx.reset_peak_memory()
        for i in range(0, tokens, chunk):  # as the session prefills: chunk by chunk, cache evaluated each time
            loaded.model(prompt[None, i : i + chunk], cache=caches)
            mx.eval([c.state for c in caches])
            mx.clear_cache()
        rows.append({"mode": mode, "peak_above_weights_bytes": mx.get_peak_memory() - base_bytes,
                     "kv_bytes": kvcache.cache_bytes(caches)})
        del caches
    fp16_cache = kvcache.fp16_bytes_for(loaded.shape, tokens)
    for r in rows:
        r["peak_over_fp16_cache"] = r["peak_above_weights_bytes"] / fp16_cache
    return {"model": loaded.model_id, "tokens": tokens, "chunk": chunk, "dtype": loaded.shape.dtype,
            "fp16_cache_bytes": fp16_cache, "rows": rows}


def run_prefill_memory(args) -> int:
    from app.engine.errors import FolioError

    try:
        result = prefill_memory(args.prefill_memory, args.tokens, dtype=args.dtype)
    except FolioError as e:
        print(e)
        return 1
    result["machine"] = machine()
    mb = 1e6
    text = table(["mode", "peak above weights MB", "KV cache MB", "peak / fp16 cache"],
                 [[r["mode"], r["peak_above_weights_bytes"] / mb, r["kv_bytes"] / mb, r["peak_over_fp16_cache"]]
                  for r in result["rows"]])
    emit(args, result, f"{result['model']} ({result['dtype']}), {args.tokens:,}-token prefill in chunks of "
                       f"{result['chunk']}; fp16 cache of that context: {result['fp16_cache_bytes'] / mb:.1f} MB\n{text}")
    return 0


def run(args) -> int:
    from app.engine import attention

    if args.prefill_memory:
        return run_prefill_memory(args)

    try:
        contexts = [int(c) for c in args.contexts.split(",") if c.strip()]
    except ValueError:
        print(f"--contexts must be comma-separated integers, not {args.contexts!r}")
        return 2
    if not contexts or min(contexts) < 1 or args.heads % args.kv_heads or args.head_dim % GROUP:
        print("Need positive contexts, heads divisible by kv-heads, and head-dim divisible by 64.")
        return 2
    available = attention.kernel_backend()
    if args.backend in ("cuda", "metal") and available != args.backend:
        print(f"No {args.backend} kernel on this machine (available: {available or 'none'}).")
        return 2
    attention.force_reference(True if args.backend == "reference" else None)
    try:
        backend = attention.path()
        if backend in ("cuda", "metal"):  # GPU timing and the byte floor: app/bench/attention_device.py
            from app.bench import attention_device

            rows, _bandwidth = attention_device.rows_for(contexts, args.heads, args.kv_heads, args.head_dim)
        else:
            rows = [measure(c, args.heads, args.kv_heads, args.head_dim, args.repeats, args.calls) for c in contexts]
    finally:
        attention.force_reference(None)
    result = {"backend": backend, "heads": args.heads, "kv_heads": args.kv_heads, "head_dim": args.head_dim,
              "bits": BITS, "group": GROUP, "rows": rows, "machine": machine()}
    text = table(
        ["context", "fp16 SDPA ms", "dequant+SDPA ms", "mlx-lm quantized ms", f"folio ({backend}) ms",
         "vs mlx-lm", "vs fp16"],
        [[r["context"], r["fp16_sdpa_ms"], r["dequant_sdpa_ms"], r["mlx_lm_quantized_ms"], r["folio_ms"],
          f"{r['speedup_vs_mlx_lm']:.1f}x", f"{r['speedup_vs_fp16']:.2f}x"] for r in rows],
    )
    m = result["machine"]
    emit(args, result, f"one decode step, {args.heads} heads / {args.kv_heads} KV heads, head_dim {args.head_dim}, "
                       f"int4 group {GROUP}\n{text}\n(machine: {m['device']}, {m['backend']}, BLAS {m['blas']})")
    return 0
