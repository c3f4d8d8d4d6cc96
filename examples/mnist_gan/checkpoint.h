/* Reading a mnist_gan checkpoint back: every value in its metadata read strictly (tg_parse_*, or
 * the exact hex the checkpoint writes) and checked against the ranges the command line allows,
 * and every tensor value checked, each refusal one line naming the file and the key or tensor
 * ("FILE: metadata \"iteration\" is \"-1\", expected a whole number from 0 to ..."). For the
 * files that read checkpoints (checkpoint.c, train.c, eval.c); app.h has the types. */
#ifndef MNIST_GAN_CHECKPOINT_H
#define MNIST_GAN_CHECKPOINT_H

#include "app.h"

/* Metadata key as a whole number in [lo, hi]; false with the message in err. */
bool meta_get_int(const tg_state_dict *sd, const char *path, const char *key, int64_t lo,
                  int64_t hi, int64_t *out, char *err, size_t n);
/* The training position and the noise RNG a checkpoint records: iteration, seconds, epoch,
 * batch_in_epoch, loader_rng, z_rng, each checked on its own (an all-zero RNG state is refused).
 * False with the message in err. */
bool position_get(const tg_state_dict *sd, const char *path, run_position *pos, tg_rng *z_rng,
                  char *err, size_t n);
/* Checks pos against the run it resumes, once the loader knows per_epoch (batches per epoch)
 * and total (the iterations the run stops at): iteration <= total, and epoch and batch_in_epoch
 * where iteration * pos->batches_per_iteration batches put them. False with the message in
 * err. */
bool position_check(const run_position *pos, int64_t per_epoch, int64_t total, const char *path,
                    char *err, size_t n);
/* Checks every tensor value of a mnist_gan checkpoint: all finite, BatchNorm running_var >= 0,
 * num_batches_tracked a whole number >= 0. False with the message (naming the tensor) in err. */
bool checkpoint_check_values(const tg_state_dict *sd, const char *path, char *err, size_t n);

#endif
