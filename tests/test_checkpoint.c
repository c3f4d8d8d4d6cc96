/* State dicts (tensor/state.c) and safetensors checkpoints (data/safetensors.c). */
#include "common.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data.h"
#include "data/internal.h" /* the JSON reader */

/* ---- state dict ------------------------------------------------------------------------- */

static void test_state_dict_basic(void **state)
{
    (void)state;
    tg_state_dict *sd = tg_state_dict_new();
    assert_non_null(sd);
    assert_int_equal(tg_state_dict_size(sd), 0);
    assert_null(tg_state_dict_get(sd, "w"));

    tg_tensor *a = tg_tensor_full(TG_DIMS(2, 3), 1.5f);
    tg_tensor *b = tg_tensor_scalar(7.0f);
    assert_int_equal(tg_state_dict_put(sd, "net.fc1.weight", a), TG_OK);
    assert_int_equal(tg_state_dict_put(sd, "net.fc1.bias", b), TG_OK);
    /* The dict holds its own references: releasing ours keeps the tensors alive. */
    tg_tensor_release(a);
    tg_tensor_release(b);
    assert_int_equal(tg_state_dict_size(sd), 2);
    assert_string_equal(tg_state_dict_name(sd, 0), "net.fc1.weight");
    assert_string_equal(tg_state_dict_name(sd, 1), "net.fc1.bias");
    assert_ptr_equal(tg_state_dict_tensor(sd, 0), a);
    assert_ptr_equal(tg_state_dict_get(sd, "net.fc1.bias"), b);
    assert_true(tg_state_dict_get(sd, "net.fc1.weight")->data[5] == 1.5f);
    assert_null(tg_state_dict_get(sd, "net.fc1"));
    assert_int_equal(tg_last_status(), TG_OK); /* a miss is not an error */

    /* Duplicates are refused and leave the dict unchanged. */
    tg_tensor *c = tg_tensor_zeros(TG_DIMS(1));
    assert_int_equal(tg_state_dict_put(sd, "net.fc1.bias", c), TG_ERR_ARG);
    assert_error_contains("tg_state_dict_put: name \"net.fc1.bias\" is already in the state dict");
    assert_int_equal(tg_state_dict_size(sd), 2);
    assert_ptr_equal(tg_state_dict_get(sd, "net.fc1.bias"), b);
    tg_tensor_release(c);

    /* Metadata: insertion order, replacement in place. */
    assert_int_equal(tg_state_dict_meta_size(sd), 0);
    assert_int_equal(tg_state_dict_set_meta(sd, "format", "pt"), TG_OK);
    assert_int_equal(tg_state_dict_set_meta(sd, "epoch", "3"), TG_OK);
    assert_int_equal(tg_state_dict_set_meta(sd, "format", "tapegrad"), TG_OK);
    assert_int_equal(tg_state_dict_meta_size(sd), 2);
    assert_string_equal(tg_state_dict_meta_key(sd, 0), "format");
    assert_string_equal(tg_state_dict_meta_value(sd, 0), "tapegrad");
    assert_string_equal(tg_state_dict_meta(sd, "epoch"), "3");
    assert_null(tg_state_dict_meta(sd, "missing"));
    tg_state_dict_free(sd);
}

/* Enough names to grow the array and rehash the index several times. */
static void test_state_dict_many(void **state)
{
    (void)state;
    tg_state_dict *sd = tg_state_dict_new();
    tg_tensor *t = tg_tensor_zeros(TG_DIMS(1));
    char name[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(name, sizeof name, "layer%d.weight", i);
        assert_int_equal(tg_state_dict_put(sd, name, t), TG_OK);
    }
    assert_int_equal(t->refcount, 1001);
    for (int i = 0; i < 1000; i++) {
        snprintf(name, sizeof name, "layer%d.weight", i);
        assert_string_equal(tg_state_dict_name(sd, i), name);
        assert_ptr_equal(tg_state_dict_get(sd, name), t);
        assert_int_equal(tg_state_dict_put(sd, name, t), TG_ERR_ARG);
    }
    tg_clear_error();
    tg_state_dict_free(sd);
    assert_int_equal(t->refcount, 1);
    tg_tensor_release(t);
}

static void test_state_dict_bad_args(void **state)
{
    (void)state;
    tg_state_dict *sd = tg_state_dict_new();
    tg_tensor *t = tg_tensor_zeros(TG_DIMS(2));

    assert_int_equal(tg_state_dict_put(sd, NULL, t), TG_ERR_ARG);
    assert_error_contains("tg_state_dict_put: name is NULL");
    assert_int_equal(tg_state_dict_put(sd, "", t), TG_ERR_ARG);
    assert_error_contains("tg_state_dict_put: name is empty");
    char long_name[1100];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    assert_int_equal(tg_state_dict_put(sd, long_name, t), TG_ERR_ARG);
    assert_error_contains("is longer than 1024 bytes");
    assert_int_equal(tg_state_dict_put(sd, "a\nb", t), TG_ERR_ARG);
    assert_error_contains("control character or invalid UTF-8 at byte 1");
    assert_int_equal(tg_state_dict_put(sd, "caf\xc3", t), TG_ERR_ARG); /* cut UTF-8 */
    assert_error_contains("invalid UTF-8 at byte 3");
    assert_int_equal(tg_state_dict_put(sd, "caf\xc3\xa9", t), TG_OK); /* valid UTF-8 */
    assert_int_equal(tg_state_dict_put(sd, "__metadata__", t), TG_ERR_ARG);
    assert_error_contains("\"__metadata__\" is reserved");
    tg_clear_error();
    assert_int_equal(tg_state_dict_put(sd, "x", NULL), TG_ERR_ARG);
    assert_error_contains("tg_state_dict_put: tensor for \"x\" is NULL");

    /* A NULL tensor from a failed op keeps that op's message. */
    tg_clear_error();
    tg_tensor *bad = tg_tensor_zeros(TG_DIMS(-1));
    assert_null(bad);
    assert_int_equal(tg_state_dict_put(sd, "x", bad), TG_ERR_SHAPE);
    assert_error_contains("tg_tensor_zeros");

    tg_clear_error();
    assert_int_equal(tg_state_dict_put(NULL, "x", t), TG_ERR_ARG);
    assert_error_contains("tg_state_dict_put: state dict is NULL");
    assert_null(tg_state_dict_name(sd, 1));
    assert_error_contains("tg_state_dict_name: index 1 is outside 0..0");
    assert_null(tg_state_dict_tensor(sd, -1));
    assert_error_contains("tg_state_dict_tensor: index -1 is outside 0..0");
    assert_null(tg_state_dict_meta_key(sd, 0));
    assert_error_contains("tg_state_dict_meta_key: index 0 is outside 0..-1");
    assert_int_equal(tg_state_dict_set_meta(sd, "k", NULL), TG_ERR_ARG);
    assert_error_contains("tg_state_dict_set_meta: value for key \"k\" is NULL");
    assert_int_equal(tg_state_dict_set_meta(sd, "", "v"), TG_ERR_ARG);
    assert_error_contains("tg_state_dict_set_meta: key is empty");
    assert_int_equal(tg_state_dict_set_meta(sd, "k", "bad \xff byte"), TG_ERR_ARG);
    assert_error_contains("value for key \"k\" has invalid UTF-8 at byte 4");
    /* Values may hold any text, newlines included (they are JSON-escaped on save). */
    assert_int_equal(tg_state_dict_set_meta(sd, "k", "line 1\nline \"2\"\t\\"), TG_OK);
    assert_int_equal(tg_state_dict_size(sd), 1);
    tg_state_dict_free(sd);
    tg_state_dict_free(NULL);
    tg_tensor_release(t);
}

/* ---- JSON reader (data/json.c) ---------------------------------------------------------- */

static void test_json_valid(void **state)
{
    (void)state;
    tg_json_error err;
    const char *text = " {\"a\" : [1, -2, 0, 9223372036854775807, -9223372036854775808, 2.5,"
                       " 1e3, 9223372036854775808], \"s\":\"q\\\"\\\\\\/\\b\\f\\n\\r\\t"
                       "\\u00e9\\ud83d\\ude00\xc3\xa9\", \"o\":{}, \"e\":[], \"l\":[true,false,"
                       "null]}\n ";
    tg_json *v = tg_json_parse(text, (int64_t)strlen(text), &err);
    if (!v)
        fail_msg("parse failed at %lld: %s", (long long)err.offset, err.msg);
    assert_int_equal(v->type, TG_JSON_OBJECT);
    assert_int_equal(v->len, 5);
    const tg_json *a = tg_json_get(v, "a");
    assert_int_equal(a->type, TG_JSON_ARRAY);
    assert_int_equal(a->len, 8);
    assert_true(a->u.items[1].u.i == -2);
    assert_true(a->u.items[3].u.i == INT64_MAX);
    assert_true(a->u.items[4].type == TG_JSON_INT && a->u.items[4].u.i == INT64_MIN);
    assert_int_equal(a->u.items[5].type, TG_JSON_NUMBER);
    assert_int_equal(a->u.items[6].type, TG_JSON_NUMBER);
    assert_int_equal(a->u.items[7].type, TG_JSON_NUMBER); /* 2^63 does not fit int64 */
    assert_int_equal(a->u.items[1].offset, 12);
    const tg_json *s = tg_json_get(v, "s");
    assert_string_equal(s->u.s, "q\"\\/\b\f\n\r\t\xc3\xa9\xf0\x9f\x98\x80\xc3\xa9");
    assert_int_equal(s->len, (int64_t)strlen(s->u.s));
    assert_int_equal(tg_json_get(v, "o")->type, TG_JSON_OBJECT);
    assert_int_equal(tg_json_get(v, "l")->u.items[0].type, TG_JSON_BOOL);
    assert_null(tg_json_get(v, "missing"));
    int64_t i1, i2;
    assert_false(tg_json_find_duplicate(v, &i1, &i2));
    tg_json_free(v);

    /* Duplicate keys, in a small object and in one big enough to be sorted. */
    char big[4096];
    int n = snprintf(big, sizeof big, "{");
    for (int i = 0; i < 40; i++)
        n += snprintf(big + n, sizeof big - (size_t)n, "\"k%d\":%d,", i == 33 ? 7 : i, i);
    snprintf(big + n - 1, sizeof big - (size_t)n + 1, "}");
    v = tg_json_parse(big, (int64_t)strlen(big), &err);
    assert_non_null(v);
    assert_true(tg_json_find_duplicate(v, &i1, &i2));
    assert_int_equal(i1, 7);
    assert_int_equal(i2, 33);
    tg_json_free(v);
    v = tg_json_parse("{\"x\":1,\"y\":2,\"x\":3}", 19, &err);
    assert_true(tg_json_find_duplicate(v, &i1, &i2));
    assert_int_equal(i1, 0);
    assert_int_equal(i2, 2);
    tg_json_free(v);
}

static void test_json_errors(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int64_t offset;
        const char *fragment;
    } cases[] = {
        {"", 0, "expected a value, found end of header"},
        {"{\"a\":1,}", 6, "trailing comma before '}'"},
        {"[1,2,]", 4, "trailing comma before ']'"},
        {"{\"a\" 1}", 5, "expected ':' after an object key, found '1'"},
        {"{\"a\":1 \"b\":2}", 7, "expected ',' or '}' after an object member"},
        {"[1 2]", 3, "expected ',' or ']' after an array item"},
        {"{1:2}", 1, "expected a string key, found '1'"},
        {"{\"abc", 1, "unterminated string"},
        {"\"a\\", 0, "unterminated string"},
        {"\"a\nb\"", 2, "control character 0x0a inside a string"},
        {"\"\\x\"", 1, "invalid escape '\\x'"},
        {"\"\\u12g4\"", 1, "\\u must be followed by 4 hex digits"},
        {"\"\\ud800x\"", 1, "\\ud800 is a high surrogate without a low one"},
        {"\"\\udc00\"", 1, "\\udc00 is a low surrogate without a high one"},
        {"\"\\u0000\"", 1, "\\u0000 (a NUL character) is not supported"},
        {"\"\xc3(\"", 1, "invalid UTF-8 byte 0xc3"},
        {"\"\xed\xa0\x80\"", 1, "invalid UTF-8 byte 0xed"}, /* an encoded surrogate */
        {"01", 0, "leading zero"},
        {"-x", 0, "a digit must follow '-'"},
        {"1.", 2, "a digit must follow '.'"},
        {"1e+", 3, "a digit must follow the exponent"},
        {"tru", 0, "invalid literal (expected 'true')"},
        {"NaN", 0, "expected a value, found 'N'"},
        {"{} x", 3, "unexpected 'x' after the JSON value"},
        {"\x01", 0, "expected a value, found byte 0x01"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tg_json_error err;
        tg_json *v = tg_json_parse(cases[i].text, (int64_t)strlen(cases[i].text), &err);
        if (v)
            fail_msg("case %zu \"%s\" parsed", i, cases[i].text);
        if (!strstr(err.msg, cases[i].fragment) || err.offset != cases[i].offset)
            fail_msg("case %zu \"%s\": got \"%s\" at %lld, expected \"%s\" at %lld", i,
                     cases[i].text, err.msg, (long long)err.offset, cases[i].fragment,
                     (long long)cases[i].offset);
    }
    /* Nesting is limited, so a hostile header cannot exhaust the stack. */
    char deep[200];
    memset(deep, '[', sizeof deep);
    tg_json_error err;
    assert_null(tg_json_parse(deep, sizeof deep, &err));
    assert_non_null(strstr(err.msg, "nesting deeper than 64 levels"));
    assert_int_equal(err.offset, 64);
    /* The buffer is length-delimited: bytes past len are never read. */
    tg_json *v = tg_json_parse("[1]]", 3, &err);
    assert_non_null(v);
    tg_json_free(v);
}

/* ---- files: helpers ----------------------------------------------------------------------- */

static char tmp_dir[64];

static int group_setup(void **state)
{
    (void)state;
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/tg_ckpt_XXXXXX");
    return mkdtemp(tmp_dir) ? 0 : -1;
}

/* Removes the test folder (one level of files and folders; the tests make no deeper ones). */
static int group_teardown(void **state)
{
    (void)state;
    DIR *d = opendir(tmp_dir);
    if (!d)
        return -1;
    struct dirent *de;
    char p[512];
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        snprintf(p, sizeof p, "%s/%s", tmp_dir, de->d_name);
        if (unlink(p) != 0)
            rmdir(p);
    }
    closedir(d);
    return rmdir(tmp_dir);
}

static const char *path_in(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", tmp_dir, name);
    return buf;
}

static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void write_all(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* Writes a safetensors file from a header text and data bytes. */
static void write_st(const char *path, const char *header, const void *data, size_t data_len)
{
    uint64_t n = strlen(header);
    size_t len = 8 + n + data_len;
    unsigned char *buf = malloc(len ? len : 1);
    memcpy(buf, &n, 8); /* little-endian host, as the library asserts */
    memcpy(buf + 8, header, n);
    if (data_len)
        memcpy(buf + 8 + n, data, data_len);
    write_all(path, buf, len);
    free(buf);
}

/* Entries of tmp_dir whose names contain ".tmp.": leftovers of an interrupted save. */
static int count_temp_files(void)
{
    DIR *d = opendir(tmp_dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        n += strstr(de->d_name, ".tmp.") != NULL;
    closedir(d);
    return n;
}

/* Asserts that b holds the same names, order, shapes, bit-identical values and metadata as a. */
static void assert_same_state(const tg_state_dict *a, const tg_state_dict *b)
{
    assert_int_equal(tg_state_dict_size(a), tg_state_dict_size(b));
    for (int64_t i = 0; i < tg_state_dict_size(a); i++) {
        assert_string_equal(tg_state_dict_name(a, i), tg_state_dict_name(b, i));
        const tg_tensor *x = tg_state_dict_tensor(a, i), *y = tg_state_dict_tensor(b, i);
        assert_true(tg_shape_equal(x, y));
        assert_int_equal(x->numel, y->numel);
        if (x->numel)
            assert_memory_equal(x->data, y->data, (size_t)x->numel * 4);
    }
    assert_int_equal(tg_state_dict_meta_size(a), tg_state_dict_meta_size(b));
    for (int64_t i = 0; i < tg_state_dict_meta_size(a); i++) {
        assert_string_equal(tg_state_dict_meta_key(a, i), tg_state_dict_meta_key(b, i));
        assert_string_equal(tg_state_dict_meta_value(a, i), tg_state_dict_meta_value(b, i));
    }
}

/* Puts a new tensor of the given shape filled from a formula, and drops our reference. */
static void put_pattern(tg_state_dict *sd, const char *name, int ndim, const int64_t *shape,
                        float scale)
{
    tg_tensor *t = tg_tensor_new(ndim, shape);
    assert_non_null(t);
    for (int64_t i = 0; i < t->numel; i++)
        t->data[i] = scale * ((float)i - 0.37f * (float)(i * i % 11));
    assert_int_equal(tg_state_dict_put(sd, name, t), TG_OK);
    tg_tensor_release(t);
}

/* ---- round trips -------------------------------------------------------------------------- */

static void test_round_trip(void **state)
{
    (void)state;
    char p[256];
    path_in(p, sizeof p, "round.safetensors");
    tg_state_dict *sd = tg_state_dict_new();
    put_pattern(sd, "D.step", TG_DIMS(), 1.0f);                     /* 0-d */
    put_pattern(sd, "G.fc1.bias", TG_DIMS(7), 0.1f);                /* 1-d */
    put_pattern(sd, "G.conv1.weight", TG_DIMS(4, 3, 5, 2), -0.01f); /* 4-d */
    put_pattern(sd, "G.empty", TG_DIMS(0, 3), 1.0f);                /* no elements */
    /* Values a text format would mangle: signed zero, infinities, a NaN payload, subnormals. */
    tg_tensor *odd = tg_tensor_new(TG_DIMS(6));
    const uint32_t bits[6] = {0x80000000u, 0x7f800000u, 0xff800000u,
                              0x7fc12345u, 0x00000001u, 0x3eaaaaabu};
    memcpy(odd->data, bits, sizeof bits);
    assert_int_equal(tg_state_dict_put(sd, "odd \"values\" \xc3\xa9", odd), TG_OK);
    tg_tensor_release(odd);

    /* Without metadata. */
    assert_int_equal(tg_data_save_safetensors(p, sd), TG_OK);
    tg_state_dict *back = tg_data_load_safetensors(p);
    if (!back)
        fail_msg("%s", tg_last_error());
    assert_same_state(sd, back);
    assert_int_equal(tg_state_dict_meta_size(back), 0);
    assert_int_equal(tg_state_dict_tensor(back, 0)->ndim, 0);
    assert_int_equal(tg_state_dict_get(back, "G.conv1.weight")->shape[2], 5);
    tg_state_dict_free(back);

    /* With metadata, including text JSON must escape. */
    assert_int_equal(tg_state_dict_set_meta(sd, "format", "tapegrad"), TG_OK);
    assert_int_equal(tg_state_dict_set_meta(sd, "config", "{\"lr\": 2e-4}\n\tline \\ \x01"), TG_OK);
    assert_int_equal(tg_state_dict_set_meta(sd, "empty", ""), TG_OK);
    assert_int_equal(tg_data_save_safetensors(p, sd), TG_OK);
    back = tg_data_load_safetensors(p);
    if (!back)
        fail_msg("%s", tg_last_error());
    assert_same_state(sd, back);
    tg_state_dict_free(back);
    tg_state_dict_free(sd);

    /* An empty state dict is a valid (16-byte) file. */
    sd = tg_state_dict_new();
    assert_int_equal(tg_data_save_safetensors(p, sd), TG_OK);
    size_t len;
    unsigned char *raw = read_all(p, &len);
    assert_int_equal(len, 16);
    assert_memory_equal(raw, "\x08\0\0\0\0\0\0\0{}      ", 16);
    free(raw);
    back = tg_data_load_safetensors(p);
    assert_non_null(back);
    assert_int_equal(tg_state_dict_size(back), 0);
    tg_state_dict_free(back);
    tg_state_dict_free(sd);
    assert_int_equal(count_temp_files(), 0);
}

/* The sample used by the format and corruption tests. */
static tg_state_dict *sample_state(void)
{
    tg_state_dict *sd = tg_state_dict_new();
    put_pattern(sd, "G.fc1.weight", TG_DIMS(2, 3), 0.5f);
    put_pattern(sd, "G.fc1.bias", TG_DIMS(3), 0.25f);
    assert_int_equal(tg_state_dict_set_meta(sd, "epoch", "3"), TG_OK);
    return sd;
}

static const char sample_header[] =
    "{\"__metadata__\":{\"epoch\":\"3\"},"
    "\"G.fc1.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
    "\"G.fc1.bias\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[24,36]}}";

/* The bytes on disk are exactly the documented format. */
static void test_file_layout(void **state)
{
    (void)state;
    char p[256];
    path_in(p, sizeof p, "layout.safetensors");
    tg_state_dict *sd = sample_state();
    assert_int_equal(tg_data_save_safetensors(p, sd), TG_OK);
    size_t len;
    unsigned char *raw = read_all(p, &len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) /* little-endian, decoded byte by byte */
        n = n << 8 | raw[i];
    size_t hl = strlen(sample_header);
    assert_int_equal(n, (hl + 7) / 8 * 8); /* padded to a multiple of 8 */
    assert_memory_equal(raw + 8, sample_header, hl);
    for (size_t i = hl; i < n; i++)
        assert_int_equal(raw[8 + i], ' ');
    assert_int_equal(len, 8 + n + 36);
    unsigned char expect[36];
    memcpy(expect, tg_state_dict_tensor(sd, 0)->data, 24);
    memcpy(expect + 24, tg_state_dict_tensor(sd, 1)->data, 12);
    assert_memory_equal(raw + 8 + n, expect, 36);
    free(raw);
    tg_state_dict_free(sd);
}

/* Files written elsewhere: JSON with spaces, entries not in offset order, other dtypes. */
static void test_foreign_file(void **state)
{
    (void)state;
    char p[256];
    path_in(p, sizeof p, "foreign.safetensors");
    unsigned char data[64];
    size_t o = 0;
    const double f64[2] = {1.5, -1e-3};
    memcpy(data + o, f64, 16), o += 16;                       /* a.f64 [0, 16) */
    const uint16_t f16[4] = {0x3c00, 0xb800, 0x0001, 0x7c00}; /* 1, -0.5, 2^-24, inf */
    memcpy(data + o, f16, 8), o += 8;                         /* h [16, 24) */
    const uint16_t bf16[2] = {0x4049, 0xc000};                /* 3.140625, -2 */
    memcpy(data + o, bf16, 4), o += 4;                        /* b [24, 28) */
    const int64_t i64 = -12345;
    memcpy(data + o, &i64, 8), o += 8; /* n [28, 36) */
    const unsigned char u8b[3] = {0, 255, 1};
    memcpy(data + o, u8b, 3), o += 3; /* u [36, 39) */
    const float f32 = 0.1f;
    memcpy(data + o, &f32, 4), o += 4; /* w [39, 43) */
    write_st(p,
             "{\"w\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [39, 43]},\n"
             " \"a.f64\": {\"data_offsets\": [0, 16], \"shape\": [2, 1], \"dtype\": \"F64\"},\n"
             " \"h\": {\"dtype\": \"F16\", \"shape\": [4], \"data_offsets\": [16, 24]},\n"
             " \"b\": {\"dtype\": \"BF16\", \"shape\": [2], \"data_offsets\": [24, 28]},\n"
             " \"n\": {\"dtype\": \"I64\", \"shape\": [], \"data_offsets\": [28, 36]},\n"
             " \"u\": {\"dtype\": \"U8\", \"shape\": [3], \"data_offsets\": [36, 39]},\n"
             " \"__metadata__\": {\"format\": \"pt\", \"caf\\u00e9\": \"\\ud83d\\ude00\"}}   ",
             data, o);
    tg_state_dict *sd = tg_data_load_safetensors(p);
    if (!sd)
        fail_msg("%s", tg_last_error());
    assert_int_equal(tg_state_dict_size(sd), 6);
    assert_string_equal(tg_state_dict_name(sd, 0), "w"); /* header order, not offset order */
    assert_true(tg_state_dict_get(sd, "w")->data[0] == 0.1f);
    const tg_tensor *a = tg_state_dict_get(sd, "a.f64");
    assert_int_equal(a->ndim, 2);
    assert_true(a->data[0] == 1.5f && a->data[1] == (float)-1e-3);
    const float *h = tg_state_dict_get(sd, "h")->data;
    assert_true(h[0] == 1.0f && h[1] == -0.5f && h[2] == ldexpf(1.0f, -24) && isinf(h[3]));
    const float *b = tg_state_dict_get(sd, "b")->data;
    assert_true(b[0] == 3.140625f && b[1] == -2.0f);
    assert_true(tg_state_dict_get(sd, "n")->data[0] == -12345.0f);
    const float *u = tg_state_dict_get(sd, "u")->data;
    assert_true(u[0] == 0.0f && u[1] == 255.0f && u[2] == 1.0f);
    assert_string_equal(tg_state_dict_meta(sd, "format"), "pt");
    assert_string_equal(tg_state_dict_meta(sd, "caf\xc3\xa9"), "\xf0\x9f\x98\x80");
    tg_state_dict_free(sd);
}

/* ---- corrupted files ---------------------------------------------------------------------- */

typedef enum {
    CUT_FILE,     /* keep the first n bytes of the file */
    HLEN_PLUS,    /* header length = (file size - 8) + n */
    CHOP_DATA,    /* drop the last n bytes */
    APPEND_DATA,  /* add n zero bytes */
    REPLACE,      /* replace the first `from` in the header with `to` */
    WHOLE_HEADER, /* the header becomes `to` */
    NO_FILE,      /* load a path that does not exist */
    DIRECTORY,    /* load a folder */
} corrupt_kind;

typedef struct {
    corrupt_kind kind;
    const char *from, *to;
    int64_t n;
    tg_status status;
    const char *fragment; /* distinct for every case */
} corrupt_case;

static const corrupt_case corrupt_cases[] = {
    {CUT_FILE, NULL, NULL, 0, TG_ERR_FORMAT, "the file is empty"},
    {CUT_FILE, NULL, NULL, 5, TG_ERR_FORMAT, "5 bytes, too short for the 8-byte header length"},
    {HLEN_PLUS, NULL, NULL, 1, TG_ERR_FORMAT, "runs past the end of the file"},
    {CHOP_DATA, NULL, NULL, 4, TG_ERR_FORMAT,
     "file is truncated: its tensors need 36 bytes of data but only 32 follow"},
    {APPEND_DATA, NULL, NULL, 4, TG_ERR_FORMAT,
     "4 bytes of the 40-byte data section belong to no tensor (the first at data offset 36)"},
    {REPLACE, "[24,36]}}", "[24,36]},\"x", 0, TG_ERR_FORMAT, "unterminated string"},
    {REPLACE, "\"3\"}", "\"3\",}", 0, TG_ERR_FORMAT, "trailing comma before '}'"},
    {REPLACE, "\"dtype\":\"F32\"", "\"dtype\" \"F32\"", 0, TG_ERR_FORMAT,
     "expected ':' after an object key"},
    {REPLACE, "\"epoch\"", "\"ep\\och\"", 0, TG_ERR_FORMAT,
     "invalid header JSON at header byte 20 (file byte 28): invalid escape '\\o'"},
    {REPLACE, "\"epoch\"", "\"ep\xff\"", 0, TG_ERR_FORMAT, "invalid UTF-8 byte 0xff"},
    {REPLACE, "[24,36]}}", "[24,36]}}}", 0, TG_ERR_FORMAT, "unexpected '}' after the JSON value"},
    {WHOLE_HEADER, NULL, "[1, 2]", 0, TG_ERR_FORMAT, "the header is an array, not a JSON object"},
    {REPLACE, "\"F32\"", "\"F33\"", 0, TG_ERR_FORMAT,
     "tensor \"G.fc1.weight\": unknown dtype \"F33\""},
    {REPLACE, "\"F32\"", "\"F8_E4M3\"", 0, TG_ERR_FORMAT, "unsupported dtype \"F8_E4M3\""},
    {REPLACE, "\"dtype\":\"F32\",", "", 0, TG_ERR_FORMAT,
     "tensor \"G.fc1.weight\": missing \"dtype\""},
    {REPLACE, "[0,24]}", "[0,24],\"foo\":1}", 0, TG_ERR_FORMAT, "unknown key \"foo\""},
    {REPLACE, "\"dtype\":\"F32\",", "\"dtype\":\"F32\",\"dtype\":\"F32\",", 0, TG_ERR_FORMAT,
     "key \"dtype\" appears twice"},
    {REPLACE, "{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[24,36]}", "[24,36]", 0,
     TG_ERR_FORMAT, "expected an object with dtype, shape and data_offsets, found an array"},
    {REPLACE, "\"F32\"", "32", 0, TG_ERR_FORMAT, "dtype is an integer, not a string"},
    {REPLACE, "[2,3]", "{}", 0, TG_ERR_FORMAT, "shape is an object, not an array"},
    {REPLACE, "\"shape\":[2,3]", "\"shape\":[2,4]", 0, TG_ERR_FORMAT,
     "tensor \"G.fc1.weight\": data_offsets [0, 24] hold 6 floats but shape [2, 4] needs 8"},
    {REPLACE, "[0,24]", "[0,23]", 0, TG_ERR_FORMAT,
     "span 23 bytes, not a whole number of F32 values (4 bytes each)"},
    {REPLACE, "[24,36]", "[12,24]", 0, TG_ERR_FORMAT,
     "tensors \"G.fc1.weight\" [0, 24] and \"G.fc1.bias\" [12, 24] overlap"},
    {REPLACE, "[24,36]", "[36,48]", 0, TG_ERR_FORMAT,
     "tensor \"G.fc1.bias\": data_offsets [36, 48] run past the end of the data section (36 "
     "bytes)"},
    {REPLACE, "[24,36]", "[36,24]", 0, TG_ERR_FORMAT,
     "data_offsets [36, 24] end before they begin"},
    {REPLACE, "[0,24]", "[-1,24]", 0, TG_ERR_FORMAT,
     "data_offsets entry 0 is -1, not a non-negative integer"},
    {REPLACE, "[0,24]", "[0,99999999999999999999]", 0, TG_ERR_FORMAT,
     "data_offsets entry 1 is 99999999999999999999"},
    {REPLACE, "[0,24]", "[0,24,36]", 0, TG_ERR_FORMAT,
     "data_offsets must be [begin, end], found 3 entries"},
    {REPLACE, "\"shape\":[3]", "\"shape\":[-3]", 0, TG_ERR_FORMAT,
     "tensor \"G.fc1.bias\": shape entry 0 is -3, which is negative"},
    {REPLACE, "\"shape\":[3]", "\"shape\":[3.0]", 0, TG_ERR_FORMAT,
     "shape entry 0 is 3.0, not an integer"},
    {REPLACE, "\"shape\":[3]", "\"shape\":[\"3\"]", 0, TG_ERR_FORMAT,
     "shape entry 0 is a string, not an integer"},
    {REPLACE, "\"shape\":[3]", "\"shape\":[4294967296,4294967296,4]", 0, TG_ERR_FORMAT,
     "shape [4294967296, 4294967296, 4] has more elements than int64 can count"},
    {REPLACE, "\"shape\":[3]", "\"shape\":[1,1,1,1,1,1,3]", 0, TG_ERR_FORMAT,
     "shape has 7 dimensions; tapegrad supports up to 6"},
    {REPLACE, "\"G.fc1.bias\"", "\"G.fc1.weight\"", 0, TG_ERR_FORMAT,
     "tensor \"G.fc1.weight\": the name appears twice in the header (at header bytes 30 and"},
    {REPLACE, "\"G.fc1.bias\"", "\"__metadata__\"", 0, TG_ERR_FORMAT, "__metadata__ appears twice"},
    {REPLACE, "\"G.fc1.bias\"", "\"G.fc1\\nbias\"", 0, TG_ERR_FORMAT,
     "has a control character or invalid UTF-8 at byte 5"},
    {REPLACE, "\"epoch\":\"3\"", "\"epoch\":3", 0, TG_ERR_FORMAT,
     "__metadata__ value of \"epoch\" is an integer, not a string"},
    {REPLACE, "{\"epoch\":\"3\"}", "[\"3\"]", 0, TG_ERR_FORMAT,
     "__metadata__ is an array, not an object"},
    {REPLACE, "\"epoch\":\"3\"", "\"epoch\":\"3\",\"epoch\":\"4\"", 0, TG_ERR_FORMAT,
     "__metadata__ key \"epoch\" appears twice"},
    {REPLACE, "\"epoch\"", "\"\"", 0, TG_ERR_FORMAT,
     "__metadata__: tg_state_dict_set_meta: key is empty"},
    {NO_FILE, NULL, NULL, 0, TG_ERR_IO, "cannot open: No such file or directory"},
    {DIRECTORY, NULL, NULL, 0, TG_ERR_IO, "not a regular file"},
};

/* Makes the corrupted file of case c from the valid bytes; returns the path to load. */
static const char *make_corrupt(const corrupt_case *c, const unsigned char *valid, size_t len,
                                char *p, size_t size)
{
    path_in(p, size, "corrupt.safetensors");
    uint64_t hlen;
    memcpy(&hlen, valid, 8);
    const char *header = (const char *)valid + 8;
    const unsigned char *data = valid + 8 + hlen;
    size_t data_len = len - 8 - hlen;
    char h[1024];
    switch (c->kind) {
    case CUT_FILE: write_all(p, valid, (size_t)c->n); break;
    case HLEN_PLUS: {
        unsigned char *b = malloc(len);
        memcpy(b, valid, len);
        uint64_t n = len - 8 + (uint64_t)c->n;
        memcpy(b, &n, 8);
        write_all(p, b, len);
        free(b);
        break;
    }
    case CHOP_DATA: write_all(p, valid, len - (size_t)c->n); break;
    case APPEND_DATA: {
        unsigned char *b = calloc(1, len + (size_t)c->n);
        memcpy(b, valid, len);
        write_all(p, b, len + (size_t)c->n);
        free(b);
        break;
    }
    case REPLACE: {
        snprintf(h, sizeof h, "%.*s", (int)hlen, header);
        char *at = c->from ? strstr(h, c->from) : NULL;
        /* A REPLACE case always names its text; GCC, inlining the whole table, also sees the
         * other kinds' NULL here (-Wformat-overflow). */
        if (!at)
            fail_msg("\"%s\" is not in the header %s", c->from ? c->from : "(no text)", h);
        char out[1024];
        snprintf(out, sizeof out, "%.*s%s%s", (int)(at - h), h, c->to, at + strlen(c->from));
        write_st(p, out, data, data_len);
        break;
    }
    case WHOLE_HEADER: write_st(p, c->to, data, data_len); break;
    case NO_FILE: path_in(p, size, "no-such-file.safetensors"); break;
    case DIRECTORY:
        path_in(p, size, "a-folder");
        mkdir(p, 0755);
        break;
    }
    return p;
}

static void test_corrupt_files(void **state)
{
    (void)state;
    char valid_path[256], p[256];
    path_in(valid_path, sizeof valid_path, "valid.safetensors");
    tg_state_dict *sd = sample_state();
    assert_int_equal(tg_data_save_safetensors(valid_path, sd), TG_OK);
    tg_state_dict_free(sd);
    size_t len;
    unsigned char *valid = read_all(valid_path, &len);

    enum { N_CASES = sizeof corrupt_cases / sizeof corrupt_cases[0] };
    static char messages[N_CASES][1024];
    int64_t bytes_before = tg_debug_live_bytes();
    for (size_t i = 0; i < N_CASES; i++) {
        const corrupt_case *c = &corrupt_cases[i];
        const char *path = make_corrupt(c, valid, len, p, sizeof p);
        tg_clear_error();
        tg_state_dict *bad = tg_data_load_safetensors(path);
        snprintf(messages[i], sizeof messages[i], "%s", tg_last_error());
        if (bad)
            fail_msg("case %zu (%s) loaded", i, c->fragment);
        if (tg_last_status() != c->status || !strstr(messages[i], c->fragment))
            fail_msg("case %zu: got %s \"%s\", expected %s with \"%s\"", i,
                     tg_status_name(tg_last_status()), messages[i], tg_status_name(c->status),
                     c->fragment);
        /* Every message names the function and the file. */
        char prefix[300];
        snprintf(prefix, sizeof prefix, "tg_data_load_safetensors: %s: ", path);
        if (strncmp(messages[i], prefix, strlen(prefix)) != 0)
            fail_msg("case %zu: \"%s\" does not start with \"%s\"", i, messages[i], prefix);
        /* A failed load leaves nothing behind. */
        assert_int_equal(tg_debug_live_tensors(), 0);
        assert_int_equal(tg_debug_live_bytes(), bytes_before);
    }
    /* Each fragment identifies its own case only: no other case's message contains it. */
    for (size_t i = 0; i < N_CASES; i++)
        for (size_t j = 0; j < N_CASES; j++)
            if (i != j && strstr(messages[j], corrupt_cases[i].fragment))
                fail_msg("fragment \"%s\" of case %zu also matches case %zu: \"%s\"",
                         corrupt_cases[i].fragment, i, j, messages[j]);
    free(valid);
}

/* A failure after tensors were allocated (a bad second name) frees them all. */
static void test_load_failure_leaks_nothing(void **state)
{
    (void)state;
    char p[256];
    path_in(p, sizeof p, "late-failure.safetensors");
    float data[9] = {0};
    write_st(p,
             "{\"big\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
             "\"bad\\u0001name\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[24,36]}}",
             data, 36);
    int64_t bytes = tg_debug_live_bytes(), tensors = tg_debug_live_tensors();
    assert_null(tg_data_load_safetensors(p));
    assert_int_equal(tg_last_status(), TG_ERR_FORMAT);
    assert_error_contains("tensor \"bad\\x01name\": tg_state_dict_put: name");
    assert_int_equal(tg_debug_live_tensors(), tensors);
    assert_int_equal(tg_debug_live_bytes(), bytes);

    tg_clear_error();
    assert_null(tg_data_load_safetensors(NULL));
    assert_int_equal(tg_last_status(), TG_ERR_ARG);
    assert_error_contains("tg_data_load_safetensors: path is NULL");
}

/* ---- atomic saves ------------------------------------------------------------------------- */

static tg_state_dict *big_state(void)
{
    tg_state_dict *sd = tg_state_dict_new();
    put_pattern(sd, "big", TG_DIMS(256, 256), 1e-3f); /* 256 KiB */
    return sd;
}

static void test_save_errors(void **state)
{
    (void)state;
    char p[512], file[256];
    tg_state_dict *sd = sample_state();

    /* The parent "folder" is a regular file: nothing can be created under it. */
    path_in(file, sizeof file, "plain-file");
    write_all(file, "x", 1);
    snprintf(p, sizeof p, "%s/ckpt.safetensors", file);
    assert_int_equal(tg_data_save_safetensors(p, sd), TG_ERR_IO);
    assert_error_contains("tg_data_save_safetensors: ");
    assert_error_contains(p);
    assert_error_contains("Not a directory");

    /* A folder that does not exist. */
    path_in(p, sizeof p, "no-such-folder/ckpt.safetensors");
    assert_int_equal(tg_data_save_safetensors(p, sd), TG_ERR_IO);
    assert_error_contains(p);
    assert_error_contains("No such file or directory");

    tg_clear_error();
    assert_int_equal(tg_data_save_safetensors(p, NULL), TG_ERR_ARG);
    assert_error_contains("tg_data_save_safetensors: state dict is NULL");
    assert_int_equal(tg_data_save_safetensors("", sd), TG_ERR_ARG);
    assert_error_contains("tg_data_save_safetensors: path is empty");
    tg_state_dict_free(sd);
    assert_int_equal(count_temp_files(), 0);
}

/* A write that fails half-way (the file size limit, which binds root too) leaves the previous
 * checkpoint byte for byte as it was, and no temporary file. */
static void test_save_failure_keeps_old_file(void **state)
{
    (void)state;
    char p[256];
    path_in(p, sizeof p, "keep.safetensors");
    tg_state_dict *small = sample_state(), *big = big_state();
    assert_int_equal(tg_data_save_safetensors(p, small), TG_OK);
    size_t len0;
    unsigned char *before = read_all(p, &len0);

    struct rlimit old;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN); /* get EFBIG, not a signal */
    struct rlimit lim = {.rlim_cur = 64 * 1024, .rlim_max = old.rlim_max};
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    tg_status st = tg_data_save_safetensors(p, big);
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", tg_last_error());
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, old_handler);

    assert_int_equal(st, TG_ERR_IO);
    if (!strstr(msg, p) || !strstr(msg, "File too large"))
        fail_msg("message \"%s\" should name %s and the system's reason", msg, p);
    size_t len1;
    unsigned char *after = read_all(p, &len1);
    assert_int_equal(len0, len1);
    assert_memory_equal(before, after, len0);
    assert_int_equal(count_temp_files(), 0);
    tg_state_dict *back = tg_data_load_safetensors(p);
    assert_non_null(back);
    assert_same_state(small, back);
    tg_state_dict_free(back);
    free(before);
    free(after);
    tg_state_dict_free(small);
    tg_state_dict_free(big);
}

/* Saving over an existing file replaces it completely (a smaller file leaves no tail). */
static void test_save_replaces(void **state)
{
    (void)state;
    char p[256];
    path_in(p, sizeof p, "replace.safetensors");
    tg_state_dict *small = sample_state(), *big = big_state();
    assert_int_equal(tg_data_save_safetensors(p, big), TG_OK);
    assert_int_equal(tg_data_save_safetensors(p, small), TG_OK);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_size, 8 + (strlen(sample_header) + 7) / 8 * 8 + 36);
    tg_state_dict *back = tg_data_load_safetensors(p);
    assert_non_null(back);
    assert_same_state(small, back);
    tg_state_dict_free(back);
    assert_int_equal(count_temp_files(), 0);
    tg_state_dict_free(small);
    tg_state_dict_free(big);
}

/* Temporary files of killed writers do not pile up: a save removes its target's leftovers
 * (TARGET.tmp.XXXXXX, unlocked) and leaves alone a live writer's (locked), other targets',
 * names of another pattern and anything that is not a regular file. */
static void test_save_sweeps_stale_temp_files(void **state)
{
    (void)state;
    char p[256], q[512];
    path_in(p, sizeof p, "swept.safetensors");
    const char *stale[] = {".tmp.AbCdEf", ".tmp.000000"};
    const char *kept[] = {".tmp.short", ".tmp.LkLkLk", ".tmp.FiFoFo", ".tmpXAbCdEf"};
    for (int i = 0; i < 2; i++) {
        snprintf(q, sizeof q, "%s%s", p, stale[i]);
        write_all(q, "torn", 4);
    }
    snprintf(q, sizeof q, "%s%s", p, kept[0]);
    write_all(q, "x", 1);
    snprintf(q, sizeof q, "%s%s", p, kept[1]);
    write_all(q, "live", 4);
    int live = open(q, O_RDONLY);
    assert_true(live >= 0);
    assert_int_equal(flock(live, LOCK_EX), 0); /* a writer still at work */
    snprintf(q, sizeof q, "%s%s", p, kept[2]);
    assert_int_equal(mkfifo(q, 0600), 0); /* opening it must not hang */
    snprintf(q, sizeof q, "%s%s", p, kept[3]);
    write_all(q, "x", 1);
    char other[256];
    path_in(other, sizeof other, "other.safetensors.tmp.AbCdEf");
    write_all(other, "x", 1);

    tg_state_dict *sd = sample_state();
    assert_int_equal(tg_data_save_safetensors(p, sd), TG_OK);
    tg_state_dict_free(sd);
    struct stat st;
    for (int i = 0; i < 2; i++) {
        snprintf(q, sizeof q, "%s%s", p, stale[i]);
        if (stat(q, &st) == 0)
            fail_msg("the dead writer's %s is still there", q);
    }
    for (int i = 0; i < 4; i++) {
        snprintf(q, sizeof q, "%s%s", p, kept[i]);
        if (stat(q, &st) != 0)
            fail_msg("%s was removed", q);
        unlink(q);
    }
    assert_int_equal(stat(other, &st), 0);
    unlink(other);
    close(live);
    unlink(p);
    assert_int_equal(count_temp_files(), 0);
}

/* ---- hostile sizes and names (issue 19, items 9 and 14) -------------------------------------- */

/* 80,000 metadata keys (a 1.2 MB file): with a scan per key this took 8-16 s to load; the hash
 * index makes it linear (0.1 s). No time is asserted: that it loads, in order, and every key is
 * found. */
static void test_many_meta_keys(void **state)
{
    (void)state;
    enum { KEYS = 80000 };
    char p[256], k[32], v[32];
    path_in(p, sizeof p, "keys.safetensors");
    tg_state_dict *sd = tg_state_dict_new();
    for (int i = 0; i < KEYS; i++) {
        snprintf(k, sizeof k, "key%d", i), snprintf(v, sizeof v, "%d", i);
        assert_int_equal(tg_state_dict_set_meta(sd, k, v), TG_OK);
    }
    assert_int_equal(tg_state_dict_set_meta(sd, "key7", "again"), TG_OK); /* replaced in place */
    assert_int_equal(tg_data_save_safetensors(p, sd), TG_OK);
    tg_state_dict_free(sd);
    sd = tg_data_load_safetensors(p);
    if (!sd)
        fail_msg("%s", tg_last_error());
    assert_int_equal(tg_state_dict_meta_size(sd), KEYS);
    for (int i = 0; i < KEYS; i++) {
        snprintf(k, sizeof k, "key%d", i), snprintf(v, sizeof v, "%d", i);
        assert_string_equal(tg_state_dict_meta_key(sd, i), k);
        assert_string_equal(tg_state_dict_meta(sd, k), i == 7 ? "again" : v);
    }
    tg_state_dict_free(sd);
    unlink(p);
}

/* More metadata entries than the documented limit (1,000,000) are refused by count. */
static void test_meta_key_limit(void **state)
{
    (void)state;
    enum { KEYS = 1000001 };
    char p[256];
    path_in(p, sizeof p, "limit.safetensors");
    size_t cap = 32 + (size_t)KEYS * 16, n = 0;
    char *h = malloc(cap);
    assert_non_null(h);
    n += (size_t)snprintf(h + n, cap - n, "{\"__metadata__\": {");
    for (int i = 0; i < KEYS; i++)
        n += (size_t)snprintf(h + n, cap - n, "%s\"%x\":\"\"", i ? "," : "", i);
    snprintf(h + n, cap - n, "}}");
    write_st(p, h, NULL, 0);
    free(h);
    assert_null(tg_data_load_safetensors(p));
    assert_int_equal(tg_last_status(), TG_ERR_FORMAT);
    assert_error_contains("__metadata__ has 1000001 entries, above the limit of 1000000");
    unlink(p);
}

/* A header's values are counted: a long array of zeros (a 90 MB one took 1.5 GB) stops at
 * TG_JSON_MAX_VALUES with a message; exactly that many parse. */
static void test_json_value_limit(void **state)
{
    (void)state;
    const int64_t max = TG_JSON_MAX_VALUES;
    size_t len = 2 * (size_t)max + 2;
    char *text = malloc(len);
    assert_non_null(text);
    text[0] = '[';
    for (int64_t i = 0; i < max; i++) /* max zeros and the array: one value too many */
        text[1 + 2 * i] = '0', text[2 + 2 * i] = ',';
    text[2 * max] = ']';
    tg_json_error err;
    tg_json *v = tg_json_parse(text, 2 * max + 1, &err);
    assert_null(v);
    if (!strstr(err.msg, "more than 2097152 values"))
        fail_msg("message \"%s\"", err.msg);
    text[2 * max - 2] = ']'; /* max - 1 zeros: exactly max values */
    v = tg_json_parse(text, 2 * max - 1, &err);
    if (!v)
        fail_msg("%s", err.msg);
    assert_int_equal(v->len, max - 1);
    tg_json_free(v);
    free(text);
}

/* Names and keys from a file reach a message escaped: one line of printable ASCII. */
static void test_hostile_names_escaped(void **state)
{
    (void)state;
    static const struct {
        const char *header, *shown;
    } cases[] = {
        {"{\"__metadata__\": {\"a\\nb\": \"v\"}}", "key \"a\\x0ab\" has a control character"},
        {"{\"\\u001b[31mred\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [0, 0]}}",
         "name \"\\x1b[31mred\" has a control character"},
        {"{\"caf\\u00e9\\u202e\": {\"dtype\": \"X\", \"shape\": [0], \"data_offsets\": [0, 0]}}",
         "tensor \"caf\\xc3\\xa9\\xe2\\x80\\xae\": unknown dtype"},
        {"{\"w\": {\"dtype\": \"\\u001b]0;x\", \"shape\": [0], \"data_offsets\": [0, 0]}}",
         "unknown dtype \"\\x1b]0;x\""},
    };
    char p[256];
    path_in(p, sizeof p, "names.safetensors");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_st(p, cases[i].header, NULL, 0);
        assert_null(tg_data_load_safetensors(p));
        const char *m = tg_last_error();
        for (const unsigned char *c = (const unsigned char *)m; *c; c++)
            if (*c < 0x20 || *c >= 0x7f)
                fail_msg("byte 0x%02x in \"%s\"", *c, m);
        assert_error_contains(cases[i].shown);
    }
    unlink(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TG_TEST(test_state_dict_basic),    TG_TEST(test_state_dict_many),
        TG_TEST(test_state_dict_bad_args), TG_TEST(test_json_valid),
        TG_TEST(test_json_errors),         TG_TEST(test_round_trip),
        TG_TEST(test_file_layout),         TG_TEST(test_foreign_file),
        TG_TEST(test_corrupt_files),       TG_TEST(test_load_failure_leaks_nothing),
        TG_TEST(test_save_errors),         TG_TEST(test_save_failure_keeps_old_file),
        TG_TEST(test_save_replaces),       TG_TEST(test_save_sweeps_stale_temp_files),
        TG_TEST(test_many_meta_keys),      TG_TEST(test_meta_key_limit),
        TG_TEST(test_json_value_limit),    TG_TEST(test_hostile_names_escaped),
    };
    return cmocka_run_group_tests_name("checkpoint", tests, group_setup, group_teardown);
}
