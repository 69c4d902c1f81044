/* cmd_check.c — `loom check ops`: every op on one backend against the
 * float64 reference; a table, a JSON report, exit 0 iff nothing failed. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "commands.h"
#include "conformance.h"

#define DEFAULT_SEED 20240917u

static void usage(FILE *f)
{
    fprintf(f, "usage: loom check ops [--backend NAME] [--json FILE] [--quick] [--op NAME] [--seed N]\n"
               "  Runs every op on one device (the first of --backend, else LOOM_BACKEND, else the best\n"
               "  available) and compares it with the float64 reference: NMSE against a per-op,\n"
               "  per-dtype threshold. Exit status 0 iff no case failed.\n"
               "  --backend NAME  cpu, cuda, vulkan, opencl, a plugin, or NAME:N (overrides LOOM_BACKEND)\n"
               "  --json FILE     also write the report as JSON\n"
               "  --quick         small shapes only (seconds)\n"
               "  --op NAME       only this op (embed, rmsnorm, matmul, matmul_awq, rope, gqa_attn, swiglu, add)\n"
               "  --seed N        random data seed (default %u)\n",
            DEFAULT_SEED);
}

static void print_header(void)
{
    printf("%-10s %-40s %-6s %-5s %-8s %-10s %-10s %-9s %s\n", "op", "shape", "dtype", "model", "backend", "NMSE",
           "max|diff|", "threshold", "result");
}

static void print_row(const loom_check_result *r, void *user)
{
    const char *label = user;
    char nmse[16] = "-", mx[16] = "-";
    if (r->verdict != LOOM_CHECK_UNSUPPORTED && !isnan(r->nmse)) {
        snprintf(nmse, sizeof nmse, "%.2e", r->nmse);
        snprintf(mx, sizeof mx, "%.2e", r->max_abs);
    }
    printf("%-10s %-40s %-6s %-5s %-8s %-10s %-10s %-9.0e %s\n", loom_op_name(r->c.op), r->shape,
           loom_dtype_name(r->c.dtype), r->c.label, label, nmse, mx, r->threshold, loom_check_verdict_name(r->verdict));
    if (r->verdict == LOOM_CHECK_FAIL && r->message[0]) printf("    %s\n", r->message);
    fflush(stdout);
}

static cJSON *num_or_null(double v)
{
    return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull();
}

static int write_json(const char *path, const loom_check_report *rep, const char *spec, bool quick)
{
    cJSON *root = cJSON_CreateObject(), *dev = cJSON_CreateObject(), *cases = cJSON_CreateArray();
    if (!root || !dev || !cases) goto oom;
    cJSON_AddStringToObject(root, "command", "check ops");
    cJSON_AddStringToObject(root, "backend", rep->device);
    if (spec) cJSON_AddStringToObject(root, "backend_spec", spec);
    cJSON_AddStringToObject(dev, "name", rep->info.name);
    cJSON_AddStringToObject(dev, "driver", rep->info.driver);
    cJSON_AddNumberToObject(dev, "mem_total", (double)rep->info.mem_total);
    cJSON_AddNumberToObject(dev, "mem_free", (double)rep->info.mem_free);
    cJSON_AddStringToObject(dev, "details", rep->info.details);
    cJSON_AddItemToObject(root, "device", dev);
    cJSON_AddNumberToObject(root, "seed", (double)rep->seed);
    cJSON_AddBoolToObject(root, "quick", quick);
    cJSON_AddNumberToObject(root, "seconds", rep->seconds);
    cJSON_AddNumberToObject(root, "passed", rep->n_pass);
    cJSON_AddNumberToObject(root, "failed", rep->n_fail);
    cJSON_AddNumberToObject(root, "unsupported", rep->n_unsupported);
    cJSON_AddBoolToObject(root, "none_supported", rep->none_supported);
    cJSON_AddBoolToObject(root, "ok", rep->n_fail == 0);
    for (int32_t i = 0; i < rep->n_results; i++) {
        const loom_check_result *r = &rep->results[i];
        const loom_check_case *c = &r->c;
        cJSON *o = cJSON_CreateObject();
        if (!o) goto oom;
        cJSON_AddStringToObject(o, "op", loom_op_name(c->op));
        cJSON_AddStringToObject(o, "dtype", loom_dtype_name(c->dtype));
        cJSON_AddStringToObject(o, "model", c->label);
        cJSON_AddStringToObject(o, "shape", r->shape);
        cJSON_AddNumberToObject(o, "tokens", c->T);
        if (c->K) cJSON_AddNumberToObject(o, "K", (double)c->K);
        if (c->N) cJSON_AddNumberToObject(o, "N", (double)c->N);
        if (c->n_head) cJSON_AddNumberToObject(o, "n_head", c->n_head);
        if (c->n_head_kv) cJSON_AddNumberToObject(o, "n_head_kv", c->n_head_kv);
        if (c->head_dim) cJSON_AddNumberToObject(o, "head_dim", c->head_dim);
        if (c->ctx) cJSON_AddNumberToObject(o, "ctx", c->ctx);
        if (c->kv_len) cJSON_AddNumberToObject(o, "kv_len", c->kv_len);
        if (c->n_seq) cJSON_AddNumberToObject(o, "n_seq", c->n_seq);
        if (c->op == LOOM_OP_MATMUL || c->op == LOOM_OP_MATMUL_AWQ) cJSON_AddBoolToObject(o, "bias", c->bias);
        if (c->yarn) cJSON_AddNumberToObject(o, "yarn_factor", c->yarn);
        cJSON_AddStringToObject(o, "result", loom_check_verdict_name(r->verdict));
        cJSON_AddItemToObject(o, "nmse", num_or_null(r->nmse));
        cJSON_AddItemToObject(o, "max_abs_diff", num_or_null(r->max_abs));
        cJSON_AddNumberToObject(o, "threshold", r->threshold);
        cJSON_AddNumberToObject(o, "elements", (double)r->n_elems);
        cJSON_AddNumberToObject(o, "nonfinite", (double)r->n_nonfinite);
        cJSON_AddNumberToObject(o, "seconds", r->seconds);
        cJSON_AddStringToObject(o, "message", r->message);
        cJSON_AddItemToArray(cases, o);
    }
    cJSON_AddItemToObject(root, "cases", cases);
    cases = NULL;
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) goto oom2;
    FILE *f = fopen(path, "w");
    int bad = !f || fputs(text, f) < 0 || fputc('\n', f) < 0;
    if (f && fclose(f)) bad = 1;
    free(text);
    if (bad) {
        fprintf(stderr, "loom check: cannot write %s: %s\n", path, strerror(errno));
        return 1;
    }
    return 0;
oom:
    cJSON_Delete(root);
    cJSON_Delete(cases);
oom2:
    fprintf(stderr, "loom check: out of memory writing the JSON report\n");
    return 1;
}

/* --name VALUE or --name=VALUE; *i advances past what it used. */
static const char *opt_value(int argc, char **argv, int *i, const char *name, bool *bad)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n)) return NULL;
    if (argv[*i][n] == '=') return argv[*i] + n + 1;
    if (argv[*i][n]) return NULL;
    if (*i + 1 >= argc) {
        fprintf(stderr, "loom check: %s needs a value\n", name);
        *bad = true;
        return NULL;
    }
    return argv[++*i];
}

static int check_ops(int argc, char **argv)
{
    const char *backend = NULL, *json = NULL, *op = NULL, *v;
    bool quick = false, bad = false;
    uint64_t seed = DEFAULT_SEED;
    for (int i = 2; i < argc && !bad; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--quick")) {
            quick = true;
        } else if ((v = opt_value(argc, argv, &i, "--backend", &bad))) {
            backend = v;
        } else if ((v = opt_value(argc, argv, &i, "--json", &bad))) {
            json = v;
        } else if ((v = opt_value(argc, argv, &i, "--op", &bad))) {
            loom_op o;
            if (loom_op_parse(v, &o)) {
                fprintf(stderr, "loom check: unknown op '%s' (embed, rmsnorm, matmul, matmul_awq, rope, gqa_attn, swiglu, add)\n", v);
                return 2;
            }
            op = v;
        } else if ((v = opt_value(argc, argv, &i, "--seed", &bad))) {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 0);
            if (!*v || *end || errno || *v == '-') {
                fprintf(stderr, "loom check: --seed wants a non-negative integer, got '%s'\n", v);
                return 2;
            }
            seed = s;
        } else if (!bad) {
            fprintf(stderr, "loom check ops: unknown argument '%s' (see loom check ops --help)\n", argv[i]);
            return 2;
        }
    }
    if (bad) return 2;
    if (backend && !*backend) {
        fprintf(stderr, "loom check: --backend needs a name\n");
        return 2;
    }

    loom_device **devs = NULL;
    int n_devs = 0;
    if (loom_select(backend, &devs, &n_devs) || n_devs < 1) {
        fprintf(stderr, "loom check: %s\n", loom_last_error());
        return 2;
    }
    const char *label = loom_device_label(devs[0]);
    printf("loom check ops: %s, seed %llu%s\n", label, (unsigned long long)seed, quick ? ", quick" : "");
    print_header();
    loom_check_opts opts = {.seed = seed, .quick = quick, .op = op, .progress = print_row, .user = (void *)label};
    loom_check_report rep;
    loom_status st = loom_check_ops(devs[0], &opts, &rep);
    int rc;
    if (st) {
        fprintf(stderr, "loom check: %s\n", loom_last_error());
        rc = st == LOOM_ERR_INVALID ? 2 : 1;
    } else {
        if (rep.none_supported)
            printf("FAIL: %s supports none of these %d cases\n", rep.device, rep.n_results);
        printf("%d passed, %d failed, %d unsupported (%.1f s)\n", rep.n_pass, rep.n_fail, rep.n_unsupported, rep.seconds);
        rc = rep.n_fail ? 1 : 0;
        if (json && write_json(json, &rep, backend, quick)) rc = 1;
    }
    loom_check_report_free(&rep);
    loom_devices_close(devs, n_devs);
    return rc;
}

int loom_cmd_check(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "ops")) return check_ops(argc, argv);
    if (!strcmp(argv[1], "model")) return loom_cmd_check_model(argc - 1, argv + 1);
    fprintf(stderr, "loom check: unknown subcommand '%s' (available: ops, model)\n", argv[1]);
    return 2;
}
