/* mnist_gan's core — the GAN of the PaddlePaddle dygraph tutorial on MNIST, in C against
 * tapegrad's public API: model builders, the training step and its state. Shared by the program
 * (the folder above), its tests and the benchmark. */
#ifndef MNIST_GAN_H
#define MNIST_GAN_H

#include "tapegrad.h"

/* Which models: the tutorial's, the classic MNIST DCGAN that learns digits in one epoch,
 * WGAN-GP (Gulrajani et al. 2017): the dcgan generator against a critic trained with a
 * gradient penalty (step.c), or cgan: examples/cgan's conditional DCGAN, G(z, y) and D(x, y),
 * the label through an embedding (cgan.h), trained with dcgan's settings. The values are the
 * checkpoint's "recipe" numbers: append only. */
typedef enum {
    GAN_RECIPE_TUTORIAL,
    GAN_RECIPE_DCGAN,
    GAN_RECIPE_WGAN_GP,
    GAN_RECIPE_CGAN
} gan_recipe;
/* Whether the recipe's G and D take a label beside the image or noise. */
#define GAN_CONDITIONAL(recipe) ((recipe) == GAN_RECIPE_CGAN)
/* The labels a conditional G draws when the caller gives none (gan_generate): every image
 * label gan_label_of(gen_label, i). */
#define GAN_LABELS_BALANCED (-1)
/* The WGAN-GP critic's normalisation: none (the default, as the paper's MNIST critic), or layer
 * norm over each sample's [C, H, W] after the second conv (the paper's advice when one is
 * wanted: the penalty is per sample, so no norm may mix the samples of a batch, as BatchNorm
 * does). */
typedef enum { GAN_CRITIC_NONE, GAN_CRITIC_LAYER } gan_critic_norm;
/* The tutorial's two generators: bilinear upsampling + conv, or transposed convolutions; and
 * the first one as it was before the tutorial's P.S., relu where the published code has tanh
 * (models.c). */
typedef enum { GAN_GEN_UPSAMPLE, GAN_GEN_CONVT, GAN_GEN_UPSAMPLE_RELU } gan_generator;
/* The tutorial's step as PaddlePaddle 1.8 ran it, the textbook step, or the tutorial's code
 * with gradients accumulating across backward calls (Paddle >= 2.0, PyTorch): see step.c. */
typedef enum { GAN_STEP_TUTORIAL, GAN_STEP_CLEAN, GAN_STEP_ACCUMULATE } gan_step_mode;
/* Initial weights: PaddlePaddle 1.8 dygraph's defaults (tg_nn_init_paddle) or PyTorch's. */
typedef enum { GAN_INIT_PADDLE, GAN_INIT_TORCH } gan_init;
/* The names of the values above, as the command line and the checkpoint spell them. */
extern const char *const gan_recipe_names[];      /* "tutorial", "dcgan", "wgan-gp", "cgan" */
extern const char *const gan_step_names[];        /* "tutorial", "clean", "accumulate" */
extern const char *const gan_generator_names[];   /* "upsample", "convt", "upsample-relu" */
extern const char *const gan_init_names[];        /* "paddle", "torch" */
extern const char *const gan_adam_names[];        /* tg_adam_eps: "torch", "paddle" */
extern const char *const gan_critic_norm_names[]; /* "none", "layer" */
/* paddle.reader.shuffle(reader, 30000): the tutorial's buffer, two shuffled halves of MNIST. */
#define GAN_PADDLE_SHUFFLE_BLOCK 30000

/* What defines a run's models and updates. gan_config_default gives a recipe's defaults. */
typedef struct gan_config {
    gan_recipe recipe;
    gan_generator generator;
    gan_step_mode step;
    gan_init init;
    tg_adam_eps adam_eps;  /* where Adam's eps enters (optim.h) */
    int64_t shuffle_block; /* the loader's shuffle block, 0: the whole set */
    float lr, beta1, beta2;
    uint64_t seed;
    /* wgan-gp only */
    int n_critic;    /* critic steps per generator step, each on its own real batch */
    float gp_lambda; /* the gradient penalty's weight */
    gan_critic_norm critic_norm;
} gan_config;

/* A recipe's defaults: the tutorial's as Paddle 1.8 ran it (upsample G, tutorial step, Paddle
 * init, Paddle's Adam, shuffle in blocks of 30000, lr 2e-4, beta1 0.9), dcgan's and cgan's
 * (clean step, PyTorch's init and Adam, one shuffle of the whole set, beta1 0.5), or
 * wgan-gp's (the paper's: dcgan's init, Adam and shuffle, lr 1e-4, betas (0.5, 0.9), n_critic
 * 5, lambda 10, no critic norm); beta2 0.999 but for wgan-gp; seed 1. */
gan_config gan_config_default(gan_recipe recipe);

/* Layer widths; gan_widths_default gives the tutorial's, tests build the same shapes small. */
typedef struct gan_widths {
    int64_t nz;    /* noise size: 100 */
    int64_t g_fc;  /* G's first fully connected width (tutorial): 1024 */
    int64_t g_ch1; /* channels of G's 7x7 map: 128 */
    int64_t g_ch2; /* channels of G's 14x14 map: 64 */
    int64_t d_ch1; /* D's first conv channels: 64 */
    int64_t d_ch2; /* D's second conv channels: 128 */
    int64_t d_fc;  /* D's hidden fully connected width (tutorial): 1024 */
} gan_widths;

/* The tutorial's widths, every one but nz divided by div (1: the real sizes). */
gan_widths gan_widths_default(int div);

/* Builds G for the recipe and generator variant, drawing initial weights from rng. The cgan
 * recipe's (cgan_generator) takes its widths from w: nz, ngf = g_ch2 (its 7x7 map has 2 * ngf
 * channels, g_ch1 at the real sizes), ndf = d_ch1 (D's second conv has 2 * ndf, d_ch2), and a
 * label embedding of 10. */
tg_module *gan_build_generator(gan_recipe recipe, gan_generator gen, const gan_widths *w,
                               tg_rng *rng);
/* Builds D for the recipe (the WGAN-GP critic with GAN_CRITIC_NONE). */
tg_module *gan_build_discriminator(gan_recipe recipe, const gan_widths *w, tg_rng *rng);
/* Builds the WGAN-GP critic with the given normalisation. */
tg_module *gan_build_critic(gan_critic_norm norm, const gan_widths *w, tg_rng *rng);

/* Everything a training run holds: models, the Adams, the noise RNG. */
typedef struct gan_state {
    tg_module *G, *D;
    tg_optim *opt_d_real; /* the tutorial's D optimizer for the real batch; wgan-gp: the
                           * critic's only one */
    tg_optim *opt_d_fake; /* its second Adam over the same D parameters, for the fake batch;
                           * NULL in wgan-gp */
    tg_optim *opt_g;
    tg_rng z_rng; /* draws z (and wgan-gp's interpolation weights) */
    gan_recipe recipe;
    gan_step_mode step;
    int64_t nz;
    int n_critic;
    float gp_lambda;
    /* A conditional G's labels when gan_generate's caller gives none: GAN_LABELS_BALANCED
     * (image i of a call draws i % 10) or one class 0..9 (gan_state_init: balanced) */
    int gen_label;
    /* Data-parallel training (mnist_gan train under mpirun; NULL and 0 of 1 otherwise): called
     * after every backward, before its optimizer's step, with the model whose gradients that
     * step reads, to average them over the ranks; a failure stops the step. And this
     * process's share of every batch: rank `rank` of `ranks`, each drawing the whole global
     * batch's noise (z, wgan-gp's interpolation weights) from z_rng and keeping its rows
     * [rank * b, (rank + 1) * b), so that N ranks use the numbers one process with the global
     * batch would, and every rank's z_rng stays in step with the others'. */
    tg_status (*sync_grads)(void *ctx, tg_module *m);
    void *sync_ctx;
    int rank, ranks;
    /* Tests only (false otherwise; the program never sets it): the tutorial step's fake-D
     * backward also runs through G, whose gradient the G step then discards, as the loop did
     * before that dead work was skipped (step.c). */
    bool fake_d_reaches_g;
    /* Tests only, likewise: the tutorial step runs G's forward twice, once for the fake-D update
     * and once for the G update, as the loop did before it kept one (step.c). */
    bool g_forward_twice;
} gan_state;

/* Models and optimizers for the config (Adam lr, beta1, beta2, eps 1e-8, the config's eps
 * style; weights from c->seed, in c->init's distributions). */
tg_status gan_state_init(gan_state *s, const gan_config *c, const gan_widths *w);
/* Frees models and optimizers. */
void gan_state_free(gan_state *s);

/* The losses of one iteration: d_real, d_fake and g for the tutorial and dcgan recipes;
 * critic, wasserstein, penalty (each the mean over the iteration's n_critic critic steps) and g
 * for wgan-gp. */
typedef struct gan_losses {
    float d_real, d_fake, g;
    float critic;      /* D(fake).mean() - D(real).mean() + penalty */
    float wasserstein; /* D(real).mean() - D(fake).mean(): the critic's distance estimate */
    float penalty;     /* lambda * ((||grad_xhat D(xhat)||_2 - 1)^2).mean() */
} gan_losses;

/* One training iteration on a real batch [B,1,28,28] in [-1, 1] (see step.c for the two modes).
 * z_given, if not NULL, holds the z batches to use instead of drawing them (tests): [B,nz]
 * for the fake-D step and, in clean mode, a second one for the G step. */
tg_status gan_step(gan_state *s, tg_tensor *real, tg_tensor *const z_given[2], gan_losses *out);
/* The same for every recipe but wgan-gp, with the batch's labels [B] (digits as floats, as the
 * loader gives them): a conditional recipe's D sees each real image with its label, and its
 * fake images are drawn for the real batch's labels (the same y for the fake-D and the G
 * step), as examples/cgan does. labels must be NULL for an unconditional recipe, and given
 * for a conditional one (TG_ERR_ARG). gan_step is this with labels NULL. */
tg_status gan_step_labels(gan_state *s, tg_tensor *real, tg_tensor *labels,
                          tg_tensor *const z_given[2], gan_losses *out);

/* One wgan-gp iteration (one generator step): s->n_critic critic steps, step k on real[k]
 * ([B,1,28,28] in [-1, 1], each its own batch), then one generator step at the same batch
 * size. Noise and interpolation weights come from s->z_rng. */
tg_status gan_step_wgan_gp(gan_state *s, tg_tensor *const *real, gan_losses *out);

/* G's images for the noise z [n, nz], in eval mode (running BatchNorm statistics): a new
 * reference [n,1,28,28]. A conditional G draws row i for label gan_label_of(s->gen_label, i):
 * callers that generate in chunks (metrics.c's gan_generate_n, 500 at a time) keep image i's
 * label i % 10 as long as every chunk starts at a multiple of 10 (tests/test_mnist_cgan.c
 * checks gan_generate_n's images against their labels). */
tg_tensor *gan_generate(gan_state *s, tg_tensor *z);
/* The same with the labels given: labels [n] (digits as floats) for a conditional G, NULL for
 * an unconditional one (TG_ERR_ARG otherwise). */
tg_tensor *gan_generate_labels(gan_state *s, tg_tensor *z, tg_tensor *labels);
/* The label of row i drawn by gan_generate with s->gen_label = gen_label: gen_label itself
 * (0..9), or i % 10 (GAN_LABELS_BALANCED). sample's labels file and eval's label accuracy
 * read it. */
int gan_label_of(int gen_label, int64_t i);

/* Puts G, D and the optimizers' state into sd under "G.", "D.", "opt_d_real.", "opt_d_fake.",
 * "opt_g." (wgan-gp: "opt_d." for the critic's, and no opt_d_fake), and the gradients still
 * held by G's and D's parameters under "grad.G." and "grad.D." (the tutorial step carries D's
 * gradient from one iteration into the next). */
tg_status gan_state_dict(const gan_state *s, tg_state_dict *sd);
/* Loads what gan_state_dict saved. Each part is validated before it changes, but a later part
 * can fail after an earlier one loaded: load into a fresh state and discard it on error. */
tg_status gan_load_state_dict(gan_state *s, const tg_state_dict *sd);

#endif
