# Sourced by the bench/opencl/device-*.sh scripts on the GPU machine (carry .deps):
# NVIDIA's OpenCL driver registered with the ICD loader, the carried packages on
# the paths, and build_ocl, loom built OpenCL-only. Logs go under $out.
mkdir -p "$out" /etc/OpenCL/vendors && echo libnvidia-opencl.so.1 > /etc/OpenCL/vendors/nvidia.icd
. scripts/device-env.sh

# build_ocl DIR [SRC [TAG]]: loom from SRC (this tree) in DIR, release, OpenCL only;
# logs setup$TAG.log and build$TAG.log
build_ocl() {
  local dir=$1 src=${2:-$PWD} tag=${3:-}
  { [ -d "$dir" ] || meson setup "$dir" "$src" --buildtype=release -Dtests=disabled -Dvulkan=disabled -Dcuda=disabled \
      > "$out/setup$tag.log" 2>&1; } &&
    ninja -C "$dir" > "$out/build$tag.log" 2>&1 || { tail -30 "$out/setup$tag.log" "$out/build$tag.log"; return 1; }
}
