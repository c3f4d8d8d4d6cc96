/* mnist_gan train: the training loop, its logs, grids, measurements and checkpoints, and
 * --resume. */
#include "app.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- train ----------------------------------------------------------------------------------- */

bool file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

/* Creates dir and its parents; false with a message when it cannot be made or written. */
static bool make_out_dir(const char *dir, char *err, size_t n)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", dir);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            mkdir(tmp, 0755);
            *p = '/';
        }
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST) {
        snprintf(err, n, "cannot create the output folder %s: %s", dir, strerror(errno));
        return false;
    }
    snprintf(tmp, sizeof tmp, "%s/.mnist_gan_write_test", dir);
    tg_atomic_file *af = tg_atomic_open(tmp);
    if (!af) {
        snprintf(err, n, "cannot write in the output folder %s: %s", dir, tg_last_error());
        return false;
    }
    tg_atomic_abort(af);
    return true;
}

/* Takes the run's settings from a checkpoint being resumed; a flag the user gave that differs
 * from the checkpoint's is an error. */
static bool adopt_settings(gan_options *o, const run_settings *r, char *err, size_t n)
{
    const gan_config *c = &r->cfg;
    struct {
        uint64_t bit;
        const char *flag;
        bool differs;
    } checks[] = {
        {GIVEN_RECIPE, "--recipe", o->recipe != c->recipe},
        {GIVEN_GENERATOR, "--generator", o->generator != c->generator},
        {GIVEN_STEP, "--step", o->step != c->step},
        {GIVEN_INIT, "--init", o->init != c->init},
        {GIVEN_ADAM, "--adam", o->adam_eps != c->adam_eps},
        {GIVEN_SHUFFLE, "--shuffle", o->shuffle_block != c->shuffle_block},
        {GIVEN_DIGIT, "--digit", o->digit != r->digit},
        {GIVEN_WIDTH, "--width-div", o->width_div != r->width_div},
        {GIVEN_BATCH, "--batch", o->batch != r->batch},
        {GIVEN_LR, "--lr", o->lr != c->lr},
        {GIVEN_BETA1, "--beta1", o->beta1 != c->beta1},
        {GIVEN_SEED, "--seed", o->seed != c->seed},
    };
    for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++) {
        if ((o->given & checks[i].bit) && checks[i].differs) {
            snprintf(err, n,
                     "%s differs from the checkpoint being resumed; drop it (--resume "
                     "takes the checkpoint's settings) or train into another --out",
                     checks[i].flag);
            return false;
        }
    }
    o->recipe = c->recipe, o->generator = c->generator, o->step = c->step, o->init = c->init;
    o->adam_eps = c->adam_eps, o->shuffle_block = c->shuffle_block;
    o->digit = r->digit, o->width_div = r->width_div;
    o->batch = r->batch, o->lr = c->lr, o->beta1 = c->beta1, o->seed = c->seed;
    return true;
}

const char *data_dir_of(const gan_options *o)
{
    if (o->data_dir)
        return o->data_dir;
    return strcmp(o->dataset, "fashion") == 0 ? FASHION_DIR : MNIST_DIR;
}

/* A one-line progress bar on stderr, only when it is a terminal. */
static void progress(int64_t it, int64_t total, double secs, int64_t it0)
{
    double rate = secs > 0 ? (double)(it - it0) / secs : 0;
    double eta = rate > 0 ? (double)(total - it) / rate : 0;
    int width = 30, done = (int)((double)width * (double)it / (double)total);
    fprintf(stderr, "\r[%.*s%*s] %lld/%lld  %.2f it/s  ETA %d:%02d:%02d ", done,
            "==============================", width - done, "", (long long)it, (long long)total,
            rate, (int)(eta / 3600), (int)fmod(eta / 60, 60), (int)fmod(eta, 60));
    fflush(stderr);
}

const char *const recipe_names[] = {"tutorial", "dcgan"};
const char *const gen_names[] = {"upsample", "convt"};

/* The noise of the generated images measured during training: the same at every measurement,
 * from the run's seed. */
#define EVAL_NOISE_STREAM 0xe7a1ull

/* train --eval-every: measures G, logs the figures (OUT/eval.csv, the report's FID curve) and
 * prints a line; 0, or the exit status after saying what failed. */
static int train_eval(gan_tracker *t, gan_state *s, gan_log *log, int64_t it, bool tty)
{
    gan_figures f;
    if (gan_tracker_eval(t, s, &f) != TG_OK || gan_log_eval(log, it, &f) != TG_OK)
        return fail(1, "evaluating iteration %lld: %s", (long long)it, tg_last_error());
    if (tty)
        fputc('\n', stderr);
    printf("eval: iteration %lld, %lld images, FID (classifier features) %.3f, score %.3f, "
           "rarest class %d at %.1f%%, %d/%d classes >= 5%%, white %.3f\n",
           (long long)it, (long long)f.n, f.fid, f.score, f.rarest_class, 100.0 * f.rarest_share,
           f.classes_5pct, f.classes, f.white);
    fflush(stdout);
    return 0;
}

int train(gan_options *o)
{
    char err[1024], ckpt[4096], png[4096], title[512];
    if (!make_out_dir(o->out_dir, err, sizeof err))
        return fail(EXIT_BAD_INPUT, "%s", err);
    snprintf(ckpt, sizeof ckpt, "%s/%s", o->out_dir, CHECKPOINT_NAME);

    tg_state_dict *resume_sd = NULL;
    run_position pos = {0};
    tg_rng z_rng_saved;
    if (o->resume) {
        if (!file_exists(ckpt))
            return fail(EXIT_BAD_INPUT, "--resume: %s does not exist", ckpt);
        resume_sd = tg_data_load_safetensors(ckpt);
        run_settings rs;
        long long it, ep, b;
        if (!resume_sd)
            return fail(EXIT_BAD_INPUT, "%s", tg_last_error());
        if (!settings_get(resume_sd, ckpt, &rs, err, sizeof err) ||
            !adopt_settings(o, &rs, err, sizeof err) ||
            !meta_get(resume_sd, ckpt, "iteration", err, sizeof err, 1, "%lld", &it) ||
            !meta_get(resume_sd, ckpt, "seconds", err, sizeof err, 1, "%la", &pos.seconds) ||
            !meta_get(resume_sd, ckpt, "epoch", err, sizeof err, 1, "%lld", &ep) ||
            !meta_get(resume_sd, ckpt, "batch_in_epoch", err, sizeof err, 1, "%lld", &b) ||
            !meta_get_rng(resume_sd, ckpt, "loader_rng", &pos.loader.epoch_rng, err, sizeof err) ||
            !meta_get_rng(resume_sd, ckpt, "z_rng", &z_rng_saved, err, sizeof err)) {
            tg_state_dict_free(resume_sd);
            return fail(EXIT_BAD_INPUT, "%s", err);
        }
        pos.iteration = it, pos.loader.epoch = ep, pos.loader.batch = b;
    } else if (file_exists(ckpt)) {
        return fail(EXIT_BAD_INPUT,
                    "%s already holds a checkpoint: pass --resume to continue "
                    "it, or choose another --out",
                    o->out_dir);
    }

    int code = 1;
    const char *dir = data_dir_of(o);
    tg_dataset *ds = tg_data_load_mnist(dir, true, o->digit);
    tg_loader *loader = NULL;
    gan_log *log = NULL;
    tg_tensor *zfix = NULL;
    gan_state s = {0};
    gan_tracker tracker = {0}; /* --eval-every */
    if (!ds) {
        code = fail(EXIT_BAD_INPUT, "%s%s", tg_last_error(),
                    !o->data_dir && !strcmp(dir, MNIST_DIR)
                        ? " (run scripts/fetch-mnist.sh, or pass --data DIR)"
                        : "");
        goto done;
    }
    if (ds->images->shape[2] != 28 || ds->images->shape[3] != 28) {
        code = fail(EXIT_BAD_INPUT, "%s: images are %lldx%lld; the models need 28x28", dir,
                    (long long)ds->images->shape[2], (long long)ds->images->shape[3]);
        goto done;
    }
    if (!(loader = tg_loader_new(ds, o->batch, o->seed ^ 0x10ade7ull)) ||
        tg_loader_set_shuffle_block(loader, o->shuffle_block) != TG_OK) {
        code = fail(EXIT_BAD_INPUT, "%s", tg_last_error());
        goto done;
    }
    if (o->eval_every && gan_tracker_open(&tracker, o->classifier, dir, o->digit, o->eval_n,
                                          o->seed ^ EVAL_NOISE_STREAM) != TG_OK) {
        code = fail(EXIT_BAD_INPUT, "%s", tg_last_error());
        goto done;
    }
    gan_widths w = gan_widths_default(o->width_div);
    const gan_config cfg = gan_options_config(o);
    if (gan_state_init(&s, &cfg, &w) != TG_OK) {
        code = fail(1, "%s", tg_last_error());
        goto done;
    }
    if (resume_sd) {
        if (gan_load_state_dict(&s, resume_sd) != TG_OK ||
            tg_loader_set_state(loader, &pos.loader) != TG_OK) {
            code = fail(EXIT_BAD_INPUT, "%s: %s", ckpt, tg_last_error());
            goto done;
        }
        s.z_rng = z_rng_saved;
        /* Loaded: the checkpoint's copy (as large as G, D and three Adams) is not kept for
         * the whole run. */
        tg_state_dict_free(resume_sd), resume_sd = NULL;
    }
    /* The grids' fixed noise: from the seed alone, so a resumed run shows the same z. */
    tg_rng grid_rng;
    tg_rng_seed(&grid_rng, o->seed ^ 0x9a1dull);
    zfix = tg_tensor_new(TG_DIMS(GRID_N, w.nz));
    tg_tensor_normal_(zfix, &grid_rng, 0.0f, 1.0f);
    if (!(log = gan_log_open(o->out_dir, o->resume ? pos.iteration : -1))) {
        code = fail(EXIT_BAD_INPUT, "%s", tg_last_error());
        goto done;
    }

    const int64_t per_epoch = tg_loader_batches_per_epoch(loader);
    const int64_t total = o->iters ? o->iters : o->epochs * per_epoch;
    run_settings rs = {cfg, o->digit, o->width_div, o->batch};
    snprintf(title, sizeof title,
             "recipe %s, generator %s, step %s, init %s, adam %s, shuffle "
             "%s, batch %lld, lr %g, beta1 %g, seed %llu, %lld images%s",
             recipe_names[o->recipe],
             o->recipe == GAN_RECIPE_DCGAN ? "dcgan" : gen_names[o->generator],
             gan_step_names[o->step], gan_init_names[o->init], gan_adam_names[o->adam_eps],
             o->shuffle_block ? "paddle" : "full", (long long)o->batch, o->lr, o->beta1,
             (unsigned long long)o->seed, (long long)ds->images->shape[0],
             o->digit >= 0 ? " (one digit)" : "");
    printf("mnist_gan: %s; %lld iterations (%lld per epoch), from %lld; %d thread%s; %s\n", title,
           (long long)total, (long long)per_epoch, (long long)pos.iteration, o->threads,
           o->threads == 1 ? "" : "s", tg_blas_info());
    fflush(stdout);

    const bool tty = isatty(2);
    const double run_start = now(), t0 = run_start - pos.seconds;
    const int64_t it0 = pos.iteration;
    int64_t it = pos.iteration;
    while (it < total) {
        tg_loader_state at = tg_loader_get_state(loader);
        tg_tensor *real;
        gan_losses l;
        if (tg_loader_next(loader, &real, NULL) != TG_OK) {
            code = fail(1, "%s", tg_last_error());
            goto done;
        }
        tg_status st = gan_step(&s, real, NULL, &l);
        tg_release(real);
        if (st != TG_OK) {
            code = fail(1, "iteration %lld: %s", (long long)it + 1, tg_last_error());
            goto done;
        }
        it++;
        double secs = now() - t0;
        if (gan_log_row(log, it, at.epoch, at.batch, &l, secs) != TG_OK) {
            code = fail(1, "%s", tg_last_error());
            goto done;
        }
        if (!isfinite(l.d_real) || !isfinite(l.d_fake) || !isfinite(l.g)) {
            code = fail(1,
                        "iteration %lld: a loss is not finite (d_real %g, d_fake %g, g %g); "
                        "rerun with TG_CHECK_FINITE=1 to find the op",
                        (long long)it, l.d_real, l.d_fake, l.g);
            goto done;
        }
        if (o->eval_every && (it % o->eval_every == 0 || it == total) &&
            (code = train_eval(&tracker, &s, log, it, tty)) != 0)
            goto done;
        if (it % o->log_every == 0 || it == total) {
            if (tty)
                fputc('\n', stderr);
            printf("epoch = %lld, batch = %lld, real_d_loss = %.4f, fake_d_loss = %.4f, "
                   "g_loss = %.4f\n",
                   (long long)at.epoch, (long long)at.batch, l.d_real, l.d_fake, l.g);
            fflush(stdout);
            snprintf(png, sizeof png, "%s/samples_%lld.png", o->out_dir, (long long)it);
            tg_tensor *img = gan_generate(&s, zfix);
            st =
                img ? tg_data_write_png_grid(png, img, GRID_COLS, o->grid_scale) : tg_last_status();
            if (st == TG_OK && o->grid_both) {
                char png2[4096];
                snprintf(png2, sizeof png2, "%s/samples_%lld_per-image.png", o->out_dir,
                         (long long)it);
                st = tg_data_write_png_grid(png2, img, GRID_COLS, TG_GRID_PER_IMAGE);
            }
            tg_release(img);
            if (st == TG_OK)
                st = gan_log_report(log, png, title);
            if (st != TG_OK) {
                code = fail(1, "%s", tg_last_error());
                goto done;
            }
        }
        tg_loader_state next = tg_loader_get_state(loader);
        if (next.batch == 0 || it == total) { /* the end of an epoch, or of the run */
            pos = (run_position){it, secs, next};
            if (save_checkpoint(ckpt, &s, &rs, &pos) != TG_OK) {
                code = fail(1, "%s", tg_last_error());
                goto done;
            }
        }
        if (tty)
            progress(it, total, now() - run_start, it0);
    }
    if (tty)
        fputc('\n', stderr);
    printf("mnist_gan: done, %lld iterations; %s, losses.csv, report.html and samples in %s\n",
           (long long)it, CHECKPOINT_NAME, o->out_dir);
    code = 0;
done:
    tg_release(zfix);
    gan_log_close(log);
    gan_tracker_close(&tracker);
    gan_state_free(&s);
    tg_loader_free(loader);
    tg_dataset_free(ds);
    tg_state_dict_free(resume_sd);
    return code;
}
