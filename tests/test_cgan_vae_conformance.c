/* examples/cgan and examples/vae against PyTorch: one batch through a reduced-width copy of
 * each model, from the initial weights, batch and noise that their make_fixture.py scripts
 * gave PyTorch (tests/fixtures/cgan.safetensors, vae.safetensors). Every loss must agree to
 * 1e-4 relative, as in test_gan_conformance, and every parameter's gradient to 1e-3 of the
 * largest element of PyTorch's (the scale-free form of that test's 1e-3 on parameters, which
 * it reads after steps of about lr), except the gradient of a bias that feeds a BatchNorm:
 * zero in exact arithmetic (the normalisation subtracts the bias again), rounding noise in
 * both libraries, so it is only checked to be noise, below 1e-4 of its layer weight's. */
#include "common.h"

#include "cgan.h"
#include "conformance.h"
#include "vae.h"

#define LOSS_RTOL 1e-4
#define GRAD_RTOL 1e-3
#define NOISE_RTOL 1e-4

static void check_loss(const char *what, const tg_tensor *loss, const tg_tensor *want)
{
    assert_non_null(loss);
    const double got = tg_tensor_item(loss), e = tg_tensor_item(want);
    print_message("  %s: tapegrad %.7g, pytorch %.7g (rel %.2g)\n", what, got, e,
                  fabs(got - e) / fabs(e));
    if (!(fabs(got - e) <= LOSS_RTOL * fabs(e)))
        fail_msg("%s: tapegrad %.7g, pytorch %.7g", what, got, e);
}

/* Compares the gradient of every parameter of m with the fixture's "<prefix>.<name>"; the
 * names in noise (NULL-terminated, each with the name of the weight of its layer) are biases
 * feeding a BatchNorm. Also checks that the fixture has no gradient m lacks. Returns how many
 * differ. */
static int compare_grads(const tg_module *m, const tg_state_dict *fx, const char *prefix,
                         const char *const (*noise)[2])
{
    int64_t n;
    char **names = tg_module_parameter_names(m, NULL, &n);
    tg_tensor **params = tg_module_parameters(m, &n);
    assert_true(names && params);
    int bad = 0;
    char key[256];
    for (int64_t i = 0; i < n; i++) {
        snprintf(key, sizeof key, "%s.%s", prefix, names[i]);
        const tg_tensor *want = fixture_entry(fx, key), *got = tg_tensor_grad(params[i]);
        if (!got || !tg_shape_equal(got, want))
            fail_msg("%s: %s", key, got ? "shape differs from PyTorch's" : "no gradient");
        const char *weight = NULL;
        for (int k = 0; noise && noise[k][0]; k++)
            weight = strcmp(names[i], noise[k][0]) ? weight : noise[k][1];
        double worst = fixture_max_diff(got, want, NULL), tol;
        if (weight) { /* both must be noise next to the weight's gradient */
            snprintf(key, sizeof key, "%s.%s", prefix, weight);
            tol = NOISE_RTOL * fixture_max_abs(fixture_entry(fx, key));
            worst = fmax(fixture_max_abs(got), fixture_max_abs(want));
        } else {
            tol = GRAD_RTOL * fixture_max_abs(want);
        }
        print_message("  %-24s max |diff| %.3g (tolerance %.3g)%s\n", names[i], worst, tol,
                      weight ? ", bias feeding a BatchNorm: both noise" : "");
        bad += !(worst <= tol);
    }
    snprintf(key, sizeof key, "%s.", prefix);
    int64_t in_fixture = 0;
    for (int64_t j = 0; j < tg_state_dict_size(fx); j++)
        in_fixture += strncmp(tg_state_dict_name(fx, j), key, strlen(key)) == 0;
    assert_int_equal(in_fixture, n);
    free(names);
    free(params);
    return bad;
}

/* D's gradients from D's loss, then G's from G's loss, with no update between. */
static void test_cgan(void **state)
{
    (void)state;
    tg_state_dict *fx = fixture_load("cgan.safetensors");
    const cgan_widths w = {fixture_meta_int(fx, "nz"), fixture_meta_int(fx, "emb"),
                           fixture_meta_int(fx, "ngf"), fixture_meta_int(fx, "ndf")};
    tg_rng rng;
    tg_rng_seed(&rng, 1);
    tg_module *G = cgan_generator(&w, &rng), *D = cgan_discriminator(&w, &rng);
    assert_true(G && D);
    if (tg_module_load_state_dict(G, "G", fx) != TG_OK ||
        tg_module_load_state_dict(D, "D", fx) != TG_OK)
        fail_msg("%s", tg_last_error());
    tg_tensor *real = fixture_entry(fx, "real"), *labels = fixture_entry(fx, "label");

    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *fake = tg_module_forward2(G, fixture_entry(fx, "z"), labels);
    tg_tensor *d_loss = cgan_d_loss(D, real, fake, labels);
    assert_int_equal(tg_backward(d_loss), TG_OK);
    check_loss("d_loss", d_loss, fixture_entry(fx, "d_loss"));
    int64_t n;
    tg_tensor **g_params = tg_module_parameters(G, &n);
    for (int64_t i = 0; i < n; i++) /* D's loss sees G's images detached */
        assert_null(tg_tensor_grad(g_params[i]));
    free(g_params);
    static const char *const d_noise[][2] = {{"net.2.bias", "net.2.weight"}, {NULL, NULL}};
    int bad = compare_grads(D, fx, "grad.D", d_noise);

    tg_module_zero_grad(D);
    tg_tensor *g_loss = cgan_g_loss(D, fake, labels);
    assert_int_equal(tg_backward(g_loss), TG_OK);
    check_loss("g_loss", g_loss, fixture_entry(fx, "g_loss"));
    static const char *const g_noise[][2] = {
        {"net.0.bias", "net.0.weight"}, {"net.4.bias", "net.4.weight"}, {NULL, NULL}};
    bad += compare_grads(G, fx, "grad.G", g_noise);
    tg_tape_end(tape);
    tg_module_free(G);
    tg_module_free(D);
    tg_state_dict_free(fx);
    if (bad)
        fail_msg("%d gradients differ from PyTorch's", bad);
}

static void test_vae(void **state)
{
    (void)state;
    tg_state_dict *fx = fixture_load("vae.safetensors");
    tg_rng rng;
    tg_rng_seed(&rng, 1);
    tg_module *vae = vae_new(fixture_meta_int(fx, "hidden"), fixture_meta_int(fx, "latent"), &rng);
    assert_non_null(vae);
    if (tg_module_load_state_dict(vae, "vae", fx) != TG_OK)
        fail_msg("%s", tg_last_error());

    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *loss = vae_loss(vae, fixture_entry(fx, "x"), fixture_entry(fx, "eps"), NULL);
    assert_int_equal(tg_backward(loss), TG_OK);
    check_loss("loss", loss, fixture_entry(fx, "loss"));
    int bad = compare_grads(vae, fx, "grad", NULL);
    tg_tape_end(tape);
    tg_module_free(vae);
    tg_state_dict_free(fx);
    if (bad)
        fail_msg("%d gradients differ from PyTorch's", bad);
}

int main(void)
{
    const struct CMUnitTest tests[] = {TG_TEST(test_cgan), TG_TEST(test_vae)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
