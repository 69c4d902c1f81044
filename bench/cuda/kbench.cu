// kbench.cu — the CUDA backend's matmul kernels in isolation: the decode GEMVs
// against the device-to-device copy bandwidth of the same run, and the prefill
// GEMMs against cuBLAS's dense f16 tensor-core rate for the same shapes, also
// measured in the run. For tuning on the GPU machine; `loom bench model` is the
// end-to-end figure.
//
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Icore -Ibackends/cuda -o kbench \
//        bench/cuda/kbench.cu backends/cuda/k_matmul.cu backends/cuda/k_gemm.cu -lcublas && ./kbench
//   ./kbench --awq      the 7B AWQ GEMVs at each block size, x as the launcher picks, staged per block or from global
//   ./kbench --gemm     the prefill GEMMs only (--gemm K N T: one shape)
//   ./kbench --only L   the AWQ GEMV case labelled L only (e.g. "7b down"; for ncu)
//   ./kbench --fit      plain AWQ GEMVs over a range of N at two K (time = fixed cost + bytes /
//                       rate: the fit separates them) and gate/up at whole and partial waves
//   KBENCH_PDL=1        launch every AWQ GEMV as a programmatic dependent, as decode does
//
// Each case: a random AWQ blob in the checkpoint's layout (or a random f16
// matrix), repacked by the backend's own launcher, enough copies that one
// rotation is > 4x the L2 cache (every call reads DRAM), 20 back-to-back calls
// between events, median of 7. Bandwidth counts the bytes the kernel must read
// (packed weight + scales/zeros, or the f16 matrix). Correctness: every output
// of the first copy against a float64 reference on the host (NMSE), and two
// runs compared bit for bit (the reductions are ordered).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "cuda_impl.h"
#include "roofline.cuh"

#define CHECK(x)                                                                                                     \
    do {                                                                                                             \
        cudaError_t e_ = (x);                                                                                        \
        if (e_ != cudaSuccess) {                                                                                     \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));                       \
            exit(1);                                                                                                 \
        }                                                                                                            \
    } while (0)

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd() { rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17; return (uint32_t)(rng >> 11); }
static float rndf() { return (float)(rnd() & 0xffffff) / 16777216.0f * 2.0f - 1.0f; }

template <typename F> static double time_ms(F launch, int copies)
{
    cudaEvent_t t0, t1;
    CHECK(cudaEventCreate(&t0));
    CHECK(cudaEventCreate(&t1));
    for (int i = 0; i < copies; i++) launch(i);
    CHECK(cudaDeviceSynchronize());
    std::vector<float> v;
    const int calls = 20;
    for (int r = 0; r < 7; r++) {
        CHECK(cudaEventRecord(t0));
        for (int i = 0; i < calls; i++) launch((r * calls + i) % copies);
        CHECK(cudaEventRecord(t1));
        CHECK(cudaEventSynchronize(t1));
        float m;
        CHECK(cudaEventElapsedTime(&m, t0, t1));
        v.push_back(m / calls);
    }
    CHECK(cudaGetLastError());
    std::sort(v.begin(), v.end());
    cudaEventDestroy(t0), cudaEventDestroy(t1);
    return v[v.size() / 2];
}

static double nmse(const std::vector<float> &y, const std::vector<double> &ref)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < y.size(); i++) {
        double d = (double)y[i] - ref[i];
        if (!std::isfinite(y[i])) return INFINITY;
        num += d * d, den += ref[i] * ref[i];
    }
    return num / (den > 0 ? den : 1);
}

static int g_sm;           // the device's SM count (the GEMV launcher picks its block size with it)
static const char *g_only; // --only: the one AWQ case to run
static bool g_pdl;         // KBENCH_PDL=1: AWQ GEMVs launched as programmatic dependents

// ---- AWQ ---------------------------------------------------------------------------------------
struct awq_host {
    int K, N;
    std::vector<uint32_t> qw, qz;
    std::vector<uint16_t> sc;
    std::vector<uint8_t> blob;
    double w(int k, int n) const // dequantised, from the checkpoint layout
    {
        static const int inv[8] = {0, 4, 1, 5, 2, 6, 3, 7};
        int c = n / 8, sh = 4 * inv[n % 8], g = k / 128, N8 = N / 8;
        int q = (qw[(size_t)k * N8 + c] >> sh) & 15, z = (qz[(size_t)g * N8 + c] >> sh) & 15;
        return (double)(q - z) * (double)__half2float(__ushort_as_half(sc[(size_t)g * N + n]));
    }
};

static awq_host make_awq(int K, int N)
{
    awq_host h{K, N, {}, {}, {}, {}};
    h.qw.resize((size_t)K * N / 8), h.qz.resize((size_t)K / 128 * N / 8), h.sc.resize((size_t)K / 128 * N);
    for (auto &v : h.qw) v = rnd();
    for (auto &v : h.qz) v = rnd();
    for (auto &v : h.sc) v = __half_as_ushort(__float2half(0.002f + 0.01f * fabsf(rndf())));
    size_t a = h.qw.size() * 4, b = h.qz.size() * 4, c = h.sc.size() * 2;
    h.blob.resize(a + b + c);
    memcpy(h.blob.data(), h.qw.data(), a), memcpy(h.blob.data() + a, h.qz.data(), b);
    memcpy(h.blob.data() + a + b, h.sc.data(), c);
    return h;
}

static cu_awq upload_awq(const awq_host &h)
{
    cu_awq w{CU_AWQ_MAGIC, h.K, h.N, nullptr, nullptr};
    size_t bytes = cu_awq_packed_bytes(h.K, h.N);
    void *blob;
    CHECK(cudaMalloc(&w.q, bytes));
    w.meta = cu_awq_at(h.K, h.N, w.q).meta;
    CHECK(cudaMalloc(&blob, h.blob.size()));
    CHECK(cudaMemcpy(blob, h.blob.data(), h.blob.size(), cudaMemcpyHostToDevice));
    CHECK(loom__cu_awq_repack(0, blob, &w));
    CHECK(cudaDeviceSynchronize());
    cudaFree(blob);
    return w;
}

static const char *epi_name(int e, bool nrm)
{
    return e == CU_EPI_SWIGLU ? (nrm ? "norm+gate+up+sw" : "gate+up+swiglu")
         : e == CU_EPI_ADD    ? (nrm ? "+resid+norm" : "+resid")
                              : (nrm ? "norm+plain" : "plain");
}

// One launch over n weights of the same K (epi as the backend fuses them).
// nrm: the step's rmsnorm in this launch: on load for PLAIN and SWIGLU (x is the residual
// stream), by the last block for ADD (how decode ran before the norm moved to the next launch)
// Returns the launch's time in ms (0 when skipped).
static double bench_awq(const char *label, int K, std::vector<int> Ns, int epi, int T, int warps, double roof,
                        int x_place = CU_X_AUTO, bool nrm = false)
{
    if (g_only && strcmp(g_only, label)) return 0;
    int n = (int)Ns.size();
    std::vector<awq_host> hs;
    size_t bytes = 0;
    for (int N : Ns) hs.push_back(make_awq(K, N)), bytes += cu_awq_packed_bytes(K, N);
    int copies = (int)std::min<size_t>(64, std::max<size_t>(1, (size_t)(200u << 20) / bytes + 1));
    std::vector<std::vector<cu_awq>> ws(copies);
    for (int c = 0; c < copies; c++)
        for (int i = 0; i < n; i++) ws[c].push_back(c == 0 ? upload_awq(hs[i]) : cu_awq{});
    for (int c = 1; c < copies; c++) // copies of the repacked weights
        for (int i = 0; i < n; i++) {
            cu_awq w = ws[0][i];
            size_t b = cu_awq_packed_bytes(K, w.N);
            CHECK(cudaMalloc(&w.q, b));
            CHECK(cudaMemcpy(w.q, ws[0][i].q, b, cudaMemcpyDeviceToDevice));
            w.meta = cu_awq_at(K, w.N, w.q).meta;
            ws[c][i] = w;
        }
    std::vector<float> xh((size_t)T * K);
    for (auto &v : xh) v = rndf();
    int Nout = epi == CU_EPI_SWIGLU ? Ns[0] : 0;
    std::vector<float *> ys(n);
    float *x, *r = nullptr;
    CHECK(cudaMalloc(&x, xh.size() * 4));
    CHECK(cudaMemcpy(x, xh.data(), xh.size() * 4, cudaMemcpyHostToDevice));
    std::vector<float> rh;
    if (epi == CU_EPI_ADD) {
        rh.resize((size_t)T * Ns[0]);
        for (auto &v : rh) v = rndf();
        CHECK(cudaMalloc(&r, rh.size() * 4));
        CHECK(cudaMemcpy(r, rh.data(), rh.size() * 4, cudaMemcpyHostToDevice));
    }
    for (int i = 0; i < n; i++) CHECK(cudaMalloc(&ys[i], (size_t)T * Ns[i] * 4));
    std::vector<double> xr(xh.begin(), xh.end()); // what the GEMV multiplies
    float *g = nullptr, *yn = nullptr;
    int *counter = nullptr;
    if (nrm && epi != CU_EPI_ADD) { // rmsnorm on load, weight 1
        for (int t = 0; t < T; t++) {
            double ss = 0;
            for (int k = 0; k < K; k++) ss += xr[(size_t)t * K + k] * xr[(size_t)t * K + k];
            for (int k = 0; k < K; k++) xr[(size_t)t * K + k] /= sqrt(ss / K + 1e-6);
        }
        std::vector<float> gh(K, 1.0f);
        CHECK(cudaMalloc(&g, gh.size() * 4));
        CHECK(cudaMemcpy(g, gh.data(), gh.size() * 4, cudaMemcpyHostToDevice));
    }
    if (nrm && epi == CU_EPI_ADD) {
        std::vector<float> gh(Ns[0], 1.0f);
        CHECK(cudaMalloc(&g, gh.size() * 4));
        CHECK(cudaMemcpy(g, gh.data(), gh.size() * 4, cudaMemcpyHostToDevice));
        CHECK(cudaMalloc(&yn, (size_t)T * Ns[0] * 4));
        CHECK(cudaMalloc(&counter, sizeof(int)));
        CHECK(cudaMemset(counter, 0, sizeof(int)));
    }
    auto args = [&](int c) {
        cu_awq_gemv_args a{};
        a.x = x, a.T = T, a.n = n, a.epi = epi, a.r = r, a.warps = warps, a.x_place = x_place, a.pdl = g_pdl;
        a.grid = getenv("LOOM_CUDA_AWQ_LOOP") && !strcmp(getenv("LOOM_CUDA_AWQ_LOOP"), "0") ? -1 : 0; // as the backend
        a.ring = getenv("LOOM_CUDA_AWQ_RING") ? atoi(getenv("LOOM_CUDA_AWQ_RING")) : 0;
        if (epi == CU_EPI_ADD) a.norm_w = g, a.norm_wdt = LOOM_F32, a.norm_eps = 1e-6f, a.norm_y = yn, a.counter = counter;
        else a.xnorm_w = g, a.xnorm_wdt = LOOM_F32, a.xnorm_eps = 1e-6f;
        for (int i = 0; i < n; i++) a.w[i] = &ws[c][i], a.bias[i] = nullptr, a.bdt[i] = 0, a.y[i] = ys[i];
        return a;
    };
    // correctness on copy 0
    for (int i = 0; i < n; i++) CHECK(cudaMemset(ys[i], 0xff, (size_t)T * Ns[i] * 4)); // NaN poison
    cu_awq_gemv_args a0 = args(0);
    CHECK(loom__cu_awq_gemv(0, &a0, g_sm));
    CHECK(cudaDeviceSynchronize());
    int nouts = epi == CU_EPI_SWIGLU ? 1 : n;
    double worst = 0;
    bool same = true;
    for (int i = 0; i < nouts; i++) {
        int N = Ns[i];
        std::vector<float> y((size_t)T * N), y2((size_t)T * N);
        CHECK(cudaMemcpy(y.data(), ys[i], y.size() * 4, cudaMemcpyDeviceToHost));
        std::vector<double> ref((size_t)T * N);
        int step = std::max(1, N / 512); // a sample of columns keeps the host reference quick
        std::vector<float> ys_s;
        std::vector<double> ref_s;
        for (int t = 0; t < T; t++)
            for (int col = 0; col < N; col += step) {
                double s0 = 0, s1 = 0;
                for (int k = 0; k < K; k++) {
                    s0 += xr[(size_t)t * K + k] * hs[i].w(k, col);
                    if (epi == CU_EPI_SWIGLU) s1 += xr[(size_t)t * K + k] * hs[1].w(k, col);
                }
                double v = epi == CU_EPI_SWIGLU ? s0 / (1 + exp(-s0)) * s1
                         : epi == CU_EPI_ADD    ? s0 + rh[(size_t)t * N + col]
                                                : s0;
                ys_s.push_back(y[(size_t)t * N + col]), ref_s.push_back(v);
            }
        worst = std::max(worst, nmse(ys_s, ref_s));
        CHECK(loom__cu_awq_gemv(0, &a0, g_sm));
        CHECK(cudaMemcpy(y2.data(), ys[i], y2.size() * 4, cudaMemcpyDeviceToHost));
        same = same && !memcmp(y.data(), y2.data(), y.size() * 4);
    }
    (void)Nout;
    double ms = time_ms([&](int c) { cu_awq_gemv_args a = args(c); loom__cu_awq_gemv(0, &a, g_sm); }, copies);
    double gbs = bytes / (ms * 1e-3) / 1e9;
    char shape[64];
    snprintf(shape, sizeof shape, "K=%d N=%d%s", K, Ns[0], n > 1 ? (n == 2 ? "x2" : "+..") : "");
    printf("awq %-18s %-16s %-15s T=%d warps=%-2d x %-6s %8.2f us %7.1f GB/s %5.3f  nmse %.1e %s\n", label, shape, epi_name(epi, nrm),
           T, warps, x_place == CU_X_GLOBAL ? "global" : x_place == CU_X_BLOCK ? "block" : x_place == CU_X_WARP ? "warp" : "auto", ms * 1e3, gbs, gbs / roof, worst, same ? "det" : "NONDET");
    for (int c = 0; c < copies; c++)
        for (auto &w : ws[c]) cudaFree(w.q);
    for (auto y : ys) cudaFree(y);
    cudaFree(x), cudaFree(r), cudaFree(g), cudaFree(yn), cudaFree(counter);
    return ms;
}

// ---- streaming read: what the GEMVs could reach -------------------------------------------------
__global__ void read_kernel(const uint4 *p, size_t n, unsigned *out)
{
    const size_t step = (size_t)gridDim.x * blockDim.x;
    unsigned acc = 0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += 4 * step) {
        uint4 v[4];
#pragma unroll
        for (int j = 0; j < 4; j++) v[j] = i + j * step < n ? __ldg(p + i + j * step) : make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int j = 0; j < 4; j++) acc ^= v[j].x ^ v[j].y ^ v[j].z ^ v[j].w;
    }
    if (acc == 0x9e3779b9u) *out = acc; // never in practice: keeps the loads
}

// The AWQ GEMV's load pattern alone: a block of 8 warps per 16-column tile (28 KiB of a K = 3584
// gate/up tile: 28 groups of 1 KiB), warp w reading groups w, w + 8, ... with D groups in
// flight, B blocks resident a SM (shared memory caps them, as the GEMV's registers do), no arithmetic.
template <int D, int B> __global__ void __launch_bounds__(256, B) read_tiles(const uint4 *p, int groups, unsigned *out)
{
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const uint4 *t = p + (size_t)blockIdx.x * groups * 64 + lane;
    uint4 v[D][2];
    unsigned acc = 0;
    int g = warp;
#pragma unroll
    for (int d = 0; d < D; d++)
        if (g + 8 * d < groups) v[d][0] = __ldg(t + (g + 8 * d) * 64), v[d][1] = __ldg(t + (g + 8 * d) * 64 + 32);
    for (; g < groups; g += 8 * D) {
#pragma unroll
        for (int d = 0; d < D; d++) {
            if (g + 8 * d >= groups) break;
            acc ^= v[d][0].x ^ v[d][0].y ^ v[d][0].z ^ v[d][0].w ^ v[d][1].x ^ v[d][1].y ^ v[d][1].z ^ v[d][1].w;
            int n = g + 8 * (d + D);
            if (n < groups) v[d][0] = __ldg(t + n * 64), v[d][1] = __ldg(t + n * 64 + 32);
        }
    }
    if (acc == 0x9e3779b9u) *out = acc;
}

template <int D, int B> static void bench_read_tiles(const uint4 *p, size_t bytes, int groups, unsigned *o, double roof)
{
    const int tiles = (int)(bytes / ((size_t)groups * 1024)), copies = (int)(((size_t)1 << 30) / bytes);
    const int smem = (200 << 10) / B; // shared memory caps the blocks a SM at B, as the GEMV's registers do
    CHECK(cudaFuncSetAttribute(read_tiles<D, B>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    double ms = time_ms([&](int c) { read_tiles<D, B><<<tiles, 256, smem>>>(p + c * bytes / 16, groups, o); }, copies);
    printf("read as the GEMV: %d groups a tile, %d tiles, %d in flight a warp, %d blocks a SM: %8.2f us %7.1f GB/s %5.3f\n",
           groups, tiles, D, B, ms * 1e3, tiles * (double)groups * 1024 / (ms * 1e-3) / 1e9,
           tiles * (double)groups * 1024 / (ms * 1e-3) / 1e9 / roof);
}

static void bench_read(double roof)
{
    const size_t bytes = (size_t)1 << 30, n = bytes / 16;
    uint4 *p;
    unsigned *o;
    CHECK(cudaMalloc(&p, bytes));
    CHECK(cudaMalloc(&o, 4));
    CHECK(cudaMemset(p, 1, bytes));
    for (int bps : {4, 8}) {
        double ms = time_ms([&](int) { read_kernel<<<g_sm * bps, 256>>>(p, n, o); }, 1);
        printf("read 1 GiB, %d blocks of 256 a SM: %8.1f us %7.1f GB/s %5.3f of the copy roofline\n", bps, ms * 1e3,
               bytes / (ms * 1e-3) / 1e9, bytes / (ms * 1e-3) / 1e9 / roof);
    }
    // 2368 tiles of 28 groups: 7B gate + up (66 MiB); 224 of 148: 7B down
    bench_read_tiles<1, 4>(p, (size_t)2368 * 28 * 1024, 28, o, roof);
    bench_read_tiles<2, 4>(p, (size_t)2368 * 28 * 1024, 28, o, roof);
    bench_read_tiles<4, 4>(p, (size_t)2368 * 28 * 1024, 28, o, roof);
    bench_read_tiles<1, 8>(p, (size_t)2368 * 28 * 1024, 28, o, roof);
    bench_read_tiles<2, 8>(p, (size_t)2368 * 28 * 1024, 28, o, roof);
    bench_read_tiles<1, 4>(p, (size_t)224 * 148 * 1024, 148, o, roof);
    bench_read_tiles<2, 4>(p, (size_t)224 * 148 * 1024, 148, o, roof);
    bench_read_tiles<4, 4>(p, (size_t)224 * 148 * 1024, 148, o, roof);
    bench_read_tiles<1, 4>(p, (size_t)4 * 2368 * 28 * 1024, 28, o, roof);
    bench_read_tiles<4, 4>(p, (size_t)4 * 2368 * 28 * 1024, 28, o, roof);
    cudaFree(p), cudaFree(o);
}

// ---- dense f16 GEMV ----------------------------------------------------------------------------
static void bench_dense(const char *label, int K, int N, int T, int sm, double roof)
{
    size_t bytes = (size_t)K * N * 2;
    int copies = (int)std::max<size_t>(1, (size_t)(200u << 20) / bytes + 1);
    std::vector<uint16_t> wh((size_t)K * N);
    for (auto &v : wh) v = __half_as_ushort(__float2half(rndf() * 0.05f));
    std::vector<float> xh((size_t)T * K);
    for (auto &v : xh) v = rndf();
    std::vector<void *> ws(copies);
    for (int c = 0; c < copies; c++) {
        CHECK(cudaMalloc(&ws[c], bytes));
        CHECK(cudaMemcpy(ws[c], wh.data(), bytes, cudaMemcpyHostToDevice));
    }
    float *x, *y;
    CHECK(cudaMalloc(&x, xh.size() * 4));
    CHECK(cudaMalloc(&y, (size_t)T * N * 4));
    CHECK(cudaMemcpy(x, xh.data(), xh.size() * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemset(y, 0xff, (size_t)T * N * 4));
    CHECK(loom__cu_gemv(0, x, ws[0], LOOM_F16, nullptr, 0, y, T, K, N, sm));
    std::vector<float> yh((size_t)T * N), ys;
    std::vector<double> ref;
    CHECK(cudaMemcpy(yh.data(), y, yh.size() * 4, cudaMemcpyDeviceToHost));
    for (int t = 0; t < T; t++)
        for (int n = 0; n < N; n += std::max(1, N / 512)) {
            double s = 0;
            for (int k = 0; k < K; k++)
                s += (double)xh[(size_t)t * K + k] * __half2float(__ushort_as_half(wh[(size_t)n * K + k]));
            ys.push_back(yh[(size_t)t * N + n]), ref.push_back(s);
        }
    double ms = time_ms([&](int c) { loom__cu_gemv(0, x, ws[c], LOOM_F16, nullptr, 0, y, T, K, N, sm); }, copies);
    double gbs = bytes / (ms * 1e-3) / 1e9;
    printf("f16 %-18s K=%-5d N=%-8d %-15s T=%d %15s %8.2f us %7.1f GB/s %5.3f  nmse %.1e\n", label, K, N, "", T, "",
           ms * 1e3, gbs, gbs / roof, nmse(ys, ref));
    for (auto w : ws) cudaFree(w);
    cudaFree(x), cudaFree(y);
}


// ---- prefill GEMM vs cuBLAS ----------------------------------------------------------------------
struct gemm_time {
    double cublas_ms, dense_ms, awq_ms, awq_kept_ms;
};

// y[T,N] = x[T,K] · W[N,K]ᵀ: cuBLAS with f16 x and W (f32 accumulate; f16 and f32 output, the
// faster counts), loom's kernel with f16 W and with the AWQ W, both from f32 x as the backend runs:
// x rounded to f16 in every call (as the first GEMM to read an x does), and, for AWQ, kept from
// the call before (as k and v after q, and up after gate, find it).
static gemm_time bench_gemm(const char *label, cublasHandle_t cb, int K, int N, int T, int sm)
{
    std::vector<uint16_t> wh((size_t)K * N), xh16((size_t)T * K);
    std::vector<float> xh((size_t)T * K);
    for (auto &v : wh) v = __half_as_ushort(__float2half(rndf() * 0.05f));
    for (size_t i = 0; i < xh.size(); i++) xh[i] = rndf(), xh16[i] = __half_as_ushort(__float2half(xh[i]));
    awq_host ah = make_awq(K, N);
    cu_awq aw = upload_awq(ah);
    void *w, *x16, *y16;
    float *x, *y;
    CHECK(cudaMalloc(&w, wh.size() * 2));
    CHECK(cudaMalloc(&x16, xh16.size() * 2));
    CHECK(cudaMalloc(&x, xh.size() * 4));
    CHECK(cudaMalloc(&y, (size_t)T * N * 4));
    CHECK(cudaMalloc(&y16, (size_t)T * N * 2));
    CHECK(cudaMemcpy(w, wh.data(), wh.size() * 2, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(x16, xh16.data(), xh16.size() * 2, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(x, xh.data(), xh.size() * 4, cudaMemcpyHostToDevice));
    const size_t xh_bytes = loom__cu_gemm_xh_bytes(LOOM_F16, T, K);
    void *xhp;
    CHECK(cudaMalloc(&xhp, xh_bytes));
    cu_xh kept = {xhp, xh_bytes, nullptr, 0, 0, 0};
    auto fresh = [&] { return cu_xh{xhp, xh_bytes, nullptr, 0, 0, 0}; };
    const cu_gemm_w wd = {w, nullptr, nullptr, 0, y, N}, wa = {nullptr, &aw, nullptr, 0, y, N};
    auto dense = [&] { cu_xh h = fresh(); return loom__cu_gemm(0, x, LOOM_F16, &wd, 1, T, K, &h, sm); };
    auto awq_run = [&](cu_xh *h) { return loom__cu_gemm(0, x, LOOM_Q4_AWQ, &wa, 1, T, K, h, sm); };
    const float one = 1.0f, zero = 0.0f;
    auto cublas = [&](bool f32out) {
        cublasStatus_t st = cublasGemmEx(cb, CUBLAS_OP_T, CUBLAS_OP_N, N, T, K, &one, w, CUDA_R_16F, K, x16, CUDA_R_16F, K,
                                         &zero, f32out ? (void *)y : y16, f32out ? CUDA_R_32F : CUDA_R_16F, N,
                                         CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        if (st != CUBLAS_STATUS_SUCCESS) fprintf(stderr, "cublasGemmEx: status %d\n", (int)st), exit(1);
    };
    // correctness: a sample of columns of every row against float64
    auto check = [&](bool awq) {
        CHECK(cudaMemset(y, 0xff, (size_t)T * N * 4));
        cu_xh h = fresh();
        CHECK(awq ? awq_run(&h) : dense());
        std::vector<float> yh((size_t)T * N), ys;
        std::vector<double> ref;
        CHECK(cudaMemcpy(yh.data(), y, yh.size() * 4, cudaMemcpyDeviceToHost));
        for (int t = 0; t < T; t += std::max(1, T / 16))
            for (int n = 0; n < N; n += std::max(1, N / 256)) {
                double s = 0;
                for (int k = 0; k < K; k++)
                    s += (double)xh[(size_t)t * K + k] *
                         (awq ? ah.w(k, n) : (double)__half2float(__ushort_as_half(wh[(size_t)n * K + k])));
                ys.push_back(yh[(size_t)t * N + n]), ref.push_back(s);
            }
        return nmse(ys, ref);
    };
    double e_dense = check(false), e_awq = check(true);
    gemm_time r;
    r.cublas_ms = std::min(time_ms([&](int) { cublas(false); }, 1), time_ms([&](int) { cublas(true); }, 1));
    r.dense_ms = time_ms([&](int) { dense(); }, 1);
    r.awq_ms = time_ms([&](int) { cu_xh h = fresh(); awq_run(&h); }, 1);
    r.awq_kept_ms = time_ms([&](int) { awq_run(&kept); }, 1);
    double tf = 2.0 * T * K * N / 1e12;
    printf("gemm %-14s T=%-4d K=%-5d N=%-6d cuBLAS f16 %6.1f TF/s | loom f16 %6.1f TF/s %5.3f nmse %.1e | "
           "loom AWQ %6.1f TF/s %5.3f nmse %.1e (x kept: %6.1f TF/s %5.3f)\n",
           label, T, K, N, tf / (r.cublas_ms * 1e-3), tf / (r.dense_ms * 1e-3), r.cublas_ms / r.dense_ms, e_dense,
           tf / (r.awq_ms * 1e-3), r.cublas_ms / r.awq_ms, e_awq, tf / (r.awq_kept_ms * 1e-3), r.cublas_ms / r.awq_kept_ms);
    cudaFree(xhp), cudaFree(w), cudaFree(x16), cudaFree(y16), cudaFree(x), cudaFree(y), cudaFree(aw.q);
    return r;
}

// The matmuls of one Qwen2.5-7B layer at a 512-token prompt, weighted by time as the issue asks:
// loom's rate over the same shapes / cuBLAS's.
static void bench_gemms(int sm)
{
    cublasHandle_t cb;
    if (cublasCreate(&cb) != CUBLAS_STATUS_SUCCESS) fprintf(stderr, "cublasCreate failed\n"), exit(1);
    struct { const char *label; int K, N, times; } layer[] = {
        {"7b q / o", 3584, 3584, 2}, {"7b k / v", 3584, 512, 2}, {"7b gate / up", 3584, 18944, 2}, {"7b down", 18944, 3584, 1}};
    for (int T : {512, 128}) {
        double c = 0, d = 0, a = 0;
        for (auto &l : layer) {
            gemm_time r = bench_gemm(l.label, cb, l.K, l.N, T, sm);
            c += l.times * r.cublas_ms, d += l.times * r.dense_ms, a += l.times * r.awq_ms;
        }
        printf("gemm 7b layer T=%d: loom f16 at %.3f of cuBLAS's rate, loom AWQ at %.3f (issue 4: >= 0.40)\n", T, c / d, c / a);
    }
    bench_gemm("7b lm_head", cb, 3584, 152064, 512, sm);
    bench_gemm("0.5b gate", cb, 896, 4864, 512, sm);
    cublasDestroy(cb);
}

int main(int argc, char **argv)
{
    int sm = 0;
    CHECK(cudaDeviceGetAttribute(&sm, cudaDevAttrMultiProcessorCount, 0));
    g_sm = sm;
    cudaDeviceProp p;
    CHECK(cudaGetDeviceProperties(&p, 0));
    double roof = roofline_gbs();
    if (roof <= 0) return 1;
    printf("%s, %d SMs, L2 %d MiB; roofline (D2D copy, read + write) %.1f GB/s\n", p.name, sm, p.l2CacheSize >> 20,
           roof);
    int wgmma = 0; // LOOM_CUDA_WGMMA=0: the mma.sync GEMMs, as the backend
    CHECK(loom__cu_gemm_init(!(getenv("LOOM_CUDA_WGMMA") && !strcmp(getenv("LOOM_CUDA_WGMMA"), "0")), &wgmma));
    printf("prefill GEMMs on %s\n", wgmma ? "wgmma" : "mma.sync");
    CHECK(loom__cu_awq_init());
    if (argc > 4 && !strcmp(argv[1], "--gemm")) { // one shape: K N T (Nsight Compute)
        cublasHandle_t cb;
        if (cublasCreate(&cb) != CUBLAS_STATUS_SUCCESS) fprintf(stderr, "cublasCreate failed\n"), exit(1);
        bench_gemm("one", cb, atoi(argv[2]), atoi(argv[3]), atoi(argv[4]), sm);
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "--gemm")) return bench_gemms(sm), 0;
    if (argc > 2 && !strcmp(argv[1], "--only")) g_only = argv[2];
    g_pdl = getenv("KBENCH_PDL") && atoi(getenv("KBENCH_PDL"));
    if (argc > 1 && !strcmp(argv[1], "--fit")) {
        bench_read(roof);
        // one output a launch, no epilogue: time = fixed + bytes / rate, least squares over N
        auto fit = [&](const char *label, int K, std::vector<int> Ns) {
            double n = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
            for (int N : Ns) {
                double b = (double)cu_awq_packed_bytes(K, N) / 1e3, us = bench_awq(label, K, {N}, CU_EPI_PLAIN, 1, 0, roof) * 1e3;
                n++, sx += b, sy += us, sxx += b * b, sxy += b * us;
            }
            double slope = (n * sxy - sx * sy) / (n * sxx - sx * sx), fixed = (sy - slope * sx) / n;
            printf("fit %s: %.2f us fixed + bytes at %.1f GB/s (%.3f of the roofline)\n", label, fixed, 1.0 / slope,
                   1.0 / slope / roof);
        };
        fit("K=3584", 3584, {1792, 3584, 7168, 14336, 28672, 57344});
        fit("K=18944", 18944, {896, 1792, 3584, 7168, 14336});
        // 16-column blocks, 4 resident a SM at 64 registers: 8448 is one wave of 132 SMs, 16896 two, 25344 three
        for (int N : {8448, 16896, 18944, 21120, 25344}) bench_awq("fit waves", 3584, {N, N}, CU_EPI_SWIGLU, 1, 0, roof);
        return 0;
    }
    // Qwen2.5-7B layer: q, k, v (one launch), o + residual, gate + up + swiglu, down + residual;
    // --awq: at each block size (0: the launcher's choice), x as the launcher picks (staged per
    // warp where that fits), staged per block, or from global memory (no rmsnorm on load there)
    bool sweep = argc > 1 && !strcmp(argv[1], "--awq");
    for (int v = 0; v < (sweep ? 12 : 2); v++) {
        int w = v % 4 ? 2 << v % 4 : 0, xp = v / 4 == 0 ? CU_X_AUTO : v / 4 == 1 ? CU_X_BLOCK : CU_X_GLOBAL;
        if (!sweep && v == 1) w = 0, xp = CU_X_BLOCK; // without --awq: the launcher's choice, then x per block
        bench_awq("7b qkv", 3584, {3584, 512, 512}, CU_EPI_PLAIN, 1, w, roof, xp, xp != CU_X_GLOBAL);
        bench_awq("7b o", 3584, {3584}, CU_EPI_ADD, 1, w, roof, xp);
        bench_awq("7b gate/up", 3584, {18944, 18944}, CU_EPI_SWIGLU, 1, w, roof, xp, xp != CU_X_GLOBAL);
        bench_awq("7b down", 18944, {3584}, CU_EPI_ADD, 1, w, roof, xp);
    }
    // the same layer with each rmsnorm by the last block of the launch before
    bench_awq("7b qkv", 3584, {3584, 512, 512}, CU_EPI_PLAIN, 1, 0, roof);
    bench_awq("7b o", 3584, {3584}, CU_EPI_ADD, 1, 0, roof, 0, true);
    bench_awq("7b gate/up", 3584, {18944, 18944}, CU_EPI_SWIGLU, 1, 0, roof);
    bench_awq("7b down", 18944, {3584}, CU_EPI_ADD, 1, 0, roof, 0, true);
    if (sweep || g_only) return 0;
    bench_awq("7b gate/up", 3584, {18944, 18944}, CU_EPI_SWIGLU, 4, 0, roof);
    bench_awq("7b gate/up", 3584, {18944, 18944}, CU_EPI_SWIGLU, 8, 0, roof);
    bench_awq("32b gate/up", 5120, {27648, 27648}, CU_EPI_SWIGLU, 1, 0, roof, 0, true);
    bench_awq("32b down", 27648, {5120}, CU_EPI_ADD, 1, 0, roof);
    bench_awq("0.5b qkv", 896, {896, 128, 128}, CU_EPI_PLAIN, 1, 0, roof, 0, true);
    bench_awq("0.5b gate/up", 896, {4864, 4864}, CU_EPI_SWIGLU, 1, 0, roof, 0, true);
    bench_awq("0.5b down", 4864, {896}, CU_EPI_ADD, 1, 0, roof);
    bench_dense("7b lm_head", 3584, 152064, 1, sm, roof);
    bench_dense("0.5b lm_head", 896, 151936, 1, sm, roof);
    bench_dense("7b f16 gate", 3584, 18944, 1, sm, roof);
    bench_dense("7b f16 down", 18944, 3584, 1, sm, roof);
    bench_dense("7b f16 q", 3584, 3584, 1, sm, roof);
    bench_gemms(sm);
    return 0;
}
