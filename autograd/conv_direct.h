/* conv2d's direct loops (autograd/conv_direct.c) and the geometry they share with the lowering
 * (autograd/conv.c): internal to the library, never installed. docs/design.md, section 9. */
#ifndef TAPEGRAD_AUTOGRAD_CONV_DIRECT_H
#define TAPEGRAD_AUTOGRAD_CONV_DIRECT_H

#include <stdbool.h>
#include <stdint.h>

/* The lowering's sizes: see the top of conv.c for image and flat side. */
typedef struct {
    int64_t N;          /* images in the batch */
    int64_t Ci, H, W;   /* image side: channels and plane size */
    int64_t Co, Ho, Wo; /* flat side: channels and plane size (the column count per image) */
    int64_t kh, kw, stride, pad, dil;
    int64_t Kc, P;      /* Ci*kh*kw rows and Ho*Wo columns of one image's cols */
    int64_t chunk;      /* images per chunk */
    bool staged;        /* chunks of several images go through the staging buffer */
    bool direct;        /* conv2d on the direct loops (tg_conv_direct_applies), no lowering */
    int64_t Hp, Wq, Wt; /* direct only: padded planes [Hp, Wq], output rows padded to Wt */
} conv_geom;

static inline int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}
static inline int64_t max64(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

/* Whether conv2d with g's sizes (N to dil, Ho and Wo) takes the direct loops: one output
 * channel, or (tg_conv_direct) few input channels at stride 1 with a square kernel. */
bool tg_conv_direct_applies(const conv_geom *g);

/* Sets g's padded sizes Hp, Wq, Wt; false when they or the working space overflow int64 (the
 * lowering then runs: its working space does not grow with the padding). */
bool tg_conv_direct_sizes(conv_geom *g);

/* Floats of one image's working space, forward or backward (after tg_conv_direct_sizes). */
int64_t tg_conv_direct_floats(const conv_geom *g);

/* y [N, Co, Ho, Wo] = conv2d(x, w) + bias (bias may be NULL), in scratch of g->chunk images. */
void tg_conv_direct_forward(const conv_geom *g, const float *x, const float *w, const float *bias,
                            float *y, float *scratch);

/* The gradients for dy: dx (NULL: none) assigned when dx_set, else added to; dw (NULL: none)
 * added to. */
void tg_conv_direct_backward(const conv_geom *g, const float *x, const float *w, const float *dy,
                             float *dx, bool dx_set, float *dw, float *scratch);

#endif
