/* GAN quality on MNIST, measured the way the field does, with our LeNet classifier
 * (examples/mnist_classifier) standing in for the Inception network:
 *
 *   FID       the Fréchet distance between Gaussians fitted to the classifier's penultimate
 *             features [N, 128] of two image sets:
 *             ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})   (Heusel et al. 2017)
 *   score     the classifier score exp(E_x KL(p(y|x) || p(y))) (the Inception Score's formula,
 *             Salimans et al. 2016): 1 when every image gets the same prediction, at most 10,
 *             reached by confident predictions spread evenly over the ten digits
 *   coverage  the histogram of predicted classes, the share of the rarest one and how many
 *             classes hold at least 5% of the images (mode collapse shows here first)
 *   confidence  the mean of the highest softmax probability
 *   white     the mean pixel as a share of white, (x + 1) / 2 averaged (MNIST: about 0.13)
 *   diversity the root-mean-square distance between two of the set's features (scaled to unit
 *             length), over the same for the real reference set (gan_diversity): about 1 for
 *             a set as varied as the real one, 0 for one image repeated
 *
 * FID here is not comparable with Inception FIDs from papers: the features are another
 * network's. Compare it between checkpoints, and against the real-vs-real reference row. */
#ifndef MNIST_GAN_METRICS_H
#define MNIST_GAN_METRICS_H

#include "classifier.h"
#include "gan.h"

#include <stdio.h>

/* Mean [dim] and covariance [dim][dim] (row-major, unbiased: divided by n - 1, as numpy.cov)
 * of a feature set, in double. */
typedef struct gan_stats {
    int64_t n, dim;
    double *mean, *cov;
    /* the trace of the (unbiased) covariance of the rows scaled to unit length (zero rows
     * stay zero): half the mean squared distance between two of them (gan_diversity) */
    double spread;
} gan_stats;

/* The statistics of features [N, F] (N >= 2) into *out (free with gan_stats_free). */
tg_status gan_stats_compute(const tg_tensor *features, gan_stats *out);
/* Frees what gan_stats_compute allocated; a zeroed struct is fine. */
void gan_stats_free(gan_stats *s);

/* out = the square root of the symmetric positive semi-definite matrix a [n][n], through its
 * eigendecomposition (LAPACK dsyev); eigenvalues below 0, which rounding makes, count as 0.
 * Only a's lower triangle is read. out may be a. */
tg_status gan_sqrtm_psd(int64_t n, const double *a, double *out);

/* The Fréchet distance between N(a->mean, a->cov) and N(b->mean, b->cov). Tr((S1 S2)^{1/2})
 * is computed as the trace of (R S2 R)^{1/2} with R = S1^{1/2}: that matrix is symmetric PSD
 * and has the eigenvalues of S1 S2, so no complex square root is needed. */
tg_status gan_frechet_distance(const gan_stats *a, const gan_stats *b, double *fid);

/* The spread of a set's features against the reference set's: sqrt(set->spread /
 * ref->spread), the root-mean-square distance between two of the set's features scaled to unit
 * length over the same for the reference (NAN when the reference has no spread). Why this
 * form:
 *   - the mean squared distance between two distinct rows of a set is exactly twice the trace
 *     of their unbiased covariance (sum over pairs ||u_i - u_j||^2 = n sum_i ||u_i - mean||^2),
 *     so gan_stats_compute gets it in the pass that makes the statistics, O(N F) instead of a
 *     pass over the N^2 / 2 pairs;
 *   - features rather than pixels: the classifier's features tell digits apart where pixel
 *     distances mostly measure where the strokes lie (the test 3s spread 0.39 times as far as
 *     all test digits in features, 0.88 in pixels standardized per image);
 *   - unit length (cosine distance): a set whose features are all scaled alike is not less
 *     varied. Measured: the convt G's 2,340-iteration digits on a mid-gray background
 *     (README) cover all ten classes but their raw features spread 0.21 times as far as real
 *     ones; scaled to unit length, 0.98. Real digits: 0.999 for the training set against the
 *     test set;
 *   - divided by the real set's (the same digit, the same n), so that the number reads the
 *     same for every digit and classifier: ~1 as varied as real data, 0 one image repeated.
 * Not a quality figure: noise is "varied" (FID tells the rest); and a few distinct images
 * repeated already count as varied (ten real 3s repeated 100 times: the same as 1,000 real 3s,
 * 0.39 against all digits): it tells one mode from several, not several from many. */
double gan_diversity(const gan_stats *set, const gan_stats *ref);

/* Collapse of a generated set, from eval's figures (gan_collapse; the measurements behind the
 * thresholds: examples/augment/README.md, "Collapse"):
 *   black        white below GAN_BLACK_WHITE. Real test digits average 0.077 (digit 1, the
 *                darkest) to 0.172 (0), MNIST 0.13, and the darkest single real image of any
 *                digit is at 0.028; an untrained G draws gray (0.5-0.6), trained ones
 *                0.13-0.18. What the tutorial called "all-black output" is G at (nearly) -1
 *                everywhere, white ~0.00x: 0.02 is below every real image. Measured from the
 *                generator's floor (gan_white_floor): a G whose output is a relu's draws
 *                nothing below 0.5, and its "all black" is 0 (nearly) everywhere, a flat image
 *                the tutorial's grids (scaled per image) show black: black is then white less
 *                than 2% of the range above the floor, 0.01 above 0.5 (a relu G dead but for a
 *                few specks: 0.5001; one drawing real 0s on its gray: 0.53).
 *   single mode  not black, and diversity below GAN_SINGLE_MODE_DIVERSITY. Real training
 *                images of one digit against its test images: 0.95-1.10 (800 each, every
 *                digit); an untrained G: 1.06-1.54. Made-up sets of one real 3, against the
 *                test 3s: repeated 0, with noise on its strokes 0.10, shifted by up to 0.4
 *                pixel 0.26, by -1..1 whole pixels (and noise) 0.98; two distinct 3s repeated
 *                0.88. So below 0.3 is "one image, up to sub-pixel changes"; two images or
 *                more are far above.
 *   off digit    neither, for a G trained on one digit: fewer than GAN_OFF_DIGIT_SHARE of its
 *                images are classified as that digit (gan_digit_share). The classifier gives
 *                800 real test or training images of a digit their own class 98.8-100% of the
 *                time, each digit; images of noise or of no digit spread over the classes.
 *                The tutorial recipe's per-digit runs drew gray textures that are neither
 *                black nor single mode (examples/augment/README.md, "Collapse").
 *   none         none of these. A set of noise of a G trained on all digits is none: FID
 *                shows that. */
#define GAN_BLACK_WHITE 0.02
#define GAN_SINGLE_MODE_DIVERSITY 0.3
#define GAN_OFF_DIGIT_SHARE 0.5
typedef enum {
    GAN_COLLAPSE_NONE,
    GAN_COLLAPSE_BLACK,
    GAN_COLLAPSE_SINGLE_MODE,
    GAN_COLLAPSE_OFF_DIGIT,
    GAN_COLLAPSE_KINDS
} gan_collapse_kind;
/* The collapse of a set of mean white `white` from a generator whose lowest white is `white_floor`
 * (gan_white_floor), diversity `diversity` and digit share `digit_share` (gan_digit_share;
 * NAN: unknown or no digit, which is never off digit; a NAN diversity is never single mode).
 * The first that applies of black, single mode, off digit. */
gan_collapse_kind gan_collapse(double white, double white_floor, double diversity,
                               double digit_share);
/* The lowest white the generator named `generator` (gan_generator_label's name; NULL: images
 * of unknown origin) can draw: 0.5 for upsample-relu, whose output is a relu's, else 0. */
double gan_white_floor(const char *generator);
/* The white below which a set from a generator whose lowest white is `white_floor` is black:
 * GAN_BLACK_WHITE of the range above the floor (0.02 for a floor of 0, 0.51 for 0.5). */
double gan_black_white(double white_floor);
/* "none", "black", "single-mode" or "off-digit". */
const char *gan_collapse_name(gan_collapse_kind k);

#define GAN_MAX_CLASSES 16

/* Every figure of one image set. */
typedef struct gan_figures {
    int64_t n;                       /* images */
    double fid;                      /* against the reference set; NAN when there is none */
    double score;                    /* classifier score, in [1, classes] */
    int classes;                     /* classes of the classifier */
    int64_t counts[GAN_MAX_CLASSES]; /* images per predicted class */
    double rarest_share;             /* the rarest predicted class's share of the images */
    int rarest_class;
    int classes_5pct;  /* classes predicted for at least 5% of the images */
    double confidence; /* mean highest softmax probability */
    double white;      /* mean (x + 1) / 2 over every pixel */
    double diversity;  /* gan_diversity against the reference set; NAN when there is none */
} gan_figures;

/* Score, coverage and confidence of logits [N, K] (K <= GAN_MAX_CLASSES) into f; the other
 * fields are left as they are. */
tg_status gan_class_figures(const tg_tensor *logits, gan_figures *f);
/* The share of f's images classified as digit (f->counts[digit] / f->n): NAN when digit is
 * not one of f's classes (-1: a G of every digit) or f has no images. */
double gan_digit_share(const gan_figures *f, int digit);
/* rarest_share, rarest_class and classes_5pct of f->counts[0 .. f->classes) over f->n images. */
void gan_coverage(gan_figures *f);
/* Mean (x + 1) / 2 over every element of images in [-1, 1]. */
double gan_mean_white(const tg_tensor *images);

/* All figures of images [N, 1, 28, 28] in [-1, 1] through clf: FID and diversity against ref
 * (NULL: both NAN), score, coverage, confidence, white. own (may be NULL) receives the set's feature
 * statistics, to serve as a later reference (free it with gan_stats_free). */
tg_status gan_evaluate_images(clf_model *clf, const tg_tensor *images, const gan_stats *ref,
                              gan_figures *f, gan_stats *own);

/* n images [n, 1, 28, 28] from G in eval mode, for noise drawn from seed (standard normal
 * [n, nz]), generated in chunks so memory stays small. A new reference, or NULL. */
tg_tensor *gan_generate_n(gan_state *s, int64_t n, uint64_t seed);

/* n rows of images [N, 1, 28, 28] chosen without repetition by a permutation drawn from seed
 * (all of them, shuffled, when n == N). A new reference, or NULL (n > N: TG_ERR_ARG). */
tg_tensor *gan_subset(const tg_tensor *images, int64_t n, uint64_t seed);

/* Seeds of the permutations that choose the real subsets, fixed so that every evaluation of
 * n images compares against the same real images (mnist_gan eval and train --eval-every). */
#define GAN_TEST_SUBSET_SEED 0x7e57ull
#define GAN_TRAIN_SUBSET_SEED 0x7a1eull

/* Evaluation during training: the classifier and the statistics of n real test images, made
 * once; each gan_tracker_eval generates n images from the same noise and measures them. */
typedef struct gan_tracker {
    clf_model *clf;
    gan_stats ref;
    int64_t n;
    uint64_t seed;
} gan_tracker;

/* Loads the classifier and the test set of data_dir (digit 0..9: that class only; -1: all)
 * and measures n of its images. On failure the tracker is empty (closing it is fine) and the
 * error names the file or the size: all of it bad input. */
tg_status gan_tracker_open(gan_tracker *t, const char *classifier, const char *data_dir, int digit,
                           int64_t n, uint64_t seed);
/* Every figure of n images from G (noise from the tracker's seed) against the real ones. */
tg_status gan_tracker_eval(gan_tracker *t, gan_state *s, gan_figures *f);
/* Frees the tracker's classifier and statistics. */
void gan_tracker_close(gan_tracker *t);

/* Prints the table: one row per set, names[i] beside sets[i], then the class histograms. */
void gan_figures_table(FILE *out, int rows, const char *const names[], const gan_figures sets[]);
/* Writes f as a JSON object (no newline): {"n": .., "fid": .., "score": .., ...}; NAN and
 * infinities as null. */
void gan_figures_json(FILE *out, const gan_figures *f);
/* Writes s as a JSON string literal, escaped. */
void gan_json_string(FILE *out, const char *s);

#endif
