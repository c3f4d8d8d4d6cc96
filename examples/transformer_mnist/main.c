/* transformer_mnist — a transformer encoder classifies MNIST digits read as sequences of rows.
 * The model is in model.c; torch_transformer_mnist.py is the same program in PyTorch. It prints
 * the mean training loss and the test accuracy after every epoch, then writes OUT/attention.png:
 * eight test digits, each beside its first layer's attention maps (one per head: query row
 * down, key row across). Exit status: 0 done, 2 bad input (flags, data), 1 other failures. */
#include <stdio.h>

#include "args.h"
#include "model.h"

/* One epoch of AdamW steps; returns the mean batch loss. */
static double train_epoch(tg_module *model, tg_optim *opt, tg_loader *loader)
{
    const int64_t batches = tg_loader_batches_per_epoch(loader);
    double sum = 0.0;
    for (int64_t b = 0; b < batches; b++) {
        tg_tensor *x, *y;
        CHECK_OK(tg_loader_next(loader, &x, &y));
        tg_tape *tape = tg_tape_begin(TG_GRAD);
        tg_tensor *loss =
            tg_cross_entropy(tg_module_forward(model, x), tg_labels(y), TG_REDUCE_MEAN);
        CHECK_OK(tg_backward(loss));
        CHECK_OK(tg_optim_step(opt));
        tg_optim_zero_grad(opt);
        sum += tg_tensor_item(loss);
        tg_tape_end(tape);
        tg_tensor_release(x), tg_tensor_release(y);
    }
    return sum / (double)batches;
}

/* The fraction of ds the model classifies right (500 images at a time, no graph). */
static double accuracy(tg_module *model, const tg_dataset *ds)
{
    const int64_t n = ds->images->shape[0];
    int64_t correct = 0;
    for (int64_t i = 0; i < n; i += 500) {
        const int64_t b = n - i < 500 ? n - i : 500;
        tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
        tg_tensor *x = tg_from_data(TG_DIMS(b, 28, 28), ds->images->data + i * 784);
        tg_index *pred = tg_argmax(tg_module_forward(model, x), 1, false);
        CHECK(pred);
        for (int64_t k = 0; k < b; k++)
            correct += pred->data[k] == (int64_t)ds->labels->data[i + k];
        tg_tape_end(tape);
    }
    return (double)correct / (double)n;
}

/* path: 8 test digits, each followed by its attention maps, all 2x nearest. */
static void write_attention(tg_module *model, const tg_dataset *test, const char *path)
{
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    const int64_t n = test->images->shape[0] < 8 ? test->images->shape[0] : 8;
    tg_tensor *x = tg_from_data(TG_DIMS(n, 1, 28, 28), test->images->data);
    tg_tensor *w = row_transformer_attention(model, x); /* [n, heads, 28, 28] */
    tg_tensor *tiles = tg_concat((tg_tensor *[]){x, w}, 2, 1);
    tiles = tg_upsample(tg_reshape(tiles, TG_DIMS(-1, 1, 28, 28)), 2, TG_UPSAMPLE_NEAREST);
    CHECK(tiles);
    CHECK_OK(tg_data_write_png_grid(path, tiles, 1 + (int)w->shape[1], TG_GRID_PER_IMAGE));
    tg_tape_end(tape);
}

int main(int argc, char **argv)
{
    const char *data = ex_mnist_dir(), *out = "out/transformer_mnist";
    int64_t epochs = 5, batch = 64, threads = 0, limit = 0, test_limit = 0, seed = 1;
    double lr = 1e-3;
    const ex_flag flags[] = {
        EX_STRING("--data", &data, "DIR", "MNIST folder, $TG_MNIST_DIR if set"),
        EX_STRING("--out", &out, "DIR", "attention.png"),
        EX_INT("--epochs", &epochs, 1, 1 << 30, "epochs to train"),
        EX_INT("--batch", &batch, 1, 1 << 30, "batch size"),
        EX_REAL("--lr", &lr, 1e-9, 10.0, "AdamW learning rate"),
        EX_INT("--seed", &seed, 0, INT64_MAX, "seed of weights and shuffling"),
        EX_INT("--threads", &threads, 1, 1 << 30, "threads (0: 2, or 1 on one CPU)"),
        EX_INT("--limit", &limit, 1, 1 << 30, "use only the first N training images (0: all)"),
        EX_INT("--test-limit", &test_limit, 1, 1 << 30, "and test images (0: all)"),
    };
    EX_PARSE(argc, argv, "Trains a transformer encoder on MNIST digits read as rows.", flags);
    /* Bad input fails here, before any training: threads, the data, the batch size, OUT. */
    ex_threads(threads);
    tg_dataset *train = ex_mnist(data, true, limit), *test = ex_mnist(data, false, test_limit);
    if (batch > train->images->shape[0])
        ex_die("--batch %lld: more than the %lld training images", (long long)batch,
               (long long)train->images->shape[0]);
    ex_out_dir(out, "attention.png");
    tg_rng rng;
    tg_rng_seed(&rng, (uint64_t)seed);
    tg_module *model = row_transformer(64, 4, 128, 2, &rng);
    CHECK(model);
    tg_optim *opt = tg_optim_adamw_module(model, (float)lr, 0.9f, 0.999f, 1e-8f, 0.01f);
    CHECK(opt);
    tg_loader *loader = tg_loader_new(train, batch, (uint64_t)seed + 1);
    CHECK(loader);
    printf("%lld parameters, %lld training and %lld test images\n",
           (long long)tg_module_num_parameters(model), (long long)train->images->shape[0],
           (long long)test->images->shape[0]);
    for (int64_t epoch = 1; epoch <= epochs; epoch++) {
        double t0 = ex_seconds(), loss = train_epoch(model, opt, loader);
        double acc = accuracy(model, test);
        printf("epoch %lld/%lld  train loss %.4f  test accuracy %.2f%%  %.1f s\n", (long long)epoch,
               (long long)epochs, loss, 100.0 * acc, ex_seconds() - t0);
        fflush(stdout);
    }
    const char *path = ex_path(out, "attention.png");
    write_attention(model, test, path);
    printf("wrote %s\n", path);
    tg_loader_free(loader), tg_optim_free(opt), tg_module_free(model);
    tg_dataset_free(train), tg_dataset_free(test);
    return ex_done();
}
