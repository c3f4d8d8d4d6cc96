/* The gradcheck suite: one test per (op, case) of the op registry (docs/design.md, section 5).
 *
 * For each case: inputs drawn from the case's domain (kept 4*eps away from kinks); the loss
 * L = sum(out * r) with a fixed random r (a plain sum passes vacuously for softmax and
 * normalisation); the analytic gradient from the op's backward, seeded with dL/dout = r; the
 * numeric one from central differences with eps = 1e-2 and L summed in double. An element
 * passes when |analytic - numeric| <= 3e-3 + 3e-3 |numeric|, and the case passes when also
 * max |analytic - numeric| / max |numeric| <= 3e-3. An op with no case fails unless it states
 * a reason. The same cases check the second order (gradgradcheck, below). */
#include "case_input.h"
#include "common.h"

#include "../autograd/internal.h"

#include <stdio.h>
#include <stdlib.h>

#define EPS 1e-2f
#define ATOL 3e-3
#define RTOL 3e-3
#define MAX_CHECKED 512

typedef struct {
    const tg_op *op;
    const tg_case *c; /* NULL: the op has no case */
    int index;
} gc_item;

static int case_n_in(const gc_item *it)
{
    return it->c->n_in ? it->c->n_in : it->op->n_in;
}

/* Moves v out of [k - 4 eps, k + 4 eps] for every kink k. */
static float avoid_kinks(const tg_case *c, float v)
{
    for (int k = 0; k < c->n_kinks; k++) {
        float d = v - c->kinks[k];
        if (fabsf(d) < 4 * EPS)
            v = c->kinks[k] + (d < 0 ? -1.0f : 1.0f) * (4 * EPS + fabsf(d));
    }
    return v;
}

/* sum(out * r) in double, for the current input values, on a no-grad tape. */
static double loss_at(const gc_item *it, const void *params, tg_tensor **in, const tg_index *ix,
                      const tg_tensor *r)
{
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *out = tg_apply_index(it->op, params, it->c->params_size, case_n_in(it), in, ix);
    if (!out)
        fail_msg("%s: forward failed: %s", it->op->name, tg_last_error());
    double L = 0;
    for (int64_t e = 0; e < out->numel; e++)
        L += (double)out->data[e] * r->data[e];
    tg_tape_end(tape);
    return L;
}

static void gradcheck_case(void **state)
{
    const gc_item *it = *state;
    if (!it->c)
        fail_msg("op '%s' has no gradcheck case and states no reason", it->op->name);
    const tg_case *c = it->c;
    int n_in = case_n_in(it);
    tg_rng rng;
    tg_rng_seed(&rng, 1234 + (uint64_t)it->index);
    case_params cp;
    const void *params = case_params_init(c, &cp);

    tg_tensor *in[TG_CASE_INPUTS];
    for (int i = 0; i < n_in; i++) {
        in[i] = case_input(c, i, &rng, avoid_kinks);
        if (!(c->no_grad >> i & 1))
            tg_tensor_set_requires_grad(in[i], true);
    }
    tg_index *ix = c->make_index ? c->make_index(&rng) : NULL;
    assert_true(!c->make_index || ix);

    /* Analytic: one backward seeded with dL/dout = r. */
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *out = tg_apply_index(it->op, params, c->params_size, n_in, in, ix);
    if (!out)
        fail_msg("%s: forward failed: %s", it->op->name, tg_last_error());
    tg_tensor *r = tg_tensor_new(out->ndim, out->shape);
    tg_tensor_uniform_(r, &rng, -1.0f, 1.0f);
    assert_int_equal(tg_backward_grad(out, r), TG_OK);
    tg_tape_end(tape);

    int checked = 0;
    for (int i = 0; i < n_in; i++) {
        if (c->no_grad >> i & 1)
            continue;
        tg_tensor *x = in[i];
        assert_true(x->numel <= MAX_CHECKED);
        assert_non_null(x->grad);
        double max_err = 0, max_num = 0;
        for (int64_t e = 0; e < x->numel; e++) {
            float saved = x->data[e];
            x->data[e] = saved + EPS;
            double lp = loss_at(it, params, in, ix, r);
            x->data[e] = saved - EPS;
            double lm = loss_at(it, params, in, ix, r);
            x->data[e] = saved;
            double num = (lp - lm) / (2.0 * EPS);
            double ana = x->grad->data[e];
            double err = fabs(ana - num);
            if (err > ATOL + RTOL * fabs(num))
                fail_msg("%s case %d input %d element %lld: analytic %.6g, numeric %.6g",
                         it->op->name, it->index, i, (long long)e, ana, num);
            max_err = fmax(max_err, err);
            max_num = fmax(max_num, fabs(num));
        }
        if (max_num > 0 && max_err / max_num > RTOL)
            fail_msg("%s case %d input %d: max error %.3g is %.3g of max |numeric| %.3g",
                     it->op->name, it->index, i, max_err, max_err / max_num, max_num);
        checked++;
    }
    assert_true(checked > 0);
    tg_tensor_release(r);
    for (int i = 0; i < n_in; i++)
        tg_tensor_release(in[i]);
    tg_index_release(ix);
    case_params_release(&cp);
}

/* ---- gradgradcheck --------------------------------------------------------------------------
 * The second order, from the same cases: with g_i = d<out, r>/d x_i computed by tg_grad with
 * create_graph, S = sum_i <g_i, v_i> for fixed random v_i; the analytic dS/dx_j from a
 * first-order backward through g's recorded history, the numeric one from central differences
 * of S (each S from a tg_grad without history, summed in double), compared with the tolerances
 * above, with respect to every differentiable input and to r. An op without a backward_graph rule is skipped when it states its reason
 * (no_graph_reason), and fails otherwise. */

/* S = sum_i <g_i, v_i> with g from tg_grad on the current inputs; NULL (or the sum of the S
 * terms as a tape-owned tensor) when graph, else the double value in *value. */
static tg_tensor *second_order_sum(const gc_item *it, const void *params, tg_tensor **in,
                                   const tg_index *ix, const tg_tensor *r, tg_tensor **v,
                                   bool graph, double *value)
{
    const tg_case *c = it->c;
    int n_in = case_n_in(it), nd = 0;
    tg_tensor *dx[TG_CASE_INPUTS], *g[TG_CASE_INPUTS], *vs[TG_CASE_INPUTS];
    for (int i = 0; i < n_in; i++)
        if (!(c->no_grad >> i & 1)) {
            vs[nd] = v[i];
            dx[nd++] = in[i];
        }
    tg_tensor *out = tg_apply_index(it->op, params, c->params_size, n_in, in, ix);
    if (!out)
        fail_msg("%s: forward failed: %s", it->op->name, tg_last_error());
    tg_tensor *rr = (tg_tensor *)r;
    if (tg_grad(&out, 1, dx, nd, &rr, graph, g) != TG_OK)
        fail_msg("%s: tg_grad (create_graph %d) failed: %s", it->op->name, graph, tg_last_error());
    if (!graph) {
        *value = 0;
        for (int k = 0; k < nd; k++)
            for (int64_t e = 0; e < g[k]->numel; e++)
                *value += (double)g[k]->data[e] * vs[k]->data[e];
        return NULL;
    }
    /* The gradients with a history must equal the first-order ones, element by element. */
    tg_tensor *g1[TG_CASE_INPUTS];
    if (tg_grad(&out, 1, dx, nd, &rr, false, g1) != TG_OK)
        fail_msg("%s: tg_grad failed: %s", it->op->name, tg_last_error());
    for (int k = 0; k < nd; k++)
        for (int64_t e = 0; e < g1[k]->numel; e++)
            if (fabs(g[k]->data[e] - g1[k]->data[e]) > 1e-5 + 1e-4 * fabs(g1[k]->data[e]))
                fail_msg("%s: gradient %d element %lld: create_graph %.7g, first order %.7g",
                         it->op->name, k, (long long)e, g[k]->data[e], g1[k]->data[e]);
    tg_tensor *S = NULL;
    for (int k = 0; k < nd; k++) {
        tg_tensor *term = tg_sum(tg_mul(g[k], vs[k]));
        S = S ? tg_add(S, term) : term;
    }
    if (!S)
        fail_msg("%s: building S failed: %s", it->op->name, tg_last_error());
    return S;
}

/* Compares the analytic dS/dx (x->grad after the backward from S; NULL means zero) with
 * central differences of S for every element of x (input `which`, or r when which is n_in). */
static void second_order_compare(const gc_item *it, const void *params, tg_tensor **in,
                                 const tg_index *ix, tg_tensor *r, tg_tensor **v, tg_tensor *x,
                                 int which)
{
    /* r can be larger than an input (embedding's output): every step-th element of it. */
    const int64_t step = x == r ? (x->numel + MAX_CHECKED - 1) / MAX_CHECKED : 1;
    assert_true(x->numel <= MAX_CHECKED || x == r);
    double max_err = 0, max_num = 0;
    for (int64_t e = 0; e < x->numel; e += step) {
        float saved = x->data[e];
        double sp, sm;
        tg_tape *tape = tg_tape_begin(TG_GRAD);
        x->data[e] = saved + EPS;
        second_order_sum(it, params, in, ix, r, v, false, &sp);
        x->data[e] = saved - EPS;
        second_order_sum(it, params, in, ix, r, v, false, &sm);
        x->data[e] = saved;
        tg_tape_end(tape);
        double num = (sp - sm) / (2.0 * EPS);
        double ana = x->grad ? x->grad->data[e] : 0.0;
        double err = fabs(ana - num);
        if (err > ATOL + RTOL * fabs(num))
            fail_msg("%s case %d %s %d element %lld: second order analytic %.6g, numeric %.6g",
                     it->op->name, it->index, x == r ? "grad_output" : "input", which, (long long)e,
                     ana, num);
        max_err = fmax(max_err, err);
        max_num = fmax(max_num, fabs(num));
    }
    if (max_num > 0 && max_err / max_num > RTOL)
        fail_msg("%s case %d %s %d: second order max error %.3g is %.3g of max |numeric| %.3g",
                 it->op->name, it->index, x == r ? "grad_output" : "input", which, max_err,
                 max_err / max_num, max_num);
}

static void gradgradcheck_case(void **state)
{
    const gc_item *it = *state;
    if (!it->c)
        fail_msg("op '%s' has no gradcheck case and states no reason", it->op->name);
    if (!it->op->backward_graph) {
        if (!it->op->no_graph_reason)
            fail_msg("op '%s' has no second order (backward_graph) and states no reason",
                     it->op->name);
        skip();
    }
    const tg_case *c = it->c;
    int n_in = case_n_in(it);
    tg_rng rng;
    tg_rng_seed(&rng, 4321 + (uint64_t)it->index);
    case_params cp;
    const void *params = case_params_init(c, &cp);
    tg_tensor *in[TG_CASE_INPUTS], *v[TG_CASE_INPUTS] = {NULL};
    for (int i = 0; i < n_in; i++) {
        in[i] = case_input(c, i, &rng, avoid_kinks);
        if (!(c->no_grad >> i & 1)) {
            tg_tensor_set_requires_grad(in[i], true);
            v[i] = tg_tensor_new(in[i]->ndim, in[i]->shape);
            tg_tensor_uniform_(v[i], &rng, -1.0f, 1.0f);
        }
    }
    tg_index *ix = c->make_index ? c->make_index(&rng) : NULL;

    /* r has the output's shape: from one no-grad forward. */
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *probe = tg_apply_index(it->op, params, c->params_size, n_in, in, ix);
    if (!probe)
        fail_msg("%s: forward failed: %s", it->op->name, tg_last_error());
    tg_tensor *r = tg_tensor_new(probe->ndim, probe->shape);
    tg_tape_end(tape);
    tg_tensor_uniform_(r, &rng, -1.0f, 1.0f);
    tg_tensor_set_requires_grad(r, true);

    /* Analytic: backward from S through the gradients' history. S without a history (an op
     * whose gradient does not depend on its inputs: add, mul_scalar) has zero derivatives. */
    tape = tg_tape_begin(TG_GRAD);
    tg_tensor *S = second_order_sum(it, params, in, ix, r, v, true, NULL);
    if (S->node && tg_backward(S) != TG_OK)
        fail_msg("%s: backward through the gradients failed: %s", it->op->name, tg_last_error());
    tg_tape_end(tape);

    /* Every differentiable input, then r: S is linear in r, but dS/dr is what checks the
     * terms of a rule that do not depend on the inputs (a bias's sum of dy), as PyTorch's
     * gradgradcheck differentiates with respect to grad_outputs too. */
    int checked = 0;
    for (int i = 0; i <= n_in; i++) {
        if (i < n_in && (c->no_grad >> i & 1))
            continue;
        second_order_compare(it, params, in, ix, r, v, i < n_in ? in[i] : r, i);
        checked++;
    }
    assert_true(checked > 1);
    tg_tensor_release(r);
    for (int i = 0; i < n_in; i++) {
        tg_tensor_release(in[i]);
        tg_tensor_release(v[i]);
    }
    tg_index_release(ix);
    case_params_release(&cp);
}

int main(void)
{
    tg_set_num_threads(2);
    int count = 0;
    for (int o = 0; tg_op_registry[o]; o++) {
        const tg_op *op = tg_op_registry[o];
        int k = 0;
        while (op->cases && !tg_case_is_end(&op->cases[k]))
            k++;
        count += k ? k : (op->no_case_reason ? 0 : 1);
    }
    struct CMUnitTest *tests = calloc((size_t)count, sizeof *tests);
    gc_item *items = calloc((size_t)count, sizeof *items);
    char(*names)[96] = calloc((size_t)count, sizeof *names);
    int t = 0;
    for (int o = 0; tg_op_registry[o]; o++) {
        const tg_op *op = tg_op_registry[o];
        int k = 0;
        for (; op->cases && !tg_case_is_end(&op->cases[k]); k++) {
            items[t] = (gc_item){op, &op->cases[k], k};
            snprintf(names[t], sizeof names[t], "%s/%d%s%s", op->name, k,
                     op->cases[k].name ? "_" : "", op->cases[k].name ? op->cases[k].name : "");
            t++;
        }
        if (k == 0 && !op->no_case_reason) {
            items[t] = (gc_item){op, NULL, 0};
            snprintf(names[t], sizeof names[t], "%s/no_case", op->name);
            t++;
        }
    }
    for (int i = 0; i < count; i++)
        tests[i] = (struct CMUnitTest){names[i], gradcheck_case, tg_test_setup, tg_test_teardown,
                                       &items[i]};
    int failed = _cmocka_run_group_tests("gradcheck", tests, (size_t)count, NULL, NULL);
    for (int i = 0; i < count; i++)
        tests[i].test_func = gradgradcheck_case;
    failed += _cmocka_run_group_tests("gradgradcheck", tests, (size_t)count, NULL, NULL);
    free(tests);
    free(items);
    free(names);
    return failed;
}
