#!/usr/bin/env bash
# On the H200 (after the install lines of ../shared/cuda/README.md): builds the fused decode kernels
# through MLX's CUDA backend, checks them against the reference, times them, and measures decode end
# to end; logs under $OUT, a short table last. Each phase has its own time limit (one device call
# may run 600 s). Phases: TESTS (pytest args, or "none"), BENCH=0, HOST=0, PROBE=0, NCU=1, LAYER=1,
# E2E=0 skip or add them (PROBE_PF / PROBE_BLOCKS narrow the launch-plan sweep); E2E_PREFILL /
# E2E_FILL / E2E_MODES pick the end-to-end contexts and caches. The defaults
# are issue 4's evidence in one call: kernel and prefill-path tests, the attention table, a call's
# host time by part, the launch-plan sweep, and prefill + decode at 32K and 128K (each mode warmed up first), the int4
# cache with and without its exact tail.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c 'import mlx.core as mx, mlx_lm; print(mx.__version__, mlx_lm.__version__, mx.default_device())' | tee -a "$OUT/gpu.txt"
SECONDS=0
[ "${TESTS:-}" = none ] || timeout ${TEST_S:-170} python3 -m pytest -q -p no:cacheprovider --tb=short ${TESTS:-tests/test_kernels_device.py tests/test_attention_reference.py} \
  > "$OUT/test.log" 2>&1; echo "tests rc=$? in ${SECONDS}s" | tee -a "$OUT/phases.txt"
SECONDS=0
[ "${BENCH:-1}" = 1 ] && timeout ${BENCH_S:-100} python3 -m app.bench.attention_device --contexts 4096,32768,131072 --heads 64 --kv-heads 8 \
  --head-dim 128 --json > "$OUT/bench.json" 2> "$OUT/bench.err"; echo "bench rc=$? in ${SECONDS}s" | tee -a "$OUT/phases.txt"
if [ "${HOST:-1}" = 1 ]; then
  SECONDS=0
  timeout 60 python3 bench/host_probe.py 4096 > "$OUT/host.txt" 2>&1; echo "host probe in ${SECONDS}s" | tee -a "$OUT/phases.txt"
  head -3 "$OUT/host.txt"
fi
if [ "${PROBE:-1}" = 1 ]; then
  SECONDS=0
  timeout ${PROBE_S:-60} python3 bench/kernel_probe.py 131072 > "$OUT/probe.txt" 2>&1
  timeout 30 python3 bench/kernel_probe.py 32768 >> "$OUT/probe.txt" 2>&1; echo "probe in ${SECONDS}s" | tee -a "$OUT/phases.txt"
fi
if [ "${NCU:-0}" = 1 ] && command -v ncu >/dev/null; then
  SECONDS=0
  timeout 120 ncu -k regex:folio_decode --launch-skip 2 --launch-count 4 --section SpeedOfLight --section Occupancy \
    --section LaunchStats --section WarpStateStats --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
    python3 bench/kernel_probe.py 131072 --once > "$OUT/ncu.txt" 2>&1; echo "ncu rc=$? in ${SECONDS}s" | tee -a "$OUT/phases.txt"
  grep -E "folio_decode|Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Registers Per|Issue Slots Busy|No Eligible|Stall|Waves Per SM" "$OUT/ncu.txt" | head -60
fi
if [ "${LAYER:-0}" = 1 ]; then
  SECONDS=0
  timeout 150 python3 bench/layer_probe.py 32768,131072 > "$OUT/layer.txt" 2>&1; echo "layer probe in ${SECONDS}s" | tee -a "$OUT/phases.txt"
  tail -6 "$OUT/layer.txt"
fi
if [ "${E2E:-1}" = 1 ]; then
  SECONDS=0
  timeout ${E2E_S:-300} python3 bench/e2e_device.py --contexts "${E2E_PREFILL-32768,131072}" --fill-contexts "${E2E_FILL-}" --modes ${E2E_MODES:-mlx-lm-fp16,folio-int4,folio-int4-notail} \
    --decode 48 --budget-s 60 --json "$OUT/e2e.json" > "$OUT/e2e.log" 2>&1; echo "e2e rc=$? in ${SECONDS}s" | tee -a "$OUT/phases.txt"
fi
tail -5 "$OUT/test.log"; grep -E "^FAILED|Error" "$OUT/test.log" | head -8
tail -12 "$OUT/probe.txt" 2>/dev/null
tail -8 "$OUT/e2e.log" 2>/dev/null
python3 - "$OUT/bench.json" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception as e:
    sys.exit(f"no bench table: {e}")
print(f"copy bandwidth {r['copy_bandwidth_gbs']:.0f} GB/s")
print("context  sdpa  deq+sdpa  mlx-lm  folio  floor  xSDPA  xMLXLM  /floor")
for x in r["rows"]:
    f = x["folio_ms"]
    print(f"{x['context']:7d} {x['fp16_sdpa_ms']:.3f} {x['dequant_sdpa_ms']:.3f} {x['mlx_lm_quantized_ms']:.3f} "
          f"{f:.4f} {x['floor_ms']:.4f} {x['fp16_sdpa_ms']/f:.2f} {x['mlx_lm_quantized_ms']/f:.1f} {f/x['floor_ms']:.2f}")
PY
