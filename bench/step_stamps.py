"""Where the fused decode kernel's time goes, on the CUDA device: clock64 stamps around each full
step of a warp's token loop (issuing the next step's loads, waiting for this step's, computing
it), and globaltimer stamps of each block (start, token loop start and end, partials written, end:
after the merge for the block that merges).

    python3 bench/step_stamps.py [contexts] [--calls K] [--evict N] [--batch K]
                                                                        (contexts: default 131072,32768)

--calls: stamped calls reported per context (1). --evict N: before each, a plain call over an
N-token cache of its own, so the stamped launch meets an L2 full of another stream. --batch K: then
K stamped calls evaluated together, as the README timing runs them.

The shipped kernel body is copied with stamps inserted at anchors (checked, so an edited body fails
here rather than measuring something else). Before a step's compute the warp XORs every K and V
word of the step into one register and hands it to the stamp's asm, so it stalls until the loads
have landed (the wait); after the compute the stamp takes the running sums and an O element, so
the step's MMAs have finished (the compute). A stamp's asm takes those values as inputs, so the
compiler cannot read the clock before they exist; it can still move independent work across a
stamp, so the split is approximate. Lane 0 of each warp, and thread 0 of each block, write their
figures past the one-pass work buffer's partials (made that much longer here; its counters after them). The
stamps change the schedule a little: the README times of both forms (ms) show their cost, and
the outputs must match exactly. On the H200: benchmarks.md, eighth session I and ninth session
A-C (where the prologue's stamps found the 7-18 us before the token loop, see call_params.inc).
Reading the stamps on the host moves each call's scratch to managed memory (MLX's CUDA backend
does so for any array the host reads), and a later launch near such pages can stall on the
driver's migrations (ninth session: 120-210 us in some calls after the first): compare stamped
calls with each other, not with the plain timing after them.
"""
import functools
import sys

import mlx.core as mx
import numpy as np

from app.bench.attention_device import time_ms
from app.engine import kernels

H, HKV, D = 64, 8, 128

STATE = "  int tc = -1;"
STEP = "    if (PF ? tc >= 0 : more) STEP_COMPUTE();"
END = "  // Per-warp softmax state, then merge the NW warps and write this split's partial result."
TOP = "    const bool more = tn + NT <= t_end;"
FIELDS = 5   # per warp: wait, compute, full steps, issuing the next step's loads, the whole loop
BLOCK = "const int bk = int(block.y);"
MERGE = "#if FOLIO_ONE_PASS\n// One-pass decode: the block that finishes last"
SLOTS = 8    # per block, int64 globaltimer ns: start, loop start, loop end, partials written, end,
             # q staged, Q fragments made
QSTAGED = "const int n_tail = PARAM(7), tail_cap = PARAM(8);"
QFRAG = "  OAcc<D> oacc;"
BLOCK_TIMES = ("start", "loop start", "loop end", "partials written", "end", "q staged", "fragments")


def stamped_body(text: str) -> str:
    for anchor in (STATE, STEP, END, TOP, BLOCK, MERGE, QSTAGED, QFRAG):
        if text.count(anchor) != 1:
            sys.exit(f"step_stamps: the kernel body changed (anchor not found once): {anchor.strip()}")
    text = text.replace(STATE, STATE + """ long long st_wait = 0, st_comp = 0, st_issue = 0, t_top, t_loop;
  int st_n = 0;
  asm volatile("mov.u64 %0, %%clock64;" : "=l"(t_loop) :: "memory");
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(g[1]) :: "memory");""")
    stamp = 'asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(g[{}]) :: "memory");'
    text = text.replace(BLOCK, f"unsigned long long g[{len(BLOCK_TIMES)}] = {{}};\n" + stamp.format(0) + "\n" + BLOCK)
    text = text.replace(QSTAGED, stamp.format(5) + "\n" + QSTAGED)
    text = text.replace(QFRAG, stamp.format(6) + "\n" + QFRAG)
    text = text.replace(MERGE, stamp.format(3) + "\n" + MERGE)
    text = text.rstrip("\n") + "\n" + stamp.format(4) + f"""
if (tid == 0) {{
  unsigned long long* gs = reinterpret_cast<unsigned long long*>(writable(work) + PARAM(11) + PARAM(11) / D * 2
                                                                 + int(gridDim.y) * n_splits * NW * {FIELDS});
  for (int i = 0; i < {len(BLOCK_TIMES)}; ++i) gs[(bk * n_splits + split) * {SLOTS} + i] = g[i];
}}
"""
    text = text.replace(TOP, TOP + """
    asm volatile("mov.u64 %0, %%clock64;" : "=l"(t_top) :: "memory");""")
    text = text.replace(STEP, """    if (PF ? tc >= 0 : more) {
      long long t0, t1, t2;
      asm volatile("mov.u64 %0, %%clock64;" : "=l"(t0) :: "memory");
      uint acc = uint(t0);
      for (int m = 0; m < MT; ++m) {
        for (int j = 0; j < KR; ++j) for (int i = 0; i < KWL; ++i) acc ^= kw[m][j][i];
        for (int j = 0; j < VR; ++j) for (int i = 0; i < VWL; ++i) acc ^= vw[m][j][i];
      }
      asm volatile("mov.u64 %0, %%clock64;" : "=l"(t1) : "r"(acc) : "memory");
      STEP_COMPUTE();
      asm volatile("mov.u64 %0, %%clock64;" : "=l"(t2) : "f"(l_run[0]), "f"(l_run[1]), "f"(oacc.c[D / 16 - 1][3]) : "memory");
      st_wait += t1 - t0; st_comp += t2 - t1; st_issue += t0 - t_top; ++st_n;
    }""")
    text = text.replace(END, """  long long t_end_loop;
  asm volatile("mov.u64 %0, %%clock64;" : "=l"(t_end_loop) :: "memory");
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(g[2]) :: "memory");
  if (lane == 0) {
    float* st = writable(work) + PARAM(11) + PARAM(11) / D * 2 + ((bk * n_splits + split) * NW + int(warp)) * """ + str(FIELDS) + """;
    st[0] = float(st_wait); st[1] = float(st_comp); st[2] = float(st_n); st[3] = float(st_issue);
    st[4] = float(t_end_loop - t_loop);
  }
""" + END)
    return text


def warp_steps(scratch, base: int, n_warps: int) -> tuple:
    """(steps per warp, issue, wait and compute cycles per step, loop cycles per warp) from the
    warps' stamps; the kernel numbers its warps (KV head * splits + split) * NW + warp."""
    st = scratch[base: base + n_warps * FIELDS].reshape(-1, FIELDS)
    steps = st[:, 2].sum()
    return (st[:, 2].mean(), *(st[:, i].sum() / steps for i in (3, 0, 1)), st[:, 4].mean())


def block_times(scratch, base: int, n_blocks: int):
    """Each block's stamps (rows, in BLOCK_TIMES order), us after the first block's start."""
    g = scratch[base: base + n_blocks * 2 * SLOTS].view(np.int64).reshape(-1, SLOTS)[:, : len(BLOCK_TIMES)]
    return (g - g[:, 0].min()).astype(np.float64) / 1e3   # differences first: ns since 1970 overflow float64's 53 bits


def use_stamps(on: bool, folder: str):
    kernels.set_shaders(folder if on else None)


def main():
    if kernels.available() != "cuda":
        sys.exit("step_stamps: needs MLX's CUDA backend (clock64 stamps)")
    contexts = [int(c) for c in (sys.argv[1] if len(sys.argv) > 1 else "131072,32768").split(",")]
    folder = kernels.edited_shaders("decode_partial.body", stamped_body, prefix="folio_stamps_")
    nw = kernels.WARPS

    # Room for the stamps after the partials: per (B * n_kv) row and split, NW warps x FIELDS floats
    # and SLOTS int64 (2 floats each) for the block.
    plan = kernels._scratch_plan.__wrapped__

    @functools.lru_cache(maxsize=64)
    def roomy(B, Hq, n_kv, Dh):
        cap, ml_at, n = plan(B, Hq, n_kv, Dh)
        return cap, ml_at, n + B * n_kv * cap * (nw * FIELDS + 2 * SLOTS)

    kernels._scratch_plan = roomy
    taken = []
    real_buffers = kernels._work_buffer

    def recording(n_counters, n_floats):
        work = real_buffers(n_counters, n_floats)
        taken.append(work)
        return work

    kernels._work_buffer = recording
    evict = int(sys.argv[sys.argv.index("--evict") + 1]) if "--evict" in sys.argv else 0
    calls = int(sys.argv[sys.argv.index("--calls") + 1]) if "--calls" in sys.argv else 1
    batch = int(sys.argv[sys.argv.index("--batch") + 1]) if "--batch" in sys.argv else 0

    def decode_call(ctx):
        q = mx.random.normal((1, H, 1, D)).astype(mx.float16)
        kq = mx.quantize(mx.random.normal((1, HKV, ctx, D)).astype(mx.float16), 64, 4)
        vq = mx.quantize(mx.random.normal((1, HKV, ctx, D)).astype(mx.float16), 64, 4)
        mx.eval(q, kq, vq)
        return lambda: kernels.decode_attention(q, kq, vq, scale=D**-0.5, length=ctx, k_bits=4, v_bits=4,
                                                k_group=64, v_group=64)

    # --evict N: a plain call over an N-token cache of its own right before each stamped call, so
    # the stamped launch starts with L2 full of that stream (as a layer's attention does after the
    # layer's weights went through), rather than of its own previous call's.
    evicting = decode_call(evict) if evict else None
    print("context  stamped ms  plain ms  steps/warp  cycles per step: issue  wait  compute  | loop cycles/warp")
    for ctx in contexts:
        fn = decode_call(ctx)
        use_stamps(False, folder)
        plain = fn()
        plain_ms = time_ms(fn)
        use_stamps(True, folder)
        stamped_ms = time_ms(fn)
        cap, ml_at, _ = kernels._scratch_plan(1, H, HKV, D)
        splits = kernels.split_plan(ctx, HKV, nw, kernels.step_tokens(D))[0]
        warps_at = ml_at + ml_at // D * 2
        blocks_at = warps_at + HKV * splits * nw * FIELDS
        for call in range(calls):
            if evicting:
                use_stamps(False, folder)
                mx.eval(evicting())
                use_stamps(True, folder)
            taken.clear()
            out = fn()
            mx.eval(out)
            err = (mx.abs(out.astype(mx.float32) - plain.astype(mx.float32)).max()).item()
            scratch = np.array(taken[-1])
            n, issue, wait, comp, loop = warp_steps(scratch, warps_at, HKV * splits * nw)
            print(f"{ctx:7d}  {stamped_ms:10.4f}  {plain_ms:8.4f}  {n:10.1f}  {issue:22.0f}  {wait:4.0f}  {comp:7.0f}"
                  f"  | {loop:.0f} (call {call}{f', after a {evict}-token call' if evict else ''};"
                  f" max |stamped - plain| {err:.1e})", flush=True)
            rel = block_times(scratch, blocks_at, HKV * splits)
            med = dict(zip(BLOCK_TIMES, np.median(rel, axis=0)))
            last = rel[rel[:, 4].argmax()]
            order = ("start", "q staged", "fragments", "loop start", "loop end", "partials written", "end")
            print("         us after the first block's start, median over blocks: "
                  + ", ".join(f"{k} {med[k]:.1f}" for k in order)
                  + f"; latest start {rel[:, 0].max():.1f}; the merging block: loop end {last[2]:.1f}, end {last[4]:.1f}",
                  flush=True)
            spread = np.percentile(rel, [0, 10, 90, 100], axis=0)
            print("         over blocks, least / 10% / 90% / most: "
                  + ", ".join(f"{k} " + "/".join(f"{v:.1f}" for v in spread[:, BLOCK_TIMES.index(k)])
                              for k in order[1:]), flush=True)
        if batch:
            # As the README timing runs them: `batch` calls evaluated together, each on its own
            # pool entry, read after all have run (reading a scratch on the host moves it to
            # managed memory: those entries are not used again).
            taken.clear()
            mx.eval([fn() for _ in range(batch)])
            print(f"{ctx:7d}  {batch} calls evaluated together; us after each call's first block start, median"
                  " (90%) over blocks:", flush=True)
            for i, scr in enumerate(list(taken)):
                rel = block_times(np.array(scr), blocks_at, HKV * splits)
                med = dict(zip(BLOCK_TIMES, np.median(rel, axis=0)))
                p90 = dict(zip(BLOCK_TIMES, np.percentile(rel, 90, axis=0)))
                print(f"         call {i}: q staged {med['q staged']:.1f} ({p90['q staged']:.1f}),"
                      f" loop start {med['loop start']:.1f} ({p90['loop start']:.1f}),"
                      f" loop end {med['loop end']:.1f}, launch end {rel[:, 4].max():.1f}", flush=True)
            kernels._pools.clear()   # the entries read above stay managed: a fresh pool next
    use_stamps(False, folder)


if __name__ == "__main__":
    main()
