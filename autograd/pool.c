/* Pooling ops: max_pool2d and avg_pool2d over square windows of x[N,C,H,W].
 *
 * Both follow PyTorch: floor output sizes (ceil_mode = false), padding at most half the
 * kernel, max pool pads with -inf; avg pool either counts the padding as zeros and divides by
 * kernel * kernel (count_include_pad = true, PyTorch's default) or divides each window by the
 * real pixels it covers (count_include_pad = false, PaddlePaddle's exclusive). Every kernel
 * runs over the N*C planes, one plane per iteration, so the backward scatters stay inside one
 * plane and are race-free when the planes are split between threads. A fresh gradient
 * (tg_grad_fresh) is zeroed one plane at a time just before its scatter, while the plane is in
 * cache, instead of by the tape. */
#include "internal.h"
#include "ops.h"

#include "../tensor/parallel.h"
#include "window.h"

#include <math.h>
#include <string.h>

typedef struct {
    int kernel, stride, padding;
    bool count_include_pad; /* avg pool only; max pool ignores it */
} pool_params;

/* Shape checks shared by both pools: x[N,C,H,W] -> [N,C,Ho,Wo] with
 * Ho = (H + 2 padding - kernel) / stride + 1 (floor), the same for W. */
static tg_status pool_check(tg_node *n, int *ndim, int64_t shape[], const char *fn)
{
    const tg_tensor *x = n->in[0];
    const pool_params *p = TG_PARAMS(n, pool_params);
    char sx[160];
    if (x->ndim != 4)
        return tg_set_error(TG_ERR_SHAPE, "%s: x %s must be 4-D [N, C, H, W]", fn,
                            TG_SHAPE_STR(x, sx));
    if (p->kernel < 1)
        return tg_set_error(TG_ERR_ARG, "%s: kernel %d must be >= 1", fn, p->kernel);
    if (p->stride < 1)
        return tg_set_error(TG_ERR_ARG, "%s: stride %d must be >= 1", fn, p->stride);
    if (p->padding < 0 || p->padding > p->kernel / 2)
        return tg_set_error(TG_ERR_ARG,
                            "%s: padding %d must be in 0..kernel/2 = %d "
                            "(kernel %d)",
                            fn, p->padding, p->kernel / 2, p->kernel);
    int64_t H = x->shape[2], W = x->shape[3];
    /* An empty plane would leave max pool windows with no element at all. */
    if (H < 1 || W < 1)
        return tg_set_error(TG_ERR_SHAPE, "%s: x %s: H and W must be at least 1", fn,
                            TG_SHAPE_STR(x, sx));
    int64_t Ho, Wo;
    if (!tg_window_out_size(H, p->kernel, p->stride, p->padding, 1, &Ho) ||
        !tg_window_out_size(W, p->kernel, p->stride, p->padding, 1, &Wo))
        return tg_set_error(TG_ERR_SHAPE,
                            "%s: x %s with kernel %d, stride %d, padding %d: the output size "
                            "overflows int64",
                            fn, TG_SHAPE_STR(x, sx), p->kernel, p->stride, p->padding);
    /* Floor sizes: an output of 0 or less means a padded input smaller than the kernel (the
     * sums below cannot overflow: tg_window_out_size computed them). */
    if (Ho < 1 || Wo < 1)
        return tg_set_error(TG_ERR_SHAPE,
                            "%s: x %s with kernel %d, stride %d, padding %d: "
                            "the padded input %lld x %lld is smaller than the kernel, so the "
                            "output would be empty",
                            fn, TG_SHAPE_STR(x, sx), p->kernel, p->stride, p->padding,
                            (long long)(H + 2 * (int64_t)p->padding),
                            (long long)(W + 2 * (int64_t)p->padding));
    *ndim = 4;
    shape[0] = x->shape[0];
    shape[1] = x->shape[1];
    shape[2] = Ho;
    shape[3] = Wo;
    if (tg_shape_numel(4, shape) < 0) {
        char so[160];
        return tg_set_error(TG_ERR_SHAPE,
                            "%s: x %s with kernel %d, stride %d, padding %d gives an output %s "
                            "of too many elements",
                            fn, TG_SHAPE_STR(x, sx), p->kernel, p->stride, p->padding,
                            tg_shape_str(4, shape, so, sizeof so));
    }
    return TG_OK;
}

/* Elements a kernel reads per plane, as the cost hint of its loop over P planes: the output
 * plane times the window clipped to the input, saturated so that P times it stays an int64. */
static int64_t pool_plane_work(const tg_node *n, int64_t P)
{
    const pool_params *p = TG_PARAMS(n, pool_params);
    const tg_tensor *x = n->in[0], *y = n->out;
    int64_t kh = p->kernel < x->shape[2] ? p->kernel : x->shape[2];
    int64_t kw = p->kernel < x->shape[3] ? p->kernel : x->shape[3];
    int64_t work, cap = INT64_MAX / (P > 1 ? P : 1);
    if (__builtin_mul_overflow(y->shape[2] * y->shape[3], kh * kw, &work) || work > cap)
        return cap;
    return work;
}

/* The divisor of avg pool for the window [h0, h1) x [w0, w1) clipped to the input: kernel *
 * kernel (in int64: the int product overflows above 46340) when the padding counts, else the
 * pixels the window covers. That is never 0: with padding <= kernel / 2 every window reaches
 * at least one real pixel. */
static inline float pool_area(const pool_params *p, int64_t h0, int64_t h1, int64_t w0, int64_t w1)
{
    return (float)(p->count_include_pad ? (int64_t)p->kernel * p->kernel : (h1 - h0) * (w1 - w0));
}

/* The window of output index o along an axis of size L: [*lo, *hi) clipped to the input. */
static inline void pool_window(int64_t o, const pool_params *p, int64_t L, int64_t *lo, int64_t *hi)
{
    int64_t start = o * p->stride - p->padding;
    int64_t end = start + p->kernel;
    *lo = start < 0 ? 0 : start;
    *hi = end > L ? L : end;
}

/* ---- max_pool2d ---------------------------------------------------------------------------
 * y[n,c,oh,ow] = max of x over the window; the flat in-plane index of the maximum is saved
 * (int32 in scratch) and dx[n,c,argmax] += dy[n,c,oh,ow]. Ties go to the first maximal element
 * in row-major window order, as PyTorch's; a NaN wins, so it propagates. */
static tg_status max_pool2d_check(tg_node *n, int *ndim, int64_t shape[])
{
    tg_status st = pool_check(n, ndim, shape, "tg_max_pool2d");
    if (st != TG_OK)
        return st;
    const tg_tensor *x = n->in[0];
    if (x->shape[2] * x->shape[3] > INT32_MAX) {
        char sx[160];
        return tg_set_error(TG_ERR_SHAPE,
                            "tg_max_pool2d: x %s: an H x W plane of %lld "
                            "elements is more than the int32 argmax indices address",
                            TG_SHAPE_STR(x, sx), (long long)(x->shape[2] * x->shape[3]));
    }
    n->scratch_bytes = (size_t)tg_shape_numel(4, shape) * sizeof(int32_t);
    return TG_OK;
}

TG_ISA_KERNEL(max_pool2d_forward, (tg_node * n), (n))
{
    const pool_params *p = TG_PARAMS(n, pool_params);
    const tg_tensor *x = n->in[0];
    int64_t P = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
    int64_t Ho = n->out->shape[2], Wo = n->out->shape[3];
    const float *xd = x->data;
    float *yd = n->out->data;
    int32_t *arg = n->scratch;
    TG_PARALLEL_FOR_WORK(P, pool_plane_work(n, P))
    for (int64_t pl = 0; pl < P; pl++) {
        const float *xp = xd + pl * H * W;
        float *yp = yd + pl * Ho * Wo;
        int32_t *ap = arg + pl * Ho * Wo;
        for (int64_t oh = 0; oh < Ho; oh++) {
            int64_t h0, h1;
            pool_window(oh, p, H, &h0, &h1);
            for (int64_t ow = 0; ow < Wo; ow++) {
                int64_t w0, w1;
                pool_window(ow, p, W, &w0, &w1);
                /* H, W >= 1 and padding <= kernel/2 keep a real element in every window.
                 * Selects, not branches: which element wins depends on the data, and a
                 * branch on it mispredicted about once per window (3.6x slower). */
                int64_t best_i = h0 * W + w0;
                float best = -INFINITY;
                bool nan_seen = false;
                for (int64_t h = h0; h < h1; h++) {
                    for (int64_t w = w0; w < w1; w++) {
                        float v = xp[h * W + w];
                        bool gt = v > best;
                        best = gt ? v : best;
                        best_i = gt ? h * W + w : best_i;
                        nan_seen |= v != v;
                    }
                }
                if (nan_seen) {
                    /* PyTorch's rule, val > max || isnan(val): the last NaN wins. */
                    for (int64_t h = h0; h < h1; h++)
                        for (int64_t w = w0; w < w1; w++)
                            if (isnan(xp[h * W + w]))
                                best_i = h * W + w;
                    best = xp[best_i];
                }
                yp[oh * Wo + ow] = best;
                ap[oh * Wo + ow] = (int32_t)best_i;
            }
        }
    }
}

TG_ISA_KERNEL(max_pool2d_backward, (tg_node * n), (n))
{
    float *dx = tg_grad_of(n, 0);
    if (!dx)
        return;
    const tg_tensor *x = n->in[0];
    int64_t P = x->shape[0] * x->shape[1], HW = x->shape[2] * x->shape[3];
    int64_t HWo = n->out->shape[2] * n->out->shape[3];
    const float *dy = n->out->grad->data;
    const int32_t *arg = n->scratch;
    const bool fresh = tg_grad_fresh(n, 0);
    TG_PARALLEL_FOR_WORK(P, HWo)
    for (int64_t pl = 0; pl < P; pl++) {
        float *dxp = dx + pl * HW;
        const float *dyp = dy + pl * HWo;
        const int32_t *ap = arg + pl * HWo;
        if (fresh)
            memset(dxp, 0, sizeof(float) * (size_t)HW);
        for (int64_t o = 0; o < HWo; o++)
            dxp[ap[o]] += dyp[o];
    }
}

/* Fills t with a shuffled arithmetic sequence (step 0.07, centred on 0): all values in a
 * window differ by far more than the finite-difference step, so no tie is crossed. */
static void max_pool2d_init(int i, tg_tensor *t, tg_rng *rng)
{
    (void)i;
    int64_t perm[512];
    TG_ASSERT(t->numel <= 512);
    tg_rng_permutation(rng, t->numel, perm);
    for (int64_t e = 0; e < t->numel; e++)
        t->data[e] = 0.07f * (float)(perm[e] - t->numel / 2);
}

static const tg_case max_pool2d_cases[] = {
    {.shape = {{2, 2, 4, 6}},
     TG_CASE_PARAMS(pool_params, 2, 2, 0, false),
     .init = max_pool2d_init,
     .name = "k2s2"},
    {.shape = {{2, 2, 5, 6}},
     TG_CASE_PARAMS(pool_params, 3, 2, 1, false),
     .init = max_pool2d_init,
     .name = "k3s2p1"},
    {.shape = {{1, 2, 5, 6}},
     TG_CASE_PARAMS(pool_params, 3, 1, 0, false),
     .init = max_pool2d_init,
     .name = "k3s1_overlap"},
    {.shape = {{2, 1, 4, 5}},
     TG_CASE_PARAMS(pool_params, 2, 1, 1, false),
     .init = max_pool2d_init,
     .name = "k2s1p1"},
    {0},
};
TG_OP_DEFINE(max_pool2d) = {.name = "max_pool2d",
                            .n_in = 1,
                            .check = max_pool2d_check,
                            .forward = max_pool2d_forward,
                            .backward = max_pool2d_backward,
                            .cases = max_pool2d_cases,
                            .fresh_grads = true};

#if TG_ISA_BASE
tg_tensor *tg_max_pool2d(tg_tensor *x, int kernel, int stride, int padding)
{
    pool_params p = {kernel, stride, padding, false};
    return tg_apply1(&tg_op_max_pool2d, &p, sizeof p, x);
}
#endif

/* ---- avg_pool2d ---------------------------------------------------------------------------
 * y[n,c,oh,ow] = (sum of x over the window's real elements) / area;
 * dx[n,c,h,w] += dy[n,c,oh,ow] / area for every window holding (h, w), where area is
 * kernel * kernel with count_include_pad, else the window's real elements (pool_area). */
static tg_status avg_pool2d_check(tg_node *n, int *ndim, int64_t shape[])
{
    return pool_check(n, ndim, shape, "tg_avg_pool2d");
}

TG_ISA_KERNEL(avg_pool2d_forward, (tg_node * n), (n))
{
    const pool_params *p = TG_PARAMS(n, pool_params);
    const tg_tensor *x = n->in[0];
    int64_t P = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
    int64_t Ho = n->out->shape[2], Wo = n->out->shape[3];
    /* With floor output sizes every window lies inside the padded input, so counting the
     * padding always divides by the full window, as PyTorch's count_include_pad = true. */
    const float *xd = x->data;
    float *yd = n->out->data;
    TG_PARALLEL_FOR_WORK(P, pool_plane_work(n, P))
    for (int64_t pl = 0; pl < P; pl++) {
        const float *xp = xd + pl * H * W;
        float *yp = yd + pl * Ho * Wo;
        for (int64_t oh = 0; oh < Ho; oh++) {
            int64_t h0, h1;
            pool_window(oh, p, H, &h0, &h1);
            for (int64_t ow = 0; ow < Wo; ow++) {
                int64_t w0, w1;
                pool_window(ow, p, W, &w0, &w1);
                float sum = 0.0f;
                for (int64_t h = h0; h < h1; h++)
                    for (int64_t w = w0; w < w1; w++)
                        sum += xp[h * W + w];
                yp[oh * Wo + ow] = sum / pool_area(p, h0, h1, w0, w1);
            }
        }
    }
}

TG_ISA_KERNEL(avg_pool2d_backward, (tg_node * n), (n))
{
    float *dx = tg_grad_of(n, 0);
    if (!dx)
        return;
    const pool_params *p = TG_PARAMS(n, pool_params);
    const tg_tensor *x = n->in[0];
    int64_t P = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
    int64_t Ho = n->out->shape[2], Wo = n->out->shape[3];
    const float *dy = n->out->grad->data;
    const bool fresh = tg_grad_fresh(n, 0);
    TG_PARALLEL_FOR_WORK(P, pool_plane_work(n, P))
    for (int64_t pl = 0; pl < P; pl++) {
        float *dxp = dx + pl * H * W;
        const float *dyp = dy + pl * Ho * Wo;
        if (fresh)
            memset(dxp, 0, sizeof(float) * (size_t)(H * W));
        for (int64_t oh = 0; oh < Ho; oh++) {
            int64_t h0, h1;
            pool_window(oh, p, H, &h0, &h1);
            for (int64_t ow = 0; ow < Wo; ow++) {
                int64_t w0, w1;
                pool_window(ow, p, W, &w0, &w1);
                float g = dyp[oh * Wo + ow] / pool_area(p, h0, h1, w0, w1);
                for (int64_t h = h0; h < h1; h++)
                    for (int64_t w = w0; w < w1; w++)
                        dxp[h * W + w] += g;
            }
        }
    }
}

static const tg_case avg_pool2d_cases[] = {
    {.shape = {{2, 2, 4, 6}}, TG_CASE_PARAMS(pool_params, 2, 2, 0, true), .name = "k2s2"},
    {.shape = {{2, 2, 5, 6}}, TG_CASE_PARAMS(pool_params, 3, 2, 1, true), .name = "k3s2p1"},
    {.shape = {{1, 2, 5, 6}}, TG_CASE_PARAMS(pool_params, 3, 1, 0, true), .name = "k3s1_overlap"},
    {.shape = {{2, 1, 4, 5}}, TG_CASE_PARAMS(pool_params, 3, 1, 1, true), .name = "k3s1p1"},
    /* count_include_pad = false: windows over the padding divide by fewer pixels. */
    {.shape = {{2, 2, 5, 6}}, TG_CASE_PARAMS(pool_params, 3, 2, 1, false), .name = "k3s2p1_excl"},
    {.shape = {{2, 1, 4, 5}}, TG_CASE_PARAMS(pool_params, 2, 1, 1, false), .name = "k2s1p1_excl"},
    {0},
};
TG_OP_DEFINE(avg_pool2d) = {.name = "avg_pool2d",
                            .n_in = 1,
                            .check = avg_pool2d_check,
                            .forward = avg_pool2d_forward,
                            .backward = avg_pool2d_backward,
                            .cases = avg_pool2d_cases,
                            .fresh_grads = true};

#if TG_ISA_BASE
tg_tensor *tg_avg_pool2d(tg_tensor *x, int kernel, int stride, int padding, bool count_include_pad)
{
    pool_params p = {kernel, stride, padding, count_include_pad};
    return tg_apply1(&tg_op_avg_pool2d, &p, sizeof p, x);
}
#endif
