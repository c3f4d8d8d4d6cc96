/* The safety holes of issue 14, each written to fail on the code before they were closed:
 * releasing what a tape owns (a use-after-free in tape.c before: run this suite in the
 * sanitizer build too), tensors made inside a step that needed a release by hand, gradients set
 * behind the library's back, TG_NONE where a tensor is required, and a misspelt parameter
 * name read as "no such parameter" without an error. The teardown checks that the live-tensor
 * count (indices included) is back where it started. */
#include "common.h"

#include "nn.h"

#include <stdio.h>
#include <stdlib.h>

/* A leaf [n] holding v, requiring grad. */
static tg_tensor *leaf(int64_t n, const float *v)
{
    tg_tensor *t = tg_tensor_from_data(1, &n, v);
    assert_non_null(t);
    assert_int_equal(tg_tensor_set_requires_grad(t, true), TG_OK);
    return t;
}

/* ---- (a) releasing what the tape owns ---------------------------------------------------- */

/* The reproducer of the issue: y = w * 2; tg_tensor_release(y); tg_tape_end. The release is refused
 * with an error naming the op, y stays usable, and the tape frees it once. */
static void test_release_op_result_refused(void **state)
{
    (void)state;
    tg_tensor *w = leaf(3, (const float[]){1, 2, 3});
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_mul_scalar(w, 2.0f);
    assert_non_null(y);
    tg_tensor_release(y);
    assert_int_equal(tg_last_status(), TG_ERR_STATE);
    assert_error_contains(
        "tg_tensor_release: the tensor [3] made by tg_mul_scalar belongs to the open "
        "tape");
    /* Still alive and still recorded: read it and back-propagate through it. */
    assert_true(y->data[2] == 6.0f);
    tg_clear_error();
    assert_int_equal(tg_backward(tg_sum(y)), TG_OK);
    assert_true(tg_tensor_grad(w)->data[0] == 2.0f);
    /* Twice is refused twice: the count never drops to the tape's reference. */
    tg_tensor_release(y);
    tg_tensor_release(y);
    assert_error_contains("made by tg_mul_scalar");
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_tensor_release(w);
}

/* The same for a result nothing records (no input requires grad), for tape-owned creation and
 * for detach; a reference of one's own (tg_tensor_retain) is released normally, before or after the
 * tape ends. */
static void test_release_unrecorded_refused(void **state)
{
    (void)state;
    tg_tensor *x = tg_tensor_ones(TG_DIMS(2, 2));
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_exp(x);
    tg_tensor *z = tg_zeros(TG_DIMS(4));
    tg_tensor *d = tg_detach(y);
    assert_non_null(y);
    assert_non_null(z);
    assert_non_null(d);
    tg_tensor_release(y);
    assert_error_contains("made by tg_exp belongs to the open tape");
    tg_clear_error();
    tg_tensor_release(z);
    assert_error_contains("the tensor [4] made by tg_zeros belongs to the open tape");
    tg_clear_error();
    tg_tensor_release(d);
    assert_error_contains("made by tg_detach");
    /* Retained: the caller's reference is the caller's to end, even after the tape. */
    tg_clear_error();
    tg_tensor *kept = tg_tensor_retain(y);
    tg_tensor *kept2 = tg_tensor_retain(z);
    tg_tensor_release(kept2);
    assert_int_equal(tg_last_status(), TG_OK);
    assert_int_equal(tg_tape_end(tape), TG_OK);
    assert_true(kept->data[0] == expf(1.0f));
    tg_tensor_release(kept);
    assert_int_equal(tg_last_status(), TG_OK);
    tg_tensor_release(x);
}

/* A result that a recorded node also holds (y = w * 2; z = y * w): its references are the
 * tape's and the node's, so a release by the caller is refused too. Before, it took the
 * node's reference, and tg_tape_end, freeing the nodes first, hit the tape's refusal and left
 * that error behind (memory-safe only by that accident). */
static void test_release_held_by_node_refused(void **state)
{
    (void)state;
    tg_tensor *w = leaf(3, (const float[]){1, 2, 3});
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_mul_scalar(w, 2.0f);
    tg_tensor *z = tg_mul(y, w);
    assert_non_null(z);
    assert_int_equal(y->refcount, 2);
    tg_tensor_release(y);
    assert_error_contains("made by tg_mul_scalar belongs to the open tape");
    assert_int_equal(y->refcount, 2);
    tg_clear_error();
    assert_int_equal(tg_backward(tg_sum(z)), TG_OK);
    /* d(sum(2 w * w))/dw = 4 w */
    assert_true(tg_tensor_grad(w)->data[2] == 12.0f);
    assert_int_equal(tg_tape_end(tape), TG_OK);
    assert_int_equal(tg_last_status(), TG_OK);
    tg_tensor_release(w);
}

/* The caller's own reference to a leaf that a node holds is the caller's to end: the node
 * keeps the leaf alive until the tape ends. */
static void test_release_own_leaf_under_node(void **state)
{
    (void)state;
    int64_t live = tg_debug_live_tensors();
    tg_tensor *w = leaf(2, (const float[]){3, 4});
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_square(w);
    assert_non_null(y);
    tg_tensor_release(w);
    assert_int_equal(tg_last_status(), TG_OK);
    assert_true(y->data[1] == 16.0f);
    assert_int_equal(tg_tape_end(tape), TG_OK);
    assert_int_equal(tg_debug_live_tensors(), live);
}

/* A tape-owned index (tg_indices, tg_labels) refuses its release the same way. */
static void test_release_tape_index_refused(void **state)
{
    (void)state;
    tg_tensor *f = tg_tensor_from_data(TG_DIMS(2), (const float[]){3, 1});
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_index *ix = tg_indices(TG_DIMS(3), (const int64_t[]){0, 2, 1});
    tg_index *lab = tg_labels(f);
    assert_non_null(ix);
    assert_non_null(lab);
    tg_index_release(ix);
    assert_int_equal(tg_last_status(), TG_ERR_STATE);
    assert_error_contains("tg_index_release: the index [3] belongs to the open tape");
    tg_clear_error();
    tg_index_release(lab);
    assert_error_contains("tg_index_release: the index [2] belongs to the open tape");
    assert_true(ix->data[1] == 2 && lab->data[0] == 3);
    tg_index *kept = tg_index_retain(ix);
    assert_int_equal(tg_tape_end(tape), TG_OK);
    assert_true(kept->data[2] == 1);
    tg_index_release(kept);
    tg_tensor_release(f);
}

/* ---- (b) tensors made inside a step ------------------------------------------------------ */

/* Every tape-owned constructor: right values, never requiring grad, no release needed (the
 * teardown's live count), and usable as op inputs (tg_mul(x, tg_ones(...)) leaked before). */
static void test_tape_owned_creation_needs_no_release(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 14);
    int64_t live = tg_debug_live_tensors();
    tg_tensor *x = leaf(3, (const float[]){1, 2, 3});
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *t[] = {tg_zeros(TG_DIMS(2, 3)),
                      tg_ones(TG_DIMS(3)),
                      tg_full(TG_DIMS(3), 2.5f),
                      tg_scalar(-4.0f),
                      tg_from_data(TG_DIMS(3), (const float[]){7, 8, 9}),
                      tg_rand(TG_DIMS(5), &rng),
                      tg_randn(TG_DIMS(5), &rng)};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        if (!t[i])
            fail_msg("constructor %zu: %s", i, tg_last_error());
        assert_false(t[i]->requires_grad);
    }
    assert_true(t[0]->data[5] == 0.0f && t[0]->ndim == 2);
    assert_true(t[1]->data[2] == 1.0f);
    assert_true(t[2]->data[0] == 2.5f);
    assert_true(t[3]->ndim == 0 && t[3]->data[0] == -4.0f);
    assert_true(t[4]->data[1] == 8.0f);
    for (int i = 0; i < 5; i++)
        assert_true(t[5]->data[i] >= 0.0f && t[5]->data[i] < 1.0f);
    tg_index *ix = tg_indices(TG_DIMS(2), (const int64_t[]){4, 5});
    tg_index *lab = tg_labels(t[4]);
    assert_non_null(ix);
    assert_non_null(lab);
    assert_true(lab->data[2] == 9);
    /* As op inputs, gradients flow to x only. */
    tg_tensor *y = tg_mul(tg_add(x, tg_ones(TG_DIMS(3))), tg_full(TG_DIMS(3), 2.0f));
    assert_int_equal(tg_backward(tg_sum(tg_mul(y, t[3]))), TG_OK);
    assert_true(tg_tensor_grad(x)->data[0] == -8.0f);
    assert_null(tg_tensor_grad(t[1]));
    assert_int_equal(tg_tape_end(tape), TG_OK);
    /* Only x and its gradient remain. */
    assert_int_equal(tg_debug_live_tensors(), live + 2);
    tg_tensor_release(x);
}

/* Without an open tape each constructor fails clearly (nothing would own the result). */
static void test_tape_owned_creation_needs_a_tape(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 1);
    const float v[2] = {1, 2};
    const int64_t iv[2] = {0, 1};
    tg_tensor *f = tg_tensor_zeros(TG_DIMS(2));
    static const char *const fns[] = {"tg_zeros",  "tg_ones",      "tg_full",
                                      "tg_scalar", "tg_from_data", "tg_rand",
                                      "tg_randn",  "tg_indices",   "tg_labels"};
    for (int i = 0; i < 9; i++) {
        tg_clear_error();
        void *got = NULL;
        switch (i) {
        case 0: got = tg_zeros(TG_DIMS(2)); break;
        case 1: got = tg_ones(TG_DIMS(2)); break;
        case 2: got = tg_full(TG_DIMS(2), 1.0f); break;
        case 3: got = tg_scalar(1.0f); break;
        case 4: got = tg_from_data(TG_DIMS(2), v); break;
        case 5: got = tg_rand(TG_DIMS(2), &rng); break;
        case 6: got = tg_randn(TG_DIMS(2), &rng); break;
        case 7: got = tg_indices(TG_DIMS(2), iv); break;
        default: got = tg_labels(f); break;
        }
        assert_null(got);
        assert_int_equal(tg_last_status(), TG_ERR_STATE);
        char want[96];
        snprintf(want, sizeof want, "%s: no open tape", fns[i]);
        assert_error_contains(want);
    }
    /* Bad arguments inside a tape: an error, nothing left behind. */
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_clear_error();
    assert_null(tg_randn(TG_DIMS(2), NULL));
    assert_error_contains("tg_randn: rng is NULL");
    assert_null(tg_zeros(TG_DIMS(-1)));
    assert_null(tg_indices(TG_DIMS(2), NULL));
    assert_error_contains("tg_indices: values is NULL");
    f->data[1] = 0.5f;
    assert_null(tg_labels(f));
    assert_error_contains("value 0.5 at position 1 is not a whole number");
    tg_tape_end(tape);
    tg_tensor_release(f);
}

/* tg_rand / tg_randn draw exactly what tg_tensor_uniform_(0, 1) / tg_tensor_normal_(0, 1) draw
 * from the same seed, so a program can switch between them without changing its numbers. */
static void test_tape_owned_random_same_numbers(void **state)
{
    (void)state;
    tg_rng a, b;
    tg_tensor *u = tg_tensor_new(TG_DIMS(4, 33));
    tg_tensor *n = tg_tensor_new(TG_DIMS(4, 33));
    tg_rng_seed(&a, 99);
    tg_rng_seed(&b, 99);
    assert_int_equal(tg_tensor_uniform_(u, &a, 0.0f, 1.0f), TG_OK);
    assert_int_equal(tg_tensor_normal_(n, &a, 0.0f, 1.0f), TG_OK);
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *ru = tg_rand(TG_DIMS(4, 33), &b);
    tg_tensor *rn = tg_randn(TG_DIMS(4, 33), &b);
    assert_non_null(ru);
    assert_non_null(rn);
    assert_memory_equal(ru->data, u->data, sizeof(float) * 132);
    assert_memory_equal(rn->data, n->data, sizeof(float) * 132);
    tg_tape_end(tape);
    tg_tensor_release(u);
    tg_tensor_release(n);
}

/* ---- (c) reading and setting gradients --------------------------------------------------- */

static void test_set_grad_errors(void **state)
{
    (void)state;
    tg_tensor *p = leaf(3, (const float[]){1, 2, 3});
    tg_tensor *plain = tg_tensor_zeros(TG_DIMS(3));
    tg_tensor *g3 = tg_tensor_from_data(TG_DIMS(3), (const float[]){0.5f, -1, 2});
    tg_tensor *g4 = tg_tensor_zeros(TG_DIMS(4));
    tg_tensor *g13 = tg_tensor_zeros(TG_DIMS(1, 3));
    assert_null(tg_tensor_grad(p));
    assert_null(tg_tensor_grad(NULL));
    assert_int_equal(tg_tensor_set_grad(p, g4), TG_ERR_SHAPE);
    assert_error_contains("tg_tensor_set_grad: gradient [4] for a tensor [3]: shapes differ");
    assert_int_equal(tg_tensor_set_grad(p, g13), TG_ERR_SHAPE); /* same numel, other shape */
    assert_null(tg_tensor_grad(p));
    assert_int_equal(tg_tensor_set_grad(plain, g3), TG_ERR_STATE);
    assert_error_contains("tg_tensor_set_grad: the tensor [3] does not require grad");
    assert_null(tg_tensor_grad(plain));
    tg_clear_error();
    assert_int_equal(tg_tensor_set_grad(p, NULL), TG_ERR_ARG);
    assert_error_contains("tg_tensor_set_grad: g is NULL");
    tg_clear_error();
    assert_int_equal(tg_tensor_set_grad(NULL, g3), TG_ERR_ARG);
    assert_error_contains("tg_tensor_set_grad: t is NULL");
    tg_clear_error();
    assert_int_equal(tg_tensor_set_grad(p, TG_NONE), TG_ERR_ARG);
    assert_error_contains("tg_tensor_set_grad: g is TG_NONE");
    /* TG_NONE is a misuse, not a failed call's NULL: named even with another error pending. */
    assert_null(tg_tensor_zeros(TG_DIMS(-1)));
    assert_int_equal(tg_tensor_set_grad(p, TG_NONE), TG_ERR_ARG);
    assert_error_contains("tg_tensor_set_grad: g is TG_NONE");
    tg_clear_error();
    assert_null(tg_index_from_tensor(TG_NONE));
    assert_error_contains("tg_index_from_tensor: t is TG_NONE");
    /* Only a leaf's: a result's gradient is backward's to give (the fuzzer found that a set one
     * made tg_backward from that result abort). */
    tg_tape *leaf_tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_mul_scalar(p, 2.0f);
    assert_int_equal(tg_tensor_set_grad(y, g3), TG_ERR_STATE);
    assert_error_contains("tg_tensor_set_grad: the tensor [3] is the result of tg_mul_scalar, "
                          "not a leaf");
    assert_null(tg_tensor_grad(y));
    tg_clear_error();
    assert_int_equal(tg_backward(tg_sum(y)), TG_OK);
    tg_tape_end(leaf_tape);
    tg_tensor_zero_grad(p);
    /* A NULL from a failed call keeps that call's error. */
    tg_clear_error();
    assert_null(tg_tensor_zeros(TG_DIMS(-2)));
    tg_status st = tg_last_status();
    assert_int_equal(tg_tensor_set_grad(p, tg_tensor_zeros(TG_DIMS(-2))), st);
    assert_error_contains("tg_tensor_zeros");
    /* Set: a copy of the values, not g itself. */
    tg_clear_error();
    assert_int_equal(tg_tensor_set_grad(p, g3), TG_OK);
    assert_ptr_not_equal(tg_tensor_grad(p), g3);
    assert_memory_equal(tg_tensor_grad(p)->data, g3->data, 3 * sizeof(float));
    g3->data[0] = 100.0f;
    assert_true(tg_tensor_grad(p)->data[0] == 0.5f);
    /* An unshared gradient is overwritten in place ... */
    tg_tensor *before = tg_tensor_grad(p);
    assert_int_equal(tg_tensor_set_grad(p, g3), TG_OK);
    assert_ptr_equal(tg_tensor_grad(p), before);
    /* ... one someone retained is left as it was: p gets a fresh buffer. */
    tg_tensor *held = tg_tensor_retain(tg_tensor_grad(p));
    tg_tensor *zeros = tg_tensor_zeros(TG_DIMS(3));
    assert_int_equal(tg_tensor_set_grad(p, zeros), TG_OK);
    assert_ptr_not_equal(tg_tensor_grad(p), held);
    assert_true(held->data[0] == 100.0f && held->data[2] == 2.0f);
    assert_true(tg_tensor_grad(p)->data[0] == 0.0f);
    /* Setting a gradient to itself changes nothing; the next backward accumulates into it. */
    assert_int_equal(tg_tensor_set_grad(p, tg_tensor_grad(p)), TG_OK);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    assert_int_equal(tg_tensor_set_grad(p, g3), TG_OK);
    assert_int_equal(tg_backward(tg_sum(p)), TG_OK);
    assert_true(tg_tensor_grad(p)->data[0] == 101.0f && tg_tensor_grad(p)->data[1] == 0.0f);
    tg_tape_end(tape);
    tg_tensor_release(held);
    tg_tensor_release(zeros);
    tg_tensor_release(g3);
    tg_tensor_release(g4);
    tg_tensor_release(g13);
    tg_tensor_release(plain);
    tg_tensor_release(p);
}

/* ---- (d) TG_NONE where a tensor is required ---------------------------------------------- */

static void test_none_where_required(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 5);
    tg_tensor *x = tg_tensor_ones(TG_DIMS(2, 3));
    tg_tensor *w = leaf(3, (const float[]){1, 2, 3});
    tg_module *lin = tg_nn_linear(3, 2, true, &rng);
    assert_non_null(lin);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_clear_error();
    assert_null(tg_add(TG_NONE, x));
    assert_error_contains("tg_add: input 0 is TG_NONE");
    tg_clear_error();
    assert_null(tg_mul(x, TG_NONE));
    assert_error_contains("tg_mul: input 1 is TG_NONE");
    tg_clear_error();
    assert_null(tg_relu(TG_NONE));
    assert_error_contains("TG_NONE");
    tg_clear_error();
    assert_null(tg_linear(x, TG_NONE, TG_NONE));
    assert_error_contains("tg_linear: input 1 is TG_NONE");
    tg_clear_error();
    assert_null(tg_linear(TG_NONE, tg_module_param(lin, "weight"), TG_NONE));
    assert_error_contains("tg_linear: input 0 is TG_NONE");
    tg_clear_error();
    assert_null(tg_module_forward(lin, TG_NONE));
    assert_error_contains("TG_NONE");
    tg_clear_error();
    assert_int_not_equal(tg_backward(TG_NONE), TG_OK);
    /* Not a tensor a module or an optimizer can own. */
    tg_clear_error();
    assert_int_equal(tg_module_add_param(lin, "extra", TG_NONE), TG_ERR_ARG);
    assert_error_contains("tg_module_add_param: the tensor is TG_NONE");
    assert_int_equal(tg_module_add_buffer(lin, "extra", TG_NONE), TG_ERR_ARG);
    assert_false(tg_module_has_param(lin, "extra"));
    assert_null(tg_optim_sgd((tg_tensor *[]){w, TG_NONE}, 2, 0.1f, 0, 0, 0, false));
    assert_error_contains("tg_optim_sgd: parameter 1 is TG_NONE");
    /* Nor one the tensor functions take for a tensor. */
    assert_int_equal(tg_tensor_set_requires_grad(TG_NONE, true), TG_ERR_ARG);
    assert_error_contains("tg_tensor_set_requires_grad: t is TG_NONE");
    tg_clear_error();
    assert_null(tg_tensor_clone(TG_NONE));
    assert_error_contains("tg_tensor_clone: src is TG_NONE");
    tg_state_dict *sd = tg_state_dict_new();
    assert_int_equal(tg_state_dict_put(sd, "x", TG_NONE), TG_ERR_ARG);
    assert_error_contains("tg_state_dict_put: the tensor is TG_NONE");
    assert_int_equal(tg_state_dict_size(sd), 0);
    tg_state_dict_free(sd);
    /* TG_NONE itself is unchanged by all this. */
    assert_false(TG_NONE->requires_grad);
    assert_null(TG_NONE->grad);
    assert_int_equal(TG_NONE->numel, 0);
    tg_tape_end(tape);
    tg_module_free(lin);
    tg_tensor_release(w);
    tg_tensor_release(x);
}

/* ---- (e) a misspelt parameter name -------------------------------------------------------- */

static void test_misspelt_param_sets_error(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 6);
    tg_module *lin = tg_nn_linear(3, 2, true, &rng);
    assert_non_null(lin);
    tg_clear_error();
    assert_null(tg_module_param(lin, "bais"));
    assert_int_equal(tg_last_status(), TG_ERR_ARG);
    assert_string_equal(tg_last_error(),
                        "tg_module_param: Linear has no parameter \"bais\" (it has: weight, bias)");
    /* So an op given it fails instead of running without a bias. */
    tg_tensor *x = tg_tensor_ones(TG_DIMS(1, 3));
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    assert_null(tg_linear(x, tg_module_param(lin, "weight"), tg_module_param(lin, "bais")));
    assert_error_contains("\"bais\"");
    tg_tape_end(tape);
    tg_tensor_release(x);
    tg_module_free(lin);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TG_TEST(test_release_op_result_refused),
        TG_TEST(test_release_unrecorded_refused),
        TG_TEST(test_release_held_by_node_refused),
        TG_TEST(test_release_own_leaf_under_node),
        TG_TEST(test_release_tape_index_refused),
        TG_TEST(test_tape_owned_creation_needs_no_release),
        TG_TEST(test_tape_owned_creation_needs_a_tape),
        TG_TEST(test_tape_owned_random_same_numbers),
        TG_TEST(test_set_grad_errors),
        TG_TEST(test_none_where_required),
        TG_TEST(test_misspelt_param_sets_error),
    };
    return cmocka_run_group_tests_name("safety", tests, NULL, NULL);
}
