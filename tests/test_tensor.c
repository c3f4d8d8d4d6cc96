/* tensor/: creation, refcounts, allocator, RNG, errors. */
#include "common.h"

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
    tg_release(z);
    tg_release(f);
    tg_release(a);
    tg_release(c);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        TG_TEST(test_creation),
        TG_TEST(test_bad_shape),
        TG_TEST(test_rng_reproducible),
    };
    return cmocka_run_group_tests_name("tensor", tests, NULL, NULL);
}
