/* tapegrad — optimizers over arrays of tensors.
 *
 * An optimizer retains the tensors it is given, allocates its per-parameter state (moments,
 * step counts) lazily on the first step that reaches a parameter, and updates p->data from
 * p->grad in place (bumping the version, so a graph that saved the old values refuses
 * backward). Parameters whose grad is NULL are skipped. Several optimizers may share parameters;
 * each keeps its own state. Only tensor/ is needed: nn.h's tg_module_parameters gives the
 * array for a model.
 *
 *     int64_t n;
 *     tg_tensor **params = tg_module_parameters(D, &n);
 *     tg_optim *opt_d = tg_optim_adam(params, n, 2e-4f, 0.5f, TG_ADAM_BETA2, TG_ADAM_EPS, 0.0f);
 *     free(params);                          // the optimizer retained the tensors
 *     ... tg_backward(loss); tg_optim_step(opt_d); tg_optim_zero_grad(opt_d); ...
 *     tg_optim_free(opt_d); */
#ifndef TAPEGRAD_OPTIM_H
#define TAPEGRAD_OPTIM_H

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* PyTorch's defaults for torch.optim.Adam / AdamW. */
#define TG_ADAM_LR 1e-3f
#define TG_ADAM_BETA1 0.9f
#define TG_ADAM_BETA2 0.999f
#define TG_ADAM_EPS 1e-8f
/* torch.optim.AdamW's default weight decay (Adam's is 0). */
#define TG_ADAMW_WEIGHT_DECAY 1e-2f

typedef struct tg_optim tg_optim;

/* torch.optim.SGD: momentum 0 (plain SGD) or in (0, 1]; dampening 0 is PyTorch's default;
 * weight_decay adds wd * p to the gradient; nesterov needs momentum > 0 and dampening 0.
 * Retains the n tensors (leaves, no duplicates). NULL with the error set on failure. */
tg_optim *tg_optim_sgd(tg_tensor *const *params, int64_t n, float lr, float momentum,
                       float dampening, float weight_decay, bool nesterov);
/* torch.optim.Adam (Kingma & Ba, with PyTorch's bias correction): weight_decay is L2, added to
 * the gradient. Defaults above: lr 1e-3, betas 0.9 / 0.999, eps 1e-8, weight_decay 0. */
tg_optim *tg_optim_adam(tg_tensor *const *params, int64_t n, float lr, float beta1, float beta2,
                        float eps, float weight_decay);
/* torch.optim.AdamW (Loshchilov & Hutter): decoupled weight decay, p -= lr * wd * p before the
 * Adam update. PyTorch's default weight_decay is 1e-2 (TG_ADAMW_WEIGHT_DECAY). */
tg_optim *tg_optim_adamw(tg_tensor *const *params, int64_t n, float lr, float beta1, float beta2,
                         float eps, float weight_decay);
/* Where Adam's eps enters the update. AFTER_CORRECTION (the default; PyTorch, Kingma & Ba):
 * p -= lr / (1 - beta1^t) * m / (sqrt(v / (1 - beta2^t)) + eps). BEFORE_CORRECTION
 * (PaddlePaddle 1.x's adam op, TensorFlow 1): p -= lr * sqrt(1 - beta2^t) / (1 - beta1^t) *
 * m / (sqrt(v) + eps), i.e. eps added to sqrt(v) before the bias correction, which makes the
 * early steps smaller. Saved and restored with the state dict ("eps_style"). */
typedef enum { TG_ADAM_EPS_AFTER_CORRECTION, TG_ADAM_EPS_BEFORE_CORRECTION } tg_adam_eps;
/* Sets an Adam's or AdamW's eps style for the next steps (an error for SGD). */
tg_status tg_optim_set_adam_eps(tg_optim *opt, tg_adam_eps style);
/* The eps style in force (AFTER_CORRECTION for SGD, which has none, and for NULL). */
tg_adam_eps tg_optim_adam_eps(const tg_optim *opt);
/* Releases the parameters and frees the state. NULL is ignored. */
void tg_optim_free(tg_optim *opt);

/* Updates every parameter that has a gradient, once. */
tg_status tg_optim_step(tg_optim *opt);
/* Frees the gradient of every parameter (PyTorch's zero_grad(set_to_none=True)). */
void tg_optim_zero_grad(tg_optim *opt);
/* Sets the learning rate (>= 0, finite) used by the next steps. */
tg_status tg_optim_set_lr(tg_optim *opt, float lr);
/* The learning rate in force. */
float tg_optim_lr(const tg_optim *opt);
/* The number of parameters. */
int64_t tg_optim_num_params(const tg_optim *opt);

/* torch.nn.utils.clip_grad_norm_: the norm_type-norm (2 for Euclidean, 1, INFINITY for the
 * max, any p > 0) of all n parameters' gradients taken together (accumulated in double), into
 * *total_norm (may be NULL); when it exceeds max_norm (finite, >= 0) every gradient is scaled by
 * max_norm / (total + 1e-6). Parameters without a gradient are skipped. A non-finite total is
 * an error (gradients left unchanged). Gradients change in place, except one that someone else
 * retained: that one is replaced by a scaled copy (as tg_tensor_set_grad). */
tg_status tg_clip_grad_norm_(tg_tensor *const *params, int64_t n, float max_norm, float norm_type,
                             float *total_norm);
/* torch.nn.utils.clip_grad_value_: every gradient element limited to [-clip_value, clip_value]
 * (clip_value >= 0; NaN stays NaN, as torch's clamp). */
tg_status tg_clip_grad_value_(tg_tensor *const *params, int64_t n, float clip_value);
/* The optimizer's parameters as a borrowed array of tg_optim_num_params entries (for clipping
 * exactly what it trains: tg_clip_grad_norm_(tg_optim_params(opt), ...)). */
tg_tensor *const *tg_optim_params(const tg_optim *opt);

/* Puts the state into sd: for parameter i (its index in the array given at creation) the
 * tensors "prefix.i.step" (0-d), "prefix.i.exp_avg", "prefix.i.exp_avg_sq" (Adam, AdamW) or
 * "prefix.i.momentum_buffer" (SGD with momentum), for parameters that have state; and the
 * metadata "prefix.type", "prefix.num_params" and the hyper-parameters ("prefix.lr",
 * "prefix.betas", ...). prefix NULL or "" for none. The dict retains the state tensors. */
tg_status tg_optim_state_dict(const tg_optim *opt, const char *prefix, tg_state_dict *sd);
/* Replaces the state with the one in sd (as PyTorch, the hyper-parameters in its metadata are
 * restored too; parameters without entries start afresh). Everything is validated first —
 * optimizer type, parameter count, unknown or incomplete entries, shapes, step values — and on
 * any error nothing is changed. */
tg_status tg_optim_load_state_dict(tg_optim *opt, const char *prefix, const tg_state_dict *sd);

#ifdef __cplusplus
}
#endif
#endif
