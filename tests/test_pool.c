/* Pooling and upsampling: PyTorch goldens, hand-computed examples, error messages, and
 * agreement between 1 and 2 threads. (Gradients are also gradchecked from the op tables.) */
#include "common.h"

#include "../tensor/internal.h" /* tg_upsample_short_rows: both column passes */
#include "../tensor/isa.h"      /* tg_isa_level: every instruction set level */
#include "golden/pool_golden.h"

#include <stdio.h>
#include <stdlib.h>

/* OP_AVG_POOL_EXCL: avg pool with count_include_pad = false. */
typedef enum { OP_MAX_POOL, OP_AVG_POOL, OP_AVG_POOL_EXCL, OP_UPSAMPLE } op_kind;

/* One op application: pools use (kernel, stride, padding), upsample uses (scale, mode). */
typedef struct {
    op_kind kind;
    int a, b, c;
} op_spec;

static tg_tensor *run_op(op_spec s, tg_tensor *x)
{
    switch (s.kind) {
    case OP_MAX_POOL: return tg_max_pool2d(x, s.a, s.b, s.c);
    case OP_AVG_POOL: return tg_avg_pool2d(x, s.a, s.b, s.c, true);
    case OP_AVG_POOL_EXCL: return tg_avg_pool2d(x, s.a, s.b, s.c, false);
    case OP_UPSAMPLE: return tg_upsample(x, s.a, (tg_upsample_mode)s.b);
    }
    return NULL;
}

/* A [N,C,H,W] leaf holding a copy of data, requiring grad. */
static tg_tensor *leaf4(const int64_t shape[4], const float *data)
{
    tg_tensor *t = tg_tensor_from_data(4, shape, data);
    assert_non_null(t);
    assert_int_equal(tg_tensor_set_requires_grad(t, true), TG_OK);
    return t;
}

/* Every element within 1e-5 + 1e-4 |want|. */
static void assert_all_close(const char *what, const float *got, const float *want, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        if (!(fabsf(got[i] - want[i]) <= 1e-5f + 1e-4f * fabsf(want[i])))
            fail_msg("%s: element %lld is %.8g, expected %.8g", what, (long long)i, got[i],
                     want[i]);
    }
}

/* ---- goldens from PyTorch (tests/golden/gen_pool.py) -------------------------------------- */

typedef struct {
    const char *name;
    op_spec op;
    const float *x;
    int64_t x_shape[4];
    const float *dy, *y, *dx;
    int64_t y_shape[4];
} golden_case;

#define POOL_X                                                                                     \
    golden_pool_x,                                                                                 \
    {                                                                                              \
        2, 3, 7, 6                                                                                 \
    }
#define UP_X                                                                                       \
    golden_up_x,                                                                                   \
    {                                                                                              \
        1, 2, 5, 4                                                                                 \
    }
#define UP3_X                                                                                      \
    golden_up3_x,                                                                                  \
    {                                                                                              \
        1, 1, 3, 4                                                                                 \
    }
#define GOLDEN(name) golden_##name##_dy, golden_##name##_y, golden_##name##_dx

static const golden_case goldens[] = {
    {"max_k2s2", {OP_MAX_POOL, 2, 2, 0}, POOL_X, GOLDEN(max_k2s2), {2, 3, 3, 3}},
    {"max_k3s2p1", {OP_MAX_POOL, 3, 2, 1}, POOL_X, GOLDEN(max_k3s2p1), {2, 3, 4, 3}},
    {"avg_k3s2p1", {OP_AVG_POOL, 3, 2, 1}, POOL_X, GOLDEN(avg_k3s2p1), {2, 3, 4, 3}},
    {"nearest_x2",
     {OP_UPSAMPLE, 2, TG_UPSAMPLE_NEAREST, 0},
     UP_X,
     GOLDEN(nearest_x2),
     {1, 2, 10, 8}},
    {"aligned_x2",
     {OP_UPSAMPLE, 2, TG_UPSAMPLE_BILINEAR_ALIGN_CORNERS, 0},
     UP_X,
     GOLDEN(aligned_x2),
     {1, 2, 10, 8}},
    {"half_pixel_x2",
     {OP_UPSAMPLE, 2, TG_UPSAMPLE_BILINEAR_HALF_PIXEL, 0},
     UP_X,
     GOLDEN(half_pixel_x2),
     {1, 2, 10, 8}},
    {"aligned_x3",
     {OP_UPSAMPLE, 3, TG_UPSAMPLE_BILINEAR_ALIGN_CORNERS, 0},
     UP3_X,
     GOLDEN(aligned_x3),
     {1, 1, 9, 12}},
    {"half_pixel_x3",
     {OP_UPSAMPLE, 3, TG_UPSAMPLE_BILINEAR_HALF_PIXEL, 0},
     UP3_X,
     GOLDEN(half_pixel_x3),
     {1, 1, 9, 12}},
    {"avg_k3s2p1_excl", {OP_AVG_POOL_EXCL, 3, 2, 1}, POOL_X, GOLDEN(avg_k3s2p1_excl), {2, 3, 4, 3}},
    {"avg_k2s1p1_excl", {OP_AVG_POOL_EXCL, 2, 1, 1}, POOL_X, GOLDEN(avg_k2s1p1_excl), {2, 3, 8, 7}},
};
/* The upsampling goldens are entries 3 to 7, count_include_pad = false's the two after. */
#define GOLDEN_UPSAMPLE_END 8

static void check_golden(const golden_case *g)
{
    char what[96];
    tg_tensor *x = leaf4(g->x_shape, g->x);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = run_op(g->op, x);
    if (!y)
        fail_msg("%s: %s", g->name, tg_last_error());
    assert_int_equal(y->ndim, 4);
    for (int d = 0; d < 4; d++)
        assert_int_equal(y->shape[d], g->y_shape[d]);
    snprintf(what, sizeof what, "%s forward", g->name);
    assert_all_close(what, y->data, g->y, y->numel);
    tg_tensor *dy = tg_tensor_from_data(4, g->y_shape, g->dy);
    assert_int_equal(tg_backward_grad(y, dy), TG_OK);
    snprintf(what, sizeof what, "%s dx", g->name);
    assert_all_close(what, x->grad->data, g->dx, x->numel);
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_tensor_release(dy);
    tg_tensor_release(x);
}

static void test_golden_max_pool(void **state)
{
    (void)state;
    check_golden(&goldens[0]);
    check_golden(&goldens[1]);
}

static void test_golden_avg_pool(void **state)
{
    (void)state;
    check_golden(&goldens[2]);
}

/* count_include_pad = false (PaddlePaddle's exclusive), windows overlapping the padding. */
static void test_golden_avg_pool_exclude_pad(void **state)
{
    (void)state;
    check_golden(&goldens[GOLDEN_UPSAMPLE_END]);
    check_golden(&goldens[GOLDEN_UPSAMPLE_END + 1]);
}

static void test_golden_upsample(void **state)
{
    (void)state;
    for (size_t i = 3; i < GOLDEN_UPSAMPLE_END; i++)
        check_golden(&goldens[i]);
}

/* ---- hand-computed examples --------------------------------------------------------------- */

/* Runs op on x (shape xs), checks y against want_y (shape ys), backpropagates dy and checks
 * dx against want_dx, all within tol. */
static void check_small(op_spec op, const int64_t xs[4], const float *x_data, const int64_t ys[4],
                        const float *want_y, const float *dy_data, const float *want_dx, float tol)
{
    tg_tensor *x = leaf4(xs, x_data);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = run_op(op, x);
    if (!y)
        fail_msg("%s", tg_last_error());
    for (int d = 0; d < 4; d++)
        assert_int_equal(y->shape[d], ys[d]);
    for (int64_t i = 0; i < y->numel; i++)
        assert_close(y->data[i], want_y[i], tol);
    if (dy_data) {
        tg_tensor *dy = tg_tensor_from_data(4, ys, dy_data);
        assert_int_equal(tg_backward_grad(y, dy), TG_OK);
        for (int64_t i = 0; i < x->numel; i++)
            assert_close(x->grad->data[i], want_dx[i], tol);
        tg_tensor_release(dy);
    }
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_tensor_release(x);
}

static void test_max_pool_4x4(void **state)
{
    (void)state;
    const float x[16] = {1, 2, 5, 3, 4, 0, 1, 6, 7, 8, 2, 2, 9, 1, 3, 4};
    const float y[4] = {4, 6, 9, 4};
    const float dy[4] = {10, 20, 30, 40};
    const float dx[16] = {0, 0, 0, 0, 10, 0, 0, 20, 0, 0, 0, 0, 30, 0, 0, 40};
    check_small((op_spec){OP_MAX_POOL, 2, 2, 0}, (const int64_t[]){1, 1, 4, 4}, x,
                (const int64_t[]){1, 1, 2, 2}, y, dy, dx, 0);
}

/* k3 s2 p1 on 4x4: windows span rows/cols -1..1 and 1..3. Every value is negative, so zero
 * padding would give 0: padding must count as -inf. */
static void test_max_pool_padding_is_minus_inf(void **state)
{
    (void)state;
    const float x[16] = {-5, -6, -7, -8, -4, -3, -9, -9, -9, -9, -9, -1, -9, -2, -9, -9};
    const float y[4] = {-3, -3, -2, -1};
    const float dy[4] = {1, 2, 3, 4};
    /* Row and column 1 lie in two windows each: -3 is the maximum of two, and gets 1 + 2. */
    const float dx[16] = {0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 4, 0, 3, 0, 0};
    check_small((op_spec){OP_MAX_POOL, 3, 2, 1}, (const int64_t[]){1, 1, 4, 4}, x,
                (const int64_t[]){1, 1, 2, 2}, y, dy, dx, 0);
}

/* Equal values: the gradient goes to the first maximal element in row-major window order. */
static void test_max_pool_ties_go_to_first(void **state)
{
    (void)state;
    const float x[8] = {1, 3, 3, 2, 3, 3, 0, 3};
    const float y[2] = {3, 3};
    const float dy[2] = {5, 7};
    const float dx[8] = {0, 5, 7, 0, 0, 0, 0, 0};
    check_small((op_spec){OP_MAX_POOL, 2, 2, 0}, (const int64_t[]){1, 1, 2, 4}, x,
                (const int64_t[]){1, 1, 1, 2}, y, dy, dx, 0);
}

static void test_max_pool_propagates_nan(void **state)
{
    (void)state;
    float x[4] = {1, NAN, 3, 2};
    tg_tensor *t = tg_tensor_from_data(TG_DIMS(1, 1, 2, 2), x);
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *y = tg_max_pool2d(t, 2, 2, 0);
    assert_non_null(y);
    assert_true(isnan(y->data[0]));
    tg_tape_end(tape);
    tg_tensor_release(t);
}

/* 2 x 2 windows at stride 2 without padding (the GAN's pooling, computed eight windows at a
 * time): y and dx against a window-at-a-time reference, on rows of 1 to 16 windows (full and
 * partial blocks of eight, odd sizes that leave a row or column out), with ties (values from a
 * set of five), NaNs (the last in window order wins), and -inf. */
static void test_max_pool_2x2_blocks(void **state)
{
    (void)state;
    static const int64_t sizes[][2] = {{2, 2}, {3, 5}, {4, 16}, {5, 17}, {8, 33}, {2, 32}};
    tg_rng rng;
    tg_rng_seed(&rng, 7);
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        const int64_t P = 3, H = sizes[s][0], W = sizes[s][1], Ho = H / 2, Wo = W / 2;
        tg_tensor *x = tg_tensor_new(TG_DIMS(1, P, H, W)),
                  *dy = tg_tensor_new(TG_DIMS(1, P, Ho, Wo));
        for (int64_t i = 0; i < x->numel; i++) {
            const uint32_t r = tg_rng_u32(&rng) % 40;
            x->data[i] = r == 0 ? NAN : r == 1 ? -INFINITY : (float)(r % 5);
        }
        for (int64_t i = 0; i < dy->numel; i++)
            dy->data[i] = (float)(i + 1);
        assert_int_equal(tg_tensor_set_requires_grad(x, true), TG_OK);
        tg_tape *tape = tg_tape_begin(TG_GRAD);
        tg_tensor *y = tg_max_pool2d(x, 2, 2, 0);
        assert_non_null(y);
        assert_int_equal(tg_backward_grad(y, dy), TG_OK);
        float *want_dx = calloc((size_t)x->numel, sizeof(float));
        for (int64_t p = 0; p < P; p++)
            for (int64_t oh = 0; oh < Ho; oh++)
                for (int64_t ow = 0; ow < Wo; ow++) {
                    int64_t best = -1;
                    for (int64_t k = 0; k < 4; k++) { /* row-major window order */
                        const int64_t at = (p * H + 2 * oh + k / 2) * W + 2 * ow + k % 2;
                        if (best < 0 || x->data[at] > x->data[best])
                            best = at;
                    }
                    for (int64_t k = 0; k < 4; k++) {
                        const int64_t at = (p * H + 2 * oh + k / 2) * W + 2 * ow + k % 2;
                        if (isnan(x->data[at]))
                            best = at;
                    }
                    const int64_t o = (p * Ho + oh) * Wo + ow;
                    const float got = y->data[o], want = x->data[best];
                    if (!(got == want || (isnan(got) && isnan(want))))
                        fail_msg("[%lld x %lld] plane %lld window (%lld, %lld): y %g, expected %g",
                                 (long long)H, (long long)W, (long long)p, (long long)oh,
                                 (long long)ow, (double)got, (double)want);
                    want_dx[best] += dy->data[o];
                }
        for (int64_t i = 0; i < x->numel; i++)
            if (x->grad->data[i] != want_dx[i])
                fail_msg("[%lld x %lld] dx[%lld] = %g, expected %g", (long long)H, (long long)W,
                         (long long)i, (double)x->grad->data[i], (double)want_dx[i]);
        free(want_dx);
        assert_int_equal(tg_tape_end(tape), TG_OK);
        tg_tensor_release(x);
        tg_tensor_release(dy);
    }
}

static void test_avg_pool_4x4(void **state)
{
    (void)state;
    float x[16];
    for (int i = 0; i < 16; i++)
        x[i] = (float)i;
    const float y[4] = {2.5f, 4.5f, 10.5f, 12.5f};
    const float dy[4] = {4, 8, 12, 16};
    const float dx[16] = {1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4};
    check_small((op_spec){OP_AVG_POOL, 2, 2, 0}, (const int64_t[]){1, 1, 4, 4}, x,
                (const int64_t[]){1, 1, 2, 2}, y, dy, dx, 1e-6f);
}

/* count_include_pad: a 3x3 window over a 2x2 input padded by 1 divides by 9, not by 4. */
static void test_avg_pool_counts_padding(void **state)
{
    (void)state;
    const float x[4] = {1, 2, 3, 4};
    const float y[4] = {10 / 9.0f, 10 / 9.0f, 10 / 9.0f, 10 / 9.0f};
    const float dy[4] = {9, 9, 9, 9};
    const float dx[4] = {4, 4, 4, 4};
    check_small((op_spec){OP_AVG_POOL, 3, 1, 1}, (const int64_t[]){1, 1, 2, 2}, x,
                (const int64_t[]){1, 1, 2, 2}, y, dy, dx, 1e-6f);
}

/* count_include_pad = false: windows divide by the real pixels they cover. Every 3x3 window
 * over the 2x2 input padded by 1 covers its four pixels, so each output is their mean, 2.5
 * (10/9 with the padding counted, above), and each pixel gets dy / 4 from every window. */
static void test_avg_pool_excludes_padding(void **state)
{
    (void)state;
    const float x[4] = {1, 2, 3, 4};
    const float y[4] = {2.5f, 2.5f, 2.5f, 2.5f};
    const float dy[4] = {4, 8, 12, 16};
    const float dx[4] = {10, 10, 10, 10};
    check_small((op_spec){OP_AVG_POOL_EXCL, 3, 1, 1}, (const int64_t[]){1, 1, 2, 2}, x,
                (const int64_t[]){1, 1, 2, 2}, y, dy, dx, 1e-6f);
    /* Kernel 2, stride 1, padding 1 on a 1x3 row: the windows cover 1, 2, 2 and 1 pixels, in
     * each of the two output rows: y = [1, 1.5, 2.5, 3] twice. With dy = 1, x[0] gets
     * 1 + 1/2 per row, x[1] 1/2 + 1/2, x[2] 1/2 + 1. */
    const float r[3] = {1, 2, 3};
    const float ry[8] = {1, 1.5f, 2.5f, 3, 1, 1.5f, 2.5f, 3};
    const float rdy[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    const float rdx[3] = {3, 2, 3};
    check_small((op_spec){OP_AVG_POOL_EXCL, 2, 1, 1}, (const int64_t[]){1, 1, 1, 3}, r,
                (const int64_t[]){1, 1, 2, 4}, ry, rdy, rdx, 1e-6f);
}

/* Aligned corners, 2x2 -> 4x4: source positions are o/3, so a ramp x[h,w] = 2h + w becomes
 * y[oh,ow] = (2 oh + ow) / 3, and the corners are copied exactly. */
static void test_bilinear_aligned_thirds(void **state)
{
    (void)state;
    const float x[4] = {0, 1, 2, 3};
    float y[16];
    for (int oh = 0; oh < 4; oh++)
        for (int ow = 0; ow < 4; ow++)
            y[oh * 4 + ow] = (2.0f * oh + ow) / 3.0f;
    /* dy = 1 everywhere: each input gets the sum of its weights, which along each axis are
     * 1, 2/3, 1/3 and 0 (or the mirror), summing to 2: 2 x 2 = 4. */
    float dy[16], dx[4] = {4, 4, 4, 4};
    for (int i = 0; i < 16; i++)
        dy[i] = 1;
    check_small((op_spec){OP_UPSAMPLE, 2, TG_UPSAMPLE_BILINEAR_ALIGN_CORNERS, 0},
                (const int64_t[]){1, 1, 2, 2}, x, (const int64_t[]){1, 1, 4, 4}, y, dy, dx, 1e-6f);
}

/* Half pixel, 1x2 -> 2x4: source columns (o + 0.5)/2 - 0.5 = -0.25 (clamped to 0), 0.25, 0.75,
 * 1.25 (the last element, alone); rows -0.25 -> 0 and 0.25 -> 0 of a single input row. */
static void test_bilinear_half_pixel_edges(void **state)
{
    (void)state;
    const float x[2] = {0, 4};
    const float y[8] = {0, 1, 3, 4, 0, 1, 3, 4};
    const float dy[8] = {1, 1, 1, 1, 0, 0, 0, 2};
    /* Column weights to x[0]: 1, 0.75, 0.25, 0; to x[1]: 0, 0.25, 0.75, 1. */
    const float dx[2] = {2, 4};
    check_small((op_spec){OP_UPSAMPLE, 2, TG_UPSAMPLE_BILINEAR_HALF_PIXEL, 0},
                (const int64_t[]){1, 1, 1, 2}, x, (const int64_t[]){1, 1, 2, 4}, y, dy, dx, 1e-6f);
}

static void test_nearest_x2(void **state)
{
    (void)state;
    const float x[4] = {1, 2, 3, 4};
    const float y[16] = {1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4};
    float dy[16], dx[4] = {0, 0, 0, 0};
    for (int i = 0; i < 16; i++) {
        dy[i] = (float)i;
        dx[(i / 4 / 2) * 2 + (i % 4) / 2] += (float)i;
    }
    check_small((op_spec){OP_UPSAMPLE, 2, TG_UPSAMPLE_NEAREST, 0}, (const int64_t[]){1, 1, 2, 2}, x,
                (const int64_t[]){1, 1, 4, 4}, y, dy, dx, 0);
}

/* Scale 1 is the identity in every mode. */
static void test_upsample_scale_one(void **state)
{
    (void)state;
    const float x[6] = {1, -2, 3, 0.5f, 7, -1};
    const float dy[6] = {1, 2, 3, 4, 5, 6};
    for (int mode = 0; mode < 3; mode++)
        check_small((op_spec){OP_UPSAMPLE, 1, mode, 0}, (const int64_t[]){1, 2, 1, 3}, x,
                    (const int64_t[]){1, 2, 1, 3}, x, dy, dy, 1e-7f);
}

/* A second backward on the same tape adds to the first (the kernels accumulate). */
static void test_backward_accumulates(void **state)
{
    (void)state;
    const op_spec ops[4] = {{OP_MAX_POOL, 2, 2, 0},
                            {OP_AVG_POOL, 3, 2, 1},
                            {OP_AVG_POOL_EXCL, 3, 2, 1},
                            {OP_UPSAMPLE, 2, TG_UPSAMPLE_BILINEAR_HALF_PIXEL, 0}};
    for (int k = 0; k < 4; k++) {
        tg_tensor *x = leaf4((const int64_t[]){2, 3, 7, 6}, golden_pool_x);
        tg_tape *tape = tg_tape_begin(TG_GRAD);
        tg_tensor *y = run_op(ops[k], x);
        assert_non_null(y);
        tg_tensor *dy = tg_tensor_full(y->ndim, y->shape, 0.5f);
        assert_int_equal(tg_backward_grad(y, dy), TG_OK);
        tg_tensor *first = tg_tensor_clone(x->grad);
        assert_int_equal(tg_backward_grad(y, dy), TG_OK);
        for (int64_t i = 0; i < x->numel; i++)
            assert_close(x->grad->data[i], 2 * first->data[i], 1e-6);
        tg_tape_end(tape);
        tg_tensor_release(first);
        tg_tensor_release(dy);
        tg_tensor_release(x);
    }
}

/* ---- upsampling against a reference --------------------------------------------------------- */

/* Output o of an axis of in -> out = in * s elements reads input i0 with weight w0 and i1 with
 * w1: PyTorch's source positions in float, as resize.c's tables (fma: as ref_fma), or
 * nearest's o / s. */
typedef struct {
    int64_t i0, i1;
    float w0, w1;
} ref_tap;

/* Whether the library's tables at this level compute with FMA (GCC contracts half pixel's
 * ratio * (o + 0.5) - 0.5 into one wherever the target has it): positions far from 0 then
 * round differently, by up to 1e-5 of the output at W = 300. */
static bool ref_fma(int isa)
{
#if TG_ISA_MULTI
    return isa > TG_ISA_BASELINE;
#elif defined(__FMA__)
    (void)isa;
    return true;
#else
    (void)isa;
    return false;
#endif
}

static ref_tap ref_lerp(int64_t o, int64_t in, int64_t out, int s, int mode, bool fma)
{
    if (mode == TG_UPSAMPLE_NEAREST)
        return (ref_tap){o / s, o / s, 1.0f, 0.0f};
    float src;
    if (mode == TG_UPSAMPLE_BILINEAR_ALIGN_CORNERS) {
        const float ratio = out > 1 ? (float)(in - 1) / (float)(out - 1) : 0.0f;
        src = ratio * (float)o;
    } else {
        const float ratio = 1.0f / (float)s;
        src = fmaxf(fma ? fmaf(ratio, (float)o + 0.5f, -0.5f) : ratio * ((float)o + 0.5f) - 0.5f,
                    0.0f);
    }
    const int64_t i0 = (int64_t)src < in - 1 ? (int64_t)src : in - 1;
    const float l = fminf(src - (float)i0, 1.0f);
    return (ref_tap){i0, i0 < in - 1 ? i0 + 1 : i0, 1.0f - l, l};
}

/* y (yf: in float, the four-tap formula in its order; yd: in double) and dx (in double, every
 * dy times the four weights) of x [P planes of H x W] upsampled by s. */
static void ref_upsample(int mode, int s, bool fma, int64_t P, int64_t H, int64_t W, const float *x,
                         const float *dy, float *yf, double *yd, double *dx)
{
    const int64_t Ho = H * s, Wo = W * s;
    memset(dx, 0, sizeof(double) * (size_t)(P * H * W));
    for (int64_t p = 0; p < P; p++)
        for (int64_t oh = 0; oh < Ho; oh++)
            for (int64_t ow = 0; ow < Wo; ow++) {
                const ref_tap r = ref_lerp(oh, H, Ho, s, mode, fma),
                              c = ref_lerp(ow, W, Wo, s, mode, fma);
                const float *a = x + (p * H + r.i0) * W, *b = x + (p * H + r.i1) * W;
                const int64_t o = (p * Ho + oh) * Wo + ow;
                yf[o] = r.w0 * (c.w0 * a[c.i0] + c.w1 * a[c.i1]) +
                        r.w1 * (c.w0 * b[c.i0] + c.w1 * b[c.i1]);
                yd[o] = (double)r.w0 * ((double)c.w0 * a[c.i0] + (double)c.w1 * a[c.i1]) +
                        (double)r.w1 * ((double)c.w0 * b[c.i0] + (double)c.w1 * b[c.i1]);
                double *da = dx + (p * H + r.i0) * W, *db = dx + (p * H + r.i1) * W;
                da[c.i0] += (double)r.w0 * c.w0 * dy[o];
                da[c.i1] += (double)r.w0 * c.w1 * dy[o];
                db[c.i0] += (double)r.w1 * c.w0 * dy[o];
                db[c.i1] += (double)r.w1 * c.w1 * dy[o];
            }
}

/* max |got - k want| <= tol max |k want| over n elements. */
static void assert_rel_close(const char *what, const float *got, const double *want, double k,
                             int64_t n, double tol)
{
    double m = 0, d = 0;
    for (int64_t i = 0; i < n; i++) {
        m = fmax(m, fabs(k * want[i]));
        d = fmax(d, fabs(got[i] - k * want[i]));
    }
    if (!(d <= tol * m))
        fail_msg("%s: differs by %.3g, %.3g of the largest magnitude %.3g", what, d, d / m, m);
}

/* The separable kernels (resize.c) against ref_upsample at every instruction set level, every
 * mode, scales 1 to 4: y bit for bit at the baseline level (no FMA: the same roundings),
 * within 1e-6 of the largest magnitude at the FMA levels, dx within 1e-6, fresh and then
 * accumulated; odd sizes, one row or column, widths beyond one column block (UP_BLOCK 256);
 * 1 and 2 threads bit for bit. */
static void test_upsample_reference(void **state)
{
    (void)state;
    static const int64_t shapes[][4] = {{2, 3, 5, 7},   {1, 1, 1, 1},   {1, 2, 1, 9},
                                        {1, 1, 9, 1},   {1, 1, 3, 300}, {1, 2, 4, 129},
                                        {3, 4, 5, 130}, {2, 8, 7, 7}};
    const int saved_isa = tg_isa_level, saved_threads = tg_get_num_threads();
    tg_rng rng;
    tg_rng_seed(&rng, 11);
    for (int isa = TG_ISA_BASELINE; isa <= saved_isa; isa++)
        for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
            for (int mode = 0; mode < 3; mode++)
                for (int s = 1; s <= 4; s++) {
                    tg_isa_level = isa;
                    const int64_t *xs = shapes[k], P = xs[0] * xs[1], H = xs[2], W = xs[3];
                    tg_tensor *x = tg_tensor_new(4, xs);
                    tg_tensor_normal_(x, &rng, 0.0f, 1.0f);
                    const int64_t ys[4] = {xs[0], xs[1], H * s, W * s}, ny = P * ys[2] * ys[3];
                    tg_tensor *dy = tg_tensor_new(4, ys);
                    tg_tensor_uniform_(dy, &rng, -1.0f, 1.0f);
                    float *yf = malloc(sizeof(float) * (size_t)ny);
                    double *yd = malloc(sizeof(double) * (size_t)ny),
                           *dx = malloc(sizeof(double) * (size_t)x->numel);
                    ref_upsample(mode, s, ref_fma(isa), P, H, W, x->data, dy->data, yf, yd, dx);
                    char what[96];
                    snprintf(what, sizeof what, "isa %d, x [%lld, %lld, %lld, %lld], mode %d, x%d",
                             isa, (long long)xs[0], (long long)xs[1], (long long)H, (long long)W,
                             mode, s);
                    tg_tensor *y1 = NULL, *dx1 = NULL;
                    for (int threads = 1; threads <= 2; threads++) {
                        /* 2 threads where the machine has them (see run_threads) */
                        const int team = threads < tg_get_num_cpus() ? threads : tg_get_num_cpus();
                        assert_int_equal(tg_set_num_threads(team), TG_OK);
                        tg_tensor *xl = tg_tensor_clone(x);
                        assert_int_equal(tg_tensor_set_requires_grad(xl, true), TG_OK);
                        tg_tape *tape = tg_tape_begin(TG_GRAD);
                        tg_tensor *y = tg_upsample(xl, s, (tg_upsample_mode)mode);
                        assert_non_null(y);
#if TG_ISA_MULTI
                        if (isa == TG_ISA_BASELINE &&
                            memcmp(y->data, yf, sizeof(float) * (size_t)ny) != 0)
                            fail_msg("%s: y is not the four-tap formula's bit for bit", what);
#endif
                        assert_rel_close(what, y->data, yd, 1, ny, 1e-6);
                        assert_int_equal(tg_backward_grad(y, dy), TG_OK); /* fresh */
                        assert_rel_close(what, xl->grad->data, dx, 1, x->numel, 1e-6);
                        assert_int_equal(tg_backward_grad(y, dy), TG_OK); /* accumulated */
                        assert_rel_close(what, xl->grad->data, dx, 2, x->numel, 1e-6);
                        if (y1) {
                            if (memcmp(y->data, y1->data, sizeof(float) * (size_t)ny) != 0 ||
                                memcmp(xl->grad->data, dx1->data,
                                       sizeof(float) * (size_t)x->numel) != 0)
                                fail_msg("%s: 1 and 2 threads differ", what);
                        } else {
                            y1 = tg_tensor_clone(y);
                            dx1 = tg_tensor_clone(xl->grad);
                        }
                        assert_int_equal(tg_tape_end(tape), TG_OK);
                        tg_tensor_release(xl);
                    }
                    tg_tensor_release(y1);
                    tg_tensor_release(dx1);
                    free(yf);
                    free(yd);
                    free(dx);
                    tg_tensor_release(dy);
                    tg_tensor_release(x);
                }
    tg_isa_level = saved_isa;
    tg_set_num_threads(saved_threads);
}

/* The column passes of short rows (resize.c's col_plan: rows of at most 32 inputs, and 32
 * outputs for the scatter) against the scalar loops, bit for bit: y, a fresh dx and an
 * accumulated one, every mode, scales 1 to 4, sizes on both sides of the limits. */
static void test_upsample_short_rows_bits(void **state)
{
    (void)state;
    static const int64_t shapes[][4] = {{2, 3, 7, 7},  {1, 2, 14, 14}, {1, 1, 3, 16}, {1, 2, 5, 17},
                                        {2, 1, 4, 31}, {1, 1, 2, 32},  {1, 1, 2, 33}, {1, 1, 1, 1}};
    tg_rng rng;
    tg_rng_seed(&rng, 12);
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
        for (int mode = 1; mode < 3; mode++)
            for (int s = 1; s <= 4; s++) {
                const int64_t *xs = shapes[k], ys[4] = {xs[0], xs[1], xs[2] * s, xs[3] * s};
                tg_tensor *x = tg_tensor_new(4, xs), *dy = tg_tensor_new(4, ys);
                tg_tensor_normal_(x, &rng, 0.0f, 1.0f);
                tg_tensor_uniform_(dy, &rng, -1.0f, 1.0f);
                assert_int_equal(tg_tensor_set_requires_grad(x, true), TG_OK);
                tg_tensor *got[2][3]; /* y, the fresh dx, the accumulated dx */
                for (int vec = 0; vec < 2; vec++) {
                    tg_upsample_short_rows = vec;
                    tg_tape *tape = tg_tape_begin(TG_GRAD);
                    tg_tensor *y = tg_upsample(x, s, (tg_upsample_mode)mode);
                    assert_non_null(y);
                    got[vec][0] = tg_tensor_clone(y);
                    assert_int_equal(tg_backward_grad(y, dy), TG_OK);
                    got[vec][1] = tg_tensor_clone(x->grad);
                    assert_int_equal(tg_backward_grad(y, dy), TG_OK);
                    got[vec][2] = tg_tensor_clone(x->grad);
                    tg_tensor_zero_grad(x);
                    assert_int_equal(tg_tape_end(tape), TG_OK);
                }
                tg_upsample_short_rows = 1;
                for (int t = 0; t < 3; t++) {
                    if (memcmp(got[0][t]->data, got[1][t]->data,
                               sizeof(float) * (size_t)got[0][t]->numel) != 0)
                        fail_msg("x [%lld, %lld, %lld, %lld], mode %d, x%d: %s differs",
                                 (long long)xs[0], (long long)xs[1], (long long)xs[2],
                                 (long long)xs[3], mode, s,
                                 t == 0   ? "y"
                                 : t == 1 ? "the fresh dx"
                                          : "the accumulated dx");
                    tg_tensor_release(got[0][t]);
                    tg_tensor_release(got[1][t]);
                }
                tg_tensor_release(x);
                tg_tensor_release(dy);
            }
}

/* ---- errors ------------------------------------------------------------------------------- */

/* op on a tensor of the given shape must fail with status and a message containing msg. */
static void expect_error(op_spec op, int ndim, const int64_t *shape, tg_status status,
                         const char *msg)
{
    tg_tensor *x = tg_tensor_zeros(ndim, shape);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_clear_error();
    assert_null(run_op(op, x));
    assert_int_equal(tg_last_status(), status);
    assert_error_contains(msg);
    tg_tape_end(tape);
    tg_tensor_release(x);
}

static void test_errors(void **state)
{
    (void)state;
    const int64_t s3[3] = {2, 3, 4}, s4[4] = {1, 2, 5, 5}, tiny[4] = {1, 1, 2, 2};
    expect_error((op_spec){OP_MAX_POOL, 2, 2, 0}, 3, s3, TG_ERR_SHAPE,
                 "tg_max_pool2d: x [2, 3, 4] must be 4-D [N, C, H, W]");
    expect_error((op_spec){OP_AVG_POOL, 2, 2, 0}, 3, s3, TG_ERR_SHAPE,
                 "tg_avg_pool2d: x [2, 3, 4] must be 4-D");
    expect_error((op_spec){OP_MAX_POOL, 0, 1, 0}, 4, s4, TG_ERR_ARG,
                 "tg_max_pool2d: kernel 0 must be >= 1");
    expect_error((op_spec){OP_AVG_POOL, 2, 0, 0}, 4, s4, TG_ERR_ARG,
                 "tg_avg_pool2d: stride 0 must be >= 1");
    expect_error((op_spec){OP_MAX_POOL, 3, 1, 2}, 4, s4, TG_ERR_ARG,
                 "tg_max_pool2d: padding 2 must be in 0..kernel/2 = 1 (kernel 3)");
    expect_error((op_spec){OP_AVG_POOL, 3, 1, -1}, 4, s4, TG_ERR_ARG,
                 "tg_avg_pool2d: padding -1 must be in 0..kernel/2 = 1 (kernel 3)");
    expect_error((op_spec){OP_MAX_POOL, 3, 1, 0}, 4, tiny, TG_ERR_SHAPE,
                 "tg_max_pool2d: x [1, 1, 2, 2] with kernel 3, stride 1, padding 0: the padded "
                 "input 2 x 2 is smaller than the kernel");
    /* Kernel 6 on 3 + 2 padding, stride 4: (5 - 6) / 4 + 1 truncates to 1, yet it is empty. */
    expect_error((op_spec){OP_AVG_POOL, 6, 4, 1}, 4, (const int64_t[]){1, 1, 3, 9}, TG_ERR_SHAPE,
                 "the padded input 5 x 11 is smaller than the kernel");
    expect_error((op_spec){OP_MAX_POOL, 1, 1, 0}, 4, (const int64_t[]){1, 1, 0, 3}, TG_ERR_SHAPE,
                 "tg_max_pool2d: x [1, 1, 0, 3]: H and W must be at least 1");
    expect_error((op_spec){OP_UPSAMPLE, 2, 0, 0}, 3, s3, TG_ERR_SHAPE,
                 "tg_upsample: x [2, 3, 4] must be 4-D [N, C, H, W]");
    expect_error((op_spec){OP_UPSAMPLE, 0, TG_UPSAMPLE_NEAREST, 0}, 4, s4, TG_ERR_ARG,
                 "tg_upsample: scale 0 must be >= 1");
    expect_error((op_spec){OP_UPSAMPLE, 2, 7, 0}, 4, s4, TG_ERR_ARG,
                 "tg_upsample: mode 7 is not a tg_upsample_mode");
    expect_error((op_spec){OP_UPSAMPLE, 2, TG_UPSAMPLE_BILINEAR_HALF_PIXEL, 0}, 4,
                 (const int64_t[]){1, 1, 3, 0}, TG_ERR_SHAPE,
                 "tg_upsample: x [1, 1, 3, 0] with scale 2: H and W must be at least 1, or "
                 "the output would be empty");
}

/* A NULL input keeps the earlier error (the chain rule of errors). */
static void test_null_input_keeps_error(void **state)
{
    (void)state;
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *x = tg_tensor_zeros(TG_DIMS(1, 1, 2, 2));
    tg_tensor *y = tg_upsample(tg_max_pool2d(x, 5, 1, 0), 2, TG_UPSAMPLE_NEAREST);
    assert_null(tg_avg_pool2d(y, 2, 2, 0, true));
    assert_error_contains("tg_max_pool2d:");
    tg_tape_end(tape);
    tg_tensor_release(x);
}

/* ---- threads ------------------------------------------------------------------------------ */

/* y and dx of op on x with the given thread count; copies returned (caller releases). */
static void run_threads(op_spec op, const tg_tensor *x0, int threads, tg_tensor **y_out,
                        tg_tensor **dx_out)
{
    /* 2 threads where the machine has them (tg_set_num_threads refuses more than its CPUs) */
    if (threads > tg_get_num_cpus())
        threads = tg_get_num_cpus();
    assert_int_equal(tg_set_num_threads(threads), TG_OK);
    tg_tensor *x = tg_tensor_clone(x0);
    tg_tensor_set_requires_grad(x, true);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = run_op(op, x);
    assert_non_null(y);
    tg_tensor *dy = tg_tensor_new(y->ndim, y->shape);
    tg_rng rng;
    tg_rng_seed(&rng, 7);
    tg_tensor_uniform_(dy, &rng, -1.0f, 1.0f);
    assert_int_equal(tg_backward_grad(y, dy), TG_OK);
    *y_out = tg_tensor_clone(y);
    *dx_out = tg_tensor_clone(x->grad);
    tg_tape_end(tape);
    tg_tensor_release(dy);
    tg_tensor_release(x);
}

/* Each plane is computed the same way whichever thread runs it: results are bit-identical. */
static void test_threads_agree(void **state)
{
    (void)state;
    const op_spec ops[] = {{OP_MAX_POOL, 2, 2, 0},
                           {OP_MAX_POOL, 3, 1, 1},
                           {OP_AVG_POOL, 3, 2, 1},
                           {OP_AVG_POOL_EXCL, 3, 2, 1},
                           {OP_UPSAMPLE, 2, TG_UPSAMPLE_NEAREST, 0},
                           {OP_UPSAMPLE, 2, TG_UPSAMPLE_BILINEAR_ALIGN_CORNERS, 0},
                           {OP_UPSAMPLE, 2, TG_UPSAMPLE_BILINEAR_HALF_PIXEL, 0}};
    /* 32 planes of 64x64: far above the parallel threshold. */
    tg_tensor *x = tg_tensor_new(TG_DIMS(4, 8, 64, 64));
    tg_rng rng;
    tg_rng_seed(&rng, 3);
    tg_tensor_normal_(x, &rng, 0.0f, 1.0f);
    int saved = tg_get_num_threads();
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
        tg_tensor *y1, *dx1, *y2, *dx2;
        run_threads(ops[k], x, 1, &y1, &dx1);
        run_threads(ops[k], x, 2, &y2, &dx2);
        assert_true(tg_shape_equal(y1, y2));
        if (memcmp(y1->data, y2->data, (size_t)y1->numel * sizeof(float)) != 0)
            fail_msg("op %zu: forward differs between 1 and 2 threads", k);
        if (memcmp(dx1->data, dx2->data, (size_t)dx1->numel * sizeof(float)) != 0)
            fail_msg("op %zu: dx differs between 1 and 2 threads", k);
        tg_tensor_release(y1);
        tg_tensor_release(dx1);
        tg_tensor_release(y2);
        tg_tensor_release(dx2);
    }
    tg_set_num_threads(saved);
    tg_tensor_release(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TG_TEST(test_golden_max_pool),
        TG_TEST(test_golden_avg_pool),
        TG_TEST(test_golden_avg_pool_exclude_pad),
        TG_TEST(test_golden_upsample),
        TG_TEST(test_max_pool_4x4),
        TG_TEST(test_max_pool_padding_is_minus_inf),
        TG_TEST(test_max_pool_ties_go_to_first),
        TG_TEST(test_max_pool_propagates_nan),
        TG_TEST(test_max_pool_2x2_blocks),
        TG_TEST(test_avg_pool_4x4),
        TG_TEST(test_avg_pool_counts_padding),
        TG_TEST(test_avg_pool_excludes_padding),
        TG_TEST(test_bilinear_aligned_thirds),
        TG_TEST(test_bilinear_half_pixel_edges),
        TG_TEST(test_nearest_x2),
        TG_TEST(test_upsample_scale_one),
        TG_TEST(test_backward_accumulates),
        TG_TEST(test_upsample_reference),
        TG_TEST(test_upsample_short_rows_bits),
        TG_TEST(test_errors),
        TG_TEST(test_null_input_keeps_error),
        TG_TEST(test_threads_agree),
    };
    return cmocka_run_group_tests_name("pool", tests, NULL, NULL);
}
