/* json.c — a small strict JSON reader for safetensors headers.
 *
 * Recursive descent over a length-delimited buffer (the header need not be NUL-terminated),
 * depth-limited so a hostile header cannot exhaust the stack. Every failure records the byte
 * offset and a message specific to the mistake, because "bad JSON" is no help to someone
 * staring at a hex dump. On failure each parse function frees what it built and leaves its
 * output as TG_JSON_NULL, so the caller has nothing to clean up. */
#include "internal.h"
#include "../tensor/internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *text;
    int64_t len, pos;
    int depth;
    int64_t values; /* values started so far, against TG_JSON_MAX_VALUES */
    tg_json_error *err;
} json_parser;

static bool json_fail(json_parser *jp, int64_t offset, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static bool json_fail(json_parser *jp, int64_t offset, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(jp->err->msg, sizeof jp->err->msg, fmt, ap);
    va_end(ap);
    jp->err->offset = offset;
    return false;
}

static bool json_oom(json_parser *jp)
{
    return json_fail(jp, -1, "out of memory");
}

/* Describes the character at pos for a message: 'x', byte 0x07, or end of header. */
static const char *json_char_desc(const json_parser *jp, int64_t pos, char *buf, size_t size)
{
    if (pos >= jp->len)
        snprintf(buf, size, "end of header");
    else if ((unsigned char)jp->text[pos] >= 0x21 && (unsigned char)jp->text[pos] < 0x7f)
        snprintf(buf, size, "'%c'", jp->text[pos]);
    else
        snprintf(buf, size, "byte 0x%02x", (unsigned char)jp->text[pos]);
    return buf;
}

static void json_skip_ws(json_parser *jp)
{
    while (jp->pos < jp->len) {
        char c = jp->text[jp->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        jp->pos++;
    }
}

static int json_peek(const json_parser *jp)
{
    return jp->pos < jp->len ? (unsigned char)jp->text[jp->pos] : -1;
}

void tg_json_free(tg_json *v);

/* Frees what v owns (not v itself) and makes it a null. */
static void json_clear(tg_json *v)
{
    switch (v->type) {
    case TG_JSON_STRING: free(v->u.s); break;
    case TG_JSON_ARRAY:
        for (int64_t i = 0; i < v->len; i++)
            json_clear(&v->u.items[i]);
        free(v->u.items);
        break;
    case TG_JSON_OBJECT:
        for (int64_t i = 0; i < v->len; i++) {
            free(v->u.members[i].key);
            json_clear(&v->u.members[i].value);
        }
        free(v->u.members);
        break;
    default: break;
    }
    v->type = TG_JSON_NULL;
    v->len = 0;
}

void tg_json_free(tg_json *v)
{
    if (!v)
        return;
    json_clear(v);
    free(v);
}

/* ---- strings ------------------------------------------------------------------------------ */

static int json_hex4(const char *s)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

static int json_put_utf8(char *out, uint32_t cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Parses the string whose opening quote is at jp->pos into a new NUL-terminated buffer. */
static bool json_string(json_parser *jp, char **out, int64_t *out_len)
{
    int64_t start = jp->pos;
    *out = NULL;
    /* Find the closing quote first: the decoded string is never longer than the source. */
    int64_t end = start + 1;
    while (end < jp->len && jp->text[end] != '"')
        end += jp->text[end] == '\\' ? 2 : 1;
    if (end >= jp->len)
        return json_fail(jp, start, "unterminated string");
    char *buf = malloc((size_t)(end - start));
    if (!buf)
        return json_oom(jp);
    int64_t n = 0, i = start + 1;
    while (i < end) {
        const unsigned char c = (unsigned char)jp->text[i];
        if (c < 0x20) {
            free(buf);
            return json_fail(jp, i, "control character 0x%02x inside a string (escape it)", c);
        }
        if (c >= 0x80) {
            int len = tg_utf8_len((const unsigned char *)jp->text + i, end - i);
            if (!len) {
                free(buf);
                return json_fail(jp, i, "invalid UTF-8 byte 0x%02x inside a string", c);
            }
            memcpy(buf + n, jp->text + i, (size_t)len);
            n += len;
            i += len;
            continue;
        }
        if (c != '\\') {
            buf[n++] = (char)c;
            i++;
            continue;
        }
        char e = jp->text[i + 1]; /* i + 1 < end: the scan above skipped escapes in pairs */
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e && simple) {
            static const char decoded[] = "\"\\/\b\f\n\r\t";
            buf[n++] = decoded[simple - "\"\\/bfnrt"];
            i += 2;
            continue;
        }
        if (e != 'u') {
            free(buf);
            return json_fail(jp, i, "invalid escape '\\%c' in a string",
                             e >= 0x20 && e < 0x7f ? e : '?');
        }
        int hi = end - i >= 6 ? json_hex4(jp->text + i + 2) : -1;
        if (hi < 0) {
            free(buf);
            return json_fail(jp, i, "\\u must be followed by 4 hex digits");
        }
        uint32_t cp = (uint32_t)hi;
        int64_t esc_len = 6;
        if (hi >= 0xd800 && hi <= 0xdbff) { /* a high surrogate needs its low half next */
            int lo = end - i >= 12 && jp->text[i + 6] == '\\' && jp->text[i + 7] == 'u'
                         ? json_hex4(jp->text + i + 8)
                         : -1;
            if (lo < 0xdc00 || lo > 0xdfff) {
                free(buf);
                return json_fail(jp, i, "\\u%04x is a high surrogate without a low one", hi);
            }
            cp = 0x10000 + (((uint32_t)hi - 0xd800) << 10) + ((uint32_t)lo - 0xdc00);
            esc_len = 12;
        } else if (hi >= 0xdc00 && hi <= 0xdfff) {
            free(buf);
            return json_fail(jp, i, "\\u%04x is a low surrogate without a high one", hi);
        } else if (hi == 0) {
            free(buf);
            return json_fail(jp, i, "\\u0000 (a NUL character) is not supported in strings");
        }
        n += json_put_utf8(buf + n, cp);
        i += esc_len;
    }
    buf[n] = '\0';
    jp->pos = end + 1;
    *out = buf;
    *out_len = n;
    return true;
}

/* ---- numbers ------------------------------------------------------------------------------ */

static bool json_digit(int c)
{
    return c >= '0' && c <= '9';
}

static bool json_number(json_parser *jp, tg_json *out)
{
    int64_t start = jp->pos;
    bool neg = false, integer = true, overflow = false;
    uint64_t mag = 0;
    if (json_peek(jp) == '-') {
        neg = true;
        jp->pos++;
    }
    if (!json_digit(json_peek(jp)))
        return json_fail(jp, start, "invalid number: a digit must follow '-'");
    if (json_peek(jp) == '0' && jp->pos + 1 < jp->len && json_digit(jp->text[jp->pos + 1]))
        return json_fail(jp, start, "invalid number: leading zero");
    while (json_digit(json_peek(jp))) {
        unsigned d = (unsigned)(jp->text[jp->pos] - '0');
        if (mag > (UINT64_MAX - d) / 10)
            overflow = true;
        else
            mag = mag * 10 + d;
        jp->pos++;
    }
    if (json_peek(jp) == '.') {
        integer = false;
        jp->pos++;
        if (!json_digit(json_peek(jp)))
            return json_fail(jp, jp->pos, "invalid number: a digit must follow '.'");
        while (json_digit(json_peek(jp)))
            jp->pos++;
    }
    if (json_peek(jp) == 'e' || json_peek(jp) == 'E') {
        integer = false;
        jp->pos++;
        if (json_peek(jp) == '+' || json_peek(jp) == '-')
            jp->pos++;
        if (!json_digit(json_peek(jp)))
            return json_fail(jp, jp->pos, "invalid number: a digit must follow the exponent");
        while (json_digit(json_peek(jp)))
            jp->pos++;
    }
    out->offset = start;
    out->len = jp->pos - start;
    if (integer && !overflow && mag <= (uint64_t)INT64_MAX + (neg ? 1u : 0u)) {
        out->type = TG_JSON_INT;
        /* -(2^63) needs the unsigned detour: its magnitude does not fit int64. */
        out->u.i = neg ? (int64_t)(0 - mag) : (int64_t)mag;
    } else {
        out->type = TG_JSON_NUMBER;
        out->u.num = jp->text + start;
    }
    return true;
}

/* ---- containers --------------------------------------------------------------------------- */

static bool json_value(json_parser *jp, tg_json *out);

static bool json_array(json_parser *jp, tg_json *out)
{
    char d[24];
    out->type = TG_JSON_ARRAY;
    out->offset = jp->pos;
    out->len = 0;
    out->u.items = NULL;
    int64_t cap = 0;
    jp->pos++; /* '[' */
    json_skip_ws(jp);
    if (json_peek(jp) == ']') {
        jp->pos++;
        return true;
    }
    for (;;) {
        if (!tg_grow((void **)&out->u.items, &cap, out->len + 1, sizeof(tg_json))) {
            json_clear(out);
            return json_oom(jp);
        }
        if (!json_value(jp, &out->u.items[out->len])) {
            json_clear(out);
            return false;
        }
        out->len++;
        json_skip_ws(jp);
        int c = json_peek(jp);
        if (c == ']') {
            jp->pos++;
            return true;
        }
        if (c != ',') {
            json_clear(out);
            return json_fail(jp, jp->pos, "expected ',' or ']' after an array item, found %s",
                             json_char_desc(jp, jp->pos, d, sizeof d));
        }
        int64_t comma = jp->pos++;
        json_skip_ws(jp);
        if (json_peek(jp) == ']') {
            json_clear(out);
            return json_fail(jp, comma, "trailing comma before ']'");
        }
    }
}

static bool json_object(json_parser *jp, tg_json *out)
{
    char d[24];
    out->type = TG_JSON_OBJECT;
    out->offset = jp->pos;
    out->len = 0;
    out->u.members = NULL;
    int64_t cap = 0;
    jp->pos++; /* '{' */
    json_skip_ws(jp);
    if (json_peek(jp) == '}') {
        jp->pos++;
        return true;
    }
    for (;;) {
        if (json_peek(jp) != '"') {
            json_clear(out);
            return json_fail(jp, jp->pos, "expected a string key, found %s",
                             json_char_desc(jp, jp->pos, d, sizeof d));
        }
        if (!tg_grow((void **)&out->u.members, &cap, out->len + 1, sizeof(tg_json_member))) {
            json_clear(out);
            return json_oom(jp);
        }
        tg_json_member *m = &out->u.members[out->len];
        m->key_offset = jp->pos;
        int64_t key_len;
        if (!json_string(jp, &m->key, &key_len)) {
            json_clear(out);
            return false;
        }
        json_skip_ws(jp);
        if (json_peek(jp) != ':') {
            free(m->key);
            json_clear(out);
            return json_fail(jp, jp->pos, "expected ':' after an object key, found %s",
                             json_char_desc(jp, jp->pos, d, sizeof d));
        }
        jp->pos++;
        if (!json_value(jp, &m->value)) {
            free(m->key);
            json_clear(out);
            return false;
        }
        out->len++;
        json_skip_ws(jp);
        int c = json_peek(jp);
        if (c == '}') {
            jp->pos++;
            return true;
        }
        if (c != ',') {
            json_clear(out);
            return json_fail(jp, jp->pos, "expected ',' or '}' after an object member, found %s",
                             json_char_desc(jp, jp->pos, d, sizeof d));
        }
        int64_t comma = jp->pos++;
        json_skip_ws(jp);
        if (json_peek(jp) == '}') {
            json_clear(out);
            return json_fail(jp, comma, "trailing comma before '}'");
        }
    }
}

static bool json_literal(json_parser *jp, tg_json *out, const char *word, tg_json_type type, bool b)
{
    size_t n = strlen(word);
    if (jp->len - jp->pos < (int64_t)n || memcmp(jp->text + jp->pos, word, n) != 0)
        return json_fail(jp, jp->pos, "invalid literal (expected '%s')", word);
    out->type = type;
    out->offset = jp->pos;
    out->len = 0;
    out->u.b = b;
    jp->pos += (int64_t)n;
    return true;
}

static bool json_value(json_parser *jp, tg_json *out)
{
    char d[24];
    out->type = TG_JSON_NULL;
    out->len = 0;
    json_skip_ws(jp);
    out->offset = jp->pos;
    if (++jp->values > TG_JSON_MAX_VALUES)
        return json_fail(jp, jp->pos, "more than %d values (the limit that bounds its memory)",
                         TG_JSON_MAX_VALUES);
    int c = json_peek(jp);
    switch (c) {
    case '{':
    case '[':
        if (jp->depth >= TG_JSON_MAX_DEPTH)
            return json_fail(jp, jp->pos, "nesting deeper than %d levels", TG_JSON_MAX_DEPTH);
        jp->depth++;
        bool ok = c == '{' ? json_object(jp, out) : json_array(jp, out);
        jp->depth--;
        return ok;
    case '"': {
        int64_t start = jp->pos;
        if (!json_string(jp, &out->u.s, &out->len))
            return false;
        out->type = TG_JSON_STRING;
        out->offset = start;
        return true;
    }
    case 't': return json_literal(jp, out, "true", TG_JSON_BOOL, true);
    case 'f': return json_literal(jp, out, "false", TG_JSON_BOOL, false);
    case 'n': return json_literal(jp, out, "null", TG_JSON_NULL, false);
    default:
        if (c == '-' || json_digit(c))
            return json_number(jp, out);
        return json_fail(jp, jp->pos, "expected a value, found %s",
                         json_char_desc(jp, jp->pos, d, sizeof d));
    }
}

tg_json *tg_json_parse(const char *text, int64_t len, tg_json_error *err)
{
    json_parser jp = {.text = text, .len = len, .pos = 0, .depth = 0, .values = 0, .err = err};
    err->offset = 0;
    err->msg[0] = '\0';
    tg_json *v = malloc(sizeof *v);
    if (!v) {
        json_oom(&jp);
        return NULL;
    }
    if (!json_value(&jp, v)) {
        free(v);
        return NULL;
    }
    json_skip_ws(&jp);
    if (jp.pos < jp.len) {
        char d[24];
        json_fail(&jp, jp.pos, "unexpected %s after the JSON value",
                  json_char_desc(&jp, jp.pos, d, sizeof d));
        tg_json_free(v);
        return NULL;
    }
    return v;
}

/* ---- queries ------------------------------------------------------------------------------ */

const tg_json *tg_json_get(const tg_json *obj, const char *key)
{
    if (!obj || obj->type != TG_JSON_OBJECT)
        return NULL;
    for (int64_t i = 0; i < obj->len; i++)
        if (strcmp(obj->u.members[i].key, key) == 0)
            return &obj->u.members[i].value;
    return NULL;
}

typedef struct {
    const char *key;
    int64_t index;
} json_key_ref;

static int json_key_cmp(const void *a, const void *b)
{
    const json_key_ref *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    if (c)
        return c;
    return (x->index > y->index) - (x->index < y->index);
}

bool tg_json_find_duplicate(const tg_json *obj, int64_t *first, int64_t *second)
{
    if (!obj || obj->type != TG_JSON_OBJECT || obj->len < 2)
        return false;
    const tg_json_member *m = obj->u.members;
    json_key_ref *refs = obj->len > 16 ? malloc((size_t)obj->len * sizeof *refs) : NULL;
    if (!refs) { /* small objects, or no memory to sort: compare every pair */
        for (int64_t j = 1; j < obj->len; j++)
            for (int64_t i = 0; i < j; i++)
                if (strcmp(m[i].key, m[j].key) == 0) {
                    *first = i;
                    *second = j;
                    return true;
                }
        return false;
    }
    for (int64_t i = 0; i < obj->len; i++)
        refs[i] = (json_key_ref){m[i].key, i};
    qsort(refs, (size_t)obj->len, sizeof *refs, json_key_cmp);
    /* Report the pair whose second member comes first in the source, like the pair loop. */
    bool found = false;
    for (int64_t k = 1; k < obj->len; k++) {
        if (strcmp(refs[k - 1].key, refs[k].key) == 0 && (!found || refs[k].index < *second)) {
            *first = refs[k - 1].index;
            *second = refs[k].index;
            found = true;
        }
    }
    free(refs);
    return found;
}

const char *tg_json_type_name(tg_json_type type)
{
    switch (type) {
    case TG_JSON_NULL: return "null";
    case TG_JSON_BOOL: return "a boolean";
    case TG_JSON_INT: return "an integer";
    case TG_JSON_NUMBER: return "a non-integer number";
    case TG_JSON_STRING: return "a string";
    case TG_JSON_ARRAY: return "an array";
    case TG_JSON_OBJECT: return "an object";
    }
    return "an unknown value";
}
