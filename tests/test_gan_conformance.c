/* mnist_gan against PyTorch, end to end: three training iterations of each configuration
 * (tutorial G with upsampling, tutorial G with transposed convolutions, DCGAN) in each step
 * mode (tutorial: Paddle 1.8's overwriting backward; accumulate; clean; see step.c), from the
 * same initial weights, real batches and z as examples/mnist_gan/conformance/make_fixture.py
 * gave PyTorch. The two tutorial configurations run as the tutorial recipe does by default,
 * with Paddle's Adam (eps before the bias correction), which the script writes by hand in
 * PyTorch; their initial weights were drawn with Paddle's initialisers. dcgan runs with
 * torch.optim.Adam from PyTorch's initialisation. Every loss must agree to 1e-4 relative and
 * every final parameter and buffer to 1e-3 absolute, except the biases that feed a BatchNorm
 * and its running mean: their gradient is rounding noise, and they get the bound Adam
 * guarantees instead (see tolerance_for). Each case prints its largest differences.
 *
 * The fixture tests/fixtures/gan_conformance.safetensors holds real.<it>, z.<it>.<k>,
 * init.<cfg>.{G,D}.*, loss.<cfg>.<mode> [iters, 3] and final.<cfg>.<mode>.{G,D}.*; its
 * metadata gives the widths, batch, iteration count, lr, the lists of configs and modes, and
 * per config its recipe, generator, beta1, init (paddle | torch) and adam (paddle | torch). The
 * initial weights are loaded from it, so the init named there only labels how they were drawn. */
#include "common.h"

#include "conformance.h"
#include "gan.h" /* examples/mnist_gan, through its gan_dep */

#define FIXTURE_NAME "gan_conformance.safetensors"
#define LOSS_RTOL 1e-4
#define PARAM_ATOL 1e-3
#define ADAM_BETA2 0.999 /* step.c's, PyTorch's and Paddle's default */
#define BN_MOMENTUM 0.1  /* tg_nn_batch_norm*d's, PyTorch's default */

/* ---- biases that feed a BatchNorm ------------------------------------------------------
 * A Linear or convolution bias followed directly by a training-mode BatchNorm over the same
 * axis gets a gradient that is zero in exact arithmetic (the normalisation subtracts it again);
 * what both libraries compute is rounding noise, 1e-9 to 5e-7 here in PyTorch and tapegrad
 * alike, five to seven orders below the other biases, and not below Adam's eps = 1e-8. Adam
 * divides it by its own size, so each library moves such a bias by up to about lr per step in
 * a direction neither can predict; the losses and every other tensor do not depend on it in
 * training mode, but the BatchNorm's running_mean absorbs it. For these two tensors only we
 * check the bound Adam guarantees instead of PARAM_ATOL (see adam_drift). */

/* The most Adam can move one parameter in `steps` steps from a fresh state, as a multiple of
 * lr, whatever the gradients. With m = sum_i w_i g_i and v = sum_i u_i g_i^2,
 * w_i = (1 - beta1) beta1^(t-i), u_i = (1 - beta2) beta2^(t-i), step t moves it by
 *     PyTorch's Adam: lr / (1 - beta1^t) * |m| / (sqrt(v / (1 - beta2^t)) + eps)
 *                   = lr c_t |m| / (sqrt(v) + eps sqrt(1 - beta2^t)),
 *     Paddle's Adam:  lr c_t |m| / (sqrt(v) + eps),   c_t = sqrt(1 - beta2^t) / (1 - beta1^t),
 * both at most lr c_t |m| / sqrt(v) (Paddle's is the smaller: its eps is not scaled down, so its
 * first steps on tiny gradients are shorter), and by Cauchy-Schwarz
 * |m| / sqrt(v) <= sqrt(sum_i w_i^2 / u_i). So one bound serves both eps styles:
 *     sum_t sqrt(sum_i w_i^2 / u_i) * c_t
 * (about 1.0 for beta1 0.9 and 1.13 for 0.5 over three steps). */
static double adam_drift(double beta1, int steps)
{
    double total = 0.0;
    for (int t = 1; t <= steps; t++) {
        double s = 0.0;
        for (int i = 1; i <= t; i++) {
            double w = (1.0 - beta1) * pow(beta1, t - i);
            double u = (1.0 - ADAM_BETA2) * pow(ADAM_BETA2, t - i);
            s += w * w / u;
        }
        total += sqrt(s) * sqrt(1.0 - pow(ADAM_BETA2, t)) / (1.0 - pow(beta1, t));
    }
    return total;
}

/* The tolerance for the entry `name` (without the part prefix, e.g. "8.bias") of the
 * Sequential m: PARAM_ATOL, or for a bias feeding a BatchNorm (and that BatchNorm's
 * running_mean) the most the two libraries' noise-driven Adam drifts can differ,
 * bias_bound = 2 * lr * drift over all of the model's optimizer steps; the running mean,
 * rm = sum_k momentum (1 - momentum)^(K - k) (mean_k + bias_k) over its K updates, differs by
 * at most (1 - (1 - momentum)^K) of it. */
static double tolerance_for(const tg_module *m, const char *name, double bias_bound)
{
    char idx[32];
    const char *dot = strchr(name, '.');
    if (!dot || (size_t)(dot - name) >= sizeof idx)
        return PARAM_ATOL;
    memcpy(idx, name, (size_t)(dot - name));
    idx[dot - name] = '\0';
    const char *field = dot + 1;
    const int64_t i = atoll(idx);
    const tg_module *layer = tg_module_child_at(m, i); /* probed: no error when absent */
    if (!layer || strcmp(tg_module_name(layer), idx) != 0)
        return PARAM_ATOL;
    if (!strcmp(field, "bias")) {
        const tg_module *next = tg_module_child_at(m, i + 1);
        if (next && !strncmp(tg_module_type(next), "BatchNorm", 9))
            return bias_bound;
    } else if (!strcmp(field, "running_mean") && i > 0 &&
               tg_module_has_param(tg_module_child_at(m, i - 1), "bias")) {
        double k = tg_tensor_item(tg_module_buffer(layer, "num_batches_tracked"));
        return PARAM_ATOL + (1.0 - pow(1.0 - BN_MOMENTUM, k)) * bias_bound;
    }
    return PARAM_ATOL;
}

/* The largest differences seen, for the summary line of each case. */
typedef struct margins {
    double loss_rel;  /* losses, relative */
    double tight;     /* tensors checked to PARAM_ATOL */
    double loose;     /* biases feeding a BatchNorm and their running means ... */
    double loose_tol; /* ... and the tolerance of that worst one */
} margins;

/* Compares every tensor of the module's state dict (prefix part) with the fixture's
 * "<final>.<part>.<name>", prints each one off by more than its tolerance (tolerance_for), and
 * returns how many were. Also checks that the fixture holds no entry the module lacks. */
static int compare_final(const tg_module *m, const char *part, const tg_state_dict *fx,
                         const char *final_prefix, double bias_bound, margins *mg)
{
    tg_state_dict *cur = tg_state_dict_new();
    assert_non_null(cur);
    assert_int_equal(tg_module_state_dict(m, part, cur), TG_OK);
    int bad = 0;
    char name[256];
    for (int64_t i = 0; i < tg_state_dict_size(cur); i++) {
        const tg_tensor *a = tg_state_dict_tensor(cur, i);
        snprintf(name, sizeof name, "%s.%s", final_prefix, tg_state_dict_name(cur, i));
        const tg_tensor *b = fixture_entry(fx, name);
        if (!tg_shape_equal(a, b))
            fail_msg("%s: shape differs from the module's", name);
        int64_t at;
        const double worst = fixture_max_diff(a, b, &at);
        const char *local = tg_state_dict_name(cur, i) + strlen(part) + 1;
        const double tol = tolerance_for(m, local, bias_bound);
        if (tol == PARAM_ATOL) {
            mg->tight = fmax(mg->tight, worst);
        } else if (worst / tol >= mg->loose / fmax(mg->loose_tol, 1e-30)) {
            mg->loose = worst;
            mg->loose_tol = tol;
        }
        if (!(worst <= tol)) {
            print_error("  %s: max |tapegrad - pytorch| = %.3g at [%lld] (%.7g vs %.7g), "
                        "tolerance %.3g\n",
                        name, worst, (long long)at, (double)a->data[at], (double)b->data[at], tol);
            bad++;
        }
    }
    /* Nothing in the fixture under this prefix that the module does not have. */
    char pre[256];
    int n = snprintf(pre, sizeof pre, "%s.%s.", final_prefix, part);
    int64_t in_fixture = 0;
    for (int64_t j = 0; j < tg_state_dict_size(fx); j++)
        in_fixture += strncmp(tg_state_dict_name(fx, j), pre, (size_t)n) == 0;
    assert_int_equal(in_fixture, tg_state_dict_size(cur));
    tg_state_dict_free(cur);
    return bad;
}

/* The index of value in names (a NULL-terminated list such as gan_step_names), or a failure. */
static int name_index(const char *const *names, const char *value, const char *what)
{
    for (int i = 0; names[i]; i++)
        if (!strcmp(names[i], value))
            return i;
    fail_msg("the fixture's %s \"%s\" is not one mnist_gan knows", what, value);
    return -1;
}

/* The metadata "<field>.<cfg>". */
static const char *cfg_meta(const tg_state_dict *fx, const char *field, const char *cfg)
{
    char key[256];
    snprintf(key, sizeof key, "%s.%s", field, cfg);
    return fixture_meta(fx, key);
}

/* Whether word is one of the space-separated words of list. */
static bool has_word(const char *list, const char *word)
{
    const size_t n = strlen(word);
    for (const char *p = list; (p = strstr(p, word)) != NULL; p += n)
        if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
            return true;
    return false;
}

static void run_case(const char *cfg, const char *mode_name)
{
    static const char *const recipe_names[] = {"tutorial", "dcgan", NULL};    /* gan_recipe */
    static const char *const generator_names[] = {"upsample", "convt", NULL}; /* gan_generator */
    tg_state_dict *fx = fixture_load(FIXTURE_NAME);
    if (!has_word(fixture_meta(fx, "configs"), cfg) ||
        !has_word(fixture_meta(fx, "modes"), mode_name))
        fail_msg("the fixture's configs \"%s\" and modes \"%s\" do not list %s, %s",
                 fixture_meta(fx, "configs"), fixture_meta(fx, "modes"), cfg, mode_name);
    gan_widths w;
    long long v[7];
    if (sscanf(fixture_meta(fx, "widths"), "%lld %lld %lld %lld %lld %lld %lld", &v[0], &v[1],
               &v[2], &v[3], &v[4], &v[5], &v[6]) != 7)
        fail_msg("bad widths metadata \"%s\"", fixture_meta(fx, "widths"));
    assert_string_equal(fixture_meta(fx, "widths_order"), "nz g_fc g_ch1 g_ch2 d_ch1 d_ch2 d_fc");
    w = (gan_widths){.nz = v[0],
                     .g_fc = v[1],
                     .g_ch1 = v[2],
                     .g_ch2 = v[3],
                     .d_ch1 = v[4],
                     .d_ch2 = v[5],
                     .d_fc = v[6]};
    const int iters = atoi(fixture_meta(fx, "iters"));
    const float lr = strtof(fixture_meta(fx, "lr"), NULL);
    char key[256];
    const float beta1 = strtof(cfg_meta(fx, "beta1", cfg), NULL);
    assert_true(iters >= 1 && lr > 0.0f && beta1 > 0.0f);

    gan_state s;
    gan_config c = gan_config_default(
        (gan_recipe)name_index(recipe_names, cfg_meta(fx, "recipe", cfg), "recipe"));
    c.generator =
        (gan_generator)name_index(generator_names, cfg_meta(fx, "generator", cfg), "generator");
    c.step = (gan_step_mode)name_index(gan_step_names, mode_name, "mode");
    c.lr = lr, c.beta1 = beta1;
    /* The weights are replaced by the fixture's below; init only keeps the config consistent. */
    c.init = (gan_init)name_index(gan_init_names, cfg_meta(fx, "init", cfg), "init");
    c.adam_eps = (tg_adam_eps)name_index(gan_adam_names, cfg_meta(fx, "adam", cfg), "adam");
    if (gan_state_init(&s, &c, &w) != TG_OK)
        fail_msg("gan_state_init: %s", tg_last_error());
    snprintf(key, sizeof key, "init.%s.G", cfg);
    if (tg_module_load_state_dict(s.G, key, fx) != TG_OK)
        fail_msg("%s", tg_last_error());
    snprintf(key, sizeof key, "init.%s.D", cfg);
    if (tg_module_load_state_dict(s.D, key, fx) != TG_OK)
        fail_msg("%s", tg_last_error());

    snprintf(key, sizeof key, "loss.%s.%s", cfg, mode_name);
    const tg_tensor *want = fixture_entry(fx, key);
    assert_int_equal(want->ndim, 2);
    assert_int_equal(want->shape[0], iters);
    assert_int_equal(want->shape[1], 3);
    int bad = 0;
    margins mg = {0};
    for (int it = 0; it < iters; it++) {
        snprintf(key, sizeof key, "real.%d", it);
        tg_tensor *real = fixture_entry(fx, key);
        tg_tensor *z[2];
        for (int k = 0; k < 2; k++) {
            snprintf(key, sizeof key, "z.%d.%d", it, k);
            z[k] = fixture_entry(fx, key);
        }
        gan_losses l;
        if (gan_step(&s, real, z, &l) != TG_OK)
            fail_msg("gan_step %d: %s", it, tg_last_error());
        const float got[3] = {l.d_real, l.d_fake, l.g};
        static const char *const which[3] = {"d_real", "d_fake", "g"};
        for (int k = 0; k < 3; k++) {
            double e = want->data[it * 3 + k];
            mg.loss_rel = fmax(mg.loss_rel, fabs(got[k] - e) / fabs(e));
            if (!(fabs(got[k] - e) <= LOSS_RTOL * fabs(e))) {
                print_error("  iteration %d loss %s: tapegrad %.7g, pytorch %.7g (rel %.2g)\n", it,
                            which[k], (double)got[k], e, fabs(got[k] - e) / fabs(e));
                bad++;
            }
        }
    }
    snprintf(key, sizeof key, "final.%s.%s", cfg, mode_name);
    /* G takes one Adam step an iteration, D two (opt_d_real, opt_d_fake: each its own state);
     * adam_drift bounds either eps style */
    const double drift = lr * adam_drift(beta1, iters);
    bad += compare_final(s.G, "G", fx, key, 2.0 * drift, &mg);
    bad += compare_final(s.D, "D", fx, key, 2.0 * 2.0 * drift, &mg);
    print_message("  %s, %s step: losses within %.2g relative; tensors within %.2g; biases "
                  "feeding a BatchNorm within %.2g (bound %.2g)\n",
                  cfg, mode_name, mg.loss_rel, mg.tight, mg.loose, mg.loose_tol);
    gan_state_free(&s);
    tg_state_dict_free(fx);
    if (bad)
        fail_msg("%s, %s step: %d losses or tensors differ from PyTorch's", cfg, mode_name, bad);
}

/* One test per configuration and step mode. */
#define CASE(cfg, mode)                                                                            \
    static void test_##cfg##_##mode##_step(void **state)                                           \
    {                                                                                              \
        (void)state;                                                                               \
        run_case(#cfg, #mode);                                                                     \
    }
CASE(tutorial_upsample, tutorial)
CASE(tutorial_upsample, accumulate)
CASE(tutorial_upsample, clean)
CASE(tutorial_convt, tutorial)
CASE(tutorial_convt, accumulate)
CASE(tutorial_convt, clean)
CASE(dcgan, tutorial)
CASE(dcgan, accumulate)
CASE(dcgan, clean)

int main(void)
{
    const struct CMUnitTest tests[] = {
        TG_TEST(test_tutorial_upsample_tutorial_step),
        TG_TEST(test_tutorial_upsample_accumulate_step),
        TG_TEST(test_tutorial_upsample_clean_step),
        TG_TEST(test_tutorial_convt_tutorial_step),
        TG_TEST(test_tutorial_convt_accumulate_step),
        TG_TEST(test_tutorial_convt_clean_step),
        TG_TEST(test_dcgan_tutorial_step),
        TG_TEST(test_dcgan_accumulate_step),
        TG_TEST(test_dcgan_clean_step),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
