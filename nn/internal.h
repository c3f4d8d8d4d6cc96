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
/* Sequential's fusion of a BatchNorm module bn and the activation module act after it: bn's
 * forward with the activation inside the op (tg_batch_norm_act), when act is a ReLU, Tanh or
 * LeakyReLU with a positive slope and x a tensor; *fused says whether it ran (when false,
 * nothing was done and NULL is returned). */
tg_tensor *tg_nn_batch_norm_act_forward(tg_module *bn, tg_module *act, tg_tensor *x, bool *fused);

#endif
