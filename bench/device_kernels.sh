#!/usr/bin/env bash
# On the H200 (after the install lines of ../shared/cuda/README.md): builds the fused decode kernels
# through MLX's CUDA backend, checks them against the reference, times them, and measures decode end
# to end; logs under $OUT, a short table last. Each phase has its own time limit (one device call
# may run 600 s). Phases: TESTS (pytest args, or "none"), BENCH=0, HOST=0, PROBE=0, NCU=1 (NCU_FULL=1), LAYER=1, PREFILL=1 (PREFILL_CTX),
# E2E=0 skip or add them (NCU_OPTS: more ncu options, e.g. "--clock-control none"; PROBE_CTX, PROBE_PLANS, PROBE_BLOCKS, PROBE_ALT: bench/kernel_probe.py); E2E_PREFILL /
# E2E_FILL / E2E_MODES pick the end-to-end contexts and caches. The defaults
# are issue 4's evidence in one call: kernel and prefill-path tests, the attention table, a call's
# host time by part (HOST_CTX: contexts), the launch-plan sweep, and prefill + decode at 32K and 128K (each mode warmed up first), the int4
# cache with and without its exact tail.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c 'import mlx.core as mx, mlx_lm; print(mx.__version__, mlx_lm.__version__, mx.default_device())' | tee -a "$OUT/gpu.txt"
SECONDS=0
# TEST_PLAN: run the tests under a candidate launch plan (tests/test_kernels_device.py, FOLIO_TEST_PLAN).
[ "${TESTS:-}" = none ] || FOLIO_TEST_PLAN=${TEST_PLAN:-} timeout ${TEST_S:-170} python3 -m pytest -q -p no:cacheprovider --tb=short ${TESTS:-tests/test_kernels_device.py tests/test_attention_reference.py} \
  > "$OUT/test.log" 2>&1; rc=$?
# pytest's 5: the selection matched no test (a -k typo must not read as a run that checked something).
[ "${TESTS:-}" = none ] || { [ $rc = 5 ] && echo "tests: NONE RAN (the selection matched no test)" || echo "tests rc=$rc in ${SECONDS}s"; } | tee -a "$OUT/phases.txt"
SECONDS=0
[ "${BENCH:-1}" = 1 ] && timeout ${BENCH_S:-100} python3 -m app.bench.attention_device --contexts 4096,32768,131072 --heads 64 --kv-heads 8 \
  --head-dim 128 --json > "$OUT/bench.json" 2> "$OUT/bench.err"; echo "bench rc=$? in ${SECONDS}s" | tee -a "$OUT/phases.txt"
# BENCH_NOGRAPHS=1: the same table again with MLX's CUDA graphs off (MLX_USE_CUDA_GRAPHS=0: each
# kernel launched as MLX encodes it, no graph built, updated and launched per commit), every row
# alike: how much of a call's README time is MLX's graph handling.
SECONDS=0
[ "${BENCH_NOGRAPHS:-0}" = 1 ] && MLX_USE_CUDA_GRAPHS=0 timeout ${BENCH_S:-100} python3 -m app.bench.attention_device \
  --contexts 4096,32768,131072 --heads 64 --kv-heads 8 --head-dim 128 --json > "$OUT/bench_nographs.json" \
  2> "$OUT/bench_nographs.err" && echo "bench without CUDA graphs in ${SECONDS}s" | tee -a "$OUT/phases.txt"
if [ "${HOST:-1}" = 1 ]; then
  SECONDS=0
  for c in ${HOST_CTX:-4096}; do timeout 90 python3 bench/host_probe.py $c > "$OUT/host_$c.txt" 2>&1; done; echo "host probe in ${SECONDS}s" | tee -a "$OUT/phases.txt"
  for c in ${HOST_CTX:-4096}; do head -3 "$OUT/host_$c.txt"; tail -4 "$OUT/host_$c.txt"; done
fi
if [ "${PROBE:-1}" = 1 ]; then
  SECONDS=0
  timeout ${PROBE_S:-90} python3 bench/kernel_probe.py ${PROBE_CTX:-131072,32768,4096} > "$OUT/probe.txt" 2>&1
  echo "probe in ${SECONDS}s" | tee -a "$OUT/phases.txt"
fi
if [ "${NCU:-0}" = 1 ] && command -v ncu >/dev/null; then
  # Each plan's kernel time alone (ncu, clocks locked to base: comparable, not absolute), then
  # one launch per NCU_FULL_CTX context in detail.
  SECONDS=0
  timeout ${NCU_S:-150} ncu --csv ${NCU_OPTS:-} --metrics gpu__time_duration.sum,smsp__inst_executed.sum -k regex:"folio|sdpa|attention" \
    python3 bench/kernel_probe.py ${PROBE_CTX:-131072,32768,4096} --once > "$OUT/ncu.csv" 2> "$OUT/ncu.err"
  echo "ncu rc=$? in ${SECONDS}s" | tee -a "$OUT/phases.txt"
  python3 bench/ncu_table.py "$OUT/ncu.csv" | tee "$OUT/ncu_table.txt"
  if [ "${NCU_FULL:-0}" = 1 ]; then
    for ctx in ${NCU_FULL_CTX:-131072}; do
      PROBE_PLANS= PROBE_ALT= PROBE_BLOCKS= ONCE_CALLS=1 timeout 120 ncu -k regex:folio_decode --launch-skip 1 --launch-count 1 \
        --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
        --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
        python3 bench/kernel_probe.py $ctx --once > "$OUT/ncu_$ctx.txt" 2>&1
      echo "ncu sections at $ctx tokens:"
      grep -E "Duration|DRAM Throughput|Achieved Occupancy|Registers Per|Issue Slots Busy|Waves Per SM" "$OUT/ncu_$ctx.txt" | head -12
    done
  fi
fi
if [ "${LAYER:-0}" = 1 ]; then
  SECONDS=0
  timeout 150 python3 bench/layer_probe.py 32768,131072 > "$OUT/layer.txt" 2>&1; echo "layer probe in ${SECONDS}s" | tee -a "$OUT/phases.txt"
  tail -6 "$OUT/layer.txt"
fi
if [ "${PREFILL:-0}" = 1 ]; then
  # One layer's prefill chunk by part (bench/prefill_probe.py): the span kernel, the model-space path.
  SECONDS=0
  timeout ${PREFILL_S:-150} python3 bench/prefill_probe.py ${PREFILL_CTX:-32768,131072} > "$OUT/prefill_probe.txt" 2>&1
  echo "prefill probe rc=$? in ${SECONDS}s" | tee -a "$OUT/phases.txt"
  grep -A40 "^context" "$OUT/prefill_probe.txt"
fi
if [ "${E2E:-1}" = 1 ]; then
  SECONDS=0
  timeout ${E2E_S:-300} python3 bench/e2e_device.py --contexts "${E2E_PREFILL-32768,131072}" --fill-contexts "${E2E_FILL-}" --modes ${E2E_MODES:-mlx-lm-fp16,folio-int4,folio-int4-notail} \
    --decode 48 --budget-s 60 --json "$OUT/e2e.json" > "$OUT/e2e.log" 2>&1; echo "e2e rc=$? in ${SECONDS}s" | tee -a "$OUT/phases.txt"
fi
tail -5 "$OUT/test.log"; grep -E "^FAILED|Error" "$OUT/test.log" | head -8
tail -12 "$OUT/probe.txt" 2>/dev/null
tail -8 "$OUT/e2e.log" 2>/dev/null
for b in bench bench_nographs; do [ -f "$OUT/$b.json" ] || continue; echo "$b:"; python3 - "$OUT/$b.json" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception as e:
    sys.exit(f"no bench table: {e}")
print(f"copy bandwidth {r['copy_bandwidth_gbs']:.0f} GB/s")
print("context  sdpa  deq+sdpa  mlx-lm  folio  floor  xSDPA  xMLXLM  /floor   | GPU pace: sdpa  mlx-lm  folio  xSDPA  xMLXLM  /floor")
for x in r["rows"]:
    f, p = x["folio_ms"], x.get("pace")
    pace = "" if not p else (f"   | {p['fp16_sdpa_ms']:.3f} {p['mlx_lm_quantized_ms']:.3f} {p['folio_ms']:.4f} "
                             f"{p['fp16_sdpa_ms']/p['folio_ms']:.2f} {p['mlx_lm_quantized_ms']/p['folio_ms']:.1f} "
                             f"{p['folio_ms']/x['floor_ms']:.2f}")
    print(f"{x['context']:7d} {x['fp16_sdpa_ms']:.3f} {x['dequant_sdpa_ms']:.3f} {x['mlx_lm_quantized_ms']:.3f} "
          f"{f:.4f} {x['floor_ms']:.4f} {x['fp16_sdpa_ms']/f:.2f} {x['mlx_lm_quantized_ms']/f:.1f} {f/x['floor_ms']:.2f}{pace}")
PY
done
