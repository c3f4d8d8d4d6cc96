/* conv2d's direct loops: no lowering, no columns (autograd/conv.c calls them where
 * tg_conv_direct_applies).
 *
 * Where the lowering's GEMMs are thin they do not pay for their columns. With one output
 * channel (G's 64 -> 1 layer) every GEMM is a matrix-vector product that streams the columns
 * (Kc*P floats an image: 5 MB for 64 channels 5x5 on 28x28) for two flops per float, so
 * writing them costs as much again; the lowering took twice as long as its GEMMs
 * (bench/bench_conv). With one input channel (D's 1 -> 64 layer, 3x3) the columns have Kc = 9
 * rows, so the GEMM packs 9 floats for every 9 multiply-adds of a column and its weight
 * gradient (N = 9) pads each tile of 32 columns to 9 used ones.
 *
 * The loops: a chunk's images are copied into zero-bordered planes xp [B, Ci, Hp, Wq] first:
 * the input of output (oh, ow) under tap (i, j) is then xp[oh*s + i*dil][ow*s + j*dil] for
 * every tap, so an output row is a run of whole tiles of CONV_DIRECT_TILE positions with no
 * bounds to test (positions past Wo read the border and are dropped). dy is copied likewise
 * into rows of Wt floats with zeros past Wo, dyp [B, Co, Ho, Wt], so the weight gradient reads
 * whole tiles too. Loops over the valid range of each tap instead spent most of their time in
 * the remainders of 28-wide rows, and ran 3x slower on the GAN's 64 -> 1 layer.
 *
 * The data gradient at stride 1 is itself such a correlation (direct_dx_geom): dx = dy padded
 * by (k-1)*dil - pad on each side, correlated with the kernel flipped and its channel axes
 * swapped, so it runs the forward's loops, sums in registers over all taps, each dx element
 * written once. Its first version scattered each dy tile into a padded plane tap by tap (a
 * load, an add and a store per tap and tile) and took 3x the forward's time on the 64 -> 1
 * layer; it remains for strides above 1 and tg_conv_direct = 0. */
#include "conv_direct.h"
#include "internal.h"

#include "../tensor/parallel.h"

#include <string.h>

/* Output rows are computed in tiles of this many positions: one AVX-512 register, two AVX2
 * ones. */
#define CONV_DIRECT_TILE 16
/* The forward's block of independent accumulators: rows x tiles of CONV_DIRECT_TILE (8 of
 * the 32 AVX-512 registers; direct_block). */
#define DIRECT_ROWS 4
#define DIRECT_TILES 2
/* The weight gradient's taps of a kernel row summed at once (direct_dw_taps): a 3- or 5-wide
 * row in one pass, and 6 accumulators of two registers each still fit AVX2's 16. */
#define DIRECT_DW_TAPS 6
/* The data gradient's shared loads (direct_block_s1) take its flipped taps from a local
 * copy of at most this many (7 x 7); larger kernels load once per row and tap. */
#define DIRECT_S1_TAPS 49
/* The weight gradient's accumulators when it takes every tap at once (direct_dw_plane_s1:
 * 5x5 and 3x3 kernels). */
#define DIRECT_DW_S1_TAPS 25
/* With tg_conv_direct 2, several output channels take the direct loops up to this many input
 * channels (tg_conv_direct_applies). Not by default: on D's 1 -> 64 layer (3x3, 28x28, batch
 * 128, forward + backward, 1 thread) they took 17-21 ms of CPU against the lowering's 10-13:
 * with 9 taps a channel, filling, copying and padding each output row cost as much as its
 * multiply-adds, where the lowering's GEMM reads its packed 9-row panels once for 64
 * channels. */
#define CONV_DIRECT_MAX_CI 1

#if TG_ISA_BASE
int tg_conv_direct = 1;
int tg_conv_direct_shared_loads = 1;
#endif

/* ---- sizes --------------------------------------------------------------------------------- */

/* Sets g's padded sizes (rows of whole tiles, and every tap of every tile inside its padded
 * row); false when they overflow int64, as with a padding of INT_MAX, which pads whole planes
 * while the lowering only visits valid positions. */
static bool direct_pads(conv_geom *g)
{
    int64_t reach, taps;
    if (__builtin_add_overflow(g->Wo, CONV_DIRECT_TILE - 1, &g->Wt))
        return false;
    g->Wt = g->Wt / CONV_DIRECT_TILE * CONV_DIRECT_TILE;
    if (__builtin_add_overflow(g->H, 2 * g->pad, &g->Hp) ||
        __builtin_add_overflow(g->W, 2 * g->pad, &g->Wq) ||
        __builtin_mul_overflow(g->Wt - 1, g->stride, &reach) ||
        __builtin_mul_overflow(g->kw - 1, g->dil, &taps) ||
        __builtin_add_overflow(reach, taps + 1, &reach))
        return false;
    g->Wq = max64(g->Wq, reach);
    return true;
}

/* The data gradient as a correlation (see the top of the file), into *t: planes dy [Co, Ho,
 * Wo] padded by (k-1)*dil - pad, a kernel of g's size, output dx [Ci, H, W]. False where it
 * does not apply (a stride above 1, a non-square kernel, a padding beyond the kernel's reach,
 * tg_conv_direct 0) or its sizes overflow. */
static bool direct_dx_geom(const conv_geom *g, conv_geom *t)
{
    int64_t reach;
    if (!tg_conv_direct || g->stride != 1 || g->kh != g->kw ||
        __builtin_mul_overflow(g->kh - 1, g->dil, &reach) || g->pad > reach)
        return false;
    *t = (conv_geom){.N = g->N,
                     .Ci = g->Co,
                     .H = g->Ho,
                     .W = g->Wo,
                     .Co = g->Ci,
                     .Ho = g->H,
                     .Wo = g->W,
                     .kh = g->kh,
                     .kw = g->kw,
                     .stride = 1,
                     .pad = reach - g->pad,
                     .dil = g->dil,
                     .Kc = g->Co * g->kh * g->kw,
                     .P = g->H * g->W,
                     .chunk = g->chunk,
                     .direct = true};
    return direct_pads(t);
}

/* Floats of one image's working space into *f: its padded planes, then its padded output rows
 * (forward: one channel's; backward: every dy channel's), or the data gradient's as a
 * correlation; false on overflow. */
static bool direct_floats(const conv_geom *g, int64_t *f)
{
    int64_t planes, rows, dx = 0;
    conv_geom t;
    if (__builtin_mul_overflow(g->Ci, g->Hp, &planes) ||
        __builtin_mul_overflow(planes, g->Wq, &planes) ||
        __builtin_mul_overflow(g->Ho, g->Wt, &rows) || __builtin_mul_overflow(rows, g->Co, &rows) ||
        __builtin_add_overflow(planes, rows, f))
        return false;
    if (direct_dx_geom(g, &t) &&
        (__builtin_mul_overflow(t.Ci, t.Hp, &dx) || __builtin_mul_overflow(dx, t.Wq, &dx) ||
         __builtin_add_overflow(dx, t.Ho * t.Wt, &dx)))
        return false;
    *f = max64(*f, dx);
    return true;
}

#if TG_ISA_BASE
bool tg_conv_direct_applies(const conv_geom *g)
{
    conv_geom t;
    return g->Co == 1 ||
           (tg_conv_direct >= 2 && g->Ci <= CONV_DIRECT_MAX_CI && direct_dx_geom(g, &t));
}

bool tg_conv_direct_sizes(conv_geom *g)
{
    int64_t f;
    return direct_pads(g) && direct_floats(g, &f);
}

int64_t tg_conv_direct_floats(const conv_geom *g)
{
    int64_t f = 0;
    bool ok = direct_floats(g, &f);
    TG_ASSERT(ok);
    return f;
}
#endif

/* ---- the kernels ----------------------------------------------------------------------------- */

/* A tile of CONV_DIRECT_TILE floats as one GCC vector (one AVX-512 register in the AVX-512
 * copy of this file, two or four narrower ones in the others: tensor/isa.h); aligned(4) and
 * may_alias let it load and store at any float. gcc 12 left the same loops over a float[16]
 * accumulator scalar. */
typedef float conv_tile
    __attribute__((vector_size(CONV_DIRECT_TILE * sizeof(float)), aligned(4), may_alias));

/* *v = the tile p[0], p[s], ..., p[(TILE-1)*s]. Tiles go by pointer: by value they would
 * change the ABI between builds with and without AVX-512 (gcc's -Wpsabi). */
static inline void tile_load(conv_tile *v, const float *p, int64_t s)
{
    if (s == 1) {
        *v = *(const conv_tile *)p;
        return;
    }
    /* Filled in a local tile that starts defined: writing lanes into *v would read it first,
     * as far as the compiler can tell (-Wmaybe-uninitialized at every caller). */
    conv_tile t = {0};
    for (int k = 0; k < CONV_DIRECT_TILE; k++)
        t[k] = p[k * s];
    *v = t;
}

/* p[k*s] += v[k] for every k of the tile. */
static inline void tile_add(float *p, int64_t s, const conv_tile *v)
{
    if (s == 1) {
        *(conv_tile *)p += *v;
        return;
    }
    for (int k = 0; k < CONV_DIRECT_TILE; k++)
        p[k * s] += (*v)[k];
}

/* Short rows (28 floats) are copied and zeroed by these, in tiles and then halves down to
 * single floats, with no loop over the tail: GCC turned the plain loops into calls of memmove
 * and memset, a call per row, 14% of the 64 -> 1 layer's time and 21% of the 1 -> 64 one's. */
typedef float conv_half
    __attribute__((vector_size(CONV_DIRECT_TILE / 2 * sizeof(float)), aligned(4), may_alias));
typedef float conv_quarter
    __attribute__((vector_size(CONV_DIRECT_TILE / 4 * sizeof(float)), aligned(4), may_alias));

/* d[0, n) = s[0, n), or 0 where s is NULL. */
static inline void row_copy(float *restrict d, const float *restrict s, int64_t n)
{
    int64_t q = 0;
    for (; q + CONV_DIRECT_TILE <= n; q += CONV_DIRECT_TILE) {
        *(conv_tile *)(d + q) = s ? *(const conv_tile *)(s + q) : (conv_tile){0};
        __asm__("" : "+r"(q)); /* or GCC makes the loop a call of memmove or memset */
    }
    if (q + CONV_DIRECT_TILE / 2 <= n) {
        *(conv_half *)(d + q) = s ? *(const conv_half *)(s + q) : (conv_half){0};
        q += CONV_DIRECT_TILE / 2;
    }
    if (q + CONV_DIRECT_TILE / 4 <= n) {
        *(conv_quarter *)(d + q) = s ? *(const conv_quarter *)(s + q) : (conv_quarter){0};
        q += CONV_DIRECT_TILE / 4;
    }
    if (q < n)
        d[q] = s ? s[q] : 0.0f, q++;
    if (q < n)
        d[q] = s ? s[q] : 0.0f, q++;
    if (q < n)
        d[q] = s ? s[q] : 0.0f;
}

/* dst [h_out, w_out] = src [h, w] placed at row top and column left, zeros around it. */
static void pad_plane(const float *restrict src, int64_t h, int64_t w, float *restrict dst,
                      int64_t h_out, int64_t w_out, int64_t top, int64_t left)
{
    for (int64_t r = 0; r < h_out; r++) {
        float *restrict d = dst + r * w_out;
        int64_t ih = r - top;
        if (ih < 0 || ih >= h) {
            row_copy(d, NULL, w_out);
            continue;
        }
        row_copy(d, NULL, left);
        row_copy(d + left, src + ih * w, w);
        row_copy(d + left + w, NULL, w_out - left - w);
    }
}

/* The chunk's padded planes xp [B, C, Hp, Wq] from x [B, C, H, W]. */
static void direct_pad_x(const conv_geom *g, const float *x, int64_t B, float *xp)
{
    const int64_t items = B * g->Ci, plane = g->Hp * g->Wq;
    TG_PARALLEL_FOR_WORK(items, plane)
    for (int64_t t = 0; t < items; t++)
        pad_plane(x + t * g->H * g->W, g->H, g->W, xp + t * plane, g->Hp, g->Wq, g->pad, g->pad);
}

/* The chunk's padded output rows: the part of the working space after its planes. */
static float *direct_rows(const conv_geom *g, float *scratch)
{
    return scratch + g->chunk * g->Ci * g->Hp * g->Wq;
}

/* One correlation y [N, Co, Ho, Wo] (=, or += with add) of planes x [N, Ci, H, W] with the
 * weights of (o, c) at w + o*w_o + c*w_c, taps reversed with flip: conv2d's forward, or its
 * data gradient (direct_dx_geom). Images [b0, b1) a thread (a tg_team_fn), with the working
 * space of the chunk's image t: each padded in turn and summed tile by tile, output channel by
 * output channel, in a local array that stays in registers over all kh*kw taps. The bias
 * starts the sums where bias_first (one output channel: the bits this path always gave), else
 * is added to them, as the lowering's GEMM adds the sums to y filled with the bias: with Kc up
 * to its depth block (256) the two give the same bits. */
typedef struct {
    const conv_geom *g;
    const float *x, *w, *bias;
    float *y, *scratch;
    int64_t w_o, w_c;
    bool flip, bias_first, add;
} direct_ctx;

/* A block's accumulators a[rows][tiles] for output row oh and column q: first everywhere
 * (init: the first channel), else acc's partial sums. */
static inline __attribute__((always_inline)) void block_begin(conv_tile (*a)[DIRECT_TILES],
                                                              const float *acc, int64_t Wt,
                                                              bool init, float first, int64_t oh,
                                                              int64_t q, int rows, int tiles)
{
    for (int r = 0; r < rows; r++)
        for (int u = 0; u < tiles; u++)
            if (init)
                a[r][u] = (conv_tile){0} + first;
            else
                a[r][u] = *(const conv_tile *)(acc + (oh + r) * Wt + q + u * CONV_DIRECT_TILE);
}

/* The accumulators back into acc. */
static inline __attribute__((always_inline)) void block_end(conv_tile (*a)[DIRECT_TILES],
                                                            float *acc, int64_t Wt, int64_t oh,
                                                            int64_t q, int rows, int tiles)
{
    for (int r = 0; r < rows; r++)
        for (int u = 0; u < tiles; u++)
            *(conv_tile *)(acc + (oh + r) * Wt + q + u * CONV_DIRECT_TILE) = a[r][u];
}

/* The accumulators of rows x tiles output tiles from row oh and column q (acc's, or first
 * when init: one pass less over acc): every tap of one channel's padded plane img (weights wc)
 * added in. One tile alone made one chain of dependent
 * multiply-adds, each waiting for the last (4 cycles a tap); rows x tiles independent chains
 * overlap. Each output's sum keeps the one-tile order (taps i, then j), so results are the
 * same bit for bit. Inlined with constant rows and tiles, the accumulators stay in registers. */
static inline __attribute__((always_inline)) void
direct_block(const conv_geom *g, float *acc, const float *img, const float *wc, bool flip,
             bool init, float first, int64_t oh, int64_t q, int rows, int tiles, int64_t s)
{
    const int64_t d = g->dil, Wq = g->Wq, last = g->kh * g->kw - 1;
    conv_tile a[DIRECT_ROWS][DIRECT_TILES], v;
    block_begin(a, acc, g->Wt, init, first, oh, q, rows, tiles);
    for (int64_t i = 0; i < g->kh; i++)
        for (int64_t j = 0; j < g->kw; j++) {
            const float wv = wc[flip ? last - (i * g->kw + j) : i * g->kw + j];
#pragma GCC unroll 4
            for (int r = 0; r < rows; r++)
#pragma GCC unroll 2
                for (int u = 0; u < tiles; u++) {
                    const int64_t col = (q + u * CONV_DIRECT_TILE) * s + j * d;
                    tile_load(&v, img + ((oh + r) * s + i * d) * Wq + col, s);
                    a[r][u] += wv * v;
                }
        }
    block_end(a, acc, g->Wt, oh, q, rows, tiles);
}

/* direct_block at stride 1 and dilation 1 (the GAN's layers), each input tile loaded once:
 * output row oh + r reads input row oh + r + i under kernel row i, so input row oh + k serves
 * every (r, i) with r + i = k. Going over the rows + kh - 1 input rows, each tile of a row is
 * loaded once per column tap and added into the up to `rows` accumulators it feeds (weights
 * of kernel rows k - r), where direct_block loaded it again for each: 2 (kh + 3) kw loads
 * for 8 kh kw multiply-adds instead of one each. On Zen 4 a 64-byte load that is not aligned
 * (most of these) spans two cache lines, and the loads, not the FMAs, bounded the loop: the
 * G's 64 -> 1 layer (5x5) ran at 20-30 GFLOP/s. Each accumulator still gets its terms in the
 * order i, then j (k rises with i for a fixed r), so the sums are the same bit for bit. */
static inline __attribute__((always_inline)) void
direct_block_s1(const conv_geom *g, float *acc, const float *img, const float *taps, bool init,
                float first, int64_t oh, int64_t q, int64_t kh, int64_t kw)
{
    const int64_t Wq = g->Wq;
    conv_tile a[DIRECT_ROWS][DIRECT_TILES], v[DIRECT_TILES];
    block_begin(a, acc, g->Wt, init, first, oh, q, DIRECT_ROWS, DIRECT_TILES);
#pragma GCC unroll 8
    for (int64_t k = 0; k < kh + DIRECT_ROWS - 1; k++)
#pragma GCC unroll 5
        for (int64_t j = 0; j < kw; j++) {
            const float *src = img + (oh + k) * Wq + q + j;
            for (int u = 0; u < DIRECT_TILES; u++)
                v[u] = *(const conv_tile *)(src + u * CONV_DIRECT_TILE);
#pragma GCC unroll 4
            for (int r = 0; r < DIRECT_ROWS; r++) {
                const int64_t i = k - r;
                if (i < 0 || i >= kh)
                    continue;
                const float wv = taps[i * kw + j];
#pragma GCC unroll 2
                for (int u = 0; u < DIRECT_TILES; u++)
                    a[r][u] += wv * v[u];
            }
        }
    block_end(a, acc, g->Wt, oh, q, DIRECT_ROWS, DIRECT_TILES);
}

/* direct_block_s1 inlined with the GAN's kernel sides as constants: its loops then unroll
 * whole, with no tests of i left and every weight at a fixed offset (an operand of its
 * multiply-adds). Inlined with g's sides, the loops over k and j, the test of each row and the
 * index of its weight ran as code: the 64 -> 1 layer's forward ran at a third of its FMA rate
 * (perf: branches and spilled flags beside the multiply-adds). */
static void direct_block_s1_sized(const conv_geom *g, float *acc, const float *img,
                                  const float *taps, bool init, float first, int64_t oh, int64_t q)
{
    if (g->kh == 5 && g->kw == 5)
        direct_block_s1(g, acc, img, taps, init, first, oh, q, 5, 5);
    else if (g->kh == 3 && g->kw == 3)
        direct_block_s1(g, acc, img, taps, init, first, oh, q, 3, 3);
    else
        direct_block_s1(g, acc, img, taps, init, first, oh, q, g->kh, g->kw);
}

/* Whether g's loops load each input tile once for all it feeds (direct_block_s1 and
 * direct_dw_plane_s1): stride 1 and dilation 1, unless tg_conv_direct_shared_loads is 0. */
static bool direct_shared_loads(const conv_geom *g)
{
    return g->stride == 1 && g->dil == 1 && tg_conv_direct_shared_loads;
}

/* acc [Ho, Wt] = first + one output channel's sums over xp's Ci planes (weights w_oc). */
static void direct_channel(const direct_ctx *c, const float *xp, const float *w_oc, float first,
                           float *acc)
{
    const conv_geom *g = c->g;
    const int64_t plane = g->Hp * g->Wq, Ho = g->Ho, Wt = g->Wt;
    const int64_t row_blocks = Ho / DIRECT_ROWS * DIRECT_ROWS,
                  tile_pairs =
                      Wt / (DIRECT_TILES * CONV_DIRECT_TILE) * DIRECT_TILES * CONV_DIRECT_TILE;
    /* The shared loads take the taps in order: the data gradient's flipped into taps. */
    const int64_t last = g->kh * g->kw - 1;
    const bool shared = direct_shared_loads(g) && (!c->flip || last < DIRECT_S1_TAPS);
    float taps[DIRECT_S1_TAPS];
    for (int64_t ch = 0; ch < g->Ci; ch++) {
        const float *img = xp + ch * plane, *wc = w_oc + ch * c->w_c;
        const bool init = ch == 0;
        if (shared && c->flip)
            for (int64_t t = 0; t <= last; t++)
                taps[t] = wc[last - t];
        for (int64_t oh = 0; oh < Ho; oh += DIRECT_ROWS) {
            const bool full = oh < row_blocks;
            for (int64_t q = 0; q < Wt; q += CONV_DIRECT_TILE * DIRECT_TILES) {
                if (full && q < tile_pairs && shared) /* the GAN's layers */
                    direct_block_s1_sized(g, acc, img, c->flip ? taps : wc, init, first, oh, q);
                else if (full && q < tile_pairs)
                    direct_block(g, acc, img, wc, c->flip, init, first, oh, q, DIRECT_ROWS,
                                 DIRECT_TILES, g->stride);
                else /* the edges: row by row, tile by tile */
                    for (int64_t r = oh; r < (full ? oh + DIRECT_ROWS : Ho); r++)
                        for (int64_t u = q; u < Wt && u < q + DIRECT_TILES * CONV_DIRECT_TILE;
                             u += CONV_DIRECT_TILE)
                            direct_block(g, acc, img, wc, c->flip, init, first, r, u, 1, 1,
                                         g->stride);
            }
        }
    }
}

static void direct_run(void *ctx, int t, int64_t b0, int64_t b1)
{
    const direct_ctx *c = ctx;
    const conv_geom *g = c->g;
    const int64_t Wq = g->Wq, Wt = g->Wt, plane = g->Hp * Wq, Ho = g->Ho, Wo = g->Wo;
    float *xp = c->scratch + t * g->Ci * plane;
    float *restrict acc = direct_rows(g, c->scratch) + t * Ho * Wt;
    for (int64_t b = b0; b < b1; b++) {
        for (int64_t ch = 0; ch < g->Ci; ch++)
            pad_plane(c->x + (b * g->Ci + ch) * g->H * g->W, g->H, g->W, xp + ch * plane, g->Hp, Wq,
                      g->pad, g->pad);
        for (int64_t o = 0; o < g->Co; o++) {
            const float bv = c->bias ? c->bias[o] : 0.0f, first = c->bias_first ? bv : 0.0f;
            direct_channel(c, xp, c->w + o * c->w_o, first, acc);
            float *restrict yo = c->y + (b * g->Co + o) * g->P;
            if (c->add)
                for (int64_t oh = 0; oh < Ho; oh++)
                    for (int64_t ow = 0; ow < Wo; ow++)
                        yo[oh * Wo + ow] += acc[oh * Wt + ow];
            else if (c->bias && !c->bias_first)
                for (int64_t oh = 0; oh < Ho; oh++)
                    for (int64_t ow = 0; ow < Wo; ow++)
                        yo[oh * Wo + ow] = acc[oh * Wt + ow] + bv;
            else
                for (int64_t oh = 0; oh < Ho; oh++)
                    row_copy(yo + oh * Wo, acc + oh * Wt, Wo);
        }
    }
}

/* Runs c over the batch: a team of threads (at most a chunk's images: their working space),
 * one region, each thread a contiguous range of images. Each image's sums are the same at any
 * thread count. */
static void direct_correlate(const direct_ctx *c)
{
    const conv_geom *g = c->g;
    /* Only whether it passes TG_PARALLEL_MIN matters: capped there, no product overflows. */
    int64_t work;
    if (__builtin_mul_overflow(g->Co * g->Kc, g->Ho * g->Wt, &work) || work > TG_PARALLEL_MIN)
        work = TG_PARALLEL_MIN + 1;
    const int team = TG_PARALLEL_FORK(g->N, work) ? (int)min64(tg_get_num_threads(), g->chunk) : 1;
    tg_team_run(team, g->N, direct_run, (void *)c);
}

/* dw[o, c, i, j0 .. j0 + nj) of one image's plane img against its dy rows dyb: nj dot
 * products at once, one accumulator chain each (one chain alone waited for its last
 * multiply-add), each dy tile loaded once for all nj. Every weight's terms are added in
 * the order of one product alone (rows, then tiles), so results are the same bit for bit
 * whatever nj. Inlined with constant nj. */
static inline __attribute__((always_inline)) void direct_dw_taps(const conv_geom *g,
                                                                 const float *img, const float *dyb,
                                                                 int64_t i, int64_t j0, int nj,
                                                                 int64_t s, float *dwc)
{
    const int64_t d = g->dil, Wq = g->Wq, Wt = g->Wt;
    conv_tile a[DIRECT_DW_TAPS], v;
    for (int k = 0; k < nj; k++)
        a[k] = (conv_tile){0};
    for (int64_t oh = 0; oh < g->Ho; oh++) {
        const float *src = img + (oh * s + i * d) * Wq + j0 * d;
        const float *r = dyb + oh * Wt;
        for (int64_t t = 0; t < Wt; t += CONV_DIRECT_TILE) {
            const conv_tile dyt = *(const conv_tile *)(r + t);
#pragma GCC unroll 6
            for (int k = 0; k < nj; k++) {
                tile_load(&v, src + k * d + t * s, s);
                a[k] += dyt * v;
            }
        }
    }
    for (int k = 0; k < nj; k++) {
        float sum = 0.0f;
        for (int l = 0; l < CONV_DIRECT_TILE; l++)
            sum += a[k][l];
        dwc[i * g->kw + j0 + k] += sum;
    }
}

/* Kernel row i of dw[o, c] (dwc) for one image: its taps in groups of up to DIRECT_DW_TAPS,
 * each group one inlined copy with its count constant. */
static inline __attribute__((always_inline)) void direct_dw_row(const conv_geom *g,
                                                                const float *img, const float *dyb,
                                                                int64_t i, int64_t s, float *dwc)
{
    for (int64_t j = 0; j < g->kw; j += DIRECT_DW_TAPS) {
        switch (min64(g->kw - j, DIRECT_DW_TAPS)) {
        case 6: direct_dw_taps(g, img, dyb, i, j, 6, s, dwc); break;
        case 5: direct_dw_taps(g, img, dyb, i, j, 5, s, dwc); break;
        case 4: direct_dw_taps(g, img, dyb, i, j, 4, s, dwc); break;
        case 3: direct_dw_taps(g, img, dyb, i, j, 3, s, dwc); break;
        case 2: direct_dw_taps(g, img, dyb, i, j, 2, s, dwc); break;
        default: direct_dw_taps(g, img, dyb, i, j, 1, s, dwc); break;
        }
    }
}

/* a[i][j] += the terms of dy row oh = k - i against input row k, one tile t, for the kernel
 * rows i that row k feeds (all of them where interior). */
static inline __attribute__((always_inline)) void
direct_dw_s1_rowtile(const float *xrow, const float *dyb, int64_t Wt, int64_t Ho, int64_t k,
                     int64_t t, bool interior, int64_t kh, int64_t kw, conv_tile *a)
{
#pragma GCC unroll 5
    for (int64_t j = 0; j < kw; j++) {
        const conv_tile v = *(const conv_tile *)(xrow + j + t);
#pragma GCC unroll 5
        for (int64_t i = 0; i < kh; i++) {
            const int64_t oh = k - i;
            if (!interior && (oh < 0 || oh >= Ho))
                continue;
            a[i * kw + j] += *(const conv_tile *)(dyb + oh * Wt + t) * v;
        }
    }
}

/* dw[o, c] (dwc) for one image at stride 1 and dilation 1, every tap at once: input row k
 * feeds dy rows k - i under kernel row i, so each input tile is loaded once per column tap
 * for all kh rows (direct_dw_taps loads it again for each: one load per multiply-add, and
 * the unaligned loads bounded the loop, as in the forward). kh * kw accumulators: 25 of the
 * 32 AVX-512 registers for 5x5, with the kh dy tiles of the column and one input tile.
 * Each weight's terms come in direct_dw_taps's order (rows oh, then tiles) and its lanes
 * are summed the same way, so the bits are the same. Inlined with constant kh, kw. */
static inline __attribute__((always_inline)) void direct_dw_plane_s1(const conv_geom *g,
                                                                     const float *img,
                                                                     const float *dyb, int64_t kh,
                                                                     int64_t kw, float *dwc)
{
    const int64_t Wq = g->Wq, Wt = g->Wt, Ho = g->Ho;
    conv_tile a[DIRECT_DW_S1_TAPS];
    for (int64_t e = 0; e < kh * kw; e++)
        a[e] = (conv_tile){0};
    for (int64_t k = 0; k < Ho + kh - 1; k++) {
        const bool interior = k >= kh - 1 && k < Ho;
        for (int64_t t = 0; t < Wt; t += CONV_DIRECT_TILE)
            if (interior)
                direct_dw_s1_rowtile(img + k * Wq, dyb, Wt, Ho, k, t, true, kh, kw, a);
            else
                direct_dw_s1_rowtile(img + k * Wq, dyb, Wt, Ho, k, t, false, kh, kw, a);
    }
    for (int64_t e = 0; e < kh * kw; e++) {
        float sum = 0.0f;
        for (int l = 0; l < CONV_DIRECT_TILE; l++)
            sum += a[e][l];
        dwc[e] += sum;
    }
}

/* dw[o,c,i,j] += sum over the chunk's images and output positions of dyp * xp at the shifted
 * position: one dot product per weight, over whole tiles (dyp is zero past Wo). One (output,
 * input) channel pair per iteration: each thread owns its weights. */
static void conv2d_direct_dw(const conv_geom *g, const float *xp, const float *dyp, int64_t B,
                             float *dw)
{
    const int64_t kk = g->kh * g->kw, plane = g->Hp * g->Wq, rows = g->Ho * g->Wt;
    const bool shared = direct_shared_loads(g);
    TG_PARALLEL_FOR_WORK(g->Co * g->Ci, B * kk * rows)
    for (int64_t oc = 0; oc < g->Co * g->Ci; oc++) {
        const int64_t o = oc / g->Ci, c = oc % g->Ci;
        for (int64_t b = 0; b < B; b++) {
            const float *img = xp + (b * g->Ci + c) * plane, *dyb = dyp + (b * g->Co + o) * rows;
            if (shared && g->kh == 5 && g->kw == 5) /* the GAN's 64 -> 1 layer */
                direct_dw_plane_s1(g, img, dyb, 5, 5, dw + oc * kk);
            else if (shared && g->kh == 3 && g->kw == 3)
                direct_dw_plane_s1(g, img, dyb, 3, 3, dw + oc * kk);
            else
                for (int64_t i = 0; i < g->kh; i++)
                    if (g->stride == 1) /* inlined with the stride constant */
                        direct_dw_row(g, img, dyb, i, 1, dw + oc * kk);
                    else
                        direct_dw_row(g, img, dyb, i, g->stride, dw + oc * kk);
        }
    }
}

/* dx [B, C, H, W] += w[c,i,j] * dyp scattered back to the positions it was read from (one
 * output channel, any stride): the transpose of the forward, into a zeroed padded plane (the
 * chunk's xp, free again) whose inside is then added to dx. One (image, channel) plane per
 * iteration. */
static void conv2d_direct_dx_scatter(const conv_geom *g, const float *dyp, const float *w,
                                     int64_t B, float *xp, float *dx)
{
    const int64_t s = g->stride, d = g->dil, kk = g->kh * g->kw, Wq = g->Wq, Wt = g->Wt;
    const int64_t plane = g->Hp * Wq, H = g->H, W = g->W, pad = g->pad;
    TG_PARALLEL_FOR_WORK(B * g->Ci, kk * g->Ho * Wt)
    for (int64_t t = 0; t < B * g->Ci; t++) {
        int64_t b = t / g->Ci, c = t % g->Ci;
        float *restrict img = xp + t * plane;
        const float *dyb = dyp + b * g->Ho * Wt;
        for (int64_t e = 0; e < plane; e++)
            img[e] = 0.0f;
        for (int64_t i = 0; i < g->kh; i++) {
            for (int64_t j = 0; j < g->kw; j++) {
                const float wv = w[c * kk + i * g->kw + j];
                for (int64_t oh = 0; oh < g->Ho; oh++) {
                    float *dst = img + (oh * s + i * d) * Wq + j * d;
                    const float *r = dyb + oh * Wt;
                    for (int64_t t = 0; t < Wt; t += CONV_DIRECT_TILE) {
                        conv_tile v = wv * *(const conv_tile *)(r + t);
                        tile_add(dst + t * s, s, &v);
                    }
                }
            }
        }
        float *restrict out = dx + t * H * W;
        for (int64_t ih = 0; ih < H; ih++)
            for (int64_t iw = 0; iw < W; iw++)
                out[ih * W + iw] += img[(ih + pad) * Wq + iw + pad];
    }
}

/* One call's tensors, for the dispatching kernels below. */
typedef struct {
    const conv_geom *g;
    const float *x, *w, *bias, *dy;
    float *y, *dx, *dw, *scratch;
    bool dx_set;
} direct_call;

TG_ISA_KERNEL(direct_forward_kernel, (const direct_call *k), (k))
{
    const conv_geom *g = k->g;
    const int64_t kk = g->kh * g->kw;
    const direct_ctx c = {g,          k->x, k->w,  k->bias,    k->y, k->scratch,
                          g->Ci * kk, kk,   false, g->Co == 1, false};
    direct_correlate(&c);
}

/* The backward, chunk by chunk: dyp, then dw from the padded x; dx through the same planes
 * when it scatters, else after the chunks as one correlation of dy over the batch. */
TG_ISA_KERNEL(direct_backward_kernel, (const direct_call *k), (k))
{
    const conv_geom *g = k->g;
    const int64_t x_img = g->Ci * g->H * g->W, Ho = g->Ho, Wt = g->Wt, kk = g->kh * g->kw;
    float *xp = k->scratch, *dyp = direct_rows(g, k->scratch);
    conv_geom t;
    const bool gather = k->dx && direct_dx_geom(g, &t);
    float *dx_scatter = k->dx && !gather ? k->dx : NULL;
    if (dx_scatter && k->dx_set)
        memset(k->dx, 0, (size_t)(g->N * x_img) * sizeof(float));
    for (int64_t b0 = 0; b0 < g->N && (k->dw || dx_scatter); b0 += g->chunk) {
        const int64_t B = min64(g->chunk, g->N - b0), planes = B * g->Co;
        TG_PARALLEL_FOR_WORK(planes, Ho * Wt)
        for (int64_t p = 0; p < planes; p++)
            pad_plane(k->dy + (b0 * g->Co + p) * g->P, Ho, g->Wo, dyp + p * Ho * Wt, Ho, Wt, 0, 0);
        if (k->dw) {
            direct_pad_x(g, k->x + b0 * x_img, B, xp);
            conv2d_direct_dw(g, xp, dyp, B, k->dw);
        }
        if (dx_scatter)
            conv2d_direct_dx_scatter(g, dyp, k->w, B, xp, dx_scatter + b0 * x_img);
    }
    if (gather) {
        /* dx[c] of dy's channel o weighs tap (i, j) by w[o, c, kh-1-i, kw-1-j]. */
        const direct_ctx c = {&t, k->dy,      k->w, NULL,  k->dx,     k->scratch,
                              kk, g->Ci * kk, true, false, !k->dx_set};
        direct_correlate(&c);
    }
}

#if TG_ISA_BASE
void tg_conv_direct_forward(const conv_geom *g, const float *x, const float *w, const float *bias,
                            float *y, float *scratch)
{
    const direct_call k = {.g = g, .x = x, .w = w, .bias = bias, .y = y, .scratch = scratch};
    direct_forward_kernel(&k);
}

void tg_conv_direct_backward(const conv_geom *g, const float *x, const float *w, const float *dy,
                             float *dx, bool dx_set, float *dw, float *scratch)
{
    const direct_call k = {
        .g = g, .x = x, .w = w, .dy = dy, .dx = dx, .dw = dw, .scratch = scratch, .dx_set = dx_set};
    direct_backward_kernel(&k);
}
#endif
