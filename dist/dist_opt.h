/* tapegrad — dist.h for programs that run with or without MPI (mnist_classifier, mnist_gan).
 *
 * Such a program depends on tapegrad_dist_opt_dep (dist/meson.build): where meson found MPI,
 * that defines TG_WITH_DIST and links libtapegrad_dist; elsewhere the functions below stand for
 * a job of one process. Either way MPI only starts when a launcher started the process
 * (mpirun, mpiexec, srun with PMIx): run on its own, the program makes no MPI call at all, so
 * it computes, prints and writes exactly what it did before it knew of MPI (and leaves no
 * MPI allocations for a sanitizer to report). Every dp_ function takes the context dp_start
 * gave, NULL for one process, and then does what one process would: agreeing returns the
 * local status, the collectives change nothing, the loader hands out the whole batch. */
#ifndef TAPEGRAD_DIST_OPT_H
#define TAPEGRAD_DIST_OPT_H

#include "tapegrad.h"

#include <stdlib.h>

#ifdef TG_WITH_DIST
#include "dist.h"
#else
typedef struct tg_dist tg_dist; /* never made: dp_start gives NULL */
#endif

/* The launcher's word that this process is one of several ranks: Open MPI's mpirun, MPICH's
 * Hydra (PMI), or a PMIx launcher. */
static inline bool dp_launched(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i]))
            return true;
    return false;
}

/* Starts MPI when a launcher started the process (tg_dist_init); *d stays NULL otherwise. A
 * program built without MPI but launched as one of several ranks refuses (TG_ERR_STATE): each
 * rank would train alone on the whole data and write the same files. */
static inline tg_status dp_start(int *argc, char ***argv, tg_dist **d)
{
    *d = NULL;
#ifdef TG_WITH_DIST
    return dp_launched() ? tg_dist_init(argc, argv, d) : TG_OK;
#else
    (void)argc, (void)argv;
    const char *n = getenv("OMPI_COMM_WORLD_SIZE");
    if (!n)
        n = getenv("PMI_SIZE");
    if (n && atoi(n) > 1)
        return tg_set_error(TG_ERR_STATE,
                            "dp_start: launched as one of %s ranks, but built without MPI "
                            "(install libopenmpi-dev and reconfigure: meson setup --reconfigure)",
                            n);
    return TG_OK;
#endif
}

#ifdef TG_WITH_DIST
#define DP_CALL(d, call, single) ((d) ? (call) : (single))
#else
#define DP_CALL(d, call, single) ((void)(d), (single))
/* Without MPI the functions below ignore the arguments only MPI would use. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#endif

static inline int dp_rank(const tg_dist *d)
{
    return DP_CALL(d, tg_dist_rank(d), 0);
}
static inline int dp_size(const tg_dist *d)
{
    return DP_CALL(d, tg_dist_size(d), 1);
}
static inline tg_status dp_finish(tg_dist *d)
{
    return DP_CALL(d, tg_dist_finalize(d), TG_OK);
}
static inline tg_status dp_agree(tg_dist *d, tg_status local)
{
    return DP_CALL(d, tg_dist_agree(d, local), local);
}
static inline tg_status dp_check_same(tg_dist *d, const void *blob, size_t len, const char *what)
{
    return DP_CALL(d, tg_dist_check_same(d, blob, len, what), TG_OK);
}
/* The global batch's share of this rank; one process: all of it. */
static inline tg_status dp_local_batch(const tg_dist *d, int64_t global, int64_t *local)
{
    return DP_CALL(d, tg_dist_local_batch(d, global, local), (*local = global, TG_OK));
}
static inline tg_status dp_broadcast_params(tg_dist *d, tg_module *m)
{
    return DP_CALL(d, tg_dist_broadcast_params(d, m), TG_OK);
}
static inline tg_status dp_allreduce_grads(tg_dist *d, tg_tensor *const *params, int64_t n)
{
    return DP_CALL(d, tg_dist_allreduce_grads(d, params, n), TG_OK);
}
static inline tg_status dp_allreduce_mean(tg_dist *d, tg_tensor *const *tensors, int64_t n)
{
    return DP_CALL(d, tg_dist_allreduce_mean(d, tensors, n), TG_OK);
}
static inline tg_status dp_loader_next(const tg_dist *d, tg_loader *l, tg_tensor **images,
                                       tg_tensor **labels)
{
    return DP_CALL(d, tg_dist_loader_next(d, l, images, labels), tg_loader_next(l, images, labels));
}
/* Synchronised batch norm on or off (tg_dist_sync_batch_norm); one process: nothing to do. */
static inline tg_status dp_sync_batch_norm(tg_dist *d, bool on)
{
    return DP_CALL(d, tg_dist_sync_batch_norm(d, on), TG_OK);
}

#ifndef TG_WITH_DIST
#pragma GCC diagnostic pop
#endif

/* The ranks' verdict on a stretch of work (reading the input, setting up) during which each
 * rank kept its failure message rather than print it, so that rank 0 can print whichever
 * rank's: code is this rank's exit status so far (0, 2 for bad input, else 1), kept its
 * message. Returns the agreed exit status, the lowest failing rank's; when it is not 0,
 * tg_last_error() holds the line to print (one process: kept itself). */
static inline int dp_agree_exit(tg_dist *d, int code, const char *kept)
{
    tg_status st =
        code == 0 ? TG_OK : tg_set_error(code == 2 ? TG_ERR_ARG : TG_ERR_STATE, "%s", kept);
    st = dp_agree(d, st);
    return st == TG_OK ? 0 : st == TG_ERR_ARG ? 2 : 1;
}

/* The gradients of every parameter of m averaged over the ranks (the step before an
 * optimizer's). */
static inline tg_status dp_allreduce_module_grads(tg_dist *d, tg_module *m)
{
    if (!d)
        return TG_OK;
    int64_t n = 0;
    tg_tensor **p = tg_module_parameters(m, &n);
    tg_status st = p || n == 0 ? TG_OK : tg_last_status();
    st = dp_agree(d, st); /* a rank that could not list them must not leave the others waiting */
    if (st == TG_OK)
        st = dp_allreduce_grads(d, p, n);
    free(p);
    return st;
}

#endif
