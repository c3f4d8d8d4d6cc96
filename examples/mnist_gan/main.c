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

int fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("mnist_gan: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return code;
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
    gan_options o;
    char err[1024];
    if (!gan_parse_args(argc, argv, &o, err, sizeof err))
        return fail(EXIT_BAD_INPUT, "%s", err);
    if (o.cmd == CMD_HELP) {
        fputs(gan_usage(), stdout);
        return 0;
    }
    if (tg_set_num_threads(o.threads) != TG_OK)
        return fail(EXIT_BAD_INPUT, "%s", tg_last_error());
    int code = o.cmd == CMD_TRAIN ? train(&o) : o.cmd == CMD_EVAL ? evaluate(&o) : sample(&o);
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
