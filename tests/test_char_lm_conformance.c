/* char_lm's whole model against PyTorch: one training step's forward and backward of model.c,
 * from the weights, batch and carried state that examples/char_lm/conformance/make_fixture.py
 * gave torch_char_lm.py's CharLM (reduced: vocab 13, embed 8, hidden 16, 3 tracks of 6
 * characters). The loss must agree to 1e-4 relative, and the logits, the last state and the
 * gradient of every parameter and of the carried state to 1e-3 absolute: the tolerances of
 * tests/test_gan_conformance.c. The largest differences are printed. */
#include "common.h"

#include "model.h"

#include <stdio.h>
#include <stdlib.h>

#define FIXTURE_NAME "char_lm.safetensors"
#define LOSS_RTOL 1e-4
#define ATOL 1e-3

/* The fixture: $TG_FIXTURES/<name> (meson test sets it), else the paths from the source root
 * or a build directory inside it. */
static tg_state_dict *load_fixture(void)
{
    char path[4096];
    const char *dir = getenv("TG_FIXTURES");
    const char *tries[] = {dir, "tests/fixtures", "../tests/fixtures"};
    for (size_t i = 0; i < sizeof tries / sizeof tries[0]; i++) {
        if (!tries[i])
            continue;
        snprintf(path, sizeof path, "%s/%s", tries[i], FIXTURE_NAME);
        FILE *f = fopen(path, "rb");
        if (!f)
            continue;
        fclose(f);
        tg_state_dict *sd = tg_data_load_safetensors(path);
        if (!sd)
            fail_msg("%s", tg_last_error());
        return sd;
    }
    fail_msg("%s not found (set TG_FIXTURES to the folder tests/fixtures)", FIXTURE_NAME);
    return NULL;
}

static tg_tensor *entry(const tg_state_dict *fx, const char *name)
{
    tg_tensor *t = tg_state_dict_get(fx, name);
    if (!t)
        fail_msg("the fixture has no tensor \"%s\"", name);
    return t;
}

static int64_t meta_int(const tg_state_dict *fx, const char *key)
{
    const char *v = tg_state_dict_meta(fx, key);
    int64_t x;
    if (!v || tg_parse_int(v, 1, 1 << 20, &x) != TG_OK)
        fail_msg("the fixture's metadata \"%s\" is missing or not a size", key);
    return x;
}

/* Largest |got - want| over the tensor; fails past ATOL, naming the element. */
static double compare(const char *what, const tg_tensor *got, const tg_tensor *want)
{
    if (!got)
        fail_msg("%s: no value (no gradient reached it?)", what);
    if (got->numel != want->numel)
        fail_msg("%s: %lld values, PyTorch has %lld", what, (long long)got->numel,
                 (long long)want->numel);
    double worst = 0.0;
    for (int64_t i = 0; i < got->numel; i++) {
        double d = fabs((double)got->data[i] - want->data[i]);
        if (!(d <= ATOL))
            fail_msg("%s[%lld] = %.7g, PyTorch gives %.7g", what, (long long)i,
                     (double)got->data[i], (double)want->data[i]);
        worst = fmax(worst, d);
    }
    return worst;
}

static void test_char_lm_matches_pytorch(void **state)
{
    (void)state;
    tg_state_dict *fx = load_fixture();
    tg_rng rng;
    tg_rng_seed(&rng, 1);
    tg_module *m =
        charlm_new(meta_int(fx, "vocab"), meta_int(fx, "embed"), meta_int(fx, "hidden"), &rng);
    assert_non_null(m);
    if (tg_module_load_state_dict(m, "model", fx) != TG_OK)
        fail_msg("%s", tg_last_error());
    tg_index *ids = tg_index_from_tensor(entry(fx, "ids"));
    tg_index *next = tg_index_from_tensor(entry(fx, "next"));
    tg_tensor *h0 = tg_tensor_clone(entry(fx, "h0"));
    assert_non_null(ids);
    assert_non_null(next);
    assert_int_equal(tg_tensor_set_requires_grad(h0, true), TG_OK);

    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *h_last;
    tg_tensor *logits = charlm_forward(m, ids, h0, &h_last);
    if (!logits)
        fail_msg("%s", tg_last_error());
    double worst = compare("logits", logits, entry(fx, "logits"));
    worst = fmax(worst, compare("h_last", h_last, entry(fx, "h_last")));
    tg_tensor *loss = charlm_loss(m, ids, next, h0, &h_last);
    if (tg_backward(loss) != TG_OK)
        fail_msg("%s", tg_last_error());
    const double want = tg_tensor_item(entry(fx, "loss")), got = tg_tensor_item(loss);
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
        worst = fmax(worst, compare(key, tg_tensor_grad(params[i]), entry(fx, key)));
    }
    worst = fmax(worst, compare("grad.h0", tg_tensor_grad(h0), entry(fx, "grad.h0")));
    printf("char_lm vs PyTorch: loss %.7g (relative difference %.1e), largest difference of the "
           "logits, last state and %lld gradients %.1e\n",
           got, loss_rel, (long long)n + 1, worst);
    free(params);
    free(names);
    tg_release(h0);
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
