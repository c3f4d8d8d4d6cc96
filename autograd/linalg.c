/* Linear algebra ops: matmul and the fused linear layer, both on sgemm (tg_sgemm_avx512: our
 * AVX-512 kernels where the CPU has them, else OpenBLAS). */
#include "internal.h"
#include "ops.h"

#include "../tensor/parallel.h"

#include <string.h>

/* tg_sgemm_avx512 with alpha 1 for any sizes, empty ones included: with K = 0 the product is
 * zero (OpenBLAS would reject the leading dimension 0 such an operand has). */
static void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float *A,
                 int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
    if (M == 0 || N == 0)
        return;
    if (K == 0) {
        if (beta == 0.0f)
            for (int64_t i = 0; i < M; i++)
                memset(C + i * ldc, 0, (size_t)N * sizeof(float));
        return;
    }
    tg_sgemm_avx512(trans_a, trans_b, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

/* ---- matmul -------------------------------------------------------------------------------
 * torch.matmul: a [..., M, K] @ b [..., K, N] -> [batch..., M, N], batch = the leading shapes
 * broadcast; a 1-D a is a row [1, K] and a 1-D b a column [K, 1], that axis dropped from y.
 * For each output matrix i, reading a's matrix ai and b's matrix bi:
 *   y_i = a_ai @ b_bi;   da_ai += dy_i @ b_bi^T;   db_bi += a_ai^T @ dy_i   (sgemm)
 * so an operand broadcast over the batch gets the sum over the matrices that shared it. A fresh
 * gradient is assigned (beta = 0) when each of its matrices has one writer, else zeroed first.
 * The work is a list of GEMMs, the plan below. The trailing batch axes over which b is shared
 * are folded into the rows of one GEMM (a is contiguous there: [B, T, D] @ [D, E] is one
 * [B*T, D] @ [D, E] product, its db one GEMM summing over B*T); the other batch axes are
 * looped, one GEMM per "group". Small GEMMs run on one thread in tg_sgemm_avx512, so a loop of
 * them runs its groups in parallel instead (one level of threads, never both). */

/* tensor/gemm.c: below this many multiply-adds tg_sgemm_avx512 runs on the calling thread. */
#define MM_GEMM_SERIAL_WORK 1e6

typedef struct {
    int64_t M, K, N; /* one GEMM's sizes; M includes the folded batch rows */
    int64_t groups;  /* number of GEMMs */
    int n_outer;     /* the looped batch axes; the ones after them are folded into M */
    int64_t out[TG_MAX_DIMS], as[TG_MAX_DIMS], bs[TG_MAX_DIMS]; /* their sizes: y, a, b */
    bool a_shared, b_shared; /* several groups read the same matrix of a (of b) */
} mm_plan;

/* Validates a @ b and makes its plan and, when shape is not NULL, y's shape. */
static tg_status mm_plan_make(const tg_tensor *a, const tg_tensor *b, mm_plan *p, int *ndim,
                              int64_t shape[])
{
    char sa[160], sb[160];
    const int na = a->ndim, nb = b->ndim;
    if (na < 1 || nb < 1)
        return tg_set_error(TG_ERR_SHAPE,
                            "tg_matmul: a %s @ b %s: both must have at least 1 dimension",
                            TG_SHAPE_STR(a, sa), TG_SHAPE_STR(b, sb));
    const int64_t M = na >= 2 ? a->shape[na - 2] : 1, K = a->shape[na - 1];
    const int64_t Kb = nb >= 2 ? b->shape[nb - 2] : b->shape[0];
    const int64_t N = nb >= 2 ? b->shape[nb - 1] : 1;
    if (K != Kb)
        return tg_set_error(TG_ERR_SHAPE,
                            "tg_matmul: a %s @ b %s: inner sizes %lld and %lld differ",
                            TG_SHAPE_STR(a, sa), TG_SHAPE_STR(b, sb), (long long)K, (long long)Kb);
    /* Batch axes, right-aligned as in NumPy; an operand without an axis has size 1 there. */
    const int abat = na > 2 ? na - 2 : 0, bbat = nb > 2 ? nb - 2 : 0;
    const int nbat = abat > bbat ? abat : bbat;
    int64_t out[TG_MAX_DIMS], as[TG_MAX_DIMS], bs[TG_MAX_DIMS];
    for (int d = 0; d < nbat; d++) {
        as[d] = d >= nbat - abat ? a->shape[d - (nbat - abat)] : 1;
        bs[d] = d >= nbat - bbat ? b->shape[d - (nbat - bbat)] : 1;
        if (as[d] != bs[d] && as[d] != 1 && bs[d] != 1)
            return tg_set_error(TG_ERR_SHAPE,
                                "tg_matmul: a %s @ b %s: batch sizes %lld and %lld do not "
                                "broadcast (batch axis %d of %d)",
                                TG_SHAPE_STR(a, sa), TG_SHAPE_STR(b, sb), (long long)as[d],
                                (long long)bs[d], d, nbat);
        out[d] = as[d] == 1 ? bs[d] : as[d];
    }
    int64_t ys[TG_MAX_DIMS];
    int k = 0;
    for (int d = 0; d < nbat; d++)
        ys[k++] = out[d];
    if (na >= 2)
        ys[k++] = M;
    if (nb >= 2)
        ys[k++] = N;
    /* Broadcasting can multiply sizes: bound them before any product below is taken. */
    if (tg_shape_numel(k, ys) < 0) {
        char sy[160];
        return tg_set_error(TG_ERR_SHAPE, "tg_matmul: a %s @ b %s: the result %s is too large",
                            TG_SHAPE_STR(a, sa), TG_SHAPE_STR(b, sb),
                            tg_shape_str(k, ys, sy, sizeof sy));
    }
    if (shape) {
        memcpy(shape, ys, (size_t)k * sizeof(int64_t));
        *ndim = k;
    }
    /* Fold the trailing axes where b has size 1: there y's matrices follow a's in memory. */
    int f = nbat;
    int64_t rows = M;
    while (f > 0 && bs[f - 1] == 1)
        rows *= out[--f];
    *p = (mm_plan){.M = rows, .K = K, .N = N, .groups = 1, .n_outer = f};
    for (int d = 0; d < f; d++) {
        p->out[d] = out[d];
        p->as[d] = as[d];
        p->bs[d] = bs[d];
        p->groups *= out[d];
        p->a_shared |= as[d] == 1 && out[d] > 1;
        p->b_shared |= bs[d] == 1 && out[d] > 1;
    }
    if (p->M == 0 || p->N == 0)
        p->groups = 0; /* y is empty: no GEMM, however many groups of nothing */
    return TG_OK;
}

static tg_status matmul_check(tg_node *n, int *ndim, int64_t shape[])
{
    mm_plan p;
    return mm_plan_make(n->in[0], n->in[1], &p, ndim, shape);
}

/* The offsets of group g's matrices in a and b (y's is g * M * N). */
static void mm_offsets(const mm_plan *p, int64_t g, int64_t *ao, int64_t *bo)
{
    int64_t ai = 0, bi = 0, astride = 1, bstride = 1;
    for (int d = p->n_outer - 1; d >= 0; d--) {
        int64_t i = g % p->out[d];
        g /= p->out[d];
        ai += (p->as[d] == 1 ? 0 : i) * astride;
        bi += (p->bs[d] == 1 ? 0 : i) * bstride;
        astride *= p->as[d];
        bstride *= p->bs[d];
    }
    *ao = ai * p->M * p->K;
    *bo = bi * p->K * p->N;
}

typedef enum { MM_Y, MM_DA, MM_DB } mm_product;

/* Group g's GEMM of the given product; beta 0 assigns a gradient, 1 adds to it. */
static void mm_gemm(const tg_node *n, const mm_plan *p, mm_product what, float beta, int64_t g)
{
    const tg_tensor *a = n->in[0], *b = n->in[1];
    const int64_t M = p->M, K = p->K, N = p->N;
    int64_t ao, bo, yo = g * M * N;
    mm_offsets(p, g, &ao, &bo);
    switch (what) {
    case MM_Y:
        gemm(false, false, M, N, K, a->data + ao, K, b->data + bo, N, 0.0f, n->out->data + yo, N);
        break;
    case MM_DA:
        gemm(false, true, M, K, N, n->out->grad->data + yo, N, b->data + bo, N, beta,
             tg_grad_of(n, 0) + ao, K);
        break;
    case MM_DB:
        gemm(true, false, K, N, M, a->data + ao, K, n->out->grad->data + yo, N, beta,
             tg_grad_of(n, 1) + bo, N);
        break;
    }
}

/* Every group's GEMM; in parallel over the groups when each GEMM is too small to be threaded
 * inside and no two groups write the same matrix (shared: the target is broadcast). */
static void mm_run(const tg_node *n, const mm_plan *p, mm_product what, float beta, bool shared)
{
    const double work = (double)p->M * (double)p->N * (double)p->K;
    if (p->groups > 1 && !shared && work < MM_GEMM_SERIAL_WORK) {
        TG_PARALLEL_FOR_WORK(p->groups, (int64_t)work)
        for (int64_t g = 0; g < p->groups; g++)
            mm_gemm(n, p, what, beta, g);
        return;
    }
    for (int64_t g = 0; g < p->groups; g++)
        mm_gemm(n, p, what, beta, g);
}

/* The gradient of input i: assigned when fresh and every matrix of it has exactly one writer,
 * else added to (a fresh one zeroed first: shared matrices, or none written at all). */
static void mm_grad(const tg_node *n, const mm_plan *p, int i, bool shared)
{
    float beta = 1.0f;
    if (tg_grad_fresh(n, i)) {
        if (shared || p->groups == 0)
            memset(tg_grad_of(n, i), 0, (size_t)n->in[i]->numel * sizeof(float));
        else
            beta = 0.0f;
    }
    mm_run(n, p, i == 0 ? MM_DA : MM_DB, beta, shared);
}

static void matmul_forward(tg_node *n)
{
    mm_plan p;
    mm_plan_make(n->in[0], n->in[1], &p, NULL, NULL);
    mm_run(n, &p, MM_Y, 0.0f, false);
}

static void matmul_backward(tg_node *n)
{
    mm_plan p;
    mm_plan_make(n->in[0], n->in[1], &p, NULL, NULL);
    if (tg_grad_of(n, 0))
        mm_grad(n, &p, 0, p.a_shared);
    if (tg_grad_of(n, 1))
        mm_grad(n, &p, 1, p.b_shared);
}

/* Second order: with a2, b2 the operands as matrices (a 1-D a a row [1, K], a 1-D b a column
 * [K, 1]) and g2 = dy with their dropped axes back, da = g2 @ b2^T and db = a2^T @ g2, each
 * summed over the batch axes its operand was broadcast along, then given the operand's shape. */
static tg_status matmul_backward_graph(tg_node *n, tg_tensor *gout, uint32_t need, tg_tensor **gin)
{
    tg_tensor *a = n->in[0], *b = n->in[1];
    const int na = a->ndim, nb = b->ndim;
    const int64_t K = a->shape[na - 1];
    const int nbat = gout->ndim - (na >= 2) - (nb >= 2);
    int64_t gs[TG_MAX_DIMS];
    memcpy(gs, gout->shape, (size_t)nbat * sizeof(int64_t));
    gs[nbat] = na >= 2 ? a->shape[na - 2] : 1;
    gs[nbat + 1] = nb >= 2 ? b->shape[nb - 1] : 1;
    tg_tensor *g2 = tg_reshape(gout, nbat + 2, gs);
    tg_tensor *a2 = na >= 2 ? a : tg_reshape(a, 2, (int64_t[]){1, K});
    tg_tensor *b2 = nb >= 2 ? b : tg_reshape(b, 2, (int64_t[]){K, 1});
    if (!g2 || !a2 || !b2)
        return tg_last_status();
    if (tg_graph_needs(need, 0)) {
        tg_tensor *da = tg_matmul(g2, tg_transpose(b2, -1, -2));
        da = tg_graph_sum_to(da, a2->ndim, a2->shape);
        if (!(gin[0] = da && na < 2 ? tg_reshape(da, 1, &K) : da))
            return tg_last_status();
    }
    if (tg_graph_needs(need, 1)) {
        /* One matrix b for the whole batch: the batch folded into the rows, one [K, N] product
         * (a2 then has exactly y's batch axes, contiguous before its rows). */
        tg_tensor *ar = a2, *gr = g2;
        if (b2->ndim == 2 && g2->ndim > 2) {
            int64_t rows = 1;
            for (int d = 0; d <= nbat; d++)
                rows *= gs[d];
            ar = tg_reshape(a2, 2, (int64_t[]){rows, K});
            gr = tg_reshape(g2, 2, (int64_t[]){rows, gs[nbat + 1]});
        }
        tg_tensor *db = tg_matmul(tg_transpose(ar, -1, -2), gr);
        db = tg_graph_sum_to(db, b2->ndim, b2->shape);
        if (!(gin[1] = db && nb < 2 ? tg_reshape(db, 1, &K) : db))
            return tg_last_status();
    }
    return TG_OK;
}

static const tg_case matmul_cases[] = {
    {.shape = {{3, 4}, {4, 5}}},
    {.shape = {{1, 7}, {7, 1}}},
    {.shape = {{6, 1}, {1, 3}}},
    {.shape = {{3, 4, 6}, {3, 6, 5}}, .name = "batched"},
    {.shape = {{2, 5, 8}, {8, 3}}, .name = "batch_2d"},
    {.shape = {{1, 4, 6}, {3, 6, 5}}, .name = "bcast_a"},
    {.shape = {{3, 4, 6}, {1, 6, 5}}, .name = "bcast_b"},
    {.shape = {{2, 1, 4, 6}, {3, 6, 5}}, .name = "bcast_both"},
    {.shape = {{2, 3, 4, 6}, {2, 1, 6, 5}}, .name = "fold_inner"},
    {.shape = {{3, 6}, {2, 6, 4}}, .name = "2d_batch"},
    {.shape = {{6}, {6}}, .name = "dot"},
    {.shape = {{6}, {6, 4}}, .name = "vec_mat"},
    {.shape = {{3, 6}, {6}}, .name = "mat_vec"},
    {.shape = {{6}, {2, 6, 4}}, .name = "vec_batch"},
    {.shape = {{2, 3, 6}, {6}}, .name = "batch_vec"},
    {0},
};
TG_OP_DEFINE(matmul) = {.name = "matmul",
                        .n_in = 2,
                        .check = matmul_check,
                        .forward = matmul_forward,
                        .backward = matmul_backward,
                        .backward_graph = matmul_backward_graph,
                        .cases = matmul_cases,
                        .fresh_grads = true};

tg_tensor *tg_matmul(tg_tensor *a, tg_tensor *b)
{
    return tg_apply2(&tg_op_matmul, NULL, 0, a, b);
}

/* ---- linear -------------------------------------------------------------------------------
 * y[..., O] = x[..., I] @ w[O, I]^T + b[O]; the leading axes of x are contiguous, so x is one
 * [R, I] matrix (R their product, 1 for a 1-D x):
 * dx += dy @ w;   dw += dy^T @ x;   db += sum over rows of dy   (one sgemm each; a fresh
 * gradient is assigned: beta = 0, db zeroed first) */
static tg_status linear_check(tg_node *n, int *ndim, int64_t shape[])
{
    const tg_tensor *x = n->in[0], *w = n->in[1], *b = n->n_in > 2 ? n->in[2] : NULL;
    char sx[160], sw[160], sb[160];
    if (n->n_in < 2 || n->n_in > 3)
        return tg_set_error(TG_ERR_ARG, "tg_linear: %d inputs; it takes x, w and b", n->n_in);
    if (x->ndim < 1 || w->ndim != 2 || x->shape[x->ndim - 1] != w->shape[1])
        return tg_set_error(TG_ERR_SHAPE,
                            "tg_linear: x %s, w %s: need x [..., in] and w [out, in] with the "
                            "same in",
                            TG_SHAPE_STR(x, sx), TG_SHAPE_STR(w, sw));
    if (b && (b->ndim != 1 || b->shape[0] != w->shape[0]))
        return tg_set_error(TG_ERR_SHAPE, "tg_linear: w %s, b %s: b must be [%lld]",
                            TG_SHAPE_STR(w, sw), TG_SHAPE_STR(b, sb), (long long)w->shape[0]);
    *ndim = x->ndim;
    memcpy(shape, x->shape, (size_t)x->ndim * sizeof(int64_t));
    shape[x->ndim - 1] = w->shape[0];
    return TG_OK;
}

/* The rows of x as one matrix: the product of its leading sizes. */
static int64_t linear_rows(const tg_tensor *x)
{
    int64_t rows = 1;
    for (int d = 0; d < x->ndim - 1; d++)
        rows *= x->shape[d];
    return rows;
}

static void linear_forward(tg_node *n)
{
    const tg_tensor *x = n->in[0], *w = n->in[1], *b = n->n_in > 2 ? n->in[2] : NULL;
    int64_t N = linear_rows(x), I = w->shape[1], O = w->shape[0];
    float *y = n->out->data;
    if (n->out->numel == 0) /* no work: x [2^40, 0] with out 0 would be 2^40 empty bias rows */
        return;
    if (b) {
        /* Start from the bias in every row, then let sgemm add x @ w^T (beta = 1). */
        TG_PARALLEL_FOR_WORK(N, O)
        for (int64_t r = 0; r < N; r++)
            for (int64_t o = 0; o < O; o++)
                y[r * O + o] = b->data[o];
    }
    gemm(false, true, N, O, I, x->data, I, w->data, I, b ? 1.0f : 0.0f, y, O);
}

static void linear_backward(tg_node *n)
{
    const tg_tensor *x = n->in[0], *w = n->in[1];
    int64_t N = linear_rows(x), I = w->shape[1], O = w->shape[0];
    const float *dy = n->out->grad->data;
    float *dx = tg_grad_of(n, 0), *dw = tg_grad_of(n, 1);
    float *db = n->n_in > 2 ? tg_grad_of(n, 2) : NULL;
    if (dx)
        gemm(false, false, N, I, O, dy, O, w->data, I, tg_grad_fresh(n, 0) ? 0.0f : 1.0f, dx, I);
    if (dw)
        gemm(true, false, O, I, N, dy, O, x->data, I, tg_grad_fresh(n, 1) ? 0.0f : 1.0f, dw, I);
    if (db) {
        if (tg_grad_fresh(n, 2))
            memset(db, 0, (size_t)O * sizeof(float));
        /* Column sums: rows outer so the inner loop runs along contiguous memory; none for an
         * empty dy, whose N may still be huge (out 0). */
        for (int64_t r = 0; r < (n->out->numel ? N : 0); r++)
            for (int64_t o = 0; o < O; o++)
                db[o] += dy[r * O + o];
    }
}

/* Second order: the same three products as recorded ops. dx = dy @ w; dw = dy2^T @ x2 with
 * dy2, x2 the [R, O] and [R, I] matrices; db = dy summed over the rows. */
static tg_status linear_backward_graph(tg_node *n, tg_tensor *gout, uint32_t need, tg_tensor **gin)
{
    tg_tensor *x = n->in[0], *w = n->in[1];
    const int64_t R = linear_rows(x), I = w->shape[1], O = w->shape[0];
    if (tg_graph_needs(need, 0) && !(gin[0] = tg_matmul(gout, w)))
        return tg_last_status();
    if (tg_graph_needs(need, 0) && x->ndim == 1 && !(gin[0] = tg_reshape(gin[0], 1, &I)))
        return tg_last_status();
    tg_tensor *dy2 = NULL;
    if ((tg_graph_needs(need, 1) || (n->n_in > 2 && tg_graph_needs(need, 2))) &&
        !(dy2 = tg_reshape(gout, 2, (int64_t[]){R, O})))
        return tg_last_status();
    if (tg_graph_needs(need, 1)) {
        tg_tensor *x2 = tg_reshape(x, 2, (int64_t[]){R, I});
        if (!(gin[1] = tg_matmul(tg_transpose(dy2, 0, 1), x2)))
            return tg_last_status();
    }
    if (n->n_in > 2 && tg_graph_needs(need, 2) && !(gin[2] = tg_sum_axis(dy2, 0, false)))
        return tg_last_status();
    return TG_OK;
}

static const tg_case linear_cases[] = {
    {.shape = {{4, 5}, {3, 5}, {3}}, .n_in = 3, .name = "bias"},
    {.shape = {{2, 6}, {4, 6}}, .n_in = 2, .name = "no_bias"},
    {.shape = {{1, 1}, {1, 1}, {1}}, .n_in = 3, .name = "1x1"},
    {.shape = {{2, 3, 5}, {4, 5}, {4}}, .n_in = 3, .name = "3d"},
    {.shape = {{2, 3, 5}, {4, 5}}, .n_in = 2, .name = "3d_no_bias"},
    {.shape = {{5}, {3, 5}, {3}}, .n_in = 3, .name = "1d"},
    {0},
};
TG_OP_DEFINE(linear) = {.name = "linear",
                        .n_in = -1,
                        .check = linear_check,
                        .forward = linear_forward,
                        .backward = linear_backward,
                        .backward_graph = linear_backward_graph,
                        .cases = linear_cases,
                        .fresh_grads = true};

tg_tensor *tg_linear(tg_tensor *x, tg_tensor *w, tg_tensor *b)
{
    /* NULL is what a failed call returns, never "no bias": keep that call's error. */
    if (!b) {
        if (tg_last_status() == TG_OK)
            tg_set_error(TG_ERR_ARG, "tg_linear: b is NULL (pass TG_NONE for no bias)");
        return NULL;
    }
    tg_tensor *in[3] = {x, w, b};
    return tg_apply(&tg_op_linear, NULL, 0, b == TG_NONE ? 2 : 3, in);
}
