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
 * Beyond the sanitizers (signed overflow, out-of-bounds access, leaks), the checks: every NULL
 * result comes with an error status and a message, every result has a shape that follows the
 * rules (sizes >= 0, numel = their product), and after tg_tape_end (and the leaves' release)
 * tg_debug_live_tensors is back at its count before the input, with no node alive. Memory and
 * time stay bounded: the target never makes a leaf of more than FUZZ_LEAF_MAX elements, stops
 * an input once its tensors hold FUZZ_BUDGET elements, and makes the library's buffers above
 * FUZZ_ALLOC_MAX (1 MB) fail to allocate, which it reports as TG_ERR_NOMEM. An op's work is
 * then at most about its largest buffer times its smallest leaf (a window over a plane, a kernel
 * over an output): ~2^28, under a second even instrumented.
 * Extreme parameters are the point, not huge tensors. */
#include "fuzz.h"

#include "autograd.h"

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

typedef struct {
    tg_tensor *slot[FUZZ_SLOTS]; /* borrowed: leaves below or results owned by the tape */
    int n_slots, next_slot;
    tg_tensor *leaf[FUZZ_MAX_LEAVES]; /* owned by the target */
    int n_leaves;
    int64_t elements; /* created so far in this input */
    tg_rng rng;
} pool;

static tg_tensor *pick(pool *pl, reader *r)
{
    return pl->n_slots ? pl->slot[rd_byte(r) % pl->n_slots] : NULL;
}

/* pick, or NULL when the next byte says so (optional operands). */
static tg_tensor *pick_or_null(pool *pl, reader *r)
{
    return rd_byte(r) % 4 == 0 ? NULL : pick(pl, r);
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
 * Each reads its operands and parameters, calls the API once (or a few times), checks and
 * returns the result for the pool. */

static tg_tensor *op_conv2d(pool *pl, reader *r)
{
    tg_tensor *x = pick(pl, r), *w, *b = NULL;
    if (rd_bool(r)) {
        /* w [O, C of x, kh, kw] and maybe b [O]. */
        int64_t lead[2] = {rd_size(r), size_at(x, 1)};
        w = leaf_like(pl, r, 4, lead, 2);
        if (w && rd_bool(r))
            b = leaf_like(pl, r, 1, w->shape, 1);
    } else {
        w = pick(pl, r);
        b = pick_or_null(pl, r);
    }
    int stride = rd_int(r), padding = rd_int(r), dilation = rd_int(r);
    return tg_conv2d(x, w, b, stride, padding, dilation);
}

static tg_tensor *op_conv_transpose2d(pool *pl, reader *r)
{
    tg_tensor *x = pick(pl, r), *w, *b = NULL;
    if (rd_bool(r)) {
        /* w [C of x, O, kh, kw] and maybe b [O]. */
        int64_t lead[1] = {size_at(x, 1)};
        w = leaf_like(pl, r, 4, lead, 1);
        if (w && rd_bool(r))
            b = leaf_like(pl, r, 1, w->shape + 1, 1);
    } else {
        w = pick(pl, r);
        b = pick_or_null(pl, r);
    }
    int stride = rd_int(r), padding = rd_int(r), output_padding = rd_int(r);
    return tg_conv_transpose2d(x, w, b, stride, padding, output_padding);
}

static tg_tensor *op_pool(pool *pl, reader *r)
{
    tg_tensor *x = pick(pl, r);
    bool max = rd_bool(r);
    int kernel = rd_int(r), stride = rd_int(r), padding = rd_int(r);
    return max ? tg_max_pool2d(x, kernel, stride, padding)
               : tg_avg_pool2d(x, kernel, stride, padding);
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
    /* Up to 17 inputs: one more than an op takes. */
    tg_tensor *xs[17];
    int n = rd_byte(r) % 18;
    bool null_list = n == 0 && rd_bool(r);
    for (int i = 0; i < n; i++)
        xs[i] = pick(pl, r);
    int axis = rd_int(r);
    return tg_concat(null_list ? NULL : xs, n, axis);
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
    uint8_t which = rd_byte(r) % 5;
    int axis = rd_int(r);
    bool keepdim = rd_bool(r);
    switch (which) {
    case 0: return tg_sum(x);
    case 1: return tg_mean(x);
    case 2: return tg_sum_axis(x, axis, keepdim);
    case 3: return tg_mean_axis(x, axis, keepdim);
    default: return tg_max_axis(x, axis, keepdim);
    }
}

static tg_tensor *op_matmul(pool *pl, reader *r)
{
    tg_tensor *a = pick(pl, r), *b, *bias = NULL;
    bool linear = rd_bool(r);
    if (rd_bool(r)) {
        /* matmul: b [K of a, N]; linear: w [O, in of x] and maybe bias [O]. */
        int64_t lead[2] = {rd_size(r), size_at(a, 1)};
        b = linear ? leaf_like(pl, r, 2, lead, 2) : leaf_like(pl, r, 2, lead + 1, 1);
        if (linear && b && rd_bool(r))
            bias = leaf_like(pl, r, 1, b->shape, 1);
    } else {
        b = pick(pl, r);
        bias = pick_or_null(pl, r);
    }
    return linear ? tg_linear(a, b, bias) : tg_matmul(a, b);
}

static tg_tensor *op_batch_norm(pool *pl, reader *r)
{
    tg_tensor *x = pick(pl, r);
    int64_t c[1] = {size_at(x, 1)};
    /* weight, bias and the running buffers: [C] leaves, pool tensors or NULL, per byte. */
    tg_tensor *v[4];
    for (int i = 0; i < 4; i++) {
        uint8_t b = rd_byte(r) % 3;
        v[i] = b == 0 ? NULL : b == 1 ? leaf_like(pl, r, 1, c, 1) : pick(pl, r);
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
    switch (which) {
    case 0: return tg_bce_with_logits(a, b);
    case 1: return tg_mse(a, b);
    default: return tg_cross_entropy(a, b);
    }
}

static tg_tensor *op_binary(pool *pl, reader *r)
{
    tg_tensor *a = pick(pl, r), *b = pick(pl, r);
    switch (rd_byte(r) % 4) {
    case 0: return tg_add(a, b);
    case 1: return tg_sub(a, b);
    case 2: return tg_mul(a, b);
    default: return tg_div(a, b);
    }
}

static tg_tensor *op_unary(pool *pl, reader *r)
{
    tg_tensor *x = pick(pl, r);
    float s = rd_float(r), t = rd_float(r);
    switch (rd_byte(r) % 12) {
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

/* Back-propagates from the sum of a pool tensor (or, now and then, from the tensor itself,
 * which must be refused unless it has one element). */
static tg_tensor *op_backward(pool *pl, reader *r)
{
    tg_tensor *y = pick(pl, r);
    if (!y)
        return NULL;
    tg_tensor *loss = rd_byte(r) % 4 == 0 ? y : tg_sum(y);
    check_result(loss);
    if (loss)
        check_status(tg_backward(loss));
    return NULL;
}

typedef tg_tensor *(*op_fn)(pool *pl, reader *r);
static const op_fn ops[] = {
    op_conv2d,  op_conv_transpose2d, op_pool,      op_upsample, op_slice,    op_reshape,
    op_flatten, op_concat,           op_transpose, op_reduce,   op_matmul,   op_batch_norm,
    op_loss,    op_binary,           op_unary,     op_dropout,  op_backward,
};
#define N_OPS ((int)(sizeof ops / sizeof ops[0]))

/* ---- the target ------------------------------------------------------------------------------ */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_init();
    return 0;
}

/* One op byte: below N_OPS * 12 an op, else a new leaf (about one op byte in eight). */
static void run_one(pool *pl, reader *r)
{
    uint8_t b = rd_byte(r);
    if (b >= N_OPS * 12 || pl->n_slots == 0) {
        leaf_from_input(pl, r);
        return;
    }
    fuzz_inside = true;
    tg_tensor *y = ops[b % N_OPS](pl, r);
    fuzz_inside = false;
    if (ops[b % N_OPS] == op_backward)
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
        tg_release(pl.leaf[i]);
    /* The tape freed every result, the leaves took their gradients with them. */
    if (tg_debug_live_tensors() != live0)
        fuzz_fail("live tensors did not return to their count before the input");
    fuzz_check(); /* no tensor or node alive, nothing printed */
    tg_allocator_trim();
    return 0;
}
