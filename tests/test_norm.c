/* batch_norm, dropout, softmax, log_softmax and layer_norm (and the LayerNorm module): PyTorch
 * goldens (forward, gradients, running statistics), numerical stability, dropout statistics and
 * reproducibility, thread independence, error messages. */
#include "common.h"

#include "golden/norm_golden.h"
#include "nn.h"

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
    tg_tensor_release(x);
    tg_tensor_release(w);
    tg_tensor_release(b);
    tg_tensor_release(rm);
    tg_tensor_release(rv);
    tg_tensor_release(dy);
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
    tg_tensor *y =
        tg_batch_norm(x, TG_NONE, TG_NONE, TG_NONE, TG_NONE, true, 0.1f, NORM_GOLDEN_EPS);
    assert_non_null(y);
    assert_int_equal(tg_backward_grad(y, dy), TG_OK);
    /* want_y went through one more rounding (the subtraction and division above). */
    for (int64_t i = 0; i < numel; i++)
        assert_close(y->data[i], want_y[i], 2e-5 + 1e-4 * fabs(want_y[i]));
    assert_golden("no-affine dx", x->grad->data, g->train_dx, numel);
    tg_tape_end(tape);
    tg_tensor_release(x);
    tg_tensor_release(dy);
    free(want_y);
    free(dyw);
}

/* x[shape] ~ N(mean, std) and dy ~ N(0, 1), weight ~ U(0.5, 1.5) and bias ~ U(-1, 1) of
 * [nparam], drawn from seed in that order into t[0..3]; x, weight and bias require grad. */
static void norm_inputs(uint64_t seed, int ndim, const int64_t *shape, int64_t nparam, float mean,
                        float std, tg_tensor *t[4])
{
    tg_rng rng;
    tg_rng_seed(&rng, seed);
    t[0] = tg_tensor_new(ndim, shape), t[1] = tg_tensor_new(ndim, shape);
    t[2] = tg_tensor_new(TG_DIMS(nparam)), t[3] = tg_tensor_new(TG_DIMS(nparam));
    tg_tensor_normal_(t[0], &rng, mean, std);
    tg_tensor_normal_(t[1], &rng, 0.0f, 1.0f);
    tg_tensor_uniform_(t[2], &rng, 0.5f, 1.5f);
    tg_tensor_uniform_(t[3], &rng, -1.0f, 1.0f);
    for (int i = 0; i < 4; i++)
        assert_int_equal(i == 1 ? TG_OK : tg_tensor_set_requires_grad(t[i], true), TG_OK);
}

/* Back-propagates t[1] (norm_inputs' dy) from y, and keeps copies of y and of the gradients of
 * x, weight and bias (t[0], t[2], t[3]) in out[0..3]. */
static void backward_and_keep(tg_tensor *y, tg_tensor *const t[4], tg_tensor *out[4])
{
    assert_non_null(y);
    assert_int_equal(tg_backward_grad(y, t[1]), TG_OK);
    out[0] = tg_tensor_clone(y);
    for (int i = 0; i < 3; i++)
        out[i + 1] = tg_tensor_clone(t[i ? i + 1 : 0]->grad);
}

/* The double-precision reference of one normalised group of n values (a batch norm channel, a
 * layer norm row): xhat = (x - mean) / sqrt(var + eps) and, for g = dy * w, the input gradient
 * dx = (g - mean(g) - xhat mean(g xhat)) / sqrt(var + eps). */
static void normalise_ref(int64_t n, const double *x, const double *dy, const double *w, double eps,
                          double *xhat, double *dx)
{
    double mu = 0, var = 0, a = 0, k = 0;
    for (int64_t i = 0; i < n; i++)
        mu += x[i] / (double)n;
    for (int64_t i = 0; i < n; i++)
        var += (x[i] - mu) * (x[i] - mu) / (double)n;
    const double is = 1.0 / sqrt(var + eps);
    for (int64_t i = 0; i < n; i++) {
        xhat[i] = (x[i] - mu) * is;
        a += dy[i] * w[i] / (double)n;
        k += dy[i] * w[i] * xhat[i] / (double)n;
    }
    for (int64_t i = 0; i < n; i++)
        dx[i] = is * (dy[i] * w[i] - a - xhat[i] * k);
}

/* Channels of 7 runs of 145 values: their sums cross the kernels' float chunks in the middle of
 * runs and end in a partial chunk, and a mean of 1000 against a standard deviation of 1.5
 * makes any lost or twice-counted term show. y, dx, dweight and dbias against double. */
static void test_batch_norm_long_channels(void **state)
{
    (void)state;
    enum { N = 7, C = 3, H = 5, W = 29, S = H * W, M = N * S };
    tg_tensor *t[4];
    norm_inputs(5, 4, (const int64_t[]){N, C, H, W}, C, 1000.0f, 1.5f, t);
    tg_tensor *x = t[0], *dy = t[1], *w = t[2], *b = t[3];
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_batch_norm(x, w, b, TG_NONE, TG_NONE, true, 0.1f, 1e-5f);
    assert_non_null(y);
    assert_int_equal(tg_backward_grad(y, dy), TG_OK);
    static double xs[M], gs[M], ws[M], xhat[M], dx[M];
    for (int64_t c = 0; c < C; c++) {
        for (int64_t i = 0; i < M; i++) {
            const int64_t at = (i / S * C + c) * S + i % S;
            xs[i] = x->data[at], gs[i] = dy->data[at], ws[i] = w->data[c];
        }
        normalise_ref(M, xs, gs, ws, 1e-5, xhat, dx);
        double dw = 0, db = 0;
        for (int64_t i = 0; i < M; i++) {
            const int64_t at = (i / S * C + c) * S + i % S;
            const double want_y = xhat[i] * w->data[c] + b->data[c];
            assert_close(y->data[at], want_y, 1e-4 + 1e-4 * fabs(want_y));
            assert_close(x->grad->data[at], dx[i], 1e-5 + 1e-4 * fabs(dx[i]));
            dw += gs[i] * xhat[i];
            db += gs[i];
        }
        assert_close(w->grad->data[c], dw, 1e-3 + 1e-4 * fabs(dw));
        assert_close(b->grad->data[c], db, 1e-3 + 1e-4 * fabs(db));
    }
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_tensor_release(x);
    tg_tensor_release(dy);
    tg_tensor_release(w);
    tg_tensor_release(b);
}

/* One batch norm with an activation, fused (tg_batch_norm_act) or as two ops: y, then dx,
 * dweight, dbias and the running statistics into out[0..5] (caller releases). */
static void bn_act_run(bool fused, tg_act act, int ndim, const int64_t *shape, bool training,
                       tg_tensor *out[6])
{
    const int64_t C = shape[1];
    tg_tensor *t[4];
    norm_inputs(21, ndim, shape, C, 0.3f, 1.5f, t);
    tg_tensor *x = t[0], *dy = t[1], *w = t[2], *b = t[3];
    tg_rng rng;
    tg_rng_seed(&rng, 22);
    tg_tensor *rm = tg_tensor_new(TG_DIMS(C)), *rv = tg_tensor_new(TG_DIMS(C));
    tg_tensor_uniform_(rm, &rng, -0.5f, 0.5f);
    tg_tensor_uniform_(rv, &rng, 0.5f, 1.5f);
    const float slope = 0.2f;
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y;
    if (fused) {
        y = tg_batch_norm_act(x, w, b, rm, rv, training, 0.1f, 1e-5f, act, slope);
    } else {
        y = tg_batch_norm(x, w, b, rm, rv, training, 0.1f, 1e-5f);
        y = act == TG_ACT_RELU   ? tg_relu(y)
            : act == TG_ACT_TANH ? tg_tanh(y)
                                 : tg_leaky_relu(y, slope);
    }
    backward_and_keep(y, t, out);
    out[4] = tg_tensor_clone(rm);
    out[5] = tg_tensor_clone(rv);
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_tensor *all[6] = {x, dy, w, b, rm, rv};
    for (int i = 0; i < 6; i++)
        tg_tensor_release(all[i]);
}

/* tg_batch_norm_act against tg_batch_norm and the separate activation: the same bits for every
 * activation, both layouts, training and eval, up to runs of 1024 values; within rounding
 * beyond (its backward's sums then take a run in pieces). */
static void test_batch_norm_act_matches_two_ops(void **state)
{
    (void)state;
    static const int64_t s2[2] = {6, 70}, s4[4] = {4, 3, 7, 9}, big[4] = {2, 2, 33, 33};
    static const struct {
        int ndim;
        const int64_t *shape;
        bool exact;
    } shapes[] = {{2, s2, true}, {4, s4, true}, {4, big, false}};
    static const tg_act acts[] = {TG_ACT_RELU, TG_ACT_LEAKY_RELU, TG_ACT_TANH};
    static const char *const what[6] = {"y",     "dx",           "dweight",
                                        "dbias", "running_mean", "running_var"};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (size_t a = 0; a < sizeof acts / sizeof acts[0]; a++)
            for (int training = 0; training < 2; training++) {
                tg_tensor *one[6], *two[6];
                bn_act_run(true, acts[a], shapes[s].ndim, shapes[s].shape, training, one);
                bn_act_run(false, acts[a], shapes[s].ndim, shapes[s].shape, training, two);
                for (int k = 0; k < 6; k++) {
                    for (int64_t i = 0; i < one[k]->numel; i++) {
                        const float f = one[k]->data[i], t = two[k]->data[i];
                        const bool same = shapes[s].exact
                                              ? memcmp(&f, &t, sizeof f) == 0
                                              : fabsf(f - t) <= 1e-5f * (1.0f + fabsf(t));
                        if (!same)
                            fail_msg("act %d, shape %zu, training %d: %s[%lld] = %.9g fused, "
                                     "%.9g as two ops",
                                     (int)acts[a], s, training, what[k], (long long)i, (double)f,
                                     (double)t);
                    }
                    tg_tensor_release(one[k]);
                    tg_tensor_release(two[k]);
                }
            }
}

/* A leaky slope of 0 or below, or an act that is not a tg_act, is refused with its value. */
static void test_batch_norm_act_errors(void **state)
{
    (void)state;
    tg_tensor *x = tg_tensor_ones(TG_DIMS(4, 3));
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    assert_null(tg_batch_norm_act(x, TG_NONE, TG_NONE, TG_NONE, TG_NONE, true, 0.1f, 1e-5f,
                                  TG_ACT_LEAKY_RELU, 0.0f));
    assert_error_contains("tg_batch_norm_act: leaky_relu slope 0 must be finite and > 0");
    assert_null(tg_batch_norm_act(x, TG_NONE, TG_NONE, TG_NONE, TG_NONE, true, 0.1f, 1e-5f,
                                  (tg_act)7, 0.0f));
    assert_error_contains("tg_batch_norm_act: act 7 is not a tg_act");
    tg_tape_end(tape);
    tg_tensor_release(x);
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
    tg_tensor *y1 = tg_batch_norm(x1, w, TG_NONE, rm, rv, true, 0.5f, 1e-5f);
    tg_tensor *y2 = tg_batch_norm(x2, w, TG_NONE, rm, rv, true, 0.5f, 1e-5f);
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
    tg_tensor_release(dy1);
    tg_tensor_release(dy2);

    /* Two momentum-0.5 steps: rm = 0.25 * mean1 + 0.5 * mean2, checked on channel 0. */
    double m1 = 0, m2 = 0;
    for (int i = 0; i < 5; i++) {
        m1 += x1->data[2 * i] / 5.0;
        m2 += x2->data[2 * i] / 5.0;
    }
    assert_close(rm->data[0], 0.25 * m1 + 0.5 * m2, 1e-5);
    tg_tensor_release(x1);
    tg_tensor_release(x2);
    tg_tensor_release(w);
    tg_tensor_release(rm);
    tg_tensor_release(rv);
}

static void test_batch_norm_errors(void **state)
{
    (void)state;
    tg_tensor *x = tg_tensor_ones(TG_DIMS(4, 3)), *x1 = tg_tensor_ones(TG_DIMS(1, 3));
    tg_tensor *x1d = tg_tensor_ones(TG_DIMS(6)), *x4 = tg_tensor_ones(TG_DIMS(1, 3, 1, 1));
    tg_tensor *c3 = tg_tensor_ones(TG_DIMS(3)), *c4 = tg_tensor_ones(TG_DIMS(4));
    tg_tape *tape = tg_tape_begin(TG_GRAD);

    assert_null(tg_batch_norm(x1, TG_NONE, TG_NONE, TG_NONE, TG_NONE, true, 0.1f, 1e-5f));
    assert_int_equal(tg_last_status(), TG_ERR_SHAPE);
    assert_error_contains("tg_batch_norm: expected more than 1 value per channel when training, "
                          "got x [1, 3]");
    assert_null(tg_batch_norm(x4, TG_NONE, TG_NONE, TG_NONE, TG_NONE, true, 0.1f, 1e-5f));
    assert_error_contains("more than 1 value per channel when training, got x [1, 3, 1, 1]");
    /* One value per channel is fine in eval mode. */
    assert_non_null(tg_batch_norm(x1, TG_NONE, TG_NONE, c3, c3, false, 0.1f, 1e-5f));

    assert_null(tg_batch_norm(x1d, TG_NONE, TG_NONE, TG_NONE, TG_NONE, true, 0.1f, 1e-5f));
    assert_error_contains("tg_batch_norm: x [6] must be [N, C] or [N, C, H, W]");
    assert_null(tg_batch_norm(x, c4, TG_NONE, TG_NONE, TG_NONE, true, 0.1f, 1e-5f));
    assert_error_contains("tg_batch_norm: x [4, 3] has 3 channels; weight [4] must be [3]");
    assert_null(tg_batch_norm(x, c3, c4, TG_NONE, TG_NONE, true, 0.1f, 1e-5f));
    assert_error_contains("bias [4] must be [3]");
    assert_null(tg_batch_norm(x, TG_NONE, TG_NONE, c3, c4, true, 0.1f, 1e-5f));
    assert_error_contains("running_var [4] must be [3]");
    assert_null(tg_batch_norm(x, TG_NONE, TG_NONE, c3, TG_NONE, true, 0.1f, 1e-5f));
    assert_int_equal(tg_last_status(), TG_ERR_ARG);
    assert_error_contains("running_mean is given but running_var is TG_NONE; give both or "
                          "neither");
    assert_null(tg_batch_norm(x, TG_NONE, TG_NONE, TG_NONE, TG_NONE, false, 0.1f, 1e-5f));
    assert_error_contains("tg_batch_norm: eval mode (training = false) needs running_mean and "
                          "running_var");
    assert_null(tg_batch_norm(x, TG_NONE, TG_NONE, TG_NONE, TG_NONE, true, 1.5f, 1e-5f));
    assert_error_contains("tg_batch_norm: momentum = 1.5 is outside [0, 1]");
    assert_null(tg_batch_norm(x, TG_NONE, TG_NONE, TG_NONE, TG_NONE, true, 0.1f, -1.0f));
    assert_error_contains("tg_batch_norm: eps = -1 must be finite and >= 0");

    tg_tape_end(tape);
    tg_tensor_release(x);
    tg_tensor_release(x1);
    tg_tensor_release(x1d);
    tg_tensor_release(x4);
    tg_tensor_release(c3);
    tg_tensor_release(c4);
}

/* An optional input that is NULL because an earlier call failed is not "absent": batch_norm
 * fails and keeps that call's error (issue 14: it used to run without the input). A NULL with
 * no error pending names the input and TG_NONE. */
static void test_batch_norm_null_keeps_error(void **state)
{
    (void)state;
    tg_tensor *x = tg_tensor_ones(TG_DIMS(4, 3)), *c3 = tg_tensor_ones(TG_DIMS(3));
    static const char *const names[4] = {"weight", "bias", "running_mean", "running_var"};
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    for (int i = 0; i < 4; i++) {
        tg_tensor *v[4] = {c3, c3, c3, c3};
        tg_clear_error();
        v[i] = tg_reshape(c3, TG_DIMS(2, 2)); /* fails: 3 values into [2, 2] */
        assert_null(v[i]);
        char want[160];
        snprintf(want, sizeof want, "%s", tg_last_error());
        assert_non_null(strstr(want, "tg_reshape"));
        assert_null(tg_batch_norm(x, v[0], v[1], v[2], v[3], true, 0.1f, 1e-5f));
        if (strcmp(tg_last_error(), want) != 0)
            fail_msg("%s from a failed reshape: error \"%s\", expected the reshape's \"%s\"",
                     names[i], tg_last_error(), want);

        tg_clear_error();
        assert_null(tg_batch_norm(x, v[0], v[1], v[2], v[3], false, 0.1f, 1e-5f));
        assert_int_equal(tg_last_status(), TG_ERR_ARG);
        snprintf(want, sizeof want, "tg_batch_norm: %s is NULL (pass TG_NONE for none)", names[i]);
        assert_error_contains(want);
    }
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_tensor_release(x);
    tg_tensor_release(c3);
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
        tg_tensor_release(x);
        tg_tensor_release(dy);
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
    tg_tensor_release(x);
    tg_tensor_release(dy);
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
    tg_tensor_release(x);
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
    tg_tensor_release(dy);
    tg_tensor_release(x);
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
    tg_tensor_release(dy);
    tg_tensor_release(x);
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
    tg_tensor_release(x);
}

/* ---- layer_norm ------------------------------------------------------------------------ */

/* One layer_norm golden case from norm_golden.h; w, b, dw, db NULL without affine. */
typedef struct {
    const char *name;
    int ndim, k;
    const int64_t *shape;
    const float *x, *dy, *w, *b, *y, *dx, *dw, *db;
} ln_golden;

static const ln_golden ln_goldens[] = {
    {"ln1", LN1_NDIM, 1, ln1_shape, ln1_x, ln1_dy, ln1_w, ln1_b, ln1_y, ln1_dx, ln1_dw, ln1_db},
    {"ln2", LN2_NDIM, 2, ln2_shape, ln2_x, ln2_dy, ln2_w, ln2_b, ln2_y, ln2_dx, ln2_dw, ln2_db},
    {"ln0", LN0_NDIM, 1, ln0_shape, ln0_x, ln0_dy, NULL, NULL, ln0_y, ln0_dx, NULL, NULL},
};

static void test_layer_norm_golden(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof ln_goldens / sizeof ln_goldens[0]; i++) {
        const ln_golden *g = &ln_goldens[i];
        const int64_t *ns = g->shape + g->ndim - g->k;
        tg_tensor *x = test_tensor_of(g->ndim, g->shape, g->x, true);
        tg_tensor *dy = test_tensor_of(g->ndim, g->shape, g->dy, false);
        tg_tensor *w = g->w ? test_tensor_of(g->k, ns, g->w, true) : TG_NONE;
        tg_tensor *b = g->b ? test_tensor_of(g->k, ns, g->b, true) : TG_NONE;
        tg_tape *tape = tg_tape_begin(TG_GRAD);
        tg_tensor *y = tg_layer_norm(x, g->k, w, b, NORM_GOLDEN_EPS);
        if (!y)
            fail_msg("%s: %s", g->name, tg_last_error());
        assert_true(tg_shape_equal(y, x));
        assert_int_equal(tg_backward_grad(y, dy), TG_OK);
        char what[64];
        snprintf(what, sizeof what, "%s y", g->name);
        assert_golden(what, y->data, g->y, x->numel);
        snprintf(what, sizeof what, "%s dx", g->name);
        assert_golden(what, x->grad->data, g->dx, x->numel);
        if (g->w) {
            snprintf(what, sizeof what, "%s dweight", g->name);
            assert_golden(what, w->grad->data, g->dw, w->numel);
            snprintf(what, sizeof what, "%s dbias", g->name);
            assert_golden(what, b->grad->data, g->db, b->numel);
        }
        assert_int_equal(tg_tape_end(tape), TG_OK);
        tg_tensor_release(x);
        tg_tensor_release(dy);
        tg_tensor_release(w);
        tg_tensor_release(b);
    }
}

/* Forward and the three gradients of a layer norm over rows big enough to be split across
 * threads and into several chunks of the parameter gradients' sums; into *out (caller frees). */
static void layer_norm_run(int threads, int64_t R, int64_t D, tg_tensor *out[4])
{
    tg_set_num_threads(threads);
    tg_tensor *t[4];
    norm_inputs(11, 2, (const int64_t[]){R, D}, D, 3.0f, 2.0f, t);
    tg_tensor *x = t[0], *dy = t[1], *w = t[2], *b = t[3];
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    backward_and_keep(tg_layer_norm(x, 1, w, b, 1e-5f), t, out);
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_tensor_release(x);
    tg_tensor_release(dy);
    tg_tensor_release(w);
    tg_tensor_release(b);
    tg_set_num_threads(2);
}

/* Rows of 1100 values (two full float chunks of the sums and a partial one), with and without
 * a weight, mean 1000 against a standard deviation of 1.5: y and dx against double. */
static void test_layer_norm_long_rows(void **state)
{
    (void)state;
    enum { R = 3, D = 1100 };
    for (int affine = 0; affine < 2; affine++) {
        tg_rng rng;
        tg_rng_seed(&rng, 6);
        tg_tensor *x = tg_tensor_new(TG_DIMS(R, D)), *dy = tg_tensor_new(TG_DIMS(R, D));
        tg_tensor *w = tg_tensor_new(TG_DIMS(D));
        tg_tensor_normal_(x, &rng, 1000.0f, 1.5f);
        tg_tensor_normal_(dy, &rng, 0.0f, 1.0f);
        tg_tensor_uniform_(w, &rng, 0.5f, 1.5f);
        tg_tensor_set_requires_grad(x, true);
        tg_tape *tape = tg_tape_begin(TG_GRAD);
        tg_tensor *y = tg_layer_norm(x, 1, affine ? w : TG_NONE, TG_NONE, 1e-5f);
        assert_non_null(y);
        assert_int_equal(tg_backward_grad(y, dy), TG_OK);
        static double xs[D], gs[D], ws[D], xhat[D], dx[D];
        for (int64_t r = 0; r < R; r++) {
            for (int64_t j = 0; j < D; j++)
                xs[j] = x->data[r * D + j], gs[j] = dy->data[r * D + j],
                ws[j] = affine ? w->data[j] : 1.0;
            normalise_ref(D, xs, gs, ws, 1e-5, xhat, dx);
            for (int64_t j = 0; j < D; j++) {
                const double want_y = xhat[j] * ws[j];
                assert_close(y->data[r * D + j], want_y, 1e-4 + 1e-4 * fabs(want_y));
                assert_close(x->grad->data[r * D + j], dx[j], 1e-5 + 1e-4 * fabs(dx[j]));
            }
        }
        assert_int_equal(tg_tape_end(tape), TG_OK);
        tg_tensor_release(x);
        tg_tensor_release(dy);
        tg_tensor_release(w);
    }
}

/* The same bits for 1 and 2 threads (the parameter gradients are sums over rows). Also checks
 * every row of y has mean 0 and variance 1 before the affine map, i.e. (y - b) / w. */
static void test_layer_norm_threads(void **state)
{
    (void)state;
    const int64_t R = 1000, D = 96;
    tg_tensor *one[4], *two[4];
    layer_norm_run(1, R, D, one);
    layer_norm_run(2, R, D, two);
    static const char *const what[4] = {"y", "dx", "dweight", "dbias"};
    for (int i = 0; i < 4; i++) {
        if (memcmp(one[i]->data, two[i]->data, sizeof(float) * (size_t)one[i]->numel) != 0)
            fail_msg("layer_norm %s differs between 1 and 2 threads", what[i]);
        tg_tensor_release(one[i]);
        tg_tensor_release(two[i]);
    }
}

static void test_layer_norm_errors(void **state)
{
    (void)state;
    tg_tensor *x = tg_tensor_ones(TG_DIMS(2, 3, 4)), *w4 = tg_tensor_ones(TG_DIMS(4));
    tg_tensor *w3 = tg_tensor_ones(TG_DIMS(3)), *w34 = tg_tensor_ones(TG_DIMS(3, 4));
    tg_tape *tape = tg_tape_begin(TG_GRAD);

    assert_null(tg_layer_norm(x, 0, TG_NONE, TG_NONE, 1e-5f));
    assert_int_equal(tg_last_status(), TG_ERR_ARG);
    assert_error_contains("tg_layer_norm: ndim_norm = 0 is out of range for x [2, 3, 4]: it "
                          "normalises the last 1 .. 3 axes");
    assert_null(tg_layer_norm(x, 4, TG_NONE, TG_NONE, 1e-5f));
    assert_error_contains("ndim_norm = 4 is out of range");
    assert_null(tg_layer_norm(x, 1, w3, TG_NONE, 1e-5f));
    assert_int_equal(tg_last_status(), TG_ERR_SHAPE);
    assert_error_contains("tg_layer_norm: weight [3] must have the normalised shape [4] (the "
                          "last 1 axes of x [2, 3, 4])");
    assert_null(tg_layer_norm(x, 2, w34, w4, 1e-5f));
    assert_error_contains("tg_layer_norm: bias [4] must have the normalised shape [3, 4]");
    assert_null(tg_layer_norm(x, 1, w4, w4, -1e-3f));
    assert_error_contains("tg_layer_norm: eps = -0.001 must be finite and >= 0");
    assert_null(tg_layer_norm(x, 1, w4, w4, NAN));
    assert_error_contains("must be finite");

    /* NULL: a failed call's result keeps its error; with none pending, says what to pass. */
    tg_clear_error();
    assert_null(tg_layer_norm(x, 1, tg_reshape(w4, TG_DIMS(3)), TG_NONE, 1e-5f));
    assert_error_contains("tg_reshape");
    tg_clear_error();
    assert_null(tg_layer_norm(x, 1, w4, tg_reshape(w4, TG_DIMS(5)), 1e-5f));
    assert_error_contains("tg_reshape");
    tg_clear_error();
    assert_null(tg_layer_norm(x, 1, TG_NONE, NULL, 1e-5f));
    assert_int_equal(tg_last_status(), TG_ERR_ARG);
    assert_error_contains("tg_layer_norm: bias is NULL (pass TG_NONE for none)");
    /* x itself may not be TG_NONE. */
    assert_null(tg_layer_norm(TG_NONE, 1, TG_NONE, TG_NONE, 1e-5f));
    assert_error_contains("TG_NONE");

    /* Constant rows: variance 0, y = bias (finite thanks to eps), dx finite. */
    tg_tensor_set_requires_grad(x, true);
    tg_tensor *y = tg_layer_norm(x, 2, w34, w34, 1e-5f);
    assert_non_null(y);
    for (int64_t i = 0; i < y->numel; i++)
        assert_close(y->data[i], 1.0, 0);
    assert_int_equal(tg_backward(tg_sum(tg_mul(y, y))), TG_OK);
    for (int64_t i = 0; i < x->numel; i++)
        assert_true(isfinite(x->grad->data[i]));

    tg_tape_end(tape);
    tg_tensor_release(x);
    tg_tensor_release(w3);
    tg_tensor_release(w4);
    tg_tensor_release(w34);
}

/* Empty inputs: no rows (the parameter gradients are sums of nothing: 0), or empty rows. */
static void test_layer_norm_empty(void **state)
{
    (void)state;
    tg_tensor *x = tg_tensor_zeros(TG_DIMS(0, 5)), *w = tg_tensor_ones(TG_DIMS(5));
    tg_tensor *xe = tg_tensor_zeros(TG_DIMS(3, 0));
    /* 2^40 rows of nothing, 2^40-value rows and none of them: no statistics to keep. */
    tg_tensor *xr = tg_tensor_zeros(TG_DIMS((int64_t)1 << 40, 0));
    tg_tensor *xd = tg_tensor_zeros(TG_DIMS(0, (int64_t)1 << 40));
    assert_true(xr && xd);
    tg_tensor_set_requires_grad(xr, true);
    tg_tensor_set_requires_grad(xd, true);
    tg_tensor_set_requires_grad(x, true);
    tg_tensor_set_requires_grad(w, true);
    tg_tensor_set_requires_grad(xe, true);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_layer_norm(x, 1, w, w, 1e-5f);
    tg_tensor *ye = tg_layer_norm(xe, 1, TG_NONE, TG_NONE, 1e-5f);
    tg_tensor *yr = tg_layer_norm(xr, 1, TG_NONE, TG_NONE, 1e-5f);
    tg_tensor *yd = tg_layer_norm(xd, 1, TG_NONE, TG_NONE, 1e-5f);
    if (!y || !ye || !yr || !yd)
        fail_msg("%s", tg_last_error());
    assert_int_equal(yr->shape[0], (int64_t)1 << 40);
    assert_int_equal(tg_backward(tg_add(tg_sum(y), tg_sum(ye))), TG_OK);
    assert_int_equal(tg_backward(tg_sum(yr)), TG_OK);
    /* No rows and no affine: nothing to do, not 2^40 steps of nothing. */
    assert_int_equal(tg_backward(tg_sum(yd)), TG_OK);
    for (int i = 0; i < 5; i++)
        assert_true(w->grad->data[i] == 0.0f);
    tg_tape_end(tape);
    tg_tensor_release(x);
    tg_tensor_release(w);
    tg_tensor_release(xe);
    tg_tensor_release(xr);
    tg_tensor_release(xd);
}

/* LayerNorm: PyTorch's parameter names and initial values, the op's result, the shape check
 * of its forward, and argument errors. */
static void test_layer_norm_module(void **state)
{
    (void)state;
    const ln_golden *g = &ln_goldens[1]; /* [3, 4, 6] over the last two axes */
    tg_module *m = tg_nn_layer_norm(2, g->shape + 1, NORM_GOLDEN_EPS, true);
    assert_non_null(m);
    assert_string_equal(tg_module_type(m), "LayerNorm");
    tg_tensor *w = tg_module_param(m, "weight"), *b = tg_module_param(m, "bias");
    assert_non_null(w);
    assert_non_null(b);
    assert_int_equal(w->ndim, 2);
    assert_int_equal(w->shape[0], 4);
    assert_int_equal(w->shape[1], 6);
    for (int64_t i = 0; i < w->numel; i++)
        assert_true(w->data[i] == 1.0f && b->data[i] == 0.0f);
    memcpy(w->data, g->w, sizeof(float) * (size_t)w->numel);
    memcpy(b->data, g->b, sizeof(float) * (size_t)b->numel);
    tg_tensor *x = test_tensor_of(g->ndim, g->shape, g->x, true);
    tg_tensor *dy = test_tensor_of(g->ndim, g->shape, g->dy, false);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_module_forward(m, x);
    if (!y)
        fail_msg("%s", tg_last_error());
    assert_int_equal(tg_backward_grad(y, dy), TG_OK);
    assert_golden("LayerNorm y", y->data, g->y, y->numel);
    assert_golden("LayerNorm dweight", w->grad->data, g->dw, w->numel);
    assert_golden("LayerNorm dbias", b->grad->data, g->db, b->numel);

    /* The normalised shape is checked even without affine parameters. */
    tg_module *plain = tg_nn_layer_norm(TG_DIMS(5), 1e-5f, false);
    assert_non_null(plain);
    assert_false(tg_module_has_param(plain, "weight"));
    assert_null(tg_module_forward(plain, x));
    assert_int_equal(tg_last_status(), TG_ERR_SHAPE);
    assert_error_contains("LayerNorm \"\" over [5] got x [3, 4, 6]; its last 1 axes must be "
                          "[5]");
    tg_tape_end(tape);

    assert_null(tg_nn_layer_norm(0, (const int64_t[]){5}, 1e-5f, true));
    assert_error_contains("tg_nn_layer_norm: ndim 0");
    assert_null(tg_nn_layer_norm(1, NULL, 1e-5f, true));
    assert_error_contains("with a NULL shape");
    assert_null(tg_nn_layer_norm(TG_DIMS(3, 0), 1e-5f, true));
    assert_error_contains("tg_nn_layer_norm: shape [3, 0]: every size must be at least 1");
    assert_null(tg_nn_layer_norm(TG_DIMS(3), -1.0f, true));
    assert_error_contains("tg_nn_layer_norm: eps = -1 must be finite and >= 0");

    tg_module_free(m);
    tg_module_free(plain);
    tg_tensor_release(x);
    tg_tensor_release(dy);
}

/* tg_batch_norm_set_running_updates(k): one training forward leaves the running statistics of
 * k forwards on the same batch, bit for bit, and nn's BatchNorm counts k batches; k < 1 is
 * refused, naming the function and the value, and changes nothing. */
static void test_batch_norm_running_updates(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 5);
    tg_tensor *x = tg_tensor_new(TG_DIMS(4, 3, 5, 5));
    assert_non_null(x);
    tg_tensor_uniform_(x, &rng, -2.0f, 3.0f);
    tg_tensor *rm[2], *rv[2];
    for (int k = 0; k < 2; k++) {
        rm[k] = tg_tensor_zeros(TG_DIMS(3));
        rv[k] = tg_tensor_ones(TG_DIMS(3));
        assert_non_null(rm[k]);
        assert_non_null(rv[k]);
    }
    /* [0]: three forwards; [1]: one forward with k = 3 */
    for (int f = 0; f < 4; f++) {
        const int k = f < 3 ? 0 : 1;
        if (k == 1)
            assert_int_equal(tg_batch_norm_set_running_updates(3), TG_OK);
        tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
        assert_non_null(tg_batch_norm(x, TG_NONE, TG_NONE, rm[k], rv[k], true, 0.1f, 1e-5f));
        tg_tape_end(tape);
    }
    assert_int_equal(tg_batch_norm_running_updates(), 3);
    assert_memory_equal(rm[0]->data, rm[1]->data, 3 * sizeof(float));
    assert_memory_equal(rv[0]->data, rv[1]->data, 3 * sizeof(float));
    tg_module *bn = tg_nn_batch_norm2d(3);
    assert_non_null(bn);
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    assert_non_null(tg_module_forward(bn, x));
    tg_tape_end(tape);
    assert_float_equal(tg_module_buffer(bn, "num_batches_tracked")->data[0], 3.0f, 0.0f);
    assert_int_equal(tg_batch_norm_set_running_updates(1), TG_OK);
    /* one forward at k = 1 is not three */
    tg_tape *one = tg_tape_begin(TG_NO_GRAD);
    assert_non_null(tg_batch_norm(x, TG_NONE, TG_NONE, rm[1], rv[1], true, 0.1f, 1e-5f));
    tg_tape_end(one);
    assert_true(memcmp(rm[0]->data, rm[1]->data, 3 * sizeof(float)) != 0);
    assert_int_equal(tg_batch_norm_set_running_updates(0), TG_ERR_ARG);
    assert_non_null(strstr(tg_last_error(), "tg_batch_norm_set_running_updates: k = 0"));
    assert_int_equal(tg_batch_norm_running_updates(), 1);
    tg_module_free(bn);
    for (int k = 0; k < 2; k++) {
        tg_tensor_release(rm[k]);
        tg_tensor_release(rv[k]);
    }
    tg_tensor_release(x);
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
        TG_TEST(test_dropout_errors),          TG_TEST(test_batch_norm_null_keeps_error),
        TG_TEST(test_layer_norm_golden),       TG_TEST(test_layer_norm_threads),
        TG_TEST(test_layer_norm_errors),       TG_TEST(test_layer_norm_empty),
        TG_TEST(test_layer_norm_module),       TG_TEST(test_batch_norm_long_channels),
        TG_TEST(test_layer_norm_long_rows),    TG_TEST(test_batch_norm_act_matches_two_ops),
        TG_TEST(test_batch_norm_act_errors),   TG_TEST(test_batch_norm_running_updates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
