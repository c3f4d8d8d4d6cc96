/* bench_core: the cost of the engine itself.
 *  1. Recording a tiny op: a 1-element add on a grad tape, then its backward, in ns per op.
 *  2. Throughput of large elementwise ops and a reduction, in GB/s, against memcpy's bandwidth
 *     measured in the same run (the reference: an elementwise op moves as many bytes).
 *  3. Batched matmul at attention shapes, in GFLOP/s, against one GEMM on the flattened shape
 *     (the batch folded into the rows: the same multiply-adds); issue 14 asks for >= 60%.
 * Usage: bench_core [--threads T] [--json] [--bmm (part 3 alone)]. Prints ratios, never asserts
 * anything. */
#include "autograd.h"

#define BENCH_NAME "bench_core"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ns per (record + backward) of a chain of `ops` tiny adds, median of `reps` runs. */
static void tiny_ops(int ops, int reps, double *record_ns, double *total_ns)
{
    tg_tensor *x = tg_tensor_scalar(1.0f), *c = tg_tensor_scalar(0.5f);
    tg_tensor_set_requires_grad(x, true);
    double *rec = malloc(sizeof(double) * (size_t)reps),
           *tot = malloc(sizeof(double) * (size_t)reps);
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        tg_tape *tape = tg_tape_begin(TG_GRAD);
        tg_tensor *y = x;
        for (int i = 0; i < ops; i++)
            y = tg_add(y, c);
        double t1 = now();
        if (!y || tg_backward(y) != TG_OK)
            die("tiny op chain");
        tg_tape_end(tape);
        double t2 = now();
        tg_tensor_zero_grad(x);
        rec[r] = (t1 - t0) * 1e9 / ops;
        tot[r] = (t2 - t0) * 1e9 / ops;
    }
    *record_ns = median(rec, reps);
    *total_ns = median(tot, reps);
    free(rec);
    free(tot);
    tg_tensor_release(x);
    tg_tensor_release(c);
}

/* GB/s of memcpy over n floats (read n, write n), median of reps. */
static double memcpy_gbs(int64_t n, int reps)
{
    float *a = malloc(sizeof(float) * (size_t)n), *b = malloc(sizeof(float) * (size_t)n);
    memset(a, 1, sizeof(float) * (size_t)n);
    memset(b, 0, sizeof(float) * (size_t)n);
    double *t = malloc(sizeof(double) * (size_t)reps);
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        memcpy(b, a, sizeof(float) * (size_t)n);
        t[r] = now() - t0;
        a[r % n] = b[(r * 7) % n]; /* keep the copies observable */
    }
    double s = median(t, reps);
    free(a);
    free(b);
    free(t);
    return 2.0 * (double)n * sizeof(float) / s / 1e9;
}

typedef enum { OP_ADD, OP_MUL_BCAST, OP_RELU, OP_TANH, OP_SUM, OP_SUM_AXIS } big_op;

/* GB/s of one forward of a large op (bytes read + written), median of reps. */
static double big_op_gbs(big_op op, int64_t n, int reps, tg_rng *rng)
{
    const int64_t cols = 1024, rows = n / cols;
    tg_tensor *a = tg_tensor_new(TG_DIMS(rows, cols)), *b = tg_tensor_new(TG_DIMS(rows, cols));
    tg_tensor *row = tg_tensor_new(TG_DIMS(cols));
    tg_tensor_uniform_(a, rng, -1, 1);
    tg_tensor_uniform_(b, rng, -1, 1);
    tg_tensor_uniform_(row, rng, -1, 1);
    double *t = malloc(sizeof(double) * (size_t)reps), bytes = 0;
    for (int r = 0; r < reps; r++) {
        tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
        double t0 = now();
        tg_tensor *y = NULL;
        switch (op) {
        case OP_ADD:
            y = tg_add(a, b);
            bytes = 3.0 * (double)n * 4;
            break;
        case OP_MUL_BCAST:
            y = tg_mul(a, row);
            bytes = 2.0 * (double)n * 4;
            break;
        case OP_RELU:
            y = tg_relu(a);
            bytes = 2.0 * (double)n * 4;
            break;
        case OP_TANH:
            y = tg_tanh(a);
            bytes = 2.0 * (double)n * 4;
            break;
        case OP_SUM:
            y = tg_sum(a);
            bytes = 1.0 * (double)n * 4;
            break;
        case OP_SUM_AXIS:
            y = tg_sum_axis(a, 0, false);
            bytes = 1.0 * (double)n * 4;
            break;
        }
        t[r] = now() - t0;
        if (!y)
            die("large op");
        tg_tape_end(tape);
    }
    double s = median(t, reps);
    free(t);
    tg_tensor_release(a);
    tg_tensor_release(b);
    tg_tensor_release(row);
    return bytes / s / 1e9;
}

/* GFLOP/s of tg_matmul(a, b) (forward: 2 flops per multiply-add; with backward, the two
 * gradient products too), median of reps. */
static double matmul_gflops(int na, const int64_t *as, int nb, const int64_t *bs, bool backward,
                            int reps, tg_rng *rng)
{
    tg_tensor *a = tg_tensor_new(na, as), *b = tg_tensor_new(nb, bs);
    if (!a || !b)
        die("batched matmul operands");
    tg_tensor_uniform_(a, rng, -1, 1);
    tg_tensor_uniform_(b, rng, -1, 1);
    tg_tensor_set_requires_grad(a, backward);
    tg_tensor_set_requires_grad(b, backward);
    double *t = malloc(sizeof(double) * (size_t)reps), flops = 0;
    for (int r = 0; r < reps; r++) {
        tg_tape *tape = tg_tape_begin(backward ? TG_GRAD : TG_NO_GRAD);
        double t0 = now();
        tg_tensor *y = tg_matmul(a, b);
        if (!y || (backward && tg_backward(tg_sum(y)) != TG_OK))
            die("batched matmul");
        t[r] = now() - t0;
        flops = 2.0 * (double)y->numel * (double)as[na - 1] * (backward ? 3 : 1);
        tg_tape_end(tape);
        tg_tensor_zero_grad(a);
        tg_tensor_zero_grad(b);
    }
    double s = median(t, reps);
    free(t);
    tg_tensor_release(a);
    tg_tensor_release(b);
    return flops / s / 1e9;
}

/* Part 3: attention's two products, batch B*heads = 64, T = 64, head size 32, each against the
 * same product with the batch folded into the rows. */
typedef struct {
    const char *name;
    int64_t a[3], b[3], flat_a[2], flat_b[2];
} bmm_case;

static const bmm_case bmm_cases[] = {
    {"[64,64,32] @ [64,32,64]", {64, 64, 32}, {64, 32, 64}, {4096, 32}, {32, 64}},
    {"[64,64,64] @ [64,64,32]", {64, 64, 64}, {64, 64, 32}, {4096, 64}, {64, 32}},
};
#define N_BMM (int)(sizeof bmm_cases / sizeof bmm_cases[0])

/* GFLOP/s of each case, batched and flat, forward (fb = 0) and forward + backward (fb = 1). */
static void bmm_measure(double bmm[][2], double flat[][2], tg_rng *rng)
{
    for (int k = 0; k < N_BMM; k++)
        for (int fb = 0; fb < 2; fb++) {
            const bmm_case *c = &bmm_cases[k];
            bmm[k][fb] = matmul_gflops(3, c->a, 3, c->b, fb, 51, rng);
            flat[k][fb] = matmul_gflops(2, c->flat_a, 2, c->flat_b, fb, 51, rng);
        }
}

static void bmm_print(double bmm[][2], double flat[][2])
{
    printf("\nbatched matmul (attention shapes)   reference: one GEMM on the flattened shape\n");
    printf("  %-26s %-12s %10s %10s %8s\n", "shape", "pass", "GFLOP/s", "flat", "/ flat");
    for (int k = 0; k < N_BMM; k++)
        for (int fb = 0; fb < 2; fb++)
            printf("  %-26s %-12s %10.2f %10.2f %8.2f\n", bmm_cases[k].name,
                   fb ? "fwd+bwd" : "forward", bmm[k][fb], flat[k][fb], bmm[k][fb] / flat[k][fb]);
}

int main(int argc, char **argv)
{
    int threads = 2;
    bool json = false, bmm_only = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--json"))
            json = true;
        else if (!strcmp(argv[i], "--bmm"))
            bmm_only = true;
        else {
            fprintf(stderr, "usage: bench_core [--threads T] [--json] [--bmm]\n");
            return 2;
        }
    }
    if (tg_set_num_threads(threads) != TG_OK)
        die("threads");
    tg_rng rng;
    tg_rng_seed(&rng, 1);

    double bmm[N_BMM][2], flat[N_BMM][2];
    if (bmm_only) {
        bmm_measure(bmm, flat, &rng);
        printf("tapegrad bench_core — %d threads — %s\n", threads, tg_blas_info());
        bmm_print(bmm, flat);
        return tg_debug_live_tensors() == 0 ? 0 : 1;
    }
    double rec1, tot1, rec100, tot100;
    tiny_ops(1, 20001, &rec1, &tot1);      /* one op per tape: includes tape begin/end */
    tiny_ops(100, 2001, &rec100, &tot100); /* a chain: the per-op cost */

    const int64_t n = (int64_t)1 << 24; /* 64 MiB per tensor: far beyond the caches */
    double ref = memcpy_gbs(n, 15);
    static const char *names[] = {"add [16384,1024]+[16384,1024]",
                                  "mul [16384,1024]*[1024]",
                                  "relu [16384,1024]",
                                  "tanh [16384,1024]",
                                  "sum all [16384,1024]",
                                  "sum axis 0 [16384,1024]"};
    double gbs[6];
    for (int k = 0; k < 6; k++)
        gbs[k] = big_op_gbs((big_op)k, n, 9, &rng);
    bmm_measure(bmm, flat, &rng);

    if (json) {
        printf("{\"threads\": %d, \"blas\": \"%s\", \"tiny_record_ns\": %.1f, "
               "\"tiny_total_ns\": %.1f, \"tiny_chain_record_ns\": %.1f, "
               "\"tiny_chain_total_ns\": %.1f, \"memcpy_gbs\": %.2f",
               threads, tg_blas_info(), rec1, tot1, rec100, tot100, ref);
        for (int k = 0; k < 6; k++)
            printf(", \"%s\": %.2f", names[k], gbs[k]);
        for (int k = 0; k < N_BMM; k++)
            for (int fb = 0; fb < 2; fb++)
                printf(", \"bmm %s %s gflops\": %.2f, \"bmm %s %s flat_gflops\": %.2f",
                       bmm_cases[k].name, fb ? "fwd+bwd" : "forward", bmm[k][fb], bmm_cases[k].name,
                       fb ? "fwd+bwd" : "forward", flat[k][fb]);
        printf("}\n");
        return 0;
    }
    printf("tapegrad bench_core — %d threads — %s\n", threads, tg_blas_info());
    printf("\ntiny op (1-element add on a grad tape)        record      record+backward\n");
    printf("  one op per tape (with tape begin/end)     %7.0f ns   %7.0f ns\n", rec1, tot1);
    printf("  chain of 100 ops, per op                  %7.0f ns   %7.0f ns\n", rec100, tot100);
    printf("\nlarge ops (64 MiB operands)   reference: memcpy %.2f GB/s (read + write)\n", ref);
    printf("  %-32s %8s %10s\n", "op", "GB/s", "/ memcpy");
    for (int k = 0; k < 6; k++)
        printf("  %-32s %8.2f %10.2f\n", names[k], gbs[k], gbs[k] / ref);
    bmm_print(bmm, flat);
    tg_allocator_trim();
    return tg_debug_live_tensors() == 0 ? 0 : 1;
}
