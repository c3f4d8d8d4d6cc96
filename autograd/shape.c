/* Shape ops: reshape and flatten (views), transpose, permute, concat and slice (copies).
 *
 * Every copying op here, forward and backward, is one call of strided_copy: an element-wise
 * copy (or accumulation) between two strided layouts of the same index space. Permute's
 * forward gathers x through permuted strides; its backward gathers dy through the inverse
 * permutation, so that the accumulated dx is walked contiguously. Slice and concat see their
 * tensors as [outer, axis, inner] blocks at an offset. */
#include "internal.h"
#include "ops.h"

#include "../tensor/parallel.h"

#include <stdlib.h>
#include <string.h>

/* Elements of the last axis one work item of strided_copy handles: lets a single long row
 * (a big contiguous copy) still be shared by the threads. */
#define COPY_CHUNK 16384
/* Side of the square tiles of a transpose-like copy (see strided_copy). */
#define COPY_TILE 32

/* Row-major strides of a contiguous tensor of the given shape. */
static void contiguous_strides(int ndim, const int64_t *shape, int64_t *stride)
{
    int64_t s = 1;
    for (int a = ndim - 1; a >= 0; a--) {
        stride[a] = s;
        s *= shape[a];
    }
}

/* d[i * dl] = s[i * sl] (accumulate: +=) for i < n; the contiguous case vectorises. */
static inline void copy_run(float *d, int64_t dl, const float *s, int64_t sl, int64_t n,
                            bool accumulate)
{
    if (dl == 1 && sl == 1) {
        if (accumulate)
            for (int64_t i = 0; i < n; i++)
                d[i] += s[i];
        else
            memcpy(d, s, (size_t)n * sizeof(float));
    } else if (accumulate) {
        for (int64_t i = 0; i < n; i++)
            d[i * dl] += s[i * sl];
    } else {
        for (int64_t i = 0; i < n; i++)
            d[i * dl] = s[i * sl];
    }
}

/* dst[idx] = src[idx] (accumulate: +=) for every index idx of shape[ndim], where idx sits at
 * sum_a idx[a] * dst_stride[a] in dst and sum_a idx[a] * src_stride[a] in src. dst positions
 * must be distinct (threads split the index space). */
static void strided_copy(float *dst, const int64_t *dst_stride, const float *src,
                         const int64_t *src_stride, int ndim, const int64_t *shape, bool accumulate)
{
    /* Drop size-1 axes and merge neighbours that are contiguous in both layouts, so that a
     * plain copy becomes one long row and a block copy a few long rows. */
    int64_t sh[TG_MAX_DIMS], ds[TG_MAX_DIMS], ss[TG_MAX_DIMS];
    int m = 0;
    for (int a = 0; a < ndim; a++) {
        if (shape[a] == 0)
            return;
        if (shape[a] == 1)
            continue;
        if (m > 0 && ds[m - 1] == dst_stride[a] * shape[a] &&
            ss[m - 1] == src_stride[a] * shape[a]) {
            sh[m - 1] *= shape[a];
            ds[m - 1] = dst_stride[a];
            ss[m - 1] = src_stride[a];
        } else {
            sh[m] = shape[a];
            ds[m] = dst_stride[a];
            ss[m] = src_stride[a];
            m++;
        }
    }
    if (m == 0) { /* a single element */
        sh[0] = 1;
        ds[0] = ss[0] = 1;
        m = 1;
    }
    int64_t len = sh[m - 1], dl = ds[m - 1], sl = ss[m - 1];
    /* A transpose-like layout (dst contiguous along the last axis, src along another axis q):
     * row by row, every read would touch a new cache line. Copy it in COPY_TILE x COPY_TILE
     * tiles of (q, last) instead, whose source lines stay in L1 across the tile's rows. */
    int q = -1;
    if (dl == 1 && sl != 1)
        for (int a = m - 2; a >= 0 && q < 0; a--)
            if (ss[a] == 1)
                q = a;
    int64_t tq = q >= 0 ? COPY_TILE : 1, nq = q >= 0 ? (sh[q] + tq - 1) / tq : 1;
    int64_t tl = q >= 0 ? COPY_TILE : COPY_CHUNK, nl = (len + tl - 1) / tl;
    int64_t dq = q >= 0 ? ds[q] : 0, sq = q >= 0 ? ss[q] : 0;
    int64_t others = 1;
    for (int a = 0; a < m - 1; a++)
        others *= a == q ? 1 : sh[a];
    /* Work items: (index over the other axes, tile along q, chunk along the last axis). */
    int64_t items = others * nq * nl;
    TG_PARALLEL_FOR_WORK(items, tq * (len < tl ? len : tl))
    for (int64_t it = 0; it < items; it++) {
        int64_t r = it / (nq * nl), t = it % (nq * nl);
        int64_t i0 = t / nl * tq, j0 = t % nl * tl;
        int64_t ni = q >= 0 && sh[q] - i0 < tq ? sh[q] - i0 : tq;
        int64_t nj = len - j0 < tl ? len - j0 : tl;
        int64_t doff = i0 * dq + j0 * dl, soff = i0 * sq + j0 * sl;
        for (int a = m - 2; a >= 0; a--) {
            if (a == q)
                continue;
            int64_t idx = r % sh[a];
            r /= sh[a];
            doff += idx * ds[a];
            soff += idx * ss[a];
        }
        for (int64_t i = 0; i < ni; i++)
            copy_run(dst + doff + i * dq, dl, src + soff + i * sq, sl, nj, accumulate);
    }
}

/* ---- reshape and flatten (views) ----------------------------------------------------------
 * y shares x's storage with another shape of the same numel;   dx += dy (element by element) */
typedef struct {
    int ndim;        /* as given; check validates it */
    bool shape_null; /* the caller passed no shape */
    int64_t shape[TG_MAX_DIMS];
} reshape_params;

typedef struct {
    int start_axis, end_axis;
} flatten_params;

static tg_status reshape_check(tg_node *n, int *ndim, int64_t shape[])
{
    const reshape_params *p = TG_PARAMS(n, reshape_params);
    const tg_tensor *x = n->in[0];
    char sx[160], sy[160];
    if (p->ndim < 0 || p->ndim > TG_MAX_DIMS)
        return tg_set_error(TG_ERR_ARG, "tg_reshape: ndim %d is outside 0..%d", p->ndim,
                            TG_MAX_DIMS);
    if (p->shape_null && p->ndim > 0)
        return tg_set_error(TG_ERR_ARG, "tg_reshape: shape is NULL for ndim %d", p->ndim);
    tg_shape_str(p->ndim, p->shape, sy, sizeof sy);
    int infer = -1;
    int64_t given[TG_MAX_DIMS]; /* the shape with the -1 as 1 */
    for (int a = 0; a < p->ndim; a++) {
        given[a] = p->shape[a] == -1 ? 1 : p->shape[a];
        if (p->shape[a] == -1) {
            if (infer >= 0)
                return tg_set_error(TG_ERR_SHAPE, "tg_reshape: shape %s has more than one -1", sy);
            infer = a;
        } else if (p->shape[a] < 0) {
            return tg_set_error(TG_ERR_SHAPE,
                                "tg_reshape: shape %s has the negative size "
                                "%lld",
                                sy, (long long)p->shape[a]);
        }
    }
    /* The shared rule for every shape (tg_shape_numel): its non-zero sizes multiply to an int64,
     * even when a zero size empties it, since ops multiply the other sizes of an empty tensor. */
    int64_t known = tg_shape_numel(p->ndim, given);
    if (known < 0)
        return tg_set_error(TG_ERR_SHAPE, "tg_reshape: shape %s has too many elements", sy);
    if (infer >= 0 && known == 0 && x->numel == 0)
        return tg_set_error(TG_ERR_SHAPE,
                            "tg_reshape: cannot view %s (0 elements) as %s: "
                            "the -1 could be any size",
                            TG_SHAPE_STR(x, sx), sy);
    bool fits = infer >= 0 ? known > 0 && x->numel % known == 0 : known == x->numel;
    if (!fits)
        return tg_set_error(TG_ERR_SHAPE, "tg_reshape: cannot view %s (%lld elements) as %s",
                            TG_SHAPE_STR(x, sx), (long long)x->numel, sy);
    *ndim = p->ndim;
    for (int a = 0; a < p->ndim; a++)
        shape[a] = a == infer ? x->numel / known : p->shape[a];
    return TG_OK;
}

static tg_status flatten_check(tg_node *n, int *ndim, int64_t shape[])
{
    const flatten_params *p = TG_PARAMS(n, flatten_params);
    const tg_tensor *x = n->in[0];
    char s[160];
    /* A 0-d tensor flattens to [1], as in PyTorch. */
    int xdim = x->ndim ? x->ndim : 1;
    int start = tg_axis(p->start_axis, xdim), end = tg_axis(p->end_axis, xdim);
    if (start < 0 || end < 0)
        return tg_set_error(TG_ERR_ARG, "tg_flatten: %s %d is out of range for %s",
                            start < 0 ? "start_axis" : "end_axis",
                            start < 0 ? p->start_axis : p->end_axis, TG_SHAPE_STR(x, s));
    if (start > end)
        return tg_set_error(TG_ERR_ARG,
                            "tg_flatten: start_axis %d comes after end_axis %d "
                            "in %s",
                            p->start_axis, p->end_axis, TG_SHAPE_STR(x, s));
    if (x->ndim == 0) {
        *ndim = 1;
        shape[0] = 1;
        return TG_OK;
    }
    *ndim = 0;
    for (int a = 0; a < x->ndim; a++) {
        if (a <= start || a > end)
            shape[(*ndim)++] = x->shape[a];
        else
            shape[*ndim - 1] *= x->shape[a];
    }
    return TG_OK;
}

/* Nothing to compute: tg_apply made the output a view of the input (.view = true). */
static void view_forward(tg_node *n)
{
    (void)n;
}

static void view_backward(tg_node *n)
{
    const float *dy = n->out->grad->data;
    float *dx = tg_grad_of(n, 0);
    int64_t count = n->out->numel;
    if (!dx)
        return;
    if (tg_grad_fresh(n, 0)) {
        memcpy(dx, dy, sizeof(float) * (size_t)count);
        return;
    }
    TG_PARALLEL_FOR(count)
    for (int64_t i = 0; i < count; i++)
        dx[i] += dy[i];
}

/* Second order: dx = dy viewed with x's shape. */
static tg_status view_backward_graph(tg_node *n, tg_tensor *gout, uint32_t need, tg_tensor **gin)
{
    (void)need; /* one input: called only when its gradient is wanted */
    gin[0] = tg_reshape(gout, n->in[0]->ndim, n->in[0]->shape);
    return gin[0] ? TG_OK : tg_last_status();
}

static const tg_case reshape_cases[] = {
    {.shape = {{3, 4, 2}},
     TG_CASE_PARAMS(reshape_params, .ndim = 2, .shape = {4, -1}),
     .name = "infer"},
    {.shape = {{6}},
     TG_CASE_PARAMS(reshape_params, .ndim = 3, .shape = {1, 2, 3}),
     .name = "1d_to_3d"},
    {.shape = {{0}}, TG_CASE_PARAMS(reshape_params, .ndim = 2, .shape = {1, 1}), .name = "0d"},
    {0},
};
static const tg_case flatten_cases[] = {
    {.shape = {{2, 3, 4, 2}},
     TG_CASE_PARAMS(flatten_params, .start_axis = 1, .end_axis = 2),
     .name = "middle"},
    {.shape = {{2, 3, 4}},
     TG_CASE_PARAMS(flatten_params, .start_axis = 0, .end_axis = -1),
     .name = "all"},
    {0},
};

TG_OP_DEFINE(reshape) = {.name = "reshape",
                         .n_in = 1,
                         .check = reshape_check,
                         .forward = view_forward,
                         .backward = view_backward,
                         .backward_graph = view_backward_graph,
                         .cases = reshape_cases,
                         .view = true,
                         .fresh_grads = true};
TG_OP_DEFINE(flatten) = {.name = "flatten",
                         .n_in = 1,
                         .check = flatten_check,
                         .forward = view_forward,
                         .backward = view_backward,
                         .backward_graph = view_backward_graph,
                         .cases = flatten_cases,
                         .view = true,
                         .fresh_grads = true};

tg_tensor *tg_reshape(tg_tensor *x, int ndim, const int64_t *shape)
{
    /* Copy what fits; check reports a bad ndim or a NULL shape. */
    reshape_params p = {.ndim = ndim, .shape_null = !shape};
    if (shape && ndim > 0 && ndim <= TG_MAX_DIMS)
        memcpy(p.shape, shape, (size_t)ndim * sizeof(int64_t));
    return tg_apply1(&tg_op_reshape, &p, sizeof p, x);
}

tg_tensor *tg_flatten(tg_tensor *x, int start_axis, int end_axis)
{
    flatten_params p = {.start_axis = start_axis, .end_axis = end_axis};
    return tg_apply1(&tg_op_flatten, &p, sizeof p, x);
}

/* ---- transpose and permute (copies) -------------------------------------------------------
 * y[i_0, ..., i_{n-1}] = x[j] with j[perm[a]] = i_a;   dx += dy permuted back by perm^-1 */
typedef struct {
    int perm[TG_MAX_DIMS]; /* permute: output axis a is x's axis perm[a]; transpose: derived */
    int a, b;              /* transpose: the axes swapped */
    bool perm_null;        /* permute: the caller passed no perm */
} permute_params;

/* Output shape of x under perm (already validated). */
static void permute_shape(const tg_tensor *x, const int *perm, int *ndim, int64_t shape[])
{
    *ndim = x->ndim;
    for (int a = 0; a < x->ndim; a++)
        shape[a] = x->shape[perm[a]];
}

static tg_status transpose_check(tg_node *n, int *ndim, int64_t shape[])
{
    permute_params *p = TG_PARAMS(n, permute_params);
    const tg_tensor *x = n->in[0];
    int a = tg_axis(p->a, x->ndim), b = tg_axis(p->b, x->ndim);
    if (a < 0 || b < 0) {
        char s[160];
        return tg_set_error(TG_ERR_ARG, "tg_transpose: axis %d is out of range for %s",
                            a < 0 ? p->a : p->b, TG_SHAPE_STR(x, s));
    }
    for (int i = 0; i < x->ndim; i++)
        p->perm[i] = i;
    p->perm[a] = b;
    p->perm[b] = a;
    permute_shape(x, p->perm, ndim, shape);
    return TG_OK;
}

static tg_status permute_check(tg_node *n, int *ndim, int64_t shape[])
{
    permute_params *p = TG_PARAMS(n, permute_params);
    const tg_tensor *x = n->in[0];
    if (p->perm_null)
        return tg_set_error(TG_ERR_ARG, "tg_permute: perm is NULL");
    bool seen[TG_MAX_DIMS] = {false};
    bool ok = true;
    int norm[TG_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) {
        norm[i] = tg_axis(p->perm[i], x->ndim);
        ok = ok && norm[i] >= 0 && !seen[norm[i]];
        if (ok)
            seen[norm[i]] = true;
    }
    if (!ok) {
        char s[160], ps[160];
        int64_t given[TG_MAX_DIMS];
        for (int i = 0; i < x->ndim; i++)
            given[i] = p->perm[i];
        return tg_set_error(TG_ERR_ARG,
                            "tg_permute: perm %s is not a permutation of the %d "
                            "axes of %s",
                            tg_shape_str(x->ndim, given, ps, sizeof ps), x->ndim,
                            TG_SHAPE_STR(x, s));
    }
    memcpy(p->perm, norm, (size_t)x->ndim * sizeof(int));
    permute_shape(x, p->perm, ndim, shape);
    return TG_OK;
}

static void permute_forward(tg_node *n)
{
    const permute_params *p = TG_PARAMS(n, permute_params);
    const tg_tensor *x = n->in[0], *y = n->out;
    int64_t xs[TG_MAX_DIMS], ys[TG_MAX_DIMS], gather[TG_MAX_DIMS];
    contiguous_strides(x->ndim, x->shape, xs);
    contiguous_strides(y->ndim, y->shape, ys);
    for (int a = 0; a < y->ndim; a++)
        gather[a] = xs[p->perm[a]];
    strided_copy(y->data, ys, x->data, gather, y->ndim, y->shape, false);
}

static void permute_backward(tg_node *n)
{
    const permute_params *p = TG_PARAMS(n, permute_params);
    const tg_tensor *x = n->in[0], *y = n->out;
    float *dx = tg_grad_of(n, 0);
    if (!dx)
        return;
    /* x's axis perm[a] is y's axis a: walk dx in order and read dy through inv = perm^-1. */
    int64_t xs[TG_MAX_DIMS], ys[TG_MAX_DIMS], gather[TG_MAX_DIMS];
    contiguous_strides(x->ndim, x->shape, xs);
    contiguous_strides(y->ndim, y->shape, ys);
    for (int a = 0; a < y->ndim; a++)
        gather[p->perm[a]] = ys[a];
    strided_copy(dx, xs, y->grad->data, gather, x->ndim, x->shape, true);
}

/* Second order: dx = dy permuted by perm^-1 (transpose's perm is its own inverse). */
static tg_status permute_backward_graph(tg_node *n, tg_tensor *gout, uint32_t need, tg_tensor **gin)
{
    (void)need;
    const permute_params *p = TG_PARAMS(n, permute_params);
    int inv[TG_MAX_DIMS];
    for (int a = 0; a < n->out->ndim; a++)
        inv[p->perm[a]] = a;
    gin[0] = tg_permute(gout, inv);
    return gin[0] ? TG_OK : tg_last_status();
}

static const tg_case transpose_cases[] = {
    {.shape = {{3, 5}}, TG_CASE_PARAMS(permute_params, .a = 0, .b = 1), .name = "2d"},
    {.shape = {{2, 3, 4, 2}}, TG_CASE_PARAMS(permute_params, .a = 1, .b = -1), .name = "4d"},
    {0},
};
static const tg_case permute_cases[] = {
    {.shape = {{2, 3, 4}}, TG_CASE_PARAMS(permute_params, .perm = {2, 0, 1}), .name = "3d"},
    {.shape = {{2, 3, 2, 4}},
     TG_CASE_PARAMS(permute_params, .perm = {0, 2, 3, 1}),
     .name = "4d_nhwc"},
    {.shape = {{2, 3, 2, 4}}, TG_CASE_PARAMS(permute_params, .perm = {3, 1, 0, 2}), .name = "4d"},
    {0},
};

TG_OP_DEFINE(transpose) = {.name = "transpose",
                           .n_in = 1,
                           .check = transpose_check,
                           .forward = permute_forward,
                           .backward = permute_backward,
                           .backward_graph = permute_backward_graph,
                           .cases = transpose_cases};
TG_OP_DEFINE(permute) = {.name = "permute",
                         .n_in = 1,
                         .check = permute_check,
                         .forward = permute_forward,
                         .backward = permute_backward,
                         .backward_graph = permute_backward_graph,
                         .cases = permute_cases};

tg_tensor *tg_transpose(tg_tensor *x, int a, int b)
{
    permute_params p = {.a = a, .b = b};
    return tg_apply1(&tg_op_transpose, &p, sizeof p, x);
}

tg_tensor *tg_permute(tg_tensor *x, const int *perm)
{
    permute_params p = {.perm_null = !perm};
    if (x && perm)
        memcpy(p.perm, perm, (size_t)x->ndim * sizeof(int));
    return tg_apply1(&tg_op_permute, &p, sizeof p, x);
}

/* [outer, axis, inner] sizes of t around axis. */
static void split_at(const tg_tensor *t, int axis, int64_t *outer, int64_t *inner)
{
    *outer = *inner = 1;
    for (int a = 0; a < axis; a++)
        *outer *= t->shape[a];
    for (int a = axis + 1; a < t->ndim; a++)
        *inner *= t->shape[a];
}

/* ---- concat -------------------------------------------------------------------------------
 * y[o, off_j + k, i] = x_j[o, k, i]  (off_j = sum of the sizes along axis of x_0..x_{j-1});
 * dx_j[o, k, i] += dy[o, off_j + k, i] */
typedef struct {
    int axis; /* as given; check normalises it */
} concat_params;

/* The shape of the n tensors x joined along axis (negative counts from the end; normalised into
 * *axis), or the error naming the input that does not fit. Shared by the op's check and by
 * tg_concat for more inputs than a node holds, so messages number the inputs as given. */
static tg_status concat_shape(tg_tensor *const *x, int64_t n, int *axis, int *ndim, int64_t shape[])
{
    const tg_tensor *x0 = x[0];
    char s0[160], sj[160];
    const int a0 = tg_axis(*axis, x0->ndim);
    if (a0 < 0)
        return tg_set_error(TG_ERR_ARG, "tg_concat: axis %d is out of range for input 0 %s", *axis,
                            TG_SHAPE_STR(x0, s0));
    *ndim = x0->ndim;
    memcpy(shape, x0->shape, (size_t)x0->ndim * sizeof(int64_t));
    for (int64_t j = 1; j < n; j++) {
        const tg_tensor *xj = x[j];
        bool same = xj->ndim == x0->ndim;
        for (int a = 0; same && a < x0->ndim; a++)
            same = a == a0 || xj->shape[a] == x0->shape[a];
        if (!same)
            return tg_set_error(TG_ERR_SHAPE,
                                "tg_concat: input %lld %s does not match input 0 "
                                "%s outside axis %d",
                                (long long)j, TG_SHAPE_STR(xj, sj), TG_SHAPE_STR(x0, s0), a0);
        if (__builtin_add_overflow(shape[a0], xj->shape[a0], &shape[a0]))
            return tg_set_error(TG_ERR_SHAPE,
                                "tg_concat: the sizes along axis %d add up to more than an "
                                "int64 (input %lld %s)",
                                a0, (long long)j, TG_SHAPE_STR(xj, sj));
    }
    if (tg_shape_numel(*ndim, shape) < 0) {
        char so[160];
        return tg_set_error(TG_ERR_SHAPE, "tg_concat: the output %s has too many elements",
                            tg_shape_str(*ndim, shape, so, sizeof so));
    }
    *axis = a0;
    return TG_OK;
}

static tg_status concat_check(tg_node *n, int *ndim, int64_t shape[])
{
    return concat_shape(n->in, n->n_in, &TG_PARAMS(n, concat_params)->axis, ndim, shape);
}

static void concat_forward(tg_node *n)
{
    int axis = TG_PARAMS(n, concat_params)->axis;
    const tg_tensor *y = n->out;
    int64_t outer, inner, off = 0;
    split_at(y, axis, &outer, &inner);
    for (int j = 0; j < n->n_in; j++) {
        const tg_tensor *x = n->in[j];
        int64_t block = x->shape[axis] * inner;
        int64_t shape[2] = {outer, block};
        int64_t ys[2] = {y->shape[axis] * inner, 1}, xs[2] = {block, 1};
        strided_copy(y->data + off, ys, x->data, xs, 2, shape, false);
        off += block;
    }
}

static void concat_backward(tg_node *n)
{
    int axis = TG_PARAMS(n, concat_params)->axis;
    const tg_tensor *y = n->out;
    int64_t outer, inner, off = 0;
    split_at(y, axis, &outer, &inner);
    for (int j = 0; j < n->n_in; j++) {
        const tg_tensor *x = n->in[j];
        int64_t block = x->shape[axis] * inner;
        float *dx = tg_grad_of(n, j);
        if (dx) {
            int64_t shape[2] = {outer, block};
            int64_t ys[2] = {y->shape[axis] * inner, 1}, xs[2] = {block, 1};
            strided_copy(dx, xs, y->grad->data + off, ys, 2, shape, true);
        }
        off += block;
    }
}

/* Second order: dx_j = dy[..., off_j : off_j + size_j, ...] along the axis. */
static tg_status concat_backward_graph(tg_node *n, tg_tensor *gout, uint32_t need, tg_tensor **gin)
{
    const int axis = TG_PARAMS(n, concat_params)->axis;
    int64_t off = 0;
    for (int j = 0; j < n->n_in; j++) {
        const int64_t size = n->in[j]->shape[axis];
        if (tg_graph_needs(need, j) && !(gin[j] = tg_slice(gout, axis, off, off + size, 1)))
            return tg_last_status();
        off += size;
    }
    return TG_OK;
}

static const tg_case concat_cases[] = {
    {.shape = {{2, 3, 4}, {2, 2, 4}},
     .n_in = 2,
     TG_CASE_PARAMS(concat_params, .axis = 1),
     .name = "two_middle"},
    {.shape = {{2, 1, 3}, {2, 4, 3}, {2, 2, 3}},
     .n_in = 3,
     TG_CASE_PARAMS(concat_params, .axis = 1),
     .name = "three_middle"},
    {.shape = {{3, 2}, {3, 4}},
     .n_in = 2,
     TG_CASE_PARAMS(concat_params, .axis = -1),
     .name = "two_last"},
    {.shape = {{2, 3}, {1, 3}, {3, 3}},
     .n_in = 3,
     TG_CASE_PARAMS(concat_params, .axis = 0),
     .name = "three_first"},
    {0},
};

TG_OP_DEFINE(concat) = {.name = "concat",
                        .n_in = -1,
                        .check = concat_check,
                        .forward = concat_forward,
                        .backward = concat_backward,
                        .backward_graph = concat_backward_graph,
                        .cases = concat_cases};

/* The inputs of a public concat or stack: xs and every xs[j] present (a NULL from an earlier
 * failure keeps that error), none TG_NONE. */
static bool join_inputs_ok(const char *fn, tg_tensor *const *xs, int64_t n)
{
    if (!xs || n < 1) {
        tg_set_error(TG_ERR_ARG, "%s: %s", fn,
                     !xs ? "xs is NULL" : "n must be at least 1 (no tensors to join)");
        return false;
    }
    for (int64_t j = 0; j < n; j++) {
        if (!xs[j] || xs[j] == TG_NONE) {
            if (xs[j] || tg_last_status() == TG_OK)
                tg_set_error(TG_ERR_ARG, "%s: input %lld is %s", fn, (long long)j,
                             xs[j] ? "TG_NONE" : "NULL");
            return false;
        }
    }
    return true;
}

/* A node holds at most TG_MAX_INPUTS inputs, so more are joined as a tree: groups of
 * TG_MAX_INPUTS, then the groups' results, and so on. Joining along one axis is associative, so
 * the tree gives the same values and, through the concat nodes' own backward, the same
 * gradients; the extra copies (one per level, log16 n levels: two for up to 256 inputs) cost
 * less than a node of variable size would cost every other op. The inputs are checked first,
 * as a whole, so an error names input j as the caller counts it. */
tg_tensor *tg_concat(tg_tensor *const *xs, int64_t n, int axis)
{
    if (!join_inputs_ok("tg_concat", xs, n))
        return NULL;
    concat_params p = {.axis = axis};
    if (n <= TG_MAX_INPUTS)
        return tg_apply(&tg_op_concat, &p, sizeof p, (int)n, xs);
    int ndim;
    int64_t shape[TG_MAX_DIMS];
    if (concat_shape(xs, n, &p.axis, &ndim, shape) != TG_OK)
        return NULL;
    const int64_t groups = (n + TG_MAX_INPUTS - 1) / TG_MAX_INPUTS;
    tg_tensor **part = malloc((size_t)groups * sizeof *part);
    if (!part) {
        tg_set_error(TG_ERR_NOMEM, "tg_concat: out of memory joining %lld tensors", (long long)n);
        return NULL;
    }
    tg_tensor *y = NULL;
    int64_t g = 0;
    for (; g < groups; g++) {
        const int64_t first = g * TG_MAX_INPUTS, left = n - first;
        part[g] = tg_concat(xs + first, left < TG_MAX_INPUTS ? left : TG_MAX_INPUTS, p.axis);
        if (!part[g])
            break; /* the parts made so far belong to the tape */
    }
    if (g == groups)
        y = tg_concat(part, groups, p.axis);
    free(part);
    return y;
}

/* Stacking is joining views of the inputs with a size-1 axis inserted at axis: reshape (a view,
 * whose backward passes the gradient through) then concat, so it needs no kernel of its own and
 * its gradient is checked through those two ops. */
tg_tensor *tg_stack(tg_tensor *const *xs, int64_t n, int axis)
{
    if (!join_inputs_ok("tg_stack", xs, n))
        return NULL;
    const tg_tensor *x0 = xs[0];
    char s0[160], sj[160];
    const int a = tg_axis(axis, x0->ndim + 1);
    if (a < 0 || x0->ndim + 1 > TG_MAX_DIMS) {
        tg_set_error(TG_ERR_ARG,
                     a < 0 ? "tg_stack: axis %d is out of range for inputs %s (0 to %d, or "
                             "negative from the end)"
                           : "tg_stack: axis %d: inputs %s already have the most axes a "
                             "tensor may have (%d)",
                     axis, TG_SHAPE_STR(x0, s0), a < 0 ? x0->ndim : TG_MAX_DIMS);
        return NULL;
    }
    for (int64_t j = 1; j < n; j++)
        if (!tg_shape_equal(xs[j], x0)) {
            tg_set_error(TG_ERR_SHAPE, "tg_stack: input %lld %s differs from input 0 %s",
                         (long long)j, TG_SHAPE_STR(xs[j], sj), TG_SHAPE_STR(x0, s0));
            return NULL;
        }
    int64_t shape[TG_MAX_DIMS];
    for (int d = 0, k = 0; d <= x0->ndim; d++)
        shape[d] = d == a ? 1 : x0->shape[k++];
    tg_tensor **views = malloc((size_t)n * sizeof *views);
    if (!views) {
        tg_set_error(TG_ERR_NOMEM, "tg_stack: out of memory stacking %lld tensors", (long long)n);
        return NULL;
    }
    tg_tensor *y = NULL;
    int64_t j = 0;
    for (; j < n; j++)
        if (!(views[j] = tg_reshape(xs[j], x0->ndim + 1, shape)))
            break; /* the views made so far belong to the tape */
    if (j == n)
        y = tg_concat(views, n, a);
    free(views);
    return y;
}

/* ---- slice --------------------------------------------------------------------------------
 * y[o, k, i] = x[o, first + k * step, i] for k < count;   dx[o, first + k * step, i] += dy */
typedef struct {
    int axis;
    int64_t start, stop, step; /* Python slice start:stop:step, step >= 1 */
    /* Set by check: the first index taken and how many. */
    int64_t first, count;
} slice_params;

/* A Python slice bound: negative counts from the end, then clamped to [0, len]. */
static int64_t slice_bound(int64_t v, int64_t len)
{
    if (v < 0)
        v = v + len < 0 ? 0 : v + len;
    return v > len ? len : v;
}

static tg_status slice_check(tg_node *n, int *ndim, int64_t shape[])
{
    slice_params *p = TG_PARAMS(n, slice_params);
    const tg_tensor *x = n->in[0];
    char s[160];
    int axis = tg_axis(p->axis, x->ndim);
    if (axis < 0)
        return tg_set_error(TG_ERR_ARG, "tg_slice: axis %d is out of range for %s", p->axis,
                            TG_SHAPE_STR(x, s));
    if (p->step <= 0)
        return tg_set_error(TG_ERR_ARG,
                            "tg_slice: step %lld along axis %d of %s; it must be "
                            ">= 1",
                            (long long)p->step, p->axis, TG_SHAPE_STR(x, s));
    int64_t len = x->shape[axis];
    int64_t start = slice_bound(p->start, len), stop = slice_bound(p->stop, len);
    p->axis = axis;
    p->first = start;
    p->count = stop > start ? (stop - start - 1) / p->step + 1 : 0;
    /* A step beyond the axis takes one element at most, and is then never used: bring it back
     * to the axis length so that the strides (step * inner) stay inside x's extent. */
    if (p->step > len)
        p->step = len > 0 ? len : 1;
    *ndim = x->ndim;
    memcpy(shape, x->shape, (size_t)x->ndim * sizeof(int64_t));
    shape[axis] = p->count;
    return TG_OK;
}

/* The slice p of whole (x, or slice_backward's output) as a strided layout inside whole's data
 * x: shape [outer, count, inner] and x's strides. */
static const float *slice_layout(const slice_params *p, const tg_tensor *whole, const float *x,
                                 int64_t shape[3], int64_t xs[3], int64_t ys[3])
{
    int64_t outer, inner, len = whole->shape[p->axis];
    split_at(whole, p->axis, &outer, &inner);
    shape[0] = outer;
    shape[1] = p->count;
    shape[2] = inner;
    xs[0] = len * inner;
    xs[1] = p->step * inner;
    xs[2] = 1;
    ys[0] = p->count * inner;
    ys[1] = inner;
    ys[2] = 1;
    return x + p->first * inner;
}

/* y = (accumulate: +=) the slice p of x, whole's data: slice's forward, slice_backward's
 * backward. */
static void slice_gather(const slice_params *p, const tg_tensor *whole, const float *x, float *y,
                         bool accumulate)
{
    int64_t shape[3], xs[3], ys[3];
    const float *src = slice_layout(p, whole, x, shape, xs, ys);
    strided_copy(y, ys, src, xs, 3, shape, accumulate);
}

/* The slice p of x, whole's data, = (accumulate: +=) y: slice's backward, slice_backward's
 * forward. */
static void slice_scatter(const slice_params *p, const tg_tensor *whole, float *x, const float *y,
                          bool accumulate)
{
    int64_t shape[3], xs[3], ys[3];
    float *dst = (float *)slice_layout(p, whole, x, shape, xs, ys);
    strided_copy(dst, xs, y, ys, 3, shape, accumulate);
}

static void slice_forward(tg_node *n)
{
    slice_gather(TG_PARAMS(n, slice_params), n->in[0], n->in[0]->data, n->out->data, false);
}

static void slice_backward(tg_node *n)
{
    float *dx = tg_grad_of(n, 0);
    if (!dx)
        return;
    slice_scatter(TG_PARAMS(n, slice_params), n->in[0], dx, n->out->grad->data, true);
}

static tg_tensor *slice_place(tg_tensor *g, const slice_params *p, int64_t len);

/* Second order: dx = dy placed into zeros at the slice's positions (slice_backward, below). */
static tg_status slice_backward_graph(tg_node *n, tg_tensor *gout, uint32_t need, tg_tensor **gin)
{
    (void)need;
    const slice_params *p = TG_PARAMS(n, slice_params);
    gin[0] = slice_place(gout, p, n->in[0]->shape[p->axis]);
    return gin[0] ? TG_OK : tg_last_status();
}

static const tg_case slice_cases[] = {
    {.shape = {{4, 7, 3}},
     TG_CASE_PARAMS(slice_params, .axis = 1, .start = 1, .stop = 6, .step = 1),
     .name = "step1"},
    {.shape = {{4, 7, 3}},
     TG_CASE_PARAMS(slice_params, .axis = 1, .start = 0, .stop = 7, .step = 2),
     .name = "step2"},
    {.shape = {{3, 8}},
     TG_CASE_PARAMS(slice_params, .axis = -1, .start = -5, .stop = 100, .step = 2),
     .name = "negative_start"},
    {.shape = {{5, 2, 3}},
     TG_CASE_PARAMS(slice_params, .axis = 0, .start = -3, .stop = -1, .step = 1),
     .name = "negative_stop"},
    {0},
};

TG_OP_DEFINE(slice) = {.name = "slice",
                       .n_in = 1,
                       .check = slice_check,
                       .forward = slice_forward,
                       .backward = slice_backward,
                       .backward_graph = slice_backward_graph,
                       .cases = slice_cases};

tg_tensor *tg_slice(tg_tensor *x, int axis, int64_t start, int64_t stop, int64_t step)
{
    slice_params p = {.axis = axis, .start = start, .stop = stop, .step = step};
    return tg_apply1(&tg_op_slice, &p, sizeof p, x);
}

/* ---- slice_backward (internal: slice's second order) --------------------------------------
 * The adjoint of a slice, linear in g: y = zeros of x's shape with y[o, first + k * step, i] =
 * g[o, k, i] (slice's backward kernel as a forward);   dg += dy[o, first + k * step, i] (a
 * slice). Params: the slice's, as its check normalised them, and the length of x's axis. */
typedef struct {
    slice_params slice; /* axis (normalised), first, count and step (clamped) */
    int64_t len;        /* the length of x's axis: y's size there */
} slice_backward_params;

static tg_status slice_place_check(tg_node *n, int *ndim, int64_t shape[])
{
    slice_backward_params *p = TG_PARAMS(n, slice_backward_params);
    slice_params *sp = &p->slice;
    const tg_tensor *g = n->in[0];
    char s[160];
    const int axis = tg_axis(sp->axis, g->ndim);
    if (axis < 0 || sp->step < 1 || sp->count != g->shape[axis] || p->len < 0 ||
        (sp->count > 0 && (sp->first < 0 || sp->first >= p->len ||
                           (sp->count - 1) > (p->len - 1 - sp->first) / sp->step)))
        return tg_set_error(TG_ERR_ARG,
                            "tg_slice_backward: g %s does not fit the slice axis %d, first %lld, "
                            "count %lld, step %lld of an axis of %lld",
                            TG_SHAPE_STR(g, s), sp->axis, (long long)sp->first,
                            (long long)sp->count, (long long)sp->step, (long long)p->len);
    sp->axis = axis;
    *ndim = g->ndim;
    memcpy(shape, g->shape, (size_t)g->ndim * sizeof(int64_t));
    shape[axis] = p->len;
    if (tg_shape_numel(*ndim, shape) < 0)
        return tg_set_error(TG_ERR_SHAPE, "tg_slice_backward: the output %s has too many elements",
                            tg_shape_str(*ndim, shape, s, sizeof s));
    return TG_OK;
}

/* Zeros, then g copied into the slice's positions (the layout slice's backward adds into). */
static void slice_place_forward(tg_node *n)
{
    memset(n->out->data, 0, (size_t)n->out->numel * sizeof(float));
    slice_scatter(&TG_PARAMS(n, slice_backward_params)->slice, n->out, n->out->data, n->in[0]->data,
                  false);
}

/* dg += dy at the slice's positions: slice's forward, accumulated. */
static void slice_place_backward(tg_node *n)
{
    float *dg = tg_grad_of(n, 0);
    if (!dg)
        return;
    slice_gather(&TG_PARAMS(n, slice_backward_params)->slice, n->out, n->out->grad->data, dg, true);
}

/* Third order: dg = dy sliced as the slice was (stop just past the last element taken). */
static tg_status slice_place_backward_graph(tg_node *n, tg_tensor *gout, uint32_t need,
                                            tg_tensor **gin)
{
    (void)need;
    const slice_params *sp = &TG_PARAMS(n, slice_backward_params)->slice;
    const int64_t stop = sp->count ? sp->first + (sp->count - 1) * sp->step + 1 : sp->first;
    gin[0] = tg_slice(gout, sp->axis, sp->first, stop, sp->step);
    return gin[0] ? TG_OK : tg_last_status();
}

static const tg_case slice_backward_cases[] = {
    {.shape = {{4, 3, 3}},
     TG_CASE_PARAMS(slice_backward_params, .slice = {.axis = 1, .first = 1, .count = 3, .step = 2},
                    .len = 7),
     .name = "step2"},
    {.shape = {{3, 2}},
     TG_CASE_PARAMS(slice_backward_params, .slice = {.axis = -1, .first = 3, .count = 2, .step = 4},
                    .len = 8),
     .name = "last_axis"},
    {.shape = {{2, 2, 3}},
     TG_CASE_PARAMS(slice_backward_params, .slice = {.axis = 0, .first = 2, .count = 2, .step = 1},
                    .len = 5),
     .name = "first_axis"},
    {0},
};

TG_OP_DEFINE(slice_backward) = {.name = "slice_backward",
                                .n_in = 1,
                                .check = slice_place_check,
                                .forward = slice_place_forward,
                                .backward = slice_place_backward,
                                .backward_graph = slice_place_backward_graph,
                                .cases = slice_backward_cases};

static tg_tensor *slice_place(tg_tensor *g, const slice_params *p, int64_t len)
{
    const slice_backward_params q = {.slice = *p, .len = len};
    return tg_apply1(&tg_op_slice_backward, &q, sizeof q, g);
}
