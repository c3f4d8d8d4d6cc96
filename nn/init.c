/* Weight initialisers (torch.nn.init's set, with its fan conventions) and tg_module_apply, the
 * tree walk that applies one to a model's layers by type (PyTorch's model.apply(fn)). Paddle
 * 1.8 dygraph's defaults are one such walk, tg_nn_init_paddle, for code ported from Paddle. */
#include "nn.h"

#include <math.h>
#include <string.h>

/* Checks what every initialiser takes: a tensor, and an rng where it draws. (Writing bumps the
 * tensor's version, so a graph that saved the old values refuses backward.) */
static tg_status init_check(const char *fn, const tg_tensor *t, const tg_rng *rng, bool need_rng)
{
    if (!t)
        return tg_set_error(TG_ERR_ARG, "%s: tensor is NULL", fn);
    if (need_rng && !rng)
        return tg_set_error(TG_ERR_ARG, "%s: rng is NULL", fn);
    return TG_OK;
}

/* tg_init_fans for the function fn, which its error messages name (Xavier's and Kaiming's
 * shape errors name the initialiser called, not this helper). */
static tg_status fans(const char *fn, const tg_tensor *w, int64_t *fan_in, int64_t *fan_out)
{
    if (!w)
        return tg_set_error(TG_ERR_ARG, "%s: tensor is NULL", fn);
    if (w->ndim < 2) {
        char s[96];
        return tg_set_error(TG_ERR_SHAPE,
                            "%s: a %s tensor has no fan in and out (need at least "
                            "2 dimensions: [out, in, ...] or [in, out, ...] for transposed "
                            "convolutions)",
                            fn, tg_shape_str(w->ndim, w->shape, s, sizeof s));
    }
    /* PyTorch's _calculate_fan_in_and_fan_out: dimension 1 is "in", dimension 0 "out", times the
     * receptive field (the product of the dimensions after them). */
    int64_t rf = 1;
    for (int d = 2; d < w->ndim; d++)
        rf *= w->shape[d];
    if (fan_in)
        *fan_in = w->shape[1] * rf;
    if (fan_out)
        *fan_out = w->shape[0] * rf;
    return TG_OK;
}

tg_status tg_init_fans(const tg_tensor *w, int64_t *fan_in, int64_t *fan_out)
{
    return fans("tg_init_fans", w, fan_in, fan_out);
}

float tg_init_gain(tg_nonlinearity nl, float param)
{
    switch (nl) {
    case TG_NL_RELU: return sqrtf(2.0f);
    case TG_NL_LEAKY_RELU: return sqrtf(2.0f / (1.0f + param * param));
    case TG_NL_TANH: return 5.0f / 3.0f;
    case TG_NL_SELU: return 0.75f;
    case TG_NL_LINEAR:
    default: return 1.0f;
    }
}

tg_status tg_init_uniform_(tg_tensor *t, tg_rng *rng, float lo, float hi)
{
    tg_status st = init_check("tg_init_uniform_", t, rng, true);
    if (st == TG_OK && !(isfinite(lo) && isfinite(hi) && lo <= hi))
        st = tg_set_error(TG_ERR_ARG, "tg_init_uniform_: bounds [%g, %g): need finite lo <= hi", lo,
                          hi);
    return st == TG_OK ? tg_tensor_uniform_(t, rng, lo, hi) : st;
}

tg_status tg_init_normal_(tg_tensor *t, tg_rng *rng, float mean, float std)
{
    tg_status st = init_check("tg_init_normal_", t, rng, true);
    if (st == TG_OK && !(isfinite(mean) && isfinite(std) && std >= 0.0f))
        st = tg_set_error(TG_ERR_ARG,
                          "tg_init_normal_: mean %g, std %g: need finite values "
                          "and std >= 0",
                          mean, std);
    return st == TG_OK ? tg_tensor_normal_(t, rng, mean, std) : st;
}

tg_status tg_init_constant_(tg_tensor *t, float value)
{
    tg_status st = init_check("tg_init_constant_", t, NULL, false);
    return st == TG_OK ? tg_tensor_fill_(t, value) : st;
}

/* The standard deviation that Xavier (Glorot & Bengio 2010) gives: gain * sqrt(2 / (fan_in +
 * fan_out)); the uniform bound is sqrt(3) times it. */
static tg_status xavier_std(const char *fn, const tg_tensor *t, const tg_rng *rng, float gain,
                            float *std)
{
    int64_t fi = 0, fo = 0; /* zeros for the compiler: fans sets both whenever it succeeds */
    tg_status st = init_check(fn, t, rng, true);
    if (st == TG_OK && !(isfinite(gain) && gain >= 0.0f))
        st = tg_set_error(TG_ERR_ARG, "%s: gain %g: need a finite gain >= 0", fn, gain);
    if (st == TG_OK)
        st = fans(fn, t, &fi, &fo);
    if (st == TG_OK)
        *std = gain * sqrtf(2.0f / (float)(fi + fo));
    return st;
}

tg_status tg_init_xavier_uniform_(tg_tensor *t, tg_rng *rng, float gain)
{
    float std = 0.0f;
    tg_status st = xavier_std("tg_init_xavier_uniform_", t, rng, gain, &std);
    float bound = sqrtf(3.0f) * std;
    return st == TG_OK ? tg_tensor_uniform_(t, rng, -bound, bound) : st;
}

tg_status tg_init_xavier_normal_(tg_tensor *t, tg_rng *rng, float gain)
{
    float std = 0.0f;
    tg_status st = xavier_std("tg_init_xavier_normal_", t, rng, gain, &std);
    return st == TG_OK ? tg_tensor_normal_(t, rng, 0.0f, std) : st;
}

/* The standard deviation that Kaiming (He et al. 2015) gives: gain / sqrt(fan), fan chosen by
 * mode; the uniform bound is sqrt(3) times it. */
static tg_status kaiming_std(const char *fn, const tg_tensor *t, const tg_rng *rng, float gain,
                             tg_fan_mode mode, float *std)
{
    int64_t fi = 0, fo = 0; /* zeros for the compiler: fans sets both whenever it succeeds */
    tg_status st = init_check(fn, t, rng, true);
    if (st == TG_OK && !(isfinite(gain) && gain >= 0.0f))
        st = tg_set_error(TG_ERR_ARG, "%s: gain %g: need a finite gain >= 0", fn, gain);
    if (st == TG_OK && mode != TG_FAN_IN && mode != TG_FAN_OUT)
        st = tg_set_error(TG_ERR_ARG, "%s: mode %d is neither TG_FAN_IN nor TG_FAN_OUT", fn,
                          (int)mode);
    if (st == TG_OK)
        st = fans(fn, t, &fi, &fo);
    if (st == TG_OK)
        *std = gain / sqrtf((float)(mode == TG_FAN_IN ? fi : fo));
    return st;
}

tg_status tg_init_kaiming_uniform_(tg_tensor *t, tg_rng *rng, float gain, tg_fan_mode mode)
{
    float std = 0.0f;
    tg_status st = kaiming_std("tg_init_kaiming_uniform_", t, rng, gain, mode, &std);
    float bound = sqrtf(3.0f) * std;
    return st == TG_OK ? tg_tensor_uniform_(t, rng, -bound, bound) : st;
}

tg_status tg_init_kaiming_normal_(tg_tensor *t, tg_rng *rng, float gain, tg_fan_mode mode)
{
    float std = 0.0f;
    tg_status st = kaiming_std("tg_init_kaiming_normal_", t, rng, gain, mode, &std);
    return st == TG_OK ? tg_tensor_normal_(t, rng, 0.0f, std) : st;
}

/* ---- applying to a tree ------------------------------------------------------------------ */

tg_status tg_module_apply(tg_module *m, tg_module_fn fn, void *ctx)
{
    if (!m || !fn)
        return tg_set_error(TG_ERR_ARG, "tg_module_apply: %s is NULL", m ? "fn" : "module");
    /* Children first, then m itself, as PyTorch's Module.apply. */
    for (int64_t i = 0; i < tg_module_num_children(m); i++) {
        tg_status st = tg_module_apply(tg_module_child_at(m, i), fn, ctx);
        if (st != TG_OK)
            return st;
    }
    return fn(m, ctx);
}

/* Paddle 1.8 dygraph's defaults (python/paddle/fluid/dygraph/nn.py): Linear and
 * Conv2DTranspose weights Xavier-uniform, Conv2D weights Normal(0, sqrt(2 / (k*k*Cin))), i.e.
 * Kaiming-normal with ReLU's gain over fan_in, every bias 0; BatchNorm scale 1 and bias 0. In
 * our (PyTorch) weight layouts the PyTorch fan convention gives exactly Paddle's fans for all
 * three layers (Paddle's Linear weight is [in, out], ours [out, in]: Xavier's sum is the same). */
static tg_status paddle_init_one(tg_module *m, void *ctx)
{
    tg_rng *rng = ctx;
    const char *type = tg_module_type(m);
    if (!tg_module_has_param(m, "weight"))
        return TG_OK; /* a layer built without weights (BatchNorm without affine) */
    tg_tensor *w = tg_module_param(m, "weight");
    tg_tensor *b = tg_module_has_param(m, "bias") ? tg_module_param(m, "bias") : NULL;
    tg_status st = TG_OK;
    if (!strcmp(type, "Linear") || !strcmp(type, "ConvTranspose2d"))
        st = tg_init_xavier_uniform_(w, rng, 1.0f);
    else if (!strcmp(type, "Conv2d"))
        st = tg_init_kaiming_normal_(w, rng, tg_init_gain(TG_NL_RELU, 0.0f), TG_FAN_IN);
    else if (!strcmp(type, "BatchNorm1d") || !strcmp(type, "BatchNorm2d"))
        st = tg_init_constant_(w, 1.0f);
    else
        return TG_OK;
    if (st == TG_OK && b)
        st = tg_init_constant_(b, 0.0f);
    return st;
}

tg_status tg_nn_init_paddle(tg_module *m, tg_rng *rng)
{
    if (!m || !rng)
        return tg_set_error(TG_ERR_ARG, "tg_nn_init_paddle: %s is NULL", m ? "rng" : "module");
    return tg_module_apply(m, paddle_init_one, rng);
}
