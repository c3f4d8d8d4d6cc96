/* nn/ internals shared by the layer files; never installed. */
#ifndef TAPEGRAD_NN_INTERNAL_H
#define TAPEGRAD_NN_INTERNAL_H

#include "nn.h"

/* A new parameter tensor of the given shape drawn from U(-bound, bound) with rng, or NULL with
 * the error set (fn names the constructor). */
tg_tensor *tg_nn_uniform_param(const char *fn, int ndim, const int64_t *shape, float bound,
                               tg_rng *rng);
/* m's parameter name when it has one, else TG_NONE: an optional input of an op (a bias built
 * with bias = false), probed without setting the error tg_module_param sets. */
tg_tensor *tg_nn_optional_param(const tg_module *m, const char *name);

/* m's single-input forward (NULL for a tg_module_new_multi module): which kind of module it is,
 * whatever its type string says. */
tg_forward_fn tg_nn_forward_of(const tg_module *m);
/* Sequential's fusion of the n >= 1 modules mods[0..n) that come next, run on x: a BatchNorm,
 * the activation after it and a MaxPool2d(2, 2) after that as one op
 * (tg_batch_norm_act_pool2d: a BatchNorm2d, a ReLU or LeakyReLU with a positive slope); else
 * the BatchNorm and its activation (tg_batch_norm_act: also Tanh). *used says how many modules
 * ran, 3 or 2; 0 when none did (NULL is then returned and nothing was done). */
tg_tensor *tg_nn_batch_norm_act_forward(tg_module *const *mods, int64_t n, tg_tensor *x, int *used);
/* True when m is a MaxPool2d of kernel 2, stride 2 and padding 0 (conv_layers.c). */
bool tg_nn_is_max_pool_2x2(const tg_module *m);

#endif
