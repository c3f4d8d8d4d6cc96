/* Text from outside the program: one strict number parser for command lines and file metadata,
 * and escaping for anything quoted from a file in a message. strtoll/strtod alone accept too
 * much (leading blanks, '+', hex, "inf", "nan", a trailing "garbage" left to the caller, "-0"),
 * and sscanf("%d") silently wraps "4294967304" to 8; these accept exactly the decimal forms a
 * person writes and say which way a refused string is wrong. */
#include "internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Decimal integer: an optional '-' then digits, nothing else. */
static bool int_syntax(const char *s)
{
    if (*s == '-')
        s++;
    if (*s < '0' || *s > '9')
        return false;
    while (*s >= '0' && *s <= '9')
        s++;
    return *s == '\0';
}

/* Digits of the base (10 or 16) at *s, skipped; how many there were. */
static int digit_run(const char **s, int base)
{
    int k = 0;
    for (;; (*s)++, k++) {
        char c = **s;
        bool dec = c >= '0' && c <= '9';
        bool hex = (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
        if (!dec && !(base == 16 && hex))
            return k;
    }
}

/* The mantissa "digits[.digits]" or ".digits" in the base, then the end of the string or the
 * exponent letter (either case) with an optional sign and decimal digits, then the end. */
static bool real_tail(const char *s, int base, char exp, bool exp_required)
{
    int digits = digit_run(&s, base);
    if (*s == '.') {
        s++;
        digits += digit_run(&s, base);
    }
    if (!digits)
        return false;
    if ((*s | 0x20) != exp)
        return !exp_required && *s == '\0';
    s++;
    if (*s == '-' || *s == '+')
        s++;
    return digit_run(&s, 10) > 0 && *s == '\0';
}

/* Decimal real: [-]digits[.digits][e[-+]digits] or [-].digits[...]; no inf, nan, hex or blanks. */
static bool real_syntax(const char *s)
{
    return real_tail(s + (*s == '-'), 10, 'e', false);
}

/* printf's %a form: [-]0xH[.H]p[+-]D, the exponent required. */
static bool hexreal_syntax(const char *s)
{
    s += *s == '-';
    return s[0] == '0' && (s[1] | 0x20) == 'x' && real_tail(s + 2, 16, 'p', true);
}

tg_status tg_parse_int(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    if (!s || !out)
        return tg_set_error(TG_ERR_ARG, "tg_parse_int: %s is NULL", !s ? "the string" : "out");
    if (!int_syntax(s))
        return tg_set_error(TG_ERR_FORMAT, "tg_parse_int: not a whole number");
    errno = 0;
    long long x = strtoll(s, NULL, 10);
    if (errno == ERANGE || x < lo || x > hi)
        return tg_set_error(TG_ERR_ARG, "tg_parse_int: out of range [%lld, %lld]", (long long)lo,
                            (long long)hi);
    *out = x;
    return TG_OK;
}

tg_status tg_parse_uint(const char *s, uint64_t hi, uint64_t *out)
{
    if (!s || !out)
        return tg_set_error(TG_ERR_ARG, "tg_parse_uint: %s is NULL", !s ? "the string" : "out");
    /* strtoull would wrap "-1" to 2^64-1: refuse any sign before calling it. */
    if (*s == '-' || !int_syntax(s))
        return tg_set_error(TG_ERR_FORMAT, "tg_parse_uint: not a whole number from 0");
    errno = 0;
    unsigned long long x = strtoull(s, NULL, 10);
    if (errno == ERANGE || x > hi)
        return tg_set_error(TG_ERR_ARG, "tg_parse_uint: out of range [0, %llu]",
                            (unsigned long long)hi);
    *out = x;
    return TG_OK;
}

/* The two real parsers: syntax first, then strtod (which reads both forms exactly). */
static tg_status parse_real(const char *fn, bool (*syntax)(const char *), const char *form,
                            const char *s, double lo, double hi, double *out)
{
    if (!s || !out)
        return tg_set_error(TG_ERR_ARG, "%s: %s is NULL", fn, !s ? "the string" : "out");
    if (!syntax(s))
        return tg_set_error(TG_ERR_FORMAT, "%s: not %s", fn, form);
    double x = strtod(s, NULL);
    /* Underflow gives a subnormal or zero (errno ERANGE), which the range test below decides
     * about; overflow gives +-HUGE_VAL, refused as not finite. */
    if (!isfinite(x) || x < lo || x > hi)
        return tg_set_error(TG_ERR_ARG, "%s: out of range [%g, %g]", fn, lo, hi);
    *out = x + 0.0; /* -0 becomes +0: a value that prints as "-0" helps nobody */
    return TG_OK;
}

tg_status tg_parse_real(const char *s, double lo, double hi, double *out)
{
    return parse_real("tg_parse_real", real_syntax, "a decimal number", s, lo, hi, out);
}

tg_status tg_parse_hexreal(const char *s, double lo, double hi, double *out)
{
    return parse_real("tg_parse_hexreal", hexreal_syntax, "a hex float (%a)", s, lo, hi, out);
}

size_t tg_escape(char *dst, size_t n, const char *src, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t w = 0;
    if (!dst || !n)
        return 0;
    for (size_t i = 0; src && i < len; i++) {
        unsigned char c = (unsigned char)src[i];
        char buf[4];
        size_t k;
        if (c == '\\' || c == '"') {
            buf[0] = '\\', buf[1] = (char)c, k = 2;
        } else if (c >= 0x20 && c < 0x7f) {
            buf[0] = (char)c, k = 1;
        } else {
            /* Control bytes (newline, ESC) and every non-ASCII byte: a message stays one line
             * of plain ASCII whatever the file held. */
            buf[0] = '\\', buf[1] = 'x', buf[2] = hex[c >> 4], buf[3] = hex[c & 15], k = 4;
        }
        if (w + k + 1 > n) {
            /* Mark the cut so a truncated name is never mistaken for the whole one. */
            if (n >= 4) {
                while (w + 4 > n)
                    w--;
                memcpy(dst + w, "...", 3);
                w += 3;
            }
            break;
        }
        memcpy(dst + w, buf, k);
        w += k;
    }
    dst[w] = '\0';
    return w;
}
