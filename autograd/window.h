/* Output sizes of sliding windows (conv2d, conv_transpose2d, max and avg pooling), computed in
 * int64 with every step checked: the parameters are ints that may be anything up to INT_MAX and
 * a size of an empty tensor may be anything up to INT64_MAX, so the textbook formulas overflow
 * on hostile but representable values. Each returns false when a step overflows; the caller
 * refuses the call, naming its values. */
#ifndef TAPEGRAD_WINDOW_H
#define TAPEGRAD_WINDOW_H

#include <stdbool.h>
#include <stdint.h>

/* floor(a / b) for b > 0 (C's division truncates toward zero); never overflows. */
static inline int64_t tg_floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return a % b != 0 && a < 0 ? q - 1 : q;
}

/* *out = floor((in + 2 pad - dil (k - 1) - 1) / stride) + 1 for in >= 0, k >= 1, stride >= 1,
 * pad >= 0, dil >= 1: the positions of a window of k taps dil apart moved by stride over the
 * input padded by pad on both sides. It may be <= 0 (the window does not fit). */
static inline bool tg_window_out_size(int64_t in, int64_t k, int64_t stride, int64_t pad,
                                      int64_t dil, int64_t *out)
{
    int64_t span, padded, num;
    if (__builtin_mul_overflow(dil, k - 1, &span) || __builtin_add_overflow(span, 1, &span) ||
        __builtin_mul_overflow(pad, 2, &padded) || __builtin_add_overflow(in, padded, &padded) ||
        __builtin_sub_overflow(padded, span, &num))
        return false;
    return !__builtin_add_overflow(tg_floor_div(num, stride), 1, out);
}

/* *out = (in - 1) stride - 2 pad + dil (k - 1) + out_pad + 1: the input size that a window of
 * these parameters maps onto in positions (the output size of a transposed convolution,
 * PyTorch's formula). It may be <= 0. */
static inline bool tg_window_transpose_size(int64_t in, int64_t k, int64_t stride, int64_t pad,
                                            int64_t dil, int64_t out_pad, int64_t *out)
{
    int64_t moved, span, pads, v;
    if (__builtin_mul_overflow(in - 1, stride, &moved) ||
        __builtin_mul_overflow(dil, k - 1, &span) || __builtin_mul_overflow(pad, 2, &pads) ||
        __builtin_sub_overflow(moved, pads, &v) || __builtin_add_overflow(v, span, &v) ||
        __builtin_add_overflow(v, out_pad, &v) || __builtin_add_overflow(v, 1, &v))
        return false;
    *out = v;
    return true;
}

#endif
