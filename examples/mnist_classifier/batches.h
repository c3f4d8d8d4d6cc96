/* mnist_classifier's training batches (batches.c): real images, optionally with generated
 * ones mixed into every batch (--augment-with, --ratio) and the classic augmentation applied
 * to each image (--augment classic). The program's own helper, not part of the model that
 * other programs reuse (classifier.h). */
#ifndef MNIST_CLASSIFIER_BATCHES_H
#define MNIST_CLASSIFIER_BATCHES_H

#include "dist_opt.h"
#include "tapegrad.h"

/* --augment classic: shift up to 2 pixels each way, turn up to 10 degrees either way, scale
 * 0.9 to 1.1, bilinear, the black background (-1) outside. */
#define CLF_CLASSIC_RANGE ((tg_affine_range){2.0f, 10.0f, 0.9f, 1.1f})

/* Reads PREFIX-images-idx3-ubyte and PREFIX-labels-idx1-ubyte (a set that mnist_gan sample
 * --idx writes) as a dataset scaled as tg_data_load_mnist scales MNIST: at least one 28x28
 * image, a label for each, pixels in [0, 255], labels whole numbers 0..9. NULL with the error
 * set (TG_ERR_IO for a missing file, TG_ERR_FORMAT naming the file otherwise). */
tg_dataset *clf_read_generated(const char *prefix);

typedef struct clf_batches clf_batches;

/* Batches of `batch` images: batch - n_gen from real and n_gen from gen (may be NULL when
 * n_gen is 0), each set through its own shuffling loader, real ones first; with augment every
 * image of the batch then goes through the classic transform. Each random stream is derived
 * from seed: the real loader's is seed + 1 (what the program always used), the generated
 * loader's and the augmentation's are other functions of it. The datasets are borrowed. NULL
 * with the error set (TG_ERR_ARG when a set has fewer images than its share of a batch). */
clf_batches *clf_batches_new(const tg_dataset *real, const tg_dataset *gen, int64_t batch,
                             int64_t n_gen, bool augment, uint64_t seed);
/* Under MPI (d from dp_start, dist_opt.h; NULL: one process), batch is the global batch: each
 * rank then gets its share of the real part and of the generated part (tg_dist_loader_next;
 * both must split evenly over the ranks), and each of its images the transform one process
 * with the whole batch would have drawn for it, so N ranks see exactly what one process sees.
 * Set before the first batch. */
void clf_batches_set_dist(clf_batches *b, const tg_dist *d);
/* Frees b. NULL is ignored. */
void clf_batches_free(clf_batches *b);
/* The next batch (this rank's share of it) as new references (release both): images
 * [batch, 1, 28, 28], labels [batch] as floats. */
tg_status clf_batches_next(clf_batches *b, tg_tensor **images, tg_tensor **labels);
/* Batches in one pass over the real images (what an epoch is). */
int64_t clf_batches_per_epoch(const clf_batches *b);
/* What a batch of b holds, as a phrase for the log ("16 images: 12 real and 4 generated, each
 * through the classic augmentation") into buf (n bytes). Returns buf. */
const char *clf_batches_describe(const clf_batches *b, char *buf, size_t n);

#endif
