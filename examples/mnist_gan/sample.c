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

/* False when path cannot be written (no temporary file can be made beside it). */
bool can_write(const char *path)
{
    tg_atomic_file *af = tg_atomic_open(path);
    if (af)
        tg_atomic_abort(af);
    return af != NULL;
}

int sample(const gan_options *o)
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
    printf("mnist_gan: %lld images from %s in %s%s%s\n", (long long)o->n, o->checkpoint, o->png_out,
           o->idx_prefix ? " and " : "", o->idx_prefix ? o->idx_prefix : "");
    code = 0;
done:
    tg_release(img);
    gan_state_free(&s);
    tg_state_dict_free(sd);
    return code;
}
