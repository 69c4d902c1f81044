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
mkdir -p "$out"
mkdir -p /etc/OpenCL/vendors && echo libnvidia-opencl.so.1 > /etc/OpenCL/vendors/nvidia.icd
. scripts/device-env.sh
[ -d /tmp/build-ocl ] || meson setup /tmp/build-ocl --buildtype=release -Dtests=disabled -Dvulkan=disabled -Dcuda=disabled > "$out/setup.log" 2>&1
ninja -C /tmp/build-ocl > "$out/build.log" 2>&1 || { tail -30 "$out/setup.log" "$out/build.log"; exit 1; }
loom=/tmp/build-ocl/tools/loom m=/tmp/prof-$preset
LOOM_LOG=debug $loom check ops --backend opencl > "$out/check-ops.txt" 2>&1
grep -E "prefill GEMMs|tensor-core|warning" "$out/check-ops.txt" | sort | uniq | head -5
echo "check ops opencl: $(tail -1 "$out/check-ops.txt")"
# registers and spills of the tensor-core kernels: NVIDIA's program binary is PTX
for f in "${LOOM_CACHE_DIR:-$HOME/.cache/loom}"/opencl/*.bin; do
  python3 -c 'import sys; d = open(sys.argv[1], "rb").read(); i = d.find(b"//")
if b"mma_awq_gemm" in d: open("/tmp/loom.ptx", "wb").write(d[i:].split(b"\0")[0])' "$f"
done
[ -f /tmp/loom.ptx ] && /usr/local/cuda/bin/ptxas -arch=sm_90 -v /tmp/loom.ptx -o /tmp/loom.cubin 2>&1 |
  grep -A4 -E "Compiling entry function '(mma_|awq_gemv_(norm_)?[18]')" | grep -E "entry|registers|spill" |
  sed 's/ptxas info *: //' | paste - - - | sed 's/Compiling entry function//; s/for .sm_90.//' | tr -s ' \t' ' '
for g in tests/data/golden/*/; do
  echo "check model $(basename $g): $($loom check model --backends cpu,opencl -m $g 2>&1 | grep -E "^opencl|passed" | tr -s ' ' | tr '\n' ' ')"
done
[ -d $m ] || $loom synth --preset $preset --awq --out $m > /dev/null 2>&1
echo "== $preset AWQ on opencl, unprofiled"
$loom bench model -m $m --backend opencl --prompt 512 --gen 2 | grep prompt
$loom bench model -m $m --backend opencl --prompt 128 --gen 32 | grep -E "decode"
echo "without the tensor cores (LOOM_OPENCL_MMA=0):"
LOOM_OPENCL_MMA=0 $loom bench model -m $m --backend opencl --prompt 128 --gen 32 | grep -E "decode"
# per (op, name with layer numbers dropped): the device time of its kernels and the
# device's idle time before them, summed over the profiled steps of $1 rows
summary() {
  python3 -c '
import re, sys, collections
rows, t, idle, c, steps = sys.argv[1], collections.Counter(), collections.Counter(), collections.Counter(), []
for line in sys.stdin:
    m = re.search(r"opencl: node \d+ \((\w+) .(\S*)., (\d+) rows\): ([\d.]+) ms, idle before ([\d.]+) ms", line)
    if m and m[3] == rows:
        k = m[1] + " " + re.sub(r"\d+", "#", m[2]); t[k] += float(m[4]); idle[k] += float(m[5]); c[k] += 1
    m = re.search(r"step of (\d+) tokens: ([\d.]+) ms on the device, ([\d.]+) ms in (\d+) kernels, ([\d.]+) ms idle", line)
    if m and m[1] == rows: steps.append((float(m[2]), float(m[3]), int(m[4]), float(m[5])))
all = sum(t.values()) or 1
print("   kernels  share  idle before  nodes  op name")
for k, v in t.most_common(20): print(f"{v:7.3f} ms {100 * v / all:5.1f}% {idle[k]:8.3f} ms {c[k]:6d}  {k}")
for s in steps[-3:]: print(f"step: {s[0]:.3f} ms on the device, {s[1]:.3f} ms in {s[2]} kernels, {s[3]:.3f} ms idle")' "$1"
}
LOOM_OPENCL_PROFILE=1 LOOM_LOG=info $loom bench model -m $m --backend opencl --prompt 512 --gen 2 2> "$out/prof-prompt.log" | grep prompt
echo "== prompt 512, per node (rows 512)"; summary 512 < "$out/prof-prompt.log"
LOOM_OPENCL_PROFILE=1 LOOM_LOG=info $loom bench model -m $m --backend opencl --prompt 16 --gen 8 2> "$out/prof-decode.log" | grep decode
echo "== decode, per node (rows 1)"; summary 1 < "$out/prof-decode.log"
