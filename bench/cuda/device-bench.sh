#!/usr/bin/env bash
# On the GPU machine: build loom, measure the copy roofline, then `loom bench
# model` for synthetic Qwen2.5 checkpoints on the CUDA backend (graphs on and
# off). Logs under $1 (default /tmp/out). Run from the repository root with
# .deps carried (see scripts/device-env.sh):
#   bash bench/cuda/device-bench.sh $OUT        0.5B AWQ + bf16, 7B AWQ (~6 min)
#   bash bench/cuda/device-bench.sh $OUT big    7B bf16 (the AWQ-vs-16-bit ratio), 7B AWQ at
#                                                32K context, 32B AWQ (~9 min, ~40 GB of disk)
set -uo pipefail
out=${1:-/tmp/out}
mkdir -p "$out"
. scripts/device-env.sh
meson setup /tmp/build --buildtype=release -Dtests=disabled -Dvulkan=disabled > "$out/setup.log" 2>&1 || { tail -30 "$out/setup.log"; exit 1; }
ninja -C /tmp/build > "$out/build.log" 2>&1 || { tail -30 "$out/build.log"; exit 1; }
nvcc -O2 -o /tmp/roofline bench/cuda/roofline.cu && /tmp/roofline | tee "$out/roofline.txt"
loom=/tmp/build/tools/loom
$loom backends | grep -E "^[a-z]|selected|status"
m05=/tmp/q05awq m05f=/tmp/q05f16 m7=/tmp/q7awq
$loom synth --preset qwen2.5-0.5b --awq --out $m05 2>/dev/null
$loom synth --preset qwen2.5-0.5b --out $m05f 2>/dev/null
# decode after a 128-token prompt (graphs on, then off), prompt speed at 512,
# decode after 2048 positions
bench() { # model, label
  echo "== $2"
  $loom bench model -m $1 --backend cuda --prompt 128 --gen 128 | grep -E "decode|traffic"
  LOOM_CUDA_GRAPHS=0 $loom bench model -m $1 --backend cuda --prompt 128 --gen 128 | grep decode | sed 's/^ */  no CUDA graph: /'
  $loom bench model -m $1 --backend cuda --prompt 512 --gen 2 | grep prompt
  $loom bench model -m $1 --backend cuda --prompt 512 --gen 64 --ctx 2048 | grep -E "decode|traffic"
}
synth() { ( time $loom synth --preset "$@" ) 2>&1 | grep -E "real|error"; }
if [ "${2:-}" = big ]; then
  synth qwen2.5-7b --awq --out $m7
  synth qwen2.5-7b --out /tmp/q7bf16
  for m in $m7 /tmp/q7bf16; do
    echo "== $m: decode after a 128-token prompt"
    $loom bench model -m $m --backend cuda --prompt 128 --gen 64 | grep -E "decode|traffic"
  done
  rm -rf /tmp/q7bf16
  echo "== 7B AWQ, decode after 32768 positions"
  $loom bench model -m $m7 --backend cuda --prompt 512 --gen 32 --ctx 32768 | grep -E "decode|traffic"
  synth qwen2.5-32b --awq --out /tmp/q32awq
  echo "== 32B AWQ"
  $loom bench model -m /tmp/q32awq --backend cuda --prompt 128 --gen 64 | grep -E "decode|traffic"
  $loom bench model -m /tmp/q32awq --backend cuda --prompt 512 --gen 2 | grep prompt
  exit 0
fi
bench $m05 "qwen2.5-0.5b AWQ"
bench $m05f "qwen2.5-0.5b bf16"
synth qwen2.5-7b --awq --out $m7
bench $m7 "qwen2.5-7b AWQ"
