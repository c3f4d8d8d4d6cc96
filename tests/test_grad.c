/* tg_grad and tg_backward_ex (issue 15), torch.autograd.grad's semantics: the same values as
 * tg_backward, no .grad of any leaf touched, a non-leaf input, gradients with a history whose
 * own derivative matches finite differences, create_graph's .grad accumulating, and every
 * error naming the function and its cause. Each test checks that no tensor is left behind. */
#include "common.h"

#include <stdio.h>

/* ---- a small MLP: out = linear(tanh(linear(x, w1, b1)), w2, b2), x [3,4] -> out [3,2] ------ */

enum { X, W1, B1, W2, B2, N_LEAVES };
static const char *const leaf_names[N_LEAVES] = {"x", "w1", "b1", "w2", "b2"};

typedef struct {
    tg_tensor *t[N_LEAVES];
} mlp;

/* A leaf of the given shape with smooth, distinct values (scale * sin(1.3 i + phase)). */
static tg_tensor *leaf(int ndim, const int64_t *shape, double phase, double scale, bool grad)
{
    tg_tensor *t = tg_tensor_zeros(ndim, shape);
    assert_non_null(t);
    for (int64_t i = 0; i < t->numel; i++)
        t->data[i] = (float)(scale * sin(1.3 * (double)i + phase));
    if (grad)
        assert_int_equal(tg_tensor_set_requires_grad(t, true), TG_OK);
    return t;
}

static mlp mlp_new(void)
{
    mlp m;
    m.t[X] = leaf(2, (const int64_t[]){3, 4}, 0.3, 1.0, true);
    m.t[W1] = leaf(2, (const int64_t[]){5, 4}, 1.1, 0.6, true);
    m.t[B1] = leaf(1, (const int64_t[]){5}, 2.0, 0.3, true);
    m.t[W2] = leaf(2, (const int64_t[]){2, 5}, 0.7, 0.7, true);
    m.t[B2] = leaf(1, (const int64_t[]){2}, 1.7, 0.2, true);
    return m;
}

static void mlp_free(mlp *m)
{
    for (int k = 0; k < N_LEAVES; k++)
        tg_tensor_release(m->t[k]);
}

/* The hidden layer before its tanh, and the output. */
static tg_tensor *mlp_hidden(const mlp *m)
{
    return tg_linear(m->t[X], m->t[W1], m->t[B1]);
}

static tg_tensor *mlp_out(const mlp *m, tg_tensor *hidden)
{
    tg_tensor *y = tg_linear(tg_tanh(hidden), m->t[W2], m->t[B2]);
    if (!y)
        fail_msg("the MLP's forward: %s", tg_last_error());
    return y;
}

/* The scalar loss sum(out * r) for a fixed r: a plain sum would give every output the same
 * gradient. */
static tg_tensor *mlp_loss(const mlp *m)
{
    tg_tensor *r = tg_from_data(2, (const int64_t[]){3, 2},
                                (const float[]){0.5f, -1.2f, 0.8f, 0.3f, -0.6f, 1.1f});
    tg_tensor *loss = tg_sum(tg_mul(mlp_out(m, mlp_hidden(m)), r));
    if (!loss)
        fail_msg("the MLP's loss: %s", tg_last_error());
    return loss;
}

static void assert_tensors_close(const char *what, const tg_tensor *got, const tg_tensor *want,
                                 double tol)
{
    assert_non_null(got);
    assert_non_null(want);
    if (!tg_shape_equal(got, want))
        fail_msg("%s: shapes differ", what);
    for (int64_t i = 0; i < got->numel; i++)
        if (!(fabs((double)got->data[i] - want->data[i]) <= tol * fmax(1.0, fabs(want->data[i]))))
            fail_msg("%s[%lld] = %.9g, expected %.9g", what, (long long)i, (double)got->data[i],
                     (double)want->data[i]);
}

/* A copy of t's values that outlives the tape (NULL stays NULL). */
static tg_tensor *keep(const tg_tensor *t)
{
    if (!t)
        return NULL;
    tg_tensor *c = tg_tensor_clone(t);
    assert_non_null(c);
    return c;
}

/* ---- (a) the same values as tg_backward ----------------------------------------------- */

static void test_values_match_backward(void **state)
{
    (void)state;
    mlp m = mlp_new();
    tg_tensor *want[N_LEAVES];
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    assert_int_equal(tg_backward(mlp_loss(&m)), TG_OK);
    assert_int_equal(tg_tape_end(tape), TG_OK);
    for (int k = 0; k < N_LEAVES; k++) {
        want[k] = keep(m.t[k]->grad);
        assert_non_null(want[k]);
        tg_tensor_zero_grad(m.t[k]);
    }

    for (int create_graph = 0; create_graph <= 1; create_graph++) {
        tape = tg_tape_begin(TG_GRAD);
        tg_tensor *loss = mlp_loss(&m);
        tg_tensor *grads[N_LEAVES];
        if (tg_grad(&loss, 1, m.t, N_LEAVES, NULL, create_graph, grads) != TG_OK)
            fail_msg("tg_grad (create_graph %d): %s", create_graph, tg_last_error());
        for (int k = 0; k < N_LEAVES; k++) {
            char what[64];
            snprintf(what, sizeof what, "d loss / d %s (create_graph %d)", leaf_names[k],
                     create_graph);
            assert_tensors_close(what, grads[k], want[k], 1e-6);
            /* A history exactly when asked for; but the output bias's gradient, the column
             * sums of the constant r, depends on nothing that requires grad (as in PyTorch,
             * where it would not require grad). */
            if (k != B2)
                assert_true((grads[k]->node != NULL) == (create_graph == 1));
        }
        /* grad_outputs given: out's gradient r, the same numbers. */
        tg_tensor *r = tg_from_data(2, (const int64_t[]){3, 2},
                                    (const float[]){0.5f, -1.2f, 0.8f, 0.3f, -0.6f, 1.1f});
        tg_tensor *out = mlp_out(&m, mlp_hidden(&m));
        if (tg_grad(&out, 1, m.t, N_LEAVES, &r, create_graph, grads) != TG_OK)
            fail_msg("tg_grad with grad_outputs: %s", tg_last_error());
        for (int k = 0; k < N_LEAVES; k++)
            assert_tensors_close(leaf_names[k], grads[k], want[k], 1e-6);
        assert_int_equal(tg_tape_end(tape), TG_OK);
    }
    for (int k = 0; k < N_LEAVES; k++)
        tg_tensor_release(want[k]);
    mlp_free(&m);
}

/* Two outputs: the gradients of their sum, <out1, 1> + <out2, dy2>. */
static void test_two_outputs(void **state)
{
    (void)state;
    mlp m = mlp_new();
    for (int create_graph = 0; create_graph <= 1; create_graph++) {
        tg_tape *tape = tg_tape_begin(TG_GRAD);
        tg_tensor *h = mlp_hidden(&m);
        tg_tensor *out = mlp_out(&m, h);
        tg_tensor *s = tg_sum(h);
        tg_tensor *dy = tg_full(2, (const int64_t[]){3, 2}, 0.5f);
        tg_tensor *ys[2] = {s, out}, *dys[2] = {NULL, dy}, *g2[2];
        if (tg_grad(ys, 2, &m.t[W1], 2, dys, create_graph, g2) != TG_OK)
            fail_msg("tg_grad of two outputs: %s", tg_last_error());
        tg_tensor *total = tg_add(s, tg_mul_scalar(tg_sum(out), 0.5f)), *g1[2];
        assert_int_equal(tg_grad(&total, 1, &m.t[W1], 2, NULL, false, g1), TG_OK);
        assert_tensors_close("d/dw1 of two outputs", g2[0], g1[0], 1e-6);
        assert_tensors_close("d/db1 of two outputs", g2[1], g1[1], 1e-6);
        assert_int_equal(tg_tape_end(tape), TG_OK);
    }
    mlp_free(&m);
}

/* ---- (b) no .grad touched ----------------------------------------------------------------- */

static void test_no_grad_touched(void **state)
{
    (void)state;
    mlp m = mlp_new();
    /* w2 holds an earlier gradient; the others hold none. */
    tg_tensor *earlier = leaf(2, (const int64_t[]){2, 5}, 0.0, 3.0, false);
    assert_int_equal(tg_tensor_set_grad(m.t[W2], earlier), TG_OK);
    /* x, a requested input, holds one too: tg_grad returns its gradient, not into .grad. */
    tg_tensor *x_earlier = leaf(2, (const int64_t[]){3, 4}, 0.5, 2.0, false);
    assert_int_equal(tg_tensor_set_grad(m.t[X], x_earlier), TG_OK);
    const tg_tensor *w2_grad = m.t[W2]->grad, *x_grad = m.t[X]->grad;
    for (int create_graph = 0; create_graph <= 1; create_graph++) {
        tg_tape *tape = tg_tape_begin(TG_GRAD);
        tg_tensor *loss = mlp_loss(&m), *gx = NULL;
        assert_int_equal(tg_grad(&loss, 1, &m.t[X], 1, NULL, create_graph, &gx), TG_OK);
        assert_non_null(gx);
        assert_ptr_not_equal(gx, m.t[X]->grad);
        assert_int_equal(tg_tape_end(tape), TG_OK);
        assert_null(m.t[W1]->grad);
        assert_null(m.t[B1]->grad);
        assert_null(m.t[B2]->grad);
        assert_ptr_equal(m.t[W2]->grad, w2_grad);
        assert_ptr_equal(m.t[X]->grad, x_grad);
        assert_memory_equal(w2_grad->data, earlier->data, (size_t)earlier->numel * sizeof(float));
        assert_memory_equal(x_grad->data, x_earlier->data,
                            (size_t)x_earlier->numel * sizeof(float));
    }
    tg_tensor_release(earlier);
    tg_tensor_release(x_earlier);
    mlp_free(&m);
}

/* The same leaf twice among the inputs: both get its gradient, its own .grad stays. */
static void test_input_twice(void **state)
{
    (void)state;
    mlp m = mlp_new();
    tg_tensor *earlier = leaf(2, (const int64_t[]){5, 4}, 0.0, 3.0, false);
    assert_int_equal(tg_tensor_set_grad(m.t[W1], earlier), TG_OK);
    const tg_tensor *w1_grad = m.t[W1]->grad;
    for (int create_graph = 0; create_graph <= 1; create_graph++) {
        tg_tape *tape = tg_tape_begin(TG_GRAD);
        tg_tensor *loss = mlp_loss(&m), *twice[2] = {m.t[W1], m.t[W1]}, *g[2], *once = NULL;
        assert_int_equal(tg_grad(&loss, 1, twice, 2, NULL, create_graph, g), TG_OK);
        assert_int_equal(tg_grad(&loss, 1, twice, 1, NULL, create_graph, &once), TG_OK);
        assert_tensors_close("the first of two", g[0], once, 0.0);
        assert_tensors_close("the second of two", g[1], once, 0.0);
        assert_int_equal(tg_tape_end(tape), TG_OK);
        assert_ptr_equal(m.t[W1]->grad, w1_grad);
        assert_memory_equal(w1_grad->data, earlier->data, (size_t)earlier->numel * sizeof(float));
    }
    tg_tensor_release(earlier);
    mlp_free(&m);
}

/* ---- (c) a non-leaf input ----------------------------------------------------------------- */

/* d loss / d hidden, against the .grad of a leaf holding hidden's values in a second graph. */
static void test_non_leaf_input(void **state)
{
    (void)state;
    mlp m = mlp_new();
    for (int create_graph = 0; create_graph <= 1; create_graph++) {
        tg_tape *tape = tg_tape_begin(TG_GRAD);
        tg_tensor *h = mlp_hidden(&m);
        tg_tensor *out = mlp_out(&m, h), *gh = NULL;
        tg_tensor *dy = tg_full(2, (const int64_t[]){3, 2}, 1.0f);
        assert_int_equal(tg_grad(&out, 1, &h, 1, &dy, create_graph, &gh), TG_OK);
        assert_null(h->grad);
        assert_null(m.t[W1]->grad);
        assert_null(m.t[W2]->grad);

        tg_tensor *h_leaf = keep(h);
        assert_int_equal(tg_tensor_set_requires_grad(h_leaf, true), TG_OK);
        assert_int_equal(tg_backward_grad(mlp_out(&m, h_leaf), dy), TG_OK);
        assert_tensors_close("d out / d hidden", gh, h_leaf->grad, 1e-6);
        assert_int_equal(tg_tape_end(tape), TG_OK);
        tg_tensor_release(h_leaf);
        for (int k = W2; k <= B2; k++) /* from the second graph's backward */
            tg_tensor_zero_grad(m.t[k]);
    }
    mlp_free(&m);
}

/* An output that is itself the input: its gradient is grad_output. */
static void test_output_is_input(void **state)
{
    (void)state;
    mlp m = mlp_new();
    for (int create_graph = 0; create_graph <= 1; create_graph++) {
        tg_tape *tape = tg_tape_begin(TG_GRAD);
        tg_tensor *h = mlp_hidden(&m), *g = NULL;
        tg_tensor *dy = tg_full(2, (const int64_t[]){3, 5}, 0.25f);
        assert_int_equal(tg_grad(&h, 1, &h, 1, &dy, create_graph, &g), TG_OK);
        assert_tensors_close("d h / d h", g, dy, 0.0);
        assert_int_equal(tg_tape_end(tape), TG_OK);
    }
    mlp_free(&m);
}

/* ---- (d) create_graph: the gradient has a history ----------------------------------------- */

/* P = sum(grad_x^2), grad_x = d loss / d x, without a history (on its own tape). */
static double penalty_value(const mlp *m)
{
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *loss = mlp_loss(m), *gx = NULL;
    assert_int_equal(tg_grad(&loss, 1, (tg_tensor *const *)&m->t[X], 1, NULL, false, &gx), TG_OK);
    double p = 0.0;
    for (int64_t i = 0; i < gx->numel; i++)
        p += (double)gx->data[i] * gx->data[i];
    assert_int_equal(tg_tape_end(tape), TG_OK);
    return p;
}

/* d P / d (every leaf) by tg_backward through grad_x's history, against central differences
 * (step 1e-2 in float32: truncation and rounding both near 1e-5 here). */
static void test_create_graph_second_derivative(void **state)
{
    (void)state;
    mlp m = mlp_new();
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *loss = mlp_loss(&m), *gx = NULL;
    assert_int_equal(tg_grad(&loss, 1, &m.t[X], 1, NULL, true, &gx), TG_OK);
    assert_non_null(gx->node);
    tg_tensor *p = tg_sum(tg_square(gx));
    assert_non_null(p);
    assert_close(p->data[0], penalty_value(&m), 1e-5 * fmax(1.0, fabs(p->data[0])));
    if (tg_backward(p) != TG_OK)
        fail_msg("tg_backward through the gradient's history: %s", tg_last_error());
    assert_int_equal(tg_tape_end(tape), TG_OK);

    const double step = 1e-2;
    double worst = 0.0;
    for (int k = 0; k < N_LEAVES; k++) {
        tg_tensor *t = m.t[k];
        if (k == B2) {
            /* grad_x does not depend on the output bias: no gradient, or zeros. */
            for (int64_t i = 0; t->grad && i < t->numel; i++)
                assert_true(t->grad->data[i] == 0.0f);
            continue;
        }
        if (!t->grad)
            fail_msg("d P / d %s: no gradient", leaf_names[k]);
        for (int64_t i = 0; i < t->numel; i++) {
            const float v = t->data[i];
            t->data[i] = (float)(v + step);
            double up = penalty_value(&m);
            t->data[i] = (float)(v - step);
            double down = penalty_value(&m);
            t->data[i] = v;
            double fd = (up - down) / (2 * step), got = t->grad->data[i];
            double err = fabs(got - fd) / fmax(1.0, fabs(fd));
            worst = fmax(worst, err);
            if (!(err <= 2e-3))
                fail_msg("d P / d %s[%lld] = %.7g, central differences give %.7g", leaf_names[k],
                         (long long)i, got, fd);
        }
    }
    printf("create_graph: d sum(grad_x^2) / d leaves, largest relative error %.3g\n", worst);
    mlp_free(&m);
}

/* ---- (e) tg_backward_ex with create_graph ------------------------------------------------- */

static void test_backward_ex_create_graph(void **state)
{
    (void)state;
    mlp m = mlp_new();
    /* G = d loss / d w1 without a history, and w1's .grad then holds G0 = G. */
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    assert_int_equal(tg_backward(mlp_loss(&m)), TG_OK);
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_tensor *g_once = keep(m.t[W1]->grad);
    assert_null(g_once->node);

    tape = tg_tape_begin(TG_GRAD);
    tg_tensor *loss = mlp_loss(&m);
    if (tg_backward_ex(loss, NULL, true) != TG_OK)
        fail_msg("tg_backward_ex: %s", tg_last_error());
    /* .grad = G0 + G with a history. */
    tg_tensor *with_history = tg_tensor_retain(m.t[W1]->grad);
    assert_non_null(with_history->node);
    for (int64_t i = 0; i < g_once->numel; i++)
        assert_close(with_history->data[i], 2.0 * g_once->data[i], 1e-6);
    /* A first-order backward accumulates into a copy: .grad = G0 + 2G, the history keeps
     * G0 + G. */
    assert_int_equal(tg_backward(loss), TG_OK);
    assert_ptr_not_equal(m.t[W1]->grad, with_history);
    for (int64_t i = 0; i < g_once->numel; i++) {
        assert_close(m.t[W1]->grad->data[i], 3.0 * g_once->data[i], 1e-6);
        assert_close(with_history->data[i], 2.0 * g_once->data[i], 1e-6);
    }
    /* The history back-propagates: d/dx of sum(.grad of w1 * c) through it. */
    tg_tensor *gx = NULL, *s = tg_sum(tg_square(with_history));
    assert_non_null(s);
    assert_int_equal(tg_grad(&s, 1, &m.t[X], 1, NULL, false, &gx), TG_OK);
    assert_non_null(gx);
    assert_int_equal(tg_tape_end(tape), TG_OK);
    /* Once its tape ended the .grad keeps its values and no longer a history. */
    assert_null(with_history->node);
    tg_tensor_release(with_history);
    tg_tensor_release(g_once);
    mlp_free(&m);
}

/* dy given: .grad of every leaf gets <out, dy>'s gradient with a history. */
static void test_backward_ex_with_dy(void **state)
{
    (void)state;
    mlp m = mlp_new();
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *out = mlp_out(&m, mlp_hidden(&m));
    tg_tensor *dy = tg_full(2, (const int64_t[]){3, 2}, 1.0f);
    tg_tensor *want[N_LEAVES];
    assert_int_equal(tg_grad(&out, 1, m.t, N_LEAVES, &dy, false, want), TG_OK);
    assert_int_equal(tg_backward_ex(out, dy, true), TG_OK);
    for (int k = 0; k < N_LEAVES; k++) {
        assert_non_null(m.t[k]->grad);
        assert_tensors_close(leaf_names[k], m.t[k]->grad, want[k], 1e-6);
    }
    /* create_graph false: tg_backward_grad's plain gradients, added on. */
    assert_int_equal(tg_backward_ex(out, dy, false), TG_OK);
    for (int64_t i = 0; i < want[W1]->numel; i++)
        assert_close(m.t[W1]->grad->data[i], 2.0 * want[W1]->data[i], 1e-6);
    assert_int_equal(tg_tape_end(tape), TG_OK);
    mlp_free(&m);
}

/* Through an identity (eval-mode dropout) the gradient reaching the leaf is dy itself: .grad
 * must be a copy. Given the leaf as its own dy, holding it would be a reference cycle that no
 * tape end breaks (the fuzzer's leak); holding the caller's dy would let a later backward
 * accumulate into it. */
static void test_backward_ex_identity(void **state)
{
    (void)state;
    const int64_t shape[2] = {2, 3};
    tg_tensor *x = leaf(2, shape, 0.5, 1.0, true);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_dropout(x, 0.5f, false, NULL);
    assert_non_null(y);
    assert_int_equal(tg_backward_ex(y, x, true), TG_OK);
    assert_non_null(x->grad);
    assert_ptr_not_equal(x->grad, x);
    assert_tensors_close("x.grad with dy = x", x->grad, x, 0.0);
    tg_tensor_zero_grad(x);

    tg_tensor *dy = tg_full(2, shape, 0.25f);
    assert_int_equal(tg_backward_ex(y, dy, true), TG_OK);
    assert_ptr_not_equal(x->grad, dy);
    assert_int_equal(tg_backward_ex(y, dy, false), TG_OK);
    for (int64_t i = 0; i < x->numel; i++) {
        assert_close(x->grad->data[i], 0.5, 0.0);
        assert_close(dy->data[i], 0.25, 0.0);
    }
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_tensor_release(x);
}

/* ---- (f) errors ----------------------------------------------------------------------------- */

/* Expects st to be an error whose message names fn and contains cause, and every grads[k]
 * NULL. */
static void expect_error(tg_status st, const char *fn, const char *cause, tg_tensor **grads, int n)
{
    if (st == TG_OK)
        fail_msg("%s succeeded where it should fail with \"%s\"", fn, cause);
    assert_error_contains(fn);
    assert_error_contains(cause);
    for (int k = 0; k < n; k++)
        assert_null(grads[k]);
    tg_clear_error();
}

static void test_errors(void **state)
{
    (void)state;
    mlp m = mlp_new();
    tg_tensor *plain = leaf(2, (const int64_t[]){3, 4}, 0.0, 1.0, false);
    tg_tensor *unused = leaf(1, (const int64_t[]){5}, 0.0, 1.0, true);
    tg_tensor *g[2] = {NULL, NULL};
    const tg_tensor *stale = (const tg_tensor *)1; /* a value every failure must overwrite */
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *loss = mlp_loss(&m);
    tg_tensor *out = mlp_out(&m, mlp_hidden(&m));

    for (int create_graph = 0; create_graph <= 1; create_graph++) {
        /* Refused at the first input: the second's gradient is NULL too. */
        tg_tensor *plain_first[2] = {plain, m.t[W1]};
        g[0] = g[1] = (tg_tensor *)stale;
        expect_error(tg_grad(&loss, 1, plain_first, 2, NULL, create_graph, g), "tg_grad",
                     "input 0 does not require grad", g, 2);
        tg_tensor *two[2] = {m.t[W1], unused};
        g[0] = g[1] = (tg_tensor *)stale;
        expect_error(tg_grad(&loss, 1, two, 2, NULL, create_graph, g), "tg_grad",
                     "input 1 is not used", g, 2);
        /* A leaf has no history; a result of a TG_NO_GRAD tape neither. */
        expect_error(tg_grad(&m.t[X], 1, &m.t[X], 1, NULL, create_graph, g), "tg_grad",
                     "output 0 has no recorded history", g, 1);
        tg_tape *inner = tg_tape_begin(TG_NO_GRAD);
        tg_tensor *nograd = tg_sum(m.t[X]);
        expect_error(tg_grad(&nograd, 1, &m.t[X], 1, NULL, create_graph, g), "tg_grad",
                     "no recorded history", g, 1);
        assert_int_equal(tg_tape_end(inner), TG_OK);
        /* Implicit ones for a [3, 2] output. */
        expect_error(tg_grad(&out, 1, &m.t[X], 1, NULL, create_graph, g), "tg_grad",
                     "only for a one-element output", g, 1);
        tg_tensor *bad_dy = tg_ones(2, (const int64_t[]){2, 3});
        expect_error(tg_grad(&out, 1, &m.t[X], 1, &bad_dy, create_graph, g), "tg_grad",
                     "output 0 [3, 2] and its grad_output [2, 3] differ in shape", g, 1);
        tg_tensor *none = TG_NONE;
        expect_error(tg_grad(&out, 1, &m.t[X], 1, &none, create_graph, g), "tg_grad",
                     "a grad_output is TG_NONE", g, 1);
        expect_error(tg_grad(&none, 1, &m.t[X], 1, NULL, create_graph, g), "tg_grad",
                     "an output is TG_NONE", g, 1);
        expect_error(tg_grad(&loss, 1, &none, 1, NULL, create_graph, g), "tg_grad",
                     "an input is TG_NONE", g, 1);
        tg_tensor *null_t = NULL;
        tg_clear_error();
        expect_error(tg_grad(&null_t, 1, &m.t[X], 1, NULL, create_graph, g), "tg_grad",
                     "output 0 is NULL", g, 1);
        expect_error(tg_grad(&loss, 1, &null_t, 1, NULL, create_graph, g), "tg_grad",
                     "input 0 is NULL", g, 1);
        expect_error(tg_grad(NULL, 1, &m.t[X], 1, NULL, create_graph, g), "tg_grad",
                     "outputs is NULL", g, 0);
        expect_error(tg_grad(&loss, 1, NULL, 1, NULL, create_graph, g), "tg_grad", "inputs is NULL",
                     g, 0);
        expect_error(tg_grad(&loss, 1, &m.t[X], 1, NULL, create_graph, NULL), "tg_grad",
                     "grads is NULL", g, 0);
        expect_error(tg_grad(&loss, 1, &m.t[X], 0, NULL, create_graph, g), "tg_grad",
                     "n_inputs must be at least 1", g, 0);
        expect_error(tg_grad(&loss, 0, &m.t[X], 1, NULL, create_graph, g), "tg_grad", "n_outputs 0",
                     g, 0);
    }
    /* create_graph records ops: not on a TG_NO_GRAD innermost tape (the values alone work). */
    tg_tape *inner = tg_tape_begin(TG_NO_GRAD);
    expect_error(tg_grad(&loss, 1, &m.t[X], 1, NULL, true, g), "tg_grad",
                 "the innermost tape is TG_NO_GRAD", g, 1);
    expect_error(tg_backward_ex(loss, NULL, true), "tg_backward_ex",
                 "the innermost tape is TG_NO_GRAD", g, 0);
    assert_int_equal(tg_grad(&loss, 1, &m.t[X], 1, NULL, false, g), TG_OK);
    assert_non_null(g[0]);
    assert_null(g[0]->node);
    assert_int_equal(tg_tape_end(inner), TG_OK);
    assert_null(m.t[X]->grad);

    /* tg_backward_ex's own checks, named for it. */
    expect_error(tg_backward_ex(m.t[X], NULL, true), "tg_backward_ex",
                 "output 0 has no recorded history", g, 0);
    expect_error(tg_backward_ex(out, NULL, true), "tg_backward_ex", "only for a one-element output",
                 g, 0);
    for (int k = 0; k < N_LEAVES; k++)
        assert_null(m.t[k]->grad);
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_tensor_release(plain);
    tg_tensor_release(unused);
    mlp_free(&m);
}

/* An op without a second-order rule: the graph walk fails naming it and why, no gradient is
 * returned, and the next call works (no gradient is left on the nodes). A create_graph
 * gradient through tanh holds tanh_grad (g * (1 - y^2)), whose own second order (the third
 * derivative of tanh) states its no_graph_reason: differentiating that gradient once more with
 * create_graph is that case. If tanh_grad ever gains a rule, this case moves to another op
 * that states a reason. */
static void test_error_no_second_order(void **state)
{
    (void)state;
    mlp m = mlp_new();
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *loss = mlp_loss(&m), *g1 = NULL, *g2 = NULL, *g3 = NULL;
    assert_int_equal(tg_grad(&loss, 1, &m.t[X], 1, NULL, true, &g1), TG_OK);
    tg_tensor *s = tg_sum(tg_square(g1));
    g2 = (tg_tensor *)&g2;
    expect_error(tg_grad(&s, 1, &m.t[X], 1, NULL, true, &g2), "tg_grad",
                 "the backward of tg_tanh_grad has no second order (third order", &g2, 1);
    expect_error(tg_backward_ex(s, NULL, true), "tg_backward_ex",
                 "the backward of tg_tanh_grad has no second order", &g2, 0);
    for (int k = 0; k < N_LEAVES; k++)
        assert_null(m.t[k]->grad);
    /* Without create_graph that derivative is there; and the first call still works. */
    assert_int_equal(tg_grad(&s, 1, &m.t[X], 1, NULL, false, &g2), TG_OK);
    assert_non_null(g2);
    assert_int_equal(tg_grad(&loss, 1, &m.t[X], 1, NULL, true, &g3), TG_OK);
    assert_tensors_close("d loss / d x again", g3, g1, 0.0);
    assert_int_equal(tg_tape_end(tape), TG_OK);
    mlp_free(&m);
}

/* TG_CHECK_FINITE traps a gradient that is not finite in both walks, naming the op: sqrt's
 * derivative at 0 is 0.5 / 0. */
static void test_finite_trap(void **state)
{
    (void)state;
    tg_tensor *x = tg_tensor_zeros(TG_DIMS(3));
    assert_int_equal(tg_tensor_set_requires_grad(x, true), TG_OK);
    tg_set_check_finite(true);
    for (int graph = 0; graph < 2; graph++) {
        tg_tape *tape = tg_tape_begin(TG_GRAD);
        tg_tensor *y = tg_sum(tg_sqrt(x)), *g = (tg_tensor *)&g;
        assert_int_equal(tg_grad(&y, 1, &x, 1, NULL, graph, &g), TG_ERR_STATE);
        assert_null(g);
        assert_error_contains("TG_CHECK_FINITE");
        assert_error_contains(graph ? "tg_sqrt_grad" : "the backward of sqrt");
        tg_clear_error();
        assert_int_equal(tg_tape_end(tape), TG_OK);
    }
    tg_set_check_finite(false);
    assert_null(x->grad);
    tg_tensor_release(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TG_TEST(test_values_match_backward),
        TG_TEST(test_two_outputs),
        TG_TEST(test_no_grad_touched),
        TG_TEST(test_input_twice),
        TG_TEST(test_non_leaf_input),
        TG_TEST(test_output_is_input),
        TG_TEST(test_create_graph_second_derivative),
        TG_TEST(test_backward_ex_create_graph),
        TG_TEST(test_backward_ex_with_dy),
        TG_TEST(test_backward_ex_identity),
        TG_TEST(test_errors),
        TG_TEST(test_error_no_second_order),
        TG_TEST(test_finite_trap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
