/* The MNIST classifier's model: a LeNet-style CNN, its evaluation and its checkpoint.
 *
 * mnist_classifier (main.c) trains it; other programs load a trained one to score images, e.g.
 * the GAN's metrics (FID on the penultimate features, accuracy on generated digits):
 *
 *     clf_model *clf = clf_load("mnist_classifier.safetensors", NULL);
 *     if (!clf) die(tg_last_error());
 *     tg_tensor *feat, *logits;                         // new references: [N, 128], [N, 10]
 *     if (clf_eval(clf, images, &feat, &logits) != TG_OK) die(tg_last_error());
 *     ...
 *     tg_tensor_release(feat), tg_tensor_release(logits), clf_free(clf);
 *
 * Images are [N, 1, 28, 28] scaled to [-1, 1], as tg_data_load_mnist gives them. */
#ifndef MNIST_CLASSIFIER_H
#define MNIST_CLASSIFIER_H

#include "tapegrad.h"

/* The architecture, stored in every checkpoint and checked on load. */
#define CLF_ARCH                                                                                   \
    "lenet: conv5x5(1->32) relu maxpool2, conv5x5(32->64) relu maxpool2, "                         \
    "linear(1024->128) relu, dropout(0.5), linear(128->10)"
#define CLF_FEATURES 128 /* width of the penultimate layer */
#define CLF_DROPOUT 0.5f /* the dropout rate CLF_ARCH names: clf_new's */
#define CLF_CLASSES 10

typedef struct clf_model {
    /* Two children, so features can be read between them (names as torchvision's models):
     *   "features":   the convolutions and linear(1024->128) + relu -> [N, 128]
     *   "classifier": dropout and linear(128->10) -> logits [N, 10] */
    tg_module *net;
    tg_rng dropout_rng; /* the dropout layer's draws while training (it keeps a pointer) */
} clf_model;

/* What a checkpoint records besides the weights. */
typedef struct clf_info {
    int64_t epoch;        /* epochs trained (stages, for a run of --steps) */
    int64_t steps;        /* optimizer steps trained (0: not recorded, in older files) */
    double test_accuracy; /* in [0, 1], measured after that epoch */
    char dataset[64];     /* "mnist", "fashion" or the data folder */
} clf_info;

/* A new model, in training mode, with PyTorch's default initialisation drawn from seed. NULL
 * with the error set on failure. */
clf_model *clf_new(uint64_t seed);
/* The same with another dropout rate p in [0, 1) (0: none, and no random draws: training is
 * then a deterministic function of the weights and the batches). The weights are clf_new's for
 * the seed, and a checkpoint is the same architecture whatever p (dropout is off in eval). */
clf_model *clf_new_with_dropout(uint64_t seed, float p);
/* Frees the model. NULL is ignored. */
void clf_free(clf_model *m);

/* The logits [N, 10] of images [N, 1, 28, 28], in the model's current mode, recorded on the
 * open tape (owned by it): the training forward. NULL with the error set. */
tg_tensor *clf_forward(clf_model *m, tg_tensor *images);

/* Evaluates images [N, 1, 28, 28] (borrowed; any N) in eval mode (dropout off) without
 * recording, in chunks so memory stays small, and restores the model's mode. *features gets
 * the penultimate activations [N, 128] and *logits [N, 10], as new references (release them);
 * either pointer may be NULL when not wanted. */
tg_status clf_eval(clf_model *m, const tg_tensor *images, tg_tensor **features, tg_tensor **logits);

/* The fraction of images whose highest logit is at their label (labels [N], class indices as
 * floats), computed with clf_eval; *correct (may be NULL) gets the count. */
tg_status clf_accuracy(clf_model *m, const tg_tensor *images, const tg_tensor *labels,
                       double *accuracy, int64_t *correct);

/* Saves the weights with info and the architecture as metadata to path, atomically. */
tg_status clf_save(const clf_model *m, const clf_info *info, const char *path);
/* A model with the weights of the checkpoint at path, in eval mode; info (may be NULL) gets
 * what the checkpoint records. NULL with the error set: TG_ERR_IO when the file cannot be
 * read, TG_ERR_FORMAT when it is malformed or holds another architecture. */
clf_model *clf_load(const char *path, clf_info *info);

#endif
