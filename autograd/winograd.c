/* Winograd convolutions: conv2d's forward and both gradients for stride 1, dilation 1 and a
 * square 3x3 or 5x5 kernel (autograd/conv.c calls them where tg_winograd_applies), and for a
 * 4x4 kernel at stride 2 as a 2x2 one at stride 1 over the input's four phases (the end of this
 * file; tg_winograd_s2_applies), which conv_transpose2d's k4 s2 layers run backwards.
 *
 * F(m x m, r x r): m outputs per side from tiles of t = m + r - 1 inputs, F(4x4, 2x2) on
 * 5 x 5 tiles, F(4x4, 3x3) on 6 x 6, F(4x4, 5x5) and F(6x6, 3x3) on 8 x 8 ones (a 3x3 layer
 * takes F(6x6) where its output needs fewer points so: tg_winograd_out_tile; D's 11 x 11
 * output, 4 tiles of 64 points against 9 of 36, its layer forward + backward 33.5 -> 28.6 ms,
 * bench_conv at 1 thread, 3 interleaved rounds). The interpolation points are
 * 0, 1, -1, 2 (and -2 for t >= 6, 1/2 and -1/2 for t = 8) and infinity; the matrices come from
 * the points (winograd_matrices.c, Toom-Cook), with the Lagrange denominators in G, so that B
 * and A hold binary fractions (small integers for t = 5 and 6, quarters for t = 8, and in
 * F(6x6, 3x3)'s A powers of two from 1/32 to 32), exact in float, and only the weight
 * transform, done once per call in double, holds other fractions.
 * In 1-D,
 * y = A^T ((G g) .* (B^T d)); in 2-D, per t x t input tile d at tile stride m:
 *   U[xi][co][ci] = G w G^T     V[xi][ci][p] = B^T d B     Z[xi][co][p] = A dy A^T
 *   forward:      M[xi] = U[xi] @ V[xi],      y  = A^T M A (+ bias), per (co, tile)
 *   data grad:    dV[xi] = U[xi]^T @ Z[xi],   dx += B dV B^T, overlap-added (tiles overlap
 *                                             by r - 1) inside the image
 *   weight grad:  dU[xi] += Z[xi] @ V[xi]^T over the tiles,  dw += G^T dU G
 * with xi the t * t points of the tile's domain: t * t GEMMs where the lowering makes one, but
 * t * t products per tile and channel pair instead of m m r r (36 for 144 with 3x3, 64 for 400
 * with 5x5, 64 for 324 with F(6x6, 3x3)). Until 2026-12-06 5x5 ran F(2x2, 5x5) on 6 x 6 tiles
 * (36 for 100); on G's layer (14 x 14 outputs: 16 tiles of 8 x 8 against 49 of 6 x 6 a channel
 * pair) F(4x4, 5x5) does 58% of its multiplications. Its error in float, measured in numpy
 * for the same points over 128-channel sums of N(0, 1) data, is within 2x of F(2x2, 5x5)'s
 * (median 4.9e-6 against 2.6e-6 of the largest output, worst 1.5e-5 for both), as is F(4x4,
 * 3x3)'s (2.5e-6).
 *
 * The transforms take 16 tiles at once, one per vector lane, and the lanes are 16 images at the
 * same tile position (a group of images; WINO_LANES): the columns of V, M and Z are numbered
 * (group, tile position, image in group). Each group's images are first copied lanes minor,
 * [Ci][Hp][Wp][16] with the padding as zeros (to_lanes, 16 x 16 register transposes), and so
 * is dy; y and dx's terms are made in such copies and transposed back. Every lane of a vector
 * then reads and writes at one offset: plain vector loads and stores, no masks, no gathers, and
 * the two 1-D transforms as fused multiply-adds on registers (tile_product), the zeros of B and
 * A left out (22 of B^T's 36 entries are nonzero for t = 6: 264 FMAs per 16 tiles and channel,
 * not 432; 44 of 64 for t = 8: 704, not 1024).
 * A group's columns go in equal chunks of at most WINO_CHUNK_GROW budgets (several whole groups
 * make a chunk where their tiles are few), each chunk's V and M (or Z) in L2 or near it.
 * Threads take contiguous groups (a team, each GEMM on one thread): y and dx are the same bit
 * for bit at any thread count (each lane's sums are its own image's, and each dx element gets
 * its terms in an order fixed by the tile positions); dw sums a partial per thread, added in
 * thread order, so it depends on the team's size only. A group short of 16 images (at the end
 * of the batch) costs a full one: a batch of 1 pays 16 times the GEMMs of its tiles.
 * Costs on G's 5x5 layer (bench_gan layers, 1 thread, forward + backward, CPU time at load
 * 10: 127-136 ms with F(2x2, 5x5), 98-114 with F(4x4, 5x5)): the GEMMs, with their packing,
 * now take about as long as the transforms and copies together (perf samples 29% against 31%
 * of the run: input transform 13.6%, the data gradient's 7.1%, dy's 3.9%, output 2.8%, the
 * copies 5.1%). The input transform waits on memory (its loads of the copy, its stores to V,
 * 64 of them a tile), not on its FMAs: unrolled whole, its 8 x 8 tile spilled registers, and
 * going row by row (tile_product) took it from 16% to 13.6%.
 * In FP32 mode the GEMMs take their operands in the kernel's layouts (tg_sgemm_avx512_ops):
 * U packed once a call (not once a chunk), V and Z written by the transforms in the kernel's
 * B panels; only the weight gradient's products still pack (their depth is the tiles, which
 * the transforms make vectors of). The same bits; docs/design.md, section 9. */
#include "winograd.h"
#include "internal.h"

#include "../tensor/parallel.h"

#include <string.h>

/* V plus M (or Z) of a chunk: whole groups of images a chunk as long as they fit, else a
 * group's columns in WINO_CHUNK_GROW times as much at most. Measured with the tiles through
 * the batch (gathers) on G's 5x5 layer (bench_conv's shape, 1 thread, CPU time): 1 MB (32
 * lanes) ran forward + backward in 165 ms, 2 MB in 149, 3 MB in 144, 4 and 8 MB in 144 and
 * 143; D's 3x3 layer 35.8, 32.8, 32.9, 34.6, 37.5. At 2 threads (CPU time) 3 MB too. */
#define WINO_CHUNK_BYTES ((int64_t)3 << 20)
/* With images in the lanes, a chunk covers a sixteenth of the tile positions it used to: its
 * tiles' overlap is read again by the next one and there are more GEMM calls. G's layer (1
 * thread, CPU time, forward + backward, medians of 3 at load 5 to 10) took 152 ms with 96
 * columns a chunk (3 MB), 140 with 208, 142 with 400 (2 chunks a group); D's 3x3 37.4 ms with
 * 96 and 35.6 with its group's 144 in one chunk. With F(4x4, 5x5) (64 points, a group 256
 * columns) G's layer took 107-109 ms with 4 budgets (one chunk a group: V and Z 12.6 MB a
 * thread), 110-114 with 2 (6.3 MB), 117-121 with 1; the GAN step's peak of live bytes, which
 * these buffers are part of (G's backward), was 322, 316 and 313 MiB at 1 thread: 2 it is. */
#define WINO_CHUNK_GROW 2
/* Below these sizes the transforms cost more than the 36 GEMMs save. Batch 128, 1 thread,
 * forward + backward against the lowering: 16 -> 16 channels, 3x3 on 28x28, 18.5 ms vs 17.3;
 * 5x5 on 14x14, 14.5 vs 10.5; 16 -> 64, 3x3, 12.4 vs 11.7; 32 -> 32, 3x3 on 28x28, 34 vs 52;
 * 5x5 on 14x14, 26 vs 31; 32 -> 64, 3x3 on 13x13, 10 vs 15. */
#define WINO_MIN_CHANNELS 32
#define WINO_MIN_OUT 4
#define WINO_XI_MAX (TG_WINO_TMAX * TG_WINO_TMAX)

#if TG_ISA_BASE
int tg_conv_winograd = 1;

/* The sizes that pay, for a stride-1 r x r convolution with r = 2, 3 or 5. */
static bool wino_pays(int64_t N, int64_t Ci, int64_t Co, int64_t Ho, int64_t Wo, int64_t r,
                      int64_t pad)
{
    /* A group of 16 lanes costs the same whatever images fill it: at most a quarter of the
     * lanes may be empty (batch 128 or 96: none; batch 1 would do 16x the GEMM work). */
    const int64_t empty = (16 - N % 16) % 16; /* WINO_LANES, defined below */
    return tg_conv_winograd && N > 0 && empty * 4 <= N && pad >= 0 && pad < r &&
           Ci >= WINO_MIN_CHANNELS && Co >= WINO_MIN_CHANNELS && Ho >= WINO_MIN_OUT &&
           Wo >= WINO_MIN_OUT && tg_sgemm_avx512_active();
}

bool tg_winograd_applies(int64_t N, int64_t Ci, int64_t H, int64_t W, int64_t Co, int64_t Ho,
                         int64_t Wo, int64_t kh, int64_t kw, int64_t stride, int64_t pad,
                         int64_t dil)
{
    (void)H, (void)W;
    return stride == 1 && dil == 1 && kh == kw && (kh == 3 || kh == 5) &&
           wino_pays(N, Ci, Co, Ho, Wo, kh, pad);
}

bool tg_winograd_s2_applies(int64_t N, int64_t Ci, int64_t Co, int64_t Ho, int64_t Wo, int64_t kh,
                            int64_t kw, int64_t stride, int64_t pad, int64_t dil)
{
    return stride == 2 && dil == 1 && kh == 4 && kw == 4 && pad >= 0 && pad < 4 &&
           Ci <= INT64_MAX / 4 && Ho < INT64_MAX && Wo < INT64_MAX &&
           wino_pays(N, 4 * Ci, Co, Ho, Wo, 2, 0);
}
#endif

/* The transforms, each as the left and right factor of a product L d R of one tile: B^T and
 * B (input), A^T and A (output), A and A^T (output gradient), B and B^T (data gradient), in
 * float; G [t, r] in double for the weights. */
typedef struct {
    int t, m, r;                                                           /* tile t x t */
    float BT[WINO_XI_MAX], B[WINO_XI_MAX];                                 /* [t, t] */
    float AT[TG_WINO_TMAX * TG_WINO_MMAX], A[TG_WINO_TMAX * TG_WINO_MMAX]; /* [m, t], [t, m] */
    double G[TG_WINO_TMAX * 5];                                            /* [t, r] */
} wino_mats;

/* How a copy holds an image: C planes of h x w at rows and columns [off, off + h) and [off,
 * off + w) of hp x wp ones, 16 lanes a position. */
typedef struct {
    int64_t C, h, w, hp, wp, off;
} wino_layout;

/* One call's work, shared by its team. Every thread has per_thread floats of work at
 * work + t * per_thread: V [xi, Ci, ld], M or Z [xi, Co, ld], the GEMM's buffer, then the
 * lanes-minor copies of its current batch of groups (wino_part). */
typedef struct {
    tg_wino_shape s;
    wino_mats mt;
    int64_t Th, Tw, T;  /* tiles per image: rows, columns, all */
    int xi;             /* points of the tile's domain: t * t, each one GEMM */
    int64_t chunk;      /* columns (lanes) per chunk, a multiple of 16 */
    int64_t ld;         /* a row of V, M or Z: chunk rounded up to whole GEMM panels */
    int64_t batch;      /* groups of images per batch */
    wino_layout xl, yl; /* the copies of x (and dx), of y (or dy) */
    bool with_xs, with_dxs;
    int team;
    const float *x, *w, *bias, *dy;
    float *y, *dx, *dw;
    bool dx_set;
    float *U; /* [xi, Co, Ci] */
    /* Whether U goes to the GEMMs packed ahead (Up: U[xi] for the forward, U[xi]^T for the data
     * gradient, up floats each) and V and Z in the GEMM's panels: in FP32 mode. In bf16 mode
     * the AMX kernel packs A from U itself and converts B in one pass from rows
     * (pack_stored_b_bf16), and the panels cost the step 3% more than they saved there. */
    bool packed;
    float *Up;
    int64_t up;
    float *dU; /* [team, xi, Co, Ci] */
    float *work;
    int64_t per_thread;
} wino_run;

/* A vector's lanes are 16 images at one tile position: a group of images. Columns of V, M and
 * Z are numbered (group, tile position, image in group) within a batch of groups, so the 16
 * lanes of a tile position are consecutive columns and the transforms load and store whole
 * vectors from lanes-minor copies of the images. Each lane's arithmetic is its own image's,
 * whatever the chunk, batch or thread: y and dx are the same bit for bit at any thread count.
 * Threads take whole groups (tg_team_run over them): a short group costs a full one. */
#define WINO_LANES 16
/* GCC and clang warn that a 64-byte vector returned by value changes the ABI where AVX-512 is
 * off (the baseline and AVX2 compilations): only static, inlined functions here return one. */
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float wino_vec __attribute__((vector_size(WINO_LANES * sizeof(float))));

/* A thread's batch of groups (images [b0, b0 + n)) and chunk: its columns [cs, ce) of the
 * batch's, multiples of 16. The copies, lanes minor, group after group: xs [batch, Ci, Hp,
 * Wp, 16] of x with its padding (forward, weight gradient), so that every tile's t x t inputs
 * are inside (Hp = Th m + r - 1); ys [batch, Co, Th m, Tw m, 16] of y (forward) or dy
 * (backward), whole tiles; dxs like xs, dx's terms (data gradient). The transforms then load
 * and store without a test. Padding and lanes past the batch's images are zero in xs and dy's
 * ys, and dropped on the way back. */
typedef struct {
    float *V, *Z, *ys, *xs, *dxs; /* xs, dxs NULL where the call has no use for them */
    float *gemm;                  /* the GEMM's buffer (tg_gemm_buffer_floats) */
    int64_t b0, n, cols, cs, ce;
} wino_part;

/* Floats of one group's copy. */
static int64_t group_floats(const wino_layout *L)
{
    return L->C * L->hp * L->wp * WINO_LANES;
}

static wino_part part_of(const wino_run *c, int t)
{
    const int64_t ld = c->ld, xg = c->batch * group_floats(&c->xl);
    wino_part pt = {.V = c->work + (int64_t)t * c->per_thread};
    pt.Z = pt.V + c->xi * c->s.Ci * ld;
    pt.gemm = pt.Z + c->xi * c->s.Co * ld;
    pt.ys = pt.gemm + tg_gemm_buffer_floats();
    float *next = pt.ys + c->batch * group_floats(&c->yl);
    pt.xs = c->with_xs ? next : NULL;
    pt.dxs = c->with_dxs ? next + (c->with_xs ? xg : 0) : NULL;
    return pt;
}

static inline __attribute__((always_inline)) wino_vec vec_load_u(const float *p)
{
    wino_vec v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* r[i][j] = r[j][i]: four rounds, each swapping bit s of the row with bit s of the column
 * between rows i and i | s (vpermt2ps pairs at the AVX-512 level). */
#define WINO_LO(s, c) (((c) & (s)) ? WINO_LANES + ((c) & ~(s)) : (c))
#define WINO_HI(s, c) (((c) & (s)) ? WINO_LANES + (c) : ((c) | (s)))
#define WINO_IDX(F, s)                                                                             \
    F(s, 0), F(s, 1), F(s, 2), F(s, 3), F(s, 4), F(s, 5), F(s, 6), F(s, 7), F(s, 8), F(s, 9),      \
        F(s, 10), F(s, 11), F(s, 12), F(s, 13), F(s, 14), F(s, 15)
#define WINO_ROUND(r, s)                                                                           \
    for (int i_ = 0; i_ < WINO_LANES; i_++)                                                        \
        if (!(i_ & (s))) {                                                                         \
            const wino_vec a_ = (r)[i_], b_ = (r)[i_ | (s)];                                       \
            (r)[i_] = __builtin_shufflevector(a_, b_, WINO_IDX(WINO_LO, s));                       \
            (r)[i_ | (s)] = __builtin_shufflevector(a_, b_, WINO_IDX(WINO_HI, s));                 \
        }

static inline __attribute__((always_inline)) void transpose16(wino_vec r[WINO_LANES])
{
    WINO_ROUND(r, 8)
    WINO_ROUND(r, 4)
    WINO_ROUND(r, 2)
    WINO_ROUND(r, 1)
}

/* The position of element (ch, y, x) of an image in its copy (one lane's). */
typedef struct {
    int64_t ch, y, x;
} wino_at;

static inline int64_t lanes_at(const wino_layout *L, const wino_at *at)
{
    return ((at->ch * L->hp + at->y + L->off) * L->wp + at->x + L->off) * WINO_LANES;
}

static inline void next_at(const wino_layout *L, wino_at *at)
{
    if (++at->x == L->w) {
        at->x = 0;
        if (++at->y == L->h)
            at->y = 0, at->ch++;
    }
}

/* The copy of nl <= 16 images (image l at src + l * E, E = C h w): element e of image l to
 * dst[lanes_at(e) + l], 0 in the lanes from nl on; by 16 x 16 blocks. */
static void to_lanes(const wino_layout *L, const float *src, int64_t nl, float *dst)
{
    const int64_t E = L->C * L->h * L->w;
    wino_at at = {0, 0, 0};
    int64_t e = 0;
    for (; e + WINO_LANES <= E; e += WINO_LANES) {
        wino_vec r[WINO_LANES];
        for (int l = 0; l < WINO_LANES; l++)
            r[l] = l < nl ? vec_load_u(src + l * E + e) : (wino_vec){0};
        transpose16(r);
        for (int j = 0; j < WINO_LANES; j++, next_at(L, &at))
            *(wino_vec *)(dst + lanes_at(L, &at)) = r[j];
    }
    for (; e < E; e++, next_at(L, &at))
        for (int l = 0; l < WINO_LANES; l++)
            dst[lanes_at(L, &at) + l] = l < nl ? src[l * E + e] : 0.0f;
}

/* to_lanes backwards: image l's element e = (+= when add) src[lanes_at(e) + l], l < nl. */
static void from_lanes(const wino_layout *L, const float *src, int64_t nl, bool add, float *dst)
{
    const int64_t E = L->C * L->h * L->w;
    wino_at at = {0, 0, 0};
    int64_t e = 0;
    for (; e + WINO_LANES <= E; e += WINO_LANES) {
        wino_vec r[WINO_LANES];
        for (int j = 0; j < WINO_LANES; j++, next_at(L, &at))
            r[j] = *(const wino_vec *)(src + lanes_at(L, &at));
        transpose16(r);
        for (int l = 0; l < nl; l++) {
            float *p = dst + l * E + e;
            const wino_vec v = add ? vec_load_u(p) + r[l] : r[l];
            memcpy(p, &v, sizeof v);
        }
    }
    for (; e < E; e++, next_at(L, &at))
        for (int l = 0; l < nl; l++) {
            const float v = src[lanes_at(L, &at) + l];
            dst[l * E + e] = add ? dst[l * E + e] + v : v;
        }
}

/* The batch's images [b0, b0 + n) (image b at src + b * C h w) into their copies, group after
 * group. */
static void batch_to_lanes(const wino_layout *L, const float *src, const wino_part *pt,
                           float *lanes)
{
    const int64_t E = L->C * L->h * L->w;
    for (int64_t g = 0; g * WINO_LANES < pt->n; g++) {
        const int64_t nl = pt->n - g * WINO_LANES;
        to_lanes(L, src + (pt->b0 + g * WINO_LANES) * E, nl < WINO_LANES ? nl : WINO_LANES,
                 lanes + g * group_floats(L));
    }
}

static void batch_from_lanes(const wino_layout *L, const float *lanes, const wino_part *pt,
                             bool add, float *dst)
{
    const int64_t E = L->C * L->h * L->w;
    for (int64_t g = 0; g * WINO_LANES < pt->n; g++) {
        const int64_t nl = pt->n - g * WINO_LANES;
        from_lanes(L, lanes + g * group_floats(L), nl < WINO_LANES ? nl : WINO_LANES, add,
                   dst + (pt->b0 + g * WINO_LANES) * E);
    }
}

/* The nonzero entries of the transforms (bit a * cols + i for entry [a][i]), so that
 * tile_product skips the products by zero (the matrices are data): B^T [t, t] (22 of 36 for
 * t = 6, 44 of 64 for t = 8), B, A^T [4, t] and A [t, 4]. wino_setup checks them against the
 * computed matrices (matrices_fit); tg_winograd_matrices' points fix them. */
#define WINO_NZ_BT6 0xa9e79e795ull
#define WINO_NZ_B6 0x81ff9ff81ull
#define WINO_NZ_AT6 0xf9e79full
#define WINO_NZ_A6 0x8ffff1ull
#define WINO_NZ_BT8 0xaa7e7e7e7e7e7e55ull
#define WINO_NZ_B8 0x807ffe7ffe7ffe01ull
#define WINO_NZ_AT8 0xfe7e7e7full
#define WINO_NZ_A8 0x8ffffff1ull
#define WINO_NZ_BT5 0x1e539cfull
#define WINO_NZ_B5 0x10fdfe1ull
#define WINO_NZ_AT5 0xf39cfull
#define WINO_NZ_A5 0x8fff1ull
/* F(6x6, 3x3): B^T and B are F(4x4, 5x5)'s (the same 8 points), A has 6 columns. */
#define WINO_NZ_AT86 0xfe7e7e7e7e7full
#define WINO_NZ_A86 0x83ffffffffc1ull
#define WINO_NZ(name, t)                                                                           \
    ((t) == 8 ? WINO_NZ_##name##8 : (t) == 6 ? WINO_NZ_##name##6 : WINO_NZ_##name##5)
/* A^T's or A's for t x t tiles of m x m outputs. */
#define WINO_NZ_OUT(name, t, m) ((m) == 6 ? WINO_NZ_##name##86 : WINO_NZ(name, t))

/* out = L in L^T for L [na, ni] with its nonzeros nz, in [ni, ni], out [na, na]: one tile
 * transform of every lane, the right factor first: row by row of in, then column by column of
 * the product. Inlined with constant sizes and nz, the inner loops unroll into fused
 * multiply-adds on registers, the zeros' left out; the outer ones stay loops, so that a row
 * or a column (8 vectors in, 8 out) is all that is live: unrolled whole, an 8 x 8 tile's 704
 * multiply-adds spilled registers. */
static inline __attribute__((always_inline)) void
tile_product(int na, int ni, const float *L, uint64_t nz, const wino_vec *in, wino_vec *out)
{
    wino_vec t[WINO_XI_MAX];
#pragma GCC unroll 1
    for (int i = 0; i < ni; i++)
#pragma GCC unroll 8
        for (int b = 0; b < na; b++) {
            wino_vec acc = {0};
#pragma GCC unroll 8
            for (int k = 0; k < ni; k++)
                if (nz >> (b * ni + k) & 1)
                    acc += in[i * ni + k] * L[b * ni + k];
            t[i * na + b] = acc;
        }
#pragma GCC unroll 1
    for (int b = 0; b < na; b++)
#pragma GCC unroll 8
        for (int a = 0; a < na; a++) {
            wino_vec acc = {0};
#pragma GCC unroll 8
            for (int i = 0; i < ni; i++)
                if (nz >> (a * ni + i) & 1)
                    acc += L[a * ni + i] * t[i * na + b];
            out[a * na + b] = acc;
        }
}

/* The chunk's 16-column lane groups: lane group lg of the batch is tile position lg % T of
 * group lg / T. For it, the column offset in the chunk (col), the group (g) and the tile's
 * first output (oh, ow). */
#define FOR_LANE_GROUPS(c, pt, g, oh, ow, col)                                                     \
    FOR_LANE_GROUP_RANGE(c, pt, (pt)->cs / WINO_LANES, (pt)->ce / WINO_LANES, g, oh, ow, col)
/* The same for the lane groups [first, end) of the batch (inside the chunk's). */
#define FOR_LANE_GROUP_RANGE(c, pt, first, end, g, oh, ow, col)                                    \
    for (int64_t lg_ = (first), col = (lg_ - (pt)->cs / WINO_LANES) * WINO_LANES, g, oh, ow;       \
         lg_ < (end) && (g = lg_ / (c)->T, oh = lg_ % (c)->T / (c)->Tw * (c)->mt.m,                \
                        ow = lg_ % (c)->T % (c)->Tw * (c)->mt.m, true);                            \
         lg_++, col += WINO_LANES)

/* Each transform is written once for a constant tile size t (inlined, so its loops unroll)
 * and called through a switch on the run's; those of the outputs' side also for a constant m
 * (WINO_BY_TILE_OUT). */
#define WINO_BY_TILE(fn, c, ...)                                                                   \
    do {                                                                                           \
        if ((c)->mt.t == 8)                                                                        \
            fn(c, __VA_ARGS__, 8);                                                                 \
        else if ((c)->mt.t == 6)                                                                   \
            fn(c, __VA_ARGS__, 6);                                                                 \
        else                                                                                       \
            fn(c, __VA_ARGS__, 5);                                                                 \
    } while (0)
#define WINO_BY_TILE_OUT(fn, c, ...)                                                               \
    do {                                                                                           \
        if ((c)->mt.m == 6)                                                                        \
            fn(c, __VA_ARGS__, 8, 6);                                                              \
        else if ((c)->mt.t == 8)                                                                   \
            fn(c, __VA_ARGS__, 8, 4);                                                              \
        else if ((c)->mt.t == 6)                                                                   \
            fn(c, __VA_ARGS__, 6, 4);                                                              \
        else                                                                                       \
            fn(c, __VA_ARGS__, 5, 4);                                                              \
    } while (0)

/* The first position of a tile in a lanes copy laid out as L: channel ch of the batch's group
 * g, output row oh and column ow (the copy's own rows and columns: its padding included). */
static inline float *lanes_tile(const wino_layout *L, float *copy, int64_t g, int64_t ch,
                                int64_t oh, int64_t ow)
{
    return copy + g * group_floats(L) + ((ch * L->hp + oh) * L->wp + ow) * WINO_LANES;
}

/* v[i * n + k] = the vector at row i, column k of the n x n block at p of a copy laid out as
 * L. */
static inline __attribute__((always_inline)) void
lanes_block_load(const wino_layout *L, const float *p, int n, wino_vec *v)
{
    for (int i = 0; i < n; i++)
        for (int k = 0; k < n; k++)
            v[i * n + k] = *(const wino_vec *)(p + (i * L->wp + k) * WINO_LANES);
}

/* The n points of one column group of V, M or Z (point xi at p + xi * stride) from or into
 * v. */
static inline __attribute__((always_inline)) void points_load(const float *p, int64_t stride, int n,
                                                              wino_vec *v)
{
    for (int xi = 0; xi < n; xi++)
        v[xi] = *(const wino_vec *)(p + xi * stride);
}

static inline __attribute__((always_inline)) void points_store(float *p, int64_t stride, int n,
                                                               const wino_vec *v)
{
    for (int xi = 0; xi < n; xi++)
        *(wino_vec *)(p + xi * stride) = v[xi];
}

/* Where column col of row ch of a chunk's V or Z lies (rows of them a point, point xi at
 * xi * rows * ld): in plain rows of ld, or, where the GEMM reads the operand as its B
 * (packed), in the kernel's panels over the chunk's columns (tg_gemm_packed_b_at), so that
 * the GEMM reads them where they are instead of copying them first. */
static inline int64_t operand_at(const wino_run *c, const wino_part *pt, bool packed, int64_t rows,
                                 int64_t ch, int64_t col)
{
    return packed ? tg_gemm_packed_b_at(rows, pt->ce - pt->cs, ch, col) : ch * c->ld + col;
}

/* Zeros in row ch of a packed operand from the chunk's last column to its last panel's end,
 * for all n points: the kernels read whole panels. */
static inline __attribute__((always_inline)) void
zero_panel_end(const wino_run *c, const wino_part *pt, float *op, int64_t rows, int64_t ch, int n)
{
    const wino_vec zeros[WINO_XI_MAX] = {{0}};
    for (int64_t col = pt->ce - pt->cs; col % TG_GEMM_NR; col += WINO_LANES)
        points_store(op + operand_at(c, pt, true, rows, ch, col), rows * c->ld, n, zeros);
}

/* tile; for every channel ch < C and lane group (g, oh, ow, col: FOR_LANE_GROUPS) of the
 * chunk, then the zeros of the panels' ends where packed. Where packed, panel after panel, the
 * channels inside and a panel's lane groups inside those: a panel's rows for consecutive
 * channels are consecutive, so each point's stores run on in memory (channel after channel,
 * they jumped a panel, 8 to 16 KB, every 2 lane groups, and D's 3x3 layer lost in its
 * transforms what it saved in packing); else channel after channel, along the rows. */
#define FOR_CHANNEL_TILES(c, pt, C, packed, op, n, tile)                                           \
    do {                                                                                           \
        if (packed) {                                                                              \
            const int64_t end_ = (pt)->ce / WINO_LANES, step_ = TG_GEMM_NR / WINO_LANES;           \
            for (int64_t p_ = (pt)->cs / WINO_LANES; p_ < end_; p_ += step_)                       \
                for (int64_t ch = 0; ch < (C); ch++) {                                             \
                    FOR_LANE_GROUP_RANGE(c, pt, p_, p_ + step_ < end_ ? p_ + step_ : end_, g, oh,  \
                                         ow, col)                                                  \
                    {                                                                              \
                        tile;                                                                      \
                    }                                                                              \
                }                                                                                  \
            for (int64_t ch = 0; ch < (C); ch++)                                                   \
                zero_panel_end(c, pt, op, C, ch, n);                                               \
        } else {                                                                                   \
            for (int64_t ch = 0; ch < (C); ch++) {                                                 \
                FOR_LANE_GROUPS(c, pt, g, oh, ow, col)                                             \
                {                                                                                  \
                    tile;                                                                          \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    } while (0)

/* V[:, ch, chunk] = B^T d B for a tile d of x's channel ch at lane group (g, oh, ow, col). */
static inline __attribute__((always_inline)) void input_tile(const wino_run *c, const wino_part *pt,
                                                             bool packed, int64_t ch, int64_t g,
                                                             int64_t oh, int64_t ow, int64_t col,
                                                             int t)
{
    const wino_layout *L = &c->xl;
    const int64_t Ci = c->s.Ci;
    wino_vec d[WINO_XI_MAX], v[WINO_XI_MAX];
    lanes_block_load(L, lanes_tile(L, pt->xs, g, ch, oh, ow), t, d);
    tile_product(t, t, c->mt.BT, WINO_NZ(BT, t), d, v);
    points_store(pt->V + operand_at(c, pt, packed, Ci, ch, col), Ci * c->ld, t * t, v);
}

/* V[:, :, chunk] for the chunk's tiles of x, in panels where packed (operand_at). */
static inline __attribute__((always_inline)) void
input_transform_t(const wino_run *c, const wino_part *pt, bool packed, int t)
{
    FOR_CHANNEL_TILES(c, pt, c->s.Ci, packed, pt->V, t * t,
                      input_tile(c, pt, packed, ch, g, oh, ow, col, t));
}

static void input_transform(const wino_run *c, const wino_part *pt, bool packed)
{
    WINO_BY_TILE(input_transform_t, c, pt, packed);
}

/* ys's channel co from M[:, co, chunk]: A^T M A + bias. */
static inline __attribute__((always_inline)) void
output_transform_t(const wino_run *c, const wino_part *pt, int64_t co, int t, int m)
{
    const wino_layout *L = &c->yl;
    const int64_t ld = c->ld;
    const float bias = c->bias ? c->bias[co] : 0.0f;
    FOR_LANE_GROUPS(c, pt, g, oh, ow, col)
    {
        float *ys = lanes_tile(L, pt->ys, g, co, oh, ow);
        wino_vec M[WINO_XI_MAX], y[TG_WINO_MMAX * TG_WINO_MMAX];
        points_load(pt->Z + co * ld + col, c->s.Co * ld, t * t, M);
        tile_product(m, t, c->mt.AT, WINO_NZ_OUT(AT, t, m), M, y);
        for (int a = 0; a < m; a++)
            for (int b = 0; b < m; b++)
                *(wino_vec *)(ys + (a * L->wp + b) * WINO_LANES) = y[a * m + b] + bias;
    }
}

static void output_transform(const wino_run *c, const wino_part *pt, int64_t co)
{
    WINO_BY_TILE_OUT(output_transform_t, c, pt, co);
}

/* Z[:, co, chunk] = A e A^T for an m x m tile e of dy's channel co at lane group (g, oh, ow,
 * col). */
static inline __attribute__((always_inline)) void grad_tile(const wino_run *c, const wino_part *pt,
                                                            bool packed, int64_t co, int64_t g,
                                                            int64_t oh, int64_t ow, int64_t col,
                                                            int t, int m)
{
    const wino_layout *L = &c->yl;
    const int64_t Co = c->s.Co;
    wino_vec e[TG_WINO_MMAX * TG_WINO_MMAX], z[WINO_XI_MAX];
    lanes_block_load(L, lanes_tile(L, pt->ys, g, co, oh, ow), m, e);
    tile_product(t, m, c->mt.A, WINO_NZ_OUT(A, t, m), e, z);
    points_store(pt->Z + operand_at(c, pt, packed, Co, co, col), Co * c->ld, t * t, z);
}

/* Z[:, :, chunk] for the chunk's tiles of dy, in panels where packed. */
static inline __attribute__((always_inline)) void
grad_transform_t(const wino_run *c, const wino_part *pt, bool packed, int t, int m)
{
    FOR_CHANNEL_TILES(c, pt, c->s.Co, packed, pt->Z, t * t,
                      grad_tile(c, pt, packed, ch, g, oh, ow, col, t, m));
}

static void grad_transform(const wino_run *c, const wino_part *pt, bool packed)
{
    WINO_BY_TILE_OUT(grad_transform_t, c, pt, packed);
}

/* dxs's channel ch += B dV B^T for dV = V[:, ch, chunk]: tile position after tile position,
 * so each image's sums come in an order fixed by the positions. */
static inline __attribute__((always_inline)) void
data_transform_t(const wino_run *c, const wino_part *pt, int64_t ch, int t)
{
    const wino_layout *L = &c->xl;
    const int64_t ld = c->ld;
    FOR_LANE_GROUPS(c, pt, g, oh, ow, col)
    {
        float *dxs = lanes_tile(L, pt->dxs, g, ch, oh, ow);
        wino_vec dv[WINO_XI_MAX], dd[WINO_XI_MAX];
        points_load(pt->V + ch * ld + col, c->s.Ci * ld, t * t, dv);
        tile_product(t, t, c->mt.B, WINO_NZ(B, t), dv, dd);
        for (int i = 0; i < t; i++)
            for (int k = 0; k < t; k++)
                *(wino_vec *)(dxs + (i * L->wp + k) * WINO_LANES) += dd[i * t + k];
    }
}

static void data_transform(const wino_run *c, const wino_part *pt, int64_t ch)
{
    WINO_BY_TILE(data_transform_t, c, pt, ch);
}

/* The weight transforms run on WT_LANES input channels at once, one per lane of a vector of
 * doubles, each lane's sums in the scalar loops' order. The scalar loops took 1.5% of the GAN's
 * step (G's layer: 8192 channel pairs, 330 double multiply-adds each, twice per step); G's
 * layer forward + backward went from 136-140 to 130-134 ms (1 thread, CPU time, load 5). The
 * bits may differ from theirs in the last place of U, which is rounded to float from double:
 * GCC had fused some of their multiply-adds and not others. */
#define WT_LANES 8
typedef double wt_vec __attribute__((vector_size(WT_LANES * sizeof(double))));

/* U[:, co, ci0 .. ci0 + n) = G w G^T for output channel co, n <= WT_LANES input channels. */
static void weight_transform_lanes(const wino_run *c, int64_t co, int64_t ci0, int n)
{
    const int r = c->mt.r, T = c->mt.t;
    const int64_t Ci = c->s.Ci, Co = c->s.Co;
    const double *G = c->mt.G;
    wt_vec w[5][5], t[TG_WINO_TMAX][5];
    for (int h = 0; h < r; h++)
        for (int k = 0; k < r; k++)
            for (int l = 0; l < WT_LANES; l++)
                w[h][k][l] = l < n ? c->w[(co * Ci + ci0 + l) * r * r + h * r + k] : 0.0;
    for (int a = 0; a < T; a++)
        for (int k = 0; k < r; k++) {
            wt_vec acc = {0};
            for (int h = 0; h < r; h++)
                acc += G[a * r + h] * w[h][k];
            t[a][k] = acc;
        }
    for (int a = 0; a < T; a++)
        for (int b = 0; b < T; b++) {
            wt_vec acc = {0};
            for (int k = 0; k < r; k++)
                acc += t[a][k] * G[b * r + k];
            float *u = c->U + ((a * T + b) * Co + co) * Ci + ci0;
            for (int l = 0; l < n; l++)
                u[l] = (float)acc[l];
        }
}

/* U[:, co, :] = G w G^T for output channel co, in double. */
static void weight_transform(const wino_run *c, int64_t co)
{
    for (int64_t ci = 0; ci < c->s.Ci; ci += WT_LANES)
        weight_transform_lanes(c, co, ci, (int)(c->s.Ci - ci < WT_LANES ? c->s.Ci - ci : WT_LANES));
}

/* dw[co, ci0 .. ci0 + n) += G^T dU G, dU the threads' partials added in thread order; in
 * double after that. */
static void weight_grad_transform_lanes(const wino_run *c, int64_t co, int64_t ci0, int n)
{
    const int r = c->mt.r, T = c->mt.t;
    const int64_t Ci = c->s.Ci, Co = c->s.Co, part = c->xi * Co * Ci;
    const double *G = c->mt.G;
    wt_vec d[TG_WINO_TMAX][TG_WINO_TMAX], t[TG_WINO_TMAX][5];
    for (int xi = 0; xi < c->xi; xi++) {
        const float *src = c->dU + (xi * Co + co) * Ci + ci0;
        for (int l = 0; l < WT_LANES; l++) {
            float sum = 0.0f;
            if (l < n) {
                sum = src[l];
                for (int th = 1; th < c->team; th++)
                    sum += src[th * part + l];
            }
            d[xi / T][xi % T][l] = sum;
        }
    }
    for (int a = 0; a < T; a++)
        for (int k = 0; k < r; k++) {
            wt_vec acc = {0};
            for (int b = 0; b < T; b++)
                acc += d[a][b] * G[b * r + k];
            t[a][k] = acc;
        }
    for (int h = 0; h < r; h++)
        for (int k = 0; k < r; k++) {
            wt_vec acc = {0};
            for (int a = 0; a < T; a++)
                acc += G[a * r + h] * t[a][k];
            for (int l = 0; l < n; l++)
                c->dw[(co * Ci + ci0 + l) * r * r + h * r + k] += (float)acc[l];
        }
}

static void weight_grad_transform(const wino_run *c, int64_t co)
{
    for (int64_t ci = 0; ci < c->s.Ci; ci += WT_LANES)
        weight_grad_transform_lanes(c, co, ci,
                                    (int)(c->s.Ci - ci < WT_LANES ? c->s.Ci - ci : WT_LANES));
}

/* Runs fn(c, co) for every output channel, in parallel where it pays. */
static void per_out_channel(const wino_run *c, void (*fn)(const wino_run *, int64_t))
{
    const int64_t Co = c->s.Co, per = c->s.Ci * c->xi * c->mt.r;
    if (!TG_PARALLEL_FORK(Co, per)) {
        for (int64_t co = 0; co < Co; co++)
            fn(c, co);
        return;
    }
    TG_PARALLEL_FOR_WORK(Co, per)
    for (int64_t co = 0; co < Co; co++)
        fn(c, co);
}

/* Sets pt to the batch of groups from g (of thread's groups up to g1): its images and
 * columns. */
static void batch_of(const wino_run *c, wino_part *pt, int64_t g, int64_t g1)
{
    const int64_t end = (g + c->batch < g1 ? g + c->batch : g1) * WINO_LANES;
    pt->b0 = g * WINO_LANES;
    pt->n = (end < c->s.N ? end : c->s.N) - pt->b0;
    pt->cols = (pt->n + WINO_LANES - 1) / WINO_LANES * WINO_LANES * c->T;
}

/* The batch's chunks: columns [cs, ce), c->chunk of them but the last. */
#define FOR_CHUNKS(c, pt)                                                                          \
    for ((pt).cs = 0;                                                                              \
         (pt).cs < (pt).cols &&                                                                    \
         ((pt).ce = (pt).cs + (c)->chunk < (pt).cols ? (pt).cs + (c)->chunk : (pt).cols, true);    \
         (pt).cs += (c)->chunk)

/* The forward of thread t's groups [g0, g1) of images (a tg_team_fn). */
static void forward_part(void *ctx, int t, int64_t g0, int64_t g1)
{
    const wino_run *c = ctx;
    wino_part pt = part_of(c, t);
    const int64_t Ci = c->s.Ci, Co = c->s.Co, ld = c->ld;
    /* The padding, once: the copies rewrite only the images. */
    memset(pt.xs, 0, (size_t)(c->batch * group_floats(&c->xl)) * sizeof(float));
    for (int64_t g = g0; g < g1; g += c->batch) {
        batch_of(c, &pt, g, g1);
        batch_to_lanes(&c->xl, c->x, &pt, pt.xs);
        FOR_CHUNKS(c, pt)
        {
            /* V straight into the GEMM's B panels, U packed once for the call: the GEMMs pack
             * nothing (they packed U again for every chunk, and copied V). */
            input_transform(c, &pt, c->packed);
            for (int xi = 0; xi < c->xi; xi++) {
                const tg_gemm_operand u = {.data = c->U + xi * Co * Ci,
                                           .ld = Ci,
                                           .packed = c->Up ? c->Up + xi * c->up : NULL},
                                      v = {.data = pt.V + xi * Ci * ld,
                                           .ld = ld,
                                           .panels = c->packed};
                TG_ASSERT(tg_sgemm_avx512_ops(&u, &v, Co, pt.ce - pt.cs, Ci, 1.0f, 0.0f,
                                              pt.Z + xi * Co * ld, ld, pt.gemm));
            }
            for (int64_t co = 0; co < Co; co++)
                output_transform(c, &pt, co);
        }
        batch_from_lanes(&c->yl, pt.ys, &pt, false, c->y);
    }
}

/* The backward of thread t's groups [g0, g1) of images (a tg_team_fn), dw into its partial
 * dU. */
static void backward_part(void *ctx, int t, int64_t g0, int64_t g1)
{
    const wino_run *c = ctx;
    wino_part pt = part_of(c, t);
    const int64_t Ci = c->s.Ci, Co = c->s.Co, ld = c->ld;
    float *dU = c->dw ? c->dU + t * c->xi * Co * Ci : NULL;
    if (dU)
        memset(dU, 0, (size_t)(c->xi * Co * Ci) * sizeof(float));
    /* The padding, once: the copies rewrite only the images. */
    memset(pt.ys, 0, (size_t)(c->batch * group_floats(&c->yl)) * sizeof(float));
    if (dU)
        memset(pt.xs, 0, (size_t)(c->batch * group_floats(&c->xl)) * sizeof(float));
    for (int64_t g = g0; g < g1; g += c->batch) {
        batch_of(c, &pt, g, g1);
        batch_to_lanes(&c->yl, c->dy, &pt, pt.ys);
        if (dU)
            batch_to_lanes(&c->xl, c->x, &pt, pt.xs);
        if (c->dx)
            memset(pt.dxs, 0,
                   (size_t)(pt.cols / c->T / WINO_LANES * group_floats(&c->xl)) * sizeof(float));
        FOR_CHUNKS(c, pt)
        {
            const int64_t np = pt.ce - pt.cs;
            /* Z in the panels of the data gradient's B (read in place), from which the weight
             * gradient packs its A (pack_a reads a panel's run as it reads a row's): D's 3x3
             * layer ran 3-5% faster than with Z in rows packed for both, G's 5x5 one the same. */
            grad_transform(c, &pt, c->packed);
            if (dU) {
                input_transform(c, &pt, false);
                for (int xi = 0; xi < c->xi; xi++) {
                    const tg_gemm_operand z = {.data = pt.Z + xi * Co * ld,
                                               .ld = ld,
                                               .panels = c->packed},
                                          vt = {
                                              .data = pt.V + xi * Ci * ld, .ld = ld, .trans = true};
                    TG_ASSERT(tg_sgemm_avx512_ops(&z, &vt, Co, Ci, np, 1.0f, 1.0f,
                                                  dU + xi * Co * Ci, Ci, pt.gemm));
                }
            }
            if (c->dx) {
                /* dV goes where V was: the weight gradient's GEMMs have read it. */
                for (int xi = 0; xi < c->xi; xi++) {
                    const tg_gemm_operand ut = {.data = c->U + xi * Co * Ci,
                                                .ld = Ci,
                                                .trans = true,
                                                .packed = c->Up ? c->Up + xi * c->up : NULL},
                                          z = {.data = pt.Z + xi * Co * ld,
                                               .ld = ld,
                                               .panels = c->packed};
                    TG_ASSERT(tg_sgemm_avx512_ops(&ut, &z, Ci, np, Co, 1.0f, 0.0f,
                                                  pt.V + xi * Ci * ld, ld, pt.gemm));
                }
                for (int64_t ch = 0; ch < Ci; ch++)
                    data_transform(c, &pt, ch);
            }
        }
        if (c->dx)
            batch_from_lanes(&c->xl, pt.dxs, &pt, !c->dx_set, c->dx);
    }
}

/* The groups of 16 images, split between the team. */
static int64_t wino_groups(const wino_run *c)
{
    return (c->s.N + WINO_LANES - 1) / WINO_LANES;
}

/* Up[xi] = U[xi] (the forward's A) or U[xi]^T (the data gradient's) packed for the GEMMs, in
 * parallel over the points where it pays. */
static void pack_u(const wino_run *c, bool trans)
{
    const int64_t Co = c->s.Co, Ci = c->s.Ci, M = trans ? Ci : Co, K = trans ? Co : Ci;
    if (!c->Up)
        return;
    if (!TG_PARALLEL_FORK(c->xi, c->up)) {
        for (int xi = 0; xi < c->xi; xi++)
            tg_gemm_pack_a(trans, M, K, c->U + xi * Co * Ci, Ci, c->Up + xi * c->up);
        return;
    }
    TG_PARALLEL_FOR_WORK(c->xi, c->up)
    for (int xi = 0; xi < c->xi; xi++)
        tg_gemm_pack_a(trans, M, K, c->U + xi * Co * Ci, Ci, c->Up + xi * c->up);
}

TG_ISA_KERNEL(wino_forward_kernel, (wino_run * c), (c))
{
    per_out_channel(c, weight_transform);
    pack_u(c, false);
    tg_team_run(c->team, wino_groups(c), forward_part, c);
}

TG_ISA_KERNEL(wino_backward_kernel, (wino_run * c), (c))
{
    if (c->dx) {
        per_out_channel(c, weight_transform);
        pack_u(c, true);
    }
    tg_team_run(c->team, wino_groups(c), backward_part, c);
    if (c->dw)
        per_out_channel(c, weight_grad_transform);
}

/* The stride-2 path's rearrangement of x into its phase planes, or of their gradient back
 * into dx (tg_winograd_s2_forward, below): src x [N, Ci, H, W] into dst xs [N, Ci, 4, Hq, Wq]
 * (to_phases: zeros where a phase point lies outside x), or src dxs into dst dx (= where set,
 * else +=; zeros where x lies in no phase plane). Row by row of x, each row's even and odd
 * columns to or from their two phase rows, so that both sides are walked in memory order. */
typedef struct {
    const tg_wino_shape *s;
    const float *src;
    float *dst;
    bool to_phases, set;
} s2_move;

TG_ISA_KERNEL(s2_phases, (const s2_move *m), (m))
{
    const tg_wino_shape *s = m->s;
    const int64_t H = s->H, W = s->W, Hq = s->Ho + 1, Wq = s->Wo + 1, p = s->pad, plane = Hq * Wq;
    /* x's rows and columns inside a phase plane: h + p < 2 Hq, v + p < 2 Wq */
    const int64_t h1 = H < 2 * Hq - p ? H : 2 * Hq - p, v1 = W < 2 * Wq - p ? W : 2 * Wq - p;
    TG_PARALLEL_FOR_WORK(s->N * s->Ci, 4 * plane)
    for (int64_t nc = 0; nc < s->N * s->Ci; nc++) {
        float *restrict ph = m->to_phases ? m->dst + nc * 4 * plane : NULL;
        const float *restrict phc = m->to_phases ? NULL : m->src + nc * 4 * plane;
        const float *restrict xp = m->to_phases ? m->src + nc * H * W : NULL;
        float *restrict dp = m->to_phases ? NULL : m->dst + nc * H * W;
        if (ph)
            memset(ph, 0, (size_t)(4 * plane) * sizeof(float));
        else if (m->set)
            memset(dp, 0, (size_t)(H * W) * sizeof(float));
        for (int64_t h = 0; h < h1; h++) {
            const int64_t a = (h + p) % 2, i = (h + p) / 2;
            for (int64_t par = 0; par < 2; par++) {
                const int64_t b = (par + p) % 2, q = ((a * 2 + b) * Hq + i) * Wq + (par + p) / 2;
                const int64_t n = par < v1 ? (v1 - par + 1) / 2 : 0;
                if (ph)
                    for (int64_t k = 0; k < n; k++)
                        ph[q + k] = xp[h * W + par + 2 * k];
                else
                    for (int64_t k = 0; k < n; k++)
                        dp[h * W + par + 2 * k] += phc[q + k];
            }
        }
    }
}

#if TG_ISA_BASE
/* Frees what wino_setup allocated (any of it NULL). */
static void wino_release(wino_run *c)
{
    const size_t u = (size_t)(c->xi * c->s.Co * c->s.Ci) * sizeof(float);
    tg_free(c->work, (size_t)(c->per_thread * c->team) * sizeof(float));
    tg_free(c->U, u);
    tg_free(c->Up, (size_t)(c->xi * c->up) * sizeof(float));
    tg_free(c->dU, u * (size_t)c->team);
}

/* a * b + add into *r; false on overflow. */
static bool mul_add(int64_t a, int64_t b, int64_t add, int64_t *r)
{
    return !__builtin_mul_overflow(a, b, r) && !__builtin_add_overflow(*r, add, r);
}

/* Whether L [rows, cols] is zero outside nz: tile_product may skip those products. */
static bool zero_outside(const float *L, int rows, int cols, uint64_t nz)
{
    for (int i = 0; i < rows * cols; i++)
        if (!(nz >> i & 1) && L[i] != 0.0f)
            return false;
    return true;
}

static bool matrices_fit(const wino_mats *mt)
{
    const int t = mt->t, m = mt->m;
    return zero_outside(mt->BT, t, t, WINO_NZ(BT, t)) && zero_outside(mt->B, t, t, WINO_NZ(B, t)) &&
           zero_outside(mt->AT, m, t, WINO_NZ_OUT(AT, t, m)) &&
           zero_outside(mt->A, t, m, WINO_NZ_OUT(A, t, m));
}

/* Sets up c for s (its team, batch, chunk and buffers: U unless a backward without dx, the
 * partials for dw); false, with nothing held, when a size overflows or memory runs out. */
static bool wino_setup(wino_run *c, const tg_wino_shape *s, bool backward, bool with_dx,
                       bool with_dw)
{
    memset(c, 0, sizeof *c);
    c->s = *s;
    double A[TG_WINO_TMAX * TG_WINO_MMAX], B[WINO_XI_MAX];
    /* bf16 mode keeps F(4x4): F(6x6, 3x3)'s larger A (up to 32) costs its rounded products
     * more (test_deep_channels' y 0.064 -> 0.103 from the FP32 result), and the mode's
     * quality was measured with F(4x4). */
    const int m0 = tg_matmul_bf16_active() ? 4 : tg_winograd_out_tile(s->Ho, s->Wo, s->r);
    if (!tg_winograd_matrices(m0, s->r, A, B, c->mt.G))
        return false;
    const int t = tg_winograd_tile(m0, s->r);
    c->mt.r = s->r;
    c->mt.t = t;
    c->mt.m = m0;
    c->xi = t * t;
    const int64_t m = c->mt.m;
    for (int j = 0; j < t; j++) {
        for (int i = 0; i < m; i++)
            c->mt.AT[i * t + j] = c->mt.A[j * m + i] = (float)A[j * m + i];
        for (int i = 0; i < t; i++)
            c->mt.BT[i * t + j] = c->mt.B[j * t + i] = (float)B[j * t + i];
    }
    if (!matrices_fit(&c->mt))
        return false;
    const bool with_u = !backward || with_dx, with_du = backward && with_dw;
    c->with_xs = !backward || with_dw;
    c->with_dxs = backward && with_dx;
    c->Th = (s->Ho + m - 1) / m;
    c->Tw = (s->Wo + m - 1) / m;
    c->xl = (wino_layout){s->Ci, s->H, s->W, c->Th * m + s->r - 1, c->Tw * m + s->r - 1, s->pad};
    c->yl = (wino_layout){s->Co, s->Ho, s->Wo, c->Th * m, c->Tw * m, 0};
    int64_t chans, per_lane, ucount, ximg, yimg, group_cols, copies, per_thread;
    if (!mul_add(c->Th, c->Tw, 0, &c->T) || !mul_add(c->T, WINO_LANES, 0, &group_cols) ||
        !mul_add(s->Ci, 1, s->Co, &chans) || !mul_add(chans, (int64_t)c->xi * 4, 0, &per_lane) ||
        !mul_add(s->Co, s->Ci, 0, &ucount) || !mul_add(ucount, (int64_t)c->xi, 0, &ucount) ||
        !mul_add(s->Ci, c->xl.hp, 0, &ximg) || !mul_add(ximg, c->xl.wp, 0, &ximg) ||
        !mul_add(s->Co, c->yl.hp, 0, &yimg) || !mul_add(yimg, c->yl.wp, 0, &yimg))
        return false;
    const int threads = TG_IN_PARALLEL() ? 1 : tg_get_num_threads();
    const int64_t groups = (s->N + WINO_LANES - 1) / WINO_LANES;
    c->team = (int)(groups < threads ? groups : threads);
    /* Columns: batches of whole groups where a group's columns fit the budget (at most a
     * thread's groups), else a group's columns in equal chunks of at most WINO_CHUNK_GROW
     * budgets. */
    const int64_t share = (groups + c->team - 1) / c->team;
    int64_t ld = WINO_CHUNK_BYTES / per_lane / TG_GEMM_NR * TG_GEMM_NR;
    ld = ld < TG_GEMM_NR ? TG_GEMM_NR : ld;
    if (group_cols <= ld) {
        c->batch = ld / group_cols < share ? ld / group_cols : share;
        ld = c->batch * group_cols;
    } else {
        const int64_t most = WINO_CHUNK_GROW * ld, chunks = (group_cols + most - 1) / most;
        c->batch = 1;
        ld = ((group_cols + chunks - 1) / chunks + WINO_LANES - 1) / WINO_LANES * WINO_LANES;
    }
    c->chunk = ld;
    c->ld = ld = (ld + TG_GEMM_NR - 1) / TG_GEMM_NR * TG_GEMM_NR;
    /* U[xi] for the forward, U[xi]^T for the data gradient (the backward's only use of U). */
    c->up =
        backward ? tg_gemm_packed_a_floats(s->Ci, s->Co) : tg_gemm_packed_a_floats(s->Co, s->Ci);
    /* V and M or Z, the GEMM's buffer, then the copies: y's or dy's, x's, dx's. */
    if (!mul_add(chans, (int64_t)c->xi * ld, tg_gemm_buffer_floats(), &per_thread) ||
        !mul_add(ximg, (int64_t)c->with_xs + c->with_dxs, yimg, &copies) ||
        !mul_add(copies, c->batch * WINO_LANES, per_thread, &c->per_thread) ||
        c->per_thread > INT64_MAX / 4 / c->team || ucount > INT64_MAX / 4 / c->team)
        return false;
    c->work = tg_try_alloc((size_t)(c->per_thread * c->team) * sizeof(float));
    c->U = c->work && with_u ? tg_try_alloc((size_t)ucount * sizeof(float)) : NULL;
    c->packed = !tg_matmul_bf16_active();
    c->Up = c->U && c->packed ? tg_try_alloc((size_t)(c->xi * c->up) * sizeof(float)) : NULL;
    c->dU = c->work && with_du ? tg_try_alloc((size_t)(ucount * c->team) * sizeof(float)) : NULL;
    if (c->work && ((c->U && (c->Up || !c->packed)) || !with_u) && (c->dU || !with_du))
        return true;
    wino_release(c);
    return false;
}

bool tg_winograd_forward(const tg_wino_shape *s, const float *x, const float *w, const float *bias,
                         float *y)
{
    wino_run c;
    if (s->N == 0 || !wino_setup(&c, s, false, false, false))
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
    if (s->N == 0 || (!dx && !dw) || !wino_setup(&c, s, true, dx != NULL, dw != NULL))
        return false;
    c.x = x, c.w = w, c.dy = dy, c.dx = dx, c.dw = dw, c.dx_set = dx_set;
    wino_backward_kernel(&c);
    wino_release(&c);
    return true;
}

/* ---- stride 2, 4 x 4 kernels: four phases of 2 x 2 taps -----------------------------------
 * y[oh][ow] = sum w[co][ci][kh][kw] x[ci][2 oh + kh - p][2 ow + kw - p]. With kh = 2 dh + a and
 * kw = 2 dw + b, the row read is 2 (oh + dh) + a - p: row oh + dh of the phase plane
 *   xs[(ci, a, b)][i][j] = x[ci][2 i + a - p][2 j + b - p]  (0 outside x), Ho + 1 by Wo + 1,
 * correlated at stride 1 with the 2 x 2 kernel ws[co][(ci, a, b)][dh][dw] = w[co][ci][2 dh +
 * a][2 dw + b]. So this conv2d is a stride-1 one over 4 Ci channels, which F(4x4, 2x2) runs
 * with 25 products per 16 outputs where the lowering does 64 (the DCGAN discriminator's and
 * WGAN-GP critic's 64 -> 128 layer on 14 x 14: 1.96x fewer, the tiles' overhang counted). Its
 * gradients come back through the same rearrangements: each element of x lies in one phase
 * plane at most (h + p fixes a and i), so dx is dxs put back, 0 where no output reads x.
 * conv_transpose2d with such a kernel is this conv2d run backwards (conv.c): its y is the
 * data gradient, its dx the forward, its dw the weight gradient with x and dy swapped. */
static tg_wino_shape s2_shape(const tg_wino_shape *s)
{
    return (tg_wino_shape){s->N, 4 * s->Ci, s->Ho + 1, s->Wo + 1, s->Co, s->Ho, s->Wo, 2, 0};
}

/* ws from w (to_phases), or dw += dws. */
static void s2_weights(const tg_wino_shape *s, const float *w, float *ws, bool to_phases, float *dw,
                       const float *dws)
{
    for (int64_t oc = 0; oc < s->Co * s->Ci; oc++)
        for (int64_t k = 0; k < 16; k++) {
            const int64_t kh = k / 4, kw = k % 4;
            const int64_t q = (oc * 4 + kh % 2 * 2 + kw % 2) * 4 + kh / 2 * 2 + kw / 2;
            if (to_phases)
                ws[q] = w[oc * 16 + k];
            else
                dw[oc * 16 + k] += dws[q];
        }
}

/* Floats of xs; false when they overflow. */
static bool s2_floats(const tg_wino_shape *s, int64_t *xs, int64_t *ws)
{
    const tg_wino_shape q = s2_shape(s);
    return mul_add(q.N, q.Ci, 0, xs) && mul_add(*xs, q.H, 0, xs) && mul_add(*xs, q.W, 0, xs) &&
           mul_add(q.Co, q.Ci, 0, ws) && mul_add(*ws, 4, 0, ws) &&
           *xs <= (int64_t)(SIZE_MAX / sizeof(float)) && *ws <= (int64_t)(SIZE_MAX / sizeof(float));
}

bool tg_winograd_s2_forward(const tg_wino_shape *s, const float *x, const float *w,
                            const float *bias, float *y)
{
    int64_t nx, nw;
    if (s->N == 0 || !s2_floats(s, &nx, &nw))
        return false;
    float *xs = tg_try_alloc((size_t)nx * sizeof(float));
    float *ws = xs ? tg_try_alloc((size_t)nw * sizeof(float)) : NULL;
    bool ok = false;
    if (ws) {
        const tg_wino_shape q = s2_shape(s);
        s2_phases(&(s2_move){s, x, xs, true, false});
        s2_weights(s, w, ws, true, NULL, NULL);
        ok = tg_winograd_forward(&q, xs, ws, bias, y);
    }
    if (ws)
        tg_free(ws, (size_t)nw * sizeof(float));
    if (xs)
        tg_free(xs, (size_t)nx * sizeof(float));
    return ok;
}

bool tg_winograd_s2_backward(const tg_wino_shape *s, const float *x, const float *w,
                             const float *dy, float *dx, bool dx_set, float *dw)
{
    int64_t nx, nw;
    if (s->N == 0 || (!dx && !dw) || !s2_floats(s, &nx, &nw))
        return false;
    /* ws, xs (dw only: the data gradient does not read x), then dxs (dx) and dws (dw, zeros:
     * the backward adds to it) */
    const size_t bx = (size_t)nx * sizeof(float), bw = (size_t)nw * sizeof(float);
    float *ws = tg_try_alloc(bw), *xs = ws && dw ? tg_try_alloc(bx) : NULL;
    float *dxs = ws && dx ? tg_try_alloc(bx) : NULL;
    float *dws = ws && dw ? tg_try_alloc(bw) : NULL;
    bool ok = false;
    if (ws && (dxs || !dx) && ((dws && xs) || !dw)) {
        const tg_wino_shape q = s2_shape(s);
        if (xs)
            s2_phases(&(s2_move){s, x, xs, true, false});
        s2_weights(s, w, ws, true, NULL, NULL);
        if (dws)
            memset(dws, 0, bw);
        ok = tg_winograd_backward(&q, xs, ws, dy, dxs, true, dws);
        if (ok && dx)
            s2_phases(&(s2_move){s, dxs, dx, false, dx_set});
        if (ok && dw)
            s2_weights(s, NULL, NULL, false, dw, dws);
    }
    if (dws)
        tg_free(dws, bw);
    if (dxs)
        tg_free(dxs, bx);
    if (ws)
        tg_free(ws, bw);
    if (xs)
        tg_free(xs, bx);
    return ok;
}
#endif
