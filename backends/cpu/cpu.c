/* cpu.c — the built-in CPU backend's interface table: init, the one device,
 * buffers, weight preparation (AWQ repacking), compile and execute.
 *
 * Environment: LOOM_THREADS (1..1024, default: online cores) sets the pool
 * and OpenBLAS thread count; LOOM_CPU_ISA (scalar|avx2|avx512) caps the
 * instruction set the kernels use, for testing the fallbacks. */
#include <cblas.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include "cpu.h"
#include "cpu_impl.h"

/* The host's services: set once by loom_cpu_backend_entry (the only global). */
static const loom_host_i *cpu_host;

const loom_host_i *loom__cpu_host(void) { return cpu_host; }

const char *loom__cpu_isa_name(cpu_isa isa)
{
    return isa == CPU_ISA_AVX512 ? "avx512" : isa == CPU_ISA_AVX2 ? "avx2" : "scalar";
}

typedef struct cpu_backend {
    int     n_threads;
    cpu_isa isa;
} cpu_backend;

/* A buffer's header; an AWQ weight's repacked descriptor rides along. */
typedef struct cpu_buffer_ext {
    struct loom_buffer b;
    cpu_awq_packed     awq;
} cpu_buffer_ext;

typedef struct node_aux {
    double         *inv_freq; /* rope: head_dim/2 */
    double          mscale;
    cpu_awq_packed *awq;      /* matmul_awq: the repacked weight */
    cpu_buffer_ext *owned;    /* matmul_awq: repacked here (weight not prepared by us) */
    bool            awq_live; /* the AWQ source is not constant: repack every step */
} node_aux;

typedef struct cpu_prog {
    loom_node       *nodes;
    int32_t          n_nodes;
    node_aux        *aux;
    float           *scratch;
    size_t           scratch_floats;
    struct cpu_prog *prev, *next;
} cpu_prog;

/* ---- init ----------------------------------------------------------------------- */
static cpu_isa detect_isa(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
        return CPU_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
        return CPU_ISA_AVX2;
#endif
    return CPU_ISA_SCALAR;
}

static loom_status cpu_init(void **bctx)
{
    *bctx = NULL;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int n = cores >= 1 ? (cores > 1024 ? 1024 : (int)cores) : 1;
    const char *env = getenv("LOOM_THREADS");
    if (env && *env) {
        char *end;
        errno = 0;
        long v = strtol(env, &end, 10);
        if (errno || *end || end == env || v < 1 || v > 1024)
            return CPU_ERR(LOOM_ERR_INVALID, "LOOM_THREADS='%s' is not an integer in 1..1024", env);
        n = (int)v;
    }
    cpu_isa isa = detect_isa(), best = isa;
    const char *cap = getenv("LOOM_CPU_ISA");
    if (cap && *cap) {
        cpu_isa want;
        if (!strcasecmp(cap, "scalar"))
            want = CPU_ISA_SCALAR;
        else if (!strcasecmp(cap, "avx2"))
            want = CPU_ISA_AVX2;
        else if (!strcasecmp(cap, "avx512"))
            want = CPU_ISA_AVX512;
        else
            return CPU_ERR(LOOM_ERR_INVALID, "LOOM_CPU_ISA='%s' is not one of scalar, avx2, avx512", cap);
        if (want > best)
            CPU_LOG(LOOM_LOG_WARN, "cpu: LOOM_CPU_ISA=%s asked, but this CPU only has %s", cap, loom__cpu_isa_name(best));
        else
            isa = want;
    }
    cpu_backend *b = calloc(1, sizeof *b);
    if (!b) return CPU_ERR(LOOM_ERR_NOMEM, "cpu: out of memory");
    b->n_threads = n;
    b->isa = isa;
    CPU_LOG(LOOM_LOG_DEBUG, "cpu: %d threads, kernels %s", n, loom__cpu_isa_name(isa));
    *bctx = b;
    return LOOM_OK;
}

static void cpu_shutdown(void *bctx) { free(bctx); }

static int32_t cpu_device_count(void *bctx) { return 1; }

static void cpu_model_name(char *out, size_t len)
{
    snprintf(out, len, "CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10)) continue;
        char *c = strchr(line, ':');
        if (!c) break;
        c++;
        while (*c == ' ' || *c == '\t') c++;
        c[strcspn(c, "\n")] = 0;
        if (*c) snprintf(out, len, "%s", c);
        break;
    }
    fclose(f);
}

static loom_status cpu_device_info(void *bctx, int32_t dev, loom_device_info *info)
{
    const cpu_backend *b = bctx;
    if (dev != 0) return CPU_ERR(LOOM_ERR_INVALID, "cpu: no device %d (there is one, 0)", dev);
    memset(info, 0, sizeof *info);
    cpu_model_name(info->name, sizeof info->name);
    const char *cfg = openblas_get_config();
    snprintf(info->driver, sizeof info->driver, "%s", cfg ? cfg : "OpenBLAS");
    struct sysinfo si;
    if (!sysinfo(&si)) {
        info->mem_total = (uint64_t)si.totalram * si.mem_unit;
        info->mem_free = (uint64_t)si.freeram * si.mem_unit;
    }
    snprintf(info->details, sizeof info->details, "threads %d (LOOM_THREADS), SIMD %s, %ld cores online", b->n_threads,
             loom__cpu_isa_name(b->isa), sysconf(_SC_NPROCESSORS_ONLN));
    return LOOM_OK;
}

static void cpu_release(void *dctx, void *progp);
static void cpu_buffer_free(void *dctx, loom_buffer *buf);

static loom_status cpu_device_open(void *bctx, int32_t dev, void **dctx)
{
    const cpu_backend *b = bctx;
    *dctx = NULL;
    if (dev != 0) return CPU_ERR(LOOM_ERR_INVALID, "cpu: no device %d (there is one, 0)", dev);
    cpu_dev *d = calloc(1, sizeof *d);
    if (!d) return CPU_ERR(LOOM_ERR_NOMEM, "cpu: out of memory");
    int rc = loom__cpu_pool_create(b->n_threads, &d->pool);
    if (rc) {
        free(d);
        return CPU_ERR(rc == ENOMEM ? LOOM_ERR_NOMEM : LOOM_ERR_BACKEND, "cpu: cannot start %d threads: %s",
                       b->n_threads, strerror(rc));
    }
    d->n_threads = b->n_threads;
    d->isa = b->isa;
    /* OpenBLAS runs only from the calling thread while the pool sleeps: same count, no oversubscription. */
    openblas_set_num_threads(d->n_threads);
    *dctx = d;
    return LOOM_OK;
}

static void cpu_device_close(void *dctx)
{
    cpu_dev *d = dctx;
    if (!d) return;
    while (d->progs) cpu_release(d, d->progs);
    while (d->buffers) cpu_buffer_free(d, d->buffers);
    loom__cpu_pool_destroy(d->pool);
    free(d);
}

/* ---- supports ----------------------------------------------------------------------- */
static bool is_f32_2d(const loom_tensor *t) { return t && t->dtype == LOOM_F32 && t->ndim == 2; }
static bool is_float(const loom_tensor *t)
{
    return t && (t->dtype == LOOM_F32 || t->dtype == LOOM_F16 || t->dtype == LOOM_BF16);
}
static bool opt_vec(const loom_tensor *t) { return !t || (is_float(t) && t->ndim == 1); }

static bool cpu_supports(void *dctx, const loom_node *n)
{
    const loom_tensor *const *s = (const loom_tensor *const *)n->src;
    if (!n->dst || n->dst->dtype != LOOM_F32 || n->n_src < 1 || n->n_src > LOOM_MAX_SRC) return false;
    const loom_op_params *p = &n->p;
    switch (n->op) {
    case LOOM_OP_EMBED:
        return n->n_src >= 2 && is_float(s[0]) && s[0]->ndim == 2 && s[1] && s[1]->dtype == LOOM_I32 && s[1]->ndim == 1;
    case LOOM_OP_RMSNORM:
        return n->n_src >= 2 && is_f32_2d(s[0]) && is_float(s[1]) && s[1]->ndim == 1;
    case LOOM_OP_MATMUL:
        return n->n_src >= 2 && is_f32_2d(s[0]) && is_float(s[1]) && s[1]->ndim == 2 && (n->n_src < 3 || opt_vec(s[2]));
    case LOOM_OP_MATMUL_AWQ:
        return n->n_src >= 2 && is_f32_2d(s[0]) && s[1] && s[1]->dtype == LOOM_Q4_AWQ && s[1]->ndim == 2 &&
               s[1]->shape[0] % LOOM_AWQ_GROUP == 0 && s[1]->shape[1] % 8 == 0 && (n->n_src < 3 || opt_vec(s[2]));
    case LOOM_OP_ROPE:
        return is_f32_2d(s[0]) && p->head_dim > 0 && p->head_dim % 2 == 0 && p->n_head > 0;
    case LOOM_OP_GQA_ATTN:
        if (n->n_src < 5 || !is_f32_2d(s[0]) || !is_f32_2d(s[1]) || !is_f32_2d(s[2])) return false;
        if (p->head_dim <= 0 || p->head_dim % 2 || p->n_head <= 0 || p->n_head_kv <= 0 || p->n_head % p->n_head_kv)
            return false;
        for (int i = 3; i < 5; i++)
            if (!s[i] || (s[i]->dtype != LOOM_F16 && s[i]->dtype != LOOM_F32) || s[i]->ndim != 4) return false;
        return s[3]->dtype == s[4]->dtype;
    case LOOM_OP_SWIGLU:
    case LOOM_OP_ADD:
        return n->n_src >= 2 && is_f32_2d(s[0]) && is_f32_2d(s[1]);
    default:
        return false;
    }
}

/* ---- buffers --------------------------------------------------------------------------- */
static loom_status new_buffer(cpu_dev *d, size_t size, cpu_buffer_ext **out)
{
    *out = NULL;
    size_t rounded;
    if (__builtin_add_overflow(size, (size_t)CPU_ALIGN - 1, &rounded))
        return CPU_ERR(LOOM_ERR_NOMEM, "cpu: cannot allocate %zu bytes (size overflows)", size);
    rounded &= ~((size_t)CPU_ALIGN - 1);
    cpu_buffer_ext *b = calloc(1, sizeof *b);
    if (!b) return CPU_ERR(LOOM_ERR_NOMEM, "cpu: out of memory allocating a buffer header");
    if (posix_memalign(&b->b.data, CPU_ALIGN, rounded ? rounded : CPU_ALIGN)) {
        free(b);
        return CPU_ERR(LOOM_ERR_NOMEM, "cpu: cannot allocate %zu bytes", size);
    }
    b->b.size = size;
    b->b.next = d->buffers;
    if (d->buffers) d->buffers->prev = &b->b;
    d->buffers = &b->b;
    *out = b;
    return LOOM_OK;
}

static loom_status cpu_buffer_alloc(void *dctx, size_t size, loom_buffer **buf)
{
    cpu_buffer_ext *b;
    loom_status st = new_buffer(dctx, size, &b);
    *buf = st ? NULL : &b->b;
    return st;
}

static void cpu_buffer_free(void *dctx, loom_buffer *buf)
{
    cpu_dev *d = dctx;
    if (!buf) return;
    if (buf->prev) buf->prev->next = buf->next;
    else d->buffers = buf->next;
    if (buf->next) buf->next->prev = buf->prev;
    free(buf->data);
    free((cpu_buffer_ext *)buf); /* b is the first member */
}

static loom_status check_range(const loom_buffer *buf, size_t off, size_t size, const char *what)
{
    if (!buf) return CPU_ERR(LOOM_ERR_INVALID, "cpu: %s of a NULL buffer", what);
    if (off > buf->size || size > buf->size - off)
        return CPU_ERR(LOOM_ERR_INVALID, "cpu: %s of %zu bytes at offset %zu is outside the buffer of %zu bytes", what,
                       size, off, buf->size);
    return LOOM_OK;
}

static loom_status cpu_buffer_write(void *dctx, loom_buffer *buf, size_t off, const void *src, size_t size)
{
    loom_status st = check_range(buf, off, size, "write");
    if (!st && size) memcpy((char *)buf->data + off, src, size);
    return st;
}

static loom_status cpu_buffer_read(void *dctx, loom_buffer *buf, size_t off, void *dst, size_t size)
{
    loom_status st = check_range(buf, off, size, "read");
    if (!st && size) memcpy(dst, (const char *)buf->data + off, size);
    return st;
}

static void *cpu_buffer_host_ptr(void *dctx, loom_buffer *buf) { return buf ? buf->data : NULL; }

/* ---- weights: AWQ repacked into tiles (cpu_impl.h), everything else as is ---------------- */
static loom_status awq_pack_into(cpu_dev *d, const loom_tensor *t, const void *data, cpu_buffer_ext **out)
{
    int64_t K = t->shape[0], N = t->shape[1];
    if (t->ndim != 2 || K <= 0 || N <= 0 || K % LOOM_AWQ_GROUP || N % 8 || K > (1 << 24) || N > (1 << 24))
        return CPU_ERR(LOOM_ERR_INVALID, "cpu: AWQ weight '%s' {K=%lld, N=%lld}: K must be a multiple of %d, N of 8",
                       t->name ? t->name : "?", (long long)K, (long long)N, LOOM_AWQ_GROUP);
    loom_status st = new_buffer(d, loom__cpu_awq_packed_bytes(K, N), out);
    if (st) return st;
    cpu_awq_packed *p = &(*out)->awq;
    *p = (cpu_awq_packed){CPU_AWQ_MAGIC, K, N, (N + CPU_AWQ_TILE - 1) / CPU_AWQ_TILE, K / LOOM_AWQ_GROUP,
                          (*out)->b.data};
    loom__cpu_awq_repack(p, data, d->pool);
    return LOOM_OK;
}

static loom_status cpu_weight_prepare(void *dctx, loom_tensor *t, const void *data)
{
    cpu_dev *d = dctx;
    cpu_buffer_ext *b;
    loom_status st;
    if (t->dtype == LOOM_Q4_AWQ) {
        if ((st = awq_pack_into(d, t, data, &b))) return st;
        t->extra = &b->awq;
    } else {
        static const size_t es[LOOM_DTYPE_COUNT] = {4, 2, 2, 4, 0};
        size_t n = (unsigned)t->dtype < LOOM_DTYPE_COUNT && t->ndim >= 1 && t->ndim <= LOOM_MAX_DIMS ? es[t->dtype] : 0;
        for (int i = 0; n && i < t->ndim; i++)
            if (t->shape[i] < 1 || __builtin_mul_overflow(n, (size_t)t->shape[i], &n))
                return CPU_ERR(LOOM_ERR_INVALID, "cpu: weight '%s': bad shape or size overflow", t->name ? t->name : "?");
        if (!n) return CPU_ERR(LOOM_ERR_INVALID, "cpu: weight '%s': bad dtype or shape", t->name ? t->name : "?");
        if ((st = new_buffer(d, n, &b))) return st;
        memcpy(b->b.data, data, n);
        t->extra = NULL;
    }
    t->buf = &b->b;
    t->offset = 0;
    return LOOM_OK;
}

static void cpu_weight_release(void *dctx, loom_tensor *t)
{
    if (!t || !t->buf) return;
    cpu_buffer_free(dctx, t->buf);
    t->buf = NULL;
    t->extra = NULL;
}

/* ---- compile ----------------------------------------------------------------------------- */
static inline void *tdata(const loom_tensor *t)
{
    return t ? (char *)t->buf->data + t->offset : NULL;
}

static int64_t max_rows(const loom_tensor *t) { return t->shape[0]; }

static void cpu_release(void *dctx, void *progp)
{
    cpu_dev *d = dctx;
    cpu_prog *p = progp;
    if (!p) return;
    if (p->prev) p->prev->next = p->next;
    else if (d->progs == p) d->progs = p->next;
    if (p->next) p->next->prev = p->prev;
    for (int32_t i = 0; p->aux && i < p->n_nodes; i++) {
        free(p->aux[i].inv_freq);
        if (p->aux[i].owned) cpu_buffer_free(d, &p->aux[i].owned->b);
    }
    free(p->aux);
    free(p->scratch);
    free(p);
}

static loom_status cpu_compile(void *dctx, loom_node *nodes, int32_t n_nodes, void **progp)
{
    cpu_dev *d = dctx;
    *progp = NULL;
    cpu_prog *p = calloc(1, sizeof *p);
    if (!p) return CPU_ERR(LOOM_ERR_NOMEM, "cpu: out of memory compiling");
    p->nodes = nodes;
    p->n_nodes = n_nodes;
    p->next = d->progs;
    if (d->progs) d->progs->prev = p;
    d->progs = p;
    loom_status st = LOOM_OK;
    if (n_nodes > 0 && !(p->aux = calloc((size_t)n_nodes, sizeof *p->aux)))
        st = CPU_ERR(LOOM_ERR_NOMEM, "cpu: out of memory compiling");
    size_t need = 16;
    for (int32_t i = 0; i < n_nodes && !st; i++) {
        loom_node *n = &nodes[i];
        node_aux *a = &p->aux[i];
        if (!cpu_supports(d, n)) {
            st = CPU_ERR(LOOM_ERR_UNSUPPORTED, "cpu: node %d (%s) has operand types this backend does not take", i,
                         loom_op_str(n->op));
            break;
        }
        int64_t T = max_rows(n->dst);
        size_t s = 0;
        switch (n->op) {
        case LOOM_OP_RMSNORM: s = (size_t)n->src[0]->shape[1]; break;
        case LOOM_OP_MATMUL:
            s = loom__cpu_matmul_scratch(n->src[1]->dtype, n->src[1]->shape[1], n->src[1]->shape[0], T);
            break;
        case LOOM_OP_MATMUL_AWQ: {
            loom_tensor *w = n->src[1];
            s = loom__cpu_awq_scratch(w->shape[0], w->shape[1], T);
            cpu_awq_packed *pk = w->extra;
            if (pk && pk->magic == CPU_AWQ_MAGIC && pk->K == w->shape[0] && pk->N == w->shape[1]) {
                a->awq = pk;
            } else if (!w->buf) {
                st = CPU_ERR(LOOM_ERR_INVALID, "cpu: AWQ weight '%s' has no buffer", w->name ? w->name : "?");
            } else if (!(st = awq_pack_into(d, w, tdata(w), &a->owned))) {
                a->awq = &a->owned->awq; /* not prepared by us: our own copy, refreshed each step unless constant */
                a->awq_live = !(w->flags & LOOM_TENSOR_WEIGHT);
            }
            break;
        }
        case LOOM_OP_ROPE: {
            int32_t h2 = n->p.head_dim / 2;
            if (!(a->inv_freq = malloc((size_t)h2 * sizeof *a->inv_freq))) {
                st = CPU_ERR(LOOM_ERR_NOMEM, "cpu: out of memory compiling");
                break;
            }
            for (int32_t k = 0; k < h2; k++) a->inv_freq[k] = loom_rope_inv_freq(&n->p, k);
            a->mscale = loom_rope_mscale(&n->p);
            s = loom__cpu_rope_scratch(T, n->p.head_dim);
            break;
        }
        case LOOM_OP_GQA_ATTN: s = loom__cpu_attn_scratch(d->n_threads, n->src[3]->shape[2], n->p.head_dim); break;
        default: break;
        }
        if (s > need) need = s;
    }
    if (!st) {
        p->scratch_floats = need;
        if (posix_memalign((void **)&p->scratch, CPU_ALIGN, need * sizeof(float)))
            st = CPU_ERR(LOOM_ERR_NOMEM, "cpu: cannot allocate %zu bytes of scratch", need * sizeof(float));
    }
    if (st) {
        cpu_release(d, p);
        return st;
    }
    CPU_LOG(LOOM_LOG_DEBUG, "cpu: compiled %d nodes, scratch %.1f MiB", n_nodes, need * 4.0 / 1048576.0);
    *progp = p;
    return LOOM_OK;
}

/* ---- execute ------------------------------------------------------------------------------- */
static loom_status run_node(cpu_dev *d, cpu_ctx *c, const loom_node *n, const node_aux *a, const loom_step *step)
{
    loom_tensor *const *s = n->src;
    const loom_tensor *dst = n->dst;
    int64_t T = (dst->flags & LOOM_TENSOR_DYNAMIC) ? step->n_tokens : dst->shape[0];
    if (T < 1 || T > dst->shape[0])
        return CPU_ERR(LOOM_ERR_INVALID, "cpu: step of %lld rows, the tensor holds %lld", (long long)T,
                       (long long)dst->shape[0]);
    float *y = tdata(dst);
    switch (n->op) {
    case LOOM_OP_EMBED:
        return loom__cpu_embed(c, tdata(s[0]), s[0]->dtype, s[0]->shape[0], s[0]->shape[1], tdata(s[1]), y, T);
    case LOOM_OP_RMSNORM:
        loom__cpu_rmsnorm(c, tdata(s[0]), tdata(s[1]), s[1]->dtype, n->p.eps, y, T, s[0]->shape[1]);
        return LOOM_OK;
    case LOOM_OP_MATMUL:
        return loom__cpu_matmul(c, tdata(s[0]), tdata(s[1]), s[1]->dtype, y, T, s[1]->shape[1], s[1]->shape[0],
                                n->n_src > 2 ? tdata(s[2]) : NULL, n->n_src > 2 && s[2] ? s[2]->dtype : LOOM_F32);
    case LOOM_OP_MATMUL_AWQ:
        if (a->awq_live) loom__cpu_awq_repack(a->awq, tdata(s[1]), d->pool);
        return loom__cpu_matmul_awq(c, a->awq, tdata(s[0]), y, T, n->n_src > 2 ? tdata(s[2]) : NULL,
                                    n->n_src > 2 && s[2] ? s[2]->dtype : LOOM_F32);
    case LOOM_OP_ROPE:
        if (!step->pos) return CPU_ERR(LOOM_ERR_INVALID, "cpu: rope needs token positions (step->pos is NULL)");
        loom__cpu_rope(c, tdata(s[0]), y, T, n->p.n_head, n->p.head_dim, a->inv_freq, a->mscale, step->pos);
        return LOOM_OK;
    case LOOM_OP_GQA_ATTN: {
        if (!step->pos || !step->seq)
            return CPU_ERR(LOOM_ERR_INVALID, "cpu: gqa_attn needs token positions and sequence slots");
        cpu_attn_args args = {
            .q = tdata(s[0]), .k = tdata(s[1]), .v = tdata(s[2]), .kc = tdata(s[3]), .vc = tdata(s[4]),
            .cache_dt = s[3]->dtype, .y = y, .T = T, .S = s[3]->shape[0], .C = s[3]->shape[2],
            .n_head = n->p.n_head, .n_head_kv = n->p.n_head_kv, .head_dim = n->p.head_dim,
            .scale = n->p.attn_scale > 0 ? n->p.attn_scale : (float)(1.0 / sqrt((double)n->p.head_dim)),
            .pos = step->pos, .seq = step->seq};
        return loom__cpu_gqa_attn(c, &args);
    }
    case LOOM_OP_SWIGLU:
        loom__cpu_swiglu(c, tdata(s[0]), tdata(s[1]), y, T * s[0]->shape[1]);
        return LOOM_OK;
    case LOOM_OP_ADD:
        loom__cpu_add(c, tdata(s[0]), tdata(s[1]), y, T * s[0]->shape[1]);
        return LOOM_OK;
    default:
        return CPU_ERR(LOOM_ERR_UNSUPPORTED, "cpu: op %d is not supported", (int)n->op);
    }
}

static loom_status cpu_execute(void *dctx, void *progp, const loom_step *step)
{
    cpu_dev *d = dctx;
    cpu_prog *p = progp;
    if (!p || !step || step->n_tokens < 1) return CPU_ERR(LOOM_ERR_INVALID, "cpu: execute without a program or step");
    cpu_ctx c = {d->pool, d->n_threads, d->isa, p->scratch, p->scratch_floats};
    for (int32_t i = 0; i < p->n_nodes; i++) {
        loom_status st = run_node(d, &c, &p->nodes[i], &p->aux[i], step);
        if (st) return st;
    }
    return LOOM_OK;
}

static loom_status cpu_sync(void *dctx) { return LOOM_OK; } /* execute() is synchronous */

static const loom_backend_i cpu_iface = {
    .abi             = LOOM_BACKEND_ABI,
    .name            = "cpu",
    .init            = cpu_init,
    .shutdown        = cpu_shutdown,
    .device_count    = cpu_device_count,
    .device_info     = cpu_device_info,
    .device_open     = cpu_device_open,
    .device_close    = cpu_device_close,
    .supports        = cpu_supports,
    .buffer_alloc    = cpu_buffer_alloc,
    .buffer_free     = cpu_buffer_free,
    .buffer_write    = cpu_buffer_write,
    .buffer_read     = cpu_buffer_read,
    .buffer_host_ptr = cpu_buffer_host_ptr,
    .weight_prepare  = cpu_weight_prepare,
    .weight_release  = cpu_weight_release,
    .compile         = cpu_compile,
    .execute         = cpu_execute,
    .release         = cpu_release,
    .sync            = cpu_sync,
};

const loom_backend_i *loom_cpu_backend_entry(const loom_host_i *host)
{
    if (!host || host->abi != LOOM_BACKEND_ABI || !host->error || !host->log) return NULL;
    cpu_host = host;
    return &cpu_iface;
}
