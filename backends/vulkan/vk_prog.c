/* vk_prog.c — programs: what supports() accepts, compile, record, execute.
 *
 * compile() turns each node into one or more dispatches: a pipeline (made once
 * per shader and specialisation, shared by the device), a descriptor set
 * (made once, here) binding each tensor at its own range, and push
 * constants. A weight larger than maxStorageBufferRange (lavapipe: 128 MiB,
 * e.g. a 151936-row embedding or lm_head) is cut into row pieces, one
 * dispatch each. matmul and matmul_awq have alternatives per piece: GEMV
 * variants specialised for 1, 2, 3-4 and 5-8 tokens (the 16-byte-load
 * shaders; the scalar gemv.comp covers 1-8 when a row or offset is not whole
 * 16 bytes) and a tiled GEMM above 8, made only for what the graph's token
 * count can reach; the recording picks one by the step's token count.
 *
 * Step state: each program owns a small host-visible "step buffer" that the
 * shaders read (binding 7): n_tokens, an error-flag word, pos[maxT],
 * seq[maxT] and, per rope node, the step's cos/sin table (computed on the
 * host in double from loom_rope_inv_freq, so every position rotates exactly
 * as on the CPU). execute() writes it, then submits the command buffer for
 * this step's token count and attention variant (cmd_variant): command
 * buffers are recorded lazily, once per distinct pair, and replayed (grids
 * are sized for n_tokens exactly, so nothing is launched for rows that do
 * not exist). Barriers are recorded only between dispatches whose buffer
 * ranges conflict (read after write, write after read or write).
 *
 * Decode fusion (plan_fusion; off with LOOM_VK_FUSE=0): for steps of <= 8
 * tokens, a Qwen2 layer's AWQ GEMVs take the nodes around them into one
 * gemv_awq_fused dispatch each: rmsnorm + q/k/v + bias + RoPE + the k, v
 * store of gqa_attn; o_proj + residual add; rmsnorm + gate/up + swiglu;
 * down_proj + residual add. With gqa_attn's attention pass that is 5
 * dispatches per layer instead of 16 (6 in steps with a row of more
 * partitions than attn_dec joins itself: attn_merge). The replaced nodes
 * keep their own dispatches for larger steps only.
 *
 * Attention (attn_plan): decode steps take attn_dec.comp, one work-group per
 * (KV head, row, cache partition) serving the GQA group's query heads from
 * one read of K and V, partitions joined by the last work-group of a row to
 * finish (up to ATT_JOIN of them) or by attn_merge; one-row steps over at
 * most ATT_SP positions attn_dec1.comp where it fits; prefill takes
 * attn_tile.comp, blocks of 32 rows sharing K/V tiles in shared memory;
 * attn.comp covers what they do not (head_dim > 128 or not a multiple of 8,
 * a cache not on 16 bytes, too little shared memory).
 *
 * LOOM_VK_PROFILE=1 (d->profile): the command buffers are recorded with a
 * timestamp before each dispatch (top of pipe, after its barrier) and after
 * it (bottom of pipe), and every step waits for its results: each kernel's
 * device time and the idle time before it, summed per shader (and per
 * weight shape for matmuls, with their TFLOP/s) at info level, each dispatch
 * at debug. Dispatches with no barrier between them may overlap; their
 * times then overlap too. Without the variable nothing is recorded. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vk_impl.h"

typedef struct {
    VkBuffer     buf;
    VkDeviceSize lo, hi;
    bool         write;
} vk_access;

typedef enum {
    G_FIXED,   /* gx fixed */
    G_ROWS_X,  /* one workgroup per row */
    G_ROWS_Y,  /* gx fixed, gy = rows */
    G_ROWS_Y32,/* gx fixed, gy = ceil(rows / 32) */
    G_ROWS_Y64,/* gx fixed, gy = ceil(rows / 64) */
    G_ROWS_Y128,/* gx fixed, gy = ceil(rows / 128) */
    G_ELEM,    /* ceil(rows * cols / 256) workgroups, flat; pc[7] = rows * cols */
    G_FLAT,    /* gx workgroups, flat (over x and y when above 65535) */
} grid_mode;

typedef struct {
    VkPipeline             pipe;
    VkDescriptorSet        set;
    VkDescriptorBufferInfo info[VK_BINDINGS];
    uint32_t               pc[VK_PC_WORDS];
    grid_mode              mode;
    uint32_t               gx, gz;       /* gz: work-groups along z (1 but for attn_dec) */
    uint8_t                att;          /* V_*: recorded only in the command buffers of some steps (cmd_variant) */
    int64_t                cols;         /* G_ELEM */
    int32_t                min_t, max_t; /* used when min_t <= rows <= max_t */
    bool                   dyn;
    int64_t                rows;         /* when not dynamic */
    vk_access              acc[VK_BINDINGS + 2];
    int                    n_acc;
    const loom_node       *node;         /* what it computes (a fusion: its lead) */
} vk_disp;

/* Which decode attention a step runs depends on its positions, so each token
 * count has up to four command buffers, keyed by cmd_variant's bits: V_SHORT_STEP,
 * a one-row step over at most ATT_SP positions (attn_dec1, not attn_dec);
 * V_MERGE_STEP, a row with more partitions than attn_dec joins (attn_merge). */
enum { V_ALL, V_SHORT, V_LONG, V_MERGE };        /* vk_disp.att: always; only short; not short; only merging */
enum { V_SHORT_STEP = 1, V_MERGE_STEP = 2, V_STEPS = 4 };

typedef struct {
    loom_op_params p;
    uint32_t       base; /* word in the step buffer */
    double        *inv_freq;
    double         mscale;
} vk_rope;

/* Decode fusion (steps of <= VK_GEMV_MAX_T tokens): a run of nodes around
 * AWQ GEMVs that one gemv_awq_fused dispatch computes. The lead node (the
 * first GEMV) carries the fused dispatches; the lead's and the members' own
 * dispatches are kept only for larger steps. Intermediates a fusion leaves
 * unwritten are read by no other node and are not LOOM_TENSOR_OUTPUT. */
enum { F_NONE, F_LEAD, F_MEMBER, F_KV /* gqa_attn whose k, v store the lead does */ };
enum { M_QKV = 1, M_SWIGLU = 2, M_ADD = 3 }; /* as in gemv_awq.comp */

typedef struct {
    int                   mode, nw;
    const loom_node      *mm[3];   /* the GEMVs, sharing x */
    const loom_node      *norm;    /* folded rmsnorm, or NULL */
    const loom_tensor    *x;       /* what the dispatch reads: the rmsnorm's input when norm */
    const loom_tensor    *y[3];    /* result of weight w (after its RoPE); M_SWIGLU, M_ADD: y[0] */
    bool                  ywrite[3];
    const loom_op_params *rope[3]; /* RoPE folded into weight w (0, 1) */
    const loom_node      *attn;    /* M_QKV: k (w 1), v (w 2) stored into its caches */
    const loom_tensor    *r;       /* M_ADD: the residual */
    int                   xin;     /* x arrives quantised in link buffer xin - 1 (0: none) ... */
    int                   xout;    /* ... y[0] leaves quantised in link buffer xout - 1, for a fusion ... */
    const loom_node      *xnorm;   /* ... whose folded rmsnorm is this (or none) */
} vk_fuse;

typedef struct vk_prog {
    vk_dev          *d;
    loom_node       *nodes;
    int32_t          n_nodes;
    vk_disp         *disp;
    int32_t          n_disp, cap;
    VkDescriptorPool dpool;
    loom_buffer     *step;     /* host-visible step buffer */
    int32_t          max_t;
    uint32_t         seq_base; /* word of seq[0]; pos[0] is word 4 */
    bool             needs_pos;
    vk_rope         *ropes;
    int32_t          n_rope;
    const loom_tensor *attn_cache[64]; /* first kv caches, for execute's bounds check */
    int32_t          n_attn;
    loom_buffer     *part;     /* split decode attention's partials (attn_dec.comp), shared by the nodes, ... */
    size_t           cnt_off;  /* ... then at this byte its counters */
    loom_buffer     *xlink;    /* the two link buffers of plan_links, ... */
    size_t           xlink_sz; /* ... each this many bytes */
    uint8_t         *role;     /* [n_nodes] F_*: the node's part in a decode fusion */
    bool             has_short;   /* some dispatch is V_SHORT */
    uint32_t         merge[2];    /* attn_merge's plan (fill, pmax: attn_dec's p[14], p[15]) ... */
    bool             merge_mixed; /* ... or plans differ between nodes: merge in every step */
    VkCommandBuffer *cmd;      /* [(max_t + 1) * V_STEPS] by token count and cmd_variant, recorded on first use */
    VkQueryPool      qpool;    /* LOOM_VK_PROFILE: 2 timestamps per dispatch */
    int32_t        **rec;      /* LOOM_VK_PROFILE: as cmd, the dispatches each runs: count, then indices */
    struct vk_prog  *prev, *next;
} vk_prog;

/* ---- what it runs ---------------------------------------------------------------- */
static size_t dt_size(loom_dtype dt) { return dt == LOOM_F16 || dt == LOOM_BF16 ? 2 : 4; }

static bool is_float_dt(loom_dtype dt) { return dt == LOOM_F32 || dt == LOOM_F16 || dt == LOOM_BF16; }

static uint32_t dt_code(loom_dtype dt) { return dt == LOOM_F16 ? 1u : dt == LOOM_BF16 ? 2u : 0u; }

static size_t nbytes(const loom_tensor *t) /* in device memory */
{
    if (t->dtype == LOOM_Q4_AWQ) return loom__vk_awq_bytes(t->shape[0], t->shape[1]);
    size_t n = dt_size(t->dtype);
    for (int32_t i = 0; i < t->ndim; i++) n *= (size_t)t->shape[i];
    return n;
}

static bool act2(const loom_tensor *t, int64_t cols)
{
    return t && t->dtype == LOOM_F32 && t->ndim == 2 && t->shape[0] >= 1 && t->shape[0] <= 65535 &&
           (cols < 0 || t->shape[1] == cols) && t->shape[1] >= 1;
}

static bool fits(const vk_dev *d, size_t bytes) { return bytes + d->align <= d->max_range; }

bool loom__vk_supports(void *dctx, const loom_node *n)
{
    vk_dev *d = dctx;
    const loom_tensor *y = n->dst, *const *s = (const loom_tensor *const *)n->src;
    if (!act2(y, -1) || !fits(d, nbytes(y))) return false;
    int64_t T = y->shape[0], cols = y->shape[1];
    for (int i = 0; i < n->n_src && i < LOOM_MAX_SRC; i++) /* activations: same rows as the output */
        if (s[i] && s[i]->dtype == LOOM_F32 && !(s[i]->flags & LOOM_TENSOR_WEIGHT) && s[i]->ndim == 2 &&
            (s[i]->shape[0] != T || (s[i]->flags & LOOM_TENSOR_DYNAMIC) != (y->flags & LOOM_TENSOR_DYNAMIC)))
            return false;
    switch (n->op) {
    case LOOM_OP_EMBED:
        return s[0] && is_float_dt(s[0]->dtype) && s[0]->ndim == 2 && s[0]->shape[1] == cols && s[0]->shape[0] >= 1 &&
               fits(d, (size_t)cols * dt_size(s[0]->dtype)) && s[1] && s[1]->dtype == LOOM_I32 && s[1]->ndim == 1 &&
               s[1]->shape[0] == T && (s[1]->flags & LOOM_TENSOR_DYNAMIC) == (y->flags & LOOM_TENSOR_DYNAMIC);
    case LOOM_OP_RMSNORM:
        return act2(s[0], cols) && s[1] && is_float_dt(s[1]->dtype) && s[1]->ndim == 1 && s[1]->shape[0] == cols &&
               n->p.eps >= 0;
    case LOOM_OP_MATMUL: {
        if (!act2(s[0], -1) || !fits(d, nbytes(s[0])) || !s[1] || !is_float_dt(s[1]->dtype) || s[1]->ndim != 2 ||
            s[1]->shape[0] != cols || s[1]->shape[1] != s[0]->shape[1])
            return false;
        if (!fits(d, (size_t)s[1]->shape[1] * dt_size(s[1]->dtype) * 64)) return false; /* a piece >= 64 rows */
        return !s[2] || (is_float_dt(s[2]->dtype) && s[2]->ndim == 1 && s[2]->shape[0] == cols);
    }
    case LOOM_OP_MATMUL_AWQ: {
        if (!act2(s[0], -1) || !fits(d, nbytes(s[0])) || !s[1] || s[1]->dtype != LOOM_Q4_AWQ || s[1]->ndim != 2)
            return false;
        int64_t K = s[1]->shape[0], N = s[1]->shape[1];
        if (K != s[0]->shape[1] || N != cols || K % LOOM_AWQ_GROUP || N % 8 || K < LOOM_AWQ_GROUP) return false;
        if (!fits(d, loom__vk_awq_q_bytes(K, N)) || !fits(d, (size_t)(K / LOOM_AWQ_GROUP * N * 4))) return false;
        return !s[2] || (is_float_dt(s[2]->dtype) && s[2]->ndim == 1 && s[2]->shape[0] == cols);
    }
    case LOOM_OP_ROPE:
        return act2(s[0], cols) && n->p.n_head > 0 && n->p.head_dim > 0 && n->p.head_dim % 2 == 0 &&
               (int64_t)n->p.n_head * n->p.head_dim == cols && n->p.rope_theta > 0 && n->p.head_dim <= 4096;
    case LOOM_OP_GQA_ATTN: {
        int32_t Hq = n->p.n_head, Hkv = n->p.n_head_kv, hd = n->p.head_dim;
        if (Hq <= 0 || Hkv <= 0 || Hq % Hkv || hd <= 0 || hd % 2 || hd > 256 || (int64_t)Hq * hd != cols) return false;
        if (!act2(s[0], cols) || !act2(s[1], (int64_t)Hkv * hd) || !act2(s[2], (int64_t)Hkv * hd)) return false;
        for (int c = 3; c < 5; c++)
            if (!s[c] || (s[c]->dtype != LOOM_F16 && s[c]->dtype != LOOM_F32) || s[c]->ndim != 4 ||
                s[c]->shape[1] != Hkv || s[c]->shape[3] != hd || s[c]->dtype != s[3]->dtype ||
                memcmp(s[c]->shape, s[3]->shape, sizeof s[c]->shape) || !fits(d, nbytes(s[c])))
                return false;
        return true;
    }
    case LOOM_OP_SWIGLU:
    case LOOM_OP_ADD:
        return act2(s[0], cols) && act2(s[1], cols);
    default:
        return false;
    }
}

/* ---- building dispatches ------------------------------------------------------------- */
static vk_disp *new_disp(vk_prog *p, const loom_node *n, VkPipeline pipe, grid_mode mode, uint32_t gx)
{
    if (p->n_disp == p->cap) {
        int32_t cap = p->cap ? p->cap * 2 : 16;
        vk_disp *nd = realloc(p->disp, (size_t)cap * sizeof *nd);
        if (!nd) return NULL;
        p->disp = nd, p->cap = cap;
    }
    vk_disp *x = &p->disp[p->n_disp++];
    memset(x, 0, sizeof *x);
    x->pipe = pipe, x->mode = mode, x->gx = gx, x->gz = 1, x->min_t = 1, x->max_t = 1 << 30;
    x->dyn = n->dst->flags & LOOM_TENSOR_DYNAMIC;
    x->rows = n->dst->shape[0];
    x->node = n;
    for (int i = 0; i < (int)p->d->n_bind; i++) /* unused bindings: the step buffer */
        x->info[i] = (VkDescriptorBufferInfo){p->step->buf, 0, VK_WHOLE_SIZE};
    return x;
}

/* Bind bytes [lo, lo + len) of tensor t at binding b; element size es. */
static loom_status bind(vk_prog *p, vk_disp *x, int b, const loom_tensor *t, size_t lo, size_t len, size_t es, bool write)
{
    vk_dev *d = p->d;
    size_t start = t->offset + lo, al = start / d->align * d->align, rem = start - al;
    if (rem % es) return VK_ERR(LOOM_ERR_UNSUPPORTED, "tensor '%s' is not aligned to its element size", t->name);
    size_t range = (rem + len + 3) / 4 * 4;
    if (range > d->max_range || al + range > ((t->buf->size + 15) / 16 * 16))
        return VK_ERR(LOOM_ERR_UNSUPPORTED, "tensor '%s': a %zu-byte binding exceeds the device's storage range",
                      t->name, range);
    x->info[b] = (VkDescriptorBufferInfo){t->buf->buf, al, range};
    x->pc[1 + b] = (uint32_t)(rem / es);
    x->acc[x->n_acc++] = (vk_access){t->buf->buf, al, al + range, write};
    return LOOM_OK;
}

static uint32_t fbits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* Bytes from lo of tensor t start on 16 bytes: a vec4/uvec4 view of its
 * binding (bind() then pushes an offset that is a whole number of 16 bytes). */
static bool at16(const loom_tensor *t, size_t lo) { return (t->offset + lo) % 16 == 0; }

/* A prefill GEMM's dispatch over cols output columns, for steps above VK_GEMV_MAX_T rows: the
 * tensor cores' tiles (gemm_coop.comp: coop_rows x VK_COOP_N) or the tiled GEMM's (32 x 64). */
static vk_disp *gemm_disp(vk_prog *p, const loom_node *n, VkPipeline pipe, bool coop, int64_t cols)
{
    vk_disp *x = coop ? new_disp(p, n, pipe, p->d->coop_rows == 128 ? G_ROWS_Y128 : G_ROWS_Y64,
                                 (uint32_t)((cols + VK_COOP_N - 1) / VK_COOP_N))
                      : new_disp(p, n, pipe, G_ROWS_Y32, (uint32_t)((cols + 63) / 64));
    if (x) x->min_t = VK_GEMV_MAX_T + 1;
    return x;
}

/* matmul (GEMV or GEMM) on rows n0 .. n0+np of w: 0 x, 1 w, 2 bias, 3 y. */
static loom_status bind_matmul(vk_prog *p, vk_disp *x, const loom_node *n, int64_t n0, int64_t np)
{
    const loom_tensor *y = n->dst, *const *s = (const loom_tensor *const *)n->src;
    int64_t T = y->shape[0], K = s[0]->shape[1], N = y->shape[1];
    size_t es = dt_size(s[1]->dtype), rowb = (size_t)K * es;
    loom_status st;
    if ((st = bind(p, x, 0, s[0], 0, (size_t)T * (size_t)K * 4, 4, false)) ||
        (st = bind(p, x, 1, s[1], (size_t)n0 * rowb, (size_t)np * rowb, es, false)) ||
        (s[2] && (st = bind(p, x, 2, s[2], 0, nbytes(s[2]), dt_size(s[2]->dtype), false))) ||
        (st = bind(p, x, 3, y, 0, (size_t)T * (size_t)N * 4, 4, true)))
        return st;
    x->pc[7] = (uint32_t)K, x->pc[8] = (uint32_t)np, x->pc[9] = (uint32_t)N, x->pc[10] = (uint32_t)n0;
    x->pc[11] = s[2] != NULL;
    return LOOM_OK;
}

/* Dense GEMV: rows per work-group, two per subgroup of the device's default
 * size (128 invocations: 8 rows with subgroups of 32), so lm_head (152064
 * rows) is ~19000 work-groups and a 3584-row layer ~450; without subgroup
 * arithmetic a 64-invocation work-group takes 4 rows, 2 at a time. */
static uint32_t gemv_rows(const vk_dev *d)
{
    if (!d->subgroup) return 4;
    uint32_t teams = d->sg_size >= 128 ? 1 : 128 / d->sg_size;
    return 2 * (teams > 16 ? 16 : teams);
}

/* AWQ GEMV geometry: a work-group is 32 columns x S slices of the K groups,
 * each slice gps consecutive groups. S is the smallest count that gives about
 * AWQ_THREADS invocations (a large GPU full: 132 SMs x ~750, each with 64 to
 * 128 bytes in flight), at most one slice per group, and within the device's
 * limits (32 S invocations, S x nt x 32 floats of shared memory) and within
 * 2048 / nt invocations, so the nt-token variants' registers (4 nt partial
 * sums per invocation) still fit a whole work-group on one multiprocessor;
 * then as even as the group count allows. 7B at 1 token: K=3584 N=3584 or
 * 512 -> 28 slices of 1 group; K=3584 N=18944 -> 6 x 5; K=18944 N=3584 -> 25 x 6. */
#define AWQ_THREADS 98304
static void awq_split(const vk_dev *d, int64_t K, int64_t N, uint32_t nt, uint32_t extra, uint32_t *slices,
                      uint32_t *gps) /* extra: bytes of shared memory besides the slice partials */
{
    int64_t G = K / LOOM_AWQ_GROUP, smax = 64 / nt;
    if (smax > 32) smax = 32;
    if (smax > d->wg_max / 32) smax = d->wg_max / 32;
    if (smax > d->wg_max_y) smax = d->wg_max_y;
    if (smax > (int64_t)(d->shared_max - extra) / (32 * 4 * nt)) smax = (int64_t)(d->shared_max - extra) / (32 * 4 * nt);
    if (smax > G) smax = G;
    if (smax < 1) smax = 1;
    int64_t sl = (AWQ_THREADS + N - 1) / N;
    sl = sl < 1 ? 1 : sl > smax ? smax : sl;
    int64_t g = (G + sl - 1) / sl;
    *gps = (uint32_t)g;
    *slices = (uint32_t)((G + g - 1) / g);
}

/* ---- decode fusion: plan ---------------------------------------------------------- */
static bool overlap(const loom_tensor *a, const loom_tensor *b)
{
    return a->buf == b->buf && a->offset < b->offset + nbytes(b) && b->offset < a->offset + nbytes(a);
}

static int uses(const vk_prog *p, const loom_tensor *t)
{
    int u = 0;
    for (int32_t i = 0; i < p->n_nodes; i++)
        for (int k = 0; k < p->nodes[i].n_src && k < LOOM_MAX_SRC; k++) u += p->nodes[i].src[k] == t;
    return u;
}

/* t is read by exactly k nodes and by nobody after the program: a fusion may leave it unwritten */
static bool private_k(const vk_prog *p, const loom_tensor *t, int k)
{
    return !(t->flags & LOOM_TENSOR_OUTPUT) && uses(p, t) == k;
}

static bool same_rows(const loom_tensor *a, const loom_tensor *b)
{
    return a->shape[0] == b->shape[0] && (a->flags & LOOM_TENSOR_DYNAMIC) == (b->flags & LOOM_TENSOR_DYNAMIC);
}

static const loom_tensor *bias_of(const loom_node *n) { return n->n_src > 2 ? n->src[2] : NULL; }

/* another GEMV on x that can join the lead a: same K, a bias of the same dtype (or none) */
static bool awq_whole(const vk_prog *p, const loom_node *n) /* q and meta fit one binding */
{
    return n->op == LOOM_OP_MATMUL_AWQ && fits(p->d, loom__vk_awq_bytes(n->src[1]->shape[0], n->src[1]->shape[1]));
}

static bool joins(const vk_prog *p, const loom_node *a, const loom_node *b, const loom_tensor *x, const loom_tensor *rd)
{
    const loom_tensor *ba = bias_of(a), *bb = bias_of(b);
    return awq_whole(p, b) && b->src[0] == x && same_rows(a->dst, b->dst) && !overlap(b->dst, rd) &&
           (!ba || !bb || ba->dtype == bb->dtype);
}

/* The fusion led by GEMV node i, whose dispatch reads rd (x, or the input of
 * the rmsnorm that makes x); the index of its last node, or -1. Fused writes
 * happen at the lead, before the nodes they replace ran: an output must not
 * share memory with rd (the arena may hand x's bytes to a later tensor). */
static int32_t plan_one(vk_prog *p, int32_t i, const loom_tensor *rd, vk_fuse *fo)
{
    loom_node *nd = p->nodes;
    int32_t nn = p->n_nodes;
    const loom_node *a = &nd[i], *b = i + 1 < nn ? &nd[i + 1] : NULL, *c = i + 2 < nn ? &nd[i + 2] : NULL;
    const loom_tensor *x = a->src[0];
    vk_fuse f = {.mm = {a}, .nw = 1, .x = x, .y = {a->dst}, .ywrite = {true, true, true}};
    int32_t last;
    if (b && c && joins(p, a, b, x, rd) && b->src[1]->shape[1] == a->src[1]->shape[1] && c->op == LOOM_OP_SWIGLU &&
        c->src[0] == a->dst && c->src[1] == b->dst && same_rows(a->dst, c->dst) && private_k(p, a->dst, 1) &&
        private_k(p, b->dst, 1) && !overlap(c->dst, rd)) { /* gate, up, swiglu */
        f.mode = M_SWIGLU, f.nw = 2, f.mm[1] = b, f.y[0] = c->dst, last = i + 2;
    } else if (b && b->op == LOOM_OP_ADD && (b->src[0] == a->dst) != (b->src[1] == a->dst) &&
               same_rows(a->dst, b->dst) && private_k(p, a->dst, 1) && !overlap(b->dst, rd)) { /* matmul + residual */
        const loom_tensor *r = b->src[0] == a->dst ? b->src[1] : b->src[0];
        if (overlap(b->dst, r) && !(r->buf == b->dst->buf && r->offset == b->dst->offset)) return -1;
        f.mode = M_ADD, f.r = r, f.y[0] = b->dst, last = i + 1;
    } else { /* q, k, v on one x, their RoPE, then the k, v store of gqa_attn */
        int32_t j = i + 1;
        f.mode = M_QKV;
        if (overlap(a->dst, rd)) return -1;
        while (j < nn && f.nw < 3 && joins(p, a, &nd[j], x, rd)) f.mm[f.nw] = &nd[j], f.y[f.nw++] = nd[j].dst, j++;
        for (; j < nn && nd[j].op == LOOM_OP_ROPE; j++) {
            const loom_node *rn = &nd[j];
            int w = 0, hd = rn->p.head_dim;
            while (w < f.nw && f.y[w] != rn->src[0]) w++;
            if (w >= 2 || w >= f.nw || f.rope[w] || hd % 32 || rn->src[0]->shape[1] % hd ||
                !same_rows(rn->src[0], rn->dst) || !private_k(p, rn->src[0], 1) || overlap(rn->dst, rd))
                break;
            f.y[w] = rn->dst, f.rope[w] = &rn->p;
        }
        if (f.nw == 1 && !f.rope[0]) return -1;
        last = j - 1;
        const loom_node *at = j < nn ? &nd[j] : NULL;
        if (at && at->op == LOOM_OP_GQA_ATTN && f.nw == 3 && at->src[1] == f.y[1] && at->src[2] == f.y[2] &&
            f.y[1] != f.y[2] && at->p.head_dim % 2 == 0 && at->src[3]->dtype == at->src[4]->dtype &&
            f.y[1]->shape[1] == (int64_t)at->p.n_head_kv * at->p.head_dim && f.y[2]->shape[1] == f.y[1]->shape[1] &&
            (!f.rope[1] || f.rope[1]->head_dim == at->p.head_dim) && f.y[1]->shape[1] % 32 == 0) {
            f.attn = at;
            f.ywrite[1] = !private_k(p, f.y[1], 1), f.ywrite[2] = !private_k(p, f.y[2], 1);
        }
    }
    *fo = f;
    return last;
}

static void plan_fusion(vk_prog *p, vk_fuse *fz)
{
    loom_node *nd = p->nodes;
    for (int32_t i = 0; i < p->n_nodes; i++) {
        if (!awq_whole(p, &nd[i])) continue;
        const loom_tensor *x = nd[i].src[0];
        const loom_node *rm = i > 0 ? &nd[i - 1] : NULL;
        vk_fuse f;
        int32_t last = -1;
        /* the rmsnorm that makes x, when all of x's readers are in this fusion */
        if (rm && rm->op == LOOM_OP_RMSNORM && rm->dst == x && same_rows(rm->src[0], x) && p->role[i - 1] == F_NONE &&
            at16(rm->src[1], 0)) { /* its weight read in 16-byte chunks */
            last = plan_one(p, i, rm->src[0], &f);
            if (last >= 0 && f.mode != M_ADD && private_k(p, x, f.nw))
                f.norm = rm, f.x = rm->src[0], p->role[i - 1] = F_MEMBER;
            else
                last = -1;
        }
        if (last < 0 && (last = plan_one(p, i, x, &f)) < 0) continue;
        p->role[i] = F_LEAD;
        for (int32_t k = i + 1; k <= last; k++) p->role[k] = F_MEMBER;
        if (f.attn) p->role[f.attn - nd] = F_KV;
        fz[i] = f;
        i = last;
    }
}

/* Bytes of shared memory gemv_awq.comp FUSED needs at nt tokens besides the
 * slice partials: 4 [nt][32] arrays; with IDOT x's planes and two words a
 * 32-block (2.25 K bytes a token) as well. */
static uint32_t fused_extra(int64_t K, uint32_t nt, bool idot)
{
    return 4 * 128 * nt + (idot ? (uint32_t)(K * 2 + K / 4) * nt : 0);
}

/* whether the fused GEMV over K at nt tokens takes int8 dot products: where they are used and x's planes fit */
static bool fused_idot(const vk_dev *d, int64_t K, uint32_t nt)
{
    return d->idot && K / 8 < (1 << 23) && fused_extra(K, nt, true) + 128 * nt <= d->shared_max;
}

/* Links (gemv_awq.comp XIN, XOUT): a fused M_ADD or M_SWIGLU whose y is the
 * x of a later fusion quantises y for it in its epilogue, so that fusion's
 * work-groups need not each quantise x themselves. The quantised rows go
 * through one of two link buffers, taken in turn: a buffer is free again once
 * its reader has run, and a dispatch that reads one writes the other. Each
 * buffer holds VK_GEMV_MAX_T rows of the widest link, 3 bytes an element. */
static int plan_links(vk_prog *p, vk_fuse *fz)
{
    int32_t reader[2] = {-1, -1}; /* the lead that last reads each buffer */
    int n = 0;
    if (!p->d->idot) return 0;
    for (int32_t j = 0; j < p->n_nodes; j++) {
        if (p->role[j] != F_LEAD) continue;
        vk_fuse *c = &fz[j];
        int64_t K = c->mm[0]->src[1]->shape[0];
        int32_t i = j - 1;
        while (i >= 0 && !(p->role[i] == F_LEAD && fz[i].y[0] == c->x)) i--;
        /* K is a multiple of 128 (supports()): the producer's 32-column work-groups are whole blocks */
        if (i < 0 || (fz[i].mode != M_ADD && fz[i].mode != M_SWIGLU) || fz[i].xout) continue;
        int b = reader[0] < i ? 0 : reader[1] < i ? 1 : -1;
        if (b < 0) continue;
        reader[b] = j, n++;
        fz[i].xout = c->xin = b + 1, fz[i].xnorm = c->norm;
        size_t sz = ((size_t)VK_GEMV_MAX_T * (size_t)K * 3 + 255) / 256 * 256;
        if (sz > p->xlink_sz) p->xlink_sz = sz;
    }
    return n;
}

#define TRY(e) do { if ((st = (e))) return st; } while (0)
#define NEWD(pipe, mode, gx) do { if (!(x = new_disp(p, n, (pipe), (mode), (gx)))) return VK_ERR(LOOM_ERR_NOMEM, "out of memory"); } while (0)

static uint32_t rope_base(const vk_prog *p, const loom_op_params *rp)
{
    for (int32_t i = 0; i < p->n_rope; i++)
        if (!memcmp(&p->ropes[i].p, rp, sizeof *rp)) return p->ropes[i].base;
    return 0;
}

/* The fused dispatches of lead node n (gemv_awq.comp, FUSED), one per token-count variant. */
static loom_status lower_fused(vk_prog *p, const loom_node *n, const vk_fuse *f)
{
    vk_dev *d = p->d;
    int64_t T = n->dst->shape[0], K = f->mm[0]->src[1]->shape[0], Nw[3] = {0, 0, 0};
    uint32_t W[3] = {0, 0, 0}, wgs = 0, bdt = 0, flags = 0, slices, gps;
    for (int w = 0; w < f->nw; w++) {
        Nw[w] = f->mm[w]->src[1]->shape[1];
        W[w] = (uint32_t)((Nw[w] + 31) / 32);
        if (bias_of(f->mm[w])) bdt = dt_code(bias_of(f->mm[w])->dtype), flags |= 1u << w;
        if (f->ywrite[w] || f->mode != M_QKV) flags |= 1u << (3 + w);
        if (w < 2 && f->rope[w]) flags |= 1u << (6 + w);
    }
    wgs = f->mode == M_QKV ? W[0] + W[1] + W[2] : W[0];
    if (f->attn) flags |= 256u;
    uint32_t ndt = f->norm ? dt_code(f->norm->src[1]->dtype) : 0;
    uint32_t cdt = f->attn && f->attn->src[3]->dtype == LOOM_F16 ? 1u : 0u;
    uint32_t xvec = !d->scalar_gemv && at16(f->x, 0);
    uint32_t fl = xvec | (uint32_t)f->mode << 1 | (f->norm ? 8u : 0u) | ndt << 4 | cdt << 6;
    loom_status st;
    VkPipeline pipe;
    vk_disp *x;
    loom_tensor link[2] = {{.name = "quantised x link", .buf = p->xlink},
                           {.name = "quantised x link", .buf = p->xlink, .offset = p->xlink_sz}};
    for (uint32_t nt = 1; nt <= VK_GEMV_MAX_T && nt / 2 < T; nt *= 2) {
        /* with FMAs, x * norm_w staged in shared memory when it takes at most half of it */
        uint32_t extra = fused_extra(K, nt, false), xs = f->norm ? (uint32_t)K * 4 * nt : 0;
        bool idot = fused_idot(d, K, nt);
        bool staged = !idot && xs && xs <= d->shared_max / 2 && K / 4 < (1 << 23) && extra + xs + 128 * nt <= d->shared_max;
        /* links at this nt: where the reader takes int8 dot products */
        bool xin = f->xin && idot, xout = f->xout && fused_idot(d, Nw[0], nt);
        awq_split(d, K, (int64_t)wgs * 32, nt, idot ? fused_extra(K, nt, true) : extra + (staged ? xs : 0), &slices,
                  &gps);
        uint32_t flx = fl | (idot ? (uint32_t)(K / 8) << 8 : staged ? 128u | (uint32_t)(K / 4) << 8 : 0u);
        uint32_t bdl = bdt | (xin ? 4u : 0u) | (xout ? 8u : 0u);
        if (xout && f->xnorm) bdl |= 16u | dt_code(f->xnorm->src[1]->dtype) << 5;
        TRY(loom__vk_pipeline4(d, idot ? VK_SH_GEMV_AWQ_FUSED_IDOT : VK_SH_GEMV_AWQ_FUSED, nt, bdl, slices, flx, &pipe));
        NEWD(pipe, G_FLAT, wgs);
        x->min_t = nt == 1 ? 1 : (int32_t)nt / 2 + 1, x->max_t = (int32_t)nt;
        TRY(bind(p, x, 0, f->x, 0, (size_t)T * (size_t)K * 4, 4, false));
        for (int w = 0; w < f->nw; w++) {
            const loom_tensor *wt = f->mm[w]->src[1], *b = bias_of(f->mm[w]);
            TRY(bind(p, x, 1 + w, wt, 0, loom__vk_awq_bytes(K, Nw[w]), 16, false));
            if (b) TRY(bind(p, x, 4 + w, b, 0, nbytes(b), dt_size(b->dtype), false));
            if (flags & 1u << (3 + w) && (f->mode == M_QKV || w == 0))
                TRY(bind(p, x, 9 + w, f->y[w], 0, (size_t)T * (size_t)Nw[w] * 4, 4, true));
        }
        if (f->norm) TRY(bind(p, x, 8, f->norm->src[1], 0, nbytes(f->norm->src[1]), dt_size(f->norm->src[1]->dtype), false));
        if (f->r) TRY(bind(p, x, 14, f->r, 0, (size_t)T * (size_t)Nw[0] * 4, 4, false));
        if (xin) TRY(bind(p, x, 15, &link[f->xin - 1], 0, (size_t)nt * (size_t)K * 3, 16, false));
        if (xout) {
            TRY(bind(p, x, 12, &link[f->xout - 1], 0, (size_t)nt * (size_t)Nw[0] * 3, 16, true));
            const loom_tensor *nw = f->xnorm ? f->xnorm->src[1] : NULL;
            if (nw) TRY(bind(p, x, 13, nw, 0, nbytes(nw), dt_size(nw->dtype), false));
        }
        if (f->attn) {
            const loom_tensor *kc = f->attn->src[3], *vc = f->attn->src[4];
            size_t es = dt_size(kc->dtype);
            TRY(bind(p, x, 12, kc, 0, nbytes(kc), es, true));
            TRY(bind(p, x, 13, vc, 0, nbytes(vc), es, true));
            if (cdt && ((x->pc[13] | x->pc[14]) & 1))
                return VK_ERR(LOOM_ERR_UNSUPPORTED, "gqa_attn: f16 cache not 4-byte aligned");
        }
        x->pc[17] = (uint32_t)K;
        for (int w = 0; w < 3; w++) x->pc[18 + w] = (uint32_t)Nw[w];
        x->pc[21] = W[0], x->pc[22] = W[1], x->pc[23] = gps, x->pc[24] = flags;
        x->pc[25] = f->norm ? fbits(f->norm->p.eps) : 0;
        x->pc[26] = f->rope[0] ? (uint32_t)f->rope[0]->head_dim : f->rope[1] ? (uint32_t)f->rope[1]->head_dim
                    : f->attn ? (uint32_t)f->attn->p.head_dim : 0;
        for (int w = 0; w < 2; w++)
            if (f->rope[w] && !(x->pc[27 + w] = rope_base(p, f->rope[w]))) return VK_ERR(LOOM_ERR_INTERNAL, "rope table missing");
        if (f->attn) x->pc[29] = (uint32_t)f->attn->src[3]->shape[2], x->pc[30] = p->seq_base;
        if (f->rope[0] || f->rope[1] || f->attn) x->acc[x->n_acc++] = (vk_access){p->step->buf, 0, p->step->size, false};
    }
    return LOOM_OK;
}

/* ---- attention: which shaders a gqa_attn node takes -------------------------------
 * attn_dec.comp (with attn_merge) for steps of <= VK_GEMV_MAX_T rows and
 * attn_tile.comp above, where head_dim is a multiple of 8 up to 128 and the
 * caches start on 16 bytes (both read 16-byte chunks) and the device has the
 * shared memory; attn.comp for whatever is left. attn_dec's partitions:
 * at most pmax (the shader picks fewer for shorter contexts, see dec_parts
 * there), for about ATT_DEC_WGS work-groups per row; up to ATT_JOIN of them
 * are joined by the last to finish, more by attn_merge (a dispatch recorded
 * only where the cache is long enough for that).
 * attn_dec1.comp: one-row steps whose row sees at most ATT_SP positions (f16
 * caches, head_dim a power of two up to 128; 256 invocations), a work-group
 * per query head with the whole context in registers. The position is the
 * step's: a one-row step over at most ATT_SP positions replays a command
 * buffer with attn_dec1 and without attn_dec, a longer one the other way
 * round (cmd_variant; attn_dec1 still leaves at once past ATT_SP, which it
 * cannot serve), and attn_merge is recorded only for steps with a row that
 * needs it: a dispatch that leaves at once still costs its launch, and
 * attn_merge a barrier (7B at 128 positions in a 32K cache: 4%).
 * LOOM_VK_ATT_SHORT=0: attn_dec only. */
#define ATT_HDMAX      128   /* as in attn_dec.comp and attn_tile.comp */
#define ATT_NQ         8     /* attn_dec.comp: query heads per work-group ... */
#define ATT_DP         32    /* ... positions per partition: a multiple of its rounds, ... */
#define ATT_PLMIN      64    /* ... at least this many where there are more than ATT_JOIN ... */
#define ATT_PLMAX      256
#define ATT_JOIN       32    /* ... and most partitions it joins itself */
#define ATT_DEC_SHARED ((8 * 128 + 32 * 128 + 8 * 257 + 2 * 128) * 4) /* ... and its shared memory: q, V round, scores, max, sum */
#define ATT_DEC_WGS    256   /* about 2 per multiprocessor of a large GPU (H100: 132) */
#define ATT_SP         256   /* attn_dec1.comp: the most positions (SP there), its work-group ... */
#define ATT_DEC1_SHARED ((2 * 256 * 4 + 256 + 2 * 16) * 4) /* ... and its shared memory: partials, scores, sums */

typedef struct {
    bool     dec, tile;
    bool     one;        /* attn_dec1 for one-row steps over <= ATT_SP positions (attn_dec above) */
    const char *no_one;  /* ... else why not, where a one-row step can run attn_dec */
    uint32_t hb;         /* attn_dec: blocks of query heads per KV head ... */
    uint32_t fill, pmax; /* ... work-groups per row wanted at T = 1, most partitions */
    size_t   part_bytes; /* ... partials of VK_GEMV_MAX_T rows at pmax (0: never split) ... */
    size_t   cnt_words;  /* ... and its counters: one per (KV head block, row) */
    uint32_t hd_tile;    /* attn_tile: largest head_dim of its shared arrays, 64 or 128 */
} vk_attn_plan;

static vk_attn_plan attn_plan(const vk_dev *d, const loom_node *n)
{
    const loom_tensor *const *s = (const loom_tensor *const *)n->src;
    int64_t Hq = n->p.n_head, Hkv = n->p.n_head_kv, hd = n->p.head_dim, C = s[3]->shape[2], T = n->dst->shape[0];
    bool dyn = n->dst->flags & LOOM_TENSOR_DYNAMIC;
    vk_attn_plan a = {.pmax = 1, .hd_tile = hd <= 64 ? 64 : 128};
    bool chunks = hd % 8 == 0 && hd <= ATT_HDMAX && at16(s[3], 0) && at16(s[4], 0) && d->wg_max >= 128;
    /* attn_tile's shared memory: q rows and a K/V tile of vec4 rows, scores, 4 words per row */
    uint32_t ld = a.hd_tile / 4 + 1, tile_shared = (32 + 16) * ld * 16 + 16 * 9 * 16 + 4 * 32 * 4;
    a.tile = chunks && T > VK_GEMV_MAX_T && tile_shared <= d->shared_max;
    a.dec = chunks && (dyn || T <= VK_GEMV_MAX_T) && ATT_DEC_SHARED <= d->shared_max;
    if (!a.dec) return a;
    a.hb = (uint32_t)((Hq / Hkv + ATT_NQ - 1) / ATT_NQ);
    int64_t wgs = Hkv * a.hb, fill = (ATT_DEC_WGS + wgs - 1) / wgs;
    /* partitions of ATT_PLMIN positions or more, or of ATT_DP while there are at most ATT_JOIN (dec_parts there) */
    int64_t lo = (C + ATT_PLMAX - 1) / ATT_PLMAX, hi = (C + ATT_PLMIN - 1) / ATT_PLMIN, fine = (C + ATT_DP - 1) / ATT_DP;
    if (fine > ATT_JOIN) fine = ATT_JOIN;
    if (hi < fine) hi = fine;
    a.fill = (uint32_t)fill;
    a.pmax = (uint32_t)(fill < lo ? lo : fill > hi ? hi : fill);
    if (a.pmax > 1) {
        int64_t rows = T < VK_GEMV_MAX_T ? T : VK_GEMV_MAX_T;
        a.part_bytes = (size_t)rows * (size_t)Hq * a.pmax * (size_t)(hd + 2) * 4;
        a.cnt_words = (size_t)rows * (size_t)wgs;
        if (!fits(d, a.part_bytes)) a.dec = false, a.pmax = 1, a.part_bytes = a.cnt_words = 0;
    }
    if (!a.dec || (!dyn && T != 1)) return a; /* (attn_dec stands in for attn_dec1 past ATT_SP) */
    a.no_one = !d->att_short                                ? "LOOM_VK_ATT_SHORT=0"
               : s[3]->dtype != LOOM_F16                    ? "not an f16 cache"
               : (hd & (hd - 1)) != 0                       ? "head_dim not a power of two"
               : d->wg_max < ATT_SP || d->wg_max_x < ATT_SP ? "work-groups of 256 not allowed"
               : ATT_DEC1_SHARED > d->shared_max            ? "too little shared memory"
                                                            : NULL;
    a.one = !a.no_one;
    return a;
}

/* the attention pass's bindings: 0 q, 3 and 4 the caches (in elements of ces
 * bytes: 16 for the shaders that read chunks), 5 y; p[7..12] */
static loom_status bind_attn(vk_prog *p, vk_disp *x, const loom_node *n, size_t ces)
{
    const loom_tensor *y = n->dst, *const *s = (const loom_tensor *const *)n->src;
    int32_t hd = n->p.head_dim;
    size_t ybytes = (size_t)y->shape[0] * (size_t)y->shape[1] * 4;
    float scale = n->p.attn_scale > 0 ? n->p.attn_scale : (float)(1.0 / sqrt((double)hd));
    loom_status st;
    TRY(bind(p, x, 0, s[0], 0, ybytes, 4, false));
    TRY(bind(p, x, 3, s[3], 0, nbytes(s[3]), ces, false));
    TRY(bind(p, x, 4, s[4], 0, nbytes(s[4]), ces, false));
    TRY(bind(p, x, 5, y, 0, ybytes, 4, true));
    x->pc[7] = (uint32_t)n->p.n_head, x->pc[8] = (uint32_t)n->p.n_head_kv, x->pc[9] = (uint32_t)hd;
    x->pc[10] = (uint32_t)s[3]->shape[2], x->pc[11] = fbits(scale), x->pc[12] = p->seq_base;
    return LOOM_OK;
}

static loom_status lower(vk_prog *p, const loom_node *n)
{
    vk_dev *d = p->d;
    const loom_tensor *y = n->dst, *const *s = (const loom_tensor *const *)n->src;
    int64_t T = y->shape[0], cols = y->shape[1];
    size_t ybytes = (size_t)T * (size_t)cols * 4, room = d->max_range - d->align;
    VkPipeline pipe;
    loom_status st;
    vk_disp *x;
    switch (n->op) {
    case LOOM_OP_EMBED: {
        int64_t V = s[0]->shape[0], D = cols;
        size_t es = dt_size(s[0]->dtype), rowb = (size_t)D * es;
        int64_t per = (int64_t)(room / rowb);
        TRY(loom__vk_pipeline(d, VK_SH_EMBED, dt_code(s[0]->dtype), 0, &pipe));
        for (int64_t v0 = 0; v0 < V; v0 += per) {
            int64_t v1 = v0 + per < V ? v0 + per : V;
            NEWD(pipe, G_ROWS_Y, (uint32_t)((D + 255) / 256));
            TRY(bind(p, x, 0, s[0], (size_t)v0 * rowb, (size_t)(v1 - v0) * rowb, es, false));
            TRY(bind(p, x, 1, s[1], 0, (size_t)T * 4, 4, false));
            TRY(bind(p, x, 2, y, 0, ybytes, 4, true));
            x->pc[7] = (uint32_t)D, x->pc[8] = (uint32_t)v0, x->pc[9] = (uint32_t)v1, x->pc[10] = (uint32_t)V;
        }
        return LOOM_OK;
    }
    case LOOM_OP_RMSNORM:
        TRY(loom__vk_pipeline(d, d->subgroup ? VK_SH_RMSNORM_SG : VK_SH_RMSNORM, dt_code(s[1]->dtype), 0, &pipe));
        NEWD(pipe, G_ROWS_X, 0);
        TRY(bind(p, x, 0, s[0], 0, ybytes, 4, false));
        TRY(bind(p, x, 1, s[1], 0, nbytes(s[1]), dt_size(s[1]->dtype), false));
        TRY(bind(p, x, 2, y, 0, ybytes, 4, true));
        x->pc[7] = (uint32_t)cols, x->pc[8] = fbits(n->p.eps);
        return LOOM_OK;
    case LOOM_OP_MATMUL: {
        int64_t K = s[0]->shape[1], N = cols;
        size_t es = dt_size(s[1]->dtype), rowb = (size_t)K * es, epc = 16 / es;
        int64_t per = (int64_t)(room / rowb) / 64 * 64;
        uint32_t wdt = dt_code(s[1]->dtype), bdt = s[2] ? dt_code(s[2]->dtype) : 0, rw = gemv_rows(d);
        for (int64_t n0 = 0; n0 < N; n0 += per) {
            int64_t np = n0 + per < N ? per : N - n0;
            /* GEMV: variants for 1, 2, 3-4 and 5-8 tokens with 16-byte loads when rows and offsets are
             * whole chunks, else the scalar one for all; GEMM above VK_GEMV_MAX_T tokens */
            bool vec = !d->scalar_gemv && K % (int64_t)epc == 0 && at16(s[0], 0) && at16(s[1], (size_t)n0 * rowb);
            for (uint32_t nt = 1; nt <= VK_GEMV_MAX_T && nt / 2 < T; nt *= 2) {
                if (vec)
                    TRY(loom__vk_pipeline4(d, d->subgroup ? VK_SH_GEMV_VEC_SG : VK_SH_GEMV_VEC, wdt, bdt, nt, rw,
                                           &pipe));
                else
                    TRY(loom__vk_pipeline(d, d->subgroup ? VK_SH_GEMV_SG : VK_SH_GEMV, wdt, bdt, &pipe));
                NEWD(pipe, G_FLAT, (uint32_t)(vec ? (np + rw - 1) / rw : (np + 7) / 8));
                x->min_t = nt == 1 || !vec ? 1 : (int32_t)nt / 2 + 1;
                x->max_t = vec ? (int32_t)nt : VK_GEMV_MAX_T;
                TRY(bind_matmul(p, x, n, n0, np));
                if (!vec) break;
            }
            if (T > VK_GEMV_MAX_T) { /* f16 weights on tensor cores when the device has them (vk_coop.c) */
                bool coop = d->coopmat && wdt == 1 && K % 32 == 0 && at16(s[0], 0) && at16(s[1], (size_t)n0 * rowb);
                TRY(coop ? loom__vk_pipeline4(d, VK_SH_GEMM_COOP, wdt, bdt, 0, d->coop_rows, &pipe)
                         : loom__vk_pipeline(d, VK_SH_GEMM, wdt, bdt, &pipe));
                if (!(x = gemm_disp(p, n, pipe, coop, np))) return VK_ERR(LOOM_ERR_NOMEM, "out of memory");
                TRY(bind_matmul(p, x, n, n0, np));
            }
        }
        return LOOM_OK;
    }
    case LOOM_OP_MATMUL_AWQ: {
        int64_t K = s[1]->shape[0], N = s[1]->shape[1], G = K / LOOM_AWQ_GROUP;
        size_t qb = loom__vk_awq_q_bytes(K, N), mb = (size_t)(G * N * 4), xbytes = (size_t)T * (size_t)K * 4;
        uint32_t bdt = s[2] ? dt_code(s[2]->dtype) : 0, slices, gps;
        /* GEMV variants for 1, 2, 3-4 and 5-8 tokens: 0 x, 1 q, 2 meta, 4 bias, 5 y */
        for (uint32_t nt = 1; nt <= VK_GEMV_MAX_T && nt / 2 < T; nt *= 2) {
            uint32_t xvec = !d->scalar_gemv && at16(s[0], 0);
            awq_split(d, K, N, nt, 0, &slices, &gps);
            TRY(loom__vk_pipeline4(d, VK_SH_GEMV_AWQ, nt, bdt, slices, xvec, &pipe));
            NEWD(pipe, G_FLAT, (uint32_t)((N + 31) / 32));
            x->min_t = nt == 1 ? 1 : (int32_t)nt / 2 + 1, x->max_t = (int32_t)nt;
            TRY(bind(p, x, 0, s[0], 0, xbytes, 4, false));
            TRY(bind(p, x, 1, s[1], 0, qb, 16, false));
            TRY(bind(p, x, 2, s[1], qb, mb, 4, false));
            if (s[2]) TRY(bind(p, x, 4, s[2], 0, nbytes(s[2]), dt_size(s[2]->dtype), false));
            TRY(bind(p, x, 5, y, 0, ybytes, 4, true));
            x->pc[7] = (uint32_t)K, x->pc[8] = (uint32_t)N, x->pc[9] = s[2] != NULL, x->pc[10] = gps;
        }
        if (T <= VK_GEMV_MAX_T) return LOOM_OK;
        /* GEMM: 0 x, 1 q (as words), 2 bias, 3 y, 4 meta; tensor cores read x as vec4 */
        bool coop = d->coopmat && at16(s[0], 0) && at16(s[1], 0);
        TRY(coop ? loom__vk_pipeline4(d, VK_SH_GEMM_COOP_AWQ, 1, bdt, 0, d->coop_rows, &pipe)
                 : loom__vk_pipeline(d, VK_SH_GEMM_AWQ, 0, bdt, &pipe));
        if (!(x = gemm_disp(p, n, pipe, coop, N))) return VK_ERR(LOOM_ERR_NOMEM, "out of memory");
        TRY(bind(p, x, 0, s[0], 0, xbytes, 4, false));
        TRY(bind(p, x, 1, s[1], 0, qb, 4, false));
        if (s[2]) TRY(bind(p, x, 2, s[2], 0, nbytes(s[2]), dt_size(s[2]->dtype), false));
        TRY(bind(p, x, 3, y, 0, ybytes, 4, true));
        TRY(bind(p, x, 4, s[1], qb, mb, 4, false));
        x->pc[7] = (uint32_t)K, x->pc[8] = (uint32_t)N, x->pc[9] = (uint32_t)N, x->pc[10] = 0, x->pc[11] = s[2] != NULL;
        return LOOM_OK;
    }
    case LOOM_OP_ROPE: {
        uint32_t base = 0;
        for (int32_t i = 0; i < p->n_rope && !base; i++)
            if (!memcmp(&p->ropes[i].p, &n->p, sizeof n->p)) base = p->ropes[i].base;
        if (!base) return VK_ERR(LOOM_ERR_INTERNAL, "rope table missing");
        TRY(loom__vk_pipeline(d, VK_SH_ROPE, 0, 0, &pipe));
        NEWD(pipe, G_ROWS_Y, (uint32_t)((cols / 2 + 255) / 256));
        TRY(bind(p, x, 0, s[0], 0, ybytes, 4, false));
        TRY(bind(p, x, 2, y, 0, ybytes, 4, true));
        x->pc[7] = (uint32_t)n->p.n_head, x->pc[8] = (uint32_t)n->p.head_dim, x->pc[9] = base;
        x->acc[x->n_acc++] = (vk_access){p->step->buf, 0, p->step->size, false};
        return LOOM_OK;
    }
    case LOOM_OP_GQA_ATTN: {
        int32_t Hq = n->p.n_head, Hkv = n->p.n_head_kv, hd = n->p.head_dim;
        uint32_t cdt = s[3]->dtype == LOOM_F16 ? 1u : 0u;
        size_t es = dt_size(s[3]->dtype), kvb = (size_t)T * (size_t)Hkv * (size_t)hd * 4;
        int64_t C = s[3]->shape[2];
        TRY(loom__vk_pipeline(d, VK_SH_KV_STORE, cdt, 0, &pipe));
        NEWD(pipe, G_ROWS_Y, (uint32_t)(((int64_t)Hkv * hd / 2 + 63) / 64)); /* a token per work-group row */
        TRY(bind(p, x, 1, s[1], 0, kvb, 4, false));
        TRY(bind(p, x, 2, s[2], 0, kvb, 4, false));
        TRY(bind(p, x, 3, s[3], 0, nbytes(s[3]), es, true));
        TRY(bind(p, x, 4, s[4], 0, nbytes(s[4]), es, true));
        if (cdt && ((x->pc[4] | x->pc[5]) & 1))
            return VK_ERR(LOOM_ERR_UNSUPPORTED, "gqa_attn: f16 cache not 4-byte aligned");
        x->pc[7] = (uint32_t)Hkv, x->pc[8] = (uint32_t)hd, x->pc[9] = (uint32_t)C, x->pc[10] = p->seq_base;
        x->acc[x->n_acc++] = (vk_access){p->step->buf, 0, p->step->size, false};
        vk_attn_plan a = attn_plan(d, n);
        if (a.one) { /* one row over <= ATT_SP positions: a work-group per query head (attn_dec1.comp) */
            TRY(loom__vk_pipeline(d, VK_SH_ATTN_DEC1, (uint32_t)hd, 0, &pipe));
            NEWD(pipe, G_FIXED, (uint32_t)Hq);
            x->max_t = 1, x->att = V_SHORT;
            p->has_short = true;
            TRY(bind_attn(p, x, n, 16));
        }
        if (a.dec) { /* decode: a GQA group per work-group, partitions (binding 1, counters 2) joined (attn_merge) */
            loom_tensor part = {.name = "attention partials", .buf = p->part};
            TRY(loom__vk_pipeline(d, VK_SH_ATTN_DEC, cdt, 0, &pipe));
            NEWD(pipe, G_ROWS_Y, (uint32_t)Hkv * a.hb);
            x->gz = a.pmax, x->max_t = VK_GEMV_MAX_T;
            if (a.one) x->att = V_LONG;
            TRY(bind_attn(p, x, n, 16));
            x->pc[13] = a.hb, x->pc[14] = a.fill, x->pc[15] = a.pmax;
            if (a.pmax > 1) { /* the partials, then the counters after the largest node's */
                loom_tensor cnt = {.name = "attention counters", .buf = p->part, .offset = p->cnt_off};
                TRY(bind(p, x, 1, &part, 0, a.part_bytes, 4, true));
                TRY(bind(p, x, 2, &cnt, 0, a.cnt_words * 4, 4, true));
            }
            if (a.pmax > ATT_JOIN) {
                uint32_t plan[2] = {a.fill, a.pmax};
                if (!p->merge[1]) memcpy(p->merge, plan, sizeof plan);
                else p->merge_mixed |= memcmp(p->merge, plan, sizeof plan) != 0;
                TRY(loom__vk_pipeline(d, VK_SH_ATTN_MERGE, 0, 0, &pipe));
                NEWD(pipe, G_ROWS_Y, (uint32_t)Hq);
                x->max_t = VK_GEMV_MAX_T, x->att = V_MERGE;
                TRY(bind(p, x, 5, y, 0, ybytes, 4, true));
                TRY(bind(p, x, 1, &part, 0, a.part_bytes, 4, false));
                x->pc[7] = (uint32_t)Hq, x->pc[9] = (uint32_t)hd, x->pc[14] = a.fill, x->pc[15] = a.pmax;
            }
        }
        if (a.tile) { /* prefill: blocks of 32 rows share K/V tiles */
            TRY(loom__vk_pipeline(d, VK_SH_ATTN_TILE, cdt, a.hd_tile, &pipe));
            NEWD(pipe, G_ROWS_Y32, (uint32_t)Hq);
            x->min_t = VK_GEMV_MAX_T + 1;
            TRY(bind_attn(p, x, n, 16));
        }
        if (!a.dec || !a.tile) { /* attn.comp for the rest */
            TRY(loom__vk_pipeline(d, VK_SH_ATTN, cdt, 0, &pipe));
            NEWD(pipe, G_ROWS_Y, (uint32_t)Hq);
            if (a.dec) x->min_t = VK_GEMV_MAX_T + 1;
            if (a.tile) x->max_t = VK_GEMV_MAX_T;
            TRY(bind_attn(p, x, n, es));
        }
        if (p->n_attn < 64) p->attn_cache[p->n_attn++] = s[3];
        return LOOM_OK;
    }
    case LOOM_OP_SWIGLU:
    case LOOM_OP_ADD:
        TRY(loom__vk_pipeline(d, VK_SH_ELTWISE, n->op == LOOM_OP_SWIGLU, 0, &pipe));
        NEWD(pipe, G_ELEM, 0);
        x->cols = cols;
        TRY(bind(p, x, 0, s[0], 0, ybytes, 4, false));
        TRY(bind(p, x, 1, s[1], 0, ybytes, 4, false));
        TRY(bind(p, x, 2, y, 0, ybytes, 4, true));
        return LOOM_OK;
    default:
        return VK_ERR(LOOM_ERR_UNSUPPORTED, "op %d reached compile", (int)n->op);
    }
}

/* ---- programs ------------------------------------------------------------------------ */
void loom__vk_release(void *dctx, void *pv)
{
    vk_dev *d = dctx;
    vk_prog *p = pv;
    if (!p) return;
    loom__vk_wait(d);
    if (d->last_prog == p) d->last_prog = NULL;
    VK_UNLINK(d->progs, p);
    if (p->cmd) {
        for (int32_t i = 0; i < (p->max_t + 1) * V_STEPS; i++)
            if (p->cmd[i]) vkFreeCommandBuffers(d->dev, d->cmd_pool, 1, &p->cmd[i]);
        free(p->cmd);
    }
    if (p->dpool) vkDestroyDescriptorPool(d->dev, p->dpool, NULL);
    if (p->qpool) vkDestroyQueryPool(d->dev, p->qpool, NULL);
    if (p->rec)
        for (int32_t i = 0; i < (p->max_t + 1) * V_STEPS; i++) free(p->rec[i]);
    free(p->rec);
    if (p->step) loom__vk_free(d, p->step);
    if (p->part) loom__vk_free(d, p->part);
    if (p->xlink) loom__vk_free(d, p->xlink);
    for (int32_t i = 0; i < p->n_rope; i++) free(p->ropes[i].inv_freq);
    free(p->ropes);
    free(p->role);
    free(p->disp);
    free(p);
}

uint32_t loom__vk_prog_errors(vk_prog *p)
{
    uint32_t *w = p->step->map, e = w[1];
    w[1] = 0;
    return e;
}

loom_status loom__vk_compile(void *dctx, loom_node *nodes, int32_t n_nodes, void **out)
{
    vk_dev *d = dctx;
    *out = NULL;
    for (int32_t i = 0; i < n_nodes; i++)
        if (!loom__vk_supports(d, &nodes[i]))
            return VK_ERR(LOOM_ERR_UNSUPPORTED, "node %d (op %d) is not supported", (int)i, (int)nodes[i].op);
    vk_prog *p = calloc(1, sizeof *p);
    if (!p) return VK_ERR(LOOM_ERR_NOMEM, "out of memory compiling %d nodes", (int)n_nodes);
    p->d = d, p->nodes = nodes, p->n_nodes = n_nodes, p->max_t = 1;
    VK_LINK(d->progs, p);
    loom_status st = LOOM_OK;

    /* the step buffer: header, pos, seq, one cos/sin table per distinct rope */
    for (int32_t i = 0; i < n_nodes; i++) {
        if (nodes[i].dst->flags & LOOM_TENSOR_DYNAMIC && nodes[i].dst->shape[0] > p->max_t)
            p->max_t = (int32_t)nodes[i].dst->shape[0];
        if (nodes[i].op == LOOM_OP_ROPE || nodes[i].op == LOOM_OP_GQA_ATTN) p->needs_pos = true;
    }
    p->seq_base = 4 + (uint32_t)p->max_t;
    size_t words = 4 + 2 * (size_t)p->max_t;
    if (!(p->ropes = calloc((size_t)n_nodes, sizeof *p->ropes))) st = VK_ERR(LOOM_ERR_NOMEM, "out of memory");
    for (int32_t i = 0; i < n_nodes && !st; i++) {
        if (nodes[i].op != LOOM_OP_ROPE) continue;
        bool dup = false;
        for (int32_t r = 0; r < p->n_rope; r++) dup |= !memcmp(&p->ropes[r].p, &nodes[i].p, sizeof nodes[i].p);
        if (dup) continue;
        vk_rope *r = &p->ropes[p->n_rope++];
        r->p = nodes[i].p;
        r->base = (uint32_t)words;
        r->mscale = loom_rope_mscale(&r->p);
        words += (size_t)p->max_t * (size_t)r->p.head_dim;
        if (!(r->inv_freq = malloc((size_t)(r->p.head_dim / 2) * sizeof *r->inv_freq))) {
            st = VK_ERR(LOOM_ERR_NOMEM, "out of memory");
            break;
        }
        for (int32_t k = 0; k < r->p.head_dim / 2; k++) r->inv_freq[k] = loom_rope_inv_freq(&r->p, k);
    }
    if (!st) st = loom__vk_alloc(d, words * 4, true, &p->step);
    if (!st && !p->step->map) st = VK_ERR(LOOM_ERR_BACKEND, "step buffer is not host-visible");
    if (!st) memset(p->step->map, 0, words * 4);
    if (!st && !(p->cmd = calloc(((size_t)p->max_t + 1) * V_STEPS, sizeof *p->cmd))) st = VK_ERR(LOOM_ERR_NOMEM, "out of memory");
    vk_fuse *fz = NULL;
    if (!st && (!(p->role = calloc((size_t)n_nodes, 1)) || !(fz = calloc((size_t)n_nodes, sizeof *fz))))
        st = VK_ERR(LOOM_ERR_NOMEM, "out of memory");
    int n_links = 0;
    if (!st && d->fuse) plan_fusion(p, fz), n_links = plan_links(p, fz);
    if (!st && n_links) st = loom__vk_alloc(d, 2 * p->xlink_sz, false, &p->xlink);
    size_t part_bytes = 0, cnt_words = 0; /* split decode attention's partials and counters: the largest node's */
    int n_one = 0, n_dec = 0;
    const char *no_one = NULL;
    for (int32_t i = 0; i < n_nodes; i++)
        if (nodes[i].op == LOOM_OP_GQA_ATTN) {
            vk_attn_plan a = attn_plan(d, &nodes[i]);
            if (a.part_bytes > part_bytes) part_bytes = a.part_bytes;
            if (a.cnt_words > cnt_words) cnt_words = a.cnt_words;
            n_one += a.one, n_dec += a.dec;
            if (a.no_one) no_one = a.no_one;
        }
    if (n_one)
        VK_LOG(LOOM_LOG_DEBUG, "gqa_attn: one-row steps over <= %d positions run attn_dec1 in %d of %d nodes%s%s",
               ATT_SP, n_one, n_dec, no_one ? "; the others attn_dec: " : "", no_one ? no_one : "");
    else if (no_one)
        VK_LOG(LOOM_LOG_DEBUG, "gqa_attn: one-row steps run attn_dec, not attn_dec1 (%s)", no_one);
    if (!st && part_bytes) { /* the counters start at zero, and each join leaves them so */
        uint32_t *zero = calloc(cnt_words, 4);
        p->cnt_off = (part_bytes + 255) / 256 * 256;
        st = zero ? loom__vk_alloc(d, p->cnt_off + cnt_words * 4, false, &p->part) : VK_ERR(LOOM_ERR_NOMEM, "out of memory");
        if (!st) st = loom__vk_write(d, p->part, p->cnt_off, zero, cnt_words * 4);
        free(zero);
    }
    for (int32_t i = 0; i < n_nodes && !st; i++) {
        int32_t first = p->n_disp;
        if ((st = lower(p, &nodes[i]))) break;
        if (p->role[i] == F_NONE) continue;
        /* a fused node's own dispatches (for F_KV: the k, v store) only run in larger steps */
        int32_t end = p->role[i] == F_KV ? first + 1 : p->n_disp, keep = first;
        for (int32_t k = first; k < p->n_disp; k++) {
            vk_disp *x = &p->disp[k];
            if (k < end && x->min_t <= VK_GEMV_MAX_T) x->min_t = VK_GEMV_MAX_T + 1;
            if (x->min_t <= x->max_t && (x->dyn || (x->rows >= x->min_t && x->rows <= x->max_t)))
                p->disp[keep++] = *x;
        }
        p->n_disp = keep;
        if (p->role[i] == F_LEAD) st = lower_fused(p, &nodes[i], &fz[i]);
    }
    free(fz);

    /* descriptor sets: one per dispatch, written once */
    if (!st && p->n_disp) {
        VkDescriptorPoolSize ps = {VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, (uint32_t)p->n_disp * d->n_bind};
        VkDescriptorPoolCreateInfo pci = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
                                          .maxSets = (uint32_t)p->n_disp, .poolSizeCount = 1, .pPoolSizes = &ps};
        VkResult r = vkCreateDescriptorPool(d->dev, &pci, NULL, &p->dpool);
        if (r != VK_SUCCESS) st = loom__vk_fail(r, "vkCreateDescriptorPool");
        for (int32_t i = 0; i < p->n_disp && !st; i++) {
            vk_disp *x = &p->disp[i];
            VkDescriptorSetAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
                                              .descriptorPool = p->dpool, .descriptorSetCount = 1,
                                              .pSetLayouts = &d->dsl};
            if ((r = vkAllocateDescriptorSets(d->dev, &ai, &x->set)) != VK_SUCCESS) {
                st = loom__vk_fail(r, "vkAllocateDescriptorSets");
                break;
            }
            VkWriteDescriptorSet w = {.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET, .dstSet = x->set,
                                      .dstBinding = 0, .descriptorCount = d->n_bind,
                                      .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, .pBufferInfo = x->info};
            vkUpdateDescriptorSets(d->dev, 1, &w, 0, NULL);
        }
    }
    if (!st && d->profile && p->n_disp) {
        VkQueryPoolCreateInfo qi = {.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
                                    .queryType = VK_QUERY_TYPE_TIMESTAMP, .queryCount = 2 * (uint32_t)p->n_disp};
        VkResult r = vkCreateQueryPool(d->dev, &qi, NULL, &p->qpool);
        if (r != VK_SUCCESS) st = loom__vk_fail(r, "vkCreateQueryPool");
        else if (!(p->rec = calloc(((size_t)p->max_t + 1) * V_STEPS, sizeof *p->rec))) st = VK_ERR(LOOM_ERR_NOMEM, "out of memory");
    }
    if (!st) st = loom__vk_check_validation(d);
    if (st) {
        loom__vk_release(d, p);
        return st;
    }
    int n_lead = 0;
    for (int32_t i = 0; i < n_nodes; i++) n_lead += p->role[i] == F_LEAD;
    VK_LOG(LOOM_LOG_DEBUG, "compiled %d nodes into %d dispatches (%d decode fusions, %d passing x quantised)",
           (int)n_nodes, (int)p->n_disp, n_lead, n_links);
    *out = p;
    return LOOM_OK;
}

/* ---- recording ------------------------------------------------------------------------- */
static bool overlaps(const vk_access *a, const vk_access *b)
{
    return a->buf == b->buf && a->lo < b->hi && b->lo < a->hi;
}

/* the step's cmd_variant bits: which of the V_* dispatches it runs */
static bool runs(const vk_disp *x, int v)
{
    return x->att == V_ALL || (x->att == V_SHORT && (v & V_SHORT_STEP)) || (x->att == V_LONG && !(v & V_SHORT_STEP)) ||
           (x->att == V_MERGE && (v & V_MERGE_STEP));
}

static loom_status record(vk_prog *p, int32_t n, int v, VkCommandBuffer *out)
{
    vk_dev *d = p->d;
    VkCommandBufferAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                      .commandPool = d->cmd_pool, .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                      .commandBufferCount = 1};
    VkCommandBuffer cb;
    VkResult r = vkAllocateCommandBuffers(d->dev, &ai, &cb);
    if (r != VK_SUCCESS) return loom__vk_fail(r, "vkAllocateCommandBuffers");
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    if ((r = vkBeginCommandBuffer(cb, &bi)) != VK_SUCCESS) {
        vkFreeCommandBuffers(d->dev, d->cmd_pool, 1, &cb);
        return loom__vk_fail(r, "vkBeginCommandBuffer");
    }
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                          .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT,
                          .dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT};
    vk_access *pending = malloc((size_t)(p->n_disp + 1) * (VK_BINDINGS + 2) * sizeof *pending);
    int32_t *rec = p->qpool ? malloc((size_t)(p->n_disp + 1) * sizeof *rec) : NULL;
    int n_pend = 0, n_barriers = 0, n_rec = 0;
    VkPipeline bound = VK_NULL_HANDLE;
    if (p->qpool && !rec) free(pending), pending = NULL;
    if (rec) vkCmdResetQueryPool(cb, p->qpool, 0, 2 * (uint32_t)p->n_disp);
    for (int32_t i = 0; pending && i < p->n_disp; i++) {
        vk_disp *x = &p->disp[i];
        int64_t rows = x->dyn ? n : x->rows;
        if (rows < x->min_t || rows > x->max_t || !runs(x, v)) continue;
        bool hazard = false; /* any conflict with accesses since the last barrier (one side writing) */
        for (int a = 0; a < x->n_acc && !hazard; a++)
            for (int b = 0; b < n_pend && !hazard; b++)
                hazard = (x->acc[a].write || pending[b].write) && overlaps(&x->acc[a], &pending[b]);
        if (hazard) {
            vkCmdPipelineBarrier(cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0, 1,
                                 &mb, 0, NULL, 0, NULL);
            n_pend = 0, n_barriers++;
        }
        for (int a = 0; a < x->n_acc; a++) pending[n_pend++] = x->acc[a];
        uint32_t pc[VK_PC_WORDS], gx = x->gx, gy = 1;
        memcpy(pc, x->pc, sizeof pc);
        pc[0] = (uint32_t)rows;
        switch (x->mode) {
        case G_FIXED: break;
        case G_ROWS_X: gx = (uint32_t)rows; break;
        case G_ROWS_Y: gy = (uint32_t)rows; break;
        case G_ROWS_Y32: gy = (uint32_t)((rows + 31) / 32); break;
        case G_ROWS_Y64: gy = (uint32_t)((rows + 63) / 64); break;
        case G_ROWS_Y128: gy = (uint32_t)((rows + 127) / 128); break;
        case G_ELEM: pc[7] = (uint32_t)(rows * x->cols), gx = (uint32_t)((rows * x->cols + 255) / 256); break;
        case G_FLAT: break;
        }
        if (x->mode == G_ELEM || x->mode == G_FLAT) { /* flat_group() spans x and y */
            uint32_t g = gx;
            gx = g < 65535 ? g : 65535;
            gy = (g + gx - 1) / gx;
        }
        if (x->pipe != bound) vkCmdBindPipeline(cb, VK_PIPELINE_BIND_POINT_COMPUTE, x->pipe), bound = x->pipe;
        vkCmdBindDescriptorSets(cb, VK_PIPELINE_BIND_POINT_COMPUTE, d->layout, 0, 1, &x->set, 0, NULL);
        vkCmdPushConstants(cb, d->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof pc, pc);
        if (rec) vkCmdWriteTimestamp(cb, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, p->qpool, 2 * (uint32_t)n_rec);
        vkCmdDispatch(cb, gx, gy, x->gz);
        if (rec) vkCmdWriteTimestamp(cb, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, p->qpool, 2 * (uint32_t)n_rec + 1);
        if (rec) rec[1 + n_rec] = i;
        n_rec++;
    }
    free(pending);
    if (!pending) {
        free(rec);
        vkFreeCommandBuffers(d->dev, d->cmd_pool, 1, &cb);
        return VK_ERR(LOOM_ERR_NOMEM, "out of memory");
    }
    /* results visible to the host, to transfers and to the next submission */
    VkMemoryBarrier end = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER, .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT,
                           .dstAccessMask = VK_ACCESS_HOST_READ_BIT | VK_ACCESS_TRANSFER_READ_BIT |
                                            VK_ACCESS_TRANSFER_WRITE_BIT | VK_ACCESS_SHADER_READ_BIT |
                                            VK_ACCESS_SHADER_WRITE_BIT};
    vkCmdPipelineBarrier(cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                         VK_PIPELINE_STAGE_HOST_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT |
                             VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                         0, 1, &end, 0, NULL, 0, NULL);
    if ((r = vkEndCommandBuffer(cb)) != VK_SUCCESS) {
        free(rec);
        vkFreeCommandBuffers(d->dev, d->cmd_pool, 1, &cb);
        return loom__vk_fail(r, "vkEndCommandBuffer");
    }
    int k = n * V_STEPS + v;
    if (rec) rec[0] = n_rec, free(p->rec[k]), p->rec[k] = rec;
    VK_LOG(LOOM_LOG_DEBUG, "recorded the command buffer for %d tokens%s%s: %d dispatches (of %d compiled), %d barriers",
           (int)n, v & V_SHORT_STEP ? ", short attention" : "", v & V_MERGE_STEP ? ", merging attention" : "", n_rec,
           (int)p->n_disp, n_barriers);
    *out = cb;
    return LOOM_OK;
}

/* ---- LOOM_VK_PROFILE ------------------------------------------------------------------ */
static vk_shader pipe_shader(const vk_dev *d, VkPipeline pipe)
{
    for (const vk_pipe *q = d->pipes; q; q = q->next)
        if (q->pipe == pipe) return q->sh;
    return VK_SH_COUNT;
}

/* the unfused matmul shaders: p[7] K, p[8] N of the dispatch */
static bool is_matmul_shader(vk_shader sh)
{
    return sh == VK_SH_GEMV || sh == VK_SH_GEMV_SG || sh == VK_SH_GEMV_VEC || sh == VK_SH_GEMV_VEC_SG ||
           sh == VK_SH_GEMV_AWQ || sh == VK_SH_GEMM || sh == VK_SH_GEMM_AWQ || sh == VK_SH_GEMM_COOP ||
           sh == VK_SH_GEMM_COOP_AWQ;
}

typedef struct {
    vk_shader sh;
    uint32_t  K, N; /* matmul shaders (the fused GEMV: all its weights' columns); else 0 */
    int32_t   count;
    double    ms, idle, flop;
} vk_prof_row;

static int by_time(const void *a, const void *b)
{
    double x = ((const vk_prof_row *)a)->ms, y = ((const vk_prof_row *)b)->ms;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* milliseconds from timestamp a to b, negative when b is earlier (counters of fewer than 64 valid bits wrap) */
static double ticks_ms(const vk_dev *d, uint64_t a, uint64_t b)
{
    uint64_t t = (b - a) & d->ts_mask;
    double v = t > d->ts_mask / 2 ? -(double)((a - b) & d->ts_mask) : (double)t;
    return v * d->ts_ns * 1e-6;
}

/* Wait for the step, read its timestamps and log where its device time went. */
static loom_status prof_report(vk_prog *p, int32_t n, int v)
{
    vk_dev *d = p->d;
    const int32_t *rec = p->rec[n * V_STEPS + v];
    int32_t nr = rec ? rec[0] : 0;
    loom_status st = loom__vk_wait(d);
    if (st || !nr) return st;
    uint64_t *ts = malloc((size_t)nr * 2 * sizeof *ts);
    vk_prof_row *rows = calloc((size_t)nr, sizeof *rows);
    if (!ts || !rows) {
        free(ts), free(rows);
        return LOOM_OK; /* the step ran; only its report is lost */
    }
    VkResult r = vkGetQueryPoolResults(d->dev, p->qpool, 0, 2 * (uint32_t)nr, (size_t)nr * 2 * sizeof *ts, ts, 8,
                                       VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT);
    if (r != VK_SUCCESS) {
        free(ts), free(rows);
        return loom__vk_fail(r, "vkGetQueryPoolResults");
    }
    double busy = 0, idle = 0, span = 0;
    int32_t n_rows = 0;
    for (int32_t j = 0; j < nr; j++) {
        const vk_disp *x = &p->disp[rec[1 + j]];
        double ms = ticks_ms(d, ts[2 * j], ts[2 * j + 1]), gap = j ? ticks_ms(d, ts[2 * j - 1], ts[2 * j]) : 0;
        if (gap < 0) gap = 0; /* it overlapped the previous one */
        busy += ms, idle += gap;
        vk_shader sh = pipe_shader(d, x->pipe);
        bool mm = is_matmul_shader(sh);
        int64_t rows_t = x->dyn ? n : x->rows;
        const loom_tensor *y = x->node->dst;
        VK_LOG(LOOM_LOG_DEBUG, "dispatch %d: node %d (%s '%s', %d rows) %s: %.4f ms, idle before %.4f ms", (int)j,
               (int)(x->node - p->nodes), loom_op_str(x->node->op), y->name ? y->name : "?", (int)rows_t,
               loom__vk_shader_name(sh), ms, gap);
        uint32_t K = mm ? x->pc[7] : 0, N = mm ? x->pc[8] : 0;
        if (sh == VK_SH_GEMV_AWQ_FUSED || sh == VK_SH_GEMV_AWQ_FUSED_IDOT) /* K, and the columns of its (up to three) weights together */
            K = x->pc[17], N = x->pc[18] + x->pc[19] + x->pc[20];
        int32_t k = 0;
        while (k < n_rows && !(rows[k].sh == sh && rows[k].K == K && rows[k].N == N)) k++;
        if (k == n_rows) rows[n_rows++] = (vk_prof_row){.sh = sh, .K = K, .N = N};
        rows[k].count++, rows[k].ms += ms, rows[k].idle += gap, rows[k].flop += 2.0 * (double)rows_t * K * N;
    }
    span = ticks_ms(d, ts[0], ts[2 * nr - 1]);
    qsort(rows, (size_t)n_rows, sizeof *rows, by_time);
    VK_LOG(LOOM_LOG_INFO, "step of %d tokens: %.3f ms on the device, %.3f ms in %d dispatches, %.3f ms idle between",
           (int)n, span, busy, (int)nr, idle);
    for (int32_t k = 0; k < n_rows; k++) {
        const vk_prof_row *w = &rows[k];
        char shape[48] = "", rate[32] = "";
        if (w->K) snprintf(shape, sizeof shape, " K=%u N=%u", w->K, w->N);
        if (w->K && w->ms > 0) snprintf(rate, sizeof rate, ", %.3g TFLOP/s", w->flop / (w->ms * 1e9));
        VK_LOG(LOOM_LOG_INFO, "  %s%s: %d dispatches, %.4f ms (%.1f%%), idle before %.4f ms%s", loom__vk_shader_name(w->sh),
               shape, (int)w->count, w->ms, busy > 0 ? 100 * w->ms / busy : 0.0, w->idle, rate);
    }
    free(ts), free(rows);
    return LOOM_OK;
}

/* attn_dec.comp's dec_parts, the same integer arithmetic: the partitions of a row over L positions in a
 * step of T rows (fill0, pmax: its p[14], p[15]); a row of more than ATT_JOIN needs attn_merge */
static uint32_t att_parts(uint32_t L, uint32_t T, uint32_t fill0, uint32_t pmax)
{
    uint32_t fill = (fill0 + T - 1) / T, fine = (L + ATT_DP - 1) / ATT_DP, hi = (L + ATT_PLMIN - 1) / ATT_PLMIN;
    if (fine > ATT_JOIN) fine = ATT_JOIN;
    if (hi < fine) hi = fine;
    uint32_t lo = (L + ATT_PLMAX - 1) / ATT_PLMAX, P = fill > lo ? fill : lo;
    P = P < hi ? P : hi;
    P = P < pmax ? P : pmax;
    uint32_t PL = ((L + P - 1) / P + ATT_DP - 1) / ATT_DP * ATT_DP;
    return (L + PL - 1) / PL;
}

/* which command buffer of n tokens the step replays (V_*_STEP bits) */
static int cmd_variant(const vk_prog *p, int32_t n, const loom_step *step)
{
    int v = 0;
    if (!p->needs_pos) return v;
    if (p->has_short && n == 1 && step->pos[0] < ATT_SP) v |= V_SHORT_STEP; /* attn_dec1's L <= SP */
    for (int32_t t = 0; t < n && p->merge[1] && !(v & V_MERGE_STEP); t++)
        if (p->merge_mixed || att_parts((uint32_t)step->pos[t] + 1, (uint32_t)n, p->merge[0], p->merge[1]) > ATT_JOIN)
            v |= V_MERGE_STEP;
    return v;
}

loom_status loom__vk_execute(void *dctx, void *pv, const loom_step *step)
{
    vk_dev *d = dctx;
    vk_prog *p = pv;
    int32_t n = step ? step->n_tokens : 0;
    if (n < 1 || n > p->max_t) {
        bool any_dyn = false;
        for (int32_t i = 0; i < p->n_nodes; i++) any_dyn |= (p->nodes[i].dst->flags & LOOM_TENSOR_DYNAMIC) != 0;
        if (n < 1 || any_dyn) return VK_ERR(LOOM_ERR_INVALID, "step of %d tokens, the program holds 1..%d", (int)n, (int)p->max_t);
        n = p->max_t; /* nothing dynamic: the count does not matter */
    }
    if (p->needs_pos) {
        if (!step->pos || !step->seq) return VK_ERR(LOOM_ERR_INVALID, "the step has no positions or sequence slots");
        for (int32_t a = 0; a < p->n_attn; a++) /* a bad slot or position would write outside the cache */
            for (int32_t t = 0; t < n; t++)
                if (step->pos[t] < 0 || step->pos[t] >= p->attn_cache[a]->shape[2] || step->seq[t] < 0 ||
                    step->seq[t] >= p->attn_cache[a]->shape[0])
                    return VK_ERR(LOOM_ERR_INVALID, "gqa_attn: token %d at slot %d position %d is outside the cache",
                                  (int)t, step->seq[t], step->pos[t]);
        for (int32_t t = 0; t < n; t++)
            if (step->pos[t] < 0) return VK_ERR(LOOM_ERR_INVALID, "token %d has position %d", (int)t, step->pos[t]);
    }
    loom_status st = loom__vk_wait(d); /* the step buffer may still be in use */
    if (st) return st;
    uint32_t *w = p->step->map;
    w[0] = (uint32_t)n;
    w[1] = 0;
    if (p->needs_pos) {
        memcpy(w + 4, step->pos, (size_t)n * 4);
        memcpy(w + p->seq_base, step->seq, (size_t)n * 4);
    }
    for (int32_t r = 0; r < p->n_rope; r++) {
        const vk_rope *ro = &p->ropes[r];
        int32_t h2 = ro->p.head_dim / 2;
        float *tab = (float *)(w + ro->base);
        for (int32_t t = 0; t < n; t++)
            for (int32_t i = 0; i < h2; i++) {
                double a = (double)step->pos[t] * ro->inv_freq[i];
                tab[((size_t)t * h2 + i) * 2] = (float)(cos(a) * ro->mscale);
                tab[((size_t)t * h2 + i) * 2 + 1] = (float)(sin(a) * ro->mscale);
            }
    }
    int v = cmd_variant(p, n, step);
    VkCommandBuffer *cb = &p->cmd[n * V_STEPS + v];
    if (!*cb && (st = record(p, n, v, cb))) return st;
    st = loom__vk_submit(d, *cb, p);
    if (!st && p->qpool) st = prof_report(p, n, v);
    return st;
}
