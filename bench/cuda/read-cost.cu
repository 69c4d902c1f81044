// read-cost.cu — what reading a decode step's logits back to the host costs on GPU 0,
// the ways a backend can do it: the error word and then the logits by cudaMemcpy into
// pageable memory (two synchronous copies), both by cudaMemcpyAsync into pinned memory
// and one stream sync (then a memcpy on to the caller's pageable memory, whole or chunk
// by chunk while the next chunk is in flight). Medians of 200, after a kernel that
// writes the logits (as a step's last kernel would).
//   nvcc -O2 -o read-cost read-cost.cu && ./read-cost
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <cuda_runtime.h>
#include <vector>

__global__ void touch(float *y, int n)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) y[i] = (float)i;
}

static double now_us()
{
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int main()
{
    const int n = 151936; /* Qwen2.5's vocabulary: one token's logits */
    const size_t bytes = n * sizeof(float);
    float *d_y, *h_pin, *h_page = (float *)malloc(bytes);
    int *d_err, *h_err, err_page[4];
    if (cudaMalloc(&d_y, bytes) || cudaMalloc(&d_err, 16) || cudaMallocHost(&h_pin, bytes) || cudaMallocHost(&h_err, 16))
        return 1;
    cudaMemset(d_err, 0, 16);
    memset(h_page, 1, bytes);
    cudaStream_t s;
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    cudaEvent_t ev[8];
    for (auto &e : ev) cudaEventCreateWithFlags(&e, cudaEventDisableTiming);
    const char *what[] = {"error word + logits, pageable, synchronous", "logits alone, pageable, synchronous",
                          "error word + logits, pinned, one sync", "the same + memcpy to pageable",
                          "the same, 4 chunks, memcpy of each while the next is in flight"};
    for (int v = 0; v < 5; v++) {
        std::vector<double> t;
        for (int r = 0; r < 220; r++) {
            touch<<<132, 256, 0, s>>>(d_y, n);
            cudaStreamSynchronize(s);
            touch<<<132, 256, 0, s>>>(d_y, n); /* the step's last kernel, still running as the read is asked for */
            double t0 = now_us();
            if (v <= 1) {
                cudaStreamSynchronize(s);
                if (v == 0) cudaMemcpy(err_page, d_err, 16, cudaMemcpyDeviceToHost);
                cudaMemcpy(h_page, d_y, bytes, cudaMemcpyDeviceToHost);
            } else if (v <= 3) {
                cudaMemcpyAsync(h_err, d_err, 16, cudaMemcpyDeviceToHost, s);
                cudaMemcpyAsync(h_pin, d_y, bytes, cudaMemcpyDeviceToHost, s);
                cudaStreamSynchronize(s);
                if (v == 3) memcpy(h_page, h_pin, bytes);
            } else {
                const size_t c = bytes / 4;
                cudaMemcpyAsync(h_err, d_err, 16, cudaMemcpyDeviceToHost, s);
                for (int i = 0; i < 4; i++) {
                    cudaMemcpyAsync((char *)h_pin + i * c, (char *)d_y + i * c, c, cudaMemcpyDeviceToHost, s);
                    cudaEventRecord(ev[i], s);
                }
                for (int i = 0; i < 4; i++) {
                    cudaEventSynchronize(ev[i]);
                    memcpy((char *)h_page + i * c, (char *)h_pin + i * c, c);
                }
            }
            if (r >= 20) t.push_back(now_us() - t0);
        }
        std::sort(t.begin(), t.end());
        printf("read %zu bytes back, %s: %.1f us (median; 10%% %.1f, 90%% %.1f)\n", bytes, what[v], t[t.size() / 2],
               t[t.size() / 10], t[t.size() * 9 / 10]);
    }
    return cudaGetLastError() != cudaSuccess;
}
