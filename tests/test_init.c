/* nn/init.c: torch.nn.init's gains, fans and initialisers (bounds and moments of what they
 * draw), their argument errors, tg_module_apply's visiting order and early stop, and
 * tg_nn_init_paddle's distributions on a model with every layer type it knows.
 *
 * Statistical checks draw ~100k values from a fixed seed and allow 5 standard errors: a correct
 * initialiser fails one with probability ~6e-7 (so another seed would pass as well), while the
 * mistakes worth catching (fan_out for fan_in, a missing sqrt(3) or gain) move the moment by
 * tens of standard errors. */
#include "common.h"

#include "nn.h"

#include <stdlib.h>

/* Fails the test with the library's message when m is NULL. */
static tg_module *must(tg_module *m)
{
    if (!m)
        fail_msg("constructor failed: %s", tg_last_error());
    return m;
}

/* Fails the test with the library's message when st is not TG_OK. */
static void ok(tg_status st)
{
    if (st != TG_OK)
        fail_msg("%s: %s", tg_status_name(st), tg_last_error());
}

/* Sample mean and standard deviation (in double), smallest and largest value of t. */
typedef struct {
    double n, mean, std, min, max;
} sample;

static sample sample_of(const tg_tensor *t)
{
    sample s = {.n = (double)t->numel, .min = INFINITY, .max = -INFINITY};
    double sum = 0, sum2 = 0;
    for (int64_t i = 0; i < t->numel; i++) {
        double v = t->data[i];
        sum += v;
        s.min = fmin(s.min, v);
        s.max = fmax(s.max, v);
    }
    s.mean = sum / s.n;
    for (int64_t i = 0; i < t->numel; i++)
        sum2 += (t->data[i] - s.mean) * (t->data[i] - s.mean);
    s.std = sqrt(sum2 / s.n);
    return s;
}

/* U(lo, hi): every value inside (up to float rounding of the bounds, which the library computes
 * in float), the extremes within 0.1% of the range from the bounds (with 100k values a gap that
 * wide has probability e^-100), mean and std within 5 standard errors. The sample std of a
 * uniform has standard error std * sqrt(0.2 / n) (its kurtosis is 9/5). */
static void assert_uniform(const char *what, const tg_tensor *t, double lo, double hi)
{
    sample s = sample_of(t);
    double width = hi - lo, slack = 1e-6 * fmax(fabs(lo), fabs(hi));
    double mean = (lo + hi) / 2, std = width / sqrt(12.0);
    if (s.min < lo - slack || s.max > hi + slack)
        fail_msg("%s: values in [%.7g, %.7g], outside [%.7g, %.7g]", what, s.min, s.max, lo, hi);
    if (s.min > lo + 1e-3 * width || s.max < hi - 1e-3 * width)
        fail_msg("%s: values in [%.7g, %.7g], expected to reach close to [%.7g, %.7g]", what, s.min,
                 s.max, lo, hi);
    if (fabs(s.mean - mean) > 5 * std / sqrt(s.n))
        fail_msg("%s: mean %.6g, expected %.6g (n %.0f)", what, s.mean, mean, s.n);
    if (fabs(s.std - std) > 5 * std * sqrt(0.2 / s.n))
        fail_msg("%s: std %.6g, expected %.6g (n %.0f)", what, s.std, std, s.n);
}

/* N(mean, std^2): mean within 5 standard errors (std / sqrt(n)), std within 5 of its own
 * (std / sqrt(2n)), and the share of values within one std of the mean 68.27% within 5
 * standard errors (sqrt(p (1 - p) / n)) — a uniform of the same std has 57.7%, so this tells
 * a normal initialiser from a uniform one. */
static void assert_normal(const char *what, const tg_tensor *t, double mean, double std)
{
    sample s = sample_of(t);
    if (fabs(s.mean - mean) > 5 * std / sqrt(s.n))
        fail_msg("%s: mean %.6g, expected %.6g (n %.0f)", what, s.mean, mean, s.n);
    if (fabs(s.std - std) > 5 * std / sqrt(2 * s.n))
        fail_msg("%s: std %.6g, expected %.6g (n %.0f)", what, s.std, std, s.n);
    double inside = 0, p = erf(1 / sqrt(2.0));
    for (int64_t i = 0; i < t->numel; i++)
        inside += fabs(t->data[i] - mean) <= std;
    inside /= s.n;
    if (fabs(inside - p) > 5 * sqrt(p * (1 - p) / s.n))
        fail_msg("%s: %.4f of the values within one std of the mean, a normal has %.4f", what,
                 inside, p);
}

/* Every element of t equals value exactly. */
static void assert_all_equal(const char *what, const tg_tensor *t, float value)
{
    for (int64_t i = 0; i < t->numel; i++)
        if (t->data[i] != value)
            fail_msg("%s[%lld] = %.9g, expected exactly %.9g", what, (long long)i,
                     (double)t->data[i], (double)value);
}

/* ---- gains and fans ---------------------------------------------------------------------- */

static void test_gains(void **state)
{
    (void)state;
    /* torch.nn.init.calculate_gain's values. */
    assert_close(tg_init_gain(TG_NL_LINEAR, 0.0f), 1.0, 1e-7);
    assert_close(tg_init_gain(TG_NL_RELU, 0.0f), sqrt(2.0), 1e-6);
    assert_close(tg_init_gain(TG_NL_TANH, 0.0f), 5.0 / 3.0, 1e-6);
    assert_close(tg_init_gain(TG_NL_SELU, 0.0f), 0.75, 1e-7);
    assert_close(tg_init_gain(TG_NL_LEAKY_RELU, 0.2f), sqrt(2.0 / (1 + 0.2 * 0.2)), 1e-6);
    assert_close(tg_init_gain(TG_NL_LEAKY_RELU, 0.01f), sqrt(2.0 / (1 + 0.01 * 0.01)), 1e-6);
    /* Slope 0 is ReLU; slope sqrt(5) (PyTorch's Linear default) gives 1/sqrt(3). */
    assert_close(tg_init_gain(TG_NL_LEAKY_RELU, 0.0f), sqrt(2.0), 1e-6);
    assert_close(tg_init_gain(TG_NL_LEAKY_RELU, sqrtf(5.0f)), 1 / sqrt(3.0), 1e-6);
    /* Only leaky ReLU reads param. */
    assert_close(tg_init_gain(TG_NL_RELU, 0.5f), sqrt(2.0), 1e-6);
    assert_close(tg_init_gain(TG_NL_TANH, 0.5f), 5.0 / 3.0, 1e-6);
}

/* Asserts tg_init_fans(w) gives fan_in and fan_out, also with either output pointer NULL. */
static void assert_fans(const tg_tensor *w, int64_t fan_in, int64_t fan_out)
{
    int64_t fi = -1, fo = -1;
    ok(tg_init_fans(w, &fi, &fo));
    assert_int_equal(fi, fan_in);
    assert_int_equal(fo, fan_out);
    fi = fo = -1;
    ok(tg_init_fans(w, &fi, NULL));
    assert_int_equal(fi, fan_in);
    ok(tg_init_fans(w, NULL, &fo));
    assert_int_equal(fo, fan_out);
}

static void test_fans(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 1);
    /* The layers' own weights, so the layouts are the ones the constructors make. Linear(5, 3):
     * [out 3, in 5]. */
    tg_module *lin = must(tg_nn_linear(5, 3, true, &rng));
    assert_fans(tg_module_param(lin, "weight"), 5, 3);
    /* Conv2d(4, 8, 3): [out 8, in 4, 3, 3]; fans times the receptive field 9. */
    tg_module *conv = must(tg_nn_conv2d(4, 8, 3, 1, 1, 1, true, &rng));
    assert_fans(tg_module_param(conv, "weight"), 4 * 9, 8 * 9);
    /* ConvTranspose2d(6, 2, 4): [in 6, out 2, 4, 4]; dimension 1 is still "in" (PyTorch's rule),
     * so fan_in counts the 2 output channels. */
    tg_module *convt = must(tg_nn_conv_transpose2d(6, 2, 4, 2, 1, 0, true, &rng));
    assert_fans(tg_module_param(convt, "weight"), 2 * 16, 6 * 16);
    /* Any rank from 2 up: the receptive field is the product of the dimensions after 1. */
    tg_tensor *w3 = tg_tensor_zeros(TG_DIMS(4, 3, 5));
    assert_fans(w3, 15, 20);
    tg_tensor *w5 = tg_tensor_zeros(TG_DIMS(2, 3, 2, 2, 2));
    assert_fans(w5, 24, 16);
    tg_tensor_release(w3);
    tg_tensor_release(w5);
    tg_module_free(lin);
    tg_module_free(conv);
    tg_module_free(convt);
}

/* ---- the initialisers -------------------------------------------------------------------- */

/* A [200, 500] tensor: 100k values, fan_in 500 and fan_out 200, far enough apart that a fan
 * mix-up moves the std by a factor 1.58. */
#define FAN_OUT 200
#define FAN_IN 500

static tg_tensor *big_weight(void)
{
    tg_tensor *t = tg_tensor_zeros(TG_DIMS(FAN_OUT, FAN_IN));
    assert_non_null(t);
    return t;
}

static void test_uniform_normal_constant(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 2);
    tg_tensor *t = big_weight();
    uint64_t v = tg_tensor_version(t);
    ok(tg_init_uniform_(t, &rng, -0.3f, 0.7f));
    assert_true(tg_tensor_version(t) > v); /* in-place write recorded */
    assert_uniform("uniform_(-0.3, 0.7)", t, -0.3, 0.7);

    v = tg_tensor_version(t);
    ok(tg_init_normal_(t, &rng, 1.5f, 0.4f));
    assert_true(tg_tensor_version(t) > v);
    assert_normal("normal_(1.5, 0.4)", t, 1.5, 0.4);
    /* std 0 is allowed (torch too): every value is the mean. */
    ok(tg_init_normal_(t, &rng, -2.0f, 0.0f));
    assert_all_equal("normal_(-2, 0)", t, -2.0f);

    v = tg_tensor_version(t);
    ok(tg_init_constant_(t, 0.25f));
    assert_true(tg_tensor_version(t) > v);
    assert_all_equal("constant_(0.25)", t, 0.25f);
    /* A parameter (requires_grad) is filled the same way. */
    tg_tensor *p = test_tensor_of(TG_DIMS(3), (const float[]){1, 2, 3}, true);
    ok(tg_init_constant_(p, -1.0f));
    assert_all_equal("constant_ on a parameter", p, -1.0f);
    tg_tensor_release(p);
    tg_tensor_release(t);
}

static void test_xavier(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 3);
    tg_tensor *t = big_weight();
    /* std = gain * sqrt(2 / (fan_in + fan_out)), uniform bound sqrt(3) std. */
    double std1 = sqrt(2.0 / (FAN_IN + FAN_OUT));
    uint64_t v = tg_tensor_version(t);
    ok(tg_init_xavier_uniform_(t, &rng, 1.0f));
    assert_true(tg_tensor_version(t) > v);
    assert_uniform("xavier_uniform_ gain 1", t, -sqrt(3.0) * std1, sqrt(3.0) * std1);
    float tanh_gain = tg_init_gain(TG_NL_TANH, 0.0f);
    ok(tg_init_xavier_uniform_(t, &rng, tanh_gain));
    assert_uniform("xavier_uniform_ tanh gain", t, -sqrt(3.0) * std1 * 5 / 3,
                   sqrt(3.0) * std1 * 5 / 3);
    v = tg_tensor_version(t);
    ok(tg_init_xavier_normal_(t, &rng, 1.0f));
    assert_true(tg_tensor_version(t) > v);
    assert_normal("xavier_normal_ gain 1", t, 0.0, std1);
    tg_tensor_release(t);

    /* A convolution's layout [out 64, in 32, 7, 7] (100352 values): both fans times 49. */
    tg_tensor *c = tg_tensor_zeros(TG_DIMS(64, 32, 7, 7));
    ok(tg_init_xavier_normal_(c, &rng, 0.5f));
    assert_normal("xavier_normal_ conv gain 0.5", c, 0.0, 0.5 * sqrt(2.0 / ((64 + 32) * 49)));
    tg_tensor_release(c);
}

static void test_kaiming(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 4);
    tg_tensor *t = big_weight();
    /* std = gain / sqrt(fan), uniform bound sqrt(3) std. */
    float relu = tg_init_gain(TG_NL_RELU, 0.0f);
    uint64_t v = tg_tensor_version(t);
    ok(tg_init_kaiming_normal_(t, &rng, relu, TG_FAN_IN));
    assert_true(tg_tensor_version(t) > v);
    assert_normal("kaiming_normal_ relu fan_in", t, 0.0, sqrt(2.0 / FAN_IN));
    ok(tg_init_kaiming_normal_(t, &rng, relu, TG_FAN_OUT));
    assert_normal("kaiming_normal_ relu fan_out", t, 0.0, sqrt(2.0 / FAN_OUT));
    /* PyTorch's Linear default, kaiming_uniform_(a = sqrt(5)): bound 1 / sqrt(fan_in). */
    v = tg_tensor_version(t);
    ok(tg_init_kaiming_uniform_(t, &rng, tg_init_gain(TG_NL_LEAKY_RELU, sqrtf(5.0f)), TG_FAN_IN));
    assert_true(tg_tensor_version(t) > v);
    assert_uniform("kaiming_uniform_ a=sqrt(5) fan_in", t, -1 / sqrt(FAN_IN), 1 / sqrt(FAN_IN));
    ok(tg_init_kaiming_uniform_(t, &rng, relu, TG_FAN_OUT));
    assert_uniform("kaiming_uniform_ relu fan_out", t, -sqrt(6.0 / FAN_OUT), sqrt(6.0 / FAN_OUT));
    tg_tensor_release(t);

    /* A transposed convolution's [in 16, out 64, 10, 10] (102400 values): fan_in is dimension
     * 1 times the kernel, 64 * 100, as PyTorch computes it. */
    tg_tensor *c = tg_tensor_zeros(TG_DIMS(16, 64, 10, 10));
    ok(tg_init_kaiming_normal_(c, &rng, 1.0f, TG_FAN_IN));
    assert_normal("kaiming_normal_ conv-transpose fan_in", c, 0.0, 1 / sqrt(64 * 100.0));
    tg_tensor_release(c);
}

/* Asserts that a call returned want with a message naming fn and holding what, and clears it. */
static void assert_fails(tg_status got, tg_status want, const char *fn, const char *what)
{
    if (got != want)
        fail_msg("%s returned %s, expected %s (\"%s\")", fn, tg_status_name(got),
                 tg_status_name(want), tg_last_error());
    assert_error_contains(fn);
    assert_error_contains(what);
    tg_clear_error();
}

/* Bad arguments: a status and a message naming the function called and the problem; the
 * tensor is left as it was (values and version). */
static void test_init_errors(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 5);
    tg_tensor *w = tg_tensor_full(TG_DIMS(3, 4), 7.0f);
    tg_tensor *v1 = tg_tensor_full(TG_DIMS(5), 7.0f), *s0 = tg_tensor_scalar(7.0f);
    uint64_t vw = tg_tensor_version(w), vv = tg_tensor_version(v1);

    assert_fails(tg_init_uniform_(NULL, &rng, 0, 1), TG_ERR_ARG,
                 "tg_init_uniform_:", "tensor is NULL");
    assert_fails(tg_init_uniform_(w, NULL, 0, 1), TG_ERR_ARG, "tg_init_uniform_:", "rng is NULL");
    assert_fails(tg_init_uniform_(w, &rng, 1, 0), TG_ERR_ARG, "tg_init_uniform_:", "bounds [1, 0)");
    assert_fails(tg_init_uniform_(w, &rng, 0, INFINITY), TG_ERR_ARG,
                 "tg_init_uniform_:", "need finite lo <= hi");
    assert_fails(tg_init_uniform_(w, &rng, NAN, 1), TG_ERR_ARG,
                 "tg_init_uniform_:", "need finite lo <= hi");
    assert_fails(tg_init_normal_(NULL, &rng, 0, 1), TG_ERR_ARG,
                 "tg_init_normal_:", "tensor is NULL");
    assert_fails(tg_init_normal_(w, NULL, 0, 1), TG_ERR_ARG, "tg_init_normal_:", "rng is NULL");
    assert_fails(tg_init_normal_(w, &rng, 0, -1), TG_ERR_ARG,
                 "tg_init_normal_:", "std -1: need finite values and std >= 0");
    assert_fails(tg_init_normal_(w, &rng, NAN, 1), TG_ERR_ARG, "tg_init_normal_:", "mean nan");
    assert_fails(tg_init_normal_(w, &rng, 0, INFINITY), TG_ERR_ARG, "tg_init_normal_:", "std inf");
    assert_fails(tg_init_constant_(NULL, 1), TG_ERR_ARG, "tg_init_constant_:", "tensor is NULL");

    int64_t fi = -1;
    assert_fails(tg_init_fans(NULL, &fi, NULL), TG_ERR_ARG, "tg_init_fans:", "tensor is NULL");
    assert_fails(tg_init_fans(v1, &fi, NULL), TG_ERR_SHAPE,
                 "tg_init_fans:", "a [5] tensor has no fan in and out");
    assert_fails(tg_init_fans(s0, &fi, NULL), TG_ERR_SHAPE,
                 "tg_init_fans:", "a [] tensor has no fan in and out");
    assert_int_equal(fi, -1); /* nothing written on failure */

    /* Xavier and Kaiming need fans: a vector or a scalar is a shape error naming the
     * initialiser called (not only the helper that found it). */
    assert_fails(tg_init_xavier_uniform_(v1, &rng, 1), TG_ERR_SHAPE,
                 "tg_init_xavier_uniform_:", "a [5] tensor has no fan in and out");
    assert_fails(tg_init_xavier_normal_(s0, &rng, 1), TG_ERR_SHAPE,
                 "tg_init_xavier_normal_:", "a [] tensor has no fan in and out");
    assert_fails(tg_init_kaiming_uniform_(v1, &rng, 1, TG_FAN_IN), TG_ERR_SHAPE,
                 "tg_init_kaiming_uniform_:", "a [5] tensor has no fan in and out");
    assert_fails(tg_init_kaiming_normal_(v1, &rng, 1, TG_FAN_OUT), TG_ERR_SHAPE,
                 "tg_init_kaiming_normal_:", "a [5] tensor has no fan in and out");
    assert_fails(tg_init_xavier_uniform_(NULL, &rng, 1), TG_ERR_ARG,
                 "tg_init_xavier_uniform_:", "tensor is NULL");
    assert_fails(tg_init_xavier_normal_(w, NULL, 1), TG_ERR_ARG,
                 "tg_init_xavier_normal_:", "rng is NULL");
    assert_fails(tg_init_xavier_uniform_(w, &rng, -1), TG_ERR_ARG,
                 "tg_init_xavier_uniform_:", "gain -1: need a finite gain >= 0");
    assert_fails(tg_init_kaiming_uniform_(NULL, &rng, 1, TG_FAN_IN), TG_ERR_ARG,
                 "tg_init_kaiming_uniform_:", "tensor is NULL");
    assert_fails(tg_init_kaiming_normal_(w, NULL, 1, TG_FAN_IN), TG_ERR_ARG,
                 "tg_init_kaiming_normal_:", "rng is NULL");
    assert_fails(tg_init_kaiming_normal_(w, &rng, NAN, TG_FAN_IN), TG_ERR_ARG,
                 "tg_init_kaiming_normal_:", "gain nan");
    assert_fails(tg_init_kaiming_uniform_(w, &rng, 1, (tg_fan_mode)7), TG_ERR_ARG,
                 "tg_init_kaiming_uniform_:", "mode 7 is neither TG_FAN_IN nor TG_FAN_OUT");
    assert_fails(tg_init_kaiming_normal_(w, &rng, 1, (tg_fan_mode)-1), TG_ERR_ARG,
                 "tg_init_kaiming_normal_:", "mode -1");

    assert_all_equal("w after refused calls", w, 7.0f);
    assert_all_equal("vector after refused calls", v1, 7.0f);
    assert_true(tg_tensor_version(w) == vw);
    assert_true(tg_tensor_version(v1) == vv);
    tg_tensor_release(w);
    tg_tensor_release(v1);
    tg_tensor_release(s0);
}

/* ---- tg_module_apply --------------------------------------------------------------------- */

/* The modules visited, in order; visiting stop_at returns an error. */
typedef struct {
    tg_module *seen[16];
    int n;
    const tg_module *stop_at;
} visits;

static tg_status record(tg_module *m, void *ctx)
{
    visits *v = ctx;
    if (v->n < 16)
        v->seen[v->n] = m;
    v->n++;
    if (m == v->stop_at)
        return tg_set_error(TG_ERR_STATE, "record: stop at %s", tg_module_type(m));
    return TG_OK;
}

/* Sequential(Linear, Sequential(ReLU, Linear), Tanh): PyTorch's apply visits children depth
 * first in order, each module after its children, the root last. */
static void test_module_apply_order_and_stop(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 6);
    tg_module *root = must(TG_NN_SEQUENTIAL(
        tg_nn_linear(2, 3, true, &rng),
        TG_NN_SEQUENTIAL(tg_nn_relu(), tg_nn_linear(3, 1, false, &rng)), tg_nn_tanh()));
    tg_module *inner = tg_module_child(root, "1");
    tg_module *want[] = {tg_module_child(root, "0"),  tg_module_child(inner, "0"),
                         tg_module_child(inner, "1"), inner,
                         tg_module_child(root, "2"),  root};
    const int n_want = (int)(sizeof want / sizeof want[0]);

    visits v = {0};
    ok(tg_module_apply(root, record, &v));
    assert_int_equal(v.n, n_want);
    for (int i = 0; i < n_want; i++)
        if (v.seen[i] != want[i])
            fail_msg("visit %d: %s \"%s\", expected %s \"%s\"", i, tg_module_type(v.seen[i]),
                     tg_module_name(v.seen[i]), tg_module_type(want[i]), tg_module_name(want[i]));

    /* The first failure ends the walk and is returned with its message: stopping at the ReLU
     * (the second visit) leaves the inner Linear, both Sequentials and the Tanh unvisited. */
    v = (visits){.stop_at = want[1]};
    assert_int_equal(tg_module_apply(root, record, &v), TG_ERR_STATE);
    assert_error_contains("record: stop at ReLU");
    assert_int_equal(v.n, 2);
    assert_ptr_equal(v.seen[0], want[0]);
    assert_ptr_equal(v.seen[1], want[1]);
    tg_clear_error();
    /* A failure at a parent (after its children) stops its later siblings too. */
    v = (visits){.stop_at = inner};
    assert_int_equal(tg_module_apply(root, record, &v), TG_ERR_STATE);
    assert_int_equal(v.n, 4);
    tg_clear_error();

    /* A module without children is visited once. */
    v = (visits){0};
    ok(tg_module_apply(want[0], record, &v));
    assert_int_equal(v.n, 1);
    assert_ptr_equal(v.seen[0], want[0]);

    assert_fails(tg_module_apply(NULL, record, &v), TG_ERR_ARG,
                 "tg_module_apply:", "module is NULL");
    assert_fails(tg_module_apply(root, NULL, &v), TG_ERR_ARG, "tg_module_apply:", "fn is NULL");
    tg_module_free(root);
}

/* ---- tg_nn_init_paddle ------------------------------------------------------------------- */

/* Fills m's parameter name with value, a marker the initialiser must overwrite. */
static void mark(tg_module *m, const char *name, float value)
{
    ok(tg_tensor_fill_(tg_module_param(m, name), value));
}

/* Sequential(Linear(500, 200), Sequential(Conv2d(32, 128, 5), BatchNorm2d(128), ReLU(),
 * ConvTranspose2d(128, 32, 5), Conv2d(4, 4, 3, bias=False))): each weight ~100k values, with
 * fan_in and fan_out far apart so a fan mix-up shows. */
static void test_init_paddle(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 7);
    tg_module *m = must(TG_NN_SEQUENTIAL(
        tg_nn_linear(500, 200, true, &rng),
        TG_NN_SEQUENTIAL(tg_nn_conv2d(32, 128, 5, 1, 2, 1, true, &rng), tg_nn_batch_norm2d(128),
                         tg_nn_relu(), tg_nn_conv_transpose2d(128, 32, 5, 2, 2, 1, true, &rng),
                         tg_nn_conv2d(4, 4, 3, 1, 1, 1, false, &rng))));
    tg_module *lin = tg_module_child(m, "0"), *inner = tg_module_child(m, "1");
    tg_module *conv = tg_module_child(inner, "0"), *bn = tg_module_child(inner, "1");
    tg_module *convt = tg_module_child(inner, "3"), *conv_nb = tg_module_child(inner, "4");
    /* BatchNorm is built with Paddle's weight 1 and bias 0 already: markers make "exactly 1"
     * and "exactly 0" below the initialiser's doing. */
    mark(lin, "bias", 0.5f);
    mark(conv, "bias", 0.5f);
    mark(convt, "bias", 0.5f);
    mark(bn, "weight", 0.5f);
    mark(bn, "bias", 0.5f);
    int64_t n;
    tg_tensor **ps = tg_module_parameters(m, &n);
    assert_int_equal(n, 9);
    uint64_t versions[9];
    for (int64_t i = 0; i < n; i++)
        versions[i] = tg_tensor_version(ps[i]);

    ok(tg_nn_init_paddle(m, &rng));
    for (int64_t i = 0; i < n; i++)
        if (!(tg_tensor_version(ps[i]) > versions[i]))
            fail_msg("parameter %lld: version not bumped by the re-initialisation", (long long)i);
    free(ps);

    /* Linear: Xavier-uniform, bound sqrt(6 / (500 + 200)) (PyTorch's own would be
     * 1 / sqrt(500), half of it). */
    double b = sqrt(6.0 / (500 + 200));
    assert_uniform("Linear weight", tg_module_param(lin, "weight"), -b, b);
    assert_all_equal("Linear bias", tg_module_param(lin, "bias"), 0.0f);
    /* Conv2d: Normal(0, sqrt(2 / (k * k * in_ch))) = sqrt(2 / 800); fan_out would give half. */
    assert_normal("Conv2d weight", tg_module_param(conv, "weight"), 0.0, sqrt(2.0 / (25 * 32)));
    assert_all_equal("Conv2d bias", tg_module_param(conv, "bias"), 0.0f);
    /* ConvTranspose2d: Xavier-uniform over its [128, 32, 5, 5] weight. */
    b = sqrt(6.0 / ((128 + 32) * 25));
    assert_uniform("ConvTranspose2d weight", tg_module_param(convt, "weight"), -b, b);
    assert_all_equal("ConvTranspose2d bias", tg_module_param(convt, "bias"), 0.0f);
    /* BatchNorm: scale 1, shift 0. */
    assert_all_equal("BatchNorm2d weight", tg_module_param(bn, "weight"), 1.0f);
    assert_all_equal("BatchNorm2d bias", tg_module_param(bn, "bias"), 0.0f);
    /* A Conv2d without bias still gets its weight drawn: its 144 values are too few for the
     * moments, so only spread and scale (nothing beyond 6 std of sqrt(2 / 36)). */
    const tg_tensor *w = tg_module_param(conv_nb, "weight");
    sample s = sample_of(w);
    assert_true(s.std > 0 && fmax(-s.min, s.max) < 6 * sqrt(2.0 / 36));

    assert_fails(tg_nn_init_paddle(m, NULL), TG_ERR_ARG, "tg_nn_init_paddle:", "rng is NULL");
    assert_fails(tg_nn_init_paddle(NULL, &rng), TG_ERR_ARG, "tg_nn_init_paddle:", "module is NULL");
    tg_module_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TG_TEST(test_gains),
        TG_TEST(test_fans),
        TG_TEST(test_uniform_normal_constant),
        TG_TEST(test_xavier),
        TG_TEST(test_kaiming),
        TG_TEST(test_init_errors),
        TG_TEST(test_module_apply_order_and_stop),
        TG_TEST(test_init_paddle),
    };
    return cmocka_run_group_tests_name("init", tests, NULL, NULL);
}
