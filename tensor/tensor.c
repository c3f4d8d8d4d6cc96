/* Tensor creation, reference counting and small in-place helpers. */
#include "internal.h"

#include <math.h>
#include <string.h>

/* The one rule every tensor's shape follows: sizes >= 0 whose product, counting a size of 0 as
 * 1 (as PyTorch's safe_multiplies_u64 counts them), is at most the floats a byte count in an
 * int64 can address. An empty tensor holds no element, but ops still multiply its other sizes
 * (C * H * W of an empty batch, the rows around an empty axis): with a shape such as
 * [0, 2^62, 4] each of those products would overflow. */
int64_t tg_shape_numel(int ndim, const int64_t *shape)
{
    const int64_t limit = INT64_MAX / (int64_t)sizeof(float);
    int64_t extent = 1;
    bool empty = false;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return -1;
        empty |= shape[i] == 0;
        if (shape[i] > 0 && (__builtin_mul_overflow(extent, shape[i], &extent) || extent > limit))
            return -1;
    }
    return empty ? 0 : extent;
}

char *tg_shape_str(int ndim, const int64_t *shape, char *buf, size_t size)
{
    size_t used = 0;
    used += (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < ndim && used < size; i++)
        used +=
            (size_t)snprintf(buf + used, size - used, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (used < size)
        snprintf(buf + used, size - used, "]");
    return buf;
}

bool tg_shape_equal(const tg_tensor *a, const tg_tensor *b)
{
    if (a->ndim != b->ndim)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return false;
    return true;
}

int64_t tg_shape_check(const char *fn, int ndim, const int64_t *shape)
{
    if (ndim < 0 || ndim > TG_MAX_DIMS) {
        tg_set_error(TG_ERR_SHAPE, "%s: ndim %d is outside 0..%d", fn, ndim, TG_MAX_DIMS);
        return -1;
    }
    if (ndim > 0 && !shape) {
        tg_set_error(TG_ERR_ARG, "%s: shape is NULL for ndim %d", fn, ndim);
        return -1;
    }
    int64_t n = tg_shape_numel(ndim, shape);
    if (n < 0) {
        char s[160];
        tg_set_error(TG_ERR_SHAPE,
                     "%s: shape %s has a negative size or too many elements (its sizes other "
                     "than 0 must multiply to at most %lld, even when one is 0)",
                     fn, tg_shape_str(ndim, shape, s, sizeof s),
                     (long long)(INT64_MAX / (int64_t)sizeof(float)));
        return -1;
    }
    return n;
}

tg_tensor *tg_tensor_wrap(tg_storage *s, float *data, int ndim, const int64_t *shape)
{
    tg_tensor *t = malloc(sizeof *t);
    if (!t) {
        tg_set_error(TG_ERR_NOMEM, "tg_tensor: out of memory for a tensor header");
        return NULL;
    }
    memset(t, 0, sizeof *t);
    t->refcount = 1;
    t->ndim = ndim;
    if (ndim)
        memcpy(t->shape, shape, (size_t)ndim * sizeof(int64_t));
    t->numel = tg_shape_numel(ndim, shape);
    s->refcount++;
    t->storage = s;
    t->data = data;
    atomic_fetch_add(&tg_live_tensors, 1);
    return t;
}

static tg_tensor *tensor_alloc(const char *fn, int ndim, const int64_t *shape)
{
    int64_t n = tg_shape_check(fn, ndim, shape);
    if (n < 0)
        return NULL;
    tg_storage *s = tg_storage_new((size_t)n * sizeof(float));
    if (!s)
        return NULL;
    tg_tensor *t = tg_tensor_wrap(s, s->data, ndim, shape);
    tg_storage_release(s); /* the tensor holds the only reference now */
    return t;
}

tg_tensor *tg_tensor_new(int ndim, const int64_t *shape)
{
    return tensor_alloc("tg_tensor_new", ndim, shape);
}

static tg_tensor *tensor_filled(const char *fn, int ndim, const int64_t *shape, float v)
{
    tg_tensor *t = tensor_alloc(fn, ndim, shape);
    if (t) {
        if (v == 0.0f)
            memset(t->data, 0, (size_t)t->numel * sizeof(float));
        else
            for (int64_t i = 0; i < t->numel; i++)
                t->data[i] = v;
    }
    return t;
}

tg_tensor *tg_tensor_zeros(int ndim, const int64_t *shape)
{
    return tensor_filled("tg_tensor_zeros", ndim, shape, 0.0f);
}

tg_tensor *tg_tensor_ones(int ndim, const int64_t *shape)
{
    return tensor_filled("tg_tensor_ones", ndim, shape, 1.0f);
}

tg_tensor *tg_tensor_full(int ndim, const int64_t *shape, float value)
{
    return tensor_filled("tg_tensor_full", ndim, shape, value);
}

tg_tensor *tg_tensor_scalar(float value)
{
    return tensor_filled("tg_tensor_scalar", 0, NULL, value);
}

tg_tensor *tg_tensor_from_data(int ndim, const int64_t *shape, const float *data)
{
    if (!data) {
        tg_set_error(TG_ERR_ARG, "tg_tensor_from_data: data is NULL");
        return NULL;
    }
    tg_tensor *t = tensor_alloc("tg_tensor_from_data", ndim, shape);
    if (t && t->numel)
        memcpy(t->data, data, (size_t)t->numel * sizeof(float));
    return t;
}

/* start + i * step in double, one fused multiply-add where the CPU has FMA (TG_ISA_LEAF,
 * isa.h), as a -march=native build computes it there. */
TG_ISA_LEAF(arange_fill, (float *d, int64_t n, float start, float step), (d, n, start, step))
{
    for (int64_t i = 0; i < n; i++)
        d[i] = (float)(start + (double)i * step);
}

tg_tensor *tg_tensor_arange(float start, float stop, float step)
{
    if (step == 0.0f || !isfinite(start) || !isfinite(stop) || !isfinite(step)) {
        tg_set_error(TG_ERR_ARG,
                     "tg_tensor_arange: start %g, stop %g, step %g: step must be "
                     "non-zero and all finite",
                     start, stop, step);
        return NULL;
    }
    double count = ceil(((double)stop - start) / step);
    int64_t n = count > 0 ? (int64_t)count : 0;
    tg_tensor *t = tensor_alloc("tg_tensor_arange", 1, &n);
    if (t)
        arange_fill(t->data, n, start, step);
    return t;
}

tg_tensor *tg_tensor_clone(const tg_tensor *src)
{
    if (!src)
        return NULL;
    if (src == TG_NONE) {
        tg_none_refused("tg_tensor_clone", "src");
        return NULL;
    }
    return tg_tensor_from_data(src->ndim, src->shape, src->data);
}

/* TG_NONE: an empty 1-D tensor on an empty storage, so that a function that reads it by
 * mistake reads nothing. Its counts never reach zero (tg_tensor_retain and tg_tensor_release skip it). */
static tg_storage none_storage = {.refcount = 1, .nbytes = 0, .data = NULL, .version = 0};
tg_tensor tg_none_tensor = {.refcount = 1,
                            .ndim = 1,
                            .shape = {0},
                            .numel = 0,
                            .storage = &none_storage,
                            .data = NULL,
                            .origin = "TG_NONE"};

tg_status tg_none_refused(const char *fn, const char *arg)
{
    return tg_set_error(TG_ERR_ARG,
                        "%s: %s is TG_NONE, which stands for an absent optional input of an "
                        "op, not a tensor",
                        fn, arg);
}

tg_tensor *tg_tensor_retain(tg_tensor *t)
{
    if (t && t != TG_NONE) {
        TG_ASSERT(t->refcount > 0);
        t->refcount++;
    }
    return t;
}

/* Ends one reference, whoever held it: frees t at zero. */
static void tensor_drop(tg_tensor *t)
{
    TG_ASSERT(t->refcount > 0);
    if (--t->refcount > 0)
        return;
    /* A grad is a plain tensor with no grad of its own, so this never recurses deeper. */
    tg_tensor_release(t->grad);
    tg_storage_release(t->storage);
    atomic_fetch_sub(&tg_live_tensors, 1);
    free(t);
}

void tg_tensor_release(tg_tensor *t)
{
    if (!t || t == TG_NONE)
        return;
    TG_ASSERT(t->refcount > 0 && t->held <= t->refcount);
    if (t->held >= t->refcount) {
        /* Every reference left is a tape's or a node's: ending one would free the tensor under
         * them (a use-after-free at tg_tape_end or in backward). Refused, so the misuse costs
         * nothing. */
        char s[160];
        tg_set_error(
            TG_ERR_STATE,
            "tg_tensor_release: the tensor %s made by tg_%s belongs to the open tape, which "
            "frees it at tg_tape_end; not released (release only what you created "
            "with tg_tensor_* or tg_tensor_retain)",
            tg_shape_str(t->ndim, t->shape, s, sizeof s), t->origin ? t->origin : "?");
        return;
    }
    tensor_drop(t);
}

void tg_hold(tg_tensor *t)
{
    tg_tensor_retain(t);
    t->held++;
}

void tg_hold_adopt(tg_tensor *t)
{
    TG_ASSERT(t->held < t->refcount);
    t->held++;
}

void tg_unhold(tg_tensor *t)
{
    TG_ASSERT(t->held > 0);
    t->held--;
    tensor_drop(t);
}

tg_tensor *tg_tensor_grad(const tg_tensor *t)
{
    return t ? t->grad : NULL;
}

tg_status tg_tensor_set_grad(tg_tensor *t, const tg_tensor *g)
{
    char st[160], sg[160];
    if (!t || !g)
        return tg_last_status()
                   ? tg_last_status()
                   : tg_set_error(TG_ERR_ARG, "tg_tensor_set_grad: %s is NULL", t ? "g" : "t");
    if (t == TG_NONE || g == TG_NONE)
        return tg_none_refused("tg_tensor_set_grad", t == TG_NONE ? "t" : "g");
    if (t->node)
        return tg_set_error(TG_ERR_STATE,
                            "tg_tensor_set_grad: the tensor %s is the result of tg_%s, not a "
                            "leaf; only a leaf's gradient can be set",
                            tg_shape_str(t->ndim, t->shape, st, sizeof st),
                            t->origin ? t->origin : "?");
    if (!t->requires_grad)
        return tg_set_error(TG_ERR_STATE,
                            "tg_tensor_set_grad: the tensor %s does not require grad "
                            "(tg_tensor_set_requires_grad first)",
                            tg_shape_str(t->ndim, t->shape, st, sizeof st));
    if (!tg_shape_equal(t, g))
        return tg_set_error(TG_ERR_SHAPE,
                            "tg_tensor_set_grad: gradient %s for a tensor %s: shapes differ",
                            tg_shape_str(g->ndim, g->shape, sg, sizeof sg),
                            tg_shape_str(t->ndim, t->shape, st, sizeof st));
    if (t->grad == g)
        return TG_OK;
    if (!t->grad || t->grad->refcount > 1) {
        /* A fresh buffer: never write into a gradient someone else holds. */
        tg_tensor *fresh = tensor_alloc("tg_tensor_set_grad", t->ndim, t->shape);
        if (!fresh)
            return tg_last_status();
        tg_tensor_release(t->grad);
        t->grad = fresh;
    }
    if (g->numel)
        memmove(t->grad->data, g->data, (size_t)g->numel * sizeof(float));
    return TG_OK;
}

tg_status tg_tensor_set_requires_grad(tg_tensor *t, bool requires_grad)
{
    if (!t)
        return tg_last_status()
                   ? tg_last_status()
                   : tg_set_error(TG_ERR_ARG, "tg_tensor_set_requires_grad: t is NULL");
    if (t == TG_NONE)
        return tg_none_refused("tg_tensor_set_requires_grad", "t");
    if (t->node)
        return tg_set_error(TG_ERR_STATE, "tg_tensor_set_requires_grad: the tensor is the "
                                          "result of an op, not a leaf; tg_detach it first");
    t->requires_grad = requires_grad;
    return TG_OK;
}

void tg_tensor_zero_grad(tg_tensor *t)
{
    if (t) {
        tg_tensor_release(t->grad);
        t->grad = NULL;
    }
}

tg_status tg_tensor_fill_(tg_tensor *t, float value)
{
    if (!t)
        return tg_set_error(TG_ERR_ARG, "tg_tensor_fill_: t is NULL");
    for (int64_t i = 0; i < t->numel; i++)
        t->data[i] = value;
    t->storage->version++;
    return TG_OK;
}

tg_status tg_tensor_copy_(tg_tensor *dst, const tg_tensor *src)
{
    if (!dst || !src)
        return tg_set_error(TG_ERR_ARG, "tg_tensor_copy_: %s is NULL", dst ? "src" : "dst");
    if (dst->numel != src->numel) {
        char a[160], b[160];
        return tg_set_error(TG_ERR_SHAPE,
                            "tg_tensor_copy_: dst %s and src %s hold %lld and "
                            "%lld elements",
                            tg_shape_str(dst->ndim, dst->shape, a, sizeof a),
                            tg_shape_str(src->ndim, src->shape, b, sizeof b), (long long)dst->numel,
                            (long long)src->numel);
    }
    if (dst->numel)
        memmove(dst->data, src->data, (size_t)dst->numel * sizeof(float));
    dst->storage->version++;
    return TG_OK;
}

void tg_tensor_bump_version(tg_tensor *t)
{
    if (t)
        t->storage->version++;
}

uint64_t tg_tensor_version(const tg_tensor *t)
{
    return t ? t->storage->version : 0;
}

float tg_tensor_item_at(const tg_tensor *t, int64_t index)
{
    if (!t || index < 0 || index >= t->numel) {
        tg_set_error(TG_ERR_ARG,
                     "tg_tensor_item_at: index %lld outside a tensor of %lld "
                     "elements",
                     (long long)index, t ? (long long)t->numel : 0LL);
        return NAN;
    }
    return t->data[index];
}

float tg_tensor_item(const tg_tensor *t)
{
    if (!t || t->numel != 1) {
        tg_set_error(TG_ERR_SHAPE, "tg_tensor_item: the tensor holds %lld elements, not 1",
                     t ? (long long)t->numel : 0LL);
        return NAN;
    }
    return t->data[0];
}
