/* check_main.h — what every Check test program ends with: run a suite,
 * exit 0 iff nothing failed. */
#ifndef LOOM_CHECK_MAIN_H
#define LOOM_CHECK_MAIN_H

#include <check.h>

static inline int loom_test_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

#endif
