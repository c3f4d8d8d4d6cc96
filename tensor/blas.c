/* The one file that includes <cblas.h>: the sgemm wrapper and the thread count shared by
 * OpenMP and OpenBLAS. */
#include "internal.h"

#include <cblas.h>
#include <stdio.h>

#ifdef _OPENMP
#include <omp.h>
#endif

void tg_sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
              int64_t ldc)
{
#ifdef _OPENMP
    TG_ASSERT(!omp_in_parallel());
#endif
    if (M == 0 || N == 0)
        return;
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (blasint)M, (blasint)N, (blasint)K, alpha, A,
                (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
}

static int num_threads = 0; /* 0: not set yet, the OpenMP default holds */

tg_status tg_set_num_threads(int n)
{
    if (n < 1)
        return tg_set_error(TG_ERR_ARG, "tg_set_num_threads: %d threads; need at least 1", n);
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
    openblas_set_num_threads(n);
    num_threads = n;
    return TG_OK;
}

int tg_get_num_threads(void)
{
    if (num_threads)
        return num_threads;
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
             tg_sgemm_avx512_active() ? "; conv GEMMs: tapegrad's AVX-512 kernels" : "",
             TG_ISA_MULTI ? tg_isa_name(tg_isa()) : "one copy, as compiled");
    return info;
}
