/* cpu_matmul.c — dense matmul y[T,N] = x[T,K] · w[N,K]ᵀ (+ bias), w f32/f16/bf16.
 *
 * Few rows (T < SGEMM_MIN_T): a threaded GEMV over output columns that reads
 * each weight row from memory once (blocks of GEMV_NB rows serve every chunk
 * of 4 token rows from cache) and converts f16/bf16 on the fly (F16C / shifts).
 * More rows: f32 weights go straight to cblas_sgemm; f16/bf16 weights are
 * converted a block of rows at a time into scratch f32 (in parallel) and each
 * block is one sgemm. The weight is never widened whole. OpenBLAS is called
 * only from the calling thread, between pool jobs, so the two never run at
 * once. */
#include <cblas.h>
#include <immintrin.h>
#include <string.h>

#include "cpu_impl.h"

#define SGEMM_MIN_T 17            /* from this many rows on, sgemm (measured: below, OpenBLAS's
                                     B packing makes sgemm several times slower than the GEMV) */
#define GEMV_T 4                  /* rows per GEMV kernel call (register blocking) */
#ifndef GEMV_PF
#define GEMV_PF 2048              /* software prefetch distance (bytes) along the weight stream */
#endif
#define GEMV_NB 16                /* weight rows per block: reused from cache by every row chunk */
#define BLOCK_BUDGET (8u << 20)   /* bytes of f32 scratch for one converted row block */

#define AVX2_ATTR __attribute__((target("avx2,fma,f16c")))
#define AVX512_ATTR __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

/* ---- conversion to f32 ------------------------------------------------------------- */
static AVX512_ATTR void to_f32_avx512(const uint16_t *s, loom_dtype dt, float *d, int64_t n)
{
    int64_t i = 0;
    if (dt == LOOM_F16)
        for (; i + 16 <= n; i += 16) _mm512_storeu_ps(d + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(s + i))));
    else
        for (; i + 16 <= n; i += 16)
            _mm512_storeu_si512(d + i, _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(s + i))), 16));
    for (; i < n; i++) d[i] = dt == LOOM_F16 ? loom_f16_to_f32(s[i]) : loom_bf16_to_f32(s[i]);
}

static AVX2_ATTR void to_f32_avx2(const uint16_t *s, loom_dtype dt, float *d, int64_t n)
{
    int64_t i = 0;
    if (dt == LOOM_F16)
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
    else
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_si256((__m256i *)(d + i),
                                _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(s + i))), 16));
    for (; i < n; i++) d[i] = dt == LOOM_F16 ? loom_f16_to_f32(s[i]) : loom_bf16_to_f32(s[i]);
}

void loom__cpu_to_f32(cpu_isa isa, const void *src, loom_dtype dt, float *dst, int64_t n)
{
    if (dt == LOOM_F32) {
        memcpy(dst, src, (size_t)n * 4);
    } else if (isa == CPU_ISA_AVX512) {
        to_f32_avx512(src, dt, dst, n);
    } else if (isa == CPU_ISA_AVX2) {
        to_f32_avx2(src, dt, dst, n);
    } else {
        const uint16_t *s = src;
        for (int64_t i = 0; i < n; i++) dst[i] = dt == LOOM_F16 ? loom_f16_to_f32(s[i]) : loom_bf16_to_f32(s[i]);
    }
}

/* ---- bias ---------------------------------------------------------------------------- */
typedef struct {
    float      *y;
    int64_t     N;
    const void *bias;
    loom_dtype  dt;
    cpu_isa     isa;
    bool        fill; /* y = bias instead of y += bias */
} bias_job;

static void bias_task(void *ctxp, int64_t b, int64_t e, int tid)
{
    const bias_job *j = ctxp;
    for (int64_t t = b; t < e; t++) {
        float *y = j->y + t * j->N;
        if (j->fill) {
            loom__cpu_to_f32(j->isa, j->bias, j->dt, y, j->N);
        } else if (j->dt == LOOM_F32) {
            const float *bf = j->bias;
            for (int64_t n = 0; n < j->N; n++) y[n] += bf[n];
        } else {
            const uint16_t *s = j->bias;
            for (int64_t n = 0; n < j->N; n++) y[n] += j->dt == LOOM_F16 ? loom_f16_to_f32(s[n]) : loom_bf16_to_f32(s[n]);
        }
    }
}

static void bias_rows(cpu_ctx *c, float *y, int64_t T, int64_t N, const void *bias, loom_dtype dt, bool fill)
{
    bias_job j = {y, N, bias, dt, c->isa, fill};
    if (T * N < CPU_PAR_MIN)
        bias_task(&j, 0, T, 0);
    else if (fill) /* sgemm follows */
        loom__cpu_parallel_for_park(c->pool, T, bias_task, &j);
    else
        loom__cpu_parallel_for(c->pool, T, bias_task, &j);
}

void loom__cpu_add_bias(cpu_ctx *c, float *y, int64_t T, int64_t N, const void *bias, loom_dtype bias_dt)
{
    bias_rows(c, y, T, N, bias, bias_dt, false);
}

/* ---- GEMV: T < SGEMM_MIN_T rows ---------------------------------------------------------- */
typedef struct {
    const float *x;
    const void  *w;
    loom_dtype   wdt;
    float       *y;
    int64_t      T, K, N;
    const void  *bias;
    loom_dtype   bias_dt;
} gemv_job;

static inline float bias_at(const void *b, loom_dtype dt, int64_t n)
{
    if (!b) return 0.0f;
    switch (dt) {
    case LOOM_F16: return loom_f16_to_f32(((const uint16_t *)b)[n]);
    case LOOM_BF16: return loom_bf16_to_f32(((const uint16_t *)b)[n]);
    default: return ((const float *)b)[n];
    }
}

static inline __attribute__((always_inline)) AVX512_ATTR __m512 ld16_avx512(const void *w, loom_dtype dt, int64_t k,
                                                                             __mmask16 m)
{
    if (dt == LOOM_F32) return _mm512_maskz_loadu_ps(m, (const float *)w + k);
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)w + k);
    if (dt == LOOM_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

static inline __attribute__((always_inline)) AVX512_ATTR void
gemv_avx512_t(const gemv_job *j, int64_t b, int64_t e, loom_dtype dt, int T, int64_t t0)
{
    int64_t K = j->K, N = j->N;
    const float *x = j->x + t0 * K;
    float *yo = j->y + t0 * N;
    size_t es = dt == LOOM_F32 ? 4 : 2;
    for (int64_t n = b; n < e; n++) {
        const void *w = (const char *)j->w + (size_t)n * (size_t)K * es;
        __m512 acc[GEMV_T][2];
        #pragma GCC unroll 4
        for (int t = 0; t < T; t++) acc[t][0] = acc[t][1] = _mm512_setzero_ps();
        int64_t k = 0;
        for (; k + 32 <= K; k += 32) {
            /* the hardware prefetcher alone falls behind once a few rows share each weight load */
            _mm_prefetch((const char *)w + (size_t)k * es + GEMV_PF, _MM_HINT_T0);
            if (es == 4) _mm_prefetch((const char *)w + (size_t)k * es + GEMV_PF + 64, _MM_HINT_T0);
            __m512 w0 = ld16_avx512(w, dt, k, 0xffff), w1 = ld16_avx512(w, dt, k + 16, 0xffff);
            #pragma GCC unroll 4
            for (int t = 0; t < T; t++) {
                acc[t][0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + t * K + k), acc[t][0]);
                acc[t][1] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + t * K + k + 16), acc[t][1]);
            }
        }
        for (; k < K; k += 16) {
            __mmask16 m = K - k >= 16 ? 0xffff : (__mmask16)((1u << (K - k)) - 1);
            __m512 w0 = ld16_avx512(w, dt, k, m);
            #pragma GCC unroll 4
            for (int t = 0; t < T; t++)
                acc[t][0] = _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(m, x + t * K + k), acc[t][0]);
        }
        float bv = bias_at(j->bias, j->bias_dt, n);
        #pragma GCC unroll 4
        for (int t = 0; t < T; t++) yo[t * N + n] = _mm512_reduce_add_ps(_mm512_add_ps(acc[t][0], acc[t][1])) + bv;
    }
}

static inline __attribute__((always_inline)) AVX2_ATTR __m256 ld8_avx2(const void *w, loom_dtype dt, int64_t k)
{
    if (dt == LOOM_F32) return _mm256_loadu_ps((const float *)w + k);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + k));
    if (dt == LOOM_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

static inline __attribute__((always_inline)) AVX2_ATTR float hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float w_at(const void *w, loom_dtype dt, int64_t k)
{
    if (dt == LOOM_F32) return ((const float *)w)[k];
    uint16_t h = ((const uint16_t *)w)[k];
    return dt == LOOM_F16 ? loom_f16_to_f32(h) : loom_bf16_to_f32(h);
}

static inline __attribute__((always_inline)) AVX2_ATTR void
gemv_avx2_t(const gemv_job *j, int64_t b, int64_t e, loom_dtype dt, int T, int64_t t0)
{
    int64_t K = j->K, N = j->N;
    const float *x = j->x + t0 * K;
    float *yo = j->y + t0 * N;
    size_t es = dt == LOOM_F32 ? 4 : 2;
    for (int64_t n = b; n < e; n++) {
        const void *w = (const char *)j->w + (size_t)n * (size_t)K * es;
        __m256 acc[GEMV_T][2];
        #pragma GCC unroll 4
        for (int t = 0; t < T; t++) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
        int64_t k = 0;
        for (; k + 16 <= K; k += 16) {
            _mm_prefetch((const char *)w + (size_t)k * es + GEMV_PF, _MM_HINT_T0);
            __m256 w0 = ld8_avx2(w, dt, k), w1 = ld8_avx2(w, dt, k + 8);
            #pragma GCC unroll 4
            for (int t = 0; t < T; t++) {
                acc[t][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + t * K + k), acc[t][0]);
                acc[t][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + t * K + k + 8), acc[t][1]);
            }
        }
        float bv = bias_at(j->bias, j->bias_dt, n);
        #pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            float s = hsum256(_mm256_add_ps(acc[t][0], acc[t][1]));
            for (int64_t kk = k; kk < K; kk++) s += w_at(w, dt, kk) * x[t * K + kk];
            yo[t * N + n] = s + bv;
        }
    }
}

#define GEMV_CASES(isa, DT)                                                                        \
    case DT * 8 + 1: gemv_##isa##_t(j, b, e, DT, 1, t0); break;                                    \
    case DT * 8 + 2: gemv_##isa##_t(j, b, e, DT, 2, t0); break;                                    \
    case DT * 8 + 3: gemv_##isa##_t(j, b, e, DT, 3, t0); break;                                    \
    case DT * 8 + 4: gemv_##isa##_t(j, b, e, DT, 4, t0); break;
#define GEMV_VARIANTS(isa, ATTR)                                                                   \
    static ATTR void gemv_##isa(const gemv_job *j, int64_t b, int64_t e, int64_t t0, int rows)     \
    {                                                                                              \
        switch (j->wdt * 8 + rows) {                                                               \
            GEMV_CASES(isa, LOOM_F32)                                                              \
            GEMV_CASES(isa, LOOM_F16)                                                              \
            GEMV_CASES(isa, LOOM_BF16)                                                             \
        default: break;                                                                            \
        }                                                                                          \
    }
GEMV_VARIANTS(avx512, AVX512_ATTR)
GEMV_VARIANTS(avx2, AVX2_ATTR)

static void gemv_scalar(const gemv_job *j, int64_t b, int64_t e, int64_t t0, int rows)
{
    int64_t K = j->K, N = j->N;
    size_t es = j->wdt == LOOM_F32 ? 4 : 2;
    for (int64_t n = b; n < e; n++) {
        const void *w = (const char *)j->w + (size_t)n * (size_t)K * es;
        for (int64_t t = t0; t < t0 + rows; t++) {
            float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
            const float *x = j->x + t * K;
            int64_t k = 0;
            for (; k + 4 <= K; k += 4) {
                s0 += w_at(w, j->wdt, k) * x[k];
                s1 += w_at(w, j->wdt, k + 1) * x[k + 1];
                s2 += w_at(w, j->wdt, k + 2) * x[k + 2];
                s3 += w_at(w, j->wdt, k + 3) * x[k + 3];
            }
            for (; k < K; k++) s0 += w_at(w, j->wdt, k) * x[k];
            j->y[t * N + n] = (s0 + s1) + (s2 + s3) + bias_at(j->bias, j->bias_dt, n);
        }
    }
}

typedef struct {
    gemv_job j;
    cpu_isa  isa;
} gemv_task_ctx;

static void gemv_task(void *ctxp, int64_t b, int64_t e, int tid)
{
    const gemv_task_ctx *g = ctxp;
    for (int64_t n0 = b; n0 < e; n0 += GEMV_NB) {
        int64_t n1 = e - n0 < GEMV_NB ? e : n0 + GEMV_NB;
        for (int64_t t0 = 0; t0 < g->j.T; t0 += GEMV_T) {
            int rows = (int)(g->j.T - t0 < GEMV_T ? g->j.T - t0 : GEMV_T);
            if (g->isa == CPU_ISA_AVX512)
                gemv_avx512(&g->j, n0, n1, t0, rows);
            else if (g->isa == CPU_ISA_AVX2)
                gemv_avx2(&g->j, n0, n1, t0, rows);
            else
                gemv_scalar(&g->j, n0, n1, t0, rows);
        }
    }
}

/* ---- f16/bf16 with many rows: convert a block of weight rows, sgemm it ---------------------- */
typedef struct {
    const uint16_t *w;
    loom_dtype      dt;
    int64_t         K;
    float          *B;
    cpu_isa         isa;
} conv_job;

static void conv_task(void *ctxp, int64_t b, int64_t e, int tid)
{
    const conv_job *j = ctxp;
    loom__cpu_to_f32(j->isa, j->w + b * j->K, j->dt, j->B + b * j->K, (e - b) * j->K);
}

static int64_t block_rows(int64_t K, int64_t N)
{
    int64_t nb = (int64_t)(BLOCK_BUDGET / ((size_t)K * 4)) / 16 * 16;
    if (nb < 16) nb = 16;
    return nb < N ? nb : N;
}

size_t loom__cpu_matmul_scratch(loom_dtype wdt, int64_t K, int64_t N, int64_t max_t)
{
    if (wdt == LOOM_F32 || max_t < SGEMM_MIN_T) return 0;
    return (size_t)block_rows(K, N) * (size_t)K;
}

loom_status loom__cpu_matmul(cpu_ctx *c, const float *x, const void *w, loom_dtype wdt, float *y, int64_t T,
                             int64_t K, int64_t N, const void *bias, loom_dtype bias_dt)
{
    if (T < SGEMM_MIN_T) {
        gemv_task_ctx g = {{x, w, wdt, y, T, K, N, bias, bias_dt}, c->isa};
        if (N * K < CPU_PAR_MIN)
            gemv_task(&g, 0, N, 0);
        else /* dynamic chunks (8 per thread, whole GEMV_NB blocks): robust to a delayed thread */
            loom__cpu_parallel_for_dyn(c->pool, N, (N / (8 * c->n_threads) + GEMV_NB - 1) / GEMV_NB * GEMV_NB, gemv_task,
                                       &g);
        return LOOM_OK;
    }
    float beta = 0.0f;
    if (bias) { /* y = bias, then sgemm accumulates into it */
        bias_rows(c, y, T, N, bias, bias_dt, true);
        beta = 1.0f;
    }
    if (wdt == LOOM_F32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)N, (int)K, 1.0f, x, (int)K, w, (int)K, beta,
                    y, (int)N);
        return LOOM_OK;
    }
    int64_t nb = block_rows(K, N);
    if ((size_t)nb * (size_t)K > c->scratch_floats)
        return CPU_ERR(LOOM_ERR_INTERNAL, "cpu matmul: scratch of %zu floats is too small for %lld x %lld",
                       c->scratch_floats, (long long)nb, (long long)K);
    for (int64_t n0 = 0; n0 < N; n0 += nb) {
        int64_t rows = N - n0 < nb ? N - n0 : nb;
        conv_job j = {(const uint16_t *)w + n0 * K, wdt, K, c->scratch, c->isa};
        loom__cpu_parallel_for_park(c->pool, rows, conv_task, &j);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)rows, (int)K, 1.0f, x, (int)K, c->scratch,
                    (int)K, beta, y + n0, (int)N);
    }
    return LOOM_OK;
}
