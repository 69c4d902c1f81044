// roofline.cuh — the device-to-device copy bandwidth of the current GPU, the
// decode roofline: 1 GiB cudaMemcpyAsync D2D, 20 timed repetitions after a
// warm-up, median; counts bytes read + bytes written. Returns GB/s, or a
// negative value (with the CUDA error printed) on failure.
#pragma once
#include <algorithm>
#include <cstdio>
#include <vector>

#include <cuda_runtime.h>

static double roofline_gbs()
{
    const size_t n = (size_t)1 << 30;
    void *a = nullptr, *b = nullptr;
    cudaEvent_t t0 = nullptr, t1 = nullptr;
    std::vector<float> ms;
    cudaError_t e;
    if ((e = cudaMalloc(&a, n)) || (e = cudaMalloc(&b, n)) || (e = cudaMemset(a, 1, n)) ||
        (e = cudaEventCreate(&t0)) || (e = cudaEventCreate(&t1)) ||
        (e = cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice)))
        goto done;
    for (int i = 0; i < 20; i++) {
        float m;
        if ((e = cudaEventRecord(t0)) || (e = cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice)) ||
            (e = cudaEventRecord(t1)) || (e = cudaEventSynchronize(t1)) || (e = cudaEventElapsedTime(&m, t0, t1)))
            goto done;
        ms.push_back(m);
    }
done:
    cudaFree(a), cudaFree(b);
    if (t0) cudaEventDestroy(t0);
    if (t1) cudaEventDestroy(t1);
    if (e) {
        fprintf(stderr, "roofline: %s\n", cudaGetErrorString(e));
        return -1;
    }
    std::sort(ms.begin(), ms.end());
    return 2.0 * n / (ms[ms.size() / 2] * 1e-3) / 1e9;
}
