"""`folio bench decode-overhead`: decode ms/token of a deep, narrow random model per KV cache, and
what one layer's cache update + attention costs in time and in MLX graph ops.

On a GPU each small MLX op costs a launch (~5-10 us), so per-layer op count is what separates
Folio's compressed caches from the fp16 cache at decode (issue 4's end-to-end finding). A deep,
narrow model on the CPU at short contexts comes closest to that regime: its weights are small, so
the per-layer ops of the cache and attention weigh in the step. "int4 plain" / "auto plain" are
the same caches with `attention.COMPILE = False` (the decode path before it was compiled). The
caches are filled with random K/V (no prefill) and every mode decodes the same greedy
continuation in the same run, modes taking turns; the median of the repeats.
"""

import re
import tempfile
import time
from pathlib import Path

from app.bench.common import emit, machine, median, table

MODES = ("fp16", "int4", "auto", "int4 plain", "auto plain", "mlx-lm fp16", "mlx-lm kv4")
# Primitives that only make a view (no kernel on a GPU); the rest are counted as kernels.
VIEWS = {"Broadcast", "BroadcastAxes", "Reshape", "Flatten", "Unflatten", "ExpandDims", "Squeeze", "Slice",
         "Transpose", "AsStrided"}


def add_arguments(p):
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--intermediate", type=int, default=512)
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--dtype", default="float32", choices=("float16", "bfloat16", "float32"),
                   help="weights and activations; float32 on CPU, where fp16 matmuls have no BLAS")
    p.add_argument("--contexts", default="64,512,4096", help="comma-separated context lengths")
    p.add_argument("--tokens", type=int, default=16, help="tokens decoded per timing")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--layer-calls", type=int, default=40, help="one layer's attention calls timed per mode (median)")
    p.add_argument("--json", action="store_true")


def build(args):
    """A random llama of the requested shape, wrapped as the loader would hand it over."""
    import mlx.core as mx
    from mlx.utils import tree_map
    from mlx_lm.models import llama

    from app.engine import loader

    config = dict(
        model_type="llama", hidden_size=args.hidden, num_hidden_layers=args.layers,
        intermediate_size=args.intermediate, num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads, head_dim=args.head_dim, rms_norm_eps=1e-5,
        rope_theta=500000.0, vocab_size=args.vocab, max_position_embeddings=131072,
        tie_word_embeddings=False,
    )
    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    dtype = getattr(mx, args.dtype)
    model.update(tree_map(lambda a: a.astype(dtype), model.parameters()))
    mx.eval(model.parameters())
    shape = loader.probe_shape(model, config)
    return loader.LoadedModel(model, None, Path("random"), "random-llama", config, shape, 0, 0.0)


def make_caches(loaded, mode: str) -> list:
    from mlx_lm.models.cache import QuantizedKVCache, make_prompt_cache

    from app.engine import kvcache

    if mode.endswith(" plain"):
        mode = mode.removesuffix(" plain")
    if mode == "mlx-lm fp16":
        return make_prompt_cache(loaded.model)
    if mode == "mlx-lm kv4":
        return [QuantizedKVCache(group_size=64, bits=4) for _ in loaded.model.layers]
    return kvcache.make_cache(loaded, mode)


def fill(caches, kv: list, dtype):
    """Put the same random K/V into every mode's caches (a prefill would cost minutes on CPU)."""
    import mlx.core as mx

    for c, (k, v) in zip(caches, kv):
        c.update_and_fetch(k.astype(dtype), v.astype(dtype))
    mx.eval([c.state for c in caches])


def decode_once(model, caches, tokens: int) -> float:
    """ms per greedy decode step over `tokens` steps; the cache is trimmed back afterwards."""
    import mlx.core as mx

    y = mx.array([[1]])
    t0 = time.perf_counter()
    for _ in range(tokens):
        y = model(y, cache=caches)[:, -1:].argmax(axis=-1)
        mx.eval(y)
    dt = time.perf_counter() - t0
    for c in caches:
        c.trim(tokens)
    return dt * 1e3 / tokens


def layer_once(attn, cache, x) -> float:
    """One layer's attention (cache update included) on one token, in ms; trimmed back."""
    import mlx.core as mx

    t0 = time.perf_counter()
    mx.eval(attn(x, mask=None, cache=cache))
    dt = time.perf_counter() - t0
    cache.trim(1)
    return dt * 1e3


def count_ops(out, after=None) -> dict:
    """Primitives in the graph that produces `out` (its inputs evaluated), by name."""
    import mlx.core as mx

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "graph.dot"
        mx.export_to_dot(str(path), out)
        labels = re.findall(r'label ="([^"]+)", shape=rectangle', path.read_text())
    mx.eval(out)
    if after:
        after()
    ops: dict = {}
    for name in labels:
        ops[name] = ops.get(name, 0) + 1
    return ops


def run(args) -> int:
    import mlx.core as mx

    from app.engine import attention

    loaded = build(args)
    model, dtype = loaded.model, getattr(mx, args.dtype)
    attn = model.layers[0].self_attn
    rows = []
    for context in (int(c) for c in args.contexts.split(",")):
        mx.random.seed(context)
        shape = (1, args.kv_heads, context, args.head_dim)
        kv = [(mx.random.normal(shape), mx.random.normal(shape)) for _ in range(args.layers)]
        x = mx.random.normal((1, 1, args.hidden)).astype(dtype)
        mx.eval(kv, x)
        caches = {mode: make_caches(loaded, mode) for mode in MODES}
        for c in caches.values():
            fill(c, kv, dtype)
        del kv
        steps, layers = {m: [] for m in MODES}, {m: [] for m in MODES}
        # Modes take turns within each repeat, so none gets a quieter machine than the others.
        for r in range(args.repeats + 1):
            for mode, c in caches.items():
                attention.COMPILE = not mode.endswith(" plain")
                ms = decode_once(model, c, args.tokens)
                per_layer = [layer_once(attn, c[0], x) for _ in range(max(1, args.layer_calls // args.repeats))]
                if r:  # the first round warms up (compile, allocate)
                    steps[mode].append(ms)
                    layers[mode].extend(per_layer)
        base = median(steps["mlx-lm fp16"])
        for mode, c in caches.items():
            attention.COMPILE = not mode.endswith(" plain")
            ops = count_ops(attn(x, mask=None, cache=c[0]), after=lambda c=c: c[0].trim(1))
            step = median(steps[mode])
            rows.append({"context": context, "mode": mode, "decode_ms_per_token": step, "tok_s": 1e3 / step,
                         "overhead_ms_per_layer": (step - base) / args.layers,
                         "layer_attention_ms": median(layers[mode]), "layer_ops": sum(ops.values()),
                         "layer_kernels": sum(n for name, n in ops.items() if name not in VIEWS),
                         "layer_op_names": ops})
        attention.COMPILE = True
        del caches
        mx.clear_cache()
    result = {"shape": {k: getattr(args, k) for k in ("layers", "hidden", "heads", "kv_heads", "head_dim",
                                                     "intermediate", "vocab", "dtype")},
              "tokens": args.tokens, "repeats": args.repeats, "rows": rows, "machine": machine()}
    text = table(
        ["context", "cache", "ms/token", "tok/s", "vs mlx-lm fp16, ms/layer", "1 layer attn ms", "ops", "non-view ops"],
        [[r["context"], r["mode"], r["decode_ms_per_token"], r["tok_s"], r["overhead_ms_per_layer"],
          r["layer_attention_ms"], r["layer_ops"], r["layer_kernels"]] for r in rows],
    )
    m = result["machine"]
    emit(args, result, text + f"\n({args.layers} layers, heads {args.heads}/{args.kv_heads}x{args.head_dim}, "
                             f"{args.dtype}; machine: {m['device']}, {m['backend']}, BLAS {m['blas']})")
    return 0
