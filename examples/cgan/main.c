/* cgan — a conditional DCGAN on MNIST: G(z, digit) learns to draw the digit it is asked for.
 * Every epoch it writes OUT/samples.png (a row per digit), at the end OUT/losses.csv.
 * torch_cgan.py is the same program in PyTorch. Exit status: 0 done, 2 bad input, 1 other. */
#include <stdio.h>

#include "args.h"
#include "cgan.h"

/* One update of opt's parameters from loss: zero the gradients, backward, step. */
static void update(tg_optim *opt, tg_tensor *loss)
{
    tg_optim_zero_grad(opt);
    CHECK_OK(tg_backward(loss));
    CHECK_OK(tg_optim_step(opt));
}

/* G's images for the same 10 noise vectors each time and each digit: a row per digit 0..9. */
static void write_samples(tg_module *G, int64_t nz, const char *dir)
{
    float digits[100];
    for (int i = 0; i < 100; i++)
        digits[i] = (float)(i / 10);
    tg_rng rng;
    tg_rng_seed(&rng, 100);
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *images = tg_module_forward2(G, tg_randn(TG_DIMS(10 * 10, nz), &rng),
                                           tg_from_data(TG_DIMS(10 * 10), digits));
    CHECK(images);
    CHECK_OK(tg_data_write_png_grid(ex_path(dir, "samples.png"), images, 10, TG_GRID_FIXED));
    tg_tape_end(tape);
}

int main(int argc, char **argv)
{
    const char *data = ex_mnist_dir(), *out = "out/cgan";
    int64_t epochs = 5, limit = 60000, batch = 64, ngf = 64, ndf = 64, seed = 1, threads = 2;
    const ex_flag flags[] = {
        EX_STRING("--data", &data, "DIR", "MNIST folder, $TG_MNIST_DIR if set"),
        EX_STRING("--out", &out, "DIR", "samples.png (a row per digit), losses.csv"),
        EX_INT("--epochs", &epochs, 1, 10000, "epochs to train"),
        EX_INT("--limit", &limit, 1, 60000, "train on the first N images"),
        EX_INT("--batch", &batch, 2, 4096, "batch size"),
        EX_INT("--ngf", &ngf, 1, 1024, "G's width"),
        EX_INT("--ndf", &ndf, 1, 1024, "D's width"),
        EX_INT("--seed", &seed, 0, INT64_MAX, "seed of weights, noise and shuffling"),
        EX_INT("--threads", &threads, 1, 256, "threads"),
    };
    EX_PARSE(argc, argv, "Trains a conditional DCGAN on MNIST.", flags);
    if (batch > limit)
        ex_die("--batch %lld is more than --limit %lld", (long long)batch, (long long)limit);
    ex_threads(threads);
    tg_dataset *ds = ex_mnist(data, true, limit);
    ex_out_dir(out, "samples.png");

    tg_rng rng;
    tg_rng_seed(&rng, (uint64_t)seed);
    const cgan_widths w = {.nz = 100, .emb = 10, .ngf = ngf, .ndf = ndf};
    tg_module *G = cgan_generator(&w, &rng), *D = cgan_discriminator(&w, &rng);
    CHECK(G && D);
    CHECK_OK(cgan_init(G, &rng));
    CHECK_OK(cgan_init(D, &rng));
    tg_optim *opt_g = tg_optim_adam_module(G, 2e-4f, 0.5f, TG_ADAM_BETA2, TG_ADAM_EPS, 0.0f);
    tg_optim *opt_d = tg_optim_adam_module(D, 2e-4f, 0.5f, TG_ADAM_BETA2, TG_ADAM_EPS, 0.0f);
    tg_loader *loader = tg_loader_new(ds, batch, (uint64_t)seed);
    tg_atomic_file *csv = tg_atomic_open(ex_path(out, "losses.csv"));
    CHECK(opt_g && opt_d && loader && csv);
    fprintf(tg_atomic_stream(csv), "step,epoch,d_loss,g_loss\n");

    const int64_t batches = tg_loader_batches_per_epoch(loader);
    for (int64_t epoch = 1, step = 0; epoch <= epochs; epoch++) {
        double d_sum = 0.0, g_sum = 0.0;
        for (int64_t b = 0; b < batches; b++, step++) {
            tg_tensor *real, *labels;
            CHECK_OK(tg_loader_next(loader, &real, &labels));
            tg_tape *tape = tg_tape_begin(TG_GRAD);
            tg_tensor *fake = tg_module_forward2(G, tg_randn(TG_DIMS(batch, w.nz), &rng), labels);
            tg_tensor *d_loss = cgan_d_loss(D, real, fake, labels);
            update(opt_d, d_loss);
            tg_tensor *g_loss = cgan_g_loss(D, fake, labels);
            update(opt_g, g_loss);
            const float d = tg_tensor_item(d_loss), g = tg_tensor_item(g_loss);
            fprintf(tg_atomic_stream(csv), "%lld,%lld,%.6f,%.6f\n", (long long)step,
                    (long long)epoch, (double)d, (double)g);
            d_sum += d, g_sum += g;
            tg_tape_end(tape); /* frees everything the step made */
            tg_tensor_release(real);
            tg_tensor_release(labels);
        }
        printf("epoch %lld  d_loss %.4f  g_loss %.4f\n", (long long)epoch, d_sum / (double)batches,
               g_sum / (double)batches);
        fflush(stdout);
        write_samples(G, w.nz, out);
    }
    CHECK_OK(tg_atomic_commit(csv));
    tg_optim_free(opt_g);
    tg_optim_free(opt_d);
    tg_module_free(G);
    tg_module_free(D);
    tg_loader_free(loader);
    tg_dataset_free(ds);
    return ex_done();
}
