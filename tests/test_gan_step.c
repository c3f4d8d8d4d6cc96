/* mnist_gan's three step modes (examples/mnist_gan/core/step.c), pinned by what each of the
 * three optimizers' updates sees, so that the modes cannot drift into each other unnoticed.
 *
 * Method. A small gan_state (tutorial recipe, small widths, upsample and convt G) gets its
 * three Adams replaced by plain SGD (no momentum, no weight decay) over the same parameters,
 * each with its own learning rate (LR_D_REAL, LR_D_FAKE, LR_G: distinct, so an update made by
 * the wrong optimizer shows too; powers of two, so lr * g is exact and the test's SGD by hand
 * rounds as the optimizer does, FMA or not). One SGD step changes a parameter by exactly
 * -lr * the gradient the optimizer saw, so after gan_step the parameters tell which gradients
 * each update carried. Independently, on reference models (built the same way, loaded from
 * the state's state dict at the start of each iteration) the test computes each mode's
 * expected parameters from its definition, one loss on its own fresh tape at a time, in
 * training mode as gan_step runs (BatchNorm uses the batch statistics; the running ones the
 * extra forwards move do not enter training-mode outputs):
 *
 *   tutorial (Paddle 1.8: every backward overwrites)   with D0, G0 at the iteration's start:
 *     D1 = D0 - LR_D_REAL * dLreal/dD (D0)
 *     D2 = D1 - LR_D_FAKE * dLfake/dD (D1, G0, z0)
 *     G1 = G0 - LR_G      * dLg/dG    (D2, G0, z0)             nothing left in D or G
 *   accumulate (gradients accumulate until cleared):
 *     D1 = D0 - LR_D_REAL * (left_D + dLreal/dD (D0))        left_D: the previous iteration's
 *     D2 = D1 - LR_D_FAKE * dLfake/dD (D1, G0, z0)
 *     G1 = G0 - LR_G      * (dLfake/dG (D1, G0, z0) + dLg/dG (D2, G0, z0))
 *     left_D = dLg/dD (D2, G0, z0)                              still in D after the step
 *   clean (textbook):
 *     D1, D2 as tutorial (detaching G(z0) does not change D's gradient)
 *     G1 = G0 - LR_G      * dLg/dG    (D2, G0, z1)             nothing left in D or G
 *
 * with Lreal = bce(D(real), 1), Lfake = bce(D(G(z)), 0), Lg = bce(D(G(z)), 1), and z0, z1 the
 * two z batches passed to gan_step (distinct in every mode, so using the wrong one shows). Two
 * iterations are run, so that accumulate's left_D reaches the second real-D update. After each
 * iteration the test compares G's and D's parameters, the three losses and the gradients left
 * in the models (none in G; left_D in D, zero outside the accumulate step) with the expected
 * ones. The sums of the accumulate step are formed as the engine forms them: the reference
 * gives the model the held gradient (left_D, dLfake/dG) and lets the backward add to it.
 *
 * What the updates cannot show: clean's detach of G(z0) for D (G's gradient from Lfake is
 * cleared before the G backward either way), and in the tutorial step whether G(z) is detached
 * (likewise); only the cost differs. The tutorial step detaches it, to skip that dead backward
 * through G; test_tutorial_skip_* check, bit for bit, that nothing else changes.
 *
 * Tolerance: |got - want| <= ATOL + RTOL * |want| per element, 1e-5 (losses: 1e-5 relative).
 * The reference runs the same kernels on the same values in the same order, and here agrees to
 * the bit; the tolerance is for a future engine that rounds an equivalent computation
 * differently (a sum reordered, a kernel fused). That matters more than its size suggests:
 * BatchNorm over a batch of 4 makes G's gradient sensitive, and one float ulp in D1 (6e-8)
 * became 3e-6 in G1 when the reference summed the accumulate step's gradients separately
 * (LR_G 0.5) — hence each iteration starts from the state under test, not from the
 * reference's previous result, so that such differences are not compounded. 1e-5 is still far
 * below every term that separates the modes: test_separations_are_visible and
 * test_modes_differ check that each moves some parameter by at least SEPARATION_MIN (1e-3;
 * measured: 0.04 and up). */
#include "common.h"

#include "gan.h" /* examples/mnist_gan, through its gan_dep */

#include <stdio.h>
#include <stdlib.h>

#define BATCH 4
#define ITERS 2
#define LR_D_REAL 0.25f
#define LR_D_FAKE 0.125f
#define LR_G 0.5f
#define ATOL 1e-5
#define RTOL 1e-5
#define SEPARATION_MIN 1e-3

static const gan_widths widths = {
    .nz = 8, .g_fc = 16, .g_ch1 = 4, .g_ch2 = 4, .d_ch1 = 4, .d_ch2 = 4, .d_fc = 16};

/* ---- a model's parameters or gradients as one flat float vector ------------------------- */

static float *vec_new(int64_t n)
{
    float *v = calloc((size_t)(n > 0 ? n : 1), sizeof(float));
    assert_non_null(v);
    return v;
}

static tg_tensor **params_of(const tg_module *m, int64_t *n)
{
    tg_tensor **p = tg_module_parameters(m, n);
    if (!p)
        fail_msg("tg_module_parameters: %s", tg_last_error());
    return p;
}

static void get_params(const tg_module *m, float *out)
{
    int64_t n, k = 0;
    tg_tensor **p = params_of(m, &n);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < p[i]->numel; j++)
            out[k++] = p[i]->data[j];
    free(p);
}

/* Adds each parameter's gradient (none: nothing) into acc. */
static void add_grads(const tg_module *m, float *acc)
{
    int64_t n, k = 0;
    tg_tensor **p = params_of(m, &n);
    for (int64_t i = 0; i < n; i++) {
        if (p[i]->grad) {
            assert_int_equal(p[i]->grad->numel, p[i]->numel);
            for (int64_t j = 0; j < p[i]->numel; j++)
                acc[k + j] += p[i]->grad->data[j];
        }
        k += p[i]->numel;
    }
    free(p);
}

/* SGD by hand, as the optimizer computes it: p -= lr * g, in float. */
static void sgd_by_hand(tg_module *m, const float *g, float lr)
{
    int64_t n, k = 0;
    tg_tensor **p = params_of(m, &n);
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j < p[i]->numel; j++, k++)
            p[i]->data[j] -= lr * g[k];
        tg_tensor_bump_version(p[i]);
    }
    free(p);
}

static double max_abs(const float *v, int64_t n)
{
    double m = 0.0;
    for (int64_t i = 0; i < n; i++)
        m = fmax(m, fabs((double)v[i]));
    return m;
}

/* max |a - b| * scale */
static double max_abs_diff(const float *a, const float *b, int64_t n, double scale)
{
    double m = 0.0;
    for (int64_t i = 0; i < n; i++)
        m = fmax(m, fabs(((double)a[i] - (double)b[i]) * scale));
    return m;
}

/* Fails unless got is within ATOL + RTOL * |want| of want everywhere; returns the largest
 * difference. */
static double check_close(const char *what, int it, const float *got, const float *want, int64_t n)
{
    double worst = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        if (!(d <= ATOL + RTOL * fabs((double)want[i])))
            fail_msg("iteration %d: %s[%lld] = %.9g, expected %.9g (difference %.3g)", it, what,
                     (long long)i, (double)got[i], (double)want[i], d);
        worst = fmax(worst, d);
    }
    return worst;
}

static void check_loss(const char *what, int it, float got, float want)
{
    if (!(fabs((double)got - want) <= RTOL * fabs((double)want)))
        fail_msg("iteration %d: loss %s = %.9g, expected %.9g", it, what, (double)got,
                 (double)want);
}

/* ---- the state under test and its reference copies ------------------------------------- */

static tg_optim *sgd_over(tg_module *m, float lr)
{
    int64_t n;
    tg_tensor **p = params_of(m, &n);
    tg_optim *opt = tg_optim_sgd(p, n, lr, 0.0f, 0.0f, 0.0f, false);
    free(p); /* the optimizer retained the tensors */
    if (!opt)
        fail_msg("tg_optim_sgd: %s", tg_last_error());
    return opt;
}

/* A gan_state of the tutorial recipe in the given mode, its Adams replaced by SGDs. */
static void state_init(gan_state *s, gan_generator gen, gan_step_mode mode)
{
    gan_config c = gan_config_default(GAN_RECIPE_TUTORIAL);
    c.generator = gen;
    c.step = mode;
    if (gan_state_init(s, &c, &widths) != TG_OK)
        fail_msg("gan_state_init: %s", tg_last_error());
    assert_int_equal(s->step, mode);
    tg_optim_free(s->opt_d_real);
    tg_optim_free(s->opt_d_fake);
    tg_optim_free(s->opt_g);
    s->opt_d_real = s->opt_d_fake = s->opt_g = NULL;
    s->opt_d_real = sgd_over(s->D, LR_D_REAL);
    s->opt_d_fake = sgd_over(s->D, LR_D_FAKE);
    s->opt_g = sgd_over(s->G, LR_G);
}

/* Fresh G and D built as s's were (their weights are overwritten by sync_models). */
static void build_models(gan_generator gen, tg_module **G, tg_module **D)
{
    tg_rng rng;
    tg_rng_seed(&rng, 12345);
    *G = gan_build_generator(GAN_RECIPE_TUTORIAL, gen, &widths, &rng);
    *D = *G ? gan_build_discriminator(GAN_RECIPE_TUTORIAL, &widths, &rng) : NULL;
    if (!*D)
        fail_msg("building the reference models: %s", tg_last_error());
}

/* Loads s's current parameters and buffers into G and D. */
static void sync_models(const gan_state *s, tg_module *G, tg_module *D)
{
    tg_state_dict *sd = tg_state_dict_new();
    assert_non_null(sd);
    /* the dict shares s's tensors; loading copies their values right away */
    assert_int_equal(tg_module_state_dict(s->G, "G", sd), TG_OK);
    assert_int_equal(tg_module_state_dict(s->D, "D", sd), TG_OK);
    if (tg_module_load_state_dict(G, "G", sd) != TG_OK ||
        tg_module_load_state_dict(D, "D", sd) != TG_OK)
        fail_msg("loading the reference models: %s", tg_last_error());
    tg_state_dict_free(sd);
}

/* The real batches and the z pairs of ITERS iterations; z[it][0] and z[it][1] differ. */
typedef struct batches {
    tg_tensor *real[ITERS];
    tg_tensor *z[ITERS][2];
} batches;

static void batches_make(batches *b)
{
    tg_rng rng;
    tg_rng_seed(&rng, 2024);
    for (int it = 0; it < ITERS; it++) {
        b->real[it] = tg_tensor_new(TG_DIMS(BATCH, 1, 28, 28));
        assert_non_null(b->real[it]);
        tg_tensor_uniform_(b->real[it], &rng, -1.0f, 1.0f);
        for (int k = 0; k < 2; k++) {
            b->z[it][k] = tg_tensor_new(TG_DIMS(BATCH, widths.nz));
            assert_non_null(b->z[it][k]);
            tg_tensor_normal_(b->z[it][k], &rng, 0.0f, 1.0f);
        }
    }
}

static void batches_free(batches *b)
{
    for (int it = 0; it < ITERS; it++) {
        tg_tensor_release(b->real[it]);
        tg_tensor_release(b->z[it][0]);
        tg_tensor_release(b->z[it][1]);
    }
}

/* ---- the reference: one loss's gradients on a fresh tape ------------------------------- */

/* Gives each parameter of m the gradient held in v (a copy), as if an earlier backward had
 * left it there. */
static void hold_grads(tg_module *m, const float *v)
{
    int64_t n, k = 0;
    tg_tensor **p = params_of(m, &n);
    for (int64_t i = 0; i < n; i++) {
        tg_tensor_zero_grad(p[i]);
        p[i]->grad = tg_tensor_from_data(p[i]->ndim, p[i]->shape, v + k);
        assert_non_null(p[i]->grad);
        k += p[i]->numel;
    }
    free(p);
}

/* loss = mean bce_with_logits(D(in), label), in = x or G(z), on its own tape, in training
 * mode; returns the loss. Before the backward each model holds no gradient, or, when held_d /
 * held_g is not NULL, that one: the backward adds to it, as the engine accumulates. Afterwards
 * gd and gg (either may be NULL) get D's and G's gradients (what was held plus d loss / dD,
 * d loss / dG), and both models' gradients are freed. */
static float ref_loss(tg_module *G, tg_module *D, tg_tensor *x, tg_tensor *z, float label,
                      const float *held_d, float *gd, const float *held_g, float *gg)
{
    tg_module_zero_grad(G);
    tg_module_zero_grad(D);
    if (held_d)
        hold_grads(D, held_d);
    if (held_g)
        hold_grads(G, held_g);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    assert_non_null(tape);
    tg_tensor *in = z ? tg_module_forward(G, z) : x;
    tg_tensor *logits = tg_module_forward(D, in);
    tg_tensor *target = logits ? tg_tensor_full(logits->ndim, logits->shape, label) : NULL;
    tg_tensor *loss = tg_bce_with_logits(logits, target, TG_REDUCE_MEAN);
    if (!loss || tg_backward(loss) != TG_OK)
        fail_msg("reference loss: %s", tg_last_error());
    const float l = tg_tensor_item(loss);
    tg_tensor_release(target);
    tg_tape_end(tape);
    if (gd) {
        memset(gd, 0, sizeof(float) * (size_t)tg_module_num_parameters(D));
        add_grads(D, gd);
    }
    if (gg) {
        memset(gg, 0, sizeof(float) * (size_t)tg_module_num_parameters(G));
        add_grads(G, gg);
    }
    tg_module_zero_grad(G);
    tg_module_zero_grad(D);
    return l;
}

/* How far, at one iteration of the reference, each term that separates the modes moves a
 * parameter (its largest element times the learning rate that applies it). */
typedef struct separations {
    double fake_in_g; /* LR_G * dLfake/dG (D1, G0, z0): accumulate's G update vs the others' */
    double left_in_d; /* LR_D_REAL * dLg/dD (D2, G0, z): accumulate's next real-D update */
    double z_swap;    /* LR_G * (dLg/dG at z1 - at z0): clean's G update vs tutorial's */
    double stale_d;   /* LR_G * (dLg/dG at D2 - at D1): G's gradient taken after opt_d_fake */
} separations;

/* One iteration of `mode` by its definition (top of the file) on the reference models G, D.
 * left_d: the gradient D holds at the start (the accumulate step's Lg gradient; zeros in the
 * other steps); gets the one it holds at the end. sep, if not NULL, gets the separations. */
static void ref_step(gan_step_mode mode, tg_module *G, tg_module *D, tg_tensor *real,
                     tg_tensor *const z[2], float *left_d, gan_losses *l, separations *sep)
{
    const int64_t nd = tg_module_num_parameters(D), ng = tg_module_num_parameters(G);
    const bool acc = mode == GAN_STEP_ACCUMULATE;
    float *gd = vec_new(nd), *gg = vec_new(ng), *gg_fake = vec_new(ng);
    tg_tensor *zg = mode == GAN_STEP_CLEAN ? z[1] : z[0];

    /* opt_d_real: dLreal/dD at D0, added in the accumulate step to what Lg left in D */
    l->d_real = ref_loss(G, D, real, NULL, 1.0f, acc ? left_d : NULL, gd, NULL, NULL);
    sgd_by_hand(D, gd, LR_D_REAL);

    /* opt_d_fake: dLfake/dD at (D1, G0, z0); its dLfake/dG stays in G in the accumulate step */
    l->d_fake = ref_loss(G, D, NULL, z[0], 0.0f, NULL, gd, NULL, gg_fake);
    float *gg_d1 = NULL;
    if (sep) { /* G's gradient were it taken before opt_d_fake's update */
        gg_d1 = vec_new(ng);
        ref_loss(G, D, NULL, zg, 1.0f, NULL, NULL, NULL, gg_d1);
    }
    sgd_by_hand(D, gd, LR_D_FAKE);

    /* opt_g: dLg/dG at (D2, G0, z0), z1 in the clean step, added in the accumulate step to
     * dLfake/dG. What Lg gives D stays there in the accumulate step. */
    l->g = ref_loss(G, D, NULL, zg, 1.0f, NULL, gd, acc ? gg_fake : NULL, gg);
    if (sep) {
        float *own = vec_new(ng), *alt = vec_new(ng);
        ref_loss(G, D, NULL, zg, 1.0f, NULL, NULL, NULL, own);
        ref_loss(G, D, NULL, zg == z[0] ? z[1] : z[0], 1.0f, NULL, NULL, NULL, alt);
        sep->fake_in_g = LR_G * max_abs(gg_fake, ng);
        sep->left_in_d = LR_D_REAL * max_abs(gd, nd);
        sep->z_swap = max_abs_diff(own, alt, ng, LR_G);
        sep->stale_d = max_abs_diff(own, gg_d1, ng, LR_G);
        free(own);
        free(alt);
        free(gg_d1);
    }
    sgd_by_hand(G, gg, LR_G);
    if (acc)
        memcpy(left_d, gd, sizeof(float) * (size_t)nd);
    else
        memset(left_d, 0, sizeof(float) * (size_t)nd);
    free(gd);
    free(gg);
    free(gg_fake);
}

/* ---- the cases ------------------------------------------------------------------------- */

/* ITERS iterations of gan_step in `mode` against the reference; sep, if not NULL, gets the
 * separations of the first iteration. */
static void run_mode(gan_generator gen, gan_step_mode mode, separations *sep)
{
    gan_state s;
    state_init(&s, gen, mode);
    tg_module *G, *D;
    build_models(gen, &G, &D);
    batches b;
    batches_make(&b);
    const int64_t nd = tg_module_num_parameters(s.D), ng = tg_module_num_parameters(s.G);
    assert_int_equal(tg_module_num_parameters(D), nd);
    assert_int_equal(tg_module_num_parameters(G), ng);
    float *left_d = vec_new(nd);
    float *got = vec_new(nd > ng ? nd : ng), *want = vec_new(nd > ng ? nd : ng);
    double worst = 0.0;

    for (int it = 0; it < ITERS; it++) {
        /* Each iteration is checked from the state the previous one left (after checking it),
         * so float differences of one iteration are not compounded by the next. */
        sync_models(&s, G, D);
        memset(left_d, 0, sizeof(float) * (size_t)nd);
        add_grads(s.D, left_d);
        gan_losses l, r;
        if (gan_step(&s, b.real[it], b.z[it], &l) != TG_OK)
            fail_msg("gan_step %d: %s", it, tg_last_error());
        ref_step(mode, G, D, b.real[it], b.z[it], left_d, &r, it == 0 ? sep : NULL);

        check_loss("d_real", it, l.d_real, r.d_real);
        check_loss("d_fake", it, l.d_fake, r.d_fake);
        check_loss("g", it, l.g, r.g);
        get_params(s.G, got);
        get_params(G, want);
        worst = fmax(worst, check_close("G's parameters", it, got, want, ng));
        get_params(s.D, got);
        get_params(D, want);
        worst = fmax(worst, check_close("D's parameters", it, got, want, nd));

        /* What the step leaves behind: nothing in G; in D, accumulate's Lg gradient. */
        memset(got, 0, sizeof(float) * (size_t)ng);
        add_grads(s.G, got);
        if (max_abs(got, ng) != 0.0)
            fail_msg("iteration %d: G holds a gradient after the step", it);
        memset(got, 0, sizeof(float) * (size_t)nd);
        add_grads(s.D, got);
        worst = fmax(worst, check_close("the gradient left in D", it, got, left_d, nd));
        if (mode == GAN_STEP_ACCUMULATE && !(max_abs(left_d, nd) > 0.0))
            fail_msg("iteration %d: the reference left no gradient in D", it);
    }
    print_message("  %s step, %s G: parameters and gradients within %.3g of the reference\n",
                  gan_step_names[mode], gen == GAN_GEN_CONVT ? "convt" : "upsample", worst);

    free(left_d);
    free(got);
    free(want);
    batches_free(&b);
    tg_module_free(G);
    tg_module_free(D);
    gan_state_free(&s);
}

static void test_tutorial_step_upsample(void **state)
{
    (void)state;
    run_mode(GAN_GEN_UPSAMPLE, GAN_STEP_TUTORIAL, NULL);
}

static void test_accumulate_step_upsample(void **state)
{
    (void)state;
    run_mode(GAN_GEN_UPSAMPLE, GAN_STEP_ACCUMULATE, NULL);
}

static void test_clean_step_upsample(void **state)
{
    (void)state;
    run_mode(GAN_GEN_UPSAMPLE, GAN_STEP_CLEAN, NULL);
}

static void test_tutorial_step_convt(void **state)
{
    (void)state;
    run_mode(GAN_GEN_CONVT, GAN_STEP_TUTORIAL, NULL);
}

static void test_accumulate_step_convt(void **state)
{
    (void)state;
    run_mode(GAN_GEN_CONVT, GAN_STEP_ACCUMULATE, NULL);
}

static void test_clean_step_convt(void **state)
{
    (void)state;
    run_mode(GAN_GEN_CONVT, GAN_STEP_CLEAN, NULL);
}

/* The cases above could not tell the modes apart if the terms that separate them were lost in
 * the tolerance: each must move some parameter by SEPARATION_MIN or more. */
static void test_separations_are_visible(void **state)
{
    (void)state;
    const gan_generator gens[] = {GAN_GEN_UPSAMPLE, GAN_GEN_CONVT};
    const gan_step_mode modes[] = {GAN_STEP_TUTORIAL, GAN_STEP_CLEAN};
    for (size_t g = 0; g < 2; g++) {
        for (size_t m = 0; m < 2; m++) {
            separations sep;
            run_mode(gens[g], modes[m], &sep);
            print_message("  separations (%s step, %s G): loss_fake in G %.3g, loss_g left in "
                          "D %.3g, z1 vs z0 %.3g, D1 vs D2 for G %.3g\n",
                          gan_step_names[modes[m]], g ? "convt" : "upsample", sep.fake_in_g,
                          sep.left_in_d, sep.z_swap, sep.stale_d);
            assert_true(sep.fake_in_g >= SEPARATION_MIN);
            assert_true(sep.left_in_d >= SEPARATION_MIN);
            assert_true(sep.z_swap >= SEPARATION_MIN);
            assert_true(sep.stale_d >= SEPARATION_MIN);
        }
    }
}

/* The three modes from the same weights on the same batches really end apart, and after the
 * first iteration exactly as their definitions say: D alike in all three (no gradient left yet,
 * the detach does not change D's), tutorial's and accumulate's G apart by LR_G * dLfake/dG. */
static void test_modes_differ(void **state)
{
    (void)state;
    const gan_step_mode modes[3] = {GAN_STEP_TUTORIAL, GAN_STEP_ACCUMULATE, GAN_STEP_CLEAN};
    gan_state s[3];
    for (int m = 0; m < 3; m++)
        state_init(&s[m], GAN_GEN_UPSAMPLE, modes[m]);
    batches b;
    batches_make(&b);
    const int64_t nd = tg_module_num_parameters(s[0].D), ng = tg_module_num_parameters(s[0].G);

    /* dLfake/dG at (D1, G0, z0) from reference copies of the initial models */
    tg_module *G, *D;
    build_models(GAN_GEN_UPSAMPLE, &G, &D);
    sync_models(&s[0], G, D);
    float *gd = vec_new(nd), *gg_fake = vec_new(ng);
    ref_loss(G, D, b.real[0], NULL, 1.0f, NULL, gd, NULL, NULL);
    sgd_by_hand(D, gd, LR_D_REAL);
    ref_loss(G, D, NULL, b.z[0][0], 0.0f, NULL, NULL, NULL, gg_fake);

    gan_losses l;
    float *g[3], *d[3];
    for (int m = 0; m < 3; m++) {
        if (gan_step(&s[m], b.real[0], b.z[0], &l) != TG_OK)
            fail_msg("gan_step: %s", tg_last_error());
        g[m] = vec_new(ng);
        d[m] = vec_new(nd);
        get_params(s[m].G, g[m]);
        get_params(s[m].D, d[m]);
    }
    /* D alike */
    check_close("accumulate's D vs tutorial's", 0, d[1], d[0], nd);
    check_close("clean's D vs tutorial's", 0, d[2], d[0], nd);
    /* accumulate's G = tutorial's G - LR_G * dLfake/dG */
    float *expect = vec_new(ng);
    for (int64_t i = 0; i < ng; i++)
        expect[i] = g[0][i] - LR_G * gg_fake[i];
    check_close("accumulate's G vs tutorial's - LR_G * dLfake/dG", 0, g[1], expect, ng);
    const double acc_vs_tut = max_abs_diff(g[1], g[0], ng, 1.0);
    const double clean_vs_tut = max_abs_diff(g[2], g[0], ng, 1.0);
    const double clean_vs_acc = max_abs_diff(g[2], g[1], ng, 1.0);

    /* second iteration: accumulate's real-D update carries Lg's gradient left in D */
    for (int m = 0; m < 3; m++) {
        if (gan_step(&s[m], b.real[1], b.z[1], &l) != TG_OK)
            fail_msg("gan_step: %s", tg_last_error());
        get_params(s[m].D, d[m]);
    }
    const double d_acc_vs_tut = max_abs_diff(d[1], d[0], nd, 1.0);
    const double d_clean_vs_tut = max_abs_diff(d[2], d[0], nd, 1.0);
    print_message("  after one iteration, max |G difference|: accumulate-tutorial %.3g, "
                  "clean-tutorial %.3g, clean-accumulate %.3g; after two, max |D difference|: "
                  "accumulate-tutorial %.3g, clean-tutorial %.3g\n",
                  acc_vs_tut, clean_vs_tut, clean_vs_acc, d_acc_vs_tut, d_clean_vs_tut);
    assert_true(acc_vs_tut >= SEPARATION_MIN);
    assert_true(clean_vs_tut >= SEPARATION_MIN);
    assert_true(clean_vs_acc >= SEPARATION_MIN);
    assert_true(d_acc_vs_tut >= SEPARATION_MIN);
    assert_true(d_clean_vs_tut >= SEPARATION_MIN);

    for (int m = 0; m < 3; m++) {
        free(g[m]);
        free(d[m]);
        gan_state_free(&s[m]);
    }
    free(expect);
    free(gd);
    free(gg_fake);
    tg_module_free(G);
    tg_module_free(D);
    batches_free(&b);
}

/* ---- the tutorial step's skipped backward through G ------------------------------------
 * The tutorial step detaches G(z) for the fake-D loss, as its gradient in G is overwritten by
 * the G step's before any use (step.c). These cases run SKIP_ITERS iterations of the real
 * tutorial state (its Adams, Paddle's init, z drawn from its stream) twice from the same seed,
 * once as it runs and once with fake_d_reaches_g (the loop as it was, the backward going
 * through G), and require everything the state holds to be the same bit for bit after every
 * iteration: the losses, G's and D's parameters and BatchNorm buffers, the three Adams'
 * moments and step counts, the gradients left (gan_state_dict: what a checkpoint saves) and
 * the z stream. One thread, so that both runs sum in one order. Larger widths than above, so
 * that the convolutions run on the GEMM paths. */
#define SKIP_ITERS 3
#define SKIP_BATCH 8
#define SKIP_WIDTH_DIV 4

static void tutorial_state_init(gan_state *s, gan_generator gen, bool reaches_g)
{
    gan_config c = gan_config_default(GAN_RECIPE_TUTORIAL);
    c.generator = gen;
    const gan_widths w = gan_widths_default(SKIP_WIDTH_DIV);
    if (gan_state_init(s, &c, &w) != TG_OK)
        fail_msg("gan_state_init: %s", tg_last_error());
    assert_int_equal(s->step, GAN_STEP_TUTORIAL);
    assert_false(s->fake_d_reaches_g); /* the default, which the program runs */
    s->fake_d_reaches_g = reaches_g;
}

/* Fails unless a and b hold the same entries, in the same order, equal to the bit. */
static void check_states_identical(const gan_state *a, const gan_state *b, int it)
{
    tg_state_dict *sa = tg_state_dict_new(), *sb = tg_state_dict_new();
    assert_non_null(sa);
    assert_non_null(sb);
    assert_int_equal(gan_state_dict(a, sa), TG_OK);
    assert_int_equal(gan_state_dict(b, sb), TG_OK);
    assert_int_equal(tg_state_dict_size(sa), tg_state_dict_size(sb));
    for (int64_t i = 0; i < tg_state_dict_size(sa); i++) {
        const char *name = tg_state_dict_name(sa, i);
        const tg_tensor *ta = tg_state_dict_tensor(sa, i), *tb = tg_state_dict_tensor(sb, i);
        assert_string_equal(name, tg_state_dict_name(sb, i));
        assert_int_equal(ta->numel, tb->numel);
        for (int64_t j = 0; j < ta->numel; j++)
            if (memcmp(&ta->data[j], &tb->data[j], sizeof(float)) != 0)
                fail_msg("iteration %d: %s[%lld] = %.9g, the reference loop's %.9g", it, name,
                         (long long)j, (double)ta->data[j], (double)tb->data[j]);
    }
    tg_state_dict_free(sa);
    tg_state_dict_free(sb);
    /* the noise stream: the same draws consumed, none skipped or added */
    assert_memory_equal(a->z_rng.s, b->z_rng.s, sizeof a->z_rng.s);
    assert_int_equal(a->z_rng.has_spare, b->z_rng.has_spare);
    if (a->z_rng.has_spare)
        assert_memory_equal(&a->z_rng.spare, &b->z_rng.spare, sizeof(float));
}

static void check_losses_identical(const gan_losses *a, const gan_losses *b, int it)
{
    const float la[3] = {a->d_real, a->d_fake, a->g}, lb[3] = {b->d_real, b->d_fake, b->g};
    static const char *const names[3] = {"d_real", "d_fake", "g"};
    for (int k = 0; k < 3; k++)
        if (memcmp(&la[k], &lb[k], sizeof(float)) != 0)
            fail_msg("iteration %d: loss %s = %.9g, the reference loop's %.9g", it, names[k],
                     (double)la[k], (double)lb[k]);
}

/* SKIP_ITERS iterations of both states on the same real batches (fresh from rng each into
 * real), failing unless their losses and states stay equal to the bit. */
static void step_pair(gan_state s[2], tg_rng *rng, tg_tensor *real)
{
    for (int it = 1; it <= SKIP_ITERS; it++) {
        tg_tensor_uniform_(real, rng, -1.0f, 1.0f);
        gan_losses l[2];
        for (int k = 0; k < 2; k++)
            if (gan_step(&s[k], real, NULL, &l[k]) != TG_OK)
                fail_msg("gan_step: %s", tg_last_error());
        check_losses_identical(&l[0], &l[1], it);
        check_states_identical(&s[0], &s[1], it);
    }
}

static void run_tutorial_skip(gan_generator gen)
{
    const int threads = tg_get_num_threads();
    assert_int_equal(tg_set_num_threads(1), TG_OK);
    gan_state s[2]; /* [0]: as the program runs it; [1]: the backward reaching G */
    tutorial_state_init(&s[0], gen, false);
    tutorial_state_init(&s[1], gen, true);
    check_states_identical(&s[0], &s[1], 0);
    tg_rng rng;
    tg_rng_seed(&rng, 77);
    tg_tensor *real = tg_tensor_new(TG_DIMS(SKIP_BATCH, 1, 28, 28));
    assert_non_null(real);
    step_pair(s, &rng, real);

    /* That the flag really runs the old loop: with a z that requires grad, the fake-D backward
     * reaches z only through G, so z's gradient (which nothing clears) holds dLfake/dz +
     * dLg/dz after the undetached step and dLg/dz alone after the detached one; the states
     * still agree. */
    tg_tensor *z[2];
    gan_losses l[2];
    for (int k = 0; k < 2; k++) {
        z[k] = tg_tensor_new(TG_DIMS(SKIP_BATCH, s[k].nz));
        assert_non_null(z[k]);
        if (k == 0)
            tg_tensor_normal_(z[0], &rng, 0.0f, 1.0f);
        else
            assert_int_equal(tg_tensor_copy_(z[1], z[0]), TG_OK);
        assert_int_equal(tg_tensor_set_requires_grad(z[k], true), TG_OK);
        tg_tensor *const zz[2] = {z[k], NULL};
        if (gan_step(&s[k], real, zz, &l[k]) != TG_OK)
            fail_msg("gan_step: %s", tg_last_error());
        assert_non_null(z[k]->grad);
    }
    check_losses_identical(&l[0], &l[1], SKIP_ITERS + 1);
    check_states_identical(&s[0], &s[1], SKIP_ITERS + 1);
    double diff = 0.0;
    for (int64_t j = 0; j < z[0]->numel; j++)
        diff = fmax(diff, fabs((double)z[0]->grad->data[j] - (double)z[1]->grad->data[j]));
    print_message("  %s G: max |dLfake/dz| seen only by the undetached loop: %.3g\n",
                  gen == GAN_GEN_CONVT ? "convt" : "upsample", diff);
    assert_true(diff > 0.0);

    for (int k = 0; k < 2; k++) {
        tg_tensor_release(z[k]);
        gan_state_free(&s[k]);
    }
    tg_tensor_release(real);
    assert_int_equal(tg_set_num_threads(threads), TG_OK);
}

static void test_tutorial_skip_upsample(void **state)
{
    (void)state;
    run_tutorial_skip(GAN_GEN_UPSAMPLE);
}

static void test_tutorial_skip_convt(void **state)
{
    (void)state;
    run_tutorial_skip(GAN_GEN_CONVT);
}

/* The tutorial step's one G forward (step.c), kept for both updates with BatchNorm's running
 * statistics updated twice, against the two forwards the loop ran (g_forward_twice): the same
 * losses and the same states to the bit, buffers included, over SKIP_ITERS iterations; and G's
 * BatchNorms have counted two batches an iteration either way. */
static void run_one_g_forward(gan_generator gen)
{
    const int threads = tg_get_num_threads();
    assert_int_equal(tg_set_num_threads(1), TG_OK);
    gan_state s[2]; /* [0]: as the program runs it; [1]: G's forward twice */
    tutorial_state_init(&s[0], gen, false);
    tutorial_state_init(&s[1], gen, false);
    assert_false(s[0].g_forward_twice); /* the default, which the program runs */
    s[1].g_forward_twice = true;
    tg_rng rng;
    tg_rng_seed(&rng, 78);
    tg_tensor *real = tg_tensor_new(TG_DIMS(SKIP_BATCH, 1, 28, 28));
    assert_non_null(real);
    step_pair(s, &rng, real);
    tg_state_dict *sd = tg_state_dict_new();
    assert_non_null(sd);
    assert_int_equal(gan_state_dict(&s[0], sd), TG_OK);
    int counters = 0;
    for (int64_t i = 0; i < tg_state_dict_size(sd); i++) {
        const char *name = tg_state_dict_name(sd, i);
        if (strncmp(name, "G.", 2) || !strstr(name, "num_batches_tracked"))
            continue;
        counters++;
        assert_float_equal(tg_state_dict_tensor(sd, i)->data[0], 2.0f * SKIP_ITERS, 0.0f);
    }
    assert_true(counters > 0);
    assert_int_equal(tg_batch_norm_running_updates(), 1); /* restored after the forward */
    tg_state_dict_free(sd);
    for (int k = 0; k < 2; k++)
        gan_state_free(&s[k]);
    tg_tensor_release(real);
    assert_int_equal(tg_set_num_threads(threads), TG_OK);
}

static void test_one_g_forward_upsample(void **state)
{
    (void)state;
    run_one_g_forward(GAN_GEN_UPSAMPLE);
}

static void test_one_g_forward_convt(void **state)
{
    (void)state;
    run_one_g_forward(GAN_GEN_CONVT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TG_TEST(test_tutorial_step_upsample),  TG_TEST(test_accumulate_step_upsample),
        TG_TEST(test_clean_step_upsample),     TG_TEST(test_tutorial_step_convt),
        TG_TEST(test_accumulate_step_convt),   TG_TEST(test_clean_step_convt),
        TG_TEST(test_separations_are_visible), TG_TEST(test_modes_differ),
        TG_TEST(test_tutorial_skip_upsample),  TG_TEST(test_tutorial_skip_convt),
        TG_TEST(test_one_g_forward_upsample),  TG_TEST(test_one_g_forward_convt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
