/* losses.csv and report.html: the loss log a user plots, and the VisualDL-like page with loss
 * curves (inline SVG) and the latest sample grid (embedded), needing no server or network. */
#include "report.h"
#include "metrics.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t it, epoch, batch;
    gan_losses l;
    double seconds;
} log_row;

/* One measurement of G (train --eval-every). */
typedef struct {
    int64_t it;
    gan_figures f;
} eval_row;

struct gan_log {
    char *csv_path, *html_path, *svg_path;
    FILE *csv;
    log_row *rows;
    int64_t n, cap;
    char *eval_path; /* OUT/eval.csv */
    FILE *eval_csv;  /* NULL until the first measurement */
    eval_row *evals;
    int64_t n_eval, cap_eval;
    bool wgan; /* the wgan-gp recipe's columns */
};

static const char csv_header[] = "iteration,epoch,batch,d_real,d_fake,g,seconds\n";
static const char wgan_csv_header[] =
    "iteration,epoch,batch,critic,wasserstein,penalty,g,seconds\n";

/* diversity came last, after n, so that files written before it still read (as NAN there). */
static const char eval_header[] =
    "iteration,fid,score,rarest_share,rarest_class,classes_5pct,confidence,white,n,diversity\n";

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static bool push_row(gan_log *g, const log_row *r)
{
    if (g->n == g->cap) {
        int64_t cap = g->cap ? 2 * g->cap : 1024;
        log_row *p = realloc(g->rows, sizeof *p * (size_t)cap);
        if (!p)
            return false;
        g->rows = p, g->cap = cap;
    }
    g->rows[g->n++] = *r;
    return true;
}

/* One CSV row; the losses in %.9g so a resumed run's rows compare bit for bit. */
static void write_row(const gan_log *g, FILE *f, const log_row *r)
{
    fprintf(f, "%lld,%lld,%lld,", (long long)r->it, (long long)r->epoch, (long long)r->batch);
    if (g->wgan)
        fprintf(f, "%.9g,%.9g,%.9g,%.9g,%.3f\n", r->l.critic, r->l.wasserstein, r->l.penalty,
                r->l.g, r->seconds);
    else
        fprintf(f, "%.9g,%.9g,%.9g,%.3f\n", r->l.d_real, r->l.d_fake, r->l.g, r->seconds);
}

/* Reads a row write_row wrote into *r; false for anything else (a torn last line). */
static bool read_row(const gan_log *g, const char *line, log_row *r)
{
    long long it, ep, b;
    *r = (log_row){0};
    if (g->wgan ? sscanf(line, "%lld,%lld,%lld,%f,%f,%f,%f,%lf", &it, &ep, &b, &r->l.critic,
                         &r->l.wasserstein, &r->l.penalty, &r->l.g, &r->seconds) != 8
                : sscanf(line, "%lld,%lld,%lld,%f,%f,%f,%lf", &it, &ep, &b, &r->l.d_real,
                         &r->l.d_fake, &r->l.g, &r->seconds) != 7)
        return false;
    r->it = it, r->epoch = ep, r->batch = b;
    return true;
}

void gan_log_close(gan_log *g)
{
    if (!g)
        return;
    if (g->csv)
        fclose(g->csv);
    free(g->csv_path);
    free(g->html_path);
    free(g->svg_path);
    free(g->rows);
    if (g->eval_csv)
        fclose(g->eval_csv);
    free(g->eval_path);
    free(g->evals);
    free(g);
}

static bool push_eval(gan_log *g, const eval_row *r)
{
    if (g->n_eval == g->cap_eval) {
        int64_t cap = g->cap_eval ? 2 * g->cap_eval : 64;
        eval_row *p = realloc(g->evals, sizeof *p * (size_t)cap);
        if (!p)
            return false;
        g->evals = p, g->cap_eval = cap;
    }
    g->evals[g->n_eval++] = *r;
    return true;
}

static void write_eval(FILE *f, const eval_row *r)
{
    fprintf(f, "%lld,%.9g,%.9g,%.9g,%d,%d,%.9g,%.9g,%lld,%.9g\n", (long long)r->it, r->f.fid,
            r->f.score, r->f.rarest_share, r->f.rarest_class, r->f.classes_5pct, r->f.confidence,
            r->f.white, (long long)r->f.n, r->f.diversity);
}

/* An existing OUT/eval.csv keeps its rows up to keep_until (none for a new run), as
 * losses.csv; without one, the file is made at the first measurement. Every file of the run is
 * opened with tg_data_fopen_regular: a FIFO put in its place is refused, not waited on. */
static bool eval_log_open(gan_log *g, int64_t keep_until)
{
    FILE *f = tg_data_fopen_regular(g->eval_path, "r");
    if (!f)
        return true; /* none (anything but a regular file there, train refused at its start) */
    char line[512];
    bool header = true;
    while (fgets(line, sizeof line, f)) {
        if (header) {
            header = false;
            continue;
        }
        eval_row r = {.f.diversity = NAN};
        long long it, n;
        if (sscanf(line, "%lld,%lf,%lf,%lf,%d,%d,%lf,%lf,%lld,%lf", &it, &r.f.fid, &r.f.score,
                   &r.f.rarest_share, &r.f.rarest_class, &r.f.classes_5pct, &r.f.confidence,
                   &r.f.white, &n, &r.f.diversity) < 9 ||
            it > keep_until)
            break;
        r.it = it, r.f.n = n, r.f.classes = CLF_CLASSES;
        if (!push_eval(g, &r))
            break;
    }
    fclose(f);
    tg_atomic_file *af = tg_atomic_open(g->eval_path);
    if (!af)
        return false;
    fputs(eval_header, tg_atomic_stream(af));
    for (int64_t i = 0; i < g->n_eval; i++)
        write_eval(tg_atomic_stream(af), &g->evals[i]);
    return tg_atomic_commit(af) == TG_OK &&
           (g->eval_csv = tg_data_fopen_regular(g->eval_path, "a")) != NULL;
}

tg_status gan_log_eval(gan_log *g, int64_t it, const gan_figures *f)
{
    eval_row r = {it, *f};
    if (!push_eval(g, &r))
        return tg_set_error(TG_ERR_NOMEM, "gan_log_eval: out of memory");
    if (!g->eval_csv) {
        if (!(g->eval_csv = tg_data_fopen_regular(g->eval_path, "w")))
            return tg_last_status();
        fputs(eval_header, g->eval_csv);
    }
    write_eval(g->eval_csv, &r);
    if (fflush(g->eval_csv) != 0 || ferror(g->eval_csv))
        return tg_set_error(TG_ERR_IO, "gan_log_eval: writing %s: %s", g->eval_path,
                            strerror(errno));
    return TG_OK;
}

gan_log *gan_log_open(const char *out_dir, int64_t keep_until, gan_recipe recipe)
{
    gan_log *g = calloc(1, sizeof *g);
    if (g)
        g->wgan = recipe == GAN_RECIPE_WGAN_GP;
    if (!g || !(g->csv_path = join(out_dir, "losses.csv")) ||
        !(g->html_path = join(out_dir, "report.html")) ||
        !(g->svg_path = join(out_dir, "losses.svg")) ||
        !(g->eval_path = join(out_dir, "eval.csv"))) {
        gan_log_close(g);
        tg_set_error(TG_ERR_NOMEM, "gan_log_open: out of memory");
        return NULL;
    }
    if (keep_until >= 0) {
        /* Resuming: keep the rows up to the checkpoint's iteration; rows written after it (by a
         * run that stopped before its next checkpoint) are replayed by this run. */
        FILE *f = tg_data_fopen_regular(g->csv_path, "r");
        char line[512];
        if (f) {
            bool header = true;
            while (fgets(line, sizeof line, f)) {
                if (header) {
                    header = false;
                    continue;
                }
                log_row r;
                if (!read_row(g, line, &r))
                    break; /* a torn last line */
                if (r.it > keep_until)
                    break;
                if (!push_row(g, &r))
                    break;
            }
            fclose(f);
        }
    }
    /* Rewrite the kept rows atomically, then append to the file from here on. */
    tg_atomic_file *af = tg_atomic_open(g->csv_path);
    if (!af) {
        gan_log_close(g);
        return NULL;
    }
    fputs(g->wgan ? wgan_csv_header : csv_header, tg_atomic_stream(af));
    for (int64_t i = 0; i < g->n; i++)
        write_row(g, tg_atomic_stream(af), &g->rows[i]);
    if (tg_atomic_commit(af) != TG_OK || !(g->csv = tg_data_fopen_regular(g->csv_path, "a"))) {
        gan_log_close(g);
        return NULL;
    }
    if (!eval_log_open(g, keep_until)) {
        gan_log_close(g);
        return NULL;
    }
    return g;
}

tg_status gan_log_row(gan_log *g, int64_t it, int64_t epoch, int64_t batch, const gan_losses *l,
                      double seconds)
{
    log_row r = {it, epoch, batch, *l, seconds};
    if (!push_row(g, &r))
        return tg_set_error(TG_ERR_NOMEM, "gan_log_row: out of memory");
    write_row(g, g->csv, &r);
    if (fflush(g->csv) != 0 || ferror(g->csv))
        return tg_set_error(TG_ERR_IO, "gan_log_row: writing %s: %s", g->csv_path, strerror(errno));
    return TG_OK;
}

/* ---- report.html ---------------------------------------------------------------------------- */

static void base64(FILE *out, const unsigned char *b, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)b[i] << 16 | (i + 1 < n ? (uint32_t)b[i + 1] << 8 : 0) |
                     (i + 2 < n ? b[i + 2] : 0);
        fputc(tab[v >> 18 & 63], out);
        fputc(tab[v >> 12 & 63], out);
        fputc(i + 1 < n ? tab[v >> 6 & 63] : '=', out);
        fputc(i + 2 < n ? tab[v & 63] : '=', out);
    }
}

/* A line chart as inline SVG: series of (x, y) points, y from 0 (or a little below the
 * smallest value when one is negative: a WGAN critic's loss) to a little above the largest
 * value, the legend to the right of the plot. Used for the losses and the FID curve. */
typedef struct {
    const char *id; /* the svg element's id */
    int height;
    int n_series;
    const char *const *keys;                  /* each polyline's data-name, for scripts and tests */
    const char *const *names, *const *colors; /* legend text and colour */
    int64_t n;                                /* points per series (already bucketed) */
    /* point i of series s */
    void (*point)(const gan_log *g, int s, int64_t i, int64_t n, double *x, double *y);
    bool dots; /* mark each point (few measurements) */
} chart;

enum { CHART_W = 900, CHART_L = 50, CHART_R = 130, CHART_T = 10, CHART_B = 30 };

/* The height of value v in a plot of ph pixels showing [ymin, ymax]; a value that is not
 * finite sits at the top. */
static double chart_y(double v, double ymin, double ymax, int ph)
{
    return CHART_T + ph * (1.0 - ((isfinite(v) ? v : ymax) - ymin) / (ymax - ymin));
}

static void svg_chart(FILE *f, const gan_log *g, const chart *c)
{
    const int H = c->height, pw = CHART_W - CHART_L - CHART_R, ph = H - CHART_T - CHART_B;
    double xmax = 1, ymin = 0, ymax = 0, x, y;
    for (int s = 0; s < c->n_series; s++)
        for (int64_t i = 0; i < c->n; i++) {
            c->point(g, s, i, c->n, &x, &y);
            xmax = fmax(xmax, x);
            if (isfinite(y))
                ymin = fmin(ymin, y), ymax = fmax(ymax, y);
        }
    /* headroom: the top and bottom curves stay inside */
    ymax = ymax > 0 ? ymax * 1.08 : ymin < 0 ? 0.0 : 1.0;
    ymin *= 1.08;
    fprintf(f,
            "<svg id=\"%s\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" "
            "height=\"%d\" viewBox=\"0 0 %d %d\">\n",
            c->id, CHART_W, H, CHART_W, H);
    fprintf(f,
            "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"#fafafa\" "
            "stroke=\"#999\"/>\n",
            CHART_L, CHART_T, pw, ph);
    for (int k = 0; k <= 4; k++)
        fprintf(f,
                "<text x=\"%d\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\">%.3g"
                "</text>\n",
                CHART_L - 4, CHART_T + ph * (1.0 - k / 4.0) + 4, ymin + (ymax - ymin) * k / 4.0);
    if (ymin < 0) /* where 0 is, when the plot goes below it */
        fprintf(f,
                "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#999\" "
                "stroke-dasharray=\"4,3\"/>\n",
                CHART_L, chart_y(0, ymin, ymax, ph), CHART_L + pw, chart_y(0, ymin, ymax, ph));
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"11\">iteration 0</text>\n", CHART_L, H - 10);
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"end\">%.0f</text>\n",
            CHART_L + pw, H - 10, xmax);
    for (int s = 0; s < c->n_series; s++) {
        fprintf(f,
                "<polyline class=\"curve\" data-name=\"%s\" fill=\"none\" "
                "stroke=\"%s\" stroke-width=\"1.2\" points=\"",
                c->keys[s], c->colors[s]);
        for (int64_t i = 0; i < c->n; i++) {
            c->point(g, s, i, c->n, &x, &y);
            fprintf(f, "%.1f,%.1f ", CHART_L + pw * x / xmax, chart_y(y, ymin, ymax, ph));
        }
        fprintf(f, "\"/>\n");
        for (int64_t i = 0; c->dots && i < c->n; i++) {
            c->point(g, s, i, c->n, &x, &y);
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"/>\n",
                    CHART_L + pw * x / xmax, chart_y(y, ymin, ymax, ph), c->colors[s]);
        }
        fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"12\" fill=\"%s\">%s</text>\n",
                CHART_L + pw + 10, CHART_T + 14 + 16 * s, c->colors[s], c->names[s]);
    }
    fprintf(f, "</svg>\n");
}

/* Most points a loss curve gets: each is the mean of its bucket of rows. */
#define LOSS_POINTS 1000

static int64_t loss_points(const gan_log *g)
{
    return g->n < LOSS_POINTS ? g->n : LOSS_POINTS;
}

static void loss_point(const gan_log *g, int s, int64_t b, int64_t buckets, double *x, double *y)
{
    int64_t lo = b * g->n / buckets, hi = (b + 1) * g->n / buckets;
    double sx = 0, sy = 0;
    for (int64_t i = lo; i < hi; i++) {
        const gan_losses *l = &g->rows[i].l;
        const float wgan_v[4] = {l->critic, l->wasserstein, l->penalty, l->g};
        const float v[3] = {l->d_real, l->d_fake, l->g};
        sx += (double)g->rows[i].it;
        sy += g->wgan ? wgan_v[s] : v[s];
    }
    *x = sx / (double)(hi - lo);
    *y = sy / (double)(hi - lo);
}

static void fid_point(const gan_log *g, int s, int64_t i, int64_t n, double *x, double *y)
{
    (void)s, (void)n;
    *x = (double)g->evals[i].it;
    *y = g->evals[i].f.fid;
}

static const char *const loss_names[3] = {"d_real", "d_fake", "g"};
static const char *const wgan_names[4] = {"critic", "wasserstein", "penalty", "g"};
static const char *const loss_colors[3] = {"#1f77b4", "#ff7f0e", "#2ca02c"};
static const char *const wgan_colors[4] = {"#1f77b4", "#ff7f0e", "#9467bd", "#2ca02c"};
static const char *const fid_keys[1] = {"fid"};
static const char *const fid_names[1] = {"FID (classifier)"};
static const char *const fid_colors[1] = {"#d62728"};

static void svg_curves(FILE *f, const gan_log *g)
{
    const char *const *names = g->wgan ? wgan_names : loss_names;
    chart c = {"losses",       360,        g->wgan ? 4 : 3,
               names,          names,      g->wgan ? wgan_colors : loss_colors,
               loss_points(g), loss_point, false};
    svg_chart(f, g, &c);
}

/* The FID curve of train --eval-every: one point per measurement. */
static void svg_fid(FILE *f, const gan_log *g)
{
    chart c = {"fid",      240,       1,         fid_keys,        fid_names,
               fid_colors, g->n_eval, fid_point, g->n_eval <= 200};
    svg_chart(f, g, &c);
}

tg_status gan_log_report(gan_log *g, const char *png_path, const char *title)
{
    /* The curves alone as OUT/losses.svg, for a README or a paper. */
    tg_atomic_file *svg = tg_atomic_open(g->svg_path);
    if (!svg)
        return tg_last_status();
    fprintf(tg_atomic_stream(svg), "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    svg_curves(tg_atomic_stream(svg), g);
    if (tg_atomic_commit(svg) != TG_OK)
        return tg_last_status();

    unsigned char *png = NULL;
    long png_n = 0;
    FILE *pf = png_path ? tg_data_fopen_regular(png_path, "rb") : NULL;
    if (pf) {
        fseek(pf, 0, SEEK_END);
        png_n = ftell(pf);
        fseek(pf, 0, SEEK_SET);
        png = png_n > 0 ? malloc((size_t)png_n) : NULL;
        if (png && fread(png, 1, (size_t)png_n, pf) != (size_t)png_n)
            png_n = 0;
        fclose(pf);
    }
    tg_atomic_file *af = tg_atomic_open(g->html_path);
    if (!af) {
        free(png);
        return tg_last_status();
    }
    FILE *f = tg_atomic_stream(af);
    const log_row *last = g->n ? &g->rows[g->n - 1] : NULL;
    fprintf(f,
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>mnist_gan: %s"
            "</title>\n<style>body{font-family:sans-serif;margin:2em}img{image-rendering:"
            "pixelated;width:%s}</style></head><body>\n<h1>mnist_gan</h1>\n<p>%s</p>\n",
            title, "720px", title);
    if (last)
        fprintf(f, "<p id=\"status\">iteration %lld (epoch %lld, batch %lld), %.0f s: ",
                (long long)last->it, (long long)last->epoch, (long long)last->batch, last->seconds);
    if (last && g->wgan)
        fprintf(f, "critic %.4f, wasserstein %.4f, penalty %.4f, g %.4f</p>\n", last->l.critic,
                last->l.wasserstein, last->l.penalty, last->l.g);
    else if (last)
        fprintf(f, "d_real %.4f, d_fake %.4f, g %.4f</p>\n", last->l.d_real, last->l.d_fake,
                last->l.g);
    fprintf(f, "<h2>Losses</h2>\n");
    svg_curves(f, g);
    if (g->n_eval > 0) {
        const eval_row *e = &g->evals[g->n_eval - 1];
        fprintf(f,
                "<h2>FID (classifier features)</h2>\n<p id=\"eval\">iteration %lld, %lld "
                "images: FID %.3f, score %.3f, rarest class %d at %.1f%%, %d/%d classes "
                "&ge; 5%%, white %.3f, diversity %.3f (OUT/eval.csv)</p>\n",
                (long long)e->it, (long long)e->f.n, e->f.fid, e->f.score, e->f.rarest_class,
                100.0 * e->f.rarest_share, e->f.classes_5pct, e->f.classes, e->f.white,
                e->f.diversity);
        svg_fid(f, g);
    }
    if (png_n > 0) {
        fprintf(f,
                "<h2>Latest samples</h2>\n<img id=\"samples\" alt=\"%s\" "
                "src=\"data:image/png;base64,",
                png_path);
        base64(f, png, (size_t)png_n);
        fprintf(f, "\">\n");
    }
    fprintf(f, "</body></html>\n");
    free(png);
    return tg_atomic_commit(af);
}
