/* examples/mnist_gan/cli.c: gan_parse_args on its own (the program end to end, with the message
 * of every bad input, is tests/test_mnist_gan.c). Here: what the fuzz target
 * tests/fuzz/fuzz_cli found, as regression cases, and issue 19's hostile values: loose numbers
 * (blanks, '+', hex, "-0"), control characters in paths and messages, more threads than CPUs. */
#include "common.h"

#include "cli.h"

#include <sched.h>
#include <stdio.h>
#include <unistd.h>

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

/* Expects the command line to be refused with exactly message. */
static void assert_refused(const char *const *args, const char *message)
{
    gan_options o;
    char err[512];
    if (parse(args, &o, err, sizeof err))
        fail_msg("accepted; expected \"%s\"", message);
    assert_string_equal(err, message);
}

/* Issue 19: strtoll/strtod took a leading blank, '+', hex and "-0"; the flags now read numbers
 * with tg_parse_int/tg_parse_uint/tg_parse_real, and keep their messages' form. */
static void test_cli_strict_numbers(void **state)
{
    (void)state;
    assert_refused((const char *[]){"train", "--lr", " 2e-4", NULL},
                   "--lr: ' 2e-4' is not a number in (0, 10]");
    assert_refused((const char *[]){"train", "--lr", "0x1p-12", NULL},
                   "--lr: '0x1p-12' is not a number in (0, 10]");
    assert_refused((const char *[]){"train", "--lr", "nan", NULL},
                   "--lr: 'nan' is not a number in (0, 10]");
    assert_refused((const char *[]){"train", "--beta1", "inf", NULL},
                   "--beta1: 'inf' is not a number in [0, 0.999999]");
    assert_refused((const char *[]){"train", "--iters", "+5", NULL},
                   "--iters: '+5' is not a whole number from 1 to 4611686018427387903");
    assert_refused((const char *[]){"train", "--batch", "0x10", NULL},
                   "--batch: '0x10' is not a whole number from 2 to 65536");
    assert_refused((const char *[]){"train", "--digit", " 7", NULL},
                   "--digit: ' 7' is not a whole number from 0 to 9");
    assert_refused((const char *[]){"sample", "--checkpoint", "c", "--seed", "-1", NULL},
                   "--seed: '-1' is not a whole number from 0 to 9223372036854775807");
    assert_refused((const char *[]){"train", "--seed", "9223372036854775808", NULL},
                   "--seed: '9223372036854775808' is not a whole number from 0 to "
                   "9223372036854775807");
    /* "-0" is 0: accepted as +0, so the run's title shows "beta1 0", not "-0". */
    gan_options o;
    char err[256];
    assert_true(parse((const char *[]){"train", "--beta1", "-0", NULL}, &o, err, sizeof err));
    assert_true(o.beta1 == 0.0f && !signbit(o.beta1));
    assert_true(
        parse((const char *[]){"train", "--lr", "2e-4", "--seed", "9223372036854775807", NULL}, &o,
              err, sizeof err));
    assert_true(o.lr == 2e-4f && o.seed == 9223372036854775807ull);
}

/* A value quoted in a message is escaped: the message stays one line of plain ASCII. */
static void test_cli_messages_escaped(void **state)
{
    (void)state;
    assert_refused((const char *[]){"train", "--lr", "1\n2", NULL},
                   "--lr: '1\\x0a2' is not a number in (0, 10]");
    assert_refused((const char *[]){"train", "--fo\x1b[31mo", "1", NULL},
                   "unknown flag '--fo\\x1b[31mo' (see mnist_gan --help)");
    assert_refused((const char *[]){"train", "x\ry", NULL},
                   "unexpected argument 'x\\x0dy' (flags start with --)");
    assert_refused((const char *[]){"bo\ngus", NULL},
                   "unknown command 'bo\\x0agus' (train, sample, eval or --help)");
    assert_refused((const char *[]){"train", "--recipe", "dc\tgan", NULL},
                   "--recipe: 'dc\\x09gan' is not one of tutorial, dcgan, wgan-gp, cgan");
}

/* Issue 19: a newline in --out made a folder named with it, and every message naming the
 * folder two lines. Every path flag refuses control characters; other bytes (UTF-8) pass. */
static void test_cli_path_control_characters(void **state)
{
    (void)state;
    assert_refused((const char *[]){"train", "--out", "runs/a\nb", NULL},
                   "--out: 'runs/a\\x0ab' holds a control character");
    assert_refused((const char *[]){"train", "--data", "d\x7f", NULL},
                   "--data: 'd\\x7f' holds a control character");
    assert_refused((const char *[]){"train", "--eval-every", "1", "--classifier", "c\t", NULL},
                   "--classifier: 'c\\x09' holds a control character");
    assert_refused((const char *[]){"sample", "--checkpoint", "\x1b", NULL},
                   "--checkpoint: '\\x1b' holds a control character");
    assert_refused((const char *[]){"sample", "--checkpoint", "c", "--out", "a\rb.png", NULL},
                   "--out: 'a\\x0db.png' holds a control character");
    assert_refused((const char *[]){"sample", "--checkpoint", "c", "--idx", "p\n", NULL},
                   "--idx: 'p\\x0a' holds a control character");
    assert_refused((const char *[]){"eval", "--images", "i\n", "--classifier", "c", NULL},
                   "--images: 'i\\x0a' holds a control character");
    assert_refused(
        (const char *[]){"eval", "--images", "i", "--classifier", "c", "--json", "j\n", NULL},
        "--json: 'j\\x0a' holds a control character");
    gan_options o;
    char err[256];
    assert_true(parse((const char *[]){"train", "--out",
                                       "runs/donn\xc3\xa9"
                                       "es",
                                       NULL},
                      &o, err, sizeof err));
    assert_string_equal(o.out_dir, "runs/donn\xc3\xa9"
                                   "es");
}

/* The CPUs this process may run on, as the parser should count them. */
static int usable_cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        return CPU_COUNT(&set);
    return (int)sysconf(_SC_NPROCESSORS_ONLN);
}

/* Issue 19: --threads 8 on a 2-CPU machine under an address-space limit spun forever inside
 * OpenBLAS; more threads than CPUs buys nothing, so the parser refuses them. */
static void test_cli_threads_cpu_count(void **state)
{
    (void)state;
    const int cpus = usable_cpus();
    assert_true(cpus >= 1);
    gan_options o;
    char err[256], v[32], want[256];
    snprintf(v, sizeof v, "%d", cpus);
    assert_true(parse((const char *[]){"train", "--threads", v, NULL}, &o, err, sizeof err));
    assert_int_equal(o.threads, cpus);
    if (cpus < 256) {
        snprintf(v, sizeof v, "%d", cpus + 1);
        snprintf(want, sizeof want,
                 "--threads: '%d' is more than the %d CPU%s this process can "
                 "run on",
                 cpus + 1, cpus, cpus == 1 ? "" : "s");
        assert_refused((const char *[]){"sample", "--checkpoint", "c", "--threads", v, NULL}, want);
    }
    assert_refused((const char *[]){"train", "--threads", "257", NULL},
                   "--threads: '257' is not a whole number from 1 to 256");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TG_TEST(test_cli_lr_rounding_to_zero), TG_TEST(test_cli_strict_numbers),
        TG_TEST(test_cli_messages_escaped),    TG_TEST(test_cli_path_control_characters),
        TG_TEST(test_cli_threads_cpu_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
