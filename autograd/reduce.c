/* Reductions: sum and mean of all elements, and sum, mean and max along one axis.
 *
 * All five ops see their input as x[outer, len, inner]: the axis reduced is the middle one
 * (for the whole-tensor sum and mean, outer = inner = 1 and len = numel). The decomposition is
 * made once, in reduce_setup, and stored beside the user's parameters; one loop structure
 * (reduce_run) walks [outer, inner-tile] work items and hands each to a kernel for a
 * contiguous row (inner == 1) or for a tile of columns (inner > 1).
 *
 * Accuracy and determinism: sums accumulate in double. A row is cut into chunks whose length
 * depends only on the row's length; each chunk is summed with a SIMD double reduction, the
 * chunk sums are added in chunk order. Threads only ever split work at chunk or output
 * boundaries, so every result is bit-identical for any thread count. */
#include "internal.h"
#include "ops.h"

#include "../tensor/parallel.h"

#include <math.h>
#include <string.h>

/* A vectorised reduction loop (OpenMP SIMD; no threads). */
#ifdef _OPENMP
#define REDUCE_SIMD(clauses) TG_PRAGMA(omp simd clauses)
#else
#define REDUCE_SIMD(clauses)
#endif
/* The same for a float max reduction: clang's vectoriser takes one only under no-NaNs
 * (-ffast-math), and says so in a warning for every such loop; there the loop stays scalar. */
#if defined(__clang__)
#define REDUCE_SIMD_MAX(clauses)
#else
#define REDUCE_SIMD_MAX(clauses) REDUCE_SIMD(clauses)
#endif

/* Columns one work item of a column kernel handles (its accumulators live on the stack). */
#define REDUCE_TILE 128
/* Shortest chunk of a summed row; rows up to this length are one chunk. */
#define SUM_CHUNK_MIN 4096
/* Most chunks a row is cut into (longer rows get longer chunks): bounds the stack array. */
#define SUM_MAX_CHUNKS 1024

/* User parameters (cases and wrappers set them) and what check derives. */
typedef struct {
    int axis;           /* the axis reduced, negative counts from the end (axis ops only) */
    bool keepdim;       /* keep the reduced axis as size 1 (axis ops only) */
    int64_t correction; /* var and std: the divisor is len - correction */
    /* Set by check: x seen as [outer, len, inner], and the factor applied to sums. */
    int64_t outer, len, inner;
    double scale; /* 1 for sum, 1/len for mean, 1/(len - correction) for var and std */
    bool root;    /* std: the square root of the variance */
} reduce_params;

typedef enum { REDUCE_SUM, REDUCE_MAX, REDUCE_VAR } reduce_kind;

/* Validates the axis, derives [outer, len, inner] and the output shape. all: reduce every
 * element to a 0-d tensor (axis and keepdim ignored). */
static tg_status reduce_setup(tg_node *n, const char *fn, bool all, bool mean, int *ndim,
                              int64_t shape[])
{
    reduce_params *p = TG_PARAMS(n, reduce_params);
    const tg_tensor *x = n->in[0];
    char s[160];
    if (all) {
        p->outer = p->inner = 1;
        p->len = x->numel;
        *ndim = 0;
    } else {
        int axis = tg_axis(p->axis, x->ndim);
        if (axis < 0)
            return tg_set_error(TG_ERR_ARG, "%s: axis %d is out of range for %s", fn, p->axis,
                                TG_SHAPE_STR(x, s));
        p->outer = p->inner = 1;
        for (int a = 0; a < axis; a++)
            p->outer *= x->shape[a];
        for (int a = axis + 1; a < x->ndim; a++)
            p->inner *= x->shape[a];
        p->len = x->shape[axis];
        *ndim = 0;
        for (int a = 0; a < x->ndim; a++) {
            if (a != axis)
                shape[(*ndim)++] = x->shape[a];
            else if (p->keepdim)
                shape[(*ndim)++] = 1;
        }
    }
    /* Mean of nothing is NaN (0 * inf), as in PyTorch. */
    p->scale = mean ? 1.0 / (double)p->len : 1.0;
    return TG_OK;
}

/* ---- kernels ---------------------------------------------------------------------------- */

/* Sum of x[0..n) in double, or with sq of (x - mu)^2 (var's second pass), one SIMD
 * reduction. sq is a constant at every call: the branch folds away after inlining. */
static inline double sum_chunk(const float *x, int64_t n, bool sq, double mu)
{
    double s = 0.0;
    if (sq) {
        REDUCE_SIMD(reduction(+ : s))
        for (int64_t i = 0; i < n; i++) {
            const double d = (double)x[i] - mu;
            s += d * d;
        }
        return s;
    }
    REDUCE_SIMD(reduction(+ : s))
    for (int64_t i = 0; i < n; i++)
        s += (double)x[i];
    return s;
}

/* Chunk length for a row of n: a multiple of 64 floats, so that every chunk starts at the
 * same alignment relative to the row. */
static int64_t sum_chunk_len(int64_t n)
{
    int64_t c = (n + SUM_MAX_CHUNKS - 1) / SUM_MAX_CHUNKS;
    c = (c + 63) / 64 * 64;
    return c > SUM_CHUNK_MIN ? c : SUM_CHUNK_MIN;
}

/* Sum of a contiguous row in double (of (x - mu)^2 with sq): fixed chunks (sum_chunk_len),
 * added in order. parallel: sum the chunks on the thread team (same result, chunks do not
 * depend on threads). */
static inline double sum_row(const float *x, int64_t n, bool parallel, bool sq, double mu)
{
    int64_t clen = sum_chunk_len(n);
    if (n <= clen)
        return sum_chunk(x, n, sq, mu);
    int64_t nc = (n + clen - 1) / clen;
    double part[SUM_MAX_CHUNKS];
    if (parallel) {
        TG_PARALLEL_FOR_WORK(nc, clen)
        for (int64_t c = 0; c < nc; c++)
            part[c] = sum_chunk(x + c * clen, c == nc - 1 ? n - c * clen : clen, sq, mu);
    } else {
        for (int64_t c = 0; c < nc; c++)
            part[c] = sum_chunk(x + c * clen, c == nc - 1 ? n - c * clen : clen, sq, mu);
    }
    double s = 0.0;
    for (int64_t c = 0; c < nc; c++)
        s += part[c];
    return s;
}

/* Columns: y[i] = scale * sum_k x[k * stride + i] for i < w (one tile), accumulated in double
 * row by row so that the inner loop runs along contiguous memory. */
static void sum_cols(const float *x, int64_t len, int64_t stride, int64_t w, double scale, float *y)
{
    double acc[REDUCE_TILE] = {0};
    for (int64_t k = 0; k < len; k++) {
        const float *r = x + k * stride;
        for (int64_t i = 0; i < w; i++)
            acc[i] += (double)r[i];
    }
    for (int64_t i = 0; i < w; i++)
        y[i] = (float)(acc[i] * scale);
}

/* The variance of a contiguous row (len values): its mean in *mean, and y = the sum of squared
 * deviations times p->scale, or its square root. Two passes in double: the one-pass
 * sum-of-squares formula loses the variance to cancellation when |mean| >> std. */
static inline void var_row(const reduce_params *p, const float *x, bool parallel, float *y,
                           float *mean)
{
    const double mu = sum_row(x, p->len, parallel, false, 0.0) / (double)p->len;
    const double v = sum_row(x, p->len, parallel, true, mu) * p->scale;
    *mean = (float)mu;
    *y = (float)(p->root ? sqrt(v) : v);
}

/* Columns: the variance of x[k * stride + i] over k, for i < w (one tile), as var_row. */
static void var_cols(const reduce_params *p, const float *x, int64_t stride, int64_t w, float *y,
                     float *mean)
{
    double mu[REDUCE_TILE] = {0}, ss[REDUCE_TILE] = {0};
    for (int64_t k = 0; k < p->len; k++)
        for (int64_t i = 0; i < w; i++)
            mu[i] += (double)x[k * stride + i];
    for (int64_t i = 0; i < w; i++)
        mu[i] /= (double)p->len;
    for (int64_t k = 0; k < p->len; k++)
        for (int64_t i = 0; i < w; i++) {
            const double d = (double)x[k * stride + i] - mu[i];
            ss[i] += d * d;
        }
    for (int64_t i = 0; i < w; i++) {
        const double v = ss[i] * p->scale;
        mean[i] = (float)mu[i];
        y[i] = (float)(p->root ? sqrt(v) : v);
    }
}

/* Index of the first maximum of a contiguous row (len >= 1); the first NaN if there is one
 * (NaN propagates, as in PyTorch). Two vectorised passes: the value, then where it is. */
static int64_t max_row(const float *x, int64_t len)
{
    float m = x[0];
    int nan = 0;
    REDUCE_SIMD_MAX(reduction(max : m) reduction(| : nan))
    for (int64_t k = 0; k < len; k++) {
        m = x[k] > m ? x[k] : m;
        nan |= x[k] != x[k];
    }
    for (int64_t k = 0; k < len; k++)
        if (nan ? x[k] != x[k] : x[k] == m)
            return k;
    /* No element equals m: the max reduction's private copies start at a value OpenMP leaves to
     * the compiler (clang: -FLT_MAX, not -inf), which wins over a row of -inf only. Its first
     * element is then the maximum. */
    return 0;
}

/* Columns: the first maximum of x[k * stride + i] over k, for i < w (one tile). A later
 * element replaces the best only when strictly greater, or when it is the first NaN. */
static void max_cols(const float *x, int64_t len, int64_t stride, int64_t w, float *y, int64_t *arg)
{
    float best[REDUCE_TILE];
    int64_t at[REDUCE_TILE];
    for (int64_t i = 0; i < w; i++) {
        best[i] = x[i];
        at[i] = 0;
    }
    for (int64_t k = 1; k < len; k++) {
        const float *r = x + k * stride;
        for (int64_t i = 0; i < w; i++) {
            float v = r[i];
            bool take = v > best[i] || (v != v && best[i] == best[i]);
            best[i] = take ? v : best[i];
            at[i] = take ? k : at[i];
        }
    }
    memcpy(y, best, (size_t)w * sizeof(float));
    memcpy(arg, at, (size_t)w * sizeof(int64_t));
}

/* The one loop structure of every reduction: x[outer, len, inner] -> y[outer, inner]. Work
 * items are (outer index, tile of up to REDUCE_TILE columns); each output is computed by one
 * thread in a fixed order. aux receives, per output, the argmax index (max: int64_t) or the
 * mean (var: float). kind is a constant at every call, so the branches fold away after
 * inlining. */
static inline void reduce_run(reduce_kind kind, const reduce_params *p, const float *x, float *y,
                              void *aux)
{
    int64_t outer = p->outer, len = p->len, inner = p->inner;
    int64_t *arg = aux;
    float *mean = aux;
    if (outer * inner == 0)
        return;
    if (kind != REDUCE_MAX && outer == 1 && inner == 1) {
        /* One long row (the whole-tensor sum): split it across threads by chunks. */
        if (kind == REDUCE_SUM)
            y[0] = (float)(sum_row(x, len, true, false, 0.0) * p->scale);
        else
            var_row(p, x, true, y, mean);
        return;
    }
    int64_t tiles = inner == 1 ? 1 : (inner + REDUCE_TILE - 1) / REDUCE_TILE;
    int64_t items = outer * tiles;
    TG_PARALLEL_FOR_WORK(items, len * (inner < REDUCE_TILE ? inner : REDUCE_TILE))
    for (int64_t it = 0; it < items; it++) {
        int64_t o = it / tiles, i0 = (it % tiles) * REDUCE_TILE;
        const float *xs = x + o * len * inner + i0;
        int64_t j = o * inner + i0; /* first output of this item */
        if (inner == 1) {
            if (kind == REDUCE_SUM) {
                y[j] = (float)(sum_row(xs, len, false, false, 0.0) * p->scale);
            } else if (kind == REDUCE_VAR) {
                var_row(p, xs, false, y + j, mean + j);
            } else {
                arg[j] = max_row(xs, len);
                y[j] = xs[arg[j]];
            }
        } else {
            int64_t w = inner - i0 < REDUCE_TILE ? inner - i0 : REDUCE_TILE;
            if (kind == REDUCE_SUM)
                sum_cols(xs, len, inner, w, p->scale, y + j);
            else if (kind == REDUCE_VAR)
                var_cols(p, xs, inner, w, y + j, mean + j);
            else
                max_cols(xs, len, inner, w, y + j, arg + j);
        }
    }
}

/* ---- sum and mean (all elements or one axis) ----------------------------------------------
 * y[o, i] = scale * sum_k x[o, k, i];   dx[o, k, i] += scale * dy[o, i]
 * (scale = 1 for sum, 1/len for mean: the four ops share forward and backward) */
static tg_status sum_check(tg_node *n, int *ndim, int64_t shape[])
{
    return reduce_setup(n, "tg_sum", true, false, ndim, shape);
}

static tg_status mean_check(tg_node *n, int *ndim, int64_t shape[])
{
    return reduce_setup(n, "tg_mean", true, true, ndim, shape);
}

static tg_status sum_axis_check(tg_node *n, int *ndim, int64_t shape[])
{
    return reduce_setup(n, "tg_sum_axis", false, false, ndim, shape);
}

static tg_status mean_axis_check(tg_node *n, int *ndim, int64_t shape[])
{
    return reduce_setup(n, "tg_mean_axis", false, true, ndim, shape);
}

TG_ISA_KERNEL(sum_forward, (tg_node * n), (n))
{
    reduce_run(REDUCE_SUM, TG_PARAMS(n, reduce_params), n->in[0]->data, n->out->data, NULL);
}

TG_ISA_KERNEL(sum_backward, (tg_node * n), (n))
{
    const reduce_params *p = TG_PARAMS(n, reduce_params);
    int64_t outer = p->outer, len = p->len, inner = p->inner;
    const float *dy = n->out->grad->data;
    float *dx = tg_grad_of(n, 0);
    /* An empty x: its rows (outer * len) may be as many as an int64 holds, each of 0 values. */
    if (!dx || n->in[0]->numel == 0)
        return;
    float scale = (float)p->scale;
    if (inner == 1) {
        /* Each dy[o] spreads over a contiguous row of dx. */
        if (outer == 1) {
            float g = scale * dy[0];
            TG_PARALLEL_FOR(len)
            for (int64_t k = 0; k < len; k++)
                dx[k] += g;
        } else {
            TG_PARALLEL_FOR_WORK(outer, len)
            for (int64_t o = 0; o < outer; o++) {
                float g = scale * dy[o];
                float *row = dx + o * len;
                for (int64_t k = 0; k < len; k++)
                    row[k] += g;
            }
        }
        return;
    }
    /* dy[o, :] is added to each of the len rows dx[o, k, :]. */
    TG_PARALLEL_FOR_WORK(outer * len, inner)
    for (int64_t ok = 0; ok < outer * len; ok++) {
        const float *g = dy + (ok / len) * inner;
        float *row = dx + ok * inner;
        for (int64_t i = 0; i < inner; i++)
            row[i] += scale * g[i];
    }
}

/* For a second-order rule: g (shaped like y) viewed with the reduced axes kept as size 1, so
 * that it broadcasts against x (every axis for sum and mean, the one axis otherwise). */
static tg_tensor *reduce_keepdim(const tg_node *n, tg_tensor *g)
{
    const reduce_params *p = TG_PARAMS(n, reduce_params);
    const tg_tensor *x = n->in[0];
    const bool all = n->op == &tg_op_sum || n->op == &tg_op_mean;
    const int axis = all ? -1 : tg_axis(p->axis, x->ndim);
    int64_t shape[TG_MAX_DIMS];
    for (int a = 0; a < x->ndim; a++)
        shape[a] = all || a == axis ? 1 : x->shape[a];
    return tg_reshape(g, x->ndim, shape);
}

/* Second order: dx = scale * dy broadcast over the reduced axes, as full(scale) * dy_keepdim. */
static tg_status sum_backward_graph(tg_node *n, tg_tensor *gout, uint32_t need, tg_tensor **gin)
{
    (void)need; /* one input: called only when its gradient is wanted */
    const tg_tensor *x = n->in[0];
    const float scale = (float)TG_PARAMS(n, reduce_params)->scale;
    gin[0] = tg_mul(tg_full(x->ndim, x->shape, scale), reduce_keepdim(n, gout));
    return gin[0] ? TG_OK : tg_last_status();
}

/* Cases: axis 0, 1 and -1, with and without keepdim, on 3-D shapes; a 0-d input, a size-1
 * axis, and inner > REDUCE_TILE (two column tiles). */
static const tg_case sum_cases[] = {
    {.shape = {{3, 4, 5}}},
    {.shape = {{7}}, .name = "1d"},
    {.shape = {{0}}, .name = "0d"},
    {0},
};
static const tg_case mean_cases[] = {
    {.shape = {{3, 4, 5}}},
    {.shape = {{2, 9}}, .name = "2d"},
    {0},
};

#define AXIS_CASES                                                                                 \
    {.shape = {{3, 4, 5}}, TG_CASE_PARAMS(reduce_params, .axis = 0), .name = "axis0"},             \
        {.shape = {{3, 4, 5}}, TG_CASE_PARAMS(reduce_params, .axis = 1), .name = "axis1"},         \
        {.shape = {{3, 4, 5}}, TG_CASE_PARAMS(reduce_params, .axis = -1), .name = "axis-1"},       \
        {.shape = {{3, 4, 5}},                                                                     \
         TG_CASE_PARAMS(reduce_params, .axis = 0, .keepdim = true),                                \
         .name = "axis0_keepdim"},                                                                 \
        {.shape = {{3, 4, 5}},                                                                     \
         TG_CASE_PARAMS(reduce_params, .axis = 1, .keepdim = true),                                \
         .name = "axis1_keepdim"},                                                                 \
        {.shape = {{3, 4, 5}},                                                                     \
         TG_CASE_PARAMS(reduce_params, .axis = -1, .keepdim = true),                               \
         .name = "axis-1_keepdim"},                                                                \
        {.shape = {{2, 3, 1}}, TG_CASE_PARAMS(reduce_params, .axis = 2), .name = "size1_axis"},    \
    {                                                                                              \
        .shape = {{2, 130}}, TG_CASE_PARAMS(reduce_params, .axis = 0), .name = "two_tiles"         \
    }

static const tg_case sum_axis_cases[] = {AXIS_CASES, {0}};
static const tg_case mean_axis_cases[] = {AXIS_CASES, {0}};

TG_OP_DEFINE(sum) = {.name = "sum",
                     .n_in = 1,
                     .check = sum_check,
                     .forward = sum_forward,
                     .backward = sum_backward,
                     .backward_graph = sum_backward_graph,
                     .cases = sum_cases};
TG_OP_DEFINE(mean) = {.name = "mean",
                      .n_in = 1,
                      .check = mean_check,
                      .forward = sum_forward,
                      .backward = sum_backward,
                      .backward_graph = sum_backward_graph,
                      .cases = mean_cases};
TG_OP_DEFINE(sum_axis) = {.name = "sum_axis",
                          .n_in = 1,
                          .check = sum_axis_check,
                          .forward = sum_forward,
                          .backward = sum_backward,
                          .backward_graph = sum_backward_graph,
                          .cases = sum_axis_cases};
TG_OP_DEFINE(mean_axis) = {.name = "mean_axis",
                           .n_in = 1,
                           .check = mean_axis_check,
                           .forward = sum_forward,
                           .backward = sum_backward,
                           .backward_graph = sum_backward_graph,
                           .cases = mean_axis_cases};

#if TG_ISA_BASE
tg_tensor *tg_sum(tg_tensor *x)
{
    return tg_apply1(&tg_op_sum, NULL, 0, x);
}

tg_tensor *tg_mean(tg_tensor *x)
{
    return tg_apply1(&tg_op_mean, NULL, 0, x);
}

tg_tensor *tg_sum_axis(tg_tensor *x, int axis, bool keepdim)
{
    reduce_params p = {.axis = axis, .keepdim = keepdim};
    return tg_apply1(&tg_op_sum_axis, &p, sizeof p, x);
}

tg_tensor *tg_mean_axis(tg_tensor *x, int axis, bool keepdim)
{
    reduce_params p = {.axis = axis, .keepdim = keepdim};
    return tg_apply1(&tg_op_mean_axis, &p, sizeof p, x);
}
#endif

/* ---- max along an axis --------------------------------------------------------------------
 * y[o, i] = x[o, a, i] with a = the first k maximising x[o, k, i] (saved in scratch);
 * dx[o, a, i] += dy[o, i] (only the first maximal element gets the gradient). */
static tg_status max_axis_check(tg_node *n, int *ndim, int64_t shape[])
{
    tg_status st = reduce_setup(n, "tg_max_axis", false, false, ndim, shape);
    if (st != TG_OK)
        return st;
    const reduce_params *p = TG_PARAMS(n, reduce_params);
    if (p->len == 0 && p->outer * p->inner > 0) {
        char s[160];
        return tg_set_error(TG_ERR_SHAPE,
                            "tg_max_axis: axis %d of %s is empty; the maximum "
                            "of no elements is undefined",
                            p->axis, TG_SHAPE_STR(n->in[0], s));
    }
    n->scratch_bytes = (size_t)(p->outer * p->inner) * sizeof(int64_t);
    return TG_OK;
}

TG_ISA_KERNEL(max_axis_forward, (tg_node * n), (n))
{
    reduce_run(REDUCE_MAX, TG_PARAMS(n, reduce_params), n->in[0]->data, n->out->data, n->scratch);
}

TG_ISA_KERNEL(max_axis_backward, (tg_node * n), (n))
{
    const reduce_params *p = TG_PARAMS(n, reduce_params);
    int64_t len = p->len, inner = p->inner, m = p->outer * p->inner;
    const int64_t *arg = n->scratch;
    const float *dy = n->out->grad->data;
    float *dx = tg_grad_of(n, 0);
    if (!dx)
        return;
    /* Each output owns one distinct input element: no two iterations write the same place. */
    TG_PARALLEL_FOR(m)
    for (int64_t j = 0; j < m; j++) {
        int64_t o = j / inner, i = j % inner;
        dx[(o * len + arg[j]) * inner + i] += dy[j];
    }
}

/* Second order: dx = onehot * dy_keepdim, onehot a constant mask with 1 where the kernel above
 * sends each dy (the saved first maximum), so the gradient goes exactly where it goes there. */
static tg_status max_axis_backward_graph(tg_node *n, tg_tensor *gout, uint32_t need,
                                         tg_tensor **gin)
{
    (void)need;
    const reduce_params *p = TG_PARAMS(n, reduce_params);
    const int64_t len = p->len, inner = p->inner, m = p->outer * p->inner;
    const int64_t *arg = n->scratch;
    tg_tensor *onehot = tg_zeros(n->in[0]->ndim, n->in[0]->shape);
    if (!onehot)
        return tg_last_status();
    for (int64_t j = 0; j < m; j++)
        onehot->data[(j / inner * len + arg[j]) * inner + j % inner] = 1.0f;
    gin[0] = tg_mul(onehot, reduce_keepdim(n, gout));
    return gin[0] ? TG_OK : tg_last_status();
}

/* Distinct values 0.1 apart (a shuffled arithmetic sequence centred on 0): central
 * differences with eps = 0.01 never change which element is the maximum. */
static void max_axis_init(int i, tg_tensor *t, tg_rng *rng)
{
    (void)i;
    int64_t n = t->numel;
    for (int64_t e = 0; e < n; e++)
        t->data[e] = 0.1f * (float)(e - n / 2);
    for (int64_t e = n - 1; e > 0; e--) {
        int64_t j = (int64_t)(tg_rng_u32(rng) % (uint32_t)(e + 1));
        float tmp = t->data[e];
        t->data[e] = t->data[j];
        t->data[j] = tmp;
    }
}

static const tg_case max_axis_cases[] = {
    {.shape = {{3, 4, 5}},
     TG_CASE_PARAMS(reduce_params, .axis = 0),
     .init = max_axis_init,
     .name = "axis0"},
    {.shape = {{3, 4, 5}},
     TG_CASE_PARAMS(reduce_params, .axis = 1),
     .init = max_axis_init,
     .name = "axis1"},
    {.shape = {{3, 4, 5}},
     TG_CASE_PARAMS(reduce_params, .axis = -1),
     .init = max_axis_init,
     .name = "axis-1"},
    {.shape = {{3, 4, 5}},
     TG_CASE_PARAMS(reduce_params, .axis = 1, .keepdim = true),
     .init = max_axis_init,
     .name = "axis1_keepdim"},
    {.shape = {{3, 4, 5}},
     TG_CASE_PARAMS(reduce_params, .axis = -1, .keepdim = true),
     .init = max_axis_init,
     .name = "axis-1_keepdim"},
    {.shape = {{3, 130}},
     TG_CASE_PARAMS(reduce_params, .axis = 0),
     .init = max_axis_init,
     .name = "two_tiles"},
    {0},
};

TG_OP_DEFINE(max_axis) = {.name = "max_axis",
                          .n_in = 1,
                          .check = max_axis_check,
                          .forward = max_axis_forward,
                          .backward = max_axis_backward,
                          .backward_graph = max_axis_backward_graph,
                          .cases = max_axis_cases};

#if TG_ISA_BASE
tg_tensor *tg_max_axis(tg_tensor *x, int axis, bool keepdim)
{
    reduce_params p = {.axis = axis, .keepdim = keepdim};
    return tg_apply1(&tg_op_max_axis, &p, sizeof p, x);
}
#endif

/* ---- var and std along an axis ------------------------------------------------------------
 * Per output (o, i), over the len values x[o, k, i], with s = 1 / (len - correction):
 *   mean = sum(x)/len (saved in scratch),  var = s * sum((x - mean)^2),  std = sqrt(var)
 *   var: dx += dy * 2 s (x - mean)      std: dx += dy * s (x - mean) / std
 * (the mean's own dependence on x drops out: the deviations sum to 0). len <= correction has
 * no divisor: s is NaN, and so are the result and its gradient. */
static tg_status var_setup(tg_node *n, const char *fn, bool root, int *ndim, int64_t shape[])
{
    tg_status st = reduce_setup(n, fn, false, false, ndim, shape);
    if (st != TG_OK)
        return st;
    reduce_params *p = TG_PARAMS(n, reduce_params);
    p->root = root;
    /* In double: len - correction overflows int64_t for a correction near INT64_MIN (any
     * correction is accepted, as PyTorch's; a negative one only shrinks the result). */
    p->scale = p->len > p->correction ? 1.0 / ((double)p->len - (double)p->correction) : NAN;
    n->scratch_bytes = (size_t)(p->outer * p->inner) * sizeof(float);
    return TG_OK;
}

static tg_status var_check(tg_node *n, int *ndim, int64_t shape[])
{
    return var_setup(n, "tg_var", false, ndim, shape);
}

static tg_status std_check(tg_node *n, int *ndim, int64_t shape[])
{
    return var_setup(n, "tg_std", true, ndim, shape);
}

TG_ISA_KERNEL(var_forward, (tg_node * n), (n))
{
    reduce_run(REDUCE_VAR, TG_PARAMS(n, reduce_params), n->in[0]->data, n->out->data, n->scratch);
}

TG_ISA_KERNEL(var_backward, (tg_node * n), (n))
{
    const reduce_params *p = TG_PARAMS(n, reduce_params);
    const int64_t outer = p->outer, len = p->len, inner = p->inner;
    const float *mean = n->scratch, *y = n->out->data, *dy = n->out->grad->data;
    const float *x = n->in[0]->data;
    float *dx = tg_grad_of(n, 0);
    if (!dx || n->in[0]->numel == 0)
        return;
    const float s = (float)p->scale;
    /* dx[o, k, i] += c[o, i] * (x[o, k, i] - mean[o, i]), c = 2 s dy (var) or s dy / y (std). */
    if (inner == 1) {
        /* Each output's values are a contiguous row of x. */
        TG_PARALLEL_FOR_WORK(outer, len)
        for (int64_t o = 0; o < outer; o++) {
            const float c = p->root ? s * dy[o] / y[o] : 2.0f * s * dy[o], mu = mean[o];
            const float *restrict xr = x + o * len;
            float *restrict dxr = dx + o * len;
            for (int64_t k = 0; k < len; k++)
                dxr[k] += c * (xr[k] - mu);
        }
        return;
    }
    /* Rows of inner values, each against the row of outputs it reduces into. */
    TG_PARALLEL_FOR_WORK(outer * len, inner)
    for (int64_t ok = 0; ok < outer * len; ok++) {
        const int64_t j0 = ok / len * inner; /* the first output of this row */
        const float *restrict xr = x + ok * inner;
        float *restrict dxr = dx + ok * inner;
        for (int64_t i = 0; i < inner; i++) {
            const float c = p->root ? s * dy[j0 + i] / y[j0 + i] : 2.0f * s * dy[j0 + i];
            dxr[i] += c * (xr[i] - mean[j0 + i]);
        }
    }
}

/* Second order: dx = c (x - mean_keepdim(x)), c = 2 s dy (var) or s dy / y (std), all recorded,
 * so the mean's and y's own dependence on x is differentiated too (s from the correction). */
static tg_status var_backward_graph(tg_node *n, tg_tensor *gout, uint32_t need, tg_tensor **gin)
{
    (void)need;
    const reduce_params *p = TG_PARAMS(n, reduce_params);
    tg_tensor *x = n->in[0], *gk = reduce_keepdim(n, gout);
    const float s = (float)p->scale;
    tg_tensor *c = p->root ? tg_div(tg_mul_scalar(gk, s), reduce_keepdim(n, n->out))
                           : tg_mul_scalar(gk, 2.0f * s);
    tg_tensor *dev = tg_sub(x, tg_mean_axis(x, p->axis, true));
    gin[0] = c && dev ? tg_mul(dev, c) : NULL;
    return gin[0] ? TG_OK : tg_last_status();
}

/* Correction 1 (the default), 0, 2, along each axis, with keepdim, inner > REDUCE_TILE, and a
 * whole row (1-D). two_tiles draws from [-3, 3]: the std of 3 values close together is far
 * from linear over the gradcheck's step. */
#define VAR_CASES                                                                                  \
    {.shape = {{3, 4, 5}},                                                                         \
     TG_CASE_PARAMS(reduce_params, .axis = 0, .correction = 1),                                    \
     .name = "axis0"},                                                                             \
        {.shape = {{3, 4, 5}},                                                                     \
         TG_CASE_PARAMS(reduce_params, .axis = 1, .correction = 0),                                \
         .name = "axis1_biased"},                                                                  \
        {.shape = {{3, 4, 5}},                                                                     \
         TG_CASE_PARAMS(reduce_params, .axis = -1, .keepdim = true, .correction = 2),              \
         .name = "axis-1_keepdim_c2"},                                                             \
        {.shape = {{3, 130}},                                                                      \
         .lo = -3.0f,                                                                              \
         .hi = 3.0f,                                                                               \
         TG_CASE_PARAMS(reduce_params, .axis = 0, .correction = 1),                                \
         .name = "two_tiles"},                                                                     \
    {                                                                                              \
        .shape = {{9}}, TG_CASE_PARAMS(reduce_params, .axis = 0, .correction = 1), .name = "1d"    \
    }

static const tg_case var_cases[] = {VAR_CASES, {0}};
static const tg_case std_cases[] = {VAR_CASES, {0}};

TG_OP_DEFINE(var) = {.name = "var",
                     .n_in = 1,
                     .check = var_check,
                     .forward = var_forward,
                     .backward = var_backward,
                     .backward_graph = var_backward_graph,
                     .cases = var_cases};
TG_OP_DEFINE(std) = {.name = "std",
                     .n_in = 1,
                     .check = std_check,
                     .forward = var_forward,
                     .backward = var_backward,
                     .backward_graph = var_backward_graph,
                     .cases = std_cases};

#if TG_ISA_BASE
tg_tensor *tg_var(tg_tensor *x, int axis, bool keepdim, int64_t correction)
{
    reduce_params p = {.axis = axis, .keepdim = keepdim, .correction = correction};
    return tg_apply1(&tg_op_var, &p, sizeof p, x);
}

tg_tensor *tg_std(tg_tensor *x, int axis, bool keepdim, int64_t correction)
{
    reduce_params p = {.axis = axis, .keepdim = keepdim, .correction = correction};
    return tg_apply1(&tg_op_std, &p, sizeof p, x);
}
#endif
