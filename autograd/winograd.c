/* Winograd convolutions: conv2d's forward and both gradients for stride 1, dilation 1 and a
 * square 3x3 or 5x5 kernel (autograd/conv.c calls them where tg_winograd_applies).
 *
 * F(m x m, r x r) with tiles of t = 6 inputs per side (m = 7 - r outputs: F(4x4, 3x3) and
 * F(2x2, 5x5)), one set of interpolation points (0, 1, -1, 2, -2, infinity), so both share the
 * input transform B. The matrices come from the points (tg_winograd_matrices, Toom-Cook), with
 * the Lagrange denominators in G, so that B and A hold small integers, exact in float, and
 * only the weight transform, done once per call in double, holds fractions. In 1-D,
 * y = A^T ((G g) .* (B^T d)); in 2-D, per 6 x 6 input tile d at tile stride m:
 *   U[xi][co][ci] = G w G^T     V[xi][ci][p] = B^T d B     Z[xi][co][p] = A dy A^T
 *   forward:      M[xi] = U[xi] @ V[xi],      y  = A^T M A (+ bias), per (co, tile)
 *   data grad:    dV[xi] = U[xi]^T @ Z[xi],   dx += B dV B^T, overlap-added (tiles overlap
 *                                             by r - 1) inside the image
 *   weight grad:  dU[xi] += Z[xi] @ V[xi]^T over the tiles,  dw += G^T dU G
 * with xi the 36 points of the 6 x 6 domain: 36 GEMMs where the lowering makes one, but 36
 * products per tile and channel pair instead of m*m*r*r (100 for 5x5, 144 for 3x3).
 *
 * Tiles are numbered through the batch (image, tile row, tile column) and go in chunks of ld
 * (a multiple of the GEMM's 32-column panels) whose V and M (or Z) stay in L2. The transforms
 * take 16 tiles at once, one per vector lane: a tile's values come from the image by masked
 * AVX-512 gathers (zeros in the padding) and go back by masked scatters, and the two 1-D
 * transforms are fused multiply-adds on registers (tile_product). The matrices are data, not
 * constants, so their zeros are multiplied too: 432 FMAs per 16 tiles and channel for B.
 * Threads take contiguous images (a team, each GEMM on one thread): y and dx are the same bit
 * for bit at any thread count (each tile's sums do not depend on its chunk, and each dx element
 * gets its terms in an order fixed by the tile numbers, WINO_LANES); dw sums a partial per
 * thread, added in thread order, so it depends on the team's size only.
 * Costs on G's 5x5 layer (1 thread, forward + backward 140 ms): the GEMMs about 60%, the
 * input transform (twice: forward and weight gradient) 15%, the data gradient's 12%. */
#include "winograd.h"
#include "internal.h"

#include "../tensor/parallel.h"

#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

/* V plus M (or Z) of a chunk: the lanes per chunk are as many as fit, in whole GEMM panels.
 * On G's 5x5 layer (bench_conv's shape, 1 thread, CPU time) 1 MB (32 lanes) ran forward +
 * backward in 165 ms, 2 MB in 149, 3 MB in 144, 4 and 8 MB in 144 and 143; D's 3x3 layer
 * 35.8, 32.8, 32.9, 34.6, 37.5. At 2 threads (CPU time) 3 MB too. */
#define WINO_CHUNK_BYTES ((int64_t)3 << 20)
/* Below these sizes the transforms cost more than the 36 GEMMs save. Batch 128, 1 thread,
 * forward + backward against the lowering: 16 -> 16 channels, 3x3 on 28x28, 18.5 ms vs 17.3;
 * 5x5 on 14x14, 14.5 vs 10.5; 16 -> 64, 3x3, 12.4 vs 11.7; 32 -> 32, 3x3 on 28x28, 34 vs 52;
 * 5x5 on 14x14, 26 vs 31; 32 -> 64, 3x3 on 13x13, 10 vs 15. */
#define WINO_MIN_CHANNELS 32
#define WINO_MIN_OUT 4
#define WINO_XI (TG_WINO_T * TG_WINO_T)

#if TG_ISA_BASE
int tg_conv_winograd = 1;

/* Coefficients of prod over l in [0, n), l != skip, of (x - a[l]), lowest first: n + 1 of them
 * (the top one 0 when a factor is skipped). */
static void poly_of_roots(const double *a, int n, int skip, double *c)
{
    memset(c, 0, (size_t)(n + 1) * sizeof(double));
    c[0] = 1.0;
    int deg = 0;
    for (int l = 0; l < n; l++) {
        if (l == skip)
            continue;
        deg++;
        for (int q = deg; q >= 0; q--)
            c[q] = (q > 0 ? c[q - 1] : 0.0) - a[l] * c[q];
    }
}

bool tg_winograd_matrices(int r, double *A, double *B, double *G)
{
    if (r != 3 && r != 5)
        return false;
    enum { T = TG_WINO_T, NF = TG_WINO_T - 1 };
    static const double a[NF] = {0.0, 1.0, -1.0, 2.0, -2.0};
    const int m = T + 1 - r;
    double c[T + 1];
    /* Finite points: rows of values a^i (A) and a^k / f (G), with f = prod (a_j - a_l); the
     * columns of B are the polynomials f * L_j, L_j the Lagrange basis. */
    for (int j = 0; j < NF; j++) {
        double f = 1.0;
        for (int l = 0; l < NF; l++)
            f *= l == j ? 1.0 : a[j] - a[l];
        double p = 1.0;
        for (int i = 0; i < T; i++, p *= a[j]) {
            if (i < m)
                A[j * m + i] = p;
            if (i < r)
                G[j * r + i] = p / f;
        }
        poly_of_roots(a, NF, j, c);
        for (int q = 0; q < T; q++)
            B[q * T + j] = c[q];
    }
    /* The point at infinity: the leading coefficients, and the polynomial of all the roots
     * (the product of the polynomials minus its leading term vanishes at every finite point). */
    for (int i = 0; i < m; i++)
        A[NF * m + i] = i == m - 1;
    for (int k = 0; k < r; k++)
        G[NF * r + k] = k == r - 1;
    poly_of_roots(a, NF, -1, c);
    for (int q = 0; q < T; q++)
        B[q * T + NF] = c[q];
    return true;
}

bool tg_winograd_applies(int64_t N, int64_t Ci, int64_t H, int64_t W, int64_t Co, int64_t Ho,
                         int64_t Wo, int64_t kh, int64_t kw, int64_t stride, int64_t pad,
                         int64_t dil)
{
    (void)N, (void)H, (void)W;
    return tg_conv_winograd && stride == 1 && dil == 1 && kh == kw && (kh == 3 || kh == 5) &&
           pad >= 0 && pad < kh && Ci >= WINO_MIN_CHANNELS && Co >= WINO_MIN_CHANNELS &&
           Ho >= WINO_MIN_OUT && Wo >= WINO_MIN_OUT && tg_sgemm_avx512_active();
}
#endif

/* The transforms, each as the left and right factor of a product L d R of one tile: B^T and
 * B (input), A^T and A (output), A and A^T (output gradient), B and B^T (data gradient), in
 * float; G [6, r] in double for the weights; m = 7 - r. */
typedef struct {
    int m, r;
    float BT[WINO_XI], B[WINO_XI];             /* [6, 6] */
    float AT[TG_WINO_T * 4], A[TG_WINO_T * 4]; /* [m, 6] and [6, m] */
    double G[TG_WINO_T * 5];
} wino_mats;

/* One call's work, shared by its team. Every thread has per_thread floats of work at
 * work + t * per_thread: its chunk's tile offsets and masks (4 * ld floats' room, wino_part),
 * V [36, Ci, ld] and M or Z [36, Co, ld]. */
typedef struct {
    tg_wino_shape s;
    wino_mats mt;
    int64_t Th, Tw, T; /* tiles per image: rows, columns, all */
    int64_t ld;        /* lanes (tiles) per chunk */
    int team;
    const float *x, *w, *bias, *dy;
    float *y, *dx, *dw;
    bool dx_set;
    float *U;  /* [36, Co, Ci] */
    float *dU; /* [team, 36, Co, Ci] */
    float *work;
    int64_t per_thread;
} wino_run;

/* Lanes go in groups of 16, one vector each. Groups sit at multiples of 16 of the tile number
 * through the batch, whatever the chunk (lanes of other threads' or no tiles are masked off),
 * so the data gradient's overlap-adds, group after group, come in the same order at any
 * thread count. */
#define WINO_LANES 16
/* GCC warns that a 64-byte vector returned by value changes the ABI where AVX-512 is off (the
 * baseline and AVX2 compilations): only static, inlined functions here return one. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
typedef float wino_vec __attribute__((vector_size(WINO_LANES * sizeof(float))));

/* A thread's chunk: tiles [qs, qe) through the batch, qs a multiple of 16. Per lane, the
 * offset of its tile's first input (xo, from xb: may point into the padding) and first output
 * (yo, from yb); per group, the masks of the lanes whose input (i, k) is inside the image
 * (xm [36]) and whose output (a, b) is inside the output (ym [m*m]). */
typedef struct {
    int32_t *xo, *yo;
    uint16_t *xm, *ym;
    float *V, *Z;
    int64_t qs, qe, groups;
    int64_t b0; /* the image that xb and yb start at */
} wino_part;

static wino_part part_of(const wino_run *c, int t)
{
    float *base = c->work + (int64_t)t * c->per_thread;
    const int64_t ld = c->ld;
    wino_part pt = {.xo = (int32_t *)base, .yo = (int32_t *)base + ld};
    pt.xm = (uint16_t *)(pt.yo + ld);
    pt.ym = pt.xm + ld / WINO_LANES * WINO_XI;
    pt.V = base + 4 * ld;
    pt.Z = pt.V + WINO_XI * c->s.Ci * ld;
    return pt;
}

/* Sets up the chunk [qs, qe) with its tiles from q_lo on (lanes before it are masked off). */
static void chunk_tiles(const wino_run *c, wino_part *pt, int64_t qs, int64_t qe, int64_t q_lo)
{
    const int64_t m = c->mt.m, H = c->s.H, W = c->s.W, Ho = c->s.Ho, Wo = c->s.Wo;
    const int64_t pad = c->s.pad, ximg = c->s.Ci * H * W, yimg = c->s.Co * Ho * Wo;
    pt->qs = qs;
    pt->qe = qe;
    pt->groups = (qe - qs + WINO_LANES - 1) / WINO_LANES;
    pt->b0 = q_lo / c->T;
    memset(pt->xm, 0, (size_t)(pt->groups * WINO_XI) * sizeof(uint16_t));
    memset(pt->ym, 0, (size_t)(pt->groups * m * m) * sizeof(uint16_t));
    for (int64_t l = 0; l < pt->groups * WINO_LANES; l++) {
        const int64_t q = qs + l, g = l / WINO_LANES;
        const uint16_t bit = (uint16_t)(1u << (l % WINO_LANES));
        pt->xo[l] = pt->yo[l] = 0;
        if (q < q_lo || q >= qe)
            continue;
        const int64_t b = q / c->T, rem = q % c->T;
        const int64_t oh = rem / c->Tw * m, ow = rem % c->Tw * m;
        pt->xo[l] = (int32_t)((b - pt->b0) * ximg + (oh - pad) * W + ow - pad);
        pt->yo[l] = (int32_t)((b - pt->b0) * yimg + oh * Wo + ow);
        for (int i = 0; i < TG_WINO_T; i++)
            for (int k = 0; k < TG_WINO_T; k++)
                if (oh - pad + i >= 0 && oh - pad + i < H && ow - pad + k >= 0 && ow - pad + k < W)
                    pt->xm[g * WINO_XI + i * TG_WINO_T + k] |= bit;
        for (int a = 0; a < m; a++)
            for (int k = 0; k < m; k++)
                if (oh + a < Ho && ow + k < Wo)
                    pt->ym[g * m * m + a * m + k] |= bit;
    }
}

/* The lanes of mask from base[off[l] + add], 0 elsewhere. */
static inline __attribute__((always_inline)) wino_vec
vec_gather(const float *base, const int32_t *off, int64_t add, uint16_t mask)
{
#if defined(__AVX512F__)
    const __m512i idx = _mm512_add_epi32(_mm512_load_si512(off), _mm512_set1_epi32((int)add));
    return (wino_vec)_mm512_mask_i32gather_ps(_mm512_setzero_ps(), mask, idx, base, 4);
#else
    wino_vec v;
    for (int l = 0; l < WINO_LANES; l++)
        v[l] = mask >> l & 1 ? base[off[l] + add] : 0.0f;
    return v;
#endif
}

/* base[off[l] + add] = v[l] for the lanes of mask. */
static inline __attribute__((always_inline)) void
vec_scatter(float *base, const int32_t *off, int64_t add, uint16_t mask, wino_vec v)
{
#if defined(__AVX512F__)
    const __m512i idx = _mm512_add_epi32(_mm512_load_si512(off), _mm512_set1_epi32((int)add));
    _mm512_mask_i32scatter_ps(base, mask, idx, (__m512)v, 4);
#else
    for (int l = 0; l < WINO_LANES; l++)
        if (mask >> l & 1)
            base[off[l] + add] = v[l];
#endif
}

/* out[a][b] = sum over i, k of L[a][i] in[i][k] R[k][b], for L [na, ni] and R [nk, nb]: one
 * tile transform of every lane, right factor first. Inlined with constant sizes, so the loops
 * unroll into fused multiply-adds on registers. */
static inline __attribute__((always_inline)) void tile_product(int na, int ni, int nk, int nb,
                                                               const float *L, const wino_vec *in,
                                                               const float *R, wino_vec *out)
{
    wino_vec t[TG_WINO_T * TG_WINO_T];
#pragma GCC unroll 6
    for (int i = 0; i < ni; i++)
#pragma GCC unroll 6
        for (int b = 0; b < nb; b++) {
            wino_vec acc = in[i * nk] * R[b];
#pragma GCC unroll 6
            for (int k = 1; k < nk; k++)
                acc += in[i * nk + k] * R[k * nb + b];
            t[i * nb + b] = acc;
        }
#pragma GCC unroll 6
    for (int a = 0; a < na; a++)
#pragma GCC unroll 6
        for (int b = 0; b < nb; b++) {
            wino_vec acc = L[a * ni] * t[b];
#pragma GCC unroll 6
            for (int i = 1; i < ni; i++)
                acc += L[a * ni + i] * t[i * nb + b];
            out[a * nb + b] = acc;
        }
}

/* V[:, ch, chunk] = B^T d B for the chunk's tiles d of x's channel ch. */
static void input_transform(const wino_run *c, const wino_part *pt, int64_t ch)
{
    const int64_t ld = c->ld, W = c->s.W, vs = c->s.Ci * ld;
    const float *xb = c->x + (pt->b0 * c->s.Ci + ch) * c->s.H * W;
    for (int64_t g = 0; g < pt->groups; g++) {
        const int32_t *off = pt->xo + g * WINO_LANES;
        const uint16_t *mask = pt->xm + g * WINO_XI;
        wino_vec d[WINO_XI], v[WINO_XI];
        for (int i = 0; i < TG_WINO_T; i++)
            for (int k = 0; k < TG_WINO_T; k++)
                d[i * TG_WINO_T + k] = vec_gather(xb, off, i * W + k, mask[i * TG_WINO_T + k]);
        tile_product(6, 6, 6, 6, c->mt.BT, d, c->mt.B, v);
        float *dst = pt->V + ch * ld + g * WINO_LANES;
        for (int xi = 0; xi < WINO_XI; xi++)
            *(wino_vec *)(dst + xi * vs) = v[xi];
    }
}

/* y's channel co from M[:, co, chunk]: A^T M A + bias, inside the output plane. */
static inline __attribute__((always_inline)) void
output_transform_m(const wino_run *c, const wino_part *pt, int64_t co, int m)
{
    const int64_t ld = c->ld, Wo = c->s.Wo, ms = c->s.Co * ld;
    float *yb = c->y + (pt->b0 * c->s.Co + co) * c->s.Ho * Wo;
    const float bias = c->bias ? c->bias[co] : 0.0f;
    for (int64_t g = 0; g < pt->groups; g++) {
        const int32_t *off = pt->yo + g * WINO_LANES;
        const uint16_t *mask = pt->ym + g * m * m;
        const float *src = pt->Z + co * ld + g * WINO_LANES;
        wino_vec M[WINO_XI], y[16];
        for (int xi = 0; xi < WINO_XI; xi++)
            M[xi] = *(const wino_vec *)(src + xi * ms);
        tile_product(m, 6, 6, m, c->mt.AT, M, c->mt.A, y);
        for (int a = 0; a < m; a++)
            for (int b = 0; b < m; b++)
                vec_scatter(yb, off, a * Wo + b, mask[a * m + b], y[a * m + b] + bias);
    }
}

static void output_transform(const wino_run *c, const wino_part *pt, int64_t co)
{
    if (c->mt.m == 2)
        output_transform_m(c, pt, co, 2);
    else
        output_transform_m(c, pt, co, 4);
}

/* Z[:, co, chunk] = A e A^T for the chunk's m x m tiles e of dy's channel co (zeros past the
 * output's edge). */
static inline __attribute__((always_inline)) void
grad_transform_m(const wino_run *c, const wino_part *pt, int64_t co, int m)
{
    const int64_t ld = c->ld, Wo = c->s.Wo, zs = c->s.Co * ld;
    const float *dyb = c->dy + (pt->b0 * c->s.Co + co) * c->s.Ho * Wo;
    for (int64_t g = 0; g < pt->groups; g++) {
        const int32_t *off = pt->yo + g * WINO_LANES;
        const uint16_t *mask = pt->ym + g * m * m;
        wino_vec e[16], z[WINO_XI];
        for (int a = 0; a < m; a++)
            for (int b = 0; b < m; b++)
                e[a * m + b] = vec_gather(dyb, off, a * Wo + b, mask[a * m + b]);
        tile_product(6, m, m, 6, c->mt.A, e, c->mt.AT, z);
        float *dst = pt->Z + co * ld + g * WINO_LANES;
        for (int xi = 0; xi < WINO_XI; xi++)
            *(wino_vec *)(dst + xi * zs) = z[xi];
    }
}

static void grad_transform(const wino_run *c, const wino_part *pt, int64_t co)
{
    if (c->mt.m == 2)
        grad_transform_m(c, pt, co, 2);
    else
        grad_transform_m(c, pt, co, 4);
}

/* dx's channel ch += B dV B^T for dV = V[:, ch, chunk], inside the image: group after group,
 * (i, k) after (i, k) (see WINO_LANES). */
static void data_transform(const wino_run *c, const wino_part *pt, int64_t ch)
{
    const int64_t ld = c->ld, W = c->s.W, vs = c->s.Ci * ld;
    float *dxb = c->dx + (pt->b0 * c->s.Ci + ch) * c->s.H * W;
    for (int64_t g = 0; g < pt->groups; g++) {
        const int32_t *off = pt->xo + g * WINO_LANES;
        const uint16_t *mask = pt->xm + g * WINO_XI;
        const float *src = pt->V + ch * ld + g * WINO_LANES;
        wino_vec dv[WINO_XI], dd[WINO_XI];
        for (int xi = 0; xi < WINO_XI; xi++)
            dv[xi] = *(const wino_vec *)(src + xi * vs);
        tile_product(6, 6, 6, 6, c->mt.B, dv, c->mt.BT, dd);
        for (int i = 0; i < TG_WINO_T; i++)
            for (int k = 0; k < TG_WINO_T; k++) {
                const int64_t add = i * W + k;
                const uint16_t mk = mask[i * TG_WINO_T + k];
                if (mk)
                    vec_scatter(dxb, off, add, mk,
                                vec_gather(dxb, off, add, mk) + dd[i * TG_WINO_T + k]);
            }
    }
}

/* U[:, co, :] = G w G^T for output channel co, in double. */
static void weight_transform(const wino_run *c, int64_t co)
{
    const int r = c->mt.r;
    const int64_t Ci = c->s.Ci, Co = c->s.Co;
    const double *G = c->mt.G;
    for (int64_t ci = 0; ci < Ci; ci++) {
        const float *wk = c->w + (co * Ci + ci) * r * r;
        double t[TG_WINO_T][5];
        for (int a = 0; a < TG_WINO_T; a++)
            for (int k = 0; k < r; k++) {
                double acc = 0.0;
                for (int h = 0; h < r; h++)
                    acc += G[a * r + h] * wk[h * r + k];
                t[a][k] = acc;
            }
        for (int a = 0; a < TG_WINO_T; a++)
            for (int b = 0; b < TG_WINO_T; b++) {
                double acc = 0.0;
                for (int k = 0; k < r; k++)
                    acc += t[a][k] * G[b * r + k];
                c->U[((a * TG_WINO_T + b) * Co + co) * Ci + ci] = (float)acc;
            }
    }
}

/* dw[co] += G^T dU G, dU the threads' partials added in thread order; in double after that. */
static void weight_grad_transform(const wino_run *c, int64_t co)
{
    const int r = c->mt.r;
    const int64_t Ci = c->s.Ci, Co = c->s.Co, part = WINO_XI * Co * Ci;
    const double *G = c->mt.G;
    for (int64_t ci = 0; ci < Ci; ci++) {
        double d[TG_WINO_T][TG_WINO_T], t[TG_WINO_T][5];
        for (int xi = 0; xi < WINO_XI; xi++) {
            const float *src = c->dU + (xi * Co + co) * Ci + ci;
            float sum = src[0];
            for (int th = 1; th < c->team; th++)
                sum += src[th * part];
            d[xi / TG_WINO_T][xi % TG_WINO_T] = sum;
        }
        for (int a = 0; a < TG_WINO_T; a++)
            for (int k = 0; k < r; k++) {
                double acc = 0.0;
                for (int b = 0; b < TG_WINO_T; b++)
                    acc += d[a][b] * G[b * r + k];
                t[a][k] = acc;
            }
        float *dwk = c->dw + (co * Ci + ci) * r * r;
        for (int h = 0; h < r; h++)
            for (int k = 0; k < r; k++) {
                double acc = 0.0;
                for (int a = 0; a < TG_WINO_T; a++)
                    acc += G[a * r + h] * t[a][k];
                dwk[h * r + k] += (float)acc;
            }
    }
}

/* Runs fn(c, co) for every output channel, in parallel where it pays. */
static void per_out_channel(const wino_run *c, void (*fn)(const wino_run *, int64_t))
{
    const int64_t Co = c->s.Co, per = c->s.Ci * WINO_XI * c->mt.r;
    if (!TG_PARALLEL_FORK(Co, per)) {
        for (int64_t co = 0; co < Co; co++)
            fn(c, co);
        return;
    }
    TG_PARALLEL_FOR_WORK(Co, per)
    for (int64_t co = 0; co < Co; co++)
        fn(c, co);
}

/* The chunks of thread t's tiles [q0, q1): from q0 rounded down to a group, ld lanes each. */
#define FOR_CHUNKS(c, pt, q0, q1)                                                                  \
    for (int64_t qs_ = (q0) / WINO_LANES * WINO_LANES; qs_ < (q1); qs_ += (c)->ld)                 \
        if (chunk_tiles((c), &(pt), qs_, qs_ + (c)->ld < (q1) ? qs_ + (c)->ld : (q1),              \
                        qs_ > (q0) ? qs_ : (q0)),                                                  \
            true)

/* The forward of thread t's images [b0, b1) (a tg_team_fn): their tiles [q0, q1). */
static void forward_part(void *ctx, int t, int64_t b0, int64_t b1)
{
    const wino_run *c = ctx;
    wino_part pt = part_of(c, t);
    const int64_t Ci = c->s.Ci, Co = c->s.Co, ld = c->ld, q0 = b0 * c->T, q1 = b1 * c->T;
    FOR_CHUNKS(c, pt, q0, q1)
    {
        for (int64_t ch = 0; ch < Ci; ch++)
            input_transform(c, &pt, ch);
        for (int xi = 0; xi < WINO_XI; xi++)
            tg_sgemm_avx512(false, false, Co, pt.qe - pt.qs, Ci, 1.0f, c->U + xi * Co * Ci, Ci,
                            pt.V + xi * Ci * ld, ld, 0.0f, pt.Z + xi * Co * ld, ld);
        for (int64_t co = 0; co < Co; co++)
            output_transform(c, &pt, co);
    }
}

/* The backward of thread t's images [b0, b1) (a tg_team_fn), dw into its partial dU. */
static void backward_part(void *ctx, int t, int64_t b0, int64_t b1)
{
    const wino_run *c = ctx;
    wino_part pt = part_of(c, t);
    const int64_t Ci = c->s.Ci, Co = c->s.Co, ld = c->ld, q0 = b0 * c->T, q1 = b1 * c->T;
    float *dU = c->dw ? c->dU + t * WINO_XI * Co * Ci : NULL;
    if (dU)
        memset(dU, 0, (size_t)(WINO_XI * Co * Ci) * sizeof(float));
    if (c->dx && c->dx_set) {
        const int64_t img = Ci * c->s.H * c->s.W;
        memset(c->dx + b0 * img, 0, (size_t)((b1 - b0) * img) * sizeof(float));
    }
    FOR_CHUNKS(c, pt, q0, q1)
    {
        const int64_t np = pt.qe - pt.qs;
        for (int64_t co = 0; co < Co; co++)
            grad_transform(c, &pt, co);
        if (dU) {
            for (int64_t ch = 0; ch < Ci; ch++)
                input_transform(c, &pt, ch);
            for (int xi = 0; xi < WINO_XI; xi++)
                tg_sgemm_avx512(false, true, Co, Ci, np, 1.0f, pt.Z + xi * Co * ld, ld,
                                pt.V + xi * Ci * ld, ld, 1.0f, dU + xi * Co * Ci, Ci);
        }
        if (c->dx) {
            /* dV goes where V was: the weight gradient's GEMMs have read it. */
            for (int xi = 0; xi < WINO_XI; xi++)
                tg_sgemm_avx512(true, false, Ci, np, Co, 1.0f, c->U + xi * Co * Ci, Ci,
                                pt.Z + xi * Co * ld, ld, 0.0f, pt.V + xi * Ci * ld, ld);
            for (int64_t ch = 0; ch < Ci; ch++)
                data_transform(c, &pt, ch);
        }
    }
}

TG_ISA_KERNEL(wino_forward_kernel, (wino_run * c), (c))
{
    per_out_channel(c, weight_transform);
    tg_team_run(c->team, c->s.N, forward_part, c);
}

TG_ISA_KERNEL(wino_backward_kernel, (wino_run * c), (c))
{
    if (c->dx)
        per_out_channel(c, weight_transform);
    tg_team_run(c->team, c->s.N, backward_part, c);
    if (c->dw)
        per_out_channel(c, weight_grad_transform);
}

#if TG_ISA_BASE
/* Frees what wino_setup allocated (any of it NULL). */
static void wino_release(wino_run *c)
{
    const size_t u = (size_t)(WINO_XI * c->s.Co * c->s.Ci) * sizeof(float);
    tg_free(c->work, (size_t)(c->per_thread * c->team) * sizeof(float));
    tg_free(c->U, u);
    tg_free(c->dU, u * (size_t)c->team);
}

/* Sets up c for s (its team, chunk and buffers: U always, the partials when dw); false, with
 * nothing held, when a size overflows or memory runs out. */
static bool wino_setup(wino_run *c, const tg_wino_shape *s, bool with_u, bool with_du)
{
    memset(c, 0, sizeof *c);
    c->s = *s;
    double A[TG_WINO_T * 4], B[WINO_XI];
    if (!tg_winograd_matrices(s->r, A, B, c->mt.G))
        return false;
    c->mt.r = s->r;
    c->mt.m = TG_WINO_T + 1 - s->r;
    const int64_t m = c->mt.m;
    for (int j = 0; j < TG_WINO_T; j++) {
        for (int i = 0; i < m; i++)
            c->mt.AT[i * TG_WINO_T + j] = c->mt.A[j * m + i] = (float)A[j * m + i];
        for (int i = 0; i < TG_WINO_T; i++)
            c->mt.BT[i * TG_WINO_T + j] = c->mt.B[j * TG_WINO_T + i] = (float)B[j * TG_WINO_T + i];
    }
    c->Th = (s->Ho + m - 1) / m;
    c->Tw = (s->Wo + m - 1) / m;
    int64_t chans, per_lane, ucount, per_thread;
    if (__builtin_mul_overflow(c->Th, c->Tw, &c->T) ||
        __builtin_add_overflow(s->Ci, s->Co, &chans) ||
        __builtin_mul_overflow(chans, (int64_t)WINO_XI * 4, &per_lane) ||
        __builtin_mul_overflow(s->Co, s->Ci, &ucount) ||
        __builtin_mul_overflow(ucount, (int64_t)WINO_XI, &ucount))
        return false;
    const int threads = TG_IN_PARALLEL() ? 1 : tg_get_num_threads();
    c->team = (int)(s->N < threads ? s->N : threads);
    /* Lanes: what fits the budget in whole panels, at most a thread's tiles rounded up. */
    int64_t tiles = (s->N + c->team - 1) / c->team * c->T;
    int64_t ld = WINO_CHUNK_BYTES / per_lane / TG_GEMM_NR * TG_GEMM_NR;
    ld = ld < TG_GEMM_NR ? TG_GEMM_NR : ld;
    if (tiles < ld)
        ld = (tiles + TG_GEMM_NR - 1) / TG_GEMM_NR * TG_GEMM_NR;
    c->ld = ld;
    /* The tiles' offsets are int32 from the chunk's first image: a chunk's images (and the
     * padding before them) must be fewer than 2^31 floats. */
    const int64_t img =
        s->Ci * s->H * s->W > s->Co * s->Ho * s->Wo ? s->Ci * s->H * s->W : s->Co * s->Ho * s->Wo;
    if ((ld + WINO_LANES) / c->T + 2 > INT32_MAX / 2 / img)
        return false;
    /* Offsets and masks, V and M or Z. */
    if (__builtin_mul_overflow(chans, (int64_t)WINO_XI, &per_thread) ||
        __builtin_add_overflow(per_thread, (int64_t)4, &per_thread) ||
        __builtin_mul_overflow(per_thread, ld, &c->per_thread) ||
        c->per_thread > INT64_MAX / 4 / c->team || ucount > INT64_MAX / 4 / c->team)
        return false;
    c->work = tg_try_alloc((size_t)(c->per_thread * c->team) * sizeof(float));
    c->U = c->work && with_u ? tg_try_alloc((size_t)ucount * sizeof(float)) : NULL;
    c->dU = c->work && with_du ? tg_try_alloc((size_t)(ucount * c->team) * sizeof(float)) : NULL;
    if (c->work && (c->U || !with_u) && (c->dU || !with_du))
        return true;
    wino_release(c);
    return false;
}

bool tg_winograd_forward(const tg_wino_shape *s, const float *x, const float *w, const float *bias,
                         float *y)
{
    wino_run c;
    if (s->N == 0 || !wino_setup(&c, s, true, false))
        return false;
    c.x = x, c.w = w, c.bias = bias, c.y = y;
    wino_forward_kernel(&c);
    wino_release(&c);
    return true;
}

bool tg_winograd_backward(const tg_wino_shape *s, const float *x, const float *w, const float *dy,
                          float *dx, bool dx_set, float *dw)
{
    wino_run c;
    if (s->N == 0 || (!dx && !dw) || !wino_setup(&c, s, dx != NULL, dw != NULL))
        return false;
    c.x = x, c.w = w, c.dy = dy, c.dx = dx, c.dw = dw, c.dx_set = dx_set;
    wino_backward_kernel(&c);
    wino_release(&c);
    return true;
}
#endif
