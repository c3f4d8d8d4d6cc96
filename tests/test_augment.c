/* Affine augmentation (data/augment.c): tg_data_affine's geometry on images whose every pixel
 * is known, and tg_data_augment_affine's draws (the same seed, the same output; the ranges
 * bound what moves), and both functions' refusals. */
#include "common.h"

#include <string.h>

#include "data.h"

/* A new [n, c, h, w] tensor whose pixel values are all different: v = 1 + flat index. */
static tg_tensor *numbered(int64_t n, int64_t c, int64_t h, int64_t w)
{
    tg_tensor *t = tg_tensor_new(TG_DIMS(n, c, h, w));
    assert_non_null(t);
    for (int64_t i = 0; i < t->numel; i++)
        t->data[i] = (float)(1 + i);
    return t;
}

/* Pixel (y, x) of channel k of image i in t ([N, C, H, W]). */
static float at(const tg_tensor *t, int64_t i, int64_t k, int64_t y, int64_t x)
{
    const int64_t c = t->shape[1], h = t->shape[2], w = t->shape[3];
    return t->data[((i * c + k) * h + y) * w + x];
}

/* Zero ranges (scales at 1) leave every image as it was, bit for bit. */
static void test_zero_ranges_copy(void **state)
{
    (void)state;
    tg_tensor *x = numbered(3, 2, 7, 9); /* not square, several channels */
    tg_rng rng;
    tg_rng_seed(&rng, 5);
    const tg_affine_range none = {.min_scale = 1.0f, .max_scale = 1.0f};
    tg_tensor *y = tg_data_augment_affine(x, &rng, &none, -1.0f);
    assert_non_null(y);
    assert_int_equal(y->ndim, 4);
    assert_memory_equal(y->shape, x->shape, sizeof x->shape);
    assert_memory_equal(y->data, x->data, sizeof(float) * (size_t)x->numel);
    tg_tensor_release(y);
    tg_tensor_release(x);
}

/* Whole shifts move pixels exactly (dx right, dy down), the uncovered edge takes fill; half a
 * pixel is the mean of the two neighbours (bilinear). */
static void test_shift(void **state)
{
    (void)state;
    tg_tensor *x = numbered(1, 2, 5, 6);
    const tg_affine right = {.scale = 1.0f, .dx = 1.0f}, up = {.scale = 1.0f, .dy = -1.0f},
                    half = {.scale = 1.0f, .dx = 0.5f};
    tg_tensor *r = tg_data_affine(x, &right, 1, -1.0f);
    tg_tensor *u = tg_data_affine(x, &up, 1, -1.0f);
    tg_tensor *h = tg_data_affine(x, &half, 1, -1.0f);
    assert_true(r && u && h);
    for (int64_t k = 0; k < 2; k++)
        for (int64_t yy = 0; yy < 5; yy++)
            for (int64_t xx = 0; xx < 6; xx++) {
                assert_true(at(r, 0, k, yy, xx) == (xx > 0 ? at(x, 0, k, yy, xx - 1) : -1.0f));
                assert_true(at(u, 0, k, yy, xx) == (yy < 4 ? at(x, 0, k, yy + 1, xx) : -1.0f));
                const float left = xx > 0 ? at(x, 0, k, yy, xx - 1) : -1.0f;
                assert_close(at(h, 0, k, yy, xx), 0.5f * (left + at(x, 0, k, yy, xx)), 1e-5);
            }
    tg_tensor_release(r), tg_tensor_release(u), tg_tensor_release(h);
    tg_tensor_release(x);
}

/* 90 degrees counter-clockwise is numpy's rot90: out[r][c] = in[c][W-1-r]; -90 is its inverse
 * and 180 flips both axes. Per-image transforms: image 0 turns, image 1 stays. */
static void test_rotate_90(void **state)
{
    (void)state;
    const int64_t n = 6;
    tg_tensor *x = numbered(2, 2, n, n);
    const tg_affine t[3][2] = {
        {{.angle = 90.0f, .scale = 1.0f}, {.scale = 1.0f}},
        {{.angle = -90.0f, .scale = 1.0f}, {.scale = 1.0f}},
        {{.angle = 180.0f, .scale = 1.0f}, {.scale = 1.0f}},
    };
    tg_tensor *ccw = tg_data_affine(x, t[0], 2, -1.0f);
    tg_tensor *cw = tg_data_affine(x, t[1], 2, -1.0f);
    tg_tensor *flip = tg_data_affine(x, t[2], 2, -1.0f);
    assert_true(ccw && cw && flip);
    for (int64_t k = 0; k < 2; k++)
        for (int64_t r = 0; r < n; r++)
            for (int64_t c = 0; c < n; c++) {
                assert_true(at(ccw, 0, k, r, c) == at(x, 0, k, c, n - 1 - r));
                assert_true(at(cw, 0, k, r, c) == at(x, 0, k, n - 1 - c, r));
                assert_true(at(flip, 0, k, r, c) == at(x, 0, k, n - 1 - r, n - 1 - c));
                assert_true(at(ccw, 1, k, r, c) == at(x, 1, k, r, c));
            }
    tg_tensor_release(ccw), tg_tensor_release(cw), tg_tensor_release(flip);
    tg_tensor_release(x);
}

/* Scale 2 enlarges about the centre: on a 5x5 image (centre 2, 2) output (2, 4) reads input
 * (2, 3), and (2, 3) the mean of input (2, 2) and (2, 3); 0.5 shrinks, so the border samples
 * outside and blends with fill. */
static void test_scale(void **state)
{
    (void)state;
    tg_tensor *x = numbered(1, 1, 5, 5);
    const tg_affine big = {.scale = 2.0f}, small = {.scale = 0.5f};
    tg_tensor *b = tg_data_affine(x, &big, 1, 0.0f);
    tg_tensor *s = tg_data_affine(x, &small, 1, 0.0f);
    assert_true(b && s);
    assert_true(at(b, 0, 0, 2, 2) == at(x, 0, 0, 2, 2));
    assert_true(at(b, 0, 0, 2, 4) == at(x, 0, 0, 2, 3));
    assert_close(at(b, 0, 0, 2, 3), 0.5f * (at(x, 0, 0, 2, 2) + at(x, 0, 0, 2, 3)), 1e-5);
    assert_true(at(s, 0, 0, 2, 3) == at(x, 0, 0, 2, 4)); /* 2 + 1 / 0.5 */
    assert_true(at(s, 0, 0, 2, 0) == 0.0f);              /* 2 - 4: outside */
    tg_tensor_release(b), tg_tensor_release(s);
    tg_tensor_release(x);
}

/* The same rng state gives the same output, another seed another one; with MNIST's ranges one
 * bright pixel at the centre of a black 28x28 image moves by at most the shift (rotation and
 * scale keep the centre), and across 64 draws it does move. */
static void test_draws(void **state)
{
    (void)state;
    const int64_t n = 64;
    tg_tensor *x = tg_tensor_full(TG_DIMS(n, 1, 28, 28), -1.0f);
    assert_non_null(x);
    for (int64_t i = 0; i < n; i++) /* a 2x2 dot around the centre (13.5, 13.5) */
        for (int64_t d = 0; d < 4; d++)
            x->data[i * 784 + (13 + d / 2) * 28 + 13 + d % 2] = 1.0f;
    const tg_affine_range mnist = {2.0f, 10.0f, 0.9f, 1.1f};
    tg_rng r1, r2, r3;
    tg_rng_seed(&r1, 42), tg_rng_seed(&r2, 42), tg_rng_seed(&r3, 43);
    tg_tensor *a = tg_data_augment_affine(x, &r1, &mnist, -1.0f);
    tg_tensor *b = tg_data_augment_affine(x, &r2, &mnist, -1.0f);
    tg_tensor *c = tg_data_augment_affine(x, &r3, &mnist, -1.0f);
    assert_true(a && b && c);
    assert_memory_equal(a->data, b->data, sizeof(float) * (size_t)a->numel);
    assert_memory_equal(&r1, &r2, sizeof r1); /* both streams advanced alike */
    assert_true(memcmp(a->data, c->data, sizeof(float) * (size_t)a->numel) != 0);
    double farthest = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double mass = 0.0, mx = 0.0, my = 0.0;
        for (int64_t p = 0; p < 784; p++) {
            const double v = (double)a->data[i * 784 + p] + 1.0; /* 0 on the background */
            assert_true(v >= -1e-6 && v <= 2.0 + 1e-6);
            mass += v, mx += v * (double)(p % 28), my += v * (double)(p / 28);
        }
        assert_true(mass > 0.0);
        const double ex = fabs(mx / mass - 13.5), ey = fabs(my / mass - 13.5);
        /* the shift exactly, up to the resampling's blur of a 2-pixel dot */
        assert_true(ex <= 2.25 && ey <= 2.25);
        farthest = fmax(farthest, fmax(ex, ey));
    }
    assert_true(farthest > 1.0);
    tg_tensor_release(a), tg_tensor_release(b), tg_tensor_release(c);
    tg_tensor_release(x);
}

/* Bad arguments: NULL, a wrong shape, the wrong number of transforms, non-finite or
 * non-positive values, ranges out of bounds. Each is refused with a message naming it. */
static void test_bad_arguments(void **state)
{
    (void)state;
    tg_tensor *x = numbered(2, 1, 4, 4), *flat = numbered(1, 1, 1, 16);
    tg_tensor *x3 = tg_tensor_zeros(TG_DIMS(2, 4, 4));
    const tg_affine id = {.scale = 1.0f}, zero_scale = {.scale = 0.0f},
                    nan_angle = {.angle = NAN, .scale = 1.0f};
    const tg_affine two[2] = {{.scale = 1.0f}, {.scale = 1.0f, .dy = INFINITY}};
    assert_null(tg_data_affine(NULL, &id, 1, 0.0f));
    assert_error_contains("tg_data_affine: images is NULL");
    assert_null(tg_data_affine(x3, &id, 1, 0.0f));
    assert_int_equal(tg_last_status(), TG_ERR_SHAPE);
    assert_error_contains("images [2, 4, 4]: expected [N, C, H, W]");
    assert_null(tg_data_affine(x, NULL, 1, 0.0f));
    assert_error_contains("the transforms are NULL");
    assert_null(tg_data_affine(x, &id, 3, 0.0f));
    assert_error_contains("3 transforms for 2 images (give 1 or 2)");
    assert_null(tg_data_affine(x, &zero_scale, 1, 0.0f));
    assert_error_contains("transform 0: scale 0 (it must be above 0)");
    assert_null(tg_data_affine(x, &nan_angle, 1, 0.0f));
    assert_error_contains("transform 0: angle is nan, not a finite number");
    assert_null(tg_data_affine(x, two, 2, 0.0f));
    assert_error_contains("transform 1: dy is inf");
    assert_null(tg_data_affine(x, &id, 1, NAN));
    assert_error_contains("fill nan is not a finite number");
    /* a 1x16 image shifts like any other, and an empty batch gives an empty batch */
    tg_tensor *f = tg_data_affine(flat, &id, 1, 0.0f);
    assert_non_null(f);
    tg_tensor_release(f);
    tg_tensor *none = tg_tensor_new(TG_DIMS(0, 1, 4, 4));
    tg_rng r0;
    tg_rng_seed(&r0, 1);
    const tg_affine_range mnist = {2.0f, 10.0f, 0.9f, 1.1f};
    f = tg_data_augment_affine(none, &r0, &mnist, -1.0f);
    assert_non_null(f);
    assert_int_equal(f->shape[0], 0);
    tg_tensor_release(f), tg_tensor_release(none);
    /* No elements but a huge side (fuzz_api's timeout): an empty result at once, and no draws
     * (the batch's 2^40 transforms would not fit in memory either). */
    const int64_t huge = (int64_t)1 << 40;
    const int64_t empty_shapes[2][4] = {{1, 1, huge, 0}, {huge, 0, 4, 4}};
    for (int k = 0; k < 2; k++) {
        tg_tensor *e = tg_tensor_new(4, empty_shapes[k]);
        assert_non_null(e);
        const tg_rng before = r0;
        f = tg_data_affine(e, &id, 1, 0.0f);
        assert_true(f && tg_shape_equal(f, e));
        tg_tensor_release(f);
        f = tg_data_augment_affine(e, &r0, &mnist, 0.0f);
        assert_true(f && tg_shape_equal(f, e));
        assert_memory_equal(&before, &r0, sizeof r0);
        tg_tensor_release(f), tg_tensor_release(e);
    }

    tg_rng rng;
    tg_rng_seed(&rng, 1);
    const tg_affine_range ok = {1.0f, 5.0f, 1.0f, 1.0f};
    const struct {
        tg_affine_range r;
        const char *fragment;
    } bad[] = {
        {{-1.0f, 0.0f, 1.0f, 1.0f}, "max_shift -1, max_angle 0: need a finite shift >= 0"},
        {{INFINITY, 0.0f, 1.0f, 1.0f}, "max_shift inf"},
        {{0.0f, 200.0f, 1.0f, 1.0f}, "max_angle 200"},
        {{0.0f, NAN, 1.0f, 1.0f}, "max_angle nan"},
        {{0.0f, 0.0f, 1.1f, 0.9f}, "scale range [1.1, 0.9]: need 0 < min_scale <= max_scale"},
        {{0.0f, 0.0f, 0.0f, 1.0f}, "scale range [0, 1]"},
        {{0.0f, 0.0f, 1.0f, INFINITY}, "scale range [1, inf]"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        assert_null(tg_data_augment_affine(x, &rng, &bad[k].r, -1.0f));
        assert_int_equal(tg_last_status(), TG_ERR_ARG);
        assert_error_contains("tg_data_augment_affine: ");
        assert_error_contains(bad[k].fragment);
    }
    assert_null(tg_data_augment_affine(x, NULL, &ok, -1.0f));
    assert_error_contains("tg_data_augment_affine: the rng is NULL");
    assert_null(tg_data_augment_affine(x, &rng, NULL, -1.0f));
    assert_error_contains("the range is NULL");
    assert_null(tg_data_augment_affine(x3, &rng, &ok, -1.0f));
    assert_error_contains("tg_data_augment_affine: images [2, 4, 4]");
    assert_null(tg_data_augment_affine(x, &rng, &ok, INFINITY));
    assert_error_contains("tg_data_augment_affine: fill inf");
    tg_tensor_release(x), tg_tensor_release(flat), tg_tensor_release(x3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TG_TEST(test_zero_ranges_copy),
        TG_TEST(test_shift),
        TG_TEST(test_rotate_90),
        TG_TEST(test_scale),
        TG_TEST(test_draws),
        TG_TEST(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
