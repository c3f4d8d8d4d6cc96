/* The MNIST classifier's model (see classifier.h): built from nn.h layers, one a line. */
#include "classifier.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Images evaluated per tape in clf_eval: the first convolution's output for 256 images is
 * 256 * 32 * 24 * 24 floats, 19 MB; the whole test set at once would take 0.7 GB. */
enum { EVAL_CHUNK = 256 };

/* Seeds of the two random streams, derived from the user's seed so that they differ. */
static const uint64_t DROPOUT_STREAM = 0x9e3779b97f4a7c15u;

clf_model *clf_new(uint64_t seed)
{
    return clf_new_with_dropout(seed, CLF_DROPOUT);
}

clf_model *clf_new_with_dropout(uint64_t seed, float p)
{
    if (!(p >= 0.0f && p < 1.0f)) {
        tg_set_error(TG_ERR_ARG, "clf_new_with_dropout: dropout %g: need a rate in [0, 1)",
                     (double)p);
        return NULL;
    }
    clf_model *m = calloc(1, sizeof *m);
    if (!m) {
        tg_set_error(TG_ERR_NOMEM, "clf_new: out of memory");
        return NULL;
    }
    tg_rng init;
    tg_rng_seed(&init, seed);
    tg_rng_seed(&m->dropout_rng, seed ^ DROPOUT_STREAM);

    /* 28x28 -conv5-> 24x24 -pool-> 12x12 -conv5-> 8x8 -pool-> 4x4: 64 * 4 * 4 = 1024. */
    tg_module *features = TG_NN_SEQUENTIAL(
        tg_nn_conv2d(1, 32, 5, 1, 0, 1, true, &init), tg_nn_relu(), tg_nn_max_pool2d(2, 0, 0),
        tg_nn_conv2d(32, 64, 5, 1, 0, 1, true, &init), tg_nn_relu(), tg_nn_max_pool2d(2, 0, 0),
        tg_nn_flatten(), tg_nn_linear(64 * 4 * 4, CLF_FEATURES, true, &init), tg_nn_relu());
    tg_module *classifier = TG_NN_SEQUENTIAL(tg_nn_dropout(p, &m->dropout_rng),
                                             tg_nn_linear(CLF_FEATURES, CLF_CLASSES, true, &init));
    /* Each add takes ownership and passes a NULL (with its error) along: one check at the end. */
    m->net = tg_nn_sequential_add(tg_nn_sequential(0), "features", features);
    m->net = tg_nn_sequential_add(m->net, "classifier", classifier);
    if (!m->net) {
        free(m);
        return NULL;
    }
    return m;
}

void clf_free(clf_model *m)
{
    if (!m)
        return;
    tg_module_free(m->net);
    free(m);
}

/* TG_OK when images are [N, 1, 28, 28]; otherwise TG_ERR_SHAPE naming fn and the shape. */
static tg_status check_images(const char *fn, const tg_tensor *images)
{
    if (!images)
        return tg_last_status() != TG_OK ? tg_last_status()
                                         : tg_set_error(TG_ERR_ARG, "%s: images is NULL", fn);
    if (images->ndim == 4 && images->shape[1] == 1 && images->shape[2] == 28 &&
        images->shape[3] == 28)
        return TG_OK;
    char s[160];
    return tg_set_error(TG_ERR_SHAPE, "%s: images %s: expected [N, 1, 28, 28]", fn,
                        tg_shape_str(images->ndim, images->shape, s, sizeof s));
}

tg_tensor *clf_forward(clf_model *m, tg_tensor *images)
{
    if (check_images("clf_forward", images) != TG_OK)
        return NULL;
    return tg_module_forward(m->net, images);
}

tg_status clf_eval(clf_model *m, const tg_tensor *images, tg_tensor **features, tg_tensor **logits)
{
    if (features)
        *features = NULL;
    if (logits)
        *logits = NULL;
    if (check_images("clf_eval", images) != TG_OK)
        return tg_last_status();

    const int64_t n = images->shape[0], pixels = 28 * 28;
    tg_tensor *feat = tg_tensor_new(TG_DIMS(n, CLF_FEATURES));
    tg_tensor *out = tg_tensor_new(TG_DIMS(n, CLF_CLASSES));
    if (!feat || !out) {
        tg_tensor_release(feat);
        tg_tensor_release(out);
        return tg_last_status();
    }
    const bool was_training = tg_module_is_training(m->net);
    tg_module_train(m->net, false);

    tg_status st = TG_OK;
    for (int64_t start = 0; start < n && st == TG_OK; start += EVAL_CHUNK) {
        const int64_t b = n - start < EVAL_CHUNK ? n - start : EVAL_CHUNK;
        /* A no-grad tape: nothing is recorded, and its end frees the chunk's activations. */
        tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
        if (!tape) {
            st = tg_last_status();
            break;
        }
        tg_tensor *x = tg_tensor_from_data(TG_DIMS(b, 1, 28, 28), images->data + start * pixels);
        tg_tensor *f = tg_module_forward(tg_module_child(m->net, "features"), x);
        tg_tensor *y = tg_module_forward(tg_module_child(m->net, "classifier"), f);
        if (y) {
            memcpy(feat->data + start * CLF_FEATURES, f->data, sizeof(float) * (size_t)f->numel);
            memcpy(out->data + start * CLF_CLASSES, y->data, sizeof(float) * (size_t)y->numel);
        } else {
            st = tg_last_status();
        }
        tg_tensor_release(x);
        tg_tape_end(tape);
    }
    tg_module_train(m->net, was_training);

    if (st != TG_OK || !features)
        tg_tensor_release(feat);
    else
        *features = feat;
    if (st != TG_OK || !logits)
        tg_tensor_release(out);
    else
        *logits = out;
    return st;
}

tg_status clf_accuracy(clf_model *m, const tg_tensor *images, const tg_tensor *labels,
                       double *accuracy, int64_t *correct)
{
    if (check_images("clf_accuracy", images) != TG_OK)
        return tg_last_status();
    if (!labels || labels->ndim != 1 || labels->shape[0] != images->shape[0] ||
        images->shape[0] == 0) {
        char s[160] = "NULL";
        if (labels)
            tg_shape_str(labels->ndim, labels->shape, s, sizeof s);
        return tg_set_error(TG_ERR_SHAPE,
                            "clf_accuracy: labels %s for %lld images: expected "
                            "[%lld], at least one",
                            s, (long long)images->shape[0], (long long)images->shape[0]);
    }
    tg_tensor *logits;
    tg_status st = clf_eval(m, images, NULL, &logits);
    if (st != TG_OK)
        return st;
    int64_t hits = 0;
    for (int64_t i = 0; i < logits->shape[0]; i++) {
        const float *row = logits->data + i * CLF_CLASSES;
        int best = 0;
        for (int k = 1; k < CLF_CLASSES; k++)
            if (row[k] > row[best])
                best = k;
        hits += (float)best == labels->data[i];
    }
    tg_tensor_release(logits);
    if (accuracy)
        *accuracy = (double)hits / (double)images->shape[0];
    if (correct)
        *correct = hits;
    return TG_OK;
}

tg_status clf_save(const clf_model *m, const clf_info *info, const char *path)
{
    tg_state_dict *sd = tg_state_dict_new();
    if (!sd)
        return tg_last_status();
    char epoch[32], steps[32], acc[32];
    snprintf(epoch, sizeof epoch, "%lld", (long long)info->epoch);
    snprintf(steps, sizeof steps, "%lld", (long long)info->steps);
    snprintf(acc, sizeof acc, "%.6f", info->test_accuracy);
    tg_status st = tg_module_state_dict(m->net, NULL, sd);
    if (st == TG_OK)
        st = tg_state_dict_set_meta(sd, "architecture", CLF_ARCH);
    if (st == TG_OK)
        st = tg_state_dict_set_meta(sd, "epoch", epoch);
    if (st == TG_OK)
        st = tg_state_dict_set_meta(sd, "steps", steps);
    if (st == TG_OK)
        st = tg_state_dict_set_meta(sd, "test_accuracy", acc);
    if (st == TG_OK)
        st = tg_state_dict_set_meta(sd, "dataset", info->dataset);
    if (st == TG_OK)
        st = tg_data_save_safetensors(path, sd);
    tg_state_dict_free(sd);
    return st;
}

/* s from the file, escaped into buf (SHOW_MAX bytes) for a message or display. */
#define SHOW_MAX 64
static const char *show(const char *s, char *buf)
{
    tg_escape(buf, SHOW_MAX, s, strnlen(s, SHOW_MAX));
    return buf;
}

/* Reads the optional metadata into info, each value whole (tg_parse_*) and in range;
 * TG_ERR_FORMAT when one is not. The dataset is kept escaped: it is only ever shown. */
static tg_status load_info(const tg_state_dict *sd, const char *path, clf_info *info)
{
    memset(info, 0, sizeof *info);
    const char *epoch = tg_state_dict_meta(sd, "epoch");
    const char *steps = tg_state_dict_meta(sd, "steps");
    const char *acc = tg_state_dict_meta(sd, "test_accuracy");
    const char *dataset = tg_state_dict_meta(sd, "dataset");
    char shown[SHOW_MAX];
    if (epoch && tg_parse_int(epoch, 0, INT64_MAX, &info->epoch) != TG_OK)
        return tg_set_error(TG_ERR_FORMAT,
                            "clf_load: %s: metadata \"epoch\" is \"%s\", expected a whole number "
                            ">= 0",
                            path, show(epoch, shown));
    if (steps && tg_parse_int(steps, 0, INT64_MAX, &info->steps) != TG_OK)
        return tg_set_error(TG_ERR_FORMAT,
                            "clf_load: %s: metadata \"steps\" is \"%s\", expected a whole number "
                            ">= 0",
                            path, show(steps, shown));
    if (acc && tg_parse_real(acc, 0.0, 1.0, &info->test_accuracy) != TG_OK)
        return tg_set_error(TG_ERR_FORMAT,
                            "clf_load: %s: metadata \"test_accuracy\" is \"%s\", expected a "
                            "number in [0, 1]",
                            path, show(acc, shown));
    if (dataset)
        tg_escape(info->dataset, sizeof info->dataset, dataset, strlen(dataset));
    return TG_OK;
}

clf_model *clf_load(const char *path, clf_info *info)
{
    tg_state_dict *sd = tg_data_load_safetensors(path);
    if (!sd)
        return NULL;
    clf_model *m = NULL;
    clf_info scratch;
    const char *arch = tg_state_dict_meta(sd, "architecture");
    if (!arch || strcmp(arch, CLF_ARCH) != 0) {
        char shown[SHOW_MAX];
        tg_set_error(TG_ERR_FORMAT,
                     "clf_load: %s: architecture \"%s\" is not this classifier's "
                     "(\"%s\")",
                     path, arch ? show(arch, shown) : "(none recorded)", CLF_ARCH);
        goto done;
    }
    if (load_info(sd, path, info ? info : &scratch) != TG_OK)
        goto done;
    m = clf_new(0); /* the weights are all replaced below */
    if (!m)
        goto done;
    if (tg_module_load_state_dict(m->net, NULL, sd) != TG_OK) {
        /* A missing or misshapen tensor is a fault of the file: say which file. */
        char why[512];
        snprintf(why, sizeof why, "%s", tg_last_error());
        tg_set_error(TG_ERR_FORMAT, "clf_load: %s: %s", path, why);
        clf_free(m);
        m = NULL;
        goto done;
    }
    tg_module_train(m->net, false);
done:
    tg_state_dict_free(sd);
    return m;
}
