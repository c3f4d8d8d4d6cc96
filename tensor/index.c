/* Index tensors (tensor.h): int64 positions with a reference count, counted among the live
 * tensors so that a leaked index shows in tg_debug_live_tensors like a leaked tensor. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Whole floats beyond 2^53 are not all representable, so a label that large was rounded
 * somewhere before it reached us: refused rather than trusted. */
#define INDEX_FLOAT_LIMIT 9007199254740992.0

static tg_index *index_alloc(const char *fn, int ndim, const int64_t *shape)
{
    int64_t n = tg_shape_check(fn, ndim, shape);
    if (n < 0)
        return NULL;
    tg_index *ix = calloc(1, sizeof *ix);
    int64_t *data = calloc(n ? (size_t)n : 1, sizeof(int64_t));
    if (!ix || !data) {
        free(ix);
        free(data);
        tg_set_error(TG_ERR_NOMEM, "%s: out of memory for an index of %lld values", fn,
                     (long long)n);
        return NULL;
    }
    ix->refcount = 1;
    ix->ndim = ndim;
    if (ndim)
        memcpy(ix->shape, shape, (size_t)ndim * sizeof(int64_t));
    ix->numel = n;
    ix->data = data;
    atomic_fetch_add(&tg_live_tensors, 1);
    return ix;
}

tg_index *tg_index_new(int ndim, const int64_t *shape, const int64_t *values)
{
    tg_index *ix = index_alloc("tg_index_new", ndim, shape);
    if (ix && values && ix->numel)
        memcpy(ix->data, values, (size_t)ix->numel * sizeof(int64_t));
    return ix;
}

tg_index *tg_index_from_tensor(const tg_tensor *t)
{
    if (!t) {
        if (!tg_last_status())
            tg_set_error(TG_ERR_ARG, "tg_index_from_tensor: t is NULL");
        return NULL;
    }
    if (t == TG_NONE) {
        tg_none_refused("tg_index_from_tensor", "t");
        return NULL;
    }
    for (int64_t i = 0; i < t->numel; i++) {
        float v = t->data[i];
        if (!(fabsf(v) <= INDEX_FLOAT_LIMIT) || v != truncf(v)) {
            tg_set_error(TG_ERR_ARG,
                         "tg_index_from_tensor: value %g at position %lld is not a whole "
                         "number of magnitude at most 2^53",
                         (double)v, (long long)i);
            return NULL;
        }
    }
    tg_index *ix = index_alloc("tg_index_from_tensor", t->ndim, t->shape);
    if (ix)
        for (int64_t i = 0; i < t->numel; i++)
            ix->data[i] = (int64_t)t->data[i];
    return ix;
}

tg_index *tg_index_retain(tg_index *ix)
{
    if (ix) {
        TG_ASSERT(ix->refcount > 0);
        ix->refcount++;
    }
    return ix;
}

static void index_drop(tg_index *ix)
{
    TG_ASSERT(ix->refcount > 0);
    if (--ix->refcount > 0)
        return;
    free(ix->data);
    free(ix);
    atomic_fetch_sub(&tg_live_tensors, 1);
}

void tg_index_release(tg_index *ix)
{
    if (!ix)
        return;
    TG_ASSERT(ix->refcount > 0 && ix->held <= ix->refcount);
    if (ix->held >= ix->refcount) {
        /* As tg_tensor_release: the references left are the tape's and its nodes'. */
        char s[160];
        tg_set_error(TG_ERR_STATE,
                     "tg_index_release: the index %s belongs to the open tape, which frees it "
                     "at tg_tape_end; not released",
                     tg_shape_str(ix->ndim, ix->shape, s, sizeof s));
        return;
    }
    index_drop(ix);
}

void tg_index_hold(tg_index *ix)
{
    tg_index_retain(ix);
    ix->held++;
}

void tg_index_hold_adopt(tg_index *ix)
{
    TG_ASSERT(ix->held < ix->refcount);
    ix->held++;
}

void tg_index_unhold(tg_index *ix)
{
    TG_ASSERT(ix->held > 0);
    ix->held--;
    index_drop(ix);
}
