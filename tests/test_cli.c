/* examples/mnist_gan/cli.c: gan_parse_args on its own (the program end to end, with the message
 * of every bad input, is tests/test_mnist_gan.c). Here: what the fuzz target
 * tests/fuzz/fuzz_cli found, as regression cases. */
#include "common.h"

#include "cli.h"

/* Parses argv (after "mnist_gan", NULL-terminated); returns the verdict, err gets the message. */
static bool parse(const char *const *args, gan_options *o, char *err, size_t size)
{
    char *argv[40] = {"mnist_gan"};
    int argc = 1;
    while (args[argc - 1])
        argv[argc] = (char *)args[argc - 1], argc++;
    err[0] = '\0';
    return gan_parse_args(argc, argv, o, err, size);
}

/* fuzz_cli's first finding (input train\0--batch\034\0--batch\0642\0--lr\01e-74\0...): a
 * learning rate above 0 as a double rounded to 0 as a float, and was accepted. */
static void test_cli_lr_rounding_to_zero(void **state)
{
    (void)state;
    gan_options o;
    char err[256];
    const char *bad[] = {"train", "--batch", "34",      "--batch", "642",
                         "--lr",  "1e-74",   "--batch", "642",     NULL};
    assert_false(parse(bad, &o, err, sizeof err));
    assert_string_equal(err, "--lr: '1e-74' is 0 as a float32, not above 0");
    /* The smallest float above 0 is still a learning rate. */
    const char *tiny[] = {"train", "--lr", "1.5e-45", NULL};
    assert_true(parse(tiny, &o, err, sizeof err));
    assert_true(o.lr > 0);
    /* --beta1's range is closed at 0: rounding to 0 is fine there. */
    const char *beta[] = {"train", "--beta1", "1e-60", NULL};
    assert_true(parse(beta, &o, err, sizeof err));
    assert_true(o.beta1 == 0.0f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TG_TEST(test_cli_lr_rounding_to_zero),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
