/* ops.c — per-op validation and shape inference, one rule per entry of LOOM_OPS. */
#include <math.h>

#include "graph_impl.h"

const char *loom_tensor_str(const loom_tensor *t, char *buf, size_t len)
{
    int n = snprintf(buf, len, "[");
    for (int i = 0; i < t->ndim && n < (int)len; i++)
        n += snprintf(buf + n, len - n, "%s%s%lld", i ? "," : "",
                      i == 0 && (t->flags & LOOM_TENSOR_DYNAMIC) ? "T<=" : "", (long long)t->shape[i]);
    if (n < (int)len) snprintf(buf + n, len - n, "] %s", loom_dtype_name(t->dtype));
    return buf;
}

#define FAIL(...) return loom_error(LOOM_ERR_INVALID, __VA_ARGS__)

static bool is_float_weight(loom_dtype dt)
{
    return dt == LOOM_F32 || dt == LOOM_F16 || dt == LOOM_BF16;
}

/* An activation: f32, rank 2. */
static loom_status need_act(const loom_tensor *t, const char *what)
{
    char b[96];
    if (t->dtype != LOOM_F32 || t->ndim != 2)
        FAIL("%s must be a 2-D f32 activation [T, cols], got %s", what, loom_tensor_str(t, b, sizeof b));
    return LOOM_OK;
}

static void set_out(loom_tensor *out, const loom_tensor *like, int64_t cols)
{
    out->dtype = LOOM_F32;
    out->ndim = 2;
    out->shape[0] = like->shape[0];
    out->shape[1] = cols;
    out->flags = like->flags & LOOM_TENSOR_DYNAMIC;
}

static loom_status same_rows(const loom_tensor *a, const loom_tensor *b, const char *an, const char *bn)
{
    if (a->shape[0] != b->shape[0] || (a->flags & LOOM_TENSOR_DYNAMIC) != (b->flags & LOOM_TENSOR_DYNAMIC))
        FAIL("%s and %s must have the same token rows (%lld%s vs %lld%s)", an, bn, (long long)a->shape[0],
             a->flags & LOOM_TENSOR_DYNAMIC ? " dynamic" : "", (long long)b->shape[0],
             b->flags & LOOM_TENSOR_DYNAMIC ? " dynamic" : "");
    return LOOM_OK;
}

static loom_status need_vector(const loom_tensor *t, int64_t n, const char *what)
{
    char b[96];
    if (!t) return LOOM_OK;
    if (!is_float_weight(t->dtype) || t->ndim != 1 || t->shape[0] != n)
        FAIL("%s must be [%lld] f32|f16|bf16, got %s", what, (long long)n, loom_tensor_str(t, b, sizeof b));
    return LOOM_OK;
}

static loom_status shape_embed(const loom_tensor *const *s, const loom_op_params *p, loom_tensor *out)
{
    char b[96];
    if (!is_float_weight(s[0]->dtype) || s[0]->ndim != 2)
        FAIL("embedding table must be [vocab, dim] f32|f16|bf16, got %s", loom_tensor_str(s[0], b, sizeof b));
    if (s[1]->dtype != LOOM_I32 || s[1]->ndim != 1)
        FAIL("token ids must be [T] i32, got %s", loom_tensor_str(s[1], b, sizeof b));
    set_out(out, s[1], s[0]->shape[1]);
    return LOOM_OK;
}

static loom_status shape_rmsnorm(const loom_tensor *const *s, const loom_op_params *p, loom_tensor *out)
{
    loom_status st;
    if ((st = need_act(s[0], "x")) || (st = need_vector(s[1], s[0]->shape[1], "norm weight"))) return st;
    if (!(p->eps > 0 && isfinite(p->eps))) FAIL("rmsnorm eps must be positive, got %g", p->eps);
    set_out(out, s[0], s[0]->shape[1]);
    return LOOM_OK;
}

static loom_status shape_matmul(const loom_tensor *const *s, const loom_op_params *p, loom_tensor *out)
{
    char b[96];
    loom_status st;
    if ((st = need_act(s[0], "x"))) return st;
    if (!is_float_weight(s[1]->dtype) || s[1]->ndim != 2 || s[1]->shape[1] != s[0]->shape[1])
        FAIL("matmul weight must be [N, K=%lld] f32|f16|bf16, got %s", (long long)s[0]->shape[1],
             loom_tensor_str(s[1], b, sizeof b));
    if ((st = need_vector(s[2], s[1]->shape[0], "bias"))) return st;
    set_out(out, s[0], s[1]->shape[0]);
    return LOOM_OK;
}

static loom_status shape_matmul_awq(const loom_tensor *const *s, const loom_op_params *p, loom_tensor *out)
{
    char b[96];
    loom_status st;
    if ((st = need_act(s[0], "x"))) return st;
    if (s[1]->dtype != LOOM_Q4_AWQ || s[1]->ndim != 2 || s[1]->shape[0] != s[0]->shape[1])
        FAIL("matmul_awq weight must be {K=%lld, N} q4_awq, got %s", (long long)s[0]->shape[1],
             loom_tensor_str(s[1], b, sizeof b));
    if ((st = need_vector(s[2], s[1]->shape[1], "bias"))) return st;
    set_out(out, s[0], s[1]->shape[1]);
    return LOOM_OK;
}

static loom_status check_heads(const loom_op_params *p, int32_t n_head)
{
    if (n_head <= 0 || p->head_dim <= 0 || p->head_dim % 2 || p->head_dim > 1024)
        FAIL("heads %d x head_dim %d: need positive heads and an even head_dim <= 1024", n_head, p->head_dim);
    return LOOM_OK;
}

static loom_status shape_rope(const loom_tensor *const *s, const loom_op_params *p, loom_tensor *out)
{
    loom_status st;
    if ((st = need_act(s[0], "x")) || (st = check_heads(p, p->n_head))) return st;
    if ((int64_t)p->n_head * p->head_dim != s[0]->shape[1])
        FAIL("rope: %d heads x %d head_dim != %lld columns", p->n_head, p->head_dim, (long long)s[0]->shape[1]);
    if (!(p->rope_theta > 1 && isfinite(p->rope_theta))) FAIL("rope_theta must be > 1, got %g", p->rope_theta);
    if (!(p->yarn_factor >= 0 && isfinite(p->yarn_factor))) FAIL("YaRN factor must be >= 0, got %g", p->yarn_factor);
    if (p->yarn_factor > 1 && !(p->yarn_orig_ctx >= 1 && isfinite(p->yarn_orig_ctx)))
        FAIL("YaRN needs original_max_position_embeddings >= 1, got %g", p->yarn_orig_ctx);
    set_out(out, s[0], s[0]->shape[1]);
    return LOOM_OK;
}

static loom_status shape_gqa_attn(const loom_tensor *const *s, const loom_op_params *p, loom_tensor *out)
{
    char b[96], c[96];
    loom_status st;
    if ((st = need_act(s[0], "q")) || (st = need_act(s[1], "k")) || (st = need_act(s[2], "v"))) return st;
    if ((st = same_rows(s[0], s[1], "q", "k")) || (st = same_rows(s[0], s[2], "q", "v"))) return st;
    if ((st = check_heads(p, p->n_head))) return st;
    if (p->n_head_kv <= 0 || p->n_head % p->n_head_kv)
        FAIL("gqa_attn: %d query heads are not a multiple of %d KV heads", p->n_head, p->n_head_kv);
    int64_t hd = p->head_dim;
    if (s[0]->shape[1] != p->n_head * hd || s[1]->shape[1] != p->n_head_kv * hd || s[2]->shape[1] != p->n_head_kv * hd)
        FAIL("gqa_attn: q/k/v columns %lld/%lld/%lld do not match %d:%d heads of %d", (long long)s[0]->shape[1],
             (long long)s[1]->shape[1], (long long)s[2]->shape[1], p->n_head, p->n_head_kv, p->head_dim);
    for (int i = 3; i < 5; i++) {
        const loom_tensor *kv = s[i];
        if ((kv->dtype != LOOM_F16 && kv->dtype != LOOM_F32) || kv->ndim != 4 || kv->shape[1] != p->n_head_kv ||
            kv->shape[3] != hd)
            FAIL("gqa_attn: %s cache must be [slots, %d, ctx, %d] f16|f32, got %s", i == 3 ? "k" : "v",
                 p->n_head_kv, p->head_dim, loom_tensor_str(kv, b, sizeof b));
        if (!(kv->flags & LOOM_TENSOR_STATE))
            FAIL("gqa_attn: %s cache must be a state tensor (persistent across steps)", i == 3 ? "k" : "v");
    }
    if (memcmp(s[3]->shape, s[4]->shape, sizeof s[3]->shape) || s[3]->dtype != s[4]->dtype)
        FAIL("gqa_attn: k cache %s and v cache %s differ", loom_tensor_str(s[3], b, sizeof b),
             loom_tensor_str(s[4], c, sizeof c));
    if (!(p->attn_scale >= 0 && isfinite(p->attn_scale))) FAIL("gqa_attn: scale must be >= 0, got %g", p->attn_scale);
    set_out(out, s[0], s[0]->shape[1]);
    return LOOM_OK;
}

static loom_status same_shape(const loom_tensor *const *s, loom_tensor *out, const char *an, const char *bn)
{
    char b[96], c[96];
    loom_status st;
    if ((st = need_act(s[0], an)) || (st = need_act(s[1], bn)) || (st = same_rows(s[0], s[1], an, bn))) return st;
    if (s[0]->shape[1] != s[1]->shape[1])
        FAIL("%s %s and %s %s differ in shape", an, loom_tensor_str(s[0], b, sizeof b), bn,
             loom_tensor_str(s[1], c, sizeof c));
    set_out(out, s[0], s[0]->shape[1]);
    return LOOM_OK;
}

static loom_status shape_swiglu(const loom_tensor *const *s, const loom_op_params *p, loom_tensor *out)
{
    return same_shape(s, out, "gate", "up");
}

static loom_status shape_add(const loom_tensor *const *s, const loom_op_params *p, loom_tensor *out)
{
    return same_shape(s, out, "a", "b");
}

static const loom_op_info op_table[LOOM_OP_COUNT] = {
#define X(id, name, lo, hi) [LOOM_OP_##id] = {#name, lo, hi, shape_##name},
    LOOM_OPS(X)
#undef X
};

const loom_op_info *loom_op_info_of(loom_op op)
{
    return (unsigned)op < LOOM_OP_COUNT ? &op_table[op] : NULL;
}
