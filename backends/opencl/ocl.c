/* ocl.c — the OpenCL backend's interface table: platforms and devices,
 * buffers, weights, and the CL error names every failure is reported with.
 *
 * Devices: every device of every platform (CL_DEVICE_TYPE_ALL) that speaks
 * OpenCL 1.2 or later and has a compiler, in one flat list: opencl:N is its
 * N-th entry. A device gets one context and one in-order queue; its program
 * is built (or loaded from the binary cache) when it opens. Buffers are
 * plain device buffers, not host-visible (buffer_host_ptr is NULL). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ocl_impl.h"

const loom_host_i *loom__ocl_host;

/* ---- errors ----------------------------------------------------------------- */
const char *loom__ocl_errname(cl_int e)
{
    switch (e) {
#define E(x) case x: return #x;
    E(CL_SUCCESS) E(CL_DEVICE_NOT_FOUND) E(CL_DEVICE_NOT_AVAILABLE) E(CL_COMPILER_NOT_AVAILABLE)
    E(CL_MEM_OBJECT_ALLOCATION_FAILURE) E(CL_OUT_OF_RESOURCES) E(CL_OUT_OF_HOST_MEMORY)
    E(CL_PROFILING_INFO_NOT_AVAILABLE) E(CL_MEM_COPY_OVERLAP) E(CL_IMAGE_FORMAT_MISMATCH)
    E(CL_IMAGE_FORMAT_NOT_SUPPORTED) E(CL_BUILD_PROGRAM_FAILURE) E(CL_MAP_FAILURE)
    E(CL_MISALIGNED_SUB_BUFFER_OFFSET) E(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST)
    E(CL_COMPILE_PROGRAM_FAILURE) E(CL_LINKER_NOT_AVAILABLE) E(CL_LINK_PROGRAM_FAILURE)
    E(CL_DEVICE_PARTITION_FAILED) E(CL_KERNEL_ARG_INFO_NOT_AVAILABLE)
    E(CL_INVALID_VALUE) E(CL_INVALID_DEVICE_TYPE) E(CL_INVALID_PLATFORM) E(CL_INVALID_DEVICE)
    E(CL_INVALID_CONTEXT) E(CL_INVALID_QUEUE_PROPERTIES) E(CL_INVALID_COMMAND_QUEUE) E(CL_INVALID_HOST_PTR)
    E(CL_INVALID_MEM_OBJECT) E(CL_INVALID_IMAGE_FORMAT_DESCRIPTOR) E(CL_INVALID_IMAGE_SIZE) E(CL_INVALID_SAMPLER)
    E(CL_INVALID_BINARY) E(CL_INVALID_BUILD_OPTIONS) E(CL_INVALID_PROGRAM) E(CL_INVALID_PROGRAM_EXECUTABLE)
    E(CL_INVALID_KERNEL_NAME) E(CL_INVALID_KERNEL_DEFINITION) E(CL_INVALID_KERNEL) E(CL_INVALID_ARG_INDEX)
    E(CL_INVALID_ARG_VALUE) E(CL_INVALID_ARG_SIZE) E(CL_INVALID_KERNEL_ARGS) E(CL_INVALID_WORK_DIMENSION)
    E(CL_INVALID_WORK_GROUP_SIZE) E(CL_INVALID_WORK_ITEM_SIZE) E(CL_INVALID_GLOBAL_OFFSET)
    E(CL_INVALID_EVENT_WAIT_LIST) E(CL_INVALID_EVENT) E(CL_INVALID_OPERATION) E(CL_INVALID_GL_OBJECT)
    E(CL_INVALID_BUFFER_SIZE) E(CL_INVALID_MIP_LEVEL) E(CL_INVALID_GLOBAL_WORK_SIZE) E(CL_INVALID_PROPERTY)
    E(CL_INVALID_IMAGE_DESCRIPTOR) E(CL_INVALID_COMPILER_OPTIONS) E(CL_INVALID_LINKER_OPTIONS)
    E(CL_INVALID_DEVICE_PARTITION_COUNT)
#undef E
    case -1001: return "CL_PLATFORM_NOT_FOUND_KHR";
    default: return "unknown OpenCL error";
    }
}

loom_status loom__ocl_fail(cl_int err, const char *call, const char *what)
{
    char fn[64];
    size_t n = strcspn(call, "(");
    snprintf(fn, sizeof fn, "%.*s", (int)(n < sizeof fn ? n : sizeof fn - 1), call);
    bool nomem = err == CL_MEM_OBJECT_ALLOCATION_FAILURE || err == CL_OUT_OF_HOST_MEMORY ||
                 err == CL_OUT_OF_RESOURCES || err == CL_INVALID_BUFFER_SIZE;
    return OCL_FAIL(nomem ? LOOM_ERR_NOMEM : LOOM_ERR_BACKEND, "%s failed with %s (%d)%s%s", fn,
                    loom__ocl_errname(err), (int)err, what && *what ? " " : "", what ? what : "");
}

/* ---- platforms and devices ---------------------------------------------------- */
loom_status loom__ocl_dev_string(cl_device_id dev, cl_device_info what, char *out, size_t len)
{
    out[0] = 0;
    size_t n = 0;
    cl_int rc = clGetDeviceInfo(dev, what, len - 1, out, &n);
    if (rc == CL_INVALID_VALUE && n >= len) { /* longer than out: take the start */
        char *tmp = malloc(n + 1);
        if (!tmp) return OCL_FAIL(LOOM_ERR_NOMEM, "out of memory");
        rc = clGetDeviceInfo(dev, what, n, tmp, NULL);
        if (rc == CL_SUCCESS) snprintf(out, len, "%s", tmp);
        free(tmp);
    }
    if (rc != CL_SUCCESS) return loom__ocl_fail(rc, "clGetDeviceInfo", "reading device information");
    out[len - 1] = 0;
    for (size_t n2 = strlen(out); n2 && out[n2 - 1] == ' '; n2--) out[n2 - 1] = 0; /* "OpenCL C 1.2 " */
    return LOOM_OK;
}

/* "OpenCL 1.2 ..." -> 102 */
static int cl_version(const char *s)
{
    int maj = 0, min = 0;
    if (sscanf(s, "OpenCL %d.%d", &maj, &min) != 2 && sscanf(s, "OpenCL C %d.%d", &maj, &min) != 2) return 0;
    return maj * 100 + min;
}

static bool device_usable(cl_device_id dev, char *why, size_t len)
{
    char ver[128];
    cl_bool compiler = CL_FALSE, avail = CL_FALSE;
    if (loom__ocl_dev_string(dev, CL_DEVICE_VERSION, ver, sizeof ver)) return snprintf(why, len, "no version"), false;
    clGetDeviceInfo(dev, CL_DEVICE_COMPILER_AVAILABLE, sizeof compiler, &compiler, NULL);
    clGetDeviceInfo(dev, CL_DEVICE_AVAILABLE, sizeof avail, &avail, NULL);
    if (cl_version(ver) < 102) return snprintf(why, len, "%s is older than OpenCL 1.2", ver), false;
    if (!compiler) return snprintf(why, len, "no OpenCL C compiler"), false;
    if (!avail) return snprintf(why, len, "device not available"), false;
    return true;
}

static void ocl_shutdown(void *bctx)
{
    ocl_backend *b = bctx;
    if (!b) return;
    free(b->devs);
    free(b);
}

static loom_status ocl_init(void **bctx)
{
    *bctx = NULL;
    cl_uint np = 0;
    cl_int rc = clGetPlatformIDs(0, NULL, &np);
    if (rc == -1001 /* CL_PLATFORM_NOT_FOUND_KHR: the ICD loader found no driver */ || (rc == CL_SUCCESS && np == 0))
        return OCL_FAIL(LOOM_ERR_UNSUPPORTED, "no OpenCL platform found (no ICD driver registered in /etc/OpenCL/vendors)");
    if (rc != CL_SUCCESS) return loom__ocl_fail(rc, "clGetPlatformIDs", "listing OpenCL platforms");
    cl_platform_id *plats = calloc(np, sizeof *plats);
    ocl_backend *b = calloc(1, sizeof *b);
    if (!plats || !b) {
        free(plats), free(b);
        return OCL_FAIL(LOOM_ERR_NOMEM, "out of memory");
    }
    if ((rc = clGetPlatformIDs(np, plats, NULL)) != CL_SUCCESS) {
        free(plats), free(b);
        return loom__ocl_fail(rc, "clGetPlatformIDs", "listing OpenCL platforms");
    }
    char skipped[256] = "";
    for (cl_uint p = 0; p < np; p++) {
        cl_uint nd = 0;
        rc = clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, 0, NULL, &nd);
        if (rc != CL_SUCCESS || nd == 0) continue; /* CL_DEVICE_NOT_FOUND: an empty platform */
        cl_device_id *ids = calloc(nd, sizeof *ids);
        ocl_devref *grown = realloc(b->devs, (size_t)(b->n + (int32_t)nd) * sizeof *grown);
        if (!ids || !grown) {
            free(ids), free(grown ? grown : b->devs), free(plats), free(b);
            return OCL_FAIL(LOOM_ERR_NOMEM, "out of memory");
        }
        b->devs = grown;
        if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, nd, ids, NULL) == CL_SUCCESS)
            for (cl_uint i = 0; i < nd; i++) {
                char why[160], name[128];
                if (!device_usable(ids[i], why, sizeof why)) {
                    loom__ocl_dev_string(ids[i], CL_DEVICE_NAME, name, sizeof name);
                    OCL_LOG(LOOM_LOG_INFO, "skipping device '%s': %s", name, why);
                    if (!skipped[0]) snprintf(skipped, sizeof skipped, " ('%.60s': %.120s)", name, why);
                    continue;
                }
                b->devs[b->n++] = (ocl_devref){plats[p], ids[i]};
            }
        free(ids);
    }
    free(plats);
    if (b->n == 0) {
        ocl_shutdown(b);
        return OCL_FAIL(LOOM_ERR_UNSUPPORTED, "%u OpenCL platform%s but no usable device%s", np, np == 1 ? "" : "s",
                        skipped);
    }
    OCL_LOG(LOOM_LOG_DEBUG, "%d device%s", (int)b->n, b->n == 1 ? "" : "s");
    *bctx = b;
    return LOOM_OK;
}

static int32_t ocl_device_count(void *bctx) { return bctx ? ((ocl_backend *)bctx)->n : 0; }

static bool has_ext(const char *exts, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = exts; (p = strstr(p, name)); p += n)
        if ((p == exts || p[-1] == ' ') && (p[n] == ' ' || p[n] == 0)) return true;
    return false;
}

/* The device's extension string (malloc'd; NULL where the driver gives none) */
static char *dev_exts(cl_device_id dev)
{
    size_t n = 0;
    char *exts = NULL;
    if (clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS, 0, NULL, &n) == CL_SUCCESS && (exts = calloc(1, n + 1)))
        clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS, n, exts, NULL);
    return exts;
}

bool loom__ocl_has_ext(cl_device_id dev, const char *name)
{
    char *exts = dev_exts(dev);
    bool yes = exts && has_ext(exts, name);
    free(exts);
    return yes;
}

static void fmt_bytes(char *out, size_t len, uint64_t b)
{
    if (b >= (1ull << 30)) snprintf(out, len, "%.1f GiB", b / 1073741824.0);
    else if (b >= (1ull << 20)) snprintf(out, len, "%.1f MiB", b / 1048576.0);
    else snprintf(out, len, "%llu KiB", (unsigned long long)(b >> 10));
}

static loom_status ocl_device_info(void *bctx, int32_t dev, loom_device_info *info)
{
    const ocl_backend *b = bctx;
    memset(info, 0, sizeof *info);
    if (!b || dev < 0 || dev >= b->n)
        return OCL_FAIL(LOOM_ERR_NOT_FOUND, "no device %d (there are %d)", (int)dev, b ? (int)b->n : 0);
    cl_device_id id = b->devs[dev].device;
    char pname[128] = "", dname[128] = "", ver[128] = "", drv[64] = "", cver[64] = "";
    clGetPlatformInfo(b->devs[dev].platform, CL_PLATFORM_NAME, sizeof pname - 1, pname, NULL);
    loom_status st;
    if ((st = loom__ocl_dev_string(id, CL_DEVICE_NAME, dname, sizeof dname)) ||
        (st = loom__ocl_dev_string(id, CL_DEVICE_VERSION, ver, sizeof ver)) ||
        (st = loom__ocl_dev_string(id, CL_DRIVER_VERSION, drv, sizeof drv)) ||
        (st = loom__ocl_dev_string(id, CL_DEVICE_OPENCL_C_VERSION, cver, sizeof cver)))
        return st;
    snprintf(info->name, sizeof info->name, "%.60s: %.60s", pname, dname);
    snprintf(info->driver, sizeof info->driver, "%.80s, driver %.30s", ver, drv);
    cl_ulong gmem = 0, lmem = 0, maxalloc = 0;
    size_t maxwg = 0;
    cl_uint cus = 0;
    clGetDeviceInfo(id, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof gmem, &gmem, NULL);
    clGetDeviceInfo(id, CL_DEVICE_LOCAL_MEM_SIZE, sizeof lmem, &lmem, NULL);
    clGetDeviceInfo(id, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof maxalloc, &maxalloc, NULL);
    clGetDeviceInfo(id, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof maxwg, &maxwg, NULL);
    clGetDeviceInfo(id, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cus, &cus, NULL);
    info->mem_total = gmem;
    cl_device_type type = 0;
    clGetDeviceInfo(id, CL_DEVICE_TYPE, sizeof type, &type, NULL);
    info->host_cpu = (type & CL_DEVICE_TYPE_CPU) != 0;
    char *exts = dev_exts(id);
    const char *e = exts ? exts : "";
    const char *sg = has_ext(e, "cl_khr_subgroups") ? "cl_khr_subgroups"
                     : has_ext(e, "cl_intel_subgroups") ? "cl_intel_subgroups" : "no";
    char lm[32], ma[32];
    fmt_bytes(lm, sizeof lm, lmem);
    fmt_bytes(ma, sizeof ma, maxalloc);
    snprintf(info->details, sizeof info->details,
             "%.40s, %u compute units, max work-group %zu, local memory %s, max allocation %s, cl_khr_fp16 %s, "
             "cl_khr_fp64 %s, subgroups %s",
             cver, cus, maxwg, lm, ma, has_ext(e, "cl_khr_fp16") ? "yes" : "no", has_ext(e, "cl_khr_fp64") ? "yes" : "no",
             sg);
    free(exts);
    return LOOM_OK;
}

static void ocl_buffer_free(void *dctx, loom_buffer *buf);

static void pin_release(ocl_dev *d);
static void view_release(ocl_dev *d, int i);

static void ocl_device_close(void *dctx)
{
    ocl_dev *d = dctx;
    if (!d) return;
    if (d->queue) clFinish(d->queue);
    if (d->wst_ev) clReleaseEvent(d->wst_ev);
    while (d->progs) loom__ocl_release(d, d->progs);
    while (d->buffers) ocl_buffer_free(d, d->buffers);
    d->slab = NULL;
    if (d->err) clReleaseMemObject(d->err);
    if (d->dummy) clReleaseMemObject(d->dummy);
    if (d->queue) pin_release(d);
    for (int i = 0; d->queue && i < OCL_VIEWS; i++)
        if (d->views[i].mem) view_release(d, i);
    loom__ocl_unbuild(d);
    if (d->queue) clReleaseCommandQueue(d->queue);
    if (d->ctx) clReleaseContext(d->ctx);
    free(d->pev);
    free(d->pev_node);
    free(d->pev_kern);
    free(d);
}

/* loom_env_long, its failure an error naming the setting */
static loom_status env_long(const char *name, long lo, long hi, long dflt, long *v)
{
    if (loom_env_long(name, lo, hi, dflt, v)) return LOOM_OK;
    return OCL_FAIL(LOOM_ERR_INVALID, "%s='%s' is not an integer in %ld..%ld", name, getenv(name), lo, hi);
}

static loom_status open_dev(ocl_dev *d)
{
    cl_int rc;
    cl_ulong lmem = 0, maxalloc = 0;
    OCL_CHECK(clGetDeviceInfo(d->device, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof d->max_wg, &d->max_wg, NULL), d->label);
    OCL_CHECK(clGetDeviceInfo(d->device, CL_DEVICE_LOCAL_MEM_SIZE, sizeof lmem, &lmem, NULL), d->label);
    OCL_CHECK(clGetDeviceInfo(d->device, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof maxalloc, &maxalloc, NULL), d->label);
    d->local_mem = (size_t)lmem;
    d->max_alloc = (size_t)maxalloc;
    d->max_item[0] = d->max_item[1] = d->max_item[2] = d->max_wg;
    clGetDeviceInfo(d->device, CL_DEVICE_MAX_WORK_ITEM_SIZES, sizeof d->max_item, d->max_item, NULL);
    cl_uint cus = 1;
    clGetDeviceInfo(d->device, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cus, &cus, NULL);
    /* LOOM_OPENCL_CUS=N: size the GEMV and attention work split for N compute
     * units (to run a GPU's geometry on a CPU device, in tests) */
    long v, a1, mrows, tcw;
    loom_status st = env_long("LOOM_OPENCL_CUS", 1, 65536, cus > 0 ? (long)cus : 1, &v);
    /* LOOM_OPENCL_ATT_ONE=N: decode attention over up to N positions runs as one
     * partition; 0 (the default) splits whenever that fills the device better */
    if (!st) st = env_long("LOOM_OPENCL_ATT_ONE", 0, 1 << 20, 0, &a1);
    /* LOOM_OPENCL_MMA_ROWS=64 or 128: one row tile for every prefill launch (tuning) */
    if (!st) st = env_long("LOOM_OPENCL_MMA_ROWS", 0, 128, 0, &mrows);
    if (!st && mrows && mrows != 64 && mrows != 128)
        st = OCL_FAIL(LOOM_ERR_INVALID, "LOOM_OPENCL_MMA_ROWS=%ld: 64 or 128", mrows);
    /* LOOM_OPENCL_TC_WGS=N: the tensor-core decode GEMV's work-groups resident per compute
     * unit, which its launches and register cap are sized to (0: one work-group per tile,
     * no cap); 3 of 256 work-items fill an H100 SM's registers at 80 each */
    if (!st) st = env_long("LOOM_OPENCL_TC_WGS", 0, 64, 3, &tcw);
    /* LOOM_OPENCL_FLUSH=N: a step's kernels go to the device after its first launch
     * and every N launches (0: only when the host waits) */
    long fl;
    if (!st) st = env_long("LOOM_OPENCL_FLUSH", 0, 1 << 20, 8, &fl);
    /* LOOM_OPENCL_ATT_VSPLIT=1, 2 or 4: work-groups per query head of attn_dec1, each a
     * share of the output's dims (all of them read every K row; V is split) */
    long avs;
    if (!st) st = env_long("LOOM_OPENCL_ATT_VSPLIT", 1, 4, 2, &avs);
    if (!st && avs == 3) st = OCL_FAIL(LOOM_ERR_INVALID, "LOOM_OPENCL_ATT_VSPLIT=3: 1, 2 or 4");
    if (st) return st;
    d->att_vs = (int32_t)avs;
    d->cus = (int32_t)v, d->att_one = (int32_t)a1, d->mma_rows = (int)mrows, d->tc_wgs = (int32_t)tcw;
    d->flush_every = (int32_t)fl;
    cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)d->platform, 0};
    d->ctx = clCreateContext(props, 1, &d->device, NULL, NULL, &rc);
    if (rc != CL_SUCCESS) return loom__ocl_fail(rc, "clCreateContext", d->label);
    d->queue = clCreateCommandQueue(d->ctx, d->device, d->profile ? CL_QUEUE_PROFILING_ENABLE : 0, &rc); /* in order */
    if (rc != CL_SUCCESS) return loom__ocl_fail(rc, "clCreateCommandQueue", d->label);
    cl_int zeros[4] = {0};
    d->err = clCreateBuffer(d->ctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, sizeof zeros, zeros, &rc);
    if (rc != CL_SUCCESS) return loom__ocl_fail(rc, "clCreateBuffer", "(16 bytes: the error word)");
    d->dummy = clCreateBuffer(d->ctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, sizeof zeros, zeros, &rc);
    if (rc != CL_SUCCESS) return loom__ocl_fail(rc, "clCreateBuffer", "(16 bytes)");
    loom__ocl_pick_cfg(d);
    /* tensor-core prefill (mma.cl): on NVIDIA's platform, unless LOOM_OPENCL_MMA=0;
     * LOOM_OPENCL_MMA=emu (emulated) and =force (inline PTX anywhere) are for tests */
    char pname[128] = "";
    clGetPlatformInfo(d->platform, CL_PLATFORM_NAME, sizeof pname - 1, pname, NULL);
    const char *mma = getenv("LOOM_OPENCL_MMA");
    d->nv = strstr(pname, "NVIDIA") != NULL;
    d->mma = mma && !strcmp(mma, "0") ? 0 : mma && !strcmp(mma, "emu") ? 2 : mma && !strcmp(mma, "force") ? 1
             : d->nv ? 1 : 0;
    st = loom__ocl_build(d);
    if (!st && d->mma && !loom__ocl_mma_selftest(d)) { /* the program without the tensor cores, then */
        loom__ocl_unbuild(d);
        d->mma = 0;
        st = loom__ocl_build(d);
    }
    OCL_LOG(LOOM_LOG_DEBUG, "prefill GEMMs %s: %s", d->label,
            d->mma == 1 ? "tensor cores (mma.sync)" : d->mma ? "mma.cl emulated" : "portable (f32 FMA)");
    return st;
}

static loom_status ocl_device_open(void *bctx, int32_t dev, void **dctx)
{
    const ocl_backend *b = bctx;
    *dctx = NULL;
    if (!b || dev < 0 || dev >= b->n)
        return OCL_FAIL(LOOM_ERR_NOT_FOUND, "no device %d (there are %d)", (int)dev, b ? (int)b->n : 0);
    ocl_dev *d = calloc(1, sizeof *d);
    if (!d) return OCL_FAIL(LOOM_ERR_NOMEM, "out of memory opening device %d", (int)dev);
    d->platform = b->devs[dev].platform;
    d->device = b->devs[dev].device;
    d->index = dev;
    d->profile = loom_env_is("LOOM_OPENCL_PROFILE", "1");
    d->att_short = !loom_env_is("LOOM_OPENCL_ATT_SHORT", "0");
    const char *fuse = getenv("LOOM_OPENCL_FUSE");
    d->fuse = !fuse || strcmp(fuse, "0");
    /* LOOM_OPENCL_FUSE=norm,add,swiglu,rope,kv: only those decode fusions (to bisect) */
    d->dfuse = OCL_DF_ALL;
    if (fuse && strcmp(fuse, "0") && strcmp(fuse, "1")) {
        static const char *const names[] = {"norm", "add", "swiglu", "rope", "kv"};
        d->dfuse = 0;
        for (int i = 0; i < 5; i++)
            if (strstr(fuse, names[i])) d->dfuse |= 1u << i;
    }
    char name[64] = "";
    loom__ocl_dev_string(d->device, CL_DEVICE_NAME, name, sizeof name);
    snprintf(d->label, sizeof d->label, "(opencl:%d, %s)", (int)dev, name);
    loom_status st = open_dev(d);
    if (st) {
        ocl_device_close(d);
        return st;
    }
    *dctx = d;
    return LOOM_OK;
}

static bool ocl_supports(void *dctx, const loom_node *n) { return loom__ocl_supports(dctx, n); }

/* ---- buffers ------------------------------------------------------------------ */
static loom_status new_buffer(ocl_dev *d, size_t size, loom_buffer **out)
{
    *out = NULL;
    if (size > d->max_alloc)
        return OCL_FAIL(LOOM_ERR_NOMEM, "cannot allocate %zu bytes: the device's largest allocation is %zu bytes %s",
                        size, d->max_alloc, d->label);
    loom_buffer *b = calloc(1, sizeof *b);
    if (!b) return OCL_FAIL(LOOM_ERR_NOMEM, "out of host memory allocating a buffer header");
    cl_int rc;
    b->mem = clCreateBuffer(d->ctx, CL_MEM_READ_WRITE, size ? size : 4, NULL, &rc);
    if (rc != CL_SUCCESS) {
        free(b);
        char what[192];
        snprintf(what, sizeof what, "allocating %zu bytes (%zu in use) %s", size, d->bytes, d->label);
        return loom__ocl_fail(rc, "clCreateBuffer", what);
    }
    b->size = size;
    OCL_LINK(d->buffers, b);
    d->bytes += size;
    *out = b;
    return LOOM_OK;
}

static loom_status ocl_buffer_alloc(void *dctx, size_t size, loom_buffer **buf) { return new_buffer(dctx, size, buf); }

static void ocl_buffer_free(void *dctx, loom_buffer *buf)
{
    ocl_dev *d = dctx;
    if (!buf) return;
    OCL_UNLINK(d->buffers, buf);
    d->bytes -= buf->size;
    clReleaseMemObject(buf->mem); /* the runtime keeps it alive until queued work using it is done */
    free(buf);
}

/* Waits for the last small write (ocl_buffer_write) to leave d->wst. */
static loom_status wst_wait(ocl_dev *d)
{
    if (!d->wst_ev) return LOOM_OK;
    cl_int rc = clWaitForEvents(1, &d->wst_ev);
    clReleaseEvent(d->wst_ev);
    d->wst_ev = NULL;
    return rc == CL_SUCCESS ? LOOM_OK : loom__ocl_fail(rc, "clWaitForEvents", "(a host to device write)");
}

static loom_status check_range(const loom_buffer *b, size_t off, size_t size, const char *what)
{
    if (!b) return OCL_FAIL(LOOM_ERR_INVALID, "%s of a NULL buffer", what);
    if (off > b->size || size > b->size - off)
        return OCL_FAIL(LOOM_ERR_INVALID, "%s of %zu bytes at offset %zu is outside the buffer of %zu bytes", what, size,
                        off, b->size);
    return LOOM_OK;
}

/* The host may reuse src as soon as this returns. A small write (a step's
 * token ids) is copied to d->wst and queued without blocking: a blocking one
 * waited for the idle device between two decode steps (the wait before reusing
 * d->wst is for the previous step's write, done by then). */
static loom_status ocl_buffer_write(void *dctx, loom_buffer *b, size_t off, const void *src, size_t size)
{
    ocl_dev *d = dctx;
    loom_status st = check_range(b, off, size, "write");
    if (st || !size) return st;
    if (size > sizeof d->wst) {
        OCL_CHECK(clEnqueueWriteBuffer(d->queue, b->mem, CL_TRUE, off, size, src, 0, NULL, NULL), "(host to device)");
        return LOOM_OK;
    }
    if ((st = wst_wait(d))) return st;
    memcpy(d->wst, src, size);
    OCL_CHECK(clEnqueueWriteBuffer(d->queue, b->mem, CL_FALSE, off, size, d->wst, 0, NULL, &d->wst_ev), "(host to device)");
    return LOOM_OK;
}

/* Reads are staged in pinned host memory: a CL_MEM_ALLOC_HOST_PTR buffer mapped once,
 * which is how NVIDIA's OpenCL hands out pinned memory (d->pin, grown to the largest
 * read up to OCL_PIN_MAX; past that, or where it cannot be had, reads go straight to
 * the caller's memory). The error word at its start and the data after it come back in
 * one wait, then the data is copied on to the caller. H100, one step's logits of
 * Qwen2.5 (608 KB): 57 us, against 105 us read into pageable memory (bench/opencl/
 * launch-cost.c read), in a 7B decode step of 3.4 ms. */
#define OCL_PIN_MAX ((size_t)64 << 20)
#define OCL_PIN_DATA 64 /* the data's offset in d->pin, after the error word */

/* A CL_MEM_ALLOC_HOST_PTR buffer of size bytes mapped for good: its host address, or NULL */
static void *pinned_map(ocl_dev *d, size_t size, cl_mem *mem)
{
    cl_int rc;
    cl_mem m = clCreateBuffer(d->ctx, CL_MEM_READ_WRITE | CL_MEM_ALLOC_HOST_PTR, size, NULL, &rc);
    if (rc != CL_SUCCESS) return NULL;
    void *h = clEnqueueMapBuffer(d->queue, m, CL_TRUE, CL_MAP_READ | CL_MAP_WRITE, 0, size, 0, NULL, NULL, &rc);
    if (rc != CL_SUCCESS) {
        clReleaseMemObject(m);
        return NULL;
    }
    *mem = m;
    return h;
}

static void pinned_unmap(ocl_dev *d, cl_mem mem, void *host)
{
    clEnqueueUnmapMemObject(d->queue, mem, host, 0, NULL, NULL);
    clFinish(d->queue);
    clReleaseMemObject(mem);
}

static void pin_release(ocl_dev *d)
{
    if (!d->pin) return;
    pinned_unmap(d, d->pin, d->pin_host);
    d->pin = NULL, d->pin_host = NULL, d->pin_cap = 0;
}

/* Pinned memory a read lands in directly: the same kind of mapped buffer, kept in d->views. */
static void *ocl_host_alloc(void *dctx, size_t size)
{
    ocl_dev *d = dctx;
    for (int i = 0; i < OCL_VIEWS; i++) {
        if (d->views[i].mem) continue;
        unsigned char *h = pinned_map(d, size ? size : 1, &d->views[i].mem);
        if (h) d->views[i].host = h, d->views[i].size = size;
        return h;
    }
    return NULL;
}

static void view_release(ocl_dev *d, int i)
{
    pinned_unmap(d, d->views[i].mem, d->views[i].host);
    memset(&d->views[i], 0, sizeof d->views[i]);
}

static void ocl_host_free(void *dctx, void *ptr)
{
    ocl_dev *d = dctx;
    for (int i = 0; ptr && i < OCL_VIEWS; i++)
        if (d->views[i].host == ptr) view_release(d, i);
}

/* Does dst .. dst + size lie in one of ocl_host_alloc's buffers? */
static bool in_view(const ocl_dev *d, const void *dst, size_t size)
{
    for (int i = 0; i < OCL_VIEWS; i++)
        if (loom_within(d->views[i].host, d->views[i].size, dst, size)) return true;
    return false;
}

static unsigned char *pin_stage(ocl_dev *d, size_t size)
{
    const size_t need = OCL_PIN_DATA + size, mib = (size_t)1 << 20;
    if (d->pin && need <= d->pin_cap) return d->pin_host;
    if (need > OCL_PIN_MAX) return NULL; /* the stage stays for the reads that fit it */
    pin_release(d);
    const size_t cap = (need + mib - 1) / mib * mib;
    unsigned char *h = pinned_map(d, cap, &d->pin);
    if (h) d->pin_host = h, d->pin_cap = cap;
    return h;
}

/* Blocking, after the queued work; then any error a kernel reported. The
 * data read is queued without blocking, the error word's read after it
 * blocks, and the queue is in order, so both are done when it returns. */
static loom_status ocl_buffer_read(void *dctx, loom_buffer *b, size_t off, void *dst, size_t size)
{
    ocl_dev *d = dctx;
    loom_status st = check_range(b, off, size, "read");
    if (st) return st;
    bool direct = in_view(d, dst, size); /* already pinned: no staging */
    unsigned char *pin = pin_stage(d, direct ? 0 : size);
    cl_int own[4], *e = pin ? (cl_int *)pin : own;
    void *to = pin && !direct ? pin + OCL_PIN_DATA : dst;
    if (size) OCL_CHECK(clEnqueueReadBuffer(d->queue, b->mem, CL_FALSE, off, size, to, 0, NULL, NULL), "(device to host)");
    cl_int rc = clEnqueueReadBuffer(d->queue, d->err, CL_TRUE, 0, 4 * sizeof(cl_int), e, 0, NULL, NULL);
    if (rc != CL_SUCCESS) {
        clFinish(d->queue); /* the data read must not land after we return */
        return loom__ocl_fail(rc, "clEnqueueReadBuffer", "(the error word)");
    }
    if (to != dst && size) memcpy(dst, to, size);
    return loom__ocl_kernel_error(d, e);
}

static loom_status ocl_sync(void *dctx)
{
    ocl_dev *d = dctx;
    OCL_CHECK(clFinish(d->queue), d->label);
    return loom__ocl_check_kernel_error(d);
}

/* ---- weights: one buffer each ---------------------------------------------------
 * Dense weights keep the checkpoint's layout. An AWQ weight {K, N} is repacked
 * once, on the host, into the layout its kernels read (awq.cl; the portable
 * and the tensor-core ones alike):
 *   q    uint4 [K/32][N]   the 16 bytes at (kb, n): column n, k = 32kb..32kb+31;
 *                          word j, bits 4i..4i+3 hold k = 32kb + 8j + i
 *   meta uint  [K/128][N]  bits 0..15 the f16 scale of (group, n), 16..23 its zero
 * so that consecutive work-items (columns) read consecutive 16-byte words. One
 * buffer per weight keeps every allocation under the device's
 * CL_DEVICE_MAX_MEM_ALLOC_SIZE, which a single pool of all weights would not. */
static bool awq_shape_ok(const loom_tensor *t)
{
    return t->ndim == 2 && t->shape[0] > 0 && t->shape[1] > 0 && t->shape[0] % LOOM_AWQ_GROUP == 0 &&
           t->shape[1] % 8 == 0 && t->shape[0] <= (1 << 24) && t->shape[1] <= (1 << 24);
}

/* Device bytes of a weight (0: bad dtype or shape); for AWQ the repacked size. */
static size_t weight_bytes(const loom_tensor *t)
{
    static const size_t es[LOOM_DTYPE_COUNT] = {4, 2, 2, 4, 0};
    if ((unsigned)t->dtype >= LOOM_DTYPE_COUNT || t->ndim < 1 || t->ndim > LOOM_MAX_DIMS) return 0;
    if (t->dtype == LOOM_Q4_AWQ) {
        if (!awq_shape_ok(t)) return 0;
        size_t K = (size_t)t->shape[0], N = (size_t)t->shape[1], n;
        /* K, N <= 2^24: K * N < 2^48 fits; the sum is checked for 32-bit size_t */
        if (__builtin_mul_overflow(K / 32 * N, (size_t)16, &n) || __builtin_add_overflow(n, K / 128 * N * 4, &n)) return 0;
        return n;
    }
    size_t n = es[t->dtype];
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] < 1 || __builtin_mul_overflow(n, (size_t)t->shape[i], &n)) return 0;
    return n;
}

/* Transpose an 8x8 matrix of nibbles held in 8 words (row r = word r, column c
 * = bits 4c..4c+3): three rounds of block swaps (4x4, 2x2, 1x1 blocks). */
static void nibble_transpose8(uint32_t a[8])
{
    for (int r = 0; r < 4; r++) {
        uint32_t t = ((a[r] >> 16) ^ a[r + 4]) & 0x0000ffffu;
        a[r] ^= t << 16, a[r + 4] ^= t;
    }
    for (int r = 0; r < 8; r += (r & 1) ? 3 : 1) { /* 0, 1, 4, 5 */
        uint32_t t = ((a[r] >> 8) ^ a[r + 2]) & 0x00ff00ffu;
        a[r] ^= t << 8, a[r + 2] ^= t;
    }
    for (int r = 0; r < 8; r += 2) {
        uint32_t t = ((a[r] >> 4) ^ a[r + 1]) & 0x0f0f0f0fu;
        a[r] ^= t << 4, a[r + 1] ^= t;
    }
}

/* The checkpoint blob (loom_backend.h) to the device layout above. Eight
 * packed words of one word-column c and rows k..k+7 are an 8x8 nibble matrix
 * (row: k, column: nibble slot); its transpose holds, per slot i, the eight k
 * of column 8c + loom_awq_order[i]: one 32-bit word of the output. */
static void awq_repack(int64_t K, int64_t N, const void *blob, uint32_t *out)
{
    const uint32_t *qw = blob, *qz = qw + K * N / 8;
    const uint16_t *sc = (const uint16_t *)(qz + K / LOOM_AWQ_GROUP * N / 8);
    uint32_t *meta = out + K / 32 * N * 4;
    int64_t N8 = N / 8;
    for (int64_t k = 0; k < K; k += 8) {
        int64_t kb = k / 32, j = (k % 32) / 8;
        uint32_t *row = out + kb * N * 4 + j; /* word j of (kb, n) is row[4n] */
        for (int64_t c = 0; c < N8; c++) {
            uint32_t a[8];
            for (int r = 0; r < 8; r++) a[r] = qw[(k + r) * N8 + c];
            nibble_transpose8(a);
            for (int i = 0; i < 8; i++) row[4 * (8 * c + loom_awq_order[i])] = a[i];
        }
    }
    for (int64_t g = 0; g < K / LOOM_AWQ_GROUP; g++)
        for (int64_t c = 0; c < N8; c++) {
            uint32_t z = qz[g * N8 + c];
            for (int i = 0; i < 8; i++) {
                int64_t n = 8 * c + loom_awq_order[i];
                meta[g * N + n] = (uint32_t)sc[g * N + n] | ((z >> (4 * i)) & 15u) << 16;
            }
        }
}

/* Weights are placed side by side in slabs of OCL_SLAB bytes (one of its own for a
 * weight of half that or more), 256-byte aligned: a launch then finds a layer's weights,
 * biases and norms in a buffer or two, and every buffer argument costs host time in each
 * launch (awq.cl AWQ_PARAMS). A slab is freed with the last weight in it. */
#define OCL_SLAB ((size_t)128 << 20)

static loom_status weight_place(ocl_dev *d, size_t n, loom_buffer **out, size_t *off)
{
    size_t slab = OCL_SLAB < d->max_alloc ? OCL_SLAB : d->max_alloc, at = d->slab ? (d->slab->used + 255) / 256 * 256 : 0;
    if (d->slab && at <= d->slab->size && n <= d->slab->size - at) {
        *out = d->slab, *off = at;
    } else {
        loom_status st = new_buffer(d, n >= slab / 2 ? n : slab, out);
        if (st) return st;
        *off = 0;
        if (n < slab / 2) d->slab = *out; /* the next small weights go beside this one */
    }
    (*out)->used = *off + n;
    (*out)->refs++;
    return LOOM_OK;
}

static void weight_unplace(ocl_dev *d, loom_buffer *b)
{
    if (--b->refs > 0) return;
    if (d->slab == b) d->slab = NULL;
    ocl_buffer_free(d, b);
}

static loom_status ocl_weight_prepare(void *dctx, loom_tensor *t, const void *data)
{
    ocl_dev *d = dctx;
    size_t n = weight_bytes(t), off;
    if (!n) return OCL_FAIL(LOOM_ERR_INVALID, "weight '%s': bad dtype or shape", t->name ? t->name : "?");
    void *packed = NULL;
    if (t->dtype == LOOM_Q4_AWQ) {
        if (!(packed = malloc(n)))
            return OCL_FAIL(LOOM_ERR_NOMEM, "weight '%s': out of host memory repacking %zu bytes", t->name ? t->name : "?", n);
        awq_repack(t->shape[0], t->shape[1], data, packed);
        data = packed;
    }
    loom_buffer *b;
    loom_status st = weight_place(d, n, &b, &off);
    if (!st && (st = ocl_buffer_write(dctx, b, off, data, n))) weight_unplace(d, b);
    free(packed);
    if (st) return st;
    t->buf = b;
    t->offset = off;
    t->extra = NULL;
    return LOOM_OK;
}

static void ocl_weight_release(void *dctx, loom_tensor *t)
{
    if (!t || !t->buf) return;
    weight_unplace(dctx, t->buf);
    t->buf = NULL;
}

/* ---- compile and execute (ocl_exec.c) -------------------------------------------- */
static loom_status ocl_compile(void *dctx, loom_node *nodes, int32_t n_nodes, void **prog)
{
    return loom__ocl_compile(dctx, nodes, n_nodes, prog);
}

static loom_status ocl_execute(void *dctx, void *prog, const loom_step *step)
{
    return loom__ocl_execute(dctx, prog, step);
}

static void ocl_release(void *dctx, void *prog) { loom__ocl_release(dctx, prog); }

static const loom_backend_i ocl_iface = {
    .abi             = LOOM_BACKEND_ABI,
    .name            = "opencl",
    .init            = ocl_init,
    .shutdown        = ocl_shutdown,
    .device_count    = ocl_device_count,
    .device_info     = ocl_device_info,
    .device_open     = ocl_device_open,
    .device_close    = ocl_device_close,
    .supports        = ocl_supports,
    .buffer_alloc    = ocl_buffer_alloc,
    .buffer_free     = ocl_buffer_free,
    .buffer_write    = ocl_buffer_write,
    .buffer_read     = ocl_buffer_read,
    .buffer_host_ptr = NULL, /* device memory is not host-visible */
    .host_alloc      = ocl_host_alloc,
    .host_free       = ocl_host_free,
    .weight_prepare  = ocl_weight_prepare,
    .weight_release  = ocl_weight_release,
    .compile         = ocl_compile,
    .execute         = ocl_execute,
    .release         = ocl_release,
    .sync            = ocl_sync,
};

__attribute__((visibility("default"))) const loom_backend_i *loom_backend_entry(const loom_host_i *h)
{
    if (!h || h->abi != LOOM_BACKEND_ABI || !h->log || !h->error) return NULL;
    loom__ocl_host = h;
    return &ocl_iface;
}
