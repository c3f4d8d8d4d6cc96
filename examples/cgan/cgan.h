/* The conditional DCGAN's models and losses (model.c), shared by the program (main.c), its
 * conformance test (tests/test_cgan_vae_conformance.c) and mnist_gan's cgan recipe (its
 * library builds model.c in: examples/mnist_gan/meson.build). torch_cgan.py is the same in
 * PyTorch. */
#ifndef CGAN_H
#define CGAN_H

#include "tapegrad.h"

typedef struct cgan_widths {
    int64_t nz;  /* noise size */
    int64_t emb; /* size of G's label embedding */
    int64_t ngf; /* G's last feature maps (the first have 2 * ngf) */
    int64_t ndf; /* D's first feature maps (the second have 2 * ndf) */
} cgan_widths;

/* G: tg_module_forward2(G, z [N, nz], labels [N]) -> images [N, 1, 28, 28] in [-1, 1]. Labels
 * are digits 0..9 held as floats, as the MNIST loader gives them. */
tg_module *cgan_generator(const cgan_widths *w, tg_rng *rng);
/* D: tg_module_forward2(D, images [N, 1, 28, 28], labels [N]) -> logits [N, 1]. */
tg_module *cgan_discriminator(const cgan_widths *w, tg_rng *rng);
/* The DCGAN paper's initialisation by layer type: convolutions N(0, 0.02), BatchNorm weights
 * N(1, 0.02), their biases 0. */
tg_status cgan_init(tg_module *m, tg_rng *rng);
/* D's loss: BCE of D(real, labels) against 1 plus BCE of D(fake, labels) against 0, fake
 * detached. */
tg_tensor *cgan_d_loss(tg_module *D, tg_tensor *real, tg_tensor *fake, tg_tensor *labels);
/* G's loss: BCE of D(fake, labels) against 1. */
tg_tensor *cgan_g_loss(tg_module *D, tg_tensor *fake, tg_tensor *labels);

#endif
