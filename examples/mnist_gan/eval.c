/* mnist_gan eval: the figures of a trained G, or of any idx file of images. */
#include "app.h"
#include "checkpoint.h"

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

/* ---- eval ------------------------------------------------------------------------------------ */

/* eval --images: the first n images of an idx3 file read by tg_data_read_idx (0..255, as the
 * caller checked; [N,H,W] or [N,1,H,W], N >= 1) in the loader's [-1, 1], shaped like the real
 * set's images `like`, so images made by another program (PyTorch's, say) are measured exactly
 * as G's are. NULL with the error set when they are not such images: bad input. */
static tg_tensor *images_like(const tg_tensor *raw, const char *path, int64_t n,
                              const tg_tensor *like)
{
    int64_t shape[TG_MAX_DIMS];
    memcpy(shape, like->shape, sizeof shape);
    shape[0] = n;
    char got[64];
    tg_tensor *out = NULL;
    if (raw->ndim < 3 || raw->numel / raw->shape[0] != like->numel / like->shape[0] ||
        raw->shape[raw->ndim - 1] != like->shape[like->ndim - 1]) {
        tg_set_error(TG_ERR_SHAPE, "%s: images %s, expected [N, %lld, %lld] like the real set's",
                     path, tg_shape_str(raw->ndim, raw->shape, got, sizeof got),
                     (long long)like->shape[like->ndim - 2],
                     (long long)like->shape[like->ndim - 1]);
    } else if (raw->shape[0] < n) {
        tg_set_error(TG_ERR_SHAPE, "%s holds %lld images, fewer than --n %lld", path,
                     (long long)raw->shape[0], (long long)n);
    } else if ((out = tg_tensor_new(like->ndim, shape))) {
        for (int64_t i = 0; i < out->numel; i++) /* dataset.c's scaling */
            out->data[i] = raw->data[i] * (2.0f / 255.0f) - 1.0f;
    }
    return out;
}

/* The figures of the checkpoint's G (or of --images) against real test images, with real
 * training images against the same test images as the reference row; the table on stdout, one
 * JSON line appended to --json (default eval.jsonl beside the checkpoint or the images). */
int evaluate(const gan_options *o)
{
    char err[1024], json[4096];
    tg_state_dict *sd = NULL;
    int code = EXIT_BAD_INPUT;
    run_settings rs;
    long long iteration;
    gan_state s = {0};
    clf_model *clf = NULL;
    clf_info info;
    tg_dataset *test = NULL, *train_set = NULL;
    tg_tensor *real_test = NULL, *real_train = NULL, *gen = NULL, *raw_images = NULL;
    gan_stats ref = {0};
    gan_figures figs[3];
    const char *measured = o->images ? o->images : o->checkpoint;
    /* Everything is read and checked before any work (a bad input exits 2 at once): the
     * images or the checkpoint, the --json file, the classifier, the data and --n. */
    if (o->images) {
        rs = (run_settings){.digit = -1}, iteration = -1;
        if (!(raw_images = tg_data_read_idx(o->images))) {
            code = fail(input_failure(), "%s", tg_last_error());
            goto done;
        }
        if (raw_images->ndim < 1 || raw_images->shape[0] == 0) {
            fail(code, "%s holds no images", o->images);
            goto done;
        }
        /* a float idx file can hold anything: pixels are 0..255 (images_like scales them) */
        if (tg_data_check_range(raw_images, o->images, 0.0f, 255.0f, false) != TG_OK) {
            code = fail(input_failure(), "%s", tg_last_error());
            goto done;
        }
    } else {
        int64_t it;
        if ((code = load_trained(o->checkpoint, &sd, &rs, &s)) != 0)
            goto done;
        code = EXIT_BAD_INPUT;
        if (!meta_get_int(sd, o->checkpoint, "iteration", 0, GAN_ITERS_MAX, &it, err, sizeof err)) {
            fail(code, "%s", err);
            goto done;
        }
        iteration = it;
    }
    const char *slash = strrchr(measured, '/');
    if (o->json_path)
        snprintf(json, sizeof json, "%s", o->json_path);
    else
        snprintf(json, sizeof json, "%.*seval.jsonl", slash ? (int)(slash - measured + 1) : 0,
                 measured);
    if (!can_write("--json", json, err, sizeof err)) {
        fail(code, "%s", err);
        goto done;
    }
    if (!(clf = clf_load(o->classifier, &info))) {
        code = fail(input_failure(), "%s", tg_last_error());
        goto done;
    }
    const char *dir = data_dir_of(o);
    if (!(test = tg_data_load_mnist(dir, false, rs.digit)) ||
        !(train_set = tg_data_load_mnist(dir, true, rs.digit))) {
        code = fail(input_failure(), "%s%s", tg_last_error(),
                    !o->data_dir && !strcmp(dir, MNIST_DIR)
                        ? " (run scripts/fetch-mnist.sh, or pass --data DIR)"
                        : "");
        goto done;
    }
    const int64_t n_test = test->images->shape[0], n_train = train_set->images->shape[0];
    if (o->n > n_test || o->n > n_train) {
        fail(code, "--n %lld: the %s set of %s has %lld images%s", (long long)o->n,
             o->n > n_test ? "test" : "training", dir,
             (long long)(o->n > n_test ? n_test : n_train),
             rs.digit >= 0 ? " of the checkpoint's digit" : "");
        goto done;
    }
    if (raw_images && !(gen = images_like(raw_images, o->images, o->n, test->images))) {
        code = fail(input_failure(), "%s", tg_last_error());
        goto done;
    }
    code = 1;
    /* Real subsets by fixed permutations (the same images for every checkpoint and seed). */
    if (!(real_test = gan_subset(test->images, o->n, GAN_TEST_SUBSET_SEED)) ||
        !(real_train = gan_subset(train_set->images, o->n, GAN_TRAIN_SUBSET_SEED))) {
        fail(code, "%s", tg_last_error());
        goto done;
    }
    tg_dataset_free(train_set), train_set = NULL;
    if (gan_evaluate_images(clf, real_test, NULL, &figs[2], &ref) != TG_OK ||
        (!gen && !(gen = gan_generate_n(&s, o->n, o->seed))) ||
        gan_evaluate_images(clf, gen, &ref, &figs[0], NULL) != TG_OK ||
        gan_evaluate_images(clf, real_train, &ref, &figs[1], NULL) != TG_OK) {
        fail(code, "%s", tg_last_error());
        goto done;
    }
    /* A conditional G drew image i for digit gan_label_of(s.gen_label, i) (balanced: i % 10;
     * one digit for a model trained on one): the label accuracy is the share the classifier
     * gives the digit it was drawn for. */
    double label_acc = NAN;
    if (!o->images && GAN_CONDITIONAL(rs.cfg.recipe)) {
        tg_tensor *drawn = tg_tensor_new(TG_DIMS(o->n));
        for (int64_t i = 0; drawn && i < o->n; i++)
            drawn->data[i] = (float)gan_label_of(s.gen_label, i);
        tg_status st = drawn ? clf_accuracy(clf, gen, drawn, &label_acc, NULL) : tg_last_status();
        tg_tensor_release(drawn);
        if (st != TG_OK) {
            fail(code, "%s", tg_last_error());
            goto done;
        }
    }
    if (o->images)
        printf("mnist_gan eval: the first %lld images of %s", (long long)o->n, o->images);
    else
        printf("mnist_gan eval: %s (iteration %lld, recipe %s, generator %s%s), seed %llu",
               o->checkpoint, iteration, gan_recipe_names[rs.cfg.recipe],
               gan_generator_label(rs.cfg.recipe, rs.cfg.generator),
               rs.digit >= 0 ? ", one digit" : "", (unsigned long long)o->seed);
    printf(", classifier %s (test accuracy %.2f%%), %lld images per set, data %s\n\n",
           o->classifier, 100.0 * info.test_accuracy, (long long)o->n, dir);
    static const char *const names[3] = {"generated", "real train (reference)", "real test"};
    gan_figures_table(stdout, 3, names, figs);
    /* The verdict of metrics.h's collapse definitions on the generated set; the digit share
     * for a G of one digit (of the images eval made, not of --images). */
    const double share = o->images ? NAN : gan_digit_share(&figs[0], rs.digit);
    const double white_floor =
        o->images ? 0.0 : gan_white_floor(gan_generator_label(rs.cfg.recipe, rs.cfg.generator));
    const char *collapse =
        gan_collapse_name(gan_collapse(figs[0].white, white_floor, figs[0].diversity, share));
    printf("\ncollapse of the generated set: %s (white below %g: black; diversity below %g: "
           "single mode",
           collapse, gan_black_white(white_floor), GAN_SINGLE_MODE_DIVERSITY);
    if (!isnan(share))
        printf("; digit share below %g: off digit", GAN_OFF_DIGIT_SHARE);
    puts(")");
    if (!isnan(share))
        printf("digit share: %.2f%% of the generated images are classified as %d, the digit G "
               "was trained on\n",
               100.0 * share, rs.digit);

    if (!isnan(label_acc))
        printf("label accuracy (conditional G, labels %s): %.2f%% of the generated images are "
               "classified as the digit they were drawn for\n",
               s.gen_label == GAN_LABELS_BALANCED ? "i % 10" : "of its one digit",
               100.0 * label_acc);
    FILE *jf = tg_data_fopen_regular(json, "a"); /* a FIFO there is refused, not waited on */
    if (!jf) {
        fail(code, "%s", tg_last_error());
        goto done;
    }
    fprintf(jf, "{\"%s\": ", o->images ? "images" : "checkpoint");
    gan_json_string(jf, measured);
    if (!o->images)
        fprintf(jf, ", \"iteration\": %lld, \"recipe\": \"%s\", \"generator\": \"%s\"", iteration,
                gan_recipe_names[rs.cfg.recipe],
                gan_generator_label(rs.cfg.recipe, rs.cfg.generator));
    fputs(", \"classifier\": ", jf);
    gan_json_string(jf, o->classifier);
    fprintf(jf, ", \"classifier_test_accuracy\": %.6f, \"data\": ", info.test_accuracy);
    gan_json_string(jf, dir);
    fprintf(jf, ", \"digit\": %d, \"n\": %lld, \"seed\": %llu, \"collapse\": \"%s\"", rs.digit,
            (long long)o->n, (unsigned long long)o->seed, collapse);
    if (!isnan(label_acc))
        fprintf(jf, ", \"label_accuracy\": %.6f", label_acc);
    if (!isnan(share))
        fprintf(jf, ", \"digit_share\": %.6f", share);
    static const char *const keys[3] = {"generated", "real_train", "real_test"};
    for (int i = 0; i < 3; i++) {
        fprintf(jf, ", \"%s\": ", keys[i]);
        gan_figures_json(jf, &figs[i]);
    }
    fputs("}\n", jf);
    if (ferror(jf) | (fclose(jf) != 0)) {
        fail(code, "%s: writing failed", json);
        goto done;
    }
    printf("\nFID and score are on mnist_classifier's features, not Inception's: compare them "
           "between checkpoints and with the reference row. Appended to %s\n",
           json);
    code = 0;
done:
    gan_stats_free(&ref);
    tg_tensor_release(gen);
    tg_tensor_release(raw_images);
    tg_tensor_release(real_train);
    tg_tensor_release(real_test);
    tg_dataset_free(train_set);
    tg_dataset_free(test);
    clf_free(clf);
    gan_state_free(&s);
    tg_state_dict_free(sd);
    return code;
}
