#!/usr/bin/env bash
# On the GPU machine: every kernel of a few 7B AWQ decode steps under Nsight
# Compute (duration only), summed per kernel and per token, beside the token
# time `loom bench model` measures without the profiler: where a decode step's
# time goes, and how much of it is between kernels (each kernel runs alone under
# the profiler: no overlap from programmatic dependent launch). Carry .deps.
# Usage: bash bench/cuda/device-decode-ncu.sh $OUT [preset]
set -uo pipefail
out=${1:-/tmp/out}
preset=${2:-qwen2.5-7b}
mkdir -p "$out"
. scripts/device-env.sh
. bench/cuda/device-build.sh
loom=/tmp/build/tools/loom m=/tmp/ncu_$preset
synth_awq $preset $m || exit 1
$loom bench model -m $m --backend cuda --prompt 1 --gen 32 | grep decode
gen=4
# caches kept warm and clocks as they run (ncu flushes caches and locks base clocks by default)
LOOM_CUDA_GRAPHS=0 ncu --csv --metrics gpu__time_duration.sum --print-units base --cache-control none --clock-control none \
  $loom bench model -m $m --backend cuda --prompt 1 --gen $gen > "$out/decode_ncu.csv" 2> "$out/decode_ncu.err"
python3 - "$out/decode_ncu.csv" <<'PY'
import csv, sys, re, collections
rows = [r for r in csv.reader(l for l in open(sys.argv[1]) if l.startswith('"'))]
hdr = rows[0]; rows = rows[1:]
ki, vi = hdr.index("Kernel Name"), hdr.index("Metric Value")
t = collections.OrderedDict(); n = collections.Counter()
for r in rows:
    k = re.sub(r"\(.*", "", r[ki])[:60]
    t[k] = t.get(k, 0) + float(r[vi].replace(",", "")); n[k] += 1
# steps: launches of the rarest kernel that runs every step (the load-time repack and the
# device-setup probe are left out)
per = {k: v for k, v in n.items() if "repack" not in k and "probe" not in k}
steps = min(per.values())
total = sum(t[k] for k in per) / steps
print(f"{len(rows)} kernels, {steps} steps; kernel time per step {total/1e3:.1f} us")
for k, v in sorted(t.items(), key=lambda kv: -kv[1]):
    print(f"  {v/steps/1e3:9.1f} us/step {n[k]/steps:6.1f} launches/step {v/n[k]/1e3:8.2f} us each  {k}")
PY
