/* table_util: what the study's table programs share (table_util.h). */
#include "table_util.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int tbl_fail(const char *prog, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return code;
}

int tbl_words(const char *var, const char *def, int max, char names[][TBL_NAME_MAX])
{
    const char *s = getenv(var);
    if (!s)
        s = def;
    int n = 0;
    while (*s) {
        while (*s == ' ' || *s == '\t' || *s == '\n')
            s++;
        size_t len = strcspn(s, " \t\n");
        if (!len)
            break;
        if (n == max || len >= TBL_NAME_MAX)
            return -1;
        memcpy(names[n], s, len);
        names[n++][len] = '\0';
        s += len;
    }
    return n;
}

char *tbl_slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *b = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (cap - n < 4096) {
            char *p = realloc(b, cap = cap ? 2 * cap : 8192);
            if (!p) {
                free(b), fclose(f);
                return NULL;
            }
            b = p;
        }
        size_t got = fread(b + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0)
            break;
    }
    fclose(f);
    b[n] = '\0';
    return b;
}

double tbl_json_number(const char *from, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    const char *p = from ? strstr(from, pat) : NULL;
    if (!p)
        return NAN;
    char *end;
    const double v = strtod(p + strlen(pat), &end);
    return end > p + strlen(pat) ? v : NAN;
}

bool tbl_json_string(const char *from, const char *key, char *buf, size_t size)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": \"", key);
    const char *p = from ? strstr(from, pat) : NULL;
    const size_t len = p ? strcspn(p += strlen(pat), "\"\\\n") : 0;
    buf[0] = '\0';
    if (!p || p[len] != '"' || len >= size)
        return false;
    memcpy(buf, p, len);
    buf[len] = '\0';
    return true;
}

const char *tbl_last_line(const char *s)
{
    const char *end = s + strlen(s);
    while (end > s && end[-1] == '\n')
        end--;
    const char *p = end;
    while (p > s && p[-1] != '\n')
        p--;
    return p;
}

double tbl_plot_y(const tbl_plot *p, double v)
{
    return p->y + p->h * (1.0 - (v - p->ylo) / (p->yhi - p->ylo));
}

void tbl_svg_begin(FILE *f, int w, int h)
{
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
            "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\">\n",
            w, h, w, h);
}

void tbl_svg_axes(FILE *f, const tbl_plot *p, int ticks, const char *label_fmt, const char *xtitle,
                  const char *ytitle)
{
    fprintf(f,
            "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"#fafafa\" "
            "stroke=\"#999\"/>\n",
            p->x, p->y, p->w, p->h);
    for (int k = 0; k <= ticks; k++) {
        const double v = p->ylo + (p->yhi - p->ylo) * k / ticks, y = tbl_plot_y(p, v);
        char label[64];
        snprintf(label, sizeof label, label_fmt, v);
        fprintf(f,
                "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>"
                "<text x=\"%d\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\">%s</text>\n",
                p->x, y, p->x + p->w, y, p->x - 4, y + 4, label);
    }
    if (xtitle)
        fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"12\" text-anchor=\"middle\">%s</text>\n",
                p->x + p->w / 2, p->y + p->h + 38, xtitle);
    if (ytitle)
        fprintf(f,
                "<text x=\"%d\" y=\"%d\" font-size=\"12\" text-anchor=\"middle\" "
                "transform=\"rotate(-90 %d %d)\">%s</text>\n",
                p->x - 46, p->y + p->h / 2, p->x - 46, p->y + p->h / 2, ytitle);
}
