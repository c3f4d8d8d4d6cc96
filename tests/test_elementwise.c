/* Elementwise ops: forward values, broadcasting shapes and values, errors, NULL propagation,
 * extreme inputs, thread-count independence and gradients summed over broadcast axes; PyTorch
 * goldens for the activations (GELU both forms, SiLU, softplus) and their modules. The
 * derivatives of every op are gradchecked from elementwise.def by test_gradcheck. */
#include "common.h"

#include "golden/elementwise_golden.h"
#include "nn.h"

#include <stdio.h>
#include <stdlib.h>

#define N_OF(arr) ((int64_t)(sizeof(arr) / sizeof((arr)[0])))

typedef tg_tensor *(*unary_fn)(tg_tensor *);
typedef tg_tensor *(*binary_fn)(tg_tensor *, tg_tensor *);

/* Asserts that t has the given shape. */
static void assert_shape(const tg_tensor *t, int ndim, const int64_t *shape)
{
    assert_non_null(t);
    assert_int_equal(t->ndim, ndim);
    for (int d = 0; d < ndim; d++)
        assert_int_equal(t->shape[d], shape[d]);
}

/* Asserts that t holds want[0..n) within a relative tolerance (and a tiny absolute floor). */
static void assert_values(const char *what, const tg_tensor *t, const float *want, int64_t n,
                          double rtol)
{
    assert_non_null(t);
    assert_int_equal(t->numel, n);
    for (int64_t i = 0; i < n; i++) {
        double got = t->data[i], w = want[i];
        if (!(fabs(got - w) <= 1e-6 + rtol * fabs(w)))
            fail_msg("%s: element %lld is %.9g, expected %.9g", what, (long long)i, got, w);
    }
}

/* op(x) for x from the given values, compared with want. */
static void check_unary(const char *what, unary_fn op, const float *x, const float *want, int n)
{
    int64_t len = n;
    tg_tensor *t = tg_tensor_from_data(1, &len, x);
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *y = op(t);
    assert_shape(y, 1, &len);
    assert_values(what, y, want, n, 1e-6);
    tg_tape_end(tape);
    tg_tensor_release(t);
}

static const float X5[5] = {-2.0f, -0.5f, 0.0f, 0.5f, 3.0f};
static const float P4[4] = {0.25f, 1.0f, 2.0f, 4.0f};

static void test_unary_values(void **state)
{
    (void)state;
    check_unary("neg", tg_neg, X5, (const float[]){2, 0.5f, 0, -0.5f, -3}, 5);
    check_unary("exp", tg_exp, X5,
                (const float[]){0.13533528f, 0.60653066f, 1.0f, 1.64872127f, 20.0855369f}, 5);
    check_unary("log", tg_log, P4, (const float[]){-1.38629436f, 0.0f, 0.69314718f, 1.38629436f},
                4);
    check_unary("sqrt", tg_sqrt, P4, (const float[]){0.5f, 1.0f, 1.41421356f, 2.0f}, 4);
    check_unary("abs", tg_abs, X5, (const float[]){2, 0.5f, 0, 0.5f, 3}, 5);
    check_unary("square", tg_square, X5, (const float[]){4, 0.25f, 0, 0.25f, 9}, 5);
    check_unary("sigmoid", tg_sigmoid, X5,
                (const float[]){0.11920292f, 0.37754067f, 0.5f, 0.62245933f, 0.95257413f}, 5);
    check_unary("tanh", tg_tanh, X5,
                (const float[]){-0.96402758f, -0.46211716f, 0.0f, 0.46211716f, 0.99505475f}, 5);
    check_unary("relu", tg_relu, X5, (const float[]){0, 0, 0, 0.5f, 3}, 5);
}

static void test_parameterised_values(void **state)
{
    (void)state;
    int64_t n5 = 5, n4 = 4;
    tg_tensor *x = tg_tensor_from_data(1, &n5, X5);
    tg_tensor *p = tg_tensor_from_data(1, &n4, P4);
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    assert_values("leaky_relu", tg_leaky_relu(x, 0.1f), (const float[]){-0.2f, -0.05f, 0, 0.5f, 3},
                  5, 1e-6);
    assert_values("clamp", tg_clamp(x, -0.5f, 1.0f), (const float[]){-0.5f, -0.5f, 0, 0.5f, 1}, 5,
                  0);
    /* lo > hi gives hi everywhere, as PyTorch's min(max(x, lo), hi). */
    assert_values("clamp lo>hi", tg_clamp(x, 1.0f, -1.0f), (const float[]){-1, -1, -1, -1, -1}, 5,
                  0);
    assert_values("pow 2.5", tg_pow_scalar(p, 2.5f), (const float[]){0.03125f, 1, 5.65685425f, 32},
                  4, 1e-6);
    assert_values("pow -1.5", tg_pow_scalar(p, -1.5f), (const float[]){8, 1, 0.35355339f, 0.125f},
                  4, 1e-6);
    assert_values("pow 2 of negatives", tg_pow_scalar(x, 2.0f),
                  (const float[]){4, 0.25f, 0, 0.25f, 9}, 5, 1e-6);
    assert_values("add_scalar", tg_add_scalar(x, 1.5f), (const float[]){-0.5f, 1, 1.5f, 2, 4.5f}, 5,
                  0);
    assert_values("sub_scalar", tg_sub_scalar(x, 1.5f), (const float[]){-3.5f, -2, -1.5f, -1, 1.5f},
                  5, 0);
    assert_values("rsub_scalar", tg_rsub_scalar(x, 1.5f), (const float[]){3.5f, 2, 1.5f, 1, -1.5f},
                  5, 0);
    assert_values("mul_scalar", tg_mul_scalar(x, -2.0f), (const float[]){4, 1, 0, -1, -6}, 5, 0);
    assert_values("div_scalar", tg_div_scalar(x, 4.0f),
                  (const float[]){-0.5f, -0.125f, 0, 0.125f, 0.75f}, 5, 0);
    assert_values("rdiv_scalar", tg_rdiv_scalar(p, 2.0f), (const float[]){8, 2, 1, 0.5f}, 4, 0);
    tg_tape_end(tape);
    tg_tensor_release(x);
    tg_tensor_release(p);
}

static void test_binary_same_shape(void **state)
{
    (void)state;
    tg_tensor *a = tg_tensor_from_data(TG_DIMS(2, 2), (const float[]){1, -2, 3, 0.5f});
    tg_tensor *b = tg_tensor_from_data(TG_DIMS(2, 2), (const float[]){4, 0.5f, -1, 2});
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    const int64_t shape[2] = {2, 2};
    tg_tensor *y = tg_add(a, b);
    assert_shape(y, 2, shape);
    assert_values("add", y, (const float[]){5, -1.5f, 2, 2.5f}, 4, 0);
    assert_values("sub", tg_sub(a, b), (const float[]){-3, -2.5f, 4, -1.5f}, 4, 0);
    assert_values("mul", tg_mul(a, b), (const float[]){4, -1, -3, 1}, 4, 0);
    assert_values("div", tg_div(a, b), (const float[]){0.25f, -4, -3, 0.25f}, 4, 0);
    tg_tape_end(tape);
    tg_tensor_release(a);
    tg_tensor_release(b);
}

static void test_broadcast_outer(void **state)
{
    (void)state;
    /* [3,1] + [1,4] -> [3,4]: y[i][j] = a[i] + b[j]. */
    tg_tensor *a = tg_tensor_from_data(TG_DIMS(3, 1), (const float[]){0, 10, 20});
    tg_tensor *b = tg_tensor_from_data(TG_DIMS(1, 4), (const float[]){1, 2, 3, 4});
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *y = tg_add(a, b);
    assert_shape(y, 2, (const int64_t[]){3, 4});
    assert_values("outer add", y, (const float[]){1, 2, 3, 4, 11, 12, 13, 14, 21, 22, 23, 24}, 12,
                  0);
    /* The other order, and sub (not commutative). */
    assert_values("outer sub", tg_sub(b, a),
                  (const float[]){1, 2, 3, 4, -9, -8, -7, -6, -19, -18, -17, -16}, 12, 0);
    tg_tape_end(tape);
    tg_tensor_release(a);
    tg_tensor_release(b);
}

static void test_broadcast_row_3d(void **state)
{
    (void)state;
    /* [2,3,4] * [4]: every row of 4 times the same [4]. */
    float av[24];
    for (int i = 0; i < 24; i++)
        av[i] = (float)i;
    tg_tensor *a = tg_tensor_from_data(TG_DIMS(2, 3, 4), av);
    tg_tensor *b = tg_tensor_from_data(TG_DIMS(4), (const float[]){1, -1, 0.5f, 2});
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *y = tg_mul(a, b);
    assert_shape(y, 3, (const int64_t[]){2, 3, 4});
    float want[24];
    const float bv[4] = {1, -1, 0.5f, 2};
    for (int i = 0; i < 24; i++)
        want[i] = (float)i * bv[i % 4];
    assert_values("[2,3,4]*[4]", y, want, 24, 0);
    /* And [4] / [2,3,4]: the row on the left. */
    tg_tensor *z = tg_div(b, tg_add_scalar(a, 1.0f));
    for (int i = 0; i < 24; i++)
        want[i] = bv[i % 4] / (float)(i + 1);
    assert_values("[4]/[2,3,4]", z, want, 24, 1e-7);
    tg_tape_end(tape);
    tg_tensor_release(a);
    tg_tensor_release(b);
}

static void test_broadcast_scalar(void **state)
{
    (void)state;
    tg_tensor *s = tg_tensor_scalar(2.0f);
    tg_tensor *m = tg_tensor_from_data(TG_DIMS(2, 3), (const float[]){1, 2, 3, 4, 5, 6});
    tg_tensor *v = tg_tensor_from_data(TG_DIMS(1, 1, 1), (const float[]){3});
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *y = tg_div(s, m);
    assert_shape(y, 2, (const int64_t[]){2, 3});
    assert_values("0-d / [2,3]", y, (const float[]){2, 1, 2.0f / 3, 0.5f, 0.4f, 2.0f / 6}, 6, 1e-7);
    y = tg_sub(m, s);
    assert_shape(y, 2, (const int64_t[]){2, 3});
    assert_values("[2,3] - 0-d", y, (const float[]){-1, 0, 1, 2, 3, 4}, 6, 0);
    /* 0-d with 0-d stays 0-d; 0-d with [1,1,1] is [1,1,1]. */
    y = tg_mul(s, s);
    assert_shape(y, 0, NULL);
    assert_values("0-d * 0-d", y, (const float[]){4}, 1, 0);
    y = tg_add(s, v);
    assert_shape(y, 3, (const int64_t[]){1, 1, 1});
    assert_values("0-d + [1,1,1]", y, (const float[]){5}, 1, 0);
    tg_tape_end(tape);
    tg_tensor_release(s);
    tg_tensor_release(m);
    tg_tensor_release(v);
}

/* out = op(a, b) element by element with explicit broadcast indexing: the reference the
 * planned loops are compared with. */
static void reference_binary(char op, const tg_tensor *a, const tg_tensor *b, const tg_tensor *y,
                             float *out)
{
    const int nd = y->ndim;
    for (int64_t e = 0; e < y->numel; e++) {
        int64_t idx[TG_MAX_DIMS], rem = e;
        for (int d = nd - 1; d >= 0; d--) {
            idx[d] = rem % y->shape[d];
            rem /= y->shape[d];
        }
        int64_t ia = 0, ib = 0;
        for (int d = 0; d < nd; d++) {
            int ka = d - (nd - a->ndim), kb = d - (nd - b->ndim);
            if (ka >= 0)
                ia = ia * a->shape[ka] + (a->shape[ka] == 1 ? 0 : idx[d]);
            if (kb >= 0)
                ib = ib * b->shape[kb] + (b->shape[kb] == 1 ? 0 : idx[d]);
        }
        float x = a->data[ia], z = b->data[ib];
        out[e] = op == '+' ? x + z : op == '-' ? x - z : op == '*' ? x * z : x / z;
    }
}

static tg_tensor *filled(int ndim, const int64_t *shape, float start, float step)
{
    tg_tensor *t = tg_tensor_new(ndim, shape);
    assert_non_null(t);
    for (int64_t i = 0; i < t->numel; i++)
        t->data[i] = start + step * (float)i;
    return t;
}

static void check_against_reference(int nda, const int64_t *sa, int ndb, const int64_t *sb, int ndy,
                                    const int64_t *sy)
{
    tg_tensor *a = filled(nda, sa, -3.0f, 0.25f);
    tg_tensor *b = filled(ndb, sb, 0.5f, 0.375f); /* never 0 */
    const char ops[4] = {'+', '-', '*', '/'};
    const binary_fn fns[4] = {tg_add, tg_sub, tg_mul, tg_div};
    for (int k = 0; k < 4; k++) {
        tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
        tg_tensor *y = fns[k](a, b);
        assert_shape(y, ndy, sy);
        float *want = malloc((size_t)y->numel * sizeof(float));
        reference_binary(ops[k], a, b, y, want);
        char what[32];
        snprintf(what, sizeof what, "broadcast %c", ops[k]);
        assert_values(what, y, want, y->numel, 0);
        free(want);
        tg_tape_end(tape);
    }
    tg_tensor_release(a);
    tg_tensor_release(b);
}

static void test_broadcast_general(void **state)
{
    (void)state;
    /* [5,1,3] with [4,1] -> [5,4,3]. */
    check_against_reference(TG_DIMS(5, 1, 3), TG_DIMS(4, 1), TG_DIMS(5, 4, 3));
    check_against_reference(TG_DIMS(4, 1), TG_DIMS(5, 1, 3), TG_DIMS(5, 4, 3));
    check_against_reference(TG_DIMS(2, 1, 3, 1), TG_DIMS(1, 4, 1, 2), TG_DIMS(2, 4, 3, 2));
    check_against_reference(TG_DIMS(4), TG_DIMS(2, 1, 4), TG_DIMS(2, 1, 4));
    check_against_reference(TG_DIMS(3, 1, 1), TG_DIMS(1, 2, 5), TG_DIMS(3, 2, 5));
    check_against_reference(TG_DIMS(1, 2, 1, 3, 1, 2), TG_DIMS(2, 1, 2, 1, 3, 1),
                            TG_DIMS(2, 2, 2, 3, 3, 2));
    check_against_reference(TG_DIMS(1, 7), TG_DIMS(7), TG_DIMS(1, 7));
}

static void test_empty_and_size0(void **state)
{
    (void)state;
    tg_tensor *a = tg_tensor_zeros(TG_DIMS(0, 3));
    tg_tensor *b = tg_tensor_ones(TG_DIMS(3));
    tg_tensor *c = tg_tensor_ones(TG_DIMS(1, 1));
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    assert_shape(tg_add(a, b), 2, (const int64_t[]){0, 3});
    assert_shape(tg_mul(c, a), 2, (const int64_t[]){0, 3});
    assert_shape(tg_exp(a), 2, (const int64_t[]){0, 3});
    tg_tape_end(tape);
    tg_tensor_release(a);
    tg_tensor_release(b);
    tg_tensor_release(c);
}

static void test_shape_errors(void **state)
{
    (void)state;
    tg_tensor *a = tg_tensor_ones(TG_DIMS(2, 3));
    tg_tensor *b = tg_tensor_ones(TG_DIMS(4));
    tg_tensor *c = tg_tensor_ones(TG_DIMS(3, 3));
    tg_tensor *d = tg_tensor_ones(TG_DIMS(3, 1, 5));
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    assert_null(tg_add(a, b));
    assert_int_equal(tg_last_status(), TG_ERR_SHAPE);
    assert_error_contains("tg_add: a [2, 3] and b [4]: shapes do not broadcast (axis -1: 3 vs 4)");
    tg_clear_error();
    assert_null(tg_div(c, a));
    assert_error_contains("tg_div: a [3, 3] and b [2, 3]: shapes do not broadcast (axis -2: 3 vs "
                          "2)");
    tg_clear_error();
    assert_null(tg_mul(d, a));
    assert_error_contains("tg_mul: a [3, 1, 5] and b [2, 3]: shapes do not broadcast (axis -1: 5 "
                          "vs 3)");
    tg_clear_error();
    assert_null(tg_sub(b, d));
    assert_error_contains("tg_sub: a [4] and b [3, 1, 5]: shapes do not broadcast (axis -1: 4 vs "
                          "5)");
    tg_tape_end(tape);
    tg_tensor_release(a);
    tg_tensor_release(b);
    tg_tensor_release(c);
    tg_tensor_release(d);
}

static void test_null_propagation(void **state)
{
    (void)state;
    tg_tensor *a = tg_tensor_ones(TG_DIMS(2, 3));
    tg_tensor *b = tg_tensor_ones(TG_DIMS(4));
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    const char *want = "tg_add: a [2, 3] and b [4]: shapes do not broadcast (axis -1: 3 vs 4)";
    tg_tensor *bad = tg_add(a, b);
    assert_null(bad);
    /* Every op given the NULL returns NULL and keeps the first message. */
    assert_null(tg_exp(bad));
    assert_null(tg_relu(bad));
    assert_null(tg_clamp(bad, 0.0f, 1.0f));
    assert_null(tg_leaky_relu(bad, 0.1f));
    assert_null(tg_rdiv_scalar(bad, 1.0f));
    assert_null(tg_mul(a, bad));
    assert_null(tg_div(bad, a));
    assert_null(tg_sub(tg_sigmoid(bad), tg_tanh(a)));
    assert_int_equal(tg_last_status(), TG_ERR_SHAPE);
    assert_string_equal(tg_last_error(), want);
    /* With no earlier error, a NULL argument is named. */
    tg_clear_error();
    assert_null(tg_neg(NULL));
    assert_int_equal(tg_last_status(), TG_ERR_ARG);
    assert_error_contains("tg_neg: input 0 is NULL");
    tg_tape_end(tape);
    tg_tensor_release(a);
    tg_tensor_release(b);
}

static void test_no_tape(void **state)
{
    (void)state;
    tg_tensor *a = tg_tensor_ones(TG_DIMS(2));
    assert_null(tg_mul_scalar(a, 2.0f));
    assert_int_equal(tg_last_status(), TG_ERR_STATE);
    assert_error_contains("tg_mul_scalar: no open tape");
    tg_tensor_release(a);
}

static void test_extremes(void **state)
{
    (void)state;
    tg_tensor *x = tg_tensor_from_data(TG_DIMS(4), (const float[]){-100, 100, -1000, 1000});
    tg_tensor_set_requires_grad(x, true);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *s = tg_sigmoid(x), *t = tg_tanh(x);
    for (int i = 0; i < 4; i++) {
        assert_true(isfinite(s->data[i]) && isfinite(t->data[i]));
        assert_true(s->data[i] >= 0.0f && s->data[i] <= 1.0f);
    }
    assert_true(s->data[0] < 1e-40f); /* e^-100 = 3.7e-44, a denormal: not 0 / 0 */
    assert_close(s->data[1], 1.0f, 0);
    assert_close(s->data[2], 0.0f, 0);
    assert_close(s->data[3], 1.0f, 0);
    assert_close(t->data[0], -1.0f, 0);
    assert_close(t->data[1], 1.0f, 0);
    /* Their gradients are finite too (0 for practical purposes). */
    assert_int_equal(tg_backward(tg_sum(tg_add(s, t))), TG_OK);
    for (int i = 0; i < 4; i++) {
        assert_true(isfinite(x->grad->data[i]));
        assert_true(fabsf(x->grad->data[i]) < 1e-30f);
    }
    /* NaN stays NaN through the selects (relu, clamp, leaky_relu). */
    tg_tensor *nan = tg_tensor_full(TG_DIMS(1), NAN);
    assert_true(isnan(tg_relu(nan)->data[0]));
    assert_true(isnan(tg_clamp(nan, -1.0f, 1.0f)->data[0]));
    assert_true(isnan(tg_leaky_relu(nan, 0.1f)->data[0]));
    tg_tape_end(tape);
    tg_tensor_release(nan);
    tg_tensor_release(x);
}

/* Derivatives at the kinks, where the convention is a choice (PyTorch's): relu'(0) = 0,
 * abs'(0) = 0, leaky_relu'(0) = slope, clamp' = 1 at lo and hi, 0 outside. */
static void test_kink_gradients(void **state)
{
    (void)state;
    tg_tensor *x = tg_tensor_from_data(TG_DIMS(5), (const float[]){-1, -0.5f, 0, 0.5f, 1});
    tg_tensor_set_requires_grad(x, true);
    struct {
        const char *name;
        float want[5];
    } cases[4] = {
        {"relu", {0, 0, 0, 1, 1}},
        {"abs", {-1, -1, 0, 1, 1}},
        {"leaky_relu", {0.2f, 0.2f, 0.2f, 1, 1}},
        {"clamp", {0, 1, 1, 1, 0}},
    };
    for (int k = 0; k < 4; k++) {
        tg_tape *tape = tg_tape_begin(TG_GRAD);
        tg_tensor *y = k == 0   ? tg_relu(x)
                       : k == 1 ? tg_abs(x)
                       : k == 2 ? tg_leaky_relu(x, 0.2f)
                                : tg_clamp(x, -0.5f, 0.5f);
        assert_int_equal(tg_backward(tg_sum(y)), TG_OK);
        assert_values(cases[k].name, x->grad, cases[k].want, 5, 0);
        tg_tensor_zero_grad(x);
        tg_tape_end(tape);
    }
    tg_tensor_release(x);
}

/* y = a * b with a [3,1], b [1,4] and a known dy: da[i] = sum_j dy[i][j] b[j],
 * db[j] = sum_i dy[i][j] a[i]. */
static void test_broadcast_grad_mul(void **state)
{
    (void)state;
    tg_tensor *a = tg_tensor_from_data(TG_DIMS(3, 1), (const float[]){1, 2, 3});
    tg_tensor *b = tg_tensor_from_data(TG_DIMS(1, 4), (const float[]){1, -1, 2, 0.5f});
    tg_tensor *dy =
        tg_tensor_from_data(TG_DIMS(3, 4), (const float[]){1, 0, 0, 2, 0, 1, 1, 0, 1, 1, 1, 1});
    tg_tensor_set_requires_grad(a, true);
    tg_tensor_set_requires_grad(b, true);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    assert_int_equal(tg_backward_grad(tg_mul(a, b), dy), TG_OK);
    /* da = [1*1 + 2*0.5, -1 + 2, 1 - 1 + 2 + 0.5] = [2, 1, 2.5] */
    assert_values("da", a->grad, (const float[]){2, 1, 2.5f}, 3, 0);
    /* db = [1*1 + 3*1, 2*1 + 3*1, 2*1 + 3*1, 1*2 + 3*1] = [4, 5, 5, 5] */
    assert_values("db", b->grad, (const float[]){4, 5, 5, 5}, 4, 0);
    assert_shape(a->grad, 2, (const int64_t[]){3, 1});
    assert_shape(b->grad, 2, (const int64_t[]){1, 4});
    tg_tape_end(tape);
    tg_tensor_release(a);
    tg_tensor_release(b);
    tg_tensor_release(dy);
}

/* y = a + bias, a [2,3], bias [3], s 0-d: dbias = column sums of dy, ds = sum of dy. */
static void test_broadcast_grad_add(void **state)
{
    (void)state;
    tg_tensor *a = tg_tensor_zeros(TG_DIMS(2, 3));
    tg_tensor *bias = tg_tensor_zeros(TG_DIMS(3));
    tg_tensor *s = tg_tensor_scalar(0.0f);
    tg_tensor *dy = tg_tensor_from_data(TG_DIMS(2, 3), (const float[]){1, 2, 3, 10, 20, 30});
    tg_tensor_set_requires_grad(a, true);
    tg_tensor_set_requires_grad(bias, true);
    tg_tensor_set_requires_grad(s, true);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    /* (a + bias) - s: two broadcasts, and sub's -1 on s. */
    assert_int_equal(tg_backward_grad(tg_sub(tg_add(a, bias), s), dy), TG_OK);
    assert_values("da", a->grad, (const float[]){1, 2, 3, 10, 20, 30}, 6, 0);
    assert_values("dbias", bias->grad, (const float[]){11, 22, 33}, 3, 0);
    assert_values("ds", s->grad, (const float[]){-66}, 1, 0);
    assert_shape(s->grad, 0, NULL);
    /* [4] under [2,1,4]: the leading-axis sum. */
    tg_tensor *v = tg_tensor_zeros(TG_DIMS(4));
    tg_tensor *w = tg_tensor_zeros(TG_DIMS(2, 1, 4));
    tg_tensor_set_requires_grad(v, true);
    tg_tensor *dz = tg_tensor_from_data(TG_DIMS(2, 1, 4), (const float[]){1, 2, 3, 4, 5, 6, 7, 8});
    assert_int_equal(tg_backward_grad(tg_add(v, w), dz), TG_OK);
    assert_values("dv", v->grad, (const float[]){6, 8, 10, 12}, 4, 0);
    tg_tape_end(tape);
    tg_tensor_release(a);
    tg_tensor_release(bias);
    tg_tensor_release(s);
    tg_tensor_release(dy);
    tg_tensor_release(v);
    tg_tensor_release(w);
    tg_tensor_release(dz);
}

/* x * x: both inputs are the same tensor; the two contributions add up to 2x. */
static void test_same_input_twice(void **state)
{
    (void)state;
    tg_tensor *x = tg_tensor_from_data(TG_DIMS(3), (const float[]){1, -2, 0.5f});
    tg_tensor_set_requires_grad(x, true);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    assert_int_equal(tg_backward(tg_sum(tg_mul(x, x))), TG_OK);
    assert_values("d(x*x)", x->grad, (const float[]){2, -4, 1}, 3, 0);
    tg_tape_end(tape);
    tg_tensor_release(x);
}

/* Forward values and gradients of big broadcast ops, with 1 and then 2 threads. */
typedef struct {
    tg_tensor *y[5];
    tg_tensor *ga, *gcol, *grow, *gs;
} big_result;

static void big_run(int threads, tg_tensor *a, tg_tensor *col, tg_tensor *row, tg_tensor *s,
                    big_result *r)
{
    /* 2 threads where the machine has them (tg_set_num_threads refuses more than its CPUs) */
    if (threads > tg_get_num_cpus())
        threads = tg_get_num_cpus();
    assert_int_equal(tg_set_num_threads(threads), TG_OK);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y0 = tg_mul(a, row);  /* [M,N] * [N]: row broadcast */
    tg_tensor *y1 = tg_div(y0, col); /* [M,N] / [M,1]: broadcast along the run */
    tg_tensor *y2 = tg_add(y1, s);   /* + 0-d */
    tg_tensor *y3 = tg_sigmoid(y2);  /* unary, transcendental */
    tg_tensor *y4 = tg_leaky_relu(tg_sub(y3, a), 0.1f);
    tg_tensor *ys[5] = {y0, y1, y2, y3, y4};
    for (int i = 0; i < 5; i++)
        r->y[i] = tg_tensor_clone(ys[i]);
    assert_int_equal(tg_backward(tg_mean(y4)), TG_OK);
    r->ga = tg_tensor_clone(a->grad);
    r->gcol = tg_tensor_clone(col->grad);
    r->grow = tg_tensor_clone(row->grad);
    r->gs = tg_tensor_clone(s->grad);
    tg_tensor_zero_grad(a);
    tg_tensor_zero_grad(col);
    tg_tensor_zero_grad(row);
    tg_tensor_zero_grad(s);
    tg_tape_end(tape);
}

static void big_release(big_result *r)
{
    for (int i = 0; i < 5; i++)
        tg_tensor_release(r->y[i]);
    tg_tensor_release(r->ga);
    tg_tensor_release(r->gcol);
    tg_tensor_release(r->grow);
    tg_tensor_release(r->gs);
}

static void assert_identical(const char *what, const tg_tensor *x, const tg_tensor *y)
{
    assert_non_null(x);
    assert_non_null(y);
    assert_int_equal(x->numel, y->numel);
    if (memcmp(x->data, y->data, (size_t)x->numel * sizeof(float)) != 0)
        fail_msg("%s differs between 1 and 2 threads", what);
}

static void test_threads_same_results(void **state)
{
    (void)state;
    const int64_t M = 1000, N = 1000; /* 1e6 elements: well above TG_PARALLEL_MIN */
    tg_rng rng;
    tg_rng_seed(&rng, 7);
    tg_tensor *a = tg_tensor_new(TG_DIMS(M, N));
    tg_tensor *col = tg_tensor_new(TG_DIMS(M, 1));
    tg_tensor *row = tg_tensor_new(TG_DIMS(N));
    tg_tensor *s = tg_tensor_scalar(0.25f);
    tg_tensor_uniform_(a, &rng, -2.0f, 2.0f);
    tg_tensor_uniform_(col, &rng, 0.5f, 2.0f);
    tg_tensor_uniform_(row, &rng, -1.0f, 1.0f);
    tg_tensor *ins[4] = {a, col, row, s};
    for (int i = 0; i < 4; i++)
        tg_tensor_set_requires_grad(ins[i], true);
    int saved = tg_get_num_threads();
    big_result r1, r2;
    big_run(1, a, col, row, s, &r1);
    big_run(2, a, col, row, s, &r2);
    tg_set_num_threads(saved);
    const char *names[5] = {"a*row", "/col", "+s", "sigmoid", "leaky_relu(. - a)"};
    for (int i = 0; i < 5; i++)
        assert_identical(names[i], r1.y[i], r2.y[i]);
    assert_identical("da", r1.ga, r2.ga);
    assert_identical("dcol", r1.gcol, r2.gcol);
    assert_identical("drow", r1.grow, r2.grow);
    assert_identical("ds", r1.gs, r2.gs);
    /* Spot-check the forward against a direct computation. */
    for (int64_t e = 0; e < M * N; e += 9973) {
        float v = a->data[e] * row->data[e % N] / col->data[e / N] + 0.25f;
        assert_close(r1.y[2]->data[e], v, 1e-6 * (1 + fabs(v)));
    }
    big_release(&r1);
    big_release(&r2);
    for (int i = 0; i < 4; i++)
        tg_tensor_release(ins[i]);
}

/* The reductions over broadcast axes on a big tensor against a double-precision sum. */
static void test_big_broadcast_grad(void **state)
{
    (void)state;
    const int64_t M = 600, N = 700;
    tg_rng rng;
    tg_rng_seed(&rng, 11);
    tg_tensor *a = tg_tensor_new(TG_DIMS(M, N));
    tg_tensor *row = tg_tensor_new(TG_DIMS(1, N));
    tg_tensor *col = tg_tensor_new(TG_DIMS(M, 1));
    tg_tensor *dy = tg_tensor_new(TG_DIMS(M, N));
    tg_tensor_uniform_(a, &rng, -1.0f, 1.0f);
    tg_tensor_uniform_(row, &rng, -1.0f, 1.0f);
    tg_tensor_uniform_(col, &rng, -1.0f, 1.0f);
    tg_tensor_uniform_(dy, &rng, -1.0f, 1.0f);
    tg_tensor_set_requires_grad(row, true);
    tg_tensor_set_requires_grad(col, true);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    /* y = (a * row) * col: drow[j] = sum_i dy a col, dcol[i] = sum_j dy a row. */
    assert_int_equal(tg_backward_grad(tg_mul(tg_mul(a, row), col), dy), TG_OK);
    for (int64_t j = 0; j < N; j += 37) {
        double want = 0;
        for (int64_t i = 0; i < M; i++)
            want += (double)dy->data[i * N + j] * a->data[i * N + j] * col->data[i];
        assert_close(row->grad->data[j], want, 1e-4 * (1 + fabs(want)));
    }
    for (int64_t i = 0; i < M; i += 41) {
        double want = 0;
        for (int64_t j = 0; j < N; j++)
            want += (double)dy->data[i * N + j] * a->data[i * N + j] * row->data[j];
        assert_close(col->grad->data[i], want, 1e-4 * (1 + fabs(want)));
    }
    tg_tape_end(tape);
    tg_tensor_release(a);
    tg_tensor_release(row);
    tg_tensor_release(col);
    tg_tensor_release(dy);
}

/* ---- activations against PyTorch (elementwise_golden.h) ---------------------------------- */

/* One activation: which op, its parameters, and PyTorch's y and dy/dx at ew_x. */
typedef struct {
    const char *name;
    int op; /* 0 gelu, 1 gelu_tanh, 2 silu, 3 softplus(beta, threshold) */
    float beta, threshold;
    const float *y, *dx;
} act_golden;

static const act_golden act_goldens[] = {
    {"gelu", 0, 0, 0, ew_gelu_y, ew_gelu_dx},
    {"gelu_tanh", 1, 0, 0, ew_gelu_tanh_y, ew_gelu_tanh_dx},
    {"silu", 2, 0, 0, ew_silu_y, ew_silu_dx},
    {"softplus", 3, 1.0f, 20.0f, ew_softplus_y, ew_softplus_dx},
    {"softplus(beta 2, threshold 5)", 3, 2.0f, 5.0f, ew_softplus_b2_t5_y, ew_softplus_b2_t5_dx},
    {"softplus(beta 0.5)", 3, 0.5f, 20.0f, ew_softplus_b0_5_t20_y, ew_softplus_b0_5_t20_dx},
};

static tg_tensor *act_apply(const act_golden *g, tg_tensor *x)
{
    switch (g->op) {
    case 0: return tg_gelu(x);
    case 1: return tg_gelu_tanh(x);
    case 2: return tg_silu(x);
    default: return tg_softplus(x, g->beta, g->threshold);
    }
}

/* Values and derivatives at 64 points, from 0 and 1e-4 to +-100 (where e^x overflows and
 * 1 + erf cancels), within 1e-4 relative (1e-5 absolute near 0). */
static void test_activation_golden(void **state)
{
    (void)state;
    for (size_t k = 0; k < N_OF(act_goldens); k++) {
        const act_golden *g = &act_goldens[k];
        tg_tensor *x = tg_tensor_from_data(TG_DIMS(EW_GOLDEN_N), ew_x);
        tg_tensor_set_requires_grad(x, true);
        tg_tape *tape = tg_tape_begin(TG_GRAD);
        tg_tensor *y = act_apply(g, x);
        if (!y)
            fail_msg("%s: %s", g->name, tg_last_error());
        assert_int_equal(tg_backward(tg_sum(y)), TG_OK);
        char what[80];
        snprintf(what, sizeof what, "%s y", g->name);
        assert_golden(what, y->data, g->y, EW_GOLDEN_N);
        snprintf(what, sizeof what, "%s dy/dx", g->name);
        assert_golden(what, x->grad->data, g->dx, EW_GOLDEN_N);
        tg_tape_end(tape);
        tg_tensor_release(x);
    }
}

/* Far outside the goldens' range: finite values and derivatives at +-1000 (softplus with no
 * threshold at all: log(1 + e^1000) would overflow as written), and NaN stays NaN. */
static void test_activation_extremes(void **state)
{
    (void)state;
    const float xs[3] = {1000.0f, -1000.0f, NAN};
    for (size_t k = 0; k < N_OF(act_goldens); k++) {
        act_golden g = act_goldens[k];
        if (g.op == 3)
            g.threshold = INFINITY;
        tg_tensor *x = tg_tensor_from_data(TG_DIMS(3), xs);
        tg_tensor_set_requires_grad(x, true);
        tg_tape *tape = tg_tape_begin(TG_GRAD);
        tg_tensor *y = act_apply(&g, x);
        assert_non_null(y);
        assert_int_equal(tg_backward(tg_sum(y)), TG_OK);
        if (!(fabs(y->data[0] - 1000.0) <= 1e-3 && fabs(y->data[1]) <= 1e-3 && isnan(y->data[2])))
            fail_msg("%s(+-1000, NaN) = %g, %g, %g", g.name, (double)y->data[0], (double)y->data[1],
                     (double)y->data[2]);
        const float *d = x->grad->data;
        if (!(fabs(d[0] - 1.0) <= 1e-6 && fabs(d[1]) <= 1e-6 && isnan(d[2])))
            fail_msg("%s' at +-1000, NaN = %g, %g, %g", g.name, (double)d[0], (double)d[1],
                     (double)d[2]);
        tg_tape_end(tape);
        tg_tensor_release(x);
    }
}

/* GELU (both forms) and SiLU modules run their ops. */
static void test_activation_modules(void **state)
{
    (void)state;
    tg_module *m[3] = {tg_nn_gelu(false), tg_nn_gelu(true), tg_nn_silu()};
    const char *type[3] = {"GELU", "GELU", "SiLU"};
    tg_tensor *x = tg_tensor_from_data(TG_DIMS(EW_GOLDEN_N), ew_x);
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    for (int i = 0; i < 3; i++) {
        assert_non_null(m[i]);
        assert_string_equal(tg_module_type(m[i]), type[i]);
        tg_tensor *y = tg_module_forward(m[i], x), *want = act_apply(&act_goldens[i], x);
        assert_non_null(y);
        assert_memory_equal(y->data, want->data, sizeof(float) * EW_GOLDEN_N);
        tg_module_free(m[i]);
    }
    tg_tape_end(tape);
    tg_tensor_release(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TG_TEST(test_unary_values),
        TG_TEST(test_parameterised_values),
        TG_TEST(test_binary_same_shape),
        TG_TEST(test_broadcast_outer),
        TG_TEST(test_broadcast_row_3d),
        TG_TEST(test_broadcast_scalar),
        TG_TEST(test_broadcast_general),
        TG_TEST(test_empty_and_size0),
        TG_TEST(test_shape_errors),
        TG_TEST(test_null_propagation),
        TG_TEST(test_no_tape),
        TG_TEST(test_extremes),
        TG_TEST(test_kink_gradients),
        TG_TEST(test_broadcast_grad_mul),
        TG_TEST(test_broadcast_grad_add),
        TG_TEST(test_same_input_twice),
        TG_TEST(test_threads_same_results),
        TG_TEST(test_big_broadcast_grad),
        TG_TEST(test_activation_golden),
        TG_TEST(test_activation_extremes),
        TG_TEST(test_activation_modules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
