/* bce_with_logits, cross_entropy and mse: PyTorch goldens (loss and gradients), stability at
 * saturated logits, label validation, shape errors, labels never differentiated. */
#include "common.h"

#include "golden/norm_golden.h"

#include <stdio.h>

/* ---- goldens --------------------------------------------------------------------------- */

static void test_bce_golden(void **state)
{
    (void)state;
    tg_tensor *z = test_tensor_of(BCE_NDIM, bce_shape, bce_z, true);
    tg_tensor *t = test_tensor_of(BCE_NDIM, bce_shape, bce_t, true);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *loss = tg_bce_with_logits(z, t);
    assert_non_null(loss);
    assert_int_equal(loss->ndim, 0);
    assert_int_equal(tg_backward(loss), TG_OK);
    assert_golden("bce loss", loss->data, bce_loss, 1);
    assert_golden("bce dlogits", z->grad->data, bce_dz, z->numel);
    assert_golden("bce dtargets", t->grad->data, bce_dt, t->numel);
    tg_tape_end(tape);
    tg_release(z);
    tg_release(t);
}

static void test_cross_entropy_golden(void **state)
{
    (void)state;
    tg_tensor *z = test_tensor_of(CE_NDIM, ce_shape, ce_logits, true);
    tg_tensor *labels = test_tensor_of(1, ce_shape, ce_labels, false);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *loss = tg_cross_entropy(z, labels);
    assert_non_null(loss);
    assert_int_equal(loss->ndim, 0);
    assert_int_equal(tg_backward(loss), TG_OK);
    assert_golden("cross_entropy loss", loss->data, ce_loss, 1);
    assert_golden("cross_entropy dlogits", z->grad->data, ce_dlogits, z->numel);
    tg_tape_end(tape);
    tg_release(z);
    tg_release(labels);
}

static void test_mse_golden(void **state)
{
    (void)state;
    tg_tensor *p = test_tensor_of(MSE_NDIM, mse_shape, mse_pred, true);
    tg_tensor *q = test_tensor_of(MSE_NDIM, mse_shape, mse_target, true);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *loss = tg_mse(p, q);
    assert_non_null(loss);
    assert_int_equal(tg_backward(loss), TG_OK);
    assert_golden("mse loss", loss->data, mse_loss, 1);
    assert_golden("mse dpred", p->grad->data, mse_dpred, p->numel);
    assert_golden("mse dtarget", q->grad->data, mse_dtarget, q->numel);
    tg_tape_end(tape);
    tg_release(p);
    tg_release(q);
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
    tg_tensor *loss = tg_bce_with_logits(z, t);
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
    tg_release(z);
    tg_release(t);
}

/* Logits 1000 apart: loss 1000 for the wrong class, 0 for the right one; finite gradients. */
static void test_cross_entropy_large_logits(void **state)
{
    (void)state;
    tg_tensor *z = test_tensor_of(TG_DIMS(2, 2), (const float[]){1000, 0, 1000, 0}, true);
    tg_tensor *labels = test_tensor_of(TG_DIMS(2), (const float[]){1, 0}, false);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *loss = tg_cross_entropy(z, labels);
    assert_non_null(loss);
    assert_int_equal(tg_backward(loss), TG_OK);
    assert_close(loss->data[0], 500.0, 1e-4);
    /* (softmax - onehot) / 2 per row: row 0 [1, -1]/2, row 1 [0, 0]. */
    const float want[] = {0.5f, -0.5f, 0, 0};
    for (int i = 0; i < 4; i++)
        assert_close(z->grad->data[i], want[i], 1e-7);
    tg_tape_end(tape);
    tg_release(z);
    tg_release(labels);
}

/* ---- labels and shapes ----------------------------------------------------------------- */

static void test_cross_entropy_label_validation(void **state)
{
    (void)state;
    tg_tensor *z = tg_tensor_zeros(TG_DIMS(3, 5));
    tg_tensor_set_requires_grad(z, true);
    tg_tensor *frac = test_tensor_of(TG_DIMS(3), (const float[]){0, 4, 1.5f}, false);
    tg_tensor *high = test_tensor_of(TG_DIMS(3), (const float[]){0, 5, 1}, false);
    tg_tensor *neg = test_tensor_of(TG_DIMS(3), (const float[]){-1, 0, 1}, false);
    tg_tensor *nan = test_tensor_of(TG_DIMS(3), (const float[]){0, NAN, 1}, false);
    tg_tensor *short_ = test_tensor_of(TG_DIMS(2), (const float[]){0, 1}, false);
    tg_tensor *flat = tg_tensor_zeros(TG_DIMS(15));
    tg_tape *tape = tg_tape_begin(TG_GRAD);

    assert_null(tg_cross_entropy(z, frac));
    assert_int_equal(tg_last_status(), TG_ERR_ARG);
    assert_error_contains("tg_cross_entropy: labels[2] = 1.5 is not an integer class index");
    assert_null(tg_cross_entropy(z, high));
    assert_error_contains("tg_cross_entropy: labels[1] = 5 is out of range for 5 classes "
                          "(0 to 4)");
    assert_null(tg_cross_entropy(z, neg));
    assert_error_contains("labels[0] = -1 is out of range for 5 classes (0 to 4)");
    assert_null(tg_cross_entropy(z, nan));
    assert_error_contains("labels[1] = nan is not an integer class index");
    assert_null(tg_cross_entropy(z, short_));
    assert_int_equal(tg_last_status(), TG_ERR_SHAPE);
    assert_error_contains("tg_cross_entropy: logits [3, 5] need labels [3], got labels [2]");
    assert_null(tg_cross_entropy(flat, short_));
    assert_error_contains("tg_cross_entropy: logits [15] must be [N, C]");
    tg_tape_end(tape);
    tg_release(z);
    tg_release(frac);
    tg_release(high);
    tg_release(neg);
    tg_release(nan);
    tg_release(short_);
    tg_release(flat);
}

/* Labels that (wrongly) require grad still get none: their gradient buffer stays zero. */
static void test_cross_entropy_labels_get_no_gradient(void **state)
{
    (void)state;
    tg_tensor *z = test_tensor_of(TG_DIMS(2, 3), (const float[]){1, 2, 3, 3, 2, 1}, true);
    tg_tensor *labels = test_tensor_of(TG_DIMS(2), (const float[]){2, 1}, true);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *loss = tg_cross_entropy(z, labels);
    assert_non_null(loss);
    assert_int_equal(tg_backward(loss), TG_OK);
    assert_true(!labels->grad || (labels->grad->data[0] == 0.0f && labels->grad->data[1] == 0.0f));
    /* Each logits row's gradient sums to zero (softmax sums to 1, the one-hot too). */
    for (int r = 0; r < 2; r++)
        assert_close(z->grad->data[3 * r] + z->grad->data[3 * r + 1] + z->grad->data[3 * r + 2],
                     0.0, 1e-7);
    tg_tape_end(tape);
    tg_release(z);
    tg_release(labels);
}

static void test_loss_shape_errors(void **state)
{
    (void)state;
    tg_tensor *a = tg_tensor_zeros(TG_DIMS(2, 3)), *b = tg_tensor_zeros(TG_DIMS(3, 2));
    tg_tensor *e = tg_tensor_zeros(TG_DIMS(0, 3));
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    assert_null(tg_bce_with_logits(a, b));
    assert_int_equal(tg_last_status(), TG_ERR_SHAPE);
    assert_error_contains("tg_bce_with_logits: logits [2, 3] and targets [3, 2] must have the "
                          "same shape");
    assert_null(tg_mse(b, a));
    assert_int_equal(tg_last_status(), TG_ERR_SHAPE);
    assert_error_contains("tg_mse: pred [3, 2] and target [2, 3] must have the same shape");
    assert_null(tg_mse(e, e));
    assert_error_contains("tg_mse: pred [0, 3] is empty");
    /* A NULL input from an earlier failure keeps that failure's message. */
    assert_null(tg_mse(tg_mse(b, a), a));
    assert_error_contains("tg_mse: pred [3, 2] and target [2, 3]");
    tg_tape_end(tape);
    tg_release(a);
    tg_release(b);
    tg_release(e);
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
    want /= (double)n;
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *l2 = tg_mse(p, q);
    tg_set_num_threads(1);
    tg_tensor *l1 = tg_mse(p, q);
    tg_set_num_threads(2);
    assert_non_null(l1);
    assert_non_null(l2);
    assert_close(l2->data[0], want, 1e-6 * want);
    assert_true(l1->data[0] == l2->data[0]);
    tg_tape_end(tape);
    tg_release(p);
    tg_release(q);
}

int main(void)
{
    tg_set_num_threads(2);
    const struct CMUnitTest tests[] = {
        TG_TEST(test_bce_golden),
        TG_TEST(test_cross_entropy_golden),
        TG_TEST(test_mse_golden),
        TG_TEST(test_bce_saturated_logits),
        TG_TEST(test_cross_entropy_large_logits),
        TG_TEST(test_cross_entropy_label_validation),
        TG_TEST(test_cross_entropy_labels_get_no_gradient),
        TG_TEST(test_loss_shape_errors),
        TG_TEST(test_mse_large),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
