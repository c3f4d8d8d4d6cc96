/* Shared by the suites that check Sequential's fusions (test_nn, test_norm_pool): one run of a
 * Sequential, fused, or with its modules run one by one, for the two runs' bits to be compared. */
#ifndef TAPEGRAD_TESTS_SEQUENTIAL_CHECK_H
#define TAPEGRAD_TESTS_SEQUENTIAL_CHECK_H

#include "common.h"
#include "nn.h"

/* y = seq(x), or x through seq's children one after the other when one_by_one, in a tape of its
 * own, where the forward must make nodes nodes; then the backward of dy (NULL: of sum(y^2)).
 * out[0..3) = copies of y, of x's gradient and of the weight gradient of seq's first child;
 * x's gradient is cleared after. */
static inline void sequential_run(tg_module *seq, bool one_by_one, tg_tensor *x, tg_tensor *dy,
                                  int64_t nodes, tg_tensor *out[3])
{
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    const int64_t nodes0 = tg_debug_live_nodes();
    tg_tensor *y = x;
    if (one_by_one)
        for (int64_t i = 0; i < tg_module_num_children(seq); i++)
            y = tg_module_forward(tg_module_child_at(seq, i), y);
    else
        y = tg_module_forward(seq, x);
    assert_non_null(y);
    assert_int_equal(tg_debug_live_nodes() - nodes0, nodes);
    assert_int_equal(dy ? tg_backward_grad(y, dy) : tg_backward(tg_sum(tg_mul(y, y))), TG_OK);
    out[0] = tg_tensor_clone(y);
    out[1] = tg_tensor_clone(x->grad);
    out[2] = tg_tensor_clone(tg_module_param(tg_module_child_at(seq, 0), "weight")->grad);
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_tensor_zero_grad(x);
}

#endif
