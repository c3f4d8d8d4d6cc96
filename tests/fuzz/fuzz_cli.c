/* libFuzzer target: mnist_gan's command-line parser, gan_parse_args, on arbitrary argument
 * lists. The input split at its NUL bytes gives argv[1..] (at most 40 arguments, after
 * argv[0] = "mnist_gan"); cli.dict lists the commands, flags and choice names, so libFuzzer
 * combines real flags with hostile values. The parser must never crash, exit or print; on
 * failure it leaves one non-empty message inside the buffer, which is one line of printable
 * ASCII (values are quoted escaped), and what it accepts must be in range (the checks the
 * program relies on after parsing: no more threads than CPUs, no "-0", no control character
 * in a path). */
#include "fuzz.h"

#include "cli.h"

#include <math.h>
#include <sched.h>
#include <unistd.h>

enum { MAX_ARGS = 40 };

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_init();
    return 0;
}

/* True when path (NULL: not given) holds a control character, which no path flag accepts. */
static bool has_control(const char *path)
{
    for (const char *p = path; p && *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return true;
    return false;
}

/* The ranges gan_parse_args promises for an accepted command line. */
static void check_accepted(const gan_options *o)
{
    if (o->cmd == CMD_HELP)
        return;
    static long cpus;
    if (!cpus) {
        cpu_set_t set;
        cpus = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set)
                                                           : sysconf(_SC_NPROCESSORS_ONLN);
    }
    if (o->epochs < 1 || o->iters < 0 || o->batch < 2 || !(o->lr > 0) || !(o->beta1 >= 0) ||
        signbit(o->beta1) || !(o->beta1 < 1) || o->threads < 1 || o->threads > cpus ||
        o->log_every < 1 || o->width_div < 1 || o->digit < -1 || o->digit > 9 || o->n < 1 ||
        o->eval_every < 0 || o->eval_n < 2 || o->seed > INT64_MAX || !o->dataset || !o->out_dir ||
        !o->png_out)
        fuzz_fail("gan_parse_args accepted a value out of range");
    if (has_control(o->data_dir) || has_control(o->out_dir) || has_control(o->png_out) ||
        has_control(o->checkpoint) || has_control(o->classifier) || has_control(o->images) ||
        has_control(o->json_path) || has_control(o->idx_prefix))
        fuzz_fail("gan_parse_args accepted a path with a control character");
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
    for (const char *p = err; !ok && *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            fuzz_fail("gan_parse_args's message holds a byte outside printable ASCII");
    if (ok)
        check_accepted(&o);
    free(buf);
    fuzz_check();
    return 0;
}
