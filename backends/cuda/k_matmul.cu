/* k_matmul.cu — dense matmul (y = x · wᵀ + b, w [N,K] f32/f16/bf16) and AWQ
 * int4 matmul (y = x · w + b, w {K,N} repacked, see cuda_impl.h).
 *
 * Few rows (decode): GEMV kernels that stream the weight once with 16-byte
 * loads and widen it in registers; every row of x (up to 8) is applied to each
 * weight element while it is in registers.
 * Many rows (prefill): the tensor-core kernel in k_gemm.cu. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda_impl.h"
#include "k_common.cuh"

/* ====================================================================================
 * Dense GEMV (few rows): a warp computes R consecutive output columns, its lanes
 * striding over K 8 elements (16 bytes of f16/bf16) at a time; the x chunk a
 * lane loads serves all R columns, and R weight loads are in flight per step.
 * Lane partial sums go to shared memory and are added in lane order
 * (deterministic). Two __host__ __device__ phases, as the AWQ GEMV below, so
 * tests/cuda_host.cu runs them on the CPU.
 * ==================================================================================== */
#define GEMV_WARPS 8

struct gemv_params {
    const float *x;
    const void  *w, *bias;
    int          bdt, T, vec;
    int64_t      K, N;
    float       *y;
};

template <typename WT, int NT, int R>
static CU_HD void gemv_sum(const gemv_params &P, int b, int tid, float *red)
{
    const WT *w = (const WT *)P.w;
    int warp = tid >> 5, lane = tid & 31, T = P.T;
    int64_t n0 = ((int64_t)b * GEMV_WARPS + warp) * R, K = P.K;
    float acc[R][NT];
    CU_UNROLL
    for (int r = 0; r < R; r++)
        CU_UNROLL
        for (int t = 0; t < NT; t++) acc[r][t] = 0.0f;
    if (P.vec) {
        for (int64_t c = lane; c < K / 8; c += 32) {
            float wf[R][8];
            CU_UNROLL
            for (int r = 0; r < R; r++) {
                int64_t n = n0 + r < P.N ? n0 + r : P.N - 1; /* past the end: a valid row, never stored */
                load8(w + n * K + c * 8, wf[r]);
            }
            CU_UNROLL
            for (int t = 0; t < NT; t++) {
                if (t < T) {
                    float xf[8];
                    load8(P.x + (int64_t)t * K + c * 8, xf);
                    CU_UNROLL
                    for (int r = 0; r < R; r++) {
                        float s = acc[r][t];
                        CU_UNROLL
                        for (int i = 0; i < 8; i++) s = fmaf(xf[i], wf[r][i], s);
                        acc[r][t] = s;
                    }
                }
            }
        }
    } else {
        for (int64_t k = lane; k < K; k += 32)
            CU_UNROLL
            for (int r = 0; r < R; r++) {
                int64_t n = n0 + r < P.N ? n0 + r : P.N - 1;
                float wv = cu_to_f32(w[n * K + k]);
                CU_UNROLL
                for (int t = 0; t < NT; t++)
                    if (t < T) acc[r][t] = fmaf(P.x[(int64_t)t * K + k], wv, acc[r][t]);
            }
    }
    CU_UNROLL
    for (int r = 0; r < R; r++)
        CU_UNROLL
        for (int t = 0; t < NT; t++) red[((warp * R + r) * NT + t) * 32 + lane] = acc[r][t];
}

template <int NT, int R>
static CU_HD void gemv_out(const gemv_params &P, int b, int tid, const float *red)
{
    for (int i = tid; i < GEMV_WARPS * R * NT; i += GEMV_WARPS * 32) {
        int t = i % NT, wr = i / NT; /* wr = warp * R + r */
        int64_t n = (int64_t)b * GEMV_WARPS * R + wr;
        if (t >= P.T || n >= P.N) continue;
        float s = 0.0f;
        for (int l = 0; l < 32; l++) s += red[i * 32 + l];
        P.y[(int64_t)t * P.N + n] = s + (P.bias ? cu_load_dt(P.bias, P.bdt, n) : 0.0f);
    }
}

template <typename WT, int NT, int R>
__global__ void __launch_bounds__(GEMV_WARPS * 32) gemv_kernel(const gemv_params P)
{
    __shared__ float red[GEMV_WARPS * R * NT * 32];
    gemv_sum<WT, NT, R>(P, blockIdx.x, threadIdx.x, red);
    __syncthreads();
    gemv_out<NT, R>(P, blockIdx.x, threadIdx.x, red);
}

/* Columns per warp: 4 where that still gives every SM two blocks (large N:
 * lm_head, MLP), fewer for small N so the grid still spreads. */
static int gemv_r(int64_t N, int sm_count)
{
    int64_t per_block = GEMV_WARPS;
    if ((N + 4 * per_block - 1) / (4 * per_block) >= 2 * (int64_t)sm_count) return 4;
    if ((N + 2 * per_block - 1) / (2 * per_block) >= 2 * (int64_t)sm_count) return 2;
    return 1;
}

/* Run F<WT, NT, R>(P, blocks) for each chunk of up to CU_GEMV_MAX_T rows. */
template <typename WT, typename F>
static cudaError_t gemv_chunks(const float *x, const void *w, const void *bias, int bdt, float *y, int T, int64_t K,
                               int64_t N, int sm_count, F run)
{
    gemv_params P = {};
    P.w = w, P.bias = bias, P.bdt = bdt, P.K = K, P.N = N;
    P.vec = K % 8 == 0 && cu_aligned16(x) && cu_aligned16(w);
    int R = gemv_r(N, sm_count);
    unsigned blocks = (unsigned)((N + GEMV_WARPS * R - 1) / (GEMV_WARPS * R));
    for (int t0 = 0; t0 < T; t0 += CU_GEMV_MAX_T) {
        P.T = T - t0 < CU_GEMV_MAX_T ? T - t0 : CU_GEMV_MAX_T;
        P.x = x + (int64_t)t0 * K, P.y = y + (int64_t)t0 * N;
        int nt = P.T == 1 ? 1 : P.T == 2 ? 2 : P.T <= 4 ? 4 : 8;
#define GEMV_R(NT) (R == 4 ? run.template go<WT, NT, 4>(P, blocks) : R == 2 ? run.template go<WT, NT, 2>(P, blocks) \
                                                                     : run.template go<WT, NT, 1>(P, blocks))
        cudaError_t e = nt == 1 ? GEMV_R(1) : nt == 2 ? GEMV_R(2) : nt == 4 ? GEMV_R(4) : GEMV_R(8);
#undef GEMV_R
        if (e != cudaSuccess) return e;
    }
    return cudaSuccess;
}

template <typename F>
static cudaError_t gemv_typed(const float *x, const void *w, int wdt, const void *bias, int bdt, float *y, int T,
                              int64_t K, int64_t N, int sm_count, F run)
{
    switch (wdt) {
    case LOOM_F32: return gemv_chunks<float>(x, w, bias, bdt, y, T, K, N, sm_count, run);
    case LOOM_F16: return gemv_chunks<__half>(x, w, bias, bdt, y, T, K, N, sm_count, run);
    case LOOM_BF16: return gemv_chunks<__nv_bfloat16>(x, w, bias, bdt, y, T, K, N, sm_count, run);
    default: return cudaErrorInvalidValue;
    }
}

struct gemv_launch {
    cudaStream_t s;
    template <typename WT, int NT, int R> cudaError_t go(const gemv_params &P, unsigned blocks) const
    {
        gemv_kernel<WT, NT, R><<<blocks, GEMV_WARPS * 32, 0, s>>>(P);
        return cudaGetLastError();
    }
};

extern "C" cudaError_t loom__cu_gemv(cudaStream_t s, const float *x, const void *w, int wdt, const void *bias, int bdt,
                                     float *y, int T, int64_t K, int64_t N, int sm_count)
{
    return gemv_typed(x, w, wdt, bias, bdt, y, T, K, N, sm_count, gemv_launch{s});
}

#ifdef LOOM_CU_HOST_TEST
struct gemv_host {
    template <typename WT, int NT, int R> cudaError_t go(const gemv_params &P, unsigned blocks) const
    {
        static float red[GEMV_WARPS * 4 * CU_GEMV_MAX_T * 32];
        for (unsigned b = 0; b < blocks; b++) {
            for (int t = 0; t < GEMV_WARPS * 32; t++) gemv_sum<WT, NT, R>(P, (int)b, t, red);
            for (int t = 0; t < GEMV_WARPS * 32; t++) gemv_out<NT, R>(P, (int)b, t, red);
        }
        return cudaSuccess;
    }
};

cudaError_t loom__cu_gemv_host(const float *x, const void *w, int wdt, const void *bias, int bdt, float *y, int T,
                               int64_t K, int64_t N, int sm_count)
{
    return gemv_typed(x, w, wdt, bias, bdt, y, T, K, N, sm_count, gemv_host{});
}
#endif

/* ====================================================================================
 * AWQ: repack and GEMV
 * ==================================================================================== */
extern "C" size_t loom__cu_awq_packed_bytes(int64_t K, int64_t N)
{
    return (size_t)(K / 32) * (size_t)N * 16 + (size_t)(K / LOOM_AWQ_GROUP) * (size_t)N * 4;
}

/* Column n of k = 32kb.. from the checkpoint blob: 32 nibbles into one uint4, and the
 * group's scale and zero into one meta word. */
static CU_HD void awq_repack_one(const uint32_t *__restrict__ qweight, const uint32_t *__restrict__ qzeros,
                                 const uint16_t *__restrict__ scales, uint4 *__restrict__ q, uint32_t *__restrict__ meta,
                                 int N, int n, int kb)
{
    const int inv_order[8] = {0, 4, 1, 5, 2, 6, 3, 7}; /* column offset -> nibble */
    int N8 = N / 8, c = n >> 3, sh = 4 * inv_order[n & 7];
    uint32_t wd[4];
CU_UNROLL
    for (int j = 0; j < 4; j++) {
        uint32_t v = 0;
CU_UNROLL
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

/* One thread per (kb, n). */
__global__ void awq_repack_kernel(const uint32_t *__restrict__ qweight, const uint32_t *__restrict__ qzeros,
                                  const uint16_t *__restrict__ scales, uint4 *__restrict__ q, uint32_t *__restrict__ meta,
                                  int N)
{
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n < N) awq_repack_one(qweight, qzeros, scales, q, meta, N, n, blockIdx.y);
}

/* The blob's three parts: qweight u32 [K][N/8], qzeros u32 [K/128][N/8], scales f16 [K/128][N]. */
static void awq_blob_parts(const void *blob, int64_t K, int64_t N, const uint32_t **qw, const uint32_t **qz,
                           const uint16_t **sc)
{
    const uint8_t *b = (const uint8_t *)blob;
    *qw = (const uint32_t *)b;
    *qz = (const uint32_t *)(b + K * N / 2);
    *sc = (const uint16_t *)(b + K * N / 2 + (K / LOOM_AWQ_GROUP) * N / 2);
}

#ifdef LOOM_CU_HOST_TEST
void loom__cu_awq_repack_host(const void *blob, cu_awq *w)
{
    const uint32_t *qw, *qz;
    const uint16_t *sc;
    awq_blob_parts(blob, w->K, w->N, &qw, &qz, &sc);
    for (int kb = 0; kb < (int)(w->K / 32); kb++)
        for (int n = 0; n < (int)w->N; n++) awq_repack_one(qw, qz, sc, (uint4 *)w->q, w->meta, (int)w->N, n, kb);
}
#endif

extern "C" cudaError_t loom__cu_awq_repack(cudaStream_t s, const void *blob, cu_awq *w)
{
    const uint32_t *qw, *qz;
    const uint16_t *sc;
    awq_blob_parts(blob, w->K, w->N, &qw, &qz, &sc);
    dim3 grid((unsigned)((w->N + 127) / 128), (unsigned)(w->K / 32));
    awq_repack_kernel<<<grid, 128, 0, s>>>(qw, qz, sc, (uint4 *)w->q, w->meta, (int)w->N);
    return cudaGetLastError();
}

/* ------------------------------------------------------------------------------------
 * AWQ GEMV (decode). A block is CB consecutive columns x S slices of K: thread
 * (slice sl, column c) walks the groups sl, sl + S, ... of column n, loading a
 * whole group (4 x 16 bytes of nibbles and one meta word) before using it, so
 * a warp reads CB x 16 contiguous bytes per load and every byte of the weight
 * is read once. The S partial sums of a column are added in shared memory in
 * slice order: deterministic, and no second kernel.
 *
 * Dequantisation costs one LOP3, one FADD and one FFMA per weight: nibble i
 * (i <= 4) is masked in place and ORed under the exponent of 2^23, which
 * makes the float 2^23 + q*16^i exactly; subtracting 2^23 + z*16^i leaves
 * (q - z)*16^i, exact. Nibbles 5..7 are shifted down by 12 once per word and
 * land on positions 2..4. Each position keeps its own partial sum, scaled by
 * 16^-p (a power of two: exact) once per group.
 *
 * Epilogues fuse what follows the matmul in a Qwen2 layer: PLAIN writes up to
 * three outputs of weights that share x (q, k, v: one launch), SWIGLU takes a
 * gate and an up weight per thread and writes silu(gate) * up, ADD adds a
 * residual.
 *
 * The kernel is two phases around one barrier, each a __host__ __device__
 * function of (block, thread), so tests/cuda_host.cu runs the same code over
 * an emulated grid on the CPU.
 * ------------------------------------------------------------------------------------ */
struct awq_seg {
    const uint4    *q, *q2;       /* q2, meta2, bias2: the up weight (SWIGLU) */
    const uint32_t *meta, *meta2;
    const void     *bias, *bias2;
    int             bdt, bdt2;
    float          *y;
    int             N, blk0;      /* columns; first block of this segment */
    const double   *rope_freq;    /* PLAIN with RoPE: inv_freq [hd/2], or NULL */
    double          rope_mscale;
    int             rope_hd;
    void           *cache;        /* PLAIN: the KV cache this output is also stored in, or NULL */
};
struct awq_params {
    const float *x, *r; /* r: the residual (ADD) */
    int          T, K, nseg, cb, blocks;
    awq_seg      seg[CU_GEMV_MAX_W];
    const void  *nw;    /* ADD + rmsnorm: weight, its dtype, eps, output, arrival counter */
    int          nwdt;
    float        eps;
    float       *yn;
    int         *counter;
    const int32_t *pos, *seq; /* RoPE, cache store: the step's positions and sequence slots */
    int          cache_f16, cache_hd, cache_C;
};

/* Store v as element (seq[t], head, pos[t], d) of a [S, N/hd, C, hd] cache,
 * unless a later token of the step writes the same cell (it wins, as in
 * gqa_attn's own store). */
static CU_HD void awq_cache_store(const awq_params &P, const awq_seg &sg, int t, int n, float v)
{
    int sl = P.seq[t], p = P.pos[t];
    for (int u = t + 1; u < P.T; u++)
        if (P.seq[u] == sl && P.pos[u] == p) return;
    int H = sg.N / P.cache_hd, h = n / P.cache_hd, d = n % P.cache_hd;
    size_t at = (((size_t)sl * H + h) * P.cache_C + p) * P.cache_hd + d;
    if (P.cache_f16) ((__half *)sg.cache)[at] = __float2half_rn(v);
    else ((float *)sg.cache)[at] = v;
}
#define AWQ_THREADS 256

static CU_HD uint32_t mask_nib(uint32_t w, uint32_t m)
{
    return (w & m) | 0x4B000000u; /* one LOP3 */
}

/* acc[t] += s * sum over the group of x[t][k] * (q - z) */
template <int NT>
static CU_HD void awq_group(const uint4 (&w)[4], uint32_t mt, const float *__restrict__ x, int T, int K, int k0,
                            float (&acc)[NT])
{
    float zc[5];
CU_UNROLL
    for (int p = 0; p < 5; p++) zc[p] = 8388608.0f + (float)((mt >> 16) << (4 * p));
    float ga[NT][5];
CU_UNROLL
    for (int t = 0; t < NT; t++)
CU_UNROLL
        for (int p = 0; p < 5; p++) ga[t][p] = 0.0f;
CU_UNROLL
    for (int j = 0; j < 4; j++) {
        const uint32_t ww[4] = {w[j].x, w[j].y, w[j].z, w[j].w};
CU_UNROLL
        for (int jj = 0; jj < 4; jj++) {
            uint32_t lo = ww[jj], hi = lo >> 12;
            float v[8];
CU_UNROLL
            for (int i = 0; i < 5; i++) v[i] = cu_bits_f32(mask_nib(lo, 15u << (4 * i))) - zc[i];
CU_UNROLL
            for (int i = 5; i < 8; i++) v[i] = cu_bits_f32(mask_nib(hi, 15u << (4 * (i - 3)))) - zc[i - 3];
            int k = k0 + j * 32 + jj * 8;
CU_UNROLL
            for (int t = 0; t < NT; t++) {
                if (t < T) {
                    const float4 *xp = reinterpret_cast<const float4 *>(x + (int64_t)t * K + k);
                    float4 a = CU_LDG(xp), b = CU_LDG(xp + 1);
                    ga[t][0] = fmaf(a.x, v[0], ga[t][0]);
                    ga[t][1] = fmaf(a.y, v[1], ga[t][1]);
                    ga[t][2] = fmaf(a.z, v[2], ga[t][2]);
                    ga[t][3] = fmaf(a.w, v[3], ga[t][3]);
                    ga[t][4] = fmaf(b.x, v[4], ga[t][4]);
                    ga[t][2] = fmaf(b.y, v[5], ga[t][2]);
                    ga[t][3] = fmaf(b.z, v[6], ga[t][3]);
                    ga[t][4] = fmaf(b.w, v[7], ga[t][4]);
                }
            }
        }
    }
    float sc = cu_f16_f32((unsigned short)(mt & 0xffffu));
CU_UNROLL
    for (int t = 0; t < NT; t++) {
        float g = ga[t][0] + ga[t][1] * 0x1p-4f + ga[t][2] * 0x1p-8f + ga[t][3] * 0x1p-12f + ga[t][4] * 0x1p-16f;
        acc[t] = fmaf(sc, g, acc[t]);
    }
}

static CU_HD void awq_load(const uint4 *__restrict__ q, const uint32_t *__restrict__ meta, int gi, int N, int n,
                           uint4 (&w)[4], uint32_t &mt)
{
CU_UNROLL
    for (int j = 0; j < 4; j++) w[j] = CU_LDG(q + (int64_t)(gi * 4 + j) * N + n);
    mt = CU_LDG(meta + (int64_t)gi * N + n);
}

static CU_HD const awq_seg &awq_segment(const awq_params &P, int b)
{
    return P.nseg > 2 && b >= P.seg[2].blk0 ? P.seg[2] : P.nseg > 1 && b >= P.seg[1].blk0 ? P.seg[1] : P.seg[0];
}

/* Column of thread column c in block b. With RoPE a block takes CB/2 columns
 * from each half of one head, so both columns of every rotated pair end in
 * the same block (hd % CB == 0). */
template <int CB> static CU_HD int awq_column(const awq_seg &sg, int b, int c)
{
    int bl = b - sg.blk0;
    if (!sg.rope_hd) return bl * CB + c;
    int units = sg.rope_hd / CB, h = bl / units, u = bl % units;
    return h * sg.rope_hd + u * (CB / 2) + c % (CB / 2) + (c / (CB / 2)) * (sg.rope_hd / 2);
}

template <int EPI> struct awq_outs {
    enum { n = EPI == CU_EPI_SWIGLU ? 2 : 1 }; /* weights per column: gate and up, or one */
};

/* Phase 1: thread tid of block b sums its slice of one weight of its column into
 * red[o][sl][t][c]. The block's slices are split evenly between the NO weights (gate
 * and up), so a thread holds one weight's registers, as in the plain GEMV. */
template <int NT, int CB, int EPI>
static CU_HD void awq_gemv_sum(const awq_params &P, int b, int tid, int nthreads, float *red)
{
    constexpr int NO = awq_outs<EPI>::n;
    const awq_seg &sg = awq_segment(P, b);
    const int SH = nthreads / CB / NO, c = tid % CB, o = tid / CB / SH, sl = tid / CB % SH;
    const int K = P.K, T = P.T, N = sg.N, n = awq_column<CB>(sg, b, c), groups = K / LOOM_AWQ_GROUP;
    if (o >= NO) return; /* a slice left over by rounding to whole warps */
    const uint4 *q = o ? sg.q2 : sg.q;
    const uint32_t *meta = o ? sg.meta2 : sg.meta;
    float acc[NT];
CU_UNROLL
    for (int t = 0; t < NT; t++) acc[t] = 0.0f;
    for (int gi = sl; n < N && gi < groups; gi += SH) {
        uint4 w[4];
        uint32_t mt;
        awq_load(q, meta, gi, N, n, w, mt);
        awq_group<NT>(w, mt, P.x, T, K, gi * LOOM_AWQ_GROUP, acc);
    }
CU_UNROLL
    for (int t = 0; t < NT; t++) red[((o * SH + sl) * NT + t) * CB + c] = acc[t];
}

/* Output o of column c, row t: its S slice sums added in slice order. */
template <int NT, int CB> static CU_HD float awq_slices(const float *red, int o, int S, int t, int c)
{
    float s = 0.0f;
    for (int j = 0; j < S; j++) s += red[((o * S + j) * NT + t) * CB + c];
    return s;
}

/* Phase 2: the T x CB outputs of block b, each the sum of its S slices in order, then the epilogue. */
template <int NT, int CB, int EPI>
static CU_HD void awq_gemv_out(const awq_params &P, int b, int tid, int nthreads, const float *red)
{
    constexpr int NO = awq_outs<EPI>::n;
    const awq_seg &sg = awq_segment(P, b);
    const int S = nthreads / CB / NO, N = sg.N; /* slices per weight */
    for (int i = tid; i < P.T * CB; i += nthreads) {
        int t = i / CB, c = i % CB, n = awq_column<CB>(sg, b, c);
        if (n >= N) continue;
        float v[NO];
CU_UNROLL
        for (int o = 0; o < NO; o++) v[o] = awq_slices<NT, CB>(red, o, S, t, c);
        v[0] += sg.bias ? cu_load_dt(sg.bias, sg.bdt, n) : 0.0f;
        int64_t at = (int64_t)t * N + n;
        if (EPI == CU_EPI_PLAIN && sg.rope_hd) { /* neox pair (n, n ± hd/2), as rope_kernel turns it */
            int h2 = sg.rope_hd / 2, first = c < CB / 2, pc = first ? c + CB / 2 : c - CB / 2;
            int pn = first ? n + h2 : n - h2, fi = n % sg.rope_hd % h2;
            float other = awq_slices<NT, CB>(red, 0, S, t, pc) + (sg.bias ? cu_load_dt(sg.bias, sg.bdt, pn) : 0.0f);
            double sn, cs;
            sincos((double)P.pos[t] * sg.rope_freq[fi], &sn, &cs);
            float fc = (float)(cs * sg.rope_mscale), fs = (float)(sn * sg.rope_mscale);
            sg.y[at] = first ? v[0] * fc - other * fs : v[0] * fc + other * fs;
            if (sg.cache) awq_cache_store(P, sg, t, n, sg.y[at]);
            continue;
        }
        if (EPI == CU_EPI_PLAIN && sg.cache) awq_cache_store(P, sg, t, n, v[0]);
        if (EPI == CU_EPI_SWIGLU)
            sg.y[at] = cu_silu_mul(v[0], v[NO - 1] + (sg.bias2 ? cu_load_dt(sg.bias2, sg.bdt2, n) : 0.0f));
        else if (EPI == CU_EPI_ADD)
            sg.y[at] = v[0] + P.r[at];
        else
            sg.y[at] = v[0];
    }
}

/* ADD + rmsnorm, run by the block that finishes last, when every block's
 * outputs are in memory: the rows of y (N wide) are normalised into yn.
 * a: per-thread sums of squares; b: their sum in thread order, 1/rms per row;
 * c: yn = y * inv * w. red holds T x nthreads floats, then T inverses. */
static CU_HD void awq_norm_a(const awq_params &P, int tid, int nthreads, float *red)
{
    const awq_seg &sg = P.seg[0];
    for (int t = 0; t < P.T; t++) {
        float ss = 0.0f;
        for (int n = tid; n < sg.N; n += nthreads) {
            float v = CU_LDCG(sg.y + (int64_t)t * sg.N + n);
            ss = fmaf(v, v, ss);
        }
        red[t * nthreads + tid] = ss;
    }
}

static CU_HD void awq_norm_b(const awq_params &P, int tid, int nthreads, float *red)
{
    if (tid >= P.T) return;
    float ss = 0.0f;
    for (int i = 0; i < nthreads; i++) ss += red[tid * nthreads + i];
    red[P.T * nthreads + tid] = cu_rms_inv(ss, P.seg[0].N, P.eps);
}

static CU_HD void awq_norm_c(const awq_params &P, int tid, int nthreads, const float *red)
{
    const awq_seg &sg = P.seg[0];
    for (int t = 0; t < P.T; t++) {
        float inv = red[P.T * nthreads + t];
        for (int n = tid; n < sg.N; n += nthreads) {
            int64_t at = (int64_t)t * sg.N + n;
            P.yn[at] = CU_LDCG(sg.y + at) * inv * cu_load_dt(P.nw, P.nwdt, n);
        }
    }
}

/* Before the previous kernel's results may be read (cu_pdl_wait): pull this thread's weights
 * (constants) into L2, so the loads after the wait find them there. */
template <int CB, int EPI> static __device__ void awq_prefetch(const awq_params &P)
{
    const awq_seg &sg = awq_segment(P, blockIdx.x);
    const int S = blockDim.x / CB, c = threadIdx.x % CB, n = awq_column<CB>(sg, blockIdx.x, c);
    if (n >= sg.N) return;
    for (int gi = threadIdx.x / CB; gi < P.K / LOOM_AWQ_GROUP; gi += S)
        for (int j = 0; j < 4; j++) {
            cu_prefetch_l2(sg.q + (int64_t)(gi * 4 + j) * sg.N + n);
            if (EPI == CU_EPI_SWIGLU) cu_prefetch_l2(sg.q2 + (int64_t)(gi * 4 + j) * sg.N + n);
        }
}

template <int NT, int CB, int EPI>
__global__ void __launch_bounds__(AWQ_THREADS) awq_gemv_kernel(const awq_params P)
{
    __shared__ float red[awq_outs<EPI>::n * AWQ_THREADS * NT + CU_GEMV_MAX_T];
    __shared__ bool last;
    cu_pdl_trigger();
    awq_prefetch<CB, EPI>(P);
    cu_pdl_wait();
    awq_gemv_sum<NT, CB, EPI>(P, blockIdx.x, threadIdx.x, blockDim.x, red);
    __syncthreads();
    awq_gemv_out<NT, CB, EPI>(P, blockIdx.x, threadIdx.x, blockDim.x, red);
    if (EPI != CU_EPI_ADD || !P.yn) return;
    /* Each block publishes its outputs, then counts itself in; the last one in
     * sees them all (fence, then the atomic), normalises, and re-arms the counter. */
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(P.counter, 1) == P.blocks - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    awq_norm_a(P, threadIdx.x, blockDim.x, red);
    __syncthreads();
    awq_norm_b(P, threadIdx.x, blockDim.x, red);
    __syncthreads();
    awq_norm_c(P, threadIdx.x, blockDim.x, red);
    if (threadIdx.x == 0) *P.counter = 0;
}

/* Columns per block: the widest run (longest contiguous reads) that still
 * gives every SM two blocks and leaves each thread at most two groups to walk
 * (a thread's groups run one after another: on the H100 7B gate/up took 74 us
 * at 32 columns, 7 groups a thread, and 49 us at 8); slices: up to AWQ_THREADS
 * threads, at most one per group. */
static cudaError_t awq_geometry(const cu_awq_gemv_args *a, int sm_count, awq_params *P, int *blocks, int *threads)
{
    if (a->n < 1 || a->n > CU_GEMV_MAX_W || (a->epi == CU_EPI_SWIGLU && a->n != 2) ||
        (a->epi == CU_EPI_ADD && (a->n != 1 || !a->r)) || a->T < 1 || a->T > CU_GEMV_MAX_T)
        return cudaErrorInvalidValue;
    *P = awq_params{};
    P->x = a->x, P->r = a->r, P->T = a->T, P->K = (int)a->w[0]->K;
    int nw = a->epi == CU_EPI_SWIGLU ? 1 : a->n;
    int64_t cols = 0;
    for (int i = 0; i < nw; i++) cols += a->w[i]->N;
    int no = a->epi == CU_EPI_SWIGLU ? 2 : 1, groups = P->K / LOOM_AWQ_GROUP, cb = 8;
    for (int w = 32; w > 8; w /= 2) /* widest that still fills the GPU and leaves <= 2 groups per thread */
        if ((cols + w - 1) / w >= 2 * (int64_t)sm_count && groups <= 2 * (AWQ_THREADS / w / no)) {
            cb = w;
            break;
        }
    int nb = 0;
    for (int i = 0; i < nw; i++) {
        const cu_awq *w = a->w[i];
        if (w->K != P->K || w->K % LOOM_AWQ_GROUP) return cudaErrorInvalidValue;
        awq_seg &g = P->seg[i];
        g.q = (const uint4 *)w->q, g.meta = w->meta, g.bias = a->bias[i], g.bdt = a->bdt[i], g.y = a->y[i];
        g.N = (int)w->N, g.blk0 = nb;
        g.rope_freq = a->rope_freq[i], g.rope_mscale = a->rope_mscale[i], g.rope_hd = a->rope_freq[i] ? a->rope_hd[i] : 0;
        if (g.rope_hd && (a->epi != CU_EPI_PLAIN || !a->pos || g.rope_hd % cb || g.N % g.rope_hd))
            return cudaErrorInvalidValue;
        g.cache = a->cache[i];
        if (g.cache && (a->epi != CU_EPI_PLAIN || !a->pos || !a->seq || a->cache_hd < 1 || g.N % a->cache_hd ||
                        a->cache_C < 1))
            return cudaErrorInvalidValue;
        nb += (int)((w->N + cb - 1) / cb);
    }
    if (a->epi == CU_EPI_SWIGLU) {
        const cu_awq *u = a->w[1];
        if (u->K != P->K || u->N != a->w[0]->N) return cudaErrorInvalidValue;
        P->seg[0].q2 = (const uint4 *)u->q, P->seg[0].meta2 = u->meta, P->seg[0].bias2 = a->bias[1];
        P->seg[0].bdt2 = a->bdt[1];
    }
    if (a->norm_y && (a->epi != CU_EPI_ADD || !a->norm_w || !a->counter)) return cudaErrorInvalidValue;
    P->pos = a->pos, P->seq = a->seq, P->cache_f16 = a->cache_f16, P->cache_hd = a->cache_hd, P->cache_C = a->cache_C;
    P->nw = a->norm_w, P->nwdt = a->norm_wdt, P->eps = a->norm_eps, P->yn = a->norm_y, P->counter = a->counter;
    P->nseg = nw, P->cb = cb, P->blocks = nb;
    /* slices of K per weight (SWIGLU: gate and up each get half the block) */
    int S = AWQ_THREADS / cb / no;
    if (S > groups) S = groups;
    *threads = (cb * S * no + 31) / 32 * 32; /* whole warps: extra slices find no group (or no weight) */
    *blocks = nb;
    return cudaSuccess;
}

static int awq_nt(int T) { return T == 1 ? 1 : T == 2 ? 2 : T <= 4 ? 4 : 8; }

/* Instantiate F<NT, CB, EPI> for the runtime values. */
#define AWQ_DISPATCH(F, nt, cb, epi)                                                                         \
    do {                                                                                                     \
        switch ((epi) * 100 + (nt) * 10 + ((cb) == 32 ? 2 : (cb) == 16 ? 1 : 0)) {                           \
            AWQ_CASES(F, 0) AWQ_CASES(F, 1) AWQ_CASES(F, 2)                                                  \
        }                                                                                                    \
    } while (0)
#define AWQ_CASES(F, E) AWQ_CASE_NT(F, E, 1) AWQ_CASE_NT(F, E, 2) AWQ_CASE_NT(F, E, 4) AWQ_CASE_NT(F, E, 8)
#define AWQ_CASE_NT(F, E, NT)                                                                                \
    case E * 100 + NT * 10 + 2: F(NT, 32, E); break;                                                         \
    case E * 100 + NT * 10 + 1: F(NT, 16, E); break;                                                         \
    case E * 100 + NT * 10 + 0: F(NT, 8, E); break;

extern "C" cudaError_t loom__cu_awq_gemv(cudaStream_t s, const cu_awq_gemv_args *a, int sm_count)
{
    awq_params P;
    int blocks, threads;
    cudaError_t e = awq_geometry(a, sm_count, &P, &blocks, &threads);
    if (e) return e;
#define AWQ_LAUNCH(NT, CB, EPI) e = cu_launch(awq_gemv_kernel<NT, CB, EPI>, dim3(blocks), dim3(threads), 0, s, a->pdl, P)
    AWQ_DISPATCH(AWQ_LAUNCH, awq_nt(a->T), P.cb, a->epi);
#undef AWQ_LAUNCH
    return e;
}

#ifdef LOOM_CU_HOST_TEST
/* The same computation on the CPU, block by block (tests/cuda_host.cu). */
cudaError_t loom__cu_awq_gemv_host(const cu_awq_gemv_args *a, int sm_count)
{
    awq_params P;
    int blocks, threads;
    cudaError_t e = awq_geometry(a, sm_count, &P, &blocks, &threads);
    if (e) return e;
    static float red[2 * AWQ_THREADS * CU_GEMV_MAX_T + CU_GEMV_MAX_T];
#define AWQ_HOST(NT, CB, EPI)                                                                                \
    for (int b = 0; b < blocks; b++) {                                                                       \
        for (int t = 0; t < threads; t++) awq_gemv_sum<NT, CB, EPI>(P, b, t, threads, red);                  \
        for (int t = 0; t < threads; t++) awq_gemv_out<NT, CB, EPI>(P, b, t, threads, red);                  \
    }
    AWQ_DISPATCH(AWQ_HOST, awq_nt(a->T), P.cb, a->epi);
#undef AWQ_HOST
    if (P.yn) { /* the last block's part */
        for (int t = 0; t < threads; t++) awq_norm_a(P, t, threads, red);
        for (int t = 0; t < threads; t++) awq_norm_b(P, t, threads, red);
        for (int t = 0; t < threads; t++) awq_norm_c(P, t, threads, red);
    }
    return cudaSuccess;
}
#endif
