/* data/ internals shared by the library's own files; never installed. */
#ifndef TAPEGRAD_DATA_INTERNAL_H
#define TAPEGRAD_DATA_INTERNAL_H

#include "data.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

/* ---- a small strict JSON reader (json.c) -------------------------------------------------
 * Enough for safetensors headers and nothing clever: RFC 8259 syntax (no comments, no trailing
 * commas, no NaN, strings must be valid UTF-8 and may not contain NUL), parsed into a tree. Every
 * value remembers the byte offset where it starts, so callers can point at the culprit. */
typedef enum {
    TG_JSON_NULL,
    TG_JSON_BOOL,
    TG_JSON_INT,    /* an integer that fits int64_t */
    TG_JSON_NUMBER, /* any other number (fraction, exponent, or out of int64 range) */
    TG_JSON_STRING,
    TG_JSON_ARRAY,
    TG_JSON_OBJECT,
} tg_json_type;

typedef struct tg_json tg_json;
typedef struct tg_json_member tg_json_member;

struct tg_json {
    tg_json_type type;
    int64_t offset; /* byte offset of the value's first character */
    int64_t len;    /* bytes of the string / source text of a number; items/members */
    union {
        bool b;                  /* TG_JSON_BOOL */
        int64_t i;               /* TG_JSON_INT */
        const char *num;         /* TG_JSON_NUMBER: source text (len bytes, not NUL-terminated) */
        char *s;                 /* TG_JSON_STRING: decoded, NUL-terminated */
        tg_json *items;          /* TG_JSON_ARRAY: len values */
        tg_json_member *members; /* TG_JSON_OBJECT: len members in source order */
    } u;
};

struct tg_json_member {
    char *key;          /* decoded, NUL-terminated */
    int64_t key_offset; /* byte offset of the key's opening quote */
    tg_json value;
};

/* Why a parse failed: the byte offset and a short message ("unterminated string"). */
typedef struct {
    int64_t offset;
    char msg[160];
} tg_json_error;

/* Parses text[0..len) as one JSON value followed only by whitespace. Returns a tree to free
 * with tg_json_free, or NULL with *err filled in (offset -1 and "out of memory" when malloc
 * failed). Nesting deeper than TG_JSON_MAX_DEPTH is refused, and so is a text of more than
 * TG_JSON_MAX_VALUES values: each costs a 32-byte node (up to twice that in a growing array),
 * so the tree stays within ~128 MB whatever the text (a 90 MB array of "0," took 1.5 GB). A
 * safetensors header needs one value per metadata entry and about nine per tensor. */
#define TG_JSON_MAX_DEPTH 64
#define TG_JSON_MAX_VALUES (1 << 21)
tg_json *tg_json_parse(const char *text, int64_t len, tg_json_error *err);
void tg_json_free(tg_json *v);

/* The member of object obj under key, or NULL. */
const tg_json *tg_json_get(const tg_json *obj, const char *key);
/* Looks for two members of object obj with the same key; returns true and their indices
 * (*first < *second in source order) when there are. */
bool tg_json_find_duplicate(const tg_json *obj, int64_t *first, int64_t *second);
/* "an object", "a string", ...: for messages. */
const char *tg_json_type_name(tg_json_type type);

/* ---- opening files to read (file.c) ----------------------------------------------------- */

/* Sets and returns TG_ERR_IO "fn: path: is a FIFO, not a regular file<tail>" (a directory, a
 * symbolic link, ...: what mode says the file is): the one refusal of a file that is not a
 * regular one, for readers and writers alike. tail is "" or an explanation. */
tg_status tg_not_regular(const char *fn, const char *path, mode_t mode, const char *tail);
/* Opens path for reading and fills *st, never blocking on a FIFO: a descriptor, or -1 with
 * TG_ERR_IO "fn: path: cannot open: <reason>" or "fn: path: is a FIFO, not a regular file"
 * (a directory, a device, ...) when path does not hold a regular file. */
int tg_open_regular(const char *fn, const char *path, struct stat *st);

/* ---- checking values read from files (idx.c) -------------------------------------------- */

/* Checks that every value of t is a number in [lo, hi] and, when integers, a whole one: TG_OK,
 * or TG_ERR_FORMAT "fn: path: noun V at index [i, j, ...] is outside [lo, hi]" (or "is not a
 * whole number in", or "is not a finite number") for the first value that is not. */
tg_status tg_check_values(const char *fn, const char *path, const char *noun, const tg_tensor *t,
                          float lo, float hi, bool integers);

#endif
