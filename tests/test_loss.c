/* bce_with_logits, cross_entropy and mse: PyTorch goldens (loss and gradients) for each
 * reduction, stability at saturated logits, label validation, shape and reduction errors,
 * labels never differentiated. */
#include "common.h"

#include "golden/loss_golden.h"
#include "golden/norm_golden.h"

#include <stdio.h>

/* A new index holding n labels given as whole floats (the goldens' and the tests' literals). */
static tg_index *labels_of(int64_t n, const float *v)
{
    int64_t iv[64];
    assert_true(n <= 64);
    for (int64_t i = 0; i < n; i++)
        iv[i] = (int64_t)v[i];
    tg_index *ix = tg_index_new(1, &n, iv);
    assert_non_null(ix);
    return ix;
}

/* ---- goldens, reduction mean (norm_golden.h) -------------------------------------------- */

static void test_bce_golden(void **state)
{
    (void)state;
    tg_tensor *z = test_tensor_of(BCE_NDIM, bce_shape, bce_z, true);
    tg_tensor *t = test_tensor_of(BCE_NDIM, bce_shape, bce_t, true);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *loss = tg_bce_with_logits(z, t, TG_REDUCE_MEAN);
    assert_non_null(loss);
    assert_int_equal(loss->ndim, 0);
    assert_int_equal(tg_backward(loss), TG_OK);
    assert_golden("bce loss", loss->data, bce_loss, 1);
    assert_golden("bce dlogits", z->grad->data, bce_dz, z->numel);
    assert_golden("bce dtargets", t->grad->data, bce_dt, t->numel);
    tg_tape_end(tape);
    tg_tensor_release(z);
    tg_tensor_release(t);
}

static void test_cross_entropy_golden(void **state)
{
    (void)state;
    tg_tensor *z = test_tensor_of(CE_NDIM, ce_shape, ce_logits, true);
    tg_index *labels = labels_of(ce_shape[0], ce_labels);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *loss = tg_cross_entropy(z, labels, TG_REDUCE_MEAN);
    assert_non_null(loss);
    assert_int_equal(loss->ndim, 0);
    assert_int_equal(tg_backward(loss), TG_OK);
    assert_golden("cross_entropy loss", loss->data, ce_loss, 1);
    assert_golden("cross_entropy dlogits", z->grad->data, ce_dlogits, z->numel);
    tg_tape_end(tape);
    tg_tensor_release(z);
    tg_index_release(labels);
}

static void test_mse_golden(void **state)
{
    (void)state;
    tg_tensor *p = test_tensor_of(MSE_NDIM, mse_shape, mse_pred, true);
    tg_tensor *q = test_tensor_of(MSE_NDIM, mse_shape, mse_target, true);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *loss = tg_mse(p, q, TG_REDUCE_MEAN);
    assert_non_null(loss);
    assert_int_equal(tg_backward(loss), TG_OK);
    assert_golden("mse loss", loss->data, mse_loss, 1);
    assert_golden("mse dpred", p->grad->data, mse_dpred, p->numel);
    assert_golden("mse dtarget", q->grad->data, mse_dtarget, q->numel);
    tg_tape_end(tape);
    tg_tensor_release(p);
    tg_tensor_release(q);
}

/* ---- goldens, reductions sum and none (loss_golden.h) ----------------------------------- */

/* One golden run of a reduction: the loss has want_ndim axes (0, or the per-element shape),
 * its values are want_loss, and the backward is seeded with dy (PyTorch's upstream gradient). */
static void check_reduced(const char *what, tg_tensor *loss, int want_ndim, const float *want_loss,
                          const float *dy)
{
    if (!loss)
        fail_msg("%s: %s", what, tg_last_error());
    assert_int_equal(loss->ndim, want_ndim);
    assert_golden(what, loss->data, want_loss, loss->numel);
    tg_tensor *g = tg_tensor_from_data(loss->ndim, loss->shape, dy);
    assert_int_equal(tg_backward_grad(loss, g), TG_OK);
    tg_tensor_release(g);
}

static void test_bce_golden_sum_none(void **state)
{
    (void)state;
    const tg_reduction red[2] = {TG_REDUCE_SUM, TG_REDUCE_NONE};
    const float *want[2][4] = {{lbce_sum_loss, lbce_sum_dy, lbce_sum_dz, lbce_sum_dt},
                               {lbce_none_loss, lbce_none_dy, lbce_none_dz, lbce_none_dt}};
    for (int k = 0; k < 2; k++) {
        tg_tensor *z = test_tensor_of(LBCE_NDIM, lbce_shape, lbce_z, true);
        tg_tensor *t = test_tensor_of(LBCE_NDIM, lbce_shape, lbce_t, true);
        tg_tape *tape = tg_tape_begin(TG_GRAD);
        check_reduced("bce loss", tg_bce_with_logits(z, t, red[k]), k ? LBCE_NDIM : 0, want[k][0],
                      want[k][1]);
        assert_golden("bce dlogits", z->grad->data, want[k][2], z->numel);
        assert_golden("bce dtargets", t->grad->data, want[k][3], t->numel);
        tg_tape_end(tape);
        tg_tensor_release(z);
        tg_tensor_release(t);
    }
}

static void test_cross_entropy_golden_sum_none(void **state)
{
    (void)state;
    const tg_reduction red[2] = {TG_REDUCE_SUM, TG_REDUCE_NONE};
    const float *want[2][3] = {{lce_sum_loss, lce_sum_dy, lce_sum_dz},
                               {lce_none_loss, lce_none_dy, lce_none_dz}};
    for (int k = 0; k < 2; k++) {
        tg_tensor *z = test_tensor_of(LCE_NDIM, lce_shape, lce_logits, true);
        tg_index *labels = tg_index_new(1, lce_shape, lce_labels);
        tg_tape *tape = tg_tape_begin(TG_GRAD);
        tg_tensor *loss = tg_cross_entropy(z, labels, red[k]);
        check_reduced("cross_entropy loss", loss, k ? 1 : 0, want[k][0], want[k][1]);
        if (k)
            assert_int_equal(loss->shape[0], lce_shape[0]);
        assert_golden("cross_entropy dlogits", z->grad->data, want[k][2], z->numel);
        tg_tape_end(tape);
        tg_tensor_release(z);
        tg_index_release(labels);
    }
}

static void test_mse_golden_sum_none(void **state)
{
    (void)state;
    const tg_reduction red[2] = {TG_REDUCE_SUM, TG_REDUCE_NONE};
    const float *want[2][4] = {{lmse_sum_loss, lmse_sum_dy, lmse_sum_dp, lmse_sum_dt},
                               {lmse_none_loss, lmse_none_dy, lmse_none_dp, lmse_none_dt}};
    for (int k = 0; k < 2; k++) {
        tg_tensor *p = test_tensor_of(LMSE_NDIM, lmse_shape, lmse_pred, true);
        tg_tensor *q = test_tensor_of(LMSE_NDIM, lmse_shape, lmse_target, true);
        tg_tape *tape = tg_tape_begin(TG_GRAD);
        tg_tensor *loss = tg_mse(p, q, red[k]);
        check_reduced("mse loss", loss, k ? LMSE_NDIM : 0, want[k][0], want[k][1]);
        if (k)
            assert_true(tg_shape_equal(loss, p));
        assert_golden("mse dpred", p->grad->data, want[k][2], p->numel);
        assert_golden("mse dtarget", q->grad->data, want[k][3], q->numel);
        tg_tape_end(tape);
        tg_tensor_release(p);
        tg_tensor_release(q);
    }
}

/* SUM is exactly the sum of NONE's terms, and MEAN that sum over the count (both in double). */
static void test_reductions_agree(void **state)
{
    (void)state;
    tg_tensor *p = tg_tensor_new(TG_DIMS(7, 9)), *q = tg_tensor_new(TG_DIMS(7, 9));
    tg_rng rng;
    tg_rng_seed(&rng, 3);
    tg_tensor_normal_(p, &rng, 0.0f, 2.0f);
    tg_tensor_uniform_(q, &rng, 0.0f, 1.0f);
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    for (int which = 0; which < 2; which++) {
        tg_tensor *(*fn)(tg_tensor *, tg_tensor *, tg_reduction) =
            which ? tg_mse : tg_bce_with_logits;
        tg_tensor *none = fn(p, q, TG_REDUCE_NONE), *sum = fn(p, q, TG_REDUCE_SUM);
        tg_tensor *mean = fn(p, q, TG_REDUCE_MEAN);
        assert_non_null(none);
        assert_non_null(sum);
        assert_non_null(mean);
        double s = 0;
        for (int64_t i = 0; i < none->numel; i++)
            s += none->data[i];
        assert_close(sum->data[0], s, 1e-5 * fabs(s));
        assert_close(mean->data[0], s / 63.0, 1e-5 * fabs(s) / 63.0);
    }
    tg_tape_end(tape);
    tg_tensor_release(p);
    tg_tensor_release(q);
}

/* ---- stability ------------------------------------------------------------------------- */

/* Saturated logits: log(sigmoid(-100)) underflows in the naive formula; here every term is
 * finite. Loss = mean(0, 0, 100, 100); dz = (sigmoid(z) - t)/4; dt = -z/4. */
static void test_bce_saturated_logits(void **state)
{
    (void)state;
    tg_tensor *z = test_tensor_of(TG_DIMS(4), (const float[]){100, -100, 100, -100}, true);
    tg_tensor *t = test_tensor_of(TG_DIMS(4), (const float[]){1, 0, 0, 1}, true);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *loss = tg_bce_with_logits(z, t, TG_REDUCE_MEAN);
    assert_non_null(loss);
    assert_int_equal(tg_backward(loss), TG_OK);
    assert_close(loss->data[0], 50.0, 1e-5);
    const float want_dz[] = {0, 0, 0.25f, -0.25f}, want_dt[] = {-25, 25, -25, 25};
    for (int i = 0; i < 4; i++) {
        assert_true(isfinite(z->grad->data[i]));
        assert_close(z->grad->data[i], want_dz[i], 1e-7);
        assert_close(t->grad->data[i], want_dt[i], 1e-5);
    }
    tg_tape_end(tape);
    tg_tensor_release(z);
    tg_tensor_release(t);
}

/* Logits 1000 apart: loss 1000 for the wrong class, 0 for the right one; finite gradients. */
static void test_cross_entropy_large_logits(void **state)
{
    (void)state;
    tg_tensor *z = test_tensor_of(TG_DIMS(2, 2), (const float[]){1000, 0, 1000, 0}, true);
    tg_index *labels = labels_of(2, (const float[]){1, 0});
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *loss = tg_cross_entropy(z, labels, TG_REDUCE_MEAN);
    assert_non_null(loss);
    assert_int_equal(tg_backward(loss), TG_OK);
    assert_close(loss->data[0], 500.0, 1e-4);
    /* (softmax - onehot) / 2 per row: row 0 [1, -1]/2, row 1 [0, 0]. */
    const float want[] = {0.5f, -0.5f, 0, 0};
    for (int i = 0; i < 4; i++)
        assert_close(z->grad->data[i], want[i], 1e-7);
    tg_tape_end(tape);
    tg_tensor_release(z);
    tg_index_release(labels);
}

/* ---- labels, shapes and reductions ------------------------------------------------------- */

static void test_cross_entropy_label_validation(void **state)
{
    (void)state;
    tg_tensor *z = tg_tensor_zeros(TG_DIMS(3, 5));
    tg_tensor_set_requires_grad(z, true);
    tg_index *high = labels_of(3, (const float[]){0, 5, 1});
    tg_index *neg = labels_of(3, (const float[]){-1, 0, 1});
    tg_index *short_ = labels_of(2, (const float[]){0, 1});
    tg_index *two_d = tg_index_new(TG_DIMS(3, 1), NULL);
    tg_tensor *flat = tg_tensor_zeros(TG_DIMS(15));
    tg_tensor *frac = test_tensor_of(TG_DIMS(3), (const float[]){0, 4, 1.5f}, false);
    tg_tape *tape = tg_tape_begin(TG_GRAD);

    assert_null(tg_cross_entropy(z, high, TG_REDUCE_MEAN));
    assert_int_equal(tg_last_status(), TG_ERR_ARG);
    assert_error_contains("tg_cross_entropy: label 5 at row 1 is out of range for 5 classes "
                          "(0 to 4)");
    assert_null(tg_cross_entropy(z, neg, TG_REDUCE_SUM));
    assert_error_contains("label -1 at row 0 is out of range for 5 classes (0 to 4)");
    assert_null(tg_cross_entropy(z, short_, TG_REDUCE_MEAN));
    assert_int_equal(tg_last_status(), TG_ERR_SHAPE);
    assert_error_contains("tg_cross_entropy: logits [3, 5] need labels [3], got labels [2]");
    assert_null(tg_cross_entropy(z, two_d, TG_REDUCE_NONE));
    assert_error_contains("tg_cross_entropy: logits [3, 5] need labels [3], got labels [3, 1]");
    assert_null(tg_cross_entropy(flat, short_, TG_REDUCE_MEAN));
    assert_error_contains("tg_cross_entropy: logits [15] must be [N, C]");
    /* A fraction among float labels fails in tg_labels; cross_entropy keeps that error. */
    tg_clear_error();
    assert_null(tg_cross_entropy(z, tg_labels(frac), TG_REDUCE_MEAN));
    assert_error_contains("value 1.5 at position 2 is not a whole number");
    tg_clear_error();
    assert_null(tg_cross_entropy(z, NULL, TG_REDUCE_MEAN));
    assert_int_equal(tg_last_status(), TG_ERR_ARG);
    assert_error_contains("tg_cross_entropy: labels is NULL");
    tg_tape_end(tape);
    tg_tensor_release(z);
    tg_tensor_release(flat);
    tg_tensor_release(frac);
    tg_index_release(high);
    tg_index_release(neg);
    tg_index_release(short_);
    tg_index_release(two_d);
}

/* The labels are never differentiated: each logits row's gradient sums to zero (softmax sums
 * to 1, the one-hot too), and the index passed in is held by the node until the tape ends. */
static void test_cross_entropy_index_held(void **state)
{
    (void)state;
    tg_tensor *z = test_tensor_of(TG_DIMS(2, 3), (const float[]){1, 2, 3, 3, 2, 1}, true);
    tg_index *labels = labels_of(2, (const float[]){2, 1});
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *loss = tg_cross_entropy(z, labels, TG_REDUCE_MEAN);
    assert_non_null(loss);
    tg_index_release(labels); /* the node keeps its own reference */
    assert_int_equal(tg_backward(loss), TG_OK);
    for (int r = 0; r < 2; r++)
        assert_close(z->grad->data[3 * r] + z->grad->data[3 * r + 1] + z->grad->data[3 * r + 2],
                     0.0, 1e-7);
    tg_tape_end(tape);
    tg_tensor_release(z);
}

static void test_loss_shape_errors(void **state)
{
    (void)state;
    tg_tensor *a = tg_tensor_zeros(TG_DIMS(2, 3)), *b = tg_tensor_zeros(TG_DIMS(3, 2));
    tg_tensor *e = tg_tensor_zeros(TG_DIMS(0, 3));
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    assert_null(tg_bce_with_logits(a, b, TG_REDUCE_MEAN));
    assert_int_equal(tg_last_status(), TG_ERR_SHAPE);
    assert_error_contains("tg_bce_with_logits: logits [2, 3] and targets [3, 2] must have the "
                          "same shape");
    assert_null(tg_mse(b, a, TG_REDUCE_NONE));
    assert_int_equal(tg_last_status(), TG_ERR_SHAPE);
    assert_error_contains("tg_mse: pred [3, 2] and target [2, 3] must have the same shape");
    assert_null(tg_mse(e, e, TG_REDUCE_MEAN));
    assert_error_contains("tg_mse: pred [0, 3] is empty; the mean of no elements is undefined");
    /* A NULL input from an earlier failure keeps that failure's message. */
    assert_null(tg_mse(tg_mse(b, a, TG_REDUCE_MEAN), a, TG_REDUCE_MEAN));
    assert_error_contains("tg_mse: pred [3, 2] and target [2, 3]");
    /* Not a reduction at all. */
    tg_clear_error();
    assert_null(tg_bce_with_logits(a, a, (tg_reduction)3));
    assert_int_equal(tg_last_status(), TG_ERR_ARG);
    assert_error_contains("tg_bce_with_logits: reduction 3 is not TG_REDUCE_MEAN, TG_REDUCE_SUM "
                          "or TG_REDUCE_NONE");
    assert_null(tg_mse(a, a, (tg_reduction)-1));
    assert_error_contains("tg_mse: reduction -1 is not");
    tg_tape_end(tape);
    tg_tensor_release(a);
    tg_tensor_release(b);
    tg_tensor_release(e);
}

/* Empty inputs, as PyTorch: SUM gives 0 and NONE an empty tensor (MEAN is refused, above);
 * backward through them is a no-op. */
static void test_loss_empty_sum_none(void **state)
{
    (void)state;
    tg_tensor *e = tg_tensor_zeros(TG_DIMS(0, 3));
    tg_tensor_set_requires_grad(e, true);
    tg_index *no_labels = tg_index_new(TG_DIMS(0), NULL);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *s = tg_bce_with_logits(e, e, TG_REDUCE_SUM);
    assert_non_null(s);
    assert_int_equal(s->ndim, 0);
    assert_true(s->data[0] == 0.0f);
    assert_int_equal(tg_backward(s), TG_OK);
    tg_tensor *none = tg_mse(e, e, TG_REDUCE_NONE);
    assert_non_null(none);
    assert_int_equal(none->ndim, 2);
    assert_int_equal(none->numel, 0);
    assert_int_equal(tg_backward_grad(none, e), TG_OK); /* reads no upstream gradient */
    tg_tensor *ce_none = tg_cross_entropy(e, no_labels, TG_REDUCE_NONE);
    assert_non_null(ce_none);
    assert_int_equal(ce_none->numel, 0);
    tg_tensor *no_dy = tg_zeros(TG_DIMS(0));
    assert_int_equal(tg_backward_grad(ce_none, no_dy), TG_OK);
    tg_tensor *ce = tg_cross_entropy(e, no_labels, TG_REDUCE_SUM);
    assert_non_null(ce);
    assert_true(ce->data[0] == 0.0f);
    assert_int_equal(tg_backward(ce), TG_OK);
    assert_null(tg_cross_entropy(e, no_labels, TG_REDUCE_MEAN));
    assert_error_contains("tg_cross_entropy: logits [0, 3] is empty");
    tg_tape_end(tape);
    tg_tensor_release(e);
    tg_index_release(no_labels);
}

/* A loss over more elements than one thread's share: the chunked double sum matches a plain
 * one, at any thread count. */
static void test_mse_large(void **state)
{
    (void)state;
    const int64_t n = 200003;
    tg_tensor *p = tg_tensor_new(1, &n), *q = tg_tensor_new(1, &n);
    tg_rng rng;
    tg_rng_seed(&rng, 11);
    tg_tensor_normal_(p, &rng, 0.0f, 1.0f);
    tg_tensor_normal_(q, &rng, 0.5f, 1.0f);
    double want = 0;
    for (int64_t i = 0; i < n; i++)
        want += ((double)p->data[i] - q->data[i]) * ((double)p->data[i] - q->data[i]);
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *l2 = tg_mse(p, q, TG_REDUCE_MEAN), *s2 = tg_mse(p, q, TG_REDUCE_SUM);
    tg_set_num_threads(1);
    tg_tensor *l1 = tg_mse(p, q, TG_REDUCE_MEAN), *s1 = tg_mse(p, q, TG_REDUCE_SUM);
    tg_set_num_threads(2);
    assert_non_null(l1);
    assert_non_null(l2);
    assert_non_null(s1);
    assert_non_null(s2);
    assert_close(l2->data[0], want / (double)n, 1e-6 * want / (double)n);
    assert_close(s2->data[0], want, 1e-6 * want);
    assert_true(l1->data[0] == l2->data[0]);
    assert_true(s1->data[0] == s2->data[0]);
    tg_tape_end(tape);
    tg_tensor_release(p);
    tg_tensor_release(q);
}

int main(void)
{
    tg_set_num_threads(2);
    const struct CMUnitTest tests[] = {
        TG_TEST(test_bce_golden),
        TG_TEST(test_cross_entropy_golden),
        TG_TEST(test_mse_golden),
        TG_TEST(test_bce_golden_sum_none),
        TG_TEST(test_cross_entropy_golden_sum_none),
        TG_TEST(test_mse_golden_sum_none),
        TG_TEST(test_reductions_agree),
        TG_TEST(test_bce_saturated_logits),
        TG_TEST(test_cross_entropy_large_logits),
        TG_TEST(test_cross_entropy_label_validation),
        TG_TEST(test_cross_entropy_index_held),
        TG_TEST(test_loss_shape_errors),
        TG_TEST(test_loss_empty_sum_none),
        TG_TEST(test_mse_large),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
