/* mnist_classifier — train a LeNet-style CNN on MNIST or Fashion-MNIST, or evaluate a checkpoint.
 *
 *     mnist_classifier [--dataset mnist|fashion | --data DIR] [--epochs N] [--batch N] [--lr X]
 *                      [--lr-decay G] [--seed S] [--threads T] [--limit N] [--out FILE]
 *     mnist_classifier --eval-only --checkpoint FILE [--dataset ... | --data DIR] [--threads T]
 *
 * Training prints, per epoch, the mean training loss, the test accuracy and the seconds taken,
 * and saves a checkpoint after every epoch (atomically: an interrupted run leaves the previous
 * one). The model lives in classifier.c; this file is the program around it. Only the public
 * API is used (tapegrad.h): this is what a program of yours looks like.
 *
 * Exit status: 0 done, 2 bad input (flags, data files, checkpoint), 1 any other failure. */
#include <float.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "classifier.h"

static const char usage[] =
    "usage: mnist_classifier [options]                 train, test after every epoch, save\n"
    "       mnist_classifier --eval-only --checkpoint FILE [options]   test a saved model\n"
    "\n"
    "  --dataset NAME   mnist (default: data-cache/mnist, made by scripts/fetch-mnist.sh) or\n"
    "                   fashion (/usr/share/datasets/fashion-mnist, Debian's\n"
    "                   dataset-fashion-mnist package)\n"
    "  --data DIR       a folder with the four MNIST-format files instead (raw or .gz)\n"
    "  --epochs N       epochs to train (default 5)\n"
    "  --batch N        batch size (default 64)\n"
    "  --lr X           Adam learning rate of the first epoch (default 1e-3)\n"
    "  --lr-decay G     the rate is multiplied by G after every epoch (default 0.7)\n"
    "  --seed S         seed of the weights, dropout and shuffling (default 1)\n"
    "  --threads T      threads for kernels and BLAS (default 2)\n"
    "  --limit N        train on the first N training images only (quick runs)\n"
    "  --out FILE       checkpoint to write (default mnist_classifier.safetensors,\n"
    "                   fashion_classifier.safetensors, or classifier.safetensors with --data)\n"
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
    float lr, lr_decay;
    unsigned long long seed;
    const char *out;
    bool eval_only;
    const char *checkpoint;
} options;

/* Prints "mnist_classifier: <message>" as one line on stderr. */
static void complain(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void complain(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("mnist_classifier: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
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
                   .seed = 1,
                   .threads = tg_get_num_cpus() >= 2 ? 2 : 1}; /* default 2, at most the CPUs */
    bool have_data = false, have_dataset = false;
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i];
        if (!strcmp(flag, "--help") || !strcmp(flag, "-h")) {
            fputs(usage, stdout);
            exit(0);
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
            !strcmp(flag, "--out") || !strcmp(flag, "--checkpoint");
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
        } else {
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

/* One pass over the loader's epoch: forward, cross-entropy, backward, Adam step per batch.
 * *mean_loss gets the mean of the batch losses. */
static tg_status train_epoch(clf_model *m, tg_optim *opt, tg_loader *loader, double *mean_loss)
{
    tg_module_train(m->net, true); /* dropout on */
    const int64_t batches = tg_loader_batches_per_epoch(loader);
    double sum = 0.0;
    for (int64_t b = 0; b < batches; b++) {
        tg_tensor *x, *y;
        tg_status st = tg_loader_next(loader, &x, &y);
        if (st != TG_OK)
            return st;
        tg_tape *tape = tg_tape_begin(TG_GRAD);
        if (tape) {
            /* The loader gives labels as floats; tg_labels makes them the index it takes. */
            tg_tensor *loss = tg_cross_entropy(clf_forward(m, x), tg_labels(y), TG_REDUCE_MEAN);
            st = tg_backward(loss); /* one check covers the whole chain */
            if (st == TG_OK) {
                sum += tg_tensor_item(loss);
                st = tg_optim_step(opt);
            }
            tg_optim_zero_grad(opt);
            tg_tape_end(tape); /* frees every activation of the step */
        } else {
            st = tg_last_status();
        }
        tg_tensor_release(x);
        tg_tensor_release(y);
        if (st != TG_OK)
            return st;
    }
    *mean_loss = sum / (double)batches;
    return TG_OK;
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

/* Training: the model, Adam and the loader; a test and a checkpoint after every epoch. */
static int train_and_save(options *o)
{
    char default_out[96];
    if (!o->out) {
        snprintf(default_out, sizeof default_out, "%s%sclassifier.safetensors",
                 o->dataset ? o->dataset : "", o->dataset ? "_" : "");
        o->out = default_out;
    }
    /* Fail now, not after the first epoch, when the checkpoint cannot be written there. */
    tg_atomic_file *probe = tg_atomic_open(o->out);
    if (!probe) {
        complain("--out: %s", tg_last_error());
        return 2;
    }
    tg_atomic_abort(probe);

    int status = 2; /* until the data is loaded and checked, failures are bad input */
    tg_dataset *train = NULL, *test = NULL;
    tg_loader *loader = NULL;
    clf_model *m = NULL;
    tg_optim *opt = NULL;

    train = load_split(o, true);
    test = train ? load_split(o, false) : NULL;
    if (!test)
        goto done;
    int64_t n_train = train->images->shape[0];
    if (o->limit > 0 && o->limit < n_train) {
        n_train = o->limit;
        if (keep_first(train, n_train) != TG_OK) {
            status = 1;
            complain("%s", tg_last_error());
            goto done;
        }
    }
    if (o->batch > n_train) {
        complain("--batch %ld is larger than the %lld training images", o->batch,
                 (long long)n_train);
        goto done;
    }

    status = 1; /* from here on, a failure is the program's or the machine's */
    m = clf_new(o->seed);
    opt = m ? adam_for(m, o->lr) : NULL;
    loader = opt ? tg_loader_new(train, o->batch, o->seed + 1) : NULL;
    if (!loader) {
        complain("%s", tg_last_error());
        goto done;
    }

    printf("mnist_classifier: %s (%s): %lld training, %lld test images\n",
           o->dataset ? o->dataset : "data", o->data_dir, (long long)n_train,
           (long long)test->images->shape[0]);
    printf("model: %s; %lld parameters\n", CLF_ARCH, (long long)tg_module_num_parameters(m->net));
    printf("Adam lr %g (x %g per epoch), batch %ld, %ld epochs, seed %llu, %d thread%s, %s\n",
           (double)o->lr, (double)o->lr_decay, o->batch, o->epochs, o->seed, tg_get_num_threads(),
           tg_get_num_threads() == 1 ? "" : "s", tg_blas_info());
    fflush(stdout);

    for (long epoch = 1; epoch <= o->epochs; epoch++) {
        double loss, acc, t0 = now_seconds();
        int64_t correct;
        /* A step decay every epoch (PyTorch's StepLR with step_size 1): large steps while far
         * from a minimum, small ones to settle into it. */
        float lr = o->lr * powf(o->lr_decay, (float)(epoch - 1));
        if (tg_optim_set_lr(opt, lr) != TG_OK || train_epoch(m, opt, loader, &loss) != TG_OK)
            break;
        double t1 = now_seconds();
        if (clf_accuracy(m, test->images, test->labels, &acc, &correct) != TG_OK)
            break;
        double t2 = now_seconds();
        printf("epoch %ld/%ld  lr %.2e  train loss %.4f  test accuracy %.2f%% (%lld/%lld)  "
               "%.1f s (train %.1f s, test %.1f s)\n",
               epoch, o->epochs, (double)lr, loss, 100.0 * acc, (long long)correct,
               (long long)test->images->shape[0], t2 - t0, t1 - t0, t2 - t1);
        fflush(stdout);

        clf_info info = {.epoch = epoch, .test_accuracy = acc};
        snprintf(info.dataset, sizeof info.dataset, "%s", o->dataset ? o->dataset : o->data_dir);
        if (clf_save(m, &info, o->out) != TG_OK)
            break;
        if (epoch == o->epochs) {
            printf("saved %s\n", o->out);
            status = 0;
        }
    }
    if (status != 0)
        complain("%s", tg_last_error());

done:
    tg_loader_free(loader);
    tg_optim_free(opt);
    clf_free(m);
    tg_dataset_free(train);
    tg_dataset_free(test);
    return status;
}

int main(int argc, char **argv)
{
    /* Past a shell's `ulimit -f`, SIGXFSZ would kill the program without a word and leave the
     * checkpoint's temporary file; ignored, the write fails with EFBIG and the save says "File
     * too large". */
    signal(SIGXFSZ, SIG_IGN);
    options o;
    if (!parse_options(argc, argv, &o))
        return 2;
    if (tg_set_num_threads((int)o.threads) != TG_OK) { /* the user's --threads: bad input */
        complain("%s", tg_last_error());
        return 2;
    }
    return o.eval_only ? evaluate_checkpoint(&o) : train_and_save(&o);
}
