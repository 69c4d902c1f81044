#!/usr/bin/env bash
# On the GPU machine (carry .deps): one CUDA build, checked (`loom check ops`, `loom check
# model` on the goldens; SWEEP_CHECK=0 skips), the copy roofline, then each synthetic AWQ
# checkpoint decoded under every environment given (LOOM_CUDA_F16_ROWS, LOOM_CUDA_PDL,
# ...): decode after a 128-token prompt, twice, alternately, since end-to-end figures drift
# by a few percent within a call. Logs under $1. (No nsys on the lent machine: a step's
# kernels are timed by device-decode-ncu.sh.)
#   bash bench/cuda/device-sweep.sh $OUT "qwen2.5-7b qwen2.5-0.5b" "" "LOOM_CUDA_F16_ROWS=0" ...
#   ("" is the defaults)
set -uo pipefail
out=${1:-/tmp/out} presets=${2:-qwen2.5-7b}
shift 2
mkdir -p "$out"
. scripts/device-env.sh
. bench/cuda/device-build.sh
build_loom || exit 1
nvcc -O2 -o /tmp/roofline bench/cuda/roofline.cu && /tmp/roofline | tee "$out/roofline.txt"
loom=/tmp/build/tools/loom
if [ "${SWEEP_CHECK:-1}" != 0 ]; then
  $loom check ops --backend cuda > "$out/check_ops.txt" 2>&1
  echo "check ops: exit $? $(tail -1 "$out/check_ops.txt")"
  grep FAIL "$out/check_ops.txt" | head
  for m in tests/data/golden/*/; do
    $loom check model --backends cpu,cuda -m "$m" > "$out/check_model_$(basename "$m").txt" 2>&1
    echo "check model $(basename "$m"): exit $? $(tail -1 "$out/check_model_$(basename "$m").txt")"
  done
fi
for preset in $presets; do
  m=/tmp/sweep-$preset
  [ -d $m ] || $loom synth --preset $preset --awq --out $m > /dev/null 2>&1
  echo "== $preset: $(LOOM_LOG=debug $loom bench model -m $m --backend cuda --prompt 1 --gen 4 2>&1 | grep -o "decode fuses.*" | head -1) (1-token prompt)"
  for round in 1 2; do
    for cfg in "$@"; do
      echo "  [${cfg:-defaults}] round $round: $(env $cfg $loom bench model -m $m --backend cuda --prompt 128 --gen 128 | grep -E "^ *decode" | tr -s ' ')"
    done
  done
done
