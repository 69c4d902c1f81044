/* ocl_program.c — the device programs: configuration from device limits, the
 * OpenCL C source (common.cl, awq.cl, and typed.cl once per storage dtype),
 * the build, and the on-disk cache of program binaries. A device has one
 * program, and where it has the tensor cores a second one with only the
 * tensor-core decode GEMVs (awq_gemv_tc*), built with a register cap on
 * NVIDIA (-cl-nv-maxrregcount) that would slow the other kernels down.
 *
 * Cache: $LOOM_CACHE_DIR/opencl, else $XDG_CACHE_HOME/loom/opencl, else
 * ~/.cache/loom/opencl. One file per key, the key a 64-bit FNV-1a hash of
 * the full source, the build options, and the platform, device and driver
 * names and versions. A file is a header {magic, format, key, size,
 * checksum of the binary} and the binary; anything that does not match
 * (short, another key, wrong size or checksum, or a binary the driver
 * refuses) is ignored and replaced by a fresh build. Failing to write the
 * cache is only logged (debug). A build with the tensor-core kernels
 * (-DLOOM_MMA) that fails leaves <key>.bin.failed (its build log), so later
 * opens go straight to the build without them. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocl_impl.h"
#include "ocl_kernels.h"

#ifndef CL_DEVICE_REGISTERS_PER_BLOCK_NV /* cl_nv_device_attribute_query (CL/cl_ext.h) */
#define CL_DEVICE_REGISTERS_PER_BLOCK_NV 0x4002
#endif

#define CACHE_MAGIC "LOOMOCL\x01"
#define CACHE_FORMAT 1u

typedef struct cache_header {
    char     magic[8];
    uint32_t format;
    uint32_t header_size;
    uint64_t key;
    uint64_t size;     /* bytes of binary after the header */
    uint64_t checksum; /* FNV-1a of the binary */
} cache_header;

/* ---- configuration ------------------------------------------------------------- */
static int pow2_floor(size_t v, int cap)
{
    int p = 1;
    while ((size_t)p * 2 <= v && p * 2 <= cap) p *= 2;
    return p;
}

void loom__ocl_pick_cfg(ocl_dev *d)
{
    ocl_cfg *c = &d->cfg;
    size_t wg = d->max_wg;
    /* 64 x 128 tiles by 8 x 8 per work-item: 128 work-items and 32 x (68 + 132)
     * floats (25.6 KiB) of local memory; else 32 x 64 by 4 x 8: 64 work-items,
     * 13.3 KiB */
    bool big = wg >= 128 && d->local_mem >= 32 * (68 + 132) * 4 + 1024;
    c->gt_t = big ? 64 : 32;
    c->gt_n = big ? 128 : 64;
    c->gt_tm = big ? 8 : 4;
    c->gv_wg = pow2_floor(wg, 256);
    c->gemv_w = pow2_floor(wg, 64);
    c->gemv_r = 4;
    c->red_w = pow2_floor(wg, 256);
    c->att_w = pow2_floor(wg, 64);
    /* attn_tile: q (32 rows), a K/V tile (16 positions) and the scores, 27.5 KiB */
    c->att_tw = d->local_mem >= 29 * 1024 ? pow2_floor(wg, 128) : 0;
    /* attn_dec: q (8 vectors of 128), the scores (8 x 257), one round of K
     * partials or V (16 KiB at 128 work-items) and the softmax sums: 29.1 KiB at
     * 128 work-items, 21.1 KiB at 64 (common.cl ATT_*) */
    c->att_dw = pow2_floor(wg, 128);
    if (d->local_mem < (size_t)(c->att_dw == 128 ? 30 : 22) * 1024) c->att_dw = c->att_dw == 128 && d->local_mem >= 22 * 1024 ? 64 : 0;
    /* attn_dec1: 256 work-items, the K partials or P·V partials (8 KiB) and the scores */
    c->att_sw = wg >= 256 && d->local_mem >= 10 * 1024 ? 256 : 0;
    c->ew_w = pow2_floor(wg, 64);
}

/* The tensor-core decode GEMV's register cap: as many per work-item as let d->tc_wgs work-groups
 * of gv_wg share a compute unit (a multiple of 8, NVIDIA's allocation unit). Its tile loop takes
 * 96 on an H100 uncapped, so two work-groups fit instead of three, and capped at 80 it spills
 * nothing. 0 (no cap) where the driver takes no such option or does not say its registers. */
static int tc_reg_cap(const ocl_dev *d)
{
    cl_uint regs = 0;
    if (d->mma != 1 || d->tc_wgs < 1 || !loom__ocl_has_ext(d->device, "cl_nv_compiler_options") ||
        clGetDeviceInfo(d->device, CL_DEVICE_REGISTERS_PER_BLOCK_NV, sizeof regs, &regs, NULL) != CL_SUCCESS)
        return 0;
    int cap = (int)(regs / ((cl_uint)d->tc_wgs * (cl_uint)d->cfg.gv_wg)) / 8 * 8;
    return cap >= 32 && cap < 255 ? cap : 0;
}

static void build_options(const ocl_dev *d, bool tc_gemv, char *out, size_t len)
{
    const ocl_cfg *c = &d->cfg;
    snprintf(out, len,
             "-cl-std=CL1.2 -DGT_T=%d -DGT_N=%d -DGT_TM=%d -DGV_WG=%d -DGEMV_W=%d -DGEMV_R=%d -DRED_W=%d -DATT_W=%d",
             c->gt_t, c->gt_n, c->gt_tm, c->gv_wg, c->gemv_w, c->gemv_r, c->red_w, c->att_w);
    if (c->att_tw) snprintf(out + strlen(out), len - strlen(out), " -DATT_TW=%d", c->att_tw);
    if (c->att_dw) snprintf(out + strlen(out), len - strlen(out), " -DATT_DW=%d", c->att_dw);
    if (c->att_sw) snprintf(out + strlen(out), len - strlen(out), " -DATT_SW=%d", c->att_sw);
    if (d->mma) /* part of the cache key, like every option */
        snprintf(out + strlen(out), len - strlen(out), d->mma == 1 ? " -DLOOM_MMA" : " -DLOOM_MMA_EMU");
    if (d->nv) snprintf(out + strlen(out), len - strlen(out), " -DLOOM_NV"); /* inline PTX (device_fence) */
    int cap = tc_gemv ? tc_reg_cap(d) : 0;
    if (cap) snprintf(out + strlen(out), len - strlen(out), " -cl-nv-maxrregcount=%d", cap);
    /* LOOM_OPENCL_BUILD_OPTIONS: appended as given (kernel experiments: -D switches an
     * #ifdef in the sources reads; bench/opencl/device-sweep.sh compares them) */
    const char *extra = getenv("LOOM_OPENCL_BUILD_OPTIONS");
    if (extra && *extra) snprintf(out + strlen(out), len - strlen(out), " %s", extra);
}

/* ---- source --------------------------------------------------------------------
 * common.cl, awq.cl, awq_gemv.cl once per GEMV row count (and once more per
 * row count with AWQ_NORM: the variant with the rmsnorm on load), mma.cl, then
 * per storage dtype: its prologue, typed.cl and gemv.cl once per row count. The
 * tensor-core decode GEMVs' program: common.cl, awq.cl and awq_gemv.cl with
 * AWQ_TC, per row count, without and with AWQ_NORM. */
static const char *const typed_prologue[3] = {
    "#define SFX f32\n#define ET float\n#define LD(p, i) ((p)[i])\n"
    "#define LD4(p, i) vload4(0, (p) + (i))\n#define ST(p, i, v) ((p)[i] = (v))\n#define CE 4\n",
    /* f16 and bf16 storage is ushort: pointer arithmetic never needs the half type */
    "#define SFX f16\n#define ET ushort\n#define LD(p, i) vload_half(0, (global const half *)((p) + (i)))\n"
    "#define LD4(p, i) vload_half4(0, (global const half *)((p) + (i)))\n"
    "#define ST(p, i, v) vstore_half_rte((v), 0, (global half *)((p) + (i)))\n#define CE 8\n#define CVT4 f16x4\n",
    "#define SFX bf16\n#define ET ushort\n#define LD(p, i) as_float((uint)(p)[i] << 16)\n"
    "#define LD4(p, i) as_float4(convert_uint4(vload4(0, (p) + (i))) << 16)\n#define CE 8\n#define CVT4 bf16x4\n",
};
static const char typed_epilogue[] = "#undef SFX\n#undef ET\n#undef LD\n#undef LD4\n#undef ST\n#undef CE\n#undef CVT4\n"
                                     "#undef KN\n#undef WIDEN16\n";
static const char *const nt_prologue[4] = {"#define NT 1\n", "#define NT 2\n", "#define NT 4\n", "#define NT 8\n"};
static const char nt_epilogue[] = "#undef NT\n";
static const char norm_prologue[] = "#define AWQ_NORM\n", norm_epilogue[] = "#undef AWQ_NORM\n";
static const char tc_prologue[] = "#define AWQ_TC\n";

static char *program_source(bool tc_gemv)
{
    size_t nt = 0;
    for (int j = 0; j < 4; j++) nt += strlen(nt_prologue[j]) + strlen(nt_epilogue);
    size_t n = strlen(ocl_src_common) + strlen(ocl_src_awq) + strlen(tc_prologue) + 2 * nt +
               8 * strlen(ocl_src_awq_gemv) + 4 * (strlen(norm_prologue) + strlen(norm_epilogue)) + 1;
    if (!tc_gemv) {
        n += strlen(ocl_src_mma);
        for (int i = 0; i < 3; i++)
            n += strlen(typed_prologue[i]) + strlen(ocl_src_typed) + nt + 4 * strlen(ocl_src_gemv) +
                 strlen(typed_epilogue);
    }
    char *s = malloc(n);
    if (!s) return NULL;
    char *p = s;
#define PUT(str) (memcpy(p, (str), strlen(str)), p += strlen(str))
    PUT(ocl_src_common);
    PUT(ocl_src_awq);
    if (tc_gemv) PUT(tc_prologue);
    for (int v = 0; v < 2; v++) /* awq_gemv[_tc]_<NT>, then awq_gemv[_tc]_norm_<NT> */
        for (int j = 0; j < 4; j++) {
            if (v) PUT(norm_prologue);
            PUT(nt_prologue[j]);
            PUT(ocl_src_awq_gemv);
            PUT(nt_epilogue);
            if (v) PUT(norm_epilogue);
        }
    if (tc_gemv) {
        *p = 0;
        return s;
    }
    PUT(ocl_src_mma);
    for (int i = 0; i < 3; i++) {
        PUT(typed_prologue[i]);
        PUT(ocl_src_typed);
        for (int j = 0; j < 4; j++) {
            PUT(nt_prologue[j]);
            PUT(ocl_src_gemv);
            PUT(nt_epilogue);
        }
        PUT(typed_epilogue);
    }
#undef PUT
    *p = 0;
    return s;
}

/* ---- the cache ----------------------------------------------------------------- */
static uint64_t fnv1a(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t fnv_str(uint64_t h, const char *s) { return fnv1a(h, s, strlen(s) + 1); }

static uint64_t cache_key(const ocl_dev *d, const char *src, const char *opts)
{
    uint64_t h = fnv_str(0xcbf29ce484222325ull, "loom opencl program cache 1");
    h = fnv_str(h, src);
    h = fnv_str(h, opts);
    char s[256];
    static const cl_platform_info pinfo[] = {CL_PLATFORM_NAME, CL_PLATFORM_VERSION};
    for (size_t i = 0; i < 2; i++) {
        s[0] = 0;
        clGetPlatformInfo(d->platform, pinfo[i], sizeof s - 1, s, NULL);
        s[sizeof s - 1] = 0;
        h = fnv_str(h, s);
    }
    static const cl_device_info dinfo[] = {CL_DEVICE_NAME, CL_DEVICE_VENDOR, CL_DEVICE_VERSION, CL_DRIVER_VERSION,
                                           CL_DEVICE_OPENCL_C_VERSION};
    for (size_t i = 0; i < sizeof dinfo / sizeof *dinfo; i++) {
        loom__ocl_dev_string(d->device, dinfo[i], s, sizeof s);
        h = fnv_str(h, s);
    }
    return h;
}

/* The cache directory (created), or false when there is none to use. */
static bool cache_dir(char *out, size_t len)
{
    const char *root = getenv("LOOM_CACHE_DIR"), *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    int n;
    if (root && *root) n = snprintf(out, len, "%s/opencl", root);
    else if (xdg && *xdg == '/') n = snprintf(out, len, "%s/loom/opencl", xdg);
    else if (home && *home) n = snprintf(out, len, "%s/.cache/loom/opencl", home);
    else return false;
    if (n < 0 || (size_t)n >= len) return false;
    for (char *p = out + 1;; p++) { /* mkdir -p */
        if (*p != '/' && *p) continue;
        char c = *p;
        *p = 0;
        if (mkdir(out, 0755) && errno != EEXIST) {
            OCL_LOG(LOOM_LOG_DEBUG, "binary cache: cannot create %s: %s", out, strerror(errno));
            *p = c;
            return false;
        }
        *p = c;
        if (!c) break;
    }
    return true;
}

/* The cached binary for key, or NULL (absent, stale or corrupt). */
static unsigned char *cache_load(const char *path, uint64_t key, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    cache_header h;
    unsigned char *bin = NULL;
    const char *why = NULL;
    long flen = -1;
    if (fseek(f, 0, SEEK_END) == 0) flen = ftell(f);
    rewind(f);
    if (flen < (long)sizeof h || fread(&h, sizeof h, 1, f) != 1) why = "truncated header";
    else if (memcmp(h.magic, CACHE_MAGIC, 8) || h.format != CACHE_FORMAT || h.header_size != sizeof h) why = "not a loom cache file";
    else if (h.key != key) why = "key differs";
    else if (h.size == 0 || h.size != (uint64_t)flen - sizeof h) why = "size does not match the file";
    else if (!(bin = malloc(h.size))) why = "out of memory";
    else if (fread(bin, 1, h.size, f) != h.size) why = "short read";
    else if (fnv1a(0xcbf29ce484222325ull, bin, h.size) != h.checksum) why = "checksum mismatch";
    fclose(f);
    if (why) {
        OCL_LOG(LOOM_LOG_DEBUG, "binary cache: ignoring %s: %s", path, why);
        free(bin);
        return NULL;
    }
    *size = h.size;
    return bin;
}

static void cache_store(const char *path, uint64_t key, const unsigned char *bin, size_t size)
{
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
    cache_header h = {.format = CACHE_FORMAT, .header_size = sizeof h, .key = key, .size = size,
                      .checksum = fnv1a(0xcbf29ce484222325ull, bin, size)};
    memcpy(h.magic, CACHE_MAGIC, 8);
    FILE *f = fopen(tmp, "wb");
    bool ok = f && fwrite(&h, sizeof h, 1, f) == 1 && fwrite(bin, 1, size, f) == size;
    if (f && fclose(f)) ok = false;
    if (ok && rename(tmp, path) == 0) {
        OCL_LOG(LOOM_LOG_DEBUG, "binary cache: wrote %s (%zu bytes)", path, size);
        return;
    }
    OCL_LOG(LOOM_LOG_DEBUG, "binary cache: cannot write %s: %s", path, strerror(errno));
    unlink(tmp);
}

/* ---- build ------------------------------------------------------------------------ */
static loom_status build_failed(ocl_dev *d, cl_program prog, cl_int rc)
{
    size_t n = 0;
    char *log = NULL;
    if (clGetProgramBuildInfo(prog, d->device, CL_PROGRAM_BUILD_LOG, 0, NULL, &n) == CL_SUCCESS && n &&
        (log = calloc(1, n + 1)))
        clGetProgramBuildInfo(prog, d->device, CL_PROGRAM_BUILD_LOG, n, log, NULL);
    if (log) OCL_LOG(LOOM_LOG_ERROR, "build log %s:\n%s", d->label, log);
    loom_status st = OCL_FAIL(LOOM_ERR_BACKEND, "clBuildProgram failed with %s (%d) %s; build log: %.640s",
                              loom__ocl_errname(rc), (int)rc, d->label, log && *log ? log : "(empty)");
    free(log);
    return st;
}

static cl_program from_binary(ocl_dev *d, const unsigned char *bin, size_t size, const char *opts)
{
    cl_int rc, status;
    cl_program p = clCreateProgramWithBinary(d->ctx, 1, &d->device, &size, &bin, &status, &rc);
    if (rc != CL_SUCCESS || status != CL_SUCCESS) {
        OCL_LOG(LOOM_LOG_DEBUG, "binary cache: the driver refused the cached binary (%s)", loom__ocl_errname(rc));
        if (p) clReleaseProgram(p);
        return NULL;
    }
    if ((rc = clBuildProgram(p, 1, &d->device, opts, NULL, NULL)) != CL_SUCCESS) {
        OCL_LOG(LOOM_LOG_DEBUG, "binary cache: building the cached binary failed (%s)", loom__ocl_errname(rc));
        clReleaseProgram(p);
        return NULL;
    }
    return p;
}

/* One program from src with opts into *out: from the cache, else built and cached. Where the
 * build fails and `optional` names what the program holds, the failure is a warning, left
 * beside the cache as <key>.bin.failed (so that later opens go straight past it), and *out is
 * NULL with LOOM_OK; else it is an error with the build log. */
static loom_status build_program(ocl_dev *d, const char *src, const char *opts, const char *optional,
                                 cl_program *out)
{
    *out = NULL;
    char dir[1024], path[1100] = "", failed[1200] = "";
    uint64_t key = cache_key(d, src, opts);
    bool cache = cache_dir(dir, sizeof dir);
    if (cache) {
        snprintf(path, sizeof path, "%s/%016llx.bin", dir, (unsigned long long)key);
        snprintf(failed, sizeof failed, "%s.failed", path);
    }
    if (cache && optional && access(failed, F_OK) == 0) { /* this source and driver failed before: not again */
        OCL_LOG(LOOM_LOG_WARN, "%s did not build before %s (%s); going on without them", optional, d->label, failed);
        return LOOM_OK;
    }
    size_t bsize = 0;
    unsigned char *bin = cache ? cache_load(path, key, &bsize) : NULL;
    if (bin) {
        *out = from_binary(d, bin, bsize, opts);
        free(bin);
        if (*out) {
            OCL_LOG(LOOM_LOG_DEBUG, "program for %s from the cache %s", d->label, path);
            return LOOM_OK;
        }
    }
    cl_int rc;
    const char *srcs[1] = {src};
    cl_program p = clCreateProgramWithSource(d->ctx, 1, srcs, NULL, &rc);
    if (rc != CL_SUCCESS) return loom__ocl_fail(rc, "clCreateProgramWithSource", d->label);
    if ((rc = clBuildProgram(p, 1, &d->device, opts, NULL, NULL)) != CL_SUCCESS) {
        if (optional) {
            size_t n = 0;
            char log[400] = "";
            clGetProgramBuildInfo(p, d->device, CL_PROGRAM_BUILD_LOG, sizeof log - 1, log, &n);
            if (!log[0] && n) snprintf(log, sizeof log, "(%zu bytes of build log)", n);
            OCL_LOG(LOOM_LOG_WARN, "%s do not build %s (%s): %.300s; going on without them", optional, d->label,
                    loom__ocl_errname(rc), log);
            clReleaseProgram(p);
            FILE *f = cache ? fopen(failed, "w") : NULL; /* remembered under the same key as a binary */
            if (f) fprintf(f, "%s\n", log), fclose(f);
            return LOOM_OK;
        }
        loom_status st = build_failed(d, p, rc);
        clReleaseProgram(p);
        return st;
    }
    *out = p;
    OCL_LOG(LOOM_LOG_DEBUG, "built a program for %s (%s)", d->label, opts);
    if (!cache) return LOOM_OK;
    size_t n = 0;
    unsigned char *bits = NULL;
    if (clGetProgramInfo(p, CL_PROGRAM_BINARY_SIZES, sizeof n, &n, NULL) == CL_SUCCESS && n && (bits = malloc(n)) &&
        clGetProgramInfo(p, CL_PROGRAM_BINARIES, sizeof bits, &bits, NULL) == CL_SUCCESS)
        cache_store(path, key, bits, n);
    else
        OCL_LOG(LOOM_LOG_DEBUG, "binary cache: the driver gave no program binary");
    free(bits);
    return LOOM_OK;
}

/* One of the device's programs: the main one, or (tc_gemv) the tensor-core decode GEMVs' */
static loom_status build_one(ocl_dev *d, bool tc_gemv, const char *optional, cl_program *out)
{
    char opts[512];
    build_options(d, tc_gemv, opts, sizeof opts);
    char *src = program_source(tc_gemv);
    if (!src) return OCL_FAIL(LOOM_ERR_NOMEM, "out of memory");
    loom_status st = build_program(d, src, opts, optional, out);
    free(src);
    return st;
}

loom_status loom__ocl_build(ocl_dev *d)
{
    if (d->max_wg < 64)
        return OCL_FAIL(LOOM_ERR_UNSUPPORTED, "device %s allows work-groups of %zu; loom's kernels need 64", d->label,
                        d->max_wg);
    if (d->local_mem < 20 * 1024) /* users: the GEMM tiles (25.6 KiB, or 13.3 on a small device), the GEMVs (8 KiB) */
        return OCL_FAIL(LOOM_ERR_UNSUPPORTED, "device %s has %zu bytes of local memory; loom's kernels need 20 KiB",
                        d->label, d->local_mem);
    loom_status st = build_one(d, false, d->mma ? "the tensor-core prefill kernels" : NULL, &d->program);
    if (st) return st;
    if (!d->program) { /* (optional) the tensor-core kernels did not build: without them */
        d->mma = 0;
        return loom__ocl_build(d);
    }
    /* the tensor-core decode GEMVs: without them (NULL) the portable ones run */
    return d->mma ? build_one(d, true, "the tensor-core decode GEMVs", &d->program_tc) : LOOM_OK;
}

void loom__ocl_unbuild(ocl_dev *d)
{
    if (d->program) clReleaseProgram(d->program);
    if (d->program_tc) clReleaseProgram(d->program_tc);
    d->program = d->program_tc = NULL;
}
