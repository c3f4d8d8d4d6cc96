/* Fresh gradients (tg_grad_fresh): every op whose descriptor sets fresh_grads gets the
 * gradients of its inputs uninitialised when its backward is the first to reach them, and must
 * assign every element; later backwards add. One test per (op, case) of the registry, on the
 * gradcheck cases' shapes:
 *   1. the allocator's cache is filled with NaN buffers of each input's size first, so a fresh
 *      gradient that the op leaves partly unwritten shows up as a NaN;
 *   2. the same backward again, with each gradient already holding a known tensor s, must give
 *      s + the first gradient (the accumulating path agrees with the assigning one). */
#include "case_input.h"
#include "common.h"

#include "../autograd/internal.h"

#include <stdio.h>
#include <stdlib.h>

typedef struct {
    const tg_op *op;
    const tg_case *c;
    int index;
} fg_item;

static int case_n_in(const fg_item *it)
{
    return it->c->n_in ? it->c->n_in : it->op->n_in;
}

/* One backward of the op on in, seeded with r. */
static void run_backward(const fg_item *it, const void *params, tg_tensor **in, const tg_index *ix,
                         const tg_tensor *r)
{
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *out = tg_apply_index(it->op, params, it->c->params_size, case_n_in(it), in, ix);
    if (!out)
        fail_msg("%s: forward failed: %s", it->op->name, tg_last_error());
    assert_int_equal(tg_backward_grad(out, r), TG_OK);
    tg_tape_end(tape);
}

static void fresh_case(void **state)
{
    const fg_item *it = *state;
    const tg_case *c = it->c;
    const int n_in = case_n_in(it);
    tg_rng rng;
    tg_rng_seed(&rng, 777 + (uint64_t)it->index);
    case_params cp;
    const void *params = case_params_init(c, &cp);
    tg_tensor *in[TG_CASE_INPUTS], *first[TG_CASE_INPUTS] = {0}, *seed[TG_CASE_INPUTS] = {0};
    for (int i = 0; i < n_in; i++) {
        in[i] = case_input(c, i, &rng, NULL);
        if (!(c->no_grad >> i & 1))
            tg_tensor_set_requires_grad(in[i], true);
    }
    tg_index *ix = c->make_index ? c->make_index(&rng) : NULL;
    assert_true(!c->make_index || ix);
    tg_tensor *r;
    {
        tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
        tg_tensor *out = tg_apply_index(it->op, params, c->params_size, n_in, in, ix);
        assert_non_null(out);
        r = tg_tensor_new(out->ndim, out->shape);
        tg_tape_end(tape);
    }
    tg_tensor_uniform_(r, &rng, -1.0f, 1.0f);

    /* 1. fresh gradients over NaN-filled memory */
    for (int i = 0; i < n_in; i++)
        test_poison_cache(in[i]->ndim, in[i]->shape);
    run_backward(it, params, in, ix, r);
    for (int i = 0; i < n_in; i++) {
        if (c->no_grad >> i & 1)
            continue;
        assert_non_null(in[i]->grad);
        for (int64_t e = 0; e < in[i]->numel; e++)
            if (!isfinite(in[i]->grad->data[e]))
                fail_msg("%s case %d: input %d's fresh gradient element %lld is %g (not "
                         "written by the backward)",
                         it->op->name, it->index, i, (long long)e, (double)in[i]->grad->data[e]);
        first[i] = tg_tensor_clone(in[i]->grad);
        /* 2. a known gradient already there: the backward must add to it */
        seed[i] = tg_tensor_new(in[i]->ndim, in[i]->shape);
        tg_tensor_uniform_(seed[i], &rng, -2.0f, 2.0f);
        assert_int_equal(tg_tensor_copy_(in[i]->grad, seed[i]), TG_OK);
    }
    run_backward(it, params, in, ix, r);
    for (int i = 0; i < n_in; i++) {
        if (!first[i])
            continue;
        for (int64_t e = 0; e < in[i]->numel; e++) {
            double want = (double)seed[i]->data[e] + first[i]->data[e];
            double got = in[i]->grad->data[e];
            if (!(fabs(got - want) <= 1e-5 * (1.0 + fabs(want))))
                fail_msg("%s case %d: input %d element %lld: accumulated %.8g, expected "
                         "seed %.8g + gradient %.8g",
                         it->op->name, it->index, i, (long long)e, got, (double)seed[i]->data[e],
                         (double)first[i]->data[e]);
        }
    }
    for (int i = 0; i < n_in; i++) {
        tg_tensor_release(first[i]);
        tg_tensor_release(seed[i]);
        tg_tensor_release(in[i]);
    }
    tg_tensor_release(r);
    tg_index_release(ix);
    case_params_release(&cp);
}

int main(void)
{
    tg_set_num_threads(2);
    int n = 0;
    for (int k = 0; tg_op_registry[k]; k++)
        if (tg_op_registry[k]->fresh_grads && tg_op_registry[k]->cases)
            for (const tg_case *c = tg_op_registry[k]->cases; !tg_case_is_end(c); c++)
                n++;
    fg_item *items = calloc((size_t)n + 1, sizeof *items);
    struct CMUnitTest *tests = calloc((size_t)n + 1, sizeof *tests);
    char(*names)[96] = calloc((size_t)n + 1, sizeof *names);
    if (!items || !tests || !names)
        return 1;
    int t = 0;
    for (int k = 0; tg_op_registry[k]; k++) {
        const tg_op *op = tg_op_registry[k];
        if (!op->fresh_grads || !op->cases)
            continue;
        int index = 0;
        for (const tg_case *c = op->cases; !tg_case_is_end(c); c++, index++) {
            items[t] = (fg_item){op, c, index};
            snprintf(names[t], sizeof names[t], "%s/%d%s%s", op->name, index, c->name ? "_" : "",
                     c->name ? c->name : "");
            tests[t] = (struct CMUnitTest){names[t], fresh_case, tg_test_setup, tg_test_teardown,
                                           &items[t]};
            t++;
        }
    }
    int failed = _cmocka_run_group_tests("fresh_grads", tests, (size_t)t, NULL, NULL);
    free(items);
    free(tests);
    free(names);
    return failed;
}
