/* check_main.h — shared by the Check test programs: run a suite (exit 0 iff
 * nothing failed) and read a whole test-data file. */
#ifndef LOOM_CHECK_MAIN_H
#define LOOM_CHECK_MAIN_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>

/* The whole file, NUL-terminated (malloc'd), or NULL; *len gets its size. */
static inline char *loom_test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0, k;
    char *buf = malloc(cap + 1);
    while (buf && (k = fread(buf + n, 1, cap - n, f)) > 0) {
        n += k;
        if (n == cap) {
            char *nb = realloc(buf, 2 * cap + 1);
            if (!nb) free(buf);
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf) buf[n] = 0;
    if (len) *len = n;
    return buf;
}

static inline int loom_test_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

#endif
