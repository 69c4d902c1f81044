/* test_golden.c — Qwen2 logits against Hugging Face transformers.
 *
 * tests/data/golden/<case>/ holds a checkpoint that transformers itself made
 * and saved, the token ids, and the logits transformers computed in float64
 * (tests/golden/make_golden.py). Every available backend must reproduce them:
 * NMSE <= 1e-4 and top-1 agreement >= 98% where the reference's top-2 margin
 * exceeds 0.01. Prints one line per case and backend, like `loom check`. */
#include <check.h>

#include "check_main.h"
#include <dirent.h>
#include <math.h>
#include <stdlib.h>

#include "checkpoint.h"

#define MAX_NMSE 1e-4
#define MIN_TOP1 0.98
#define MARGIN   0.01

static int argmax(const float *x, int n, double *margin)
{
    int best = 0, second = -1;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) second = best, best = i;
        else if (second < 0 || x[i] > x[second]) second = i;
    if (margin) *margin = second >= 0 ? (double)x[best] - x[second] : INFINITY;
    return best;
}

/* One case on one device list; returns 1 if it passes. */
static int run_case(const char *dir, const char *spec)
{
    char path[1024];
    size_t len;
    ck_assert_int_lt(snprintf(path, sizeof path, "%s/tokens.txt", dir), (int)sizeof path);
    char *text = loom_test_read_file(path, &len);
    ck_assert_msg(text != NULL, "cannot read %s", path);
    int32_t ids[1024], n = 0;
    for (char *p = text; *p && n < 1024;) {
        ids[n++] = (int32_t)strtol(p, &p, 10);
        while (*p == ',' || *p == '\n') p++;
    }
    free(text);
    ck_assert_int_lt(snprintf(path, sizeof path, "%s/logits.f32", dir), (int)sizeof path);
    float *ref = (float *)loom_test_read_file(path, &len);
    ck_assert_ptr_nonnull(ref);
    loom_device **devs;
    int nd;
    ck_assert_msg(loom_select(spec, &devs, &nd) == LOOM_OK, "%s", loom_last_error());
    loom_qwen2_model *m;
    ck_assert_msg(loom_qwen2_model_load(dir, devs, nd, n, 1, n, &m) == LOOM_OK, "%s: %s", dir, loom_last_error());
    int V = loom_qwen2_model_config(m)->vocab;
    ck_assert_uint_eq(len, (size_t)n * V * sizeof(float));
    float *out = malloc(len);
    int32_t pos[1024], seq[1024] = {0};
    for (int t = 0; t < n; t++) pos[t] = t;
    loom_step step = {n, pos, seq};
    ck_assert_msg(loom_qwen2_model_step(m, ids, &step, out) == LOOM_OK, "%s", loom_last_error());
    double se = 0, ss = 0, maxd = 0;
    int agree = 0, counted = 0;
    for (int64_t i = 0; i < (int64_t)n * V; i++) {
        double d = (double)out[i] - ref[i];
        se += d * d, ss += (double)ref[i] * ref[i];
        if (!(fabs(d) <= maxd)) maxd = fabs(d); /* NaN makes maxd NaN: fails below */
    }
    for (int t = 0; t < n; t++) {
        double margin;
        int r = argmax(ref + (size_t)t * V, V, &margin);
        if (margin <= MARGIN) continue;
        counted++;
        agree += argmax(out + (size_t)t * V, V, NULL) == r;
    }
    double nmse = se / ss, top1 = counted ? (double)agree / counted : 1.0;
    int ok = nmse <= MAX_NMSE && top1 >= MIN_TOP1 && !isnan(maxd);
    const char *name = strrchr(dir, '/') ? strrchr(dir, '/') + 1 : dir;
    printf("%-24s %-8s tokens %4d  NMSE %.2e  max|diff| %.2e  top-1 %5.1f%% of %d  %s\n", name,
           loom_device_label(devs[0]), n, nmse, maxd, 100 * top1, counted, ok ? "PASS" : "FAIL");
    fflush(stdout);
    free(out), free(ref);
    loom_qwen2_model_free(m);
    loom_devices_close(devs, nd);
    return ok;
}

START_TEST(golden_every_backend)
{
    DIR *d = opendir(GOLDEN_DIR);
    ck_assert_msg(d != NULL, "no %s", GOLDEN_DIR);
    char cases[16][512];
    int n_cases = 0;
    for (struct dirent *e; (e = readdir(d)) && n_cases < 16;)
        if (e->d_name[0] != '.') snprintf(cases[n_cases++], 512, "%s/%s", GOLDEN_DIR, e->d_name);
    closedir(d);
    ck_assert_int_ge(n_cases, 4);
    int failed = 0, runs = 0;
    for (int b = 0; b < loom_backend_count(); b++) {
        loom_backend *be = loom_backend_at(b);
        if (!loom_backend_available(be)) continue;
        char spec[80];
        snprintf(spec, sizeof spec, "%s:0", loom_backend_name(be));
        for (int c = 0; c < n_cases; c++, runs++) failed += !run_case(cases[c], spec);
    }
    ck_assert_int_ge(runs, n_cases); /* the CPU at least */
    ck_assert_msg(failed == 0, "%d of %d golden runs failed", failed, runs);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("golden");
    TCase *tc = tcase_create("golden");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, golden_every_backend);
    suite_add_tcase(s, tc);
    return loom_test_run(s);
}
