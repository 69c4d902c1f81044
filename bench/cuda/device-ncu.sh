#!/usr/bin/env bash
# On the GPU machine: Nsight Compute on single AWQ GEMV cases of kbench (one
# launch each, after the correctness launches), the sections that say where a
# memory-bound kernel loses its bandwidth. Logs under $1. NCU_SOURCE=1: also each case's
# per-SASS table ($OUT/src_<case>.csv) summarised by ncu-source.py (its regions: loop bodies,
# per-warp code; their instructions, stall reasons, opcodes).
# Usage: [NCU_SOURCE=1] bash bench/cuda/device-ncu.sh $OUT ["7b down" "7b o" ...]
set -uo pipefail
out=${1:-/tmp/out}; shift
mkdir -p "$out"
. bench/cuda/device-build.sh
build_kbench
[ $# -gt 0 ] || set -- "7b down" "7b o" "7b gate/up" "7b qkv"
for c in "$@"; do
  name=$(echo "$c" | tr -c 'a-z0-9\n' '_') f="$out/ncu_$name.txt"
  /tmp/kbench --only "$c" | tee -a "$out/kbench_only.txt"
  ncu --kernel-name-base demangled --kernel-name regex:"awq_gemv_kernel" --launch-skip 4 --launch-count 1 \
    --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis \
    --section Occupancy --section LaunchStats --section SourceCounters \
    /tmp/kbench --only "$c" > "$f" 2>&1
  if [ "${NCU_SOURCE:-0}" = 1 ]; then
    ncu --kernel-name-base demangled --kernel-name regex:"awq_gemv_kernel" --launch-skip 4 --launch-count 1 \
      --section SourceCounters --import-source yes -f -o /tmp/ncu_src /tmp/kbench --only "$c" > /dev/null 2>&1
    ncu -i /tmp/ncu_src.ncu-rep --page source --csv --print-source sass > "$out/src_$name.csv" 2>&1
    python3 bench/cuda/ncu-source.py "$out/src_$name.csv"
  fi
  echo "== $c"; grep -E "Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Theoretical Occupancy|Issued Ipc|No Eligible|Warp Cycles Per Issued|Registers Per|Block Limit|Stall|L1/TEX Hit|L2 Hit" "$f" | head -40
done
