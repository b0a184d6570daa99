/* prefault: host memory written and given back ahead of a restore. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "prefault.h"

/* The process's resident memory, in KiB. */
static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "re");
    assert_non_null(f);
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kib = strtol(line + 6, NULL, 10);
    fclose(f);
    return kib;
}

static void test_writes_and_gives_back(void **state)
{
    (void)state;
    long before = rss_kib();
    Prefault *p = NULL;
    assert_int_equal(prefault_start(64, &p), 0);
    assert_non_null(p);
    prefault_finish(p);
    /* Everything written was given back: the process holds about what it held. */
    assert_true(rss_kib() < before + 16 * 1024);
}

static void test_bounds(void **state)
{
    (void)state;
    Prefault *p = (Prefault *)1;
    assert_int_equal(prefault_start(0, &p), -EINVAL);
    assert_int_equal(prefault_start(PREFAULT_MAX_MIB + 1, &p), -EINVAL);
    assert_ptr_equal(p, (Prefault *)1);
    prefault_finish(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_writes_and_gives_back),
        cmocka_unit_test(test_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
