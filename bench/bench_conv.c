/* bench_conv: forward and backward of the GAN's convolutions at batch 128 against the GEMMs
 * their lowering performs (docs/design.md, section 9).
 *
 *   bench_conv [threads] [repetitions] [filter] [cpu]   (defaults: 2 threads, 5 repetitions)
 *
 * filter: run only the layers whose name contains it (e.g. "convT", for profiling; "" for all).
 * cpu: time with the process's CPU clock (all its threads) instead of the wall clock: on a
 * machine busy with other jobs, the 1-thread numbers that still compare.
 *
 * For each layer: the median over the repetitions of forward (the op call on a grad tape) and
 * backward (tg_backward_grad: dx, dw and db), and of the reference: plain tg_sgemm calls with
 * the M, N, K of every GEMM the lowering makes (chunk by chunk), measured in the same run.
 * ratio = (forward + backward) / reference; the target is <= 1.5.
 *
 * tg_backward_grad starts by copying dy into the output's gradient; in training that seed is a
 * single 1 and dy comes from the next layer's backward, so the backward column subtracts the
 * time of that copy, measured in the same repetition (clone of dy), and prints it apart.
 *
 * Each layer runs three times per repetition, interleaved: with the columns written by im2col
 * (tg_conv_implicit 0, row "cols"), packed straight from the image (tg_conv_implicit 1, row
 * "pack"; only at the AVX-512 level, else as "cols"), both with the data gradient (conv2d's
 * dx, conv_transpose2d's y) through col2im (tg_conv_implicit_dx 0); and the default, row "dgrad":
 * packing, and that data gradient as implicit GEMMs too (tg_conv_implicit_dx 1). "cols" and
 * "pack" must give bit-identical y, dx, dw and db, and every mode the same results in every
 * repetition, or the bench stops; "dgrad" rounds differently, and its row ends with the
 * largest difference of its data gradient from "pack"'s, relative to the largest magnitude.
 * A fourth run, row "wino", is "dgrad" with conv2d's Winograd path (tg_conv_winograd 1; the
 * others run with it off; where it does not apply, the same as "dgrad"); its row ends with the
 * largest differences of its y, dx and dw from "dgrad"'s, relative to the largest magnitude.
 * BENCH_CONV_MODE=cols, pack, dgrad or wino in the environment times that mode alone (for perf;
 * the others still run once, for the comparisons).
 * BENCH_CONV_IMAGES=serial runs the chunks' images one after the other even where their GEMMs
 * are too small to split between threads (tg_conv_image_parallel 0, conv.c's conv_image_team),
 * for an A/B of the two in one build: run the bench with and without it, interleaved.
 * Gradients are removed before every run, so that each backward writes fresh ones as in
 * training. */
#include "autograd/internal.h"

#define BENCH_NAME "bench_conv"
#include "bench_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The clock of every measurement: CLOCK_MONOTONIC, or CLOCK_PROCESS_CPUTIME_ID with "cpu". */
static clockid_t bench_clock = CLOCK_MONOTONIC;

static double clock_ms(void)
{
    struct timespec ts;
    clock_gettime(bench_clock, &ts);
    return (double)ts.tv_sec * 1e3 + 1e-6 * (double)ts.tv_nsec;
}

typedef struct {
    const char *name;
    bool transpose;
    int64_t N, C, H, W; /* x */
    int64_t O, k;       /* output channels, square kernel */
    int stride, padding;
} layer;

/* The GAN's layers (generator: transposed convs and the 5x5 convs; discriminator: the 3x3
 * convs, without padding as in its 28 -> 26 -> pool 13 -> 11 stack). */
static const layer layers[] = {
    {"conv2d 128->64 5x5 p2 14x14", false, 128, 128, 14, 14, 64, 5, 1, 2},
    {"conv2d 64->1 5x5 p2 28x28", false, 128, 64, 28, 28, 1, 5, 1, 2},
    {"conv2d 1->64 3x3 28x28", false, 128, 1, 28, 28, 64, 3, 1, 0},
    {"conv2d 64->128 3x3 13x13", false, 128, 64, 13, 13, 128, 3, 1, 0},
    {"convT 128->64 k4 s2 p1 7x7", true, 128, 128, 7, 7, 64, 4, 2, 1},
    {"convT 64->1 k4 s2 p1 14x14", true, 128, 64, 14, 14, 1, 4, 2, 1},
    /* The dcgan and wgan-gp discriminator (critic): strided 4x4 convolutions. */
    {"conv2d 1->64 k4 s2 p1 28x28", false, 128, 1, 28, 28, 64, 4, 2, 1},
    {"conv2d 64->128 k4 s2 p1 14x14", false, 128, 64, 14, 14, 128, 4, 2, 1},
};

/* The lowering's GEMMs (see autograd/conv.c): Kc rows of columns and P columns per image, Co
 * channels on the flat side, images per chunk, and whether a chunk's images share one GEMM
 * (staged) or have one each. */
typedef struct {
    int64_t Kc, P, Co, chunk;
    bool staged;
    bool direct; /* conv2d with one output channel runs direct loops instead */
} lowering;

/* Mirrors conv.c's plan: 2 MB of working space per chunk, staging for planes under 256
 * positions with at least 64 rows of columns; conv2d with one output channel runs direct
 * loops on padded planes (chunks of those), and its reference stays the GEMMs of the
 * lowering it replaced. The node's working space must match, so the reference cannot
 * silently drift from what the op does. */
static lowering lowering_of(const layer *L, const tg_tensor *y, size_t scratch_bytes)
{
    lowering g;
    g.Kc = (L->transpose ? L->O : L->C) * L->k * L->k;
    g.P = L->transpose ? L->H * L->W : y->shape[2] * y->shape[3];
    g.Co = L->transpose ? L->C : L->O;
    g.staged = g.P < 256 && g.Kc >= 64;
    int64_t per_image = (g.Kc + (g.staged ? g.Co : 0)) * g.P * 4;
    g.chunk = ((int64_t)2 << 20) / per_image;
    g.chunk = g.chunk < 1 ? 1 : g.chunk > L->N ? L->N : g.chunk;
    if (g.chunk == 1)
        g.staged = false;
    g.direct = !L->transpose && L->O == 1;
    int64_t want = g.staged ? ((g.Kc * g.chunk * g.P + 15) / 16 * 16 + g.Co * g.chunk * g.P) * 4
                            : g.Kc * g.chunk * g.P * 4;
    if (g.direct) {
        /* padded planes [C, H + 2p, Wq] and output rows [Ho, Wt] per image (stride 1) */
        int64_t Ho = y->shape[2], Wo = y->shape[3], Wt = (Wo + 15) / 16 * 16;
        int64_t Wq = Wt + L->k - 1 > L->W + 2 * L->padding ? Wt + L->k - 1 : L->W + 2 * L->padding;
        int64_t per_image = L->C * (L->H + 2 * L->padding) * Wq + Ho * Wt;
        g.chunk = ((int64_t)2 << 20) / (per_image * 4);
        g.chunk = g.chunk < 1 ? 1 : g.chunk > L->N ? L->N : g.chunk;
        g.staged = false;
        want = g.chunk * per_image * 4;
    }
    if ((int64_t)scratch_bytes != want) {
        fprintf(stderr,
                "bench_conv: %s: the op's working space is %zu bytes, this plan gives "
                "%lld; update lowering_of to conv.c's chunk rule\n",
                L->name, scratch_bytes, (long long)want);
        exit(1);
    }
    return g;
}

/* The reference: the lowering's GEMMs alone, on buffers of a chunk's size. fwd_ms and bwd_ms
 * receive the forward's and the backward's. */
static void reference(const layer *L, const lowering *g, float *cols, float *flat, float *wbuf,
                      float *dwbuf, double *fwd_ms, double *bwd_ms)
{
    const int64_t Kc = g->Kc, Co = g->Co;
    double t0 = clock_ms();
    for (int64_t b0 = 0; b0 < L->N; b0 += g->chunk) {
        int64_t B = g->chunk < L->N - b0 ? g->chunk : L->N - b0, BP = B * g->P;
        /* A staged chunk is one GEMM of B*P columns; otherwise one of P per image. */
        int64_t n_gemm = g->staged && B > 1 ? 1 : B, n = BP / n_gemm, ldf = n;
        for (int64_t b = 0; b < n_gemm; b++) {
            float *c = cols + b * n, *f = flat + b * Co * n;
            if (L->transpose) /* cols = w^T @ x */
                tg_sgemm(true, false, Kc, n, Co, 1.0f, wbuf, Kc, f, ldf, 0.0f, c, BP);
            else /* y = w @ cols */
                tg_sgemm(false, false, Co, n, Kc, 1.0f, wbuf, Kc, c, BP, 0.0f, f, ldf);
        }
    }
    double t1 = clock_ms();
    for (int64_t b0 = 0; b0 < L->N; b0 += g->chunk) {
        int64_t B = g->chunk < L->N - b0 ? g->chunk : L->N - b0, BP = B * g->P;
        int64_t n_gemm = g->staged && B > 1 ? 1 : B, n = BP / n_gemm, ldf = n;
        for (int64_t b = 0; b < n_gemm; b++) {
            float *c = cols + b * n, *f = flat + b * Co * n;
            /* dw += flat @ cols^T for both ops */
            tg_sgemm(false, true, Co, Kc, n, 1.0f, f, ldf, c, BP, 1.0f, dwbuf, Kc);
            if (L->transpose) /* dx = w @ cols */
                tg_sgemm(false, false, Co, n, Kc, 1.0f, wbuf, Kc, c, BP, 0.0f, f, ldf);
            else /* dcols = w^T @ dy */
                tg_sgemm(true, false, Kc, n, Co, 1.0f, wbuf, Kc, f, ldf, 0.0f, c, BP);
        }
    }
    *fwd_ms = t1 - t0;
    *bwd_ms = clock_ms() - t1;
}

static const char *const mode_names[] = {"cols", "pack", "dgrad", "wino"};

/* max |got - want| over max |want|. */
static double rel_diff(const float *got, const float *want, int64_t n)
{
    double top = 0.0, diff = 0.0;
    for (int64_t e = 0; e < n; e++) {
        top = fmax(top, fabs(want[e]));
        diff = fmax(diff, fabs((double)got[e] - want[e]));
    }
    return top > 0.0 ? diff / top : diff;
}

static void bench_layer(const layer *L, int reps)
{
    tg_rng rng;
    tg_rng_seed(&rng, 42);
    int64_t ws[4] = {L->transpose ? L->C : L->O, L->transpose ? L->O : L->C, L->k, L->k};
    tg_tensor *x = tg_tensor_new(TG_DIMS(L->N, L->C, L->H, L->W));
    tg_tensor *w = tg_tensor_new(4, ws);
    tg_tensor *b = tg_tensor_new(TG_DIMS(L->O));
    if (!x || !w || !b)
        die("inputs");
    tg_tensor_uniform_(x, &rng, -1.0f, 1.0f);
    tg_tensor_uniform_(w, &rng, -0.1f, 0.1f);
    tg_tensor_uniform_(b, &rng, -0.1f, 0.1f);
    tg_tensor_set_requires_grad(x, true);
    tg_tensor_set_requires_grad(w, true);
    tg_tensor_set_requires_grad(b, true);

    enum { MODES = 4 };
    double *fwd[MODES], *bwd[MODES], *seed[MODES];
    for (int m = 0; m < MODES; m++) {
        fwd[m] = calloc((size_t)reps, sizeof(double));
        bwd[m] = calloc((size_t)reps, sizeof(double));
        seed[m] = calloc((size_t)reps, sizeof(double));
    }
    double *rf = calloc((size_t)reps, sizeof(double)), *rb = calloc((size_t)reps, sizeof(double));
    tg_tensor *dy = NULL;
    lowering g = {0};
    float *cols = NULL, *flat = NULL, *dwbuf = NULL;
    /* The first run's y, dx, dw, db of each mode, which every later run of the mode must
     * reproduce bit for bit; "cols" and "pack" share theirs. */
    float *want[MODES][4] = {{0}};
    double dgrad_diff = 0.0;   /* "dgrad"'s data gradient against "pack"'s, relative */
    double wino_diff[3] = {0}; /* "wino"'s y, dx, dw against "dgrad"'s, relative */
    /* Repetition 0 warms up (allocator cache, OpenBLAS buffers) and is not counted. */
    const char *only = getenv("BENCH_CONV_MODE");
    for (int r = -1; r < reps; r++) {
        for (int m = 0; m < MODES; m++) {
            if (r >= 0 && only && strcmp(only, mode_names[m]) != 0)
                continue;
            tg_conv_implicit = m > 0;
            tg_conv_implicit_dx = m >= 2;
            tg_conv_winograd = m == 3;
            tg_tensor_zero_grad(x);
            tg_tensor_zero_grad(w);
            tg_tensor_zero_grad(b);
            tg_tape *tape = tg_tape_begin(TG_GRAD);
            double t0 = clock_ms();
            tg_tensor *y = L->transpose ? tg_conv_transpose2d(x, w, b, L->stride, L->padding, 0)
                                        : tg_conv2d(x, w, b, L->stride, L->padding, 1);
            double t1 = clock_ms();
            if (!y)
                die(L->name);
            if (!dy) {
                dy = tg_tensor_new(y->ndim, y->shape);
                tg_tensor_uniform_(dy, &rng, -1.0f, 1.0f);
                g = lowering_of(L, y, y->node->scratch_bytes);
                cols = calloc((size_t)(g.Kc * g.chunk * g.P), sizeof(float));
                flat = calloc((size_t)(g.Co * g.chunk * g.P), sizeof(float));
                dwbuf = calloc((size_t)(g.Co * g.Kc), sizeof(float));
                if (!dy || !cols || !flat || !dwbuf)
                    die("buffers");
            }
            if (tg_backward_grad(y, dy) != TG_OK)
                die("backward");
            double t2 = clock_ms();
            const tg_tensor *got[4] = {y, tg_tensor_grad(x), tg_tensor_grad(w), tg_tensor_grad(b)};
            for (int k = 0; k < 4; k++) {
                size_t bytes = (size_t)got[k]->numel * sizeof(float);
                float **ref = &want[m >= 2 ? m : 0][k];
                if (!*ref) {
                    *ref = malloc(bytes);
                    if (!*ref)
                        die("buffers");
                    memcpy(*ref, got[k]->data, bytes);
                } else if (memcmp(*ref, got[k]->data, bytes) != 0) {
                    fprintf(stderr,
                            "bench_conv: %s: %s differs between runs (implicit %d, dx %d, "
                            "winograd %d)\n",
                            L->name, (const char *[]){"y", "dx", "dw", "db"}[k], tg_conv_implicit,
                            tg_conv_implicit_dx, tg_conv_winograd);
                    exit(1);
                }
                /* The data gradient: y of conv_transpose2d, dx of conv2d. */
                if (m == 2 && r < 0 && k == (L->transpose ? 0 : 1)) {
                    double top = 0.0, diff = 0.0;
                    for (int64_t e = 0; e < got[k]->numel; e++) {
                        top = fmax(top, fabs(want[0][k][e]));
                        diff = fmax(diff, fabs((double)got[k]->data[e] - want[0][k][e]));
                    }
                    dgrad_diff = top > 0.0 ? diff / top : diff;
                }
                if (m == 3 && r < 0 && k < 3)
                    wino_diff[k] = rel_diff(got[k]->data, want[2][k], got[k]->numel);
            }
            tg_tape_end(tape);
            double t3 = clock_ms();
            tg_tensor_release(tg_tensor_clone(dy)); /* what tg_backward_grad's seed copy costs */
            double t4 = clock_ms();
            if (r >= 0) {
                fwd[m][r] = t1 - t0;
                bwd[m][r] = (t2 - t1) - (t4 - t3);
                seed[m][r] = t4 - t3;
            }
        }
        double ref_f, ref_b;
        reference(L, &g, cols, flat, w->data, dwbuf, &ref_f, &ref_b);
        if (r >= 0) {
            rf[r] = ref_f;
            rb[r] = ref_b;
        }
    }
    double gf = median(rf, reps), gb = median(rb, reps);
    double flops = 3.0 * 2.0 * (double)L->N * g.Co * g.Kc * g.P;
    const char *mode = g.direct ? "d" : g.staged ? "s" : " ";
    for (int m = 0; m < MODES; m++) {
        double f = median(fwd[m], reps), bk = median(bwd[m], reps), sd = median(seed[m], reps);
        printf("%-30s %-5s %4lld%s %8.2f %8.2f %6.2f %8.2f %8.2f %7.2f %7.2f %6.2f %7.1f", L->name,
               mode_names[m], (long long)g.chunk, mode, f, bk, sd, gf, gb, f / gf, bk / gb,
               (f + bk) / (gf + gb), flops / ((f + bk) * 1e6));
        if (m == 2)
            printf(" %.1e", dgrad_diff);
        if (m == 3)
            printf(" y %.1e dx %.1e dw %.1e", wino_diff[0], wino_diff[1], wino_diff[2]);
        printf("\n");
        free(fwd[m]);
        free(bwd[m]);
        free(seed[m]);
    }
    fflush(stdout);
    for (int m = 0; m < MODES; m++)
        for (int k = 0; k < 4; k++)
            free(want[m][k]);
    free(rf);
    free(rb);
    free(cols);
    free(flat);
    free(dwbuf);
    tg_tensor_release(x);
    tg_tensor_release(w);
    tg_tensor_release(b);
    tg_tensor_release(dy);
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 2, reps = argc > 2 ? atoi(argv[2]) : 5;
    if (tg_set_num_threads(threads) != TG_OK || reps < 1) {
        fprintf(stderr, "usage: bench_conv [threads >= 1] [repetitions >= 1] [filter] [cpu]\n");
        return 2;
    }
    if (argc > 4 && strcmp(argv[4], "cpu") == 0)
        bench_clock = CLOCK_PROCESS_CPUTIME_ID;
    const char *images = getenv("BENCH_CONV_IMAGES");
    tg_conv_image_parallel = !(images && strcmp(images, "serial") == 0);
    const char *core = getenv("OPENBLAS_CORETYPE");
    printf("bench_conv: %s, %d threads%s%s, median of %d, batch 128, %s time%s\n", tg_blas_info(),
           tg_get_num_threads(), core ? ", OPENBLAS_CORETYPE=" : "", core ? core : "", reps,
           bench_clock == CLOCK_MONOTONIC ? "wall" : "CPU",
           tg_conv_image_parallel ? "" : ", images one after the other");
    printf("chunk: images per chunk, s = staged (one GEMM per chunk, else one per image), "
           "d = direct loops; seed: dy copy left out of bwd; gemm f/b: the reference\n");
    printf("%-36s %5s %8s %8s %6s %8s %8s %7s %7s %6s %7s %7s\n", "layer", "chunk", "fwd ms",
           "bwd ms", "seed", "gemm f", "gemm b", "fwd x", "bwd x", "ratio", "GFLOP/s", "dgrad");
    const char *filter = argc > 3 ? argv[3] : "";
    for (size_t i = 0; i < sizeof layers / sizeof layers[0]; i++)
        if (strstr(layers[i].name, filter))
            bench_layer(&layers[i], reps);
    return 0;
}
