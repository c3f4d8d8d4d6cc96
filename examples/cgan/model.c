/* The conditional DCGAN's models and losses: torch_cgan.py's Generator, Discriminator,
 * dcgan_init, d_loss_fn and g_loss_fn, layer for layer (the same parameter names). */
#include "cgan.h"

#include <string.h>

/* Adds the children "embed" and "net" to m (a model's two parts), freeing all on failure. */
static tg_module *with_parts(tg_module *m, tg_module *embed, tg_module *net)
{
    tg_status a = tg_module_add_child(m, "embed", embed), b = tg_module_add_child(m, "net", net);
    if (a == TG_OK && b == TG_OK)
        return m;
    tg_module_free(m);
    return NULL;
}

/* G: the label's embedding joins the noise, then DCGAN's upsampling path from 7x7 to 28x28. */
static tg_status g_forward(tg_module *m, int64_t n_in, tg_tensor *const *in, int64_t n_out,
                           tg_tensor **out)
{
    if (n_in != 2 || n_out != 1)
        return tg_set_error(TG_ERR_ARG, "Generator: takes (z, labels), gives one output");
    tg_tensor *zy[2] = {in[0], tg_nn_embed(tg_module_child(m, "embed"), tg_labels(in[1]))};
    out[0] = tg_module_forward(tg_module_child(m, "net"), tg_concat(zy, 2, 1));
    return out[0] ? TG_OK : tg_last_status();
}

tg_module *cgan_generator(const cgan_widths *w, tg_rng *rng)
{
    const int64_t c = 2 * w->ngf;
    return with_parts(
        tg_module_new_multi("Generator", g_forward, NULL, 0), tg_nn_embedding(10, w->emb, -1, rng),
        TG_NN_SEQUENTIAL(
            tg_nn_linear(w->nz + w->emb, c * 7 * 7, true, rng), tg_nn_batch_norm1d(c * 7 * 7),
            tg_nn_relu(), tg_nn_reshape(TG_DIMS(-1, c, 7, 7)),
            tg_nn_conv_transpose2d(c, w->ngf, 4, 2, 1, 0, true, rng), tg_nn_batch_norm2d(w->ngf),
            tg_nn_relu(), tg_nn_conv_transpose2d(w->ngf, 1, 4, 2, 1, 0, true, rng), tg_nn_tanh()));
}

/* D: the label's embedding is a second image channel, then DCGAN's strided convolutions. */
static tg_status d_forward(tg_module *m, int64_t n_in, tg_tensor *const *in, int64_t n_out,
                           tg_tensor **out)
{
    if (n_in != 2 || n_out != 1)
        return tg_set_error(TG_ERR_ARG, "Discriminator: takes (images, labels), gives one output");
    tg_tensor *y = tg_nn_embed(tg_module_child(m, "embed"), tg_labels(in[1]));
    tg_tensor *xy[2] = {in[0], tg_reshape(y, TG_DIMS(-1, 1, 28, 28))};
    out[0] = tg_module_forward(tg_module_child(m, "net"), tg_concat(xy, 2, 1));
    return out[0] ? TG_OK : tg_last_status();
}

tg_module *cgan_discriminator(const cgan_widths *w, tg_rng *rng)
{
    const int64_t c = 2 * w->ndf;
    return with_parts(tg_module_new_multi("Discriminator", d_forward, NULL, 0),
                      tg_nn_embedding(10, 28 * 28, -1, rng),
                      TG_NN_SEQUENTIAL(tg_nn_conv2d(2, w->ndf, 4, 2, 1, 1, true, rng),
                                       tg_nn_leaky_relu(0.2f),
                                       tg_nn_conv2d(w->ndf, c, 4, 2, 1, 1, true, rng),
                                       tg_nn_batch_norm2d(c), tg_nn_leaky_relu(0.2f),
                                       tg_nn_flatten(), tg_nn_linear(c * 7 * 7, 1, true, rng)));
}

/* One layer of cgan_init (tg_module_apply visits every module). */
static tg_status dcgan_init_layer(tg_module *m, void *rng)
{
    const char *type = tg_module_type(m);
    float mean = 0.0f;
    if (!strncmp(type, "BatchNorm", 9))
        mean = 1.0f;
    else if (strcmp(type, "Conv2d") && strcmp(type, "ConvTranspose2d"))
        return TG_OK;
    tg_status st = tg_init_normal_(tg_module_param(m, "weight"), rng, mean, 0.02f);
    if (st != TG_OK || !tg_module_has_param(m, "bias"))
        return st;
    return tg_init_constant_(tg_module_param(m, "bias"), 0.0f);
}

tg_status cgan_init(tg_module *m, tg_rng *rng)
{
    return tg_module_apply(m, dcgan_init_layer, rng);
}

/* Mean BCE of logits against a constant target. */
static tg_tensor *bce_to(tg_tensor *logits, float target)
{
    if (!logits)
        return NULL;
    return tg_bce_with_logits(logits, tg_full(logits->ndim, logits->shape, target), TG_REDUCE_MEAN);
}

tg_tensor *cgan_d_loss(tg_module *D, tg_tensor *real, tg_tensor *fake, tg_tensor *labels)
{
    return tg_add(bce_to(tg_module_forward2(D, real, labels), 1.0f),
                  bce_to(tg_module_forward2(D, tg_detach(fake), labels), 0.0f));
}

tg_tensor *cgan_g_loss(tg_module *D, tg_tensor *fake, tg_tensor *labels)
{
    return bce_to(tg_module_forward2(D, fake, labels), 1.0f);
}
