/* Layers without convolution: Linear, the activations, Flatten, Reshape, Dropout, BatchNorm,
 * LayerNorm. Each forward only composes autograd ops (no backward code in nn/). */
#include "internal.h"

#include <math.h>
#include <string.h>

/* ---- Linear ------------------------------------------------------------------------------ */

static tg_tensor *linear_forward(tg_module *m, tg_tensor *x)
{
    return tg_linear(x, tg_module_param(m, "weight"), tg_nn_optional_param(m, "bias"));
}

tg_module *tg_nn_linear(int64_t in, int64_t out, bool bias, tg_rng *rng)
{
    const char *fn = "tg_nn_linear";
    if (in < 1 || out < 1) {
        tg_set_error(TG_ERR_ARG, "%s: in %lld, out %lld: both must be at least 1", fn,
                     (long long)in, (long long)out);
        return NULL;
    }
    /* PyTorch: kaiming_uniform_(w, a=sqrt(5)) has bound gain*sqrt(3/fan_in) with gain
     * sqrt(2/(1+a^2)) = sqrt(1/3), i.e. 1/sqrt(fan_in); the bias uses 1/sqrt(fan_in) too. */
    float bound = 1.0f / sqrtf((float)in);
    tg_module *m = tg_module_new("Linear", linear_forward, NULL, 0);
    if (!m)
        return NULL;
    tg_status st =
        tg_module_add_param(m, "weight", tg_nn_uniform_param(fn, TG_DIMS(out, in), bound, rng));
    if (st == TG_OK && bias)
        st = tg_module_add_param(m, "bias", tg_nn_uniform_param(fn, TG_DIMS(out), bound, rng));
    if (st != TG_OK) {
        tg_module_free(m);
        return NULL;
    }
    return m;
}

/* ---- activations ------------------------------------------------------------------------- */

static tg_tensor *relu_forward(tg_module *m, tg_tensor *x)
{
    (void)m;
    return tg_relu(x);
}

static tg_tensor *tanh_forward(tg_module *m, tg_tensor *x)
{
    (void)m;
    return tg_tanh(x);
}

static tg_tensor *sigmoid_forward(tg_module *m, tg_tensor *x)
{
    (void)m;
    return tg_sigmoid(x);
}

typedef struct {
    float slope;
} leaky_relu_config;

static tg_tensor *leaky_relu_forward(tg_module *m, tg_tensor *x)
{
    const leaky_relu_config *c = tg_module_config(m);
    return tg_leaky_relu(x, c->slope);
}

tg_module *tg_nn_relu(void)
{
    return tg_module_new("ReLU", relu_forward, NULL, 0);
}

tg_module *tg_nn_tanh(void)
{
    return tg_module_new("Tanh", tanh_forward, NULL, 0);
}

tg_module *tg_nn_sigmoid(void)
{
    return tg_module_new("Sigmoid", sigmoid_forward, NULL, 0);
}

static tg_tensor *gelu_forward(tg_module *m, tg_tensor *x)
{
    (void)m;
    return tg_gelu(x);
}

static tg_tensor *gelu_tanh_forward(tg_module *m, tg_tensor *x)
{
    (void)m;
    return tg_gelu_tanh(x);
}

static tg_tensor *silu_forward(tg_module *m, tg_tensor *x)
{
    (void)m;
    return tg_silu(x);
}

tg_module *tg_nn_gelu(bool tanh_approx)
{
    return tg_module_new("GELU", tanh_approx ? gelu_tanh_forward : gelu_forward, NULL, 0);
}

tg_module *tg_nn_silu(void)
{
    return tg_module_new("SiLU", silu_forward, NULL, 0);
}

tg_module *tg_nn_leaky_relu(float slope)
{
    if (!isfinite(slope)) {
        tg_set_error(TG_ERR_ARG, "tg_nn_leaky_relu: slope %g is not finite", slope);
        return NULL;
    }
    leaky_relu_config c = {.slope = slope};
    return tg_module_new("LeakyReLU", leaky_relu_forward, &c, sizeof c);
}

/* ---- Flatten and Reshape ----------------------------------------------------------------- */

static tg_tensor *flatten_forward(tg_module *m, tg_tensor *x)
{
    (void)m;
    return tg_flatten(x, 1, -1);
}

tg_module *tg_nn_flatten(void)
{
    return tg_module_new("Flatten", flatten_forward, NULL, 0);
}

typedef struct {
    int ndim;
    int64_t shape[TG_MAX_DIMS];
} reshape_config;

static tg_tensor *reshape_forward(tg_module *m, tg_tensor *x)
{
    const reshape_config *c = tg_module_config(m);
    return tg_reshape(x, c->ndim, c->shape);
}

tg_module *tg_nn_reshape(int ndim, const int64_t *shape)
{
    const char *fn = "tg_nn_reshape";
    if (ndim < 1 || ndim > TG_MAX_DIMS || !shape) {
        tg_set_error(TG_ERR_ARG, "%s: ndim %d%s: need 1..%d sizes", fn, ndim,
                     shape ? "" : " with a NULL shape", TG_MAX_DIMS);
        return NULL;
    }
    reshape_config c = {.ndim = ndim};
    int inferred = 0;
    for (int i = 0; i < ndim; i++) {
        c.shape[i] = shape[i];
        inferred += shape[i] == -1;
        if (shape[i] < -1 || inferred > 1) {
            char s[160];
            tg_set_error(TG_ERR_ARG, "%s: shape %s: sizes must be >= 0, with at most one -1", fn,
                         tg_shape_str(ndim, shape, s, sizeof s));
            return NULL;
        }
    }
    return tg_module_new("Reshape", reshape_forward, &c, sizeof c);
}

/* ---- Dropout ----------------------------------------------------------------------------- */

typedef struct {
    float p;
    tg_rng *rng; /* borrowed */
} dropout_config;

static tg_tensor *dropout_forward(tg_module *m, tg_tensor *x)
{
    const dropout_config *c = tg_module_config(m);
    return tg_dropout(x, c->p, tg_module_is_training(m), c->rng);
}

tg_module *tg_nn_dropout(float p, tg_rng *rng)
{
    if (!(p >= 0.0f && p < 1.0f) || !rng) {
        tg_set_error(TG_ERR_ARG, "tg_nn_dropout: p = %g%s: need 0 <= p < 1 and an rng", p,
                     rng ? "" : " and rng NULL");
        return NULL;
    }
    dropout_config c = {.p = p, .rng = rng};
    return tg_module_new("Dropout", dropout_forward, &c, sizeof c);
}

/* ---- BatchNorm --------------------------------------------------------------------------- */

typedef struct {
    int ndim; /* 2 for BatchNorm1d ([N, C]), 4 for BatchNorm2d ([N, C, H, W]) */
    int64_t channels;
    float momentum, eps;
} batch_norm_config;

/* The BatchNorm's forward with an activation applied in the op (TG_ACT_NONE: none), and with
 * pool the 2 x 2 max pool after it (tg_batch_norm_act_pool2d). */
static tg_tensor *batch_norm_run(tg_module *m, tg_tensor *x, tg_act act, float slope, bool pool)
{
    const batch_norm_config *c = tg_module_config(m);
    if (x->ndim != c->ndim || x->shape[1] != c->channels) {
        char s[160];
        tg_set_error(TG_ERR_SHAPE,
                     "tg_module_forward: %s \"%s\" with %lld channels got x %s; it "
                     "takes %s with C = %lld",
                     tg_module_type(m), tg_module_name(m), (long long)c->channels,
                     tg_shape_str(x->ndim, x->shape, s, sizeof s),
                     c->ndim == 2 ? "[N, C]" : "[N, C, H, W]", (long long)c->channels);
        return NULL;
    }
    tg_tensor *(*run)(tg_tensor *, tg_tensor *, tg_tensor *, tg_tensor *, tg_tensor *, bool, float,
                      float, tg_act, float) = pool ? tg_batch_norm_act_pool2d : tg_batch_norm_act;
    tg_tensor *y = run(x, tg_module_param(m, "weight"), tg_module_param(m, "bias"),
                       tg_module_buffer(m, "running_mean"), tg_module_buffer(m, "running_var"),
                       tg_module_is_training(m), c->momentum, c->eps, act, slope);
    if (y && tg_module_is_training(m)) {
        /* Counted as PyTorch does; a float holds every count up to 2^24 exactly. */
        tg_tensor *count = tg_module_buffer(m, "num_batches_tracked");
        count->data[0] += (float)tg_batch_norm_running_updates();
        tg_tensor_bump_version(count);
    }
    return y;
}

static tg_tensor *batch_norm_forward(tg_module *m, tg_tensor *x)
{
    return batch_norm_run(m, x, TG_ACT_NONE, 0.0f, false);
}

tg_tensor *tg_nn_batch_norm_act_forward(tg_module *const *mods, int64_t n, tg_tensor *x, int *used)
{
    *used = 0;
    if (n < 2 || !mods[0] || !mods[1] || !x || x == TG_NONE ||
        tg_nn_forward_of(mods[0]) != batch_norm_forward)
        return NULL;
    tg_act a;
    float slope = 0.0f;
    tg_forward_fn f = tg_nn_forward_of(mods[1]);
    if (f == relu_forward) {
        a = TG_ACT_RELU;
    } else if (f == tanh_forward) {
        a = TG_ACT_TANH;
    } else if (f == leaky_relu_forward) {
        a = TG_ACT_LEAKY_RELU;
        slope = ((const leaky_relu_config *)tg_module_config(mods[1]))->slope;
        if (!(slope > 0.0f)) /* read back from the output only for a positive slope */
            return NULL;
    } else {
        return NULL;
    }
    /* The pool too for the op's shapes (BatchNorm2d's x, one window at least); other x go to
     * the modules, whose messages name the one that refuses it. */
    const bool pool = n >= 3 && a != TG_ACT_TANH && tg_nn_is_max_pool_2x2(mods[2]) &&
                      x->ndim == 4 && x->shape[2] >= 2 && x->shape[3] >= 2;
    *used = pool ? 3 : 2;
    return batch_norm_run(mods[0], x, a, slope, pool);
}

static tg_module *batch_norm_new(const char *fn, const char *type, int ndim, int64_t channels)
{
    if (channels < 1) {
        tg_set_error(TG_ERR_ARG, "%s: %lld channels; need at least 1", fn, (long long)channels);
        return NULL;
    }
    /* PyTorch's defaults: momentum 0.1, eps 1e-5; weight 1, bias 0, running_mean 0,
     * running_var 1. num_batches_tracked is used by PyTorch only when momentum is None (not
     * offered here); it is kept so that state dicts have PyTorch's names both ways. */
    batch_norm_config c = {.ndim = ndim, .channels = channels, .momentum = 0.1f, .eps = 1e-5f};
    tg_module *m = tg_module_new(type, batch_norm_forward, &c, sizeof c);
    if (!m)
        return NULL;
    if (tg_module_add_param(m, "weight", tg_tensor_ones(TG_DIMS(channels))) != TG_OK ||
        tg_module_add_param(m, "bias", tg_tensor_zeros(TG_DIMS(channels))) != TG_OK ||
        tg_module_add_buffer(m, "running_mean", tg_tensor_zeros(TG_DIMS(channels))) != TG_OK ||
        tg_module_add_buffer(m, "running_var", tg_tensor_ones(TG_DIMS(channels))) != TG_OK ||
        tg_module_add_buffer(m, "num_batches_tracked", tg_tensor_scalar(0.0f)) != TG_OK) {
        tg_module_free(m);
        return NULL;
    }
    return m;
}

tg_module *tg_nn_batch_norm1d(int64_t channels)
{
    return batch_norm_new("tg_nn_batch_norm1d", "BatchNorm1d", 2, channels);
}

tg_module *tg_nn_batch_norm2d(int64_t channels)
{
    return batch_norm_new("tg_nn_batch_norm2d", "BatchNorm2d", 4, channels);
}

/* ---- LayerNorm --------------------------------------------------------------------------- */

typedef struct {
    int ndim; /* the normalised axes: the last ndim of x, of sizes shape */
    int64_t shape[TG_MAX_DIMS];
    float eps;
} layer_norm_config;

static tg_tensor *layer_norm_forward(tg_module *m, tg_tensor *x)
{
    const layer_norm_config *c = tg_module_config(m);
    /* Checked here even without affine parameters, as PyTorch's LayerNorm does: the op alone
     * would normalise whatever the last axes are. */
    bool ok = x->ndim >= c->ndim;
    for (int d = 0; ok && d < c->ndim; d++)
        ok = x->shape[x->ndim - c->ndim + d] == c->shape[d];
    if (!ok) {
        char sx[160], sn[160];
        tg_set_error(TG_ERR_SHAPE,
                     "tg_module_forward: %s \"%s\" over %s got x %s; its last %d axes must be %s",
                     tg_module_type(m), tg_module_name(m),
                     tg_shape_str(c->ndim, c->shape, sn, sizeof sn),
                     tg_shape_str(x->ndim, x->shape, sx, sizeof sx), c->ndim, sn);
        return NULL;
    }
    return tg_layer_norm(x, c->ndim, tg_nn_optional_param(m, "weight"),
                         tg_nn_optional_param(m, "bias"), c->eps);
}

tg_module *tg_nn_layer_norm(int ndim, const int64_t *shape, float eps, bool elementwise_affine)
{
    const char *fn = "tg_nn_layer_norm";
    if (ndim < 1 || ndim > TG_MAX_DIMS || !shape) {
        tg_set_error(TG_ERR_ARG, "%s: ndim %d%s: need 1..%d sizes", fn, ndim,
                     shape ? "" : " with a NULL shape", TG_MAX_DIMS);
        return NULL;
    }
    layer_norm_config c = {.ndim = ndim, .eps = eps};
    for (int i = 0; i < ndim; i++) {
        c.shape[i] = shape[i];
        if (shape[i] < 1) {
            char s[160];
            tg_set_error(TG_ERR_ARG, "%s: shape %s: every size must be at least 1", fn,
                         tg_shape_str(ndim, shape, s, sizeof s));
            return NULL;
        }
    }
    if (!(eps >= 0.0f && isfinite(eps))) {
        tg_set_error(TG_ERR_ARG, "%s: eps = %g must be finite and >= 0", fn, (double)eps);
        return NULL;
    }
    tg_module *m = tg_module_new("LayerNorm", layer_norm_forward, &c, sizeof c);
    if (!m)
        return NULL;
    /* PyTorch's names and initial values: weight 1, bias 0, of the normalised shape. */
    if (elementwise_affine &&
        (tg_module_add_param(m, "weight", tg_tensor_ones(ndim, shape)) != TG_OK ||
         tg_module_add_param(m, "bias", tg_tensor_zeros(ndim, shape)) != TG_OK)) {
        tg_module_free(m);
        return NULL;
    }
    return m;
}
