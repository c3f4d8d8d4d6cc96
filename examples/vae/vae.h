/* The VAE's model and loss (model.c), shared by the program (main.c) and its conformance test
 * (tests/test_cgan_vae_conformance.c). torch_vae.py is the same in PyTorch. */
#ifndef VAE_H
#define VAE_H

#include "tapegrad.h"

/* tg_module_forward_multi(vae, 2, {x [N, 784], eps [N, latent]}, 3, out) gives out = {logits
 * [N, 784], mu [N, latent], logvar [N, latent]}: the encoder 784-hidden-2*latent (ReLU) gives mu
 * and logvar, z = mu + eps * exp(logvar / 2), the decoder latent-hidden-784 (ReLU) gives the
 * logits of the pixels. Children "encoder" and "decoder" (Sequentials). */
tg_module *vae_new(int64_t hidden, int64_t latent, tg_rng *rng);
/* (BCE of the logits against x in [0, 1], summed, + the KL divergence of N(mu, e^logvar) from
 * N(0, 1)) / N: the negative ELBO per sample, as PyTorch's VAE example. *logits (may be NULL)
 * gets the reconstruction's logits. */
tg_tensor *vae_loss(tg_module *vae, tg_tensor *x, tg_tensor *eps, tg_tensor **logits);

#endif
