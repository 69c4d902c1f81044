#!/usr/bin/env bash
# On the GPU machine (carry .deps and abold/, the tree to compare with: `git archive
# <commit> | tar -x -C abold`): NVIDIA's OpenCL, this tree against abold, built side by
# side and run alternately (7B AWQ decode and 512-token prompt), since end-to-end
# figures move by a few percent from call to call.
#   bash bench/opencl/device-ab.sh $OUT [preset]
set -uo pipefail
out=${1:-/tmp/out} preset=${2:-qwen2.5-7b}
. bench/opencl/device-build.sh
build_ocl /tmp/ab-new "$PWD" -new && build_ocl /tmp/ab-old "$PWD/abold" -old || exit 1
m=/tmp/prof-$preset
[ -d $m ] || /tmp/ab-new/tools/loom synth --preset $preset --awq --out $m > /dev/null 2>&1
for round in 1 2; do
  for v in old new; do
    echo "== $v (round $round)"
    /tmp/ab-$v/tools/loom bench model -m $m --backend opencl --prompt 128 --gen 64 | grep -E "decode"
    /tmp/ab-$v/tools/loom bench model -m $m --backend opencl --prompt 512 --gen 2 | grep -E "prompt"
  done
done
