/* mnist_gan's checkpoints: the settings and position in the metadata (exact: hex words for
 * RNG states, %a for floats), the tensors from gan_state_dict, and loading a trained G. */
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

/* Format 2 names the step, init, Adam and shuffle; format 1 (before the faithful tutorial step)
 * is still read: its step 0 was today's accumulate step, with PyTorch's init and Adam and one
 * shuffle of the whole set, and that is how it resumes. */
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

/* Reads metadata key as the sscanf format; false (with a message) when absent or malformed. */
bool meta_get(const tg_state_dict *sd, const char *path, const char *key, char *err, size_t n,
              int count, const char *fmt, ...)
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

bool meta_get_rng(const tg_state_dict *sd, const char *path, const char *key, tg_rng *r, char *err,
                  size_t n)
{
    uint32_t spare;
    if (!meta_get(sd, path, key, err, n, 6,
                  "%" SCNx32 " %" SCNx32 " %" SCNx32 " %" SCNx32 " %" SCNx32 " %" SCNx32, &r->s[0],
                  &r->s[1], &r->s[2], &r->s[3], &r->has_spare, &spare))
        return false;
    memcpy(&r->spare, &spare, 4);
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

bool settings_get(const tg_state_dict *sd, const char *path, run_settings *r, char *err, size_t n)
{
    const char *fmt = tg_state_dict_meta(sd, "format");
    const bool v1 = fmt && strcmp(fmt, CHECKPOINT_FORMAT_1) == 0;
    if (!fmt || (!v1 && strcmp(fmt, CHECKPOINT_FORMAT) != 0)) {
        snprintf(err, n,
                 "%s: not a mnist_gan checkpoint (metadata format is %s%s%s, expected "
                 "%s)",
                 path, fmt ? "\"" : "", fmt ? fmt : "missing", fmt ? "\"" : "", CHECKPOINT_FORMAT);
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
    if (ok &&
        (recipe < 0 || recipe > 1 || generator < 0 || generator > 1 || step < 0 || r->digit < -1 ||
         r->digit > 9 || r->width_div < 1 || r->width_div > 64 || batch < 2 || block < 0)) {
        snprintf(err, n, "%s: metadata holds settings out of range", path);
        ok = false;
    }
    r->cfg.recipe = (gan_recipe)recipe, r->cfg.generator = (gan_generator)generator;
    r->cfg.step = (gan_step_mode)step, r->cfg.init = (gan_init)init;
    r->cfg.adam_eps = (tg_adam_eps)adam, r->cfg.shuffle_block = block;
    r->batch = batch, r->cfg.lr = (float)lr, r->cfg.beta1 = (float)beta1;
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
        st = tg_data_save_safetensors(sd, path);
    }
    tg_state_dict_free(sd);
    return st;
}

/* Loads what `train` saved into a fresh state: the settings from the checkpoint's metadata, the
 * models they describe, then the weights. On failure prints the message (bad input) and
 * returns false; the caller frees *sd and *s either way. */
bool load_trained(const char *path, tg_state_dict **sd, run_settings *rs, gan_state *s)
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
    if (gan_state_init(s, &rs->cfg, &w) != TG_OK || gan_load_state_dict(s, *sd) != TG_OK) {
        fail(EXIT_BAD_INPUT, "%s: %s", path, tg_last_error());
        return false;
    }
    return true;
}
