/* tensor/ internals shared by the library's own files; never installed. */
#ifndef TAPEGRAD_TENSOR_INTERNAL_H
#define TAPEGRAD_TENSOR_INTERNAL_H

#include "isa.h"
#include "tensor.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

/* An engine bug (never a user mistake): print where and abort. */
#define TG_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "tapegrad: internal error at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Refcounted buffer behind one or more tensors. version counts in-place changes. */
struct tg_storage {
    int64_t refcount;
    size_t nbytes;
    float *data;
    uint64_t version;
};

/* ---- caching allocator (storage.c) -----------------------------------------------------
 * Buffers are 64-byte aligned and rounded up to a size bucket; freed buffers wait in one
 * process-wide cache (storage.c, under a mutex) for the next request of the same bucket. */
void *tg_alloc(size_t nbytes); /* NULL on failure (error set) */
void *tg_alloc_zeroed(size_t nbytes);
/* tg_alloc for working space whose caller has another way when memory runs out: NULL then,
 * with tg_alloc's error withdrawn unless one was already pending. */
void *tg_try_alloc(size_t nbytes);
void tg_free(void *ptr, size_t nbytes); /* nbytes as given to tg_alloc */
/* Nonzero (the default): tg_alloc serves requests of 256 KiB and up from its first-fit heap
 * (storage.c); 0: from the size classes, i.e. posix_memalign (the fuzz target, which caps
 * buffers there). Frees go where their buffer came from either way. */
extern int tg_alloc_arena;

tg_storage *tg_storage_new(size_t nbytes);
void tg_storage_release(tg_storage *s);

/* Validates a shape given by a caller (ndim range, NULL shape, tg_shape_numel's rule): its
 * numel, or -1 with an error whose message starts with fn. */
int64_t tg_shape_check(const char *fn, int ndim, const int64_t *shape);
/* Sets and returns the error of a function (fn) given TG_NONE for argument arg, which must be
 * a tensor. */
tg_status tg_none_refused(const char *fn, const char *arg);
/* A reference held by a tape or a graph node (autograd/tape.c): counted in t->held too, so
 * that tg_tensor_release can refuse to end it. tg_hold adds one (also to refcount); tg_hold_adopt
 * turns the caller's existing reference into a held one; tg_unhold ends a held one. */
void tg_hold(tg_tensor *t);
void tg_hold_adopt(tg_tensor *t);
void tg_unhold(tg_tensor *t);
void tg_index_hold(tg_index *ix);
void tg_index_hold_adopt(tg_index *ix);
void tg_index_unhold(tg_index *ix);
/* A tensor struct over an existing storage (retained), starting at data. */
tg_tensor *tg_tensor_wrap(tg_storage *s, float *data, int ndim, const int64_t *shape);

/* Live counters (atomics, shared with autograd/ for nodes). */
extern _Atomic int64_t tg_live_tensors;
extern _Atomic int64_t tg_live_nodes;
extern _Atomic int64_t tg_live_bytes;

/* ---- small shared helpers (util.c) ----------------------------------------------------- */

/* Grows *arr (elements of elem bytes, capacity *cap) to hold at least need; doubles. False
 * when out of memory (*arr unchanged). */
bool tg_grow(void **arr, int64_t *cap, int64_t need, size_t elem);
/* Length of the valid multi-byte UTF-8 sequence at s (n bytes available; a NUL ends it too),
 * or 0 when it is invalid: overlong, a surrogate, above U+10FFFF, cut short, or ASCII. */
int tg_utf8_len(const unsigned char *s, int64_t n);

/* ---- threads (blas.c) --------------------------------------------------------------------
 * The num_threads clause of every parallel region of the library (parallel.h's macros, gemm.c):
 * the process-wide count of tg_set_num_threads, which OpenMP's per-thread default is not. */
#define TG_OMP_NUM_THREADS num_threads(tg_get_num_threads())

/* ---- GEMM (blas.c, the only file that includes <cblas.h>) ------------------------------
 * C[M,N] = alpha * op(A)[M,K] @ op(B)[K,N] + beta * C, row-major, with leading dimensions.
 * With tg_get_num_threads() threads; without a team of its own inside an OpenMP parallel
 * region (a user's own: the library never calls it from one of its regions; see blas.c). */
void tg_sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
              int64_t ldc);
/* The same product by our own AVX-512 kernels (gemm.c) at the AVX-512 level (isa.h: the CPU
 * has it and TG_ISA does not lower it), else by tg_sgemm: OpenBLAS's kernel choice may be AVX2
 * on AVX-512 machines (OPENBLAS_CORETYPE). */
void tg_sgemm_avx512(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                     const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                     int64_t ldc);
/* The same product with op(B) given by its packer instead of its storage (implicit GEMM: the
 * convolutions pack their columns straight from the image). pack(ctx, j0, nc, p0, kc, dst)
 * must write what gemm.c's packing of a stored op(B) [K, N] writes: for the columns [j0,
 * j0 + nc) and depths [p0, p0 + kc), panels of TG_GEMM_NR columns at dst + jp * kc (jp = 0,
 * TG_GEMM_NR, ...), each [kc][TG_GEMM_NR] with zeros past column N; dst is 64-byte aligned.
 * Threads call it at once for their own columns: it must only read shared data. False, having
 * done nothing, where tg_sgemm_avx512 would use OpenBLAS or memory runs out: the caller then
 * computes the product another way. */
#define TG_GEMM_NR 32
typedef void (*tg_gemm_pack_b_fn)(const void *ctx, int64_t j0, int64_t nc, int64_t p0, int64_t kc,
                                  float *dst);
bool tg_sgemm_avx512_packb(bool trans_a, int64_t M, int64_t N, int64_t K, float alpha,
                           const float *A, int64_t lda, tg_gemm_pack_b_fn pack, const void *ctx,
                           float beta, float *C, int64_t ldc);
/* Operands in the kernels' layouts, for callers that use one many times (Winograd's U,
 * packed once per call instead of once per product) or can write one straight in them
 * (Winograd's transforms). Both layouts go by depth blocks of TG_GEMM_KC from p0 = 0, kc =
 * min(TG_GEMM_KC, K - p0) depths each:
 *   packed op(A) [M, K]: panels of TG_GEMM_MR rows, [kc][TG_GEMM_MR] each, row i0's panel at
 *     p0 * Mp + i0 * kc (Mp = M rounded up to TG_GEMM_MR), zeros past M: tg_gemm_pack_a's
 *     output, tg_gemm_packed_a_floats(M, K) floats;
 *   panels of X [R, N] (B's layout): TG_GEMM_NR columns each, [kc][TG_GEMM_NR] (kc of R's
 *     blocks), column j0's at p0 * Np + j0 * kc (Np = N rounded up to TG_GEMM_NR), zeros past
 *     N, 64-byte aligned: element (r, j) at tg_gemm_packed_b_at(R, N, r, j), Np * R floats.
 * tg_sgemm_avx512_ops computes C = alpha op(A) op(B) + beta C, the same bits as
 * tg_sgemm_avx512's blocked path, with each operand given as a tg_gemm_operand: stored (data,
 * ld, trans), or in panels (op(B) [K, N] read where it is; op(A) [M, K] packed from them). An
 * A may also come packed whole (packed, from tg_gemm_pack_a; data stays its source for the
 * AMX kernel of bf16 mode). buf (or NULL) is tg_gemm_buffer_floats() floats, 64-byte aligned,
 * of the caller's: with it the product never lacks memory (it runs on one thread there when
 * more threads' buffers cannot be had). False, having done nothing, below the AVX-512 level,
 * for an empty product or without memory when buf is NULL; tg_gemm_pack_a is false below the
 * AVX-512 level. */
#define TG_GEMM_MR 8
#define TG_GEMM_KC 256
typedef struct {
    const float *data;
    int64_t ld;
    bool trans, panels;
    const float *packed; /* op(A) only: tg_gemm_pack_a's output, or NULL */
} tg_gemm_operand;
int64_t tg_gemm_packed_a_floats(int64_t M, int64_t K);
bool tg_gemm_pack_a(bool trans, int64_t M, int64_t K, const float *A, int64_t lda, float *dst);
static inline int64_t tg_gemm_packed_b_at(int64_t R, int64_t N, int64_t r, int64_t j)
{
    const int64_t p0 = r / TG_GEMM_KC * TG_GEMM_KC, kc = R - p0 < TG_GEMM_KC ? R - p0 : TG_GEMM_KC;
    const int64_t Np = (N + TG_GEMM_NR - 1) / TG_GEMM_NR * TG_GEMM_NR;
    return p0 * Np + j / TG_GEMM_NR * TG_GEMM_NR * kc + (r - p0) * TG_GEMM_NR + j % TG_GEMM_NR;
}
int64_t tg_gemm_buffer_floats(void);
bool tg_sgemm_avx512_ops(const tg_gemm_operand *a, const tg_gemm_operand *b, int64_t M, int64_t N,
                         int64_t K, float alpha, float beta, float *C, int64_t ldc, float *buf);
/* Nonzero (the default): bf16 mode runs on AMX tiles where the CPU has them (gemm.c); 0: on
 * VDPBF16PS. Tests and bench_gemm set it to check and time both kernels. */
extern int tg_gemm_amx;
/* True when tg_sgemm_avx512 runs our kernels (the AVX-512 level), not OpenBLAS. */
bool tg_sgemm_avx512_active(void);
/* The threads our GEMM splits an M x N x K product between when the calling thread asks: 1
 * for products too small to pay for a fork or too narrow to split, and inside a parallel
 * region. Callers with many such products run them in parallel instead (autograd/conv.c). */
int tg_sgemm_avx512_threads(int64_t M, int64_t N, int64_t K);

/* ---- convolutions (autograd/conv.c) ------------------------------------------------------
 * Nonzero (the default): the GEMMs whose B operand is the im2col columns pack them straight
 * from the image (implicit GEMM, at the AVX-512 level); 0: they read columns written by im2col.
 * Both give bit-identical results; tests and bench_conv set it to compare the two. */
extern int tg_conv_implicit;
/* Nonzero (the default): where the implicit GEMMs run, the weight gradient of an image whose
 * columns have at most 12 rows (Ci*kh*kw) and no padding runs direct loops with the GEMM's
 * bits (autograd/conv.c, wgrad_taps); 0: the GEMM. Tests set it to compare the two. */
extern int tg_conv_wgrad_taps;
/* Nonzero (the default): conv2d's data gradient and conv_transpose2d's forward run as implicit
 * GEMMs over the output gradient (or x), without col2im (at the AVX-512 level, where
 * autograd/conv.c's conv_dgrad applies); 0: through col2im. The two differ by rounding only;
 * tests and bench_conv set it to compare them. */
extern int tg_conv_implicit_dx;
/* Nonzero (the default): where the images of a chunk each make a GEMM too small for our GEMM
 * to split between threads, the threads take whole images instead (autograd/conv.c,
 * conv_image_team), as conv2d's forward does where chunks hold one image and the GEMMs pack
 * from it (conv2d_forward_team); 0: image after image. y and the data gradient are bit-identical either
 * way; the weight gradient sums the threads' images apart (bounded rounding); the bias
 * gradient sums a chunk's images in double. Tests and bench_conv set it to compare. */
extern int tg_conv_image_parallel;
/* Nonzero (the default): conv2d runs as Winograd F(4x4, 3x3) / F(4x4, 5x5) where
 * autograd/winograd.c's tg_winograd_applies; 0: the paths above. Differs by rounding only. */
extern int tg_conv_winograd;
/* 1 (the default): the direct loops' stride-1 data gradient is a correlation
 * (autograd/conv_direct.c); 0: a scatter; 2: also conv2d with one input channel on the direct
 * loops (slower than the lowering on the GAN's layer). Differ by rounding only; set between
 * tapes (it sizes the working space). */
extern int tg_conv_direct;
/* 1 (the default): the direct loops' blocks at stride 1 and dilation 1 load each input tile
 * once for every output row it feeds (direct_block_s1); 0: once per row and tap. The same
 * bits; tests compare them. */
extern int tg_conv_direct_shared_loads;
/* 1 (the default): bilinear upsampling's column passes run on vectors where rows are short
 * (autograd/resize.c, col_plan); 0: the scalar loops. The same bits; tests compare them. */
extern int tg_upsample_short_rows;

/* Around a module's forward (nn/module.c): results recorded while one runs are its internals,
 * except the outermost module's outputs, which tg_tape_module_leave hands back unmarked. A
 * first-order backward (tg_backward, tg_backward_grad) frees an internal result's data and its
 * node's saved state once it has passed them, as PyTorch frees a graph's saved tensors without
 * retain_graph; tg_grad and create_graph keep everything (autograd/tape.c). */
void tg_tape_module_enter(void);
void tg_tape_module_leave(tg_tensor *const *out, int64_t n_out);

#endif
