/* bench_gan: tapegrad's side of bench/compare.sh — the mnist_gan training iteration and each of
 * its layers, timed the same way as bench/torch_gan.py times PyTorch.
 *
 *   bench_gan step   [--generator upsample|convt] [--step S] [--threads T] [--iters N]
 *                    [--warmup W]
 *   bench_gan layers [--threads T] [--reps N] [--warmup W] [--only KEY]
 *   bench_gan serve  [--generator upsample|convt] [--step S] [--threads T]
 *   bench_gan serve-layers [--threads T]
 *   bench_gan info           (tg_blas_info(): OpenBLAS version, flavour and kernels)
 *   --precision fp32|bf16    with any of them: the GEMMs' input precision (issue 17's bf16 mode;
 *                            tg_blas_info() says whether bf16 runs)
 *
 * step: gan_state_init + gan_step (tutorial recipe, batch 128, Adam lr 2e-4, beta1 0.9) on random
 * real batches in [-1, 1]; prints one JSON line with the median seconds per iteration (wall,
 * and CPU time of all threads), the peak RSS (getrusage ru_maxrss) and the RSS before the first
 * iteration. Defaults: 20 timed iterations after 3 warm-up ones. --step S is gan_step's step
 * (core/step.c): tutorial (Paddle 1.8's, mnist_gan's default), clean (the textbook step) or
 * accumulate (the default here, so that tables and A/B runs against builds older than the
 * option time the same step; bench/compare.py always names the step it wants).
 *
 * layers: forward + backward of every layer of G (both variants) and D alone, at the input
 * shape it sees in the GAN: a fresh tape, forward, tg_backward_grad with a random dy, tape end
 * (less the copy of dy that seeds the output's gradient: PyTorch's backward(dy) makes none).
 * One JSON line per layer with the median wall and CPU seconds (--only KEY: that layer alone,
 * e.g. G_upsample.8, for profiling).
 *
 * serve, serve-layers: the same measurements one at a time on request, so that compare.py can
 * interleave tapegrad and PyTorch. Requests, one line each, each answered by one line:
 * "step" -> "WALL CPU" seconds; "layer K REPS WARMUP" -> "WALL,CPU" of each rep; "rss" ->
 * "PEAK_KB NOW_KB"; "quit" ends. At start: "ready rss_kb N", or "ready N layers" and one
 * "KEY<tab>LABEL" line per layer. Both sides speak the same protocol; see bench/compare.py.
 *
 * Nothing here asserts anything: the numbers are read by people and by compare.py. */
#include "gan.h"

#define BENCH_NAME "bench_gan"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define BATCH 128
#define LR 2e-4f
#define BETA1 0.9f
#define N_REAL 4 /* distinct real batches, used in turn */

/* CPU seconds of the process so far, every thread, user and system (as Python's
 * time.process_time). At one thread it is the wall time less the time spent descheduled, so it
 * stays meaningful on a loaded machine. */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static long peak_rss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* Resident set now, in KiB (/proc/self/statm's second field is in pages). */
static long rss_now_kb(void)
{
    long pages = 0, size;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &size, &pages) != 2)
            pages = 0;
        fclose(f);
    }
    return pages * (sysconf(_SC_PAGESIZE) / 1024);
}

/* ---- the training iteration ---------------------------------------------------------------- */

typedef struct {
    gan_state s;
    tg_tensor *real[N_REAL];
    int64_t it;
} step_bench;

static void step_init(step_bench *b, gan_generator gen, gan_step_mode step)
{
    gan_widths w = gan_widths_default(1);
    /* gan_step itself in the given step: bench/torch_gan.py runs the same step on PyTorch's
     * side (its --step). */
    gan_config c = gan_config_default(GAN_RECIPE_TUTORIAL);
    c.generator = gen, c.step = step, c.lr = LR, c.beta1 = BETA1;
    if (gan_state_init(&b->s, &c, &w) != TG_OK)
        die("gan_state_init");
    tg_rng rng;
    tg_rng_seed(&rng, 7);
    for (int i = 0; i < N_REAL; i++) {
        b->real[i] = tg_tensor_new(TG_DIMS(BATCH, 1, 28, 28));
        if (!b->real[i] || tg_tensor_uniform_(b->real[i], &rng, -1.0f, 1.0f) != TG_OK)
            die("real batch");
    }
    b->it = 0;
}

static void step_free(step_bench *b)
{
    for (int i = 0; i < N_REAL; i++)
        tg_tensor_release(b->real[i]);
    gan_state_free(&b->s);
}

/* One iteration: wall and CPU seconds. */
static void step_once(step_bench *b, double *wall, double *cpu)
{
    gan_losses l;
    double c0 = cpu_now(), t0 = now();
    if (gan_step(&b->s, b->real[b->it++ % N_REAL], NULL, &l) != TG_OK)
        die("gan_step");
    *wall = now() - t0;
    *cpu = cpu_now() - c0;
}

static const char *gen_name(gan_generator g)
{
    return g == GAN_GEN_CONVT ? "convt" : "upsample";
}

static int run_step(gan_generator gen, gan_step_mode step, int threads, int iters, int warmup)
{
    step_bench b;
    step_init(&b, gen, step);
    long rss0 = rss_now_kb();
    double *wall = malloc(sizeof(double) * (size_t)iters);
    double *cpu = malloc(sizeof(double) * (size_t)iters);
    for (int i = 0; i < warmup; i++)
        step_once(&b, &wall[0], &cpu[0]);
    for (int i = 0; i < iters; i++)
        step_once(&b, &wall[i], &cpu[i]);
    const double wall_med = median(wall, iters), cpu_med = median(cpu, iters);
    /* (median sorts: [0] is the minimum, the least disturbed by other processes; the step
     * printed is the state's own, the one gan_step ran) */
    printf("{\"side\": \"tapegrad\", \"generator\": \"%s\", \"step\": \"%s\", \"threads\": %d, "
           "\"iters\": %d, \"warmup\": %d, \"sec_per_iter\": %.6f, \"cpu_sec_per_iter\": %.6f, "
           "\"sec_min\": %.6f, \"cpu_sec_min\": %.6f, \"rss_start_kb\": %ld, "
           "\"peak_rss_kb\": %ld, \"blas\": \"%s\"}\n",
           gen_name(gen), gan_step_names[b.s.step], threads, iters, warmup, wall_med, cpu_med,
           wall[0], cpu[0], rss0, peak_rss_kb(), tg_blas_info());
    free(wall);
    free(cpu);
    step_free(&b);
    return 0;
}

/* ---- single layers ------------------------------------------------------------------------- */

typedef struct {
    char key[32];    /* "G_upsample.8": model and index in its Sequential, as torch_gan.py */
    char label[160]; /* "Conv2d [128, 128, 14, 14] -> [128, 64, 14, 14]" */
    tg_module *m;    /* borrowed from its model */
    int ndim;
    int64_t shape[TG_MAX_DIMS]; /* input shape */
    bool x_grad;                /* the input requires grad (all but G's first layer, fed z) */
    tg_tensor *x, *dy;          /* random input and output gradient, made once (not timed) */
} layer;

typedef struct {
    tg_module *models[3];
    layer layers[64];
    int n;
} layer_set;

/* Layers whose forward is a view: nothing to time. */
static bool is_view(const char *type)
{
    return !strcmp(type, "Reshape") || !strcmp(type, "Flatten");
}

/* Walks model's Sequential on an input of the given shape, recording every layer's input
 * shape. skip_until: layers below this index are left out (the convt G's fully connected part
 * is the upsampling G's, shape for shape). */
static void collect(layer_set *ls, tg_module *model, const char *name, int ndim,
                    const int64_t *shape, int skip_until, tg_rng *rng)
{
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *x = tg_tensor_new(ndim, shape);
    tg_tensor_normal_(x, rng, 0.0f, 1.0f);
    tg_tensor *cur = x;
    for (int64_t i = 0; i < tg_module_num_children(model); i++) {
        tg_module *m = tg_module_child_at(model, i);
        tg_tensor *y = tg_module_forward(m, cur);
        if (!y)
            die("layer walk");
        if (i >= skip_until && !is_view(tg_module_type(m))) {
            layer *l = &ls->layers[ls->n++];
            char a[96], b[96];
            snprintf(l->key, sizeof l->key, "%s.%lld", name, (long long)i);
            snprintf(l->label, sizeof l->label, "%s %s -> %s", tg_module_type(m),
                     tg_shape_str(cur->ndim, cur->shape, a, sizeof a),
                     tg_shape_str(y->ndim, y->shape, b, sizeof b));
            l->m = m;
            l->ndim = cur->ndim;
            memcpy(l->shape, cur->shape, sizeof(int64_t) * (size_t)cur->ndim);
            l->x_grad = !(name[0] == 'G' && i == 0);
            l->x = tg_tensor_new(cur->ndim, cur->shape);
            l->dy = tg_tensor_new(y->ndim, y->shape);
            if (!l->x || !l->dy)
                die("layer tensors");
            tg_tensor_normal_(l->x, rng, 0.0f, 1.0f);
            tg_tensor_normal_(l->dy, rng, 0.0f, 1.0f);
            tg_tensor_set_requires_grad(l->x, l->x_grad);
        }
        cur = y;
    }
    tg_tape_end(tape);
    tg_tensor_release(x);
}

static void layers_init(layer_set *ls)
{
    gan_widths w = gan_widths_default(1);
    tg_rng rng;
    tg_rng_seed(&rng, 3);
    ls->n = 0;
    ls->models[0] = gan_build_generator(GAN_RECIPE_TUTORIAL, GAN_GEN_UPSAMPLE, &w, &rng);
    ls->models[1] = gan_build_generator(GAN_RECIPE_TUTORIAL, GAN_GEN_CONVT, &w, &rng);
    ls->models[2] = gan_build_discriminator(GAN_RECIPE_TUTORIAL, &w, &rng);
    if (!ls->models[0] || !ls->models[1] || !ls->models[2])
        die("models");
    collect(ls, ls->models[0], "G_upsample", TG_DIMS(BATCH, w.nz), 0, &rng);
    /* convt G: layers 0..5 (linear, bn, activation twice) have the upsampling G's shapes */
    collect(ls, ls->models[1], "G_convt", TG_DIMS(BATCH, w.nz), 6, &rng);
    collect(ls, ls->models[2], "D", TG_DIMS(BATCH, 1, 28, 28), 0, &rng);
}

static void layers_free(layer_set *ls)
{
    for (int i = 0; i < ls->n; i++) {
        tg_tensor_release(ls->layers[i].x);
        tg_tensor_release(ls->layers[i].dy);
    }
    for (int i = 0; i < 3; i++)
        tg_module_free(ls->models[i]);
}

/* Wall and CPU seconds of reps forward+backward passes of layer l, after warmup untimed ones:
 * a fresh grad tape, forward, tg_backward_grad with the layer's random dy, tape end; less the
 * time of the copy of dy that tg_backward_grad makes (measured right after). */
static void layer_time(const layer *l, int reps, int warmup, double *wall, double *cpu)
{
    for (int r = -warmup; r < reps; r++) {
        double c0 = cpu_now(), t0 = now();
        tg_tape *tape = tg_tape_begin(TG_GRAD);
        tg_tensor *y = tg_module_forward(l->m, l->x);
        if (!y || tg_backward_grad(y, l->dy) != TG_OK)
            die(l->key);
        tg_tape_end(tape);
        double c1 = cpu_now(), t1 = now();
        /* tg_backward_grad copies dy to seed the output's gradient; PyTorch's backward(dy)
         * uses dy as it is, and in training the seed is a single 1. Time that copy alone and
         * leave it out. */
        tg_tensor_release(tg_tensor_clone(l->dy));
        double seed_cpu = cpu_now() - c1, seed_wall = now() - t1;
        if (r >= 0) {
            wall[r] = t1 - t0 - seed_wall;
            cpu[r] = c1 - c0 - seed_cpu;
        }
        /* as torch_gan.py's p.grad = None, outside the timed region */
        tg_module_zero_grad(l->m);
        tg_tensor_zero_grad(l->x);
    }
}

static int run_layers(int threads, int reps, int warmup, const char *only)
{
    layer_set ls;
    layers_init(&ls);
    double *wall = malloc(sizeof(double) * (size_t)reps);
    double *cpu = malloc(sizeof(double) * (size_t)reps);
    for (int i = 0; i < ls.n; i++) {
        const layer *l = &ls.layers[i];
        if (only && strcmp(only, l->key) != 0)
            continue;
        layer_time(l, reps, warmup, wall, cpu);
        printf("{\"side\": \"tapegrad\", \"key\": \"%s\", \"label\": \"%s\", "
               "\"threads\": %d, \"reps\": %d, \"sec\": %.7f, \"cpu_sec\": %.7f}\n",
               l->key, l->label, threads, reps, median(wall, reps), median(cpu, reps));
    }
    free(wall);
    free(cpu);
    layers_free(&ls);
    return 0;
}

/* ---- serve: one measurement per request line ----------------------------------------------- */

static int serve(bool layers, gan_generator gen, gan_step_mode step, int threads)
{
    step_bench b;
    layer_set ls;
    if (layers) {
        layers_init(&ls);
        printf("ready %d layers\n", ls.n);
        for (int i = 0; i < ls.n; i++)
            printf("%s\t%s\n", ls.layers[i].key, ls.layers[i].label);
    } else {
        step_init(&b, gen, step);
        printf("ready rss_kb %ld\n", rss_now_kb());
    }
    fflush(stdout);
    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        int k, reps, warm;
        if (!strncmp(line, "quit", 4)) {
            break;
        } else if (!strncmp(line, "rss", 3)) {
            printf("%ld %ld\n", peak_rss_kb(), rss_now_kb());
        } else if (!layers && !strncmp(line, "step", 4)) {
            double w, c;
            step_once(&b, &w, &c);
            printf("%.6f %.6f\n", w, c);
        } else if (layers && sscanf(line, "layer %d %d %d", &k, &reps, &warm) == 3 && k >= 0 &&
                   k < ls.n && reps >= 1 && reps <= 1000 && warm >= 0) {
            double wall[1000], cpu[1000];
            layer_time(&ls.layers[k], reps, warm, wall, cpu);
            for (int r = 0; r < reps; r++)
                printf("%s%.7f,%.7f", r ? " " : "", wall[r], cpu[r]);
            printf("\n");
        } else {
            printf("error: unknown request %s", line);
        }
        fflush(stdout);
    }
    (void)threads;
    if (layers)
        layers_free(&ls);
    else
        step_free(&b);
    return 0;
}

/* gan_step_names' index of name into *step; false if it is none of them. */
static bool step_by_name(const char *name, gan_step_mode *step)
{
    for (int i = 0; gan_step_names[i]; i++)
        if (!strcmp(name, gan_step_names[i])) {
            *step = (gan_step_mode)i;
            return true;
        }
    return false;
}

static int usage(void)
{
    fprintf(stderr, "usage: bench_gan step [--generator upsample|convt] "
                    "[--step tutorial|clean|accumulate] [--threads T] [--iters N] [--warmup W]\n"
                    "       bench_gan layers [--threads T] [--reps N] [--warmup W] [--only KEY]\n"
                    "       bench_gan serve [--generator upsample|convt] "
                    "[--step tutorial|clean|accumulate] [--threads T]\n"
                    "       bench_gan serve-layers [--threads T]\n"
                    "       bench_gan info\n"
                    "       any of them: [--precision fp32|bf16] (tg_set_matmul_precision)\n");
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage();
    const char *mode = argv[1];
    gan_generator gen = GAN_GEN_UPSAMPLE;
    gan_step_mode step = GAN_STEP_ACCUMULATE; /* see the top comment */
    int threads = 2, iters = 20, warmup = 3, reps = 20;
    const char *only = NULL;
    for (int i = 2; i < argc; i += 2) { /* flag, value */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            return usage();
        if (!strcmp(a, "--generator") && (!strcmp(v, "upsample") || !strcmp(v, "convt")))
            gen = !strcmp(v, "convt") ? GAN_GEN_CONVT : GAN_GEN_UPSAMPLE;
        else if (!strcmp(a, "--step") && step_by_name(v, &step))
            ;
        else if (!strcmp(a, "--threads") && atoi(v) >= 1)
            threads = atoi(v);
        else if (!strcmp(a, "--iters") && atoi(v) >= 1)
            iters = atoi(v);
        else if (!strcmp(a, "--reps") && atoi(v) >= 1)
            reps = atoi(v);
        else if (!strcmp(a, "--warmup") && atoi(v) >= 0)
            warmup = atoi(v);
        else if (!strcmp(a, "--only"))
            only = v;
        else if (!strcmp(a, "--precision") && (!strcmp(v, "fp32") || !strcmp(v, "bf16")))
            tg_set_matmul_precision(!strcmp(v, "bf16") ? TG_MATMUL_BF16 : TG_MATMUL_FP32);
        else
            return usage();
    }
    if (tg_set_num_threads(threads) != TG_OK)
        die("threads");
    if (!strcmp(mode, "info")) {
        printf("{\"blas\": \"%s\", \"threads\": %d}\n", tg_blas_info(), tg_get_num_threads());
        return 0;
    }
    if (!strcmp(mode, "step"))
        return run_step(gen, step, threads, iters, warmup);
    if (!strcmp(mode, "layers"))
        return run_layers(threads, reps, warmup, only);
    if (!strcmp(mode, "serve"))
        return serve(false, gen, step, threads);
    if (!strcmp(mode, "serve-layers"))
        return serve(true, gen, step, threads);
    return usage();
}
