/* Winograd convolutions for conv2d (autograd/winograd.c): internal to the library and its
 * tests, never installed. conv.c's conv2d forward and backward call them where
 * tg_winograd_applies; docs/design.md, section 9. */
#ifndef TAPEGRAD_AUTOGRAD_WINOGRAD_H
#define TAPEGRAD_AUTOGRAD_WINOGRAD_H

#include <stdbool.h>
#include <stdint.h>

/* A stride-1, dilation-1 conv2d with a square r x r kernel: x [N, Ci, H, W], w [Co, Ci, r, r],
 * y [N, Co, Ho, Wo], padding pad on every side. */
typedef struct {
    int64_t N, Ci, H, W, Co, Ho, Wo;
    int r, pad;
} tg_wino_shape;

/* The tile: m x m outputs from t x t inputs, t = m + r - 1: F(4x4, 2x2) on 5 x 5 tiles (the
 * stride-2 path's), F(4x4, 3x3) on 6 x 6, F(6x6, 3x3) and F(4x4, 5x5) on 8 x 8 ones. */
#define TG_WINO_MMAX 6
#define TG_WINO_TMAX 8

/* Whether the Winograd path takes this conv2d (kernel 3 or 5, stride and dilation 1, padding
 * below the kernel, channels and output large enough to pay; tg_conv_winograd on; the AVX-512
 * GEMM active). */
bool tg_winograd_applies(int64_t N, int64_t Ci, int64_t H, int64_t W, int64_t Co, int64_t Ho,
                         int64_t Wo, int64_t kh, int64_t kw, int64_t stride, int64_t pad,
                         int64_t dil);

/* y = conv2d(x, w) + bias (bias may be NULL). False, having written nothing, when the working
 * memory cannot be had: the caller then takes another path. */
bool tg_winograd_forward(const tg_wino_shape *s, const float *x, const float *w, const float *bias,
                         float *y);

/* The gradients for dy: dx (NULL: none) is assigned when dx_set, else added to; dw (NULL:
 * none) is added to. False, having written nothing, without the working memory. */
bool tg_winograd_backward(const tg_wino_shape *s, const float *x, const float *w, const float *dy,
                          float *dx, bool dx_set, float *dw);

/* Whether the stride-2 path takes this conv2d: a 4 x 4 kernel at stride 2, dilation 1, padding
 * below 4, as a stride-1 2 x 2 one over the input's four phases (4 Ci channels) on which the
 * Winograd path would run. */
bool tg_winograd_s2_applies(int64_t N, int64_t Ci, int64_t Co, int64_t Ho, int64_t Wo, int64_t kh,
                            int64_t kw, int64_t stride, int64_t pad, int64_t dil);

/* tg_winograd_forward and tg_winograd_backward for that conv2d: s->r is 4 (the kernel's side),
 * s->pad its padding, the rest as there. */
bool tg_winograd_s2_forward(const tg_wino_shape *s, const float *x, const float *w,
                            const float *bias, float *y);
bool tg_winograd_s2_backward(const tg_wino_shape *s, const float *x, const float *w,
                             const float *dy, float *dx, bool dx_set, float *dw);

/* The tile size t = m + r - 1 of F(m x m, r x r) for the variants the path has: m = 4 with
 * r = 2, 3 or 5, and m = 6 with r = 3; 0 for another pair. */
int tg_winograd_tile(int m, int r);

/* The outputs per tile side m the path takes for an r x r kernel and an Ho x Wo output: the
 * variant with the fewest transformed points over the output (ties to m = 4, the more
 * accurate one). */
int tg_winograd_out_tile(int64_t Ho, int64_t Wo, int r);
/* 0 keeps every r x r layer on m = 4 (tests and benchmarks compare the two); 1 by default.
 * Like tg_conv_winograd, set it only while no convolution runs. */
extern int tg_winograd_m6;

/* The transforms of F(m x m, r x r), row-major in double: A [t, m], B [t, t], G [t, r] for
 * t = tg_winograd_tile(m, r); 1-D: y = A^T ((G g) .* (B^T d)). False for another pair. For
 * the path and its tests. */
bool tg_winograd_matrices(int m, int r, double *A, double *B, double *G);

#endif
