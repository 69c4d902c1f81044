/* cmd_check_model.c — `loom check model`: the same tokens through every
 * listed backend and through the float64 reference; per backend the logits
 * NMSE, max |diff|, top-1 agreement, KL divergence and whether greedy
 * decoding matches; exit 1 when a backend is outside tolerance. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "checkpoint.h"
#include "cli.h"
#include "commands.h"
#include "refexec.h"

/* Model-level tolerances, one place (per-op ones live in graph/conformance.c). */
static const struct {
    double max_nmse;   /* logits, all positions */
    double max_kl;     /* mean KL(reference || backend) per position, nats */
    double min_top1;   /* top-1 agreement where the reference's top-2 margin > margin */
    double margin;     /* a greedy mismatch counts only where the reference's margin exceeds this */
} tol = {1e-4, 1e-3, 0.98, 0.01};

typedef struct {
    int32_t *seq;    /* greedy tokens */
    float   *margin; /* reference top-2 margin at each greedy step */
    float   *logits; /* prefill logits [T][V] */
    float   *dec;    /* logits of each greedy step [n_gen - 1][V]: the decode path's own kernels */
} run_out;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int32_t argmax(const float *x, int32_t n, float *margin)
{
    int32_t b = 0, s = -1;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[b]) s = b, b = i;
        else if (s < 0 || x[i] > x[s]) s = i;
    if (margin) *margin = s >= 0 ? x[b] - x[s] : INFINITY;
    return b;
}

/* One step through either the reference or a compiled model. */
typedef struct {
    loom_ref_exec    *ref;
    loom_qwen2_graph *rg;
    loom_qwen2_model *m;
} stepper;

static loom_status step_logits(stepper *s, const int32_t *ids, const loom_step *st, float *logits, int32_t V)
{
    loom_status e;
    if (s->m && st->n_tokens == 1) { /* decode reads as generation does, into the model's host buffer */
        float *view;
        if (!(e = loom_qwen2_model_step_view(s->m, ids, st, &view))) memcpy(logits, view, (size_t)V * 4);
        return e;
    }
    if (s->m) return loom_qwen2_model_step(s->m, ids, st, logits);
    if ((e = loom_ref_exec_write(s->ref, s->rg->ids, ids, (size_t)st->n_tokens * 4)) || (e = loom_ref_exec_run(s->ref, st)))
        return e;
    return loom_ref_exec_read(s->ref, s->rg->logits, logits, (size_t)st->n_tokens * V * 4);
}

/* Prefill the prompt (all logits kept), then greedy-decode n_gen tokens. */
static loom_status run_model(stepper *s, const int32_t *prompt, int32_t T, int32_t n_gen, int32_t V, run_out *o)
{
    int32_t pos[4096], seq[4096] = {0};
    for (int32_t i = 0; i < T; i++) pos[i] = i;
    loom_step st = {T, pos, seq};
    loom_status e = step_logits(s, prompt, &st, o->logits, V);
    const float *last = o->logits + (size_t)(T - 1) * V; /* the logits the next token is picked from */
    for (int32_t g = 0; g < n_gen && !e; g++) {
        o->seq[g] = argmax(last, V, &o->margin[g]);
        if (g + 1 == n_gen) break;
        pos[0] = T + g;
        loom_step one = {1, pos, seq};
        float *dec = o->dec + (size_t)g * V;
        e = step_logits(s, &o->seq[g], &one, dec, V);
        last = dec;
    }
    return e;
}

typedef struct {
    char   label[64];
    bool   ok, ran;
    char   error[256];
    double nmse, dec_nmse, max_abs, top1, kl, seconds;
    int    greedy_match;  /* tokens equal before the first mismatch */
    bool   greedy_ok;
} verdict;

static double nmse_of(const float *got, const float *ref, size_t n)
{
    double se = 0, ss = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - ref[i];
        se += d * d, ss += (double)ref[i] * ref[i];
    }
    return ss > 0 ? se / ss : se > 0 ? INFINITY : 0;
}

static void compare(const run_out *ref, const run_out *got, int32_t T, int32_t V, int32_t n_gen, verdict *v)
{
    double kl = 0;
    int agree = 0, counted = 0;
    v->max_abs = 0;
    for (int32_t t = 0; t < T; t++) {
        const float *a = got->logits + (size_t)t * V, *b = ref->logits + (size_t)t * V;
        double ma = -INFINITY, mb = -INFINITY, za = 0, zb = 0;
        for (int32_t i = 0; i < V; i++) {
            double d = (double)a[i] - b[i];
            if (!(fabs(d) <= v->max_abs)) v->max_abs = fabs(d);
            if (a[i] > ma) ma = a[i];
            if (b[i] > mb) mb = b[i];
        }
        for (int32_t i = 0; i < V; i++) za += exp(a[i] - ma), zb += exp(b[i] - mb);
        for (int32_t i = 0; i < V; i++) { /* KL(p_ref || p_backend) */
            double lp = b[i] - mb - log(zb), lq = a[i] - ma - log(za);
            kl += exp(lp) * (lp - lq);
        }
        float margin;
        int32_t r = argmax(b, V, &margin);
        if (margin > tol.margin) counted++, agree += argmax(a, V, NULL) == r;
    }
    v->nmse = nmse_of(got->logits, ref->logits, (size_t)T * V);
    v->kl = kl / T;
    v->top1 = counted ? (double)agree / counted : 1;
    v->greedy_match = 0;
    while (v->greedy_match < n_gen && got->seq[v->greedy_match] == ref->seq[v->greedy_match]) v->greedy_match++;
    v->greedy_ok = v->greedy_match == n_gen || ref->margin[v->greedy_match] <= tol.margin;
    /* decode steps whose tokens so far agree (step g consumed seq[g]) */
    int32_t steps = v->greedy_match < n_gen - 1 ? v->greedy_match : n_gen - 1;
    v->dec_nmse = nmse_of(got->dec, ref->dec, (size_t)steps * V);
    v->ok = v->nmse <= tol.max_nmse && v->dec_nmse <= tol.max_nmse && v->kl <= tol.max_kl && v->top1 >= tol.min_top1 &&
            v->greedy_ok && !isnan(v->max_abs);
}

static void usage(void)
{
    fprintf(stderr, "usage: loom check model -m DIR [--backends a,b,c] [--tokens 1,2,3 | --prompt-len N] [-n N]\n"
                    "                        [--json FILE] [--seed S]\n"
                    "  Runs the same tokens through the float64 reference and every listed backend (default:\n"
                    "  every available one): logits NMSE <= %g, mean KL <= %g, top-1 agreement >= %.0f%%\n"
                    "  (where the reference's top-2 margin > %g) and greedy decoding of N tokens (default 32),\n"
                    "  whose steps' logits (while the tokens agree) are held to the same NMSE.\n",
            tol.max_nmse, tol.max_kl, 100 * tol.min_top1, tol.margin);
}

int loom_cmd_check_model(int argc, char **argv)
{
    const char *dir = NULL, *backends = NULL, *json = NULL, *tokens = NULL;
    long n_gen = 32, prompt_len = 16, seed = 7;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-m") && v) dir = v, i++;
        else if (!strcmp(a, "--backends") && v) backends = v, i++;
        else if (!strcmp(a, "--json") && v) json = v, i++;
        else if (!strcmp(a, "--tokens") && v) tokens = v, i++;
        else if (!strcmp(a, "-n")) { if (cli_int("check model", a, v, 1, 1024, &n_gen)) return 2; i++; }
        else if (!strcmp(a, "--prompt-len")) { if (cli_int("check model", a, v, 1, 2048, &prompt_len)) return 2; i++; }
        else if (!strcmp(a, "--seed")) { if (cli_int("check model", a, v, 0, INT32_MAX, &seed)) return 2; i++; }
        else { usage(); return 2; }
    }
    if (!dir) { usage(); return 2; }

    int rc = 1;
    loom_qwen2_ckpt *ck = NULL;
    loom_qwen2_graph rg = {0};
    loom_ref_exec *ref = NULL;
    int32_t *prompt = NULL, T = 0;
    run_out ro = {0};
    verdict vs[16];
    int nv = 0;
    if (loom_qwen2_ckpt_open(dir, &ck)) goto fail;
    const loom_qwen2_config *c = loom_qwen2_ckpt_config(ck);
    int32_t V = c->vocab;
    if (tokens) {
        if (cli_tokens("check model", tokens, &prompt, &T)) goto done;
        for (int32_t i = 0; i < T; i++)
            if (prompt[i] >= V) { loom_error(LOOM_ERR_INVALID, "token %d is outside the vocabulary (%d)", prompt[i], V); goto fail; }
    } else { /* a fixed pseudo-random prompt */
        T = (int32_t)prompt_len;
        if (!(prompt = malloc((size_t)T * sizeof *prompt))) goto fail;
        uint64_t x = (uint64_t)seed * 0x9e3779b97f4a7c15ull + 1;
        for (int32_t i = 0; i < T; i++) x ^= x << 13, x ^= x >> 7, x ^= x << 17, prompt[i] = (int32_t)(x % (uint64_t)(V < 151643 ? V : 151643));
    }
    if (T > 4096 - n_gen) { loom_error(LOOM_ERR_INVALID, "prompt of %d tokens is too long for check model", T); goto fail; }
    int32_t ctx = T + (int32_t)n_gen;
    ro.seq = malloc((size_t)n_gen * sizeof *ro.seq);
    ro.margin = malloc((size_t)n_gen * sizeof *ro.margin);
    ro.logits = malloc((size_t)T * V * sizeof *ro.logits);
    ro.dec = malloc((size_t)n_gen * V * sizeof *ro.dec);
    if (!ro.seq || !ro.margin || !ro.logits || !ro.dec) { loom_error(LOOM_ERR_NOMEM, "out of memory"); goto fail; }

    double t0 = now_s();
    fprintf(stderr, "loom check model: float64 reference, %d prompt tokens + %ld greedy...\n", T, n_gen);
    loom_weight_loader awq = loom_qwen2_ckpt_loader(ck);
    if (loom_qwen2_build(c, T, 1, ctx, LOOM_F16, loom_qwen2_ckpt_weight, ck, &awq, &rg) || loom_ref_exec_create(rg.g, &ref))
        goto fail;
    stepper rs = {ref, &rg, NULL};
    if (run_model(&rs, prompt, T, (int32_t)n_gen, V, &ro)) goto fail;
    double ref_s = now_s() - t0;

    /* which backends: the list given, else every available one */
    char names[16][64];
    int nb = 0;
    if (backends) {
        const char *p = backends;
        while (*p && nb < 16) {
            size_t l = strcspn(p, ",");
            snprintf(names[nb++], sizeof names[0], "%.*s", (int)l, p);
            p += l + (p[l] == ',');
        }
    } else {
        for (int b = 0; b < loom_backend_count() && nb < 16; b++)
            if (loom_backend_available(loom_backend_at(b))) snprintf(names[nb++], sizeof names[0], "%s", loom_backend_name(loom_backend_at(b)));
    }
    run_out got = {malloc((size_t)n_gen * sizeof *got.seq), malloc((size_t)n_gen * sizeof *got.margin),
                   malloc((size_t)T * V * sizeof *got.logits), malloc((size_t)n_gen * V * sizeof *got.dec)};
    for (int b = 0; b < nb; b++) {
        verdict *v = &vs[nv++];
        memset(v, 0, sizeof *v);
        snprintf(v->label, sizeof v->label, "%.60s", names[b]);
        loom_device **devs = NULL;
        int nd = 0;
        loom_qwen2_model *m = NULL;
        double t1 = now_s();
        if (!got.seq || !got.margin || !got.logits || !got.dec) loom_error(LOOM_ERR_NOMEM, "out of memory");
        else if (!loom_select(names[b], &devs, &nd) && !loom_qwen2_model_load(dir, devs, nd, T, 1, ctx, &m)) {
            snprintf(v->label, sizeof v->label, "%.60s", loom_device_label(devs[0]));
            stepper ms = {NULL, NULL, m};
            if (!run_model(&ms, prompt, T, (int32_t)n_gen, V, &got)) v->ran = true;
        }
        if (v->ran) compare(&ro, &got, T, V, (int32_t)n_gen, v);
        else snprintf(v->error, sizeof v->error, "%s", loom_last_error());
        v->seconds = now_s() - t1;
        loom_qwen2_model_free(m);
        loom_devices_close(devs, nd);
    }
    free(got.seq), free(got.margin), free(got.logits), free(got.dec);

    printf("%-12s %-10s %-10s %-10s %-9s %-10s %-14s %s\n", "backend", "NMSE", "dec NMSE", "max|diff|", "top-1", "KL",
           "greedy", "result");
    printf("%-12s %-10s %-10s %-10s %-9s %-10s %-14s %.1f s\n", "reference", "-", "-", "-", "-", "-", "(float64)", ref_s);
    int fails = 0;
    for (int i = 0; i < nv; i++) {
        verdict *v = &vs[i];
        fails += !v->ok;
        if (!v->ran) {
            printf("%-12s FAIL: %s\n", v->label, v->error);
            continue;
        }
        char greedy[32];
        snprintf(greedy, sizeof greedy, "%d/%ld%s", v->greedy_match, n_gen, v->greedy_ok ? "" : "!");
        char top1[16];
        snprintf(top1, sizeof top1, "%.1f%%", 100 * v->top1);
        printf("%-12s %-10.2e %-10.2e %-10.2e %-9s %-10.2e %-14s %s (%.1f s)\n", v->label, v->nmse, v->dec_nmse, v->max_abs, top1,
               v->kl > 0 ? v->kl : 0.0, greedy, v->ok ? "PASS" : "FAIL", v->seconds);
    }
    printf("%d passed, %d failed (tolerances: NMSE <= %g, KL <= %g, top-1 >= %.0f%%, greedy %ld tokens)\n", nv - fails,
           fails, tol.max_nmse, tol.max_kl, 100 * tol.min_top1, n_gen);
    if (json) {
        cJSON *j = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(j, "backends");
        cJSON_AddStringToObject(j, "model", dir);
        cJSON_AddNumberToObject(j, "prompt_tokens", T);
        cJSON_AddNumberToObject(j, "greedy_tokens", (double)n_gen);
        for (int i = 0; i < nv; i++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "backend", vs[i].label);
            cJSON_AddBoolToObject(o, "pass", vs[i].ok);
            if (!vs[i].ran) cJSON_AddStringToObject(o, "error", vs[i].error);
            else {
                cJSON_AddNumberToObject(o, "nmse", vs[i].nmse);
                cJSON_AddNumberToObject(o, "decode_nmse", vs[i].dec_nmse);
                cJSON_AddNumberToObject(o, "max_abs_diff", vs[i].max_abs);
                cJSON_AddNumberToObject(o, "top1_agreement", vs[i].top1);
                cJSON_AddNumberToObject(o, "kl", vs[i].kl);
                cJSON_AddNumberToObject(o, "greedy_match", vs[i].greedy_match);
            }
            cJSON_AddItemToArray(arr, o);
        }
        char *txt = cJSON_Print(j);
        FILE *f = fopen(json, "w");
        if (!f || !txt || fputs(txt, f) < 0) fprintf(stderr, "loom check model: cannot write %s\n", json), fails++;
        if (f) fclose(f);
        free(txt);
        cJSON_Delete(j);
    }
    rc = fails || !nv ? 1 : 0;
    goto done;
fail:
    fprintf(stderr, "loom check model: %s\n", loom_last_error());
done:
    loom_ref_exec_destroy(ref);
    loom_graph_destroy(rg.g);
    loom_qwen2_ckpt_close(ck);
    free(prompt), free(ro.seq), free(ro.margin), free(ro.logits), free(ro.dec);
    return rc;
}
