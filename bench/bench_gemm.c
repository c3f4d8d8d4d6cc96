/* bench_gemm: GFLOP/s of tapegrad's GEMM (tensor/gemm.c) in FP32 and in bf16 mode
 * (tg_set_matmul_precision) at the GAN's shapes, with bf16 mode's two kernels (AMX tiles where
 * the CPU has them, and VDPBF16PS: tg_gemm_amx), the modes interleaved round by round so that
 * all see the same load. Then, for the first shape (K = 1024), how far bf16 mode's result
 * is from FP32 mode's on N(0, 1) inputs.
 *
 *   bench_gemm [--threads T] [--rounds R] [--min-sec S]
 *
 * Each round times, for each mode, as many products as fill S seconds (default 0.2, at least
 * 2); a row gives the median over R rounds (default 7) of the per-product time, as GFLOP/s,
 * and the CPU time of the process per product (all threads). */
#include "internal.h"

#define BENCH_NAME "bench_gemm"
#include "bench_util.h"

#include <math.h>

typedef struct {
    const char *name;
    bool ta, tb;
    int64_t M, N, K;
} shape;

/* C[M, N] = op(A)[M, K] op(B)[K, N], stored as the library's callers store them. */
static const shape shapes[] = {
    {"G linear fwd x W^T", false, true, 128, 6272, 1024},
    {"G linear dx = dy W", false, false, 128, 1024, 6272},
    {"G linear dW = dy^T x", true, false, 6272, 1024, 128},
    {"D linear fwd x W^T", false, true, 128, 1024, 3200},
    {"winograd-like", false, false, 64, 4096, 128},
    {"lowering-like", false, false, 64, 3136, 1600},
};

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float *normal(int64_t n, tg_rng *rng)
{
    tg_tensor *t = tg_tensor_new(1, &n);
    if (!t || tg_tensor_normal_(t, rng, 0.0f, 1.0f) != TG_OK)
        die("inputs");
    float *m = malloc((size_t)n * sizeof(float));
    if (!m)
        die("malloc");
    memcpy(m, t->data, (size_t)n * sizeof(float));
    tg_tensor_release(t);
    return m;
}

static void product(const shape *s, const float *A, const float *B, float *C)
{
    tg_sgemm_avx512(s->ta, s->tb, s->M, s->N, s->K, 1.0f, A, s->ta ? s->M : s->K, B,
                    s->tb ? s->K : s->N, 0.0f, C, s->N);
}

/* Seconds (wall, CPU) per product, n products. */
static void timed(const shape *s, const float *A, const float *B, float *C, int n, double *wall,
                  double *cpu)
{
    double w0 = now(), c0 = cpu_now();
    for (int i = 0; i < n; i++)
        product(s, A, B, C);
    *wall = (now() - w0) / n;
    *cpu = (cpu_now() - c0) / n;
}

/* bf16 mode's C against FP32 mode's: the largest elementwise relative difference, the largest
 * difference relative to the largest |C|, and the normwise one. */
static void accuracy(const shape *s, const float *A, const float *B, float *C, const char *kernel)
{
    const int64_t n = s->M * s->N;
    float *ref = malloc((size_t)n * sizeof(float));
    if (!ref)
        die("malloc");
    tg_set_matmul_precision(TG_MATMUL_FP32);
    product(s, A, B, ref);
    tg_set_matmul_precision(TG_MATMUL_BF16);
    product(s, A, B, C);
    tg_set_matmul_precision(TG_MATMUL_FP32);
    double elem = 0.0, top = 0.0, diff = 0.0, d2 = 0.0, r2 = 0.0;
    for (int64_t e = 0; e < n; e++) {
        double d = fabs((double)C[e] - ref[e]);
        if (ref[e] != 0.0f)
            elem = fmax(elem, d / fabs(ref[e]));
        top = fmax(top, fabs(ref[e]));
        diff = fmax(diff, d);
        d2 += d * d;
        r2 += (double)ref[e] * ref[e];
    }
    printf("{\"accuracy\": \"%s\", \"kernel\": \"%s\", \"K\": %lld, \"max_elem_rel\": %.3g, "
           "\"max_diff_over_max\": "
           "%.3g, \"normwise_rel\": %.3g, \"bf16_active\": %s}\n",
           s->name, kernel, (long long)s->K, elem, diff / top, sqrt(d2 / r2),
           tg_isa_has_bf16() ? "true" : "false");
    free(ref);
}

int main(int argc, char **argv)
{
    int64_t threads = 1, rounds = 7;
    double min_sec = 0.2;
    for (int i = 1; i < argc; i += 2) {
        bool ok = i + 1 < argc;
        if (ok && !strcmp(argv[i], "--threads"))
            ok = tg_parse_int(argv[i + 1], 1, 1024, &threads) == TG_OK;
        else if (ok && !strcmp(argv[i], "--rounds"))
            ok = tg_parse_int(argv[i + 1], 1, 1000, &rounds) == TG_OK;
        else if (ok && !strcmp(argv[i], "--min-sec"))
            ok = tg_parse_real(argv[i + 1], 0.0, 100.0, &min_sec) == TG_OK;
        else
            ok = false;
        if (!ok) {
            fprintf(stderr, "usage: bench_gemm [--threads T] [--rounds R] [--min-sec S]\n");
            return 2;
        }
    }
    if (tg_set_num_threads((int)threads) != TG_OK)
        die("--threads");
    if (tg_set_matmul_precision(TG_MATMUL_BF16) != TG_OK)
        die("bf16");
    printf("{\"blas\": \"%s\", \"threads\": %d, \"bf16_active\": %s, \"amx\": %s}\n",
           tg_blas_info(), tg_get_num_threads(), tg_matmul_bf16_active() ? "true" : "false",
           tg_isa_amx_ready() ? "true" : "false");
    tg_set_matmul_precision(TG_MATMUL_FP32);
    tg_rng rng;
    tg_rng_seed(&rng, 17);
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const shape *s = &shapes[si];
        float *A = normal(s->M * s->K, &rng), *B = normal(s->K * s->N, &rng);
        float *C = malloc((size_t)(s->M * s->N) * sizeof(float));
        if (!C)
            die("malloc");
        if (si == 0) {
            accuracy(s, A, B, C, "amx");
            tg_gemm_amx = 0;
            accuracy(s, A, B, C, "dpbf16");
            tg_gemm_amx = 1;
        }
        const double flop = 2.0 * (double)s->M * (double)s->N * (double)s->K;
        /* Products per timing: enough for min_sec in FP32 (bf16 runs the same count). */
        double w, c;
        product(s, A, B, C);
        timed(s, A, B, C, 1, &w, &c);
        int n = (int)ceil(min_sec / w);
        n = n < 2 ? 2 : n;
        /* Modes: FP32, bf16 on AMX (VDPBF16PS where there is no AMX), bf16 on VDPBF16PS. */
        double wall[3][1000], cpu[3][1000];
        for (int r = 0; r < rounds; r++)
            for (int m = 0; m < 3; m++) {
                tg_set_matmul_precision(m ? TG_MATMUL_BF16 : TG_MATMUL_FP32);
                tg_gemm_amx = m == 1;
                product(s, A, B, C); /* warm the buffers of this mode */
                timed(s, A, B, C, n, &wall[m][r], &cpu[m][r]);
            }
        tg_set_matmul_precision(TG_MATMUL_FP32);
        tg_gemm_amx = 1;
        double w3[3], c3[3];
        for (int m = 0; m < 3; m++) {
            w3[m] = median(wall[m], (int)rounds);
            c3[m] = median(cpu[m], (int)rounds);
        }
        printf("{\"shape\": \"%s\", \"M\": %lld, \"N\": %lld, \"K\": %lld, \"threads\": %d, "
               "\"fp32_gflops\": %.1f, \"amx_gflops\": %.1f, \"dpbf16_gflops\": %.1f, "
               "\"amx_speedup\": %.2f, \"dpbf16_speedup\": %.2f, \"cpu_ms\": [%.3f, %.3f, %.3f]}\n",
               s->name, (long long)s->M, (long long)s->N, (long long)s->K, tg_get_num_threads(),
               flop / w3[0] * 1e-9, flop / w3[1] * 1e-9, flop / w3[2] * 1e-9, w3[0] / w3[1],
               w3[0] / w3[2], c3[0] * 1e3, c3[1] * 1e3, c3[2] * 1e3);
        fflush(stdout);
        free(A), free(B), free(C);
    }
    return 0;
}
