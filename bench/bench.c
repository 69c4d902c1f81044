/* bench.c — `loom bench`: how fast the kernels run, next to what the machine
 * itself can do, measured in the same run.
 *
 *   loom bench kernels [--json FILE] [--reps N] [--quick] [--strict]
 *   loom bench model -m DIR [--backend SPEC] [--prompt N] [--gen N] [--ctx N] [--json FILE]
 *
 * Every loom figure goes through the public graph API (build, compile on the
 * CPU device from loom_select("cpu"), loom_exec_run), so it is what users get,
 * executor overhead included. Baselines:
 *   memcpy   N threads (LOOM_THREADS, as the CPU device) each memcpy a slice of
 *            a 512 MiB buffer; bandwidth counts read + write (2 x bytes copied).
 *   sgemm    cblas_sgemm on the same shape and thread count, called directly.
 * Baseline and kernel repetitions are interleaved (memcpy, kernel, memcpy, ...)
 * so a noisy neighbour hits both alike; each figure is the median.
 *
 * AWQ GEMV bandwidth counts the checkpoint bytes of the weight
 * (loom_awq_nbytes: packed int4 + zeros + f16 scales) per call; activations are
 * negligible and not counted. Weights are rotated over enough copies (> 256
 * MiB in all, several times the last-level cache) that each call streams its
 * weight from DRAM, not from cache. */
#include <cblas.h>
#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "awq.h"
#include "checkpoint.h"
#include "cli.h"
#include "commands.h"
#include "graph.h"

#define ROTATE_BYTES (288u << 20) /* total AWQ weight bytes per rotation */
#define MEMCPY_BYTES (512u << 20)

typedef struct {
    int    reps;
    bool   quick;
    int    threads;
    loom_device *dev;
    cJSON *rows;
    int    n_fail;
} bench_ctx;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rng_u32(void)
{
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}
static float rng_f(void) { return (float)rng_u32() / 4294967296.0f * 2.0f - 1.0f; }

/* ---- memcpy baseline ----------------------------------------------------------------- */
typedef struct {
    char       *dst;
    const char *src;
    size_t      n;
} copy_slice;

typedef struct {
    char  *a, *b;
    size_t n;
    int    threads;
} memcpy_base;

static void *copy_thread(void *p)
{
    copy_slice *s = p;
    memcpy(s->dst, s->src, s->n);
    return NULL;
}

/* One timed copy; returns GB/s counting read + write. */
static double memcpy_once(const memcpy_base *m)
{
    pthread_t th[64];
    copy_slice sl[64];
    int nt = m->threads < 64 ? m->threads : 64;
    size_t per = m->n / (size_t)nt / 64 * 64;
    double t = now_s();
    for (int i = 0; i < nt; i++) {
        sl[i] = (copy_slice){m->b + per * i, m->a + per * i, i == nt - 1 ? m->n - per * i : per};
        if (i && pthread_create(&th[i], NULL, copy_thread, &sl[i])) copy_thread(&sl[i]), th[i] = 0;
    }
    copy_thread(&sl[0]);
    for (int i = 1; i < nt; i++)
        if (th[i]) pthread_join(th[i], NULL);
    t = now_s() - t;
    return 2.0 * (double)m->n / t / 1e9;
}

/* ---- reporting -------------------------------------------------------------------------- */
static void add_row(bench_ctx *b, const char *name, const char *shape, double loom_ms, double loom_rate,
                    const char *unit, double base_rate, const char *base_name, double ratio, double target)
{
    bool pass = target <= 0 || ratio >= target;
    char tgt[32] = "-";
    if (target > 0) snprintf(tgt, sizeof tgt, ">= %.2f %s", target, pass ? "PASS" : "FAIL");
    printf("%-22s %-22s %9.3f %9.2f %-7s %9.2f %-8s %6.2f  %s\n", name, shape, loom_ms, loom_rate, unit, base_rate,
           base_name, ratio, tgt);
    fflush(stdout);
    if (!pass) b->n_fail++;
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "name", name);
    cJSON_AddStringToObject(r, "shape", shape);
    cJSON_AddNumberToObject(r, "loom_ms", loom_ms);
    cJSON_AddNumberToObject(r, "loom_rate", loom_rate);
    cJSON_AddStringToObject(r, "unit", unit);
    cJSON_AddStringToObject(r, "baseline", base_name);
    cJSON_AddNumberToObject(r, "baseline_rate", base_rate);
    cJSON_AddNumberToObject(r, "ratio", ratio);
    if (target > 0) {
        cJSON_AddNumberToObject(r, "target", target);
        cJSON_AddBoolToObject(r, "pass", pass);
    }
    cJSON_AddItemToArray(b->rows, r);
}

/* ---- AWQ GEMV (decode): bandwidth vs memcpy ------------------------------------------------ */
static int bench_awq_gemv(bench_ctx *b, const memcpy_base *mb, int64_t K, int64_t N, int T)
{
    size_t wbytes = loom_awq_nbytes(K, N);
    int copies = (int)((ROTATE_BYTES + wbytes - 1) / wbytes);
    if (b->quick && copies > 4) copies = copies / 2;
    uint8_t *blob = malloc(wbytes);
    float *x = malloc((size_t)T * (size_t)K * sizeof *x);
    loom_graph *g = loom_graph_create(T);
    loom_exec *e = NULL;
    int rc = -1;
    if (!blob || !x || !g) goto out;
    { /* random 4-bit values and zeros; scales small and positive */
        uint8_t *q = malloc((size_t)(K * N)), *z = malloc((size_t)(K / LOOM_AWQ_GROUP * N));
        uint16_t *s = malloc((size_t)(K / LOOM_AWQ_GROUP * N) * 2);
        if (!q || !z || !s) {
            free(q), free(z), free(s);
            goto out;
        }
        for (int64_t i = 0; i < K * N; i++) q[i] = rng_u32() & 15;
        for (int64_t i = 0; i < K / LOOM_AWQ_GROUP * N; i++) z[i] = rng_u32() & 15, s[i] = loom_f32_to_f16(0.01f + 0.01f * (rng_f() + 1));
        loom_status st = loom_awq_pack(K, N, q, z, s, blob);
        free(q), free(z), free(s);
        if (st) goto out;
    }
    for (int64_t i = 0; i < T * K; i++) x[i] = rng_f();
    loom_tid xi = loom_graph_input(g, "x", LOOM_F32, 2, (int64_t[]){T, K}, true);
    for (int c = 0; c < copies; c++) {
        loom_tid w = loom_name(g, loom_graph_weight(g, "w", LOOM_Q4_AWQ, 2, (int64_t[]){K, N}, blob), "w%d", c);
        loom_graph_output(g, loom_name(g, loom_matmul_awq(g, xi, w, LOOM_TID_NONE), "y%d", c));
    }
    if (loom_graph_status(g)) {
        fprintf(stderr, "loom bench: building the AWQ graph: %s\n", loom_graph_error(g));
        goto out;
    }
    if (loom_graph_compile(g, &b->dev, 1, LOOM_COMPILE_NO_FALLBACK, &e) || loom_exec_write(e, xi, x, (size_t)T * K * 4)) {
        fprintf(stderr, "loom bench: %s\n", loom_last_error());
        goto out;
    }
    loom_step step = {T, NULL, NULL};
    double tk[64], tm[64];
    int reps = b->reps;
    if (loom_exec_run(e, &step)) goto fail_run; /* warm up */
    memcpy_once(mb);
    for (int r = 0; r < reps; r++) {
        tm[r] = memcpy_once(mb);
        double t = now_s();
        if (loom_exec_run(e, &step)) goto fail_run;
        tk[r] = (now_s() - t) / copies;
    }
    double t_med = median(tk, reps), mem = median(tm, reps), bw = (double)wbytes / t_med / 1e9;
    char name[48], shape[48];
    snprintf(name, sizeof name, "awq gemv T=%d", T);
    snprintf(shape, sizeof shape, "K=%lld N=%lld x%d", (long long)K, (long long)N, copies);
    add_row(b, name, shape, t_med * 1e3, bw, "GB/s", mem, "memcpy", bw / mem, T == 1 ? 0.60 : 0);
    rc = 0;
    goto out;
fail_run:
    fprintf(stderr, "loom bench: run failed: %s\n", loom_last_error());
out:
    loom_exec_destroy(e);
    loom_graph_destroy(g);
    free(blob), free(x);
    return rc;
}

/* ---- dense / AWQ matmul with many tokens: time vs cblas_sgemm ------------------------------ */
static int bench_matmul(bench_ctx *b, int64_t T, int64_t K, int64_t N, bool awq)
{
    size_t wn = (size_t)K * (size_t)N;
    float *x = malloc((size_t)T * K * 4), *w = malloc(wn * 4), *y = malloc((size_t)T * N * 4);
    uint8_t *blob = awq ? malloc(loom_awq_nbytes(K, N)) : NULL;
    loom_graph *g = loom_graph_create((int32_t)T);
    loom_exec *e = NULL;
    int rc = -1;
    if (!x || !w || !y || !g || (awq && !blob)) goto out;
    for (size_t i = 0; i < (size_t)T * K; i++) x[i] = rng_f();
    for (size_t i = 0; i < wn; i++) w[i] = rng_f() * 0.05f;
    loom_tid xi = loom_graph_input(g, "x", LOOM_F32, 2, (int64_t[]){T, K}, true), wi;
    if (awq) {
        uint8_t *q = malloc(wn), *z = malloc(wn / LOOM_AWQ_GROUP);
        uint16_t *s = malloc(wn / LOOM_AWQ_GROUP * 2);
        if (!q || !z || !s) {
            free(q), free(z), free(s);
            goto out;
        }
        for (size_t i = 0; i < wn; i++) q[i] = rng_u32() & 15;
        for (size_t i = 0; i < wn / LOOM_AWQ_GROUP; i++) z[i] = rng_u32() & 15, s[i] = loom_f32_to_f16(0.01f);
        loom_status st = loom_awq_pack(K, N, q, z, s, blob);
        free(q), free(z), free(s);
        if (st) goto out;
        wi = loom_graph_weight(g, "w", LOOM_Q4_AWQ, 2, (int64_t[]){K, N}, blob);
        loom_graph_output(g, loom_matmul_awq(g, xi, wi, LOOM_TID_NONE));
    } else {
        wi = loom_graph_weight(g, "w", LOOM_F32, 2, (int64_t[]){N, K}, w);
        loom_graph_output(g, loom_matmul(g, xi, wi, LOOM_TID_NONE));
    }
    if (loom_graph_status(g)) {
        fprintf(stderr, "loom bench: building the matmul graph: %s\n", loom_graph_error(g));
        goto out;
    }
    if (loom_graph_compile(g, &b->dev, 1, LOOM_COMPILE_NO_FALLBACK, &e) || loom_exec_write(e, xi, x, (size_t)T * K * 4)) {
        fprintf(stderr, "loom bench: %s\n", loom_last_error());
        goto out;
    }
    loom_step step = {(int32_t)T, NULL, NULL};
    double tl[64], tb[64];
    int reps = b->quick ? 3 : (b->reps < 7 ? b->reps : 7);
    /* baseline: y = x · wᵀ (row-major x[T,K], w[N,K]), as loom's f32 path would be */
    #define SGEMM() cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)N, (int)K, 1.0f, x, (int)K, w, \
                                (int)K, 0.0f, y, (int)N)
    SGEMM();
    if (loom_exec_run(e, &step)) goto fail_run;
    for (int r = 0; r < reps; r++) {
        double t = now_s();
        SGEMM();
        tb[r] = now_s() - t;
        t = now_s();
        if (loom_exec_run(e, &step)) goto fail_run;
        tl[r] = now_s() - t;
    }
    #undef SGEMM
    double fl = 2.0 * (double)T * (double)K * (double)N, t_l = median(tl, reps), t_b = median(tb, reps);
    char name[48], shape[48];
    snprintf(name, sizeof name, "%s T=%lld", awq ? "awq matmul" : "matmul f32", (long long)T);
    snprintf(shape, sizeof shape, "K=%lld N=%lld", (long long)K, (long long)N);
    add_row(b, name, shape, t_l * 1e3, fl / t_l / 1e9, "GFLOP/s", fl / t_b / 1e9, "sgemm", t_b / t_l, awq ? 0 : 0.80);
    rc = 0;
    goto out;
fail_run:
    fprintf(stderr, "loom bench: run failed: %s\n", loom_last_error());
out:
    loom_exec_destroy(e);
    loom_graph_destroy(g);
    free(x), free(w), free(y), free(blob);
    return rc;
}

static int device_threads(void)
{
    const char *env = getenv("LOOM_THREADS");
    long v = env && *env ? strtol(env, NULL, 10) : sysconf(_SC_NPROCESSORS_ONLN);
    return v < 1 ? 1 : v > 1024 ? 1024 : (int)v;
}

static int bench_kernels(int argc, char **argv)
{
    const char *json = NULL;
    bench_ctx b = {.reps = 11};
    bool strict = false;
    for (int i = 2; i < argc; i++) {
        long v;
        if (!strcmp(argv[i], "--json") && i + 1 < argc) {
            json = argv[++i];
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            if (cli_int("bench", "--reps", argv[++i], 1, 64, &v)) return 2;
            b.reps = (int)v;
        } else if (!strcmp(argv[i], "--quick")) {
            b.quick = true, b.reps = 5;
        } else if (!strcmp(argv[i], "--strict")) {
            strict = true;
        } else {
            fprintf(stderr, "loom bench kernels: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    loom_device **devs = NULL;
    int n_devs = 0;
    if (cli_select("bench", "cpu", &devs, &n_devs)) return 1;
    b.dev = devs[0];
    b.threads = device_threads();
    b.rows = cJSON_CreateArray();
    loom_device_info info;
    memset(&info, 0, sizeof info);
    loom_backend *be = loom_backend_find("cpu");
    if (be) loom_backend_device_info(be, 0, &info);
    printf("loom bench kernels on %s: %s\n  %s\n  %s\n", loom_device_label(b.dev), info.name, info.details, info.driver);
    printf("  memcpy baseline: %d threads, %u MiB, read+write bytes; AWQ weights rotated over > %u MiB (DRAM, not cache)\n\n",
           b.threads, MEMCPY_BYTES >> 20, ROTATE_BYTES >> 20);
    printf("%-22s %-22s %9s %9s %-7s %9s %-8s %6s  %s\n", "kernel", "shape", "ms", "loom", "unit", "baseline", "", "ratio",
           "target");

    memcpy_base mb = {malloc(MEMCPY_BYTES), malloc(MEMCPY_BYTES), MEMCPY_BYTES, b.threads};
    int rc = 0;
    if (!mb.a || !mb.b) {
        fprintf(stderr, "loom bench: out of memory for the memcpy baseline\n");
        rc = 1;
    } else {
        memset(mb.a, 1, mb.n), memset(mb.b, 2, mb.n);
        rc |= bench_awq_gemv(&b, &mb, 896, 4864, 1);
        rc |= bench_awq_gemv(&b, &mb, 3584, 18944, 1);
        if (!b.quick) rc |= bench_awq_gemv(&b, &mb, 3584, 18944, 4);
        rc |= bench_matmul(&b, 512, 896, 4864, false);
        rc |= bench_matmul(&b, 512, 3584, 3584, false);
        if (!b.quick) rc |= bench_matmul(&b, 512, 896, 4864, true);
    }
    free(mb.a), free(mb.b);
    printf("\n%s\n", rc ? "some benchmarks failed to run" : b.n_fail ? "targets: FAIL" : "targets: all PASS");
    if (json) {
        cJSON *root = cJSON_CreateObject();
        cJSON_AddStringToObject(root, "bench", "kernels");
        cJSON_AddStringToObject(root, "device", loom_device_label(b.dev));
        cJSON_AddStringToObject(root, "cpu", info.name);
        cJSON_AddStringToObject(root, "details", info.details);
        cJSON_AddNumberToObject(root, "threads", b.threads);
        cJSON_AddItemToObject(root, "results", b.rows);
        b.rows = NULL;
        char *s = cJSON_Print(root);
        FILE *f = s ? fopen(json, "w") : NULL;
        if (!f || fputs(s, f) < 0 || fclose(f)) {
            fprintf(stderr, "loom bench: cannot write %s\n", json);
            rc = 1;
        }
        cJSON_free(s);
        cJSON_Delete(root);
    }
    cJSON_Delete(b.rows);
    loom_devices_close(devs, n_devs);
    return rc ? 1 : strict && b.n_fail ? 1 : 0;
}

/* Bytes one decode step must read: every weight once (an untied embedding
 * table: one row, ignored), plus the KV cache up to `ctx` positions. */
static double decode_bytes(const loom_qwen2_model *m, int32_t ctx)
{
    const loom_graph *g = loom_qwen2_model_graph(m);
    const loom_qwen2_config *c = loom_qwen2_model_config(m);
    double bytes = 0;
    for (int32_t t = 0; t < loom_graph_n_tensors(g); t++) {
        const loom_tensor *d = loom_graph_tensor(g, t);
        if (!(d->flags & LOOM_TENSOR_WEIGHT)) continue;
        if (!c->tied && !strcmp(d->name, "model.embed_tokens.weight")) continue;
        bytes += (double)loom_tensor_bytes(d);
    }
    return bytes + 2.0 * c->n_layers * c->n_head_kv * c->head_dim * 2.0 * ctx; /* k and v, f16 */
}

/* End to end: prompt processing and decode of a checkpoint on one backend,
 * beside the memcpy bandwidth of this machine in the same run. */
static int bench_model(int argc, char **argv)
{
    const char *dir = NULL, *backend = NULL, *json = NULL;
    long prompt = 512, gen = 64, ctx_fill = 0, cache = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-m") && v) dir = v, i++;
        else if (!strcmp(a, "--backend") && v) backend = v, i++;
        else if (!strcmp(a, "--json") && v) json = v, i++;
        else if (!strcmp(a, "--prompt")) { if (cli_int("bench model", a, v, 1, 8192, &prompt)) return 2; i++; }
        else if (!strcmp(a, "--gen")) { if (cli_int("bench model", a, v, 2, 4096, &gen)) return 2; i++; }
        else if (!strcmp(a, "--ctx")) { if (cli_int("bench model", a, v, 0, 1 << 20, &ctx_fill)) return 2; i++; }
        else if (!strcmp(a, "--cache")) { if (cli_int("bench model", a, v, 1, 1 << 22, &cache)) return 2; i++; }
        else {
            dir = NULL;
            break;
        }
    }
    if (!dir) {
        fprintf(stderr, "usage: loom bench model -m DIR [--backend SPEC] [--prompt N] [--gen N] [--ctx N] [--cache N] [--json FILE]\n"
                        "  --prompt N  prompt tokens timed as one prefill (default 512)\n"
                        "  --gen N     tokens decoded one at a time (default 64)\n"
                        "  --ctx N     decode after N positions already in the cache (default: after the prompt)\n"
                        "  --cache N   positions the KV cache holds, as a server sizes it (default: --ctx + --gen)\n");
        return 2;
    }
    loom_device **devs = NULL;
    int n_devs = 0, rc = 1;
    loom_qwen2_model *m = NULL;
    int32_t *ids = NULL, *pos = NULL, *seq = NULL;
    double *steps = NULL;
    int32_t fill = ctx_fill > prompt ? (int32_t)ctx_fill : (int32_t)prompt, n_ctx = fill + (int32_t)gen;
    if (cache && cache < n_ctx) {
        fprintf(stderr, "loom bench model: --cache %ld cannot hold the %d positions of --ctx and --gen\n", cache, (int)n_ctx);
        return 2;
    }
    if (cache) n_ctx = (int32_t)cache;
    if (cli_select("bench model", backend, &devs, &n_devs)) return 2;
    if (loom_qwen2_model_load(dir, devs, n_devs, (int32_t)prompt, 1, n_ctx, &m)) goto fail;
    const loom_qwen2_config *c = loom_qwen2_model_config(m);
    ids = malloc((size_t)prompt * sizeof *ids), pos = malloc((size_t)prompt * sizeof *pos), seq = calloc((size_t)prompt, sizeof *seq);
    if (!ids || !pos || !seq) { loom_error(LOOM_ERR_NOMEM, "out of memory"); goto fail; }
    for (int32_t i = 0; i < prompt; i++) ids[i] = (int32_t)((rng_u32() % 150000u) % (uint32_t)c->vocab);

    /* prefill: the same prompt at positions 0..P-1, warm-up then median of 3 */
    double tp[3];
    for (int r = -1; r < 3; r++) {
        for (int32_t i = 0; i < prompt; i++) pos[i] = i;
        loom_step st = {(int32_t)prompt, pos, seq};
        double t = now_s();
        if (loom_qwen2_model_step(m, ids, &st, NULL) || loom_exec_sync(loom_qwen2_model_exec(m))) goto fail;
        if (r >= 0) tp[r] = now_s() - t;
    }
    /* fill the cache to --ctx in prompt-sized chunks (not timed) */
    for (int32_t at = (int32_t)prompt; at < fill;) {
        int32_t n = fill - at < prompt ? fill - at : (int32_t)prompt;
        for (int32_t i = 0; i < n; i++) pos[i] = at + i;
        loom_step st = {n, pos, seq};
        if (loom_qwen2_model_step(m, ids, &st, NULL)) goto fail;
        at += n;
    }
    /* decode: one token per step after `fill` positions; the logits come back each step, into
     * the host buffer generation samples from (loom_exec_view) */
    steps = malloc((size_t)gen * sizeof *steps);
    if (!steps) { loom_error(LOOM_ERR_NOMEM, "out of memory"); goto fail; }
    double td = 0;
    loom_status st = LOOM_OK;
    for (int32_t g = 0; g < gen && !st; g++) {
        pos[0] = fill + g;
        loom_step one = {1, pos, seq};
        double t = now_s();
        float *logits;
        st = loom_qwen2_model_step_view(m, &ids[g % prompt], &one, &logits);
        if (g > 0) td += steps[g - 1] = now_s() - t; /* the first step warms up */
    }
    if (st) goto fail;
    /* the spread of single steps tells a steady rate from one with stalls
     * (a host or driver hiccup shows as a long tail over a steady median) */
    double s_med = median(steps, (int)gen - 1); /* which sorts them: */
    double s_p90 = steps[(gen - 1) * 9 / 10], s_max = steps[gen - 2];

    memcpy_base mb = {malloc(MEMCPY_BYTES), malloc(MEMCPY_BYTES), MEMCPY_BYTES, device_threads()};
    double bw[5] = {0};
    if (mb.a && mb.b) {
        memset(mb.a, 1, mb.n), memset(mb.b, 2, mb.n);
        for (int r = 0; r < 5; r++) bw[r] = memcpy_once(&mb);
    }
    free(mb.a), free(mb.b);
    double p_s = median(tp, 3), bw_gbs = median(bw, 5), dec_tps = (gen - 1) / td;
    double bytes = decode_bytes(m, fill + (int32_t)gen / 2), eff = dec_tps * bytes / 1e9;
    printf("loom bench model: %s on %s (%d layers, hidden %d%s)\n", dir, loom_device_label(devs[0]), c->n_layers, c->hidden,
           c->awq ? ", AWQ" : "");
    printf("  prompt   %ld tokens in %.3f s: %.1f tok/s\n", prompt, p_s, prompt / p_s);
    printf("  decode   %ld tokens after %d positions", gen - 1, fill);
    if (cache) printf(" in a cache of %d", (int)n_ctx);
    printf(": %.2f tok/s (%.2f ms/token)\n", dec_tps, 1e3 / dec_tps);
    printf("  steps    median %.3f ms (%.2f tok/s), 90th percentile %.3f, slowest %.3f\n", 1e3 * s_med, 1 / s_med,
           1e3 * s_p90, 1e3 * s_max);
    printf("  traffic  %.1f MiB per decoded token -> %.2f GB/s\n", bytes / 1048576.0, eff);
    printf("  memcpy   %.2f GB/s (read+write, %d threads, same run); decode reaches %.2f of it\n", bw_gbs, mb.threads,
           eff / bw_gbs);
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "bench", "model");
        cJSON_AddStringToObject(j, "model", dir);
        cJSON_AddStringToObject(j, "device", loom_device_label(devs[0]));
        cJSON_AddNumberToObject(j, "prompt_tokens", (double)prompt);
        cJSON_AddNumberToObject(j, "prompt_tok_s", prompt / p_s);
        cJSON_AddNumberToObject(j, "decode_context", fill);
        cJSON_AddNumberToObject(j, "cache_positions", n_ctx);
        cJSON_AddNumberToObject(j, "decode_tok_s", dec_tps);
        cJSON_AddNumberToObject(j, "decode_step_ms_median", 1e3 * s_med);
        cJSON_AddNumberToObject(j, "decode_step_ms_p90", 1e3 * s_p90);
        cJSON_AddNumberToObject(j, "decode_step_ms_max", 1e3 * s_max);
        cJSON_AddNumberToObject(j, "bytes_per_token", bytes);
        cJSON_AddNumberToObject(j, "memcpy_gb_s", bw_gbs);
        cJSON_AddNumberToObject(j, "decode_vs_memcpy", eff / bw_gbs);
        char *txt = cJSON_Print(j);
        FILE *f = txt ? fopen(json, "w") : NULL;
        if (!f || fputs(txt, f) < 0 || fclose(f)) fprintf(stderr, "loom bench model: cannot write %s\n", json);
        cJSON_free(txt);
        cJSON_Delete(j);
    }
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "loom bench model: %s\n", loom_last_error());
done:
    free(ids), free(pos), free(seq), free(steps);
    loom_qwen2_model_free(m);
    loom_devices_close(devs, n_devs);
    return rc;
}

int loom_cmd_bench(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        printf("usage: loom bench kernels [--json FILE] [--reps N] [--quick] [--strict]\n"
               "  AWQ GEMV bandwidth vs memcpy, f32 matmul vs cblas_sgemm, on the CPU device\n"
               "  --strict: exit 1 when a target is missed\n"
               "       loom bench model -m DIR [--backend SPEC] [--prompt N] [--gen N] [--ctx N] [--json FILE]\n"
               "  prompt tok/s and decode tok/s of a checkpoint; decode traffic vs memcpy bandwidth\n");
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "kernels")) return bench_kernels(argc, argv);
    if (!strcmp(argv[1], "model")) return bench_model(argc, argv);
    fprintf(stderr, "loom bench: unknown benchmark '%s' (kernels, model)\n", argv[1]);
    return 2;
}
