/* Arithmetic math for the vectorised loops of more than one family file (elementwise.c,
 * norm.c's softmax and batch norm's activations): inline functions of plain arithmetic and selects, so GCC vectorises the
 * loops that call them, where glibc's expf is one call per element. */
#ifndef TAPEGRAD_AUTOGRAD_EW_MATH_H
#define TAPEGRAD_AUTOGRAD_EW_MATH_H

#include "../tensor/parallel.h"

#include <stdint.h>
#include <string.h>

/* e^z in arithmetic and selects only, so the loops vectorise (glibc's expf is a call per
 * element): e^z = 2^n e^r with n = round(z / ln 2) by the 1.5 * 2^23 trick, r = z - n ln 2 in two
 * parts (Cody-Waite), e^r by its Taylor polynomial of degree 7 (|r| <= ln 2 / 2: error 1e-9).
 * z is clamped to [-80, 80]: e^-80 = 1.8e-35 stands for anything smaller (its callers use it
 * where that is as good as 0) and e^80 for anything larger. Not closer to the float range: GCC
 * evaluates the clamped arm in every lane, and a denormal there (silu's x / (1 + e^88)) costs a
 * microcode assist per vector (silu ran 15x slower). NaN stays NaN. */
/* always_inline: a call (GCC's own choice in softmax's rows) would keep the loop scalar. */
static inline __attribute__((always_inline)) float ew_exp(float z)
{
    z = z < -80.0f ? -80.0f : z; /* selects that keep a NaN */
    z = z > 80.0f ? 80.0f : z;
    const float magic = 12582912.0f; /* 1.5 * 2^23 */
    const float kf = z * 1.44269504088896341f + magic;
    const float n = kf - magic;
    const float r = (z - n * 0.693145751953125f) - n * 1.428606765330187045e-06f;
    const float er =
        1.0f +
        r * (1.0f + r * (0.5f + r * (1.0f / 6.0f +
                                     r * (1.0f / 24.0f +
                                          r * (1.0f / 120.0f +
                                               r * (1.0f / 720.0f + r * (1.0f / 5040.0f)))))));
    uint32_t kb;
    memcpy(&kb, &kf, sizeof kb);
    const uint32_t scale_bits = (kb - 0x4b400000u + 127u) << 23; /* 2^n: kf's low bits hold n */
    float scale;
    memcpy(&scale, &scale_bits, sizeof scale);
    return er * scale;
}

/* tanh(x) in arithmetic and selects only, so the loops vectorise (glibc's tanhf is a call per
 * element, 18 ns each here; this is 0.4 ns with AVX-512). Checked against tanh in double on
 * every float of magnitude up to 12 (beyond, both give +-1): at most 1 ulp from the correctly
 * rounded value (glibc's tanhf: 2 ulp); NaN stays NaN, tanh(-0) = -0.
 *   |x| < 0.625:  x + x^3 P(x^2), P of degree 5 fitted (weighted least squares, minimax-like)
 *                 to (tanh(x) - x) / x^3; its relative error is 2e-10 before rounding.
 *   otherwise:    1 - 2 / (e^2|x| + 1) (at least 0.55, so the subtraction loses nothing),
 *                 2|x| clamped to 20 (tanh rounds to 1 from |x| = 9.02 on), e^2|x| by ew_exp.
 * The sign is copied back from x. */
static inline __attribute__((always_inline)) float ew_tanh(float x)
{
    uint32_t xb;
    memcpy(&xb, &x, sizeof xb);
    const uint32_t sign = xb & 0x80000000u, ab = xb ^ sign;
    float ax;
    memcpy(&ax, &ab, sizeof ax);

    const float s = ax * ax;
    const float p = -0.3333333134651184f +
                    s * (0.13333210349082947f +
                         s * (-0.05394720658659935f +
                              s * (0.021702973172068596f +
                                   s * (-0.008182685822248459f + s * 0.0021475469693541527f))));
    const float small = ax + ax * s * p;

    const float z = ax > 10.0f ? 20.0f : 2.0f * ax; /* keeps a NaN */
    const float large = 1.0f - 2.0f / (ew_exp(z) + 1.0f);

    const float t = ax < 0.625f ? small : large;
    uint32_t tb;
    memcpy(&tb, &t, sizeof tb);
    tb |= sign;
    float out;
    memcpy(&out, &tb, sizeof out);
    return out;
}

/* A sum of a row vectorised as OpenMP SIMD (a float reduction does not vectorise otherwise):
 * the order of the additions depends only on the row, never on threads. */
#ifdef _OPENMP
#define EW_SIMD_SUM(s) TG_PRAGMA(omp simd reduction(+ : s))
#else
#define EW_SIMD_SUM(s)
#endif

#endif
