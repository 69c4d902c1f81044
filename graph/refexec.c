/* refexec.c — run a graph through the float64 reference (see refexec.h). */
#include <stdlib.h>

#include "graph_impl.h"
#include "reference.h"
#include "refexec.h"

struct loom_ref_exec {
    const loom_graph *g;
    void            **data;  /* [nt]: host bytes of each tensor (weights borrowed or loaded) */
    double           *out;   /* scratch: one node's output in double */
    size_t            out_n;
};

void loom_ref_exec_destroy(loom_ref_exec *r)
{
    if (!r) return;
    for (int32_t t = 0; t < r->g->nt && r->data; t++)
        if (r->g->t[t].kind != GT_WEIGHT) free(r->data[t]);
        else weight_put(r->g, t, r->data[t]);
    free(r->data), free(r->out), free(r);
}

loom_status loom_ref_exec_create(const loom_graph *g, loom_ref_exec **out)
{
    *out = NULL;
    if (g->status) return loom_error(g->status, "graph has an error: %s", g->error);
    loom_ref_exec *r = calloc(1, sizeof *r);
    if (!r || !(r->data = calloc((size_t)(uint32_t)g->nt, sizeof *r->data))) {
        free(r);
        return loom_error(LOOM_ERR_NOMEM, "out of memory for the reference");
    }
    r->g = g;
    for (int32_t t = 0; t < g->nt; t++) {
        const gtensor *gt = &g->t[t];
        if (gt->kind == GT_WEIGHT) { /* held for the reference's lifetime */
            const void *w;
            loom_status st = weight_get(g, t, &w);
            if (st) {
                loom_ref_exec_destroy(r);
                return st;
            }
            r->data[t] = (void *)w;
            continue;
        }
        if (!(r->data[t] = calloc(1, gt->nbytes))) { /* states start zeroed, like a device's */
            loom_ref_exec_destroy(r);
            return loom_error(LOOM_ERR_NOMEM, "reference: out of memory (%zu bytes for '%s')", gt->nbytes, gt->desc.name);
        }
        if (gt->kind == GT_ACT) {
            size_t elems = gt->nbytes / 4; /* activations are f32 */
            if (elems > r->out_n) r->out_n = elems;
        }
    }
    if (!(r->out = malloc(r->out_n * sizeof *r->out))) {
        loom_ref_exec_destroy(r);
        return loom_error(LOOM_ERR_NOMEM, "reference: out of memory");
    }
    *out = r;
    return LOOM_OK;
}

static loom_status check(const loom_ref_exec *r, loom_tid t, size_t nbytes)
{
    if (t < 0 || t >= r->g->nt) return loom_error(LOOM_ERR_INVALID, "reference: tensor id %d is not in the graph", t);
    if (nbytes > r->g->t[t].nbytes)
        return loom_error(LOOM_ERR_INVALID, "reference: %zu bytes for '%s' of %zu", nbytes, r->g->t[t].desc.name,
                          r->g->t[t].nbytes);
    return LOOM_OK;
}

loom_status loom_ref_exec_write(loom_ref_exec *r, loom_tid t, const void *src, size_t nbytes)
{
    loom_status st = check(r, t, nbytes);
    if (st) return st;
    if (r->g->t[t].kind == GT_WEIGHT) return loom_error(LOOM_ERR_INVALID, "reference: '%s' is a weight", r->g->t[t].desc.name);
    memcpy(r->data[t], src, nbytes);
    return LOOM_OK;
}

loom_status loom_ref_exec_read(loom_ref_exec *r, loom_tid t, void *dst, size_t nbytes)
{
    loom_status st = check(r, t, nbytes);
    if (st) return st;
    memcpy(dst, r->data[t], nbytes);
    return LOOM_OK;
}

/* gqa_attn's definition writes the step's k and v into the caches; the
 * reference node only reads them, so the executor stores them after it. */
static void store_kv(loom_ref_exec *r, const gnode *n, const loom_step *step)
{
    const loom_tensor *kc = &r->g->t[n->src[3]].desc;
    int64_t Hkv = kc->shape[1], C = kc->shape[2], hd = kc->shape[3];
    for (int c = 0; c < 2; c++) {
        const float *x = r->data[n->src[1 + c]];
        void *cache = r->data[n->src[3 + c]];
        for (int32_t t = 0; t < step->n_tokens; t++)
            for (int64_t h = 0; h < Hkv; h++)
                for (int64_t d = 0; d < hd; d++) {
                    int64_t at = (((int64_t)step->seq[t] * Hkv + h) * C + step->pos[t]) * hd + d;
                    float v = x[(int64_t)t * Hkv * hd + h * hd + d];
                    if (kc->dtype == LOOM_F16) ((uint16_t *)cache)[at] = loom_f32_to_f16(v);
                    else ((float *)cache)[at] = v;
                }
    }
}

loom_status loom_ref_exec_run(loom_ref_exec *r, const loom_step *step)
{
    const loom_graph *g = r->g;
    if (!step || step->n_tokens < 1 || step->n_tokens > g->max_tokens)
        return loom_error(LOOM_ERR_INVALID, "reference: a step of %d tokens (1..%d)", step ? step->n_tokens : 0,
                          g->max_tokens);
    for (int32_t i = 0; i < g->nn; i++) {
        const gnode *n = &g->n[i];
        loom_node node = {.op = n->op, .n_src = n->n_src, .p = n->p, .dst = (loom_tensor *)&g->t[n->dst].desc};
        const void *src[LOOM_MAX_SRC] = {0};
        for (int32_t s = 0; s < n->n_src; s++)
            if (n->src[s] != LOOM_TID_NONE) {
                node.src[s] = (loom_tensor *)&g->t[n->src[s]].desc;
                src[s] = r->data[n->src[s]];
            }
        loom_status st = loom_ref_node(&node, step, src, r->out);
        if (st) return loom_error(st, "reference: node '%s': %s", n->name, loom_last_error());
        float *dst = r->data[n->dst];
        int64_t m = (int64_t)step->n_tokens * node.dst->shape[1];
        for (int64_t k = 0; k < m; k++) dst[k] = (float)r->out[k];
        if (n->op == LOOM_OP_GQA_ATTN) store_kv(r, n, step);
    }
    return LOOM_OK;
}
