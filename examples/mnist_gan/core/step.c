/* One training iteration: the tutorial's loop as PaddlePaddle 1.8 ran it, the textbook step,
 * or the tutorial's code under accumulating gradients.
 *
 * The tutorial's loop, as written (PaddlePaddle 1.8 dygraph):
 *     loss_real = bce(D(real), 1);  backward;  opt_d_real.minimize;  D.clear_gradients()
 *     z ~ N(0, 1)
 *     loss_fake = bce(D(G(z)), 0);  backward;  opt_d_fake.minimize;  D.clear_gradients()
 *     loss_g    = bce(D(G(z)), 1);  backward;  opt_g.minimize;       G.clear_gradients()
 *
 * --step tutorial runs it with 1.8's semantics: a backward OVERWRITES the gradients it reaches
 * (Paddle's basic_engine.cc; accumulation across backward calls came with Paddle 2.0), which
 * here is the same as zeroing every gradient before each backward. So each update sees exactly
 * its own loss's gradient: opt_d_fake gets d loss_fake / dD, opt_g gets d loss_g / dG (the
 * loss_fake gradient that reached G is overwritten), and the tutorial's code detaches nothing;
 * the fake-D step and the G step share one z. As that gradient in G is overwritten unread, this
 * step detaches G(z) for D all the same (as the clean step does), so that loss_fake's backward
 * skips G's whole backward, dead work, and no value changes: D's gradient does not depend on
 * whether G(z) needs one, G's forward (which moves its BatchNorm running statistics) still counts
 * once for each loss on the same z, and nothing reads G's gradient between the two backwards
 * (a checkpoint is written after the G step, which clears it). tests/test_gan_step.c checks
 * it bit for bit against the undetached loop (gan_state.fake_d_reaches_g). The two forwards of
 * G on that z compute the same values, so G's forward runs once, its graph kept for the G step,
 * its BatchNorms applying their running update twice (gan_state.g_forward_twice, the loop as
 * it was, for the same test).
 *
 * --step accumulate is the same code where gradients accumulate until cleared (Paddle >= 2.0,
 * or the loop ported line by line to PyTorch): G's update then also carries loss_fake's
 * gradient, and the next real-D update carries what loss_g left in D. A pitfall of porting the
 * tutorial, kept to show it; the gradients it leaves between iterations go into checkpoints.
 *
 * --step clean is the textbook step: gradients cleared before every backward, G(z) detached
 * for D, a fresh z for G.
 *
 * Each statement group runs on its own tape, so the graph of one is freed before the next.
 *
 * The wgan-gp recipe has its own step (gan_step_wgan_gp, below): WGAN-GP's Algorithm 1, one
 * iteration being one generator step after n_critic critic steps. The cgan recipe runs the
 * steps above (gan_step_labels) with the real batch's labels y: D(real, y), and the fake images
 * G(z, y) seen by D with the same y. */
#include "gan.h"

#include <stdlib.h>
#include <string.h>

/* Adam's beta2 and eps: PyTorch's and PaddlePaddle's defaults, which the tutorial keeps. */
#define ADAM_BETA2 0.999f
#define ADAM_EPS 1e-8f
/* WGAN-GP's settings (the paper's Algorithm 1 and its MNIST run): Adam lr 1e-4, betas
 * (0.5, 0.9), 5 critic steps per generator step, penalty weight 10. */
#define WGAN_LR 1e-4f
#define WGAN_BETA1 0.5f
#define WGAN_BETA2 0.9f
#define WGAN_N_CRITIC 5
#define WGAN_LAMBDA 10.0f

const char *const gan_recipe_names[] = {"tutorial", "dcgan", "wgan-gp", "cgan", NULL};
const char *const gan_step_names[] = {"tutorial", "clean", "accumulate", NULL};
const char *const gan_generator_names[] = {"upsample", "convt", "upsample-relu", NULL};
const char *const gan_init_names[] = {"paddle", "torch", NULL};
const char *const gan_adam_names[] = {"torch", "paddle", NULL};
const char *const gan_critic_norm_names[] = {"none", "layer", NULL};

gan_config gan_config_default(gan_recipe recipe)
{
    const bool wgan = recipe == GAN_RECIPE_WGAN_GP;
    if (recipe != GAN_RECIPE_TUTORIAL)
        return (gan_config){.recipe = recipe,
                            .generator = GAN_GEN_UPSAMPLE, /* unused */
                            .step = GAN_STEP_CLEAN,        /* wgan-gp: its own, unused */
                            .init = GAN_INIT_TORCH,
                            .adam_eps = TG_ADAM_EPS_AFTER_CORRECTION,
                            .shuffle_block = 0,
                            .lr = wgan ? WGAN_LR : 2e-4f,
                            .beta1 = wgan ? WGAN_BETA1 : 0.5f,
                            .beta2 = wgan ? WGAN_BETA2 : ADAM_BETA2,
                            .seed = 1,
                            .n_critic = WGAN_N_CRITIC,
                            .gp_lambda = WGAN_LAMBDA,
                            .critic_norm = GAN_CRITIC_NONE};
    return (gan_config){.recipe = recipe,
                        .generator = GAN_GEN_UPSAMPLE,
                        .step = GAN_STEP_TUTORIAL,
                        .init = GAN_INIT_PADDLE,
                        .adam_eps = TG_ADAM_EPS_BEFORE_CORRECTION,
                        .shuffle_block = GAN_PADDLE_SHUFFLE_BLOCK,
                        .lr = 2e-4f,
                        .beta1 = 0.9f,
                        .beta2 = ADAM_BETA2,
                        .seed = 1,
                        .n_critic = WGAN_N_CRITIC,
                        .gp_lambda = WGAN_LAMBDA,
                        .critic_norm = GAN_CRITIC_NONE};
}

static tg_optim *adam_over(tg_module *m, const gan_config *c)
{
    int64_t n;
    tg_tensor **p = tg_module_parameters(m, &n);
    if (!p)
        return NULL;
    tg_optim *opt = tg_optim_adam(p, n, c->lr, c->beta1, c->beta2, ADAM_EPS, 0.0f);
    free(p); /* the optimizer retained the tensors */
    if (opt && tg_optim_set_adam_eps(opt, c->adam_eps) != TG_OK) {
        tg_optim_free(opt);
        return NULL;
    }
    return opt;
}

tg_status gan_state_init(gan_state *s, const gan_config *c, const gan_widths *w)
{
    *s = (gan_state){.recipe = c->recipe,
                     .ranks = 1,
                     .step = c->step,
                     .gen_label = GAN_LABELS_BALANCED,
                     .nz = w->nz,
                     .n_critic = c->n_critic,
                     .gp_lambda = c->gp_lambda};
    if (c->recipe == GAN_RECIPE_WGAN_GP && (c->n_critic < 1 || !(c->gp_lambda >= 0)))
        return tg_set_error(TG_ERR_ARG,
                            "gan_state_init: wgan-gp needs n_critic >= 1 and gp_lambda >= 0, not "
                            "%d and %g",
                            c->n_critic, (double)c->gp_lambda);
    /* One stream initialises the weights, another draws z: changing one model's size does not
     * shift the other's noise. */
    tg_rng init;
    tg_rng_seed(&init, c->seed);
    tg_rng_seed(&s->z_rng, c->seed ^ 0x5eed2a11ull);
    s->G = gan_build_generator(c->recipe, c->generator, w, &init);
    s->D = !s->G                             ? NULL
           : c->recipe == GAN_RECIPE_WGAN_GP ? gan_build_critic(c->critic_norm, w, &init)
                                             : gan_build_discriminator(c->recipe, w, &init);
    /* Paddle's initialisers redraw the weights the constructors drew in PyTorch's way: G's
     * first, then D's, from the same stream. */
    if (s->D && c->init == GAN_INIT_PADDLE &&
        (tg_nn_init_paddle(s->G, &init) != TG_OK || tg_nn_init_paddle(s->D, &init) != TG_OK)) {
        tg_status st = tg_last_status();
        gan_state_free(s);
        return st;
    }
    if (s->D) { /* wgan-gp's critic has one Adam: opt_d_real */
        const bool two_d = c->recipe != GAN_RECIPE_WGAN_GP;
        s->opt_d_real = adam_over(s->D, c);
        s->opt_d_fake = s->opt_d_real && two_d ? adam_over(s->D, c) : NULL;
        s->opt_g = s->opt_d_real && (s->opt_d_fake || !two_d) ? adam_over(s->G, c) : NULL;
    }
    if (!s->opt_g) {
        tg_status st = tg_last_status();
        gan_state_free(s);
        return st;
    }
    return TG_OK;
}

void gan_state_free(gan_state *s)
{
    tg_optim_free(s->opt_d_real);
    tg_optim_free(s->opt_d_fake);
    tg_optim_free(s->opt_g);
    tg_module_free(s->G);
    tg_module_free(s->D);
    *s = (gan_state){0};
}

/* This rank's rows of a [b * ranks, cols] draw from the state's RNG (normal, or uniform in
 * [0, 1)), as a new [b, cols] reference outside any tape: the whole global batch's numbers are
 * drawn, as one process draws them, and rows [rank * b, (rank + 1) * b) kept. */
static tg_tensor *draw_rows(gan_state *s, int64_t b, int64_t cols, bool normal)
{
    const int64_t ranks = s->ranks > 1 ? s->ranks : 1;
    tg_tensor *all = tg_tensor_new(TG_DIMS(b * ranks, cols));
    tg_status st = !all     ? tg_last_status()
                   : normal ? tg_tensor_normal_(all, &s->z_rng, 0.0f, 1.0f)
                            : tg_tensor_uniform_(all, &s->z_rng, 0.0f, 1.0f);
    if (st != TG_OK || ranks == 1) {
        if (st != TG_OK)
            tg_tensor_release(all), all = NULL;
        return all;
    }
    tg_tensor *mine = tg_tensor_from_data(TG_DIMS(b, cols), all->data + s->rank * b * cols);
    tg_tensor_release(all);
    return mine;
}

/* z [b, nz] from the state's RNG (this rank's rows), or the caller's (tests), as a new
 * reference. */
static tg_tensor *draw_z(gan_state *s, int64_t b, tg_tensor *given)
{
    return given ? tg_tensor_retain(given) : draw_rows(s, b, s->nz, true);
}

/* m(x), or m(x, labels) for a conditional model (labels not NULL), on the open tape. */
static tg_tensor *forward_xy(tg_module *m, tg_tensor *x, tg_tensor *labels)
{
    return labels ? tg_module_forward2(m, x, labels) : tg_module_forward(m, x);
}

/* bce_with_logits(D(x[, labels]), label), averaged, recorded on the open tape (NULL x passes
 * its error on). The target is released here: the loss's node keeps what backward needs. */
static tg_tensor *d_loss(gan_state *s, tg_tensor *x, tg_tensor *labels, float label)
{
    tg_tensor *logits = x ? forward_xy(s->D, x, labels) : NULL;
    tg_tensor *target = logits ? tg_tensor_full(logits->ndim, logits->shape, label) : NULL;
    tg_tensor *loss = tg_bce_with_logits(logits, target, TG_REDUCE_MEAN);
    tg_tensor_release(target);
    return loss;
}

/* G(z[, labels]) detached, for an update of D alone, as a new reference: G runs on a TG_NO_GRAD
 * tape of its own, so it records no graph and its activations are freed as soon as the images
 * exist, instead of staying alive through D's forward and backward (they were the fake-D
 * update's peak). The same values as tg_detach of G's output on the step's tape: no forward
 * depends on recording, and G's BatchNorm running statistics move alike. */
static tg_tensor *generate_detached(gan_state *s, tg_tensor *z, tg_tensor *labels)
{
    tg_tape *own = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *fake = own ? tg_tensor_retain(forward_xy(s->G, z, labels)) : NULL;
    if (own)
        tg_tape_end(own); /* fake survives it, a constant */
    return fake;
}

/* After a backward that gave st: under MPI m's gradients averaged over the ranks (every rank
 * reaches that collective with its own failure in hand, m NULL, so none is left waiting), then
 * one step of opt. */
static tg_status sync_and_step(gan_state *s, tg_status st, tg_module *m, tg_optim *opt)
{
    if (s->sync_grads)
        st = s->sync_grads(s->sync_ctx, st == TG_OK ? m : NULL);
    return st == TG_OK ? tg_optim_step(opt) : st;
}

/* The end of one update: backward of loss, its value into *out, (under MPI: m's gradients
 * averaged over the ranks,) one step of opt over m, and the tape (with the graph) freed. A
 * NULL tape or loss carries the error that produced it. */
static tg_status backward_and_step(gan_state *s, tg_tape *tape, tg_tensor *loss, tg_module *m,
                                   tg_optim *opt, float *out)
{
    if (!tape)
        return sync_and_step(s, tg_last_status(), m, opt);
    tg_status st = tg_backward(loss);
    if (st == TG_OK)
        *out = tg_tensor_item(loss);
    st = sync_and_step(s, st, m, opt);
    tg_tape_end(tape);
    return st;
}

/* The parameters of m that require grad, switched off for one backward whose gradient in m
 * would be discarded unread (the G step's in D): its backward then skips m's weight gradients,
 * work and memory (the buffers would be alive at the step's peak), and every other gradient is
 * the same, bit for bit, as no kernel's input gradient depends on whether its weights get one.
 * Returns the switched parameters (n in *n) for params_thaw, or NULL having switched none, when
 * m has none or memory is short: the step then runs as before. */
static tg_tensor **params_freeze(tg_module *m, int64_t *n)
{
    int64_t all;
    tg_tensor **p = tg_module_parameters(m, &all);
    if (!p && all == 0 && tg_last_status() == TG_ERR_NOMEM)
        tg_clear_error(); /* out of memory for the list: only the saving is lost */
    *n = 0;
    for (int64_t i = 0; p && i < all; i++)
        if (p[i]->requires_grad)
            p[(*n)++] = p[i];
    for (int64_t i = 0; i < *n; i++)
        p[i]->requires_grad = false; /* leaves: what tg_tensor_set_requires_grad would do */
    if (p && *n == 0)
        free(p), p = NULL;
    return p;
}

/* Undoes params_freeze. */
static void params_thaw(tg_tensor **p, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        p[i]->requires_grad = true;
    free(p);
}

tg_status gan_step(gan_state *s, tg_tensor *real, tg_tensor *const z_given[2], gan_losses *out)
{
    return gan_step_labels(s, real, NULL, z_given, out);
}

tg_status gan_step_labels(gan_state *s, tg_tensor *real, tg_tensor *labels,
                          tg_tensor *const z_given[2], gan_losses *out)
{
    if (GAN_CONDITIONAL(s->recipe) != (labels != NULL))
        return tg_set_error(TG_ERR_ARG, "gan_step: %s",
                            labels ? "labels given to an unconditional recipe's step"
                                   : "the cgan recipe's step needs the real batch's labels");
    const int64_t b = real->shape[0];
    const bool clean = s->step == GAN_STEP_CLEAN;
    /* Every backward starts from zero gradients, except in the accumulate step. In the tutorial
     * step this is Paddle 1.8's overwrite: the zeroing the tutorial's clear_gradients calls do
     * not do themselves (G's gradient from loss_fake before loss_g's backward; D's from loss_g
     * before the next real batch's) is done here. */
    const bool fresh = s->step != GAN_STEP_ACCUMULATE;
    tg_tape *tape;
    tg_status st;

    /* 1. loss_real = bce(D(real), 1); backward; opt_d_real.step(); D.clear_gradients() */
    if (fresh)
        tg_module_zero_grad(s->D);
    tape = tg_tape_begin(TG_GRAD);
    st = backward_and_step(s, tape, tape ? d_loss(s, real, labels, 1.0f) : NULL, s->D,
                           s->opt_d_real, &out->d_real);
    tg_module_zero_grad(s->D);
    if (st != TG_OK)
        return st;

    /* 2. z ~ N(0, 1); loss_fake = bce(D(G(z)), 0), G(z) detached in the clean and tutorial
     *    steps (in the tutorial step, the gradient it stops is overwritten unread; see above);
     *    backward; opt_d_fake.step(); D.clear_gradients() */
    tg_tensor *z = draw_z(s, b, z_given ? z_given[0] : NULL);
    if (!z)
        return tg_last_status();
    if (fresh)
        tg_module_zero_grad(s->G);
    /* G(z) once in the tutorial step: the loop runs G's forward for the fake-D update and again
     * for the G update, on the same z and the same G, and the first one's graph goes unused
     * (above). So G's forward is recorded once, on the G update's tape (opened here, around the
     * fake-D update's), with BatchNorm's running statistics updated twice as the two forwards
     * did; the fake-D update reads its values detached. The same bits (test_gan_step), with one
     * forward of G less (13% of the iteration). */
    const bool one_g = s->step == GAN_STEP_TUTORIAL && !s->fake_d_reaches_g && !s->g_forward_twice;
    tg_tape *g_tape = NULL;
    tg_tensor *g_fake = NULL;
    const int updates = tg_batch_norm_running_updates(); /* the caller's, restored after */
    if (one_g && (g_tape = tg_tape_begin(TG_GRAD)) &&
        tg_batch_norm_set_running_updates(2 * updates) == TG_OK) {
        g_fake = forward_xy(s->G, z, labels);
        tg_batch_norm_set_running_updates(updates);
    }
    if (one_g && !g_fake)
        st = tg_last_status();
    else if ((tape = tg_tape_begin(TG_GRAD))) {
        const bool detach = clean || (s->step == GAN_STEP_TUTORIAL && !s->fake_d_reaches_g);
        /* conditional: the real batch's y */
        tg_tensor *fake = one_g    ? tg_detach(g_fake)
                          : detach ? generate_detached(s, z, labels)
                                   : forward_xy(s->G, z, labels);
        st = backward_and_step(s, tape, d_loss(s, fake, labels, 0.0f), s->D, s->opt_d_fake,
                               &out->d_fake);
        if (detach && !one_g)
            tg_tensor_release(fake);
    } else {
        st = tg_last_status();
    }
    tg_module_zero_grad(s->D);

    /* 3. loss_g = bce(D(G(z)), 1) with the same z (a fresh one in the clean step); backward;
     *    opt_g.step(); G.clear_gradients() */
    if (st == TG_OK && clean) {
        tg_tensor_release(z);
        z = draw_z(s, b, z_given ? z_given[1] : NULL);
        st = z ? TG_OK : tg_last_status();
    }
    if (fresh)
        tg_module_zero_grad(s->G);
    if (st == TG_OK) {
        /* loss_g's gradient in D is discarded below unless it accumulates */
        int64_t n_frozen = 0;
        tg_tensor **frozen = fresh ? params_freeze(s->D, &n_frozen) : NULL;
        tape = g_fake ? g_tape : tg_tape_begin(TG_GRAD);
        tg_tensor *fake = g_fake ? g_fake : tape ? forward_xy(s->G, z, labels) : NULL;
        g_tape = NULL; /* backward_and_step ends it */
        st = backward_and_step(s, tape, tape ? d_loss(s, fake, labels, 1.0f) : NULL, s->G, s->opt_g,
                               &out->g);
        params_thaw(frozen, n_frozen);
    }
    if (g_tape) /* the fake-D update failed: G's forward goes unused */
        tg_tape_end(g_tape);
    tg_module_zero_grad(s->G);
    if (fresh)
        tg_module_zero_grad(s->D); /* loss_g's gradient in D: overwritten before any use */
    tg_tensor_release(z);
    return st;
}

/* ---- wgan-gp ---------------------------------------------------------------------------
 * WGAN-GP's Algorithm 1 (Gulrajani et al. 2017), as its PyTorch ports write it:
 *     for n_critic steps, each on a new real batch:
 *         z ~ N(0, 1); fake = G(z).detach(); eps ~ U[0, 1) per sample
 *         xhat = eps * real + (1 - eps) * fake, a leaf that requires grad
 *         g = autograd.grad(D(xhat), xhat, ones, create_graph=True)
 *         penalty = lambda * ((||g||_2 - 1)^2).mean()   (the norm over each sample's pixels)
 *         loss_d = D(fake).mean() - D(real).mean() + penalty; backward; opt_d.step()
 *     z ~ N(0, 1); loss_g = -D(G(z)).mean(); backward; opt_g.step()
 * Every backward starts from zero gradients. The penalty's backward is a second derivative:
 * it reaches D's weights through g's history (tg_grad with create_graph). z and eps come from
 * the state's z_rng, which the checkpoint saves, so a resumed run draws the same numbers. */

/* lambda * ((||d D(xhat) / d xhat||_2 - 1)^2).mean() on the open tape; NULL on failure. */
static tg_tensor *gradient_penalty(gan_state *s, tg_tensor *real, tg_tensor *fake,
                                   tg_tensor *eps_rows)
{
    const int64_t b = real->shape[0];
    tg_tensor *eps = tg_reshape(eps_rows, TG_DIMS(b, 1, 1, 1));
    tg_tensor *xhat = tg_add(tg_mul(eps, real), tg_mul(tg_rsub_scalar(eps, 1.0f), fake));
    /* xhat has no history (real and fake need no grad): made a leaf of this step, as PyTorch's
     * xhat.requires_grad_(True), so tg_grad can differentiate with respect to it */
    if (!xhat || tg_tensor_set_requires_grad(xhat, true) != TG_OK)
        return NULL;
    tg_tensor *d_xhat = tg_module_forward(s->D, xhat), *g = NULL;
    tg_tensor *ones = d_xhat ? tg_ones(d_xhat->ndim, d_xhat->shape) : NULL;
    if (!ones || tg_grad(&d_xhat, 1, &xhat, 1, &ones, true, &g) != TG_OK)
        return NULL;
    /* ||g||_2 per sample over [C, H, W]; no epsilon in the sqrt, as the paper's code */
    tg_tensor *norm = tg_sqrt(tg_sum_axis(tg_square(tg_flatten(g, 1, 3)), 1, false));
    return tg_mul_scalar(tg_mean(tg_square(tg_sub_scalar(norm, 1.0f))), s->gp_lambda);
}

/* One critic step on real: its three values added into sums[3] (loss, wasserstein, penalty). */
static tg_status critic_step(gan_state *s, tg_tensor *real, double sums[3])
{
    const int64_t b = real->shape[0];
    tg_module_zero_grad(s->D);
    /* z, then the penalty's interpolation weights: the order they always came from z_rng */
    tg_tensor *z = draw_rows(s, b, s->nz, true);
    tg_tensor *eps = z && s->gp_lambda > 0 ? draw_rows(s, b, 1, false) : NULL;
    tg_tape *tape = z && (eps || s->gp_lambda <= 0) ? tg_tape_begin(TG_GRAD) : NULL;
    if (!tape) {
        tg_tensor_release(z);
        tg_tensor_release(eps);
        return tg_last_status();
    }
    tg_tensor *fake = generate_detached(s, z, NULL);
    tg_tensor *d_real = tg_mean(tg_module_forward(s->D, real));
    tg_tensor *d_fake = tg_mean(tg_module_forward(s->D, fake));
    tg_tensor *w = tg_sub(d_real, d_fake);
    tg_tensor *penalty =
        w && s->gp_lambda > 0 ? gradient_penalty(s, real, fake, eps) : tg_scalar(0.0f);
    tg_tensor *loss = penalty ? tg_sub(penalty, w) : NULL;
    tg_status st = loss ? tg_backward(loss) : tg_last_status();
    if (st == TG_OK) {
        sums[0] += tg_tensor_item(loss);
        sums[1] += tg_tensor_item(w);
        sums[2] += tg_tensor_item(penalty);
    }
    st = sync_and_step(s, st, s->D, s->opt_d_real);
    tg_tape_end(tape);
    tg_module_zero_grad(s->D);
    tg_tensor_release(fake);
    tg_tensor_release(z);
    tg_tensor_release(eps);
    return st;
}

tg_status gan_step_wgan_gp(gan_state *s, tg_tensor *const *real, gan_losses *out)
{
    double sums[3] = {0, 0, 0};
    tg_status st = TG_OK;
    for (int k = 0; k < s->n_critic && st == TG_OK; k++)
        st = critic_step(s, real[k], sums);
    if (st != TG_OK)
        return st;
    *out = (gan_losses){.critic = (float)(sums[0] / s->n_critic),
                        .wasserstein = (float)(sums[1] / s->n_critic),
                        .penalty = (float)(sums[2] / s->n_critic)};
    /* loss_g = -D(G(z)).mean() */
    tg_module_zero_grad(s->G);
    tg_tensor *z = draw_rows(s, real[0]->shape[0], s->nz, true);
    int64_t n_frozen = 0;
    tg_tensor **frozen = z ? params_freeze(s->D, &n_frozen) : NULL;
    tg_tape *tape = z ? tg_tape_begin(TG_GRAD) : NULL;
    st = backward_and_step(
        s, tape, tape ? tg_neg(tg_mean(tg_module_forward(s->D, tg_module_forward(s->G, z)))) : NULL,
        s->G, s->opt_g, &out->g);
    params_thaw(frozen, n_frozen);
    tg_tensor_release(z);
    tg_module_zero_grad(s->G);
    tg_module_zero_grad(s->D); /* loss_g's gradient in D: never used */
    return st;
}

int gan_label_of(int gen_label, int64_t i)
{
    return gen_label == GAN_LABELS_BALANCED ? (int)(i % 10) : gen_label;
}

tg_tensor *gan_generate(gan_state *s, tg_tensor *z)
{
    if (!z) /* its maker's error stands */
        return NULL;
    if (!GAN_CONDITIONAL(s->recipe))
        return gan_generate_labels(s, z, NULL);
    tg_tensor *labels = tg_tensor_new(TG_DIMS(z->shape[0]));
    for (int64_t i = 0; labels && i < labels->numel; i++)
        labels->data[i] = (float)gan_label_of(s->gen_label, i);
    tg_tensor *img = labels ? gan_generate_labels(s, z, labels) : NULL;
    tg_tensor_release(labels);
    return img;
}

tg_tensor *gan_generate_labels(gan_state *s, tg_tensor *z, tg_tensor *labels)
{
    if (GAN_CONDITIONAL(s->recipe) != (labels != NULL)) {
        tg_set_error(TG_ERR_ARG, "gan_generate_labels: %s G %s labels",
                     labels ? "an unconditional" : "a conditional", labels ? "takes no" : "needs");
        return NULL;
    }
    bool was_training = tg_module_is_training(s->G);
    tg_module_train(s->G, false);
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *img = tape ? tg_tensor_retain(forward_xy(s->G, z, labels)) : NULL;
    if (tape)
        tg_tape_end(tape);
    tg_module_train(s->G, was_training);
    return img;
}

static const char *const part_names[] = {"G", "D", "opt_d_real", "opt_d_fake", "opt_g"};
/* The name of the critic's one Adam in a wgan-gp checkpoint (opt_d_real in the state). */
#define WGAN_OPT_D "opt_d"

/* The checkpoint prefix of s's real-batch D optimizer. */
static const char *opt_d_name(const gan_state *s)
{
    return s->recipe == GAN_RECIPE_WGAN_GP ? WGAN_OPT_D : part_names[2];
}
/* Gradients left in a model between steps, saved under "grad.G." and "grad.D.". The accumulate
 * step leaves loss_g's gradient in D, and the next real-D update adds to it: without it a
 * resumed run's first step differs from the uninterrupted run's. (The other steps leave none.) */
static const char *const grad_prefixes[] = {"grad.G", "grad.D"};

static tg_status pending_grads_put(tg_module *m, const char *prefix, tg_state_dict *sd)
{
    int64_t n, n_names;
    tg_tensor **p = tg_module_parameters(m, &n);
    char **names = tg_module_parameter_names(m, prefix, &n_names);
    tg_status st = (p || n == 0) && (names || n_names == 0) ? TG_OK : tg_last_status();
    for (int64_t i = 0; i < n && st == TG_OK; i++)
        if (p[i]->grad)
            st = tg_state_dict_put(sd, names[i], p[i]->grad);
    free(p);
    free(names);
    return st;
}

/* Restores what pending_grads_put saved: each parameter's gradient becomes a copy of its saved
 * one, or none when none was saved. Shapes are checked before anything changes. */
static tg_status pending_grads_load(tg_module *m, const char *prefix, const tg_state_dict *sd)
{
    int64_t n, n_names;
    tg_tensor **p = tg_module_parameters(m, &n);
    char **names = tg_module_parameter_names(m, prefix, &n_names);
    tg_status st = (p || n == 0) && (names || n_names == 0) ? TG_OK : tg_last_status();
    for (int64_t i = 0; i < n && st == TG_OK; i++) {
        const tg_tensor *g = tg_state_dict_get(sd, names[i]);
        if (g && (g->ndim != p[i]->ndim ||
                  memcmp(g->shape, p[i]->shape, sizeof(int64_t) * (size_t)g->ndim) != 0)) {
            char a[96], b[96];
            st = tg_set_error(TG_ERR_SHAPE, "gan_load_state_dict: %s is %s, its parameter %s",
                              names[i], tg_shape_str(g->ndim, g->shape, a, sizeof a),
                              tg_shape_str(p[i]->ndim, p[i]->shape, b, sizeof b));
        }
    }
    for (int64_t i = 0; i < n && st == TG_OK; i++) {
        const tg_tensor *g = tg_state_dict_get(sd, names[i]);
        if (g)
            st = tg_tensor_set_grad(p[i], g); /* shape checked above */
        else
            tg_tensor_zero_grad(p[i]);
    }
    free(p);
    free(names);
    return st;
}

tg_status gan_state_dict(const gan_state *s, tg_state_dict *sd)
{
    tg_status st = tg_module_state_dict(s->G, part_names[0], sd);
    if (st == TG_OK)
        st = tg_module_state_dict(s->D, part_names[1], sd);
    if (st == TG_OK)
        st = tg_optim_state_dict(s->opt_d_real, opt_d_name(s), sd);
    if (st == TG_OK && s->opt_d_fake)
        st = tg_optim_state_dict(s->opt_d_fake, part_names[3], sd);
    if (st == TG_OK)
        st = tg_optim_state_dict(s->opt_g, part_names[4], sd);
    if (st == TG_OK)
        st = pending_grads_put(s->G, grad_prefixes[0], sd);
    if (st == TG_OK)
        st = pending_grads_put(s->D, grad_prefixes[1], sd);
    return st;
}

tg_status gan_load_state_dict(gan_state *s, const tg_state_dict *sd)
{
    tg_status st = tg_module_load_state_dict(s->G, part_names[0], sd);
    if (st == TG_OK)
        st = tg_module_load_state_dict(s->D, part_names[1], sd);
    if (st == TG_OK)
        st = tg_optim_load_state_dict(s->opt_d_real, opt_d_name(s), sd);
    if (st == TG_OK && s->opt_d_fake)
        st = tg_optim_load_state_dict(s->opt_d_fake, part_names[3], sd);
    if (st == TG_OK)
        st = tg_optim_load_state_dict(s->opt_g, part_names[4], sd);
    if (st == TG_OK)
        st = pending_grads_load(s->G, grad_prefixes[0], sd);
    if (st == TG_OK)
        st = pending_grads_load(s->D, grad_prefixes[1], sd);
    return st;
}
