/* vae — a variational autoencoder on MNIST (Kingma & Welling; PyTorch's examples/vae): an MLP
 * encoder gives a Gaussian over 20 latent numbers, an MLP decoder draws the digit back.
 * Every epoch it writes OUT/reconstructions.png (test images above their reconstructions) and
 * OUT/samples.png, at the end OUT/losses.csv. torch_vae.py is the same program in PyTorch.
 * Exit status: 0 done, 2 bad input, 1 other. */
#include <stdio.h>

#include "args.h"
#include "vae.h"

enum { HIDDEN = 400, LATENT = 20, N_TEST = 1000 };

/* The first n images of an MNIST split, pixels scaled to [0, 1] (the VAE's Bernoulli targets). */
static tg_dataset *load_mnist(const char *dir, bool train, int64_t n)
{
    tg_dataset *ds = ex_mnist(dir, train, n);
    for (int64_t i = 0; i < ds->images->numel; i++)
        ds->images->data[i] = 0.5f * ds->images->data[i] + 0.5f;
    return ds;
}

/* Images [N, 784] in [0, 1] as a PNG grid (the grid's -1..1 scale). */
static void write_grid(const char *dir, const char *name, tg_tensor *x, int cols)
{
    tg_tensor *img = tg_reshape(tg_sub_scalar(tg_mul_scalar(x, 2.0f), 1.0f), TG_DIMS(-1, 28, 28));
    CHECK(img);
    CHECK_OK(tg_data_write_png_grid(ex_path(dir, name), img, cols, TG_GRID_FIXED));
}

/* The loss on the test images; the reconstructions of the first 20 and 64 samples from the
 * prior into PNG grids. */
static float evaluate(tg_module *vae, tg_tensor *test, tg_rng *rng, const char *out)
{
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *x = tg_reshape(test, TG_DIMS(-1, 784)), *logits = NULL;
    tg_tensor *loss = vae_loss(vae, x, tg_randn(TG_DIMS(test->shape[0], LATENT), rng), &logits);
    /* rows 1 and 3: test images; rows 2 and 4: their reconstructions */
    tg_tensor *pair[2] = {
        tg_reshape(tg_slice(x, 0, 0, 20, 1), TG_DIMS(2, 10, 784)),
        tg_reshape(tg_sigmoid(tg_slice(logits, 0, 0, 20, 1)), TG_DIMS(2, 10, 784))};
    tg_tensor *prior =
        tg_module_forward(tg_module_child(vae, "decoder"), tg_randn(TG_DIMS(64, LATENT), rng));
    write_grid(out, "reconstructions.png", tg_stack(pair, 2, 1), 10);
    write_grid(out, "samples.png", tg_sigmoid(prior), 8);
    const float value = tg_tensor_item(loss);
    tg_tape_end(tape);
    return value;
}

int main(int argc, char **argv)
{
    const char *data = ex_mnist_dir(), *out = "out/vae";
    int64_t epochs = 10, limit = 60000, batch = 128, seed = 1, threads = 2;
    const ex_flag flags[] = {
        EX_STRING("--data", &data, "DIR", "MNIST folder, $TG_MNIST_DIR if set"),
        EX_STRING("--out", &out, "DIR", "reconstructions.png, samples.png, losses.csv"),
        EX_INT("--epochs", &epochs, 1, 10000, "epochs to train"),
        EX_INT("--limit", &limit, 1, 60000, "train on the first N images (tests on 1000)"),
        EX_INT("--batch", &batch, 1, 4096, "batch size"),
        EX_INT("--seed", &seed, 0, INT64_MAX, "seed of weights, noise and shuffling"),
        EX_INT("--threads", &threads, 1, 256, "threads"),
    };
    EX_PARSE(argc, argv, "Trains a variational autoencoder on MNIST.", flags);
    if (batch > limit)
        ex_die("--batch %lld is more than --limit %lld", (long long)batch, (long long)limit);
    ex_threads(threads);
    tg_dataset *train = load_mnist(data, true, limit), *test = load_mnist(data, false, N_TEST);
    ex_out_dir(out, "losses.csv");

    tg_rng rng;
    tg_rng_seed(&rng, (uint64_t)seed);
    tg_module *vae = vae_new(HIDDEN, LATENT, &rng);
    CHECK(vae);
    tg_optim *opt = tg_optim_adam_module(vae, 1e-3f, TG_ADAM_BETA1, TG_ADAM_BETA2, TG_ADAM_EPS, 0);
    tg_loader *loader = tg_loader_new(train, batch, (uint64_t)seed);
    tg_atomic_file *csv = tg_atomic_open(ex_path(out, "losses.csv"));
    CHECK(opt && loader && csv);
    fprintf(tg_atomic_stream(csv), "epoch,train_loss,test_loss\n");

    const int64_t batches = tg_loader_batches_per_epoch(loader);
    for (int64_t epoch = 1; epoch <= epochs; epoch++) {
        double sum = 0.0;
        for (int64_t b = 0; b < batches; b++) {
            tg_tensor *images;
            CHECK_OK(tg_loader_next(loader, &images, NULL));
            tg_tape *tape = tg_tape_begin(TG_GRAD);
            tg_tensor *eps = tg_randn(TG_DIMS(batch, LATENT), &rng);
            tg_tensor *loss = vae_loss(vae, tg_reshape(images, TG_DIMS(-1, 784)), eps, NULL);
            tg_optim_zero_grad(opt);
            CHECK_OK(tg_backward(loss));
            CHECK_OK(tg_optim_step(opt));
            sum += tg_tensor_item(loss);
            tg_tape_end(tape);
            tg_tensor_release(images);
        }
        const float test_loss = evaluate(vae, test->images, &rng, out);
        printf("epoch %lld  train loss %.2f  test loss %.2f\n", (long long)epoch,
               sum / (double)batches, (double)test_loss);
        fflush(stdout);
        fprintf(tg_atomic_stream(csv), "%lld,%.4f,%.4f\n", (long long)epoch, sum / (double)batches,
                (double)test_loss);
    }
    CHECK_OK(tg_atomic_commit(csv));
    tg_optim_free(opt);
    tg_module_free(vae);
    tg_loader_free(loader);
    tg_dataset_free(train);
    tg_dataset_free(test);
    return ex_done();
}
