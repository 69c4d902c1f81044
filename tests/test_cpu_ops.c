/* test_cpu_ops.c — the float64 reference against hand-computed values, the
 * checker's ability to fail, and every CPU op against the reference (quick
 * conformance cases). */
#include <check.h>

#include "check_main.h"
#include <math.h>
#include <stdlib.h>

#include "awq.h"
#include "conformance.h"
#include "reference.h"

/* ---- helpers: a node over host tensors -------------------------------------- */
static loom_tensor tensor(loom_dtype dt, int32_t ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3)
{
    loom_tensor t = {.name = "t", .dtype = dt, .ndim = ndim, .shape = {d0, d1, d2, d3}};
    return t;
}

static loom_status run_ref(loom_op op, loom_tensor *const *src, int32_t n_src, const loom_op_params *p, int32_t T,
                           const int32_t *pos, const int32_t *seq, const void *const *data, double *dst)
{
    loom_node n = {.op = op, .n_src = n_src};
    if (p) n.p = *p;
    for (int32_t i = 0; i < n_src; i++) n.src[i] = src[i];
    static const int32_t zeros[64];
    loom_step step = {.n_tokens = T, .pos = pos ? pos : zeros, .seq = seq ? seq : zeros};
    return loom_ref_node(&n, &step, data, dst);
}

#define NEAR(a, b, tol) ck_assert_msg(fabs((double)(a) - (double)(b)) <= (tol), "%s = %.12g, expected %.12g", #a, (double)(a), (double)(b))

/* ---- reference sanity, values worked out by hand ------------------------------ */
START_TEST(ref_rmsnorm_known)
{
    /* x = (1, 2, 3, 4): mean of squares 30/4 = 7.5, 1/sqrt(7.5) = 0.3651483716701107 */
    float x[4] = {1, 2, 3, 4};
    uint16_t w16[4] = {loom_f32_to_f16(1), loom_f32_to_f16(1), loom_f32_to_f16(2), loom_f32_to_f16(0.5f)};
    loom_tensor tx = tensor(LOOM_F32, 2, 1, 4, 0, 0), tw = tensor(LOOM_F16, 1, 4, 0, 0, 0);
    loom_op_params p = {.eps = 1e-30f};
    double y[4];
    ck_assert_int_eq(run_ref(LOOM_OP_RMSNORM, (loom_tensor *[]){&tx, &tw}, 2, &p, 1, NULL, NULL,
                             (const void *[]){x, w16}, y), LOOM_OK);
    const double r = 0.3651483716701107;
    NEAR(y[0], 1 * r, 1e-15);
    NEAR(y[1], 2 * r, 1e-15);
    NEAR(y[2], 3 * r * 2, 1e-15);
    NEAR(y[3], 4 * r * 0.5, 1e-15);
}
END_TEST

START_TEST(ref_rope_pos0_identity)
{
    enum { H = 3, HD = 8 };
    float x[H * HD];
    for (int i = 0; i < H * HD; i++) x[i] = (float)(i * 0.37 - 3);
    loom_tensor tx = tensor(LOOM_F32, 2, 1, H * HD, 0, 0);
    loom_op_params p = {.n_head = H, .head_dim = HD, .rope_theta = 1e6f};
    double y[H * HD];
    int32_t pos = 0;
    ck_assert_int_eq(run_ref(LOOM_OP_ROPE, (loom_tensor *[]){&tx}, 1, &p, 1, &pos, NULL, (const void *[]){x}, y), LOOM_OK);
    for (int i = 0; i < H * HD; i++) NEAR(y[i], x[i], 0);
    /* YaRN at position 0: no rotation, but cos/sin carry 0.1 ln(4) + 1 */
    p.yarn_factor = 4, p.yarn_orig_ctx = 32768;
    ck_assert_int_eq(run_ref(LOOM_OP_ROPE, (loom_tensor *[]){&tx}, 1, &p, 1, &pos, NULL, (const void *[]){x}, y), LOOM_OK);
    for (int i = 0; i < H * HD; i++) NEAR(y[i], x[i] * (0.1 * log(4.0) + 1), 1e-12);
}
END_TEST

START_TEST(ref_rope_known)
{
    /* hd 4, theta 10000: inv_freq = (1, 0.01). Position 1 turns pair (0, 2)
     * by 1 rad and pair (1, 3) by 0.01 rad, neox style. */
    float x[4] = {1, 1, 0, 0};
    loom_tensor tx = tensor(LOOM_F32, 2, 1, 4, 0, 0);
    loom_op_params p = {.n_head = 1, .head_dim = 4, .rope_theta = 10000};
    double y[4];
    int32_t pos = 1;
    ck_assert_int_eq(run_ref(LOOM_OP_ROPE, (loom_tensor *[]){&tx}, 1, &p, 1, &pos, NULL, (const void *[]){x}, y), LOOM_OK);
    NEAR(y[0], cos(1.0), 1e-15);
    NEAR(y[2], sin(1.0), 1e-15);
    NEAR(y[1], cos(0.01), 1e-15);
    NEAR(y[3], sin(0.01), 1e-15);
}
END_TEST

START_TEST(ref_attn_one_position_is_v)
{
    /* 4 query heads over 2 KV heads, hd 4, 2 slots x 8 positions of f16 cache
     * filled with junk: a token at position 0 sees only its own v. */
    enum { HQ = 4, HKV = 2, HD = 4, S = 2, C = 8 };
    float q[HQ * HD], k[HKV * HD], v[HKV * HD];
    uint16_t kc[S * HKV * C * HD], vc[S * HKV * C * HD];
    for (int i = 0; i < HQ * HD; i++) q[i] = (float)sin(i + 1.0);
    for (int i = 0; i < HKV * HD; i++) k[i] = (float)cos(i * 2.0), v[i] = (float)(i - 3.5);
    for (int i = 0; i < S * HKV * C * HD; i++) kc[i] = loom_f32_to_f16(100), vc[i] = loom_f32_to_f16(-50);
    loom_tensor tq = tensor(LOOM_F32, 2, 1, HQ * HD, 0, 0), tk = tensor(LOOM_F32, 2, 1, HKV * HD, 0, 0);
    loom_tensor tkc = tensor(LOOM_F16, 4, S, HKV, C, HD);
    tkc.flags = LOOM_TENSOR_STATE;
    loom_op_params p = {.n_head = HQ, .n_head_kv = HKV, .head_dim = HD};
    double y[HQ * HD];
    int32_t pos = 0, seq = 1;
    ck_assert_int_eq(run_ref(LOOM_OP_GQA_ATTN, (loom_tensor *[]){&tq, &tk, &tk, &tkc, &tkc}, 5, &p, 1, &pos, &seq,
                             (const void *[]){q, k, v, kc, vc}, y), LOOM_OK);
    for (int h = 0; h < HQ; h++)
        for (int d = 0; d < HD; d++) NEAR(y[h * HD + d], v[(h / 2) * HD + d], 1e-15); /* heads 0,1 -> kv 0; 2,3 -> kv 1 */

    /* position 1 with q = 0: the mean of the cached v at position 0 and the new v */
    for (int i = 0; i < HQ * HD; i++) q[i] = 0;
    vc[((1 * HKV + 1) * C + 0) * HD + 2] = loom_f32_to_f16(3); /* slot 1, kv head 1, pos 0, d 2 */
    pos = 1;
    ck_assert_int_eq(run_ref(LOOM_OP_GQA_ATTN, (loom_tensor *[]){&tq, &tk, &tk, &tkc, &tkc}, 5, &p, 1, &pos, &seq,
                             (const void *[]){q, k, v, kc, vc}, y), LOOM_OK);
    NEAR(y[3 * HD + 2], (3 + v[1 * HD + 2]) / 2, 1e-15);
    NEAR(y[0 * HD + 0], (-50 + v[0]) / 2, 1e-15);

    /* out of range positions and slots are errors, not reads */
    pos = C;
    ck_assert_int_eq(run_ref(LOOM_OP_GQA_ATTN, (loom_tensor *[]){&tq, &tk, &tk, &tkc, &tkc}, 5, &p, 1, &pos, &seq,
                             (const void *[]){q, k, v, kc, vc}, y), LOOM_ERR_INVALID);
    pos = 0, seq = S;
    ck_assert_int_eq(run_ref(LOOM_OP_GQA_ATTN, (loom_tensor *[]){&tq, &tk, &tk, &tkc, &tkc}, 5, &p, 1, &pos, &seq,
                             (const void *[]){q, k, v, kc, vc}, y), LOOM_ERR_INVALID);
}
END_TEST

START_TEST(ref_awq_known)
{
    /* K 128 (one group), N 16. q[k][n] = (3k + n) % 16, z[n] = n % 16 ... packed
     * by hand: nibble i of word c holds column 8c + order[i], order 0 2 4 6 1 3 5 7. */
    enum { K = 128, N = 16 };
    static const int order[8] = {0, 2, 4, 6, 1, 3, 5, 7};
    uint8_t *blob = calloc(1, loom_awq_nbytes(K, N));
    uint32_t *qw = (uint32_t *)blob, *qz = (uint32_t *)(blob + K * N / 2);
    uint16_t *sc = (uint16_t *)(blob + K * N / 2 + N / 2);
    int q[K][N], z[N];
    double s[N];
    for (int k = 0; k < K; k++)
        for (int n = 0; n < N; n++) q[k][n] = (3 * k + n) % 16;
    for (int n = 0; n < N; n++) z[n] = (5 * n + 1) % 16, s[n] = 0.25 * (n + 1); /* exact in f16 */
    for (int k = 0; k < K; k++)
        for (int c = 0; c < N / 8; c++)
            for (int i = 0; i < 8; i++) qw[k * (N / 8) + c] |= (uint32_t)q[k][8 * c + order[i]] << (4 * i);
    for (int c = 0; c < N / 8; c++)
        for (int i = 0; i < 8; i++) qz[c] |= (uint32_t)z[8 * c + order[i]] << (4 * i);
    for (int n = 0; n < N; n++) sc[n] = loom_f32_to_f16((float)s[n]);

    float x[2 * K];
    for (int k = 0; k < K; k++) x[k] = k == 5 ? 1.0f : 0.0f, x[K + k] = (float)(k % 7) - 3;
    float bias[N];
    for (int n = 0; n < N; n++) bias[n] = (float)n / 8;
    loom_tensor tx = tensor(LOOM_F32, 2, 2, K, 0, 0), tw = tensor(LOOM_Q4_AWQ, 2, K, N, 0, 0), tb = tensor(LOOM_F32, 1, N, 0, 0, 0);
    double y[2 * N];
    ck_assert_int_eq(run_ref(LOOM_OP_MATMUL_AWQ, (loom_tensor *[]){&tx, &tw, &tb}, 3, NULL, 2, NULL, NULL,
                             (const void *[]){x, blob, bias}, y), LOOM_OK);
    for (int n = 0; n < N; n++) {
        NEAR(y[n], (q[5][n] - z[n]) * s[n] + bias[n], 1e-12); /* one-hot row 5 */
        double acc = 0;
        for (int k = 0; k < K; k++) acc += x[K + k] * (q[k][n] - z[n]) * s[n];
        NEAR(y[N + n], acc + bias[n], 1e-9);
    }
    free(blob);
}
END_TEST

START_TEST(ref_matmul_embed_known)
{
    /* y = x·wᵀ + b with x (1, 2), w rows (1, 2), (3, 4), (5, 6) in bf16 */
    float x[2] = {1, 2}, b[3] = {0.5f, 0, -1};
    uint16_t w[6];
    for (int i = 0; i < 6; i++) w[i] = loom_f32_to_bf16((float)(i + 1));
    loom_tensor tx = tensor(LOOM_F32, 2, 1, 2, 0, 0), tw = tensor(LOOM_BF16, 2, 3, 2, 0, 0), tb = tensor(LOOM_F32, 1, 3, 0, 0, 0);
    double y[3];
    ck_assert_int_eq(run_ref(LOOM_OP_MATMUL, (loom_tensor *[]){&tx, &tw, &tb}, 3, NULL, 1, NULL, NULL,
                             (const void *[]){x, w, b}, y), LOOM_OK);
    NEAR(y[0], 5.5, 0);
    NEAR(y[1], 11, 0);
    NEAR(y[2], 16, 0);
    /* without bias: the optional source absent */
    ck_assert_int_eq(run_ref(LOOM_OP_MATMUL, (loom_tensor *[]){&tx, &tw, NULL}, 3, NULL, 1, NULL, NULL,
                             (const void *[]){x, w, NULL}, y), LOOM_OK);
    NEAR(y[2], 17, 0);

    /* embed: rows 2 and 0 of a 3x2 f16 table; id 3 is out of range */
    uint16_t table[6];
    for (int i = 0; i < 6; i++) table[i] = loom_f32_to_f16((float)(i * 1.5));
    int32_t ids[2] = {2, 0};
    loom_tensor tt = tensor(LOOM_F16, 2, 3, 2, 0, 0), ti = tensor(LOOM_I32, 1, 2, 0, 0, 0);
    double e[4];
    ck_assert_int_eq(run_ref(LOOM_OP_EMBED, (loom_tensor *[]){&tt, &ti}, 2, NULL, 2, NULL, NULL,
                             (const void *[]){table, ids}, e), LOOM_OK);
    NEAR(e[0], 6, 0);
    NEAR(e[1], 7.5, 0);
    NEAR(e[2], 0, 0);
    NEAR(e[3], 1.5, 0);
    ids[1] = 3;
    ck_assert_int_eq(run_ref(LOOM_OP_EMBED, (loom_tensor *[]){&tt, &ti}, 2, NULL, 2, NULL, NULL,
                             (const void *[]){table, ids}, e), LOOM_ERR_INVALID);
}
END_TEST

START_TEST(ref_swiglu_add_known)
{
    float g[2] = {1, -2}, u[2] = {2, 3};
    loom_tensor t = tensor(LOOM_F32, 2, 1, 2, 0, 0);
    double y[2];
    ck_assert_int_eq(run_ref(LOOM_OP_SWIGLU, (loom_tensor *[]){&t, &t}, 2, NULL, 1, NULL, NULL, (const void *[]){g, u}, y),
                     LOOM_OK);
    NEAR(y[0], 1.4621171572600098, 1e-15);      /* 2 / (1 + e^-1) */
    NEAR(y[1], -2 / (1 + exp(2.0)) * 3, 1e-15); /* -0.7153... */
    ck_assert_int_eq(run_ref(LOOM_OP_ADD, (loom_tensor *[]){&t, &t}, 2, NULL, 1, NULL, NULL, (const void *[]){g, u}, y),
                     LOOM_OK);
    NEAR(y[0], 3, 0);
    NEAR(y[1], 1, 0);
}
END_TEST

/* ---- the checker can fail -------------------------------------------------------- */
START_TEST(compare_detects)
{
    const double ref[4] = {1, 2, 3, 4};
    float out[4] = {1, 2, 3, 4.1f};
    double mx;
    int64_t bad;
    double nmse = loom_check_compare(out, ref, 4, &mx, &bad);
    NEAR(nmse, (4.1f - 4.0) * (4.1f - 4.0) / 30, 1e-12);
    NEAR(mx, 4.1f - 4.0, 1e-12);
    ck_assert_int_eq(bad, 0);
    out[1] = NAN;
    ck_assert(isinf(loom_check_compare(out, ref, 4, &mx, &bad)));
    ck_assert_int_eq(bad, 1);
    /* every (op, dtype) the cases use has a threshold; unknown pairs allow nothing */
    int32_t n;
    const loom_check_case *cs = loom_check_cases(false, &n);
    for (int32_t i = 0; i < n; i++) ck_assert(loom_check_threshold(cs[i].op, cs[i].dtype) > 0);
    ck_assert(loom_check_threshold(LOOM_OP_ADD, LOOM_F16) == 0);
}
END_TEST

/* Thresholds separate an off-by-one position from rounding: rope and
 * attention computed by the reference at pos and pos + 1. */
START_TEST(thresholds_catch_off_by_one)
{
    enum { H = 4, HD = 16, T = 1, C = 64 };
    float x[H * HD];
    for (int i = 0; i < H * HD; i++) x[i] = (float)sin(i * 1.3 + 0.2);
    loom_tensor tx = tensor(LOOM_F32, 2, 1, H * HD, 0, 0);
    loom_op_params p = {.n_head = H, .head_dim = HD, .rope_theta = 1e6f};
    double a[H * HD], b[H * HD];
    float af[H * HD];
    int32_t pos = 31000, pos1 = 31001;
    ck_assert_int_eq(run_ref(LOOM_OP_ROPE, (loom_tensor *[]){&tx}, 1, &p, T, &pos, NULL, (const void *[]){x}, a), LOOM_OK);
    ck_assert_int_eq(run_ref(LOOM_OP_ROPE, (loom_tensor *[]){&tx}, 1, &p, T, &pos1, NULL, (const void *[]){x}, b), LOOM_OK);
    for (int i = 0; i < H * HD; i++) af[i] = (float)a[i];
    ck_assert(loom_check_compare(af, a, H * HD, NULL, NULL) < loom_check_threshold(LOOM_OP_ROPE, LOOM_F32));
    ck_assert(loom_check_compare(af, b, H * HD, NULL, NULL) > 100 * loom_check_threshold(LOOM_OP_ROPE, LOOM_F32));

    /* attention: a cache of 64 random-ish positions, one query at 40 vs 41 */
    static uint16_t kc[2 * C * HD], vc[2 * C * HD];
    float q[H * HD], k[2 * HD], v[2 * HD];
    for (int i = 0; i < 2 * C * HD; i++) kc[i] = loom_f32_to_f16((float)sin(i * 0.7)), vc[i] = loom_f32_to_f16((float)cos(i * 1.9));
    for (int i = 0; i < H * HD; i++) q[i] = (float)cos(i * 0.3) * 2;
    for (int i = 0; i < 2 * HD; i++) k[i] = (float)sin(i * 2.1), v[i] = (float)cos(i * 0.9);
    loom_tensor tq = tensor(LOOM_F32, 2, 1, H * HD, 0, 0), tk = tensor(LOOM_F32, 2, 1, 2 * HD, 0, 0);
    loom_tensor tc = tensor(LOOM_F16, 4, 1, 2, C, HD);
    loom_op_params pa = {.n_head = H, .n_head_kv = 2, .head_dim = HD};
    pos = 40, pos1 = 41;
    ck_assert_int_eq(run_ref(LOOM_OP_GQA_ATTN, (loom_tensor *[]){&tq, &tk, &tk, &tc, &tc}, 5, &pa, T, &pos, NULL,
                             (const void *[]){q, k, v, kc, vc}, a), LOOM_OK);
    ck_assert_int_eq(run_ref(LOOM_OP_GQA_ATTN, (loom_tensor *[]){&tq, &tk, &tk, &tc, &tc}, 5, &pa, T, &pos1, NULL,
                             (const void *[]){q, k, v, kc, vc}, b), LOOM_OK);
    for (int i = 0; i < H * HD; i++) af[i] = (float)a[i];
    ck_assert(loom_check_compare(af, b, H * HD, NULL, NULL) > 100 * loom_check_threshold(LOOM_OP_GQA_ATTN, LOOM_F16));
}
END_TEST

/* ---- CPU ops against the reference ---------------------------------------------- */
static loom_device **devs;
static int n_devs;

static void open_cpu(void)
{
    ck_assert_msg(loom_select("cpu", &devs, &n_devs) == LOOM_OK && n_devs >= 1, "cpu: %s", loom_last_error());
}

static void close_cpu(void)
{
    loom_devices_close(devs, n_devs);
    devs = NULL, n_devs = 0;
}

START_TEST(cpu_quick_case)
{
    int32_t n;
    const loom_check_case *c = &loom_check_cases(true, &n)[_i];
    loom_check_result r;
    ck_assert_int_eq(loom_check_case_run(devs[0], c, 1000 + (uint64_t)_i, NULL, &r), LOOM_OK);
    ck_assert_msg(r.verdict == LOOM_CHECK_PASS, "%s %s %s: %s (NMSE %g, threshold %g)", loom_op_name(c->op), r.shape,
                  loom_dtype_name(c->dtype), r.message, r.nmse, r.threshold);
}
END_TEST

START_TEST(cpu_check_ops_quick)
{
    loom_check_report rep;
    ck_assert_int_eq(loom_check_ops(devs[0], &(loom_check_opts){.seed = 7, .quick = true}, &rep), LOOM_OK);
    int32_t n;
    loom_check_cases(true, &n);
    ck_assert_int_eq(rep.n_results, n);
    ck_assert_int_eq(rep.n_fail, 0);
    ck_assert_int_eq(rep.n_unsupported, 0);
    ck_assert_int_eq(rep.n_pass, n);
    loom_check_report_free(&rep);
    /* the op filter, and an unknown op */
    ck_assert_int_eq(loom_check_ops(devs[0], &(loom_check_opts){.seed = 7, .quick = true, .op = "rope"}, &rep), LOOM_OK);
    ck_assert_int_eq(rep.n_results, 2);
    loom_check_report_free(&rep);
    ck_assert_int_eq(loom_check_ops(devs[0], &(loom_check_opts){.quick = true, .op = "conv2d"}, &rep), LOOM_ERR_INVALID);
    loom_check_report_free(&rep);
}
END_TEST

/* Corrupted device outputs must fail every case: shifted by one element (an
 * off-by-one), a single unwritten element, or small relative noise. */
static void shift_by_one(const loom_check_case *c, float *out, int64_t n, void *user)
{
    for (int64_t i = 0; i + 1 < n; i++) out[i] = out[i + 1];
}

static void one_nan(const loom_check_case *c, float *out, int64_t n, void *user)
{
    out[n - 1] = NAN;
}

static void noise(const loom_check_case *c, float *out, int64_t n, void *user)
{
    for (int64_t i = 0; i < n; i++) out[i] *= (float)(1 + ((i * 7919) % 13 - 6) * 1e-2); /* ~1% relative */
}

START_TEST(cpu_corrupted_fails)
{
    loom_check_tamper_fn fns[3] = {shift_by_one, one_nan, noise};
    for (int f = 0; f < 3; f++) {
        loom_check_report rep;
        ck_assert_int_eq(loom_check_ops(devs[0], &(loom_check_opts){.seed = 3, .quick = true, .tamper = fns[f]}, &rep),
                         LOOM_OK);
        for (int32_t i = 0; i < rep.n_results; i++) {
            const loom_check_result *r = &rep.results[i];
            ck_assert_msg(r->verdict == LOOM_CHECK_FAIL, "tamper %d: %s %s %s passed (NMSE %g)", f, loom_op_name(r->c.op),
                          r->shape, loom_dtype_name(r->c.dtype), r->nmse);
            if (f == 1) ck_assert_int_eq(r->n_nonfinite, 1);
            else ck_assert(r->nmse > r->threshold);
        }
        ck_assert_int_eq(rep.n_fail, rep.n_results);
        loom_check_report_free(&rep);
    }
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("cpu_ops");
    TCase *ref = tcase_create("reference");
    tcase_add_test(ref, ref_rmsnorm_known);
    tcase_add_test(ref, ref_rope_pos0_identity);
    tcase_add_test(ref, ref_rope_known);
    tcase_add_test(ref, ref_attn_one_position_is_v);
    tcase_add_test(ref, ref_awq_known);
    tcase_add_test(ref, ref_matmul_embed_known);
    tcase_add_test(ref, ref_swiglu_add_known);
    tcase_add_test(ref, compare_detects);
    tcase_add_test(ref, thresholds_catch_off_by_one);
    suite_add_tcase(s, ref);

    TCase *cpu = tcase_create("cpu");
    tcase_add_checked_fixture(cpu, open_cpu, close_cpu);
    tcase_set_timeout(cpu, 300);
    int32_t n;
    loom_check_cases(true, &n);
    tcase_add_loop_test(cpu, cpu_quick_case, 0, n);
    tcase_add_test(cpu, cpu_check_ops_quick);
    tcase_add_test(cpu, cpu_corrupted_fails);
    suite_add_tcase(s, cpu);
    return s;
}

int main(void)
{
    return loom_test_run(suite());
}
