/* Training helpers over a whole module: optimizers built from its parameters and gradient
 * clipping of all of them (optim.h's functions on tg_module_parameters' array). */
#include "internal.h"

#include <stdlib.h>

/* Every parameter of m in tg_module_parameters' order into *params (malloc'ed, the caller
 * frees it; NULL with *n = 0 when there are none); fn names the public function. */
static tg_status module_params(const char *fn, const tg_module *m, tg_tensor ***params, int64_t *n)
{
    *params = NULL;
    *n = 0;
    if (!m)
        return tg_last_status() != TG_OK ? tg_last_status()
                                         : tg_set_error(TG_ERR_ARG, "%s: the module is NULL", fn);
    *params = tg_module_parameters(m, n);
    return *params || *n == 0 ? TG_OK : tg_last_status();
}

/* The params of m for an optimizer, which needs at least one; NULL with the error set. */
static tg_tensor **optim_params(const char *fn, const tg_module *m, int64_t *n)
{
    tg_tensor **params;
    if (module_params(fn, m, &params, n) != TG_OK)
        return NULL;
    if (*n == 0)
        tg_set_error(TG_ERR_ARG, "%s: the %s module has no parameters to optimize", fn,
                     tg_module_type(m));
    return params;
}

tg_optim *tg_optim_sgd_module(const tg_module *m, float lr, float momentum, float dampening,
                              float weight_decay, bool nesterov)
{
    int64_t n;
    tg_tensor **params = optim_params("tg_optim_sgd_module", m, &n);
    tg_optim *opt =
        params ? tg_optim_sgd(params, n, lr, momentum, dampening, weight_decay, nesterov) : NULL;
    free(params); /* the optimizer retained the tensors */
    return opt;
}

tg_optim *tg_optim_adam_module(const tg_module *m, float lr, float beta1, float beta2, float eps,
                               float weight_decay)
{
    int64_t n;
    tg_tensor **params = optim_params("tg_optim_adam_module", m, &n);
    tg_optim *opt = params ? tg_optim_adam(params, n, lr, beta1, beta2, eps, weight_decay) : NULL;
    free(params);
    return opt;
}

tg_optim *tg_optim_adamw_module(const tg_module *m, float lr, float beta1, float beta2, float eps,
                                float weight_decay)
{
    int64_t n;
    tg_tensor **params = optim_params("tg_optim_adamw_module", m, &n);
    tg_optim *opt = params ? tg_optim_adamw(params, n, lr, beta1, beta2, eps, weight_decay) : NULL;
    free(params);
    return opt;
}

tg_status tg_module_clip_grad_norm_(tg_module *m, float max_norm, float norm_type,
                                    float *total_norm)
{
    tg_tensor **params;
    int64_t n;
    if (total_norm)
        *total_norm = 0.0f;
    tg_status st = module_params("tg_module_clip_grad_norm_", m, &params, &n);
    if (st == TG_OK)
        st = tg_clip_grad_norm_(params, n, max_norm, norm_type, total_norm);
    free(params);
    return st;
}

tg_status tg_module_clip_grad_value_(tg_module *m, float clip_value)
{
    tg_tensor **params;
    int64_t n;
    tg_status st = module_params("tg_module_clip_grad_value_", m, &params, &n);
    if (st == TG_OK)
        st = tg_clip_grad_value_(params, n, clip_value);
    free(params);
    return st;
}
