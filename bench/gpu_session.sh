#!/usr/bin/env bash
# One GPU-machine session: everything the lent GPU must show, logs and JSON written under $OUT.
# Run from the project root on the GPU machine after the bundle parts are in /opt/trtparts (see README, "GPU").
#   bash bench/gpu_session.sh tests        GPU tests (bundle python, TensorRT 8.6) + LayerNorm kernel benchmark
#   bash bench/gpu_session.sh dab-tiny     DAB-DETR tiny: TensorRT FP32 / naive FP16 / trtpipe recipe on the GPU
#   bash bench/gpu_session.sh dab-bench SIZE STEP...
#       steps of bench/dab_detr.py (issue 7) for DAB-DETR SIZE (r50; tiny runs on TensorRT); carry .whl (make
#       gpu-wheels). R50 in consecutive calls of at most 10 minutes each: `dab-bench r50 export torch`, then `trt_fp32`,
#       `trt_fp16_naive`, `trtpipe` (call it again if it runs out of time: it resumes) and `report`. Each call leaves
#       its log, the lock file and the results so far (dab_detr_<gpu>_<date>.json) in $OUT.
#
# Or everything in one lease, in the background while the bundle's parts arrive (carry .whl, the first part and
# build/plugins/libtrtpipe_layernorm_plugin.so (make plugins) with the first call, one part per later call; make each
# call as soon as the last returns: the machine goes back 30 s after a call ends, with all it holds):
#   bash bench/gpu_session.sh start        starts `pipeline` (setsid): DAB-DETR r50 export, then, once every part
#                                          is in, the TensorRT rows (one trtpipe process), the report, the torch rows
#                                          and batch 8 (recipes/dab_detr_b8.yaml)
#   bash bench/gpu_session.sh part NN      copies part NN into /opt/trtparts (`part NN last` for the last one);
#                                          a call's carry replaces the last call's: carry part NN with its own call,
#                                          and the parts from GPU_PARTS (default .gpu)
#   bash bench/gpu_session.sh poll SECS    waits up to SECS for the pipeline, packs its results so far into
#                                          $OUT/session.tgz (one file: a call brings back at most 8)
# TORCH_STEPS, TRT_STEPS, TORCH_LATE and TRT_LATE (steps of bench/dab_detr.py, in that order; empty: none) change
# what `start` runs under each python; EXTRA_RECIPES (recipe files, e.g. bench/gpu/dab_fp32_sets.yaml) run before
# TRT_STEPS, every stage but the export (run with the others) or the stages EXTRA_STAGES names (and what they need);
# GPU_TESTS (a pytest -k expression over GPU_TEST_FILES) runs those GPU tests first. A timing cache in .gpucache/ (carried with the first call) is offered
# to the first TensorRT build (TensorRT 8.6 refused every such file holding Myelin timings: "rejected" in the lock).
# LayerNorm kernel variants: .lnx/variants.txz (ignored), a tar of .lnx/vN/ folders, each holding layernorm_bench and
# libtrtpipe_layernorm.so of one kernel source (`make plugins BUILD_DIR=...`), carried with `start`; after the export
# `pipeline` times each variant's layernorm_bench and runs bench/layernorm.py on the one whose slowest shape is the
# fastest (its %copy), while the parts arrive.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
# The bundle's python and libraries; its NVRTC 12 (make gpu-bundle-cublas) ahead of the image's CUDA libraries.
bundle() {
  bash /opt/trtparts/install.sh >/dev/null && . /opt/trt/env.sh || return 1
  local nvrtc=/opt/trt/site/nvidia/cuda_nvrtc/lib
  [ -d $nvrtc ] && ln -sf libnvrtc.so.12 $nvrtc/libnvrtc.so && export LD_LIBRARY_PATH=$nvrtc:$LD_LIBRARY_PATH
  return 0
}
# The image's python3 (torch, CUDA) with the wheels from .whl/ in /tmp/site, as a command that leaves the bundle's
# environment behind: call before `bundle`.
torch_python() {
  [ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || return 1
  printf '#!/bin/sh\nexec env -u PYTHONHOME PYTHONPATH=/tmp/site:%s LD_LIBRARY_PATH=%s %s "$@"\n' \
    "$PWD" "${LD_LIBRARY_PATH:-}" "$(command -v python3)" > /tmp/torch-python && chmod +x /tmp/torch-python
}

# Each kernel variant in /tmp/lnx/v*/ timed on FP32 and FP16 rows of cols 256..4096 at 16 and 256 MiB, then
# bench/layernorm.py on the variant with the highest lowest %copy.
layernorm_variants() {
  local f16="32768x256 16384x512 10922x768 8192x1024 5461x1536 4096x2048 2730x3072 2048x4096 524288x256 262144x512
    174762x768 131072x1024 87381x1536 65536x2048 43690x3072 32768x4096"
  local f32="16384x256 8192x512 5461x768 4096x1024 2730x1536 2048x2048 1365x3072 1024x4096"
  local v best
  for v in /tmp/lnx/v*; do
    { timeout 120 "$v/layernorm_bench" f16 $f16; timeout 60 "$v/layernorm_bench" f32 $f32; } > "$1/layernorm_${v##*/}.txt" 2>&1
    # a variant that failed a check or ran out of time scores 0
    echo "$(awk '/FAIL/ { bad = 1 } $NF ~ /%$/ { x = $NF + 0; if (m == "" || x < m) m = x; n++ }
      END { print (bad || n < 24) ? 0 : m }' "$1/layernorm_${v##*/}.txt") $v"
  done | sort -rn | tee "$1/layernorm_variants.txt"
  best=$(head -n 1 "$1/layernorm_variants.txt" | cut -d' ' -f2)
  timeout 300 /tmp/torch-python bench/layernorm.py --lib "$best/libtrtpipe_layernorm.so" --out-dir "$1" \
    > "$1/layernorm_py.txt" 2>&1
  tail -n 4 "$1/layernorm_py.txt"
}

JOB=/tmp/job

case "${1:-tests}" in
start)
  torch_python || { echo "cannot install .whl/ for the image's python3: carry .whl (make gpu-wheels)"; exit 1; }
  mkdir -p "$JOB/out" /opt/trtparts /tmp/plugins
  cp build/plugins/*.so /tmp/plugins/ 2>/dev/null  # the plugin the recipes load, kept whatever later calls carry
  mkdir -p /tmp/cache/tensorrt && cp .gpucache/timing-*.cache /tmp/cache/tensorrt/ 2>/dev/null  # an earlier lease's
  [ -f .lnx/variants.txz ] && mkdir -p /tmp/lnx && tar xJf .lnx/variants.txz -C /tmp/lnx --strip-components=1
  setsid nohup bash bench/gpu_session.sh pipeline > "$JOB/log" 2>&1 < /dev/null &
  sleep 20; cat "$JOB/log"
  ;;
part)
  cp "${GPU_PARTS:-.gpu}/part$2"/* /opt/trtparts/ && echo "part $2 in"
  [ "${3:-}" = last ] && touch /opt/trtparts/.all
  tail -n 5 "$JOB/log"
  ;;
poll)
  # Everything in one file, $OUT/session.tgz: a call brings back at most 8 files.
  end=$((SECONDS + ${2:-60}))
  while [ ! -e "$JOB/done" ] && [ $SECONDS -lt $end ]; do sleep 5; done
  S=/tmp/collect; rm -rf $S; mkdir -p $S/trt
  cp -r "$JOB/out/." $S/; cp "$JOB/log" $S/pipeline.log; cp recipes/*.lock.yaml bench/gpu/*.lock.yaml $S/ 2>/dev/null
  cp build/dab_detr/bench_torch.json $S/ 2>/dev/null
  find build -path '*/report/report.html' | while read -r f; do cp "$f" "$S/report_$(echo "$f" | cut -d/ -f2).html"; done
  find build -name '*.json' -size -5M | tar czf $S/stage_json.tgz -T - 2>/dev/null  # profiles, engine layers, plans
  # TensorRT's build logs, by stage directory, the timing cache and the search's candidates
  find /tmp/cache -name tensorrt.log | while read -r f; do cp "$f" "$S/trt/$(basename "$(dirname "$f")").log"; done
  find /tmp/cache -maxdepth 2 -name '*timing*' -exec cp {} $S/trt/ \;
  (cd /tmp/cache/scratch 2>/dev/null && tar czf $S/evaluations.tgz ./*/evaluations/*.json 2>/dev/null)
  tar czf "$OUT/session.tgz" -C $S .
  tail -n 40 "$JOB/log"; [ -e "$JOB/done" ] && echo "pipeline done: $(cat "$JOB/done")"
  ;;
pipeline)
  O=$JOB/out; r50="--size r50 --torch-python /tmp/torch-python --cache-dir /tmp/cache --results-dir $O"
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem --format=csv | tee "$O/gpu.txt"
  ls /usr/local/cuda/lib64 2>/dev/null | grep -i nvrtc; date
  # The export and the LayerNorm variants while the parts arrive; then the TensorRT rows in one trtpipe process (their
  # builds share the timing cache), the torch rows on an otherwise idle machine (while parts arrived, eager FP32 took
  # 33.7 ms, 20.1 ms idle) and batch 8.
  /tmp/torch-python bench/dab_detr.py $r50 --step ${TORCH_STEPS:-export}
  for r in ${EXTRA_RECIPES:-}; do /tmp/torch-python -m trtpipe run "$r" --until export --cache-dir /tmp/cache; done
  [ -d /tmp/lnx ] && layernorm_variants "$O"
  while [ ! -e /opt/trtparts/.all ]; do sleep 5; done
  mkdir -p build/plugins && cp /tmp/plugins/*.so build/plugins/
  bundle || { echo "bundle install failed"; echo failed > "$JOB/done"; exit 1; }
  [ -n "${GPU_TESTS:-}" ] && timeout 300 python -m pytest -q -rfE --tb=short -m gpu \
    ${GPU_TEST_FILES:-tests/test_layernorm_plugin.py tests/test_trt_gpu.py} -k "$GPU_TESTS" 2>&1 | tail -n 60 | tee "$O/gpu_tests.txt"
  python -c "import ctypes; v = [ctypes.c_int(), ctypes.c_int()]; ctypes.CDLL('libnvrtc.so.12').nvrtcVersion(*map(ctypes.byref, v)); print('nvrtc', *[x.value for x in v])"
  for r in ${EXTRA_RECIPES:-}; do  # every stage but the export, which needs torch (its result is in the lock file)
    stages=${EXTRA_STAGES:-$(python -c "import sys, trtpipe.recipe as r
print(*(s for s in r.load(sys.argv[1]).stages if s != 'export'))" "$r")}
    python -m trtpipe run "$r" --only $stages --cache-dir /tmp/cache 2>&1 | tee "$O/${r##*/}.txt"
  done
  trt_steps=${TRT_STEPS-trtpipe trt_fp16_naive trt_fp32 report}
  [ -n "$trt_steps" ] && python bench/dab_detr.py $r50 --target tensorrt --step $trt_steps
  torch_late=${TORCH_LATE-torch}; trt_late=${TRT_LATE-b8}
  [ -n "$torch_late" ] && /tmp/torch-python bench/dab_detr.py $r50 --step $torch_late
  [ -n "$trt_late" ] && python bench/dab_detr.py $r50 --target tensorrt --step $trt_late
  cp build/dab_detr/bench_torch.json build/dab_detr/report/report.html "$O/" 2>/dev/null
  echo ok > "$JOB/done"
  ;;
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
dab-bench)
  size=${2:?dab-bench SIZE STEP...}; shift 2
  recipe=$([ "$size" = r50 ] && echo dab_detr || echo dab_detr_tiny)
  torch_python || { echo "cannot install .whl/ for the image's python3: carry .whl (make gpu-wheels)"; exit 1; }
  (bundle && python bench/dab_detr.py --size "$size" --target tensorrt --step "$@" --torch-python /tmp/torch-python \
     --cache-dir /tmp/cache --results-dir "$OUT" 2>&1 | tee -a "$OUT/dab_$size.txt")
  cp "recipes/$recipe.lock.yaml" "build/$recipe/bench_torch.json" "build/$recipe/report/report.html" "$OUT/" 2>/dev/null
  ;;
esac
