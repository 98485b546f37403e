"""Probe of the fused decode kernel on the device: time per launch plan, for ncu and for tuning."""
import sys

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
for tb in (264, 528, 1056, 2112, 4224):
    kernels.TARGET_BLOCKS = tb
    print(f"ctx {ctx} target_blocks {tb}: {time_ms(folio):.4f} ms", flush=True)
