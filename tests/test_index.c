/* Indexing (autograd/index.c): embedding, gather and index_select against PyTorch (values and
 * gradients, padding_idx, repeated indices), argmax / argmin / max with indices on ties, NaN and
 * infinities, one_hot; deterministic scatter-add at any thread count; multinomial and
 * categorical sampling statistics; every error names the bad value and where it is. */
#include "common.h"

#include "golden/index_golden.h"

#include <stdio.h>
#include <stdlib.h>

#define N_OF(a) ((int64_t)(sizeof(a) / sizeof((a)[0])))

/* ---- differentiable ops against PyTorch ------------------------------------------------- */

/* Which op a golden case runs. */
typedef enum { RUN_EMBEDDING, RUN_GATHER, RUN_INDEX_SELECT } run_kind;

typedef struct {
    const char *name;
    run_kind kind;
    int xdim;
    const int64_t *xshape;
    int idim; /* the index's shape */
    const int64_t *ishape;
    int64_t arg; /* padding_idx (embedding) or axis */
    const float *x;
    const int64_t *index;
    const float *dy, *y, *dx;
} op_golden;

/* Runs the case: y and the gradient of sum(y * dy) with respect to x, against PyTorch's. The
 * index is the caller's and released before the tape ends, so the node's own reference keeps
 * it alive for the backward. */
static void run_op_golden(const op_golden *g)
{
    tg_tensor *x = test_tensor_of(g->xdim, g->xshape, g->x, true);
    tg_index *ix = tg_index_new(g->idim, g->ishape, g->index);
    assert_non_null(ix);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = g->kind == RUN_EMBEDDING ? tg_embedding(x, ix, g->arg)
                   : g->kind == RUN_GATHER  ? tg_gather(x, (int)g->arg, ix)
                                            : tg_index_select(x, (int)g->arg, ix);
    if (!y)
        fail_msg("%s: %s", g->name, tg_last_error());
    tg_index_release(ix);
    tg_tensor *dy = tg_from_data(y->ndim, y->shape, g->dy);
    assert_int_equal(tg_backward_grad(y, dy), TG_OK);
    char what[64];
    snprintf(what, sizeof what, "%s y", g->name);
    assert_golden(what, y->data, g->y, y->numel);
    snprintf(what, sizeof what, "%s dx", g->name);
    assert_golden(what, tg_tensor_grad(x)->data, g->dx, x->numel);
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_tensor_release(x);
}

#define EMB_GOLDEN(p, P)                                                                           \
    {                                                                                              \
#p, RUN_EMBEDDING, P##_W_NDIM, p##_w_shape, P##_IDX_NDIM, p##_idx_shape, P##_PADDING_IDX,  \
            p##_weight, p##_index, p##_dy, p##_y, p##_dweight                                      \
    }
#define GATHER_GOLDEN(p, P)                                                                        \
    {                                                                                              \
#p, RUN_GATHER, P##_X_NDIM, p##_x_shape, P##_IDX_NDIM, p##_idx_shape, P##_AXIS, p##_x,     \
            p##_index, p##_dy, p##_y, p##_dx                                                       \
    }
#define ISEL_GOLDEN(p, P)                                                                          \
    {                                                                                              \
#p, RUN_INDEX_SELECT, P##_X_NDIM, p##_x_shape, 1,                                          \
            (const int64_t[]){P##_M }, P##_AXIS, p##_x, p##_index, p##_dy, p##_y, p##_dx           \
    }

static void test_embedding_golden(void **state)
{
    (void)state;
    /* emb_pad: the padding row 2, picked three times, gets no gradient; emb: the same picks
     * without padding add up; emb_wide: rows of 70 (two backward work items). */
    const op_golden cases[] = {EMB_GOLDEN(emb_pad, EMB_PAD), EMB_GOLDEN(emb, EMB),
                               EMB_GOLDEN(emb_wide, EMB_WIDE)};
    for (int64_t i = 0; i < N_OF(cases); i++)
        run_op_golden(&cases[i]);
    /* The golden itself pins what is tested: row 2 of emb_pad's gradient is zero. */
    for (int k = 0; k < 5; k++)
        assert_true(emb_pad_dweight[2 * 5 + k] == 0.0f && emb_dweight[2 * 5 + k] != 0.0f);
}

static void test_gather_golden(void **state)
{
    (void)state;
    const op_golden cases[] = {GATHER_GOLDEN(gather1, GATHER1), GATHER_GOLDEN(gather0, GATHER0),
                               GATHER_GOLDEN(gather2, GATHER2)};
    for (int64_t i = 0; i < N_OF(cases); i++)
        run_op_golden(&cases[i]);
}

static void test_index_select_golden(void **state)
{
    (void)state;
    const op_golden cases[] = {ISEL_GOLDEN(isel1, ISEL1), ISEL_GOLDEN(isel0, ISEL0),
                               ISEL_GOLDEN(isel2, ISEL2)};
    for (int64_t i = 0; i < N_OF(cases); i++)
        run_op_golden(&cases[i]);
}

/* Shapes of the results: embedding appends D to idx's shape (a 0-d idx gives [D]); gather
 * takes idx's; index_select replaces the axis by idx's length (0 included). */
static void test_result_shapes(void **state)
{
    (void)state;
    tg_tensor *w = tg_tensor_zeros(TG_DIMS(5, 3));
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *y = tg_embedding(w, tg_indices(0, NULL, (int64_t[]){4}), -1);
    assert_non_null(y);
    assert_int_equal(y->ndim, 1);
    assert_int_equal(y->shape[0], 3);
    y = tg_embedding(w, tg_indices(TG_DIMS(2, 0), NULL), -1);
    assert_non_null(y);
    assert_int_equal(y->ndim, 3);
    assert_int_equal(y->numel, 0);
    y = tg_index_select(w, 0, tg_indices(TG_DIMS(0), NULL));
    assert_non_null(y);
    assert_int_equal(y->shape[0], 0);
    assert_int_equal(y->shape[1], 3);
    y = tg_gather(w, 1, tg_indices(TG_DIMS(2, 1), (int64_t[]){2, 0}));
    assert_non_null(y);
    assert_int_equal(y->shape[0], 2);
    assert_int_equal(y->shape[1], 1);
    tg_tape_end(tape);
    tg_tensor_release(w);
}

/* Empty results with a 2^40 leading size do no work, forward or backward (they were 2^40
 * zero-byte copies, and 2^40 (row, chunk) items of nothing); an empty probs gives an empty
 * sample, whatever its (huge) number of columns (its work buffer's size wrapped around). */
static void test_empty_no_work(void **state)
{
    (void)state;
    const int64_t big = (int64_t)1 << 40;
    tg_tensor *x = tg_tensor_zeros(TG_DIMS(big, 0)), *x3 = tg_tensor_zeros(TG_DIMS(big, 1, 0));
    assert_int_equal(tg_tensor_set_requires_grad(x, true), TG_OK);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_index_select(x, 1, tg_indices(TG_DIMS(0), NULL));
    assert_non_null(y);
    assert_int_equal(y->shape[0], big);
    assert_int_equal(tg_backward(tg_sum(y)), TG_OK);
    tg_tensor *y3 = tg_index_select(x3, 1, tg_indices(TG_DIMS(1), (int64_t[]){0}));
    assert_non_null(y3);
    assert_int_equal(y3->numel, 0);
    tg_rng rng;
    tg_rng_seed(&rng, 3);
    for (int replacement = 0; replacement < 2; replacement++) {
        tg_index *ix = tg_multinomial(tg_zeros(TG_DIMS(0, (int64_t)1 << 60)), 2, replacement, &rng);
        if (!ix)
            fail_msg("%s", tg_last_error());
        assert_int_equal(ix->ndim, 2);
        assert_int_equal(ix->shape[0], 0);
        assert_int_equal(ix->shape[1], 2);
    }
    tg_tape_end(tape);
    tg_tensor_release(x);
    tg_tensor_release(x3);
}

/* An index overwritten between the forward and the backward (its values are public fields):
 * the backward still scatters to the positions the forward read, never to the new ones (here
 * far out of range). */
static void test_index_changed_after_forward(void **state)
{
    (void)state;
    tg_tensor *w = tg_tensor_zeros(TG_DIMS(4, 2));
    tg_tensor_set_requires_grad(w, true);
    for (int op = 0; op < 3; op++) {
        tg_tensor_zero_grad(w);
        tg_index *ix = op < 2 ? tg_index_new(TG_DIMS(3), (const int64_t[]){3, 1, 3})
                              : tg_index_new(TG_DIMS(3, 2), (const int64_t[]){3, 3, 1, 1, 3, 3});
        tg_tape *tape = tg_tape_begin(TG_GRAD);
        tg_tensor *y = op == 0   ? tg_embedding(w, ix, -1)
                       : op == 1 ? tg_index_select(w, 0, ix)
                                 : tg_gather(w, 0, ix);
        assert_non_null(y);
        for (int64_t p = 0; p < ix->numel; p++)
            ix->data[p] = 1000000007;
        assert_int_equal(tg_backward_grad(y, tg_ones(y->ndim, y->shape)), TG_OK);
        const float want[8] = {0, 0, 1, 1, 0, 0, 2, 2};
        assert_memory_equal(tg_tensor_grad(w)->data, want, sizeof want);
        tg_tape_end(tape);
        tg_index_release(ix);
    }
    tg_tensor_release(w);
}

/* ---- deterministic scatter-add ------------------------------------------------------------ */

/* The backwards add a position's repeats in index order on one thread, so the result is the
 * plain sequential float sum, bit for bit, at one thread and at two. Sizes make both loops
 * parallel (TG_PARALLEL_MIN). */
static void test_scatter_add_deterministic(void **state)
{
    (void)state;
    enum { V = 9, D = 200, M = 3000 };
    tg_rng rng;
    tg_rng_seed(&rng, 5);
    tg_tensor *w = tg_tensor_zeros(TG_DIMS(V, D));
    tg_tensor *dy = tg_tensor_new(TG_DIMS(M, D));
    tg_tensor_normal_(dy, &rng, 0.0f, 1.0f);
    tg_index *ix = tg_index_new(TG_DIMS(M), NULL);
    for (int64_t p = 0; p < M; p++)
        ix->data[p] = tg_rng_u32(&rng) % V;
    tg_tensor_set_requires_grad(w, true);
    /* The sequential reference, in float, in index order. */
    float *want = calloc((size_t)V * D, sizeof(float));
    for (int64_t p = 0; p < M; p++)
        if (ix->data[p] != 4)
            for (int64_t d = 0; d < D; d++)
                want[ix->data[p] * D + d] += dy->data[p * D + d];
    /* gather along axis 0 of a [V, D] with idx [M, D]: the same sums, column by column. */
    tg_index *gx = tg_index_new(TG_DIMS(M, D), NULL);
    for (int64_t p = 0; p < M * D; p++)
        gx->data[p] = ix->data[p / D];
    for (int threads = 1; threads <= 2; threads++) {
        assert_int_equal(tg_set_num_threads(threads), TG_OK);
        for (int op = 0; op < 3; op++) {
            tg_tensor_zero_grad(w);
            tg_tape *tape = tg_tape_begin(TG_GRAD);
            tg_tensor *y = op == 0   ? tg_embedding(w, ix, 4)
                           : op == 1 ? tg_index_select(w, 0, ix)
                                     : tg_gather(w, 0, gx);
            assert_non_null(y);
            assert_int_equal(tg_backward_grad(y, dy), TG_OK);
            const float *g = tg_tensor_grad(w)->data;
            for (int64_t e = 0; e < V * D; e++) {
                /* index_select and gather have no padding row: row 4 gets its sum. */
                float expect = want[e];
                if (op > 0 && e / D == 4) {
                    expect = 0.0f;
                    for (int64_t p = 0; p < M; p++)
                        if (ix->data[p] == 4)
                            expect += dy->data[p * D + e % D];
                }
                if (g[e] != expect)
                    fail_msg("op %d, %d threads: gradient %lld is %.9g, sequential sum %.9g", op,
                             threads, (long long)e, (double)g[e], (double)expect);
            }
            tg_tape_end(tape);
        }
    }
    tg_set_num_threads(2);
    free(want);
    tg_index_release(ix);
    tg_index_release(gx);
    tg_tensor_release(w);
    tg_tensor_release(dy);
}

/* ---- argmax, argmin, max with indices, one_hot ------------------------------------------ */

static void assert_index_equal(const char *what, const tg_index *ix, const int64_t *want, int64_t n)
{
    assert_non_null(ix);
    assert_int_equal(ix->numel, n);
    for (int64_t i = 0; i < n; i++)
        if (ix->data[i] != want[i])
            fail_msg("%s[%lld] = %lld, PyTorch gives %lld", what, (long long)i,
                     (long long)ix->data[i], (long long)want[i]);
}

/* Ties go to the first; NaN is both the maximum and the minimum (the first NaN); -inf rows and
 * constant rows give 0; keepdim keeps a 1. */
static void test_argmax_argmin_golden(void **state)
{
    (void)state;
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *x = tg_from_data(ARG_NDIM, arg_shape, arg_x);
    assert_index_equal("argmax axis 0", tg_argmax(x, 0, false), argmax0, 6);
    assert_index_equal("argmin axis 0", tg_argmin(x, 0, false), argmin0, 6);
    assert_index_equal("argmax axis 1", tg_argmax(x, 1, false), argmax1, 5);
    assert_index_equal("argmin axis 1", tg_argmin(x, -1, false), argmin1, 5);
    tg_index *k = tg_argmax(x, -1, true);
    assert_index_equal("argmax keepdim", k, argmax1, 5);
    assert_int_equal(k->ndim, 2);
    assert_int_equal(k->shape[0], 5);
    assert_int_equal(k->shape[1], 1);
    assert_true(k->held > 0);
    tg_tape_end(tape);
}

/* Values (NaN where PyTorch has NaN) and positions of torch.max(x, dim); the gradient of the
 * values reaches x at those positions only. */
static void test_max_axis_indices_golden(void **state)
{
    (void)state;
    tg_tensor *x = test_tensor_of(ARG_NDIM, arg_shape, arg_x, true);
    const float *values[2] = {max0_values, max1_values};
    const int64_t *indices[2] = {max0_indices, max1_indices};
    for (int axis = 0; axis < 2; axis++) {
        tg_tensor_zero_grad(x);
        tg_tape *tape = tg_tape_begin(TG_GRAD);
        tg_index *ix = NULL;
        tg_tensor *y = tg_max_axis_indices(x, axis, false, &ix);
        assert_non_null(y);
        int64_t n = y->numel;
        assert_index_equal("max indices", ix, indices[axis], n);
        for (int64_t i = 0; i < n; i++)
            if (!(y->data[i] == values[axis][i] || (isnan(y->data[i]) && isnan(values[axis][i]))))
                fail_msg("max values axis %d [%lld] = %g, PyTorch gives %g", axis, (long long)i,
                         (double)y->data[i], (double)values[axis][i]);
        tg_tensor *dy = tg_full(y->ndim, y->shape, 1.0f);
        assert_int_equal(tg_backward_grad(y, dy), TG_OK);
        const float *g = tg_tensor_grad(x)->data;
        for (int64_t e = 0; e < x->numel; e++) {
            int64_t row = e / 6, col = e % 6;
            bool picked = axis == 0 ? indices[0][col] == row : indices[1][row] == col;
            assert_true(g[e] == (picked ? 1.0f : 0.0f));
        }
        tg_tape_end(tape);
    }
    tg_tensor_release(x);
}

static void test_one_hot_golden(void **state)
{
    (void)state;
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_one_hot(tg_indices(TG_DIMS(2, 3), one_hot_index), 5);
    assert_non_null(y);
    assert_int_equal(y->ndim, 3);
    assert_int_equal(y->shape[2], 5);
    assert_memory_equal(y->data, one_hot_y, sizeof one_hot_y);
    assert_false(y->requires_grad);
    /* The tape owns it: a release is refused, not a use-after-free at tg_tape_end. */
    tg_tensor_release(y);
    assert_int_equal(tg_last_status(), TG_ERR_STATE);
    tg_clear_error();
    /* A 0-d index gives one row. */
    y = tg_one_hot(tg_indices(0, NULL, (int64_t[]){2}), 3);
    assert_non_null(y);
    assert_int_equal(y->ndim, 1);
    assert_true(y->data[0] == 0.0f && y->data[1] == 0.0f && y->data[2] == 1.0f);
    assert_int_equal(tg_tape_end(tape), TG_OK);
}

/* ---- errors -------------------------------------------------------------------------------- */

/* Runs call's result through the expectations: NULL, the status, and the message fragment. */
#define EXPECT_FAIL(call, status, fragment)                                                        \
    do {                                                                                           \
        tg_clear_error();                                                                          \
        assert_null(call);                                                                         \
        assert_int_equal(tg_last_status(), (status));                                              \
        assert_error_contains(fragment);                                                           \
    } while (0)

static void test_index_errors(void **state)
{
    (void)state;
    tg_tensor *w = tg_tensor_zeros(TG_DIMS(5, 3));
    tg_tensor *x3 = tg_tensor_zeros(TG_DIMS(2, 4, 3));
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_index *bad = tg_indices(TG_DIMS(2, 3), (int64_t[]){0, 1, 2, 4, 7, 1});
    tg_index *neg = tg_indices(TG_DIMS(3), (int64_t[]){0, -1, 2});
    tg_index *ok1 = tg_indices(TG_DIMS(2), (int64_t[]){1, 0});

    EXPECT_FAIL(tg_embedding(w, bad, -1), TG_ERR_ARG,
                "tg_embedding: index 7 at position 4 ([1, 1]) is out of range for the rows of "
                "weight [5, 3] of size 5");
    EXPECT_FAIL(tg_embedding(w, neg, -1), TG_ERR_ARG, "index -1 at position 1 is out of range");
    EXPECT_FAIL(tg_embedding(w, ok1, 5), TG_ERR_ARG, "tg_embedding: padding_idx 5 is out of range");
    EXPECT_FAIL(tg_embedding(w, ok1, -2), TG_ERR_ARG, "padding_idx -2");
    EXPECT_FAIL(tg_embedding(x3, ok1, -1), TG_ERR_SHAPE, "tg_embedding: weight [2, 4, 3] must be");
    EXPECT_FAIL(tg_embedding(TG_NONE, ok1, -1), TG_ERR_ARG, "TG_NONE");
    tg_index *deep = tg_indices(6, (int64_t[]){1, 1, 1, 1, 1, 1}, (int64_t[]){0});
    EXPECT_FAIL(tg_embedding(w, deep, -1), TG_ERR_SHAPE, "more than 6");

    EXPECT_FAIL(tg_index_select(x3, 1, bad), TG_ERR_SHAPE,
                "tg_index_select: idx [2, 3] must be 1-D");
    EXPECT_FAIL(tg_index_select(x3, 3, ok1), TG_ERR_ARG, "tg_index_select: axis 3 is out of range");
    EXPECT_FAIL(tg_index_select(x3, 0, tg_indices(TG_DIMS(3), (int64_t[]){1, 0, 2})), TG_ERR_ARG,
                "tg_index_select: index 2 at position 2 is out of range for axis 0 of [2, 4, 3] "
                "of size 2");

    EXPECT_FAIL(tg_gather(x3, 1, ok1), TG_ERR_SHAPE,
                "idx [2] has 1 dimensions and x [2, 4, 3] has 3");
    EXPECT_FAIL(tg_gather(w, 0, tg_indices(TG_DIMS(1, 4), (int64_t[]){0, 0, 0, 0})), TG_ERR_SHAPE,
                "larger than x [5, 3] along axis 1 (4 > 3)");
    EXPECT_FAIL(tg_gather(w, 1, bad), TG_ERR_ARG,
                "tg_gather: index 4 at position 3 ([1, 0]) is out of range for axis 1 of [5, 3] "
                "of size 3");
    EXPECT_FAIL(tg_gather(w, -3, ok1), TG_ERR_ARG, "tg_gather: axis -3 is out of range");

    EXPECT_FAIL(tg_one_hot(bad, 5), TG_ERR_ARG,
                "tg_one_hot: index 7 at position 4 ([1, 1]) is out of range for the classes of "
                "size 5");
    EXPECT_FAIL(tg_one_hot(ok1, 0), TG_ERR_ARG, "tg_one_hot: classes is 0");
    EXPECT_FAIL(tg_one_hot(deep, 2), TG_ERR_SHAPE, "more than 6");

    EXPECT_FAIL(tg_argmax(w, 2, false), TG_ERR_ARG, "tg_argmax: axis 2 is out of range for [5, 3]");
    EXPECT_FAIL(tg_argmin(tg_zeros(TG_DIMS(2, 0)), 1, false), TG_ERR_SHAPE,
                "tg_argmin: axis 1 of [2, 0] is empty");
    EXPECT_FAIL(tg_argmax(TG_NONE, 0, false), TG_ERR_ARG, "tg_argmax: x is TG_NONE");
    tg_index *got = ok1;
    EXPECT_FAIL(tg_max_axis_indices(w, 0, false, NULL), TG_ERR_ARG, "indices is NULL");
    EXPECT_FAIL(tg_max_axis_indices(w, 5, false, &got), TG_ERR_ARG, "axis 5");
    assert_null(got);

    /* A NULL index from a failed call keeps that call's error; a NULL with none pending says
     * which argument it is. */
    tg_clear_error();
    assert_null(tg_embedding(w, tg_indices(TG_DIMS(2), NULL), -1));
    assert_error_contains("tg_indices: values is NULL");
    assert_null(tg_gather(w, 0, tg_argmax(w, 9, true)));
    assert_error_contains("tg_argmax: axis 9");
    EXPECT_FAIL(tg_index_select(w, 0, NULL), TG_ERR_ARG, "tg_index_select: idx is NULL");
    EXPECT_FAIL(tg_one_hot(NULL, 3), TG_ERR_ARG, "tg_one_hot: idx is NULL");
    tg_clear_error();
    assert_null(tg_argmax(NULL, 0, false));
    assert_error_contains("tg_argmax: x is NULL");
    tg_tape_end(tape);

    /* No open tape: refused, and nothing is left behind. */
    tg_index *own = tg_index_new(TG_DIMS(2), (int64_t[]){1, 0});
    EXPECT_FAIL(tg_embedding(w, own, -1), TG_ERR_STATE, "no open tape");
    EXPECT_FAIL(tg_one_hot(own, 3), TG_ERR_STATE, "no open tape");
    EXPECT_FAIL(tg_argmax(w, 0, false), TG_ERR_STATE, "no open tape");
    tg_index_release(own);
    tg_tensor_release(w);
    tg_tensor_release(x3);
}

/* ---- sampling ------------------------------------------------------------------------------ */

#define DRAWS 20000

/* |count / n - p| within 5 standard deviations of a binomial(n, p) count (and exactly 0 for
 * p = 0): a correct sampler fails one run in millions, a biased one by far. */
static void assert_frequency(const char *what, int64_t count, int64_t n, double p)
{
    double sd = sqrt(p * (1 - p) / (double)n);
    double f = (double)count / (double)n;
    if (!(fabs(f - p) <= 5 * sd))
        fail_msg("%s: frequency %.4f over %lld draws, expected %.4f (5 sd = %.4f)", what, f,
                 (long long)n, p, 5 * sd);
}

static void test_multinomial_with_replacement(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 42);
    const float w[2][5] = {{1, 2, 0, 7, 0}, {0, 0, 3, 0, 1}};
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *p = tg_from_data(TG_DIMS(2, 5), &w[0][0]);
    tg_index *ix = tg_multinomial(p, DRAWS, true, &rng);
    assert_non_null(ix);
    assert_int_equal(ix->ndim, 2);
    assert_int_equal(ix->shape[0], 2);
    assert_int_equal(ix->shape[1], DRAWS);
    for (int r = 0; r < 2; r++) {
        int64_t count[5] = {0};
        for (int64_t j = 0; j < DRAWS; j++)
            count[ix->data[r * DRAWS + j]]++;
        double total = r == 0 ? 10 : 4;
        for (int k = 0; k < 5; k++) {
            if (w[r][k] == 0)
                assert_int_equal(count[k], 0);
            else
                assert_frequency("multinomial", count[k], DRAWS, w[r][k] / total);
        }
    }
    /* 1-D probs: a 1-D result; the same seed draws the same samples. */
    tg_rng a, b;
    tg_rng_seed(&a, 7);
    tg_rng_seed(&b, 7);
    tg_tensor *p1 = tg_from_data(TG_DIMS(3), (float[]){0.2f, 0.3f, 0.5f});
    tg_index *s1 = tg_multinomial(p1, 50, true, &a), *s2 = tg_multinomial(p1, 50, true, &b);
    assert_non_null(s1);
    assert_int_equal(s1->ndim, 1);
    assert_int_equal(s1->shape[0], 50);
    assert_memory_equal(s1->data, s2->data, 50 * sizeof(int64_t));
    tg_tape_end(tape);
}

/* Without replacement: distinct draws of positive weights only; the first draw follows the
 * weights, and each category's chance to be among two draws is the exact
 * p_i + sum_{j != i} p_j p_i / (1 - p_j) of drawing one after another. */
static void test_multinomial_without_replacement(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 43);
    const float w[5] = {1, 2, 0, 3, 4};
    const int rows = DRAWS;
    float *probs = malloc((size_t)rows * 5 * sizeof(float));
    for (int r = 0; r < rows; r++)
        memcpy(probs + r * 5, w, sizeof w);
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *p = tg_from_data(TG_DIMS(rows, 5), probs);
    free(probs);
    tg_index *ix = tg_multinomial(p, 2, false, &rng);
    assert_non_null(ix);
    int64_t first[5] = {0}, in_two[5] = {0};
    for (int r = 0; r < rows; r++) {
        int64_t a = ix->data[2 * r], b = ix->data[2 * r + 1];
        assert_true(a != b && a != 2 && b != 2);
        first[a]++;
        in_two[a]++;
        in_two[b]++;
    }
    for (int i = 0; i < 5; i++) {
        if (i == 2)
            continue;
        double pi = w[i] / 10.0, incl = pi;
        for (int j = 0; j < 5; j++)
            if (j != i)
                incl += w[j] / 10.0 * pi / (1 - w[j] / 10.0);
        assert_frequency("first draw", first[i], rows, pi);
        assert_frequency("among two draws", in_two[i], rows, incl);
    }
    /* All four positive weights: a permutation of them. */
    tg_tensor *p1 = tg_from_data(TG_DIMS(5), w);
    tg_index *all = tg_multinomial(p1, 4, false, &rng);
    assert_non_null(all);
    int seen = 0;
    for (int j = 0; j < 4; j++)
        seen |= 1 << all->data[j];
    assert_int_equal(seen, 1 | 2 | 8 | 16);
    tg_tape_end(tape);
}

static void test_multinomial_errors(void **state)
{
    (void)state;
    tg_rng rng, saved;
    tg_rng_seed(&rng, 44);
    saved = rng;
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *p = tg_from_data(TG_DIMS(2, 3), (float[]){1, 0, 2, 0, 0, 1});
    EXPECT_FAIL(tg_multinomial(p, 2, false, &rng), TG_ERR_ARG,
                "tg_multinomial: 2 samples without replacement from row 1 of probs [2, 3], which "
                "has 1 positive weights");
    EXPECT_FAIL(tg_multinomial(p, 0, true, &rng), TG_ERR_ARG, "num_samples is 0");
    EXPECT_FAIL(tg_multinomial(p, 1, true, NULL), TG_ERR_ARG, "rng is NULL");
    EXPECT_FAIL(tg_multinomial(tg_from_data(TG_DIMS(2), (float[]){1, -0.5f}), 1, true, &rng),
                TG_ERR_ARG, "weight -0.5 at row 0, column 1 of probs [2]");
    EXPECT_FAIL(tg_multinomial(tg_from_data(TG_DIMS(2), (float[]){NAN, 1}), 1, true, &rng),
                TG_ERR_ARG, "weight nan at row 0, column 0");
    EXPECT_FAIL(tg_multinomial(tg_from_data(TG_DIMS(2), (float[]){1, INFINITY}), 1, true, &rng),
                TG_ERR_ARG, "weight inf at row 0, column 1");
    EXPECT_FAIL(tg_multinomial(tg_from_data(TG_DIMS(2, 2), (float[]){1, 1, 0, 0}), 1, true, &rng),
                TG_ERR_ARG, "row 1 of probs [2, 2] has no positive weight");
    EXPECT_FAIL(tg_multinomial(tg_zeros(TG_DIMS(1, 1, 2)), 1, true, &rng), TG_ERR_SHAPE,
                "probs [1, 1, 2] must be [C] or [N, C]");
    EXPECT_FAIL(tg_multinomial(tg_zeros(TG_DIMS(0)), 1, true, &rng), TG_ERR_ARG,
                "no positive weight");
    EXPECT_FAIL(tg_multinomial(TG_NONE, 1, true, &rng), TG_ERR_ARG, "probs is TG_NONE");
    /* Refused calls draw nothing. */
    assert_memory_equal(&rng, &saved, sizeof rng);
    tg_tape_end(tape);
    tg_tensor *own = tg_tensor_ones(TG_DIMS(3));
    EXPECT_FAIL(tg_multinomial(own, 1, true, &rng), TG_ERR_STATE, "no open tape");
    assert_memory_equal(&rng, &saved, sizeof rng);
    tg_tensor_release(own);
}

/* One draw per row of softmax(logits / T): the frequencies of DRAWS identical rows, at two
 * temperatures; a -inf class is never drawn. */
static void test_categorical(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 45);
    const float logits[4] = {0.5f, -1.0f, 1.5f, -INFINITY};
    float *x = malloc((size_t)DRAWS * 4 * sizeof(float));
    for (int r = 0; r < DRAWS; r++)
        memcpy(x + r * 4, logits, sizeof logits);
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *t = tg_from_data(TG_DIMS(DRAWS / 100, 100, 4), x);
    free(x);
    const float temps[2] = {1.0f, 0.5f};
    for (int k = 0; k < 2; k++) {
        tg_index *ix = tg_categorical(t, temps[k], &rng);
        assert_non_null(ix);
        assert_int_equal(ix->ndim, 2);
        assert_int_equal(ix->shape[0], DRAWS / 100);
        assert_int_equal(ix->shape[1], 100);
        int64_t count[4] = {0};
        for (int64_t j = 0; j < DRAWS; j++)
            count[ix->data[j]]++;
        double e[3], total = 0;
        for (int c = 0; c < 3; c++)
            total += e[c] = exp(logits[c] / temps[k]);
        for (int c = 0; c < 3; c++)
            assert_frequency("categorical", count[c], DRAWS, e[c] / total);
        assert_int_equal(count[3], 0);
    }
    /* 1-D logits: a 0-d index. */
    tg_index *one = tg_categorical(tg_from_data(TG_DIMS(2), (float[]){-INFINITY, 3}), 1, &rng);
    assert_non_null(one);
    assert_int_equal(one->ndim, 0);
    assert_int_equal(one->data[0], 1);

    tg_rng saved = rng;
    tg_tensor *l = tg_from_data(TG_DIMS(2, 2), (float[]){0, 1, 2, NAN});
    EXPECT_FAIL(tg_categorical(l, 1, &rng), TG_ERR_ARG,
                "tg_categorical: logit nan at row 1, class 1");
    l = tg_from_data(TG_DIMS(2), (float[]){INFINITY, 1});
    EXPECT_FAIL(tg_categorical(l, 1, &rng), TG_ERR_ARG, "logit inf at row 0, class 0");
    l = tg_from_data(TG_DIMS(2), (float[]){-INFINITY, -INFINITY});
    EXPECT_FAIL(tg_categorical(l, 1, &rng), TG_ERR_ARG, "row 0 of logits [2] is all -inf");
    EXPECT_FAIL(tg_categorical(t, 0, &rng), TG_ERR_ARG, "temperature 0");
    EXPECT_FAIL(tg_categorical(t, -1, &rng), TG_ERR_ARG, "temperature -1");
    EXPECT_FAIL(tg_categorical(t, NAN, &rng), TG_ERR_ARG, "temperature nan");
    EXPECT_FAIL(tg_categorical(t, 1, NULL), TG_ERR_ARG, "rng is NULL");
    EXPECT_FAIL(tg_categorical(tg_scalar(1), 1, &rng), TG_ERR_SHAPE, "must have a class axis");
    EXPECT_FAIL(tg_categorical(tg_zeros(TG_DIMS(3, 0)), 1, &rng), TG_ERR_SHAPE, "have no classes");
    assert_memory_equal(&rng, &saved, sizeof rng);
    tg_tape_end(tape);
}

int main(void)
{
    tg_set_num_threads(2);
    const struct CMUnitTest tests[] = {
        TG_TEST(test_embedding_golden),
        TG_TEST(test_gather_golden),
        TG_TEST(test_index_select_golden),
        TG_TEST(test_result_shapes),
        TG_TEST(test_empty_no_work),
        TG_TEST(test_index_changed_after_forward),
        TG_TEST(test_scatter_add_deterministic),
        TG_TEST(test_argmax_argmin_golden),
        TG_TEST(test_max_axis_indices_golden),
        TG_TEST(test_one_hot_golden),
        TG_TEST(test_index_errors),
        TG_TEST(test_multinomial_with_replacement),
        TG_TEST(test_multinomial_without_replacement),
        TG_TEST(test_multinomial_errors),
        TG_TEST(test_categorical),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
