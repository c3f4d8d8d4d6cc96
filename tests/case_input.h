/* The input tensors of an op's registered gradcheck cases (tg_case), made one way for every
 * test that runs the registry (test_gradcheck, test_fresh_grads). */
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

#endif
