/* End-to-end test of examples/transformer_mnist: the built program trains on the first images
 * of real MNIST and must bring its training loss and test error down to thresholds measured on
 * this machine; bad flags exit 2 with one line before any work. Without MNIST in TG_MNIST_DIR
 * (data-cache/mnist: scripts/fetch-mnist.sh) the test SKIPs (exit 77).
 *
 *     test_transformer_mnist PATH/TO/transformer_mnist */
#include "gan_run.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

/* 4 epochs on the first 4000 training images (batch 64, the program's defaults otherwise), test
 * accuracy on the first 1000 test images. Measured with seeds 1, 2, 3 (2 threads): last-epoch
 * training loss 0.353, 0.436, 0.496 (from 2.30 = ln 10 at chance), test accuracy 86.5%, 82.9%,
 * 85.2%; the PyTorch twin gets 0.514 and 0.394 (82.2%, 86.5%) with seeds 1 and 3. 24 to 31 s on
 * this machine at a load of 15. The thresholds leave a 50% margin on the loss and 10 points on
 * the accuracy. */
#define TRAIN_LOSS_MAX 0.75
#define TEST_ACC_MIN 0.72

static const char *mnist_dir;

static bool have_mnist(void)
{
    mnist_dir = getenv("TG_MNIST_DIR");
    if (!mnist_dir || !mnist_dir[0])
        mnist_dir = "data-cache/mnist";
    const char *files[] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                           "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        if (!exists(fmt("%s/%s", mnist_dir, files[i])) &&
            !exists(fmt("%s/%s.gz", mnist_dir, files[i])))
            return false;
    return true;
}

/* The last "epoch ..." line's training loss and test accuracy (a fraction). */
static void last_epoch(const char *out, double *loss, double *acc)
{
    const char *line = NULL;
    for (const char *p = out; (p = strstr(p, "epoch ")); p++)
        if (p == out || p[-1] == '\n')
            line = p;
    double pct = 0.0; /* cmocka's fail_msg is not declared noreturn */
    if (!line || sscanf(line, "epoch %*d/%*d train loss %lf test accuracy %lf%%", loss, &pct) != 2)
        fail_msg("no epoch line in the output:\n%s", out);
    *acc = pct / 100.0;
}

static void test_trains(void **state)
{
    (void)state;
    const char *out = fmt("%s/out", root);
    run_result r = gan((const char *const[]){"--data", mnist_dir, "--out", out, "--limit", "4000",
                                             "--test-limit", "1000", "--epochs", "4", "--threads",
                                             "2", "--seed", "1", NULL});
    assert_ran(&r, "training");
    double loss, acc;
    last_epoch(r.out, &loss, &acc);
    print_message("train loss %.4f (at most %.2f), test accuracy %.2f%% (at least %.0f%%), "
                  "%.1f s\n",
                  loss, TRAIN_LOSS_MAX, 100.0 * acc, 100.0 * TEST_ACC_MIN, r.seconds);
    assert_true(loss <= TRAIN_LOSS_MAX);
    assert_true(acc >= TEST_ACC_MIN);

    /* attention.png: 8 rows of the digit and its 4 heads' maps, 56 pixels each (2x) with
     * one-pixel gaps; the PNG header gives the size. */
    size_t n;
    unsigned char *png = (unsigned char *)must_read(fmt("%s/attention.png", out), &n);
    assert_true(n > 24 && !memcmp(png + 1, "PNG", 3) && !memcmp(png + 12, "IHDR", 4));
    const uint32_t w = (uint32_t)png[16] << 24 | png[17] << 16 | png[18] << 8 | png[19];
    const uint32_t h = (uint32_t)png[20] << 24 | png[21] << 16 | png[22] << 8 | png[23];
    assert_int_equal(w, 5 * 57 - 1);
    assert_int_equal(h, 8 * 57 - 1);
    free(png);
    run_free(&r);
}

/* Bad flags and values: exit 2, one line on stderr naming the flag, nothing written. */
static void test_bad_input(void **state)
{
    (void)state;
    const char *out = fmt("%s/bad", root);
    const char *const cases[][5] = {
        {"--epochs", "0", NULL},
        {"--lr", "fast", NULL},
        {"--batch", "-3", NULL},
        {"--bogus", "1", NULL},
        {"--seed", "-1", NULL},
        {"--threads", "100000", NULL},
        {"--epochs", NULL},
        {"--limit", "1e3", NULL},
        {"--data", fmt("%s/none", root)},
        {"--limit", "10", "--batch", "64", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *args[2 + 5 + 2 + 1] = {"--out", out}; /* out, a case, data, NULL */
        int k = 2;
        for (int j = 0; j < 5 && cases[i][j]; j++)
            args[k++] = cases[i][j];
        if (strcmp(cases[i][0], "--data"))
            args[k++] = "--data", args[k++] = mnist_dir;
        args[k] = NULL;
        run_result r = gan(args);
        const char *nl = strchr(r.err, '\n');
        if (r.status != 2 || !nl || nl[1] || strncmp(r.err, "transformer_mnist: ", 19))
            fail_msg("%s: exit %d, stderr \"%s\"", cmdline(args), r.status, r.err);
        print_message("%s", r.err);
        assert_false(exists(fmt("%s/attention.png", out)));
        run_free(&r);
    }
}

static int group_setup(void **state)
{
    (void)state;
    return run_make_root("tg_test_transformer_mnist") ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (!run_set_program(argc, argv, ""))
        return 2;
    if (!have_mnist()) {
        printf("SKIP: no MNIST in %s (scripts/fetch-mnist.sh)\n", mnist_dir);
        return 77;
    }
    const struct CMUnitTest tests[] = {TG_TEST(test_bad_input), TG_TEST(test_trains)};
    return cmocka_run_group_tests_name("transformer_mnist", tests, group_setup, run_teardown);
}
