#!/usr/bin/env bash
# Install what loom's build and tests need (Debian/Ubuntu). Skips apt-get when
# everything is already there.
set -euo pipefail
pkgs=(meson ninja-build gcc pkg-config python3 libopenblas-dev libcjson-dev check libsubunit-dev
      libpcre2-dev libutf8proc-dev clang
      ocl-icd-opencl-dev opencl-headers pocl-opencl-icd
      libvulkan-dev glslc mesa-vulkan-drivers vulkan-validationlayers)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "loom: installing ${missing[*]}"
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
