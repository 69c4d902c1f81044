// roofline.cu — the device-to-device copy bandwidth of GPU 0 (the decode
// roofline for `loom bench model`): 1 GiB cudaMemcpyAsync D2D, 20 timed
// repetitions after a warm-up, median; counts bytes read + bytes written.
//   nvcc -O2 -o roofline roofline.cu && ./roofline
#include <algorithm>
#include <cstdio>
#include <vector>

#include <cuda_runtime.h>

#define CHECK(x)                                                                   \
    do {                                                                           \
        cudaError_t e_ = (x);                                                      \
        if (e_ != cudaSuccess) {                                                   \
            fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e_));             \
            return 1;                                                              \
        }                                                                          \
    } while (0)

int main()
{
    const size_t n = (size_t)1 << 30;
    void *a, *b;
    CHECK(cudaMalloc(&a, n));
    CHECK(cudaMalloc(&b, n));
    CHECK(cudaMemset(a, 1, n));
    cudaEvent_t t0, t1;
    CHECK(cudaEventCreate(&t0));
    CHECK(cudaEventCreate(&t1));
    CHECK(cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice));
    std::vector<float> ms;
    for (int i = 0; i < 20; i++) {
        CHECK(cudaEventRecord(t0));
        CHECK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice));
        CHECK(cudaEventRecord(t1));
        CHECK(cudaEventSynchronize(t1));
        float m;
        CHECK(cudaEventElapsedTime(&m, t0, t1));
        ms.push_back(m);
    }
    std::sort(ms.begin(), ms.end());
    double med = ms[ms.size() / 2];
    cudaDeviceProp p;
    CHECK(cudaGetDeviceProperties(&p, 0));
    printf("roofline: %s device-to-device copy %.1f GB/s (read + write, 1 GiB, median of 20)\n", p.name,
           2.0 * n / (med * 1e-3) / 1e9);
    return 0;
}
