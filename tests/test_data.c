/* data/: idx reader and writer (raw and gzip), MNIST dataset and loader, PNG writer, atomic
 * files. Every file is made by the test in a fresh temporary folder. */
#include "common.h"

#include "data.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

static char dir[256];

static int make_dir(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/tg_test_data.XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int remove_dir(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static const char *path_of(const char *name)
{
    static char p[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", dir, name);
    return p[k];
}

static void write_bytes(const char *path, const unsigned char *b, size_t n, bool gz)
{
    if (gz) {
        gzFile f = gzopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(gzwrite(f, b, (unsigned)n), (int)n);
        assert_int_equal(gzclose(f), Z_OK);
    } else {
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(b, 1, n, f), n);
        fclose(f);
    }
}

/* An idx file of n images h x w (pixel = (i*7 + k) % 256) and n labels (i % 10). */
static void write_mnist(const char *d, const char *split, int n, int h, int w, bool gz)
{
    size_t ni = 16 + (size_t)(n * h * w), nl = 8 + (size_t)n;
    unsigned char *img = calloc(ni, 1), *lab = calloc(nl, 1);
    img[2] = 0x08, img[3] = 3;
    img[7] = (unsigned char)n, img[6] = (unsigned char)(n >> 8);
    img[11] = (unsigned char)h, img[15] = (unsigned char)w;
    for (int i = 0; i < n * h * w; i++)
        img[16 + i] = (unsigned char)((i / (h * w) * 7 + i % (h * w)) % 256);
    lab[2] = 0x08, lab[3] = 1;
    lab[7] = (unsigned char)n, lab[6] = (unsigned char)(n >> 8);
    for (int i = 0; i < n; i++)
        lab[8 + i] = (unsigned char)(i % 10);
    char p[600];
    snprintf(p, sizeof p, "%s/%s-images-idx3-ubyte%s", d, split, gz ? ".gz" : "");
    write_bytes(p, img, ni, gz);
    snprintf(p, sizeof p, "%s/%s-labels-idx1-ubyte%s", d, split, gz ? ".gz" : "");
    write_bytes(p, lab, nl, gz);
    free(img);
    free(lab);
}

static void test_idx_raw_and_gz(void **state)
{
    (void)state;
    const unsigned char f[] = {0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 250, 251, 255};
    for (int gz = 0; gz < 2; gz++) {
        const char *p = path_of(gz ? "a.idx.gz" : "a.idx");
        write_bytes(p, f, sizeof f, gz);
        tg_tensor *t = tg_data_read_idx(p);
        assert_non_null(t);
        assert_int_equal(t->ndim, 2);
        assert_int_equal(t->shape[0], 2);
        assert_int_equal(t->shape[1], 3);
        assert_true(t->data[0] == 1.0f && t->data[5] == 255.0f);
        tg_tensor_release(t);
    }
}

/* Each malformed file gets its own message, and nothing is returned. */
static void test_idx_bad_files(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        unsigned char bytes[24];
        size_t n;
        const char *msg;
    } cases[] = {
        {"empty", {0}, 0, "file ends at byte 0 inside the header"},
        {"magic", {1, 0, 8, 1, 0, 0, 0, 1, 7}, 9, "bad magic 01 00 08 01"},
        {"type", {0, 0, 0x0B, 1, 0, 0, 0, 1, 7}, 9, "bad magic 00 00 0b 01"},
        {"ndim", {0, 0, 8, 0}, 4, "0 dimensions"},
        {"short_dims", {0, 0, 8, 2, 0, 0, 0, 2}, 8, "inside the dimensions"},
        {"short_data", {0, 0, 8, 1, 0, 0, 0, 5, 1, 2}, 10, "file ends at byte 10 inside the data"},
        {"extra", {0, 0, 8, 1, 0, 0, 0, 1, 1, 2}, 10, "extra bytes after the 1 data bytes"},
        {"huge",
         {0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 9},
         16,
         "dimensions hold more than"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *p = path_of(cases[i].name);
        write_bytes(p, cases[i].bytes, cases[i].n, false);
        tg_clear_error();
        assert_null(tg_data_read_idx(p));
        assert_int_equal(tg_last_status(), TG_ERR_FORMAT);
        assert_error_contains(cases[i].msg);
        assert_error_contains(p);
    }
    assert_null(tg_data_read_idx(path_of("missing")));
    assert_int_equal(tg_last_status(), TG_ERR_IO);
    assert_error_contains("No such file");
}

/* True when AddressSanitizer is on: it reserves terabytes of address space for its shadow, so
 * an address-space limit cannot be used beside it. */
#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif

/* Found by tests/fuzz/fuzz_idx: a header announcing 2^31 elements at the start of an 18-byte
 * file made the reader allocate 2 GiB before reading any data (libFuzzer's malloc limit, and a
 * 10-second timeout under ASan). The buffer now grows with the data actually read, so with the
 * address space limited to 256 MiB more than the process uses, the file gets its format error
 * and not an out-of-memory one; raw and inside a .gz, whose contents' size is unknown. */
static void test_idx_huge_header_short_file(void **state)
{
    (void)state;
    const unsigned char f[] = {0, 0, 8, 3, 0, 0, 0x80, 0, 0, 0, 0x80, 0, 0, 0, 0, 2, 7, 9};
    for (int gz = 0; gz < 2; gz++) {
        const char *p = path_of(gz ? "huge.gz" : "huge");
        write_bytes(p, f, sizeof f, gz);
        struct rlimit old;
        assert_int_equal(getrlimit(RLIMIT_AS, &old), 0);
#ifndef TEST_ASAN
        long pages = 0;
        FILE *statm = fopen("/proc/self/statm", "r");
        if (statm) {
            if (fscanf(statm, "%ld", &pages) != 1)
                pages = 0;
            fclose(statm);
        }
        struct rlimit lim = old;
        lim.rlim_cur = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + ((rlim_t)256 << 20);
        if (pages > 0 && (old.rlim_cur == RLIM_INFINITY || lim.rlim_cur < old.rlim_cur))
            assert_int_equal(setrlimit(RLIMIT_AS, &lim), 0);
#endif
        tg_clear_error();
        tg_tensor *t = tg_data_read_idx(p);
        tg_status st = tg_last_status();
        assert_int_equal(setrlimit(RLIMIT_AS, &old), 0);
        assert_null(t);
        assert_int_equal(st, TG_ERR_FORMAT);
        assert_error_contains("file ends at byte 18 inside the data (2147483664 bytes expected)");
    }
}

/* Reads a whole file. */
static unsigned char *slurp(const char *p, long *n)
{
    FILE *f = fopen(p, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)*n);
    assert_int_equal(fread(b, 1, (size_t)*n, f), (size_t)*n);
    fclose(f);
    return b;
}

/* A truncated .gz: gzread may deliver what it has; the reader still reports the damage. */
static void test_idx_truncated_gz(void **state)
{
    (void)state;
    unsigned char f[16 + 4000];
    memset(f, 0, sizeof f);
    f[2] = 8, f[3] = 1, f[6] = 0x0f, f[7] = 0xa0; /* 4000 elements */
    for (int i = 0; i < 4000; i++)
        f[8 + i] = (unsigned char)(i * 31);
    const char *p = path_of("t.gz");
    write_bytes(p, f, 8 + 4000, true);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    /* A wrong CRC in the trailer: every data byte arrives, the check fails at the end. */
    long n;
    unsigned char *b = slurp(p, &n);
    b[n - 8] ^= 0x5a;
    write_bytes(p, b, (size_t)n, false);
    free(b);
    tg_clear_error();
    assert_null(tg_data_read_idx(p));
    assert_int_equal(tg_last_status(), TG_ERR_FORMAT);
    for (off_t cut = 4; cut <= 8; cut += 4) { /* drop the CRC/length trailer, or part of it */
        assert_int_equal(truncate(p, st.st_size - cut), 0);
        tg_clear_error();
        assert_null(tg_data_read_idx(p));
        assert_int_equal(tg_last_status(), TG_ERR_FORMAT);
    }
}

static void test_idx_write_read_back(void **state)
{
    (void)state;
    tg_tensor *img = tg_tensor_new(TG_DIMS(3, 1, 2, 2));
    for (int i = 0; i < 12; i++)
        img->data[i] = -1.0f + 2.0f * (float)i / 11.0f;
    const char *p = path_of("w-idx3");
    assert_int_equal(tg_data_write_idx_images(p, img), TG_OK);
    tg_tensor *back = tg_data_read_idx(p);
    assert_non_null(back);
    assert_int_equal(back->ndim, 3);
    for (int i = 0; i < 12; i++)
        assert_close(back->data[i], roundf((img->data[i] + 1) * 127.5f), 0);
    tg_tensor_release(back);
    tg_tensor_release(img);
}

static void test_mnist_dataset_and_filter(void **state)
{
    (void)state;
    write_mnist(dir, "train", 25, 4, 3, true);
    write_mnist(dir, "t10k", 12, 4, 3, false);
    tg_dataset *tr = tg_data_load_mnist(dir, true, -1);
    assert_non_null(tr);
    assert_int_equal(tr->images->shape[0], 25);
    assert_int_equal(tr->images->shape[1], 1);
    assert_int_equal(tr->images->shape[2], 4);
    assert_close(tr->images->data[0], -1.0f, 1e-6);                         /* pixel 0 */
    assert_close(tr->images->data[1 * 12 + 5], (7 + 5) / 127.5f - 1, 1e-6); /* image 1 pixel 5 */
    tg_dataset *fives = tg_data_load_mnist(dir, true, 5);
    assert_non_null(fives);
    assert_int_equal(fives->images->shape[0], 2); /* images 5 and 15 */
    assert_true(fives->labels->data[1] == 5.0f);
    assert_close(fives->images->data[12], (15 * 7) / 127.5f - 1, 1e-6);
    tg_dataset *te = tg_data_load_mnist(dir, false, -1);
    assert_int_equal(te->images->shape[0], 12);
    tg_dataset_free(tr);
    tg_dataset_free(fives);
    tg_dataset_free(te);
    assert_null(tg_data_load_mnist(path_of("nowhere"), true, -1));
    assert_int_equal(tg_last_status(), TG_ERR_IO);
    assert_error_contains("train-images-idx3-ubyte: no such file");
}

static void test_mnist_label_count_mismatch(void **state)
{
    (void)state;
    const char *d = path_of("mismatch");
    mkdir(d, 0755);
    write_mnist(d, "train", 5, 2, 2, false);
    const unsigned char lab[] = {0, 0, 8, 1, 0, 0, 0, 4, 1, 2, 3, 4};
    char p[600];
    snprintf(p, sizeof p, "%s/train-labels-idx1-ubyte", d);
    write_bytes(p, lab, sizeof lab, false);
    assert_null(tg_data_load_mnist(d, true, -1));
    assert_int_equal(tg_last_status(), TG_ERR_FORMAT);
    assert_error_contains("labels [4] do not match the 5 images");
}

/* n 1x1 images whose pixel and label are both the image's index, so batches show the order. */
static tg_dataset *index_dataset(int n)
{
    tg_dataset *ds = calloc(1, sizeof *ds);
    assert_non_null(ds);
    ds->images = tg_tensor_new(TG_DIMS(n, 1, 1, 1));
    ds->labels = tg_tensor_new(TG_DIMS(n));
    assert_true(ds->images && ds->labels);
    for (int i = 0; i < n; i++)
        ds->images->data[i] = ds->labels->data[i] = (float)i;
    return ds;
}

/* tg_dataset_per_class: n of every class, nested across n for one seed, in the set's order,
 * different for another seed; too few images in a class or bad labels are refused. */
static void test_dataset_per_class(void **state)
{
    (void)state;
    tg_dataset *ds = index_dataset(60); /* image i has value i; its class is i % 3 */
    for (int i = 0; i < 60; i++)
        ds->labels->data[i] = (float)(i % 3);
    tg_dataset *a = tg_dataset_per_class(ds, 4, 9), *b = tg_dataset_per_class(ds, 7, 9),
               *c = tg_dataset_per_class(ds, 4, 10);
    assert_true(a && b && c);
    assert_int_equal(a->images->shape[0], 12);
    assert_int_equal(b->labels->numel, 21);
    int count[3] = {0};
    bool same = true;
    for (int i = 0; i < 12; i++) {
        float v = a->images->data[i];
        assert_true(i == 0 || v > a->images->data[i - 1]);      /* the set's order */
        assert_true(a->labels->data[i] == (float)((int)v % 3)); /* labels follow images */
        count[(int)a->labels->data[i]]++;
        bool in_b = false; /* nested: a's images are among b's */
        for (int j = 0; j < 21; j++)
            in_b |= b->images->data[j] == v;
        assert_true(in_b);
        same &= c->images->data[i] == v;
    }
    assert_int_equal(count[0], 4), assert_int_equal(count[1], 4), assert_int_equal(count[2], 4);
    assert_false(same); /* another seed, another subset */
    tg_dataset_free(a), tg_dataset_free(b), tg_dataset_free(c);
    assert_null(tg_dataset_per_class(ds, 21, 9));
    assert_non_null(strstr(tg_last_error(), "class 0 has 20 images, fewer than the 21"));
    assert_null(tg_dataset_per_class(ds, 0, 9));
    ds->labels->data[5] = 2.5f;
    assert_null(tg_dataset_per_class(ds, 1, 9));
    assert_non_null(strstr(tg_last_error(), "label 5 is 2.5"));
    assert_null(tg_dataset_per_class(NULL, 1, 9));
    /* images and labels that do not pair up are refused, not read past their end */
    ds->labels->data[5] = 2.0f;
    tg_tensor *all_labels = ds->labels;
    ds->labels = tg_tensor_new(TG_DIMS(61));
    assert_null(tg_dataset_per_class(ds, 1, 9));
    assert_non_null(strstr(tg_last_error(), "images [60, 1, 1, 1] and labels [61]"));
    tg_tensor_release(ds->labels);
    ds->labels = TG_NONE;
    assert_null(tg_dataset_per_class(ds, 1, 9));
    ds->labels = all_labels;
    tg_dataset_free(ds);
}

static void test_loader_shuffles_drops_and_resumes(void **state)
{
    (void)state;
    tg_dataset *ds = index_dataset(10);
    tg_loader *l = tg_loader_new(ds, 3, 7);
    assert_int_equal(tg_loader_batches_per_epoch(l), 3); /* 10 / 3: the last image dropped */
    float seen[2][9];
    tg_loader_state mid;
    for (int e = 0; e < 2; e++) {
        int count[10] = {0};
        for (int b = 0; b < 3; b++) {
            if (e == 1 && b == 1)
                mid = tg_loader_get_state(l);
            tg_tensor *x, *y;
            assert_int_equal(tg_loader_next(l, &x, &y), TG_OK);
            for (int i = 0; i < 3; i++) {
                assert_true(x->data[i] == y->data[i]); /* images and labels stay paired */
                seen[e][b * 3 + i] = x->data[i];
                count[(int)x->data[i]]++;
            }
            tg_tensor_release(x);
            tg_tensor_release(y);
        }
        for (int i = 0; i < 10; i++)
            assert_true(count[i] <= 1); /* no repeats within an epoch */
    }
    assert_true(memcmp(seen[0], seen[1], sizeof seen[0]) != 0); /* a fresh shuffle per epoch */
    /* Restoring a saved position replays the same batches. */
    tg_loader *l2 = tg_loader_new(ds, 3, 999);
    assert_int_equal(tg_loader_set_state(l2, &mid), TG_OK);
    for (int b = 1; b < 3; b++) {
        tg_tensor *x;
        assert_int_equal(tg_loader_next(l2, &x, NULL), TG_OK);
        for (int i = 0; i < 3; i++)
            assert_true(x->data[i] == seen[1][b * 3 + i]);
        tg_tensor_release(x);
    }
    tg_loader_free(l);
    tg_loader_free(l2);
    assert_null(tg_loader_new(ds, 11, 1));
    assert_error_contains("batch 11 for a dataset of 10 images");
    tg_dataset_free(ds);
}

/* ---- shuffling in blocks (tg_loader_set_shuffle_block) ----------------------------------- */

/* 24 images in batches of 4 (6 per epoch, none dropped) and blocks of 9: two full blocks and a
 * shorter last one of 6, with batches straddling the block boundaries at 9 and 18. */
#define BLK_N 24
#define BLK_BATCH 4
#define BLK 9
#define BLK_BATCHES (BLK_N / BLK_BATCH)

/* The indices of the next nb batches into order (nb * BLK_BATCH values). */
static void next_indices(tg_loader *l, int nb, int *order)
{
    for (int b = 0; b < nb; b++) {
        tg_tensor *x, *y;
        assert_int_equal(tg_loader_next(l, &x, &y), TG_OK);
        for (int i = 0; i < BLK_BATCH; i++) {
            assert_true(x->data[i] == y->data[i]); /* images and labels stay paired */
            order[b * BLK_BATCH + i] = (int)y->data[i];
        }
        tg_tensor_release(x);
        tg_tensor_release(y);
    }
}

/* An epoch's order holds every index exactly once, and positions [kB, (k+1)B) exactly the
 * indices of block k. */
static void assert_block_permutation(const char *what, const int *order)
{
    int count[BLK_N] = {0};
    for (int j = 0; j < BLK_N; j++) {
        if (order[j] < 0 || order[j] >= BLK_N)
            fail_msg("%s: position %d holds index %d", what, j, order[j]);
        if (order[j] / BLK != j / BLK)
            fail_msg("%s: position %d (block %d) holds index %d of block %d", what, j, j / BLK,
                     order[j], order[j] / BLK);
        count[order[j]]++;
    }
    for (int i = 0; i < BLK_N; i++)
        if (count[i] != 1)
            fail_msg("%s: index %d seen %d times", what, i, count[i]);
}

static void test_loader_shuffle_block(void **state)
{
    (void)state;
    tg_dataset *ds = index_dataset(BLK_N);
    tg_loader *l = tg_loader_new(ds, BLK_BATCH, 11);
    assert_int_equal(tg_loader_shuffle_block(l), 0);
    assert_int_equal(tg_loader_set_shuffle_block(l, BLK), TG_OK);
    assert_int_equal(tg_loader_shuffle_block(l), BLK);
    int epoch[2][BLK_N];
    for (int e = 0; e < 2; e++) {
        next_indices(l, BLK_BATCHES, epoch[e]);
        assert_block_permutation(e ? "epoch 2" : "epoch 1", epoch[e]);
        /* Every block shuffled, the shorter last one too (a correct shuffle leaves a block of 6
         * in file order once in 720 seeds), and the two full blocks not alike, as they would be
         * if each block's draw restarted the epoch's stream. */
        for (int start = 0; start < BLK_N; start += BLK) {
            int moved = 0;
            for (int j = start; j < BLK_N && j < start + BLK; j++)
                moved += epoch[e][j] != j;
            if (!moved)
                fail_msg("epoch %d: the block at %d is in file order", e + 1, start);
        }
        int alike = 0;
        for (int i = 0; i < BLK; i++)
            alike += epoch[e][i] == epoch[e][BLK + i] - BLK;
        assert_true(alike < BLK);
    }
    /* Each epoch draws a fresh order. */
    assert_true(memcmp(epoch[0], epoch[1], sizeof epoch[0]) != 0);

    /* Blocks of one image leave nothing to shuffle: file order, every epoch. */
    assert_int_equal(tg_loader_set_shuffle_block(l, 1), TG_OK);
    for (int e = 0; e < 2; e++) {
        int order[BLK_N];
        next_indices(l, BLK_BATCHES, order);
        for (int j = 0; j < BLK_N; j++)
            assert_int_equal(order[j], j);
    }
    tg_loader_free(l);
    tg_dataset_free(ds);
}

/* Block 0 is the whole-set shuffle the loader always did: each epoch's order is
 * tg_rng_permutation of the whole set drawn from that epoch's seed, the first epoch's seed being
 * the loader's. Setting a block and then 0 again gives it back, for this epoch and the next. */
static void test_loader_shuffle_block_zero_is_whole_set(void **state)
{
    (void)state;
    tg_dataset *ds = index_dataset(BLK_N);
    tg_loader *plain = tg_loader_new(ds, BLK_BATCH, 5), *l = tg_loader_new(ds, BLK_BATCH, 5);
    assert_int_equal(tg_loader_set_shuffle_block(l, BLK), TG_OK);
    assert_int_equal(tg_loader_set_shuffle_block(l, 0), TG_OK);
    assert_int_equal(tg_loader_shuffle_block(l), 0);
    tg_rng r;
    tg_rng_seed(&r, 5);
    int64_t perm[BLK_N];
    tg_rng_permutation(&r, BLK_N, perm);
    for (int e = 0; e < 2; e++) {
        int a[BLK_N], b[BLK_N];
        next_indices(plain, BLK_BATCHES, a);
        next_indices(l, BLK_BATCHES, b);
        assert_memory_equal(a, b, sizeof a);
        for (int j = 0; e == 0 && j < BLK_N; j++)
            assert_int_equal(a[j], perm[j]);
        /* A whole-set shuffle crosses the block boundaries (not a block permutation). */
        int crossing = 0;
        for (int j = 0; j < BLK_N; j++)
            crossing += a[j] / BLK != j / BLK;
        assert_true(crossing > 0);
    }
    tg_loader_free(plain);
    tg_loader_free(l);
    tg_dataset_free(ds);
}

/* A position saved mid-epoch (epoch 2, batch 3) and restored in a loader of another seed
 * replays the same batches, into the next epoch, whether the block is set before or after the
 * state; without the block the same position gives other batches. */
static void test_loader_shuffle_block_resume(void **state)
{
    (void)state;
    tg_dataset *ds = index_dataset(BLK_N);
    tg_loader *l = tg_loader_new(ds, BLK_BATCH, 21);
    assert_int_equal(tg_loader_set_shuffle_block(l, BLK), TG_OK);
    int skip[(BLK_BATCHES + 3) * BLK_BATCH];
    next_indices(l, BLK_BATCHES + 3, skip);
    tg_loader_state mid = tg_loader_get_state(l);
    assert_int_equal(mid.epoch, 1);
    assert_int_equal(mid.batch, 3);
    enum { AHEAD = BLK_BATCHES + 2 }; /* the rest of epoch 2 and part of epoch 3 */
    int want[AHEAD * BLK_BATCH], got[AHEAD * BLK_BATCH];
    next_indices(l, AHEAD, want);

    for (int block_first = 0; block_first < 2; block_first++) {
        tg_loader *r = tg_loader_new(ds, BLK_BATCH, 999);
        if (block_first)
            assert_int_equal(tg_loader_set_shuffle_block(r, BLK), TG_OK);
        assert_int_equal(tg_loader_set_state(r, &mid), TG_OK);
        if (!block_first)
            assert_int_equal(tg_loader_set_shuffle_block(r, BLK), TG_OK);
        next_indices(r, AHEAD, got);
        if (memcmp(got, want, sizeof got) != 0)
            fail_msg("resumed with the block set %s the state: other batches",
                     block_first ? "before" : "after");
        tg_loader_free(r);
    }
    tg_loader *whole = tg_loader_new(ds, BLK_BATCH, 999);
    assert_int_equal(tg_loader_set_state(whole, &mid), TG_OK);
    next_indices(whole, AHEAD, got);
    assert_true(memcmp(got, want, sizeof got) != 0);
    tg_loader_free(whole);
    tg_loader_free(l);
    tg_dataset_free(ds);
}

/* A negative block is refused and changes nothing: the block in force and the order stay. */
static void test_loader_shuffle_block_errors(void **state)
{
    (void)state;
    tg_dataset *ds = index_dataset(BLK_N);
    tg_loader *l = tg_loader_new(ds, BLK_BATCH, 3), *twin = tg_loader_new(ds, BLK_BATCH, 3);
    assert_int_equal(tg_loader_set_shuffle_block(l, BLK), TG_OK);
    assert_int_equal(tg_loader_set_shuffle_block(twin, BLK), TG_OK);
    assert_int_equal(tg_loader_set_shuffle_block(l, -1), TG_ERR_ARG);
    assert_error_contains("tg_loader_set_shuffle_block: block -1: need 0 (shuffle the whole set) "
                          "or a size >= 1");
    assert_int_equal(tg_loader_shuffle_block(l), BLK);
    int a[2 * BLK_N], b[2 * BLK_N];
    next_indices(l, 2 * BLK_BATCHES, a);
    next_indices(twin, 2 * BLK_BATCHES, b);
    assert_memory_equal(a, b, sizeof a);
    tg_clear_error();
    assert_int_equal(tg_loader_set_shuffle_block(NULL, BLK), TG_ERR_ARG);
    assert_error_contains("tg_loader_set_shuffle_block: the loader is NULL");
    tg_loader_free(l);
    tg_loader_free(twin);
    tg_dataset_free(ds);
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Decodes the PNG we wrote (chunks, CRCs, filter bytes) and checks every pixel of the grid. */
static void test_png_grid(void **state)
{
    (void)state;
    tg_tensor *img = tg_tensor_new(TG_DIMS(3, 1, 2, 2)); /* 3 images in 2 columns */
    for (int i = 0; i < 12; i++)
        img->data[i] = i % 4 == 0 ? -1.0f : i % 4 == 3 ? 1.0f : 0.0f;
    const char *p = path_of("grid.png");
    assert_int_equal(tg_data_write_png_grid(p, img, 2, TG_GRID_FIXED), TG_OK);
    long n;
    unsigned char *b = slurp(p, &n);
    assert_memory_equal(b, "\x89PNG\r\n\x1a\n", 8);
    long off = 8;
    unsigned char raw[64];
    uLongf raw_n = sizeof raw;
    int w = 0, h = 0, chunks = 0;
    while (off < n) {
        uint32_t len = be32(b + off);
        const unsigned char *type = b + off + 4, *data = b + off + 8;
        uLong crc = crc32(crc32(0, type, 4), data, len);
        assert_int_equal(be32(data + len), (uint32_t)crc);
        if (!memcmp(type, "IHDR", 4)) {
            w = (int)be32(data), h = (int)be32(data + 4);
            assert_int_equal(data[8], 8);
            assert_int_equal(data[9], 0);
        } else if (!memcmp(type, "IDAT", 4)) {
            assert_int_equal(uncompress(raw, &raw_n, data, len), Z_OK);
        }
        chunks++;
        off += 12 + len;
    }
    assert_int_equal(chunks, 3);
    assert_int_equal(w, 5); /* 2 cells of 2 + 1 gap */
    assert_int_equal(h, 5);
    assert_int_equal((int)raw_n, h * (w + 1));
    const unsigned char expect[5][5] = {
        {0, 128, 128, 0, 128},     /* row 0 of images 0 and 1, the gap between them */
        {128, 255, 128, 128, 255}, /* row 1 */
        {128, 128, 128, 128, 128}, /* the gap row */
        {0, 128, 128, 128, 128},   /* image 2, then the empty cell (gap colour) */
        {128, 255, 128, 128, 128},
    };
    for (int y = 0; y < 5; y++) {
        assert_int_equal(raw[y * 6], 0); /* filter byte */
        for (int x = 0; x < 5; x++)
            if (raw[y * 6 + 1 + x] != expect[y][x])
                fail_msg("pixel (%d, %d) = %d, expected %d", x, y, raw[y * 6 + 1 + x],
                         expect[y][x]);
    }
    free(b);
    tg_tensor_release(img);
}

/* A failed write leaves the previous file intact and no temporary file behind. */
static void test_atomic_failure_keeps_old_file(void **state)
{
    (void)state;
    const char *p = path_of("keep.png");
    tg_tensor *img = tg_tensor_zeros(TG_DIMS(1, 1, 2, 2));
    assert_int_equal(tg_data_write_png_grid(p, img, 16, TG_GRID_FIXED), TG_OK);
    long n0, n1;
    unsigned char *before = slurp(p, &n0);
    tg_atomic_file *af = tg_atomic_open(p);
    assert_non_null(af);
    assert_int_equal(tg_atomic_write(af, "partial", 7), TG_OK);
    tg_atomic_abort(af); /* as if the program failed half-way */
    unsigned char *after = slurp(p, &n1);
    assert_int_equal(n0, n1);
    assert_memory_equal(before, after, (size_t)n0);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -q tmp", dir);
    assert_int_not_equal(system(cmd), 0);
    /* A folder that does not exist: an error naming the path. */
    assert_int_equal(tg_data_write_png_grid(path_of("no/such/dir/x.png"), img, 4, TG_GRID_FIXED),
                     TG_ERR_IO);
    assert_error_contains("no/such/dir/x.png");
    /* A scale that is neither enum value: refused, nothing written. */
    assert_int_equal(tg_data_write_png_grid(path_of("bad-scale.png"), img, 4, (tg_grid_scale)7),
                     TG_ERR_ARG);
    assert_error_contains("scale 7 is not");
    assert_int_not_equal(access(path_of("bad-scale.png"), F_OK), 0);
    free(before);
    free(after);
    tg_tensor_release(img);
}

/* ---- hostile paths and values (issue 19) --------------------------------------------------- */

/* The unfixed readers opened a FIFO with a plain open() or gzopen(), which waits for a writer:
 * forever. An alarm turns that hang into a failure. */
static void reader_blocked(int sig)
{
    (void)sig;
    static const char msg[] = "a reader blocked on a FIFO (open without O_NONBLOCK)\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(1);
}

static void alarm_on(void)
{
    signal(SIGALRM, reader_blocked);
    alarm(10);
}

static void alarm_off(void)
{
    alarm(0);
    signal(SIGALRM, SIG_DFL);
}

/* Asserts the last error is TG_ERR_IO "fn: path: is <kind>, not a regular file". */
static void assert_not_regular(const char *fn, const char *path, const char *kind)
{
    char want[700];
    snprintf(want, sizeof want, "%s: %s: is %s, not a regular file", fn, path, kind);
    assert_int_equal(tg_last_status(), TG_ERR_IO);
    assert_error_contains(want);
}

/* Every reader in data/ refuses a FIFO at once (a .gz name too), and a device, with a message
 * saying what the path is. */
static void test_readers_refuse_fifo_and_devices(void **state)
{
    (void)state;
    const char *fifo = path_of("in.fifo"), *fifo_gz = path_of("in.fifo.gz");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_int_equal(mkfifo(fifo_gz, 0600), 0);
    const char *d = path_of("fifodata");
    assert_int_equal(mkdir(d, 0755), 0);
    write_mnist(d, "train", 4, 2, 2, false);
    char images[600];
    snprintf(images, sizeof images, "%s/train-images-idx3-ubyte", d);
    assert_int_equal(unlink(images), 0);
    assert_int_equal(mkfifo(images, 0600), 0);

    alarm_on();
    tg_clear_error();
    assert_null(tg_data_read_idx(fifo));
    assert_not_regular("tg_data_read_idx", fifo, "a FIFO");
    tg_clear_error();
    assert_null(tg_data_read_idx(fifo_gz));
    assert_not_regular("tg_data_read_idx", fifo_gz, "a FIFO");
    tg_clear_error();
    assert_null(tg_data_load_safetensors(fifo));
    assert_not_regular("tg_data_load_safetensors", fifo, "a FIFO");
    tg_clear_error();
    assert_null(tg_data_load_mnist(d, true, -1));
    assert_not_regular("tg_data_read_idx", images, "a FIFO");
    alarm_off();

    /* Reading /dev/null is harmless; it used to be an empty idx file. */
    tg_clear_error();
    assert_null(tg_data_read_idx("/dev/null"));
    assert_not_regular("tg_data_read_idx", "/dev/null", "a character device");
    tg_clear_error();
    assert_null(tg_data_read_idx(dir));
    assert_not_regular("tg_data_read_idx", dir, "a directory");
}

/* Asserts that path is still a FIFO / symbolic link / directory. */
static void assert_type(const char *path, mode_t type)
{
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    if ((st.st_mode & S_IFMT) != type)
        fail_msg("%s was replaced (mode %o)", path, (unsigned)st.st_mode);
}

/* Asserts that dir holds no temporary file of a save. */
static void assert_no_tmp(void)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls -A '%s' | grep -q '\\.tmp\\.'", dir);
    assert_int_not_equal(system(cmd), 0);
}

/* A save never replaces what is not a regular file: the unfixed tg_atomic_open renamed its
 * temporary file over a FIFO, a symbolic link (a symlinked checkpoint became a plain file) and,
 * as root, /dev/null. Refused before anything is created, and again at the commit when the path
 * changed meanwhile. */
static void test_atomic_refuses_non_regular(void **state)
{
    (void)state;
    const char *fifo = path_of("out.fifo"), *link = path_of("out.link");
    const char *target = path_of("link-target"), *sub = path_of("out.dir");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    write_bytes(target, (const unsigned char *)"keep", 4, false);
    assert_int_equal(symlink(target, link), 0);
    assert_int_equal(mkdir(sub, 0755), 0);
    const struct {
        const char *path, *kind;
        mode_t type;
    } cases[] = {
        {fifo, "a FIFO", S_IFIFO},
        {link, "a symbolic link", S_IFLNK},
        {sub, "a directory", S_IFDIR},
    };
    tg_tensor *img = tg_tensor_zeros(TG_DIMS(1, 1, 2, 2));
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tg_clear_error();
        assert_int_equal(tg_data_write_png_grid(cases[i].path, img, 1, TG_GRID_FIXED), TG_ERR_IO);
        assert_not_regular("tg_atomic_open", cases[i].path, cases[i].kind);
        assert_error_contains("(a save replaces only regular files)");
        assert_type(cases[i].path, cases[i].type);
    }
    /* A symlinked checkpoint stays a link, and the file it points to keeps its bytes. */
    tg_state_dict *sd = tg_state_dict_new();
    assert_int_equal(tg_state_dict_put(sd, "w", img), TG_OK);
    tg_clear_error();
    assert_int_equal(tg_data_save_safetensors(link, sd), TG_ERR_IO);
    assert_error_contains("is a symbolic link, not a regular file");
    assert_type(link, S_IFLNK);
    long n;
    unsigned char *kept = slurp(target, &n);
    assert_int_equal(n, 4);
    assert_memory_equal(kept, "keep", 4);
    free(kept);
    tg_state_dict_free(sd);
    assert_no_tmp();

    /* /dev/null: only opened; an unfixed open is aborted at once, which removes its temporary
     * file, so the device is never touched. */
    tg_clear_error();
    tg_atomic_file *af = tg_atomic_open("/dev/null");
    if (af) {
        tg_atomic_abort(af);
        fail_msg("tg_atomic_open accepted /dev/null as a target");
    }
    assert_not_regular("tg_atomic_open", "/dev/null", "a character device");

    /* The path became a FIFO while the file was being written: the commit refuses. */
    const char *late = path_of("late.png");
    af = tg_atomic_open(late);
    assert_non_null(af);
    assert_int_equal(tg_atomic_write(af, "data", 4), TG_OK);
    assert_int_equal(mkfifo(late, 0600), 0);
    tg_clear_error();
    assert_int_equal(tg_atomic_commit(af), TG_ERR_IO);
    assert_not_regular("tg_atomic_commit", late, "a FIFO");
    assert_type(late, S_IFIFO);
    assert_no_tmp();
    tg_tensor_release(img);
}

/* tg_data_fopen_regular: fopen for regular files only. A FIFO is refused at once, to read
 * and to write (mnist_gan's report and eval opened their files with fopen, which waits for a
 * FIFO's other end: forever), and so are a directory and a device; a regular file reads, "a"
 * appends and creates, "w" empties; a mode fopen does not know is TG_ERR_ARG. */
static void test_fopen_regular(void **state)
{
    (void)state;
    const char *fifo = path_of("open.fifo"), *file = path_of("open.txt");
    const char *made = path_of("open.new");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    write_bytes(file, (const unsigned char *)"one\n", 4, false);
    static const char *const modes[] = {"r", "rb", "r+", "a", "ab", "w", "w+b"};
    alarm_on();
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        tg_clear_error();
        assert_null(tg_data_fopen_regular(fifo, modes[i]));
        assert_not_regular("tg_data_fopen_regular", fifo, "a FIFO");
    }
    alarm_off();
    assert_type(fifo, S_IFIFO);
    tg_clear_error();
    assert_null(tg_data_fopen_regular(dir, "r"));
    assert_not_regular("tg_data_fopen_regular", dir, "a directory");
    tg_clear_error();
    assert_null(tg_data_fopen_regular("/dev/null", "a"));
    assert_not_regular("tg_data_fopen_regular", "/dev/null", "a character device");
    tg_clear_error();
    assert_null(tg_data_fopen_regular(path_of("absent"), "r"));
    assert_int_equal(tg_last_status(), TG_ERR_IO);
    assert_error_contains("cannot open: No such file or directory");
    tg_clear_error();
    assert_null(tg_data_fopen_regular(file, "x"));
    assert_int_equal(tg_last_status(), TG_ERR_ARG);
    assert_error_contains("mode \"x\" is not r, w or a");

    char line[16] = "";
    FILE *f = tg_data_fopen_regular(file, "r");
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof line, f));
    assert_string_equal(line, "one\n");
    fclose(f);
    f = tg_data_fopen_regular(file, "a");
    assert_non_null(f);
    assert_true(fputs("two\n", f) >= 0);
    assert_int_equal(fclose(f), 0);
    long n;
    unsigned char *b = slurp(file, &n);
    assert_int_equal(n, 8);
    assert_memory_equal(b, "one\ntwo\n", 8);
    free(b);
    f = tg_data_fopen_regular(made, "a"); /* made when missing */
    assert_non_null(f);
    assert_true(fputs("x", f) >= 0);
    assert_int_equal(fclose(f), 0);
    f = tg_data_fopen_regular(file, "w"); /* emptied */
    assert_non_null(f);
    assert_int_equal(fclose(f), 0);
    b = slurp(made, &n);
    assert_int_equal(n, 1);
    free(b);
    struct stat st;
    assert_int_equal(stat(file, &st), 0);
    assert_int_equal(st.st_size, 0);
}

/* A float32 idx file of the given shape and values. */
static void write_float_idx(const char *path, int ndim, const uint32_t *dims, const float *v,
                            size_t n)
{
    unsigned char b[256] = {0, 0, 0x0D, (unsigned char)ndim};
    size_t k = 4;
    for (int d = 0; d < ndim; d++, k += 4)
        for (int j = 0; j < 4; j++)
            b[k + j] = (unsigned char)(dims[d] >> (24 - 8 * j));
    for (size_t i = 0; i < n; i++, k += 4) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        for (int j = 0; j < 4; j++)
            b[k + j] = (unsigned char)(u >> (24 - 8 * j));
    }
    assert_true(k <= sizeof b);
    write_bytes(path, b, k, false);
}

/* A NaN or an infinity in a float idx file is refused, naming the index; finite values load,
 * and tg_data_check_range then refuses values outside a range or not whole. */
static void test_idx_float_values(void **state)
{
    (void)state;
    const uint32_t dims[2] = {2, 2};
    const char *p = path_of("f-idx2");
    const float nan_at_1[4] = {0.5f, NAN, 3, 4}, inf_at_3[4] = {0, 1, 2, -INFINITY};
    write_float_idx(p, 2, dims, nan_at_1, 4);
    tg_clear_error();
    assert_null(tg_data_read_idx(p));
    assert_int_equal(tg_last_status(), TG_ERR_FORMAT);
    assert_error_contains("tg_data_read_idx: ");
    assert_error_contains("f-idx2: value nan at index [0, 1] is not a finite number");
    write_float_idx(p, 2, dims, inf_at_3, 4);
    tg_clear_error();
    assert_null(tg_data_read_idx(p));
    assert_error_contains("f-idx2: value -inf at index [1, 1] is not a finite number");

    const float big[4] = {0, 255, 1e30f, 3.5f};
    write_float_idx(p, 2, dims, big, 4);
    tg_tensor *t = tg_data_read_idx(p);
    assert_non_null(t);
    assert_int_equal(tg_data_check_range(t, "F", -1e31f, 1e31f, false), TG_OK);
    assert_int_equal(tg_data_check_range(t, "F", 0, 255, false), TG_ERR_FORMAT);
    assert_error_contains(
        "tg_data_check_range: F: value 1e+30 at index [1, 0] is outside [0, 255]");
    assert_int_equal(tg_data_check_range(t, "F", 0, 1e31f, true), TG_ERR_FORMAT);
    assert_error_contains("F: value 3.5 at index [1, 1] is not a whole number in [0, 1e+31]");
    assert_int_equal(tg_data_check_range(t, "F", 1, 0, false), TG_ERR_ARG);
    assert_int_equal(tg_data_check_range(NULL, "F", 0, 1, false), TG_ERR_ARG);
    tg_tensor_release(t);
}

/* tg_data_load_mnist refuses pixels outside [0, 255] and labels that are not digits 0..9 (the
 * unfixed loader trained on 1e30 pixels, and took 3.5 and NaN labels, casting NaN to int). */
static void test_mnist_refuses_bad_values(void **state)
{
    (void)state;
    const char *d = path_of("values");
    assert_int_equal(mkdir(d, 0755), 0);
    write_mnist(d, "train", 3, 1, 2, false);
    char images[600], labels[600];
    snprintf(images, sizeof images, "%s/train-images-idx3-ubyte", d);
    snprintf(labels, sizeof labels, "%s/train-labels-idx1-ubyte", d);
    const uint32_t idims[3] = {3, 1, 2}, ldims[1] = {3};
    const float px[6] = {0, 255, 1, 2, 3, 1e30f}, ok_px[6] = {0, 255, 1, 2, 3, 4};
    write_float_idx(images, 3, idims, px, 6);
    tg_clear_error();
    assert_null(tg_data_load_mnist(d, true, -1));
    assert_int_equal(tg_last_status(), TG_ERR_FORMAT);
    char want[800];
    snprintf(want, sizeof want,
             "tg_data_load_mnist: %s: pixel 1e+30 at index [2, 0, 1] is outside [0, 255]", images);
    assert_error_contains(want);

    write_float_idx(images, 3, idims, ok_px, 6);
    const float frac[3] = {1, 2, 3.5f}, high[3] = {10, 2, 3}, nan_label[3] = {1, NAN, 3};
    write_float_idx(labels, 1, ldims, frac, 3);
    tg_clear_error();
    assert_null(tg_data_load_mnist(d, true, 3));
    snprintf(want, sizeof want,
             "tg_data_load_mnist: %s: label 3.5 at index [2] is not a whole number in [0, 9]",
             labels);
    assert_error_contains(want);
    write_float_idx(labels, 1, ldims, high, 3);
    tg_clear_error();
    assert_null(tg_data_load_mnist(d, true, -1));
    assert_error_contains("label 10 at index [0] is outside [0, 9]");
    write_float_idx(labels, 1, ldims, nan_label, 3);
    tg_clear_error();
    assert_null(tg_data_load_mnist(d, true, 3));
    assert_error_contains("labels-idx1-ubyte: value nan at index [1] is not a finite number");

    const float good[3] = {1, 2, 3};
    write_float_idx(labels, 1, ldims, good, 3);
    tg_dataset *ds = tg_data_load_mnist(d, true, -1);
    assert_non_null(ds);
    assert_int_equal(ds->images->shape[0], 3);
    tg_dataset_free(ds);
}

/* A .gz holds one gzip member or several back to back (read as their contents joined, as gunzip
 * does); any other byte after the last member is refused. The unfixed reader's gzread skipped
 * such trailing garbage without a word. */
static void test_idx_gz_trailing_bytes(void **state)
{
    (void)state;
    const unsigned char f[] = {0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 250, 251, 255};
    const char *a = path_of("part-a.gz"), *b = path_of("part-b.gz"), *p = path_of("joined.gz");
    write_bytes(a, f, 10, true);
    write_bytes(b, f + 10, sizeof f - 10, true);
    long na, nb;
    unsigned char *ga = slurp(a, &na), *gb = slurp(b, &nb);
    unsigned char joined[512];
    assert_true((size_t)(na + nb + 8) <= sizeof joined);
    memcpy(joined, ga, (size_t)na);
    memcpy(joined + na, gb, (size_t)nb);
    write_bytes(p, joined, (size_t)(na + nb), false);
    tg_tensor *t = tg_data_read_idx(p);
    assert_non_null(t);
    assert_int_equal(t->numel, 6);
    assert_true(t->data[0] == 1.0f && t->data[5] == 255.0f);
    tg_tensor_release(t);

    /* Garbage after one member and after two; a zero byte of padding; half a gzip magic. */
    const char *w = path_of("whole.gz");
    write_bytes(w, f, sizeof f, true);
    long nw;
    unsigned char *gw = slurp(w, &nw);
    const struct {
        const unsigned char *gz;
        long n;
    } streams[] = {{gw, nw}, {joined, na + nb}};
    static const struct {
        const char *tail;
        size_t n;
    } tails[] = {{"garbage", 7}, {"\0", 1}, {"\x1f", 1}};
    for (size_t k = 0; k < 2; k++)
        for (size_t i = 0; i < sizeof tails / sizeof tails[0]; i++) {
            unsigned char buf[512];
            long n = streams[k].n;
            memcpy(buf, streams[k].gz, (size_t)n);
            memcpy(buf + n, tails[i].tail, tails[i].n);
            write_bytes(p, buf, (size_t)n + tails[i].n, false);
            tg_clear_error();
            assert_null(tg_data_read_idx(p));
            assert_int_equal(tg_last_status(), TG_ERR_FORMAT);
            char want[200];
            snprintf(want, sizeof want,
                     "joined.gz: %zu trailing bytes after the gzip data at file byte %ld (not "
                     "another gzip member)",
                     tails[i].n, n);
            assert_error_contains(want);
        }
    free(gw);
    free(ga);
    free(gb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TG_TEST(test_idx_raw_and_gz),
        TG_TEST(test_idx_bad_files),
        TG_TEST(test_idx_huge_header_short_file),
        TG_TEST(test_idx_truncated_gz),
        TG_TEST(test_idx_write_read_back),
        TG_TEST(test_mnist_dataset_and_filter),
        TG_TEST(test_mnist_label_count_mismatch),
        TG_TEST(test_dataset_per_class),
        TG_TEST(test_loader_shuffles_drops_and_resumes),
        TG_TEST(test_loader_shuffle_block),
        TG_TEST(test_loader_shuffle_block_zero_is_whole_set),
        TG_TEST(test_loader_shuffle_block_resume),
        TG_TEST(test_loader_shuffle_block_errors),
        TG_TEST(test_png_grid),
        TG_TEST(test_atomic_failure_keeps_old_file),
        TG_TEST(test_readers_refuse_fifo_and_devices),
        TG_TEST(test_atomic_refuses_non_regular),
        TG_TEST(test_fopen_regular),
        TG_TEST(test_idx_float_values),
        TG_TEST(test_mnist_refuses_bad_values),
        TG_TEST(test_idx_gz_trailing_bytes),
    };
    return cmocka_run_group_tests_name("data", tests, make_dir, remove_dir);
}
