/* test_sched.c — placement, per-node fallback and copies across devices, using
 * the example plugin (which runs add, swiglu and rmsnorm only) beside the CPU. */
#include <check.h>

#include "check_main.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "graph.h"

enum { T = 8, D = 128, N = 96 };
static float w_norm[D], w_mat[N * D], bias[N], x_in[T * D];

typedef struct {
    loom_graph *g;
    loom_tid    x, out;
} net;

/* w_mat made on demand: a copy per load, counted */
static int loads, unloads;
static bool fail_load;
static const void *load_w(void *ud, const char *name, loom_dtype dt, int32_t ndim, const int64_t *shape)
{
    ck_assert_ptr_eq(ud, w_mat);
    ck_assert_str_eq(name, "w_mat");
    ck_assert(dt == LOOM_F32 && ndim == 2 && shape[0] == N && shape[1] == D);
    if (fail_load) return loom_error(LOOM_ERR_IO, "disk on fire"), NULL;
    float *w = malloc(sizeof w_mat);
    memcpy(w, w_mat, sizeof w_mat);
    loads++;
    return w;
}
static void unload_w(void *ud, const void *data)
{
    (void)ud;
    free((void *)data);
    unloads++;
}

/* x -> rmsnorm -> matmul(+bias) -> swiglu(h, h) -> add(h, h); lazy: w_mat through the loader */
static net build_with(bool lazy)
{
    net n;
    n.g = loom_graph_create(T);
    n.x = loom_graph_input(n.g, "x", LOOM_F32, 2, (int64_t[]){T, D}, true);
    loom_tid wn = loom_graph_weight(n.g, "w_norm", LOOM_F32, 1, (int64_t[]){D}, w_norm);
    loom_weight_loader ld = {load_w, unload_w, w_mat};
    loom_tid wm = lazy ? loom_graph_weight_lazy(n.g, "w_mat", LOOM_F32, 2, (int64_t[]){N, D}, &ld)
                       : loom_graph_weight(n.g, "w_mat", LOOM_F32, 2, (int64_t[]){N, D}, w_mat);
    loom_tid b = loom_graph_weight(n.g, "bias", LOOM_F32, 1, (int64_t[]){N}, bias);
    loom_tid h = loom_rmsnorm(n.g, n.x, wn, 1e-6f);
    h = loom_matmul(n.g, h, wm, b);
    loom_tid s = loom_swiglu(n.g, h, h);
    n.out = loom_add(n.g, s, h);
    ck_assert_int_eq(loom_graph_output(n.g, n.out), LOOM_OK);
    return n;
}
static net build(void) { return build_with(false); }

static void run(net *n, const char *spec, int32_t rows, float *out, int *copies, char first_dev[32])
{
    loom_device **devs;
    int nd;
    if (loom_select(spec, &devs, &nd)) ck_abort_msg("select %s: %s", spec, loom_last_error());
    loom_exec *e;
    if (loom_graph_compile(n->g, devs, nd, 0, &e)) ck_abort_msg("compile: %s", loom_last_error());
    loom_step step = {rows, NULL, NULL};
    ck_assert_int_eq(loom_exec_write(e, n->x, x_in, (size_t)rows * D * 4), LOOM_OK);
    ck_assert_int_eq(loom_exec_run(e, &step), LOOM_OK);
    ck_assert_int_eq(loom_exec_read(e, n->out, out, (size_t)rows * N * 4), LOOM_OK);
    float last[N]; /* one row alone, from where it sits */
    ck_assert_int_eq(loom_exec_read_at(e, n->out, (size_t)(rows - 1) * N * 4, last, sizeof last), LOOM_OK);
    ck_assert_mem_eq(last, out + (size_t)(rows - 1) * N, sizeof last);
    void *v; /* the same bytes in the exec's own buffer: one row, then all (it grows), then one again */
    ck_assert_int_eq(loom_exec_view(e, n->out, (size_t)(rows - 1) * N * 4, sizeof last, &v), LOOM_OK);
    ck_assert_mem_eq(v, last, sizeof last);
    ck_assert_int_eq(loom_exec_view(e, n->out, 0, (size_t)rows * N * 4, &v), LOOM_OK);
    ck_assert_mem_eq(v, out, (size_t)rows * N * 4);
    ck_assert_int_eq(loom_exec_view(e, n->out, (size_t)(rows - 1) * N * 4, sizeof last, &v), LOOM_OK);
    ck_assert_mem_eq(v, last, sizeof last);
    ck_assert_int_eq(loom_exec_view(e, n->x, 0, (size_t)rows * D * 4, &v), LOOM_OK); /* an input, more bytes */
    ck_assert_mem_eq(v, x_in, (size_t)rows * D * 4);
    *copies = loom_exec_n_copies(e);
    snprintf(first_dev, 32, "%s", loom_device_label(loom_exec_node_device(e, 0)));
    ck_assert_str_eq(loom_device_label(loom_exec_node_device(e, 1)), "cpu:0"); /* matmul falls back */
    loom_exec_destroy(e);
    loom_devices_close(devs, nd);
}

START_TEST(fallback_matches_cpu)
{
    srand(11);
    for (int i = 0; i < D; i++) w_norm[i] = 0.5f + (float)rand() / RAND_MAX;
    for (int i = 0; i < N * D; i++) w_mat[i] = (float)rand() / RAND_MAX - 0.5f;
    for (int i = 0; i < N; i++) bias[i] = (float)rand() / RAND_MAX - 0.5f;
    for (int i = 0; i < T * D; i++) x_in[i] = (float)rand() / RAND_MAX * 4 - 2;
    ck_assert_int_eq(setenv("LOOM_PLUGIN_PATH", EXAMPLE_PLUGIN_DIR, 1), 0);
    loom_registry_shutdown();
    net n = build();
    for (int32_t rows = T; rows >= 1; rows -= 5) { /* a full step, then a shorter one */
        float a[T * N], b[T * N];
        int ca, cb;
        char da[32], db[32];
        run(&n, "example,cpu", rows, a, &ca, da);
        run(&n, "cpu", rows, b, &cb, db);
        ck_assert_str_eq(da, "example:0");
        ck_assert_str_eq(db, "cpu:0");
        ck_assert_int_ge(ca, 2); /* rmsnorm out -> cpu, matmul out -> example */
        ck_assert_int_eq(cb, 0);
        for (int i = 0; i < rows * N; i++)
            if (!(fabsf(a[i] - b[i]) <= 1e-5f * (1 + fabsf(b[i])))) ck_abort_msg("element %d: %g vs %g", i, a[i], b[i]);
    }
    loom_graph_destroy(n.g);
    loom_registry_shutdown();
}
END_TEST

/* A lazy weight gives the same results; every load is given back; a failed load is the
 * compile's error, naming the weight. */
START_TEST(lazy_weight)
{
    for (int i = 0; i < D; i++) w_norm[i] = 1.0f;
    for (int i = 0; i < N * D; i++) w_mat[i] = (float)(i % 7) - 3.0f;
    for (int i = 0; i < N; i++) bias[i] = 0.25f;
    for (int i = 0; i < T * D; i++) x_in[i] = (float)(i % 5) - 2.0f;
    loom_registry_shutdown();
    net e = build(), l = build_with(true);
    float a[T * N], b[T * N];
    int c;
    char dev[32];
    loads = unloads = 0;
    run(&e, "cpu", T, a, &c, dev);
    ck_assert_int_eq(loads, 0);
    run(&l, "cpu", T, b, &c, dev);
    ck_assert_int_eq(loads, 1);
    ck_assert_int_eq(unloads, 1);
    ck_assert_mem_eq(a, b, sizeof a);
    loom_device **devs;
    int nd;
    ck_assert_int_eq(loom_select("cpu", &devs, &nd), LOOM_OK);
    loom_exec *x;
    fail_load = true;
    ck_assert_int_eq(loom_graph_compile(l.g, devs, nd, 0, &x), LOOM_ERR_FORMAT);
    fail_load = false;
    ck_assert_ptr_nonnull(strstr(loom_last_error(), "w_mat"));
    ck_assert_ptr_nonnull(strstr(loom_last_error(), "disk on fire"));
    ck_assert_int_eq(loads, unloads);
    loom_devices_close(devs, nd);
    loom_tid none = loom_graph_weight_lazy(l.g, "w2", LOOM_F32, 1, (int64_t[]){4}, NULL);
    ck_assert_int_eq(none, LOOM_TID_NONE);
    loom_graph_destroy(e.g);
    loom_graph_destroy(l.g);
    loom_registry_shutdown();
}
END_TEST

START_TEST(no_fallback_is_an_error)
{
    ck_assert_int_eq(setenv("LOOM_PLUGIN_PATH", EXAMPLE_PLUGIN_DIR, 1), 0);
    loom_registry_shutdown();
    net n = build();
    loom_device **devs;
    int nd;
    ck_assert_int_eq(loom_select("example", &devs, &nd), LOOM_OK);
    loom_exec *e;
    ck_assert_int_eq(loom_graph_compile(n.g, devs, nd, LOOM_COMPILE_NO_FALLBACK, &e), LOOM_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(loom_last_error(), "matmul"));
    loom_devices_close(devs, nd);
    loom_graph_destroy(n.g);
    loom_registry_shutdown();
}
END_TEST

START_TEST(bad_steps)
{
    net n = build();
    loom_device **devs;
    int nd;
    ck_assert_int_eq(loom_select("cpu", &devs, &nd), LOOM_OK);
    loom_exec *e;
    ck_assert_int_eq(loom_graph_compile(n.g, devs, nd, 0, &e), LOOM_OK);
    loom_step zero = {0, NULL, NULL}, many = {T + 1, NULL, NULL};
    ck_assert_int_eq(loom_exec_run(e, &zero), LOOM_ERR_INVALID);
    ck_assert_int_eq(loom_exec_run(e, &many), LOOM_ERR_INVALID);
    ck_assert_int_eq(loom_exec_run(e, NULL), LOOM_ERR_INVALID);
    float big[T * D + 1];
    ck_assert_int_eq(loom_exec_write(e, n.x, big, sizeof big), LOOM_ERR_INVALID); /* larger than the tensor */
    ck_assert_int_eq(loom_exec_write(e, 1, big, 4), LOOM_ERR_INVALID);            /* a weight */
    ck_assert_int_eq(loom_exec_read(e, 999, big, 4), LOOM_ERR_INVALID);
    ck_assert_int_eq(loom_exec_read_at(e, n.out, (size_t)T * N * 4 - 4, big, 8), LOOM_ERR_INVALID); /* past the end */
    ck_assert_int_eq(loom_exec_read_at(e, n.out, SIZE_MAX - 2, big, 4), LOOM_ERR_INVALID);           /* no wrap-around */
    void *v = big;
    ck_assert_int_eq(loom_exec_view(e, n.out, (size_t)T * N * 4 - 4, 8, &v), LOOM_ERR_INVALID);
    ck_assert_ptr_null(v);
    loom_exec_destroy(e);
    loom_devices_close(devs, nd);
    loom_graph_destroy(n.g);
}
END_TEST

/* A chain of 12 adds: each sum is read by the next add only, so activations share the arena,
 * but a tensor's bytes stay reserved for two nodes past its last reader (backends fuse up to
 * three nodes and write the later ones' outputs while the first still reads). */
START_TEST(arena_reuse)
{
    enum { L = 12 };
    loom_graph *g = loom_graph_create(T);
    loom_tid h[L + 1];
    h[0] = loom_graph_input(g, "x", LOOM_F32, 2, (int64_t[]){T, D}, true);
    for (int i = 1; i <= L; i++) h[i] = loom_add(g, h[i - 1], h[i - 1]);
    ck_assert_int_eq(loom_graph_output(g, h[L]), LOOM_OK);
    loom_device **devs;
    int nd;
    ck_assert_int_eq(loom_select("cpu", &devs, &nd), LOOM_OK);
    loom_exec *e;
    ck_assert_int_eq(loom_graph_compile(g, devs, nd, 0, &e), LOOM_OK);
    size_t unshared, arena = loom_exec_arena_bytes(e, 0, &unshared), one = (size_t)T * D * sizeof(float);
    ck_assert_uint_eq(unshared, L * one); /* the input lives outside the arena */
    ck_assert_uint_eq(arena, 4 * one); /* h[i] still reserved while h[i+1], h[i+2], h[i+3] are written */
    loom_exec_destroy(e);
    loom_devices_close(devs, nd);
    loom_graph_destroy(g);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sched");
    TCase *tc = tcase_create("sched");
    tcase_add_test(tc, fallback_matches_cpu);
    tcase_add_test(tc, no_fallback_is_an_error);
    tcase_add_test(tc, lazy_weight);
    tcase_add_test(tc, bad_steps);
    tcase_add_test(tc, arena_reuse);
    suite_add_tcase(s, tc);
    return loom_test_run(s);
}
