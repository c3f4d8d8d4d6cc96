/* Comparisons, where and masked_fill: PyTorch goldens with broadcasting (values and gradients),
 * NaN and -0 in masks, -inf fills, masks that record nothing and pass no gradient, errors. */
#include "common.h"

#include "golden/select_golden.h"

/* got against PyTorch's want: infinities exactly, the rest as assert_golden does. */
static void expect_golden(const char *what, const tg_tensor *got, const float *want, int64_t n)
{
    assert_non_null(got);
    assert_int_equal(got->numel, n);
    for (int64_t i = 0; i < n; i++) {
        const double g = got->data[i], w = want[i];
        if (isinf(w) ? g != w : !(fabs(g - w) <= 1e-5 + 1e-4 * fabs(w)))
            fail_msg("%s[%lld] = %.9g, PyTorch gives %.9g", what, (long long)i, g, w);
    }
}

/* A mask: exactly want's 0s and 1s, no node, no gradient. */
static void expect_mask(const char *what, const tg_tensor *m, const float *want, int64_t n)
{
    assert_non_null(m);
    assert_int_equal(m->numel, n);
    assert_null(m->node);
    assert_false(m->requires_grad);
    for (int64_t i = 0; i < n; i++)
        if (m->data[i] != want[i])
            fail_msg("%s[%lld] = %g, PyTorch gives %g", what, (long long)i, (double)m->data[i],
                     (double)want[i]);
}

static void test_compare_golden(void **state)
{
    (void)state;
    tg_tensor *a = test_tensor_of(CMP_A_NDIM, cmp_a_shape, cmp_a, true);
    tg_tensor *b = test_tensor_of(CMP_B_NDIM, cmp_b_shape, cmp_b, false);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    const int64_t nodes = tg_debug_live_nodes();
    expect_mask("eq", tg_eq(a, b), cmp_eq, 6);
    expect_mask("ne", tg_ne(a, b), cmp_ne, 6);
    expect_mask("lt", tg_lt(a, b), cmp_lt, 6);
    expect_mask("le", tg_le(a, b), cmp_le, 6);
    expect_mask("gt", tg_gt(a, b), cmp_gt, 6);
    expect_mask("ge", tg_ge(a, b), cmp_ge, 6);
    /* b broadcast on the left: the mask of b against a is the mirror relation. */
    expect_mask("b < a", tg_lt(b, a), cmp_gt, 6);
    /* A NaN threshold (a 0-d operand, read without expanding it): only ne holds. */
    tg_tensor *nan = tg_scalar(cmp_nan_b[0]);
    const float none[6] = {0}, all[6] = {1, 1, 1, 1, 1, 1};
    expect_mask("eq nan", tg_eq(a, nan), none, 6);
    expect_mask("le nan", tg_le(a, nan), none, 6);
    expect_mask("ge nan", tg_ge(nan, a), none, 6);
    expect_mask("ne nan", tg_ne(a, nan), all, 6);
    assert_int_equal(tg_debug_live_nodes(), nodes); /* nothing recorded */
    tg_tape_end(tape);
    tg_tensor_release(a);
    tg_tensor_release(b);
}

static void test_where_golden(void **state)
{
    (void)state;
    tg_tensor *c = test_tensor_of(WB_COND_NDIM, wb_cond_shape, wb_cond, false);
    tg_tensor *a = test_tensor_of(WB_A_NDIM, wb_a_shape, wb_a, true);
    tg_tensor *b = test_tensor_of(WB_B_NDIM, wb_b_shape, wb_b, true);
    tg_tensor *dy = test_tensor_of(WB_DY_NDIM, wb_dy_shape, wb_dy, false);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_where(c, a, b);
    assert_non_null(y);
    assert_int_equal(y->ndim, WB_Y_NDIM);
    assert_memory_equal(y->shape, wb_y_shape, sizeof wb_y_shape);
    expect_golden("where y", y, wb_y, 24);
    assert_int_equal(tg_backward_grad(y, dy), TG_OK);
    expect_golden("where da", a->grad, wb_da, 8);
    expect_golden("where db (0-d, summed)", b->grad, wb_db, 1);
    assert_null(c->grad);
    tg_tape_end(tape);
    tg_tensor_release(c);
    tg_tensor_release(a);
    tg_tensor_release(b);
    tg_tensor_release(dy);
}

/* cond holding 0.5, -0 and NaN: 0.5 and NaN count as true, -0 as false (cond != 0). */
static void test_where_nan_cond_golden(void **state)
{
    (void)state;
    tg_tensor *c = test_tensor_of(WN_COND_NDIM, wn_cond_shape, wn_cond, false);
    tg_tensor *a = test_tensor_of(WN_A_NDIM, wn_a_shape, wn_a, true);
    tg_tensor *b = test_tensor_of(WN_B_NDIM, wn_b_shape, wn_b, true);
    tg_tensor *dy = test_tensor_of(WN_DY_NDIM, wn_dy_shape, wn_dy, false);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_where(c, a, b);
    expect_golden("where y", y, wn_y, 15);
    assert_int_equal(tg_backward_grad(y, dy), TG_OK);
    expect_golden("where da", a->grad, wn_da, 5);
    expect_golden("where db", b->grad, wn_db, 15);
    tg_tape_end(tape);
    tg_tensor_release(c);
    tg_tensor_release(a);
    tg_tensor_release(b);
    tg_tensor_release(dy);
}

static void test_masked_fill_golden(void **state)
{
    (void)state;
    struct {
        int xnd, mnd;
        const int64_t *xs, *ms;
        const float *x, *m, *y, *dy, *dx, value;
    } cases[2] = {
        {MF_X_NDIM, MF_MASK_NDIM, mf_x_shape, mf_mask_shape, mf_x, mf_mask, mf_y, mf_dy, mf_dx,
         -INFINITY},
        {MS_X_NDIM, MS_MASK_NDIM, ms_x_shape, ms_mask_shape, ms_x, ms_mask, ms_y, ms_dy, ms_dx,
         0.5f},
    };
    for (int k = 0; k < 2; k++) {
        tg_tensor *x = test_tensor_of(cases[k].xnd, cases[k].xs, cases[k].x, true);
        tg_tensor *m = test_tensor_of(cases[k].mnd, cases[k].ms, cases[k].m, true);
        tg_tensor *dy = test_tensor_of(cases[k].xnd, cases[k].xs, cases[k].dy, false);
        tg_tape *tape = tg_tape_begin(TG_GRAD);
        tg_tensor *y = tg_masked_fill(x, m, cases[k].value);
        assert_non_null(y);
        assert_true(tg_shape_equal(y, x));
        expect_golden("masked_fill y", y, cases[k].y, x->numel);
        assert_int_equal(tg_backward_grad(y, dy), TG_OK);
        expect_golden("masked_fill dx", x->grad, cases[k].dx, x->numel);
        assert_null(m->grad); /* a mask that requires grad still gets none */
        tg_tape_end(tape);
        tg_tensor_release(x);
        tg_tensor_release(m);
        tg_tensor_release(dy);
    }
}

/* The ReLU derivative as a mask: x * (x > 0) has gradient (x > 0); the mask, computed from x,
 * adds nothing to x's gradient and records no node. */
static void test_mask_passes_no_gradient(void **state)
{
    (void)state;
    tg_tensor *x = test_tensor_of(TG_DIMS(5), (const float[]){-2, -0.5f, 0, 0.5f, 3}, true);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    const int64_t nodes = tg_debug_live_nodes();
    tg_tensor *m = tg_gt(x, tg_scalar(0));
    assert_int_equal(tg_debug_live_nodes(), nodes);
    tg_tensor *y = tg_sum(tg_mul(x, m));
    assert_non_null(y);
    assert_int_equal(tg_backward(y), TG_OK);
    const float want[5] = {0, 0, 0, 1, 1};
    for (int i = 0; i < 5; i++)
        assert_true(x->grad->data[i] == want[i]);
    assert_null(m->grad);
    /* where with x as its own cond: cond is detached, x gets only a's and b's parts. */
    tg_tensor_zero_grad(x);
    assert_int_equal(tg_backward(tg_sum(tg_where(x, x, tg_scalar(7)))), TG_OK);
    const float want_w[5] = {1, 1, 0, 1, 1};
    for (int i = 0; i < 5; i++)
        assert_true(x->grad->data[i] == want_w[i]);
    tg_tape_end(tape);
    tg_tensor_release(x);
}

static void test_select_errors(void **state)
{
    (void)state;
    tg_tensor *x = tg_tensor_zeros(TG_DIMS(2, 3)), *v4 = tg_tensor_zeros(TG_DIMS(4));
    tg_tensor *col = tg_tensor_zeros(TG_DIMS(2, 1)), *big = tg_tensor_zeros(TG_DIMS(3, 2, 3));
    /* No tape: named after the function called. */
    assert_null(tg_eq(x, x));
    assert_error_contains("tg_eq: no open tape");
    assert_null(tg_where(x, x, x));
    assert_error_contains("tg_where: no open tape");
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    assert_null(tg_lt(x, v4));
    assert_int_equal(tg_last_status(), TG_ERR_SHAPE);
    assert_error_contains("tg_lt: a [2, 3] and b [4]: shapes do not broadcast (axis -1: 3 vs 4)");
    assert_null(tg_where(col, x, v4));
    assert_error_contains("tg_where: cond [2, 1], a [2, 3] and b [4]: shapes do not broadcast "
                          "(axis -1: 3 vs 4)");
    assert_null(tg_masked_fill(x, v4, 0));
    assert_error_contains("tg_masked_fill: x [2, 3] and mask [4]: shapes do not broadcast");
    assert_null(tg_masked_fill(col, x, 0));
    assert_int_equal(tg_last_status(), TG_ERR_SHAPE);
    assert_error_contains("tg_masked_fill: mask [2, 3] does not broadcast to x [2, 1]");
    assert_null(tg_masked_fill(x, big, 0));
    assert_error_contains("tg_masked_fill: mask [3, 2, 3] does not broadcast to x [2, 3]");
    /* TG_NONE is no tensor; NULL from an earlier failure keeps its error. */
    tg_clear_error();
    assert_null(tg_where(x, TG_NONE, x));
    assert_int_equal(tg_last_status(), TG_ERR_ARG);
    assert_error_contains("tg_where: a is TG_NONE");
    tg_clear_error();
    assert_null(tg_ge(x, NULL));
    assert_error_contains("tg_ge: b is NULL");
    tg_clear_error();
    tg_tensor *bad = tg_reshape(x, TG_DIMS(4, -1));
    assert_null(tg_masked_fill(x, tg_eq(bad, x), -INFINITY));
    assert_null(tg_where(tg_ne(x, x), bad, x));
    assert_error_contains("tg_reshape: cannot view [2, 3]");
    tg_tape_end(tape);
    tg_tensor_release(x);
    tg_tensor_release(v4);
    tg_tensor_release(col);
    tg_tensor_release(big);
}

/* Large enough for the threads: every mask element and every selected gradient in place. */
static void test_select_large(void **state)
{
    (void)state;
    const int64_t n = 100003;
    tg_tensor *x = tg_tensor_new(1, &n);
    tg_rng rng;
    tg_rng_seed(&rng, 5);
    tg_tensor_normal_(x, &rng, 0.0f, 1.0f);
    tg_tensor_set_requires_grad(x, true);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *m = tg_ge(x, tg_scalar(0.25f));
    tg_tensor *y = tg_masked_fill(x, m, -INFINITY);
    tg_tensor *w = tg_where(m, tg_scalar(2), x);
    assert_non_null(w);
    assert_int_equal(tg_backward(tg_sum(tg_mul_scalar(w, 3))), TG_OK);
    for (int64_t i = 0; i < n; i++) {
        const bool on = x->data[i] >= 0.25f;
        if (m->data[i] != (on ? 1.0f : 0.0f) || y->data[i] != (on ? -INFINITY : x->data[i]) ||
            w->data[i] != (on ? 2.0f : x->data[i]) || x->grad->data[i] != (on ? 0.0f : 3.0f))
            fail_msg("element %lld wrong", (long long)i);
    }
    tg_tape_end(tape);
    tg_tensor_release(x);
}

int main(void)
{
    tg_set_num_threads(2);
    const struct CMUnitTest tests[] = {
        TG_TEST(test_compare_golden),
        TG_TEST(test_where_golden),
        TG_TEST(test_where_nan_cond_golden),
        TG_TEST(test_masked_fill_golden),
        TG_TEST(test_mask_passes_no_gradient),
        TG_TEST(test_select_errors),
        TG_TEST(test_select_large),
    };
    return cmocka_run_group_tests_name("select", tests, NULL, NULL);
}
