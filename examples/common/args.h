/* examples/common: what the example programs share and the library leaves to programs - an
 * argparse-like table of flags, and "stop with one line" helpers for setup and failures.
 * Example-support code, linked into the examples only: not library API (no tg_ names).
 *
 * Exit statuses, as every example documents them: 0 done, 2 bad input (a flag, its value, the
 * data, the output folder: refused before any work), 1 any other failure. Every message is one
 * line on stderr that starts with the program's name (argv[0]'s last component). */
#ifndef EX_ARGS_H
#define EX_ARGS_H

#include <stdbool.h>
#include <stdint.h>

#include "tapegrad.h"

typedef enum { EX_INT, EX_REAL, EX_STRING, EX_BOOL } ex_kind;

/* One flag: "--name VALUE" into *value, an int64_t in [lo, hi], a double in [min, max] or a
 * string (meta names it in the usage: "DIR"); or a bool that the bare "--name" sets. Build
 * them with the macros below, which check the pointer's type. */
typedef struct {
    const char *name, *help;
    ex_kind kind;
    void *value;
    int64_t lo, hi;
    double min, max;
    const char *meta;
} ex_flag;

#define EX_INT(name_, ptr, lo_, hi_, help_)                                                        \
    {                                                                                              \
        (name_), (help_), EX_INT, (int64_t *){ptr}, .lo = (lo_), .hi = (hi_)                       \
    }
#define EX_REAL(name_, ptr, min_, max_, help_)                                                     \
    {                                                                                              \
        (name_), (help_), EX_REAL, (double *){ptr}, .min = (min_), .max = (max_)                   \
    }
#define EX_STRING(name_, ptr, meta_, help_)                                                        \
    {                                                                                              \
        (name_), (help_), EX_STRING, (const char **){ptr}, .meta = (meta_)                         \
    }
#define EX_BOOL(name_, ptr, help_)                                                                 \
    {                                                                                              \
        (name_), (help_), EX_BOOL, (bool *)                                                        \
        {                                                                                          \
            ptr                                                                                    \
        }                                                                                          \
    }

/* Reads argv into the flags' variables, whose values on entry are the defaults. "--help" (or
 * "-h") prints the usage - "usage: PROG [options]", about, then a line per flag with its help
 * and default - and exits 0. A bad flag exits 2 after one line naming it and the problem:
 * "PROG: unknown flag '--x' (see --help)", "PROG: --seed needs a value",
 * "PROG: --epochs: '0' is not a whole number from 1 to 10000" (values quoted by tg_escape). */
void ex_parse(int argc, char **argv, const char *about, const ex_flag *flags, int n_flags);
#define EX_PARSE(argc, argv, about, flags)                                                         \
    ex_parse((argc), (argv), (about), (flags), (int)(sizeof(flags) / sizeof(flags)[0]))

/* "PROG: <printf>" on stderr, exit 2: bad input found after the flags were read. */
_Noreturn void ex_die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "PROG: <tg_last_error()>" on stderr, exit 1: a library call failed during the work. What a
 * program leaves unfreed then goes with the process; an unfinished atomic file only leaves
 * its temporary beside the target, never a half-written target. */
_Noreturn void ex_fail(void);
/* Stops through ex_fail unless cond holds (a pointer, a true) or the tg_status is TG_OK. */
#define CHECK(cond) ((cond) ? (void)0 : ex_fail())
#define CHECK_OK(status) ((status) == TG_OK ? (void)0 : ex_fail())

/* tg_set_num_threads(n), where 0 means 2 when there are 2 CPUs or more, else 1; a refusal exits
 * 2 as "PROG: --threads: <why>". */
void ex_threads(int64_t n);
/* $TG_MNIST_DIR when set and not empty, else "data-cache/mnist" (scripts/fetch-mnist.sh). */
const char *ex_mnist_dir(void);
/* MNIST's training or test split cut to its first n images when 0 < n < its size; exits 2
 * with the loader's message when the data cannot be read. The caller frees it. */
tg_dataset *ex_mnist(const char *dir, bool train, int64_t n);
/* Makes the output folder dir and its parents (existing ones are fine) and checks that
 * dir/file can be written (tg_atomic_open, then abort): a refusal exits 2 as
 * "PROG: --out DIR: why" before any work rather than after the training. */
void ex_out_dir(const char *dir, const char *file);
/* "dir/file" in one of 4 static buffers, reused in turn: for a file name used right away.
 * A path too long for PATH_MAX exits 2. */
const char *ex_path(const char *dir, const char *file);
/* The program's exit status once everything is freed: 0, or 1 after "PROG: N tensors leaked"
 * when tg_debug_live_tensors() says some were not. */
int ex_done(void);
/* Seconds on a monotonic clock, for timings. */
double ex_seconds(void);

#endif
