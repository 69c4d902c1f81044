// l2-prefetch.cu — does pulling a layer's MLP weights into L2 while the latency-bound part of
// the layer runs (q/k/v, attention, o) shorten the decode step?
//
// A 7B AWQ decode layer's memory traffic, as kernels that only stream bytes: q/k/v (8.8 MB), a
// wait standing for attention (10 us, no traffic), o (6.4 MB), gate/up (72 MB, blocks taking
// 56 KB tiles in the order awq_gemv's blocks of work take them), down (36 MB). 28 layers, each
// with its own buffers, so nothing but the prefetch can leave a layer's bytes in L2. Variant
// pf = P MB: the q/k/v kernel's blocks, or the attention stand-in's, also issue
// cp.async.bulk.prefetch.L2 for the first P MB of the layer's gate/up (optionally with an
// evict_last policy). Prints the time per layer and gate/up's (one layer's, between events) for
// each P. H100, 2026-11-24: see docs/PERF.md, CUDA, fifteenth session (dropped).
//
//   nvcc -O2 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -o /tmp/l2pf bench/cuda/l2-prefetch.cu && /tmp/l2pf
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>

#include <cuda_runtime.h>

#define CK(x)                                                                                      \
    do {                                                                                           \
        cudaError_t e_ = (x);                                                                      \
        if (e_) {                                                                                  \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));   \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

__device__ unsigned sink;

// Thread 0 of each block prefetches the block's share of [pf, pf + pf_bytes) into L2.
__device__ void prefetch(const char *pf, size_t pf_bytes, int evict_last)
{
    if (pf_bytes && threadIdx.x == 0) {
        size_t share = (pf_bytes / gridDim.x + 15) & ~(size_t)15, lo = share * blockIdx.x;
        uint64_t pol = 0;
        if (evict_last) asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(pol));
        const size_t hi = lo + share < pf_bytes ? lo + share : pf_bytes;
        for (size_t o = lo; o < hi; o += 65536) {
            unsigned n = (unsigned)(hi - o < 65536 ? hi - o : 65536);
            if (evict_last)
                asm volatile("cp.async.bulk.prefetch.L2.global.L2::cache_hint [%0], %1, %2;" ::"l"(pf + o), "r"(n),
                             "l"(pol)
                             : "memory");
            else
                asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(pf + o), "r"(n) : "memory");
        }
    }
}

// Block b reads tiles b, b + grid, ... of `tile` bytes (16-byte loads, up to 4 in flight a
// thread), after prefetching its share of pf.
__global__ void __launch_bounds__(256) stream(const uint4 *p, size_t bytes, size_t tile, const char *pf,
                                              size_t pf_bytes, int evict_last)
{
    prefetch(pf, pf_bytes, evict_last);
    unsigned acc = 0;
    const size_t tiles = bytes / tile, per = tile / 16;
    for (size_t t = blockIdx.x; t < tiles; t += gridDim.x) {
        const uint4 *q = p + t * per;
        for (size_t i = threadIdx.x; i < per; i += 4 * blockDim.x) {
            uint4 v[4];
#pragma unroll
            for (int j = 0; j < 4; j++) v[j] = i + j * blockDim.x < per ? __ldcs(q + i + j * blockDim.x) : uint4{};
#pragma unroll
            for (int j = 0; j < 4; j++) acc ^= v[j].x ^ v[j].y ^ v[j].z ^ v[j].w;
        }
    }
    if (acc == 0x12345678u) sink = acc;
}

__global__ void wait_ns(unsigned ns, const char *pf, size_t pf_bytes, int evict_last)
{
    prefetch(pf, pf_bytes, evict_last);
    uint64_t t0, t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    do asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    while (t - t0 < ns);
}

struct layer {
    uint4 *qkv, *o, *gu, *down;
};

static const size_t MB = 1000000, QKV = 8800000, O = 6400000, GU = 72 * MB, DOWN = 36 * MB, TILE = 57344;

// where: 0, the q/k/v kernel prefetches; 1, the attention stand-in (32 blocks, as the 7B cluster
// kernel's).
static void run_layer(const layer &l, size_t pf, int evict_last, int where, cudaEvent_t g0, cudaEvent_t g1)
{
    const char *gu = (const char *)l.gu;
    stream<<<264, 256>>>(l.qkv, QKV, 4096, gu, where == 0 ? pf : 0, evict_last);
    wait_ns<<<32, 32>>>(10000, gu, where == 1 ? pf : 0, evict_last);
    stream<<<264, 256>>>(l.o, O, 4096, nullptr, 0, 0);
    if (g0) cudaEventRecord(g0);
    stream<<<396, 256>>>(l.gu, GU, TILE, nullptr, 0, 0);
    if (g1) cudaEventRecord(g1);
    stream<<<264, 256>>>(l.down, DOWN, 4096, nullptr, 0, 0);
}

int main()
{
    const int L = 28;
    std::vector<layer> ls(L);
    for (auto &l : ls) {
        CK(cudaMalloc(&l.qkv, QKV));
        CK(cudaMalloc(&l.o, O));
        CK(cudaMalloc(&l.gu, GU));
        CK(cudaMalloc(&l.down, DOWN));
        CK(cudaMemset(l.qkv, 1, QKV));
        CK(cudaMemset(l.o, 2, O));
        CK(cudaMemset(l.gu, 3, GU));
        CK(cudaMemset(l.down, 4, DOWN));
    }
    cudaEvent_t a, b, g0, g1;
    for (cudaEvent_t *e : {&a, &b, &g0, &g1}) CK(cudaEventCreate(e));
    printf("%-8s %-6s %-10s %12s %12s\n", "pf MB", "by", "policy", "us/layer", "gate/up us");
    const int pfs[] = {0, 8, 16, 24, 32, 40, 48, 0};
    for (int where = 0; where < 2; where++)
        for (int ev = 0; ev < 2; ev++)
            for (int pi : pfs) {
                if ((ev || where) && !pi) continue;
                std::vector<float> step, gu;
                for (int rep = 0; rep < 12; rep++) {
                    CK(cudaEventRecord(a));
                    for (int i = 0; i < L; i++) run_layer(ls[i], pi * MB, ev, where, i == L / 2 ? g0 : nullptr, i == L / 2 ? g1 : nullptr);
                    CK(cudaEventRecord(b));
                    CK(cudaEventSynchronize(b));
                    CK(cudaGetLastError());
                    float ms, mg;
                    CK(cudaEventElapsedTime(&ms, a, b));
                    CK(cudaEventElapsedTime(&mg, g0, g1));
                    if (rep >= 2) step.push_back(ms * 1000 / L), gu.push_back(mg * 1000);
                }
                std::sort(step.begin(), step.end()), std::sort(gu.begin(), gu.end());
                printf("%-8d %-6s %-10s %12.2f %12.2f\n", pi, where ? "attn" : "qkv", ev ? "evict_last" : "normal", step[step.size() / 2],
                       gu[gu.size() / 2]);
            }
    return 0;
}
