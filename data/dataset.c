/* MNIST-format datasets and a shuffling batch loader.
 *
 * Images become float [N, 1, H, W] scaled to [-1, 1] (as PaddlePaddle's MNIST reader yields
 * them, matching a generator's tanh output); labels float [N]. The loader shuffles afresh
 * every epoch from its own seeded RNG and drops the incomplete last batch, as the tutorial's
 * reader does. Its position (the RNG state at the start of the epoch, epoch and batch index)
 * is plain data, so a checkpoint can resume the exact batch sequence. */
#include "internal.h"
#include "../tensor/internal.h"

#include <string.h>
#include <sys/stat.h>

/* The four standard file names, looked up raw first, then with .gz. */
static const char *const mnist_files[2][2] = {
    {"t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"},
    {"train-images-idx3-ubyte", "train-labels-idx1-ubyte"},
};

/* dir/name or dir/name.gz, whichever exists (raw preferred); false when neither does. */
static bool find_file(const char *dir, const char *name, char *out, size_t size)
{
    struct stat st;
    snprintf(out, size, "%s/%s", dir, name);
    if (stat(out, &st) == 0)
        return true;
    snprintf(out, size, "%s/%s.gz", dir, name);
    return stat(out, &st) == 0;
}

void tg_dataset_free(tg_dataset *ds)
{
    if (!ds)
        return;
    tg_tensor_release(ds->images);
    tg_tensor_release(ds->labels);
    free(ds);
}

/* 0..255 to [-1, 1], as PaddlePaddle's reader and the tanh output of a generator. A dispatched
 * leaf (tensor/isa.h) so that the multiply-add rounds as it does in the kernels' own level:
 * with FMA the result differs in the last bit for 158 of the 256 byte values. */
TG_ISA_LEAF(scale_image, (float *dst, const float *src, int64_t n), (dst, src, n))
{
    for (int64_t k = 0; k < n; k++)
        dst[k] = src[k] * (2.0f / 255.0f) - 1.0f;
}

tg_dataset *tg_data_load_mnist(const char *dir, bool train, int digit)
{
    if (!dir || digit < -1 || digit > 9) {
        tg_set_error(TG_ERR_ARG, "tg_data_load_mnist: %s: digit %d (use 0..9, or -1 for all)",
                     dir ? dir : "(null dir)", digit);
        return NULL;
    }
    char ipath[4096], lpath[4096];
    for (int k = 0; k < 2; k++) {
        char *p = k ? lpath : ipath;
        if (!find_file(dir, mnist_files[train][k], p, sizeof ipath)) {
            tg_set_error(TG_ERR_IO, "tg_data_load_mnist: %s/%s: no such file (nor .gz)", dir,
                         mnist_files[train][k]);
            return NULL;
        }
    }
    tg_tensor *img = tg_data_read_idx(ipath);
    tg_tensor *lab = img ? tg_data_read_idx(lpath) : NULL;
    tg_dataset *ds = NULL;
    char s[160], s2[160];
    if (!lab)
        goto done;
    if (img->ndim != 3 || img->shape[1] < 1 || img->shape[2] < 1) {
        tg_set_error(TG_ERR_FORMAT,
                     "tg_data_load_mnist: %s: images %s: expected [N, rows, "
                     "cols]",
                     ipath, tg_shape_str(img->ndim, img->shape, s, sizeof s));
        goto done;
    }
    if (lab->ndim != 1 || lab->shape[0] != img->shape[0]) {
        tg_set_error(TG_ERR_FORMAT,
                     "tg_data_load_mnist: %s: labels %s do not match the %lld "
                     "images of %s",
                     lpath, tg_shape_str(lab->ndim, lab->shape, s2, sizeof s2),
                     (long long)img->shape[0], ipath);
        goto done;
    }
    /* A float idx file can hold any finite value: a pixel outside 0..255 would train silently
     * on a scale nothing else uses, and a label such as 3.5 would not name a class. */
    if (tg_check_values("tg_data_load_mnist", ipath, "pixel", img, 0, 255, false) != TG_OK ||
        tg_check_values("tg_data_load_mnist", lpath, "label", lab, 0, 9, true) != TG_OK)
        goto done;
    int64_t n = img->shape[0], h = img->shape[1], w = img->shape[2], keep = 0;
    for (int64_t i = 0; i < n; i++)
        keep += digit < 0 || (int)lab->data[i] == digit;
    ds = calloc(1, sizeof *ds);
    if (!ds) {
        tg_set_error(TG_ERR_NOMEM, "tg_data_load_mnist: out of memory");
        goto done;
    }
    ds->images = tg_tensor_new(TG_DIMS(keep, 1, h, w));
    ds->labels = tg_tensor_new(TG_DIMS(keep));
    if (!ds->images || !ds->labels) {
        tg_dataset_free(ds);
        ds = NULL;
        goto done;
    }
    for (int64_t i = 0, j = 0; i < n; i++) {
        if (digit >= 0 && (int)lab->data[i] != digit)
            continue;
        scale_image(ds->images->data + j * h * w, img->data + i * h * w, h * w);
        ds->labels->data[j++] = lab->data[i];
    }
done:
    tg_tensor_release(img);
    tg_tensor_release(lab);
    /* The file's values (188 MB for MNIST's training set) went back to the allocator's cache,
     * where no later tensor of a training step is large enough to reuse them: hand them back
     * to the system rather than hold them for the whole run. */
    tg_allocator_trim();
    return ds;
}

struct tg_loader {
    const tg_dataset *ds; /* borrowed: must outlive the loader */
    int64_t batch;
    int64_t *perm; /* this epoch's order */
    int64_t block; /* shuffle within blocks of this many images (0: the whole set) */
    tg_loader_state st;
};

/* Draws the epoch's order from st.epoch_rng (kept unchanged: it is the epoch's seed): one
 * permutation of the whole set, or, with blocks, one per block in file order, each drawn after
 * the previous from the same stream. */
static void loader_shuffle(tg_loader *l)
{
    tg_rng r = l->st.epoch_rng;
    const int64_t n = l->ds->images->shape[0], block = l->block ? l->block : n;
    for (int64_t start = 0; start < n; start += block) {
        int64_t len = n - start < block ? n - start : block;
        tg_rng_permutation(&r, len, l->perm + start);
        for (int64_t i = start; i < start + len; i++)
            l->perm[i] += start;
    }
}

tg_status tg_loader_set_shuffle_block(tg_loader *l, int64_t block)
{
    const char *fn = "tg_loader_set_shuffle_block";
    if (!l)
        return tg_set_error(TG_ERR_ARG, "%s: the loader is NULL", fn);
    if (block < 0)
        return tg_set_error(TG_ERR_ARG,
                            "%s: block %lld: need 0 (shuffle the whole set) or a "
                            "size >= 1",
                            fn, (long long)block);
    l->block = block;
    loader_shuffle(l); /* the current epoch's order, drawn again from its seed */
    return TG_OK;
}

int64_t tg_loader_shuffle_block(const tg_loader *l)
{
    return l ? l->block : 0;
}

tg_loader *tg_loader_new(const tg_dataset *ds, int64_t batch, uint64_t seed)
{
    if (!ds || !ds->images) {
        tg_set_error(TG_ERR_ARG, "tg_loader_new: dataset is NULL");
        return NULL;
    }
    int64_t n = ds->images->shape[0];
    if (batch < 1 || batch > n) {
        tg_set_error(TG_ERR_ARG,
                     "tg_loader_new: batch %lld for a dataset of %lld images (need "
                     "1 <= batch <= images)",
                     (long long)batch, (long long)n);
        return NULL;
    }
    tg_loader *l = calloc(1, sizeof *l);
    int64_t *perm = malloc(sizeof(int64_t) * (size_t)n);
    if (!l || !perm) {
        free(l), free(perm);
        tg_set_error(TG_ERR_NOMEM, "tg_loader_new: out of memory");
        return NULL;
    }
    l->ds = ds;
    l->batch = batch;
    l->perm = perm;
    tg_rng_seed(&l->st.epoch_rng, seed);
    loader_shuffle(l);
    return l;
}

void tg_loader_free(tg_loader *l)
{
    if (l) {
        free(l->perm);
        free(l);
    }
}

int64_t tg_loader_batches_per_epoch(const tg_loader *l)
{
    return l->ds->images->shape[0] / l->batch;
}

tg_loader_state tg_loader_get_state(const tg_loader *l)
{
    return l->st;
}

tg_status tg_loader_set_state(tg_loader *l, const tg_loader_state *st)
{
    if (!l || !st)
        return tg_set_error(TG_ERR_ARG, "tg_loader_set_state: the %s is NULL",
                            l ? "state" : "loader");
    if (st->epoch < 0 || st->batch < 0 || st->batch >= tg_loader_batches_per_epoch(l))
        return tg_set_error(TG_ERR_ARG,
                            "tg_loader_set_state: epoch %lld, batch %lld: out of "
                            "range (%lld batches per epoch)",
                            (long long)st->epoch, (long long)st->batch,
                            (long long)tg_loader_batches_per_epoch(l));
    /* xoshiro's one invalid state: it only ever yields 0, and the shuffle's rejection loop
     * would wait forever for another number. */
    const uint32_t *s = st->epoch_rng.s;
    if ((s[0] | s[1] | s[2] | s[3]) == 0)
        return tg_set_error(TG_ERR_ARG,
                            "tg_loader_set_state: the epoch's RNG state is all zero, which "
                            "xoshiro128** never reaches from a seed");
    l->st = *st;
    loader_shuffle(l);
    return TG_OK;
}

tg_status tg_loader_next(tg_loader *l, tg_tensor **images, tg_tensor **labels)
{
    if (!l || !images)
        return tg_set_error(TG_ERR_ARG, "tg_loader_next: the %s is NULL",
                            l ? "images pointer" : "loader");
    /* Refused before any work: the epoch count is part of the saved state, and the last batch
     * of epoch INT64_MAX has no next epoch to advance to. */
    if (l->st.epoch == INT64_MAX && l->st.batch + 1 == tg_loader_batches_per_epoch(l))
        return tg_set_error(TG_ERR_STATE,
                            "tg_loader_next: epoch %lld is the last one an int64 counts; "
                            "its last batch cannot advance to another",
                            (long long)l->st.epoch);
    const tg_tensor *src = l->ds->images;
    int64_t h = src->shape[2], w = src->shape[3], b = l->batch, hw = h * w;
    tg_tensor *x = tg_tensor_new(TG_DIMS(b, 1, h, w));
    tg_tensor *y = tg_tensor_new(TG_DIMS(b));
    if (!x || !y) {
        tg_tensor_release(x);
        tg_tensor_release(y);
        return tg_last_status();
    }
    const int64_t *idx = l->perm + l->st.batch * b;
    for (int64_t i = 0; i < b; i++) {
        memcpy(x->data + i * hw, src->data + idx[i] * hw, sizeof(float) * (size_t)hw);
        y->data[i] = l->ds->labels->data[idx[i]];
    }
    /* Advance; a new epoch draws its seed from the previous one, then reshuffles. */
    if (++l->st.batch == tg_loader_batches_per_epoch(l)) {
        l->st.batch = 0;
        l->st.epoch++;
        tg_rng next;
        tg_rng_seed(&next,
                    ((uint64_t)tg_rng_u32(&l->st.epoch_rng) << 32) | tg_rng_u32(&l->st.epoch_rng));
        l->st.epoch_rng = next;
        loader_shuffle(l);
    }
    *images = x;
    if (labels)
        *labels = y;
    else
        tg_tensor_release(y);
    return TG_OK;
}

tg_dataset *tg_dataset_per_class(const tg_dataset *ds, int64_t n, uint64_t seed)
{
    if (!ds || !ds->images || !ds->labels || ds->images == TG_NONE || ds->labels == TG_NONE) {
        tg_set_error(TG_ERR_ARG, "tg_dataset_per_class: the dataset, its images or its labels "
                                 "are NULL or TG_NONE");
        return NULL;
    }
    const int64_t total = ds->labels->numel;
    if (ds->labels->ndim != 1 || ds->images->ndim < 1 || ds->images->shape[0] != total) {
        char a[160], b[160];
        tg_set_error(TG_ERR_SHAPE,
                     "tg_dataset_per_class: images %s and labels %s: need labels [N] and images "
                     "[N, ...]",
                     tg_shape_str(ds->images->ndim, ds->images->shape, a, sizeof a),
                     tg_shape_str(ds->labels->ndim, ds->labels->shape, b, sizeof b));
        return NULL;
    }
    if (n < 1) {
        tg_set_error(TG_ERR_ARG, "tg_dataset_per_class: %lld images per class (at least 1)",
                     (long long)n);
        return NULL;
    }
    int64_t have[256] = {0};
    for (int64_t i = 0; i < total; i++) {
        float v = ds->labels->data[i];
        if (!(v >= 0 && v <= 255 && v == (float)(int)v)) {
            tg_set_error(TG_ERR_ARG,
                         "tg_dataset_per_class: label %lld is %g, not a whole number 0..255",
                         (long long)i, (double)v);
            return NULL;
        }
        have[(int)v]++;
    }
    for (int c = 0; c < 256; c++)
        if (have[c] && have[c] < n) {
            tg_set_error(TG_ERR_ARG,
                         "tg_dataset_per_class: class %d has %lld images, fewer than the %lld "
                         "asked for",
                         c, (long long)have[c], (long long)n);
            return NULL;
        }
    /* Walk one seeded permutation and mark the first n of each class; copying the marked
     * images in index order keeps ds's order, so the subset does not depend on the walk. */
    int64_t *perm = malloc((size_t)total * sizeof *perm);
    bool *keep = calloc((size_t)total, 1);
    tg_dataset *out = calloc(1, sizeof *out);
    if (!perm || !keep || !out) {
        free(perm), free(keep), free(out);
        tg_set_error(TG_ERR_NOMEM, "tg_dataset_per_class: out of memory");
        return NULL;
    }
    tg_rng rng;
    tg_rng_seed(&rng, seed);
    tg_rng_permutation(&rng, total, perm);
    int64_t taken[256] = {0}, kept = 0;
    for (int64_t i = 0; i < total; i++) {
        int c = (int)ds->labels->data[perm[i]];
        if (taken[c] < n)
            taken[c]++, keep[perm[i]] = true, kept++;
    }
    free(perm);
    const tg_tensor *im = ds->images;
    const int64_t per = total ? im->numel / total : 0;
    int64_t shape[TG_MAX_DIMS];
    memcpy(shape, im->shape, sizeof shape);
    shape[0] = kept;
    out->images = tg_tensor_new(im->ndim, shape);
    out->labels = tg_tensor_new(TG_DIMS(kept));
    if (!out->images || !out->labels) {
        free(keep);
        tg_dataset_free(out);
        return NULL;
    }
    for (int64_t i = 0, j = 0; i < total; i++) {
        if (!keep[i])
            continue;
        memcpy(out->images->data + j * per, im->data + i * per, (size_t)per * sizeof(float));
        out->labels->data[j++] = ds->labels->data[i];
    }
    free(keep);
    return out;
}
