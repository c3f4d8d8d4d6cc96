/* What examples/augment's table programs (per_digit_table, study_table) share: the run grid
 * from the environment, whole files, numbers out of the one-line JSON records that
 * mnist_gan eval and mnist_classifier --json append (flat `"key": value` pairs), and the axes
 * of their SVG plots. */
#ifndef AUGMENT_TABLE_UTIL_H
#define AUGMENT_TABLE_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

enum { TBL_NAME_MAX = 32 };

/* Says "prog: " and the message on one line of stderr; returns code (an exit status). */
int tbl_fail(const char *prog, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Splits the environment variable var (default def) into at most max words of names[]; the
 * count, or -1 when there are too many or one is too long. */
int tbl_words(const char *var, const char *def, int max, char names[][TBL_NAME_MAX]);
/* The whole file, NUL-terminated (free it), or NULL (absent or unreadable). */
char *tbl_slurp(const char *path);
/* The number after "key": at or after from (`"key": value`); NAN when it is absent or null. */
double tbl_json_number(const char *from, const char *key);
/* The string after "key": at or after from (`"key": "value"`, no escapes) into buf; false
 * (buf "") when it is absent, not a string, or longer than size - 1 bytes. */
bool tbl_json_string(const char *from, const char *key, char *buf, size_t size);
/* The start of the last non-empty line of s. */
const char *tbl_last_line(const char *s);

/* A plot's area in pixels, [x, x + w] x [y, y + h], and its y range [ylo, yhi]. */
typedef struct {
    int x, y, w, h;
    double ylo, yhi;
} tbl_plot;

/* The y pixel of value v. */
double tbl_plot_y(const tbl_plot *p, double v);
/* The opening tag of an SVG document of w x h pixels. */
void tbl_svg_begin(FILE *f, int w, int h);
/* The plot's frame; ticks + 1 grid lines from ylo to yhi, each labelled on the left with
 * label_fmt (a printf format of the value, a double); xtitle under the frame and ytitle along
 * its left side, where not NULL. */
void tbl_svg_axes(FILE *f, const tbl_plot *p, int ticks, const char *label_fmt, const char *xtitle,
                  const char *ytitle);

#endif
