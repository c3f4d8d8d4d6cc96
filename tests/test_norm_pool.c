/* tg_batch_norm_act_pool2d (batch norm, relu or leaky_relu and a 2 x 2 max pool as one op)
 * against tg_batch_norm_act followed by tg_max_pool2d(2, 2, 0): the same bits for y, dx,
 * dweight, dbias and the running statistics, over odd planes, N = 1, C = 1, planes of more than
 * 1024 values and of more than the kernels' buffer, more channels than a backward task takes,
 * affine or not, training and eval, fresh and accumulated gradients, 1 and 2 threads, ties;
 * the same second order; nn's Sequential fusing BatchNorm2d, ReLU / LeakyReLU and
 * MaxPool2d(2, 2) into it (and not otherwise); the synchronised batch norm left to the two
 * ops; the op's errors. */
#include "common.h"
#include "sequential_check.h"

#include "nn.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    int64_t shape[4];
    bool weight, bias, training, accumulate, ties;
    tg_act act;
    int threads;
} np_cfg;

/* Bit equality of n floats, failing with the first difference named what. */
static void same_bits(const tg_tensor *a, const tg_tensor *b, const char *what, int cfg)
{
    if (!a && !b)
        return;
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(a->numel, b->numel);
    for (int64_t i = 0; i < a->numel; i++)
        if (memcmp(&a->data[i], &b->data[i], sizeof(float)) != 0)
            fail_msg("config %d: %s[%lld] = %.9g fused, %.9g as two ops", cfg, what, (long long)i,
                     (double)a->data[i], (double)b->data[i]);
}

/* One config, fused or as two ops: out = y, dx, dweight, dbias, running_mean, running_var
 * (NULL where there is none; the caller releases). With accumulate, two steps add into the
 * same gradients. */
static void np_run(bool fused, const np_cfg *k, tg_tensor *out[6])
{
    const int64_t *s = k->shape, C = s[1];
    const int64_t ps[4] = {s[0], s[1], s[2] / 2, s[3] / 2};
    tg_rng rng;
    tg_rng_seed(&rng, 31);
    tg_tensor *x = tg_tensor_new(4, s), *dy = tg_tensor_new(4, ps);
    tg_tensor *w = tg_tensor_new(TG_DIMS(C)), *b = tg_tensor_new(TG_DIMS(C));
    tg_tensor *rm = tg_tensor_new(TG_DIMS(C)), *rv = tg_tensor_new(TG_DIMS(C));
    tg_tensor_normal_(x, &rng, 0.3f, 1.5f);
    if (k->ties) /* a few levels: ties in the windows, and after relu ties at 0 */
        for (int64_t i = 0; i < x->numel; i++)
            x->data[i] = roundf(x->data[i] * 2.0f) * 0.5f;
    tg_tensor_normal_(dy, &rng, 0.0f, 1.0f);
    for (int64_t i = 0; i < dy->numel; i += 7) /* max_pool2d's backward makes these +0 */
        dy->data[i] = -0.0f;
    tg_tensor_uniform_(w, &rng, 0.5f, 1.5f);
    tg_tensor_uniform_(b, &rng, -0.5f, 0.5f);
    tg_tensor_uniform_(rm, &rng, -0.5f, 0.5f);
    tg_tensor_uniform_(rv, &rng, 0.5f, 1.5f);
    assert_int_equal(tg_tensor_set_requires_grad(x, true), TG_OK);
    assert_int_equal(tg_tensor_set_requires_grad(w, true), TG_OK);
    assert_int_equal(tg_tensor_set_requires_grad(b, true), TG_OK);
    tg_tensor *wt = k->weight ? w : TG_NONE, *bt = k->bias ? b : TG_NONE;
    const int threads = tg_get_num_threads();
    assert_int_equal(tg_set_num_threads(k->threads), TG_OK);
    for (int step = 0; step < (k->accumulate ? 2 : 1); step++) {
        tg_tape *tape = tg_tape_begin(TG_GRAD);
        const int64_t nodes0 = tg_debug_live_nodes();
        tg_tensor *y = fused ? tg_batch_norm_act_pool2d(x, wt, bt, rm, rv, k->training, 0.1f, 1e-5f,
                                                        k->act, 0.2f)
                             : tg_max_pool2d(tg_batch_norm_act(x, wt, bt, rm, rv, k->training, 0.1f,
                                                               1e-5f, k->act, 0.2f),
                                             2, 2, 0);
        assert_non_null(y);
        assert_int_equal(tg_debug_live_nodes() - nodes0, fused ? 1 : 2);
        assert_int_equal(tg_backward_grad(y, dy), TG_OK);
        if (step == (k->accumulate ? 1 : 0))
            out[0] = tg_tensor_clone(y);
        assert_int_equal(tg_tape_end(tape), TG_OK);
    }
    assert_int_equal(tg_set_num_threads(threads), TG_OK);
    out[1] = tg_tensor_clone(x->grad);
    out[2] = k->weight ? tg_tensor_clone(w->grad) : NULL;
    out[3] = k->bias ? tg_tensor_clone(b->grad) : NULL;
    out[4] = tg_tensor_clone(rm);
    out[5] = tg_tensor_clone(rv);
    tg_tensor *all[6] = {x, dy, w, b, rm, rv};
    for (int i = 0; i < 6; i++)
        tg_tensor_release(all[i]);
}

static void test_same_bits_as_two_ops(void **state)
{
    (void)state;
    const tg_act R = TG_ACT_RELU, L = TG_ACT_LEAKY_RELU;
    /* shape; weight, bias, training, accumulate, ties; act; threads */
    const np_cfg cfgs[] = {
        {{4, 3, 7, 9}, true, true, true, false, false, R, 1},    /* odd H and W */
        {{4, 3, 7, 9}, true, true, true, false, false, L, 2},    /* 2 threads */
        {{1, 2, 6, 8}, true, true, true, false, false, R, 1},    /* N = 1 */
        {{3, 1, 5, 6}, true, true, true, true, false, L, 1},     /* C = 1, accumulated */
        {{2, 3, 8, 5}, false, false, true, false, false, R, 2},  /* no affine */
        {{2, 3, 8, 5}, true, false, false, false, false, L, 1},  /* eval, weight only */
        {{2, 3, 9, 7}, false, true, false, true, false, R, 2},   /* eval, bias only, accumulated */
        {{5, 4, 26, 26}, true, true, true, true, false, R, 2},   /* D's first block's plane */
        {{2, 2, 41, 36}, true, true, true, false, false, L, 2},  /* 1476 values: sums in pieces */
        {{2, 2, 45, 33}, true, true, false, true, false, R, 1},  /* the same, eval, odd */
        {{1, 2, 66, 70}, true, true, true, true, false, L, 2},   /* planes beyond the buffer */
        {{3, 20, 6, 6}, true, true, true, false, false, R, 2},   /* two blocks of channels */
        {{2, 17, 7, 4}, false, true, false, false, false, L, 1}, /* the same, eval */
        {{4, 3, 6, 10}, true, true, true, false, true, R, 2},    /* ties */
        {{4, 3, 6, 10}, true, true, true, false, true, L, 1},    /* ties, leaky */
        {{2, 3, 30, 34}, true, true, true, false, false, R, 1},  /* rows of 17 windows */
        {{2, 3, 27, 35}, true, true, true, false, true, L, 2},   /* the same, odd, ties */
    };
    static const char *const what[6] = {"y",     "dx",           "dweight",
                                        "dbias", "running_mean", "running_var"};
    for (int c = 0; c < (int)(sizeof cfgs / sizeof cfgs[0]); c++) {
        tg_tensor *one[6], *two[6];
        np_run(true, &cfgs[c], one);
        np_run(false, &cfgs[c], two);
        for (int q = 0; q < 6; q++) {
            same_bits(one[q], two[q], what[q], c);
            tg_tensor_release(one[q]);
            tg_tensor_release(two[q]);
        }
    }
}

/* The second order (a gradient penalty through the op): the same bits as through the two ops,
 * for the weight's and x's gradients of sum(dL/dx ^ 2), L = sum(y * r). */
static void test_second_order_same_bits(void **state)
{
    (void)state;
    for (int c = 0; c < 4; c++) {
        const tg_act act = c % 2 ? TG_ACT_LEAKY_RELU : TG_ACT_RELU;
        const bool training = c < 2;
        tg_tensor *got[3] = {0}, *want[3] = {0};
        for (int fused = 0; fused < 2; fused++) {
            tg_rng rng;
            tg_rng_seed(&rng, 5);
            tg_tensor *x = tg_tensor_new(TG_DIMS(3, 2, 5, 7)),
                      *r = tg_tensor_new(TG_DIMS(3, 2, 2, 3));
            tg_tensor *w = tg_tensor_new(TG_DIMS(2)), *b = tg_tensor_new(TG_DIMS(2));
            tg_tensor *rm = tg_tensor_zeros(TG_DIMS(2)), *rv = tg_tensor_ones(TG_DIMS(2));
            tg_tensor_normal_(x, &rng, 0.2f, 1.0f);
            tg_tensor_normal_(r, &rng, 0.0f, 1.0f);
            tg_tensor_uniform_(w, &rng, 0.5f, 1.5f);
            tg_tensor_uniform_(b, &rng, -0.3f, 0.3f);
            tg_tensor *leaves[3] = {x, w, b};
            for (int i = 0; i < 3; i++)
                assert_int_equal(tg_tensor_set_requires_grad(leaves[i], true), TG_OK);
            tg_tape *tape = tg_tape_begin(TG_GRAD);
            tg_tensor *y =
                fused ? tg_batch_norm_act_pool2d(x, w, b, rm, rv, training, 0.1f, 1e-5f, act, 0.2f)
                      : tg_max_pool2d(
                            tg_batch_norm_act(x, w, b, rm, rv, training, 0.1f, 1e-5f, act, 0.2f), 2,
                            2, 0);
            tg_tensor *loss = tg_sum(tg_mul(y, r)), *g = NULL;
            assert_int_equal(tg_grad(&loss, 1, &x, 1, NULL, true, &g), TG_OK);
            assert_int_equal(tg_backward(tg_sum(tg_mul(g, g))), TG_OK);
            tg_tensor **out = fused ? got : want;
            for (int i = 0; i < 3; i++)
                out[i] = tg_tensor_clone(leaves[i]->grad);
            assert_int_equal(tg_tape_end(tape), TG_OK);
            tg_tensor *all[6] = {x, r, w, b, rm, rv};
            for (int i = 0; i < 6; i++)
                tg_tensor_release(all[i]);
        }
        static const char *const what[3] = {"second-order dx", "second-order dweight",
                                            "second-order dbias"};
        for (int i = 0; i < 3; i++) {
            same_bits(got[i], want[i], what[i], c);
            tg_tensor_release(got[i]);
            tg_tensor_release(want[i]);
        }
    }
}

/* A Sequential of two conv-less D blocks, built twice with the same parameters. */
static tg_module *np_blocks(tg_module *(*act)(void), int pool_k, int pool_s)
{
    tg_module *seq = tg_nn_sequential(0);
    for (int blk = 0; blk < 2; blk++) {
        seq = tg_nn_sequential_add(seq, NULL, tg_nn_batch_norm2d(3));
        seq = tg_nn_sequential_add(seq, NULL, act ? act() : tg_nn_leaky_relu(0.2f));
        seq = tg_nn_sequential_add(seq, NULL, tg_nn_max_pool2d(pool_k, pool_s, 0));
    }
    assert_non_null(seq);
    tg_rng rng;
    tg_rng_seed(&rng, 9);
    for (int blk = 0; blk < 2; blk++) {
        tg_module *bn = tg_module_child_at(seq, 3 * blk);
        tg_tensor_uniform_(tg_module_param(bn, "weight"), &rng, 0.5f, 1.5f);
        tg_tensor_uniform_(tg_module_param(bn, "bias"), &rng, -0.5f, 0.5f);
    }
    return seq;
}

/* Sequential fuses BatchNorm2d, ReLU or LeakyReLU and MaxPool2d(2, 2) into one node per block,
 * with the bits, buffers (running statistics, num_batches_tracked) and parameter gradients of
 * the modules run one by one; with Tanh, or a MaxPool2d(3, 2), only the batch norm and its
 * activation are one node. */
static void test_sequential_fuses(void **state)
{
    (void)state;
    const struct {
        tg_module *(*act)(void);
        int k, s, nodes; /* nodes per two blocks, fused */
    } kinds[] = {
        {tg_nn_relu, 2, 2, 2}, {NULL, 2, 2, 2}, {tg_nn_tanh, 2, 2, 4}, {tg_nn_relu, 3, 2, 4}};
    for (size_t kd = 0; kd < sizeof kinds / sizeof kinds[0]; kd++) {
        tg_module *seq = np_blocks(kinds[kd].act, kinds[kd].k, kinds[kd].s);
        tg_module *ref = np_blocks(kinds[kd].act, kinds[kd].k, kinds[kd].s);
        tg_rng rng;
        tg_rng_seed(&rng, 10);
        tg_tensor *x = tg_tensor_new(TG_DIMS(4, 3, 13, 14));
        tg_tensor_normal_(x, &rng, 0.2f, 1.3f);
        assert_int_equal(tg_tensor_set_requires_grad(x, true), TG_OK);
        tg_tensor *got[3], *want[3];
        sequential_run(seq, false, x, NULL, kinds[kd].nodes, got);
        sequential_run(ref, true, x, NULL, 6, want);
        static const char *const what[3] = {"Sequential y", "Sequential dx", "Sequential dweight"};
        for (int i = 0; i < 3; i++) {
            same_bits(got[i], want[i], what[i], (int)kd);
            tg_tensor_release(got[i]);
            tg_tensor_release(want[i]);
        }
        static const char *const buffers[3] = {"running_mean", "running_var",
                                               "num_batches_tracked"};
        for (int blk = 0; blk < 2; blk++)
            for (int q = 0; q < 3; q++)
                same_bits(tg_module_buffer(tg_module_child_at(seq, 3 * blk), buffers[q]),
                          tg_module_buffer(tg_module_child_at(ref, 3 * blk), buffers[q]),
                          buffers[q], (int)kd);
        tg_tensor_release(x);
        tg_module_free(seq);
        tg_module_free(ref);
    }
}

static void identity_reduce(void *ctx, double *v, int64_t n)
{
    (void)v, (void)n;
    ++*(int *)ctx;
}

/* With a synchronised batch norm's hook set, the op runs as the two ops (two nodes), which
 * call the hook (twice in the forward); in eval it is fused (no hook). */
static void test_sync_not_fused(void **state)
{
    (void)state;
    int calls = 0;
    tg_tensor *x = tg_tensor_ones(TG_DIMS(2, 2, 4, 4));
    x->data[3] = 2.0f;
    tg_tensor *rm = tg_tensor_zeros(TG_DIMS(2)), *rv = tg_tensor_ones(TG_DIMS(2));
    assert_int_equal(tg_tensor_set_requires_grad(x, true), TG_OK);
    tg_batch_norm_set_reduce(identity_reduce, &calls);
    for (int training = 1; training >= 0; training--) {
        tg_tape *tape = tg_tape_begin(TG_GRAD);
        const int64_t nodes0 = tg_debug_live_nodes();
        tg_tensor *y = tg_batch_norm_act_pool2d(x, TG_NONE, TG_NONE, rm, rv, training, 0.1f, 1e-5f,
                                                TG_ACT_RELU, 0.0f);
        assert_non_null(y);
        assert_int_equal(tg_debug_live_nodes() - nodes0, training ? 2 : 1);
        assert_int_equal(calls, 2);
        assert_int_equal(tg_tape_end(tape), TG_OK);
    }
    tg_batch_norm_set_reduce(NULL, NULL);
    tg_tensor_release(x);
    tg_tensor_release(rm);
    tg_tensor_release(rv);
}

/* The op's refusals name the function and the values. */
static void test_errors(void **state)
{
    (void)state;
    tg_tensor *x = tg_tensor_ones(TG_DIMS(2, 3, 4, 4)), *x3 = tg_tensor_ones(TG_DIMS(2, 3, 4));
    tg_tensor *thin = tg_tensor_ones(TG_DIMS(2, 3, 1, 4));
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    assert_null(tg_batch_norm_act_pool2d(x, TG_NONE, TG_NONE, TG_NONE, TG_NONE, true, 0.1f, 1e-5f,
                                         TG_ACT_TANH, 0.0f));
    assert_error_contains("tg_batch_norm_act_pool2d: act 3 must be TG_ACT_RELU");
    assert_null(tg_batch_norm_act_pool2d(x3, TG_NONE, TG_NONE, TG_NONE, TG_NONE, true, 0.1f, 1e-5f,
                                         TG_ACT_RELU, 0.0f));
    assert_error_contains("tg_batch_norm_act_pool2d: x [2, 3, 4] must be 4-D");
    assert_null(tg_batch_norm_act_pool2d(thin, TG_NONE, TG_NONE, TG_NONE, TG_NONE, true, 0.1f,
                                         1e-5f, TG_ACT_RELU, 0.0f));
    assert_error_contains("x [2, 3, 1, 4]: H and W must be at least 2");
    assert_null(tg_batch_norm_act_pool2d(x, TG_NONE, TG_NONE, TG_NONE, TG_NONE, true, 0.1f, 1e-5f,
                                         TG_ACT_LEAKY_RELU, -1.0f));
    assert_error_contains("leaky_relu slope -1 must be finite and > 0");
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_tensor_release(x);
    tg_tensor_release(x3);
    tg_tensor_release(thin);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TG_TEST(test_same_bits_as_two_ops),
        TG_TEST(test_second_order_same_bits),
        TG_TEST(test_sequential_fuses),
        TG_TEST(test_sync_not_fused),
        TG_TEST(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
