/* Synchronised batch norm's hook (tg_batch_norm_set_reduce), without MPI: a hook that doubles
 * every sum stands for two ranks holding the same batch. Batch norm of x under it must then
 * normalise, update the running statistics and differentiate as batch norm of x concatenated
 * with itself, in training mode: the same outputs and running statistics, the same dx (the
 * gradient of the summed losses of the two halves), and half the weight and bias gradients
 * (each rank's own sums, which the gradient averaging of data-parallel training adds up). For
 * [N, C] (BatchNorm1d's layout, the kernels' blocked path) and [N, C, H, W]. */
#include "common.h"

#include <math.h>
#include <string.h>

static int calls; /* hook calls: 2 per forward, 1 per backward */
static int64_t summed;

static void doubling(void *ctx, double *v, int64_t n)
{
    (void)ctx;
    calls++;
    summed += n;
    for (int64_t i = 0; i < n; i++)
        v[i] *= 2.0;
}

static float max_diff(const float *a, const float *b, int64_t n, float scale)
{
    float worst = 0;
    for (int64_t i = 0; i < n; i++)
        worst = fmaxf(worst, fabsf(a[i] * scale - b[i]));
    return worst;
}

/* One layout: x [shape], weight and bias [C]; the loss sum(y * r) with fixed r. */
static void check_layout(int ndim, const int64_t *shape)
{
    const int64_t C = shape[1];
    int64_t shape2[4];
    memcpy(shape2, shape, sizeof(int64_t) * (size_t)ndim);
    shape2[0] = 2 * shape[0];
    tg_rng rng;
    tg_rng_seed(&rng, 7);
    tg_tensor *x = tg_tensor_new(ndim, shape), *r = tg_tensor_new(ndim, shape);
    tg_tensor *x2 = tg_tensor_new(ndim, shape2), *r2 = tg_tensor_new(ndim, shape2);
    tg_tensor *w[2], *b[2], *rm[2], *rv[2];
    for (int k = 0; k < 2; k++) {
        w[k] = tg_tensor_new(TG_DIMS(C)), b[k] = tg_tensor_new(TG_DIMS(C));
        rm[k] = tg_tensor_zeros(TG_DIMS(C)), rv[k] = tg_tensor_ones(TG_DIMS(C));
    }
    tg_tensor_normal_(x, &rng, 0.5f, 2.0f);
    tg_tensor_normal_(r, &rng, 0.0f, 1.0f);
    tg_tensor_normal_(w[0], &rng, 1.0f, 0.3f);
    tg_tensor_normal_(b[0], &rng, 0.0f, 0.3f);
    memcpy(w[1]->data, w[0]->data, sizeof(float) * (size_t)C);
    memcpy(b[1]->data, b[0]->data, sizeof(float) * (size_t)C);
    for (int h = 0; h < 2; h++) { /* x2 = [x; x], r2 = [r; r] */
        memcpy(x2->data + h * x->numel, x->data, sizeof(float) * (size_t)x->numel);
        memcpy(r2->data + h * r->numel, r->data, sizeof(float) * (size_t)r->numel);
    }
    for (int k = 0; k < 2; k++) {
        assert_int_equal(tg_tensor_set_requires_grad(w[k], true), TG_OK);
        assert_int_equal(tg_tensor_set_requires_grad(b[k], true), TG_OK);
    }
    assert_int_equal(tg_tensor_set_requires_grad(x, true), TG_OK);
    assert_int_equal(tg_tensor_set_requires_grad(x2, true), TG_OK);

    /* the synchronised one, on x alone */
    calls = 0, summed = 0;
    tg_batch_norm_set_reduce(doubling, NULL);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_batch_norm(x, w[0], b[0], rm[0], rv[0], true, 0.1f, 1e-5f);
    assert_non_null(y);
    tg_tensor *y_keep = tg_tensor_clone(y);
    assert_int_equal(tg_backward(tg_sum(tg_mul(y, r))), TG_OK);
    tg_tape_end(tape);
    tg_batch_norm_set_reduce(NULL, NULL);
    assert_int_equal(calls, 3);
    assert_int_equal(summed, (C + 1) + C + 2 * C);

    /* the plain one, on [x; x] */
    tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y2 = tg_batch_norm(x2, w[1], b[1], rm[1], rv[1], true, 0.1f, 1e-5f);
    assert_non_null(y2);
    tg_tensor *y2_keep = tg_tensor_clone(y2);
    assert_int_equal(tg_backward(tg_sum(tg_mul(y2, r2))), TG_OK);
    tg_tape_end(tape);

    const float tol = 2e-5f; /* sums in double taken in another order, then rounded to float */
    assert_true(max_diff(y_keep->data, y2_keep->data, y_keep->numel, 1.0f) < tol);
    assert_true(max_diff(rm[0]->data, rm[1]->data, C, 1.0f) < tol);
    assert_true(max_diff(rv[0]->data, rv[1]->data, C, 1.0f) < tol);
    assert_true(max_diff(x->grad->data, x2->grad->data, x->numel, 1.0f) < tol);
    assert_true(max_diff(w[0]->grad->data, w[1]->grad->data, C, 2.0f) < tol * 10);
    assert_true(max_diff(b[0]->grad->data, b[1]->grad->data, C, 2.0f) < tol * 10);
    /* and not the unsynchronised statistics: the running variance of x alone differs (its
     * unbiased correction uses m - 1 of half the count), so the check can fail */
    assert_true(shape[0] * (ndim > 2 ? shape[2] * shape[3] : 1) < 64);

    tg_tensor *all[] = {x,    r,    x2,   r2,    y_keep, y2_keep, w[0],
                        w[1], b[0], b[1], rm[0], rm[1],  rv[0],   rv[1]};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        tg_tensor_release(all[i]);
}

static void test_hook_2d(void **state)
{
    (void)state;
    check_layout(2, (const int64_t[]){5, 70}); /* more than one block of the [N, C] path */
}

static void test_hook_4d(void **state)
{
    (void)state;
    check_layout(4, (const int64_t[]){3, 4, 3, 5});
}

/* Eval mode never calls the hook; create_graph through a synchronised node is refused. */
static void test_hook_eval_and_second_order(void **state)
{
    (void)state;
    tg_tensor *x = tg_tensor_ones(TG_DIMS(4, 3));
    tg_tensor *rm = tg_tensor_zeros(TG_DIMS(3)), *rv = tg_tensor_ones(TG_DIMS(3));
    x->data[0] = 3.0f;
    assert_int_equal(tg_tensor_set_requires_grad(x, true), TG_OK);
    calls = 0;
    tg_batch_norm_set_reduce(doubling, NULL);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    assert_non_null(tg_batch_norm(x, TG_NONE, TG_NONE, rm, rv, false, 0.1f, 1e-5f));
    assert_int_equal(calls, 0);
    tg_tensor *y = tg_batch_norm(x, TG_NONE, TG_NONE, TG_NONE, TG_NONE, true, 0.1f, 1e-5f);
    tg_tensor *g = NULL, *loss = tg_sum(tg_square(y));
    assert_int_equal(tg_grad(&loss, 1, &x, 1, NULL, true, &g), TG_ERR_STATE);
    assert_non_null(strstr(tg_last_error(), "synchronised batch norm"));
    tg_tape_end(tape);
    tg_batch_norm_set_reduce(NULL, NULL);
    tg_tensor_release(x);
    tg_tensor_release(rm);
    tg_tensor_release(rv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hook_2d),
        cmocka_unit_test(test_hook_4d),
        cmocka_unit_test(test_hook_eval_and_second_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
