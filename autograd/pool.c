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
#include "pool_internal.h"

#include "../tensor/parallel.h"
#include "window.h"

#include <math.h>
#include <string.h>

typedef struct {
    int kernel, stride, padding;
    bool count_include_pad; /* avg pool only; max pool ignores it */
} pool_params;

/* avg_pool2d_backward's: the pool's params and the H and W of the x it pooled. */
typedef struct {
    pool_params pool;
    int64_t H, W;
} pool_grad_params;

/* Shape checks shared by both pools: x[N,C,H,W] -> [N,C,Ho,Wo] with
 * Ho = (H + 2 padding - kernel) / stride + 1 (floor), the same for W; x is given by its shape
 * xs (a backward op checks the x it produces). */
static tg_status pool_check(const pool_params *p, int xndim, const int64_t *xs, int *ndim,
                            int64_t shape[], const char *fn)
{
    char sx[160];
    if (xndim != 4)
        return tg_set_error(TG_ERR_SHAPE, "%s: x %s must be 4-D [N, C, H, W]", fn,
                            tg_shape_str(xndim, xs, sx, sizeof sx));
    if (p->kernel < 1)
        return tg_set_error(TG_ERR_ARG, "%s: kernel %d must be >= 1", fn, p->kernel);
    if (p->stride < 1)
        return tg_set_error(TG_ERR_ARG, "%s: stride %d must be >= 1", fn, p->stride);
    if (p->padding < 0 || p->padding > p->kernel / 2)
        return tg_set_error(TG_ERR_ARG,
                            "%s: padding %d must be in 0..kernel/2 = %d "
                            "(kernel %d)",
                            fn, p->padding, p->kernel / 2, p->kernel);
    int64_t H = xs[2], W = xs[3];
    /* An empty plane would leave max pool windows with no element at all. */
    if (H < 1 || W < 1)
        return tg_set_error(TG_ERR_SHAPE, "%s: x %s: H and W must be at least 1", fn,
                            tg_shape_str(xndim, xs, sx, sizeof sx));
    int64_t Ho, Wo;
    if (!tg_window_out_size(H, p->kernel, p->stride, p->padding, 1, &Ho) ||
        !tg_window_out_size(W, p->kernel, p->stride, p->padding, 1, &Wo))
        return tg_set_error(TG_ERR_SHAPE,
                            "%s: x %s with kernel %d, stride %d, padding %d: the output size "
                            "overflows int64",
                            fn, tg_shape_str(xndim, xs, sx, sizeof sx), p->kernel, p->stride,
                            p->padding);
    /* Floor sizes: an output of 0 or less means a padded input smaller than the kernel (the
     * sums below cannot overflow: tg_window_out_size computed them). */
    if (Ho < 1 || Wo < 1)
        return tg_set_error(TG_ERR_SHAPE,
                            "%s: x %s with kernel %d, stride %d, padding %d: "
                            "the padded input %lld x %lld is smaller than the kernel, so the "
                            "output would be empty",
                            fn, tg_shape_str(xndim, xs, sx, sizeof sx), p->kernel, p->stride,
                            p->padding, (long long)(H + 2 * (int64_t)p->padding),
                            (long long)(W + 2 * (int64_t)p->padding));
    *ndim = 4;
    shape[0] = xs[0];
    shape[1] = xs[1];
    shape[2] = Ho;
    shape[3] = Wo;
    if (tg_shape_numel(4, shape) < 0) {
        char so[160];
        return tg_set_error(TG_ERR_SHAPE,
                            "%s: x %s with kernel %d, stride %d, padding %d gives an output %s "
                            "of too many elements",
                            fn, tg_shape_str(xndim, xs, sx, sizeof sx), p->kernel, p->stride,
                            p->padding, tg_shape_str(4, shape, so, sizeof so));
    }
    return TG_OK;
}

/* The sizes a pool's kernels loop over: P = N * C planes of H x W pooled into Ho x Wo. The
 * pool's own nodes read them from (x, y); its backward ops from their g and output. */
typedef struct {
    int64_t P, H, W, Ho, Wo;
} pool_dims;

static pool_dims pool_dims_of(const tg_tensor *x, const tg_tensor *y)
{
    return (pool_dims){x->shape[0] * x->shape[1], x->shape[2], x->shape[3], y->shape[2],
                       y->shape[3]};
}

/* Elements a kernel reads per plane, as the cost hint of its loop over P planes: the output
 * plane times the window clipped to the input, saturated so that P times it stays an int64. */
static int64_t pool_plane_work(const pool_params *p, pool_dims d)
{
    int64_t kh = p->kernel < d.H ? p->kernel : d.H;
    int64_t kw = p->kernel < d.W ? p->kernel : d.W;
    int64_t work, cap = INT64_MAX / (d.P > 1 ? d.P : 1);
    if (__builtin_mul_overflow(d.Ho * d.Wo, kh * kw, &work) || work > cap)
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
/* max_pool2d's checks of x (n->in[0]) for fn; the output shape is the pooled one. */
static tg_status max_pool_check(tg_node *n, int *ndim, int64_t shape[], const char *fn)
{
    const tg_tensor *x = n->in[0];
    tg_status st = pool_check(TG_PARAMS(n, pool_params), x->ndim, x->shape, ndim, shape, fn);
    if (st != TG_OK)
        return st;
    if (x->shape[2] * x->shape[3] > INT32_MAX) {
        char sx[160];
        return tg_set_error(TG_ERR_SHAPE,
                            "%s: x %s: an H x W plane of %lld "
                            "elements is more than the int32 argmax indices address",
                            fn, TG_SHAPE_STR(x, sx), (long long)(x->shape[2] * x->shape[3]));
    }
    n->scratch_bytes = (size_t)tg_shape_numel(4, shape) * sizeof(int32_t);
    return TG_OK;
}

static tg_status max_pool2d_check(tg_node *n, int *ndim, int64_t shape[])
{
    return max_pool_check(n, ndim, shape, "tg_max_pool2d");
}

/* The window maxima of x's planes into yd and their flat in-plane indices into arg. */
static void max_pool2d_run(const pool_params *p, const float *xd, pool_dims d, float *yd,
                           int32_t *arg)
{
    int64_t P = d.P, H = d.H, W = d.W, Ho = d.Ho, Wo = d.Wo;
    const bool k2s2 = p->kernel == 2 && p->stride == 2 && p->padding == 0;
    TG_PARALLEL_FOR_WORK(P, pool_plane_work(p, d))
    for (int64_t pl = 0; pl < P; pl++) {
        const float *xp = xd + pl * H * W;
        float *yp = yd + pl * Ho * Wo;
        int32_t *ap = arg + pl * Ho * Wo;
        if (k2s2) {
            for (int64_t oh = 0; oh < Ho; oh++)
                max_pool_2x2_row(xp + 2 * oh * W, xp + (2 * oh + 1) * W, xd + P * H * W, W,
                                 2 * oh * W, Wo, yp + oh * Wo, ap + oh * Wo);
            continue;
        }
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

TG_ISA_KERNEL(max_pool2d_forward, (tg_node * n), (n))
{
    max_pool2d_run(TG_PARAMS(n, pool_params), n->in[0]->data, pool_dims_of(n->in[0], n->out),
                   n->out->data, n->scratch);
}

/* dx[pl, arg[o]] += dy[pl, o] over the planes; fresh: dx is uninitialised and assigned. */
static void max_pool2d_scatter(pool_dims d, const int32_t *arg, const float *dy, float *dx,
                               bool fresh)
{
    int64_t P = d.P, HW = d.H * d.W, HWo = d.Ho * d.Wo;
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

TG_ISA_KERNEL(max_pool2d_backward, (tg_node * n), (n))
{
    float *dx = tg_grad_of(n, 0);
    if (!dx)
        return;
    max_pool2d_scatter(pool_dims_of(n->in[0], n->out), n->scratch, n->out->grad->data, dx,
                       tg_grad_fresh(n, 0));
}

/* Second order: dx = max_pool2d_backward(x, dy), the same scatter to the maxima of x as a
 * recorded op. The positions are piecewise constant in x, so x goes in detached: no gradient
 * buffer or walk step for it in the next backward. */
static tg_status max_pool2d_backward_graph(tg_node *n, tg_tensor *gout, uint32_t need,
                                           tg_tensor **gin)
{
    (void)need; /* one input: the walk calls this only when it is needed */
    tg_tensor *x = tg_detach(n->in[0]);
    gin[0] =
        x ? tg_apply2(&tg_op_max_pool2d_backward, n->params, sizeof(pool_params), x, gout) : NULL;
    return gin[0] ? TG_OK : tg_last_status();
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
                            .backward_graph = max_pool2d_backward_graph,
                            .cases = max_pool2d_cases,
                            .fresh_grads = true};

#if TG_ISA_BASE
tg_tensor *tg_max_pool2d(tg_tensor *x, int kernel, int stride, int padding)
{
    pool_params p = {kernel, stride, padding, false};
    return tg_apply1(&tg_op_max_pool2d, &p, sizeof p, x);
}

tg_tensor *tg_max_pool2d_backward_2x2(tg_tensor *x, tg_tensor *g)
{
    pool_params p = {2, 2, 0, false};
    return tg_apply2(&tg_op_max_pool2d_backward, &p, sizeof p, x, g);
}
#endif

/* ---- max_pool2d_backward (internal: max_pool2d's second order) --------------------------------
 * (x[N,C,H,W], g[N,C,Ho,Wo]) -> dx[N,C,H,W]: g scattered to the window maxima of x, found by
 * max_pool2d's own kernel (so the positions are the first-order backward's) and kept in scratch
 * as int32 positions followed by the maxima, which are not used. Linear in g: dg[o] =
 * dout[argmax(o)], a gather; x gets no gradient (the positions are piecewise constant in x). */
static tg_status max_pool2d_bw_check(tg_node *n, int *ndim, int64_t shape[])
{
    const char *fn = "max_pool2d_backward";
    const tg_tensor *x = n->in[0], *g = n->in[1];
    if (max_pool_check(n, ndim, shape, fn) != TG_OK)
        return tg_last_status();
    if (g->ndim != 4 || memcmp(g->shape, shape, 4 * sizeof(int64_t)) != 0) {
        char sg[160], sp[160];
        return tg_set_error(TG_ERR_SHAPE, "%s: g %s is not the pooled shape %s", fn,
                            TG_SHAPE_STR(g, sg), tg_shape_str(4, shape, sp, sizeof sp));
    }
    n->scratch_bytes = (size_t)g->numel * (sizeof(int32_t) + sizeof(float));
    memcpy(shape, x->shape, 4 * sizeof(int64_t));
    return TG_OK;
}

TG_ISA_KERNEL(max_pool2d_bw_forward, (tg_node * n), (n))
{
    pool_dims d = pool_dims_of(n->in[0], n->in[1]);
    int32_t *arg = n->scratch;
    if (!arg) { /* an empty g (no scratch): nothing lands anywhere */
        if (n->out->numel)
            memset(n->out->data, 0, (size_t)n->out->numel * sizeof(float));
        return;
    }
    float *maxima = (float *)(void *)(arg + n->in[1]->numel);
    max_pool2d_run(TG_PARAMS(n, pool_params), n->in[0]->data, d, maxima, arg);
    max_pool2d_scatter(d, arg, n->in[1]->data, n->out->data, true);
}

/* dg[pl, o] += dout[pl, arg[pl, o]]. */
static void max_pool2d_bw_backward(tg_node *n)
{
    float *dg = tg_grad_of(n, 1);
    if (!dg)
        return;
    pool_dims d = pool_dims_of(n->in[0], n->in[1]);
    int64_t HW = d.H * d.W, HWo = d.Ho * d.Wo;
    const float *dout = n->out->grad->data;
    const int32_t *arg = n->scratch;
    TG_PARALLEL_FOR_WORK(d.P, HWo)
    for (int64_t pl = 0; pl < d.P; pl++)
        for (int64_t o = pl * HWo; o < (pl + 1) * HWo; o++)
            dg[o] += dout[pl * HW + arg[o]];
}

/* Third order: dg = dout gathered at the saved positions, as a recorded tg_gather of dout seen
 * as [P, H*W] by an index [P, Ho*Wo] of the positions; nothing for x. */
static tg_status max_pool2d_bw_graph(tg_node *n, tg_tensor *gout, uint32_t need, tg_tensor **gin)
{
    if (!tg_graph_needs(need, 1))
        return TG_OK;
    const tg_tensor *g = n->in[1];
    pool_dims d = pool_dims_of(n->in[0], g);
    const int32_t *arg = n->scratch;
    tg_index *ix = tg_index_new(2, (int64_t[]){d.P, d.Ho * d.Wo}, NULL);
    for (int64_t e = 0; ix && e < ix->numel; e++)
        ix->data[e] = arg[e];
    if (!(ix = tg_tape_adopt_index(ix, "max_pool2d_backward")))
        return tg_last_status();
    tg_tensor *planes = tg_reshape(gout, 2, (int64_t[]){d.P, d.H * d.W});
    gin[1] = tg_reshape(tg_gather(planes, 1, ix), g->ndim, g->shape);
    return gin[1] ? TG_OK : tg_last_status();
}

/* x (input 0) as max_pool2d's cases draw it, distinct values; g (input 1) uniform. */
static void max_pool2d_bw_init(int i, tg_tensor *t, tg_rng *rng)
{
    if (i == 0)
        max_pool2d_init(i, t, rng);
    else
        tg_tensor_uniform_(t, rng, -1.0f, 1.0f);
}

static const tg_case max_pool2d_bw_cases[] = {
    {.shape = {{2, 2, 4, 6}, {2, 2, 2, 3}},
     TG_CASE_PARAMS(pool_params, 2, 2, 0, false),
     .no_grad = 1,
     .init = max_pool2d_bw_init,
     .name = "k2s2"},
    {.shape = {{2, 2, 5, 6}, {2, 2, 3, 3}},
     TG_CASE_PARAMS(pool_params, 3, 2, 1, false),
     .no_grad = 1,
     .init = max_pool2d_bw_init,
     .name = "k3s2p1"},
    {.shape = {{1, 2, 5, 6}, {1, 2, 3, 4}},
     TG_CASE_PARAMS(pool_params, 3, 1, 0, false),
     .no_grad = 1,
     .init = max_pool2d_bw_init,
     .name = "k3s1_overlap"},
    {0},
};
TG_OP_DEFINE(max_pool2d_backward) = {.name = "max_pool2d_backward",
                                     .n_in = 2,
                                     .check = max_pool2d_bw_check,
                                     .forward = max_pool2d_bw_forward,
                                     .backward = max_pool2d_bw_backward,
                                     .backward_graph = max_pool2d_bw_graph,
                                     .cases = max_pool2d_bw_cases};

/* ---- avg_pool2d ---------------------------------------------------------------------------
 * y[n,c,oh,ow] = (sum of x over the window's real elements) / area;
 * dx[n,c,h,w] += dy[n,c,oh,ow] / area for every window holding (h, w), where area is
 * kernel * kernel with count_include_pad, else the window's real elements (pool_area). */
static tg_status avg_pool2d_check(tg_node *n, int *ndim, int64_t shape[])
{
    const tg_tensor *x = n->in[0];
    return pool_check(TG_PARAMS(n, pool_params), x->ndim, x->shape, ndim, shape, "tg_avg_pool2d");
}

/* The window averages of x's planes (xd) into yd. */
static void avg_pool2d_run(const pool_params *p, pool_dims d, const float *xd, float *yd)
{
    int64_t P = d.P, H = d.H, W = d.W, Ho = d.Ho, Wo = d.Wo;
    /* With floor output sizes every window lies inside the padded input, so counting the
     * padding always divides by the full window, as PyTorch's count_include_pad = true. */
    TG_PARALLEL_FOR_WORK(P, pool_plane_work(p, d))
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

TG_ISA_KERNEL(avg_pool2d_forward, (tg_node * n), (n))
{
    avg_pool2d_run(TG_PARAMS(n, pool_params), pool_dims_of(n->in[0], n->out), n->in[0]->data,
                   n->out->data);
}

/* dx += each dy / area spread over its window; fresh: dx is uninitialised and assigned. */
static void avg_pool2d_scatter(const pool_params *p, pool_dims d, const float *dy, float *dx,
                               bool fresh)
{
    int64_t P = d.P, H = d.H, W = d.W, Ho = d.Ho, Wo = d.Wo;
    TG_PARALLEL_FOR_WORK(P, pool_plane_work(p, d))
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

TG_ISA_KERNEL(avg_pool2d_backward, (tg_node * n), (n))
{
    float *dx = tg_grad_of(n, 0);
    if (!dx)
        return;
    avg_pool2d_scatter(TG_PARAMS(n, pool_params), pool_dims_of(n->in[0], n->out),
                       n->out->grad->data, dx, tg_grad_fresh(n, 0));
}

/* Second order: dx = avg_pool2d_backward(dy), the same scatter as a recorded op. */
static tg_status avg_pool2d_backward_graph(tg_node *n, tg_tensor *gout, uint32_t need,
                                           tg_tensor **gin)
{
    (void)need; /* one input: the walk calls this only when it is needed */
    const tg_tensor *x = n->in[0];
    pool_grad_params q = {*TG_PARAMS(n, pool_params), x->shape[2], x->shape[3]};
    gin[0] = tg_apply1(&tg_op_avg_pool2d_backward, &q, sizeof q, gout);
    return gin[0] ? TG_OK : tg_last_status();
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
                            .backward_graph = avg_pool2d_backward_graph,
                            .cases = avg_pool2d_cases,
                            .fresh_grads = true};

#if TG_ISA_BASE
tg_tensor *tg_avg_pool2d(tg_tensor *x, int kernel, int stride, int padding, bool count_include_pad)
{
    pool_params p = {kernel, stride, padding, count_include_pad};
    return tg_apply1(&tg_op_avg_pool2d, &p, sizeof p, x);
}
#endif

/* ---- avg_pool2d_backward (internal: avg_pool2d's second order) --------------------------------
 * g[N,C,Ho,Wo] -> dx[N,C,H,W]: avg_pool2d's backward scatter as a forward. It is linear in g
 * and its adjoint is avg_pool2d itself with the same params (the same windows and areas):
 * dg = avg_pool2d(dout). */
static tg_status avg_pool2d_bw_check(tg_node *n, int *ndim, int64_t shape[])
{
    const pool_grad_params *q = TG_PARAMS(n, pool_grad_params);
    const tg_tensor *g = n->in[0];
    const char *fn = "avg_pool2d_backward";
    char sg[160];
    if (g->ndim != 4)
        return tg_set_error(TG_ERR_SHAPE, "%s: g %s must be 4-D [N, C, Ho, Wo]", fn,
                            TG_SHAPE_STR(g, sg));
    const int64_t xs[4] = {g->shape[0], g->shape[1], q->H, q->W};
    int pooled_ndim;
    int64_t pooled[TG_MAX_DIMS];
    if (pool_check(&q->pool, 4, xs, &pooled_ndim, pooled, fn) != TG_OK)
        return tg_last_status();
    if (pooled[2] != g->shape[2] || pooled[3] != g->shape[3]) {
        char sp[160];
        return tg_set_error(TG_ERR_SHAPE, "%s: g %s is not the pooled shape %s of H %lld, W %lld",
                            fn, TG_SHAPE_STR(g, sg), tg_shape_str(4, pooled, sp, sizeof sp),
                            (long long)q->H, (long long)q->W);
    }
    /* The backward's pooled values when g's gradient is not fresh (added from there). */
    n->scratch_bytes = (size_t)g->numel * sizeof(float);
    *ndim = 4;
    memcpy(shape, xs, sizeof xs);
    return TG_OK;
}

TG_ISA_KERNEL(avg_pool2d_bw_forward, (tg_node * n), (n))
{
    avg_pool2d_scatter(TG_PARAMS(n, pool_params), pool_dims_of(n->out, n->in[0]), n->in[0]->data,
                       n->out->data, true);
}

TG_ISA_KERNEL(avg_pool2d_bw_backward, (tg_node * n), (n))
{
    float *dg = tg_grad_of(n, 0);
    if (!dg)
        return;
    const bool fresh = tg_grad_fresh(n, 0);
    float *pooled = fresh ? dg : n->scratch;
    avg_pool2d_run(TG_PARAMS(n, pool_params), pool_dims_of(n->out, n->in[0]), n->out->grad->data,
                   pooled);
    if (!fresh)
        for (int64_t e = 0; e < n->in[0]->numel; e++)
            dg[e] += pooled[e];
}

/* Third order: dg = avg_pool2d(dout) as a recorded op. */
static tg_status avg_pool2d_bw_graph(tg_node *n, tg_tensor *gout, uint32_t need, tg_tensor **gin)
{
    (void)need;
    const pool_params *p = TG_PARAMS(n, pool_params);
    gin[0] = tg_avg_pool2d(gout, p->kernel, p->stride, p->padding, p->count_include_pad);
    return gin[0] ? TG_OK : tg_last_status();
}

static const tg_case avg_pool2d_bw_cases[] = {
    {.shape = {{2, 2, 2, 3}},
     TG_CASE_PARAMS(pool_grad_params, {2, 2, 0, true}, 4, 6),
     .name = "k2s2"},
    {.shape = {{2, 2, 3, 3}},
     TG_CASE_PARAMS(pool_grad_params, {3, 2, 1, true}, 5, 6),
     .name = "k3s2p1"},
    {.shape = {{1, 2, 3, 4}},
     TG_CASE_PARAMS(pool_grad_params, {3, 1, 0, true}, 5, 6),
     .name = "k3s1_overlap"},
    {.shape = {{2, 2, 3, 3}},
     TG_CASE_PARAMS(pool_grad_params, {3, 2, 1, false}, 5, 6),
     .name = "k3s2p1_excl"},
    {.shape = {{2, 1, 5, 6}},
     TG_CASE_PARAMS(pool_grad_params, {2, 1, 1, false}, 4, 5),
     .name = "k2s1p1_excl"},
    {0},
};
TG_OP_DEFINE(avg_pool2d_backward) = {.name = "avg_pool2d_backward",
                                     .n_in = 1,
                                     .check = avg_pool2d_bw_check,
                                     .forward = avg_pool2d_bw_forward,
                                     .backward = avg_pool2d_bw_backward,
                                     .backward_graph = avg_pool2d_bw_graph,
                                     .cases = avg_pool2d_bw_cases,
                                     .fresh_grads = true};
