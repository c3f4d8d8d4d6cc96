/* dist_mlp: a small MLP on MNIST trained data-parallel over MPI (dist.h), the equivalence
 * check of issue 20: N ranks with batch B/N each take the same steps as one process with batch
 * B, up to float32 rounding of the sums (tests/test_dist.sh).
 *
 *   mpirun -np 2 dist_mlp train --batch 64 --steps 20 --out a.safetensors
 *   dist_mlp train --batch 64 --steps 20 --out b.safetensors        (one process, one rank)
 *   dist_mlp compare a.safetensors b.safetensors --tol 1e-5
 *
 * train: 784 -> hidden -> 10 with ReLU, no dropout and no BatchNorm (whose batch statistics
 * would differ between a half batch and a whole one), cross-entropy, SGD with momentum or Adam,
 * the first --images images of MNIST (or --synthetic ones drawn from the seed). Every rank
 * parses its own command line; a rank whose flags fail, or differ from rank 0's, or whose
 * images differ, stops every rank with one line from rank 0 and exit status 2 on all. Rank 0
 * alone prints and writes --out (the final parameters). Exit: 0 done, 2 bad input, 1 another
 * failure.
 * compare: the largest difference between two such files, tensor by tensor, relative to the
 * tensor's largest absolute value; exit 1 when it is above --tol (or the files do not match). */
#include "dist.h"
#include "tapegrad.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *data, *out, *optim;
    bool synthetic;
    int64_t images, batch, steps, hidden, threads, bucket_bytes, log_every;
    double lr;
    uint64_t seed;
} settings;

/* The settings every rank must share, as text (--data, --out and --threads may differ per
 * machine: a path, a file only rank 0 writes, each machine's cores). */
static void settings_text(const settings *s, char *buf, size_t n)
{
    snprintf(buf, n,
             "synthetic=%d images=%lld batch=%lld steps=%lld hidden=%lld optim=%s lr=%a "
             "seed=%llu bucket_bytes=%lld",
             s->synthetic, (long long)s->images, (long long)s->batch, (long long)s->steps,
             (long long)s->hidden, s->optim, s->lr, (unsigned long long)s->seed,
             (long long)s->bucket_bytes);
}

/* Reads argv[2..] into s; a status with the message (no exit: every rank must first hear
 * whether the others parsed theirs). */
static tg_status parse(int argc, char **argv, settings *s)
{
    for (int i = 2; i < argc; i++) {
        const char *f = argv[i];
        if (strcmp(f, "--synthetic") == 0) {
            s->synthetic = true;
            continue;
        }
        static const char *const known[] = {"--data",         "--out",   "--optim",  "--images",
                                            "--batch",        "--steps", "--hidden", "--threads",
                                            "--bucket-bytes", "--lr",    "--seed",   "--log-every"};
        bool ok = false;
        for (size_t k = 0; k < sizeof known / sizeof *known; k++)
            ok |= strcmp(f, known[k]) == 0;
        if (!ok)
            return tg_set_error(TG_ERR_ARG, "unknown flag '%.64s' (see the top of dist_mlp.c)", f);
        if (i + 1 >= argc)
            return tg_set_error(TG_ERR_ARG, "%s needs a value", f);
        const char *v = argv[++i];
        tg_status st = TG_OK;
        uint64_t u;
        if (strcmp(f, "--data") == 0)
            s->data = v;
        else if (strcmp(f, "--out") == 0)
            s->out = v;
        else if (strcmp(f, "--optim") == 0) {
            if (strcmp(v, "sgd") != 0 && strcmp(v, "adam") != 0)
                return tg_set_error(TG_ERR_ARG, "--optim: '%.32s' is not sgd or adam", v);
            s->optim = v;
        } else if (strcmp(f, "--images") == 0)
            st = tg_parse_int(v, 1, 60000, &s->images);
        else if (strcmp(f, "--batch") == 0)
            st = tg_parse_int(v, 1, 60000, &s->batch);
        else if (strcmp(f, "--steps") == 0)
            st = tg_parse_int(v, 0, 1000000, &s->steps);
        else if (strcmp(f, "--hidden") == 0)
            st = tg_parse_int(v, 1, 4096, &s->hidden);
        else if (strcmp(f, "--threads") == 0)
            st = tg_parse_int(v, 1, 256, &s->threads);
        else if (strcmp(f, "--bucket-bytes") == 0)
            st = tg_parse_int(v, 4, INT64_C(1) << 40, &s->bucket_bytes);
        else if (strcmp(f, "--log-every") == 0)
            st = tg_parse_int(v, 0, 1000000, &s->log_every);
        else if (strcmp(f, "--lr") == 0)
            st = tg_parse_real(v, 1e-9, 10, &s->lr);
        else if ((st = tg_parse_uint(v, UINT64_MAX, &u)) == TG_OK)
            s->seed = u;
        if (st != TG_OK) {
            char why[256];
            snprintf(why, sizeof why, "%s", tg_last_error());
            return tg_set_error(TG_ERR_ARG, "%s: '%.32s': %s", f, v, why);
        }
    }
    return TG_OK;
}

/* The first n images of MNIST's training set, or n synthetic ones (uniform pixels in [-1, 1],
 * labels 0..9) drawn from seed: the same on every rank. NULL with the error set. */
static tg_dataset *load(const settings *s)
{
    tg_dataset *out = calloc(1, sizeof *out);
    if (!out) {
        tg_set_error(TG_ERR_NOMEM, "dist_mlp: out of memory");
        return NULL;
    }
    if (s->synthetic) {
        out->images = tg_tensor_new(TG_DIMS(s->images, 1, 28, 28));
        out->labels = tg_tensor_new(TG_DIMS(s->images));
        if (!out->images || !out->labels) {
            tg_dataset_free(out);
            return NULL;
        }
        tg_rng r;
        tg_rng_seed(&r, s->seed ^ 0x5eed);
        for (int64_t i = 0; i < out->images->numel; i++)
            out->images->data[i] = 2.0f * tg_rng_uniform01(&r) - 1.0f;
        for (int64_t i = 0; i < s->images; i++)
            out->labels->data[i] = (float)(tg_rng_u32(&r) % 10);
        return out;
    }
    tg_dataset *all = tg_data_load_mnist(s->data, true, -1);
    if (!all) {
        free(out);
        return NULL;
    }
    const int64_t n = s->images < all->images->shape[0] ? s->images : all->images->shape[0];
    out->images = tg_tensor_from_data(TG_DIMS(n, 1, 28, 28), all->images->data);
    out->labels = tg_tensor_from_data(TG_DIMS(n), all->labels->data);
    tg_dataset_free(all);
    if (!out->images || !out->labels) {
        tg_dataset_free(out);
        return NULL;
    }
    return out;
}

/* One line from rank 0, the same exit status on every rank: the program's single way out on
 * failure once MPI runs. */
static int stop(tg_dist *d, int status)
{
    if (tg_dist_rank(d) == 0)
        fprintf(stderr, "dist_mlp: %s\n", tg_last_error());
    tg_dist_finalize(d);
    return status;
}

static int train(int argc, char **argv)
{
    tg_dist *d = NULL;
    if (tg_dist_init(&argc, &argv, &d) != TG_OK) {
        fprintf(stderr, "dist_mlp: %s\n", tg_last_error());
        return 1;
    }
    const int rank = tg_dist_rank(d), size = tg_dist_size(d);
    settings s = {.data = getenv("TG_MNIST_DIR") && *getenv("TG_MNIST_DIR") ? getenv("TG_MNIST_DIR")
                                                                            : "data-cache/mnist",
                  .optim = "sgd",
                  .images = 4096,
                  .batch = 64,
                  .steps = 20,
                  .hidden = 64,
                  .threads = 1,
                  .bucket_bytes = (int64_t)TG_DIST_BUCKET_BYTES,
                  .lr = 0.05,
                  .seed = 1};
    /* Setup: every refusal is bad input (2), agreed on by all ranks before anything moves. */
    int64_t local = 0;
    char text[512];
    tg_status st = parse(argc, argv, &s);
    if ((st = tg_dist_agree(d, st)) != TG_OK)
        return stop(d, 2);
    settings_text(&s, text, sizeof text);
    /* The same settings give the same answers below on every rank, but --threads, which may
     * differ: its refusal is agreed on like any other one-rank failure. */
    if (tg_dist_check_same(d, text, strlen(text), "the settings") != TG_OK ||
        tg_dist_local_batch(d, s.batch, &local) != TG_OK ||
        tg_dist_set_bucket_bytes(d, (size_t)s.bucket_bytes) != TG_OK ||
        tg_dist_agree(d, tg_set_num_threads((int)s.threads)) != TG_OK)
        return stop(d, 2);
    tg_dataset *ds = load(&s);
    if (tg_dist_agree(d, ds ? TG_OK : tg_last_status()) != TG_OK ||
        tg_dist_check_same(d, ds->images->data, sizeof(float) * (size_t)ds->images->numel,
                           "the training images") != TG_OK ||
        tg_dist_check_same(d, ds->labels->data, sizeof(float) * (size_t)ds->labels->numel,
                           "the training labels") != TG_OK) {
        tg_dataset_free(ds);
        return stop(d, 2);
    }

    /* Every rank builds the model from the same seed; the broadcast makes rank 0's weights
     * everyone's regardless, as a program with a per-rank seed or a checkpoint needs. */
    tg_rng rng;
    tg_rng_seed(&rng, s.seed);
    tg_module *m = TG_NN_SEQUENTIAL(tg_nn_flatten(), tg_nn_linear(784, s.hidden, true, &rng),
                                    tg_nn_relu(), tg_nn_linear(s.hidden, 10, true, &rng));
    tg_optim *opt = !m ? NULL
                    : strcmp(s.optim, "adam") == 0
                        ? tg_optim_adam_module(m, (float)s.lr, 0.9f, 0.999f, 1e-8f, 0.0f)
                        : tg_optim_sgd_module(m, (float)s.lr, 0.9f, 0.0f, 0.0f, false);
    tg_loader *loader = tg_loader_new(ds, s.batch, s.seed);
    int64_t n_params = 0;
    tg_tensor **params = m ? tg_module_parameters(m, &n_params) : NULL;
    tg_tensor *loss_sum = tg_tensor_zeros(0, NULL);
    st = m && opt && loader && params && loss_sum ? TG_OK : tg_last_status();
    if ((st = tg_dist_agree(d, st)) == TG_OK)
        st = tg_dist_broadcast_params(d, m);

    for (int64_t step = 1; st == TG_OK && step <= s.steps; step++) {
        tg_tensor *x = NULL, *y = NULL;
        tg_status local_st = tg_dist_loader_next(d, loader, &x, &y);
        tg_tape *tape = local_st == TG_OK ? tg_tape_begin(TG_GRAD) : NULL;
        tg_tensor *loss = NULL;
        if (tape) {
            loss = tg_cross_entropy(tg_module_forward(m, x), tg_labels(y), TG_REDUCE_MEAN);
            local_st = loss ? tg_backward(loss) : tg_last_status();
            if (local_st == TG_OK)
                loss_sum->data[0] = loss->data[0];
            tg_tape_end(tape);
        } else if (local_st == TG_OK) {
            local_st = tg_last_status();
        }
        tg_tensor_release(x);
        tg_tensor_release(y);
        /* A failed step on one rank stops all before the gradients' collective. */
        if ((st = tg_dist_agree(d, local_st)) != TG_OK)
            break;
        /* The step can only fail on a rank of its own (memory): agreed on too. */
        if ((st = tg_dist_allreduce_grads(d, params, n_params)) != TG_OK ||
            (st = tg_dist_agree(d, tg_optim_step(opt))) != TG_OK)
            break;
        tg_optim_zero_grad(opt);
        if (s.log_every && (step % s.log_every == 0 || step == s.steps)) {
            /* The global batch's mean loss: the mean of the ranks' means over equal slices. */
            if ((st = tg_dist_allreduce_mean(d, &loss_sum, 1)) != TG_OK)
                break;
            if (rank == 0)
                printf("step %lld loss %.6f\n", (long long)step, loss_sum->data[0]);
        }
    }
    /* Nothing sends the parameters after the start: the same averaged gradients and the same
     * steps must keep them equal, bit for bit (MPI gives every rank the same sums). */
    for (int64_t i = 0; st == TG_OK && i < n_params; i++)
        st = tg_dist_check_same(d, params[i]->data, sizeof(float) * (size_t)params[i]->numel,
                                "the trained parameters");
    if (st == TG_OK && rank == 0) {
        printf("dist_mlp: %d rank%s x batch %lld (global %lld), %lld steps, %s\n", size,
               size == 1 ? "" : "s", (long long)local, (long long)s.batch, (long long)s.steps,
               s.optim);
        fflush(stdout);
    }
    /* Rank 0 writes; every rank hears whether it could. */
    if (st == TG_OK) {
        tg_status save = TG_OK;
        if (rank == 0 && s.out) {
            tg_state_dict *sd = tg_state_dict_new();
            save = sd ? tg_module_state_dict(m, NULL, sd) : tg_last_status();
            if (save == TG_OK)
                save = tg_data_save_safetensors(s.out, sd);
            tg_state_dict_free(sd);
        }
        st = tg_dist_agree(d, save);
    }
    free(params);
    tg_tensor_release(loss_sum);
    tg_loader_free(loader);
    tg_optim_free(opt);
    tg_module_free(m);
    tg_dataset_free(ds);
    if (st == TG_OK)
        st = tg_dist_agree(d, tg_debug_live_tensors() == 0
                                  ? TG_OK
                                  : tg_set_error(TG_ERR_STATE,
                                                 "dist_mlp: %lld tensors left alive at the end",
                                                 (long long)tg_debug_live_tensors()));
    if (st != TG_OK)
        return stop(d, 1);
    if (tg_dist_finalize(d) != TG_OK) {
        if (rank == 0)
            fprintf(stderr, "dist_mlp: %s\n", tg_last_error());
        return 1;
    }
    return 0;
}

/* The largest |a - b| of each tensor relative to the largest |b| of that tensor (1 when that is
 * 0); the worst over the tensors against tol. */
static int compare(int argc, char **argv)
{
    if (argc != 4 && !(argc == 6 && strcmp(argv[4], "--tol") == 0)) {
        fprintf(stderr, "usage: dist_mlp compare A.safetensors B.safetensors [--tol X]\n");
        return 2;
    }
    double tol = 1e-5;
    if (argc == 6 && tg_parse_real(argv[5], 0, 1, &tol) != TG_OK) {
        fprintf(stderr, "dist_mlp: --tol: '%.32s': %s\n", argv[5], tg_last_error());
        return 2;
    }
    tg_state_dict *a = tg_data_load_safetensors(argv[2]);
    tg_state_dict *b = a ? tg_data_load_safetensors(argv[3]) : NULL;
    if (!a || !b) {
        fprintf(stderr, "dist_mlp: %s\n", tg_last_error());
        tg_state_dict_free(a);
        return 1;
    }
    int status = 0;
    double worst = 0, worst_abs = 0;
    const char *worst_name = "";
    if (tg_state_dict_size(a) != tg_state_dict_size(b)) {
        fprintf(stderr, "dist_mlp: %s holds %lld tensors, %s %lld\n", argv[2],
                (long long)tg_state_dict_size(a), argv[3], (long long)tg_state_dict_size(b));
        status = 1;
    }
    for (int64_t i = 0; status == 0 && i < tg_state_dict_size(a); i++) {
        const char *name = tg_state_dict_name(a, i);
        const tg_tensor *ta = tg_state_dict_tensor(a, i), *tb = tg_state_dict_get(b, name);
        if (!tb || tb->numel != ta->numel) {
            fprintf(stderr, "dist_mlp: %s: %s in %s\n", name, tb ? "sizes differ" : "missing",
                    argv[3]);
            status = 1;
            break;
        }
        double diff = 0, scale = 0;
        for (int64_t j = 0; j < ta->numel; j++) {
            diff = fmax(diff, fabs((double)ta->data[j] - tb->data[j]));
            scale = fmax(scale, fabs((double)tb->data[j]));
        }
        const double rel = diff / (scale > 0 ? scale : 1);
        if (rel >= worst) {
            worst = rel, worst_abs = diff;
            worst_name = name;
        }
    }
    if (status == 0) {
        printf("largest difference: %.3g relative (%.3g absolute) in %s; tolerance %.3g\n", worst,
               worst_abs, worst_name, tol);
        status = worst <= tol ? 0 : 1;
    }
    tg_state_dict_free(a);
    tg_state_dict_free(b);
    return status;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "train") == 0)
        return train(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "compare") == 0)
        return compare(argc, argv);
    fprintf(stderr, "usage: dist_mlp train [flags] | dist_mlp compare A B [--tol X] (see "
                    "examples/dist_mlp/dist_mlp.c)\n");
    return 2;
}
