/* Reductions and shape ops: forward values against hand-computed numbers, views, round trips,
 * error messages, the accuracy of a 1e7-element sum, and results that do not depend on the
 * thread count. (Gradients are checked by the gradcheck suite from each op's cases.) */
#include "common.h"

#include <stdlib.h>

/* Asserts t's shape. */
static void expect_shape(const tg_tensor *t, int ndim, const int64_t *shape)
{
    assert_non_null(t);
    char got[160], want[160];
    tg_shape_str(t->ndim, t->shape, got, sizeof got);
    tg_shape_str(ndim, shape, want, sizeof want);
    if (strcmp(got, want) != 0)
        fail_msg("shape %s, expected %s", got, want);
}

/* Asserts t holds exactly the n values v (small integers and halves: exact in float). */
static void expect_values(const tg_tensor *t, const float *v, int64_t n)
{
    assert_non_null(t);
    assert_int_equal(t->numel, n);
    for (int64_t i = 0; i < n; i++)
        if (t->data[i] != v[i])
            fail_msg("element %lld is %.9g, expected %.9g", (long long)i, t->data[i], v[i]);
}

/* A tensor holding 0, 1, 2, ... */
static tg_tensor *arange_shaped(int ndim, const int64_t *shape)
{
    tg_tensor *t = tg_tensor_new(ndim, shape);
    assert_non_null(t);
    for (int64_t i = 0; i < t->numel; i++)
        t->data[i] = (float)i;
    return t;
}

/* Asserts the op failed with status and a message containing fragment. */
#define expect_error(result, status, fragment)                                                     \
    do {                                                                                           \
        tg_clear_error();                                                                          \
        assert_null(result);                                                                       \
        assert_int_equal(tg_last_status(), (status));                                              \
        assert_error_contains(fragment);                                                           \
    } while (0)

/* ---- reductions --------------------------------------------------------------------------- */

static void test_sum_mean_all(void **state)
{
    (void)state;
    tg_tensor *x = tg_tensor_from_data(TG_DIMS(2, 3), (const float[]){1, 2, 3, 4, 5, 6.5f});
    tg_tensor *s0 = tg_tensor_scalar(-2.5f);
    tg_tensor *empty = tg_tensor_zeros(TG_DIMS(0, 3));
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *s = tg_sum(x), *m = tg_mean(x);
    expect_shape(s, 0, NULL);
    expect_shape(m, 0, NULL);
    expect_values(s, (const float[]){21.5f}, 1);
    expect_values(m, (const float[]){21.5f / 6}, 1);
    expect_values(tg_sum(s0), (const float[]){-2.5f}, 1);
    expect_values(tg_mean(s0), (const float[]){-2.5f}, 1);
    expect_values(tg_sum(empty), (const float[]){0}, 1);
    assert_true(isnan(tg_mean(empty)->data[0])); /* as PyTorch: mean of nothing is NaN */
    tg_tape_end(tape);
    tg_tensor_release(x);
    tg_tensor_release(s0);
    tg_tensor_release(empty);
}

static void test_sum_mean_axis_values(void **state)
{
    (void)state;
    /* x = [[1, 2, 3], [4, 5, 6]] */
    tg_tensor *x = tg_tensor_from_data(TG_DIMS(2, 3), (const float[]){1, 2, 3, 4, 5, 6});
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    expect_values(tg_sum_axis(x, 0, false), (const float[]){5, 7, 9}, 3);
    expect_values(tg_sum_axis(x, 1, false), (const float[]){6, 15}, 2);
    expect_values(tg_sum_axis(x, -1, true), (const float[]){6, 15}, 2);
    expect_values(tg_mean_axis(x, 0, false), (const float[]){2.5f, 3.5f, 4.5f}, 3);
    expect_values(tg_mean_axis(x, -1, false), (const float[]){2, 5}, 2);
    expect_values(tg_mean_axis(x, -2, true), (const float[]){2.5f, 3.5f, 4.5f}, 3);

    /* x3[i, j, k] = 12 i + 4 j + k on [2, 3, 4]:
     * sum over i: 12 + 8 j + 2 k;  over j: 36 i + 12 + 3 k;  over k: 48 i + 16 j + 6 */
    tg_tensor *x3 = arange_shaped(TG_DIMS(2, 3, 4));
    tg_tensor *s0 = tg_sum_axis(x3, 0, false), *s1 = tg_sum_axis(x3, 1, false);
    tg_tensor *s2 = tg_sum_axis(x3, 2, false), *m1 = tg_mean_axis(x3, 1, true);
    for (int j = 0; j < 3; j++)
        for (int k = 0; k < 4; k++)
            assert_true(s0->data[j * 4 + k] == 12 + 8 * j + 2 * k);
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 4; k++) {
            assert_true(s1->data[i * 4 + k] == 36 * i + 12 + 3 * k);
            assert_true(m1->data[i * 4 + k] == (36 * i + 12 + 3 * k) / 3.0f);
        }
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
            assert_true(s2->data[i * 3 + j] == 48 * i + 16 * j + 6);
    tg_tape_end(tape);
    tg_tensor_release(x);
    tg_tensor_release(x3);
}

/* Sums over an axis with more than one column tile (inner > 128) and a long row. */
static void test_sum_axis_wide(void **state)
{
    (void)state;
    tg_tensor *x = arange_shaped(TG_DIMS(3, 300));
    tg_tensor *y = arange_shaped(TG_DIMS(2, 5000));
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *c = tg_sum_axis(x, 0, false), *r = tg_sum_axis(y, 1, false);
    for (int i = 0; i < 300; i++)
        assert_true(c->data[i] == 3 * i + 900); /* i + (300 + i) + (600 + i) */
    /* sum of 5000 r + k for k < 5000 = 25e6 r + 12497500, exact in double, rounded once */
    assert_true(r->data[0] == 12497500.0f);
    assert_true(r->data[1] == (float)(25e6 + 12497500.0));
    tg_tape_end(tape);
    tg_tensor_release(x);
    tg_tensor_release(y);
}

static void test_keepdim_shapes(void **state)
{
    (void)state;
    tg_tensor *x = tg_tensor_ones(TG_DIMS(2, 3, 4));
    tg_tensor *v = tg_tensor_ones(TG_DIMS(5));
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    expect_shape(tg_sum_axis(x, 1, true), TG_DIMS(2, 1, 4));
    expect_shape(tg_sum_axis(x, 1, false), TG_DIMS(2, 4));
    expect_shape(tg_mean_axis(x, 0, true), TG_DIMS(1, 3, 4));
    expect_shape(tg_mean_axis(x, 0, false), TG_DIMS(3, 4));
    expect_shape(tg_max_axis(x, -1, true), TG_DIMS(2, 3, 1));
    expect_shape(tg_max_axis(x, -1, false), TG_DIMS(2, 3));
    expect_shape(tg_sum_axis(v, 0, false), 0, NULL);
    expect_shape(tg_max_axis(v, -1, true), TG_DIMS(1));
    tg_tape_end(tape);
    tg_tensor_release(x);
    tg_tensor_release(v);
}

static void test_max_axis_values_and_ties(void **state)
{
    (void)state;
    /* [[1, 5, 2], [7, 0, 7]]: the row maximum 7 appears twice (first at column 0). */
    tg_tensor *x = tg_tensor_from_data(TG_DIMS(2, 3), (const float[]){1, 5, 2, 7, 0, 7});
    /* Columns of [[4, 1], [4, 3], [2, 3]]: both maxima are tied, first at rows 0 and 1. */
    tg_tensor *c = tg_tensor_from_data(TG_DIMS(3, 2), (const float[]){4, 1, 4, 3, 2, 3});
    tg_tensor_set_requires_grad(x, true);
    tg_tensor_set_requires_grad(c, true);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *mx = tg_max_axis(x, 1, false);
    expect_values(mx, (const float[]){5, 7}, 2);
    expect_values(tg_max_axis(x, 0, false), (const float[]){7, 5, 7}, 3);
    tg_tensor *mc = tg_max_axis(c, 0, true);
    expect_shape(mc, TG_DIMS(1, 2));
    expect_values(mc, (const float[]){4, 3}, 2);
    tg_tensor *two = tg_tensor_full(TG_DIMS(2), 2.0f);
    assert_int_equal(tg_backward_grad(mx, two), TG_OK);
    assert_int_equal(tg_backward(tg_sum(mc)), TG_OK);
    tg_tensor_release(two);
    expect_values(x->grad, (const float[]){0, 2, 0, 2, 0, 0}, 6);
    expect_values(c->grad, (const float[]){1, 0, 0, 1, 0, 0}, 6);
    tg_tape_end(tape);
    tg_tensor_release(x);
    tg_tensor_release(c);
}

/* NaN propagates (as in PyTorch), in a row and in a column; negative values work. */
static void test_max_axis_nan_and_negative(void **state)
{
    (void)state;
    tg_tensor *x = tg_tensor_from_data(TG_DIMS(2, 3), (const float[]){-3, NAN, -1, -4, -2, -9});
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *r = tg_max_axis(x, 1, false), *c = tg_max_axis(x, 0, false);
    assert_true(isnan(r->data[0]));
    assert_true(r->data[1] == -2);
    assert_true(c->data[0] == -3 && isnan(c->data[1]) && c->data[2] == -1);
    tg_tape_end(tape);
    tg_tensor_release(x);
}

/* Axis reductions over a wide inner size and a long row, against plain loops. */
static void test_max_axis_wide(void **state)
{
    (void)state;
    int64_t R = 7, C = 300;
    tg_tensor *x = tg_tensor_new(TG_DIMS(7, 300));
    tg_rng rng;
    tg_rng_seed(&rng, 5);
    tg_tensor_uniform_(x, &rng, -1.0f, 1.0f);
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *m0 = tg_max_axis(x, 0, false), *m1 = tg_max_axis(x, 1, false);
    for (int64_t j = 0; j < C; j++) {
        float best = x->data[j];
        for (int64_t i = 1; i < R; i++)
            best = x->data[i * C + j] > best ? x->data[i * C + j] : best;
        assert_true(m0->data[j] == best);
    }
    for (int64_t i = 0; i < R; i++) {
        float best = x->data[i * C];
        for (int64_t j = 1; j < C; j++)
            best = x->data[i * C + j] > best ? x->data[i * C + j] : best;
        assert_true(m1->data[i] == best);
    }
    tg_tape_end(tape);
    tg_tensor_release(x);
}

/* The sum of 1e7 values in [0, 1) agrees with a double reference to float precision (a
 * plain float accumulator is off by about 1.3e-5 relative here, 100x more). */
static void test_sum_1e7_accuracy(void **state)
{
    (void)state;
    int64_t n = 10000000;
    tg_tensor *x = tg_tensor_new(1, &n);
    tg_rng rng;
    tg_rng_seed(&rng, 42);
    tg_tensor_uniform_(x, &rng, 0.0f, 1.0f);
    double ref = 0;
    for (int64_t i = 0; i < n; i++)
        ref += x->data[i];
    float naive = 0;
    for (int64_t i = 0; i < n; i++)
        naive += x->data[i];
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    float s = tg_sum(x)->data[0], m = tg_mean(x)->data[0];
    float sa = tg_sum_axis(x, 0, false)->data[0];
    tg_tape_end(tape);
    print_message("    1e7 sum: tapegrad %.9g, double %.9g, naive float %.9g\n", s, ref, naive);
    assert_true(fabs(s - ref) <= 1e-7 * ref);
    assert_true(fabs(m - ref / n) <= 1e-7 * (ref / n));
    assert_true(sa == s);
    assert_true(fabs(naive - ref) > 3e-6 * ref); /* the test would catch a naive sum */
    tg_tensor_release(x);
}

/* Every reduction gives bit-identical results with 1 and 2 threads. */
static void test_threads_agree(void **state)
{
    (void)state;
    int64_t n = 3000000;
    tg_tensor *big = tg_tensor_new(1, &n);
    tg_tensor *mat = tg_tensor_new(TG_DIMS(1500, 1000));
    tg_rng rng;
    tg_rng_seed(&rng, 7);
    tg_tensor_uniform_(big, &rng, -1.0f, 1.0f);
    tg_tensor_uniform_(mat, &rng, -1.0f, 1.0f);
    tg_tensor *res[2][6];
    for (int t = 0; t < 2; t++) {
        tg_set_num_threads(t + 1);
        tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
        tg_tensor *r[6] = {tg_sum(big),
                           tg_mean(mat),
                           tg_sum_axis(mat, 0, false),
                           tg_mean_axis(mat, 1, false),
                           tg_max_axis(mat, 0, false),
                           tg_max_axis(mat, 1, false)};
        for (int k = 0; k < 6; k++)
            res[t][k] = tg_tensor_retain(r[k]);
        tg_tape_end(tape);
    }
    tg_set_num_threads(2);
    for (int k = 0; k < 6; k++) {
        assert_int_equal(res[0][k]->numel, res[1][k]->numel);
        if (memcmp(res[0][k]->data, res[1][k]->data, (size_t)res[0][k]->numel * 4) != 0)
            fail_msg("reduction %d differs between 1 and 2 threads", k);
        tg_tensor_release(res[0][k]);
        tg_tensor_release(res[1][k]);
    }
    tg_tensor_release(big);
    tg_tensor_release(mat);
}

/* ---- views --------------------------------------------------------------------------------- */

static void test_reshape_is_a_view(void **state)
{
    (void)state;
    tg_tensor *x = arange_shaped(TG_DIMS(2, 3));
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *y = tg_reshape(x, TG_DIMS(3, -1));
    expect_shape(y, TG_DIMS(3, 2));
    assert_ptr_equal(y->data, x->data);
    assert_ptr_equal(y->storage, x->storage);
    x->data[4] = 50.0f;
    tg_tensor_bump_version(x);
    assert_true(tg_tensor_item_at(y, 4) == 50.0f);
    tg_tensor *f = tg_flatten(y, 0, -1);
    expect_shape(f, TG_DIMS(6));
    assert_ptr_equal(f->data, x->data);
    expect_values(f, (const float[]){0, 1, 2, 3, 50, 5}, 6);
    tg_tape_end(tape);
    tg_tensor_release(x);
}

static void test_reshape_infer_and_errors(void **state)
{
    (void)state;
    tg_tensor *x = tg_tensor_zeros(TG_DIMS(2, 3));
    tg_tensor *e = tg_tensor_zeros(TG_DIMS(0, 3));
    tg_tensor *s = tg_tensor_scalar(3.0f);
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    expect_shape(tg_reshape(x, TG_DIMS(-1)), TG_DIMS(6));
    expect_shape(tg_reshape(x, TG_DIMS(2, -1, 1)), TG_DIMS(2, 3, 1));
    expect_shape(tg_reshape(x, TG_DIMS(1, 6)), TG_DIMS(1, 6));
    expect_shape(tg_reshape(s, 0, NULL), 0, NULL);
    expect_shape(tg_reshape(s, TG_DIMS(1, -1)), TG_DIMS(1, 1));
    expect_shape(tg_reshape(e, TG_DIMS(3, 0, 5)), TG_DIMS(3, 0, 5));
    expect_shape(tg_reshape(e, TG_DIMS(-1)), TG_DIMS(0));

    expect_error(tg_reshape(x, TG_DIMS(4, -1)), TG_ERR_SHAPE,
                 "tg_reshape: cannot view [2, 3] (6 elements) as [4, -1]");
    expect_error(tg_reshape(x, TG_DIMS(4, 2)), TG_ERR_SHAPE,
                 "tg_reshape: cannot view [2, 3] (6 elements) as [4, 2]");
    expect_error(tg_reshape(x, TG_DIMS(0, -1)), TG_ERR_SHAPE,
                 "tg_reshape: cannot view [2, 3] (6 elements) as [0, -1]");
    expect_error(tg_reshape(x, TG_DIMS(-1, -1)), TG_ERR_SHAPE,
                 "tg_reshape: shape [-1, -1] has more than one -1");
    expect_error(tg_reshape(x, TG_DIMS(-2, -3)), TG_ERR_SHAPE,
                 "tg_reshape: shape [-2, -3] has the negative size -2");
    expect_error(tg_reshape(e, TG_DIMS(0, -1)), TG_ERR_SHAPE,
                 "tg_reshape: cannot view [0, 3] (0 elements) as [0, -1]: the -1 could be any "
                 "size");
    expect_error(tg_reshape(x, 7, (const int64_t[]){1, 1, 1, 1, 1, 2, 3}), TG_ERR_ARG,
                 "tg_reshape: ndim 7 is outside 0..6");
    expect_error(tg_reshape(x, 2, NULL), TG_ERR_ARG, "tg_reshape: shape is NULL for ndim 2");
    tg_tape_end(tape);
    tg_tensor_release(x);
    tg_tensor_release(e);
    tg_tensor_release(s);
}

static void test_flatten(void **state)
{
    (void)state;
    tg_tensor *x = tg_tensor_zeros(TG_DIMS(2, 3, 4, 5));
    tg_tensor *s = tg_tensor_scalar(1.0f);
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    expect_shape(tg_flatten(x, 1, 2), TG_DIMS(2, 12, 5));
    expect_shape(tg_flatten(x, 0, -1), TG_DIMS(120));
    expect_shape(tg_flatten(x, -2, -1), TG_DIMS(2, 3, 20));
    expect_shape(tg_flatten(x, 1, 1), TG_DIMS(2, 3, 4, 5));
    expect_shape(tg_flatten(x, 1, -1), TG_DIMS(2, 60));
    expect_shape(tg_flatten(s, 0, -1), TG_DIMS(1));
    expect_error(tg_flatten(x, 2, 1), TG_ERR_ARG,
                 "tg_flatten: start_axis 2 comes after end_axis 1 in [2, 3, 4, 5]");
    expect_error(tg_flatten(x, 0, 4), TG_ERR_ARG,
                 "tg_flatten: end_axis 4 is out of range for [2, 3, 4, 5]");
    expect_error(tg_flatten(x, -5, 3), TG_ERR_ARG,
                 "tg_flatten: start_axis -5 is out of range for [2, 3, 4, 5]");
    tg_tape_end(tape);
    tg_tensor_release(x);
    tg_tensor_release(s);
}

/* ---- copies -------------------------------------------------------------------------------- */

static void test_transpose_values(void **state)
{
    (void)state;
    tg_tensor *x = arange_shaped(TG_DIMS(2, 3));
    tg_tensor *x3 = arange_shaped(TG_DIMS(2, 3, 4));
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *t = tg_transpose(x, 0, 1);
    expect_shape(t, TG_DIMS(3, 2));
    expect_values(t, (const float[]){0, 3, 1, 4, 2, 5}, 6);
    assert_ptr_not_equal(t->data, x->data);
    expect_values(tg_transpose(x, -1, -2), (const float[]){0, 3, 1, 4, 2, 5}, 6);
    expect_values(tg_transpose(x, 1, 1), (const float[]){0, 1, 2, 3, 4, 5}, 6);
    /* transpose(0, 2) of x3[i, j, k] = 12 i + 4 j + k: y[k, j, i] */
    tg_tensor *t3 = tg_transpose(x3, 0, 2);
    expect_shape(t3, TG_DIMS(4, 3, 2));
    expect_values(t3, (const float[]){0, 12, 4, 16, 8,  20, 1, 13, 5, 17, 9,  21,
                                      2, 14, 6, 18, 10, 22, 3, 15, 7, 19, 11, 23},
                  24);
    expect_error(tg_transpose(x, 0, 2), TG_ERR_ARG,
                 "tg_transpose: axis 2 is out of range for [2, 3]");
    tg_tape_end(tape);
    tg_tensor_release(x);
    tg_tensor_release(x3);
}

static void test_permute_values_and_inverse(void **state)
{
    (void)state;
    tg_tensor *x3 = arange_shaped(TG_DIMS(2, 3, 4));
    tg_tensor *x = arange_shaped(TG_DIMS(2, 3, 4, 5));
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    /* perm {2, 0, 1}: y[k, i, j] = x3[i, j, k] = 12 i + 4 j + k */
    tg_tensor *y3 = tg_permute(x3, (const int[]){2, 0, 1});
    expect_shape(y3, TG_DIMS(4, 2, 3));
    expect_values(y3, (const float[]){0, 4, 8,  12, 16, 20, 1, 5, 9,  13, 17, 21,
                                      2, 6, 10, 14, 18, 22, 3, 7, 11, 15, 19, 23},
                  24);
    const int perm[4] = {2, 0, 3, 1};
    int inv[4];
    for (int a = 0; a < 4; a++)
        inv[perm[a]] = a;
    tg_tensor *y = tg_permute(x, perm);
    expect_shape(y, TG_DIMS(4, 2, 5, 3));
    /* y[a, b, c, d] = x[b, d, a, c] */
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 2; b++)
            for (int c = 0; c < 5; c++)
                for (int d = 0; d < 3; d++)
                    assert_true(y->data[((a * 2 + b) * 5 + c) * 3 + d] ==
                                x->data[((b * 3 + d) * 4 + a) * 5 + c]);
    tg_tensor *back = tg_permute(y, inv);
    expect_shape(back, TG_DIMS(2, 3, 4, 5));
    assert_memory_equal(back->data, x->data, 120 * sizeof(float));
    expect_values(tg_permute(x3, (const int[]){-3, -2, -1}), x3->data, 24);

    expect_error(tg_permute(x3, (const int[]){0, 2, 0}), TG_ERR_ARG,
                 "tg_permute: perm [0, 2, 0] is not a permutation of the 3 axes of [2, 3, 4]");
    expect_error(tg_permute(x3, (const int[]){0, 1, 3}), TG_ERR_ARG,
                 "tg_permute: perm [0, 1, 3] is not a permutation of the 3 axes of [2, 3, 4]");
    expect_error(tg_permute(x3, NULL), TG_ERR_ARG, "tg_permute: perm is NULL");
    tg_tape_end(tape);
    tg_tensor_release(x);
    tg_tensor_release(x3);
}

/* A big transpose (several threads, long strided rows) against plain loops. */
static void test_transpose_large(void **state)
{
    (void)state;
    tg_tensor *x = arange_shaped(TG_DIMS(300, 500));
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *t = tg_transpose(x, 0, 1);
    for (int i = 0; i < 300; i++)
        for (int j = 0; j < 500; j++)
            if (t->data[j * 300 + i] != x->data[i * 500 + j])
                fail_msg("t[%d, %d] is wrong", j, i);
    tg_tape_end(tape);
    tg_tensor_release(x);
}

static void test_concat_values(void **state)
{
    (void)state;
    tg_tensor *a = tg_tensor_from_data(TG_DIMS(2, 2), (const float[]){1, 2, 3, 4});
    tg_tensor *b = tg_tensor_from_data(TG_DIMS(2, 1), (const float[]){5, 6});
    tg_tensor *c = tg_tensor_from_data(TG_DIMS(1, 2), (const float[]){7, 8});
    tg_tensor *d = tg_tensor_from_data(TG_DIMS(2, 3), (const float[]){9, 10, 11, 12, 13, 14});
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *ab = tg_concat((tg_tensor *[]){a, b}, 2, 1);
    expect_shape(ab, TG_DIMS(2, 3));
    expect_values(ab, (const float[]){1, 2, 5, 3, 4, 6}, 6);
    tg_tensor *ac = tg_concat((tg_tensor *[]){a, c}, 2, 0);
    expect_shape(ac, TG_DIMS(3, 2));
    expect_values(ac, (const float[]){1, 2, 3, 4, 7, 8}, 6);
    tg_tensor *abd = tg_concat((tg_tensor *[]){a, b, d}, 3, -1);
    expect_shape(abd, TG_DIMS(2, 6));
    expect_values(abd, (const float[]){1, 2, 5, 9, 10, 11, 3, 4, 6, 12, 13, 14}, 12);
    expect_values(tg_concat(&a, 1, 0), a->data, 4);
    tg_tape_end(tape);
    tg_tensor_release(a);
    tg_tensor_release(b);
    tg_tensor_release(c);
    tg_tensor_release(d);
}

/* tg_stack: the new axis at each position, negative axes, one input. */
static void test_stack_values(void **state)
{
    (void)state;
    tg_tensor *a = tg_tensor_from_data(TG_DIMS(2, 2), (const float[]){1, 2, 3, 4});
    tg_tensor *b = tg_tensor_from_data(TG_DIMS(2, 2), (const float[]){5, 6, 7, 8});
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *ab[2] = {a, b};
    tg_tensor *s0 = tg_stack(ab, 2, 0);
    expect_shape(s0, TG_DIMS(2, 2, 2));
    expect_values(s0, (const float[]){1, 2, 3, 4, 5, 6, 7, 8}, 8);
    tg_tensor *s1 = tg_stack(ab, 2, 1);
    expect_shape(s1, TG_DIMS(2, 2, 2));
    expect_values(s1, (const float[]){1, 2, 5, 6, 3, 4, 7, 8}, 8);
    tg_tensor *s2 = tg_stack(ab, 2, 2);
    expect_shape(s2, TG_DIMS(2, 2, 2));
    expect_values(s2, (const float[]){1, 5, 2, 6, 3, 7, 4, 8}, 8);
    expect_values(tg_stack(ab, 2, -1), s2->data, 8);
    expect_values(tg_stack(ab, 2, -3), s0->data, 8);
    tg_tensor *one = tg_stack(&a, 1, 1);
    expect_shape(one, TG_DIMS(2, 1, 2));
    expect_values(one, a->data, 4);
    /* 0-d inputs stack into a vector. */
    tg_tensor *sc[3] = {tg_scalar(1.5f), tg_scalar(-2), tg_scalar(4)};
    tg_tensor *v = tg_stack(sc, 3, 0);
    expect_shape(v, TG_DIMS(3));
    expect_values(v, (const float[]){1.5f, -2, 4}, 3);
    tg_tape_end(tape);
    tg_tensor_release(a);
    tg_tensor_release(b);
}

/* 100 inputs, more than a node holds (a tree of concats inside): the values land in order and
 * each input gets exactly its slice of the output gradient, for concat along a middle axis and
 * for stack along the last. */
static void test_concat_stack_many(void **state)
{
    (void)state;
    enum { N = 100 };
    tg_tensor *x[N];
    tg_rng rng;
    tg_rng_seed(&rng, 7);
    for (int j = 0; j < N; j++) {
        /* Input j is [2, 1 + j % 3, 3]: sizes along the joined axis differ. */
        x[j] = tg_tensor_new(TG_DIMS(2, 1 + j % 3, 3));
        tg_tensor_uniform_(x[j], &rng, -1.0f, 1.0f);
        tg_tensor_set_requires_grad(x[j], true);
    }
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_concat(x, N, 1);
    assert_non_null(y);
    int64_t total = 0;
    for (int j = 0; j < N; j++)
        total += x[j]->shape[1];
    expect_shape(y, TG_DIMS(2, total, 3));
    tg_tensor *r = tg_tensor_new(y->ndim, y->shape);
    for (int64_t i = 0; i < r->numel; i++)
        r->data[i] = (float)i;
    assert_int_equal(tg_backward_grad(y, r), TG_OK);
    int64_t off = 0;
    for (int j = 0; j < N; j++) {
        const int64_t len = x[j]->shape[1];
        for (int64_t o = 0; o < 2; o++)
            for (int64_t k = 0; k < len * 3; k++) {
                const int64_t at = o * total * 3 + off * 3 + k;
                if (y->data[at] != x[j]->data[o * len * 3 + k] ||
                    x[j]->grad->data[o * len * 3 + k] != (float)at)
                    fail_msg("input %d, row %lld, element %lld misplaced", j, (long long)o,
                             (long long)k);
            }
        off += len;
    }
    tg_tensor_release(r);
    tg_tape_end(tape);

    /* stack of 100 [2, 3] tensors along a new last axis: out[i, k, j] = x_j[i, k]. */
    tg_tensor *s[N];
    for (int j = 0; j < N; j++) {
        s[j] = tg_tensor_new(TG_DIMS(2, 3));
        for (int64_t e = 0; e < 6; e++)
            s[j]->data[e] = (float)(1000 * j + e);
        tg_tensor_set_requires_grad(s[j], true);
    }
    tape = tg_tape_begin(TG_GRAD);
    tg_tensor *st = tg_stack(s, N, -1);
    expect_shape(st, TG_DIMS(2, 3, N));
    r = tg_tensor_new(st->ndim, st->shape);
    for (int64_t i = 0; i < r->numel; i++)
        r->data[i] = (float)i;
    assert_int_equal(tg_backward_grad(st, r), TG_OK);
    for (int j = 0; j < N; j++)
        for (int64_t e = 0; e < 6; e++)
            if (st->data[e * N + j] != s[j]->data[e] || s[j]->grad->data[e] != (float)(e * N + j))
                fail_msg("stacked input %d element %lld misplaced", j, (long long)e);
    tg_tensor_release(r);
    tg_tape_end(tape);
    for (int j = 0; j < N; j++) {
        tg_tensor_release(x[j]);
        tg_tensor_release(s[j]);
    }
}

static void test_slice_values(void **state)
{
    (void)state;
    tg_tensor *v = arange_shaped(TG_DIMS(10));
    tg_tensor *m = arange_shaped(TG_DIMS(3, 5));
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    expect_values(tg_slice(v, 0, 2, 8, 2), (const float[]){2, 4, 6}, 3);
    expect_values(tg_slice(v, 0, 1, 10, 3), (const float[]){1, 4, 7}, 3);
    expect_values(tg_slice(v, 0, -3, 100, 1), (const float[]){7, 8, 9}, 3);
    expect_values(tg_slice(v, 0, -100, 3, 1), (const float[]){0, 1, 2}, 3);
    expect_values(tg_slice(v, -1, 3, -5, 1), (const float[]){3, 4}, 2);
    expect_values(tg_slice(v, 0, 0, 10, 100), (const float[]){0}, 1);
    expect_shape(tg_slice(v, 0, 5, 2, 1), TG_DIMS(0));
    expect_shape(tg_slice(v, 0, 12, 20, 1), TG_DIMS(0));
    /* m[i, j] = 5 i + j;  m[:, 1::2] and m[-2:, :] */
    tg_tensor *cols = tg_slice(m, 1, 1, INT64_MAX, 2);
    expect_shape(cols, TG_DIMS(3, 2));
    expect_values(cols, (const float[]){1, 3, 6, 8, 11, 13}, 6);
    expect_values(tg_slice(m, 0, -2, 3, 1), (const float[]){5, 6, 7, 8, 9, 10, 11, 12, 13, 14}, 10);
    expect_error(tg_slice(v, 0, 0, 5, 0), TG_ERR_ARG,
                 "tg_slice: step 0 along axis 0 of [10]; it must be >= 1");
    expect_error(tg_slice(v, 0, 5, 0, -1), TG_ERR_ARG,
                 "tg_slice: step -1 along axis 0 of [10]; it must be >= 1");
    expect_error(tg_slice(m, 2, 0, 1, 1), TG_ERR_ARG,
                 "tg_slice: axis 2 is out of range for [3, 5]");
    tg_tape_end(tape);
    tg_tensor_release(v);
    tg_tensor_release(m);
}

/* Slicing x into three pieces and concatenating them gives x back, and the output gradient r
 * of the concatenation reaches x unchanged. */
static void test_concat_slice_round_trip(void **state)
{
    (void)state;
    tg_tensor *x = tg_tensor_new(TG_DIMS(3, 7, 2));
    tg_tensor *r = tg_tensor_new(TG_DIMS(3, 7, 2));
    tg_rng rng;
    tg_rng_seed(&rng, 3);
    tg_tensor_uniform_(x, &rng, -1.0f, 1.0f);
    tg_tensor_uniform_(r, &rng, -1.0f, 1.0f);
    tg_tensor_set_requires_grad(x, true);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *parts[3] = {tg_slice(x, 1, 0, 2, 1), tg_slice(x, 1, 2, 5, 1),
                           tg_slice(x, -2, 5, 7, 1)};
    tg_tensor *y = tg_concat(parts, 3, 1);
    expect_shape(y, TG_DIMS(3, 7, 2));
    assert_memory_equal(y->data, x->data, 42 * sizeof(float));
    /* Every other element and the rest: a step-2 slice and its complement. */
    tg_tensor *even = tg_slice(x, 0, 0, 3, 2), *odd = tg_slice(x, 0, 1, 3, 2);
    expect_shape(even, TG_DIMS(2, 7, 2));
    tg_tensor *eo = tg_concat((tg_tensor *[]){even, odd}, 2, 0);
    assert_memory_equal(eo->data, x->data, 14 * sizeof(float));           /* x[0] */
    assert_memory_equal(eo->data + 14, x->data + 28, 14 * sizeof(float)); /* x[2] */
    assert_memory_equal(eo->data + 28, x->data + 14, 14 * sizeof(float)); /* x[1] */
    assert_int_equal(tg_backward_grad(y, r), TG_OK);
    assert_memory_equal(x->grad->data, r->data, 42 * sizeof(float));
    tg_tape_end(tape);
    tg_tensor_release(x);
    tg_tensor_release(r);
}

/* ---- errors -------------------------------------------------------------------------------- */

static void test_error_messages(void **state)
{
    (void)state;
    tg_tensor *x = tg_tensor_zeros(TG_DIMS(2, 3));
    tg_tensor *w = tg_tensor_zeros(TG_DIMS(2, 4));
    tg_tensor *v = tg_tensor_zeros(TG_DIMS(3));
    tg_tensor *e = tg_tensor_zeros(TG_DIMS(2, 0));
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    expect_error(tg_sum_axis(x, 3, false), TG_ERR_ARG,
                 "tg_sum_axis: axis 3 is out of range for [2, 3]");
    expect_error(tg_mean_axis(x, -3, true), TG_ERR_ARG,
                 "tg_mean_axis: axis -3 is out of range for [2, 3]");
    expect_error(tg_max_axis(x, 2, false), TG_ERR_ARG,
                 "tg_max_axis: axis 2 is out of range for [2, 3]");
    expect_error(tg_max_axis(e, 1, false), TG_ERR_SHAPE, "tg_max_axis: axis 1 of [2, 0] is empty");
    expect_shape(tg_max_axis(e, 0, false), TG_DIMS(0)); /* no output: nothing undefined */
    expect_error(tg_concat((tg_tensor *[]){x, w}, 2, 0), TG_ERR_SHAPE,
                 "tg_concat: input 1 [2, 4] does not match input 0 [2, 3] outside axis 0");
    expect_error(tg_concat((tg_tensor *[]){x, x, v}, 3, 1), TG_ERR_SHAPE,
                 "tg_concat: input 2 [3] does not match input 0 [2, 3] outside axis 1");
    expect_error(tg_concat((tg_tensor *[]){x, w}, 2, 2), TG_ERR_ARG,
                 "tg_concat: axis 2 is out of range for input 0 [2, 3]");
    expect_error(tg_concat(NULL, 2, 0), TG_ERR_ARG, "tg_concat: xs is NULL");
    expect_error(tg_concat((tg_tensor *[]){x}, 0, 0), TG_ERR_ARG,
                 "tg_concat: n must be at least 1 (no tensors to join)");
    expect_error(tg_concat((tg_tensor *[]){x}, -1, 0), TG_ERR_ARG, "tg_concat: n must be");
    /* More inputs than a node holds: errors still number the inputs as the caller does. */
    tg_tensor *many[40];
    for (int i = 0; i < 40; i++)
        many[i] = x;
    expect_shape(tg_concat(many, 16, 0), TG_DIMS(32, 3));
    expect_shape(tg_concat(many, 17, 0), TG_DIMS(34, 3));
    many[33] = w;
    expect_error(tg_concat(many, 40, 0), TG_ERR_SHAPE,
                 "tg_concat: input 33 [2, 4] does not match input 0 [2, 3] outside axis 0");
    many[33] = TG_NONE;
    expect_error(tg_concat(many, 40, 1), TG_ERR_ARG, "tg_concat: input 33 is TG_NONE");
    many[33] = NULL;
    expect_error(tg_concat(many, 40, 1), TG_ERR_ARG, "tg_concat: input 33 is NULL");
    expect_error(tg_concat(many, 20, 2), TG_ERR_ARG,
                 "tg_concat: axis 2 is out of range for input 0 [2, 3]");
    expect_error(tg_stack(NULL, 2, 0), TG_ERR_ARG, "tg_stack: xs is NULL");
    expect_error(tg_stack(many, 0, 0), TG_ERR_ARG, "tg_stack: n must be at least 1");
    expect_error(tg_stack(many, 40, 0), TG_ERR_ARG, "tg_stack: input 33 is NULL");
    expect_error(tg_stack((tg_tensor *[]){x, x, w}, 3, 1), TG_ERR_SHAPE,
                 "tg_stack: input 2 [2, 4] differs from input 0 [2, 3]");
    expect_error(tg_stack((tg_tensor *[]){x, x}, 2, 3), TG_ERR_ARG,
                 "tg_stack: axis 3 is out of range for inputs [2, 3] (0 to 2, or negative from "
                 "the end)");
    expect_error(tg_stack((tg_tensor *[]){x, x}, 2, -4), TG_ERR_ARG, "tg_stack: axis -4");
    tg_tensor *six = tg_zeros(TG_DIMS(1, 1, 1, 1, 1, 2));
    expect_error(tg_stack((tg_tensor *[]){six, six}, 2, 0), TG_ERR_ARG,
                 "tg_stack: axis 0: inputs [1, 1, 1, 1, 1, 2] already have the most axes a "
                 "tensor may have (6)");

    /* A NULL from a failed op keeps the first error. */
    tg_clear_error();
    tg_tensor *bad = tg_reshape(x, TG_DIMS(5, -1));
    assert_null(tg_transpose(tg_sum_axis(tg_slice(bad, 0, 0, 1, 1), 0, false), 0, 1));
    assert_null(tg_concat((tg_tensor *[]){x, bad}, 2, 0));
    assert_null(tg_stack((tg_tensor *[]){x, bad}, 2, 0));
    for (int i = 0; i < 40; i++)
        many[i] = i == 20 ? bad : x;
    assert_null(tg_concat(many, 40, 0));
    assert_null(tg_sum(bad));
    assert_error_contains("tg_reshape: cannot view [2, 3] (6 elements) as [5, -1]");
    tg_tape_end(tape);
    tg_tensor_release(x);
    tg_tensor_release(w);
    tg_tensor_release(v);
    tg_tensor_release(e);
}

int main(void)
{
    tg_set_num_threads(2);
    const struct CMUnitTest tests[] = {
        TG_TEST(test_sum_mean_all),
        TG_TEST(test_sum_mean_axis_values),
        TG_TEST(test_sum_axis_wide),
        TG_TEST(test_keepdim_shapes),
        TG_TEST(test_max_axis_values_and_ties),
        TG_TEST(test_max_axis_nan_and_negative),
        TG_TEST(test_max_axis_wide),
        TG_TEST(test_sum_1e7_accuracy),
        TG_TEST(test_threads_agree),
        TG_TEST(test_reshape_is_a_view),
        TG_TEST(test_reshape_infer_and_errors),
        TG_TEST(test_flatten),
        TG_TEST(test_transpose_values),
        TG_TEST(test_permute_values_and_inverse),
        TG_TEST(test_transpose_large),
        TG_TEST(test_concat_values),
        TG_TEST(test_stack_values),
        TG_TEST(test_concat_stack_many),
        TG_TEST(test_slice_values),
        TG_TEST(test_concat_slice_round_trip),
        TG_TEST(test_error_messages),
    };
    return cmocka_run_group_tests_name("shape", tests, NULL, NULL);
}
