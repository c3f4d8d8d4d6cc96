/* Losses, fused with their own backward: bce_with_logits, cross_entropy, mse. Each returns a
 * 0-dimensional tensor, the mean over all elements (or over the batch for cross_entropy), as
 * PyTorch's default reduction='mean'. Sums run in double over a fixed split into chunks, so a
 * loss does not change with the thread count. */
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

/* Checks two inputs of equal, non-empty shape (names for the message); the output is 0-D. */
static tg_status loss_check_pair(const tg_node *n, int *ndim, const char *fn, const char *an,
                                 const char *bn)
{
    const tg_tensor *a = n->in[0], *b = n->in[1];
    char sa[160], sb[160];
    if (!tg_shape_equal(a, b))
        return tg_set_error(TG_ERR_SHAPE, "%s: %s %s and %s %s must have the same shape", fn, an,
                            TG_SHAPE_STR(a, sa), bn, TG_SHAPE_STR(b, sb));
    if (a->numel == 0)
        return tg_set_error(TG_ERR_SHAPE,
                            "%s: %s %s is empty; the mean of no elements is "
                            "undefined",
                            fn, an, TG_SHAPE_STR(a, sa));
    *ndim = 0;
    return TG_OK;
}

/* ---- bce_with_logits ----------------------------------------------------------------------
 * L = mean(max(z,0) - z*t + log1p(e^-|z|)) over the n elements of logits z and targets t:
 * the binary cross entropy of sigmoid(z) against t, rearranged so that e^ only ever sees
 * -|z| <= 0 (finite for any z, no log(0) at saturated logits).
 * dz += dL * (sigmoid(z) - t) / n;   dt += dL * -z / n   (targets may require grad) */
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
    (void)shape;
    return loss_check_pair(n, ndim, "tg_bce_with_logits", "logits", "targets");
}

TG_ISA_KERNEL(bce_with_logits_forward, (tg_node * n), (n))
{
    const float *z = n->in[0]->data, *t = n->in[1]->data;
    const int64_t numel = n->in[0]->numel;
    double total;
    LOSS_SUM(total, numel, i, bce_term(z[i], t[i]));
    n->out->data[0] = (float)(total / (double)numel);
}

TG_ISA_KERNEL(bce_with_logits_backward, (tg_node * n), (n))
{
    const float *z = n->in[0]->data, *t = n->in[1]->data;
    const int64_t numel = n->in[0]->numel;
    const float g = n->out->grad->data[0] / (float)numel;
    float *dz = tg_grad_of(n, 0), *dt = tg_grad_of(n, 1);
    if (dz) {
        TG_PARALLEL_FOR(numel)
        for (int64_t i = 0; i < numel; i++)
            dz[i] += g * (bce_sigmoid(z[i]) - t[i]);
    }
    if (dt) {
        TG_PARALLEL_FOR(numel)
        for (int64_t i = 0; i < numel; i++)
            dt[i] -= g * z[i];
    }
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
    {0},
};
TG_OP_DEFINE(bce_with_logits) = {.name = "bce_with_logits",
                                 .n_in = 2,
                                 .check = bce_with_logits_check,
                                 .forward = bce_with_logits_forward,
                                 .backward = bce_with_logits_backward,
                                 .cases = bce_with_logits_cases};

#if TG_ISA_BASE
tg_tensor *tg_bce_with_logits(tg_tensor *logits, tg_tensor *targets)
{
    return tg_apply2(&tg_op_bce_with_logits, NULL, 0, logits, targets);
}
#endif

/* ---- cross_entropy ------------------------------------------------------------------------
 * logits z[N,C], labels[N] holding class indices as floats (0 .. C-1, checked in check).
 * L = mean over rows r of lse_r - z[r, label_r], lse_r = log(sum_c e^z[r,c]) taken stably
 * as max + log(sum e^(z - max)): -log_softmax(z)[label] without forming log_softmax.
 * dz[r,c] += dL/N * (softmax(z)[r,c] - [c == label_r]), softmax = e^(z - lse), lse saved in
 * scratch. The labels are data, never differentiated: backward leaves their grad alone. */
static tg_status cross_entropy_check(tg_node *n, int *ndim, int64_t shape[])
{
    (void)shape;
    const tg_tensor *z = n->in[0], *labels = n->in[1];
    char sz[160], sl[160];
    if (z->ndim != 2 || z->shape[0] < 1 || z->shape[1] < 1)
        return tg_set_error(TG_ERR_SHAPE,
                            "tg_cross_entropy: logits %s must be [N, C] with N "
                            "and C >= 1",
                            TG_SHAPE_STR(z, sz));
    if (labels->ndim != 1 || labels->shape[0] != z->shape[0])
        return tg_set_error(TG_ERR_SHAPE,
                            "tg_cross_entropy: logits %s need labels [%lld], "
                            "got labels %s",
                            TG_SHAPE_STR(z, sz), (long long)z->shape[0], TG_SHAPE_STR(labels, sl));
    const int64_t N = z->shape[0], C = z->shape[1];
    for (int64_t r = 0; r < N; r++) {
        const float v = labels->data[r];
        if (!isfinite(v) || v != floorf(v))
            return tg_set_error(TG_ERR_ARG,
                                "tg_cross_entropy: labels[%lld] = %g is not an "
                                "integer class index",
                                (long long)r, (double)v);
        if (v < 0.0f || v >= (float)C)
            return tg_set_error(TG_ERR_ARG,
                                "tg_cross_entropy: labels[%lld] = %g is out of "
                                "range for %lld classes (0 to %lld)",
                                (long long)r, (double)v, (long long)C, (long long)(C - 1));
    }
    *ndim = 0;
    n->scratch_bytes = 2 * (size_t)N * sizeof(float); /* lse[N], row loss[N] */
    return TG_OK;
}

TG_ISA_KERNEL(cross_entropy_forward, (tg_node * n), (n))
{
    const tg_tensor *zt = n->in[0];
    const float *labels = n->in[1]->data;
    const int64_t N = zt->shape[0], C = zt->shape[1];
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
        row_loss[r] = ls - (z[(int64_t)labels[r]] - mx);
    }
    double total = 0;
    for (int64_t r = 0; r < N; r++)
        total += row_loss[r];
    n->out->data[0] = (float)(total / (double)N);
}

TG_ISA_KERNEL(cross_entropy_backward, (tg_node * n), (n))
{
    float *dz = tg_grad_of(n, 0);
    if (!dz)
        return;
    const tg_tensor *zt = n->in[0];
    const float *labels = n->in[1]->data, *lse = n->scratch;
    const int64_t N = zt->shape[0], C = zt->shape[1];
    const float g = n->out->grad->data[0] / (float)N;
    TG_PARALLEL_FOR_WORK(N, C)
    for (int64_t r = 0; r < N; r++) {
        const float *z = zt->data + r * C;
        float *dzr = dz + r * C;
        for (int64_t c = 0; c < C; c++)
            dzr[c] += g * expf(z[c] - lse[r]);
        dzr[(int64_t)labels[r]] -= g;
    }
}

#define CE_CASE_C 4 /* classes in the gradcheck cases below */

/* Logits in [-2, 2]; labels valid classes 0 .. CE_CASE_C-1 (as floats). */
static void cross_entropy_case_init(int i, tg_tensor *t, tg_rng *rng)
{
    if (i == 0) {
        tg_tensor_uniform_(t, rng, -2.0f, 2.0f);
        return;
    }
    for (int64_t e = 0; e < t->numel; e++)
        t->data[e] = (float)(tg_rng_u32(rng) % CE_CASE_C);
}

static const tg_case cross_entropy_cases[] = {
    {.shape = {{5, CE_CASE_C}, {5}},
     .no_grad = 1u << 1,
     .init = cross_entropy_case_init,
     .name = "5x4"},
    {.shape = {{1, CE_CASE_C}, {1}},
     .no_grad = 1u << 1,
     .init = cross_entropy_case_init,
     .name = "1x4"},
    {0},
};
TG_OP_DEFINE(cross_entropy) = {.name = "cross_entropy",
                               .n_in = 2,
                               .check = cross_entropy_check,
                               .forward = cross_entropy_forward,
                               .backward = cross_entropy_backward,
                               .cases = cross_entropy_cases};

#if TG_ISA_BASE
tg_tensor *tg_cross_entropy(tg_tensor *logits, tg_tensor *labels)
{
    return tg_apply2(&tg_op_cross_entropy, NULL, 0, logits, labels);
}
#endif

/* ---- mse ----------------------------------------------------------------------------------
 * L = mean((p - t)^2) over n elements;  dp += dL * 2 (p - t) / n;  dt += -dL * 2 (p - t) / n */
static tg_status mse_check(tg_node *n, int *ndim, int64_t shape[])
{
    (void)shape;
    return loss_check_pair(n, ndim, "tg_mse", "pred", "target");
}

TG_ISA_KERNEL(mse_forward, (tg_node * n), (n))
{
    const float *p = n->in[0]->data, *t = n->in[1]->data;
    const int64_t numel = n->in[0]->numel;
    double total;
    LOSS_SUM(total, numel, i, ((double)p[i] - t[i]) * ((double)p[i] - t[i]));
    n->out->data[0] = (float)(total / (double)numel);
}

TG_ISA_KERNEL(mse_backward, (tg_node * n), (n))
{
    const float *p = n->in[0]->data, *t = n->in[1]->data;
    const int64_t numel = n->in[0]->numel;
    const float g = 2.0f * n->out->grad->data[0] / (float)numel;
    float *dp = tg_grad_of(n, 0), *dt = tg_grad_of(n, 1);
    if (dp) {
        TG_PARALLEL_FOR(numel)
        for (int64_t i = 0; i < numel; i++)
            dp[i] += g * (p[i] - t[i]);
    }
    if (dt) {
        TG_PARALLEL_FOR(numel)
        for (int64_t i = 0; i < numel; i++)
            dt[i] -= g * (p[i] - t[i]);
    }
}

static const tg_case mse_cases[] = {
    {.shape = {{3, 4}, {3, 4}}, .name = "3x4"},
    {.shape = {{2, 2, 3, 3}, {2, 2, 3, 3}}, .name = "4d"},
    {0},
};
TG_OP_DEFINE(mse) = {.name = "mse",
                     .n_in = 2,
                     .check = mse_check,
                     .forward = mse_forward,
                     .backward = mse_backward,
                     .cases = mse_cases};

#if TG_ISA_BASE
tg_tensor *tg_mse(tg_tensor *pred, tg_tensor *target)
{
    return tg_apply2(&tg_op_mse, NULL, 0, pred, target);
}
#endif
