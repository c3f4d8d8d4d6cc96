/* mnist_gan's conditional recipe and training subsets (issue 16) end to end: the built program
 * on 400 real MNIST training images copied from $TG_MNIST_DIR (synthetic digits without it),
 * width / 8, batch 16, one thread (an epoch is 25 iterations).
 *
 *   1. train --recipe cgan: exit 0, finite losses.csv rows, a grid of a row per digit (10 rows
 *      of 16), the recipe in the log line and the checkpoint (recipe 3).
 *   2. resume: 30 iterations at once against 10 + --resume to 30 (past the epoch's end at 25):
 *      the same rows but for the seconds, the same grids, the same checkpoint bit for bit.
 *   3. sample --label: all writes images and labels i % 10 (the pair loads as MNIST); --label 3
 *      writes labels 3 and image 3 of `all` (the same z, the same label) bit for bit, image 0
 *      (another label) not; with 1010 images, image 1003 too (gan_generate_n's chunks keep
 *      image i's label i % 10). eval of the model reports its label accuracy.
 *   4. --train-per-class N --seed S trains on exactly tg_dataset_per_class(set, N, S): the
 *      run's rows and checkpoint equal those of a run on a data folder holding that subset,
 *      written here; with --digit 3, that subset's images of 3 (and sample draws 3 by
 *      default). The checkpoint records N, resume keeps it.
 *   5. refusals, each exit 2 with one line: a batch larger than the subset, a class with too
 *      few images, --label of an unconditional model (but a one-digit model's own digit),
 *      --label out of range, --train-per-class changed on resume.
 *
 * Usage: test_mnist_cgan PATH/TO/mnist_gan (meson passes the path). TG_KEEP_TMP=1 keeps the
 * temporary folder. */
#include "classifier.h"
#include "gan_run.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_IMAGES 400
#define BATCH "16"

static const char *data_dir;

/* mnist_gan train on the small set: width / 8, one thread, a grid every 10 iterations, then
 * extra (NULL-terminated, may be NULL); batch 16 unless extra sets it. Fails the test unless it
 * exits 0. */
static void train_ok(const char *out, int iters, bool resume, const char *const *extra)
{
    const char *a[48] = {"train",     "--data", data_dir,      "--iters", fmt("%d", iters),
                         "--threads", "1",      "--log-every", "10",      "--out",
                         out};
    int k = 11;
    bool batch_given = false;
    for (int i = 0; extra && extra[i]; i++)
        batch_given |= !strcmp(extra[i], "--batch");
    if (resume)
        a[k++] = "--resume";
    else
        a[k++] = "--width-div", a[k++] = "8";
    if (!resume && !batch_given)
        a[k++] = "--batch", a[k++] = BATCH;
    for (int i = 0; extra && extra[i]; i++)
        a[k++] = extra[i];
    a[k] = NULL;
    run_result r = gan(a);
    assert_ran(&r, cmdline(a));
    run_free(&r);
}

/* Fails unless r exited 2 with one line on stderr holding part. */
static void assert_refused(run_result *r, const char *what, const char *part)
{
    const char *nl = strchr(r->err, '\n');
    if (r->status != 2 || !strstr(r->err, part) || !nl || nl[1])
        fail_msg("%s: exit %d, expected 2 with one line holding \"%s\"; stderr:\n%s", what,
                 r->status, part, r->err);
    run_free(r);
}

/* The metadata value of key in the checkpoint at path equals want. */
static void assert_meta(const char *path, const char *key, const char *want)
{
    tg_state_dict *sd = ckpt_load(path);
    const char *v = tg_state_dict_meta(sd, key);
    if (!v || strcmp(v, want) != 0)
        fail_msg("%s: metadata %s is %s, expected %s", path, key, v ? v : "missing", want);
    tg_state_dict_free(sd);
}

/* The two runs' losses.csv rows are the same but for the seconds, rows of them. */
static void assert_same_rows(const char *a_dir, const char *b_dir, int rows)
{
    csv_file a = csv_load(fmt("%s/losses.csv", a_dir)), b = csv_load(fmt("%s/losses.csv", b_dir));
    if (a.n != rows || b.n != rows)
        fail_msg("%s and %s: %d and %d rows, expected %d", a_dir, b_dir, a.n, b.n, rows);
    for (int i = 0; i < rows; i++)
        if (strcmp(row_key(a.rows[i]), row_key(b.rows[i])) != 0)
            fail_msg("row %d differs:\n  %s: %s\n  %s: %s", i + 1, a_dir, a.rows[i], b_dir,
                     b.rows[i]);
    csv_free(&a), csv_free(&b);
}

/* The width and height of the PNG at path (IHDR), after checking its signature. */
static void png_size(const char *path, uint32_t *w, uint32_t *h)
{
    size_t n;
    unsigned char *b = (unsigned char *)must_read(path, &n);
    if (n < 24 || memcmp(b + 1, "PNG", 3) != 0 || memcmp(b + 12, "IHDR", 4) != 0)
        fail_msg("%s is not a PNG", path);
    *w = (uint32_t)b[16] << 24 | (uint32_t)b[17] << 16 | (uint32_t)b[18] << 8 | b[19];
    *h = (uint32_t)b[20] << 24 | (uint32_t)b[21] << 16 | (uint32_t)b[22] << 8 | b[23];
    free(b);
}

/* A two-iteration dcgan model of every digit (an unconditional one), made once. */
static const char *dcgan_checkpoint(void)
{
    const char *dir = fmt("%s/dcgan", root), *ck = fmt("%s/checkpoint.safetensors", dir);
    if (!exists(ck))
        train_ok(dir, 2, false, (const char *const[]){"--recipe", "dcgan", NULL});
    return ck;
}

/* ---- 1. train -------------------------------------------------------------------------- */

static void test_cgan_trains(void **state)
{
    (void)state;
    const char *dir = fmt("%s/cgan", root);
    const char *a[] = {"train", "--data",      data_dir, "--iters",  "12",   "--threads",
                       "1",     "--log-every", "6",      "--out",    dir,    "--width-div",
                       "8",     "--batch",     BATCH,    "--recipe", "cgan", NULL};
    run_result r = gan(a);
    assert_ran(&r, cmdline(a));
    if (!strstr(r.out, "recipe cgan") || !strstr(r.out, "real batch's labels"))
        fail_msg("the log line does not name the recipe and its labels:\n%s", r.out);
    run_free(&r);
    csv_file c = csv_load(fmt("%s/losses.csv", dir));
    assert_int_equal(c.n, 12);
    for (int i = 0; i < c.n; i++) {
        double v[6];
        if (sscanf(c.rows[i], "%lf,%lf,%lf,%lf,%lf,%lf", &v[0], &v[1], &v[2], &v[3], &v[4],
                   &v[5]) != 6 ||
            v[0] != i + 1 || !isfinite(v[3]) || !isfinite(v[4]) || !isfinite(v[5]) || v[3] <= 0 ||
            v[4] <= 0 || v[5] <= 0)
            fail_msg("row %d: %s", i + 1, c.rows[i]);
    }
    csv_free(&c);
    /* a row per digit: 10 rows of 16 images, 28 pixels and a 1-pixel gap each */
    uint32_t w, h;
    png_size(fmt("%s/samples_12.png", dir), &w, &h);
    if (w != 16 * 29 - 1 || h != 10 * 29 - 1)
        fail_msg("samples_12.png is %ux%u, expected 463x289 (10 rows of 16)", w, h);
    assert_meta(fmt("%s/checkpoint.safetensors", dir), "recipe", "3");
    assert_meta(fmt("%s/checkpoint.safetensors", dir), "train_per_class", "0");
}

/* ---- 2. resume ------------------------------------------------------------------------- */

static void test_cgan_resume(void **state)
{
    (void)state;
    const char *ref = fmt("%s/cgan_ref", root), *dir = fmt("%s/cgan_split", root);
    const char *const cgan[] = {"--recipe", "cgan", NULL};
    train_ok(ref, 30, false, cgan);
    train_ok(dir, 10, false, cgan);
    train_ok(dir, 30, true, cgan); /* past the end of the first epoch, at 25 */
    assert_same_rows(ref, dir, 30);
    for (int it = 10; it <= 30; it += 10)
        if (!same_file(fmt("%s/samples_%d.png", ref, it), fmt("%s/samples_%d.png", dir, it)))
            fail_msg("samples_%d.png differs between the uninterrupted and the resumed run", it);
    assert_same_checkpoint(fmt("%s/checkpoint.safetensors", ref),
                           fmt("%s/checkpoint.safetensors", dir));
}

/* ---- 3. sample --label, and eval -------------------------------------------------------- */

/* The images and labels sample --idx wrote under prefix; n images expected. */
static tg_tensor *read_images(const char *prefix, int64_t n)
{
    tg_tensor *t = tg_data_read_idx(fmt("%s-images-idx3-ubyte", prefix));
    if (!t)
        fail_msg("%s", tg_last_error());
    assert_int_equal(t->shape[0], n);
    return t;
}

static void assert_labels(const char *prefix, int64_t n, int label)
{
    tg_tensor *l = tg_data_read_idx(fmt("%s-labels-idx1-ubyte", prefix));
    if (!l)
        fail_msg("%s", tg_last_error());
    assert_int_equal(l->ndim, 1);
    assert_int_equal(l->shape[0], n);
    for (int64_t i = 0; i < n; i++)
        if (l->data[i] != (float)(label < 0 ? i % 10 : label))
            fail_msg("%s: label %lld is %g, expected %lld", prefix, (long long)i,
                     (double)l->data[i], (long long)(label < 0 ? i % 10 : label));
    tg_tensor_release(l);
}

/* Image i of a and b ([N, 28, 28]) hold the same bytes. */
static bool same_image(const tg_tensor *a, const tg_tensor *b, int64_t i)
{
    return !memcmp(a->data + i * 784, b->data + i * 784, 784 * sizeof(float));
}

static void sample_ok(const char *ck, const char *n, const char *label, const char *prefix)
{
    const char *a[] = {
        "sample", "--checkpoint", ck,        "--n", n,   "--out", fmt("%s.png", prefix),
        "--idx",  prefix,         "--label", label, NULL};
    if (!label)
        a[9] = NULL;
    run_result r = gan(a);
    assert_ran(&r, cmdline(a));
    run_free(&r);
}

static void test_sample_labels(void **state)
{
    (void)state;
    const char *ck = fmt("%s/cgan/checkpoint.safetensors", root), *d = fmt("%s/labels", root);
    make_dir(d);
    sample_ok(ck, "25", NULL, fmt("%s/train", d)); /* the default: all */
    assert_labels(fmt("%s/train", d), 25, -1);
    tg_dataset *ds = tg_data_load_mnist(d, true, -1); /* the pair is a labelled MNIST set */
    if (!ds)
        fail_msg("%s", tg_last_error());
    assert_int_equal(ds->images->shape[0], 25);
    tg_dataset_free(ds);
    uint32_t w, h;
    png_size(fmt("%s/train.png", d), &w, &h); /* a column per digit */
    if (w != 10 * 29 - 1 || h != 3 * 29 - 1)
        fail_msg("the grid of 25 images, all labels, is %ux%u, expected 289x86", w, h);

    /* --label 3: image 3 is the same z and label as in `all`; image 0 is another label */
    sample_ok(ck, "1010", "all", fmt("%s/all", d));
    sample_ok(ck, "1010", "3", fmt("%s/three", d));
    assert_labels(fmt("%s/all", d), 1010, -1);
    assert_labels(fmt("%s/three", d), 1010, 3);
    tg_tensor *all = read_images(fmt("%s/all", d), 1010),
              *three = read_images(fmt("%s/three", d), 1010);
    if (!same_image(all, three, 3) || !same_image(all, three, 1003))
        fail_msg("images 3 and 1003 differ between --label all and --label 3 (same z, label 3)");
    if (same_image(all, three, 0) || same_image(all, three, 1000))
        fail_msg("images 0 and 1000 of --label all (digit 0) equal those of --label 3");
    tg_tensor_release(all), tg_tensor_release(three);

    /* eval: the label accuracy, in the log and the JSON line (an untrained classifier: only
     * its presence and range are checked); an unconditional model has none */
    const char *edata = fmt("%s/evaldata", root), *clf = fmt("%s/clf.safetensors", root);
    copy_dir(data_dir, edata);
    copy_file(fmt("%s/train-images-idx3-ubyte", data_dir), fmt("%s/t10k-images-idx3-ubyte", edata));
    copy_file(fmt("%s/train-labels-idx1-ubyte", data_dir), fmt("%s/t10k-labels-idx1-ubyte", edata));
    clf_model *m = clf_new(3);
    clf_info info = {.epoch = 0, .test_accuracy = 0.1};
    snprintf(info.dataset, sizeof info.dataset, "test");
    if (!m || clf_save(m, &info, clf) != TG_OK)
        fail_msg("%s", tg_last_error());
    clf_free(m);
    const char *json = fmt("%s/eval.jsonl", root);
    run_result r = GAN("eval", "--checkpoint", ck, "--classifier", clf, "--data", edata, "--n",
                       "100", "--threads", "1", "--json", json);
    assert_ran(&r, "eval, a cgan checkpoint");
    if (!strstr(r.out, "label accuracy"))
        fail_msg("eval of a cgan checkpoint prints no label accuracy:\n%s", r.out);
    run_free(&r);
    char *j = must_read(json, NULL);
    const char *k = strstr(j, "\"label_accuracy\": ");
    double acc = k ? atof(k + 18) : -1;
    if (!(acc >= 0 && acc <= 1))
        fail_msg("eval.jsonl has no label_accuracy in [0, 1]:\n%s", j);
    free(j);
    r = GAN("eval", "--checkpoint", dcgan_checkpoint(), "--classifier", clf, "--data", edata, "--n",
            "100", "--threads", "1", "--json", json);
    assert_ran(&r, "eval, a dcgan checkpoint");
    if (strstr(r.out, "label accuracy"))
        fail_msg("eval of an unconditional checkpoint prints a label accuracy:\n%s", r.out);
    run_free(&r);
}

/* ---- 4. --train-per-class --------------------------------------------------------------- */

/* Writes tg_dataset_per_class(the test's set, n, seed), only digit's images when digit >= 0,
 * as the training files of dir. */
static void write_subset(const char *dir, int64_t n, uint64_t seed, int digit)
{
    tg_dataset *all = tg_data_load_mnist(data_dir, true, -1);
    tg_dataset *sub = all ? tg_dataset_per_class(all, n, seed) : NULL;
    if (!sub)
        fail_msg("%s", tg_last_error());
    tg_dataset_free(all);
    int64_t kept = 0;
    for (int64_t i = 0; i < sub->labels->numel; i++)
        if (digit < 0 || sub->labels->data[i] == (float)digit) {
            memmove(sub->images->data + kept * 784, sub->images->data + i * 784,
                    784 * sizeof(float));
            sub->labels->data[kept++] = sub->labels->data[i];
        }
    tg_tensor *im = tg_tensor_new(TG_DIMS(kept, 1, 28, 28)), *lb = tg_tensor_new(TG_DIMS(kept));
    assert_non_null(im), assert_non_null(lb);
    memcpy(im->data, sub->images->data, (size_t)im->numel * sizeof(float));
    memcpy(lb->data, sub->labels->data, (size_t)kept * sizeof(float));
    make_dir(dir);
    if (tg_data_write_idx_images(fmt("%s/train-images-idx3-ubyte", dir), im) != TG_OK ||
        tg_data_write_idx_labels(fmt("%s/train-labels-idx1-ubyte", dir), lb) != TG_OK)
        fail_msg("%s", tg_last_error());
    tg_tensor_release(im), tg_tensor_release(lb);
    tg_dataset_free(sub);
}

/* A run with --train-per-class 5 --seed 7 (and extra) against one on the folder holding that
 * subset, with the same seed: the same rows and checkpoint but for train_per_class. */
static void per_class_case(const char *name, int digit, const char *batch, int iters)
{
    const char *sub = fmt("%s/%s_data", root, name), *a = fmt("%s/%s_a", root, name);
    const char *b = fmt("%s/%s_b", root, name);
    write_subset(sub, 5, 7, digit);
    const char *dg = fmt("%d", digit);
    const char *ea[] = {"--recipe",
                        "cgan",
                        "--seed",
                        "7",
                        "--batch",
                        batch,
                        "--train-per-class",
                        "5",
                        digit >= 0 ? "--digit" : NULL,
                        dg,
                        NULL};
    train_ok(a, iters, false, ea);
    const char *old_data = data_dir;
    data_dir = sub;
    const char *eb[] = {"--recipe", "cgan", "--seed", "7", "--batch", batch, NULL};
    train_ok(b, iters, false, eb);
    data_dir = old_data;
    assert_same_rows(a, b, iters);
    const char *ca = fmt("%s/checkpoint.safetensors", a), *cb = fmt("%s/checkpoint.safetensors", b);
    assert_meta(ca, "train_per_class", "5");
    /* the other run's checkpoint, but for its train_per_class, is this one */
    tg_state_dict *sd = ckpt_load(cb);
    assert_int_equal(tg_state_dict_set_meta(sd, "train_per_class", "5"), TG_OK);
    if (digit >= 0)
        assert_int_equal(tg_state_dict_set_meta(sd, "digit", dg), TG_OK);
    const char *cb5 = fmt("%s/as_per_class.safetensors", b);
    assert_int_equal(tg_data_save_safetensors(cb5, sd), TG_OK);
    tg_state_dict_free(sd);
    assert_same_checkpoint(ca, cb5);
}

static void test_train_per_class(void **state)
{
    (void)state;
    /* 5 per class: 50 images, two batches of 25 an epoch */
    per_class_case("pc", -1, "25", 5);
    per_class_case("pc3", 3, "5", 3); /* the subset's 5 images of 3, a batch of them */
    /* a conditional model of one digit draws that digit by default */
    const char *p3 = fmt("%s/pc3_a/s", root);
    sample_ok(fmt("%s/pc3_a/checkpoint.safetensors", root), "4", NULL, p3);
    assert_labels(p3, 4, 3);
    /* resume keeps N (and the checkpoint's N is the one a resume uses) */
    const char *a = fmt("%s/pc_a", root);
    train_ok(a, 7, true, NULL);
    assert_meta(fmt("%s/checkpoint.safetensors", a), "train_per_class", "5");
    run_result r = GAN("train", "--data", data_dir, "--iters", "9", "--threads", "1", "--out", a,
                       "--resume", "--train-per-class", "4");
    assert_refused(&r, "resume with --train-per-class 4",
                   "--train-per-class differs from the checkpoint");
}

/* ---- 5. refusals ------------------------------------------------------------------------ */

static void test_refusals(void **state)
{
    (void)state;
    run_result r = GAN("train", "--data", data_dir, "--iters", "2", "--threads", "1", "--out",
                       fmt("%s/r1", root), "--width-div", "8", "--train-per-class", "5");
    assert_refused(&r, "batch 128 on 50 images", "--batch 128: " /* then the folder */);
    r = GAN("train", "--data", data_dir, "--iters", "2", "--threads", "1", "--out",
            fmt("%s/r1", root), "--width-div", "8", "--train-per-class", "5", "--batch", "64");
    assert_refused(&r, "batch 64 on 50 images",
                   "has 50 training images in its --train-per-class 5 subset");
    assert_false(exists(fmt("%s/r1", root)));
    r = GAN("train", "--data", data_dir, "--iters", "2", "--threads", "1", "--out",
            fmt("%s/r2", root), "--width-div", "8", "--train-per-class", "1000", "--batch", "16");
    assert_refused(&r, "more per class than there are", "fewer than the 1000 asked for");
    r = GAN("train", "--train-per-class", "0");
    assert_refused(&r, "--train-per-class 0", "--train-per-class: '0' is not a whole number");

    /* --label: a conditional model's any digit; an unconditional one's none but its own */
    const char *dc = dcgan_checkpoint();
    r = GAN("sample", "--checkpoint", dc, "--label", "3", "--out", fmt("%s/x.png", root));
    assert_refused(&r, "--label of a model of every digit",
                   "only a conditional (--recipe cgan) model takes --label");
    r = GAN("sample", "--checkpoint", dc, "--label", "all", "--out", fmt("%s/x.png", root));
    assert_refused(&r, "--label all of a model of every digit", "--label all:");
    const char *d3 = fmt("%s/digit3", root);
    train_ok(d3, 2, false, (const char *const[]){"--digit", "3", NULL});
    const char *ck3 = fmt("%s/checkpoint.safetensors", d3);
    r = GAN("sample", "--checkpoint", ck3, "--label", "4", "--out", fmt("%s/x.png", root));
    assert_refused(&r, "--label 4 of a digit-3 model", "a model of digit 3 only");
    const char *p3 = fmt("%s/d3", root);
    sample_ok(ck3, "6", "3", p3);
    assert_labels(p3, 6, 3);
    r = GAN("sample", "--checkpoint", fmt("%s/cgan/checkpoint.safetensors", root), "--label", "10");
    assert_refused(&r, "--label 10", "--label: '10' is neither a digit 0..9 nor all");
    r = GAN("train", "--label", "3");
    assert_refused(&r, "train --label", "--label is not an option of 'train'");
    assert_false(exists(fmt("%s/x.png", root)));
}

/* ---- main ------------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    if (!run_make_root("tg_mnist_cgan"))
        return -1;
    data_dir = fmt("%s/data", root);
    bool real = make_dataset(data_dir, N_IMAGES);
    print_message("%s MNIST, %d images\n", real ? "real" : "synthetic", N_IMAGES);
    return 0;
}

int main(int argc, char **argv)
{
    if (!run_set_program(argc, argv, ""))
        return 2;
    const struct CMUnitTest tests[] = {
        TG_TEST(test_cgan_trains),     TG_TEST(test_cgan_resume), TG_TEST(test_sample_labels),
        TG_TEST(test_train_per_class), TG_TEST(test_refusals),
    };
    double t0 = now();
    int failed = cmocka_run_group_tests_name("mnist_gan cgan and --train-per-class", tests,
                                             group_setup, run_teardown);
    printf("mnist_gan cgan e2e: %.1f s in all, %d program runs\n", now() - t0, n_runs);
    return failed;
}
