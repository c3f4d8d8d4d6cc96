/* Optimizers: golden steps against PyTorch, skipped parameters, shared parameters, learning
 * rate, state dicts and their validation, argument errors, and a small MLP trained to near zero
 * loss with each optimizer. */
#include "common.h"

#include "data.h"
#include "nn.h"
#include "optim.h"

#include "golden/clip_golden.h"
#include "golden/optim_golden.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* |got - want| <= 1e-4 |want| + 1e-5 for every element. */
static void assert_values(const char *what, int step, const float *got, const float *want,
                          int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        double tol = 1e-4 * fabs(want[i]) + 1e-5;
        if (!(fabs((double)got[i] - want[i]) <= tol))
            fail_msg("%s, step %d, element %lld: %.9g, PyTorch %.9g", what, step + 1, (long long)i,
                     got[i], want[i]);
    }
}

/* Gives the leaf p (2-D) the gradient g through the engine: y = p @ I, backward with dy = g. */
static void set_grad(tg_tensor *p, const float *g)
{
    tg_tensor_zero_grad(p);
    int64_t cols = p->shape[1];
    tg_tensor *eye = tg_tensor_zeros(TG_DIMS(cols, cols));
    tg_tensor *dy = tg_tensor_from_data(p->ndim, p->shape, g);
    for (int64_t i = 0; i < cols; i++)
        eye->data[i * cols + i] = 1.0f;
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    assert_int_equal(tg_backward_grad(tg_matmul(p, eye), dy), TG_OK);
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_tensor_release(eye);
    tg_tensor_release(dy);
}

static tg_tensor *param(int ndim, const int64_t *shape, const float *v)
{
    tg_tensor *t = tg_tensor_from_data(ndim, shape, v);
    assert_non_null(t);
    assert_int_equal(tg_tensor_set_requires_grad(t, true), TG_OK);
    return t;
}

static tg_optim *golden_optim(const optim_golden_case *c, tg_tensor **ps, int64_t n)
{
    tg_optim *o = NULL;
    if (c->kind == 0)
        o = tg_optim_sgd(ps, n, c->lr, c->momentum, c->dampening, c->weight_decay, c->nesterov);
    else if (c->kind == 1)
        o = tg_optim_adam(ps, n, c->lr, c->beta1, c->beta2, c->eps, c->weight_decay);
    else
        o = tg_optim_adamw(ps, n, c->lr, c->beta1, c->beta2, c->eps, c->weight_decay);
    if (!o)
        fail_msg("%s: %s", c->name, tg_last_error());
    return o;
}

/* Gradients of golden step s for the two parameters (b gets none on step 2). */
static void golden_grads(tg_tensor *a, tg_tensor *b, int s)
{
    set_grad(a, golden_grad_a[s]);
    if (golden_has_grad_b[s])
        set_grad(b, golden_grad_b[s]);
    else
        tg_tensor_zero_grad(b);
}

/* Three steps of every optimizer configuration match torch.optim, including a parameter
 * skipped on one step (its Adam step count must not advance). */
static void test_golden_steps(void **state)
{
    (void)state;
    size_t n_cases = sizeof golden_optim_cases / sizeof golden_optim_cases[0];
    for (size_t k = 0; k < n_cases; k++) {
        const optim_golden_case *c = &golden_optim_cases[k];
        tg_tensor *a = param(TG_DIMS(1, 7), golden_p0_a);
        tg_tensor *b = param(TG_DIMS(2, 3), golden_p0_b);
        tg_tensor *ps[2] = {a, b};
        tg_optim *o = golden_optim(c, ps, 2);
        for (int s = 0; s < OPTIM_GOLDEN_STEPS; s++) {
            golden_grads(a, b, s);
            uint64_t va = tg_tensor_version(a);
            assert_int_equal(tg_optim_step(o), TG_OK);
            assert_true(tg_tensor_version(a) > va); /* in-place change recorded */
            char what[96];
            snprintf(what, sizeof what, "%s param 0", c->name);
            assert_values(what, s, a->data, c->a[s], 7);
            snprintf(what, sizeof what, "%s param 1", c->name);
            assert_values(what, s, b->data, c->b[s], 6);
        }
        tg_optim_free(o);
        tg_tensor_release(a);
        tg_tensor_release(b);
    }
}

/* A parameter without a gradient is left exactly as it was. */
static void test_no_grad_is_skipped(void **state)
{
    (void)state;
    tg_tensor *a = param(TG_DIMS(1, 7), golden_p0_a);
    tg_optim *o = tg_optim_adam(&a, 1, 0.1f, TG_ADAM_BETA1, TG_ADAM_BETA2, TG_ADAM_EPS, 0.1f);
    assert_non_null(o);
    uint64_t v = tg_tensor_version(a);
    assert_int_equal(tg_optim_step(o), TG_OK);
    assert_memory_equal(a->data, golden_p0_a, sizeof golden_p0_a);
    assert_true(tg_tensor_version(a) == v);
    /* zero_grad frees the gradient: a step after it changes nothing either. */
    set_grad(a, golden_grad_a[0]);
    tg_optim_zero_grad(o);
    assert_null(a->grad);
    assert_int_equal(tg_optim_step(o), TG_OK);
    assert_memory_equal(a->data, golden_p0_a, sizeof golden_p0_a);
    tg_optim_free(o);
    tg_tensor_release(a);
}

/* Two optimizers over the same tensor keep separate state: A's second step continues A's
 * moments while B's first step is a fresh one. Replayed on a copy with separate optimizers. */
static void test_shared_params_separate_state(void **state)
{
    (void)state;
    tg_tensor *p = param(TG_DIMS(1, 7), golden_p0_a), *q = param(TG_DIMS(1, 7), golden_p0_a);
    tg_optim *oa = tg_optim_adam(&p, 1, 0.05f, 0.9f, 0.999f, 1e-8f, 0.0f);
    tg_optim *ob = tg_optim_adam(&p, 1, 0.05f, 0.9f, 0.999f, 1e-8f, 0.0f);
    tg_optim *qa = tg_optim_adam(&q, 1, 0.05f, 0.9f, 0.999f, 1e-8f, 0.0f);
    tg_optim *qb = tg_optim_adam(&q, 1, 0.05f, 0.9f, 0.999f, 1e-8f, 0.0f);
    assert_true(oa && ob && qa && qb);

    set_grad(p, golden_grad_a[0]);
    set_grad(q, golden_grad_a[0]);
    assert_int_equal(tg_optim_step(oa), TG_OK);
    assert_int_equal(tg_optim_step(qa), TG_OK);
    /* B's first step: Adam's first update is lr * g / (|g| + eps) per element. */
    set_grad(p, golden_grad_a[1]);
    float before[7];
    memcpy(before, p->data, sizeof before);
    assert_int_equal(tg_optim_step(ob), TG_OK);
    for (int i = 0; i < 7; i++) {
        float g = golden_grad_a[1][i];
        assert_close(p->data[i], before[i] - 0.05f * g / (fabsf(g) + 1e-8f), 1e-6);
    }
    set_grad(q, golden_grad_a[1]);
    assert_int_equal(tg_optim_step(qb), TG_OK);
    /* A's second step: the same as qa's, whose state saw only step 1. */
    set_grad(p, golden_grad_a[2]);
    set_grad(q, golden_grad_a[2]);
    assert_int_equal(tg_optim_step(oa), TG_OK);
    assert_int_equal(tg_optim_step(qa), TG_OK);
    assert_memory_equal(p->data, q->data, 7 * sizeof(float));

    tg_optim_free(oa);
    tg_optim_free(ob);
    tg_optim_free(qa);
    tg_optim_free(qb);
    tg_tensor_release(p);
    tg_tensor_release(q);
}

/* The learning rate can change between steps; plain SGD moves by exactly lr * g. */
static void test_set_lr(void **state)
{
    (void)state;
    tg_tensor *a = param(TG_DIMS(1, 7), golden_p0_a);
    tg_optim *o = tg_optim_sgd(&a, 1, 0.5f, 0.0f, 0.0f, 0.0f, false);
    assert_non_null(o);
    assert_true(tg_optim_lr(o) == 0.5f);
    assert_int_equal(tg_optim_set_lr(o, 0.25f), TG_OK);
    assert_true(tg_optim_lr(o) == 0.25f);
    assert_int_equal(tg_optim_set_lr(o, -1.0f), TG_ERR_ARG);
    assert_error_contains("tg_optim_set_lr: learning rate -1");
    set_grad(a, golden_grad_a[0]);
    assert_int_equal(tg_optim_step(o), TG_OK);
    for (int i = 0; i < 7; i++)
        assert_close(a->data[i], golden_p0_a[i] - 0.25f * golden_grad_a[0][i], 1e-6);
    tg_optim_free(o);
    tg_tensor_release(a);
}

/* Steps 1-2 with one optimizer, save (through a file), load into a fresh optimizer over copies
 * of the parameters, step 3: the result is PyTorch's step 3 (hyper-parameters restored from the
 * metadata too, though the fresh optimizer was created with other values). */
static void test_state_dict_round_trip(void **state)
{
    (void)state;
    size_t n_cases = sizeof golden_optim_cases / sizeof golden_optim_cases[0];
    for (size_t k = 0; k < n_cases; k++) {
        const optim_golden_case *c = &golden_optim_cases[k];
        tg_tensor *a = param(TG_DIMS(1, 7), golden_p0_a);
        tg_tensor *b = param(TG_DIMS(2, 3), golden_p0_b);
        tg_tensor *ps[2] = {a, b};
        tg_optim *o = golden_optim(c, ps, 2);
        for (int s = 0; s < 2; s++) {
            golden_grads(a, b, s);
            assert_int_equal(tg_optim_step(o), TG_OK);
        }
        tg_state_dict *sd = tg_state_dict_new();
        assert_int_equal(tg_optim_state_dict(o, "opt", sd), TG_OK);
        if (c->kind != 0) {
            assert_non_null(tg_state_dict_get(sd, "opt.0.exp_avg_sq"));
            tg_tensor *steps_b = tg_state_dict_get(sd, "opt.1.step");
            assert_non_null(steps_b);
            assert_true(tg_tensor_item(steps_b) == 1.0f); /* skipped on step 2 */
            assert_string_equal(tg_state_dict_meta(sd, "opt.type"),
                                c->kind == 1 ? "Adam" : "AdamW");
        }
        tg_optim_free(o); /* the dict keeps the state tensors alive */
        /* Through a safetensors file: 0-d steps and the metadata survive it. */
        char path[] = "/tmp/tg_test_optim_XXXXXX";
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        close(fd);
        if (tg_data_save_safetensors(path, sd) != TG_OK)
            fail_msg("%s", tg_last_error());
        tg_state_dict_free(sd);
        sd = tg_data_load_safetensors(path);
        unlink(path);
        if (!sd)
            fail_msg("%s", tg_last_error());

        tg_tensor *a2 = param(TG_DIMS(1, 7), a->data), *b2 = param(TG_DIMS(2, 3), b->data);
        tg_tensor *ps2[2] = {a2, b2};
        optim_golden_case other = *c;
        other.lr = 1.0f;
        other.weight_decay = 0.0f;
        other.nesterov = 0;
        tg_optim *o2 = golden_optim(&other, ps2, 2);
        assert_int_equal(tg_optim_load_state_dict(o2, "opt", sd), TG_OK);
        assert_true(tg_optim_lr(o2) == c->lr);
        tg_state_dict_free(sd);
        golden_grads(a2, b2, 2);
        assert_int_equal(tg_optim_step(o2), TG_OK);
        char what[96];
        snprintf(what, sizeof what, "%s after load", c->name);
        assert_values(what, 2, a2->data, c->a[2], 7);
        assert_values(what, 2, b2->data, c->b[2], 6);
        tg_optim_free(o2);
        tg_tensor_release(a);
        tg_tensor_release(b);
        tg_tensor_release(a2);
        tg_tensor_release(b2);
    }
}

/* Every bad state dict is refused with a message naming the problem, and the optimizer is
 * unchanged afterwards: its next step still matches PyTorch's. */
static void test_load_errors_change_nothing(void **state)
{
    (void)state;
    const optim_golden_case *c = &golden_optim_cases[4]; /* adam */
    assert_string_equal(c->name, "adam");
    tg_tensor *a = param(TG_DIMS(1, 7), golden_p0_a);
    tg_tensor *b = param(TG_DIMS(2, 3), golden_p0_b);
    tg_tensor *ps[2] = {a, b};
    tg_optim *o = golden_optim(c, ps, 2);
    for (int s = 0; s < 2; s++) {
        golden_grads(a, b, s);
        assert_int_equal(tg_optim_step(o), TG_OK);
    }
    tg_tensor *m7 = tg_tensor_zeros(TG_DIMS(1, 7)), *m3 = tg_tensor_zeros(TG_DIMS(3));
    tg_tensor *one = tg_tensor_scalar(1.0f), *half = tg_tensor_scalar(0.5f);
    /* values no state can hold (issue 19, item 12) */
    tg_tensor *m7nan = tg_tensor_zeros(TG_DIMS(1, 7)), *m7neg = tg_tensor_zeros(TG_DIMS(1, 7));
    m7nan->data[3] = NAN, m7neg->data[6] = -1.0f;
    struct {
        const char *entries[3]; /* names; tensors chosen below */
        tg_tensor *tensors[3];
        const char *meta_key, *meta_value;
        tg_status status;
        const char *message;
    } bad[] = {
        {{"o.0.step", "o.0.exp_avg", "o.0.exp_avg_sq"},
         {one, m7, m7},
         "o.type",
         "SGD",
         TG_ERR_ARG,
         "\"o.type\" is \"SGD\", this optimizer is Adam"},
        {{"o.0.step", "o.0.exp_avg", "o.0.exp_avg_sq"},
         {one, m7, m7},
         "o.num_params",
         "3",
         TG_ERR_ARG,
         "this optimizer has 2 parameters"},
        {{"o.0.step", "o.0.exp_avg", "o.2.exp_avg"},
         {one, m7, m7},
         NULL,
         NULL,
         TG_ERR_ARG,
         "unexpected entry \"o.2.exp_avg\""},
        {{"o.0.step", "o.0.exp_avg", "o.0.momentum_buffer"},
         {one, m7, m7},
         NULL,
         NULL,
         TG_ERR_ARG,
         "unexpected entry \"o.0.momentum_buffer\""},
        {{"o.0.step", "o.0.exp_avg", NULL},
         {one, m7, NULL},
         NULL,
         NULL,
         TG_ERR_ARG,
         "incomplete: \"o.0.exp_avg_sq\" is missing"},
        {{"o.0.step", "o.0.exp_avg", "o.0.exp_avg_sq"},
         {one, m7, m3},
         NULL,
         NULL,
         TG_ERR_SHAPE,
         "\"o.0.exp_avg_sq\" has shape [3]; parameter 0 has [1, 7]"},
        {{"o.0.step", "o.0.exp_avg", "o.0.exp_avg_sq"},
         {half, m7, m7},
         NULL,
         NULL,
         TG_ERR_ARG,
         "\"o.0.step\" [] must hold one whole step count"},
        {{"o.0.step", "o.0.exp_avg", "o.0.exp_avg_sq"},
         {one, m7, m7},
         "o.lr",
         "fast",
         TG_ERR_FORMAT,
         "\"o.lr\" is \"fast\", not a number"},
        {{"o.0.step", "o.0.exp_avg", "o.0.exp_avg_sq"},
         {one, m7, m7},
         "o.betas",
         "0.9",
         TG_ERR_FORMAT,
         "not \"beta1,beta2\""},
        {{"o.0.step", "o.0.exp_avg", "o.0.exp_avg_sq"},
         {one, m7, m7},
         "o.betas",
         "0.9,1.5",
         TG_ERR_ARG,
         "betas (0.9, 1.5): each must lie in [0, 1)"},
        /* issue 19, item 18: one strict number reader */
        {{"o.0.step", "o.0.exp_avg", "o.0.exp_avg_sq"},
         {one, m7, m7},
         "o.lr",
         "0garbage",
         TG_ERR_FORMAT,
         "\"o.lr\" is \"0garbage\", not a number"},
        {{"o.0.step", "o.0.exp_avg", "o.0.exp_avg_sq"},
         {one, m7, m7},
         "o.weight_decay",
         "0x0p+0",
         TG_ERR_FORMAT,
         "\"o.weight_decay\" is \"0x0p+0\", not a number"},
        {{"o.0.step", "o.0.exp_avg", "o.0.exp_avg_sq"},
         {one, m7, m7},
         "o.betas",
         "0.9, 0.999",
         TG_ERR_FORMAT,
         "not \"beta1,beta2\""},
        {{"o.0.step", "o.0.exp_avg", "o.0.exp_avg_sq"},
         {one, m7, m7},
         "o.eps",
         "nan",
         TG_ERR_FORMAT,
         "\"o.eps\" is \"nan\", not a number"},
        /* item 14: what the file says is quoted escaped */
        {{"o.0.step", "o.0.exp_avg", "o.0.exp_avg_sq"},
         {one, m7, m7},
         "o.type",
         "SG\x1b[31mD\n",
         TG_ERR_ARG,
         "\"o.type\" is \"SG\\x1b[31mD\\x0a\", this optimizer is Adam"},
        /* item 12: state values */
        {{"o.0.step", "o.0.exp_avg", "o.0.exp_avg_sq"},
         {one, m7nan, m7},
         NULL,
         NULL,
         TG_ERR_ARG,
         "\"o.0.exp_avg\" holds nan at index 3: need a finite value"},
        {{"o.0.step", "o.0.exp_avg", "o.0.exp_avg_sq"},
         {one, m7, m7neg},
         NULL,
         NULL,
         TG_ERR_ARG,
         "\"o.0.exp_avg_sq\" holds -1 at index 6: need a finite value >= 0"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        tg_state_dict *sd = tg_state_dict_new();
        for (int e = 0; e < 3; e++)
            if (bad[k].entries[e])
                assert_int_equal(tg_state_dict_put(sd, bad[k].entries[e], bad[k].tensors[e]),
                                 TG_OK);
        if (bad[k].meta_key)
            assert_int_equal(tg_state_dict_set_meta(sd, bad[k].meta_key, bad[k].meta_value), TG_OK);
        tg_clear_error();
        assert_int_equal(tg_optim_load_state_dict(o, "o", sd), bad[k].status);
        assert_error_contains("tg_optim_load_state_dict: ");
        assert_error_contains(bad[k].message);
        tg_state_dict_free(sd);
    }
    /* Entries under other prefixes are not the optimizer's business. */
    tg_state_dict *sd = tg_state_dict_new();
    assert_int_equal(tg_state_dict_put(sd, "G.fc.weight", m7), TG_OK);
    assert_int_equal(tg_state_dict_put(sd, "other.0.exp_avg", m3), TG_OK);
    assert_int_equal(tg_optim_state_dict(o, "o", sd), TG_OK);
    assert_int_equal(tg_optim_load_state_dict(o, "o", sd), TG_OK);
    tg_state_dict_free(sd);

    assert_true(tg_optim_lr(o) == c->lr);
    golden_grads(a, b, 2);
    assert_int_equal(tg_optim_step(o), TG_OK);
    assert_values("adam after refused loads", 2, a->data, c->a[2], 7);
    assert_values("adam after refused loads", 2, b->data, c->b[2], 6);
    tg_optim_free(o);
    tg_tensor_release(a);
    tg_tensor_release(b);
    tg_tensor_release(m7);
    tg_tensor_release(m3);
    tg_tensor_release(one);
    tg_tensor_release(half);
    tg_tensor_release(m7nan);
    tg_tensor_release(m7neg);
}

static void test_argument_errors(void **state)
{
    (void)state;
    tg_tensor *a = param(TG_DIMS(1, 7), golden_p0_a);
    tg_tensor *twice[2] = {a, a}, *none[1] = {NULL};
    assert_null(tg_optim_sgd(&a, 1, 0.1f, 0.9f, 0.5f, 0.0f, true));
    assert_error_contains("tg_optim_sgd: Nesterov momentum needs momentum > 0 and dampening 0");
    assert_null(tg_optim_sgd(&a, 1, 0.1f, 0.0f, 0.0f, 0.0f, true));
    assert_error_contains("Nesterov");
    assert_null(tg_optim_adam(&a, 1, 0.1f, 1.0f, 0.999f, 1e-8f, 0.0f));
    assert_error_contains("tg_optim_adam: betas (1, 0.999): each must lie in [0, 1)");
    assert_null(tg_optim_adamw(&a, 1, -0.1f, 0.9f, 0.999f, 1e-8f, 0.0f));
    assert_error_contains("tg_optim_adamw: learning rate -0.1");
    assert_null(tg_optim_adam(&a, 1, 0.1f, 0.9f, 0.999f, 1e-8f, -1.0f));
    assert_error_contains("weight_decay -1");
    assert_null(tg_optim_adam(twice, 2, 0.1f, 0.9f, 0.999f, 1e-8f, 0.0f));
    assert_error_contains("parameters 0 and 1 are the same tensor");
    assert_null(tg_optim_adam(none, 1, 0.1f, 0.9f, 0.999f, 1e-8f, 0.0f));
    assert_error_contains("parameter 0 is NULL");
    assert_null(tg_optim_adam(&a, 0, 0.1f, 0.9f, 0.999f, 1e-8f, 0.0f));
    assert_error_contains("at least one parameter");
    tg_tensor *ones = tg_tensor_ones(TG_DIMS(7, 1));
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_matmul(a, ones);
    assert_null(tg_optim_sgd(&y, 1, 0.1f, 0.0f, 0.0f, 0.0f, false));
    assert_error_contains("parameter 0 is the result of an op, not a leaf");
    tg_tape_end(tape);
    tg_tensor_release(ones);
    tg_tensor_release(a);
}

/* ---- where Adam's eps enters (tg_optim_set_adam_eps) ------------------------------------- */

/* Three steps of gradients about as large as eps = 1e-3, where the two placements differ most
 * (once sqrt(v) >> eps both reduce to the same m / sqrt(v) update); signs and sizes vary so that
 * m and v follow no single gradient. */
#define EPS_N 3
#define EPS_STEPS 3
static const float eps_lr = 0.1f, eps_beta1 = 0.9f, eps_beta2 = 0.999f, eps_eps = 1e-3f;
static const float eps_p0[EPS_N] = {0.5f, -0.25f, 1.0f};
static const float eps_grads[EPS_STEPS][EPS_N] = {
    {1e-3f, -2e-3f, 5e-4f}, {-1.5e-3f, 1e-3f, 2.5e-3f}, {2e-3f, -5e-4f, -1e-3f}};
/* The library steps in float: its rounding (~1e-7 of parameters near 1) stays well inside this,
 * while every update of either style is above 1e-3. */
#define EPS_TOL 1e-6

/* The parameter after each step by optim.h's formula for style, in double, with the float
 * hyper-parameters the optimizer holds. */
static void eps_reference(tg_adam_eps style, double want[EPS_STEPS][EPS_N])
{
    const double b1 = eps_beta1, b2 = eps_beta2, lr = eps_lr, eps = eps_eps;
    for (int i = 0; i < EPS_N; i++) {
        double p = eps_p0[i], m = 0, v = 0;
        for (int t = 1; t <= EPS_STEPS; t++) {
            double g = eps_grads[t - 1][i];
            m = b1 * m + (1 - b1) * g;
            v = b2 * v + (1 - b2) * g * g;
            double bc1 = 1 - pow(b1, t), bc2 = 1 - pow(b2, t);
            if (style == TG_ADAM_EPS_BEFORE_CORRECTION)
                p -= lr * sqrt(bc2) / bc1 * m / (sqrt(v) + eps);
            else
                p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps);
            want[t - 1][i] = p;
        }
    }
}

/* The metadata under key is want (a missing key fails too, rather than crash the strcmp). */
static void assert_meta(const tg_state_dict *sd, const char *key, const char *want)
{
    const char *v = tg_state_dict_meta(sd, key);
    if (!v || strcmp(v, want) != 0)
        fail_msg("metadata \"%s\" is %s, expected \"%s\"", key, v ? v : "missing", want);
}

/* An Adam (or AdamW, weight decay 0: the same update) over p with the sequence's settings, in
 * its default eps style. */
static tg_optim *eps_optim(tg_tensor *p, bool adamw)
{
    tg_optim *o = adamw ? tg_optim_adamw(&p, 1, eps_lr, eps_beta1, eps_beta2, eps_eps, 0.0f)
                        : tg_optim_adam(&p, 1, eps_lr, eps_beta1, eps_beta2, eps_eps, 0.0f);
    if (!o)
        fail_msg("%s", tg_last_error());
    return o;
}

/* Takes steps from..to-1 of the sequence and checks p after each against want. */
static void eps_run(const char *what, tg_optim *o, tg_tensor *p, int from, int to,
                    double want[EPS_STEPS][EPS_N])
{
    for (int s = from; s < to; s++) {
        set_grad(p, eps_grads[s]);
        assert_int_equal(tg_optim_step(o), TG_OK);
        for (int i = 0; i < EPS_N; i++)
            if (!(fabs(p->data[i] - want[s][i]) <= EPS_TOL))
                fail_msg("%s, step %d, element %d: %.9g, expected %.9g", what, s + 1, i,
                         (double)p->data[i], want[s][i]);
    }
}

/* Adam and AdamW follow the hand-computed sequence of each style; the default is PyTorch's
 * placement (after the correction), unchanged by the option's existence. */
static void test_adam_eps_styles(void **state)
{
    (void)state;
    double before[EPS_STEPS][EPS_N], after[EPS_STEPS][EPS_N];
    eps_reference(TG_ADAM_EPS_BEFORE_CORRECTION, before);
    eps_reference(TG_ADAM_EPS_AFTER_CORRECTION, after);
    /* The sequence tells the styles apart: after every step they are over 0.03 apart. */
    for (int s = 0; s < EPS_STEPS; s++)
        for (int i = 0; i < EPS_N; i++)
            if (!(fabs(before[s][i] - after[s][i]) > 1000 * EPS_TOL))
                fail_msg("step %d, element %d: both styles give %.9g", s + 1, i, after[s][i]);
    const char *names[] = {"Adam", "AdamW"};
    for (int adamw = 0; adamw < 2; adamw++) {
        char what[64];
        tg_tensor *p = param(TG_DIMS(1, EPS_N), eps_p0);
        tg_optim *o = eps_optim(p, adamw);
        assert_int_equal(tg_optim_adam_eps(o), TG_ADAM_EPS_AFTER_CORRECTION);
        snprintf(what, sizeof what, "%s, default eps style", names[adamw]);
        eps_run(what, o, p, 0, EPS_STEPS, after);
        tg_optim_free(o);
        tg_tensor_release(p);

        p = param(TG_DIMS(1, EPS_N), eps_p0);
        o = eps_optim(p, adamw);
        assert_int_equal(tg_optim_set_adam_eps(o, TG_ADAM_EPS_BEFORE_CORRECTION), TG_OK);
        assert_int_equal(tg_optim_adam_eps(o), TG_ADAM_EPS_BEFORE_CORRECTION);
        snprintf(what, sizeof what, "%s, eps before the correction", names[adamw]);
        eps_run(what, o, p, 0, EPS_STEPS, before);
        tg_optim_free(o);
        tg_tensor_release(p);
    }
}

/* SGD has no eps to place; a value outside tg_adam_eps is refused; neither changes the style. */
static void test_adam_eps_errors(void **state)
{
    (void)state;
    tg_tensor *p = param(TG_DIMS(1, EPS_N), eps_p0);
    tg_optim *sgd = tg_optim_sgd(&p, 1, 0.1f, 0.9f, 0.0f, 0.0f, false);
    assert_non_null(sgd);
    assert_int_equal(tg_optim_set_adam_eps(sgd, TG_ADAM_EPS_BEFORE_CORRECTION), TG_ERR_ARG);
    assert_error_contains("tg_optim_set_adam_eps: this optimizer is SGD");
    assert_int_equal(tg_optim_adam_eps(sgd), TG_ADAM_EPS_AFTER_CORRECTION);
    tg_clear_error();

    tg_optim *o = eps_optim(p, false);
    assert_int_equal(tg_optim_set_adam_eps(o, TG_ADAM_EPS_BEFORE_CORRECTION), TG_OK);
    assert_int_equal(tg_optim_set_adam_eps(o, (tg_adam_eps)2), TG_ERR_ARG);
    assert_error_contains("tg_optim_set_adam_eps: style 2 is not a tg_adam_eps");
    assert_int_equal(tg_optim_adam_eps(o), TG_ADAM_EPS_BEFORE_CORRECTION);
    assert_int_equal(tg_optim_set_adam_eps(NULL, TG_ADAM_EPS_AFTER_CORRECTION), TG_ERR_ARG);
    assert_error_contains("tg_optim_set_adam_eps: the optimizer is NULL");
    tg_optim_free(o);
    tg_optim_free(sgd);
    tg_tensor_release(p);
}

/* The style travels in the state dict's metadata ("<prefix>.eps_style"): a load sets it either
 * way and step 3 continues the saved style's sequence; a value that names no style is refused
 * and changes nothing (style, learning rate, state). */
static void test_adam_eps_state_dict(void **state)
{
    (void)state;
    double want[2][EPS_STEPS][EPS_N];
    eps_reference(TG_ADAM_EPS_AFTER_CORRECTION, want[TG_ADAM_EPS_AFTER_CORRECTION]);
    eps_reference(TG_ADAM_EPS_BEFORE_CORRECTION, want[TG_ADAM_EPS_BEFORE_CORRECTION]);
    const char *names[] = {"after_correction", "before_correction"};
    for (int style = 0; style < 2; style++) {
        tg_tensor *p = param(TG_DIMS(1, EPS_N), eps_p0);
        tg_optim *o = eps_optim(p, false);
        assert_int_equal(tg_optim_set_adam_eps(o, (tg_adam_eps)style), TG_OK);
        eps_run("before the save", o, p, 0, 2, want[style]);
        tg_state_dict *sd = tg_state_dict_new();
        assert_int_equal(tg_optim_state_dict(o, "opt", sd), TG_OK);
        assert_meta(sd, "opt.eps_style", names[style]);
        tg_optim_free(o);

        /* Loaded into an optimizer of the other style (and another lr): both come back. */
        tg_tensor *q = param(TG_DIMS(1, EPS_N), p->data);
        tg_optim *o2 = tg_optim_adam(&q, 1, 1.0f, eps_beta1, eps_beta2, eps_eps, 0.0f);
        assert_non_null(o2);
        assert_int_equal(tg_optim_set_adam_eps(o2, (tg_adam_eps)!style), TG_OK);
        assert_int_equal(tg_optim_load_state_dict(o2, "opt", sd), TG_OK);
        assert_int_equal(tg_optim_adam_eps(o2), style);
        eps_run(style ? "after loading before_correction" : "after loading after_correction", o2, q,
                2, 3, want[style]);
        tg_state_dict_free(sd);
        tg_optim_free(o2);
        tg_tensor_release(p);
        tg_tensor_release(q);
    }
    /* Without a prefix the key is plain "eps_style". */
    tg_tensor *p = param(TG_DIMS(1, EPS_N), eps_p0);
    tg_optim *o = eps_optim(p, false);
    tg_state_dict *sd = tg_state_dict_new();
    assert_int_equal(tg_optim_state_dict(o, NULL, sd), TG_OK);
    assert_meta(sd, "eps_style", "after_correction");
    tg_state_dict_free(sd);

    /* A bad value in an otherwise valid dict, whose state (one step of other gradients) and lr
     * would change the optimizer: all refused. */
    tg_tensor *r = param(TG_DIMS(1, EPS_N), eps_p0);
    tg_optim *other = tg_optim_adam(&r, 1, 0.5f, eps_beta1, eps_beta2, eps_eps, 0.0f);
    assert_non_null(other);
    set_grad(r, eps_grads[2]);
    assert_int_equal(tg_optim_step(other), TG_OK);
    sd = tg_state_dict_new();
    assert_int_equal(tg_optim_state_dict(other, "opt", sd), TG_OK);
    assert_int_equal(tg_state_dict_set_meta(sd, "opt.eps_style", "Before_Correction"), TG_OK);
    assert_int_equal(tg_optim_set_adam_eps(o, TG_ADAM_EPS_BEFORE_CORRECTION), TG_OK);
    eps_run("before the refused load", o, p, 0, 2, want[TG_ADAM_EPS_BEFORE_CORRECTION]);
    assert_int_equal(tg_optim_load_state_dict(o, "opt", sd), TG_ERR_FORMAT);
    assert_error_contains("tg_optim_load_state_dict: \"opt.eps_style\" is \"Before_Correction\", "
                          "not after_correction or before_correction");
    assert_int_equal(tg_optim_adam_eps(o), TG_ADAM_EPS_BEFORE_CORRECTION);
    assert_true(tg_optim_lr(o) == eps_lr);
    eps_run("after the refused load", o, p, 2, 3, want[TG_ADAM_EPS_BEFORE_CORRECTION]);
    tg_state_dict_free(sd);
    tg_optim_free(other);
    tg_optim_free(o);
    tg_tensor_release(r);
    tg_tensor_release(p);
}

/* ---- an MLP learns XOR with each optimizer ----------------------------------------------- */

typedef enum { USE_SGD, USE_ADAM, USE_ADAMW } which_optim;

/* Trains a 2-8-1 tanh MLP on XOR (mean squared error) for iters full-batch steps; returns the
 * first and last losses. */
static void train_xor(which_optim which, int iters, float *first, float *last)
{
    tg_rng rng;
    tg_rng_seed(&rng, 7);
    tg_module *net = TG_NN_SEQUENTIAL(tg_nn_linear(2, 8, true, &rng), tg_nn_tanh(),
                                      tg_nn_linear(8, 1, true, &rng));
    assert_non_null(net);
    int64_t n;
    tg_tensor **params = tg_module_parameters(net, &n);
    assert_int_equal(n, 4);
    tg_optim *opt =
        which == USE_SGD ? tg_optim_sgd(params, n, 0.1f, 0.9f, 0.0f, 0.0f, false)
        : which == USE_ADAM
            ? tg_optim_adam(params, n, 0.05f, TG_ADAM_BETA1, TG_ADAM_BETA2, TG_ADAM_EPS, 0.0f)
            : tg_optim_adamw(params, n, 0.05f, TG_ADAM_BETA1, TG_ADAM_BETA2, TG_ADAM_EPS,
                             TG_ADAMW_WEIGHT_DECAY);
    free(params);
    assert_non_null(opt);
    tg_tensor *x = tg_tensor_from_data(TG_DIMS(4, 2), (const float[]){0, 0, 0, 1, 1, 0, 1, 1});
    tg_tensor *t = tg_tensor_from_data(TG_DIMS(4, 1), (const float[]){0, 1, 1, 0});
    for (int it = 0; it < iters; it++) {
        tg_tape *tape = tg_tape_begin(TG_GRAD);
        tg_tensor *loss = tg_mse(tg_module_forward(net, x), t, TG_REDUCE_MEAN);
        if (tg_backward(loss) != TG_OK)
            fail_msg("%s", tg_last_error());
        if (it == 0)
            *first = tg_tensor_item(loss);
        *last = tg_tensor_item(loss);
        assert_int_equal(tg_optim_step(opt), TG_OK);
        tg_optim_zero_grad(opt);
        tg_tape_end(tape);
    }
    tg_optim_free(opt);
    tg_module_free(net);
    tg_tensor_release(x);
    tg_tensor_release(t);
}

static void test_mlp_learns_xor(void **state)
{
    (void)state;
    const char *names[] = {"SGD momentum", "Adam", "AdamW"};
    for (int w = USE_SGD; w <= USE_ADAMW; w++) {
        float first = 0, last = 0;
        train_xor((which_optim)w, 400, &first, &last);
        print_message("XOR with %s: loss %.4g -> %.3g\n", names[w], first, last);
        if (!(last < 1e-3f && last < first / 100.0f))
            fail_msg("XOR with %s: loss %g -> %g", names[w], first, last);
    }
}

/* Three parameters as in gen_clip.py: a [7] and b [2, 3] with its gradients, c [4] without. */
static void clip_params(tg_tensor *ps[3])
{
    static const float zeros[7];
    ps[0] = param(TG_DIMS(7), zeros);
    ps[1] = param(TG_DIMS(2, 3), zeros);
    ps[2] = param(TG_DIMS(4), zeros);
    tg_tensor *ga = tg_tensor_from_data(TG_DIMS(7), clip_grad_a);
    tg_tensor *gb = tg_tensor_from_data(TG_DIMS(2, 3), clip_grad_b);
    assert_int_equal(tg_tensor_set_grad(ps[0], ga), TG_OK);
    assert_int_equal(tg_tensor_set_grad(ps[1], gb), TG_OK);
    tg_tensor_release(ga);
    tg_tensor_release(gb);
}

static void release_all(tg_tensor **ps, int n)
{
    for (int i = 0; i < n; i++)
        tg_tensor_release(ps[i]);
}

/* clip_grad_norm_ (2-, 1-, inf- and 3-norm, clipped or not, max_norm 0) and clip_grad_value_
 * give torch.nn.utils' total norm and gradients; a parameter without a gradient is skipped. */
static void test_clip_golden(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof clip_golden_cases / sizeof clip_golden_cases[0]; k++) {
        const clip_golden_case *c = &clip_golden_cases[k];
        tg_tensor *ps[3];
        clip_params(ps);
        if (c->max_norm >= 0.0f) {
            float total = -1.0f;
            assert_int_equal(tg_clip_grad_norm_(ps, 3, c->max_norm, c->norm_type, &total), TG_OK);
            assert_values(c->name, 0, &total, &c->total_norm, 1);
        } else {
            assert_int_equal(tg_clip_grad_value_(ps, 3, c->clip_value), TG_OK);
        }
        assert_values(c->name, 0, tg_tensor_grad(ps[0])->data, c->a, 7);
        assert_values(c->name, 0, tg_tensor_grad(ps[1])->data, c->b, 6);
        assert_null(tg_tensor_grad(ps[2]));
        release_all(ps, 3);
    }
}

/* Bad arguments and non-finite totals change nothing; a gradient someone else holds is not
 * written into; no parameters is a total of 0. */
static void test_clip_errors(void **state)
{
    (void)state;
    tg_tensor *ps[3];
    clip_params(ps);
    float total = -1.0f;
    assert_int_equal(tg_clip_grad_norm_(ps, 3, -1.0f, 2.0f, &total), TG_ERR_ARG);
    assert_error_contains("tg_clip_grad_norm_: max_norm -1: need a finite value >= 0");
    assert_int_equal(tg_clip_grad_norm_(ps, 3, NAN, 2.0f, NULL), TG_ERR_ARG);
    assert_int_equal(tg_clip_grad_norm_(ps, 3, 1.0f, 0.0f, NULL), TG_ERR_ARG);
    assert_error_contains("norm_type 0: need p > 0");
    assert_int_equal(tg_clip_grad_norm_(ps, 3, 1.0f, NAN, NULL), TG_ERR_ARG);
    assert_int_equal(tg_clip_grad_value_(ps, 3, -0.5f), TG_ERR_ARG);
    assert_error_contains("tg_clip_grad_value_: clip_value -0.5: need a value >= 0");
    assert_int_equal(tg_clip_grad_value_(ps, 3, NAN), TG_ERR_ARG);
    assert_int_equal(tg_clip_grad_norm_(NULL, 2, 1.0f, 2.0f, NULL), TG_ERR_ARG);
    assert_error_contains("tg_clip_grad_norm_: params is NULL");
    assert_int_equal(tg_clip_grad_value_(ps, -1, 1.0f), TG_ERR_ARG);
    tg_clear_error();
    assert_int_equal(tg_clip_grad_norm_((tg_tensor *[]){ps[0], NULL}, 2, 1.0f, 2.0f, NULL),
                     TG_ERR_ARG);
    assert_error_contains("tg_clip_grad_norm_: parameter 1 is NULL");
    assert_int_equal(tg_clip_grad_value_((tg_tensor *[]){TG_NONE}, 1, 1.0f), TG_ERR_ARG);
    assert_error_contains("tg_clip_grad_value_: parameter 0 is TG_NONE");
    assert_values("unchanged", 0, tg_tensor_grad(ps[0])->data, clip_grad_a, 7);
    /* A non-finite total (Inf and NaN, for the 2-norm and the max) is refused and reported. */
    for (int k = 0; k < 4; k++) {
        tg_tensor_grad(ps[1])->data[4] = k % 2 ? NAN : INFINITY;
        assert_int_equal(tg_clip_grad_norm_(ps, 3, 1.0f, k < 2 ? 2.0f : INFINITY, &total),
                         TG_ERR_ARG);
        assert_error_contains("gradients left unchanged");
        assert_false(isfinite(total));
        assert_values("unchanged", 0, tg_tensor_grad(ps[0])->data, clip_grad_a, 7);
    }
    tg_tensor_grad(ps[1])->data[4] = clip_grad_b[4];
    /* No parameters: total 0, nothing to do. */
    assert_int_equal(tg_clip_grad_norm_(NULL, 0, 1.0f, 2.0f, &total), TG_OK);
    assert_true(total == 0.0f);
    /* A gradient retained elsewhere keeps its values; the parameter gets a clipped copy. */
    tg_tensor *held = tg_tensor_retain(tg_tensor_grad(ps[0]));
    assert_int_equal(tg_clip_grad_value_(ps, 3, 0.5f), TG_OK);
    assert_values("held", 0, held->data, clip_grad_a, 7);
    assert_ptr_not_equal(tg_tensor_grad(ps[0]), held);
    assert_true(tg_tensor_grad(ps[0])->data[1] == 0.5f);
    tg_tensor_release(held);
    held = tg_tensor_retain(tg_tensor_grad(ps[1]));
    float before[6];
    memcpy(before, held->data, sizeof before);
    assert_int_equal(tg_clip_grad_norm_(ps, 3, 0.1f, 2.0f, NULL), TG_OK);
    assert_values("held", 0, held->data, before, 6);
    assert_true(fabsf(tg_tensor_grad(ps[1])->data[1]) < fabsf(before[1]));
    tg_tensor_release(held);
    release_all(ps, 3);
}

/* Optimizers built from a module take its parameters in tg_module_parameters' order and step
 * as the array versions do; the module clips clip every parameter. */
static void test_optim_from_module(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 11);
    tg_module *m = TG_NN_SEQUENTIAL(tg_nn_linear(3, 4, true, &rng), tg_nn_relu(),
                                    tg_nn_linear(4, 2, false, &rng));
    assert_non_null(m);
    int64_t n;
    tg_tensor **ps = tg_module_parameters(m, &n);
    assert_int_equal(n, 3);
    tg_optim *opts[3] = {tg_optim_sgd_module(m, 0.1f, 0.9f, 0.0f, 0.0f, false),
                         tg_optim_adam_module(m, 0.1f, 0.9f, 0.999f, 1e-8f, 0.1f),
                         tg_optim_adamw_module(m, 0.1f, 0.9f, 0.999f, 1e-8f, 0.01f)};
    for (int k = 0; k < 3; k++) {
        assert_non_null(opts[k]);
        assert_int_equal(tg_optim_num_params(opts[k]), n);
        for (int64_t i = 0; i < n; i++)
            assert_ptr_equal(tg_optim_params(opts[k])[i], ps[i]);
    }
    /* Adam from the module steps as Adam from the array. */
    tg_module *copy = TG_NN_SEQUENTIAL(tg_nn_linear(3, 4, true, &rng), tg_nn_relu(),
                                       tg_nn_linear(4, 2, false, &rng));
    tg_state_dict *sd = tg_state_dict_new();
    assert_int_equal(tg_module_state_dict(m, NULL, sd), TG_OK);
    assert_int_equal(tg_module_load_state_dict(copy, NULL, sd), TG_OK);
    tg_state_dict_free(sd);
    int64_t n2;
    tg_tensor **ps2 = tg_module_parameters(copy, &n2);
    tg_optim *ref = tg_optim_adam(ps2, n2, 0.1f, 0.9f, 0.999f, 1e-8f, 0.1f);
    tg_tensor *x = tg_tensor_from_data(TG_DIMS(2, 3), (const float[]){1, -2, 3, 0.5f, 1, -1});
    for (int step = 0; step < 2; step++) {
        tg_module *mods[2] = {m, copy};
        for (int k = 0; k < 2; k++) {
            tg_tape *tape = tg_tape_begin(TG_GRAD);
            assert_int_equal(tg_backward(tg_sum(tg_square(tg_module_forward(mods[k], x)))), TG_OK);
            tg_tape_end(tape);
        }
        /* Clipping through the module equals clipping the array. */
        float t1, t2;
        assert_int_equal(tg_module_clip_grad_norm_(m, 0.5f, 2.0f, &t1), TG_OK);
        assert_int_equal(tg_clip_grad_norm_(ps2, n2, 0.5f, 2.0f, &t2), TG_OK);
        assert_true(t1 == t2);
        assert_int_equal(tg_module_clip_grad_value_(m, 0.01f), TG_OK);
        assert_int_equal(tg_clip_grad_value_(tg_optim_params(ref), tg_optim_num_params(ref), 0.01f),
                         TG_OK);
        assert_int_equal(tg_optim_step(opts[1]), TG_OK);
        assert_int_equal(tg_optim_step(ref), TG_OK);
        tg_optim_zero_grad(opts[1]);
        tg_optim_zero_grad(ref);
        for (int64_t i = 0; i < n; i++)
            assert_values("adam_module", step, ps[i]->data, ps2[i]->data, ps[i]->numel);
    }
    tg_tensor_release(x);
    free(ps);
    free(ps2);
    tg_optim_free(ref);
    for (int k = 0; k < 3; k++)
        tg_optim_free(opts[k]);
    tg_module_free(copy);
    /* Errors: no parameters, a NULL module (that keeps an earlier error). */
    tg_module *relu = tg_nn_relu();
    assert_null(tg_optim_adam_module(relu, 0.1f, 0.9f, 0.999f, 1e-8f, 0.0f));
    assert_error_contains("tg_optim_adam_module: the ReLU module has no parameters to optimize");
    tg_clear_error();
    assert_null(tg_optim_sgd_module(NULL, 0.1f, 0.0f, 0.0f, 0.0f, false));
    assert_error_contains("tg_optim_sgd_module: the module is NULL");
    assert_null(tg_optim_adamw_module(tg_module_child(m, "7"), 0.1f, 0.9f, 0.999f, 1e-8f, 0.0f));
    assert_error_contains("tg_module_child: Sequential has no child \"7\"");
    assert_null(tg_optim_adam_module(m, -1.0f, 0.9f, 0.999f, 1e-8f, 0.0f));
    assert_error_contains("learning rate -1");
    float total = -1.0f;
    assert_int_equal(tg_module_clip_grad_norm_(relu, 1.0f, 2.0f, &total), TG_OK);
    assert_true(total == 0.0f);
    tg_clear_error();
    assert_int_equal(tg_module_clip_grad_value_(NULL, 1.0f), TG_ERR_ARG);
    assert_error_contains("tg_module_clip_grad_value_: the module is NULL");
    assert_null(tg_optim_params(NULL));
    tg_module_free(relu);
    tg_module_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TG_TEST(test_golden_steps),
        TG_TEST(test_no_grad_is_skipped),
        TG_TEST(test_shared_params_separate_state),
        TG_TEST(test_set_lr),
        TG_TEST(test_state_dict_round_trip),
        TG_TEST(test_load_errors_change_nothing),
        TG_TEST(test_argument_errors),
        TG_TEST(test_adam_eps_styles),
        TG_TEST(test_adam_eps_errors),
        TG_TEST(test_adam_eps_state_dict),
        TG_TEST(test_mlp_learns_xor),
        TG_TEST(test_clip_golden),
        TG_TEST(test_clip_errors),
        TG_TEST(test_optim_from_module),
    };
    return cmocka_run_group_tests_name("optim", tests, NULL, NULL);
}
