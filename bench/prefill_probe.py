"""One layer's prefill chunk on the device, whole and by part: where Folio's int4 prefill spends
what mlx-lm's fp16 prefill does not.

Llama-3.1-8B attention (bench/e2e_device.py's shape, one layer, random 4-bit weights): a chunk of
CHUNK tokens after a past of context - CHUNK, through the layer's attention module with each cache,
the cache put back to that past before every call (mlx-lm's grows by concatenation each chunk, as
in a real prefill; Folio's writes the same slots again). Then the parts of Folio's path on their
own. Milliseconds per call, CALLS calls evaluated together, median of REPEATS.

    python3 bench/prefill_probe.py 131072 [--chunk 4096]
"""
import argparse
import sys

import mlx.core as mx

sys.path.insert(0, "bench")
import e2e_device  # noqa: E402

from app.bench.attention_device import time_ms  # noqa: E402
from app.engine import attention, kvcache, prefill_span, rotation  # noqa: E402

CALLS, REPEATS = 3, 7   # fewer than the README timing's 10 x 20: a layer's chunk takes milliseconds


def timed(fn) -> float:
    return time_ms(fn, CALLS, REPEATS)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("contexts", default="131072", nargs="?")
    p.add_argument("--chunk", type=int, default=4096)
    p.add_argument("--tiny", action="store_true", help="a narrow layer (hidden 1024, 8 heads): to try it on a CPU")
    args = p.parse_args()
    cfg = e2e_device.LLAMA_31_8B
    cfg["num_hidden_layers"] = 1
    if args.tiny:
        cfg.update(hidden_size=1024, num_attention_heads=8, num_key_value_heads=2, intermediate_size=1024,
                   vocab_size=1000)
    loaded = e2e_device.build()
    attn = loaded.model.layers[0].self_attn
    HQ, HKV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    L, D = args.chunk, cfg["hidden_size"] // HQ
    x = (mx.random.normal((1, L, cfg["hidden_size"])) * 0.1).astype(mx.float16)
    mx.eval(x)
    rows = []
    for ctx in (int(c) for c in args.contexts.split(",")):
        past = ctx - L
        for mode in ("fp16", "int4", "int4-rotated", "int4-nospan"):
            prefill_span.ENABLED = mode != "int4-nospan"
            attention.PREFILL_MODEL_SPACE = mode == "int4"
            c = kvcache.make_cache(loaded, mode.split("-")[0])[0]
            e2e_device.fill([c], past)

            def layer(c=c):
                if mode == "fp16":   # back to the past, as a buffer the update must grow
                    c.keys, c.values = c.keys[..., :past, :], c.values[..., :past, :]
                c.offset = past
                return attn(x, mask="causal", cache=c), c.state

            rows.append((ctx, mode, "layer attention (projections, rope, update, attention)", timed(layer)))
            attention.PREFILL_MODEL_SPACE = False   # the parts name their path themselves
            if mode in ("fp16", "int4-rotated"):
                continue
            # Folio's parts, on the view a chunk's update returns.
            c.offset = past
            q = mx.random.normal((1, HQ, L, D)).astype(mx.float16)
            k_new, v_new = (mx.random.normal((1, HKV, L, D)).astype(mx.float16) for _ in range(2))
            view, _ = c.update_and_fetch(k_new, v_new)
            mx.eval(q, view.k, view.v, view.fresh)
            spec = view.spec
            kw = dict(k_bits=spec.k.bits, v_bits=spec.v.bits, k_group=spec.k.group, v_group=spec.v.group)
            out = attention.sdpa_prefill_attention(rotation.rotate(q), view.k, view.v, scale=D**-0.5,
                                                   length=view.length, fresh=view.fresh, **kw)
            keys, values = prefill_span.gather(view.k, view.v, lo=0, stop=past, fresh=view.fresh, dtype=mx.float16,
                                               **kw)
            mx.eval(out, keys, values)

            def encode(c=c):
                c.offset = past
                return c.update_and_fetch(k_new, v_new)[0].k

            parts = {
                "update (rotate, center, quantize, write)": encode,
                "attend, rotated (q and the output transformed around SDPA)": lambda: attention.attend(q, view, D**-0.5),
                "attend in the model's space (the shipped path)": lambda: attention._prefill_model_space(
                    q, view, scale=D**-0.5, length=view.length, window=view.window, **kw),
                "past + chunk for SDPA (gather)": lambda: prefill_span.gather(
                    view.k, view.v, lo=0, stop=past, fresh=view.fresh, dtype=mx.float16, **kw),
                "fp16 SDPA alone (causal)": lambda: mx.fast.scaled_dot_product_attention(
                    q, keys, values, scale=D**-0.5, mask="causal"),
                "rotate q": lambda: rotation.rotate(q),
                "output: add V's mean, rotate back": lambda: attention.uncenter_unrotate(out, view.v_mean, True),
            }
            if mode == "int4-nospan":   # no span kernel, no model-space path: it would time a refusal
                del parts["attend in the model's space (the shipped path)"]
            for name, fn in parts.items():
                rows.append((ctx, mode, name, timed(fn)))
            del c, view, keys, values, out
            mx.clear_cache()
        for r in rows:
            if r[0] == ctx:
                print(f"{r[0]:7d}  {r[1]:15s}  {r[3]:8.3f}  {r[2]}", flush=True)
    print("context  cache        ms/call  part (measured on this machine; chunk of", L, "tokens)")
    for r in rows:
        print(f"{r[0]:7d}  {r[1]:15s}  {r[3]:8.3f}  {r[2]}")


if __name__ == "__main__":
    main()
