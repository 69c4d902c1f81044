#!/usr/bin/env bash
# On the GPU machine (carry .deps): NVIDIA's OpenCL. Builds loom (OpenCL only),
# checks the backend there (check ops, check model on the golden checkpoints),
# times a synthetic AWQ checkpoint's 512-token prompt and decode, then runs both
# with LOOM_OPENCL_PROFILE=1 (event timestamps of every kernel) and sums the
# kernel and idle times per op and weight name.
#   bash bench/opencl/device-profile.sh $OUT [preset]     (preset: qwen2.5-7b)
# (decode is also timed with LOOM_OPENCL_MMA=0: the portable kernels, for comparison)
set -uo pipefail
out=${1:-/tmp/out} preset=${2:-qwen2.5-7b}
. bench/opencl/device-build.sh
build_ocl /tmp/build-ocl || exit 1
loom=/tmp/build-ocl/tools/loom m=/tmp/prof-$preset
LOOM_LOG=debug $loom check ops --backend opencl > "$out/check-ops.txt" 2>&1
grep -E "prefill GEMMs|tensor-core|warning" "$out/check-ops.txt" | sort | uniq | head -5
echo "check ops opencl: $(tail -1 "$out/check-ops.txt")"
bash bench/opencl/ptx-regs.sh "(mma_|awq_gemv_(norm_)?[18]')"
for g in tests/data/golden/*/; do
  echo "check model $(basename $g): $($loom check model --backends cpu,opencl -m $g 2>&1 | grep -E "^opencl|passed" | tr -s ' ' | tr '\n' ' ')"
done
[ -d $m ] || $loom synth --preset $preset --awq --out $m > /dev/null 2>&1
echo "== $preset AWQ on opencl, unprofiled"
$loom bench model -m $m --backend opencl --prompt 512 --gen 2 | grep prompt
$loom bench model -m $m --backend opencl --prompt 128 --gen 32 | grep -E "decode"
echo "without the tensor cores (LOOM_OPENCL_MMA=0):"
LOOM_OPENCL_MMA=0 $loom bench model -m $m --backend opencl --prompt 128 --gen 32 | grep -E "decode"
summary() { python3 bench/opencl/prof-summary.py "$1"; }
LOOM_OPENCL_PROFILE=1 LOOM_LOG=info $loom bench model -m $m --backend opencl --prompt 512 --gen 2 2> "$out/prof-prompt.log" | grep prompt
echo "== prompt 512, per node (rows 512)"; summary 512 < "$out/prof-prompt.log"
LOOM_OPENCL_PROFILE=1 LOOM_LOG=info $loom bench model -m $m --backend opencl --prompt 16 --gen 8 2> "$out/prof-decode.log" | grep decode
echo "== decode, per node (rows 1)"; summary 1 < "$out/prof-decode.log"
