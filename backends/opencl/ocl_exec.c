/* ocl_exec.c — what the OpenCL backend runs: supports(), compile (one set of
 * kernel objects per node, every argument bound except the row count), and
 * execute (upload the step's positions, slots and RoPE table, then enqueue
 * every node's kernels in order on the device's one in-order queue).
 *
 * Kernels per op (see the .cl files):
 *   embed      embed_<dt>: one work-item per output element
 *   rmsnorm    rmsnorm_<dt>: one work-group per row
 *   matmul     matmul_gemv_<dt> for <= 8 rows, matmul_gemm_<dt> (local-memory tiles) above
 *   matmul_awq awq_gemv for <= 8 rows, awq_gemm (dequantised tiles) above
 *   rope       rope, with cos/sin computed on the host in double per step
 *   gqa_attn   kv_store_<dt> (the step's k, v into the cache), then attn_<dt>
 *   swiglu/add swiglu, add */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ocl_impl.h"

#define GEMV_MAXT 8 /* as in common.cl */
#define ATT_DPT 4

typedef struct rope_tab {
    int32_t h2;       /* head_dim / 2 */
    double *inv_freq; /* [h2] */
    double  mscale;
    loom_op_params p; /* what it was made from (tables are shared by equal params) */
} rope_tab;

typedef struct knode {
    loom_node *n;
    cl_kernel  k[2]; /* matmul: gemv, gemm; gqa_attn: kv_store, attn; otherwise k[0] */
    int32_t    tab;  /* rope: its table */
} knode;

typedef struct ocl_prog {
    knode           *kn;
    int32_t          n;
    int32_t          max_t;      /* most rows of any node */
    bool             uses_step;  /* gqa_attn: positions and slots on the device */
    cl_mem           step;       /* int [2 * max_t]: pos, then seq */
    rope_tab        *tabs;
    int32_t          n_tabs;
    int32_t          h2_max;
    cl_mem           rope;       /* float [n_tabs][max_t][h2_max][2] */
    float           *rope_host;
    struct ocl_prog *prev, *next;
} ocl_prog;

static const char *dt_sfx(loom_dtype dt) { return dt == LOOM_F32 ? "f32" : dt == LOOM_F16 ? "f16" : "bf16"; }

static size_t esize(loom_dtype dt) { return dt == LOOM_F16 || dt == LOOM_BF16 ? 2 : 4; }

/* ---- supports --------------------------------------------------------------------- */
static bool fits_int(int64_t v) { return v > 0 && v < (1ll << 31); }

static bool is_act(const loom_tensor *t, int64_t cols)
{
    return t && t->dtype == LOOM_F32 && t->ndim == 2 && fits_int(t->shape[0]) && fits_int(t->shape[1]) &&
           (cols < 0 || t->shape[1] == cols);
}

static bool is_float(const loom_tensor *t)
{
    return t && (t->dtype == LOOM_F32 || t->dtype == LOOM_F16 || t->dtype == LOOM_BF16);
}

static bool opt_vec(const loom_node *n, int s, int64_t len)
{
    const loom_tensor *t = n->n_src > s ? n->src[s] : NULL;
    return !t || (is_float(t) && t->ndim == 1 && t->shape[0] == len);
}

bool loom__ocl_supports(ocl_dev *d, const loom_node *n)
{
    loom_tensor *const *s = n->src;
    const loom_tensor *y = n->dst;
    const loom_op_params *p = &n->p;
    if (!is_act(y, -1) || n->n_src < 1 || n->n_src > LOOM_MAX_SRC) return false;
    int64_t cols = y->shape[1];
    switch (n->op) {
    case LOOM_OP_EMBED:
        return n->n_src >= 2 && is_float(s[0]) && s[0]->ndim == 2 && fits_int(s[0]->shape[0]) &&
               s[0]->shape[1] == cols && s[1] && s[1]->dtype == LOOM_I32 && s[1]->ndim == 1;
    case LOOM_OP_RMSNORM:
        return n->n_src >= 2 && is_act(s[0], cols) && is_float(s[1]) && s[1]->ndim == 1 && s[1]->shape[0] == cols;
    case LOOM_OP_MATMUL:
        return n->n_src >= 2 && is_act(s[0], -1) && is_float(s[1]) && s[1]->ndim == 2 && s[1]->shape[0] == cols &&
               s[1]->shape[1] == s[0]->shape[1] && opt_vec(n, 2, cols);
    case LOOM_OP_MATMUL_AWQ:
        return n->n_src >= 2 && is_act(s[0], -1) && s[1] && s[1]->dtype == LOOM_Q4_AWQ && s[1]->ndim == 2 &&
               s[1]->shape[0] == s[0]->shape[1] && s[1]->shape[1] == cols && s[1]->shape[0] % LOOM_AWQ_GROUP == 0 &&
               s[1]->shape[1] % 8 == 0 && opt_vec(n, 2, cols);
    case LOOM_OP_ROPE:
        return is_act(s[0], cols) && p->head_dim > 0 && p->head_dim % 2 == 0 && p->n_head > 0 &&
               (int64_t)p->n_head * p->head_dim == cols;
    case LOOM_OP_GQA_ATTN: {
        int64_t hd = p->head_dim;
        if (n->n_src < 5 || hd <= 0 || hd % 2 || hd > (int64_t)d->cfg.att_w * ATT_DPT || p->n_head <= 0 ||
            p->n_head_kv <= 0 || p->n_head % p->n_head_kv)
            return false;
        if (!is_act(s[0], p->n_head * hd) || !is_act(s[1], p->n_head_kv * hd) || !is_act(s[2], p->n_head_kv * hd) ||
            cols != p->n_head * hd)
            return false;
        for (int i = 3; i < 5; i++)
            if (!s[i] || (s[i]->dtype != LOOM_F16 && s[i]->dtype != LOOM_F32) || s[i]->ndim != 4 ||
                s[i]->shape[1] != p->n_head_kv || s[i]->shape[3] != hd || !fits_int(s[i]->shape[0]) ||
                !fits_int(s[i]->shape[2]))
                return false;
        return s[3]->dtype == s[4]->dtype && s[3]->shape[0] == s[4]->shape[0] && s[3]->shape[2] == s[4]->shape[2];
    }
    case LOOM_OP_SWIGLU:
    case LOOM_OP_ADD:
        return n->n_src >= 2 && is_act(s[0], cols) && is_act(s[1], cols);
    default:
        return false;
    }
}

/* ---- compile ---------------------------------------------------------------------- */
/* Bind arguments from index `first` on: m cl_mem, l ulong, i int, f float. */
static cl_int set_args(cl_kernel k, cl_uint first, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cl_int rc = CL_SUCCESS;
    for (cl_uint i = first; *fmt && rc == CL_SUCCESS; fmt++, i++) {
        switch (*fmt) {
        case 'm': { cl_mem m = va_arg(ap, cl_mem); rc = clSetKernelArg(k, i, sizeof m, &m); break; }
        case 'l': { cl_ulong v = va_arg(ap, cl_ulong); rc = clSetKernelArg(k, i, sizeof v, &v); break; }
        case 'i': { cl_int v = va_arg(ap, int); rc = clSetKernelArg(k, i, sizeof v, &v); break; }
        case 'f': { cl_float v = (cl_float)va_arg(ap, double); rc = clSetKernelArg(k, i, sizeof v, &v); break; }
        default: rc = CL_INVALID_ARG_VALUE;
        }
    }
    va_end(ap);
    return rc;
}

static cl_mem MEM(const loom_tensor *t) { return t->buf->mem; }
static cl_ulong OFF(const loom_tensor *t) { return (cl_ulong)(t->offset / (t->dtype == LOOM_Q4_AWQ ? 4 : esize(t->dtype))); }

void loom__ocl_release(ocl_dev *d, void *pv)
{
    ocl_prog *p = pv;
    if (!p) return;
    OCL_UNLINK(d->progs, p);
    for (int32_t i = 0; p->kn && i < p->n; i++)
        for (int j = 0; j < 2; j++)
            if (p->kn[i].k[j]) clReleaseKernel(p->kn[i].k[j]);
    for (int32_t i = 0; i < p->n_tabs; i++) free(p->tabs[i].inv_freq);
    if (p->step) clReleaseMemObject(p->step);
    if (p->rope) clReleaseMemObject(p->rope);
    free(p->rope_host);
    free(p->tabs);
    free(p->kn);
    free(p);
}

static loom_status kernel(ocl_dev *d, const char *base, const char *sfx, cl_kernel *out)
{
    char name[64];
    snprintf(name, sizeof name, sfx ? "%s_%s" : "%s", base, sfx);
    cl_int rc;
    *out = clCreateKernel(d->program, name, &rc);
    if (rc != CL_SUCCESS) return loom__ocl_fail(rc, "clCreateKernel", name);
    return LOOM_OK;
}

static bool same_rope(const loom_op_params *a, const loom_op_params *b)
{
    return a->head_dim == b->head_dim && a->rope_theta == b->rope_theta && a->yarn_factor == b->yarn_factor &&
           a->yarn_orig_ctx == b->yarn_orig_ctx && a->yarn_beta_fast == b->yarn_beta_fast &&
           a->yarn_beta_slow == b->yarn_beta_slow;
}

static loom_status add_rope_tab(ocl_prog *p, const loom_op_params *prm, int32_t *idx)
{
    for (int32_t i = 0; i < p->n_tabs; i++)
        if (same_rope(&p->tabs[i].p, prm)) return *idx = i, LOOM_OK;
    rope_tab *g = realloc(p->tabs, (size_t)(p->n_tabs + 1) * sizeof *g);
    if (!g) return OCL_FAIL(LOOM_ERR_NOMEM, "out of memory compiling");
    p->tabs = g;
    rope_tab *t = &p->tabs[p->n_tabs];
    memset(t, 0, sizeof *t);
    t->h2 = prm->head_dim / 2;
    t->p = *prm;
    if (!(t->inv_freq = malloc((size_t)t->h2 * sizeof *t->inv_freq))) return OCL_FAIL(LOOM_ERR_NOMEM, "out of memory compiling");
    for (int32_t i = 0; i < t->h2; i++) t->inv_freq[i] = loom_rope_inv_freq(prm, i);
    t->mscale = loom_rope_mscale(prm);
    if (t->h2 > p->h2_max) p->h2_max = t->h2;
    *idx = p->n_tabs++;
    return LOOM_OK;
}

/* Every tensor of the node has a buffer, and an offset that is a whole number
 * of its elements (the kernels index elements). */
static loom_status check_placed(const loom_node *n, int32_t i)
{
    for (int s = -1; s < n->n_src; s++) {
        const loom_tensor *t = s < 0 ? n->dst : n->src[s];
        if (!t) continue;
        size_t es = t->dtype == LOOM_Q4_AWQ ? 4 : esize(t->dtype);
        if (!t->buf) return OCL_FAIL(LOOM_ERR_INVALID, "node %d (%s): tensor '%s' has no buffer", (int)i, loom_op_str(n->op), t->name ? t->name : "?");
        if (t->offset % es)
            return OCL_FAIL(LOOM_ERR_UNSUPPORTED, "node %d (%s): tensor '%s' sits at byte offset %zu, not a multiple of %zu",
                            (int)i, loom_op_str(n->op), t->name ? t->name : "?", t->offset, es);
    }
    return LOOM_OK;
}

static loom_status bind_node(ocl_dev *d, ocl_prog *p, knode *k, int32_t idx)
{
    loom_node *n = k->n;
    loom_tensor *const *s = n->src, *y = n->dst;
    loom_status st;
    cl_int rc = CL_SUCCESS;
    const char *name = loom_op_str(n->op);
    switch (n->op) {
    case LOOM_OP_EMBED:
        if ((st = kernel(d, "embed", dt_sfx(s[0]->dtype), &k->k[0]))) return st;
        rc = set_args(k->k[0], 0, "mlmlmliim", MEM(y), OFF(y), MEM(s[0]), OFF(s[0]), MEM(s[1]), OFF(s[1]),
                      (int)s[0]->shape[1], (int)s[0]->shape[0], d->err);
        break;
    case LOOM_OP_RMSNORM:
        if ((st = kernel(d, "rmsnorm", dt_sfx(s[1]->dtype), &k->k[0]))) return st;
        rc = set_args(k->k[0], 0, "mlmlmlif", MEM(y), OFF(y), MEM(s[0]), OFF(s[0]), MEM(s[1]), OFF(s[1]),
                      (int)y->shape[1], (double)n->p.eps);
        break;
    case LOOM_OP_MATMUL:
    case LOOM_OP_MATMUL_AWQ: {
        bool awq = n->op == LOOM_OP_MATMUL_AWQ;
        const loom_tensor *b = n->n_src > 2 ? s[2] : NULL;
        int bdt = !b ? 0 : b->dtype == LOOM_F32 ? 1 : b->dtype == LOOM_F16 ? 2 : 3;
        int K = (int)s[0]->shape[1], N = (int)y->shape[1];
        if (awq) {
            if ((st = kernel(d, "awq_gemv", NULL, &k->k[0])) || (st = kernel(d, "awq_gemm", NULL, &k->k[1]))) return st;
        } else {
            if ((st = kernel(d, "matmul_gemv", dt_sfx(s[1]->dtype), &k->k[0])) ||
                (st = kernel(d, "matmul_gemm", dt_sfx(s[1]->dtype), &k->k[1])))
                return st;
        }
        for (int j = 0; j < 2 && rc == CL_SUCCESS; j++)
            rc = set_args(k->k[j], 0, "mlmlmlmli", MEM(y), OFF(y), MEM(s[0]), OFF(s[0]), MEM(s[1]), OFF(s[1]),
                          b ? MEM(b) : d->dummy, (cl_ulong)(b ? OFF(b) : 0), bdt);
        for (int j = 0; j < 2 && rc == CL_SUCCESS; j++) rc = set_args(k->k[j], 10, "ii", K, N); /* 9: rows, per step */
        break;
    }
    case LOOM_OP_ROPE:
        if ((st = add_rope_tab(p, &n->p, &k->tab))) return st;
        if ((st = kernel(d, "rope", NULL, &k->k[0]))) return st;
        rc = set_args(k->k[0], 0, "mlml", MEM(y), OFF(y), MEM(s[0]), OFF(s[0]));
        if (rc == CL_SUCCESS) rc = set_args(k->k[0], 6, "ii", (int)n->p.n_head, (int)n->p.head_dim); /* 4, 5: table; 8: n */
        break;
    case LOOM_OP_GQA_ATTN: {
        const char *sfx = dt_sfx(s[3]->dtype);
        const loom_op_params *pp = &n->p;
        float scale = pp->attn_scale > 0 ? pp->attn_scale : (float)(1.0 / sqrt((double)pp->head_dim));
        if ((st = kernel(d, "kv_store", sfx, &k->k[0])) || (st = kernel(d, "attn", sfx, &k->k[1]))) return st;
        int C = (int)s[3]->shape[2], S = (int)s[3]->shape[0];
        rc = set_args(k->k[0], 0, "mlmlmlml", MEM(s[1]), OFF(s[1]), MEM(s[2]), OFF(s[2]), MEM(s[3]), OFF(s[3]),
                      MEM(s[4]), OFF(s[4]));
        if (rc == CL_SUCCESS) rc = set_args(k->k[0], 11, "iiii", (int)pp->n_head_kv, C, (int)pp->head_dim, S);
        if (rc == CL_SUCCESS)
            rc = set_args(k->k[1], 0, "mlmlmlml", MEM(y), OFF(y), MEM(s[0]), OFF(s[0]), MEM(s[3]), OFF(s[3]),
                          MEM(s[4]), OFF(s[4]));
        if (rc == CL_SUCCESS)
            rc = set_args(k->k[1], 10, "iiiif", (int)pp->n_head, (int)pp->n_head_kv, C, (int)pp->head_dim, (double)scale);
        p->uses_step = true; /* 8: step buffer, 9: seq offset (both kernels); kv_store 10: rows */
        break;
    }
    case LOOM_OP_SWIGLU:
    case LOOM_OP_ADD:
        if ((st = kernel(d, n->op == LOOM_OP_ADD ? "add" : "swiglu", NULL, &k->k[0]))) return st;
        rc = set_args(k->k[0], 0, "mlmlml", MEM(y), OFF(y), MEM(s[0]), OFF(s[0]), MEM(s[1]), OFF(s[1]));
        break;
    default:
        return OCL_FAIL(LOOM_ERR_UNSUPPORTED, "node %d: op %d is not supported", (int)idx, (int)n->op);
    }
    if (rc != CL_SUCCESS) {
        char what[192];
        snprintf(what, sizeof what, "binding the arguments of node %d (%s)", (int)idx, name);
        return loom__ocl_fail(rc, "clSetKernelArg", what);
    }
    return LOOM_OK;
}

static loom_status create_buffer(ocl_dev *d, size_t size, cl_mem *out, const char *what)
{
    cl_int rc;
    *out = clCreateBuffer(d->ctx, CL_MEM_READ_ONLY, size, NULL, &rc);
    if (rc != CL_SUCCESS) {
        char w[96];
        snprintf(w, sizeof w, "allocating %zu bytes of %s", size, what);
        return loom__ocl_fail(rc, "clCreateBuffer", w);
    }
    return LOOM_OK;
}

loom_status loom__ocl_compile(ocl_dev *d, loom_node *nodes, int32_t n_nodes, void **out)
{
    *out = NULL;
    ocl_prog *p = calloc(1, sizeof *p);
    if (!p) return OCL_FAIL(LOOM_ERR_NOMEM, "out of memory compiling");
    OCL_LINK(d->progs, p);
    loom_status st = LOOM_OK;
    if (n_nodes > 0 && !(p->kn = calloc((size_t)n_nodes, sizeof *p->kn))) st = OCL_FAIL(LOOM_ERR_NOMEM, "out of memory compiling");
    p->n = n_nodes;
    p->max_t = 1;
    for (int32_t i = 0; i < n_nodes && !st; i++) {
        loom_node *n = &nodes[i];
        p->kn[i].n = n;
        if (!loom__ocl_supports(d, n)) {
            st = OCL_FAIL(LOOM_ERR_UNSUPPORTED, "node %d (%s) has operand types or shapes this backend does not take",
                          (int)i, loom_op_str(n->op));
            break;
        }
        if ((st = check_placed(n, i))) break;
        if (n->dst->shape[0] > p->max_t) p->max_t = (int32_t)n->dst->shape[0];
        st = bind_node(d, p, &p->kn[i], i);
    }
    if (!st && p->uses_step) st = create_buffer(d, (size_t)p->max_t * 2 * sizeof(cl_int), &p->step, "step positions and slots");
    if (!st && p->n_tabs) {
        size_t floats = (size_t)p->n_tabs * (size_t)p->max_t * (size_t)p->h2_max * 2;
        if (!(p->rope_host = malloc(floats * sizeof(float)))) st = OCL_FAIL(LOOM_ERR_NOMEM, "out of memory compiling");
        else st = create_buffer(d, floats * sizeof(float), &p->rope, "RoPE tables");
    }
    /* bind what only now exists: the step buffer and the tables */
    for (int32_t i = 0; i < n_nodes && !st; i++) {
        knode *k = &p->kn[i];
        cl_int rc = CL_SUCCESS;
        if (k->n->op == LOOM_OP_GQA_ATTN)
            for (int j = 0; j < 2 && rc == CL_SUCCESS; j++) rc = set_args(k->k[j], 8, "mi", p->step, (int)p->max_t);
        else if (k->n->op == LOOM_OP_ROPE)
            rc = set_args(k->k[0], 4, "ml", p->rope, /* the tables are rows of one buffer */
                          (cl_ulong)k->tab * (cl_ulong)p->max_t * (cl_ulong)p->h2_max * 2);
        if (rc != CL_SUCCESS) st = loom__ocl_fail(rc, "clSetKernelArg", "binding the step buffer");
    }
    if (st) {
        loom__ocl_release(d, p);
        return st;
    }
    OCL_LOG(LOOM_LOG_DEBUG, "compiled %d nodes %s", (int)n_nodes, d->label);
    *out = p;
    return LOOM_OK;
}

/* ---- execute ----------------------------------------------------------------------
 * (LOOM_OPENCL_PROFILE=1 makes execute() wait after each node and log its time.) */
static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

/* ---- execute (enqueue) ---------------------------------------------------------------------- */
static size_t round_up(size_t v, size_t m) { return (v + m - 1) / m * m; }

static loom_status enqueue(ocl_dev *d, cl_kernel k, cl_uint dims, const size_t *global, const size_t *local,
                           int32_t idx, const char *op)
{
    cl_int rc = clEnqueueNDRangeKernel(d->queue, k, dims, NULL, global, local, 0, NULL, NULL);
    if (rc != CL_SUCCESS) {
        char what[192];
        snprintf(what, sizeof what, "running node %d (%s) %s", (int)idx, op, d->label);
        return loom__ocl_fail(rc, "clEnqueueNDRangeKernel", what);
    }
    return LOOM_OK;
}

/* The step's positions and slots, and each RoPE table's cos/sin rows (in
 * double, as the CPU backend does), uploaded into the program's buffers. */
static loom_status upload_step(ocl_dev *d, ocl_prog *p, const loom_step *step, int32_t T)
{
    if ((p->uses_step || p->n_tabs) && (!step->pos || (p->uses_step && !step->seq)))
        return OCL_FAIL(LOOM_ERR_INVALID, "rope and gqa_attn need the step's positions (and slots)");
    if (p->uses_step) {
        OCL_CHECK(clEnqueueWriteBuffer(d->queue, p->step, CL_TRUE, 0, (size_t)T * 4, step->pos, 0, NULL, NULL),
                  "(step positions)");
        OCL_CHECK(clEnqueueWriteBuffer(d->queue, p->step, CL_TRUE, (size_t)p->max_t * 4, (size_t)T * 4, step->seq, 0,
                                       NULL, NULL),
                  "(step slots)");
    }
    if (p->n_tabs) {
        size_t per = (size_t)p->max_t * (size_t)p->h2_max * 2;
        for (int32_t i = 0; i < p->n_tabs; i++) {
            const rope_tab *tb = &p->tabs[i];
            float *cs = p->rope_host + i * per;
            for (int32_t t = 0; t < T; t++)
                for (int32_t j = 0; j < tb->h2; j++) {
                    double a = (double)step->pos[t] * tb->inv_freq[j];
                    cs[((size_t)t * tb->h2 + j) * 2] = (float)(cos(a) * tb->mscale);
                    cs[((size_t)t * tb->h2 + j) * 2 + 1] = (float)(sin(a) * tb->mscale);
                }
        }
        size_t bytes = ((size_t)(p->n_tabs - 1) * per + (size_t)T * p->h2_max * 2) * sizeof(float);
        OCL_CHECK(clEnqueueWriteBuffer(d->queue, p->rope, CL_TRUE, 0, bytes, p->rope_host, 0, NULL, NULL),
                  "(RoPE tables)");
    }
    return LOOM_OK;
}

static loom_status run_node(ocl_dev *d, ocl_prog *p, knode *k, int32_t idx, int32_t T)
{
    const loom_node *n = k->n;
    const ocl_cfg *c = &d->cfg;
    const char *op = loom_op_str(n->op);
    size_t g[2], l[2];
    cl_int rc = CL_SUCCESS;
    int64_t cols = n->dst->shape[1];
    switch (n->op) {
    case LOOM_OP_EMBED:
        g[0] = round_up((size_t)cols, (size_t)c->ew_w), g[1] = (size_t)T, l[0] = (size_t)c->ew_w, l[1] = 1;
        return enqueue(d, k->k[0], 2, g, l, idx, op);
    case LOOM_OP_RMSNORM:
        g[0] = (size_t)c->red_w * (size_t)T, l[0] = (size_t)c->red_w;
        return enqueue(d, k->k[0], 1, g, l, idx, op);
    case LOOM_OP_MATMUL:
    case LOOM_OP_MATMUL_AWQ: {
        bool gemv = T <= GEMV_MAXT;
        cl_kernel kk = k->k[gemv ? 0 : 1];
        if ((rc = set_args(kk, 9, "i", (int)T)) != CL_SUCCESS) break;
        if (!gemv) {
            size_t ts = (size_t)c->gemm_ts, wi = ts / 4;
            g[0] = (((size_t)cols + ts - 1) / ts) * wi, g[1] = (((size_t)T + ts - 1) / ts) * wi, l[0] = l[1] = wi;
            return enqueue(d, kk, 2, g, l, idx, op);
        }
        if (n->op == LOOM_OP_MATMUL) {
            g[0] = (((size_t)cols + c->gemv_r - 1) / c->gemv_r) * (size_t)c->gemv_w, l[0] = (size_t)c->gemv_w;
            return enqueue(d, kk, 1, g, l, idx, op);
        }
        g[0] = round_up((size_t)cols / 8, (size_t)c->awq_x), g[1] = (size_t)c->awq_ks;
        l[0] = (size_t)c->awq_x, l[1] = (size_t)c->awq_ks;
        return enqueue(d, kk, 2, g, l, idx, op);
    }
    case LOOM_OP_ROPE: {
        size_t total = (size_t)T * (size_t)n->p.n_head * (size_t)(n->p.head_dim / 2);
        if ((rc = set_args(k->k[0], 8, "l", (cl_ulong)total)) != CL_SUCCESS) break;
        g[0] = round_up(total, (size_t)c->ew_w), l[0] = (size_t)c->ew_w;
        return enqueue(d, k->k[0], 1, g, l, idx, op);
    }
    case LOOM_OP_GQA_ATTN: {
        if ((rc = set_args(k->k[0], 10, "i", (int)T)) != CL_SUCCESS) break;
        g[0] = round_up((size_t)n->p.head_dim, (size_t)c->ew_w), g[1] = (size_t)n->p.n_head_kv;
        l[0] = (size_t)c->ew_w, l[1] = 1;
        loom_status st = enqueue(d, k->k[0], 2, g, l, idx, op);
        if (st) return st;
        g[0] = (size_t)c->att_w * (size_t)n->p.n_head, g[1] = (size_t)T, l[0] = (size_t)c->att_w, l[1] = 1;
        return enqueue(d, k->k[1], 2, g, l, idx, op);
    }
    case LOOM_OP_SWIGLU:
    case LOOM_OP_ADD: {
        size_t total = (size_t)T * (size_t)cols;
        if ((rc = set_args(k->k[0], 6, "l", (cl_ulong)total)) != CL_SUCCESS) break;
        g[0] = round_up(total, (size_t)c->ew_w), l[0] = (size_t)c->ew_w;
        return enqueue(d, k->k[0], 1, g, l, idx, op);
    }
    default:
        return OCL_FAIL(LOOM_ERR_UNSUPPORTED, "node %d: op %d reached execute", (int)idx, (int)n->op);
    }
    char what[192];
    snprintf(what, sizeof what, "node %d (%s): the step's arguments", (int)idx, op);
    return loom__ocl_fail(rc, "clSetKernelArg", what);
}

loom_status loom__ocl_execute(ocl_dev *d, void *pv, const loom_step *step)
{
    ocl_prog *p = pv;
    if (!p || !step || step->n_tokens < 1) return OCL_FAIL(LOOM_ERR_INVALID, "execute without a program or step");
    if (step->n_tokens > p->max_t)
        return OCL_FAIL(LOOM_ERR_INVALID, "step of %d tokens, the program holds %d", (int)step->n_tokens, (int)p->max_t);
    loom_status st = upload_step(d, p, step, step->n_tokens);
    for (int32_t i = 0; i < p->n && !st; i++) {
        const loom_tensor *y = p->kn[i].n->dst;
        int32_t T = (y->flags & LOOM_TENSOR_DYNAMIC) ? step->n_tokens : (int32_t)y->shape[0];
        double t0 = d->profile ? now_ms() : 0;
        st = run_node(d, p, &p->kn[i], i, T);
        if (d->profile && !st) { /* LOOM_OPENCL_PROFILE=1: wait for each node and log its time */
            clFinish(d->queue);
            OCL_LOG(LOOM_LOG_INFO, "node %d (%s '%s', %d rows): %.3f ms", (int)i, loom_op_str(p->kn[i].n->op),
                    y->name ? y->name : "?", (int)T, now_ms() - t0);
        }
    }
    return st;
}

loom_status loom__ocl_check_kernel_error(ocl_dev *d)
{
    cl_int e[4];
    OCL_CHECK(clEnqueueReadBuffer(d->queue, d->err, CL_TRUE, 0, sizeof e, e, 0, NULL, NULL), "(the error word)");
    if (!e[0]) return LOOM_OK;
    cl_int zeros[4] = {0};
    OCL_CHECK(clEnqueueWriteBuffer(d->queue, d->err, CL_TRUE, 0, sizeof zeros, zeros, 0, NULL, NULL), "(the error word)");
    if (e[0] == 1)
        return OCL_FAIL(LOOM_ERR_INVALID, "embed: token %d has id %d, outside the vocabulary 0..%d", e[1], e[2], e[3] - 1);
    return OCL_FAIL(LOOM_ERR_INTERNAL, "a kernel reported error %d (%d, %d, %d)", e[0], e[1], e[2], e[3]);
}
