# Sourced by the bench/cuda/device-*.sh scripts on the GPU machine: the CUDA
# toolchain on PATH and the two builds they share. Logs go under $out.
export PATH=/usr/local/cuda/bin:$PATH

# loom, release, CUDA only, in /tmp/build (again: an incremental build)
build_loom() {
  { [ -f /tmp/build/build.ninja ] ||
    meson setup /tmp/build --buildtype=release -Dtests=disabled -Dvulkan=disabled -Dopencl=disabled > "$out/setup.log" 2>&1; } &&
    ninja -C /tmp/build > "$out/build.log" 2>&1 || { tail -30 "$out/setup.log" "$out/build.log"; return 1; }
}

# synth_awq PRESET DIR: loom (built unless /tmp/build has it) and in DIR a synthetic AWQ
# checkpoint of PRESET, made once
synth_awq() {
  [ -x /tmp/build/tools/loom ] || build_loom || return 1
  [ -d "$2" ] || /tmp/build/tools/loom synth --preset "$1" --awq --out "$2" > /dev/null
}

# /tmp/kbench, linked with cuBLAS (the prefill baseline): the toolkit's, else the one
# PyTorch's wheels bring
build_kbench() {
  local cublas=-lcublas d lib
  if ! ls /usr/local/cuda/lib64/libcublas.so* > /dev/null 2>&1; then
    d=$(python3 -c 'import nvidia.cublas, os; print(os.path.dirname(nvidia.cublas.__file__))' 2>/dev/null)
    lib=$(ls "$d"/lib/libcublas.so.* 2>/dev/null | head -1)
    if [ -n "$lib" ]; then cublas="-I$d/include $lib -Xlinker -rpath=$d/lib"; else echo "kbench: no cuBLAS found"; fi
  fi
  nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Icore -Ibackends/cuda -o /tmp/kbench \
    bench/cuda/kbench.cu backends/cuda/k_matmul.cu backends/cuda/k_gemm.cu $cublas 2>&1 | grep -v deprecated
}
