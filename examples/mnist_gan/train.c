/* mnist_gan train: the training loop, its logs, grids, measurements and checkpoints, and
 * --resume. */
#include "app.h"
#include "checkpoint.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- train ----------------------------------------------------------------------------------- */

bool file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

/* ---- the output folder ------------------------------------------------------------------
 * Nothing is created before the run is known to be good (issue 19: `--out a/b/c` with missing
 * data made all three): out_dir_check only looks, make_out_dir creates, after validation. */

/* Whether dir can be the output folder, without creating anything: *exists tells whether it is
 * already there (then it must be a folder that can be written), else the nearest existing
 * parent must be a writable folder. False with a message. */
static bool out_dir_check(const char *dir, bool *exists, char *err, size_t n)
{
    struct stat st;
    int e = stat(dir, &st) == 0 ? 0 : errno;
    *exists = e == 0;
    if (*exists && !S_ISDIR(st.st_mode)) {
        snprintf(err, n, "--out %s is not a folder", dir);
        return false;
    }
    if (*exists) {
        char probe[4096];
        snprintf(probe, sizeof probe, "%s/.mnist_gan_write_test", dir);
        tg_atomic_file *af = tg_atomic_open(probe); /* a temporary file, removed at once */
        if (!af) {
            snprintf(err, n, "cannot write in the output folder %s: %s", dir, tg_last_error());
            return false;
        }
        tg_atomic_abort(af);
        return true;
    }
    /* Up to the nearest parent that exists: mkdir -p will make the rest. */
    char up[4096];
    snprintf(up, sizeof up, "%s", dir);
    while (e == ENOENT && strcmp(up, ".") != 0 && strcmp(up, "/") != 0) {
        char *slash = strrchr(up, '/');
        while (slash && slash > up && slash[1] == '\0') /* "a/b/" */
            *slash = '\0', slash = strrchr(up, '/');
        if (!slash)
            snprintf(up, sizeof up, ".");
        else
            slash[slash == up] = '\0'; /* "/a" -> "/" */
        e = stat(up, &st) == 0 ? (S_ISDIR(st.st_mode) ? 0 : ENOTDIR) : errno;
        if (e == 0 && access(up, W_OK | X_OK) != 0)
            e = errno;
    }
    if (e != 0) {
        snprintf(err, n, "cannot create the output folder %s: %s", dir, strerror(e));
        return false;
    }
    return true;
}

/* Creates dir and its parents (out_dir_check said they can be); false with a message. */
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
    return true;
}

/* ---- one train per output folder -------------------------------------------------------
 * Two trains on one --out interleave losses.csv and overwrite each other's checkpoints, so a
 * train holds flock() on the folder itself for its whole run. flock creates nothing (a refused
 * run changes no file) and the kernel releases it when the holder ends, however it ends: a
 * SIGKILLed train leaves no stale lock. Once its run is validated, the holder writes the note
 * OUT/.lock (pid, host, start time) that a refused train prints, and removes it at its end.
 * sample and eval take no lock: they only read the checkpoint, which every save replaces whole
 * (a rename), and write files train never writes. */
#define LOCK_NOTE ".lock"

typedef struct {
    int fd;    /* the folder, locked; -1: not locked */
    bool note; /* OUT/.lock written by this run */
} out_lock;

/* Who holds dir's lock, from its note: "pid P on HOST since TIME", escaped, or "starting" when
 * there is no note yet or it names a process of this host that has ended (a note a killed
 * train left behind). */
static void lock_holder(const char *dir, char *who, size_t n)
{
    char path[4096], line[256] = "", host[256] = "", note_host[256];
    snprintf(path, sizeof path, "%s/%s", dir, LOCK_NOTE);
    FILE *f = tg_data_fopen_regular(path, "r"); /* a FIFO put there must not hang the refusal */
    if (f) {
        if (!fgets(line, sizeof line, f))
            line[0] = '\0';
        fclose(f);
    }
    line[strcspn(line, "\n")] = '\0';
    int pid = 0;
    gethostname(host, sizeof host - 1);
    bool gone = sscanf(line, "pid %d on %255s", &pid, note_host) == 2 && !strcmp(note_host, host) &&
                pid > 0 && kill(pid, 0) != 0 && errno == ESRCH;
    if (!line[0] || gone)
        snprintf(who, n, "starting");
    else
        tg_escape(who, n, line, strlen(line));
}

/* Takes dir's lock for this run; 0, or the exit status after saying why (2 when another train
 * holds it). A file system without flock (NFS maps it to write locks, which a folder cannot
 * take) leaves the run unlocked, with a warning. */
static int lock_out_dir(const char *dir, out_lock *lk)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return fail(EXIT_BAD_INPUT, "cannot open the output folder %s: %s", dir, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
        lk->fd = fd;
        return 0;
    }
    int e = errno;
    close(fd);
    if (e == EWOULDBLOCK) {
        char who[256];
        lock_holder(dir, who, sizeof who);
        return fail(EXIT_BAD_INPUT,
                    "%s is in use by another mnist_gan train (%s): wait for it to end, or "
                    "choose another --out",
                    dir, who);
    }
    fprintf(stderr,
            "mnist_gan: warning: cannot lock %s (%s): a second train there would not "
            "be refused\n",
            dir, strerror(e));
    return 0;
}

/* Writes the lock's note, naming this process; false with the error set. */
static bool lock_note_write(const char *dir, out_lock *lk)
{
    char path[4096], host[256] = "", since[64] = "";
    snprintf(path, sizeof path, "%s/%s", dir, LOCK_NOTE);
    gethostname(host, sizeof host - 1);
    time_t t = time(NULL);
    struct tm tm;
    if (gmtime_r(&t, &tm))
        strftime(since, sizeof since, "%Y-%m-%d %H:%M:%S UTC", &tm);
    tg_atomic_file *af = tg_atomic_open(path);
    if (!af)
        return false;
    fprintf(tg_atomic_stream(af), "pid %d on %s since %s\n", (int)getpid(), host, since);
    if (tg_atomic_commit(af) != TG_OK)
        return false;
    lk->note = true;
    return true;
}

/* Removes the note (while still holding the lock, so it cannot be another run's) and
 * releases the lock. */
static void unlock_out_dir(const char *dir, out_lock *lk)
{
    if (lk->note) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, LOCK_NOTE);
        unlink(path);
    }
    if (lk->fd >= 0)
        close(lk->fd);
    *lk = (out_lock){.fd = -1};
}

/* The files train replaces in OUT, each through tg_atomic_open, which replaces only a regular
 * file (the grids samples_<it>.png aside: new names as the run goes). */
static const char *const replaced_files[] = {CHECKPOINT_NAME, "losses.csv", "losses.svg",
                                             "report.html",   "eval.csv",   LOCK_NOTE};

/* Whether every file of replaced_files that exists in dir is a regular file, checked before any
 * work: otherwise the first save would fail after training (issue 19: a symbolic link as
 * OUT/checkpoint.safetensors). False with tg_atomic_open's refusal, naming --out, in err. */
static bool out_files_check(const char *dir, char *err, size_t n)
{
    for (size_t i = 0; i < sizeof replaced_files / sizeof replaced_files[0]; i++) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, replaced_files[i]);
        /* can_write names what the file is; a regular one needs no probe */
        if (lstat(path, &st) == 0 && !S_ISREG(st.st_mode) && !can_write("--out", path, err, n))
            return false;
    }
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
        {GIVEN_PER_CLASS, "--train-per-class", o->per_class != r->per_class},
        {GIVEN_WIDTH, "--width-div", o->width_div != r->width_div},
        {GIVEN_BATCH, "--batch", o->batch != r->batch},
        {GIVEN_LR, "--lr", o->lr != c->lr},
        {GIVEN_BETA1, "--beta1", o->beta1 != c->beta1},
        {GIVEN_BETA2, "--beta2", o->beta2 != c->beta2},
        {GIVEN_SEED, "--seed", o->seed != c->seed},
        {GIVEN_N_CRITIC, "--n-critic", o->n_critic != c->n_critic},
        {GIVEN_GP_LAMBDA, "--gp-lambda", o->gp_lambda != c->gp_lambda},
        {GIVEN_CRITIC_NORM, "--critic-norm", o->critic_norm != c->critic_norm},
        {GIVEN_MATMUL, "--matmul", o->matmul != r->matmul},
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
    o->digit = r->digit, o->width_div = r->width_div, o->per_class = r->per_class;
    o->batch = r->batch, o->lr = c->lr, o->beta1 = c->beta1, o->seed = c->seed;
    o->beta2 = c->beta2, o->n_critic = c->n_critic, o->gp_lambda = c->gp_lambda;
    o->critic_norm = c->critic_norm, o->matmul = r->matmul;
    return gan_recipe_flags_check(o, err, n);
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

const char *gan_generator_label(gan_recipe recipe, gan_generator gen)
{
    return GAN_CONDITIONAL(recipe)         ? "conditional dcgan"
           : recipe != GAN_RECIPE_TUTORIAL ? "dcgan"
                                           : gan_generator_names[gen];
}

/* The noise of the generated images measured during training: the same at every measurement,
 * from the run's seed. */
#define EVAL_NOISE_STREAM 0xe7a1ull

/* A conditional G's grid: the first GRID_COLS noise vectors of *z in every row, row d drawn
 * for digit d, so a row shows one digit and a column one z. Replaces *z ([GRID_N, nz]) with
 * those [10 * GRID_COLS, nz] and makes *y, the labels; false with the error set. */
static bool digit_rows(tg_tensor **z, tg_tensor **y)
{
    const int64_t n = 10 * GRID_COLS, nz = (*z)->shape[1];
    tg_tensor *rows = tg_tensor_new(TG_DIMS(n, nz));
    *y = tg_tensor_new(TG_DIMS(n));
    if (!rows || !*y) {
        tg_tensor_release(rows);
        return false;
    }
    for (int64_t i = 0; i < n; i++) {
        memcpy(rows->data + i * nz, (*z)->data + (i % GRID_COLS) * nz, sizeof(float) * (size_t)nz);
        (*y)->data[i] = (float)(i / GRID_COLS);
    }
    tg_tensor_release(*z);
    *z = rows;
    return true;
}

/* train --eval-every: measures G, logs the figures (OUT/eval.csv, the report's FID curve) and
 * prints a line; 0, or the exit status after saying what failed. */
static int train_eval(gan_tracker *t, gan_state *s, gan_log *log, int64_t it, bool tty)
{
    gan_figures f;
    /* measured as eval measures it, in FP32, whatever --matmul trains in */
    const tg_matmul_precision trained = tg_get_matmul_precision();
    tg_set_matmul_precision(TG_MATMUL_FP32);
    const tg_status st = gan_tracker_eval(t, s, &f);
    tg_set_matmul_precision(trained);
    if (st != TG_OK || gan_log_eval(log, it, &f) != TG_OK)
        return fail(1, "evaluating iteration %lld: %s", (long long)it, tg_last_error());
    if (tty)
        fputc('\n', stderr);
    printf("eval: iteration %lld, %lld images, FID (classifier features) %.3f, score %.3f, "
           "rarest class %d at %.1f%%, %d/%d classes >= 5%%, white %.3f, diversity %.3f\n",
           (long long)it, (long long)f.n, f.fid, f.score, f.rarest_class, 100.0 * f.rarest_share,
           f.classes_5pct, f.classes, f.white, f.diversity);
    fflush(stdout);
    return 0;
}

/* train --resume: the checkpoint in OUT read and checked, and its settings adopted into o;
 * 0, or the exit status after saying why. */
static int resume_load(gan_options *o, const char *ckpt, tg_state_dict **sd, run_position *pos,
                       tg_rng *z_rng, int ranks)
{
    char err[1024];
    run_settings rs;
    if (!file_exists(ckpt))
        return fail(EXIT_BAD_INPUT, "--resume: %s does not exist", ckpt);
    if (!(*sd = tg_data_load_safetensors(ckpt)))
        return fail(input_failure(), "%s", tg_last_error());
    if (!settings_get(*sd, ckpt, &rs, err, sizeof err) ||
        !checkpoint_check_values(*sd, ckpt, err, sizeof err) ||
        !adopt_settings(o, &rs, err, sizeof err) ||
        !position_get(*sd, ckpt, pos, z_rng, err, sizeof err))
        return fail(EXIT_BAD_INPUT, "%s", err);
    /* Each rank's share of the batches and of the noise depends on how many there are. */
    if (rs.ranks != ranks)
        return fail(EXIT_BAD_INPUT,
                    "--resume: %s was trained by %d rank%s; resume it with as many (%s), not %d",
                    ckpt, rs.ranks, rs.ranks == 1 ? " (one process)" : "s",
                    rs.ranks == 1 ? "without mpirun" : "mpirun -np N with N the same", ranks);
    return 0;
}

/* gan_state.sync_grads under MPI: m's gradients averaged over the ranks; m NULL, this rank's
 * backward failed: that failure agreed on, so every rank stops. */
static tg_status sync_grads(void *ctx, tg_module *m)
{
    return m ? dp_allreduce_module_grads(ctx, m) : dp_agree(ctx, tg_last_status());
}

/* The images of ds labelled digit (-1: all of them, ds itself), as a new dataset; ds is freed
 * either way. NULL with the error set. */
static tg_dataset *keep_digit(tg_dataset *ds, int digit)
{
    if (!ds || digit < 0)
        return ds;
    const int64_t total = ds->labels->numel, per = total ? ds->images->numel / total : 0;
    int64_t kept = 0;
    for (int64_t i = 0; i < total; i++)
        kept += ds->labels->data[i] == (float)digit;
    int64_t shape[TG_MAX_DIMS];
    memcpy(shape, ds->images->shape, sizeof shape);
    shape[0] = kept;
    tg_dataset *out = calloc(1, sizeof *out);
    if (out) {
        out->images = tg_tensor_new(ds->images->ndim, shape);
        out->labels = tg_tensor_new(TG_DIMS(kept));
    }
    if (!out || !out->images || !out->labels) {
        if (!out)
            tg_set_error(TG_ERR_NOMEM, "keep_digit: out of memory");
        tg_dataset_free(out), tg_dataset_free(ds);
        return NULL;
    }
    for (int64_t i = 0, j = 0; i < total; i++)
        if (ds->labels->data[i] == (float)digit) {
            memcpy(out->images->data + j * per, ds->images->data + i * per,
                   sizeof(float) * (size_t)per);
            out->labels->data[j++] = (float)digit;
        }
    tg_dataset_free(ds);
    return out;
}

/* The training images of o's data, checked to be 28x28 and enough for a batch; NULL after
 * saying why (*code: the exit status). With --train-per-class N the subset is
 * tg_dataset_per_class(every training image, N, --seed), the seed passed as it is, so that
 * mnist_classifier's --train-per-class N --seed S gets the same images; --digit then keeps
 * that subset's N images of the digit (the classifier's images of it, not another N). */
static tg_dataset *load_training_set(const gan_options *o, int *code)
{
    const char *dir = data_dir_of(o);
    tg_dataset *ds = tg_data_load_mnist(dir, true, o->per_class ? -1 : o->digit);
    *code = EXIT_BAD_INPUT;
    if (ds && o->per_class) {
        tg_dataset *sub = tg_dataset_per_class(ds, o->per_class, o->seed);
        tg_dataset_free(ds);
        if (!(ds = keep_digit(sub, o->digit))) {
            *code = fail(input_failure(), "--train-per-class %lld: %s: %s", (long long)o->per_class,
                         dir, tg_last_error());
            return NULL;
        }
    }
    if (!ds) {
        *code = fail(input_failure(), "%s%s", tg_last_error(),
                     !o->data_dir && !strcmp(dir, MNIST_DIR)
                         ? " (run scripts/fetch-mnist.sh, or pass --data DIR)"
                         : "");
        return NULL;
    }
    const int64_t count = ds->images->shape[0];
    if (ds->images->shape[2] != 28 || ds->images->shape[3] != 28)
        fail(EXIT_BAD_INPUT, "%s: images are %lldx%lld; the models need 28x28", dir,
             (long long)ds->images->shape[2], (long long)ds->images->shape[3]);
    else if (count == 0 && o->digit >= 0)
        fail(EXIT_BAD_INPUT, "--digit %d: no images of digit %d in %s", o->digit, o->digit, dir);
    else if (count < o->batch) {
        char subset[96] = "";
        if (o->per_class)
            snprintf(subset, sizeof subset, " in its --train-per-class %lld subset",
                     (long long)o->per_class);
        fail(EXIT_BAD_INPUT, "--batch %lld: %s has %lld training images%s%s", (long long)o->batch,
             dir, (long long)count, o->digit >= 0 ? " of that digit" : "", subset);
    } else
        return ds;
    tg_dataset_free(ds);
    return NULL;
}

int train(gan_options *o, tg_dist *d)
{
    char err[1024], ckpt[4096], png[4096], title[512];
    bool out_exists = false;
    out_lock lock = {.fd = -1};
    /* Under MPI rank 0 alone writes (the folder, its lock, logs, grids, checkpoints); every
     * rank reads --resume's checkpoint (a shared folder, or a copy on every machine). */
    const bool writer = dp_rank(d) == 0;
    int64_t local_batch = o->batch;
    tg_tensor *losses = NULL; /* under MPI: the iteration's losses, averaged over the ranks */
    /* Everything is checked before anything is made or written: the output folder (and, when
     * it exists, its lock: so that what is read from it is not another run's half-way), the
     * checkpoint being resumed, the data, the classifier, the models. Under MPI every rank
     * checks its part and they agree on the outcome (agree_failure) before any collective. */
    tg_state_dict *resume_sd = NULL;
    run_position pos = {0};
    tg_rng z_rng_saved;
    tg_dataset *ds = NULL;
    tg_loader *loader = NULL;
    gan_log *log = NULL;
    tg_tensor *zfix = NULL, *yfix = NULL; /* yfix: a conditional G's grid labels */
    gan_state s = {0};
    gan_tracker tracker = {0}; /* --eval-every */
    /* the run's length, from the loader */
    bool wgan = false;
    int64_t per_epoch = 0, per_it = 1, epoch_its = 1, total = 0;
    keep_failures = true;
    int code = 0;
    snprintf(ckpt, sizeof ckpt, "%s/%s", o->out_dir, CHECKPOINT_NAME);
    if (writer && !out_dir_check(o->out_dir, &out_exists, err, sizeof err)) {
        code = fail(EXIT_BAD_INPUT, "%s", err);
        goto agreed;
    }
    if ((code = out_exists ? lock_out_dir(o->out_dir, &lock) : 0) != 0)
        goto agreed;
    if (out_exists && !out_files_check(o->out_dir, err, sizeof err)) {
        code = fail(EXIT_BAD_INPUT, "%s", err);
        goto agreed;
    }

    if (o->resume) {
        if ((code = resume_load(o, ckpt, &resume_sd, &pos, &z_rng_saved, dp_size(d))) != 0)
            goto agreed;
    } else if (writer && file_exists(ckpt)) {
        code = fail(EXIT_BAD_INPUT,
                    "%s already holds a checkpoint: pass --resume to continue it, or choose "
                    "another --out",
                    o->out_dir);
        goto agreed;
    }
    /* The batch (perhaps the checkpoint's) splits evenly over the ranks. */
    if (dp_local_batch(d, o->batch, &local_batch) != TG_OK) {
        code = fail(EXIT_BAD_INPUT, "--batch %lld: %s", (long long)o->batch, tg_last_error());
        goto agreed;
    }
    const char *dir = data_dir_of(o);
    if (!(ds = load_training_set(o, &code)))
        goto agreed;
    if (!(loader = tg_loader_new(ds, o->batch, o->seed ^ 0x10ade7ull)) ||
        tg_loader_set_shuffle_block(loader, o->shuffle_block) != TG_OK) {
        code = fail(input_failure(), "%s", tg_last_error());
        goto agreed;
    }
    per_epoch = tg_loader_batches_per_epoch(loader);
    /* wgan-gp's iteration (one G step) takes n_critic real batches; an epoch is still one
     * pass over the data, at least one iteration */
    wgan = o->recipe == GAN_RECIPE_WGAN_GP;
    per_it = wgan ? o->n_critic : 1;
    epoch_its = per_epoch / per_it > 0 ? per_epoch / per_it : 1;
    total = o->iters ? o->iters : o->epochs * epoch_its;
    pos.batches_per_iteration = per_it;
    if (resume_sd && !position_check(&pos, per_epoch, total, ckpt, err, sizeof err)) {
        code = fail(EXIT_BAD_INPUT, "%s", err);
        goto agreed;
    }
    if (writer && o->eval_every &&
        gan_tracker_open(&tracker, o->classifier, dir, o->digit, o->eval_n,
                         o->seed ^ EVAL_NOISE_STREAM) != TG_OK) {
        code = fail(input_failure(), "%s", tg_last_error());
        goto agreed;
    }
    gan_widths w = gan_widths_default(o->width_div);
    const gan_config cfg = gan_options_config(o);
    /* Resumed, the settings are the checkpoint's: a failure to build or load the models is
     * then the file's (bad input, naming it); otherwise the flags were checked, and it is ours. */
    if (gan_state_init(&s, &cfg, &w) != TG_OK ||
        (resume_sd && (gan_load_state_dict(&s, resume_sd) != TG_OK ||
                       tg_loader_set_state(loader, &pos.loader) != TG_OK))) {
        code = resume_sd ? fail(input_failure(), "%s: %s", ckpt, tg_last_error())
                         : fail(1, "%s", tg_last_error());
        goto agreed;
    }
    default_gen_label(&s, o->digit); /* what --eval-every measures */
    if (resume_sd) {
        s.z_rng = z_rng_saved;
        /* Loaded: the checkpoint's copy (as large as G, D and three Adams) is not kept for
         * the whole run. */
        tg_state_dict_free(resume_sd), resume_sd = NULL;
    }
    /* Validated: now the folder is made (and locked, if it was not there before: then another
     * train may have finished a run in it meanwhile) and the note names this run. */
    if (writer && !out_exists) {
        if (!make_out_dir(o->out_dir, err, sizeof err)) {
            code = fail(EXIT_BAD_INPUT, "%s", err);
            goto agreed;
        }
        if ((code = lock_out_dir(o->out_dir, &lock)) != 0)
            goto agreed;
        if (file_exists(ckpt)) {
            code = fail(EXIT_BAD_INPUT, "%s: another train saved a checkpoint there meanwhile",
                        o->out_dir);
            goto agreed;
        }
    }
    if (lock.fd >= 0 && !lock_note_write(o->out_dir, &lock)) {
        code = fail(1, "%s", tg_last_error());
        goto agreed;
    }
    code = 0; /* reached without a failure (load_training_set leaves its code set) */
agreed:
    if ((code = agree_failure(d, code)) != 0)
        goto done;
    /* One model on every rank: rank 0's weights (freshly drawn or resumed) to all, the
     * gradients averaged before every update, each rank's share of the noise, and (--sync-bn
     * on) BatchNorm over the global batch. */
    if (d) {
        s.rank = dp_rank(d), s.ranks = dp_size(d);
        s.sync_grads = sync_grads, s.sync_ctx = d;
        losses = tg_tensor_new(TG_DIMS(6));
        tg_status st = dp_agree(d, losses ? TG_OK : tg_last_status());
        if (st == TG_OK && (st = dp_broadcast_params(d, s.G)) == TG_OK &&
            (st = dp_broadcast_params(d, s.D)) == TG_OK)
            st = dp_sync_batch_norm(d, o->sync_bn);
        if (st != TG_OK) {
            code = fail(1, "%s", tg_last_error());
            goto done;
        }
    }
    code = 1;
    /* The grids' fixed noise: from the seed alone, so a resumed run shows the same z. */
    tg_rng grid_rng;
    tg_rng_seed(&grid_rng, o->seed ^ 0x9a1dull);
    zfix = tg_tensor_new(TG_DIMS(GRID_N, w.nz));
    tg_tensor_normal_(zfix, &grid_rng, 0.0f, 1.0f);
    const bool conditional = GAN_CONDITIONAL(o->recipe);
    if (!zfix || (conditional && !digit_rows(&zfix, &yfix))) {
        code = fail(1, "%s", tg_last_error());
        goto done;
    }
    if (dp_agree(d, writer && !(log = gan_log_open(o->out_dir, o->resume ? pos.iteration : -1,
                                                   o->recipe))
                        ? tg_last_status()
                        : TG_OK) != TG_OK) {
        code = fail(input_failure(), "%s", tg_last_error());
        goto done;
    }

    run_settings rs = {cfg, o->digit, o->width_div, o->batch, o->per_class, dp_size(d), o->matmul};
    tg_set_matmul_precision(o->matmul); /* a valid value: cannot fail */
    char step[160], per_class[64] = "";
    if (o->per_class)
        snprintf(per_class, sizeof per_class, ", --train-per-class %lld", (long long)o->per_class);
    if (wgan)
        snprintf(step, sizeof step, "critic norm %s, n_critic %d, gp_lambda %g, beta2 %g",
                 gan_critic_norm_names[o->critic_norm], o->n_critic, o->gp_lambda, o->beta2);
    else
        snprintf(step, sizeof step, "step %s", gan_step_names[o->step]);
    snprintf(title, sizeof title,
             "recipe %s, generator %s%s, %s, init %s, adam %s, shuffle "
             "%s, batch %lld, lr %g, beta1 %g, seed %llu, %lld images%s%s%s",
             gan_recipe_names[o->recipe], gan_generator_label(o->recipe, o->generator),
             conditional ? " (fakes for the real batch's labels)" : "", step,
             gan_init_names[o->init], gan_adam_names[o->adam_eps],
             o->shuffle_block ? "paddle" : "full", (long long)o->batch, o->lr, o->beta1,
             (unsigned long long)o->seed, (long long)ds->images->shape[0],
             o->digit >= 0 ? " (one digit)" : "", per_class,
             o->matmul == TG_MATMUL_FP32 ? ""
             : tg_matmul_bf16_active()   ? ", matmul bf16"
                                         : ", matmul bf16 asked (runs fp32: no AVX512_BF16 here)");
    printf("mnist_gan: %s; %lld iterations (%lld per epoch%s), from %lld; %d thread%s; %s\n", title,
           (long long)total, (long long)epoch_its, wgan ? ", each n_critic batches" : "",
           (long long)pos.iteration, o->threads, o->threads == 1 ? "" : "s", tg_blas_info());
    if (d)
        printf("mnist_gan: data-parallel, %d ranks x batch %lld, BatchNorm %s\n", dp_size(d),
               (long long)local_batch,
               o->sync_bn ? "synchronised (statistics of the global batch)"
                          : "per rank (statistics of each rank's share)");
    fflush(stdout);

    const bool tty = writer && isatty(2);
    const double run_start = now(), t0 = run_start - pos.seconds;
    const int64_t it0 = pos.iteration;
    int64_t it = pos.iteration;
    while (it < total) {
        tg_loader_state at = tg_loader_get_state(loader);
        tg_tensor *real[GAN_N_CRITIC_MAX] = {NULL}, *labels = NULL;
        gan_losses l;
        tg_status st = TG_OK;
        for (int64_t k = 0; k < per_it && st == TG_OK; k++)
            st = dp_loader_next(d, loader, &real[k], conditional ? &labels : NULL);
        if (st == TG_OK)
            st = wgan ? gan_step_wgan_gp(&s, real, &l)
                      : gan_step_labels(&s, real[0], labels, NULL, &l);
        for (int64_t k = 0; k < per_it; k++)
            tg_tensor_release(real[k]);
        tg_tensor_release(labels);
        /* Every rank logs the global batch's losses: the means of the ranks' means over equal
         * shares (and so every rank takes the same decisions on them below). */
        if ((st = dp_agree(d, st)) == TG_OK && losses) {
            const float v[6] = {l.d_real, l.d_fake, l.g, l.critic, l.wasserstein, l.penalty};
            memcpy(losses->data, v, sizeof v);
            if ((st = dp_allreduce_mean(d, &losses, 1)) == TG_OK)
                l = (gan_losses){losses->data[0], losses->data[1], losses->data[2],
                                 losses->data[3], losses->data[4], losses->data[5]};
        }
        if (st != TG_OK) {
            code = fail(1, "iteration %lld: %s", (long long)it + 1, tg_last_error());
            goto done;
        }
        it++;
        double secs = now() - t0;
        if (dp_agree(d, writer ? gan_log_row(log, it, at.epoch, at.batch, &l, secs) : TG_OK) !=
            TG_OK) {
            code = fail(1, "%s", tg_last_error());
            goto done;
        }
        if (wgan && (!isfinite(l.critic) || !isfinite(l.wasserstein) || !isfinite(l.penalty) ||
                     !isfinite(l.g))) {
            code = fail(1,
                        "iteration %lld: a loss is not finite (critic %g, wasserstein %g, "
                        "penalty %g, g %g); rerun with TG_CHECK_FINITE=1 to find the op",
                        (long long)it, l.critic, l.wasserstein, l.penalty, l.g);
            goto done;
        }
        if (!wgan && (!isfinite(l.d_real) || !isfinite(l.d_fake) || !isfinite(l.g))) {
            code = fail(1,
                        "iteration %lld: a loss is not finite (d_real %g, d_fake %g, g %g); "
                        "rerun with TG_CHECK_FINITE=1 to find the op",
                        (long long)it, l.d_real, l.d_fake, l.g);
            goto done;
        }
        if (o->eval_every && (it % o->eval_every == 0 || it == total) &&
            (code = agree_failure(d, writer ? train_eval(&tracker, &s, log, it, tty) : 0)) != 0)
            goto done;
        if ((it % o->log_every == 0 || it == total) && writer) {
            if (tty)
                fputc('\n', stderr);
            if (wgan)
                printf("epoch = %lld, batch = %lld, critic_loss = %.4f, wasserstein = %.4f, "
                       "penalty = %.4f, g_loss = %.4f\n",
                       (long long)at.epoch, (long long)at.batch, l.critic, l.wasserstein, l.penalty,
                       l.g);
            else
                printf("epoch = %lld, batch = %lld, real_d_loss = %.4f, fake_d_loss = %.4f, "
                       "g_loss = %.4f\n",
                       (long long)at.epoch, (long long)at.batch, l.d_real, l.d_fake, l.g);
            fflush(stdout);
            snprintf(png, sizeof png, "%s/samples_%lld.png", o->out_dir, (long long)it);
            tg_tensor *img = gan_generate_labels(&s, zfix, yfix);
            st =
                img ? tg_data_write_png_grid(png, img, GRID_COLS, o->grid_scale) : tg_last_status();
            if (st == TG_OK && o->grid_both) {
                char png2[4096];
                snprintf(png2, sizeof png2, "%s/samples_%lld_per-image.png", o->out_dir,
                         (long long)it);
                st = tg_data_write_png_grid(png2, img, GRID_COLS, TG_GRID_PER_IMAGE);
            }
            tg_tensor_release(img);
            if (st == TG_OK)
                st = gan_log_report(log, png, title);
        }
        if (it % o->log_every == 0 || it == total) { /* rank 0's grids and report: heard by all */
            if ((st = dp_agree(d, writer ? st : TG_OK)) != TG_OK) {
                code = fail(1, "%s", tg_last_error());
                goto done;
            }
        }
        tg_loader_state next = tg_loader_get_state(loader);
        if (next.epoch != at.epoch || it == total) { /* an epoch ended, or the run */
            pos = (run_position){it, secs, next, per_it};
            /* Gradients left between iterations (the accumulate step's loss_g in D) are each
             * rank's share: averaged first, which changes no later update (the next one
             * averages their sum anyway), so that the checkpoint holds the global batch's. */
            tg_status kept_st = dp_allreduce_module_grads(d, s.G);
            if (kept_st == TG_OK)
                kept_st = dp_allreduce_module_grads(d, s.D);
            if (kept_st != TG_OK ||
                dp_agree(d, writer ? save_checkpoint(ckpt, &s, &rs, &pos) : TG_OK) != TG_OK) {
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
    keep_failures = false;
    tg_tensor_release(losses);
    tg_tensor_release(zfix);
    tg_tensor_release(yfix);
    gan_log_close(log);
    gan_tracker_close(&tracker);
    gan_state_free(&s);
    tg_loader_free(loader);
    tg_dataset_free(ds);
    tg_state_dict_free(resume_sd);
    unlock_out_dir(o->out_dir, &lock);
    return code;
}
