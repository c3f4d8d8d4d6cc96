/* Comparisons, where and masked_fill: masks and the selections made with them.
 *
 * Broadcasting values and gradients is not written again here (only the shape rule, for up to
 * three inputs, is: select_shape). An input whose shape differs from the result's is first
 * expanded to it by tg_mul with a tape-owned tensor of ones (x * 1 is x exactly, for -0, inf
 * and NaN too), so the elementwise ops' broadcasting makes the copy and, for a and b of where,
 * their backward sums the gradient over the broadcast axes. The kernels below then only see
 * tensors of the result's shape, or a one-element operand that is not differentiated (a scalar
 * threshold, a scalar mask), read with stride 0 instead of being expanded. The price is one
 * extra pass over the result for each broadcast input; the common cases (same shapes, a
 * one-element threshold or mask) pay nothing.
 *
 * Masks carry no gradient. The comparisons are not ops: they compute their result and give it
 * to the tape (tg_tape_adopt) without a node, so nothing is recorded and a backward that reaches
 * a mask (tg_mul(x, mask)) finds a leaf that needs no gradient. where and masked_fill never
 * differentiate cond or mask: the wrappers detach them, and the ops' backward skips them. */
#include "internal.h"
#include "ops.h"

#include "../tensor/parallel.h"

#include <stdio.h>
#include <string.h>

/* The k inputs of a public function, named for messages: present (a NULL from an earlier
 * failure keeps that error) and not TG_NONE. */
static bool select_inputs_ok(const char *fn, int k, tg_tensor *const *in, const char *const *names)
{
    for (int i = 0; i < k; i++) {
        if (!in[i] || in[i] == TG_NONE) {
            if (in[i] || tg_last_status() == TG_OK)
                tg_set_error(TG_ERR_ARG, "%s: %s is %s", fn, names[i],
                             in[i] ? "TG_NONE, which stands for an absent optional input; "
                                     "this one is required"
                                   : "NULL");
            return false;
        }
    }
    return true;
}

/* The NumPy broadcast shape of the k inputs (right-aligned; sizes equal or 1), or the error
 * naming every input's shape and the first axis that does not fit. */
static tg_status select_shape(const char *fn, int k, tg_tensor *const *in, const char *const *names,
                              int *ndim, int64_t shape[])
{
    int nd = 0;
    for (int i = 0; i < k; i++)
        nd = in[i]->ndim > nd ? in[i]->ndim : nd;
    for (int d = 0; d < nd; d++) {
        shape[d] = 1;
        for (int i = 0; i < k; i++) {
            const int j = d - (nd - in[i]->ndim);
            const int64_t s = j >= 0 ? in[i]->shape[j] : 1;
            if (s == 1 || s == shape[d]) {
                continue;
            } else if (shape[d] == 1) {
                shape[d] = s;
                continue;
            }
            char msg[512], sh[160];
            int len = 0;
            for (int q = 0; q < k; q++)
                len += snprintf(msg + len, sizeof msg - (size_t)len, "%s%s %s",
                                q == 0       ? ""
                                : q == k - 1 ? " and "
                                             : ", ",
                                names[q], TG_SHAPE_STR(in[q], sh));
            return tg_set_error(TG_ERR_SHAPE,
                                "%s: %s: shapes do not broadcast (axis %d: %lld vs %lld)", fn, msg,
                                d - nd, (long long)shape[d], (long long)s);
        }
    }
    if (tg_shape_numel(nd, shape) < 0) {
        char so[160];
        return tg_set_error(TG_ERR_SHAPE, "%s: the broadcast shape %s has too many elements", fn,
                            tg_shape_str(nd, shape, so, sizeof so));
    }
    *ndim = nd;
    return TG_OK;
}

/* t as a tensor of the given shape, which it broadcasts to: t itself when it has that shape
 * (or, when it is not differentiated, one element: read with stride 0), else t * ones. A mask
 * or a comparison operand (differentiable false) is detached first, so that nothing records. */
static tg_tensor *select_expand(tg_tensor *t, int ndim, const int64_t *shape, bool differentiable)
{
    if (!differentiable && t->requires_grad && !(t = tg_detach(t)))
        return NULL;
    if (t->ndim == ndim && !memcmp(t->shape, shape, (size_t)ndim * sizeof *shape))
        return t;
    if (!differentiable && t->numel == 1)
        return t;
    return tg_mul(t, tg_ones(ndim, shape));
}

/* Input t's stride along a flat loop over n elements: 1, or 0 for a one-element operand. */
static inline int64_t select_stride(const tg_tensor *t, int64_t n)
{
    return t->numel == n ? 1 : 0;
}

/* ---- comparisons (not ops: no gradient, no node) ------------------------------------------
 * y[i] = a[i] REL b[i] ? 1 : 0 over the broadcast shape; NaN compares false except in ne. */
typedef enum { CMP_EQ, CMP_NE, CMP_LT, CMP_LE, CMP_GT, CMP_GE } cmp_rel;

#define CMP_LOOP(REL)                                                                              \
    do {                                                                                           \
        TG_PARALLEL_FOR(n)                                                                         \
        for (int64_t i = 0; i < n; i++)                                                            \
            y[i] = a[i * sa] REL b[i * sb] ? 1.0f : 0.0f;                                          \
    } while (0)

static void compare_kernel(cmp_rel rel, float *y, const float *a, int64_t sa, const float *b,
                           int64_t sb, int64_t n)
{
    switch (rel) {
    case CMP_EQ: CMP_LOOP(==); break;
    case CMP_NE: CMP_LOOP(!=); break;
    case CMP_LT: CMP_LOOP(<); break;
    case CMP_LE: CMP_LOOP(<=); break;
    case CMP_GT: CMP_LOOP(>); break;
    case CMP_GE: CMP_LOOP(>=); break;
    }
}

/* name is the public function's ("tg_eq"); name + 3 names the tape's result ("eq"). */
static tg_tensor *compare(const char *name, cmp_rel rel, tg_tensor *a, tg_tensor *b)
{
    static const char *const names[2] = {"a", "b"};
    tg_tensor *in[2] = {a, b};
    int ndim;
    int64_t shape[TG_MAX_DIMS];
    if (!select_inputs_ok(name, 2, in, names) ||
        select_shape(name, 2, in, names, &ndim, shape) != TG_OK)
        return NULL;
    /* Adopted first, so that a missing tape is reported under the comparison's name. */
    tg_tensor *y = tg_tape_adopt(tg_tensor_new(ndim, shape), name + 3);
    if (!y)
        return NULL;
    for (int i = 0; i < 2; i++)
        if (!(in[i] = select_expand(in[i], ndim, shape, false)))
            return NULL; /* y belongs to the tape */
    const int64_t n = y->numel;
    compare_kernel(rel, y->data, in[0]->data, select_stride(in[0], n), in[1]->data,
                   select_stride(in[1], n), n);
    return y;
}

tg_tensor *tg_eq(tg_tensor *a, tg_tensor *b)
{
    return compare("tg_eq", CMP_EQ, a, b);
}

tg_tensor *tg_ne(tg_tensor *a, tg_tensor *b)
{
    return compare("tg_ne", CMP_NE, a, b);
}

tg_tensor *tg_lt(tg_tensor *a, tg_tensor *b)
{
    return compare("tg_lt", CMP_LT, a, b);
}

tg_tensor *tg_le(tg_tensor *a, tg_tensor *b)
{
    return compare("tg_le", CMP_LE, a, b);
}

tg_tensor *tg_gt(tg_tensor *a, tg_tensor *b)
{
    return compare("tg_gt", CMP_GT, a, b);
}

tg_tensor *tg_ge(tg_tensor *a, tg_tensor *b)
{
    return compare("tg_ge", CMP_GE, a, b);
}

/* Masks of 0 and 1 (about half each) for the cases' cond and mask inputs; other inputs from
 * [-1, 1]. */
static void select_case_init(int i, tg_tensor *t, tg_rng *rng)
{
    for (int64_t e = 0; e < t->numel; e++)
        t->data[e] = i == 0 ? (float)(tg_rng_u32(rng) & 1u) : -1.0f + 2.0f * tg_rng_uniform01(rng);
}

/* ---- where ---------------------------------------------------------------------------------
 * Inputs cond, a, b of one shape (cond may have one element). y = cond != 0 ? a : b;
 * da (+)= cond != 0 ? dy : 0;  db (+)= cond != 0 ? 0 : dy.  cond gets no gradient. */
static tg_status where_check(tg_node *n, int *ndim, int64_t shape[])
{
    const tg_tensor *c = n->in[0], *a = n->in[1], *b = n->in[2];
    char sc[160], sa[160], sb[160];
    if (!tg_shape_equal(a, b) || (c->numel != 1 && !tg_shape_equal(c, a)))
        return tg_set_error(TG_ERR_SHAPE,
                            "tg_where: cond %s, a %s and b %s must have one shape (cond may be "
                            "one element)",
                            TG_SHAPE_STR(c, sc), TG_SHAPE_STR(a, sa), TG_SHAPE_STR(b, sb));
    *ndim = a->ndim;
    memcpy(shape, a->shape, (size_t)a->ndim * sizeof(int64_t));
    return TG_OK;
}

static void where_forward(tg_node *n)
{
    const int64_t N = n->out->numel, sc = select_stride(n->in[0], N);
    const float *c = n->in[0]->data, *a = n->in[1]->data, *b = n->in[2]->data;
    float *y = n->out->data;
    TG_PARALLEL_FOR(N)
    for (int64_t i = 0; i < N; i++)
        y[i] = c[i * sc] != 0.0f ? a[i] : b[i];
}

static void where_backward(tg_node *n)
{
    const int64_t N = n->out->numel, sc = select_stride(n->in[0], N);
    const float *c = n->in[0]->data, *dy = n->out->grad->data;
    for (int k = 1; k <= 2; k++) {
        float *g = tg_grad_of(n, k);
        if (!g)
            continue;
        /* a takes dy where cond holds, b where it does not. */
        const bool to_a = k == 1, fresh = tg_grad_fresh(n, k);
        TG_PARALLEL_FOR(N)
        for (int64_t i = 0; i < N; i++) {
            const float v = (c[i * sc] != 0.0f) == to_a ? dy[i] : 0.0f;
            g[i] = fresh ? v : g[i] + v;
        }
    }
}

/* Second order: da = where(cond, dy, 0), db = where(cond, 0, dy); cond is a constant. */
static tg_status where_backward_graph(tg_node *n, tg_tensor *gout, uint32_t need, tg_tensor **gin)
{
    tg_tensor *zero = tg_zeros(gout->ndim, gout->shape);
    if (!zero)
        return tg_last_status();
    if (tg_graph_needs(need, 1) && !(gin[1] = tg_where(n->in[0], gout, zero)))
        return tg_last_status();
    if (tg_graph_needs(need, 2) && !(gin[2] = tg_where(n->in[0], zero, gout)))
        return tg_last_status();
    return TG_OK;
}

static const tg_case where_cases[] = {
    {.shape = {{3, 4}, {3, 4}, {3, 4}}, .no_grad = 1u, .init = select_case_init, .name = "3x4"},
    {.shape = {{2, 3, 2}, {2, 3, 2}, {2, 3, 2}},
     .no_grad = 1u,
     .init = select_case_init,
     .name = "3d"},
    {.shape = {{0}, {2, 3}, {2, 3}},
     .no_grad = 1u,
     .init = select_case_init,
     .name = "scalar_cond"},
    {0},
};
TG_OP_DEFINE(where) = {.name = "where",
                       .n_in = 3,
                       .check = where_check,
                       .forward = where_forward,
                       .backward = where_backward,
                       .backward_graph = where_backward_graph,
                       .cases = where_cases,
                       .fresh_grads = true};

tg_tensor *tg_where(tg_tensor *cond, tg_tensor *a, tg_tensor *b)
{
    static const char *const names[3] = {"cond", "a", "b"};
    tg_tensor *in[3] = {cond, a, b};
    int ndim;
    int64_t shape[TG_MAX_DIMS];
    if (!select_inputs_ok("tg_where", 3, in, names) ||
        select_shape("tg_where", 3, in, names, &ndim, shape) != TG_OK)
        return NULL;
    in[0] = select_expand(cond, ndim, shape, false);
    in[1] = in[0] ? select_expand(a, ndim, shape, true) : NULL;
    in[2] = in[1] ? select_expand(b, ndim, shape, true) : NULL;
    return tg_apply(&tg_op_where, NULL, 0, 3, in); /* a NULL keeps its error */
}

/* ---- masked_fill ---------------------------------------------------------------------------
 * Inputs x and mask of one shape (mask may have one element), params value.
 * y = mask != 0 ? value : x;  dx (+)= mask != 0 ? 0 : dy.  mask gets no gradient. */
typedef struct {
    float value;
} masked_fill_params;

static tg_status masked_fill_check(tg_node *n, int *ndim, int64_t shape[])
{
    const tg_tensor *x = n->in[0], *m = n->in[1];
    char sx[160], sm[160];
    if (m->numel != 1 && !tg_shape_equal(m, x))
        return tg_set_error(TG_ERR_SHAPE,
                            "tg_masked_fill: mask %s must have x's shape %s (or one element)",
                            TG_SHAPE_STR(m, sm), TG_SHAPE_STR(x, sx));
    *ndim = x->ndim;
    memcpy(shape, x->shape, (size_t)x->ndim * sizeof(int64_t));
    return TG_OK;
}

static void masked_fill_forward(tg_node *n)
{
    const float value = TG_PARAMS(n, masked_fill_params)->value;
    const int64_t N = n->out->numel, sm = select_stride(n->in[1], N);
    const float *x = n->in[0]->data, *m = n->in[1]->data;
    float *y = n->out->data;
    TG_PARALLEL_FOR(N)
    for (int64_t i = 0; i < N; i++)
        y[i] = m[i * sm] != 0.0f ? value : x[i];
}

static void masked_fill_backward(tg_node *n)
{
    float *dx = tg_grad_of(n, 0);
    if (!dx)
        return;
    const int64_t N = n->out->numel, sm = select_stride(n->in[1], N);
    const float *m = n->in[1]->data, *dy = n->out->grad->data;
    const bool fresh = tg_grad_fresh(n, 0);
    TG_PARALLEL_FOR(N)
    for (int64_t i = 0; i < N; i++) {
        const float v = m[i * sm] != 0.0f ? 0.0f : dy[i];
        dx[i] = fresh ? v : dx[i] + v;
    }
}

/* Second order: dx = masked_fill(dy, mask, 0); mask is a constant. */
static tg_status masked_fill_backward_graph(tg_node *n, tg_tensor *gout, uint32_t need,
                                            tg_tensor **gin)
{
    (void)need; /* only x (input 0) is differentiated */
    gin[0] = tg_masked_fill(gout, n->in[1], 0.0f);
    return gin[0] ? TG_OK : tg_last_status();
}

/* x from [-1, 1], the mask (input 1) of 0 and 1. */
static void masked_fill_case_init(int i, tg_tensor *t, tg_rng *rng)
{
    select_case_init(1 - i, t, rng);
}

static const tg_case masked_fill_cases[] = {
    {.shape = {{3, 4}, {3, 4}},
     TG_CASE_PARAMS(masked_fill_params, -2.5f),
     .no_grad = 1u << 1,
     .init = masked_fill_case_init,
     .name = "3x4"},
    {.shape = {{2, 2, 3}, {2, 2, 3}},
     TG_CASE_PARAMS(masked_fill_params, 0.0f),
     .no_grad = 1u << 1,
     .init = masked_fill_case_init,
     .name = "3d_zero"},
    {.shape = {{2, 3}, {0}},
     TG_CASE_PARAMS(masked_fill_params, 1.0f),
     .no_grad = 1u << 1,
     .init = masked_fill_case_init,
     .name = "scalar_mask"},
    {0},
};
TG_OP_DEFINE(masked_fill) = {.name = "masked_fill",
                             .n_in = 2,
                             .check = masked_fill_check,
                             .forward = masked_fill_forward,
                             .backward = masked_fill_backward,
                             .backward_graph = masked_fill_backward_graph,
                             .cases = masked_fill_cases,
                             .fresh_grads = true};

tg_tensor *tg_masked_fill(tg_tensor *x, tg_tensor *mask, float value)
{
    static const char *const names[2] = {"x", "mask"};
    tg_tensor *in[2] = {x, mask};
    int ndim;
    int64_t shape[TG_MAX_DIMS];
    if (!select_inputs_ok("tg_masked_fill", 2, in, names) ||
        select_shape("tg_masked_fill", 2, in, names, &ndim, shape) != TG_OK)
        return NULL;
    /* The result has x's shape: the mask may broadcast to x, not x to the mask. */
    if (ndim != x->ndim || memcmp(shape, x->shape, (size_t)ndim * sizeof *shape)) {
        char sx[160], sm[160];
        tg_set_error(TG_ERR_SHAPE, "tg_masked_fill: mask %s does not broadcast to x %s",
                     TG_SHAPE_STR(mask, sm), TG_SHAPE_STR(x, sx));
        return NULL;
    }
    in[1] = select_expand(mask, ndim, shape, false);
    const masked_fill_params p = {value};
    return tg_apply(&tg_op_masked_fill, &p, sizeof p, 2, in);
}
