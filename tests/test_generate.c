/* test_generate.c — the sampler and the generation loop: determinism per
 * seed, each filter's effect, penalties, stop strings, context limits. */
#include <check.h>
#include <math.h>
#include <stdlib.h>

#include "check_main.h"
#include "generate.h"

enum { V = 64 };

static void random_logits(float *l, unsigned seed)
{
    srand(seed);
    for (int i = 0; i < V; i++) l[i] = (float)rand() / RAND_MAX * 6 - 3;
}

static int32_t sample(loom_sampler_params p, const float *logits, const int32_t *hist, size_t n)
{
    loom_sampler *s;
    ck_assert_int_eq(loom_sampler_create(&p, V, &s), LOOM_OK);
    float l[V];
    memcpy(l, logits, sizeof l);
    int32_t id = loom_sampler_sample(s, l, hist, n);
    loom_sampler_free(s);
    return id;
}

static int32_t argmax(const float *l)
{
    int32_t b = 0;
    for (int i = 1; i < V; i++)
        if (l[i] > l[b]) b = i;
    return b;
}

START_TEST(greedy_and_filters_pick_the_best)
{
    float l[V];
    random_logits(l, 1);
    loom_sampler_params p = loom_sampler_defaults();
    ck_assert_int_eq(sample(p, l, NULL, 0), argmax(l)); /* temperature 0 */
    p.temperature = 1.0f;
    p.top_k = 1;
    ck_assert_int_eq(sample(p, l, NULL, 0), argmax(l));
    p.top_k = 0, p.top_p = 1e-6f;
    ck_assert_int_eq(sample(p, l, NULL, 0), argmax(l));
    p.top_p = 1, p.min_p = 0.999f;
    ck_assert_int_eq(sample(p, l, NULL, 0), argmax(l));
}
END_TEST

START_TEST(same_seed_same_tokens)
{
    float l[V];
    random_logits(l, 2);
    loom_sampler_params p = loom_sampler_defaults();
    p.temperature = 1.5f; /* flat enough that seeds matter */
    int32_t a[32], b[32], c[32];
    for (int run = 0; run < 3; run++) {
        p.seed = run == 2 ? 99 : 7;
        loom_sampler *s;
        ck_assert_int_eq(loom_sampler_create(&p, V, &s), LOOM_OK);
        for (int i = 0; i < 32; i++) {
            float x[V];
            memcpy(x, l, sizeof x);
            (run == 0 ? a : run == 1 ? b : c)[i] = loom_sampler_sample(s, x, NULL, 0);
        }
        loom_sampler_free(s);
    }
    ck_assert_mem_eq(a, b, sizeof a);
    ck_assert(memcmp(a, c, sizeof a) != 0); /* 32 draws from a flat distribution */
    int distinct = 0;
    for (int i = 0; i < 32; i++) distinct += a[i] != a[0];
    ck_assert_int_gt(distinct, 0);
}
END_TEST

START_TEST(top_k_stays_in_the_top)
{
    float l[V];
    random_logits(l, 3);
    float sorted[V];
    memcpy(sorted, l, sizeof sorted);
    for (int i = 0; i < V; i++) /* selection sort, descending */
        for (int j = i + 1; j < V; j++)
            if (sorted[j] > sorted[i]) { float t = sorted[i]; sorted[i] = sorted[j]; sorted[j] = t; }
    loom_sampler_params p = loom_sampler_defaults();
    p.temperature = 5.0f, p.top_k = 3;
    for (uint64_t seed = 0; seed < 200; seed++) {
        p.seed = seed;
        ck_assert_float_ge(l[sample(p, l, NULL, 0)], sorted[2]);
    }
}
END_TEST

START_TEST(penalties)
{
    float l[V];
    for (int i = 0; i < V; i++) l[i] = -5;
    l[10] = 2.0f, l[11] = 1.9f;
    int32_t hist[] = {10, 10, 3};
    loom_sampler_params p = loom_sampler_defaults();
    ck_assert_int_eq(sample(p, l, hist, 3), 10);
    p.repetition_penalty = 1.5f; /* 2.0 / 1.5 < 1.9 */
    ck_assert_int_eq(sample(p, l, hist, 3), 11);
    p = loom_sampler_defaults();
    p.frequency_penalty = 0.1f; /* 2.0 - 2 x 0.1 < 1.9 */
    ck_assert_int_eq(sample(p, l, hist, 3), 11);
    p = loom_sampler_defaults();
    p.presence_penalty = 0.05f; /* 2.0 - 0.05 > 1.9: presence counts once */
    ck_assert_int_eq(sample(p, l, hist, 3), 10);
    p.penalty_last_n = 1; /* only token 3 is in the window */
    p.repetition_penalty = 1.5f;
    ck_assert_int_eq(sample(p, l, hist, 3), 10);
}
END_TEST

START_TEST(bad_params)
{
    loom_sampler_params p = loom_sampler_defaults();
    p.temperature = -1;
    ck_assert_int_eq(loom_sampler_check(&p), LOOM_ERR_INVALID);
    p = loom_sampler_defaults(), p.top_p = 0;
    ck_assert_int_eq(loom_sampler_check(&p), LOOM_ERR_INVALID);
    p = loom_sampler_defaults(), p.min_p = 1;
    ck_assert_int_eq(loom_sampler_check(&p), LOOM_ERR_INVALID);
    p = loom_sampler_defaults(), p.repetition_penalty = 0;
    ck_assert_int_eq(loom_sampler_check(&p), LOOM_ERR_INVALID);
    p = loom_sampler_defaults(), p.top_k = -2;
    ck_assert_int_eq(loom_sampler_check(&p), LOOM_ERR_INVALID);
    p = loom_sampler_defaults(), p.temperature = NAN;
    ck_assert_int_eq(loom_sampler_check(&p), LOOM_ERR_INVALID);
}
END_TEST

/* ---- the generation loop, on a golden checkpoint (vocab 256) and the Qwen tokenizer ---- */
typedef struct {
    char text[4096];
    size_t len;
} collected;

static bool collect(void *ud, int32_t id, const char *text, size_t len)
{
    collected *c = ud;
    if (c->len + len < sizeof c->text) memcpy(c->text + c->len, text, len), c->len += len;
    return true;
}

static loom_device **devs; /* the CPU device, open while a model uses it */
static int            n_devs;

static loom_qwen2_model *load(int32_t n_ctx)
{
    if (!devs) ck_assert_int_eq(loom_select("cpu", &devs, &n_devs), LOOM_OK);
    loom_qwen2_model *m;
    ck_assert_msg(loom_qwen2_model_load(GOLDEN_DIR "/f32-untied-gqa4", devs, n_devs, 8, 1, n_ctx, &m) == LOOM_OK, "%s",
                  loom_last_error());
    return m;
}

static loom_tokenizer *tokenizer(void)
{
    loom_tokenizer *t;
    ck_assert_int_eq(loom_tokenizer_load(TOKENIZER, &t), LOOM_OK);
    return t;
}

START_TEST(generation_is_deterministic_and_stops)
{
    loom_qwen2_model *m = load(64);
    loom_tokenizer *tok = tokenizer();
    int32_t prompt[] = {5, 77, 200, 31, 9, 40, 12, 250, 3, 90, 17}; /* 11 > 8: prefill in two chunks */
    loom_gen_params gp = {.max_new = 24, .sampler = loom_sampler_defaults()};
    gp.sampler.temperature = 0.9f, gp.sampler.seed = 5;
    gp.ignore_eos = true;
    int32_t a[24], b[24];
    collected ca = {0}, cb = {0};
    loom_gen_stats st;
    ck_assert_msg(loom_generate(m, tok, prompt, 11, &gp, collect, &ca, a, &st) == LOOM_OK, "%s", loom_last_error());
    ck_assert_int_eq(st.n_generated, 24);
    ck_assert_int_eq(st.stop, LOOM_STOP_LENGTH);
    loom_qwen2_model_free(m);
    m = load(64); /* a fresh cache: the same seed gives the same tokens */
    ck_assert_int_eq(loom_generate(m, tok, prompt, 11, &gp, collect, &cb, b, &st), LOOM_OK);
    ck_assert_mem_eq(a, b, sizeof a);
    ck_assert_uint_eq(ca.len, cb.len);
    ck_assert_mem_eq(ca.text, cb.text, ca.len);
    /* the streamed text is exactly the detokenized ids */
    char *text;
    size_t len;
    ck_assert_int_eq(loom_detokenize(tok, a, 24, 0, &text, &len), LOOM_OK);
    ck_assert_uint_eq(len, ca.len);
    ck_assert_mem_eq(text, ca.text, len);

    /* a stop string from the middle of that text: output ends right before it */
    ck_assert_uint_gt(len, 6);
    {
        char stop[4] = {0};
        size_t at = len / 2;
        memcpy(stop, text + at, 3);
        const char *first = strstr(text, stop);
        const char *stops[] = {stop};
        gp.stop = stops, gp.n_stop = 1;
        collected cc = {0};
        loom_qwen2_model_free(m);
        m = load(64);
        ck_assert_int_eq(loom_generate(m, tok, prompt, 11, &gp, collect, &cc, NULL, &st), LOOM_OK);
        ck_assert_int_eq(st.stop, LOOM_STOP_STRING);
        ck_assert_uint_eq(cc.len, (size_t)(first - text));
        ck_assert_mem_eq(cc.text, text, cc.len);
    }
    free(text);
    loom_tokenizer_free(tok);
    loom_qwen2_model_free(m);
}
END_TEST

START_TEST(context_limits)
{
    loom_qwen2_model *m = load(16);
    int32_t prompt[16] = {1, 2, 3};
    loom_gen_params gp = {.max_new = 100, .sampler = loom_sampler_defaults(), .ignore_eos = true};
    loom_gen_stats st;
    ck_assert_int_eq(loom_generate(m, NULL, prompt, 16, &gp, NULL, NULL, NULL, &st), LOOM_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(loom_last_error(), "context"));
    ck_assert_int_eq(loom_generate(m, NULL, prompt, 10, &gp, NULL, NULL, NULL, &st), LOOM_OK);
    ck_assert_int_eq(st.stop, LOOM_STOP_CONTEXT);
    ck_assert_int_eq(st.n_generated, 6); /* positions 10..15 */
    int32_t bad[2] = {1, 100000};
    ck_assert_int_eq(loom_generate(m, NULL, bad, 2, &gp, NULL, NULL, NULL, &st), LOOM_ERR_INVALID);
    loom_qwen2_model_free(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("generate");
    TCase *tc = tcase_create("sampler");
    tcase_add_test(tc, greedy_and_filters_pick_the_best);
    tcase_add_test(tc, same_seed_same_tokens);
    tcase_add_test(tc, top_k_stays_in_the_top);
    tcase_add_test(tc, penalties);
    tcase_add_test(tc, bad_params);
    suite_add_tcase(s, tc);
    TCase *g = tcase_create("generate");
    tcase_set_timeout(g, 120);
    tcase_add_test(g, generation_is_deterministic_and_stops);
    tcase_add_test(g, context_limits);
    suite_add_tcase(s, g);
    return loom_test_run(s);
}
