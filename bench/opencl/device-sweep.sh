#!/usr/bin/env bash
# On the GPU machine (carry .deps): NVIDIA's OpenCL, one build, a synthetic AWQ
# checkpoint decoded under each environment given (LOOM_OPENCL_ATT_ONE,
# LOOM_OPENCL_FUSE, or LOOM_OPENCL_BUILD_OPTIONS=-DNAME for an #ifdef under test):
# tok/s unprofiled, then every node's and kernel's device time (LOOM_OPENCL_PROFILE=1,
# prof-summary.py --kernels). Configurations run twice, alternately, since
# end-to-end figures drift by a few percent within a call.
#   bash bench/opencl/device-sweep.sh $OUT preset "" "LOOM_OPENCL_ATT_ONE=0" ...
#   ("" is the defaults; preset e.g. qwen2.5-7b)
set -uo pipefail
out=${1:-/tmp/out} preset=${2:-qwen2.5-7b}
shift 2
. bench/opencl/device-build.sh
build_ocl /tmp/build-ocl || exit 1
loom=/tmp/build-ocl/tools/loom m=/tmp/prof-$preset
[ -d $m ] || $loom synth --preset $preset --awq --out $m > /dev/null 2>&1
for round in 1 2; do
  for cfg in "$@"; do
    echo "== [${cfg:-defaults}] round $round: $(env $cfg $loom bench model -m $m --backend opencl --prompt 128 --gen 64 | grep -E "^ *decode" | tr -s ' ')"
  done
done
i=0
for cfg in "$@"; do
  i=$((i + 1))
  env $cfg LOOM_OPENCL_PROFILE=1 LOOM_LOG=debug $loom bench model -m $m --backend opencl --prompt 128 --gen 8 2> "$out/prof-$i.log" > /dev/null
  echo "== [${cfg:-defaults}] decode at 128, per node and kernel"
  python3 bench/opencl/prof-summary.py 1 --kernels < "$out/prof-$i.log" | grep -v " embed\| out_norm"
done
