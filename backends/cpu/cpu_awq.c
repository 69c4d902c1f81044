/* cpu_awq.c — AWQ int4 (group 128, zero points) matmul on the CPU.
 *
 * Layout (see cpu_impl.h): tiles of 64 columns, each a contiguous run of
 * group blocks {u32 q[16][64], f16 s[64], u8 z[64]}; word (r, c) of a block
 * holds the eight weights q[8r+i][c] of one column in bits 4i..4i+3.
 *
 * Decode (T <= CPU_AWQ_GEMV_MAX_T rows): one pass over the packed weight,
 *   y[n] = sum_g s[g][n] * (sum_{k in g} x[k] q[k][n] - z[g][n] sum_{k in g} x[k])
 * Unpacking nibble i of a word is one AND (no shift: the masked value is
 * q * 16^i, exact in f32) and one int->float convert; the 16^-i is folded into
 * a pre-scaled copy of x (xs[k] = x[k] * 16^-(k%8), exact: a power of two).
 * Nibble 7 is a plain shift right by 28 (an AND would leave the sign bit set).
 * So each multiply-add costs AND + CVT + FMA on 16 (AVX-512) or 8 (AVX2) lanes.
 *
 * Prefill (more rows): dequantise a block of tiles (all of K) into scratch f32
 * in parallel, then cblas_sgemm on it from the calling thread. The whole
 * weight is never widened at once. */
#include <cblas.h>
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_impl.h"

#define GEMV_MAX_T 4               /* rows handled by the streaming GEMV */
#define PREFILL_BUDGET (8u << 20)  /* bytes of f32 scratch for a dequantised block */

static const int slot_of[8] = {0, 4, 1, 5, 2, 6, 3, 7}; /* nibble holding column offset c */

/* x scale per nibble: nibbles 0..6 are read in place (value q*16^i), nibble 7 shifted down. */
static const float nib_scale[8] = {1.0f, 0x1p-4f, 0x1p-8f, 0x1p-12f, 0x1p-16f, 0x1p-20f, 0x1p-24f, 1.0f};

static inline int64_t n_tiles_of(int64_t N) { return (N + CPU_AWQ_TILE - 1) / CPU_AWQ_TILE; }

size_t loom__cpu_awq_packed_bytes(int64_t K, int64_t N)
{
    return (size_t)n_tiles_of(N) * (size_t)(K / LOOM_AWQ_GROUP) * CPU_AWQ_BLOCK;
}

static inline const uint8_t *block_of(const cpu_awq_packed *p, int64_t tile, int64_t g)
{
    return p->data + ((size_t)tile * (size_t)p->n_groups + (size_t)g) * CPU_AWQ_BLOCK;
}

/* ---- repacking (once, at weight_prepare) ------------------------------------------- */
typedef struct {
    cpu_awq_packed *p;
    const uint32_t *qw, *qz;
    const uint16_t *sc;
} repack_job;

static void repack_task(void *ctxp, int64_t b, int64_t e, int tid)
{
    const repack_job *j = ctxp;
    const cpu_awq_packed *p = j->p;
    int64_t G = p->n_groups, N = p->N, W8 = N / 8;
    for (int64_t tg = b; tg < e; tg++) {
        int64_t tile = tg / G, g = tg % G, n0 = tile * CPU_AWQ_TILE;
        uint8_t *blk = (uint8_t *)block_of(p, tile, g);
        uint32_t *q = (uint32_t *)blk;
        uint16_t *s = (uint16_t *)(blk + CPU_AWQ_QBYTES);
        uint8_t *z = blk + CPU_AWQ_QBYTES + 2 * CPU_AWQ_TILE;
        memset(blk, 0, CPU_AWQ_BLOCK);
        int64_t valid = N - n0 < CPU_AWQ_TILE ? N - n0 : CPU_AWQ_TILE; /* a multiple of 8 */
        for (int r = 0; r < 16; r++)
            for (int i = 0; i < 8; i++) {
                const uint32_t *row = j->qw + (g * LOOM_AWQ_GROUP + 8 * r + i) * W8 + n0 / 8;
                for (int64_t cw = 0; cw < valid / 8; cw++) {
                    uint32_t w = row[cw];
                    for (int c = 0; c < 8; c++)
                        q[r * CPU_AWQ_TILE + 8 * cw + c] |= ((w >> (4 * slot_of[c])) & 15u) << (4 * i);
                }
            }
        for (int64_t c = 0; c < valid; c++) {
            int64_t n = n0 + c;
            s[c] = j->sc[g * N + n];
            z[c] = (uint8_t)((j->qz[g * W8 + n / 8] >> (4 * slot_of[n % 8])) & 15u);
        }
    }
}

void loom__cpu_awq_repack(cpu_awq_packed *p, const void *blob, cpu_pool *pool)
{
    const uint8_t *b = blob;
    int64_t K = p->K, N = p->N;
    repack_job j = {p, (const uint32_t *)b, (const uint32_t *)(b + K * N / 2),
                    (const uint16_t *)(b + K * N / 2 + (K / LOOM_AWQ_GROUP) * N / 2)};
    loom__cpu_parallel_for(pool, p->n_tiles * p->n_groups, repack_task, &j);
}

/* ---- GEMV kernels: one tile, T rows --------------------------------------------------
 * xs: [T][K] pre-scaled x, xsum: [T][G] group sums of x, out: [T][64]. */
typedef void (*tile_fn)(const cpu_awq_packed *p, int64_t tile, const float *xs, const float *xsum, float *out);

static inline void tile_scalar_t(const cpu_awq_packed *p, int64_t tile, const float *xs, const float *xsum,
                                 float *out, int T)
{
    int64_t K = p->K, G = p->n_groups;
    float acc[GEMV_MAX_T][CPU_AWQ_TILE];
    memset(out, 0, sizeof(float) * (size_t)T * CPU_AWQ_TILE);
    for (int64_t g = 0; g < G; g++) {
        const uint8_t *blk = block_of(p, tile, g);
        const uint32_t *q = (const uint32_t *)blk;
        const uint16_t *s = (const uint16_t *)(blk + CPU_AWQ_QBYTES);
        const uint8_t *z = blk + CPU_AWQ_QBYTES + 2 * CPU_AWQ_TILE;
        memset(acc, 0, sizeof acc);
        for (int r = 0; r < 16; r++)
            for (int i = 0; i < 8; i++) {
                uint32_t m = i < 7 ? 15u << (4 * i) : 0;
                for (int t = 0; t < T; t++) {
                    float xv = xs[t * K + g * LOOM_AWQ_GROUP + 8 * r + i];
                    for (int c = 0; c < CPU_AWQ_TILE; c++) {
                        uint32_t w = q[r * CPU_AWQ_TILE + c];
                        acc[t][c] += (float)(i < 7 ? (w & m) : (w >> 28)) * xv;
                    }
                }
            }
        for (int t = 0; t < T; t++)
            for (int c = 0; c < CPU_AWQ_TILE; c++)
                out[t * CPU_AWQ_TILE + c] += loom_f16_to_f32(s[c]) * (acc[t][c] - (float)z[c] * xsum[t * G + g]);
    }
}

static void tile_scalar(const cpu_awq_packed *p, int64_t tile, const float *xs, const float *xsum, float *out, int T)
{
    tile_scalar_t(p, tile, xs, xsum, out, T);
}

#define AVX2_ATTR __attribute__((target("avx2,fma,f16c")))
#define AVX512_ATTR __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

/* AVX2: the tile in chunks of NV ymm vectors (8 columns each), NA accumulator sets. */
static inline __attribute__((always_inline)) AVX2_ATTR void
tile_avx2_t(const cpu_awq_packed *p, int64_t tile, const float *xs, const float *xsum, float *out, int T, int NV,
            int NA)
{
    int64_t K = p->K, G = p->n_groups;
    #pragma GCC unroll 16
    for (int t = 0; t < T; t++)
        #pragma GCC unroll 16
        for (int c = 0; c < CPU_AWQ_TILE; c += 8) _mm256_storeu_ps(out + t * CPU_AWQ_TILE + c, _mm256_setzero_ps());
    for (int64_t g = 0; g < G; g++) {
        const uint8_t *blk = block_of(p, tile, g);
        const uint32_t *q = (const uint32_t *)blk;
        const uint16_t *s = (const uint16_t *)(blk + CPU_AWQ_QBYTES);
        const uint8_t *z = blk + CPU_AWQ_QBYTES + 2 * CPU_AWQ_TILE;
        #pragma GCC unroll 16
        for (int c0 = 0; c0 < CPU_AWQ_TILE; c0 += 8 * NV) {
            __m256 acc[2][GEMV_MAX_T][4];
            #pragma GCC unroll 16
            for (int a = 0; a < NA; a++)
                #pragma GCC unroll 16
                for (int t = 0; t < T; t++)
                    #pragma GCC unroll 16
                    for (int j = 0; j < NV; j++) acc[a][t][j] = _mm256_setzero_ps();
            const float *xg = xs + g * LOOM_AWQ_GROUP;
            for (int r = 0; r < 16; r++) {
                __m256i v[4];
                #pragma GCC unroll 16
                for (int j = 0; j < NV; j++)
                    v[j] = _mm256_load_si256((const __m256i *)(q + r * CPU_AWQ_TILE + c0 + 8 * j));
                #pragma GCC unroll 16
                for (int i = 0; i < 8; i++) {
                    int a = NA == 2 ? (i & 1) : 0;
                    __m256 xb[GEMV_MAX_T];
                    #pragma GCC unroll 16
                    for (int t = 0; t < T; t++) xb[t] = _mm256_broadcast_ss(xg + t * K + 8 * r + i);
                    #pragma GCC unroll 16
                    for (int j = 0; j < NV; j++) {
                        __m256i m = i < 7 ? _mm256_and_si256(v[j], _mm256_set1_epi32(15 << (4 * i)))
                                          : _mm256_srli_epi32(v[j], 28);
                        __m256 d = _mm256_cvtepi32_ps(m);
                        #pragma GCC unroll 16
                        for (int t = 0; t < T; t++) acc[a][t][j] = _mm256_fmadd_ps(d, xb[t], acc[a][t][j]);
                    }
                }
            }
            #pragma GCC unroll 16
            for (int j = 0; j < NV; j++) {
                int c = c0 + 8 * j;
                __m256 sv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + c)));
                __m256 zv = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(z + c))));
                #pragma GCC unroll 16
                for (int t = 0; t < T; t++) {
                    __m256 a0 = NA == 2 ? _mm256_add_ps(acc[0][t][j], acc[1][t][j]) : acc[0][t][j];
                    a0 = _mm256_fnmadd_ps(zv, _mm256_set1_ps(xsum[t * G + g]), a0);
                    float *o = out + t * CPU_AWQ_TILE + c;
                    _mm256_storeu_ps(o, _mm256_fmadd_ps(sv, a0, _mm256_loadu_ps(o)));
                }
            }
        }
    }
}

static AVX2_ATTR void tile_avx2_1(const cpu_awq_packed *p, int64_t tl, const float *xs, const float *xsum, float *o)
{
    tile_avx2_t(p, tl, xs, xsum, o, 1, 4, 2);
}
static AVX2_ATTR void tile_avx2_2(const cpu_awq_packed *p, int64_t tl, const float *xs, const float *xsum, float *o)
{
    tile_avx2_t(p, tl, xs, xsum, o, 2, 4, 1);
}
static AVX2_ATTR void tile_avx2_3(const cpu_awq_packed *p, int64_t tl, const float *xs, const float *xsum, float *o)
{
    tile_avx2_t(p, tl, xs, xsum, o, 3, 2, 1);
}
static AVX2_ATTR void tile_avx2_4(const cpu_awq_packed *p, int64_t tl, const float *xs, const float *xsum, float *o)
{
    tile_avx2_t(p, tl, xs, xsum, o, 4, 2, 1);
}

/* AVX-512: the whole tile (4 zmm) per row of words, NA accumulator sets. */
static inline __attribute__((always_inline)) AVX512_ATTR void
tile_avx512_t(const cpu_awq_packed *p, int64_t tile, const float *xs, const float *xsum, float *out, int T, int NA)
{
    int64_t K = p->K, G = p->n_groups;
    #pragma GCC unroll 16
    for (int t = 0; t < T; t++)
        #pragma GCC unroll 16
        for (int c = 0; c < CPU_AWQ_TILE; c += 16) _mm512_storeu_ps(out + t * CPU_AWQ_TILE + c, _mm512_setzero_ps());
    for (int64_t g = 0; g < G; g++) {
        const uint8_t *blk = block_of(p, tile, g);
        const uint32_t *q = (const uint32_t *)blk;
        const uint16_t *s = (const uint16_t *)(blk + CPU_AWQ_QBYTES);
        const uint8_t *z = blk + CPU_AWQ_QBYTES + 2 * CPU_AWQ_TILE;
        const float *xg = xs + g * LOOM_AWQ_GROUP;
        __m512 acc[2][GEMV_MAX_T][4];
        #pragma GCC unroll 16
        for (int a = 0; a < NA; a++)
            #pragma GCC unroll 16
            for (int t = 0; t < T; t++)
                #pragma GCC unroll 16
                for (int j = 0; j < 4; j++) acc[a][t][j] = _mm512_setzero_ps();
        for (int r = 0; r < 16; r++) {
            __m512i v[4];
            #pragma GCC unroll 16
            for (int j = 0; j < 4; j++) v[j] = _mm512_load_si512((const void *)(q + r * CPU_AWQ_TILE + 16 * j));
            #pragma GCC unroll 16
            for (int i = 0; i < 8; i++) {
                int a = NA == 2 ? (i & 1) : 0;
                __m512 xb[GEMV_MAX_T];
                #pragma GCC unroll 16
                for (int t = 0; t < T; t++) xb[t] = _mm512_set1_ps(xg[t * K + 8 * r + i]);
                #pragma GCC unroll 16
                for (int j = 0; j < 4; j++) {
                    __m512i m = i < 7 ? _mm512_and_si512(v[j], _mm512_set1_epi32(15 << (4 * i)))
                                      : _mm512_srli_epi32(v[j], 28);
                    __m512 d = _mm512_cvtepi32_ps(m);
                    #pragma GCC unroll 16
                    for (int t = 0; t < T; t++) acc[a][t][j] = _mm512_fmadd_ps(d, xb[t], acc[a][t][j]);
                }
            }
        }
        #pragma GCC unroll 16
        for (int j = 0; j < 4; j++) {
            int c = 16 * j;
            __m512 sv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(s + c)));
            __m512 zv = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(z + c))));
            #pragma GCC unroll 16
            for (int t = 0; t < T; t++) {
                __m512 a0 = NA == 2 ? _mm512_add_ps(acc[0][t][j], acc[1][t][j]) : acc[0][t][j];
                a0 = _mm512_fnmadd_ps(zv, _mm512_set1_ps(xsum[t * G + g]), a0);
                float *o = out + t * CPU_AWQ_TILE + c;
                _mm512_storeu_ps(o, _mm512_fmadd_ps(sv, a0, _mm512_loadu_ps(o)));
            }
        }
    }
}

static AVX512_ATTR void tile_avx512_1(const cpu_awq_packed *p, int64_t tl, const float *xs, const float *xsum, float *o)
{
    tile_avx512_t(p, tl, xs, xsum, o, 1, 2);
}
static AVX512_ATTR void tile_avx512_2(const cpu_awq_packed *p, int64_t tl, const float *xs, const float *xsum, float *o)
{
    tile_avx512_t(p, tl, xs, xsum, o, 2, 1);
}
static AVX512_ATTR void tile_avx512_3(const cpu_awq_packed *p, int64_t tl, const float *xs, const float *xsum, float *o)
{
    tile_avx512_t(p, tl, xs, xsum, o, 3, 1);
}
static AVX512_ATTR void tile_avx512_4(const cpu_awq_packed *p, int64_t tl, const float *xs, const float *xsum, float *o)
{
    tile_avx512_t(p, tl, xs, xsum, o, 4, 1);
}

static void tile_scalar_1(const cpu_awq_packed *p, int64_t tl, const float *xs, const float *xsum, float *o)
{
    tile_scalar(p, tl, xs, xsum, o, 1);
}
static void tile_scalar_2(const cpu_awq_packed *p, int64_t tl, const float *xs, const float *xsum, float *o)
{
    tile_scalar(p, tl, xs, xsum, o, 2);
}
static void tile_scalar_3(const cpu_awq_packed *p, int64_t tl, const float *xs, const float *xsum, float *o)
{
    tile_scalar(p, tl, xs, xsum, o, 3);
}
static void tile_scalar_4(const cpu_awq_packed *p, int64_t tl, const float *xs, const float *xsum, float *o)
{
    tile_scalar(p, tl, xs, xsum, o, 4);
}

static const tile_fn tile_fns[3][GEMV_MAX_T] = {
    [CPU_ISA_SCALAR] = {tile_scalar_1, tile_scalar_2, tile_scalar_3, tile_scalar_4},
    [CPU_ISA_AVX2] = {tile_avx2_1, tile_avx2_2, tile_avx2_3, tile_avx2_4},
    [CPU_ISA_AVX512] = {tile_avx512_1, tile_avx512_2, tile_avx512_3, tile_avx512_4},
};

typedef struct {
    const cpu_awq_packed *p;
    const float          *xs, *xsum;
    float                *y;
    int                   T;
    tile_fn               fn;
    const void           *bias;
    loom_dtype            bias_dt;
} gemv_job;

static inline float bias_at(const void *b, loom_dtype dt, int64_t n)
{
    switch (dt) {
    case LOOM_F16: return loom_f16_to_f32(((const uint16_t *)b)[n]);
    case LOOM_BF16: return loom_bf16_to_f32(((const uint16_t *)b)[n]);
    default: return ((const float *)b)[n];
    }
}

static void gemv_task(void *ctxp, int64_t b, int64_t e, int tid)
{
    const gemv_job *j = ctxp;
    int64_t N = j->p->N;
    float out[GEMV_MAX_T * CPU_AWQ_TILE] __attribute__((aligned(64)));
    for (int64_t tile = b; tile < e; tile++) {
        j->fn(j->p, tile, j->xs, j->xsum, out);
        int64_t n0 = tile * CPU_AWQ_TILE, valid = N - n0 < CPU_AWQ_TILE ? N - n0 : CPU_AWQ_TILE;
        for (int t = 0; t < j->T; t++) {
            float *yr = j->y + t * N + n0;
            const float *o = out + t * CPU_AWQ_TILE;
            if (j->bias)
                for (int64_t c = 0; c < valid; c++) yr[c] = o[c] + bias_at(j->bias, j->bias_dt, n0 + c);
            else
                memcpy(yr, o, (size_t)valid * sizeof *yr);
        }
    }
}

/* ---- prefill: dequantise tiles [t0, t1) into B[K][ldb] ---------------------------------- */
typedef struct {
    const cpu_awq_packed *p;
    int64_t               t0;
    float                *B;
    int64_t               ldb;
    cpu_isa               isa;
} deq_job;

static AVX2_ATTR void deq_block_avx2(const uint8_t *blk, float *B, int64_t ldb)
{
    const uint32_t *q = (const uint32_t *)blk;
    const uint16_t *s = (const uint16_t *)(blk + CPU_AWQ_QBYTES);
    const uint8_t *z = blk + CPU_AWQ_QBYTES + 2 * CPU_AWQ_TILE;
    for (int c = 0; c < CPU_AWQ_TILE; c += 8) {
        __m256 sv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + c)));
        __m256i zv = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(z + c)));
        for (int r = 0; r < 16; r++) {
            __m256i v = _mm256_load_si256((const __m256i *)(q + r * CPU_AWQ_TILE + c));
            #pragma GCC unroll 16
            for (int i = 0; i < 8; i++) {
                __m256i qi = _mm256_and_si256(_mm256_srli_epi32(v, 4 * i), _mm256_set1_epi32(15));
                __m256 w = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(qi, zv)), sv); /* exact */
                _mm256_storeu_ps(B + (8 * r + i) * ldb + c, w);
            }
        }
    }
}

static void deq_block_scalar(const uint8_t *blk, float *B, int64_t ldb)
{
    const uint32_t *q = (const uint32_t *)blk;
    const uint16_t *s = (const uint16_t *)(blk + CPU_AWQ_QBYTES);
    const uint8_t *z = blk + CPU_AWQ_QBYTES + 2 * CPU_AWQ_TILE;
    for (int c = 0; c < CPU_AWQ_TILE; c++) {
        float sc = loom_f16_to_f32(s[c]);
        for (int r = 0; r < 16; r++)
            for (int i = 0; i < 8; i++)
                B[(8 * r + i) * ldb + c] = (float)((int)((q[r * CPU_AWQ_TILE + c] >> (4 * i)) & 15u) - z[c]) * sc;
    }
}

static void deq_task(void *ctxp, int64_t b, int64_t e, int tid)
{
    const deq_job *j = ctxp;
    int64_t G = j->p->n_groups;
    for (int64_t tg = b; tg < e; tg++) {
        int64_t tl = tg / G, g = tg % G;
        const uint8_t *blk = block_of(j->p, j->t0 + tl, g);
        float *B = j->B + g * LOOM_AWQ_GROUP * j->ldb + tl * CPU_AWQ_TILE;
        if (j->isa >= CPU_ISA_AVX2)
            deq_block_avx2(blk, B, j->ldb);
        else
            deq_block_scalar(blk, B, j->ldb);
    }
}

static int64_t prefill_tiles(int64_t K, int64_t N)
{
    int64_t t = PREFILL_BUDGET / ((size_t)K * 4 * CPU_AWQ_TILE);
    if (t < 1) t = 1;
    return t < n_tiles_of(N) ? t : n_tiles_of(N);
}

size_t loom__cpu_awq_scratch(int64_t K, int64_t N, int64_t max_t)
{
    int64_t tr = max_t < GEMV_MAX_T ? max_t : GEMV_MAX_T;
    size_t gemv = (size_t)tr * (size_t)(K + K / LOOM_AWQ_GROUP) + 16;
    if (max_t <= GEMV_MAX_T) return gemv;
    size_t pre = (size_t)prefill_tiles(K, N) * CPU_AWQ_TILE * (size_t)K;
    return pre > gemv ? pre : gemv;
}

loom_status loom__cpu_matmul_awq(cpu_ctx *c, const cpu_awq_packed *w, const float *x, float *y, int64_t T,
                                 const void *bias, loom_dtype bias_dt)
{
    int64_t K = w->K, N = w->N, G = w->n_groups;
    if (T <= GEMV_MAX_T) {
        float *xs = c->scratch, *xsum = c->scratch + T * K;
        for (int64_t t = 0; t < T; t++)
            for (int64_t g = 0; g < G; g++) {
                double sum = 0;
                for (int64_t k = g * LOOM_AWQ_GROUP; k < (g + 1) * LOOM_AWQ_GROUP; k++) {
                    float xv = x[t * K + k];
                    sum += xv;
                    xs[t * K + k] = xv * nib_scale[k & 7];
                }
                xsum[t * G + g] = (float)sum;
            }
        gemv_job j = {w, xs, xsum, y, (int)T, tile_fns[c->isa][T - 1], bias, bias_dt};
        /* dynamic chunks (8 per thread): a thread the OS delays does not hold the others up */
        int64_t chunk = w->n_tiles / (8 * c->n_threads);
        loom__cpu_parallel_for_dyn(c->pool, w->n_tiles, chunk < 1 ? 1 : chunk, gemv_task, &j);
        return LOOM_OK;
    }
    int64_t bt = prefill_tiles(K, N), ldb = bt * CPU_AWQ_TILE;
    for (int64_t t0 = 0; t0 < w->n_tiles; t0 += bt) {
        int64_t nt = w->n_tiles - t0 < bt ? w->n_tiles - t0 : bt;
        int64_t n0 = t0 * CPU_AWQ_TILE, cols = N - n0 < nt * CPU_AWQ_TILE ? N - n0 : nt * CPU_AWQ_TILE;
        deq_job j = {w, t0, c->scratch, ldb, c->isa};
        loom__cpu_parallel_for_park(c->pool, nt * G, deq_task, &j);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)cols, (int)K, 1.0f, x, (int)K, c->scratch,
                    (int)ldb, 0.0f, y + n0, (int)N);
    }
    if (bias) loom__cpu_add_bias(c, y, T, N, bias, bias_dt);
    return LOOM_OK;
}
