/* The WGAN-GP gradient penalty against PyTorch (issue 15): two small critics (conv + leaky_relu
 * + linear, and the same with layer_norm, both BatchNorm-free as WGAN-GP prescribes), the
 * gradient of D(x_hat) with respect to x_hat from tg_grad with create_graph, the penalty
 * 10 * mean((||grad_n|| - 1)^2) built from it, and every parameter's gradient of the critic loss
 * mean(D(fake)) - mean(D(real)) + penalty, against torch.autograd.grad(..., create_graph=True)
 * and loss.backward() (tests/golden/gen_wgan_gp.py). Tolerances: the conformance tests'
 * (test_gan_conformance.c), values to 1e-4 relative and parameters to 1e-3 absolute; a gradient
 * must also be within 1e-4 of its tensor's largest magnitude (+1e-6), so that a small tensor's
 * error (conv1.bias's gradient is below 0.05) shows too. Both agree to about 5e-7 here. */
#include "common.h"

#include "golden/wgan_gp_golden.h"

#include <stdio.h>

#define VALUE_RTOL 1e-4
#define GRAD_ATOL 1e-3
#define GRAD_SCALE_RTOL 1e-4

/* One critic's parameters and PyTorch's results for it. ln_w / ln_b NULL: no layer norm. */
typedef struct {
    const char *name;
    const float *conv1_w, *conv1_b, *conv2_w, *conv2_b, *ln_w, *ln_b, *fc_w, *fc_b;
    const float *d_real, *d_fake, *d_hat, *grad_x, *grad_norm, *penalty, *loss;
    /* Gradients of the loss, in the order of the parameters above. */
    const float *conv1_w_grad, *conv1_b_grad, *conv2_w_grad, *conv2_b_grad, *ln_w_grad, *ln_b_grad,
        *fc_w_grad, *fc_b_grad;
} critic_golden;

#define WGP_COMMON(p)                                                                              \
    .name = #p, .conv1_w = p##_conv1_weight, .conv1_b = p##_conv1_bias,                            \
    .conv2_w = p##_conv2_weight, .conv2_b = p##_conv2_bias, .fc_w = p##_fc_weight,                 \
    .fc_b = p##_fc_bias, .d_real = p##_d_real, .d_fake = p##_d_fake, .d_hat = p##_d_hat,           \
    .grad_x = p##_grad_x, .grad_norm = p##_grad_norm, .penalty = p##_penalty, .loss = p##_loss,    \
    .conv1_w_grad = p##_conv1_weight_grad, .conv1_b_grad = p##_conv1_bias_grad,                    \
    .conv2_w_grad = p##_conv2_weight_grad, .conv2_b_grad = p##_conv2_bias_grad,                    \
    .fc_w_grad = p##_fc_weight_grad, .fc_b_grad = p##_fc_bias_grad

static const critic_golden golden_a = {WGP_COMMON(wgp_a)};
static const critic_golden golden_b = {WGP_COMMON(wgp_b), .ln_w = wgp_b_ln_weight,
                                       .ln_b = wgp_b_ln_bias, .ln_w_grad = wgp_b_ln_weight_grad,
                                       .ln_b_grad = wgp_b_ln_bias_grad};

enum { CONV1_W, CONV1_B, CONV2_W, CONV2_B, LN_W, LN_B, FC_W, FC_B, N_PARAMS };
static const char *const param_names[N_PARAMS] = {"conv1.weight", "conv1.bias", "conv2.weight",
                                                  "conv2.bias",   "ln.weight",  "ln.bias",
                                                  "fc.weight",    "fc.bias"};

typedef struct {
    tg_tensor *p[N_PARAMS]; /* NULL for the layer norm's when the critic has none */
} critic;

static critic critic_new(const critic_golden *g)
{
    static const int64_t s_c1w[] = {4, 1, 4, 4}, s_c1b[] = {4}, s_c2w[] = {8, 4, 3, 3},
                         s_c2b[] = {8}, s_ln[] = {8, 3, 3}, s_fcw[] = {1, 72}, s_fcb[] = {1};
    critic c = {{NULL}};
    c.p[CONV1_W] = test_tensor_of(4, s_c1w, g->conv1_w, true);
    c.p[CONV1_B] = test_tensor_of(1, s_c1b, g->conv1_b, true);
    c.p[CONV2_W] = test_tensor_of(4, s_c2w, g->conv2_w, true);
    c.p[CONV2_B] = test_tensor_of(1, s_c2b, g->conv2_b, true);
    if (g->ln_w) {
        c.p[LN_W] = test_tensor_of(3, s_ln, g->ln_w, true);
        c.p[LN_B] = test_tensor_of(3, s_ln, g->ln_b, true);
    }
    c.p[FC_W] = test_tensor_of(2, s_fcw, g->fc_w, true);
    c.p[FC_B] = test_tensor_of(1, s_fcb, g->fc_b, true);
    return c;
}

static void critic_free(critic *c)
{
    for (int k = 0; k < N_PARAMS; k++)
        tg_tensor_release(c->p[k]);
}

/* D(x) -> [N, 1], as Critic.forward in gen_wgan_gp.py. */
static tg_tensor *critic_forward(const critic *c, tg_tensor *x)
{
    tg_tensor *h = tg_leaky_relu(tg_conv2d(x, c->p[CONV1_W], c->p[CONV1_B], 2, 1, 1), WGP_SLOPE);
    h = tg_conv2d(h, c->p[CONV2_W], c->p[CONV2_B], 2, 1, 1);
    if (c->p[LN_W])
        h = tg_layer_norm(h, 3, c->p[LN_W], c->p[LN_B], WGP_LN_EPS);
    h = tg_linear(tg_flatten(tg_leaky_relu(h, WGP_SLOPE), 1, -1), c->p[FC_W], c->p[FC_B]);
    if (!h)
        fail_msg("the critic's forward: %s", tg_last_error());
    return h;
}

/* Every element within rtol of PyTorch's, relative to the larger of |want| and 1e-2. */
static void check_values(const char *critic_name, const char *what, const tg_tensor *got,
                         const float *want)
{
    for (int64_t i = 0; i < got->numel; i++) {
        double tol = VALUE_RTOL * fmax(fabs((double)want[i]), 1e-2);
        if (!(fabs((double)got->data[i] - want[i]) <= tol))
            fail_msg("critic %s: %s[%lld] = %.9g, PyTorch gives %.9g (tolerance %.3g)", critic_name,
                     what, (long long)i, (double)got->data[i], (double)want[i], tol);
    }
}

/* The largest |got - want| of a parameter's gradient, failing above the tolerance (above). */
static double check_grad(const char *critic_name, int k, const tg_tensor *param, const float *want)
{
    const tg_tensor *g = param->grad;
    if (!g)
        fail_msg("critic %s: %s has no gradient", critic_name, param_names[k]);
    double worst = 0.0, scale = 0.0;
    int64_t at = 0;
    for (int64_t i = 0; i < g->numel; i++)
        scale = fmax(scale, fabs((double)want[i]));
    const double tol = fmin(GRAD_ATOL, GRAD_SCALE_RTOL * scale + 1e-6);
    for (int64_t i = 0; i < g->numel; i++) {
        double d = fabs((double)g->data[i] - want[i]);
        if (!(d <= worst)) {
            worst = d;
            at = i;
        }
    }
    if (!(worst <= tol))
        fail_msg("critic %s: d loss / d %s[%lld] = %.9g, PyTorch gives %.9g (tolerance %.3g)",
                 critic_name, param_names[k], (long long)at, (double)g->data[at], (double)want[at],
                 tol);
    return worst;
}

static void run_critic(const critic_golden *g)
{
    tg_tensor *real = test_tensor_of(WGP_X_NDIM, wgp_x_shape, wgp_real, false);
    tg_tensor *fake = test_tensor_of(WGP_X_NDIM, wgp_x_shape, wgp_fake, false);
    /* x_hat = eps * real + (1 - eps) * fake, per sample, a leaf that requires grad (PyTorch's
     * order of float32 operations). */
    tg_tensor *x_hat = tg_tensor_zeros(WGP_X_NDIM, wgp_x_shape);
    assert_non_null(x_hat);
    const int64_t per = x_hat->numel / 4;
    for (int64_t i = 0; i < x_hat->numel; i++) {
        const float e = wgp_eps[i / per];
        x_hat->data[i] = e * wgp_real[i] + (1.0f - e) * wgp_fake[i];
    }
    assert_int_equal(tg_tensor_set_requires_grad(x_hat, true), TG_OK);
    critic c = critic_new(g);

    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *d_hat = critic_forward(&c, x_hat);
    check_values(g->name, "D(x_hat)", d_hat, g->d_hat);

    /* First the gradient alone, without a history: the targeted first-order walk. */
    tg_tensor *grad = NULL;
    tg_tensor *ones = tg_ones(2, (const int64_t[]){4, 1});
    if (tg_grad(&d_hat, 1, &x_hat, 1, &ones, false, &grad) != TG_OK)
        fail_msg("critic %s: tg_grad: %s", g->name, tg_last_error());
    check_values(g->name, "dD/dx_hat", grad, g->grad_x);
    assert_null(grad->node);

    /* grad = torch.autograd.grad(D(x_hat), x_hat, ones, create_graph=True). */
    if (tg_grad(&d_hat, 1, &x_hat, 1, &ones, true, &grad) != TG_OK)
        fail_msg("critic %s: tg_grad with create_graph: %s", g->name, tg_last_error());
    assert_non_null(grad->node);
    check_values(g->name, "dD/dx_hat (create_graph)", grad, g->grad_x);
    for (int k = 0; k < N_PARAMS; k++)
        if (c.p[k])
            assert_null(c.p[k]->grad); /* tg_grad touches no leaf's .grad */
    assert_null(x_hat->grad);

    /* ||grad_n||_2 = sqrt(sum of squares over axes 1..3), without an epsilon, as PyTorch's
     * norm: its derivative is infinite at 0, but the gradient norm is never 0 here (0.09 to
     * 0.79 in these fixtures). */
    tg_tensor *norm = tg_sqrt(tg_sum_axis(tg_square(tg_flatten(grad, 1, -1)), 1, false));
    tg_tensor *penalty = tg_mul_scalar(tg_mean(tg_square(tg_sub_scalar(norm, 1.0f))), WGP_LAMBDA);
    tg_tensor *w_dist =
        tg_sub(tg_mean(critic_forward(&c, fake)), tg_mean(critic_forward(&c, real)));
    tg_tensor *loss = tg_add(w_dist, penalty);
    if (!loss)
        fail_msg("critic %s: the penalty: %s", g->name, tg_last_error());
    check_values(g->name, "||grad||", norm, g->grad_norm);
    check_values(g->name, "penalty", penalty, g->penalty);
    check_values(g->name, "loss", loss, g->loss);

    if (tg_backward(loss) != TG_OK)
        fail_msg("critic %s: tg_backward of the loss: %s", g->name, tg_last_error());
    const float *want[N_PARAMS] = {g->conv1_w_grad, g->conv1_b_grad, g->conv2_w_grad,
                                   g->conv2_b_grad, g->ln_w_grad,    g->ln_b_grad,
                                   g->fc_w_grad,    g->fc_b_grad};
    double worst = 0.0;
    for (int k = 0; k < N_PARAMS; k++)
        if (c.p[k])
            worst = fmax(worst, check_grad(g->name, k, c.p[k], want[k]));
    printf("critic %s: penalty %.7g (PyTorch %.7g), largest parameter gradient difference %.3g\n",
           g->name, (double)penalty->data[0], (double)g->penalty[0], worst);

    assert_int_equal(tg_tape_end(tape), TG_OK);
    critic_free(&c);
    tg_tensor_release(x_hat);
    tg_tensor_release(real);
    tg_tensor_release(fake);
}

/* conv + leaky_relu + linear. */
static void test_penalty_plain_critic(void **state)
{
    (void)state;
    run_critic(&golden_a);
}

/* The same with layer_norm over [C, H, W] after the second conv. */
static void test_penalty_layer_norm_critic(void **state)
{
    (void)state;
    run_critic(&golden_b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TG_TEST(test_penalty_plain_critic),
        TG_TEST(test_penalty_layer_norm_critic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
