/* cuda_graph.c — compile, execute and release programs of the CUDA backend.
 *
 * compile() checks every node, picks what each needs (RoPE frequency table on
 * the device, the AWQ weight's repacked descriptor, split counts for decode
 * attention), sizes one scratch buffer for attention's split partials, and
 * plans the decode fusions (plan_gemv).
 *
 * execute() uploads the step's positions and slots (pinned host staging,
 * cudaMemcpyAsync) to a device buffer that is fixed for the program's
 * lifetime; the kernels read them there. Then, for a step of n tokens
 * (n <= LOOM_CUDA_GRAPH_MAX_TOKENS, default 16), it replays the CUDA graph
 * captured for n at the first step of that size; larger steps (prefill), or
 * all steps with LOOM_CUDA_GRAPHS=0, launch the kernels one by one. Either
 * way nothing waits: buffer_read and sync do. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_dev.h"


/* Decode fusion: a run of nodes that one AWQ GEMV launch computes when the
 * step has at most CU_GEMV_MAX_T tokens (q, k, v sharing x; gate, up and
 * swiglu; a matmul and the residual add after it). The lead node launches,
 * the members are skipped; larger steps run every node as it is. */
enum { FUSE_NONE, FUSE_LEAD, FUSE_MEMBER };

/* Decode attention lets the launch after it start late where that GEMV has fewer weight bytes
 * (plan_gemv; between the 0.4 MB of 0.5B's o, where late won, and 7B's 6.4 MB, where it lost) */
#define CU_ATTN_LATE_BYTES ((size_t)2 << 20)

typedef struct cu_plan {
    double          *inv_freq; /* rope: device, head_dim/2 */
    double           mscale;   /* rope */
    const cu_awq    *awq;      /* matmul_awq: the repacked weight */
    int              fuse;     /* FUSE_* */
    bool             kv_stored; /* gqa_attn: the lead GEMV stores k and v in decode steps */
    bool             attn_late; /* gqa_attn: lets the launch after it start late (plan_gemv) */
    int              xnorm;     /* matmul_awq right after an rmsnorm that only it and this many - 1
                                 * nodes after it read: the lead may normalise x on load */
    cu_awq_gemv_args gemv;     /* FUSE_LEAD, or a lone matmul_awq: everything but T */
} cu_plan;

typedef struct cu_prog {
    loom_node       *nodes;
    int32_t          n_nodes;
    cu_plan         *plan;
    int32_t          max_t;      /* largest step (rows of the dynamic tensors) */
    bool             needs_pos;  /* has rope or gqa_attn */
    int32_t         *d_step;     /* device [2 * max_t]: pos[0..T), then seq[0..T) */
    int32_t         *h_step;     /* pinned staging of the same */
    cudaEvent_t      step_done;  /* the last upload from h_step has been read */
    bool             step_pending;
    float           *scratch;    /* split-K partials (gqa_attn) */
    void            *xh;         /* the prefill GEMMs' x rounded to f16 (cu_xh) */
    size_t           xh_bytes;
    int             *counters;   /* device: [n_nodes] fused GEMV + rmsnorm arrivals, then split attention's */
    size_t           scratch_floats;
    cudaGraphExec_t *graphs;     /* [graph_max_t + 1], by n_tokens */
    int32_t          n_graphs;
    bool             graphs_off; /* a capture failed: launch directly from now on */
    struct cu_prog  *prev, *next;
} cu_prog;

static inline void *tdata(const loom_tensor *t) { return t ? (char *)t->buf->ptr + t->offset : NULL; }

static int attn_args(const cu_dev *d, const loom_node *n, int T, const cu_prog *p, cu_attn_args *a)
{
    loom_tensor *const *s = n->src;
    *a = (cu_attn_args){
        .q = tdata(s[0]), .k = tdata(s[1]), .v = tdata(s[2]), .kc = tdata(s[3]), .vc = tdata(s[4]),
        .cache_f16 = s[3]->dtype == LOOM_F16, .y = tdata(n->dst), .T = T, .S = (int)s[3]->shape[0],
        .C = (int)s[3]->shape[2], .Hq = n->p.n_head, .Hkv = n->p.n_head_kv, .hd = n->p.head_dim,
        .scale = n->p.attn_scale > 0 ? n->p.attn_scale : (float)(1.0 / sqrt((double)n->p.head_dim)),
        .pos = p ? p->d_step : NULL, .seq = p ? p->d_step + T : NULL, .splits = 1, .part = p ? p->scratch : NULL,
        .counters = p && p->counters ? p->counters + p->n_nodes : NULL};
    a->splits = loom__cu_attn_splits(a, d->sm_count);
    return a->splits;
}

/* ---- release ------------------------------------------------------------------------------------ */
void loom__cu_release(void *dctx, void *progp)
{
    cu_dev *d = dctx;
    cu_prog *p = progp;
    if (!p) return;
    cudaSetDevice(d->dev);
    cudaStreamSynchronize(d->stream);
    if (p->prev) p->prev->next = p->next;
    else if (d->progs == p) d->progs = p->next;
    if (p->next) p->next->prev = p->prev;
    for (int32_t i = 0; p->graphs && i < p->n_graphs; i++)
        if (p->graphs[i]) cudaGraphExecDestroy(p->graphs[i]);
    free(p->graphs);
    for (int32_t i = 0; p->plan && i < p->n_nodes; i++) cudaFree(p->plan[i].inv_freq);
    free(p->plan);
    cudaFree(p->d_step);
    cudaFreeHost(p->h_step);
    if (p->step_done) cudaEventDestroy(p->step_done);
    cudaFree(p->scratch);
    cudaFree(p->xh);
    cudaFree(p->counters);
    cudaGetLastError();
    free(p);
}

/* ---- decode fusion ----------------------------------------------------------------------------------- */
static size_t tbytes(const loom_tensor *t)
{
    size_t n = t->dtype == LOOM_F32 ? 4 : 2;
    for (int32_t i = 0; i < t->ndim; i++) n *= (size_t)t->shape[i];
    return n;
}

static bool overlap(const loom_tensor *a, const loom_tensor *b)
{
    return a->buf == b->buf && a->offset < b->offset + tbytes(b) && b->offset < a->offset + tbytes(a);
}

/* How many times the nodes from index `from` on read t. */
static int uses(const loom_node *nodes, int32_t n_nodes, const loom_tensor *t, int32_t from)
{
    int n = 0;
    for (int32_t i = from; i < n_nodes; i++)
        for (int k = 0; k < nodes[i].n_src; k++) n += nodes[i].src[k] == t;
    return n;
}

/* t is read by exactly one node and nobody after the program: fusing may leave it unwritten. */
static bool private_to(const loom_node *nodes, int32_t n_nodes, const loom_tensor *t)
{
    return !(t->flags & LOOM_TENSOR_OUTPUT) && uses(nodes, n_nodes, t, 0) == 1;
}

/* Is t read after node i (or by the program's caller)? Then the arena keeps its bytes
 * through node i: nothing written up to there lands on them. */
static bool read_after(const loom_node *nodes, int32_t n_nodes, const loom_tensor *t, int32_t i)
{
    return (t->flags & LOOM_TENSOR_OUTPUT) || uses(nodes, n_nodes, t, i + 1) > 0;
}

static bool same_rows(const loom_tensor *a, const loom_tensor *b)
{
    return a->shape[0] == b->shape[0] && (a->flags & LOOM_TENSOR_DYNAMIC) == (b->flags & LOOM_TENSOR_DYNAMIC);
}

static bool is_awq(const loom_node *n) { return n->op == LOOM_OP_MATMUL_AWQ; }

static void gemv_add(cu_awq_gemv_args *g, const loom_node *n, const cu_awq *w)
{
    const loom_tensor *b = n->n_src > 2 ? n->src[2] : NULL;
    g->w[g->n] = w, g->bias[g->n] = tdata(b), g->bdt[g->n] = b ? (int)b->dtype : LOOM_F32, g->y[g->n] = tdata(n->dst);
    g->n++;
}

/* Before the leads are planned: reserve each rmsnorm whose output only the AWQ matmuls right
 * after it read (q, k, v; gate, up). Their lead normalises x as it stages it, so the launch
 * before needs no last-block rmsnorm (a serial tail of the o and down GEMVs). */
static void reserve_xnorm(const loom_node *nodes, int32_t n_nodes, cu_plan *plan)
{
    for (int32_t k = 0; k + 1 < n_nodes; k++) {
        const loom_node *c = &nodes[k];
        if (c->op != LOOM_OP_RMSNORM || (c->dst->flags & LOOM_TENSOR_OUTPUT) || !same_rows(c->src[0], c->dst) ||
            c->dst->shape[1] > CU_AWQ_XNORM_MAX_K)
            continue;
        int readers = uses(nodes, n_nodes, c->dst, 0), j = k + 1;
        while (j < n_nodes && j <= k + readers && is_awq(&nodes[j]) && nodes[j].src[0] == c->dst) j++;
        if (readers > 0 && j == k + 1 + readers) plan[k].fuse = FUSE_MEMBER, plan[k + 1].xnorm = readers;
    }
}

/* After: the lead at i takes the reserved rmsnorm at i - 1 on load if it fused every reader of
 * the norm's output and the norm's input outlives the lead's members; else the norm runs. */
static void take_xnorm(const loom_node *nodes, int32_t n_nodes, cu_plan *plan, int32_t i)
{
    cu_plan *pl = &plan[i];
    const loom_node *c = &nodes[i - 1];
    int32_t last = i;
    while (last + 1 < n_nodes && plan[last + 1].fuse == FUSE_MEMBER) last++;
    int fused = pl->gemv.epi == CU_EPI_SWIGLU ? 2 : pl->gemv.n;
    if (pl->fuse != FUSE_MEMBER && fused == pl->xnorm && read_after(nodes, n_nodes, c->src[0], last)) {
        pl->gemv.x = tdata(c->src[0]), pl->gemv.xnorm_w = tdata(c->src[1]);
        pl->gemv.xnorm_wdt = (int)c->src[1]->dtype, pl->gemv.xnorm_eps = c->p.eps;
        pl->fuse = FUSE_LEAD; /* a lone matmul too: it now computes the norm's node */
    } else {
        plan[i - 1].fuse = FUSE_NONE, pl->xnorm = 0;
    }
}

/* Fused writes happen at the lead node, earlier than the nodes they replace:
 * a fused output must not share memory with x, which the lead still reads
 * (the arena may hand x's bytes to a tensor born after x's last reader). */
static void plan_gemv(const loom_node *nodes, int32_t n_nodes, cu_plan *plan, int *counters, int ring, int late)
{
    bool fuse = !loom_env_is("LOOM_CUDA_FUSE", "0"); /* every node on its own (to isolate a fusion bug) */
    /* LOOM_CUDA_XNORM=0: rmsnorm by the last block of the launch before */
    if (fuse && !loom_env_is("LOOM_CUDA_XNORM", "0")) reserve_xnorm(nodes, n_nodes, plan);
    /* LOOM_CUDA_XSTAGE=block: x staged once per block, not per warp (A/B) */
    int x_place = loom_env_is("LOOM_CUDA_XSTAGE", "block") ? CU_X_BLOCK : CU_X_AUTO;
    int grid = loom_env_is("LOOM_CUDA_AWQ_LOOP", "0") ? -1 : 0; /* one block per block of work (A/B) */
    for (int32_t i = 0; i < n_nodes; i++) {
        const loom_node *a = &nodes[i];
        if (!is_awq(a)) continue;
        cu_plan *pl = &plan[i];
        const loom_tensor *x = a->src[0];
        pl->gemv = (cu_awq_gemv_args){.x = tdata(x), .epi = CU_EPI_PLAIN, .x_place = x_place, .grid = grid, .ring = ring};
        gemv_add(&pl->gemv, a, pl->awq);
        if (!fuse) continue;
        const loom_node *b = i + 1 < n_nodes ? &nodes[i + 1] : NULL, *c = i + 2 < n_nodes ? &nodes[i + 2] : NULL;
        /* gate, up, swiglu */
        if (b && c && is_awq(b) && b->src[0] == x && b->src[1]->shape[1] == a->src[1]->shape[1] &&
            c->op == LOOM_OP_SWIGLU && c->src[0] == a->dst && c->src[1] == b->dst && same_rows(a->dst, c->dst) &&
            private_to(nodes, n_nodes, a->dst) && private_to(nodes, n_nodes, b->dst) && !overlap(c->dst, x)) {
            gemv_add(&pl->gemv, b, plan[i + 1].awq);
            pl->gemv.epi = CU_EPI_SWIGLU, pl->gemv.y[0] = tdata(c->dst);
            pl->fuse = FUSE_LEAD, plan[i + 1].fuse = plan[i + 2].fuse = FUSE_MEMBER;
            i += 2;
            continue;
        }
        /* matmul, then the residual add of its result (then the rmsnorm of that sum, unless the
         * next lead takes it on load, by the block that finishes last: every read of x is over
         * by then) */
        if (b && b->op == LOOM_OP_ADD && (b->src[0] == a->dst) != (b->src[1] == a->dst) && same_rows(a->dst, b->dst) &&
            private_to(nodes, n_nodes, a->dst) && !overlap(b->dst, x)) {
            const loom_tensor *r = b->src[0] == a->dst ? b->src[1] : b->src[0];
            if (!overlap(b->dst, r) || (r->buf == b->dst->buf && r->offset == b->dst->offset)) {
                pl->gemv.epi = CU_EPI_ADD, pl->gemv.r = tdata(r), pl->gemv.y[0] = tdata(b->dst);
                pl->fuse = FUSE_LEAD, plan[i + 1].fuse = FUSE_MEMBER;
                if (c && c->op == LOOM_OP_RMSNORM && plan[i + 2].fuse == FUSE_NONE && c->src[0] == b->dst &&
                    same_rows(b->dst, c->dst) && !overlap(c->dst, b->dst) && !overlap(c->dst, r)) {
                    pl->gemv.norm_w = tdata(c->src[1]), pl->gemv.norm_wdt = (int)c->src[1]->dtype;
                    pl->gemv.norm_eps = c->p.eps, pl->gemv.norm_y = tdata(c->dst), pl->gemv.counter = counters + i;
                    plan[i + 2].fuse = FUSE_MEMBER;
                    i += 1;
                }
                i += 1;
                continue;
            }
        }
        /* matmuls sharing x (q, k, v), then the RoPE of any of their results */
        int32_t j = i + 1;
        while (j < n_nodes && j < i + CU_GEMV_MAX_W && is_awq(&nodes[j]) && nodes[j].src[0] == x &&
               same_rows(a->dst, nodes[j].dst) && !overlap(nodes[j].dst, x))
            gemv_add(&pl->gemv, &nodes[j], plan[j].awq), plan[j].fuse = FUSE_MEMBER, j++;
        for (; j < n_nodes && nodes[j].op == LOOM_OP_ROPE; j++) {
            const loom_node *rn = &nodes[j];
            int w = 0;
            while (w < pl->gemv.n && pl->gemv.y[w] != tdata(rn->src[0])) w++;
            int32_t hd = rn->p.head_dim;
            if (w == pl->gemv.n || pl->gemv.rope_freq[w] || hd % 32 || rn->src[0]->shape[1] % hd ||
                !same_rows(rn->src[0], rn->dst) || !private_to(nodes, n_nodes, rn->src[0]) || overlap(rn->dst, x))
                break;
            pl->gemv.y[w] = tdata(rn->dst), pl->gemv.rope_freq[w] = plan[j].inv_freq;
            pl->gemv.rope_mscale[w] = plan[j].mscale, pl->gemv.rope_hd[w] = hd;
            plan[j].fuse = FUSE_MEMBER;
        }
        /* ... and the store of k and v into the caches that gqa_attn would do first */
        if (j < n_nodes && nodes[j].op == LOOM_OP_GQA_ATTN && nodes[j].src[3]->dtype == nodes[j].src[4]->dtype) {
            const loom_node *at = &nodes[j];
            int wk = 0, wv = 0;
            while (wk < pl->gemv.n && pl->gemv.y[wk] != tdata(at->src[1])) wk++;
            while (wv < pl->gemv.n && pl->gemv.y[wv] != tdata(at->src[2])) wv++;
            if (wk < pl->gemv.n && wv < pl->gemv.n && wk != wv) {
                pl->gemv.cache[wk] = tdata(at->src[3]), pl->gemv.cache[wv] = tdata(at->src[4]);
                pl->gemv.cache_f16 = at->src[3]->dtype == LOOM_F16, pl->gemv.cache_hd = at->p.head_dim;
                pl->gemv.cache_C = (int)at->src[3]->shape[2];
                plan[j].kv_stored = true;
            }
        }
        if (j > i + 1) pl->fuse = FUSE_LEAD;
        i = j - 1;
    }
    for (int32_t i = 0; i < n_nodes; i++)
        if (plan[i].xnorm) take_xnorm(nodes, n_nodes, plan, i);
    /* Which launches let the kernel after them start only once their blocks' sums are done
     * (pdl_late) rather than as they start. An early dependent's blocks slow the kernel they wait
     * on, and pay for that only where they have weights to fetch before their wait: down, after
     * gate/up, does; o, after decode attention, where its weight is 6.4 MB (7B) and not where it is
     * 0.4 MB (0.5B). H100, AWQ decode, median step (docs/PERF.md), 0.5B and 7B: as they start
     * 0.80-0.82 and 2.43-2.48 ms; all GEMVs late 0.78 and 2.40-2.42; all but gate/up 0.77-0.79 and
     * 2.39-2.42; that and attention 0.74-0.75 and 2.42-2.43. LOOM_CUDA_PDL_LATE=mask overrides
     * (A/B): bit 1 q/k/v (PLAIN), 2 gate/up (SWIGLU), 4 o and down (ADD), 8 decode attention. */
    for (int32_t i = 0; i < n_nodes; i++) {
        if (is_awq(&nodes[i])) {
            cu_awq_gemv_args *g = &plan[i].gemv;
            const int bit = g->epi == CU_EPI_PLAIN ? 1 : g->epi == CU_EPI_SWIGLU ? 2 : 4;
            g->pdl_late = late >= 0 ? (late & bit) != 0 : g->epi != CU_EPI_SWIGLU;
        } else if (nodes[i].op == LOOM_OP_GQA_ATTN) {
            size_t next = 0; /* the weight bytes of the GEMV after */
            for (int w = 0; i + 1 < n_nodes && is_awq(&nodes[i + 1]) && w < plan[i + 1].gemv.n; w++)
                next += (size_t)(plan[i + 1].gemv.w[w]->K * plan[i + 1].gemv.w[w]->N / 2);
            plan[i].attn_late = late >= 0 ? (late & 8) != 0 : next < CU_ATTN_LATE_BYTES;
        }
    }
    /* gate/up hands down its rows as f16, rounded as down's staging rounds them (results
     * unchanged): each of down's blocks stages half the bytes, in one round trip */
    const bool f16_rows = !loom_env_is("LOOM_CUDA_F16_ROWS", "0"); /* 0: as f32 (A/B) */
    for (int32_t i = 0; fuse && f16_rows && i + 3 < n_nodes; i++) {
        cu_plan *g = &plan[i], *dn = &plan[i + 3];
        const loom_tensor *h = nodes[i + 2].dst;
        if (g->fuse == FUSE_LEAD && g->gemv.epi == CU_EPI_SWIGLU && nodes[i + 2].op == LOOM_OP_SWIGLU &&
            is_awq(&nodes[i + 3]) && nodes[i + 3].src[0] == h && dn->fuse != FUSE_MEMBER && !dn->gemv.xnorm_w &&
            private_to(nodes, n_nodes, h))
            g->gemv.y_f16 = dn->gemv.x_f16 = 1;
    }
}

/* A matmul of T rows that runs as a prefill GEMM (k_gemm.cu), which reads x through cu_xh; the rest
 * are GEMVs (f32 weights: any T). */
static bool runs_as_gemm(const loom_node *n, int T)
{
    return T > CU_GEMV_MAX_T && (n->op == LOOM_OP_MATMUL_AWQ || (n->op == LOOM_OP_MATMUL && n->src[1]->dtype != LOOM_F32));
}

/* ---- compile ------------------------------------------------------------------------------------- */
loom_status loom__cu_compile(void *dctx, loom_node *nodes, int32_t n_nodes, void **progp)
{
    cu_dev *d = dctx;
    *progp = NULL;
    loom_status st = loom__cu_use(d);
    if (st) return st;
    cu_prog *p = calloc(1, sizeof *p);
    if (!p) return CU_ERR(LOOM_ERR_NOMEM, "cuda: out of memory compiling");
    p->nodes = nodes;
    p->n_nodes = n_nodes;
    p->next = d->progs;
    if (d->progs) d->progs->prev = p;
    d->progs = p;
    cudaError_t e;
    if (n_nodes > 0 && !(p->plan = calloc((size_t)n_nodes, sizeof *p->plan))) {
        st = CU_ERR(LOOM_ERR_NOMEM, "cuda: out of memory compiling");
        goto fail;
    }
    p->max_t = 1;
    size_t need = 0, attn_counters = 0, xh_need = 0;
    for (int32_t i = 0; i < n_nodes; i++) {
        loom_node *n = &nodes[i];
        cu_plan *pl = &p->plan[i];
        const char *opn = loom_op_str(n->op);
        if (!loom__cu_supports(d, n)) {
            st = CU_ERR(LOOM_ERR_UNSUPPORTED, "cuda: node %d (%s) has operands this backend does not take", (int)i, opn);
            goto fail;
        }
        for (int k = 0; k <= n->n_src; k++) {
            const loom_tensor *t = k < n->n_src ? n->src[k] : n->dst;
            if (t && !t->buf) {
                st = CU_ERR(LOOM_ERR_INVALID, "cuda: node %d (%s): tensor '%s' has no buffer", (int)i, opn,
                            t->name ? t->name : "?");
                goto fail;
            }
        }
        int32_t T = (int32_t)n->dst->shape[0];
        if (T > p->max_t) p->max_t = T;
        int32_t Tdec = T < CU_GEMV_MAX_T ? T : CU_GEMV_MAX_T; /* largest step the decode kernels see */
        if (runs_as_gemm(n, T)) {
            int64_t K = n->op == LOOM_OP_MATMUL ? n->src[1]->shape[1] : n->src[1]->shape[0];
            size_t b = loom__cu_gemm_xh_bytes(n->src[1]->dtype, T, K);
            if (b > xh_need) xh_need = b;
        }
        switch (n->op) {
        case LOOM_OP_ROPE: {
            int32_t h2 = n->p.head_dim / 2;
            double *tab = malloc((size_t)h2 * sizeof *tab);
            if (!tab) {
                st = CU_ERR(LOOM_ERR_NOMEM, "cuda: out of memory compiling");
                goto fail;
            }
            for (int32_t k = 0; k < h2; k++) tab[k] = loom_rope_inv_freq(&n->p, k);
            pl->mscale = loom_rope_mscale(&n->p);
            st = loom__cu_malloc(d, (size_t)h2 * sizeof *tab, (void **)&pl->inv_freq, "a RoPE table");
            if (!st && (e = cudaMemcpy(pl->inv_freq, tab, (size_t)h2 * sizeof *tab, cudaMemcpyHostToDevice)))
                st = loom__cu_fail(d, e, "uploading a RoPE table");
            free(tab);
            if (st) goto fail;
            p->needs_pos = true;
            break;
        }
        case LOOM_OP_MATMUL_AWQ: {
            const loom_tensor *w = n->src[1];
            const cu_awq *a = w->extra;
            if (!a || a->magic != CU_AWQ_MAGIC || a->K != w->shape[0] || a->N != w->shape[1]) {
                st = CU_ERR(LOOM_ERR_UNSUPPORTED, "cuda: node %d: AWQ weight '%s' was not prepared by this backend",
                            (int)i, w->name ? w->name : "?");
                goto fail;
            }
            pl->awq = a;
            break;
        }
        case LOOM_OP_GQA_ATTN:
            for (int32_t t = 1; t <= Tdec; t++) {
                cu_attn_args a;
                int splits = attn_args(d, n, t, NULL, &a);
                size_t f = loom__cu_attn_part_floats(t, a.Hq, a.hd, splits);
                if (f > need) need = f;
            }
            if ((size_t)CU_ATTN_COUNTERS(n->p.n_head_kv) > attn_counters) attn_counters = CU_ATTN_COUNTERS(n->p.n_head_kv);
            p->needs_pos = true;
            break;
        default: break;
        }
    }
    if (need && (st = loom__cu_malloc(d, need * sizeof(float), (void **)&p->scratch, "split-K scratch"))) goto fail;
    p->scratch_floats = need;
    if (xh_need && (st = loom__cu_malloc(d, xh_need, &p->xh, "the prefill GEMMs' f16 x"))) goto fail;
    p->xh_bytes = xh_need;
    if ((st = loom__cu_malloc(d, 2 * (size_t)p->max_t * sizeof(int32_t), (void **)&p->d_step, "the step buffer")))
        goto fail;
    if ((e = cudaMallocHost((void **)&p->h_step, 2 * (size_t)p->max_t * sizeof(int32_t))) ||
        (e = cudaEventCreateWithFlags(&p->step_done, cudaEventDisableTiming))) {
        st = loom__cu_fail(d, e, "allocating the step staging");
        goto fail;
    }
    /* arrival counters, each launch leaves them at zero: one per node for the fused GEMV + rmsnorm,
     * then the split attention's (shared by its nodes: they run one after another) */
    size_t n_counters = (size_t)n_nodes + attn_counters;
    if (n_counters > 0) {
        if ((st = loom__cu_malloc(d, n_counters * sizeof(int), (void **)&p->counters, "arrival counters"))) goto fail;
        if ((e = cudaMemset(p->counters, 0, n_counters * sizeof(int)))) {
            st = loom__cu_fail(d, e, "clearing the arrival counters");
            goto fail;
        }
    }
    long ring = 0; /* LOOM_CUDA_AWQ_RING=2..4: each warp's weight ring that deep (A/B); 0 the kernels' own */
    if (!loom_env_long("LOOM_CUDA_AWQ_RING", 2, 4, 0, &ring)) {
        st = CU_ERR(LOOM_ERR_INVALID, "cuda: LOOM_CUDA_AWQ_RING='%s': 2, 3 or 4", getenv("LOOM_CUDA_AWQ_RING"));
        goto fail;
    }
    long late = -1; /* LOOM_CUDA_PDL_LATE=0..15: which launches trigger their dependents late (plan_gemv; A/B) */
    if (!loom_env_long("LOOM_CUDA_PDL_LATE", 0, 15, -1, &late)) {
        st = CU_ERR(LOOM_ERR_INVALID, "cuda: LOOM_CUDA_PDL_LATE='%s': a mask 0..15", getenv("LOOM_CUDA_PDL_LATE"));
        goto fail;
    }
    plan_gemv(nodes, n_nodes, p->plan, p->counters, (int)ring, (int)late);
    p->n_graphs = (d->graph_max_t < p->max_t ? d->graph_max_t : p->max_t) + 1;
    if (!(p->graphs = calloc((size_t)p->n_graphs, sizeof *p->graphs))) {
        st = CU_ERR(LOOM_ERR_NOMEM, "cuda: out of memory compiling");
        goto fail;
    }
    int leads = 0, members = 0;
    for (int32_t i = 0; i < n_nodes; i++) leads += p->plan[i].fuse == FUSE_LEAD, members += p->plan[i].fuse == FUSE_MEMBER;
    CU_LOG(LOOM_LOG_DEBUG, "cuda:%d: compiled %d nodes, max %d tokens, scratch %.1f MiB; decode fuses %d nodes into %d launches",
           d->dev, (int)n_nodes, (int)p->max_t, need * 4.0 / 1048576.0, leads + members, leads);
    *progp = p;
    return LOOM_OK;
fail:
    loom__cu_release(d, p);
    return st;
}

/* ---- launching one step's kernels ------------------------------------------------------------------- */
static int rows_of(const loom_node *n, int32_t n_tokens)
{
    return (n->dst->flags & LOOM_TENSOR_DYNAMIC) ? n_tokens : (int)n->dst->shape[0];
}

/* The prefill GEMM of node i, T rows, in one launch with the nodes right after it that multiply
 * the same x tensor by weights of the same kind (q, k, v; gate, up): *ran is how many nodes. */
static cudaError_t run_gemm(cu_dev *d, cu_prog *p, int32_t i, int32_t n_tokens, cu_xh *xh, int *ran)
{
    const loom_node *n = &p->nodes[i];
    const bool awq = n->op == LOOM_OP_MATMUL_AWQ;
    const int wdt = awq ? LOOM_Q4_AWQ : (int)n->src[1]->dtype, T = rows_of(n, n_tokens);
    const int64_t K = awq ? n->src[1]->shape[0] : n->src[1]->shape[1];
    cu_gemm_w w[CU_GEMM_MAX_W];
    int m = 0;
    for (int32_t j = i; j < p->n_nodes && m < CU_GEMM_MAX_W; j++, m++) {
        const loom_node *o = &p->nodes[j];
        const loom_tensor *wt = o->src[1], *bias = o->n_src > 2 ? o->src[2] : NULL;
        if (j > i && (o->op != n->op || wt->dtype != n->src[1]->dtype || o->src[0] != n->src[0] ||
                      rows_of(o, n_tokens) != T || (awq ? wt->shape[0] : wt->shape[1]) != K))
            break;
        w[m] = (cu_gemm_w){.w = tdata(wt), .awq = awq ? p->plan[j].awq : NULL, .bias = tdata(bias),
                           .bdt = bias ? (int)bias->dtype : LOOM_F32, .y = tdata(o->dst),
                           .N = awq ? wt->shape[1] : wt->shape[0]};
    }
    *ran = m;
    return loom__cu_gemm(d->stream, tdata(n->src[0]), wdt, w, m, T, K, xh, d->sm_count);
}

static loom_status run_nodes(cu_dev *d, cu_prog *p, int32_t n_tokens)
{
    cudaStream_t s = d->stream;
    cu_xh xh = {.p = p->xh, .bytes = p->xh_bytes};
    for (int32_t i = 0; i < p->n_nodes; i++) {
        const loom_node *n = &p->nodes[i];
        const cu_plan *pl = &p->plan[i];
        loom_tensor *const *src = n->src;
        const loom_tensor *dst = n->dst;
        int T = rows_of(n, n_tokens), ran = 1; /* ran: nodes this launch computed */
        /* the rounded x carries over from one GEMM to the next only (the GEMM launchers drop it
         * when they write over it); any other node may write where that x was */
        if (!runs_as_gemm(n, T)) xh.x = NULL;
        float *y = tdata(dst);
        const loom_tensor *bias = n->n_src > 2 ? src[2] : NULL;
        int bdt = bias ? (int)bias->dtype : LOOM_F32;
        cudaError_t e = cudaSuccess;
        if (pl->fuse == FUSE_MEMBER && T <= CU_GEMV_MAX_T) continue; /* its lead computed it */
        switch (n->op) {
        case LOOM_OP_EMBED:
            e = loom__cu_embed(s, tdata(src[0]), src[0]->dtype, src[0]->shape[0], src[0]->shape[1], tdata(src[1]), y, T,
                               d->d_err);
            break;
        case LOOM_OP_RMSNORM:
            e = loom__cu_rmsnorm(s, tdata(src[0]), tdata(src[1]), src[1]->dtype, n->p.eps, y, T, src[0]->shape[1]);
            break;
        case LOOM_OP_MATMUL:
            if (!runs_as_gemm(n, T)) {
                e = loom__cu_gemv(s, tdata(src[0]), tdata(src[1]), src[1]->dtype, tdata(bias), bdt, y, T,
                                  src[1]->shape[1], src[1]->shape[0], d->sm_count);
            } else {
                e = run_gemm(d, p, i, n_tokens, &xh, &ran);
            }
            break;
        case LOOM_OP_MATMUL_AWQ:
            if (T <= CU_GEMV_MAX_T) {
                cu_awq_gemv_args g = pl->gemv;
                g.T = T, g.pos = p->d_step, g.seq = p->d_step + T; /* the step buffer's layout */
                g.pdl = d->pdl;
                e = loom__cu_awq_gemv(s, &g, d->sm_count);
            } else {
                e = run_gemm(d, p, i, n_tokens, &xh, &ran);
            }
            break;
        case LOOM_OP_ROPE:
            e = loom__cu_rope(s, tdata(src[0]), y, T, n->p.n_head, n->p.head_dim, pl->inv_freq, pl->mscale, p->d_step);
            break;
        case LOOM_OP_GQA_ATTN: {
            cu_attn_args a;
            attn_args(d, n, T, p, &a);
            a.stored = pl->kv_stored && T <= CU_GEMV_MAX_T;
            a.pdl = d->pdl && T <= CU_GEMV_MAX_T;
            a.pdl_late = pl->attn_late;
            if (a.splits > 1 && loom__cu_attn_part_floats(T, a.Hq, a.hd, a.splits) > p->scratch_floats)
                return CU_ERR(LOOM_ERR_INTERNAL, "cuda: node %d (gqa_attn): split scratch too small", (int)i);
            e = loom__cu_gqa_attn(s, &a);
            break;
        }
        case LOOM_OP_SWIGLU:
            e = loom__cu_swiglu(s, tdata(src[0]), tdata(src[1]), y, (int64_t)T * src[0]->shape[1]);
            break;
        case LOOM_OP_ADD:
            e = loom__cu_add(s, tdata(src[0]), tdata(src[1]), y, (int64_t)T * src[0]->shape[1]);
            break;
        default:
            return CU_ERR(LOOM_ERR_UNSUPPORTED, "cuda: op %d reached execute", (int)n->op);
        }
        if (e) {
            char what[96];
            snprintf(what, sizeof what, "launching node %d (%s)", (int)i, loom_op_str(n->op));
            return loom__cu_fail(d, e, what);
        }
        i += ran - 1;
    }
    return LOOM_OK;
}

/* Capture the step of n tokens once; NULL (and graphs off for p) if capture fails. */
static cudaGraphExec_t graph_for(cu_dev *d, cu_prog *p, int32_t n_tokens)
{
    if (p->graphs[n_tokens]) return p->graphs[n_tokens];
    cudaGraph_t g = NULL;
    cudaGraphExec_t x = NULL;
    cudaError_t e = cudaStreamBeginCapture(d->stream, cudaStreamCaptureModeThreadLocal);
    loom_status st = e ? LOOM_ERR_BACKEND : run_nodes(d, p, n_tokens);
    cudaError_t e2 = e ? e : cudaStreamEndCapture(d->stream, &g);
    if (!st && !e2) e2 = cudaGraphInstantiate(&x, g, 0);
    if (g) cudaGraphDestroy(g);
    if (st || e2 || !x) {
        cudaGetLastError();
        p->graphs_off = true;
        CU_LOG(LOOM_LOG_WARN, "cuda:%d: CUDA graph capture failed (%s); launching kernels directly", d->dev,
               e2 ? cudaGetErrorString(e2) : "a launch failed");
        return NULL;
    }
    CU_LOG(LOOM_LOG_DEBUG, "cuda:%d: captured a CUDA graph for steps of %d tokens (%d nodes)", d->dev, (int)n_tokens,
           (int)p->n_nodes);
    return p->graphs[n_tokens] = x;
}

loom_status loom__cu_execute(void *dctx, void *progp, const loom_step *step)
{
    cu_dev *d = dctx;
    cu_prog *p = progp;
    if (!p || !step) return CU_ERR(LOOM_ERR_INVALID, "cuda: execute without a program or step");
    int32_t T = step->n_tokens;
    if (T < 1 || T > p->max_t)
        return CU_ERR(LOOM_ERR_INVALID, "cuda: step of %d tokens; the program takes 1..%d", (int)T, (int)p->max_t);
    loom_status st = loom__cu_use(d);
    if (st) return st;
    cudaError_t e;
    if (p->needs_pos) {
        if (!step->pos || !step->seq)
            return CU_ERR(LOOM_ERR_INVALID, "cuda: rope and gqa_attn need token positions and sequence slots");
        if (p->step_pending && (e = cudaEventSynchronize(p->step_done))) return loom__cu_fail(d, e, "a queued step failed");
        memcpy(p->h_step, step->pos, (size_t)T * sizeof(int32_t));
        memcpy(p->h_step + T, step->seq, (size_t)T * sizeof(int32_t));
        if ((e = cudaMemcpyAsync(p->d_step, p->h_step, 2 * (size_t)T * sizeof(int32_t), cudaMemcpyHostToDevice,
                                 d->stream)) ||
            (e = cudaEventRecord(p->step_done, d->stream)))
            return loom__cu_fail(d, e, "uploading the step");
        p->step_pending = true;
    }
    if (d->graphs && !p->graphs_off && T < p->n_graphs) {
        cudaGraphExec_t x = graph_for(d, p, T);
        if (x) {
            if ((e = cudaGraphLaunch(x, d->stream))) return loom__cu_fail(d, e, "launching the step's CUDA graph");
            return LOOM_OK;
        }
    }
    return run_nodes(d, p, T);
}
