/* per_digit_table: the table of the per-digit experiment (issue 16; examples/augment/README.md).
 *
 *   per_digit_table OUT
 *
 * OUT is a folder of per_digit_train.sh; per_digit_table.sh has measured every finished run
 * into OUT/<run>/per_digit_eval.jsonl (`mnist_gan eval`'s JSON line) first. The grid is
 * per_digit_train.sh's: RECIPES, DIGITS and SEEDS from the environment with its defaults, plus
 * any run folder found beyond it. Writes OUT/per_digit.md: per digit and recipe, how many seeds
 * are black, single mode, off digit or healthy by metrics.h's gan_collapse, the means of white,
 * diversity, digit share and FID, and for each collapsed run the first measurement of its
 * eval.csv (train --eval-every) with the same verdict; then every run, and the runs not
 * finished or not measured. And OUT/per_digit.svg: a panel per recipe, each run's white over its
 * eval.csv in its verdict's colour. Exit status: 0 written, 2 bad input (OUT, the
 * environment), 1 other failures. */
#include "metrics.h"
#include "table_util.h"
#include "tapegrad.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { MAX_RECIPES = 8, MAX_DIGITS = 10, MAX_SEEDS = 32 };

/* per_digit_train.sh's defaults. */
static const char DEFAULT_RECIPES[] = "tutorial dcgan wgan-gp";
static const char DEFAULT_DIGITS[] = "0 1 2 3 4 5 6 7 8 9";
static const char DEFAULT_SEEDS[] = "1 2 3";
/* The file per_digit_table.sh caches each run's measurement in. */
static const char EVAL_CACHE[] = "per_digit_eval.jsonl";

typedef enum { RUN_NOT_STARTED, RUN_RUNNING, RUN_NOT_MEASURED, RUN_MEASURED } run_state;

typedef struct {
    run_state state;
    long long progress;     /* the last iteration in losses.csv; -1 none */
    long long iteration, n; /* of the measurement */
    double white, diversity, fid;
    double share;                 /* gan_digit_share of the generated images; NAN unknown */
    char generator[TBL_NAME_MAX]; /* as eval names it; "" in lines from before it did */
    gan_collapse_kind kind;
    long long first; /* the first eval.csv iteration with the same verdict; -1 none */
    /* eval.csv's rows (train --eval-every), each an iteration, white and diversity (NAN where
     * eval.csv has no such column: runs of builds before it); none when it cannot be read. */
    int rows;
    double *it, *row_white, *row_div;
    bool csv_has_diversity;
} run_info;

/* The program name its messages start with. */
static const char prog[] = "per_digit_table";

/* Field col of a list as a number: fields end at a comma, the list at any other character of
 * stop (a CSV line's ",\n", a JSON array's ",]"); NAN when missing. */
static double field(const char *list, int col, const char *stop)
{
    for (int c = 0; c < col; c++) {
        list += strcspn(list, stop);
        if (*list != ',')
            return NAN;
        list++;
    }
    char *end;
    const double v = strtod(list, &end);
    return end > list ? v : NAN;
}

/* The digit share of eval's JSON line: its digit_share, or (lines of builds before it) the
 * generated images' count of the line's digit over their n; NAN when the line has neither. */
static double digit_share(const char *line, const char *gen)
{
    const double share = tbl_json_number(line, "digit_share");
    if (!isnan(share))
        return share;
    const double digit = tbl_json_number(line, "digit"), n = tbl_json_number(gen, "n");
    const char *p = strstr(gen, "\"counts\": [");
    if (!p || isnan(digit) || digit < 0 || digit >= GAN_MAX_CLASSES || !(n > 0))
        return NAN;
    return field(p + strlen("\"counts\": ["), (int)digit, ",]") / n;
}

/* The run's measurement from its cache: false when the line is not eval's. */
static bool read_measurement(const char *json, run_info *r)
{
    const char *line = tbl_last_line(json);
    const char *gen = strstr(line, "\"generated\": {");
    if (!gen)
        return false;
    r->iteration = (long long)tbl_json_number(line, "iteration");
    r->n = (long long)tbl_json_number(line, "n"); /* the top level's n comes first */
    r->white = tbl_json_number(gen, "white");
    r->diversity = tbl_json_number(gen, "diversity");
    r->fid = tbl_json_number(gen, "fid");
    r->share = digit_share(line, gen);
    tbl_json_string(line, "generator", r->generator, sizeof r->generator);
    if (isnan(r->white))
        return false;
    r->kind = gan_collapse(r->white, gan_white_floor(r->generator), r->diversity, r->share);
    return true;
}

/* The column of name in eval.csv's header line, or -1. */
static int column(const char *header, const char *name)
{
    const size_t len = strlen(name);
    int col = 0;
    for (const char *p = header; *p && *p != '\n'; col++) {
        const size_t w = strcspn(p, ",\n");
        if (w == len && !strncmp(p, name, len))
            return col;
        p += w;
        if (*p == ',')
            p++;
    }
    return -1;
}

/* r's rows of the run's eval.csv; none when it has none, or no iteration or white column. */
static void read_curve(const char *dir, run_info *r)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/eval.csv", dir);
    char *csv = tbl_slurp(path);
    r->rows = 0;
    if (!csv)
        return;
    const int c_it = column(csv, "iteration"), c_white = column(csv, "white"),
              c_div = column(csv, "diversity");
    int lines = 0;
    for (const char *p = strchr(csv, '\n'); p; p = strchr(p + 1, '\n'))
        lines++;
    r->csv_has_diversity = c_div >= 0;
    if (c_it >= 0 && c_white >= 0 && lines > 0 && (r->it = malloc(3 * lines * sizeof(double)))) {
        r->row_white = r->it + lines, r->row_div = r->it + 2 * lines;
        for (const char *line = strchr(csv, '\n'); line && line[1]; line = strchr(line + 1, '\n')) {
            const double it = field(line + 1, c_it, ",\n"), white = field(line + 1, c_white, ",\n");
            if (isnan(it) || isnan(white))
                continue;
            r->it[r->rows] = it, r->row_white[r->rows] = white;
            r->row_div[r->rows++] = c_div >= 0 ? field(line + 1, c_div, ",\n") : NAN;
        }
    }
    free(csv);
}

/* r->first: the first row of the run's eval.csv whose own verdict is r->kind (eval.csv has no
 * digit share: off digit is never found there). */
static void first_crossing(run_info *r)
{
    r->first = -1;
    const double white_floor = gan_white_floor(r->generator);
    for (int i = 0; i < r->rows; i++)
        if (gan_collapse(r->row_white[i], white_floor, r->row_div[i], NAN) == r->kind) {
            r->first = (long long)r->it[i];
            return;
        }
}

/* The last iteration in the run's losses.csv, or -1. */
static long long progress(const char *dir)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/losses.csv", dir);
    char *csv = tbl_slurp(path);
    if (!csv)
        return -1;
    const char *line = tbl_last_line(csv);
    const double it = *line >= '0' && *line <= '9' ? field(line, 0, ",\n") : NAN;
    free(csv);
    return isnan(it) ? -1 : (long long)it;
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static void read_run(const char *out, const char *name, run_info *r)
{
    char dir[4100], path[4200];
    snprintf(dir, sizeof dir, "%s/%s", out, name);
    *r = (run_info){.state = RUN_NOT_STARTED, .progress = -1, .first = -1};
    if (!exists(dir))
        return;
    r->progress = progress(dir);
    read_curve(dir, r);
    snprintf(path, sizeof path, "%s/done", dir);
    if (!exists(path)) {
        r->state = RUN_RUNNING;
        return;
    }
    snprintf(path, sizeof path, "%s/%s", dir, EVAL_CACHE);
    char *json = tbl_slurp(path);
    r->state = json && read_measurement(json, r) ? RUN_MEASURED : RUN_NOT_MEASURED;
    free(json);
    if (r->state == RUN_MEASURED && r->kind != GAN_COLLAPSE_NONE)
        first_crossing(r);
}

/* A figure for the page: "-" when unknown. */
static const char *num(char *buf, size_t size, const char *fmt, double v)
{
    if (isnan(v))
        snprintf(buf, size, "-");
    else
        snprintf(buf, size, fmt, v);
    return buf;
}

/* "s2 at 400" (or why there is no iteration) for a collapsed run, into buf; the seed is a
 * name of tbl_words() (shorter than TBL_NAME_MAX). */
static const char *crossing(char *buf, size_t size, const char *seed, const run_info *r)
{
    if (r->first >= 0)
        snprintf(buf, size, "s%.31s at %lld", seed, r->first);
    else if (r->kind == GAN_COLLAPSE_SINGLE_MODE && !r->csv_has_diversity)
        snprintf(buf, size, "s%.31s (eval.csv has no diversity)", seed);
    else if (r->kind == GAN_COLLAPSE_OFF_DIGIT) /* eval.csv has no digit share: the seed only */
        snprintf(buf, size, "s%.31s", seed);
    else
        snprintf(buf, size, "s%.31s (not in eval.csv)", seed);
    return buf;
}

/* Whether name is an item of list, items separated by ", ". */
static bool listed(const char *list, const char *name)
{
    const size_t n = strlen(name);
    for (const char *p = list; (p = strstr(p, name)) != NULL; p += n)
        if ((p == list || (p - list >= 2 && p[-2] == ',' && p[-1] == ' ')) &&
            (p[n] == ',' || p[n] == '\0'))
            return true;
    return false;
}

/* The colour of a run's line: its verdict's, grey while not measured. */
static const char *verdict_color(const run_info *r)
{
    static const char *const colors[GAN_COLLAPSE_KINDS] = {
        [GAN_COLLAPSE_NONE] = "#2ca02c",
        [GAN_COLLAPSE_BLACK] = "#000000",
        [GAN_COLLAPSE_SINGLE_MODE] = "#ff7f0e",
        [GAN_COLLAPSE_OFF_DIGIT] = "#d62728",
    };
    return r->state == RUN_MEASURED ? colors[r->kind] : "#999999";
}

/* The plot: one panel per recipe, white against the iteration for every run's eval.csv, a
 * line per run in its verdict's colour, and the black threshold dashed. */
static void write_svg(FILE *f, int nd, int nr, int ns, char recipes[][TBL_NAME_MAX],
                      char digits[][TBL_NAME_MAX], char seeds[][TBL_NAME_MAX],
                      run_info (*runs)[MAX_RECIPES][MAX_SEEDS])
{
    enum { PW = 240, PH = 220, L = 60, GAP = 50, T = 30, B = 55, R = 120 };
    double xmax = 0, ymax = 0;
    for (int d = 0; d < nd; d++)
        for (int r = 0; r < nr; r++)
            for (int s = 0; s < ns; s++)
                for (int i = 0; i < runs[d][r][s].rows; i++)
                    xmax = fmax(xmax, runs[d][r][s].it[i]),
                    ymax = fmax(ymax, runs[d][r][s].row_white[i]);
    xmax = xmax > 0 ? xmax : 1;
    const int ticks = (int)fmin(10, fmax(2, ceil(ymax * 10 - 1e-9)));
    const int W = L + nr * PW + (nr - 1) * GAP + R, H = T + PH + B;
    tbl_svg_begin(f, W, H);
    for (int r = 0; r < nr; r++) {
        const tbl_plot p = {L + r * (PW + GAP), T, PW, PH, 0, ticks / 10.0};
        fprintf(f, "<g class=\"panel\" data-recipe=\"%s\">\n", recipes[r]);
        tbl_svg_axes(f, &p, ticks, "%.1f", "generator iteration",
                     r == 0 ? "white (mean pixel)" : NULL);
        fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"13\" text-anchor=\"middle\">%s</text>\n",
                p.x + PW / 2, T - 10, recipes[r]);
        for (int k = 0; k <= 4; k++)
            fprintf(f,
                    "<text x=\"%.1f\" y=\"%d\" font-size=\"11\" text-anchor=\"middle\">"
                    "%.0f</text>\n",
                    p.x + PW * k / 4.0, T + PH + 15, xmax * k / 4);
        fprintf(f,
                "<line class=\"black-threshold\" x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" "
                "stroke=\"#000\" stroke-dasharray=\"4 3\"/>\n",
                p.x, tbl_plot_y(&p, GAN_BLACK_WHITE), p.x + PW, tbl_plot_y(&p, GAN_BLACK_WHITE));
        for (int d = 0; d < nd; d++)
            for (int s = 0; s < ns; s++) {
                const run_info *x = &runs[d][r][s];
                if (!x->rows)
                    continue;
                fprintf(f,
                        "<polyline data-run=\"%s-d%s-s%s\" data-verdict=\"%s\" fill=\"none\" "
                        "stroke=\"%s\" stroke-opacity=\"0.6\" stroke-width=\"1.2\" points=\"",
                        recipes[r], digits[d], seeds[s],
                        x->state == RUN_MEASURED ? gan_collapse_name(x->kind) : "unmeasured",
                        verdict_color(x));
                for (int i = 0; i < x->rows; i++)
                    fprintf(f, "%s%.1f,%.1f", i ? " " : "", p.x + PW * x->it[i] / xmax,
                            tbl_plot_y(&p, fmin(x->row_white[i], p.yhi)));
                fputs("\"/>\n", f);
            }
        fputs("</g>\n", f);
    }
    /* The legend, in the table's words; the lines' data-verdict is gan_collapse_name's. */
    static const gan_collapse_kind legend[] = {GAN_COLLAPSE_NONE, GAN_COLLAPSE_OFF_DIGIT,
                                               GAN_COLLAPSE_SINGLE_MODE, GAN_COLLAPSE_BLACK};
    static const char *const titles[] = {"healthy", "off digit", "single mode", "black",
                                         "not measured"};
    const int lx = L + nr * PW + (nr - 1) * GAP + 12;
    for (int k = 0; k <= 4; k++) {
        const run_info shown = {.state = k < 4 ? RUN_MEASURED : RUN_RUNNING,
                                .kind = k < 4 ? legend[k] : GAN_COLLAPSE_NONE};
        fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"12\" fill=\"%s\">%s</text>\n", lx,
                T + 14 + 18 * k, verdict_color(&shown), titles[k]);
    }
    fputs("</svg>\n", f);
}

int main(int argc, char **argv)
{
    static const char usage[] = "usage: per_digit_table OUT (a per_digit_train.sh folder; "
                                "per_digit_table.sh measures its runs first)";
    if (argc == 2 && !strcmp(argv[1], "--help")) {
        puts(usage);
        return 0;
    }
    if (argc != 2)
        return tbl_fail(prog, 2, "%s", usage);
    const char *out = argv[1];
    static char recipes[MAX_RECIPES][TBL_NAME_MAX], digits[MAX_DIGITS][TBL_NAME_MAX],
        seeds[MAX_SEEDS][TBL_NAME_MAX];
    const int nr = tbl_words("RECIPES", DEFAULT_RECIPES, MAX_RECIPES, recipes);
    const int nd = tbl_words("DIGITS", DEFAULT_DIGITS, MAX_DIGITS, digits);
    const int ns = tbl_words("SEEDS", DEFAULT_SEEDS, MAX_SEEDS, seeds);
    if (nr < 1 || nd < 1 || ns < 1)
        return tbl_fail(prog, 2,
                        "RECIPES, DIGITS and SEEDS: expected 1 to %d, %d and %d names of fewer "
                        "than %d characters, got \"%s\", \"%s\" and \"%s\"",
                        MAX_RECIPES, MAX_DIGITS, MAX_SEEDS, TBL_NAME_MAX,
                        getenv("RECIPES") ? getenv("RECIPES") : DEFAULT_RECIPES,
                        getenv("DIGITS") ? getenv("DIGITS") : DEFAULT_DIGITS,
                        getenv("SEEDS") ? getenv("SEEDS") : DEFAULT_SEEDS);
    struct stat st;
    if (stat(out, &st) != 0)
        return tbl_fail(prog, 2, "%s: %s", out, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return tbl_fail(prog, 2, "%s: not a folder", out);
    static run_info runs[MAX_DIGITS][MAX_RECIPES][MAX_SEEDS];
    for (int d = 0; d < nd; d++)
        for (int r = 0; r < nr; r++)
            for (int s = 0; s < ns; s++) {
                char name[3 * TBL_NAME_MAX + 8];
                snprintf(name, sizeof name, "%s-d%s-s%s", recipes[r], digits[d], seeds[s]);
                read_run(out, name, &runs[d][r][s]);
            }

    char path[4200];
    snprintf(path, sizeof path, "%s/per_digit.md", out);
    tg_atomic_file *af = tg_atomic_open(path);
    if (!af)
        return tbl_fail(prog, 1, "%s", tg_last_error());
    FILE *f = tg_atomic_stream(af);
    long long n_eval = -1;
    int measured = 0, pending = 0;
    for (int d = 0; d < nd; d++)
        for (int r = 0; r < nr; r++)
            for (int s = 0; s < ns; s++) {
                const run_info *x = &runs[d][r][s];
                measured += x->state == RUN_MEASURED;
                pending += x->state != RUN_MEASURED;
                if (x->state == RUN_MEASURED)
                    n_eval = x->n;
            }
    fprintf(f,
            "# Per-digit GANs: collapse\n\n"
            "Written by `per_digit_table` from `%s`: %d of %d runs measured (`mnist_gan eval`, "
            "%lld generated images against as many real test images of the digit; "
            "examples/augment/README.md). A run is **black** when its images' mean white is "
            "below %g, **single mode** when, not black, its diversity is below %g, **off "
            "digit** when, neither, its digit share (the share of its images the classifier "
            "puts in the digit it was trained on) is below %g, **healthy** otherwise "
            "(metrics.h, `gan_collapse`).\n\n",
            out, measured, nd * nr * ns, n_eval, GAN_BLACK_WHITE, GAN_SINGLE_MODE_DIVERSITY,
            GAN_OFF_DIGIT_SHARE);
    fputs("| digit | recipe | measured | black | single mode | off digit | healthy | white | "
          "diversity | digit share | FID | collapsed: seed at the first eval.csv iteration "
          "with that verdict (off digit: the seed; eval.csv has no digit share) |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|\n",
          f);
    int totals[MAX_RECIPES][GAN_COLLAPSE_KINDS] = {{0}}, total_measured[MAX_RECIPES] = {0};
    for (int d = 0; d < nd; d++)
        for (int r = 0; r < nr; r++) {
            int count[GAN_COLLAPSE_KINDS] = {0}, m = 0;
            double white = 0, div = 0, share = 0, fid = 0;
            char when[1024] = "", buf[256];
            for (int s = 0; s < ns; s++) {
                const run_info *x = &runs[d][r][s];
                if (x->state != RUN_MEASURED)
                    continue;
                m++, count[x->kind]++;
                white += x->white, div += x->diversity, share += x->share, fid += x->fid;
                if (x->kind != GAN_COLLAPSE_NONE) {
                    size_t len = strlen(when);
                    snprintf(when + len, sizeof when - len, "%s%s: %s", len ? "; " : "",
                             gan_collapse_name(x->kind), crossing(buf, sizeof buf, seeds[s], x));
                }
            }
            total_measured[r] += m;
            for (int k = 0; k < GAN_COLLAPSE_KINDS; k++)
                totals[r][k] += count[k];
            char w[32], v[32], h[32], q[32];
            fprintf(f, "| %s | %s | %d/%d | %d | %d | %d | %d | %s | %s | %s | %s | %s |\n",
                    digits[d], recipes[r], m, ns, count[GAN_COLLAPSE_BLACK],
                    count[GAN_COLLAPSE_SINGLE_MODE], count[GAN_COLLAPSE_OFF_DIGIT],
                    count[GAN_COLLAPSE_NONE], num(w, sizeof w, "%.3f", m ? white / m : NAN),
                    num(v, sizeof v, "%.3f", m ? div / m : NAN),
                    num(h, sizeof h, "%.3f", m ? share / m : NAN),
                    num(q, sizeof q, "%.1f", m ? fid / m : NAN), *when ? when : "-");
        }
    fputs("\n| recipe | generator (eval's; - measured before eval named it) | measured | black | "
          "single mode | off digit | healthy |\n|---|---|---|---|---|---|---|\n",
          f);
    for (int r = 0; r < nr; r++) {
        char gens[256] = "";
        for (int d = 0; d < nd; d++)
            for (int s = 0; s < ns; s++) {
                const char *g = runs[d][r][s].generator;
                if (runs[d][r][s].state != RUN_MEASURED || !*g || listed(gens, g))
                    continue;
                const size_t len = strlen(gens);
                snprintf(gens + len, sizeof gens - len, "%s%s", len ? ", " : "", g);
            }
        fprintf(f, "| %s | %s | %d/%d | %d | %d | %d | %d |\n", recipes[r], *gens ? gens : "-",
                total_measured[r], nd * ns, totals[r][GAN_COLLAPSE_BLACK],
                totals[r][GAN_COLLAPSE_SINGLE_MODE], totals[r][GAN_COLLAPSE_OFF_DIGIT],
                totals[r][GAN_COLLAPSE_NONE]);
    }

    fputs("\n## Every run\n\n| run | iteration | white | diversity | digit share | FID | "
          "verdict |\n|---|---|---|---|---|---|---|\n",
          f);
    for (int d = 0; d < nd; d++)
        for (int r = 0; r < nr; r++)
            for (int s = 0; s < ns; s++) {
                const run_info *x = &runs[d][r][s];
                if (x->state != RUN_MEASURED)
                    continue;
                char w[32], v[32], h[32], q[32];
                fprintf(f, "| %s-d%s-s%s | %lld | %s | %s | %s | %s | %s |\n", recipes[r],
                        digits[d], seeds[s], x->iteration, num(w, sizeof w, "%.4f", x->white),
                        num(v, sizeof v, "%.3f", x->diversity), num(h, sizeof h, "%.3f", x->share),
                        num(q, sizeof q, "%.1f", x->fid), gan_collapse_name(x->kind));
            }
    fprintf(f, "\n## Not finished or not measured (%d)\n\n", pending);
    for (int d = 0; d < nd; d++)
        for (int r = 0; r < nr; r++)
            for (int s = 0; s < ns; s++) {
                const run_info *x = &runs[d][r][s];
                if (x->state == RUN_MEASURED)
                    continue;
                fprintf(f, "- %s-d%s-s%s: ", recipes[r], digits[d], seeds[s]);
                if (x->state == RUN_NOT_STARTED)
                    fputs("not started\n", f);
                else if (x->state == RUN_RUNNING)
                    fprintf(f, "unfinished, at iteration %lld\n", x->progress);
                else
                    fprintf(f,
                            "finished, not measured (no readable %s: run "
                            "per_digit_table.sh)\n",
                            EVAL_CACHE);
            }
    if (tg_atomic_commit(af) != TG_OK)
        return tbl_fail(prog, 1, "%s", tg_last_error());
    printf("per_digit_table: %s: %d runs measured, %d not finished or not measured\n", path,
           measured, pending);
    snprintf(path, sizeof path, "%s/per_digit.svg", out);
    if (!(af = tg_atomic_open(path)))
        return tbl_fail(prog, 1, "%s", tg_last_error());
    write_svg(tg_atomic_stream(af), nd, nr, ns, recipes, digits, seeds, runs);
    if (tg_atomic_commit(af) != TG_OK)
        return tbl_fail(prog, 1, "%s", tg_last_error());
    printf("per_digit_table: %s\n", path);
    for (int d = 0; d < nd; d++)
        for (int r = 0; r < nr; r++)
            for (int s = 0; s < ns; s++)
                free(runs[d][r][s].it);
    return 0;
}
