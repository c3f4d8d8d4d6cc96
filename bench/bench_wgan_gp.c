/* bench_wgan_gp: one WGAN-GP critic step with its gradient penalty at batch 64, tapegrad's side
 * of bench/torch_wgan_gp.py (same cases, same JSON lines; compare the two at 1 and 2 threads):
 *
 *     bench_wgan_gp [--threads T] [--iters N] [--warmup W]
 *
 * The critic is mnist_gan's dcgan discriminator without BatchNorm (WGAN-GP's prescription) and,
 * as there, without a sigmoid: conv(1->64, 4/2/1) to 14x14, leaky 0.2, conv(64->128, 4/2/1) to
 * 7x7, leaky 0.2, flatten, linear(128*7*7 -> 1); Adam lr 1e-4, betas (0.5, 0.9). real and fake
 * are fixed [64, 1, 28, 28] batches in [-1, 1] (fake as G's detached output).
 *
 *   critic     the first-order step: loss = mean(D(fake)) - mean(D(real)), backward, Adam step
 *   critic_gp  the same plus the penalty: x^ = fake + eps * (real - fake), eps ~ U[0, 1) per
 *              sample; g = tg_grad(D(x^), x^, ones, create_graph); penalty = 10 * mean((||g||_2
 *              - 1)^2) over the samples, added to the loss; backward (second order into D's
 *              weights), Adam step
 *
 * critic_gp / critic is the penalty's overhead. Each case prints one JSON line: {"bench":
 * "wgan_gp", "side", "case", "threads", "batch", "median_ms", "min_ms"} over --iters timed
 * steps after --warmup untimed ones (each step: a tape, the forwards, backward, the Adam step,
 * the gradients freed). Prints timings, never asserts anything. */
#include "tapegrad.h"

#define BENCH_NAME "bench_wgan_gp"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { BATCH = 64, C1 = 64, C2 = 128, SIDE = 28 };
#define LAMBDA 10.0f
#define LEAKY 0.2f

/* One critic step; penalty adds the gradient penalty on interpolates. */
static void step(tg_module *D, tg_optim *opt, tg_tensor *real, tg_tensor *fake, bool penalty,
                 tg_rng *rng)
{
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *loss =
        tg_sub(tg_mean(tg_module_forward(D, fake)), tg_mean(tg_module_forward(D, real)));
    if (penalty) {
        /* x^ has no history (real and fake need no grad): a leaf of this step, as PyTorch's
         * x^.requires_grad_(True). */
        tg_tensor *eps = tg_rand(TG_DIMS(BATCH, 1, 1, 1), rng);
        tg_tensor *xhat = tg_add(fake, tg_mul(eps, tg_sub(real, fake)));
        if (tg_tensor_set_requires_grad(xhat, true) != TG_OK)
            die("x^");
        tg_tensor *d_xhat = tg_module_forward(D, xhat), *ones = tg_ones(TG_DIMS(BATCH, 1)), *g;
        if (!d_xhat || !ones || tg_grad(&d_xhat, 1, &xhat, 1, &ones, true, &g) != TG_OK)
            die("tg_grad(D(x^), x^, create_graph)");
        /* ||g||_2 per sample, then 10 * mean((||g|| - 1)^2) */
        tg_tensor *norm =
            tg_sqrt(tg_sum_axis(tg_square(tg_reshape(g, TG_DIMS(BATCH, SIDE * SIDE))), 1, false));
        loss = tg_add(loss, tg_mul_scalar(tg_mean(tg_square(tg_sub_scalar(norm, 1.0f))), LAMBDA));
    }
    if (tg_backward(loss) != TG_OK)
        die(penalty ? "the step with the penalty" : "the step");
    if (tg_optim_step(opt) != TG_OK)
        die("Adam step");
    tg_tape_end(tape);
    tg_optim_zero_grad(opt);
}

int main(int argc, char **argv)
{
    int64_t threads = 1, iters = 10, warmup = 2;
    bench_model_flags(argc, argv, &threads, &iters, &warmup);
    tg_rng rng;
    tg_rng_seed(&rng, 1);
    tg_module *D =
        TG_NN_SEQUENTIAL(tg_nn_conv2d(1, C1, 4, 2, 1, 1, true, &rng), tg_nn_leaky_relu(LEAKY),
                         tg_nn_conv2d(C1, C2, 4, 2, 1, 1, true, &rng), tg_nn_leaky_relu(LEAKY),
                         tg_nn_flatten(), tg_nn_linear(C2 * 7 * 7, 1, true, &rng));
    tg_optim *opt = D ? tg_optim_adam_module(D, 1e-4f, 0.5f, 0.9f, TG_ADAM_EPS, 0.0f) : NULL;
    if (!opt)
        die("the critic");
    tg_tensor *real = tg_tensor_new(TG_DIMS(BATCH, 1, SIDE, SIDE));
    tg_tensor *fake = tg_tensor_new(TG_DIMS(BATCH, 1, SIDE, SIDE));
    if (!real || !fake || tg_tensor_uniform_(real, &rng, -1.0f, 1.0f) != TG_OK ||
        tg_tensor_uniform_(fake, &rng, -1.0f, 1.0f) != TG_OK)
        die("the batches");

    double *ms = malloc((size_t)iters * sizeof *ms);
    if (!ms)
        return 1;
    const char *names[] = {"critic", "critic_gp"};
    for (int c = 0; c < 2; c++) {
        for (int64_t i = 0; i < warmup; i++)
            step(D, opt, real, fake, c == 1, &rng);
        for (int64_t i = 0; i < iters; i++) {
            double t0 = now();
            step(D, opt, real, fake, c == 1, &rng);
            ms[i] = 1e3 * (now() - t0);
        }
        qsort(ms, (size_t)iters, sizeof *ms, cmp_double);
        printf("{\"bench\": \"wgan_gp\", \"side\": \"tapegrad\", \"case\": \"%s\", \"threads\": "
               "%lld, \"batch\": %d, \"median_ms\": %.3f, \"min_ms\": %.3f}\n",
               names[c], (long long)threads, BATCH, ms[iters / 2], ms[0]);
        fflush(stdout);
    }
    free(ms);
    tg_tensor_release(real);
    tg_tensor_release(fake);
    tg_optim_free(opt);
    tg_module_free(D);
    return 0;
}
