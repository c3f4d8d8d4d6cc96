/* batch_norm, dropout, softmax and log_softmax: PyTorch goldens (forward, gradients, running
 * statistics), numerical stability, dropout statistics and reproducibility, error messages. */
#include "common.h"

#include "golden/norm_golden.h"

#include <stdio.h>
#include <stdlib.h>

/* ---- batch_norm ------------------------------------------------------------------------ */

/* One batch_norm golden case from norm_golden.h. */
typedef struct {
    const char *name;
    int ndim;
    const int64_t *shape;
    const float *x, *w, *b, *rm0, *rv0, *dy;
    const float *train_y, *train_dx, *train_dw, *train_db, *train_rm, *train_rv;
    const float *eval_y, *eval_dx, *eval_dw, *eval_db;
} bn_golden;

#define BN_GOLDEN(p, P)                                                                            \
    {                                                                                              \
#p, P##_NDIM, p##_shape, p##_x, p##_w, p##_b, p##_rm0, p##_rv0, p##_dy, p##_train_y,       \
            p##_train_dx, p##_train_dw, p##_train_db, p##_train_rm, p##_train_rv, p##_eval_y,      \
            p##_eval_dx, p##_eval_dw, p##_eval_db                                                  \
    }

static const bn_golden bn_goldens[] = {BN_GOLDEN(bn4, BN4), BN_GOLDEN(bn2, BN2)};

static void run_bn_golden(const bn_golden *g, bool training)
{
    int64_t C = g->shape[1];
    tg_tensor *x = test_tensor_of(g->ndim, g->shape, g->x, true);
    tg_tensor *w = test_tensor_of(1, &C, g->w, true);
    tg_tensor *b = test_tensor_of(1, &C, g->b, true);
    tg_tensor *rm = test_tensor_of(1, &C, g->rm0, false);
    tg_tensor *rv = test_tensor_of(1, &C, g->rv0, false);
    tg_tensor *dy = test_tensor_of(g->ndim, g->shape, g->dy, false);
    uint64_t vm = tg_tensor_version(rm), vv = tg_tensor_version(rv);

    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_batch_norm(x, w, b, rm, rv, training, NORM_GOLDEN_MOMENTUM, NORM_GOLDEN_EPS);
    if (!y)
        fail_msg("%s: %s", g->name, tg_last_error());
    assert_true(tg_shape_equal(y, x));
    assert_int_equal(tg_backward_grad(y, dy), TG_OK);
    char what[64];
    snprintf(what, sizeof what, "%s %s y", g->name, training ? "train" : "eval");
    assert_golden(what, y->data, training ? g->train_y : g->eval_y, x->numel);
    snprintf(what, sizeof what, "%s %s dx", g->name, training ? "train" : "eval");
    assert_golden(what, x->grad->data, training ? g->train_dx : g->eval_dx, x->numel);
    snprintf(what, sizeof what, "%s %s dweight", g->name, training ? "train" : "eval");
    assert_golden(what, w->grad->data, training ? g->train_dw : g->eval_dw, C);
    snprintf(what, sizeof what, "%s %s dbias", g->name, training ? "train" : "eval");
    assert_golden(what, b->grad->data, training ? g->train_db : g->eval_db, C);
    if (training) {
        assert_golden("running_mean after the step", rm->data, g->train_rm, C);
        assert_golden("running_var after the step", rv->data, g->train_rv, C);
        assert_true(tg_tensor_version(rm) > vm);
        assert_true(tg_tensor_version(rv) > vv);
    } else {
        /* Eval reads the running statistics and leaves them alone. */
        assert_memory_equal(rm->data, g->rm0, (size_t)C * sizeof(float));
        assert_memory_equal(rv->data, g->rv0, (size_t)C * sizeof(float));
        assert_true(tg_tensor_version(rm) == vm && tg_tensor_version(rv) == vv);
    }
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_release(x);
    tg_release(w);
    tg_release(b);
    tg_release(rm);
    tg_release(rv);
    tg_release(dy);
}

static void test_batch_norm_golden_train(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bn_goldens / sizeof bn_goldens[0]; i++)
        run_bn_golden(&bn_goldens[i], true);
}

static void test_batch_norm_golden_eval(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bn_goldens / sizeof bn_goldens[0]; i++)
        run_bn_golden(&bn_goldens[i], false);
}

/* Without affine, y = xhat = (y_golden - b) / w; and since dx is linear in dy * w, feeding
 * dy * w[c] to the affine-free op must give the golden dx. No running buffers either. */
static void test_batch_norm_no_affine(void **state)
{
    (void)state;
    const bn_golden *g = &bn_goldens[0];
    int64_t C = g->shape[1], S = 1, numel = 1;
    for (int d = 0; d < g->ndim; d++)
        numel *= g->shape[d];
    S = numel / (g->shape[0] * C);
    float *want_y = malloc((size_t)numel * sizeof(float));
    float *dyw = malloc((size_t)numel * sizeof(float));
    for (int64_t i = 0; i < numel; i++) {
        int64_t c = i / S % C;
        want_y[i] = (g->train_y[i] - g->b[c]) / g->w[c];
        dyw[i] = g->dy[i] * g->w[c];
    }
    tg_tensor *x = test_tensor_of(g->ndim, g->shape, g->x, true);
    tg_tensor *dy = test_tensor_of(g->ndim, g->shape, dyw, false);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_batch_norm(x, NULL, NULL, NULL, NULL, true, 0.1f, NORM_GOLDEN_EPS);
    assert_non_null(y);
    assert_int_equal(tg_backward_grad(y, dy), TG_OK);
    /* want_y went through one more rounding (the subtraction and division above). */
    for (int64_t i = 0; i < numel; i++)
        assert_close(y->data[i], want_y[i], 2e-5 + 1e-4 * fabs(want_y[i]));
    assert_golden("no-affine dx", x->grad->data, g->train_dx, numel);
    tg_tape_end(tape);
    tg_release(x);
    tg_release(dy);
    free(want_y);
    free(dyw);
}

/* The running buffers are not op inputs: a discriminator applied to two batches on one tape
 * updates them twice, and backward through both applications still works. */
static void test_batch_norm_two_calls_one_tape(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 7);
    tg_tensor *x1 = tg_tensor_new(TG_DIMS(5, 2));
    tg_tensor *x2 = tg_tensor_new(TG_DIMS(5, 2));
    tg_tensor_normal_(x1, &rng, 1.0f, 2.0f);
    tg_tensor_normal_(x2, &rng, -1.0f, 0.5f);
    tg_tensor *w = tg_tensor_ones(TG_DIMS(2));
    tg_tensor_set_requires_grad(w, true);
    tg_tensor *rm = tg_tensor_zeros(TG_DIMS(2)), *rv = tg_tensor_ones(TG_DIMS(2));

    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y1 = tg_batch_norm(x1, w, NULL, rm, rv, true, 0.5f, 1e-5f);
    tg_tensor *y2 = tg_batch_norm(x2, w, NULL, rm, rv, true, 0.5f, 1e-5f);
    assert_non_null(y1);
    assert_non_null(y2);
    /* L = sum(y1^2): dy1 = 2 y1. Backward through the first call, whose running buffers the
     * second call has since changed in place. */
    tg_tensor *dy1 = tg_tensor_clone(y1);
    for (int64_t i = 0; i < dy1->numel; i++)
        dy1->data[i] *= 2.0f;
    if (tg_backward_grad(y1, dy1) != TG_OK)
        fail_msg("%s", tg_last_error());
    /* sum(xhat^2) = m = 5 per channel, so dL/dw = 2 * 5. */
    assert_close(w->grad->data[0], 10.0, 1e-4);
    assert_close(w->grad->data[1], 10.0, 1e-4);
    tg_tensor *dy2 = tg_tensor_ones(TG_DIMS(5, 2));
    assert_int_equal(tg_backward_grad(y2, dy2), TG_OK);
    tg_tape_end(tape);
    tg_release(dy1);
    tg_release(dy2);

    /* Two momentum-0.5 steps: rm = 0.25 * mean1 + 0.5 * mean2, checked on channel 0. */
    double m1 = 0, m2 = 0;
    for (int i = 0; i < 5; i++) {
        m1 += x1->data[2 * i] / 5.0;
        m2 += x2->data[2 * i] / 5.0;
    }
    assert_close(rm->data[0], 0.25 * m1 + 0.5 * m2, 1e-5);
    tg_release(x1);
    tg_release(x2);
    tg_release(w);
    tg_release(rm);
    tg_release(rv);
}

static void test_batch_norm_errors(void **state)
{
    (void)state;
    tg_tensor *x = tg_tensor_ones(TG_DIMS(4, 3)), *x1 = tg_tensor_ones(TG_DIMS(1, 3));
    tg_tensor *x1d = tg_tensor_ones(TG_DIMS(6)), *x4 = tg_tensor_ones(TG_DIMS(1, 3, 1, 1));
    tg_tensor *c3 = tg_tensor_ones(TG_DIMS(3)), *c4 = tg_tensor_ones(TG_DIMS(4));
    tg_tape *tape = tg_tape_begin(TG_GRAD);

    assert_null(tg_batch_norm(x1, NULL, NULL, NULL, NULL, true, 0.1f, 1e-5f));
    assert_int_equal(tg_last_status(), TG_ERR_SHAPE);
    assert_error_contains("tg_batch_norm: expected more than 1 value per channel when training, "
                          "got x [1, 3]");
    assert_null(tg_batch_norm(x4, NULL, NULL, NULL, NULL, true, 0.1f, 1e-5f));
    assert_error_contains("more than 1 value per channel when training, got x [1, 3, 1, 1]");
    /* One value per channel is fine in eval mode. */
    assert_non_null(tg_batch_norm(x1, NULL, NULL, c3, c3, false, 0.1f, 1e-5f));

    assert_null(tg_batch_norm(x1d, NULL, NULL, NULL, NULL, true, 0.1f, 1e-5f));
    assert_error_contains("tg_batch_norm: x [6] must be [N, C] or [N, C, H, W]");
    assert_null(tg_batch_norm(x, c4, NULL, NULL, NULL, true, 0.1f, 1e-5f));
    assert_error_contains("tg_batch_norm: x [4, 3] has 3 channels; weight [4] must be [3]");
    assert_null(tg_batch_norm(x, c3, c4, NULL, NULL, true, 0.1f, 1e-5f));
    assert_error_contains("bias [4] must be [3]");
    assert_null(tg_batch_norm(x, NULL, NULL, c3, c4, true, 0.1f, 1e-5f));
    assert_error_contains("running_var [4] must be [3]");
    assert_null(tg_batch_norm(x, NULL, NULL, c3, NULL, true, 0.1f, 1e-5f));
    assert_int_equal(tg_last_status(), TG_ERR_ARG);
    assert_error_contains("running_mean is given but running_var is NULL; give both or neither");
    assert_null(tg_batch_norm(x, NULL, NULL, NULL, NULL, false, 0.1f, 1e-5f));
    assert_error_contains("tg_batch_norm: eval mode (training = false) needs running_mean and "
                          "running_var");
    assert_null(tg_batch_norm(x, NULL, NULL, NULL, NULL, true, 1.5f, 1e-5f));
    assert_error_contains("tg_batch_norm: momentum = 1.5 is outside [0, 1]");
    assert_null(tg_batch_norm(x, NULL, NULL, NULL, NULL, true, 0.1f, -1.0f));
    assert_error_contains("tg_batch_norm: eps = -1 must be finite and >= 0");

    tg_tape_end(tape);
    tg_release(x);
    tg_release(x1);
    tg_release(x1d);
    tg_release(x4);
    tg_release(c3);
    tg_release(c4);
}

/* ---- softmax / log_softmax ------------------------------------------------------------- */

static void test_softmax_golden(void **state)
{
    (void)state;
    struct {
        bool log;
        int axis;
        const float *y, *dx;
    } cases[] = {
        {false, 1, sm_softmax_axis1_y, sm_softmax_axis1_dx},
        {false, -1, sm_softmax_axis_last_y, sm_softmax_axis_last_dx},
        {true, 1, sm_log_softmax_axis1_y, sm_log_softmax_axis1_dx},
        {true, -1, sm_log_softmax_axis_last_y, sm_log_softmax_axis_last_dx},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        tg_tensor *x = test_tensor_of(SM_NDIM, sm_shape, sm_x, true);
        tg_tensor *dy = test_tensor_of(SM_NDIM, sm_shape, sm_dy, false);
        tg_tape *tape = tg_tape_begin(TG_GRAD);
        tg_tensor *y =
            cases[k].log ? tg_log_softmax(x, cases[k].axis) : tg_softmax(x, cases[k].axis);
        assert_non_null(y);
        assert_int_equal(tg_backward_grad(y, dy), TG_OK);
        char what[64];
        snprintf(what, sizeof what, "%s axis %d y", cases[k].log ? "log_softmax" : "softmax",
                 cases[k].axis);
        assert_golden(what, y->data, cases[k].y, x->numel);
        snprintf(what, sizeof what, "%s axis %d dx", cases[k].log ? "log_softmax" : "softmax",
                 cases[k].axis);
        assert_golden(what, x->grad->data, cases[k].dx, x->numel);
        tg_tape_end(tape);
        tg_release(x);
        tg_release(dy);
    }
}

/* Logits 1000 apart: a naive e^x overflows to inf and gives NaN. */
static void test_softmax_stable(void **state)
{
    (void)state;
    tg_tensor *x = test_tensor_of(TG_DIMS(2, 2), (const float[]){1000, 0, -1000, -1000}, true);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_softmax(x, -1), *ly = tg_log_softmax(x, 1);
    assert_non_null(y);
    assert_non_null(ly);
    const float want_y[] = {1, 0, 0.5f, 0.5f};
    const float want_ly[] = {0, -1000, -0.69314718f, -0.69314718f};
    for (int i = 0; i < 4; i++) {
        assert_close(y->data[i], want_y[i], 1e-7);
        assert_close(ly->data[i], want_ly[i], 1e-6);
    }
    /* d sum(log_softmax * [1, 0]) / dx = [1, 0] - softmax = [0, 0] on row 0: finite. */
    tg_tensor *dy = test_tensor_of(TG_DIMS(2, 2), (const float[]){1, 0, 1, 0}, false);
    assert_int_equal(tg_backward_grad(ly, dy), TG_OK);
    const float want_dx[] = {0, 0, 0.5f, -0.5f};
    for (int i = 0; i < 4; i++)
        assert_close(x->grad->data[i], want_dx[i], 1e-7);
    tg_tape_end(tape);
    tg_release(x);
    tg_release(dy);
}

static void test_softmax_axis_error(void **state)
{
    (void)state;
    tg_tensor *x = tg_tensor_ones(TG_DIMS(2, 3, 4));
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    assert_null(tg_softmax(x, 3));
    assert_int_equal(tg_last_status(), TG_ERR_ARG);
    assert_error_contains("tg_softmax: axis 3 is out of range for x [2, 3, 4] (3 axes)");
    assert_null(tg_log_softmax(x, -4));
    assert_error_contains("tg_log_softmax: axis -4 is out of range for x [2, 3, 4] (3 axes)");
    /* Rows along a middle axis each sum to 1. */
    tg_tensor_uniform_(x, &(tg_rng){.s = {1, 2, 3, 4}}, -5.0f, 5.0f);
    tg_tensor *y = tg_softmax(x, -2);
    assert_non_null(y);
    for (int a = 0; a < 2; a++)
        for (int c = 0; c < 4; c++) {
            double s = 0;
            for (int b = 0; b < 3; b++)
                s += y->data[(a * 3 + b) * 4 + c];
            assert_close(s, 1.0, 1e-6);
        }
    tg_tape_end(tape);
    tg_release(x);
}

/* ---- dropout --------------------------------------------------------------------------- */

#define DROP_N 100000

/* About p of the elements are zeroed; the kept ones are x * (1/(1-p)) exactly; the mask is
 * the element-wise u_i < p of the rng's stream, so a seed reproduces it; the caller's rng is
 * left after those draws. */
static void test_dropout_statistics(void **state)
{
    (void)state;
    const float p = 0.3f, scale = 1.0f / (1.0f - p);
    tg_rng rng, ref, again;
    tg_rng_seed(&rng, 42);
    tg_rng_seed(&ref, 42);
    tg_rng_seed(&again, 42);
    tg_tensor *x = tg_tensor_new(TG_DIMS(100, DROP_N / 100));
    tg_rng xr;
    tg_rng_seed(&xr, 5);
    tg_tensor_uniform_(x, &xr, 0.5f, 2.0f);
    tg_tensor_set_requires_grad(x, true);

    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_dropout(x, p, true, &rng);
    assert_non_null(y);
    int64_t zeros = 0;
    for (int64_t i = 0; i < DROP_N; i++) {
        bool dropped = tg_rng_uniform01(&ref) < p;
        if (dropped) {
            zeros++;
            assert_true(y->data[i] == 0.0f);
        } else if (y->data[i] != x->data[i] * scale) {
            fail_msg("kept element %lld is %.9g, expected x * 1/(1-p) = %.9g", (long long)i,
                     (double)y->data[i], (double)(x->data[i] * scale));
        }
    }
    /* Binomial(1e5, 0.3): standard deviation 145; allow 5 of them. */
    if (llabs(zeros - (int64_t)(p * DROP_N)) > 5 * 145)
        fail_msg("%lld of %d elements zeroed, expected about %d", (long long)zeros, DROP_N,
                 (int)(p * DROP_N));
    /* The caller's rng moved past the mask's draws, exactly. */
    assert_int_equal(tg_rng_u32(&rng), tg_rng_u32(&ref));

    /* Same seed, same mask. */
    tg_tensor *y2 = tg_dropout(x, p, true, &again);
    assert_memory_equal(y->data, y2->data, sizeof(float) * DROP_N);

    /* Backward: dy * 1/(1-p) where kept, 0 where dropped. */
    tg_tensor *dy = tg_tensor_full(TG_DIMS(100, DROP_N / 100), 3.0f);
    assert_int_equal(tg_backward_grad(y, dy), TG_OK);
    for (int64_t i = 0; i < DROP_N; i++)
        assert_true(x->grad->data[i] == (y->data[i] == 0.0f ? 0.0f : 3.0f * scale));
    tg_tape_end(tape);
    tg_release(dy);
    tg_release(x);
}

static void test_dropout_identity(void **state)
{
    (void)state;
    tg_tensor *x = test_tensor_of(TG_DIMS(2, 3), (const float[]){1, -2, 3, 4, 0.5f, -6}, true);
    tg_rng rng, before;
    tg_rng_seed(&rng, 3);
    before = rng;
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *ye = tg_dropout(x, 0.5f, false, NULL); /* eval needs no rng */
    tg_tensor *y0 = tg_dropout(x, 0.0f, true, &rng);  /* p = 0 draws nothing */
    assert_non_null(ye);
    assert_non_null(y0);
    assert_true(ye != x && y0 != x);
    assert_memory_equal(ye->data, x->data, sizeof(float) * 6);
    assert_memory_equal(y0->data, x->data, sizeof(float) * 6);
    assert_memory_equal(&rng, &before, sizeof rng);
    /* dx = dy from each; the two backwards accumulate. */
    tg_tensor *dy = test_tensor_of(TG_DIMS(2, 3), (const float[]){1, 2, 3, 4, 5, 6}, false);
    assert_int_equal(tg_backward_grad(ye, dy), TG_OK);
    assert_int_equal(tg_backward_grad(y0, dy), TG_OK);
    for (int i = 0; i < 6; i++)
        assert_close(x->grad->data[i], 2.0 * (i + 1), 0);
    tg_tape_end(tape);
    tg_release(dy);
    tg_release(x);
}

static void test_dropout_errors(void **state)
{
    (void)state;
    tg_tensor *x = tg_tensor_ones(TG_DIMS(4));
    tg_rng rng;
    tg_rng_seed(&rng, 1);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    assert_null(tg_dropout(x, 1.0f, true, &rng));
    assert_int_equal(tg_last_status(), TG_ERR_ARG);
    assert_error_contains("tg_dropout: p = 1 is outside [0, 1)");
    assert_null(tg_dropout(x, -0.25f, false, NULL));
    assert_error_contains("tg_dropout: p = -0.25 is outside [0, 1)");
    assert_null(tg_dropout(x, NAN, true, &rng));
    assert_error_contains("is outside [0, 1)");
    assert_null(tg_dropout(x, 0.5f, true, NULL));
    assert_error_contains("tg_dropout: rng is NULL; training with p = 0.5 draws the mask");
    tg_tape_end(tape);
    tg_release(x);
}

int main(void)
{
    tg_set_num_threads(2);
    const struct CMUnitTest tests[] = {
        TG_TEST(test_batch_norm_golden_train), TG_TEST(test_batch_norm_golden_eval),
        TG_TEST(test_batch_norm_no_affine),    TG_TEST(test_batch_norm_two_calls_one_tape),
        TG_TEST(test_batch_norm_errors),       TG_TEST(test_softmax_golden),
        TG_TEST(test_softmax_stable),          TG_TEST(test_softmax_axis_error),
        TG_TEST(test_dropout_statistics),      TG_TEST(test_dropout_identity),
        TG_TEST(test_dropout_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
