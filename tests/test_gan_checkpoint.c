/* mnist_gan's checkpoint reading (examples/mnist_gan/checkpoint.c, built into this test): every
 * metadata value read strictly and in the command line's range, RNG states that cannot spin,
 * the optimizers' lr and beta1 agreeing with the settings, tensor values that can be used, and
 * one escaped line naming the file for each refusal (issue 19, items 3, 12, 14, 15, 18). */
/* checkpoint.h and main.c's fail() before cmocka, whose fail() is a macro. */
#include "checkpoint.h"
#include "classifier.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

/* main.c's fail(), which load_trained calls: remember the status and the line. */
static int fail_code;
static char fail_line[2048];

int fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fail_line, sizeof fail_line, fmt, ap);
    va_end(ap);
    fail_code = code;
    return code;
}

/* main.c's, as it is: the machine's lack of memory is 1, the rest the input's. */
int input_failure(void)
{
    return tg_last_status() == TG_ERR_NOMEM ? 1 : EXIT_BAD_INPUT;
}

#include "common.h"

static char path[64];

/* A real checkpoint of a small model (width / 64) at iteration 5 of epoch 0 trained with
 * GEMM inputs in matmul's precision, loaded back. */
static tg_state_dict *checkpoint_of(tg_matmul_precision matmul)
{
    gan_config cfg = gan_config_default(GAN_RECIPE_TUTORIAL);
    gan_widths w = gan_widths_default(64);
    gan_state s = {0};
    assert_int_equal(gan_state_init(&s, &cfg, &w), TG_OK);
    run_settings rs = {cfg, -1, 64, 16, 0, 1, matmul}; /* 1 rank: one process */
    run_position pos = {.iteration = 5, .seconds = 1.5, .loader = {.epoch = 0, .batch = 5}};
    tg_rng_seed(&pos.loader.epoch_rng, 7);
    snprintf(path, sizeof path, "/tmp/tg_gan_ckpt_%d.safetensors", (int)getpid());
    assert_int_equal(save_checkpoint(path, &s, &rs, &pos), TG_OK);
    gan_state_free(&s);
    tg_state_dict *sd = tg_data_load_safetensors(path);
    assert_non_null(sd);
    return sd;
}

static tg_state_dict *good_checkpoint(void)
{
    return checkpoint_of(TG_MATMUL_FP32);
}

/* Asserts err is one line holding fragment. */
#define assert_line(err, fragment)                                                                 \
    do {                                                                                           \
        if (!strstr((err), (fragment)) || strchr((err), '\n') || strchr((err), '\x1b'))            \
            fail_msg("message \"%s\" is not one line with \"%s\"", (err), (fragment));             \
    } while (0)

static void test_good_checkpoint_reads(void **state)
{
    (void)state;
    tg_state_dict *sd = good_checkpoint();
    char err[1024] = "";
    run_settings rs;
    tg_rng r, seeded;
    assert_true(settings_get(sd, path, &rs, err, sizeof err));
    assert_int_equal(rs.batch, 16);
    assert_int_equal(rs.width_div, 64);
    assert_true(rs.cfg.lr == 2e-4f);
    assert_int_equal(rs.matmul, TG_MATMUL_FP32);
    assert_null(tg_state_dict_meta(sd, "matmul")); /* an FP32 run's checkpoint as before */
    assert_true(checkpoint_check_values(sd, path, err, sizeof err));
    run_position pos;
    assert_true(position_get(sd, path, &pos, &r, err, sizeof err));
    assert_int_equal(pos.iteration, 5);
    assert_true(pos.seconds == 1.5);
    tg_rng_seed(&seeded, 7);
    assert_memory_equal(&pos.loader.epoch_rng, &seeded, sizeof seeded); /* bit for bit */
    assert_true(position_check(&pos, 10, 100, path, err, sizeof err));
    tg_state_dict_free(sd);
    unlink(path);
}

/* train --matmul bf16 is recorded, and read back; --resume takes it from there. */
static void test_matmul_recorded(void **state)
{
    (void)state;
    tg_state_dict *sd = checkpoint_of(TG_MATMUL_BF16);
    char err[1024] = "";
    run_settings rs;
    assert_string_equal(tg_state_dict_meta(sd, "matmul"), "bf16");
    assert_true(settings_get(sd, path, &rs, err, sizeof err));
    assert_int_equal(rs.matmul, TG_MATMUL_BF16);
    tg_state_dict_free(sd);
    unlink(path);
}

/* Item 3 and 18: negative positions, trailing garbage, overflow, a negative seed. */
static void test_bad_scalars(void **state)
{
    (void)state;
    static const struct {
        const char *key, *value, *fragment;
    } cases[] = {
        {"iteration", "-1", "metadata \"iteration\" is \"-1\", expected a whole number from 0"},
        {"iteration", "0garbage", "metadata \"iteration\" is \"0garbage\""},
        {"epoch", "-3", "metadata \"epoch\" is \"-3\""},
        {"batch_in_epoch", "9223372036854775807", "metadata \"batch_in_epoch\""},
        {"seconds", "nan", "metadata \"seconds\" is \"nan\", expected a hex float"},
        {"seconds", "-0x1p+0", "metadata \"seconds\" is \"-0x1p+0\""},
        {"seed", "-1", "metadata \"seed\" is \"-1\", expected a whole number from 0"},
        {"width_div", "4294967304", "metadata \"width_div\" is \"4294967304\""},
        {"batch", "1", "metadata \"batch\" is \"1\", expected a whole number from 2 to 65536"},
        {"digit", "10", "metadata \"digit\" is \"10\""},
        {"recipe", "4", "metadata \"recipe\" is \"4\", expected a whole number from 0 to 3"},
        {"train_per_class", "-1", "metadata \"train_per_class\" is \"-1\""},
        {"matmul", "fp16", "metadata \"matmul\" is \"fp16\", expected one of fp32, bf16"},
        {"lr", "nan", "metadata \"lr\" is \"nan\""},
        {"lr", "0x0p+0", "metadata \"lr\" is \"0x0p+0\", expected a hex float (%a) in (0, 10]"},
        {"lr", "0x1p-200", "metadata \"lr\" is \"0x1p-200\""}, /* 0 as a float32 */
        {"beta1", "0x1p+0", "metadata \"beta1\" is \"0x1p+0\""},
        {"beta1", " 0x1p-1", "metadata \"beta1\" is \" 0x1p-1\""},
        {"shuffle_block", "7", "metadata \"shuffle_block\" is \"7\", expected 0 (full) or 30000"},
        {"loader_rng", "0 0 0 0 0 00000000", "expected a state that is not all zero"},
        {"z_rng", "1 2 3 4 2 0", "metadata \"z_rng\""},
        {"z_rng", "1 2 3 123456789 0 0", "six hex words"},
        {"z_rng", "1 2 3 4 0 0 ", "six hex words"},
        {"z_rng", "1 2 3 4 1 7fc00000", "finite spare"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tg_state_dict *sd = good_checkpoint();
        assert_int_equal(tg_state_dict_set_meta(sd, cases[i].key, cases[i].value), TG_OK);
        char err[1024] = "";
        run_settings rs;
        run_position pos;
        tg_rng r;
        bool ok = settings_get(sd, path, &rs, err, sizeof err) &&
                  position_get(sd, path, &pos, &r, err, sizeof err);
        if (ok)
            fail_msg("%s = \"%s\" was accepted", cases[i].key, cases[i].value);
        assert_line(err, cases[i].fragment);
        assert_line(err, path);
        tg_state_dict_free(sd);
    }
    unlink(path);
}

/* Item 3 and 18 through the readers train.c and eval.c call (meta_get_int, meta_get_rng). */
static void test_readers_are_strict(void **state)
{
    (void)state;
    tg_state_dict *sd = good_checkpoint();
    char err[1024] = "";
    int64_t it;
    tg_rng r;
    tg_state_dict_set_meta(sd, "iteration", "-1");
    assert_false(meta_get_int(sd, path, "iteration", 0, GAN_ITERS_MAX, &it, err, sizeof err));
    assert_line(err, "\"iteration\" is \"-1\"");
    tg_state_dict_set_meta(sd, "iteration", "4294967304x");
    assert_false(meta_get_int(sd, path, "iteration", 0, GAN_ITERS_MAX, &it, err, sizeof err));
    tg_state_dict_set_meta(sd, "z_rng", "00000000 00000000 00000000 00000000 0 00000000");
    assert_false(meta_get_rng(sd, path, "z_rng", &r, err, sizeof err));
    assert_line(err, "not all zero");
    tg_state_dict_free(sd);
    unlink(path);
}

/* Item 3: the optimizers' own lr and beta1 are what the run uses: they must agree. */
static void test_optimizer_settings_agree(void **state)
{
    (void)state;
    static const char *const keys[] = {"opt_g.lr", "opt_d_real.betas", "opt_d_fake.lr"};
    static const char *const values[] = {"5", "0.5,0.999000013", "0.0003x"};
    for (int i = 0; i < 3; i++) {
        tg_state_dict *sd = good_checkpoint();
        char err[1024] = "";
        run_settings rs;
        tg_state_dict_set_meta(sd, keys[i], values[i]);
        assert_false(settings_get(sd, path, &rs, err, sizeof err));
        assert_line(err, keys[i]);
        assert_line(err, "the value of");
        tg_state_dict_free(sd);
    }
    /* Another spelling of the same float32 agrees. */
    tg_state_dict *sd = good_checkpoint();
    char err[1024] = "";
    run_settings rs;
    tg_state_dict_set_meta(sd, "opt_g.lr", "0.0002");
    assert_true(settings_get(sd, path, &rs, err, sizeof err));
    tg_state_dict_free(sd);
    unlink(path);
}

/* Item 14: a value quoted from the file is escaped. */
static void test_quoted_values_escaped(void **state)
{
    (void)state;
    tg_state_dict *sd = good_checkpoint();
    char err[1024] = "";
    run_settings rs;
    tg_state_dict_set_meta(sd, "step", "clean\n\x1b[31mred");
    assert_false(settings_get(sd, path, &rs, err, sizeof err));
    assert_line(err, "metadata \"step\" is \"clean\\x0a\\x1b[31mred\", expected one of tutorial");
    tg_state_dict_set_meta(sd, "format", "mnist_gan/9\x1b[0m");
    assert_false(settings_get(sd, path, &rs, err, sizeof err));
    assert_line(err, "format is \"mnist_gan/9\\x1b[0m\"");
    tg_state_dict_free(sd);
    unlink(path);
}

/* position_check: where the resumed run puts iteration, epoch and batch. */
static void test_position_check(void **state)
{
    (void)state;
    char err[512];
    run_position p = {.iteration = 25, .loader = {.epoch = 2, .batch = 5}};
    assert_true(position_check(&p, 10, 25, path, err, sizeof err));
    assert_false(position_check(&p, 10, 24, path, err, sizeof err));
    assert_line(err, "beyond this run's 24 iterations");
    assert_false(position_check(&p, 12, 100, path, err, sizeof err));
    assert_line(err, "do not give iteration 25 at 12 batches per epoch");
    p = (run_position){.iteration = 30, .loader = {.epoch = 0, .batch = 30}};
    assert_false(position_check(&p, 10, 100, path, err, sizeof err));
    p = (run_position){.iteration = INT64_MAX / 2, .loader = {.epoch = INT64_MAX / 2}};
    assert_false(position_check(&p, 3, INT64_MAX / 2, path, err, sizeof err));
}

/* Writes sd to path after setting one value of tensor name, and loads it as sample does. */
static void load_with_value(tg_state_dict *sd, const char *name, float x, const char *fragment)
{
    tg_tensor *t = tg_state_dict_get(sd, name);
    assert_non_null(t);
    float old = t->data[0];
    t->data[0] = x;
    assert_int_equal(tg_data_save_safetensors(path, sd), TG_OK);
    t->data[0] = old;
    tg_state_dict *loaded = NULL;
    run_settings rs;
    gan_state s = {0};
    fail_code = 0;
    assert_int_equal(load_trained(path, &loaded, &rs, &s), EXIT_BAD_INPUT);
    assert_int_equal(fail_code, EXIT_BAD_INPUT);
    assert_line(fail_line, fragment);
    assert_line(fail_line, path);
    tg_state_dict_free(loaded);
    gan_state_free(&s);
}

/* Item 12: values a layer or optimizer cannot use are refused, naming the tensor. */
static void test_bad_tensor_values(void **state)
{
    (void)state;
    tg_state_dict *sd = good_checkpoint();
    const char *var = NULL, *count = NULL, *weight = tg_state_dict_name(sd, 0);
    for (int64_t i = 0; i < tg_state_dict_size(sd); i++) {
        const char *name = tg_state_dict_name(sd, i);
        if (!var && strstr(name, ".running_var"))
            var = name;
        if (!count && strstr(name, ".num_batches_tracked"))
            count = name;
    }
    assert_non_null(var);
    assert_non_null(count);
    load_with_value(sd, var, NAN, "holds nan at index 0, expected a finite variance >= 0");
    load_with_value(sd, var, -1.0f, "holds -1 at index 0, expected a finite variance >= 0");
    load_with_value(sd, count, 2.5f, "expected a whole number >= 0");
    load_with_value(sd, count, -1.0f, "expected a whole number >= 0");
    load_with_value(sd, weight, INFINITY, "holds inf at index 0, expected a finite value");
    tg_state_dict_free(sd);
    unlink(path);
}

/* Item 15: a checkpoint whose settings the optimizer refuses is bad input, naming the file. */
static void test_bad_settings_are_bad_input(void **state)
{
    (void)state;
    tg_state_dict *sd = good_checkpoint();
    tg_state_dict_set_meta(sd, "beta1", "0x1p+0");
    assert_int_equal(tg_data_save_safetensors(path, sd), TG_OK);
    tg_state_dict *loaded = NULL;
    run_settings rs;
    gan_state s = {0};
    fail_code = 0;
    assert_int_equal(load_trained(path, &loaded, &rs, &s), EXIT_BAD_INPUT);
    assert_int_equal(fail_code, EXIT_BAD_INPUT);
    assert_line(fail_line, "metadata \"beta1\" is \"0x1p+0\"");
    assert_line(fail_line, path);
    tg_state_dict_free(loaded);
    gan_state_free(&s);
    tg_state_dict_free(sd);
    unlink(path);
}

/* load_trained returns the exit status sample and eval end with: out of memory is the
 * machine's failure (1), not bad input (2), which it became when load_trained returned a bool
 * and its callers exited 2 whatever it had said. A width / 64 checkpoint whose metadata says
 * width_div 1 makes gan_state_init build the full-size models, under an address-space limit
 * that leaves too little room for them. */
static void test_out_of_memory_is_not_bad_input(void **state)
{
    (void)state;
#ifdef __SANITIZE_ADDRESS__
    skip(); /* AddressSanitizer reserves terabytes of address space */
#endif
    tg_state_dict *sd = good_checkpoint();
    assert_int_equal(tg_state_dict_set_meta(sd, "width_div", "1"), TG_OK);
    assert_int_equal(tg_data_save_safetensors(path, sd), TG_OK);
    tg_state_dict_free(sd);
    long pages = 0;
    FILE *statm = fopen("/proc/self/statm", "r");
    assert_non_null(statm);
    assert_int_equal(fscanf(statm, "%ld", &pages), 1);
    fclose(statm);
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_AS, &old), 0);
    lim = old;
    lim.rlim_cur = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + ((rlim_t)16 << 20);
    if (old.rlim_cur != RLIM_INFINITY && old.rlim_cur < lim.rlim_cur)
        skip();
    tg_state_dict *loaded = NULL;
    run_settings rs;
    gan_state s = {0};
    fail_code = 0;
    assert_int_equal(setrlimit(RLIMIT_AS, &lim), 0);
    int code = load_trained(path, &loaded, &rs, &s);
    assert_int_equal(setrlimit(RLIMIT_AS, &old), 0);
    tg_state_dict_free(loaded);
    gan_state_free(&s);
    unlink(path);
    assert_int_equal(fail_code, 1);
    assert_int_equal(code, 1);
    assert_line(fail_line, "out of memory");
}

/* The classifier's metadata (mnist_classifier's clf_load): read strictly, quoted escaped. */
static void test_classifier_metadata(void **state)
{
    (void)state;
    static const struct {
        const char *key, *value, *fragment;
    } cases[] = {
        {"epoch", "-1", "metadata \"epoch\" is \"-1\", expected a whole number >= 0"},
        {"epoch", "3garbage", "metadata \"epoch\" is \"3garbage\""},
        {"test_accuracy", "nan", "metadata \"test_accuracy\" is \"nan\", expected a number in"},
        {"test_accuracy", " 0.9", "metadata \"test_accuracy\" is \" 0.9\""},
        {"architecture", "x\x1b[31m", "architecture \"x\\x1b[31m\" is not"},
    };
    snprintf(path, sizeof path, "/tmp/tg_clf_ckpt_%d.safetensors", (int)getpid());
    clf_model *m = clf_new(1);
    clf_info info = {.epoch = 2, .test_accuracy = 0.5, .dataset = "mnist"};
    assert_non_null(m);
    assert_int_equal(clf_save(m, &info, path), TG_OK);
    clf_free(m);
    tg_state_dict *sd = tg_data_load_safetensors(path);
    assert_non_null(sd);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tg_state_dict *copy = tg_state_dict_new();
        for (int64_t k = 0; k < tg_state_dict_size(sd); k++)
            tg_state_dict_put(copy, tg_state_dict_name(sd, k), tg_state_dict_tensor(sd, k));
        for (int64_t k = 0; k < tg_state_dict_meta_size(sd); k++)
            tg_state_dict_set_meta(copy, tg_state_dict_meta_key(sd, k),
                                   tg_state_dict_meta_value(sd, k));
        tg_state_dict_set_meta(copy, cases[i].key, cases[i].value);
        assert_int_equal(tg_data_save_safetensors(path, copy), TG_OK);
        tg_state_dict_free(copy);
        assert_null(clf_load(path, &info));
        assert_line(tg_last_error(), cases[i].fragment);
    }
    /* A dataset name is only shown: kept, escaped. */
    tg_state_dict_set_meta(sd, "dataset", "fa\nshion");
    assert_int_equal(tg_data_save_safetensors(path, sd), TG_OK);
    m = clf_load(path, &info);
    assert_non_null(m);
    assert_string_equal(info.dataset, "fa\\x0ashion");
    clf_free(m);
    tg_state_dict_free(sd);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TG_TEST(test_good_checkpoint_reads),
        TG_TEST(test_matmul_recorded),
        TG_TEST(test_bad_scalars),
        TG_TEST(test_readers_are_strict),
        TG_TEST(test_optimizer_settings_agree),
        TG_TEST(test_quoted_values_escaped),
        TG_TEST(test_position_check),
        TG_TEST(test_bad_tensor_values),
        TG_TEST(test_bad_settings_are_bad_input),
        TG_TEST(test_classifier_metadata),
        TG_TEST(test_out_of_memory_is_not_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
