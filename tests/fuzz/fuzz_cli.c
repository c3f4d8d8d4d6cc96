/* libFuzzer target: mnist_gan's command-line parser, gan_parse_args, on arbitrary argument
 * lists. The input split at its NUL bytes gives argv[1..] (at most 40 arguments, after
 * argv[0] = "mnist_gan"); cli.dict lists the commands, flags and choice names, so libFuzzer
 * combines real flags with hostile values. The parser must never crash, exit or print; on
 * failure it leaves one non-empty message inside the buffer, and what it accepts must be in
 * range (the checks the program relies on after parsing). */
#include "fuzz.h"

#include "cli.h"

enum { MAX_ARGS = 40 };

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_init();
    return 0;
}

/* The ranges gan_parse_args promises for an accepted command line. */
static void check_accepted(const gan_options *o)
{
    if (o->cmd == CMD_HELP)
        return;
    if (o->epochs < 1 || o->iters < 0 || o->batch < 2 || !(o->lr > 0) || !(o->beta1 >= 0) ||
        !(o->beta1 < 1) || o->threads < 1 || o->log_every < 1 || o->width_div < 1 ||
        o->digit < -1 || o->digit > 9 || o->n < 1 || o->eval_every < 0 || o->eval_n < 2 ||
        !o->dataset || !o->out_dir || !o->png_out)
        fuzz_fail("gan_parse_args accepted a value out of range");
    if (o->cmd == CMD_SAMPLE && !o->checkpoint)
        fuzz_fail("gan_parse_args accepted sample without --checkpoint");
    if (o->cmd == CMD_EVAL && !o->classifier)
        fuzz_fail("gan_parse_args accepted eval without --classifier");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A copy with a NUL at the end, so the last argument is terminated too. */
    char *buf = malloc(size + 1);
    if (!buf)
        fuzz_fail("out of memory");
    memcpy(buf, data, size);
    buf[size] = '\0';
    char *argv[MAX_ARGS + 2] = {"mnist_gan"};
    int argc = 1;
    for (size_t i = 0; i < size && argc <= MAX_ARGS; argc++) {
        argv[argc] = buf + i;
        i += strlen(buf + i) + 1;
    }
    argv[argc] = NULL;

    /* The buffer is one byte larger than the parser is told, and that byte must stay put. */
    char err[257];
    memset(err, 0x5a, sizeof err);
    gan_options o;
    fuzz_inside = true;
    bool ok = gan_parse_args(argc, argv, &o, err, sizeof err - 1);
    fuzz_inside = false;
    if (err[sizeof err - 1] != 0x5a)
        fuzz_fail("gan_parse_args wrote past the error buffer");
    if (!ok && (memchr(err, '\0', sizeof err - 1) == NULL || err[0] == '\0'))
        fuzz_fail("gan_parse_args failed without a terminated, non-empty message");
    if (ok)
        check_accepted(&o);
    free(buf);
    fuzz_check();
    return 0;
}
