/* End-to-end test of examples/mnist_classifier: runs the program, then checks its model API.
 *
 *     test_classifier PROGRAM MNIST_DIR
 *
 * Trains on the first images of real MNIST when MNIST_DIR holds it (scripts/fetch-mnist.sh),
 * otherwise on a synthetic MNIST-format dataset written here (ten classes of noisy bars), so a
 * machine without the download still runs every check: accuracy well above chance, the
 * checkpoint re-evaluating to the same count with --eval-only, the feature extractor agreeing
 * with the logits, and bad input (flags, data folder, checkpoint) exiting 2 with one line. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

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
    long long c, t;
    double pct;
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
    print_message("%s", out_text);
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
    print_message("%s", out_text);
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
        unlink(tmp_path(tmp_files[i], p, sizeof p));
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
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
