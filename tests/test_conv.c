/* conv2d and conv_transpose2d: forward and gradients against PyTorch (golden/conv_golden.h),
 * argument errors, batch chunking against one image at a time and a direct formula, equal
 * results at 1 and 2 threads, and a second backward on the same tape; all with the Winograd
 * path off (tests/test_winograd.c compares it against these). */
#include "common.h"

#include "../autograd/internal.h"
#include "golden/conv_golden.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Relative tolerance against PyTorch, with a floor for values near 0 (docs/design.md,
 * section 5). */
#define RTOL 1e-4
#define ATOL 1e-5

/* Elementwise |got - want| <= atol + rtol |want| over n floats. */
static void check_close(const float *got, const float *want, int64_t n, double rtol, double atol,
                        const char *what)
{
    for (int64_t i = 0; i < n; i++) {
        double g = got[i], w = want[i];
        if (!(fabs(g - w) <= atol + rtol * fabs(w)))
            fail_msg("%s[%lld] = %.8g, expected %.8g", what, (long long)i, g, w);
    }
}

static tg_tensor *tensor4(const int64_t shape[4], const float *data, bool grad)
{
    tg_tensor *t = data ? tg_tensor_from_data(4, shape, data) : tg_tensor_new(4, shape);
    assert_non_null(t);
    if (grad)
        assert_int_equal(tg_tensor_set_requires_grad(t, true), TG_OK);
    return t;
}

static tg_tensor *tensor1(int64_t n, const float *data, bool grad)
{
    tg_tensor *t = tg_tensor_from_data(1, &n, data);
    assert_non_null(t);
    if (grad)
        assert_int_equal(tg_tensor_set_requires_grad(t, true), TG_OK);
    return t;
}

static tg_tensor *apply_conv(bool transpose, tg_tensor *x, tg_tensor *w, tg_tensor *b, int stride,
                             int padding, int dilation, int output_padding)
{
    return transpose ? tg_conv_transpose2d(x, w, b, stride, padding, output_padding)
                     : tg_conv2d(x, w, b, stride, padding, dilation);
}

/* ---- goldens ------------------------------------------------------------------------------ */

/* One golden case, with gradients requested for x only (mask 1), for w and b only (mask 6),
 * or for all three (mask 7). */
static void run_golden(const conv_golden *g, unsigned mask)
{
    tg_tensor *x = tensor4(g->x_shape, g->x, mask & 1);
    tg_tensor *w = tensor4(g->w_shape, g->w, mask & 2);
    int64_t O = g->y_shape[1];
    tg_tensor *b = tensor1(O, g->b, mask & 4);
    tg_tensor *dy = tensor4(g->y_shape, g->dy, false);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y =
        apply_conv(g->transpose, x, w, b, g->stride, g->padding, g->dilation, g->output_padding);
    if (!y)
        fail_msg("%s: %s", g->name, tg_last_error());
    for (int d = 0; d < 4; d++)
        assert_int_equal(y->shape[d], g->y_shape[d]);
    check_close(y->data, g->y, y->numel, RTOL, ATOL, g->name);
    assert_int_equal(tg_backward_grad(y, dy), TG_OK);
    assert_int_equal(tg_tape_end(tape), TG_OK);

    char what[96];
    if (mask & 1) {
        snprintf(what, sizeof what, "%s dx", g->name);
        check_close(x->grad->data, g->dx, x->numel, RTOL, ATOL, what);
    } else {
        assert_null(x->grad);
    }
    if (mask & 2) {
        snprintf(what, sizeof what, "%s dw", g->name);
        check_close(w->grad->data, g->dw, w->numel, RTOL, ATOL, what);
    } else {
        assert_null(w->grad);
    }
    if (mask & 4) {
        snprintf(what, sizeof what, "%s db", g->name);
        check_close(b->grad->data, g->db, O, RTOL, ATOL, what);
    }
    tg_tensor_release(x);
    tg_tensor_release(w);
    tg_tensor_release(b);
    tg_tensor_release(dy);
}

static void golden_case(int i, const char *name)
{
    assert_string_equal(conv_goldens[i].name, name);
    run_golden(&conv_goldens[i], 7);
    run_golden(&conv_goldens[i], 1);
    run_golden(&conv_goldens[i], 6);
}

static void test_golden_conv2d_s2_p1(void **state)
{
    (void)state;
    golden_case(0, "conv2d_s2_p1");
}

static void test_golden_conv2d_dilation2(void **state)
{
    (void)state;
    golden_case(1, "conv2d_dil2");
}

static void test_golden_conv2d_one_output_channel(void **state)
{
    (void)state;
    golden_case(2, "conv2d_o1_k5_p2");
}

static void test_golden_convt_k4_s2_p1(void **state)
{
    (void)state;
    golden_case(3, "convt_k4_s2_p1");
}

static void test_golden_convt_k3_s2_p1_op1(void **state)
{
    (void)state;
    golden_case(4, "convt_k3_s2_p1_op1");
}

/* ---- errors ------------------------------------------------------------------------------- */

/* Runs conv2d / conv_transpose2d on zero-filled tensors of the given shapes (b_n 0: no bias)
 * and expects NULL with status and a message containing fragment. */
static void expect_error(bool transpose, int x_ndim, const int64_t *xs, const int64_t ws[4],
                         int64_t b_n, int stride, int padding, int dil_or_op, tg_status status,
                         const char *fragment)
{
    tg_tensor *x = tg_tensor_zeros(x_ndim, xs);
    tg_tensor *w = tg_tensor_zeros(4, ws);
    tg_tensor *b = b_n ? tg_tensor_zeros(1, &b_n) : TG_NONE;
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_clear_error();
    tg_tensor *y = transpose ? tg_conv_transpose2d(x, w, b, stride, padding, dil_or_op)
                             : tg_conv2d(x, w, b, stride, padding, dil_or_op);
    assert_null(y);
    assert_int_equal(tg_last_status(), status);
    assert_error_contains(fragment);
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_tensor_release(x);
    tg_tensor_release(w);
    tg_tensor_release(b);
}

static void test_conv2d_errors(void **state)
{
    (void)state;
    const int64_t x[4] = {8, 3, 28, 28};
    expect_error(false, 4, x, (const int64_t[]){64, 1, 5, 5}, 64, 1, 0, 1, TG_ERR_SHAPE,
                 "tg_conv2d: x [8, 3, 28, 28] has 3 channels but w [64, 1, 5, 5] expects 1");
    expect_error(false, 3, (const int64_t[]){3, 28, 28}, (const int64_t[]){64, 3, 5, 5}, 0, 1, 0, 1,
                 TG_ERR_SHAPE, "tg_conv2d: x [3, 28, 28] must be 4-D [N, C, H, W]");
    expect_error(false, 4, x, (const int64_t[]){64, 3, 5, 5}, 3, 1, 0, 1, TG_ERR_SHAPE,
                 "tg_conv2d: b [3] must be [64]");
    expect_error(false, 4, x, (const int64_t[]){64, 3, 5, 5}, 64, 0, 0, 1, TG_ERR_ARG,
                 "tg_conv2d: stride 0 must be at least 1");
    expect_error(false, 4, x, (const int64_t[]){64, 3, 5, 5}, 64, 1, -1, 1, TG_ERR_ARG,
                 "tg_conv2d: padding -1 must not be negative");
    expect_error(false, 4, x, (const int64_t[]){64, 3, 5, 5}, 64, 1, 0, 0, TG_ERR_ARG,
                 "tg_conv2d: dilation 0 must be at least 1");
    expect_error(false, 4, (const int64_t[]){1, 1, 3, 3}, (const int64_t[]){2, 1, 5, 5}, 0, 1, 0, 1,
                 TG_ERR_SHAPE,
                 "tg_conv2d: x [1, 1, 3, 3] with w [2, 1, 5, 5], stride 1, padding 0, "
                 "dilation 1 gives an output of -1 x -1");
    /* Dilation 2 makes a 3x3 kernel span 5x5: a 4x4 input is too small even with stride 2. */
    expect_error(false, 4, (const int64_t[]){1, 1, 4, 4}, (const int64_t[]){2, 1, 3, 3}, 0, 2, 0, 2,
                 TG_ERR_SHAPE, "gives an output of 0 x 0");
}

static void test_conv_transpose2d_errors(void **state)
{
    (void)state;
    const int64_t x[4] = {2, 3, 7, 7};
    expect_error(true, 4, x, (const int64_t[]){4, 2, 4, 4}, 2, 2, 1, 0, TG_ERR_SHAPE,
                 "tg_conv_transpose2d: x [2, 3, 7, 7] has 3 channels but w [4, 2, 4, 4] "
                 "expects 4");
    expect_error(true, 4, x, (const int64_t[]){3, 2, 4, 4}, 3, 2, 1, 0, TG_ERR_SHAPE,
                 "tg_conv_transpose2d: b [3] must be [2]");
    expect_error(true, 4, x, (const int64_t[]){3, 2, 4, 4}, 2, 2, 1, 2, TG_ERR_ARG,
                 "tg_conv_transpose2d: output_padding 2 must be smaller than stride 2");
    expect_error(true, 4, x, (const int64_t[]){3, 2, 4, 4}, 2, 1, 0, 1, TG_ERR_ARG,
                 "tg_conv_transpose2d: output_padding 1 must be smaller than stride 1");
    expect_error(true, 4, x, (const int64_t[]){3, 2, 4, 4}, 2, 0, 1, 0, TG_ERR_ARG,
                 "tg_conv_transpose2d: stride 0 must be at least 1");
    expect_error(true, 4, x, (const int64_t[]){3, 2, 4, 4}, 2, 2, -1, 0, TG_ERR_ARG,
                 "tg_conv_transpose2d: padding -1 must not be negative");
    expect_error(true, 4, (const int64_t[]){1, 1, 1, 1}, (const int64_t[]){1, 1, 1, 1}, 0, 1, 1, 0,
                 TG_ERR_SHAPE,
                 "tg_conv_transpose2d: x [1, 1, 1, 1] with w [1, 1, 1, 1], stride 1, "
                 "padding 1, output_padding 0 gives an output of -1 x -1");
}

/* A NULL input (an earlier failure) keeps that failure's message. */
static void test_null_input_keeps_error(void **state)
{
    (void)state;
    tg_tensor *w = tg_tensor_zeros(TG_DIMS(2, 1, 3, 3));
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_set_error(TG_ERR_IO, "earlier failure");
    assert_null(tg_conv2d(NULL, w, TG_NONE, 1, 0, 1));
    assert_null(tg_conv_transpose2d(NULL, w, TG_NONE, 1, 0, 0));
    assert_int_equal(tg_last_status(), TG_ERR_IO);
    assert_error_contains("earlier failure");
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_tensor_release(w);
}

/* A bias that is NULL because an earlier call failed is not "no bias" (issue 14: the conv used
 * to run without it): both convs fail and keep the failed call's error; a NULL with no error
 * pending names b and TG_NONE. */
static void test_null_bias_keeps_error(void **state)
{
    (void)state;
    tg_tensor *x = tg_tensor_zeros(TG_DIMS(1, 2, 4, 4)), *w = tg_tensor_zeros(TG_DIMS(2, 2, 3, 3));
    tg_tensor *b3 = tg_tensor_zeros(TG_DIMS(3));
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    for (int transpose = 0; transpose < 2; transpose++) {
        tg_clear_error();
        tg_tensor *bad = tg_reshape(b3, TG_DIMS(2, 2)); /* 3 values into [2, 2] */
        assert_null(bad);
        char want[160];
        snprintf(want, sizeof want, "%s", tg_last_error());
        assert_non_null(strstr(want, "tg_reshape"));
        assert_null(apply_conv(transpose, x, w, bad, 1, 1, 1, 0));
        if (strcmp(tg_last_error(), want) != 0)
            fail_msg("error \"%s\", expected the reshape's \"%s\"", tg_last_error(), want);
        tg_clear_error();
        assert_null(apply_conv(transpose, x, w, NULL, 1, 1, 1, 0));
        assert_int_equal(tg_last_status(), TG_ERR_ARG);
        assert_error_contains(transpose ? "tg_conv_transpose2d: b is NULL (pass TG_NONE for none)"
                                        : "tg_conv2d: b is NULL (pass TG_NONE for none)");
        /* TG_NONE: no bias. */
        assert_non_null(apply_conv(transpose, x, w, TG_NONE, 1, 1, 1, 0));
    }
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_tensor_release(x);
    tg_tensor_release(w);
    tg_tensor_release(b3);
}

/* ---- chunking ------------------------------------------------------------------------------ */

static void fill_uniform(tg_tensor *t, uint64_t seed)
{
    tg_rng rng;
    tg_rng_seed(&rng, seed);
    assert_int_equal(tg_tensor_uniform_(t, &rng, -1.0f, 1.0f), TG_OK);
}

/* y, dx, dw, db of one conv with upstream gradient dy (of y's shape); release with
 * conv_result_release. scratch_bytes (may be NULL) receives the node's working space. */
typedef struct {
    tg_tensor *y, *dx, *dw, *db;
} conv_result;

static conv_result conv_run(bool transpose, tg_tensor *x, tg_tensor *w, tg_tensor *b,
                            const tg_tensor *dy, int s, int p, int d_or_op, size_t *scratch_bytes)
{
    tg_tensor_zero_grad(x);
    tg_tensor_zero_grad(w);
    tg_tensor_zero_grad(b);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = apply_conv(transpose, x, w, b, s, p, d_or_op, d_or_op);
    if (!y)
        fail_msg("%s", tg_last_error());
    if (scratch_bytes)
        *scratch_bytes = y->node->scratch_bytes;
    conv_result r = {tg_tensor_retain(y), NULL, NULL, NULL};
    assert_int_equal(tg_backward_grad(y, dy), TG_OK);
    assert_int_equal(tg_tape_end(tape), TG_OK);
    r.dx = tg_tensor_clone(x->grad);
    r.dw = tg_tensor_clone(w->grad);
    r.db = tg_tensor_clone(b->grad);
    assert_true(r.dx && r.dw && r.db);
    return r;
}

static void conv_result_release(conv_result *r)
{
    tg_tensor_release(r->y);
    tg_tensor_release(r->dx);
    tg_tensor_release(r->dw);
    tg_tensor_release(r->db);
}

/* conv2d straight from its definition, in double, at one output element. */
static double direct_conv2d(const tg_tensor *x, const tg_tensor *w, const tg_tensor *b, int64_t n,
                            int64_t o, int64_t oh, int64_t ow, int s, int p, int d)
{
    const int64_t C = x->shape[1], H = x->shape[2], W = x->shape[3];
    const int64_t kh = w->shape[2], kw = w->shape[3];
    double acc = b->data[o];
    for (int64_t c = 0; c < C; c++)
        for (int64_t i = 0; i < kh; i++)
            for (int64_t j = 0; j < kw; j++) {
                int64_t ih = oh * s - p + i * d, iw = ow * s - p + j * d;
                if (ih >= 0 && ih < H && iw >= 0 && iw < W)
                    acc += (double)x->data[((n * C + c) * H + ih) * W + iw] *
                           w->data[((o * C + c) * kh + i) * kw + j];
            }
    return acc;
}

/* conv_transpose2d from its definition (every x pixel scatters w into y), in double, at one
 * output element: the x pixels (h, v) with h*s - p + i = hy, v*s - p + j = wy. */
static double direct_conv_transpose2d(const tg_tensor *x, const tg_tensor *w, const tg_tensor *b,
                                      int64_t n, int64_t o, int64_t hy, int64_t wy, int s, int p)
{
    const int64_t C = x->shape[1], H = x->shape[2], W = x->shape[3];
    const int64_t O = w->shape[1], kh = w->shape[2], kw = w->shape[3];
    double acc = b->data[o];
    for (int64_t c = 0; c < C; c++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t v = 0; v < W; v++) {
                int64_t i = hy - (h * s - p), j = wy - (v * s - p);
                if (i >= 0 && i < kh && j >= 0 && j < kw)
                    acc += (double)x->data[((n * C + c) * H + h) * W + v] *
                           w->data[((c * O + o) * kh + i) * kw + j];
            }
    return acc;
}

/* A batch of N images in several chunks gives what the images give one at a time (each a
 * chunk of one): y and dx image by image, dw and db summed over the images. Also checks a
 * few outputs against the direct formula, and that the working space is a chunk's, not the
 * batch's. */
static void check_chunking(bool transpose, const int64_t xs[4], const int64_t ws[4], int s, int p,
                           int d_or_op, int64_t chunk, bool staged)
{
    tg_tensor *x = tensor4(xs, NULL, true), *w = tensor4(ws, NULL, true);
    int64_t O = transpose ? ws[1] : ws[0], N = xs[0];
    tg_tensor *b = tg_tensor_new(1, &O);
    tg_tensor_set_requires_grad(b, true);
    fill_uniform(x, 1);
    fill_uniform(w, 2);
    fill_uniform(b, 3);

    /* The output shape, from a no-grad run. */
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *y0 = apply_conv(transpose, x, w, b, s, p, d_or_op, d_or_op);
    assert_non_null(y0);
    tg_tensor *dy = tg_tensor_new(4, y0->shape);
    tg_tape_end(tape);
    fill_uniform(dy, 4);

    size_t scratch = 0;
    conv_result all = conv_run(transpose, x, w, b, dy, s, p, d_or_op, &scratch);
    /* Columns of one image: Kc rows (image-side channels, w's axis 1 for both ops, times
     * kh * kw) by the flat plane (y's for conv2d, x's for conv_transpose2d). */
    int64_t Kc = ws[1] * ws[2] * ws[3], Co = transpose ? xs[1] : ws[0];
    int64_t P = transpose ? xs[2] * xs[3] : all.y->shape[2] * all.y->shape[3];
    /* Staged: cols rounded up to 16 floats, then the staging buffer [Co, chunk * P]. */
    int64_t want =
        staged ? ((Kc * chunk * P + 15) / 16 * 16 + Co * chunk * P) * 4 : Kc * chunk * P * 4;
    if ((int64_t)scratch != want)
        fail_msg("working space %zu bytes, expected %lld: chunks of %lld images (%s); has "
                 "conv.c's chunk rule changed?",
                 scratch, (long long)want, (long long)chunk, staged ? "staged" : "not staged");

    int64_t x_img = x->numel / N, y_img = all.y->numel / N;
    int64_t xs1[4] = {1, xs[1], xs[2], xs[3]}, ys1[4] = {1, 0, 0, 0};
    for (int dd = 1; dd < 4; dd++)
        ys1[dd] = all.y->shape[dd];
    double *dw_sum = calloc((size_t)w->numel, sizeof(double));
    double *db_sum = calloc((size_t)O, sizeof(double));
    for (int64_t n = 0; n < N; n++) {
        tg_tensor *xn = tensor4(xs1, x->data + n * x_img, true);
        tg_tensor *dyn = tensor4(ys1, dy->data + n * y_img, false);
        conv_result one = conv_run(transpose, xn, w, b, dyn, s, p, d_or_op, NULL);
        /* A chunk's GEMM has other shapes than one image's, so OpenBLAS blocks the sums of
         * up to K = 864 products differently; which kernels run (AVX2 or AVX-512, set by the
         * CPU or OPENBLAS_CORETYPE) changes the rounding too: seen up to 1.5e-5 absolute on
         * values of 0.09. A lost or misplaced chunk is off by whole terms, 1e-2 and more. */
        check_close(all.y->data + n * y_img, one.y->data, y_img, 1e-4, 1e-4, "y");
        check_close(all.dx->data + n * x_img, one.dx->data, x_img, 1e-4, 1e-4, "dx");
        for (int64_t e = 0; e < w->numel; e++)
            dw_sum[e] += one.dw->data[e];
        for (int64_t e = 0; e < O; e++)
            db_sum[e] += one.db->data[e];
        conv_result_release(&one);
        tg_tensor_release(xn);
        tg_tensor_release(dyn);
    }
    for (int64_t e = 0; e < w->numel; e++)
        if (!(fabs(all.dw->data[e] - dw_sum[e]) <= 1e-3 + 1e-4 * fabs(dw_sum[e])))
            fail_msg("dw[%lld] = %.8g, images one at a time give %.8g", (long long)e,
                     all.dw->data[e], dw_sum[e]);
    for (int64_t e = 0; e < O; e++)
        if (!(fabs(all.db->data[e] - db_sum[e]) <= 1e-3 + 1e-4 * fabs(db_sum[e])))
            fail_msg("db[%lld] = %.8g, images one at a time give %.8g", (long long)e,
                     all.db->data[e], db_sum[e]);

    /* Spot checks of y against the definition, in every image. */
    const int64_t *yshape = all.y->shape;
    for (int64_t k = 0; k < 40; k++) {
        int64_t n = k % N, o = (k * 7) % O, h = (k * 13) % yshape[2], v = (k * 29) % yshape[3];
        double want = transpose ? direct_conv_transpose2d(x, w, b, n, o, h, v, s, p)
                                : direct_conv2d(x, w, b, n, o, h, v, s, p, d_or_op);
        float got = all.y->data[((n * O + o) * yshape[2] + h) * yshape[3] + v];
        assert_close(got, want, 1e-4 + 1e-5 * fabs(want));
    }
    free(dw_sum);
    free(db_sum);
    conv_result_release(&all);
    tg_tensor_release(x);
    tg_tensor_release(w);
    tg_tensor_release(b);
    tg_tensor_release(dy);
}

/* The shapes below assume conv.c's 2 MB chunk budget and its staging rule (planes under 256
 * positions with at least 64 rows of columns); check_chunking fails if the working space
 * says otherwise. */

/* Columns of 72 x 52*52 floats (0.78 MB) an image, not staged: 2 images to a chunk, so 5
 * images run as 2 + 2 + 1, one GEMM per image. */
static void test_conv2d_chunking(void **state)
{
    (void)state;
    check_chunking(false, (const int64_t[]){5, 8, 52, 52}, (const int64_t[]){4, 8, 3, 3}, 1, 1, 1,
                   2, false);
}

/* Columns of 864 x 15*15 floats (0.78 MB) an image, staged: 2 images to a chunk, one GEMM
 * per chunk, and a last chunk of one image that is not staged. */
static void test_conv2d_chunking_staged(void **state)
{
    (void)state;
    check_chunking(false, (const int64_t[]){5, 96, 15, 15}, (const int64_t[]){4, 96, 3, 3}, 1, 1, 1,
                   2, true);
}

/* Columns of 128 x 30*30 floats (0.46 MB) an image, not staged: 4 images to a chunk, 7 images
 * run as 4 + 3. */
static void test_conv_transpose2d_chunking(void **state)
{
    (void)state;
    check_chunking(true, (const int64_t[]){7, 4, 30, 30}, (const int64_t[]){4, 8, 4, 4}, 2, 1, 0, 4,
                   false);
}

/* Columns of 800 x 15*15 floats (0.72 MB) an image, staged: 5 images run as 2 + 2 + 1. */
static void test_conv_transpose2d_chunking_staged(void **state)
{
    (void)state;
    check_chunking(true, (const int64_t[]){5, 4, 15, 15}, (const int64_t[]){4, 50, 4, 4}, 2, 1, 0,
                   2, true);
}

/* ---- threads and repeated backward ------------------------------------------------------ */

/* 1 and 2 threads agree: bit for bit in db (our own reduction), and to float rounding
 * elsewhere, because OpenBLAS's sgemm itself rounds differently when it splits a product
 * between threads (measured here: 11758 of the 51200 elements of a 32x1600x144 product differ
 * in the last bits). A race or a lost chunk would be off by whole terms. */
static void threads_agree(const tg_tensor *a, const tg_tensor *b, bool exact, const char *what)
{
    assert_true(tg_shape_equal(a, b));
    for (int64_t i = 0; i < a->numel; i++) {
        double d = fabs((double)a->data[i] - b->data[i]);
        if (exact ? d != 0 : !(d <= 1e-5 + 1e-5 * fabs(a->data[i])))
            fail_msg("%s[%lld]: %.9g at 1 thread, %.9g at 2", what, (long long)i, a->data[i],
                     b->data[i]);
    }
}

static void check_threads(bool transpose, const int64_t xs[4], const int64_t ws[4],
                          const int64_t ys[4], int s, int p, int d_or_op)
{
    tg_tensor *x = tensor4(xs, NULL, true), *w = tensor4(ws, NULL, true);
    int64_t O = ys[1];
    tg_tensor *b = tg_tensor_new(1, &O), *dy = tensor4(ys, NULL, false);
    tg_tensor_set_requires_grad(b, true);
    fill_uniform(x, 5);
    fill_uniform(w, 6);
    fill_uniform(b, 7);
    fill_uniform(dy, 8);
    int saved = tg_get_num_threads();
    tg_set_num_threads(1);
    conv_result r1 = conv_run(transpose, x, w, b, dy, s, p, d_or_op, NULL);
    tg_set_num_threads(2);
    conv_result r2 = conv_run(transpose, x, w, b, dy, s, p, d_or_op, NULL);
    tg_set_num_threads(saved);
    threads_agree(r1.y, r2.y, false, "y");
    threads_agree(r1.dx, r2.dx, false, "dx");
    threads_agree(r1.dw, r2.dw, false, "dw");
    threads_agree(r1.db, r2.db, true, "db");
    conv_result_release(&r1);
    conv_result_release(&r2);
    tg_tensor_release(x);
    tg_tensor_release(w);
    tg_tensor_release(b);
    tg_tensor_release(dy);
}

/* Big enough that the im2col/col2im loops and the GEMMs split between threads. */
static void test_threads_equal(void **state)
{
    (void)state;
    check_threads(false, (const int64_t[]){4, 16, 20, 20}, (const int64_t[]){32, 16, 3, 3},
                  (const int64_t[]){4, 32, 20, 20}, 1, 1, 1);
    check_threads(true, (const int64_t[]){4, 16, 10, 10}, (const int64_t[]){16, 8, 4, 4},
                  (const int64_t[]){4, 8, 20, 20}, 2, 1, 0);
    /* One output channel: the direct loops, no GEMM. */
    check_threads(false, (const int64_t[]){8, 16, 20, 20}, (const int64_t[]){1, 16, 5, 5},
                  (const int64_t[]){8, 1, 20, 20}, 1, 2, 1);
}

/* a and b bit for bit; runs names the two runs compared ("A vs B"), for the message. */
static void assert_same_bits(const tg_tensor *a, const tg_tensor *b, const char *what,
                             const char *runs)
{
    assert_true(tg_shape_equal(a, b));
    for (int64_t i = 0; i < a->numel; i++)
        if (memcmp(&a->data[i], &b->data[i], sizeof(float)) != 0)
            fail_msg("%s: %s[%lld] = %.9g vs %.9g", runs, what, (long long)i, a->data[i],
                     b->data[i]);
}

/* test_direct_blocks's case: x [2, 6, plane] against a ks x ks kernel at stride s, padding
 * ks / 2. */
static void check_direct_blocks(const int64_t plane[2], int ks, int s)
{
    const int p = ks / 2;
    const int64_t xs[4] = {2, 6, plane[0], plane[1]}, ws[4] = {1, 6, ks, ks};
    tg_tensor *x = tensor4(xs, NULL, true), *w = tensor4(ws, NULL, true);
    const int64_t one = 1;
    tg_tensor *b = tg_tensor_new(1, &one);
    tg_tensor_set_requires_grad(b, true);
    fill_uniform(x, 31), fill_uniform(w, 32), fill_uniform(b, 33);
    const int64_t Ho = (xs[2] + 2 * p - ks) / s + 1, Wo = (xs[3] + 2 * p - ks) / s + 1;
    const int64_t ys[4] = {2, 1, Ho, Wo};
    tg_tensor *dy = tensor4(ys, NULL, false);
    fill_uniform(dy, 34);
    conv_result r = conv_run(false, x, w, b, dy, s, p, 1, NULL);
    /* Each input tile loaded once for the rows (forward, data gradient) or kernel rows (weight
     * gradient) it feeds at stride 1, or once per row and tap: the same sums in the same
     * order. */
    tg_conv_direct_shared_loads = 0;
    conv_result r0 = conv_run(false, x, w, b, dy, s, p, 1, NULL);
    tg_conv_direct_shared_loads = 1;
    assert_same_bits(r.y, r0.y, "y", "shared loads or not");
    assert_same_bits(r.dx, r0.dx, "dx", "shared loads or not");
    assert_same_bits(r.dw, r0.dw, "dw", "shared loads or not");
    conv_result_release(&r0);
    for (int64_t n = 0; n < 2; n++)
        for (int64_t oh = 0; oh < Ho; oh++)
            for (int64_t ow = 0; ow < Wo; ow++) {
                const double want = direct_conv2d(x, w, b, n, 0, oh, ow, s, p, 1);
                assert_true(fabs(r.y->data[(n * Ho + oh) * Wo + ow] - want) < 1e-4);
            }
    for (int64_t c = 0; c < 6; c++)
        for (int64_t i = 0; i < ks; i++)
            for (int64_t j = 0; j < ks; j++) {
                double want = 0.0;
                for (int64_t n = 0; n < 2; n++)
                    for (int64_t oh = 0; oh < Ho; oh++)
                        for (int64_t ow = 0; ow < Wo; ow++) {
                            const int64_t h = oh * s + i - p, v = ow * s + j - p;
                            if (h >= 0 && h < xs[2] && v >= 0 && v < xs[3])
                                want += (double)dy->data[(n * Ho + oh) * Wo + ow] *
                                        x->data[((n * 6 + c) * xs[2] + h) * xs[3] + v];
                        }
                assert_true(fabs(r.dw->data[(c * ks + i) * ks + j] - want) < 1e-3);
            }
    conv_result_release(&r);
    tg_tensor_release(x), tg_tensor_release(w), tg_tensor_release(b);
    tg_tensor_release(dy);
}

/* One output channel (the direct loops) on planes where the forward's blocks of 4 rows x 2
 * tiles and the weight gradient's groups of 4 taps apply, with edge rows and tiles left over
 * (30 x 41: 7 blocks and 2 rows, one pair of tiles and one tile) and not (28 x 28, the GAN's
 * 64 -> 1 layer), with 5x5 and 3x3 kernels (each has its own inlined copy of the shared
 * loads): y and dw against the definition in double, both at stride 1 and 2, and y, dx and dw
 * the same bits with the shared loads and without. */
static void test_direct_blocks(void **state)
{
    (void)state;
    const int64_t planes[][2] = {{28, 28}, {30, 41}};
    for (int ks = 5; ks >= 3; ks -= 2)
        for (int k = 0; k < 2; k++)
            for (int s = 1; s <= 2; s++)
                check_direct_blocks(planes[k], ks, s);
}

/* backward twice on one tape: the second must not depend on what forward left in the working
 * space (the first backward overwrote it), so the gradients simply double. */
static void check_second_backward(bool transpose, const int64_t xs[4], const int64_t ws[4],
                                  const int64_t ys[4], int s, int p, int d_or_op)
{
    tg_tensor *x = tensor4(xs, NULL, true), *w = tensor4(ws, NULL, true);
    int64_t O = ys[1];
    tg_tensor *b = tg_tensor_new(1, &O), *dy = tensor4(ys, NULL, false);
    tg_tensor_set_requires_grad(b, true);
    fill_uniform(x, 9);
    fill_uniform(w, 10);
    fill_uniform(b, 11);
    fill_uniform(dy, 12);
    conv_result once = conv_run(transpose, x, w, b, dy, s, p, d_or_op, NULL);
    tg_tensor_zero_grad(x);
    tg_tensor_zero_grad(w);
    tg_tensor_zero_grad(b);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = apply_conv(transpose, x, w, b, s, p, d_or_op, d_or_op);
    assert_non_null(y);
    assert_int_equal(tg_backward_grad(y, dy), TG_OK);
    assert_int_equal(tg_backward_grad(y, dy), TG_OK);
    assert_int_equal(tg_tape_end(tape), TG_OK);
    const tg_tensor *got[3] = {x->grad, w->grad, b->grad};
    const tg_tensor *want[3] = {once.dx, once.dw, once.db};
    for (int k = 0; k < 3; k++)
        for (int64_t e = 0; e < want[k]->numel; e++)
            assert_close(got[k]->data[e], 2.0 * want[k]->data[e],
                         1e-5 + 1e-5 * fabs(want[k]->data[e]));
    conv_result_release(&once);
    tg_tensor_release(x);
    tg_tensor_release(w);
    tg_tensor_release(b);
    tg_tensor_release(dy);
}

static void test_second_backward(void **state)
{
    (void)state;
    check_second_backward(false, (const int64_t[]){3, 2, 6, 6}, (const int64_t[]){3, 2, 3, 3},
                          (const int64_t[]){3, 3, 3, 3}, 2, 1, 1);
    check_second_backward(true, (const int64_t[]){3, 2, 3, 3}, (const int64_t[]){2, 3, 4, 4},
                          (const int64_t[]){3, 3, 6, 6}, 2, 1, 0);
    /* One image: the single-image path. */
    check_second_backward(false, (const int64_t[]){1, 2, 6, 6}, (const int64_t[]){3, 2, 3, 3},
                          (const int64_t[]){1, 3, 6, 6}, 1, 1, 1);
}

/* ---- implicit GEMM ------------------------------------------------------------------------
 * At the AVX-512 level the GEMMs that read the columns as their B operand pack them straight
 * from the image (tg_conv_implicit); the packed panels must be the ones pack_b makes from
 * written columns, so every result is bit for bit the same either way. Elsewhere both runs
 * take the written columns and the checks hold trivially. */

/* A layer: x and w shapes, stride, padding, dilation (conv2d) or output padding. */
typedef struct {
    const char *name;
    bool transpose;
    int64_t xs[4], ws[4];
    int s, p, d_or_op;
} implicit_layer;

/* A layer's inputs: x, w and b requiring grad and an output gradient dy of y's shape, filled
 * from seeds seed .. seed + 3. */
typedef struct {
    tg_tensor *x, *w, *b, *dy;
} layer_inputs;

static layer_inputs layer_inputs_new(const implicit_layer *L, uint64_t seed)
{
    layer_inputs in = {tensor4(L->xs, NULL, true), tensor4(L->ws, NULL, true), NULL, NULL};
    int64_t O = L->transpose ? L->ws[1] : L->ws[0];
    in.b = tg_tensor_new(1, &O);
    tg_tensor_set_requires_grad(in.b, true);
    fill_uniform(in.x, seed);
    fill_uniform(in.w, seed + 1);
    fill_uniform(in.b, seed + 2);
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *y0 = apply_conv(L->transpose, in.x, in.w, in.b, L->s, L->p, L->d_or_op, L->d_or_op);
    if (!y0)
        fail_msg("%s: %s", L->name, tg_last_error());
    in.dy = tg_tensor_new(4, y0->shape);
    tg_tape_end(tape);
    fill_uniform(in.dy, seed + 3);
    return in;
}

static void layer_inputs_release(layer_inputs *in)
{
    tg_tensor_release(in->x);
    tg_tensor_release(in->w);
    tg_tensor_release(in->b);
    tg_tensor_release(in->dy);
}

/* y, dx, dw, db with and without packing, at the given thread count; the data gradient runs
 * through col2im in both (tg_conv_implicit_dx 0: its implicit GEMMs round differently, see
 * test_implicit_dgrad). */
static void check_implicit_layer(const implicit_layer *L, int threads)
{
    layer_inputs in = layer_inputs_new(L, 11);
    tg_tensor *x = in.x, *w = in.w, *b = in.b, *dy = in.dy;
    int saved = tg_get_num_threads(), saved_mode = tg_conv_implicit, saved_dx = tg_conv_implicit_dx;
    tg_set_num_threads(threads);
    tg_conv_implicit_dx = 0;
    conv_result r[2];
    for (int m = 0; m < 2; m++) {
        tg_conv_implicit = m;
        r[m] = conv_run(L->transpose, x, w, b, dy, L->s, L->p, L->d_or_op, NULL);
    }
    tg_conv_implicit = saved_mode;
    tg_conv_implicit_dx = saved_dx;
    tg_set_num_threads(saved);
    char runs[160];
    snprintf(runs, sizeof runs, "%s, packed from the image vs from written columns", L->name);
    assert_same_bits(r[1].y, r[0].y, "y", runs);
    assert_same_bits(r[1].dx, r[0].dx, "dx", runs);
    assert_same_bits(r[1].dw, r[0].dw, "dw", runs);
    assert_same_bits(r[1].db, r[0].db, "db", runs);
    for (int m = 0; m < 2; m++)
        conv_result_release(&r[m]);
    layer_inputs_release(&in);
}

/* Every kind of lane the packers make: runs that one masked load reads (stride 1, output as
 * wide as the input) and gathers (strided, narrower output, panels across images when staged),
 * padding wider than the kernel's reach, dilation, rectangular kernels, depths over one
 * 256-deep block that start inside a channel, panels past the 512-column block, partial
 * panels, GEMMs split between threads, and conv_transpose2d's backward (both GEMMs from one
 * set of columns). */
static void test_implicit_bit_identical(void **state)
{
    (void)state;
    const implicit_layer layers[] = {
        {"same 5x5 p2, staged", false, {3, 8, 7, 9}, {5, 8, 5, 5}, 1, 2, 1},
        {"same 5x5 p2, per image", false, {2, 12, 14, 14}, {6, 12, 5, 5}, 1, 2, 1},
        {"valid 3x3, 28x28 (P 676)", false, {3, 1, 28, 28}, {7, 1, 3, 3}, 1, 0, 1},
        {"valid 3x3, Kc 270", false, {3, 30, 13, 13}, {9, 30, 3, 3}, 1, 0, 1},
        {"k4 s2 p1, staged", false, {5, 16, 14, 14}, {12, 16, 4, 4}, 2, 1, 1},
        {"2x3 s3 p4 dil 2", false, {2, 3, 11, 8}, {4, 3, 2, 3}, 3, 4, 2},
        {"3x3 p5 on 3x3", false, {2, 2, 3, 3}, {3, 2, 3, 3}, 1, 5, 1},
        /* Big enough that the GEMMs split their columns (and their packing) between threads. */
        {"k4 s2 p1, staged, threads", false, {4, 32, 14, 14}, {64, 32, 4, 4}, 2, 1, 1},
        {"same 3x3 p1, per image, threads", false, {2, 16, 28, 28}, {32, 16, 3, 3}, 1, 1, 1},
        {"convT k4 s2 p1, staged", true, {4, 10, 7, 7}, {10, 8, 4, 4}, 2, 1, 0},
        {"convT k3 s3 p1 op2", true, {2, 3, 5, 4}, {3, 2, 3, 3}, 3, 1, 2},
        /* The weight gradient of few taps (wgrad_taps): D's first conv (a partial a thread),
         * 1x1 on 3 channels at stride 2, 3x3 dilated on a plane of odd sides with 33
         * channels, and on rows of 40. */
        {"1 -> 64 3x3 valid, threads", false, {4, 1, 28, 28}, {64, 1, 3, 3}, 1, 0, 1},
        {"1x1 on 3 channels, s2", false, {3, 3, 9, 9}, {20, 3, 1, 1}, 2, 0, 1},
        {"3x3 s2 dil 2, 33 channels", false, {2, 1, 15, 17}, {33, 1, 3, 3}, 2, 0, 2},
        {"3x3 dil 2, rows of 40, 11 channels", false, {2, 1, 9, 44}, {11, 1, 3, 3}, 1, 0, 2},
    };
    for (size_t i = 0; i < sizeof layers / sizeof layers[0]; i++)
        for (int threads = 1; threads <= 2; threads++)
            check_implicit_layer(&layers[i], threads);
}

/* The weight gradient of few taps (wgrad_taps) on a layer without a bias, 10 output channels
 * (a partial vector of 16): y, dx and dw the same bits as the GEMMs on written columns, and so
 * with tg_conv_wgrad_taps 0, where the implicit GEMM takes the weight gradient. */
static void test_taps_without_bias(void **state)
{
    (void)state;
    const int64_t xs[4] = {3, 1, 12, 41}, ws[4] = {10, 1, 3, 3};
    tg_tensor *x = tensor4(xs, NULL, true), *w = tensor4(ws, NULL, true);
    fill_uniform(x, 31);
    fill_uniform(w, 32);
    const int64_t ys[4] = {3, 10, 10, 39};
    tg_tensor *dy = tensor4(ys, NULL, false);
    fill_uniform(dy, 33);
    const int saved = tg_conv_implicit, saved_taps = tg_conv_wgrad_taps;
    tg_tensor *r[3][3];
    for (int m = 0; m < 3; m++) {
        tg_conv_implicit = m > 0;
        tg_conv_wgrad_taps = m == 1;
        tg_tensor_zero_grad(x);
        tg_tensor_zero_grad(w);
        tg_tape *tape = tg_tape_begin(TG_GRAD);
        tg_tensor *y = tg_conv2d(x, w, TG_NONE, 1, 0, 1);
        assert_non_null(y);
        assert_int_equal(tg_backward_grad(y, dy), TG_OK);
        r[m][0] = tg_tensor_clone(y);
        assert_int_equal(tg_tape_end(tape), TG_OK);
        r[m][1] = tg_tensor_clone(x->grad);
        r[m][2] = tg_tensor_clone(w->grad);
    }
    tg_conv_implicit = saved;
    tg_conv_wgrad_taps = saved_taps;
    static const char *const what[3] = {"y", "dx", "dw"};
    for (int m = 1; m < 3; m++)
        for (int q = 0; q < 3; q++)
            assert_same_bits(r[m][q], r[0][q], what[q],
                             m == 1 ? "direct taps vs written columns, no bias"
                                    : "implicit GEMMs vs written columns, no bias");
    for (int m = 0; m < 3; m++)
        for (int q = 0; q < 3; q++)
            tg_tensor_release(r[m][q]);
    tg_tensor_release(x), tg_tensor_release(w), tg_tensor_release(dy);
}

/* The second order's conv2d_weight_grad op packs too: its forward (the weight gradient) and
 * its backward's dy gradient (U @ cols). Its value, and the gradients of <that value, U> in x
 * and dy, with and without packing. */
static void test_implicit_weight_grad_op(void **state)
{
    (void)state;
    const int64_t xs[4] = {3, 5, 9, 9}, ws[4] = {4, 5, 4, 4}, ys[4] = {3, 4, 4, 4};
    tg_tensor *x = tensor4(xs, NULL, true), *w = tensor4(ws, NULL, true);
    tg_tensor *dy = tensor4(ys, NULL, true), *U = tensor4(ws, NULL, false);
    fill_uniform(x, 15);
    fill_uniform(w, 16);
    fill_uniform(dy, 17);
    fill_uniform(U, 18);
    int saved_mode = tg_conv_implicit, saved_dx = tg_conv_implicit_dx;
    tg_conv_implicit_dx = 0;
    tg_tensor *gw[2], *dx[2], *ddy[2];
    for (int m = 0; m < 2; m++) {
        tg_conv_implicit = m;
        tg_tensor_zero_grad(x);
        tg_tensor_zero_grad(dy);
        tg_tape *tape = tg_tape_begin(TG_GRAD);
        tg_tensor *y = tg_conv2d(x, w, TG_NONE, 2, 1, 1);
        assert_non_null(y);
        tg_tensor *g = NULL;
        assert_int_equal(tg_grad(&y, 1, &w, 1, &dy, true, &g), TG_OK);
        assert_int_equal(tg_backward_grad(g, U), TG_OK);
        gw[m] = tg_tensor_clone(g);
        assert_int_equal(tg_tape_end(tape), TG_OK);
        dx[m] = tg_tensor_clone(x->grad);
        ddy[m] = tg_tensor_clone(dy->grad);
        assert_true(gw[m] && dx[m] && ddy[m]);
    }
    tg_conv_implicit = saved_mode;
    tg_conv_implicit_dx = saved_dx;
    const char *runs = "conv2d_weight_grad, packed from the image vs from written columns";
    assert_same_bits(gw[1], gw[0], "dw", runs);
    assert_same_bits(dx[1], dx[0], "dx", runs);
    assert_same_bits(ddy[1], ddy[0], "ddy", runs);
    for (int m = 0; m < 2; m++) {
        tg_tensor_release(gw[m]);
        tg_tensor_release(dx[m]);
        tg_tensor_release(ddy[m]);
    }
    tg_tensor_release(x);
    tg_tensor_release(w);
    tg_tensor_release(dy);
    tg_tensor_release(U);
}

/* ---- a chunk's images in parallel -----------------------------------------------------------
 * Where each image's GEMMs are too small to split between threads, a team of threads takes the
 * chunk's images (tg_conv_image_parallel, conv.c's conv_image_team). Against image after image
 * (the switch at 0): y and dx bit for bit at 1 and 2 threads (each image's values come from the
 * same GEMM calls); at 1 thread dw too (a team of one is the old order); at 2 threads dw within
 * a few roundings of the sums (each thread's images summed apart, a lost or doubled image would
 * be off by a whole term: about 1/B of it); db bit for bit between 1 and 2 threads (plane sums
 * added in double whatever the team) and within rounding of the old per-image float sums. */

/* max |a - b| over max |b|. */
static double max_rel_diff(const tg_tensor *a, const tg_tensor *b)
{
    double d = 0.0, m = 0.0;
    for (int64_t i = 0; i < a->numel; i++) {
        d = fmax(d, fabs((double)a->data[i] - b->data[i]));
        m = fmax(m, fabs((double)b->data[i]));
    }
    return m > 0 ? d / m : d;
}

static void check_image_team(const implicit_layer *L)
{
    layer_inputs in = layer_inputs_new(L, 21);
    tg_tensor *x = in.x, *w = in.w, *b = in.b, *dy = in.dy;
    int saved = tg_get_num_threads(), saved_mode = tg_conv_image_parallel;
    conv_result r[2][2]; /* [threads - 1][switch] */
    for (int t = 0; t < 2; t++) {
        tg_set_num_threads(t + 1);
        for (int m = 0; m < 2; m++) {
            /* Working space fresh from the system, not the last run's: columns that a unit
             * failed to write would still hold that run's values. */
            tg_allocator_trim();
            tg_conv_image_parallel = m;
            r[t][m] = conv_run(L->transpose, x, w, b, dy, L->s, L->p, L->d_or_op, NULL);
        }
    }
    tg_conv_image_parallel = saved_mode;
    tg_set_num_threads(saved);
    char what[160];
    for (int t = 0; t < 2; t++) {
        snprintf(what, sizeof what, "%s, %d thread(s), images in parallel vs one by one", L->name,
                 t + 1);
        assert_same_bits(r[t][1].y, r[t][0].y, "y", what);
        assert_same_bits(r[t][1].dx, r[t][0].dx, "dx", what);
        if (t == 0)
            assert_same_bits(r[t][1].dw, r[t][0].dw, "dw", what);
        double d_dw = max_rel_diff(r[t][1].dw, r[t][0].dw),
               d_db = max_rel_diff(r[t][1].db, r[t][0].db);
        if (!(d_dw <= 1e-5) || !(d_db <= 1e-5))
            fail_msg("%s: dw off by %.3g, db by %.3g of their largest magnitude", what, d_dw, d_db);
    }
    snprintf(what, sizeof what, "%s, images in parallel, 1 vs 2 threads", L->name);
    assert_same_bits(r[1][1].db, r[0][1].db, "db", what);
    /* At the AVX-512 level the team runs, and its dw sums in another order somewhere: else
     * this test would pass with the team never used. */
    if (tg_sgemm_avx512_active() && !(max_rel_diff(r[1][1].dw, r[1][0].dw) > 0))
        fail_msg("%s: dw at 2 threads is bit for bit the old order: the team did not run", L->name);
    for (int t = 0; t < 2; t++)
        for (int m = 0; m < 2; m++)
            conv_result_release(&r[t][m]);
    layer_inputs_release(&in);
}

/* Chunks of one image (G's 5x5 conv 128 -> 64: 3200 x 196 columns, 2.5 MB of working space an
 * image) whose GEMMs pack from the image: the forward's team takes whole images with no
 * working space (conv.c's conv2d_forward_team). y against image after image, bit for bit. */
static void test_forward_team(void **state)
{
    (void)state;
    const int64_t xs[4] = {5, 128, 14, 14}, ws[4] = {64, 128, 5, 5}, O = 64;
    tg_tensor *x = tensor4(xs, NULL, false), *w = tensor4(ws, NULL, false);
    tg_tensor *b = tg_tensor_new(1, &O);
    fill_uniform(x, 31);
    fill_uniform(w, 32);
    fill_uniform(b, 33);
    int saved = tg_get_num_threads(), saved_mode = tg_conv_image_parallel;
    for (int t = 1; t <= 2; t++) {
        tg_set_num_threads(t);
        tg_tensor *y[2];
        for (int m = 0; m < 2; m++) {
            tg_conv_image_parallel = m;
            tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
            tg_tensor *out = tg_conv2d(x, w, b, 1, 2, 1);
            assert_non_null(out);
            y[m] = tg_tensor_clone(out);
            assert_non_null(y[m]);
            assert_int_equal(tg_tape_end(tape), TG_OK);
        }
        char runs[96];
        snprintf(runs, sizeof runs, "5x5 128->64, %d thread(s), images in parallel vs one by one",
                 t);
        assert_same_bits(y[1], y[0], "y", runs);
        tg_tensor_release(y[0]);
        tg_tensor_release(y[1]);
    }
    tg_conv_image_parallel = saved_mode;
    tg_set_num_threads(saved);
    tg_tensor_release(x);
    tg_tensor_release(w);
    tg_tensor_release(b);
}

/* The GAN's layers of that kind, at a smaller batch: D's first conv (64 x 676 x 9 an image),
 * the dcgan D's strided one, and the convt G's last layer (its forward the columns, its
 * backward dw and dx). Batches of 7 and 33 do not split evenly. */
static void test_image_team(void **state)
{
    (void)state;
    const implicit_layer layers[] = {
        {"D conv 1->64 3x3 28x28", false, {7, 1, 28, 28}, {64, 1, 3, 3}, 1, 0, 1},
        {"dcgan D conv 1->64 k4 s2 p1", false, {8, 1, 28, 28}, {64, 1, 4, 4}, 2, 1, 1},
        {"convT 16->1 k4 s2 p1 14x14", true, {33, 16, 14, 14}, {16, 1, 4, 4}, 2, 1, 0},
    };
    for (size_t i = 0; i < sizeof layers / sizeof layers[0]; i++)
        check_image_team(&layers[i]);
}

/* ---- the data gradient without col2im -------------------------------------------------------
 * At the AVX-512 level conv2d's dx and conv_transpose2d's y (the same computation) run as
 * implicit GEMMs over dy (or x), phase by phase when strided (tg_conv_implicit_dx, conv.c's
 * conv_dgrad). Each value sums the same products in another order than col2im does, so both
 * paths are checked against the definition in double, and against each other, within a bound
 * relative to the sum of the products' magnitudes S: float sums of up to a few hundred terms
 * stay near 1e-7 S, a lost or doubled product is off by about S / terms, 1e-3 S here. */
#define DGRAD_RTOL 1e-5

/* The data gradient of x [N, C, H, W] (conv2d, w [O, C, kh, kw]) at one element, from dy
 * [N, O, Ho, Wo] straight from the definition, in double; *mag receives the sum of the
 * products' magnitudes. */
static double direct_conv2d_dx(const tg_tensor *x, const tg_tensor *w, const tg_tensor *dy,
                               int64_t n, int64_t c, int64_t ih, int64_t iw, int s, int p, int d,
                               double *mag)
{
    const int64_t C = x->shape[1], O = w->shape[0], kh = w->shape[2], kw = w->shape[3];
    const int64_t Ho = dy->shape[2], Wo = dy->shape[3];
    double acc = 0.0;
    *mag = 0.0;
    for (int64_t o = 0; o < O; o++)
        for (int64_t i = 0; i < kh; i++)
            for (int64_t j = 0; j < kw; j++) {
                int64_t th = ih + p - i * d, tw = iw + p - j * d;
                if (th < 0 || tw < 0 || th % s || tw % s || th / s >= Ho || tw / s >= Wo)
                    continue;
                double t = (double)w->data[((o * C + c) * kh + i) * kw + j] *
                           dy->data[((n * O + o) * Ho + th / s) * Wo + tw / s];
                acc += t;
                *mag += fabs(t);
            }
    return acc;
}

/* conv_transpose2d's y at one element, as direct_conv_transpose2d, with the magnitude sum. */
static double direct_convt_mag(const tg_tensor *x, const tg_tensor *w, const tg_tensor *b,
                               int64_t n, int64_t o, int64_t hy, int64_t wy, int s, int p,
                               double *mag)
{
    const int64_t C = x->shape[1], H = x->shape[2], W = x->shape[3];
    const int64_t O = w->shape[1], kh = w->shape[2], kw = w->shape[3];
    *mag = fabs(b->data[o]);
    for (int64_t c = 0; c < C; c++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t v = 0; v < W; v++) {
                int64_t i = hy - (h * s - p), j = wy - (v * s - p);
                if (i >= 0 && i < kh && j >= 0 && j < kw)
                    *mag += fabs((double)x->data[((n * C + c) * H + h) * W + v] *
                                 w->data[((c * O + o) * kh + i) * kw + j]);
            }
    return direct_conv_transpose2d(x, w, b, n, o, hy, wy, s, p);
}

/* A layer for the data gradient, and whether the implicit GEMMs run on it (where AVX-512
 * does): if not, the two paths must agree bit for bit, as both take col2im. */
typedef struct {
    implicit_layer L;
    bool implicit;
} dgrad_layer;

/* The data gradient of one layer with the switch off (r[0]) and on (r[1]), at the given
 * thread count, each run twice on one tape for the second backward's accumulation. */
static void check_dgrad_layer(const dgrad_layer *D, int threads)
{
    const implicit_layer *L = &D->L;
    layer_inputs in = layer_inputs_new(L, 21);
    tg_tensor *x = in.x, *w = in.w, *b = in.b, *dy = in.dy;
    int saved = tg_get_num_threads(), saved_dx = tg_conv_implicit_dx;
    tg_set_num_threads(threads);
    conv_result r[2];
    tg_tensor *twice[2];
    for (int m = 0; m < 2; m++) {
        tg_conv_implicit_dx = m;
        r[m] = conv_run(L->transpose, x, w, b, dy, L->s, L->p, L->d_or_op, NULL);
        /* Backward twice on one tape: the second adds to dx (the GEMMs' beta 1). */
        tg_tensor_zero_grad(x);
        tg_tape *t2 = tg_tape_begin(TG_GRAD);
        tg_tensor *y = apply_conv(L->transpose, x, w, b, L->s, L->p, L->d_or_op, L->d_or_op);
        assert_non_null(y);
        assert_int_equal(tg_backward_grad(y, dy), TG_OK);
        assert_int_equal(tg_backward_grad(y, dy), TG_OK);
        assert_int_equal(tg_tape_end(t2), TG_OK);
        twice[m] = tg_tensor_clone(x->grad);
        assert_non_null(twice[m]);
    }
    tg_conv_implicit_dx = saved_dx;
    tg_set_num_threads(saved);
    /* The data gradient: y of conv_transpose2d (and its dx is conv2d's forward, unchanged),
     * dx of conv2d. */
    const tg_tensor *got[2] = {L->transpose ? r[0].y : r[0].dx, L->transpose ? r[1].y : r[1].dx};
    const int64_t *sh = got[0]->shape;
    bool differ = false;
    /* Every element of the small layers; every 7th of the large one (both groups still). */
    const int64_t step = got[0]->numel > 200000 ? 7 : 1;
    for (int64_t e = 0; e < got[0]->numel; e += step) {
        int64_t v = e % sh[3], h = e / sh[3] % sh[2], c = e / (sh[2] * sh[3]) % sh[1];
        int64_t n = e / (sh[1] * sh[2] * sh[3]);
        double mag;
        double want = L->transpose
                          ? direct_convt_mag(x, w, b, n, c, h, v, L->s, L->p, &mag)
                          : direct_conv2d_dx(x, w, dy, n, c, h, v, L->s, L->p, L->d_or_op, &mag);
        double tol = DGRAD_RTOL * mag + 1e-7;
        float old = got[0]->data[e], now = got[1]->data[e];
        if (!(fabs(old - want) <= tol) || !(fabs(now - want) <= tol) || !(fabs(now - old) <= tol))
            fail_msg("%s, %d threads: element %lld: implicit %.9g, col2im %.9g, double %.9g "
                     "(bound %.3g)",
                     L->name, threads, (long long)e, now, old, want, tol);
        if (!L->transpose && !(fabs(twice[1]->data[e] - 2.0 * now) <= 2.0 * tol))
            fail_msg("%s, %d threads: dx[%lld] after two backwards %.9g, once %.9g", L->name,
                     threads, (long long)e, twice[1]->data[e], now);
        differ |= memcmp(&old, &now, sizeof old) != 0;
    }
    /* Where the implicit GEMMs run, some of thousands of sums round differently; where they
     * do not, nothing may differ. */
    if (differ != (D->implicit && tg_sgemm_avx512_active()))
        fail_msg("%s: the paths %s bit for bit, but the implicit GEMMs %s", L->name,
                 differ ? "differ" : "agree",
                 D->implicit && tg_sgemm_avx512_active() ? "run" : "do not run");
    /* Everything else is the same computation either way. */
    char runs[160];
    snprintf(runs, sizeof runs, "%s, implicit data gradient vs col2im", L->name);
    assert_same_bits(L->transpose ? r[1].dx : r[1].y, L->transpose ? r[0].dx : r[0].y,
                     L->transpose ? "dx" : "y", runs);
    assert_same_bits(r[1].dw, r[0].dw, "dw", runs);
    assert_same_bits(r[1].db, r[0].db, "db", runs);
    for (int m = 0; m < 2; m++) {
        conv_result_release(&r[m]);
        tg_tensor_release(twice[m]);
    }
    layer_inputs_release(&in);
}

/* Stride 1 in groups of images (small planes) and in place, with flat's rows copied wider
 * where the image is wider (valid convolutions); the strided phases (2x2 taps each for k4 s2;
 * phases of 2 and 1 taps for k3; a dilation that visits the phases in another order; more
 * than one group); conv_transpose2d's forward with its bias, in groups and in place; and the
 * layers that keep col2im: a single image channel, more flat channels than image channels at
 * stride 1, a stride above the kernel, a dilation that leaves a phase with no tap, a stride
 * above 8. */
static void test_implicit_dgrad(void **state)
{
    (void)state;
    const dgrad_layer layers[] = {
        {{"same 5x5 p2, grouped", false, {2, 16, 14, 14}, {12, 16, 5, 5}, 1, 2, 1}, true},
        /* 4 x 169 points: the GEMM packs a second column block after writing the first, so
         * the widened rows must not share the buffer with the GEMM's output. */
        {{"valid 3x3, 13x13, grouped", false, {4, 12, 13, 13}, {12, 12, 3, 3}, 1, 0, 1}, true},
        {{"same 3x3 p1, in place", false, {2, 8, 20, 20}, {8, 8, 3, 3}, 1, 1, 1}, true},
        {{"valid 3x3, in place", false, {2, 8, 18, 18}, {6, 8, 3, 3}, 1, 0, 1}, true},
        {{"3x3 p2 dil 2", false, {2, 8, 10, 10}, {5, 8, 3, 3}, 1, 2, 2}, true},
        {{"k4 s2 p1", false, {3, 8, 14, 14}, {10, 8, 4, 4}, 2, 1, 1}, true},
        {{"k3 s2 p1, 9x7", false, {2, 8, 9, 7}, {6, 8, 3, 3}, 2, 1, 1}, true},
        {{"2x3 s2 p1 dil 3", false, {2, 9, 11, 16}, {4, 9, 2, 3}, 2, 1, 3}, true},
        /* 1 MB of phase buffer per image: groups of 2, 2 + 1 images. */
        {{"k4 s2 p1, two groups", false, {3, 64, 64, 64}, {8, 64, 4, 4}, 2, 1, 1}, true},
        /* The largest stride the implicit path takes (conv.c's DGRAD_MAX_STRIDE): phases of
         * two taps and of one; the next stride keeps col2im (below). */
        {{"k10 s8", false, {2, 8, 34, 34}, {6, 8, 10, 10}, 8, 0, 1}, true},
        {{"convT k4 s2 p1", true, {3, 12, 7, 7}, {12, 8, 4, 4}, 2, 1, 0}, true},
        {{"convT k3 s2 p1 op1", true, {2, 10, 5, 5}, {10, 9, 3, 3}, 2, 1, 1}, true},
        {{"convT k3 s1 p1, in place", true, {2, 8, 16, 16}, {8, 8, 3, 3}, 1, 1, 0}, true},
        {{"more flat channels", false, {2, 8, 12, 12}, {12, 8, 3, 3}, 1, 1, 1}, false},
        {{"one image channel", false, {2, 1, 12, 12}, {8, 1, 3, 3}, 1, 1, 1}, false},
        {{"1x1 s2", false, {2, 8, 9, 9}, {4, 8, 1, 1}, 2, 0, 1}, false},
        {{"3x3 s2 dil 2", false, {2, 8, 9, 9}, {4, 8, 3, 3}, 2, 1, 2}, false},
        {{"k10 s9", false, {2, 8, 37, 37}, {6, 8, 10, 10}, 9, 0, 1}, false},
    };
    for (size_t i = 0; i < sizeof layers / sizeof layers[0]; i++)
        for (int threads = 1; threads <= 2; threads++)
            check_dgrad_layer(&layers[i], threads);
}

/* conv2d_weight_grad's backward (the second order) takes its dx through the same function:
 * with the switch on and off, within the bound of test_implicit_dgrad (here relative to the
 * largest value), and its ddy bit for bit. */
static void test_implicit_dgrad_weight_grad_op(void **state)
{
    (void)state;
    const int64_t xs[4] = {3, 16, 10, 10}, ws[4] = {12, 16, 3, 3}, ys[4] = {3, 12, 10, 10};
    tg_tensor *x = tensor4(xs, NULL, true), *w = tensor4(ws, NULL, true);
    tg_tensor *dy = tensor4(ys, NULL, true), *U = tensor4(ws, NULL, false);
    fill_uniform(x, 25);
    fill_uniform(w, 26);
    fill_uniform(dy, 27);
    fill_uniform(U, 28);
    int saved_dx = tg_conv_implicit_dx;
    tg_tensor *dx[2], *ddy[2];
    for (int m = 0; m < 2; m++) {
        tg_conv_implicit_dx = m;
        tg_tensor_zero_grad(x);
        tg_tensor_zero_grad(dy);
        tg_tape *tape = tg_tape_begin(TG_GRAD);
        tg_tensor *y = tg_conv2d(x, w, TG_NONE, 1, 1, 1);
        assert_non_null(y);
        tg_tensor *g = NULL;
        assert_int_equal(tg_grad(&y, 1, &w, 1, &dy, true, &g), TG_OK);
        assert_int_equal(tg_backward_grad(g, U), TG_OK);
        assert_int_equal(tg_tape_end(tape), TG_OK);
        dx[m] = tg_tensor_clone(x->grad);
        ddy[m] = tg_tensor_clone(dy->grad);
        assert_true(dx[m] && ddy[m]);
    }
    tg_conv_implicit_dx = saved_dx;
    double top = 0.0;
    bool differ = false;
    for (int64_t e = 0; e < dx[0]->numel; e++)
        top = fmax(top, fabs(dx[0]->data[e]));
    for (int64_t e = 0; e < dx[0]->numel; e++) {
        if (!(fabs(dx[1]->data[e] - dx[0]->data[e]) <= 1e-6 * top))
            fail_msg("conv2d_weight_grad: dx[%lld] = %.9g implicit, %.9g through col2im",
                     (long long)e, dx[1]->data[e], dx[0]->data[e]);
        differ |= dx[1]->data[e] != dx[0]->data[e];
    }
    assert_true(differ == tg_sgemm_avx512_active());
    assert_same_bits(ddy[1], ddy[0], "ddy", "conv2d_weight_grad, implicit data gradient vs col2im");
    for (int m = 0; m < 2; m++) {
        tg_tensor_release(dx[m]);
        tg_tensor_release(ddy[m]);
    }
    tg_tensor_release(x);
    tg_tensor_release(w);
    tg_tensor_release(dy);
    tg_tensor_release(U);
}

/* The lowering's GEMM (tensor/gemm.c, AVX-512 where the CPU has it) against OpenBLAS, for
 * every transpose, alpha and beta, edge sizes that leave partial 8 x 32 tiles and partial
 * 16-deep transposes, depths over one 256 block, and leading dimensions wider than the rows.
 * Only the summation order differs: tolerance relative to the largest value. */
static void test_gemm_against_openblas(void **state)
{
    (void)state;
    const int64_t sizes[][3] = {{1, 1, 1},      {7, 5, 3},     {8, 32, 16},    {9, 33, 257},
                                {64, 196, 300}, {130, 70, 45}, {13, 1000, 17}, {40, 64, 530}};
    const float ab[][2] = {{1.0f, 0.0f}, {0.5f, 1.0f}, {1.0f, 0.3f}};
    tg_rng rng;
    tg_rng_seed(&rng, 21);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        for (int t = 0; t < 4; t++) {
            bool ta = t & 1, tb = t >> 1;
            int64_t M = sizes[i][0], N = sizes[i][1], K = sizes[i][2], pad = (int64_t)i % 3;
            int64_t lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
            float alpha = ab[(i + t) % 3][0], beta = ab[(i + t) % 3][1];
            int64_t na = lda * (ta ? K : M), nb = ldb * (tb ? N : K), nc = ldc * M;
            tg_tensor *a = tg_tensor_new(1, &na), *b = tg_tensor_new(1, &nb);
            tg_tensor *c1 = tg_tensor_new(1, &nc), *c2 = tg_tensor_new(1, &nc);
            tg_tensor_uniform_(a, &rng, -1.0f, 1.0f);
            tg_tensor_uniform_(b, &rng, -1.0f, 1.0f);
            tg_tensor_uniform_(c1, &rng, -1.0f, 1.0f);
            memcpy(c2->data, c1->data, (size_t)nc * sizeof(float));
            tg_sgemm(ta, tb, M, N, K, alpha, a->data, lda, b->data, ldb, beta, c1->data, ldc);
            tg_sgemm_avx512(ta, tb, M, N, K, alpha, a->data, lda, b->data, ldb, beta, c2->data,
                            ldc);
            double top = 1.0;
            for (int64_t e = 0; e < nc; e++)
                top = fmax(top, fabs(c1->data[e]));
            for (int64_t e = 0; e < nc; e++)
                if (!(fabs(c1->data[e] - c2->data[e]) <= 1e-5 * top))
                    fail_msg("%c%c M %lld N %lld K %lld: C[%lld] = %.8g, OpenBLAS %.8g",
                             ta ? 'T' : 'N', tb ? 'T' : 'N', (long long)M, (long long)N,
                             (long long)K, (long long)e, c2->data[e], c1->data[e]);
            tg_tensor_release(a);
            tg_tensor_release(b);
            tg_tensor_release(c1);
            tg_tensor_release(c2);
        }
    }
}

/* One user thread's share of test_gemm_threads: its own operands, the same product again
 * and again, each result compared bit for bit with the one computed alone. */
typedef struct {
    const float *a, *b, *want;
    float *c;
    int64_t M, N, K;
    bool ok;
} gemm_job;

static void *gemm_job_run(void *arg)
{
    gemm_job *j = arg;
    j->ok = true;
    for (int rep = 0; rep < 200 && j->ok; rep++) {
        tg_sgemm_avx512(false, true, j->M, j->N, j->K, 1.0f, j->a, j->K, j->b, j->K, 0.0f, j->c,
                        j->N);
        j->ok = memcmp(j->c, j->want, (size_t)(j->M * j->N) * sizeof(float)) == 0;
    }
    return NULL;
}

/* Two user threads multiplying at once get the results each gets alone: the packing buffers
 * belong to one call (they were once global and shared, and the threads overwrote each
 * other's panels). */
static void test_gemm_threads(void **state)
{
    (void)state;
    enum { JOBS = 2 };
    const int64_t M = 64, N = 196, K = 300;
    tg_rng rng;
    tg_rng_seed(&rng, 22);
    gemm_job jobs[JOBS];
    tg_tensor *t[JOBS][4];
    int64_t sizes[4] = {M * K, N * K, M * N, M * N};
    for (int i = 0; i < JOBS; i++) {
        for (int k = 0; k < 4; k++)
            t[i][k] = tg_tensor_new(1, &sizes[k]);
        tg_tensor_uniform_(t[i][0], &rng, -1.0f, 1.0f);
        tg_tensor_uniform_(t[i][1], &rng, -1.0f, 1.0f);
        tg_sgemm_avx512(false, true, M, N, K, 1.0f, t[i][0]->data, K, t[i][1]->data, K, 0.0f,
                        t[i][2]->data, N);
        jobs[i] = (gemm_job){.a = t[i][0]->data,
                             .b = t[i][1]->data,
                             .want = t[i][2]->data,
                             .c = t[i][3]->data,
                             .M = M,
                             .N = N,
                             .K = K};
    }
    pthread_t tid[JOBS];
    for (int i = 0; i < JOBS; i++)
        assert_int_equal(pthread_create(&tid[i], NULL, gemm_job_run, &jobs[i]), 0);
    for (int i = 0; i < JOBS; i++)
        assert_int_equal(pthread_join(tid[i], NULL), 0);
    for (int i = 0; i < JOBS; i++) {
        assert_true(jobs[i].ok);
        for (int k = 0; k < 4; k++)
            tg_tensor_release(t[i][k]);
    }
}

/* ---- the direct loops (autograd/conv_direct.c) ----------------------------------------------
 * One output channel always takes them; one input channel with tg_conv_direct 2. The data
 * gradient at stride 1 is a correlation of dy with the flipped kernel (tg_conv_direct 1 and 2),
 * else the scatter (0, strides above 1, a non-square kernel, a padding beyond the kernel's
 * reach). Every mode against the definition in double (bound DGRAD_RTOL of the products'
 * magnitudes), at 1 and 2 threads with the same bits, and dx after two backwards on one tape
 * exactly twice dx after one (the fresh gradient assigned, then added to). */
typedef struct {
    implicit_layer L;
    bool gather; /* the data gradient is a correlation in modes 1 and 2 */
    bool i1;     /* one input channel: the direct loops in mode 2 */
} direct_layer;

/* dw[o, c, i, j] from the definition, in double, with the magnitude sum in *mag. */
static double direct_conv2d_dw(const tg_tensor *x, const tg_tensor *dy, int64_t o, int64_t c,
                               int64_t i, int64_t j, int s, int p, int d, double *mag)
{
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    const int64_t O = dy->shape[1], Ho = dy->shape[2], Wo = dy->shape[3];
    double acc = 0.0;
    *mag = 0.0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t oh = 0; oh < Ho; oh++)
            for (int64_t ow = 0; ow < Wo; ow++) {
                const int64_t h = oh * s - p + i * d, v = ow * s - p + j * d;
                if (h < 0 || h >= H || v < 0 || v >= W)
                    continue;
                const double t = (double)dy->data[((n * O + o) * Ho + oh) * Wo + ow] *
                                 x->data[((n * C + c) * H + h) * W + v];
                acc += t;
                *mag += fabs(t);
            }
    return acc;
}

/* y, dx and dw of one mode against the definition; the largest error relative to the
 * magnitudes (dx's) into *dx_err. */
static void direct_against_double(const direct_layer *D, const layer_inputs *in,
                                  const conv_result *r, const char *runs, double *dx_err)
{
    const implicit_layer *L = &D->L;
    const tg_tensor *x = in->x, *w = in->w, *dy = in->dy;
    const int64_t *ys = r->y->shape, *xs = x->shape, *ws = w->shape;
    for (int64_t e = 0; e < r->y->numel; e++) {
        const int64_t v = e % ys[3], h = e / ys[3] % ys[2], o = e / (ys[2] * ys[3]) % ys[1];
        const int64_t n = e / (ys[1] * ys[2] * ys[3]);
        double mag = fabs(in->b->data[o]);
        for (int64_t c = 0; c < xs[1]; c++)
            for (int64_t i = 0; i < ws[2]; i++)
                for (int64_t j = 0; j < ws[3]; j++) {
                    const int64_t ih = h * L->s - L->p + i * L->d_or_op,
                                  iw = v * L->s - L->p + j * L->d_or_op;
                    if (ih >= 0 && ih < xs[2] && iw >= 0 && iw < xs[3])
                        mag += fabs((double)x->data[((n * xs[1] + c) * xs[2] + ih) * xs[3] + iw] *
                                    w->data[((o * xs[1] + c) * ws[2] + i) * ws[3] + j]);
                }
        const double want = direct_conv2d(x, w, in->b, n, o, h, v, L->s, L->p, L->d_or_op);
        if (!(fabs(r->y->data[e] - want) <= DGRAD_RTOL * mag + 1e-7))
            fail_msg("%s: y[%lld] = %.9g, double %.9g", runs, (long long)e, r->y->data[e], want);
    }
    *dx_err = 0.0;
    for (int64_t e = 0; e < r->dx->numel; e++) {
        const int64_t v = e % xs[3], h = e / xs[3] % xs[2], c = e / (xs[2] * xs[3]) % xs[1];
        const int64_t n = e / (xs[1] * xs[2] * xs[3]);
        double mag;
        const double want = direct_conv2d_dx(x, w, dy, n, c, h, v, L->s, L->p, L->d_or_op, &mag);
        const double err = fabs(r->dx->data[e] - want);
        if (!(err <= DGRAD_RTOL * mag + 1e-7))
            fail_msg("%s: dx[%lld] = %.9g, double %.9g (bound %.3g)", runs, (long long)e,
                     r->dx->data[e], want, DGRAD_RTOL * mag + 1e-7);
        if (mag > 0)
            *dx_err = fmax(*dx_err, err / mag);
    }
    for (int64_t e = 0; e < r->dw->numel; e++) {
        const int64_t j = e % ws[3], i = e / ws[3] % ws[2], c = e / (ws[2] * ws[3]) % ws[1];
        const int64_t o = e / (ws[1] * ws[2] * ws[3]);
        double mag;
        const double want = direct_conv2d_dw(x, dy, o, c, i, j, L->s, L->p, L->d_or_op, &mag);
        if (!(fabs(r->dw->data[e] - want) <= DGRAD_RTOL * mag + 1e-7))
            fail_msg("%s: dw[%lld] = %.9g, double %.9g", runs, (long long)e, r->dw->data[e], want);
    }
}

static void check_direct_layer(const direct_layer *D)
{
    const implicit_layer *L = &D->L;
    layer_inputs in = layer_inputs_new(L, 41);
    const int saved = tg_get_num_threads(), saved_mode = tg_conv_direct;
    conv_result r[3][2]; /* [mode][threads - 1] */
    char runs[200];
    for (int m = 0; m < 3; m++) {
        tg_conv_direct = m;
        for (int t = 0; t < 2; t++) {
            tg_set_num_threads(t + 1);
            r[m][t] = conv_run(false, in.x, in.w, in.b, in.dy, L->s, L->p, L->d_or_op, NULL);
            snprintf(runs, sizeof runs, "%s, mode %d, %d thread(s)", L->name, m, t + 1);
            double dx_err;
            direct_against_double(D, &in, &r[m][t], runs, &dx_err);
            if (t == 0 && m == 1)
                print_message("%s: dx within %.2g of the products' magnitudes\n", L->name, dx_err);
            if (!(L->ws[0] == 1 || (m == 2 && D->i1)))
                continue; /* the lowering: test_implicit_dgrad */
            /* Backward twice on one tape: the second adds the same values to dx. */
            tg_tensor_zero_grad(in.x);
            tg_tape *tape = tg_tape_begin(TG_GRAD);
            tg_tensor *y = tg_conv2d(in.x, in.w, in.b, L->s, L->p, L->d_or_op);
            assert_non_null(y);
            assert_int_equal(tg_backward_grad(y, in.dy), TG_OK);
            assert_int_equal(tg_backward_grad(y, in.dy), TG_OK);
            assert_int_equal(tg_tape_end(tape), TG_OK);
            for (int64_t e = 0; e < in.x->grad->numel; e++)
                if (in.x->grad->data[e] != 2.0f * r[m][t].dx->data[e])
                    fail_msg("%s: dx[%lld] after two backwards %.9g, once %.9g", runs, (long long)e,
                             in.x->grad->data[e], r[m][t].dx->data[e]);
        }
        snprintf(runs, sizeof runs, "%s, mode %d, 1 vs 2 threads", L->name, m);
        assert_same_bits(r[m][1].y, r[m][0].y, "y", runs);
        assert_same_bits(r[m][1].dx, r[m][0].dx, "dx", runs);
        /* The direct loops' dw is summed per weight in one order; the lowering's image team
         * sums each thread's images apart (test_image_team). */
        if (L->ws[0] == 1 || (m == 2 && D->i1))
            assert_same_bits(r[m][1].dw, r[m][0].dw, "dw", runs);
    }
    tg_conv_direct = saved_mode;
    tg_set_num_threads(saved);
    /* Mode 1 changes only the data gradient, and only where it is a correlation. */
    snprintf(runs, sizeof runs, "%s, mode 1 vs 0", L->name);
    assert_same_bits(r[1][0].y, r[0][0].y, "y", runs);
    assert_same_bits(r[1][0].dw, r[0][0].dw, "dw", runs);
    if (!D->gather)
        assert_same_bits(r[1][0].dx, r[0][0].dx, "dx", runs);
    /* One input channel in mode 2: the forward sums as the lowering's GEMM does (the bias added
     * last), so at the AVX-512 level, where that GEMM runs, y is the same bit for bit. */
    if (D->i1 && tg_sgemm_avx512_active()) {
        snprintf(runs, sizeof runs, "%s, mode 2 vs the lowering", L->name);
        assert_same_bits(r[2][0].y, r[0][0].y, "y", runs);
    }
    for (int m = 0; m < 3; m++)
        for (int t = 0; t < 2; t++)
            conv_result_release(&r[m][t]);
    layer_inputs_release(&in);
}

/* Odd planes; paddings 0, 1, 2 and beyond the kernel; strides 1 and 2; dilation; batches of 1
 * and 17; a non-square kernel; the GAN's 64 -> 1 and 1 -> 64 layers at a smaller batch. */
static void test_direct_paths(void **state)
{
    (void)state;
    const direct_layer layers[] = {
        {{"o1 5x5 p2, GAN 64->1", false, {5, 64, 28, 28}, {1, 64, 5, 5}, 1, 2, 1}, true, false},
        {{"o1 3x3 p1, 17 images, 13x11", false, {17, 5, 13, 11}, {1, 5, 3, 3}, 1, 1, 1},
         true,
         false},
        {{"o1 5x5 p2, one image, 9x20", false, {1, 3, 9, 20}, {1, 3, 5, 5}, 1, 2, 1}, true, false},
        {{"o1 3x3 p0, 12x12", false, {3, 4, 12, 12}, {1, 4, 3, 3}, 1, 0, 1}, true, false},
        {{"o1 3x3 p2 dil 2, 15x17", false, {3, 2, 15, 17}, {1, 2, 3, 3}, 1, 2, 2}, true, false},
        {{"o1 3x3 p5 dil 2 (scatter)", false, {2, 2, 15, 17}, {1, 2, 3, 3}, 1, 5, 2}, false, false},
        {{"o1 5x5 s2 p2 (scatter)", false, {4, 3, 14, 13}, {1, 3, 5, 5}, 2, 2, 1}, false, false},
        {{"o1 2x3 p1 (scatter)", false, {2, 3, 9, 9}, {1, 3, 2, 3}, 1, 1, 1}, false, false},
        {{"i1 3x3, GAN 1->64", false, {3, 1, 28, 28}, {64, 1, 3, 3}, 1, 0, 1}, false, true},
        {{"i1 3x3 p0, 17 images", false, {17, 1, 11, 9}, {8, 1, 3, 3}, 1, 0, 1}, false, true},
        {{"i1 5x5 p2, 13x31", false, {2, 1, 13, 31}, {5, 1, 5, 5}, 1, 2, 1}, false, true},
        {{"i1 3x3 p3 dil 2, one image", false, {1, 1, 10, 9}, {4, 1, 3, 3}, 1, 3, 2}, false, true},
        {{"i1 3x3 s2 p1 (lowering)", false, {2, 1, 11, 11}, {4, 1, 3, 3}, 2, 1, 1}, false, false},
    };
    for (size_t i = 0; i < sizeof layers / sizeof layers[0]; i++)
        check_direct_layer(&layers[i]);
}

/* Output channels 0 (w [0, C, k, k] for conv2d, [C, 0, k, k] for conv_transpose2d): y is empty,
 * so x's gradient is zero. The backward gets it uninitialised (fresh_grads), from an allocator
 * cache filled with NaN buffers of its size, and must still give zeros; and 1 + 0 where it
 * accumulates. */
static void test_empty_output_gradients(void **state)
{
    (void)state;
    const int64_t xs[4] = {2, 3, 6, 6};
    for (int transpose = 0; transpose < 2; transpose++) {
        const int64_t ws[4] = {transpose ? 3 : 0, transpose ? 0 : 3, 3, 3};
        for (int accumulate = 0; accumulate < 2; accumulate++) {
            test_poison_cache(4, xs);
            tg_tensor *x = tensor4(xs, NULL, true), *w = tensor4(ws, NULL, true);
            assert_int_equal(tg_tensor_fill_(x, 1.0f), TG_OK);
            if (accumulate)
                assert_non_null(x->grad = tg_tensor_full(4, xs, 1.0f));
            tg_tape *tape = tg_tape_begin(TG_GRAD);
            tg_tensor *y = transpose ? tg_conv_transpose2d(x, w, TG_NONE, 2, 1, 1)
                                     : tg_conv2d(x, w, TG_NONE, 1, 1, 1);
            assert_non_null(y);
            assert_int_equal(y->numel, 0);
            tg_tensor *dy = tg_tensor_zeros(y->ndim, y->shape);
            assert_int_equal(tg_backward_grad(y, dy), TG_OK);
            assert_int_equal(tg_tape_end(tape), TG_OK); /* y was the tape's */
            assert_non_null(x->grad);
            for (int64_t i = 0; i < x->numel; i++)
                if (x->grad->data[i] != (float)accumulate)
                    fail_msg("%s, %s: dx[%lld] = %g", transpose ? "conv_transpose2d" : "conv2d",
                             accumulate ? "accumulating" : "fresh", (long long)i,
                             (double)x->grad->data[i]);
            tg_tensor_release(dy);
            tg_tensor_release(x);
            tg_tensor_release(w);
        }
    }
}

int main(void)
{
    /* These tests are the lowering's (and its packing's and threads'): conv2d's Winograd path,
     * which would take some of their layers, is compared against it in test_winograd. */
    tg_conv_winograd = 0;
    const struct CMUnitTest tests[] = {
        TG_TEST(test_golden_conv2d_s2_p1),
        TG_TEST(test_golden_conv2d_dilation2),
        TG_TEST(test_golden_conv2d_one_output_channel),
        TG_TEST(test_golden_convt_k4_s2_p1),
        TG_TEST(test_golden_convt_k3_s2_p1_op1),
        TG_TEST(test_conv2d_errors),
        TG_TEST(test_conv_transpose2d_errors),
        TG_TEST(test_empty_output_gradients),
        TG_TEST(test_null_input_keeps_error),
        TG_TEST(test_null_bias_keeps_error),
        TG_TEST(test_conv2d_chunking),
        TG_TEST(test_conv2d_chunking_staged),
        TG_TEST(test_conv_transpose2d_chunking),
        TG_TEST(test_conv_transpose2d_chunking_staged),
        TG_TEST(test_threads_equal),
        TG_TEST(test_direct_blocks),
        TG_TEST(test_second_backward),
        TG_TEST(test_implicit_bit_identical),
        TG_TEST(test_taps_without_bias),
        TG_TEST(test_implicit_weight_grad_op),
        TG_TEST(test_image_team),
        TG_TEST(test_forward_team),
        TG_TEST(test_implicit_dgrad),
        TG_TEST(test_implicit_dgrad_weight_grad_op),
        TG_TEST(test_gemm_against_openblas),
        TG_TEST(test_gemm_threads),
        TG_TEST(test_direct_paths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
