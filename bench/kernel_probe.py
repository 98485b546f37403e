"""Probe of the fused decode kernel on the device: time per launch plan, host cost per call.

    python3 bench/kernel_probe.py [contexts] [--once]

contexts: comma-separated token counts (default 131072). --once launches each plan a few times
for a profiler (see below; bench/ncu_table.py reads ncu's output). Otherwise, per context: the host time to build one call's graph
(no evaluation) and the time of 200 built calls evaluated together (per call: the GPU's time
where the GPU is the bottleneck), then the README timing (10 calls back to back, median of 20)
for each launch plan:

    PROBE_PLANS    "pf:nt:minb[:nw],..." (PIPELINE, step tokens, launch-bound blocks per SM, warps
                   per block; default the shipped plan only)
    PROBE_BLOCKS   TARGET_BLOCKS values, "264,396,528", each optionally with MIN_TOKENS_PER_BLOCK:
                   "264/512"
    PROBE_ALT      a folder of other shader files (same names): every plan is timed with them
                   too, as an A/B in one process ("alt" rows)
    PROBE_GROUP    the K and V quantization group size (default 64; 32 and 128 change how many
                   scale and bias bytes each row carries)
"""
import os
import sys
import time

import mlx.core as mx

from app.bench.attention_device import time_ms
from app.engine import kernels

H, HKV, D = 64, 8, 128
GROUP = int(os.environ.get("PROBE_GROUP", "64"))
shipped = (kernels.PIPELINE, kernels.STEP_TOKENS, kernels.MIN_BLOCKS_PER_SM, kernels.WARPS)


def use(pf: bool, nt: int, minb: int, nw: int, shaders: str | None):
    """Switch the kernels to a launch plan and shader set."""
    kernels.set_shaders(shaders)
    kernels.set_plan(pipeline=pf, step=nt, min_blocks=minb, warps=nw)


def data(ctx: int):
    q = mx.random.normal((1, H, 1, D)).astype(mx.float16)
    kq = mx.quantize(mx.random.normal((1, HKV, ctx, D)).astype(mx.float16), GROUP, 4)
    vq = mx.quantize(mx.random.normal((1, HKV, ctx, D)).astype(mx.float16), GROUP, 4)
    mx.eval(q, kq, vq)
    fn = lambda: kernels.decode_attention(q, kq, vq, scale=D**-0.5, length=ctx, k_bits=4, v_bits=4, k_group=GROUP,
                                          v_group=GROUP)
    # fp32 attention over the dequantized cache, as tests/test_kernels_device.py checks against
    k, v = (mx.dequantize(*x, group_size=GROUP, bits=4).astype(mx.float32) for x in (kq, vq))
    qf = q.astype(mx.float32).reshape(1, HKV, H // HKV, D) * D**-0.5
    ref = (mx.softmax(qf @ k.swapaxes(-1, -2), axis=-1) @ v).reshape(1, H, 1, D)
    mx.eval(ref)
    return fn, ref


def rel_err(out, ref) -> float:
    return (mx.linalg.norm((out.astype(mx.float32) - ref).flatten()) / mx.linalg.norm(ref.flatten())).item()


def host_and_gpu_us(fn, n=200) -> tuple[float, float]:
    mx.eval(fn())
    t = time.perf_counter()
    outs = [fn() for _ in range(n)]
    build = (time.perf_counter() - t) / n * 1e6
    t = time.perf_counter()
    mx.eval(outs)
    return build, (time.perf_counter() - t) / n * 1e6


contexts = [int(c) for c in (sys.argv[1] if len(sys.argv) > 1 and sys.argv[1][0].isdigit() else "131072").split(",")]
# "pf:nt:minb" or "pf:nt:minb:nw" (warps per block, default the shipped WARPS)
plans = [(tuple(int(x) for x in p.split(":")) + shipped[3:])[:4] for p in os.environ.get("PROBE_PLANS", "").split(",")
         if p] or [shipped]
# "264" or "264/512": TARGET_BLOCKS, and MIN_TOKENS_PER_BLOCK if given
blocks = (os.environ.get("PROBE_BLOCKS") or str(kernels.TARGET_BLOCKS)).split(",")
min_tokens = kernels.MIN_TOKENS_PER_BLOCK


def plan_blocks(entry: str):
    tb, _, mt = entry.partition("/")
    kernels.set_plan(target_blocks=int(tb), min_tokens=int(mt) if mt else min_tokens)
shader_sets = [None] + ([os.environ["PROBE_ALT"]] if os.environ.get("PROBE_ALT") else [])
if "--once" in sys.argv:
    # For a profiler: every (context, plan, shader set, blocks) in turn, ONCE_CALLS calls each, one
    # evaluation per call (so none run at once), then fp16 SDPA over the same context. Each line
    # printed names the launches that follow it, in order (bench/ncu_table.py pairs them).
    calls = int(os.environ.get("ONCE_CALLS", "3"))
    for ctx in contexts:
        fn, ref = data(ctx)
        for pf, nt, minb, nw in plans:
            for shaders in shader_sets:
                use(bool(pf), nt, minb, nw, shaders)
                for tb in blocks:
                    plan_blocks(tb)
                    err = rel_err(fn(), ref)   # compiled (and checked) before the profiled launches
                    print(f"LAUNCHES {calls} ctx {ctx} pf {pf} nt {nt} minb {minb} nw {nw} "
                          f"{'alt' if shaders else 'new'} blocks {tb} (rel err {err:.1e})", flush=True)
                    for _ in range(calls):
                        mx.eval(fn())
        k, v = (mx.random.normal((1, HKV, ctx, D)).astype(mx.float16) for _ in range(2))
        q = mx.random.normal((1, H, 1, D)).astype(mx.float16)
        mx.eval(k, v, q)
        mx.eval(mx.fast.scaled_dot_product_attention(q, k, v, scale=1.0))
        print(f"LAUNCHES {calls} ctx {ctx} fp16 SDPA", flush=True)
        for _ in range(calls):
            mx.eval(mx.fast.scaled_dot_product_attention(q, k, v, scale=1.0))
    sys.exit(0)
t = time.perf_counter()
for _ in range(200):
    mx.eval(mx.fast.scaled_dot_product_attention(mx.zeros((1, 1, 1, 8)), mx.zeros((1, 1, 1, 8)),
                                                 mx.zeros((1, 1, 1, 8)), scale=1.0))
print(f"tiny SDPA with an eval each: {(time.perf_counter() - t) / 200 * 1e6:.1f} us/call", flush=True)
for ctx in contexts:
    fn, ref = data(ctx)
    for pf, nt, minb, nw in plans:
        for shaders in shader_sets:
            use(bool(pf), nt, minb, nw, shaders)
            build, gpu = host_and_gpu_us(fn)
            times = {}
            for tb in blocks:
                plan_blocks(tb)
                times[tb] = time_ms(fn)
            plan_blocks(blocks[0])
            cells = "  ".join(f"{tb} blocks {ms:.4f} ms" for tb, ms in times.items())
            print(f"ctx {ctx} pf {pf} nt {nt} minb {minb} nw {nw} {'alt' if shaders else 'new'}: rel err "
                  f"{rel_err(fn(), ref):.1e}, build {build:.1f} us, 200 evaluated together {gpu:.1f} us/call; {cells}",
                  flush=True)
use(*shipped, None)
plan_blocks(blocks[0])
