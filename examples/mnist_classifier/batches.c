/* mnist_classifier's training batches (see batches.h). */
#include "batches.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Seeds of the generated loader's and the augmentation's streams: the user's seed XOR these,
 * so that neither repeats the real loader's (seed + 1) or the dropout's stream. */
static const uint64_t GENERATED_STREAM = 0xbf58476d1ce4e5b9u;
static const uint64_t AUGMENT_STREAM = 0x94d049bb133111ebu;

tg_dataset *clf_read_generated(const char *prefix)
{
    char ipath[4200], lpath[4200], s[160];
    snprintf(ipath, sizeof ipath, "%s-images-idx3-ubyte", prefix);
    snprintf(lpath, sizeof lpath, "%s-labels-idx1-ubyte", prefix);
    tg_tensor *img = tg_data_read_idx(ipath);
    tg_tensor *lab = img ? tg_data_read_idx(lpath) : NULL;
    tg_dataset *ds = NULL;
    if (!lab)
        goto done;
    if (img->ndim != 3 || img->shape[0] < 1 || img->shape[1] != 28 || img->shape[2] != 28) {
        tg_set_error(TG_ERR_FORMAT, "%s: images %s: expected [N, 28, 28], at least one", ipath,
                     tg_shape_str(img->ndim, img->shape, s, sizeof s));
        goto done;
    }
    if (lab->ndim != 1 || lab->shape[0] != img->shape[0]) {
        tg_set_error(TG_ERR_FORMAT, "%s: labels %s do not match the %lld images of %s", lpath,
                     tg_shape_str(lab->ndim, lab->shape, s, sizeof s), (long long)img->shape[0],
                     ipath);
        goto done;
    }
    /* The checks tg_data_load_mnist makes on MNIST's own files. */
    if (tg_data_check_range(img, ipath, 0.0f, 255.0f, false) != TG_OK ||
        tg_data_check_range(lab, lpath, 0.0f, 9.0f, true) != TG_OK)
        goto done;
    const int64_t n = img->shape[0];
    if (!(ds = calloc(1, sizeof *ds))) {
        tg_set_error(TG_ERR_NOMEM, "clf_read_generated: out of memory");
        goto done;
    }
    ds->images = tg_tensor_new(TG_DIMS(n, 1, 28, 28));
    ds->labels = tg_tensor_new(TG_DIMS(n));
    if (!ds->images || !ds->labels) {
        tg_dataset_free(ds);
        ds = NULL;
        goto done;
    }
    /* 0..255 to [-1, 1], tg_data_load_mnist's scale (its kernel may round the last bit
     * differently under FMA: immaterial for training). */
    for (int64_t i = 0; i < img->numel; i++)
        ds->images->data[i] = img->data[i] * (2.0f / 255.0f) - 1.0f;
    memcpy(ds->labels->data, lab->data, sizeof(float) * (size_t)n);
done:
    tg_tensor_release(img);
    tg_tensor_release(lab);
    return ds;
}

struct clf_batches {
    tg_loader *real, *gen; /* gen: NULL without generated images in a batch */
    int64_t n_real, n_gen; /* images of each kind in a (global) batch */
    bool augment;
    tg_rng augment_rng;
    const tg_dist *d; /* NULL: one process */
};

clf_batches *clf_batches_new(const tg_dataset *real, const tg_dataset *gen, int64_t batch,
                             int64_t n_gen, bool augment, uint64_t seed)
{
    if (n_gen < 0 || n_gen >= batch || (n_gen > 0 && !gen)) {
        tg_set_error(TG_ERR_ARG,
                     "clf_batches_new: %lld generated images in a batch of %lld%s (need 0 <= "
                     "n_gen < batch, and a generated set for n_gen > 0)",
                     (long long)n_gen, (long long)batch, gen ? "" : " without a generated set");
        return NULL;
    }
    clf_batches *b = calloc(1, sizeof *b);
    if (!b) {
        tg_set_error(TG_ERR_NOMEM, "clf_batches_new: out of memory");
        return NULL;
    }
    b->n_real = batch - n_gen;
    b->n_gen = n_gen;
    b->augment = augment;
    tg_rng_seed(&b->augment_rng, seed ^ AUGMENT_STREAM);
    b->real = tg_loader_new(real, b->n_real, seed + 1);
    if (b->real && n_gen > 0)
        b->gen = tg_loader_new(gen, n_gen, seed ^ GENERATED_STREAM);
    if (!b->real || (n_gen > 0 && !b->gen)) {
        clf_batches_free(b);
        return NULL;
    }
    return b;
}

void clf_batches_set_dist(clf_batches *b, const tg_dist *d)
{
    b->d = d;
}

void clf_batches_free(clf_batches *b)
{
    if (!b)
        return;
    tg_loader_free(b->real);
    tg_loader_free(b->gen);
    free(b);
}

int64_t clf_batches_per_epoch(const clf_batches *b)
{
    return tg_loader_batches_per_epoch(b->real);
}

const char *clf_batches_describe(const clf_batches *b, char *buf, size_t n)
{
    const tg_affine_range r = CLF_CLASSIC_RANGE;
    int at = snprintf(buf, n, "%lld images: %lld real", (long long)(b->n_real + b->n_gen),
                      (long long)b->n_real);
    if (b->n_gen > 0 && at >= 0 && (size_t)at < n)
        at += snprintf(buf + at, n - (size_t)at, " and %lld generated", (long long)b->n_gen);
    if (b->augment && at >= 0 && (size_t)at < n)
        snprintf(buf + at, n - (size_t)at,
                 ", each shifted up to %g pixels each way, turned up to %g degrees and scaled by "
                 "%g to %g (classic augmentation)",
                 (double)r.max_shift, (double)r.max_angle, (double)r.min_scale,
                 (double)r.max_scale);
    return buf;
}

/* x and y with the rows of x2 and y2 appended: new tensors, or NULL with the error set. */
static tg_status append(tg_tensor **x, tg_tensor **y, const tg_tensor *x2, const tg_tensor *y2)
{
    const int64_t n1 = (*x)->shape[0], n2 = x2->shape[0], per = x2->numel / n2;
    tg_tensor *x3 = tg_tensor_new(TG_DIMS(n1 + n2, 1, 28, 28));
    tg_tensor *y3 = tg_tensor_new(TG_DIMS(n1 + n2));
    if (!x3 || !y3) {
        tg_tensor_release(x3);
        tg_tensor_release(y3);
        return tg_last_status();
    }
    memcpy(x3->data, (*x)->data, sizeof(float) * (size_t)(n1 * per));
    memcpy(x3->data + n1 * per, x2->data, sizeof(float) * (size_t)(n2 * per));
    memcpy(y3->data, (*y)->data, sizeof(float) * (size_t)n1);
    memcpy(y3->data + n1, y2->data, sizeof(float) * (size_t)n2);
    tg_tensor_release(*x);
    tg_tensor_release(*y);
    *x = x3;
    *y = y3;
    return TG_OK;
}

/* Moves rng past the transforms of n images: four uniform draws each (data.h). */
static void skip_transforms(tg_rng *rng, int64_t n)
{
    for (int64_t i = 0; i < 4 * n; i++)
        (void)tg_rng_uniform01(rng);
}

/* *x through the classic transform, replaced in place: this rank's rows of a part of the
 * global batch whose first `before` images the stream has passed, `part` images in all. */
static tg_status augment_part(clf_batches *b, tg_tensor **x, int64_t part)
{
    const tg_affine_range range = CLF_CLASSIC_RANGE;
    const int64_t rows = (*x)->shape[0], first = dp_rank(b->d) * rows;
    skip_transforms(&b->augment_rng, first);
    tg_tensor *moved = tg_data_augment_affine(*x, &b->augment_rng, &range, -1.0f);
    skip_transforms(&b->augment_rng, part - first - rows);
    tg_tensor_release(*x);
    *x = moved;
    return moved ? TG_OK : tg_last_status();
}

tg_status clf_batches_next(clf_batches *b, tg_tensor **images, tg_tensor **labels)
{
    tg_tensor *x = NULL, *y = NULL, *gx = NULL, *gy = NULL;
    /* The global batch is [real, generated], transformed in that order: each part's share is
     * transformed with the draws of its rows, the other rows' draws passed over. */
    tg_status st = dp_loader_next(b->d, b->real, &x, &y);
    if (st == TG_OK && b->augment)
        st = augment_part(b, &x, b->n_real);
    if (st == TG_OK && b->gen) {
        st = dp_loader_next(b->d, b->gen, &gx, &gy);
        if (st == TG_OK && b->augment)
            st = augment_part(b, &gx, b->n_gen);
        if (st == TG_OK)
            st = append(&x, &y, gx, gy);
    }
    tg_tensor_release(gx);
    tg_tensor_release(gy);
    if (st != TG_OK) {
        tg_tensor_release(x);
        tg_tensor_release(y);
        return st;
    }
    *images = x;
    *labels = y;
    return TG_OK;
}
