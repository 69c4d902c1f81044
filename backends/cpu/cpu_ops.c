/* cpu_ops.c — the small ops: embed, rmsnorm, rope, swiglu, add.
 *
 * Each splits its rows (or, for elementwise ops, its elements) over the pool
 * once the work is worth waking the workers (CPU_PAR_MIN elements). */
#include <math.h>
#include <string.h>

#include "cpu_impl.h"

static void run(cpu_ctx *c, int64_t n, int64_t work, cpu_task_fn fn, void *ctx)
{
    if (work < CPU_PAR_MIN)
        fn(ctx, 0, n, 0);
    else
        loom__cpu_parallel_for(c->pool, n, fn, ctx);
}

/* ---- embed ------------------------------------------------------------------------- */
typedef struct {
    const void    *table;
    loom_dtype     dt;
    int64_t        D;
    const int32_t *ids;
    float         *y;
    cpu_isa        isa;
} embed_job;

static void embed_task(void *ctxp, int64_t b, int64_t e, int tid)
{
    const embed_job *j = ctxp;
    size_t es = j->dt == LOOM_F32 ? 4 : 2;
    for (int64_t t = b; t < e; t++)
        loom__cpu_to_f32(j->isa, (const char *)j->table + (size_t)j->ids[t] * (size_t)j->D * es, j->dt, j->y + t * j->D,
                         j->D);
}

loom_status loom__cpu_embed(cpu_ctx *c, const void *table, loom_dtype dt, int64_t V, int64_t D, const int32_t *ids,
                            float *y, int64_t T)
{
    for (int64_t t = 0; t < T; t++)
        if (ids[t] < 0 || ids[t] >= V)
            return CPU_ERR(LOOM_ERR_INVALID, "embed: token %lld has id %d, outside the vocabulary 0..%lld", (long long)t,
                           ids[t], (long long)V - 1);
    embed_job j = {table, dt, D, ids, y, c->isa};
    run(c, T, T * D, embed_task, &j);
    return LOOM_OK;
}

/* ---- rmsnorm: y = x / sqrt(mean(x^2) + eps) * w ---------------------------------------- */
typedef struct {
    const float *x, *w;
    float       *y;
    float        eps;
    int64_t      D;
} rms_job;

static void rms_task(void *ctxp, int64_t b, int64_t e, int tid)
{
    const rms_job *j = ctxp;
    int64_t D = j->D;
    for (int64_t t = b; t < e; t++) {
        const float *x = j->x + t * D;
        float *y = j->y + t * D;
        double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        int64_t d = 0;
        for (; d + 4 <= D; d += 4) {
            s0 += (double)x[d] * x[d];
            s1 += (double)x[d + 1] * x[d + 1];
            s2 += (double)x[d + 2] * x[d + 2];
            s3 += (double)x[d + 3] * x[d + 3];
        }
        for (; d < D; d++) s0 += (double)x[d] * x[d];
        float inv = (float)(1.0 / sqrt(((s0 + s1) + (s2 + s3)) / (double)D + (double)j->eps));
        for (d = 0; d < D; d++) y[d] = x[d] * inv * j->w[d];
    }
}

void loom__cpu_rmsnorm(cpu_ctx *c, const float *x, const void *w, loom_dtype wdt, float eps, float *y, int64_t T,
                       int64_t D)
{
    const float *wf = w;
    if (wdt != LOOM_F32) { /* D floats of scratch: the weight as f32, once per call */
        loom__cpu_to_f32(c->isa, w, wdt, c->scratch, D);
        wf = c->scratch;
    }
    rms_job j = {x, wf, y, eps, D};
    run(c, T, T * D, rms_task, &j);
}

/* ---- rope (neox): pairs (i, i + hd/2) of every head rotate by pos * inv_freq[i] --------- */
typedef struct {
    const float   *x;
    float         *y;
    int32_t        n_head, hd;
    const double  *inv_freq;
    double         mscale;
    const int32_t *pos;
    float         *cs; /* [T][hd/2][2]: cos, sin (times mscale) */
} rope_job;

size_t loom__cpu_rope_scratch(int64_t max_t, int32_t head_dim)
{
    return (size_t)max_t * (size_t)head_dim;
}

static void rope_table_task(void *ctxp, int64_t b, int64_t e, int tid)
{
    const rope_job *j = ctxp;
    int32_t h2 = j->hd / 2;
    for (int64_t t = b; t < e; t++)
        for (int32_t i = 0; i < h2; i++) {
            double a = (double)j->pos[t] * j->inv_freq[i];
            j->cs[(t * h2 + i) * 2] = (float)(cos(a) * j->mscale);
            j->cs[(t * h2 + i) * 2 + 1] = (float)(sin(a) * j->mscale);
        }
}

static void rope_task(void *ctxp, int64_t b, int64_t e, int tid)
{
    const rope_job *j = ctxp;
    int32_t hd = j->hd, h2 = hd / 2;
    for (int64_t r = b; r < e; r++) { /* r = token * n_head + head */
        int64_t t = r / j->n_head;
        const float *x = j->x + r * hd, *cs = j->cs + t * hd;
        float *y = j->y + r * hd;
        for (int32_t i = 0; i < h2; i++) {
            float c = cs[2 * i], s = cs[2 * i + 1], a = x[i], bb = x[i + h2];
            y[i] = a * c - bb * s;
            y[i + h2] = bb * c + a * s;
        }
    }
}

void loom__cpu_rope(cpu_ctx *c, const float *x, float *y, int64_t T, int32_t n_head, int32_t head_dim,
                    const double *inv_freq, double mscale, const int32_t *pos)
{
    rope_job j = {x, y, n_head, head_dim, inv_freq, mscale, pos, c->scratch};
    run(c, T, T * head_dim * 8, rope_table_task, &j);
    run(c, T * n_head, T * n_head * head_dim, rope_task, &j);
}

/* ---- swiglu, add ------------------------------------------------------------------------ */
typedef struct {
    const float *a, *b;
    float       *y;
} ew_job;

static void swiglu_task(void *ctxp, int64_t b, int64_t e, int tid)
{
    const ew_job *j = ctxp;
    for (int64_t i = b; i < e; i++) {
        float g = j->a[i];
        j->y[i] = g / (1.0f + expf(-g)) * j->b[i];
    }
}

static void add_task(void *ctxp, int64_t b, int64_t e, int tid)
{
    const ew_job *j = ctxp;
    for (int64_t i = b; i < e; i++) j->y[i] = j->a[i] + j->b[i];
}

void loom__cpu_swiglu(cpu_ctx *c, const float *g, const float *u, float *y, int64_t n)
{
    ew_job j = {g, u, y};
    run(c, n, n * 8, swiglu_task, &j);
}

void loom__cpu_add(cpu_ctx *c, const float *a, const float *b, float *y, int64_t n)
{
    ew_job j = {a, b, y};
    run(c, n, n, add_task, &j);
}
