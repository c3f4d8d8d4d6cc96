/* The mnist_gan program's own declarations, shared by its files (main.c, checkpoint.c, train.c,
 * sample.c, eval.c); the GAN itself (models, step) is in core/gan.h, the command line in cli.h,
 * logs and the report in report.h, the measurements in metrics.h. */
#ifndef MNIST_GAN_APP_H
#define MNIST_GAN_APP_H

#include "cli.h"
#include "dist_opt.h"
#include "metrics.h"
#include "report.h"

#define EXIT_BAD_INPUT 2
#define FASHION_DIR "/usr/share/datasets/fashion-mnist"
#define MNIST_DIR "data-cache/mnist"
#define CHECKPOINT_NAME "checkpoint.safetensors"
/* The grid of samples: the tutorial's 128 images in 16 columns. */
#define GRID_N 128
#define GRID_COLS 16

/* ---- main.c ---------------------------------------------------------------------------------- */

/* Prints "mnist_gan: <message>" on stderr and returns code (the exit status); under MPI on
 * rank 0 only (quiet_rank: another rank). While keep_failures is set, the message is kept in
 * kept_failure instead, for agree_failure. */
int fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
extern bool quiet_rank, keep_failures;
extern char kept_failure[1024];
/* Ends a stretch of keep_failures: the ranks agree on their codes (d NULL: one process), and
 * the lowest failing rank's kept message is printed by rank 0. Returns the agreed code (0 when
 * every rank's code was 0; otherwise that rank's, EXIT_BAD_INPUT or 1). */
int agree_failure(tg_dist *d, int code);
/* Monotonic seconds. */
double now(void);
/* The exit status of a failure while reading and checking the user's input (flags, files,
 * before any work): bad input (2), but for the machine's own lack of memory (1). Once the work
 * has started, every failure is 1. The status tells them apart: TG_ERR_NOMEM is the machine's,
 * every other (TG_ERR_IO: missing or unreadable, TG_ERR_FORMAT, TG_ERR_ARG, TG_ERR_SHAPE) the
 * input's. */
int input_failure(void);

/* ---- checkpoint.c ---------------------------------------------------------------------------- */

/* The run's settings, as the checkpoint records them. */
typedef struct {
    gan_config cfg;
    int digit, width_div;
    int64_t batch;
    int64_t per_class; /* train --train-per-class: images per class trained on; 0: all */
    int ranks;         /* MPI ranks that trained it (1: one process; resume needs as many) */
    tg_matmul_precision matmul; /* train --matmul (absent from the checkpoint: fp32) */
} run_settings;

/* Training position. */
typedef struct {
    int64_t iteration;
    double seconds;
    tg_loader_state loader;
    int64_t batches_per_iteration; /* the run's, not saved: wgan-gp's n_critic; 0 means 1 */
} run_position;
/* Reads an RNG state written by the checkpoint's hex words. */
bool meta_get_rng(const tg_state_dict *sd, const char *path, const char *key, tg_rng *r, char *err,
                  size_t n);
/* The run's settings from a checkpoint's metadata (format 2, or format 1 read as what it was). */
bool settings_get(const tg_state_dict *sd, const char *path, run_settings *r, char *err, size_t n);
/* Writes the checkpoint (atomically): models, optimizers, settings and position. */
tg_status save_checkpoint(const char *path, const gan_state *s, const run_settings *rs,
                          const run_position *pos);
/* The labels a conditional G draws by default (gan_generate): those of every digit, balanced,
 * or, for a model trained on one digit (digit >= 0), that digit. Unconditional: no change. */
void default_gen_label(gan_state *s, int digit);
/* Loads what train saved into a fresh state: the settings from the checkpoint's metadata, the
 * models they describe, then the weights. 0, or after printing the message the exit status:
 * EXIT_BAD_INPUT when the file is at fault, 1 when the machine is (out of memory). The caller
 * frees *sd and *s either way. */
int load_trained(const char *path, tg_state_dict **sd, run_settings *rs, gan_state *s);

/* ---- the commands (train.c, sample.c, eval.c) ------------------------------------------------ */

/* The generator a run of recipe has, as the log and eval's JSON name it: the tutorial recipe's
 * choice (gan_generator_names), dcgan's G for dcgan and wgan-gp, its conditional form for cgan. */
const char *gan_generator_label(gan_recipe recipe, gan_generator gen);
/* True when something exists at path. */
bool file_exists(const char *p);
/* Whether the output file path (the value of flag) can be written, checked before any work:
 * false with a message naming the flag in err when it cannot (it exists and is not a regular
 * file, or no temporary file can be made beside it: tg_atomic_open's checks). */
bool can_write(const char *flag, const char *path, char *err, size_t n);
/* The data folder the options name (--data, or the --dataset's). */
const char *data_dir_of(const gan_options *o);
/* Each returns the exit status. */
int train(gan_options *o, tg_dist *d); /* d: dp_start's (NULL: one process) */
int sample(const gan_options *o);
int evaluate(const gan_options *o);

#endif
