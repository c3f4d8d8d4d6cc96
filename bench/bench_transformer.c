/* bench_transformer: a transformer encoder layer's forward + backward at a realistic size,
 * tapegrad's side of bench/torch_transformer.py (same cases, same JSON lines; compare the two
 * at 1 and 2 threads):
 *
 *     bench_transformer [--threads T] [--iters N] [--warmup W]
 *
 *   attention  MultiheadAttention(256, 8 heads) self-attention on x [32, 128, 256], backward of
 *              sum(y * dy) into its parameters and x
 *   layer      TransformerEncoderLayer(256, 8 heads, feed-forward 1024, GELU, post-norm, no
 *              dropout) on the same x, backward likewise
 *
 * Each case prints one JSON line: {"bench": "transformer", "side", "case", "threads", "batch",
 * "seq", "d_model", "heads", "ff", "median_ms", "min_ms"} over --iters timed runs after
 * --warmup untimed ones (each run: forward, backward, the gradients freed). Prints timings,
 * never asserts anything. */
#include "tapegrad.h"

#define BENCH_NAME "bench_transformer"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { BATCH = 32, SEQ = 128, D_MODEL = 256, HEADS = 8, FF = 1024 };

/* One run: forward, backward of sum(y * dy), gradients freed. */
static void run(tg_module *m, tg_tensor *x, tg_tensor *dy)
{
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    if (tg_backward_grad(tg_module_forward(m, x), dy) != TG_OK)
        die("forward + backward");
    tg_tape_end(tape);
    tg_module_zero_grad(m);
    tg_tensor_zero_grad(x);
}

int main(int argc, char **argv)
{
    int64_t threads = 1, iters = 10, warmup = 2;
    bench_model_flags(argc, argv, &threads, &iters, &warmup);
    tg_rng rng;
    tg_rng_seed(&rng, 1);
    tg_tensor *x = tg_tensor_new(TG_DIMS(BATCH, SEQ, D_MODEL));
    tg_tensor *dy = tg_tensor_new(TG_DIMS(BATCH, SEQ, D_MODEL));
    if (!x || !dy || tg_tensor_normal_(x, &rng, 0.0f, 1.0f) != TG_OK ||
        tg_tensor_normal_(dy, &rng, 0.0f, 1.0f) != TG_OK ||
        tg_tensor_set_requires_grad(x, true) != TG_OK)
        die("inputs");
    const struct {
        const char *name;
        tg_module *m;
    } cases[] = {
        {"attention", tg_nn_multihead_attention(D_MODEL, HEADS, true, &rng)},
        {"layer", tg_nn_transformer_encoder_layer(D_MODEL, HEADS, FF, true, &rng)},
    };
    double *ms = malloc((size_t)iters * sizeof *ms);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        if (!cases[c].m || !ms)
            die(cases[c].name);
        for (int64_t i = 0; i < warmup; i++)
            run(cases[c].m, x, dy);
        for (int64_t i = 0; i < iters; i++) {
            double t0 = now();
            run(cases[c].m, x, dy);
            ms[i] = 1e3 * (now() - t0);
        }
        qsort(ms, (size_t)iters, sizeof *ms, cmp_double);
        printf("{\"bench\": \"transformer\", \"side\": \"tapegrad\", \"case\": \"%s\", "
               "\"threads\": %lld, \"batch\": %d, \"seq\": %d, \"d_model\": %d, \"heads\": %d, "
               "\"ff\": %d, \"median_ms\": %.3f, \"min_ms\": %.3f}\n",
               cases[c].name, (long long)threads, BATCH, SEQ, D_MODEL, HEADS, FF, ms[iters / 2],
               ms[0]);
        fflush(stdout);
        tg_module_free(cases[c].m);
    }
    free(ms);
    tg_tensor_release(x);
    tg_tensor_release(dy);
    return 0;
}
