/* tapegrad — files: atomic writes, idx datasets and the batch loader, PNG images, safetensors
 * checkpoints. Needs only tensor/. */
#ifndef TAPEGRAD_DATA_H
#define TAPEGRAD_DATA_H

#include "tensor.h"

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- atomic files (atomic.c) --------------------------------------------------------------
 * Write to a temporary file beside the target, then tg_atomic_commit renames it over the
 * target: a crash or a failed write never leaves a torn file or destroys the previous one. */
typedef struct tg_atomic_file tg_atomic_file;

/* Starts writing path (a temporary file in the same folder); NULL with TG_ERR_IO on failure.
 * Only a regular file is ever replaced: when path exists and is anything else (a symbolic link,
 * even to a regular file, a FIFO, a device such as /dev/null, a directory) it is refused with
 * TG_ERR_IO "tg_atomic_open: PATH: is a FIFO, not a regular file (a save replaces only regular
 * files)" before anything is created, and tg_atomic_commit checks again before its rename. */
tg_atomic_file *tg_atomic_open(const char *path);
/* Appends n bytes; a failure is remembered and makes the commit fail. */
tg_status tg_atomic_write(tg_atomic_file *af, const void *buf, size_t n);
/* The underlying stream, for fprintf; check the commit's status. */
FILE *tg_atomic_stream(tg_atomic_file *af);
/* Flushes, syncs and renames over the target; frees af. On failure the target is untouched. */
tg_status tg_atomic_commit(tg_atomic_file *af);
/* Discards the temporary file; the target is untouched; frees af. */
void tg_atomic_abort(tg_atomic_file *af);

/* ---- opening a regular file (file.c) ------------------------------------------------------ */

/* fopen(path, mode) for a regular file only, never blocking: a FIFO, a device, a socket or a
 * directory at path (or behind a symbolic link there) is refused at once with TG_ERR_IO
 * "tg_data_fopen_regular: PATH: is a FIFO, not a regular file", where fopen would wait for a
 * FIFO's other end forever. mode is fopen's "r", "w" or "a" (with "b" or "+"); "w" and "a"
 * create a missing file (0666 less the umask), "w" empties an existing one. NULL with the error
 * set on failure (TG_ERR_IO "cannot open: <reason>", TG_ERR_ARG for another mode). */
FILE *tg_data_fopen_regular(const char *path, const char *mode);

/* ---- idx files, MNIST datasets and the batch loader (idx.c, dataset.c) -------------------- */

/* Reads an idx file (raw or .gz; unsigned-byte or float32 elements) as a new float tensor of
 * its shape, values as stored; validates magic, dimensions, the exact length and that float
 * values are finite. A .gz may hold several gzip members back to back (read as their contents
 * joined, as gunzip does); any other byte after a member is refused. Only a regular file is
 * read: a FIFO, a device or a directory gets TG_ERR_IO at once ("is a FIFO, not a regular
 * file"), never a wait. */
tg_tensor *tg_data_read_idx(const char *path);
/* Checks values read from a file before they are used: every value of t a number in [lo, hi]
 * and, when integers, a whole one. TG_OK, or TG_ERR_FORMAT naming `what` (the file), the first
 * bad value and its index: "tg_data_check_range: FILE: value 300 at index [4, 0, 7] is outside
 * [0, 255]". tg_data_read_idx leaves this to its caller, since what range is valid depends on
 * what the file holds; tg_data_load_mnist makes the same check on pixels ([0, 255]) and labels. */
tg_status tg_data_check_range(const tg_tensor *t, const char *what, float lo, float hi,
                              bool integers);
/* Writes images [N,1,H,W] or [N,H,W] in [-1, 1] as an idx3 unsigned-byte file (0..255),
 * atomically; tg_data_read_idx and tg_data_load_mnist read it back. */
tg_status tg_data_write_idx_images(const char *path, const tg_tensor *images);
/* Writes labels [N] (whole numbers 0..255) as an idx1 unsigned-byte file, atomically. */
tg_status tg_data_write_idx_labels(const char *path, const tg_tensor *labels);

typedef struct tg_dataset {
    tg_tensor *images; /* [N, 1, H, W], scaled to [-1, 1] */
    tg_tensor *labels; /* [N], class indices as floats */
} tg_dataset;

/* Loads dir/{train,t10k}-{images-idx3,labels-idx1}-ubyte (raw or .gz); digit 0..9 keeps only
 * that class, -1 keeps all. Pixels must lie in [0, 255] and labels be whole numbers 0..9
 * (TG_ERR_FORMAT naming the file, the index and the value otherwise). The file's values are
 * read, scaled into the dataset and returned to the system (tg_allocator_trim). */
tg_dataset *tg_data_load_mnist(const char *dir, bool train, int digit);
/* Frees a dataset. NULL is ignored. */
void tg_dataset_free(tg_dataset *ds);

/* A stratified subset of ds: n images of every class in ds (classes are the label values
 * 0..255 that occur), chosen by seed: the first n of each class in one seeded permutation of
 * ds, kept in ds's order. With the same seed a smaller n picks a subset of a larger n's, and
 * two programs given the same (n, seed) train on the same images. A new dataset (free with
 * tg_dataset_free); NULL with TG_ERR_ARG if n < 1, a label is not a whole number 0..255, or a
 * class has fewer than n images (naming the class and its count). */
tg_dataset *tg_dataset_per_class(const tg_dataset *ds, int64_t n, uint64_t seed);

/* Where a loader stands: plain data, to save in a checkpoint and restore. */
typedef struct tg_loader_state {
    tg_rng epoch_rng; /* the seed of the current epoch's shuffle */
    int64_t epoch;    /* epochs completed */
    int64_t batch;    /* index of the next batch within the epoch */
} tg_loader_state;

typedef struct tg_loader tg_loader;

/* A loader over ds (borrowed, must outlive it): shuffled batches of `batch`, a fresh shuffle
 * every epoch, the incomplete last batch dropped. */
tg_loader *tg_loader_new(const tg_dataset *ds, int64_t batch, uint64_t seed);
/* Frees a loader. NULL is ignored. */
void tg_loader_free(tg_loader *l);
/* The next batch as new references (release both); labels may be NULL if not wanted. */
tg_status tg_loader_next(tg_loader *l, tg_tensor **images, tg_tensor **labels);
/* Full batches per epoch. */
int64_t tg_loader_batches_per_epoch(const tg_loader *l);
/* The loader's position (before the next batch). */
tg_loader_state tg_loader_get_state(const tg_loader *l);
/* Moves the loader to a saved position. */
tg_status tg_loader_set_state(tg_loader *l, const tg_loader_state *st);
/* Shuffles within consecutive blocks of `block` images instead of across the whole set, as
 * PaddlePaddle's paddle.reader.shuffle(reader, buf_size) does: each epoch is a permutation of
 * images 0..block-1, then one of block..2*block-1, ... (the last block may be shorter); batches
 * run on across block boundaries. 0 (the default) shuffles the whole set. The current epoch's
 * order is redrawn from its seed, so set it right after tg_loader_new (or before or after
 * tg_loader_set_state: the order depends only on the epoch's seed and the block). */
tg_status tg_loader_set_shuffle_block(tg_loader *l, int64_t block);
/* The block size in force (0: the whole set; 0 for NULL). */
int64_t tg_loader_shuffle_block(const tg_loader *l);

/* ---- PNG images (png.c) --------------------------------------------------------------------- */

typedef enum {
    TG_GRID_FIXED,     /* -1 black, 1 white: the true values */
    TG_GRID_PER_IMAGE, /* each image stretched to its own range, as matplotlib's imshow does */
} tg_grid_scale;

/* Writes 8-bit grayscale pixels [height][width] as a PNG file, atomically. */
tg_status tg_data_write_png_gray(const char *path, const unsigned char *pixels, int64_t width,
                                 int64_t height);
/* Writes images [N,1,H,W] or [N,H,W] as a grid of `cols` columns with a one-pixel gap. */
tg_status tg_data_write_png_grid(const char *path, const tg_tensor *images, int64_t cols,
                                 tg_grid_scale scale);

/* ---- safetensors checkpoints (safetensors.c) ---------------------------------------------
 * The format of Hugging Face's safetensors: an 8-byte little-endian header length, a JSON header
 * {"__metadata__": {...}, "name": {"dtype", "shape", "data_offsets"}, ...} padded with spaces
 * to a multiple of 8 bytes, then the raw little-endian data. Python reads it with json and
 * numpy alone (or safetensors / PyTorch). */

/* Writes sd's tensors (as F32, in insertion order) and metadata to path, atomically: a failure
 * (TG_ERR_IO naming the path and the system's reason) leaves any previous file as it was. */
tg_status tg_data_save_safetensors(const char *path, const tg_state_dict *sd);
/* Reads a safetensors file into a new state dict (free it with tg_state_dict_free), names in
 * file order. F32 loads as is; F64, F16, BF16, integer and BOOL tensors are converted to
 * float32. Everything is validated first: NULL with TG_ERR_FORMAT naming the file and the
 * tensor for a malformed file, TG_ERR_IO when it cannot be read. */
tg_state_dict *tg_data_load_safetensors(const char *path);

/* ---- augmentation: affine transforms of images (augment.c) --------------------------------
 * For training on few images: each image moved, turned and scaled a little, resampled
 * bilinearly, as torchvision's RandomAffine does. Coordinates are pixels, x to the right and y
 * down, about the image's centre ((W - 1) / 2, (H - 1) / 2). */

/* One transform: the content is scaled by `scale` and turned by `angle` degrees
 * counter-clockwise as the image is viewed (both about the centre), then moved by dx pixels
 * to the right and dy pixels down. */
typedef struct tg_affine {
    float angle, scale, dx, dy;
} tg_affine;

/* What tg_data_augment_affine draws from, each uniformly and independently per image: dx and
 * dy in [-max_shift, max_shift], the angle in [-max_angle, max_angle] degrees, the scale in
 * [min_scale, max_scale]. All zero but the scales at 1: no change. */
typedef struct tg_affine_range {
    float max_shift, max_angle, min_scale, max_scale;
} tg_affine_range;

/* images [N, C, H, W] (borrowed) each transformed by t[i] (n_t == N) or all by t[0] (n_t ==
 * 1), every channel alike: output pixel p takes the bilinear interpolation of the input at the
 * transform's inverse image of p, a neighbour outside the image counting as `fill` (MNIST's
 * background in [-1, 1] is -1). An integer shift with angle 0 and scale 1 moves pixels
 * exactly. A new tensor outside any tape (release it); NULL with TG_ERR_ARG or TG_ERR_SHAPE
 * naming the argument and its value (a non-finite number, a scale <= 0, a wrong n_t). */
tg_tensor *tg_data_affine(const tg_tensor *images, const tg_affine *t, int64_t n_t, float fill);
/* tg_data_affine with a transform per image drawn from r by rng: four draws per image in a
 * fixed order (angle, scale, dx, dy) whatever the ranges, so the same rng state gives the same
 * output; images with no elements draw nothing. NULL with TG_ERR_ARG for a negative or non-finite range, an angle over 180, a scale
 * range that is empty or not above 0, a NULL argument. */
tg_tensor *tg_data_augment_affine(const tg_tensor *images, tg_rng *rng, const tg_affine_range *r,
                                  float fill);

#ifdef __cplusplus
}
#endif
#endif
