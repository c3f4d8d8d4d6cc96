/* GAN quality figures (see metrics.h): feature statistics and the Fréchet distance in double,
 * the classifier score and coverage from logits, and the table and JSON they are reported in.
 * The matrices are 128 x 128: plain loops are fast enough and keep cblas.h in its one file. */
#include "metrics.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* LAPACK's symmetric eigensolver (Fortran symbol; OpenBLAS ships it in libopenblas). Debian's
 * OpenBLAS has no LAPACKE, so the prototype is ours: column-major a[lda][n], 32-bit integers,
 * and the hidden lengths of the two character arguments that gfortran appends. */
extern void dsyev_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda,
                   double *w, double *work, const int *lwork, int *info, size_t jobz_len,
                   size_t uplo_len);

/* Images generated per gan_generate call: a DCGAN G's 14x14x64 map for 500 images is 25 MB. */
enum { GEN_CHUNK = 500 };

/* ---- feature statistics ------------------------------------------------------------------ */

void gan_stats_free(gan_stats *s)
{
    if (!s)
        return;
    free(s->mean);
    free(s->cov);
    s->mean = s->cov = NULL;
    s->n = s->dim = 0;
}

tg_status gan_stats_compute(const tg_tensor *features, gan_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!features || features->ndim != 2 || features->shape[0] < 2 || features->shape[1] < 1) {
        char s[160] = "NULL";
        if (features)
            tg_shape_str(features->ndim, features->shape, s, sizeof s);
        return tg_set_error(TG_ERR_SHAPE,
                            "gan_stats_compute: features %s: expected [N, F] "
                            "with N >= 2",
                            s);
    }
    const int64_t n = features->shape[0], d = features->shape[1];
    double *mean = calloc((size_t)d, sizeof *mean);
    double *cov = calloc((size_t)(d * d), sizeof *cov);
    double *row = malloc(sizeof *row * (size_t)d);
    if (!mean || !cov || !row) {
        free(mean), free(cov), free(row);
        return tg_set_error(TG_ERR_NOMEM, "gan_stats_compute: out of memory for %lld features",
                            (long long)d);
    }
    const float *x = features->data;
    for (int64_t r = 0; r < n; r++)
        for (int64_t i = 0; i < d; i++)
            mean[i] += x[r * d + i];
    for (int64_t i = 0; i < d; i++)
        mean[i] /= (double)n;
    /* Centred before the products (two passes): the one-pass E[xx^T] - mu mu^T loses the
     * digits FID needs when features have a large mean. Lower triangle, then mirrored. */
    for (int64_t r = 0; r < n; r++) {
        for (int64_t i = 0; i < d; i++)
            row[i] = x[r * d + i] - mean[i];
        for (int64_t i = 0; i < d; i++) {
            const double ci = row[i];
            double *c = cov + i * d;
            for (int64_t j = 0; j <= i; j++)
                c[j] += ci * row[j];
        }
    }
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j <= i; j++) {
            cov[i * d + j] /= (double)(n - 1);
            cov[j * d + i] = cov[i * d + j];
        }
    /* spread: sum_i ||u_i - mean u||^2 / (n - 1) = (sum_i ||u_i||^2 - ||sum u||^2 / n) / (n - 1)
     * for the unit rows u_i (a zero row stays zero); row holds sum u. */
    double sq = 0;
    memset(row, 0, sizeof *row * (size_t)d);
    for (int64_t r = 0; r < n; r++) {
        double norm = 0;
        for (int64_t i = 0; i < d; i++)
            norm += (double)x[r * d + i] * x[r * d + i];
        if (norm <= 0)
            continue;
        sq += 1.0;
        norm = 1.0 / sqrt(norm);
        for (int64_t i = 0; i < d; i++)
            row[i] += x[r * d + i] * norm;
    }
    double sum2 = 0;
    for (int64_t i = 0; i < d; i++)
        sum2 += row[i] * row[i];
    const double spread = fmax(0.0, (sq - sum2 / (double)n) / (double)(n - 1));
    free(row);
    *out = (gan_stats){.n = n, .dim = d, .mean = mean, .cov = cov, .spread = spread};
    return TG_OK;
}

double gan_diversity(const gan_stats *set, const gan_stats *ref)
{
    return set && ref && ref->spread > 0 ? sqrt(set->spread / ref->spread) : NAN;
}

gan_collapse_kind gan_collapse(double white, double white_floor, double diversity,
                               double digit_share)
{
    if (white < gan_black_white(white_floor))
        return GAN_COLLAPSE_BLACK;
    if (diversity < GAN_SINGLE_MODE_DIVERSITY) /* false for NAN */
        return GAN_COLLAPSE_SINGLE_MODE;
    if (digit_share < GAN_OFF_DIGIT_SHARE) /* false for NAN */
        return GAN_COLLAPSE_OFF_DIGIT;
    return GAN_COLLAPSE_NONE;
}

double gan_black_white(double white_floor)
{
    return white_floor + GAN_BLACK_WHITE * (1.0 - white_floor);
}

double gan_white_floor(const char *generator)
{
    return generator && strcmp(generator, gan_generator_names[GAN_GEN_UPSAMPLE_RELU]) == 0 ? 0.5
                                                                                           : 0.0;
}

const char *gan_collapse_name(gan_collapse_kind k)
{
    return k == GAN_COLLAPSE_BLACK         ? "black"
           : k == GAN_COLLAPSE_SINGLE_MODE ? "single-mode"
           : k == GAN_COLLAPSE_OFF_DIGIT   ? "off-digit"
                                           : "none";
}

double gan_digit_share(const gan_figures *f, int digit)
{
    if (digit < 0 || digit >= f->classes || digit >= GAN_MAX_CLASSES || f->n <= 0)
        return NAN;
    return (double)f->counts[digit] / (double)f->n;
}

/* ---- linear algebra ------------------------------------------------------------------------ */

/* Eigenvalues w[n] (ascending) of the symmetric a [n][n] (lower triangle read), and when v is
 * not NULL the eigenvectors as its rows: v[k][i] is component i of eigenvector k. */
static tg_status eigh(const char *fn, int64_t n, const double *a, double *w, double *v)
{
    if (n < 1 || n > 4096)
        return tg_set_error(TG_ERR_ARG, "%s: matrix size %lld: expected 1..4096", fn, (long long)n);
    const int ni = (int)n;
    /* Column-major copy: a's lower triangle (row-major) is the upper triangle column-major, so
     * LAPACK reads it as uplo 'U'. */
    double *buf = malloc(sizeof *buf * (size_t)(n * n));
    if (!buf)
        return tg_set_error(TG_ERR_NOMEM, "%s: out of memory for a %lld x %lld matrix", fn,
                            (long long)n, (long long)n);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j <= i; j++)
            buf[i * n + j] = a[i * n + j];
    const char *jobz = v ? "V" : "N";
    int lwork = -1, info = 0;
    double query;
    dsyev_(jobz, "U", &ni, buf, &ni, w, &query, &lwork, &info, 1, 1);
    lwork = info == 0 && query >= 1 && query < INT_MAX ? (int)query : 3 * ni;
    double *work = malloc(sizeof *work * (size_t)lwork);
    if (!work) {
        free(buf);
        return tg_set_error(TG_ERR_NOMEM, "%s: out of memory for LAPACK's workspace", fn);
    }
    info = 0;
    dsyev_(jobz, "U", &ni, buf, &ni, w, work, &lwork, &info, 1, 1);
    free(work);
    if (info == 0 && v)
        memcpy(v, buf, sizeof *v * (size_t)(n * n)); /* column k of buf is eigenvector k */
    free(buf);
    if (info != 0)
        return tg_set_error(TG_ERR_STATE, "%s: LAPACK dsyev failed (info %d)%s", fn, info,
                            info > 0 ? ": the eigenvalues did not converge (NaN in the input?)"
                                     : "");
    return TG_OK;
}

/* c [n][n] = a [n][n] @ b [n][n]. */
static void matmul_d(int64_t n, const double *a, const double *b, double *c)
{
    memset(c, 0, sizeof *c * (size_t)(n * n));
    for (int64_t i = 0; i < n; i++)
        for (int64_t k = 0; k < n; k++) {
            const double aik = a[i * n + k];
            const double *bk = b + k * n;
            double *ci = c + i * n;
            for (int64_t j = 0; j < n; j++)
                ci[j] += aik * bk[j];
        }
}

tg_status gan_sqrtm_psd(int64_t n, const double *a, double *out)
{
    if (n < 1 || n > 4096)
        return tg_set_error(TG_ERR_ARG, "gan_sqrtm_psd: matrix size %lld: expected 1..4096",
                            (long long)n);
    double *w = malloc(sizeof *w * (size_t)n);
    double *v = malloc(sizeof *v * (size_t)(n * n));
    if (!w || !v) {
        free(w), free(v);
        return tg_set_error(TG_ERR_NOMEM, "gan_sqrtm_psd: out of memory for %lld x %lld",
                            (long long)n, (long long)n);
    }
    tg_status st = eigh("gan_sqrtm_psd", n, a, w, v);
    if (st == TG_OK) {
        for (int64_t k = 0; k < n; k++)
            w[k] = w[k] > 0 ? sqrt(w[k]) : 0.0;
        /* out = V diag(sqrt w) V^T, with V's columns the rows of v. */
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j <= i; j++) {
                double s = 0;
                for (int64_t k = 0; k < n; k++)
                    s += v[k * n + i] * w[k] * v[k * n + j];
                out[i * n + j] = out[j * n + i] = s;
            }
    }
    free(w), free(v);
    return st;
}

tg_status gan_frechet_distance(const gan_stats *a, const gan_stats *b, double *fid)
{
    *fid = NAN;
    if (!a || !b || !a->mean || !b->mean || a->dim != b->dim)
        return tg_set_error(TG_ERR_SHAPE,
                            "gan_frechet_distance: statistics of %lld and %lld "
                            "features: expected two sets of the same width",
                            a ? (long long)a->dim : -1LL, b ? (long long)b->dim : -1LL);
    const int64_t d = a->dim;
    double *r = malloc(sizeof *r * (size_t)(d * d));
    double *t = malloc(sizeof *t * (size_t)(d * d));
    double *m = malloc(sizeof *m * (size_t)(d * d));
    double *w = malloc(sizeof *w * (size_t)d);
    tg_status st = r && t && m && w ? TG_OK
                                    : tg_set_error(TG_ERR_NOMEM,
                                                   "gan_frechet_distance: out of "
                                                   "memory for %lld features",
                                                   (long long)d);
    if (st == TG_OK)
        st = gan_sqrtm_psd(d, a->cov, r);
    if (st == TG_OK) {
        /* M = R S2 R is symmetric PSD and similar to S1 S2 (R M R^-1 = S1 S2 when R is
         * invertible; the eigenvalues agree by continuity otherwise), so
         * Tr((S1 S2)^{1/2}) = sum of sqrt(eig(M)). */
        matmul_d(d, r, b->cov, t);
        matmul_d(d, t, r, m);
        for (int64_t i = 0; i < d; i++)
            for (int64_t j = 0; j < i; j++)
                m[i * d + j] = 0.5 * (m[i * d + j] + m[j * d + i]);
        st = eigh("gan_frechet_distance", d, m, w, NULL);
    }
    if (st == TG_OK) {
        double dmu = 0, tr = 0, tr_sqrt = 0;
        for (int64_t i = 0; i < d; i++) {
            const double diff = a->mean[i] - b->mean[i];
            dmu += diff * diff;
            tr += a->cov[i * d + i] + b->cov[i * d + i];
            tr_sqrt += w[i] > 0 ? sqrt(w[i]) : 0.0;
        }
        *fid = dmu + tr - 2.0 * tr_sqrt;
    }
    free(r), free(t), free(m), free(w);
    return st;
}

/* ---- classifier figures -------------------------------------------------------------------- */

void gan_coverage(gan_figures *f)
{
    f->rarest_class = 0;
    f->classes_5pct = 0;
    for (int k = 0; k < f->classes; k++) {
        if (f->counts[k] < f->counts[f->rarest_class])
            f->rarest_class = k;
        /* counts[k] / n >= 5%, in integers so that exactly 5% counts */
        if (f->n > 0 && f->counts[k] * 20 >= f->n)
            f->classes_5pct++;
    }
    f->rarest_share = f->n > 0 ? (double)f->counts[f->rarest_class] / (double)f->n : 0.0;
}

tg_status gan_class_figures(const tg_tensor *logits, gan_figures *f)
{
    if (!logits || logits->ndim != 2 || logits->shape[0] < 1 || logits->shape[1] < 2 ||
        logits->shape[1] > GAN_MAX_CLASSES) {
        char s[160] = "NULL";
        if (logits)
            tg_shape_str(logits->ndim, logits->shape, s, sizeof s);
        return tg_set_error(TG_ERR_SHAPE,
                            "gan_class_figures: logits %s: expected [N, K] with "
                            "N >= 1 and 2 <= K <= %d",
                            s, GAN_MAX_CLASSES);
    }
    const int64_t n = logits->shape[0];
    const int k = (int)logits->shape[1];
    double *p = malloc(sizeof *p * (size_t)(n * k));
    if (!p)
        return tg_set_error(TG_ERR_NOMEM, "gan_class_figures: out of memory for %lld rows",
                            (long long)n);
    double py[GAN_MAX_CLASSES] = {0}, conf = 0;
    f->n = n;
    f->classes = k;
    memset(f->counts, 0, sizeof f->counts);
    for (int64_t i = 0; i < n; i++) {
        const float *z = logits->data + i * k;
        double *pi = p + i * k, zmax = z[0], sum = 0;
        int best = 0;
        for (int c = 1; c < k; c++)
            if (z[c] > zmax)
                zmax = z[c], best = c;
        for (int c = 0; c < k; c++)
            sum += pi[c] = exp((double)z[c] - zmax);
        for (int c = 0; c < k; c++) {
            pi[c] /= sum;
            py[c] += pi[c];
        }
        conf += pi[best];
        f->counts[best]++;
    }
    for (int c = 0; c < k; c++)
        py[c] /= (double)n;
    /* KL(p(y|x) || p(y)) per image; a zero probability adds nothing (0 log 0 = 0). */
    double kl = 0;
    for (int64_t i = 0; i < n; i++)
        for (int c = 0; c < k; c++) {
            const double q = p[i * k + c];
            if (q > 0)
                kl += q * (log(q) - log(py[c]));
        }
    free(p);
    f->score = exp(kl / (double)n);
    f->confidence = conf / (double)n;
    gan_coverage(f);
    return TG_OK;
}

double gan_mean_white(const tg_tensor *images)
{
    double s = 0;
    for (int64_t i = 0; i < images->numel; i++)
        s += images->data[i];
    return images->numel ? 0.5 * (s / (double)images->numel + 1.0) : NAN;
}

tg_status gan_evaluate_images(clf_model *clf, const tg_tensor *images, const gan_stats *ref,
                              gan_figures *f, gan_stats *own)
{
    memset(f, 0, sizeof *f);
    f->fid = f->diversity = NAN;
    if (own)
        memset(own, 0, sizeof *own);
    tg_tensor *feat = NULL, *logits = NULL;
    gan_stats st_set = {0};
    tg_status st = clf_eval(clf, images, &feat, &logits);
    if (st == TG_OK)
        st = gan_stats_compute(feat, &st_set);
    if (st == TG_OK && ref) {
        st = gan_frechet_distance(ref, &st_set, &f->fid);
        f->diversity = gan_diversity(&st_set, ref);
    }
    if (st == TG_OK)
        st = gan_class_figures(logits, f);
    if (st == TG_OK)
        f->white = gan_mean_white(images);
    tg_tensor_release(feat);
    tg_tensor_release(logits);
    if (st == TG_OK && own)
        *own = st_set;
    else
        gan_stats_free(&st_set);
    return st;
}

/* ---- image sets ------------------------------------------------------------------------------ */

tg_tensor *gan_generate_n(gan_state *s, int64_t n, uint64_t seed)
{
    tg_rng rng;
    tg_rng_seed(&rng, seed);
    /* All the noise first, in one stream, so the images match `mnist_gan sample` with the same
     * seed however they are chunked. */
    tg_tensor *z = tg_tensor_new(TG_DIMS(n, s->nz));
    tg_tensor *out = tg_tensor_new(TG_DIMS(n, 1, 28, 28));
    if (!z || !out || tg_tensor_normal_(z, &rng, 0.0f, 1.0f) != TG_OK) {
        tg_tensor_release(z), tg_tensor_release(out);
        return NULL;
    }
    for (int64_t start = 0; start < n; start += GEN_CHUNK) {
        const int64_t b = n - start < GEN_CHUNK ? n - start : GEN_CHUNK;
        tg_tensor *zc = tg_tensor_from_data(TG_DIMS(b, s->nz), z->data + start * s->nz);
        tg_tensor *img = zc ? gan_generate(s, zc) : NULL;
        tg_tensor_release(zc);
        if (!img || img->numel != b * 28 * 28) {
            if (img)
                tg_set_error(TG_ERR_SHAPE,
                             "gan_generate_n: G made %lld values for %lld images "
                             "of 28x28",
                             (long long)img->numel, (long long)b);
            tg_tensor_release(img), tg_tensor_release(z), tg_tensor_release(out);
            return NULL;
        }
        memcpy(out->data + start * 28 * 28, img->data, sizeof(float) * (size_t)img->numel);
        tg_tensor_release(img);
    }
    tg_tensor_release(z);
    return out;
}

tg_tensor *gan_subset(const tg_tensor *images, int64_t n, uint64_t seed)
{
    const int64_t total = images->shape[0], per = total ? images->numel / total : 0;
    if (n < 1 || n > total) {
        tg_set_error(TG_ERR_ARG, "gan_subset: %lld images asked of a set of %lld", (long long)n,
                     (long long)total);
        return NULL;
    }
    int64_t *idx = malloc(sizeof *idx * (size_t)total);
    int64_t shape[TG_MAX_DIMS];
    memcpy(shape, images->shape, sizeof shape);
    shape[0] = n;
    tg_tensor *out = idx ? tg_tensor_new(images->ndim, shape) : NULL;
    if (!out) {
        free(idx);
        if (tg_last_status() == TG_OK)
            tg_set_error(TG_ERR_NOMEM, "gan_subset: out of memory for %lld images",
                         (long long)total);
        return NULL;
    }
    tg_rng rng;
    tg_rng_seed(&rng, seed);
    tg_rng_permutation(&rng, total, idx);
    for (int64_t i = 0; i < n; i++)
        memcpy(out->data + i * per, images->data + idx[i] * per, sizeof(float) * (size_t)per);
    free(idx);
    return out;
}

/* ---- reports --------------------------------------------------------------------------------- */

void gan_figures_table(FILE *out, int rows, const char *const names[], const gan_figures sets[])
{
    fprintf(out, "%-22s %6s %10s %6s %15s %7s %7s %6s %9s\n", "set", "n", "FID (clf)", "score",
            "rarest class", ">=5%", "conf", "white", "diversity");
    for (int r = 0; r < rows; r++) {
        const gan_figures *f = &sets[r];
        char fid[32], rare[32], cov[16], div[32];
        if (isnan(f->fid))
            snprintf(fid, sizeof fid, "-");
        else
            snprintf(fid, sizeof fid, "%.3f", f->fid);
        if (isnan(f->diversity))
            snprintf(div, sizeof div, "-");
        else
            snprintf(div, sizeof div, "%.3f", f->diversity);
        snprintf(rare, sizeof rare, "%.2f%% (%d)", 100.0 * f->rarest_share, f->rarest_class);
        snprintf(cov, sizeof cov, "%d/%d", f->classes_5pct, f->classes);
        fprintf(out, "%-22s %6lld %10s %6.3f %15s %7s %7.4f %6.4f %9s\n", names[r], (long long)f->n,
                fid, f->score, rare, cov, f->confidence, f->white, div);
    }
    fprintf(out, "\npredicted classes, %% of each set:\n%-22s", "class");
    const int k = rows > 0 ? sets[0].classes : 0;
    for (int c = 0; c < k; c++)
        fprintf(out, " %5d", c);
    fputc('\n', out);
    for (int r = 0; r < rows; r++) {
        fprintf(out, "%-22s", names[r]);
        for (int c = 0; c < sets[r].classes; c++)
            fprintf(out, " %5.1f",
                    sets[r].n ? 100.0 * (double)sets[r].counts[c] / (double)sets[r].n : 0.0);
        fputc('\n', out);
    }
}

static void json_number(FILE *out, double v)
{
    if (isfinite(v))
        fprintf(out, "%.9g", v);
    else
        fputs("null", out);
}

void gan_json_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(out, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(out, "\\u%04x", *p);
        else
            fputc(*p, out);
    }
    fputc('"', out);
}

void gan_figures_json(FILE *out, const gan_figures *f)
{
    fprintf(out, "{\"n\": %lld, \"fid\": ", (long long)f->n);
    json_number(out, f->fid);
    fputs(", \"score\": ", out);
    json_number(out, f->score);
    fputs(", \"rarest_share\": ", out);
    json_number(out, f->rarest_share);
    fprintf(out, ", \"rarest_class\": %d, \"classes_5pct\": %d, \"confidence\": ", f->rarest_class,
            f->classes_5pct);
    json_number(out, f->confidence);
    fputs(", \"white\": ", out);
    json_number(out, f->white);
    fputs(", \"diversity\": ", out);
    json_number(out, f->diversity);
    fputs(", \"counts\": [", out);
    for (int c = 0; c < f->classes; c++)
        fprintf(out, "%s%lld", c ? ", " : "", (long long)f->counts[c]);
    fputs("]}", out);
}

/* ---- evaluation during training ------------------------------------------------------------ */

void gan_tracker_close(gan_tracker *t)
{
    clf_free(t->clf);
    gan_stats_free(&t->ref);
    memset(t, 0, sizeof *t);
}

tg_status gan_tracker_open(gan_tracker *t, const char *classifier, const char *data_dir, int digit,
                           int64_t n, uint64_t seed)
{
    memset(t, 0, sizeof *t);
    t->n = n, t->seed = seed;
    if (!(t->clf = clf_load(classifier, NULL)))
        return tg_last_status();
    tg_dataset *test = tg_data_load_mnist(data_dir, false, digit);
    tg_tensor *real = NULL;
    gan_figures f;
    tg_status st = TG_OK;
    if (!test)
        st = tg_last_status();
    else if (n < 2 || n > test->images->shape[0])
        st = tg_set_error(TG_ERR_ARG,
                          "evaluating on %lld images: the test set of %s has %lld%s "
                          "(2 at least)",
                          (long long)n, data_dir, (long long)test->images->shape[0],
                          digit >= 0 ? " of that digit" : "");
    else if (!(real = gan_subset(test->images, n, GAN_TEST_SUBSET_SEED)))
        st = tg_last_status();
    else
        st = gan_evaluate_images(t->clf, real, NULL, &f, &t->ref);
    tg_tensor_release(real);
    tg_dataset_free(test);
    if (st != TG_OK)
        gan_tracker_close(t);
    return st;
}

tg_status gan_tracker_eval(gan_tracker *t, gan_state *s, gan_figures *f)
{
    tg_tensor *img = gan_generate_n(s, t->n, t->seed);
    tg_status st = img ? gan_evaluate_images(t->clf, img, &t->ref, f, NULL) : tg_last_status();
    tg_tensor_release(img);
    return st;
}
