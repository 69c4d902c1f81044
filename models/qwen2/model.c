/* model.c — Qwen2 presets and the graph builder (the forward pass). */
#include <strings.h>

#include "qwen2.h"

/* Published dimensions of Qwen2.5 (config.json of each release). */
static const loom_qwen2_config presets[] = {
    /* name            layers hidden Hq Hkv hd   ffn    vocab   ctx    theta  eps   tied  dtype      awq */
    {"qwen2.5-0.5b",   24,    896,  14, 2,  64,  4864,  151936, 32768, 1e6f, 1e-6f, true,  LOOM_BF16, false, 0, 0, 0, 0},
    {"qwen2.5-1.5b",   28,    1536, 12, 2,  128, 8960,  151936, 32768, 1e6f, 1e-6f, true,  LOOM_BF16, false, 0, 0, 0, 0},
    {"qwen2.5-3b",     36,    2048, 16, 2,  128, 11008, 151936, 32768, 1e6f, 1e-6f, true,  LOOM_BF16, false, 0, 0, 0, 0},
    {"qwen2.5-7b",     28,    3584, 28, 4,  128, 18944, 152064, 32768, 1e6f, 1e-6f, false, LOOM_BF16, false, 0, 0, 0, 0},
    {"qwen2.5-14b",    48,    5120, 40, 8,  128, 13824, 152064, 32768, 1e6f, 1e-6f, false, LOOM_BF16, false, 0, 0, 0, 0},
    {"qwen2.5-32b",    64,    5120, 40, 8,  128, 27648, 152064, 32768, 1e6f, 1e-6f, false, LOOM_BF16, false, 0, 0, 0, 0},
};
#define N_PRESETS (int)(sizeof presets / sizeof *presets)

int loom_qwen2_n_presets(void) { return N_PRESETS; }
const loom_qwen2_config *loom_qwen2_preset_at(int i) { return i >= 0 && i < N_PRESETS ? &presets[i] : NULL; }

loom_status loom_qwen2_preset(const char *name, loom_qwen2_config *out)
{
    char list[512] = "";
    for (int i = 0, n = 0; i < N_PRESETS; i++) {
        if (name && !strcasecmp(name, presets[i].name)) return *out = presets[i], LOOM_OK;
        if (n < (int)sizeof list - 64) n += snprintf(list + n, 64, "%s%.40s", i ? ", " : "", presets[i].name);
    }
    return loom_error(LOOM_ERR_NOT_FOUND, "unknown preset '%s'; presets: %s", name ? name : "", list);
}

loom_status loom_qwen2_validate(const loom_qwen2_config *c)
{
    if (c->n_layers < 1 || c->n_layers > 1024) return loom_error(LOOM_ERR_INVALID, "num_hidden_layers %d is outside 1..1024", c->n_layers);
    if (c->hidden < 1 || c->ffn < 1 || c->vocab < 1)
        return loom_error(LOOM_ERR_INVALID, "hidden_size %d, intermediate_size %d and vocab_size %d must be positive",
                          c->hidden, c->ffn, c->vocab);
    if (c->n_head < 1 || c->n_head_kv < 1 || c->n_head % c->n_head_kv)
        return loom_error(LOOM_ERR_INVALID, "num_attention_heads %d must be a positive multiple of num_key_value_heads %d",
                          c->n_head, c->n_head_kv);
    if (c->head_dim < 2 || c->head_dim % 2 || (int64_t)c->head_dim * c->n_head != c->hidden)
        return loom_error(LOOM_ERR_INVALID, "head_dim %d x %d heads must equal hidden_size %d (and head_dim be even)",
                          c->head_dim, c->n_head, c->hidden);
    if (c->dtype != LOOM_F32 && c->dtype != LOOM_F16 && c->dtype != LOOM_BF16)
        return loom_error(LOOM_ERR_INVALID, "weight dtype %s is not f32, f16 or bf16", loom_dtype_name(c->dtype));
    if (c->awq && (c->hidden % 128 || c->ffn % 128))
        return loom_error(LOOM_ERR_INVALID, "AWQ needs hidden_size (%d) and intermediate_size (%d) to be multiples of 128",
                          c->hidden, c->ffn);
    return LOOM_OK;
}

typedef struct {
    const loom_qwen2_config *c;
    loom_graph              *g;
    loom_qwen2_weight_fn     fn;
    void                    *ud;
    const loom_weight_loader *later;
} builder;

static loom_tid weight(builder *b, loom_dtype dt, int32_t ndim, const int64_t *shape, const char *fmt, int il)
{
    char name[128];
    snprintf(name, sizeof name, fmt, il);
    if (loom_graph_status(b->g)) return LOOM_TID_NONE;
    const void *data = b->fn(b->ud, name, dt, ndim, shape);
    if (!data) /* the provider said why: make it the graph's error */
        return loom_graph_fail(b->g, LOOM_ERR_FORMAT, "%s", loom_last_error());
    if (data == LOOM_QWEN2_LATER)
        return b->later ? loom_graph_weight_lazy(b->g, name, dt, ndim, shape, b->later)
                        : loom_graph_fail(b->g, LOOM_ERR_INTERNAL, "weight '%s' deferred, but no loader was given", name);
    return loom_graph_weight(b->g, name, dt, ndim, shape, data);
}

static loom_tid vec(builder *b, int64_t n, const char *fmt, int il)
{
    return weight(b, b->c->dtype, 1, (int64_t[]){n}, fmt, il);
}

/* A linear layer: k inputs -> n outputs, optional bias, dense or AWQ. */
static loom_tid linear(builder *b, loom_tid x, int64_t k, int64_t n, bool bias, const char *prefix, int il)
{
    char fmt[128];
    loom_tid bt = LOOM_TID_NONE;
    if (bias) {
        snprintf(fmt, sizeof fmt, "%s.bias", prefix);
        bt = vec(b, n, fmt, il);
    }
    if (b->c->awq)
        return loom_matmul_awq(b->g, x, weight(b, LOOM_Q4_AWQ, 2, (int64_t[]){k, n}, prefix, il), bt);
    snprintf(fmt, sizeof fmt, "%s.weight", prefix);
    return loom_matmul(b->g, x, weight(b, b->c->dtype, 2, (int64_t[]){n, k}, fmt, il), bt);
}

loom_status loom_qwen2_build(const loom_qwen2_config *c, int32_t max_tokens, int32_t n_slots, int32_t n_ctx,
                             loom_dtype kv_dtype, loom_qwen2_weight_fn fn, void *ud, const loom_weight_loader *later,
                             loom_qwen2_graph *out)
{
    memset(out, 0, sizeof *out);
    loom_status st = loom_qwen2_validate(c);
    if (st) return st;
    if (n_slots < 1 || n_ctx < 1 || n_ctx > c->max_pos * 4)
        return loom_error(LOOM_ERR_INVALID, "%d sequence slots of %d positions: need >= 1 slot and 1..%d positions",
                          n_slots, n_ctx, c->max_pos * 4);
    loom_graph *g = loom_graph_create(max_tokens);
    if (!g) return loom_error(LOOM_ERR_INVALID, "%s", loom_last_error());
    builder b = {c, g, fn, ud, later};
    const int64_t D = c->hidden, F = c->ffn, V = c->vocab, hd = c->head_dim;
    const int64_t Dq = c->n_head * hd, Dkv = c->n_head_kv * hd;
    loom_op_params rope_q = {.n_head = c->n_head, .head_dim = c->head_dim, .rope_theta = c->rope_theta,
                             .yarn_factor = c->yarn_factor, .yarn_orig_ctx = c->yarn_orig_ctx,
                             .yarn_beta_fast = c->yarn_beta_fast, .yarn_beta_slow = c->yarn_beta_slow};
    loom_op_params rope_k = rope_q;
    rope_k.n_head = c->n_head_kv;
    loom_op_params attn = {.n_head = c->n_head, .n_head_kv = c->n_head_kv, .head_dim = c->head_dim};

    loom_tid ids = loom_graph_input(g, "ids", LOOM_I32, 1, (int64_t[]){max_tokens}, true);   /* [T] */
    loom_tid tok_embd = weight(&b, c->dtype, 2, (int64_t[]){V, D}, "model.embed_tokens.weight", 0);
    loom_tid x = loom_embed(g, tok_embd, ids);                                                  /* [T, D] */

    for (int il = 0; il < c->n_layers; il++) {
        /* attention: pre-norm, q/k/v projections with bias, rotary, GQA over the cache */
        loom_tid h = loom_name(g, loom_rmsnorm(g, x, vec(&b, D, "model.layers.%d.input_layernorm.weight", il), c->rms_eps),
                               "blk.%d.attn_norm", il);                                          /* [T, D] */
        loom_tid q = loom_name(g, linear(&b, h, D, Dq, true, "model.layers.%d.self_attn.q_proj", il), "blk.%d.q", il);
        loom_tid k = loom_name(g, linear(&b, h, D, Dkv, true, "model.layers.%d.self_attn.k_proj", il), "blk.%d.k", il);
        loom_tid v = loom_name(g, linear(&b, h, D, Dkv, true, "model.layers.%d.self_attn.v_proj", il), "blk.%d.v", il);
        q = loom_name(g, loom_rope(g, q, &rope_q), "blk.%d.q_rope", il);                       /* [T, Hq*hd] */
        k = loom_name(g, loom_rope(g, k, &rope_k), "blk.%d.k_rope", il);                       /* [T, Hkv*hd] */
        int64_t cache_shape[4] = {n_slots, c->n_head_kv, n_ctx, hd};                            /* [S, Hkv, C, hd] */
        loom_tid kc = loom_name(g, loom_graph_state(g, NULL, kv_dtype, 4, cache_shape), "blk.%d.k_cache", il);
        loom_tid vc = loom_name(g, loom_graph_state(g, NULL, kv_dtype, 4, cache_shape), "blk.%d.v_cache", il);
        loom_tid a = loom_name(g, loom_gqa_attn(g, q, k, v, kc, vc, &attn), "blk.%d.attn", il); /* [T, Hq*hd] */
        a = loom_name(g, linear(&b, a, Dq, D, false, "model.layers.%d.self_attn.o_proj", il), "blk.%d.attn_out", il);
        x = loom_name(g, loom_add(g, x, a), "blk.%d.resid_attn", il);                           /* residual */

        /* feed-forward: pre-norm, SwiGLU, down projection */
        h = loom_name(g, loom_rmsnorm(g, x, vec(&b, D, "model.layers.%d.post_attention_layernorm.weight", il), c->rms_eps),
                      "blk.%d.ffn_norm", il);
        loom_tid gate = loom_name(g, linear(&b, h, D, F, false, "model.layers.%d.mlp.gate_proj", il), "blk.%d.gate", il);
        loom_tid up = loom_name(g, linear(&b, h, D, F, false, "model.layers.%d.mlp.up_proj", il), "blk.%d.up", il);
        loom_tid m = loom_name(g, loom_swiglu(g, gate, up), "blk.%d.swiglu", il);             /* [T, F] */
        m = loom_name(g, linear(&b, m, F, D, false, "model.layers.%d.mlp.down_proj", il), "blk.%d.ffn_out", il);
        x = loom_name(g, loom_add(g, x, m), "blk.%d.resid_ffn", il);                            /* residual */
    }

    x = loom_name(g, loom_rmsnorm(g, x, vec(&b, D, "model.norm.weight", 0), c->rms_eps), "out_norm");
    /* lm_head stays in the checkpoint's dense dtype (AWQ checkpoints keep it f16) */
    loom_tid head = c->tied ? tok_embd : weight(&b, c->dtype, 2, (int64_t[]){V, D}, "lm_head.weight", 0);
    loom_tid logits = loom_name(g, loom_matmul(g, x, head, LOOM_TID_NONE), "logits");          /* [T, V] */
    loom_graph_output(g, logits);

    if ((st = loom_graph_status(g))) {
        char msg[600];
        snprintf(msg, sizeof msg, "%s", loom_graph_error(g));
        loom_graph_destroy(g);
        return loom_error(st, "%s", msg);
    }
    *out = (loom_qwen2_graph){g, ids, logits};
    return LOOM_OK;
}
