/* state.c — the state dict: named tensors in insertion order plus string metadata.
 *
 * Tensors and metadata each live in a growing array (insertion order is the order a checkpoint
 * is written in), each with an open-addressing hash index over its names, so put, get and
 * set_meta are O(1): loading a checkpoint of thousands of tensors or 80,000 metadata keys does
 * not turn quadratic (issue 19: a linear scan per key took 8 s for 80,000 keys).
 *
 * Names and metadata strings end up as JSON strings in a safetensors header, so they are checked
 * here, where the caller can still see which call was wrong: names are 1..TG_STATE_NAME_MAX
 * bytes of valid UTF-8 without control characters; metadata values are valid UTF-8 of any
 * length. "__metadata__" is reserved by the file format and refused as a tensor name. Names
 * quoted in messages are escaped (tg_escape): they may come from a file. */
#include "internal.h"

#include <string.h>

/* Longest tensor name or metadata key, in bytes (PyTorch's names are far shorter). */
#define STATE_NAME_MAX 1024
/* Bytes of a name as a message quotes it (escaped, cut with "..."). */
#define STATE_SHOW 96

typedef struct {
    char *name;
    tg_tensor *t; /* one reference held by the dict */
} state_entry;

typedef struct {
    char *key;
    char *value;
} state_meta;

/* A hash index over the names of one list (tensors or metadata). */
typedef struct {
    int64_t *slots;  /* entry numbers, -1 when empty */
    int64_t n_slots; /* 0, or a power of two at least twice the entries */
} state_index;

struct tg_state_dict {
    state_entry *entries;
    int64_t n, cap;
    state_index index;
    state_meta *meta;
    int64_t n_meta, cap_meta;
    state_index meta_index;
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

/* FNV-1a: short names, no adversary worth a keyed hash (the loader bounds the key count). */
static uint64_t state_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* Name k of the list ix indexes: a tensor name or a metadata key. */
static const char *list_name(const tg_state_dict *sd, const state_index *ix, int64_t k)
{
    return ix == &sd->meta_index ? sd->meta[k].key : sd->entries[k].name;
}

/* The slot of ix holding name, or the empty slot where it would go (ix has slots). */
static int64_t index_slot(const tg_state_dict *sd, const state_index *ix, const char *name)
{
    int64_t mask = ix->n_slots - 1;
    int64_t i = (int64_t)(state_hash(name) & (uint64_t)mask);
    while (ix->slots[i] >= 0 && strcmp(list_name(sd, ix, ix->slots[i]), name) != 0)
        i = (i + 1) & mask;
    return i;
}

/* The entry number under name in the list ix indexes, or -1. */
static int64_t index_find(const tg_state_dict *sd, const state_index *ix, const char *name)
{
    return ix->n_slots ? ix->slots[index_slot(sd, ix, name)] : -1;
}

/* Makes room in ix for entry n (the list's first n entries are indexed), keeping it at most half
 * full: a bigger table is built from the list's names. fn names the caller. */
static tg_status index_reserve(const char *fn, const tg_state_dict *sd, state_index *ix, int64_t n)
{
    if (2 * (n + 1) <= ix->n_slots)
        return TG_OK;
    int64_t n_slots = ix->n_slots ? ix->n_slots * 2 : 32;
    int64_t *slots = malloc((size_t)n_slots * sizeof *slots);
    if (!slots)
        return tg_set_error(TG_ERR_NOMEM, "%s: out of memory for an index of %lld names", fn,
                            (long long)n + 1);
    for (int64_t i = 0; i < n_slots; i++)
        slots[i] = -1;
    free(ix->slots);
    ix->slots = slots;
    ix->n_slots = n_slots;
    for (int64_t k = 0; k < n; k++)
        ix->slots[index_slot(sd, ix, list_name(sd, ix, k))] = k;
    return TG_OK;
}

/* name escaped for a message (it may come from a file): one line of printable ASCII. */
static const char *state_show(const char *name, char buf[STATE_SHOW])
{
    tg_escape(buf, STATE_SHOW, name, strnlen(name, STATE_SHOW));
    return buf;
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
    char shown[STATE_SHOW];
    if (len > STATE_NAME_MAX)
        return tg_set_error(TG_ERR_ARG, "%s: %s \"%s\" is longer than %d bytes", fn, what,
                            state_show(name, shown), STATE_NAME_MAX);
    int64_t bad = state_bad_utf8(name, false);
    if (bad >= 0)
        return tg_set_error(TG_ERR_ARG,
                            "%s: %s \"%s\" has a control character or invalid UTF-8 at "
                            "byte %lld",
                            fn, what, state_show(name, shown), (long long)bad);
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

/* Makes room for one more element of an array of *cap elements of elem bytes holding n; fn and
 * what name the caller and the array in the message. */
static tg_status list_reserve(const char *fn, const char *what, void **arr, int64_t *cap, int64_t n,
                              size_t elem)
{
    if (!tg_grow(arr, cap, n + 1, elem))
        return tg_set_error(TG_ERR_NOMEM, "%s: out of memory for %lld %s", fn, (long long)n + 1,
                            what);
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
        tg_tensor_release(sd->entries[i].t);
    }
    for (int64_t i = 0; i < sd->n_meta; i++) {
        free(sd->meta[i].key);
        free(sd->meta[i].value);
    }
    free(sd->entries);
    free(sd->index.slots);
    free(sd->meta);
    free(sd->meta_index.slots);
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
        char shown[STATE_SHOW];
        return tg_set_error(TG_ERR_ARG, "%s: tensor for \"%s\" is NULL", fn,
                            state_show(name, shown));
    }
    if (t == TG_NONE)
        return tg_none_refused(fn, "the tensor");
    if (strcmp(name, "__metadata__") == 0)
        return tg_set_error(TG_ERR_ARG,
                            "%s: name \"__metadata__\" is reserved for checkpoint metadata", fn);
    if (index_find(sd, &sd->index, name) >= 0) {
        char shown[STATE_SHOW];
        return tg_set_error(TG_ERR_ARG, "%s: name \"%s\" is already in the state dict", fn,
                            state_show(name, shown));
    }
    if ((st = list_reserve(fn, "entries", (void **)&sd->entries, &sd->cap, sd->n,
                           sizeof *sd->entries)) != TG_OK ||
        (st = index_reserve(fn, sd, &sd->index, sd->n)) != TG_OK)
        return st;
    char *copy = state_strdup(fn, name);
    if (!copy)
        return TG_ERR_NOMEM;
    sd->entries[sd->n].name = copy;
    sd->entries[sd->n].t = tg_tensor_retain(t);
    sd->index.slots[index_slot(sd, &sd->index, name)] = sd->n;
    sd->n++;
    return TG_OK;
}

tg_tensor *tg_state_dict_get(const tg_state_dict *sd, const char *name)
{
    if (!sd || !name)
        return NULL;
    int64_t k = index_find(sd, &sd->index, name);
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
    char shown[STATE_SHOW];
    if (!value)
        return tg_set_error(TG_ERR_ARG, "%s: value for key \"%s\" is NULL", fn,
                            state_show(key, shown));
    int64_t bad = state_bad_utf8(value, true);
    if (bad >= 0)
        return tg_set_error(TG_ERR_ARG, "%s: value for key \"%s\" has invalid UTF-8 at byte %lld",
                            fn, state_show(key, shown), (long long)bad);
    int64_t k = index_find(sd, &sd->meta_index, key);
    if ((k < 0 && (st = list_reserve(fn, "metadata entries", (void **)&sd->meta, &sd->cap_meta,
                                     sd->n_meta, sizeof *sd->meta)) != TG_OK) ||
        (k < 0 && (st = index_reserve(fn, sd, &sd->meta_index, sd->n_meta)) != TG_OK))
        return st;
    char *v = state_strdup(fn, value);
    if (!v)
        return TG_ERR_NOMEM;
    if (k >= 0) {
        free(sd->meta[k].value);
        sd->meta[k].value = v;
        return TG_OK;
    }
    char *copy = state_strdup(fn, key);
    if (!copy) {
        free(v);
        return TG_ERR_NOMEM;
    }
    sd->meta[sd->n_meta].key = copy;
    sd->meta[sd->n_meta].value = v;
    sd->meta_index.slots[index_slot(sd, &sd->meta_index, key)] = sd->n_meta;
    sd->n_meta++;
    return TG_OK;
}

const char *tg_state_dict_meta(const tg_state_dict *sd, const char *key)
{
    if (!sd || !key)
        return NULL;
    int64_t k = index_find(sd, &sd->meta_index, key);
    return k >= 0 ? sd->meta[k].value : NULL;
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
