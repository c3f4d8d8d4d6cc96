/* The bf16 GEMM mode (tg_set_matmul_precision, tensor/gemm.c): inputs rounded to bfloat16,
 * products accumulated in FP32.
 *
 * The reference rounds the inputs itself (bf16_round: round to nearest even, written here from
 * the format, not from the library) and sums their products in double. A product of two bf16
 * values is exact in FP32 (8 + 8 significant bits), so the kernel's only errors are its FP32
 * additions: with u = 2^-24 and n roundings on any element's path (K additions, and per depth
 * block of 256 the alpha scaling and the beta update), |got - ref| <= gamma_n (|alpha| sum
 * |a b| + |beta c|) with gamma_n = n u / (1 - n u), plus 2^-126 per addition for VDPBF16PS's
 * flushing of denormal results. That bound is rigorous and is what the tests check; unrounded
 * inputs miss it by far (test_random_products checks that they do). With K = 1 the result is
 * one product, so it must equal the reference exactly: that is where ties, infinities, NaN and
 * overflow are checked.
 *
 * Each kernel test runs both bf16 kernels: AMX tiles (where the CPU has them) and VDPBF16PS
 * (tg_gemm_amx = 0). Without AVX512_BF16 (or with TG_ISA=avx2: meson runs this program a
 * second time so) the kernel tests skip with a message, and test_fallback checks that bf16
 * mode computes exactly what FP32 mode does. The bound also holds for TDPBF16PS (AMX), which
 * like VDPBF16PS adds exact bf16 products in FP32 with denormals flushed. */
#include "common.h"
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>

#define BF16_KC 256 /* gemm.c's depth block: the beta update happens once per block */

/* x rounded to bfloat16 (returned as the float it stands for), as VCVTNE2PS2BF16 does: round
 * to nearest, ties to even; NaN stays NaN (quieted); a denormal input counts as zero (the
 * instruction ignores MXCSR and treats denormals as zero), keeping its sign. */
static float bf16_round(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        u |= 0x00400000u;
    else if ((u & 0x7f800000u) == 0)
        u &= 0x80000000u;
    else
        u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    float r;
    memcpy(&r, &u, sizeof r);
    return r;
}

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static bool skip_without_bf16(void)
{
    if (tg_isa_has_bf16())
        return false;
    printf("SKIP: this CPU lacks AVX512_BF16, or TG_ISA asks for less than avx512 (level %s)\n",
           tg_isa_name(tg_isa()));
    return true;
}

/* body once for each bf16 kernel of this CPU: AMX tiles (where this process may use them)
 * and VDPBF16PS (tg_gemm_amx = 0), in bf16 mode. */
static void each_kernel(void (*body)(void))
{
    if (skip_without_bf16())
        return;
    assert_int_equal(tg_set_matmul_precision(TG_MATMUL_BF16), TG_OK);
    for (int amx = 1; amx >= 0; amx--) {
        if (amx && !tg_isa_amx_ready()) {
            printf("no AMX here: VDPBF16PS only\n");
            continue;
        }
        tg_gemm_amx = amx;
        print_message("%s kernel\n", amx ? "AMX" : "VDPBF16PS");
        body();
    }
    tg_gemm_amx = 1;
    assert_int_equal(tg_set_matmul_precision(TG_MATMUL_FP32), TG_OK);
}

/* A [M, K] (or its transpose) and the like: storage of rows x cols with leading dimension ld. */
static float *matrix(int64_t rows, int64_t ld, tg_rng *rng)
{
    int64_t n = rows * ld;
    float *m = malloc((size_t)n * sizeof(float));
    assert_non_null(m);
    int64_t shape = n;
    tg_tensor *t = tg_tensor_new(1, &shape);
    assert_int_equal(tg_tensor_normal_(t, rng, 0.0f, 1.0f), TG_OK);
    memcpy(m, t->data, (size_t)n * sizeof(float));
    tg_tensor_release(t);
    return m;
}

typedef struct {
    bool ta, tb;
    int64_t M, N, K, lda, ldb, ldc;
    float alpha, beta;
    const float *A, *B, *C0; /* C0: C before the product */
} product;

static double elem_a(const product *p, int64_t i, int64_t k, bool round)
{
    float v = p->ta ? p->A[k * p->lda + i] : p->A[i * p->lda + k];
    return round ? bf16_round(v) : v;
}

static double elem_b(const product *p, int64_t k, int64_t j, bool round)
{
    float v = p->tb ? p->B[j * p->ldb + k] : p->B[k * p->ldb + j];
    return round ? bf16_round(v) : v;
}

/* The worst |got - ref| / bound over C, with ref from bf16-rounded inputs (round) or from the
 * inputs as given; the bound is the one in the header. */
static double worst_ratio(const product *p, const float *got, bool round)
{
    const double u = 0x1p-24;
    const int64_t blocks = (p->K + BF16_KC - 1) / BF16_KC;
    const double n = (double)(p->K + 2 * blocks + 1);
    const double gamma = n * u / (1.0 - n * u);
    double worst = 0.0;
    for (int64_t i = 0; i < p->M; i++)
        for (int64_t j = 0; j < p->N; j++) {
            double s = 0.0, abs_s = 0.0;
            for (int64_t k = 0; k < p->K; k++) {
                double t = elem_a(p, i, k, round) * elem_b(p, k, j, round);
                s += t;
                abs_s += fabs(t);
            }
            double c0 = p->beta != 0.0f ? p->C0[i * p->ldc + j] : 0.0;
            double ref = p->alpha * s + p->beta * c0;
            double bound = gamma * (fabs(p->alpha) * abs_s + fabs(p->beta * c0)) +
                           (double)(p->K + 2) * 0x1p-126;
            double err = fabs((double)got[i * p->ldc + j] - ref);
            if (!(err <= bound * 1e12)) /* NaN, or beyond any use */
                fail_msg("M %lld N %lld K %lld: C[%lld][%lld] = %.9g, reference %.9g",
                         (long long)p->M, (long long)p->N, (long long)p->K, (long long)i,
                         (long long)j, got[i * p->ldc + j], ref);
            worst = fmax(worst, err / bound);
        }
    return worst;
}

/* Runs p through tg_sgemm_avx512 into a new C (C0 copied, or NaN where beta is 0, which must
 * not be read). */
static float *run(const product *p)
{
    size_t n = (size_t)(p->M * p->ldc);
    float *C = malloc(n * sizeof(float));
    assert_non_null(C);
    for (size_t e = 0; e < n; e++)
        C[e] = p->beta != 0.0f ? p->C0[e] : NAN;
    tg_sgemm_avx512(p->ta, p->tb, p->M, p->N, p->K, p->alpha, p->A, p->lda, p->B, p->ldb, p->beta,
                    C, p->ldc);
    return C;
}

/* Random N(0, 1) products of many shapes (odd K, K = 1, K across depth blocks, edges of M and
 * N off the 8 x 32 tile, both transposes, padded leading dimensions, alpha and beta): within
 * the bound of bf16-rounded inputs, and far outside it of the inputs as given. */
static void random_products(void)
{
    const int64_t sizes[][3] = {{2, 2, 1},      {8, 32, 1},    {7, 5, 3},      {9, 33, 2},
                                {8, 32, 16},    {9, 33, 257},  {64, 196, 300}, {130, 70, 45},
                                {13, 100, 513}, {40, 64, 530}, {17, 47, 255}};
    const float ab[][2] = {{1.0f, 0.0f}, {0.5f, 1.0f}, {-1.5f, 0.3f}};
    tg_rng rng;
    tg_rng_seed(&rng, 71);
    double worst = 0.0, worst_unrounded = 0.0;
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        for (int t = 0; t < 4; t++) {
            product p = {
                .ta = t & 1, .tb = t >> 1, .M = sizes[s][0], .N = sizes[s][1], .K = sizes[s][2]};
            int64_t pad = (int64_t)s % 3;
            p.lda = (p.ta ? p.M : p.K) + pad;
            p.ldb = (p.tb ? p.K : p.N) + pad;
            p.ldc = p.N + pad;
            p.alpha = ab[(s + (size_t)t) % 3][0];
            p.beta = ab[(s + (size_t)t) % 3][1];
            float *A = matrix(p.ta ? p.K : p.M, p.lda, &rng);
            float *B = matrix(p.tb ? p.N : p.K, p.ldb, &rng);
            float *C0 = matrix(p.M, p.ldc, &rng);
            p.A = A, p.B = B, p.C0 = C0;
            float *C = run(&p);
            double r = worst_ratio(&p, C, true);
            if (!(r <= 1.0))
                fail_msg("%c%c M %lld N %lld K %lld: error %.3g times the bound", p.ta ? 'T' : 'N',
                         p.tb ? 'T' : 'N', (long long)p.M, (long long)p.N, (long long)p.K, r);
            worst = fmax(worst, r);
            worst_unrounded = fmax(worst_unrounded, worst_ratio(&p, C, false));
            free(A), free(B), free(C0), free(C);
        }
    print_message("bf16 products: worst error %.3g of the bound; against unrounded inputs %.3g\n",
                  worst, worst_unrounded);
    /* The inputs were rounded: FP32 inputs would have stayed within the bound. */
    assert_true(worst_unrounded > 10.0);
}

static void test_random_products(void **state)
{
    (void)state;
    each_kernel(random_products);
}

/* K = 1: each element is one product of two bf16 values, exact in FP32, so it must equal the
 * reference's bit for bit: ties both ways, values just above and below them, FLT_MAX rounding
 * up to infinity, infinities, NaN, a denormal (counted as zero). */
static void rounding_exact(void)
{
    const uint32_t special[] = {
        0x3f808000u, /* 1 + 2^-8: a tie, bit 16 even: down to 1 */
        0x3f818000u, /* a tie, bit 16 odd: up */
        0xbf818000u, /* its negative */
        0x3f808001u, /* just above a tie: up */
        0x3f807fffu, /* just below: down */
        0x7f7fffffu, /* FLT_MAX: up to infinity */
        0x7f7f7fffu, /* down to the largest bf16 */
        0x7f800000u, /* infinity */
        0xff800000u, /* -infinity */
        0x7fc00000u, /* NaN */
        0x7f800001u, /* signalling NaN with a low payload: NaN, not infinity */
        0x00400000u, /* denormal: zero */
        0x71000000u, /* 2^99, times the denormal would be 2^-28 without the flush */
        0x40490fdbu, /* pi */
        0xc2f6e979u, /* -123.456 */
        0x00000000u, 0x80000000u, 0x3e800000u,
    };
    const int S = (int)(sizeof special / sizeof special[0]);
    const int64_t M = 19, N = 37; /* edges of both tile dimensions */
    float a[19], b[37];
    for (int64_t i = 0; i < M; i++)
        a[i] = from_bits(special[i % S]);
    for (int64_t j = 0; j < N; j++)
        b[j] = from_bits(special[(j * 5 + 3) % S]);
    for (int t = 0; t < 4; t++) {
        bool ta = t & 1, tb = t >> 1;
        /* K = 1: A is a column (lda 1) or, transposed, a row (lda M); likewise B. */
        float C[19 * 37];
        for (int e = 0; e < M * N; e++)
            C[e] = NAN;
        tg_sgemm_avx512(ta, tb, M, N, 1, 1.0f, a, ta ? M : 1, b, tb ? 1 : N, 0.0f, C, N);
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                float want = bf16_round(a[i]) * bf16_round(b[j]), got = C[i * N + j];
                if (isnan(want) ? !isnan(got) : got != want)
                    fail_msg("%c%c: %a * %a (bits %08x * %08x) gave %a, want %a", ta ? 'T' : 'N',
                             tb ? 'T' : 'N', (double)a[i], (double)b[j], special[i % S],
                             special[(j * 5 + 3) % S], (double)got, (double)want);
            }
    }
}

static void test_rounding_exact(void **state)
{
    (void)state;
    each_kernel(rounding_exact);
}

/* The threads split C's columns in whole panels: 1 and 2 threads give the same bits. */
static void threads_same_bits(void)
{
    if (tg_get_num_cpus() < 2) {
        printf("SKIP: one CPU\n");
        return;
    }
    const int64_t M = 64, N = 4096, K = 128;
    tg_rng rng;
    tg_rng_seed(&rng, 72);
    float *A = matrix(M, K, &rng), *B = matrix(K, N, &rng);
    float *C[2];
    const int threads0 = tg_get_num_threads();
    for (int t = 0; t < 2; t++) {
        assert_int_equal(tg_set_num_threads(t + 1), TG_OK);
        assert_int_equal(tg_sgemm_avx512_threads(M, N, K), t + 1);
        C[t] = malloc((size_t)(M * N) * sizeof(float));
        assert_non_null(C[t]);
        tg_sgemm_avx512(false, false, M, N, K, 1.0f, A, K, B, N, 0.0f, C[t], N);
    }
    assert_memory_equal(C[0], C[1], (size_t)(M * N) * sizeof(float));
    assert_int_equal(tg_set_num_threads(threads0), TG_OK);
    free(A), free(B), free(C[0]), free(C[1]);
}

static void test_threads_same_bits(void **state)
{
    (void)state;
    each_kernel(threads_same_bits);
}

/* ---- the convolutions' packers (tg_sgemm_avx512_packb) ---------------------------------- */

enum { CN = 2, CI = 16, CH = 14, CO = 32, KS = 5, PAD = 2 };

static float *copy_of(const tg_tensor *t)
{
    float *c = malloc((size_t)t->numel * sizeof(float));
    assert_non_null(c);
    memcpy(c, t->data, (size_t)t->numel * sizeof(float));
    return c;
}

/* y, dx and dw of a 5 x 5 convolution (stride 1, padding 2; 2 images, so no Winograd) with the
 * given output gradient, in the precision set now. out[0..2] get copies. */
static void conv_run(tg_tensor *x, tg_tensor *w, tg_tensor *bias, tg_tensor *dy, float *out[3])
{
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_conv2d(x, w, bias, 1, PAD, 1);
    assert_non_null(y);
    assert_int_equal(tg_backward_grad(y, dy), TG_OK);
    out[0] = copy_of(y);
    out[1] = copy_of(x->grad);
    out[2] = copy_of(w->grad);
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_tensor_zero_grad(x);
    tg_tensor_zero_grad(w);
    tg_tensor_zero_grad(bias);
}

/* got against sum_terms in double: err <= gamma_(terms + 16) sum |terms| (+ |extra|). */
static double conv_check(const char *what, double got, double s, double abs_s, int terms)
{
    const double n = terms + 16.0, gamma = n * 0x1p-24 / (1.0 - n * 0x1p-24);
    double bound = gamma * abs_s + (double)terms * 0x1p-126;
    double r = fabs(got - s) / bound;
    if (!(r <= 1.0))
        fail_msg("%s = %.9g, bf16 reference %.9g (error %.3g times the bound)", what, got, s, r);
    return r;
}

/* The three GEMMs of conv2d pack op(B) themselves (forward and data gradient from the image or
 * the output gradient, weight gradient from the image): in bf16 mode they match a direct
 * convolution of the bf16-rounded x and w (dy holds small integers, exact in bf16), and differ
 * from FP32 mode. */
static void conv_packers(void)
{
    const int winograd0 = tg_conv_winograd;
    tg_conv_winograd = 0;
    tg_rng rng;
    tg_rng_seed(&rng, 73);
    const int64_t xs[4] = {CN, CI, CH, CH}, ws[4] = {CO, CI, KS, KS}, bs[1] = {CO};
    const int64_t ys[4] = {CN, CO, CH, CH};
    tg_tensor *x = tg_tensor_new(4, xs), *w = tg_tensor_new(4, ws), *bias = tg_tensor_new(1, bs);
    tg_tensor *dy = tg_tensor_new(4, ys);
    tg_tensor_normal_(x, &rng, 0.0f, 1.0f);
    tg_tensor_normal_(w, &rng, 0.0f, 0.1f);
    tg_tensor_normal_(bias, &rng, 0.0f, 1.0f);
    for (int64_t e = 0; e < dy->numel; e++)
        dy->data[e] = (float)((e * 7) % 5 - 2);
    tg_tensor_set_requires_grad(x, true);
    tg_tensor_set_requires_grad(w, true);
    tg_tensor_set_requires_grad(bias, true);
    float *fp32[3], *bf[3];
    assert_int_equal(tg_set_matmul_precision(TG_MATMUL_FP32), TG_OK);
    conv_run(x, w, bias, dy, fp32);
    assert_int_equal(tg_set_matmul_precision(TG_MATMUL_BF16), TG_OK);
    conv_run(x, w, bias, dy, bf);

    /* rx, rw: the rounded inputs; the padding read as zeros. */
#define RX(n, c, h, v)                                                                             \
    ((h) < 0 || (h) >= CH || (v) < 0 || (v) >= CH                                                  \
         ? 0.0                                                                                     \
         : (double)bf16_round(x->data[(((n)*CI + (c)) * CH + (h)) * CH + (v)]))
#define RW(o, c, i, j) ((double)bf16_round(w->data[(((o)*CI + (c)) * KS + (i)) * KS + (j)]))
#define DY(n, o, h, v) ((double)dy->data[(((n)*CO + (o)) * CH + (h)) * CH + (v)])
    double worst = 0.0;
    bool differs[3] = {false, false, false};
    char what[64];
    for (int n = 0; n < CN; n++)
        for (int o = 0; o < CO; o++)
            for (int h = 0; h < CH; h++)
                for (int v = 0; v < CH; v++) {
                    double s = bias->data[o], abs_s = fabs(s);
                    for (int c = 0; c < CI; c++)
                        for (int i = 0; i < KS; i++)
                            for (int j = 0; j < KS; j++) {
                                double t = RW(o, c, i, j) * RX(n, c, h + i - PAD, v + j - PAD);
                                s += t, abs_s += fabs(t);
                            }
                    int64_t e = ((n * CO + o) * CH + h) * CH + v;
                    snprintf(what, sizeof what, "y[%lld]", (long long)e);
                    worst = fmax(worst, conv_check(what, bf[0][e], s, abs_s, CI * KS * KS + 1));
                    differs[0] |= bf[0][e] != fp32[0][e];
                }
    for (int n = 0; n < CN; n++)
        for (int c = 0; c < CI; c++)
            for (int h = 0; h < CH; h++)
                for (int v = 0; v < CH; v++) {
                    double s = 0.0, abs_s = 0.0;
                    for (int o = 0; o < CO; o++)
                        for (int i = 0; i < KS; i++)
                            for (int j = 0; j < KS; j++) {
                                int yh = h - i + PAD, yv = v - j + PAD;
                                if (yh < 0 || yh >= CH || yv < 0 || yv >= CH)
                                    continue;
                                double t = RW(o, c, i, j) * DY(n, o, yh, yv);
                                s += t, abs_s += fabs(t);
                            }
                    int64_t e = ((n * CI + c) * CH + h) * CH + v;
                    snprintf(what, sizeof what, "dx[%lld]", (long long)e);
                    worst = fmax(worst, conv_check(what, bf[1][e], s, abs_s, CO * KS * KS));
                    differs[1] |= bf[1][e] != fp32[1][e];
                }
    for (int o = 0; o < CO; o++)
        for (int c = 0; c < CI; c++)
            for (int i = 0; i < KS; i++)
                for (int j = 0; j < KS; j++) {
                    double s = 0.0, abs_s = 0.0;
                    for (int n = 0; n < CN; n++)
                        for (int h = 0; h < CH; h++)
                            for (int v = 0; v < CH; v++) {
                                double t = DY(n, o, h, v) * RX(n, c, h + i - PAD, v + j - PAD);
                                s += t, abs_s += fabs(t);
                            }
                    int64_t e = ((o * CI + c) * KS + i) * KS + j;
                    snprintf(what, sizeof what, "dw[%lld]", (long long)e);
                    worst = fmax(worst, conv_check(what, bf[2][e], s, abs_s, CN * CH * CH));
                    differs[2] |= bf[2][e] != fp32[2][e];
                }
#undef RX
#undef RW
#undef DY
    print_message("conv2d in bf16: worst error %.3g of the bound\n", worst);
    /* The bf16 kernels ran for all three (dx: w is rounded, dy exact; dw: x is rounded). */
    assert_true(differs[0] && differs[1] && differs[2]);
    for (int k = 0; k < 3; k++)
        free(fp32[k]), free(bf[k]);
    tg_tensor_release(x), tg_tensor_release(w), tg_tensor_release(bias), tg_tensor_release(dy);
    tg_conv_winograd = winograd0;
}

static void test_conv_packers(void **state)
{
    (void)state;
    each_kernel(conv_packers);
}

/* ---- the switch ---------------------------------------------------------------------------- */

static void test_setter(void **state)
{
    (void)state;
    assert_int_equal(tg_get_matmul_precision(), TG_MATMUL_FP32);
    assert_false(tg_matmul_bf16_active());
    assert_int_equal(tg_set_matmul_precision((tg_matmul_precision)7), TG_ERR_ARG);
    assert_error_contains("tg_set_matmul_precision: precision 7");
    assert_int_equal(tg_get_matmul_precision(), TG_MATMUL_FP32);
    assert_int_equal(tg_set_matmul_precision(TG_MATMUL_BF16), TG_OK);
    assert_int_equal(tg_set_matmul_precision((tg_matmul_precision)-1), TG_ERR_ARG);
    assert_error_contains("precision -1");
    assert_int_equal(tg_get_matmul_precision(), TG_MATMUL_BF16);
    assert_int_equal(tg_matmul_bf16_active(), tg_isa_has_bf16());
    assert_int_equal(strstr(tg_blas_info(), "bf16") != NULL, tg_isa_has_bf16());
    assert_int_equal(tg_set_matmul_precision(TG_MATMUL_FP32), TG_OK);
    assert_false(tg_matmul_bf16_active());
    assert_null(strstr(tg_blas_info(), "bf16"));
}

/* bf16 mode without the CPU feature (or TG_ISA=avx2) computes what FP32 mode computes, bit for
 * bit; with it, something else. FP32 mode after bf16 mode gives the first bits again. */
static void test_fallback(void **state)
{
    (void)state;
    const char *isa = getenv("TG_ISA");
    if (isa && !strcmp(isa, "avx2"))
        assert_false(tg_isa_has_bf16());
    const int64_t M = 40, N = 70, K = 99;
    tg_rng rng;
    tg_rng_seed(&rng, 74);
    float *A = matrix(M, K, &rng), *B = matrix(K, N, &rng);
    float *C[3];
    const tg_matmul_precision mode[3] = {TG_MATMUL_FP32, TG_MATMUL_BF16, TG_MATMUL_FP32};
    for (int t = 0; t < 3; t++) {
        assert_int_equal(tg_set_matmul_precision(mode[t]), TG_OK);
        C[t] = malloc((size_t)(M * N) * sizeof(float));
        assert_non_null(C[t]);
        tg_sgemm_avx512(false, true, M, N, K, 1.0f, A, K, B, K, 0.0f, C[t], N);
    }
    const size_t bytes = (size_t)(M * N) * sizeof(float);
    assert_memory_equal(C[0], C[2], bytes);
    if (tg_isa_has_bf16())
        assert_memory_not_equal(C[0], C[1], bytes);
    else
        assert_memory_equal(C[0], C[1], bytes);
    print_message("bf16 %s on this run (tapegrad kernels: %s)\n",
                  tg_isa_has_bf16() ? "available" : "unavailable: FP32 fallback",
                  tg_isa_name(tg_isa()));
    free(A), free(B), free(C[0]), free(C[1]), free(C[2]);
}

/* ---- operands in the kernels' layouts (tg_sgemm_avx512_ops) ------------------------------- */

/* X [R, N] (rows of ld) in panels, as internal.h lays them out (written here from that text,
 * not with tg_gemm_packed_b_at): depth blocks of 256 rows, panels of 32 columns, zeros past N
 * (NaN in the test's own padding would show up where a kernel read it). */
static float *to_panels(const float *X, int64_t R, int64_t N, int64_t ld)
{
    const int64_t Np = (N + 31) / 32 * 32;
    float *P = tg_alloc_zeroed((size_t)(Np * R) * sizeof(float));
    assert_non_null(P);
    for (int64_t r = 0; r < R; r++)
        for (int64_t j = 0; j < N; j++) {
            const int64_t p0 = r / 256 * 256, kc = R - p0 < 256 ? R - p0 : 256;
            P[p0 * Np + j / 32 * 32 * kc + (r - p0) * 32 + j % 32] = X[r * ld + j];
        }
    return P;
}

/* Every form of operand against tg_sgemm_avx512 on the stored ones, bit for bit: A packed
 * whole (both transposes), A from panels, B in panels, B stored (both transposes), with the
 * caller's buffer and without, on 1 and 2 threads; M off the 8-row panels, N off the 32-column
 * ones, K across depth blocks and off 16. */
static void operands_same_bits(void)
{
    static const int64_t shapes[][3] = {{37, 80, 300}, {70, 48, 520}, {64, 144, 36}};
    const int threads0 = tg_get_num_threads();
    float *buf = tg_alloc((size_t)tg_gemm_buffer_floats() * sizeof(float));
    assert_non_null(buf);
    tg_rng rng;
    tg_rng_seed(&rng, 75);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int64_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        float *A = matrix(M, K, &rng), *At = matrix(K, M, &rng), *B = matrix(K, N, &rng),
              *Bt = matrix(N, K, &rng), *C0 = matrix(M, N, &rng);
        float *Ap = tg_alloc((size_t)tg_gemm_packed_a_floats(M, K) * sizeof(float)),
              *Atp = tg_alloc((size_t)tg_gemm_packed_a_floats(M, K) * sizeof(float));
        assert_true(Ap && Atp);
        assert_true(tg_gemm_pack_a(false, M, K, A, K, Ap));
        assert_true(tg_gemm_pack_a(true, M, K, At, M, Atp));
        float *Apan = to_panels(A, M, K, K), *Bpan = to_panels(B, K, N, N);
        /* {A form, B form}: A 0 stored, 1 transposed, 2 packed, 3 packed from its transpose,
         * 4 in panels; B 0 stored, 1 transposed, 2 in panels. */
        static const int forms[][2] = {{2, 2}, {3, 2}, {4, 1}, {4, 2}, {0, 2}, {3, 0}, {2, 1}};
        for (size_t f = 0; f < sizeof forms / sizeof forms[0]; f++)
            for (int t = 1; t <= 2; t++) {
                const int fa = forms[f][0], fb = forms[f][1];
                const bool ta = fa == 1 || fa == 3, tb = fb == 1;
                const tg_gemm_operand a = {.data = fa == 4 ? Apan
                                                   : ta    ? At
                                                           : A,
                                           .ld = ta ? M : K,
                                           .trans = ta,
                                           .panels = fa == 4,
                                           .packed = fa == 2   ? Ap
                                                     : fa == 3 ? Atp
                                                               : NULL},
                                      b = {.data = fb == 2 ? Bpan
                                                   : tb    ? Bt
                                                           : B,
                                           .ld = tb ? K : N,
                                           .trans = tb,
                                           .panels = fb == 2};
                const size_t bytes = (size_t)(M * N) * sizeof(float);
                float *want = malloc(bytes), *got = malloc(bytes);
                assert_true(want && got);
                memcpy(want, C0, bytes);
                memcpy(got, C0, bytes);
                assert_int_equal(tg_set_num_threads(t), TG_OK);
                tg_sgemm_avx512(ta, tb, M, N, K, 0.5f, ta ? At : A, ta ? M : K, tb ? Bt : B,
                                tb ? K : N, 0.25f, want, N);
                assert_true(tg_sgemm_avx512_ops(&a, &b, M, N, K, 0.5f, 0.25f, got, N,
                                                (f + t) % 2 ? buf : NULL));
                if (memcmp(want, got, bytes) != 0)
                    fail_msg("M %lld N %lld K %lld, A form %d, B form %d, %d thread(s): not the "
                             "bits of the stored operands",
                             (long long)M, (long long)N, (long long)K, fa, fb, t);
                free(want), free(got);
            }
        tg_free(Ap, (size_t)tg_gemm_packed_a_floats(M, K) * sizeof(float));
        tg_free(Atp, (size_t)tg_gemm_packed_a_floats(M, K) * sizeof(float));
        tg_free(Apan, (size_t)((K + 31) / 32 * 32 * M) * sizeof(float));
        tg_free(Bpan, (size_t)((N + 31) / 32 * 32 * K) * sizeof(float));
        free(A), free(At), free(B), free(Bt), free(C0);
    }
    tg_free(buf, (size_t)tg_gemm_buffer_floats() * sizeof(float));
    assert_int_equal(tg_set_num_threads(threads0), TG_OK);
}

/* In FP32 mode and with each bf16 kernel; below the AVX-512 level the entry points refuse. */
static void test_operands(void **state)
{
    (void)state;
    if (!tg_sgemm_avx512_active()) {
        float x = 1.0f;
        const tg_gemm_operand a = {.data = &x, .ld = 1}, b = {.data = &x, .ld = 1};
        assert_false(tg_gemm_pack_a(false, 1, 1, &x, 1, &x));
        assert_false(tg_sgemm_avx512_ops(&a, &b, 1, 1, 1, 1.0f, 0.0f, &x, 1, NULL));
        printf("SKIP: below the AVX-512 level\n");
        return;
    }
    operands_same_bits();
    each_kernel(operands_same_bits);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TG_TEST(test_setter),
        TG_TEST(test_fallback),
        TG_TEST(test_rounding_exact),
        TG_TEST(test_random_products),
        TG_TEST(test_threads_same_bits),
        TG_TEST(test_conv_packers),
        TG_TEST(test_operands),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
