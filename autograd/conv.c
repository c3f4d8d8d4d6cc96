/* Convolution ops: conv2d and conv_transpose2d (groups = 1), lowered to GEMM with im2col and
 * col2im (conv2d with one output channel runs direct loops instead, autograd/conv_direct.c),
 * and
 * conv2d_weight_grad, conv2d's weight gradient as an op of its own: with conv2d and
 * conv_transpose2d it makes the second order of all three (backward_graph).
 *
 * Both ops share one lowering. The side of the convolution that is unfolded into columns is
 * the image side, the other the flat side; Wm is the weight read as a matrix:
 *   conv2d:           image = x [N, C, H, W],    flat = y [N, O, Ho, Wo],  Wm = w [O, C*kh*kw]
 *   conv_transpose2d: image = y [N, O, Hy, Wy],  flat = x [N, C, H, W],    Wm = w [C, O*kh*kw]
 * With cols = im2col(image) [Kc = Ci*kh*kw, P = flat plane size]:
 *   flat   = Wm @ cols              conv2d forward,          conv_transpose2d backward-data
 *   image += col2im(Wm^T @ flat)    conv2d backward-data,    conv_transpose2d forward
 *   dWm   += flat @ cols^T          the weight gradient of both
 * so conv_transpose2d is conv2d with the roles of forward and backward-data swapped. Where
 * cols is a GEMM's B operand (the first and the third), our AVX-512 GEMM packs it straight
 * from the image instead of reading written columns (implicit GEMM, below). The second, where
 * the GEMM pays off, runs without col2im as GEMMs over the image's points whose B operand is
 * packed straight from flat (conv_dgrad, below).
 *
 * Images go through in chunks of B whose columns sit side by side, cols [Kc, B*P]; a chunk
 * holds as many images as fit in CONV_CHUNK_BYTES of working space (at least one), so the
 * scratch stays bounded whatever the batch. Small planes with a deep Kc are "staged": the flat
 * side is copied between its tensor layout [B, Co, P] and [Co, B*P], so that each GEMM is one
 * call with N = B*P (a 7x7 plane alone would make GEMMs 49 wide); the copy moves Kc/Co times
 * less data than the columns. Otherwise each image has its own GEMMs, reading and writing the
 * tensors in place: where Kc is shallow (1 -> 64 channels, 3x3) the copy would cost as much
 * as the GEMM itself (bench/bench_conv). Where those GEMMs are too small to split between
 * threads, the threads take whole images instead (conv_image_team). */
#include "internal.h"
#include "ops.h"

#include "../tensor/parallel.h"
#include "conv_direct.h"
#include "window.h"
#include "winograd.h"

#include <string.h>

/* Working space per chunk: columns plus the flat side's staging buffer. Small enough that a
 * chunk's columns stay in the cores' L2 between im2col and the GEMM that reads them: on the
 * GAN's layers 2 MB ran forward + backward 10-30% faster than 8 MB or 16 MB, and as fast as
 * 1 MB (bench/bench_conv, 2 cores with 1 MB of L2 each). Still so with tensor/gemm.c's
 * AVX-512 kernels: 8 MB made G_upsample.8 15-40% and D.4 20% slower (bench_gan, CPU time).
 * Splitting cols further into slabs of about 256 rows (whole channels; every GEMM splits along
 * them), so that a slab stays in L2, gained nothing on G_upsample.8 and made D.4 8% slower. */
#define CONV_CHUNK_BYTES ((int64_t)2 << 20)
/* Staging (see above) for planes of fewer than CONV_STAGE_MAX_P positions and columns of at
 * least CONV_STAGE_MIN_KC rows. */
#define CONV_STAGE_MAX_P 256
#define CONV_STAGE_MIN_KC 64
/* output_padding is conv_transpose2d's for H, output_padding_w for W: equal from
 * tg_conv_transpose2d, different in conv2d's data gradient when H and W round differently.
 * conv_transpose2d's dilation is 1 from tg_conv_transpose2d, any in that data gradient. */
typedef struct {
    int stride, padding, dilation, output_padding, output_padding_w;
} conv_params;

/* Completes g (Kc, P, staged, chunk; the padded sizes when direct) once its sizes are set and
 * its output planes are at least 1 x 1. Every size is checked: false when one overflows int64
 * or a chunk's working space is more bytes than a size_t can count. With no lowering to run
 * (empty: an empty output, or an empty x whose output is the bias) there is no working space:
 * chunk 0. */
static bool conv_geom_finish(conv_geom *g, bool empty)
{
    if (__builtin_mul_overflow(g->Ci, g->kh, &g->Kc) ||
        __builtin_mul_overflow(g->Kc, g->kw, &g->Kc) || __builtin_mul_overflow(g->Ho, g->Wo, &g->P))
        return false;
    g->staged = false;
    g->chunk = 0;
    if (empty)
        return true;
    if (g->direct && !tg_conv_direct_sizes(g))
        g->direct = false; /* the lowering's working space does not grow with the padding */
    g->staged = !g->direct && g->P < CONV_STAGE_MAX_P && g->Kc >= CONV_STAGE_MIN_KC;
    int64_t per_image, rows;
    if (g->direct)
        per_image = tg_conv_direct_floats(g);
    else if (__builtin_add_overflow(g->Kc, g->staged ? g->Co : 0, &rows) ||
             __builtin_mul_overflow(rows, g->P, &per_image))
        return false;
    /* In bytes, with room for conv_cols_floats' rounding: a size_t counts them all. */
    if (per_image > INT64_MAX / (int64_t)sizeof(float) - 16)
        return false;
    int64_t bytes = per_image * (int64_t)sizeof(float);
    int64_t b = per_image > 0 ? CONV_CHUNK_BYTES / bytes : g->N;
    g->chunk = max64(1, min64(b, g->N));
    if (g->chunk == 1)
        g->staged = false; /* one image: its tensors are already in GEMM layout */
    return true;
}

/* Floats of cols, rounded up so the staging buffer after them stays 64-byte aligned. */
static int64_t conv_cols_floats(const conv_geom *g)
{
    return (g->Kc * g->chunk * g->P + 15) / 16 * 16;
}

/* Working space of one chunk: cols, plus the staging buffer when staged. It is declared as
 * the node's scratch because forward allocates nothing; it holds no state between forward
 * and backward, so backward overwrites it freely (and a second backward on the same tape
 * works the same way). */
static size_t conv_scratch_bytes(const conv_geom *g)
{
    if (g->chunk == 0)
        return 0; /* nothing to compute (conv_geom_finish's empty case): no sizes were set */
    if (g->direct)
        return (size_t)(g->chunk * tg_conv_direct_floats(g)) * sizeof(float);
    int64_t floats =
        g->staged ? conv_cols_floats(g) + g->Co * g->chunk * g->P : g->Kc * g->chunk * g->P;
    return (size_t)floats * sizeof(float);
}

/* The staging buffer of the flat side, [Co, chunk*P], after the columns; NULL when the op
 * does not stage. */
static float *conv_flat_buf(const conv_geom *g, void *scratch)
{
    return g->staged ? (float *)scratch + conv_cols_floats(g) : NULL;
}

/* ---- the shared kernels ------------------------------------------------------------------
 * cols [Kc, ldc]: row (c, i, j) holds, for each output position (oh, ow) of one image,
 * img[c][oh*stride - pad + i*dil][ow*stride - pad + j*dil], 0 where that falls in the padding.
 * One image's block starts at column b*P of the chunk. */

/* The range [*lo, *hi) of output positions o < n_out with 0 <= o*stride + off < n_in. */
static void conv_valid_range(int64_t off, int64_t stride, int64_t n_in, int64_t n_out, int64_t *lo,
                             int64_t *hi)
{
    int64_t a = off >= 0 ? 0 : (-off + stride - 1) / stride;
    int64_t b = n_in - off <= 0 ? 0 : (n_in - 1 - off) / stride + 1;
    a = min64(a, n_out);
    *lo = a;
    *hi = max64(a, min64(b, n_out));
}

/* Stride 1 and output width = input width (the "same" convolutions): then a row of cols over
 * the valid output rows is one contiguous run of the plane shifted by hoff*W + woff, except
 * the |woff| columns at each row's edge that wrap into the neighbouring image row and belong
 * to the padding. One long vectorised copy plus a few stores per row replaces a loop per
 * output row, which matters on planes of 14x14 (segments of 14 floats). */
static bool conv_rows_contiguous(const conv_geom *g)
{
    return g->stride == 1 && g->Wo == g->W;
}

/* For a contiguous row (see above) with shift = hoff*W + woff: the range [*k0, *k1) of
 * positions in the valid output rows [oh_lo*W, oh_hi*W) whose source lies inside the plane.
 * Positions of those rows outside it are padding. */
static void conv_row_span(const conv_geom *g, int64_t shift, int64_t oh_lo, int64_t oh_hi,
                          int64_t *k0, int64_t *k1)
{
    /* Within those rows even when the shift is more than the plane (a padding and dilation
     * of 1000 on a 3 x 3 plane): the zeros before k0 must not run past the rows. */
    *k0 = min64(max64(oh_lo * g->W, -shift), oh_hi * g->W);
    *k1 = max64(*k0, min64(oh_hi * g->W, g->H * g->W - shift));
}

/* Unfolds one channel plane img [H, W] into its kh*kw rows of cols (row stride ldc). The
 * segments are a few floats long: plain loops over restrict pointers, which the compiler
 * vectorises inline, instead of memcpy and memset calls. */
static void im2col_plane(const conv_geom *g, const float *restrict img, float *restrict cols,
                         int64_t ldc)
{
    const int64_t W = g->W, Ho = g->Ho, Wo = g->Wo, s = g->stride;
    const bool contiguous = conv_rows_contiguous(g);
    for (int64_t i = 0; i < g->kh; i++) {
        int64_t hoff = i * g->dil - g->pad; /* ih = oh*s + hoff */
        int64_t oh_lo, oh_hi;
        conv_valid_range(hoff, s, g->H, Ho, &oh_lo, &oh_hi);
        for (int64_t j = 0; j < g->kw; j++) {
            float *restrict row = cols + (i * g->kw + j) * ldc;
            int64_t woff = j * g->dil - g->pad; /* iw = ow*s + woff */
            int64_t lo, hi;
            conv_valid_range(woff, s, W, Wo, &lo, &hi);
            for (int64_t e = 0; e < oh_lo * Wo; e++)
                row[e] = 0.0f;
            for (int64_t e = oh_hi * Wo; e < Ho * Wo; e++)
                row[e] = 0.0f;
            if (contiguous) {
                int64_t shift = hoff * W + woff, k0, k1;
                conv_row_span(g, shift, oh_lo, oh_hi, &k0, &k1);
                for (int64_t k = oh_lo * W; k < k0; k++)
                    row[k] = 0.0f;
                for (int64_t k = k0; k < k1; k++)
                    row[k] = img[k + shift];
                for (int64_t k = k1; k < oh_hi * W; k++)
                    row[k] = 0.0f;
                if (lo > 0 || hi < Wo) {
                    for (int64_t oh = oh_lo; oh < oh_hi; oh++) {
                        for (int64_t ow = 0; ow < lo; ow++)
                            row[oh * Wo + ow] = 0.0f;
                        for (int64_t ow = hi; ow < Wo; ow++)
                            row[oh * Wo + ow] = 0.0f;
                    }
                }
                continue;
            }
            for (int64_t oh = oh_lo; oh < oh_hi; oh++) {
                float *restrict r = row + oh * Wo;
                const float *restrict src = img + (oh * s + hoff) * W; /* input row ih */
                for (int64_t ow = 0; ow < lo; ow++)
                    r[ow] = 0.0f;
                if (s == 1) {
                    for (int64_t ow = lo; ow < hi; ow++)
                        r[ow] = src[ow + woff];
                } else {
                    for (int64_t ow = lo; ow < hi; ow++)
                        r[ow] = src[ow * s + woff];
                }
                for (int64_t ow = hi; ow < Wo; ow++)
                    r[ow] = 0.0f;
            }
        }
    }
}

/* The transpose of im2col_plane: adds every value of the plane's kh*kw rows of cols into the
 * pixel of img it came from; values at padding positions are dropped. For contiguous rows it
 * first zeroes those values in cols (working space), so that one run adds the whole row. */
static void col2im_plane(const conv_geom *g, float *restrict cols, int64_t ldc, float *restrict img)
{
    const int64_t W = g->W, Wo = g->Wo, s = g->stride;
    const bool contiguous = conv_rows_contiguous(g);
    for (int64_t i = 0; i < g->kh; i++) {
        int64_t hoff = i * g->dil - g->pad;
        int64_t oh_lo, oh_hi;
        conv_valid_range(hoff, s, g->H, g->Ho, &oh_lo, &oh_hi);
        for (int64_t j = 0; j < g->kw; j++) {
            float *restrict row = cols + (i * g->kw + j) * ldc;
            int64_t woff = j * g->dil - g->pad;
            int64_t lo, hi;
            conv_valid_range(woff, s, W, Wo, &lo, &hi);
            if (contiguous) {
                int64_t shift = hoff * W + woff, k0, k1;
                if (lo > 0 || hi < Wo) {
                    for (int64_t oh = oh_lo; oh < oh_hi; oh++) {
                        for (int64_t ow = 0; ow < lo; ow++)
                            row[oh * Wo + ow] = 0.0f;
                        for (int64_t ow = hi; ow < Wo; ow++)
                            row[oh * Wo + ow] = 0.0f;
                    }
                }
                conv_row_span(g, shift, oh_lo, oh_hi, &k0, &k1);
                for (int64_t k = k0; k < k1; k++)
                    img[k + shift] += row[k];
                continue;
            }
            for (int64_t oh = oh_lo; oh < oh_hi; oh++) {
                const float *restrict r = row + oh * Wo;
                float *restrict dst = img + (oh * s + hoff) * W;
                if (s == 1) {
                    for (int64_t ow = lo; ow < hi; ow++)
                        dst[ow + woff] += r[ow];
                } else {
                    for (int64_t ow = lo; ow < hi; ow++)
                        dst[ow * s + woff] += r[ow];
                }
            }
        }
    }
}

/* im2col of nb images img [nb, Ci, H, W] into the columns cols [Kc, nb*P] of a matrix with
 * row stride ldc. Each (image, channel) writes its own rows and columns, so the threads never
 * share an output. */
static void im2col_images(const conv_geom *g, const float *img, int64_t nb, float *cols,
                          int64_t ldc)
{
    const int64_t items = nb * g->Ci, kk = g->kh * g->kw;
    TG_PARALLEL_FOR_WORK(items, kk * g->P)
    for (int64_t t = 0; t < items; t++) {
        int64_t b = t / g->Ci, c = t % g->Ci;
        im2col_plane(g, img + t * g->H * g->W, cols + c * kk * ldc + b * g->P, ldc);
    }
}

/* im2col of B images img [B, Ci, H, W] into cols [Kc, B*P]. */
static void im2col_chunk(const conv_geom *g, const float *img, int64_t B, float *cols)
{
    im2col_images(g, img, B, cols, B * g->P);
}

/* img [B, Ci, H, W] += col2im(cols [Kc, B*P]), or = when assign (img uninitialised: each
 * plane is zeroed just before its values are added, while it is in cache, instead of the whole
 * tensor in a pass of its own); cols is working space (see col2im_plane). A channel plane only
 * receives values from its own rows, so splitting (image, channel) pairs between threads is
 * race-free. */
static void col2im_chunk(const conv_geom *g, float *cols, int64_t B, float *img, bool assign)
{
    const int64_t items = B * g->Ci, ldc = B * g->P, kk = g->kh * g->kw, HW = g->H * g->W;
    TG_PARALLEL_FOR_WORK(items, kk * g->P)
    for (int64_t t = 0; t < items; t++) {
        int64_t b = t / g->Ci, c = t % g->Ci;
        if (assign)
            memset(img + t * HW, 0, (size_t)HW * sizeof(float));
        col2im_plane(g, cols + c * kk * ldc + b * g->P, ldc, img + t * HW);
    }
}

/* Flat side, tensor layout src [B, Co, P] -> GEMM layout F [Co, B*P]. */
static void flat_gather(const conv_geom *g, const float *src, int64_t B, float *F)
{
    const int64_t items = B * g->Co, P = g->P;
    TG_PARALLEL_FOR_WORK(items, P)
    for (int64_t t = 0; t < items; t++) {
        int64_t b = t / g->Co, o = t % g->Co;
        memcpy(F + (o * B + b) * P, src + t * P, (size_t)P * sizeof(float));
    }
}

/* Flat side, GEMM layout F [Co, B*P] -> tensor layout dst [B, Co, P]: dst += F when
 * accumulate, else dst = F + bias[o] (bias may be NULL). */
static void flat_scatter(const conv_geom *g, const float *F, int64_t B, float *dst, bool accumulate,
                         const float *bias)
{
    const int64_t items = B * g->Co, P = g->P;
    TG_PARALLEL_FOR_WORK(items, P)
    for (int64_t t = 0; t < items; t++) {
        int64_t b = t / g->Co, o = t % g->Co;
        const float *f = F + (o * B + b) * P;
        float *d = dst + t * P;
        if (accumulate) {
            for (int64_t p = 0; p < P; p++)
                d[p] += f[p];
        } else {
            float v = bias ? bias[o] : 0.0f;
            for (int64_t p = 0; p < P; p++)
                d[p] = f[p] + v;
        }
    }
}

/* Sets plane t of y [N, C, S] (t < N*C) to its channel's bias (0 when bias is NULL). */
static void fill_plane(float *y, int64_t t, int64_t C, int64_t S, const float *bias)
{
    float v = bias ? bias[t % C] : 0.0f;
    float *restrict p = y + t * S;
    for (int64_t s = 0; s < S; s++)
        p[s] = v;
}

/* Sets every plane of y [N, C, S] to its channel's bias (0 when bias is NULL). */
static void fill_planes(float *y, int64_t N, int64_t C, int64_t S, const float *bias)
{
    if (!TG_PARALLEL_FORK(N * C, S)) {
        for (int64_t t = 0; t < N * C; t++)
            fill_plane(y, t, C, S, bias);
        return;
    }
    TG_PARALLEL_FOR_WORK(N * C, S)
    for (int64_t t = 0; t < N * C; t++)
        fill_plane(y, t, C, S, bias);
}

/* The sum of a plane p [S]: 32 partial sums, so that the loop vectorises into independent
 * accumulators (8 partial sums made one dependent chain of vector adds and ran 10x slower). */
static float plane_sum(const float *restrict p, int64_t S)
{
    float acc[32] = {0};
    int64_t s = 0;
    for (; s + 32 <= S; s += 32)
        for (int k = 0; k < 32; k++)
            acc[k] += p[s + k];
    for (; s < S; s++)
        acc[0] += p[s];
    float plane = 0.0f;
    for (int k = 0; k < 32; k++)
        plane += acc[k];
    return plane;
}

/* db[c] += sum over n and s of dy [N, C, S]: the bias gradient, plane sums (plane_sum) added
 * in double, image after image (backward_units adds its sums in the same order). One channel,
 * then all. */
static void channel_sum(const float *dy, int64_t N, int64_t C, int64_t S, int64_t c, float *db)
{
    double total = 0.0;
    for (int64_t n = 0; n < N; n++)
        total += plane_sum(dy + (n * C + c) * S, S);
    db[c] += (float)total;
}

static void channel_sums(const float *dy, int64_t N, int64_t C, int64_t S, float *db)
{
    if (!TG_PARALLEL_FORK(C, N * S)) {
        for (int64_t c = 0; c < C; c++)
            channel_sum(dy, N, C, S, c, db);
        return;
    }
    TG_PARALLEL_FOR_WORK(C, N * S)
    for (int64_t c = 0; c < C; c++)
        channel_sum(dy, N, C, S, c, db);
}

/* ---- the three GEMMs, on a chunk of B images ---------------------------------------------
 * The flat side of a chunk is either staged, F [Co, B*P] (conv_staged), or the tensor itself,
 * [B, Co, P], with one GEMM per image. */

static bool conv_staged(const conv_geom *g, int64_t B)
{
    return g->staged && B > 1;
}

/* The flat operand of a chunk whose tensor data start at src: gathered into F when staged. */
static const float *flat_operand(const conv_geom *g, int64_t B, const float *src, float *F)
{
    if (!conv_staged(g, B))
        return src;
    flat_gather(g, src, B, F);
    return F;
}

/* The GEMM units of a chunk: the whole chunk when staged, else each image. Unit u of the flat
 * operand (from flat_operand) has Co rows of conv_unit_cols columns, starting at flat + u*Co*P
 * (u is 0 when staged); its columns start at cols + u*P (row stride B*P). */
static int64_t conv_units(const conv_geom *g, int64_t B)
{
    return conv_staged(g, B) ? 1 : B;
}

static int64_t conv_unit_cols(const conv_geom *g, int64_t B)
{
    return conv_staged(g, B) ? B * g->P : g->P;
}

/* ---- implicit GEMM: the columns packed straight from the image ----------------------------
 * Where the columns are a GEMM's B operand (Wm @ cols, and cols^T in the weight gradient),
 * tensor/gemm.c takes a packer instead of a matrix (tg_sgemm_avx512_packb). These packers
 * write the panels that gemm.c's pack_b writes from cols, reading the image with im2col's
 * index math: the GEMM sees the same values in the same places, so the results are
 * bit-identical, and the columns are never written to memory and read back. AVX-512 only: the
 * GEMM takes packers only at that level, and masked loads and gathers make the padding free.
 *
 * A lane of a panel is one column of cols, the output position q of the unit (image q / P,
 * oh, ow), or in the weight gradient's transposed panels one row of cols (channel c, tap i,
 * j). Its value is img[q / P][c][oh*s - pad + i*dil][ow*s - pad + j*dil], 0 unless both lie
 * inside the plane: a lane holds its half of those coordinates and of the offset, a panel row
 * adds the other half. Offsets are the gathers' int32 indices: conv_implicit_fits refuses
 * images too large for them. */
#if defined(__AVX512F__) && defined(__x86_64__) && defined(__GNUC__)
#define CONV_IMPLICIT 1
#include "../tensor/avx512.h"
#else
#define CONV_IMPLICIT 0
#endif

#if TG_ISA_BASE
int tg_conv_implicit = 1;
int tg_conv_wgrad_taps = 1;
#endif

/* A coordinate that no tap brings inside a plane (see conv_implicit_fits): for lanes past the
 * end of the matrix, which pack_b fills with zeros. */
#define CONV_LANE_OUT (-(1 << 30))

/* The int32 offsets of B images' padded planes have room to spare: every coordinate and
 * offset a lane or a panel row computes stays within +-2^30. */
static bool conv_implicit_fits(const conv_geom *g, int64_t B)
{
    int64_t hp, wp, floats;
    return !__builtin_add_overflow(g->H, 2 * g->pad, &hp) &&
           !__builtin_add_overflow(g->W, 2 * g->pad, &wp) &&
           !__builtin_mul_overflow(hp, wp, &floats) &&
           !__builtin_mul_overflow(floats, g->Ci, &floats) &&
           !__builtin_mul_overflow(floats, B, &floats) && floats < ((int64_t)1 << 29);
}

/* The packers' context: the images of one GEMM unit and their n = conv_unit_cols positions. */
typedef struct {
    const conv_geom *g;
    const float *img;
    int64_t n;
} conv_pack;

/* What pack_gather reads, for conv2d's columns and for the data gradient's (conv_dgrad,
 * below): images img_floats apart, each of channel planes [H, W] plane floats apart with rows
 * ld floats apart (ld >= W); lane q is the point (q / (Hq*Wq), y, x) of a grid of Hq x Wq per
 * image, and panel row (c, i, j) of the kh x kw taps reads it at plane c, row y*step + h0 +
 * i*dh, column x*step + w0 + j*dw (0 when that lies outside the plane). conv2d's columns: the
 * grid is the output plane, step the stride, h0 = w0 = -pad, dh = dw = dil, ld = W. */
typedef struct {
    const float *img;
    int64_t n, img_floats, plane, H, W, ld;
    int64_t Hq, Wq, step, h0, w0;
    int64_t kh, kw, dh, dw;
} conv_gather;

#if CONV_IMPLICIT
/* conv2d's columns of a unit (see conv_gather). */
static conv_gather cols_gather(const conv_pack *pk)
{
    const conv_geom *g = pk->g;
    return (conv_gather){.img = pk->img,
                         .n = pk->n,
                         .img_floats = g->Ci * g->H * g->W,
                         .plane = g->H * g->W,
                         .H = g->H,
                         .W = g->W,
                         .ld = g->W,
                         .Hq = g->Ho,
                         .Wq = g->Wo,
                         .step = g->stride,
                         .h0 = -g->pad,
                         .w0 = -g->pad,
                         .kh = g->kh,
                         .kw = g->kw,
                         .dh = g->dil,
                         .dw = g->dil};
}

/* The 16 position lanes from q0: the grid point's row y*step + h0 and column x*step + w0, and
 * its offset in the unit's images (which can be negative: only inside the plane is read).
 * Lanes past n are outside every plane. *first is lane 0's offset; *linear says that each
 * lane's is the previous one's plus 1, so that a masked load reads them all. */
static void position_lanes(const conv_gather *gt, int64_t q0, __m512i *h0, __m512i *w0,
                           __m512i *off, int32_t *first, bool *linear)
{
    int32_t h[16], w[16], o[16];
    const int64_t grid = gt->Hq * gt->Wq;
    int64_t b = q0 / grid, p = q0 % grid, y = p / gt->Wq, x = p % gt->Wq;
    *linear = true;
    for (int l = 0; l < 16; l++) {
        if (q0 + l < gt->n) {
            h[l] = (int32_t)(y * gt->step + gt->h0);
            w[l] = (int32_t)(x * gt->step + gt->w0);
            o[l] = (int32_t)(b * gt->img_floats + (int64_t)h[l] * gt->ld + w[l]);
        } else {
            h[l] = CONV_LANE_OUT;
            w[l] = 0;
            o[l] = l ? o[l - 1] + 1 : 0;
        }
        if (l && o[l] != o[l - 1] + 1)
            *linear = false;
        if (++x == gt->Wq) {
            x = 0;
            if (++y == gt->Hq) {
                y = 0;
                b++;
            }
        }
    }
    *h0 = _mm512_loadu_si512(h);
    *w0 = _mm512_loadu_si512(w);
    *off = _mm512_loadu_si512(o);
    *first = o[0];
}

/* The lanes whose row h and column w lie inside a plane [H, W]. */
static inline __mmask16 inside(int64_t H, int64_t W, __m512i h, __m512i w)
{
    /* Unsigned: a negative coordinate is a large one. */
    return _mm512_cmplt_epu32_mask(h, _mm512_set1_epi32((int32_t)H)) &
           _mm512_cmplt_epu32_mask(w, _mm512_set1_epi32((int32_t)W));
}

/* tg_gemm_pack_b_fn for op(B) = the columns [kh*kw*channels, n] that a conv_gather describes:
 * a panel row is one row (c, i, j) over the panel's 32 grid points. */
static void pack_gather(const void *ctx, int64_t j0, int64_t nc, int64_t p0, int64_t kc,
                        float *restrict dst)
{
    const conv_gather *gt = ctx;
    const int64_t kk = gt->kh * gt->kw;
    for (int64_t jp = 0; jp < nc; jp += TG_GEMM_NR) {
        float *restrict panel = dst + jp * kc;
        __m512i h0[2], w0[2], off[2];
        int32_t first[2];
        bool linear[2];
        for (int v = 0; v < 2; v++)
            position_lanes(gt, j0 + jp + 16 * v, &h0[v], &w0[v], &off[v], &first[v], &linear[v]);
        int64_t c = p0 / kk, i = p0 % kk / gt->kw, j = p0 % gt->kw;
        for (int64_t k = 0; k < kc; k++) {
            const float *plane = gt->img + c * gt->plane;
            const int32_t dh = (int32_t)(i * gt->dh), dw = (int32_t)(j * gt->dw);
            const int32_t shift = (int32_t)(dh * gt->ld + dw);
            for (int v = 0; v < 2; v++) {
                __mmask16 m = inside(gt->H, gt->W, _mm512_add_epi32(h0[v], _mm512_set1_epi32(dh)),
                                     _mm512_add_epi32(w0[v], _mm512_set1_epi32(dw)));
                __m512 val;
                if (linear[v])
                    val = _mm512_maskz_loadu_ps(m, plane + first[v] + shift);
                else
                    val = _mm512_mask_i32gather_ps(
                        _mm512_setzero_ps(), m, _mm512_add_epi32(off[v], _mm512_set1_epi32(shift)),
                        plane, 4);
                _mm512_store_ps(panel + k * TG_GEMM_NR + 16 * v, val);
            }
            if (++j == gt->kw) {
                j = 0;
                if (++i == gt->kh) {
                    i = 0;
                    c++;
                }
            }
        }
    }
}

/* Row r = (c, i, j) of cols, a tap: its row and column shifts i*dil, j*dil into *dh and *dw,
 * and the offset of (c, i*dil, j*dil) in an image. */
static inline int64_t tap_offset(const conv_geom *g, int64_t r, int64_t *dh, int64_t *dw)
{
    const int64_t kk = g->kh * g->kw;
    *dh = r % kk / g->kw * g->dil;
    *dw = r % g->kw * g->dil;
    return r / kk * g->H * g->W + *dh * g->W + *dw;
}

/* The 16 row lanes of cols from r0 (tap_offset's shifts and offsets). Rows past Kc are outside
 * every plane. */
static void tap_lanes(const conv_geom *g, int64_t r0, __m512i *dh, __m512i *dw, __m512i *off)
{
    int32_t h[16], w[16], o[16];
    for (int l = 0; l < 16; l++) {
        int64_t r = r0 + l, th, tw;
        if (r < g->Kc) {
            o[l] = (int32_t)tap_offset(g, r, &th, &tw);
            h[l] = (int32_t)th;
            w[l] = (int32_t)tw;
        } else {
            h[l] = CONV_LANE_OUT;
            w[l] = 0;
            o[l] = 0;
        }
    }
    *dh = _mm512_loadu_si512(h);
    *dw = _mm512_loadu_si512(w);
    *off = _mm512_loadu_si512(o);
}

/* tg_gemm_pack_b_fn for op(B) = cols^T [n, Kc], the weight gradient's: a panel row is one
 * position (b, oh, ow) over the panel's 32 rows of cols, a gather. */
static void pack_cols_t(const void *ctx, int64_t j0, int64_t nc, int64_t p0, int64_t kc,
                        float *restrict dst)
{
    const conv_pack *pk = ctx;
    const conv_geom *g = pk->g;
    const int64_t img_floats = g->Ci * g->H * g->W;
    for (int64_t jp = 0; jp < nc; jp += TG_GEMM_NR) {
        float *restrict panel = dst + jp * kc;
        __m512i dh[2], dw[2], off[2];
        for (int v = 0; v < 2; v++)
            tap_lanes(g, j0 + jp + 16 * v, &dh[v], &dw[v], &off[v]);
        int64_t b = p0 / g->P, oh = p0 % g->P / g->Wo, ow = p0 % g->Wo;
        for (int64_t k = 0; k < kc; k++) {
            const int32_t h = (int32_t)(oh * g->stride - g->pad);
            const int32_t w = (int32_t)(ow * g->stride - g->pad);
            const int32_t o = (int32_t)(b * img_floats + (int64_t)h * g->W + w);
            for (int v = 0; v < 2; v++) {
                __mmask16 m = inside(g->H, g->W, _mm512_add_epi32(dh[v], _mm512_set1_epi32(h)),
                                     _mm512_add_epi32(dw[v], _mm512_set1_epi32(w)));
                __m512 val = _mm512_mask_i32gather_ps(
                    _mm512_setzero_ps(), m, _mm512_add_epi32(off[v], _mm512_set1_epi32(o)), pk->img,
                    4);
                _mm512_store_ps(panel + k * TG_GEMM_NR + 16 * v, val);
            }
            if (++ow == g->Wo) {
                ow = 0;
                if (++oh == g->Ho) {
                    oh = 0;
                    b++;
                }
            }
        }
    }
}

/* ---- the weight gradient of few taps, direct ----------------------------------------------
 * dW [Co, Kc] += dy [Co, P] @ cols^T for a unit of one image whose Kc = Ci*kh*kw is at most
 * WGRAD_TAPS_MAX, without padding (D's first convolution: 1 -> 64 channels, 3x3 on 28x28, Kc
 * 9). The GEMM has the taps in its lanes there (its N is Kc: 9 of 16 used), and pack_cols_t
 * gathers the columns' transpose with about as many loads as the products. Here the lanes are
 * 16 output channels, dy transposed 16 x 16 positions at a time in registers, and each tap's
 * input value is broadcast from the image into its own accumulator. Each dW element gets the
 * GEMM's terms in the GEMM's order: a chain of fused multiply-adds from +0 over the positions of
 * each depth block of TG_GEMM_KC, whose sum is then added to dW (the GEMM's beta 1): the same
 * bits. test_conv's implicit layers compare the two. D's first conv (bench_conv, batch 128, 1
 * thread) went from 7.5 to 4.7 ms backward; bench_gan's D.0 row, forward + backward, from 10.4
 * to 8.3 ms of CPU (medians of 8 interleaved rounds). Its forward stays a GEMM: the same kind of
 * loop ran it no faster, bound by writing y (22 MB). */
#define WGRAD_TAPS_MAX 12

/* Whether gemm_weight_grad of unit columns n takes wgrad_taps. FP32 only: in bf16 mode the
 * GEMM rounds its inputs. */
static bool wgrad_taps_fit(const conv_geom *g, int64_t n)
{
    return tg_conv_wgrad_taps && g->Kc <= WGRAD_TAPS_MAX && g->pad == 0 && n == g->P &&
           !tg_matmul_bf16_active();
}

/* The kc taps' terms of positions q .. q + np of the image at rows of dy r[p] (16 channels),
 * into acc; (oh, ow) is position q's output point, moved past the last. np constant where the
 * caller unrolls it (16), r in registers. */
static inline __attribute__((always_inline)) void
wgrad_taps_positions(const conv_geom *g, const float *img, const int64_t *off, int kc,
                     const __m512 *r, int np, int64_t *oh, int64_t *ow, __m512 *acc)
{
    for (int p = 0; p < np; p++) {
        const float *x = img + *oh * g->stride * g->W + *ow * g->stride;
        for (int t = 0; t < kc; t++)
            acc[t] = _mm512_fmadd_ps(r[p], _mm512_set1_ps(x[off[t]]), acc[t]);
        if (++*ow == g->Wo)
            *ow = 0, ++*oh;
    }
}

/* dW += the weight gradient of image img (dy rows f [Co, P]) with kc = g->Kc taps, a constant
 * where inlined. */
static inline __attribute__((always_inline)) void
wgrad_taps_kc(const conv_geom *g, const float *img, const float *f, float *dW, int kc)
{
    const int64_t Co = g->Co, P = g->P;
    int64_t off[WGRAD_TAPS_MAX], dh, dw; /* tap t's offset from the window's corner */
    for (int t = 0; t < kc; t++)
        off[t] = tap_offset(g, t, &dh, &dw);
    for (int64_t co0 = 0; co0 < Co; co0 += 16) {
        const int64_t nco = min64(16, Co - co0);
        for (int64_t p0 = 0; p0 < P; p0 += TG_GEMM_KC) {
            const int64_t p1 = min64(p0 + TG_GEMM_KC, P);
            int64_t oh = p0 / g->Wo, ow = p0 % g->Wo;
            __m512 acc[WGRAD_TAPS_MAX];
            for (int t = 0; t < kc; t++)
                acc[t] = _mm512_setzero_ps();
            for (int64_t q = p0; q < p1; q += 16) {
                const int64_t nq = min64(16, p1 - q);
                __m512 r[16];
                for (int c = 0; c < 16; c++)
                    r[c] = c < nco ? _mm512_maskz_loadu_ps(tg_lanes16(nq), f + (co0 + c) * P + q)
                                   : _mm512_setzero_ps();
                tg_transpose16(r); /* r[p]: dy at position q + p, channels co0 .. co0 + 15 */
                if (nq == 16)
                    wgrad_taps_positions(g, img, off, kc, r, 16, &oh, &ow, acc);
                else
                    wgrad_taps_positions(g, img, off, kc, r, (int)nq, &oh, &ow, acc);
            }
            float sums[WGRAD_TAPS_MAX][16];
            for (int t = 0; t < kc; t++)
                _mm512_storeu_ps(sums[t], acc[t]);
            for (int64_t c = 0; c < nco; c++)
                for (int t = 0; t < kc; t++)
                    dW[(co0 + c) * kc + t] += sums[t][c];
        }
    }
}

/* wgrad_taps_kc inlined with the GAN's Kc constant (9: a 3x3 kernel on one channel), and
 * once for the others. */
static void wgrad_taps(const conv_geom *g, const float *img, const float *f, float *dW)
{
    if (g->Kc == 9)
        wgrad_taps_kc(g, img, f, dW, 9);
    else
        wgrad_taps_kc(g, img, f, dW, (int)g->Kc);
}
#endif

/* Whether the GEMMs that read the columns pack them from the image (tg_conv_implicit). Both
 * kinds (Wm @ cols and the weight gradient's), on every layer that lowers in bench_conv:
 * forward + backward ran 10-22% faster than with written columns at 1 thread (the strided
 * 4x4 layers most), and no slower at 2. */
static bool conv_implicit_on(void)
{
#if CONV_IMPLICIT
    return tg_conv_implicit && tg_sgemm_avx512_active();
#else
    return false;
#endif
}

/* The columns of a chunk of B images img [B, Ci, H, W], for the GEMMs that read them as their
 * B operand: packed by each GEMM from the image, or written into cols by im2col up front. A
 * packing GEMM that cannot take a packer (no memory for its buffers) writes its own unit's
 * columns first, and only those: the other units' may hold a GEMM's output by then. */
typedef struct {
    const conv_geom *g;
    const float *img;
    int64_t B;
    float *cols;
    bool pack;
} conv_cols;

static conv_cols conv_cols_of(const conv_geom *g, const float *img, int64_t B, float *cols)
{
    conv_cols cc = {g, img, B, cols, conv_implicit_on() && conv_implicit_fits(g, B)};
    if (!cc.pack)
        im2col_chunk(g, img, B, cols);
    return cc;
}

/* The packers' context for unit u. */
static conv_pack unit_pack(const conv_cols *cc, int64_t u)
{
    const conv_geom *g = cc->g;
    return (conv_pack){g, cc->img + u * g->Ci * g->H * g->W, conv_unit_cols(g, cc->B)};
}

/* The written columns of unit u: written now when packing (a GEMM that could not pack). */
static const float *unit_cols(const conv_cols *cc, int64_t u)
{
    const conv_geom *g = cc->g;
    if (cc->pack) {
        conv_pack pk = unit_pack(cc, u);
        im2col_images(g, pk.img, pk.n / g->P, cc->cols + u * g->P, cc->B * g->P);
    }
    return cc->cols + u * g->P;
}

/* C [Co, n] = Wm @ (columns of unit u) + beta * C. */
static void gemm_wm_cols(const conv_cols *cc, int64_t u, const float *Wm, float beta, float *C,
                         int64_t ldc)
{
    const conv_geom *g = cc->g;
    const int64_t n = conv_unit_cols(g, cc->B);
#if CONV_IMPLICIT
    if (cc->pack) {
        conv_pack pk = unit_pack(cc, u);
        conv_gather gt = cols_gather(&pk);
        if (tg_sgemm_avx512_packb(false, g->Co, n, g->Kc, 1.0f, Wm, g->Kc, pack_gather, &gt, beta,
                                  C, ldc))
            return;
    }
#endif
    tg_sgemm_avx512(false, false, g->Co, n, g->Kc, 1.0f, Wm, g->Kc, unit_cols(cc, u), cc->B * g->P,
                    beta, C, ldc);
}

/* ---- a chunk's images in parallel -----------------------------------------------------------
 * Where a chunk makes one GEMM per image and each is too small for our GEMM to split between
 * threads (tg_sgemm_avx512_threads: under about 1e6 multiply-adds, as D's first conv, 64 x 676
 * x 9 an image), images one after the other left the second core idle during every GEMM and
 * forked for each image's bias (fill_planes, channel_sums): 1,362 of the tutorial iteration's
 * 3,221 OpenMP regions ran on one thread (bench/README.md). A team of threads takes the images
 * instead, image after image within a thread, every GEMM on its own thread, so a chunk is one
 * region. Each image's output and data-gradient columns come from the same calls as before:
 * bit-identical. The weight gradient, a sum over images, goes into one partial per thread for
 * its contiguous images (backward_units), added in thread order: it depends on the team's size,
 * never on timing, and a team of one is the old order exactly. The bias gradient's plane sums
 * are added in double (channel_sums' order) whatever the team, so db is the same at any thread
 * count. */
#if TG_ISA_BASE
int tg_conv_image_parallel = 1;
#endif

/* The team for a chunk of B images: its size, or 1 (image after image, each GEMM splitting
 * itself) when the images share one GEMM (staged), a unit's GEMMs (any of the three) would
 * split between threads, or the chunk's products together are too small to pay for a fork
 * (again tg_sgemm_avx512_threads' rule, as if they were one product). */
static int conv_image_team(const conv_geom *g, int64_t B)
{
    const int64_t n = conv_unit_cols(g, B);
    if (!tg_conv_image_parallel || conv_units(g, B) < 2 || !tg_sgemm_avx512_active() ||
        tg_sgemm_avx512_threads(g->Co, n, g->Kc) > 1 ||
        tg_sgemm_avx512_threads(g->Kc, n, g->Co) > 1 ||
        tg_sgemm_avx512_threads(g->Co, g->Kc, n) > 1)
        return 1;
    return (int)min64(tg_sgemm_avx512_threads(g->Co, B * n, g->Kc), B);
}

/* gemm_flat_from_cols image by image (a tg_team_fn): dst = Wm @ cols + bias (NULL: beta
 * says whether dst keeps what it holds). */
typedef struct {
    const conv_cols *cc;
    const float *Wm;
    float *dst;
    const float *bias;
    float beta;
} flat_images;

static void flat_images_run(void *ctx, int t, int64_t b0, int64_t b1)
{
    const flat_images *c = ctx;
    const int64_t Co = c->cc->g->Co, P = c->cc->g->P;
    (void)t;
    for (int64_t b = b0; b < b1; b++) {
        /* The bias goes in just before the GEMM adds to it, while the image is in cache. */
        if (c->bias)
            fill_planes(c->dst + b * Co * P, 1, Co, P, c->bias);
        gemm_wm_cols(c->cc, b, c->Wm, c->beta, c->dst + b * Co * P, P);
    }
}

/* dst [B, Co, P] = Wm @ cols + bias[o] (bias may be NULL), or dst += Wm @ cols when
 * accumulate. F is the staging buffer. */
static void gemm_flat_from_cols(const conv_geom *g, int64_t B, const float *Wm, const conv_cols *cc,
                                float *F, float *dst, bool accumulate, const float *bias)
{
    if (conv_staged(g, B)) {
        gemm_wm_cols(cc, 0, Wm, 0.0f, F, B * g->P);
        flat_scatter(g, F, B, dst, accumulate, bias);
        return;
    }
    flat_images ctx = {cc, Wm, dst, accumulate ? NULL : bias, accumulate || bias ? 1.0f : 0.0f};
    tg_team_run(conv_image_team(g, B), B, flat_images_run, &ctx);
}

/* cols of unit u = Wm^T @ flat of unit u. */
static void gemm_cols_from_flat(const conv_geom *g, int64_t B, int64_t u, const float *Wm,
                                const float *flat, float *cols)
{
    const int64_t n = conv_unit_cols(g, B);
    tg_sgemm_avx512(true, false, g->Kc, n, g->Co, 1.0f, Wm, g->Kc, flat + u * g->Co * g->P, n, 0.0f,
                    cols + u * g->P, B * g->P);
}

/* dWm += flat of unit u @ (cols of unit u)^T. */
static void gemm_weight_grad(const conv_geom *g, int64_t B, int64_t u, const float *flat,
                             const conv_cols *cc, float *dWm)
{
    const int64_t n = conv_unit_cols(g, B);
    const float *f = flat + u * g->Co * g->P;
#if CONV_IMPLICIT
    if (cc->pack) {
        conv_pack pk = unit_pack(cc, u);
        if (wgrad_taps_fit(g, n)) {
            wgrad_taps(g, pk.img, f, dWm);
            return;
        }
        if (tg_sgemm_avx512_packb(false, g->Co, g->Kc, n, 1.0f, f, n, pack_cols_t, &pk, 1.0f, dWm,
                                  g->Kc))
            return;
    }
#endif
    tg_sgemm_avx512(false, true, g->Co, g->Kc, n, 1.0f, f, n, unit_cols(cc, u), B * g->P, 1.0f, dWm,
                    g->Kc);
}

/* backward_units' work on images [b0, b1) (a tg_team_fn), dW being thread t's partial
 * weight gradient, or dWm itself for a team of one. */
typedef struct {
    const conv_geom *g;
    int64_t B;
    const float *flat;
    const conv_cols *cc;
    float *dWm, *part; /* part: the team's partials [team, Co*Kc], NULL for a team of one */
    const float *Wm;
    float *cols, *sums; /* sums [B, Co]: each image's channel sums, NULL without db */
} units_ctx;

static void units_run(void *ctx, int t, int64_t b0, int64_t b1)
{
    const units_ctx *c = ctx;
    const conv_geom *g = c->g;
    const int64_t Co = g->Co, P = g->P, w_floats = Co * g->Kc;
    float *dW = c->part ? c->part + t * w_floats : c->dWm;
    if (c->part)
        memset(dW, 0, (size_t)w_floats * sizeof(float));
    for (int64_t u = b0; u < b1; u++) {
        if (dW)
            gemm_weight_grad(g, c->B, u, c->flat, c->cc, dW);
        if (c->Wm)
            gemm_cols_from_flat(g, c->B, u, c->Wm, c->flat, c->cols);
        for (int64_t o = 0; o < Co && c->sums; o++)
            c->sums[u * Co + o] = plane_sum(c->flat + (u * Co + o) * P, P);
    }
}

/* The backward GEMMs of a chunk's units, unit by unit so that each part of flat comes from
 * memory once for all of them (the bias sums read it from cache): dWm += flat @ cols^T (dWm
 * may be NULL); the columns cols = Wm^T @ flat (Wm may be NULL), whose unit u the weight
 * gradient has read first when both run (conv2d's backward writes them over x's); db += the
 * channel sums of flat (db may be NULL). In a team (conv_image_team) each thread has a partial
 * weight gradient of its own, and the partials are added in thread order. Without the memory
 * for the partials and the sums: a team of one, the sums in a pass of their own (same values). */
static void backward_units(const conv_geom *g, int64_t B, const float *flat, const conv_cols *cc,
                           float *dWm, const float *Wm, float *cols, float *db)
{
    const int64_t Co = g->Co, w_floats = Co * g->Kc;
    if (conv_units(g, B) == 1) {
        if (dWm)
            gemm_weight_grad(g, B, 0, flat, cc, dWm);
        if (Wm)
            gemm_cols_from_flat(g, B, 0, Wm, flat, cols);
        if (db)
            channel_sums(flat, 1, Co, conv_unit_cols(g, B), db);
        return;
    }
    int team = conv_image_team(g, B);
    int64_t part_floats = dWm && team > 1 ? team * w_floats : 0;
    const size_t bytes = (size_t)(part_floats + (db ? B * Co : 0)) * sizeof(float);
    float *buf = bytes ? tg_try_alloc(bytes) : NULL;
    /* The columns alone (D's first conv in a G step: no gradient for D's weights) need no
     * buffer; their units are independent, so the team still runs them. */
    if (bytes && !buf)
        team = 1, part_floats = 0;
    units_ctx ctx = {.g = g,
                     .B = B,
                     .flat = flat,
                     .cc = cc,
                     .dWm = dWm,
                     .part = part_floats ? buf : NULL,
                     .Wm = Wm,
                     .cols = cols,
                     .sums = buf && db ? buf + part_floats : NULL};
    tg_team_run(team, B, units_run, &ctx);
    /* On this thread: teams run where the products are small, and so is the weight (D's first
     * conv: 576 floats). */
    for (int64_t e = 0; part_floats && e < w_floats; e++)
        for (int t = 0; t < team; t++)
            dWm[e] += buf[t * w_floats + e];
    if (db && ctx.sums) {
        for (int64_t o = 0; o < Co; o++) {
            double total = 0.0;
            for (int64_t u = 0; u < B; u++)
                total += ctx.sums[u * Co + o];
            db[o] += (float)total;
        }
    } else if (db) {
        channel_sums(flat, B, Co, g->P, db);
    }
    if (buf)
        tg_free(buf, bytes);
}

/* img [b_begin, b_end) of [N, Ci, H, W] (+)= col2im(Wm^T @ flat) with flat [N, Co, P], chunk by
 * chunk through the columns (cols and F of scratch): img = col2im(..) + bias[c] when assign
 * (bias may be NULL), else img += col2im(..). conv_dgrad's old path, and its fallback. */
static void col2im_range(const conv_geom *g, const float *Wm, const float *flat, int64_t b_begin,
                         int64_t b_end, float *img, bool assign, const float *bias, void *scratch)
{
    float *cols = scratch, *F = conv_flat_buf(g, scratch);
    const int64_t img_floats = g->Ci * g->H * g->W, flat_floats = g->Co * g->P;
    for (int64_t b0 = b_begin; b0 < b_end; b0 += g->chunk) {
        int64_t B = min64(g->chunk, b_end - b0);
        const float *fF = flat_operand(g, B, flat + b0 * flat_floats, F);
        backward_units(g, B, fF, NULL, NULL, Wm, cols, NULL);
        /* The bias goes in chunk by chunk, so col2im adds to planes still in cache. */
        if (assign && bias)
            fill_planes(img + b0 * img_floats, B, g->Ci, g->H * g->W, bias);
        col2im_chunk(g, cols, B, img + b0 * img_floats, assign && !bias);
    }
}

/* ---- the data gradient without col2im ------------------------------------------------------
 * img (+)= col2im(Wm^T @ flat) (conv2d's backward-data, conv_transpose2d's forward) writes and
 * reads back Kc = Ci*kh*kw rows of columns per position of flat, then scatters them: on the
 * GAN's layers col2im was the largest piece left beside the GEMMs. Written per image point:
 *   img[b, c, ih, iw] = sum over o, i, j of Wm[o, (c, i, j)] * flat[b, o, oh, ow],
 *   oh = (ih + pad - i*dil) / s wherever that divides exactly (ow likewise),
 * it is a GEMM whose B operand pack_gather packs straight from flat. The points split into
 * s*s phases by (ih + pad) mod s and (iw + pad) mod s. A phase's taps are the i with i*dil =
 * ih + pad (mod s): i = t0 + t*tstep; on the phase's grid (ih = first + s*y) the t-th reads
 * flat's row y + h0 + t*dh (dh = -dil / gcd(dil, s)), a stride-1 correlation (the sub-pixel
 * decomposition of a strided transposed convolution: with 4x4 kernels and stride 2, four
 * phases of 2x2 taps, no product with a zero). Per phase, the points [Ci, n] = Wp [Ci, Co *
 * taps] @ columns [Co * taps, n], where Wp is the phase's taps of Wm transposed, rearranged
 * once per call. With stride 1 the one phase is the whole plane, and on planes of at least
 * CONV_STAGE_MAX_P points each image's GEMM writes its gradient in place; otherwise the phases
 * of a group of images go into a buffer that one pass spreads over the planes. Each point is
 * one GEMM sum over (o, tap) instead of col2im's sum of per-tap sums over o: the results
 * differ from the old path by rounding (tests/test_conv bounds it), and tg_conv_implicit_dx 0
 * runs the old path. Where it pays off is dgrad_group's to say. */
#if TG_ISA_BASE
int tg_conv_implicit_dx = 1;
#endif

#if CONV_IMPLICIT
/* One axis of a phase: the image rows first + s*y (y < n) and the taps t0 + t*tstep (t < nt)
 * that reach them, tap t reading flat's row y + h0 + t*dh (conv_gather's meaning). */
typedef struct {
    int64_t first, n, t0, nt, tstep, h0, dh;
} dgrad_axis;

static int64_t gcd64(int64_t a, int64_t b)
{
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* Phase r (0 <= r < stride) of the rows (along_w false) or columns. Loops over at most the
 * stride, which dgrad_group keeps within the kernel size. */
static dgrad_axis dgrad_axis_of(const conv_geom *g, int64_t r, bool along_w)
{
    const int64_t s = g->stride, d = g->dil, pad = g->pad, q = gcd64(d, s);
    const int64_t n_in = along_w ? g->W : g->H, k = along_w ? g->kw : g->kh;
    dgrad_axis a = {.t0 = -1, .tstep = s / q, .dh = -(d / q)};
    a.first = ((r - pad) % s + s) % s;
    a.n = a.first < n_in ? (n_in - 1 - a.first) / s + 1 : 0;
    for (int64_t i = 0; i < a.tstep && i < k; i++) {
        if (i * d % s == r) {
            a.t0 = i;
            break;
        }
    }
    a.nt = a.t0 >= 0 ? (k - 1 - a.t0) / a.tstep + 1 : 0;
    /* Exact: first + pad and t0 * d are both r modulo s. */
    a.h0 = a.t0 >= 0 ? (a.first + pad - a.t0 * d) / s : 0;
    return a;
}

/* The largest stride the implicit data gradient takes (dgrad_group); col2im runs above it. */
#define DGRAD_MAX_STRIDE 8

/* Every phase's axes, made once a call: dgrad_spread took them again for every plane, and
 * their divisions cost as much as spreading a 14 x 14 plane (1.4% of a WGAN-GP iteration). */
typedef struct {
    dgrad_axis h[DGRAD_MAX_STRIDE], w[DGRAD_MAX_STRIDE];
} dgrad_axes;

static void dgrad_axes_of(const conv_geom *g, dgrad_axes *ax)
{
    for (int64_t r = 0; r < g->stride; r++) {
        ax->h[r] = dgrad_axis_of(g, r, false);
        ax->w[r] = dgrad_axis_of(g, r, true);
    }
}

/* The columns of one phase of nb images of flat from src, whose planes have rows ld floats
 * apart (see conv_gather). */
static conv_gather dgrad_gather(const conv_geom *g, const dgrad_axis *ah, const dgrad_axis *aw,
                                const float *src, int64_t nb, int64_t ld)
{
    return (conv_gather){.img = src,
                         .n = nb * ah->n * aw->n,
                         .img_floats = g->Co * g->Ho * ld,
                         .plane = g->Ho * ld,
                         .H = g->Ho,
                         .W = g->Wo,
                         .ld = ld,
                         .Hq = ah->n,
                         .Wq = aw->n,
                         .step = 1,
                         .h0 = ah->h0,
                         .w0 = aw->h0,
                         .kh = ah->nt,
                         .kw = aw->nt,
                         .dh = ah->dh,
                         .dw = aw->dh};
}
#endif

/* Images per GEMM group of the implicit data gradient: 1 for stride-1 planes of at least
 * CONV_STAGE_MAX_P points (in place), else as many as fill CONV_CHUNK_BYTES of phase buffer
 * (at least one), so that small planes make wide GEMMs that split well between threads; 0
 * where it does not run: the switch is off, no AVX-512, fewer than CONV_DGRAD_MIN_CI image
 * channels, more flat channels than the trade below pays for, a phase with points but no tap
 * (a stride above the kernel, or a dilation that skips residues: those points only get the
 * bias), or offsets beyond the gathers' int32 (conv_implicit_fits' bound).
 *
 * The trade: packing the columns costs about Co*kh*kw*H*W/s^2 loads per image, used by Ci
 * rows of the GEMM; col2im costs Ci*kh*kw*P additions into the image, strided ones when s > 1.
 * Measured with bench_conv: G's 5x5 conv 128 -> 64 (Co = Ci/2) backward 20-23% faster at 1
 * thread (CPU time), 33% at 2; D's 3x3 conv 64 -> 128 on 13 x 13 (Co = 2 Ci, stride 1) 10-18%
 * slower at 1 thread; but the strided 4x4 layers with Co = 2 Ci (the convt G's forward, the
 * dcgan D's backward) 0-5% faster at 1 thread and 10-20% at 2: col2im's strided scatter
 * costs more than packing, and its GEMM splits worse between threads. */
/* Fewer image channels than the micro-kernel's 8 rows waste most of each tile (D's first conv
 * and G's last transposed conv have one): col2im's GEMM has Ci*kh*kw rows instead. */
#define CONV_DGRAD_MIN_CI 8
static int64_t dgrad_group(const conv_geom *g)
{
#if CONV_IMPLICIT
    if (!conv_implicit_on() || !tg_conv_implicit_dx || g->Ci < CONV_DGRAD_MIN_CI ||
        g->Co > g->Ci * (g->stride > 1 ? 2 : 1) || g->stride > g->kh || g->stride > g->kw ||
        g->stride > DGRAD_MAX_STRIDE)
        return 0;
    dgrad_axes ax;
    dgrad_axes_of(g, &ax);
    for (int64_t r = 0; r < g->stride; r++)
        if ((ax.h[r].n > 0 && ax.h[r].nt == 0) || (ax.w[r].n > 0 && ax.w[r].nt == 0))
            return 0;
    int64_t B = 1, img_bytes = g->Ci * g->H * g->W * (int64_t)sizeof(float);
    if (g->stride > 1 || g->H * g->W < CONV_STAGE_MAX_P)
        B = max64(1, min64(g->N, CONV_CHUNK_BYTES / img_bytes));
    /* Every coordinate a lane or panel row computes is within these of 0. */
    const int64_t lim = (int64_t)1 << 28;
    int64_t hb = g->H + g->pad + (g->kh + 1) * g->dil + 2,
            wb = g->W + g->pad + (g->kw + 1) * g->dil + 2;
    int64_t floats, reach, ld = max64(g->W, g->Wo); /* flat's rows, copied when s = 1 */
    if (hb >= lim || wb >= lim || __builtin_mul_overflow(B, g->Co * g->Ho * ld, &floats) ||
        __builtin_mul_overflow(hb, ld, &reach) || __builtin_add_overflow(floats, reach, &floats) ||
        floats + wb >= ((int64_t)1 << 29))
        return 0;
    return B;
#else
    (void)g;
    return 0;
#endif
}

#if CONV_IMPLICIT
/* The points of every phase of nb images' planes dst [nb, Ci, H, W] from the buffer F, where
 * phase after phase holds [Ci, nb * points]: dst = F + bias[c] when assign (bias may be NULL),
 * else dst += F. Each (image, channel) plane is one thread's. */
static void dgrad_spread(const conv_geom *g, const dgrad_axes *ax, const float *F, int64_t nb,
                         float *dst, bool assign, const float *bias)
{
    const int64_t s = g->stride, W = g->W, items = nb * g->Ci;
    TG_PARALLEL_FOR_WORK(items, g->H * W)
    for (int64_t t = 0; t < items; t++) {
        const int64_t b = t / g->Ci, c = t % g->Ci;
        const float add = assign && bias ? bias[c] : 0.0f;
        float *restrict plane = dst + t * g->H * W;
        const float *phase = F;
        for (int64_t rh = 0; rh < s; rh++) {
            const dgrad_axis *ah = &ax->h[rh];
            for (int64_t rw = 0; rw < s; rw++) {
                const dgrad_axis *aw = &ax->w[rw];
                const int64_t pts = ah->n * aw->n;
                const float *restrict src = phase + (c * nb + b) * pts;
                for (int64_t y = 0; y < ah->n; y++) {
                    float *restrict row = plane + (ah->first + s * y) * W + aw->first;
                    for (int64_t x = 0; x < aw->n; x++) {
                        if (assign)
                            row[s * x] = src[y * aw->n + x] + add;
                        else
                            row[s * x] += src[y * aw->n + x];
                    }
                }
                phase += g->Ci * nb * pts;
            }
        }
    }
}

/* dst [rows, ld] = src [rows, w] with zeros past w in each row (ld >= w). */
static void pad_rows(const float *src, int64_t rows, int64_t w, float *dst, int64_t ld)
{
    TG_PARALLEL_FOR_WORK(rows, ld)
    for (int64_t r = 0; r < rows; r++) {
        /* Rows of a few floats: loops the compiler inlines, not memcpy and memset calls. */
        float *restrict d = dst + r * ld;
        const float *restrict q = src + r * w;
        for (int64_t k = 0; k < w; k++)
            d[k] = q[k];
        for (int64_t k = w; k < ld; k++)
            d[k] = 0.0f;
    }
}

/* Whether each image's GEMM writes its plane in place: stride 1 (one phase, the plane) and
 * groups of one image (dgrad_group). */
static bool dgrad_in_place(const conv_geom *g, int64_t B)
{
    return g->stride == 1 && B == 1;
}

/* The row stride of flat's planes as the GEMMs read them: W, copied, for a stride-1 data
 * gradient wider than flat; else flat's own Wo. */
static int64_t dgrad_ld(const conv_geom *g)
{
    return g->stride == 1 ? max64(g->W, g->Wo) : g->Wo;
}

/* conv_dgrad's implicit GEMMs on groups of B images, with buf holding Co*Kc floats of
 * rearranged weights, then (unless in place) the group's phase buffer, then (when dgrad_ld
 * exceeds Wo) the group's flat with rows ld floats apart. A GEMM that cannot run (no memory
 * for its packing) leaves its images to the old path, which only needs the scratch. */
static void dgrad_implicit(const conv_geom *g, int64_t B, const float *Wm, const float *flat,
                           float *img, bool assign, const float *bias, void *scratch, float *buf)
{
    const int64_t s = g->stride, kk = g->kh * g->kw, HW = g->H * g->W;
    const int64_t img_floats = g->Ci * HW, flat_floats = g->Co * g->P;
    float *F = buf + g->Co * g->Kc;
    dgrad_axes ax;
    dgrad_axes_of(g, &ax);
    /* Wp of each phase, one after the other: Wp[c][(o, ti, tj)] = Wm[o][(c, i, j)]. */
    float *wp = buf;
    for (int64_t rh = 0; rh < s; rh++) {
        const dgrad_axis ah = ax.h[rh];
        for (int64_t rw = 0; rw < s; rw++) {
            const dgrad_axis aw = ax.w[rw];
            if (!ah.n || !aw.n)
                continue;
            const int64_t taps = ah.nt * aw.nt;
            for (int64_t c = 0; c < g->Ci; c++)
                for (int64_t o = 0; o < g->Co; o++)
                    for (int64_t ti = 0; ti < ah.nt; ti++)
                        for (int64_t tj = 0; tj < aw.nt; tj++)
                            wp[(c * g->Co + o) * taps + ti * aw.nt + tj] =
                                Wm[o * g->Kc + c * kk + (ah.t0 + ti * ah.tstep) * g->kw + aw.t0 +
                                   tj * aw.tstep];
            wp += g->Ci * g->Co * taps;
        }
    }
    /* Where the image is wider than flat (a "valid" stride-1 convolution), flat's rows are
     * first copied W floats apart, so that consecutive points read consecutive floats: masked
     * loads instead of gathers. */
    const int64_t ld = dgrad_ld(g);
    float *rows = F + (dgrad_in_place(g, B) ? 0 : B * img_floats);
    for (int64_t b0 = 0; b0 < g->N; b0 += B) {
        const int64_t nb = min64(B, g->N - b0);
        const float *src = flat + b0 * flat_floats;
        if (ld > g->Wo) {
            pad_rows(src, nb * g->Co * g->Ho, g->Wo, rows, ld);
            src = rows;
        }
        if (dgrad_in_place(g, B)) {
            /* One phase, the plane itself, and one image: its GEMM writes img in place. */
            const dgrad_axis ah = ax.h[0], aw = ax.w[0];
            const int64_t K = g->Co * ah.nt * aw.nt;
            float *dst = img + b0 * img_floats;
            if (assign && bias)
                fill_planes(dst, 1, g->Ci, HW, bias);
            const bool set = assign && !bias;
            conv_gather gt = dgrad_gather(g, &ah, &aw, src, 1, ld);
            if (!tg_sgemm_avx512_packb(false, g->Ci, HW, K, 1.0f, buf, K, pack_gather, &gt,
                                       set ? 0.0f : 1.0f, dst, HW))
                col2im_range(g, Wm, flat, b0, b0 + 1, img, set, NULL, scratch);
            continue;
        }
        bool ok = true;
        const float *w_phase = buf;
        float *f_phase = F;
        for (int64_t rh = 0; rh < s && ok; rh++) {
            const dgrad_axis ah = ax.h[rh];
            for (int64_t rw = 0; rw < s && ok; rw++) {
                const dgrad_axis aw = ax.w[rw];
                if (!ah.n || !aw.n)
                    continue;
                const int64_t K = g->Co * ah.nt * aw.nt;
                conv_gather gt = dgrad_gather(g, &ah, &aw, src, nb, ld);
                ok = tg_sgemm_avx512_packb(false, g->Ci, gt.n, K, 1.0f, w_phase, K, pack_gather,
                                           &gt, 0.0f, f_phase, gt.n);
                w_phase += g->Ci * K;
                f_phase += g->Ci * gt.n;
            }
        }
        if (ok)
            dgrad_spread(g, &ax, F, nb, img + b0 * img_floats, assign, bias);
        else
            col2im_range(g, Wm, flat, b0, b0 + nb, img, assign, bias, scratch);
    }
}
#endif

/* Whether conv_dgrad runs the implicit GEMMs (tg_conv_implicit_dx, dgrad_group). */
static bool conv_dgrad_on(const conv_geom *g)
{
    return dgrad_group(g) > 0;
}

/* img [N, Ci, H, W] = col2im(Wm^T @ flat) + bias[c] when assign (bias may be NULL), else
 * img += col2im(Wm^T @ flat), flat [N, Co, P]: by the implicit GEMMs above where they run,
 * else through col2im (the scratch's columns). */
static void conv_dgrad(const conv_geom *g, const float *Wm, const float *flat, float *img,
                       bool assign, const float *bias, void *scratch)
{
#if CONV_IMPLICIT
    const int64_t B = dgrad_group(g);
    if (B > 0) {
        const int64_t rest = (dgrad_in_place(g, B) ? 0 : B * g->Ci * g->H * g->W) +
                             (dgrad_ld(g) > g->Wo ? B * g->Co * g->Ho * dgrad_ld(g) : 0);
        size_t bytes = (size_t)(g->Co * g->Kc + rest) * sizeof(float);
        float *buf = tg_try_alloc(bytes); /* without the memory, the old path */
        if (buf) {
            dgrad_implicit(g, B, Wm, flat, img, assign, bias, scratch, buf);
            tg_free(buf, bytes);
            return;
        }
    }
#endif
    col2im_range(g, Wm, flat, 0, g->N, img, assign, bias, scratch);
}

/* Zeroes grad (count floats; NULL: no gradient) when input i's buffer is fresh, so that a
 * backward that accumulates into it may assume zeros. */
static void zero_fresh(const tg_node *n, int i, float *grad, int64_t count)
{
    if (grad && tg_grad_fresh(n, i))
        memset(grad, 0, (size_t)count * sizeof(float));
}

/* ---- checks shared by both ops ---------------------------------------------------------- */

/* Ranks, bias shape and the parameters common to both ops. Cin_axis is the axis of w that
 * must match x's channels, out_axis the one that counts output channels (bias size). */
static tg_status conv_check_common(const tg_node *n, const char *fn, int cin_axis, int out_axis)
{
    if (n->n_in < 2 || n->n_in > 3)
        return tg_set_error(TG_ERR_ARG, "%s: %d inputs; it takes x, w and b", fn, n->n_in);
    const tg_tensor *x = n->in[0], *w = n->in[1], *b = n->n_in > 2 ? n->in[2] : NULL;
    const conv_params *p = TG_PARAMS(n, conv_params);
    char sx[160], sw[160], sb[160];
    if (x->ndim != 4)
        return tg_set_error(TG_ERR_SHAPE, "%s: x %s must be 4-D [N, C, H, W]", fn,
                            TG_SHAPE_STR(x, sx));
    if (w->ndim != 4)
        return tg_set_error(TG_ERR_SHAPE, "%s: w %s must be 4-D [%s, kh, kw]", fn,
                            TG_SHAPE_STR(w, sw), cin_axis == 1 ? "O, C" : "C, O");
    if (x->shape[1] != w->shape[cin_axis])
        return tg_set_error(TG_ERR_SHAPE, "%s: x %s has %lld channels but w %s expects %lld", fn,
                            TG_SHAPE_STR(x, sx), (long long)x->shape[1], TG_SHAPE_STR(w, sw),
                            (long long)w->shape[cin_axis]);
    if (w->shape[2] < 1 || w->shape[3] < 1)
        return tg_set_error(TG_ERR_SHAPE, "%s: w %s has an empty kernel", fn, TG_SHAPE_STR(w, sw));
    if (b && (b->ndim != 1 || b->shape[0] != w->shape[out_axis]))
        return tg_set_error(TG_ERR_SHAPE,
                            "%s: b %s must be [%lld], one value per output "
                            "channel of w %s",
                            fn, TG_SHAPE_STR(b, sb), (long long)w->shape[out_axis],
                            TG_SHAPE_STR(w, sw));
    if (p->stride < 1)
        return tg_set_error(TG_ERR_ARG, "%s: stride %d must be at least 1", fn, p->stride);
    if (p->padding < 0)
        return tg_set_error(TG_ERR_ARG, "%s: padding %d must not be negative", fn, p->padding);
    return TG_OK;
}

/* "x [..] with w [..], stride S, padding P, ..." for messages; conv_transpose2d shows its
 * output_padding, conv2d its dilation. */
static const char *conv_call_str(const tg_node *n, bool transposed, char *buf, size_t size)
{
    const conv_params *p = TG_PARAMS(n, conv_params);
    char sx[160], sw[160];
    snprintf(buf, size, "x %s with w %s, stride %d, padding %d, %s %d", TG_SHAPE_STR(n->in[0], sx),
             TG_SHAPE_STR(n->in[1], sw), p->stride, p->padding,
             transposed ? "output_padding" : "dilation",
             transposed ? p->output_padding : p->dilation);
    return buf;
}

/* The checks both ops make once g's sizes are set and its output planes are at least 1 x 1:
 * the output [N, out_c, g's output plane] must have a representable size and the working space
 * must fit (conv_geom_finish), before anything is allocated. Sets the output shape. */
static tg_status conv_check_output(tg_node *n, const char *fn, bool transposed, conv_geom *g,
                                   int *ndim, int64_t shape[])
{
    char call[480], so[160];
    *ndim = 4;
    shape[0] = g->N;
    shape[1] = transposed ? g->Ci : g->Co;
    shape[2] = transposed ? g->H : g->Ho;
    shape[3] = transposed ? g->W : g->Wo;
    if (tg_shape_numel(4, shape) < 0)
        return tg_set_error(TG_ERR_SHAPE, "%s: %s gives an output %s of too many elements", fn,
                            conv_call_str(n, transposed, call, sizeof call),
                            tg_shape_str(4, shape, so, sizeof so));
    if (!conv_geom_finish(g, shape[0] == 0 || shape[1] == 0 || n->in[0]->numel == 0))
        return tg_set_error(TG_ERR_SHAPE,
                            "%s: %s: the working space of one image (a %lld x %lld x %lld x "
                            "%lld lowering) is more than memory can address",
                            fn, conv_call_str(n, transposed, call, sizeof call), (long long)g->Ci,
                            (long long)g->kh, (long long)g->kw, (long long)g->P);
    n->scratch_bytes = conv_scratch_bytes(g);
    return TG_OK;
}

/* ---- second order: the recorded ops of the rules --------------------------------------------
 * Both ops' backward_graph rules, and conv2d_weight_grad's own, are made of three recorded
 * ops: conv2d, conv_transpose2d (as conv2d's data gradient) and conv2d_weight_grad (below). */

/* conv2d_weight_grad's parameters: the conv2d's, and its kernel size (not implied by x and dy
 * when the stride rounds). */
typedef struct {
    conv_params conv;
    int kh, kw;
} conv_wgrad_params;

/* The data gradient of a conv2d of x with w (parameters p) from its output gradient dy, as a
 * recorded op: conv_transpose2d(dy, w) with the output paddings that make it x's plane
 * exactly (each below the stride, as conv2d's output size rounds down by less than one). */
static tg_tensor *conv2d_data_grad(tg_tensor *dy, tg_tensor *w, const tg_tensor *x,
                                   const conv_params *p)
{
    int64_t h, wd;
    bool ok = tg_window_transpose_size(dy->shape[2], w->shape[2], p->stride, p->padding,
                                       p->dilation, 0, &h) &&
              tg_window_transpose_size(dy->shape[3], w->shape[3], p->stride, p->padding,
                                       p->dilation, 0, &wd);
    TG_ASSERT(ok && x->shape[2] - h >= 0 && x->shape[2] - h < p->stride && x->shape[3] - wd >= 0 &&
              x->shape[3] - wd < p->stride);
    conv_params t = {.stride = p->stride,
                     .padding = p->padding,
                     .dilation = p->dilation,
                     .output_padding = (int)(x->shape[2] - h),
                     .output_padding_w = (int)(x->shape[3] - wd)};
    return tg_apply2(&tg_op_conv_transpose2d, &t, sizeof t, dy, w);
}

/* The weight gradient [dy's channels, x's channels, kh, kw] of a conv2d of x (parameters p)
 * from its output gradient dy, as a recorded op. */
static tg_tensor *conv2d_weight_grad(tg_tensor *x, tg_tensor *dy, const conv_params *p, int64_t kh,
                                     int64_t kw)
{
    conv_wgrad_params q = {.conv = *p, .kh = (int)kh, .kw = (int)kw};
    return tg_apply2(&tg_op_conv2d_weight_grad, &q, sizeof q, x, dy);
}

/* The bias gradient of either op: dy [N, C, H, W] summed over N, H and W. */
static tg_tensor *conv_bias_grad(tg_tensor *dy)
{
    return tg_sum_axis(tg_sum_axis(tg_sum_axis(dy, 3, false), 2, false), 0, false);
}

/* ---- conv2d --------------------------------------------------------------------------------
 * y[N,O,Ho,Wo] = w[O,C,kh,kw] (*) x[N,C,H,W] + b[O], Ho = (H + 2 pad - dil (kh-1) - 1) / s + 1.
 * Per chunk: cols = im2col(x); y = w @ cols (+ b).
 * Backward: dw += dy @ cols^T;  dx += col2im(w^T @ dy);  db += sums of dy over N, Ho, Wo. */
/* g's sizes up to the output plane for x and a weight [Co, x's channels, kh, kw]; false when
 * Ho or Wo overflows int64. */
static bool conv2d_sizes_of(const tg_tensor *x, int64_t Co, int64_t kh, int64_t kw,
                            const conv_params *p, conv_geom *g)
{
    *g = (conv_geom){.N = x->shape[0],
                     .Ci = x->shape[1],
                     .H = x->shape[2],
                     .W = x->shape[3],
                     .Co = Co,
                     .kh = kh,
                     .kw = kw,
                     .stride = p->stride,
                     .pad = p->padding,
                     .dil = p->dilation};
    if (!tg_window_out_size(g->H, g->kh, g->stride, g->pad, g->dil, &g->Ho) ||
        !tg_window_out_size(g->W, g->kw, g->stride, g->pad, g->dil, &g->Wo))
        return false;
    g->direct = tg_conv_direct_applies(g);
    return true;
}

static bool conv2d_sizes(const tg_node *n, conv_geom *g)
{
    const tg_tensor *w = n->in[1];
    return conv2d_sizes_of(n->in[0], w->shape[0], w->shape[2], w->shape[3],
                           TG_PARAMS(n, conv_params), g);
}

/* No image to compute: an empty batch or no output channel. */
static bool conv2d_empty(const conv_geom *g)
{
    return g->N == 0 || g->Co == 0;
}

/* The geometry of a conv2d that passed conv2d_check (which refuses every call where a size
 * does not fit). */
static void conv2d_geom(const tg_node *n, conv_geom *g)
{
    bool ok = conv2d_sizes(n, g) && conv_geom_finish(g, conv2d_empty(g) || n->in[0]->numel == 0);
    TG_ASSERT(ok);
}

static tg_status conv2d_check(tg_node *n, int *ndim, int64_t shape[])
{
    const char *fn = "tg_conv2d";
    tg_status st = conv_check_common(n, fn, 1, 0);
    if (st != TG_OK)
        return st;
    const conv_params *p = TG_PARAMS(n, conv_params);
    if (p->dilation < 1)
        return tg_set_error(TG_ERR_ARG, "%s: dilation %d must be at least 1", fn, p->dilation);
    conv_geom g;
    char call[480];
    if (!conv2d_sizes(n, &g))
        return tg_set_error(TG_ERR_SHAPE, "%s: %s: the output size overflows int64", fn,
                            conv_call_str(n, false, call, sizeof call));
    if (g.Ho < 1 || g.Wo < 1) {
        /* The sizes below were computed without overflow by conv2d_sizes. */
        return tg_set_error(TG_ERR_SHAPE,
                            "%s: %s gives an output of %lld x %lld: the padded input "
                            "%lld x %lld is smaller than the dilated kernel %lld x %lld",
                            fn, conv_call_str(n, false, call, sizeof call), (long long)g.Ho,
                            (long long)g.Wo, (long long)(g.H + 2 * g.pad),
                            (long long)(g.W + 2 * g.pad), (long long)(g.dil * (g.kh - 1) + 1),
                            (long long)(g.dil * (g.kw - 1) + 1));
    }
    return conv_check_output(n, fn, false, &g, ndim, shape);
}

/* ---- conv2d's forward with images in parallel and no working space ------------------------
 * With chunks of one image (working space over CONV_CHUNK_BYTES: G's 5x5 conv 128 -> 64, 2.5 MB
 * an image) each image's GEMM splits itself between the threads: a region per image, 7 panels
 * of 32 columns split 3:4 (the last panel holds 4), and both threads pack the whole weight (the
 * GEMM's A) for every image. Where the GEMMs pack the columns from the image they need no
 * working space, so a team takes whole images instead, one region for the batch, each image's
 * GEMM on one thread: bit-identical, since no element's sums depend on how the columns are
 * split (tensor/gemm.c). An image whose GEMM cannot pack (no memory for its buffers) is done
 * again after the region, through the working space. */
typedef struct {
    const conv_geom *g;
    const float *x, *w, *bias;
    float *y;
    unsigned char *failed; /* [N]: the image's GEMM did not run */
} forward_ctx;

static void forward_images_run(void *ctx, int t, int64_t b0, int64_t b1)
{
#if CONV_IMPLICIT
    const forward_ctx *c = ctx;
    const conv_geom *g = c->g;
    (void)t;
    for (int64_t b = b0; b < b1; b++) {
        float *yb = c->y + b * g->Co * g->P;
        if (c->bias)
            fill_planes(yb, 1, g->Co, g->P, c->bias);
        conv_pack pk = {g, c->x + b * g->Ci * g->H * g->W, g->P};
        conv_gather gt = cols_gather(&pk);
        c->failed[b] = !tg_sgemm_avx512_packb(false, g->Co, g->P, g->Kc, 1.0f, c->w, g->Kc,
                                              pack_gather, &gt, c->bias ? 1.0f : 0.0f, yb, g->P);
    }
#else
    (void)ctx, (void)t, (void)b0, (void)b1;
#endif
}

/* y of conv2d's forward by a team over the batch; false, having done nothing, where it does not
 * apply (chunks of several images, no packing, one thread, or no memory for the flags). */
static bool conv2d_forward_team(const conv_geom *g, const float *x, const float *w,
                                const float *bias, float *y, void *scratch)
{
    if (!CONV_IMPLICIT || !tg_conv_image_parallel || g->chunk != 1 || g->N < 2 ||
        !conv_implicit_on() || !conv_implicit_fits(g, 1))
        return false;
    const int team = (int)min64(tg_sgemm_avx512_threads(g->Co, g->N * g->P, g->Kc), g->N);
    unsigned char *failed = team > 1 ? (unsigned char *)tg_try_alloc((size_t)g->N) : NULL;
    if (!failed)
        return false;
    forward_ctx ctx = {g, x, w, bias, y, failed};
    tg_team_run(team, g->N, forward_images_run, &ctx);
    const int64_t x_img = g->Ci * g->H * g->W, y_img = g->Co * g->P;
    for (int64_t b = 0; b < g->N; b++) {
        if (!failed[b])
            continue;
        conv_cols cc = conv_cols_of(g, x + b * x_img, 1, scratch);
        gemm_flat_from_cols(g, 1, w, &cc, NULL, y + b * y_img, false, bias);
    }
    tg_free(failed, (size_t)g->N);
    return true;
}

/* Whether g's conv2d (or the conv2d that conv_transpose2d runs backwards) takes the stride-2
 * Winograd path (tg_winograd_s2_applies), with its shape in *s. */
static bool conv_winograd_s2(const conv_geom *g, tg_wino_shape *s)
{
    *s = (tg_wino_shape){g->N, g->Ci, g->H, g->W, g->Co, g->Ho, g->Wo, (int)g->kh, (int)g->pad};
    return tg_winograd_s2_applies(g->N, g->Ci, g->Co, g->Ho, g->Wo, g->kh, g->kw, g->stride, g->pad,
                                  g->dil);
}

/* Whether conv2d runs as Winograd convolutions (autograd/winograd.c), with their shape in *s:
 * at stride 1 (*s2 false) or, for 4 x 4 kernels at stride 2, over the input's phases (*s2). */
static bool conv2d_winograd(const conv_geom *g, tg_wino_shape *s, bool *s2)
{
    *s2 = conv_winograd_s2(g, s);
    return *s2 || tg_winograd_applies(g->N, g->Ci, g->H, g->W, g->Co, g->Ho, g->Wo, g->kh, g->kw,
                                      g->stride, g->pad, g->dil);
}

TG_ISA_KERNEL(conv2d_forward, (tg_node * n), (n))
{
    conv_geom g;
    conv2d_geom(n, &g);
    const float *x = n->in[0]->data, *w = n->in[1]->data;
    const float *bias = n->n_in > 2 ? n->in[2]->data : NULL;
    float *y = n->out->data;
    if (conv2d_empty(&g))
        return;
    if (n->in[0]->numel == 0) {
        /* An empty x (no channel, or an empty plane inside the padding): the output is the bias
         * alone, with no working space (conv_geom_finish), and x's data pointer is not one to
         * offset. */
        fill_planes(y, g.N, g.Co, g.P, bias);
        return;
    }
    tg_wino_shape ws;
    bool s2;
    if (conv2d_winograd(&g, &ws, &s2) &&
        (s2 ? tg_winograd_s2_forward(&ws, x, w, bias, y) : tg_winograd_forward(&ws, x, w, bias, y)))
        return;
    float *cols = n->scratch, *F = conv_flat_buf(&g, n->scratch);
    const int64_t x_img = g.Ci * g.H * g.W, y_img = g.Co * g.P;
    if (g.direct) {
        tg_conv_direct_forward(&g, x, w, bias, y, n->scratch);
        return;
    }
    if (conv2d_forward_team(&g, x, w, bias, y, n->scratch))
        return;
    for (int64_t b0 = 0; b0 < g.N; b0 += g.chunk) {
        int64_t B = min64(g.chunk, g.N - b0);
        conv_cols cc = conv_cols_of(&g, x + b0 * x_img, B, cols);
        gemm_flat_from_cols(&g, B, w, &cc, F, y + b0 * y_img, false, bias);
    }
}

TG_ISA_KERNEL(conv2d_backward, (tg_node * n), (n))
{
    conv_geom g;
    conv2d_geom(n, &g);
    const float *x = n->in[0]->data, *w = n->in[1]->data, *dy = n->out->grad->data;
    float *dx = tg_grad_of(n, 0), *dw = tg_grad_of(n, 1);
    float *db = n->n_in > 2 ? tg_grad_of(n, 2) : NULL;
    /* Fresh gradients (tg_grad_fresh): the small dw and db are zeroed whole and then
     * accumulated; the large dx is zeroed plane by plane inside col2im (the tape's zero fill
     * of it was a pass over memory of its own), or assigned on the direct path. */
    const bool dx_set = dx && tg_grad_fresh(n, 0);
    zero_fresh(n, 1, dw, g.Co * g.Kc);
    zero_fresh(n, 2, db, g.Co);
    if (conv2d_empty(&g))
        zero_fresh(n, 0, dx, g.N * g.Ci * g.H * g.W);
    if (conv2d_empty(&g))
        return; /* no output: every gradient is zero */
    if (n->in[0]->numel == 0) {
        /* An empty x (see the forward): dw stays zero, only b gets a gradient. */
        if (db)
            channel_sums(dy, g.N, g.Co, g.P, db);
        return;
    }
    tg_wino_shape ws;
    bool s2;
    if ((dx || dw) && conv2d_winograd(&g, &ws, &s2) &&
        (s2 ? tg_winograd_s2_backward(&ws, x, w, dy, dx, dx_set, dw)
            : tg_winograd_backward(&ws, x, w, dy, dx, dx_set, dw))) {
        if (db)
            channel_sums(dy, g.N, g.Co, g.P, db);
        return;
    }
    /* The scratch is working space only (see conv_scratch_bytes): nothing is read from it
     * before this backward writes it. */
    float *cols = n->scratch, *F = conv_flat_buf(&g, n->scratch);
    const int64_t x_img = g.Ci * g.H * g.W, y_img = g.Co * g.P;
    if (g.direct) {
        if (db)
            channel_sums(dy, g.N, g.Co, g.P, db);
        if (dx || dw)
            tg_conv_direct_backward(&g, x, w, dy, dx, dx_set, dw, n->scratch);
        return;
    }
    /* dx by conv_dgrad's implicit GEMMs after the chunks, or through the chunks' columns. */
    const bool dx_dgrad = dx && conv_dgrad_on(&g);
    float *dx_cols = dx_dgrad ? NULL : dx;
    for (int64_t b0 = 0; b0 < g.N && (dw || db || dx_cols); b0 += g.chunk) {
        int64_t B = min64(g.chunk, g.N - b0);
        const float *dyF = flat_operand(&g, B, dy + b0 * y_img, F);
        conv_cols cc = {0};
        if (dw)
            cc = conv_cols_of(&g, x + b0 * x_img, B, cols);
        backward_units(&g, B, dyF, &cc, dw, dx_cols ? w : NULL, cols, db);
        if (dx_cols)
            col2im_chunk(&g, cols, B, dx + b0 * x_img, dx_set);
    }
    if (dx_dgrad)
        conv_dgrad(&g, w, dy, dx, dx_set, NULL, n->scratch);
}

/* Second order, with recorded ops: dx = conv_transpose2d(dy, w) (conv2d_data_grad);
 * dw = conv2d_weight_grad(x, dy); db = dy summed over N, Ho, Wo. An empty x or output leaves
 * the gradients it makes zero (NULL). */
static tg_status conv2d_backward_graph(tg_node *n, tg_tensor *gout, uint32_t need, tg_tensor **gin)
{
    tg_tensor *x = n->in[0], *w = n->in[1];
    const conv_params *p = TG_PARAMS(n, conv_params);
    if (gout->numel == 0)
        return TG_OK;
    if (x->numel > 0 && tg_graph_needs(need, 0) && !(gin[0] = conv2d_data_grad(gout, w, x, p)))
        return tg_last_status();
    if (x->numel > 0 && tg_graph_needs(need, 1) &&
        !(gin[1] = conv2d_weight_grad(x, gout, p, w->shape[2], w->shape[3])))
        return tg_last_status();
    if (n->n_in > 2 && tg_graph_needs(need, 2) && !(gin[2] = conv_bias_grad(gout)))
        return tg_last_status();
    return TG_OK;
}

/* Parameters need dilation 1 spelled out: a zero-initialised conv_params is invalid. */
#define CONV2D(s, p, d) TG_CASE_PARAMS(conv_params, .stride = s, .padding = p, .dilation = d)
static const tg_case conv2d_cases[] = {
    {.shape = {{2, 2, 5, 5}, {3, 2, 3, 3}, {3}}, .n_in = 3, CONV2D(1, 0, 1), .name = "plain"},
    {.shape = {{2, 2, 5, 5}, {3, 2, 3, 3}, {3}},
     .n_in = 3,
     CONV2D(2, 1, 1),
     .name = "stride2_pad1"},
    {.shape = {{2, 2, 6, 6}, {3, 2, 3, 3}, {3}}, .n_in = 3, CONV2D(1, 1, 2), .name = "dilation2"},
    {.shape = {{2, 2, 5, 5}, {3, 2, 3, 3}}, .n_in = 2, CONV2D(1, 1, 1), .name = "no_bias"},
    {.shape = {{2, 3, 4, 4}, {4, 3, 1, 1}, {4}}, .n_in = 3, CONV2D(1, 0, 1), .name = "1x1"},
    /* One image: a chunk of one, where the GEMMs use the tensors directly. */
    {.shape = {{1, 2, 5, 6}, {3, 2, 2, 3}, {3}},
     .n_in = 3,
     CONV2D(2, 1, 1),
     .name = "one_image_rect_kernel"},
    /* One output channel: the direct loops. */
    {.shape = {{2, 3, 5, 5}, {1, 3, 3, 3}, {1}}, .n_in = 3, CONV2D(1, 1, 1), .name = "o1"},
    {.shape = {{2, 2, 7, 6}, {1, 2, 3, 2}},
     .n_in = 2,
     CONV2D(2, 2, 2),
     .name = "o1_s2_dil2_no_bias"},
    /* One input channel: the lowering (the direct loops with tg_conv_direct 2, test_conv). */
    {.shape = {{2, 1, 6, 7}, {3, 1, 3, 3}, {3}}, .n_in = 3, CONV2D(1, 0, 1), .name = "i1"},
    {.shape = {{2, 1, 7, 6}, {2, 1, 3, 3}}, .n_in = 2, CONV2D(1, 3, 2), .name = "i1_dil2_pad3"},
    {0},
};
#undef CONV2D
TG_OP_DEFINE(conv2d) = {.name = "conv2d",
                        .n_in = -1,
                        .check = conv2d_check,
                        .forward = conv2d_forward,
                        .backward = conv2d_backward,
                        .backward_graph = conv2d_backward_graph,
                        .cases = conv2d_cases,
                        .fresh_grads = true};

#if TG_ISA_BASE
tg_tensor *tg_conv2d(tg_tensor *x, tg_tensor *w, tg_tensor *b, int stride, int padding,
                     int dilation)
{
    if (!tg_optional_ok("tg_conv2d", "b", b))
        return NULL;
    conv_params p = {.stride = stride, .padding = padding, .dilation = dilation};
    tg_tensor *in[3] = {x, w, b};
    return tg_apply(&tg_op_conv2d, &p, sizeof p, b != TG_NONE ? 3 : 2, in);
}
#endif

/* ---- conv2d_weight_grad --------------------------------------------------------------------
 * dw[O,C,kh,kw] = the weight gradient of a conv2d of x[N,C,H,W] (stride, padding, dilation and
 * kernel size in the params) whose output gradient is dy[N,O,Ho,Wo]; an internal op that the
 * second order of conv2d and conv_transpose2d records. Per chunk, with conv2d's backward
 * kernels: cols = im2col(x); dw += dy @ cols^T. Always the lowering (no direct path).
 * It is bilinear; backward, for the upstream U [O,C,kh,kw]: dx += col2im(U^T @ dy) (conv2d's
 * backward-data with U as the weight); ddy += U @ cols (conv2d's forward with U). */
static bool conv2d_weight_grad_sizes(const tg_node *n, conv_geom *g)
{
    const conv_wgrad_params *p = TG_PARAMS(n, conv_wgrad_params);
    bool ok = conv2d_sizes_of(n->in[0], n->in[1]->shape[1], p->kh, p->kw, &p->conv, g);
    g->direct = false;
    return ok;
}

/* The geometry of a conv2d_weight_grad that passed its check. */
static void conv2d_weight_grad_geom(const tg_node *n, conv_geom *g)
{
    bool ok = conv2d_weight_grad_sizes(n, g) &&
              conv_geom_finish(g, conv2d_empty(g) || n->in[0]->numel == 0);
    TG_ASSERT(ok);
}

static tg_status conv2d_weight_grad_check(tg_node *n, int *ndim, int64_t shape[])
{
    const char *fn = "tg_conv2d_weight_grad";
    const tg_tensor *x = n->in[0], *dy = n->in[1];
    const conv_wgrad_params *p = TG_PARAMS(n, conv_wgrad_params);
    const conv_params *c = &p->conv;
    char sx[160], sd[160];
    if (x->ndim != 4 || dy->ndim != 4 || x->shape[0] != dy->shape[0])
        return tg_set_error(TG_ERR_SHAPE, "%s: x %s and dy %s must be 4-D with one batch size", fn,
                            TG_SHAPE_STR(x, sx), TG_SHAPE_STR(dy, sd));
    if (p->kh < 1 || p->kw < 1 || c->stride < 1 || c->padding < 0 || c->dilation < 1)
        return tg_set_error(TG_ERR_ARG,
                            "%s: kernel %d x %d, stride %d, padding %d, dilation %d: the kernel, "
                            "stride and dilation must be at least 1, the padding at least 0",
                            fn, p->kh, p->kw, c->stride, c->padding, c->dilation);
    conv_geom g;
    if (!conv2d_weight_grad_sizes(n, &g) || g.Ho < 1 || g.Wo < 1 || g.Ho != dy->shape[2] ||
        g.Wo != dy->shape[3])
        return tg_set_error(TG_ERR_SHAPE,
                            "%s: dy %s is not the output gradient of a conv2d of x %s with a "
                            "%d x %d kernel, stride %d, padding %d, dilation %d",
                            fn, TG_SHAPE_STR(dy, sd), TG_SHAPE_STR(x, sx), p->kh, p->kw, c->stride,
                            c->padding, c->dilation);
    *ndim = 4;
    shape[0] = g.Co;
    shape[1] = g.Ci;
    shape[2] = g.kh;
    shape[3] = g.kw;
    if (tg_shape_numel(4, shape) < 0 || !conv_geom_finish(&g, conv2d_empty(&g) || x->numel == 0))
        return tg_set_error(TG_ERR_SHAPE,
                            "%s: x %s, dy %s with a %d x %d kernel: the weight or the working "
                            "space is more than memory can address",
                            fn, TG_SHAPE_STR(x, sx), TG_SHAPE_STR(dy, sd), p->kh, p->kw);
    n->scratch_bytes = conv_scratch_bytes(&g);
    return TG_OK;
}

TG_ISA_KERNEL(conv2d_weight_grad_forward, (tg_node * n), (n))
{
    conv_geom g;
    conv2d_weight_grad_geom(n, &g);
    const float *x = n->in[0]->data, *dy = n->in[1]->data;
    float *dw = n->out->data;
    if (n->out->numel)
        memset(dw, 0, (size_t)n->out->numel * sizeof(float));
    if (conv2d_empty(&g) || n->in[0]->numel == 0)
        return; /* no output gradient or an empty x: dw is zero */
    float *cols = n->scratch, *F = conv_flat_buf(&g, n->scratch);
    const int64_t x_img = g.Ci * g.H * g.W, y_img = g.Co * g.P;
    for (int64_t b0 = 0; b0 < g.N; b0 += g.chunk) {
        int64_t B = min64(g.chunk, g.N - b0);
        const float *dyF = flat_operand(&g, B, dy + b0 * y_img, F);
        conv_cols cc = conv_cols_of(&g, x + b0 * x_img, B, cols);
        backward_units(&g, B, dyF, &cc, dw, NULL, NULL, NULL);
    }
}

TG_ISA_KERNEL(conv2d_weight_grad_backward, (tg_node * n), (n))
{
    conv_geom g;
    conv2d_weight_grad_geom(n, &g);
    const float *x = n->in[0]->data, *dy = n->in[1]->data, *U = n->out->grad->data;
    float *dx = tg_grad_of(n, 0), *ddy = tg_grad_of(n, 1);
    if (conv2d_empty(&g) || n->in[0]->numel == 0)
        return; /* dw did not depend on x or dy: both gradients stay zero */
    float *cols = n->scratch, *F = conv_flat_buf(&g, n->scratch);
    const int64_t x_img = g.Ci * g.H * g.W, y_img = g.Co * g.P;
    for (int64_t b0 = 0; b0 < g.N && ddy; b0 += g.chunk) {
        int64_t B = min64(g.chunk, g.N - b0);
        conv_cols cc = conv_cols_of(&g, x + b0 * x_img, B, cols);
        gemm_flat_from_cols(&g, B, U, &cc, F, ddy + b0 * y_img, true, NULL);
    }
    /* The scratch is free again: the ddy GEMMs are done with it. */
    if (dx)
        conv_dgrad(&g, U, dy, dx, false, NULL, n->scratch);
}

/* Second order (its rule is made of the same three ops): dx = conv_transpose2d(dy, U),
 * ddy = conv2d(x, U), for the upstream U. */
static tg_status conv2d_weight_grad_backward_graph(tg_node *n, tg_tensor *gout, uint32_t need,
                                                   tg_tensor **gin)
{
    tg_tensor *x = n->in[0], *dy = n->in[1];
    const conv_params *p = &TG_PARAMS(n, conv_wgrad_params)->conv;
    if (gout->numel == 0 || x->numel == 0 || dy->numel == 0)
        return TG_OK;
    if (tg_graph_needs(need, 0) && !(gin[0] = conv2d_data_grad(dy, gout, x, p)))
        return tg_last_status();
    if (tg_graph_needs(need, 1) &&
        !(gin[1] = tg_conv2d(x, gout, TG_NONE, p->stride, p->padding, p->dilation)))
        return tg_last_status();
    return TG_OK;
}

#define WGRAD(s, p, d, h, w)                                                                       \
    TG_CASE_PARAMS(conv_wgrad_params, .conv = {.stride = s, .padding = p, .dilation = d}, .kh = h, \
                   .kw = w)
static const tg_case conv2d_weight_grad_cases[] = {
    {.shape = {{2, 2, 5, 5}, {2, 3, 3, 3}}, WGRAD(1, 0, 1, 3, 3), .name = "plain"},
    {.shape = {{2, 2, 5, 5}, {2, 3, 3, 3}}, WGRAD(2, 1, 1, 3, 3), .name = "stride2_pad1"},
    {.shape = {{2, 2, 6, 6}, {2, 3, 4, 4}}, WGRAD(1, 1, 2, 3, 3), .name = "dilation2"},
    {.shape = {{1, 2, 5, 6}, {1, 3, 3, 3}}, WGRAD(2, 1, 1, 2, 3), .name = "one_image_rect_kernel"},
    /* Kc = 72 rows on 4 x 4 planes: two images staged side by side. */
    {.shape = {{2, 8, 4, 4}, {2, 2, 4, 4}}, WGRAD(1, 1, 1, 3, 3), .name = "staged"},
    /* H and W round differently: the rule's data gradient pads them differently. */
    {.shape = {{2, 2, 7, 6}, {2, 1, 4, 4}}, WGRAD(2, 2, 2, 3, 2), .name = "o1_s2_dil2"},
    {0},
};
#undef WGRAD
TG_OP_DEFINE(conv2d_weight_grad) = {.name = "conv2d_weight_grad",
                                    .n_in = 2,
                                    .check = conv2d_weight_grad_check,
                                    .forward = conv2d_weight_grad_forward,
                                    .backward = conv2d_weight_grad_backward,
                                    .backward_graph = conv2d_weight_grad_backward_graph,
                                    .cases = conv2d_weight_grad_cases};

/* ---- conv_transpose2d ----------------------------------------------------------------------
 * y[N,O,Hy,Wy] = col2im(w^T @ x) + b[O] with w[C,O,kh,kw] read as [C, O*kh*kw], x[N,C,H,W],
 * Hy = (H - 1) s - 2 pad + dil (kh - 1) + 1 + output_padding: conv2d's backward-data, whose
 * image side is y (dil is 1 from tg_conv_transpose2d; see conv_params).
 * Backward: cols = im2col(dy);  dx += w @ cols (conv2d's forward);  dw += x @ cols^T;
 * db += sums of dy over N, Hy, Wy. */
/* g's sizes up to y's plane (the image side); false when H or W overflows int64. */
static bool conv_transpose2d_sizes(const tg_node *n, conv_geom *g)
{
    const tg_tensor *x = n->in[0], *w = n->in[1];
    const conv_params *p = TG_PARAMS(n, conv_params);
    *g = (conv_geom){.N = x->shape[0],
                     .Co = x->shape[1],
                     .Ho = x->shape[2],
                     .Wo = x->shape[3],
                     .Ci = w->shape[1],
                     .kh = w->shape[2],
                     .kw = w->shape[3],
                     .stride = p->stride,
                     .pad = p->padding,
                     .dil = p->dilation};
    return tg_window_transpose_size(g->Ho, g->kh, g->stride, g->pad, g->dil, p->output_padding,
                                    &g->H) &&
           tg_window_transpose_size(g->Wo, g->kw, g->stride, g->pad, g->dil, p->output_padding_w,
                                    &g->W);
}

/* No image to compute: an empty batch or no output channel. */
static bool conv_transpose2d_empty(const conv_geom *g)
{
    return g->N == 0 || g->Ci == 0;
}

/* The geometry of a conv_transpose2d that passed its check (which refuses every call where a
 * size does not fit). */
static void conv_transpose2d_geom(const tg_node *n, conv_geom *g)
{
    bool ok = conv_transpose2d_sizes(n, g) &&
              conv_geom_finish(g, conv_transpose2d_empty(g) || n->in[0]->numel == 0);
    TG_ASSERT(ok);
}

static tg_status conv_transpose2d_check(tg_node *n, int *ndim, int64_t shape[])
{
    const char *fn = "tg_conv_transpose2d";
    tg_status st = conv_check_common(n, fn, 0, 1);
    if (st != TG_OK)
        return st;
    const conv_params *p = TG_PARAMS(n, conv_params);
    if (p->dilation < 1)
        return tg_set_error(TG_ERR_ARG, "%s: dilation %d must be at least 1", fn, p->dilation);
    for (int k = 0; k < 2; k++) {
        int op = k ? p->output_padding_w : p->output_padding;
        if (op < 0)
            return tg_set_error(TG_ERR_ARG, "%s: output_padding %d must not be negative", fn, op);
        /* Smaller than stride, so that y's plane unfolds to exactly x's (below); PyTorch also
         * allows up to the dilation, which tg_conv_transpose2d fixes at 1. */
        if (op >= p->stride)
            return tg_set_error(TG_ERR_ARG, "%s: output_padding %d must be smaller than stride %d",
                                fn, op, p->stride);
    }
    conv_geom g;
    char call[480];
    if (!conv_transpose2d_sizes(n, &g))
        return tg_set_error(TG_ERR_SHAPE, "%s: %s: the output size overflows int64", fn,
                            conv_call_str(n, true, call, sizeof call));
    if (g.H < 1 || g.W < 1)
        return tg_set_error(
            TG_ERR_SHAPE, "%s: %s gives an output of %lld x %lld; it must be at least 1 x 1", fn,
            conv_call_str(n, true, call, sizeof call), (long long)g.H, (long long)g.W);
    /* The lowering runs conv2d's geometry backwards: y's plane must unfold to exactly x's. */
    int64_t ho, wo;
    TG_ASSERT(tg_window_out_size(g.H, g.kh, g.stride, g.pad, g.dil, &ho) && ho == g.Ho &&
              tg_window_out_size(g.W, g.kw, g.stride, g.pad, g.dil, &wo) && wo == g.Wo);
    return conv_check_output(n, fn, true, &g, ndim, shape);
}

/* conv_transpose2d's dx = conv2d(dy, w) on the stride-2 path: assigned when set, else added
 * (through a copy). False, having written nothing, without the memory. */
static bool convt_s2_dx(const tg_wino_shape *s, const float *dy, const float *w, float *dx,
                        bool set)
{
    if (set)
        return tg_winograd_s2_forward(s, dy, w, NULL, dx);
    const int64_t count = s->N * s->Co * s->Ho * s->Wo;
    float *t = tg_try_alloc((size_t)count * sizeof(float));
    const bool ok = t && tg_winograd_s2_forward(s, dy, w, NULL, t);
    for (int64_t i = 0; ok && i < count; i++)
        dx[i] += t[i];
    if (t)
        tg_free(t, (size_t)count * sizeof(float));
    return ok;
}

TG_ISA_KERNEL(conv_transpose2d_forward, (tg_node * n), (n))
{
    conv_geom g;
    conv_transpose2d_geom(n, &g);
    const float *x = n->in[0]->data, *w = n->in[1]->data;
    const float *bias = n->n_in > 2 ? n->in[2]->data : NULL;
    float *y = n->out->data;
    if (conv_transpose2d_empty(&g))
        return;
    if (n->in[0]->numel == 0) {
        /* An empty x (no channel, or an empty plane that the kernel still widens): the output
         * is the bias alone, with no working space (conv_geom_finish), and x's data pointer is
         * not one to offset. */
        fill_planes(y, g.N, g.Ci, g.H * g.W, bias);
        return;
    }
    /* The stride-2 path adds the data gradient onto the bias, as conv_dgrad's in-place GEMMs
     * do (a failed call writes nothing: conv_dgrad then assigns y whole). */
    tg_wino_shape ws;
    if (conv_winograd_s2(&g, &ws)) {
        if (bias)
            fill_planes(y, g.N, g.Ci, g.H * g.W, bias);
        if (tg_winograd_s2_backward(&ws, NULL, w, x, y, !bias, NULL))
            return;
    }
    conv_dgrad(&g, w, x, y, true, bias, n->scratch);
}

TG_ISA_KERNEL(conv_transpose2d_backward, (tg_node * n), (n))
{
    conv_geom g;
    conv_transpose2d_geom(n, &g);
    const float *x = n->in[0]->data, *w = n->in[1]->data, *dy = n->out->grad->data;
    float *dx = tg_grad_of(n, 0), *dw = tg_grad_of(n, 1);
    float *db = n->n_in > 2 ? tg_grad_of(n, 2) : NULL;
    /* Fresh gradients, as in conv2d_backward: dw and db zeroed and accumulated, dx assigned
     * by its product (the zero fill of G's last activation gradient was 6 MB of its own). */
    const bool dx_set = dx && tg_grad_fresh(n, 0);
    zero_fresh(n, 1, dw, n->in[1]->numel);
    zero_fresh(n, 2, db, g.Ci);
    if (db)
        channel_sums(dy, g.N, g.Ci, g.H * g.W, db);
    if ((!dx && !dw) || conv_transpose2d_empty(&g) || n->in[0]->numel == 0) {
        zero_fresh(n, 0, dx, n->in[0]->numel);
        return; /* no output, or an empty x: nothing flows back into x or w */
    }
    /* The stride-2 Winograd path: dx is conv2d(dy, w), dw the weight gradient of the conv2d
     * whose image is dy and whose output gradient is x. Each part the path cannot take (no
     * memory) is left to the lowering below. */
    tg_wino_shape ws;
    if (conv_winograd_s2(&g, &ws)) {
        if (dw && tg_winograd_s2_backward(&ws, dy, w, x, NULL, false, dw))
            dw = NULL;
        if (dx && convt_s2_dx(&ws, dy, w, dx, dx_set))
            dx = NULL;
        if (!dx && !dw)
            return;
    }
    /* Working space only, as in conv2d_backward. */
    float *cols = n->scratch, *F = conv_flat_buf(&g, n->scratch);
    const int64_t x_img = g.Co * g.P, y_img = g.Ci * g.H * g.W;
    for (int64_t b0 = 0; b0 < g.N; b0 += g.chunk) {
        int64_t B = min64(g.chunk, g.N - b0);
        conv_cols cc = conv_cols_of(&g, dy + b0 * y_img, B, cols);
        if (dw) {
            const float *xF = flat_operand(&g, B, x + b0 * x_img, F);
            backward_units(&g, B, xF, &cc, dw, NULL, NULL, NULL);
        }
        /* F is free again: the weight gradient is done with it. */
        if (dx)
            gemm_flat_from_cols(&g, B, w, &cc, F, dx + b0 * x_img, !dx_set, NULL);
    }
}

/* Second order, with recorded ops: dx = conv2d(dy, w); dw = conv2d_weight_grad(dy, x), the
 * weight gradient of the conv2d whose input is dy and whose output gradient is x ([C, O, kh,
 * kw] as w); db = dy summed over N, Hy, Wy. */
static tg_status conv_transpose2d_backward_graph(tg_node *n, tg_tensor *gout, uint32_t need,
                                                 tg_tensor **gin)
{
    tg_tensor *x = n->in[0], *w = n->in[1];
    const conv_params *p = TG_PARAMS(n, conv_params);
    if (gout->numel == 0)
        return TG_OK;
    if (x->numel > 0 && tg_graph_needs(need, 0) &&
        !(gin[0] = tg_conv2d(gout, w, TG_NONE, p->stride, p->padding, p->dilation)))
        return tg_last_status();
    if (x->numel > 0 && tg_graph_needs(need, 1) &&
        !(gin[1] = conv2d_weight_grad(gout, x, p, w->shape[2], w->shape[3])))
        return tg_last_status();
    if (n->n_in > 2 && tg_graph_needs(need, 2) && !(gin[2] = conv_bias_grad(gout)))
        return tg_last_status();
    return TG_OK;
}

#define CONVT(s, p, op)                                                                            \
    TG_CASE_PARAMS(conv_params, .stride = s, .padding = p, .dilation = 1, .output_padding = op,    \
                   .output_padding_w = op)
static const tg_case conv_transpose2d_cases[] = {
    {.shape = {{2, 3, 4, 4}, {3, 2, 3, 3}, {2}}, .n_in = 3, CONVT(2, 1, 1), .name = "s2_p1_op1"},
    /* The GAN generator's upsampling layer. */
    {.shape = {{2, 3, 3, 3}, {3, 2, 4, 4}, {2}}, .n_in = 3, CONVT(2, 1, 0), .name = "k4_s2_p1"},
    {.shape = {{2, 2, 4, 4}, {2, 3, 3, 3}}, .n_in = 2, CONVT(1, 0, 0), .name = "no_bias"},
    {.shape = {{1, 2, 3, 4}, {2, 3, 2, 3}, {3}},
     .n_in = 3,
     CONVT(3, 1, 2),
     .name = "one_image_rect_kernel"},
    /* Only conv2d's data gradient makes these (conv2d_data_grad): a dilation, and H and W
     * with different output paddings. */
    {.shape = {{2, 2, 3, 4}, {2, 3, 3, 3}},
     .n_in = 2,
     TG_CASE_PARAMS(conv_params, .stride = 2, .padding = 1, .dilation = 2, .output_padding = 0,
                    .output_padding_w = 1),
     .name = "dilation2_output_padding_0_1"},
    {0},
};
#undef CONVT
TG_OP_DEFINE(conv_transpose2d) = {.name = "conv_transpose2d",
                                  .n_in = -1,
                                  .check = conv_transpose2d_check,
                                  .forward = conv_transpose2d_forward,
                                  .backward = conv_transpose2d_backward,
                                  .backward_graph = conv_transpose2d_backward_graph,
                                  .cases = conv_transpose2d_cases,
                                  .fresh_grads = true};

#if TG_ISA_BASE
tg_tensor *tg_conv_transpose2d(tg_tensor *x, tg_tensor *w, tg_tensor *b, int stride, int padding,
                               int output_padding)
{
    conv_params p = {.stride = stride,
                     .padding = padding,
                     .dilation = 1,
                     .output_padding = output_padding,
                     .output_padding_w = output_padding};
    if (!tg_optional_ok("tg_conv_transpose2d", "b", b))
        return NULL;
    tg_tensor *in[3] = {x, w, b};
    return tg_apply(&tg_op_conv_transpose2d, &p, sizeof p, b != TG_NONE ? 3 : 2, in);
}
#endif
