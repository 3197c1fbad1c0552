#!/usr/bin/env bash
# One GPU-machine session: everything the lent GPU must show, logs and JSON written under $OUT.
# Run from the project root on the GPU machine after the bundle parts are in /opt/trtparts (see README, "GPU").
#   bash bench/gpu_session.sh tests        GPU tests (bundle python, TensorRT 8.6) + LayerNorm kernel benchmark
#   bash bench/gpu_session.sh dab-tiny     DAB-DETR tiny: TensorRT FP32 / naive FP16 / trtpipe recipe on the GPU
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
bundle() { bash /opt/trtparts/install.sh >/dev/null && . /opt/trt/env.sh; }

case "${1:-tests}" in
tests)
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
  build/plugins/layernorm_bench > "$OUT/layernorm_bench.txt" 2>&1; echo "layernorm_bench rc=$?"
  python3 bench/layernorm.py --out-dir "$OUT" > "$OUT/layernorm_py.txt" 2>&1; echo "bench/layernorm.py rc=$?"
  (bundle && python bench/gpu_tests.py tests/ 2>&1 | tee "$OUT/gpu_tests.txt"; cp bench/results/gpu_tests_*.json "$OUT/")
  tail -n 25 "$OUT/layernorm_bench.txt" "$OUT/layernorm_py.txt"
  ;;
dab-tiny)
  for opset in 17 16; do
    python3 bench/torch_export.py trtpipe.models.dab_detr:build '{"size": "tiny"}' pixel_values 1,3,320,320 \
      /tmp/dab_tiny$([ $opset = 16 ] && echo 16).onnx $opset >> "$OUT/export.txt" 2>&1 || { cat "$OUT/export.txt"; exit 1; }
  done
  (bundle && for r in dab_tiny_plugin dab_tiny_trt; do
     python -m trtpipe run bench/gpu/$r.yaml --cache-dir /tmp/cache 2>&1 | tee -a "$OUT/dab_tiny.txt"
     cp bench/gpu/$r.lock.yaml "$OUT/"
   done)
  ;;
esac
