/*
 * cuda_impl.h — internals of the CUDA backend plugin, shared by its C files
 * and its CUDA kernels (extern "C" launchers).
 *
 *   cuda.c       the loom_backend_i table: init, devices, buffers, weights
 *   cuda_graph.c compile (per-node plans, scratch), execute (step upload,
 *                CUDA graph capture and replay), release
 *   k_ops.cu     embed, rmsnorm, rope, swiglu, add
 *   k_matmul.cu  dense GEMV, AWQ repack and GEMV
 *   k_gemm.cu    tensor-core GEMM for prefill (f16/bf16 dense and AWQ)
 *   k_attn.cu    KV cache store, grouped-query attention, split combine
 *
 * Every launcher enqueues on the stream it is given and returns the launch's
 * cudaError_t (cudaGetLastError after the launch). Device pointers only;
 * dtypes are loom_dtype values. Nothing here is visible outside the plugin.
 */
#ifndef LOOM_CUDA_IMPL_H
#define LOOM_CUDA_IMPL_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "loom_backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- AWQ, repacked once by weight_prepare ----------------------------------------
 * Laid out for mma.sync m16n8k16 with the weight as the A operand (16 columns x 16 k):
 * q:    uint4 [N16/16][K/64][32]  tile t (columns 16t .. 16t+15), chunk c (k = 64c ..
 *                         64c+63), lane l = 4g + j: word s of the uint4 holds, for the
 *                         mma step at k0 = 64c + 16s, the 8 weights of columns 16t + g
 *                         and 16t + g + 8 at k = k0 + 4j .. k0 + 4j + 3. Nibble p (bits
 *                         4p..4p+3) is column g + 8 (p & 1), k offset 2 ((p >> 1) & 1) +
 *                         (p >> 2), so that masking 0x000F000F (and 0x00F000F0, and the
 *                         same after >> 8) yields the lane's A fragment registers a0
 *                         (a1, a2, a3) as f16 pairs by the exponent trick. A warp
 *                         reading one chunk of one tile reads 512 contiguous bytes.
 * meta: uint32 [K/128][N16] bits 0..15 the f16 scale, bits 16..23 the zero point.
 * N16 is N rounded up to whole tiles; padding columns have zero nibbles and meta.
 * The decode GEMV (k_matmul.cu) and the prefill GEMM (k_gemm.cu) both read it. */
#define CU_AWQ_MAGIC 0x63754157u
typedef struct cu_awq {
    uint32_t  magic;
    int64_t   K, N;
    void     *q;    /* device: cu_awq_q_bytes(K, N) */
    uint32_t *meta; /* device: (K/128) * N16 words, right after q */
} cu_awq;

#define CU_AWQ_N16(N) (((N) + 15) / 16 * 16) /* a macro: kernels use it too */
static inline int64_t cu_awq_n16(int64_t N) { return CU_AWQ_N16(N); }
static inline size_t  cu_awq_q_bytes(int64_t K, int64_t N) { return (size_t)cu_awq_n16(N) * (size_t)K / 2; }
static inline size_t  cu_awq_packed_bytes(int64_t K, int64_t N)
{
    return cu_awq_q_bytes(K, N) + (size_t)(K / 128) * (size_t)cu_awq_n16(N) * 4;
}
/* The descriptor of a packed weight whose bytes start at base. */
static inline cu_awq cu_awq_at(int64_t K, int64_t N, void *base)
{
    cu_awq w = {CU_AWQ_MAGIC, K, N, base, (uint32_t *)((char *)base + cu_awq_q_bytes(K, N))};
    return w;
}

cudaError_t loom__cu_awq_repack(cudaStream_t s, const void *blob, cu_awq *w);

/* ---- matmul ----------------------------------------------------------------------- */
#define CU_GEMV_MAX_T 8 /* matmuls of at most this many rows run as GEMV */

/* y[T,N] = x[T,K] · w[N,K]ᵀ + bias; any T (chunks of CU_GEMV_MAX_T rows). */
cudaError_t loom__cu_gemv(cudaStream_t s, const float *x, const void *w, int wdt, const void *bias, int bdt, float *y,
                          int T, int64_t K, int64_t N, int sm_count);
/* The prefill GEMMs' copy of x rounded to f16 (bf16 weights: bf16 hi + lo), and which x it
 * holds: a GEMM reading the same x as the GEMM launched just before it (q, k, v; gate, up)
 * skips the rounding. The caller clears x whenever anything else may have run in between. */
typedef struct cu_xh {
    void        *p;
    size_t       bytes;
    const float *x;    /* NULL: holds nothing */
    int          T, form;
    int64_t      K;
} cu_xh;
/* Bytes of cu_xh.p a GEMM of T rows of K needs. */
size_t loom__cu_gemm_xh_bytes(int wdt, int T, int64_t K);
/* Tensor cores (k_gemm.cu: mma.sync m16n8k16, f32 accumulate): y[i] = x · w[i]ᵀ + bias[i] for
 * n <= CU_GEMM_MAX_W weights of one kind wdt that read the same x [T, K] (q, k, v; gate, up), in
 * one launch. Dense: w f16 or bf16 [N][K], K % 8 == 0 (otherwise the GEMV, which needs no xh);
 * LOOM_Q4_AWQ: awq. */
#define CU_GEMM_MAX_W 3
typedef struct cu_gemm_w {
    const void   *w;    /* dense */
    const cu_awq *awq;  /* LOOM_Q4_AWQ */
    const void   *bias; /* NULL: none */
    int           bdt;
    float        *y;    /* [T, N] */
    int64_t       N;
} cu_gemm_w;
cudaError_t loom__cu_gemm(cudaStream_t s, const float *x, int wdt, const cu_gemm_w *w, int n, int T, int64_t K, cu_xh *xh,
                          int sm_count);
/* Once per device, before the first loom__cu_gemm: shared-memory limits, and whether the prefill
 * GEMMs use wgmma (allowed, and the device runs this build's sm_90a code; *wgmma says). */
cudaError_t loom__cu_gemm_init(int allow_wgmma, int *wgmma);
cudaError_t loom__cu_awq_init(void); /* likewise, for the AWQ GEMV */
/* AWQ decode GEMV (1 <= T <= CU_GEMV_MAX_T), one pass over the packed weights
 * in one launch, with the epilogue fused:
 *   CU_EPI_PLAIN   y[i] = x·w[i] + bias[i] for n weights sharing x (q, k, v), each
 *                  optionally turned by RoPE
 *   CU_EPI_SWIGLU  n == 2, w[0] gate, w[1] up (same N): y[0] = silu(gate) * up
 *   CU_EPI_ADD     n == 1: y[0] = x·w[0] + bias[0] + r (the residual add), and
 *                  optionally the rmsnorm of that row that the next layer reads
 * Results do not depend on the launch geometry's timing: sums are added in a
 * fixed order. */
enum { CU_EPI_PLAIN, CU_EPI_SWIGLU, CU_EPI_ADD };
#define CU_GEMV_MAX_W 3
#define CU_AWQ_XNORM_MAX_K 5440 /* T + 1 rows of x as f16 still fit the staging space */
typedef struct cu_awq_gemv_args {
    const float  *x;
    int           T, n, epi;
    const cu_awq *w[CU_GEMV_MAX_W];
    const void   *bias[CU_GEMV_MAX_W]; /* NULL: none */
    int           bdt[CU_GEMV_MAX_W];
    float        *y[CU_GEMV_MAX_W];
    const float  *r;                   /* CU_EPI_ADD: [T, N] */
    /* CU_EPI_ADD, optional (norm_y non-NULL): norm_y = rmsnorm(y[0]) * norm_w as well,
     * by the block that finishes last (counter: a device int, zero between launches) */
    const void   *norm_w;
    int           norm_wdt;
    float         norm_eps;
    float        *norm_y;
    int          *counter;
    /* CU_EPI_PLAIN, optional per weight: y[i] = rope(x·w[i] + bias[i]) (neox, head_dim
     * rope_hd[i], a multiple of 32; inv_freq table rope_freq[i] on the device) at the
     * step's positions pos (device, T entries) */
    const double *rope_freq[CU_GEMV_MAX_W];
    double        rope_mscale[CU_GEMV_MAX_W];
    int           rope_hd[CU_GEMV_MAX_W];
    const int32_t *pos;
    /* CU_EPI_PLAIN, optional per weight: also store y[i] in a KV cache [S, N/cache_hd, C,
     * cache_hd] (f16 or f32) at (seq[t], pos[t]), as gqa_attn's store does (pos, seq:
     * device, T entries each; a later token of the step with the same cell wins) */
    void         *cache[CU_GEMV_MAX_W];
    int           cache_f16, cache_hd, cache_C;
    const int32_t *seq;
    int           pdl;                 /* launch as a programmatic dependent (k_common.cuh) */
    /* with pdl: the launch after may start only once each block's last sums are done, not as the
     * block starts (an early dependent's blocks slow this one; cuda_graph.c picks which) */
    int           pdl_late;
    int           warps;               /* per block; 0: the launcher's choice (kbench --awq sweeps it) */
    /* optional: x is the residual stream and the GEMV reads rmsnorm(x) * xnorm_w (eps xnorm_eps)
     * instead, which every block computes as it stages x (K <= CU_AWQ_XNORM_MAX_K): the launch
     * before then needs no last-block rmsnorm, the serial tail of an o or down launch */
    const void   *xnorm_w;
    int           xnorm_wdt;
    float         xnorm_eps;
    int           x_place;             /* CU_X_*: where the GEMV reads x from; CU_X_AUTO for decode */
    /* blocks launched: 0, as many as stay resident, each looping over several blocks' work (see
     * awq_grid); n > 0, at most n (tests); -1, one per block of work (LOOM_CUDA_AWQ_LOOP=0) */
    int           grid;
    int           ring;                /* stages of each warp's weight ring, 2..4; 0: the launcher's choice
                                        * (LOOM_CUDA_AWQ_RING) */
    /* f16 rows between gate/up and down: y_f16 (CU_EPI_SWIGLU) writes y[0] as [T, N] f16, rounded as
     * the next GEMV would round it; x_f16 (not with xnorm_w) reads x as [T, K] f16 */
    int           x_f16, y_f16;
} cu_awq_gemv_args;
/* x_place: AUTO stages x per warp for one row (or where per block does not fit), else per block,
 * else reads it from global memory; the others force one (kbench, tests; LOOM_CUDA_XSTAGE=block). */
enum { CU_X_AUTO, CU_X_GLOBAL, CU_X_BLOCK, CU_X_WARP };
cudaError_t loom__cu_awq_gemv(cudaStream_t s, const cu_awq_gemv_args *a, int sm_count);

/* ---- small ops ---------------------------------------------------------------------- */
/* Out-of-range ids write NaN rows and set err[0] = 1, err[1] = token, err[2] = id. */
cudaError_t loom__cu_embed(cudaStream_t s, const void *table, int dt, int64_t V, int64_t D, const int32_t *ids, float *y,
                           int T, int *err);
cudaError_t loom__cu_rmsnorm(cudaStream_t s, const float *x, const void *w, int wdt, float eps, float *y, int T,
                             int64_t D);
/* inv_freq: device, head_dim/2 doubles; pos: device, T entries. */
cudaError_t loom__cu_rope(cudaStream_t s, const float *x, float *y, int T, int n_head, int head_dim,
                          const double *inv_freq, double mscale, const int32_t *pos);
cudaError_t loom__cu_swiglu(cudaStream_t s, const float *g, const float *u, float *y, int64_t n);
cudaError_t loom__cu_add(cudaStream_t s, const float *a, const float *b, float *y, int64_t n);

/* ---- attention ------------------------------------------------------------------------ */
typedef struct cu_attn_args {
    const float   *q, *k, *v;     /* [T, Hq*hd], [T, Hkv*hd], [T, Hkv*hd] */
    void          *kc, *vc;       /* [S, Hkv, C, hd] */
    int            cache_f16;     /* else f32 */
    float         *y;             /* [T, Hq*hd] */
    int            T, S, C, Hq, Hkv, hd;
    float          scale;
    const int32_t *pos, *seq;     /* device, T entries each */
    int            stored;        /* the step's k, v are in the caches already (the fused GEMV) */
    int            splits;        /* KV splits per (token tile, kv head); 1: no merge */
    float         *part;          /* splits * T * Hq * (hd + 2) floats when splits > 1 */
    int           *counters;      /* splits > 1: CU_ATTN_COUNTERS(Hkv) ints, zero; left zero */
    int            pdl;           /* with stored: launch as a programmatic dependent */
    int            pdl_late;      /* with pdl: the cluster kernel lets the launch after it start at
                                   * its sums' end, not as it starts (as cu_awq_gemv_args) */
} cu_attn_args;

#define CU_ATTN_ROWS 32 /* query rows (tokens x heads of one group) per block */
#define CU_ATTN_MAX_SPLITS 64
#define CU_ATTN_COUNTERS(Hkv) ((Hkv) * CU_GEMV_MAX_T) /* splits happen for <= CU_GEMV_MAX_T tokens */
int         loom__cu_attn_supported(int hd, int group);
/* Raise the kernels' dynamic shared memory limit once (not capturable). allow_cluster: one-token
 * decode steps on the sm_90 cluster kernel where the build has it (*cluster: how many of its
 * clusters for head_dim 128 run at once, 0 where it is off). */
cudaError_t loom__cu_attn_init(int allow_cluster, int *cluster);
int         loom__cu_attn_splits(const cu_attn_args *a, int sm_count);
size_t      loom__cu_attn_part_floats(int T, int Hq, int hd, int splits);
/* Writes the step's k, v into the caches, then attends. */
cudaError_t loom__cu_gqa_attn(cudaStream_t s, const cu_attn_args *a);

#ifdef __cplusplus
}
#endif
#endif
