/* test_registry.c — the backend registry: plugin loading and its failure
 * modes (tests/plugins/), the example plugin, LOOM_BACKEND parsing and
 * selection, re-initialisation. */
#include <check.h>

#include "check_main.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loom.h"

#ifndef TEST_PLUGIN_DIR
#error "TEST_PLUGIN_DIR must name the build directory of tests/plugins"
#endif
#ifndef EXAMPLE_PLUGIN_DIR
#error "EXAMPLE_PLUGIN_DIR must name the build directory of examples/plugin"
#endif

/* A fresh registry over exactly these plugin directories. */
static void reset(const char *plugin_path, const char *loom_backend)
{
    loom_registry_shutdown();
    if (plugin_path) setenv("LOOM_PLUGIN_PATH", plugin_path, 1);
    else unsetenv("LOOM_PLUGIN_PATH");
    if (loom_backend) setenv("LOOM_BACKEND", loom_backend, 1);
    else unsetenv("LOOM_BACKEND");
    ck_assert_int_eq(loom_registry_init(), LOOM_OK);
}

static void teardown(void)
{
    loom_registry_shutdown();
}

static bool contains(const char *hay, const char *needle)
{
    return hay && strstr(hay, needle) != NULL;
}

#define ASSERT_HAS(hay, needle) \
    ck_assert_msg(contains((hay), (needle)), "expected '%s' in: %s", (needle), (hay))

/* Selects spec; asserts success and the labels (comma-separated). */
static void expect_select(const char *spec, const char *labels)
{
    loom_device **devs = NULL;
    int n = 0;
    loom_status st = loom_select(spec, &devs, &n);
    ck_assert_msg(st == LOOM_OK, "select '%s': %s", spec ? spec : "(null)", loom_last_error());
    char got[256] = "";
    for (int i = 0; i < n; i++)
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%s", i ? "," : "", loom_device_label(devs[i]));
    ck_assert_msg(!strcmp(got, labels), "select '%s': got %s, want %s", spec ? spec : "(null)", got, labels);
    for (int i = 0; i < n; i++) {
        ck_assert_ptr_nonnull(loom_device_iface(devs[i]));
        ck_assert_ptr_nonnull(loom_device_ctx(devs[i]));
    }
    loom_devices_close(devs, n);
}

/* Selects spec; asserts failure with st and every needle in the message. */
static void expect_fail(const char *spec, loom_status want, const char *n1, const char *n2)
{
    loom_device **devs = (loom_device **)&devs; /* must come back NULL */
    int n = 7;
    loom_status st = loom_select(spec, &devs, &n);
    ck_assert_msg(st == want, "select '%s': status %s, want %s (%s)", spec ? spec : "(null)", loom_status_name(st),
                  loom_status_name(want), loom_last_error());
    ck_assert_ptr_null(devs);
    ck_assert_int_eq(n, 0);
    if (n1) ASSERT_HAS(loom_last_error(), n1);
    if (n2) ASSERT_HAS(loom_last_error(), n2);
}

/* ---- the registry ------------------------------------------------------------ */
START_TEST(builtin_cpu)
{
    reset("", NULL);
    loom_backend *cpu = loom_backend_find("cpu");
    ck_assert_ptr_nonnull(cpu);
    ck_assert_ptr_eq(loom_backend_at(0), cpu); /* registered first */
    ck_assert_str_eq(loom_backend_origin(cpu), "built-in");
    ck_assert(loom_backend_available(cpu));
    ck_assert_str_eq(loom_backend_reason(cpu), "");
    ck_assert_int_eq(loom_backend_device_count(cpu), 1);
    ck_assert_str_eq(loom_backend_iface(cpu)->name, "cpu");
    loom_device_info info;
    ck_assert_int_eq(loom_backend_device_info(cpu, 0, &info), LOOM_OK);
    ck_assert_int_ne(loom_backend_device_info(cpu, 1, &info), LOOM_OK);
    ck_assert_ptr_null(loom_backend_find("example"));
    ck_assert_ptr_null(loom_backend_find(NULL));
    ck_assert_ptr_null(loom_backend_at(-1));
    ck_assert_ptr_null(loom_backend_at(loom_backend_count()));
}
END_TEST

START_TEST(example_plugin_loads)
{
    reset(EXAMPLE_PLUGIN_DIR, NULL);
    loom_backend *b = loom_backend_find("example");
    ck_assert_ptr_nonnull(b);
    ck_assert_msg(loom_backend_available(b), "example: %s", loom_backend_reason(b));
    ASSERT_HAS(loom_backend_origin(b), "/libloom-example.so");
    ck_assert_int_eq(loom_backend_device_count(b), 1);
    loom_device_info info;
    ck_assert_int_eq(loom_backend_device_info(b, 0, &info), LOOM_OK);
    ck_assert_str_eq(info.name, "example host device");

    loom_device *d;
    ck_assert_int_eq(loom_device_open(b, 0, &d), LOOM_OK);
    ck_assert_str_eq(loom_device_label(d), "example:0");
    ck_assert_str_eq(loom_device_iface(d)->name, "example");
    loom_device_close(d);
    ck_assert_int_eq(loom_device_open(b, 1, &d), LOOM_ERR_NOT_FOUND);
    ck_assert_ptr_null(d);
    loom_device_close(NULL);
    loom_devices_close(NULL, 0);
}
END_TEST

START_TEST(init_is_idempotent_and_reinit_rescans)
{
    reset("", NULL);
    int n = loom_backend_count();
    loom_backend *cpu = loom_backend_find("cpu");
    ck_assert_int_eq(loom_registry_init(), LOOM_OK);
    ck_assert_int_eq(loom_backend_count(), n);
    ck_assert_ptr_eq(loom_backend_find("cpu"), cpu);
    ck_assert_ptr_null(loom_backend_find("example"));

    /* the environment is read again after a shutdown */
    reset(EXAMPLE_PLUGIN_DIR, NULL);
    ck_assert_int_eq(loom_backend_count(), n + 1);
    ck_assert_ptr_nonnull(loom_backend_find("example"));
    reset("", NULL);
    ck_assert_ptr_null(loom_backend_find("example"));

    /* accessors and loom_select initialise lazily */
    loom_registry_shutdown();
    setenv("LOOM_PLUGIN_PATH", EXAMPLE_PLUGIN_DIR, 1);
    ck_assert_ptr_nonnull(loom_backend_find("example"));
    loom_registry_shutdown();
    expect_select("example", "example:0,cpu:0");
}
END_TEST

static void *init_thread(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)(loom_registry_init() == LOOM_OK ? loom_backend_count() : -1);
}

START_TEST(concurrent_init)
{
    loom_registry_shutdown();
    setenv("LOOM_PLUGIN_PATH", EXAMPLE_PLUGIN_DIR ":" TEST_PLUGIN_DIR, 1);
    pthread_t t[8];
    for (int i = 0; i < 8; i++) ck_assert_int_eq(pthread_create(&t[i], NULL, init_thread, NULL), 0);
    int first = -2;
    for (int i = 0; i < 8; i++) {
        void *r;
        pthread_join(t[i], &r);
        int n = (int)(intptr_t)r;
        ck_assert_int_gt(n, 2);
        if (first == -2) first = n;
        ck_assert_int_eq(n, first);
    }
    ck_assert_int_eq(loom_backend_count(), first);
    int seen = 0;
    for (int i = 0; i < first; i++) seen += !strcmp(loom_backend_name(loom_backend_at(i)), "example");
    ck_assert_int_eq(seen, 1);
}
END_TEST

START_TEST(plugin_path_parsing)
{
    /* empty entries and missing directories are ignored */
    reset("::/nonexistent/loom/plugins::" EXAMPLE_PLUGIN_DIR "::", NULL);
    ck_assert_ptr_nonnull(loom_backend_find("example"));
    ck_assert(loom_backend_available(loom_backend_find("example")));
}
END_TEST

/* Copies src to dir/name. */
static void copy_file(const char *src, const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *in = fopen(src, "rb"), *out = fopen(path, "wb");
    ck_assert_msg(in && out, "copy %s -> %s", src, path);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) ck_assert_uint_eq(fwrite(buf, 1, n, out), n);
    fclose(in);
    ck_assert_int_eq(fclose(out), 0);
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
}

static void remove_dir(const char *dir, const char *const *names)
{
    char path[4096];
    for (int i = 0; names[i]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}

START_TEST(first_plugin_wins_and_names_filter)
{
    char dir[] = "/tmp/loom-test-registry-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    copy_file(EXAMPLE_PLUGIN_DIR "/libloom-example.so", dir, "libloom-example.so");
    copy_file(EXAMPLE_PLUGIN_DIR "/libloom-example.so", dir, "libloom-cpu.so"); /* cannot shadow the built-in */
    write_file(dir, "libloom-garbage.so", "this is not an ELF file\n");
    write_file(dir, "libloom-.so", "ignored: no name\n");
    write_file(dir, "libloom-x.so.1", "ignored: not .so\n");
    write_file(dir, "libloom-bad:name.so", "ignored: ':' in the name\n");
    write_file(dir, "loom-y.so", "ignored: no lib prefix\n");

    char path[8192];
    snprintf(path, sizeof path, "%s:%s", dir, EXAMPLE_PLUGIN_DIR);
    reset(path, NULL);
    int n_example = 0, n_cpu = 0;
    for (int i = 0; i < loom_backend_count(); i++) {
        const char *name = loom_backend_name(loom_backend_at(i));
        ck_assert_msg(strcmp(name, "") && strcmp(name, "x") && strcmp(name, "y") && !strchr(name, ':'),
                      "registered '%s'", name);
        n_example += !strcmp(name, "example");
        n_cpu += !strcmp(name, "cpu");
    }
    ck_assert_int_eq(n_example, 1);
    ck_assert_int_eq(n_cpu, 1);
    ck_assert_str_eq(loom_backend_origin(loom_backend_find("cpu")), "built-in");
    loom_backend *ex = loom_backend_find("example");
    ASSERT_HAS(loom_backend_origin(ex), dir); /* the first directory's copy */
    ck_assert(loom_backend_available(ex));

    loom_backend *g = loom_backend_find("garbage");
    ck_assert_ptr_nonnull(g);
    ck_assert(!loom_backend_available(g));
    ASSERT_HAS(loom_backend_reason(g), "dlopen failed");
    ck_assert_int_eq(loom_backend_device_count(g), 0);
    ck_assert_ptr_null(loom_backend_iface(g));

    loom_registry_shutdown();
    remove_dir(dir, (const char *const[]){"libloom-example.so", "libloom-cpu.so", "libloom-garbage.so", "libloom-.so",
                                           "libloom-x.so.1", "libloom-bad:name.so", "loom-y.so", NULL});
}
END_TEST

/* ---- the bad plugins ------------------------------------------------------------ */
static const struct {
    const char *name, *cause1, *cause2;
} bad[] = {
    {"badabi",       "ABI mismatch",                 "ABI 42"},
    {"badnosym",     "no symbol loom_backend_entry", NULL},
    {"badinitfail",  "init failed",                  "initfail: no such driver (test plugin)"},
    {"badnulls",     "required interface members are NULL", "compile, execute"},
    {"badmisname",   "'othername'",                  "libloom-badmisname.so"},
    {"badnullentry", "returned NULL",                "nullentry: this host is not for me"},
    {"badnodev",     "no devices",                   NULL},
    {"badundef",     "dlopen failed",                "loom_test_symbol_that_does_not_exist"},
};

START_TEST(bad_plugin_is_listed_unavailable)
{
    reset(TEST_PLUGIN_DIR ":" EXAMPLE_PLUGIN_DIR, NULL);
    loom_backend *b = loom_backend_find(bad[_i].name);
    ck_assert_msg(b != NULL, "%s not registered", bad[_i].name);
    ck_assert(!loom_backend_available(b));
    ASSERT_HAS(loom_backend_origin(b), TEST_PLUGIN_DIR);
    ASSERT_HAS(loom_backend_reason(b), bad[_i].cause1);
    if (bad[_i].cause2) ASSERT_HAS(loom_backend_reason(b), bad[_i].cause2);
    ck_assert_int_eq(loom_backend_device_count(b), 0);
    ck_assert_ptr_null(loom_backend_iface(b));
    loom_device_info info;
    ck_assert_int_ne(loom_backend_device_info(b, 0, &info), LOOM_OK);
    loom_device *d;
    ck_assert_int_ne(loom_device_open(b, 0, &d), LOOM_OK);
    ck_assert_ptr_null(d);

    /* naming it is an error that gives its reason and what is available */
    expect_fail(bad[_i].name, LOOM_ERR_UNSUPPORTED, "is unavailable", bad[_i].cause1);
    ASSERT_HAS(loom_last_error(), "available: cpu, example");

    /* the good ones still work */
    ck_assert(loom_backend_available(loom_backend_find("example")));
    expect_select("example", "example:0,cpu:0");
}
END_TEST

START_TEST(bad_plugins_are_never_auto_selected)
{
    reset(TEST_PLUGIN_DIR, NULL);
    int others = 0;
    for (int i = 0; i < loom_backend_count(); i++) {
        loom_backend *b = loom_backend_at(i);
        if (strcmp(loom_backend_name(b), "cpu") && loom_backend_available(b)) others++;
    }
    if (!others) expect_select(NULL, "cpu:0"); /* build-tree GPU plugins may be available on this machine */
    ck_assert_int_ge(loom_backend_count(), 1 + (int)(sizeof bad / sizeof *bad));
}
END_TEST

/* ---- selection -------------------------------------------------------------------- */
/* What the auto rule says: cuda > vulkan > opencl > other plugins (by name) > cpu. */
/* A backend whose device 0 is the host CPU (PoCL, lavapipe) ranks after the built-in CPU. */
static bool on_host_cpu(loom_backend *b)
{
    loom_device_info info;
    return loom_backend_device_info(b, 0, &info) == LOOM_OK && info.host_cpu;
}

static const char *expected_auto(void)
{
    static const char *const first[] = {"cuda", "vulkan", "opencl"};
    for (int i = 0; i < 3; i++) {
        loom_backend *b = loom_backend_find(first[i]);
        if (b && loom_backend_available(b) && !on_host_cpu(b)) return first[i];
    }
    const char *best = NULL;
    for (int i = 0; i < loom_backend_count(); i++) {
        loom_backend *b = loom_backend_at(i);
        const char *n = loom_backend_name(b);
        if (!loom_backend_available(b) || !strcmp(n, "cpu") || on_host_cpu(b)) continue;
        if (!strcmp(n, "cuda") || !strcmp(n, "vulkan") || !strcmp(n, "opencl")) continue;
        if (!best || strcmp(n, best) < 0) best = n;
    }
    return best ? best : "cpu";
}

START_TEST(auto_selection_follows_the_rule)
{
    reset(EXAMPLE_PLUGIN_DIR ":" TEST_PLUGIN_DIR, NULL);
    char want[128];
    const char *name = expected_auto();
    snprintf(want, sizeof want, strcmp(name, "cpu") ? "%s:0,cpu:0" : "%s:0", name);
    expect_select(NULL, want);
    expect_select("", want);
    setenv("LOOM_BACKEND", "  ", 1); /* blank is unset */
    expect_select(NULL, want);
    if (!loom_backend_find("cuda") && !loom_backend_find("vulkan") && !loom_backend_find("opencl"))
        ck_assert_str_eq(name, "example"); /* a plugin beats the CPU */
}
END_TEST

START_TEST(explicit_lists)
{
    reset(EXAMPLE_PLUGIN_DIR, NULL);
    expect_select("cpu", "cpu:0");
    expect_select("cpu:0", "cpu:0");
    expect_select("example", "example:0,cpu:0");       /* CPU appended as the fallback */
    expect_select("example:0", "example:0,cpu:0");
    expect_select("example,cpu", "example:0,cpu:0");
    expect_select("cpu,example", "cpu:0,example:0");   /* CPU named: not appended again */
    expect_select(" example , cpu:0 ", "example:0,cpu:0");
    expect_select("\texample\t", "example:0,cpu:0");
    expect_select("cpu:00", "cpu:0");                  /* decimal */

    /* LOOM_BACKEND when the spec is NULL or empty; a spec overrides it */
    setenv("LOOM_BACKEND", "example", 1);
    expect_select(NULL, "example:0,cpu:0");
    expect_select("", "example:0,cpu:0");
    expect_select("cpu", "cpu:0");
    setenv("LOOM_BACKEND", "cuda:", 1);
    expect_select("cpu", "cpu:0");
}
END_TEST

static const char *const malformed[] = {
    "cuda:", "cuda:x", ":1", "cuda:-1", "a,,b", ",cpu", "cpu,", ",", "cpu,cpu", "cpu:0,cpu", "example,cpu,example:0",
    "cpu :0", "cpu: 0", "cp u", "cpu:1x", "cpu:+1", "cpu:0x1", "cpu;example", "cpu:1:2", "cpu:99999999999999999999",
    "c/pu", "cpu ,, example",
};

START_TEST(malformed_spec_is_invalid)
{
    reset(EXAMPLE_PLUGIN_DIR, NULL);
    char quoted[128];
    /* as an argument */
    snprintf(quoted, sizeof quoted, "'%s'", malformed[_i]);
    expect_fail(malformed[_i], LOOM_ERR_INVALID, quoted, "malformed");
    ck_assert_msg(!contains(loom_last_error(), "LOOM_BACKEND"), "spec error blames the variable: %s", loom_last_error());
    /* from the environment: the message names the variable */
    setenv("LOOM_BACKEND", malformed[_i], 1);
    snprintf(quoted, sizeof quoted, "LOOM_BACKEND='%s'", malformed[_i]);
    expect_fail(NULL, LOOM_ERR_INVALID, quoted, "malformed");
}
END_TEST

START_TEST(unknown_name_lists_available)
{
    reset(EXAMPLE_PLUGIN_DIR ":" TEST_PLUGIN_DIR, "cudda");
    expect_fail(NULL, LOOM_ERR_NOT_FOUND, "unknown backend 'cudda' in LOOM_BACKEND", "available: cpu, example");
    ASSERT_HAS(loom_last_error(), "(unavailable: ");
    ASSERT_HAS(loom_last_error(), "badinitfail: init failed");
    expect_fail("example,nope:1", LOOM_ERR_NOT_FOUND, "unknown backend 'nope' in backend list 'example,nope:1'",
                "available: cpu, example");

    reset(EXAMPLE_PLUGIN_DIR, NULL); /* all available: no "unavailable" part */
    expect_fail("cudda", LOOM_ERR_NOT_FOUND, "available: cpu, example", NULL);
    bool all_available = true; /* a GPU plugin of the build tree may be there without its driver */
    for (int i = 0; i < loom_backend_count(); i++) all_available &= loom_backend_available(loom_backend_at(i));
    if (all_available) ck_assert_msg(!contains(loom_last_error(), "unavailable"), "%s", loom_last_error());
    expect_fail("CPU", LOOM_ERR_NOT_FOUND, "unknown backend 'CPU'", NULL); /* names are exact */
}
END_TEST

START_TEST(device_out_of_range)
{
    reset(EXAMPLE_PLUGIN_DIR, NULL);
    expect_fail("cpu:1", LOOM_ERR_NOT_FOUND, "no device cpu:1", "has 1 device");
    expect_fail("example:3,cpu", LOOM_ERR_NOT_FOUND, "no device example:3", "has 1 device (example:0)");
    setenv("LOOM_BACKEND", "example:1", 1);
    expect_fail(NULL, LOOM_ERR_NOT_FOUND, "LOOM_BACKEND='example:1'", "has 1 device");
}
END_TEST

START_TEST(close_after_shutdown)
{
    reset(EXAMPLE_PLUGIN_DIR, NULL);
    loom_device **devs;
    int n;
    ck_assert_int_eq(loom_select("example", &devs, &n), LOOM_OK);
    ck_assert_int_eq(n, 2);
    loom_registry_shutdown(); /* devices still open: their backends outlive the registry */
    ck_assert_str_eq(loom_device_label(devs[0]), "example:0");
    loom_buffer *buf;
    ck_assert_int_eq(loom_device_iface(devs[0])->buffer_alloc(loom_device_ctx(devs[0]), 64, &buf), LOOM_OK);
    loom_device_iface(devs[0])->buffer_free(loom_device_ctx(devs[0]), buf);
    loom_devices_close(devs, n);
    reset(EXAMPLE_PLUGIN_DIR, NULL);
    expect_select("example", "example:0,cpu:0");
}
END_TEST

static Suite *registry_suite(void)
{
    Suite *s = suite_create("registry");
    TCase *tc = tcase_create("registry");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, builtin_cpu);
    tcase_add_test(tc, example_plugin_loads);
    tcase_add_test(tc, init_is_idempotent_and_reinit_rescans);
    tcase_add_test(tc, concurrent_init);
    tcase_add_test(tc, plugin_path_parsing);
    tcase_add_test(tc, first_plugin_wins_and_names_filter);
    tcase_add_loop_test(tc, bad_plugin_is_listed_unavailable, 0, (int)(sizeof bad / sizeof *bad));
    tcase_add_test(tc, bad_plugins_are_never_auto_selected);
    suite_add_tcase(s, tc);

    TCase *sel = tcase_create("select");
    tcase_add_checked_fixture(sel, NULL, teardown);
    tcase_add_test(sel, auto_selection_follows_the_rule);
    tcase_add_test(sel, explicit_lists);
    tcase_add_loop_test(sel, malformed_spec_is_invalid, 0, (int)(sizeof malformed / sizeof *malformed));
    tcase_add_test(sel, unknown_name_lists_available);
    tcase_add_test(sel, device_out_of_range);
    tcase_add_test(sel, close_after_shutdown);
    suite_add_tcase(s, sel);
    return s;
}

int main(void)
{
    return loom_test_run(registry_suite());
}
