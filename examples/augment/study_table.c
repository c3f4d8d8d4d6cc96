/* study_table: the augmentation study's table and plot (issue 16; examples/augment/README.md).
 *
 *   study_table OUT
 *
 * OUT is a folder of study.sh: OUT/n<N>-s<seed>/<arm>.jsonl holds mnist_classifier --json's
 * line for each arm (real, classic, cgan, both) and gan_eval.jsonl `mnist_gan eval`'s line for
 * the CGAN the cgan arms drew from. The grid is study.sh's: NS and SEEDS from the environment
 * with its defaults. Writes OUT/study.md (test accuracy per N and arm: mean, sample standard
 * deviation and range over the seeds; each arm's gain over the real arm of the same seed; the
 * CGANs' figures; every run) and OUT/study.svg (accuracy against N, one line per arm, the range
 * over the seeds as a bar). Cells missing runs say how many seeds they hold.
 * Exit status: 0 written, 2 bad input (OUT, the environment), 1 other failures. */
#include "table_util.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { MAX_NS = 16, MAX_SEEDS = 32, N_ARMS = 4 };

static const char *const arms[N_ARMS] = {"real", "classic", "cgan", "both"};
static const char *const arm_titles[N_ARMS] = {"real only", "+ classic", "+ CGAN", "+ both"};
static const char *const arm_colors[N_ARMS] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"};

/* One (N, seed): each arm's test accuracy (NAN: not run yet) and the CGAN's figures. */
typedef struct {
    double acc[N_ARMS];
    double label_acc, fid, diversity; /* NAN when not measured */
} cell;

/* The program name its messages start with. */
static const char prog[] = "study_table";

/* The number `key` of the last line of file dir/name; NAN when absent. */
static double last_number(const char *dir, const char *name, const char *key, const char *after)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *s = tbl_slurp(path);
    if (!s)
        return NAN;
    const char *line = tbl_last_line(s);
    const char *from = after ? strstr(line, after) : line;
    const double v = tbl_json_number(from, key);
    free(s);
    return v;
}

/* Mean, sample standard deviation (NAN below two values), min and max of the finite values
 * among v[0..n); the count of them. */
typedef struct {
    int k;
    double mean, sd, lo, hi;
} summary;

static summary summarize(const double *v, int n)
{
    summary s = {0, NAN, NAN, INFINITY, -INFINITY};
    double sum = 0, sq = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(v[i]))
            s.k++, sum += v[i], s.lo = fmin(s.lo, v[i]), s.hi = fmax(s.hi, v[i]);
    if (!s.k)
        return s;
    s.mean = sum / s.k;
    for (int i = 0; i < n; i++)
        if (isfinite(v[i]))
            sq += (v[i] - s.mean) * (v[i] - s.mean);
    s.sd = s.k > 1 ? sqrt(sq / (s.k - 1)) : NAN;
    return s;
}

/* "98.12 ± 0.31 (97.80-98.40)" in percent, with "[k/n]" when seeds are missing; "-" for none. */
static const char *pct(char *buf, size_t size, summary s, int n, bool sign)
{
    if (!s.k)
        return "-";
    int w = snprintf(buf, size, sign ? "%+.2f" : "%.2f", 100 * s.mean);
    if (s.k > 1)
        w += snprintf(buf + w, size - (size_t)w,
                      sign ? " ± %.2f (%+.2f to %+.2f)" : " ± %.2f (%.2f-%.2f)", 100 * s.sd,
                      100 * s.lo, 100 * s.hi);
    if (s.k < n)
        snprintf(buf + w, size - (size_t)w, " [%d/%d]", s.k, n);
    return buf;
}

/* The plot: accuracy (%) against N images per class on a log axis, each arm's mean joined by
 * a line, its range over the seeds as a vertical bar. */
static void write_svg(FILE *f, int n_ns, const long *ns, summary (*sum)[N_ARMS])
{
    enum { W = 720, H = 420, L = 60, R = 130, T = 20, B = 50 };
    const int pw = W - L - R, ph = H - T - B;
    double ylo = 100, yhi = 0;
    for (int i = 0; i < n_ns; i++)
        for (int a = 0; a < N_ARMS; a++)
            if (sum[i][a].k)
                ylo = fmin(ylo, 100 * sum[i][a].lo), yhi = fmax(yhi, 100 * sum[i][a].hi);
    if (ylo > yhi)
        ylo = 0, yhi = 100;
    ylo = fmax(0, floor(ylo / 5) * 5), yhi = fmin(100, ceil(yhi / 5) * 5);
    if (yhi <= ylo)
        yhi = ylo + 5;
    const double xlo = log10((double)ns[0]), xhi = log10((double)ns[n_ns - 1]);
    const tbl_plot p = {L, T, pw, ph, ylo, yhi};
#define PX(n) (L + (xhi > xlo ? pw * (log10((double)(n)) - xlo) / (xhi - xlo) : pw / 2.0))
#define PY(v) tbl_plot_y(&p, v)
    tbl_svg_begin(f, W, H);
    tbl_svg_axes(f, &p, 5, "%.0f%%", "real training images per class (log scale)", "test accuracy");
    for (int i = 0; i < n_ns; i++)
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" font-size=\"11\" text-anchor=\"middle\">%ld</text>\n",
                PX(ns[i]), T + ph + 15, ns[i]);
    for (int a = 0; a < N_ARMS; a++) {
        /* a small sideways offset per arm keeps the bars apart */
        const double dx = (a - 1.5) * 4;
        fprintf(f,
                "<polyline class=\"arm\" data-name=\"%s\" fill=\"none\" stroke=\"%s\" "
                "stroke-width=\"1.5\" points=\"",
                arms[a], arm_colors[a]);
        for (int i = 0; i < n_ns; i++)
            if (sum[i][a].k)
                fprintf(f, "%.1f,%.1f ", PX(ns[i]) + dx, PY(100 * sum[i][a].mean));
        fprintf(f, "\"/>\n");
        for (int i = 0; i < n_ns; i++) {
            const summary s = sum[i][a];
            if (!s.k)
                continue;
            fprintf(f,
                    "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>"
                    "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n",
                    PX(ns[i]) + dx, PY(100 * s.lo), PX(ns[i]) + dx, PY(100 * s.hi), arm_colors[a],
                    PX(ns[i]) + dx, PY(100 * s.mean), arm_colors[a]);
        }
        fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"12\" fill=\"%s\">%s</text>\n", L + pw + 10,
                T + 14 + 18 * a, arm_colors[a], arm_titles[a]);
    }
    fprintf(f, "</svg>\n");
#undef PX
#undef PY
}

/* Writes path atomically enough for a table: a .part file renamed over it. */
static FILE *open_part(const char *path, char *part, size_t size)
{
    snprintf(part, size, "%s.part", path);
    return fopen(part, "w");
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return tbl_fail(prog, 2, "usage: study_table OUT (a folder of examples/augment/study.sh)");
    const char *out = argv[1];
    struct stat st;
    if (stat(out, &st) != 0 || !S_ISDIR(st.st_mode))
        return tbl_fail(prog, 2, "%s is not a folder", out);
    char ns_s[MAX_NS][TBL_NAME_MAX], seeds[MAX_SEEDS][TBL_NAME_MAX];
    const int n_ns = tbl_words("NS", "10 50 100 500", MAX_NS, ns_s),
              n_seeds = tbl_words("SEEDS", "1 2 3", MAX_SEEDS, seeds);
    if (n_ns < 1 || n_seeds < 1)
        return tbl_fail(prog, 2, "NS and SEEDS must each hold 1 to %d/%d words", MAX_NS, MAX_SEEDS);
    long ns[MAX_NS];
    for (int i = 0; i < n_ns; i++) {
        char *end;
        ns[i] = strtol(ns_s[i], &end, 10);
        if (*end || ns[i] < 1 || (i && ns[i] <= ns[i - 1]))
            return tbl_fail(prog, 2, "NS: '%s' is not a whole number above the one before it",
                            ns_s[i]);
    }
    static cell cells[MAX_NS][MAX_SEEDS];
    char example[4200] = "";
    for (int i = 0; i < n_ns; i++)
        for (int j = 0; j < n_seeds; j++) {
            char dir[4096];
            snprintf(dir, sizeof dir, "%s/n%ld-s%s", out, ns[i], seeds[j]);
            cell *c = &cells[i][j];
            for (int a = 0; a < N_ARMS; a++) {
                char name[64];
                snprintf(name, sizeof name, "%s.jsonl", arms[a]);
                c->acc[a] = last_number(dir, name, "test_accuracy", NULL);
                if (!*example && isfinite(c->acc[a]))
                    snprintf(example, sizeof example, "%s/%s", dir, name);
            }
            c->label_acc = last_number(dir, "gan_eval.jsonl", "label_accuracy", NULL);
            c->fid = last_number(dir, "gan_eval.jsonl", "fid", "\"generated\"");
            c->diversity = last_number(dir, "gan_eval.jsonl", "diversity", "\"generated\"");
        }
    summary sum[MAX_NS][N_ARMS], gain[MAX_NS][N_ARMS];
    for (int i = 0; i < n_ns; i++)
        for (int a = 0; a < N_ARMS; a++) {
            double v[MAX_SEEDS], d[MAX_SEEDS];
            for (int j = 0; j < n_seeds; j++)
                v[j] = cells[i][j].acc[a], d[j] = cells[i][j].acc[a] - cells[i][j].acc[0];
            sum[i][a] = summarize(v, n_seeds), gain[i][a] = summarize(d, n_seeds);
        }

    char path[4096], part[4200];
    snprintf(path, sizeof path, "%s/study.md", out);
    FILE *f = open_part(path, part, sizeof part);
    if (!f)
        return tbl_fail(prog, 1, "cannot write %s", part);
    fprintf(f, "# Can a GAN's samples augment a small training set?\n\n");
    fprintf(f,
            "Test accuracy (%%, the full MNIST test set) of `mnist_classifier` trained on N real "
            "images per class (`--train-per-class N --seed S`), in four arms: the real images "
            "only, with classic augmentation, with CGAN samples (a conditional GAN trained on "
            "the same N images per class), with both. Mean ± sample standard deviation "
            "(range) over the seeds");
    char *ex = *example ? tbl_slurp(example) : NULL;
    if (ex) {
        const char *l = tbl_last_line(ex);
        fprintf(f,
                ". Every arm's schedule is the same: %.0f optimizer steps of batch %.0f, Adam "
                "%g decayed x%g in %.0f stages, dropout %g; the cgan arms draw %.0f of each "
                "batch's images from the generated set",
                tbl_json_number(l, "steps"), tbl_json_number(l, "batch"), tbl_json_number(l, "lr"),
                tbl_json_number(l, "lr_decay"), tbl_json_number(l, "stages"),
                tbl_json_number(l, "dropout"), tbl_json_number(l, "batch") * 0.5);
        free(ex);
    }
    fprintf(f, ". Made by `examples/augment/study_table` from `%s`.\n\n", out);
    char b[N_ARMS][160];
    fprintf(f, "| N per class |");
    for (int a = 0; a < N_ARMS; a++)
        fprintf(f, " %s |", arm_titles[a]);
    fprintf(f, "\n|---:|");
    for (int a = 0; a < N_ARMS; a++)
        fprintf(f, "---:|");
    fprintf(f, "\n");
    for (int i = 0; i < n_ns; i++) {
        fprintf(f, "| %ld |", ns[i]);
        for (int a = 0; a < N_ARMS; a++)
            fprintf(f, " %s |", pct(b[a], sizeof b[a], sum[i][a], n_seeds, false));
        fprintf(f, "\n");
    }
    fprintf(f,
            "\nGain over the real-only arm of the same seed (points; paired):\n\n| N per class |");
    for (int a = 1; a < N_ARMS; a++)
        fprintf(f, " %s |", arm_titles[a]);
    fprintf(f, "\n|---:|---:|---:|---:|\n");
    for (int i = 0; i < n_ns; i++) {
        fprintf(f, "| %ld |", ns[i]);
        for (int a = 1; a < N_ARMS; a++)
            fprintf(f, " %s |", pct(b[a], sizeof b[a], gain[i][a], n_seeds, true));
        fprintf(f, "\n");
    }
    fprintf(f, "\nThe CGANs (`mnist_gan eval` of each, balanced labels): label accuracy is the "
               "share of its samples the reference classifier assigns the digit they were drawn "
               "for.\n\n| N per class | seed | label accuracy | FID | diversity |\n"
               "|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < n_ns; i++)
        for (int j = 0; j < n_seeds; j++) {
            const cell *c = &cells[i][j];
            if (isnan(c->label_acc) && isnan(c->fid))
                continue;
            fprintf(f, "| %ld | %s | %.1f%% | %.1f | %.2f |\n", ns[i], seeds[j], 100 * c->label_acc,
                    c->fid, c->diversity);
        }
    fprintf(f, "\nEvery run (test accuracy, %%; - not run yet):\n\n| N per class | seed |");
    for (int a = 0; a < N_ARMS; a++)
        fprintf(f, " %s |", arm_titles[a]);
    fprintf(f, "\n|---:|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < n_ns; i++)
        for (int j = 0; j < n_seeds; j++) {
            fprintf(f, "| %ld | %s |", ns[i], seeds[j]);
            for (int a = 0; a < N_ARMS; a++)
                if (isfinite(cells[i][j].acc[a]))
                    fprintf(f, " %.2f |", 100 * cells[i][j].acc[a]);
                else
                    fprintf(f, " - |");
            fprintf(f, "\n");
        }
    if (fclose(f) != 0 || rename(part, path) != 0)
        return tbl_fail(prog, 1, "cannot write %s", path);

    snprintf(path, sizeof path, "%s/study.svg", out);
    if (!(f = open_part(path, part, sizeof part)))
        return tbl_fail(prog, 1, "cannot write %s", part);
    write_svg(f, n_ns, ns, sum);
    if (fclose(f) != 0 || rename(part, path) != 0)
        return tbl_fail(prog, 1, "cannot write %s", path);
    printf("study_table: %s/study.md and %s/study.svg\n", out, out);
    return 0;
}
