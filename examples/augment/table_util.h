/* What examples/augment's table programs (per_digit_table, study_table) share: the run grid
 * from the environment, whole files, and numbers out of the one-line JSON records that
 * mnist_gan eval and mnist_classifier --json append (flat `"key": value` pairs). */
#ifndef AUGMENT_TABLE_UTIL_H
#define AUGMENT_TABLE_UTIL_H

#include <stddef.h>

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
/* The start of the last non-empty line of s. */
const char *tbl_last_line(const char *s);

#endif
