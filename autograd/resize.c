/* Resizing ops: upsample x[N,C,H,W] by an integer scale, nearest or bilinear.
 *
 * Bilinear interpolation is separable: each output row reads two input rows and each output
 * column two input columns, with weights that depend only on the row (or column) index. Those
 * indices and weights are computed once per call into two small tables kept in the node's
 * scratch; the forward and the backward (its exact transpose) both read them. Kernels run over
 * the N*C planes, so the backward's scatter stays inside one plane and is race-free; a fresh
 * gradient (tg_grad_fresh) is zeroed plane by plane just before its scatter, while in cache. */
#include "internal.h"
#include "ops.h"

#include "../tensor/parallel.h"

#include <string.h>

typedef struct {
    int scale;
    int mode; /* a tg_upsample_mode */
} upsample_params;

/* upsample_backward's: upsample's params and the H and W of the x it upsampled. */
typedef struct {
    upsample_params up;
    int64_t H, W;
} upsample_grad_params;

/* The sizes the kernels loop over: P = N * C planes of H x W upsampled to Ho x Wo. */
typedef struct {
    int64_t P, H, W, Ho, Wo;
} upsample_dims;

static upsample_dims upsample_dims_of(const tg_tensor *x, const tg_tensor *y)
{
    return (upsample_dims){x->shape[0] * x->shape[1], x->shape[2], x->shape[3], y->shape[2],
                           y->shape[3]};
}

/* Output index o along one axis reads input i0 with weight w0 and i1 with weight w1. */
typedef struct {
    int64_t i0, i1;
    float w0, w1;
} lerp_entry;

static bool upsample_is_bilinear(int mode)
{
    return mode == TG_UPSAMPLE_BILINEAR_ALIGN_CORNERS || mode == TG_UPSAMPLE_BILINEAR_HALF_PIXEL;
}

/* Fills t[0..out) for an axis of in -> out = in * scale elements, as PyTorch's CPU kernel:
 *   aligned corners: src = o * (in - 1) / (out - 1)   (0 when out == 1)
 *   half pixel:      src = (o + 0.5) / scale - 0.5, negative values clamped to 0
 * i0 = floor(src), i1 = i0 + 1 (i0 at the last element), w1 = src - i0, w0 = 1 - w1.
 * Computed in float, as PyTorch does for float tensors, so the weights match its own. */
static void lerp_table(lerp_entry *t, int64_t in, int64_t out, int scale, bool align)
{
    float ratio =
        align ? (out > 1 ? (float)(in - 1) / (float)(out - 1) : 0.0f) : 1.0f / (float)scale;
    for (int64_t o = 0; o < out; o++) {
        float src = align ? ratio * (float)o : ratio * ((float)o + 0.5f) - 0.5f;
        if (src < 0.0f)
            src = 0.0f;
        int64_t i0 = (int64_t)src;
        if (i0 > in - 1) /* a guard: float rounding moves src by far less than 1 */
            i0 = in - 1;
        float l = src - (float)i0;
        if (l > 1.0f)
            l = 1.0f;
        t[o] = (lerp_entry){i0, i0 < in - 1 ? i0 + 1 : i0, 1.0f - l, l};
    }
}

/* ---- upsample -----------------------------------------------------------------------------
 * y[N,C,H*s,W*s] from x[N,C,H,W] with scale s.
 *   nearest:  y[oh,ow] = x[oh / s, ow / s] (PyTorch's 'nearest': floor(dst * in / out));
 *             dx[h,w] += the s x s block of dy it was copied to.
 *   bilinear: y[oh,ow] = r.w0 (c.w0 x[r.i0,c.i0] + c.w1 x[r.i0,c.i1])
 *                      + r.w1 (c.w0 x[r.i1,c.i0] + c.w1 x[r.i1,c.i1])
 *             with r = rows[oh], c = cols[ow] (lerp_table), computed in two passes: along
 *             columns (gathers), then along rows (contiguous, vectorised), the same operations
 *             in the same order (bilinear_plane). The backward is its transpose, rows first
 *             then columns (bilinear_scatter_plane): the same weights into the same dx
 *             elements, summed in another order than one output element at a time. */
/* The checks of x (given by its shape xs: a backward op checks the x it produces) for fn; sets
 * the output shape and *table_bytes, the bilinear tables' size. */
static tg_status upsample_check_x(const upsample_params *p, int xndim, const int64_t *xs, int *ndim,
                                  int64_t shape[], size_t *table_bytes, const char *fn)
{
    char sx[160];
    if (xndim != 4)
        return tg_set_error(TG_ERR_SHAPE, "%s: x %s must be 4-D [N, C, H, W]", fn,
                            tg_shape_str(xndim, xs, sx, sizeof sx));
    if (p->scale < 1)
        return tg_set_error(TG_ERR_ARG, "%s: scale %d must be >= 1", fn, p->scale);
    if (p->mode != TG_UPSAMPLE_NEAREST && !upsample_is_bilinear(p->mode))
        return tg_set_error(TG_ERR_ARG,
                            "%s: mode %d is not a tg_upsample_mode "
                            "(NEAREST %d, BILINEAR_ALIGN_CORNERS %d, BILINEAR_HALF_PIXEL %d)",
                            fn, p->mode, TG_UPSAMPLE_NEAREST, TG_UPSAMPLE_BILINEAR_ALIGN_CORNERS,
                            TG_UPSAMPLE_BILINEAR_HALF_PIXEL);
    int64_t H = xs[2], W = xs[3];
    if (H < 1 || W < 1)
        return tg_set_error(TG_ERR_SHAPE,
                            "%s: x %s with scale %d: H and W must be at least 1, "
                            "or the output would be empty",
                            fn, tg_shape_str(xndim, xs, sx, sizeof sx), p->scale);
    *ndim = 4;
    shape[0] = xs[0];
    shape[1] = xs[1];
    /* Each product checked before it is used: with an empty batch, H and W may be huge. */
    if (__builtin_mul_overflow(H, p->scale, &shape[2]) ||
        __builtin_mul_overflow(W, p->scale, &shape[3]) || tg_shape_numel(4, shape) < 0)
        return tg_set_error(TG_ERR_SHAPE,
                            "%s: x %s times scale %d: the output size "
                            "overflows",
                            fn, tg_shape_str(xndim, xs, sx, sizeof sx), p->scale);
    *table_bytes = 0;
    /* The tables of the bilinear modes, one entry per output row and column; an empty output
     * needs none (its kernels return at once). */
    size_t entries = (size_t)shape[2] + (size_t)shape[3];
    if (upsample_is_bilinear(p->mode) && shape[0] * shape[1] > 0) {
        if (entries > SIZE_MAX / sizeof(lerp_entry))
            return tg_set_error(TG_ERR_SHAPE,
                                "%s: x %s times scale %d: the interpolation tables "
                                "of %lld + %lld entries are more than memory can address",
                                fn, tg_shape_str(xndim, xs, sx, sizeof sx), p->scale,
                                (long long)shape[2], (long long)shape[3]);
        *table_bytes = entries * sizeof(lerp_entry);
    }
    return TG_OK;
}

static tg_status upsample_check(tg_node *n, int *ndim, int64_t shape[])
{
    const tg_tensor *x = n->in[0];
    return upsample_check_x(TG_PARAMS(n, upsample_params), x->ndim, x->shape, ndim, shape,
                            &n->scratch_bytes, "tg_upsample");
}

/* The bilinear tables in scratch (rows, then cols), filled for the node's sizes d. */
static lerp_entry *upsample_tables(tg_node *n, upsample_dims d)
{
    const upsample_params *p = TG_PARAMS(n, upsample_params);
    lerp_entry *rows = n->scratch;
    bool align = p->mode == TG_UPSAMPLE_BILINEAR_ALIGN_CORNERS;
    lerp_table(rows, d.H, d.Ho, p->scale, align);
    lerp_table(rows + d.Ho, d.W, d.Wo, p->scale, align);
    return rows;
}

/* Output columns per block of the separable bilinear passes: two rows of one block are all
 * their working memory, on the stack, whatever Wo. */
#define UP_BLOCK 256

/* The first pass of the forward: t[0..n) = the input row xr interpolated at the columns
 * cols[0..n) (gathers; the same operations as the four-tap formula's inner sums). */
static void lerp_cols(const lerp_entry *cols, int64_t n, const float *xr, float *t)
{
    for (int64_t j = 0; j < n; j++) {
        const lerp_entry c = cols[j];
        t[j] = c.w0 * xr[c.i0] + c.w1 * xr[c.i1];
    }
}

/* Its transpose, the second pass of the backward: dxr[c.i0] += c.w0 g, dxr[c.i1] += c.w1 g.
 * At the last column i0 == i1: both land on one element, whose weight is then w0 + w1. */
static void scatter_cols(const lerp_entry *cols, int64_t n, const float *g, float *dxr)
{
    for (int64_t j = 0; j < n; j++) {
        const lerp_entry c = cols[j];
        dxr[c.i0] += c.w0 * g[j];
        dxr[c.i1] += c.w1 * g[j];
    }
}

/* ---- the column passes of short rows on AVX-512 ---------------------------------------------
 * The GAN's upsamplings have rows of 7 and 14 inputs (14 and 28 outputs): lerp_cols and
 * scatter_cols spent most of upsampling's time loading and storing one float at a time (perf:
 * 60% of bilinear_plane). A row of at most 32 floats fits two registers, so a pass picks each
 * output's taps from them by index (VPERMT2PS) for 16 outputs at once; the indices and weights
 * are laid out once per call (col_plan), not per row. The operations per element are the
 * scalar loops' own, in their order: forward w0 * x[i0] fused onto w1 * x[i1] (GCC's
 * contraction of lerp_cols), and in the scatter each dx element's terms, one fused
 * multiply-add each, in the order of the output columns that give them. So the bits are the
 * same. */
#if TG_ISA_BASE
int tg_upsample_short_rows = 1;
#endif

#define COL_TERMS 8 /* a dx element's terms at most in the vector scatter (scale 2: 2 or 3) */

typedef struct {
    bool fwd, bwd; /* the vector forward applies (W <= 32, Wo <= UP_BLOCK); the scatter (also
                      Wo <= 32 and at most COL_TERMS terms an element) */
    int32_t i0[UP_BLOCK], i1[UP_BLOCK];
    float w0[UP_BLOCK], w1[UP_BLOCK];
    int terms;                 /* the most terms of a dx element */
    int32_t tj[COL_TERMS][32]; /* term k of dx element e: g[tj[k][e]] ... */
    float tw[COL_TERMS][32];   /* ... times tw[k][e] */
    uint32_t tm[COL_TERMS];    /* the elements that have a term k */
} col_plan;

#if defined(__AVX512F__)
#include "../tensor/avx512.h"

/* Fills plan from the column table of an upsampling of rows of W to Wo. */
static void col_plan_fill(col_plan *plan, const lerp_entry *cols, int64_t W, int64_t Wo)
{
    plan->fwd = tg_upsample_short_rows && W <= 32 && Wo <= UP_BLOCK;
    plan->bwd = plan->fwd && Wo <= 32;
    if (!plan->fwd)
        return;
    int n[32] = {0};
    plan->terms = 0;
    memset(plan->tm, 0, sizeof plan->tm);
    for (int64_t j = 0; j < Wo; j++) {
        const lerp_entry c = cols[j];
        plan->i0[j] = (int32_t)c.i0, plan->i1[j] = (int32_t)c.i1;
        plan->w0[j] = c.w0, plan->w1[j] = c.w1;
        for (int side = 0; side < 2 && plan->bwd; side++) {
            const int64_t e = side ? c.i1 : c.i0;
            if (n[e] == COL_TERMS) {
                plan->bwd = false;
                break;
            }
            plan->tj[n[e]][e] = (int32_t)j;
            plan->tw[n[e]][e] = side ? c.w1 : c.w0;
            plan->tm[n[e]] |= 1u << e;
            n[e]++;
            plan->terms = n[e] > plan->terms ? n[e] : plan->terms;
        }
    }
}

/* lerp_cols on plan (fwd): t[0..n) from the row xr of W floats. */
static void lerp_cols_short(const col_plan *plan, int64_t n, const float *xr, int64_t W, float *t)
{
    const __m512 lo = _mm512_maskz_loadu_ps(tg_lanes16(W), xr);
    const __m512 hi = _mm512_maskz_loadu_ps(tg_lanes16(W - 16), xr + 16);
    for (int64_t j = 0; j < n; j += 16) {
        const __mmask16 m = tg_lanes16(n - j);
        const __m512 a = _mm512_permutex2var_ps(lo, _mm512_maskz_loadu_epi32(m, plan->i0 + j), hi);
        const __m512 b = _mm512_permutex2var_ps(lo, _mm512_maskz_loadu_epi32(m, plan->i1 + j), hi);
        const __m512 wb = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, plan->w1 + j), b);
        _mm512_mask_storeu_ps(t + j, m,
                              _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, plan->w0 + j), a, wb));
    }
}

/* scatter_cols on plan (bwd): dxr[0..W) += the n column gradients g. */
static void scatter_cols_short(const col_plan *plan, int64_t n, const float *g, float *dxr,
                               int64_t W)
{
    const __m512 lo = _mm512_maskz_loadu_ps(tg_lanes16(n), g);
    const __m512 hi = _mm512_maskz_loadu_ps(tg_lanes16(n - 16), g + 16);
    for (int64_t e = 0; e < W; e += 16) {
        const __mmask16 m = tg_lanes16(W - e);
        __m512 acc = _mm512_maskz_loadu_ps(m, dxr + e);
        for (int k = 0; k < plan->terms; k++) {
            const __mmask16 mk = (__mmask16)(plan->tm[k] >> e) & m;
            const __m512 gk =
                _mm512_permutex2var_ps(lo, _mm512_maskz_loadu_epi32(mk, plan->tj[k] + e), hi);
            acc = _mm512_mask3_fmadd_ps(_mm512_maskz_loadu_ps(mk, plan->tw[k] + e), gk, acc, mk);
        }
        _mm512_mask_storeu_ps(dxr + e, m, acc);
    }
}
#else
static void col_plan_fill(col_plan *plan, const lerp_entry *cols, int64_t W, int64_t Wo)
{
    (void)cols, (void)W, (void)Wo;
    plan->fwd = plan->bwd = false;
}

static void lerp_cols_short(const col_plan *plan, int64_t n, const float *xr, int64_t W, float *t)
{
    (void)plan, (void)n, (void)xr, (void)W, (void)t;
}

static void scatter_cols_short(const col_plan *plan, int64_t n, const float *g, float *dxr,
                               int64_t W)
{
    (void)plan, (void)n, (void)g, (void)dxr, (void)W;
}
#endif

/* One plane of the bilinear forward, in separable passes per block of output columns: input
 * rows interpolated along columns into t (lerp_cols), then output rows y = r.w0 t[r.i0] +
 * r.w1 t[r.i1], contiguous. Row h lives in t[h & 1]: an output row reads rows i0 and i0 + 1
 * (or i0 twice), of different parities, and i0 never decreases, so each input row is
 * interpolated once per block. The operations and their order are the four-tap formula's, so
 * y is bit-identical to it (FMA contraction included: checked against the former kernel). */
static void bilinear_plane(upsample_dims d, const lerp_entry *rows, const lerp_entry *cols,
                           const col_plan *plan, const float *xp, float *yp)
{
    float t[2][UP_BLOCK];
    for (int64_t c0 = 0; c0 < d.Wo; c0 += UP_BLOCK) {
        const int64_t nb = d.Wo - c0 < UP_BLOCK ? d.Wo - c0 : UP_BLOCK;
        int64_t held[2] = {-1, -1}; /* the input row in t[0], t[1] */
        for (int64_t oh = 0; oh < d.Ho; oh++) {
            const lerp_entry r = rows[oh];
            for (int64_t h = r.i0; h <= r.i1; h++)
                if (held[h & 1] != h) {
                    if (plan->fwd)
                        lerp_cols_short(plan, nb, xp + h * d.W, d.W, t[h & 1]);
                    else
                        lerp_cols(cols + c0, nb, xp + h * d.W, t[h & 1]);
                    held[h & 1] = h;
                }
            const float *a = t[r.i0 & 1], *b = t[r.i1 & 1];
            float *yr = yp + oh * d.Wo + c0;
            for (int64_t j = 0; j < nb; j++)
                yr[j] = r.w0 * a[j] + r.w1 * b[j];
        }
    }
}

/* scatter_cols, or its vector form where plan allows. */
static void scatter_row(const col_plan *plan, const lerp_entry *cols, int64_t nb, const float *g,
                        float *dxr, int64_t W)
{
    if (plan->bwd)
        scatter_cols_short(plan, nb, g, dxr, W);
    else
        scatter_cols(cols, nb, g, dxr);
}

/* The accumulator of input row h among the two of bilinear_scatter_plane (g, held). The row
 * it evicts, of h's parity, is h - 2 or below, so below the current i0 (h <= i0 + 1): i0 never
 * decreasing, it is complete, and is scattered into dx's row before the slot is zeroed. (In
 * any other order a row would be scattered in parts, still correct: the map is linear.) */
static float *row_acc(float (*g)[UP_BLOCK], int64_t held[2], int64_t h, const lerp_entry *cols,
                      const col_plan *plan, int64_t nb, float *dxp, int64_t W)
{
    float *a = g[h & 1];
    if (held[h & 1] != h) {
        if (held[h & 1] >= 0)
            scatter_row(plan, cols, nb, a, dxp + held[h & 1] * W, W);
        memset(a, 0, sizeof(float) * (size_t)nb);
        held[h & 1] = h;
    }
    return a;
}

/* One plane of the bilinear backward, the exact transpose of bilinear_plane: per block of
 * columns, each output row of dy added into the accumulators of its two input rows (r.w0 and
 * r.w1 times the row, contiguous), each accumulator scattered along columns into dx once
 * complete (row_acc) or at the block's end. A block's scatter may touch the edge columns of
 * its neighbour's, so one plane is one thread's. */
static void bilinear_scatter_plane(upsample_dims d, const lerp_entry *rows, const lerp_entry *cols,
                                   const col_plan *plan, const float *dyp, float *dxp)
{
    float g[2][UP_BLOCK];
    for (int64_t c0 = 0; c0 < d.Wo; c0 += UP_BLOCK) {
        const int64_t nb = d.Wo - c0 < UP_BLOCK ? d.Wo - c0 : UP_BLOCK;
        int64_t held[2] = {-1, -1}; /* the input row accumulated in g[0], g[1] */
        for (int64_t oh = 0; oh < d.Ho; oh++) {
            const lerp_entry r = rows[oh];
            const float *dyr = dyp + oh * d.Wo + c0;
            float *a = row_acc(g, held, r.i0, cols + c0, plan, nb, dxp, d.W);
            for (int64_t j = 0; j < nb; j++)
                a[j] += r.w0 * dyr[j];
            float *b = row_acc(g, held, r.i1, cols + c0, plan, nb, dxp, d.W);
            for (int64_t j = 0; j < nb; j++)
                b[j] += r.w1 * dyr[j];
        }
        for (int k = 0; k < 2; k++)
            if (held[k] >= 0)
                scatter_row(plan, cols + c0, nb, g[k], dxp + held[k] * d.W, d.W);
    }
}

/* yd = x (xd) upsampled; rows and cols are the bilinear tables (unused for nearest). */
static void upsample_run(const upsample_params *p, upsample_dims d, const lerp_entry *rows,
                         const lerp_entry *cols, const float *xd, float *yd)
{
    int64_t P = d.P, H = d.H, W = d.W, Ho = d.Ho, Wo = d.Wo;
    int64_t s = p->scale;
    if (p->mode == TG_UPSAMPLE_NEAREST) {
        TG_PARALLEL_FOR_WORK(P, Ho * Wo)
        for (int64_t pl = 0; pl < P; pl++) {
            const float *xp = xd + pl * H * W;
            float *yp = yd + pl * Ho * Wo;
            for (int64_t oh = 0; oh < Ho; oh++) {
                const float *xr = xp + (oh / s) * W;
                float *yr = yp + oh * Wo;
                /* Input-major, so no division per element (a 64-bit divide is ~40 cycles). */
                for (int64_t w = 0; w < W; w++)
                    for (int64_t k = 0; k < s; k++)
                        yr[w * s + k] = xr[w];
            }
        }
        return;
    }
    col_plan plan;
    col_plan_fill(&plan, cols, W, Wo);
    TG_PARALLEL_FOR_WORK(P, 4 * Ho * Wo)
    for (int64_t pl = 0; pl < P; pl++)
        bilinear_plane(d, rows, cols, &plan, xd + pl * H * W, yd + pl * Ho * Wo);
}

TG_ISA_KERNEL(upsample_forward, (tg_node * n), (n))
{
    upsample_dims d = upsample_dims_of(n->in[0], n->out);
    if (d.P == 0)
        return; /* an empty batch: Ho and Wo may be far too large to walk */
    const upsample_params *p = TG_PARAMS(n, upsample_params);
    const lerp_entry *rows = upsample_is_bilinear(p->mode) ? upsample_tables(n, d) : NULL;
    upsample_run(p, d, rows, rows ? rows + d.Ho : NULL, n->in[0]->data, n->out->data);
}

/* dx += dy's transpose-upsampled values (the same weights into the same elements); fresh: dx
 * is uninitialised and assigned. */
static void upsample_scatter(const upsample_params *p, upsample_dims d, const lerp_entry *rows,
                             const lerp_entry *cols, const float *dy, float *dx, bool fresh)
{
    int64_t P = d.P, H = d.H, W = d.W, Ho = d.Ho, Wo = d.Wo;
    int64_t s = p->scale;
    if (p->mode == TG_UPSAMPLE_NEAREST) {
        TG_PARALLEL_FOR_WORK(P, Ho * Wo)
        for (int64_t pl = 0; pl < P; pl++) {
            float *dxp = dx + pl * H * W;
            const float *dyp = dy + pl * Ho * Wo;
            if (fresh)
                memset(dxp, 0, sizeof(float) * (size_t)(H * W));
            for (int64_t oh = 0; oh < Ho; oh++) {
                float *dxr = dxp + (oh / s) * W;
                const float *dyr = dyp + oh * Wo;
                for (int64_t w = 0; w < W; w++) {
                    float g = 0.0f;
                    for (int64_t k = 0; k < s; k++)
                        g += dyr[w * s + k];
                    dxr[w] += g;
                }
            }
        }
        return;
    }
    col_plan plan;
    col_plan_fill(&plan, cols, W, Wo);
    TG_PARALLEL_FOR_WORK(P, 4 * Ho * Wo)
    for (int64_t pl = 0; pl < P; pl++) {
        float *dxp = dx + pl * H * W;
        if (fresh)
            memset(dxp, 0, sizeof(float) * (size_t)(H * W));
        bilinear_scatter_plane(d, rows, cols, &plan, dy + pl * Ho * Wo, dxp);
    }
}

TG_ISA_KERNEL(upsample_backward, (tg_node * n), (n))
{
    float *dx = tg_grad_of(n, 0);
    upsample_dims d = upsample_dims_of(n->in[0], n->out);
    if (!dx || d.P == 0)
        return;
    const lerp_entry *rows = n->scratch; /* the forward's tables (NULL for nearest) */
    upsample_scatter(TG_PARAMS(n, upsample_params), d, rows, rows ? rows + d.Ho : NULL,
                     n->out->grad->data, dx, tg_grad_fresh(n, 0));
}

/* Second order: dx = upsample_backward(dy), the same transpose as a recorded op. */
static tg_status upsample_backward_graph(tg_node *n, tg_tensor *gout, uint32_t need,
                                         tg_tensor **gin)
{
    (void)need; /* one input: the walk calls this only when it is needed */
    const tg_tensor *x = n->in[0];
    upsample_grad_params q = {*TG_PARAMS(n, upsample_params), x->shape[2], x->shape[3]};
    gin[0] = tg_apply1(&tg_op_upsample_backward, &q, sizeof q, gout);
    return gin[0] ? TG_OK : tg_last_status();
}

static const tg_case upsample_cases[] = {
    {.shape = {{2, 2, 3, 4}},
     TG_CASE_PARAMS(upsample_params, 2, TG_UPSAMPLE_NEAREST),
     .name = "nearest_x2"},
    {.shape = {{2, 2, 3, 4}},
     TG_CASE_PARAMS(upsample_params, 3, TG_UPSAMPLE_NEAREST),
     .name = "nearest_x3"},
    {.shape = {{2, 2, 3, 4}},
     TG_CASE_PARAMS(upsample_params, 2, TG_UPSAMPLE_BILINEAR_ALIGN_CORNERS),
     .name = "aligned_x2"},
    {.shape = {{2, 2, 3, 4}},
     TG_CASE_PARAMS(upsample_params, 3, TG_UPSAMPLE_BILINEAR_ALIGN_CORNERS),
     .name = "aligned_x3"},
    {.shape = {{1, 2, 1, 3}},
     TG_CASE_PARAMS(upsample_params, 2, TG_UPSAMPLE_BILINEAR_ALIGN_CORNERS),
     .name = "aligned_x2_one_row"},
    {.shape = {{2, 2, 3, 4}},
     TG_CASE_PARAMS(upsample_params, 2, TG_UPSAMPLE_BILINEAR_HALF_PIXEL),
     .name = "half_pixel_x2"},
    {.shape = {{2, 2, 3, 4}},
     TG_CASE_PARAMS(upsample_params, 3, TG_UPSAMPLE_BILINEAR_HALF_PIXEL),
     .name = "half_pixel_x3"},
    /* The separable kernels' edges: scale 4, one input row or column (every tap on the last
     * element), and two blocks of columns (UP_BLOCK), the last partial. */
    {.shape = {{1, 2, 3, 5}},
     TG_CASE_PARAMS(upsample_params, 4, TG_UPSAMPLE_BILINEAR_ALIGN_CORNERS),
     .name = "aligned_x4"},
    {.shape = {{1, 2, 3, 5}},
     TG_CASE_PARAMS(upsample_params, 4, TG_UPSAMPLE_BILINEAR_HALF_PIXEL),
     .name = "half_pixel_x4"},
    {.shape = {{1, 2, 1, 1}},
     TG_CASE_PARAMS(upsample_params, 2, TG_UPSAMPLE_BILINEAR_HALF_PIXEL),
     .name = "half_pixel_x2_one_pixel"},
    {.shape = {{1, 1, 4, 1}},
     TG_CASE_PARAMS(upsample_params, 3, TG_UPSAMPLE_BILINEAR_ALIGN_CORNERS),
     .name = "aligned_x3_one_column"},
    {.shape = {{1, 1, 2, 200}},
     TG_CASE_PARAMS(upsample_params, 2, TG_UPSAMPLE_BILINEAR_HALF_PIXEL),
     .name = "half_pixel_x2_wide"},
    {0},
};
TG_OP_DEFINE(upsample) = {.name = "upsample",
                          .n_in = 1,
                          .check = upsample_check,
                          .forward = upsample_forward,
                          .backward = upsample_backward,
                          .backward_graph = upsample_backward_graph,
                          .cases = upsample_cases,
                          .fresh_grads = true};

#if TG_ISA_BASE
tg_tensor *tg_upsample(tg_tensor *x, int scale, tg_upsample_mode mode)
{
    upsample_params p = {scale, (int)mode};
    return tg_apply1(&tg_op_upsample, &p, sizeof p, x);
}
#endif

/* ---- upsample_backward (internal: upsample's second order) -----------------------------------
 * g[N,C,H*s,W*s] -> dx[N,C,H,W]: upsample's backward (the transpose) as a forward, with the
 * tables in scratch followed by room for g-sized values (its backward's, when g's gradient is
 * not fresh). Linear in g; its adjoint is upsample itself: dg = upsample(dout). */
static tg_status upsample_bw_check(tg_node *n, int *ndim, int64_t shape[])
{
    const upsample_grad_params *q = TG_PARAMS(n, upsample_grad_params);
    const tg_tensor *g = n->in[0];
    const char *fn = "upsample_backward";
    char sg[160];
    if (g->ndim != 4)
        return tg_set_error(TG_ERR_SHAPE, "%s: g %s must be 4-D [N, C, Ho, Wo]", fn,
                            TG_SHAPE_STR(g, sg));
    const int64_t xs[4] = {g->shape[0], g->shape[1], q->H, q->W};
    int up_ndim;
    int64_t up[TG_MAX_DIMS];
    size_t table_bytes;
    if (upsample_check_x(&q->up, 4, xs, &up_ndim, up, &table_bytes, fn) != TG_OK)
        return tg_last_status();
    if (up[2] != g->shape[2] || up[3] != g->shape[3]) {
        char su[160];
        return tg_set_error(TG_ERR_SHAPE,
                            "%s: g %s is not the upsampled shape %s of H %lld, W %lld", fn,
                            TG_SHAPE_STR(g, sg), tg_shape_str(4, up, su, sizeof su),
                            (long long)q->H, (long long)q->W);
    }
    n->scratch_bytes = table_bytes + (size_t)g->numel * sizeof(float);
    *ndim = 4;
    memcpy(shape, xs, sizeof xs);
    return TG_OK;
}

/* The g-sized values after the tables in scratch. */
static float *upsample_bw_values(const tg_node *n)
{
    const upsample_params *p = TG_PARAMS(n, upsample_params);
    const tg_tensor *g = n->in[0];
    size_t tables = upsample_is_bilinear(p->mode) && g->numel > 0
                        ? (size_t)(g->shape[2] + g->shape[3]) * sizeof(lerp_entry)
                        : 0;
    return (float *)(void *)((char *)n->scratch + tables);
}

TG_ISA_KERNEL(upsample_bw_forward, (tg_node * n), (n))
{
    upsample_dims d = upsample_dims_of(n->out, n->in[0]);
    if (d.P == 0)
        return;
    const upsample_params *p = TG_PARAMS(n, upsample_params);
    const lerp_entry *rows = upsample_is_bilinear(p->mode) ? upsample_tables(n, d) : NULL;
    upsample_scatter(p, d, rows, rows ? rows + d.Ho : NULL, n->in[0]->data, n->out->data, true);
}

TG_ISA_KERNEL(upsample_bw_backward, (tg_node * n), (n))
{
    float *dg = tg_grad_of(n, 0);
    upsample_dims d = upsample_dims_of(n->out, n->in[0]);
    if (!dg || d.P == 0)
        return;
    const upsample_params *p = TG_PARAMS(n, upsample_params);
    const lerp_entry *rows = upsample_is_bilinear(p->mode) ? n->scratch : NULL;
    const bool fresh = tg_grad_fresh(n, 0);
    float *up = fresh ? dg : upsample_bw_values(n);
    upsample_run(p, d, rows, rows ? rows + d.Ho : NULL, n->out->grad->data, up);
    if (!fresh)
        for (int64_t e = 0; e < n->in[0]->numel; e++)
            dg[e] += up[e];
}

/* Third order: dg = upsample(dout) as a recorded op. */
static tg_status upsample_bw_graph(tg_node *n, tg_tensor *gout, uint32_t need, tg_tensor **gin)
{
    (void)need;
    const upsample_params *p = TG_PARAMS(n, upsample_params);
    gin[0] = tg_upsample(gout, p->scale, (tg_upsample_mode)p->mode);
    return gin[0] ? TG_OK : tg_last_status();
}

static const tg_case upsample_bw_cases[] = {
    {.shape = {{2, 2, 6, 8}},
     TG_CASE_PARAMS(upsample_grad_params, {2, TG_UPSAMPLE_NEAREST}, 3, 4),
     .name = "nearest_x2"},
    {.shape = {{2, 2, 9, 12}},
     TG_CASE_PARAMS(upsample_grad_params, {3, TG_UPSAMPLE_BILINEAR_ALIGN_CORNERS}, 3, 4),
     .name = "aligned_x3"},
    {.shape = {{1, 2, 2, 6}},
     TG_CASE_PARAMS(upsample_grad_params, {2, TG_UPSAMPLE_BILINEAR_ALIGN_CORNERS}, 1, 3),
     .name = "aligned_x2_one_row"},
    {.shape = {{2, 2, 6, 8}},
     TG_CASE_PARAMS(upsample_grad_params, {2, TG_UPSAMPLE_BILINEAR_HALF_PIXEL}, 3, 4),
     .name = "half_pixel_x2"},
    {.shape = {{1, 2, 8, 12}},
     TG_CASE_PARAMS(upsample_grad_params, {4, TG_UPSAMPLE_BILINEAR_HALF_PIXEL}, 2, 3),
     .name = "half_pixel_x4"},
    /* Two blocks of columns within gradcheck's 512 elements: scale 1, one row. */
    {.shape = {{1, 1, 1, 300}},
     TG_CASE_PARAMS(upsample_grad_params, {1, TG_UPSAMPLE_BILINEAR_ALIGN_CORNERS}, 1, 300),
     .name = "aligned_x1_wide"},
    {0},
};
TG_OP_DEFINE(upsample_backward) = {.name = "upsample_backward",
                                   .n_in = 1,
                                   .check = upsample_bw_check,
                                   .forward = upsample_bw_forward,
                                   .backward = upsample_bw_backward,
                                   .backward_graph = upsample_bw_graph,
                                   .cases = upsample_bw_cases,
                                   .fresh_grads = true};
