/*
 * The invariant check every libFuzzer target of test/fuzz/ uses: a failed
 * invariant names itself and its line, then aborts so libFuzzer keeps the
 * input as a crash artifact.
 */
#ifndef GW_FUZZ_CHECK_H
#define GW_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "invariant failed: %s (line %d)\n", #c, __LINE__);                     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
