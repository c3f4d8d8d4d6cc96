/* The input tensors and params of an op's registered gradcheck cases (tg_case), made one way
 * for every test that runs the registry (test_gradcheck, test_fresh_grads). */
#ifndef TG_TESTS_CASE_INPUT_H
#define TG_TESTS_CASE_INPUT_H

#include "common.h"

#include "../autograd/internal.h"

/* Case c's input i, a new tensor: c->init's values, else uniform in [c->lo, c->hi) ([-1, 1)
 * when both are 0), each passed through adjust when it is given (gradcheck moves values off an
 * op's kinks, where a central difference straddles the corner). */
static inline tg_tensor *case_input(const tg_case *c, int i, tg_rng *rng,
                                    float (*adjust)(const tg_case *c, float v))
{
    int ndim = 0;
    while (ndim < TG_MAX_DIMS && c->shape[i][ndim] > 0)
        ndim++;
    tg_tensor *t = tg_tensor_new(ndim, c->shape[i]);
    assert_non_null(t);
    if (c->init) {
        c->init(i, t, rng);
    } else {
        float lo = c->lo, hi = c->hi;
        if (lo == 0.0f && hi == 0.0f)
            lo = -1.0f, hi = 1.0f;
        for (int64_t e = 0; e < t->numel; e++) {
            float v = lo + (hi - lo) * tg_rng_uniform01(rng);
            t->data[e] = adjust ? adjust(c, v) : v;
        }
    }
    return t;
}

/* The params of one run of a case, with the tensors its init_params made for them. */
typedef struct {
    _Alignas(16) unsigned char copy[TG_MAX_PARAMS];
    tg_tensor *extra[TG_CASE_EXTRAS];
    const void *params; /* what to pass to tg_apply: c->params, or copy */
} case_params;

/* Case c's params in cp: c->params as they are, or, when c has init_params, a copy that it
 * completed. case_params_release frees what init_params made. */
static inline const void *case_params_init(const tg_case *c, case_params *cp)
{
    memset(cp, 0, sizeof *cp);
    cp->params = c->params;
    if (!c->init_params)
        return cp->params;
    assert_true(c->params_size <= sizeof cp->copy);
    if (c->params)
        memcpy(cp->copy, c->params, c->params_size);
    if (c->init_params(cp->copy, cp->extra) != TG_OK)
        fail_msg("case %s: init_params failed: %s", c->name ? c->name : "", tg_last_error());
    cp->params = cp->copy;
    return cp->params;
}

static inline void case_params_release(case_params *cp)
{
    for (int k = 0; k < TG_CASE_EXTRAS; k++) {
        tg_tensor_release(cp->extra[k]);
        cp->extra[k] = NULL;
    }
}

#endif
