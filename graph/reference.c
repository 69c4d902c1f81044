/* reference.c — the float64 oracle: each op of LOOM_OPS computed in double
 * precision, one loop nest per definition in loom_backend.h. Sources are read
 * in their storage dtypes; nothing is rounded on the way. Slow and obvious on
 * purpose: every backend is measured against it. */
#include <stdlib.h>

#include "awq.h"
#include "reference.h"

/* Element i of a float tensor stored as dt, widened exactly to double. */
static double ld(const void *p, loom_dtype dt, int64_t i)
{
    switch (dt) {
    case LOOM_F32:  return ((const float *)p)[i];
    case LOOM_F16:  return loom_f16_to_f32(((const uint16_t *)p)[i]);
    case LOOM_BF16: return loom_bf16_to_f32(((const uint16_t *)p)[i]);
    case LOOM_I32:  return ((const int32_t *)p)[i];
    default:        return NAN;
    }
}

static bool is_float(loom_dtype dt)
{
    return dt == LOOM_F32 || dt == LOOM_F16 || dt == LOOM_BF16;
}

/* Source s must be present, of one of the float dtypes (or exactly `dt` when
 * dt >= 0), rank `ndim`. */
static loom_status need(const loom_node *n, const void *const *src, int s, int dt, int32_t ndim)
{
    const loom_tensor *t = n->src[s];
    if (!t || !src[s])
        return loom_error(LOOM_ERR_INVALID, "reference %s: source %d is missing", loom_op_name(n->op), s);
    if (dt >= 0 ? t->dtype != (loom_dtype)dt : !is_float(t->dtype))
        return loom_error(LOOM_ERR_INVALID, "reference %s: source %d has dtype %s", loom_op_name(n->op), s,
                          loom_dtype_name(t->dtype));
    if (t->ndim != ndim)
        return loom_error(LOOM_ERR_INVALID, "reference %s: source %d has rank %d, expected %d", loom_op_name(n->op), s,
                          t->ndim, ndim);
    return LOOM_OK;
}

static bool has_src(const loom_node *n, const void *const *src, int s)
{
    return s < n->n_src && n->src[s] && src[s];
}

/* Optional source s (bias): absent, or a float vector of n elements. */
static loom_status need_opt_vec(const loom_node *nd, const void *const *src, int s, int64_t n)
{
    if (!has_src(nd, src, s)) return LOOM_OK;
    loom_status st = need(nd, src, s, -1, 1);
    if (st) return st;
    if (nd->src[s]->shape[0] != n)
        return loom_error(LOOM_ERR_INVALID, "reference %s: bias has %lld elements, expected %lld", loom_op_name(nd->op),
                          (long long)nd->src[s]->shape[0], (long long)n);
    return LOOM_OK;
}

/* An activation [T, cols] f32 with at least T rows. */
static loom_status need_act(const loom_node *n, const void *const *src, int s, int32_t T, int64_t cols)
{
    loom_status st = need(n, src, s, LOOM_F32, 2);
    if (st) return st;
    const loom_tensor *t = n->src[s];
    if (t->shape[0] < T || (cols >= 0 && t->shape[1] != cols))
        return loom_error(LOOM_ERR_INVALID, "reference %s: source %d is [%lld,%lld], need %d rows of %lld",
                          loom_op_name(n->op), s, (long long)t->shape[0], (long long)t->shape[1], T, (long long)cols);
    return LOOM_OK;
}

static loom_status ref_embed(const loom_node *n, const loom_step *step, const void *const *src, double *dst)
{
    loom_status st;
    if ((st = need(n, src, 0, -1, 2)) || (st = need(n, src, 1, LOOM_I32, 1))) return st;
    const loom_tensor *table = n->src[0];
    int64_t V = table->shape[0], D = table->shape[1];
    const int32_t *ids = src[1];
    if (n->src[1]->shape[0] < step->n_tokens)
        return loom_error(LOOM_ERR_INVALID, "reference embed: %d tokens, ids hold %lld", step->n_tokens,
                          (long long)n->src[1]->shape[0]);
    for (int32_t t = 0; t < step->n_tokens; t++)
        if (ids[t] < 0 || ids[t] >= V)
            return loom_error(LOOM_ERR_INVALID, "reference embed: token %d has id %d, vocabulary is 0..%lld", t, ids[t],
                              (long long)V - 1);
    for (int32_t t = 0; t < step->n_tokens; t++)
        for (int64_t d = 0; d < D; d++) dst[t * D + d] = ld(src[0], table->dtype, (int64_t)ids[t] * D + d);
    return LOOM_OK;
}

/* y = x / sqrt(mean(x²) + eps) * w */
static loom_status ref_rmsnorm(const loom_node *n, const loom_step *step, const void *const *src, double *dst)
{
    loom_status st;
    int32_t T = step->n_tokens;
    if ((st = need_act(n, src, 0, T, -1)) || (st = need(n, src, 1, -1, 1))) return st;
    int64_t D = n->src[0]->shape[1];
    if (n->src[1]->shape[0] != D) return loom_error(LOOM_ERR_INVALID, "reference rmsnorm: weight is not [%lld]", (long long)D);
    const float *x = src[0];
    for (int32_t t = 0; t < T; t++) {
        double ss = 0;
        for (int64_t d = 0; d < D; d++) ss += (double)x[t * D + d] * x[t * D + d];
        double r = 1.0 / sqrt(ss / D + (double)n->p.eps);
        for (int64_t d = 0; d < D; d++) dst[t * D + d] = x[t * D + d] * r * ld(src[1], n->src[1]->dtype, d);
    }
    return LOOM_OK;
}

/* y[t][j] = Σ_k x[t][k] · w[j][k] + b[j], w [N, K] */
static loom_status ref_matmul(const loom_node *n, const loom_step *step, const void *const *src, double *dst)
{
    loom_status st;
    int32_t T = step->n_tokens;
    if ((st = need_act(n, src, 0, T, -1)) || (st = need(n, src, 1, -1, 2))) return st;
    int64_t K = n->src[0]->shape[1], N = n->src[1]->shape[0];
    if (n->src[1]->shape[1] != K)
        return loom_error(LOOM_ERR_INVALID, "reference matmul: weight is not [N, %lld]", (long long)K);
    if ((st = need_opt_vec(n, src, 2, N))) return st;
    const float *x = src[0];
    loom_dtype wt = n->src[1]->dtype;
    double *w = malloc((size_t)K * sizeof *w);
    if (!w) return loom_error(LOOM_ERR_NOMEM, "reference matmul: out of memory");
    for (int64_t j = 0; j < N; j++) {
        for (int64_t k = 0; k < K; k++) w[k] = ld(src[1], wt, j * K + k);
        double b = has_src(n, src, 2) ? ld(src[2], n->src[2]->dtype, j) : 0.0;
        for (int32_t t = 0; t < T; t++) {
            double acc = 0;
            for (int64_t k = 0; k < K; k++) acc += (double)x[t * K + k] * w[k];
            dst[t * N + j] = acc + b;
        }
    }
    free(w);
    return LOOM_OK;
}

/* y[t][j] = Σ_k x[t][k] · w[k][j] + b[j], w{K, N} AWQ, w[k][j] = (q - z) · s */
static loom_status ref_matmul_awq(const loom_node *n, const loom_step *step, const void *const *src, double *dst)
{
    loom_status st;
    int32_t T = step->n_tokens;
    if ((st = need_act(n, src, 0, T, -1)) || (st = need(n, src, 1, LOOM_Q4_AWQ, 2))) return st;
    int64_t K = n->src[1]->shape[0], N = n->src[1]->shape[1];
    if (n->src[0]->shape[1] != K)
        return loom_error(LOOM_ERR_INVALID, "reference matmul_awq: x has %lld columns, weight K is %lld",
                          (long long)n->src[0]->shape[1], (long long)K);
    if ((st = loom_awq_check_shape(K, N)) || (st = need_opt_vec(n, src, 2, N))) return st;
    loom_awq_view v = loom_awq_view_of(src[1], K, N);
    const float *x = src[0];
    double *w = malloc((size_t)N * sizeof *w);
    if (!w) return loom_error(LOOM_ERR_NOMEM, "reference matmul_awq: out of memory");
    for (int64_t i = 0; i < (int64_t)T * N; i++) dst[i] = 0;
    for (int64_t k = 0; k < K; k++) { /* row k of w, accumulated into every token's output */
        for (int64_t j = 0; j < N; j++) w[j] = loom_awq_get(&v, k, j);
        for (int32_t t = 0; t < T; t++) {
            double xk = x[t * K + k], *y = dst + t * N;
            for (int64_t j = 0; j < N; j++) y[j] += xk * w[j];
        }
    }
    if (has_src(n, src, 2))
        for (int32_t t = 0; t < T; t++)
            for (int64_t j = 0; j < N; j++) dst[t * N + j] += ld(src[2], n->src[2]->dtype, j);
    free(w);
    return LOOM_OK;
}

static loom_status check_positions(const loom_node *n, const loom_step *step, int64_t ctx, int64_t slots)
{
    if (!step->pos || (slots > 0 && !step->seq))
        return loom_error(LOOM_ERR_INVALID, "reference %s: the step has no positions or sequence slots", loom_op_name(n->op));
    for (int32_t t = 0; t < step->n_tokens; t++) {
        if (step->pos[t] < 0 || (ctx > 0 && step->pos[t] >= ctx))
            return loom_error(LOOM_ERR_INVALID, "reference %s: token %d has position %d outside 0..%lld",
                              loom_op_name(n->op), t, step->pos[t], (long long)ctx - 1);
        if (slots > 0 && (step->seq[t] < 0 || step->seq[t] >= slots))
            return loom_error(LOOM_ERR_INVALID, "reference %s: token %d has slot %d outside 0..%lld",
                              loom_op_name(n->op), t, step->seq[t], (long long)slots - 1);
    }
    return LOOM_OK;
}

/* Neox rotary (Hugging Face Qwen2): pair (i, i + hd/2) of every head turns by
 * pos · inv_freq(i); cos and sin carry the YaRN magnitude. */
static loom_status ref_rope(const loom_node *n, const loom_step *step, const void *const *src, double *dst)
{
    loom_status st;
    int32_t T = step->n_tokens, H = n->p.n_head, hd = n->p.head_dim;
    if ((st = need_act(n, src, 0, T, -1))) return st;
    if (H <= 0 || hd <= 0 || hd % 2 || (int64_t)H * hd != n->src[0]->shape[1])
        return loom_error(LOOM_ERR_INVALID, "reference rope: %d heads x %d head_dim do not make %lld columns", H, hd,
                          (long long)n->src[0]->shape[1]);
    if ((st = check_positions(n, step, 0, 0))) return st;
    const float *x = src[0];
    int64_t D = (int64_t)H * hd;
    double m = loom_rope_mscale(&n->p);
    for (int32_t t = 0; t < T; t++)
        for (int32_t i = 0; i < hd / 2; i++) {
            double a = step->pos[t] * loom_rope_inv_freq(&n->p, i), c = cos(a) * m, s = sin(a) * m;
            for (int32_t h = 0; h < H; h++) {
                const float *xh = x + t * D + (int64_t)h * hd;
                double *yh = dst + t * D + (int64_t)h * hd;
                double x0 = xh[i], x1 = xh[i + hd / 2];
                yh[i] = x0 * c - x1 * s;
                yh[i + hd / 2] = x1 * c + x0 * s;
            }
        }
    return LOOM_OK;
}

/* Grouped-query attention over the KV cache. The step's own k, v (kept in
 * double, never rounded to the cache dtype) conceptually overwrite the cache
 * at (seq[t], pos[t]) first; then token t, query head h reads kv head
 * h / (Hq / Hkv) at positions 0..pos[t] of slot seq[t]. */
static loom_status ref_gqa_attn(const loom_node *n, const loom_step *step, const void *const *src, double *dst)
{
    loom_status st;
    int32_t T = step->n_tokens, Hq = n->p.n_head, Hkv = n->p.n_head_kv, hd = n->p.head_dim;
    if (Hq <= 0 || Hkv <= 0 || Hq % Hkv || hd <= 0)
        return loom_error(LOOM_ERR_INVALID, "reference gqa_attn: bad heads %d:%d x %d", Hq, Hkv, hd);
    if ((st = need_act(n, src, 0, T, (int64_t)Hq * hd)) || (st = need_act(n, src, 1, T, (int64_t)Hkv * hd)) ||
        (st = need_act(n, src, 2, T, (int64_t)Hkv * hd)))
        return st;
    for (int c = 3; c < 5; c++) {
        if ((st = need(n, src, c, -1, 4))) return st;
        const loom_tensor *kc = n->src[c];
        if (kc->dtype == LOOM_BF16 || kc->shape[1] != Hkv || kc->shape[3] != hd ||
            memcmp(kc->shape, n->src[3]->shape, sizeof kc->shape))
            return loom_error(LOOM_ERR_INVALID, "reference gqa_attn: cache %d is not [S, %d, C, %d] f16|f32", c, Hkv, hd);
    }
    int64_t S = n->src[3]->shape[0], C = n->src[3]->shape[2];
    if ((st = check_positions(n, step, C, S))) return st;

    /* writer[s * C + j]: the last token of this step written at (s, j), or -1 */
    int32_t *writer = malloc((size_t)(S * C) * sizeof *writer);
    double *score = malloc((size_t)C * sizeof *score);
    if (!writer || !score) {
        free(writer), free(score);
        return loom_error(LOOM_ERR_NOMEM, "reference gqa_attn: out of memory");
    }
    for (int64_t i = 0; i < S * C; i++) writer[i] = -1;
    for (int32_t t = 0; t < T; t++) writer[(int64_t)step->seq[t] * C + step->pos[t]] = t;

    const float *q = src[0], *k = src[1], *v = src[2];
    loom_dtype cdt = n->src[3]->dtype;
    double scale = n->p.attn_scale > 0 ? (double)n->p.attn_scale : 1.0 / sqrt((double)hd);
    int64_t kvw = (int64_t)Hkv * hd, qw = (int64_t)Hq * hd;
    for (int32_t t = 0; t < T; t++) {
        int64_t s = step->seq[t], L = (int64_t)step->pos[t] + 1;
        for (int32_t h = 0; h < Hq; h++) {
            int32_t g = h / (Hq / Hkv);
            const float *qh = q + t * qw + (int64_t)h * hd;
            int64_t base = ((s * Hkv + g) * C) * hd; /* cache element of (s, g, 0, 0) */
            double mx = -INFINITY;
            for (int64_t j = 0; j < L; j++) {
                int32_t w = writer[s * C + j];
                double dot = 0;
                for (int32_t d = 0; d < hd; d++) {
                    double kj = w >= 0 ? k[w * kvw + (int64_t)g * hd + d] : ld(src[3], cdt, base + j * hd + d);
                    dot += (double)qh[d] * kj;
                }
                score[j] = dot * scale;
                if (score[j] > mx) mx = score[j];
            }
            double sum = 0;
            for (int64_t j = 0; j < L; j++) sum += score[j] = exp(score[j] - mx);
            double *out = dst + t * qw + (int64_t)h * hd;
            for (int32_t d = 0; d < hd; d++) out[d] = 0;
            for (int64_t j = 0; j < L; j++) {
                int32_t w = writer[s * C + j];
                double p = score[j] / sum;
                for (int32_t d = 0; d < hd; d++) {
                    double vj = w >= 0 ? v[w * kvw + (int64_t)g * hd + d] : ld(src[4], cdt, base + j * hd + d);
                    out[d] += p * vj;
                }
            }
        }
    }
    free(writer), free(score);
    return LOOM_OK;
}

/* silu(gate) · up = gate / (1 + e^-gate) · up */
static loom_status ref_swiglu(const loom_node *n, const loom_step *step, const void *const *src, double *dst)
{
    loom_status st;
    int32_t T = step->n_tokens;
    if ((st = need_act(n, src, 0, T, -1)) || (st = need_act(n, src, 1, T, n->src[0]->shape[1]))) return st;
    const float *g = src[0], *u = src[1];
    int64_t m = (int64_t)T * n->src[0]->shape[1];
    for (int64_t i = 0; i < m; i++) dst[i] = (double)g[i] / (1.0 + exp(-(double)g[i])) * u[i];
    return LOOM_OK;
}

static loom_status ref_add(const loom_node *n, const loom_step *step, const void *const *src, double *dst)
{
    loom_status st;
    int32_t T = step->n_tokens;
    if ((st = need_act(n, src, 0, T, -1)) || (st = need_act(n, src, 1, T, n->src[0]->shape[1]))) return st;
    const float *a = src[0], *b = src[1];
    int64_t m = (int64_t)T * n->src[0]->shape[1];
    for (int64_t i = 0; i < m; i++) dst[i] = (double)a[i] + b[i];
    return LOOM_OK;
}

loom_status loom_ref_node(const loom_node *node, const loom_step *step, const void *const *src, double *dst)
{
    if (!node || !step || !src || !dst) return loom_error(LOOM_ERR_INVALID, "reference: NULL argument");
    if (step->n_tokens < 1) return loom_error(LOOM_ERR_INVALID, "reference: %d tokens", step->n_tokens);
    if (node->n_src < 1 || node->n_src > LOOM_MAX_SRC)
        return loom_error(LOOM_ERR_INVALID, "reference: node has %d sources", node->n_src);
    switch (node->op) {
#define X(id, name, lo, hi) case LOOM_OP_##id: return ref_##name(node, step, src, dst);
        LOOM_OPS(X)
#undef X
    case LOOM_OP_COUNT: break;
    }
    return loom_error(LOOM_ERR_INVALID, "reference: unknown op %d", (int)node->op);
}
