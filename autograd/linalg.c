/* Linear algebra ops: matmul and the fused linear layer, both on sgemm (tg_sgemm_avx512: our
 * AVX-512 kernels where the CPU has them, else OpenBLAS). */
#include "internal.h"
#include "ops.h"

#include "../tensor/parallel.h"

/* ---- matmul -------------------------------------------------------------------------------
 * y[M,N] = a[M,K] @ b[K,N];   da += dy @ b^T;   db += a^T @ dy   (sgemm, beta = 1) */
static tg_status matmul_check(tg_node *n, int *ndim, int64_t shape[])
{
    const tg_tensor *a = n->in[0], *b = n->in[1];
    char sa[160], sb[160];
    if (a->ndim != 2 || b->ndim != 2)
        return tg_set_error(TG_ERR_SHAPE, "tg_matmul: a %s @ b %s: both must be 2-D",
                            TG_SHAPE_STR(a, sa), TG_SHAPE_STR(b, sb));
    if (a->shape[1] != b->shape[0])
        return tg_set_error(TG_ERR_SHAPE,
                            "tg_matmul: a %s @ b %s: inner sizes %lld and %lld "
                            "differ",
                            TG_SHAPE_STR(a, sa), TG_SHAPE_STR(b, sb), (long long)a->shape[1],
                            (long long)b->shape[0]);
    *ndim = 2;
    shape[0] = a->shape[0];
    shape[1] = b->shape[1];
    return TG_OK;
}

static void matmul_forward(tg_node *n)
{
    const tg_tensor *a = n->in[0], *b = n->in[1];
    int64_t M = a->shape[0], K = a->shape[1], N = b->shape[1];
    tg_sgemm_avx512(false, false, M, N, K, 1.0f, a->data, K, b->data, N, 0.0f, n->out->data, N);
}

static void matmul_backward(tg_node *n)
{
    const tg_tensor *a = n->in[0], *b = n->in[1];
    int64_t M = a->shape[0], K = a->shape[1], N = b->shape[1];
    const float *dy = n->out->grad->data;
    float *da = tg_grad_of(n, 0), *db = tg_grad_of(n, 1);
    if (da)
        tg_sgemm_avx512(false, true, M, K, N, 1.0f, dy, N, b->data, N, 1.0f, da, K);
    if (db)
        tg_sgemm_avx512(true, false, K, N, M, 1.0f, a->data, K, dy, N, 1.0f, db, N);
}

static const tg_case matmul_cases[] = {
    {.shape = {{3, 4}, {4, 5}}},
    {.shape = {{1, 7}, {7, 1}}},
    {.shape = {{6, 1}, {1, 3}}},
    {0},
};
TG_OP_DEFINE(matmul) = {.name = "matmul",
                        .n_in = 2,
                        .check = matmul_check,
                        .forward = matmul_forward,
                        .backward = matmul_backward,
                        .cases = matmul_cases};

tg_tensor *tg_matmul(tg_tensor *a, tg_tensor *b)
{
    return tg_apply2(&tg_op_matmul, NULL, 0, a, b);
}

/* ---- linear -------------------------------------------------------------------------------
 * y[N,O] = x[N,I] @ w[O,I]^T + b[O]
 * dx += dy @ w;   dw += dy^T @ x;   db += sum over rows of dy   (one sgemm each, beta = 1) */
static tg_status linear_check(tg_node *n, int *ndim, int64_t shape[])
{
    const tg_tensor *x = n->in[0], *w = n->in[1], *b = n->n_in > 2 ? n->in[2] : NULL;
    char sx[160], sw[160], sb[160];
    if (n->n_in < 2 || n->n_in > 3)
        return tg_set_error(TG_ERR_ARG, "tg_linear: %d inputs; it takes x, w and b", n->n_in);
    if (x->ndim != 2 || w->ndim != 2 || x->shape[1] != w->shape[1])
        return tg_set_error(TG_ERR_SHAPE,
                            "tg_linear: x %s, w %s: need x [N, in] and w "
                            "[out, in] with the same in",
                            TG_SHAPE_STR(x, sx), TG_SHAPE_STR(w, sw));
    if (b && (b->ndim != 1 || b->shape[0] != w->shape[0]))
        return tg_set_error(TG_ERR_SHAPE, "tg_linear: w %s, b %s: b must be [%lld]",
                            TG_SHAPE_STR(w, sw), TG_SHAPE_STR(b, sb), (long long)w->shape[0]);
    *ndim = 2;
    shape[0] = x->shape[0];
    shape[1] = w->shape[0];
    return TG_OK;
}

static void linear_forward(tg_node *n)
{
    const tg_tensor *x = n->in[0], *w = n->in[1], *b = n->n_in > 2 ? n->in[2] : NULL;
    int64_t N = x->shape[0], I = x->shape[1], O = w->shape[0];
    float *y = n->out->data;
    if (b) {
        /* Start from the bias in every row, then let sgemm add x @ w^T (beta = 1). */
        TG_PARALLEL_FOR_WORK(N, O)
        for (int64_t r = 0; r < N; r++)
            for (int64_t o = 0; o < O; o++)
                y[r * O + o] = b->data[o];
    }
    tg_sgemm_avx512(false, true, N, O, I, 1.0f, x->data, I, w->data, I, b ? 1.0f : 0.0f, y, O);
}

static void linear_backward(tg_node *n)
{
    const tg_tensor *x = n->in[0], *w = n->in[1];
    int64_t N = x->shape[0], I = x->shape[1], O = w->shape[0];
    const float *dy = n->out->grad->data;
    float *dx = tg_grad_of(n, 0), *dw = tg_grad_of(n, 1);
    float *db = n->n_in > 2 ? tg_grad_of(n, 2) : NULL;
    if (dx)
        tg_sgemm_avx512(false, false, N, I, O, 1.0f, dy, O, w->data, I, 1.0f, dx, I);
    if (dw)
        tg_sgemm_avx512(true, false, O, I, N, 1.0f, dy, O, x->data, I, 1.0f, dw, I);
    if (db) {
        /* Column sums: rows outer so the inner loop runs along contiguous memory. */
        for (int64_t r = 0; r < N; r++)
            for (int64_t o = 0; o < O; o++)
                db[o] += dy[r * O + o];
    }
}

static const tg_case linear_cases[] = {
    {.shape = {{4, 5}, {3, 5}, {3}}, .n_in = 3, .name = "bias"},
    {.shape = {{2, 6}, {4, 6}}, .n_in = 2, .name = "no_bias"},
    {.shape = {{1, 1}, {1, 1}, {1}}, .n_in = 3, .name = "1x1"},
    {0},
};
TG_OP_DEFINE(linear) = {.name = "linear",
                        .n_in = -1,
                        .check = linear_check,
                        .forward = linear_forward,
                        .backward = linear_backward,
                        .cases = linear_cases};

tg_tensor *tg_linear(tg_tensor *x, tg_tensor *w, tg_tensor *b)
{
    tg_tensor *in[3] = {x, w, b};
    return tg_apply(&tg_op_linear, NULL, 0, b ? 3 : 2, in);
}
