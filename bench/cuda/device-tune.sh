#!/usr/bin/env bash
# On the GPU machine: build loom (release, CUDA), check it, and time the
# pieces: kbench (each fused GEMV vs the copy roofline, each prefill GEMM vs
# cuBLAS), `loom check ops` and
# `loom check model` on CUDA, then `loom bench model` on synthetic 0.5B and 7B
# AWQ checkpoints, with an nsys kernel summary of the 7B decode when nsys is
# there. Logs under $1. Carry .deps. Usage: bash bench/cuda/device-tune.sh $OUT
set -uo pipefail
out=${1:-/tmp/out}
mkdir -p "$out"
. scripts/device-env.sh
. bench/cuda/device-build.sh
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,utilization.gpu --format=csv,noheader
build_loom &
lb=$!
build_kbench
wait $lb || exit 1
/tmp/kbench ${KBENCH_ARGS:-} | tee "$out/kbench.txt"
loom=/tmp/build/tools/loom
$loom check ops --backend cuda > "$out/check_ops.txt" 2>&1; echo "check ops: exit $? $(tail -1 "$out/check_ops.txt")"
grep FAIL "$out/check_ops.txt" | head
for m in tests/data/golden/*/; do
  $loom check model --backends cpu,cuda -m "$m" > "$out/check_model_$(basename "$m").txt" 2>&1
  echo "check model $(basename "$m"): exit $? $(grep -iE "nmse|greedy" "$out/check_model_$(basename "$m").txt" | tr '\n' ' ' | cut -c1-200)"
done
m05=/tmp/q05awq m7=/tmp/q7awq
$loom synth --preset qwen2.5-0.5b --awq --out $m05 > /dev/null 2>&1
$loom synth --preset qwen2.5-7b --awq --out $m7 > /dev/null 2>&1
for m in $m05 $m7; do
  echo "== $m"
  $loom bench model -m $m --backend cuda --prompt 128 --gen 128 | grep -E "decode|traffic|prompt"
  LOOM_CUDA_GRAPHS=0 $loom bench model -m $m --backend cuda --prompt 128 --gen 64 | grep decode | sed 's/^ */  no CUDA graph: /'
  LOOM_CUDA_PDL=0 $loom bench model -m $m --backend cuda --prompt 128 --gen 64 | grep decode | sed 's/^ */  no PDL: /'
  LOOM_CUDA_FUSE=0 $loom bench model -m $m --backend cuda --prompt 128 --gen 64 | grep decode | sed 's/^ */  no fusion: /'
done
if command -v nsys > /dev/null; then
  nsys profile -o /tmp/prof --force-overwrite true $loom bench model -m $m7 --backend cuda --prompt 128 --gen 64 > /dev/null 2>&1
  nsys stats --report cuda_gpu_kern_sum --format csv /tmp/prof.nsys-rep 2>/dev/null > "$out/nsys_kern.csv"
  python3 - "$out/nsys_kern.csv" <<'PY'
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 8]
hdr = rows[0]; rows = rows[1:]
print("nsys: time%  total_ms  calls  avg_us  kernel")
for r in rows[:14]:
    print(f"  {r[0]:>5} {float(r[1])/1e6:9.2f} {r[2]:>6} {float(r[3])/1e3:8.2f}  {r[-1][:90]}")
PY
else
  echo "(no nsys)"
fi
