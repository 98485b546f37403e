"""`folio bench quality`: what each KV mode does to a model's predictions, against the fp16 cache.

Teacher-forced over text in chunks (default 256 tokens), so every chunk after the first reads
its past from the compressed cache, exactly as a long prefill does. Weights in fp32, so the only
difference between runs is the cache. mlx-lm's own QuantizedKVCache (group 64) at 4 and 8 bits
runs in the same process as the baseline every Folio mode must beat.
"""

from pathlib import Path

from app.bench.common import emit, machine, table

MLX_LM_MODES = ("mlx-lm-4bit", "mlx-lm-8bit")


def add_arguments(p):
    p.add_argument("--model", required=True, help="model folder or downloaded repo id")
    p.add_argument("--text", required=True, nargs="+", help="text files or folders (their *.py files, sorted)")
    p.add_argument("--context", type=int, default=1024, help="tokens per text window")
    p.add_argument("--windows", type=int, default=2, help="how many consecutive text windows to average")
    p.add_argument("--chunk", type=int, default=256, help="tokens fed per forward pass")
    p.add_argument("--kv", nargs="+", default=["int8", "int4", "auto", *MLX_LM_MODES],
                   help="modes: fp16 int8 int4 auto, a spec like k8g128v4g64r, mlx-lm-4bit, mlx-lm-8bit")
    p.add_argument("--compressed-chunk", action="store_true",
                   help="Folio modes read each chunk's own K/V compressed too, as mlx-lm's cache does")
    p.add_argument("--tail", type=int, default=None,
                   help="Folio modes keep this many newest decode tokens exact (default: the cache's own, "
                        "64; 0 quantizes every token at once); it matters with --chunk 1, where every step decodes")
    p.add_argument("--json", action="store_true")


def read_text(paths: list[str]) -> str:
    from app.engine.errors import FolioError

    files = []
    for name in paths:
        path = Path(name).expanduser()
        if path.is_dir():
            files += sorted(path.rglob("*.py"))
        elif path.is_file():
            files.append(path)
        else:
            raise FolioError(f"No text file or folder at {path}.")
    if not files:
        raise FolioError("The text folders hold no .py files.")
    return "\n".join(f.read_text(encoding="utf-8", errors="replace") for f in files)


def caches_for(loaded, mode: str) -> list:
    from mlx_lm.models.cache import QuantizedKVCache

    from app.engine import kvcache

    if mode in MLX_LM_MODES:
        bits = 4 if mode == "mlx-lm-4bit" else 8
        # mlx-lm's quantized cache has no ring; window layers still get their mask from make_mask.
        return [QuantizedKVCache(group_size=64, bits=bits) for _ in loaded.shape.windows]
    return kvcache.make_cache(loaded, mode)


def bits_per_element(loaded, caches, mode: str) -> float:
    from app.engine import kvcache

    if mode in MLX_LM_MODES:
        c = caches[0]
        scale_bits = c.keys[1].dtype.size * 8  # the model's dtype: fp32 scales here
        return c.bits + 2 * scale_bits / c.group_size
    return kvcache.describe(caches, mode)["kv_bits_per_element"]


def log_probs(loaded, tokens, mode: str, chunk: int):
    """Per-position log-softmax over the vocabulary, teacher-forced through `mode`'s cache."""
    import mlx.core as mx

    caches = caches_for(loaded, mode)
    out = []
    for i in range(0, len(tokens), chunk):
        logits = loaded.model(mx.array(tokens[i : i + chunk])[None], cache=caches)[0].astype(mx.float32)
        lp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        mx.eval(lp)
        out.append(lp)
    return mx.concatenate(out, axis=0), bits_per_element(loaded, caches, mode)


def compare(ref, lp, targets) -> dict:
    """top-1 agreement and mean KL(ref || lp) over all positions; NLL sums for perplexity."""
    import mlx.core as mx

    n = targets.shape[0]
    ref, lp = ref[:n], lp[:n]
    top1 = (ref.argmax(-1) == lp.argmax(-1)).astype(mx.float32).mean()
    kl = (mx.exp(ref) * (ref - lp)).sum(-1).mean()
    nll_ref = -mx.take_along_axis(ref, targets[:, None], axis=-1).sum()
    nll = -mx.take_along_axis(lp, targets[:, None], axis=-1).sum()
    mx.eval(top1, kl, nll_ref, nll)
    return {"top1": top1.item(), "kl": kl.item(), "nll_ref": nll_ref.item(), "nll": nll.item(), "n": n}


def run(args) -> int:
    import mlx.core as mx

    from app.engine import kvcache, loader, policy
    from app.engine.errors import FolioError

    for mode in args.kv:
        if mode not in MLX_LM_MODES and mode not in policy.MODES and not policy._SPEC.match(mode):
            print(f"folio bench quality: unknown KV mode {mode!r}")
            return 2
    try:
        loaded = loader.load(args.model)
        tokens = loaded.tokenizer.encode(read_text(args.text), add_special_tokens=False)
    except FolioError as e:
        print(e)
        return 1
    need = args.context * args.windows + 1
    if len(tokens) < need:
        print(f"The text has {len(tokens):,} tokens; {args.windows} windows of {args.context:,} need {need:,}.")
        return 1
    loaded.model.set_dtype(mx.float32)
    saved = kvcache.EXACT_CHUNK, kvcache.TAIL
    kvcache.EXACT_CHUNK = not args.compressed_chunk
    if args.tail is not None:
        kvcache.TAIL = args.tail
    try:
        return _measure(args, loaded, tokens)
    finally:
        kvcache.EXACT_CHUNK, kvcache.TAIL = saved


def _measure(args, loaded, tokens) -> int:
    """Every mode over every window against the fp16 cache; prints the table or the JSON."""
    import math

    import mlx.core as mx

    from app.engine import kvcache
    per_mode = {m: [] for m in args.kv}
    bits = {}
    for w in range(args.windows):
        window = tokens[w * args.context : (w + 1) * args.context + 1]
        inputs, targets = window[:-1], mx.array(window[1:])
        ref, _ = log_probs(loaded, inputs, "fp16", args.chunk)
        for mode in args.kv:
            lp, bits[mode] = log_probs(loaded, inputs, mode, args.chunk)
            per_mode[mode].append(compare(ref, lp, targets))
            del lp
    results = []
    for mode, runs in per_mode.items():
        n = sum(r["n"] for r in runs)
        results.append({
            "mode": mode,
            "policy": _policy_name(loaded, mode),
            "top1_agreement": sum(r["top1"] * r["n"] for r in runs) / n,
            "mean_kl": sum(r["kl"] * r["n"] for r in runs) / n,
            "ppl_fp16": math.exp(sum(r["nll_ref"] for r in runs) / n),
            "ppl": math.exp(sum(r["nll"] for r in runs) / n),
            "bits_per_element": bits[mode],
            "per_window": [{"top1_agreement": r["top1"], "mean_kl": r["kl"]} for r in runs],
        })
    result = {"model": loaded.model_id, "context": args.context, "windows": args.windows, "chunk": args.chunk,
              "weights": "float32", "tail": kvcache.TAIL,
              "exact_chunk": not args.compressed_chunk, "results": results, "machine": machine()}
    rows = [[r["mode"], r["policy"], r["bits_per_element"], r["top1_agreement"],
             " / ".join(f"{x['top1_agreement']:.3f}" for x in r["per_window"]), r["mean_kl"],
             " / ".join(f"{x['mean_kl']:.4f}" for x in r["per_window"]), r["ppl_fp16"], r["ppl"],
             f"{100 * (r['ppl'] / r['ppl_fp16'] - 1):+.1f}%"] for r in results]
    text = table(["mode", "policy", "bits/el", "top-1", "per window", "mean KL", "per window", "ppl fp16", "ppl",
                  "ppl change"], rows)
    how = "each chunk read compressed" if args.compressed_chunk else "each chunk's own K/V exact, the past compressed"
    emit(args, result, f"{loaded.model_id}, context {args.context}, {args.windows} windows, chunks of {args.chunk} "
                       f"({how}; exact tail {kvcache.TAIL})\n{text}")
    return 0


def _policy_name(loaded, mode: str) -> str:
    from app.engine import policy

    if mode in MLX_LM_MODES:
        return f"mlx-lm QuantizedKVCache {mode.split('-')[-1]}, group 64"
    return policy.choose(loaded.shape, mode).name
