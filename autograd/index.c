/* Indexing: embedding, index_select and gather (differentiable: the gradient is scattered back
 * into the indexed tensor), and the index-valued or constant results argmax / argmin,
 * max_axis_indices, one_hot, multinomial and categorical.
 *
 * Every index value is checked against the size it indexes before anything runs; the message
 * names the value, its position and the size (index_check). The scatter-add backwards are
 * deterministic: threads split the work by output slices or by column chunks, never by
 * index positions (which may repeat), and each gradient element adds its contributions in
 * index order whatever the thread count. */
#include "internal.h"
#include "ops.h"

#include "../tensor/parallel.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Floats of a row that one backward work item owns: every item adds into its own columns. */
#define TAKE_CHUNK 64

/* Position p of index ix as text: "5" for a 1-D index, "5 ([1, 2])" with its coordinates
 * otherwise. */
static const char *position_str(const tg_index *ix, int64_t p, char *buf, size_t size)
{
    if (ix->ndim <= 1) {
        snprintf(buf, size, "%lld", (long long)p);
        return buf;
    }
    int64_t coord[TG_MAX_DIMS];
    int64_t rest = p;
    for (int d = ix->ndim - 1; d >= 0; d--) {
        coord[d] = ix->shape[d] ? rest % ix->shape[d] : 0;
        rest = ix->shape[d] ? rest / ix->shape[d] : 0;
    }
    char c[160];
    snprintf(buf, size, "%lld (%s)", (long long)p, tg_shape_str(ix->ndim, coord, c, sizeof c));
    return buf;
}

/* TG_OK when every value of ix is in [0, size); else the error naming the first bad value, its
 * position and what it indexes (what: "axis 1 of [3, 5]", then " of size 5" follows). */
static tg_status index_check(const char *fn, const tg_index *ix, int64_t size, const char *what)
{
    for (int64_t p = 0; p < ix->numel; p++) {
        int64_t v = ix->data[p];
        if (v < 0 || v >= size) {
            char pos[200];
            return tg_set_error(TG_ERR_ARG,
                                "%s: index %lld at position %s is out of range for %s of size "
                                "%lld",
                                fn, (long long)v, position_str(ix, p, pos, sizeof pos), what,
                                (long long)size);
        }
    }
    return TG_OK;
}

/* The wrappers' test of a NULL index: keeps an earlier error (the NULL came from a failed call,
 * tg_indices or tg_argmax), else says which argument is NULL. */
static bool index_missing(const char *fn, const tg_index *ix)
{
    if (ix)
        return false;
    if (tg_last_status() == TG_OK)
        tg_set_error(TG_ERR_ARG, "%s: idx is NULL", fn);
    return true;
}

/* x seen as [outer, len, inner] around axis (a valid axis of x). */
static void split_axis(const tg_tensor *x, int axis, int64_t *outer, int64_t *inner)
{
    *outer = *inner = 1;
    for (int a = 0; a < axis; a++)
        *outer *= x->shape[a];
    for (int a = axis + 1; a < x->ndim; a++)
        *inner *= x->shape[a];
}

/* The index's values are public fields that a caller may overwrite between the forward and a
 * backward (tg_index has no version counter), so the ops keep a copy of them in the node's
 * scratch: check reserves it, forward fills it, and the backward reads only the copy, which the
 * check validated. */
static void snapshot_reserve(tg_node *n)
{
    n->scratch_bytes = (size_t)n->index->numel * sizeof(int64_t);
}

/* The validated values, copied into scratch; returns the copy. */
static const int64_t *snapshot_take(tg_node *n)
{
    if (n->scratch_bytes)
        memcpy(n->scratch, n->index->data, n->scratch_bytes);
    return n->scratch;
}

/* ---- take: the kernels shared by embedding and index_select ------------------------------
 * x[outer, len, inner] and m indices into len: y[o, k, i] = x[o, idx[k], i];
 * dx[o, idx[k], i] += dy[o, k, i] for every k with idx[k] != skip (embedding's padding_idx). */
typedef struct {
    int axis;            /* index_select's axis (embedding: 0) */
    int64_t padding_idx; /* embedding's row that gets no gradient, -1 for none */
    /* Set by check. */
    int64_t outer, len, inner, m;
} take_params;

/* y[o, k, :] = x[o, idx[k], :] (add: y[o, k, :] += ...), for a y of ynumel elements. */
static void take_rows(const take_params *p, const int64_t *idx, const float *x, float *y,
                      int64_t ynumel, bool add)
{
    if (ynumel == 0) /* no work: x [2^40, 1, 0] would still be 2^40 empty rows */
        return;
    int64_t rows = p->outer * p->m, m = p->m, len = p->len, inner = p->inner;
    TG_PARALLEL_FOR_WORK(rows, inner)
    for (int64_t r = 0; r < rows; r++) {
        int64_t o = r / m, k = r % m;
        const float *src = x + (o * len + idx[k]) * inner;
        if (add)
            for (int64_t i = 0; i < inner; i++)
                y[r * inner + i] += src[i];
        else
            memcpy(y + r * inner, src, (size_t)inner * sizeof(float));
    }
}

static void take_forward(tg_node *n)
{
    const int64_t *idx = snapshot_take(n);
    take_rows(TG_PARAMS(n, take_params), idx, n->in[0]->data, n->out->data, n->out->numel, false);
}

/* dx[o, idx[k], :] += dy[o, k, :] for every k with idx[k] != p->padding_idx, for a dy of
 * dynumel elements. */
static void take_scatter(const take_params *p, const int64_t *idx, const float *dy, float *dx,
                         int64_t dynumel)
{
    /* An empty dy adds nothing, however many (outer, chunk) items it would loop over. */
    if (dynumel == 0)
        return;
    int64_t m = p->m, len = p->len, inner = p->inner, skip = p->padding_idx;
    int64_t chunks = (inner + TAKE_CHUNK - 1) / TAKE_CHUNK, items = p->outer * chunks;
    /* Item (o, chunk) owns dx[o, :, chunk]: repeated indices add within one item, in k order. */
    TG_PARALLEL_FOR_WORK(items, m * (inner < TAKE_CHUNK ? inner : TAKE_CHUNK))
    for (int64_t it = 0; it < items; it++) {
        int64_t o = it / chunks, i0 = (it % chunks) * TAKE_CHUNK;
        int64_t w = inner - i0 < TAKE_CHUNK ? inner - i0 : TAKE_CHUNK;
        for (int64_t k = 0; k < m; k++) {
            if (idx[k] == skip)
                continue;
            float *d = dx + (o * len + idx[k]) * inner + i0;
            const float *g = dy + (o * m + k) * inner + i0;
            for (int64_t i = 0; i < w; i++)
                d[i] += g[i];
        }
    }
}

static void take_backward(tg_node *n)
{
    float *dx = tg_grad_of(n, 0);
    if (dx)
        take_scatter(TG_PARAMS(n, take_params), n->scratch, n->out->grad->data, dx, n->out->numel);
}

/* The node's index as its forward saw it (the snapshot in scratch), as a new index on the
 * innermost tape, for the recorded ops of a second-order rule; NULL with the error set. */
static tg_index *snapshot_index(const tg_node *n, const char *origin)
{
    const tg_index *ix = n->index;
    return tg_tape_adopt_index(tg_index_new(ix->ndim, ix->shape, n->scratch), origin);
}

/* index_select_backward of g (the adjoint of a take along axis of a dimension of len): the
 * recorded dx of embedding and index_select. */
static tg_tensor *take_grad(tg_tensor *g, int axis, int64_t len, const tg_node *n)
{
    tg_index *ix = snapshot_index(n, "index_select_backward");
    take_params q = {.axis = axis, .padding_idx = -1, .len = len};
    return ix ? tg_apply_index(&tg_op_index_select_backward, &q, sizeof q, 1, &g, ix) : NULL;
}

/* Index tables of the gradcheck cases below (the test releases them). */
static tg_index *case_index(int ndim, const int64_t *shape, const int64_t *values)
{
    return tg_index_new(ndim, shape, values);
}

/* ---- embedding ------------------------------------------------------------------------------
 * weight[V, D], idx[...] -> y[..., D]: y[p, :] = weight[idx[p], :];
 * dweight[idx[p], :] += dy[p, :] except where idx[p] == padding_idx. */
static tg_status embedding_check(tg_node *n, int *ndim, int64_t shape[])
{
    take_params *p = TG_PARAMS(n, take_params);
    const tg_tensor *w = n->in[0];
    const tg_index *ix = n->index;
    char s[160];
    if (!ix)
        return tg_set_error(TG_ERR_ARG, "tg_embedding: idx is NULL");
    if (w->ndim != 2)
        return tg_set_error(TG_ERR_SHAPE, "tg_embedding: weight %s must be 2-D [rows, dim]",
                            TG_SHAPE_STR(w, s));
    if (ix->ndim + 1 > TG_MAX_DIMS)
        return tg_set_error(TG_ERR_SHAPE,
                            "tg_embedding: idx %s has %d dimensions; the result would have %d, "
                            "more than %d",
                            tg_shape_str(ix->ndim, ix->shape, s, sizeof s), ix->ndim, ix->ndim + 1,
                            TG_MAX_DIMS);
    int64_t rows = w->shape[0];
    if (p->padding_idx != -1 && (p->padding_idx < 0 || p->padding_idx >= rows))
        return tg_set_error(TG_ERR_ARG,
                            "tg_embedding: padding_idx %lld is out of range for weight %s; it "
                            "must be in [0, %lld) or -1 for none",
                            (long long)p->padding_idx, TG_SHAPE_STR(w, s), (long long)rows);
    char what[200];
    snprintf(what, sizeof what, "the rows of weight %s", TG_SHAPE_STR(w, s));
    if (index_check("tg_embedding", ix, rows, what) != TG_OK)
        return tg_last_status();
    p->outer = 1;
    p->len = rows;
    p->inner = w->shape[1];
    p->m = ix->numel;
    snapshot_reserve(n);
    *ndim = ix->ndim + 1;
    if (ix->ndim)
        memcpy(shape, ix->shape, (size_t)ix->ndim * sizeof(int64_t));
    shape[ix->ndim] = w->shape[1];
    return TG_OK;
}

/* [2, 5] with repeats of rows 1 and 4 (their gradients add). */
static tg_index *embedding_index_repeats(tg_rng *rng)
{
    (void)rng;
    return case_index(2, (int64_t[]){2, 5}, (int64_t[]){1, 4, 0, 4, 1, 5, 1, 2, 4, 3});
}

/* [7] with row 2 picked twice and row 3 (the padding_idx of its case) never. The padding row's
 * zero gradient is by design not the derivative, so gradcheck can only see that no other row
 * is skipped; test_index checks the padding row against PyTorch. */
static tg_index *embedding_index_padding(tg_rng *rng)
{
    (void)rng;
    return case_index(1, (int64_t[]){7}, (int64_t[]){2, 0, 5, 2, 1, 4, 0});
}

/* A 0-d index: one row, result [D]. */
static tg_index *embedding_index_scalar(tg_rng *rng)
{
    return case_index(0, NULL, (int64_t[]){(int64_t)(tg_rng_u32(rng) % 6)});
}

/* [3, 2, 4] drawn from rows 0..4 of 6 (row 5 is the padding_idx): 24 draws, rows repeat. */
static tg_index *embedding_index_random(tg_rng *rng)
{
    tg_index *ix = case_index(3, (int64_t[]){3, 2, 4}, NULL);
    for (int64_t p = 0; ix && p < ix->numel; p++)
        ix->data[p] = (int64_t)(tg_rng_u32(rng) % 5);
    return ix;
}

static const tg_case embedding_cases[] = {
    {.shape = {{6, 4}},
     TG_CASE_PARAMS(take_params, .padding_idx = -1),
     .make_index = embedding_index_repeats,
     .name = "repeats"},
    {.shape = {{6, 3}},
     TG_CASE_PARAMS(take_params, .padding_idx = 3),
     .make_index = embedding_index_padding,
     .name = "padding_idx"},
    {.shape = {{6, 5}},
     TG_CASE_PARAMS(take_params, .padding_idx = -1),
     .make_index = embedding_index_scalar,
     .name = "scalar_index"},
    {.shape = {{6, 70}},
     TG_CASE_PARAMS(take_params, .padding_idx = 5),
     .make_index = embedding_index_random,
     .name = "two_chunks"},
    {0},
};

/* Second order: dweight = index_select_backward(dy * keep) along axis 0, keep[p] = 0 where
 * idx[p] is the padding_idx (a constant mask of idx's shape plus a 1), else 1. */
static tg_status embedding_backward_graph(tg_node *n, tg_tensor *gout, uint32_t need,
                                          tg_tensor **gin)
{
    (void)need; /* one input: the walk calls this only when it is needed */
    const take_params *p = TG_PARAMS(n, take_params);
    const int64_t *idx = n->scratch;
    const tg_index *ix = n->index;
    bool padded = false;
    for (int64_t k = 0; k < p->m; k++)
        padded |= idx[k] == p->padding_idx;
    if (padded) {
        int64_t shape[TG_MAX_DIMS];
        if (ix->ndim)
            memcpy(shape, ix->shape, (size_t)ix->ndim * sizeof(int64_t));
        shape[ix->ndim] = 1;
        tg_tensor *keep = tg_tape_adopt(tg_tensor_new(ix->ndim + 1, shape), "embedding");
        if (!keep)
            return tg_last_status();
        for (int64_t k = 0; k < p->m; k++)
            keep->data[k] = idx[k] == p->padding_idx ? 0.0f : 1.0f;
        if (!(gout = tg_mul(gout, keep)))
            return tg_last_status();
    }
    gin[0] = take_grad(gout, 0, p->len, n);
    return gin[0] ? TG_OK : tg_last_status();
}

TG_OP_DEFINE(embedding) = {.name = "embedding",
                           .n_in = 1,
                           .check = embedding_check,
                           .forward = take_forward,
                           .backward = take_backward,
                           .backward_graph = embedding_backward_graph,
                           .cases = embedding_cases};

tg_tensor *tg_embedding(tg_tensor *weight, const tg_index *idx, int64_t padding_idx)
{
    if (index_missing("tg_embedding", idx))
        return NULL;
    take_params p = {.padding_idx = padding_idx};
    return tg_apply_index(&tg_op_embedding, &p, sizeof p, 1, &weight, idx);
}

/* ---- index_select ---------------------------------------------------------------------------
 * x[outer, len, inner] (around axis), idx[m] -> y[outer, m, inner]: y[o, k, i] = x[o, idx[k], i];
 * dx[o, idx[k], i] += dy[o, k, i]. */
static tg_status index_select_check(tg_node *n, int *ndim, int64_t shape[])
{
    take_params *p = TG_PARAMS(n, take_params);
    const tg_tensor *x = n->in[0];
    const tg_index *ix = n->index;
    char s[160], s2[160];
    if (!ix)
        return tg_set_error(TG_ERR_ARG, "tg_index_select: idx is NULL");
    int axis = tg_axis(p->axis, x->ndim);
    if (axis < 0)
        return tg_set_error(TG_ERR_ARG, "tg_index_select: axis %d is out of range for %s", p->axis,
                            TG_SHAPE_STR(x, s));
    if (ix->ndim != 1)
        return tg_set_error(TG_ERR_SHAPE, "tg_index_select: idx %s must be 1-D",
                            tg_shape_str(ix->ndim, ix->shape, s2, sizeof s2));
    char what[200];
    snprintf(what, sizeof what, "axis %d of %s", p->axis, TG_SHAPE_STR(x, s));
    if (index_check("tg_index_select", ix, x->shape[axis], what) != TG_OK)
        return tg_last_status();
    p->axis = axis;
    p->padding_idx = -1;
    split_axis(x, axis, &p->outer, &p->inner);
    p->len = x->shape[axis];
    p->m = ix->numel;
    snapshot_reserve(n);
    *ndim = x->ndim;
    memcpy(shape, x->shape, (size_t)x->ndim * sizeof(int64_t));
    shape[axis] = p->m;
    return TG_OK;
}

/* [6] into an axis of 4: every position, 1 and 3 twice, in no order. */
static tg_index *index_select_index4(tg_rng *rng)
{
    (void)rng;
    return case_index(1, (int64_t[]){6}, (int64_t[]){3, 1, 0, 1, 3, 2});
}

/* [3] into an axis of 5: positions 0 and 2 never taken (their gradient stays 0). */
static tg_index *index_select_index5(tg_rng *rng)
{
    (void)rng;
    return case_index(1, (int64_t[]){3}, (int64_t[]){4, 1, 4});
}

static const tg_case index_select_cases[] = {
    {.shape = {{4, 3, 2}},
     TG_CASE_PARAMS(take_params, .axis = 0),
     .make_index = index_select_index4,
     .name = "axis0"},
    {.shape = {{2, 4, 3}},
     TG_CASE_PARAMS(take_params, .axis = 1),
     .make_index = index_select_index4,
     .name = "axis1"},
    {.shape = {{3, 2, 5}},
     TG_CASE_PARAMS(take_params, .axis = -1),
     .make_index = index_select_index5,
     .name = "last_axis"},
    {.shape = {{5, 70}},
     TG_CASE_PARAMS(take_params, .axis = 0),
     .make_index = index_select_index5,
     .name = "two_chunks"},
    {.shape = {{5}},
     TG_CASE_PARAMS(take_params, .axis = 0),
     .make_index = index_select_index5,
     .name = "1d"},
    {0},
};

/* Second order: dx = index_select_backward(dy) along the same axis. */
static tg_status index_select_backward_graph(tg_node *n, tg_tensor *gout, uint32_t need,
                                             tg_tensor **gin)
{
    (void)need;
    const take_params *p = TG_PARAMS(n, take_params);
    gin[0] = take_grad(gout, p->axis, p->len, n);
    return gin[0] ? TG_OK : tg_last_status();
}

TG_OP_DEFINE(index_select) = {.name = "index_select",
                              .n_in = 1,
                              .check = index_select_check,
                              .forward = take_forward,
                              .backward = take_backward,
                              .backward_graph = index_select_backward_graph,
                              .cases = index_select_cases};

tg_tensor *tg_index_select(tg_tensor *x, int axis, const tg_index *idx)
{
    if (index_missing("tg_index_select", idx))
        return NULL;
    take_params p = {.axis = axis, .padding_idx = -1};
    return tg_apply_index(&tg_op_index_select, &p, sizeof p, 1, &x, idx);
}

/* ---- index_select_backward (internal: the second order of embedding and index_select) -------
 * g and idx, whose dimensions g holds from params.axis on, -> dx of g's shape with those
 * dimensions replaced by one of params.len: dx[o, idx[k], i] = sum of g[o, k, i] over the k
 * with that index (an index_add into zeros, take_backward's scatter). Linear in g; its adjoint
 * is the take: dg[o, k, i] = dout[o, idx[k], i] (index_select, or embedding for another idx
 * than 1-D). */
static tg_status take_grad_check(tg_node *n, int *ndim, int64_t shape[])
{
    take_params *p = TG_PARAMS(n, take_params);
    const tg_tensor *g = n->in[0];
    const tg_index *ix = n->index;
    const char *fn = "index_select_backward";
    char s[160], s2[160];
    if (!ix)
        return tg_set_error(TG_ERR_ARG, "%s: idx is NULL", fn);
    tg_shape_str(ix->ndim, ix->shape, s2, sizeof s2);
    int k = ix->ndim;
    if (p->axis < 0 || p->axis + k > g->ndim || g->ndim - k + 1 > TG_MAX_DIMS ||
        (k && memcmp(g->shape + p->axis, ix->shape, (size_t)k * sizeof(int64_t)) != 0))
        return tg_set_error(TG_ERR_SHAPE,
                            "%s: g %s does not hold idx %s's dimensions from axis %d (or the "
                            "result would have more than %d)",
                            fn, TG_SHAPE_STR(g, s), s2, p->axis, TG_MAX_DIMS);
    if (p->len < 0)
        return tg_set_error(TG_ERR_ARG, "%s: len %lld must be >= 0", fn, (long long)p->len);
    if (index_check(fn, ix, p->len, "the result's indexed axis") != TG_OK)
        return tg_last_status();
    p->padding_idx = -1;
    p->outer = tg_shape_numel(p->axis, g->shape);
    p->inner = tg_shape_numel(g->ndim - p->axis - k, g->shape + p->axis + k);
    p->m = ix->numel;
    snapshot_reserve(n);
    *ndim = g->ndim - k + 1;
    memcpy(shape, g->shape, (size_t)p->axis * sizeof(int64_t));
    shape[p->axis] = p->len;
    memcpy(shape + p->axis + 1, g->shape + p->axis + k,
           (size_t)(g->ndim - p->axis - k) * sizeof(int64_t));
    if (tg_shape_numel(*ndim, shape) < 0)
        return tg_set_error(TG_ERR_SHAPE, "%s: g %s with len %lld: the result is too large", fn,
                            TG_SHAPE_STR(g, s), (long long)p->len);
    return TG_OK;
}

static void take_grad_forward(tg_node *n)
{
    const int64_t *idx = snapshot_take(n);
    memset(n->out->data, 0, (size_t)n->out->numel * sizeof(float));
    take_scatter(TG_PARAMS(n, take_params), idx, n->in[0]->data, n->out->data, n->in[0]->numel);
}

static void take_grad_backward(tg_node *n)
{
    float *dg = tg_grad_of(n, 0);
    if (dg)
        take_rows(TG_PARAMS(n, take_params), n->scratch, n->out->grad->data, dg, n->in[0]->numel,
                  true);
}

/* Third order: dg = the take of dout, index_select along the axis for a 1-D idx, else
 * embedding (the only other idx that reaches here: embedding's, with axis 0 of a 2-D dx). */
static tg_status take_grad_graph(tg_node *n, tg_tensor *gout, uint32_t need, tg_tensor **gin)
{
    (void)need;
    const take_params *p = TG_PARAMS(n, take_params);
    tg_index *ix = snapshot_index(n, "index_select_backward");
    take_params q = {.axis = p->axis, .padding_idx = -1};
    const tg_op *take = n->index->ndim == 1 ? &tg_op_index_select : &tg_op_embedding;
    gin[0] = ix ? tg_apply_index(take, &q, sizeof q, 1, &gout, ix) : NULL;
    return gin[0] ? TG_OK : tg_last_status();
}

static const tg_case take_grad_cases[] = {
    {.shape = {{6, 3, 2}},
     TG_CASE_PARAMS(take_params, .axis = 0, .len = 4),
     .make_index = index_select_index4,
     .name = "axis0"},
    {.shape = {{2, 6, 3}},
     TG_CASE_PARAMS(take_params, .axis = 1, .len = 4),
     .make_index = index_select_index4,
     .name = "axis1"},
    {.shape = {{3, 70}},
     TG_CASE_PARAMS(take_params, .axis = 0, .len = 5),
     .make_index = index_select_index5,
     .name = "two_chunks"},
    {.shape = {{2, 5, 4}},
     TG_CASE_PARAMS(take_params, .axis = 0, .len = 6),
     .make_index = embedding_index_repeats,
     .name = "embedding_2d_index"},
    {.shape = {{5}},
     TG_CASE_PARAMS(take_params, .axis = 0, .len = 6),
     .make_index = embedding_index_scalar,
     .name = "embedding_scalar_index"},
    {0},
};

TG_OP_DEFINE(index_select_backward) = {.name = "index_select_backward",
                                       .n_in = 1,
                                       .check = take_grad_check,
                                       .forward = take_grad_forward,
                                       .backward = take_grad_backward,
                                       .backward_graph = take_grad_graph,
                                       .cases = take_grad_cases};

/* ---- gather ---------------------------------------------------------------------------------
 * x and idx of the same ndim, idx no larger than x off the axis; y has idx's shape:
 * y[..., k, ...] = x[..., idx[..., k, ...], ...] (the index replaces the coordinate along axis);
 * dx[..., idx[..., k, ...], ...] += dy[..., k, ...].
 * Work is split by columns: the positions of idx that share their coordinates off the axis.
 * Columns read and write disjoint columns of x, so the backward adds a column's repeats in k
 * order on one thread. */
typedef struct {
    int axis;
} gather_params;

/* Offset in x of column c of idx (its coordinates off the axis, the axis coordinate 0); y has
 * idx's shape. */
static int64_t gather_x_base(const tg_tensor *x, const tg_tensor *y, int axis, int64_t c)
{
    int64_t off = 0, stride = 1;
    for (int d = x->ndim - 1; d >= 0; d--) {
        if (d != axis) {
            off += (c % y->shape[d]) * stride;
            c /= y->shape[d];
        }
        stride *= x->shape[d];
    }
    return off;
}

/* The layout of gather's work over x and y (of idx's shape): columns, their length m, and both
 * strides along the axis. */
static void gather_layout(int axis, const tg_tensor *x, const tg_tensor *y, int64_t *cols,
                          int64_t *m, int64_t *istride, int64_t *xstride)
{
    *m = y->shape[axis];
    *istride = 1;
    *xstride = 1;
    for (int d = axis + 1; d < x->ndim; d++) {
        *istride *= y->shape[d];
        *xstride *= x->shape[d];
    }
    *cols = *m ? y->numel / *m : 0;
}

static tg_status gather_check(tg_node *n, int *ndim, int64_t shape[])
{
    gather_params *p = TG_PARAMS(n, gather_params);
    const tg_tensor *x = n->in[0];
    const tg_index *ix = n->index;
    char s[160], s2[160];
    if (!ix)
        return tg_set_error(TG_ERR_ARG, "tg_gather: idx is NULL");
    int axis = tg_axis(p->axis, x->ndim);
    if (axis < 0)
        return tg_set_error(TG_ERR_ARG, "tg_gather: axis %d is out of range for %s", p->axis,
                            TG_SHAPE_STR(x, s));
    tg_shape_str(ix->ndim, ix->shape, s2, sizeof s2);
    if (ix->ndim != x->ndim)
        return tg_set_error(TG_ERR_SHAPE,
                            "tg_gather: idx %s has %d dimensions and x %s has %d; they must be "
                            "equal",
                            s2, ix->ndim, TG_SHAPE_STR(x, s), x->ndim);
    for (int d = 0; d < x->ndim; d++)
        if (d != axis && ix->shape[d] > x->shape[d])
            return tg_set_error(TG_ERR_SHAPE,
                                "tg_gather: idx %s is larger than x %s along axis %d (%lld > "
                                "%lld); only the gathered axis may be",
                                s2, TG_SHAPE_STR(x, s), d, (long long)ix->shape[d],
                                (long long)x->shape[d]);
    char what[200];
    snprintf(what, sizeof what, "axis %d of %s", p->axis, TG_SHAPE_STR(x, s));
    if (index_check("tg_gather", ix, x->shape[axis], what) != TG_OK)
        return tg_last_status();
    p->axis = axis;
    snapshot_reserve(n);
    *ndim = ix->ndim;
    memcpy(shape, ix->shape, (size_t)ix->ndim * sizeof(int64_t));
    return TG_OK;
}

/* yd[p] = xd[position p of idx in x] for x and y the shapes (add: yd[p] += ...). */
static void gather_take(int axis, const tg_tensor *x, const tg_tensor *y, const int64_t *idx,
                        const float *xd, float *yd, bool add)
{
    int64_t cols, m, is, xs;
    gather_layout(axis, x, y, &cols, &m, &is, &xs);
    TG_PARALLEL_FOR_WORK(cols, m)
    for (int64_t c = 0; c < cols; c++) {
        int64_t ib = (c / is) * m * is + c % is, xb = gather_x_base(x, y, axis, c);
        for (int64_t k = 0; k < m; k++) {
            float v = xd[xb + idx[ib + k * is] * xs];
            yd[ib + k * is] = add ? yd[ib + k * is] + v : v;
        }
    }
}

/* dxd[position p of idx in x] += dyd[p], each column's repeats in k order on one thread. */
static void gather_scatter(int axis, const tg_tensor *x, const tg_tensor *y, const int64_t *idx,
                           const float *dyd, float *dxd)
{
    int64_t cols, m, is, xs;
    gather_layout(axis, x, y, &cols, &m, &is, &xs);
    TG_PARALLEL_FOR_WORK(cols, m)
    for (int64_t c = 0; c < cols; c++) {
        int64_t ib = (c / is) * m * is + c % is, xb = gather_x_base(x, y, axis, c);
        for (int64_t k = 0; k < m; k++)
            dxd[xb + idx[ib + k * is] * xs] += dyd[ib + k * is];
    }
}

static void gather_forward(tg_node *n)
{
    const int64_t *idx = snapshot_take(n);
    gather_take(TG_PARAMS(n, gather_params)->axis, n->in[0], n->out, idx, n->in[0]->data,
                n->out->data, false);
}

static void gather_backward(tg_node *n)
{
    float *dx = tg_grad_of(n, 0);
    if (dx)
        gather_scatter(TG_PARAMS(n, gather_params)->axis, n->in[0], n->out, n->scratch,
                       n->out->grad->data, dx);
}

/* gather_backward of g, of the shape of x: the recorded dx of gather. */
static tg_tensor *gather_grad(tg_tensor *g, int axis, const tg_tensor *x, const tg_node *n);

/* Second order: dx = gather_backward(dy), the same scatter-add into zeros as a recorded op. */
static tg_status gather_backward_graph(tg_node *n, tg_tensor *gout, uint32_t need, tg_tensor **gin)
{
    (void)need; /* one input: the walk calls this only when it is needed */
    gin[0] = gather_grad(gout, TG_PARAMS(n, gather_params)->axis, n->in[0], n);
    return gin[0] ? TG_OK : tg_last_status();
}

/* idx [3, 4] into x [3, 5] along axis 1: repeats within rows. */
static tg_index *gather_index_rows(tg_rng *rng)
{
    (void)rng;
    return case_index(2, (int64_t[]){3, 4}, (int64_t[]){4, 0, 4, 1, 2, 2, 2, 3, 0, 1, 3, 4});
}

/* idx [4, 2] into x [3, 3] along axis 0: taller than x along the axis, narrower off it. */
static tg_index *gather_index_axis0(tg_rng *rng)
{
    (void)rng;
    return case_index(2, (int64_t[]){4, 2}, (int64_t[]){2, 0, 1, 1, 2, 0, 0, 2});
}

/* idx [2, 3, 2] into x [2, 4, 3] along axis 1, random (repeats likely). */
static tg_index *gather_index_middle(tg_rng *rng)
{
    tg_index *ix = case_index(3, (int64_t[]){2, 3, 2}, NULL);
    for (int64_t p = 0; ix && p < ix->numel; p++)
        ix->data[p] = (int64_t)(tg_rng_u32(rng) % 4);
    return ix;
}

/* idx [4, 1] into x [4, 6] along axis 1: the log-probability-at-label pattern. */
static tg_index *gather_index_labels(tg_rng *rng)
{
    (void)rng;
    return case_index(2, (int64_t[]){4, 1}, (int64_t[]){5, 0, 3, 3});
}

static const tg_case gather_cases[] = {
    {.shape = {{3, 5}},
     TG_CASE_PARAMS(gather_params, .axis = 1),
     .make_index = gather_index_rows,
     .name = "rows"},
    {.shape = {{3, 3}},
     TG_CASE_PARAMS(gather_params, .axis = 0),
     .make_index = gather_index_axis0,
     .name = "axis0_smaller"},
    {.shape = {{2, 4, 3}},
     TG_CASE_PARAMS(gather_params, .axis = 1),
     .make_index = gather_index_middle,
     .name = "middle_axis"},
    {.shape = {{4, 6}},
     TG_CASE_PARAMS(gather_params, .axis = -1),
     .make_index = gather_index_labels,
     .name = "labels"},
    {0},
};

TG_OP_DEFINE(gather) = {.name = "gather",
                        .n_in = 1,
                        .check = gather_check,
                        .forward = gather_forward,
                        .backward = gather_backward,
                        .backward_graph = gather_backward_graph,
                        .cases = gather_cases};

tg_tensor *tg_gather(tg_tensor *x, int axis, const tg_index *idx)
{
    if (index_missing("tg_gather", idx))
        return NULL;
    gather_params p = {.axis = axis};
    return tg_apply_index(&tg_op_gather, &p, sizeof p, 1, &x, idx);
}

/* ---- gather_backward (internal: gather's second order) ------------------------------------
 * g and idx of the same shape -> dx of params.shape (gather's x): dx[..., idx[..., k, ...], ...]
 * = the sum of g[..., k, ...] with that index (a scatter-add into zeros, gather's backward).
 * Linear in g; its adjoint is gather with the same index: dg = gather(dout). */
typedef struct {
    int axis;
    int ndim;
    int64_t shape[TG_MAX_DIMS];
} gather_grad_params;

static tg_status gather_grad_check(tg_node *n, int *ndim, int64_t shape[])
{
    const gather_grad_params *p = TG_PARAMS(n, gather_grad_params);
    const tg_tensor *g = n->in[0];
    const tg_index *ix = n->index;
    const char *fn = "gather_backward";
    char s[160], s2[160], s3[160];
    if (!ix)
        return tg_set_error(TG_ERR_ARG, "%s: idx is NULL", fn);
    tg_shape_str(p->ndim, p->shape, s3, sizeof s3);
    if (p->ndim < 1 || p->ndim > TG_MAX_DIMS || p->axis < 0 || p->axis >= p->ndim ||
        tg_shape_numel(p->ndim, p->shape) < 0)
        return tg_set_error(TG_ERR_ARG, "%s: x shape %s with axis %d is not valid", fn, s3,
                            p->axis);
    bool fits = g->ndim == p->ndim && ix->ndim == g->ndim &&
                memcmp(g->shape, ix->shape, (size_t)g->ndim * sizeof(int64_t)) == 0;
    for (int d = 0; fits && d < g->ndim; d++)
        fits = d == p->axis || g->shape[d] <= p->shape[d];
    if (!fits)
        return tg_set_error(TG_ERR_SHAPE, "%s: g %s and idx %s do not fit x %s along axis %d", fn,
                            TG_SHAPE_STR(g, s), tg_shape_str(ix->ndim, ix->shape, s2, sizeof s2),
                            s3, p->axis);
    if (index_check(fn, ix, p->shape[p->axis], "the gathered axis") != TG_OK)
        return tg_last_status();
    snapshot_reserve(n);
    *ndim = p->ndim;
    memcpy(shape, p->shape, (size_t)p->ndim * sizeof(int64_t));
    return TG_OK;
}

static void gather_grad_forward(tg_node *n)
{
    const int64_t *idx = snapshot_take(n);
    memset(n->out->data, 0, (size_t)n->out->numel * sizeof(float));
    gather_scatter(TG_PARAMS(n, gather_grad_params)->axis, n->out, n->in[0], idx, n->in[0]->data,
                   n->out->data);
}

static void gather_grad_backward(tg_node *n)
{
    float *dg = tg_grad_of(n, 0);
    if (dg)
        gather_take(TG_PARAMS(n, gather_grad_params)->axis, n->out, n->in[0], n->scratch,
                    n->out->grad->data, dg, true);
}

static tg_tensor *gather_grad(tg_tensor *g, int axis, const tg_tensor *x, const tg_node *n)
{
    gather_grad_params q = {.axis = axis, .ndim = x->ndim};
    memcpy(q.shape, x->shape, (size_t)x->ndim * sizeof(int64_t));
    tg_index *ix = snapshot_index(n, "gather_backward");
    return ix ? tg_apply_index(&tg_op_gather_backward, &q, sizeof q, 1, &g, ix) : NULL;
}

/* Third order: dg = gather(dout) with the same index. */
static tg_status gather_grad_graph(tg_node *n, tg_tensor *gout, uint32_t need, tg_tensor **gin)
{
    (void)need;
    gather_params q = {.axis = TG_PARAMS(n, gather_grad_params)->axis};
    tg_index *ix = snapshot_index(n, "gather_backward");
    gin[0] = ix ? tg_apply_index(&tg_op_gather, &q, sizeof q, 1, &gout, ix) : NULL;
    return gin[0] ? TG_OK : tg_last_status();
}

static const tg_case gather_grad_cases[] = {
    {.shape = {{3, 4}},
     TG_CASE_PARAMS(gather_grad_params, .axis = 1, .ndim = 2, .shape = {3, 5}),
     .make_index = gather_index_rows,
     .name = "rows"},
    {.shape = {{4, 2}},
     TG_CASE_PARAMS(gather_grad_params, .axis = 0, .ndim = 2, .shape = {3, 3}),
     .make_index = gather_index_axis0,
     .name = "axis0_smaller"},
    {.shape = {{2, 3, 2}},
     TG_CASE_PARAMS(gather_grad_params, .axis = 1, .ndim = 3, .shape = {2, 4, 3}),
     .make_index = gather_index_middle,
     .name = "middle_axis"},
    {0},
};

TG_OP_DEFINE(gather_backward) = {.name = "gather_backward",
                                 .n_in = 1,
                                 .check = gather_grad_check,
                                 .forward = gather_grad_forward,
                                 .backward = gather_grad_backward,
                                 .backward_graph = gather_grad_graph,
                                 .cases = gather_grad_cases};

/* ---- results that are not differentiated ------------------------------------------------ */

/* The usual input test of a non-op function: NULL keeps an earlier error, TG_NONE is refused. */
static bool tensor_missing(const char *fn, const char *name, const tg_tensor *t)
{
    if (t && t != TG_NONE)
        return false;
    if (t || tg_last_status() == TG_OK)
        tg_set_error(TG_ERR_ARG, "%s: %s is %s", fn, name, t ? "TG_NONE" : "NULL");
    return true;
}

tg_tensor *tg_one_hot(const tg_index *idx, int64_t classes)
{
    if (index_missing("tg_one_hot", idx))
        return NULL;
    char s[160];
    if (idx->ndim + 1 > TG_MAX_DIMS) {
        tg_set_error(TG_ERR_SHAPE,
                     "tg_one_hot: idx %s has %d dimensions; the result would have %d, more "
                     "than %d",
                     tg_shape_str(idx->ndim, idx->shape, s, sizeof s), idx->ndim, idx->ndim + 1,
                     TG_MAX_DIMS);
        return NULL;
    }
    if (classes < 1) {
        tg_set_error(TG_ERR_ARG, "tg_one_hot: classes is %lld; it must be >= 1",
                     (long long)classes);
        return NULL;
    }
    if (index_check("tg_one_hot", idx, classes, "the classes") != TG_OK)
        return NULL;
    int64_t shape[TG_MAX_DIMS];
    if (idx->ndim)
        memcpy(shape, idx->shape, (size_t)idx->ndim * sizeof(int64_t));
    shape[idx->ndim] = classes;
    tg_tensor *t = tg_tensor_zeros(idx->ndim + 1, shape);
    if (t)
        for (int64_t p = 0; p < idx->numel; p++)
            t->data[p * classes + idx->data[p]] = 1.0f;
    return tg_tape_adopt(t, "one_hot");
}

/* ---- argmax / argmin ----------------------------------------------------------------------
 * x[outer, len, inner] -> idx[outer, inner]: the first k with the extreme x[o, k, i]; the first
 * NaN when there is one (NaN propagates through max and min in PyTorch, so it is both). */

/* Columns handled together by one scan (their running extremes live on the stack). */
#define ARG_TILE 128

/* True when v replaces the best so far b: strictly better, or the first NaN. */
static inline bool arg_better(float v, float b, bool max)
{
    if (v != v)
        return b == b;
    return max ? v > b : v < b;
}

static tg_index *arg_extreme(const char *fn, const char *origin, tg_tensor *x, int axis,
                             bool keepdim, bool max)
{
    if (tensor_missing(fn, "x", x))
        return NULL;
    char s[160];
    int a = tg_axis(axis, x->ndim);
    if (a < 0) {
        tg_set_error(TG_ERR_ARG, "%s: axis %d is out of range for %s", fn, axis,
                     TG_SHAPE_STR(x, s));
        return NULL;
    }
    int64_t outer, inner, len = x->shape[a];
    split_axis(x, a, &outer, &inner);
    if (len == 0 && outer * inner > 0) {
        tg_set_error(TG_ERR_SHAPE, "%s: axis %d of %s is empty; it has no %s", fn, axis,
                     TG_SHAPE_STR(x, s), max ? "maximum" : "minimum");
        return NULL;
    }
    int ndim = 0;
    int64_t shape[TG_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++)
        if (d != a || keepdim)
            shape[ndim++] = d == a ? 1 : x->shape[d];
    tg_index *ix = tg_index_new(ndim, shape, NULL);
    if (!ix)
        return NULL;
    int64_t tiles = (inner + ARG_TILE - 1) / ARG_TILE, items = outer * tiles;
    const float *xd = x->data;
    int64_t *out = ix->data;
    TG_PARALLEL_FOR_WORK(items, len * (inner < ARG_TILE ? inner : ARG_TILE))
    for (int64_t it = 0; it < items; it++) {
        int64_t o = it / tiles, i0 = (it % tiles) * ARG_TILE;
        int64_t w = inner - i0 < ARG_TILE ? inner - i0 : ARG_TILE;
        const float *base = xd + o * len * inner + i0;
        float best[ARG_TILE];
        int64_t at[ARG_TILE];
        for (int64_t i = 0; i < w; i++) {
            best[i] = base[i];
            at[i] = 0;
        }
        for (int64_t k = 1; k < len; k++)
            for (int64_t i = 0; i < w; i++)
                if (arg_better(base[k * inner + i], best[i], max)) {
                    best[i] = base[k * inner + i];
                    at[i] = k;
                }
        memcpy(out + o * inner + i0, at, (size_t)w * sizeof(int64_t));
    }
    return tg_tape_adopt_index(ix, origin);
}

tg_index *tg_argmax(tg_tensor *x, int axis, bool keepdim)
{
    return arg_extreme("tg_argmax", "argmax", x, axis, keepdim, true);
}

tg_index *tg_argmin(tg_tensor *x, int axis, bool keepdim)
{
    return arg_extreme("tg_argmin", "argmin", x, axis, keepdim, false);
}

/* The values come from tg_max_axis (differentiable; its backward routes the gradient to the
 * same first maximum, NaN included), the positions from tg_argmax. */
tg_tensor *tg_max_axis_indices(tg_tensor *x, int axis, bool keepdim, tg_index **indices)
{
    if (!indices) {
        tg_set_error(TG_ERR_ARG, "tg_max_axis_indices: indices is NULL");
        return NULL;
    }
    *indices = NULL;
    tg_tensor *y = tg_max_axis(x, axis, keepdim);
    if (!y)
        return NULL;
    /* y belongs to the tape, which frees it if the indices fail. */
    *indices = tg_argmax(x, axis, keepdim);
    return *indices ? y : NULL;
}

/* ---- sampling ------------------------------------------------------------------------------ */

/* A uniform double in [0, 1) with 53 random bits. */
static double uniform53(tg_rng *rng)
{
    uint64_t a = tg_rng_u32(rng) >> 5, b = tg_rng_u32(rng) >> 6;
    return (double)(a << 26 | b) * (1.0 / 9007199254740992.0);
}

/* A uniform point of [0, total) for total > 0: the product with a u just below 1 may round up
 * to total itself, which no cumulative weight exceeds. */
static double uniform_below(tg_rng *rng, double total)
{
    double u = uniform53(rng) * total;
    return u < total ? u : nextafter(total, 0.0);
}

/* The first k with cdf[k] > u, for 0 <= u < cdf[n-1] (skips zero weights, whose cdf does not
 * rise). */
static int64_t cdf_search(const double *cdf, int64_t n, double u)
{
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (cdf[mid] > u)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* An Efraimidis-Spirakis key: the draws without replacement are the num_samples largest keys,
 * in decreasing order. */
typedef struct {
    double key;
    int64_t k;
} es_key;

static int es_key_cmp(const void *a, const void *b)
{
    const es_key *x = a, *y = b;
    if (x->key != y->key)
        return x->key > y->key ? -1 : 1;
    return x->k < y->k ? -1 : x->k > y->k;
}

tg_index *tg_multinomial(tg_tensor *probs, int64_t num_samples, bool replacement, tg_rng *rng)
{
    const char *fn = "tg_multinomial";
    if (tensor_missing(fn, "probs", probs))
        return NULL;
    char s[160];
    if (!rng) {
        tg_set_error(TG_ERR_ARG, "%s: rng is NULL", fn);
        return NULL;
    }
    if (probs->ndim != 1 && probs->ndim != 2) {
        tg_set_error(TG_ERR_SHAPE, "%s: probs %s must be [C] or [N, C]", fn,
                     TG_SHAPE_STR(probs, s));
        return NULL;
    }
    int64_t rows = probs->ndim == 2 ? probs->shape[0] : 1, c = probs->shape[probs->ndim - 1];
    if (num_samples < 1) {
        tg_set_error(TG_ERR_ARG, "%s: num_samples is %lld; it must be >= 1", fn,
                     (long long)num_samples);
        return NULL;
    }
    /* Validate every weight and row first: nothing is drawn from rng on an error. */
    for (int64_t r = 0; r < rows; r++) {
        const float *w = probs->data + r * c;
        int64_t nonzero = 0;
        for (int64_t k = 0; k < c; k++) {
            if (!(w[k] >= 0.0f) || isinf(w[k])) {
                tg_set_error(TG_ERR_ARG,
                             "%s: weight %g at row %lld, column %lld of probs %s; weights must "
                             "be finite and >= 0",
                             fn, (double)w[k], (long long)r, (long long)k, TG_SHAPE_STR(probs, s));
                return NULL;
            }
            nonzero += w[k] > 0.0f;
        }
        if (nonzero == 0) {
            tg_set_error(TG_ERR_ARG, "%s: row %lld of probs %s has no positive weight", fn,
                         (long long)r, TG_SHAPE_STR(probs, s));
            return NULL;
        }
        if (!replacement && num_samples > nonzero) {
            tg_set_error(TG_ERR_ARG,
                         "%s: %lld samples without replacement from row %lld of probs %s, "
                         "which has %lld positive weights",
                         fn, (long long)num_samples, (long long)r, TG_SHAPE_STR(probs, s),
                         (long long)nonzero);
            return NULL;
        }
    }
    int64_t shape[2] = {rows, num_samples};
    bool two_d = probs->ndim == 2;
    tg_index *ix = tg_index_new(two_d ? 2 : 1, two_d ? shape : shape + 1, NULL);
    /* One row's work buffer (c >= 1 here when rows > 0: each row has a positive weight); none
     * for no rows, where an empty probs may have any c, so c * elem is checked before use. */
    const size_t elem = replacement ? sizeof(double) : sizeof(es_key);
    const bool overflow = (uint64_t)c > SIZE_MAX / elem;
    void *work = ix && rows > 0 && !overflow ? malloc((size_t)c * elem) : NULL;
    if (ix && rows > 0 && !work) {
        tg_set_error(TG_ERR_NOMEM, "%s: out of memory for %lld weights", fn, (long long)c);
        tg_index_release(ix);
        return NULL;
    }
    /* Given to the tape before drawing, so that a missing tape consumes no random numbers. */
    ix = tg_tape_adopt_index(ix, "multinomial");
    if (!ix) {
        free(work);
        return NULL;
    }
    for (int64_t r = 0; r < rows; r++) {
        const float *w = probs->data + r * c;
        int64_t *out = ix->data + r * num_samples;
        if (replacement) {
            double *cdf = work, total = 0.0;
            for (int64_t k = 0; k < c; k++)
                cdf[k] = total += (double)w[k];
            for (int64_t j = 0; j < num_samples; j++)
                out[j] = cdf_search(cdf, c, uniform_below(rng, total));
        } else {
            /* key = log(u) / w for u in (0, 1]: the largest keys are a draw of the positive
             * weights one after another, each without the ones drawn before. */
            es_key *keys = work;
            int64_t n = 0;
            for (int64_t k = 0; k < c; k++)
                if (w[k] > 0.0f)
                    keys[n++] = (es_key){log(1.0 - uniform53(rng)) / (double)w[k], k};
            qsort(keys, (size_t)n, sizeof *keys, es_key_cmp);
            for (int64_t j = 0; j < num_samples; j++)
                out[j] = keys[j].k;
        }
    }
    free(work);
    return ix;
}

tg_index *tg_categorical(tg_tensor *logits, float temperature, tg_rng *rng)
{
    const char *fn = "tg_categorical";
    if (tensor_missing(fn, "logits", logits))
        return NULL;
    char s[160];
    if (!rng) {
        tg_set_error(TG_ERR_ARG, "%s: rng is NULL", fn);
        return NULL;
    }
    if (!(temperature > 0.0f) || isinf(temperature)) {
        tg_set_error(TG_ERR_ARG, "%s: temperature %g; it must be finite and > 0", fn,
                     (double)temperature);
        return NULL;
    }
    if (logits->ndim < 1) {
        tg_set_error(TG_ERR_SHAPE, "%s: logits %s must have a class axis", fn,
                     TG_SHAPE_STR(logits, s));
        return NULL;
    }
    int64_t c = logits->shape[logits->ndim - 1], rows = c ? logits->numel / c : 0;
    if (c == 0 && tg_shape_numel(logits->ndim - 1, logits->shape) > 0) {
        tg_set_error(TG_ERR_SHAPE, "%s: logits %s have no classes", fn, TG_SHAPE_STR(logits, s));
        return NULL;
    }
    /* -inf is a class of probability 0; NaN and +inf have no meaning as a logit. */
    for (int64_t r = 0; r < rows; r++) {
        const float *x = logits->data + r * c;
        bool any = false;
        for (int64_t k = 0; k < c; k++) {
            if (x[k] != x[k] || x[k] == INFINITY) {
                tg_set_error(TG_ERR_ARG, "%s: logit %g at row %lld, class %lld of %s", fn,
                             (double)x[k], (long long)r, (long long)k, TG_SHAPE_STR(logits, s));
                return NULL;
            }
            any |= x[k] != -INFINITY;
        }
        if (!any) {
            tg_set_error(TG_ERR_ARG, "%s: row %lld of logits %s is all -inf", fn, (long long)r,
                         TG_SHAPE_STR(logits, s));
            return NULL;
        }
    }
    tg_index *ix =
        tg_tape_adopt_index(tg_index_new(logits->ndim - 1, logits->shape, NULL), "categorical");
    if (!ix)
        return NULL;
    double inv_t = 1.0 / (double)temperature;
    for (int64_t r = 0; r < rows; r++) {
        const float *x = logits->data + r * c;
        float m = -INFINITY;
        for (int64_t k = 0; k < c; k++)
            m = x[k] > m ? x[k] : m;
        /* Two passes over the same exps in the same order: the second stops where the running
         * sum first exceeds u, which it reaches since u < total. */
        double total = 0.0;
        for (int64_t k = 0; k < c; k++)
            total += exp(((double)x[k] - m) * inv_t);
        double u = uniform_below(rng, total), acc = 0.0;
        int64_t pick = -1;
        for (int64_t k = 0; k < c && pick < 0; k++) {
            double e = exp(((double)x[k] - m) * inv_t);
            acc += e;
            if (acc > u)
                pick = k;
        }
        ix->data[r] = pick;
    }
    return ix;
}
