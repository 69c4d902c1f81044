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
/* Lane idx of the packed layout (cuda_impl.h; idx = (tile * K/64 + chunk) * 32 + lane) from the
 * checkpoint blob: its uint4 of nibbles and, for chunk-pair starts, its columns' meta words. */
static CU_HD void awq_repack_one(const uint32_t *__restrict__ qweight, const uint32_t *__restrict__ qzeros,
                                 const uint16_t *__restrict__ scales, uint4 *__restrict__ q, uint32_t *__restrict__ meta,
                                 int K, int N, int64_t idx)
{
    const int inv_order[8] = {0, 4, 1, 5, 2, 6, 3, 7}; /* the checkpoint's column offset -> nibble */
    const int lane = (int)(idx & 31), KC = K / 64, chunk = (int)(idx >> 5) % KC, tile = (int)((idx >> 5) / KC);
    const int N8 = N / 8, g = lane >> 2, j = lane & 3;
    uint32_t wd[4];
CU_UNROLL
    for (int s = 0; s < 4; s++) {
        uint32_t v = 0;
CU_UNROLL
        for (int p = 0; p < 8; p++) {
            int n = tile * 16 + g + 8 * (p & 1), k = chunk * 64 + s * 16 + j * 4 + 2 * ((p >> 1) & 1) + (p >> 2);
            if (n < N) v |= ((qweight[(int64_t)k * N8 + n / 8] >> 4 * inv_order[n & 7]) & 15u) << 4 * p;
        }
        wd[s] = v;
    }
    q[idx] = make_uint4(wd[0], wd[1], wd[2], wd[3]);
    if (chunk % 2 == 0 && j == 0) {
        int gi = chunk / 2, N16 = CU_AWQ_N16(N);
        for (int n = tile * 16 + g; n < tile * 16 + 16; n += 8)
            meta[(int64_t)gi * N16 + n] =
                n < N ? (uint32_t)scales[(int64_t)gi * N + n] | ((qzeros[(int64_t)gi * N8 + n / 8] >> 4 * inv_order[n & 7]) & 15u) << 16
                      : 0u;
    }
}

__global__ void awq_repack_kernel(const uint32_t *__restrict__ qweight, const uint32_t *__restrict__ qzeros,
                                  const uint16_t *__restrict__ scales, uint4 *__restrict__ q, uint32_t *__restrict__ meta,
                                  int K, int N, int64_t lanes)
{
    int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx < lanes) awq_repack_one(qweight, qzeros, scales, q, meta, K, N, idx);
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
    int64_t lanes = cu_awq_n16(w->N) / 16 * (w->K / 64) * 32;
    for (int64_t i = 0; i < lanes; i++) awq_repack_one(qw, qz, sc, (uint4 *)w->q, w->meta, (int)w->K, (int)w->N, i);
}
#endif

extern "C" cudaError_t loom__cu_awq_repack(cudaStream_t s, const void *blob, cu_awq *w)
{
    const uint32_t *qw, *qz;
    const uint16_t *sc;
    awq_blob_parts(blob, w->K, w->N, &qw, &qz, &sc);
    int64_t lanes = cu_awq_n16(w->N) / 16 * (w->K / 64) * 32;
    awq_repack_kernel<<<(unsigned)((lanes + 255) / 256), 256, 0, s>>>(qw, qz, sc, (uint4 *)w->q, w->meta, (int)w->K,
                                                                       (int)w->N, lanes);
    return cudaGetLastError();
}

/* ------------------------------------------------------------------------------------
 * AWQ GEMV (decode, 1 to 8 tokens) on the tensor cores. A warp streams one
 * 16-column tile of the packed layout (cuda_impl.h) over a slice of K: per
 * 64-k chunk each lane loads one uint4 (the warp: 512 contiguous bytes), turns
 * each of its words into its A fragment (cu_awq_frag: one LOP3 and one HSUB2 or
 * HFMA2 per two weights, q - z exact in f16) and issues one mma.sync m16n8k16
 * against B = the x rows rounded to f16, token t in column t of the n8 tile, so
 * 1 to 8 tokens cost the same. A group's 8 MMAs sum in f32 from zero; then the
 * two columns' scales multiply in f32. With x staged in shared memory (below)
 * that is about a dozen warp instructions per 256 weights; the FFMA kernel this
 * replaced spent ~27 per thread per 8 weights and was issue-bound at 0.12-0.48
 * of the H100's copy bandwidth (this one: 0.16-0.69, docs/PERF.md).
 *
 * A block is NO weights (SWIGLU: gate and up) x TB tiles (2 for outputs turned
 * by RoPE, so both columns of every rotated pair (n, n + hd/2) meet in one
 * block; else 1) x S slices, one warp each. Slice sl walks the groups sl,
 * sl + S, ... through a ring of shared-memory stages filled by cp.async, the
 * next one or two groups' loads in flight while it multiplies one (awq_walk).
 * The S partial sums of a column are added in shared memory in slice order:
 * deterministic, and no second kernel. A launch has no more blocks than stay
 * resident; each takes several such blocks of work where it can (awq_grid).
 *
 * Epilogues fuse what follows the matmul in a Qwen2 layer: PLAIN writes up to
 * three outputs of weights that share x (q, k, v: one launch), optionally with
 * RoPE and the KV-cache store; SWIGLU takes a gate and an up weight and writes
 * silu(gate) * up (as f16 where down reads it: the rounding down's staging
 * applies anyway); ADD adds a residual and optionally the next rmsnorm.
 *
 * Everything but the warp's loop over its groups is __host__ __device__ and
 * per lane or per thread; tests/cuda_host.cu runs it over an emulated grid on
 * the CPU, with the loop's twin around an emulated mma.
 * ------------------------------------------------------------------------------------ */
struct awq_seg {
    const uint4    *q, *q2;       /* q2, meta2, bias2: the up weight (SWIGLU) */
    const uint32_t *meta, *meta2;
    const void     *bias, *bias2;
    int             bdt, bdt2;
    float          *y;
    int             N, N16, blk0; /* columns, padded to tiles; first block of this segment */
    int             cb;           /* columns per block: 16 x tiles per block */
    const double   *rope_freq;    /* PLAIN with RoPE: inv_freq [hd/2], or NULL */
    double          rope_mscale;
    int             rope_hd;
    void           *cache;        /* PLAIN: the KV cache this output is also stored in, or NULL */
};
struct awq_params {
    const float *x, *r; /* r: the residual (ADD) */
    int          T, K, nseg, warps, blocks; /* blocks: of work; a launch may have fewer (awq_grid) */
    awq_seg      seg[CU_GEMV_MAX_W];
    const void  *nw;    /* ADD + rmsnorm: weight, its dtype, eps, output, arrival counter */
    int          nwdt;
    float        eps;
    float       *yn;
    int         *counter;
    const int32_t *pos, *seq; /* RoPE, cache store: the step's positions and sequence slots */
    int          cache_f16, cache_hd, cache_C;
    const void  *xw;    /* x is the residual stream: the GEMV reads rmsnorm(x) * xw (dtype xwdt, eps xeps) */
    int          xwdt;
    float        xeps;
    int          xw_ng;  /* x staged per warp: groups a warp's slot holds per row (the most any warp takes) */
    int          ring;   /* stages of each warp's ring (awq_walk), after x in dynamic shared memory */
    int          xh, yh; /* x is f16 rows (a SWIGLU launch's yh); SWIGLU: y as f16 rows (cu_awq_gemv_args) */
    int          late;   /* PDL: the kernel after may launch once the block's last sums are done (pdl_late) */
};

/* Where column n of token t goes in a [S, N/hd, C, hd] cache: element (seq[t], head, pos[t], d),
 * or -1 where a later token of the step writes the same cell (it wins, as in gqa_attn's own
 * store). */
static CU_HD int64_t awq_cache_at(const awq_params &P, const awq_seg &sg, int t, int n)
{
    int sl = P.seq[t], p = P.pos[t];
    for (int u = t + 1; u < P.T; u++)
        if (P.seq[u] == sl && P.pos[u] == p) return -1;
    int H = sg.N / P.cache_hd, h = n / P.cache_hd, d = n % P.cache_hd;
    return (((int64_t)sl * H + h) * P.cache_C + p) * P.cache_hd + d;
}

#define AWQ_MAX_WARPS 16
/* shared floats: the warps' 16 x 8 partial sums, or the last-block rmsnorm's T x (threads + 33) */
#define AWQ_RED ((AWQ_MAX_WARPS * 32 + 33) * CU_GEMV_MAX_T)
#define AWQ_RED_HALF (AWQ_MAX_WARPS * 128) /* the warps' partial sums of one block of work */
static_assert(2 * AWQ_RED_HALF <= AWQ_RED, "two blocks of work's partial sums fit");

template <int EPI> struct awq_outs {
    enum { n = EPI == CU_EPI_SWIGLU ? 2 : 1 }; /* weights per column: gate and up, or one */
};

static CU_HD const awq_seg &awq_segment(const awq_params &P, int b)
{
    return P.nseg > 2 && b >= P.seg[2].blk0 ? P.seg[2] : P.nseg > 1 && b >= P.seg[1].blk0 ? P.seg[1] : P.seg[0];
}

/* Column of block column c in block b. With RoPE a block takes cb/2 columns
 * from each half of one head, so both columns of every rotated pair end in
 * the same block (hd % cb == 0). */
static CU_HD int awq_column(const awq_seg &sg, int b, int c)
{
    int bl = b - sg.blk0, cb = sg.cb;
    if (!sg.rope_hd) return bl * cb + c;
    int units = sg.rope_hd / cb, h = bl / units, u = bl % units;
    return h * sg.rope_hd + u * (cb / 2) + c % (cb / 2) + (c / (cb / 2)) * (sg.rope_hd / 2);
}

/* What warp w of block b computes: weight o (-1: nothing), packed tile, slice sl of S. */
struct awq_warp {
    int o, tile, sl, S;
};
/* Slices of K per tile in a block of segment sg: its warps over NO weights x TB tiles. */
template <int EPI> static CU_HD int awq_slices(const awq_params &P, const awq_seg &sg)
{
    return P.warps / (awq_outs<EPI>::n * (sg.cb / 16));
}

template <int EPI> static CU_HD awq_warp awq_warp_of(const awq_params &P, int b, int w)
{
    const awq_seg &sg = awq_segment(P, b);
    const int TB = sg.cb / 16, S = awq_slices<EPI>(P, sg);
    awq_warp r = {w / (TB * S), awq_column(sg, b, 16 * (w / S % TB)) / 16, w % S, S};
    if (r.o >= awq_outs<EPI>::n || r.tile * 16 >= sg.N) r.o = -1;
    return r;
}

/* One lane's share of one group: two chunks of nibbles, the meta words of columns g and g + 8. */
struct awq_lane_group {
    uint4    w[2];
    uint32_t m[2];
};

/* Each warp streams its groups through a ring of P.ring stages in shared memory filled by cp.async,
 * so ring - 1 groups' loads are in flight while one is multiplied and none is held in registers
 * (a ring of four groups in registers took 92-98 registers: one block of 16 warps per SM instead
 * of two, and no faster). A stage: the group's two chunks (32 lanes x 16 bytes each), then the
 * tile's 16 meta words for the group. */
#define AWQ_STAGE 68 /* uint4s */
#define AWQ_RING_MAX 4
static CU_HD size_t awq_ring_bytes(int warps, int ring) { return (size_t)warps * ring * AWQ_STAGE * 16; }
/* Dynamic shared memory a launch may use (loom__cu_awq_init: the device's opt-in limit less the
 * kernels' static arrays; the H100's before that, for tests/cuda_host.cu). */
static size_t awq_dyn_limit = (227 << 10) - (20 << 10);

/* A lane's walk along its warp's groups gi = sl, sl + S, ...: where the next copy comes from
 * (its 16 bytes of each of the group's two chunks, 64 uint4s a group; for lanes 0..3 the tile's
 * meta words, N16 words a group) and which ring stage it lands in, and the stage the next
 * group is taken from. Each moves one step a turn rather than being worked out from gi (SASS,
 * 7B down: the copies' selects, 64-bit products and stage index were 38 of the loop's 181
 * instructions a group; kbench, 7B gate/up alone: 33.6 -> 32.5 us, a whole decode step the
 * same within noise: it is bound by the memory system's rate, not by issue). */
struct awq_walk {
    const uint4    *q;
    const uint32_t *m;
    int             dq, dm, nx, S; /* a step of q and m (S groups), the group q is at */
    int             put, get, end; /* stages, as offsets into the warp's ring: the next copy's, the next
                                    * group's, the ring's end (R stages) */
};
/* Warp wp's walk through a ring of R stages whose first copy is group sl + ahead * S, into stage
 * ahead, and whose first group taken is in stage 0. */
static CU_HD awq_walk awq_walk_at(const awq_seg &sg, const awq_warp &wp, int K, int lane, int R, int ahead)
{
    awq_walk w;
    w.nx = wp.sl + ahead * wp.S, w.S = wp.S;
    w.dq = wp.S * 64, w.dm = wp.S * sg.N16;
    w.q = (wp.o ? sg.q2 : sg.q) + ((int64_t)wp.tile * (K / 64) + (int64_t)w.nx * 2) * 32 + lane;
    w.m = (wp.o ? sg.meta2 : sg.meta) + wp.tile * 16 + 4 * (lane & 3) + (int64_t)w.nx * sg.N16;
    w.end = R * AWQ_STAGE, w.put = ahead * AWQ_STAGE, w.get = 0;
    return w;
}
static CU_HD int awq_ring_next(const awq_walk &w, int st) { return st + AWQ_STAGE == w.end ? 0 : st + AWQ_STAGE; }

/* The lane's copies of the walk's next group (none past the last, G), then one step on. */
static CU_HD void awq_walk_put(awq_walk &w, uint4 *ring, int G, int lane)
{
    if (w.nx < G) {
        uint4 *st = ring + w.put;
        cu_cp16(st + lane, w.q), cu_cp16(st + 32 + lane, w.q + 32);
        if (lane < 4) cu_cp16(st + 64 + lane, w.m);
    }
    w.q += w.dq, w.m += w.dm, w.nx += w.S, w.put = awq_ring_next(w, w.put);
}

/* The lane's share of the walk's next group (after every lane's copies have landed), then one
 * stage on. */
static CU_HD void awq_walk_take(awq_walk &w, const uint4 *ring, int lane, awq_lane_group &r)
{
    const uint4 *st = ring + w.get;
    const uint32_t *m = reinterpret_cast<const uint32_t *>(st + 64) + (lane >> 2);
    r.w[0] = st[lane], r.w[1] = st[32 + lane];
    r.m[0] = m[0], r.m[1] = m[8];
    w.get = awq_ring_next(w, w.get);
}

/* The lane's B fragment for the mma step at k: row g of x at k + 4j .. k + 4j + 3 (the
 * packed layout's k order) as two f16 pairs; zeros for g >= T. From global memory: */
static CU_HD void awq_bfrag(const float *x, bool xh, int T, int K, int k, int lane, uint32_t (&b)[2])
{
    const int g = lane >> 2;
    if (xh) { /* f16 rows: the pairs as they are */
        const uint16_t *xr = reinterpret_cast<const uint16_t *>(x) + (int64_t)g * K + k + (lane & 3) * 4;
        const uint2 h = g < T ? CU_LDG(reinterpret_cast<const uint2 *>(xr)) : make_uint2(0, 0);
        b[0] = h.x, b[1] = h.y;
        return;
    }
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (g < T) v = CU_LDG(reinterpret_cast<const float4 *>(x + (int64_t)g * K + k + (lane & 3) * 4));
    b[0] = cu_pack2(v.x, v.y, false), b[1] = cu_pack2(v.z, v.w, false);
}

/* ... or, where T + 1 rows of K + 16 halves fit (AWQ_XS_MAX), from x staged once per block in
 * shared memory as f16: rows 0 .. T-1, then a row of zeros that lanes g >= T read, so each
 * step is one 8-byte shared load. The 16-half pad puts the 32 bytes that each of four
 * consecutive rows gives a step in distinct banks (K is a multiple of 128; with 8 halves
 * rows g and g + 1 overlapped: ncu counted 29% of the shared wavefronts as conflicts). */
#define AWQ_XS_MAX (96 << 10)
static constexpr CU_HD int awq_xs_ld(int K) { return K + 16; }
static constexpr CU_HD size_t awq_xs_bytes(int T, int K) { return (size_t)(T + 1) * awq_xs_ld(K) * 2; }
static_assert(awq_xs_bytes(CU_GEMV_MAX_T, CU_AWQ_XNORM_MAX_K) <= AWQ_XS_MAX, "x normalised on load is always staged");

/* ... or, for one row (decode), staged per warp (XW): each warp converts only the chunks of x its
 * own groups multiply (k = 128 gi .. 128 gi + 127 for gi = sl, sl + S, ...) into its own slot, T
 * rows of xw_ng chunks. No block-wide pass over x and no barrier stand between the block's start
 * and its weight stream (kbench, 7B gate/up with the arithmetic taken out: 35.3 us with x staged
 * per block, 29.9 with no x at all; all four 7B GEMVs 1-3 us faster per warp than per block).
 * Lanes g >= T read row T - 1 instead of a staged zero row (awq_xw_row). */
static CU_HD size_t awq_xw_bytes(const awq_params &P) { return (size_t)P.warps * P.T * P.xw_ng * LOOM_AWQ_GROUP * 2; }
static CU_HD size_t awq_xw_slot(const awq_params &P, int warp) { return (size_t)warp * P.T * P.xw_ng * LOOM_AWQ_GROUP; }
/* The groups warp wp multiplies. */
static CU_HD int awq_xw_count(const awq_params &P, const awq_warp &wp)
{
    const int G = P.K / LOOM_AWQ_GROUP;
    return wp.sl < G ? (G - wp.sl + wp.S - 1) / wp.S : 0;
}

/* Where a launch reads x from (the launcher and tests/cuda_host.cu decide alike). */
enum { AWQ_XG, AWQ_XB, AWQ_XW }; /* global memory, staged per block, staged per warp */
/* Dynamic shared memory before the warps' rings: x as mode xm stages it. */
static CU_HD size_t awq_x_bytes(const awq_params &P, int xm)
{
    return xm == AWQ_XW ? awq_xw_bytes(P) : xm == AWQ_XB ? awq_xs_bytes(P.T, P.K) : 0;
}
static int awq_xmode(const cu_awq_gemv_args *a, const awq_params &P)
{
    /* XW reads the norm weight four elements a load (cu_load4_dt): the arena aligns tensors to 256 */
    const bool xb = awq_xs_bytes(P.T, P.K) <= AWQ_XS_MAX,
               xw = awq_xw_bytes(P) <= AWQ_XS_MAX && !((uintptr_t)P.xw % 16);
    switch (a->x_place) {
    case CU_X_GLOBAL: return AWQ_XG;
    case CU_X_BLOCK: return xb ? AWQ_XB : -1;
    case CU_X_WARP: return xw ? AWQ_XW : -1;
    default: return xw && (P.T == 1 || !xb) ? AWQ_XW : xb ? AWQ_XB : AWQ_XG; /* T > 1: XW's slots grow T-fold per warp */
    }
}

/* Loads in flight per thread in the block-wide loops below (staging x, the last block's
 * rmsnorm): issued one at a time, staging x for down (K = 18944) was ten L2 round trips in a
 * row at the start of every block (SASS). */
#define AWQ_BATCH 8

/* B float4s in flight per thread; NORM: rows normalised as they are staged (inv: each row's
 * 1/rms, times P.xw), in batches half the size: with the weight's loads in flight too, a full
 * batch took the kernel from 64 to 100 registers (half the blocks per SM). */
template <int B, bool NORM>
static CU_HD void awq_stage_rows(const awq_params &P, int tid, int nthreads, uint16_t *xs, const float *inv)
{
    const int K4 = P.K / 4, n = P.T * K4; /* float4s of x's T rows (P.xh: 8-byte words of 4 halves) */
    if (!NORM && P.xh) {
        const uint2 *x2 = reinterpret_cast<const uint2 *>(P.x);
        for (int i0 = tid; i0 < n; i0 += B * nthreads) {
            uint2 v[B];
CU_UNROLL
            for (int j = 0; j < B; j++) v[j] = i0 + j * nthreads < n ? CU_LDG(x2 + i0 + j * nthreads) : make_uint2(0, 0);
CU_UNROLL
            for (int j = 0; j < B; j++) {
                const int i = i0 + j * nthreads;
                if (i < n) *reinterpret_cast<uint2 *>(xs + i / K4 * awq_xs_ld(P.K) + i % K4 * 4) = v[j];
            }
        }
        return;
    }
    for (int i0 = tid; i0 < n; i0 += B * nthreads) {
        float4 v[B];
CU_UNROLL
        for (int j = 0; j < B; j++) {
            int i = i0 + j * nthreads;
            v[j] = i < n ? CU_LDG(reinterpret_cast<const float4 *>(P.x) + i) : make_float4(0.f, 0.f, 0.f, 0.f);
        }
CU_UNROLL
        for (int j = 0; j < B; j++) {
            int i = i0 + j * nthreads, t = i / K4, k = i % K4 * 4;
            if (i >= n) continue;
            if (NORM) {
                float s = inv[t];
                v[j].x *= s * cu_load_dt(P.xw, P.xwdt, k), v[j].y *= s * cu_load_dt(P.xw, P.xwdt, k + 1);
                v[j].z *= s * cu_load_dt(P.xw, P.xwdt, k + 2), v[j].w *= s * cu_load_dt(P.xw, P.xwdt, k + 3);
            }
            *reinterpret_cast<uint2 *>(xs + t * awq_xs_ld(P.K) + k) =
                make_uint2(cu_pack2(v[j].x, v[j].y, false), cu_pack2(v[j].z, v[j].w, false));
        }
    }
}

/* x's T rows into xs as f16 (normalised with P.xw), then the zero row. */
static CU_HD void awq_stage_x(const awq_params &P, int tid, int nthreads, uint16_t *xs, const float *inv)
{
    if (P.xw) awq_stage_rows<AWQ_BATCH / 2, true>(P, tid, nthreads, xs, inv);
    else awq_stage_rows<AWQ_BATCH, false>(P, tid, nthreads, xs, inv);
    const int K4 = P.K / 4;
    for (int i = tid; i < K4; i += nthreads) *reinterpret_cast<uint2 *>(xs + P.T * awq_xs_ld(P.K) + 4 * i) = make_uint2(0, 0);
}

/* The lane's row of the staged x (the zero row for g >= T), at its k offset 4j. */
static CU_HD const uint16_t *awq_xs_row(const uint16_t *xs, int T, int K, int lane)
{
    int g = lane >> 2;
    return xs + (g < T ? g : T) * awq_xs_ld(K) + (lane & 3) * 4;
}

static CU_HD void awq_bfrag_xs(const uint16_t *xrow, int k, uint32_t (&b)[2])
{
    uint2 v = *reinterpret_cast<const uint2 *>(xrow + k);
    b[0] = v.x, b[1] = v.y;
}

/* XW with the rmsnorm on load. The GEMV is linear, so 1/rms(x[t]) waits for the epilogue: each
 * warp stages x[t] * w (w: the norm weight) in the same pass that sums its x², with no barrier
 * before its weights stream; the warps' sums reach the epilogue through the barrier it has
 * anyway. Where x * w overflows f16 (residual streams carry outliers of thousands) the warp
 * stages it again times 2^-p (exact) and multiplies its sums back (awq_xw_unscale).
 * One row t: the lane's float4 of each of the warp's chunks into its slot as f16 (NORM: times w,
 * then f); ss += their sum of x². Returns whether a staged value overflowed. */
template <int B, bool NORM>
static CU_HD bool awq_xw_put(const awq_params &P, const awq_warp &wp, int t, int lane, uint16_t *slot, float f, float &ss)
{
    const int n = awq_xw_count(P, wp);
    if (!NORM && P.xh) { /* f16 rows: the lane's 8-byte words copied, twice as many in flight (7B down's ten
                          * chunks in one round trip, not two) */
        const uint2 *x2 = reinterpret_cast<const uint2 *>(reinterpret_cast<const uint16_t *>(P.x) + (int64_t)t * P.K) + lane;
        uint16_t *row = slot + (size_t)t * P.xw_ng * LOOM_AWQ_GROUP + 4 * lane;
        for (int m0 = 0; m0 < n; m0 += 2 * B) {
            uint2 v[2 * B];
CU_UNROLL
            for (int j = 0; j < 2 * B; j++)
                v[j] = m0 + j < n ? CU_LDG(x2 + (wp.sl + (m0 + j) * wp.S) * (LOOM_AWQ_GROUP / 4)) : make_uint2(0, 0);
CU_UNROLL
            for (int j = 0; j < 2 * B; j++)
                if (m0 + j < n) *reinterpret_cast<uint2 *>(row + (m0 + j) * LOOM_AWQ_GROUP) = v[j];
        }
        return false;
    }
    const float4 *x4 = reinterpret_cast<const float4 *>(P.x + (int64_t)t * P.K) + lane;
    uint16_t *row = slot + (size_t)t * P.xw_ng * LOOM_AWQ_GROUP + 4 * lane;
    uint32_t ovf = 0;
    for (int m0 = 0; m0 < n; m0 += B) {
        float4 v[B], w[B];
CU_UNROLL
        for (int j = 0; j < B; j++) {
            const int gi = wp.sl + (m0 + j) * wp.S;
            v[j] = m0 + j < n ? CU_LDG(x4 + gi * (LOOM_AWQ_GROUP / 4)) : make_float4(0.f, 0.f, 0.f, 0.f);
            if (NORM) w[j] = m0 + j < n ? cu_load4_dt(P.xw, P.xwdt, gi * LOOM_AWQ_GROUP + 4 * lane) : make_float4(0.f, 0.f, 0.f, 0.f);
        }
CU_UNROLL
        for (int j = 0; j < B; j++) {
            if (m0 + j >= n) continue;
            if (NORM) {
                ss = fmaf(v[j].x, v[j].x, ss), ss = fmaf(v[j].y, v[j].y, ss), ss = fmaf(v[j].z, v[j].z, ss),
                ss = fmaf(v[j].w, v[j].w, ss);
                v[j] = make_float4(v[j].x * w[j].x * f, v[j].y * w[j].y * f, v[j].z * w[j].z * f, v[j].w * w[j].w * f);
            }
            const uint32_t lo = cu_pack2(v[j].x, v[j].y, false), hi = cu_pack2(v[j].z, v[j].w, false);
            ovf |= (lo & 0x7c00u) == 0x7c00u || (lo & 0x7c000000u) == 0x7c000000u || (hi & 0x7c00u) == 0x7c00u ||
                   (hi & 0x7c000000u) == 0x7c000000u;
            *reinterpret_cast<uint2 *>(row + (m0 + j) * LOOM_AWQ_GROUP) = make_uint2(lo, hi);
        }
    }
    return ovf != 0;
}

/* The lane's largest |x[t] * w| over the warp's chunks (the rare second pass). */
static CU_HD float awq_xw_max(const awq_params &P, const awq_warp &wp, int t, int lane)
{
    const int n = awq_xw_count(P, wp);
    float mx = 0.0f;
    for (int m = 0; m < n; m++) {
        const int k = (wp.sl + m * wp.S) * LOOM_AWQ_GROUP + 4 * lane;
        const float4 v = CU_LDG(reinterpret_cast<const float4 *>(P.x + (int64_t)t * P.K + k)), w = cu_load4_dt(P.xw, P.xwdt, k);
        mx = fmaxf(mx, fmaxf(fmaxf(fabsf(v.x * w.x), fabsf(v.y * w.y)), fmaxf(fabsf(v.z * w.z), fabsf(v.w * w.w))));
    }
    return mx;
}

/* 2^-p, p >= 0 the least that brings mx under 2^15 (f16 holds up to 65504). */
static CU_HD float awq_xw_fit(float mx)
{
    int e = 0;
    frexpf(mx, &e); /* mx < 2^e */
    return e > 15 ? ldexpf(1.0f, 15 - e) : 1.0f;
}

/* The warp's sums back to x * w's scale: the lane's acc holds tokens 2j and 2j + 1. */
static CU_HD void awq_xw_unscale(const awq_params &P, const float *fit, int lane, float (&acc)[4])
{
    const int t0 = 2 * (lane & 3), t1 = t0 + 1;
    const float a = t0 < P.T ? 1.0f / fit[t0] : 1.0f, b = t1 < P.T ? 1.0f / fit[t1] : 1.0f;
    acc[0] *= a, acc[1] *= b, acc[2] *= a, acc[3] *= b;
}

/* 1/rms(x[t]) from the warps' published sums of squares (warp order), or 1 (x normalised as
 * staged, or no rmsnorm). */
static CU_HD float awq_xw_inv(const awq_params &P, const float *wss, int t)
{
    if (!wss) return 1.0f;
    float ss = 0.0f;
    for (int w = 0; w < P.warps; w++) ss += wss[t * AWQ_MAX_WARPS + w];
    return cu_rms_inv(ss, P.K, P.xeps);
}

/* The lane's row of its warp's slot, at its k offset 4j. Lanes g >= T read row T - 1: the sums
 * they give are of tokens >= T, which no epilogue reads, and the loop needs neither a predicate
 * nor zeroed registers per step. */
static CU_HD const uint16_t *awq_xw_row(const awq_params &P, const uint16_t *slot, int lane)
{
    const int g = lane >> 2 < P.T ? lane >> 2 : P.T - 1;
    return slot + (size_t)g * P.xw_ng * LOOM_AWQ_GROUP + (lane & 3) * 4;
}

static CU_HD void awq_bfrag_xw(const uint16_t *xrow, int k, uint32_t (&b)[2])
{
    uint2 v = *reinterpret_cast<const uint2 *>(xrow + k);
    b[0] = v.x, b[1] = v.y;
}

/* acc += the group's sums d (D fragment: columns g, g + 8 x tokens 2j, 2j + 1) times the columns' scales. */
static CU_HD void awq_scale(const awq_lane_group &r, const float (&d)[4], float (&acc)[4])
{
    float sa = cu_f16_f32((unsigned short)(r.m[0] & 0xffffu)), sb = cu_f16_f32((unsigned short)(r.m[1] & 0xffffu));
    acc[0] = fmaf(sa, d[0], acc[0]), acc[1] = fmaf(sa, d[1], acc[1]);
    acc[2] = fmaf(sb, d[2], acc[2]), acc[3] = fmaf(sb, d[3], acc[3]);
}

/* The lane's sums into the warp's 16 x 8 (column, token) block of red. */
static CU_HD void awq_red_put(float *red, int w, int lane, const float (&acc)[4])
{
    float *r = red + w * 128 + (lane >> 2) * 8 + 2 * (lane & 3);
    r[0] = acc[0], r[1] = acc[1], r[64] = acc[2], r[65] = acc[3];
}

/* Output o of block column c, token t: the sum of its S slices, in slice order. */
template <int EPI> static CU_HD float awq_red_sum(const awq_params &P, const awq_seg &sg, const float *red, int o, int t, int c)
{
    const int TB = sg.cb / 16, S = awq_slices<EPI>(P, sg);
    const float *r = red + (o * TB + c / 16) * S * 128 + (c % 16) * 8 + t;
    float s = 0.0f;
    for (int j = 0; j < S; j++) s += r[j * 128];
    return s;
}

/* What q/k/v's output i = (t, c) of block b needs beside its sums, none of it written by the kernel
 * before: its bias and its RoPE partner's, the rotation, the cache cell. The GEMV works them out
 * before its PDL wait; in its epilogue they were a chain of round trips after the sums (bias, the
 * partner's bias, sincos, seq and pos): H100, 7B, q/k/v 11.8 -> 10.0 us. */
struct awq_epi_in {
    float   b0, b1, fc, fs;
    int64_t cell; /* where the cache takes the output (awq_cache_at), -1: nowhere */
};
/* Entries of the array a block keeps them in: one per output of its first block of work. */
#define AWQ_EPI_IN (CU_GEMV_MAX_T * 32)

static CU_HD awq_epi_in awq_plain_inputs(const awq_params &P, const awq_seg &sg, int b, int i)
{
    awq_epi_in e = {0.0f, 0.0f, 1.0f, 0.0f, -1};
    const int t = i / sg.cb, c = i % sg.cb, n = awq_column(sg, b, c);
    if (n >= sg.N) return e;
    e.b0 = sg.bias ? cu_load_dt(sg.bias, sg.bdt, n) : 0.0f;
    if (sg.rope_hd) { /* neox pair (n, n ± hd/2), as rope_kernel turns it */
        const int h2 = sg.rope_hd / 2, pn = c < sg.cb / 2 ? n + h2 : n - h2, fi = n % sg.rope_hd % h2;
        e.b1 = sg.bias ? cu_load_dt(sg.bias, sg.bdt, pn) : 0.0f;
        double sn, cs;
        sincos((double)P.pos[t] * sg.rope_freq[fi], &sn, &cs);
        e.fc = (float)(cs * sg.rope_mscale), e.fs = (float)(sn * sg.rope_mscale);
    }
    if (sg.cache) e.cell = awq_cache_at(P, sg, t, n);
    return e;
}

/* The T x cb outputs of block b, then the epilogue. wss: XW's sums of squares, where 1/rms
 * multiplies the sums here (awq_xw_put). pre (PLAIN): awq_plain_inputs of block b by output, from
 * the thread that handles it here; nullptr: worked out here. */
template <int EPI>
static CU_HD void awq_gemv_out(const awq_params &P, int b, int tid, int nthreads, const float *red,
                               const float *wss = nullptr, const awq_epi_in *pre = nullptr)
{
    constexpr int NO = awq_outs<EPI>::n;
    const awq_seg &sg = awq_segment(P, b);
    const int cb = sg.cb, N = sg.N;
    for (int i = tid; i < P.T * cb; i += nthreads) {
        int t = i / cb, c = i % cb, n = awq_column(sg, b, c);
        if (n >= N) continue;
        float v[NO];
        const float inv = awq_xw_inv(P, wss, t);
CU_UNROLL
        for (int o = 0; o < NO; o++) v[o] = awq_red_sum<EPI>(P, sg, red, o, t, c) * inv;
        int64_t at = (int64_t)t * N + n;
        if (EPI == CU_EPI_PLAIN) {
            const awq_epi_in e = pre ? pre[i] : awq_plain_inputs(P, sg, b, i);
            v[0] += e.b0;
            if (sg.rope_hd) {
                const int first = c < cb / 2, pc = first ? c + cb / 2 : c - cb / 2;
                const float other = awq_red_sum<EPI>(P, sg, red, 0, t, pc) * inv + e.b1;
                v[0] = first ? v[0] * e.fc - other * e.fs : v[0] * e.fc + other * e.fs;
            }
            if (e.cell >= 0) {
                if (P.cache_f16) ((__half *)sg.cache)[e.cell] = __float2half_rn(v[0]);
                else ((float *)sg.cache)[e.cell] = v[0];
            }
            sg.y[at] = v[0];
            continue;
        }
        v[0] += sg.bias ? cu_load_dt(sg.bias, sg.bdt, n) : 0.0f;
        if (EPI == CU_EPI_SWIGLU) {
            const float h = cu_silu_mul(v[0], v[NO - 1] + (sg.bias2 ? cu_load_dt(sg.bias2, sg.bdt2, n) : 0.0f));
            if (P.yh) reinterpret_cast<__half *>(sg.y)[at] = __float2half_rn(h); /* as the next GEMV would round it */
            else sg.y[at] = h;
        } else
            sg.y[at] = v[0] + P.r[at];
    }
}

/* ADD + rmsnorm, run by the block that finishes last, when every block's
 * outputs are in memory: the rows of y (N wide) are normalised into yn.
 * a: per-thread sums of squares; b: each warp's 32 of them added; b2: the
 * warps' sums added, 1/rms per row; c: yn = y * inv * w. A fixed order, no
 * long serial chain (one thread adding a row's 512 was a ~2 us tail; 32 then
 * 8 smem adds per row made the rmsnorm on load cost gate/up ~5 us). red holds
 * T x nthreads floats, then T x 32, then T inverses. The same phases give
 * the GEMVs that normalise x on load their 1/rms. */
/* rows: T x N (N % 8 == 0, as AWQ packs columns); CG: written by other blocks of this launch,
 * so read through L2 only */
template <bool CG> static CU_HD void awq_norm_a(const float *rows, int T, int N, int tid, int nthreads, float *red)
{
    for (int t = 0; t < T; t++) {
        const float *y = rows + (int64_t)t * N;
        float ss = 0.0f;
        const float4 *y4 = reinterpret_cast<const float4 *>(y); /* a row of 3584: one batch of loads */
        for (int n0 = tid; n0 < N / 4; n0 += AWQ_BATCH / 2 * nthreads) {
            float4 v[AWQ_BATCH / 2];
CU_UNROLL
            for (int j = 0; j < AWQ_BATCH / 2; j++) {
                int n = n0 + j * nthreads;
                v[j] = n >= N / 4 ? make_float4(0.f, 0.f, 0.f, 0.f) : CG ? CU_LDCG(y4 + n) : CU_LDG(y4 + n);
            }
CU_UNROLL
            for (int j = 0; j < AWQ_BATCH / 2; j++)
                ss = fmaf(v[j].x, v[j].x, ss), ss = fmaf(v[j].y, v[j].y, ss), ss = fmaf(v[j].z, v[j].z, ss),
                ss = fmaf(v[j].w, v[j].w, ss);
        }
        red[t * nthreads + tid] = ss;
    }
}

/* A thread reads only its own phase-a sums (no barrier between a and b). The host adds a
 * warp's 32 in the order of the device's xor-shuffle tree (cu_warp_sum). */
static CU_HD void awq_norm_b(const awq_params &P, int tid, int nthreads, float *red)
{
    const int lane = tid & 31, w = tid >> 5;
    for (int t = 0; t < P.T; t++) {
#ifdef __CUDA_ARCH__
        float v = cu_warp_sum(red[t * nthreads + tid]);
#else
        if (lane) continue;
        float v = cu_host_warp_sum(red + t * nthreads + w * 32);
#endif
        if (lane == 0) red[P.T * nthreads + t * 32 + w] = v;
    }
}

static CU_HD void awq_norm_b2(const awq_params &P, int N, float eps, int tid, int nthreads, float *red)
{
    if (tid >= P.T) return; /* T <= 8: fewer than any block's threads */
    float ss = 0.0f;
    for (int w = 0; w < nthreads / 32; w++) ss += red[P.T * nthreads + tid * 32 + w];
    red[P.T * (nthreads + 32) + tid] = cu_rms_inv(ss, N, eps);
}

/* Where the 1/rms of row t sits in red after awq_norm_b2. */
static CU_HD const float *awq_norm_inv(const awq_params &P, int nthreads, const float *red)
{
    return red + P.T * (nthreads + 32);
}

static CU_HD void awq_norm_c(const awq_params &P, int tid, int nthreads, const float *red)
{
    const awq_seg &sg = P.seg[0];
    for (int t = 0; t < P.T; t++) {
        const float inv = awq_norm_inv(P, nthreads, red)[t], *y = sg.y + (int64_t)t * sg.N;
        for (int n0 = tid; n0 < sg.N; n0 += AWQ_BATCH * nthreads) {
            float v[AWQ_BATCH], w[AWQ_BATCH];
CU_UNROLL
            for (int j = 0; j < AWQ_BATCH; j++) {
                int n = n0 + j * nthreads;
                v[j] = n < sg.N ? CU_LDCG(y + n) : 0.0f, w[j] = n < sg.N ? cu_load_dt(P.nw, P.nwdt, n) : 0.0f;
            }
CU_UNROLL
            for (int j = 0; j < AWQ_BATCH; j++)
                if (n0 + j * nthreads < sg.N) P.yn[(int64_t)t * sg.N + n0 + j * nthreads] = v[j] * inv * w[j];
        }
    }
}


#ifdef __CUDA_ARCH__
/* Up to ring - 1 of the lane's cp.async groups in flight. */
static __device__ __forceinline__ void awq_ring_wait(int ring)
{
    if (ring <= 2) cu_cp_wait<1>();
    else if (ring == 3) cu_cp_wait<2>();
    else cu_cp_wait<3>();
}

/* The first ring - 1 groups of the warp's (gi = sl, sl + S, ...) into stages 0 .. ring - 2, one
 * cp.async group each (empty ones too: awq_warp_sum counts them). */
static __device__ __forceinline__ void awq_ring_fill(const awq_params &P, const awq_seg &sg, const awq_warp &wp, int lane,
                                                     bool busy, uint4 *ring)
{
    awq_walk w = awq_walk_at(sg, wp, P.K, lane, P.ring, 0);
    for (int j = 0; j < P.ring - 1; j++) {
        if (busy) awq_walk_put(w, ring, P.K / LOOM_AWQ_GROUP, lane);
        cu_cp_commit();
    }
}

/* The warp's groups gi = sl, sl + S, ... (the first ring - 1 filled by awq_ring_fill): each turn
 * starts the copies ring - 1 groups ahead, waits for this group's, and multiplies it. XM: x from
 * the block's staged copy (xs), the warp's slot (xs: the slot), or global memory. */
template <int XM>
static __device__ __forceinline__ void awq_warp_sum(const awq_params &P, const awq_seg &sg, const awq_warp &wp,
                                                    int lane, const uint16_t *xs, uint4 *ring, float (&acc)[4])
{
    const int K = P.K, G = K / LOOM_AWQ_GROUP, R = P.ring;
    const uint16_t *xrow = XM == AWQ_XB ? awq_xs_row(xs, P.T, K, lane) : XM == AWQ_XW ? awq_xw_row(P, xs, lane) : nullptr;
    /* a walk of its own from where the fill's ended: carried from the fill, it held its registers
     * through x's staging (spills in the XW kernels) */
    awq_walk w = awq_walk_at(sg, wp, K, lane, R, R - 1);
    for (int gi = wp.sl, m = 0; gi < G; gi += wp.S, m++) {
        awq_walk_put(w, ring, G, lane);
        cu_cp_commit();
        awq_ring_wait(R);
        __syncwarp(); /* every lane's copies of this group landed */
        awq_lane_group q;
        awq_walk_take(w, ring, lane, q);
        __syncwarp(); /* every lane has taken it: the next turn's copies may land in this stage */
        const uint32_t za = cu_awq_za(q.m[0]), zb = cu_awq_zb(q.m[1]);
        float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const uint32_t ws[4] = {q.w[h].x, q.w[h].y, q.w[h].z, q.w[h].w};
#pragma unroll
            for (int s = 0; s < 4; s++) {
                uint32_t a[4], b[2];
                cu_awq_frag(ws[s], za, zb, a);
                const int k = h * 64 + s * 16;
                if (XM == AWQ_XB) awq_bfrag_xs(xrow, gi * LOOM_AWQ_GROUP + k, b);
                else if (XM == AWQ_XW) awq_bfrag_xw(xrow, m * LOOM_AWQ_GROUP + k, b);
                else awq_bfrag(P.x, P.xh, P.T, K, gi * LOOM_AWQ_GROUP + k, lane, b);
                cu_mma<false>(d, a, b[0], b[1]);
            }
        }
        awq_scale(q, d, acc);
    }
}
#endif

template <int EPI, int XM>
__global__ void __launch_bounds__(AWQ_MAX_WARPS * 32) awq_gemv_kernel(const awq_params P)
{
#ifdef __CUDA_ARCH__
    __shared__ float red[AWQ_RED];
    /* XW with the rmsnorm on load: each warp's sum of x² per row (row t at t * AWQ_MAX_WARPS), and its
     * scale per row (awq_xw_fit) */
    __shared__ float wsum[XM == AWQ_XW ? CU_GEMV_MAX_T * AWQ_MAX_WARPS : 1], wfit[XM == AWQ_XW ? AWQ_MAX_WARPS * CU_GEMV_MAX_T : 1];
    /* PLAIN (q/k/v: biases, RoPE, the cache store): the first block of work's awq_plain_inputs */
    __shared__ awq_epi_in epi_in[EPI == CU_EPI_PLAIN ? AWQ_EPI_IN : 1];
    extern __shared__ __align__(16) uint16_t awq_xs[];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float *fit = wfit + (XM == AWQ_XW ? warp * CU_GEMV_MAX_T : 0);
    int b = blockIdx.x; /* the block of work; then b + gridDim.x, ... (awq_grid) */
    const awq_seg *sg = &awq_segment(P, b);
    awq_warp wp = awq_warp_of<EPI>(P, b, warp);
    if (!P.late) cu_pdl_trigger();
    /* weights are constants: the first groups' loads may start before the previous kernel ends */
    uint4 *ring = reinterpret_cast<uint4 *>(awq_xs + awq_x_bytes(P, XM) / 2) + warp * P.ring * AWQ_STAGE;
    bool busy = wp.o >= 0 && wp.sl < P.K / LOOM_AWQ_GROUP;
    if (wp.o >= 0) awq_ring_fill(P, *sg, wp, lane, busy, ring);
    if (EPI == CU_EPI_PLAIN)
        for (int i = threadIdx.x; i < P.T * sg->cb; i += blockDim.x) epi_in[i] = awq_plain_inputs(P, *sg, b, i);
    cu_pdl_wait();
    /* x staged once for all the block's work: per warp, its slices are the same in every block of
     * work it takes (awq_grid) */
    if (XM == AWQ_XW) {
        uint16_t *slot = awq_xs + awq_xw_slot(P, warp);
        for (int t = 0; t < P.T; t++) {
            if (!P.xw) {
                float ss = 0.0f;
                if (busy) awq_xw_put<AWQ_BATCH, false>(P, wp, t, lane, slot, 1.0f, ss);
                continue;
            }
            float ss = 0.0f, f = 1.0f;
            const bool ovf = busy && awq_xw_put<AWQ_BATCH / 2, true>(P, wp, t, lane, slot, 1.0f, ss);
            if (__any_sync(0xffffffffu, ovf)) {
                f = awq_xw_fit(cu_warp_max(awq_xw_max(P, wp, t, lane)));
                float ss2 = 0.0f;
                awq_xw_put<AWQ_BATCH / 2, true>(P, wp, t, lane, slot, f, ss2);
            }
            ss = cu_warp_sum(ss);
            if (lane == 0) wsum[t * AWQ_MAX_WARPS + warp] = warp < wp.S ? ss : 0.0f, fit[t] = f;
        }
        __syncwarp();
    }
    if (XM == AWQ_XB) {
        if (P.xw) { /* every block normalises x for itself: no serial tail in the launch before */
            awq_norm_a<false>(P.x, P.T, P.K, threadIdx.x, blockDim.x, red);
            awq_norm_b(P, threadIdx.x, blockDim.x, red);
            __syncthreads();
            awq_norm_b2(P, P.K, P.xeps, threadIdx.x, blockDim.x, red);
            __syncthreads();
        }
        awq_stage_x(P, threadIdx.x, blockDim.x, awq_xs, awq_norm_inv(P, blockDim.x, red));
        __syncthreads();
    }
    for (int u = 0;; u++) {
        float *rd = red + (u & 1) * AWQ_RED_HALF; /* two halves: one barrier per block of work */
        if (wp.o >= 0) {
            float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            if (busy) awq_warp_sum<XM>(P, *sg, wp, lane, XM == AWQ_XW ? awq_xs + awq_xw_slot(P, warp) : awq_xs, ring, acc);
            if (XM == AWQ_XW && P.xw) awq_xw_unscale(P, fit, lane, acc);
            awq_red_put(rd, warp, lane, acc);
        }
        const int nb = b + gridDim.x;
        if (nb < P.blocks) { /* the next block of work's first loads fly during this one's epilogue */
            sg = &awq_segment(P, nb), wp = awq_warp_of<EPI>(P, nb, warp);
            busy = wp.o >= 0 && wp.sl < P.K / LOOM_AWQ_GROUP;
            if (wp.o >= 0) awq_ring_fill(P, *sg, wp, lane, busy, ring);
        } else if (P.late) {
            cu_pdl_trigger();
        }
        __syncthreads();
        awq_gemv_out<EPI>(P, b, threadIdx.x, blockDim.x, rd, XM == AWQ_XW && P.xw ? wsum : nullptr,
                          EPI == CU_EPI_PLAIN && u == 0 ? epi_in : nullptr);
        if (nb >= P.blocks) break;
        b = nb;
    }
    if (EPI != CU_EPI_ADD || !P.yn) return;
    /* the block that finishes last sees every block's outputs and normalises the rows */
    if (!cu_arrive_last(P.counter, gridDim.x)) return;
    awq_norm_a<true>(P.seg[0].y, P.T, P.seg[0].N, threadIdx.x, blockDim.x, red);
    awq_norm_b(P, threadIdx.x, blockDim.x, red);
    __syncthreads();
    awq_norm_b2(P, P.seg[0].N, P.eps, threadIdx.x, blockDim.x, red);
    __syncthreads();
    awq_norm_c(P, threadIdx.x, blockDim.x, red);
#endif
}

/* Warps per block: 8, or 16 where there are fewer than two blocks per SM (H100, 7B: o and
 * down 15 and 31 us at 16 warps, 17 and 40 at 8; qkv and gate/up, 288 and 1184 blocks, best
 * at 8), so that the GPU still holds enough warps. */
static cudaError_t awq_geometry(const cu_awq_gemv_args *a, int sm_count, awq_params *P, int *blocks, int *threads)
{
    if (a->n < 1 || a->n > CU_GEMV_MAX_W || (a->epi == CU_EPI_SWIGLU && a->n != 2) ||
        (a->epi == CU_EPI_ADD && (a->n != 1 || !a->r)) || a->T < 1 || a->T > CU_GEMV_MAX_T)
        return cudaErrorInvalidValue;
    *P = awq_params{};
    P->x = a->x, P->r = a->r, P->T = a->T, P->K = (int)a->w[0]->K;
    int nw = a->epi == CU_EPI_SWIGLU ? 1 : a->n, no = a->epi == CU_EPI_SWIGLU ? 2 : 1;
    int nb = 0;
    for (int i = 0; i < nw; i++) {
        const cu_awq *w = a->w[i];
        if (w->K != P->K || w->K % LOOM_AWQ_GROUP || w->N % 8) return cudaErrorInvalidValue;
        awq_seg &g = P->seg[i];
        g.q = (const uint4 *)w->q, g.meta = w->meta, g.bias = a->bias[i], g.bdt = a->bdt[i], g.y = a->y[i];
        g.N = (int)w->N, g.N16 = (int)CU_AWQ_N16(w->N), g.blk0 = nb;
        g.rope_freq = a->rope_freq[i], g.rope_mscale = a->rope_mscale[i], g.rope_hd = a->rope_freq[i] ? a->rope_hd[i] : 0;
        g.cb = g.rope_hd ? 32 : 16;
        if (g.rope_hd && (a->epi != CU_EPI_PLAIN || !a->pos || g.rope_hd % g.cb || g.N % g.rope_hd))
            return cudaErrorInvalidValue;
        g.cache = a->cache[i];
        if (g.cache && (a->epi != CU_EPI_PLAIN || !a->pos || !a->seq || a->cache_hd < 1 || g.N % a->cache_hd ||
                        a->cache_C < 1))
            return cudaErrorInvalidValue;
        nb += (g.N + g.cb - 1) / g.cb;
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
    P->xw = a->xnorm_w, P->xwdt = a->xnorm_wdt, P->xeps = a->xnorm_eps;
    if ((a->x_f16 && a->xnorm_w) || (a->y_f16 && a->epi != CU_EPI_SWIGLU)) return cudaErrorInvalidValue;
    P->xh = a->x_f16, P->yh = a->y_f16, P->late = a->pdl_late;
    int warps = a->warps ? a->warps : nb < 2 * sm_count ? 16 : 8;
    if (warps > AWQ_MAX_WARPS || warps % (2 * no)) return cudaErrorInvalidValue; /* 2: tiles per RoPE block */
    P->nseg = nw, P->warps = warps, P->blocks = nb;
    int tb = 1; /* the fewest slices any block has: the most groups a warp takes */
    for (int i = 0; i < nw; i++) tb = P->seg[i].cb / 16 > tb ? P->seg[i].cb / 16 : tb;
    const int smin = warps / (no * tb);
    P->xw_ng = (P->K / LOOM_AWQ_GROUP + smin - 1) / smin;
    const int xm = awq_xmode(a, *P);
    if (xm < 0 || (P->xw && (xm == AWQ_XG || P->K > CU_AWQ_XNORM_MAX_K))) return cudaErrorInvalidValue;
    /* the deepest ring up to a->ring (else 3; awq_go may take it down to 2) that fits beside x */
    const size_t xb = awq_x_bytes(*P, xm);
    P->ring = a->ring >= 2 && a->ring <= AWQ_RING_MAX ? a->ring : 3;
    while (P->ring > 2 && xb + awq_ring_bytes(warps, P->ring) > awq_dyn_limit) P->ring--;
    if (xb + awq_ring_bytes(warps, P->ring) > awq_dyn_limit) return cudaErrorInvalidValue;
    *threads = warps * 32;
    *blocks = nb;
    return cudaSuccess;
}

/* Blocks to launch for P's blocks of work when cap of them stay resident: each takes u = ceil(blocks /
 * cap) blocks of work (b, b + grid, ...), staging x once, and its next block of work's first loads
 * fly during the epilogue of this one. Only where x's staging is the same in every block of work a
 * block takes: per warp (XW), a warp's slices of K depend on the block's columns (cb: RoPE
 * segments have 32, others 16), so every segment must have the same. H100, 7B gate/up: 1184 blocks
 * of work, 3 resident per SM: 395 blocks of 3. */
static CU_HD int awq_grid(const awq_params &P, int xm, int cap)
{
    bool same = true;
    for (int i = 1; i < P.nseg; i++) same = same && P.seg[i].cb == P.seg[0].cb;
    if (cap < 1 || cap >= P.blocks || (xm == AWQ_XW && !same)) return P.blocks;
    const int u = (P.blocks + cap - 1) / cap;
    return (P.blocks + u - 1) / u;
}

/* Dynamic shared memory (x, rings) beyond the 48 KiB default, as much as the device allows beside
 * the kernels' static arrays: once per device. awq_dyn_limit: the least of the devices set up. */
template <int E, int M> static cudaError_t awq_allow(int optin)
{
    cudaFuncAttributes fa;
    cudaError_t e = cudaFuncGetAttributes(&fa, awq_gemv_kernel<E, M>);
    if (e) return e;
    const size_t dyn = (size_t)optin > fa.sharedSizeBytes ? (size_t)optin - fa.sharedSizeBytes : 0;
    if (dyn < awq_dyn_limit) awq_dyn_limit = dyn;
    return cudaFuncSetAttribute(awq_gemv_kernel<E, M>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)dyn);
}

extern "C" cudaError_t loom__cu_awq_init(void)
{
    int dev, optin;
    cudaError_t e;
    if ((e = cudaGetDevice(&dev)) || (e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev)))
        return e;
    if ((e = awq_allow<CU_EPI_PLAIN, AWQ_XG>(optin)) || (e = awq_allow<CU_EPI_SWIGLU, AWQ_XG>(optin)) ||
        (e = awq_allow<CU_EPI_ADD, AWQ_XG>(optin)) || (e = awq_allow<CU_EPI_PLAIN, AWQ_XB>(optin)) ||
        (e = awq_allow<CU_EPI_SWIGLU, AWQ_XB>(optin)) || (e = awq_allow<CU_EPI_ADD, AWQ_XB>(optin)) ||
        (e = awq_allow<CU_EPI_PLAIN, AWQ_XW>(optin)) || (e = awq_allow<CU_EPI_SWIGLU, AWQ_XW>(optin)) ||
        (e = awq_allow<CU_EPI_ADD, AWQ_XW>(optin)))
        return e;
    return cudaSuccess;
}

/* Blocks of kernel k (threads, smem) one SM holds, remembered: the launcher asks at every launch
 * that is not replayed from a CUDA graph. */
static int awq_resident(const void *k, int threads, size_t smem)
{
    static struct {
        const void *k;
        int         threads, n;
        size_t      smem;
    } memo[32];
    static int used;
    for (int i = 0; i < used; i++)
        if (memo[i].k == k && memo[i].threads == threads && memo[i].smem == smem) return memo[i].n;
    int n = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, k, threads, smem)) n = 0, cudaGetLastError();
    if (used < 32) memo[used].k = k, memo[used].threads = threads, memo[used].smem = smem, memo[used++].n = n;
    return n;
}

/* Rings of 3 where blocks take several blocks of work (H100, 7B gate/up: 38.4 -> 33.1-33.5 us
 * against the loads held in registers), else 2 (3 made q/k/v and o, with 1 to 2 groups a warp,
 * 0.6 us slower: their blocks hold more shared memory for loads they do not have). */
template <int E, int XM> static cudaError_t awq_go(cudaStream_t s, const cu_awq_gemv_args *a, awq_params P, int threads,
                                                   int sm_count)
{
    auto smem = [&] { return awq_x_bytes(P, XM) + awq_ring_bytes(P.warps, P.ring); };
    auto cap = [&] {
        return a->grid > 0 ? a->grid : a->grid < 0 ? 0 : awq_resident((const void *)awq_gemv_kernel<E, XM>, threads, smem()) * sm_count;
    };
    int grid = awq_grid(P, XM, cap());
    if (!a->ring && grid == P.blocks) P.ring = 2, grid = awq_grid(P, XM, cap());
    return cu_launch(awq_gemv_kernel<E, XM>, dim3(grid), dim3(threads), smem(), s, a->pdl, P);
}

extern "C" cudaError_t loom__cu_awq_gemv(cudaStream_t s, const cu_awq_gemv_args *a, int sm_count)
{
    awq_params P;
    int blocks, threads;
    cudaError_t e = awq_geometry(a, sm_count, &P, &blocks, &threads);
    if (e) return e;
    const int xm = awq_xmode(a, P);
#define AWQ_GO(E) xm == AWQ_XW ? awq_go<E, AWQ_XW>(s, a, P, threads, sm_count) \
                : xm == AWQ_XB ? awq_go<E, AWQ_XB>(s, a, P, threads, sm_count) : awq_go<E, AWQ_XG>(s, a, P, threads, sm_count)
    switch (a->epi) {
    case CU_EPI_PLAIN: return AWQ_GO(CU_EPI_PLAIN);
    case CU_EPI_SWIGLU: return AWQ_GO(CU_EPI_SWIGLU);
    default: return AWQ_GO(CU_EPI_ADD);
    }
#undef AWQ_GO
}
