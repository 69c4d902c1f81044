#!/usr/bin/env bash
# On the GPU machine (carry .deps): a 7B AWQ decode as the GPU runs it, every kernel's own start
# and end recorded through CUPTI (bench/cuda/trace.c; the lent machine has no nsys), with and
# without programmatic dependent launch, summed per kernel by trace-summary.py. Unlike the
# Nsight Compute figures of device-decode-ncu.sh nothing is serialised, and the step's context
# is the benchmark's (128 positions and up), not 1. Tracing costs some speed: the step's time
# between the logits copy and the first kernel grows most.
#   bash bench/cuda/device-trace.sh $OUT [preset]
set -uo pipefail
out=${1:-/tmp/out}
preset=${2:-qwen2.5-7b}
mkdir -p "$out"
. scripts/device-env.sh
. bench/cuda/device-build.sh
loom=/tmp/build/tools/loom m=/tmp/trace_$preset
synth_awq $preset $m || exit 1
inc=$(dirname "$(find /usr/local/cuda*/ -name cupti_activity.h 2>/dev/null | head -1)")
lib=$(dirname "$(find /usr/local/cuda*/ -name 'libcupti.so' 2>/dev/null | head -1)")
cc -O2 -shared -fPIC -I"$inc" -o /tmp/libtrace.so bench/cuda/trace.c -L"$lib" -lcupti -Wl,-rpath,"$lib" || exit 1
$loom bench model -m $m --backend cuda --prompt 128 --gen 64 | grep decode
for pdl in 1 0; do
  CUDA_INJECTION64_PATH=/tmp/libtrace.so LOOM_TRACE_OUT="$out/trace-pdl$pdl.csv" LOOM_CUDA_PDL=$pdl \
    $loom bench model -m $m --backend cuda --prompt 128 --gen 64 | grep decode
  echo "== LOOM_CUDA_PDL=$pdl"
  python3 bench/cuda/trace-summary.py "$out/trace-pdl$pdl.csv"
done
