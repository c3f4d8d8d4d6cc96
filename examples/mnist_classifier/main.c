/* mnist_classifier — train a LeNet-style CNN on MNIST or Fashion-MNIST, or evaluate a checkpoint.
 *
 *     mnist_classifier [--dataset mnist|fashion | --data DIR] [--epochs N] [--batch N] [--lr X]
 *                      [--lr-decay G] [--seed S] [--threads T] [--limit N] [--out FILE]
 *                      [--steps S] [--train-per-class N] [--augment classic]
 *                      [--augment-with PREFIX [--ratio R]] [--dropout P] [--json FILE]
 *     mnist_classifier --eval-only --checkpoint FILE [--dataset ... | --data DIR] [--threads T]
 *
 * Under `mpirun -np N` (built with MPI: dist/dist_opt.h) the same command trains data-parallel:
 * --batch is the global batch, each rank takes its 1/N of it (of the real and of the generated
 * part, each image with the augmentation and the dropout mask one process would give it), the
 * gradients are averaged before every Adam step, the test set is split between the ranks and
 * the counts added up, and rank 0 alone prints and writes (checkpoint, --json). A launch that
 * cannot work (N not dividing the batch or its parts, ranks with other flags or other data)
 * is refused with one line from rank 0 and exit status 2 on every rank.
 *
 * Training prints, per epoch, the mean training loss, the test accuracy and the seconds taken,
 * and saves a checkpoint after every epoch (atomically: an interrupted run leaves the previous
 * one). With --steps it runs a fixed number of optimizer steps instead, in --epochs stages of
 * the learning rate, and tests and saves at the end: the schedule of issue 16's augmentation
 * study, the same for 100 training images as for 60,000. The model lives in classifier.c, the
 * batches (real, generated, augmented) in batches.c; this file is the program around them.
 * Only the public API is used (tapegrad.h): this is what a program of yours looks like.
 *
 * Exit status: 0 done, 2 bad input (flags, data files, checkpoint), 1 any other failure. */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "batches.h"
#include "classifier.h"

static const char usage[] =
    "usage: mnist_classifier [options]                 train, test, save\n"
    "       mnist_classifier --eval-only --checkpoint FILE [options]   test a saved model\n"
    "\n"
    "  --dataset NAME   mnist (default: data-cache/mnist, made by scripts/fetch-mnist.sh) or\n"
    "                   fashion (/usr/share/datasets/fashion-mnist, Debian's\n"
    "                   dataset-fashion-mnist package)\n"
    "  --data DIR       a folder with the four MNIST-format files instead (raw or .gz)\n"
    "  --epochs N       epochs to train (default 5), each a pass over the real training\n"
    "                   images, with a test and a checkpoint after it; with --steps, stages\n"
    "  --steps S        train exactly S optimizer steps whatever the number of images (the\n"
    "                   batches run on across epochs), in --epochs stages of ceil(S / epochs)\n"
    "                   steps (the last may be shorter); test and save at the end only\n"
    "  --batch N        batch size (default 64)\n"
    "  --lr X           Adam learning rate of the first epoch or stage (default 1e-3)\n"
    "  --lr-decay G     the rate is multiplied by G after every epoch or stage (default 0.7)\n"
    "  --dropout P      dropout rate before the last layer, in [0, 1) (default 0.5; 0: none)\n"
    "  --seed S         seed of the weights, dropout, shuffling, --train-per-class's choice\n"
    "                   and the augmentation (default 1)\n"
    "  --threads T      threads for kernels and BLAS (default 2)\n"
    "  --limit N        train on the first N training images only (quick runs)\n"
    "  --train-per-class N  train on N images of every digit, chosen by --seed exactly as\n"
    "                   mnist_gan train --train-per-class N --seed S chooses them\n"
    "                   (tg_dataset_per_class); not with --limit\n"
    "  --augment KIND   none (default) or classic: every image of every training batch is\n"
    "                   shifted up to 2 pixels each way, turned up to 10 degrees either way\n"
    "                   and scaled by 0.9 to 1.1 (bilinear, black outside), drawn from a\n"
    "                   stream of --seed; with --augment-with, generated images too\n"
    "  --augment-with PREFIX  mix generated images into every batch: PREFIX-images-idx3-ubyte\n"
    "                   and PREFIX-labels-idx1-ubyte (28x28, labels 0..9: mnist_gan sample\n"
    "                   --idx), through their own shuffled loader; never in the test set\n"
    "  --ratio R        generated share of a batch, in [0, 1) (default 0.5): round(R * batch)\n"
    "                   generated images and the rest real (an epoch: a pass over the real)\n"
    "  --out FILE       checkpoint to write (default mnist_classifier.safetensors,\n"
    "                   fashion_classifier.safetensors, or classifier.safetensors with --data)\n"
    "  --json FILE      append one JSON line for the finished run: its settings, the test\n"
    "                   accuracy (fraction and count) and the seconds it took\n"
    "  --eval-only      evaluate --checkpoint FILE on the test set instead of training\n"
    "\n"
    "Exit status: 0 done, 2 bad input (flags, data files, checkpoint), 1 other failures.\n";

/* Where --dataset NAME finds its files. */
static const struct {
    const char *name, *dir;
} datasets[] = {
    {"mnist", "data-cache/mnist"},
    {"fashion", "/usr/share/datasets/fashion-mnist"},
};

typedef struct {
    const char *dataset; /* a name from datasets[], or NULL with --data */
    const char *data_dir;
    long epochs, batch, threads, limit; /* limit 0: every training image */
    long steps;                         /* 0: train --epochs epochs */
    long train_per_class;               /* 0: every training image (or --limit) */
    float lr, lr_decay, dropout;
    double ratio; /* the generated share of a batch (with augment_with) */
    unsigned long long seed;
    bool augment; /* --augment classic */
    const char *augment_with, *json;
    const char *out;
    bool eval_only;
    const char *checkpoint;
    bool help;
} options;

/* Under MPI only rank 0 speaks: the others reach the same verdicts, or tell rank 0 theirs
 * through dp_agree. quiet: this is another rank. */
static bool quiet;
/* While reading the input, a complaint is kept (in `kept`) rather than printed, for the ranks
 * to agree on first; one process then prints it just as it would have at once. */
static bool keeping;
static char kept[1024];

/* Prints "mnist_classifier: <message>" as one line on stderr (or keeps it; see above). */
static void complain(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void complain(const char *fmt, ...)
{
    char msg[sizeof kept];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (keeping)
        memcpy(kept, msg, sizeof kept);
    else if (!quiet)
        fprintf(stderr, "mnist_classifier: %s\n", msg);
}

/* v as a message may quote it: escaped (tg_escape), so a hostile value cannot split the line
 * or colour the terminal. Returns buf. */
static const char *quoted(const char *v, char *buf, size_t n)
{
    tg_escape(buf, n, v, strlen(v));
    return buf;
}

/* Reads a whole number in [lo, hi] for flag (tg_parse_int: decimal only, no blanks or '+');
 * false (after saying why) otherwise. */
static bool parse_long(const char *flag, const char *s, long lo, long hi, long *out)
{
    int64_t v;
    if (tg_parse_int(s, lo, hi, &v) != TG_OK) {
        char q[128];
        complain("%s '%s': expected a whole number from %ld to %ld", flag, quoted(s, q, sizeof q),
                 lo, hi);
        return false;
    }
    *out = (long)v;
    return true;
}

/* Reads a number in (0, hi] for flag (tg_parse_real) that stays above 0 as a float; false
 * (after saying why) otherwise. */
static bool parse_positive(const char *flag, const char *s, double hi, const char *expected,
                           float *out)
{
    double v;
    if (tg_parse_real(s, 0.0, hi, &v) != TG_OK || !((float)v > 0.0f)) {
        char q[128];
        complain("%s '%s': expected %s", flag, quoted(s, q, sizeof q), expected);
        return false;
    }
    *out = (float)v;
    return true;
}

/* A path flag's value: control characters (a newline splits every message naming the file)
 * are refused; false after saying so. */
static bool parse_path(const char *flag, const char *s, const char **out)
{
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            char q[256];
            complain("%s '%s': holds a control character", flag, quoted(s, q, sizeof q));
            return false;
        }
    *out = s;
    return true;
}

/* A number in [0, 1) for flag; false (after saying why) otherwise. */
static bool parse_fraction(const char *flag, const char *s, double *out)
{
    if (tg_parse_real(s, 0.0, 1.0, out) != TG_OK || *out >= 1.0) {
        char q[128];
        complain("%s '%s': expected a number in [0, 1)", flag, quoted(s, q, sizeof q));
        return false;
    }
    return true;
}

/* --threads: 1..256 and no more than the CPUs (more only wait on each other, and under an
 * address-space limit OpenBLAS's per-thread buffers spun forever: issue 19). */
static bool parse_threads(const char *flag, const char *s, long *out)
{
    if (!parse_long(flag, s, 1, 256, out))
        return false;
    const long cpus = tg_get_num_cpus();
    if (*out > cpus) {
        char q[64];
        complain("%s '%s': more than the %ld CPU%s this process can run on", flag,
                 quoted(s, q, sizeof q), cpus, cpus == 1 ? "" : "s");
        return false;
    }
    return true;
}

/* Fills o from the command line; false (after one line on stderr) on bad input. */
static bool parse_options(int argc, char **argv, options *o)
{
    *o = (options){.dataset = "mnist",
                   .epochs = 5,
                   .batch = 64,
                   .lr = 1e-3f,
                   .lr_decay = 0.7f,
                   .dropout = CLF_DROPOUT,
                   .ratio = 0.5,
                   .seed = 1,
                   .threads = tg_get_num_cpus() >= 2 ? 2 : 1}; /* default 2, at most the CPUs */
    bool have_data = false, have_dataset = false, have_ratio = false;
    const char *training_flag = NULL; /* the first flag given that only training reads */
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i];
        if (!strcmp(flag, "--help") || !strcmp(flag, "-h")) {
            o->help = true; /* main prints the usage, on rank 0 */
            return true;
        }
        if (!strcmp(flag, "--eval-only")) {
            o->eval_only = true;
            continue;
        }
        if (strncmp(flag, "--", 2) != 0) {
            char q[256];
            complain("unexpected argument '%s' (see --help)", quoted(flag, q, sizeof q));
            return false;
        }
        /* Every other flag takes a value. */
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool known =
            !strcmp(flag, "--data") || !strcmp(flag, "--dataset") || !strcmp(flag, "--epochs") ||
            !strcmp(flag, "--batch") || !strcmp(flag, "--lr") || !strcmp(flag, "--lr-decay") ||
            !strcmp(flag, "--seed") || !strcmp(flag, "--threads") || !strcmp(flag, "--limit") ||
            !strcmp(flag, "--out") || !strcmp(flag, "--checkpoint") || !strcmp(flag, "--steps") ||
            !strcmp(flag, "--train-per-class") || !strcmp(flag, "--augment") ||
            !strcmp(flag, "--augment-with") || !strcmp(flag, "--ratio") ||
            !strcmp(flag, "--dropout") || !strcmp(flag, "--json");
        if (!known) {
            char q[128];
            complain("unknown flag '%s' (see --help)", quoted(flag, q, sizeof q));
            return false;
        }
        if (!v) {
            complain("%s needs a value (see --help)", flag);
            return false;
        }
        i++;
        bool ok = true;
        static const char *const training_only[] = {
            "--steps", "--train-per-class", "--augment", "--augment-with",
            "--ratio", "--dropout",         "--json"};
        for (size_t k = 0; k < sizeof training_only / sizeof training_only[0]; k++)
            if (!training_flag && !strcmp(flag, training_only[k]))
                training_flag = training_only[k];
        if (!strcmp(flag, "--data")) {
            ok = parse_path(flag, v, &o->data_dir), have_data = true;
        } else if (!strcmp(flag, "--dataset")) {
            o->dataset = NULL, have_dataset = true;
            for (size_t k = 0; k < sizeof datasets / sizeof datasets[0]; k++)
                if (!strcmp(v, datasets[k].name))
                    o->dataset = datasets[k].name;
            if (!o->dataset) {
                char q[128];
                complain("--dataset '%s': expected mnist or fashion", quoted(v, q, sizeof q));
                return false;
            }
        } else if (!strcmp(flag, "--epochs")) {
            ok = parse_long(flag, v, 1, 1000, &o->epochs);
        } else if (!strcmp(flag, "--batch")) {
            ok = parse_long(flag, v, 1, 65536, &o->batch);
        } else if (!strcmp(flag, "--threads")) {
            ok = parse_threads(flag, v, &o->threads);
        } else if (!strcmp(flag, "--limit")) {
            ok = parse_long(flag, v, 1, 1L << 30, &o->limit);
        } else if (!strcmp(flag, "--steps")) {
            ok = parse_long(flag, v, 1, 1000000000L, &o->steps);
        } else if (!strcmp(flag, "--train-per-class")) {
            ok = parse_long(flag, v, 1, 1L << 30, &o->train_per_class);
        } else if (!strcmp(flag, "--augment")) {
            if (strcmp(v, "none") != 0 && strcmp(v, "classic") != 0) {
                char q[128];
                complain("--augment '%s': expected none or classic", quoted(v, q, sizeof q));
                return false;
            }
            o->augment = !strcmp(v, "classic");
        } else if (!strcmp(flag, "--augment-with")) {
            ok = parse_path(flag, v, &o->augment_with);
        } else if (!strcmp(flag, "--ratio")) {
            ok = parse_fraction(flag, v, &o->ratio), have_ratio = true;
        } else if (!strcmp(flag, "--dropout")) {
            double p;
            ok = parse_fraction(flag, v, &p);
            o->dropout = (float)p;
            if (ok && o->dropout >= 1.0f) { /* 0.99999999 rounds to 1 as a float */
                char q[128];
                complain("--dropout '%s': expected a number in [0, 1) as a float",
                         quoted(v, q, sizeof q));
                return false;
            }
        } else if (!strcmp(flag, "--json")) {
            ok = parse_path(flag, v, &o->json);
        } else if (!strcmp(flag, "--lr")) {
            ok = parse_positive(flag, v, FLT_MAX, "a positive number", &o->lr);
        } else if (!strcmp(flag, "--lr-decay")) {
            ok = parse_positive(flag, v, 1.0, "a number in (0, 1]", &o->lr_decay);
        } else if (!strcmp(flag, "--seed")) {
            /* tg_parse_uint refuses a sign: strtoull wrapped "-1" to 2^64 - 1 */
            uint64_t seed;
            char q[128];
            if (tg_parse_uint(v, UINT64_MAX, &seed) != TG_OK) {
                complain("--seed '%s': expected a whole number from 0 to 2^64 - 1",
                         quoted(v, q, sizeof q));
                return false;
            }
            o->seed = seed;
        } else if (!strcmp(flag, "--out")) {
            ok = parse_path(flag, v, &o->out);
        } else { /* --checkpoint */
            ok = parse_path(flag, v, &o->checkpoint);
        }
        if (!ok)
            return false;
    }
    if (have_data && have_dataset) {
        complain("--data and --dataset both name the data: give one");
        return false;
    }
    if (have_data)
        o->dataset = NULL;
    else
        for (size_t k = 0; k < sizeof datasets / sizeof datasets[0]; k++)
            if (!strcmp(o->dataset, datasets[k].name))
                o->data_dir = datasets[k].dir;
    if (o->eval_only != (o->checkpoint != NULL)) {
        complain(o->eval_only ? "--eval-only needs --checkpoint FILE"
                              : "--checkpoint is only read with --eval-only");
        return false;
    }
    if (o->eval_only && training_flag) {
        complain("%s is a training flag: not with --eval-only", training_flag);
        return false;
    }
    if (o->train_per_class && o->limit) {
        complain("--train-per-class and --limit both choose the training images: give one");
        return false;
    }
    if (have_ratio && !o->augment_with) {
        complain("--ratio sets the share of --augment-with's images: give --augment-with PREFIX");
        return false;
    }
    return true;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The train or test split of o's data, checked to be 28x28 images; NULL after one line on
 * stderr (the caller exits 2: the data is the user's input). */
static tg_dataset *load_split(const options *o, bool train)
{
    tg_dataset *ds = tg_data_load_mnist(o->data_dir, train, -1);
    if (!ds) {
        const char *hint = ""; /* how to get a missing dataset */
        if (tg_last_status() == TG_ERR_IO && o->dataset)
            hint = !strcmp(o->dataset, "mnist") ? " (scripts/fetch-mnist.sh downloads MNIST)"
                                                : " (apt-get install dataset-fashion-mnist)";
        complain("%s%s", tg_last_error(), hint);
        return NULL;
    }
    const tg_tensor *x = ds->images;
    if (x->shape[2] != 28 || x->shape[3] != 28 || x->shape[0] == 0) {
        complain("%s: %lld %s images of %lldx%lld: the classifier takes 28x28 ones, at least "
                 "one",
                 o->data_dir, (long long)x->shape[0], train ? "training" : "test",
                 (long long)x->shape[2], (long long)x->shape[3]);
        tg_dataset_free(ds);
        return NULL;
    }
    return ds;
}

/* Keeps the first n images (and labels) of ds. */
static tg_status keep_first(tg_dataset *ds, int64_t n)
{
    tg_tensor *x = tg_tensor_from_data(TG_DIMS(n, 1, 28, 28), ds->images->data);
    tg_tensor *y = tg_tensor_from_data(TG_DIMS(n), ds->labels->data);
    if (!x || !y) {
        tg_tensor_release(x);
        tg_tensor_release(y);
        return tg_last_status();
    }
    tg_tensor_release(ds->images);
    tg_tensor_release(ds->labels);
    ds->images = x;
    ds->labels = y;
    return TG_OK;
}

/* Adam over every parameter of m, with PyTorch's defaults besides the learning rate. */
static tg_optim *adam_for(const clf_model *m, float lr)
{
    int64_t n;
    tg_tensor **params = tg_module_parameters(m->net, &n);
    if (!params)
        return NULL;
    tg_optim *opt = tg_optim_adam(params, n, lr, TG_ADAM_BETA1, TG_ADAM_BETA2, TG_ADAM_EPS, 0.0f);
    free(params); /* the optimizer retained the tensors */
    return opt;
}

/* Moves rng past n uniform draws (the dropout's: one per element, autograd.h). */
static void skip_draws(tg_rng *rng, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        (void)tg_rng_uniform01(rng);
}

/* n optimizer steps, one batch each: forward, cross-entropy, backward, (under MPI: the
 * gradients averaged over the ranks,) Adam step. *mean_loss gets the mean of the batch losses
 * (of the global batches, under MPI). params: the model's n_params parameters; dropout: its
 * rate. */
static tg_status train_steps(clf_model *m, tg_optim *opt, clf_batches *batches, int64_t n,
                             float dropout, tg_dist *d, tg_tensor *const *params, int64_t n_params,
                             double *mean_loss)
{
    tg_module_train(m->net, true); /* dropout on */
    /* Under MPI each rank draws the dropout mask of its rows of the global batch, passing over
     * the other rows' draws, so N ranks drop what one process would. */
    const int64_t per_row = dropout > 0.0f ? CLF_FEATURES : 0;
    double sum = 0.0;
    for (int64_t b = 0; b < n; b++) {
        tg_tensor *x, *y;
        tg_status st = clf_batches_next(batches, &x, &y);
        if (st != TG_OK)
            return dp_agree(d, st);
        const int64_t rows = x->shape[0];
        tg_tape *tape = tg_tape_begin(TG_GRAD);
        if (tape) {
            skip_draws(&m->dropout_rng, dp_rank(d) * rows * per_row);
            /* The loader gives labels as floats; tg_labels makes them the index it takes. */
            tg_tensor *loss = tg_cross_entropy(clf_forward(m, x), tg_labels(y), TG_REDUCE_MEAN);
            skip_draws(&m->dropout_rng, (dp_size(d) - 1 - dp_rank(d)) * rows * per_row);
            st = tg_backward(loss); /* one check covers the whole chain */
            if (st == TG_OK)
                sum += tg_tensor_item(loss);
            /* One rank's failure stops every rank before the gradients' collective. */
            st = dp_agree(d, st);
            if (st == TG_OK && (st = dp_allreduce_grads(d, params, n_params)) == TG_OK)
                st = dp_agree(d, tg_optim_step(opt));
            tg_optim_zero_grad(opt);
            tg_tape_end(tape); /* frees every activation of the step */
        } else {
            st = dp_agree(d, tg_last_status());
        }
        tg_tensor_release(x);
        tg_tensor_release(y);
        if (st != TG_OK)
            return st;
    }
    /* The global batches' mean: the mean over the ranks of their means over equal shares. */
    tg_tensor *mean = tg_tensor_full(0, NULL, (float)(sum / (double)n));
    tg_status st = dp_agree(d, mean ? TG_OK : tg_last_status());
    if (st == TG_OK)
        st = dp_allreduce_mean(d, &mean, 1);
    if (st == TG_OK)
        *mean_loss = dp_size(d) > 1 ? (double)mean->data[0] : sum / (double)n;
    tg_tensor_release(mean);
    return st;
}

/* --eval-only: the checkpoint's accuracy on the test set. */
static int evaluate_checkpoint(const options *o)
{
    clf_info info;
    clf_model *m = clf_load(o->checkpoint, &info);
    if (!m) {
        complain("%s", tg_last_error());
        return tg_last_status() == TG_ERR_NOMEM ? 1 : 2;
    }
    int status = 2;
    tg_dataset *test = load_split(o, false);
    if (test) {
        double acc;
        int64_t correct;
        double t0 = now_seconds();
        status = 1;
        if (clf_accuracy(m, test->images, test->labels, &acc, &correct) == TG_OK) {
            printf("%s (epoch %lld, trained on %s, recorded test accuracy %.2f%%)\n", o->checkpoint,
                   (long long)info.epoch, info.dataset, 100.0 * info.test_accuracy);
            printf("test accuracy %.2f%% (%lld/%lld) on %s in %.1f s\n", 100.0 * acc,
                   (long long)correct, (long long)test->images->shape[0], o->data_dir,
                   now_seconds() - t0);
            status = 0;
        } else {
            complain("%s", tg_last_error());
        }
    }
    tg_dataset_free(test);
    clf_free(m);
    return status;
}

/* s as a JSON string on out. Paths reach here through parse_path, so no control character
 * needs a \u escape; the rest pass as they are. */
static void json_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fputc('\\', out);
        fputc(*s, out);
    }
    fputc('"', out);
}

/* What a finished run reports in its --json line besides the options. */
typedef struct {
    int64_t train_images, generated_images, n_gen; /* n_gen: generated images per batch */
    int64_t steps, stages, correct, total;
    double accuracy, seconds;
    int ranks; /* MPI ranks that trained it (1: one process) */
} run_result;

/* Appends the run's line to f (opened on o->json) in a single write(), so that runs appending
 * to one file at once do not interleave within a line. 0, or 1 after saying why. */
static int append_json(const options *o, FILE *f, const run_result *r)
{
    char *line = NULL;
    size_t len = 0;
    FILE *ms = open_memstream(&line, &len);
    if (!ms) {
        complain("--json %s: cannot build the line: %s", o->json, strerror(errno));
        return 1;
    }
    fprintf(ms, "{\"train_per_class\": ");
    if (o->train_per_class)
        fprintf(ms, "%ld", o->train_per_class);
    else
        fputs("null", ms);
    fprintf(ms,
            ", \"train_images\": %lld, \"seed\": %llu, \"steps\": %lld, \"schedule\": \"%s\", "
            "\"stages\": %lld, \"batch\": %ld, \"lr\": %.7g, \"lr_decay\": %.7g, "
            "\"dropout\": %.7g, \"augment\": \"%s\", \"augment_with\": ",
            (long long)r->train_images, o->seed, (long long)r->steps, o->steps ? "steps" : "epochs",
            (long long)r->stages, o->batch, (double)o->lr, (double)o->lr_decay, (double)o->dropout,
            o->augment ? "classic" : "none");
    if (o->augment_with) {
        json_string(ms, o->augment_with);
        fprintf(ms, ", \"ratio\": %.9g, \"generated_images\": %lld, \"generated_per_batch\": %lld",
                o->ratio, (long long)r->generated_images, (long long)r->n_gen);
    } else {
        fputs("null, \"ratio\": null, \"generated_images\": 0, \"generated_per_batch\": 0", ms);
    }
    if (r->ranks > 1) /* only under MPI: one process's line stays as it was */
        fprintf(ms, ", \"ranks\": %d", r->ranks);
    fputs(", \"data\": ", ms);
    json_string(ms, o->data_dir);
    fprintf(ms,
            ", \"test_accuracy\": %.6f, \"test_correct\": %lld, \"test_total\": %lld, "
            "\"seconds\": %.3f}\n",
            r->accuracy, (long long)r->correct, (long long)r->total, r->seconds);
    const bool stream_ok = !ferror(ms); /* read before fclose, which runs either way */
    const bool built = fclose(ms) == 0 && stream_ok;
    const ssize_t wrote = built ? write(fileno(f), line, len) : -1;
    const int err = errno;
    free(line);
    if (wrote != (ssize_t)len) {
        complain("--json %s: cannot append the run's line: %s", o->json,
                 !built      ? "out of memory"
                 : wrote < 0 ? strerror(err)
                             : "short write");
        return 1;
    }
    return 0;
}

/* Every rank must run with the same flags, but for --threads (each machine's cores) and --data
 * (each machine's path to the files, whose contents are compared instead): the rest of argv,
 * compared across the ranks (tg_dist_check_same). One process: TG_OK. */
static tg_status check_same_flags(tg_dist *d, int argc, char **argv)
{
    if (!d)
        return TG_OK;
    size_t len = 0;
    for (int i = 1; i < argc; i++)
        len += strlen(argv[i]) + 1;
    char *all = malloc(len + 1);
    tg_status st = dp_agree(
        d,
        all ? TG_OK : tg_set_error(TG_ERR_NOMEM, "mnist_classifier: out of memory for the flags"));
    if (st != TG_OK) {
        free(all);
        return st;
    }
    size_t at = 0;
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "--threads") || !strcmp(argv[i], "--data")) && i + 1 < argc) {
            i++;
            continue;
        }
        const size_t n = strlen(argv[i]) + 1; /* with its '\0', so "a b" differs from "ab" */
        memcpy(all + at, argv[i], n);
        at += n;
    }
    st = dp_check_same(d, all, at, "the flags");
    free(all);
    return st;
}

/* The same images and labels on every rank (their bytes compared), what, e.g. "the training
 * images", naming them. */
static tg_status check_same_data(tg_dist *d, const tg_dataset *ds, const char *what)
{
    tg_status st =
        dp_check_same(d, ds->images->data, sizeof(float) * (size_t)ds->images->numel, what);
    return st == TG_OK
               ? dp_check_same(d, ds->labels->data, sizeof(float) * (size_t)ds->labels->numel, what)
               : st;
}

/* The test accuracy: under MPI each rank tests a slice of the test set (rows [r T / N,
 * (r + 1) T / N)) and the counts are added up; one process tests it all. */
static tg_status test_accuracy(clf_model *m, const tg_dataset *test, tg_dist *d, double *acc,
                               int64_t *correct)
{
    if (!d)
        return clf_accuracy(m, test->images, test->labels, acc, correct);
    const int64_t T = test->images->shape[0], r = dp_rank(d), N = dp_size(d);
    const int64_t lo = T * r / N, hi = T * (r + 1) / N, per = test->images->numel / T;
    tg_tensor *x = tg_tensor_from_data(TG_DIMS(hi - lo, 1, 28, 28), test->images->data + lo * per);
    tg_tensor *y = x ? tg_tensor_from_data(TG_DIMS(hi - lo), test->labels->data + lo) : NULL;
    tg_tensor *count = y ? tg_tensor_zeros(0, NULL) : NULL;
    int64_t mine = 0;
    double unused;
    tg_status st = count ? TG_OK : tg_last_status();
    if (st == TG_OK && hi > lo)
        st = clf_accuracy(m, x, y, &unused, &mine);
    if (st == TG_OK)
        count->data[0] = (float)mine; /* a count up to 2^24: exact as a float */
    if ((st = dp_agree(d, st)) == TG_OK)
        st = dp_allreduce_mean(d, &count, 1);
    if (st == TG_OK) {
        *correct = llround((double)count->data[0] * (double)N);
        *acc = (double)*correct / (double)T;
    }
    tg_tensor_release(x);
    tg_tensor_release(y);
    tg_tensor_release(count);
    return st;
}

/* Training: the model, Adam and the batches; a test and a checkpoint after every epoch, or at
 * the end of a run of --steps. Under MPI (d) every failure is agreed on by the ranks, so all
 * return the same status. */
static int train_and_save(options *o, tg_dist *d)
{
    const double t_start = now_seconds();
    const bool writer = dp_rank(d) == 0; /* rank 0 alone writes files */
    char default_out[96];
    if (!o->out) {
        snprintf(default_out, sizeof default_out, "%s%sclassifier.safetensors",
                 o->dataset ? o->dataset : "", o->dataset ? "_" : "");
        o->out = default_out;
    }
    int status = 2; /* until the data is loaded and checked, failures are bad input */
    tg_dataset *train = NULL, *test = NULL, *gen = NULL;
    clf_batches *batches = NULL;
    clf_model *m = NULL;
    tg_optim *opt = NULL;
    tg_tensor **params = NULL;
    int64_t n_params = 0;
    run_result r = {.ranks = dp_size(d)};
    FILE *json = NULL; /* opened now for the same reason; a FIFO is refused, not waited on */
    int64_t n_train = 0, n_gen = 0, n_real = 0, share;

    /* The setup: a failure keeps its message (complain while `keeping`) and the ranks agree
     * before anyone prints it, so a rank whose files are missing stops them all. */
    keeping = true;
    kept[0] = '\0';
    /* Fail now, not after the first epoch, when the checkpoint cannot be written there. */
    tg_atomic_file *probe = writer ? tg_atomic_open(o->out) : NULL;
    if (writer && !probe) {
        complain("--out: %s", tg_last_error());
        goto setup_done;
    }
    tg_atomic_abort(probe);
    if (writer && o->json && !(json = tg_data_fopen_regular(o->json, "a"))) {
        complain("--json: %s", tg_last_error());
        goto setup_done;
    }
    train = load_split(o, true);
    test = train ? load_split(o, false) : NULL;
    if (!test)
        goto setup_done;
    if (o->train_per_class) {
        /* The seed exactly as given: mnist_gan's --train-per-class draws the same images. */
        tg_dataset *some = tg_dataset_per_class(train, o->train_per_class, o->seed);
        if (!some) {
            status = tg_last_status() == TG_ERR_NOMEM ? 1 : 2;
            complain("--train-per-class %ld: %s", o->train_per_class, tg_last_error());
            goto setup_done;
        }
        tg_dataset_free(train);
        train = some;
    }
    n_train = train->images->shape[0];
    if (o->limit > 0 && o->limit < n_train) {
        n_train = o->limit;
        if (keep_first(train, n_train) != TG_OK) {
            status = 1;
            complain("%s", tg_last_error());
            goto setup_done;
        }
    }
    if (o->augment_with && !(gen = clf_read_generated(o->augment_with))) {
        status = tg_last_status() == TG_ERR_NOMEM ? 1 : 2;
        complain("--augment-with: %s", tg_last_error());
        goto setup_done;
    }
    n_gen = gen ? (int64_t)llround(o->ratio * (double)o->batch) : 0;
    n_real = o->batch - n_gen;
    if (!gen && o->batch > n_train) {
        complain("--batch %ld is larger than the %lld training images", o->batch,
                 (long long)n_train);
        goto setup_done;
    }
    if (gen && (n_real < 1 || n_real > n_train || n_gen > gen->images->shape[0])) {
        complain("--batch %ld with --ratio %g takes %lld real and %lld generated images a batch: "
                 "need at least one real, and there are %lld real and %lld generated",
                 o->batch, o->ratio, (long long)n_real, (long long)n_gen, (long long)n_train,
                 (long long)gen->images->shape[0]);
        goto setup_done;
    }
    /* Under MPI the batch, and each of its parts, splits evenly over the ranks. */
    if (dp_local_batch(d, o->batch, &share) != TG_OK ||
        (gen && dp_local_batch(d, n_real, &share) != TG_OK) ||
        (gen && dp_local_batch(d, n_gen, &share) != TG_OK)) {
        complain("--batch %ld%s: %s", o->batch, gen ? " (its real and its generated part)" : "",
                 tg_last_error());
        goto setup_done;
    }
    status = 0;
setup_done:
    keeping = false;
    /* One process: the message it kept, as it was; under MPI, the lowest failing rank's. */
    if ((status = dp_agree_exit(d, status, kept)) == 0 &&
        (check_same_data(d, train, "the training images") != TG_OK ||
         (gen && check_same_data(d, gen, "the generated images") != TG_OK)))
        status = 2;
    if (status != 0) {
        complain("%s", tg_last_error());
        goto done;
    }

    status = 1; /* from here on, a failure is the program's or the machine's */
    m = clf_new_with_dropout(o->seed, o->dropout);
    opt = m ? adam_for(m, o->lr) : NULL;
    batches = opt ? clf_batches_new(train, gen, o->batch, n_gen, o->augment, o->seed) : NULL;
    params = batches ? tg_module_parameters(m->net, &n_params) : NULL;
    tg_status st = params ? TG_OK : tg_last_status();
    /* Every rank drew the same weights from the seed; rank 0's go to all regardless. */
    if ((st = dp_agree(d, st)) == TG_OK)
        st = dp_broadcast_params(d, m->net);
    if (st != TG_OK) {
        complain("%s", tg_last_error());
        goto done;
    }
    clf_batches_set_dist(batches, d);
    const int64_t per_epoch = clf_batches_per_epoch(batches);
    const int64_t total = o->steps ? o->steps : o->epochs * per_epoch;
    /* A step decay per stage (PyTorch's StepLR): large steps while far from a minimum, small
     * ones to settle into it. A stage is an epoch, or with --steps ceil(steps / epochs)
     * steps, so that the schedule does not depend on how many images there are. */
    const int64_t stage_len = o->steps ? (o->steps + o->epochs - 1) / o->epochs : per_epoch;
    const int64_t stages = (total + stage_len - 1) / stage_len;

    printf("mnist_classifier: %s (%s): %lld training", o->dataset ? o->dataset : "data",
           o->data_dir, (long long)n_train);
    if (o->train_per_class)
        printf(" (%ld of each digit, seed %llu)", o->train_per_class, o->seed);
    printf(", %lld test images\n", (long long)test->images->shape[0]);
    if (gen)
        printf("generated: %lld images from %s\n", (long long)gen->images->shape[0],
               o->augment_with);
    char what[256];
    printf("batches of %s\n", clf_batches_describe(batches, what, sizeof what));
    if (d)
        printf("data-parallel: %d ranks, %lld images of each batch a rank\n", dp_size(d),
               (long long)(o->batch / dp_size(d)));
    printf("model: %s; %lld parameters", CLF_ARCH, (long long)tg_module_num_parameters(m->net));
    if (o->dropout != CLF_DROPOUT)
        printf("; dropout %g instead", (double)o->dropout);
    if (o->steps)
        printf("\nAdam lr %g (x %g every %lld steps), batch %ld, %lld steps in %lld stages",
               (double)o->lr, (double)o->lr_decay, (long long)stage_len, o->batch, (long long)total,
               (long long)stages);
    else
        printf("\nAdam lr %g (x %g per epoch), batch %ld, %ld epochs", (double)o->lr,
               (double)o->lr_decay, o->batch, o->epochs);
    printf(", seed %llu, %d thread%s, %s\n", o->seed, tg_get_num_threads(),
           tg_get_num_threads() == 1 ? "" : "s", tg_blas_info());
    fflush(stdout);

    for (int64_t stage = 1, done_steps = 0; stage <= stages; stage++) {
        const int64_t n = total - done_steps < stage_len ? total - done_steps : stage_len;
        const bool last = stage == stages, tested = !o->steps || last;
        double loss = 0.0, t0 = now_seconds();
        float lr = o->lr * powf(o->lr_decay, (float)(stage - 1));
        if (tg_optim_set_lr(opt, lr) != TG_OK ||
            train_steps(m, opt, batches, n, o->dropout, d, params, n_params, &loss) != TG_OK)
            break;
        done_steps += n;
        double t1 = now_seconds();
        if (tested && test_accuracy(m, test, d, &r.accuracy, &r.correct) != TG_OK)
            break;
        double t2 = now_seconds();
        if (o->steps)
            printf("stage %lld/%lld  steps %lld-%lld of %lld  lr %.2e  train loss %.4f",
                   (long long)stage, (long long)stages, (long long)(done_steps - n + 1),
                   (long long)done_steps, (long long)total, (double)lr, loss);
        else
            printf("epoch %lld/%ld  lr %.2e  train loss %.4f", (long long)stage, o->epochs,
                   (double)lr, loss);
        if (tested)
            printf("  test accuracy %.2f%% (%lld/%lld)  %.1f s (train %.1f s, test %.1f s)\n",
                   100.0 * r.accuracy, (long long)r.correct, (long long)test->images->shape[0],
                   t2 - t0, t1 - t0, t2 - t1);
        else
            printf("  %.1f s\n", t1 - t0);
        fflush(stdout);
        if (!tested)
            continue;

        clf_info info = {.epoch = stage, .steps = done_steps, .test_accuracy = r.accuracy};
        snprintf(info.dataset, sizeof info.dataset, "%s", o->dataset ? o->dataset : o->data_dir);
        /* Rank 0 saves; every rank hears whether it could. */
        if (dp_agree(d, writer ? clf_save(m, &info, o->out) : TG_OK) != TG_OK)
            break;
        if (last) {
            printf("saved %s\n", o->out);
            status = 0;
        }
    }
    if (status != 0) {
        complain("%s", tg_last_error());
    } else if (json) {
        r.train_images = n_train;
        r.generated_images = gen ? gen->images->shape[0] : 0;
        r.n_gen = n_gen;
        r.steps = total;
        r.stages = stages;
        r.total = test->images->shape[0];
        r.seconds = now_seconds() - t_start;
        status = append_json(o, json, &r);
    }
    /* The --json line is rank 0's last word: every rank exits with its status. (Every other
     * failure above was agreed on, so the ranks' statuses differ only here.) */
    if (d)
        status =
            dp_agree(d, status == 0 ? TG_OK : tg_set_error(TG_ERR_IO, "--json")) == TG_OK ? 0 : 1;

done:
    if (json)
        fclose(json); /* written with write(): nothing buffered */
    free(params);
    clf_batches_free(batches);
    tg_optim_free(opt);
    clf_free(m);
    tg_dataset_free(train);
    tg_dataset_free(test);
    tg_dataset_free(gen);
    return status;
}

int main(int argc, char **argv)
{
    /* Past a shell's `ulimit -f`, SIGXFSZ would kill the program without a word and leave the
     * checkpoint's temporary file; ignored, the write fails with EFBIG and the save says "File
     * too large". */
    signal(SIGXFSZ, SIG_IGN);
    tg_dist *d;
    if (dp_start(&argc, &argv, &d) != TG_OK) {
        complain("%s", tg_last_error());
        return 1;
    }
    /* Under MPI only rank 0 prints: the others' standard output goes nowhere, so every print
     * below stays as one process makes it. */
    quiet = dp_rank(d) != 0;
    if (quiet && !freopen("/dev/null", "w", stdout))
        clearerr(stdout); /* failed: stdout is closed, which prints nothing either */
    options o;
    keeping = true;
    int status = parse_options(argc, argv, &o) ? 0 : 2;
    if (status == 0 && !o.help && tg_set_num_threads((int)o.threads) != TG_OK)
        complain("%s", tg_last_error()), status = 2; /* the user's --threads: bad input */
    keeping = false;
    if ((status = dp_agree_exit(d, status, kept)) == 0 && check_same_flags(d, argc, argv) != TG_OK)
        status = tg_last_status() == TG_ERR_NOMEM ? 1 : 2;
    if (status != 0) {
        complain("%s", tg_last_error());
    } else if (o.help) {
        fputs(usage, stdout);
        status = 0;
    } else {
        status = o.eval_only ? evaluate_checkpoint(&o) : train_and_save(&o, d);
    }
    if (dp_finish(d) != TG_OK && status == 0) {
        complain("%s", tg_last_error());
        status = 1;
    }
    return status;
}
