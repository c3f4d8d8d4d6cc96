/* Affine transforms of images for data augmentation (data.h, "augmentation").
 *
 * Each output pixel is pulled from the input: the transform's inverse maps its centre to a
 * point of the input, which is interpolated bilinearly from its four neighbours (the pushing
 * alternative leaves holes where the scale enlarges). Coordinates are in double: a 90-degree
 * turn's cosine is 6e-17 there, so its samples land on pixels to the last float bit, where
 * float's cosf(pi/2) of 4e-8 would blend in a neighbour. The work is small (a 64-image MNIST
 * batch is 50,000 samples, far below one convolution), so it runs on one thread and its
 * result never depends on the thread count. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>

/* t, checked: finite numbers and a scale above 0; TG_ERR_ARG naming fn, the index and the
 * field otherwise. */
static tg_status check_transform(const char *fn, const tg_affine *t, int64_t i)
{
    const float v[4] = {t->angle, t->scale, t->dx, t->dy};
    static const char *const names[4] = {"angle", "scale", "dx", "dy"};
    for (int k = 0; k < 4; k++)
        if (!isfinite(v[k]))
            return tg_set_error(TG_ERR_ARG, "%s: transform %lld: %s is %g, not a finite number", fn,
                                (long long)i, names[k], (double)v[k]);
    if (!(t->scale > 0.0f))
        return tg_set_error(TG_ERR_ARG, "%s: transform %lld: scale %g (it must be above 0)", fn,
                            (long long)i, (double)t->scale);
    return TG_OK;
}

/* TG_OK when images is a [N, C, H, W] tensor and fill a finite number; otherwise the error,
 * naming fn. */
static tg_status check_images(const char *fn, const tg_tensor *images, float fill)
{
    if (!images)
        return tg_set_error(TG_ERR_ARG, "%s: images is NULL", fn);
    if (images->ndim != 4) {
        char s[160];
        return tg_set_error(TG_ERR_SHAPE, "%s: images %s: expected [N, C, H, W]", fn,
                            tg_shape_str(images->ndim, images->shape, s, sizeof s));
    }
    if (!isfinite(fill))
        return tg_set_error(TG_ERR_ARG, "%s: fill %g is not a finite number", fn, (double)fill);
    return TG_OK;
}

/* One channel plane (h x w) of src through t into dst, outside counting as fill. */
static void transform_plane(float *dst, const float *src, int64_t h, int64_t w, const tg_affine *t,
                            float fill)
{
    const double rad = (double)t->angle * (M_PI / 180.0);
    const double c = cos(rad) / (double)t->scale, s = sin(rad) / (double)t->scale;
    const double cx = 0.5 * (double)(w - 1), cy = 0.5 * (double)(h - 1);
    for (int64_t y = 0; y < h; y++)
        for (int64_t x = 0; x < w; x++) {
            /* The inverse: undo the move, then turn back by -angle and divide by the scale. */
            const double u = (double)x - cx - (double)t->dx, v = (double)y - cy - (double)t->dy;
            const double px = cx + c * u - s * v, py = cy + s * u + c * v;
            float out = fill;
            /* Beyond a pixel outside, every neighbour is outside (and the cast below must not
             * see a huge value). */
            if (px > -1.0 && px < (double)w && py > -1.0 && py < (double)h) {
                const double fx0 = floor(px), fy0 = floor(py);
                const int64_t x0 = (int64_t)fx0, y0 = (int64_t)fy0;
                const float ax = (float)(px - fx0), ay = (float)(py - fy0);
                float tap[2][2];
                for (int j = 0; j < 2; j++)
                    for (int i = 0; i < 2; i++) {
                        const int64_t yy = y0 + j, xx = x0 + i;
                        tap[j][i] =
                            yy >= 0 && yy < h && xx >= 0 && xx < w ? src[yy * w + xx] : fill;
                    }
                /* With ax == 0 the right taps weigh exactly 0, so whole shifts copy bits. */
                const float top = (1.0f - ax) * tap[0][0] + ax * tap[0][1];
                const float bottom = (1.0f - ax) * tap[1][0] + ax * tap[1][1];
                out = (1.0f - ay) * top + ay * bottom;
            }
            dst[y * w + x] = out;
        }
}

tg_tensor *tg_data_affine(const tg_tensor *images, const tg_affine *t, int64_t n_t, float fill)
{
    const char *fn = "tg_data_affine";
    if (check_images(fn, images, fill) != TG_OK)
        return NULL;
    const int64_t n = images->shape[0], ch = images->shape[1], h = images->shape[2],
                  w = images->shape[3];
    if (!t) {
        tg_set_error(TG_ERR_ARG, "%s: the transforms are NULL", fn);
        return NULL;
    }
    if (n_t != 1 && n_t != n) {
        tg_set_error(TG_ERR_ARG, "%s: %lld transforms for %lld images (give 1 or %lld)", fn,
                     (long long)n_t, (long long)n, (long long)n);
        return NULL;
    }
    for (int64_t i = 0; i < n_t; i++)
        if (check_transform(fn, &t[i], i) != TG_OK)
            return NULL;
    tg_tensor *out = tg_tensor_new(4, images->shape);
    /* No elements: nothing to do, however long the sides (loops over a 2^40-row plane of
     * width 0 would still take hours). */
    if (!out || out->numel == 0)
        return out;
    const int64_t plane = h * w;
    for (int64_t i = 0; i < n; i++)
        for (int64_t k = 0; k < ch; k++) {
            const int64_t at = (i * ch + k) * plane;
            transform_plane(out->data + at, images->data + at, h, w, &t[n_t == 1 ? 0 : i], fill);
        }
    return out;
}

/* A uniform draw in [lo, hi] (hi itself only when lo == hi); in double, so that a range as
 * wide as floats go (hi - lo = 2 FLT_MAX) stays finite. */
static float draw(tg_rng *rng, float lo, float hi)
{
    return (float)((double)lo + ((double)hi - (double)lo) * (double)tg_rng_uniform01(rng));
}

tg_tensor *tg_data_augment_affine(const tg_tensor *images, tg_rng *rng, const tg_affine_range *r,
                                  float fill)
{
    const char *fn = "tg_data_augment_affine";
    if (check_images(fn, images, fill) != TG_OK)
        return NULL;
    if (!rng || !r) {
        tg_set_error(TG_ERR_ARG, "%s: the %s is NULL", fn, rng ? "range" : "rng");
        return NULL;
    }
    if (!(r->max_shift >= 0.0f && isfinite(r->max_shift)) ||
        !(r->max_angle >= 0.0f && r->max_angle <= 180.0f)) {
        tg_set_error(TG_ERR_ARG,
                     "%s: max_shift %g, max_angle %g: need a finite shift >= 0 and an angle in "
                     "[0, 180] degrees",
                     fn, (double)r->max_shift, (double)r->max_angle);
        return NULL;
    }
    if (!(r->min_scale > 0.0f && r->min_scale <= r->max_scale && isfinite(r->max_scale))) {
        tg_set_error(TG_ERR_ARG,
                     "%s: scale range [%g, %g]: need 0 < min_scale <= max_scale, both finite", fn,
                     (double)r->min_scale, (double)r->max_scale);
        return NULL;
    }
    const int64_t n = images->shape[0];
    if (images->numel == 0) { /* nothing to transform, so nothing drawn */
        const tg_affine identity = {.scale = 1.0f};
        return tg_data_affine(images, &identity, 1, fill);
    }
    tg_affine *t = malloc(sizeof *t * (size_t)n);
    if (!t) {
        tg_set_error(TG_ERR_NOMEM, "%s: out of memory for %lld transforms", fn, (long long)n);
        return NULL;
    }
    for (int64_t i = 0; i < n; i++) {
        /* Always four draws, in this order: the stream does not depend on the ranges. */
        t[i].angle = draw(rng, -r->max_angle, r->max_angle);
        t[i].scale = draw(rng, r->min_scale, r->max_scale);
        t[i].dx = draw(rng, -r->max_shift, r->max_shift);
        t[i].dy = draw(rng, -r->max_shift, r->max_shift);
    }
    tg_tensor *out = tg_data_affine(images, t, n, fill);
    free(t);
    return out;
}
