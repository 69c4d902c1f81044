#!/usr/bin/env bash
# On the GPU machine: Vulkan (NVIDIA driver) and OpenCL (NVIDIA OpenCL) backends:
# `loom check ops`, then decode and prompt speed on synthetic Qwen2.5 AWQ
# checkpoints beside the copy roofline. Carry .deps, .gl (the libvulkan1 .deb)
# and .vkplugin (libloom-vulkan.so built on a machine with glslc):
#   bash bench/device-backends.sh $OUT
set -uo pipefail
out=${1:-/tmp/out}
mkdir -p "$out"
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
mkdir -p /etc/OpenCL/vendors && echo libnvidia-opencl.so.1 > /etc/OpenCL/vendors/nvidia.icd
. scripts/device-env.sh
meson setup /tmp/build --buildtype=release -Dtests=disabled -Dvulkan=disabled > "$out/setup.log" 2>&1 || { tail -30 "$out/setup.log"; exit 1; }
ninja -C /tmp/build > "$out/build.log" 2>&1 || { tail -30 "$out/build.log"; exit 1; }
export LOOM_PLUGIN_PATH=$PWD/.vkplugin
nvcc -O2 -o /tmp/roofline bench/cuda/roofline.cu && /tmp/roofline
loom=/tmp/build/tools/loom
$loom backends | grep -E "^[a-z]|:[0-9] |status"
for b in vulkan opencl; do  # opencl: its GPU device, not PoCL
  $loom check ops --backend $b > "$out/check-$b.txt" 2>&1; echo "check ops $b: $(tail -1 "$out/check-$b.txt")"
done
$loom synth --preset qwen2.5-0.5b --awq --out /tmp/q05awq 2>/dev/null
$loom synth --preset qwen2.5-7b --awq --out /tmp/q7awq 2>/dev/null
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for m in /tmp/q05awq /tmp/q7awq; do
  for b in vulkan opencl; do
    echo "== $m on $b"
    timeout 120 $loom bench model -m $m --backend $b --prompt 128 --gen 64 | grep -E "decode|traffic"
    timeout 120 $loom bench model -m $m --backend $b --prompt 512 --gen 2 | grep prompt
  done
done
$loom check model -m /tmp/q05awq --backends vulkan,opencl -n 16 2>&1 | tail -5
