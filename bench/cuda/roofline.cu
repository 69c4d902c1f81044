// roofline.cu — prints the device-to-device copy bandwidth of GPU 0 (the decode
// roofline for `loom bench model`; see roofline.cuh for what is counted).
//   nvcc -O2 -o roofline roofline.cu && ./roofline
#include "roofline.cuh"

int main()
{
    double gbs = roofline_gbs();
    cudaDeviceProp p;
    if (gbs < 0 || cudaGetDeviceProperties(&p, 0) != cudaSuccess) return 1;
    printf("roofline: %s device-to-device copy %.1f GB/s (read + write, 1 GiB, median of 20)\n", p.name, gbs);
    return 0;
}
