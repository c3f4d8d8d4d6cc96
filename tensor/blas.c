/* The one file that includes <cblas.h>: the sgemm wrapper and the thread count shared by
 * OpenMP and OpenBLAS. */
#include "internal.h"

#include <cblas.h>
#include <sched.h>
#include <stdio.h>
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* The thread count of the whole process (tg_set_num_threads), 0 until it is set. An atomic
 * read by every parallel region (TG_OMP_NUM_THREADS): OpenMP's own count is an attribute of
 * each thread, so a count set with omp_set_num_threads on one thread never reached a pthread
 * started later (issue 19). */
static _Atomic int num_threads = 0;

/* Called from inside a user's OpenMP parallel region (every GEMM of a CPU without AVX-512
 * comes here), the product runs on the calling thread alone: OpenBLAS's OpenMP flavour does
 * exactly that by itself (its thread count is 1 inside a parallel region), and a team of our
 * own nested in the user's would only compete with it for the same cores. The pthreads flavour
 * hands the call to its own pool, which serialises concurrent callers: also correct.
 * Outside a region the OpenMP flavour takes its count from the calling thread's OpenMP
 * default, which a thread started after tg_set_num_threads does not share: the process-wide
 * count is lent to this thread for the call and its own default restored after. */
void tg_sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
              int64_t ldc)
{
    if (M == 0 || N == 0)
        return;
#ifdef _OPENMP
    const int own = omp_get_max_threads(), want = tg_get_num_threads();
    const bool lend = own != want && !omp_in_parallel();
    if (lend)
        omp_set_num_threads(want);
#endif
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (blasint)M, (blasint)N, (blasint)K, alpha, A,
                (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
#ifdef _OPENMP
    if (lend)
        omp_set_num_threads(own);
#endif
}

int tg_get_num_cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        return CPU_COUNT(&set);
    /* More than CPU_SETSIZE (1024) CPUs, or no affinity call: the online count. */
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    return online > 0 ? (int)online : 1;
}

/* Refused above the CPU count rather than capped: the caller asked for something this machine
 * cannot give and learns it here, not from a count that differs from the one it set. */
tg_status tg_set_num_threads(int n)
{
    if (n < 1)
        return tg_set_error(TG_ERR_ARG, "tg_set_num_threads: %d threads; need at least 1", n);
    const int cpus = tg_get_num_cpus();
    if (n > cpus)
        return tg_set_error(TG_ERR_ARG,
                            "tg_set_num_threads: %d threads, but this process can run on only "
                            "%d CPU%s (%ld online)",
                            n, cpus, cpus == 1 ? "" : "s", sysconf(_SC_NPROCESSORS_ONLN));
    /* OpenBLAS's pthreads flavour keeps one process-wide count; its OpenMP flavour follows the
     * calling thread's OpenMP default (see tg_sgemm) and sets this thread's as a side effect. */
    openblas_set_num_threads(n);
    atomic_store(&num_threads, n);
    return TG_OK;
}

int tg_get_num_threads(void)
{
    const int n = atomic_load_explicit(&num_threads, memory_order_relaxed);
    if (n)
        return n;
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

const char *tg_blas_info(void)
{
    static char info[256];
    static const char *flavour[] = {"sequential", "pthreads", "openmp"};
    int par = openblas_get_parallel();
    const char *cfg = openblas_get_config();
    const char *version = "OpenBLAS";
    char ver[32] = "";
    /* the config string opens with "OpenBLAS 0.3.21 ..." */
    if (cfg && sscanf(cfg, "OpenBLAS %31s", ver) == 1)
        version = ver;
    /* The convolutions' GEMMs bypass OpenBLAS where tensor/gemm.c's kernels run: say so, or
     * a benchmark header naming OpenBLAS's AVX2 kernels would misdescribe them. Then which
     * copy of tapegrad's own kernels runs (isa.h), or that there is one (-Dnative=true). */
    snprintf(info, sizeof info, "OpenBLAS %s, %s threads, %s kernels%s; tapegrad kernels: %s",
             version, par >= 0 && par <= 2 ? flavour[par] : "unknown", openblas_get_corename(),
             !tg_sgemm_avx512_active() ? ""
             : tg_matmul_bf16_active() ? "; conv GEMMs: tapegrad's AVX-512 kernels, bf16 inputs"
                                       : "; conv GEMMs: tapegrad's AVX-512 kernels",
             TG_ISA_MULTI ? tg_isa_name(tg_isa()) : "one copy, as compiled");
    return info;
}
