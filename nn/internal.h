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

#endif
