/* tapegrad — the tape, backward and the differentiable ops.
 *
 * Every op below returns a tensor owned by the innermost open tape (valid until its
 * tg_tape_end; tg_retain it to keep it longer), or NULL on failure with tg_last_error() set.
 * An op given a NULL input returns NULL and leaves the first error's message in place, so a
 * chain of ops needs one check at the end. Calling an op with no open tape is an error. */
#ifndef TAPEGRAD_AUTOGRAD_H
#define TAPEGRAD_AUTOGRAD_H

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the tape ---------------------------------------------------------------------------- */

typedef enum {
    TG_NO_GRAD = 0, /* ops run and their results are owned, but nothing is recorded */
    TG_GRAD = 1,    /* ops on tensors that require grad are recorded for backward */
} tg_grad_mode;

typedef struct tg_tape tg_tape;

/* Opens a tape (nested inside the current one, if any); NULL on failure. */
tg_tape *tg_tape_begin(tg_grad_mode mode);
/* Closes the innermost tape, freeing every result it owns; tape must be the innermost. */
tg_status tg_tape_end(tg_tape *tape);
/* True when the innermost open tape records (TG_GRAD). */
bool tg_grad_enabled(void);

/* Back-propagates from a one-element loss: accumulates d loss / d leaf into every leaf's grad.
 * May be called again on the same tape; gradients accumulate. */
tg_status tg_backward(tg_tensor *loss);
/* Back-propagates from y of any shape with the given output gradient dy (same shape as y). */
tg_status tg_backward_grad(tg_tensor *y, const tg_tensor *dy);
/* A tape-owned view of x's values that no gradient flows through. */
tg_tensor *tg_detach(tg_tensor *x);

/* ---- elementwise (NumPy broadcasting between the two inputs) ----------------------------- */

/* a + b */
tg_tensor *tg_add(tg_tensor *a, tg_tensor *b);
/* a - b */
tg_tensor *tg_sub(tg_tensor *a, tg_tensor *b);
/* a * b */
tg_tensor *tg_mul(tg_tensor *a, tg_tensor *b);
/* a / b */
tg_tensor *tg_div(tg_tensor *a, tg_tensor *b);
/* -x */
tg_tensor *tg_neg(tg_tensor *x);
/* e^x */
tg_tensor *tg_exp(tg_tensor *x);
/* natural log of x */
tg_tensor *tg_log(tg_tensor *x);
/* square root of x */
tg_tensor *tg_sqrt(tg_tensor *x);
/* |x| (gradient 0 at 0) */
tg_tensor *tg_abs(tg_tensor *x);
/* x * x */
tg_tensor *tg_square(tg_tensor *x);
/* 1 / (1 + e^-x) */
tg_tensor *tg_sigmoid(tg_tensor *x);
/* tanh(x) */
tg_tensor *tg_tanh(tg_tensor *x);
/* max(x, 0) */
tg_tensor *tg_relu(tg_tensor *x);
/* x for x > 0, slope * x otherwise */
tg_tensor *tg_leaky_relu(tg_tensor *x, float slope);
/* x limited to [lo, hi] (gradient 0 outside) */
tg_tensor *tg_clamp(tg_tensor *x, float lo, float hi);
/* x ^ p for a scalar exponent p */
tg_tensor *tg_pow_scalar(tg_tensor *x, float p);
/* x + s */
tg_tensor *tg_add_scalar(tg_tensor *x, float s);
/* x - s */
tg_tensor *tg_sub_scalar(tg_tensor *x, float s);
/* s - x */
tg_tensor *tg_rsub_scalar(tg_tensor *x, float s);
/* x * s */
tg_tensor *tg_mul_scalar(tg_tensor *x, float s);
/* x / s */
tg_tensor *tg_div_scalar(tg_tensor *x, float s);
/* s / x */
tg_tensor *tg_rdiv_scalar(tg_tensor *x, float s);

/* ---- reductions -------------------------------------------------------------------------- */

/* Sum of all elements (a 0-dimensional tensor). */
tg_tensor *tg_sum(tg_tensor *x);
/* Mean of all elements (a 0-dimensional tensor). */
tg_tensor *tg_mean(tg_tensor *x);
/* Sum along axis (negative counts from the end); keepdim keeps it as size 1. */
tg_tensor *tg_sum_axis(tg_tensor *x, int axis, bool keepdim);
/* Mean along axis. */
tg_tensor *tg_mean_axis(tg_tensor *x, int axis, bool keepdim);
/* Maximum along axis (the gradient goes to the first maximal element). */
tg_tensor *tg_max_axis(tg_tensor *x, int axis, bool keepdim);

/* ---- linear algebra ---------------------------------------------------------------------- */

/* a[M,K] @ b[K,N] -> [M,N] */
tg_tensor *tg_matmul(tg_tensor *a, tg_tensor *b);
/* x[N,in] @ w[out,in]^T + b[out] -> [N,out]; b may be NULL (fused, one GEMM each way). */
tg_tensor *tg_linear(tg_tensor *x, tg_tensor *w, tg_tensor *b);

/* ---- shape ------------------------------------------------------------------------------- */

/* A view of x with a new shape of the same numel; one size may be -1 (inferred). */
tg_tensor *tg_reshape(tg_tensor *x, int ndim, const int64_t *shape);
/* A view of x with axes start_axis..end_axis merged into one (negative axes count from the
 * end). */
tg_tensor *tg_flatten(tg_tensor *x, int start_axis, int end_axis);
/* x with axes a and b swapped (a copy). */
tg_tensor *tg_transpose(tg_tensor *x, int a, int b);
/* x with its axes reordered: out axis i is x's axis perm[i] (a copy). */
tg_tensor *tg_permute(tg_tensor *x, const int *perm);
/* The n tensors joined along axis (all other sizes equal; n <= TG_MAX_INPUTS). */
tg_tensor *tg_concat(tg_tensor *const *xs, int n, int axis);
/* x[..., start:stop:step, ...] along axis (Python slice rules for negative start/stop). */
tg_tensor *tg_slice(tg_tensor *x, int axis, int64_t start, int64_t stop, int64_t step);

#ifdef __cplusplus
}
#endif
#endif
