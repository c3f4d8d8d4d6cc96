/* tapegrad — data-parallel training over MPI (libtapegrad_dist, built only when meson finds
 * MPI; the core library has no MPI dependency, and this header does not include mpi.h).
 *
 * Every rank runs the same program on its own slice of each global batch: rank 0's initial
 * weights go to every rank (tg_dist_broadcast_params), each rank computes the gradient of the
 * mean loss over its slice, tg_dist_allreduce_grads replaces it by the mean over the ranks,
 * which is the gradient of the mean over the global batch, and every rank then takes the same
 * optimizer step. What is synchronised and what is not: docs/design.md, "Data-parallel
 * training over MPI".
 *
 *     tg_dist *d;
 *     if (tg_dist_init(&argc, &argv, &d) != TG_OK) ...            (before anything else)
 *     st = tg_dist_agree(d, parse_status);                        (one rank's bad flag: all stop)
 *     st = tg_dist_check_same(d, flags, flags_len, "settings");   (ranks launched differently)
 *     st = tg_dist_broadcast_params(d, model);
 *     loop: tg_dist_loader_next(d, loader, &x, &y); forward; tg_backward(loss);
 *           tg_dist_allreduce_grads(d, params, n); tg_optim_step(opt); tg_optim_zero_grad(opt);
 *     tg_dist_finalize(d);
 *
 * Every function here is collective unless it says otherwise: all ranks must call it, in the
 * same order, with matching arguments (the same tensors' shapes). Each returns the same status
 * on every rank whenever it can tell (a mismatch between ranks, a failure on one rank before
 * any data moves), so a program that stops on an error stops on every rank rather than
 * leaving the others waiting. */
#ifndef TAPEGRAD_DIST_H
#define TAPEGRAD_DIST_H

#include "data.h"
#include "nn.h"

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One process's view of the job: its rank, the number of ranks, and a communicator of its own
 * (a duplicate of MPI_COMM_WORLD, so a program's own MPI traffic cannot mix with it). */
typedef struct tg_dist tg_dist;

/* The default size of one MPI_Allreduce in tg_dist_allreduce_grads: 25 MiB, PyTorch DDP's. */
#define TG_DIST_BUCKET_BYTES ((size_t)25 << 20)

/* Starts MPI (MPI_Init_thread, MPI_THREAD_FUNNELED: only the main thread calls MPI, OpenMP's
 * threads never do) with the program's argc and argv (either may be NULL), or, when the program
 * has already initialised MPI itself, wraps that MPI and leaves its finalisation to the program.
 * *out gets the new context; NULL and an error when MPI cannot start. Collective (every rank
 * calls it first), and, like every function here, for the main thread only. Run without
 * mpirun, it is a job of one rank. */
tg_status tg_dist_init(int *argc, char ***argv, tg_dist **out);
/* Frees d and its communicator, then finalises MPI if tg_dist_init started it. Collective.
 * NULL is ignored (TG_OK). */
tg_status tg_dist_finalize(tg_dist *d);
/* This process's rank, 0 .. size - 1 (0 for NULL). Local. */
int tg_dist_rank(const tg_dist *d);
/* The number of ranks (1 for NULL). Local. */
int tg_dist_size(const tg_dist *d);
/* Sets the largest MPI_Allreduce tg_dist_allreduce_grads and tg_dist_allreduce_mean make, in
 * bytes (at least 4, a float); the default is TG_DIST_BUCKET_BYTES. Local, but every rank must
 * use the same value, or their calls do not match. */
tg_status tg_dist_set_bucket_bytes(tg_dist *d, size_t bytes);

/* ---- agreeing before anything moves --------------------------------------------------- */

/* Each rank passes its own status (TG_OK, or the failure it just had: a bad flag, a file it
 * could not read); every rank gets TG_OK when all passed TG_OK, otherwise the status of the
 * lowest failing rank and, as its error on every rank, "tg_dist_agree: rank R of N: <that
 * rank's tg_last_error()>", so rank 0 can print the one line that explains the stop. */
tg_status tg_dist_agree(tg_dist *d, tg_status local);
/* Checks that every rank passed the same len bytes of blob (say the program's settings, as
 * text): TG_OK on every rank, or TG_ERR_ARG on every rank with "tg_dist_check_same: <what>
 * of rank R differ from rank 0's (K of N ranks differ)", R the lowest such rank. Compares a
 * 64-bit hash of the bytes (FNV-1a), not the bytes themselves. */
tg_status tg_dist_check_same(tg_dist *d, const void *blob, size_t len, const char *what);
/* The batch each rank takes of a global batch: *local = global / size, or TG_ERR_ARG "global
 * batch G does not split over N ranks (G % N = r)" when it does not divide (or is < 1). Local,
 * and the same on every rank. */
tg_status tg_dist_local_batch(const tg_dist *d, int64_t global, int64_t *local);

/* ---- parameters and gradients --------------------------------------------------------- */

/* Copies rank 0's values of every tensor of sd to the other ranks, in place (each tensor's
 * version is bumped). The ranks' dicts must hold the same names with the same shapes, in the
 * same order: checked first (TG_ERR_ARG on every rank otherwise, nothing changed). */
tg_status tg_dist_broadcast_state_dict(tg_dist *d, tg_state_dict *sd);
/* Rank 0's parameters and buffers of m (BatchNorm's running statistics: everything
 * tg_module_state_dict holds) on every rank: the start of a run, and after rank 0 alone has
 * loaded a checkpoint. */
tg_status tg_dist_broadcast_params(tg_dist *d, tg_module *m);
/* Replaces the gradient of each of the n parameters by its mean over the ranks, in buckets of
 * at most the bucket size (contiguous copies, one MPI_Allreduce each). A parameter that has a
 * gradient on some ranks but not on others counts as a gradient of zeros where it has none
 * (and gets one there, as tg_tensor_set_grad); one that has none on any rank keeps none, so
 * an optimizer skips it on every rank alike. The n, and the parameters' total size, must agree
 * on every rank (TG_ERR_ARG on every rank otherwise). A gradient someone else retained is
 * replaced by a fresh one (as tg_tensor_set_grad does), never written into. One rank: no-op. */
tg_status tg_dist_allreduce_grads(tg_dist *d, tg_tensor *const *params, int64_t n);
/* Replaces the values of each of the n tensors by their mean over the ranks, bucketed as
 * above (versions bumped): losses for a log line, or BatchNorm's running statistics when the
 * ranks should keep the same ones (the mean of the running means is the running mean of the
 * global batch; the mean of the running variances leaves out the spread between the ranks'
 * batch means). The shapes must agree as above. */
tg_status tg_dist_allreduce_mean(tg_dist *d, tg_tensor *const *tensors, int64_t n);

/* Synchronised BatchNorm on (true) or off (false, the default): while on, every training-mode
 * batch norm of this process (tg_batch_norm, so every BatchNorm module) takes its statistics
 * over the global batch, the ranks' per-channel sums added up by MPI_Allreduce (two calls in
 * its forward, one in its backward: tg_batch_norm_set_reduce), so N ranks with B/N each
 * normalise, update the running statistics and differentiate as one process with batch B
 * (up to the rounding of sums taken in another order). Every rank must then run the same
 * batch norms in the same order, as data-parallel training does. Process-wide: it stays on
 * until turned off or tg_dist_finalize. With one rank it changes nothing. Local (the calls
 * it causes are collective). */
tg_status tg_dist_sync_batch_norm(tg_dist *d, bool on);

/* ---- data ----------------------------------------------------------------------------- */

/* The sharded loader: l is an ordinary tg_loader built with the *global* batch and the same
 * seed on every rank, so every rank draws the same shuffled order; each call takes the next
 * global batch and hands this rank rows [rank * B/N, (rank + 1) * B/N) of it as new
 * references (release both; labels may be NULL if not wanted). The ranks' slices of a batch
 * are disjoint and together are the batch, so over an epoch they are disjoint and cover what
 * one process with batch B would see, in the same order. The loader's state
 * (tg_loader_get_state) is the global one, the same on every rank: save and restore it as
 * without MPI, resuming with the same number of ranks. Local: no MPI call. TG_ERR_ARG when
 * B does not divide over the ranks. */
tg_status tg_dist_loader_next(const tg_dist *d, tg_loader *l, tg_tensor **images,
                              tg_tensor **labels);

#ifdef __cplusplus
}
#endif
#endif
