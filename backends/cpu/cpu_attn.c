/* cpu_attn.c — gqa_attn: append k, v to the cache, then causal grouped-query
 * attention over it.
 *
 * Cache layout [S, Hkv, C, hd] (slot, kv head, position, dim), f16 or f32.
 * 1. every token's k and v rows go to (seq[t], head, pos[t]), in token order
 *    per kv head (a later token wins a clash, as the definition says);
 * 2. each (token, query head) pair is one task: scores over positions
 *    0..pos[t] of slot seq[t], softmax, weighted sum of v. Tasks are claimed
 *    dynamically (causal prefill makes them uneven). Per-thread score rows
 *    live in scratch. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "cpu_impl.h"

#define AVX2_ATTR __attribute__((target("avx2,fma,f16c")))

size_t loom__cpu_attn_scratch(int n_threads, int64_t C, int32_t head_dim)
{
    return (size_t)n_threads * (size_t)((C + 15) / 16 * 16);
}

/* ---- row primitives: dot(q, k) and y += a * v, for an f16 or f32 cache row -------------- */
static float dot_scalar(const float *q, const void *k, loom_dtype dt, int32_t n)
{
    float s = 0;
    if (dt == LOOM_F16)
        for (int32_t i = 0; i < n; i++) s += q[i] * loom_f16_to_f32(((const uint16_t *)k)[i]);
    else
        for (int32_t i = 0; i < n; i++) s += q[i] * ((const float *)k)[i];
    return s;
}

static void axpy_scalar(float a, const void *v, loom_dtype dt, float *y, int32_t n)
{
    if (dt == LOOM_F16)
        for (int32_t i = 0; i < n; i++) y[i] += a * loom_f16_to_f32(((const uint16_t *)v)[i]);
    else
        for (int32_t i = 0; i < n; i++) y[i] += a * ((const float *)v)[i];
}

static inline __attribute__((always_inline)) AVX2_ATTR __m256 ld8(const void *p, loom_dtype dt, int32_t i)
{
    if (dt == LOOM_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + i)));
    return _mm256_loadu_ps((const float *)p + i);
}

static AVX2_ATTR float dot_avx2(const float *q, const void *k, loom_dtype dt, int32_t n)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int32_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), ld8(k, dt, i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), ld8(k, dt, i + 8), a1);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), ld8(k, dt, i), a0);
    a0 = _mm256_add_ps(a0, a1);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a0), _mm256_extractf128_ps(a0, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    float r = _mm_cvtss_f32(s);
    size_t es = dt == LOOM_F16 ? 2 : 4;
    return i < n ? r + dot_scalar(q + i, (const char *)k + (size_t)i * es, dt, n - i) : r;
}

static AVX2_ATTR void axpy_avx2(float a, const void *v, loom_dtype dt, float *y, int32_t n)
{
    __m256 av = _mm256_set1_ps(a);
    int32_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, ld8(v, dt, i), _mm256_loadu_ps(y + i)));
    size_t es = dt == LOOM_F16 ? 2 : 4;
    if (i < n) axpy_scalar(a, (const char *)v + (size_t)i * es, dt, y + i, n - i);
}

/* ---- the op -------------------------------------------------------------------------------- */
typedef struct {
    const cpu_attn_args *a;
    float               *scratch;
    int64_t              stride; /* floats of scratch per thread */
    bool                 simd;
} attn_job;

static inline size_t cache_off(const cpu_attn_args *a, int64_t s, int64_t h, int64_t p)
{
    return (((size_t)s * (size_t)a->n_head_kv + (size_t)h) * (size_t)a->C + (size_t)p) * (size_t)a->head_dim;
}

static void store_task(void *ctxp, int64_t b, int64_t e, int tid)
{
    const cpu_attn_args *a = ((const attn_job *)ctxp)->a;
    int32_t hd = a->head_dim;
    for (int64_t h = b; h < e; h++)
        for (int64_t t = 0; t < a->T; t++) {
            size_t off = cache_off(a, a->seq[t], h, a->pos[t]);
            const float *k = a->k + (t * a->n_head_kv + h) * hd, *v = a->v + (t * a->n_head_kv + h) * hd;
            if (a->cache_dt == LOOM_F16) {
                uint16_t *kc = (uint16_t *)a->kc + off, *vc = (uint16_t *)a->vc + off;
                for (int32_t d = 0; d < hd; d++) kc[d] = loom_f32_to_f16(k[d]), vc[d] = loom_f32_to_f16(v[d]);
            } else {
                memcpy((float *)a->kc + off, k, (size_t)hd * 4);
                memcpy((float *)a->vc + off, v, (size_t)hd * 4);
            }
        }
}

static void attn_task(void *ctxp, int64_t b, int64_t e, int tid)
{
    const attn_job *j = ctxp;
    const cpu_attn_args *a = j->a;
    int32_t hd = a->head_dim, group = a->n_head / a->n_head_kv;
    size_t es = a->cache_dt == LOOM_F16 ? 2 : 4;
    float *sc = j->scratch + (size_t)tid * (size_t)j->stride;
    for (int64_t r = b; r < e; r++) { /* r = token * n_head + query head */
        int64_t t = r / a->n_head, h = r % a->n_head, hk = h / group, L = (int64_t)a->pos[t] + 1;
        const float *q = a->q + r * hd;
        float *y = a->y + r * hd;
        const char *kbase = (const char *)a->kc + cache_off(a, a->seq[t], hk, 0) * es;
        const char *vbase = (const char *)a->vc + cache_off(a, a->seq[t], hk, 0) * es;
        float mx = -INFINITY;
        for (int64_t p = 0; p < L; p++) {
            const void *krow = kbase + (size_t)p * (size_t)hd * es;
            float s = (j->simd ? dot_avx2(q, krow, a->cache_dt, hd) : dot_scalar(q, krow, a->cache_dt, hd)) * a->scale;
            sc[p] = s;
            if (s > mx) mx = s;
        }
        double sum = 0;
        for (int64_t p = 0; p < L; p++) {
            sc[p] = expf(sc[p] - mx);
            sum += sc[p];
        }
        float inv = (float)(1.0 / sum);
        memset(y, 0, (size_t)hd * sizeof *y);
        for (int64_t p = 0; p < L; p++) {
            const void *vrow = vbase + (size_t)p * (size_t)hd * es;
            if (j->simd)
                axpy_avx2(sc[p] * inv, vrow, a->cache_dt, y, hd);
            else
                axpy_scalar(sc[p] * inv, vrow, a->cache_dt, y, hd);
        }
    }
}

loom_status loom__cpu_gqa_attn(cpu_ctx *c, const cpu_attn_args *a)
{
    for (int64_t t = 0; t < a->T; t++) {
        if (a->pos[t] < 0 || a->pos[t] >= a->C)
            return CPU_ERR(LOOM_ERR_INVALID, "gqa_attn: token %lld has position %d; the cache holds 0..%lld",
                           (long long)t, a->pos[t], (long long)a->C - 1);
        if (a->seq[t] < 0 || a->seq[t] >= a->S)
            return CPU_ERR(LOOM_ERR_INVALID, "gqa_attn: token %lld is in sequence slot %d; the cache has %lld slots",
                           (long long)t, a->seq[t], (long long)a->S);
    }
    int64_t stride = (int64_t)loom__cpu_attn_scratch(1, a->C, a->head_dim);
    if ((size_t)stride * (size_t)c->n_threads > c->scratch_floats)
        return CPU_ERR(LOOM_ERR_INTERNAL, "gqa_attn: scratch too small");
    attn_job j = {a, c->scratch, stride, c->isa >= CPU_ISA_AVX2};
    if (a->T * a->n_head_kv * a->head_dim < CPU_PAR_MIN)
        store_task(&j, 0, a->n_head_kv, 0);
    else
        loom__cpu_parallel_for(c->pool, a->n_head_kv, store_task, &j);
    int64_t n = a->T * a->n_head, chunk = n / (c->n_threads * 8);
    loom__cpu_parallel_for_dyn(c->pool, n, chunk < 1 ? 1 : chunk, attn_task, &j);
    return LOOM_OK;
}
