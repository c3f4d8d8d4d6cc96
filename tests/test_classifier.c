/* End-to-end test of examples/mnist_classifier: runs the program, then checks its model API.
 *
 *     test_classifier PROGRAM MNIST_DIR
 *
 * Trains on the first images of real MNIST when MNIST_DIR holds it (scripts/fetch-mnist.sh),
 * otherwise on a synthetic MNIST-format dataset written here (ten classes of noisy bars), so a
 * machine without the download still runs every check: accuracy well above chance, the
 * checkpoint re-evaluating to the same count with --eval-only, the feature extractor agreeing
 * with the logits, and bad input (flags, data folder, checkpoint) exiting 2 with one line.
 * Issue 16's flags run at toy size: --steps with --train-per-class, --augment classic,
 * --dropout and --json; --augment-with on an idx set written here; their refusals; and the
 * batches (batches.c) are checked image by image. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "batches.h"
#include "classifier.h"
#include "data.h"

extern char **environ;

static const char *program;   /* the mnist_classifier executable */
static const char *mnist_dir; /* where real MNIST may be */
static char data_dir[4096];   /* the test's small dataset (see group_setup) */
static bool real_mnist;
static char tmp_dir[] = "/tmp/tg_test_classifier_XXXXXX";
static char ckpt[4200]; /* written by the training test, read by the others */
static int64_t trained_correct = -1;

/* The files this test may write into tmp_dir, removed at the end. */
static const char *const tmp_files[] = {
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
    "clf.safetensors",
    "garbage.safetensors",
    "cut.safetensors",
    "stdout",
    "stderr",
    "steps.safetensors",
    "steps2.safetensors",
    "runs.jsonl",
    "gen-images-idx3-ubyte",
    "gen-labels-idx1-ubyte",
    "bad-images-idx3-ubyte",
    "bad-labels-idx1-ubyte",
    "sub/train-images-idx3-ubyte",
    "sub/train-labels-idx1-ubyte",
    "sub/t10k-images-idx3-ubyte",
    "sub/t10k-labels-idx1-ubyte",
    "sub",
};

static char *tmp_path(const char *name, char *buf, size_t n)
{
    snprintf(buf, n, "%s/%s", tmp_dir, name);
    return buf;
}

/* ---- running the program ------------------------------------------------------------------ */

static char out_text[1 << 16], err_text[1 << 14];

static void slurp(const char *path, char *buf, size_t n)
{
    buf[0] = '\0';
    FILE *f = fopen(path, "rb");
    if (!f)
        return;
    size_t got = fread(buf, 1, n - 1, f);
    buf[got] = '\0';
    fclose(f);
}

/* Shows a run's output in the test's log, whole and ending its line: cmocka's print_message
 * cuts at 1,024 bytes, and a cut line ran into the next "[       OK ]", which CI's case counter
 * then missed. */
static void show(const char *text)
{
    size_t n = strlen(text);
    fputs(text, stdout);
    if (n && text[n - 1] != '\n')
        fputc('\n', stdout);
    fflush(stdout);
}

/* Runs program with the NULL-terminated args; its stdout and stderr land in out_text and
 * err_text. fsize, if not 0, is the run's RLIMIT_FSIZE, with SIGXFSZ at its default as after a
 * shell's `ulimit -f`. Returns the exit status, or -1 when it did not exit normally. */
static int run_limited(const char *const *args, rlim_t fsize)
{
    const char *argv[32] = {program};
    int n = 1;
    for (; args[n - 1]; n++)
        argv[n] = args[n - 1];
    argv[n] = NULL;
    char out_path[4200], err_path[4200];
    tmp_path("stdout", out_path, sizeof out_path);
    tmp_path("stderr", err_path, sizeof err_path);

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t dfl;
    sigemptyset(&dfl);
    sigaddset(&dfl, SIGXFSZ);
    posix_spawnattr_setsigdefault(&attr, &dfl);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF);
    /* The child inherits the limit when it is made; this process writes nothing meanwhile. */
    struct rlimit old, lim;
    if (getrlimit(RLIMIT_FSIZE, &old) != 0)
        fail_msg("getrlimit: %s", strerror(errno));
    lim = old;
    if (fsize)
        lim.rlim_cur = fsize;
    if (fsize && setrlimit(RLIMIT_FSIZE, &lim) != 0)
        fail_msg("setrlimit: %s", strerror(errno));
    pid_t pid;
    int rc = posix_spawn(&pid, program, &fa, &attr, (char *const *)argv, environ);
    if (fsize && setrlimit(RLIMIT_FSIZE, &old) != 0)
        fail_msg("setrlimit: %s", strerror(errno));
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        fail_msg("cannot start %s: %s", program, strerror(rc));
    int status;
    if (waitpid(pid, &status, 0) != pid)
        fail_msg("waitpid failed");
    slurp(out_path, out_text, sizeof out_text);
    slurp(err_path, err_text, sizeof err_text);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int run(const char *const *args)
{
    return run_limited(args, 0);
}

/* The last "test accuracy X% (correct/total)" the program printed. */
static int64_t printed_correct(int64_t *total)
{
    const char *p = out_text, *last = NULL;
    while ((p = strstr(p, "test accuracy ")))
        last = p++;
    long long c = 0, t = 0; /* cmocka's fail_msg is not declared noreturn */
    double pct = 0.0;
    if (!last || sscanf(last, "test accuracy %lf%% (%lld/%lld)", &pct, &c, &t) != 3)
        fail_msg("no accuracy line in the output:\n%s", out_text);
    *total = t;
    return c;
}

/* Bad input: exit status 2 and exactly one line on stderr that contains fragment. */
static void expect_bad_input(const char *const *args, const char *fragment)
{
    int rc = run(args);
    if (rc != 2)
        fail_msg("%s ...: exit status %d, expected 2; stderr: %s", args[0], rc, err_text);
    char *nl = strchr(err_text, '\n');
    if (!nl || nl[1] != '\0')
        fail_msg("expected one line on stderr, got \"%s\"", err_text);
    if (!strstr(err_text, fragment))
        fail_msg("stderr \"%s\" does not contain \"%s\"", err_text, fragment);
}

/* ---- the synthetic dataset ---------------------------------------------------------------- */

/* n images of ten classes: class k is a bright horizontal bar (k < 5) or vertical bar (k >= 5)
 * at one of five places, shifted by up to 2 pixels, with noise. */
static tg_status write_synthetic(const char *images_name, const char *labels_name, int64_t n,
                                 uint64_t seed)
{
    tg_rng rng;
    tg_rng_seed(&rng, seed);
    tg_tensor *x = tg_tensor_new(TG_DIMS(n, 1, 28, 28));
    tg_tensor *y = tg_tensor_new(TG_DIMS(n));
    tg_status st = x && y ? TG_OK : tg_last_status();
    for (int64_t i = 0; i < n && st == TG_OK; i++) {
        int k = (int)(i % 10);
        int at = 4 + 5 * (k % 5) + (int)(tg_rng_u32(&rng) % 5) - 2;
        float *img = x->data + i * 784;
        for (int r = 0; r < 28; r++)
            for (int c = 0; c < 28; c++) {
                int d = (k < 5 ? r : c) - at;
                float v = (d >= 0 && d < 3) ? 0.8f : -0.8f;
                v += 0.3f * tg_rng_normal01(&rng);
                img[r * 28 + c] = v < -1.0f ? -1.0f : v > 1.0f ? 1.0f : v;
            }
        y->data[i] = (float)k;
    }
    char p[4200];
    if (st == TG_OK)
        st = tg_data_write_idx_images(tmp_path(images_name, p, sizeof p), x);
    if (st == TG_OK)
        st = tg_data_write_idx_labels(tmp_path(labels_name, p, sizeof p), y);
    tg_tensor_release(x);
    tg_tensor_release(y);
    return st;
}

/* ---- the tests ---------------------------------------------------------------------------- */

/* Trains one epoch on 1500 images (--limit: of 2000) in batches of 32; the accuracy must be far
 * above chance (10%), and the saved checkpoint must re-evaluate to exactly the same count. */
static void test_train_then_eval_only(void **state)
{
    (void)state;
    const char *train[] = {"--data",    data_dir,   "--limit", "1500",   "--batch",
                           "32",        "--epochs", "1",       "--seed", "3",
                           "--threads", "2",        "--out",   ckpt,     NULL};
    int rc = run(train);
    if (rc != 0)
        fail_msg("training: exit status %d\nstdout: %s\nstderr: %s", rc, out_text, err_text);
    show(out_text);
    int64_t total, correct = printed_correct(&total);
    double acc = (double)correct / (double)total;
    /* Measured: about 80% on real MNIST, 100% on the synthetic bars; chance is 10%. */
    if (acc < (real_mnist ? 0.6 : 0.9))
        fail_msg("test accuracy %.4f after one epoch: too low", acc);
    trained_correct = correct;

    const char *eval[] = {"--eval-only", "--checkpoint", ckpt, "--data", data_dir, NULL};
    rc = run(eval);
    if (rc != 0)
        fail_msg("--eval-only: exit status %d\nstderr: %s", rc, err_text);
    show(out_text);
    int64_t total2, correct2 = printed_correct(&total2);
    assert_int_equal(total2, total);
    assert_int_equal(correct2, correct); /* eval mode: dropout off, so nothing random */
}

/* The library side: clf_load gives eval mode, clf_eval's features feed its logits (logits =
 * features @ w^T + b of the last layer), chunking does not change results, and the accuracy
 * matches what the program printed. */
static void test_features_and_logits(void **state)
{
    (void)state;
    if (trained_correct < 0)
        skip();
    clf_info info;
    clf_model *m = clf_load(ckpt, &info);
    assert_non_null(m);
    assert_int_equal(info.epoch, 1);
    assert_false(tg_module_is_training(m->net));
    tg_dataset *test = tg_data_load_mnist(data_dir, false, -1);
    assert_non_null(test);

    /* 300 images: two chunks of clf_eval (256 + 44). */
    const int64_t n = 300;
    tg_tensor *x = tg_tensor_from_data(TG_DIMS(n, 1, 28, 28), test->images->data);
    tg_tensor *x3 = tg_tensor_from_data(TG_DIMS(3, 1, 28, 28), test->images->data + 290 * 784);
    tg_tensor *f = NULL, *l = NULL, *f3 = NULL, *l3 = NULL;
    assert_int_equal(clf_eval(m, x, &f, &l), TG_OK);
    assert_int_equal(clf_eval(m, x3, &f3, &l3), TG_OK);
    assert_int_equal(f->ndim, 2);
    assert_int_equal(f->shape[0], n);
    assert_int_equal(f->shape[1], CLF_FEATURES);
    assert_int_equal(l->shape[0], n);
    assert_int_equal(l->shape[1], CLF_CLASSES);

    const tg_module *head = tg_module_child(m->net, "classifier");
    const tg_tensor *w = tg_module_param(tg_module_child(head, "1"), "weight");
    const tg_tensor *b = tg_module_param(tg_module_child(head, "1"), "bias");
    assert_non_null(w);
    assert_non_null(b);
    int64_t positive = 0;
    for (int64_t i = 0; i < n; i++) {
        const float *fi = f->data + i * CLF_FEATURES;
        for (int k = 0; k < CLF_FEATURES; k++) {
            assert_true(fi[k] >= 0.0f); /* after a ReLU */
            positive += fi[k] > 0.0f;
        }
        for (int c = 0; c < CLF_CLASSES; c++) {
            double z = b->data[c];
            for (int k = 0; k < CLF_FEATURES; k++)
                z += (double)w->data[c * CLF_FEATURES + k] * fi[k];
            assert_close(l->data[i * CLF_CLASSES + c], z, 1e-4 + 1e-4 * fabs(z));
        }
    }
    assert_true(positive > n * CLF_FEATURES / 20); /* not a dead layer */
    /* Alone or in a chunk of 44 after 256 others: the same logits (up to GEMM blocking). */
    for (int64_t i = 0; i < 3; i++)
        for (int c = 0; c < CLF_CLASSES; c++) {
            float want = l->data[(290 + i) * CLF_CLASSES + c];
            assert_close(l3->data[i * CLF_CLASSES + c], want, 1e-4 + 1e-4 * fabsf(want));
        }

    double acc;
    int64_t correct;
    assert_int_equal(clf_accuracy(m, test->images, test->labels, &acc, &correct), TG_OK);
    assert_int_equal(correct, trained_correct);
    assert_close(info.test_accuracy, acc, 1e-6);

    /* A wrong image shape is an error naming it. */
    tg_tensor *bad = tg_tensor_zeros(TG_DIMS(2, 1, 27, 28));
    tg_tensor *fb = NULL;
    assert_int_equal(clf_eval(m, bad, &fb, NULL), TG_ERR_SHAPE);
    assert_null(fb);
    assert_error_contains("[2, 1, 27, 28]");

    tg_tensor_release(bad);
    tg_tensor_release(x), tg_tensor_release(x3);
    tg_tensor_release(f), tg_tensor_release(l), tg_tensor_release(f3), tg_tensor_release(l3);
    tg_dataset_free(test);
    clf_free(m);
}

static void test_bad_flags(void **state)
{
    (void)state;
    expect_bad_input((const char *[]){"--epochs", "abc", NULL}, "--epochs 'abc'");
    expect_bad_input((const char *[]){"--epochs", "0", NULL}, "from 1 to");
    expect_bad_input((const char *[]){"--frobnicate", NULL}, "unknown flag '--frobnicate'");
    expect_bad_input((const char *[]){"--lr", "-1", NULL}, "--lr '-1'");
    expect_bad_input((const char *[]){"--lr-decay", "1.5", NULL}, "--lr-decay '1.5'");
    expect_bad_input((const char *[]){"--batch", NULL}, "--batch needs a value");
    expect_bad_input((const char *[]){"--dataset", "cifar", NULL}, "mnist or fashion");
    expect_bad_input((const char *[]){"--data", data_dir, "--dataset", "mnist", NULL},
                     "--data and --dataset");
    expect_bad_input((const char *[]){"--eval-only", NULL}, "needs --checkpoint");
    /* issue 19: values the strict parsers refuse (strtod and strtoull took them: a blank, a
     * sign that wrapped -1 to 2^64 - 1, a '+'), a control character in a path, more threads
     * than CPUs; a folder without data after each, so that a value let through cannot train */
    static const struct {
        const char *flag, *value, *fragment;
    } strict[] = {
        {"--lr", " 1e-3", "--lr ' 1e-3': expected a positive number"},
        {"--seed", "-1", "--seed '-1': expected a whole number from 0 to 2^64 - 1"},
        {"--epochs", "+2", "--epochs '+2': expected a whole number from 1 to 1000"},
        {"--out", "a\nb.safetensors", "--out 'a\\x0ab.safetensors': holds a control character"},
        {"--threads", "256", "--threads '256': more than the"},
    };
    for (size_t k = 0; k < sizeof strict / sizeof strict[0]; k++)
        expect_bad_input(
            (const char *[]){strict[k].flag, strict[k].value, "--data", "/nonexistent/mnist", NULL},
            strict[k].fragment);
}

/* Issue 19: under a shell's `ulimit -f`, SIGXFSZ killed the program at its first save (no
 * word, a temporary file left). It ignores the signal: the write fails with EFBIG, exit 1 with
 * one line naming the checkpoint and "File too large", and no file left beside it. */
static void test_file_size_limit(void **state)
{
    (void)state;
    char out[4200];
    tmp_path("fsize.safetensors", out, sizeof out);
    const char *train[] = {"--data", data_dir, "--limit", "64",        "--batch", "32", "--epochs",
                           "1",      "--out",  out,       "--threads", "1",       NULL};
    int rc = run_limited(train, 4096); /* the checkpoint is larger */
    const char *nl = strchr(err_text, '\n');
    if (rc != 1 || !nl || nl[1] || !strstr(err_text, out) || !strstr(err_text, "File too large"))
        fail_msg("training under RLIMIT_FSIZE 4096: exit status %d, expected 1 with one line "
                 "naming %s and \"File too large\"; stderr:\n%s",
                 rc, out, err_text);
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "ls -A '%s' | grep -q '^fsize'", tmp_dir);
    if (system(cmd) == 0)
        fail_msg("a file of the failed save is left in %s", tmp_dir);
}

static void test_bad_data(void **state)
{
    (void)state;
    expect_bad_input((const char *[]){"--data", "/nonexistent/mnist", "--epochs", "1", NULL},
                     "/nonexistent/mnist/train-images-idx3-ubyte");
    expect_bad_input((const char *[]){"--data", data_dir, "--limit", "10", "--out", ckpt, NULL},
                     "--batch 64 is larger than the 10 training images");
    char out[4200];
    snprintf(out, sizeof out, "/nonexistent/dir/clf.safetensors");
    expect_bad_input((const char *[]){"--data", data_dir, "--out", out, NULL}, "--out");
}

static void test_bad_checkpoint(void **state)
{
    (void)state;
    char garbage[4200], cut[4200];
    tmp_path("garbage.safetensors", garbage, sizeof garbage);
    tmp_path("cut.safetensors", cut, sizeof cut);

    FILE *f = fopen(garbage, "wb");
    assert_non_null(f);
    fputs("this is not a safetensors file, just some words", f);
    fclose(f);
    expect_bad_input(
        (const char *[]){"--eval-only", "--checkpoint", garbage, "--data", data_dir, NULL},
        garbage);

    expect_bad_input((const char *[]){"--eval-only", "--checkpoint", "/nonexistent.safetensors",
                                      "--data", data_dir, NULL},
                     "/nonexistent.safetensors");

    /* The trained checkpoint cut in half: a valid header whose data run past the end. */
    if (trained_correct >= 0) {
        FILE *in = fopen(ckpt, "rb");
        assert_non_null(in);
        static char buf[1 << 20];
        size_t n = fread(buf, 1, sizeof buf, in);
        fclose(in);
        FILE *o = fopen(cut, "wb");
        assert_non_null(o);
        fwrite(buf, 1, n / 2, o);
        fclose(o);
        expect_bad_input(
            (const char *[]){"--eval-only", "--checkpoint", cut, "--data", data_dir, NULL}, cut);
    }

    /* A well-formed safetensors file of another model: the architecture check says so. */
    tg_state_dict *sd = tg_state_dict_new();
    tg_tensor *t = tg_tensor_zeros(TG_DIMS(3));
    assert_int_equal(tg_state_dict_put(sd, "weight", t), TG_OK);
    assert_int_equal(tg_state_dict_set_meta(sd, "architecture", "mlp"), TG_OK);
    assert_int_equal(tg_data_save_safetensors(garbage, sd), TG_OK);
    tg_state_dict_free(sd);
    tg_tensor_release(t);
    expect_bad_input(
        (const char *[]){"--eval-only", "--checkpoint", garbage, "--data", data_dir, NULL},
        "architecture \"mlp\"");
}

/* ---- issue 16: the augmentation study's flags ---------------------------------------------- */

static tg_status write_subset(const tg_dataset *ds, int64_t n, const char *images_name,
                              const char *labels_name);

/* The whole of a small file into buf (n bytes, terminated). */
static void read_text(const char *path, char *buf, size_t n)
{
    slurp(path, buf, n);
    if (!buf[0])
        fail_msg("%s is missing or empty", path);
}

/* Fails unless text contains fragment. */
static void expect_in(const char *what, const char *text, const char *fragment)
{
    if (!strstr(text, fragment))
        fail_msg("%s does not contain \"%s\":\n%s", what, fragment, text);
}

/* The folder tmp_dir/sub: the training images tg_dataset_per_class(train, n, seed) picks from
 * data_dir's, and data_dir's test images. */
static void write_per_class_folder(int64_t n, uint64_t seed)
{
    char sub[4200];
    tmp_path("sub", sub, sizeof sub);
    mkdir(sub, 0755);
    tg_dataset *train = tg_data_load_mnist(data_dir, true, -1);
    tg_dataset *test = tg_data_load_mnist(data_dir, false, -1);
    assert_true(train && test);
    tg_dataset *some = tg_dataset_per_class(train, n, seed);
    assert_non_null(some);
    assert_int_equal(write_subset(some, some->labels->numel, "sub/train-images-idx3-ubyte",
                                  "sub/train-labels-idx1-ubyte"),
                     TG_OK);
    assert_int_equal(write_subset(test, test->labels->numel, "sub/t10k-images-idx3-ubyte",
                                  "sub/t10k-labels-idx1-ubyte"),
                     TG_OK);
    tg_dataset_free(train), tg_dataset_free(test), tg_dataset_free(some);
}

/* Every parameter of the checkpoints at a and b equal, bit for bit. */
static void expect_same_weights(const char *a, const char *b)
{
    clf_model *ma = clf_load(a, NULL), *mb = clf_load(b, NULL);
    assert_true(ma && mb);
    int64_t na, nb;
    tg_tensor **pa = tg_module_parameters(ma->net, &na), **pb = tg_module_parameters(mb->net, &nb);
    assert_true(pa && pb && na == nb);
    for (int64_t i = 0; i < na; i++)
        if (pa[i]->numel != pb[i]->numel ||
            memcmp(pa[i]->data, pb[i]->data, sizeof(float) * (size_t)pa[i]->numel) != 0)
            fail_msg("parameter %lld differs between %s and %s", (long long)i, a, b);
    free(pa), free(pb);
    clf_free(ma), clf_free(mb);
}

/* --steps 7 in --epochs 3 stages (3 + 3 + 1 steps, decayed per stage) on --train-per-class 5
 * (50 images), with --augment classic and --dropout 0: the log and the --json line say so and
 * the checkpoint records 7 steps. A second run on a folder holding just the images
 * tg_dataset_per_class(train, 5, 4) picks, with the same seed and no --train-per-class, ends
 * with the same weights: the program chose exactly those images, with --seed as given (what
 * mnist_gan train --train-per-class relies on), and the augmentation's draws are seeded. */
static void test_steps_per_class_json(void **state)
{
    (void)state;
    char out1[4200], out2[4200], json[4200], line[4096], sub[4200];
    tmp_path("steps.safetensors", out1, sizeof out1);
    tmp_path("steps2.safetensors", out2, sizeof out2);
    tmp_path("runs.jsonl", json, sizeof json);
    tmp_path("sub", sub, sizeof sub);
    unlink(json);
    write_per_class_folder(5, 4);
    /* flag-value pairs, a pair or a few a line */
    /* clang-format off */
    const char *args2[] = {"--data", sub, "--steps", "7", "--epochs", "3", "--batch", "20",
                           "--seed", "4", "--augment", "classic", "--dropout", "0",
                           "--threads", "1", "--out", out2, NULL};
    /* clang-format on */
    int rc = run(args2);
    if (rc != 0)
        fail_msg("exit status %d\nstdout: %s\nstderr: %s", rc, out_text, err_text);
    expect_in("stdout", out_text, ": 50 training, 1000 test images");
    /* the same run on data_dir with --train-per-class, and --json */
    /* clang-format off */
    const char *args[] = {"--data", data_dir, "--train-per-class", "5", "--steps", "7",
                          "--epochs", "3", "--batch", "20", "--seed", "4",
                          "--augment", "classic", "--dropout", "0", "--threads", "1",
                          "--out", out1, "--json", json, NULL};
    /* clang-format on */
    rc = run(args);
    if (rc != 0)
        fail_msg("exit status %d\nstdout: %s\nstderr: %s", rc, out_text, err_text);
    show(out_text);
    expect_same_weights(out1, out2);
    expect_in("stdout", out_text, ": 50 training (5 of each digit, seed 4), 1000 test images");
    expect_in("stdout", out_text, "(x 0.7 every 3 steps), batch 20, 7 steps in 3 stages");
    expect_in("stdout", out_text, "stage 1/3  steps 1-3 of 7  lr 1.00e-03");
    expect_in("stdout", out_text, "stage 2/3  steps 4-6 of 7  lr 7.00e-04");
    expect_in("stdout", out_text, "stage 3/3  steps 7-7 of 7  lr 4.90e-04");
    expect_in("stdout", out_text,
              "batches of 20 images: 20 real, each shifted up to 2 pixels "
              "each way, turned up to 10 degrees and scaled by 0.9 to 1.1");
    expect_in("stdout", out_text, "dropout 0 instead");
    int64_t total, correct = printed_correct(&total);
    assert_int_equal(total, 1000);
    const char *first_test = strstr(out_text, "test accuracy");
    if (first_test < strstr(out_text, "stage 3/3") || strstr(first_test + 1, "test accuracy"))
        fail_msg("expected one test, in the last stage:\n%s", out_text);

    char text[8192];
    read_text(json, text, sizeof text);
    if (strchr(text, '\n') != text + strlen(text) - 1)
        fail_msg("expected one line in %s:\n%s", json, text);
    expect_in(json, text,
              "{\"train_per_class\": 5, \"train_images\": 50, \"seed\": 4, "
              "\"steps\": 7, \"schedule\": \"steps\", \"stages\": 3, \"batch\": 20");
    expect_in(json, text,
              "\"dropout\": 0, \"augment\": \"classic\", \"augment_with\": null, "
              "\"ratio\": null");
    snprintf(line, sizeof line,
             "\"test_accuracy\": %.6f, \"test_correct\": %lld, "
             "\"test_total\": 1000, \"seconds\": ",
             (double)correct / 1000.0, (long long)correct);
    expect_in(json, text, line);

    clf_info info;
    clf_model *m = clf_load(out1, &info);
    assert_non_null(m);
    assert_int_equal(info.steps, 7);
    assert_int_equal(info.epoch, 3);
    clf_free(m);
}

/* Images [n, 1, 28, 28] all of value v, labels i % 10; as new tensors in ds. */
static void constant_set(tg_dataset *ds, int64_t n, float v)
{
    ds->images = tg_tensor_full(TG_DIMS(n, 1, 28, 28), v);
    ds->labels = tg_tensor_new(TG_DIMS(n));
    assert_true(ds->images && ds->labels);
    for (int64_t i = 0; i < n; i++)
        ds->labels->data[i] = (float)(i % 10);
}

/* clf_batches: a batch is n - n_gen real images then n_gen generated ones (told apart by their
 * value), labels kept with their images; classic augmentation moves pixels, reproducibly for
 * a seed; no generated loader without generated images in a batch. */
static void test_batches(void **state)
{
    (void)state;
    tg_dataset real = {0}, gen = {0};
    constant_set(&real, 30, -0.5f);
    constant_set(&gen, 12, 0.5f);
    for (int64_t i = 0; i < 30; i++) /* pixel 0 of a real image: its label, to check pairing */
        real.images->data[i * 784] = real.labels->data[i] / 10.0f;
    clf_batches *b = clf_batches_new(&real, &gen, 16, 4, false, 7);
    assert_non_null(b);
    assert_int_equal(clf_batches_per_epoch(b), 2); /* 30 real, 12 a batch */
    for (int k = 0; k < 5; k++) {                  /* across epochs of both loaders */
        tg_tensor *x, *y;
        assert_int_equal(clf_batches_next(b, &x, &y), TG_OK);
        assert_int_equal(x->shape[0], 16);
        assert_int_equal(y->shape[0], 16);
        for (int64_t i = 0; i < 16; i++) {
            const float *img = x->data + i * 784;
            assert_true(img[1] == (i < 12 ? -0.5f : 0.5f));
            if (i < 12)
                assert_true(img[0] == y->data[i] / 10.0f);
        }
        tg_tensor_release(x), tg_tensor_release(y);
    }
    clf_batches_free(b);

    /* Augmented: the same seed gives the same batch, the images moved (the border of a
     * constant image turns towards the black fill). */
    tg_tensor *xs[2], *ys[2];
    for (int k = 0; k < 2; k++) {
        b = clf_batches_new(&real, NULL, 10, 0, true, 3);
        assert_non_null(b);
        assert_int_equal(clf_batches_next(b, &xs[k], &ys[k]), TG_OK);
        clf_batches_free(b);
    }
    assert_memory_equal(xs[0]->data, xs[1]->data, sizeof(float) * (size_t)xs[0]->numel);
    int64_t moved = 0;
    for (int64_t i = 0; i < xs[0]->numel; i++)
        moved += xs[0]->data[i] < -0.5f - 1e-4f;
    assert_true(moved > 10 * 28);
    for (int k = 0; k < 2; k++)
        tg_tensor_release(xs[k]), tg_tensor_release(ys[k]);

    assert_null(clf_batches_new(&real, NULL, 16, 4, false, 7));
    assert_error_contains("4 generated images in a batch of 16 without a generated set");
    assert_null(clf_batches_new(&real, &gen, 16, 13, false, 7)); /* more than gen holds */
    assert_error_contains("tg_loader_new: batch 13 for a dataset of 12 images");
    tg_tensor_release(real.images), tg_tensor_release(real.labels);
    tg_tensor_release(gen.images), tg_tensor_release(gen.labels);
}

/* Writes n images of value v as PREFIX-images-idx3-ubyte (shape [n, h, 28]) and labels i % 10
 * (or `label` when >= 0) as PREFIX-labels-idx1-ubyte with n_labels of them. */
static void write_set(const char *prefix, int64_t n, int64_t h, int64_t n_labels, int label)
{
    char p[4200];
    tg_tensor *x = tg_tensor_full(TG_DIMS(n, h, 28), 0.0f);
    tg_tensor *y = tg_tensor_new(TG_DIMS(n_labels));
    assert_true(x && y);
    for (int64_t i = 0; i < n_labels; i++)
        y->data[i] = (float)(label >= 0 ? label : (int)(i % 10));
    snprintf(p, sizeof p, "%s/%s-images-idx3-ubyte", tmp_dir, prefix);
    assert_int_equal(tg_data_write_idx_images(p, x), TG_OK);
    snprintf(p, sizeof p, "%s/%s-labels-idx1-ubyte", tmp_dir, prefix);
    assert_int_equal(tg_data_write_idx_labels(p, y), TG_OK);
    tg_tensor_release(x), tg_tensor_release(y);
}

/* --augment-with PREFIX --ratio 0.25: 4 generated images in every batch of 16, on top of 12
 * real ones; the log and the --json line say so. */
static void test_augment_with(void **state)
{
    (void)state;
    char prefix[4200], out[4200], json[4200];
    write_set("gen", 40, 28, 40, -1);
    snprintf(prefix, sizeof prefix, "%s/gen", tmp_dir);
    tmp_path("steps.safetensors", out, sizeof out);
    tmp_path("runs.jsonl", json, sizeof json);
    unlink(json);
    /* flag-value pairs, a pair or a few a line */
    /* clang-format off */
    const char *args[] = {"--data", data_dir, "--train-per-class", "2", "--steps", "4",
                          "--batch", "16", "--ratio", "0.25", "--augment-with", prefix,
                          "--augment", "classic", "--threads", "1", "--out", out,
                          "--json", json, NULL};
    /* clang-format on */
    int rc = run(args);
    if (rc != 0)
        fail_msg("exit status %d\nstdout: %s\nstderr: %s", rc, out_text, err_text);
    show(out_text);
    char want[8600], text[8192];
    snprintf(want, sizeof want,
             "generated: 40 images from %s\nbatches of 16 images: 12 real "
             "and 4 generated, each shifted",
             prefix);
    expect_in("stdout", out_text, want);
    expect_in("stdout", out_text, ": 20 training (2 of each digit, seed 1)");
    read_text(json, text, sizeof text);
    snprintf(want, sizeof want,
             "\"augment\": \"classic\", \"augment_with\": \"%s\", \"ratio\": 0.25, "
             "\"generated_images\": 40, \"generated_per_batch\": 4",
             prefix);
    expect_in(json, text, want);
}

/* The new flags' refusals: one line, exit 2, before any training. */
static void test_bad_study_flags(void **state)
{
    (void)state;
    char prefix[4200], bad[4200], json[4200];
    snprintf(prefix, sizeof prefix, "%s/gen", tmp_dir);
    snprintf(bad, sizeof bad, "%s/bad", tmp_dir);
    snprintf(json, sizeof json, "%s/no/such/dir/runs.jsonl", tmp_dir);
    write_set("gen", 40, 28, 40, -1);
    const char *d = data_dir;
    expect_bad_input(
        (const char *[]){"--data", d, "--train-per-class", "5", "--limit", "100", NULL},
        "--train-per-class and --limit both choose the training images");
    expect_bad_input((const char *[]){"--data", d, "--ratio", "0.5", NULL},
                     "--ratio sets the share of --augment-with's images");
    expect_bad_input((const char *[]){"--ratio", "1", NULL}, "--ratio '1': expected a number in "
                                                             "[0, 1)");
    expect_bad_input((const char *[]){"--augment", "elastic", NULL},
                     "--augment 'elastic': expected none or classic");
    expect_bad_input((const char *[]){"--dropout", "1", NULL}, "--dropout '1'");
    expect_bad_input((const char *[]){"--steps", "0", NULL}, "--steps '0': expected a whole");
    expect_bad_input((const char *[]){"--eval-only", "--checkpoint", ckpt, "--json", "x", NULL},
                     "--json is a training flag: not with --eval-only");
    expect_bad_input((const char *[]){"--data", d, "--train-per-class", "300", NULL},
                     "--train-per-class 300: tg_dataset_per_class: class ");
    expect_bad_input((const char *[]){"--data", d, "--train-per-class", "5", NULL},
                     "--batch 64 is larger than the 50 training images");
    expect_bad_input((const char *[]){"--data", d, "--json", json, NULL}, "--json: ");
    expect_bad_input((const char *[]){"--data", d, "--augment-with", "/nonexistent/gen", NULL},
                     "--augment-with: tg_data_read_idx: /nonexistent/gen-images-idx3-ubyte");
    expect_bad_input((const char *[]){"--data", d, "--augment-with", prefix, "--batch", "16",
                                      "--ratio", "0.99", NULL},
                     "--batch 16 with --ratio 0.99 takes 0 real and 16 generated images a batch");
    expect_bad_input(
        (const char *[]){"--data", d, "--augment-with", prefix, "--batch", "100", NULL},
        "takes 50 real and 50 generated images a batch: need at least one real, "
        "and there are 2000 real and 40 generated");
    write_set("bad", 10, 28, 9, -1);
    expect_bad_input((const char *[]){"--data", d, "--augment-with", bad, NULL},
                     "labels [9] do not match the 10 images of");
    write_set("bad", 10, 27, 10, -1);
    expect_bad_input((const char *[]){"--data", d, "--augment-with", bad, NULL},
                     "images [10, 27, 28]: expected [N, 28, 28]");
    write_set("bad", 10, 28, 10, 10);
    expect_bad_input((const char *[]){"--data", d, "--augment-with", bad, NULL},
                     "bad-labels-idx1-ubyte: value 10 at index [0] is outside [0, 9]");
}

/* ---- set-up ---------------------------------------------------------------------------------- */

static bool file_exists(const char *dir, const char *name)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    if (access(p, R_OK) == 0)
        return true;
    snprintf(p, sizeof p, "%s/%s.gz", dir, name);
    return access(p, R_OK) == 0;
}

/* Writes the first n images and labels of ds as MNIST-format files into tmp_dir. */
static tg_status write_subset(const tg_dataset *ds, int64_t n, const char *images_name,
                              const char *labels_name)
{
    char p[4200];
    tg_tensor *x = tg_tensor_from_data(TG_DIMS(n, 1, 28, 28), ds->images->data);
    tg_tensor *y = tg_tensor_from_data(TG_DIMS(n), ds->labels->data);
    tg_status st = x && y ? TG_OK : tg_last_status();
    if (st == TG_OK)
        st = tg_data_write_idx_images(tmp_path(images_name, p, sizeof p), x);
    if (st == TG_OK)
        st = tg_data_write_idx_labels(tmp_path(labels_name, p, sizeof p), y);
    tg_tensor_release(x);
    tg_tensor_release(y);
    return st;
}

/* The data of every test is a small MNIST-format folder in tmp_dir, 2000 training and 1000
 * test images: the first ones of real MNIST when mnist_dir has it, else synthetic. Small,
 * because the whole test must stay well under a minute on a busy two-core machine. */
static int group_setup(void **state)
{
    (void)state;
    if (!mkdtemp(tmp_dir)) {
        print_error("mkdtemp %s failed\n", tmp_dir);
        return -1;
    }
    tmp_path("clf.safetensors", ckpt, sizeof ckpt);
    real_mnist = true;
    for (size_t i = 0; i < 4; i++)
        real_mnist = real_mnist && file_exists(mnist_dir, tmp_files[i]);
    tg_status st;
    if (real_mnist) {
        print_message("training on the first images of real MNIST in %s\n", mnist_dir);
        tg_dataset *train = tg_data_load_mnist(mnist_dir, true, -1);
        tg_dataset *test = train ? tg_data_load_mnist(mnist_dir, false, -1) : NULL;
        st = test ? write_subset(train, 2000, tmp_files[0], tmp_files[1]) : tg_last_status();
        if (st == TG_OK)
            st = write_subset(test, 1000, tmp_files[2], tmp_files[3]);
        tg_dataset_free(train);
        tg_dataset_free(test);
    } else {
        print_message("no MNIST in %s: training on a synthetic dataset\n", mnist_dir);
        st = write_synthetic(tmp_files[0], tmp_files[1], 2000, 1);
        if (st == TG_OK)
            st = write_synthetic(tmp_files[2], tmp_files[3], 1000, 2);
    }
    if (st != TG_OK) {
        print_error("writing the test's dataset: %s\n", tg_last_error());
        return -1;
    }
    snprintf(data_dir, sizeof data_dir, "%s", tmp_dir);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    char p[4200];
    for (size_t i = 0; i < sizeof tmp_files / sizeof tmp_files[0]; i++)
        if (unlink(tmp_path(tmp_files[i], p, sizeof p)) != 0)
            rmdir(p); /* "sub", after its files */
    rmdir(tmp_dir);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s MNIST_CLASSIFIER_PROGRAM MNIST_DIR\n", argv[0]);
        return 2;
    }
    program = argv[1];
    mnist_dir = argv[2];
    const struct CMUnitTest tests[] = {
        TG_TEST(test_train_then_eval_only),
        TG_TEST(test_features_and_logits),
        TG_TEST(test_bad_flags),
        TG_TEST(test_bad_data),
        TG_TEST(test_bad_checkpoint),
        TG_TEST(test_file_size_limit),
        TG_TEST(test_steps_per_class_json),
        TG_TEST(test_batches),
        TG_TEST(test_augment_with),
        TG_TEST(test_bad_study_flags),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
