/* mnist_gan: trains the PaddlePaddle dygraph tutorial's GAN on MNIST, or samples a trained G.
 * See `mnist_gan --help` and the README. Bad input exits 2 with one line naming the problem;
 * nothing already written (checkpoint, logs) is destroyed by it. */
#include "cli.h"
#include "metrics.h"

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

#define EXIT_BAD_INPUT 2
#define FASHION_DIR "/usr/share/datasets/fashion-mnist"
#define MNIST_DIR "data-cache/mnist"
#define CHECKPOINT_NAME "checkpoint.safetensors"
/* Format 2 names the step, init, Adam and shuffle; format 1 (before the faithful tutorial step)
 * is still read: its step 0 was today's accumulate step, with PyTorch's init and Adam and one
 * shuffle of the whole set, and that is how it resumes. */
#define CHECKPOINT_FORMAT "mnist_gan/2"
#define CHECKPOINT_FORMAT_1 "mnist_gan/1"
/* The grid of samples: the tutorial's 128 images in 16 columns. */
#define GRID_N 128
#define GRID_COLS 16

static int fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("mnist_gan: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return code;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- checkpoint metadata ---------------------------------------------------------------------
 * Everything but the tensors: where training stands and the settings that define the run. RNG
 * states and floats are stored exactly (hex words, %a), so a resume continues bit for bit. */

static tg_status meta_set(tg_state_dict *sd, const char *key, const char *fmt, ...)
{
    char v[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v, sizeof v, fmt, ap);
    va_end(ap);
    return tg_state_dict_set_meta(sd, key, v);
}

static tg_status meta_set_rng(tg_state_dict *sd, const char *key, const tg_rng *r)
{
    uint32_t spare;
    memcpy(&spare, &r->spare, 4);
    return meta_set(sd, key, "%08x %08x %08x %08x %x %08x", r->s[0], r->s[1], r->s[2], r->s[3],
                    r->has_spare, spare);
}

/* Reads metadata key as the sscanf format; false (with a message) when absent or malformed. */
static bool meta_get(const tg_state_dict *sd, const char *path, const char *key, char *err,
                     size_t n, int count, const char *fmt, ...)
{
    const char *v = tg_state_dict_meta(sd, key);
    va_list ap;
    va_start(ap, fmt);
    int got = v ? vsscanf(v, fmt, ap) : -1;
    va_end(ap);
    if (got != count) {
        snprintf(err, n, "%s: metadata \"%s\" is %s", path, key,
                 v ? "malformed" : "missing (not a mnist_gan checkpoint?)");
        return false;
    }
    return true;
}

static bool meta_get_rng(const tg_state_dict *sd, const char *path, const char *key,
                         tg_rng *r, char *err, size_t n)
{
    uint32_t spare;
    if (!meta_get(sd, path, key, err, n, 6, "%" SCNx32 " %" SCNx32 " %" SCNx32 " %" SCNx32
                  " %" SCNx32 " %" SCNx32, &r->s[0], &r->s[1], &r->s[2], &r->s[3],
                  &r->has_spare, &spare))
        return false;
    memcpy(&r->spare, &spare, 4);
    return true;
}

/* The run's settings, as the checkpoint records them. */
typedef struct {
    gan_config cfg;
    int digit, width_div;
    int64_t batch;
} run_settings;

static void settings_put(tg_state_dict *sd, const run_settings *r)
{
    const gan_config *c = &r->cfg;
    meta_set(sd, "format", CHECKPOINT_FORMAT);
    meta_set(sd, "recipe", "%d", c->recipe);
    meta_set(sd, "generator", "%d", c->generator);
    meta_set(sd, "step", "%s", gan_step_names[c->step]);
    meta_set(sd, "init", "%s", gan_init_names[c->init]);
    meta_set(sd, "adam", "%s", gan_adam_names[c->adam_eps]);
    meta_set(sd, "shuffle_block", "%lld", (long long)c->shuffle_block);
    meta_set(sd, "digit", "%d", r->digit);
    meta_set(sd, "width_div", "%d", r->width_div);
    meta_set(sd, "batch", "%lld", (long long)r->batch);
    meta_set(sd, "lr", "%a", (double)c->lr);
    meta_set(sd, "beta1", "%a", (double)c->beta1);
    meta_set(sd, "seed", "%" PRIu64, c->seed);
}

/* The index of metadata key's value among names; false (with a message) when it is none. */
static bool meta_get_name(const tg_state_dict *sd, const char *path, const char *key,
                          const char *const *names, int *out, char *err, size_t n)
{
    const char *v = tg_state_dict_meta(sd, key);
    for (int i = 0; v && names[i]; i++)
        if (!strcmp(v, names[i])) {
            *out = i;
            return true;
        }
    snprintf(err, n, "%s: metadata \"%s\" is %s", path, key,
             v ? "not one of the known names" : "missing (not a mnist_gan checkpoint?)");
    return false;
}

static bool settings_get(const tg_state_dict *sd, const char *path, run_settings *r, char *err,
                         size_t n)
{
    const char *fmt = tg_state_dict_meta(sd, "format");
    const bool v1 = fmt && strcmp(fmt, CHECKPOINT_FORMAT_1) == 0;
    if (!fmt || (!v1 && strcmp(fmt, CHECKPOINT_FORMAT) != 0)) {
        snprintf(err, n, "%s: not a mnist_gan checkpoint (metadata format is %s%s%s, expected "
                 "%s)", path, fmt ? "\"" : "", fmt ? fmt : "missing", fmt ? "\"" : "",
                 CHECKPOINT_FORMAT);
        return false;
    }
    double lr = 0, beta1 = 0;
    long long batch = 0, block = 0;
    int recipe = 0, generator = 0, step = -1, init = GAN_INIT_TORCH;
    int adam = TG_ADAM_EPS_AFTER_CORRECTION;
    bool ok = meta_get(sd, path, "recipe", err, n, 1, "%d", &recipe) &&
              meta_get(sd, path, "generator", err, n, 1, "%d", &generator) &&
              meta_get(sd, path, "digit", err, n, 1, "%d", &r->digit) &&
              meta_get(sd, path, "width_div", err, n, 1, "%d", &r->width_div) &&
              meta_get(sd, path, "batch", err, n, 1, "%lld", &batch) &&
              meta_get(sd, path, "lr", err, n, 1, "%la", &lr) &&
              meta_get(sd, path, "beta1", err, n, 1, "%la", &beta1) &&
              meta_get(sd, path, "seed", err, n, 1, "%" SCNu64, &r->cfg.seed);
    if (ok && v1) {
        /* format 1: step 0 accumulated (it was called "tutorial"), 1 was clean */
        ok = meta_get(sd, path, "step", err, n, 1, "%d", &step);
        step = step == 0 ? GAN_STEP_ACCUMULATE : step == 1 ? GAN_STEP_CLEAN : -1;
    } else if (ok) {
        ok = meta_get_name(sd, path, "step", gan_step_names, &step, err, n) &&
             meta_get_name(sd, path, "init", gan_init_names, &init, err, n) &&
             meta_get_name(sd, path, "adam", gan_adam_names, &adam, err, n) &&
             meta_get(sd, path, "shuffle_block", err, n, 1, "%lld", &block);
    }
    if (ok && (recipe < 0 || recipe > 1 || generator < 0 || generator > 1 || step < 0 ||
               r->digit < -1 || r->digit > 9 || r->width_div < 1 || r->width_div > 64 ||
               batch < 2 || block < 0)) {
        snprintf(err, n, "%s: metadata holds settings out of range", path);
        ok = false;
    }
    r->cfg.recipe = (gan_recipe)recipe, r->cfg.generator = (gan_generator)generator;
    r->cfg.step = (gan_step_mode)step, r->cfg.init = (gan_init)init;
    r->cfg.adam_eps = (tg_adam_eps)adam, r->cfg.shuffle_block = block;
    r->batch = batch, r->cfg.lr = (float)lr, r->cfg.beta1 = (float)beta1;
    return ok;
}

/* Training position. */
typedef struct {
    int64_t iteration;
    double seconds;
    tg_loader_state loader;
} run_position;

static tg_status save_checkpoint(const char *path, const gan_state *s, const run_settings *rs,
                                 const run_position *pos)
{
    tg_state_dict *sd = tg_state_dict_new();
    if (!sd)
        return tg_last_status();
    tg_status st = gan_state_dict(s, sd);
    if (st == TG_OK) {
        settings_put(sd, rs);
        meta_set(sd, "iteration", "%lld", (long long)pos->iteration);
        meta_set(sd, "seconds", "%a", pos->seconds);
        meta_set(sd, "epoch", "%lld", (long long)pos->loader.epoch);
        meta_set(sd, "batch_in_epoch", "%lld", (long long)pos->loader.batch);
        meta_set_rng(sd, "loader_rng", &pos->loader.epoch_rng);
        meta_set_rng(sd, "z_rng", &s->z_rng);
        st = tg_data_save_safetensors(sd, path);
    }
    tg_state_dict_free(sd);
    return st;
}

/* ---- train ----------------------------------------------------------------------------------- */

static bool file_exists(const char *p)
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
            snprintf(err, n, "%s differs from the checkpoint being resumed; drop it (--resume "
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

static const char *data_dir_of(const gan_options *o)
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
            "==============================", width - done, "", (long long)it,
            (long long)total, rate, (int)(eta / 3600), (int)fmod(eta / 60, 60),
            (int)fmod(eta, 60));
    fflush(stderr);
}

static const char *const recipe_names[] = {"tutorial", "dcgan"};
static const char *const gen_names[] = {"upsample", "convt"};

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
           "rarest class %d at %.1f%%, %d/%d classes >= 5%%, white %.3f\n", (long long)it,
           (long long)f.n, f.fid, f.score, f.rarest_class, 100.0 * f.rarest_share,
           f.classes_5pct, f.classes, f.white);
    fflush(stdout);
    return 0;
}

static int train(gan_options *o)
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
            !meta_get_rng(resume_sd, ckpt, "loader_rng", &pos.loader.epoch_rng, err,
                          sizeof err) ||
            !meta_get_rng(resume_sd, ckpt, "z_rng", &z_rng_saved, err, sizeof err)) {
            tg_state_dict_free(resume_sd);
            return fail(EXIT_BAD_INPUT, "%s", err);
        }
        pos.iteration = it, pos.loader.epoch = ep, pos.loader.batch = b;
    } else if (file_exists(ckpt)) {
        return fail(EXIT_BAD_INPUT, "%s already holds a checkpoint: pass --resume to continue "
                    "it, or choose another --out", o->out_dir);
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
                        ? " (run scripts/fetch-mnist.sh, or pass --data DIR)" : "");
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
    snprintf(title, sizeof title, "recipe %s, generator %s, step %s, init %s, adam %s, shuffle "
             "%s, batch %lld, lr %g, beta1 %g, seed %llu, %lld images%s",
             recipe_names[o->recipe],
             o->recipe == GAN_RECIPE_DCGAN ? "dcgan" : gen_names[o->generator],
             gan_step_names[o->step], gan_init_names[o->init], gan_adam_names[o->adam_eps],
             o->shuffle_block ? "paddle" : "full", (long long)o->batch, o->lr, o->beta1,
             (unsigned long long)o->seed, (long long)ds->images->shape[0],
             o->digit >= 0 ? " (one digit)" : "");
    printf("mnist_gan: %s; %lld iterations (%lld per epoch), from %lld; %d thread%s; %s\n",
           title, (long long)total, (long long)per_epoch, (long long)pos.iteration, o->threads,
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
            code = fail(1, "iteration %lld: a loss is not finite (d_real %g, d_fake %g, g %g); "
                        "rerun with TG_CHECK_FINITE=1 to find the op", (long long)it, l.d_real,
                        l.d_fake, l.g);
            goto done;
        }
        if (o->eval_every && (it % o->eval_every == 0 || it == total) &&
            (code = train_eval(&tracker, &s, log, it, tty)) != 0)
            goto done;
        if (it % o->log_every == 0 || it == total) {
            if (tty)
                fputc('\n', stderr);
            printf("epoch = %lld, batch = %lld, real_d_loss = %.4f, fake_d_loss = %.4f, "
                   "g_loss = %.4f\n", (long long)at.epoch, (long long)at.batch, l.d_real,
                   l.d_fake, l.g);
            fflush(stdout);
            snprintf(png, sizeof png, "%s/samples_%lld.png", o->out_dir, (long long)it);
            tg_tensor *img = gan_generate(&s, zfix);
            st = img ? tg_data_write_png_grid(png, img, GRID_COLS, o->grid_scale)
                     : tg_last_status();
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

/* ---- sample ---------------------------------------------------------------------------------- */

/* False when path cannot be written (no temporary file can be made beside it). */
static bool can_write(const char *path)
{
    tg_atomic_file *af = tg_atomic_open(path);
    if (af)
        tg_atomic_abort(af);
    return af != NULL;
}

/* Loads what `train` saved into a fresh state: the settings from the checkpoint's metadata, the
 * models they describe, then the weights. On failure prints the message (bad input) and
 * returns false; the caller frees *sd and *s either way. */
static bool load_trained(const char *path, tg_state_dict **sd, run_settings *rs, gan_state *s)
{
    char err[1024];
    if (!(*sd = tg_data_load_safetensors(path))) {
        fail(EXIT_BAD_INPUT, "%s", tg_last_error());
        return false;
    }
    if (!settings_get(*sd, path, rs, err, sizeof err)) {
        fail(EXIT_BAD_INPUT, "%s", err);
        return false;
    }
    gan_widths w = gan_widths_default(rs->width_div);
    if (gan_state_init(s, &rs->cfg, &w) != TG_OK ||
        gan_load_state_dict(s, *sd) != TG_OK) {
        fail(EXIT_BAD_INPUT, "%s: %s", path, tg_last_error());
        return false;
    }
    return true;
}

static int sample(const gan_options *o)
{
    char idx_images[4096];
    /* An output path that cannot be written is bad input: say so before any work. */
    snprintf(idx_images, sizeof idx_images, "%s-images-idx3-ubyte",
             o->idx_prefix ? o->idx_prefix : "");
    if (!can_write(o->png_out) || (o->idx_prefix && !can_write(idx_images)))
        return fail(EXIT_BAD_INPUT, "%s", tg_last_error());
    tg_state_dict *sd = NULL;
    run_settings rs;
    gan_state s = {0};
    tg_tensor *img = NULL;
    int code = EXIT_BAD_INPUT;
    if (!load_trained(o->checkpoint, &sd, &rs, &s))
        goto done;
    img = gan_generate_n(&s, o->n, o->seed);
    code = 1;
    if (!img || tg_data_write_png_grid(o->png_out, img, GRID_COLS, o->grid_scale) != TG_OK) {
        fail(code, "%s", tg_last_error());
        goto done;
    }
    if (o->idx_prefix) {
        char p[4096];
        snprintf(p, sizeof p, "%s-images-idx3-ubyte", o->idx_prefix);
        if (tg_data_write_idx_images(p, img) != TG_OK) {
            fail(code, "%s", tg_last_error());
            goto done;
        }
        if (rs.digit >= 0) { /* a one-digit model: its images are all of that class */
            tg_tensor *labels = tg_tensor_full(TG_DIMS(o->n), (float)rs.digit);
            snprintf(p, sizeof p, "%s-labels-idx1-ubyte", o->idx_prefix);
            tg_status st = tg_data_write_idx_labels(p, labels);
            tg_release(labels);
            if (st != TG_OK) {
                fail(code, "%s", tg_last_error());
                goto done;
            }
        }
    }
    printf("mnist_gan: %lld images from %s in %s%s%s\n", (long long)o->n, o->checkpoint,
           o->png_out, o->idx_prefix ? " and " : "", o->idx_prefix ? o->idx_prefix : "");
    code = 0;
done:
    tg_release(img);
    gan_state_free(&s);
    tg_state_dict_free(sd);
    return code;
}

/* ---- eval ------------------------------------------------------------------------------------ */

/* eval --images: the first n images of an idx3 file read by tg_data_read_idx (0..255,
 * [N,H,W] or [N,1,H,W]) in the loader's [-1, 1], shaped like the real set's images `like`, so
 * images made by another program (PyTorch's, say) are measured exactly as G's are. */
static tg_tensor *images_like(const tg_tensor *raw, const char *path, int64_t n,
                              const tg_tensor *like)
{
    int64_t shape[TG_MAX_DIMS];
    memcpy(shape, like->shape, sizeof shape);
    shape[0] = n;
    char got[64];
    tg_tensor *out = NULL;
    if (raw->ndim < 3 || raw->numel / raw->shape[0] != like->numel / like->shape[0] ||
        raw->shape[raw->ndim - 1] != like->shape[like->ndim - 1]) {
        tg_set_error(TG_ERR_SHAPE, "%s: images %s, expected [N, %lld, %lld] like the real set's",
                     path, tg_shape_str(raw->ndim, raw->shape, got, sizeof got),
                     (long long)like->shape[like->ndim - 2],
                     (long long)like->shape[like->ndim - 1]);
    } else if (raw->shape[0] < n) {
        tg_set_error(TG_ERR_SHAPE, "%s holds %lld images, fewer than --n %lld", path,
                     (long long)raw->shape[0], (long long)n);
    } else if ((out = tg_tensor_new(like->ndim, shape))) {
        for (int64_t i = 0; i < out->numel; i++) /* dataset.c's scaling */
            out->data[i] = raw->data[i] * (2.0f / 255.0f) - 1.0f;
    }
    return out;
}

/* The figures of the checkpoint's G (or of --images) against real test images, with real
 * training images against the same test images as the reference row; the table on stdout, one
 * JSON line appended to --json (default eval.jsonl beside the checkpoint or the images). */
static int evaluate(const gan_options *o)
{
    char err[1024], json[4096];
    tg_state_dict *sd = NULL;
    int code = EXIT_BAD_INPUT;
    run_settings rs;
    long long iteration;
    gan_state s = {0};
    clf_model *clf = NULL;
    clf_info info;
    tg_dataset *test = NULL, *train_set = NULL;
    tg_tensor *real_test = NULL, *real_train = NULL, *gen = NULL, *raw_images = NULL;
    gan_stats ref = {0};
    gan_figures figs[3];
    const char *measured = o->images ? o->images : o->checkpoint;
    if (o->images) {
        rs = (run_settings){.digit = -1}, iteration = -1;
        if (!(raw_images = tg_data_read_idx(o->images))) {
            fail(code, "%s", tg_last_error());
            goto done;
        }
    } else {
        if (!load_trained(o->checkpoint, &sd, &rs, &s))
            goto done;
        if (!meta_get(sd, o->checkpoint, "iteration", err, sizeof err, 1, "%lld",
                      &iteration)) {
            fail(code, "%s", err);
            goto done;
        }
    }
    const char *slash = strrchr(measured, '/');
    if (o->json_path)
        snprintf(json, sizeof json, "%s", o->json_path);
    else
        snprintf(json, sizeof json, "%.*seval.jsonl", slash ? (int)(slash - measured + 1) : 0,
                 measured);
    if (!can_write(json) || !(clf = clf_load(o->classifier, &info))) {
        fail(code, "%s", tg_last_error());
        goto done;
    }
    const char *dir = data_dir_of(o);
    if (!(test = tg_data_load_mnist(dir, false, rs.digit)) ||
        !(train_set = tg_data_load_mnist(dir, true, rs.digit))) {
        fail(code, "%s%s", tg_last_error(), !o->data_dir && !strcmp(dir, MNIST_DIR)
                   ? " (run scripts/fetch-mnist.sh, or pass --data DIR)" : "");
        goto done;
    }
    const int64_t n_test = test->images->shape[0], n_train = train_set->images->shape[0];
    if (o->n > n_test || o->n > n_train) {
        fail(code, "--n %lld: the %s set of %s has %lld images%s", (long long)o->n,
             o->n > n_test ? "test" : "training", dir, (long long)(o->n > n_test ? n_test
                                                                                  : n_train),
             rs.digit >= 0 ? " of the checkpoint's digit" : "");
        goto done;
    }
    code = 1;
    /* Real subsets by fixed permutations (the same images for every checkpoint and seed). */
    if (!(real_test = gan_subset(test->images, o->n, GAN_TEST_SUBSET_SEED)) ||
        !(real_train = gan_subset(train_set->images, o->n, GAN_TRAIN_SUBSET_SEED))) {
        fail(code, "%s", tg_last_error());
        goto done;
    }
    tg_dataset_free(train_set), train_set = NULL;
    if (raw_images && !(gen = images_like(raw_images, o->images, o->n, real_test))) {
        code = fail(EXIT_BAD_INPUT, "%s", tg_last_error());
        goto done;
    }
    if (gan_evaluate_images(clf, real_test, NULL, &figs[2], &ref) != TG_OK ||
        (!gen && !(gen = gan_generate_n(&s, o->n, o->seed))) ||
        gan_evaluate_images(clf, gen, &ref, &figs[0], NULL) != TG_OK ||
        gan_evaluate_images(clf, real_train, &ref, &figs[1], NULL) != TG_OK) {
        fail(code, "%s", tg_last_error());
        goto done;
    }
    if (o->images)
        printf("mnist_gan eval: the first %lld images of %s", (long long)o->n, o->images);
    else
        printf("mnist_gan eval: %s (iteration %lld, recipe %s%s), seed %llu", o->checkpoint,
               iteration, recipe_names[rs.cfg.recipe], rs.digit >= 0 ? ", one digit" : "",
               (unsigned long long)o->seed);
    printf(", classifier %s (test accuracy %.2f%%), %lld images per set, data %s\n\n",
           o->classifier, 100.0 * info.test_accuracy, (long long)o->n, dir);
    static const char *const names[3] = {"generated", "real train (reference)", "real test"};
    gan_figures_table(stdout, 3, names, figs);

    FILE *jf = fopen(json, "a");
    if (!jf) {
        fail(code, "%s: %s", json, strerror(errno));
        goto done;
    }
    fprintf(jf, "{\"%s\": ", o->images ? "images" : "checkpoint");
    gan_json_string(jf, measured);
    if (!o->images)
        fprintf(jf, ", \"iteration\": %lld", iteration);
    fputs(", \"classifier\": ", jf);
    gan_json_string(jf, o->classifier);
    fprintf(jf, ", \"classifier_test_accuracy\": %.6f, \"data\": ", info.test_accuracy);
    gan_json_string(jf, dir);
    fprintf(jf, ", \"digit\": %d, \"n\": %lld, \"seed\": %llu", rs.digit, (long long)o->n,
            (unsigned long long)o->seed);
    static const char *const keys[3] = {"generated", "real_train", "real_test"};
    for (int i = 0; i < 3; i++) {
        fprintf(jf, ", \"%s\": ", keys[i]);
        gan_figures_json(jf, &figs[i]);
    }
    fputs("}\n", jf);
    if (ferror(jf) | (fclose(jf) != 0)) {
        fail(code, "%s: writing failed", json);
        goto done;
    }
    printf("\nFID and score are on mnist_classifier's features, not Inception's: compare them "
           "between checkpoints and with the reference row. Appended to %s\n", json);
    code = 0;
done:
    gan_stats_free(&ref);
    tg_release(gen);
    tg_release(raw_images);
    tg_release(real_train);
    tg_release(real_test);
    tg_dataset_free(train_set);
    tg_dataset_free(test);
    clf_free(clf);
    gan_state_free(&s);
    tg_state_dict_free(sd);
    return code;
}

int main(int argc, char **argv)
{
    gan_options o;
    char err[1024];
    if (!gan_parse_args(argc, argv, &o, err, sizeof err))
        return fail(EXIT_BAD_INPUT, "%s", err);
    if (o.cmd == CMD_HELP) {
        fputs(gan_usage(), stdout);
        return 0;
    }
    if (tg_set_num_threads(o.threads) != TG_OK)
        return fail(EXIT_BAD_INPUT, "%s", tg_last_error());
    int code = o.cmd == CMD_TRAIN ? train(&o) : o.cmd == CMD_EVAL ? evaluate(&o) : sample(&o);
    tg_allocator_trim();
    /* Everything is freed by now, so anything still counted is a leak: a failure of a run that
     * otherwise succeeded. TG_REPORT_LIVE=1 prints the counters anyway, for bench/rss_long.py. */
    long long tensors = (long long)tg_debug_live_tensors();
    long long nodes = (long long)tg_debug_live_nodes(), bytes = (long long)tg_debug_live_bytes();
    const char *report = getenv("TG_REPORT_LIVE");
    if (report && *report && strcmp(report, "0") != 0)
        fprintf(stderr, "mnist_gan: at exit: %lld live tensors, %lld live nodes, %lld live bytes\n",
                tensors, nodes, bytes);
    if (code == 0 && (tensors != 0 || nodes != 0 || bytes != 0))
        return fail(1, "internal: %lld tensors, %lld nodes, %lld bytes still alive at exit",
                    tensors, nodes, bytes);
    return code;
}
