/* What a kernel launch costs the host through an OpenCL driver, and whether
 * cl_khr_command_buffer replays a step's launches for less. A "step" is
 * STEP launches of a one-work-group kernel, enqueued, flushed every 16 and
 * waited for, as loom's decode step is; timed on the host.
 *   cc -O2 -o /tmp/launch-cost bench/opencl/launch-cost.c -lOpenCL && /tmp/launch-cost [device index] [read]
 * (read: the readback alone)
 * Prints the device's extensions that matter here, then per variant the host
 * time to enqueue one launch and the wall time of a step; then the device's own
 * time per launch, with the host out of the way (device_cost); then what reading a step's
 * logits back costs (read_cost). */
#define CL_TARGET_OPENCL_VERSION 300
#include <CL/cl.h>
#include <CL/cl_ext.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { STEP = 128, STEPS = 300 };

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

#define CK(call)                                                                 \
    do {                                                                         \
        cl_int rc_ = (call);                                                     \
        if (rc_ != CL_SUCCESS) {                                                 \
            fprintf(stderr, "%s:%d: %s failed: %d\n", __FILE__, __LINE__, #call, rc_); \
            exit(1);                                                             \
        }                                                                        \
    } while (0)

/* A kernel of nbuf buffers and nint ints, the ints either as arguments of their own or
 * packed into one struct passed by value; each work-item adds them into its own slot so
 * that none is dead. */
typedef struct { int nbuf, nint, packed, same; } variant; /* same: every buffer argument the same buffer */

static char *source(variant v)
{
    size_t cap = 1024 + (size_t)(v.nbuf + v.nint) * 48;
    char *s = malloc(cap);
    int o = 0;
    if (v.packed) {
        o += snprintf(s + o, cap - o, "typedef struct {");
        for (int i = 0; i < v.nint; i++) o += snprintf(s + o, cap - o, " int a%d;", i);
        o += snprintf(s + o, cap - o, " } P;\n");
    }
    o += snprintf(s + o, cap - o, "__kernel void k(__global float *b0");
    for (int i = 1; i < v.nbuf; i++) o += snprintf(s + o, cap - o, ", __global float *b%d", i);
    if (v.packed) o += snprintf(s + o, cap - o, ", P p");
    else
        for (int i = 0; i < v.nint; i++) o += snprintf(s + o, cap - o, ", int a%d", i);
    o += snprintf(s + o, cap - o, ") { float v = 0;");
    for (int i = 1; i < v.nbuf; i++) o += snprintf(s + o, cap - o, " v += b%d[0];", i);
    for (int i = 0; i < v.nint; i++) o += snprintf(s + o, cap - o, v.packed ? " v += p.a%d;" : " v += a%d;", i);
    snprintf(s + o, cap - o, " b0[get_global_id(0)] += v; }");
    return s;
}

/* The device's own cost of a launch, with the host out of the way: a kernel that
 * spins for a few milliseconds, then N launches of kernel a (and b, alternating, if
 * given), all enqueued while it spins; the wall time of the lot less the spin's alone,
 * over N. With profiling, also the launches' mean start-to-end time as the events say. */
static double wall_of(cl_command_queue q, cl_kernel spin, cl_kernel a, cl_kernel b, size_t groups, int n, cl_event *ev)
{
    size_t one = 1, l = 256, g = groups * l;
    double t0 = now_us();
    CK(clEnqueueNDRangeKernel(q, spin, 1, NULL, &one, &one, 0, NULL, NULL));
    clFlush(q);
    for (int i = 0; i < n; i++) CK(clEnqueueNDRangeKernel(q, b && (i & 1) ? b : a, 1, NULL, &g, &l, 0, NULL, ev ? &ev[i] : NULL));
    clFlush(q);
    CK(clFinish(q));
    return now_us() - t0;
}

static void device_cost(cl_context ctx, cl_device_id dev, bool prof, const char *what, cl_kernel spin, cl_kernel a,
                        cl_kernel b, size_t groups)
{
    enum { N = 128 };
    cl_int rc;
    cl_command_queue q = clCreateCommandQueue(ctx, dev, prof ? CL_QUEUE_PROFILING_ENABLE : 0, &rc);
    CK(rc);
    cl_event ev[N];
    double best = 1e30, alone = 1e30, inside = 0;
    for (int rep = 0; rep < 5; rep++) {
        double t = wall_of(q, spin, a, b, groups, 0, NULL);
        alone = t < alone ? t : alone;
        t = wall_of(q, spin, a, b, groups, N, prof ? ev : NULL);
        best = t < best ? t : best;
        for (int i = 0; prof && i < N; i++) {
            cl_ulong s0, s1;
            CK(clGetEventProfilingInfo(ev[i], CL_PROFILING_COMMAND_START, sizeof s0, &s0, NULL));
            CK(clGetEventProfilingInfo(ev[i], CL_PROFILING_COMMAND_END, sizeof s1, &s1, NULL));
            inside += (double)(s1 - s0) * 1e-3 / N / 5;
            clReleaseEvent(ev[i]);
        }
    }
    printf("device%s, %s (%zu work-groups of 256): %.2f us a launch back to back (spin alone %.0f us)", prof ? ", profiled" : "",
           what, groups, (best - alone) / N, alone);
    if (prof) printf(", %.2f us start to end", inside);
    printf("\n");
    clReleaseCommandQueue(q);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Reading back n bytes (a step's logits) as loom does: a non-blocking read into the
 * caller's pageable memory, then a blocking read of a 16-byte error word; against the
 * same into pinned memory (a CL_MEM_ALLOC_HOST_PTR buffer's mapping, NVIDIA's way to
 * pinned host memory) with and without the copy on to pageable memory. Medians of REPS. */
static void read_cost(cl_context ctx, cl_command_queue q, size_t n)
{
    enum { REPS = 200 };
    cl_int rc;
    cl_mem src = clCreateBuffer(ctx, CL_MEM_READ_WRITE, n, NULL, &rc), err;
    CK(rc);
    err = clCreateBuffer(ctx, CL_MEM_READ_WRITE, 16, NULL, &rc);
    CK(rc);
    cl_mem pin = clCreateBuffer(ctx, CL_MEM_READ_WRITE | CL_MEM_ALLOC_HOST_PTR, n + 64, NULL, &rc);
    CK(rc);
    unsigned char *p = clEnqueueMapBuffer(q, pin, CL_TRUE, CL_MAP_READ | CL_MAP_WRITE, 0, n + 64, 0, NULL, NULL, &rc);
    CK(rc);
    unsigned char *host = malloc(n + 64);
    memset(host, 1, n + 64);
    const char *what[] = {"pageable", "pageable, no error word", "pinned", "pinned + memcpy to pageable",
                          "16 bytes alone (pageable)", "pinned in 4 chunks, memcpy of each while the next is in flight"};
    for (int v = 0; v < 6; v++) {
        double t[REPS];
        for (int r = 0; r < REPS; r++) {
            CK(clFinish(q));
            unsigned char *d = v >= 2 && v <= 3 ? p : host;
            double t0 = now_us();
            if (v == 5) { /* the error word first, then the chunks, each with its event */
                cl_event ev[4];
                const size_t c = n / 4;
                CK(clEnqueueReadBuffer(q, err, CL_FALSE, 0, 16, p, 0, NULL, NULL));
                for (int i = 0; i < 4; i++)
                    CK(clEnqueueReadBuffer(q, src, CL_FALSE, i * c, i < 3 ? c : n - 3 * c, p + 64 + i * c, 0, NULL, &ev[i]));
                clFlush(q);
                for (int i = 0; i < 4; i++) {
                    CK(clWaitForEvents(1, &ev[i]));
                    memcpy(host + 64 + i * c, p + 64 + i * c, i < 3 ? c : n - 3 * c);
                    clReleaseEvent(ev[i]);
                }
                t[r] = now_us() - t0;
                continue;
            }
            if (v < 4) CK(clEnqueueReadBuffer(q, src, v == 1, 0, n, d + 64, 0, NULL, NULL));
            if (v != 1) CK(clEnqueueReadBuffer(q, err, CL_TRUE, 0, 16, d, 0, NULL, NULL));
            if (v == 3) memcpy(host + 64, p + 64, n);
            t[r] = now_us() - t0;
        }
        qsort(t, REPS, sizeof *t, cmp_d);
        printf("read %zu bytes back, %s: %.1f us (median; 10%% %.1f, 90%% %.1f)\n", v == 4 ? (size_t)16 : n, what[v],
               t[REPS / 2], t[REPS / 10], t[REPS * 9 / 10]);
    }
    CK(clEnqueueUnmapMemObject(q, pin, p, 0, NULL, NULL));
    CK(clFinish(q));
    free(host);
    clReleaseMemObject(pin);
    clReleaseMemObject(err);
    clReleaseMemObject(src);
}

int main(int argc, char **argv)
{
    int want = argc > 1 ? atoi(argv[1]) : 0, seen = 0;
    const bool read_only = argc > 2 && !strcmp(argv[2], "read");
    cl_platform_id plats[8];
    cl_uint np = 0;
    CK(clGetPlatformIDs(8, plats, &np));
    cl_platform_id plat = NULL;
    cl_device_id dev = NULL;
    for (cl_uint p = 0; p < np && !dev; p++) {
        cl_device_id ds[8];
        cl_uint nd = 0;
        if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, 8, ds, &nd) != CL_SUCCESS) continue;
        for (cl_uint i = 0; i < nd && !dev; i++)
            if (seen++ == want) plat = plats[p], dev = ds[i];
    }
    if (!dev) { fprintf(stderr, "no OpenCL device %d\n", want); return 77; }
    char name[256], drv[128], ver[128];
    CK(clGetDeviceInfo(dev, CL_DEVICE_NAME, sizeof name, name, NULL));
    CK(clGetDeviceInfo(dev, CL_DRIVER_VERSION, sizeof drv, drv, NULL));
    CK(clGetDeviceInfo(dev, CL_DEVICE_VERSION, sizeof ver, ver, NULL));
    size_t el = 0;
    CK(clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS, 0, NULL, &el));
    char *ext = malloc(el + 1);
    CK(clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS, el, ext, NULL));
    ext[el] = 0;
    printf("device: %s, driver %s, %s\nextensions: %s\n", name, drv, ver, ext);
    size_t wl = 0;
    if (clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS_WITH_VERSION, 0, NULL, &wl) == CL_SUCCESS && wl) {
        cl_name_version *nv = malloc(wl);
        CK(clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS_WITH_VERSION, wl, nv, NULL));
        for (size_t i = 0; i < wl / sizeof *nv; i++)
            if (strstr(nv[i].name, "command_buffer"))
                printf("  %s %u.%u.%u\n", nv[i].name, CL_VERSION_MAJOR(nv[i].version), CL_VERSION_MINOR(nv[i].version),
                       CL_VERSION_PATCH(nv[i].version));
    }
    cl_int rc;
    cl_context ctx = clCreateContext(NULL, 1, &dev, NULL, NULL, &rc);
    CK(rc);
    cl_command_queue q = clCreateCommandQueue(ctx, dev, 0, &rc);
    CK(rc);
    cl_mem bufs[32];
    for (int i = 0; i < 32; i++) {
        bufs[i] = clCreateBuffer(ctx, CL_MEM_READ_WRITE, 256 * sizeof(float), NULL, &rc);
        CK(rc);
    }
    cl_mem buf = bufs[0];
    bool cb = strstr(ext, "cl_khr_command_buffer") != NULL;
    clCreateCommandBufferKHR_fn create = NULL;
    clCommandNDRangeKernelKHR_fn record = NULL;
    clFinalizeCommandBufferKHR_fn finalize = NULL;
    clEnqueueCommandBufferKHR_fn replay = NULL;
    clReleaseCommandBufferKHR_fn release = NULL;
    if (cb) {
        create = (clCreateCommandBufferKHR_fn)clGetExtensionFunctionAddressForPlatform(plat, "clCreateCommandBufferKHR");
        record = (clCommandNDRangeKernelKHR_fn)clGetExtensionFunctionAddressForPlatform(plat, "clCommandNDRangeKernelKHR");
        finalize = (clFinalizeCommandBufferKHR_fn)clGetExtensionFunctionAddressForPlatform(plat, "clFinalizeCommandBufferKHR");
        replay = (clEnqueueCommandBufferKHR_fn)clGetExtensionFunctionAddressForPlatform(plat, "clEnqueueCommandBufferKHR");
        release = (clReleaseCommandBufferKHR_fn)clGetExtensionFunctionAddressForPlatform(plat, "clReleaseCommandBufferKHR");
        cb = create && record && finalize && replay && release;
        printf("command buffers: entry points %s\n", cb ? "found" : "missing");
        fflush(stdout);
    }
    /* the last two as loom's AWQ decode GEMV: 17 buffers, 41 scalars */
    const variant vs[] = {{1, 0, 0, 0},   {1, 7, 0, 0},   {1, 23, 0, 0},  {1, 57, 0, 0}, {17, 0, 0, 0},
                          {17, 0, 0, 1},  {5, 0, 0, 0},   {17, 41, 0, 0}, {17, 41, 1, 0}, {17, 41, 1, 1},
                          {5, 41, 1, 0}};
    for (size_t v = 0; v < (read_only ? 0 : sizeof vs / sizeof *vs); v++) {
        char *src = source(vs[v]);
        cl_program prog = clCreateProgramWithSource(ctx, 1, (const char **)&src, NULL, &rc);
        CK(rc);
        CK(clBuildProgram(prog, 1, &dev, "", NULL, NULL));
        cl_kernel k = clCreateKernel(prog, "k", &rc);
        CK(rc);
        int nargs = vs[v].nbuf + (vs[v].packed ? 1 : vs[v].nint), ints[64];
        for (int i = 0; i < 64; i++) ints[i] = i;
        for (int i = 0; i < vs[v].nbuf; i++) CK(clSetKernelArg(k, (cl_uint)i, sizeof bufs[i], &bufs[vs[v].same ? 0 : i]));
        if (vs[v].packed) CK(clSetKernelArg(k, (cl_uint)vs[v].nbuf, (size_t)vs[v].nint * sizeof(int), ints));
        else
            for (int i = 0; i < vs[v].nint; i++) CK(clSetKernelArg(k, (cl_uint)(vs[v].nbuf + i), sizeof i, &ints[i]));
        size_t g = 256, l = 256;
        double host = 0, wall = 0, setarg = 0;
        for (int s = -20; s < STEPS; s++) { /* the first 20 warm up */
            double t0 = now_us(), ta = 0;
            for (int i = 0; i < STEP; i++) {
                double a0 = now_us();
                CK(clSetKernelArg(k, 0, sizeof buf, &bufs[i & 1])); /* one argument changes a launch, as in loom */
                ta += now_us() - a0;
                CK(clEnqueueNDRangeKernel(q, k, 1, NULL, &g, &l, 0, NULL, NULL));
                if (i % 16 == 1) clFlush(q);
            }
            double t1 = now_us();
            CK(clFinish(q));
            double t2 = now_us();
            if (s >= 0) host += t1 - t0, wall += t2 - t0, setarg += ta;
        }
        char what[80];
        snprintf(what, sizeof what, "%2d buffers%s + %2d ints%s (%2d args)", vs[v].nbuf, vs[v].same ? " (one)" : "",
                 vs[v].nint, vs[v].packed ? " in a struct" : "", nargs);
        printf("%s, enqueued: %.2f us a launch on the host (of it clSetKernelArg %.2f), %.1f us a step of %d\n",
               what, host / STEPS / STEP, setarg / STEPS / STEP, wall / STEPS, STEP);
        if (cb) {
            cl_command_buffer_khr b = create(1, &q, NULL, &rc);
            CK(rc);
            for (int i = 0; i < STEP; i++) CK(record(b, NULL, NULL, k, 1, NULL, &g, &l, 0, NULL, NULL, NULL));
            CK(finalize(b));
            double host2 = 0, wall2 = 0;
            for (int s = -20; s < STEPS; s++) {
                double t0 = now_us();
                CK(replay(1, &q, b, 0, NULL, NULL));
                clFlush(q);
                double t1 = now_us();
                CK(clFinish(q));
                double t2 = now_us();
                if (s >= 0) host2 += t1 - t0, wall2 += t2 - t0;
            }
            printf("%s, command buffer: %.1f us to enqueue a step on the host, %.1f us a step\n", what,
                   host2 / STEPS, wall2 / STEPS);
            release(b);
        }
        clReleaseKernel(k);
        clReleaseProgram(prog);
        free(src);
    }
    if (!read_only) {
        /* an empty kernel, and one with 40 KiB of local memory (the carveout it asks for) */
        const char *src = "__kernel void e(__global float *a) { if (get_global_id(0) == 1u << 30) a[0] = 1.0f; }\n"
                          "__kernel void l(__global float *a) { __local float s[10240]; s[get_local_id(0)] = 1.0f;\n"
                          "  barrier(CLK_LOCAL_MEM_FENCE); if (get_global_id(0) == 1u << 30) a[0] = s[3]; }\n"
                          "__kernel void spin(__global float *a, int n) { float v = a[1];\n"
                          "  for (int i = 0; i < n; i++) v = v * 0.999999f + 1e-7f; a[2] = v; }\n";
        cl_program prog = clCreateProgramWithSource(ctx, 1, &src, NULL, &rc);
        CK(rc);
        CK(clBuildProgram(prog, 1, &dev, "", NULL, NULL));
        cl_kernel e = clCreateKernel(prog, "e", &rc), lk, spin;
        CK(rc);
        lk = clCreateKernel(prog, "l", &rc);
        CK(rc);
        spin = clCreateKernel(prog, "spin", &rc);
        CK(rc);
        CK(clSetKernelArg(e, 0, sizeof buf, &buf));
        CK(clSetKernelArg(lk, 0, sizeof buf, &buf));
        CK(clSetKernelArg(spin, 0, sizeof buf, &buf));
        cl_command_queue q2 = clCreateCommandQueue(ctx, dev, 0, &rc);
        CK(rc);
        for (int n = 1 << 12;; n *= 2) { /* a spin long enough for the host to enqueue the launches meanwhile */
            CK(clSetKernelArg(spin, 1, sizeof n, &n));
            wall_of(q2, spin, e, NULL, 1, 1, NULL); /* (a driver may build the kernels on first use) */
            if (wall_of(q2, spin, e, NULL, 1, 0, NULL) > 20000 || n >= 1 << 30) break;
        }
        clReleaseCommandQueue(q2);
        for (int prof = 0; prof < 2; prof++) {
            device_cost(ctx, dev, prof, "empty", spin, e, NULL, 1);
            device_cost(ctx, dev, prof, "empty", spin, e, NULL, 396);
            device_cost(ctx, dev, prof, "40 KiB local", spin, lk, NULL, 396);
            device_cost(ctx, dev, prof, "empty and 40 KiB local alternating", spin, e, lk, 396);
        }
        clReleaseKernel(e);
        clReleaseKernel(lk);
        clReleaseKernel(spin);
        clReleaseProgram(prog);
    }
    read_cost(ctx, q, 151936 * sizeof(float)); /* Qwen2.5's logits of one token */
    free(ext);
    for (int i = 0; i < 32; i++) clReleaseMemObject(bufs[i]);
    clReleaseCommandQueue(q);
    clReleaseContext(ctx);
    return 0;
}
