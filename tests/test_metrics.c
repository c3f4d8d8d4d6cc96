/* mnist_gan's metrics (examples/mnist_gan/metrics.c) against answers known in closed form or
 * computed another way:
 *
 *   - the matrix square root squares back to the matrix, equals the 2x2 closed form
 *     (A + sqrt(det A) I) / sqrt(tr A + 2 sqrt(det A)) and a Newton-Schulz iteration (no
 *     eigendecomposition) on a random SPD matrix, and clips the negative eigenvalues rounding
 *     leaves in a singular PSD matrix;
 *   - the Fréchet distance of a set against itself is 0, against a copy shifted by d is
 *     ||d||^2, between diagonal Gaussians is sum (sqrt a - sqrt b)^2 + ||mu1 - mu2||^2, for 2x2
 *     covariances matches Tr((S1 S2)^{1/2}) = sqrt(tr(S1 S2) + 2 sqrt(det S1 det S2)), and for
 *     random 6x6 SPD pairs matches Newton-Schulz applied to S1 S2 itself;
 *   - the statistics are numpy.cov's (unbiased), the classifier score is 10 for confident
 *     predictions spread evenly, 1 for identical predictions, 2 for two even classes; coverage
 *     on a made-up histogram; the mean share of white; subsets are distinct rows;
 *   - the spread behind the diversity is half the mean squared distance between unit rows,
 *     counted pair by pair, whatever the rows' lengths; diversity is 0 for one image repeated
 *     and about 1 for two halves of one set (features, and images through a classifier); the
 *     collapse verdicts on each side of their thresholds.
 *
 * Run with a path to mnist_gan (meson's test 'metrics_eval', suite e2e), it also runs the
 * program: a tiny GAN checkpoint (mnist_gan train on a synthetic set) and a tiny classifier
 * (untrained, saved here) through `mnist_gan eval` (the table prints, the JSON line parses and
 * holds the figures) and `mnist_gan train --eval-every` (OUT/eval.csv and the FID curve in
 * report.html), and bad input exiting 2 with one line. */
#include "common.h"
#include "metrics.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- helpers: small dense matrices in double ---------------------------------------------- */

static void mat_mul(int n, const double *a, const double *b, double *c)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int k = 0; k < n; k++)
                s += a[i * n + k] * b[k * n + j];
            c[i * n + j] = s;
        }
}

static double max_abs_diff(int n2, const double *a, const double *b)
{
    double m = 0;
    for (int i = 0; i < n2; i++)
        m = fmax(m, fabs(a[i] - b[i]));
    return m;
}

/* A random SPD matrix B B^T + shift I, B with normal entries. */
static void random_spd(tg_rng *rng, int n, double shift, double *a)
{
    double b[64 * 64];
    for (int i = 0; i < n * n; i++)
        b[i] = tg_rng_normal01(rng);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double s = i == j ? shift : 0;
            for (int k = 0; k < n; k++)
                s += b[i * n + k] * b[j * n + k];
            a[i * n + j] = s;
        }
}

/* The square root of a matrix with positive real eigenvalues by the coupled Newton-Schulz
 * iteration (Higham, Functions of Matrices, 6.3): no eigendecomposition, only products.
 * Y0 = A / c, Z0 = I, T = (3I - Z Y) / 2, Y <- Y T, Z <- T Z; Y -> (A / c)^{1/2}. */
static void sqrt_newton_schulz(int n, const double *a, double *out)
{
    double c = 0, y[64 * 64], z[64 * 64], t[64 * 64], tmp[64 * 64];
    for (int i = 0; i < n * n; i++)
        c += a[i] * a[i];
    c = sqrt(c); /* Frobenius norm: the spectrum of A / c lies in (0, 1] */
    for (int i = 0; i < n * n; i++)
        y[i] = a[i] / c, z[i] = (i % (n + 1)) == 0;
    for (int it = 0; it < 200; it++) {
        mat_mul(n, z, y, tmp);
        for (int i = 0; i < n * n; i++)
            t[i] = 0.5 * ((i % (n + 1) == 0 ? 3.0 : 0.0) - tmp[i]);
        mat_mul(n, y, t, tmp);
        memcpy(y, tmp, sizeof(double) * (size_t)(n * n));
        mat_mul(n, t, z, tmp);
        memcpy(z, tmp, sizeof(double) * (size_t)(n * n));
    }
    for (int i = 0; i < n * n; i++)
        out[i] = y[i] * sqrt(c);
}

static gan_stats stats_of(int d, const double *mean, const double *cov)
{
    gan_stats s = {.n = 100,
                   .dim = d,
                   .mean = malloc(sizeof(double) * (size_t)d),
                   .cov = malloc(sizeof(double) * (size_t)(d * d))};
    memcpy(s.mean, mean, sizeof(double) * (size_t)d);
    memcpy(s.cov, cov, sizeof(double) * (size_t)(d * d));
    return s;
}

static double fid_of(const gan_stats *a, const gan_stats *b)
{
    double fid;
    assert_int_equal(gan_frechet_distance(a, b, &fid), TG_OK);
    return fid;
}

/* ---- matrix square root --------------------------------------------------------------------- */

static void test_sqrtm_squares_back(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 11);
    for (int n = 1; n <= 40; n += 13) {
        double a[64 * 64], r[64 * 64], rr[64 * 64];
        random_spd(&rng, n, 0.1, a);
        assert_int_equal(gan_sqrtm_psd(n, a, r), TG_OK);
        mat_mul(n, r, r, rr);
        double scale = 0;
        for (int i = 0; i < n * n; i++)
            scale = fmax(scale, fabs(a[i]));
        assert_true(max_abs_diff(n * n, rr, a) <= 1e-10 * scale);
        for (int i = 0; i < n; i++) /* symmetric, positive diagonal */
            for (int j = 0; j < n; j++)
                assert_true(r[i * n + j] == r[j * n + i] && (i != j || r[i * n + i] > 0));
    }
}

static void test_sqrtm_2x2_closed_form(void **state)
{
    (void)state;
    const double a[4] = {5, 2, 2, 3}; /* det 11, trace 8 */
    const double s = sqrt(11.0), t = sqrt(8.0 + 2 * s);
    const double want[4] = {(5 + s) / t, 2 / t, 2 / t, (3 + s) / t};
    double r[4];
    assert_int_equal(gan_sqrtm_psd(2, a, r), TG_OK);
    assert_true(max_abs_diff(4, r, want) <= 1e-13);
    /* Only the lower triangle is read: garbage above it changes nothing. */
    const double lower[4] = {5, -99, 2, 3};
    double r2[4];
    assert_int_equal(gan_sqrtm_psd(2, lower, r2), TG_OK);
    assert_true(max_abs_diff(4, r2, want) <= 1e-13);
}

static void test_sqrtm_matches_newton_schulz(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 12);
    const int n = 7;
    double a[64 * 64], r[64 * 64], ns[64 * 64];
    random_spd(&rng, n, 1.0, a);
    assert_int_equal(gan_sqrtm_psd(n, a, r), TG_OK);
    sqrt_newton_schulz(n, a, ns);
    assert_true(max_abs_diff(n * n, r, ns) <= 1e-9);
}

static void test_sqrtm_clips_negative_eigenvalues(void **state)
{
    (void)state;
    /* v v^T with v = (1, 2, 3): rank 1, eigenvalues 14, 0, 0 (rounding makes some of the
     * zeros negative); its square root is v v^T / |v|. */
    const double v[3] = {1, 2, 3};
    double a[9], r[9], want[9];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            a[i * 3 + j] = v[i] * v[j], want[i * 3 + j] = v[i] * v[j] / sqrt(14.0);
    assert_int_equal(gan_sqrtm_psd(3, a, r), TG_OK);
    for (int i = 0; i < 9; i++)
        assert_false(isnan(r[i]));
    assert_true(max_abs_diff(9, r, want) <= 1e-7);
    /* An indefinite matrix 4 u u^T - v v^T (u, v orthonormal): the -1 is clipped, not taken
     * as |-1|, so the root is 2 u u^T. */
    const double c = cos(0.3), sn = sin(0.3);
    const double ind[4] = {4 * c * c - sn * sn, 5 * c * sn, 5 * c * sn, 4 * sn * sn - c * c};
    const double root[4] = {2 * c * c, 2 * c * sn, 2 * c * sn, 2 * sn * sn};
    assert_int_equal(gan_sqrtm_psd(2, ind, r), TG_OK);
    assert_true(max_abs_diff(4, r, root) <= 1e-13);
    /* A bad size is an error, not a crash. */
    assert_int_equal(gan_sqrtm_psd(0, a, r), TG_ERR_ARG);
    assert_error_contains("gan_sqrtm_psd");
}

/* ---- statistics and the Fréchet distance ------------------------------------------------- */

/* Features [n, d] with correlated columns and a large mean, as ReLU features have. */
static tg_tensor *random_features(tg_rng *rng, int64_t n, int64_t d)
{
    tg_tensor *x = tg_tensor_new(TG_DIMS(n, d));
    for (int64_t r = 0; r < n; r++) {
        float shared = tg_rng_normal01(rng);
        for (int64_t i = 0; i < d; i++)
            x->data[r * d + i] =
                3.0f + (float)i * 0.1f + tg_rng_normal01(rng) + 0.5f * shared * (float)(i % 3);
    }
    return x;
}

static void test_stats_are_numpy_cov(void **state)
{
    (void)state;
    /* numpy.mean(x, 0) = (2, 5), numpy.cov(x, rowvar=False) = [[8, -8], [-8, 8]] / 3 for
     * these rows (unbiased: divided by n - 1 = 3). */
    const float rows[8] = {0, 7, 2, 5, 4, 3, 2, 5};
    tg_tensor *x = tg_tensor_from_data(TG_DIMS(4, 2), rows);
    gan_stats s;
    assert_int_equal(gan_stats_compute(x, &s), TG_OK);
    assert_int_equal(s.n, 4);
    assert_int_equal(s.dim, 2);
    assert_close(s.mean[0], 2.0, 1e-12);
    assert_close(s.mean[1], 5.0, 1e-12);
    const double cov[4] = {8.0 / 3, -8.0 / 3, -8.0 / 3, 8.0 / 3};
    assert_true(max_abs_diff(4, s.cov, cov) <= 1e-12);
    gan_stats_free(&s);
    /* One row has no covariance. */
    tg_tensor *one = tg_tensor_zeros(TG_DIMS(1, 3));
    assert_int_equal(gan_stats_compute(one, &s), TG_ERR_SHAPE);
    assert_error_contains("[1, 3]");
    assert_null(s.mean);
    tg_tensor_release(one);
    tg_tensor_release(x);
}

static void test_fid_self_is_zero(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 21);
    tg_tensor *x = random_features(&rng, 500, 32);
    gan_stats s;
    assert_int_equal(gan_stats_compute(x, &s), TG_OK);
    double tr = 0;
    for (int i = 0; i < 32; i++)
        tr += s.cov[i * 32 + i];
    double fid = fid_of(&s, &s);
    assert_true(fabs(fid) <= 1e-6 * tr);
    gan_stats_free(&s);
    tg_tensor_release(x);
}

static void test_fid_shift_is_squared_norm(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 22);
    const int64_t n = 400, d = 24;
    tg_tensor *x = random_features(&rng, n, d);
    tg_tensor *y = tg_tensor_clone(x);
    double dd[24], norm2 = 0;
    for (int64_t i = 0; i < d; i++) {
        dd[i] = 0.25 * (double)tg_rng_normal01(&rng);
        norm2 += (double)(float)dd[i] * (double)(float)dd[i];
    }
    for (int64_t r = 0; r < n; r++)
        for (int64_t i = 0; i < d; i++)
            y->data[r * d + i] += (float)dd[i];
    gan_stats a, b;
    assert_int_equal(gan_stats_compute(x, &a), TG_OK);
    assert_int_equal(gan_stats_compute(y, &b), TG_OK);
    double tr = 0;
    for (int64_t i = 0; i < d; i++)
        tr += a.cov[i * d + i];
    /* The shift changes float rounding of the features a little, hence a tolerance relative
     * to the trace and not to ||d||^2 alone. */
    assert_close(fid_of(&a, &b), norm2, 1e-5 * tr);
    assert_close(fid_of(&b, &a), norm2, 1e-5 * tr);
    gan_stats_free(&a);
    gan_stats_free(&b);
    tg_tensor_release(x);
    tg_tensor_release(y);
}

static void test_fid_diagonal_closed_form(void **state)
{
    (void)state;
    enum { D = 5 };
    const double va[D] = {1, 4, 0.25, 9, 2}, vb[D] = {4, 1, 1, 9, 0.5};
    const double ma[D] = {0, 1, 2, 3, 4}, mb[D] = {1, 1, 0, 3, 2};
    double ca[D * D] = {0}, cb[D * D] = {0}, want = 0;
    for (int i = 0; i < D; i++) {
        ca[i * D + i] = va[i], cb[i * D + i] = vb[i];
        want += pow(sqrt(va[i]) - sqrt(vb[i]), 2) + pow(ma[i] - mb[i], 2);
    }
    gan_stats a = stats_of(D, ma, ca), b = stats_of(D, mb, cb);
    assert_close(fid_of(&a, &b), want, 1e-12 * want);
    /* The distance is symmetric. */
    assert_close(fid_of(&b, &a), want, 1e-12 * want);
    gan_stats_free(&a);
    gan_stats_free(&b);
}

static void test_fid_2x2_closed_form(void **state)
{
    (void)state;
    const double s1[4] = {2, 0.5, 0.5, 1}, s2[4] = {1, -0.3, -0.3, 3};
    const double m1[2] = {0.5, -1}, m2[2] = {0, 0};
    double p[4];
    mat_mul(2, s1, s2, p);
    const double det1 = 2 - 0.25, det2 = 3 - 0.09;
    const double tr_sqrt = sqrt(p[0] + p[3] + 2 * sqrt(det1 * det2));
    const double want = 0.25 + 1 + (2 + 1) + (1 + 3) - 2 * tr_sqrt;
    gan_stats a = stats_of(2, m1, s1), b = stats_of(2, m2, s2);
    assert_close(fid_of(&a, &b), want, 1e-12);
    gan_stats_free(&a);
    gan_stats_free(&b);
}

static void test_fid_random_spd_matches_newton_schulz(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 23);
    enum { D = 6 };
    for (int trial = 0; trial < 3; trial++) {
        double s1[D * D], s2[D * D], p[D * D], r[D * D], m1[D], m2[D];
        random_spd(&rng, D, 0.5, s1);
        random_spd(&rng, D, 0.5, s2);
        double want = 0;
        for (int i = 0; i < D; i++) {
            m1[i] = tg_rng_normal01(&rng), m2[i] = tg_rng_normal01(&rng);
            want += (m1[i] - m2[i]) * (m1[i] - m2[i]) + s1[i * D + i] + s2[i * D + i];
        }
        /* (S1 S2)^{1/2} directly: S1 S2 is not symmetric but its eigenvalues are positive. */
        mat_mul(D, s1, s2, p);
        sqrt_newton_schulz(D, p, r);
        double check[D * D];
        mat_mul(D, r, r, check);
        assert_true(max_abs_diff(D * D, check, p) <= 1e-8 * p[0]); /* converged */
        for (int i = 0; i < D; i++)
            want -= 2 * r[i * D + i];
        gan_stats a = stats_of(D, m1, s1), b = stats_of(D, m2, s2);
        assert_close(fid_of(&a, &b), want, 1e-8 * fabs(want));
        gan_stats_free(&a);
        gan_stats_free(&b);
    }
}

static void test_fid_rejects_mismatched_widths(void **state)
{
    (void)state;
    const double m[3] = {0}, c[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
    gan_stats a = stats_of(3, m, c), b = stats_of(2, m, c);
    double fid = 0;
    assert_int_equal(gan_frechet_distance(&a, &b, &fid), TG_ERR_SHAPE);
    assert_error_contains("3 and 2 features");
    assert_true(isnan(fid));
    gan_stats_free(&a);
    gan_stats_free(&b);
}

/* ---- diversity and collapse ----------------------------------------------------------------- */

/* Synthetic "digits" into img [n, 1, 28, 28] (filled with -1 before) and lab [n]: blobs whose
 * position depends on the label, with a random offset of up to two pixels. */
static void blob_images(tg_rng *rng, int64_t n, tg_tensor *img, tg_tensor *lab)
{
    for (int64_t i = 0; i < n; i++) {
        const int c = (int)(tg_rng_u32(rng) % 10);
        lab->data[i] = (float)c;
        const int cy = 6 + 2 * (c / 2) + (int)(tg_rng_u32(rng) % 3);
        const int cx = 8 + 6 * (c % 2) + (int)(tg_rng_u32(rng) % 3);
        for (int y = cy - 4; y <= cy + 4; y++)
            for (int x = cx - 3; x <= cx + 3; x++)
                img->data[i * 784 + y * 28 + x] = 1.0f;
    }
}

/* spread is half the mean squared distance between two distinct rows scaled to unit length,
 * counted here pair by pair (a zero row stays zero); scaling rows changes nothing. */
static void test_spread_is_half_the_mean_pair_distance(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 31);
    const int64_t n = 60, d = 9;
    tg_tensor *x = random_features(&rng, n, d);
    for (int64_t i = 0; i < n * d; i++) /* centred, so that directions differ widely */
        x->data[i] -= 3.0f;
    memset(x->data + 7 * d, 0, sizeof(float) * (size_t)d);
    double u[60][9], sum = 0;
    for (int64_t r = 0; r < n; r++) {
        double norm = 0;
        for (int64_t i = 0; i < d; i++)
            norm += (double)x->data[r * d + i] * x->data[r * d + i];
        for (int64_t i = 0; i < d; i++)
            u[r][i] = norm > 0 ? x->data[r * d + i] / sqrt(norm) : 0.0;
    }
    for (int64_t a = 0; a < n; a++)
        for (int64_t b = a + 1; b < n; b++)
            for (int64_t i = 0; i < d; i++)
                sum += (u[a][i] - u[b][i]) * (u[a][i] - u[b][i]);
    const double want = 0.5 * sum / (double)(n * (n - 1) / 2);
    gan_stats s, t;
    assert_int_equal(gan_stats_compute(x, &s), TG_OK);
    assert_true(want > 0.5);
    assert_close(s.spread, want, 1e-9 * want);
    for (int64_t r = 0; r < n; r++)
        for (int64_t i = 0; i < d; i++)
            x->data[r * d + i] *= (float)(1 + r % 5) * 0.25f;
    assert_int_equal(gan_stats_compute(x, &t), TG_OK);
    assert_close(t.spread, want, 1e-6 * want);
    assert_close(gan_diversity(&t, &s), 1.0, 1e-6);
    gan_stats_free(&s);
    gan_stats_free(&t);
    tg_tensor_release(x);
}

/* Identical rows: 0; two halves of one set: about 1; a set against itself: 1; a reference with
 * no spread: NAN. On features, then on images through a (untrained) classifier. */
static void test_diversity_identical_zero_halves_one(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 41);
    const int64_t n = 4000, d = 16;
    tg_tensor *x = tg_tensor_new(TG_DIMS(n, d)); /* ReLU of correlated normals, as features */
    for (int64_t r = 0; r < n; r++) {
        const float shared = tg_rng_normal01(&rng);
        for (int64_t i = 0; i < d; i++)
            x->data[r * d + i] = fmaxf(0.0f, 0.3f * (float)(i % 4) + tg_rng_normal01(&rng) +
                                                 shared * (float)(i % 2));
    }
    tg_tensor *h1 = tg_tensor_from_data(TG_DIMS(n / 2, d), x->data);
    tg_tensor *h2 = tg_tensor_from_data(TG_DIMS(n / 2, d), x->data + n / 2 * d);
    tg_tensor *same = tg_tensor_new(TG_DIMS(n / 2, d));
    for (int64_t r = 0; r < n / 2; r++)
        memcpy(same->data + r * d, x->data + 5 * d, sizeof(float) * (size_t)d);
    gan_stats a, b, c;
    assert_int_equal(gan_stats_compute(h1, &a), TG_OK);
    assert_int_equal(gan_stats_compute(h2, &b), TG_OK);
    assert_int_equal(gan_stats_compute(same, &c), TG_OK);
    assert_close(gan_diversity(&b, &a), 1.0, 0.03);
    assert_close(gan_diversity(&a, &a), 1.0, 1e-12);
    assert_close(gan_diversity(&c, &a), 0.0, 1e-6);
    assert_true(isnan(gan_diversity(&a, &c)));
    gan_stats_free(&a), gan_stats_free(&b), gan_stats_free(&c);
    tg_tensor_release(h1), tg_tensor_release(h2), tg_tensor_release(same), tg_tensor_release(x);

    /* Images: two halves of 600 blob digits, and one blob digit 300 times. */
    tg_tensor *img = tg_tensor_full(TG_DIMS(600, 1, 28, 28), -1.0f);
    tg_tensor *lab = tg_tensor_new(TG_DIMS(600));
    blob_images(&rng, 600, img, lab);
    tg_tensor *i1 = tg_tensor_from_data(TG_DIMS(300, 1, 28, 28), img->data);
    tg_tensor *i2 = tg_tensor_from_data(TG_DIMS(300, 1, 28, 28), img->data + 300 * 784);
    tg_tensor *one = tg_tensor_new(TG_DIMS(300, 1, 28, 28));
    for (int64_t r = 0; r < 300; r++)
        memcpy(one->data + r * 784, img->data, sizeof(float) * 784);
    clf_model *clf = clf_new(3);
    assert_non_null(clf);
    gan_stats ref;
    gan_figures f;
    assert_int_equal(gan_evaluate_images(clf, i1, NULL, &f, &ref), TG_OK);
    assert_true(isnan(f.diversity)); /* no reference */
    assert_int_equal(gan_evaluate_images(clf, i2, &ref, &f, NULL), TG_OK);
    assert_close(f.diversity, 1.0, 0.1);
    assert_int_equal(gan_evaluate_images(clf, one, &ref, &f, NULL), TG_OK);
    assert_close(f.diversity, 0.0, 1e-3);
    assert_int_equal(gan_collapse(f.white, 0.0, f.diversity, NAN), GAN_COLLAPSE_SINGLE_MODE);
    gan_stats_free(&ref);
    clf_free(clf);
    tg_tensor_release(i1), tg_tensor_release(i2), tg_tensor_release(one);
    tg_tensor_release(img), tg_tensor_release(lab);
}

/* The verdicts on each side of the thresholds, black before single mode before off digit; an
 * unknown diversity is never single mode, an unknown digit share never off digit. */
static void test_collapse_definitions(void **state)
{
    (void)state;
    const double below = nextafter(GAN_BLACK_WHITE, 0), low = GAN_SINGLE_MODE_DIVERSITY * 0.99;
    const double off = nextafter(GAN_OFF_DIGIT_SHARE, 0);
    assert_int_equal(gan_collapse(below, 0.0, 1.0, NAN), GAN_COLLAPSE_BLACK);
    assert_int_equal(gan_collapse(0.0, 0.0, NAN, NAN), GAN_COLLAPSE_BLACK);
    assert_int_equal(gan_collapse(below, 0.0, low, 0.0),
                     GAN_COLLAPSE_BLACK); /* black comes first */
    assert_int_equal(gan_collapse(GAN_BLACK_WHITE, 0.0, low, NAN), GAN_COLLAPSE_SINGLE_MODE);
    assert_int_equal(gan_collapse(0.13, 0.0, 0.0, 1.0), GAN_COLLAPSE_SINGLE_MODE);
    assert_int_equal(gan_collapse(0.13, 0.0, low, off), GAN_COLLAPSE_SINGLE_MODE); /* before off */
    assert_int_equal(gan_collapse(0.13, 0.0, GAN_SINGLE_MODE_DIVERSITY, NAN), GAN_COLLAPSE_NONE);
    assert_int_equal(gan_collapse(0.13, 0.0, NAN, NAN), GAN_COLLAPSE_NONE);
    assert_int_equal(gan_collapse(0.5, 0.0, 1.5, NAN), GAN_COLLAPSE_NONE);
    assert_int_equal(gan_collapse(0.47, 0.0, 1.8, off), GAN_COLLAPSE_OFF_DIGIT);
    assert_int_equal(gan_collapse(0.47, 0.0, NAN, 0.0), GAN_COLLAPSE_OFF_DIGIT);
    assert_int_equal(gan_collapse(0.15, 0.0, 1.0, GAN_OFF_DIGIT_SHARE), GAN_COLLAPSE_NONE);
    /* A relu G draws nothing below 0.5: black is 2% of its range (0.01) above that floor. The
     * relu sweep's dead-but-for-specks run (white 0.5001, diversity 0.376, every image a "1")
     * is black; its run drawing real 0s on gray (0.5315) is not, nor is mid-gray for tanh. */
    const double relu = gan_white_floor("upsample-relu");
    assert_true(relu == 0.5);
    assert_true(gan_white_floor("upsample") == 0.0 && gan_white_floor("convt") == 0.0);
    assert_true(gan_white_floor(NULL) == 0.0 && gan_white_floor("") == 0.0);
    assert_true(gan_black_white(0.0) == GAN_BLACK_WHITE); /* what eval prints as the bound */
    assert_true(gan_black_white(relu) == 0.5 + GAN_BLACK_WHITE / 2);
    assert_int_equal(gan_collapse(0.5001, relu, 0.376, 1.0), GAN_COLLAPSE_BLACK);
    assert_int_equal(gan_collapse(nextafter(0.51, 0), relu, 1.0, NAN), GAN_COLLAPSE_BLACK);
    assert_int_equal(gan_collapse(0.511, relu, 1.0, NAN), GAN_COLLAPSE_NONE);
    assert_int_equal(gan_collapse(0.5315, relu, 1.003, 0.994), GAN_COLLAPSE_NONE);
    assert_int_equal(gan_collapse(0.5001, 0.0, 0.376, 1.0), GAN_COLLAPSE_NONE);
    assert_string_equal(gan_collapse_name(GAN_COLLAPSE_BLACK), "black");
    assert_string_equal(gan_collapse_name(GAN_COLLAPSE_SINGLE_MODE), "single-mode");
    assert_string_equal(gan_collapse_name(GAN_COLLAPSE_OFF_DIGIT), "off-digit");
    assert_string_equal(gan_collapse_name(GAN_COLLAPSE_NONE), "none");

    /* The digit share: the digit's count over n; NAN for no digit, a digit the classifier does
     * not have, or no images. */
    gan_figures f = {.n = 8, .classes = 10, .counts = {1, 0, 0, 6, 0, 0, 0, 0, 0, 1}};
    assert_close(gan_digit_share(&f, 3), 0.75, 0);
    assert_close(gan_digit_share(&f, 0), 0.125, 0);
    assert_close(gan_digit_share(&f, 1), 0.0, 0);
    assert_true(isnan(gan_digit_share(&f, -1)));
    assert_true(isnan(gan_digit_share(&f, 10)));
    f.n = 0;
    assert_true(isnan(gan_digit_share(&f, 3)));
}

/* ---- classifier figures --------------------------------------------------------------- */

/* Logits [n, 10]: row i confident (margin 60) in class cls(i). */
static tg_tensor *one_hot_logits(int64_t n, int (*cls)(int64_t))
{
    tg_tensor *z = tg_tensor_zeros(TG_DIMS(n, 10));
    for (int64_t i = 0; i < n; i++)
        z->data[i * 10 + cls(i)] = 60.0f;
    return z;
}

static int cls_even(int64_t i)
{
    return (int)(i % 10);
}
static int cls_two(int64_t i)
{
    return (int)(i % 2) * 7;
}

static void test_score_even_confident_is_ten(void **state)
{
    (void)state;
    tg_tensor *z = one_hot_logits(200, cls_even);
    gan_figures f;
    assert_int_equal(gan_class_figures(z, &f), TG_OK);
    assert_close(f.score, 10.0, 1e-9);
    assert_close(f.confidence, 1.0, 1e-9);
    assert_int_equal(f.n, 200);
    assert_int_equal(f.classes, 10);
    for (int c = 0; c < 10; c++)
        assert_int_equal(f.counts[c], 20);
    assert_int_equal(f.classes_5pct, 10);
    assert_close(f.rarest_share, 0.1, 1e-15);
    tg_tensor_release(z);

    z = one_hot_logits(100, cls_two); /* two classes, half each: score 2 */
    assert_int_equal(gan_class_figures(z, &f), TG_OK);
    assert_close(f.score, 2.0, 1e-9);
    assert_int_equal(f.counts[0], 50);
    assert_int_equal(f.counts[7], 50);
    assert_int_equal(f.classes_5pct, 2);
    assert_int_equal(f.rarest_class, 1);
    assert_close(f.rarest_share, 0.0, 0);
    tg_tensor_release(z);
}

static void test_score_identical_predictions_is_one(void **state)
{
    (void)state;
    const float row[10] = {0.3f, -1, 2, 0.5f, 0, 1, -0.2f, 0.7f, 1.5f, -2};
    tg_tensor *z = tg_tensor_new(TG_DIMS(50, 10));
    for (int64_t i = 0; i < 50; i++)
        memcpy(z->data + i * 10, row, sizeof row);
    gan_figures f;
    assert_int_equal(gan_class_figures(z, &f), TG_OK);
    assert_close(f.score, 1.0, 1e-12);
    assert_int_equal(f.counts[2], 50);
    assert_int_equal(f.classes_5pct, 1);
    /* softmax(row)[2], computed here in double */
    double sum = 0;
    for (int c = 0; c < 10; c++)
        sum += exp((double)row[c]);
    assert_close(f.confidence, exp(2.0) / sum, 1e-12);
    tg_tensor_release(z);
    /* Logits of the wrong shape are an error naming it. */
    tg_tensor *bad = tg_tensor_zeros(TG_DIMS(4, 40));
    assert_int_equal(gan_class_figures(bad, &f), TG_ERR_SHAPE);
    assert_error_contains("[4, 40]");
    tg_tensor_release(bad);
}

static void test_coverage_on_a_histogram(void **state)
{
    (void)state;
    /* 1000 images: class 3 has exactly 5% (counts), class 9 just under, class 6 none. */
    gan_figures f = {
        .n = 1000, .classes = 10, .counts = {300, 200, 150, 50, 120, 80, 0, 51, 49, 0}};
    gan_coverage(&f);
    assert_int_equal(f.classes_5pct, 7); /* 300 200 150 50 120 80 51 */
    assert_int_equal(f.rarest_class, 6); /* the first of the empty classes */
    assert_close(f.rarest_share, 0.0, 0);
    f.counts[6] = 10, f.counts[9] = 5, f.n = 1015;
    gan_coverage(&f);
    assert_int_equal(f.rarest_class, 9);
    assert_close(f.rarest_share, 5.0 / 1015, 1e-15);
    assert_int_equal(f.classes_5pct, 6); /* 50 / 1015 is under 5% now */
}

static void test_white_and_subset(void **state)
{
    (void)state;
    tg_tensor *img = tg_tensor_full(TG_DIMS(6, 1, 28, 28), -1.0f);
    assert_close(gan_mean_white(img), 0.0, 1e-15);
    for (int64_t i = 0; i < 3 * 784; i++)
        img->data[i] = 1.0f;
    assert_close(gan_mean_white(img), 0.5, 1e-15);
    for (int64_t r = 0; r < 6; r++) /* each image's first pixel names it */
        img->data[r * 784] = (float)r;
    tg_tensor *sub = gan_subset(img, 4, 5);
    assert_non_null(sub);
    assert_int_equal(sub->shape[0], 4);
    assert_int_equal(sub->shape[3], 28);
    int seen[6] = {0};
    for (int64_t r = 0; r < 4; r++) {
        int id = (int)sub->data[r * 784];
        assert_true(id >= 0 && id < 6);
        assert_int_equal(seen[id]++, 0);
        assert_float_equal(sub->data[r * 784 + 1], id < 3 ? 1.0f : -1.0f, 0);
    }
    tg_tensor_release(sub);
    assert_null(gan_subset(img, 7, 5));
    assert_error_contains("7 images asked of a set of 6");
    tg_tensor_release(img);
}

/* ---- the program: mnist_gan eval and train --eval-every ------------------------------------ */

static const char *program;
static char tmp[256];

/* Runs the shell command line; returns its exit status, stdout and stderr in files. */
static int run(const char *args, const char *out, const char *err)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' %s >'%s' 2>'%s'", program, args, out, err);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    size_t got = b ? fread(b, 1, (size_t)n, f) : 0;
    fclose(f);
    if (b)
        b[got] = '\0';
    return b;
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* A minimal JSON reader: checks the syntax of one value and finds a key's number. */
static const char *json_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    return p;
}

static const char *json_value(const char *p);

static const char *json_string(const char *p)
{
    if (*p != '"')
        return NULL;
    for (p++; *p && *p != '"'; p++) {
        if ((unsigned char)*p < 0x20)
            return NULL;
        if (*p == '\\' && !*++p)
            return NULL;
    }
    return *p == '"' ? p + 1 : NULL;
}

static const char *json_value(const char *p)
{
    p = json_ws(p);
    if (*p == '{' || *p == '[') {
        const char close = *p == '{' ? '}' : ']';
        const bool obj = *p == '{';
        p = json_ws(p + 1);
        if (*p == close)
            return p + 1;
        for (;;) {
            if (obj) {
                if (!(p = json_string(json_ws(p))))
                    return NULL;
                p = json_ws(p);
                if (*p++ != ':')
                    return NULL;
            }
            if (!(p = json_value(p)))
                return NULL;
            p = json_ws(p);
            if (*p == close)
                return p + 1;
            if (*p++ != ',')
                return NULL;
        }
    }
    if (*p == '"')
        return json_string(p);
    if (!strncmp(p, "null", 4) || !strncmp(p, "true", 4))
        return p + 4;
    if (!strncmp(p, "false", 5))
        return p + 5;
    char *end;
    strtod(p, &end);
    return end > p ? end : NULL;
}

/* The number after "key": at or after from; NAN when absent. */
static double json_number_after(const char *from, const char *key)
{
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    const char *p = strstr(from, pat);
    return p ? strtod(p + strlen(pat), NULL) : NAN;
}

/* A synthetic MNIST folder: "digits" are blobs whose position depends on the label. */
static void write_synthetic_mnist(const char *dir, int64_t n_train, int64_t n_test)
{
    tg_rng rng;
    tg_rng_seed(&rng, 77);
    for (int part = 0; part < 2; part++) {
        const int64_t n = part ? n_test : n_train;
        tg_tensor *img = tg_tensor_full(TG_DIMS(n, 1, 28, 28), -1.0f);
        tg_tensor *lab = tg_tensor_new(TG_DIMS(n));
        blob_images(&rng, n, img, lab);
        char p[PATH_MAX + 64];
        snprintf(p, sizeof p, "%s/%s-images-idx3-ubyte", dir, part ? "t10k" : "train");
        assert_int_equal(tg_data_write_idx_images(p, img), TG_OK);
        snprintf(p, sizeof p, "%s/%s-labels-idx1-ubyte", dir, part ? "t10k" : "train");
        assert_int_equal(tg_data_write_idx_labels(p, lab), TG_OK);
        tg_tensor_release(img);
        tg_tensor_release(lab);
    }
}

static char data_dir[512], clf_path[512], run_dir[512], ckpt[1024], out_txt[512], err_txt[512];

static int e2e_setup(void **state)
{
    (void)state;
    snprintf(tmp, sizeof tmp, "/tmp/tg_test_metrics_XXXXXX");
    if (!mkdtemp(tmp))
        return -1;
    snprintf(data_dir, sizeof data_dir, "%s/data", tmp);
    snprintf(clf_path, sizeof clf_path, "%s/clf.safetensors", tmp);
    snprintf(run_dir, sizeof run_dir, "%s/run", tmp);
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", run_dir);
    snprintf(out_txt, sizeof out_txt, "%s/stdout.txt", tmp);
    snprintf(err_txt, sizeof err_txt, "%s/stderr.txt", tmp);
    return mkdir(data_dir, 0755);
}

static int e2e_teardown(void **state)
{
    (void)state;
    if (!getenv("TG_KEEP_TMP")) {
        char cmd[PATH_MAX + 16];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
        if (system(cmd) != 0)
            return -1;
    }
    return 0;
}

/* mnist_gan train on the synthetic set into out: iters in all, measured every 2 iterations
 * when eval is set; a failure fails the test. */
static void train_run(const char *out, int iters, bool eval, bool resume)
{
    char args[4096];
    snprintf(args, sizeof args,
             "train --recipe dcgan --data '%s' --iters %d --batch 32 "
             "--width-div 16 --threads 1 --log-every 2 --out '%s' %s%s%s%s",
             data_dir, iters, out, resume ? "--resume " : "",
             eval ? "--eval-every 2 --eval-n 60 " : "", eval ? "--classifier " : "",
             eval ? clf_path : "");
    int code = run(args, out_txt, err_txt);
    if (code != 0) {
        char *err = slurp(err_txt);
        fail_msg("mnist_gan %s: exit %d: %s", args, code, err);
    }
}

/* The file at dir/name with each line cut before its last comma (losses.csv's seconds). */
static char *read_without_last_column(const char *dir, const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *s = slurp(path);
    assert_non_null(s);
    char *w = s;
    for (char *line = s; *line;) {
        char *nl = strchr(line, '\n'), *end = nl ? nl : line + strlen(line);
        char *cut = end;
        while (cut > line && cut[-1] != ',')
            cut--;
        cut = cut > line ? cut - 1 : end;
        memmove(w, line, (size_t)(cut - line));
        w += cut - line;
        *w++ = '\n';
        line = nl ? nl + 1 : end;
    }
    *w = '\0';
    return s;
}

static void test_eval_command(void **state)
{
    (void)state;
    write_synthetic_mnist(data_dir, 256, 120);
    /* An untrained classifier: its features are still a deterministic function of the image,
     * which is all the program's plumbing needs. */
    clf_model *clf = clf_new(3);
    assert_non_null(clf);
    clf_info info = {.epoch = 0, .test_accuracy = 0.1};
    snprintf(info.dataset, sizeof info.dataset, "synthetic");
    assert_int_equal(clf_save(clf, &info, clf_path), TG_OK);
    clf_free(clf);

    char args[4096];
    train_run(run_dir, 4, true, false);
    char *out = slurp(out_txt);
    assert_non_null(strstr(out, "eval: iteration 2, 60 images, FID (classifier features) "));
    free(out);
    /* OUT/eval.csv: the header and one row per evaluation (iterations 2 and 4). */
    snprintf(args, sizeof args, "%s/eval.csv", run_dir);
    char *csv = slurp(args);
    assert_non_null(csv);
    assert_true(!strncmp(csv, "iteration,fid,score,", 20));
    assert_non_null(strstr(csv, ",white,n,diversity\n"));
    assert_int_equal(count_lines(csv), 3);
    assert_non_null(strstr(csv, "\n2,"));
    assert_non_null(strstr(csv, "\n4,"));
    free(csv);
    snprintf(args, sizeof args, "%s/report.html", run_dir);
    char *html = slurp(args);
    assert_non_null(html);
    assert_non_null(strstr(html, "<svg id=\"fid\""));
    assert_non_null(strstr(html, "class=\"curve\" data-name=\"fid\""));
    free(html);
    /* Measuring changes nothing in training: the same losses without --eval-every; and a run
     * resumed half-way measures the same figures, eval.csv byte for byte. */
    char plain[600], split[600];
    snprintf(plain, sizeof plain, "%s/plain", tmp);
    snprintf(split, sizeof split, "%s/split", tmp);
    train_run(plain, 4, false, false);
    train_run(split, 2, true, false);
    train_run(split, 4, true, true);
    char *a = read_without_last_column(run_dir, "losses.csv");
    char *b = read_without_last_column(plain, "losses.csv");
    char *c = read_without_last_column(split, "losses.csv");
    assert_int_equal(count_lines(a), 5);
    assert_string_equal(a, b);
    assert_string_equal(a, c);
    free(a), free(b), free(c);
    snprintf(args, sizeof args, "%s/eval.csv", plain);
    struct stat st;
    assert_int_not_equal(stat(args, &st), 0);
    a = read_without_last_column(run_dir, "eval.csv");
    c = read_without_last_column(split, "eval.csv");
    assert_string_equal(a, c);
    free(c);
    /* An eval.csv written before the diversity column (9 columns) is resumed: its rows kept,
     * with diversity unknown, the header the new one. */
    char old[600];
    snprintf(old, sizeof old, "%s/old", tmp);
    train_run(old, 2, true, false);
    c = read_without_last_column(old, "eval.csv");
    snprintf(args, sizeof args, "%s/eval.csv", old);
    FILE *cf = fopen(args, "w");
    assert_non_null(cf);
    fputs(c, cf);
    fclose(cf);
    free(c);
    train_run(old, 4, true, true);
    c = read_without_last_column(old, "eval.csv");
    assert_string_equal(a, c);
    free(a), free(c);
    csv = slurp(args);
    assert_non_null(strstr(csv, ",n,diversity\n2,"));
    assert_non_null(strstr(csv, ",60,nan\n4,"));
    free(csv);

    snprintf(args, sizeof args,
             "eval --checkpoint '%s' --classifier '%s' --data '%s' --n 100 "
             "--seed 5 --threads 1",
             ckpt, clf_path, data_dir);
    int code = run(args, out_txt, err_txt);
    char *err;
    out = slurp(out_txt), err = slurp(err_txt);
    if (code != 0)
        fail_msg("eval exited %d: %s", code, err);
    assert_non_null(strstr(out, "FID (clf)"));
    assert_non_null(strstr(out, "generated"));
    assert_non_null(strstr(out, "real train"));
    assert_non_null(strstr(out, "real test"));
    free(out), free(err);
    /* Twice: the JSON file gets a second line. */
    code = run(args, out_txt, err_txt);
    assert_int_equal(code, 0);
    snprintf(args, sizeof args, "%s/eval.jsonl", run_dir);
    char *json = slurp(args);
    assert_non_null(json);
    assert_int_equal(count_lines(json), 2);
    /* The same seed gives the same generated images, hence the same figures. */
    const char *second = strchr(json, '\n') + 1;
    assert_close(json_number_after(strstr(second, "\"generated\""), "fid"),
                 json_number_after(strstr(json, "\"generated\""), "fid"), 0);
    const char *end = json_value(json);
    if (!end || *end != '\n')
        fail_msg("the JSON line does not parse: %s", json);
    assert_close(json_number_after(json, "iteration"), 4, 0);
    assert_close(json_number_after(json, "n"), 100, 0);
    assert_close(json_number_after(json, "seed"), 5, 0);
    const char *gen = strstr(json, "\"generated\"");
    const char *train = strstr(json, "\"real_train\"");
    assert_non_null(gen);
    assert_non_null(train);
    const double fid_gen = json_number_after(gen, "fid");
    const double fid_train = json_number_after(train, "fid");
    const double score = json_number_after(gen, "score");
    assert_true(isfinite(fid_gen) && fid_gen > 0);
    assert_true(isfinite(fid_train) && fid_train >= 0);
    assert_true(score >= 1 && score <= 10);
    /* The real test set's own row has no FID and no diversity: it is the reference; the
     * training images are about as varied. The generated set's verdict is there. */
    const char *test = strstr(json, "\"real_test\"");
    assert_non_null(test);
    assert_non_null(strstr(test, "\"fid\": null"));
    assert_non_null(strstr(test, "\"diversity\": null"));
    assert_close(json_number_after(train, "diversity"), 1.0, 0.2);
    assert_true(json_number_after(gen, "diversity") > 0);
    assert_non_null(strstr(json, "\"collapse\": \""));
    assert_null(strstr(json, "\"digit_share\"")); /* a G of every digit has none */
    /* the checkpoint's recipe and its generator, named */
    assert_non_null(strstr(json, ", \"recipe\": \"dcgan\", \"generator\": \"dcgan\", "));

    /* --images measures an idx file as eval measures G: G's own images through sample --idx
     * give G's figures (up to the file's 8-bit rounding), and the real test images themselves
     * are at FID 0 from the test set, with its class histogram. */
    char prefix[600], images[700], jpath[600];
    snprintf(prefix, sizeof prefix, "%s/g", tmp);
    snprintf(images, sizeof images, "%s-images-idx3-ubyte", prefix);
    snprintf(jpath, sizeof jpath, "%s/images.jsonl", tmp);
    snprintf(args, sizeof args,
             "sample --checkpoint '%s' --n 100 --seed 5 --threads 1 --out "
             "'%s/g.png' --idx '%s'",
             ckpt, tmp, prefix);
    assert_int_equal(run(args, out_txt, err_txt), 0);
    snprintf(args, sizeof args,
             "eval --images '%s' --classifier '%s' --data '%s' --n 100 "
             "--threads 1 --json '%s'",
             images, clf_path, data_dir, jpath);
    code = run(args, out_txt, err_txt);
    if (code != 0)
        fail_msg("eval --images exited %d: %s", code, slurp(err_txt));
    char *ij = slurp(jpath);
    assert_non_null(ij);
    assert_non_null(strstr(ij, "{\"images\": "));
    assert_null(strstr(ij, "\"iteration\""));
    const double fid_images = json_number_after(strstr(ij, "\"generated\""), "fid");
    assert_close(fid_images, fid_gen, 0.02 * fid_gen);
    free(ij);
    snprintf(images, sizeof images, "%s/t10k-images-idx3-ubyte", data_dir);
    snprintf(args, sizeof args,
             "eval --images '%s' --classifier '%s' --data '%s' --n 120 "
             "--threads 1 --json '%s'",
             images, clf_path, data_dir, jpath);
    assert_int_equal(run(args, out_txt, err_txt), 0);
    ij = slurp(jpath);
    const char *second_line = strchr(ij, '\n') + 1;
    gen = strstr(second_line, "\"generated\"");
    test = strstr(second_line, "\"real_test\"");
    assert_true(fabs(json_number_after(gen, "fid")) < 1e-3);
    assert_close(json_number_after(gen, "diversity"), 1.0, 1e-6);
    const char *gc = strstr(gen, "\"counts\""), *tc = strstr(test, "\"counts\"");
    assert_non_null(gc);
    assert_non_null(tc);
    assert_memory_equal(gc, tc, (size_t)(strchr(tc, ']') - tc));
    free(ij);
    free(json);
}

/* "--n 40 --images 'path'", in one of four buffers (a table holds several at once). */
static const char *images_arg(const char *path)
{
    static char buf[4][700];
    static int next;
    char *b = buf[next++ % 4];
    snprintf(b, sizeof buf[0], "--n 40 --images '%s'", path);
    return b;
}

static void test_eval_bad_input(void **state)
{
    (void)state;
    write_synthetic_mnist(data_dir, 64, 40);
    char garbage[512], not_clf[1024];
    snprintf(garbage, sizeof garbage, "%s/garbage.safetensors", tmp);
    FILE *f = fopen(garbage, "wb");
    assert_non_null(f);
    fputs("this is not a safetensors file at all", f);
    fclose(f);
    /* A tiny GAN checkpoint (one iteration), and a safetensors file that is not a classifier. */
    char args[4096];
    snprintf(args, sizeof args,
             "train --recipe dcgan --data '%s' --iters 1 --batch 16 "
             "--width-div 16 --threads 1 --out '%s'",
             data_dir, run_dir);
    assert_int_equal(run(args, out_txt, err_txt), 0);
    snprintf(not_clf, sizeof not_clf, "%s", ckpt);
    clf_model *clf = clf_new(3);
    clf_info info = {0};
    assert_int_equal(clf_save(clf, &info, clf_path), TG_OK);
    clf_free(clf);

    /* idx files that are not 40 images of 28x28: the test labels, and five images. */
    char labels[600], five[600];
    snprintf(labels, sizeof labels, "%s/t10k-labels-idx1-ubyte", data_dir);
    snprintf(five, sizeof five, "%s/five-images", tmp);
    tg_tensor *img5 = tg_tensor_zeros(TG_DIMS(5, 1, 28, 28));
    assert_int_equal(tg_data_write_idx_images(five, img5), TG_OK);
    tg_tensor_release(img5);
    struct {
        const char *what, *ckpt, *clf, *extra, *fragment;
    } cases[] = {
        {"missing checkpoint", "/nonexistent/x.safetensors", clf_path, "", "x.safetensors"},
        {"corrupt checkpoint", garbage, clf_path, "", "garbage.safetensors"},
        {"missing classifier", ckpt, "/nonexistent/c.safetensors", "", "c.safetensors"},
        {"corrupt classifier", ckpt, garbage, "", "garbage.safetensors"},
        {"not a classifier", ckpt, not_clf, "", "architecture"},
        {"n zero", ckpt, clf_path, "--n 0", "--n"},
        {"n one", ckpt, clf_path, "--n 1", "--n"},
        {"n above the test set", ckpt, clf_path, "--n 41", "40"},
        {"n not a number", ckpt, clf_path, "--n many", "--n"},
        {"json unwritable", ckpt, clf_path, "--json /nonexistent/e.jsonl", "e.jsonl"},
        {"checkpoint and images", ckpt, clf_path, images_arg(labels), "not both"},
        {"neither checkpoint nor images", NULL, clf_path, "", "--checkpoint FILE (or"},
        {"images missing", NULL, clf_path, "--n 40 --images /nonexistent/g-images", "g-images"},
        {"images not images", NULL, clf_path, images_arg(labels), "expected [N, 28, 28]"},
        {"images too few", NULL, clf_path, images_arg(five), "fewer than --n 40"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char measured[1100] = "";
        if (cases[i].ckpt)
            snprintf(measured, sizeof measured, "--checkpoint '%s'", cases[i].ckpt);
        snprintf(args, sizeof args, "eval %s --classifier '%s' --data '%s' %s", measured,
                 cases[i].clf, data_dir, cases[i].extra);
        int code = run(args, out_txt, err_txt);
        char *out = slurp(out_txt), *err = slurp(err_txt);
        if (code != 2 || count_lines(err) != 1 || !strstr(err, cases[i].fragment) || *out)
            fail_msg("%s: exit %d, stderr \"%s\", stdout \"%s\" (expected exit 2, one line "
                     "with \"%s\", no output)",
                     cases[i].what, code, err, out, cases[i].fragment);
        free(out), free(err);
    }
    /* Nothing was appended anywhere by the failed runs. */
    snprintf(args, sizeof args, "%s/eval.jsonl", run_dir);
    struct stat st;
    assert_int_not_equal(stat(args, &st), 0);
    /* train: --eval-every needs --classifier, and a bad classifier stops it before training. */
    const char *train_cases[][2] = {
        {"--eval-every 1", "--eval-every needs --classifier"},
        {"--classifier '%s'", "--classifier needs --eval-every"},
        {"--eval-every 1 --classifier '%s'", "garbage.safetensors"},
        {"--eval-every 1 --eval-n 41 --classifier '%s'", "the test set of"},
    };
    for (size_t i = 0; i < sizeof train_cases / sizeof train_cases[0]; i++) {
        char extra[1024];
        snprintf(extra, sizeof extra, train_cases[i][0], i == 2 ? garbage : clf_path);
        snprintf(args, sizeof args,
                 "train --data '%s' --iters 1 --batch 16 --width-div 16 "
                 "--out '%s/r3' %s",
                 data_dir, tmp, extra);
        int code = run(args, out_txt, err_txt);
        char *err = slurp(err_txt);
        if (code != 2 || !strstr(err, train_cases[i][1]))
            fail_msg("train %s: exit %d, stderr \"%s\" (expected exit 2 and \"%s\")", extra, code,
                     err, train_cases[i][1]);
        free(err);
    }
    snprintf(args, sizeof args, "%s/r3/checkpoint.safetensors", tmp);
    assert_int_not_equal(stat(args, &st), 0);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest unit[] = {
        TG_TEST(test_sqrtm_squares_back),
        TG_TEST(test_sqrtm_2x2_closed_form),
        TG_TEST(test_sqrtm_matches_newton_schulz),
        TG_TEST(test_sqrtm_clips_negative_eigenvalues),
        TG_TEST(test_stats_are_numpy_cov),
        TG_TEST(test_fid_self_is_zero),
        TG_TEST(test_fid_shift_is_squared_norm),
        TG_TEST(test_fid_diagonal_closed_form),
        TG_TEST(test_fid_2x2_closed_form),
        TG_TEST(test_fid_random_spd_matches_newton_schulz),
        TG_TEST(test_fid_rejects_mismatched_widths),
        TG_TEST(test_score_even_confident_is_ten),
        TG_TEST(test_score_identical_predictions_is_one),
        TG_TEST(test_coverage_on_a_histogram),
        TG_TEST(test_white_and_subset),
        TG_TEST(test_spread_is_half_the_mean_pair_distance),
        TG_TEST(test_diversity_identical_zero_halves_one),
        TG_TEST(test_collapse_definitions),
    };
    const struct CMUnitTest e2e[] = {
        cmocka_unit_test_setup_teardown(test_eval_command, e2e_setup, e2e_teardown),
        cmocka_unit_test_setup_teardown(test_eval_bad_input, e2e_setup, e2e_teardown),
    };
    if (argc > 1) { /* the e2e group: argv[1] is the mnist_gan program */
        program = argv[1];
        return cmocka_run_group_tests_name("metrics_eval", e2e, NULL, NULL);
    }
    return cmocka_run_group_tests_name("metrics", unit, NULL, NULL);
}
