"""Probe of the fused decode kernel on the device: time per launch plan, host cost per call.

    python3 bench/kernel_probe.py [context] [--once]

--once runs four calls and exits (for ncu/nsys). Otherwise: the host time to build one call's graph
(no evaluation), then the README timing (10 calls back to back, median of 20) for several
TARGET_BLOCKS (PROBE_BLOCKS, a list), with and without PIPELINE (PROBE_PF=0 or 1: one of them).
"""
import os
import sys
import time

import mlx.core as mx

from app.bench.attention_device import time_ms
from app.engine import kernels

ctx, H, HKV, D = int(sys.argv[1]) if len(sys.argv) > 1 else 131072, 64, 8, 128
q = mx.random.normal((1, H, 1, D)).astype(mx.float16)
kq = mx.quantize(mx.random.normal((1, HKV, ctx, D)).astype(mx.float16), 64, 4)
vq = mx.quantize(mx.random.normal((1, HKV, ctx, D)).astype(mx.float16), 64, 4)
mx.eval(q, kq, vq)


def folio():
    return kernels.decode_attention(q, kq, vq, scale=D**-0.5, length=ctx, k_bits=4, v_bits=4, k_group=64, v_group=64)


if "--once" in sys.argv:
    for _ in range(4):
        mx.eval(folio())
    sys.exit(0)
mx.eval(folio())
t = time.perf_counter()
outs = [folio() for _ in range(200)]
build_us = (time.perf_counter() - t) / 200 * 1e6
t = time.perf_counter()
mx.eval(outs)
eval_us = (time.perf_counter() - t) / 200 * 1e6
t = time.perf_counter()
for _ in range(200):
    mx.eval(mx.fast.scaled_dot_product_attention(q, q, q, scale=1.0))
sdpa_us = (time.perf_counter() - t) / 200 * 1e6
print(f"ctx {ctx}: host build {build_us:.1f} us/call, 200 calls evaluated together {eval_us:.1f} us/call, "
      f"tiny SDPA with eval each {sdpa_us:.1f} us/call", flush=True)
plans = [(pf, nt) for pf in (True, False) for nt in (16, 32)]
if os.environ.get("PROBE_PF") in ("0", "1"):  # one side of the sweep only
    plans = [(pf, nt) for pf, nt in plans if pf == (os.environ["PROBE_PF"] == "1")]
for pf, nt in plans:
    kernels.PIPELINE = pf
    kernels.step_tokens = lambda head_dim, nt=nt: nt   # tokens per warp step (registers vs bytes in flight)
    for tb in [int(x) for x in os.environ.get("PROBE_BLOCKS", "264,528,1056").split(",")]:
        kernels.TARGET_BLOCKS = tb
        print(f"ctx {ctx} pipeline {int(pf)} step_tokens {nt} target_blocks {tb}: {time_ms(folio):.4f} ms", flush=True)
