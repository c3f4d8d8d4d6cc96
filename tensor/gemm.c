/* tg_sgemm_avx512: our own single-precision GEMM for CPUs with AVX-512, chosen at run time
 * (tensor/isa.h's AVX-512 level). Its functions carry target("avx512f"), so the file compiles
 * for the baseline like the rest of the library.
 *
 * Why: Debian's OpenBLAS 0.3.21 runs its Haswell (AVX2) kernels on this project's machines
 * (OPENBLAS_CORETYPE=Haswell is set there because newer kernel choices misbehave on some of
 * them), which caps SGEMM at the AVX2 peak: about 100 GFLOP/s a core measured here against
 * about 200 with AVX-512. PyTorch's oneDNN convolutions run AVX-512 code, so the GAN's deep
 * convolutions were 2x slower than PyTorch's with nothing left to gain around the GEMMs
 * (docs/design.md, section 9: our own kernels with runtime CPU dispatch are the lasting answer).
 *
 * The classic blocking (Goto, BLIS): for each column block of NC and depth block of KC, op(B)
 * is packed into panels of NR columns [k][NR]; for each row block of MC, op(A) into panels of
 * MR rows [k][MR]; an MR x NR micro-kernel then keeps its tile of C in 16 registers while it
 * takes one A panel (8 KB, in L1) against one B panel (32 KB, from L2). Each A panel meets
 * every B panel of the block before the next: with B's panel kept instead (it fills Zen 4's
 * 32 KB L1 with nothing else), the linear layers' products ran 2-6% slower (bench_gemm, 1
 * thread, 4 interleaved rounds: G's forward 88.7-91.4 GFLOP/s against 93.7-94.7, its weight
 * gradient 101.0-101.7 against 102.9-104.7; the Winograd shape the same; in bf16 mode G's
 * forward 152-154 against 166-169). Packing absorbs the
 * transposes and zero-pads the edges, so the kernel has one shape; edge tiles store through
 * masks. Threads split the columns of C in multiples of NR, each with its own packing buffers,
 * so no two threads write the same element and the result does not depend on timing. The
 * buffers belong to one call (from the caching allocator, so taking them again is cheap):
 * calls from several user threads at once never share them, and tg_allocator_trim frees them.
 * A caller that uses one operand in many products, or can write one in the kernel's layout
 * itself, hands it over packed instead (tg_sgemm_avx512_ops, internal.h): Winograd's U, V and
 * Z (autograd/winograd.c), whose GEMMs then copy nothing but the weight gradient's operands.
 *
 * bf16 mode (tg_set_matmul_precision, issue 17): the same blocking, threads and packers; the
 * packed panels are converted to bf16 (round to nearest even) and a bf16 kernel with FP32
 * accumulators computes each tile: AMX tiles where the CPU has them, else VDPBF16PS. The thin
 * path (M or N 1) stays FP32. See "bf16 mode" and "AMX" below. */
#include "internal.h"

#include "parallel.h"

#include <stdlib.h>
#include <string.h>

/* 8 x 32 stays: 8 x 48, 12 x 32 and 14 x 32 tiles (24-28 accumulators) and an unrolled depth
 * loop ran no faster on the GAN's conv GEMMs (170-185 GFLOP/s of a ~204 peak alone, as 8 x 32),
 * and MR 12 or 14 wastes rows of 64-row products. */
#define GEMM_MR TG_GEMM_MR
#define GEMM_NR TG_GEMM_NR
#define GEMM_KC TG_GEMM_KC
#define GEMM_MC 128
#define GEMM_NC 512
#define GEMM_MAX_THREADS 64

/* Packing buffers of one thread: A block [MC/MR][KC][MR], then B block [NC/NR][KC][NR]. A
 * multiple of 16 floats, so that every thread's buffer stays 64-byte aligned. */
#define GEMM_PACK_FLOATS ((int64_t)GEMM_MC * GEMM_KC + (int64_t)GEMM_KC * GEMM_NC)
/* In bf16 mode the panels are converted once more, into bf16 of half their size, after the
 * FP32 ones (the depth padded to even, or to 32 for AMX: both fit, GEMM_KC being 256). */
#define GEMM_PACK_FLOATS_BF16 (GEMM_PACK_FLOATS + GEMM_PACK_FLOATS / 2)

/* TG_MATMUL_FP32 or TG_MATMUL_BF16 (tg_set_matmul_precision), read once per product. */
static _Atomic int matmul_precision = TG_MATMUL_FP32;
int tg_gemm_amx = 1;

/* op(A) [M, K] of a product: its storage (pack_a's and amx_pack_a's source), rows of lda (op
 * transposing them where trans) or, where panels, the caller's B-layout panels over op(A)
 * (tg_gemm_packed_b_at(M, K, i, k)); and, where the caller packed it whole ahead
 * (tg_gemm_pack_a), the packed copy, which the FP32 and VDPBF16PS kernels then read in place
 * of pack_a's output. */
typedef struct {
    bool trans, panels;
    const float *A;
    int64_t lda, M, K;
    const float *packed; /* or NULL */
} gemm_a;

/* op(B) of a product: its packer, or panels the caller wrote ahead (tg_gemm_packed_b_at's
 * layout over N columns), read where they are instead of copied. */
typedef struct {
    tg_gemm_pack_b_fn pack;
    const void *ctx;
    const float *packed; /* or NULL */
    int64_t N;
} gemm_b;

/* Rows up to M, or columns up to N, in whole panels of n. */
static inline int64_t round_up(int64_t M, int64_t n)
{
    return (M + n - 1) / n * n;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include "avx512.h"
#define GEMM_AVX512 __attribute__((target("avx512f")))
/* The bf16 kernels: VCVTNE2PS2BF16 and VDPBF16PS, plus AVX512BW's 16-bit permutes. Reached
 * only when tg_isa_has_bf16(). */
#define GEMM_BF16 __attribute__((target("avx512f,avx512bf16,avx512bw,avx512vl")))

/* dst[kk * ld_dst + c] = src[c][k0 + kk] for kk < 16 and c < n (n <= 16): n rows' next 16
 * values, transposed. */
GEMM_AVX512 static inline void gather16(const float *const *src, int n, int64_t k0, float *dst,
                                        int64_t ld_dst)
{
    __m512 r[16];
    for (int c = 0; c < 16; c++)
        r[c] = c < n ? _mm512_loadu_ps(src[c] + k0) : _mm512_setzero_ps();
    tg_transpose16(r);
    for (int kk = 0; kk < 16; kk++)
        _mm512_mask_storeu_ps(dst + kk * ld_dst, tg_lanes16(n), r[kk]);
}

/* Element (i, k) of a not transposed op(A): in row i of the storage, or in the caller's
 * panels, which hold a row in runs of NR depths (aligned runs of 16 or 32 stay in one). */
static inline const float *a_at(const gemm_a *a, int64_t i, int64_t k)
{
    return a->panels ? a->A + tg_gemm_packed_b_at(a->M, a->K, i, k) : a->A + i * a->lda + k;
}

/* Rows [i0, i0 + mc) and depths [p0, p0 + kc) of op(A) into panels of MR rows, zero past M.
 * Each panel row gathers MR values: one run of the transposed storage, or one value from
 * each of MR rows of A. */
GEMM_AVX512 static void pack_a(const gemm_a *a, int64_t i0, int64_t mc, int64_t p0, int64_t kc,
                               float *restrict dst)
{
    const float *A = a->A;
    const int64_t M = a->M, lda = a->lda;
    for (int64_t ip = 0; ip < mc; ip += GEMM_MR) {
        float *restrict panel = dst + ip * kc;
        int64_t i = i0 + ip, rows = M - i < GEMM_MR ? M - i : GEMM_MR;
        if (a->trans) {
            /* One masked vector a panel row (lanes past rows read nothing and give 0): the
             * element by element loop cost as much as a tenth of conv2d's backward-data GEMM,
             * which packs the whole weight again for every image. */
            for (int64_t k = 0; k < kc; k++)
                _mm512_mask_storeu_ps(
                    panel + k * GEMM_MR, tg_lanes16(GEMM_MR),
                    _mm512_maskz_loadu_ps(tg_lanes16(rows), A + (p0 + k) * lda + i));
            continue;
        }
        /* The rows' next 16 depths at a time, a pointer to each (a_at: the caller's panels
         * hold a row in runs). */
        for (int64_t k = 0; k < kc; k += 16) {
            const float *src[GEMM_MR];
            for (int64_t r = 0; r < GEMM_MR; r++)
                src[r] = r < rows ? a_at(a, i + r, p0 + k) : NULL;
            if (kc - k >= 16 && rows == GEMM_MR) {
                /* n a constant: the zero half of the 16 x 16 transpose folds away */
                gather16(src, GEMM_MR, 0, panel + k * GEMM_MR, GEMM_MR);
                continue;
            }
            for (int64_t kk = 0; kk < kc - k && kk < 16; kk++)
                for (int64_t r = 0; r < GEMM_MR; r++)
                    panel[(k + kk) * GEMM_MR + r] = r < rows ? src[r][kk] : 0.0f;
        }
    }
}

/* Columns [j0, j0 + nc) and depths [p0, p0 + kc) of op(B) into panels of NR columns, zero
 * past N. Without transpose a panel row is one run of B (a fixed-size copy, so the compiler
 * inlines it); with it, one value from each of NR rows of the transposed storage. */
GEMM_AVX512 static void pack_b(bool trans, const float *B, int64_t ldb, int64_t N, int64_t j0,
                               int64_t nc, int64_t p0, int64_t kc, float *restrict dst)
{
    for (int64_t jp = 0; jp < nc; jp += GEMM_NR) {
        float *restrict panel = dst + jp * kc;
        int64_t j = j0 + jp, cols = N - j < GEMM_NR ? N - j : GEMM_NR;
        if (!trans) {
            /* Masked vectors (lanes past cols read nothing and give 0): memcpy was a call per
             * panel row, not inlined. */
            for (int64_t k = 0; k < kc; k++) {
                const float *src = B + (p0 + k) * ldb + j;
                for (int v = 0; v < GEMM_NR / 16; v++)
                    _mm512_store_ps(panel + k * GEMM_NR + 16 * v,
                                    _mm512_maskz_loadu_ps(tg_lanes16(cols - 16 * v), src + 16 * v));
            }
            continue;
        }
        const float *src[GEMM_NR];
        for (int64_t c = 0; c < GEMM_NR; c++)
            src[c] = c < cols ? B + (j + c) * ldb + p0 : NULL;
        int64_t k = 0;
        if (cols == GEMM_NR)
            for (; k + 16 <= kc; k += 16)
                for (int h = 0; h < GEMM_NR; h += 16)
                    gather16(src + h, 16, k, panel + k * GEMM_NR + h, GEMM_NR);
        for (; k < kc; k++)
            for (int64_t c = 0; c < GEMM_NR; c++)
                panel[k * GEMM_NR + c] = c < cols ? src[c][k] : 0.0f;
    }
}

/* Rows [0, rows) and columns [0, cols) of acc (MR rows of nv vectors) into C: alpha * acc +
 * beta * C, through masks at the edges; beta 0 never reads C. The end of every kernel. */
GEMM_AVX512 static inline __attribute__((always_inline)) void
store_tile(int nv, __m512 acc[2][GEMM_MR], float *C, int64_t ldc, int64_t rows, int64_t cols,
           float alpha, float beta)
{
    __mmask16 m[2];
    for (int v = 0; v < nv; v++)
        m[v] = tg_lanes16(cols - 16 * v);
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    for (int r = 0; r < rows; r++) {
        float *c = C + r * ldc;
        for (int v = 0; v < nv; v++) {
            __m512 y = _mm512_mul_ps(va, acc[v][r]);
            if (beta != 0.0f)
                y = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m[v], c + 16 * v), y);
            _mm512_mask_storeu_ps(c + 16 * v, m[v], y);
        }
    }
}

/* C[rows, cols] (rows <= MR, cols <= 16 * nv) = alpha * a_panel @ b_panel + beta * C, where
 * beta 0 never reads C (it may hold NaN, as with BLAS). nv is the number of 16-float vectors
 * of the panel computed, a constant in each caller (always inlined): the last panel of a
 * GEMM 196 wide (a 14x14 plane) holds 4 columns, and computing only its first half saves a
 * quarter of that panel's work. Every element sees the same FMAs whatever nv, so the result
 * does not depend on it. */
GEMM_AVX512 static inline __attribute__((always_inline)) void
kernel_body(int nv, int64_t kc, const float *restrict a, const float *restrict b, float *C,
            int64_t ldc, int64_t rows, int64_t cols, float alpha, float beta)
{
    __m512 acc[2][GEMM_MR];
    for (int v = 0; v < nv; v++)
        for (int r = 0; r < GEMM_MR; r++)
            acc[v][r] = _mm512_setzero_ps();
    for (int64_t k = 0; k < kc; k++) {
        __m512 bv[2];
        for (int v = 0; v < nv; v++)
            bv[v] = _mm512_load_ps(b + 16 * v);
        for (int r = 0; r < GEMM_MR; r++) {
            __m512 ar = _mm512_set1_ps(a[r]);
            for (int v = 0; v < nv; v++)
                acc[v][r] = _mm512_fmadd_ps(ar, bv[v], acc[v][r]);
        }
        a += GEMM_MR;
        b += GEMM_NR;
    }
    store_tile(nv, acc, C, ldc, rows, cols, alpha, beta);
}

/* The MR x NR micro-kernel: both vectors of the panel, or only the first where the panel
 * holds at most 16 columns (see kernel_body). */
GEMM_AVX512 static void kernel_8x32(int64_t kc, const float *restrict a, const float *restrict b,
                                    float *C, int64_t ldc, int64_t rows, int64_t cols, float alpha,
                                    float beta)
{
    if (cols > 16)
        kernel_body(2, kc, a, b, C, ldc, rows, cols, alpha, beta);
    else
        kernel_body(1, kc, a, b, C, ldc, rows, cols, alpha, beta);
}

/* ---- bf16 mode (tg_set_matmul_precision) ---------------------------------------------------
 * The FP32 panels that pack_a and the B packers wrote are converted, rounding to nearest even,
 * into pairs of depths: an A panel [kc][MR] into [kc/2][MR][2], a B panel [kc][NR] into
 * [kc/2][NR][2], an odd kc padded with a zero depth. VDPBF16PS then multiplies a broadcast pair
 * of one A row by 16 pairs of B columns and adds both products into 16 FP32 accumulators: the
 * same 8 x 32 tile, half the instructions. Converting after packing keeps one set of packers
 * (the convolutions' included) for both precisions; the conversion reads panels that are
 * still in cache, and each is reused by every tile of its row or column block. Measured on
 * this project's machines (Sapphire Rapids-class cores under KVM), VDPBF16PS issues at a
 * quarter of VFMADD231PS's rate, so this kernel runs at 0.6-0.75x the FP32 one: it is the
 * path of CPUs with AVX512_BF16 but no AMX (AMD's), and AMX (below) is the one that pays. */

/* Two rows of 16 FP32 values as one vector of bf16 depth pairs: lanes 2c and 2c + 1 are a[c]
 * and b[c], rounded to nearest even. */
GEMM_BF16 static inline __m512bh bf16_interleave(__m512 a, __m512 b)
{
    const __m512i lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i hi =
        _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    return _mm512_cvtne2ps_pbh(_mm512_permutex2var_ps(a, hi, b), _mm512_permutex2var_ps(a, lo, b));
}

/* The kernels of gemm_columns: FP32 (kernel_8x32), VDPBF16PS (kernel_8x32_bf16) or AMX tiles
 * (amx_block). */
typedef enum { GEMM_KERNEL_FP32, GEMM_KERNEL_DPBF16, GEMM_KERNEL_AMX } gemm_kernel;

/* The depth of a bf16 panel: kc rounded up to a pair (VDPBF16PS) or to the 32 depths of a tile
 * (AMX), the rest zeros. */
static inline int64_t bf16_depth(gemm_kernel kernel, int64_t kc)
{
    const int64_t step = kernel == GEMM_KERNEL_AMX ? 32 : 2;
    return (kc + step - 1) / step * step;
}

/* The A panels of a row block of mc rows (pack_a's output) as bf16 pairs. Lane 2r of a depth
 * pair is row r at depth k, lane 2r + 1 the same row at k + 1. */
GEMM_BF16 static void bf16_pairs_a(const float *src, int64_t mc, int64_t kc, uint16_t *dst)
{
    _Static_assert(2 * GEMM_MR == 16, "one vector holds a depth pair of an A panel");
    const __m512i idx = _mm512_set_epi32(15, 7, 14, 6, 13, 5, 12, 4, 11, 3, 10, 2, 9, 1, 8, 0);
    const int64_t kc2 = bf16_depth(GEMM_KERNEL_DPBF16, kc);
    for (int64_t ip = 0; ip < mc; ip += GEMM_MR) {
        const float *panel = src + ip * kc;
        uint16_t *out = dst + ip * kc2;
        for (int64_t k = 0; k < kc; k += 2) {
            /* At an odd kc's last depth only its MR values are read: the pair's second half
             * is the zero padding. */
            __m512 v = _mm512_maskz_loadu_ps(tg_lanes16((kc - k) * GEMM_MR), panel + k * GEMM_MR);
            __m256bh h = _mm512_cvtneps_pbh(_mm512_permutexvar_ps(idx, v));
            _mm256_storeu_si256((__m256i *)(out + k * GEMM_MR), (__m256i)h);
        }
    }
}

/* The B panels of a column block of nc columns (a packer's output) as bf16 pairs, kc2 depths
 * each (bf16_depth: zeros past kc). In a depth pair, lanes 2c and 2c + 1 of vector v are
 * column 16 v + c at depths k and k + 1. That is also the layout of AMX's B tiles: a tile row
 * is a depth pair of 16 columns, 64 bytes, the next one 2 * NR values further. */
GEMM_BF16 static void bf16_pairs_b(const float *src, int64_t nc, int64_t kc, int64_t kc2,
                                   uint16_t *dst)
{
    for (int64_t jp = 0; jp < nc; jp += GEMM_NR) {
        const float *panel = src + jp * kc;
        uint16_t *out = dst + jp * kc2;
        for (int64_t k = 0; k < kc2; k += 2) {
            const float *r0 = panel + k * GEMM_NR, *r1 = r0 + GEMM_NR;
            for (int v = 0; v < GEMM_NR / 16; v++) {
                __m512 a = k < kc ? _mm512_load_ps(r0 + 16 * v) : _mm512_setzero_ps();
                __m512 b = k + 1 < kc ? _mm512_load_ps(r1 + 16 * v) : _mm512_setzero_ps();
                _mm512_store_si512(out + k * GEMM_NR + 32 * v, (__m512i)bf16_interleave(a, b));
            }
        }
    }
}

/* kernel_body on bf16 pairs: kc depths (kc2 / 2 pairs) of a converted A and B panel. */
GEMM_BF16 static inline __attribute__((always_inline)) void
kernel_bf16_body(int nv, int64_t kc, const uint16_t *restrict a, const uint16_t *restrict b,
                 float *C, int64_t ldc, int64_t rows, int64_t cols, float alpha, float beta)
{
    __m512 acc[2][GEMM_MR];
    for (int v = 0; v < nv; v++)
        for (int r = 0; r < GEMM_MR; r++)
            acc[v][r] = _mm512_setzero_ps();
    for (int64_t k = 0; k < kc; k += 2) {
        __m512bh bv[2];
        for (int v = 0; v < nv; v++)
            bv[v] = (__m512bh)_mm512_load_si512(b + 32 * v);
        for (int r = 0; r < GEMM_MR; r++) {
            uint32_t pair;
            memcpy(&pair, a + 2 * r, sizeof pair);
            __m512bh ar = (__m512bh)_mm512_set1_epi32((int)pair);
            for (int v = 0; v < nv; v++)
                acc[v][r] = _mm512_dpbf16_ps(acc[v][r], ar, bv[v]);
        }
        a += 2 * GEMM_MR;
        b += 2 * GEMM_NR;
    }
    store_tile(nv, acc, C, ldc, rows, cols, alpha, beta);
}

GEMM_BF16 static void kernel_8x32_bf16(int64_t kc, const uint16_t *restrict a,
                                       const uint16_t *restrict b, float *C, int64_t ldc,
                                       int64_t rows, int64_t cols, float alpha, float beta)
{
    if (cols > 16)
        kernel_bf16_body(2, kc, a, b, C, ldc, rows, cols, alpha, beta);
    else
        kernel_bf16_body(1, kc, a, b, C, ldc, rows, cols, alpha, beta);
}

/* ---- AMX (AMX-TILE, AMX-BF16) ----------------------------------------------------------------
 * Where the CPU has them, bf16 mode runs on tiles: TDPBF16PS adds a 16 x 32 bf16 A tile times
 * a 32 x 16 B tile (16 depth pairs of 16 columns) into a 16 x 16 FP32 tile of C, 8192
 * multiply-adds an instruction; VDPBF16PS does 32, and on this project's machines at a quarter
 * of VFMADD231PS's rate, so it runs slower than FP32 there (docs/design.md, section 9). A
 * 32 x 32 block of C takes 4 accumulator tiles, two A tiles and two B tiles (all 8). The B
 * panels are bf16_pairs_b's, padded to a multiple of 32 depths; A is converted straight from
 * its storage into rows of bf16 (a tile row is 32 depths of one row of C). */
#define GEMM_AMX __attribute__((target("avx512f,avx512bf16,avx512bw,avx512vl,amx-tile,amx-bf16")))

/* LDTILECFG's 64 bytes: palette 1, every tile 16 rows of 64 bytes. */
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_config;

GEMM_AMX static void amx_begin(void)
{
    amx_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.rows[t] = 16;
        cfg.colsb[t] = 64;
    }
    /* GCC 12's _tile_loadconfig tells the compiler it reads 8 bytes, so it dropped the stores
     * of the rest (LDTILECFG then faulted): a barrier makes them happen. */
    __asm__ volatile("" : : "r"(&cfg) : "memory");
    _tile_loadconfig(&cfg);
}

GEMM_AMX static void amx_end(void)
{
    _tile_release();
}

/* Rows [i0, i0 + mc) and depths [p0, p0 + kc) of op(A) as bf16 rows of kcp values (kcp = kc
 * rounded up to 32), rows up to mc rounded up to 32, zeros past mc and kc. Stored op(A) rows
 * (!trans) convert as they are; stored columns through 16 x 16 transposes. */
GEMM_AMX static void amx_pack_a(const gemm_a *a, int64_t i0, int64_t mc, int64_t p0, int64_t kc,
                                int64_t kcp, uint16_t *dst)
{
    const float *A = a->A;
    const int64_t mcp = (mc + 31) / 32 * 32, lda = a->lda;
    if (!a->trans) {
        for (int64_t i = 0; i < mcp; i++) {
            const int64_t n = i < mc ? kc : 0;
            for (int64_t k = 0; k < kcp; k += 32) {
                /* 32 depths from p0 + k, a multiple of 32: one run of the caller's panels */
                const float *src = a_at(a, i0 + i, p0 + k);
                __m512 lo = _mm512_maskz_loadu_ps(tg_lanes16(n - k), src);
                __m512 hi = _mm512_maskz_loadu_ps(tg_lanes16(n - k - 16), src + 16);
                _mm512_store_si512(dst + i * kcp + k, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
            }
        }
        return;
    }
    for (int64_t i = 0; i < mcp; i += 16)
        for (int64_t k = 0; k < kcp; k += 32) {
            __m512 r[2][16];
            for (int h = 0; h < 2; h++) {
                for (int d = 0; d < 16; d++) {
                    const int64_t depth = k + 16 * h + d;
                    r[h][d] = depth < kc ? _mm512_maskz_loadu_ps(tg_lanes16(mc - i),
                                                                 A + (p0 + depth) * lda + i0 + i)
                                         : _mm512_setzero_ps();
                }
                tg_transpose16(r[h]); /* r[h][c]: row i + c, depths k + 16 h ... */
            }
            for (int c = 0; c < 16; c++)
                _mm512_store_si512(dst + (i + c) * kcp + k,
                                   (__m512i)_mm512_cvtne2ps_pbh(r[1][c], r[0][c]));
        }
}

/* C[rows, cols] (rows <= 32, cols <= NR) = alpha * a @ b + beta * C for 32 rows of amx_pack_a's
 * output (row stride kcp) and one B panel of kcp depths; the tail is store_tile's, 8 rows at a
 * time. */
GEMM_AMX static void amx_block(int64_t kcp, const uint16_t *a, const uint16_t *b, float *C,
                               int64_t ldc, int64_t rows, int64_t cols, float alpha, float beta)
{
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    const int64_t a_stride = kcp * 2, b_stride = GEMM_NR * 2 * 2;
    for (int64_t k = 0; k < kcp; k += 32) {
        _tile_loadd(4, a + k, a_stride);
        _tile_loadd(5, a + 16 * kcp + k, a_stride);
        _tile_loadd(6, b + k * GEMM_NR, b_stride);
        _tile_loadd(7, b + k * GEMM_NR + 32, b_stride);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    float tile[32][GEMM_NR] __attribute__((aligned(64)));
    _tile_stored(0, &tile[0][0], GEMM_NR * 4);
    _tile_stored(1, &tile[0][16], GEMM_NR * 4);
    _tile_stored(2, &tile[16][0], GEMM_NR * 4);
    _tile_stored(3, &tile[16][16], GEMM_NR * 4);
    for (int64_t r0 = 0; r0 < rows; r0 += GEMM_MR) {
        __m512 acc[2][GEMM_MR];
        for (int r = 0; r < GEMM_MR; r++)
            for (int v = 0; v < 2; v++)
                acc[v][r] = _mm512_load_ps(&tile[r0 + r][16 * v]);
        store_tile(2, acc, C + r0 * ldc, ldc, rows - r0 < GEMM_MR ? rows - r0 : GEMM_MR, cols,
                   alpha, beta);
    }
}

/* op(B) as stored: pack_b's arguments, the packer of tg_sgemm_avx512. */
typedef struct {
    bool trans;
    const float *B;
    int64_t ldb, N;
} stored_b;

GEMM_AVX512 static void pack_stored_b(const void *ctx, int64_t j0, int64_t nc, int64_t p0,
                                      int64_t kc, float *dst)
{
    const stored_b *s = ctx;
    pack_b(s->trans, s->B, s->ldb, s->N, j0, nc, p0, kc, dst);
}

/* pack_stored_b and bf16_pairs_b in one pass, without the FP32 panels: the AMX kernel is fast
 * enough that packing the transposed B of a linear layer twice took more time than the
 * products (45% of the forward's GEMM against 38%). Without transpose, depth pairs are two
 * rows of B interleaved; with it, a column of op(B) is a stored row whose depths are pairs
 * already once converted, and one 16 x 16 transpose of those pairs (32-bit words) makes 16
 * depth pairs of 16 columns. */
GEMM_BF16 static void pack_stored_b_bf16(const stored_b *s, int64_t j0, int64_t nc, int64_t p0,
                                         int64_t kc, int64_t kc2, uint16_t *dst)
{
    for (int64_t jp = 0; jp < nc; jp += GEMM_NR) {
        uint16_t *panel = dst + jp * kc2;
        const int64_t j = j0 + jp, cols = s->N - j < GEMM_NR ? s->N - j : GEMM_NR;
        if (!s->trans) {
            for (int64_t k = 0; k < kc2; k += 2) {
                const float *r0 = s->B + (p0 + k) * s->ldb + j, *r1 = r0 + s->ldb;
                for (int v = 0; v < GEMM_NR / 16; v++) {
                    const __mmask16 m = tg_lanes16(cols - 16 * v);
                    __m512 a = k < kc ? _mm512_maskz_loadu_ps(m, r0 + 16 * v) : _mm512_setzero_ps();
                    __m512 b =
                        k + 1 < kc ? _mm512_maskz_loadu_ps(m, r1 + 16 * v) : _mm512_setzero_ps();
                    _mm512_store_si512(panel + k * GEMM_NR + 32 * v,
                                       (__m512i)bf16_interleave(a, b));
                }
            }
            continue;
        }
        for (int h = 0; h < GEMM_NR; h += 16)
            for (int64_t k = 0; k < kc2; k += 32) {
                __m512 r[16];
                for (int c = 0; c < 16; c++) {
                    const float *src = s->B + (j + h + c) * s->ldb + p0 + k;
                    const int64_t n = h + c < cols ? kc - k : 0;
                    __m512bh pairs =
                        _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(tg_lanes16(n - 16), src + 16),
                                            _mm512_maskz_loadu_ps(tg_lanes16(n), src));
                    r[c] = _mm512_castsi512_ps((__m512i)pairs);
                }
                tg_transpose16(r); /* r[p]: depth pair k / 2 + p of the 16 columns */
                for (int p = 0; p < 16 && k + 2 * p < kc2; p++)
                    _mm512_store_ps((float *)(panel + (k + 2 * p) * GEMM_NR + 2 * h), r[p]);
            }
    }
}

/* The whole product for the columns [j_begin, j_end) of C, with one thread's buffers; op(B)'s
 * panels come from b's packer (pack_b's output for a B that need not exist in memory) or are
 * b's own. In bf16 mode the panels are converted into the buffer's bf16 part (bf16_pairs_a/b,
 * or amx_pack_a from A itself) for the bf16 kernel. */
GEMM_AVX512 static void gemm_columns(const gemm_a *a, const gemm_b *b, int64_t M, int64_t K,
                                     float alpha, float beta, float *C, int64_t ldc,
                                     int64_t j_begin, int64_t j_end, gemm_kernel kernel, float *buf)
{
    const bool bf16 = kernel != GEMM_KERNEL_FP32, amx = kernel == GEMM_KERNEL_AMX;
    if (amx)
        amx_begin(); /* the tile configuration is the calling thread's */
    float *pa = buf, *pb = buf + (int64_t)GEMM_MC * GEMM_KC;
    uint16_t *pa16 = (uint16_t *)(buf + GEMM_PACK_FLOATS);
    uint16_t *pb16 = pa16 + (int64_t)GEMM_MC * GEMM_KC;
    const int64_t Mp = round_up(M, GEMM_MR), Np = round_up(b->N, GEMM_NR);
    for (int64_t jc = j_begin; jc < j_end; jc += GEMM_NC) {
        int64_t nc = j_end - jc < GEMM_NC ? j_end - jc : GEMM_NC;
        for (int64_t pc = 0; pc < K; pc += GEMM_KC) {
            int64_t kc = K - pc < GEMM_KC ? K - pc : GEMM_KC;
            /* The first depth block scales C by beta; the others add to it. */
            float b_eff = pc == 0 ? beta : 1.0f;
            const int64_t kc2 = bf16_depth(kernel, kc);
            const float *bp = pb;
            if (b->packed) {
                bp = b->packed + pc * Np + jc * kc;
                if (bf16)
                    bf16_pairs_b(bp, nc, kc, kc2, pb16);
            } else if (bf16 && b->pack == pack_stored_b) {
                pack_stored_b_bf16(b->ctx, jc, nc, pc, kc, kc2, pb16);
            } else {
                b->pack(b->ctx, jc, nc, pc, kc, pb);
                if (bf16)
                    bf16_pairs_b(pb, nc, kc, kc2, pb16);
            }
            for (int64_t ic = 0; ic < M; ic += GEMM_MC) {
                int64_t mc = M - ic < GEMM_MC ? M - ic : GEMM_MC;
                if (amx) {
                    amx_pack_a(a, ic, mc, pc, kc, kc2, pa16);
                    for (int64_t jr = 0; jr < nc; jr += GEMM_NR) {
                        int64_t cols = nc - jr < GEMM_NR ? nc - jr : GEMM_NR;
                        for (int64_t ir = 0; ir < mc; ir += 32)
                            amx_block(kc2, pa16 + ir * kc2, pb16 + jr * kc2,
                                      C + (ic + ir) * ldc + jc + jr, ldc,
                                      mc - ir < 32 ? mc - ir : 32, cols, alpha, b_eff);
                    }
                    continue;
                }
                const float *ap = pa;
                if (a->packed)
                    ap = a->packed + pc * Mp + ic * kc;
                else
                    pack_a(a, ic, mc, pc, kc, pa);
                if (bf16)
                    bf16_pairs_a(ap, mc, kc, pa16);
                for (int64_t ir = 0; ir < mc; ir += GEMM_MR) {
                    int64_t rows = mc - ir < GEMM_MR ? mc - ir : GEMM_MR;
                    for (int64_t jr = 0; jr < nc; jr += GEMM_NR) {
                        int64_t cols = nc - jr < GEMM_NR ? nc - jr : GEMM_NR;
                        float *c = C + (ic + ir) * ldc + jc + jr;
                        if (bf16)
                            kernel_8x32_bf16(kc, pa16 + ir * kc2, pb16 + jr * kc2, c, ldc, rows,
                                             cols, alpha, b_eff);
                        else
                            kernel_8x32(kc, ap + ir * kc, bp + jr * kc, c, ldc, rows, cols, alpha,
                                        b_eff);
                    }
                }
            }
        }
    }
    if (amx)
        amx_end();
}

/* The packing buffers of n threads for one call (per thread stride floats), aligned for the
 * kernel's aligned loads. */
static float *gemm_buffers(int n, int64_t stride, size_t *nbytes)
{
    *nbytes = (size_t)n * (size_t)stride * sizeof(float);
    return tg_try_alloc(*nbytes); /* NULL: the caller falls back to OpenBLAS */
}

/* The AVX-512 level of isa.h: the CPU has AVX-512 (valgrind's emulated CPU does not) and
 * TG_ISA does not ask for less. */
static bool have_avx512(void)
{
    return tg_isa() >= TG_ISA_AVX512;
}

/* ---- thin products: one row or one column of C -------------------------------------------
 * A product with M == 1 or N == 1 is a matrix-vector product: the blocked path would pack the
 * whole matrix (a copy of it) to compute one useful column of each 8 x 32 tile, 32 times the
 * work; D's last linear layer (1024 -> 1) took 0.12 ms that way against PyTorch's 0.08. Here
 * the matrix is read once, in place, along its rows: dot products where op's rows are stored
 * rows, row-by-row multiply-adds (axpy) into an accumulator where they are stored columns.
 * One thread: the work is a single pass over memory. */

/* sum a[k] b[k], k < n, in two accumulators of 16 lanes. */
GEMM_AVX512 static float thin_dot(const float *a, const float *b, int64_t n)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 32 <= n; k += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k), _mm512_loadu_ps(b + k), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k + 16), _mm512_loadu_ps(b + k + 16), s1);
    }
    for (; k < n; k += 16) {
        const __mmask16 m = tg_lanes16(n - k);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + k), _mm512_maskz_loadu_ps(m, b + k), s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

/* y[j] += a * x[j], j < n. */
GEMM_AVX512 static void thin_axpy(float a, const float *x, float *y, int64_t n)
{
    const __m512 va = _mm512_set1_ps(a);
    for (int64_t j = 0; j < n; j += 16) {
        const __mmask16 m = tg_lanes16(n - j);
        _mm512_mask_storeu_ps(
            y + j, m,
            _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + j), _mm512_maskz_loadu_ps(m, y + j)));
    }
}

/* y = op(Mat) v for op(Mat) [R, K]: Mat's rows are op's rows (rows_stored: row r at
 * Mat + r * ld) or its columns (column r at Mat + r, row k at Mat + k * ld). v is contiguous;
 * out[r * ldo] = alpha y[r] + beta out[r * ldo], beta 0 never reading out. acc holds R floats. */
GEMM_AVX512 static void thin_product(bool rows_stored, int64_t R, int64_t K, float alpha,
                                     const float *Mat, int64_t ld, const float *v, float beta,
                                     float *out, int64_t ldo, float *acc)
{
    if (rows_stored) {
        for (int64_t r = 0; r < R; r++)
            acc[r] = thin_dot(Mat + r * ld, v, K);
    } else {
        memset(acc, 0, (size_t)R * sizeof(float));
        for (int64_t k = 0; k < K; k++)
            thin_axpy(v[k], Mat + k * ld, acc, R);
    }
    for (int64_t r = 0; r < R; r++)
        out[r * ldo] = alpha * acc[r] + (beta != 0.0f ? beta * out[r * ldo] : 0.0f);
}

/* C = alpha op(A) op(B) + beta C when M == 1 or N == 1, at the AVX-512 level; false, having
 * done nothing, for other shapes, an empty product or no memory (the caller goes on). With
 * N == 1, C's column is op(A) [M, K] times op(B)'s column; with M == 1, C's row, transposed, is
 * op(B)^T [N, K] times op(A)'s row. The vector is copied when it is strided. */
GEMM_AVX512 static bool gemm_thin(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                                  float alpha, const float *A, int64_t lda, const float *B,
                                  int64_t ldb, float beta, float *C, int64_t ldc)
{
    if (!(M == 1 || N == 1) || M <= 0 || N <= 0 || K <= 0 || !have_avx512())
        return false;
    const bool column = N == 1;
    /* The matrix, whether its stored rows are op's rows, the vector and its stride. */
    const float *Mat = column ? A : B, *vec = column ? B : A;
    const int64_t ld = column ? lda : ldb, R = column ? M : N;
    const bool rows_stored = column ? !trans_a : trans_b;
    const int64_t inc = column ? (trans_b ? 1 : ldb) : (trans_a ? lda : 1);
    const bool copy = inc != 1 && K > 1;
    const size_t bytes = (size_t)(R + (copy ? K : 0)) * sizeof(float);
    float *acc = tg_try_alloc(bytes);
    if (!acc)
        return false;
    if (copy) {
        float *v = acc + R;
        for (int64_t k = 0; k < K; k++)
            v[k] = vec[k * inc];
        vec = v;
    }
    thin_product(rows_stored, R, K, alpha, Mat, ld, vec, beta, C, column ? ldc : 1, acc);
    tg_free(acc, bytes);
    return true;
}
#endif

tg_status tg_set_matmul_precision(tg_matmul_precision p)
{
    if (p != TG_MATMUL_FP32 && p != TG_MATMUL_BF16)
        return tg_set_error(TG_ERR_ARG,
                            "tg_set_matmul_precision: precision %d is neither TG_MATMUL_FP32 (%d) "
                            "nor TG_MATMUL_BF16 (%d)",
                            (int)p, TG_MATMUL_FP32, TG_MATMUL_BF16);
    /* Linux lends the tiles on request only: asked here, once, so FP32 users never ask. */
    if (p == TG_MATMUL_BF16 && tg_isa_has_bf16())
        tg_isa_amx_enable();
    atomic_store(&matmul_precision, (int)p);
    return TG_OK;
}

tg_matmul_precision tg_get_matmul_precision(void)
{
    return (tg_matmul_precision)atomic_load_explicit(&matmul_precision, memory_order_relaxed);
}

bool tg_matmul_bf16_active(void)
{
    return tg_get_matmul_precision() == TG_MATMUL_BF16 && tg_isa_has_bf16();
}

bool tg_sgemm_avx512_active(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    return have_avx512();
#else
    return false;
#endif
}

int tg_sgemm_avx512_threads(int64_t M, int64_t N, int64_t K)
{
    int threads = tg_get_num_threads();
#ifdef _OPENMP
    /* Inside the user's own parallel region: on the calling thread alone, as tg_sgemm. */
    if (omp_in_parallel())
        threads = 1;
#endif
    if (threads > GEMM_MAX_THREADS)
        threads = GEMM_MAX_THREADS;
    /* Column slabs of whole panels, at least one panel each. */
    int64_t panels = (N + GEMM_NR - 1) / GEMM_NR;
    if (threads > panels)
        threads = panels > 1 ? (int)panels : 1;
    if ((double)M * N * K < 1e6)
        threads = 1; /* below about 50 us of work the fork costs more than it saves */
    return threads;
}

int64_t tg_gemm_buffer_floats(void)
{
    return GEMM_PACK_FLOATS_BF16;
}

/* Every entry point: false, having done nothing, where our kernels cannot run (no AVX-512, an
 * empty product, or no memory for the packing buffers). own, when not NULL, is the caller's
 * buffer of tg_gemm_buffer_floats(): the product runs on one thread in it when it would, or
 * when the buffers of more cannot be had, so that it never lacks memory. */
static bool gemm_run(const gemm_a *a, const gemm_b *b, int64_t M, int64_t N, int64_t K, float alpha,
                     float beta, float *C, int64_t ldc, float *own)
{
#if defined(__x86_64__) && defined(__GNUC__)
    int threads = tg_sgemm_avx512_threads(M, N, K);
    const int64_t panels = (N + GEMM_NR - 1) / GEMM_NR;
    /* Read once: every thread of the product runs the same precision. */
    const gemm_kernel kernel = !tg_matmul_bf16_active()            ? GEMM_KERNEL_FP32
                               : tg_gemm_amx && tg_isa_amx_ready() ? GEMM_KERNEL_AMX
                                                                   : GEMM_KERNEL_DPBF16;
    const int64_t stride = kernel != GEMM_KERNEL_FP32 ? GEMM_PACK_FLOATS_BF16 : GEMM_PACK_FLOATS;
    if (!(M > 0 && N > 0 && K > 0 && have_avx512()))
        return false;
    size_t buf_bytes = 0;
    float *buf = own && threads == 1 ? NULL : gemm_buffers(threads, stride, &buf_bytes);
    if (!buf && !own)
        return false;
    if (!buf)
        buf = own, threads = 1, buf_bytes = 0;
    if (threads == 1) {
        /* No region at all: one whose if clause is false still enters libgomp (a futex call,
         * tensor/parallel.h), and the GAN's small per-image GEMMs made 905 of those per
         * iteration, most of them from threads that run images in parallel (autograd/conv.c). */
        gemm_columns(a, b, M, K, alpha, beta, C, ldc, 0, N, kernel, buf);
        if (buf_bytes)
            tg_free(buf, buf_bytes);
        return true;
    }
#ifdef _OPENMP
    TG_PRAGMA(omp parallel for schedule(static) num_threads(threads))
#endif
    for (int t = 0; t < threads; t++) {
        int64_t j0 = panels * t / threads * GEMM_NR, j1 = panels * (t + 1) / threads * GEMM_NR;
        if (j1 > N)
            j1 = N;
        gemm_columns(a, b, M, K, alpha, beta, C, ldc, j0, j1, kernel, buf + t * stride);
    }
    tg_free(buf, buf_bytes);
    return true;
#else
    (void)a, (void)b, (void)M, (void)N, (void)K, (void)alpha, (void)beta, (void)C, (void)ldc;
    (void)own;
    return false;
#endif
}

void tg_sgemm_avx512(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                     const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                     int64_t ldc)
{
#if defined(__x86_64__) && defined(__GNUC__)
    if (gemm_thin(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc))
        return;
    const stored_b sb = {.trans = trans_b, .B = B, .ldb = ldb, .N = N};
    const gemm_a a = {.trans = trans_a, .A = A, .lda = lda, .M = M, .K = K};
    const gemm_b b = {.pack = pack_stored_b, .ctx = &sb, .N = N};
    if (gemm_run(&a, &b, M, N, K, alpha, beta, C, ldc, NULL))
        return;
#endif
    tg_sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

bool tg_sgemm_avx512_packb(bool trans_a, int64_t M, int64_t N, int64_t K, float alpha,
                           const float *A, int64_t lda, tg_gemm_pack_b_fn pack, const void *ctx,
                           float beta, float *C, int64_t ldc)
{
    const gemm_a a = {.trans = trans_a, .A = A, .lda = lda, .M = M, .K = K};
    const gemm_b b = {.pack = pack, .ctx = ctx, .N = N};
    return gemm_run(&a, &b, M, N, K, alpha, beta, C, ldc, NULL);
}

int64_t tg_gemm_packed_a_floats(int64_t M, int64_t K)
{
    return round_up(M, GEMM_MR) * K;
}

bool tg_gemm_pack_a(bool trans, int64_t M, int64_t K, const float *A, int64_t lda, float *dst)
{
#if defined(__x86_64__) && defined(__GNUC__)
    if (!have_avx512())
        return false;
    const gemm_a a = {.trans = trans, .A = A, .lda = lda, .M = M, .K = K};
    const int64_t Mp = round_up(M, GEMM_MR);
    for (int64_t pc = 0; pc < K; pc += GEMM_KC)
        pack_a(&a, 0, Mp, pc, K - pc < GEMM_KC ? K - pc : GEMM_KC, dst + pc * Mp);
    return true;
#else
    (void)trans, (void)M, (void)K, (void)A, (void)lda, (void)dst;
    return false;
#endif
}

bool tg_sgemm_avx512_ops(const tg_gemm_operand *a, const tg_gemm_operand *b, int64_t M, int64_t N,
                         int64_t K, float alpha, float beta, float *C, int64_t ldc, float *buf)
{
    const gemm_a ga = {.trans = a->trans && !a->panels,
                       .panels = a->panels,
                       .A = a->data,
                       .lda = a->ld,
                       .M = M,
                       .K = K,
                       .packed = a->packed};
#if defined(__x86_64__) && defined(__GNUC__)
    const stored_b sb = {.trans = b->trans, .B = b->data, .ldb = b->ld, .N = N};
    const gemm_b gb = {
        .pack = pack_stored_b, .ctx = &sb, .packed = b->panels ? b->data : NULL, .N = N};
#else
    const gemm_b gb = {.packed = b->panels ? b->data : NULL, .N = N};
#endif
    return gemm_run(&ga, &gb, M, N, K, alpha, beta, C, ldc, buf);
}
