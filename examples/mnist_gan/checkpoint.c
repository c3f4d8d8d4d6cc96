/* mnist_gan's checkpoints: the settings and position in the metadata (exact: hex words for
 * RNG states, %a for floats), the tensors from gan_state_dict, and loading a trained G. */
#include "checkpoint.h"

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Format 2 names the step, init, Adam and shuffle (and, since wgan-gp, beta2: absent, it is the
 * 0.999 every earlier run used; wgan-gp checkpoints add n_critic, gp_lambda and critic_norm;
 * since cgan (recipe 3), train_per_class: absent, it is 0, every image);
 * format 1 (before the faithful tutorial step) is still read: its step 0 was today's
 * accumulate step, with PyTorch's init and Adam and one shuffle of the whole set, and that is
 * how it resumes. */
#define CHECKPOINT_FORMAT "mnist_gan/2"
#define CHECKPOINT_FORMAT_1 "mnist_gan/1"

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

/* ---- reading metadata strictly ----------------------------------------------------------
 * Every value is read whole (tg_parse_*, or the exact hex forms written above) and checked
 * against the command line's range, so a hostile or damaged file gets the CLI's kind of
 * one-line refusal instead of "-1" wiping losses.csv or an all-zero RNG spinning forever. */

/* Longest stretch of a value quoted in a message (escaped: it comes from the file). */
#define SHOW_MAX 48

/* Sets err to "PATH: metadata "KEY" is "VALUE", expected WHAT" and returns false. */
static bool meta_refuse(const char *path, const char *key, const char *v, const char *expected,
                        char *err, size_t n)
{
    char shown[SHOW_MAX];
    tg_escape(shown, sizeof shown, v, strnlen(v, sizeof shown));
    snprintf(err, n, "%s: metadata \"%s\" is \"%s\", expected %s", path, key, shown, expected);
    return false;
}

/* The metadata value under key; NULL with the message in err when there is none. */
static const char *meta_value(const tg_state_dict *sd, const char *path, const char *key, char *err,
                              size_t n)
{
    const char *v = tg_state_dict_meta(sd, key);
    if (!v)
        snprintf(err, n, "%s: metadata \"%s\" is missing (not a mnist_gan checkpoint?)", path, key);
    return v;
}

bool meta_get_int(const tg_state_dict *sd, const char *path, const char *key, int64_t lo,
                  int64_t hi, int64_t *out, char *err, size_t n)
{
    const char *v = meta_value(sd, path, key, err, n);
    if (!v)
        return false;
    if (tg_parse_int(v, lo, hi, out) != TG_OK) {
        char want[96];
        snprintf(want, sizeof want, "a whole number from %lld to %lld", (long long)lo,
                 (long long)hi);
        return meta_refuse(path, key, v, want, err, n);
    }
    return true;
}

/* The metadata key as an int in [lo, hi]. */
static bool meta_get_small(const tg_state_dict *sd, const char *path, const char *key, int lo,
                           int hi, int *out, char *err, size_t n)
{
    int64_t x;
    if (!meta_get_int(sd, path, key, lo, hi, &x, err, n))
        return false;
    *out = (int)x;
    return true;
}

/* The hex digit c's value, or -1. */
static int hex_digit(int c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* The metadata key, a real the checkpoint wrote exactly with %a, in [lo, hi] (lo excluded when
 * lo_open; a float setting is checked as the float it becomes, as the CLI does). */
static bool meta_get_real(const tg_state_dict *sd, const char *path, const char *key, double lo,
                          bool lo_open, double hi, bool as_float, double *out, char *err, size_t n)
{
    const char *v = meta_value(sd, path, key, err, n);
    if (!v)
        return false;
    double x = NAN;
    if (tg_parse_hexreal(v, -DBL_MAX, DBL_MAX, &x) != TG_OK)
        x = NAN; /* refused below, with the key and the range */
    if (as_float)
        x = (float)x;
    if (!isfinite(x) || (lo_open ? x <= lo : x < lo) || x > hi) {
        char want[96];
        snprintf(want, sizeof want, "a hex float (%%a) in %s%g, %g]%s", lo_open ? "(" : "[", lo, hi,
                 as_float ? " as a float32" : "");
        return meta_refuse(path, key, v, want, err, n);
    }
    *out = x + 0.0; /* -0 is 0 */
    return true;
}

/* Reads a hex word of 1 to 8 digits at *s into *out, moving *s past it. */
static bool hex_word(const char **s, uint32_t *out)
{
    const char *start = *s;
    uint32_t x = 0;
    while (hex_digit(**s) >= 0 && *s - start < 8)
        x = x << 4 | (uint32_t)hex_digit(*(*s)++);
    *out = x;
    return *s > start && hex_digit(**s) < 0;
}

/* The RNG state as the checkpoint writes it: six hex words "s0 s1 s2 s3 has_spare spare"
 * separated by single spaces, has_spare 0 or 1, a finite spare when there is one, and s not all
 * zero (xoshiro's one fixed point: every draw would be 0, and the shuffle would spin forever). */
bool meta_get_rng(const tg_state_dict *sd, const char *path, const char *key, tg_rng *r, char *err,
                  size_t n)
{
    const char *v = meta_value(sd, path, key, err, n);
    if (!v)
        return false;
    uint32_t w[6];
    const char *s = v;
    bool ok = true;
    for (int i = 0; i < 6 && ok; i++)
        ok = (i == 0 || *s++ == ' ') && hex_word(&s, &w[i]);
    if (!ok || *s)
        return meta_refuse(path, key, v, "six hex words of 1 to 8 digits", err, n);
    float spare;
    memcpy(&spare, &w[5], 4);
    if (w[4] > 1 || (w[4] && !isfinite(spare)))
        return meta_refuse(path, key, v, "has_spare 0, or 1 with a finite spare", err, n);
    if (!(w[0] | w[1] | w[2] | w[3]))
        return meta_refuse(path, key, v, "a state that is not all zero", err, n);
    memcpy(r->s, w, sizeof r->s);
    r->has_spare = w[4];
    r->spare = spare;
    return true;
}

bool position_get(const tg_state_dict *sd, const char *path, run_position *pos, tg_rng *z_rng,
                  char *err, size_t n)
{
    int64_t it, ep, b;
    double secs;
    /* per_epoch >= 1 and at most GAN_N_CRITIC_MAX batches an iteration, so neither can pass
     * that many batches (position_check: exactly) */
    if (!meta_get_int(sd, path, "iteration", 0, GAN_ITERS_MAX, &it, err, n))
        return false;
    const int64_t most = it > INT64_MAX / GAN_N_CRITIC_MAX ? INT64_MAX : it * GAN_N_CRITIC_MAX;
    if (!meta_get_real(sd, path, "seconds", 0, false, DBL_MAX, false, &secs, err, n) ||
        !meta_get_int(sd, path, "epoch", 0, most, &ep, err, n) ||
        !meta_get_int(sd, path, "batch_in_epoch", 0, most, &b, err, n) ||
        !meta_get_rng(sd, path, "loader_rng", &pos->loader.epoch_rng, err, n) ||
        !meta_get_rng(sd, path, "z_rng", z_rng, err, n))
        return false;
    pos->iteration = it, pos->seconds = secs, pos->loader.epoch = ep, pos->loader.batch = b;
    pos->batches_per_iteration = 1; /* the run's setting, which the caller knows */
    return true;
}

bool position_check(const run_position *pos, int64_t per_epoch, int64_t total, const char *path,
                    char *err, size_t n)
{
    const int64_t it = pos->iteration, ep = pos->loader.epoch, b = pos->loader.batch;
    const int64_t k = pos->batches_per_iteration > 0 ? pos->batches_per_iteration : 1;
    if (it > total) {
        snprintf(err, n,
                 "%s: metadata \"iteration\" is %lld, beyond this run's %lld iterations (raise "
                 "--iters or --epochs)",
                 path, (long long)it, (long long)total);
        return false;
    }
    /* Each saved position is iteration * k = epoch * per_epoch + batch_in_epoch, batch <
     * per_epoch, with k batches an iteration (it <= INT64_MAX / k and epoch <= it * k /
     * per_epoch first, so the products cannot overflow). */
    if (per_epoch < 1 || it > INT64_MAX / k || ep > it * k / per_epoch || b >= per_epoch ||
        ep * per_epoch + b != it * k) {
        snprintf(err, n,
                 "%s: metadata \"epoch\" %lld and \"batch_in_epoch\" %lld do not give iteration "
                 "%lld at %lld batches per epoch%s (a checkpoint of other data or batch size?)",
                 path, (long long)ep, (long long)b, (long long)it, (long long)per_epoch,
                 k > 1 ? " and n_critic batches per iteration" : "");
        return false;
    }
    return true;
}

/* ---- tensor values -------------------------------------------------------------------- */

bool checkpoint_check_values(const tg_state_dict *sd, const char *path, char *err, size_t n)
{
    for (int64_t k = 0; k < tg_state_dict_size(sd); k++) {
        const char *name = tg_state_dict_name(sd, k), *need;
        const tg_tensor *t = tg_state_dict_tensor(sd, k);
        /* the library's rule for loaded values, applied to every entry (gradients too) */
        int64_t i = tg_module_bad_value(name, t, &need);
        if (i >= 0) {
            char shown[SHOW_MAX * 2];
            tg_escape(shown, sizeof shown, name, strnlen(name, sizeof shown));
            snprintf(err, n, "%s: tensor \"%s\" holds %g at index %lld, expected %s", path, shown,
                     (double)t->data[i], (long long)i, need);
            return false;
        }
    }
    return true;
}

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
    meta_set(sd, "train_per_class", "%lld", (long long)r->per_class);
    if (r->ranks > 1) /* under MPI only: one process's checkpoint stays as it was */
        meta_set(sd, "ranks", "%d", r->ranks);
    if (r->matmul != TG_MATMUL_FP32) /* likewise: an FP32 run's checkpoint as it was */
        meta_set(sd, "matmul", "%s", gan_matmul_names[r->matmul]);
    meta_set(sd, "lr", "%a", (double)c->lr);
    meta_set(sd, "beta1", "%a", (double)c->beta1);
    meta_set(sd, "beta2", "%a", (double)c->beta2);
    meta_set(sd, "seed", "%" PRIu64, c->seed);
    if (c->recipe == GAN_RECIPE_WGAN_GP) {
        meta_set(sd, "n_critic", "%d", c->n_critic);
        meta_set(sd, "gp_lambda", "%a", (double)c->gp_lambda);
        meta_set(sd, "critic_norm", "%s", gan_critic_norm_names[c->critic_norm]);
    }
}

/* The index of metadata key's value among names; false (with a message) when it is none. */
static bool meta_get_name(const tg_state_dict *sd, const char *path, const char *key,
                          const char *const *names, int *out, char *err, size_t n)
{
    const char *v = meta_value(sd, path, key, err, n);
    if (!v)
        return false;
    for (int i = 0; names[i]; i++)
        if (!strcmp(v, names[i])) {
            *out = i;
            return true;
        }
    char want[128];
    int used = snprintf(want, sizeof want, "one of");
    for (int i = 0; names[i] && used > 0 && (size_t)used < sizeof want; i++)
        used += snprintf(want + used, sizeof want - (size_t)used, "%s %s", i ? "," : "", names[i]);
    return meta_refuse(path, key, v, want, err, n);
}

/* True when the metadata key is absent or its value's field-th comma-separated part (betas
 * are "beta1,beta2") is a number that is x as a float32. */
static bool meta_float_is(const tg_state_dict *sd, const char *key, int field, float x)
{
    const char *v = tg_state_dict_meta(sd, key);
    char part[64];
    double d;
    if (!v)
        return true;
    for (int i = 0; i < field; i++) {
        const char *comma = strchr(v, ',');
        if (!comma)
            return false;
        v = comma + 1;
    }
    snprintf(part, sizeof part, "%.*s", (int)strcspn(v, ","), v);
    return tg_parse_real(part, -FLT_MAX, FLT_MAX, &d) == TG_OK && (float)d == x;
}

/* The optimizers' own copies of lr and beta1 (tg_optim_state_dict writes them) must be the
 * top-level settings' values, which the run shows and compares: otherwise the run would say one
 * lr and train with another. Absent copies (the optimizer keeps the setting) are fine. */
static bool optimizers_agree(const tg_state_dict *sd, const char *path, float lr, float beta1,
                             float beta2, char *err, size_t n)
{
    static const char *const opts[] = {"opt_d_real", "opt_d_fake", "opt_g", "opt_d"};
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        char k[64], want[96];
        snprintf(k, sizeof k, "%s.lr", opts[i]);
        if (!meta_float_is(sd, k, 0, lr)) {
            snprintf(want, sizeof want, "%.9g, the value of \"lr\"", lr);
            return meta_refuse(path, k, tg_state_dict_meta(sd, k), want, err, n);
        }
        snprintf(k, sizeof k, "%s.betas", opts[i]);
        for (int b = 0; b < 2; b++)
            if (!meta_float_is(sd, k, b, b ? beta2 : beta1)) {
                snprintf(want, sizeof want, "beta%d %.9g, the value of \"beta%d\"", b + 1,
                         b ? beta2 : beta1, b + 1);
                return meta_refuse(path, k, tg_state_dict_meta(sd, k), want, err, n);
            }
    }
    return true;
}

bool settings_get(const tg_state_dict *sd, const char *path, run_settings *r, char *err, size_t n)
{
    const char *fmt = tg_state_dict_meta(sd, "format");
    const bool v1 = fmt && strcmp(fmt, CHECKPOINT_FORMAT_1) == 0;
    if (!fmt || (!v1 && strcmp(fmt, CHECKPOINT_FORMAT) != 0)) {
        char shown[SHOW_MAX] = "missing";
        if (fmt)
            tg_escape(shown, sizeof shown, fmt, strnlen(fmt, sizeof shown));
        snprintf(err, n,
                 "%s: not a mnist_gan checkpoint (metadata format is %s%s%s, expected "
                 "%s)",
                 path, fmt ? "\"" : "", shown, fmt ? "\"" : "", CHECKPOINT_FORMAT);
        return false;
    }
    double lr = 0, beta1 = 0, beta2 = 0.999, gp_lambda = 10;
    int64_t batch = 0, block = 0, seed = 0, per_class = 0;
    r->ranks = 1;                /* absent: one process */
    int matmul = TG_MATMUL_FP32; /* absent: fp32 */
    int recipe = 0, generator = 0, step = -1, init = GAN_INIT_TORCH;
    int adam = TG_ADAM_EPS_AFTER_CORRECTION, n_critic = 5, critic_norm = GAN_CRITIC_NONE;
    bool ok =
        meta_get_small(sd, path, "recipe", 0, v1 ? 1 : GAN_RECIPE_CGAN, &recipe, err, n) &&
        meta_get_small(sd, path, "generator", 0, GAN_GEN_UPSAMPLE_RELU, &generator, err, n) &&
        meta_get_small(sd, path, "digit", -1, 9, &r->digit, err, n) &&
        meta_get_small(sd, path, "width_div", 1, GAN_WIDTH_DIV_MAX, &r->width_div, err, n) &&
        meta_get_int(sd, path, "batch", GAN_BATCH_MIN, GAN_BATCH_MAX, &batch, err, n) &&
        meta_get_real(sd, path, "lr", 0, true, GAN_LR_MAX, true, &lr, err, n) &&
        meta_get_real(sd, path, "beta1", 0, false, GAN_BETA1_MAX, true, &beta1, err, n) &&
        meta_get_int(sd, path, "seed", 0, INT64_MAX, &seed, err, n) &&
        (!tg_state_dict_meta(sd, "train_per_class") ||
         meta_get_int(sd, path, "train_per_class", 0, GAN_PER_CLASS_MAX, &per_class, err, n)) &&
        (!tg_state_dict_meta(sd, "ranks") ||
         meta_get_small(sd, path, "ranks", 1, GAN_BATCH_MAX, &r->ranks, err, n)) &&
        (!tg_state_dict_meta(sd, "matmul") ||
         meta_get_name(sd, path, "matmul", gan_matmul_names, &matmul, err, n)) &&
        (!tg_state_dict_meta(sd, "beta2") ||
         meta_get_real(sd, path, "beta2", 0, false, GAN_BETA2_MAX, true, &beta2, err, n)) &&
        optimizers_agree(sd, path, (float)lr, (float)beta1, (float)beta2, err, n);
    if (ok && recipe == GAN_RECIPE_WGAN_GP)
        ok = meta_get_small(sd, path, "n_critic", 1, GAN_N_CRITIC_MAX, &n_critic, err, n) &&
             meta_get_real(sd, path, "gp_lambda", 0, false, GAN_LAMBDA_MAX, true, &gp_lambda, err,
                           n) &&
             meta_get_name(sd, path, "critic_norm", gan_critic_norm_names, &critic_norm, err, n);
    if (ok && v1) {
        /* format 1: step 0 accumulated (it was called "tutorial"), 1 was clean */
        ok = meta_get_small(sd, path, "step", 0, 1, &step, err, n);
        step = step == 0 ? GAN_STEP_ACCUMULATE : GAN_STEP_CLEAN;
    } else if (ok) {
        ok = meta_get_name(sd, path, "step", gan_step_names, &step, err, n) &&
             meta_get_name(sd, path, "init", gan_init_names, &init, err, n) &&
             meta_get_name(sd, path, "adam", gan_adam_names, &adam, err, n) &&
             meta_get_int(sd, path, "shuffle_block", 0, INT64_MAX, &block, err, n);
        /* the two the command line makes: --shuffle full and paddle */
        if (ok && block != 0 && block != GAN_PADDLE_SHUFFLE_BLOCK) {
            char want[64];
            snprintf(want, sizeof want, "0 (full) or %d (paddle)", GAN_PADDLE_SHUFFLE_BLOCK);
            ok = meta_refuse(path, "shuffle_block", tg_state_dict_meta(sd, "shuffle_block"), want,
                             err, n);
        }
    }
    r->cfg.recipe = (gan_recipe)recipe, r->cfg.generator = (gan_generator)generator;
    r->cfg.step = (gan_step_mode)step, r->cfg.init = (gan_init)init;
    r->cfg.adam_eps = (tg_adam_eps)adam, r->cfg.shuffle_block = block;
    r->cfg.seed = (uint64_t)seed;
    r->batch = batch, r->per_class = per_class, r->cfg.lr = (float)lr, r->cfg.beta1 = (float)beta1;
    r->cfg.beta2 = (float)beta2, r->cfg.n_critic = n_critic, r->cfg.gp_lambda = (float)gp_lambda;
    r->cfg.critic_norm = (gan_critic_norm)critic_norm;
    r->matmul = (tg_matmul_precision)matmul;
    return ok;
}

tg_status save_checkpoint(const char *path, const gan_state *s, const run_settings *rs,
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
        st = tg_data_save_safetensors(path, sd);
    }
    tg_state_dict_free(sd);
    return st;
}

void default_gen_label(gan_state *s, int digit)
{
    if (GAN_CONDITIONAL(s->recipe) && digit >= 0)
        s->gen_label = digit;
}

int load_trained(const char *path, tg_state_dict **sd, run_settings *rs, gan_state *s)
{
    char err[1024];
    if (!(*sd = tg_data_load_safetensors(path)))
        return fail(input_failure(), "%s", tg_last_error());
    if (!settings_get(*sd, path, rs, err, sizeof err) ||
        !checkpoint_check_values(*sd, path, err, sizeof err))
        return fail(EXIT_BAD_INPUT, "%s", err);
    gan_widths w = gan_widths_default(rs->width_div);
    if (gan_state_init(s, &rs->cfg, &w) != TG_OK) /* the settings were checked: the machine's */
        return fail(1, "%s", tg_last_error());
    default_gen_label(s, rs->digit);
    if (gan_load_state_dict(s, *sd) != TG_OK)
        return fail(input_failure(), "%s: %s", path, tg_last_error());
    return 0;
}
