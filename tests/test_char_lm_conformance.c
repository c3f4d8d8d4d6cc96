/* char_lm's whole model against PyTorch: one training step's forward and backward of model.c,
 * from the weights, batch and carried state that examples/char_lm/conformance/make_fixture.py
 * gave torch_char_lm.py's CharLM (reduced: vocab 13, embed 8, hidden 16, 3 tracks of 6
 * characters). The loss must agree to 1e-4 relative, and the logits, the last state and the
 * gradient of every parameter and of the carried state to 1e-3 absolute: the tolerances of
 * tests/test_gan_conformance.c. The largest differences are printed. */
#include "common.h"

#include "conformance.h"
#include "model.h"

#define FIXTURE_NAME "char_lm.safetensors"
#define LOSS_RTOL 1e-4
#define ATOL 1e-3

/* Largest |got - want| over the tensor; fails past ATOL, naming the element. */
static double compare(const char *what, const tg_tensor *got, const tg_tensor *want)
{
    if (!got)
        fail_msg("%s: no value (no gradient reached it?)", what);
    if (got->numel != want->numel)
        fail_msg("%s: %lld values, PyTorch has %lld", what, (long long)got->numel,
                 (long long)want->numel);
    int64_t i;
    const double worst = fixture_max_diff(got, want, &i);
    if (!(worst <= ATOL))
        fail_msg("%s[%lld] = %.7g, PyTorch gives %.7g", what, (long long)i, (double)got->data[i],
                 (double)want->data[i]);
    return worst;
}

static void test_char_lm_matches_pytorch(void **state)
{
    (void)state;
    tg_state_dict *fx = fixture_load(FIXTURE_NAME);
    tg_rng rng;
    tg_rng_seed(&rng, 1);
    tg_module *m = charlm_new(fixture_meta_int(fx, "vocab"), fixture_meta_int(fx, "embed"),
                              fixture_meta_int(fx, "hidden"), &rng);
    assert_non_null(m);
    if (tg_module_load_state_dict(m, "model", fx) != TG_OK)
        fail_msg("%s", tg_last_error());
    tg_index *ids = tg_index_from_tensor(fixture_entry(fx, "ids"));
    tg_index *next = tg_index_from_tensor(fixture_entry(fx, "next"));
    tg_tensor *h0 = tg_tensor_clone(fixture_entry(fx, "h0"));
    assert_non_null(ids);
    assert_non_null(next);
    assert_int_equal(tg_tensor_set_requires_grad(h0, true), TG_OK);

    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *h_last;
    tg_tensor *logits = charlm_forward(m, ids, h0, &h_last);
    if (!logits)
        fail_msg("%s", tg_last_error());
    double worst = compare("logits", logits, fixture_entry(fx, "logits"));
    worst = fmax(worst, compare("h_last", h_last, fixture_entry(fx, "h_last")));
    tg_tensor *loss = charlm_loss(m, ids, next, h0, &h_last);
    if (tg_backward(loss) != TG_OK)
        fail_msg("%s", tg_last_error());
    const double want = tg_tensor_item(fixture_entry(fx, "loss")), got = tg_tensor_item(loss);
    const double loss_rel = fabs(got - want) / fabs(want);
    if (!(loss_rel <= LOSS_RTOL))
        fail_msg("loss %.7g, PyTorch gives %.7g", got, want);
    tg_tape_end(tape);

    int64_t n;
    tg_tensor **params = tg_module_parameters(m, &n);
    char **names = tg_module_parameter_names(m, NULL, &n);
    assert_int_equal(n, 7); /* embed.weight, cell.{weight,bias}_{ih,hh}, head.{weight,bias} */
    for (int64_t i = 0; i < n; i++) {
        char key[160];
        snprintf(key, sizeof key, "grad.%s", names[i]);
        worst = fmax(worst, compare(key, tg_tensor_grad(params[i]), fixture_entry(fx, key)));
    }
    worst = fmax(worst, compare("grad.h0", tg_tensor_grad(h0), fixture_entry(fx, "grad.h0")));
    printf("char_lm vs PyTorch: loss %.7g (relative difference %.1e), largest difference of the "
           "logits, last state and %lld gradients %.1e\n",
           got, loss_rel, (long long)n + 1, worst);
    free(params);
    free(names);
    tg_tensor_release(h0);
    tg_index_release(ids);
    tg_index_release(next);
    tg_module_free(m);
    tg_state_dict_free(fx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {TG_TEST(test_char_lm_matches_pytorch)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
