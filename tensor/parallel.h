/* The OpenMP policy — the one header that holds it. Kernels write
 *     TG_PARALLEL_FOR(n) for (int64_t i = 0; i < n; i++) ...
 * and get a parallel loop only when n elements are worth the fork (about 5 us of work). */
#ifndef TAPEGRAD_PARALLEL_H
#define TAPEGRAD_PARALLEL_H

#include <stdint.h>

/* Below this many elements of simple work a loop runs on one thread: waking the team costs
 * more than it saves. Measured with bench/bench_core (elementwise add, 2 cores).
 * Note that a region whose if clause is false still enters libgomp, which costs a futex
 * system call (about 2 us on these VMs): hot paths that often see tiny inputs (the elementwise
 * ops) call their kernel directly when there is a single chunk of work. */
#define TG_PARALLEL_MIN 32768

#define TG_PRAGMA(x) _Pragma(#x)
/* Whether n items of per_item elements each are worth a parallel loop: TG_PARALLEL_FOR_WORK's
 * test, for kernels that run their loop without any region when it fails (see above). */
#define TG_PARALLEL_WORTH(n, per_item)                                                             \
    ((int64_t)(n) * (int64_t)(per_item) > TG_PARALLEL_MIN && (n) > 1)
#ifdef _OPENMP
#include <omp.h>
/* Parallel for over n items, static schedule, only when n > TG_PARALLEL_MIN: strictly above,
 * as PyTorch's grain size, so that a [64, 512] GRU gate of exactly 32768 elements stays on one
 * thread, where a 2-thread region cost more than it saved. Both macros take
 * tg_set_num_threads' process-wide count (TG_OMP_NUM_THREADS, tensor/internal.h). */
#define TG_PARALLEL_FOR(n)                                                                         \
    TG_PRAGMA(omp parallel for schedule(static) TG_OMP_NUM_THREADS if ((n) > TG_PARALLEL_MIN))
/* Same, for loops whose n items are each heavy (rows, channels): cost hint is elements per item. */
#define TG_PARALLEL_FOR_WORK(n, per_item)                                                          \
    TG_PRAGMA(omp parallel for schedule(static) TG_OMP_NUM_THREADS if (TG_PARALLEL_WORTH(n, per_item)))
/* Parallel for over the items of a team whose size the caller chose, one item a thread: for
 * loops whose items each hold a thread's share of fixed work, such as the images of a
 * convolution's chunk (tg_team_run below, which runs a team of 1 without it). */
#define TG_PARALLEL_TEAM(team) TG_PRAGMA(omp parallel for schedule(static) num_threads(team))
/* True on a thread of a parallel region, where a nested region would get that thread alone. */
#define TG_IN_PARALLEL() omp_in_parallel()
#else
#define TG_PARALLEL_FOR(n)
#define TG_PARALLEL_FOR_WORK(n, per_item)
#define TG_PARALLEL_TEAM(team)
#define TG_IN_PARALLEL() 0
#endif

/* Whether a loop of n items of per_item elements gets a parallel region at all: worth one
 * (TG_PARALLEL_WORTH), and not on a thread of a region already (a team's, tg_team_run), where
 * it would get that thread alone. Otherwise the caller runs the loop with no region: one whose
 * if clause is false still enters libgomp, and per-image calls made hundreds of those per GAN
 * iteration (autograd/conv.c). */
#define TG_PARALLEL_FORK(n, per_item) (TG_PARALLEL_WORTH(n, per_item) && !TG_IN_PARALLEL())

/* Runs fn(ctx, t, n*t/team, n*(t+1)/team) for every thread t of a team: each thread its own
 * contiguous items (images), so a result summed over them depends on the team's size only,
 * never on timing. A team of one runs on the calling thread without a region. For
 * convolutions' batches (autograd/conv.c, autograd/winograd.c). */
typedef void (*tg_team_fn)(void *ctx, int t, int64_t i0, int64_t i1);
static inline void tg_team_run(int team, int64_t n, tg_team_fn fn, void *ctx)
{
    if (team < 2) {
        fn(ctx, 0, 0, n);
        return;
    }
    TG_PARALLEL_TEAM(team)
    for (int t = 0; t < team; t++)
        fn(ctx, t, n * t / team, n * (t + 1) / team);
}

#endif
