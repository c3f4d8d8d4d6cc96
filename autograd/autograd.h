/* tapegrad — the tape, backward and the differentiable ops.
 *
 * Every op below returns a tensor owned by the innermost open tape (valid until its
 * tg_tape_end; tg_tensor_retain it to keep it longer), or NULL on failure with tg_last_error() set.
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
 * May be called again on the same tape; gradients accumulate. What a module's forward made
 * between its layers (never its output) is freed as the walk passes it, as PyTorch does without
 * retain_graph: a second backward through a module's forward fails with TG_ERR_STATE; run the
 * forward again, or take the first gradients with tg_grad / tg_backward_ex's create_graph,
 * which free nothing (docs/design.md, section 3, rule 6). */
tg_status tg_backward(tg_tensor *loss);
/* Back-propagates from y of any shape with the given output gradient dy (same shape as y);
 * frees what modules made as tg_backward does. */
tg_status tg_backward_grad(tg_tensor *y, const tg_tensor *dy);
/* The gradients of outputs[0..n_outputs) with respect to exactly inputs[0..n_inputs) (each
 * requiring grad: a leaf or an op result), as torch.autograd.grad: grads[k] gets d/d inputs[k]
 * of sum_j <outputs[j], grad_outputs[j]>, a new tape-owned tensor of inputs[k]'s shape. No
 * .grad of any tensor is touched. grad_outputs NULL (or an entry NULL) means ones, allowed for
 * one-element outputs only. With create_graph the gradients are computed with recorded ops, so
 * they have a history: a loss built from them back-propagates (the gradient penalty of
 * WGAN-GP, Hessian-vector products); it needs a TG_GRAD innermost tape, and fails naming the
 * op when an op on the path has no second order. An input the outputs do not depend on is an
 * error. At most 64 outputs and 64 inputs. On failure every grads[k] is NULL. */
tg_status tg_grad(tg_tensor *const *outputs, int n_outputs, tg_tensor *const *inputs, int n_inputs,
                  tg_tensor *const *grad_outputs, bool create_graph, tg_tensor **grads);
/* tg_backward_grad with the create_graph option (dy NULL: ones, for a one-element y). With
 * create_graph every leaf's .grad becomes its gradient (plus what it held) as a tensor with a
 * history, as loss.backward(create_graph=True); without it, this is tg_backward_grad. */
tg_status tg_backward_ex(tg_tensor *y, const tg_tensor *dy, bool create_graph);
/* A tape-owned view of x's values that no gradient flows through. */
tg_tensor *tg_detach(tg_tensor *x);
/* Turns the NaN/Inf trap on or off (initially on when the environment has TG_CHECK_FINITE=1):
 * the first op whose output, or whose backward's gradient, is not finite fails with
 * TG_ERR_STATE and a message naming the op. */
void tg_set_check_finite(bool on);

/* ---- tensors made inside a step -----------------------------------------------------------
 * Like tg_tensor_zeros and friends, but owned by the innermost open tape like any op result (no
 * release; valid until tg_tape_end): the noise, targets and masks of a training step. They
 * never require grad. NULL with the error set on failure, or when no tape is open. */

tg_tensor *tg_zeros(int ndim, const int64_t *shape);
tg_tensor *tg_ones(int ndim, const int64_t *shape);
tg_tensor *tg_full(int ndim, const int64_t *shape, float value);
/* A 0-dimensional tensor holding value (broadcasts against anything). */
tg_tensor *tg_scalar(float value);
/* A copy of numel(shape) floats from data. */
tg_tensor *tg_from_data(int ndim, const int64_t *shape, const float *data);
/* Uniform in [0, 1) and standard normal values drawn from rng (tg_tensor_uniform_ and
 * tg_tensor_normal_ draw the same numbers). */
tg_tensor *tg_rand(int ndim, const int64_t *shape, tg_rng *rng);
tg_tensor *tg_randn(int ndim, const int64_t *shape, tg_rng *rng);
/* A tape-owned index holding a copy of values (numel(shape) of them); see tg_index_new. */
tg_index *tg_indices(int ndim, const int64_t *shape, const int64_t *values);
/* A tape-owned index of t's values, which must be whole numbers (class labels kept as floats,
 * as the data loader gives them); a fraction or NaN is an error naming its position. */
tg_index *tg_labels(const tg_tensor *t);

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
/* GELU, erf form: x * (1 + erf(x / sqrt(2))) / 2 (PyTorch's F.gelu default). */
tg_tensor *tg_gelu(tg_tensor *x);
/* GELU, tanh form: x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))) / 2 (approximate='tanh'). */
tg_tensor *tg_gelu_tanh(tg_tensor *x);
/* SiLU (swish): x * sigmoid(x). */
tg_tensor *tg_silu(tg_tensor *x);
/* log(1 + e^(beta x)) / beta, and x itself where beta x > threshold (PyTorch: 1, 20); beta != 0.
 * Computed without overflow for any threshold (PyTorch gives inf past beta x = 88). */
tg_tensor *tg_softplus(tg_tensor *x, float beta, float threshold);

/* ---- comparisons and selection ------------------------------------------------------------
 * Comparisons broadcast like the binary ops and give a mask: 1.0 where the relation holds, 0.0
 * elsewhere (NaN compares false, except in ne). A mask has no gradient. */
tg_tensor *tg_eq(tg_tensor *a, tg_tensor *b);
tg_tensor *tg_ne(tg_tensor *a, tg_tensor *b);
tg_tensor *tg_lt(tg_tensor *a, tg_tensor *b);
tg_tensor *tg_le(tg_tensor *a, tg_tensor *b);
tg_tensor *tg_gt(tg_tensor *a, tg_tensor *b);
tg_tensor *tg_ge(tg_tensor *a, tg_tensor *b);
/* cond != 0 ? a : b, the three broadcast together (torch.where; a NaN in cond counts as true).
 * The gradient flows to a where cond holds and to b elsewhere, summed over the axes a or b was
 * broadcast along; cond is not differentiated. */
tg_tensor *tg_where(tg_tensor *cond, tg_tensor *a, tg_tensor *b);
/* x with value wherever mask (broadcast to x's shape) is non-zero (Tensor.masked_fill): the
 * gradient is 0 there; mask is not differentiated. value may be -INFINITY (attention masks),
 * except under the NaN/Inf trap (tg_set_check_finite), which refuses any infinite output: use a
 * large finite value there (-1e9). */
tg_tensor *tg_masked_fill(tg_tensor *x, tg_tensor *mask, float value);

/* ---- reductions -------------------------------------------------------------------------- */

/* Sum of all elements (a 0-dimensional tensor), accumulated in double; the same result for any
 * thread count. */
tg_tensor *tg_sum(tg_tensor *x);
/* Mean of all elements (a 0-dimensional tensor). */
tg_tensor *tg_mean(tg_tensor *x);
/* Sum along axis (negative counts from the end); keepdim keeps it as size 1. */
tg_tensor *tg_sum_axis(tg_tensor *x, int axis, bool keepdim);
/* Mean along axis (axis and keepdim as in tg_sum_axis). */
tg_tensor *tg_mean_axis(tg_tensor *x, int axis, bool keepdim);
/* Maximum along axis (NaN propagates; the gradient goes to the first maximal element). */
tg_tensor *tg_max_axis(tg_tensor *x, int axis, bool keepdim);
/* tg_max_axis that also gives, in *indices (tape-owned), the position of each maximum along
 * the axis (torch.max(x, dim)). */
tg_tensor *tg_max_axis_indices(tg_tensor *x, int axis, bool keepdim, tg_index **indices);
/* Variance along axis: sum((x - mean)^2) / (len - correction). correction 1 is Bessel's
 * (torch.var's default), 0 the biased (population) variance; len <= correction gives NaN, value
 * and gradient (PyTorch 1.13 divides by 0 there: NaN, or inf where the deviations are not all
 * 0). Any correction is accepted, negative ones too (as PyTorch's; the divisor is computed in
 * double, so even INT64_MIN does not overflow). Two passes in double: exact enough far from 0,
 * the same for any thread count. */
tg_tensor *tg_var(tg_tensor *x, int axis, bool keepdim, int64_t correction);
/* sqrt(tg_var(x, axis, keepdim, correction)). */
tg_tensor *tg_std(tg_tensor *x, int axis, bool keepdim, int64_t correction);
/* The position of the first maximum / minimum along axis, as a tape-owned index (a NaN counts as
 * both the maximum and the minimum: the first NaN wins, as PyTorch's). Not differentiable. */
tg_index *tg_argmax(tg_tensor *x, int axis, bool keepdim);
tg_index *tg_argmin(tg_tensor *x, int axis, bool keepdim);

/* ---- linear algebra ---------------------------------------------------------------------- */

/* torch.matmul: a[M,K] @ b[K,N] -> [M,N]; a 1-D operand is a row (a) or a column (b) vector
 * whose axis is dropped from the result; with more dimensions, the last two are the matrices
 * and the leading ones broadcast: [3,4,6] @ [3,6,5] -> [3,4,5], [2,5,8] @ [8,3] -> [2,5,3]. */
tg_tensor *tg_matmul(tg_tensor *a, tg_tensor *b);
/* x[..., in] @ w[out, in]^T + b[out] -> [..., out]; b TG_NONE for none (fused: one GEMM each
 * way over all leading dimensions). */
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
/* The n >= 1 tensors joined along axis; all other sizes must be equal (a copy). */
tg_tensor *tg_concat(tg_tensor *const *xs, int64_t n, int axis);
/* The n >= 1 tensors of one shape stacked along a new axis (0 .. ndim) (a copy). */
tg_tensor *tg_stack(tg_tensor *const *xs, int64_t n, int axis);
/* x[..., start:stop:step, ...] along axis (a copy), step >= 1; as in Python, negative start and
 * stop count from the end and out-of-range ones are clamped. */
tg_tensor *tg_slice(tg_tensor *x, int axis, int64_t start, int64_t stop, int64_t step);

/* ---- indexing (index.c): indices are tg_index values, checked against the sizes they index:
 * an index out of range is an error naming it and its position. ---------------------------- */

/* weight[V, D] rows picked by idx (any shape) -> [idx..., D] (F.embedding). padding_idx in
 * [0, V) is a row that gets no gradient (its values are used as they are: layers keep it 0),
 * or -1 for none. Only weight is differentiated (rows picked twice add their gradients). */
tg_tensor *tg_embedding(tg_tensor *weight, const tg_index *idx, int64_t padding_idx);
/* x's slices along axis at the positions of a 1-D idx (torch.index_select): that axis gets
 * idx's length. The gradient is scattered back, adding where a position repeats. */
tg_tensor *tg_index_select(tg_tensor *x, int axis, const tg_index *idx);
/* torch.gather: out[i][j][k] = x[idx[i][j][k]][j][k] for axis 0, and so on; idx has x's ndim
 * and sizes no larger than x's off the axis; the result has idx's shape. */
tg_tensor *tg_gather(tg_tensor *x, int axis, const tg_index *idx);
/* A float tensor [idx..., classes] with 1 at each index, 0 elsewhere (F.one_hot), owned by the
 * tape, no gradient. */
tg_tensor *tg_one_hot(const tg_index *idx, int64_t classes);
/* num_samples draws per row from the non-negative weights probs[C] or probs[N, C] (need not
 * sum to 1; a row of zeros, a negative or a non-finite weight is an error naming it), with or
 * without replacement (then num_samples <= the row's non-zero weights): a tape-owned index
 * [num_samples] or [N, num_samples] (torch.multinomial), from rng. */
tg_index *tg_multinomial(tg_tensor *probs, int64_t num_samples, bool replacement, tg_rng *rng);
/* One draw per row from softmax(logits / temperature) along the last axis: a tape-owned index
 * of logits' shape without that axis (torch.distributions.Categorical(logits=...).sample()).
 * temperature > 0; a -inf logit is a class never drawn, a NaN or +inf logit or a row of -inf is
 * an error naming it. */
tg_index *tg_categorical(tg_tensor *logits, float temperature, tg_rng *rng);

/* ---- convolution (conv.c) ---------------------------------------------------------------- */

/* x[N,C,H,W] * w[O,C,kh,kw] + b[O] -> [N,O,Ho,Wo]; b TG_NONE for none. Square stride, padding
 * and dilation, as PyTorch's conv2d with int arguments. */
tg_tensor *tg_conv2d(tg_tensor *x, tg_tensor *w, tg_tensor *b, int stride, int padding,
                     int dilation);
/* The transpose (gradient) of conv2d: x[N,C,H,W], w[C,O,kh,kw], b[O] or TG_NONE ->
 * [N,O,(H-1)*stride - 2*padding + kh + output_padding, ...], as PyTorch's conv_transpose2d. */
tg_tensor *tg_conv_transpose2d(tg_tensor *x, tg_tensor *w, tg_tensor *b, int stride, int padding,
                               int output_padding);

/* ---- pooling and resizing (pool.c, resize.c) -------------------------------------------- */

/* Max over kernel x kernel windows of x[N,C,H,W] (padding counts as -inf). */
tg_tensor *tg_max_pool2d(tg_tensor *x, int kernel, int stride, int padding);
/* Mean over kernel x kernel windows. count_include_pad: padding counts as zeros in the mean
 * (PyTorch's default); false: each window averages only its real pixels (PyTorch's
 * count_include_pad=False, PaddlePaddle's exclusive=True). */
tg_tensor *tg_avg_pool2d(tg_tensor *x, int kernel, int stride, int padding, bool count_include_pad);

typedef enum {
    TG_UPSAMPLE_NEAREST,
    /* Bilinear, corner pixels of input and output aligned: PaddlePaddle 1.x image_resize's
     * default, PyTorch's align_corners=True. */
    TG_UPSAMPLE_BILINEAR_ALIGN_CORNERS,
    /* Bilinear on pixel centres: PyTorch's default (align_corners=False). */
    TG_UPSAMPLE_BILINEAR_HALF_PIXEL,
} tg_upsample_mode;

/* x[N,C,H,W] -> [N,C,H*scale,W*scale]. */
tg_tensor *tg_upsample(tg_tensor *x, int scale, tg_upsample_mode mode);

/* ---- normalisation and regularisation (norm.c) ------------------------------------------ */

/* Batch norm of x[N,C] or x[N,C,H,W] (any x[N,C,...]) over all axes but C, as PyTorch's
 * F.batch_norm: y = (x - mean) / sqrt(var + eps) * weight + bias; weight and bias [C] may be
 * TG_NONE (no affine). training: the batch mean and biased variance, and N*H*W must exceed 1;
 * running_mean and running_var [C] (both or neither TG_NONE) are then updated in place with
 * running = (1 - momentum) * running + momentum * batch_stat, using the unbiased variance
 * (PaddlePaddle weighs the old value by momentum instead and uses the biased variance).
 * eval: running_mean and running_var are required and used. The running buffers get no
 * gradient and are not held after the call (PyTorch defaults: momentum 0.1, eps 1e-5). */
tg_tensor *tg_batch_norm(tg_tensor *x, tg_tensor *weight, tg_tensor *bias, tg_tensor *running_mean,
                         tg_tensor *running_var, bool training, float momentum, float eps);
/* An activation applied inside tg_batch_norm_act. */
typedef enum { TG_ACT_NONE = 0, TG_ACT_RELU, TG_ACT_LEAKY_RELU, TG_ACT_TANH } tg_act;
/* act(tg_batch_norm(...)) as one op, PaddlePaddle's BatchNorm(act=...): the normalised values
 * are never stored (one activation-sized tensor less alive until backward) and the activation
 * takes no pass of its own. The same bits as tg_batch_norm followed by tg_relu,
 * tg_leaky_relu(slope) or tg_tanh, forward and backward (for H * W up to 1024; beyond, the
 * backward's sums may round differently). slope is leaky_relu's, finite and > 0 (its
 * derivative is read from the output); ignored otherwise. nn's Sequential uses it for a
 * BatchNorm followed by one of these activations. */
tg_tensor *tg_batch_norm_act(tg_tensor *x, tg_tensor *weight, tg_tensor *bias,
                             tg_tensor *running_mean, tg_tensor *running_var, bool training,
                             float momentum, float eps, tg_act act, float slope);
/* tg_max_pool2d(tg_batch_norm_act(...), 2, 2, 0) as one op, act TG_ACT_RELU or
 * TG_ACT_LEAKY_RELU (slope finite and > 0), x [N, C, H, W] with H, W >= 2: neither the
 * activation before the pool nor its gradient is ever stored (y1 [N, C, H, W] less on the tape
 * and in the backward; the pool takes no pass of its own). The same bits as tg_batch_norm_act
 * followed by tg_max_pool2d(2, 2, 0), forward (y, running statistics) and backward, and so, for
 * H * W up to 1024, as tg_batch_norm, the activation and the pool. With a synchronised batch
 * norm in training (tg_batch_norm_set_reduce), or W above 1024, it runs the two ops. nn's
 * Sequential uses it for a BatchNorm2d, a ReLU or LeakyReLU (slope > 0) and a MaxPool2d(2, 2)
 * (padding 0) in a row. */
tg_tensor *tg_batch_norm_act_pool2d(tg_tensor *x, tg_tensor *weight, tg_tensor *bias,
                                    tg_tensor *running_mean, tg_tensor *running_var, bool training,
                                    float momentum, float eps, tg_act act, float slope);
/* Synchronised batch norm, for data-parallel training (dist/'s tg_dist_sync_batch_norm): while
 * a hook is set, a training-mode tg_batch_norm takes its statistics over the batches of every
 * process taking part, not over x alone. reduce(ctx, v, n) must replace the n doubles v by
 * their sums over the processes (all of them call it at the same point, with the same n). The
 * forward calls it twice, on [per-channel sums of x, the count of values per channel] (C + 1)
 * and then on the per-channel sums of squared deviations from the global mean (C); the
 * backward once, on [sum(dy), sum(dy * xhat)] per channel (2C), so that dx is the gradient of
 * the processes' summed losses; the weight and bias gradients stay this process's own sums
 * (the gradient averaging adds them up). The hook is recorded by each forward and used by its
 * backward; eval mode never calls it. It cannot fail: a hook whose transport can records the
 * failure and reports it at its next chance. Second-order gradients (create_graph) through a
 * synchronised batch norm are refused. fn NULL: every process on its own (the default). Set
 * it from the main thread, between steps. */
typedef void (*tg_batch_norm_reduce_fn)(void *ctx, double *values, int64_t n);
void tg_batch_norm_set_reduce(tg_batch_norm_reduce_fn fn, void *ctx);
/* How many times a training-mode batch norm forward applies its running-statistics update
 * (default 1; k below 1 is refused): for a loop that computes once what its reference computed
 * k times on the same batch, such as mnist_gan's tutorial step, where Paddle ran G's forward
 * twice on one z. Each update rounds as its own forward would, so the running statistics are
 * those of k forwards bit for bit. Process-wide, read when a forward is recorded, as the hook
 * above; nn's BatchNorm counts k batches in num_batches_tracked. */
tg_status tg_batch_norm_set_running_updates(int k);
int tg_batch_norm_running_updates(void);
/* training with 0 < p < 1: zeroes element i when the i-th uniform draw from rng is below p
 * and scales the others by 1/(1-p); rng advances by one draw per element, so a seed
 * reproduces the mask. Not training, or p == 0: a copy of x (rng may be NULL). p must be in
 * [0, 1). */
tg_tensor *tg_dropout(tg_tensor *x, float p, bool training, tg_rng *rng);
/* softmax along axis (negative counts from the end), computed stably (the row max is
 * subtracted first). */
tg_tensor *tg_softmax(tg_tensor *x, int axis);
/* log(softmax) along axis, computed stably: finite for any finite input. */
tg_tensor *tg_log_softmax(tg_tensor *x, int axis);
/* Layer norm over the last ndim_norm axes of x, 1 <= ndim_norm <= x's ndim (F.layer_norm with
 * normalized_shape = those sizes): y = (x - mean) / sqrt(var + eps) * weight + bias with the
 * biased variance; weight and bias have the normalised axes' shape, or TG_NONE. Forward and
 * backward fused; the same result for any thread count. */
tg_tensor *tg_layer_norm(tg_tensor *x, int ndim_norm, tg_tensor *weight, tg_tensor *bias,
                         float eps);

/* ---- losses (loss.c) ---------------------------------------------------------------------
 * Every loss takes a reduction, as PyTorch's reduction=: the mean over all elements (over the
 * batch for cross_entropy), their sum, or none (the per-element losses, input's shape; [N] for
 * cross_entropy). */
typedef enum { TG_REDUCE_MEAN, TG_REDUCE_SUM, TG_REDUCE_NONE } tg_reduction;

/* max(z,0) - z*t + log(1 + e^-|z|) for logits z and targets t (in [0, 1]) of the same shape:
 * stable for any logits (finite loss and gradient at z = +-100). Both are differentiated
 * (targets may come from another network). */
tg_tensor *tg_bce_with_logits(tg_tensor *logits, tg_tensor *targets, tg_reduction reduction);
/* -log softmax(logits[N,C])[labels[n]] for a tg_index labels[N] of classes 0 .. C-1 (an
 * out-of-range label is an error naming it and its row; tg_labels converts float labels).
 * Mean: over the N rows. Only logits are differentiated. */
tg_tensor *tg_cross_entropy(tg_tensor *logits, const tg_index *labels, tg_reduction reduction);
/* (pred - target)^2 for pred and target of the same shape; both are differentiated. */
tg_tensor *tg_mse(tg_tensor *pred, tg_tensor *target, tg_reduction reduction);

#ifdef __cplusplus
}
#endif
#endif
