/* The VAE's model and loss: torch_vae.py's VAE and vae_loss, layer for layer (the same
 * parameter names). */
#include "vae.h"

typedef struct {
    int64_t latent;
} vae_config;

static tg_status vae_forward(tg_module *m, int64_t n_in, tg_tensor *const *in, int64_t n_out,
                             tg_tensor **out)
{
    if (n_in != 2 || n_out != 3)
        return tg_set_error(TG_ERR_ARG, "VAE: takes (x, eps), gives (logits, mu, logvar)");
    const int64_t latent = ((const vae_config *)tg_module_config(m))->latent;
    tg_tensor *h = tg_module_forward(tg_module_child(m, "encoder"), in[0]);
    tg_tensor *mu = tg_slice(h, 1, 0, latent, 1), *logvar = tg_slice(h, 1, latent, 2 * latent, 1);
    /* the reparameterisation trick: z is differentiable in mu and logvar */
    tg_tensor *z = tg_add(mu, tg_mul(in[1], tg_exp(tg_mul_scalar(logvar, 0.5f))));
    out[0] = tg_module_forward(tg_module_child(m, "decoder"), z);
    out[1] = mu, out[2] = logvar;
    return out[0] ? TG_OK : tg_last_status();
}

tg_module *vae_new(int64_t hidden, int64_t latent, tg_rng *rng)
{
    const vae_config c = {latent};
    tg_module *m = tg_module_new_multi("VAE", vae_forward, &c, sizeof c);
    tg_status a =
        tg_module_add_child(m, "encoder",
                            TG_NN_SEQUENTIAL(tg_nn_linear(784, hidden, true, rng), tg_nn_relu(),
                                             tg_nn_linear(hidden, 2 * latent, true, rng)));
    tg_status b =
        tg_module_add_child(m, "decoder",
                            TG_NN_SEQUENTIAL(tg_nn_linear(latent, hidden, true, rng), tg_nn_relu(),
                                             tg_nn_linear(hidden, 784, true, rng)));
    if (a == TG_OK && b == TG_OK)
        return m;
    tg_module_free(m);
    return NULL;
}

tg_tensor *vae_loss(tg_module *vae, tg_tensor *x, tg_tensor *eps, tg_tensor **logits)
{
    tg_tensor *o[3]; /* logits, mu, logvar */
    if (tg_module_forward_multi(vae, 2, (tg_tensor *[]){x, eps}, 3, o) != TG_OK)
        return NULL;
    tg_tensor *bce = tg_bce_with_logits(o[0], x, TG_REDUCE_SUM);
    /* KL = -0.5 * sum(1 + logvar - mu^2 - e^logvar) */
    tg_tensor *kl = tg_mul_scalar(
        tg_sum(tg_sub(tg_sub(tg_add_scalar(o[2], 1.0f), tg_square(o[1])), tg_exp(o[2]))), -0.5f);
    if (logits)
        *logits = o[0];
    return tg_div_scalar(tg_add(bce, kl), (float)x->shape[0]);
}
