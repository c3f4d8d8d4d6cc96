/* demo_regression — the smallest complete training run with tapegrad.
 *
 * A multilayer perceptron 1 -> 32 -> 32 -> 1 with tanh learns y = sin(3x) from 256 points of
 * [-1, 1] by full-batch Adam. It prints the mean squared error every few hundred steps, and exits non-zero if anything fails, if the loss does
 * not fall to a tenth of its first value, or if a tensor is still alive at the end.
 *
 *     demo_regression [steps]      (default 2000)
 *
 * Only the public API is used: this is what a program of yours looks like. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "tapegrad.h"

enum { N_POINTS = 256, HIDDEN = 32, N_PARAMS = 6, PRINT_EVERY = 200 };

/* Adam with PyTorch's betas and eps; a larger step than its default 1e-3 suits this tiny
 * full-batch problem. */
static const float LEARNING_RATE = 5e-3f;

/* A trainable tensor drawn as PyTorch's nn.Linear draws it: U(-1/sqrt(fan_in), 1/sqrt(fan_in)). */
static tg_tensor *param_new(tg_rng *rng, int ndim, const int64_t *shape, int64_t fan_in)
{
    tg_tensor *t = tg_tensor_new(ndim, shape);
    float bound = 1.0f / sqrtf((float)fan_in);
    if (!t || tg_tensor_uniform_(t, rng, -bound, bound) != TG_OK ||
        tg_tensor_set_requires_grad(t, true) != TG_OK) {
        tg_tensor_release(t);
        return NULL;
    }
    return t;
}

/* The model: p holds w1, b1, w2, b2, w3, b3. A NULL anywhere flows through to the result, so
 * one check after the call is enough. */
static tg_tensor *mlp_forward(tg_tensor *const *p, tg_tensor *x)
{
    tg_tensor *h = tg_tanh(tg_linear(x, p[0], p[1]));
    h = tg_tanh(tg_linear(h, p[2], p[3]));
    return tg_linear(h, p[4], p[5]);
}

int main(int argc, char **argv)
{
    long steps = argc > 1 ? strtol(argv[1], NULL, 10) : 2000;
    if (steps < 1 || steps > 10000000) {
        fprintf(stderr, "usage: %s [steps]   (steps from 1 to 10000000)\n", argv[0]);
        return 2;
    }

    int status = 1;
    char why[256] = ""; /* the demo's own reason for failing, when it is not a tapegrad error */
    tg_tensor *x = NULL, *y = NULL, *params[N_PARAMS] = {NULL};
    tg_optim *opt = NULL;
    tg_rng rng;
    tg_rng_seed(&rng, 42);

    /* The data: x evenly spaced over [-1, 1], y = sin(3x), as [N, 1] columns. */
    x = tg_tensor_new(TG_DIMS(N_POINTS, 1));
    y = tg_tensor_new(TG_DIMS(N_POINTS, 1));
    if (!x || !y)
        goto done;
    for (int i = 0; i < N_POINTS; i++) {
        x->data[i] = -1.0f + 2.0f * (float)i / (float)(N_POINTS - 1);
        y->data[i] = sinf(3.0f * x->data[i]);
    }

    /* w1, b1, w2, b2, w3, b3: weights are [out, in], biases [out]. */
    const int ndims[N_PARAMS] = {2, 1, 2, 1, 2, 1};
    const int64_t shapes[N_PARAMS][2] = {
        {HIDDEN, 1}, {HIDDEN}, {HIDDEN, HIDDEN}, {HIDDEN}, {1, HIDDEN}, {1},
    };
    const int64_t fan_in[N_PARAMS] = {1, 1, HIDDEN, HIDDEN, HIDDEN, HIDDEN};
    for (int k = 0; k < N_PARAMS; k++) {
        params[k] = param_new(&rng, ndims[k], shapes[k], fan_in[k]);
        if (!params[k])
            goto done;
    }
    opt = tg_optim_adam(params, N_PARAMS, LEARNING_RATE, TG_ADAM_BETA1, TG_ADAM_BETA2, TG_ADAM_EPS,
                        0.0f);
    if (!opt)
        goto done;
    printf("demo_regression: MLP 1-%d-%d-1 (tanh) fitting y = sin(3x) on %d points, "
           "%ld steps of Adam (lr %g); %s\n",
           HIDDEN, HIDDEN, N_POINTS, steps, (double)LEARNING_RATE, tg_blas_info());

    float first_loss = NAN, loss_value = NAN;
    for (long step = 0; step < steps; step++) {
        tg_tape *tape = tg_tape_begin(TG_GRAD);
        if (!tape)
            goto done;
        tg_tensor *loss = tg_mse(mlp_forward(params, x), y, TG_REDUCE_MEAN);
        /* tg_backward also reports a failure anywhere in the forward (a NULL loss). */
        if (tg_backward(loss) != TG_OK || tg_optim_step(opt) != TG_OK) {
            tg_tape_end(tape);
            goto done;
        }
        tg_optim_zero_grad(opt);
        loss_value = tg_tensor_item(loss);
        tg_tape_end(tape); /* frees every result of this step */

        if (step == 0)
            first_loss = loss_value;
        if (step % PRINT_EVERY == 0 || step == steps - 1)
            printf("step %5ld  loss %.3e\n", step, (double)loss_value);
        if (!isfinite(loss_value)) {
            snprintf(why, sizeof why, "the loss became %g at step %ld", (double)loss_value, step);
            goto done;
        }
    }
    if (!(loss_value < 0.1f * first_loss)) {
        snprintf(why, sizeof why, "the loss went from %g to only %g; expected below a tenth",
                 (double)first_loss, (double)loss_value);
        goto done;
    }
    printf("loss fell from %.3e to %.3e (%.1fx lower)\n", (double)first_loss, (double)loss_value,
           (double)(first_loss / loss_value));
    status = 0;

done:
    if (status != 0)
        fprintf(stderr, "demo_regression: %s\n", why[0] ? why : tg_last_error());
    tg_optim_free(opt); /* releases its references to the parameters */
    for (int k = 0; k < N_PARAMS; k++)
        tg_tensor_release(params[k]);
    tg_tensor_release(x);
    tg_tensor_release(y);
    int64_t live = tg_debug_live_tensors();
    printf("live tensors at exit: %lld\n", (long long)live);
    if (live != 0) {
        fprintf(stderr, "demo_regression: %lld tensors leaked\n", (long long)live);
        status = 1;
    }
    return status;
}
