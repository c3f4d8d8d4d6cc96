/* Running mnist_gan from the end-to-end tests (test_mnist_gan, test_gan_crash,
 * test_gan_valgrind): each run in its own process group with stdout and stderr in files, a
 * timeout that kills the group, no run left behind when the test dies, and the small files,
 * folders and data set the runs need.
 * Everything lives in one temporary folder per test executable (run_make_root), removed at the
 * end (run_teardown) unless TG_KEEP_TMP=1. Failures are cmocka failures (fail_msg), so call
 * these from tests. */
#ifndef TAPEGRAD_TESTS_GAN_RUN_H
#define TAPEGRAD_TESTS_GAN_RUN_H

#include "common.h"
#include "data.h"

#include <limits.h>
#include <stdbool.h>
#include <sys/resource.h>
#include <sys/types.h>

#define RUN_TIMEOUT 300.0 /* seconds for one program run on a loaded machine */
#define CSV_HEADER "iteration,epoch,batch,d_real,d_fake,g,seconds"
#define WGAN_CSV_HEADER "iteration,epoch,batch,critic,wasserstein,penalty,g,seconds" /* wgan-gp */

extern char program[PATH_MAX]; /* the mnist_gan executable, absolute */
extern char root[PATH_MAX];    /* the test's temporary folder */
extern const char *cwd_dir;    /* every run's working folder: nothing may appear in it */
extern int n_runs;
extern double run_seconds; /* spent in mnist_gan runs, for the timing line of each test */

double now(void);
/* A path or string made with printf, kept until run_teardown. */
const char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));

/* ---- set-up: the program's path from argv[1] (or $MNIST_GAN) and the temporary folder ---- */
/* False (with a usage line on stderr) when the program cannot be found. */
bool run_set_program(int argc, char **argv, const char *usage_tail);
/* Makes root ($TMPDIR/NAME_XXXXXX) with cwd/ and logs/ in it; false with a message. */
bool run_make_root(const char *name);
/* A cmocka group teardown: removes root (kept, and said so, when TG_KEEP_TMP is set) and
 * frees the fmt strings. */
int run_teardown(void **state);

/* ---- files ---------------------------------------------------------------------------- */
/* The whole file, NUL-terminated (malloc'ed), or NULL when it cannot be read. */
char *read_file(const char *path, size_t *n);
char *must_read(const char *path, size_t *n);
void write_file(const char *path, const void *b, size_t n);
void copy_file(const char *src, const char *dst);
bool same_file(const char *a, const char *b);
bool exists(const char *path);
void make_dir(const char *path);
/* Copies the regular files of src (not its subfolders) into dst, made if needed. */
void copy_dir(const char *src, const char *dst);
void remove_tree(const char *path);
/* The names in dir that contain part (a NULL-terminated, malloc'ed array; free with
 * free_names), sorted. */
char **names_with(const char *dir, const char *part, int *n);
void free_names(char **names);
/* The executable name in a folder of $PATH: true with its path in out. */
bool find_in_path(const char *name, char out[PATH_MAX]);

/* ---- running programs ----------------------------------------------------------------- */
typedef struct {
    int status; /* the exit code, or 128 + the signal */
    char *out, *err;
    double seconds;
} run_result;

void run_free(run_result *r);

/* How a child starts besides its arguments: home, if not NULL, becomes $HOME; fsize, if not 0,
 * is its RLIMIT_FSIZE, with SIGXFSZ at its default as after a shell's `ulimit -f` (mnist_gan
 * ignores it, so a write past the limit fails with EFBIG, as on a full disk). */
typedef struct {
    const char *home;
    rlim_t fsize;
} start_opts;

/* Starts argv[0] (a path) with argv in cwd_dir, in its own process group, stdout and stderr
 * into files named by *tag; opts may be NULL. The run dies with the test, however the test
 * ends (see gan_run.c); call it from the main thread. */
pid_t start(const char *const argv[], const start_opts *opts, const char **tag);
/* Seconds (below 1) the child of start() waits right after the fork, 0 but in test_gan_crash's
 * check of a test that dies before its run has asked to die with it. */
extern double start_child_delay;
/* Waits for pid (killing its group after timeout seconds) and collects its output. */
run_result finish(pid_t pid, const char *tag, double t0, double timeout, bool kill_group);
/* prefix (argv[0] a path; NULL-terminated) then args (NULL-terminated), to its end. */
run_result run_with(const char *const prefix[], const char *const args[]);
/* mnist_gan with args (NULL-terminated, without the program name), to its end. */
run_result gan(const char *const args[]);
#define GAN(...) gan((const char *const[]){__VA_ARGS__, NULL})
/* The command line, for messages. */
const char *cmdline(const char *const args[]);
/* Fails the test unless r exited 0. */
void assert_ran(const run_result *r, const char *what);

/* ---- data, logs and checkpoints ------------------------------------------------------- */
/* dir/train-{images-idx3,labels-idx1}-ubyte with n images: the first n of real MNIST from
 * $TG_MNIST_DIR when it is there (true), else synthetic digits (false). */
bool make_dataset(const char *dir, int64_t n);

typedef struct {
    char **rows; /* the lines after the header, without '\n' */
    int n;
    char *buf;
} csv_file;

/* losses.csv: the exact header (CSV_HEADER), then whole lines (a torn last line fails). */
csv_file csv_load(const char *path);
/* The same with another exact header (WGAN_CSV_HEADER). */
csv_file csv_load_header(const char *path, const char *header);
void csv_free(csv_file *c);

/* The row without its last (seconds) column. */
const char *row_key(const char *row);

/* The checkpoint, or a failure naming the loader's error. */
tg_state_dict *ckpt_load(const char *path);
/* Every tensor bit for bit and every metadata value but "seconds" (the run's wall time). */
void assert_same_checkpoint(const char *pa, const char *pb);

#endif
