/* state.c — the state dict: named tensors in insertion order plus string metadata.
 *
 * Entries live in a growing array (insertion order is the order a checkpoint is written in);
 * a small open-addressing hash index over the names keeps put/get O(1), so loading a checkpoint
 * of thousands of tensors does not turn quadratic. Metadata is rare and small: a plain array.
 *
 * Names and metadata strings end up as JSON strings in a safetensors header, so they are checked
 * here, where the caller can still see which call was wrong: names are 1..TG_STATE_NAME_MAX
 * bytes of valid UTF-8 without control characters; metadata values are valid UTF-8 of any
 * length. "__metadata__" is reserved by the file format and refused as a tensor name. */
#include "internal.h"

#include <string.h>

/* Longest tensor name or metadata key, in bytes (PyTorch's names are far shorter). */
#define STATE_NAME_MAX 1024

typedef struct {
    char *name;
    tg_tensor *t; /* one reference held by the dict */
} state_entry;

typedef struct {
    char *key;
    char *value;
} state_meta;

struct tg_state_dict {
    state_entry *entries;
    int64_t n, cap;
    int64_t *index;  /* hash slots holding entry numbers, -1 when empty */
    int64_t n_slots; /* a power of two, at least twice n */
    state_meta *meta;
    int64_t n_meta, cap_meta;
};

/* ---- helpers ---------------------------------------------------------------------------- */

/* A NULL dict is usually the result of a failed load or new: keep that first error (sticky
 * errors, docs/design.md, section 7) and only report the NULL itself when nothing failed
 * before. */
static tg_status state_null(const char *fn)
{
    if (tg_last_status() != TG_OK)
        return tg_last_status();
    return tg_set_error(TG_ERR_ARG, "%s: state dict is NULL", fn);
}

/* FNV-1a: short names, no adversary worth a keyed hash (the loader checks sizes anyway). */
static uint64_t state_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* The slot holding name, or the empty slot where it would go. */
static int64_t state_slot(const tg_state_dict *sd, const char *name)
{
    int64_t mask = sd->n_slots - 1;
    int64_t i = (int64_t)(state_hash(name) & (uint64_t)mask);
    while (sd->index[i] >= 0 && strcmp(sd->entries[sd->index[i]].name, name) != 0)
        i = (i + 1) & mask;
    return i;
}

/* Checks that s is valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF); control characters
 * are allowed only when allow_ctrl. Returns the byte offset of the first bad byte or -1. */
static int64_t state_bad_utf8(const char *s, bool allow_ctrl)
{
    const unsigned char *p = (const unsigned char *)s;
    int64_t i = 0;
    while (p[i]) {
        unsigned c = p[i];
        if (c < 0x80) {
            if ((c < 0x20 || c == 0x7f) && !allow_ctrl)
                return i;
            i++;
            continue;
        }
        int len = tg_utf8_len(p + i, INT64_MAX); /* the NUL stops a cut-short sequence */
        if (!len)
            return i;
        i += len;
    }
    return -1;
}

/* Validates a tensor name or metadata key; what is "name" or "key" for the message. */
static tg_status state_check_name(const char *fn, const char *what, const char *name)
{
    if (!name)
        return tg_set_error(TG_ERR_ARG, "%s: %s is NULL", fn, what);
    size_t len = strnlen(name, STATE_NAME_MAX + 1);
    if (len == 0)
        return tg_set_error(TG_ERR_ARG, "%s: %s is empty", fn, what);
    if (len > STATE_NAME_MAX)
        return tg_set_error(TG_ERR_ARG, "%s: %s \"%.40s...\" is longer than %d bytes", fn, what,
                            name, STATE_NAME_MAX);
    int64_t bad = state_bad_utf8(name, false);
    if (bad >= 0)
        return tg_set_error(TG_ERR_ARG,
                            "%s: %s \"%.80s\" has a control character or invalid UTF-8 at "
                            "byte %lld",
                            fn, what, name, (long long)bad);
    return TG_OK;
}

static char *state_strdup(const char *fn, const char *s)
{
    size_t len = strlen(s);
    char *c = malloc(len + 1);
    if (!c) {
        tg_set_error(TG_ERR_NOMEM, "%s: out of memory copying a %zu-byte string", fn, len);
        return NULL;
    }
    memcpy(c, s, len + 1);
    return c;
}

/* Makes room for one more entry (array and index). */
static tg_status state_reserve(tg_state_dict *sd)
{
    if (sd->n == sd->cap) {
        int64_t cap = sd->cap ? sd->cap * 2 : 16;
        state_entry *e = realloc(sd->entries, (size_t)cap * sizeof *e);
        if (!e)
            return tg_set_error(TG_ERR_NOMEM, "tg_state_dict_put: out of memory for %lld entries",
                                (long long)cap);
        sd->entries = e;
        sd->cap = cap;
    }
    if (2 * (sd->n + 1) > sd->n_slots) {
        int64_t n_slots = sd->n_slots ? sd->n_slots * 2 : 32;
        int64_t *index = malloc((size_t)n_slots * sizeof *index);
        if (!index)
            return tg_set_error(TG_ERR_NOMEM, "tg_state_dict_put: out of memory for the index");
        for (int64_t i = 0; i < n_slots; i++)
            index[i] = -1;
        free(sd->index);
        sd->index = index;
        sd->n_slots = n_slots;
        for (int64_t k = 0; k < sd->n; k++)
            sd->index[state_slot(sd, sd->entries[k].name)] = k;
    }
    return TG_OK;
}

/* ---- public API ------------------------------------------------------------------------- */

tg_state_dict *tg_state_dict_new(void)
{
    tg_state_dict *sd = calloc(1, sizeof *sd);
    if (!sd)
        tg_set_error(TG_ERR_NOMEM, "tg_state_dict_new: out of memory");
    return sd;
}

void tg_state_dict_free(tg_state_dict *sd)
{
    if (!sd)
        return;
    for (int64_t i = 0; i < sd->n; i++) {
        free(sd->entries[i].name);
        tg_release(sd->entries[i].t);
    }
    for (int64_t i = 0; i < sd->n_meta; i++) {
        free(sd->meta[i].key);
        free(sd->meta[i].value);
    }
    free(sd->entries);
    free(sd->index);
    free(sd->meta);
    free(sd);
}

tg_status tg_state_dict_put(tg_state_dict *sd, const char *name, tg_tensor *t)
{
    static const char fn[] = "tg_state_dict_put";
    if (!sd)
        return state_null(fn);
    tg_status st = state_check_name(fn, "name", name);
    if (st != TG_OK)
        return st;
    if (!t) {
        /* Usually the result of a failed op: keep its message, the real cause. */
        if (tg_last_status() != TG_OK)
            return tg_last_status();
        return tg_set_error(TG_ERR_ARG, "%s: tensor for \"%s\" is NULL", fn, name);
    }
    if (strcmp(name, "__metadata__") == 0)
        return tg_set_error(TG_ERR_ARG,
                            "%s: name \"__metadata__\" is reserved for checkpoint metadata", fn);
    if (sd->n_slots && sd->index[state_slot(sd, name)] >= 0)
        return tg_set_error(TG_ERR_ARG, "%s: name \"%s\" is already in the state dict", fn, name);
    if ((st = state_reserve(sd)) != TG_OK)
        return st;
    char *copy = state_strdup(fn, name);
    if (!copy)
        return TG_ERR_NOMEM;
    sd->entries[sd->n].name = copy;
    sd->entries[sd->n].t = tg_retain(t);
    sd->index[state_slot(sd, name)] = sd->n;
    sd->n++;
    return TG_OK;
}

tg_tensor *tg_state_dict_get(const tg_state_dict *sd, const char *name)
{
    if (!sd || !name || !sd->n_slots)
        return NULL;
    int64_t k = sd->index[state_slot(sd, name)];
    return k >= 0 ? sd->entries[k].t : NULL;
}

int64_t tg_state_dict_size(const tg_state_dict *sd)
{
    if (!sd) {
        state_null("tg_state_dict_size");
        return 0;
    }
    return sd->n;
}

/* Checks an entry index for the accessors; fn names the caller. */
static bool state_index_ok(const char *fn, const tg_state_dict *sd, int64_t i, int64_t n)
{
    if (!sd) {
        state_null(fn);
        return false;
    }
    if (i < 0 || i >= n) {
        tg_set_error(TG_ERR_ARG, "%s: index %lld is outside 0..%lld", fn, (long long)i,
                     (long long)n - 1);
        return false;
    }
    return true;
}

const char *tg_state_dict_name(const tg_state_dict *sd, int64_t i)
{
    if (!state_index_ok("tg_state_dict_name", sd, i, sd ? sd->n : 0))
        return NULL;
    return sd->entries[i].name;
}

tg_tensor *tg_state_dict_tensor(const tg_state_dict *sd, int64_t i)
{
    if (!state_index_ok("tg_state_dict_tensor", sd, i, sd ? sd->n : 0))
        return NULL;
    return sd->entries[i].t;
}

tg_status tg_state_dict_set_meta(tg_state_dict *sd, const char *key, const char *value)
{
    static const char fn[] = "tg_state_dict_set_meta";
    if (!sd)
        return state_null(fn);
    tg_status st = state_check_name(fn, "key", key);
    if (st != TG_OK)
        return st;
    if (!value)
        return tg_set_error(TG_ERR_ARG, "%s: value for key \"%s\" is NULL", fn, key);
    int64_t bad = state_bad_utf8(value, true);
    if (bad >= 0)
        return tg_set_error(TG_ERR_ARG, "%s: value for key \"%s\" has invalid UTF-8 at byte %lld",
                            fn, key, (long long)bad);
    char *v = state_strdup(fn, value);
    if (!v)
        return TG_ERR_NOMEM;
    for (int64_t i = 0; i < sd->n_meta; i++) {
        if (strcmp(sd->meta[i].key, key) == 0) {
            free(sd->meta[i].value);
            sd->meta[i].value = v;
            return TG_OK;
        }
    }
    if (sd->n_meta == sd->cap_meta) {
        int64_t cap = sd->cap_meta ? sd->cap_meta * 2 : 8;
        state_meta *m = realloc(sd->meta, (size_t)cap * sizeof *m);
        if (!m) {
            free(v);
            return tg_set_error(TG_ERR_NOMEM, "%s: out of memory for %lld metadata entries", fn,
                                (long long)cap);
        }
        sd->meta = m;
        sd->cap_meta = cap;
    }
    char *k = state_strdup(fn, key);
    if (!k) {
        free(v);
        return TG_ERR_NOMEM;
    }
    sd->meta[sd->n_meta].key = k;
    sd->meta[sd->n_meta].value = v;
    sd->n_meta++;
    return TG_OK;
}

const char *tg_state_dict_meta(const tg_state_dict *sd, const char *key)
{
    if (!sd || !key)
        return NULL;
    for (int64_t i = 0; i < sd->n_meta; i++)
        if (strcmp(sd->meta[i].key, key) == 0)
            return sd->meta[i].value;
    return NULL;
}

int64_t tg_state_dict_meta_size(const tg_state_dict *sd)
{
    if (!sd) {
        state_null("tg_state_dict_meta_size");
        return 0;
    }
    return sd->n_meta;
}

const char *tg_state_dict_meta_key(const tg_state_dict *sd, int64_t i)
{
    if (!state_index_ok("tg_state_dict_meta_key", sd, i, sd ? sd->n_meta : 0))
        return NULL;
    return sd->meta[i].key;
}

const char *tg_state_dict_meta_value(const tg_state_dict *sd, int64_t i)
{
    if (!state_index_ok("tg_state_dict_meta_value", sd, i, sd ? sd->n_meta : 0))
        return NULL;
    return sd->meta[i].value;
}
