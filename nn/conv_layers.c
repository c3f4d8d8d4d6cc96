/* Image layers: Conv2d, ConvTranspose2d, MaxPool2d, AvgPool2d, Upsample. Each forward only
 * composes autograd ops (no backward code in nn/). */
#include "internal.h"

#include <math.h>

/* ---- Conv2d and ConvTranspose2d ---------------------------------------------------------- */

typedef struct {
    int stride, padding;
    int extra; /* dilation for Conv2d, output_padding for ConvTranspose2d */
} conv_config;

static tg_tensor *conv2d_forward(tg_module *m, tg_tensor *x)
{
    const conv_config *c = tg_module_config(m);
    return tg_conv2d(x, tg_module_param(m, "weight"), tg_nn_optional_param(m, "bias"), c->stride,
                     c->padding, c->extra);
}

static tg_tensor *conv_transpose2d_forward(tg_module *m, tg_tensor *x)
{
    const conv_config *c = tg_module_config(m);
    return tg_conv_transpose2d(x, tg_module_param(m, "weight"), tg_nn_optional_param(m, "bias"),
                               c->stride, c->padding, c->extra);
}

/* A conv module with weight [w0, w1, k, k] and bias [out_ch], both ~ U(-bound, bound) with
 * PyTorch's bound 1/sqrt(fan_in), fan_in = w1 * k * k (_calculate_fan_in_and_fan_out reads
 * weight dimension 1 whatever the layer: in_ch for Conv2d, out_ch for ConvTranspose2d). */
static tg_module *conv_new(const char *fn, const char *type, tg_forward_fn forward, int64_t w0,
                           int64_t w1, int64_t out_ch, int kernel, const conv_config *c, bool bias,
                           tg_rng *rng)
{
    float bound = 1.0f / sqrtf((float)(w1 * kernel * kernel));
    tg_module *m = tg_module_new(type, forward, c, sizeof *c);
    if (!m)
        return NULL;
    tg_status st = tg_module_add_param(
        m, "weight", tg_nn_uniform_param(fn, TG_DIMS(w0, w1, kernel, kernel), bound, rng));
    if (st == TG_OK && bias)
        st = tg_module_add_param(m, "bias", tg_nn_uniform_param(fn, TG_DIMS(out_ch), bound, rng));
    if (st != TG_OK) {
        tg_module_free(m);
        return NULL;
    }
    return m;
}

tg_module *tg_nn_conv2d(int64_t in_ch, int64_t out_ch, int kernel, int stride, int padding,
                        int dilation, bool bias, tg_rng *rng)
{
    const char *fn = "tg_nn_conv2d";
    if (in_ch < 1 || out_ch < 1 || kernel < 1 || stride < 1 || padding < 0 || dilation < 1) {
        tg_set_error(TG_ERR_ARG,
                     "%s: in_ch %lld, out_ch %lld, kernel %d, stride %d, padding "
                     "%d, dilation %d: need channels, kernel, stride and dilation >= 1 and "
                     "padding >= 0",
                     fn, (long long)in_ch, (long long)out_ch, kernel, stride, padding, dilation);
        return NULL;
    }
    conv_config c = {.stride = stride, .padding = padding, .extra = dilation};
    return conv_new(fn, "Conv2d", conv2d_forward, out_ch, in_ch, out_ch, kernel, &c, bias, rng);
}

tg_module *tg_nn_conv_transpose2d(int64_t in_ch, int64_t out_ch, int kernel, int stride,
                                  int padding, int output_padding, bool bias, tg_rng *rng)
{
    const char *fn = "tg_nn_conv_transpose2d";
    if (in_ch < 1 || out_ch < 1 || kernel < 1 || stride < 1 || padding < 0 || output_padding < 0 ||
        output_padding >= stride) {
        tg_set_error(TG_ERR_ARG,
                     "%s: in_ch %lld, out_ch %lld, kernel %d, stride %d, padding "
                     "%d, output_padding %d: need channels, kernel and stride >= 1, padding "
                     ">= 0 and 0 <= output_padding < stride",
                     fn, (long long)in_ch, (long long)out_ch, kernel, stride, padding,
                     output_padding);
        return NULL;
    }
    conv_config c = {.stride = stride, .padding = padding, .extra = output_padding};
    return conv_new(fn, "ConvTranspose2d", conv_transpose2d_forward, in_ch, out_ch, out_ch, kernel,
                    &c, bias, rng);
}

/* ---- pooling ----------------------------------------------------------------------------- */

typedef struct {
    int kernel, stride, padding;
    bool count_include_pad; /* AvgPool2d only */
} pool_config;

static tg_tensor *max_pool2d_forward(tg_module *m, tg_tensor *x)
{
    const pool_config *c = tg_module_config(m);
    return tg_max_pool2d(x, c->kernel, c->stride, c->padding);
}

static tg_tensor *avg_pool2d_forward(tg_module *m, tg_tensor *x)
{
    const pool_config *c = tg_module_config(m);
    return tg_avg_pool2d(x, c->kernel, c->stride, c->padding, c->count_include_pad);
}

static tg_module *pool_new(const char *fn, const char *type, tg_forward_fn forward, int kernel,
                           int stride, int padding, bool count_include_pad)
{
    /* PyTorch: stride defaults to kernel_size; padding may be at most half the kernel. */
    if (stride == 0)
        stride = kernel;
    if (kernel < 1 || stride < 1 || padding < 0 || 2 * padding > kernel) {
        tg_set_error(TG_ERR_ARG,
                     "%s: kernel %d, stride %d, padding %d: need kernel, stride "
                     ">= 1 and 0 <= padding <= kernel / 2",
                     fn, kernel, stride, padding);
        return NULL;
    }
    pool_config c = {.kernel = kernel,
                     .stride = stride,
                     .padding = padding,
                     .count_include_pad = count_include_pad};
    return tg_module_new(type, forward, &c, sizeof c);
}

tg_module *tg_nn_max_pool2d(int kernel, int stride, int padding)
{
    return pool_new("tg_nn_max_pool2d", "MaxPool2d", max_pool2d_forward, kernel, stride, padding,
                    false);
}

bool tg_nn_is_max_pool_2x2(const tg_module *m)
{
    const pool_config *c = tg_nn_forward_of(m) == max_pool2d_forward ? tg_module_config(m) : NULL;
    return c && c->kernel == 2 && c->stride == 2 && c->padding == 0;
}

tg_module *tg_nn_avg_pool2d(int kernel, int stride, int padding, bool count_include_pad)
{
    return pool_new("tg_nn_avg_pool2d", "AvgPool2d", avg_pool2d_forward, kernel, stride, padding,
                    count_include_pad);
}

/* ---- Upsample ---------------------------------------------------------------------------- */

typedef struct {
    int scale;
    tg_upsample_mode mode;
} upsample_config;

static tg_tensor *upsample_forward(tg_module *m, tg_tensor *x)
{
    const upsample_config *c = tg_module_config(m);
    return tg_upsample(x, c->scale, c->mode);
}

tg_module *tg_nn_upsample(int scale, tg_upsample_mode mode)
{
    if (scale < 1 || (mode != TG_UPSAMPLE_NEAREST && mode != TG_UPSAMPLE_BILINEAR_ALIGN_CORNERS &&
                      mode != TG_UPSAMPLE_BILINEAR_HALF_PIXEL)) {
        tg_set_error(TG_ERR_ARG,
                     "tg_nn_upsample: scale %d, mode %d: need scale >= 1 and a "
                     "tg_upsample_mode",
                     scale, (int)mode);
        return NULL;
    }
    upsample_config c = {.scale = scale, .mode = mode};
    return tg_module_new("Upsample", upsample_forward, &c, sizeof c);
}
