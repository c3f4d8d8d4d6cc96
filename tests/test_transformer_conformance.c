/* transformer_mnist's whole model against PyTorch: the reduced model of
 * examples/transformer_mnist/conformance/make_fixture.py, loaded from the fixture by PyTorch's
 * state_dict names, runs one forward and backward on the fixture's batch of real MNIST images.
 * The loss must agree to 1e-4 relative and every parameter's gradient to 1e-3 absolute, the
 * tolerances of test_gan_conformance.c, and also to 1% of that tensor's largest PyTorch gradient:
 * the gradients are 0.006 (pos) to 0.2 (head.weight) at most, so 1e-3 alone would let a small
 * one be 15% off. Each tensor's largest difference is printed.
 *
 * The fixture tests/fixtures/transformer_mnist.safetensors holds model.<name> (the weights),
 * grad.<name> (PyTorch's gradients), images [B, 1, 28, 28], labels [B] and loss [1]; its
 * metadata gives d, heads, ff and layers. */
#include "common.h"

#include "conformance.h"
#include "model.h" /* examples/transformer_mnist */

#define FIXTURE_NAME "transformer_mnist.safetensors"
#define LOSS_RTOL 1e-4
#define GRAD_ATOL 1e-3
#define GRAD_SCALE_RTOL 1e-2

static void test_loss_and_gradients(void **state)
{
    (void)state;
    tg_state_dict *fx = fixture_load(FIXTURE_NAME);
    tg_rng rng;
    tg_rng_seed(&rng, 1);
    tg_module *m =
        row_transformer(fixture_meta_int(fx, "d"), fixture_meta_int(fx, "heads"),
                        fixture_meta_int(fx, "ff"), fixture_meta_int(fx, "layers"), &rng);
    if (!m || tg_module_load_state_dict(m, "model", fx) != TG_OK)
        fail_msg("%s", tg_last_error());

    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *loss = tg_cross_entropy(tg_module_forward(m, fixture_entry(fx, "images")),
                                       tg_labels(fixture_entry(fx, "labels")), TG_REDUCE_MEAN);
    if (tg_backward(loss) != TG_OK)
        fail_msg("%s", tg_last_error());
    const double want = tg_tensor_item(fixture_entry(fx, "loss")), got = tg_tensor_item(loss);
    print_message("loss %.7f, PyTorch %.7f (relative difference %.2g)\n", got, want,
                  fabs(got - want) / fabs(want));
    assert_true(fabs(got - want) <= LOSS_RTOL * fabs(want));

    int64_t n;
    tg_tensor **params = tg_module_parameters(m, &n);
    char **names = tg_module_parameter_names(m, "grad", &n);
    assert_non_null(params);
    assert_non_null(names);
    double worst_all = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const tg_tensor *g = tg_tensor_grad(params[i]), *w = fixture_entry(fx, names[i]);
        if (!g || !tg_shape_equal(g, w))
            fail_msg("%s: no gradient of the fixture's shape", names[i]);
        const double worst = fixture_max_diff(g, w, NULL);
        const double tol = fmin(GRAD_ATOL, GRAD_SCALE_RTOL * fixture_max_abs(w));
        print_message("%-40s max |diff| %.2g (tolerance %.2g)\n", names[i], worst, tol);
        if (!(worst <= tol))
            fail_msg("%s differs from PyTorch's by %.3g (tolerance %.3g)", names[i], worst, tol);
        worst_all = fmax(worst_all, worst);
    }
    print_message("%lld gradients, largest difference %.2g\n", (long long)n, worst_all);
    free(names);
    free(params);
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_module_free(m);
    tg_state_dict_free(fx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {TG_TEST(test_loss_and_gradients)};
    return cmocka_run_group_tests_name("transformer_mnist conformance", tests, NULL, NULL);
}
