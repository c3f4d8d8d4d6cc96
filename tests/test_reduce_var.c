/* var and std along an axis: PyTorch goldens (every axis, corrections 0, 1 and 2, values and
 * gradients), NaN where len <= correction, keepdim, thread-count independence, precision far
 * from 0, errors. Their gradients are also gradchecked by test_gradcheck. */
#include "common.h"

#include "golden/norm_golden.h"

#include <stdio.h>

typedef tg_tensor *(*var_fn)(tg_tensor *, int, bool, int64_t);

/* The golden arrays of one (axis, correction): dy, then var's and std's y and dx. */
typedef struct {
    int axis;
    int64_t correction;
    const float *dy, *y[2], *dx[2];
} vs_golden;

#define VS(a, c)                                                                                   \
    {                                                                                              \
        a, c, vs_dy_a##a##_c##c, {vs_var_a##a##_c##c##_y, vs_std_a##a##_c##c##_y},                 \
        {                                                                                          \
            vs_var_a##a##_c##c##_dx, vs_std_a##a##_c##c##_dx                                       \
        }                                                                                          \
    }

static const vs_golden vs_goldens[] = {VS(0, 0), VS(0, 1), VS(0, 2), VS(1, 0), VS(1, 1),
                                       VS(1, 2), VS(2, 0), VS(2, 1), VS(2, 2)};

static void test_var_std_golden(void **state)
{
    (void)state;
    const var_fn fns[2] = {tg_var, tg_std};
    const char *names[2] = {"var", "std"};
    for (size_t k = 0; k < sizeof vs_goldens / sizeof vs_goldens[0]; k++) {
        const vs_golden *g = &vs_goldens[k];
        for (int f = 0; f < 2; f++) {
            tg_tensor *x = test_tensor_of(VS_NDIM, vs_shape, vs_x, true);
            int64_t ys[2];
            for (int d = 0, j = 0; d < VS_NDIM; d++)
                if (d != g->axis)
                    ys[j++] = vs_shape[d];
            tg_tensor *dy = test_tensor_of(2, ys, g->dy, false);
            tg_tape *tape = tg_tape_begin(TG_GRAD);
            /* The axis counted from the end for the last one. */
            tg_tensor *y = fns[f](x, g->axis == 2 ? -1 : g->axis, false, g->correction);
            if (!y)
                fail_msg("%s: %s", names[f], tg_last_error());
            assert_int_equal(y->ndim, 2);
            assert_int_equal(y->shape[0], ys[0]);
            assert_int_equal(y->shape[1], ys[1]);
            assert_int_equal(tg_backward_grad(y, dy), TG_OK);
            char what[80];
            snprintf(what, sizeof what, "%s axis %d correction %lld y", names[f], g->axis,
                     (long long)g->correction);
            assert_golden(what, y->data, g->y[f], y->numel);
            snprintf(what, sizeof what, "%s axis %d correction %lld dx", names[f], g->axis,
                     (long long)g->correction);
            assert_golden(what, x->grad->data, g->dx[f], x->numel);
            tg_tape_end(tape);
            tg_tensor_release(x);
            tg_tensor_release(dy);
        }
    }
}

/* len <= correction: no divisor, NaN (value and gradient), as documented. keepdim keeps the
 * axis as 1; a size-1 axis with correction 0 has variance 0. */
static void test_var_nan_and_keepdim(void **state)
{
    (void)state;
    tg_tensor *x = test_tensor_of(TG_DIMS(2, 3), (const float[]){1, 2, 4, -1, 0, 5}, true);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *v3 = tg_var(x, 1, true, 3), *s4 = tg_std(x, 1, false, 4);
    assert_non_null(v3);
    assert_non_null(s4);
    assert_int_equal(v3->ndim, 2);
    assert_int_equal(v3->shape[0], 2);
    assert_int_equal(v3->shape[1], 1);
    for (int i = 0; i < 2; i++)
        assert_true(isnan(v3->data[i]) && isnan(s4->data[i]));
    assert_int_equal(tg_backward(tg_sum(v3)), TG_OK);
    for (int i = 0; i < 6; i++)
        assert_true(isnan(x->grad->data[i]));

    /* Correction 2 of 3 values: sum of squares / 1. Row 0: mean 7/3. */
    tg_tensor *v2 = tg_var(x, -1, false, 2);
    const double m = 7.0 / 3.0;
    assert_close(v2->data[0], (1 - m) * (1 - m) + (2 - m) * (2 - m) + (4 - m) * (4 - m), 1e-5);
    /* Along a size-1 axis: correction 0 gives 0, correction 1 NaN. */
    tg_tensor *x1 = tg_reshape(x, TG_DIMS(6, 1));
    tg_tensor *z = tg_var(x1, 1, false, 0), *n = tg_std(x1, 1, false, 1);
    for (int i = 0; i < 6; i++)
        assert_true(z->data[i] == 0.0f && isnan(n->data[i]));
    tg_tape_end(tape);
    tg_tensor_release(x);
}

/* Values near 1e4 with a spread of 1: the one-pass E[x^2] - E[x]^2 in float would lose it all;
 * two passes in double keep it. Also the same bits for 1 and 2 threads, along a long row (the
 * whole-row path splits it into chunks) and down columns. */
static void test_var_precision_threads(void **state)
{
    (void)state;
    const int64_t n = 300000;
    tg_tensor *x = tg_tensor_new(TG_DIMS(n));
    tg_rng rng;
    tg_rng_seed(&rng, 5);
    tg_tensor_uniform_(x, &rng, 1e4f - 1.0f, 1e4f + 1.0f);
    tg_tensor *r[2][2];
    for (int t = 0; t < 2; t++) {
        tg_set_num_threads(t + 1);
        tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
        r[t][0] = tg_tensor_clone(tg_var(x, 0, false, 1));
        r[t][1] = tg_tensor_clone(tg_std(tg_reshape(x, TG_DIMS(1000, 300)), 0, false, 0));
        tg_tape_end(tape);
    }
    tg_set_num_threads(2);
    /* Uniform on [-1, 1]: variance 1/3. */
    assert_close(r[0][0]->data[0], 1.0 / 3.0, 0.01);
    for (int i = 0; i < 2; i++) {
        assert_memory_equal(r[0][i]->data, r[1][i]->data, sizeof(float) * (size_t)r[0][i]->numel);
        tg_tensor_release(r[0][i]);
        tg_tensor_release(r[1][i]);
    }
    tg_tensor_release(x);
}

/* Any correction is accepted, as PyTorch's: a negative one divides by len + |correction|,
 * computed without overflow even for INT64_MIN (len - correction wrapped to a negative divisor,
 * and was undefined behaviour). */
static void test_var_negative_correction(void **state)
{
    (void)state;
    tg_tensor *x = test_tensor_of(TG_DIMS(2, 3), (const float[]){1, 2, 4, -1, 0, 5}, true);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    const double m = 7.0 / 3.0, ss = (1 - m) * (1 - m) + (2 - m) * (2 - m) + (4 - m) * (4 - m);
    tg_tensor *v = tg_var(x, 1, false, -1);
    assert_non_null(v);
    assert_close(v->data[0], ss / 4.0, 1e-5);
    const int64_t big[2] = {INT64_MIN + 1, INT64_MIN};
    for (int i = 0; i < 2; i++) {
        tg_tensor *vb = tg_var(x, 1, false, big[i]), *sb = tg_std(x, 1, false, big[i]);
        assert_non_null(vb);
        assert_non_null(sb);
        /* 3 - INT64_MIN is 2^63 + 3, 2^63 in double. */
        assert_close(vb->data[0] * 0x1p63, ss, 1e-4);
        assert_close(sb->data[0] * 0x1p31 * sqrt(2.0), sqrt(ss), 1e-4);
        assert_int_equal(tg_backward(tg_sum(sb)), TG_OK);
        assert_true(isfinite(x->grad->data[0]));
    }
    tg_tape_end(tape);
    tg_tensor_release(x);
}

static void test_var_errors(void **state)
{
    (void)state;
    tg_tensor *x = tg_tensor_ones(TG_DIMS(2, 3));
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    assert_null(tg_var(x, 2, false, 1));
    assert_int_equal(tg_last_status(), TG_ERR_ARG);
    assert_error_contains("tg_var: axis 2 is out of range for [2, 3]");
    assert_null(tg_std(x, -3, false, 1));
    assert_error_contains("tg_std: axis -3 is out of range for [2, 3]");
    tg_set_error(TG_ERR_IO, "earlier failure");
    assert_null(tg_std(NULL, 0, false, 1));
    assert_error_contains("earlier failure");
    tg_tape_end(tape);
    tg_tensor_release(x);
}

int main(void)
{
    tg_set_num_threads(2);
    const struct CMUnitTest tests[] = {
        TG_TEST(test_var_std_golden),
        TG_TEST(test_var_nan_and_keepdim),
        TG_TEST(test_var_precision_threads),
        TG_TEST(test_var_negative_correction),
        TG_TEST(test_var_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
