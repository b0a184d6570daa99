/*
 * The fuzzers' invariant check: a broken one names the fuzzer (FUZZ_NAME,
 * defined before this header is included), the line and the condition,
 * then aborts so libFuzzer keeps the input.
 */
#pragma once

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fuzz_fail(#cond, __LINE__);                                                            \
    } while (0)

static __attribute__((noreturn)) void fuzz_fail(const char *what, int line)
{
    fprintf(stderr, FUZZ_NAME ": invariant broken at line %d: %s\n", line, what);
    abort();
}
