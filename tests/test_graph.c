/* test_graph.c — graph building, validation errors, shape inference, the planner. */
#include <check.h>

#include "check_main.h"
#include <stdlib.h>

#include "graph.h"

#define T 8
static float f32_data[4096];

static loom_tid act(loom_graph *g, const char *name, int64_t cols)
{
    return loom_graph_input(g, name, LOOM_F32, 2, (int64_t[]){T, cols}, true);
}

START_TEST(shapes_inferred)
{
    loom_graph *g = loom_graph_create(T);
    loom_tid ids = loom_graph_input(g, "ids", LOOM_I32, 1, (int64_t[]){T}, true);
    loom_tid tab = loom_graph_weight(g, "tok", LOOM_BF16, 2, (int64_t[]){100, 64}, f32_data);
    loom_tid x = loom_embed(g, tab, ids);
    loom_tid w = loom_graph_weight(g, "w", LOOM_F16, 2, (int64_t[]){32, 64}, f32_data);
    loom_tid y = loom_name(g, loom_matmul(g, x, w, LOOM_TID_NONE), "blk.%d.y", 3);
    ck_assert_int_eq(loom_graph_status(g), LOOM_OK);
    const loom_tensor *t = loom_graph_tensor(g, y);
    ck_assert_int_eq(t->ndim, 2);
    ck_assert_int_eq(t->shape[0], T);
    ck_assert_int_eq(t->shape[1], 32);
    ck_assert(t->flags & LOOM_TENSOR_DYNAMIC);
    ck_assert_str_eq(t->name, "blk.3.y");
    ck_assert_int_eq(loom_graph_n_nodes(g), 2);
    loom_graph_destroy(g);
}
END_TEST

/* Each bad graph fails with LOOM_ERR_INVALID and a message naming the problem. */
static void expect_error(loom_graph *g, loom_tid r, const char *needle)
{
    ck_assert_int_eq(r, LOOM_TID_NONE);
    ck_assert_int_eq(loom_graph_status(g), LOOM_ERR_INVALID);
    if (!strstr(loom_graph_error(g), needle))
        ck_abort_msg("error '%s' does not mention '%s'", loom_graph_error(g), needle);
}

START_TEST(matmul_k_mismatch)
{
    loom_graph *g = loom_graph_create(T);
    loom_tid w = loom_graph_weight(g, "w", LOOM_F32, 2, (int64_t[]){16, 48}, f32_data);
    expect_error(g, loom_matmul(g, act(g, "x", 64), w, LOOM_TID_NONE), "K=64");
    loom_graph_destroy(g);
}
END_TEST

START_TEST(bias_wrong_length)
{
    loom_graph *g = loom_graph_create(T);
    loom_tid w = loom_graph_weight(g, "w", LOOM_F32, 2, (int64_t[]){16, 64}, f32_data);
    loom_tid b = loom_graph_weight(g, "b", LOOM_F32, 1, (int64_t[]){17}, f32_data);
    expect_error(g, loom_matmul(g, act(g, "x", 64), w, b), "bias");
    loom_graph_destroy(g);
}
END_TEST

START_TEST(awq_bad_k)
{
    loom_graph *g = loom_graph_create(T);
    /* K = 100 is not a multiple of the group size */
    expect_error(g, loom_graph_weight(g, "w", LOOM_Q4_AWQ, 2, (int64_t[]){100, 64}, f32_data), "multiple of 128");
    loom_graph_destroy(g);
}
END_TEST

START_TEST(attn_heads_not_multiple)
{
    loom_graph *g = loom_graph_create(T);
    loom_op_params p = {.n_head = 6, .n_head_kv = 4, .head_dim = 16};
    loom_tid kc = loom_graph_state(g, "kc", LOOM_F16, 4, (int64_t[]){1, 4, 32, 16});
    loom_tid vc = loom_graph_state(g, "vc", LOOM_F16, 4, (int64_t[]){1, 4, 32, 16});
    expect_error(g, loom_gqa_attn(g, act(g, "q", 96), act(g, "k", 64), act(g, "v", 64), kc, vc, &p), "multiple");
    loom_graph_destroy(g);
}
END_TEST

START_TEST(attn_cache_not_state)
{
    loom_graph *g = loom_graph_create(T);
    loom_op_params p = {.n_head = 4, .n_head_kv = 2, .head_dim = 16};
    loom_tid kc = loom_graph_weight(g, "kc", LOOM_F16, 4, (int64_t[]){1, 2, 32, 16}, f32_data);
    loom_tid vc = loom_graph_state(g, "vc", LOOM_F16, 4, (int64_t[]){1, 2, 32, 16});
    expect_error(g, loom_gqa_attn(g, act(g, "q", 64), act(g, "k", 32), act(g, "v", 32), kc, vc, &p), "state");
    loom_graph_destroy(g);
}
END_TEST

START_TEST(rope_odd_head_dim)
{
    loom_graph *g = loom_graph_create(T);
    loom_op_params p = {.n_head = 4, .head_dim = 15, .rope_theta = 10000};
    expect_error(g, loom_rope(g, act(g, "x", 60), &p), "even");
    loom_graph_destroy(g);
}
END_TEST

START_TEST(add_shape_mismatch)
{
    loom_graph *g = loom_graph_create(T);
    expect_error(g, loom_add(g, act(g, "a", 64), act(g, "b", 32)), "differ");
    loom_graph_destroy(g);
}
END_TEST

START_TEST(rmsnorm_bad_eps)
{
    loom_graph *g = loom_graph_create(T);
    loom_tid w = loom_graph_weight(g, "w", LOOM_F32, 1, (int64_t[]){64}, f32_data);
    expect_error(g, loom_rmsnorm(g, act(g, "x", 64), w, 0.0f), "eps");
    loom_graph_destroy(g);
}
END_TEST

START_TEST(errors_are_sticky)
{
    loom_graph *g = loom_graph_create(T);
    loom_tid w = loom_graph_weight(g, "w", LOOM_F32, 2, (int64_t[]){16, 48}, f32_data);
    loom_tid y = loom_matmul(g, act(g, "x", 64), w, LOOM_TID_NONE); /* fails */
    char first[512];
    snprintf(first, sizeof first, "%s", loom_graph_error(g));
    loom_tid z = loom_add(g, y, y); /* given NONE: stays failed, keeps the first message */
    ck_assert_int_eq(z, LOOM_TID_NONE);
    ck_assert_str_eq(loom_graph_error(g), first);
    loom_exec *e = (loom_exec *)1;
    ck_assert_int_eq(loom_graph_compile(g, NULL, 0, 0, &e), LOOM_ERR_INVALID);
    ck_assert_ptr_null(e);
    loom_graph_destroy(g);
}
END_TEST

START_TEST(bad_ids_and_sizes)
{
    ck_assert_ptr_null(loom_graph_create(0));
    loom_graph *g = loom_graph_create(T);
    ck_assert_int_eq(loom_graph_op(g, LOOM_OP_ADD, (loom_tid[]){0, 1}, 2, NULL, "x"), LOOM_TID_NONE);
    ck_assert_int_eq(loom_graph_status(g), LOOM_ERR_INVALID);
    loom_graph_destroy(g);
    g = loom_graph_create(T);
    /* 2^40 x 2^40 elements overflows size arithmetic: refused, not wrapped */
    loom_tid huge = loom_graph_weight(g, "huge", LOOM_F32, 2, (int64_t[]){(int64_t)1 << 40, (int64_t)1 << 40}, f32_data);
    ck_assert_int_eq(huge, LOOM_TID_NONE);
    loom_graph_destroy(g);
    g = loom_graph_create(T);
    ck_assert_int_eq(loom_graph_input(g, "x", LOOM_F32, 2, (int64_t[]){T + 1, 4}, true), LOOM_TID_NONE);
    loom_graph_destroy(g);
}
END_TEST

/* ---- planner ---- */
static bool overlap(const loom_block *a, size_t oa, const loom_block *b, size_t ob)
{
    bool alive = a->first <= b->last && b->first <= a->last;
    bool bytes = oa < ob + b->size && ob < oa + a->size;
    return alive && bytes;
}

START_TEST(planner_chain_reuses)
{
    /* a chain x0 -> x1 -> ... each alive for two steps: two buffers suffice */
    loom_block b[10];
    size_t off[10];
    for (int i = 0; i < 10; i++) b[i] = (loom_block){1000, i, i + 1};
    size_t total = loom_plan_arena(b, 10, 256, off);
    ck_assert_uint_eq(total, 2 * 1024);
}
END_TEST

START_TEST(planner_random_never_overlaps)
{
    srand(7);
    for (int round = 0; round < 50; round++) {
        loom_block b[64];
        size_t off[64], sum = 0;
        int n = 1 + rand() % 64;
        for (int i = 0; i < n; i++) {
            int f = rand() % 40;
            b[i] = (loom_block){(size_t)(1 + rand() % 5000), f, f + rand() % 10};
            sum += (b[i].size + 255) / 256 * 256;
        }
        size_t total = loom_plan_arena(b, n, 256, off);
        ck_assert_uint_le(total, sum);
        for (int i = 0; i < n; i++) {
            ck_assert_uint_eq(off[i] % 256, 0);
            ck_assert_uint_le(off[i] + b[i].size, total);
            for (int j = i + 1; j < n; j++)
                if (overlap(&b[i], off[i], &b[j], off[j])) ck_abort_msg("blocks %d and %d overlap", i, j);
        }
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("graph");
    TCase *tc = tcase_create("graph");
    tcase_add_test(tc, shapes_inferred);
    tcase_add_test(tc, matmul_k_mismatch);
    tcase_add_test(tc, bias_wrong_length);
    tcase_add_test(tc, awq_bad_k);
    tcase_add_test(tc, attn_heads_not_multiple);
    tcase_add_test(tc, attn_cache_not_state);
    tcase_add_test(tc, rope_odd_head_dim);
    tcase_add_test(tc, add_shape_mismatch);
    tcase_add_test(tc, rmsnorm_bad_eps);
    tcase_add_test(tc, errors_are_sticky);
    tcase_add_test(tc, bad_ids_and_sizes);
    tcase_add_test(tc, planner_chain_reuses);
    tcase_add_test(tc, planner_random_never_overlaps);
    suite_add_tcase(s, tc);
    return loom_test_run(s);
}
