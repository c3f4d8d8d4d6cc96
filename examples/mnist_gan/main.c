/* mnist_gan: trains the PaddlePaddle dygraph tutorial's GAN on MNIST, samples a trained G or
 * measures it. See `mnist_gan --help` and the README. Bad input exits 2 with one line naming
 * the problem; nothing already written (checkpoint, logs) is destroyed by it. */
#include "app.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

bool quiet_rank, keep_failures;
char kept_failure[1024];

int fail(int code, const char *fmt, ...)
{
    char msg[sizeof kept_failure];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (keep_failures)
        memcpy(kept_failure, msg, sizeof msg);
    else if (!quiet_rank)
        fprintf(stderr, "mnist_gan: %s\n", msg);
    return code;
}

int agree_failure(tg_dist *d, int code)
{
    keep_failures = false;
    /* One process: its own message, as it was; under MPI, the lowest failing rank's. */
    code = dp_agree_exit(d, code, kept_failure);
    return code == 0 ? 0 : fail(code, "%s", tg_last_error());
}

/* Every rank must run with the same flags but --threads (each machine's cores) and --data
 * (each machine's path to the files): the rest of argv, compared across the ranks. */
static tg_status check_same_flags(tg_dist *d, int argc, char **argv)
{
    if (!d)
        return TG_OK;
    size_t len = 1;
    for (int i = 1; i < argc; i++)
        len += strlen(argv[i]) + 1;
    char *all = malloc(len);
    tg_status st = dp_agree(
        d, all ? TG_OK : tg_set_error(TG_ERR_NOMEM, "mnist_gan: out of memory for the flags"));
    size_t at = 0;
    for (int i = 1; st == TG_OK && i < argc; i++) {
        if ((!strcmp(argv[i], "--threads") || !strcmp(argv[i], "--data")) && i + 1 < argc) {
            i++;
            continue;
        }
        memcpy(all + at, argv[i], strlen(argv[i]) + 1); /* with its '\0': "a b" is not "ab" */
        at += strlen(argv[i]) + 1;
    }
    if (st == TG_OK)
        st = dp_check_same(d, all, at, "the flags");
    free(all);
    return st;
}

int input_failure(void)
{
    return tg_last_status() == TG_ERR_NOMEM ? 1 : EXIT_BAD_INPUT;
}

double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    /* Past a shell's `ulimit -f`, SIGXFSZ would kill the program without a word (status 153)
     * and leave a save's temporary file; ignored, the write fails with EFBIG and the save says
     * "File too large", as on a full disk. */
    signal(SIGXFSZ, SIG_IGN);
    /* Under mpirun (dist_opt.h), train runs data-parallel; only rank 0 speaks and writes. */
    tg_dist *d;
    if (dp_start(&argc, &argv, &d) != TG_OK)
        return fail(1, "%s", tg_last_error());
    quiet_rank = dp_rank(d) != 0;
    if (quiet_rank && !freopen("/dev/null", "w", stdout))
        clearerr(stdout); /* failed: stdout is closed, which prints nothing either */
    gan_options o;
    char err[1024];
    int code = 0;
    keep_failures = true;
    if (!gan_parse_args(argc, argv, &o, err, sizeof err))
        code = fail(EXIT_BAD_INPUT, "%s", err);
    else if (o.cmd != CMD_HELP && tg_set_num_threads(o.threads) != TG_OK)
        code = fail(EXIT_BAD_INPUT, "%s", tg_last_error());
    else if (d && o.cmd != CMD_TRAIN && o.cmd != CMD_HELP)
        code = fail(EXIT_BAD_INPUT, "%s runs in one process: only train runs under mpirun",
                    o.cmd == CMD_EVAL ? "eval" : "sample");
    if ((code = agree_failure(d, code)) == 0 &&
        check_same_flags(d, argc, argv) != TG_OK) /* the same verdict on every rank */
        code = fail(EXIT_BAD_INPUT, "%s", tg_last_error());
    if (code != 0) {
        dp_finish(d);
        return code;
    }
    if (o.cmd == CMD_HELP) {
        fputs(gan_usage(), stdout);
        dp_finish(d);
        return 0;
    }
    code = o.cmd == CMD_TRAIN ? train(&o, d) : o.cmd == CMD_EVAL ? evaluate(&o) : sample(&o);
    if (dp_finish(d) != TG_OK && code == 0)
        code = fail(1, "%s", tg_last_error());
    tg_allocator_trim();
    /* Everything is freed by now, so anything still counted is a leak: a failure of a run that
     * otherwise succeeded. TG_REPORT_LIVE=1 prints the counters anyway, for bench/rss_long.py. */
    long long tensors = (long long)tg_debug_live_tensors();
    long long nodes = (long long)tg_debug_live_nodes(), bytes = (long long)tg_debug_live_bytes();
    const char *report = getenv("TG_REPORT_LIVE");
    if (report && *report && strcmp(report, "0") != 0)
        fprintf(stderr, "mnist_gan: at exit: %lld live tensors, %lld live nodes, %lld live bytes\n",
                tensors, nodes, bytes);
    if (code == 0 && (tensors != 0 || nodes != 0 || bytes != 0))
        return fail(1, "internal: %lld tensors, %lld nodes, %lld bytes still alive at exit",
                    tensors, nodes, bytes);
    return code;
}
