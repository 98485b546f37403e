"""Where one decode_attention call's host time goes, on the device: Python, each MLX custom-kernel
call, and what a custom-kernel call costs per input, per template argument and per source byte.

    python3 bench/host_probe.py [context]      (HOST_N: calls per figure, 400)

Each figure is the time to build N calls' graphs (no evaluation), per call; then the host's cost
of evaluating N built calls, per call; the kernel call under mx.compile (an experiment); last,
the README timing of the whole call (10 back to back, evaluated) for comparison, and of the same
call with a kernel that returns at once, against fp16 SDPA's and the int4 byte floor: how much GPU
time a ratio to SDPA leaves the kernel once the call's fixed costs are paid.
"""
import os
import sys
import time

import mlx.core as mx

from app.bench.attention_device import cache_bytes, copy_bandwidth, time_ms
from app.engine import kernels

N = int(os.environ.get("HOST_N", "400"))
ctx, H, HKV, D = int(sys.argv[1]) if len(sys.argv) > 1 else 4096, 64, 8, 128
q = mx.random.normal((1, H, 1, D)).astype(mx.float16)
kq = mx.quantize(mx.random.normal((1, HKV, ctx, D)).astype(mx.float16), 64, 4)
vq = mx.quantize(mx.random.normal((1, HKV, ctx, D)).astype(mx.float16), 64, 4)
mx.eval(q, kq, vq)


def build_us(fn) -> float:
    fn()
    t = time.perf_counter()
    keep = [fn() for _ in range(N)]
    us = (time.perf_counter() - t) / N * 1e6
    del keep
    return us


def folio():
    return kernels.decode_attention(q, kq, vq, scale=D**-0.5, length=ctx, k_bits=4, v_bits=4, k_group=64, v_group=64)


rows = [("decode_attention (whole call, compiled)", build_us(folio))]
# The rest with the kernel calls made directly (kernels.COMPILED off), as before 2026-11-29.
kernels.COMPILED = False
kernels.forget()
rows.append(("decode_attention (whole call, direct)", build_us(folio)))

# The same call with MLX's kernel calls recorded instead of made: Python alone.
recorded = []
real_build = kernels._build


def recorder(kernel, backend, input_names, output_names, template):
    fn = real_build(kernel, backend, input_names, output_names, template)

    def launch(**kw):
        recorded.append((fn, kw))
        return [None] * len(kw["output_shapes"])

    return launch


kernels._build = recorder
kernels.forget()
rows.append(("  Python only (kernel calls recorded)", build_us(folio)))
kernels._build = real_build
kernels.forget()
per_call = 1 if kernels.ONE_PASS[kernels.available()] else 2   # one-pass: the partial kernel is the call
(pfn, pkw) = recorded[-per_call]
rows.append(("  partial kernel call alone", build_us(lambda: pfn(**pkw))))
if per_call == 2:
    cfn, ckw = recorded[-1]
    ckw = dict(ckw, inputs=list(ckw["inputs"]))
    ckw["inputs"][0] = mx.zeros(pkw["output_shapes"][0], mx.float32)
    ckw["inputs"][1] = mx.zeros(pkw["output_shapes"][1], mx.float32)
    mx.eval(ckw["inputs"])
    rows.append(("  combine kernel call alone", build_us(lambda: cfn(**ckw))))

# A trivial kernel: what inputs, template arguments and source size cost per call.
x = mx.zeros((16,), mx.float32)
mx.eval(x)


def tiny(n_inputs, n_template, header="", n_outputs=1):
    names = [f"x{i}" for i in range(n_inputs)]
    outs = [f"out{i}" for i in range(n_outputs)]
    k = mx.fast.cuda_kernel(name=f"probe_{n_inputs}_{n_template}_{len(header)}_{n_outputs}", input_names=names,
                            output_names=outs, source="if (threadIdx.x == 0) out0[0] = x0[0];", header=header)
    tpl = [(f"A{i}", i) for i in range(n_template)]
    return lambda: k(inputs=[x] * n_inputs, template=tpl, grid=(32, 1, 1), threadgroup=(32, 1, 1),
                     output_shapes=[(1,)] * n_outputs, output_dtypes=[mx.float32] * n_outputs)


big_header = kernels.header("cuda") + "\n" + "// pad\n" * 2000
for label, f in (("tiny kernel: 1 input, no template", tiny(1, 0)),
                 ("tiny kernel: 9 inputs", tiny(9, 0)),
                 ("tiny kernel: 13 inputs", tiny(13, 0)),
                 ("tiny kernel: 1 input, 16 template args", tiny(1, 16)),
                 ("tiny kernel: 1 input, 30 KB header", tiny(1, 0, big_header))):
    mx.eval(f())
    rows.append((label, build_us(f)))
rows.append(("fp16 SDPA call (1 query)", build_us(lambda: mx.fast.scaled_dot_product_attention(q, q, q, scale=1.0))))

for label, us in rows:
    print(f"{label:45s} {us:7.1f} us/call (graph build, no eval)")


def eval_us(fn) -> float:
    # The host's cost of evaluating a call (encoding its kernel into MLX's CUDA graph, allocating
    # its outputs), where the GPU's work is short: N built calls evaluated together, per call.
    samples = []
    for _ in range(5):
        keep = [fn() for _ in range(N)]
        t = time.perf_counter()
        mx.eval(keep)
        samples.append((time.perf_counter() - t) / N * 1e6)
    return sorted(samples)[2]


kernels.COMPILED = True
kernels.forget()
for label, f in (("decode_attention (whole call, compiled)", folio), ("tiny kernel: 1 input, 1 output", tiny(1, 0)),
                 ("tiny kernel: 9 inputs, 1 output", tiny(9, 0)),
                 ("tiny kernel: 14 inputs, 1 output", tiny(14, 0)), ("tiny kernel: 1 input, 3 outputs", tiny(1, 0, "", 3)),
                 ("fp16 SDPA call (1 query)", lambda: mx.fast.scaled_dot_product_attention(q, q, q, scale=1.0))):
    print(f"{label:45s} {eval_us(f):7.1f} us/call (evaluation of {N} built calls)")
# The kernel call alone, traced once by mx.compile and replayed (what kernels.COMPILED does): a
# compiled function's graph is rebuilt from its tape, without MLX assembling the kernel's source
# again. Its host cost, and its output against the direct call's (one call each; the counters
# are shared by the timed calls below).
try:
    pfn, pkw = recorded[-per_call]
    ins = list(pkw["inputs"])

    def direct(*xs):
        return pfn(**dict(pkw, inputs=list(xs)))[-1]

    compiled = mx.compile(direct)
    want = direct(*ins)
    mx.eval(want)
    got = compiled(*ins)
    mx.eval(got)
    diff = mx.abs(want.astype(mx.float32) - got.astype(mx.float32)).max().item()
    print(f"{'the kernel call, compiled (mx.compile)':45s} {build_us(lambda: compiled(*ins)):7.1f} us/call (graph build), "
          f"{eval_us(lambda: compiled(*ins)):.1f} us/call (evaluation); max difference {diff:.2e}")
except Exception as e:  # an experiment: report, do not stop the probe
    print(f"mx.compile of the kernel call: {type(e).__name__}: {str(e)[:300]}")
print(f"README timing of the whole call at {ctx}: {time_ms(folio) * 1e3:.1f} us/call")


def readme_split(fn, busy_passes=0, calls=10, repeats=20):
    """The README timing's two halves timed apart, us per call (medians): building the 10 calls'
    graphs (the GPU idle), then evaluating them (encoding, the GPU's work, the final wait). With
    `busy_passes`, that many elementwise passes over 64 MB (about 46 us each at 2.8 TB/s) are
    queued (mx.async_eval) just before each build, so the GPU is not idle through it; their time
    counts only where it outlasts the build."""
    import statistics

    busy = mx.random.normal((1 << 25,)).astype(mx.float16) if busy_passes else None
    mx.eval(busy)
    for _ in range(3):
        mx.eval(fn())
    builds, evals = [], []
    for _ in range(repeats):
        if busy_passes:
            y = busy
            for _ in range(busy_passes):
                y = y * 1.0001
            mx.async_eval(y)
        t0 = time.perf_counter()
        keep = [fn() for _ in range(calls)]
        t1 = time.perf_counter()
        mx.eval(keep)
        t2 = time.perf_counter()
        builds.append((t1 - t0) / calls * 1e6)
        evals.append((t2 - t1) / calls * 1e6)
    return statistics.median(builds), statistics.median(evals)


for label, f in (("Folio", folio), ("fp16 SDPA (1 query over q)", lambda: mx.fast.scaled_dot_product_attention(q, q, q, scale=1.0))):
    b, e = readme_split(f)
    print(f"README timing split, {label}: build {b:.1f} + evaluate {e:.1f} = {b + e:.1f} us/call")
# Is the README row's extra time the idle GPU's (the build leaves it idle) or the host's?
for n in (2, 3, 5):
    b, e = readme_split(folio, busy_passes=n)
    print(f"README timing split, Folio with {n} busy passes queued before the build: build {b:.1f} + evaluate "
          f"{e:.1f} = {b + e:.1f} us/call")
t1 = tiny(1, 0)
print(f"README timing of the tiny kernel: {time_ms(t1) * 1e3:.1f} us/call")


def returning_at_once(text: str) -> str:
    """decode_partial.body returning once it has read its parameters: the same source text (so MLX
    passes the same arguments), grid, registers and shared memory, and no work. A run-time test the
    compiler cannot fold keeps the rest compiled."""
    anchor = "n_splits = PARAM(6);\n"
    assert anchor in text, "decode_partial.body no longer reads n_splits where this probe expects"
    return text.replace(anchor, anchor + "if (n_splits > 0) return;\n", 1)


# What no kernel speed-up can remove from the README timing of this call: the same call with a
# kernel that does nothing. Against fp16 SDPA's README timing over the same context it gives the
# GPU time a target ratio leaves the kernel, to compare with the int4 byte floor.
# K and V apart, as a cache holds them: one array passed as both is read once from DRAM and again
# from L2 (the twelfth session's first run did that and read SDPA at 0.112 ms where the
# attention table, in the same minutes, read 0.211).
k16, v16 = (mx.random.normal((1, HKV, ctx, D)).astype(mx.float16) for _ in range(2))
mx.eval(k16, v16)
sdpa_us = time_ms(lambda: mx.fast.scaled_dot_product_attention(q, k16, v16, scale=D**-0.5)) * 1e3
full_us = time_ms(folio) * 1e3
kernels.set_shaders(kernels.edited_shaders("decode_partial.body", returning_at_once, prefix="folio_empty_"))
empty_us = time_ms(folio) * 1e3
eb, ee = readme_split(folio)
print(f"README timing split, Folio with the kernel returning at once: build {eb:.1f} + evaluate {ee:.1f} us/call")
kernels.set_shaders(None)
floor_us = cache_bytes(HKV, ctx, D) / copy_bandwidth() * 1e6
print(f"README timing at {ctx}: fp16 SDPA {sdpa_us:.1f} us, Folio {full_us:.1f}, Folio's call with the kernel "
      f"returning at once {empty_us:.1f}, int4 byte floor {floor_us:.1f}")
for ratio in (2.8, 1.0):
    room = sdpa_us / ratio - empty_us
    print(f"  {ratio}x fp16 SDPA needs the call at {sdpa_us / ratio:.1f} us: {room:.1f} us of GPU work beyond the "
          f"empty call, {room / floor_us:.2f}x the byte floor")
