/* Pooling's parts shared with other ops (pool.c; norm_pool.c's batch_norm_act_pool2d, which
 * pools rows it makes itself): the 2 x 2, stride 2 max pool of one output row, static inline so
 * that each ISA compilation of a family file (tensor/isa.h) has its own copy. */
#ifndef TAPEGRAD_AUTOGRAD_POOL_INTERNAL_H
#define TAPEGRAD_AUTOGRAD_POOL_INTERNAL_H

#include "internal.h"

#include <string.h>

/* The GAN's pooling, 2 x 2 windows at stride 2 without padding, eight windows at a time in GCC
 * vectors (the general loop runs one window at a time, and GCC vectorises neither it nor a
 * scalar loop over the four taps). A pool_vec holds eight floats; pool_ivec their masks and
 * indices (a vector compare gives 0 or -1 per lane, and a cast between same-size vectors
 * reinterprets the bits). */
typedef float pool_vec __attribute__((vector_size(8 * sizeof(float))));
typedef int32_t pool_ivec __attribute__((vector_size(8 * sizeof(int32_t))));

/* m ? a : b per lane (C has no vector ?:). A macro: a function taking and returning 32-byte
 * vectors draws GCC's -Wpsabi note in the copies built without AVX. */
#define POOL_SELECT(m, a, b) (((a) & (m)) | ((b) & ~(m)))

/* One output row of 2 x 2 windows from input rows r0 and r1 = r0 + W, whose first element has
 * the flat in-plane index base: the general loop's rule (the first maximum in row-major window
 * order, else the last NaN, which is then the value). A row's last, partial block of eight
 * windows (the GAN's rows are only 13 and 5 windows long) reads on into the next rows, computes
 * its unused lanes and drops them; only where that would read past end, the end of x, does it
 * go through zero-padded copies. */
static inline void max_pool_2x2_row(const float *r0, const float *r1, const float *end, int64_t W,
                                    int64_t base, int64_t Wo, float *y, int32_t *a)
{
    static const pool_ivec even = {0, 2, 4, 6, 8, 10, 12, 14};
    const pool_ivec w0 = {0}, w1 = w0 + (int32_t)W, at[4] = {w0, w0 + 1, w1, w1 + 1};
    for (int64_t ow = 0; ow < Wo; ow += 8) {
        const int64_t nw = Wo - ow < 8 ? Wo - ow : 8; /* windows in this block */
        pool_vec v[4];
        for (int r = 0; r < 2; r++) {
            const float *in = (r ? r1 : r0) + 2 * ow;
            float pad[16] = {0};
            if (end - in < 16) {
                memcpy(pad, in, (size_t)(2 * nw) * sizeof(float));
                in = pad;
            }
            pool_vec lo, hi;
            memcpy(&lo, in, sizeof lo);
            memcpy(&hi, in + 8, sizeof hi);
            v[2 * r] = __builtin_shufflevector(lo, hi, 0, 2, 4, 6, 8, 10, 12, 14);
            v[2 * r + 1] = __builtin_shufflevector(lo, hi, 1, 3, 5, 7, 9, 11, 13, 15);
        }
        pool_ivec best = (pool_ivec)v[0], off = w0;
        for (int k = 1; k < 4; k++) {
            const pool_ivec gt = v[k] > (pool_vec)best;
            best = POOL_SELECT(gt, (pool_ivec)v[k], best);
            off = POOL_SELECT(gt, at[k], off);
        }
        for (int k = 0; k < 4; k++) {
            const pool_ivec nan = v[k] != v[k];
            best = POOL_SELECT(nan, (pool_ivec)v[k], best);
            off = POOL_SELECT(nan, at[k], off);
        }
        const pool_ivec idx = off + even + (int32_t)(base + 2 * ow);
        memcpy(y + ow, &best, (size_t)nw * sizeof(float));
        memcpy(a + ow, &idx, (size_t)nw * sizeof(int32_t));
    }
}

/* max_pool2d's backward op as a recorded op (pool.c): g[N,C,H/2,W/2] scattered to the maxima
 * of the 2 x 2, stride 2 windows of x[N,C,H,W] (x detached: it gets no gradient). For the
 * second order of an op that pools values it does not keep (batch_norm_act_pool2d). */
tg_tensor *tg_max_pool2d_backward_2x2(tg_tensor *x, tg_tensor *g);

#endif
