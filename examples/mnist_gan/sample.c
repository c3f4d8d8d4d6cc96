/* mnist_gan sample: images from a trained G as a PNG grid and MNIST-format idx files. */
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

/* ---- sample ---------------------------------------------------------------------------------- */

bool can_write(const char *flag, const char *path, char *err, size_t n)
{
    tg_atomic_file *af = tg_atomic_open(path);
    if (!af) {
        snprintf(err, n, "%s: %s", flag, tg_last_error());
        return false;
    }
    tg_atomic_abort(af);
    return true;
}

int sample(const gan_options *o)
{
    char err[1024], idx_images[4096], idx_labels[4096];
    /* An output path that cannot be written is bad input: say so before any work. */
    snprintf(idx_images, sizeof idx_images, "%s-images-idx3-ubyte",
             o->idx_prefix ? o->idx_prefix : "");
    snprintf(idx_labels, sizeof idx_labels, "%s-labels-idx1-ubyte",
             o->idx_prefix ? o->idx_prefix : "");
    if (!can_write("--out", o->png_out, err, sizeof err) ||
        (o->idx_prefix && !can_write("--idx", idx_images, err, sizeof err)))
        return fail(EXIT_BAD_INPUT, "%s", err);
    tg_state_dict *sd = NULL;
    run_settings rs;
    gan_state s = {0};
    tg_tensor *img = NULL;
    int code;
    if ((code = load_trained(o->checkpoint, &sd, &rs, &s)) != 0)
        goto done;
    /* What --label may ask: any digit or all of a conditional model (by default all, or the
     * digit it was trained on: load_trained), only its own digit of an unconditional one-digit
     * model, nothing of an unconditional model of every digit. */
    const bool conditional = GAN_CONDITIONAL(rs.cfg.recipe);
    if (!conditional && o->label != GAN_LABEL_UNSET && (rs.digit < 0 || o->label != rs.digit)) {
        char asked[8];
        snprintf(asked, sizeof asked, o->label == GAN_LABELS_BALANCED ? "all" : "%d", o->label);
        code = rs.digit < 0 ? fail(EXIT_BAD_INPUT,
                                   "--label %s: %s is an unconditional model of every digit; "
                                   "only a conditional (--recipe cgan) model takes --label",
                                   asked, o->checkpoint)
                            : fail(EXIT_BAD_INPUT,
                                   "--label %s: %s is a model of digit %d only; --label may "
                                   "name that digit alone",
                                   asked, o->checkpoint, rs.digit);
        goto done;
    }
    if (conditional && o->label != GAN_LABEL_UNSET)
        s.gen_label = o->label;
    /* the images' labels (gan_label_of): a conditional model's, or a one-digit model's digit */
    const int label = conditional ? s.gen_label : rs.digit;
    const bool labelled = conditional || rs.digit >= 0;
    /* a labelled model's images come with a labels file */
    if (o->idx_prefix && labelled && !can_write("--idx", idx_labels, err, sizeof err)) {
        code = fail(EXIT_BAD_INPUT, "%s", err);
        goto done;
    }
    img = gan_generate_n(&s, o->n, o->seed);
    code = 1;
    /* balanced labels run i % 10: ten columns put one digit in each */
    const int64_t cols = conditional && label == GAN_LABELS_BALANCED ? 10 : GRID_COLS;
    if (!img || tg_data_write_png_grid(o->png_out, img, cols, o->grid_scale) != TG_OK) {
        fail(code, "%s", tg_last_error());
        goto done;
    }
    if (o->idx_prefix) {
        if (tg_data_write_idx_images(idx_images, img) != TG_OK) {
            fail(code, "%s", tg_last_error());
            goto done;
        }
        if (labelled) {
            tg_tensor *labels = tg_tensor_new(TG_DIMS(o->n));
            for (int64_t i = 0; labels && i < o->n; i++)
                labels->data[i] = (float)gan_label_of(label, i);
            tg_status st = labels ? tg_data_write_idx_labels(idx_labels, labels) : tg_last_status();
            tg_tensor_release(labels);
            if (st != TG_OK) {
                fail(code, "%s", tg_last_error());
                goto done;
            }
        }
    }
    printf("mnist_gan: %lld images from %s in %s%s%s\n", (long long)o->n, o->checkpoint, o->png_out,
           o->idx_prefix ? " and " : "", o->idx_prefix ? o->idx_prefix : "");
    code = 0;
done:
    tg_tensor_release(img);
    gan_state_free(&s);
    tg_state_dict_free(sd);
    return code;
}
