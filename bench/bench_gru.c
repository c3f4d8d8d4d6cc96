/* bench_gru: a GRU cell's forward + backward at a realistic size, tapegrad's side of
 * bench/torch_gru.py (same cases, same JSON lines; compare the two at 1 and 2 threads):
 *
 *     bench_gru [--threads T] [--iters N] [--warmup W]
 *
 *   cell  one GRUCell(256, 512) step on a batch of 64: h' = cell(x, h), then backward of
 *         sum(h' * dy) into the four parameters and h (as inside an unrolled sequence)
 *   seq   the cell unrolled over T = 32 steps from h0 = 0 (char_lm's loop: x[:, t] of an input
 *         [64, 32, 256]), the 32 states stacked to [64, 32, 512], backward of sum(hs * dy)
 *
 * Each case prints one JSON line: {"bench": "gru", "case", "threads", "batch", "input",
 * "hidden", "steps", "median_ms", "min_ms"} over --iters timed runs after --warmup untimed ones
 * (each run: forward, backward, the gradients freed). Prints timings, never asserts anything. */
#include "tapegrad.h"

#define BENCH_NAME "bench_gru"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { BATCH = 64, INPUT = 256, HIDDEN = 512, STEPS = 32 };

/* One run of a case: forward, backward, gradients freed. */
static void run(tg_module *cell, int64_t steps, tg_tensor *x, tg_tensor *h, tg_tensor *dy)
{
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y;
    if (steps == 1) {
        y = tg_module_forward2(cell, x, h);
    } else {
        tg_tensor *hs[STEPS], *state = TG_NONE;
        for (int64_t t = 0; t < steps; t++) {
            tg_tensor *xt = tg_reshape(tg_slice(x, 1, t, t + 1, 1), TG_DIMS(BATCH, INPUT));
            hs[t] = state = tg_module_forward2(cell, xt, state);
        }
        y = tg_stack(hs, steps, 1);
    }
    if (tg_backward_grad(y, dy) != TG_OK)
        die("forward + backward");
    tg_tape_end(tape);
    tg_module_zero_grad(cell);
    tg_tensor_zero_grad(h);
}

int main(int argc, char **argv)
{
    int64_t threads = 1, iters = 20, warmup = 3;
    bench_model_flags(argc, argv, &threads, &iters, &warmup);
    tg_rng rng;
    tg_rng_seed(&rng, 1);
    tg_module *cell = tg_nn_gru_cell(INPUT, HIDDEN, true, &rng);
    tg_tensor *x1 = tg_tensor_new(TG_DIMS(BATCH, INPUT));
    tg_tensor *xs = tg_tensor_new(TG_DIMS(BATCH, STEPS, INPUT));
    tg_tensor *h = tg_tensor_new(TG_DIMS(BATCH, HIDDEN));
    tg_tensor *dy1 = tg_tensor_new(TG_DIMS(BATCH, HIDDEN));
    tg_tensor *dys = tg_tensor_new(TG_DIMS(BATCH, STEPS, HIDDEN));
    tg_tensor *all[] = {x1, xs, h, dy1, dys};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (!all[i] || tg_tensor_normal_(all[i], &rng, 0.0f, 1.0f) != TG_OK)
            die("inputs");
    if (!cell || tg_tensor_set_requires_grad(h, true) != TG_OK)
        die("the cell");

    double *ms = malloc((size_t)iters * sizeof *ms);
    const struct {
        const char *name;
        int64_t steps;
        tg_tensor *x, *dy;
    } cases[] = {{"cell", 1, x1, dy1}, {"seq", STEPS, xs, dys}};
    for (size_t c = 0; c < 2; c++) {
        for (int64_t i = 0; i < warmup; i++)
            run(cell, cases[c].steps, cases[c].x, h, cases[c].dy);
        for (int64_t i = 0; i < iters; i++) {
            double t0 = now();
            run(cell, cases[c].steps, cases[c].x, h, cases[c].dy);
            ms[i] = 1e3 * (now() - t0);
        }
        qsort(ms, (size_t)iters, sizeof *ms, cmp_double);
        printf("{\"bench\": \"gru\", \"side\": \"tapegrad\", \"case\": \"%s\", \"threads\": %lld, "
               "\"batch\": %d, \"input\": %d, \"hidden\": %d, \"steps\": %lld, "
               "\"median_ms\": %.3f, \"min_ms\": %.3f}\n",
               cases[c].name, (long long)threads, BATCH, INPUT, HIDDEN, (long long)cases[c].steps,
               ms[iters / 2], ms[0]);
        fflush(stdout);
    }
    free(ms);
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        tg_tensor_release(all[i]);
    tg_module_free(cell);
    return 0;
}
