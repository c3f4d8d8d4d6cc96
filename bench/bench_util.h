/* The clock, the sort and the exit every benchmark program uses. Include it after tapegrad's
 * headers, with BENCH_NAME (the program's name, for messages) defined. Header-only: each bench
 * is one file. */
#ifndef TAPEGRAD_BENCH_UTIL_H
#define TAPEGRAD_BENCH_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Seconds on the monotonic clock. */
static inline double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Milliseconds on the same clock. */
static inline double now_ms(void)
{
    return now() * 1e3;
}

/* qsort's order for doubles. */
static inline int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of v[0..n) (sorts v). */
static inline double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

/* A failed library call: its message, exit 1 (benchmarks never continue half-measured). */
_Noreturn static inline void die(const char *what)
{
    fprintf(stderr, "%s: %s: %s\n", BENCH_NAME, what, tg_last_error());
    exit(1);
}

/* The model benches' flags, --threads T --iters N --warmup W, into the given defaults; prints
 * the usage and exits 2 on anything else, then sets the thread count (exit 1 if refused). */
static inline void bench_model_flags(int argc, char **argv, int64_t *threads, int64_t *iters,
                                     int64_t *warmup)
{
    for (int i = 1; i < argc; i += 2) {
        int64_t *dst = !strcmp(argv[i], "--threads")  ? threads
                       : !strcmp(argv[i], "--iters")  ? iters
                       : !strcmp(argv[i], "--warmup") ? warmup
                                                      : NULL;
        if (!dst || i + 1 >= argc || tg_parse_int(argv[i + 1], 0, 100000, dst) != TG_OK) {
            fprintf(stderr, "usage: %s [--threads T] [--iters N] [--warmup W]\n", BENCH_NAME);
            exit(2);
        }
    }
    if (*iters < 1 || tg_set_num_threads((int)*threads) != TG_OK)
        die("--threads / --iters");
}

#endif
