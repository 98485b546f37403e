#!/usr/bin/env bash
# On the H200 (after the install lines of ../shared/cuda/README.md): builds the fused decode kernels
# through MLX's CUDA backend, checks them against the reference, times them; logs under $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c 'import mlx.core as mx, mlx_lm; print(mx.__version__, mlx_lm.__version__, mx.default_device())' | tee -a "$OUT/gpu.txt"
python3 - > "$OUT/generated.txt" 2>&1 <<'PY'
import mlx.core as mx
from app.engine import kernels
kernels.VERBOSE = True
q = mx.random.normal((1, 16, 1, 128)).astype(mx.float16)
kq = mx.quantize(mx.random.normal((1, 2, 300, 128)).astype(mx.float16), 64, 4)
mx.eval(kernels.decode_attention(q, kq, kq, scale=0.1, length=300, k_bits=4, v_bits=4, k_group=64, v_group=64))
PY
python3 -m pytest -q -p no:cacheprovider --tb=short ${TESTS:-tests/test_kernels_device.py} 2>&1 | tee "$OUT/test.log" | tail -25
python3 -m app.bench.attention_device --contexts 4096,32768,131072 --heads 64 --kv-heads 8 --head-dim 128 --json \
  > "$OUT/bench.json" 2> "$OUT/bench.err"
tar czf "$OUT/ptx_cache.tgz" -C /tmp mlx 2>/dev/null
python3 - "$OUT/bench.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"copy bandwidth {r['copy_bandwidth_gbs']:.0f} GB/s")
print("context  sdpa  deq+sdpa  mlx-lm  folio  floor  xSDPA  xMLXLM  /floor")
for x in r["rows"]:
    f = x["folio_ms"]
    print(f"{x['context']:7d} {x['fp16_sdpa_ms']:.3f} {x['dequant_sdpa_ms']:.3f} {x['mlx_lm_quantized_ms']:.3f} "
          f"{f:.4f} {x['floor_ms']:.4f} {x['fp16_sdpa_ms']/f:.2f} {x['mlx_lm_quantized_ms']/f:.1f} {f/x['floor_ms']:.2f}")
PY
