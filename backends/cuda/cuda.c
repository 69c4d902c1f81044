/* cuda.c — the CUDA backend plugin's interface table: init, devices, what it
 * supports, buffers (device memory, copies ordered on one stream per
 * device), weights (uploaded once; AWQ repacked on the device), sync.
 * compile / execute / release live in cuda_graph.c.
 *
 * Environment: LOOM_CUDA_FUSE=0 runs every node of a decode step as its own
 * launch (no fused GEMV epilogues; for isolating a fusion problem).
 * LOOM_CUDA_GRAPHS=0 turns CUDA graph capture off (every step is
 * launched kernel by kernel); LOOM_CUDA_GRAPH_MAX_TOKENS (default 16) is the
 * largest step that is captured and replayed. LOOM_CUDA_PDL=0 launches the
 * decode GEMVs and attention plainly instead of as programmatic dependents
 * (sm_90+: each may start, and pull its weights into L2, while the kernel
 * before it finishes). LOOM_CUDA_WGMMA=0 runs the prefill GEMMs on mma.sync
 * where they would use sm_90a's wgmma. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_dev.h"

/* The host's services: set once by loom_backend_entry (the only global). */
static const loom_host_i *cu_host;

const loom_host_i *loom__cu_host(void) { return cu_host; }

typedef struct cu_backend {
    int n_devices;
} cu_backend;

/* ---- errors --------------------------------------------------------------------------- */
loom_status loom__cu_fail(cu_dev *d, cudaError_t e, const char *what)
{
    cudaGetLastError(); /* clear a non-sticky error so later calls can go on */
    if (e == cudaErrorMemoryAllocation) {
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        return CU_ERR(LOOM_ERR_NOMEM, "cuda:%d: %s: out of device memory (%.1f MiB free of %.1f MiB, %.1f MiB held by loom)",
                      d ? d->dev : -1, what, fr / 1048576.0, tot / 1048576.0, d ? d->bytes / 1048576.0 : 0.0);
    }
    return CU_ERR(LOOM_ERR_BACKEND, "cuda:%d: %s: %s (%s)", d ? d->dev : -1, what, cudaGetErrorString(e),
                  cudaGetErrorName(e));
}

loom_status loom__cu_use(cu_dev *d)
{
    cudaError_t e = cudaSetDevice(d->dev);
    return e ? loom__cu_fail(d, e, "cannot select the device") : LOOM_OK;
}

loom_status loom__cu_malloc(cu_dev *d, size_t size, void **ptr, const char *what)
{
    *ptr = NULL;
    cudaError_t e = cudaMalloc(ptr, size ? size : 256);
    if (e == cudaSuccess) return LOOM_OK;
    *ptr = NULL;
    cudaGetLastError();
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    if (e == cudaErrorMemoryAllocation)
        return CU_ERR(LOOM_ERR_NOMEM, "cuda:%d: cannot allocate %zu bytes (%.1f MiB) for %s: %.1f MiB free of %.1f MiB",
                      d->dev, size, size / 1048576.0, what, fr / 1048576.0, tot / 1048576.0);
    return CU_ERR(LOOM_ERR_BACKEND, "cuda:%d: cudaMalloc of %zu bytes for %s failed: %s", d->dev, size, what,
                  cudaGetErrorString(e));
}

/* The error word as the stream's last copy left it in h_err; cleared where set. */
static loom_status err_word(cu_dev *d)
{
    if (!d->h_err[0]) return LOOM_OK;
    const int tok = d->h_err[1], id = d->h_err[2];
    cudaMemset(d->d_err, 0, 4 * sizeof(int));
    d->h_err[0] = 0;
    return CU_ERR(LOOM_ERR_INVALID, "cuda:%d: embed: token %d has id %d, outside the vocabulary", d->dev, tok, id);
}

loom_status loom__cu_check_err(cu_dev *d)
{
    cudaError_t e = cudaMemcpyAsync(d->h_err, d->d_err, 4 * sizeof(int), cudaMemcpyDeviceToHost, d->stream);
    if (!e) e = cudaStreamSynchronize(d->stream);
    if (e) return loom__cu_fail(d, e, "a queued step failed");
    return err_word(d);
}

/* ---- init ------------------------------------------------------------------------------ */
static loom_status cu_init(void **bctx)
{
    *bctx = NULL;
    /* cudart is linked statically: only the driver is needed, and without it
     * the runtime's own message ("driver version is insufficient") misleads. */
    void *drv = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!drv) {
        const char *e = dlerror();
        return CU_ERR(LOOM_ERR_BACKEND, "cuda: no CUDA driver (libcuda.so.1 cannot be loaded: %s)", e ? e : "not found");
    }
    dlclose(drv);
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e == cudaErrorNoDevice || (e == cudaSuccess && n == 0))
        return CU_ERR(LOOM_ERR_BACKEND, "cuda: no CUDA device (%s)", cudaGetErrorString(cudaErrorNoDevice));
    if (e != cudaSuccess)
        return CU_ERR(LOOM_ERR_BACKEND, "cuda: the CUDA driver cannot be used: %s (%s)", cudaGetErrorString(e),
                      cudaGetErrorName(e));
    cu_backend *b = calloc(1, sizeof *b);
    if (!b) return CU_ERR(LOOM_ERR_NOMEM, "cuda: out of memory");
    b->n_devices = n;
    *bctx = b;
    return LOOM_OK;
}

static void cu_shutdown(void *bctx) { free(bctx); }

static int32_t cu_device_count(void *bctx) { return bctx ? ((cu_backend *)bctx)->n_devices : 0; }

static int attr(enum cudaDeviceAttr a, int dev)
{
    int v = 0;
    if (cudaDeviceGetAttribute(&v, a, dev) != cudaSuccess) v = 0;
    return v;
}

static loom_status cu_device_info(void *bctx, int32_t dev, loom_device_info *info)
{
    if (dev < 0 || dev >= cu_device_count(bctx))
        return CU_ERR(LOOM_ERR_NOT_FOUND, "cuda: no device %d (there are %d)", (int)dev, (int)cu_device_count(bctx));
    memset(info, 0, sizeof *info);
    struct cudaDeviceProp prop;
    cudaError_t e = cudaGetDeviceProperties(&prop, dev);
    if (e) return CU_ERR(LOOM_ERR_BACKEND, "cuda:%d: cannot read the device properties: %s", (int)dev, cudaGetErrorString(e));
    snprintf(info->name, sizeof info->name, "%.127s", prop.name);
    int drv = 0, rt = 0;
    cudaDriverGetVersion(&drv);
    cudaRuntimeGetVersion(&rt);
    snprintf(info->driver, sizeof info->driver, "CUDA driver %d.%d, runtime %d.%d (static)", drv / 1000, drv % 1000 / 10,
             rt / 1000, rt % 1000 / 10);
    info->mem_total = prop.totalGlobalMem;
    int cur = -1;
    cudaGetDevice(&cur);
    size_t fr = 0, tot = 0;
    if (cudaSetDevice(dev) == cudaSuccess && cudaMemGetInfo(&fr, &tot) == cudaSuccess) info->mem_free = fr;
    cudaGetLastError();
    if (cur >= 0) cudaSetDevice(cur);
    snprintf(info->details, sizeof info->details,
             "compute capability %d.%d, %d SMs, L2 %d MiB, shared memory %d KiB/block (opt-in); kernels sm_90a + "
             "compute_80 PTX; CUDA graphs %s",
             attr(cudaDevAttrComputeCapabilityMajor, dev), attr(cudaDevAttrComputeCapabilityMinor, dev),
             attr(cudaDevAttrMultiProcessorCount, dev), attr(cudaDevAttrL2CacheSize, dev) >> 20,
             attr(cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) >> 10,
             loom_env_is("LOOM_CUDA_GRAPHS", "0") ? "off (LOOM_CUDA_GRAPHS=0)" : "on");
    return LOOM_OK;
}

static void cu_buffer_free(void *dctx, loom_buffer *buf);

static loom_status cu_device_open(void *bctx, int32_t dev, void **dctx)
{
    *dctx = NULL;
    if (dev < 0 || dev >= cu_device_count(bctx))
        return CU_ERR(LOOM_ERR_NOT_FOUND, "cuda: no device %d (there are %d)", (int)dev, (int)cu_device_count(bctx));
    if (attr(cudaDevAttrComputeCapabilityMajor, dev) < 8)
        return CU_ERR(LOOM_ERR_UNSUPPORTED, "cuda:%d: compute capability %d.%d; loom's kernels need 8.0 or newer", (int)dev,
                      attr(cudaDevAttrComputeCapabilityMajor, dev), attr(cudaDevAttrComputeCapabilityMinor, dev));
    cu_dev *d = calloc(1, sizeof *d);
    if (!d) return CU_ERR(LOOM_ERR_NOMEM, "cuda: out of memory");
    d->dev = dev;
    d->sm_count = attr(cudaDevAttrMultiProcessorCount, dev);
    if (d->sm_count < 1) d->sm_count = 1;
    d->graphs = !loom_env_is("LOOM_CUDA_GRAPHS", "0");
    d->pdl = attr(cudaDevAttrComputeCapabilityMajor, dev) >= 9 && !loom_env_is("LOOM_CUDA_PDL", "0");
    long gm;
    loom_status st;
    if (!loom_env_long("LOOM_CUDA_GRAPH_MAX_TOKENS", 0, 4096, 16, &gm)) {
        free(d);
        return CU_ERR(LOOM_ERR_INVALID, "cuda: LOOM_CUDA_GRAPH_MAX_TOKENS='%s' is not an integer in 0..4096",
                      getenv("LOOM_CUDA_GRAPH_MAX_TOKENS"));
    }
    d->graph_max_t = (int)gm;
    cudaError_t e;
    if ((st = loom__cu_use(d))) goto fail;
    if ((e = cudaFree(NULL))) { /* creates the context now, so its failure is reported here */
        st = loom__cu_fail(d, e, "cannot create a context");
        goto fail;
    }
    if ((e = cudaStreamCreateWithFlags(&d->stream, cudaStreamNonBlocking))) {
        st = loom__cu_fail(d, e, "cannot create a stream");
        goto fail;
    }
    if ((st = loom__cu_malloc(d, 4 * sizeof(int), (void **)&d->d_err, "the error word"))) goto fail;
    if ((e = cudaMallocHost((void **)&d->h_err, 4 * sizeof(int)))) {
        st = loom__cu_fail(d, e, "pinned memory for the error word");
        goto fail;
    }
    int wgmma = 0, attn_cluster = 0;
    if ((e = cudaMemset(d->d_err, 0, 4 * sizeof(int))) || (e = loom__cu_attn_init(!loom_env_is("LOOM_CUDA_ATTN_CLUSTER", "0"), &attn_cluster)) ||
        (e = loom__cu_gemm_init(!loom_env_is("LOOM_CUDA_WGMMA", "0"), &wgmma)) || (e = loom__cu_awq_init())) {
        st = loom__cu_fail(d, e, "cannot set up the kernels");
        goto fail;
    }
    CU_LOG(LOOM_LOG_DEBUG,
           "cuda:%d: opened, %d SMs, graphs %s (steps of <= %d tokens), programmatic dependent launch %s, prefill GEMMs on %s, "
           "one-token attention on %s (%d at once)",
           dev, d->sm_count, d->graphs ? "on" : "off", d->graph_max_t, d->pdl ? "on" : "off", wgmma ? "wgmma" : "mma.sync",
           attn_cluster ? "clusters" : "split blocks", attn_cluster);
    *dctx = d;
    return LOOM_OK;
fail:
    if (d->d_err) cudaFree(d->d_err);
    if (d->h_err) cudaFreeHost(d->h_err);
    if (d->stream) cudaStreamDestroy(d->stream);
    free(d);
    return st;
}

static void cu_device_close(void *dctx)
{
    cu_dev *d = dctx;
    if (!d) return;
    cudaSetDevice(d->dev);
    cudaStreamSynchronize(d->stream);
    while (d->progs) loom__cu_release(d, d->progs);
    while (d->buffers) cu_buffer_free(d, d->buffers);
    cudaFree(d->d_err);
    cudaFreeHost(d->h_err);
    cudaFreeHost(d->h_read);
    cudaStreamDestroy(d->stream);
    cudaGetLastError();
    free(d);
}

/* ---- supports: exactly what the kernels implement ----------------------------------------- */
static bool is_float(const loom_tensor *t)
{
    return t && (t->dtype == LOOM_F32 || t->dtype == LOOM_F16 || t->dtype == LOOM_BF16);
}
static bool is_f32_2d(const loom_tensor *t) { return t && t->dtype == LOOM_F32 && t->ndim == 2 && t->shape[1] > 0; }
static bool opt_vec(const loom_tensor *t, int64_t n) { return !t || (is_float(t) && t->ndim == 1 && t->shape[0] == n); }
static bool rows_ok(const loom_tensor *s, const loom_tensor *d) { return s->shape[0] >= d->shape[0]; }

bool loom__cu_supports(void *dctx, const loom_node *n)
{
    const loom_tensor *const *s = (const loom_tensor *const *)n->src;
    const loom_tensor *d = n->dst;
    const loom_op_params *p = &n->p;
    if (!is_f32_2d(d) || d->shape[0] < 1 || d->shape[0] > (1 << 20) || n->n_src < 1 || n->n_src > LOOM_MAX_SRC)
        return false;
    int64_t cols = d->shape[1];
    switch (n->op) {
    case LOOM_OP_EMBED:
        return n->n_src >= 2 && is_float(s[0]) && s[0]->ndim == 2 && s[0]->shape[1] == cols && s[1] &&
               s[1]->dtype == LOOM_I32 && s[1]->ndim == 1 && s[1]->shape[0] >= d->shape[0];
    case LOOM_OP_RMSNORM:
        return n->n_src >= 2 && is_f32_2d(s[0]) && rows_ok(s[0], d) && s[0]->shape[1] == cols && is_float(s[1]) &&
               s[1]->ndim == 1 && s[1]->shape[0] == cols;
    case LOOM_OP_MATMUL:
        return n->n_src >= 2 && is_f32_2d(s[0]) && rows_ok(s[0], d) && is_float(s[1]) && s[1]->ndim == 2 &&
               s[1]->shape[0] == cols && s[1]->shape[1] == s[0]->shape[1] && s[1]->shape[1] < (1 << 30) &&
               cols < (1 << 30) && (n->n_src < 3 || opt_vec(s[2], cols));
    case LOOM_OP_MATMUL_AWQ:
        /* the repacked layout comes from weight_prepare: a constant weight only */
        return n->n_src >= 2 && is_f32_2d(s[0]) && rows_ok(s[0], d) && s[1] && s[1]->dtype == LOOM_Q4_AWQ &&
               (s[1]->flags & LOOM_TENSOR_WEIGHT) && s[1]->ndim == 2 && s[1]->shape[0] == s[0]->shape[1] &&
               s[1]->shape[1] == cols && s[1]->shape[0] % LOOM_AWQ_GROUP == 0 && s[1]->shape[1] % 8 == 0 &&
               s[1]->shape[0] < (1 << 24) && cols < (1 << 24) && (n->n_src < 3 || opt_vec(s[2], cols));
    case LOOM_OP_ROPE:
        return is_f32_2d(s[0]) && rows_ok(s[0], d) && p->head_dim > 0 && p->head_dim % 2 == 0 && p->head_dim <= 4096 &&
               p->n_head > 0 && (int64_t)p->n_head * p->head_dim == cols && s[0]->shape[1] == cols;
    case LOOM_OP_GQA_ATTN: {
        if (n->n_src < 5 || p->n_head <= 0 || p->n_head_kv <= 0 || p->n_head % p->n_head_kv) return false;
        if (!loom__cu_attn_supported(p->head_dim, p->n_head / p->n_head_kv)) return false;
        int64_t hd = p->head_dim, qc = (int64_t)p->n_head * hd, kvc = (int64_t)p->n_head_kv * hd;
        if (cols != qc || !is_f32_2d(s[0]) || !is_f32_2d(s[1]) || !is_f32_2d(s[2]) || s[0]->shape[1] != qc ||
            s[1]->shape[1] != kvc || s[2]->shape[1] != kvc || !rows_ok(s[0], d) || !rows_ok(s[1], d) ||
            !rows_ok(s[2], d))
            return false;
        for (int i = 3; i < 5; i++)
            if (!s[i] || (s[i]->dtype != LOOM_F16 && s[i]->dtype != LOOM_F32) || s[i]->ndim != 4 ||
                s[i]->shape[1] != p->n_head_kv || s[i]->shape[3] != hd || s[i]->shape[2] < 1 || s[i]->shape[0] < 1)
                return false;
        return s[3]->dtype == s[4]->dtype && !memcmp(s[3]->shape, s[4]->shape, sizeof s[3]->shape) &&
               s[3]->shape[2] < (1 << 30) / 256;
    }
    case LOOM_OP_SWIGLU:
    case LOOM_OP_ADD:
        return n->n_src >= 2 && is_f32_2d(s[0]) && is_f32_2d(s[1]) && s[0]->shape[1] == cols &&
               s[1]->shape[1] == cols && rows_ok(s[0], d) && rows_ok(s[1], d);
    default:
        return false;
    }
}

/* ---- buffers ---------------------------------------------------------------------------------- */
static loom_status new_buffer(cu_dev *d, size_t size, const char *what, loom_buffer **out)
{
    *out = NULL;
    loom_buffer *b = calloc(1, sizeof *b);
    if (!b) return CU_ERR(LOOM_ERR_NOMEM, "cuda: out of host memory for a buffer header");
    loom_status st = loom__cu_malloc(d, size, &b->ptr, what);
    if (st) {
        free(b);
        return st;
    }
    b->size = size;
    b->next = d->buffers;
    if (d->buffers) d->buffers->prev = b;
    d->buffers = b;
    d->bytes += size;
    *out = b;
    return LOOM_OK;
}

static loom_status cu_buffer_alloc(void *dctx, size_t size, loom_buffer **buf)
{
    cu_dev *d = dctx;
    loom_status st = loom__cu_use(d);
    return st ? st : new_buffer(d, size, "a buffer", buf);
}

static void cu_buffer_free(void *dctx, loom_buffer *buf)
{
    cu_dev *d = dctx;
    if (!buf) return;
    cudaSetDevice(d->dev);
    cudaStreamSynchronize(d->stream); /* queued work may still read it */
    if (buf->prev) buf->prev->next = buf->next;
    else d->buffers = buf->next;
    if (buf->next) buf->next->prev = buf->prev;
    d->bytes -= buf->size;
    cudaFree(buf->ptr);
    cudaGetLastError();
    free(buf);
}

static loom_status check_range(const loom_buffer *buf, size_t off, size_t size, const char *what)
{
    if (!buf) return CU_ERR(LOOM_ERR_INVALID, "cuda: %s of a NULL buffer", what);
    if (off > buf->size || size > buf->size - off)
        return CU_ERR(LOOM_ERR_INVALID, "cuda: %s of %zu bytes at offset %zu is outside the buffer of %zu bytes", what,
                      size, off, buf->size);
    return LOOM_OK;
}

static bool all_zero(const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        if (c[i]) return false;
    return true;
}

/* Ordered after queued work. From pageable memory cudaMemcpyAsync has staged
 * the source before it returns, so the caller may reuse it at once. Zeros (a
 * fresh KV cache arrives as many of them) become a memset. */
static loom_status cu_buffer_write(void *dctx, loom_buffer *buf, size_t off, const void *src, size_t size)
{
    cu_dev *d = dctx;
    loom_status st = check_range(buf, off, size, "write");
    if (st || !size) return st;
    if ((st = loom__cu_use(d))) return st;
    char *dst = (char *)buf->ptr + off;
    cudaError_t e = size >= 4096 && all_zero(src, size) ? cudaMemsetAsync(dst, 0, size, d->stream)
                                                         : cudaMemcpyAsync(dst, src, size, cudaMemcpyHostToDevice, d->stream);
    return e ? loom__cu_fail(d, e, "buffer write") : LOOM_OK;
}

/* Reads are staged in pinned memory (h_read, grown to the largest read up to CU_READ_PIN_MAX;
 * past that, or where none can be had, they go straight to the caller's memory): the error
 * word and the data come back in one stream sync, then the data is copied on to the caller.
 * A read into memory that is pinned already (cu_host_alloc's, for loom_exec_view) lands there.
 * H100, one step's logits of Qwen2.5 (608 KB): 61 us, against 99 us for the two copies
 * into pageable memory (bench/cuda/read-cost.cu). */
#define CU_READ_PIN_MAX ((size_t)64 << 20)

static void *read_stage(cu_dev *d, size_t size)
{
    const size_t mib = (size_t)1 << 20;
    if (d->h_read && size <= d->h_read_cap) return d->h_read;
    if (size > CU_READ_PIN_MAX) return NULL;
    cudaFreeHost(d->h_read);
    d->h_read = NULL, d->h_read_cap = 0;
    const size_t cap = (size + mib - 1) / mib * mib;
    if (cudaMallocHost(&d->h_read, cap)) {
        cudaGetLastError();
        d->h_read = NULL;
        return NULL;
    }
    d->h_read_cap = cap;
    return d->h_read;
}

static loom_status cu_buffer_read(void *dctx, loom_buffer *buf, size_t off, void *dst, size_t size)
{
    cu_dev *d = dctx;
    loom_status st = check_range(buf, off, size, "read");
    if (st) return st;
    if ((st = loom__cu_use(d))) return st;
    const char *src = (const char *)buf->ptr + off;
    struct cudaPointerAttributes pa;
    bool pinned = size && !cudaPointerGetAttributes(&pa, dst) && pa.type == cudaMemoryTypeHost; /* host_alloc's */
    cudaGetLastError();
    void *stage = pinned ? dst : size ? read_stage(d, size) : NULL;
    cudaError_t e = cudaMemcpyAsync(d->h_err, d->d_err, 4 * sizeof(int), cudaMemcpyDeviceToHost, d->stream);
    if (!e && stage) e = cudaMemcpyAsync(stage, src, size, cudaMemcpyDeviceToHost, d->stream);
    if (!e) e = cudaStreamSynchronize(d->stream);
    if (e) return loom__cu_fail(d, e, "a queued step failed");
    if ((st = err_word(d))) return st;
    if (stage && stage != dst) memcpy(dst, stage, size);
    else if (size && (e = cudaMemcpy(dst, src, size, cudaMemcpyDeviceToHost))) return loom__cu_fail(d, e, "buffer read");
    return LOOM_OK;
}

/* Pinned memory: a read into it is one copy, with no staging (cu_buffer_read). */
static void *cu_host_alloc(void *dctx, size_t size)
{
    void *p = NULL;
    if (loom__cu_use(dctx) || cudaMallocHost(&p, size ? size : 1)) {
        cudaGetLastError();
        return NULL;
    }
    return p;
}

static void cu_host_free(void *dctx, void *ptr)
{
    (void)dctx;
    cudaFreeHost(ptr);
}

static loom_status cu_sync(void *dctx)
{
    cu_dev *d = dctx;
    loom_status st = loom__cu_use(d);
    return st ? st : loom__cu_check_err(d);
}

/* ---- weights: uploaded once; AWQ repacked on the device (cuda_impl.h) ----------------------------- */
static loom_status cu_weight_prepare(void *dctx, loom_tensor *t, const void *data)
{
    cu_dev *d = dctx;
    const char *name = t->name ? t->name : "?";
    loom_status st = loom__cu_use(d);
    if (st) return st;
    loom_buffer *b = NULL;
    cudaError_t e;
    if (t->dtype == LOOM_Q4_AWQ) {
        int64_t K = t->shape[0], N = t->shape[1];
        if (t->ndim != 2 || K <= 0 || N <= 0 || K % LOOM_AWQ_GROUP || N % 8 || K >= (1 << 24) || N >= (1 << 24))
            return CU_ERR(LOOM_ERR_INVALID, "cuda: AWQ weight '%s' {K=%lld, N=%lld}: K must be a multiple of %d, N of 8",
                          name, (long long)K, (long long)N, LOOM_AWQ_GROUP);
        size_t raw = loom_awq_nbytes(K, N), packed = cu_awq_packed_bytes(K, N);
        if ((st = new_buffer(d, packed, name, &b))) return st;
        b->awq = cu_awq_at(K, N, b->ptr);
        void *tmp = NULL;
        if ((st = loom__cu_malloc(d, raw, &tmp, "repacking an AWQ weight"))) {
            cu_buffer_free(d, b);
            return st;
        }
        if ((e = cudaMemcpyAsync(tmp, data, raw, cudaMemcpyHostToDevice, d->stream)) ||
            (e = loom__cu_awq_repack(d->stream, tmp, &b->awq)) || (e = cudaStreamSynchronize(d->stream))) {
            st = loom__cu_fail(d, e, "repacking an AWQ weight");
            cudaFree(tmp);
            cu_buffer_free(d, b);
            return st;
        }
        cudaFree(tmp);
        t->extra = &b->awq;
    } else {
        static const size_t es[LOOM_DTYPE_COUNT] = {4, 2, 2, 4, 0};
        size_t n = (unsigned)t->dtype < LOOM_DTYPE_COUNT && t->ndim >= 1 && t->ndim <= LOOM_MAX_DIMS ? es[t->dtype] : 0;
        for (int i = 0; n && i < t->ndim; i++)
            if (t->shape[i] < 1 || __builtin_mul_overflow(n, (size_t)t->shape[i], &n))
                return CU_ERR(LOOM_ERR_INVALID, "cuda: weight '%s': bad shape or size overflow", name);
        if (!n) return CU_ERR(LOOM_ERR_INVALID, "cuda: weight '%s': bad dtype or shape", name);
        if ((st = new_buffer(d, n, name, &b))) return st;
        if ((e = cudaMemcpy(b->ptr, data, n, cudaMemcpyHostToDevice))) {
            st = loom__cu_fail(d, e, "uploading a weight");
            cu_buffer_free(d, b);
            return st;
        }
        t->extra = NULL;
    }
    t->buf = b;
    t->offset = 0;
    return LOOM_OK;
}

static void cu_weight_release(void *dctx, loom_tensor *t)
{
    if (!t || !t->buf) return;
    cu_buffer_free(dctx, t->buf);
    t->buf = NULL;
    t->extra = NULL;
}

/* ---- the table and the entry point ------------------------------------------------------------------ */
static const loom_backend_i cuda_iface = {
    .abi             = LOOM_BACKEND_ABI,
    .name            = "cuda",
    .init            = cu_init,
    .shutdown        = cu_shutdown,
    .device_count    = cu_device_count,
    .device_info     = cu_device_info,
    .device_open     = cu_device_open,
    .device_close    = cu_device_close,
    .supports        = loom__cu_supports,
    .buffer_alloc    = cu_buffer_alloc,
    .buffer_free     = cu_buffer_free,
    .buffer_write    = cu_buffer_write,
    .buffer_read     = cu_buffer_read,
    .buffer_host_ptr = NULL, /* device memory is never host-visible */
    .host_alloc      = cu_host_alloc,
    .host_free       = cu_host_free,
    .weight_prepare  = cu_weight_prepare,
    .weight_release  = cu_weight_release,
    .compile         = loom__cu_compile,
    .execute         = loom__cu_execute,
    .release         = loom__cu_release,
    .sync            = cu_sync,
};

__attribute__((visibility("default"))) const loom_backend_i *loom_backend_entry(const loom_host_i *host)
{
    if (!host || host->abi != LOOM_BACKEND_ABI || !host->log || !host->error) return NULL;
    cu_host = host;
    return &cuda_iface;
}
