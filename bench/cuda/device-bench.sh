#!/usr/bin/env bash
# On the GPU machine: build loom, measure the copy roofline, then `loom bench
# model` for synthetic Qwen2.5 checkpoints on the CUDA backend (graphs on and
# off). Logs under $1 (default /tmp/out). Run from the repository root with
# .deps carried (see scripts/device-env.sh):
#   bash bench/cuda/device-bench.sh $OUT
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
bench $m05 "qwen2.5-0.5b AWQ"
bench $m05f "qwen2.5-0.5b bf16"
( time $loom synth --preset qwen2.5-7b --awq --out $m7 ) 2>&1 | grep real
bench $m7 "qwen2.5-7b AWQ"
