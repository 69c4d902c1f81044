/* k_attn.cu — gqa_attn: the step's k, v into the cache, then causal
 * grouped-query attention over it, in f32 whatever the cache dtype.
 *
 * 1. kv_store: one block per (token, kv head) writes k, v at (seq[t], pos[t]);
 *    a token whose cell a later token of the step also writes skips (the
 *    later one wins, as the definition says).
 * 2. attn: one block per (KV split, kv head, tile of tokens). Its query rows
 *    are every query head of the kv head's group for each token of the tile
 *    (up to CU_ATTN_ROWS rows; DEC_ROWS in decode), so one read of a K/V tile serves them all.
 *    Consecutive tokens of the tile in the same sequence slot are one
 *    sub-batch sharing K/V tiles (prefill); the block walks positions
 *    0..max pos of the sub-batch in tiles of 32, masks each row causally at
 *    its own position and keeps an online softmax per row (running max,
 *    running sum, rescaled accumulators).
 *    Decode (few tokens) splits the positions across blocks (flash-decoding):
 *    each split writes its normalised partial output with its max and sum;
 *    3. the last split block of a (token tile, kv head) to finish (a fence and
 *    an arrival counter) merges them, so no separate combine launch. The
 *    split length follows the step's real length (read on the device), so a
 *    replayed CUDA graph stays right as the context grows; splits past the
 *    positions leave at once, and a context that one split holds is written
 *    by it directly (no partials, no merge).
 * 4. attn_dec_cluster: steps of one token on sm_90, a cluster of blocks per kv
 *    head merging through distributed shared memory (see there). */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cooperative_groups.h>
#include <math.h>

#include "cuda_impl.h"
#include "k_common.cuh"

#define TP 32              /* positions per K/V tile: one per lane */
#define ROWS CU_ATTN_ROWS  /* query rows per block */
#define DEC_ROWS 8         /* ... in decode steps whose groups fit: a block's per-thread loops over its rows
                            * are sized for this many (7B decode: 7 rows in loops for 32 were a quarter of its time) */
#define NTH 256            /* threads per block: decode attention is a chain of dependent instructions
                            * in a handful of blocks (7B at ~160 positions: 20 blocks, 0.14 instructions
                            * a cycle per scheduler, ncu); with 256 its per-thread loops over rows, K/V
                            * loads and the merge are half as long as with 128 (20.8 -> 13.3 us a layer) */
#define NTH_WIDE 512       /* ... and 512 in decode with head_dim 128 (a K/V tile is then one 16-byte load
                            * a thread): 7B decode +3.3% at 128 positions, +8.5% at 2048, against 256 */
/* Threads of a decode block (DEC_ROWS) for head_dim HD: the launch and its shared-memory setup agree. */
template <int HD> static constexpr int dec_threads() { return HD == 128 ? NTH_WIDE : NTH; }

/* ---- 1. cache store ------------------------------------------------------------------- */
static __device__ __forceinline__ void put(float *p, float v) { *p = v; }
static __device__ __forceinline__ void put(__half *p, float v) { *p = __float2half_rn(v); }

template <typename CT>
__global__ void kv_store_kernel(const float *__restrict__ k, const float *__restrict__ v, CT *__restrict__ kc,
                                CT *__restrict__ vc, int T, int Hkv, int hd, int C, const int32_t *__restrict__ pos,
                                const int32_t *__restrict__ seq)
{
    int t = blockIdx.x, h = blockIdx.y, sl = seq[t], p = pos[t];
    for (int u = t + 1; u < T; u++)
        if (seq[u] == sl && pos[u] == p) return; /* a later token owns this cell */
    size_t off = (((size_t)sl * Hkv + h) * C + p) * hd;
    const float *kr = k + ((size_t)t * Hkv + h) * hd, *vr = v + ((size_t)t * Hkv + h) * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) put(kc + off + d, kr[d]), put(vc + off + d, vr[d]);
}

/* ---- 3. merge of the splits (by the last block): weights exp(m_s - M) * l_s --------------------- */
/* w: shared, RW * CU_ATTN_MAX_SPLITS + RW floats. Only splits 0 .. ns-1 hold positions (the
 * split length follows the context, so at short contexts most splits are empty). Sums run in a
 * fixed order (deterministic). */
template <int HD, int RW, int NT>
static __device__ void attn_merge(const cu_attn_args &a, int t0, int t1, int hk, int ns, float *w)
{
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, G = a.Hq / a.Hkv, R = (t1 - t0) * G;
    size_t stride = (size_t)a.T * a.Hq * (HD + 2), qw = (size_t)a.Hq * HD;
    float *den = w + RW * CU_ATTN_MAX_SPLITS;
    for (int r = warp; r < R; r += NT / 32) { /* a warp per row, a lane per split */
        const float *p0 = a.part + ((size_t)(t0 + r / G) * a.Hq + hk * G + r % G) * (HD + 2);
        /* lane s and s + 32 hold those splits' max and sum: one round trip for both passes */
        float ms[2], ls[2], M = -INFINITY, sum = 0.0f;
#pragma unroll
        for (int k = 0; k < 2; k++) {
            int s = lane + 32 * k;
            ls[k] = s < ns ? __ldcg(p0 + s * stride + HD + 1) : 0.0f, ms[k] = s < ns ? __ldcg(p0 + s * stride + HD) : 0.0f;
            if (ls[k] > 0.0f) M = fmaxf(M, ms[k]);
        }
        M = cu_warp_max(M);
#pragma unroll
        for (int k = 0; k < 2; k++) {
            int s = lane + 32 * k;
            float ws = ls[k] > 0.0f ? expf(ms[k] - M) * ls[k] : 0.0f;
            if (s < ns) w[r * CU_ATTN_MAX_SPLITS + s] = ws, sum += ws;
        }
        sum = cu_warp_sum(sum);
        if (lane == 0) den[r] = sum;
    }
    __syncthreads();
    for (int i = tid; i < R * HD; i += NT) {
        int r = i / HD, d = i - r * HD, tok = t0 + r / G, h = hk * G + r % G;
        const float *p0 = a.part + ((size_t)tok * a.Hq + h) * (HD + 2) + d;
        float num = 0.0f;
#pragma unroll 8
        for (int s = 0; s < ns; s++) num = fmaf(w[r * CU_ATTN_MAX_SPLITS + s], __ldcg(p0 + s * stride), num);
        a.y[(size_t)tok * qw + (size_t)h * HD + d] = num / den[r];
    }
}

/* ---- 2. attention ----------------------------------------------------------------------- */
/* 8 elements of a K or V row as loaded (f16: one 16-byte word, f32: two; zeros past the
 * positions), widened to f32 as they are stored. */
template <typename CT> struct kv8 {
    uint4 w[sizeof(CT) / 2];
};
template <typename CT> static __device__ __forceinline__ void kv8_load(kv8<CT> &r, const CT *p, bool in)
{
#pragma unroll
    for (int i = 0; i < (int)(sizeof(CT) / 2); i++) r.w[i] = in ? __ldg(reinterpret_cast<const uint4 *>(p) + i) : make_uint4(0, 0, 0, 0);
}
static __device__ __forceinline__ void kv8_put(const kv8<float> &r, float *d)
{
    reinterpret_cast<uint4 *>(d)[0] = r.w[0], reinterpret_cast<uint4 *>(d)[1] = r.w[1];
}
static __device__ __forceinline__ void kv8_put(const kv8<__half> &r, float *d)
{
    float f[8];
    cu_widen8(r.w[0], f);
    reinterpret_cast<float4 *>(d)[0] = make_float4(f[0], f[1], f[2], f[3]);
    reinterpret_cast<float4 *>(d)[1] = make_float4(f[4], f[5], f[6], f[7]);
}

template <int HD, int RW>
static constexpr size_t attn_smem_bytes()
{
    return ((size_t)RW * (HD + 4) + 2 * (size_t)TP * (HD + 4) + (size_t)RW * TP + 3 * RW) * sizeof(float);
}
/* the merge reuses the tiles' space for its weights */
static_assert(attn_smem_bytes<64, ROWS>() >= ((size_t)ROWS * CU_ATTN_MAX_SPLITS + ROWS) * sizeof(float) &&
                  attn_smem_bytes<64, DEC_ROWS>() >= ((size_t)DEC_ROWS * CU_ATTN_MAX_SPLITS + DEC_ROWS) * sizeof(float),
              "merge weights");
static_assert(CU_ATTN_MAX_SPLITS <= 64, "attn_merge: two splits a lane");

/* The sub-batch starting at token ta of a tile ending at t1: consecutive tokens in one sequence
 * slot (returns the token after it), kmax = its longest row's positions, and the split length
 * (kmax spread over the splits in whole tiles of positions). */
static __device__ __forceinline__ int attn_sub(const cu_attn_args &a, int ta, int t1, int *kmax, int *chunk)
{
    int sl = a.seq[ta], tb = ta + 1;
    *kmax = a.pos[ta] + 1;
    while (tb < t1 && a.seq[tb] == sl) *kmax = max(*kmax, a.pos[tb] + 1), tb++;
    int c = (*kmax + a.splits - 1) / a.splits;
    *chunk = (c + TP - 1) / TP * TP;
    return tb;
}

/* Splits that hold positions for some sub-batch of tokens t0 .. t1-1: the same in every block. */
static __device__ int attn_used(const cu_attn_args &a, int t0, int t1)
{
    int used = 1, kmax, chunk;
    for (int ta = t0; ta < t1;) {
        ta = attn_sub(a, ta, t1, &kmax, &chunk);
        used = max(used, (kmax + chunk - 1) / chunk);
    }
    return min(used, a.splits);
}

template <typename CT, int HD, int RW, int NT>
__global__ void __launch_bounds__(NT) attn_kernel(const cu_attn_args a, int qt)
{
    static_assert(TP * HD / 8 % NT == 0 && NT % HD == 0 && RW * HD % NT == 0, "the block's loops divide");
    constexpr int LD = HD + 4, NP = RW * HD / NT, RS = NT / HD; /* HD divides NT */
    extern __shared__ __align__(16) float sm[];
    float *Qs = sm, *Ks = Qs + RW * LD, *Vs = Ks + TP * LD, *Ps = Vs + TP * LD;
    float *rm = Ps + RW * TP, *rl = rm + RW, *ra = rl + RW;
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, d = tid % HD, rb = tid / HD;
    int G = a.Hq / a.Hkv, split = blockIdx.x, hk = blockIdx.y;
    int t0 = blockIdx.z * qt, t1 = min(t0 + qt, a.T);
    size_t qw = (size_t)a.Hq * HD;
    cu_pdl_trigger();
    /* At short contexts most splits hold no positions: they leave at once, the merge counts only
     * the others, and where one split holds them all it writes y itself (no partials, no merge).
     * Positions and slots are the step's inputs (copied before the first kernel): read before the
     * wait, so that blocks with nothing to do leave while the kernel before still runs. */
    const int used = a.splits > 1 ? attn_used(a, t0, t1) : 1;
    if (split >= used) return;
    const bool direct = used == 1;
    cu_pdl_wait(); /* q and this step's k, v come from the kernel before */

    for (int ta = t0; ta < t1;) {
        int kmax, chunk, tb = attn_sub(a, ta, t1, &kmax, &chunk), sl = a.seq[ta];
        int R = (tb - ta) * G;
        int lo = split * chunk, hi = min(lo + chunk, kmax);

        /* the rows' q, QB loads in flight a thread (loaded and stored one by one, 7B's 7 rows
         * had been 7 L2 round trips in a row: Qs might alias a.q as far as the compiler knew) */
        constexpr int QB = 8;
        for (int i0 = tid; i0 < R * HD; i0 += QB * NT) {
            float v[QB];
            int tq = i0 / HD / G, hm = i0 / HD % G; /* row i / HD's token and head, stepped by RS rows */
#pragma unroll
            for (int j = 0; j < QB; j++) {
                int i = i0 + j * NT, dd = i % HD;
                v[j] = i < R * HD ? a.q[(size_t)(ta + tq) * qw + (size_t)(hk * G + hm) * HD + dd] : 0.0f;
                for (hm += RS; hm >= G; hm -= G) tq++;
            }
#pragma unroll
            for (int j = 0; j < QB; j++) {
                int i = i0 + j * NT, r = i / HD, dd = i - r * HD;
                if (i < R * HD) Qs[r * LD + dd] = v[j];
            }
        }
        if (tid < R) rm[tid] = -INFINITY, rl[tid] = 0.0f;
        float o[NP];
#pragma unroll
        for (int i = 0; i < NP; i++) o[i] = 0.0f;
        const CT *kb = (const CT *)a.kc + ((size_t)sl * a.Hkv + hk) * (size_t)a.C * HD;
        const CT *vb = (const CT *)a.vc + ((size_t)sl * a.Hkv + hk) * (size_t)a.C * HD;
        __syncthreads();

        for (int p0 = lo; p0 < hi; p0 += TP) {
            int np = min(TP, hi - p0);
            /* K, V tile to f32: the thread's loads all in flight (as loaded: f16 stays packed
             * until stored, or the registers spill) before any store */
            constexpr int KV = TP * HD / 8 / NT;
            kv8<CT> rk[KV], rv[KV];
#pragma unroll
            for (int j = 0; j < KV; j++) {
                int i = tid + j * NT, p = i / (HD / 8), c = (i - p * (HD / 8)) * 8;
                kv8_load(rk[j], kb + (size_t)(p0 + p) * HD + c, p < np);
                kv8_load(rv[j], vb + (size_t)(p0 + p) * HD + c, p < np);
            }
#pragma unroll
            for (int j = 0; j < KV; j++) {
                int i = tid + j * NT, p = i / (HD / 8), c = (i - p * (HD / 8)) * 8;
                kv8_put(rk[j], Ks + p * LD + c), kv8_put(rv[j], Vs + p * LD + c);
            }
            __syncthreads();
            /* scores and the online softmax: warp w takes rows w, w + NT / 32, ...; lane = position */
            for (int r = warp; r < R; r += NT / 32) {
                int lim = a.pos[ta + r / G];
                float s = -INFINITY;
                if (lane < np && p0 + lane <= lim) {
                    const float4 *qv = reinterpret_cast<const float4 *>(Qs + r * LD);
                    const float4 *kv = reinterpret_cast<const float4 *>(Ks + lane * LD);
                    float d0 = 0.f, d1 = 0.f;
#pragma unroll
                    for (int j = 0; j < HD / 4; j += 2) {
                        float4 x0 = qv[j], y0 = kv[j], x1 = qv[j + 1], y1 = kv[j + 1];
                        d0 = fmaf(x0.x, y0.x, d0), d0 = fmaf(x0.y, y0.y, d0), d0 = fmaf(x0.z, y0.z, d0), d0 = fmaf(x0.w, y0.w, d0);
                        d1 = fmaf(x1.x, y1.x, d1), d1 = fmaf(x1.y, y1.y, d1), d1 = fmaf(x1.z, y1.z, d1), d1 = fmaf(x1.w, y1.w, d1);
                    }
                    s = (d0 + d1) * a.scale;
                }
                float mold = rm[r], mnew = fmaxf(mold, cu_warp_max(s));
                float e = mnew == -INFINITY ? 0.0f : expf(s - mnew);
                float alpha = mnew == -INFINITY ? 1.0f : expf(mold - mnew);
                float sum = cu_warp_sum(e);
                Ps[r * TP + lane] = e;
                __syncwarp();
                if (lane == 0) rm[r] = mnew, rl[r] = rl[r] * alpha + sum, ra[r] = alpha;
            }
            __syncthreads();
            /* o = o * alpha + P · V: thread owns dim d of rows rb, rb + RS, ... */
#pragma unroll
            for (int i = 0; i < NP; i++) o[i] *= ra[rb + i * RS];
            for (int p = 0; p < np; p++) {
                float vv = Vs[p * LD + d];
#pragma unroll
                for (int i = 0; i < NP; i++) o[i] = fmaf(Ps[(rb + i * RS) * TP + p], vv, o[i]);
            }
            __syncthreads();
        }

        /* row r = rb + i RS is query head hk G + hm of token ta + tq; stepped, not divided (NP
         * rows a thread, of which decode has a handful: a division each was most of its time) */
        int tq = rb / G, hm = rb % G;
#pragma unroll
        for (int i = 0; i < NP; i++) {
            const int r = rb + i * RS, tok = ta + tq, h = hk * G + hm;
            for (hm += RS; hm >= G; hm -= G) tq++;
            if (r >= R) continue;
            float l = rl[r];
            if (direct) {
                a.y[(size_t)tok * qw + (size_t)h * HD + d] = o[i] / l;
            } else {
                float *pp = a.part + (((size_t)split * a.T + tok) * a.Hq + h) * (HD + 2);
                pp[d] = l > 0.0f ? o[i] / l : 0.0f;
                if (d == 0) pp[HD] = rm[r], pp[HD + 1] = l;
            }
        }
        __syncthreads();
        ta = tb;
    }
    if (direct) return;
    /* publish this block's partials; the last of the splits that hold positions merges */
    if (!cu_arrive_last(a.counters + blockIdx.z * a.Hkv + hk, used)) return;
    attn_merge<HD, RW, NT>(a, t0, t1, hk, used, sm);
}

/* ---- 4. decode attention of one token on a thread-block cluster (sm_90) ----------------------
 * A step of one token (the usual decode step) spends most of attn_kernel's time in its chain:
 * q, then the K/V tile, then the scores, then the partials out through L2 with a fence and a
 * counter, then the last block's merge reading them back (H100, 7B at 160 positions, clocks read
 * in the kernel: 1.7 + 0.6 + 1.4 + 1.3 + 1.3 + 3.5 us). Here one cluster of DC_CS blocks serves
 * a kv head, each block a contiguous share of the positions:
 * - the K/V rows of earlier steps are constants to this step, so each block starts its first
 *   DC_RING - 1 stages of them into shared memory before the PDL wait; only q and the row of
 *   this step's own position wait for the kernel before;
 * - stages of DC_SP positions (f16 rows, 16-byte chunks swizzled by position so that a warp's
 *   row-per-lane reads meet no bank conflict) pass through a ring, with an online softmax;
 * - the blocks' partials (max, sum, unnormalised outputs) stay in their shared memory and the
 *   cluster merges them through distributed shared memory (each block an eighth of the
 *   outputs, in block order: deterministic), with no global round trip, fence or counter.
 * Threads: 4 x head_dim. Query heads of the group: up to DC_GM (rows past the group are zeros). */
#define DC_CS 8   /* blocks of a cluster: the splits of one kv head */
#define DC_SP 64  /* positions per stage */
#define DC_RING 2 /* stages in shared memory: one in flight while one is used (3 took a block 120 KB: one
                   * block an SM, and fewer clusters of 8 at once than a 7B head at 32K positions wanted) */
#define DC_GM 8   /* query heads per kv head at most */
#define DC_MINP 64  /* positions a block takes at least before the kv head takes another cluster (one stage:
                     * 7B at 2048 positions +5-7% against 256, the same at 128 and 8192) */
#define DC_MAXCL 8  /* clusters a kv head takes at most */

template <int HD> struct dc_geo {
    static constexpr int NT = 4 * HD, CH = HD / 8 /* 16-byte chunks a row */, PARTS = NT / DC_SP /* 16 dims each */;
    static constexpr int PG = NT / (HD / 2); /* position groups of the P.V pass: a thread = a dim pair */
    static constexpr size_t RING = (size_t)DC_RING * DC_SP * HD * 2 * sizeof(__half);
    static constexpr size_t Q = (size_t)DC_GM * HD * sizeof(float);
    static constexpr size_t SPART = (size_t)PARTS * DC_GM * DC_SP * sizeof(float);
    static constexpr size_t SC = (size_t)DC_GM * DC_SP * sizeof(float), PT = SC;
    static constexpr size_t SMEM = RING + Q + SPART + SC + PT + 4 * DC_GM * sizeof(float);
    static_assert(PARTS * 16 == HD && PG == 8 && (size_t)PG * DC_GM * HD * sizeof(float) <= RING && (size_t)DC_GM * HD * sizeof(float) <= SPART,
                  "dc layout");
};

/* Element offset of chunk c of row p in a stage's K or V (chunks swizzled by p & 7). */
template <int HD> static __device__ __forceinline__ int dc_at(int p, int c) { return p * HD + ((c ^ (p & 7)) << 3); }

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define DC_BUILT 1
/* Stage j of this block's positions [lo, hi) into slot st of the ring: rows past hi are zeros;
 * skip (row n - 1, before the PDL wait) is left alone for a plain store after it. */
template <int HD>
static __device__ __forceinline__ void dc_stage(__half *ring, int st, const __half *kb, const __half *vb, int base, int hi,
                                                int skip)
{
    using G = dc_geo<HD>;
    __half *ks = ring + (size_t)st * DC_SP * HD * 2, *vs = ks + DC_SP * HD;
    for (int i = threadIdx.x; i < 2 * DC_SP * G::CH; i += G::NT) {
        const int kv = i / (DC_SP * G::CH), rem = i - kv * DC_SP * G::CH, p = rem / G::CH, c = rem - p * G::CH;
        if (base + p == skip) continue;
        const bool in = base + p < hi;
        cu_cp16((kv ? vs : ks) + dc_at<HD>(p, c), (kv ? vb : kb) + (size_t)(in ? base + p : base) * HD + c * 8, in);
    }
    cu_cp_commit();
}
#endif

template <int HD>
__global__ void __launch_bounds__(4 * HD, 1024 / (4 * HD)) attn_dec_cluster(const cu_attn_args a, int mcl)
{
#ifdef DC_BUILT
    using G = dc_geo<HD>;
    namespace cg = cooperative_groups;
    cg::cluster_group cl = cg::this_cluster();
    extern __shared__ __align__(16) float dsm[];
    __half *ring = reinterpret_cast<__half *>(dsm);
    float *qs = reinterpret_cast<float *>(reinterpret_cast<char *>(dsm) + G::RING);
    float *spart = qs + DC_GM * HD, *sc = spart + G::PARTS * DC_GM * DC_SP, *pt = sc + DC_GM * DC_SP;
    float *rm = pt + DC_SP * DC_GM, *rl = rm + DC_GM, *ra = rl + DC_GM;
    float *fin = spart; /* the block's unnormalised outputs [DC_GM][HD], after the last stage */
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, rank = (int)cl.block_rank(), hk = blockIdx.y;
    const int Gq = a.Hq / a.Hkv, ci = blockIdx.x / DC_CS; /* the kv head's cluster */
    if (!a.pdl_late) cu_pdl_trigger();
    /* The step's position and slot are inputs (copied before the first kernel). The positions go
     * to mcl clusters of the kv head only where each block gets DC_MINP of them or more; then the
     * clusters' merged partials meet through global memory (the last to arrive adds them). */
    const int n = a.pos[0] + 1, sl = a.seq[0];
    const int nb = DC_CS * min(mcl, (n + DC_CS * DC_MINP - 1) / (DC_CS * DC_MINP)); /* blocks that split them */
    const int chunk = ((n + nb - 1) / nb + 15) / 16 * 16, ub = (n + chunk - 1) / chunk, ncl = (ub + DC_CS - 1) / DC_CS;
    const int used = min(DC_CS, ub - ci * DC_CS); /* blocks of this cluster that hold positions */
    if (ci >= ncl || (used == 1 && rank > 0)) return; /* one block alone: no cluster barrier */
    const int lo = (ci * DC_CS + rank) * chunk, hi = min(lo + chunk, n), nst = lo < hi ? (hi - lo + DC_SP - 1) / DC_SP : 0;
    const __half *kb = (const __half *)a.kc + ((size_t)sl * a.Hkv + hk) * (size_t)a.C * HD;
    const __half *vb = (const __half *)a.vc + ((size_t)sl * a.Hkv + hk) * (size_t)a.C * HD;
    /* earlier steps' rows: before the wait (row n - 1 is this step's, from the kernel before) */
#pragma unroll
    for (int j = 0; j < DC_RING - 1; j++) {
        if (j < nst) dc_stage<HD>(ring, j, kb, vb, lo + j * DC_SP, hi, n - 1);
        else cu_cp_commit();
    }
    if (tid < DC_GM) rm[tid] = -INFINITY, rl[tid] = 0.0f;
    cu_pdl_wait();
    for (int i = tid; i < DC_GM * HD; i += G::NT) qs[i] = i < Gq * HD ? a.q[(size_t)hk * Gq * HD + i] : 0.0f;
    const int jl = (n - 1 - lo) / DC_SP; /* the stage of row n - 1, where this block holds it */
    if (n - 1 >= lo && n - 1 < hi && jl < DC_RING - 1 && tid < 2 * G::CH) {
        const int kv = tid / G::CH, c = tid - kv * G::CH, p = n - 1 - lo - jl * DC_SP;
        const uint4 w = __ldcg(reinterpret_cast<const uint4 *>((kv ? vb : kb) + (size_t)(n - 1) * HD + c * 8));
        *reinterpret_cast<uint4 *>(ring + (size_t)jl * DC_SP * HD * 2 + kv * DC_SP * HD + dc_at<HD>(p, c)) = w;
    }

    float o[DC_GM][2];
#pragma unroll
    for (int r = 0; r < DC_GM; r++) o[r][0] = o[r][1] = 0.0f;
    const int half = warp & 1, part = warp >> 1; /* scores: lane + 32 half = position, dims 16 part .. */
    const int dp = tid % (HD / 2), pg = tid / (HD / 2); /* P.V: dims 2 dp, 2 dp + 1; positions pg, pg + 8, ... */
    for (int j = 0; j < nst; j++) {
        if (j + DC_RING - 1 < nst) dc_stage<HD>(ring, (j + DC_RING - 1) % DC_RING, kb, vb, lo + (j + DC_RING - 1) * DC_SP, hi, -1);
        else cu_cp_commit();
        cu_cp_wait<DC_RING - 1>();
        __syncthreads();
        const __half *ks = ring + (size_t)(j % DC_RING) * DC_SP * HD * 2, *vs = ks + DC_SP * HD;
        const int np = min(DC_SP, hi - lo - j * DC_SP);
        { /* partial scores over 16 dims, four at a time for every row */
            const int p = half * 32 + lane;
            const uint4 k0 = *reinterpret_cast<const uint4 *>(ks + dc_at<HD>(p, 2 * part));
            const uint4 k1 = *reinterpret_cast<const uint4 *>(ks + dc_at<HD>(p, 2 * part + 1));
            const uint32_t kw[8] = {k0.x, k0.y, k0.z, k0.w, k1.x, k1.y, k1.z, k1.w};
            float acc[DC_GM];
#pragma unroll
            for (int r = 0; r < DC_GM; r++) acc[r] = 0.0f;
#pragma unroll
            for (int c = 0; c < 4; c++) {
                __half2_raw h0, h1;
                h0.x = (unsigned short)(kw[2 * c] & 0xffffu), h0.y = (unsigned short)(kw[2 * c] >> 16);
                h1.x = (unsigned short)(kw[2 * c + 1] & 0xffffu), h1.y = (unsigned short)(kw[2 * c + 1] >> 16);
                const float2 ka = __half22float2(__half2(h0)), kc = __half22float2(__half2(h1));
#pragma unroll
                for (int r = 0; r < DC_GM; r++) {
                    const float4 q4 = *reinterpret_cast<const float4 *>(qs + r * HD + 16 * part + 4 * c);
                    acc[r] = fmaf(q4.x, ka.x, acc[r]), acc[r] = fmaf(q4.y, ka.y, acc[r]);
                    acc[r] = fmaf(q4.z, kc.x, acc[r]), acc[r] = fmaf(q4.w, kc.y, acc[r]);
                }
            }
#pragma unroll
            for (int r = 0; r < DC_GM; r++) spart[(part * DC_GM + r) * DC_SP + p] = acc[r];
        }
        __syncthreads();
        for (int i = tid; i < DC_GM * DC_SP; i += G::NT) { /* the parts in order, masked past the positions */
            const int r = i / DC_SP, p = i - r * DC_SP;
            float s = 0.0f;
#pragma unroll
            for (int q = 0; q < G::PARTS; q++) s += spart[(q * DC_GM + r) * DC_SP + p];
            sc[i] = p < np ? s * a.scale : -INFINITY;
        }
        __syncthreads();
        if (warp < DC_GM) { /* online softmax, warp = row */
            const int r = warp;
            const float v0 = sc[r * DC_SP + lane], v1 = sc[r * DC_SP + lane + 32];
            const float mo = rm[r], mn = fmaxf(mo, cu_warp_max(fmaxf(v0, v1))); /* finite: np >= 1 */
            const float e0 = expf(v0 - mn), e1 = expf(v1 - mn), al = expf(mo - mn);
            const float sum = cu_warp_sum(e0 + e1);
            pt[lane * DC_GM + r] = e0, pt[(lane + 32) * DC_GM + r] = e1;
            __syncwarp();
            if (lane == 0) rm[r] = mn, rl[r] = rl[r] * al + sum, ra[r] = al;
        }
        __syncthreads();
#pragma unroll
        for (int r = 0; r < DC_GM; r++) o[r][0] *= ra[r], o[r][1] *= ra[r];
#pragma unroll
        for (int i = 0; i < DC_SP / G::PG; i++) { /* unrolled: the loads of all its positions in flight */
            const int p = pg + i * G::PG;
            if (p >= np) break;
            const __half2 v2 = *reinterpret_cast<const __half2 *>(vs + dc_at<HD>(p, dp >> 2) + 2 * (dp & 3));
            const float2 vf = __half22float2(v2);
            const float4 pa = *reinterpret_cast<const float4 *>(pt + p * DC_GM), pb = *reinterpret_cast<const float4 *>(pt + p * DC_GM + 4);
            const float pr[DC_GM] = {pa.x, pa.y, pa.z, pa.w, pb.x, pb.y, pb.z, pb.w};
#pragma unroll
            for (int r = 0; r < DC_GM; r++) o[r][0] = fmaf(pr[r], vf.x, o[r][0]), o[r][1] = fmaf(pr[r], vf.y, o[r][1]);
        }
        __syncthreads(); /* the slot is refilled next turn */
    }
    if (a.pdl_late) cu_pdl_trigger();
    /* the position groups' sums, in group order, into fin (the ring's space is free now) */
    float *red = reinterpret_cast<float *>(ring);
#pragma unroll
    for (int r = 0; r < DC_GM; r++) *reinterpret_cast<float2 *>(red + (pg * DC_GM + r) * HD + 2 * dp) = make_float2(o[r][0], o[r][1]);
    __syncthreads();
    for (int i = tid; i < DC_GM * HD; i += G::NT) {
        float s = 0.0f;
#pragma unroll
        for (int g = 0; g < G::PG; g++) s += red[g * DC_GM * HD + i];
        fin[i] = s;
    }
    const size_t yo = (size_t)hk * Gq * HD; /* this kv head's outputs in y */
    float *cp = a.part + (size_t)ci * a.Hq * (HD + 2) + yo / HD * (HD + 2); /* ncl > 1: [row][HD outputs, max, sum] */
    /* output i (row r, dim d) of the cluster, normalised, whose row has max M and sum L: to y, or
     * where other clusters hold positions too, to this cluster's partials */
    auto put = [&](int i, int r, int d, float v, float M, float L) {
        if (ncl == 1) {
            a.y[yo + i] = v;
            return;
        }
        cp[r * (HD + 2) + d] = v;
        if (d == 0) cp[r * (HD + 2) + HD] = M, cp[r * (HD + 2) + HD + 1] = L;
    };
    if (used == 1) { /* block 0 alone */
        for (int i = tid; i < Gq * HD; i += G::NT) {
            const int r = i / HD;
            put(i, r, i - r * HD, fin[i] / rl[r], rm[r], rl[r]);
        }
    } else {
        cl.sync(); /* every block's fin, rm, rl in place */
        const int per = (Gq * HD + DC_CS - 1) / DC_CS;
        for (int t = tid; t < per; t += G::NT) {
            const int i = rank * per + t, r = i / HD, d = i - r * HD;
            if (i >= Gq * HD) break;
            float ms[DC_CS], ls[DC_CS], os[DC_CS], M = -INFINITY;
#pragma unroll
            for (int b = 0; b < DC_CS; b++)
                if (b < used) {
                    ms[b] = *cl.map_shared_rank(rm + r, b), ls[b] = *cl.map_shared_rank(rl + r, b);
                    os[b] = *cl.map_shared_rank(fin + i, b);
                    M = fmaxf(M, ms[b]);
                }
            float num = 0.0f, den = 0.0f;
#pragma unroll
            for (int b = 0; b < DC_CS; b++)
                if (b < used) {
                    const float w = expf(ms[b] - M);
                    num = fmaf(w, os[b], num), den = fmaf(w, ls[b], den);
                }
            put(i, r, d, num / den, M, den);
        }
        if (ncl > 1) __threadfence(); /* this block's share, before block 0 counts the cluster in */
        cl.sync(); /* no block leaves while another reads its shared memory */
        if (rank > 0) return;
    }
    if (ncl == 1) return;
    /* block 0 of each cluster counts it in; the last adds the clusters' partials, in cluster order */
    if (!cu_arrive_last(a.counters + hk, ncl)) return;
    const float *p0 = a.part + yo / HD * (HD + 2);
    for (int i = tid; i < Gq * HD; i += G::NT) {
        const int r = i / HD, d = i - r * HD;
        float M = -INFINITY, num = 0.0f, den = 0.0f;
        for (int k = 0; k < ncl; k++) M = fmaxf(M, __ldcg(p0 + ((size_t)k * a.Hq + r) * (HD + 2) + HD));
        for (int k = 0; k < ncl; k++) {
            const float *pk = p0 + ((size_t)k * a.Hq + r) * (HD + 2);
            const float w = expf(__ldcg(pk + HD) - M) * __ldcg(pk + HD + 1);
            num = fmaf(w, __ldcg(pk + d), num), den += w;
        }
        a.y[yo + i] = num / den;
    }
#endif
}

/* 1 where this build has the cluster kernel for the device it runs on (sm_90 code, not the PTX fallback). */
__device__ int dc_built_flag;
__global__ void dc_probe(void)
{
#ifdef DC_BUILT
    dc_built_flag = 1;
#endif
}
static bool dc_on;
static int dc_cap[2]; /* clusters of attn_dec_cluster<64>, <128> the device runs at once */

template <int HD> static int dc_resident(void)
{
    cudaLaunchAttribute at = cu_cluster_attr(DC_CS);
    cudaLaunchConfig_t c = {};
    c.gridDim = dim3(DC_CS * 64), c.blockDim = dim3(dc_geo<HD>::NT), c.dynamicSmemBytes = dc_geo<HD>::SMEM;
    c.attrs = &at, c.numAttrs = 1;
    int n = 0;
    if (cudaOccupancyMaxActiveClusters(&n, attn_dec_cluster<HD>, &c)) n = 0, cudaGetLastError();
    return n;
}

/* ---- launchers ---------------------------------------------------------------------------- */
extern "C" int loom__cu_attn_supported(int hd, int group)
{
    return (hd == 64 || hd == 128) && group >= 1 && group <= ROWS;
}

extern "C" cudaError_t loom__cu_attn_init(int allow_cluster, int *cluster)
{
    static bool any_init;
    cudaError_t e;
    int flag = 0;
    if (allow_cluster) {
        dc_probe<<<1, 1>>>();
        if ((e = cudaGetLastError()) || (e = cudaMemcpyFromSymbol(&flag, dc_built_flag, sizeof flag))) return e;
    }
    dc_on = (any_init ? dc_on : true) && flag, any_init = true; /* every device opened must have it */
    *cluster = 0;
    if (flag) {
        if ((e = cudaFuncSetAttribute(attn_dec_cluster<64>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)dc_geo<64>::SMEM)) ||
            (e = cudaFuncSetAttribute(attn_dec_cluster<128>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)dc_geo<128>::SMEM)))
            return e;
        const int c64 = dc_resident<64>(), c128 = dc_resident<128>(); /* the least of the devices opened */
        dc_cap[0] = dc_cap[0] && dc_cap[0] < c64 ? dc_cap[0] : c64, dc_cap[1] = dc_cap[1] && dc_cap[1] < c128 ? dc_cap[1] : c128;
    }
    if (dc_on) *cluster = dc_cap[1] > 0 ? dc_cap[1] : 1;
#define ATTN_ALLOW(CT, HD, RW, NT) \
    cudaFuncSetAttribute(attn_kernel<CT, HD, RW, NT>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)attn_smem_bytes<HD, RW>())
    if ((e = ATTN_ALLOW(__half, 64, ROWS, NTH)) || (e = ATTN_ALLOW(float, 64, ROWS, NTH)) ||
        (e = ATTN_ALLOW(__half, 128, ROWS, NTH)) || (e = ATTN_ALLOW(float, 128, ROWS, NTH)) ||
        (e = ATTN_ALLOW(__half, 64, DEC_ROWS, dec_threads<64>())) || (e = ATTN_ALLOW(float, 64, DEC_ROWS, dec_threads<64>())) ||
        (e = ATTN_ALLOW(__half, 128, DEC_ROWS, dec_threads<128>())) || (e = ATTN_ALLOW(float, 128, DEC_ROWS, dec_threads<128>())))
        return e;
#undef ATTN_ALLOW
    return cudaSuccess;
}

/* Query rows a block holds: DEC_ROWS in decode steps where a group fits, else ROWS. */
static int attn_rows(const cu_attn_args *a)
{
    return a->T <= CU_GEMV_MAX_T && a->Hq / a->Hkv <= DEC_ROWS ? DEC_ROWS : ROWS;
}

static int tokens_per_block(const cu_attn_args *a)
{
    int rows = attn_rows(a), G = a->Hq / a->Hkv;
    return rows / G < 1 ? 1 : rows / G;
}

extern "C" int loom__cu_attn_splits(const cu_attn_args *a, int sm_count)
{
    if (a->T > CU_GEMV_MAX_T) return 1; /* prefill: enough blocks without splitting */
    int qt = tokens_per_block(a);
    int base = a->Hkv * ((a->T + qt - 1) / qt);
    int s = (2 * sm_count + base - 1) / base, tiles = (a->C + TP - 1) / TP;
    if (s > CU_ATTN_MAX_SPLITS) s = CU_ATTN_MAX_SPLITS;
    if (s > tiles) s = tiles;
    return s < 1 ? 1 : s;
}

extern "C" size_t loom__cu_attn_part_floats(int T, int Hq, int hd, int splits)
{
    return splits > 1 ? (size_t)splits * T * Hq * (hd + 2) : 0;
}

template <typename CT, int HD>
static cudaError_t attn_typed(cudaStream_t s, const cu_attn_args *a)
{
    int qt = tokens_per_block(a);
    cudaError_t e;
    if (!a->stored) {
        kv_store_kernel<CT><<<dim3(a->T, a->Hkv), HD, 0, s>>>(a->k, a->v, (CT *)a->kc, (CT *)a->vc, a->T, a->Hkv, HD,
                                                              a->C, a->pos, a->seq);
        if ((e = cudaGetLastError())) return e;
    }
    if (dc_on && a->T == 1 && sizeof(CT) == 2 && a->Hq / a->Hkv <= DC_GM) {
        /* clusters per kv head for long contexts: as many as run at once, within the split scratch */
        int mcl = dc_cap[HD == 128] / a->Hkv;
        mcl = mcl > DC_MAXCL ? DC_MAXCL : mcl > a->splits ? a->splits : mcl;
        if (mcl < 1 || !a->part || !a->counters) mcl = 1;
        return cu_launch_cl(attn_dec_cluster<HD>, dim3(DC_CS * mcl, a->Hkv), dim3(dc_geo<HD>::NT), DC_CS,
                            dc_geo<HD>::SMEM, s, a->pdl, *a, mcl);
    }
    dim3 grid(a->splits, a->Hkv, (a->T + qt - 1) / qt);
    constexpr int DT = dec_threads<HD>();
    if (attn_rows(a) == DEC_ROWS)
        return cu_launch(attn_kernel<CT, HD, DEC_ROWS, DT>, grid, dim3(DT), attn_smem_bytes<HD, DEC_ROWS>(), s, a->pdl, *a, qt);
    return cu_launch(attn_kernel<CT, HD, ROWS, NTH>, grid, dim3(NTH), attn_smem_bytes<HD, ROWS>(), s, a->pdl, *a, qt);
}

extern "C" cudaError_t loom__cu_gqa_attn(cudaStream_t s, const cu_attn_args *a)
{
    if (!loom__cu_attn_supported(a->hd, a->Hq / a->Hkv) || a->Hq % a->Hkv) return cudaErrorInvalidValue;
    if (a->splits > 1 && (!a->part || !a->counters || a->splits > CU_ATTN_MAX_SPLITS)) return cudaErrorInvalidValue;
    if (a->hd == 64) return a->cache_f16 ? attn_typed<__half, 64>(s, a) : attn_typed<float, 64>(s, a);
    return a->cache_f16 ? attn_typed<__half, 128>(s, a) : attn_typed<float, 128>(s, a);
}
