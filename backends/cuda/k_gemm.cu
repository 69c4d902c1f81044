/* k_gemm.cu — the tensor-core matmul for many rows (prefill):
 *   y[T,N] = x[T,K] · Wᵀ + bias, W dense f16/bf16 [N][K] or AWQ (repacked, cuda_impl.h).
 *
 * Block tile BM (64 or 128 rows of x) x 128 (columns of y) x 32 (K); 8 warps as
 * 2 x 4, each owning BM/2 x 32 of the output as mma.sync m16n8k16 tiles with f32
 * accumulators, their fragments loaded from shared memory by ldmatrix. Two
 * shared-memory stages: while the warps multiply one k-tile, every thread
 * already has the next one's global loads in flight into registers and writes
 * them to the other stage afterwards, so one barrier per k-tile and the load
 * latency hides behind the MMAs. Converting in the loader (rather than cp.async
 * straight to shared memory) is what lets x stay f32 in memory and AWQ stay
 * 4-bit:
 *   - x is rounded to f16 for f16 and AWQ weights; for bf16 weights it is split
 *     into bf16 hi + lo (both multiplied; one bf16 rounding of x alone costs
 *     ~1e-6 NMSE per matmul).
 *   - AWQ nibbles become f16 with the exponent trick (cu_awq_frag: q - z exactly),
 *     and one f16 multiply by the scale rounds once, exactly as rounding (q - z) * s
 *     from f32 would: two weights per LOP3 + HSUB2 (or HFMA2) + HMUL2. A warp loads
 *     one 16-column tile of the packed layout (cuda_impl.h), each lane 4 consecutive
 *     k of two columns per word, stored straight into the tile's rows.
 * Shared rows are 32 + 8 halves (80 bytes): the 8 row addresses of an ldmatrix
 * phase fall in 8 distinct 16-byte bank groups.
 *
 * The loaders, the fragment addressing and the epilogue are __host__ __device__:
 * tests/cuda_host.cu runs them on the CPU with ldmatrix and mma emulated from
 * the PTX ISA's fragment layouts. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda_impl.h"
#include "k_common.cuh"

#define GM_BN 128
#define GM_BK 32
#define GM_LDS (GM_BK + 8) /* halves per shared row */
#define GM_THREADS 256

enum { GM_F16 = 0, GM_BF16 = 1, GM_AWQ = 2 }; /* the weight source */

struct gm_params {
    const float    *x;
    const void     *w;    /* dense [N][K], or the AWQ q words */
    const uint32_t *meta; /* AWQ scales and zeros */
    const void     *bias;
    int             bdt, T, K, N;
    float          *y;
};

/* Shared layout of one stage, in halves: x tile [BM][LDS] (bf16: hi, then lo), then W [128][LDS]. */
template <int BM, int SRC> struct gm_shape {
    static constexpr int A_PARTS = SRC == GM_BF16 ? 2 : 1;
    static constexpr int B_OFF = A_PARTS * BM * GM_LDS;
    static constexpr int STAGE = B_OFF + GM_BN * GM_LDS;
    static constexpr int SMEM_BYTES = 2 * STAGE * 2;
    static constexpr int A_LOADS = BM * GM_BK / 4 / GM_THREADS; /* float4 of x per thread */
    static constexpr int MT = BM / 32;                           /* m16 tiles per warp */
};

/* One k-tile of global data on its way to shared memory. */
template <int BM> struct gm_regs {
    float4 a[BM / 32];
    uint4  b[2]; /* dense: two 8-half chunks; AWQ: b[0] = {q word, q word, meta of column g, of g + 8} */
};

/* Global -> registers: the k-tile at k0 of block (m0, n0). Rows, columns and k beyond the
 * matrix load zeros (K % 8 == 0, so a 4- or 8-element chunk is wholly in or out). */
template <int BM, int SRC>
static CU_HD void gm_load(const gm_params &P, int m0, int n0, int k0, int tid, gm_regs<BM> &r)
{
    CU_UNROLL
    for (int i = 0; i < BM / 32; i++) {
        int c = tid + i * GM_THREADS, m = m0 + (c >> 3), k = k0 + (c & 7) * 4;
        r.a[i] = m < P.T && k < P.K ? CU_LDG(reinterpret_cast<const float4 *>(P.x + (int64_t)m * P.K + k))
                                    : make_float4(0.f, 0.f, 0.f, 0.f);
    }
    if (SRC == GM_AWQ) { /* warp j: tile n0/16 + j, words 2h, 2h + 1 of each lane's uint4 (h: k0's half of its chunk) */
        int tile = (n0 >> 4) + (tid >> 5), lane = tid & 31, col = tile * 16 + (lane >> 2), N16 = CU_AWQ_N16(P.N);
        r.b[0] = make_uint4(0, 0, 0, 0); /* scale 0: zero columns */
        if (col < N16) {
            uint2 q = CU_LDG(reinterpret_cast<const uint2 *>(P.w) + (((int64_t)tile * (P.K >> 6) + (k0 >> 6)) * 32 + lane) * 2 +
                             ((k0 >> 5) & 1));
            const uint32_t *m = P.meta + (int64_t)(k0 >> 7) * N16 + col;
            r.b[0] = make_uint4(q.x, q.y, CU_LDG(m), CU_LDG(m + 8));
        }
    } else {
        CU_UNROLL
        for (int i = 0; i < 2; i++) {
            int c = tid + i * GM_THREADS, n = n0 + (c >> 2), k = k0 + (c & 3) * 8;
            r.b[i] = n < P.N && k < P.K
                         ? CU_LDG(reinterpret_cast<const uint4 *>((const uint16_t *)P.w + (int64_t)n * P.K + k))
                         : make_uint4(0, 0, 0, 0);
        }
    }
}

/* Registers -> one shared stage, converting on the way. */
template <int BM, int SRC>
static CU_HD void gm_store(const gm_regs<BM> &r, int tid, uint16_t *st)
{
    typedef gm_shape<BM, SRC> S;
    CU_UNROLL
    for (int i = 0; i < BM / 32; i++) {
        int c = tid + i * GM_THREADS, at = (c >> 3) * GM_LDS + (c & 7) * 4;
        float v[4] = {r.a[i].x, r.a[i].y, r.a[i].z, r.a[i].w};
        if (SRC == GM_BF16) {
            float lo[4];
            CU_UNROLL
            for (int e = 0; e < 4; e++) {
                float hi = __bfloat162float(__float2bfloat16_rn(v[e]));
                lo[e] = v[e] - hi; /* exact */
                v[e] = hi;
            }
            *reinterpret_cast<uint2 *>(st + BM * GM_LDS + at) = make_uint2(cu_pack2(lo[0], lo[1], true), cu_pack2(lo[2], lo[3], true));
        }
        *reinterpret_cast<uint2 *>(st + at) = make_uint2(cu_pack2(v[0], v[1], SRC == GM_BF16), cu_pack2(v[2], v[3], SRC == GM_BF16));
    }
    uint16_t *bs = st + S::B_OFF;
    if (SRC == GM_AWQ) { /* (q - z) * s rounded once to f16, as the checkpoint's own f16 dequantisation */
        int lane = tid & 31, row = (tid >> 5) * 16 + (lane >> 2);
        uint32_t za = cu_awq_za(r.b[0].z), zb = cu_awq_zb(r.b[0].w);
        uint32_t sa = (r.b[0].z & 0xffffu) * 0x10001u, sb = (r.b[0].w & 0xffffu) * 0x10001u;
        CU_UNROLL
        for (int s = 0; s < 2; s++) {
            uint32_t a[4];
            cu_awq_frag(s ? r.b[0].y : r.b[0].x, za, zb, a);
            int at = s * 16 + (lane & 3) * 4; /* k of the lane's 4 weights in this k-tile */
            *reinterpret_cast<uint2 *>(bs + row * GM_LDS + at) = make_uint2(cu_hmul2(a[0], sa), cu_hmul2(a[2], sa));
            *reinterpret_cast<uint2 *>(bs + (row + 8) * GM_LDS + at) = make_uint2(cu_hmul2(a[1], sb), cu_hmul2(a[3], sb));
        }
    } else {
        CU_UNROLL
        for (int i = 0; i < 2; i++) {
            int c = tid + i * GM_THREADS;
            *reinterpret_cast<uint4 *>(bs + (c >> 2) * GM_LDS + (c & 3) * 8) = r.b[i];
        }
    }
}

/* ldmatrix .x4 row addresses (lane l gives row l & 7 of matrix l >> 3), in halves from the tile start.
 * A, rows r0..r0+15 at k = kk..kk+15: matrices (r0, kk), (r0+8, kk), (r0, kk+8), (r0+8, kk+8) are the
 * fragment registers a0..a3 of mma m16n8k16.
 * B, columns c0..c0+15: matrices (c0, kk), (c0, kk+8), (c0+8, kk), (c0+8, kk+8) are b0, b1 of the n8
 * tile at c0 and b0, b1 of the one at c0 + 8. */
static CU_HD int gm_a_row(int lane, int r0, int kk) { return (r0 + (lane & 7) + ((lane >> 3) & 1) * 8) * GM_LDS + kk + (lane >> 4) * 8; }
static CU_HD int gm_b_row(int lane, int c0, int kk) { return (c0 + (lane & 7) + (lane >> 4) * 8) * GM_LDS + kk + ((lane >> 3) & 1) * 8; }

/* The warp's output tile: rows wm .. wm + BM/2, columns wn .. wn + 32 of the block tile. */
template <int BM> static CU_HD int gm_warp_m(int warp) { return (warp >> 2) * (BM / 2); }
static CU_HD int gm_warp_n(int warp) { return (warp & 3) * 32; }

/* Accumulator (mt, nt, e) of a lane sits at row g (+8 for e >= 2), columns 2tg, 2tg + 1 of its m16n8 tile. */
template <int BM>
static CU_HD void gm_epilogue(const gm_params &P, int m0, int n0, int warp, int lane, const float (&acc)[BM / 32][4][4])
{
    int g = lane >> 2, tg = lane & 3;
    CU_UNROLL
    for (int nt = 0; nt < 4; nt++) {
        int col = n0 + gm_warp_n(warp) + nt * 8 + tg * 2;
        float b0 = 0.0f, b1 = 0.0f;
        if (P.bias) {
            if (col < P.N) b0 = cu_load_dt(P.bias, P.bdt, col);
            if (col + 1 < P.N) b1 = cu_load_dt(P.bias, P.bdt, col + 1);
        }
        CU_UNROLL
        for (int mt = 0; mt < BM / 32; mt++)
            CU_UNROLL
            for (int h = 0; h < 2; h++) {
                int row = m0 + gm_warp_m<BM>(warp) + mt * 16 + g + 8 * h;
                if (row >= P.T || col >= P.N) continue;
                float *yr = P.y + (int64_t)row * P.N + col;
                if (col + 1 < P.N && !(P.N & 1)) { /* 8-byte aligned */
                    *reinterpret_cast<float2 *>(yr) = make_float2(acc[mt][nt][2 * h] + b0, acc[mt][nt][2 * h + 1] + b1);
                } else {
                    yr[0] = acc[mt][nt][2 * h] + b0;
                    if (col + 1 < P.N) yr[1] = acc[mt][nt][2 * h + 1] + b1;
                }
            }
    }
}

#ifdef __CUDA_ARCH__
static __device__ __forceinline__ void gm_ldsm4(uint32_t (&r)[4], const uint16_t *p)
{
    uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

/* The warp's MMAs over one shared stage (tests/cuda_host.cu: host_mma_stage is its CPU twin). */
template <int BM, int SRC>
static __device__ __forceinline__ void gm_mma_stage(const uint16_t *st, int warp, int lane, float (&acc)[BM / 32][4][4])
{
    typedef gm_shape<BM, SRC> S;
    const int wm = gm_warp_m<BM>(warp), wn = gm_warp_n(warp);
#pragma unroll
    for (int kk = 0; kk < GM_BK; kk += 16) {
        uint32_t a[S::MT][4], al[S::MT][4], b[4][2];
#pragma unroll
        for (int mt = 0; mt < S::MT; mt++) {
            gm_ldsm4(a[mt], st + gm_a_row(lane, wm + mt * 16, kk));
            if (SRC == GM_BF16) gm_ldsm4(al[mt], st + BM * GM_LDS + gm_a_row(lane, wm + mt * 16, kk));
        }
#pragma unroll
        for (int p = 0; p < 2; p++) {
            uint32_t r[4];
            gm_ldsm4(r, st + S::B_OFF + gm_b_row(lane, wn + p * 16, kk));
            b[2 * p][0] = r[0], b[2 * p][1] = r[1], b[2 * p + 1][0] = r[2], b[2 * p + 1][1] = r[3];
        }
#pragma unroll
        for (int mt = 0; mt < S::MT; mt++)
#pragma unroll
            for (int nt = 0; nt < 4; nt++) {
                cu_mma<SRC == GM_BF16>(acc[mt][nt], a[mt], b[nt][0], b[nt][1]);
                if (SRC == GM_BF16) cu_mma<true>(acc[mt][nt], al[mt], b[nt][0], b[nt][1]);
            }
    }
}
#endif

/* blockIdx.x walks the row tiles fastest, so the blocks sharing a weight tile run together and
 * the weight comes from DRAM about once. */
template <int BM, int SRC>
__global__ void __launch_bounds__(GM_THREADS) gemm_kernel(const gm_params P)
{
#ifdef __CUDA_ARCH__
    extern __shared__ __align__(16) uint16_t gm_smem[];
    typedef gm_shape<BM, SRC> S;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * GM_BN, nk = (P.K + GM_BK - 1) / GM_BK;
    float acc[BM / 32][4][4];
#pragma unroll
    for (int i = 0; i < BM / 32; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.0f;
    gm_regs<BM> r;
    gm_load<BM, SRC>(P, m0, n0, 0, tid, r);
    gm_store<BM, SRC>(r, tid, gm_smem);
    __syncthreads();
    for (int kt = 0; kt < nk; kt++) {
        const bool more = kt + 1 < nk;
        if (more) gm_load<BM, SRC>(P, m0, n0, (kt + 1) * GM_BK, tid, r);
        gm_mma_stage<BM, SRC>(gm_smem + (kt & 1) * S::STAGE, warp, lane, acc);
        /* the other stage was last read in iteration kt - 1, before the barrier that ended it */
        if (more) gm_store<BM, SRC>(r, tid, gm_smem + ((kt + 1) & 1) * S::STAGE);
        __syncthreads();
    }
    gm_epilogue<BM>(P, m0, n0, warp, lane, acc);
#endif
}

/* 128-row tiles when they still give every SM two blocks; 64 otherwise (short prompts,
 * narrow matrices such as k/v), trading weight re-reads for occupancy. */
static int gm_rows(int T, int N, int sm_count)
{
    int64_t tiles = (int64_t)((T + 127) / 128) * ((N + GM_BN - 1) / GM_BN);
    return tiles >= 2 * (int64_t)sm_count ? 128 : 64;
}

template <int BM, int SRC> static cudaError_t gm_launch(cudaStream_t s, const gm_params &P)
{
    dim3 grid((unsigned)((P.T + BM - 1) / BM), (unsigned)((P.N + GM_BN - 1) / GM_BN));
    gemm_kernel<BM, SRC><<<grid, GM_THREADS, gm_shape<BM, SRC>::SMEM_BYTES, s>>>(P);
    return cudaGetLastError();
}

template <int SRC> static cudaError_t gm_run(cudaStream_t s, const gm_params &P, int sm_count)
{
    if (P.N > 65535 * GM_BN) return cudaErrorInvalidValue;
    return gm_rows(P.T, P.N, sm_count) == 128 ? gm_launch<128, SRC>(s, P) : gm_launch<64, SRC>(s, P);
}

template <int BM, int SRC> static cudaError_t gm_allow_smem(void)
{
    return cudaFuncSetAttribute(gemm_kernel<BM, SRC>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                gm_shape<BM, SRC>::SMEM_BYTES);
}

/* The bf16 128-row tile needs 60 KiB of shared memory: above the 48 KiB default. */
extern "C" cudaError_t loom__cu_gemm_init(void)
{
    cudaError_t e;
    if ((e = gm_allow_smem<64, GM_F16>()) || (e = gm_allow_smem<128, GM_F16>()) || (e = gm_allow_smem<64, GM_BF16>()) ||
        (e = gm_allow_smem<128, GM_BF16>()) || (e = gm_allow_smem<64, GM_AWQ>()) || (e = gm_allow_smem<128, GM_AWQ>()))
        return e;
    return cudaSuccess;
}

extern "C" cudaError_t loom__cu_gemm(cudaStream_t s, const float *x, const void *w, int wdt, const void *bias, int bdt,
                                     float *y, int T, int64_t K, int64_t N, int sm_count)
{
    if (K % 8 || !cu_aligned16(x) || !cu_aligned16(w) || (wdt != LOOM_F16 && wdt != LOOM_BF16) || K > INT32_MAX)
        return loom__cu_gemv(s, x, w, wdt, bias, bdt, y, T, K, N, sm_count);
    gm_params P = {x, w, nullptr, bias, bdt, T, (int)K, (int)N, y};
    return wdt == LOOM_BF16 ? gm_run<GM_BF16>(s, P, sm_count) : gm_run<GM_F16>(s, P, sm_count);
}

extern "C" cudaError_t loom__cu_awq_gemm(cudaStream_t s, const float *x, const cu_awq *w, const void *bias, int bdt,
                                         float *y, int T, int sm_count)
{
    gm_params P = {x, w->q, w->meta, bias, bdt, T, (int)w->K, (int)w->N, y};
    return gm_run<GM_AWQ>(s, P, sm_count);
}
