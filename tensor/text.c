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

/* Decimal real: [-]digits[.digits][e[-+]digits] or [-].digits[...]; no inf, nan, hex or blanks. */
static bool real_syntax(const char *s)
{
    if (*s == '-')
        s++;
    int digits = 0;
    while (*s >= '0' && *s <= '9')
        s++, digits++;
    if (*s == '.') {
        s++;
        while (*s >= '0' && *s <= '9')
            s++, digits++;
    }
    if (!digits)
        return false;
    if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '-' || *s == '+')
            s++;
        if (*s < '0' || *s > '9')
            return false;
        while (*s >= '0' && *s <= '9')
            s++;
    }
    return *s == '\0';
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

tg_status tg_parse_real(const char *s, double lo, double hi, double *out)
{
    if (!s || !out)
        return tg_set_error(TG_ERR_ARG, "tg_parse_real: %s is NULL", !s ? "the string" : "out");
    if (!real_syntax(s))
        return tg_set_error(TG_ERR_FORMAT, "tg_parse_real: not a decimal number");
    errno = 0;
    double x = strtod(s, NULL);
    /* ERANGE with a finite result is underflow to a subnormal or zero; the range test below
     * decides about those. Overflow gives +-HUGE_VAL. */
    if (!isfinite(x) || x < lo || x > hi)
        return tg_set_error(TG_ERR_ARG, "tg_parse_real: out of range [%g, %g]", lo, hi);
    *out = x + 0.0; /* -0 becomes +0: a value that prints as "-0" helps nobody */
    return TG_OK;
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
