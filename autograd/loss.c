/* Losses, fused with their own backward: bce_with_logits, cross_entropy, mse (each with its
 * second order, backward_graph: that backward written with recorded ops). Each takes a
 * tg_reduction, as PyTorch's reduction=: MEAN gives a 0-dimensional tensor, the mean over all
 * elements (over the batch for cross_entropy); SUM their sum; NONE the per-element losses
 * (input's shape; [N] for cross_entropy). Sums run in double over a fixed split into chunks, so
 * a loss does not change with the thread count. */
#include "internal.h"
#include "ops.h"

#include "../tensor/parallel.h"

#include <math.h>
#include <string.h>

/* total = sum of term (an expression in the index i) for i in [0, n), in double: LOSS_PARTS
 * fixed chunks, each summed on one thread, then the partial sums added in order. */
#define LOSS_PARTS 64
#define LOSS_SUM(total, n, i, term)                                                                \
    do {                                                                                           \
        double parts_[LOSS_PARTS];                                                                 \
        const int64_t n_ = (n), chunk_ = (n_ + LOSS_PARTS - 1) / LOSS_PARTS;                       \
        TG_PARALLEL_FOR_WORK(LOSS_PARTS, chunk_)                                                   \
        for (int64_t k_ = 0; k_ < LOSS_PARTS; k_++) {                                              \
            const int64_t lo_ = k_ * chunk_, hi_ = lo_ + chunk_ < n_ ? lo_ + chunk_ : n_;          \
            double s_ = 0;                                                                         \
            for (int64_t i = lo_; i < hi_; i++)                                                    \
                s_ += (term);                                                                      \
            parts_[k_] = s_;                                                                       \
        }                                                                                          \
        (total) = 0;                                                                               \
        for (int k_ = 0; k_ < LOSS_PARTS; k_++)                                                    \
            (total) += parts_[k_];                                                                 \
    } while (0)

/* The one parameter of every loss. */
typedef struct {
    tg_reduction reduction;
} loss_params;

/* Checks the reduction and sets the output's shape for per-element losses of shape
 * (ndim_in, shape_in): 0-D for MEAN and SUM, that shape for NONE. MEAN of no elements is
 * refused (PyTorch gives NaN), naming the input x; SUM of none is 0 and NONE of none is empty,
 * as PyTorch's. */
static tg_status loss_out_shape(const tg_node *n, const char *fn, const char *what,
                                const tg_tensor *x, int ndim_in, const int64_t *shape_in, int *ndim,
                                int64_t shape[])
{
    const tg_reduction r = TG_PARAMS(n, loss_params)->reduction;
    char s[160];
    if (r != TG_REDUCE_MEAN && r != TG_REDUCE_SUM && r != TG_REDUCE_NONE)
        return tg_set_error(TG_ERR_ARG,
                            "%s: reduction %d is not TG_REDUCE_MEAN, TG_REDUCE_SUM or "
                            "TG_REDUCE_NONE",
                            fn, (int)r);
    if (r == TG_REDUCE_MEAN && x->numel == 0)
        return tg_set_error(TG_ERR_SHAPE,
                            "%s: %s %s is empty; the mean of no elements is undefined (use "
                            "TG_REDUCE_SUM or TG_REDUCE_NONE)",
                            fn, what, TG_SHAPE_STR(x, s));
    *ndim = 0;
    if (r == TG_REDUCE_NONE) {
        *ndim = ndim_in;
        memcpy(shape, shape_in, (size_t)ndim_in * sizeof(int64_t));
    }
    return TG_OK;
}

/* Checks two inputs of equal shape (names for the message) and the reduction. */
static tg_status loss_check_pair(const tg_node *n, int *ndim, int64_t shape[], const char *fn,
                                 const char *an, const char *bn)
{
    const tg_tensor *a = n->in[0], *b = n->in[1];
    char sa[160], sb[160];
    if (!tg_shape_equal(a, b))
        return tg_set_error(TG_ERR_SHAPE, "%s: %s %s and %s %s must have the same shape", fn, an,
                            TG_SHAPE_STR(a, sa), bn, TG_SHAPE_STR(b, sb));
    return loss_out_shape(n, fn, an, a, a->ndim, a->shape, ndim, shape);
}

/* The reduced loss of count terms that add up to total. MEAN divides in double, as it always
 * has: a recipe's losses stay bit for bit what they were. */
static inline float loss_reduce(const tg_node *n, double total, int64_t count)
{
    return TG_PARAMS(n, loss_params)->reduction == TG_REDUCE_MEAN ? (float)(total / (double)count)
                                                                  : (float)total;
}

/* Backward's upstream gradient for term i is LOSS_G(i): dy[i] for NONE, else the one value g0
 * (dL for SUM, dL / count for MEAN, that float division as before; dy[0] is not read for NONE,
 * whose dy may be empty). Declared by LOSS_GRAD. */
#define LOSS_GRAD(n, count)                                                                        \
    const tg_reduction red_ = TG_PARAMS(n, loss_params)->reduction;                                \
    const float *dy_ = (n)->out->grad->data;                                                       \
    const bool each_ = red_ == TG_REDUCE_NONE;                                                     \
    const float g0_ = each_ ? 0.0f : red_ == TG_REDUCE_MEAN ? dy_[0] / (float)(count) : dy_[0]
#define LOSS_G(i) (each_ ? dy_[i] : g0_)

/* Second order (create_graph): dL/dl_i as a recorded tensor that broadcasts against the
 * per-element losses: dy for NONE (their shape) and SUM (0-D), dy / count for MEAN. */
static tg_tensor *loss_graph_g(const tg_node *n, tg_tensor *gout, int64_t count)
{
    return TG_PARAMS(n, loss_params)->reduction == TG_REDUCE_MEAN
               ? tg_div_scalar(gout, (float)count)
               : gout;
}

/* The three reductions as gradcheck case parameters. */
#define LOSS_SUM_P TG_CASE_PARAMS(loss_params, .reduction = TG_REDUCE_SUM)
#define LOSS_NONE_P TG_CASE_PARAMS(loss_params, .reduction = TG_REDUCE_NONE)

/* ---- bce_with_logits ----------------------------------------------------------------------
 * l_i = max(z,0) - z*t + log1p(e^-|z|) for logits z and targets t of one shape: the binary
 * cross entropy of sigmoid(z) against t, rearranged so that e^ only ever sees -|z| <= 0
 * (finite for any z, no log(0) at saturated logits). L = reduction(l).
 * dz_i += g_i * (sigmoid(z_i) - t_i);   dt_i += g_i * -z_i   (targets may require grad)
 * with g_i = dL/dl_i: dL/n for MEAN, dL for SUM, dL_i for NONE. */
static inline double bce_term(float z, float t)
{
    return (double)fmaxf(z, 0.0f) - (double)z * t + (double)log1pf(expf(-fabsf(z)));
}

/* sigmoid(z) through e^-|z|, so neither branch overflows. */
static inline float bce_sigmoid(float z)
{
    const float e = expf(-fabsf(z));
    return z >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
}

static tg_status bce_with_logits_check(tg_node *n, int *ndim, int64_t shape[])
{
    return loss_check_pair(n, ndim, shape, "tg_bce_with_logits", "logits", "targets");
}

TG_ISA_KERNEL(bce_with_logits_forward, (tg_node * n), (n))
{
    const float *z = n->in[0]->data, *t = n->in[1]->data;
    const int64_t numel = n->in[0]->numel;
    if (TG_PARAMS(n, loss_params)->reduction == TG_REDUCE_NONE) {
        float *y = n->out->data;
        TG_PARALLEL_FOR(numel)
        for (int64_t i = 0; i < numel; i++)
            y[i] = (float)bce_term(z[i], t[i]);
        return;
    }
    double total;
    LOSS_SUM(total, numel, i, bce_term(z[i], t[i]));
    n->out->data[0] = loss_reduce(n, total, numel);
}

TG_ISA_KERNEL(bce_with_logits_backward, (tg_node * n), (n))
{
    const float *z = n->in[0]->data, *t = n->in[1]->data;
    const int64_t numel = n->in[0]->numel;
    LOSS_GRAD(n, numel);
    float *dz = tg_grad_of(n, 0), *dt = tg_grad_of(n, 1);
    if (dz) {
        TG_PARALLEL_FOR(numel)
        for (int64_t i = 0; i < numel; i++)
            dz[i] += LOSS_G(i) * (bce_sigmoid(z[i]) - t[i]);
    }
    if (dt) {
        TG_PARALLEL_FOR(numel)
        for (int64_t i = 0; i < numel; i++)
            dt[i] -= LOSS_G(i) * z[i];
    }
}

/* Second order: dz = G * (sigmoid(z) - t), dt = -G * z, G = loss_graph_g. */
static tg_status bce_with_logits_backward_graph(tg_node *n, tg_tensor *gout, uint32_t need,
                                                tg_tensor **gin)
{
    tg_tensor *z = n->in[0], *t = n->in[1];
    tg_tensor *g = loss_graph_g(n, gout, z->numel);
    if (tg_graph_needs(need, 0) && !(gin[0] = tg_mul(g, tg_sub(tg_sigmoid(z), t))))
        return tg_last_status();
    if (tg_graph_needs(need, 1) && !(gin[1] = tg_neg(tg_mul(g, z))))
        return tg_last_status();
    return TG_OK;
}

/* Logits in [-3, 3] and targets in [0, 1], as a classifier sees them. */
static void bce_case_init(int i, tg_tensor *t, tg_rng *rng)
{
    tg_tensor_uniform_(t, rng, i == 0 ? -3.0f : 0.0f, i == 0 ? 3.0f : 1.0f);
}

static const tg_case bce_with_logits_cases[] = {
    {.shape = {{4, 5}, {4, 5}}, .init = bce_case_init, .name = "4x5"},
    {.shape = {{2, 3, 2, 2}, {2, 3, 2, 2}}, .init = bce_case_init, .name = "4d"},
    {.shape = {{1}, {1}}, .init = bce_case_init, .name = "one"},
    {.shape = {{3, 4}, {3, 4}}, LOSS_SUM_P, .init = bce_case_init, .name = "sum"},
    {.shape = {{3, 4}, {3, 4}}, LOSS_NONE_P, .init = bce_case_init, .name = "none"},
    {.shape = {{2, 1, 3}, {2, 1, 3}}, LOSS_NONE_P, .init = bce_case_init, .name = "none_3d"},
    {0},
};
TG_OP_DEFINE(bce_with_logits) = {.name = "bce_with_logits",
                                 .n_in = 2,
                                 .check = bce_with_logits_check,
                                 .forward = bce_with_logits_forward,
                                 .backward = bce_with_logits_backward,
                                 .backward_graph = bce_with_logits_backward_graph,
                                 .cases = bce_with_logits_cases};

#if TG_ISA_BASE
tg_tensor *tg_bce_with_logits(tg_tensor *logits, tg_tensor *targets, tg_reduction reduction)
{
    const loss_params p = {reduction};
    return tg_apply2(&tg_op_bce_with_logits, &p, sizeof p, logits, targets);
}
#endif

/* ---- cross_entropy ------------------------------------------------------------------------
 * logits z[N,C] (the one tensor input), labels a tg_index [N] of classes 0 .. C-1 (n->index,
 * checked in check). l_r = lse_r - z[r, label_r], lse_r = log(sum_c e^z[r,c]) taken stably as
 * max + log(sum e^(z - max)): -log_softmax(z)[label] without forming log_softmax.
 * L = reduction(l) over the N rows.
 * dz[r,c] += g_r * (softmax(z)[r,c] - [c == label_r]), softmax = e^(z - lse), lse saved in
 * scratch; g_r = dL/N for MEAN, dL for SUM, dL_r for NONE. */
static tg_status cross_entropy_check(tg_node *n, int *ndim, int64_t shape[])
{
    const tg_tensor *z = n->in[0];
    const tg_index *labels = n->index;
    char sz[160], sl[160];
    if (!labels)
        return tg_set_error(TG_ERR_ARG, "tg_cross_entropy: labels is NULL");
    if (z->ndim != 2 || z->shape[1] < 1)
        return tg_set_error(TG_ERR_SHAPE, "tg_cross_entropy: logits %s must be [N, C] with C >= 1",
                            TG_SHAPE_STR(z, sz));
    if (labels->ndim != 1 || labels->shape[0] != z->shape[0])
        return tg_set_error(TG_ERR_SHAPE,
                            "tg_cross_entropy: logits %s need labels [%lld], got labels %s",
                            TG_SHAPE_STR(z, sz), (long long)z->shape[0],
                            tg_shape_str(labels->ndim, labels->shape, sl, sizeof sl));
    const int64_t N = z->shape[0], C = z->shape[1];
    for (int64_t r = 0; r < N; r++) {
        const int64_t v = labels->data[r];
        if (v < 0 || v >= C)
            return tg_set_error(TG_ERR_ARG,
                                "tg_cross_entropy: label %lld at row %lld is out of range for "
                                "%lld classes (0 to %lld)",
                                (long long)v, (long long)r, (long long)C, (long long)(C - 1));
    }
    n->scratch_bytes = 2 * (size_t)N * sizeof(float); /* lse[N], row loss[N] */
    return loss_out_shape(n, "tg_cross_entropy", "logits", z, 1, z->shape, ndim, shape);
}

TG_ISA_KERNEL(cross_entropy_forward, (tg_node * n), (n))
{
    const tg_tensor *zt = n->in[0];
    const int64_t *labels = n->index->data;
    const int64_t N = zt->shape[0], C = zt->shape[1];
    if (N == 0) { /* no rows, no scratch (NULL): NONE's [0] has nothing to write, SUM is 0 */
        if (TG_PARAMS(n, loss_params)->reduction != TG_REDUCE_NONE)
            n->out->data[0] = loss_reduce(n, 0.0, 0);
        return;
    }
    float *lse = n->scratch, *row_loss = lse + N;
    TG_PARALLEL_FOR_WORK(N, C)
    for (int64_t r = 0; r < N; r++) {
        const float *z = zt->data + r * C;
        float mx = -INFINITY, s = 0.0f;
        for (int64_t c = 0; c < C; c++)
            mx = fmaxf(mx, z[c]);
        for (int64_t c = 0; c < C; c++)
            s += expf(z[c] - mx);
        const float ls = logf(s);
        lse[r] = mx + ls;
        /* ls - (z[label] - mx) rather than lse - z[label]: no cancellation of a large max. */
        row_loss[r] = ls - (z[labels[r]] - mx);
    }
    if (TG_PARAMS(n, loss_params)->reduction == TG_REDUCE_NONE) {
        memcpy(n->out->data, row_loss, (size_t)N * sizeof(float));
        return;
    }
    double total = 0;
    for (int64_t r = 0; r < N; r++)
        total += row_loss[r];
    n->out->data[0] = loss_reduce(n, total, N);
}

TG_ISA_KERNEL(cross_entropy_backward, (tg_node * n), (n))
{
    float *dz = tg_grad_of(n, 0);
    if (!dz)
        return;
    const tg_tensor *zt = n->in[0];
    const int64_t *labels = n->index->data;
    const float *lse = n->scratch;
    const int64_t N = zt->shape[0], C = zt->shape[1];
    LOSS_GRAD(n, N);
    TG_PARALLEL_FOR_WORK(N, C)
    for (int64_t r = 0; r < N; r++) {
        const float *z = zt->data + r * C;
        const float g = LOSS_G(r);
        float *dzr = dz + r * C;
        for (int64_t c = 0; c < C; c++)
            dzr[c] += g * expf(z[c] - lse[r]);
        dzr[labels[r]] -= g;
    }
}

/* Second order: dz = G_r * (softmax(z) - one_hot(labels)), G_r = loss_graph_g per row. */
static tg_status cross_entropy_backward_graph(tg_node *n, tg_tensor *gout, uint32_t need,
                                              tg_tensor **gin)
{
    tg_tensor *z = n->in[0];
    const int64_t N = z->shape[0], C = z->shape[1];
    if (!tg_graph_needs(need, 0))
        return TG_OK;
    if (N == 0) /* no rows: nothing to differentiate */
        return (gin[0] = tg_zeros(z->ndim, z->shape)) ? TG_OK : tg_last_status();
    tg_tensor *g = loss_graph_g(n, gout, N);
    if (TG_PARAMS(n, loss_params)->reduction == TG_REDUCE_NONE)
        g = tg_reshape(g, 2, (int64_t[]){N, 1});
    gin[0] = tg_mul(g, tg_sub(tg_softmax(z, 1), tg_one_hot(n->index, C)));
    return gin[0] ? TG_OK : tg_last_status();
}

#define CE_CASE_C 4 /* classes in the gradcheck cases below */

/* Labels for the cases' rows (at most 5): random classes 0 .. CE_CASE_C-1. */
static tg_index *ce_labels_of(int64_t rows, tg_rng *rng)
{
    int64_t v[5];
    for (int64_t r = 0; r < rows; r++)
        v[r] = (int64_t)(tg_rng_u32(rng) % CE_CASE_C);
    return tg_index_new(1, &rows, v);
}
static tg_index *ce_labels5(tg_rng *rng)
{
    return ce_labels_of(5, rng);
}
static tg_index *ce_labels1(tg_rng *rng)
{
    return ce_labels_of(1, rng);
}

/* Logits in [-2, 2]. */
static void cross_entropy_case_init(int i, tg_tensor *t, tg_rng *rng)
{
    (void)i;
    tg_tensor_uniform_(t, rng, -2.0f, 2.0f);
}

static const tg_case cross_entropy_cases[] = {
    {.shape = {{5, CE_CASE_C}},
     .init = cross_entropy_case_init,
     .make_index = ce_labels5,
     .name = "5x4"},
    {.shape = {{1, CE_CASE_C}},
     .init = cross_entropy_case_init,
     .make_index = ce_labels1,
     .name = "1x4"},
    {.shape = {{5, CE_CASE_C}},
     LOSS_SUM_P,
     .init = cross_entropy_case_init,
     .make_index = ce_labels5,
     .name = "sum"},
    {.shape = {{5, CE_CASE_C}},
     LOSS_NONE_P,
     .init = cross_entropy_case_init,
     .make_index = ce_labels5,
     .name = "none"},
    {0},
};
TG_OP_DEFINE(cross_entropy) = {.name = "cross_entropy",
                               .n_in = 1,
                               .check = cross_entropy_check,
                               .forward = cross_entropy_forward,
                               .backward = cross_entropy_backward,
                               .backward_graph = cross_entropy_backward_graph,
                               .cases = cross_entropy_cases};

#if TG_ISA_BASE
tg_tensor *tg_cross_entropy(tg_tensor *logits, const tg_index *labels, tg_reduction reduction)
{
    if (!labels) {
        /* A NULL from a failed tg_labels: keep that error, it names the real cause. */
        if (tg_last_status() == TG_OK)
            tg_set_error(TG_ERR_ARG, "tg_cross_entropy: labels is NULL");
        return NULL;
    }
    const loss_params p = {reduction};
    return tg_apply_index(&tg_op_cross_entropy, &p, sizeof p, 1, &logits, labels);
}
#endif

/* ---- mse ----------------------------------------------------------------------------------
 * l_i = (p_i - t_i)^2, L = reduction(l);  dp_i += g_i * 2 (p_i - t_i);  dt_i -= the same,
 * g_i as for bce_with_logits (MEAN folds the 2 into g: 2 dL / n, as it always has). */
static tg_status mse_check(tg_node *n, int *ndim, int64_t shape[])
{
    return loss_check_pair(n, ndim, shape, "tg_mse", "pred", "target");
}

TG_ISA_KERNEL(mse_forward, (tg_node * n), (n))
{
    const float *p = n->in[0]->data, *t = n->in[1]->data;
    const int64_t numel = n->in[0]->numel;
    if (TG_PARAMS(n, loss_params)->reduction == TG_REDUCE_NONE) {
        float *y = n->out->data;
        TG_PARALLEL_FOR(numel)
        for (int64_t i = 0; i < numel; i++)
            y[i] = (p[i] - t[i]) * (p[i] - t[i]);
        return;
    }
    double total;
    LOSS_SUM(total, numel, i, ((double)p[i] - t[i]) * ((double)p[i] - t[i]));
    n->out->data[0] = loss_reduce(n, total, numel);
}

TG_ISA_KERNEL(mse_backward, (tg_node * n), (n))
{
    const float *p = n->in[0]->data, *t = n->in[1]->data;
    const int64_t numel = n->in[0]->numel;
    LOSS_GRAD(n, numel);
    /* MEAN's 2 dL / n in one float expression, as before the reductions came. */
    const bool mean = red_ == TG_REDUCE_MEAN;
    const float g2 = mean ? 2.0f * dy_[0] / (float)numel : 0.0f;
    float *dp = tg_grad_of(n, 0), *dt = tg_grad_of(n, 1);
#define MSE_G(i) (mean ? g2 : 2.0f * LOSS_G(i))
    if (dp) {
        TG_PARALLEL_FOR(numel)
        for (int64_t i = 0; i < numel; i++)
            dp[i] += MSE_G(i) * (p[i] - t[i]);
    }
    if (dt) {
        TG_PARALLEL_FOR(numel)
        for (int64_t i = 0; i < numel; i++)
            dt[i] -= MSE_G(i) * (p[i] - t[i]);
    }
#undef MSE_G
}

/* Second order: dp = 2 G (p - t), dt = -dp, G = loss_graph_g. */
static tg_status mse_backward_graph(tg_node *n, tg_tensor *gout, uint32_t need, tg_tensor **gin)
{
    tg_tensor *p = n->in[0], *t = n->in[1];
    tg_tensor *d = tg_mul(tg_mul_scalar(loss_graph_g(n, gout, p->numel), 2.0f), tg_sub(p, t));
    if (!d)
        return tg_last_status();
    if (tg_graph_needs(need, 0))
        gin[0] = d;
    if (tg_graph_needs(need, 1) && !(gin[1] = tg_neg(d)))
        return tg_last_status();
    return TG_OK;
}

static const tg_case mse_cases[] = {
    {.shape = {{3, 4}, {3, 4}}, .name = "3x4"},
    {.shape = {{2, 2, 3, 3}, {2, 2, 3, 3}}, .name = "4d"},
    {.shape = {{3, 4}, {3, 4}}, LOSS_SUM_P, .name = "sum"},
    {.shape = {{3, 4}, {3, 4}}, LOSS_NONE_P, .name = "none"},
    {0},
};
TG_OP_DEFINE(mse) = {.name = "mse",
                     .n_in = 2,
                     .check = mse_check,
                     .forward = mse_forward,
                     .backward = mse_backward,
                     .backward_graph = mse_backward_graph,
                     .cases = mse_cases};

#if TG_ISA_BASE
tg_tensor *tg_mse(tg_tensor *pred, tg_tensor *target, tg_reduction reduction)
{
    const loss_params p = {reduction};
    return tg_apply2(&tg_op_mse, &p, sizeof p, pred, target);
}
#endif
