/* The models: the tutorial's G (two variants) and D, and the classic MNIST DCGAN pair, each
 * written as the tutorial's Python would be, one layer a line; the cgan recipe's pair is
 * examples/cgan's (model.c, built into this library). */
#include "gan.h"

#include "cgan.h"

gan_widths gan_widths_default(int div)
{
    if (div < 1)
        div = 1;
    return (gan_widths){.nz = 100,
                        .g_fc = 1024 / div,
                        .g_ch1 = 128 / div,
                        .g_ch2 = 64 / div,
                        .d_ch1 = 64 / div,
                        .d_ch2 = 128 / div,
                        .d_fc = 1024 / div};
}

/* PaddlePaddle's leaky_relu default slope, which the tutorial's convt generator relies on. */
#define PADDLE_LEAKY_SLOPE 0.02f
/* The slope of the classic DCGAN discriminator. */
#define DCGAN_LEAKY_SLOPE 0.2f

/* Tutorial G, upsampling variant:
 * fc(nz->1024) bn tanh, fc(1024->128*7*7) bn tanh, reshape, [bilinear x2 (aligned corners, as
 * PaddlePaddle's image_resize), conv 5x5 pad 2, bn, tanh] twice, the last conv to 1 channel.
 * With relu, the same with relu at those four places: the generator before the tutorial's P.S.,
 * which says that tanh in place of "the original relu" ended its all-black output. The original
 * code is not published; relu at all four is our reading of that sentence (a relu output can
 * draw nothing darker than mid-gray, 0 in the data's [-1, 1], and all of it 0, a dead output,
 * is a flat image: black in the tutorial's per-image scaled grids). */
static tg_module *tutorial_g_upsample(const gan_widths *w, tg_rng *rng, bool relu)
{
    const int64_t c1 = w->g_ch1, c2 = w->g_ch2;
    tg_module *(*act)(void) = relu ? tg_nn_relu : tg_nn_tanh;
    return TG_NN_SEQUENTIAL(
        tg_nn_linear(w->nz, w->g_fc, true, rng), tg_nn_batch_norm1d(w->g_fc), act(),
        tg_nn_linear(w->g_fc, c1 * 7 * 7, true, rng), tg_nn_batch_norm1d(c1 * 7 * 7), act(),
        tg_nn_reshape(TG_DIMS(-1, c1, 7, 7)), tg_nn_upsample(2, TG_UPSAMPLE_BILINEAR_ALIGN_CORNERS),
        tg_nn_conv2d(c1, c2, 5, 1, 2, 1, true, rng), tg_nn_batch_norm2d(c2), act(),
        tg_nn_upsample(2, TG_UPSAMPLE_BILINEAR_ALIGN_CORNERS),
        tg_nn_conv2d(c2, 1, 5, 1, 2, 1, true, rng), act());
}

/* Tutorial G, transposed-convolution variant: the same fully connected part with leaky_relu
 * (PaddlePaddle's slope 0.02), then two 4x4 stride-2 transposed convolutions; the tutorial
 * ends with leaky_relu, not tanh, and so do we. */
static tg_module *tutorial_g_convt(const gan_widths *w, tg_rng *rng)
{
    const int64_t c1 = w->g_ch1, c2 = w->g_ch2;
    const float s = PADDLE_LEAKY_SLOPE;
    return TG_NN_SEQUENTIAL(
        tg_nn_linear(w->nz, w->g_fc, true, rng), tg_nn_batch_norm1d(w->g_fc), tg_nn_leaky_relu(s),
        tg_nn_linear(w->g_fc, c1 * 7 * 7, true, rng), tg_nn_batch_norm1d(c1 * 7 * 7),
        tg_nn_leaky_relu(s), tg_nn_reshape(TG_DIMS(-1, c1, 7, 7)),
        tg_nn_conv_transpose2d(c1, c2, 4, 2, 1, 0, true, rng), tg_nn_batch_norm2d(c2),
        tg_nn_leaky_relu(s), tg_nn_conv_transpose2d(c2, 1, 4, 2, 1, 0, true, rng),
        tg_nn_leaky_relu(s));
}

/* Tutorial D: [conv 3x3, bn, relu, maxpool 2] twice, flatten (128*5*5), fc(->1024), bn, relu,
 * fc(->1) giving a logit. */
static tg_module *tutorial_d(const gan_widths *w, tg_rng *rng)
{
    const int64_t c1 = w->d_ch1, c2 = w->d_ch2;
    return TG_NN_SEQUENTIAL(
        tg_nn_conv2d(1, c1, 3, 1, 0, 1, true, rng), tg_nn_batch_norm2d(c1), tg_nn_relu(),
        tg_nn_max_pool2d(2, 2, 0), tg_nn_conv2d(c1, c2, 3, 1, 0, 1, true, rng),
        tg_nn_batch_norm2d(c2), tg_nn_relu(), tg_nn_max_pool2d(2, 2, 0), tg_nn_flatten(),
        tg_nn_linear(c2 * 5 * 5, w->d_fc, true, rng), tg_nn_batch_norm1d(w->d_fc), tg_nn_relu(),
        tg_nn_linear(w->d_fc, 1, true, rng));
}

/* DCGAN G: fc(nz->128*7*7), reshape, bn, relu, convT 4/2/1 to 14x14, bn, relu, convT 4/2/1 to
 * 28x28, tanh. */
static tg_module *dcgan_g(const gan_widths *w, tg_rng *rng)
{
    const int64_t c1 = w->g_ch1, c2 = w->g_ch2;
    return TG_NN_SEQUENTIAL(tg_nn_linear(w->nz, c1 * 7 * 7, true, rng),
                            tg_nn_reshape(TG_DIMS(-1, c1, 7, 7)), tg_nn_batch_norm2d(c1),
                            tg_nn_relu(), tg_nn_conv_transpose2d(c1, c2, 4, 2, 1, 0, true, rng),
                            tg_nn_batch_norm2d(c2), tg_nn_relu(),
                            tg_nn_conv_transpose2d(c2, 1, 4, 2, 1, 0, true, rng), tg_nn_tanh());
}

/* DCGAN D: conv 4/2/1 to 14x14, leaky 0.2, conv 4/2/1 to 7x7, bn, leaky 0.2, flatten, fc(->1).
 * No BatchNorm on the input layer: it would cancel a brightness offset shared by the batch. */
static tg_module *dcgan_d(const gan_widths *w, tg_rng *rng)
{
    const int64_t c1 = w->d_ch1, c2 = w->d_ch2;
    const float s = DCGAN_LEAKY_SLOPE;
    return TG_NN_SEQUENTIAL(tg_nn_conv2d(1, c1, 4, 2, 1, 1, true, rng), tg_nn_leaky_relu(s),
                            tg_nn_conv2d(c1, c2, 4, 2, 1, 1, true, rng), tg_nn_batch_norm2d(c2),
                            tg_nn_leaky_relu(s), tg_nn_flatten(),
                            tg_nn_linear(c2 * 7 * 7, 1, true, rng));
}

/* WGAN-GP critic: the DCGAN D with its BatchNorm left out or replaced by layer norm over each
 * sample's [c2, 7, 7] (elementwise affine, eps 1e-5); the output is the critic's score, no
 * sigmoid (dcgan_d has none either: its loss takes logits). */
tg_module *gan_build_critic(gan_critic_norm norm, const gan_widths *w, tg_rng *rng)
{
    const int64_t c1 = w->d_ch1, c2 = w->d_ch2;
    const float s = DCGAN_LEAKY_SLOPE;
    if (norm == GAN_CRITIC_LAYER)
        return TG_NN_SEQUENTIAL(tg_nn_conv2d(1, c1, 4, 2, 1, 1, true, rng), tg_nn_leaky_relu(s),
                                tg_nn_conv2d(c1, c2, 4, 2, 1, 1, true, rng),
                                tg_nn_layer_norm(TG_DIMS(c2, 7, 7), 1e-5f, true),
                                tg_nn_leaky_relu(s), tg_nn_flatten(),
                                tg_nn_linear(c2 * 7 * 7, 1, true, rng));
    return TG_NN_SEQUENTIAL(tg_nn_conv2d(1, c1, 4, 2, 1, 1, true, rng), tg_nn_leaky_relu(s),
                            tg_nn_conv2d(c1, c2, 4, 2, 1, 1, true, rng), tg_nn_leaky_relu(s),
                            tg_nn_flatten(), tg_nn_linear(c2 * 7 * 7, 1, true, rng));
}

/* examples/cgan's widths for ours (gan.h: gan_build_generator). */
static cgan_widths cgan_widths_of(const gan_widths *w)
{
    return (cgan_widths){.nz = w->nz, .emb = 10, .ngf = w->g_ch2, .ndf = w->d_ch1};
}

tg_module *gan_build_generator(gan_recipe recipe, gan_generator gen, const gan_widths *w,
                               tg_rng *rng)
{
    if (recipe == GAN_RECIPE_CGAN) {
        const cgan_widths cw = cgan_widths_of(w);
        return cgan_generator(&cw, rng);
    }
    if (recipe != GAN_RECIPE_TUTORIAL) /* dcgan, and wgan-gp's generator */
        return dcgan_g(w, rng);
    return gen == GAN_GEN_CONVT ? tutorial_g_convt(w, rng)
                                : tutorial_g_upsample(w, rng, gen == GAN_GEN_UPSAMPLE_RELU);
}

tg_module *gan_build_discriminator(gan_recipe recipe, const gan_widths *w, tg_rng *rng)
{
    if (recipe == GAN_RECIPE_CGAN) {
        const cgan_widths cw = cgan_widths_of(w);
        return cgan_discriminator(&cw, rng);
    }
    return recipe == GAN_RECIPE_WGAN_GP ? gan_build_critic(GAN_CRITIC_NONE, w, rng)
           : recipe == GAN_RECIPE_DCGAN ? dcgan_d(w, rng)
                                        : tutorial_d(w, rng);
}
