#!/usr/bin/env bash
# Quick start: install the build dependencies, build, then run the main job on
# the default backend (LOOM_BACKEND, else the best available): list backends,
# check every op against the float64 reference, run a synthetic
# Qwen2.5-0.5B-shaped AWQ model, and benchmark the CPU kernels.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
[ -d build ] || meson setup build --buildtype=release
ninja -C build
loom=build/tools/loom
$loom backends
$loom check ops
model=build/synth-qwen2.5-0.5b-awq
[ -f $model/model.safetensors ] || $loom synth --preset qwen2.5-0.5b --awq --out $model
$loom info -m $model
$loom logits -m $model --tokens 9707,11,1879,0 --out build/logits.f32
echo "logits of 4 tokens written to build/logits.f32"
$loom bench kernels
