/* Elementwise ops: the generic loops that expand elementwise.def (docs/design.md, section 4).
 *
 * Every line of elementwise.def becomes small kernels over one contiguous run of elements with
 * the op's expressions written inline (restrict pointers, no calls but the op's own libm ones,
 * so GCC vectorises the arithmetic ops), plus the op's cases, descriptor and public wrapper.
 * The generic code below splits a tensor into runs of at most EW_RUN elements, hands runs to
 * threads (TG_PARALLEL_FOR) and calls the kernels through a pointer once per run — never per
 * element.
 *
 * Binary ops broadcast as NumPy. check computes the output shape. forward and backward build an
 * ew_plan: the output's axes with size-1 axes dropped and neighbours merged wherever both inputs
 * allow it, and for each input a stride per axis (0 where it is broadcast). After merging, the
 * fast paths are simply the small plans: same shapes and scalar-with-anything are one axis (runs
 * over the flat tensor), [M,N] op [N] is two (each row of the full input against the one row);
 * anything else is the general strided path, one run per row of the innermost axis with the
 * outer axes giving each row's offsets.
 *
 * Summing a gradient back over broadcast axes is written once, in ew_binary_backward_input,
 * for every binary op: it walks the output's runs and accumulates dy * dy/dinput straight into
 * the input's gradient through the input's strides, so each output element lands on the input
 * element it was broadcast from. There is no temporary output-sized buffer: along the run the
 * input is either full (a vector accumulation) or broadcast (one sum per run), and threads never
 * share a gradient element (they split rows only when every row owns its gradient row, columns
 * when rows share one, and a sum over rows that share one element stays on one thread). Sums run
 * in a fixed order, so the results do not depend on the thread count.
 *
 * Second order (tg_grad with create_graph): a unary op's backward_graph applies its derivative
 * op <name>_grad(x, g) = g f'(x), made from the same line with its own kernels, whose backward
 * reads the line's f''; a binary op's builds the line's g dy/da, g dy/db from recorded ops. */
#include "internal.h"
#include "ops.h"

#include "../tensor/parallel.h"
#include "ew_math.h"

#include <math.h>
#include <string.h>

/* The selects in relu, leaky_relu, clamp, abs and their derivatives vectorise on SSE/AVX2 only
 * when GCC may evaluate both arms: otherwise it moves dy * (x > 0 ? 1 : s) into branches (where
 * dy * 1 folds to dy) and keeps the branch because the other arm's multiply "might trap".
 * -fno-trapping-math changes no computed value (we never read the FP exception flags; it is
 * not -ffast-math, which we do not use). With AVX-512 masking GCC vectorises them regardless. */
#if defined(__GNUC__) && !defined(__clang__) /* clang assumes no traps already */
#pragma GCC optimize("no-trapping-math")
#endif

/* Elements per run: a task big enough to amortise the call and the offset arithmetic, small
 * enough to balance threads and stay in L1/L2. */
#define EW_RUN 8192

/* A unary op's parameters: slope, scalar, exponent, or clamp's lo and hi. */
typedef struct {
    float c0, c1;
} ew_params;

static inline int64_t ew_min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/* max(x, lo) and min(x, hi) as selects that keep a NaN x (fmaxf/fminf would drop it, and do not
 * vectorise without -ffast-math). */
static inline float ew_max(float x, float lo)
{
    return x < lo ? lo : x;
}

static inline float ew_min(float x, float hi)
{
    return x > hi ? hi : x;
}

/* 1 / (1 + e^-x) as 1 / (1 + e) for x >= 0 and e / (1 + e) for x < 0, with e = e^-|x| in
 * (0, 1]: nothing overflows (sigmoid(-100) is the denormal e^-100, not 1 / inf), and the small
 * values keep their relative precision. The sign picks the numerator arithmetically: a select
 * here compiles to a branch (the loop does not vectorise, expf is a call) that mispredicts on
 * mixed signs and made the op 3x slower. pos + (1 - pos) e is exactly 1 or e. */
static inline float ew_sigmoid(float x)
{
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    const float pos = (float)(1u - (bits >> 31)); /* 1 for x >= +0, 0 for x <= -0 */
    const float e = expf(-fabsf(x));
    return (pos + (1.0f - pos) * e) / (1.0f + e);
}

/* erf(x) in arithmetic and selects only, so gelu vectorises (erff is a call per element, 30 ns
 * here). |x| < 0.5: x times the Taylor series of erf(x) / x to x^12 (truncation 2e-9 relative);
 * beyond: 1 - t P(t) e^-x^2 with t = 1 / (1 + 0.3275911 |x|), Abramowitz and Stegun 7.1.26
 * (absolute error 1.5e-7, the form PyTorch's vectorised erf uses), with the sign of x. */
static inline float ew_erf(float x)
{
    const float a = fabsf(x), s = x * x;
    const float small =
        x * (1.1283791670955126f +
             s * (-0.37612638903183754f +
                  s * (0.11283791670955126f +
                       s * (-0.026866170645131252f +
                            s * (0.005223977625442188f +
                                 s * (-8.548327023450853e-4f + s * 1.2055332981789664e-4f))))));
    const float t = 1.0f / (1.0f + 0.3275911f * a);
    const float poly =
        t * (0.254829592f +
             t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
    const float big = 1.0f - poly * ew_exp(-s);
    return a < 0.5f ? small : (x < 0.0f ? -big : big);
}

/* 1 / sqrt(2 pi): the standard normal density's factor (gelu's derivative). */
#define EW_INV_SQRT_2PI 0.3989422804014327f

/* tanh(sqrt(2/pi) (x + 0.044715 x^3)): the tanh in gelu_tanh (PyTorch's kBeta and kKappa). */
static inline float ew_gelu_tanh_t(float x)
{
    return ew_tanh(0.7978845608028654f * (x + 0.044715f * x * x * x));
}

/* d/dx of x (1 + t) / 2 with t = ew_gelu_tanh_t(x): (1 + t) / 2 + x/2 (1 - t^2) du/dx, as
 * PyTorch's GeluBackward (NaN where x^3 overflows, as there). */
static inline float ew_gelu_tanh_grad(float x)
{
    const float t = ew_gelu_tanh_t(x);
    return 0.5f * (1.0f + t) +
           0.5f * x * (1.0f - t * t) * 0.7978845608028654f * (1.0f + 3.0f * 0.044715f * x * x);
}

/* d2/dx2 of x (1 + t) / 2, t = tanh(u), u = k (x + c x^3): (1 - t^2) (u' + x/2 (u'' - 2 t u'^2))
 * with u' = k (1 + 3 c x^2), u'' = 6 k c x. */
static inline float ew_gelu_tanh_grad2(float x)
{
    const float t = ew_gelu_tanh_t(x), k = 0.7978845608028654f, c = 0.044715f;
    const float du = k * (1.0f + 3.0f * c * x * x), d2u = 6.0f * k * c * x;
    return (1.0f - t * t) * (du + 0.5f * x * (d2u - 2.0f * t * du * du));
}

/* sigmoid(x) as 1 / (1 + e^-x) on ew_exp, so silu vectorises (ew_sigmoid calls expf, kept for
 * sigmoid's own bits). ew_exp's clamp makes it 1.8e-35 instead of smaller from x = -80 on: silu's
 * x s there is as good as 0 either way. */
static inline float ew_sigmoid_arith(float x)
{
    return 1.0f / (1.0f + ew_exp(-x));
}

/* d/dx of x sigmoid(x). */
static inline float ew_silu_grad(float x)
{
    const float s = ew_sigmoid_arith(x);
    return s * (1.0f + x * (1.0f - s));
}

/* d2/dx2 of x sigmoid(x): s (1 - s) (2 + x (1 - 2 s)). */
static inline float ew_silu_grad2(float x)
{
    const float s = ew_sigmoid_arith(x);
    return s * (1.0f - s) * (2.0f + x * (1.0f - 2.0f * s));
}

/* log(1 + e) for e in [0, 1] in arithmetic (log1pf is a call per element): 2 atanh(u) with
 * u = e / (2 + e) in [0, 1/3], by its series u (1 + u^2/3 + ... + u^16/17) (truncation 5e-10
 * relative); tiny e keep their relative precision (2u = e). */
static inline float ew_log1p_unit(float e)
{
    const float u = e / (2.0f + e), v = u * u;
    const float p =
        1.0f +
        v * (1.0f / 3.0f +
             v * (1.0f / 5.0f +
                  v * (1.0f / 7.0f +
                       v * (1.0f / 9.0f +
                            v * (1.0f / 11.0f +
                                 v * (1.0f / 13.0f + v * (1.0f / 15.0f + v * (1.0f / 17.0f))))))));
    return 2.0f * u * p;
}

/* softplus: x past the threshold (PyTorch's cut-over), else log(1 + e^bx) / beta written as
 * (max(bx, 0) + log(1 + e^-|bx|)) / beta, which holds for any bx (a threshold above 88 would
 * overflow e^bx), on ew_exp and ew_log1p_unit so that it vectorises. A NaN x stays NaN (ew_max
 * keeps it). */
static inline float ew_softplus(float x, float beta, float threshold)
{
    const float bx = beta * x;
    return bx > threshold ? x : (ew_max(bx, 0.0f) + ew_log1p_unit(ew_exp(-fabsf(bx)))) / beta;
}

/* ---- unary: generic loops ---------------------------------------------------------------- */

typedef void (*ew_unary_fwd_fn)(float *restrict y, const float *restrict x, int64_t len,
                                const ew_params *p);
/* dx may be dy (the op's dx_over_dy): those two are not restrict. */
typedef void (*ew_unary_bwd_fn)(float *dx, const float *dy, const float *restrict x,
                                const float *restrict y, int64_t len, const ew_params *p);

static tg_status ew_unary_check(tg_node *n, int *ndim, int64_t shape[])
{
    const tg_tensor *x = n->in[0];
    *ndim = x->ndim;
    for (int d = 0; d < x->ndim; d++)
        shape[d] = x->shape[d];
    return TG_OK;
}

static void ew_unary_forward(tg_node *n, ew_unary_fwd_fn f)
{
    const ew_params *p = TG_PARAMS(n, ew_params);
    const float *x = n->in[0]->data;
    float *y = n->out->data;
    const int64_t N = n->out->numel, runs = (N + EW_RUN - 1) / EW_RUN;
    if (runs <= 1) { /* one run: skip the OpenMP runtime (see TG_PARALLEL_MIN) */
        f(y, x, N, p);
        return;
    }
    TG_PARALLEL_FOR(N)
    for (int64_t r = 0; r < runs; r++)
        f(y + r * EW_RUN, x + r * EW_RUN, ew_min64(EW_RUN, N - r * EW_RUN), p);
}

/* add accumulates into dx; set assigns, for a fresh dx (tg_grad_fresh). */
static void ew_unary_backward(tg_node *n, ew_unary_bwd_fn add, ew_unary_bwd_fn set)
{
    const ew_params *p = TG_PARAMS(n, ew_params);
    float *dx = tg_grad_of(n, 0);
    if (!dx)
        return;
    const ew_unary_bwd_fn f = tg_grad_fresh(n, 0) ? set : add;
    const float *x = n->in[0]->data, *y = n->out->data, *dy = n->out->grad->data;
    const int64_t N = n->out->numel, runs = (N + EW_RUN - 1) / EW_RUN;
    if (runs <= 1) { /* one run: skip the OpenMP runtime (see TG_PARALLEL_MIN) */
        f(dx, dy, x, y, N, p);
        return;
    }
    TG_PARALLEL_FOR(N)
    for (int64_t r = 0; r < runs; r++) {
        const int64_t i = r * EW_RUN;
        f(dx + i, dy + i, x + i, y + i, ew_min64(EW_RUN, N - i), p);
    }
}

/* ---- unary: the derivative ops, for second order -----------------------------------------
 * Each unary op f has an op f_grad(x, g) = g f'(x): its backward as a recorded forward, so that
 * a gradient computed with create_graph has a history (f's backward_graph is one f_grad). Its
 * own backward: d/dx = up g f''(x), d/dg = up f'(x). Its kernels recompute y = f(x) where f'
 * reads y; all three share one signature, o (=|+=) u * factor over a run. */

typedef void (*ew_grad_fn)(float *restrict o, const float *restrict u, const float *restrict x,
                           const float *restrict g, int64_t len, const ew_params *p);

static tg_status ew_grad_check(tg_node *n, int *ndim, int64_t shape[])
{
    const tg_tensor *x = n->in[0], *g = n->in[1];
    if (!tg_shape_equal(x, g)) {
        char sx[160], sg[160];
        return tg_set_error(TG_ERR_SHAPE, "tg_%s: x %s and its output gradient %s differ in shape",
                            n->op->name, TG_SHAPE_STR(x, sx), TG_SHAPE_STR(g, sg));
    }
    return ew_unary_check(n, ndim, shape);
}

/* f over x's N elements in runs, in parallel when there is more than one. */
static void ew_grad_run(ew_grad_fn f, float *o, const float *u, const float *x, const float *g,
                        int64_t N, const ew_params *p)
{
    const int64_t runs = (N + EW_RUN - 1) / EW_RUN;
    if (runs <= 1) { /* one run: skip the OpenMP runtime (see TG_PARALLEL_MIN) */
        f(o, u, x, g, N, p);
        return;
    }
    TG_PARALLEL_FOR(N)
    for (int64_t r = 0; r < runs; r++) {
        const int64_t i = r * EW_RUN;
        f(o + i, u + i, x + i, g + i, ew_min64(EW_RUN, N - i), p);
    }
}

/* out = g f'(x): fwd assigns u f'(x) with u = g. */
static void ew_grad_forward(tg_node *n, ew_grad_fn fwd)
{
    const float *x = n->in[0]->data, *g = n->in[1]->data;
    ew_grad_run(fwd, n->out->data, g, x, g, n->out->numel, TG_PARAMS(n, ew_params));
}

/* dx += up g f''(x) (acc2), dg += up f'(x) (acc1). */
static void ew_grad_backward(tg_node *n, ew_grad_fn acc2, ew_grad_fn acc1)
{
    const float *x = n->in[0]->data, *g = n->in[1]->data, *up = n->out->grad->data;
    const ew_params *p = TG_PARAMS(n, ew_params);
    float *dx = tg_grad_of(n, 0), *dg = tg_grad_of(n, 1);
    if (dx)
        ew_grad_run(acc2, dx, up, x, g, n->out->numel, p);
    if (dg)
        ew_grad_run(acc1, dg, up, x, g, n->out->numel, p);
}

/* True for a deriv2 written as the literal 0.0f in elementwise.def: a piecewise-linear op
 * (relu, leaky_relu, abs, clamp, the scalar ops). Compared at compile time (both strings are
 * literals). */
#define EW_LINEAR(deriv2) (__builtin_strcmp(#deriv2, "0.0f") == 0)

/* Second order of a unary op: dx = grad_op(x, gout) = gout f'(x), with f's params. For a
 * piecewise-linear f, f'' is 0 wherever it exists, so x enters detached: no gradient of zeros
 * flows back into x's history (in a WGAN-GP critic, a whole backward through D(x^) saved). */
static tg_status ew_unary_backward_graph(tg_node *n, tg_tensor *gout, tg_tensor **gin,
                                         const tg_op *grad_op, bool linear)
{
    tg_tensor *x = linear ? tg_detach(n->in[0]) : n->in[0];
    gin[0] = tg_apply2(grad_op, n->params, sizeof(ew_params), x, gout);
    return gin[0] ? TG_OK : tg_last_status();
}

/* ---- binary: broadcasting plan and generic loops ----------------------------------------- */

/* The output as nd merged axes (no size-1 axis), and where each input's element lies. */
typedef struct {
    int nd; /* >= 1 */
    int64_t size[TG_MAX_DIMS];
    int64_t stride[2][TG_MAX_DIMS]; /* element strides of a and b; 0 where broadcast */
    int64_t rows, n;                /* rows = product of the outer sizes, n = innermost size */
} ew_plan;

/* Kernels of one binary op over a run. "vs": b is one element for the whole run (b[0]), "sv":
 * a is. acc[i][v] accumulates into input i's gradient, v = 1 when the other input is a vector
 * along the run; sum[i] returns the run's total for input i broadcast along it. */
typedef void (*ew_binary_fwd_fn)(float *restrict y, const float *restrict a,
                                 const float *restrict b, int64_t len);
typedef void (*ew_binary_acc_fn)(float *restrict g, const float *restrict dy,
                                 const float *restrict y, const float *restrict a,
                                 const float *restrict b, int64_t len);
typedef double (*ew_binary_sum_fn)(const float *restrict dy, const float *restrict y,
                                   const float *restrict a, const float *restrict b, int64_t len);
typedef struct {
    ew_binary_fwd_fn fwd_vv, fwd_vs, fwd_sv;
    ew_binary_acc_fn acc[2][2];
    ew_binary_sum_fn sum[2];
} ew_binary_kernels;

/* Input size along output axis d (right-aligned, 1 where the input has no such axis). */
static inline int64_t ew_size_at(const tg_tensor *t, int nd, int d)
{
    const int k = d - (nd - t->ndim);
    return k >= 0 ? t->shape[k] : 1;
}

static tg_status ew_binary_check(tg_node *n, int *ndim, int64_t shape[])
{
    const tg_tensor *a = n->in[0], *b = n->in[1];
    const int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    char sa[160], sb[160];
    for (int d = nd - 1; d >= 0; d--) {
        const int64_t na = ew_size_at(a, nd, d), nb = ew_size_at(b, nd, d);
        if (na != nb && na != 1 && nb != 1)
            return tg_set_error(TG_ERR_SHAPE,
                                "tg_%s: a %s and b %s: shapes do not broadcast "
                                "(axis %d: %lld vs %lld)",
                                n->op->name, TG_SHAPE_STR(a, sa), TG_SHAPE_STR(b, sb), d - nd,
                                (long long)na, (long long)nb);
        shape[d] = na == 1 ? nb : na;
    }
    if (tg_shape_numel(nd, shape) < 0) {
        char so[160];
        return tg_set_error(TG_ERR_SHAPE,
                            "tg_%s: a %s and b %s: the broadcast shape %s has too "
                            "many elements",
                            n->op->name, TG_SHAPE_STR(a, sa), TG_SHAPE_STR(b, sb),
                            tg_shape_str(nd, shape, so, sizeof so));
    }
    *ndim = nd;
    return TG_OK;
}

static void ew_plan_make(ew_plan *pl, const tg_tensor *a, const tg_tensor *b, const tg_tensor *y)
{
    const tg_tensor *in[2] = {a, b};
    const int nd = y->ndim;
    int64_t st[2][TG_MAX_DIMS];
    for (int i = 0; i < 2; i++) {
        int64_t s = 1;
        for (int d = nd - 1; d >= 0; d--) {
            const int64_t size = ew_size_at(in[i], nd, d);
            st[i][d] = size == 1 ? 0 : s;
            s *= size;
        }
    }
    pl->nd = 0;
    for (int d = 0; d < nd; d++) {
        if (y->shape[d] == 1)
            continue; /* both inputs have size 1 here: nothing to step over */
        const int p = pl->nd - 1;
        bool merge = p >= 0;
        for (int i = 0; i < 2 && merge; i++) {
            /* Axis d continues axis p for input i when both are broadcast, or when both are full
             * and p's stride is d's stride times d's size (contiguous). */
            const int64_t outer = pl->stride[i][p], inner = st[i][d];
            merge = (outer == 0 && inner == 0) || (inner != 0 && outer == inner * y->shape[d]);
        }
        if (merge) {
            pl->size[p] *= y->shape[d];
            pl->stride[0][p] = st[0][d];
            pl->stride[1][p] = st[1][d];
        } else {
            pl->size[pl->nd] = y->shape[d];
            pl->stride[0][pl->nd] = st[0][d];
            pl->stride[1][pl->nd] = st[1][d];
            pl->nd++;
        }
    }
    if (pl->nd == 0) { /* one element: both inputs hold one too */
        pl->nd = 1;
        pl->size[0] = 1;
        pl->stride[0][0] = pl->stride[1][0] = 1;
    }
    pl->n = pl->size[pl->nd - 1];
    pl->rows = 1;
    for (int d = 0; d < pl->nd - 1; d++)
        pl->rows *= pl->size[d];
}

/* Offsets in a and b of the first element of output row r. */
static inline void ew_row_offsets(const ew_plan *pl, int64_t r, int64_t off[2])
{
    off[0] = off[1] = 0;
    for (int d = pl->nd - 2; d >= 0; d--) {
        const int64_t i = r % pl->size[d];
        r /= pl->size[d];
        off[0] += i * pl->stride[0][d];
        off[1] += i * pl->stride[1][d];
    }
}

static void ew_binary_forward(tg_node *n, const ew_binary_kernels *k)
{
    const int64_t N = n->out->numel;
    if (N == 0)
        return;
    ew_plan pl;
    ew_plan_make(&pl, n->in[0], n->in[1], n->out);
    const float *a = n->in[0]->data, *b = n->in[1]->data;
    float *y = n->out->data;
    const int64_t sa = pl.stride[0][pl.nd - 1], sb = pl.stride[1][pl.nd - 1];
    const ew_binary_fwd_fn f = sa && sb ? k->fwd_vv : sa ? k->fwd_vs : k->fwd_sv;
    const int64_t runs = (pl.n + EW_RUN - 1) / EW_RUN, tasks = pl.rows * runs;
    if (tasks == 1) { /* one run: skip the OpenMP runtime (see TG_PARALLEL_MIN) */
        f(y, a, b, pl.n);
        return;
    }
    TG_PARALLEL_FOR(N)
    for (int64_t t = 0; t < tasks; t++) {
        const int64_t r = t / runs, j = t % runs * EW_RUN;
        int64_t off[2];
        ew_row_offsets(&pl, r, off);
        f(y + r * pl.n + j, a + off[0] + j * sa, b + off[1] + j * sb, ew_min64(EW_RUN, pl.n - j));
    }
}

/* Accumulates dL/d input i into g (input i's gradient): the sum over broadcast axes. */
static void ew_binary_backward_input(const ew_plan *pl, int i, float *g, const float *dy,
                                     const float *y, const float *a, const float *b,
                                     const ew_binary_kernels *k)
{
    const int last = pl->nd - 1;
    const int64_t n = pl->n, sa = pl->stride[0][last], sb = pl->stride[1][last];
    const int64_t si = pl->stride[i][last], so = pl->stride[1 - i][last];
    const int64_t N = pl->rows * n, runs = (n + EW_RUN - 1) / EW_RUN;
    /* Does every output row own its gradient row (input i not broadcast over outer axes)? */
    bool own_rows = true;
    for (int d = 0; d < last; d++)
        own_rows &= pl->stride[i][d] != 0;

    if (si == 0) {
        /* Input i is broadcast along the run: each run adds its total to one element. Rows run
         * in parallel only when they add to distinct elements. */
        const ew_binary_sum_fn f = k->sum[i];
        if (pl->rows == 1) { /* one run: skip the OpenMP runtime (see TG_PARALLEL_MIN) */
            g[0] += (float)f(dy, y, a, b, n);
            return;
        }
        TG_PARALLEL_FOR_WORK(own_rows ? pl->rows : 0, n)
        for (int64_t r = 0; r < pl->rows; r++) {
            int64_t off[2];
            ew_row_offsets(pl, r, off);
            g[off[i]] += (float)f(dy + r * n, y + r * n, a + off[0], b + off[1], n);
        }
    } else if (own_rows) {
        /* One gradient element per output element: any split is race-free. */
        const ew_binary_acc_fn f = k->acc[i][so != 0];
        const int64_t tasks = pl->rows * runs;
        if (tasks == 1) { /* one run: skip the OpenMP runtime (see TG_PARALLEL_MIN) */
            f(g, dy, y, a, b, n);
            return;
        }
        TG_PARALLEL_FOR(N)
        for (int64_t t = 0; t < tasks; t++) {
            const int64_t r = t / runs, j = t % runs * EW_RUN;
            int64_t off[2];
            ew_row_offsets(pl, r, off);
            f(g + off[i] + j, dy + r * n + j, y + r * n + j, a + off[0] + j * sa,
              b + off[1] + j * sb, ew_min64(EW_RUN, n - j));
        }
    } else {
        /* Broadcast over outer axes (a bias [N] under [M, N]): rows share a gradient row, so
         * threads take column blocks and each walks every row over its block. Gradient offsets
         * are multiples of n, so distinct blocks never touch the same element. */
        const ew_binary_acc_fn f = k->acc[i][so != 0];
        TG_PARALLEL_FOR_WORK(runs, N / runs)
        for (int64_t c = 0; c < runs; c++) {
            const int64_t j = c * EW_RUN, len = ew_min64(EW_RUN, n - j);
            for (int64_t r = 0; r < pl->rows; r++) {
                int64_t off[2];
                ew_row_offsets(pl, r, off);
                f(g + off[i] + j, dy + r * n + j, y + r * n + j, a + off[0] + j * sa,
                  b + off[1] + j * sb, len);
            }
        }
    }
}

static void ew_binary_backward(tg_node *n, const ew_binary_kernels *k)
{
    if (n->out->numel == 0)
        return;
    ew_plan pl;
    ew_plan_make(&pl, n->in[0], n->in[1], n->out);
    for (int i = 0; i < 2; i++) {
        float *g = tg_grad_of(n, i);
        if (g)
            ew_binary_backward_input(&pl, i, g, n->out->grad->data, n->out->data, n->in[0]->data,
                                     n->in[1]->data, k);
    }
}

/* Second order of a binary op: ga = g dy/da and gb = g dy/db (recorded ops, NULL on failure),
 * each summed back over the axes its input was broadcast along. */
static tg_status ew_binary_backward_graph(tg_node *n, uint32_t need, tg_tensor **gin, tg_tensor *ga,
                                          tg_tensor *gb)
{
    const tg_tensor *a = n->in[0], *b = n->in[1];
    if (tg_graph_needs(need, 0) && !(gin[0] = tg_graph_sum_to(ga, a->ndim, a->shape)))
        return tg_last_status();
    if (tg_graph_needs(need, 1) && !(gin[1] = tg_graph_sum_to(gb, b->ndim, b->shape)))
        return tg_last_status();
    return TG_OK;
}

/* ---- gradcheck helpers used by elementwise.def ------------------------------------------- */

/* A value of either sign with magnitude in [0.5, 2]: away from a pole at 0. */
static float ew_draw_nonzero(tg_rng *rng)
{
    const float m = 0.5f + 1.5f * tg_rng_uniform01(rng);
    return tg_rng_uniform01(rng) < 0.5f ? -m : m;
}

/* Every input away from 0 (rdiv_scalar). TG_ISA_LEAF (tensor/isa.h): FMA where the CPU has
 * it, so the cases draw the same inputs as a -march=native build. */
TG_ISA_LEAF(ew_init_nonzero, (int i, tg_tensor *t, tg_rng *rng), (i, t, rng))
{
    (void)i;
    for (int64_t e = 0; e < t->numel; e++)
        t->data[e] = ew_draw_nonzero(rng);
}

/* Numerator from [-1, 1], denominator (input 1) away from 0 (div). */
TG_ISA_LEAF(ew_init_denominator, (int i, tg_tensor *t, tg_rng *rng), (i, t, rng))
{
    for (int64_t e = 0; e < t->numel; e++)
        t->data[e] = i == 1 ? ew_draw_nonzero(rng) : -1.0f + 2.0f * tg_rng_uniform01(rng);
}

/* The generator macros below are laid out by hand. */
/* clang-format off */
/* One [3, 4] input from [lo, hi], then optional designators: EW_CASE(-1, 1, EW_KINKS(0)). The
 * second shape is the _grad op's (x, g), which runs the same cases; the op itself reads one. */
#define EW_CASE(lo_, ...) {.shape = {{3, 4}, {3, 4}}, .lo = (lo_), .hi = __VA_ARGS__}
/* The parameters c0 [, c1] (c1 defaults to 0). */
#define EW_P(...) EW_P_(__VA_ARGS__, 0.0f, 0.0f)
#define EW_P_(c0_, c1_, ...) TG_CASE_PARAMS(ew_params, (c0_), (c1_))
#define EW_KINKS(...)                                                                              \
    .kinks = {__VA_ARGS__}, .n_kinks = (int)(sizeof((const float[]){__VA_ARGS__}) / sizeof(float))
/* Every binary op's cases: same shapes, and each way a shape broadcasts. */
#define EW_BCAST_CASES(init_)                                                                      \
    {.shape = {{2, 3}, {2, 3}}, .init = (init_), .name = "same"},                                  \
    {.shape = {{3, 1}, {1, 4}}, .init = (init_), .name = "outer"},                                 \
    {.shape = {{2, 3}, {3}}, .init = (init_), .name = "row"},                                      \
    {.shape = {{3}, {2, 3}}, .init = (init_), .name = "row_a"},                                    \
    {.shape = {{0}, {2, 3}}, .init = (init_), .name = "scalar_a"},                                 \
    {.shape = {{2, 3}, {0}}, .init = (init_), .name = "scalar_b"},                                 \
    {.shape = {{4}, {2, 1, 4}}, .init = (init_), .name = "lead"},                                  \
    {.shape = {{5, 1, 3}, {4, 1}}, .init = (init_), .name = "mixed"},                              \
    {.shape = {{2, 1, 3, 1}, {1, 4, 1, 2}}, .init = (init_), .name = "alternating"}

/* ---- the ops: one block per line of elementwise.def --------------------------------------
 * Kernel locals are ew_-prefixed so they cannot capture the names the expressions use (x, y,
 * a, b and the parameters). */
#define EW_UNPAREN(...) __VA_ARGS__
/* The public wrapper, in the base compilation only: the AVX2 and AVX-512 ones compile the
 * forward and backward (TG_ISA_KERNEL, tensor/isa.h) and leave the public functions out. */
#if TG_ISA_BASE
#define EW_PUBLIC(...) __VA_ARGS__
#else
#define EW_PUBLIC(...)
#endif

/* A unary backward kernel: dx ASSIGN dy * dy/dx, ASSIGN being += or = (a fresh dx). dx may be
 * dy (dx_over_dy): omp simd, which the same index read and written allows, vectorises it as
 * restrict did. */
#define EW_UNARY_BWD(OP, suffix, ASSIGN, DECL, deriv)                                              \
    static void OP##suffix(float *ew_dx, const float *ew_dy, const float *restrict ew_x,           \
                           const float *restrict ew_y, int64_t ew_len, const ew_params *ew_p)      \
    {                                                                                              \
        DECL TG_PRAGMA(omp simd) for (int64_t ew_j = 0; ew_j < ew_len; ew_j++)                     \
        {                                                                                          \
            const float x = ew_x[ew_j], y = ew_y[ew_j];                                            \
            (void)x;                                                                               \
            (void)y;                                                                               \
            ew_dx[ew_j] ASSIGN ew_dy[ew_j] * (deriv);                                              \
        }                                                                                          \
    }

/* A _grad op kernel: o ASSIGN u * factor, with y = f(x) and dydx = f'(x) in scope. */
#define EW_GRAD_KERNEL(OP, suffix, ASSIGN, DECL, fwd, deriv, factor)                               \
    static void OP##suffix(float *restrict ew_o, const float *restrict ew_u,                       \
                           const float *restrict ew_x, const float *restrict ew_g,                 \
                           int64_t ew_len, const ew_params *ew_p)                                  \
    {                                                                                              \
        DECL (void)ew_g;                                                                           \
        for (int64_t ew_j = 0; ew_j < ew_len; ew_j++) {                                            \
            const float x = ew_x[ew_j], y = (fwd);                                                 \
            const float dydx = (deriv);                                                            \
            (void)y;                                                                               \
            (void)dydx;                                                                            \
            ew_o[ew_j] ASSIGN ew_u[ew_j] * (factor);                                               \
        }                                                                                          \
    }

/* The derivative op OP_grad(x, g) = g f'(x) and OP's backward_graph, which applies it. */
#define EW_GRAD_IMPL(OP, DECL, fwd, deriv, deriv2)                                                 \
    EW_GRAD_KERNEL(OP, _gfwd, =, DECL, fwd, deriv, dydx)                                           \
    EW_GRAD_KERNEL(OP, _gacc1, +=, DECL, fwd, deriv, dydx)                                         \
    EW_GRAD_KERNEL(OP, _gacc2, +=, DECL, fwd, deriv, ew_g[ew_j] * (deriv2))                        \
    TG_ISA_KERNEL(OP##_grad_forward, (tg_node *n), (n))                                            \
    {                                                                                              \
        ew_grad_forward(n, OP##_gfwd);                                                             \
    }                                                                                              \
    TG_ISA_KERNEL(OP##_grad_backward, (tg_node *n), (n))                                           \
    {                                                                                              \
        ew_grad_backward(n, OP##_gacc2, OP##_gacc1);                                               \
    }                                                                                              \
    TG_OP_DEFINE(OP##_grad) = {.name = #OP "_grad",                                                \
                               .n_in = 2,                                                          \
                               .check = ew_grad_check,                                             \
                               .forward = OP##_grad_forward,                                       \
                               .backward = OP##_grad_backward,                                     \
                               .no_graph_reason = "third order: differentiating f'' would need "   \
                                                  "f''', which elementwise.def does not give",     \
                               .cases = OP##_cases};                                               \
    static tg_status OP##_backward_graph(tg_node *n, tg_tensor *gout, uint32_t need,               \
                                         tg_tensor **gin)                                          \
    {                                                                                              \
        (void)need;                                                                                \
        return ew_unary_backward_graph(n, gout, gin, &tg_op_##OP##_grad, EW_LINEAR(deriv2));       \
    }

#define EW_UNARY_IMPL(OP, DECL, SIG, ARGS, fwd, deriv, deriv2, ...)                                \
    static void OP##_fwd(float *restrict ew_y, const float *restrict ew_x, int64_t ew_len,         \
                         const ew_params *ew_p)                                                    \
    {                                                                                              \
        DECL for (int64_t ew_j = 0; ew_j < ew_len; ew_j++)                                         \
        {                                                                                          \
            const float x = ew_x[ew_j];                                                            \
            ew_y[ew_j] = (fwd);                                                                    \
        }                                                                                          \
    }                                                                                              \
    EW_UNARY_BWD(OP, _bwd, +=, DECL, deriv)                                                        \
    EW_UNARY_BWD(OP, _bwd_set, =, DECL, deriv)                                                     \
    TG_ISA_KERNEL(OP##_forward, (tg_node *n), (n))                                                 \
    {                                                                                              \
        ew_unary_forward(n, OP##_fwd);                                                             \
    }                                                                                              \
    TG_ISA_KERNEL(OP##_backward, (tg_node *n), (n))                                                \
    {                                                                                              \
        ew_unary_backward(n, OP##_bwd, OP##_bwd_set);                                             \
    }                                                                                              \
    static const tg_case OP##_cases[] = {__VA_ARGS__, {0}};                                        \
    EW_GRAD_IMPL(OP, DECL, fwd, deriv, deriv2)                                                     \
    TG_OP_DEFINE(OP) = {.name = #OP,                                                               \
                        .n_in = 1,                                                                 \
                        .check = ew_unary_check,                                                   \
                        .forward = OP##_forward,                                                   \
                        .backward = OP##_backward,                                                 \
                        .backward_graph = OP##_backward_graph,                                     \
                        .cases = OP##_cases,                                                       \
                        .fresh_grads = true,                                                       \
                        .dx_over_dy = true};                                                       \
    EW_PUBLIC(tg_tensor *tg_##OP SIG                                                               \
              {                                                                                    \
                  const ew_params ew_p = {EW_UNPAREN ARGS};                                        \
                  return tg_apply1(&tg_op_##OP, &ew_p, sizeof ew_p, x);                            \
              })

#define EW_UNARY0(OP, fwd, deriv, deriv2, ...)                                                     \
    EW_UNARY_IMPL(OP, (void)ew_p;, (tg_tensor * x), (0.0f, 0.0f), fwd, deriv, deriv2, __VA_ARGS__)
#define EW_UNARY1(OP, P, fwd, deriv, deriv2, ...)                                                  \
    EW_UNARY_IMPL(OP, const float P = ew_p->c0; (void)P;                                           \
                  , (tg_tensor * x, float P), (P, 0.0f), fwd, deriv, deriv2, __VA_ARGS__)
#define EW_UNARY2(OP, P, Q, fwd, deriv, deriv2, ...)                                               \
    EW_UNARY_IMPL(OP, const float P = ew_p->c0; const float Q = ew_p->c1; (void)P; (void)Q;        \
                  , (tg_tensor * x, float P, float Q), (P, Q), fwd, deriv, deriv2, __VA_ARGS__)

/* Binary kernels. A and B say how a run reads a and b: ew_a[ew_j] (a vector along the run) or
 * ew_a[0] (one element for the whole run). */
#define EW_BINARY_FWD(OP, suffix, A, B, fwd)                                                       \
    static void OP##_fwd_##suffix(float *restrict ew_y, const float *restrict ew_a,                \
                                  const float *restrict ew_b, int64_t ew_len)                      \
    {                                                                                              \
        for (int64_t ew_j = 0; ew_j < ew_len; ew_j++) {                                            \
            const float a = A, b = B;                                                              \
            ew_y[ew_j] = (fwd);                                                                    \
        }                                                                                          \
    }
#define EW_BINARY_ACC(OP, suffix, A, B, deriv)                                                     \
    static void OP##_acc_##suffix(float *restrict ew_g, const float *restrict ew_dy,               \
                                  const float *restrict ew_y, const float *restrict ew_a,          \
                                  const float *restrict ew_b, int64_t ew_len)                      \
    {                                                                                              \
        for (int64_t ew_j = 0; ew_j < ew_len; ew_j++) {                                            \
            const float a = A, b = B, y = ew_y[ew_j];                                              \
            (void)a;                                                                               \
            (void)b;                                                                               \
            (void)y;                                                                               \
            ew_g[ew_j] += ew_dy[ew_j] * (deriv);                                                   \
        }                                                                                          \
    }
/* Sums in double: a run can be long (a scalar broadcast over a million elements). */
#define EW_BINARY_SUM(OP, suffix, A, B, deriv)                                                     \
    static double OP##_sum_##suffix(const float *restrict ew_dy, const float *restrict ew_y,       \
                                    const float *restrict ew_a, const float *restrict ew_b,        \
                                    int64_t ew_len)                                                \
    {                                                                                              \
        double ew_s = 0.0;                                                                         \
        for (int64_t ew_j = 0; ew_j < ew_len; ew_j++) {                                            \
            const float a = A, b = B, y = ew_y[ew_j];                                              \
            (void)a;                                                                               \
            (void)b;                                                                               \
            (void)y;                                                                               \
            ew_s += (double)(ew_dy[ew_j] * (deriv));                                               \
        }                                                                                          \
        return ew_s;                                                                               \
    }

#define EW_V(p) p[ew_j]
#define EW_S(p) p[0]

#define EW_BINARY(OP, fwd, da, db, ga, gb, ...)                                                    \
    EW_BINARY_FWD(OP, vv, EW_V(ew_a), EW_V(ew_b), fwd)                                             \
    EW_BINARY_FWD(OP, vs, EW_V(ew_a), EW_S(ew_b), fwd)                                             \
    EW_BINARY_FWD(OP, sv, EW_S(ew_a), EW_V(ew_b), fwd)                                             \
    EW_BINARY_ACC(OP, a_vv, EW_V(ew_a), EW_V(ew_b), da)                                            \
    EW_BINARY_ACC(OP, a_vs, EW_V(ew_a), EW_S(ew_b), da)                                            \
    EW_BINARY_ACC(OP, b_vv, EW_V(ew_a), EW_V(ew_b), db)                                            \
    EW_BINARY_ACC(OP, b_sv, EW_S(ew_a), EW_V(ew_b), db)                                            \
    EW_BINARY_SUM(OP, a, EW_S(ew_a), EW_V(ew_b), da)                                               \
    EW_BINARY_SUM(OP, b, EW_V(ew_a), EW_S(ew_b), db)                                               \
    static const ew_binary_kernels OP##_kernels = {                                                \
        .fwd_vv = OP##_fwd_vv,                                                                     \
        .fwd_vs = OP##_fwd_vs,                                                                     \
        .fwd_sv = OP##_fwd_sv,                                                                     \
        .acc = {{OP##_acc_a_vs, OP##_acc_a_vv}, {OP##_acc_b_sv, OP##_acc_b_vv}},                   \
        .sum = {OP##_sum_a, OP##_sum_b}};                                                          \
    TG_ISA_KERNEL(OP##_forward, (tg_node *n), (n))                                                 \
    {                                                                                              \
        ew_binary_forward(n, &OP##_kernels);                                                       \
    }                                                                                              \
    TG_ISA_KERNEL(OP##_backward, (tg_node *n), (n))                                                \
    {                                                                                              \
        ew_binary_backward(n, &OP##_kernels);                                                      \
    }                                                                                              \
    /* ga and gb are built only for the inputs whose gradient is wanted. */                        \
    static tg_status OP##_backward_graph(tg_node *n, tg_tensor *gout, uint32_t need,               \
                                         tg_tensor **gin)                                          \
    {                                                                                              \
        tg_tensor *a = n->in[0], *b = n->in[1], *y = n->out, *g = gout;                            \
        (void)a;                                                                                   \
        (void)b;                                                                                   \
        (void)y;                                                                                   \
        return ew_binary_backward_graph(n, need, gin, tg_graph_needs(need, 0) ? (ga) : NULL,       \
                                        tg_graph_needs(need, 1) ? (gb) : NULL);                    \
    }                                                                                              \
    static const tg_case OP##_cases[] = {__VA_ARGS__, {0}};                                        \
    TG_OP_DEFINE(OP) = {.name = #OP,                                                               \
                        .n_in = 2,                                                                 \
                        .check = ew_binary_check,                                                  \
                        .forward = OP##_forward,                                                   \
                        .backward = OP##_backward,                                                 \
                        .backward_graph = OP##_backward_graph,                                     \
                        .cases = OP##_cases};                                                      \
    EW_PUBLIC(tg_tensor *tg_##OP(tg_tensor *a, tg_tensor *b)                                       \
              {                                                                                    \
                  return tg_apply2(&tg_op_##OP, NULL, 0, a, b);                                    \
              })

/* clang-format on */
#include "elementwise.def"
