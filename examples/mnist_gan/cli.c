/* mnist_gan's command line. Each flag is one row of a table: its name, which command takes it,
 * and how its value is read and checked. A bad flag or value gets one line naming it. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage[] =
    "usage: mnist_gan train [options]     train the GAN (the PaddlePaddle dygraph tutorial's)\n"
    "       mnist_gan sample --checkpoint FILE [options]   images from a trained G\n"
    "       mnist_gan eval --checkpoint FILE --classifier FILE [options]   measure a G\n"
    "       mnist_gan eval --images FILE --classifier FILE [options]   measure any images\n"
    "       mnist_gan --help\n"
    "\n"
    "train options:\n"
    "  --data DIR            a folder with the four MNIST-format files, raw or .gz\n"
    "                        (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-...)\n"
    "  --dataset NAME        mnist (default: data-cache/mnist, made by scripts/fetch-mnist.sh)\n"
    "                        or fashion (Debian's dataset-fashion-mnist package)\n"
    "  --digit D             train on one class only (0..9)\n"
    "  --train-per-class N   train on N images of every class, the subset\n"
    "                        tg_dataset_per_class(training set, N, --seed) picks (the same as\n"
    "                        mnist_classifier's --train-per-class N --seed S); with --digit,\n"
    "                        that subset's N images of the digit\n"
    "  --recipe NAME         tutorial (default): the tutorial's models and settings as\n"
    "                        PaddlePaddle 1.8 ran them; dcgan: the classic MNIST DCGAN\n"
    "                        (Adam beta1 0.5, clean step, PyTorch's init, Adam and shuffle);\n"
    "                        wgan-gp: dcgan's G against a critic (dcgan's D without BatchNorm)\n"
    "                        with a gradient penalty, Adam lr 1e-4, betas (0.5, 0.9); an\n"
    "                        iteration is one G step after --n-critic critic steps, each on\n"
    "                        its own real batch; cgan: examples/cgan's conditional DCGAN,\n"
    "                        G(z, y) and D(x, y), with dcgan's settings; the fake images are\n"
    "                        drawn for the real batch's labels; its grids show a row per digit\n"
    "  --generator NAME      upsample (default): bilinear x2 + conv, or convt: transposed\n"
    "                        convolutions, or upsample-relu: upsample with relu where it has\n"
    "                        tanh, the tutorial's generator before its P.S. (tutorial recipe\n"
    "                        only)\n"
    "  --step NAME           tutorial (default for the tutorial recipe): the tutorial's loop\n"
    "                        as Paddle 1.8 ran it (each backward overwrites the gradients);\n"
    "                        accumulate: the same code with gradients accumulating (Paddle\n"
    "                        >= 2.0, or ported line by line to PyTorch); clean: the textbook\n"
    "                        step (G(z) detached for D, fresh z for G; dcgan's default)\n"
    "  --init NAME           paddle (tutorial default): Paddle 1.8's initialisers; torch:\n"
    "                        PyTorch's (dcgan default)\n"
    "  --adam NAME           paddle (tutorial default): eps added to sqrt(v) before the bias\n"
    "                        correction, as Paddle 1.8; torch: after it (dcgan default)\n"
    "  --shuffle NAME        paddle (tutorial default): each epoch shuffles images 0-29999 and\n"
    "                        30000-59999 apart, as paddle.reader.shuffle(reader, 30000);\n"
    "                        full: one shuffle of the whole set (dcgan default)\n"
    "  --epochs N            epochs to train (default 20, as the tutorial)\n"
    "  --iters N             stop after N iterations in all, counted across resumes\n"
    "                        (overrides --epochs)\n"
    "  --batch N             batch size (default 128)\n"
    "  --lr X                Adam learning rate (default 2e-4; wgan-gp 1e-4)\n"
    "  --beta1 X             Adam beta1 (default 0.9 for the tutorial recipe, 0.5 for dcgan\n"
    "                        and wgan-gp)\n"
    "  --beta2 X             Adam beta2 (default 0.999; wgan-gp 0.9)\n"
    "  --n-critic N          wgan-gp: critic steps per generator step (default 5)\n"
    "  --gp-lambda X         wgan-gp: the gradient penalty's weight (default 10; 0: none)\n"
    "  --critic-norm NAME    wgan-gp: none (default, as the paper's MNIST critic) or layer:\n"
    "                        layer norm after the critic's second conv\n"
    "  --seed S              seed of weights, noise and shuffling (default 1)\n"
    "  --threads T           threads for kernels and BLAS (default 2; at most the CPUs)\n"
    "  --matmul NAME         fp32 (default) or bf16: the GEMMs of linear layers and\n"
    "                        convolutions take bfloat16 inputs and sum in FP32 (weights,\n"
    "                        gradients and Adam stay FP32); runs FP32 on a CPU without\n"
    "                        AVX512_BF16, and says so. The checkpoint records it\n"
    "  --log-every N         log line, sample grid and report every N iterations (default 100)\n"
    "  --grid-scale NAME     fixed (default): -1 black, 1 white; per-image: each image\n"
    "                        stretched to its own range, as the tutorial's notebook showed them;\n"
    "                        both (train only): samples_<it>.png fixed and\n"
    "                        samples_<it>_per-image.png\n"
    "  --out DIR             output folder (default out/mnist_gan): samples_<it>.png,\n"
    "                        losses.csv, losses.svg, checkpoint.safetensors, report.html;\n"
    "                        one train at a time: a second on the same folder is refused,\n"
    "                        naming the first (OUT/.lock, while it runs)\n"
    "  --resume              continue exactly from OUT/checkpoint.safetensors\n"
    "  --width-div K         divide every layer width by K (quick experiments and tests)\n"
    "  --sync-bn on|off      under mpirun: BatchNorm statistics over the global batch (on,\n"
    "                        the default: N ranks train as one process would) or over each\n"
    "                        rank's share (off, as plain DDP); alone, no effect\n"
    "  --eval-every N        measure G every N iterations and at the end, as eval does, on\n"
    "                        --eval-n images: OUT/eval.csv and the FID curve in report.html\n"
    "  --eval-n N            images per measurement during training (default 1000)\n"
    "  --classifier FILE     the feature extractor of the measurements: a checkpoint of\n"
    "                        mnist_classifier (needed by --eval-every)\n"
    "\n"
    "sample options:\n"
    "  --checkpoint FILE     a checkpoint written by train\n"
    "  --n N                 number of images (default 128)\n"
    "  --seed S              noise seed (default 1)\n"
    "  --out FILE.png        the image grid (default samples.png)\n"
    "  --idx PREFIX          also write PREFIX-images-idx3-ubyte (and, for a one-digit or a\n"
    "                        conditional model, PREFIX-labels-idx1-ubyte), readable as an\n"
    "                        MNIST folder\n"
    "  --label K|all         a conditional (cgan) model: every image of digit K, or all\n"
    "                        (default): image i of digit i % 10, the grid a column per digit;\n"
    "                        a one-digit model takes only its own digit\n"
    "  --threads T, --grid-scale NAME   as for train\n"
    "\n"
    "eval options: N images of G against N real test images - FID on the classifier's\n"
    "features, classifier score, class coverage, confidence, mean brightness - and, as the\n"
    "reference row, N real training images against the same test images\n"
    "  --checkpoint FILE     a checkpoint written by train\n"
    "  --images FILE         instead of a checkpoint: the first N images of an idx3 file,\n"
    "                        0..255 (sample --idx output, or another program's samples)\n"
    "  --classifier FILE     a checkpoint written by mnist_classifier\n"
    "  --n N                 images per set (default 10000; at most the test set's)\n"
    "  --seed S              noise seed (default 1: the images of sample --seed 1)\n"
    "  --json FILE           append the figures as one JSON line to FILE (default eval.jsonl\n"
    "                        beside the checkpoint)\n"
    "  --data DIR, --dataset NAME, --threads T   as for train\n"
    "\n"
    "Exit status: 0 done, 2 bad input (flags, data files, checkpoint), 1 other failures.\n"
    "TG_REPORT_LIVE=1 prints the live tensor/node/byte counters at exit; any left alive: exit 1.\n";

const char *const gan_matmul_names[] = {"fp32", "bf16", NULL};

const char *gan_usage(void)
{
    return usage;
}

/* v as a message may quote it: escaped (tg_escape), so a hostile value cannot split the line
 * or colour the terminal. Returns buf. */
static const char *quoted(const char *v, char *buf, size_t n)
{
    tg_escape(buf, n, v, strlen(v));
    return buf;
}

/* Integer in [lo, hi] (tg_parse_int: decimal only); false with the message in err. */
static bool parse_int(const char *flag, const char *v, int64_t lo, int64_t hi, int64_t *out,
                      char *err, size_t n)
{
    if (tg_parse_int(v, lo, hi, out) == TG_OK)
        return true;
    char q[128];
    snprintf(err, n, "%s: '%s' is not a whole number from %lld to %lld", flag,
             quoted(v, q, sizeof q), (long long)lo, (long long)hi);
    return false;
}

/* Unsigned integer in [0, hi] (tg_parse_uint: no sign, so "-1" cannot wrap); false with the
 * message in err. */
static bool parse_uint(const char *flag, const char *v, uint64_t hi, uint64_t *out, char *err,
                       size_t n)
{
    if (tg_parse_uint(v, hi, out) == TG_OK)
        return true;
    char q[128];
    snprintf(err, n, "%s: '%s' is not a whole number from 0 to %llu", flag, quoted(v, q, sizeof q),
             (unsigned long long)hi);
    return false;
}

/* Float in (lo, hi] (lo exclusive when lo_open), read by tg_parse_real (decimal only, "-0" is
 * +0); false with the message in err. */
static bool parse_float(const char *flag, const char *v, double lo, bool lo_open, double hi,
                        float *out, char *err, size_t n)
{
    double x;
    char q[128];
    if (tg_parse_real(v, lo, hi, &x) != TG_OK || (lo_open && x <= lo)) {
        snprintf(err, n, "%s: '%s' is not a number in %s%g, %g]", flag, quoted(v, q, sizeof q),
                 lo_open ? "(" : "[", lo, hi);
        return false;
    }
    /* In range as a double, a value can still round to the open bound as a float: --lr 1e-74
     * would become 0 and train nothing (found by tests/fuzz/fuzz_cli). Rounding cannot cross
     * the upper bounds used here (GAN_LR_MAX 10, GAN_BETA1_MAX 0.999999). */
    float f = (float)x;
    if (lo_open && f <= lo) {
        snprintf(err, n, "%s: '%s' is %g as a float32, not above %g", flag, quoted(v, q, sizeof q),
                 (double)f, lo);
        return false;
    }
    *out = f;
    return true;
}

/* A path flag's value: control characters (a newline makes a file name that splits every
 * message naming it) are refused; other bytes, UTF-8 names included, are the file system's. */
static bool parse_path(const char *flag, const char *v, const char **out, char *err, size_t n)
{
    for (const char *p = v; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            char q[256];
            snprintf(err, n, "%s: '%s' holds a control character", flag, quoted(v, q, sizeof q));
            return false;
        }
    *out = v;
    return true;
}

/* --threads: 1..256 and no more than the CPUs. More threads than CPUs only wait on each
 * other, and under an address-space limit OpenBLAS's per-thread buffers made --threads 8 on
 * two CPUs spin forever (issue 19). */
static bool parse_threads(const char *flag, const char *v, int *out, char *err, size_t n)
{
    int64_t x;
    if (!parse_int(flag, v, 1, 256, &x, err, n))
        return false;
    const int cpus = tg_get_num_cpus();
    if (x > cpus) {
        char q[64];
        snprintf(err, n, "%s: '%s' is more than the %d CPU%s this process can run on", flag,
                 quoted(v, q, sizeof q), cpus, cpus == 1 ? "" : "s");
        return false;
    }
    *out = (int)x;
    return true;
}

/* sample --label: all (GAN_LABELS_BALANCED) or a digit 0..9; false with the message in err. */
static bool parse_label(const char *flag, const char *v, int *out, char *err, size_t n)
{
    int64_t x;
    if (!strcmp(v, "all")) {
        *out = GAN_LABELS_BALANCED;
        return true;
    }
    if (tg_parse_int(v, 0, 9, &x) == TG_OK) {
        *out = (int)x;
        return true;
    }
    char q[128];
    snprintf(err, n, "%s: '%s' is neither a digit 0..9 nor all", flag, quoted(v, q, sizeof q));
    return false;
}

/* Index of v among the NULL-terminated names; false with the message in err. */
static bool parse_choice(const char *flag, const char *v, const char *const *names, int *out,
                         char *err, size_t n)
{
    for (int i = 0; names[i]; i++)
        if (!strcmp(v, names[i])) {
            *out = i;
            return true;
        }
    char q[128];
    int used = snprintf(err, n, "%s: '%s' is not one of", flag, quoted(v, q, sizeof q));
    for (int i = 0; names[i] && used > 0 && (size_t)used < n; i++)
        used += snprintf(err + used, n - (size_t)used, "%s %s", i ? "," : "", names[i]);
    return false;
}

bool gan_recipe_flags_check(const gan_options *o, char *err, size_t n)
{
    const bool wgan = o->recipe == GAN_RECIPE_WGAN_GP;
    if (wgan && (o->given & GIVEN_STEP)) {
        snprintf(err, n,
                 "--step belongs to the tutorial and dcgan recipes; wgan-gp has its own "
                 "step (--n-critic critic steps, then one generator step)");
        return false;
    }
    if (!wgan && (o->given & (GIVEN_N_CRITIC | GIVEN_GP_LAMBDA | GIVEN_CRITIC_NORM))) {
        snprintf(err, n, "%s is a setting of the wgan-gp recipe (--recipe wgan-gp)",
                 o->given & GIVEN_N_CRITIC    ? "--n-critic"
                 : o->given & GIVEN_GP_LAMBDA ? "--gp-lambda"
                                              : "--critic-norm");
        return false;
    }
    return true;
}

enum { FOR_TRAIN = 1, FOR_SAMPLE = 2, FOR_EVAL = 4 };

bool gan_parse_args(int argc, char **argv, gan_options *o, char *err, size_t n)
{
    *o = (gan_options){.cmd = CMD_HELP,
                       .dataset = "mnist",
                       .digit = -1,
                       .epochs = 20,
                       .batch = 128,
                       .lr = 2e-4f,
                       .beta1 = 0.9f,
                       .beta2 = 0.999f,
                       .seed = 1,
                       .n_critic = 5,
                       .gp_lambda = 10.0f,
                       .threads = tg_get_num_cpus() >= 2 ? 2 : 1, /* default 2, at most the CPUs */
                       .log_every = 100,
                       .out_dir = "out/mnist_gan",
                       .width_div = 1,
                       .n = 128,
                       .png_out = "samples.png",
                       .label = GAN_LABEL_UNSET,
                       .eval_n = 1000,
                       .sync_bn = true};
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help"))
        return true;
    int cmd_bit;
    if (!strcmp(argv[1], "train"))
        o->cmd = CMD_TRAIN, cmd_bit = FOR_TRAIN;
    else if (!strcmp(argv[1], "sample"))
        o->cmd = CMD_SAMPLE, cmd_bit = FOR_SAMPLE;
    else if (!strcmp(argv[1], "eval"))
        o->cmd = CMD_EVAL, cmd_bit = FOR_EVAL, o->n = 10000;
    else {
        char q[128];
        snprintf(err, n, "unknown command '%s' (train, sample, eval or --help)",
                 quoted(argv[1], q, sizeof q));
        return false;
    }
    static const char *const *const generators = gan_generator_names;
    static const char *const *const steps = gan_step_names;
    static const char *const shuffles[] = {"paddle", "full", NULL};
    static const char *const scales[] = {"fixed", "per-image", "both", NULL};
    static const char *const datasets[] = {"mnist", "fashion", NULL};
    static const char *const on_off[] = {"on", "off", NULL};
    for (int i = 2; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            o->cmd = CMD_HELP;
            return true;
        }
        if (!strcmp(f, "--resume")) {
            if (cmd_bit != FOR_TRAIN) {
                snprintf(err, n, "--resume is a train option");
                return false;
            }
            o->resume = true;
            continue;
        }
        if (strncmp(f, "--", 2) != 0) {
            char q[256];
            snprintf(err, n, "unexpected argument '%s' (flags start with --)",
                     quoted(f, q, sizeof q));
            return false;
        }
        if (i + 1 >= argc) {
            char q[128];
            snprintf(err, n, "%s needs a value", quoted(f, q, sizeof q));
            return false;
        }
        const char *v = argv[++i];
        int64_t x = 0;
        int c = 0;
        bool ok = true;
        int for_cmd = FOR_TRAIN;
        if (!strcmp(f, "--data"))
            ok = parse_path(f, v, &o->data_dir, err, n), for_cmd = FOR_TRAIN | FOR_EVAL;
        else if (!strcmp(f, "--dataset"))
            ok = parse_choice(f, v, datasets, &c, err, n), o->dataset = datasets[ok ? c : 0],
            o->given |= GIVEN_DATASET, for_cmd = FOR_TRAIN | FOR_EVAL;
        else if (!strcmp(f, "--digit"))
            ok = parse_int(f, v, 0, 9, &x, err, n), o->digit = (int)x, o->given |= GIVEN_DIGIT;
        else if (!strcmp(f, "--generator"))
            ok = parse_choice(f, v, generators, &c, err, n), o->generator = (gan_generator)c,
            o->given |= GIVEN_GENERATOR;
        else if (!strcmp(f, "--recipe"))
            ok = parse_choice(f, v, gan_recipe_names, &c, err, n), o->recipe = (gan_recipe)c,
            o->given |= GIVEN_RECIPE;
        else if (!strcmp(f, "--step"))
            ok = parse_choice(f, v, steps, &c, err, n), o->step = (gan_step_mode)c,
            o->given |= GIVEN_STEP;
        else if (!strcmp(f, "--init"))
            ok = parse_choice(f, v, gan_init_names, &c, err, n), o->init = (gan_init)c,
            o->given |= GIVEN_INIT;
        else if (!strcmp(f, "--adam"))
            ok = parse_choice(f, v, gan_adam_names, &c, err, n), o->adam_eps = (tg_adam_eps)c,
            o->given |= GIVEN_ADAM;
        else if (!strcmp(f, "--shuffle"))
            ok = parse_choice(f, v, shuffles, &c, err, n),
            o->shuffle_block = c == 0 ? GAN_PADDLE_SHUFFLE_BLOCK : 0, o->given |= GIVEN_SHUFFLE;
        else if (!strcmp(f, "--epochs"))
            ok = parse_int(f, v, 1, 1000000, &o->epochs, err, n);
        else if (!strcmp(f, "--iters"))
            ok = parse_int(f, v, 1, GAN_ITERS_MAX, &o->iters, err, n);
        else if (!strcmp(f, "--batch"))
            ok = parse_int(f, v, GAN_BATCH_MIN, GAN_BATCH_MAX, &o->batch, err, n),
            o->given |= GIVEN_BATCH;
        else if (!strcmp(f, "--lr"))
            ok = parse_float(f, v, 0, true, GAN_LR_MAX, &o->lr, err, n), o->given |= GIVEN_LR;
        else if (!strcmp(f, "--beta1"))
            ok = parse_float(f, v, 0, false, GAN_BETA1_MAX, &o->beta1, err, n),
            o->given |= GIVEN_BETA1;
        else if (!strcmp(f, "--beta2"))
            ok = parse_float(f, v, 0, false, GAN_BETA2_MAX, &o->beta2, err, n),
            o->given |= GIVEN_BETA2;
        else if (!strcmp(f, "--n-critic"))
            ok = parse_int(f, v, 1, GAN_N_CRITIC_MAX, &x, err, n), o->n_critic = (int)x,
            o->given |= GIVEN_N_CRITIC;
        else if (!strcmp(f, "--gp-lambda"))
            ok = parse_float(f, v, 0, false, GAN_LAMBDA_MAX, &o->gp_lambda, err, n),
            o->given |= GIVEN_GP_LAMBDA;
        else if (!strcmp(f, "--critic-norm"))
            ok = parse_choice(f, v, gan_critic_norm_names, &c, err, n),
            o->critic_norm = (gan_critic_norm)c, o->given |= GIVEN_CRITIC_NORM;
        else if (!strcmp(f, "--seed"))
            ok = parse_uint(f, v, INT64_MAX, &o->seed, err, n), o->given |= GIVEN_SEED,
            for_cmd = FOR_TRAIN | FOR_SAMPLE | FOR_EVAL;
        else if (!strcmp(f, "--threads"))
            ok = parse_threads(f, v, &o->threads, err, n),
            for_cmd = FOR_TRAIN | FOR_SAMPLE | FOR_EVAL;
        else if (!strcmp(f, "--matmul"))
            ok = parse_choice(f, v, gan_matmul_names, &c, err, n),
            o->matmul = (tg_matmul_precision)c, o->given |= GIVEN_MATMUL;
        else if (!strcmp(f, "--log-every"))
            ok = parse_int(f, v, 1, INT64_MAX / 2, &o->log_every, err, n);
        else if (!strcmp(f, "--grid-scale"))
            ok = parse_choice(f, v, scales, &c, err, n),
            o->grid_scale = c == 2 ? TG_GRID_FIXED : (tg_grid_scale)c, o->grid_both = c == 2,
            for_cmd = FOR_TRAIN | FOR_SAMPLE;
        else if (!strcmp(f, "--out"))
            ok = parse_path(f, v, cmd_bit == FOR_TRAIN ? &o->out_dir : &o->png_out, err, n),
            for_cmd = FOR_TRAIN | FOR_SAMPLE;
        else if (!strcmp(f, "--sync-bn"))
            ok = parse_choice(f, v, on_off, &c, err, n), o->sync_bn = c == 0;
        else if (!strcmp(f, "--width-div"))
            ok = parse_int(f, v, 1, GAN_WIDTH_DIV_MAX, &x, err, n), o->width_div = (int)x,
            o->given |= GIVEN_WIDTH;
        else if (!strcmp(f, "--checkpoint"))
            ok = parse_path(f, v, &o->checkpoint, err, n), for_cmd = FOR_SAMPLE | FOR_EVAL;
        else if (!strcmp(f, "--n"))
            ok = parse_int(f, v, cmd_bit == FOR_EVAL ? 2 : 1, 100000, &o->n, err, n),
            for_cmd = FOR_SAMPLE | FOR_EVAL;
        else if (!strcmp(f, "--classifier"))
            ok = parse_path(f, v, &o->classifier, err, n), for_cmd = FOR_TRAIN | FOR_EVAL;
        else if (!strcmp(f, "--images"))
            ok = parse_path(f, v, &o->images, err, n), for_cmd = FOR_EVAL;
        else if (!strcmp(f, "--json"))
            ok = parse_path(f, v, &o->json_path, err, n), for_cmd = FOR_EVAL;
        else if (!strcmp(f, "--eval-every"))
            ok = parse_int(f, v, 1, INT64_MAX / 2, &o->eval_every, err, n);
        else if (!strcmp(f, "--eval-n"))
            ok = parse_int(f, v, 2, 100000, &o->eval_n, err, n);
        else if (!strcmp(f, "--idx"))
            ok = parse_path(f, v, &o->idx_prefix, err, n), for_cmd = FOR_SAMPLE;
        else if (!strcmp(f, "--label"))
            ok = parse_label(f, v, &o->label, err, n), for_cmd = FOR_SAMPLE;
        else if (!strcmp(f, "--train-per-class"))
            ok = parse_int(f, v, 1, GAN_PER_CLASS_MAX, &o->per_class, err, n),
            o->given |= GIVEN_PER_CLASS;
        else {
            char q[128];
            snprintf(err, n, "unknown flag '%s' (see mnist_gan --help)", quoted(f, q, sizeof q));
            return false;
        }
        if (!ok)
            return false;
        if (!(for_cmd & cmd_bit)) {
            snprintf(err, n, "%s is not an option of '%s' (see mnist_gan --help)", f, argv[1]);
            return false;
        }
        if (!v[0]) {
            snprintf(err, n, "%s: empty value", f);
            return false;
        }
    }
    if (o->cmd != CMD_TRAIN && o->grid_both) {
        snprintf(err, n, "--grid-scale both is a train option (sample writes one grid)");
        return false;
    }
    if (o->cmd == CMD_SAMPLE && !o->checkpoint) {
        snprintf(err, n, "sample needs --checkpoint FILE");
        return false;
    }
    if (o->cmd == CMD_EVAL && (!o->checkpoint == !o->images || !o->classifier)) {
        snprintf(err, n, "%s",
                 o->checkpoint && o->images
                     ? "eval measures --checkpoint FILE or --images FILE, not both"
                     : "eval needs --checkpoint FILE (or --images FILE) and "
                       "--classifier FILE");
        return false;
    }
    if (o->cmd == CMD_TRAIN && (o->eval_every > 0) != (o->classifier != NULL)) {
        snprintf(err, n, "%s",
                 o->classifier ? "--classifier needs --eval-every N in train"
                               : "--eval-every needs --classifier FILE");
        return false;
    }
    if (o->cmd == CMD_EVAL && o->data_dir && (o->given & GIVEN_DATASET)) {
        snprintf(err, n, "give --data DIR or --dataset NAME, not both");
        return false;
    }
    if (o->cmd == CMD_TRAIN) {
        if (o->recipe != GAN_RECIPE_TUTORIAL && (o->given & GIVEN_GENERATOR) &&
            o->generator != GAN_GEN_CONVT) {
            snprintf(err, n,
                     "--generator %s belongs to the tutorial recipe; the "
                     "%s recipe has its own transposed-convolution generator",
                     generators[o->generator], gan_recipe_names[o->recipe]);
            return false;
        }
        /* resumed, the checkpoint names the recipe: train checks them then */
        if (!o->resume && !gan_recipe_flags_check(o, err, n))
            return false;
        /* The recipe's defaults for what the user left out. */
        gan_config d = gan_config_default(o->recipe);
        if (!(o->given & GIVEN_STEP))
            o->step = d.step;
        if (!(o->given & GIVEN_LR))
            o->lr = d.lr;
        if (!(o->given & GIVEN_BETA1))
            o->beta1 = d.beta1;
        if (!(o->given & GIVEN_BETA2))
            o->beta2 = d.beta2;
        if (!(o->given & GIVEN_INIT))
            o->init = d.init;
        if (!(o->given & GIVEN_ADAM))
            o->adam_eps = d.adam_eps;
        if (!(o->given & GIVEN_SHUFFLE))
            o->shuffle_block = d.shuffle_block;
        if (o->data_dir && (o->given & GIVEN_DATASET)) {
            snprintf(err, n, "give --data DIR or --dataset NAME, not both");
            return false;
        }
    }
    return true;
}

gan_config gan_options_config(const gan_options *o)
{
    return (gan_config){.recipe = o->recipe,
                        .generator = o->generator,
                        .step = o->step,
                        .init = o->init,
                        .adam_eps = o->adam_eps,
                        .shuffle_block = o->shuffle_block,
                        .lr = o->lr,
                        .beta1 = o->beta1,
                        .beta2 = o->beta2,
                        .seed = o->seed,
                        .n_critic = o->n_critic,
                        .gp_lambda = o->gp_lambda,
                        .critic_norm = o->critic_norm};
}
