/* k_matmul.cu — dense matmul (y = x · wᵀ + b, w [N,K] f32/f16/bf16) and AWQ
 * int4 matmul (y = x · w + b, w {K,N} repacked, see cuda_impl.h).
 *
 * Few rows (decode): GEMV kernels that stream the weight once with 16-byte
 * loads and widen it in registers; every row of x (up to 8) is applied to each
 * weight element while it is in registers.
 * Many rows (prefill): one tensor-core kernel (mma.sync m16n8k16, f32
 * accumulate) whose B tile loader either copies a dense f16/bf16 tile or
 * dequantises an AWQ tile into shared memory; x is rounded to f16 on its way
 * into shared memory, or, for bf16 weights, split into two bf16 parts
 * (x = hi + lo, each multiplied on the tensor cores) since one bf16 rounding
 * of x alone costs ~1e-6 NMSE per matmul. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda_impl.h"
#include "k_common.cuh"

/* ====================================================================================
 * Dense GEMV: one warp per output column n, lanes stride over K, 8 elements
 * (16 bytes of f16/bf16, 32 of f32) per step.
 * ==================================================================================== */
template <typename WT, int NT, bool VEC>
__global__ void __launch_bounds__(256) gemv_kernel(const float *__restrict__ x, const WT *__restrict__ w,
                                                   const void *__restrict__ bias, int bdt, float *__restrict__ y, int T,
                                                   int64_t K, int64_t N)
{
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int64_t n = (int64_t)blockIdx.x * 8 + warp;
    if (n >= N) return;
    const WT *wr = w + n * K;
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t] = 0.0f;
    if (VEC) {
        int64_t K8 = K >> 3;
#pragma unroll 2
        for (int64_t c = lane; c < K8; c += 32) {
            float wf[8];
            load8(wr + c * 8, wf);
#pragma unroll
            for (int t = 0; t < NT; t++) {
                if (t < T) {
                    const float4 *xp = reinterpret_cast<const float4 *>(x + (int64_t)t * K + c * 8);
                    float4 a = __ldg(xp), b = __ldg(xp + 1);
                    float s = acc[t];
                    s = fmaf(a.x, wf[0], s), s = fmaf(a.y, wf[1], s), s = fmaf(a.z, wf[2], s), s = fmaf(a.w, wf[3], s);
                    s = fmaf(b.x, wf[4], s), s = fmaf(b.y, wf[5], s), s = fmaf(b.z, wf[6], s), s = fmaf(b.w, wf[7], s);
                    acc[t] = s;
                }
            }
        }
    } else {
        for (int64_t k = lane; k < K; k += 32) {
            float wv = cu_to_f32(wr[k]);
#pragma unroll
            for (int t = 0; t < NT; t++)
                if (t < T) acc[t] = fmaf(x[(int64_t)t * K + k], wv, acc[t]);
        }
    }
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t] = cu_warp_sum(acc[t]);
    if (lane == 0) {
        float b = bias ? cu_load_dt(bias, bdt, n) : 0.0f;
#pragma unroll
        for (int t = 0; t < NT; t++)
            if (t < T) y[(int64_t)t * N + n] = acc[t] + b;
    }
}

template <typename WT>
static cudaError_t gemv_typed(cudaStream_t s, const float *x, const WT *w, const void *bias, int bdt, float *y, int T,
                              int64_t K, int64_t N)
{
    bool vec = K % 8 == 0 && cu_aligned16(x) && cu_aligned16(w);
    unsigned grid = (unsigned)((N + 7) / 8);
    for (int t0 = 0; t0 < T; t0 += CU_GEMV_MAX_T) {
        int nt = T - t0 < CU_GEMV_MAX_T ? T - t0 : CU_GEMV_MAX_T;
        const float *xc = x + (int64_t)t0 * K;
        float *yc = y + (int64_t)t0 * N;
#define GEMV_L(NT)                                                                                           \
    (vec ? gemv_kernel<WT, NT, true><<<grid, 256, 0, s>>>(xc, w, bias, bdt, yc, nt, K, N)                    \
         : gemv_kernel<WT, NT, false><<<grid, 256, 0, s>>>(xc, w, bias, bdt, yc, nt, K, N))
        if (nt == 1) GEMV_L(1);
        else if (nt == 2) GEMV_L(2);
        else if (nt <= 4) GEMV_L(4);
        else GEMV_L(8);
#undef GEMV_L
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) return e;
    }
    return cudaSuccess;
}

extern "C" cudaError_t loom__cu_gemv(cudaStream_t s, const float *x, const void *w, int wdt, const void *bias, int bdt,
                                     float *y, int T, int64_t K, int64_t N)
{
    switch (wdt) {
    case LOOM_F32: return gemv_typed(s, x, (const float *)w, bias, bdt, y, T, K, N);
    case LOOM_F16: return gemv_typed(s, x, (const __half *)w, bias, bdt, y, T, K, N);
    case LOOM_BF16: return gemv_typed(s, x, (const __nv_bfloat16 *)w, bias, bdt, y, T, K, N);
    default: return cudaErrorInvalidValue;
    }
}

/* ====================================================================================
 * Tensor-core GEMM: block tile 64 (rows of x) x 128 (columns of y) x 32 (K),
 * 4 warps of 32 x 64 each, mma.sync m16n8k16 with f32 accumulators.
 * Shared tiles are [row][k] with 8 halves of padding (80-byte rows), so the
 * 32-bit fragment loads of a warp hit 32 different banks.
 * ==================================================================================== */
#define GM_BM 64
#define GM_BN 128
#define GM_BK 32
#define GM_LD (GM_BK + 8)

enum { B_DENSE = 0, B_AWQ = 1 };

template <bool BF>
static __device__ __forceinline__ uint32_t pack2(float a, float b)
{
    if (BF) {
        __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
        return *reinterpret_cast<uint32_t *>(&h);
    } else {
        __half2 h = __floats2half2_rn(a, b);
        return *reinterpret_cast<uint32_t *>(&h);
    }
}

template <bool BF>
static __device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1)
{
    if (BF)
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%0,%1,%2,%3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    else
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%0,%1,%2,%3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* w: dense [N][K] 16-bit (BSRC == B_DENSE) or the AWQ q words (B_AWQ, with meta). */
template <bool BF, int BSRC>
__global__ void __launch_bounds__(128) gemm_kernel(const float *__restrict__ x, const void *__restrict__ w,
                                                   const uint32_t *__restrict__ meta, const void *__restrict__ bias,
                                                   int bdt, float *__restrict__ y, int T, int K, int N)
{
    __shared__ __align__(16) uint16_t As[GM_BM][GM_LD];
    __shared__ __align__(16) uint16_t Al[BF ? GM_BM : 1][GM_LD]; /* bf16: x - hi */
    __shared__ __align__(16) uint16_t Bs[GM_BN][GM_LD];
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tg = lane & 3;
    int m0 = blockIdx.y * GM_BM, n0 = blockIdx.x * GM_BN;
    int wm = (warp >> 1) * 32, wn = (warp & 1) * 64;
    float acc[2][8][4];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int r = 0; r < 4; r++) acc[i][j][r] = 0.0f;

    for (int k0 = 0; k0 < K; k0 += GM_BK) {
        /* A: 64 x 32 floats of x, rounded to 16 bits */
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int idx = tid + i * 128, r = idx >> 3, c = (idx & 7) * 4, m = m0 + r, k = k0 + c;
            float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
            if (m < T && k < K) v = __ldg(reinterpret_cast<const float4 *>(x + (int64_t)m * K + k));
            if (BF) {
                float h[4] = {v.x, v.y, v.z, v.w}, l[4];
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    float hi = __bfloat162float(__float2bfloat16_rn(h[e]));
                    l[e] = h[e] - hi; /* exact */
                    h[e] = hi;
                }
                *reinterpret_cast<uint2 *>(&As[r][c]) = make_uint2(pack2<true>(h[0], h[1]), pack2<true>(h[2], h[3]));
                *reinterpret_cast<uint2 *>(&Al[BF ? r : 0][c]) =
                    make_uint2(pack2<true>(l[0], l[1]), pack2<true>(l[2], l[3]));
            } else {
                *reinterpret_cast<uint2 *>(&As[r][c]) = make_uint2(pack2<false>(v.x, v.y), pack2<false>(v.z, v.w));
            }
        }
        /* B: 128 columns x 32 k */
        if (BSRC == B_DENSE) {
            const uint16_t *wd = reinterpret_cast<const uint16_t *>(w);
#pragma unroll
            for (int i = 0; i < 4; i++) {
                int idx = tid + i * 128, r = idx >> 2, c = (idx & 3) * 8, n = n0 + r, k = k0 + c;
                uint4 v = make_uint4(0, 0, 0, 0);
                if (n < N && k < K) v = __ldg(reinterpret_cast<const uint4 *>(wd + (int64_t)n * K + k));
                *reinterpret_cast<uint4 *>(&Bs[r][c]) = v;
            }
        } else {
            int n = n0 + tid;
            uint4 q = make_uint4(0, 0, 0, 0);
            float sc = 0.f, zf = 0.f;
            if (n < N) {
                q = __ldg(reinterpret_cast<const uint4 *>(w) + (int64_t)(k0 >> 5) * N + n);
                uint32_t mt = __ldg(meta + (int64_t)(k0 >> 7) * N + n);
                sc = __half2float(__ushort_as_half((unsigned short)(mt & 0xffffu)));
                zf = (float)(mt >> 16);
            }
            const uint32_t qw[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
            for (int j = 0; j < 4; j++) {
                uint32_t o[4];
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    float a = ((float)((qw[j] >> (8 * i)) & 15u) - zf) * sc;
                    float b = ((float)((qw[j] >> (8 * i + 4)) & 15u) - zf) * sc;
                    o[i] = pack2<BF>(a, b);
                }
                *reinterpret_cast<uint4 *>(&Bs[tid][8 * j]) = make_uint4(o[0], o[1], o[2], o[3]);
            }
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < GM_BK; kk += 16) {
            uint32_t af[2][4], al[2][4];
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
                int r = wm + mt * 16 + g;
                af[mt][0] = *reinterpret_cast<const uint32_t *>(&As[r][kk + tg * 2]);
                af[mt][1] = *reinterpret_cast<const uint32_t *>(&As[r + 8][kk + tg * 2]);
                af[mt][2] = *reinterpret_cast<const uint32_t *>(&As[r][kk + tg * 2 + 8]);
                af[mt][3] = *reinterpret_cast<const uint32_t *>(&As[r + 8][kk + tg * 2 + 8]);
                if (BF) {
                    al[mt][0] = *reinterpret_cast<const uint32_t *>(&Al[BF ? r : 0][kk + tg * 2]);
                    al[mt][1] = *reinterpret_cast<const uint32_t *>(&Al[BF ? r + 8 : 0][kk + tg * 2]);
                    al[mt][2] = *reinterpret_cast<const uint32_t *>(&Al[BF ? r : 0][kk + tg * 2 + 8]);
                    al[mt][3] = *reinterpret_cast<const uint32_t *>(&Al[BF ? r + 8 : 0][kk + tg * 2 + 8]);
                }
            }
#pragma unroll
            for (int nt = 0; nt < 8; nt++) {
                int c = wn + nt * 8 + g;
                uint32_t b0 = *reinterpret_cast<const uint32_t *>(&Bs[c][kk + tg * 2]);
                uint32_t b1 = *reinterpret_cast<const uint32_t *>(&Bs[c][kk + tg * 2 + 8]);
#pragma unroll
                for (int mt = 0; mt < 2; mt++) {
                    mma16816<BF>(acc[mt][nt], af[mt], b0, b1);
                    if (BF) mma16816<BF>(acc[mt][nt], al[mt], b0, b1);
                }
            }
        }
        __syncthreads();
    }
    /* epilogue: c0, c1 at (g, 2tg..2tg+1), c2, c3 at (g + 8, ...) */
#pragma unroll
    for (int nt = 0; nt < 8; nt++) {
        int col = n0 + wn + nt * 8 + tg * 2;
        float b0 = 0.0f, b1 = 0.0f;
        if (bias) {
            if (col < N) b0 = cu_load_dt(bias, bdt, col);
            if (col + 1 < N) b1 = cu_load_dt(bias, bdt, col + 1);
        }
#pragma unroll
        for (int mt = 0; mt < 2; mt++) {
            int row = m0 + wm + mt * 16 + g;
            float *yr = y + (int64_t)row * N + col;
            if (row < T) {
                if (col < N) yr[0] = acc[mt][nt][0] + b0;
                if (col + 1 < N) yr[1] = acc[mt][nt][1] + b1;
            }
            if (row + 8 < T) {
                yr += (int64_t)8 * N;
                if (col < N) yr[0] = acc[mt][nt][2] + b0;
                if (col + 1 < N) yr[1] = acc[mt][nt][3] + b1;
            }
        }
    }
}

extern "C" cudaError_t loom__cu_gemm(cudaStream_t s, const float *x, const void *w, int wdt, const void *bias, int bdt,
                                     float *y, int T, int64_t K, int64_t N)
{
    if (K % 8 || !cu_aligned16(x) || !cu_aligned16(w) || (wdt != LOOM_F16 && wdt != LOOM_BF16))
        return loom__cu_gemv(s, x, w, wdt, bias, bdt, y, T, K, N);
    dim3 grid((unsigned)((N + GM_BN - 1) / GM_BN), (unsigned)((T + GM_BM - 1) / GM_BM));
    if (wdt == LOOM_BF16)
        gemm_kernel<true, B_DENSE><<<grid, 128, 0, s>>>(x, w, nullptr, bias, bdt, y, T, (int)K, (int)N);
    else
        gemm_kernel<false, B_DENSE><<<grid, 128, 0, s>>>(x, w, nullptr, bias, bdt, y, T, (int)K, (int)N);
    return cudaGetLastError();
}

extern "C" cudaError_t loom__cu_awq_gemm(cudaStream_t s, const float *x, const cu_awq *w, const void *bias, int bdt,
                                         float *y, int T)
{
    dim3 grid((unsigned)((w->N + GM_BN - 1) / GM_BN), (unsigned)((T + GM_BM - 1) / GM_BM));
    gemm_kernel<false, B_AWQ><<<grid, 128, 0, s>>>(x, w->q, w->meta, bias, bdt, y, T, (int)w->K, (int)w->N);
    return cudaGetLastError();
}

/* ====================================================================================
 * AWQ: repack and GEMV
 * ==================================================================================== */
extern "C" size_t loom__cu_awq_packed_bytes(int64_t K, int64_t N)
{
    return (size_t)(K / 32) * (size_t)N * 16 + (size_t)(K / LOOM_AWQ_GROUP) * (size_t)N * 4;
}

/* One thread per (kb, n): gathers the 32 nibbles of column n at k = 32kb.. */
__global__ void awq_repack_kernel(const uint32_t *__restrict__ qweight, const uint32_t *__restrict__ qzeros,
                                  const uint16_t *__restrict__ scales, uint4 *__restrict__ q, uint32_t *__restrict__ meta,
                                  int K, int N)
{
    int n = blockIdx.x * blockDim.x + threadIdx.x, kb = blockIdx.y;
    if (n >= N) return;
    const int inv_order[8] = {0, 4, 1, 5, 2, 6, 3, 7}; /* column offset -> nibble */
    int N8 = N / 8, c = n >> 3, sh = 4 * inv_order[n & 7];
    uint32_t wd[4];
#pragma unroll
    for (int j = 0; j < 4; j++) {
        uint32_t v = 0;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            int k = kb * 32 + j * 8 + i;
            v |= ((qweight[(int64_t)k * N8 + c] >> sh) & 15u) << (4 * i);
        }
        wd[j] = v;
    }
    q[(int64_t)kb * N + n] = make_uint4(wd[0], wd[1], wd[2], wd[3]);
    if (kb % 4 == 0) {
        int gi = kb / 4;
        uint32_t z = (qzeros[(int64_t)gi * N8 + c] >> sh) & 15u;
        meta[(int64_t)gi * N + n] = (uint32_t)scales[(int64_t)gi * N + n] | (z << 16);
    }
}

extern "C" cudaError_t loom__cu_awq_repack(cudaStream_t s, const void *blob, cu_awq *w)
{
    int64_t K = w->K, N = w->N;
    const uint8_t *b = (const uint8_t *)blob;
    const uint32_t *qweight = (const uint32_t *)b;
    const uint32_t *qzeros = (const uint32_t *)(b + K * N / 2);
    const uint16_t *scales = (const uint16_t *)(b + K * N / 2 + (K / LOOM_AWQ_GROUP) * N / 2);
    dim3 grid((unsigned)((N + 127) / 128), (unsigned)(K / 32));
    awq_repack_kernel<<<grid, 128, 0, s>>>(qweight, qzeros, scales, (uint4 *)w->q, w->meta, (int)K, (int)N);
    return cudaGetLastError();
}

/* GEMV: thread = one column n; blockIdx.y = one run of groups (split-K).
 * Per group: 4 x 16-byte loads (128 k of column n; a warp reads 4 x 512
 * contiguous bytes) and one meta word. Nibble q becomes the float 2^23 + q by
 * an OR (exact), and 2^23 + z is subtracted: q - z exactly; the group's dot
 * products are scaled once. x rows are broadcast loads (same address across
 * the warp). */
template <int NT>
__global__ void __launch_bounds__(128) awq_gemv_kernel(const float *__restrict__ x, const uint4 *__restrict__ q,
                                                       const uint32_t *__restrict__ meta, const void *__restrict__ bias,
                                                       int bdt, float *__restrict__ y, float *__restrict__ partial,
                                                       int T, int K, int N, int gps)
{
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    int groups = K / LOOM_AWQ_GROUP, g0 = blockIdx.y * gps, g1 = min(g0 + gps, groups);
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t] = 0.0f;
    for (int gi = g0; gi < g1; gi++) {
        uint4 w[4];
#pragma unroll
        for (int j = 0; j < 4; j++) w[j] = __ldg(q + (int64_t)(gi * 4 + j) * N + n);
        uint32_t mt = __ldg(meta + (int64_t)gi * N + n);
        float sc = __half2float(__ushort_as_half((unsigned short)(mt & 0xffffu)));
        float zf = 8388608.0f + (float)(mt >> 16);
        float ga[NT];
#pragma unroll
        for (int t = 0; t < NT; t++) ga[t] = 0.0f;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const uint32_t ww[4] = {w[j].x, w[j].y, w[j].z, w[j].w};
#pragma unroll
            for (int jj = 0; jj < 4; jj++) {
                float v[8];
#pragma unroll
                for (int i = 0; i < 8; i++) v[i] = __uint_as_float(0x4B000000u | ((ww[jj] >> (4 * i)) & 15u)) - zf;
                int k = gi * LOOM_AWQ_GROUP + j * 32 + jj * 8;
#pragma unroll
                for (int t = 0; t < NT; t++) {
                    if (t < T) {
                        const float4 *xp = reinterpret_cast<const float4 *>(x + (int64_t)t * K + k);
                        float4 a = __ldg(xp), b = __ldg(xp + 1);
                        float s = ga[t];
                        s = fmaf(a.x, v[0], s), s = fmaf(a.y, v[1], s), s = fmaf(a.z, v[2], s), s = fmaf(a.w, v[3], s);
                        s = fmaf(b.x, v[4], s), s = fmaf(b.y, v[5], s), s = fmaf(b.z, v[6], s), s = fmaf(b.w, v[7], s);
                        ga[t] = s;
                    }
                }
            }
        }
#pragma unroll
        for (int t = 0; t < NT; t++) acc[t] = fmaf(sc, ga[t], acc[t]);
    }
    if (gridDim.y == 1) {
        float b = bias ? cu_load_dt(bias, bdt, n) : 0.0f;
#pragma unroll
        for (int t = 0; t < NT; t++)
            if (t < T) y[(int64_t)t * N + n] = acc[t] + b;
    } else {
#pragma unroll
        for (int t = 0; t < NT; t++)
            if (t < T) partial[((int64_t)blockIdx.y * T + t) * N + n] = acc[t];
    }
}

__global__ void splitk_reduce_kernel(const float *__restrict__ partial, int splits, int T, int N,
                                     const void *__restrict__ bias, int bdt, float *__restrict__ y)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, TN = (int64_t)T * N;
    if (i >= TN) return;
    float s = bias ? cu_load_dt(bias, bdt, i % N) : 0.0f, p = 0.0f;
    for (int k = 0; k < splits; k++) p += partial[k * TN + i];
    y[i] = p + s;
}

extern "C" int loom__cu_awq_gemv_splits(int64_t K, int64_t N, int sm_count)
{
    int64_t blocks_n = (N + 127) / 128, groups = K / LOOM_AWQ_GROUP;
    int64_t want = (2 * (int64_t)sm_count + blocks_n - 1) / blocks_n;
    if (want < 1) want = 1;
    if (want > groups) want = groups;
    int64_t gps = (groups + want - 1) / want;
    return (int)((groups + gps - 1) / gps);
}

extern "C" cudaError_t loom__cu_awq_gemv(cudaStream_t s, const float *x, const cu_awq *w, const void *bias, int bdt,
                                         float *y, int T, int splits, float *partial)
{
    int K = (int)w->K, N = (int)w->N, groups = K / LOOM_AWQ_GROUP;
    if (splits < 1 || !partial) splits = 1;
    int gps = (groups + splits - 1) / splits;
    splits = (groups + gps - 1) / gps;
    dim3 grid((unsigned)((N + 127) / 128), (unsigned)splits);
    const uint4 *q = (const uint4 *)w->q;
#define AWQ_L(NT) awq_gemv_kernel<NT><<<grid, 128, 0, s>>>(x, q, w->meta, bias, bdt, y, partial, T, K, N, gps)
    if (T == 1) AWQ_L(1);
    else if (T == 2) AWQ_L(2);
    else if (T <= 4) AWQ_L(4);
    else AWQ_L(8);
#undef AWQ_L
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess || splits == 1) return e;
    int64_t TN = (int64_t)T * N;
    splitk_reduce_kernel<<<(unsigned)((TN + 255) / 256), 256, 0, s>>>(partial, splits, T, N, bias, bdt, y);
    return cudaGetLastError();
}
