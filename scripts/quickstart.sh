#!/usr/bin/env bash
# Quick start: install the build dependencies, build, then run the main job:
#  1. list the backends and check every op of the default backend against the
#     float64 reference;
#  2. write a synthetic Qwen2.5-0.5B-shaped AWQ checkpoint (random weights in
#     the publisher's layout, with the Qwen2 tokenizer);
#  3. generate with it on every available backend (speed per backend);
#  4. `loom check model`: every backend against the float64 reference.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
[ -d build ] || meson setup build --buildtype=release
ninja -C build
loom=build/tools/loom
$loom backends
$loom check ops
model=build/synth-qwen2.5-0.5b-awq
[ -f $model/model.safetensors ] ||
  $loom synth --preset qwen2.5-0.5b --awq --tokenizer tests/data/qwen2-tokenizer/tokenizer.json --out $model
$loom info -m $model
backends=$($loom backends --json | python3 -c '
import json, sys
print(" ".join(b["name"] for b in json.load(sys.stdin)["backends"] if b["available"]))')
for b in $backends; do
  echo "== generation on $b (random weights: the text is noise; the speed is real)"
  $loom run -m $model --backend "$b" --chat -p "Write a haiku about looms." -n 16
done
$loom check model -m $model
