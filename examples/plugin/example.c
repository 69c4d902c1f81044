/* example.c — a complete loom backend plugin in one file, built against
 * loom_backend.h alone (see docs/PLUGINS.md).
 *
 * Device: one, the host CPU; buffers are malloc'd host memory. It runs three
 * ops — add, swiglu, and rmsnorm with an f32 weight — and says no to every
 * other node in supports(), so the scheduler places those on the next device
 * (the CPU backend) and copies tensors across.
 *
 * Out of tree:
 *   gcc -std=c11 -O2 -Wall -Wextra -shared -fPIC -I<loom>/core example.c -o libloom-example.so -lm */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "loom_backend.h"

/* The host's services (logging, errors), handed to loom_backend_entry. */
static const loom_host_i *host;

#define FAIL(st, ...) host->error((st), "example: " __VA_ARGS__)

struct loom_buffer {  /* the opaque buffer type, as this backend defines it */
    size_t size;
    unsigned char *data;
    struct loom_buffer *prev, *next; /* the device's live buffers */
};

typedef struct prog {
    loom_node *nodes;  /* borrowed: valid until release() */
    int32_t n_nodes;
    struct prog *prev, *next;
} prog;

/* One opened device: what it still owns, so device_close() can free it. */
typedef struct {
    loom_buffer *buffers;
    prog        *progs;
    size_t       bytes; /* in live buffers */
} ex_dev;

#define LINK(head, x)   ((x)->prev = NULL, (x)->next = (head), (head) ? (head)->prev = (x) : 0, (head) = (x))
#define UNLINK(head, x) ((x)->prev ? ((x)->prev->next = (x)->next) : ((head) = (x)->next), \
                         (x)->next ? (x)->next->prev = (x)->prev : 0)

/* ---- backend and device ------------------------------------------------------ */
static loom_status ex_init(void **bctx)
{
    *bctx = NULL; /* nothing to load: no backend context needed */
    host->log(LOOM_LOG_DEBUG, "example: init");
    return LOOM_OK;
}

static void ex_shutdown(void *bctx) { (void)bctx; }

static int32_t ex_device_count(void *bctx) { (void)bctx; return 1; }

static loom_status ex_device_info(void *bctx, int32_t dev, loom_device_info *info)
{
    (void)bctx;
    if (dev != 0) return FAIL(LOOM_ERR_NOT_FOUND, "no device %d", (int)dev);
    snprintf(info->name, sizeof info->name, "example host device");
    snprintf(info->driver, sizeof info->driver, "example plugin, ABI %d", LOOM_BACKEND_ABI);
    info->mem_total = info->mem_free = 0; /* unknown */
    snprintf(info->details, sizeof info->details, "reference plugin: add, swiglu, rmsnorm (f32 weight); scalar C");
    return LOOM_OK;
}

static loom_status ex_device_open(void *bctx, int32_t dev, void **dctx)
{
    (void)bctx;
    if (dev != 0) return FAIL(LOOM_ERR_NOT_FOUND, "no device %d", (int)dev);
    ex_dev *d = calloc(1, sizeof *d);
    if (!d) return FAIL(LOOM_ERR_NOMEM, "out of memory opening device 0");
    *dctx = d;
    return LOOM_OK;
}

static void ex_device_close(void *dctx) /* frees whatever the host left allocated */
{
    ex_dev *d = dctx;
    if (!d) return;
    while (d->progs) {
        prog *p = d->progs;
        UNLINK(d->progs, p);
        free(p);
    }
    while (d->buffers) {
        loom_buffer *b = d->buffers;
        UNLINK(d->buffers, b);
        free(b->data);
        free(b);
    }
    free(d);
}

/* ---- what it runs --------------------------------------------------------------- */
static bool is_f32_2d(const loom_tensor *t)
{
    return t && t->dtype == LOOM_F32 && t->ndim == 2 && t->shape[0] > 0 && t->shape[1] > 0;
}

static bool same_rows(const loom_tensor *a, const loom_tensor *b)
{
    return a->shape[0] == b->shape[0] && a->shape[1] == b->shape[1] &&
           (a->flags & LOOM_TENSOR_DYNAMIC) == (b->flags & LOOM_TENSOR_DYNAMIC);
}

static bool ex_supports(void *dctx, const loom_node *n)
{
    (void)dctx; /* one kind of device: the answer depends on the node only */
    const loom_tensor *d = n->dst;
    if (!is_f32_2d(d)) return false;
    switch (n->op) {
    case LOOM_OP_ADD:
    case LOOM_OP_SWIGLU:
        return is_f32_2d(n->src[0]) && is_f32_2d(n->src[1]) && same_rows(n->src[0], d) && same_rows(n->src[1], d);
    case LOOM_OP_RMSNORM: {
        const loom_tensor *w = n->src[1];
        return is_f32_2d(n->src[0]) && same_rows(n->src[0], d) && w && w->dtype == LOOM_F32 && w->ndim == 1 &&
               w->shape[0] == d->shape[1];
    }
    default:
        return false; /* embed, matmul, matmul_awq, rope, gqa_attn: the CPU runs them */
    }
}

/* ---- buffers -------------------------------------------------------------------- */
static loom_status ex_buffer_alloc(void *dctx, size_t size, loom_buffer **buf)
{
    ex_dev *d = dctx;
    loom_buffer *b = malloc(sizeof *b);
    if (b) b->data = malloc(size ? size : 1);
    if (!b || !b->data) {
        free(b);
        return FAIL(LOOM_ERR_NOMEM, "cannot allocate %zu bytes (%zu in use)", size, d->bytes);
    }
    b->size = size;
    LINK(d->buffers, b);
    d->bytes += size;
    *buf = b;
    return LOOM_OK;
}

static void ex_buffer_free(void *dctx, loom_buffer *buf)
{
    ex_dev *d = dctx;
    if (!buf) return;
    UNLINK(d->buffers, buf);
    d->bytes -= buf->size;
    free(buf->data);
    free(buf);
}

/* Host memory and synchronous execution: a write or read is a memcpy. */
static loom_status ex_buffer_write(void *dctx, loom_buffer *b, size_t off, const void *src, size_t size)
{
    (void)dctx;
    if (off > b->size || size > b->size - off)
        return FAIL(LOOM_ERR_INVALID, "write of %zu bytes at %zu overruns a %zu-byte buffer", size, off, b->size);
    memcpy(b->data + off, src, size);
    return LOOM_OK;
}

static loom_status ex_buffer_read(void *dctx, loom_buffer *b, size_t off, void *dst, size_t size)
{
    (void)dctx;
    if (off > b->size || size > b->size - off)
        return FAIL(LOOM_ERR_INVALID, "read of %zu bytes at %zu overruns a %zu-byte buffer", size, off, b->size);
    memcpy(dst, b->data + off, size);
    return LOOM_OK;
}

static void *ex_buffer_host_ptr(void *dctx, loom_buffer *b) { (void)dctx; return b->data; }

/* ---- compile and execute ---------------------------------------------------------- */
static loom_status ex_compile(void *dctx, loom_node *nodes, int32_t n_nodes, void **out)
{
    for (int32_t i = 0; i < n_nodes; i++)
        if (!ex_supports(dctx, &nodes[i])) return FAIL(LOOM_ERR_UNSUPPORTED, "node %d (op %d) is not supported", (int)i, (int)nodes[i].op);
    prog *p = malloc(sizeof *p);
    if (!p) return FAIL(LOOM_ERR_NOMEM, "out of memory compiling %d nodes", (int)n_nodes);
    p->nodes = nodes;
    p->n_nodes = n_nodes;
    LINK(((ex_dev *)dctx)->progs, p);
    *out = p;
    return LOOM_OK;
}

static float *data(const loom_tensor *t) { return (float *)(t->buf->data + t->offset); }

static loom_status ex_execute(void *dctx, void *pv, const loom_step *step)
{
    (void)dctx;
    const prog *p = pv;
    for (int32_t i = 0; i < p->n_nodes; i++) {
        const loom_node *n = &p->nodes[i];
        const loom_tensor *d = n->dst;
        int64_t rows = (d->flags & LOOM_TENSOR_DYNAMIC) ? step->n_tokens : d->shape[0], cols = d->shape[1];
        if (rows < 1 || rows > d->shape[0]) return FAIL(LOOM_ERR_INVALID, "step of %d tokens, max %lld", (int)step->n_tokens, (long long)d->shape[0]);
        float *y = data(d);
        const float *a = data(n->src[0]), *b = data(n->src[1]);
        switch (n->op) {
        case LOOM_OP_ADD:
            for (int64_t k = 0; k < rows * cols; k++) y[k] = a[k] + b[k];
            break;
        case LOOM_OP_SWIGLU: /* silu(gate) * up */
            for (int64_t k = 0; k < rows * cols; k++) y[k] = a[k] / (1.0f + expf(-a[k])) * b[k];
            break;
        case LOOM_OP_RMSNORM: /* y = x / sqrt(mean(x^2) + eps) * w, accumulated in double */
            for (int64_t r = 0; r < rows; r++) {
                const float *x = a + r * cols;
                double ss = 0;
                for (int64_t c = 0; c < cols; c++) ss += (double)x[c] * x[c];
                float inv = (float)(1.0 / sqrt(ss / (double)cols + (double)n->p.eps));
                for (int64_t c = 0; c < cols; c++) y[r * cols + c] = x[c] * inv * b[c];
            }
            break;
        default:
            return FAIL(LOOM_ERR_UNSUPPORTED, "op %d reached execute", (int)n->op);
        }
    }
    return LOOM_OK;
}

static void ex_release(void *dctx, void *pv)
{
    prog *p = pv;
    if (!p) return;
    UNLINK(((ex_dev *)dctx)->progs, p);
    free(p);
}

static loom_status ex_sync(void *dctx) { (void)dctx; return LOOM_OK; } /* execute() is synchronous */

/* ---- the table and the entry point ---------------------------------------------------- */
static const loom_backend_i example_iface = {
    .abi             = LOOM_BACKEND_ABI,
    .name            = "example", /* must match the file name libloom-example.so */
    .init            = ex_init,
    .shutdown        = ex_shutdown,
    .device_count    = ex_device_count,
    .device_info     = ex_device_info,
    .device_open     = ex_device_open,
    .device_close    = ex_device_close,
    .supports        = ex_supports,
    .buffer_alloc    = ex_buffer_alloc,
    .buffer_free     = ex_buffer_free,
    .buffer_write    = ex_buffer_write,
    .buffer_read     = ex_buffer_read,
    .buffer_host_ptr = ex_buffer_host_ptr,
    .weight_prepare  = NULL, /* optional: the host allocates and uploads weights as they are */
    .weight_release  = NULL,
    .compile         = ex_compile,
    .execute         = ex_execute,
    .release         = ex_release,
    .sync            = ex_sync,
};

__attribute__((visibility("default"))) const loom_backend_i *loom_backend_entry(const loom_host_i *h)
{
    if (!h || h->abi != LOOM_BACKEND_ABI || !h->log || !h->error) return NULL; /* a host we were not built for */
    host = h;
    return &example_iface;
}
