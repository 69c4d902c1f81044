/* ocl_exec.c — what the OpenCL backend runs: supports(), compile (one set of
 * kernel objects per node, every argument bound except the row count), and
 * execute (upload the step's positions, slots and RoPE table, then enqueue
 * every node's kernels in order on the device's one in-order queue).
 *
 * Kernels per op (see the .cl files):
 *   embed      embed_<dt>: one work-item per output element
 *   rmsnorm    rmsnorm_<dt>: one work-group per row
 *   matmul     matmul_gemv_<dt>_<NT> for <= 8 rows (matmul_gemv_any_<dt> when K or an
 *              offset is not 16-byte aligned), matmul_gemm_<dt> (local-memory tiles) above,
 *              or for f16 weights mma_gemm_f16 when the tensor-core path is on (mma.cl)
 *   matmul_awq awq_gemv_<NT> for <= 8 rows, awq_gemm (dequantised tiles; mma_awq_gemm) above;
 *              consecutive ones reading the same x run as one launch (fuse_nodes);
 *              for <= 8 rows with the nodes around them (plan_decode: awq_gemv(_norm)_<NT>
 *              also does the rmsnorm before, RoPE, the KV store, swiglu, the residual add)
 *   rope       rope, with cos/sin computed on the host in double per step
 *   gqa_attn   kv_store_<dt> (the step's k, v into the cache; in decode the q/k/v GEMV
 *              stores them), then for <= 8 rows attn_dec_<dt>: one work-group per (KV head,
 *              row or run of rows of one slot, partition) serves the GQA group's query
 *              heads from one read of each position; partitions enough to fill the device
 *              (dec_parts), joined by the last to finish up to ATT_JOIN of them, beyond by
 *              attn_merge (attn_<dt>, one work-group per head and row, where head_dim >
 *              128 or not a multiple of 32 (f16) / 16 (f32), or the device lacks the local
 *              memory); above 8 rows, attn_tile_<dt>: blocks of 32 rows of one head share
 *              K/V tiles in local memory (attn_<dt> where the device lacks the local
 *              memory, or head_dim > 128 or not a multiple of 4)
 *   swiglu/add swiglu, add */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ocl_impl.h"

#define GEMV_MAXT 8 /* as in common.cl */
#define KMAX 6      /* kernels per node */
#define ATT_DPT 4
#define ATT_BQ 32    /* as in common.cl: attn_tile's rows per work-group ... */
#define ATT_HD 128   /* ... and largest head_dim (attn_dec's too) */
#define ATT_NQ 8     /* as in common.cl: attn_dec's query vectors per work-group ... */
#define ATT_PLMAX 256 /* ... and longest partition */
#define ATT_SP 256    /* attn_dec1's most positions */
#define ATT_JOIN 32  /* attn_dec: up to this many partitions the last one joins them (no attn_merge launch) */

/* attn_dec's positions per round (common.cl ATT_DP): the shortest partition */
static int32_t att_round(const ocl_dev *d) { return d->cfg.att_dw / 4; }

typedef struct rope_tab {
    int32_t h2;       /* head_dim / 2 */
    double *inv_freq; /* [h2] */
    double  mscale;
    loom_op_params p; /* what it was made from (tables are shared by equal params) */
} rope_tab;

/* The AWQ matmul kernels' arguments (awq.cl AWQ_PARAMS): AWQ_MEMS buffers, then this
 * struct by value, field for field awq.cl's awq_args: each tensor's offset (in elements),
 * the sizes and switches, and which of the buffers each tensor is in. */
#define AWQ_MEMS 8
typedef struct awq_args {
    cl_ulong xo, yo[3], wo[3], bo[3], nwo, nyo, ro, cso, kco, vco;
    cl_int   T, K, bdt[3], N[3], mode, nwdt, ny_on, r_on, hd, rope_mask, kvdt, km, vm, seq_off, C, Sl, xcg, xhm;
    cl_float eps;
    cl_uchar mx, my[3], mw[3], mb[3], mnw, mny, mr, mcs, mkc, mvc, mps, mxh;
    cl_uchar pad[2];
} awq_args;
_Static_assert(sizeof(awq_args) == 240, "awq_args as awq.cl has it");

/* One AWQ kernel's arguments as the host keeps them: bound at compile, the row count
 * set before each launch. The buffers are the distinct ones of its tensors. */
typedef struct awq_launch {
    cl_mem   mem[AWQ_MEMS];
    int      nmem;
    awq_args a;
} awq_launch;

/* how a matmul node runs 1..8 rows */
enum { GV_FAST, /* k[0..3]: the GEMV for NT = 1, 2, 4, 8 rows */
       GV_ANY,  /* k[0]: matmul_gemv_any (dense, unaligned) */
       GV_GEMM  /* the tiled kernel k[4] (AWQ with x not 16-byte aligned) */ };

typedef struct knode {
    loom_node *n;
    cl_kernel  k[KMAX]; /* matmul: k[0..3] GEMVs, k[4] gemm (k[5]: mma.cl's 64-row one); gqa_attn: kv_store,
                           attn, attn_merge, attn_tile (NULL: attn for every row count), attn_dec (NULL: attn
                           for decode), attn_dec1 (NULL: attn_dec for one row too); otherwise k[0] */
    int32_t    tab;     /* rope: its table */
    int32_t    gv;      /* matmul: GV_* */
    int32_t    slices;  /* matmul_awq GEMV: K slices per work-group (work-group dimension 1) ... */
    int32_t    gcols;   /* ... and columns (of the weights it runs: fuse_nodes) */
    int32_t    gtiles;  /* matmul_awq GEMM: column tiles (of the weights it runs) */
    int32_t    tc;      /* matmul_awq: the GEMVs are the tensor-core ones (awq_gemv_tc_*: awq_tc) */
    int32_t    mma;     /* matmul: k[4] is the tensor-core GEMM (mma.cl) ... */
    int32_t    mtiles;  /* ... and its MMA_N-column tiles (of the weights it runs) */
    int32_t    parts;   /* gqa_attn: most cache partitions for <= GEMV_MAXT rows (attn_dec's, or attn's) */
    int32_t    fuse;    /* the next `fuse` nodes run in this node's launch (see fuse_nodes) */
    int32_t    fused;   /* this node runs in an earlier node's launch */
    /* decode steps (<= GEMV_MAXT rows), plan_decode: */
    cl_kernel  kd[4];   /* lead: the fused awq_gemv(_norm) per NT = 1, 2, 4, 8 */
    cl_kernel  kr;      /* rmsnorm: without the add before it (that add runs in a GEMV) */
    /* bit j of a mask: at NT = 1 << j */
    int32_t    dmember; /* computed by an earlier node's decode launch */
    int32_t    dnorm;   /* rmsnorm, and its lead: the norm runs on load */
    int32_t    dkv;     /* gqa_attn: the lead stored k and v */
    int32_t    dkr;     /* rmsnorm: runs kr */
    int32_t    dxh;     /* lead: bit j writes its rows as f16 for the next lead (p->xh), bit 4 + j reads them */
    int32_t    ds[4], dwx[4], dgroups[4]; /* lead: work-group (dwx, ds), dgroups work-groups, per NT */
    awq_launch *al;     /* matmul_awq: the arguments of k[j] (al[j]) and kd[j] (al[KMAX + j]) */
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
    int32_t         *step_host;  /* [2 * max_t]: what the step buffer is written from */
    cl_event         up_ev[2];   /* the last uploads from step_host, rope_host */
    cl_mem           att_part;   /* attention partials [T][Hq][P][hd + 2] (the largest node's) */
    size_t           att_floats;
    cl_mem           att_cnt;    /* attn_dec: partitions finished per work-group column, zero between launches */
    size_t           att_ints;
    cl_mem           xh;         /* decode: swiglu's rows as f16 in the order the down GEMV stages them
                                    (plan_decode), [NT][K] of the largest */
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
        for (int j = 0; j < KMAX + 5; j++) {
            cl_kernel k = j < KMAX ? p->kn[i].k[j] : j < KMAX + 4 ? p->kn[i].kd[j - KMAX] : p->kn[i].kr;
            if (k) clReleaseKernel(k);
        }
    for (int32_t i = 0; p->kn && i < p->n; i++) free(p->kn[i].al);
    for (int32_t i = 0; i < p->n_tabs; i++) free(p->tabs[i].inv_freq);
    for (int j = 0; j < 2; j++)
        if (p->up_ev[j]) {
            clWaitForEvents(1, &p->up_ev[j]);
            clReleaseEvent(p->up_ev[j]);
        }
    if (p->step) clReleaseMemObject(p->step);
    if (p->att_part) clReleaseMemObject(p->att_part);
    if (p->att_cnt) clReleaseMemObject(p->att_cnt);
    if (p->xh) clReleaseMemObject(p->xh);
    if (p->rope) clReleaseMemObject(p->rope);
    free(p->rope_host);
    free(p->step_host);
    free(p->tabs);
    free(p->kn);
    free(p);
}

static loom_status kernel(ocl_dev *d, const char *base, const char *sfx, cl_kernel *out)
{
    char name[64];
    snprintf(name, sizeof name, sfx ? "%s_%s" : "%s", base, sfx);
    cl_int rc;
    /* the tensor-core decode GEMVs come from their own program (ocl_program.c) */
    *out = clCreateKernel(strncmp(name, "awq_gemv_tc", 11) ? d->program : d->program_tc, name, &rc);
    if (rc != CL_SUCCESS) return loom__ocl_fail(rc, "clCreateKernel", name);
    return LOOM_OK;
}

/* A kernel that must run in work-groups of wg (attn_dec, attn_dec1, attn_tile): NULL in *out
 * where the compiled kernel allows fewer (its registers, not only the device's limit), so
 * that the caller runs its fallback, `instead`_<sfx>, for `when` (decode, prefill). */
static loom_status kernel_wg(ocl_dev *d, const char *base, const char *sfx, int wg, const char *when,
                             const char *instead, cl_kernel *out)
{
    loom_status st = kernel(d, base, sfx, out);
    if (st) return st;
    size_t most = 0;
    cl_int rc = clGetKernelWorkGroupInfo(*out, d->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof most, &most, NULL);
    if (rc != CL_SUCCESS || most < (size_t)wg) {
        OCL_LOG(LOOM_LOG_DEBUG, "%s_%s allows work-groups of %zu, not %d: %s runs %s_%s", base, sfx, most, wg, when,
                instead, sfx);
        clReleaseKernel(*out);
        *out = NULL;
    }
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
        size_t es = t->dtype == LOOM_Q4_AWQ ? 16 : esize(t->dtype); /* AWQ: uint4 words (weight_prepare: 256-byte aligned) */
        if (!t->buf) return OCL_FAIL(LOOM_ERR_INVALID, "node %d (%s): tensor '%s' has no buffer", (int)i, loom_op_str(n->op), t->name ? t->name : "?");
        if (t->offset % es)
            return OCL_FAIL(LOOM_ERR_UNSUPPORTED, "node %d (%s): tensor '%s' sits at byte offset %zu, not a multiple of %zu",
                            (int)i, loom_op_str(n->op), t->name ? t->name : "?", t->offset, es);
    }
    return LOOM_OK;
}

/* Whether an AWQ weight of N columns runs the tensor-core GEMVs (the lead's N decides for
 * the weights fused beside it). Their work-groups are one 16-column tile (two where
 * swiglu or RoPE pair columns), so a weight of fewer tiles than compute units would leave
 * the device part idle; the portable GEMV splits K further instead (H100, Qwen2.5-0.5B
 * decode: 486 tok/s all portable, 444 all tensor-core, 579-665 mixed so; 7B, every weight
 * >= 224 tiles: 270 against 240 all portable). */
static bool awq_tc(const ocl_dev *d, int64_t N) { return d->program_tc && (N + 15) / 16 >= d->cus; }

/* K slices of the AWQ GEMV (awq_gemv.cl): the fewest (a power of two, at most
 * 32 and the number of groups, at least 8 columns per work-group) that give
 * N * S >= 384 work-items per compute unit. Each work-item keeps one or two
 * groups in flight (64..128 bytes), so that is 24..48 KiB of loads in flight
 * per compute unit, what a GPU needs to cover its memory latency, in one
 * wave of work-groups (more would leave a tail: about 3 work-groups of 256
 * fit on a unit by registers). Qwen2.5-7B on 132 units, work-groups of 256:
 * (K, N) = (3584, 3584) S = 16: 224 work-groups of 16 columns, 1..2 groups
 * per work-item; (3584, 18944) S = 4: 296 of 64, 7 groups each; (18944, 3584)
 * S = 16: 224 of 16, 9..10 groups each; q, k, v fused (3584, 4608) S = 16:
 * 288; gate, up fused (3584, 37888) S = 2: 296 of 128, 14 groups each. */
static int awq_slices(const ocl_dev *d, bool tc, int K, int N)
{
    if (tc) return d->cfg.gv_wg / 16; /* the tensor-core variant: one tile of 16 columns (see plan_decode) */
    int G = K / LOOM_AWQ_GROUP, S = 1, wg = d->cfg.gv_wg;
    int64_t target = (int64_t)d->cus * 384;
    while (S * 2 <= G && S * 2 <= 32 && wg / (S * 2) >= 8 && (size_t)(S * 2) <= d->max_item[1] &&
           (int64_t)N * S < target)
        S *= 2;
    return S;
}

/* mma.cl's launch: output tiles of `rows` (MMA_T = its MM_T, or 64 for the _t64
 * kernels) x MMA_N (MM_N), MMA_WG work-items (MM_WG) each, the row tiles along
 * dimension 0 and `tiles` column tiles along 1. */
#define MMA_T  128
#define MMA_N  128
#define MMA_WG 256

static int32_t mma_tiles(int64_t N) { return (int32_t)((N + MMA_N - 1) / MMA_N); }

/* The row tile: 64 unless LOOM_OPENCL_MMA_ROWS says 128. On an H100 with 512-row
 * 7B shapes the 64-row kernels (100-112 registers: two work-groups per SM) were
 * within 2% of the 128-row ones (162-176 registers: one) on gate/up and o, 5-6%
 * faster on q/k/v, down and lm_head (README.md). */
static int mma_rows(const ocl_dev *d) { return d->mma_rows ? d->mma_rows : 64; }

static void mma_geometry(int64_t T, int32_t tiles, int rows, size_t g[2], size_t l[2])
{
    g[0] = (size_t)((T + rows - 1) / rows) * MMA_WG, g[1] = (size_t)tiles;
    l[0] = MMA_WG, l[1] = 1;
}

static int bias_dt(const loom_tensor *b)
{
    return !b ? 0 : b->dtype == LOOM_F32 ? 1 : b->dtype == LOOM_F16 ? 2 : 3;
}

/* A tensor at offset o of buffer m in launch l: *buf the buffer's index among l's (added
 * if new), *off the offset; false where l has AWQ_MEMS buffers already. */
static bool awq_put(awq_launch *l, cl_uchar *buf, cl_ulong *off, cl_mem m, cl_ulong o)
{
    int i = 0;
    while (i < l->nmem && l->mem[i] != m) i++;
    if (i == AWQ_MEMS) return false;
    if (i == l->nmem) l->mem[l->nmem++] = m;
    *buf = (cl_uchar)i;
    if (off) *off = o;
    return true;
}

static bool awq_put_t(awq_launch *l, cl_uchar *buf, cl_ulong *off, const loom_tensor *t)
{
    return awq_put(l, buf, off, MEM(t), OFF(t));
}

/* Weight m (0..2) of an AWQ launch: node n's weight, bias and N with output y
 * (NULL: n's own); false where the buffers do not fit. */
static bool awq_weight(awq_launch *l, int m, const loom_node *n, const loom_tensor *y)
{
    const loom_tensor *w = n->src[1], *b = n->n_src > 2 ? n->src[2] : NULL;
    awq_args *a = &l->a;
    a->N[m] = (cl_int)n->dst->shape[1], a->bdt[m] = bias_dt(b);
    return awq_put_t(l, &a->my[m], &a->yo[m], y ? y : n->dst) && awq_put_t(l, &a->mw[m], &a->wo[m], w) &&
           (!b || awq_put_t(l, &a->mb[m], &a->bo[m], b));
}

/* A launch over K that reads x at offset xo of buffer m, every weight and epilogue off */
static void awq_init(awq_launch *l, int64_t K, cl_mem m, cl_ulong xo)
{
    memset(l, 0, sizeof *l);
    l->a.T = 1, l->a.K = (cl_int)K, l->a.hd = 2, l->a.C = 1, l->a.Sl = 1, l->a.eps = 1e-6f;
    awq_put(l, &l->a.mx, &l->a.xo, m, xo);
}

/* A launch of node n's weight reading x, its epilogue off (a plain GEMV or GEMM) */
static void awq_plain(awq_launch *l, const loom_node *n, const loom_tensor *x)
{
    awq_init(l, n->src[0]->shape[1], MEM(x), OFF(x));
    awq_weight(l, 0, n, NULL); /* (x, y, w, b: four at most) */
}

/* All of launch l's arguments into kernel k (the buffers it does not use repeat its
 * first, x's: awq_init) */
static cl_int awq_bind(cl_kernel k, const awq_launch *l)
{
    cl_int rc = CL_SUCCESS;
    for (int i = 0; i < AWQ_MEMS && rc == CL_SUCCESS; i++)
        rc = clSetKernelArg(k, (cl_uint)i, sizeof(cl_mem), &l->mem[i < l->nmem ? i : 0]);
    return rc == CL_SUCCESS ? clSetKernelArg(k, AWQ_MEMS, sizeof l->a, &l->a) : rc;
}

/* Before a launch of T rows */
static cl_int awq_rows(cl_kernel k, awq_launch *l, int32_t T)
{
    l->a.T = T;
    return clSetKernelArg(k, AWQ_MEMS, sizeof l->a, &l->a);
}

/* awq_gemv's staged x (local memory, the argument after the struct) and its chunk for
 * NT = nt rows. Portable: the norm's rows as f32 when it runs on load, else nothing.
 * Tensor cores (awq_gemv.cl, AWQ_TC): the rows as f16 for as many groups at a time as
 * local memory holds beside the kernel's own arrays, a multiple of a tile's slices
 * (GV_WG / 32 at 16 columns a work-group, half that at 32). */
static cl_int bind_awq_xs(ocl_dev *d, cl_kernel k, awq_launch *l, bool tc, int nt, int K, bool norm)
{
    const cl_uint xs = AWQ_MEMS + 1;
    cl_int rc;
    if (!tc) {
        l->a.xcg = 0;
        return clSetKernelArg(k, xs, norm ? (size_t)nt * (size_t)K * 4 : 16, NULL);
    }
    cl_ulong own = 0; /* with the 16 bytes of xs set here */
    if ((rc = clSetKernelArg(k, xs, 16, NULL)) != CL_SUCCESS ||
        (rc = clGetKernelWorkGroupInfo(k, d->device, CL_KERNEL_LOCAL_MEM_SIZE, sizeof own, &own, NULL)) != CL_SUCCESS)
        return rc;
    int sl = d->cfg.gv_wg / 32, G = K / LOOM_AWQ_GROUP, cg = (G + sl - 1) / sl * sl;
    size_t avail = d->local_mem > own + 256 ? d->local_mem - (size_t)own - 256 : 0;
    while (cg > sl && (size_t)nt * (size_t)(cg * 128 + 32) * 2 > avail) cg -= sl;
    l->a.xcg = cg;
    return clSetKernelArg(k, xs, (size_t)nt * (size_t)(cg * 128 + 32) * 2, NULL);
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
        rc = set_args(k->k[0], 0, "mlmlmlifmlmli", MEM(y), OFF(y), MEM(s[0]), OFF(s[0]), MEM(s[1]), OFF(s[1]),
                      (int)y->shape[1], (double)n->p.eps, d->dummy, (cl_ulong)0, d->dummy, (cl_ulong)0, 0);
        break;
    case LOOM_OP_MATMUL:
    case LOOM_OP_MATMUL_AWQ: {
        bool awq = n->op == LOOM_OP_MATMUL_AWQ;
        const loom_tensor *b = n->n_src > 2 ? s[2] : NULL;
        int bdt = bias_dt(b);
        int K = (int)s[0]->shape[1], N = (int)y->shape[1];
        /* the fast GEMVs read x rows and weight rows as 16-byte words */
        int ce = awq ? 4 : s[1]->dtype == LOOM_F32 ? 4 : 8;
        bool al = s[0]->offset % 16 == 0 && K % ce == 0 && s[1]->offset % 16 == 0;
        k->gv = al ? GV_FAST : awq ? GV_GEMM : GV_ANY;
        k->mma = d->mma && al && K % 32 == 0 && (awq || s[1]->dtype == LOOM_F16); /* (bf16 would not be exact) */
        k->mtiles = mma_tiles(N);
        if (awq) {
            k->tc = awq_tc(d, N);
            k->slices = awq_slices(d, k->tc, K, N);
            k->gcols = N;
            k->gtiles = (N + d->cfg.gt_n - 1) / d->cfg.gt_n;
            if ((st = kernel(d, k->mma ? "mma_awq_gemm" : "awq_gemm", NULL, &k->k[4]))) return st;
            if (k->mma && (st = kernel(d, "mma_awq_gemm_t64", NULL, &k->k[5]))) return st;
        } else if ((st = k->mma ? kernel(d, "mma_gemm_f16", NULL, &k->k[4])
                                : kernel(d, "matmul_gemm", dt_sfx(s[1]->dtype), &k->k[4])) ||
                   (k->mma && (st = kernel(d, "mma_gemm_f16_t64", NULL, &k->k[5])))) {
            return st;
        }
        for (int j = 0; j < 4 && k->gv != GV_GEMM; j++) {
            char base[48];
            if (k->gv == GV_ANY) snprintf(base, sizeof base, "matmul_gemv_any");
            else if (awq) snprintf(base, sizeof base, k->tc ? "awq_gemv_tc_%d" : "awq_gemv_%d", 1 << j);
            else snprintf(base, sizeof base, "matmul_gemv_%s_%d", dt_sfx(s[1]->dtype), 1 << j);
            if ((st = kernel(d, base, k->gv == GV_ANY ? dt_sfx(s[1]->dtype) : NULL, &k->k[j]))) return st;
            if (k->gv == GV_ANY) break;
        }
        if (awq && !(k->al = calloc(KMAX + 4, sizeof *k->al))) return OCL_FAIL(LOOM_ERR_NOMEM, "out of memory compiling");
        for (int j = 0; j < KMAX && rc == CL_SUCCESS; j++) {
            if (!k->k[j]) continue;
            if (awq) { /* awq_gemv, awq_gemm: x and one weight (fuse_nodes may add two) */
                awq_plain(&k->al[j], n, s[0]);
                if (j < 4) rc = bind_awq_xs(d, k->k[j], &k->al[j], k->tc, 1 << j, K, false);
                if (rc == CL_SUCCESS) rc = awq_bind(k->k[j], &k->al[j]);
                continue;
            }
            rc = set_args(k->k[j], 0, "mlmlmlmli", MEM(y), OFF(y), MEM(s[0]), OFF(s[0]), MEM(s[1]), OFF(s[1]),
                          b ? MEM(b) : d->dummy, (cl_ulong)(b ? OFF(b) : 0), bdt);
            if (rc == CL_SUCCESS) rc = set_args(k->k[j], 10, "ii", K, N); /* 9: rows, per step */
        }
        break;
    }
    case LOOM_OP_ROPE:
        if ((st = add_rope_tab(p, &n->p, &k->tab))) return st;
        if ((st = kernel(d, "rope", NULL, &k->k[0]))) return st;
        rc = set_args(k->k[0], 0, "mlml", MEM(y), OFF(y), MEM(s[0]), OFF(s[0]));
        if (rc == CL_SUCCESS) rc = set_args(k->k[0], 6, "ii", (int)n->p.n_head, (int)n->p.head_dim); /* 4, 5: table; 8: n */
        if (rc == CL_SUCCESS) /* 9..13: a second tensor (fuse_nodes); 14: n1, per step */
            rc = set_args(k->k[0], 9, "mlmli", MEM(y), OFF(y), MEM(s[0]), OFF(s[0]), (int)n->p.n_head);
        break;
    case LOOM_OP_GQA_ATTN: {
        const char *sfx = dt_sfx(s[3]->dtype);
        const loom_op_params *pp = &n->p;
        float scale = pp->attn_scale > 0 ? pp->attn_scale : (float)(1.0 / sqrt((double)pp->head_dim));
        if ((st = kernel(d, "kv_store", sfx, &k->k[0])) || (st = kernel(d, "attn", sfx, &k->k[1])) ||
            (st = kernel(d, "attn_merge", NULL, &k->k[2])))
            return st;
        int C = (int)s[3]->shape[2], S = (int)s[3]->shape[0], hd = (int)pp->head_dim;
        int G = (int)(pp->n_head / pp->n_head_kv), HB = (G + ATT_NQ - 1) / ATT_NQ;
        /* decode: attn_dec where the head fits and the caches are 16-byte aligned */
        if (d->cfg.att_dw && hd <= ATT_HD && hd % (int)(64 / esize(s[3]->dtype)) == 0 && s[3]->offset % 16 == 0 &&
            s[4]->offset % 16 == 0 && (st = kernel_wg(d, "attn_dec", sfx, d->cfg.att_dw, "decode", "attn", &k->k[4])))
            return st;
        /* one row over at most ATT_SP positions: attn_dec1 (f16 caches, head_dim 32, 64 or 128) */
        if (d->cfg.att_sw && d->att_short && s[3]->dtype == LOOM_F16 && (hd == 32 || hd == 64 || hd == 128) &&
            s[3]->offset % 16 == 0 && s[4]->offset % 16 == 0 &&
            (st = kernel_wg(d, "attn_dec1", sfx, d->cfg.att_sw, "one-row decode", k->k[4] ? "attn_dec" : "attn",
                            &k->k[5])))
            return st;
        if (k->k[5]) {
            rc = set_args(k->k[5], 0, "mlmlmlml", MEM(y), OFF(y), MEM(s[0]), OFF(s[0]), MEM(s[3]), OFF(s[3]),
                          MEM(s[4]), OFF(s[4]));
            if (rc == CL_SUCCESS) /* 8: position, 9: slot, per step */
                rc = set_args(k->k[5], 10, "iiiifi", (int)pp->n_head, (int)pp->n_head_kv, C, hd, (double)scale,
                              (int)d->att_vs);
        }
        if (k->k[4]) { /* the most partitions run_node picks (dec_parts) */
            int64_t fill = ((int64_t)d->cus * 2 + (int64_t)pp->n_head_kv * HB - 1) / ((int64_t)pp->n_head_kv * HB);
            int64_t DP = att_round(d), lo = (C + ATT_PLMAX - 1) / ATT_PLMAX, hi = (C + DP - 1) / DP;
            k->parts = (int32_t)(fill < hi ? (fill > lo ? fill : lo) : hi);
        } else { /* attn: partitions enough for about 4 work-groups per compute unit */
            int64_t want = ((int64_t)d->cus * 4 + pp->n_head - 1) / pp->n_head, most = (C + d->cfg.att_w - 1) / d->cfg.att_w;
            k->parts = (int32_t)(want < most ? want : most);
        }
        size_t floats = (size_t)GEMV_MAXT * (size_t)pp->n_head * (size_t)k->parts * (size_t)(pp->head_dim + 2);
        if (k->parts > 1 && floats > p->att_floats) p->att_floats = floats;
        size_t ints = (size_t)GEMV_MAXT * (size_t)pp->n_head_kv * (size_t)HB;
        if (k->k[4] && k->parts > 1 && ints > p->att_ints) p->att_ints = ints;
        if (k->k[4]) {
            rc = set_args(k->k[4], 0, "mlmlmlml", MEM(y), OFF(y), MEM(s[0]), OFF(s[0]), MEM(s[3]), OFF(s[3]),
                          MEM(s[4]), OFF(s[4]));
            if (rc == CL_SUCCESS)
                rc = set_args(k->k[4], 11, "iiiif", (int)pp->n_head, (int)pp->n_head_kv, C, hd, (double)scale);
            if (rc == CL_SUCCESS) rc = set_args(k->k[4], 17, "mm", d->dummy, d->dummy); /* until the partials exist */
        }
        if (rc == CL_SUCCESS)
            rc = set_args(k->k[0], 0, "mlmlmlml", MEM(s[1]), OFF(s[1]), MEM(s[2]), OFF(s[2]), MEM(s[3]), OFF(s[3]),
                          MEM(s[4]), OFF(s[4]));
        if (rc == CL_SUCCESS) rc = set_args(k->k[0], 11, "iiii", (int)pp->n_head_kv, C, (int)pp->head_dim, S);
        if (rc == CL_SUCCESS)
            rc = set_args(k->k[1], 0, "mlmlmlml", MEM(y), OFF(y), MEM(s[0]), OFF(s[0]), MEM(s[3]), OFF(s[3]),
                          MEM(s[4]), OFF(s[4]));
        if (rc == CL_SUCCESS)
            rc = set_args(k->k[1], 10, "iiiif", (int)pp->n_head, (int)pp->n_head_kv, C, (int)pp->head_dim, (double)scale);
        if (rc == CL_SUCCESS) rc = set_args(k->k[1], 16, "m", d->dummy); /* until the partials exist */
        if (rc == CL_SUCCESS)
            rc = set_args(k->k[2], 0, "mlmii", MEM(y), OFF(y), d->dummy, (int)pp->n_head, (int)pp->head_dim);
        if (rc == CL_SUCCESS && d->cfg.att_tw && pp->head_dim % 4 == 0 && pp->head_dim <= ATT_HD) {
            if ((st = kernel_wg(d, "attn_tile", sfx, d->cfg.att_tw, "prefill", "attn", &k->k[3]))) return st;
            if (k->k[3]) {
                rc = set_args(k->k[3], 0, "mlmlmlml", MEM(y), OFF(y), MEM(s[0]), OFF(s[0]), MEM(s[3]), OFF(s[3]),
                              MEM(s[4]), OFF(s[4]));
                if (rc == CL_SUCCESS)
                    rc = set_args(k->k[3], 11, "iiiif", (int)pp->n_head, (int)pp->n_head_kv, C, (int)pp->head_dim,
                                  (double)scale);
            }
        }
        /* 8: step buffer, 9: seq offset (all but attn_merge); kv_store 10: rows; attn 15: PL; merge 5: P;
         * attn_tile 10: rows; attn_dec 10: rows, 16: PL, 19: join */
        p->uses_step = true;
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

static bool same_place(const loom_tensor *a, const loom_tensor *b)
{
    return a && b && a->buf == b->buf && a->offset == b->offset;
}

static size_t tensor_bytes(const loom_tensor *t)
{
    size_t n = t->dtype == LOOM_Q4_AWQ ? 1 : esize(t->dtype);
    for (int i = 0; i < t->ndim; i++) n *= (size_t)t->shape[i];
    return t->dtype == LOOM_Q4_AWQ ? n / 2 : n;
}

/* Whether two tensors share bytes (the planner reuses dead tensors' memory). */
static bool overlaps(const loom_tensor *a, const loom_tensor *b)
{
    return a && b && a->buf == b->buf && a->offset < b->offset + tensor_bytes(b) && b->offset < a->offset + tensor_bytes(a);
}

/* rows of a node's output in a step: all, or the step's tokens */
static bool same_rows(const loom_node *a, const loom_node *b)
{
    return (a->dst->flags & LOOM_TENSOR_DYNAMIC) == (b->dst->flags & LOOM_TENSOR_DYNAMIC) &&
           a->dst->shape[0] == b->dst->shape[0];
}

/* Launches saved by running a few consecutive nodes as one (each output is
 * still written, so nothing outside the program can tell):
 *   matmul_awq x2 or x3 reading the same x (q, k, v; gate, up): one awq_gemv
 *     or awq_gemm over their columns side by side (awq_gemv.cl; for prefill
 *     this also keeps the small k, v from running on a few compute units)
 *   add then rmsnorm of its sum (the residual and the next norm): one rmsnorm
 *   rope then rope with the same table and rows (q, k): one rope
 * A step of a Qwen2 layer goes from 16 launches to 10 (11 when the attention
 * is split); decode steps then go further (plan_decode). */
static loom_status fuse_nodes(ocl_dev *d, ocl_prog *p)
{
    for (int32_t i = 0; i + 1 < p->n; i++) {
        knode *k = &p->kn[i], *k1 = &p->kn[i + 1];
        const loom_node *a = k->n, *b = k1->n;
        cl_int rc = CL_SUCCESS;
        if (a->op == LOOM_OP_MATMUL_AWQ && k->gv == GV_FAST) {
            int32_t m = 1, ncols = (int32_t)a->dst->shape[1], tiles = k->gtiles, mtiles = k->mtiles;
            awq_launch l = k->al[0]; /* (every kernel of the node has the same tensors) */
            for (; m < 3 && i + m < p->n; m++) {
                const knode *kj = &p->kn[i + m];
                const loom_node *c = kj->n;
                if (c->op != LOOM_OP_MATMUL_AWQ || kj->gv != GV_FAST || !same_place(c->src[0], a->src[0]) ||
                    c->src[0]->shape[1] != a->src[0]->shape[1] || !same_rows(a, c) || overlaps(c->dst, a->src[0]) ||
                    !awq_weight(&l, m, c, NULL))
                    break;
                for (int j = 0; j < KMAX; j++)
                    if (k->k[j]) awq_weight(&k->al[j], m, c, NULL); /* (k[5]: mma.cl only) */
                ncols += (int32_t)c->dst->shape[1];
                tiles += kj->gtiles;
                mtiles += kj->mtiles;
            }
            for (int j = 0; j < KMAX && rc == CL_SUCCESS && m > 1; j++)
                if (k->k[j]) rc = awq_bind(k->k[j], &k->al[j]);
            if (rc != CL_SUCCESS) return loom__ocl_fail(rc, "clSetKernelArg", "binding fused matmul_awq nodes");
            if (m > 1) {
                k->fuse = m - 1;
                k->slices = awq_slices(d, k->tc, (int)a->src[0]->shape[1], ncols);
                k->gcols = ncols;
                k->gtiles = tiles;
                k->mtiles = mtiles;
                for (int j = 1; j < m; j++) p->kn[i + j].fused = 1;
                i += m - 1;
            }
        } else if (a->op == LOOM_OP_ADD && b->op == LOOM_OP_RMSNORM && same_place(b->src[0], a->dst) && same_rows(a, b)) {
            /* the rmsnorm reads the add's sources and writes the sum (its x) too */
            rc = set_args(k1->k[0], 2, "ml", MEM(a->src[0]), OFF(a->src[0]));
            if (rc == CL_SUCCESS)
                rc = set_args(k1->k[0], 8, "mlmli", MEM(a->src[1]), OFF(a->src[1]), MEM(a->dst), OFF(a->dst), 1);
            if (rc != CL_SUCCESS) return loom__ocl_fail(rc, "clSetKernelArg", "binding a fused add + rmsnorm");
            k->fuse = -1; /* this add runs in the next node's launch */
            i++;
        } else if (a->op == LOOM_OP_ROPE && b->op == LOOM_OP_ROPE && k->tab == k1->tab && same_rows(a, b) &&
                   !overlaps(b->dst, a->src[0]) && !overlaps(b->src[0], a->dst) && !overlaps(a->dst, b->dst)) {
            /* (the two run at once: neither may write what the other reads) */
            rc = set_args(k->k[0], 9, "mlmli", MEM(b->dst), OFF(b->dst), MEM(b->src[0]), OFF(b->src[0]),
                          (int)b->p.n_head);
            if (rc != CL_SUCCESS) return loom__ocl_fail(rc, "clSetKernelArg", "binding fused rope nodes");
            k->fuse = 1;
            k1->fused = 1;
            i++;
        }
    }
    return LOOM_OK;
}

/* ---- decode fusion ---------------------------------------------------------------
 * For steps of <= GEMV_MAXT rows every AWQ GEMV (with the weights fuse_nodes
 * put beside it) runs as one awq_gemv launch that also does (awq_gemv.cl):
 *   the rmsnorm before it, on load (when its T rows fit in local memory)
 *   q, k, v: their bias, RoPE of q and k, and the store of k and v into the
 *     KV cache (gqa_attn then skips its kv_store)
 *   gate, up: swiglu;  o_proj, down: the residual add after it
 * A Qwen2 layer is then 5 launches (6 with attention partitions), from 10.
 * An intermediate tensor a fusion leaves unwritten is one that nothing but
 * the fused node reads and that is not LOOM_TENSOR_OUTPUT; the norm's output
 * is written when it is OUTPUT. Fused writes happen in the lead's launch,
 * while other work-groups still read its inputs: no written tensor may
 * overlap what the launch reads (the planner reuses dead tensors' bytes). */
static int uses_of(const ocl_prog *p, const loom_tensor *t)
{
    int u = 0;
    for (int32_t i = 0; i < p->n; i++)
        for (int s = 0; s < p->kn[i].n->n_src; s++) u += p->kn[i].n->src[s] == t;
    return u;
}

static bool private_to(const ocl_prog *p, const loom_tensor *t)
{
    return !(t->flags & LOOM_TENSOR_OUTPUT) && uses_of(p, t) == 1;
}

typedef struct dplan {
    int32_t            nm;        /* weights (1..3), nodes lead .. lead + nm - 1 */
    const loom_tensor *y[3];      /* where each weight's columns finally go */
    int                mode;      /* awq_gemv.cl: 0 side by side, 1 swiglu, 2 rope pairs */
    const loom_node   *norm;      /* rmsnorm on load (at the NTs that fit) */
    const loom_tensor *r;         /* residual added (mode 0, one weight) */
    int                rope_mask, tab, hd;
    const loom_node   *attn;      /* its k, v stored by this launch */
    int                km, vm;
    int32_t            last;      /* last node this launch computes */
} dplan;

/* Nothing the launch writes overlaps what it reads, or another of its outputs.
 * x: the weights' input, NULL when the norm runs on load at every NT. */
static bool dplan_safe(const dplan *pl, const loom_tensor *x)
{
    const loom_tensor *rd[3] = {x, pl->norm ? pl->norm->src[0] : NULL, pl->r};
    const loom_tensor *wr[4] = {pl->y[0], pl->mode == 1 ? NULL : pl->y[1], pl->mode == 1 ? NULL : pl->y[2],
                                pl->norm && (pl->norm->dst->flags & LOOM_TENSOR_OUTPUT) ? pl->norm->dst : NULL};
    for (int a = 0; a < 4; a++) {
        if (!wr[a]) continue;
        for (int b = 0; b < 3; b++)
            if (rd[b] && overlaps(wr[a], rd[b]) && !(rd[b] == pl->r && a == 0 && same_place(wr[a], rd[b])))
                return false; /* (the residual add may write in place: each element is read, then written) */
        for (int b = a + 1; b < 4; b++)
            if (wr[b] && overlaps(wr[a], wr[b])) return false;
    }
    return true;
}

/* The arguments of plan pl's launch led by k, all but the staged x (bind_awq_xs) and
 * the f16 rows (plan_decode); false where its buffers do not fit (AWQ_MEMS). */
static bool decode_args(const ocl_prog *p, const knode *k, const dplan *pl, awq_launch *l)
{
    const loom_node *a = k->n;
    const loom_tensor *x = pl->norm ? pl->norm->src[0] : a->src[0];
    awq_args *g = &l->a;
    awq_init(l, a->src[0]->shape[1], MEM(x), OFF(x));
    g->mode = pl->mode;
    if (pl->hd > 0) g->hd = pl->hd;
    bool ok = true;
    for (int m = 0; m < pl->nm && ok; m++) ok = awq_weight(l, m, k[m].n, pl->y[m]);
    if (ok && pl->norm) {
        const loom_tensor *nw = pl->norm->src[1], *ny = pl->norm->dst;
        g->nwdt = bias_dt(nw), g->eps = pl->norm->p.eps, g->ny_on = (ny->flags & LOOM_TENSOR_OUTPUT) ? 1 : 0;
        ok = awq_put_t(l, &g->mnw, &g->nwo, nw) && (!g->ny_on || awq_put_t(l, &g->mny, &g->nyo, ny));
    }
    if (ok && pl->r) g->r_on = 1, ok = awq_put_t(l, &g->mr, &g->ro, pl->r);
    if (ok && pl->rope_mask) { /* the tables are rows of one buffer */
        g->rope_mask = pl->rope_mask;
        ok = awq_put(l, &g->mcs, &g->cso, p->rope, (cl_ulong)pl->tab * (cl_ulong)p->max_t * (cl_ulong)p->h2_max * 2);
    }
    if (ok && pl->attn) {
        const loom_tensor *kc = pl->attn->src[3], *vc = pl->attn->src[4];
        g->kvdt = kc->dtype == LOOM_F16 ? 2 : 1, g->km = pl->km, g->vm = pl->vm, g->seq_off = p->max_t;
        g->C = (cl_int)kc->shape[2], g->Sl = (cl_int)kc->shape[0];
        ok = awq_put_t(l, &g->mkc, &g->kco, kc) && awq_put_t(l, &g->mvc, &g->vco, vc) && awq_put(l, &g->mps, NULL, p->step, 0);
    }
    return ok;
}

static loom_status bind_decode(ocl_dev *d, ocl_prog *p, knode *k, const dplan *pl, int j, bool norm)
{
    loom_status st;
    char name[48];
    snprintf(name, sizeof name, "awq_gemv%s%s_%d", k->tc ? "_tc" : "", norm ? "_norm" : "", 1 << j);
    if ((st = kernel(d, name, NULL, &k->kd[j]))) return st;
    awq_launch *l = &k->al[KMAX + j];
    if (!decode_args(p, k, pl, l)) /* (plan_lead checked) */
        return OCL_FAIL(LOOM_ERR_INTERNAL, "node %s: a decode GEMV's tensors in more than %d buffers",
                        k->n->dst->name ? k->n->dst->name : "?", AWQ_MEMS);
    cl_int rc = bind_awq_xs(d, k->kd[j], l, k->tc, 1 << j, (int)k->n->src[0]->shape[1], norm);
    if (rc == CL_SUCCESS) rc = awq_bind(k->kd[j], l);
    if (rc != CL_SUCCESS) return loom__ocl_fail(rc, "clSetKernelArg", "binding a fused decode GEMV");
    return LOOM_OK;
}

/* The launch led by AWQ node i: what it can take on (see above): df, the
 * OCL_DF_* allowed; fit, bit j: the norm's rows fit in local memory at NT 1 << j. */
static void plan_lead(const ocl_prog *p, int32_t i, dplan *pl, int wx, bool tc, uint32_t df, int fit)
{
    const knode *k = &p->kn[i];
    const loom_node *a = k->n;
    const loom_tensor *x = a->src[0];
    memset(pl, 0, sizeof *pl);
    pl->nm = 1 + (k->fuse > 0 ? k->fuse : 0);
    for (int m = 0; m < pl->nm; m++) pl->y[m] = k[m].n->dst;
    pl->last = i + pl->nm - 1;
    int32_t nx = pl->last + 1;
    const loom_node *b = nx < p->n ? p->kn[nx].n : NULL;
    if (b && (df & OCL_DF_SWIGLU) && pl->nm == 2 && b->op == LOOM_OP_SWIGLU && b->src[0] == pl->y[0] &&
        b->src[1] == pl->y[1] && pl->y[0]->shape[1] == pl->y[1]->shape[1] && same_rows(a, b) &&
        private_to(p, pl->y[0]) && private_to(p, pl->y[1])) {
        pl->mode = 1, pl->y[0] = b->dst, pl->last = nx;
    } else if (b && (df & OCL_DF_ADD) && pl->nm == 1 && b->op == LOOM_OP_ADD && (b->src[0] == pl->y[0]) != (b->src[1] == pl->y[0]) &&
               same_rows(a, b) && private_to(p, pl->y[0])) {
        const loom_tensor *r = b->src[0] == pl->y[0] ? b->src[1] : b->src[0];
        if (!overlaps(b->dst, r) || same_place(b->dst, r)) pl->r = r, pl->y[0] = b->dst, pl->last = nx;
    } else if (b && (df & OCL_DF_ROPE) && b->op == LOOM_OP_ROPE) { /* RoPE of any of the weights' outputs: all of the ropes here, or none */
        dplan t = *pl;
        int32_t j = nx;
        for (; j < p->n && p->kn[j].n->op == LOOM_OP_ROPE; j++) {
            const loom_node *rn = p->kn[j].n;
            int w = 0;
            while (w < pl->nm && rn->src[0] != t.y[w]) w++;
            if (w == pl->nm || ((t.rope_mask >> w) & 1) || (t.rope_mask && (p->kn[j].tab != t.tab || rn->p.head_dim != t.hd)) ||
                !same_rows(a, rn) || !private_to(p, rn->src[0]))
                break;
            t.rope_mask |= 1 << w, t.tab = p->kn[j].tab, t.hd = rn->p.head_dim, t.y[w] = rn->dst;
        }
        bool all = j == p->n || p->kn[j].n->op != LOOM_OP_ROPE || !p->kn[j].fused; /* an old rope pair stays whole */
        while (wx > 2 && t.hd % wx) wx /= 2;
        for (int m = 0; m < pl->nm; m++) all = all && pl->y[m]->shape[1] % t.hd == 0;
        if (all && t.rope_mask && wx >= (tc ? 32 : 2) && t.hd % wx == 0 && t.hd % 2 == 0) /* tc: whole tiles per half */
            *pl = t, pl->mode = 2, pl->last = j - 1;
    }
    /* the k, v store of the gqa_attn right after */
    nx = pl->last + 1;
    const loom_node *at = nx < p->n && pl->mode != 1 ? p->kn[nx].n : NULL;
    if (at && (df & OCL_DF_KV) && at->op == LOOM_OP_GQA_ATTN && same_rows(a, at) && at->src[3]->dtype == at->src[4]->dtype &&
        (pl->mode != 2 || at->p.head_dim == pl->hd)) {
        int km = 0, vm = 0;
        while (km < pl->nm && pl->y[km] != at->src[1]) km++;
        while (vm < pl->nm && pl->y[vm] != at->src[2]) vm++;
        if (km < pl->nm && vm < pl->nm && km != vm) {
            pl->attn = at, pl->km = km, pl->vm = vm;
            if (pl->mode != 2) pl->hd = at->p.head_dim;
        }
    }
    /* the rmsnorm right before, read by these weights only; if it carries the add before
     * it (fuse_nodes), that add must run in a decode GEMV too */
    const loom_node *nn = i > 0 ? p->kn[i - 1].n : NULL;
    if (nn && (df & OCL_DF_NORM) && fit && nn->op == LOOM_OP_RMSNORM && nn->dst == x && uses_of(p, x) == pl->nm &&
        same_rows(a, nn) && (i < 2 || p->kn[i - 2].fuse >= 0 || p->kn[i - 2].dmember == 15))
        pl->norm = nn;
    /* what clashes goes: the norm (its output is then read at some NT), else the epilogue */
    const loom_node *norm = pl->norm;
    for (int tries = 0; tries < 4; tries++) {
        if (tries == 1) pl->norm = NULL;
        if (tries == 2) { /* the weights alone, with the norm */
            pl->norm = norm, pl->mode = 0, pl->r = NULL, pl->rope_mask = 0, pl->attn = NULL, pl->hd = 0;
            for (int m = 0; m < pl->nm; m++) pl->y[m] = k[m].n->dst;
            pl->last = i + pl->nm - 1;
        }
        if (tries == 3) pl->norm = NULL;
        awq_launch l;
        if (dplan_safe(pl, pl->norm && fit == 15 ? NULL : x) && decode_args(p, k, pl, &l)) return;
    }
}

/* The tensor-core GEMV's work-groups for a launch of `tiles` tiles: each walks tiles
 * t, t + groups, ... (awq_gemv.cl), so more tiles than stay resident together (d->tc_wgs
 * per compute unit, what its register cap is sized to: ocl_program.c) run as that many
 * work-groups, each staging x once, rather than as waves that each stage it again. */
static int32_t tc_groups(const ocl_dev *d, int32_t tiles)
{
    const int64_t res = (int64_t)d->cus * d->tc_wgs;
    if (!d->tc_wgs || tiles <= res) return tiles;
    const int64_t per = (tiles + res - 1) / res; /* tiles per work-group */
    return (int32_t)((tiles + per - 1) / per);
}

/* A program's own buffer: read-only in kernels (what the host uploads), or kernels' scratch,
 * read-write and zeroed (attention counters return to zero after each launch) */
static loom_status create_buffer(ocl_dev *d, size_t size, cl_mem *out, const char *what, bool scratch)
{
    cl_int rc;
    void *z = scratch ? calloc(1, size) : NULL;
    if (scratch && !z) return OCL_FAIL(LOOM_ERR_NOMEM, "out of memory: %zu bytes of %s", size, what);
    *out = clCreateBuffer(d->ctx, scratch ? CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR : CL_MEM_READ_ONLY, size, z, &rc);
    free(z);
    if (rc != CL_SUCCESS) {
        char w[96];
        snprintf(w, sizeof w, "allocating %zu bytes of %s", size, what);
        return loom__ocl_fail(rc, "clCreateBuffer", w);
    }
    return LOOM_OK;
}

static loom_status plan_decode(ocl_dev *d, ocl_prog *p)
{
    loom_status st;
    /* A swiglu lead (gate/up) whose output the next tensor-core lead reads with no norm on load
     * (down) also writes its rows as f16 in the order that lead stages them (p->xh), which then
     * copies 16-byte words instead of converting f32: same rounding, same results. Per NT: the
     * last swiglu lead and its output; xh_bytes: the largest reader's rows. */
    int32_t swi[4] = {-1, -1, -1, -1};
    const loom_tensor *swi_y[4] = {NULL, NULL, NULL, NULL};
    size_t xh_bytes = 0;
    for (int32_t i = 0; i < p->n; i++) {
        knode *k = &p->kn[i];
        const loom_node *a = k->n;
        if (a->op != LOOM_OP_MATMUL_AWQ || k->gv != GV_FAST || k->fused || a->dst->shape[0] < 1) continue;
        int S = k->slices, wx = d->cfg.gv_wg / S, K = (int)a->src[0]->shape[1], fit = 0;
        for (int j = 0; j < 4; j++) /* the staged rows and the reduction array, in local memory */
            if (k->tc || (size_t)(1 << j) * (size_t)(K + d->cfg.gv_wg) * 4 + 1024 <= d->local_mem) fit |= 1 << j;
        /* A: with the norm on load (its output is not read), at the NTs whose rows fit;
         * B: without it, at the others */
        dplan pa, pb;
        plan_lead(p, i, &pa, k->tc ? 32 : wx, k->tc, d->dfuse, 15);
        plan_lead(p, i, &pb, k->tc ? 32 : wx, k->tc, d->dfuse & ~(uint32_t)OCL_DF_NORM, 0);
        for (int j = 0; j < 4; j++) {
            const dplan *pl = &pb;
            if (pa.norm && ((fit >> j) & 1)) {
                if ((st = bind_decode(d, p, k, &pa, j, true))) return st;
                cl_ulong lm = 0;
                if (clGetKernelWorkGroupInfo(k->kd[j], d->device, CL_KERNEL_LOCAL_MEM_SIZE, sizeof lm, &lm, NULL) ==
                        CL_SUCCESS && lm <= d->local_mem)
                    pl = &pa;
                else /* more than the estimate */
                    clReleaseKernel(k->kd[j]), k->kd[j] = NULL;
            }
            if (pl == &pb && (st = bind_decode(d, p, k, &pb, j, false))) return st;
            if (k->tc && !pl->norm && swi[j] >= 0 && a->src[0] == swi_y[j] && k->al[KMAX + j].nmem < AWQ_MEMS &&
                p->kn[swi[j]].al[KMAX + j].nmem < AWQ_MEMS) { /* (the rows' buffer fits both launches) */
                p->kn[swi[j]].dxh |= 1 << j, k->dxh |= 16 << j;
                size_t b = (size_t)(1 << j) * (size_t)K * 2;
                xh_bytes = b > xh_bytes ? b : xh_bytes;
            }
            if (pl->mode == 1) swi[j] = i, swi_y[j] = pl->y[0];
            int w = wx, ncols = 0;
            if (k->tc && pl->mode) /* tensor cores: a 16-column tile of each weight or half */
                w = 32;
            else if (pl->mode == 2)
                while (w > 2 && pl->hd % w) w /= 2;
            for (int m = 0; m < pl->nm; m++) ncols += (int)k[m].n->dst->shape[1];
            k->dwx[j] = w, k->ds[j] = k->tc ? d->cfg.gv_wg / w : S;
            k->dgroups[j] = pl->mode == 1 ? (ncols / 2 + w / 2 - 1) / (w / 2) : (ncols + w - 1) / w;
            if (k->tc) k->dgroups[j] = tc_groups(d, k->dgroups[j]);
            if (pl->norm) k->dnorm |= 1 << j, p->kn[i - 1].dnorm |= 1 << j;
            for (int32_t m = i + 1; m <= pl->last; m++) p->kn[m].dmember |= 1 << j;
            if (pl->attn) p->kn[pl->last + 1].dkv |= 1 << j;
            OCL_LOG(LOOM_LOG_TRACE, "decode NT %d: node %d leads nodes %d..%d (mode %d%s%s%s%s%s%s; %d buffers)", 1 << j,
                    (int)i, (int)i, (int)pl->last, pl->mode, k->tc ? ", tensor cores" : "", pl->norm ? ", norm on load" : "",
                    pl->r ? ", residual" : "", pl->rope_mask ? ", rope" : "", pl->attn ? ", kv store" : "",
                    k->dxh >> (4 + j) & 1 ? ", f16 rows from the swiglu lead" : "", k->al[KMAX + j].nmem);
        }
        i += pa.nm - 1;
    }
    if (xh_bytes && (st = create_buffer(d, xh_bytes, &p->xh, "f16 rows between decode GEMVs", true))) return st;
    for (int32_t i = 0; i < p->n && xh_bytes; i++)
        for (int j = 0; j < 4; j++) {
            int m = (p->kn[i].dxh >> j & 1) | (p->kn[i].dxh >> (4 + j) & 1) << 1;
            if (!m) continue;
            awq_launch *l = &p->kn[i].al[KMAX + j];
            awq_put(l, &l->a.mxh, NULL, p->xh, 0);
            l->a.xhm = m;
            cl_int rc = awq_bind(p->kn[i].kd[j], l);
            if (rc != CL_SUCCESS) return loom__ocl_fail(rc, "clSetKernelArg", "binding the f16 rows between GEMVs");
        }
    /* an rmsnorm whose add (fuse_nodes) now runs in a decode GEMV: a kernel without the add */
    for (int32_t i = 1; i < p->n; i++) {
        knode *k = &p->kn[i];
        if (k->n->op != LOOM_OP_RMSNORM || p->kn[i - 1].fuse >= 0) continue;
        k->dkr = p->kn[i - 1].dmember & ~k->dnorm;
        if (!k->dkr) continue;
        const loom_node *n = k->n;
        if ((st = kernel(d, "rmsnorm", dt_sfx(n->src[1]->dtype), &k->kr))) return st;
        cl_int rc = set_args(k->kr, 0, "mlmlmlifmlmli", MEM(n->dst), OFF(n->dst), MEM(n->src[0]), OFF(n->src[0]),
                             MEM(n->src[1]), OFF(n->src[1]), (int)n->dst->shape[1], (double)n->p.eps, d->dummy,
                             (cl_ulong)0, d->dummy, (cl_ulong)0, 0);
        if (rc != CL_SUCCESS) return loom__ocl_fail(rc, "clSetKernelArg", "binding an rmsnorm for decode");
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
    if (!st && d->fuse) st = fuse_nodes(d, p);
    if (!st && p->uses_step) {
        st = create_buffer(d, (size_t)p->max_t * 2 * sizeof(cl_int), &p->step, "step positions and slots", false);
        if (!st && !(p->step_host = calloc((size_t)p->max_t * 2, sizeof(int32_t))))
            st = OCL_FAIL(LOOM_ERR_NOMEM, "out of memory compiling");
    }
    if (!st && p->att_floats)
        st = create_buffer(d, p->att_floats * sizeof(float), &p->att_part, "attention partials", true);
    if (!st && p->att_ints) st = create_buffer(d, p->att_ints * sizeof(cl_int), &p->att_cnt, "attention counters", true);
    if (!st && p->n_tabs) {
        size_t floats = (size_t)p->n_tabs * (size_t)p->max_t * (size_t)p->h2_max * 2;
        if (!(p->rope_host = malloc(floats * sizeof(float)))) st = OCL_FAIL(LOOM_ERR_NOMEM, "out of memory compiling");
        else st = create_buffer(d, floats * sizeof(float), &p->rope, "RoPE tables", false);
    }
    /* bind what only now exists: the step buffer and the tables */
    for (int32_t i = 0; i < n_nodes && !st; i++) {
        knode *k = &p->kn[i];
        cl_int rc = CL_SUCCESS;
        if (k->n->op == LOOM_OP_GQA_ATTN) {
            for (int j = 0; j < 5 && rc == CL_SUCCESS; j++)
                if (j != 2 && k->k[j]) rc = set_args(k->k[j], 8, "mi", p->step, (int)p->max_t);
            if (rc == CL_SUCCESS && k->parts > 1) rc = set_args(k->k[1], 16, "m", p->att_part);
            if (rc == CL_SUCCESS && k->parts > 1 && k->k[4]) rc = set_args(k->k[4], 17, "mm", p->att_part, p->att_cnt);
            if (rc == CL_SUCCESS && k->parts > 1) rc = set_args(k->k[2], 2, "m", p->att_part);
        }
        else if (k->n->op == LOOM_OP_ROPE)
            rc = set_args(k->k[0], 4, "ml", p->rope, /* the tables are rows of one buffer */
                          (cl_ulong)k->tab * (cl_ulong)p->max_t * (cl_ulong)p->h2_max * 2);
        if (rc != CL_SUCCESS) st = loom__ocl_fail(rc, "clSetKernelArg", "binding the step buffer");
    }
    if (!st && d->fuse) st = plan_decode(d, p);
    if (st) {
        loom__ocl_release(d, p);
        return st;
    }
    OCL_LOG(LOOM_LOG_DEBUG, "compiled %d nodes %s", (int)n_nodes, d->label);
    *out = p;
    return LOOM_OK;
}

/* ---- execute (enqueue) ---------------------------------------------------------------------- */
static size_t round_up(size_t v, size_t m) { return (v + m - 1) / m * m; }

/* LOOM_OPENCL_PROFILE=1: the step's kernels are kept with their nodes, and once the step
 * is done each node's time on the device is logged (info), with the time the device sat
 * idle before it: kernels run back to back as without the profile, so this is where a
 * step's time goes (launch gaps included) without a wait per node skewing it. */
static bool prof_keep(ocl_dev *d, cl_event ev, int32_t node, cl_kernel k)
{
    if (d->npev == d->pev_cap) {
        int32_t cap = d->pev_cap ? 2 * d->pev_cap : 256;
        cl_event *e = realloc(d->pev, (size_t)cap * sizeof *e);
        if (e) d->pev = e;
        int32_t *n = e ? realloc(d->pev_node, (size_t)cap * sizeof *n) : NULL;
        if (n) d->pev_node = n;
        cl_kernel *kk = n ? realloc(d->pev_kern, (size_t)cap * sizeof *kk) : NULL;
        if (!kk) return false; /* that kernel goes untimed */
        d->pev_kern = kk, d->pev_cap = cap;
    }
    d->pev[d->npev] = ev, d->pev_node[d->npev] = node, d->pev_kern[d->npev++] = k;
    return true;
}

static double host_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static void prof_report(ocl_dev *d, const ocl_prog *p, const loom_step *step, double enq_ms)
{
    clFinish(d->queue);
    double busy = 0, idle = 0, node_ms = 0, node_idle = 0;
    cl_ulong first = 0, prev_end = 0;
    for (int32_t e = 0; e < d->npev; e++) {
        cl_ulong t0 = 0, t1 = 0;
        clGetEventProfilingInfo(d->pev[e], CL_PROFILING_COMMAND_START, sizeof t0, &t0, NULL);
        clGetEventProfilingInfo(d->pev[e], CL_PROFILING_COMMAND_END, sizeof t1, &t1, NULL);
        clReleaseEvent(d->pev[e]);
        double gap = e && t0 > prev_end ? (double)(t0 - prev_end) * 1e-6 : 0;
        if (!e) first = t0;
        prev_end = t1;
        node_ms += (double)(t1 - t0) * 1e-6, node_idle += gap, busy += (double)(t1 - t0) * 1e-6, idle += gap;
        int32_t i = d->pev_node[e];
        char kn[64] = "?"; /* each kernel of the node, at debug level (prof-summary.py --kernels) */
        clGetKernelInfo(d->pev_kern[e], CL_KERNEL_FUNCTION_NAME, sizeof kn, kn, NULL);
        kn[sizeof kn - 1] = 0;
        OCL_LOG(LOOM_LOG_DEBUG, "node %d kernel %s: %.4f ms, idle before %.4f ms", (int)i, kn, (double)(t1 - t0) * 1e-6, gap);
        if (e + 1 < d->npev && d->pev_node[e + 1] == i) continue; /* the node's next kernel */
        const loom_tensor *y = p->kn[i].n->dst;
        int T = (y->flags & LOOM_TENSOR_DYNAMIC) ? (int)step->n_tokens : (int)y->shape[0];
        OCL_LOG(LOOM_LOG_INFO, "node %d (%s '%s', %d rows): %.4f ms, idle before %.4f ms", (int)i,
                loom_op_str(p->kn[i].n->op), y->name ? y->name : "?", T, node_ms, node_idle);
        node_ms = node_idle = 0;
    }
    OCL_LOG(LOOM_LOG_INFO,
            "step of %d tokens: %.3f ms on the device, %.3f ms in %d kernels, %.3f ms idle between; "
            "%.3f ms on the host to enqueue them",
            (int)step->n_tokens, d->npev ? (double)(prev_end - first) * 1e-6 : 0.0, busy, (int)d->npev, idle, enq_ms);
    d->npev = 0;
}

static loom_status enqueue(ocl_dev *d, cl_kernel k, cl_uint dims, const size_t *global, const size_t *local,
                           int32_t idx, const char *op)
{
    cl_event ev = NULL;
    cl_int rc = clEnqueueNDRangeKernel(d->queue, k, dims, NULL, global, local, 0, NULL, d->profile ? &ev : NULL);
    d->launches++;
    /* hand the queued kernels to the device: NVIDIA's driver holds them until a
     * flush or a wait. The step's first launch at once, so that the device starts
     * while the host enqueues the rest, then every flush_every. */
    if (rc == CL_SUCCESS && d->flush_every && (d->launches == 1 || d->launches % d->flush_every == 0)) clFlush(d->queue);
    if (ev && !prof_keep(d, ev, idx, k)) clReleaseEvent(ev);
    if (rc != CL_SUCCESS) {
        char what[192];
        snprintf(what, sizeof what, "running node %d (%s) %s", (int)idx, op, d->label);
        return loom__ocl_fail(rc, "clEnqueueNDRangeKernel", what);
    }
    return LOOM_OK;
}

/* The step's positions and slots, and each RoPE table's cos/sin rows (in
 * double, as the CPU backend does), uploaded into the program's buffers.
 * The writes do not block (the host would otherwise wait for the queue to
 * drain before enqueueing the step's kernels): they copy from the program's
 * own host arrays, which are rewritten only after the previous step's
 * upload has completed (up_ev). */
static loom_status upload_step(ocl_dev *d, ocl_prog *p, const loom_step *step, int32_t T)
{
    if ((p->uses_step || p->n_tabs) && (!step->pos || (p->uses_step && !step->seq)))
        return OCL_FAIL(LOOM_ERR_INVALID, "rope and gqa_attn need the step's positions (and slots)");
    if (!p->uses_step && !p->n_tabs) return LOOM_OK;
    for (int j = 0; j < 2; j++) {
        if (!p->up_ev[j]) continue;
        cl_int rc = clWaitForEvents(1, &p->up_ev[j]);
        clReleaseEvent(p->up_ev[j]);
        p->up_ev[j] = NULL;
        if (rc != CL_SUCCESS) return loom__ocl_fail(rc, "clWaitForEvents", "(the previous step's upload)");
    }
    if (p->uses_step) {
        memcpy(p->step_host, step->pos, (size_t)T * 4);
        memcpy(p->step_host + p->max_t, step->seq, (size_t)T * 4);
        OCL_CHECK(clEnqueueWriteBuffer(d->queue, p->step, CL_FALSE, 0, (size_t)p->max_t * 4 + (size_t)T * 4,
                                       p->step_host, 0, NULL, &p->up_ev[0]),
                  "(step positions and slots)");
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
        OCL_CHECK(clEnqueueWriteBuffer(d->queue, p->rope, CL_FALSE, 0, bytes, p->rope_host, 0, NULL, &p->up_ev[1]),
                  "(RoPE tables)");
    }
    return LOOM_OK;
}

/* attn_dec's partitions for a step of T <= GEMV_MAXT rows reaching L positions:
 * one up to d->att_one positions (LOOM_OPENCL_ATT_ONE, 0 by default); beyond,
 * enough for about 2 work-groups per compute unit, with partitions of one
 * round to ATT_PLMAX positions. The work-groups per KV head are HB per run of
 * rows of one slot (at most ATT_NQ / (heads per block) rows, as the kernel
 * groups them). */
static int32_t dec_parts(const ocl_dev *d, const knode *k, const loom_step *step, int32_t T, int32_t L, int32_t Hkv,
                         int32_t HB)
{
    if (L <= d->att_one && L <= ATT_PLMAX) return 1;
    int32_t G = k->n->p.n_head / Hkv, ng = (G + HB - 1) / HB, R = HB == 1 ? ATT_NQ / ng : 1, runs = 0;
    for (int32_t t = 0; t < T; t++) { /* rows t whose rank among the rows of their slot is a multiple of R */
        int32_t r = 0;
        for (int32_t u = 0; u < t; u++) r += step->seq[u] == step->seq[t];
        runs += r % R == 0;
    }
    int32_t wgs = Hkv * HB * runs, fill = (2 * d->cus + wgs - 1) / wgs;
    int32_t DP = att_round(d), lo = (L + ATT_PLMAX - 1) / ATT_PLMAX, hi = (L + DP - 1) / DP;
    int32_t P = fill < hi ? fill : hi;
    if (P < lo) P = lo;
    return P < k->parts ? P : k->parts;
}

static loom_status run_node(ocl_dev *d, ocl_prog *p, knode *k, int32_t idx, int32_t T, const loom_step *step)
{
    const loom_node *n = k->n;
    const ocl_cfg *c = &d->cfg;
    const char *op = loom_op_str(n->op);
    size_t g[3], l[3];
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
        bool gemv = T <= GEMV_MAXT && k->gv != GV_GEMM;
        int j = k->gv == GV_ANY ? 0 : T <= 1 ? 0 : T <= 2 ? 1 : T <= 4 ? 2 : 3; /* NT = 1, 2, 4, 8 */
        bool awq = n->op == LOOM_OP_MATMUL_AWQ;
        int32_t mtiles = awq ? k->mtiles : mma_tiles(cols);
        int rows = !gemv && k->mma ? mma_rows(d) : 0;
        cl_kernel kk = k->k[gemv ? j : rows == 64 ? 5 : 4];
        if ((rc = awq ? awq_rows(kk, &k->al[gemv ? j : rows == 64 ? 5 : 4], T) : set_args(kk, 9, "i", (int)T)) !=
            CL_SUCCESS)
            break;
        if (rows) {
            mma_geometry(T, mtiles, rows, g, l);
            return enqueue(d, kk, 2, g, l, idx, op);
        }
        if (!gemv) {
            size_t nth = (size_t)(c->gt_n / 8) * (size_t)(c->gt_t / c->gt_tm);
            size_t tiles = awq ? (size_t)k->gtiles : ((size_t)cols + c->gt_n - 1) / c->gt_n;
            g[0] = tiles * nth, g[1] = ((size_t)T + c->gt_t - 1) / c->gt_t;
            l[0] = nth, l[1] = 1;
            return enqueue(d, kk, 2, g, l, idx, op);
        }
        if (k->gv == GV_ANY) {
            g[0] = (((size_t)cols + c->gemv_r - 1) / c->gemv_r) * (size_t)c->gemv_w, l[0] = (size_t)c->gemv_w;
            return enqueue(d, kk, 1, g, l, idx, op);
        }
        if (n->op == LOOM_OP_MATMUL) { /* 32 work-items per column */
            size_t r = (size_t)c->gv_wg / 32;
            g[0] = (((size_t)cols + r - 1) / r) * (size_t)c->gv_wg, l[0] = (size_t)c->gv_wg;
            return enqueue(d, kk, 1, g, l, idx, op);
        }
        l[0] = (size_t)(c->gv_wg / k->slices), l[1] = (size_t)k->slices; /* columns x K slices */
        g[0] = round_up((size_t)k->gcols, l[0]), g[1] = l[1];
        return enqueue(d, kk, 2, g, l, idx, op);
    }
    case LOOM_OP_ROPE: {
        size_t n1 = (size_t)T * (size_t)n->p.n_head * (size_t)(n->p.head_dim / 2), total = n1;
        if (k->fuse) total += (size_t)T * (size_t)k[1].n->p.n_head * (size_t)(n->p.head_dim / 2); /* k's pairs */
        if ((rc = set_args(k->k[0], 8, "l", (cl_ulong)total)) != CL_SUCCESS) break;
        if ((rc = set_args(k->k[0], 14, "l", (cl_ulong)n1)) != CL_SUCCESS) break;
        g[0] = round_up(total, (size_t)c->ew_w), l[0] = (size_t)c->ew_w;
        return enqueue(d, k->k[0], 1, g, l, idx, op);
    }
    case LOOM_OP_GQA_ATTN: {
        loom_status st = LOOM_OK;
        int j = T <= 1 ? 0 : T <= 2 ? 1 : T <= 4 ? 2 : 3;
        if (!(((k->dkv >> j) & 1) && d->fuse && T <= GEMV_MAXT)) { /* else the q/k/v GEMV stored k and v (plan_decode) */
            if ((rc = set_args(k->k[0], 10, "i", (int)T)) != CL_SUCCESS) break;
            g[0] = round_up((size_t)n->p.head_dim, (size_t)c->ew_w), g[1] = (size_t)n->p.n_head_kv;
            l[0] = (size_t)c->ew_w, l[1] = 1;
            if ((st = enqueue(d, k->k[0], 2, g, l, idx, op))) return st;
        }
        int32_t L = 1, P = 1, PL, W = c->att_w, H = n->p.n_head;
        if (T > GEMV_MAXT && k->k[3]) { /* prefill: blocks of ATT_BQ rows (the last first) x heads */
            if ((rc = set_args(k->k[3], 10, "i", (int)T)) != CL_SUCCESS) break;
            g[0] = (size_t)c->att_tw * (size_t)H, g[1] = ((size_t)T + ATT_BQ - 1) / ATT_BQ;
            l[0] = (size_t)c->att_tw, l[1] = 1;
            return enqueue(d, k->k[3], 2, g, l, idx, op);
        }
        for (int32_t t = 0; t < T; t++)
            if (step->pos[t] + 1 > L) L = step->pos[t] + 1;
        if (T == 1 && k->k[5] && L <= ATT_SP) { /* one row, a short context: attn_dec1, a work-group per head */
            if ((rc = set_args(k->k[5], 8, "ii", (int)step->pos[0], (int)step->seq[0])) != CL_SUCCESS) break;
            g[0] = (size_t)c->att_sw * (size_t)H * (size_t)d->att_vs, l[0] = (size_t)c->att_sw;
            return enqueue(d, k->k[5], 1, g, l, idx, op);
        }
        if (T <= GEMV_MAXT && k->k[4]) { /* decode: attn_dec, work-groups (KV head x block of heads, row, partition) */
            int32_t DP = att_round(d), Hkv = n->p.n_head_kv, HB = (H / Hkv + ATT_NQ - 1) / ATT_NQ;
            P = dec_parts(d, k, step, T, L, Hkv, HB);
            PL = ((L + P - 1) / P + DP - 1) / DP * DP;
            P = (L + PL - 1) / PL;
            if ((rc = set_args(k->k[4], 10, "i", (int)T)) != CL_SUCCESS || (rc = set_args(k->k[4], 16, "i", (int)PL)) ||
                (rc = set_args(k->k[4], 19, "i", (int)(P <= ATT_JOIN))))
                break;
            g[0] = (size_t)c->att_dw * (size_t)Hkv * (size_t)HB, g[1] = (size_t)T, g[2] = (size_t)P;
            l[0] = (size_t)c->att_dw, l[1] = l[2] = 1;
            if ((st = enqueue(d, k->k[4], 3, g, l, idx, op)) || P <= ATT_JOIN) return st;
        } else { /* attn: partitions of PL positions (a multiple of the work-group), for a
                  * few rows enough of them for about 4 work-groups per compute unit */
            if (T <= GEMV_MAXT && k->parts > 1) {
                int32_t want = (d->cus * 4 + H * T - 1) / (H * T), chunks = (L + W - 1) / W;
                P = want < k->parts ? want : k->parts;
                if (P > chunks) P = chunks;
                if (P < 1) P = 1;
            }
            PL = ((L + P - 1) / P + W - 1) / W * W;
            P = (L + PL - 1) / PL;
            if ((rc = set_args(k->k[1], 15, "i", (int)PL)) != CL_SUCCESS) break;
            g[0] = (size_t)W * (size_t)H, g[1] = (size_t)T, g[2] = (size_t)P, l[0] = (size_t)W, l[1] = l[2] = 1;
            if ((st = enqueue(d, k->k[1], 3, g, l, idx, op)) || P == 1) return st;
        }
        if ((rc = set_args(k->k[2], 5, "i", (int)P)) != CL_SUCCESS) break;
        g[0] = (size_t)W * (size_t)H, g[1] = (size_t)T, l[0] = (size_t)W, l[1] = 1;
        return enqueue(d, k->k[2], 2, g, l, idx, op);
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
    double t0 = host_ms();
    loom_status st = upload_step(d, p, step, step->n_tokens);
    d->launches = 0;
    for (int32_t i = 0; i < p->n && !st; i++) {
        const loom_tensor *y = p->kn[i].n->dst;
        int32_t T = (y->flags & LOOM_TENSOR_DYNAMIC) ? step->n_tokens : (int32_t)y->shape[0];
        knode *k = &p->kn[i];
        int j = T <= 1 ? 0 : T <= 2 ? 1 : T <= 4 ? 2 : 3; /* NT = 1, 2, 4, 8 */
        bool dec = d->fuse && T <= GEMV_MAXT;
        size_t g[2], l[2];
        /* skip what runs in another node's launch (plan_decode; fuse_nodes) */
        if (dec && (((k->dmember >> j) & 1) || (k->n->op == LOOM_OP_RMSNORM && ((k->dnorm >> j) & 1)))) continue;
        if (dec && k->kd[j]) { /* a fused decode GEMV: columns x K slices */
            cl_int rc = awq_rows(k->kd[j], &k->al[KMAX + j], T);
            if (rc != CL_SUCCESS) return loom__ocl_fail(rc, "clSetKernelArg", "(rows of a decode GEMV)");
            l[0] = (size_t)k->dwx[j], l[1] = (size_t)k->ds[j], g[0] = (size_t)k->dgroups[j] * l[0], g[1] = l[1];
            st = enqueue(d, k->kd[j], 2, g, l, i, loom_op_str(k->n->op));
        } else if (dec && ((k->dkr >> j) & 1)) { /* an rmsnorm whose add ran in a decode GEMV */
            g[0] = (size_t)d->cfg.red_w * (size_t)T, l[0] = (size_t)d->cfg.red_w;
            st = enqueue(d, k->kr, 1, g, l, i, loom_op_str(k->n->op));
        } else {
            if (k->fuse < 0 || k->fused) continue;
            st = run_node(d, p, k, i, T, step);
        }
    }
    double enq = host_ms() - t0; /* the host's time for the step's uploads and launches */
    if (d->profile) prof_report(d, p, step, enq);
    if (!st)
        OCL_LOG(LOOM_LOG_DEBUG, "step of %d tokens: %d launches for %d nodes, enqueued in %.3f ms", (int)step->n_tokens,
                (int)d->launches, (int)p->n, enq);
    return st;
}

loom_status loom__ocl_check_kernel_error(ocl_dev *d)
{
    cl_int e[4];
    OCL_CHECK(clEnqueueReadBuffer(d->queue, d->err, CL_TRUE, 0, sizeof e, e, 0, NULL, NULL), "(the error word)");
    return loom__ocl_kernel_error(d, e);
}

/* e: the error word as read back; a reported error is cleared on the device. */
loom_status loom__ocl_kernel_error(ocl_dev *d, const cl_int e[4])
{
    if (!e[0]) return LOOM_OK;
    cl_int zeros[4] = {0};
    OCL_CHECK(clEnqueueWriteBuffer(d->queue, d->err, CL_TRUE, 0, sizeof zeros, zeros, 0, NULL, NULL), "(the error word)");
    if (e[0] == 1)
        return OCL_FAIL(LOOM_ERR_INVALID, "embed: token %d has id %d, outside the vocabulary 0..%d", e[1], e[2], e[3] - 1);
    return OCL_FAIL(LOOM_ERR_INTERNAL, "a kernel reported error %d (%d, %d, %d)", e[0], e[1], e[2], e[3]);
}

/* ---- the tensor-core GEMMs' self-test ---------------------------------------------
 * At device open, when mma.cl is built: a small random shape (ragged in T and
 * N) through mma_gemm_f16, mma_awq_gemm, their 64-row (_t64) variants and the
 * portable GEMMs;
 * NMSE above 1e-5 (x rounded to f16 costs ~1e-7) turns the path off. */
static double nmse_of(const float *a, const float *b, size_t n)
{
    double se = 0, ss = 0;
    for (size_t i = 0; i < n; i++) se += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), ss += (double)b[i] * b[i];
    return ss > 0 && se == se ? se / ss : 1.0;
}

bool loom__ocl_mma_selftest(ocl_dev *d)
{
    enum { T = 150, K = 256, N = 201 }; /* 2 x 2 tiles, both ragged; odd N: the epilogue's unpaired stores */
    size_t nq = (size_t)K / 32 * N * 4, nm = (size_t)K / 128 * N;
    float *x = malloc(sizeof(float) * T * K), *y = malloc(sizeof(float) * T * N * 2);
    uint16_t *wf = malloc(sizeof(uint16_t) * N * K);
    uint32_t *wq = malloc(sizeof(uint32_t) * (nq + nm));
    cl_mem bx = NULL, bwf = NULL, bwq = NULL, by = NULL;
    cl_kernel ks[6] = {NULL};
    const char *why = "out of memory";
    double err[2] = {0, 0};
    if (!x || !y || !wf || !wq) goto done;
    uint32_t r = 0x9e3779b9u;
#define RND() (r ^= r << 13, r ^= r >> 17, r ^= r << 5, r)
    for (int i = 0; i < T * K; i++) x[i] = (float)RND() / 4294967296.0f * 2.0f - 1.0f;
    for (int i = 0; i < N * K; i++) wf[i] = loom_f32_to_f16(((float)RND() / 4294967296.0f - 0.5f) * 0.1f);
    for (size_t i = 0; i < nq; i++) wq[i] = RND();
    for (size_t i = 0; i < nm; i++) {
        uint32_t zp = RND() % 16;
        wq[nq + i] = loom_f32_to_f16(0.01f + (float)(RND() % 1000) * 2e-5f) | zp << 16;
    }
#undef RND
    cl_int rc = CL_SUCCESS;
    bx = clCreateBuffer(d->ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, sizeof(float) * T * K, x, &rc);
    if (rc == CL_SUCCESS) bwf = clCreateBuffer(d->ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, sizeof(uint16_t) * N * K, wf, &rc);
    if (rc == CL_SUCCESS) bwq = clCreateBuffer(d->ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, sizeof(uint32_t) * (nq + nm), wq, &rc);
    if (rc == CL_SUCCESS) by = clCreateBuffer(d->ctx, CL_MEM_READ_WRITE, sizeof(float) * T * N * 2, NULL, &rc);
    why = "allocating buffers";
    if (rc != CL_SUCCESS) goto done;
    /* per weight type: the portable GEMM (into y), then mma.cl's 128- and 64-row kernels (into y + T N) */
    static const char *const names[6] = {"matmul_gemm_f16", "mma_gemm_f16", "mma_gemm_f16_t64",
                                         "awq_gemm",        "mma_awq_gemm", "mma_awq_gemm_t64"};
    why = "creating the kernels";
    for (int i = 0; i < 6 && rc == CL_SUCCESS; i++) ks[i] = clCreateKernel(d->program, names[i], &rc);
    if (rc != CL_SUCCESS) goto done;
    const ocl_cfg *c = &d->cfg;
    size_t nth = (size_t)(c->gt_n / 8) * (size_t)(c->gt_t / c->gt_tm), z = 0;
    for (int i = 0; i < 6 && rc == CL_SUCCESS; i++) {
        bool mma = i % 3 != 0;
        cl_ulong yo = mma ? (cl_ulong)T * N : 0;
        if (i < 3)
            rc = set_args(ks[i], 0, "mlmlmlmliiii", by, yo, bx, z, bwf, z, d->dummy, z, 0, T, K, N);
        else { /* (awq.cl AWQ_PARAMS) x, then one weight */
            awq_launch al;
            awq_init(&al, K, bx, 0);
            al.a.T = T, al.a.N[0] = N;
            awq_put(&al, &al.a.my[0], &al.a.yo[0], by, yo), awq_put(&al, &al.a.mw[0], NULL, bwq, 0);
            rc = awq_bind(ks[i], &al);
        }
        size_t g[2], l[2] = {nth, 1};
        g[0] = (size_t)(N + c->gt_n - 1) / c->gt_n * nth, g[1] = (size_t)(T + c->gt_t - 1) / c->gt_t;
        if (mma) mma_geometry(T, mma_tiles(N), i % 3 == 1 ? MMA_T : 64, g, l);
        if (rc == CL_SUCCESS) rc = clEnqueueNDRangeKernel(d->queue, ks[i], 2, NULL, g, l, 0, NULL, NULL);
        if (rc == CL_SUCCESS && mma)
            rc = clEnqueueReadBuffer(d->queue, by, CL_TRUE, 0, sizeof(float) * T * N * 2, y, 0, NULL, NULL);
        if (rc == CL_SUCCESS && mma) {
            double e = nmse_of(y + T * N, y, (size_t)T * N); /* (NaN: 1) */
            if (e > err[i / 3]) err[i / 3] = e;
        }
    }
    why = "running the kernels";
    if (rc != CL_SUCCESS) goto done;
    why = err[0] <= 1e-5 && err[1] <= 1e-5 ? NULL : "results differ from the portable GEMMs";
done:
    if (why && !strcmp(why, "out of memory")) err[0] = err[1] = 1;
    for (int i = 0; i < 6; i++)
        if (ks[i]) clReleaseKernel(ks[i]);
    cl_mem ms[4] = {bx, bwf, bwq, by};
    for (int i = 0; i < 4; i++)
        if (ms[i]) clReleaseMemObject(ms[i]);
    free(x), free(y), free(wf), free(wq);
    if (why) {
        OCL_LOG(LOOM_LOG_WARN, "tensor-core prefill self-test failed %s: %s (NMSE f16 %.3g, AWQ %.3g); using the portable GEMMs",
                d->label, why, err[0], err[1]);
        return false;
    }
    OCL_LOG(LOOM_LOG_DEBUG, "tensor-core prefill self-test %s: NMSE f16 %.3g, AWQ %.3g", d->label, err[0], err[1]);
    return true;
}
