/* bench_allreduce: what tg_dist_allreduce_grads costs for the default mnist_gan (tutorial
 * recipe, upsample G, the tutorial's widths), run under mpirun:
 *
 *   mpirun -np 2 --oversubscribe build/bench/bench_allreduce [--iters N] [--warmup W]
 *
 * A data-parallel tutorial iteration makes three updates, so it averages D's gradients twice
 * (the real-batch and the fake-batch update) and G's once: 2 |D| + |G| floats. This times, on
 * gradients of exactly those shapes, tg_dist_allreduce_grads over D's parameters and over G's
 * (median of N after W warm-up calls; every rank synchronised by a barrier before each call,
 * the slowest rank's time counts), then one MPI_Allreduce of the same bytes as one contiguous
 * buffer, without tg_dist's copies, and one of a single int (the latency of each of tg_dist's
 * small agreements), for comparison. Rank 0 prints the bytes, the seconds, the
 * algorithm bandwidth (bytes / seconds) and the bus bandwidth (2 (N - 1) / N of it: what each
 * rank sends and receives in a ring allreduce), the numbers for bench/README.md's projection.
 * One OpenMP thread (the copies are memcpy; the ranks share the machine's cores). */
#define BENCH_NAME "bench_allreduce"
#include "dist.h"
#include "gan.h"

#include "bench_util.h"

#include <mpi.h>

/* Every parameter of m, with a gradient of random values (the bench's own, not training's). */
static tg_tensor **with_grads(tg_module *m, int64_t *n, int64_t *numel, tg_rng *rng)
{
    tg_tensor **p = tg_module_parameters(m, n);
    if (!p)
        die("tg_module_parameters");
    *numel = 0;
    for (int64_t i = 0; i < *n; i++) {
        tg_tensor *g = tg_tensor_new(p[i]->ndim, p[i]->shape);
        if (!g || tg_tensor_uniform_(g, rng, -1.0f, 1.0f) != TG_OK ||
            tg_tensor_set_grad(p[i], g) != TG_OK)
            die("a gradient");
        tg_tensor_release(g);
        *numel += p[i]->numel;
    }
    return p;
}

/* The median over ranks' slowest of `iters` timed calls of what(arg), after `warmup`. */
typedef tg_status (*call_fn)(void *arg);
static double time_calls(call_fn what, void *arg, int64_t warmup, int64_t iters)
{
    double *t = malloc(sizeof(double) * (size_t)iters);
    if (!t)
        die("out of memory");
    for (int64_t i = 0; i < warmup + iters; i++) {
        MPI_Barrier(MPI_COMM_WORLD);
        const double t0 = now();
        if (what(arg) != TG_OK)
            die("the timed call");
        double mine = now() - t0, slowest = 0;
        MPI_Allreduce(&mine, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        if (i >= warmup)
            t[i - warmup] = slowest;
    }
    const double m = median(t, (int)iters);
    free(t);
    return m;
}

typedef struct {
    tg_dist *d;
    tg_tensor **p;
    int64_t n;
} grads_arg;
static tg_status call_grads(void *arg)
{
    grads_arg *a = arg;
    return tg_dist_allreduce_grads(a->d, a->p, a->n);
}

typedef struct {
    float *buf;
    int count;
} raw_arg;
static tg_status call_raw(void *arg)
{
    raw_arg *a = arg;
    return MPI_Allreduce(MPI_IN_PLACE, a->buf, a->count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD) ==
                   MPI_SUCCESS
               ? TG_OK
               : tg_set_error(TG_ERR_STATE, "MPI_Allreduce failed");
}

/* One MPI_Allreduce of one int: the latency each of tg_dist's small agreements costs (the
 * gradients' call makes four: arguments, counts, which have gradients, their preparation). */
static tg_status call_tiny(void *arg)
{
    (void)arg;
    int one = 1, sum = 0;
    return MPI_Allreduce(&one, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD) == MPI_SUCCESS
               ? TG_OK
               : tg_set_error(TG_ERR_STATE, "MPI_Allreduce failed");
}

static void report(int size, const char *what, int64_t floats, double sec)
{
    const double bytes = 4.0 * (double)floats;
    printf("| %s | %.2f MB | %.3f ms | %.2f GB/s | %.2f GB/s |\n", what, bytes / 1e6, sec * 1e3,
           bytes / sec / 1e9, 2.0 * (size - 1) / size * bytes / sec / 1e9);
}

int main(int argc, char **argv)
{
    tg_dist *d = NULL;
    if (tg_dist_init(&argc, &argv, &d) != TG_OK)
        die("tg_dist_init");
    int64_t threads = 1, iters = 20, warmup = 3;
    bench_model_flags(argc, argv, &threads, &iters, &warmup);
    if (iters < 1)
        iters = 1;
    const int rank = tg_dist_rank(d), size = tg_dist_size(d);

    gan_widths w = gan_widths_default(1);
    gan_config c = gan_config_default(GAN_RECIPE_TUTORIAL);
    gan_state s;
    if (gan_state_init(&s, &c, &w) != TG_OK)
        die("gan_state_init");
    tg_rng rng;
    tg_rng_seed(&rng, 11 + (uint64_t)rank);
    grads_arg gd = {d, NULL, 0}, gg = {d, NULL, 0};
    int64_t d_numel, g_numel;
    gd.p = with_grads(s.D, &gd.n, &d_numel, &rng);
    gg.p = with_grads(s.G, &gg.n, &g_numel, &rng);

    const double t_d = time_calls(call_grads, &gd, warmup, iters);
    const double t_g = time_calls(call_grads, &gg, warmup, iters);
    const int64_t iter_floats = 2 * d_numel + g_numel;
    raw_arg raw = {calloc((size_t)iter_floats, sizeof(float)), (int)iter_floats};
    if (!raw.buf)
        die("out of memory");
    const double t_raw = time_calls(call_raw, &raw, warmup, iters);
    const double t_tiny = time_calls(call_tiny, NULL, warmup, iters);
    if (rank == 0) {
        printf("bench_allreduce: %d ranks, default tutorial GAN: D %lld parameters in %lld "
               "tensors, G %lld in %lld; median of %lld after %lld warm-up\n\n",
               size, (long long)d_numel, (long long)gd.n, (long long)g_numel, (long long)gg.n,
               (long long)iters, (long long)warmup);
        printf("| what | bytes | time | algorithm bandwidth | bus bandwidth |\n"
               "|---|---|---|---|---|\n");
        report(size, "tg_dist_allreduce_grads, D", d_numel, t_d);
        report(size, "tg_dist_allreduce_grads, G", g_numel, t_g);
        report(size, "one iteration (2 D + G)", iter_floats, 2 * t_d + t_g);
        report(size, "one MPI_Allreduce of the iteration's bytes", iter_floats, t_raw);
        printf("\nlatency of one MPI_Allreduce of one int: %.1f us\n", t_tiny * 1e6);
    }
    free(raw.buf);
    free(gd.p);
    free(gg.p);
    gan_state_free(&s);
    tg_dist_finalize(d);
    return 0;
}
