/* builder.c — building a graph: leaves, op nodes with validation, outputs. */
#include <stdarg.h>
#include <stdlib.h>

#include "graph_impl.h"

loom_graph *loom_graph_create(int32_t max_tokens)
{
    if (max_tokens < 1 || max_tokens > (1 << 20)) {
        loom_error(LOOM_ERR_INVALID, "graph max_tokens %d is outside 1..%d", max_tokens, 1 << 20);
        return NULL;
    }
    loom_graph *g = calloc(1, sizeof *g);
    if (!g) {
        loom_error(LOOM_ERR_NOMEM, "out of memory creating a graph");
        return NULL;
    }
    g->max_tokens = max_tokens;
    return g;
}

void loom_graph_destroy(loom_graph *g)
{
    if (!g) return;
    for (int32_t i = 0; i < g->nt; i++) free((char *)g->t[i].desc.name);
    free(g->t);
    free(g->n);
    free(g);
}

int32_t loom_graph_max_tokens(const loom_graph *g) { return g->max_tokens; }
loom_status loom_graph_status(const loom_graph *g) { return g->status; }
const char *loom_graph_error(const loom_graph *g) { return g->status ? g->error : ""; }
int32_t loom_graph_n_tensors(const loom_graph *g) { return g->nt; }
int32_t loom_graph_n_nodes(const loom_graph *g) { return g->nn; }

const loom_tensor *loom_graph_tensor(const loom_graph *g, loom_tid t)
{
    return t >= 0 && t < g->nt ? &g->t[t].desc : NULL;
}

/* Record the first failure; later calls see g->status and do nothing. */
loom_tid loom_graph_fail(loom_graph *g, loom_status st, const char *fmt, ...)
{
    if (!g->status) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(g->error, sizeof g->error, fmt, ap);
        va_end(ap);
        g->status = st;
    }
    loom_error(g->status, "%s", g->error);
    return LOOM_TID_NONE;
}
#define fail loom_graph_fail

static loom_tid add_tensor(loom_graph *g, const char *name, gt_kind kind, loom_dtype dt, int32_t ndim,
                           const int64_t *shape, uint32_t flags)
{
    if (g->status) return LOOM_TID_NONE;
    if (!shape) return fail(g, LOOM_ERR_INVALID, "tensor '%s': no shape given", name ? name : "?");
    size_t nbytes;
    loom_status st = loom_tensor_nbytes(dt, ndim, shape, &nbytes);
    if (st) return fail(g, st, "tensor '%s': %s", name ? name : "?", loom_last_error());
    if (g->nt == g->ct) {
        int32_t c = g->ct ? g->ct * 2 : 64;
        gtensor *t = realloc(g->t, (size_t)c * sizeof *t);
        if (!t) return fail(g, LOOM_ERR_NOMEM, "out of memory growing the graph");
        g->t = t, g->ct = c;
    }
    gtensor *t = &g->t[g->nt];
    memset(t, 0, sizeof *t);
    char auto_name[32];
    snprintf(auto_name, sizeof auto_name, "t%d", g->nt);
    if (!(t->desc.name = strdup(name && *name ? name : auto_name)))
        return fail(g, LOOM_ERR_NOMEM, "out of memory growing the graph");
    t->kind = kind;
    t->nbytes = nbytes;
    t->producer = -1;
    t->desc.dtype = dt;
    t->desc.ndim = ndim;
    memcpy(t->desc.shape, shape, (size_t)ndim * sizeof *shape);
    t->desc.flags = flags;
    return g->nt++;
}

loom_tid loom_graph_input(loom_graph *g, const char *name, loom_dtype dt, int32_t ndim, const int64_t *shape, bool dynamic)
{
    if (!g->status && dynamic && shape && ndim >= 1 && shape[0] != g->max_tokens)
        return fail(g, LOOM_ERR_INVALID, "input '%s': a dynamic tensor has max_tokens (%d) rows, not %lld",
                    name ? name : "?", g->max_tokens, (long long)shape[0]);
    return add_tensor(g, name, GT_INPUT, dt, ndim, shape, LOOM_TENSOR_INPUT | (dynamic ? LOOM_TENSOR_DYNAMIC : 0));
}

loom_tid loom_graph_weight(loom_graph *g, const char *name, loom_dtype dt, int32_t ndim, const int64_t *shape, const void *data)
{
    if (!g->status && !data) return fail(g, LOOM_ERR_INVALID, "weight '%s' has no data", name ? name : "?");
    loom_tid t = add_tensor(g, name, GT_WEIGHT, dt, ndim, shape, LOOM_TENSOR_WEIGHT);
    if (t != LOOM_TID_NONE) g->t[t].data = data;
    return t;
}

loom_tid loom_graph_weight_lazy(loom_graph *g, const char *name, loom_dtype dt, int32_t ndim, const int64_t *shape,
                                const loom_weight_loader *ld)
{
    if (!g->status && (!ld || !ld->load || !ld->unload)) return fail(g, LOOM_ERR_INVALID, "weight '%s' has no loader", name ? name : "?");
    loom_tid t = add_tensor(g, name, GT_WEIGHT, dt, ndim, shape, LOOM_TENSOR_WEIGHT);
    if (t != LOOM_TID_NONE) g->t[t].loader = *ld;
    return t;
}

loom_status weight_get(const loom_graph *g, loom_tid t, const void **data)
{
    const gtensor *gt = &g->t[t];
    if (gt->data) return *data = gt->data, LOOM_OK;
    *data = gt->loader.load(gt->loader.ud, gt->desc.name, gt->desc.dtype, gt->desc.ndim, gt->desc.shape);
    return *data ? LOOM_OK : loom_error(LOOM_ERR_FORMAT, "weight '%s': %s", gt->desc.name, loom_last_error());
}

void weight_put(const loom_graph *g, loom_tid t, const void *data)
{
    const gtensor *gt = &g->t[t];
    if (!gt->data && data) gt->loader.unload(gt->loader.ud, data);
}

loom_tid loom_graph_state(loom_graph *g, const char *name, loom_dtype dt, int32_t ndim, const int64_t *shape)
{
    return add_tensor(g, name, GT_STATE, dt, ndim, shape, LOOM_TENSOR_STATE);
}

loom_tid loom_graph_op(loom_graph *g, loom_op op, const loom_tid *src, int32_t n_src, const loom_op_params *p, const char *name)
{
    if (g->status) return LOOM_TID_NONE;
    const loom_op_info *info = loom_op_info_of(op);
    if (!info) return fail(g, LOOM_ERR_INVALID, "unknown op %d", (int)op);
    char label[80];
    if (name && *name)
        snprintf(label, sizeof label, "'%s' (%s)", name, info->name);
    else
        snprintf(label, sizeof label, "#%d (%s)", g->nn, info->name);
    if (n_src < info->min_src || n_src > info->max_src)
        return fail(g, LOOM_ERR_INVALID, "node %s: takes %d..%d sources, given %d", label, info->min_src,
                    info->max_src, n_src);
    loom_op_params params = {0};
    if (p) params = *p;
    const loom_tensor *s[LOOM_MAX_SRC] = {0};
    for (int32_t i = 0; i < n_src; i++) {
        if (src[i] == LOOM_TID_NONE) {
            if (i < info->min_src) return fail(g, LOOM_ERR_INVALID, "node %s: source %d is missing", label, i);
            continue;
        }
        if (src[i] < 0 || src[i] >= g->nt)
            return fail(g, LOOM_ERR_INVALID, "node %s: source %d is tensor id %d, not in this graph", label, i, src[i]);
        s[i] = &g->t[src[i]].desc;
    }
    loom_tensor out = {0};
    loom_status st = info->shape(s, &params, &out);
    if (st) return fail(g, st, "node %s: %s", label, loom_last_error());

    if (g->nn == g->cn) {
        int32_t c = g->cn ? g->cn * 2 : 64;
        gnode *n = realloc(g->n, (size_t)c * sizeof *n);
        if (!n) return fail(g, LOOM_ERR_NOMEM, "out of memory growing the graph");
        g->n = n, g->cn = c;
    }
    char tname[64];
    snprintf(tname, sizeof tname, "%s", name && *name ? name : info->name);
    loom_tid dst = add_tensor(g, tname, GT_ACT, out.dtype, out.ndim, out.shape, out.flags);
    if (dst == LOOM_TID_NONE) return dst;
    gnode *n = &g->n[g->nn];
    memset(n, 0, sizeof *n);
    n->op = op;
    n->n_src = info->max_src;
    for (int32_t i = 0; i < LOOM_MAX_SRC; i++) n->src[i] = i < n_src ? src[i] : LOOM_TID_NONE;
    n->dst = dst;
    n->p = params;
    snprintf(n->name, sizeof n->name, "%s", tname);
    g->t[dst].producer = g->nn;
    g->nn++;
    return dst;
}

loom_status loom_graph_output(loom_graph *g, loom_tid t)
{
    if (g->status) return g->status;
    if (t < 0 || t >= g->nt) return fail(g, LOOM_ERR_INVALID, "output: tensor id %d is not in this graph", t), g->status;
    if (g->t[t].kind != GT_ACT)
        return fail(g, LOOM_ERR_INVALID, "output: '%s' is not computed by a node", g->t[t].desc.name), g->status;
    g->t[t].output = true;
    return LOOM_OK;
}

loom_tid loom_name(loom_graph *g, loom_tid t, const char *fmt, ...)
{
    if (g->status || t < 0 || t >= g->nt) return g->status ? LOOM_TID_NONE : t;
    char buf[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char *name = strdup(buf);
    if (!name) return fail(g, LOOM_ERR_NOMEM, "out of memory naming a tensor");
    free((char *)g->t[t].desc.name);
    g->t[t].desc.name = name;
    if (g->t[t].producer >= 0) snprintf(g->n[g->t[t].producer].name, sizeof g->n[0].name, "%s", buf);
    return t;
}

/* ---- named wrappers ---- */
#define OP(op, p, name, ...) loom_graph_op(g, op, (const loom_tid[]){__VA_ARGS__}, \
                                           sizeof((loom_tid[]){__VA_ARGS__}) / sizeof(loom_tid), p, name)

loom_tid loom_embed(loom_graph *g, loom_tid table, loom_tid ids) { return OP(LOOM_OP_EMBED, NULL, NULL, table, ids); }
loom_tid loom_swiglu(loom_graph *g, loom_tid gate, loom_tid up) { return OP(LOOM_OP_SWIGLU, NULL, NULL, gate, up); }
loom_tid loom_add(loom_graph *g, loom_tid a, loom_tid b) { return OP(LOOM_OP_ADD, NULL, NULL, a, b); }

loom_tid loom_rmsnorm(loom_graph *g, loom_tid x, loom_tid w, float eps)
{
    loom_op_params p = {.eps = eps};
    return OP(LOOM_OP_RMSNORM, &p, NULL, x, w);
}

loom_tid loom_matmul(loom_graph *g, loom_tid x, loom_tid w, loom_tid bias)
{
    return OP(LOOM_OP_MATMUL, NULL, NULL, x, w, bias);
}

loom_tid loom_matmul_awq(loom_graph *g, loom_tid x, loom_tid w, loom_tid bias)
{
    return OP(LOOM_OP_MATMUL_AWQ, NULL, NULL, x, w, bias);
}

loom_tid loom_rope(loom_graph *g, loom_tid x, const loom_op_params *p)
{
    return OP(LOOM_OP_ROPE, p, NULL, x);
}

loom_tid loom_gqa_attn(loom_graph *g, loom_tid q, loom_tid k, loom_tid v, loom_tid kcache, loom_tid vcache, const loom_op_params *p)
{
    return OP(LOOM_OP_GQA_ATTN, p, NULL, q, k, v, kcache, vcache);
}
