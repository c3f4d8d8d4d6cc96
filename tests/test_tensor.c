/* tensor/: creation, refcounts, allocator, RNG, errors. */
#include "common.h"

#include <stdio.h>

static void test_creation(void **state)
{
    (void)state;
    tg_tensor *z = tg_tensor_zeros(TG_DIMS(2, 3));
    assert_non_null(z);
    assert_int_equal(z->ndim, 2);
    assert_int_equal(z->numel, 6);
    for (int i = 0; i < 6; i++)
        assert_true(z->data[i] == 0.0f);
    tg_tensor *f = tg_tensor_full(TG_DIMS(4), 2.5f);
    assert_true(f->data[3] == 2.5f);
    tg_tensor *a = tg_tensor_arange(0, 5, 2);
    assert_int_equal(a->numel, 3);
    assert_true(a->data[2] == 4.0f);
    tg_tensor *c = tg_tensor_clone(f);
    assert_true(c->data != f->data && c->data[0] == 2.5f);
    tg_tensor_release(z);
    tg_tensor_release(f);
    tg_tensor_release(a);
    tg_tensor_release(c);
}

static void test_bad_shape(void **state)
{
    (void)state;
    assert_null(tg_tensor_zeros(TG_DIMS(2, -3)));
    assert_int_equal(tg_last_status(), TG_ERR_SHAPE);
    assert_error_contains("tg_tensor_zeros: shape [2, -3]");
}

static void test_rng_reproducible(void **state)
{
    (void)state;
    tg_rng a, b;
    tg_rng_seed(&a, 42);
    tg_rng_seed(&b, 42);
    for (int i = 0; i < 100; i++)
        assert_true(tg_rng_normal01(&a) == tg_rng_normal01(&b));
    tg_rng saved = a;
    float x = tg_rng_uniform01(&a);
    a = saved;
    assert_true(tg_rng_uniform01(&a) == x);
}

/* The strict parser refuses every form the red-team slipped past strtod/sscanf (issue 19). */
static void test_parse_strict(void **state)
{
    (void)state;
    int64_t i;
    uint64_t u;
    double d;
    const char *bad_int[] = {"", " 2", "2 ", "+2", "0x10", "0garbage", "2.0", "1e3", "-", "--1"};
    for (size_t k = 0; k < sizeof bad_int / sizeof *bad_int; k++)
        assert_int_equal(tg_parse_int(bad_int[k], INT64_MIN, INT64_MAX, &i), TG_ERR_FORMAT);
    assert_int_equal(tg_parse_int("4294967304", INT32_MIN, INT32_MAX, &i), TG_ERR_ARG);
    assert_int_equal(tg_parse_int("9223372036854775808", INT64_MIN, INT64_MAX, &i), TG_ERR_ARG);
    assert_int_equal(tg_parse_int("-9223372036854775808", INT64_MIN, INT64_MAX, &i), TG_OK);
    assert_true(i == INT64_MIN);
    assert_int_equal(tg_parse_int("-1", 0, 10, &i), TG_ERR_ARG);
    assert_int_equal(tg_parse_int("007", 0, 10, &i), TG_OK);
    assert_int_equal(i, 7);
    assert_int_equal(tg_parse_uint("-1", UINT64_MAX, &u), TG_ERR_FORMAT);
    assert_int_equal(tg_parse_uint("18446744073709551615", UINT64_MAX, &u), TG_OK);
    assert_true(u == UINT64_MAX);
    assert_int_equal(tg_parse_uint("18446744073709551616", UINT64_MAX, &u), TG_ERR_ARG);
    const char *bad_real[] = {"",      " 2e-4", "2e-4 ", "+1", "nan", "inf",        "-inf",
                              "0x1p3", "1e",    "1e+",   ".",  "-.",  "1.5garbage", "1,5"};
    for (size_t k = 0; k < sizeof bad_real / sizeof *bad_real; k++)
        assert_int_equal(tg_parse_real(bad_real[k], -1e300, 1e300, &d), TG_ERR_FORMAT);
    assert_int_equal(tg_parse_real("1e999", -1e300, 1e300, &d), TG_ERR_ARG);
    assert_int_equal(tg_parse_real("2", 0, 1, &d), TG_ERR_ARG);
    assert_error_contains("tg_parse_real: out of range [0, 1]");
    assert_int_equal(tg_parse_real("-0", -1, 1, &d), TG_OK);
    assert_false(signbit(d));
    assert_int_equal(tg_parse_real(".5e1", 0, 10, &d), TG_OK);
    assert_true(d == 5.0);
    assert_int_equal(tg_parse_real("2e-4", 0, 10, &d), TG_OK);
    assert_true(d == 2e-4);
    /* The %a form, and only it, for the hex reader. */
    char buf[64];
    snprintf(buf, sizeof buf, "%a", (double)2e-4f);
    assert_int_equal(tg_parse_hexreal(buf, 0, 1, &d), TG_OK);
    assert_true(d == (double)2e-4f);
    assert_int_equal(tg_parse_hexreal("-0x0p+0", -1, 1, &d), TG_OK);
    assert_false(signbit(d));
    const char *bad_hex[] = {"2e-4",  "0x1", "0x1p",   "0x.p1",   " 0x1p1",  "0x1p1 ",
                             "0xgp1", "nan", "+0x1p1", "0x1p+-1", "0x1.8p1x"};
    for (size_t k = 0; k < sizeof bad_hex / sizeof *bad_hex; k++)
        assert_int_equal(tg_parse_hexreal(bad_hex[k], -1e300, 1e300, &d), TG_ERR_FORMAT);
    assert_int_equal(tg_parse_real("0x1p1", -10, 10, &d), TG_ERR_FORMAT);
    assert_int_equal(tg_parse_hexreal("0x1p+1", 0, 1, &d), TG_ERR_ARG);
}

/* Escaping keeps a quoted file string on one line of plain ASCII, and marks a cut. */
static void test_escape(void **state)
{
    (void)state;
    char out[64];
    const char evil[] = "a\nb\x1b[31mc\"\\\xff";
    size_t n = tg_escape(out, sizeof out, evil, sizeof evil - 1);
    assert_string_equal(out, "a\\x0ab\\x1b[31mc\\\"\\\\\\xff");
    assert_int_equal(n, strlen(out));
    char small[8];
    tg_escape(small, sizeof small, "\n\n\n\n", 4);
    assert_string_equal(small, "\\x0a...");
    tg_escape(small, sizeof small, "abcdefg", 7);
    assert_string_equal(small, "abcdefg");
    tg_escape(small, sizeof small, "abcdefgh", 8);
    assert_string_equal(small, "abcd...");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TG_TEST(test_creation),     TG_TEST(test_bad_shape), TG_TEST(test_rng_reproducible),
        TG_TEST(test_parse_strict), TG_TEST(test_escape),
    };
    return cmocka_run_group_tests_name("tensor", tests, NULL, NULL);
}
