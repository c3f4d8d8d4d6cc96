/* safetensors checkpoints: a state dict as the file format of Hugging Face's `safetensors`.
 *
 *   bytes 0-7:      N, the header length, unsigned 64-bit little-endian
 *   bytes 8..8+N:   a JSON object, padded with spaces to a multiple of 8 bytes:
 *                   {"__metadata__": {"key": "value", ...},
 *                    "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
 *   then:           the data section; each tensor's row-major little-endian values lie in
 *                   [begin, end) counted from the start of the data section.
 *
 * A user can read the file with nothing but json and numpy (numpy.frombuffer per tensor), or
 * with safetensors / PyTorch. We write F32 only; we read F32 plus the float and integer dtypes
 * we can convert to float32 exactly or by rounding (F64, F16, BF16, I8..I64, U8..U64, BOOL).
 *
 * Loading trusts nothing: the header length against the file size, JSON syntax, every entry's
 * keys and types, dtype, shape (overflow-checked), offsets (inside the data section, no overlap,
 * no unclaimed bytes) and names are all checked before the first tensor is allocated, and every
 * message names the file and, where there is one, the tensor. Saving is atomic (atomic.c): the
 * previous checkpoint survives any failure. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Tensor data goes to and from the file by memcpy, which is only right on a little-endian
 * host. Every machine we target is; a big-endian port would byte-swap here. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "safetensors.c assumes a little-endian host");
_Static_assert(sizeof(float) == 4, "float must be IEEE binary32");

/* The reference implementation refuses headers above 100 MB; so do we. */
#define ST_MAX_HEADER 100000000ull
/* At most this many metadata entries in one file: far above any real checkpoint's. Tensors
 * need no count of their own: each entry is at least six JSON values (object, dtype, shape,
 * data_offsets and its two ints), so the JSON reader's value limit (TG_JSON_MAX_VALUES) allows
 * at most ~350,000, and with it bounds what a header can make the loader build. */
#define ST_MAX_KEYS 1000000

/* ---- dtypes ------------------------------------------------------------------------------- */

typedef enum {
    ST_F32,
    ST_F64,
    ST_F16,
    ST_BF16,
    ST_I8,
    ST_I16,
    ST_I32,
    ST_I64,
    ST_U8,
    ST_U16,
    ST_U32,
    ST_U64,
    ST_BOOL,
    ST_UNSUPPORTED,
} st_kind;

typedef struct {
    const char *name;
    int size; /* bytes per element */
    st_kind kind;
} st_dtype;

static const st_dtype st_dtypes[] = {
    {"F32", 4, ST_F32},
    {"F64", 8, ST_F64},
    {"F16", 2, ST_F16},
    {"BF16", 2, ST_BF16},
    {"I8", 1, ST_I8},
    {"I16", 2, ST_I16},
    {"I32", 4, ST_I32},
    {"I64", 8, ST_I64},
    {"U8", 1, ST_U8},
    {"U16", 2, ST_U16},
    {"U32", 4, ST_U32},
    {"U64", 8, ST_U64},
    {"BOOL", 1, ST_BOOL},
    /* Known to the format, but no sensible float32 reading (or sub-byte): refused by name. */
    {"F8_E4M3", 1, ST_UNSUPPORTED},
    {"F8_E5M2", 1, ST_UNSUPPORTED},
    {"F8_E8M0", 1, ST_UNSUPPORTED},
    {"F6_E2M3", 0, ST_UNSUPPORTED},
    {"F6_E3M2", 0, ST_UNSUPPORTED},
    {"F4", 0, ST_UNSUPPORTED},
    {"C64", 8, ST_UNSUPPORTED},
};

static const st_dtype *st_find_dtype(const char *name)
{
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (strcmp(st_dtypes[i].name, name) == 0)
            return &st_dtypes[i];
    return NULL;
}

/* IEEE half to float, exactly (every half is a float). */
static float st_half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13); /* inf, nan (payload kept) */
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign; /* signed zero */
    } else {         /* subnormal half: normalise */
        int e = -1;
        do {
            e++;
            man <<= 1;
        } while (!(man & 0x400));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* bfloat16 is the top half of a float32. */
static float st_bf16_to_float(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* Converts n little-endian elements of kind k at src to float32 at dst. */
static void st_convert(st_kind k, const unsigned char *src, float *dst, int64_t n)
{
#define ST_CONVERT(type, expr)                                                                     \
    for (int64_t i = 0; i < n; i++) {                                                              \
        type v;                                                                                    \
        memcpy(&v, src + i * (int64_t)sizeof(type), sizeof(type));                                 \
        dst[i] = (expr);                                                                           \
    }
    switch (k) {
    case ST_F32: memcpy(dst, src, (size_t)n * 4); break;
    case ST_F64: ST_CONVERT(double, (float)v) break;
    case ST_F16: ST_CONVERT(uint16_t, st_half_to_float(v)) break;
    case ST_BF16: ST_CONVERT(uint16_t, st_bf16_to_float(v)) break;
    case ST_I8: ST_CONVERT(int8_t, (float)v) break;
    case ST_I16: ST_CONVERT(int16_t, (float)v) break;
    case ST_I32: ST_CONVERT(int32_t, (float)v) break;
    case ST_I64: ST_CONVERT(int64_t, (float)v) break;
    case ST_U8: ST_CONVERT(uint8_t, (float)v) break;
    case ST_U16: ST_CONVERT(uint16_t, (float)v) break;
    case ST_U32: ST_CONVERT(uint32_t, (float)v) break;
    case ST_U64: ST_CONVERT(uint64_t, (float)v) break;
    case ST_BOOL: ST_CONVERT(uint8_t, v ? 1.0f : 0.0f) break;
    case ST_UNSUPPORTED: break; /* refused during validation */
    }
#undef ST_CONVERT
}

/* ---- saving ------------------------------------------------------------------------------- */

/* A growing byte buffer; a failed allocation sets oom and later appends do nothing. */
typedef struct {
    char *buf;
    size_t len, cap;
    bool oom;
} st_buf;

static void st_put(st_buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        char *p = realloc(b->buf, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->buf = p;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
}

static void st_puts(st_buf *b, const char *s)
{
    st_put(b, s, strlen(s));
}

static void st_printf(st_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void st_printf(st_buf *b, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    st_put(b, tmp, (size_t)n); /* only used for numbers: never truncated */
}

/* Appends s as a JSON string. The state dict guarantees valid UTF-8, which JSON carries as
 * is; quotes, backslashes and control characters are escaped. */
static void st_put_json_string(st_buf *b, const char *s)
{
    st_put(b, "\"", 1);
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            st_put(b, esc, 2);
        } else if (c < 0x20) {
            switch (c) {
            case '\n': st_puts(b, "\\n"); break;
            case '\t': st_puts(b, "\\t"); break;
            case '\r': st_puts(b, "\\r"); break;
            case '\b': st_puts(b, "\\b"); break;
            case '\f': st_puts(b, "\\f"); break;
            default: st_printf(b, "\\u%04x", c); break;
            }
        } else {
            st_put(b, p, 1);
        }
    }
    st_put(b, "\"", 1);
}

/* Re-sets the latest error with our function name and the path in front of it, keeping the
 * status and the underlying message (which names the errno text). */
static tg_status st_wrap_error(const char *fn, const char *path)
{
    char inner[1024];
    snprintf(inner, sizeof inner, "%s", tg_last_error());
    tg_status st = tg_last_status() != TG_OK ? tg_last_status() : TG_ERR_IO;
    return tg_set_error(st, "%s: %s: %s", fn, path, inner);
}

tg_status tg_data_save_safetensors(const char *path, const tg_state_dict *sd)
{
    static const char fn[] = "tg_data_save_safetensors";
    if (!sd) {
        if (tg_last_status() != TG_OK) /* a failed tg_state_dict_new: keep its message */
            return tg_last_status();
        return tg_set_error(TG_ERR_ARG, "%s: state dict is NULL", fn);
    }
    if (!path || !path[0])
        return tg_set_error(TG_ERR_ARG, "%s: path is %s", fn, path ? "empty" : "NULL");

    /* The header, in insertion order; offsets run back to back from 0. */
    st_buf h = {0};
    st_puts(&h, "{");
    int64_t n_meta = tg_state_dict_meta_size(sd), n = tg_state_dict_size(sd);
    if (n_meta > 0) {
        st_puts(&h, "\"__metadata__\":{");
        for (int64_t i = 0; i < n_meta; i++) {
            if (i)
                st_puts(&h, ",");
            st_put_json_string(&h, tg_state_dict_meta_key(sd, i));
            st_puts(&h, ":");
            st_put_json_string(&h, tg_state_dict_meta_value(sd, i));
        }
        st_puts(&h, "}");
    }
    int64_t offset = 0;
    for (int64_t i = 0; i < n; i++) {
        const tg_tensor *t = tg_state_dict_tensor(sd, i);
        int64_t nbytes = t->numel * 4; /* tensor.c keeps numel below INT64_MAX / 4 */
        if (offset > INT64_MAX - nbytes) {
            free(h.buf);
            return tg_set_error(TG_ERR_ARG, "%s: %s: the tensors hold more than 2^63 bytes", fn,
                                path);
        }
        if (n_meta > 0 || i > 0)
            st_puts(&h, ",");
        st_put_json_string(&h, tg_state_dict_name(sd, i));
        st_puts(&h, ":{\"dtype\":\"F32\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++)
            st_printf(&h, d ? ",%lld" : "%lld", (long long)t->shape[d]);
        st_printf(&h, "],\"data_offsets\":[%lld,%lld]}", (long long)offset,
                  (long long)(offset + nbytes));
        offset += nbytes;
    }
    st_puts(&h, "}");
    /* Pad with spaces so the data section starts 8-byte aligned, as the reference does. */
    while (!h.oom && h.len % 8)
        st_puts(&h, " ");
    if (h.oom) {
        free(h.buf);
        return tg_set_error(TG_ERR_NOMEM, "%s: %s: out of memory building the header", fn, path);
    }

    unsigned char len_le[8];
    uint64_t hlen = h.len;
    memcpy(len_le, &hlen, 8); /* little-endian host: these are the little-endian bytes */

    tg_atomic_file *af = tg_atomic_open(path);
    if (!af) {
        free(h.buf);
        return st_wrap_error(fn, path);
    }
    tg_status st = tg_atomic_write(af, len_le, 8);
    if (st == TG_OK)
        st = tg_atomic_write(af, h.buf, h.len);
    free(h.buf);
    for (int64_t i = 0; i < n && st == TG_OK; i++) {
        const tg_tensor *t = tg_state_dict_tensor(sd, i);
        st = tg_atomic_write(af, t->data, (size_t)t->numel * 4);
    }
    if (st != TG_OK) {
        tg_atomic_abort(af);
        return st_wrap_error(fn, path);
    }
    if (tg_atomic_commit(af) != TG_OK)
        return st_wrap_error(fn, path);
    return TG_OK;
}

/* ---- loading ------------------------------------------------------------------------------ */

/* One tensor entry of the header, validated. */
typedef struct {
    const char *name; /* inside the JSON tree */
    const st_dtype *dtype;
    int ndim;
    int64_t shape[TG_MAX_DIMS];
    int64_t numel;
    int64_t begin, end; /* byte offsets inside the data section */
} st_entry;

typedef struct {
    const char *fn, *path;
} st_ctx;

/* Strings from the file (names, keys) for a message: tg_escape'd into at most size - 1 bytes
 * of printable ASCII, so a hostile name can neither break the message over lines, colour the
 * terminal, nor make the message huge. */
#define ST_SHOW_MAX 160
static const char *st_show(const char *s, char *buf, size_t size)
{
    tg_escape(buf, size, s, strnlen(s, size));
    return buf;
}

/* Sets TG_ERR_FORMAT (or status) naming the file and, when name is not NULL, the tensor. */
static void st_fail(const st_ctx *c, tg_status status, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void st_fail(const st_ctx *c, tg_status status, const char *name, const char *fmt, ...)
{
    char detail[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (name) {
        char shown[ST_SHOW_MAX];
        tg_set_error(status, "%s: %s: tensor \"%s\": %s", c->fn, c->path,
                     st_show(name, shown, sizeof shown), detail);
    } else {
        tg_set_error(status, "%s: %s: %s", c->fn, c->path, detail);
    }
}

/* Reads exactly n bytes at offset; false with TG_ERR_IO on an error or an early end. */
static bool st_read_at(const st_ctx *c, int fd, void *buf, int64_t n, int64_t offset)
{
    unsigned char *p = buf;
    while (n > 0) {
        size_t chunk = n > (1 << 30) ? (size_t)1 << 30 : (size_t)n;
        ssize_t got = pread(fd, p, chunk, (off_t)offset);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            st_fail(c, TG_ERR_IO, NULL, "reading %zu bytes at offset %lld: %s", chunk,
                    (long long)offset, strerror(errno));
            return false;
        }
        if (got == 0) {
            st_fail(c, TG_ERR_IO, NULL,
                    "the file ended at byte %lld while reading (did it "
                    "change during the load?)",
                    (long long)offset);
            return false;
        }
        p += got;
        n -= got;
        offset += got;
    }
    return true;
}

/* Describes a JSON value for a message: its integer, number text or type name. */
static const char *st_value_desc(const tg_json *v, char *buf, size_t size)
{
    if (v->type == TG_JSON_INT)
        snprintf(buf, size, "%lld", (long long)v->u.i);
    else if (v->type == TG_JSON_NUMBER)
        snprintf(buf, size, "%.*s", (int)(v->len < 40 ? v->len : 40), v->u.num);
    else
        snprintf(buf, size, "%s", tg_json_type_name(v->type));
    return buf;
}

/* Validates one "name": {...} entry of the header into e. */
static bool st_check_entry(const st_ctx *c, const tg_json_member *m, st_entry *e)
{
    const char *name = m->key;
    const tg_json *v = &m->value;
    char d[64];
    e->name = name;
    if (v->type != TG_JSON_OBJECT) {
        st_fail(c, TG_ERR_FORMAT, name,
                "expected an object with dtype, shape and data_offsets, found %s",
                tg_json_type_name(v->type));
        return false;
    }
    int64_t i1, i2;
    if (tg_json_find_duplicate(v, &i1, &i2)) {
        char k[ST_SHOW_MAX];
        st_fail(c, TG_ERR_FORMAT, name, "key \"%s\" appears twice",
                st_show(v->u.members[i1].key, k, sizeof k));
        return false;
    }
    for (int64_t i = 0; i < v->len; i++) {
        const char *k = v->u.members[i].key;
        if (strcmp(k, "dtype") && strcmp(k, "shape") && strcmp(k, "data_offsets")) {
            char shown[ST_SHOW_MAX];
            st_fail(c, TG_ERR_FORMAT, name,
                    "unknown key \"%s\" (an entry holds dtype, shape and data_offsets)",
                    st_show(k, shown, sizeof shown));
            return false;
        }
    }
    const tg_json *dtype = tg_json_get(v, "dtype"), *shape = tg_json_get(v, "shape"),
                  *offs = tg_json_get(v, "data_offsets");
    const char *missing = !dtype ? "dtype" : !shape ? "shape" : !offs ? "data_offsets" : NULL;
    if (missing) {
        st_fail(c, TG_ERR_FORMAT, name, "missing \"%s\"", missing);
        return false;
    }

    /* dtype */
    if (dtype->type != TG_JSON_STRING) {
        st_fail(c, TG_ERR_FORMAT, name, "dtype is %s, not a string",
                tg_json_type_name(dtype->type));
        return false;
    }
    e->dtype = st_find_dtype(dtype->u.s);
    if (!e->dtype) {
        st_fail(c, TG_ERR_FORMAT, name, "unknown dtype \"%s\"", st_show(dtype->u.s, d, 40));
        return false;
    }
    if (e->dtype->kind == ST_UNSUPPORTED) {
        st_fail(c, TG_ERR_FORMAT, name,
                "unsupported dtype \"%s\" (tapegrad reads F32, F64, F16, BF16, integer and "
                "BOOL tensors as float32)",
                e->dtype->name);
        return false;
    }

    /* shape */
    if (shape->type != TG_JSON_ARRAY) {
        st_fail(c, TG_ERR_FORMAT, name, "shape is %s, not an array",
                tg_json_type_name(shape->type));
        return false;
    }
    if (shape->len > TG_MAX_DIMS) {
        st_fail(c, TG_ERR_FORMAT, name, "shape has %lld dimensions; tapegrad supports up to %d",
                (long long)shape->len, TG_MAX_DIMS);
        return false;
    }
    e->ndim = (int)shape->len;
    for (int i = 0; i < e->ndim; i++) {
        const tg_json *s = &shape->u.items[i];
        if (s->type != TG_JSON_INT) {
            st_fail(c, TG_ERR_FORMAT, name, "shape entry %d is %s, not an integer", i,
                    st_value_desc(s, d, sizeof d));
            return false;
        }
        if (s->u.i < 0) {
            st_fail(c, TG_ERR_FORMAT, name, "shape entry %d is %lld, which is negative", i,
                    (long long)s->u.i);
            return false;
        }
        e->shape[i] = s->u.i;
    }
    char shape_s[160];
    tg_shape_str(e->ndim, e->shape, shape_s, sizeof shape_s);
    e->numel = tg_shape_numel(e->ndim, e->shape);
    if (e->numel < 0 || e->numel > INT64_MAX / 8) {
        st_fail(c, TG_ERR_FORMAT, name, "shape %s has more elements than int64 can count", shape_s);
        return false;
    }

    /* data_offsets */
    if (offs->type != TG_JSON_ARRAY || offs->len != 2) {
        if (offs->type == TG_JSON_ARRAY)
            snprintf(d, sizeof d, "%lld entries", (long long)offs->len);
        st_fail(c, TG_ERR_FORMAT, name, "data_offsets must be [begin, end], found %s",
                offs->type == TG_JSON_ARRAY ? d : tg_json_type_name(offs->type));
        return false;
    }
    for (int i = 0; i < 2; i++) {
        const tg_json *o = &offs->u.items[i];
        if (o->type != TG_JSON_INT || o->u.i < 0) {
            st_fail(c, TG_ERR_FORMAT, name,
                    "data_offsets entry %d is %s, not a non-negative integer", i,
                    st_value_desc(o, d, sizeof d));
            return false;
        }
    }
    e->begin = offs->u.items[0].u.i;
    e->end = offs->u.items[1].u.i;
    if (e->end < e->begin) {
        st_fail(c, TG_ERR_FORMAT, name, "data_offsets [%lld, %lld] end before they begin",
                (long long)e->begin, (long long)e->end);
        return false;
    }
    int64_t nbytes = e->end - e->begin, size = e->dtype->size;
    if (nbytes % size != 0) {
        st_fail(c, TG_ERR_FORMAT, name,
                "data_offsets [%lld, %lld] span %lld bytes, not a whole number of %s values "
                "(%lld bytes each)",
                (long long)e->begin, (long long)e->end, (long long)nbytes, e->dtype->name,
                (long long)size);
        return false;
    }
    if (nbytes / size != e->numel) {
        char what[24];
        snprintf(what, sizeof what, "%s values", e->dtype->name);
        st_fail(c, TG_ERR_FORMAT, name,
                "data_offsets [%lld, %lld] hold %lld %s but shape %s "
                "needs %lld",
                (long long)e->begin, (long long)e->end, (long long)(nbytes / size),
                e->dtype->kind == ST_F32 ? "floats" : what, shape_s, (long long)e->numel);
        return false;
    }
    return true;
}

static bool st_check_metadata(const st_ctx *c, const tg_json *meta)
{
    if (meta->type != TG_JSON_OBJECT) {
        st_fail(c, TG_ERR_FORMAT, NULL, "__metadata__ is %s, not an object",
                tg_json_type_name(meta->type));
        return false;
    }
    if (meta->len > ST_MAX_KEYS) {
        st_fail(c, TG_ERR_FORMAT, NULL, "__metadata__ has %lld entries, above the limit of %d",
                (long long)meta->len, ST_MAX_KEYS);
        return false;
    }
    int64_t i1, i2;
    if (tg_json_find_duplicate(meta, &i1, &i2)) {
        char k[ST_SHOW_MAX];
        st_fail(c, TG_ERR_FORMAT, NULL, "__metadata__ key \"%s\" appears twice",
                st_show(meta->u.members[i1].key, k, sizeof k));
        return false;
    }
    for (int64_t i = 0; i < meta->len; i++) {
        const tg_json_member *m = &meta->u.members[i];
        if (m->value.type != TG_JSON_STRING) {
            char k[ST_SHOW_MAX];
            st_fail(c, TG_ERR_FORMAT, NULL, "__metadata__ value of \"%s\" is %s, not a string",
                    st_show(m->key, k, sizeof k), tg_json_type_name(m->value.type));
            return false;
        }
    }
    return true;
}

static int st_entry_cmp(const void *a, const void *b)
{
    const st_entry *x = *(const st_entry *const *)a, *y = *(const st_entry *const *)b;
    if (x->begin != y->begin)
        return (x->begin > y->begin) - (x->begin < y->begin);
    return (x->end > y->end) - (x->end < y->end);
}

/* Checks that the entries tile the data section [0, data_size) exactly: the file holds enough
 * bytes for all of them, each lies inside, none overlap, no byte is left over. */
static bool st_check_layout(const st_ctx *c, st_entry *e, int64_t n, int64_t data_size)
{
    int64_t need = 0; /* saturates at INT64_MAX */
    for (int64_t i = 0; i < n; i++) {
        int64_t x = e[i].end - e[i].begin;
        need = need > INT64_MAX - x ? INT64_MAX : need + x;
    }
    if (need > data_size) {
        /* Whatever the layout, this many bytes do not fit: the file was cut short. */
        st_fail(c, TG_ERR_FORMAT, NULL,
                "file is truncated: its tensors need %lld bytes of data but only %lld follow "
                "the header",
                (long long)need, (long long)data_size);
        return false;
    }
    for (int64_t i = 0; i < n; i++) {
        if (e[i].end > data_size) {
            st_fail(c, TG_ERR_FORMAT, e[i].name,
                    "data_offsets [%lld, %lld] run past the end of the data section "
                    "(%lld bytes)",
                    (long long)e[i].begin, (long long)e[i].end, (long long)data_size);
            return false;
        }
    }
    const st_entry **order = malloc((size_t)(n ? n : 1) * sizeof *order);
    if (!order) {
        st_fail(c, TG_ERR_NOMEM, NULL, "out of memory sorting %lld entries", (long long)n);
        return false;
    }
    for (int64_t i = 0; i < n; i++)
        order[i] = &e[i];
    qsort(order, (size_t)n, sizeof *order, st_entry_cmp);
    int64_t gap = -1; /* data offset of the first byte no tensor claims */
    for (int64_t i = 0; i < n; i++) {
        const st_entry *a = i ? order[i - 1] : NULL, *b = order[i];
        if (a && b->begin < a->end) {
            char an[ST_SHOW_MAX], bn[ST_SHOW_MAX];
            st_fail(c, TG_ERR_FORMAT, NULL,
                    "tensors \"%s\" [%lld, %lld] and \"%s\" [%lld, %lld] overlap",
                    st_show(a->name, an, sizeof an), (long long)a->begin, (long long)a->end,
                    st_show(b->name, bn, sizeof bn), (long long)b->begin, (long long)b->end);
            free(order);
            return false;
        }
        if (gap < 0 && b->begin > (a ? a->end : 0))
            gap = a ? a->end : 0;
    }
    if (gap < 0)
        gap = n ? order[n - 1]->end : 0;
    free(order);
    /* No overlaps, so the tensors claim exactly `need` bytes. */
    if (need < data_size) {
        st_fail(c, TG_ERR_FORMAT, NULL,
                "%lld bytes of the %lld-byte data section belong to no tensor (the first at "
                "data offset %lld)",
                (long long)(data_size - need), (long long)data_size, (long long)gap);
        return false;
    }
    return true;
}

/* Validates the parsed header; fills entries (JSON order) and *meta. */
static bool st_check_header(const st_ctx *c, const tg_json *root, int64_t data_size,
                            st_entry **entries, int64_t *n_entries, const tg_json **meta)
{
    *entries = NULL;
    *n_entries = 0;
    *meta = NULL;
    if (root->type != TG_JSON_OBJECT) {
        st_fail(c, TG_ERR_FORMAT, NULL, "the header is %s, not a JSON object",
                tg_json_type_name(root->type));
        return false;
    }
    int64_t i1, i2;
    if (tg_json_find_duplicate(root, &i1, &i2)) {
        const tg_json_member *m = root->u.members;
        if (strcmp(m[i1].key, "__metadata__") == 0)
            st_fail(c, TG_ERR_FORMAT, NULL, "__metadata__ appears twice");
        else
            st_fail(c, TG_ERR_FORMAT, m[i1].key,
                    "the name appears twice in the header (at header bytes %lld and %lld)",
                    (long long)m[i1].key_offset, (long long)m[i2].key_offset);
        return false;
    }
    st_entry *e = malloc((size_t)(root->len ? root->len : 1) * sizeof *e);
    if (!e) {
        st_fail(c, TG_ERR_NOMEM, NULL, "out of memory for %lld header entries",
                (long long)root->len);
        return false;
    }
    int64_t n = 0;
    for (int64_t i = 0; i < root->len; i++) {
        const tg_json_member *m = &root->u.members[i];
        if (strcmp(m->key, "__metadata__") == 0) {
            if (!st_check_metadata(c, &m->value)) {
                free(e);
                return false;
            }
            *meta = &m->value;
            continue;
        }
        if (!st_check_entry(c, m, &e[n])) {
            free(e);
            return false;
        }
        n++;
    }
    if (!st_check_layout(c, e, n, data_size)) {
        free(e);
        return false;
    }
    *entries = e;
    *n_entries = n;
    return true;
}

/* Builds the state dict from a validated header, reading each tensor's bytes. */
static tg_state_dict *st_build(const st_ctx *c, int fd, int64_t data_start, const st_entry *e,
                               int64_t n, const tg_json *meta)
{
    tg_state_dict *sd = tg_state_dict_new();
    if (!sd)
        return NULL;
    char inner[1024];
    for (int64_t i = 0; meta && i < meta->len; i++) {
        const tg_json_member *m = &meta->u.members[i];
        if (tg_state_dict_set_meta(sd, m->key, m->value.u.s) != TG_OK) {
            /* Names the key's problem (empty, too long, control characters): a format error. */
            snprintf(inner, sizeof inner, "%s", tg_last_error());
            st_fail(c, tg_last_status() == TG_ERR_NOMEM ? TG_ERR_NOMEM : TG_ERR_FORMAT, NULL,
                    "__metadata__: %s", inner);
            tg_state_dict_free(sd);
            return NULL;
        }
    }
    for (int64_t i = 0; i < n; i++) {
        tg_tensor *t = tg_tensor_new(e[i].ndim, e[i].shape);
        if (!t) {
            snprintf(inner, sizeof inner, "%s", tg_last_error());
            st_fail(c, tg_last_status(), e[i].name, "%s", inner);
            tg_state_dict_free(sd);
            return NULL;
        }
        tg_status st = tg_state_dict_put(sd, e[i].name, t);
        tg_tensor_release(t); /* the dict holds it now (or it is freed on failure) */
        if (st != TG_OK) {
            snprintf(inner, sizeof inner, "%s", tg_last_error());
            st_fail(c, st == TG_ERR_NOMEM ? TG_ERR_NOMEM : TG_ERR_FORMAT, e[i].name, "%s", inner);
            tg_state_dict_free(sd);
            return NULL;
        }
    }
    /* Names are all fine: now the (possibly large) data. */
    for (int64_t i = 0; i < n; i++) {
        tg_tensor *t = tg_state_dict_tensor(sd, i);
        int64_t nbytes = e[i].end - e[i].begin;
        if (nbytes == 0)
            continue;
        bool ok;
        if (e[i].dtype->kind == ST_F32) {
            ok = st_read_at(c, fd, t->data, nbytes, data_start + e[i].begin);
        } else {
            unsigned char *raw = malloc((size_t)nbytes);
            if (!raw) {
                st_fail(c, TG_ERR_NOMEM, e[i].name, "out of memory for %lld bytes of %s data",
                        (long long)nbytes, e[i].dtype->name);
                tg_state_dict_free(sd);
                return NULL;
            }
            ok = st_read_at(c, fd, raw, nbytes, data_start + e[i].begin);
            if (ok)
                st_convert(e[i].dtype->kind, raw, t->data, t->numel);
            free(raw);
        }
        if (!ok) {
            tg_state_dict_free(sd);
            return NULL;
        }
    }
    return sd;
}

tg_state_dict *tg_data_load_safetensors(const char *path)
{
    static const char fn[] = "tg_data_load_safetensors";
    if (!path || !path[0]) {
        tg_set_error(TG_ERR_ARG, "%s: path is %s", fn, path ? "empty" : "NULL");
        return NULL;
    }
    st_ctx c = {fn, path};
    struct stat stbuf;
    int fd = tg_open_regular(fn, path, &stbuf); /* a FIFO is refused, not waited on */
    if (fd < 0)
        return NULL;
    tg_state_dict *sd = NULL;
    char *header = NULL;
    tg_json *root = NULL;
    st_entry *entries = NULL;
    int64_t n_entries = 0;
    const tg_json *meta = NULL;

    int64_t file_size = (int64_t)stbuf.st_size;
    if (file_size == 0) {
        st_fail(&c, TG_ERR_FORMAT, NULL,
                "the file is empty (a safetensors file starts with "
                "an 8-byte header length)");
        goto done;
    }
    if (file_size < 8) {
        st_fail(&c, TG_ERR_FORMAT, NULL,
                "the file is %lld bytes, too short for the 8-byte "
                "header length",
                (long long)file_size);
        goto done;
    }
    unsigned char len_le[8];
    if (!st_read_at(&c, fd, len_le, 8, 0))
        goto done;
    uint64_t hlen;
    memcpy(&hlen, len_le, 8); /* little-endian host: the bytes are the value */
    if (hlen > (uint64_t)(file_size - 8)) {
        st_fail(&c, TG_ERR_FORMAT, NULL,
                "header length %llu runs past the end of the file (%lld bytes leave room for "
                "at most %lld)",
                (unsigned long long)hlen, (long long)file_size, (long long)(file_size - 8));
        goto done;
    }
    if (hlen > ST_MAX_HEADER) {
        st_fail(&c, TG_ERR_FORMAT, NULL, "header length %llu is above the %llu-byte limit",
                (unsigned long long)hlen, ST_MAX_HEADER);
        goto done;
    }
    header = malloc(hlen ? (size_t)hlen : 1);
    if (!header) {
        st_fail(&c, TG_ERR_NOMEM, NULL, "out of memory for a %llu-byte header",
                (unsigned long long)hlen);
        goto done;
    }
    if (!st_read_at(&c, fd, header, (int64_t)hlen, 8))
        goto done;
    tg_json_error jerr;
    root = tg_json_parse(header, (int64_t)hlen, &jerr);
    if (!root) {
        if (jerr.offset < 0)
            st_fail(&c, TG_ERR_NOMEM, NULL, "out of memory parsing the header");
        else
            st_fail(&c, TG_ERR_FORMAT, NULL,
                    "invalid header JSON at header byte %lld (file byte %lld): %s",
                    (long long)jerr.offset, (long long)jerr.offset + 8, jerr.msg);
        goto done;
    }
    int64_t data_start = 8 + (int64_t)hlen;
    if (!st_check_header(&c, root, file_size - data_start, &entries, &n_entries, &meta))
        goto done;
    sd = st_build(&c, fd, data_start, entries, n_entries, meta);

done:
    free(entries);
    tg_json_free(root);
    free(header);
    close(fd);
    return sd;
}
