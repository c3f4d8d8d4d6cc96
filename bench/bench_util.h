/* The clock, the sort and the exit every benchmark program uses. Include it after tapegrad's
 * headers, with BENCH_NAME (the program's name, for messages) defined. Header-only: each bench
 * is one file. */
#ifndef TAPEGRAD_BENCH_UTIL_H
#define TAPEGRAD_BENCH_UTIL_H

#include <stdio.h>
#include <stdlib.h>
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
static inline void die(const char *what)
{
    fprintf(stderr, "%s: %s: %s\n", BENCH_NAME, what, tg_last_error());
    exit(1);
}

#endif
