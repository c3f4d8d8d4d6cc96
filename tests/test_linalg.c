/* matmul and linear: PyTorch goldens (torch.matmul's 1-D, 2-D and broadcast batched forms,
 * F.linear on a 3-D input), a double-precision reference on the shapes that take each path of
 * the batched GEMM (folded, looped in parallel, looped with threaded GEMMs, broadcast
 * gradients), empty sizes, and the error messages (shapes, a NULL bias against TG_NONE). */
#include "common.h"
#include "../tensor/internal.h"

#include "golden/linalg_golden.h"

#include <stdio.h>
#include <stdlib.h>

/* ---- PyTorch goldens ---------------------------------------------------------------------- */

/* One matmul case of linalg_golden.h. */
typedef struct {
    const char *name;
    int a_ndim, b_ndim, y_ndim;
    const int64_t *a_shape, *b_shape, *y_shape;
    const float *a, *b, *dy, *y, *da, *db;
} mm_golden;

#define MM_GOLDEN(p, P)                                                                            \
    {                                                                                              \
#p, P##_A_NDIM, P##_B_NDIM, P##_Y_NDIM, p##_a_shape, p##_b_shape, p##_y_shape, p##_a,      \
            p##_b, p##_dy, p##_y, p##_da, p##_db                                                   \
    }

static const mm_golden mm_goldens[] = {
    MM_GOLDEN(mm_batched, MM_BATCHED),
    MM_GOLDEN(mm_batch_2d, MM_BATCH_2D),
    MM_GOLDEN(mm_bcast, MM_BCAST),
    MM_GOLDEN(mm_bcast_a, MM_BCAST_A),
    MM_GOLDEN(mm_2d_batch, MM_2D_BATCH),
    MM_GOLDEN(mm_fold, MM_FOLD),
    MM_GOLDEN(mm_dot, MM_DOT),
    MM_GOLDEN(mm_vec_batch, MM_VEC_BATCH),
    MM_GOLDEN(mm_batch_vec, MM_BATCH_VEC),
};

/* t's shape as "[2, 3]" (messages). */
#define SHAPE_STR(t, buf) tg_shape_str((t)->ndim, (t)->shape, (buf), sizeof(buf))

static void assert_shape(const char *what, const tg_tensor *t, int ndim, const int64_t *shape)
{
    char got[160], want[160];
    if (t->ndim != ndim || memcmp(t->shape, shape, (size_t)ndim * sizeof(int64_t)) != 0)
        fail_msg("%s: shape %s, PyTorch gives %s", what, SHAPE_STR(t, got),
                 tg_shape_str(ndim, shape, want, sizeof want));
}

static void run_mm_golden(const mm_golden *g)
{
    tg_tensor *a = test_tensor_of(g->a_ndim, g->a_shape, g->a, true);
    tg_tensor *b = test_tensor_of(g->b_ndim, g->b_shape, g->b, true);
    tg_tensor *dy = test_tensor_of(g->y_ndim, g->y_shape, g->dy, false);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_matmul(a, b);
    if (!y)
        fail_msg("%s: %s", g->name, tg_last_error());
    char what[64];
    snprintf(what, sizeof what, "%s y", g->name);
    assert_shape(what, y, g->y_ndim, g->y_shape);
    assert_golden(what, y->data, g->y, y->numel);
    assert_int_equal(tg_backward_grad(y, dy), TG_OK);
    snprintf(what, sizeof what, "%s da", g->name);
    assert_golden(what, a->grad->data, g->da, a->numel);
    snprintf(what, sizeof what, "%s db", g->name);
    assert_golden(what, b->grad->data, g->db, b->numel);
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_tensor_release(a);
    tg_tensor_release(b);
    tg_tensor_release(dy);
}

static void test_matmul_golden(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof mm_goldens / sizeof mm_goldens[0]; i++)
        run_mm_golden(&mm_goldens[i]);
}

/* The same at 1 thread and at 2: the batched paths pick their threading by size. */
static void test_matmul_golden_threads(void **state)
{
    (void)state;
    int threads = tg_get_num_threads();
    for (int t = 1; t <= 2 && t <= tg_get_num_cpus(); t++) {
        assert_int_equal(tg_set_num_threads(t), TG_OK);
        for (size_t i = 0; i < sizeof mm_goldens / sizeof mm_goldens[0]; i++)
            run_mm_golden(&mm_goldens[i]);
    }
    assert_int_equal(tg_set_num_threads(threads), TG_OK);
}

static void test_linear_golden_3d(void **state)
{
    (void)state;
    tg_tensor *x = test_tensor_of(LIN_X_NDIM, lin_x_shape, lin_x, true);
    tg_tensor *w = test_tensor_of(LIN_W_NDIM, lin_w_shape, lin_w, true);
    tg_tensor *b = test_tensor_of(1, lin_w_shape, lin_b, true); /* [out] */
    tg_tensor *dy = test_tensor_of(LIN_Y_NDIM, lin_y_shape, lin_dy, false);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_linear(x, w, b);
    if (!y)
        fail_msg("%s", tg_last_error());
    assert_shape("linear y", y, LIN_Y_NDIM, lin_y_shape);
    assert_golden("linear y", y->data, lin_y, y->numel);
    assert_int_equal(tg_backward_grad(y, dy), TG_OK);
    assert_golden("linear dx", x->grad->data, lin_dx, x->numel);
    assert_golden("linear dw", w->grad->data, lin_dw, w->numel);
    assert_golden("linear db", b->grad->data, lin_db, b->numel);
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_tensor_release(x);
    tg_tensor_release(w);
    tg_tensor_release(b);
    tg_tensor_release(dy);
}

/* ---- a double-precision reference on larger shapes ----------------------------------------- */

/* y, da and db of torch.matmul for a [..., M, K] @ b [..., K, N] (both at least 2-D here), in
 * double, by the definition: every output matrix from the batch index of each operand. */
static void reference(const tg_tensor *a, const tg_tensor *b, const float *dy, double *y,
                      double *da, double *db)
{
    int na = a->ndim, nb = b->ndim, nbat = (na > nb ? na : nb) - 2;
    int64_t M = a->shape[na - 2], K = a->shape[na - 1], N = b->shape[nb - 1];
    int64_t as[TG_MAX_DIMS], bs[TG_MAX_DIMS], os[TG_MAX_DIMS], count = 1;
    for (int d = 0; d < nbat; d++) {
        as[d] = d - (nbat - (na - 2)) >= 0 ? a->shape[d - (nbat - (na - 2))] : 1;
        bs[d] = d - (nbat - (nb - 2)) >= 0 ? b->shape[d - (nbat - (nb - 2))] : 1;
        os[d] = as[d] > bs[d] ? as[d] : bs[d];
        count *= os[d];
    }
    memset(da, 0, sizeof(double) * (size_t)a->numel);
    memset(db, 0, sizeof(double) * (size_t)b->numel);
    for (int64_t i = 0; i < count; i++) {
        int64_t ai = 0, bi = 0, rest = i, ast = 1, bst = 1;
        for (int d = nbat - 1; d >= 0; d--) {
            int64_t k = rest % os[d];
            rest /= os[d];
            ai += (as[d] == 1 ? 0 : k) * ast;
            bi += (bs[d] == 1 ? 0 : k) * bst;
            ast *= as[d];
            bst *= bs[d];
        }
        const float *A = a->data + ai * M * K, *B = b->data + bi * K * N, *DY = dy + i * M * N;
        double *Y = y + i * M * N, *DA = da + ai * M * K, *DB = db + bi * K * N;
        for (int64_t r = 0; r < M; r++)
            for (int64_t c = 0; c < N; c++) {
                double s = 0;
                for (int64_t k = 0; k < K; k++) {
                    s += (double)A[r * K + k] * B[k * N + c];
                    DA[r * K + k] += (double)DY[r * N + c] * B[k * N + c];
                    DB[k * N + c] += (double)A[r * K + k] * DY[r * N + c];
                }
                Y[r * N + c] = s;
            }
    }
}

static void assert_near(const char *what, const float *got, const double *want, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!(fabs(got[i] - want[i]) <= 1e-4 + 1e-4 * fabs(want[i])))
            fail_msg("%s[%lld] = %.9g, the reference gives %.9g", what, (long long)i,
                     (double)got[i], want[i]);
}

static tg_tensor *random_leaf(int ndim, const int64_t *shape, tg_rng *rng)
{
    tg_tensor *t = tg_tensor_new(ndim, shape);
    assert_non_null(t);
    assert_int_equal(tg_tensor_uniform_(t, rng, -1, 1), TG_OK);
    assert_int_equal(tg_tensor_set_requires_grad(t, true), TG_OK);
    return t;
}

static void check_against_reference(int na, const int64_t *ashape, int nb, const int64_t *bshape)
{
    tg_rng rng;
    tg_rng_seed(&rng, 7);
    tg_tensor *a = random_leaf(na, ashape, &rng), *b = random_leaf(nb, bshape, &rng);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_matmul(a, b);
    if (!y)
        fail_msg("%s", tg_last_error());
    tg_tensor *dy = tg_tensor_new(y->ndim, y->shape);
    assert_non_null(dy);
    assert_int_equal(tg_tensor_uniform_(dy, &rng, -1, 1), TG_OK);
    assert_int_equal(tg_backward_grad(y, dy), TG_OK);
    double *ry = malloc(sizeof(double) * (size_t)y->numel);
    double *rda = malloc(sizeof(double) * (size_t)a->numel);
    double *rdb = malloc(sizeof(double) * (size_t)b->numel);
    assert_true(ry && rda && rdb);
    reference(a, b, dy->data, ry, rda, rdb);
    char sa[64], sb[64], what[160];
    snprintf(what, sizeof what, "%s @ %s: y", SHAPE_STR(a, sa), SHAPE_STR(b, sb));
    assert_near(what, y->data, ry, y->numel);
    snprintf(what, sizeof what, "%s @ %s: da", sa, sb);
    assert_near(what, a->grad->data, rda, a->numel);
    snprintf(what, sizeof what, "%s @ %s: db", sa, sb);
    assert_near(what, b->grad->data, rdb, b->numel);
    free(ry);
    free(rda);
    free(rdb);
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_tensor_release(dy);
    tg_tensor_release(a);
    tg_tensor_release(b);
}

/* Each way the batched product runs, at 1 and 2 threads. */
static void test_matmul_paths_against_reference(void **state)
{
    (void)state;
    int threads = tg_get_num_threads();
    for (int t = 1; t <= 2 && t <= tg_get_num_cpus(); t++) {
        assert_int_equal(tg_set_num_threads(t), TG_OK);
        /* Small matrices, many of them: the groups in parallel. */
        check_against_reference(TG_DIMS(24, 16, 20), TG_DIMS(24, 20, 12));
        /* b shared: folded into one GEMM of 8 * 33 rows, db one GEMM over them. */
        check_against_reference(TG_DIMS(8, 33, 40), TG_DIMS(40, 36));
        check_against_reference(TG_DIMS(300, 17, 20), TG_DIMS(1, 20, 9));
        /* a shared: its gradient sums over the batch (one writer at a time). */
        check_against_reference(TG_DIMS(1, 17, 20), TG_DIMS(300, 20, 9));
        check_against_reference(TG_DIMS(17, 20), TG_DIMS(300, 20, 9));
        /* Both broadcast, and b shared over an inner axis only (groups of folded GEMMs). */
        check_against_reference(TG_DIMS(3, 1, 7, 9), TG_DIMS(4, 9, 5));
        check_against_reference(TG_DIMS(3, 4, 7, 9), TG_DIMS(3, 1, 9, 5));
        /* Large matrices: a loop of GEMMs that thread inside. */
        check_against_reference(TG_DIMS(3, 100, 128), TG_DIMS(3, 128, 96));
    }
    assert_int_equal(tg_set_num_threads(threads), TG_OK);
}

/* ---- thin products (tensor/gemm.c: M == 1 or N == 1 as matrix-vector products) ---------- */

/* tg_sgemm_avx512 on one thin shape against a double reference: every transpose, the vector
 * strided (copied first) or not, C wider than the product (ldc) with the columns outside left
 * alone, beta 0 over NaN (never read) and beta 0.5 over C, alpha -2. */
static void check_thin(bool ta, bool tb, int64_t M, int64_t N, int64_t K, int64_t pad)
{
    const int64_t rows_a = ta ? K : M, cols_a = ta ? M : K, rows_b = tb ? N : K,
                  cols_b = tb ? K : N;
    const int64_t lda = cols_a + pad, ldb = cols_b + pad, ldc = N + pad;
    float *A = malloc(sizeof(float) * (size_t)(rows_a * lda));
    float *B = malloc(sizeof(float) * (size_t)(rows_b * ldb));
    float *C = malloc(sizeof(float) * (size_t)(M * ldc));
    assert_true(A && B && C);
    for (int64_t i = 0; i < rows_a * lda; i++)
        A[i] = (float)((i * 37 % 101) - 50) / 50.0f;
    for (int64_t i = 0; i < rows_b * ldb; i++)
        B[i] = (float)((i * 53 % 97) - 48) / 48.0f;
    for (int beta_case = 0; beta_case < 2; beta_case++) {
        const float beta = beta_case ? 0.5f : 0.0f;
        for (int64_t i = 0; i < M * ldc; i++)
            C[i] = beta_case ? (float)(i % 7) : NAN;
        tg_sgemm_avx512(ta, tb, M, N, K, -2.0f, A, lda, B, ldb, beta, C, ldc);
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < ldc; j++) {
                const float got = C[i * ldc + j];
                if (j >= N) { /* outside the product: untouched */
                    assert_true(beta_case ? got == (float)((i * ldc + j) % 7) : isnan(got));
                    continue;
                }
                double want = 0.0, mag = 0.0;
                for (int64_t k = 0; k < K; k++) {
                    const double a = A[ta ? k * lda + i : i * lda + k];
                    const double b = B[tb ? j * ldb + k : k * ldb + j];
                    want += a * b, mag += fabs(a * b);
                }
                want = -2.0 * want + (beta_case ? 0.5 * (double)((i * ldc + j) % 7) : 0.0);
                if (fabs((double)got - want) > 1e-5 * (2.0 * mag + 4.0)) {
                    fprintf(stderr,
                            "thin %c%c M %lld N %lld K %lld pad %lld beta %g: C[%lld, %lld] = "
                            "%.8g, want %.8g\n",
                            ta ? 'T' : 'N', tb ? 'T' : 'N', (long long)M, (long long)N,
                            (long long)K, (long long)pad, (double)beta, (long long)i, (long long)j,
                            (double)got, want);
                    fail();
                }
            }
    }
    free(A), free(B), free(C);
}

/* One row or one column, short and long depths (lane tails included), at the AVX-512 level
 * where the CPU has it (the thin path) and at the baseline (OpenBLAS) for comparison. */
static void test_gemm_thin(void **state)
{
    (void)state;
    const int saved = tg_isa_level;
    const int64_t shapes[][3] = {{128, 1, 1024}, {1, 1024, 128}, {1, 1, 1},   {37, 1, 45},
                                 {1, 45, 37},    {1, 17, 1},     {300, 1, 3}, {1, 5, 300}};
    for (int isa = TG_ISA_BASELINE; isa <= saved; isa++) {
        tg_isa_level = isa;
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (int t = 0; t < 4; t++)
                for (int64_t pad = 0; pad <= 3; pad += 3)
                    check_thin(t & 1, t & 2, shapes[s][0], shapes[s][1], shapes[s][2], pad);
    }
    tg_isa_level = saved;
}

/* Empty sizes: a zero batch, M or N gives an empty y; K = 0 a zero y and empty gradients. */
static void test_matmul_empty(void **state)
{
    (void)state;
    tg_tensor *a = tg_tensor_ones(TG_DIMS(2, 3, 0)), *b = tg_tensor_ones(TG_DIMS(0, 4));
    tg_tensor *c = tg_tensor_ones(TG_DIMS(0, 3, 5)), *d = tg_tensor_ones(TG_DIMS(5, 2));
    assert_int_equal(tg_tensor_set_requires_grad(a, true), TG_OK);
    assert_int_equal(tg_tensor_set_requires_grad(b, true), TG_OK);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_matmul(a, b);
    assert_non_null(y);
    assert_shape("[2, 3, 0] @ [0, 4]", y, TG_DIMS(2, 3, 4));
    for (int64_t i = 0; i < y->numel; i++)
        assert_true(y->data[i] == 0.0f);
    assert_int_equal(tg_backward(tg_sum(y)), TG_OK);
    tg_tensor *e = tg_matmul(c, d);
    assert_non_null(e);
    assert_shape("[0, 3, 5] @ [5, 2]", e, TG_DIMS(0, 3, 2));
    /* An empty batch against a broadcast a: a's gradient is zero, though no GEMM writes it
     * (a buffer of its size full of NaN is left in the allocator's cache to show that). */
    tg_tensor *p = tg_tensor_ones(TG_DIMS(1, 4, 6)), *q = tg_tensor_ones(TG_DIMS(0, 6, 5));
    assert_int_equal(tg_tensor_set_requires_grad(p, true), TG_OK);
    tg_tensor_release(tg_tensor_full(TG_DIMS(1, 4, 6), NAN));
    tg_tensor *pq = tg_matmul(p, q);
    assert_non_null(pq);
    assert_shape("[1, 4, 6] @ [0, 6, 5]", pq, TG_DIMS(0, 4, 5));
    assert_int_equal(tg_backward(tg_sum(pq)), TG_OK);
    for (int64_t i = 0; i < p->numel; i++)
        assert_true(p->grad->data[i] == 0.0f);
    tg_tensor_release(p);
    tg_tensor_release(q);
    /* An empty result of 2^40 empty matrices: done at once, not matrix by matrix. */
    tg_tensor *e1 = tg_tensor_ones(TG_DIMS((int64_t)1 << 20, 1, 0, 6));
    tg_tensor *e2 = tg_tensor_ones(TG_DIMS(1, (int64_t)1 << 20, 6, 0));
    tg_tensor *e12 = tg_matmul(e1, e2);
    assert_non_null(e12);
    assert_shape("[2^20, 1, 0, 6] @ [1, 2^20, 6, 0]", e12,
                 TG_DIMS((int64_t)1 << 20, (int64_t)1 << 20, 0, 0));
    tg_tensor_release(e1);
    tg_tensor_release(e2);
    /* linear with in = 0: the bias alone. */
    tg_tensor *w = tg_tensor_ones(TG_DIMS(4, 0)), *bias = tg_tensor_full(TG_DIMS(4), 2.5f);
    tg_tensor *l = tg_linear(a, w, bias);
    assert_non_null(l);
    assert_shape("linear [2, 3, 0] with w [4, 0]", l, TG_DIMS(2, 3, 4));
    for (int64_t i = 0; i < l->numel; i++)
        assert_true(l->data[i] == 2.5f);
    /* An empty y of 2^40 rows (in 0, out 0), with a bias: no work, forward or backward (the
     * bias and its gradient were looped over row by row). */
    tg_tensor *xh = tg_tensor_zeros(TG_DIMS((int64_t)1 << 40, 0));
    tg_tensor *w0 = tg_tensor_zeros(TG_DIMS(0, 0)), *b0 = tg_tensor_zeros(TG_DIMS(0));
    assert_int_equal(tg_tensor_set_requires_grad(xh, true), TG_OK);
    assert_int_equal(tg_tensor_set_requires_grad(b0, true), TG_OK);
    tg_tensor *lh = tg_linear(xh, w0, b0);
    assert_non_null(lh);
    assert_shape("linear [2^40, 0] with w [0, 0]", lh, TG_DIMS((int64_t)1 << 40, 0));
    assert_int_equal(tg_backward(tg_sum(lh)), TG_OK);
    tg_tensor_release(xh);
    tg_tensor_release(w0);
    tg_tensor_release(b0);
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_tensor_release(a);
    tg_tensor_release(b);
    tg_tensor_release(c);
    tg_tensor_release(d);
    tg_tensor_release(w);
    tg_tensor_release(bias);
}

/* ---- errors -------------------------------------------------------------------------------- */

static void expect_matmul_error(int na, const int64_t *as, int nb, const int64_t *bs,
                                const char *message)
{
    tg_tensor *a = tg_tensor_ones(na, as), *b = tg_tensor_ones(nb, bs);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_clear_error();
    assert_null(tg_matmul(a, b));
    assert_int_equal(tg_last_status(), TG_ERR_SHAPE);
    assert_error_contains(message);
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_tensor_release(a);
    tg_tensor_release(b);
}

static void test_matmul_shape_errors(void **state)
{
    (void)state;
    expect_matmul_error(TG_DIMS(2, 3), TG_DIMS(4, 5),
                        "tg_matmul: a [2, 3] @ b [4, 5]: inner sizes 3 and 4 differ");
    expect_matmul_error(TG_DIMS(3, 4, 6), TG_DIMS(3, 5, 5),
                        "tg_matmul: a [3, 4, 6] @ b [3, 5, 5]: inner sizes 6 and 5 differ");
    expect_matmul_error(TG_DIMS(6), TG_DIMS(5),
                        "tg_matmul: a [6] @ b [5]: inner sizes 6 and 5 differ");
    expect_matmul_error(TG_DIMS(2, 4, 6), TG_DIMS(3, 6, 5),
                        "tg_matmul: a [2, 4, 6] @ b [3, 6, 5]: batch sizes 2 and 3 do not "
                        "broadcast (batch axis 0 of 1)");
    expect_matmul_error(TG_DIMS(2, 2, 4, 6), TG_DIMS(3, 6, 5),
                        "batch sizes 2 and 3 do not broadcast (batch axis 1 of 2)");
    /* Empty operands whose broadcast batch would overflow a size. */
    expect_matmul_error(TG_DIMS((int64_t)1 << 31, 1, 1, 0), TG_DIMS(1, (int64_t)1 << 31, 0, 1),
                        "tg_matmul: a [2147483648, 1, 1, 0] @ b [1, 2147483648, 0, 1]: the result "
                        "[2147483648, 2147483648, 1, 1] is too large");
    expect_matmul_error(0, NULL, TG_DIMS(3),
                        "tg_matmul: a [] @ b [3]: both must have at least 1 dimension");
}

/* A NULL bias is a failed call's result, never "no bias": linear refuses it and keeps that
 * call's error (issue 14: the old code computed without bias and the backward succeeded). */
static void test_linear_null_bias_keeps_error(void **state)
{
    (void)state;
    tg_tensor *x = tg_tensor_ones(TG_DIMS(2, 5)), *w = tg_tensor_ones(TG_DIMS(4, 5));
    tg_tensor *b = tg_tensor_ones(TG_DIMS(4));
    assert_int_equal(tg_tensor_set_requires_grad(w, true), TG_OK);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_linear(x, w, tg_reshape(b, TG_DIMS(7)));
    assert_null(y);
    assert_int_equal(tg_last_status(), TG_ERR_SHAPE);
    assert_error_contains("tg_reshape");
    assert_int_not_equal(tg_backward(tg_sum(y)), TG_OK);
    assert_error_contains("tg_reshape");

    /* Without a pending error, the NULL itself is named. */
    tg_clear_error();
    assert_null(tg_linear(x, w, NULL));
    assert_int_equal(tg_last_status(), TG_ERR_ARG);
    assert_error_contains("tg_linear: b is NULL (pass TG_NONE for no bias)");

    /* TG_NONE: no bias. */
    tg_clear_error();
    y = tg_linear(x, w, TG_NONE);
    assert_non_null(y);
    assert_shape("linear without bias", y, TG_DIMS(2, 4));
    for (int64_t i = 0; i < y->numel; i++)
        assert_true(y->data[i] == 5.0f);
    assert_int_equal(tg_backward(tg_sum(y)), TG_OK);
    assert_true(w->grad->data[0] == 2.0f);

    /* TG_NONE where a tensor is required. */
    assert_null(tg_linear(x, TG_NONE, b));
    assert_error_contains("tg_linear: input 1 is TG_NONE");
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_tensor_release(x);
    tg_tensor_release(w);
    tg_tensor_release(b);
}

static void expect_linear_error(int nx, const int64_t *xs, int nw, const int64_t *ws, int nb,
                                const int64_t *bs, const char *message)
{
    tg_tensor *x = tg_tensor_ones(nx, xs), *w = tg_tensor_ones(nw, ws);
    tg_tensor *b = nb >= 0 ? tg_tensor_ones(nb, bs) : TG_NONE;
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_clear_error();
    assert_null(tg_linear(x, w, b));
    assert_int_equal(tg_last_status(), TG_ERR_SHAPE);
    assert_error_contains(message);
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_tensor_release(x);
    tg_tensor_release(w);
    tg_tensor_release(b);
}

static void test_linear_shape_errors(void **state)
{
    (void)state;
    expect_linear_error(TG_DIMS(2, 3, 5), TG_DIMS(4, 6), -1, NULL,
                        "tg_linear: x [2, 3, 5], w [4, 6]: need x [..., in] and w [out, in] "
                        "with the same in");
    expect_linear_error(0, NULL, TG_DIMS(4, 1), -1, NULL, "tg_linear: x [], w [4, 1]");
    expect_linear_error(TG_DIMS(5), TG_DIMS(2, 3, 5), -1, NULL, "tg_linear: x [5], w [2, 3, 5]");
    expect_linear_error(TG_DIMS(2, 5), TG_DIMS(4, 5), TG_DIMS(3),
                        "tg_linear: w [4, 5], b [3]: b must be [4]");
    expect_linear_error(TG_DIMS(2, 5), TG_DIMS(4, 5), TG_DIMS(1, 4),
                        "tg_linear: w [4, 5], b [1, 4]: b must be [4]");
}

/* linear on x [..., in] is linear on the rows of x: a 1-D x gives [out], a 4-D x [..., out]. */
static void test_linear_nd_matches_rows(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 3);
    tg_tensor *x = random_leaf(TG_DIMS(2, 3, 2, 6), &rng), *w = random_leaf(TG_DIMS(5, 6), &rng);
    tg_tensor *b = random_leaf(TG_DIMS(5), &rng);
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *y = tg_linear(x, w, b);
    tg_tensor *rows = tg_linear(tg_reshape(x, TG_DIMS(12, 6)), w, b);
    assert_non_null(y);
    assert_non_null(rows);
    assert_shape("linear [2, 3, 2, 6]", y, TG_DIMS(2, 3, 2, 5));
    assert_memory_equal(y->data, rows->data, sizeof(float) * 60);
    /* The first row alone, as a 1-D x. */
    tg_tensor *x0 = tg_reshape(tg_slice(tg_reshape(x, TG_DIMS(12, 6)), 0, 0, 1, 1), TG_DIMS(6));
    tg_tensor *one = tg_linear(x0, w, b);
    assert_non_null(one);
    assert_shape("linear [6]", one, TG_DIMS(5));
    for (int i = 0; i < 5; i++)
        assert_close(one->data[i], rows->data[i], 1e-6 + 1e-6 * fabs(rows->data[i]));
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_tensor_release(x);
    tg_tensor_release(w);
    tg_tensor_release(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TG_TEST(test_matmul_golden),       TG_TEST(test_matmul_golden_threads),
        TG_TEST(test_linear_golden_3d),    TG_TEST(test_matmul_paths_against_reference),
        TG_TEST(test_gemm_thin),           TG_TEST(test_matmul_empty),
        TG_TEST(test_matmul_shape_errors), TG_TEST(test_linear_null_bias_keeps_error),
        TG_TEST(test_linear_shape_errors), TG_TEST(test_linear_nd_matches_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
