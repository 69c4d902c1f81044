#!/usr/bin/env bash
# On the GPU machine: the OpenCL backend (NVIDIA OpenCL) prefill GEMMs of a
# synthetic Qwen2.5-7B AWQ checkpoint (4 layers), timed per node with
# LOOM_OPENCL_PROFILE=1, as TFLOP/s; `loom check ops` on that device first, and
# `check model` of a 300-token prompt (several 128-row tiles). Carry .deps:
#   bash bench/device-ocl-prefill.sh $OUT [T]
set -uo pipefail
out=${1:-/tmp/out}
T=${2:-512}
mkdir -p "$out"
mkdir -p /etc/OpenCL/vendors && echo libnvidia-opencl.so.1 > /etc/OpenCL/vendors/nvidia.icd
. scripts/device-env.sh
meson setup /tmp/build --buildtype=release -Dtests=disabled -Dvulkan=disabled -Dcuda=disabled > /tmp/setup.log 2>&1 ||
  { tail -30 /tmp/setup.log; exit 1; }
ninja -C /tmp/build > /tmp/build.log 2>&1 || { tail -30 /tmp/build.log; exit 1; }
loom=/tmp/build/tools/loom
export LOOM_CACHE_DIR=/tmp/loomcache
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
LOOM_LOG=debug $loom check ops --backend opencl > "$out/check-ops.txt" 2>&1
grep -iE "mma|tensor-core|prefill uses|warn|error" "$out/check-ops.txt" | head -20
grep -E "FAIL|matmul" "$out/check-ops.txt" | head -40
echo "check ops: $(tail -1 "$out/check-ops.txt")"
for op in matmul matmul_awq; do # the 64-row mma.cl kernels on every case
  LOOM_OPENCL_MMA_ROWS=64 $loom check ops --backend opencl --op $op > "$out/check-$op-64.txt" 2>&1
  echo "check ops --op $op, 64-row tiles: $(tail -1 "$out/check-$op-64.txt")"
done
# registers and spills of the mma.cl kernels: the cached program binary is NVIDIA's PTX
for f in "$LOOM_CACHE_DIR"/opencl/*.bin; do
  python3 -c 'import sys; d = open(sys.argv[1], "rb").read(); i = d.find(b".version")
if i >= 0 and b"mma_awq_gemm" in d: open("/tmp/loom.ptx", "wb").write(d[i:].split(b"\0")[0])' "$f"
done
[ -f /tmp/loom.ptx ] && PATH=$PATH:/usr/local/cuda/bin ptxas -arch=sm_90 -v /tmp/loom.ptx -o /tmp/loom.cubin 2>&1 |
  grep -A4 -E "Compiling entry function '(mma_|awq_gemm)" | grep -E "entry|registers|spill" | sed 's/ptxas info *: //'
[ -f /tmp/loom.ptx ] && cp /tmp/loom.ptx "$out/"
$loom synth --preset qwen2.5-7b --awq --layers 4 --out /tmp/q7awq > /dev/null 2>&1
$loom synth --preset qwen2.5-0.5b --awq --layers 4 --out /tmp/q05awq > /dev/null 2>&1
# per node (the warm-up and 3 timed prompt steps): 7B shapes (K 3584, q/k/v fused 4608 columns,
# gate/up fused 37888, down K 18944); with ROWS="64 128", once per forced mma.cl row tile too
for rows in auto ${ROWS:-}; do
  [ "$rows" = auto ] && unset LOOM_OPENCL_MMA_ROWS || export LOOM_OPENCL_MMA_ROWS=$rows
  echo "-- mma rows: $rows"
  LOOM_OPENCL_PROFILE=1 LOOM_LOG=info $loom bench model -m /tmp/q7awq --backend opencl --prompt "$T" --gen 2 \
    > "$out/profile-$rows.txt" 2>&1
  awk -v T="$T" '/matmul/ && index($0, ", " T " rows)") {
      match($0, /\047[^\047]*\047/); n = substr($0, RSTART + 1, RLENGTH - 2); sub(/.*\./, "", n);
      match($0, /\): [0-9.]+ ms/); ms = substr($0, RSTART + 3, RLENGTH - 6) + 0;
      split("q 3584 4608 attn_out 3584 3584 gate 3584 37888 ffn_out 18944 3584 logits 3584 152064", d, " ");
      for (i = 1; i < 15; i += 3) if (d[i] == n) { k = d[i + 1]; c = d[i + 2] }
      s[n] += ms; cnt[n]++; fl[n] = 2.0 * T * k * c }
    END { for (n in s) printf "%-9s %3d calls  %8.3f ms/call  %6.1f TFLOP/s\n", n, cnt[n], s[n] / cnt[n], fl[n] / (s[n] / cnt[n]) / 1e9 }' \
    "$out/profile-$rows.txt"
done
unset LOOM_OPENCL_MMA_ROWS
$loom bench model -m /tmp/q7awq --backend opencl --prompt "$T" --gen 2 2>&1 | grep -iE "prompt|prefill"
$loom check model -m /tmp/q05awq --backends cpu,opencl --prompt-len 300 -n 8 > "$out/check-model.txt" 2>&1
echo "check model (0.5B AWQ, 4 layers, 300 tokens): $(tail -3 "$out/check-model.txt" | tr '\n' ' ')"
