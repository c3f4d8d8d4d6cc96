/* Autograd semantics: ownership, accumulation, detach, no-grad, errors, version checks, the
 * NaN trap. Each test builds its own leaves and releases them; the teardown checks that the
 * live-tensor and live-node counters are back to zero. */
#include "common.h"

#include <stdlib.h>

/* A leaf [n] holding v, requiring grad. */
static tg_tensor *leaf(int64_t n, const float *v)
{
    tg_tensor *t = tg_tensor_from_data(1, &n, v);
    assert_non_null(t);
    assert_int_equal(tg_tensor_set_requires_grad(t, true), TG_OK);
    return t;
}

/* x used twice: L = sum(x * x), dL/dx = 2x, the two paths accumulate. */
static void test_fanout_accumulates(void **state)
{
    (void)state;
    tg_tensor *x = leaf(3, (const float[]){1, -2, 3});
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *loss = tg_sum(tg_mul(x, x));
    assert_non_null(loss);
    assert_int_equal(tg_backward(loss), TG_OK);
    for (int i = 0; i < 3; i++)
        assert_close(x->grad->data[i], 2 * x->data[i], 1e-6);
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_tensor_release(x);
}

/* A parameter used by two losses gets both contributions, whether the losses are summed or
 * back-propagated one after the other on the same tape. */
static void test_two_losses_accumulate(void **state)
{
    (void)state;
    tg_tensor *w = leaf(2, (const float[]){0.5f, -1.5f});
    tg_tensor *a = tg_tensor_from_data(TG_DIMS(2), (const float[]){2, 3});
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *l1 = tg_sum(tg_mul(w, a)); /* dl1/dw = a */
    tg_tensor *l2 = tg_sum(tg_square(w)); /* dl2/dw = 2w */
    assert_int_equal(tg_backward(l1), TG_OK);
    assert_int_equal(tg_backward(l2), TG_OK);
    for (int i = 0; i < 2; i++)
        assert_close(w->grad->data[i], a->data[i] + 2 * w->data[i], 1e-6);
    /* A second backward of the same loss on the same tape accumulates again. */
    assert_int_equal(tg_backward(l1), TG_OK);
    for (int i = 0; i < 2; i++)
        assert_close(w->grad->data[i], 2 * a->data[i] + 2 * w->data[i], 1e-6);
    /* Zeroing frees the gradient; the next backward starts from zero. */
    tg_tensor_zero_grad(w);
    assert_null(w->grad);
    assert_int_equal(tg_backward(tg_add(l1, l2)), TG_OK);
    for (int i = 0; i < 2; i++)
        assert_close(w->grad->data[i], a->data[i] + 2 * w->data[i], 1e-6);
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_tensor_release(a);
    tg_tensor_release(w);
}

/* Intermediate results get no lasting gradient; only leaves keep theirs. */
static void test_intermediate_grads_freed(void **state)
{
    (void)state;
    tg_tensor *x = leaf(2, (const float[]){1, 2});
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_exp(x);
    tg_tensor *loss = tg_sum(y);
    assert_int_equal(tg_backward(loss), TG_OK);
    assert_null(y->grad);
    assert_null(loss->grad);
    assert_non_null(x->grad);
    assert_close(x->grad->data[1], expf(2.0f), 1e-5);
    tg_tape_end(tape);
    tg_tensor_release(x);
}

/* detach cuts the graph: nothing flows into x through the detached branch. */
static void test_detach_cuts(void **state)
{
    (void)state;
    tg_tensor *x = leaf(2, (const float[]){3, 4});
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *d = tg_detach(x);
    assert_false(d->requires_grad);
    assert_null(d->node);
    assert_ptr_equal(d->data, x->data); /* a view, not a copy */
    /* L = sum(x * detach(x)): dL/dx = detach(x) only, not 2x. */
    tg_tensor *loss = tg_sum(tg_mul(x, d));
    assert_int_equal(tg_backward(loss), TG_OK);
    assert_close(x->grad->data[0], 3, 1e-6);
    assert_close(x->grad->data[1], 4, 1e-6);
    tg_tape_end(tape);
    tg_tensor_release(x);
}

/* A no-grad tape runs ops but records nothing. */
static void test_no_grad_records_nothing(void **state)
{
    (void)state;
    tg_tensor *x = leaf(2, (const float[]){1, 2});
    int64_t nodes = tg_debug_live_nodes();
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    assert_false(tg_grad_enabled());
    tg_tensor *y = tg_sum(tg_mul(x, x));
    assert_non_null(y);
    assert_close(y->data[0], 5, 1e-6);
    assert_false(y->requires_grad);
    assert_null(y->node);
    assert_int_equal(tg_debug_live_nodes(), nodes);
    assert_int_equal(tg_backward(y), TG_ERR_STATE);
    assert_error_contains("tg_backward: the loss has no recorded history");
    /* A grad tape nested inside records again; the no-grad outer one still owns nothing of it. */
    tg_tape *inner = tg_tape_begin(TG_GRAD);
    assert_true(tg_grad_enabled());
    tg_tensor *z = tg_sum(tg_mul(x, x));
    assert_non_null(z->node);
    assert_int_equal(tg_backward(z), TG_OK);
    assert_close(x->grad->data[1], 4, 1e-6);
    assert_int_equal(tg_tape_end(inner), TG_OK);
    assert_false(tg_grad_enabled());
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_tensor_release(x);
}

static void test_backward_needs_scalar(void **state)
{
    (void)state;
    tg_tensor *x = leaf(3, (const float[]){1, 2, 3});
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_mul(x, x);
    assert_int_equal(tg_backward(y), TG_ERR_SHAPE);
    assert_error_contains("tg_backward: the loss has shape [3] (3 elements)");
    assert_null(x->grad);
    /* With an explicit output gradient it works. */
    tg_tensor *dy = tg_tensor_ones(TG_DIMS(3));
    assert_int_equal(tg_backward_grad(y, dy), TG_OK);
    assert_close(x->grad->data[2], 6, 1e-6);
    tg_tensor *bad = tg_tensor_ones(TG_DIMS(2));
    assert_int_equal(tg_backward_grad(y, bad), TG_ERR_SHAPE);
    assert_error_contains("output [3] and its gradient [2] differ");
    tg_tape_end(tape);
    tg_tensor_release(dy);
    tg_tensor_release(bad);
    tg_tensor_release(x);
}

/* Changing a saved input in place between forward and backward is caught. */
static void test_inplace_after_use_caught(void **state)
{
    (void)state;
    tg_tensor *x = leaf(2, (const float[]){1, 2});
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *loss = tg_sum(tg_mul(x, x));
    assert_int_equal(tg_tensor_fill_(x, 5.0f), TG_OK);
    assert_int_equal(tg_backward(loss), TG_ERR_STATE);
    assert_error_contains("of mul was modified in place after mul used it (version 0, now 1)");
    tg_tape_end(tape);
    tg_tensor_release(x);
}

/* The first error survives the rest of a chain: one check at the end names the real cause. */
static void test_error_sticky_through_chain(void **state)
{
    (void)state;
    tg_tensor *a = tg_tensor_ones(TG_DIMS(2, 3));
    tg_tensor *b = tg_tensor_ones(TG_DIMS(4, 5));
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_sum(tg_exp(tg_mul(tg_matmul(a, b), a)));
    assert_null(y);
    assert_int_equal(tg_last_status(), TG_ERR_SHAPE);
    assert_error_contains("tg_matmul: a [2, 3] @ b [4, 5]: inner sizes 3 and 4 differ");
    assert_int_equal(tg_backward(y), TG_ERR_SHAPE); /* still the matmul error */
    assert_error_contains("tg_matmul");
    tg_tape_end(tape);
    tg_tensor_release(a);
    tg_tensor_release(b);
}

static void test_no_tape_is_an_error(void **state)
{
    (void)state;
    tg_tensor *a = tg_tensor_ones(TG_DIMS(2, 2));
    assert_null(tg_matmul(a, a));
    assert_int_equal(tg_last_status(), TG_ERR_STATE);
    assert_error_contains("tg_matmul: no open tape");
    tg_tensor_release(a);
}

/* Ending a tape frees every result, node and gradient it owns; a retained result survives as a
 * plain constant. */
static void test_tape_end_frees_everything(void **state)
{
    (void)state;
    int64_t tensors = tg_debug_live_tensors(), bytes = tg_debug_live_bytes();
    tg_tensor *x = leaf(4, (const float[]){1, 2, 3, 4});
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_exp(tg_mul(x, x));
    tg_tensor *kept = tg_tensor_retain(tg_sum(y));
    assert_int_equal(tg_backward(kept), TG_OK);
    assert_true(tg_debug_live_nodes() >= 3);
    assert_int_equal(tg_tape_end(tape), TG_OK);
    assert_int_equal(tg_debug_live_nodes(), 0);
    assert_int_equal(tg_debug_live_tensors(), tensors + 3); /* x, x->grad, kept */
    assert_null(kept->node);
    assert_false(kept->requires_grad);
    assert_close(kept->data[0], expf(1) + expf(4) + expf(9) + expf(16), 1e-1);
    tg_tensor_release(kept);
    tg_tensor_release(x);
    assert_int_equal(tg_debug_live_tensors(), tensors);
    assert_int_equal(tg_debug_live_bytes(), bytes);
}

/* A backward frees each result's gradient as soon as that result's own backward has run: down
 * a chain of k ops on n floats it holds the frontier's one or two gradients, not k of them
 * (the peak once grew by one gradient per activation). tg_grad keeps the gradient of a
 * requested result all the same. */
static void test_backward_frees_spent_gradients(void **state)
{
    (void)state;
    enum { N = 1 << 18, K = 12 };
    const int64_t bytes = (int64_t)N * 4;
    tg_tensor *x = tg_tensor_ones(TG_DIMS(N));
    tg_tensor_set_requires_grad(x, true);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *h = x, *mid = NULL;
    for (int k = 0; k < K; k++) {
        h = tg_tanh(h);
        if (k == K / 2)
            mid = h;
    }
    tg_tensor *loss = tg_sum(h);
    assert_non_null(loss);
    const int64_t before = tg_debug_live_bytes();
    tg_debug_reset_peak_bytes();
    assert_int_equal(tg_backward(loss), TG_OK);
    /* x's gradient, the seed and at most two chain gradients alive at once, a little slack */
    assert_true(tg_debug_peak_bytes() - before <= 4 * bytes);
    tg_tensor *g[2] = {NULL, NULL};
    assert_int_equal(tg_grad(&loss, 1, (tg_tensor *[]){mid, x}, 2, NULL, false, g), TG_OK);
    assert_true(g[0] && g[1]);
    assert_true(g[0]->data[0] > 0 && g[1]->data[0] > 0);
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_tensor_release(x);
}

/* Large buffers come from one first-fit heap (tensor/storage.c's arena): a freed buffer's
 * space serves the next large request of any size that fits, and neighbours freed together
 * serve one request as large as both. Per-size free lists held each size's own peak, which
 * made the mnist_gan iteration's resident memory the sum of its phases' peaks. The sizes are
 * above anything the tests before leave free, so the requests come from the heap's free end. */
static void test_allocator_reuses_large_ranges(void **state)
{
    (void)state;
    enum { MIB = (1 << 20) / 4 }; /* floats */
    const int64_t bytes = tg_debug_live_bytes();
    tg_tensor *a = tg_tensor_new(TG_DIMS(24 * MIB));
    assert_non_null(a);
    float *where = a->data;
    tg_tensor_release(a);
    a = tg_tensor_new(TG_DIMS(20 * MIB)); /* a smaller size: once a new buffer of its own */
    assert_ptr_equal(a->data, where);
    tg_tensor *b = tg_tensor_new(TG_DIMS(20 * MIB));
    assert_ptr_equal(b->data, where + 20 * MIB); /* split off the same free range */
    tg_tensor_release(a);
    tg_tensor_release(b);
    tg_tensor *ab = tg_tensor_new(TG_DIMS(40 * MIB)); /* the two freed ranges, merged */
    assert_ptr_equal(ab->data, where);
    tg_tensor_release(ab);
    tg_allocator_trim(); /* hands the free pages back; the heap serves on */
    a = tg_tensor_zeros(TG_DIMS(24 * MIB));
    assert_ptr_equal(a->data, where);
    assert_true(a->data[0] == 0.0f && a->data[24 * MIB - 1] == 0.0f);
    tg_tensor_release(a);
    assert_int_equal(tg_debug_live_bytes(), bytes);
}

/* sum(tanh(relu(batch_norm(x, w, b)))) on the open tape; its intermediates in mid[0..2]. */
static tg_tensor *norm_chain(tg_tensor *x, tg_tensor *w, tg_tensor *b, tg_tensor *mid[3])
{
    mid[0] = tg_batch_norm(x, w, b, TG_NONE, TG_NONE, true, 0.1f, 1e-5f);
    mid[1] = tg_relu(mid[0]);
    mid[2] = tg_tanh(mid[1]);
    return tg_sum(mid[2]);
}

/* Ops with dx_over_dy (unary elementwise, batch_norm) write a fresh input gradient over their
 * spent output gradient: down the chain one activation gradient is alive, not two, and the
 * gradients are bit for bit those of a walk that cannot (tg_grad keeps the gradients of the
 * results it is asked for, so their buffers are never written over: checked, ones). */
static void test_backward_writes_dx_over_dy(void **state)
{
    (void)state;
    enum { N = 8, C = 8, S = 32 * 32 };
    const int64_t bytes = (int64_t)N * C * S * 4;
    tg_rng rng;
    tg_rng_seed(&rng, 5);
    tg_tensor *x = tg_tensor_new(TG_DIMS(N, C, 32, 32));
    tg_tensor *w = tg_tensor_new(TG_DIMS(C)), *b = tg_tensor_new(TG_DIMS(C));
    tg_tensor_normal_(x, &rng, 0.5f, 1.0f);
    tg_tensor_normal_(w, &rng, 1.0f, 0.2f);
    tg_tensor_normal_(b, &rng, 0.0f, 0.2f);
    tg_tensor_set_requires_grad(x, true);
    tg_tensor_set_requires_grad(w, true);
    tg_tensor_set_requires_grad(b, true);

    tg_tensor *mid[3];
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *loss = norm_chain(x, w, b, mid);
    const int64_t before = tg_debug_live_bytes();
    tg_debug_reset_peak_bytes();
    assert_int_equal(tg_backward(loss), TG_OK);
    /* x's gradient is the chain's one buffer; w's and b's are C floats */
    assert_true(tg_debug_peak_bytes() - before < bytes + bytes / 2);
    assert_int_equal(tg_tape_end(tape), TG_OK);

    tape = tg_tape_begin(TG_GRAD);
    loss = norm_chain(x, w, b, mid);
    tg_tensor *g[5] = {NULL};
    assert_int_equal(
        tg_grad(&loss, 1, (tg_tensor *[]){x, w, mid[0], mid[1], mid[2]}, 5, NULL, false, g), TG_OK);
    assert_memory_equal(g[0]->data, x->grad->data, (size_t)bytes);
    assert_memory_equal(g[1]->data, w->grad->data, C * sizeof(float));
    for (int64_t i = 0; i < g[4]->numel; i++)
        assert_true(g[4]->data[i] == 1.0f); /* d loss / d tanh: its buffer was not written over */
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_tensor_release(x);
    tg_tensor_release(w);
    tg_tensor_release(b);
}

static void test_tapes_end_in_order(void **state)
{
    (void)state;
    tg_tape *outer = tg_tape_begin(TG_GRAD);
    tg_tape *inner = tg_tape_begin(TG_GRAD);
    assert_int_equal(tg_tape_end(outer), TG_ERR_STATE);
    assert_error_contains("not the innermost");
    assert_int_equal(tg_tape_end(inner), TG_OK);
    assert_int_equal(tg_tape_end(outer), TG_OK);
}

/* Results of an outer tape used on an inner tape: backward crosses both. */
static void test_nested_tapes_backward(void **state)
{
    (void)state;
    tg_tensor *x = leaf(2, (const float[]){1, 2});
    tg_tape *outer = tg_tape_begin(TG_GRAD);
    tg_tensor *h = tg_mul(x, x); /* owned by outer */
    tg_tape *inner = tg_tape_begin(TG_GRAD);
    tg_tensor *loss = tg_sum(tg_mul(h, x)); /* x^3 */
    assert_int_equal(tg_backward(loss), TG_OK);
    assert_close(x->grad->data[1], 12, 1e-5);
    tg_tape_end(inner);
    assert_non_null(h->node); /* the outer tape's graph is intact */
    tg_tape_end(outer);
    tg_tensor_release(x);
}

/* Tensors made inside a step (tg_zeros, tg_randn, tg_indices, ...) belong to the innermost
 * open tape: freed when it ends, outer ones at the outer end, never recorded, never
 * requiring grad; a whole step needs no release. */
static void test_tape_owned_creation(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 3);
    int64_t live = tg_debug_live_tensors();
    tg_tensor *w = leaf(2, (const float[]){0.5f, -1});
    tg_tape *outer = tg_tape_begin(TG_GRAD);
    tg_tensor *target = tg_full(TG_DIMS(4, 2), 1.0f);
    tg_tape *inner = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *noise = tg_randn(TG_DIMS(4, 2), &rng);
    tg_index *ix = tg_indices(TG_DIMS(1), (const int64_t[]){3});
    assert_non_null(noise);
    assert_non_null(ix);
    assert_int_equal(tg_debug_live_tensors(), live + 4);
    assert_int_equal(tg_tape_end(inner), TG_OK);
    assert_int_equal(tg_debug_live_tensors(), live + 2); /* w, target */
    /* One step: noise, prediction, loss; nothing released by hand. */
    tg_tensor *x = tg_add(tg_rand(TG_DIMS(4, 2), &rng), tg_scalar(-0.5f));
    tg_tensor *loss = tg_sum(tg_square(tg_sub(tg_mul(x, w), target)));
    assert_int_equal(tg_backward(loss), TG_OK);
    assert_null(target->node);
    assert_false(target->requires_grad);
    assert_null(tg_tensor_grad(target));
    assert_non_null(tg_tensor_grad(w));
    assert_int_equal(tg_tape_end(outer), TG_OK);
    assert_int_equal(tg_debug_live_tensors(), live + 2); /* w and its gradient */
    tg_tensor_release(w);
}

/* The NaN trap names the op that first produced a non-finite value, in forward and backward. */
static void test_check_finite_trap(void **state)
{
    (void)state;
    tg_tensor *x = leaf(2, (const float[]){1, -1});
    tg_set_check_finite(true);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_sum(tg_log(tg_mul(x, x)));
    assert_non_null(y); /* log(x^2) is finite */
    tg_tensor *z = tg_sum(tg_sqrt(tg_mul_scalar(x, -1.0f)));
    assert_null(z);
    assert_int_equal(tg_last_status(), TG_ERR_STATE);
    assert_error_contains("tg_sqrt: TG_CHECK_FINITE");
    tg_clear_error();
    /* sqrt(0) is finite but its derivative is not */
    tg_tensor *zero = tg_tensor_zeros(TG_DIMS(2));
    tg_tensor_set_requires_grad(zero, true);
    tg_tensor *w = tg_sum(tg_sqrt(zero));
    assert_non_null(w);
    assert_int_equal(tg_backward(w), TG_ERR_STATE);
    assert_error_contains("the backward of sqrt gave input 0 [2] the gradient inf");
    tg_set_check_finite(false);
    tg_tape_end(tape);
    tg_tensor_release(zero);
    tg_tensor_release(x);
}

static void test_requires_grad_only_on_leaves(void **state)
{
    (void)state;
    tg_tensor *x = leaf(1, (const float[]){1});
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_exp(x);
    assert_int_equal(tg_tensor_set_requires_grad(y, false), TG_ERR_STATE);
    assert_error_contains("not a leaf");
    tg_tape_end(tape);
    tg_tensor_release(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TG_TEST(test_fanout_accumulates),
        TG_TEST(test_allocator_reuses_large_ranges),
        TG_TEST(test_backward_writes_dx_over_dy),
        TG_TEST(test_two_losses_accumulate),
        TG_TEST(test_intermediate_grads_freed),
        TG_TEST(test_detach_cuts),
        TG_TEST(test_no_grad_records_nothing),
        TG_TEST(test_backward_needs_scalar),
        TG_TEST(test_inplace_after_use_caught),
        TG_TEST(test_error_sticky_through_chain),
        TG_TEST(test_no_tape_is_an_error),
        TG_TEST(test_tape_end_frees_everything),
        TG_TEST(test_backward_frees_spent_gradients),
        TG_TEST(test_tapes_end_in_order),
        TG_TEST(test_nested_tapes_backward),
        TG_TEST(test_check_finite_trap),
        TG_TEST(test_requires_grad_only_on_leaves),
        TG_TEST(test_tape_owned_creation),
    };
    return cmocka_run_group_tests_name("autograd", tests, NULL, NULL);
}
