/* libFuzzer target: the op API under random shapes and extreme parameters (issue 19, item 6).
 *
 * Each input is a little program. Its first byte picks the tape's mode; then each op is one
 * byte choosing what to call, followed by the bytes it reads for its operands and parameters:
 * tensors from a pool of slots (leaves the target made and results of earlier ops), shapes that
 * are mostly small but sometimes huge (an empty tensor may have sizes up to 2^62), and int,
 * int64 and float parameters that are mostly small but often extreme (INT_MAX, INT_MIN,
 * INT64_MIN, NaN, ...). Every op runs inside one tape; some inputs back-propagate from the sum
 * of a result. A read past the end of the input reads zeros, so every input is a program.
 *
 * The calls cover the ops (conv, pooling, shape, reductions with var/std, N-D matmul and linear,
 * norms, losses with every reduction, elementwise with GELU/SiLU/softplus, comparisons, where,
 * masked_fill), indices (tg_indices, tg_index_new, tg_labels, argmax, max with indices,
 * multinomial, categorical; embedding, index_select, gather, one_hot on hostile values), the
 * tape-owned tensors (tg_zeros .. tg_randn), gradients set and read, modules with one or several
 * inputs (Linear, LayerNorm, Embedding, GRUCell, MultiheadAttention, TransformerEncoderLayer),
 * clipping and optimizers built from a module. Operands are now and then TG_NONE or NULL where
 * an input is required.
 *
 * Beyond the sanitizers (signed overflow, out-of-bounds access, leaks), the checks: every NULL
 * result comes with an error status and a message, every result has a shape that follows the
 * rules (sizes >= 0, numel = their product), indices from argmax and the samplers lie in range,
 * an op given the NULL of a failed call fails and keeps that call's error, releasing what the
 * tape owns is refused, and after tg_tape_end (and the release of the leaves, indices and
 * modules the target owns) tg_debug_live_tensors is back at its count before the input, with no
 * node alive. Memory and time stay bounded: the target never makes a leaf of more than
 * FUZZ_LEAF_MAX elements, stops an input once its tensors hold FUZZ_BUDGET elements, and makes
 * the library's buffers (and index values) above FUZZ_ALLOC_MAX (1 MB) fail to allocate, which
 * it reports as TG_ERR_NOMEM. An op's work is then at most about its largest buffer times its
 * smallest leaf (a window over a plane, a kernel over an output): ~2^28, under a second even
 * instrumented. Extreme parameters are the point, not huge tensors. */
#include "fuzz.h"

#include "autograd.h"
#include "data.h"
#include "nn.h"
#include "optim.h"
#include "../../tensor/internal.h"

#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>

/* Largest leaf the target makes, and the elements an input may create in all. */
#define FUZZ_LEAF_MAX ((int64_t)1 << 10)
#define FUZZ_BUDGET ((int64_t)1 << 20)
/* Ops per input, tensors in the pool, leaves per input. */
#define FUZZ_MAX_OPS 32
#define FUZZ_SLOTS 8
#define FUZZ_MAX_LEAVES 48
/* A result larger than this stays out of the pool, so that later ops do not multiply it. */
#define FUZZ_SLOT_MAX ((int64_t)1 << 16)

/* The library's tensor buffers come from posix_memalign (tensor/storage.c); this target is
 * linked with --wrap=posix_memalign (meson.build), so that a buffer above FUZZ_ALLOC_MAX fails
 * as on a full machine, and the library reports TG_ERR_NOMEM. libFuzzer's own memory and the
 * sanitizers' are untouched. */
#define FUZZ_ALLOC_MAX ((size_t)1 << 20)
int __real_posix_memalign(void **ptr, size_t alignment, size_t size);
int __wrap_posix_memalign(void **ptr, size_t alignment, size_t size);
int __wrap_posix_memalign(void **ptr, size_t alignment, size_t size)
{
    if (size > FUZZ_ALLOC_MAX)
        return ENOMEM;
    return __real_posix_memalign(ptr, alignment, size);
}
/* Index values (tensor/index.c) come from calloc: capped alike (--wrap=calloc), so that a
 * huge but valid index shape (tg_multinomial's num_samples = 2^40) fails as TG_ERR_NOMEM
 * rather than reaching libFuzzer's malloc limit. */
void *__real_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size)
{
    if (size && n > FUZZ_ALLOC_MAX / size)
        return NULL;
    return __real_calloc(n, size);
}

/* ---- reading the input ---------------------------------------------------------------------- */

typedef struct {
    const uint8_t *p;
    size_t n;
} reader;

static uint8_t rd_byte(reader *r)
{
    if (!r->n)
        return 0;
    r->n--;
    return *r->p++;
}

static bool rd_bool(reader *r)
{
    return rd_byte(r) & 1;
}

/* A size: 0..5 mostly, else one of the extremes (negative ones included: they must be refused). */
static int64_t rd_size(reader *r)
{
    static const int64_t extreme[] = {
        6,
        7,
        16,
        1 << 16,
        (int64_t)1 << 20,
        (int64_t)1 << 30,
        INT32_MAX,
        (int64_t)1 << 40,
        (int64_t)1 << 60,
        INT64_MAX / 4,
        INT64_MAX / 2,
        INT64_MAX,
        -1,
        -2,
        INT64_MIN,
    };
    uint8_t b = rd_byte(r);
    if (b < 208)
        return b % 6;
    return extreme[b % (sizeof extreme / sizeof extreme[0])];
}

/* An int parameter: -2..7 mostly, else an extreme. */
static int rd_int(reader *r)
{
    static const int extreme[] = {
        INT_MAX,    INT_MAX - 1, INT_MIN,     INT_MIN + 1, INT_MAX / 2, INT_MAX / 2 + 1,
        46340,      46341,       65535,       1 << 16,     1 << 20,     1 << 30,
        -(1 << 30), 100,         INT_MAX - 2, 1000,
    };
    uint8_t b = rd_byte(r);
    if (b < 160)
        return (int)(b % 10) - 2;
    return extreme[b % (sizeof extreme / sizeof extreme[0])];
}

/* An int64 parameter (slice bounds and steps). */
static int64_t rd_int64(reader *r)
{
    static const int64_t extreme[] = {
        INT64_MAX,
        INT64_MIN,
        INT64_MAX - 1,
        INT64_MIN + 1,
        INT64_MAX / 2,
        INT64_MIN / 2,
        (int64_t)1 << 32,
        -((int64_t)1 << 32),
        INT32_MAX,
        INT32_MIN,
        -100,
        100,
    };
    uint8_t b = rd_byte(r);
    if (b < 160)
        return (int64_t)(b % 12) - 6;
    return extreme[b % (sizeof extreme / sizeof extreme[0])];
}

/* A float parameter or value: a small number mostly, else a special one. */
static float rd_float(reader *r)
{
    static const float special[] = {
        0.0f, -0.0f,    1.0f,      -1.0f, 0.5f,   1e-5f,   0.1f, 0.999f,
        NAN,  INFINITY, -INFINITY, 1e30f, -1e30f, FLT_MIN, 2.0f, FLT_MAX,
    };
    uint8_t b = rd_byte(r);
    if (b < 192)
        return (float)((int)b - 96) / 16.0f;
    return special[b % (sizeof special / sizeof special[0])];
}

/* ---- the pool of tensors -------------------------------------------------------------------- */

/* Indices in the pool, indices and modules the target owns (freed after the tape). */
#define FUZZ_IX_SLOTS 8
#define FUZZ_MAX_OWNED_IX 16
#define FUZZ_MAX_MODULES 4

typedef struct {
    tg_tensor *slot[FUZZ_SLOTS]; /* borrowed: leaves below or results owned by the tape */
    int n_slots, next_slot;
    tg_tensor *leaf[FUZZ_MAX_LEAVES]; /* owned by the target */
    int n_leaves;
    tg_index *ix[FUZZ_IX_SLOTS]; /* borrowed: owned_ix below or owned by the tape */
    int n_ix, next_ix;
    tg_index *owned_ix[FUZZ_MAX_OWNED_IX]; /* from tg_index_new / tg_index_from_tensor */
    int n_owned_ix;
    tg_module *module[FUZZ_MAX_MODULES];
    int n_modules;
    int64_t elements; /* created so far in this input */
    int grads;        /* tg_grad calls so far in this input (FUZZ_MAX_GRADS) */
    tg_rng rng;
} pool;

/* A tensor of the pool; now and then what no required input may be: the NULL of a failed call
 * (its error must be kept, or one set) or TG_NONE (refused by name). */
static tg_tensor *pick(pool *pl, reader *r)
{
    uint8_t b = rd_byte(r);
    if (b >= 252 || !pl->n_slots)
        return b >= 254 ? TG_NONE : NULL;
    return pl->slot[b % pl->n_slots];
}

/* An optional operand: TG_NONE (absent) when the next byte says so, else pick (which may give
 * NULL, a failure that must not pass as "absent"). */
static tg_tensor *pick_opt(pool *pl, reader *r)
{
    return rd_byte(r) % 4 == 0 ? TG_NONE : pick(pl, r);
}

/* An index of the pool, or now and then NULL. */
static const tg_index *pick_ix(pool *pl, reader *r)
{
    uint8_t b = rd_byte(r);
    return b >= 248 || !pl->n_ix ? NULL : pl->ix[b % pl->n_ix];
}

/* The rng, or now and then NULL (refused where a draw is needed). */
static tg_rng *pick_rng(pool *pl, reader *r)
{
    return rd_byte(r) % 8 == 0 ? NULL : &pl->rng;
}

static void pool_add_ix(pool *pl, tg_index *ix)
{
    if (!ix || ix->numel > FUZZ_SLOT_MAX)
        return;
    pl->elements += ix->numel;
    if (pl->n_ix < FUZZ_IX_SLOTS) {
        pl->ix[pl->n_ix++] = ix;
    } else {
        pl->ix[pl->next_ix] = ix;
        pl->next_ix = (pl->next_ix + 1) % FUZZ_IX_SLOTS;
    }
}

static void pool_add(pool *pl, tg_tensor *t)
{
    if (!t || t->numel > FUZZ_SLOT_MAX)
        return;
    if (pl->n_slots < FUZZ_SLOTS) {
        pl->slot[pl->n_slots++] = t;
    } else {
        pl->slot[pl->next_slot] = t;
        pl->next_slot = (pl->next_slot + 1) % FUZZ_SLOTS;
    }
}

/* The checks on every call's outcome: a result whose shape follows the rules and no error, or
 * NULL with an error status and a message. Clears the error for the next call. */
static void check_result(const tg_tensor *y)
{
    if (y == TG_NONE)
        fuzz_fail("TG_NONE came back as a result");
    if (y) {
        if (tg_last_status() != TG_OK)
            fuzz_fail("a result came with an error status");
        if (y->ndim < 0 || y->ndim > TG_MAX_DIMS || y->numel < 0 ||
            y->numel != tg_shape_numel(y->ndim, y->shape))
            fuzz_fail("a result's shape breaks the rules");
    } else if (tg_last_status() == TG_OK || !tg_last_error()[0]) {
        fuzz_fail("NULL without an error status and message");
    }
    tg_clear_error();
}

/* Same for an index result; its values must lie in [0, bound) when bound > 0 (argmax and the
 * samplers: positions along an axis, classes). */
static void check_index(const tg_index *ix, int64_t bound)
{
    if (ix) {
        if (tg_last_status() != TG_OK)
            fuzz_fail("an index came with an error status");
        if (ix->ndim < 0 || ix->ndim > TG_MAX_DIMS || ix->numel < 0 ||
            ix->numel != tg_shape_numel(ix->ndim, ix->shape) || ix->refcount < 1)
            fuzz_fail("an index's shape breaks the rules");
        for (int64_t i = 0; bound > 0 && i < ix->numel; i++)
            if (ix->data[i] < 0 || ix->data[i] >= bound)
                fuzz_fail("an index value out of the range the op promises");
    } else if (tg_last_status() == TG_OK || !tg_last_error()[0]) {
        fuzz_fail("NULL index without an error status and message");
    }
    tg_clear_error();
}

/* Same for a call returning a status. */
static void check_status(tg_status st)
{
    if (st != TG_OK && (tg_last_status() == TG_OK || !tg_last_error()[0]))
        fuzz_fail("a failed status without an error status and message");
    tg_clear_error();
}

/* Elements of a shape, or -1 when the target should not make it: more than FUZZ_LEAF_MAX
 * elements (which the library would allocate). Shapes the library must refuse (a negative size,
 * sizes that overflow) return 0: the call is made, and must fail without allocating. */
static int64_t leaf_elements(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    bool empty = false, refused = false;
    for (int i = 0; i < ndim; i++) {
        empty |= shape[i] == 0;
        refused |= shape[i] < 0;
        if (shape[i] > 0 && __builtin_mul_overflow(n, shape[i], &n))
            refused = true;
    }
    if (refused || empty)
        return 0;
    return n > FUZZ_LEAF_MAX ? -1 : n;
}

/* A new leaf of the given shape, values from the input, requiring grad when the input says so;
 * into the pool. NULL (and nothing added) when refused or too large. */
static tg_tensor *make_leaf(pool *pl, reader *r, int ndim, const int64_t *shape)
{
    int64_t n = leaf_elements(ndim, shape);
    if (n < 0 || pl->n_leaves == FUZZ_MAX_LEAVES || pl->elements + n > FUZZ_BUDGET)
        return NULL;
    tg_tensor *t = tg_tensor_zeros(ndim, shape);
    check_result(t);
    if (!t)
        return NULL;
    pl->elements += t->numel;
    pl->leaf[pl->n_leaves++] = t;
    /* A short pattern from the input, repeated: values matter less than shapes here. */
    float pattern[4] = {rd_float(r), rd_float(r), rd_float(r), rd_float(r)};
    for (int64_t i = 0; i < t->numel; i++)
        t->data[i] = pattern[i % 4];
    if (rd_bool(r))
        check_status(tg_tensor_set_requires_grad(t, true));
    pool_add(pl, t);
    return t;
}

/* A leaf of a shape read from the input: ndim 0..4 (5 and 6 and an invalid 7 more rarely). */
static tg_tensor *leaf_from_input(pool *pl, reader *r)
{
    uint8_t b = rd_byte(r);
    int ndim = b < 240 ? b % 5 : 5 + b % 3;
    int64_t shape[TG_MAX_DIMS + 1];
    for (int i = 0; i < ndim; i++)
        shape[i] = rd_size(r);
    if (ndim > TG_MAX_DIMS) {
        check_result(tg_tensor_zeros(ndim, shape)); /* must be refused */
        return NULL;
    }
    return make_leaf(pl, r, ndim, shape);
}

/* A leaf of shape [lead..., sizes read from the input]: operands that fit what an op expects
 * (a conv weight with x's channels), so that mutations reach past the first shape check. */
static tg_tensor *leaf_like(pool *pl, reader *r, int ndim, const int64_t *fixed, int n_fixed)
{
    int64_t shape[TG_MAX_DIMS];
    for (int i = 0; i < ndim; i++)
        shape[i] = i < n_fixed ? fixed[i] : rd_size(r);
    return make_leaf(pl, r, ndim, shape);
}

/* Size i of t, or 1 when t has no such axis (or is NULL). */
static int64_t size_at(const tg_tensor *t, int i)
{
    return t && i < t->ndim ? t->shape[i] : 1;
}

/* ---- the ops ---------------------------------------------------------------------------------
 * Each reads its operands and parameters, calls the API once (or a few times), and returns the
 * result for run_one to check and pool, or DONE when it checked what it called itself. */
static tg_tensor done_marker;
#define DONE (&done_marker)

static tg_tensor *op_conv2d(pool *pl, reader *r)
{
    tg_tensor *x = pick(pl, r), *w, *b = TG_NONE;
    if (rd_bool(r)) {
        /* w [O, C of x, kh, kw] and maybe b [O]. */
        int64_t lead[2] = {rd_size(r), size_at(x, 1)};
        w = leaf_like(pl, r, 4, lead, 2);
        if (w && rd_bool(r))
            b = leaf_like(pl, r, 1, w->shape, 1);
    } else {
        w = pick(pl, r);
        b = pick_opt(pl, r);
    }
    int stride = rd_int(r), padding = rd_int(r), dilation = rd_int(r);
    return tg_conv2d(x, w, b, stride, padding, dilation);
}

static tg_tensor *op_conv_transpose2d(pool *pl, reader *r)
{
    tg_tensor *x = pick(pl, r), *w, *b = TG_NONE;
    if (rd_bool(r)) {
        /* w [C of x, O, kh, kw] and maybe b [O]. */
        int64_t lead[1] = {size_at(x, 1)};
        w = leaf_like(pl, r, 4, lead, 1);
        if (w && rd_bool(r))
            b = leaf_like(pl, r, 1, w->shape + 1, 1);
    } else {
        w = pick(pl, r);
        b = pick_opt(pl, r);
    }
    int stride = rd_int(r), padding = rd_int(r), output_padding = rd_int(r);
    return tg_conv_transpose2d(x, w, b, stride, padding, output_padding);
}

static tg_tensor *op_pool(pool *pl, reader *r)
{
    tg_tensor *x = pick(pl, r);
    bool max = rd_bool(r);
    int kernel = rd_int(r), stride = rd_int(r), padding = rd_int(r);
    /* Pooling's work is its windows times their size, which the element budget does not bound
     * (a [1, 1, 196, 196] plane pooled 196 wide at stride 1 ran 20 s under ASan): such calls
     * are skipped. Invalid sizes still reach the library, which refuses them. */
    if (x && x != TG_NONE && x->ndim == 4 && kernel > 0 && stride > 0 && padding >= 0) {
        int64_t ho = (x->shape[2] + 2 * (int64_t)padding - kernel) / stride + 1;
        int64_t wo = (x->shape[3] + 2 * (int64_t)padding - kernel) / stride + 1;
        double kh = kernel < x->shape[2] ? kernel : (double)x->shape[2];
        double kw = kernel < x->shape[3] ? kernel : (double)x->shape[3];
        if (ho > 0 && wo > 0 &&
            (double)x->shape[0] * (double)x->shape[1] * (double)ho * (double)wo * kh * kw > 2e7)
            return DONE;
    }
    return max ? tg_max_pool2d(x, kernel, stride, padding)
               : tg_avg_pool2d(x, kernel, stride, padding, rd_bool(r));
}

static tg_tensor *op_upsample(pool *pl, reader *r)
{
    tg_tensor *x = pick(pl, r);
    int scale = rd_int(r);
    uint8_t m = rd_byte(r);
    /* The three modes, and now and then a value that is none of them. */
    int mode = m < 240 ? m % 3 : rd_int(r);
    return tg_upsample(x, scale, (tg_upsample_mode)mode);
}

static tg_tensor *op_slice(pool *pl, reader *r)
{
    tg_tensor *x = pick(pl, r);
    int axis = rd_int(r);
    int64_t start = rd_int64(r), stop = rd_int64(r), step = rd_int64(r);
    return tg_slice(x, axis, start, stop, step);
}

static tg_tensor *op_reshape(pool *pl, reader *r)
{
    tg_tensor *x = pick(pl, r);
    uint8_t b = rd_byte(r);
    if (b >= 250) /* an invalid ndim, or a NULL shape */
        return tg_reshape(x, b == 255 ? -1 : b == 254 ? TG_MAX_DIMS + 1 : 2, NULL);
    int ndim = b % (TG_MAX_DIMS + 1);
    int64_t shape[TG_MAX_DIMS];
    for (int i = 0; i < ndim; i++)
        shape[i] = rd_byte(r) % 5 == 0 ? -1 : rd_size(r);
    return tg_reshape(x, ndim, shape);
}

static tg_tensor *op_flatten(pool *pl, reader *r)
{
    tg_tensor *x = pick(pl, r);
    int start = rd_int(r), end = rd_int(r);
    return tg_flatten(x, start, end);
}

static tg_tensor *op_concat(pool *pl, reader *r)
{
    /* Up to 40 inputs: more than a node holds (concat joins them as a tree); or a count below
     * 1, with or without a list. */
    tg_tensor *xs[40];
    int64_t n = rd_byte(r) % 41;
    bool null_list = n == 0 && rd_bool(r);
    if (n == 0 && rd_bool(r))
        n = rd_bool(r) ? -1 : INT64_MIN;
    for (int64_t i = 0; i < n; i++)
        xs[i] = pick(pl, r);
    int axis = rd_int(r);
    return rd_bool(r) ? tg_stack(null_list ? NULL : xs, n, axis)
                      : tg_concat(null_list ? NULL : xs, n, axis);
}

static tg_tensor *op_transpose(pool *pl, reader *r)
{
    tg_tensor *x = pick(pl, r);
    if (rd_bool(r)) {
        int a = rd_int(r), b = rd_int(r);
        return tg_transpose(x, a, b);
    }
    int perm[TG_MAX_DIMS];
    for (int i = 0; i < TG_MAX_DIMS; i++)
        perm[i] = rd_byte(r) % 4 == 0 ? rd_int(r) : rd_byte(r) % (TG_MAX_DIMS + 1);
    return tg_permute(x, rd_byte(r) == 255 ? NULL : perm);
}

static tg_tensor *op_reduce(pool *pl, reader *r)
{
    tg_tensor *x = pick(pl, r);
    uint8_t which = rd_byte(r) % 7;
    int axis = rd_int(r);
    bool keepdim = rd_bool(r);
    switch (which) {
    case 0: return tg_sum(x);
    case 1: return tg_mean(x);
    case 2: return tg_sum_axis(x, axis, keepdim);
    case 3: return tg_mean_axis(x, axis, keepdim);
    case 4: return tg_max_axis(x, axis, keepdim);
    /* Corrections beyond the axis length give NaN; negative and extreme ones are refused. */
    case 5: return tg_var(x, axis, keepdim, rd_int64(r));
    default: return tg_std(x, axis, keepdim, rd_int64(r));
    }
}

/* The size of t's last axis (1 when t has none, or is NULL). */
static int64_t last_size(const tg_tensor *t)
{
    return t && t->ndim > 0 ? t->shape[t->ndim - 1] : 1;
}

/* A matmul operand for a: rank 1 to 4, [K of a] or [batch..., K of a, N], each batch size 1,
 * a's batch size at that position (counted from the right) or one from the input: the
 * broadcasting cases, matching or not. */
static tg_tensor *matmul_operand(pool *pl, reader *r, const tg_tensor *a)
{
    int ndim = 1 + rd_byte(r) % 4;
    int64_t shape[4];
    int64_t k = a && a->ndim > 0 ? a->shape[a->ndim - 1] : rd_size(r);
    if (ndim == 1) {
        shape[0] = k;
    } else {
        shape[ndim - 2] = k;
        shape[ndim - 1] = rd_size(r);
        for (int i = ndim - 3; i >= 0; i--) {
            int ai = a ? a->ndim - 2 - (ndim - 2 - i) : -1; /* a's batch axis aligned with i */
            uint8_t m = rd_byte(r) % 3;
            shape[i] = m == 0 ? 1 : m == 1 && ai >= 0 ? a->shape[ai] : rd_size(r);
        }
    }
    return make_leaf(pl, r, ndim, shape);
}

static tg_tensor *op_matmul(pool *pl, reader *r)
{
    tg_tensor *a = pick(pl, r), *b, *bias = TG_NONE;
    bool linear = rd_bool(r);
    uint8_t mode = rd_byte(r) % 3;
    if (mode == 1) {
        /* matmul: b [K of a, N]; linear: w [O, in of x] and maybe bias [O]. */
        int64_t lead[2] = {rd_size(r), last_size(a)};
        b = linear ? leaf_like(pl, r, 2, lead, 2) : leaf_like(pl, r, 2, lead + 1, 1);
        if (linear && b && rd_bool(r))
            bias = leaf_like(pl, r, 1, b->shape, 1);
    } else if (mode == 2 && !linear) {
        b = matmul_operand(pl, r, a);
        if (rd_bool(r)) /* the 1-D or batched operand on the left */
            return tg_matmul(b, a);
    } else if (mode == 2) {
        /* x [..., in of w] of rank 1 to 5 for a weight from the pool, bias [out] or TG_NONE. */
        b = a;
        int ndim = 1 + rd_byte(r) % 5;
        int64_t shape[5];
        for (int i = 0; i < ndim - 1; i++)
            shape[i] = rd_size(r);
        shape[ndim - 1] = size_at(b, 1);
        a = make_leaf(pl, r, ndim, shape);
        int64_t out[1] = {size_at(b, 0)};
        bias = rd_bool(r) ? leaf_like(pl, r, 1, out, 1) : pick_opt(pl, r);
    } else {
        b = pick(pl, r);
        bias = pick_opt(pl, r);
    }
    return linear ? tg_linear(a, b, bias) : tg_matmul(a, b);
}

static tg_tensor *op_batch_norm(pool *pl, reader *r)
{
    tg_tensor *x = pick(pl, r);
    int64_t c[1] = {size_at(x, 1)};
    /* weight, bias and the running buffers: [C] leaves, pool tensors or TG_NONE, per byte. */
    tg_tensor *v[4];
    for (int i = 0; i < 4; i++) {
        uint8_t b = rd_byte(r) % 3;
        v[i] = b == 0 ? TG_NONE : b == 1 ? leaf_like(pl, r, 1, c, 1) : pick(pl, r);
    }
    bool training = rd_bool(r);
    float momentum = rd_float(r), eps = rd_float(r);
    return tg_batch_norm(x, v[0], v[1], v[2], v[3], training, momentum, eps);
}

static tg_tensor *op_loss(pool *pl, reader *r)
{
    tg_tensor *a = pick(pl, r), *b;
    uint8_t which = rd_byte(r) % 3;
    if (which == 2 && rd_bool(r) && a && a->ndim == 2) {
        /* Labels [N] holding class indices (or not, per the input's values). */
        int64_t n[1] = {a->shape[0]};
        b = leaf_like(pl, r, 1, n, 1);
        for (int64_t i = 0; b && i < b->numel; i++)
            b->data[i] = (float)(rd_byte(r) % (a->shape[1] + 1));
    } else {
        b = rd_bool(r) && a ? leaf_like(pl, r, a->ndim, a->shape, a->ndim) : pick(pl, r);
    }
    /* 3 is no reduction at all: refused. */
    tg_reduction red = (tg_reduction)(rd_byte(r) % 4);
    switch (which) {
    case 0: return tg_bce_with_logits(a, b, red);
    case 1: return tg_mse(a, b, red);
    default:
        /* Float labels through tg_labels, or an index of the pool. */
        return tg_cross_entropy(a, rd_bool(r) ? pick_ix(pl, r) : b ? tg_labels(b) : NULL, red);
    }
}

static tg_tensor *op_binary(pool *pl, reader *r)
{
    tg_tensor *a = pick(pl, r), *b = pick(pl, r);
    switch (rd_byte(r) % 13) {
    case 0: return tg_add(a, b);
    case 1: return tg_sub(a, b);
    case 2: return tg_mul(a, b);
    case 3: return tg_div(a, b);
    case 4: return tg_eq(a, b);
    case 5: return tg_ne(a, b);
    case 6: return tg_lt(a, b);
    case 7: return tg_le(a, b);
    case 8: return tg_gt(a, b);
    case 9: return tg_ge(a, b);
    case 10: return tg_where(pick(pl, r), a, b);
    case 11: return tg_masked_fill(a, b, rd_float(r));
    default: {
        /* A mask of a's shape from a comparison, then the fill: attention's pattern. */
        tg_tensor *mask = tg_gt(a, tg_scalar(rd_float(r)));
        return tg_masked_fill(a, mask, rd_byte(r) & 1 ? -INFINITY : rd_float(r));
    }
    }
}

static tg_tensor *op_unary(pool *pl, reader *r)
{
    tg_tensor *x = pick(pl, r);
    float s = rd_float(r), t = rd_float(r);
    switch (rd_byte(r) % 17) {
    case 12: return tg_gelu(x);
    case 13: return tg_gelu_tanh(x);
    case 14: return tg_silu(x);
    case 15: return tg_softplus(x, s, t);
    case 16: return tg_relu(x);
    case 0: return tg_exp(x);
    case 1: return tg_log(x);
    case 2: return tg_sqrt(x);
    case 3: return tg_tanh(x);
    case 4: return tg_sigmoid(x);
    case 5: return tg_leaky_relu(x, s);
    case 6: return tg_clamp(x, s, t);
    case 7: return tg_pow_scalar(x, s);
    case 8: return tg_div_scalar(x, s);
    case 9: return tg_rdiv_scalar(x, s);
    case 10: return tg_softmax(x, rd_int(r));
    default: return tg_log_softmax(x, rd_int(r));
    }
}

static tg_tensor *op_dropout(pool *pl, reader *r)
{
    tg_tensor *x = pick(pl, r);
    float p = rd_float(r);
    bool training = rd_bool(r);
    return tg_dropout(x, p, training, rd_bool(r) ? NULL : &pl->rng);
}

/* The data module's calls on pool tensors (issue 16): affine transforms, given or drawn, and
 * stratified subsets. Their results belong to no tape: each is checked, then released. */
static tg_tensor *op_data(pool *pl, reader *r)
{
    tg_tensor *x = pick(pl, r), *y = NULL;
    switch (rd_byte(r) % 3) {
    case 0: {
        tg_affine t[4];
        for (int i = 0; i < 4; i++)
            t[i] = (tg_affine){rd_float(r), rd_float(r), rd_float(r), rd_float(r)};
        const int64_t n_t = rd_byte(r) % 6;
        y = tg_data_affine(x, rd_byte(r) % 8 ? t : NULL, n_t > 4 ? 4 : n_t, rd_float(r));
        break;
    }
    case 1: {
        tg_affine_range range = {rd_float(r), rd_float(r), rd_float(r), rd_float(r)};
        y = tg_data_augment_affine(x, pick_rng(pl, r), rd_byte(r) % 8 ? &range : NULL, rd_float(r));
        break;
    }
    default: {
        tg_dataset ds = {x, pick(pl, r)};
        tg_dataset *sub =
            tg_dataset_per_class(rd_byte(r) % 8 ? &ds : NULL, rd_int64(r), (uint64_t)rd_int64(r));
        check_result(sub ? sub->labels : NULL);
        if (sub && sub->images->shape[0] != sub->labels->numel)
            fuzz_fail("a subset whose images and labels do not pair up");
        tg_dataset_free(sub);
        return DONE;
    }
    }
    check_result(y);
    if (y && (y->ndim != 4 || !tg_shape_equal(y, x)))
        fuzz_fail("an affine transform changed the images' shape");
    tg_tensor_release(y);
    return DONE;
}

/* Back-propagates from the sum of a pool tensor (or, now and then, from the tensor itself,
 * which must be refused unless it has one element). */
static tg_tensor *op_backward(pool *pl, reader *r)
{
    tg_tensor *y = pick(pl, r);
    tg_tensor *loss = y;
    if (rd_byte(r) % 4) {
        loss = tg_sum(y);
        check_result(loss);
    }
    check_status(tg_backward(loss));
    return DONE;
}

static tg_tensor *op_layer_norm(pool *pl, reader *r)
{
    tg_tensor *x = pick(pl, r);
    int k = rd_int(r);
    /* weight and bias of x's last k sizes (leaves), pool tensors or TG_NONE. */
    tg_tensor *v[2];
    for (int i = 0; i < 2; i++) {
        uint8_t b = rd_byte(r) % 3;
        if (b == 1 && x && x != TG_NONE && k >= 0 && k <= x->ndim)
            v[i] = leaf_like(pl, r, k, x->shape + x->ndim - k, k);
        else
            v[i] = b == 0 ? TG_NONE : pick(pl, r);
    }
    return tg_layer_norm(x, k, v[0], v[1], rd_float(r));
}

/* ---- indices ---------------------------------------------------------------------------- */

/* An index value: a position 0..5 mostly, else one no size admits (negative, huge). */
static int64_t rd_index(reader *r)
{
    static const int64_t extreme[] = {
        -1,
        -2,
        6,
        7,
        16,
        INT32_MAX,
        (int64_t)1 << 32,
        INT64_MAX,
        INT64_MIN,
        INT64_MAX - 1,
        INT64_MIN + 1,
        (int64_t)1 << 53,
    };
    uint8_t b = rd_byte(r);
    if (b < 224)
        return b % 6;
    return extreme[b % (sizeof extreme / sizeof extreme[0])];
}

/* An index of the given shape, values from the input (a short pattern repeated, or NULL for
 * zeros), tape-owned (tg_indices) or the target's own (tg_index_new); into the pool. Shapes too
 * large to make are skipped; refused ones are tried. */
static tg_index *make_index(pool *pl, reader *r, int ndim, const int64_t *shape)
{
    int64_t n = leaf_elements(ndim, shape);
    if (n < 0 || pl->elements + n > FUZZ_BUDGET)
        return NULL;
    static int64_t values[FUZZ_LEAF_MAX];
    int64_t pattern[4] = {rd_index(r), rd_index(r), rd_index(r), rd_index(r)};
    for (int64_t i = 0; i < n; i++)
        values[i] = pattern[i % 4];
    const int64_t *v = rd_byte(r) % 8 == 0 ? NULL : values;
    bool own = rd_bool(r) && pl->n_owned_ix < FUZZ_MAX_OWNED_IX;
    tg_index *ix = own ? tg_index_new(ndim, shape, v) : tg_indices(ndim, shape, v);
    check_index(ix, 0);
    if (ix && own)
        pl->owned_ix[pl->n_owned_ix++] = ix;
    pool_add_ix(pl, ix);
    return ix;
}

/* An index of a shape read from the input (ndim 0..3 mostly, else 4..6, 7 or -1: refused). */
static void index_from_input(pool *pl, reader *r)
{
    uint8_t b = rd_byte(r);
    int ndim = b < 240 ? b % 4 : b < 252 ? 4 + b % 4 : -1;
    int64_t shape[TG_MAX_DIMS + 1];
    for (int i = 0; i < ndim; i++)
        shape[i] = rd_size(r);
    if (ndim > TG_MAX_DIMS || ndim < 0) {
        check_index(rd_bool(r) ? tg_index_new(ndim, shape, NULL) : tg_indices(ndim, shape, NULL),
                    0);
        return;
    }
    make_index(pl, r, ndim, shape);
}

/* Retains an index or tensor k = 0..2 times and releases it k + 1 times (or k when
 * balanced): when every reference left is held by the tape or a graph node (held >=
 * refcount), the extra release must be refused with an error, and nothing freed; one of the
 * target's own stays balanced (released at the end). */
static void release_games_ix(pool *pl, reader *r)
{
    tg_index *ix = (tg_index *)pick_ix(pl, r);
    int k = rd_byte(r) % 3;
    bool extra = rd_bool(r) && ix && ix->held > 0;
    /* As for leaves below: an index the fuzzer made with tg_index_new is its own even while a
     * node holds it, and the fuzzer releases it at the end; an extra release here would be a
     * double release by the fuzzer, not the library's fault. */
    for (int i = 0; i < pl->n_owned_ix; i++)
        extra &= pl->owned_ix[i] != ix;
    const bool last = ix && ix->held >= ix->refcount;
    const int64_t expect = ix ? ix->refcount - (extra && !last) : 0;
    for (int i = 0; i < k; i++)
        tg_index_retain(ix);
    for (int i = 0; i < k + extra; i++)
        tg_index_release(ix);
    if (ix && ix->refcount != expect)
        fuzz_fail("retains and releases of a tape-owned index did not balance");
    if (extra && last && tg_last_status() == TG_OK)
        fuzz_fail("tg_index_release of a tape-owned index was not refused");
    tg_clear_error();
}

static void release_games(pool *pl, reader *r)
{
    tg_tensor *t = pick(pl, r);
    int k = rd_byte(r) % 3;
    bool owned = t && t != TG_NONE && t->held > 0;
    /* A leaf is the fuzzer's own even while a node holds it: an extra release of it would end
     * the fuzzer's reference, which it ends again at the end. */
    for (int i = 0; i < pl->n_leaves; i++)
        owned &= pl->leaf[i] != t;
    bool extra = rd_bool(r) && (owned || !t || t == TG_NONE);
    /* The extra release is refused exactly when every reference left is a tape's or a node's;
     * one the fuzzer itself took (a pool entry) may be ended. */
    bool last = owned && t->held >= t->refcount;
    for (int i = 0; i < k; i++)
        tg_tensor_retain(t);
    for (int i = 0; i < k + extra; i++)
        tg_tensor_release(t);
    if (extra && last && tg_last_status() == TG_OK)
        fuzz_fail("tg_tensor_release of a tape-owned tensor was not refused");
    tg_clear_error();
}

static tg_tensor *op_index(pool *pl, reader *r)
{
    tg_tensor *x = pick(pl, r), *y = NULL;
    tg_index *ix = NULL;
    int axis = rd_int(r);
    bool keepdim = rd_bool(r);
    /* The size of x along axis, the bound of argmax's values; 0: no bound checked. */
    int64_t len = 0, axis_len = 0;
    if (x && x != TG_NONE && axis >= -x->ndim && axis < x->ndim)
        axis_len = x->shape[axis < 0 ? axis + x->ndim : axis];
    switch (rd_byte(r) % 9) {
    case 0: index_from_input(pl, r); return DONE;
    case 1: ix = tg_labels(x); break;
    case 2:
        ix = tg_index_from_tensor(x);
        check_index(ix, 0);
        if (ix && pl->n_owned_ix < FUZZ_MAX_OWNED_IX) {
            pl->owned_ix[pl->n_owned_ix++] = ix;
            pool_add_ix(pl, ix);
        } else {
            tg_index_release(ix);
        }
        return DONE;
    case 3:
        ix = rd_bool(r) ? tg_argmax(x, axis, keepdim) : tg_argmin(x, axis, keepdim);
        len = axis_len;
        break;
    case 4: {
        bool want = rd_byte(r) % 8 != 0; /* NULL for indices: refused */
        y = tg_max_axis_indices(x, axis, keepdim, want ? &ix : NULL);
        if (!y)
            return NULL; /* run_one checks the error */
        if (!want)
            fuzz_fail("tg_max_axis_indices with indices NULL succeeded");
        if (!ix || ix->numel != y->numel)
            fuzz_fail("tg_max_axis_indices: no index, or not one per maximum");
        len = axis_len;
        break;
    }
    case 5: {
        int64_t n = rd_bool(r) ? rd_size(r) : rd_int64(r);
        bool replacement = rd_bool(r);
        ix = tg_multinomial(x, n, replacement, pick_rng(pl, r));
        len = last_size(x);
        break;
    }
    case 6:
        ix = tg_categorical(x, rd_float(r), pick_rng(pl, r));
        len = last_size(x);
        break;
    case 7: release_games_ix(pl, r); return DONE;
    default: release_games(pl, r); return DONE;
    }
    check_index(ix, len);
    pool_add_ix(pl, ix);
    return y ? y : DONE;
}

/* An index for x along axis, of the given ndim and sizes at most x's (gather) or 1-D
 * (index_select), values mostly in range: reaches past the shape checks. */
static const tg_index *index_for(pool *pl, reader *r, const tg_tensor *x, int ndim)
{
    int64_t shape[TG_MAX_DIMS];
    for (int i = 0; i < ndim; i++) {
        int64_t s = rd_size(r), xs = size_at(x, i);
        shape[i] = rd_bool(r) && s > xs ? xs : s;
    }
    return make_index(pl, r, ndim, shape);
}

static tg_tensor *op_index_use(pool *pl, reader *r)
{
    tg_tensor *x = pick(pl, r);
    int axis = rd_int(r);
    bool fresh = rd_bool(r);
    int xdim = x && x != TG_NONE ? x->ndim : 1;
    switch (rd_byte(r) % 4) {
    case 0: {
        /* weight [V, D] made here or from the pool; padding_idx -1, in range, or hostile. */
        if (rd_bool(r)) {
            int64_t vd[2] = {rd_size(r), rd_size(r)};
            x = make_leaf(pl, r, 2, vd);
        }
        if (fresh)
            index_from_input(pl, r);
        const tg_index *ix = pick_ix(pl, r);
        int64_t pad = rd_bool(r) ? -1 : rd_index(r);
        return tg_embedding(x, ix, pad);
    }
    case 1: {
        const tg_index *ix = fresh ? index_for(pl, r, NULL, 1) : pick_ix(pl, r);
        return tg_index_select(x, axis, ix);
    }
    case 2: {
        const tg_index *ix = fresh ? index_for(pl, r, x, xdim) : pick_ix(pl, r);
        return tg_gather(x, axis, ix);
    }
    default: {
        const tg_index *ix = pick_ix(pl, r);
        return tg_one_hot(ix, rd_bool(r) ? rd_size(r) : rd_int64(r));
    }
    }
}

/* ---- tape-owned creation and tensor calls ----------------------------------------------- */

static tg_tensor *op_create(pool *pl, reader *r)
{
    uint8_t b = rd_byte(r);
    int ndim = b < 224 ? b % 5 : b < 248 ? 5 + b % 3 : -1;
    int64_t shape[TG_MAX_DIMS + 1];
    for (int i = 0; i < ndim; i++)
        shape[i] = rd_size(r);
    bool null_shape = ndim > 0 && rd_byte(r) % 16 == 0;
    int64_t n = ndim > TG_MAX_DIMS || ndim < 0 || null_shape ? 0 : leaf_elements(ndim, shape);
    if (n < 0 || pl->elements + n > FUZZ_BUDGET)
        return DONE;
    const int64_t *s = null_shape ? NULL : shape;
    static float data[FUZZ_LEAF_MAX];
    float v = rd_float(r);
    for (int64_t i = 0; i < n; i++)
        data[i] = v + (float)i;
    switch (rd_byte(r) % 8) {
    case 0: return tg_zeros(ndim, s);
    case 1: return tg_ones(ndim, s);
    case 2: return tg_full(ndim, s, v);
    case 3: return tg_scalar(v);
    case 4: return tg_from_data(ndim, s, rd_byte(r) % 8 ? data : NULL);
    case 5: return tg_rand(ndim, s, pick_rng(pl, r));
    case 6: return tg_randn(ndim, s, pick_rng(pl, r));
    default: return tg_detach(pick(pl, r));
    }
}

/* The calls on a tensor's state: gradients, requires_grad, in-place changes (on tensors that
 * saved ops hold: backward must then refuse, not compute from changed values). */
static tg_tensor *op_tensor(pool *pl, reader *r)
{
    tg_tensor *t = pick(pl, r), *g;
    switch (rd_byte(r) % 6) {
    case 0:
        g = rd_bool(r) && t && t != TG_NONE ? leaf_like(pl, r, t->ndim, t->shape, t->ndim)
                                            : pick(pl, r);
        check_status(tg_tensor_set_grad(t, g));
        g = tg_tensor_grad(t);
        if (g && !tg_shape_equal(g, t))
            fuzz_fail("a gradient whose shape is not its tensor's");
        break;
    case 1: tg_tensor_zero_grad(t); break;
    case 2: check_status(tg_tensor_set_requires_grad(t, rd_bool(r))); break;
    case 3: check_status(tg_tensor_fill_(t, rd_float(r))); break;
    case 4: check_status(tg_tensor_copy_(t, pick(pl, r))); break;
    default: {
        /* The gradient against a dy of y's shape (or another), from the pool or made here. */
        g = rd_bool(r) && t && t != TG_NONE ? leaf_like(pl, r, t->ndim, t->shape, t->ndim)
                                            : pick(pl, r);
        check_status(tg_backward_grad(t, g));
        break;
    }
    }
    return DONE;
}

/* ---- modules -------------------------------------------------------------------------------
 * Small modules made per input (sizes from the input, huge ones failing to allocate), run on
 * pool tensors or on inputs of their shape, clipped, stepped by an optimizer built from them. */

static void module_new(pool *pl, reader *r)
{
    if (pl->n_modules == FUZZ_MAX_MODULES)
        return;
    int64_t a = rd_size(r), b = rd_size(r);
    bool flag = rd_bool(r);
    tg_rng *rng = pick_rng(pl, r);
    tg_module *m;
    switch (rd_byte(r) % 8) {
    case 0: m = tg_nn_linear(a, b, flag, rng); break;
    case 1: {
        int64_t shape[2] = {a, b};
        m = tg_nn_layer_norm(rd_byte(r) % 4 - 1, shape, rd_float(r), flag);
        break;
    }
    case 2: m = tg_nn_embedding(a, b, rd_bool(r) ? -1 : rd_index(r), rng); break;
    case 3: m = tg_nn_gru_cell(a, b, flag, rng); break;
    case 4: m = tg_nn_gelu(flag); break;
    case 5: m = tg_nn_multihead_attention(a, b, flag, rng); break;
    case 6: m = tg_nn_transformer_encoder_layer(a, b, rd_size(r), flag, rng); break;
    default: m = tg_nn_silu(); break;
    }
    if (!m && (tg_last_status() == TG_OK || !tg_last_error()[0]))
        fuzz_fail("a module constructor failed without an error");
    tg_clear_error();
    if (m) {
        pl->module[pl->n_modules++] = m;
        pl->elements += tg_module_num_parameters(m);
    }
}

/* An input for m: [lead..., in] with in the last size of m's parameter (a Linear's or GRU
 * cell's input size, a layer norm's last normalised size, attention's embedding size), or a
 * pool tensor. */
static tg_tensor *module_input(pool *pl, reader *r, tg_module *m, const char *param)
{
    /* Attention's width is in_proj_weight's, its own or its self_attn child's. */
    static const char attn[] = "in_proj_weight";
    tg_module *owner = m;
    for (int64_t i = 0; !tg_module_has_param(m, attn) && i < tg_module_num_children(m); i++)
        if (tg_module_has_param(tg_module_child_at(m, i), attn))
            owner = tg_module_child_at(m, i);
    if (!tg_module_has_param(owner, param))
        param = attn;
    if (!rd_bool(r) || !tg_module_has_param(owner, param))
        return pick(pl, r);
    tg_tensor *w = tg_module_param(owner, param);
    int64_t shape[3] = {rd_size(r), rd_size(r), last_size(w)};
    int lead = rd_byte(r) % 3;
    return make_leaf(pl, r, lead + 1, shape + 2 - lead);
}

static tg_tensor *op_module(pool *pl, reader *r)
{
    uint8_t b = rd_byte(r);
    if (b % 8 == 0 || !pl->n_modules) {
        module_new(pl, r);
        return DONE;
    }
    tg_module *m = pl->module[rd_byte(r) % pl->n_modules];
    switch (b % 8) {
    case 1: return tg_module_forward(m, module_input(pl, r, m, "weight"));
    case 2: return tg_nn_embed(m, pick_ix(pl, r));
    case 3: {
        /* Two inputs (a GRU cell's x and h: weight_ih's dim 1, weight_hh's dim 1). */
        tg_tensor *x = module_input(pl, r, m, "weight_ih");
        tg_tensor *h = module_input(pl, r, m, "weight_hh");
        return tg_module_forward2(m, x, h);
    }
    case 4: {
        /* Counts from -1 to 4 (arrays of 8: the caller's promise holds), inputs TG_NONE now
         * and then; every output set on success, every one NULL on failure. */
        tg_tensor *in[8], *out[8];
        int64_t n_in = rd_byte(r) % 6 - 1, n_out = rd_byte(r) % 6 - 1;
        if (n_in < 0 && rd_bool(r))
            n_in = INT64_MIN;
        if (n_out < 0 && rd_bool(r))
            n_out = INT64_MIN;
        for (int i = 0; i < 8; i++) {
            in[i] = rd_byte(r) % 8 == 0 ? TG_NONE : module_input(pl, r, m, "weight_ih");
            out[i] = (tg_tensor *)&pl->rng; /* garbage the call must overwrite */
        }
        tg_status st = tg_module_forward_multi(m, n_in, in, n_out, out);
        for (int64_t i = 0; i < n_out; i++) {
            if (st == TG_OK)
                check_result(out[i]);
            if (st != TG_OK && out[i])
                fuzz_fail("tg_module_forward_multi failed and left an output set");
            if (st == TG_OK && !out[i])
                fuzz_fail("tg_module_forward_multi succeeded with an output NULL");
        }
        check_status(st);
        for (int64_t i = 0; st == TG_OK && i < n_out; i++)
            pool_add(pl, out[i]);
        return DONE;
    }
    case 5: {
        /* A parameter by name, misspelt ones included: NULL must come with an error. */
        static const char *names[] = {"weight",   "bias",      "bais",    "",
                                      "weight.x", "weight_ih", "bias_hh", NULL};
        const char *name = names[rd_byte(r) % (sizeof names / sizeof names[0])];
        tg_tensor *p = tg_module_param(m, name);
        check_result(p);
        return DONE;
    }
    case 6: {
        float total = NAN, v = rd_float(r), p = rd_float(r);
        if (rd_bool(r))
            check_status(tg_module_clip_grad_norm_(m, v, p, rd_bool(r) ? &total : NULL));
        else
            check_status(tg_module_clip_grad_value_(m, v));
        return DONE;
    }
    default: {
        /* An optimizer over m's parameters, one step after whatever backward ran. */
        float lr = rd_float(r), b1 = rd_float(r), b2 = rd_float(r), e = rd_float(r);
        tg_optim *opt = rd_bool(r) ? tg_optim_adam_module(m, lr, b1, b2, e, rd_float(r))
                                   : tg_optim_sgd_module(m, lr, b1, b2, e, rd_bool(r));
        if (!opt && (tg_last_status() == TG_OK || !tg_last_error()[0]))
            fuzz_fail("an optimizer constructor failed without an error");
        tg_clear_error();
        if (opt)
            check_status(tg_optim_step(opt));
        tg_optim_free(opt);
        return DONE;
    }
    }
}

/* tg_clip_grad_norm_ / tg_clip_grad_value_ over the leaves (counts from -1 to all of them,
 * or a NULL array). */
static tg_tensor *op_clip(pool *pl, reader *r)
{
    int64_t n = (int64_t)(rd_byte(r) % (pl->n_leaves + 2)) - 1;
    if (n < 0 && rd_bool(r))
        n = INT64_MIN;
    tg_tensor *const *params = rd_byte(r) % 8 == 0 ? NULL : pl->leaf;
    float v = rd_float(r), p = rd_float(r), total = NAN;
    if (rd_bool(r))
        check_status(tg_clip_grad_norm_(params, n, v, p, rd_bool(r) ? &total : NULL));
    else
        check_status(tg_clip_grad_value_(params, n, v));
    return DONE;
}

/* ---- the NULL of a failed call -----------------------------------------------------------
 * An op given the NULL that an earlier call returned must fail and keep that call's error (the
 * message names the real cause): never take it as an absent optional input (issue 14's second
 * safety hole: tg_linear(x, w, tg_reshape(bad)) computing without bias). */

/* A pool tensor that is one (pick may give NULL or TG_NONE, which would report themselves). */
static tg_tensor *pick_real(pool *pl, reader *r)
{
    tg_tensor *t = pick(pl, r);
    return t && t != TG_NONE ? t : pl->slot[0];
}

static tg_tensor *op_after_failure(pool *pl, reader *r)
{
    tg_tensor *x = pick_real(pl, r), *w = pick_real(pl, r), *m4[4], *xs[5], *out[2];
    const tg_index *ix = pick_ix(pl, r);
    tg_module *mod = pl->n_modules ? pl->module[rd_byte(r) % pl->n_modules] : NULL;
    uint8_t which = rd_byte(r), at = rd_byte(r);
    tg_index *got_ix = NULL;
    /* The failed call: a reshape to a size that cannot be. */
    int64_t bad_shape[1] = {-7};
    tg_tensor *bad = tg_reshape(x, 1, bad_shape);
    const tg_status st0 = tg_last_status();
    char msg[512];
    snprintf(msg, sizeof msg, "%s", tg_last_error());
    if (bad || st0 == TG_OK)
        fuzz_fail("tg_reshape to size -7 did not fail");
    const void *y = NULL;
    tg_status st = st0;
    switch (which % 24) {
    case 0: y = tg_linear(x, w, bad); break;
    case 1: y = tg_linear(x, bad, TG_NONE); break;
    case 2: y = tg_conv2d(x, w, bad, 1, 0, 1); break;
    case 3: y = tg_conv_transpose2d(x, w, bad, 1, 0, 0); break;
    case 4:
        for (int i = 0; i < 4; i++)
            m4[i] = i == at % 4 ? bad : TG_NONE;
        y = tg_batch_norm(x, m4[0], m4[1], m4[2], m4[3], at & 4, 0.1f, 1e-5f);
        break;
    case 5:
        y = at & 1 ? tg_layer_norm(x, 1, bad, TG_NONE, 1e-5f)
                   : tg_layer_norm(x, 1, TG_NONE, bad, 1e-5f);
        break;
    case 6:
        y = at % 3 == 0   ? tg_where(bad, x, w)
            : at % 3 == 1 ? tg_where(x, bad, w)
                          : tg_where(x, w, bad);
        break;
    case 7:
    case 8:
        for (int i = 0; i < 5; i++)
            xs[i] = i == at % 5 ? bad : x;
        y = which % 24 == 7 ? tg_stack(xs, 5, 0) : tg_concat(xs, 5, 0);
        break;
    case 9: y = at & 1 ? tg_matmul(x, bad) : tg_matmul(bad, x); break;
    case 10: y = tg_cross_entropy(x, NULL, TG_REDUCE_MEAN); break;
    case 11: y = at & 1 ? tg_embedding(w, NULL, -1) : tg_embedding(bad, ix, -1); break;
    case 12:
        if (!mod)
            y = tg_add(x, bad);
        else if (at % 3 == 0)
            y = tg_module_forward(mod, bad);
        else if (at % 3 == 1)
            y = tg_module_forward2(mod, x, bad);
        else {
            tg_tensor *in[2] = {x, bad};
            st = tg_module_forward_multi(mod, 2, in, 1, out);
        }
        break;
    case 13: st = tg_backward(bad); break;
    case 14: st = at & 1 ? tg_backward_grad(x, bad) : tg_tensor_set_grad(x, bad); break;
    case 15:
        y = at & 1 ? tg_mse(x, bad, TG_REDUCE_SUM) : tg_bce_with_logits(bad, x, TG_REDUCE_NONE);
        break;
    case 16: y = tg_masked_fill(x, bad, 0.0f); break;
    case 17:
        y = at & 1 ? (const void *)tg_argmax(bad, 0, false)
                   : (const void *)tg_max_axis_indices(bad, 0, false, &got_ix);
        break;
    case 18:
        y = at & 1 ? (const void *)tg_multinomial(bad, 1, true, &pl->rng)
                   : (const void *)tg_categorical(bad, 1.0f, &pl->rng);
        break;
    case 19: y = tg_one_hot(NULL, 3); break;
    case 20: y = at & 1 ? tg_index_select(x, 0, NULL) : tg_gather(x, 0, NULL); break;
    case 21: y = at & 1 ? tg_index_select(bad, 0, ix) : tg_gather(bad, 0, ix); break;
    case 22:
        y = at & 1 ? (const void *)tg_labels(bad) : (const void *)tg_index_from_tensor(bad);
        break;
    default: y = tg_dropout(bad, 0.5f, true, &pl->rng); break;
    }
    if (y || st == TG_OK)
        fuzz_fail("a call given the NULL of a failed call succeeded");
    if (tg_last_status() != st0 || strcmp(tg_last_error(), msg) != 0)
        fuzz_fail("a call given the NULL of a failed call replaced that call's error");
    tg_clear_error();
    return DONE;
}

/* ---- gradients of chosen inputs (issue 15) ---------------------------------------------
 * tg_grad on pool tensors: 1 to 3 outputs (now and then a count out of range, or 64), each a
 * pool tensor or its sum; 1 to 3 inputs (a leaf, a result, one not requiring grad, unused,
 * TG_NONE, NULL); grad_outputs NULL, or per output NULL, a leaf of its shape or a pool tensor;
 * create_graph either way. It succeeds with every gradient of its input's shape (without a
 * history unless create_graph), which join the pool (so gradients of gradients follow), or fails
 * with every one NULL; then, now and then, tg_backward of the gradients' sum, or tg_backward_ex
 * with or without create_graph. */
/* tg_grad calls per input: each create_graph call records the gradients' ops and the next one
 * may differentiate those too, so the graph can grow with every call in a way the element
 * budget does not see; a few calls reach every path. */
#define FUZZ_MAX_GRADS 3

static tg_tensor *op_grad(pool *pl, reader *r)
{
    if (++pl->grads > FUZZ_MAX_GRADS)
        return DONE;
    tg_tensor *outs[65], *ins[65], *dys[65], *grads[65];
    static const int counts[] = {1, 2, 3, 1, 2, 1, 1, 0, -1, 64, 65, INT_MIN};
    int n_out = counts[rd_byte(r) % 12], n_in = counts[rd_byte(r) % 12];
    for (int j = 0; j < n_out && j < 65; j++) {
        outs[j] = j < 3 ? pick(pl, r) : outs[j % 3];
        if (j < 3 && rd_byte(r) % 3 == 0)
            outs[j] = tg_sum(outs[j]);
        tg_clear_error();
        uint8_t d = j < 3 ? rd_byte(r) % 4 : 0;
        dys[j] = d == 0 ? NULL
                 : d == 1 && outs[j] && outs[j] != TG_NONE
                     ? leaf_like(pl, r, outs[j]->ndim, outs[j]->shape, outs[j]->ndim)
                     : pick(pl, r);
    }
    for (int k = 0; k < n_in && k < 65; k++)
        ins[k] = k < 3 ? pick(pl, r) : ins[k % 3];
    const bool create_graph = rd_bool(r), no_dys = rd_bool(r), no_grads = rd_byte(r) % 16 == 0;
    for (int k = 0; k < 65; k++)
        grads[k] = TG_NONE; /* every one must be written, on success or failure */
    tg_status st = tg_grad(n_out > 0 ? outs : NULL, n_out, n_in > 0 ? ins : NULL, n_in,
                           no_dys ? NULL : dys, create_graph, no_grads ? NULL : grads);
    const bool ok = st == TG_OK;
    check_status(st);
    /* A failure past the argument counts leaves every gradient NULL. */
    const bool counts_ok = n_out >= 1 && n_out <= 64 && n_in >= 1 && n_in <= 64;
    tg_tensor *sum = NULL;
    for (int k = 0; !no_grads && k < n_in && k < 65; k++) {
        tg_tensor *g = grads[k];
        if (!ok) {
            if (counts_ok && g != NULL)
                fuzz_fail("tg_grad failed but left a gradient");
            continue;
        }
        if (!g || g == TG_NONE || !tg_shape_equal(g, ins[k]))
            fuzz_fail("tg_grad gave a gradient missing or not of its input's shape");
        if (!create_graph && g->node)
            fuzz_fail("tg_grad without create_graph gave a gradient with a history");
        pool_add(pl, g);
        pl->elements += g->numel;
        sum = sum ? tg_add(sum, tg_sum(g)) : tg_sum(g);
    }
    tg_clear_error();
    uint8_t then = rd_byte(r) % 4;
    if (then == 1 && sum)
        check_status(tg_backward(sum));
    else if (then == 2)
        check_status(tg_backward_ex(pick(pl, r), rd_bool(r) ? NULL : pick(pl, r), rd_bool(r)));
    return DONE;
}

typedef tg_tensor *(*op_fn)(pool *pl, reader *r);
static const op_fn ops[] = {
    op_conv2d,        op_conv_transpose2d,
    op_pool,          op_upsample,
    op_slice,         op_reshape,
    op_flatten,       op_concat,
    op_transpose,     op_reduce,
    op_matmul,        op_batch_norm,
    op_loss,          op_binary,
    op_unary,         op_dropout,
    op_backward,      op_layer_norm,
    op_index,         op_index_use,
    op_create,        op_tensor,
    op_module,        op_clip,
    op_after_failure, op_grad,
    op_data,
};
#define N_OPS ((int)(sizeof ops / sizeof ops[0]))

/* ---- the target ------------------------------------------------------------------------------ */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    /* Every buffer through posix_memalign, where the cap above applies: large ones would
     * otherwise come from the allocator's heap over its own mapping (tensor/storage.c). */
    tg_alloc_arena = 0;
    fuzz_init();
    return 0;
}

/* One op byte: below 224 an op, else a new leaf (one op byte in eight). */
static void run_one(pool *pl, reader *r)
{
    uint8_t b = rd_byte(r);
    if (b >= 224 || pl->n_slots == 0) {
        leaf_from_input(pl, r);
        return;
    }
    fuzz_inside = true;
    tg_tensor *y = ops[b % N_OPS](pl, r);
    fuzz_inside = false;
    if (y == DONE)
        return;
    check_result(y);
    if (y) {
        pl->elements += y->numel;
        pool_add(pl, y);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    reader r = {data, size};
    pool pl = {.n_slots = 0};
    const int64_t live0 = tg_debug_live_tensors();
    tg_rng_seed(&pl.rng, 1);
    tg_tape *tape = tg_tape_begin(rd_bool(&r) ? TG_NO_GRAD : TG_GRAD);
    if (!tape)
        fuzz_fail("tg_tape_begin failed");
    for (int i = 0; i < FUZZ_MAX_OPS && r.n && pl.elements <= FUZZ_BUDGET; i++)
        run_one(&pl, &r);
    if (tg_tape_end(tape) != TG_OK)
        fuzz_fail("tg_tape_end failed");
    for (int i = 0; i < pl.n_leaves; i++)
        tg_tensor_release(pl.leaf[i]);
    for (int i = 0; i < pl.n_owned_ix; i++)
        tg_index_release(pl.owned_ix[i]);
    for (int i = 0; i < pl.n_modules; i++)
        tg_module_free(pl.module[i]);
    /* The tape freed every result, the leaves took their gradients with them. */
    if (tg_debug_live_tensors() != live0)
        fuzz_fail("live tensors did not return to their count before the input");
    fuzz_check(); /* no tensor or node alive, nothing printed */
    tg_allocator_trim();
    return 0;
}
