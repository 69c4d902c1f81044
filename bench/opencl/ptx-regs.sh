#!/usr/bin/env bash
# On the GPU machine: registers and spills of the OpenCL kernels whose names match
# $1 (an extended regex), from the two program binaries NVIDIA's driver cached last
# (the main program and the tensor-core decode GEMVs'; PTX after loom's header),
# assembled by ptxas for sm_90; further arguments go to ptxas (the driver's
# -cl-nv-maxrregcount=N, which the GEMVs' program is built with, is --maxrregcount N).
#   bash bench/opencl/ptx-regs.sh '(attn_|awq_gemv_tc_1)' [--maxrregcount 80]
set -uo pipefail
re=$1
shift
bins=$(ls -t "${LOOM_CACHE_DIR:-$HOME/.cache/loom}"/opencl/*.bin 2>/dev/null | head -2)
[ -n "$bins" ] || { echo "no cached OpenCL program"; exit 1; }
for bin in $bins; do
  python3 -c 'import sys; d = open(sys.argv[1], "rb").read(); i = d.find(b"//")
open("/tmp/loom.ptx", "wb").write(d[i:].split(b"\0")[0])' "$bin"
  /usr/local/cuda/bin/ptxas -arch=sm_90 -v "$@" /tmp/loom.ptx -o /tmp/loom.cubin 2>&1 |
    grep -A4 -E "Compiling entry function '$re" | grep -E "entry|registers|spill" |
    sed 's/ptxas info *: //' | paste - - - | sed 's/Compiling entry function//; s/for .sm_90.//' | tr -s ' \t' ' '
done
