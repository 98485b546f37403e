"""One layer's decode step on the device, cache update and attention timed apart, at two contexts.

Tells per-token costs that grow with the context (a cache buffer copied instead of updated in
place) from fixed ones (launches). Same shapes as bench/e2e_device.py (Llama-3.1-8B attention),
one layer. Modes: Folio int4 (QuantizedCache + fused kernel), the same without the exact tail
(every token quantized at once), and mlx-lm's fp16 KVCache + SDPA.

    python3 bench/layer_probe.py 32768,131072
"""
import sys
import time

import mlx.core as mx

sys.path.insert(0, "bench")
import e2e_device  # noqa: E402

from app.engine import attention, kvcache  # noqa: E402

N = 40


def timed(fn, pipelined=False) -> float:
    for _ in range(3):
        mx.eval(fn())
    t = time.perf_counter()
    prev = None
    for _ in range(N):
        out = fn()
        if pipelined:  # as mlx-lm's generate_step: the next step is queued before the last is waited on
            mx.async_eval(out)
            if prev is not None:
                mx.eval(prev)
            prev = out
        else:
            mx.eval(out)
    if prev is not None:
        mx.eval(prev)
    return (time.perf_counter() - t) / N * 1e3


def main():
    contexts = [int(c) for c in (sys.argv[1] if len(sys.argv) > 1 else "32768,131072").split(",")]
    e2e_device.LLAMA_31_8B["num_hidden_layers"] = 1
    loaded = e2e_device.build()
    B, H, HQ, D = 1, 8, 32, 128
    k1, v1 = (mx.random.normal((B, H, 1, D)).astype(mx.float16) for _ in range(2))
    q = mx.random.normal((B, HQ, 1, D)).astype(mx.float16)
    mx.eval(k1, v1, q)
    tail = kvcache.TAIL
    print("context  cache        update ms  update+attend ms  pipelined ms  attend-only ms")
    for ctx in contexts:
        for mode in ("int4", "int4-notail", "fp16"):
            kvcache.TAIL = 0 if mode.endswith("-notail") else tail
            c = kvcache.make_cache(loaded, mode.removesuffix("-notail"))[0]
            e2e_device.fill([c], ctx)

            def attend(keys, values, mode=mode):
                if mode != "fp16":
                    return attention.attend(q, keys, D**-0.5)
                return mx.fast.scaled_dot_product_attention(q, keys, values, scale=D**-0.5)

            def update():
                c.update_and_fetch(k1, v1)
                return c.state

            def step():
                return attend(*c.update_and_fetch(k1, v1))

            keys, values = c.update_and_fetch(k1, v1)
            mx.eval(c.state)

            def attend_only():
                return attend(keys, values)

            u, s, p, a = timed(update), timed(step), timed(step, pipelined=True), timed(attend_only)
            print(f"{ctx:7d}  {mode:11s}  {u:9.3f}  {s:16.3f}  {p:12.3f}  {a:14.3f}", flush=True)
            del c, keys, values
            mx.clear_cache()


if __name__ == "__main__":
    main()
