// phases.cu — a decode step's structure on CUDA, without its arithmetic: what the kernel boundaries
// of loom's decode cost, what one persistent kernel would save, and the floor that the chain of
// dependent phases sets on a small model's step (issue 4's 0.5B "not launch-bound"; the same
// question bench/vulkan/phases.c asks of Vulkan).
//
// A Qwen2.5 decode step at 128 positions as phases that only move bytes: per layer q/k/v, attention
// (the KV rows, one block per query head), o, gate/up and down with their AWQ bytes (packed int4,
// f16 scales, int4 zeros), then lm_head (f16). Every phase has its own memory, so nothing stays in
// L2 from one step to the next. With dependencies on, a phase's blocks first read the whole vector
// the phase before wrote (its x: the hidden state, q, or the MLP's rows; through L2) and then write
// their share of the phase's output, as a GEMV must. Variants, each timed as a CUDA graph (median
// of 30 replays):
//   chain        one kernel per phase, programmatic dependent launch: each block lets the next
//                kernel launch as it starts and loads its first words before griddepcontrol.wait
//                (weights need nothing from the phase before)
//   chain-nopdl  the same without PDL
//   chain-late   chain, each block letting the next kernel launch only after its stream
//   chain-mix    chain with PDL only after phases of under 16 MB
//   pers         one cooperative kernel; blocks meet at a grid barrier after each phase and load
//                their first words of the next phase before it
//   pers-nodep   pers without the vector reads and writes (vk-phases' pers+ahead)
//   one          one kernel streaming all the step's bytes: the rate they could move at
//   hop-chain    chain with no weights: only the dependent reads and writes, kernel by kernel
//   hop-nopdl    the same without PDL
//   hop-pers     the same in one persistent kernel: the floor of the step's dependency chain there
//   barriers     pers with nothing but its grid barriers (barriers-acq: polled with acquire loads)
// H100, 2026-11-25: docs/PERF.md, CUDA, seventeenth session.
//
//   nvcc -O2 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -o /tmp/phases bench/cuda/phases.cu
//   /tmp/phases [7b] [0.5b] [-b blocks an SM, 4]
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <cuda_runtime.h>

#include "roofline.cuh"

#define CK(x)                                                                                      \
    do {                                                                                           \
        cudaError_t e_ = (x);                                                                      \
        if (e_) {                                                                                  \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));   \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

enum { THREADS = 256, U = 4 }; /* U: 16-byte words in flight per thread */

struct phase {
    size_t off, n; /* uint4 words of the weight buffer */
    int    nb;     /* blocks that stream it */
    int    kin;    /* floats of the vector it reads (written by the phase before) */
    int    nout;   /* floats it writes */
};

enum { F_DEP = 1, F_NOW = 2, F_LATE = 4 }; /* dependent vector reads and writes; no weights; chain: PDL trigger
                                           * after the block's stream, not at its start */

__device__ unsigned sink;

/* The xor of words i, i + stride, ... below n, U of them in flight. */
static __device__ unsigned stream(const uint4 *w, size_t n, size_t i, size_t stride)
{
    unsigned acc = 0;
    for (; i < n; i += U * stride) {
        uint4 t[U];
#pragma unroll
        for (int u = 0; u < U; u++) t[u] = i + u * stride < n ? __ldcs(w + i + u * stride) : uint4{};
#pragma unroll
        for (int u = 0; u < U; u++) acc ^= t[u].x ^ t[u].y ^ t[u].z ^ t[u].w;
    }
    return acc;
}

/* The thread's first U words of phase p (block g of nb): loaded before the wait. */
static __device__ void first_words(const uint4 *w, const phase &p, int g, int nb, int flags, uint4 (&v)[U])
{
    const size_t stride = (size_t)nb * THREADS, i = (size_t)g * THREADS + threadIdx.x;
#pragma unroll
    for (int u = 0; u < U; u++)
        v[u] = !(flags & F_NOW) && g < p.nb && i + u * stride < p.n ? __ldcs(w + p.off + i + u * stride) : uint4{};
}

/* After the wait: read the whole input vector (other SMs wrote it: through L2), stream the rest of
 * the block's words, write the block's share of the output. */
static __device__ unsigned finish(const uint4 *w, const phase &p, int g, int nb, int flags, const uint4 (&v)[U],
                                  const float *xin, float *xout)
{
    unsigned acc = 0;
#pragma unroll
    for (int u = 0; u < U; u++) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
    if (g >= p.nb) return acc;
    if (flags & F_DEP) {
        __shared__ float part[THREADS / 32];
        float s = 0.0f;
        for (int k = threadIdx.x; k < p.kin; k += THREADS) s += __ldcg(xin + k);
        for (int o = 16; o; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = s;
        __syncthreads(); /* the block has all of x before it multiplies */
        acc ^= __float_as_uint(part[threadIdx.x & 7]);
    }
    if (!(flags & F_NOW)) { /* past the first words */
        const size_t stride = (size_t)nb * THREADS;
        acc ^= stream(w + p.off, p.n, (size_t)g * THREADS + threadIdx.x + U * stride, stride);
    }
    if (flags & F_DEP) {
        const int per = (p.nout + p.nb - 1) / p.nb;
        for (int k = g * per + threadIdx.x; k < (g + 1) * per && k < p.nout; k += THREADS)
            xout[k] = (float)(acc & 0xff) * 1e-30f;
    }
    return acc;
}

/* One phase as its own kernel (chain): PDL trigger at once, first words, wait, the rest. */
__global__ void __launch_bounds__(THREADS) phase_kernel(const uint4 *w, phase p, int flags, const float *xin, float *xout)
{
    if (!(flags & F_LATE)) asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
    uint4 v[U];
    first_words(w, p, blockIdx.x, gridDim.x, flags, v);
    asm volatile("griddepcontrol.wait;" ::: "memory");
    if (finish(w, p, blockIdx.x, gridDim.x, flags, v, xin, xout) == 0x9e3779b9u) sink = 1;
    if (flags & F_LATE) asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}

/* Every phase in one kernel: a grid barrier between phases, the next phase's first words loaded
 * before it. The barrier: a counter every block's thread 0 adds to after a fence, then polls.
 * ACQ polls with acquire loads (each one orders the block's later reads); else relaxed loads, and
 * one fence once the count is reached. */
template <bool ACQ> static __device__ void grid_barrier(unsigned *ctr, unsigned target)
{
    __syncthreads();
    if (threadIdx.x == 0) {
        __threadfence(); /* the block's writes, seen through the barrier above, before its arrival */
        unsigned c;
        if (ACQ) {
            asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(ctr) : "memory");
            do asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(c) : "l"(ctr) : "memory");
            while (c < target);
        } else {
            atomicAdd(ctr, 1u);
            do asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];" : "=r"(c) : "l"(ctr) : "memory");
            while (c < target);
            __threadfence();
        }
    }
    __syncthreads();
}

template <bool ACQ>
__global__ void __launch_bounds__(THREADS) persistent_kernel(const uint4 *w, const phase *ph, int n_phase, int flags,
                                                             float *vec, int vec_len, unsigned *ctr)
{
    const int g = blockIdx.x, ng = gridDim.x;
    extern __shared__ phase tab[]; /* the phase table, read once */
    for (int k = threadIdx.x; k < n_phase; k += THREADS) tab[k] = ph[k];
    __syncthreads();
    uint4 v[U];
    first_words(w, tab[0], g, min(tab[0].nb, ng), flags, v);
    unsigned acc = 0;
    for (int k = 0; k < n_phase; k++) {
        const float *xin = vec + (size_t)(k & 1) * vec_len;
        float *xout = vec + (size_t)((k + 1) & 1) * vec_len;
        acc ^= finish(w, tab[k], g, min(tab[k].nb, ng), flags, v, xin, xout);
        if (k + 1 < n_phase) first_words(w, tab[k + 1], g, min(tab[k + 1].nb, ng), flags, v);
        grid_barrier<ACQ>(ctr, (unsigned)(k + 1) * ng);
    }
    if (acc == 0x9e3779b9u) sink = 1;
}

/* All of the step's bytes in one launch. */
__global__ void __launch_bounds__(THREADS) one_kernel(const uint4 *w, size_t n)
{
    if (stream(w, n, (size_t)blockIdx.x * THREADS + threadIdx.x, (size_t)gridDim.x * THREADS) == 0x9e3779b9u) sink = 1;
}

struct shape {
    const char *name;
    int         L, H, I, hq, hkv, hd;
    long        V;
};

static size_t awq_bytes(long K, long N) { return K * N / 2 + K / 128 * N * 2 + K / 128 * N / 2; }

static std::vector<phase> step_phases(const shape &m, int ctx, int blocks, size_t *words)
{
    std::vector<phase> ph;
    size_t off = 0;
    auto add = [&](size_t bytes, int nb, int kin, int nout) {
        size_t n = (bytes + 15) / 16;
        ph.push_back(phase{off, n, nb, kin, nout});
        off += n;
    };
    const int kv = m.hkv * m.hd;
    for (int l = 0; l < m.L; l++) {
        add(awq_bytes(m.H, m.H + 2 * kv), blocks, m.H, m.H + 2 * kv); /* q/k/v */
        add((size_t)2 * kv * ctx * 2, m.hq, m.H, m.H);                /* attention: the f16 KV rows */
        add(awq_bytes(m.H, m.H), blocks, m.H, m.H);                   /* o */
        add(awq_bytes(m.H, 2L * m.I), blocks, m.H, m.I);              /* gate/up (swiglu: I out) */
        add(awq_bytes(m.I, m.H), blocks, m.I, m.H);                   /* down */
    }
    add((size_t)m.V * m.H * 2, blocks, m.H, (int)m.V); /* lm_head, f16 */
    *words = off;
    return ph;
}

static float median(std::vector<float> v)
{
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

/* Median ms of 30 replays of graph x (after 3). */
static float time_graph(cudaGraphExec_t x, cudaStream_t s, cudaEvent_t a, cudaEvent_t b)
{
    std::vector<float> ms;
    for (int r = 0; r < 33; r++) {
        cudaEventRecord(a, s);
        cudaGraphLaunch(x, s);
        cudaEventRecord(b, s);
        cudaEventSynchronize(b);
        float t = 0;
        cudaEventElapsedTime(&t, a, b);
        if (r >= 3) ms.push_back(t);
    }
    return median(ms);
}

static int run(const shape &m, int sm_count, int per_sm_want)
{
    const int blocks = per_sm_want * sm_count, ctx = 128;
    size_t words = 0;
    std::vector<phase> ph = step_phases(m, ctx, blocks, &words);
    const int n_phase = (int)ph.size();
    int vec_len = 0;
    for (const phase &p : ph) vec_len = std::max(vec_len, std::max(p.kin, p.nout));
    uint4 *w;
    float *vec;
    phase *d_ph;
    unsigned *ctr;
    CK(cudaMalloc(&w, words * 16));
    CK(cudaMemset(w, 0x5a, words * 16));
    CK(cudaMalloc(&vec, 2 * (size_t)vec_len * sizeof(float)));
    CK(cudaMemset(vec, 0, 2 * (size_t)vec_len * sizeof(float)));
    CK(cudaMalloc(&d_ph, ph.size() * sizeof(phase)));
    CK(cudaMemcpy(d_ph, ph.data(), ph.size() * sizeof(phase), cudaMemcpyHostToDevice));
    CK(cudaMalloc(&ctr, sizeof(unsigned)));
    int per_sm = 0;
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, persistent_kernel<false>, THREADS, ph.size() * sizeof(phase)));
    if (per_sm * sm_count < blocks) {
        fprintf(stderr, "phases: %d blocks of %d threads are not resident at once (%d an SM)\n", blocks, THREADS, per_sm);
        return 1;
    }
    cudaStream_t s;
    cudaEvent_t a, b;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    const double gb = words * 16 / 1e9;
    printf("\n%s: %d phases, %.3f GB a step (lm_head %.3f), %d blocks of %d threads\n", m.name, n_phase, gb,
           ph.back().n * 16 / 1e9, blocks, THREADS);
    printf("%-12s %10s %10s %14s\n", "variant", "ms a step", "GB/s", "us a phase over one");

    /* how a variant launches: a kernel per phase (with PDL, without, with PDL only after phases of
     * under 16 MB), one persistent kernel (its barrier polled with relaxed or acquire loads), one
     * kernel over all the bytes */
    enum { CHAIN, NOPDL, MIX, PERS, PERS_ACQ, ONE };
    struct variant {
        const char *name;
        int         kind, flags;
    } vs[] = {{"chain", CHAIN, F_DEP},           {"chain-nopdl", NOPDL, F_DEP},     {"chain-late", CHAIN, F_DEP | F_LATE},
              {"chain-mix", MIX, F_DEP},          {"pers", PERS, F_DEP},             {"pers-nodep", PERS, 0},
              {"one", ONE, 0},                    {"hop-chain", CHAIN, F_DEP | F_NOW}, {"hop-nopdl", NOPDL, F_DEP | F_NOW},
              {"hop-pers", PERS, F_DEP | F_NOW},  {"barriers", PERS, F_NOW},         {"barriers-acq", PERS_ACQ, F_NOW}};
    float one_ms = 0;
    for (const variant &v : vs) {
        cudaGraph_t g;
        cudaGraphExec_t x;
        CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
        if (v.kind == CHAIN || v.kind == NOPDL || v.kind == MIX) {
            for (int k = 0; k < n_phase; k++) {
                cudaLaunchAttribute at;
                at.id = cudaLaunchAttributeProgrammaticStreamSerialization;
                at.val.programmaticStreamSerializationAllowed = 1;
                cudaLaunchConfig_t c = {};
                c.gridDim = dim3(ph[k].nb), c.blockDim = dim3(THREADS), c.stream = s;
                c.attrs = &at, c.numAttrs = v.kind == CHAIN || (v.kind == MIX && k > 0 && ph[k - 1].n * 16 < 16000000) ? 1 : 0;
                const float *xin = vec + (size_t)(k & 1) * vec_len;
                float *xout = vec + (size_t)((k + 1) & 1) * vec_len;
                CK(cudaLaunchKernelEx(&c, phase_kernel, (const uint4 *)w, ph[k], v.flags, xin, xout));
            }
        } else if (v.kind == PERS || v.kind == PERS_ACQ) {
            CK(cudaMemsetAsync(ctr, 0, sizeof(unsigned), s));
            cudaLaunchAttribute at;
            at.id = cudaLaunchAttributeCooperative;
            at.val.cooperative = 1;
            cudaLaunchConfig_t c = {};
            c.gridDim = dim3(blocks), c.blockDim = dim3(THREADS), c.stream = s, c.attrs = &at, c.numAttrs = 1;
            c.dynamicSmemBytes = ph.size() * sizeof(phase);
            CK(cudaLaunchKernelEx(&c, v.kind == PERS_ACQ ? persistent_kernel<true> : persistent_kernel<false>, (const uint4 *)w, (const phase *)d_ph, n_phase, v.flags, vec,
                                  vec_len, ctr));
        } else {
            one_kernel<<<blocks, THREADS, 0, s>>>(w, words);
        }
        CK(cudaStreamEndCapture(s, &g));
        CK(cudaGraphInstantiate(&x, g, 0));
        float ms = time_graph(x, s, a, b);
        CK(cudaStreamSynchronize(s));
        CK(cudaGetLastError());
        if (v.kind == ONE) one_ms = ms;
        const bool weights = !(v.flags & F_NOW);
        printf("%-12s %10.3f %10.0f", v.name, ms, weights ? gb / (ms * 1e-3) : 0.0);
        if (one_ms > 0 && weights) printf(" %14.2f", (ms - one_ms) * 1e3 / n_phase);
        else if (!weights) printf(" %14.2f", ms * 1e3 / n_phase);
        printf("\n");
        CK(cudaGraphExecDestroy(x));
        CK(cudaGraphDestroy(g));
    }
    CK(cudaFree(w));
    CK(cudaFree(vec));
    CK(cudaFree(d_ph));
    CK(cudaFree(ctr));
    CK(cudaStreamDestroy(s));
    return 0;
}

int main(int argc, char **argv)
{
    const shape shapes[] = {{"7b", 28, 3584, 18944, 28, 4, 128, 152064}, {"0.5b", 24, 896, 4864, 14, 2, 64, 151936}};
    int dev, sm_count;
    CK(cudaGetDevice(&dev));
    CK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, dev));
    printf("roofline (device-to-device copy): %.1f GB/s\n", roofline_gbs());
    int per_sm = 4, named = 0; /* blocks an SM: "-b N" */
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-b") && i + 1 < argc) per_sm = atoi(argv[++i]);
        else named++;
    for (const shape &m : shapes) {
        bool want = !named;
        for (int i = 1; i < argc; i++) want = want || !strcmp(argv[i], m.name);
        if (want && run(m, sm_count, per_sm)) return 1;
    }
    printf("\nroofline (device-to-device copy): %.1f GB/s\n", roofline_gbs());
    return 0;
}
