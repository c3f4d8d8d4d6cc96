/* conv2d's Winograd path (autograd/winograd.c): its matrices against 1-D correlation in double,
 * y, dx, dw and db against the lowering (tg_conv_winograd 0) over many shapes at 1 and 2
 * threads, y and dx bit for bit at 1 and 2 threads, fresh and accumulating gradients, and the
 * path taken for the GAN's layers. */
#include "common.h"

#include "../autograd/internal.h"
#include "../autograd/winograd.h"

#include <stdio.h>

/* ---- the matrices ---------------------------------------------------------------------------- */

/* y = A^T ((G g) .* (B^T d)) is the correlation y_i = sum_k d[i + k] g[k], in double, for
 * integer data (every product exact, so only the fractions in G round). */
static void check_matrices_1d(int m, int r)
{
    enum { TM = TG_WINO_TMAX };
    const int T = tg_winograd_tile(m, r);
    assert_int_equal(T, m + r - 1);
    double A[TM * TG_WINO_MMAX], B[TM * TM], G[TM * 5];
    assert_true(tg_winograd_matrices(m, r, A, B, G));
    uint64_t s = 12345;
    for (int trial = 0; trial < 200; trial++) {
        double d[TM], g[5], u[TM], v[TM];
        for (int i = 0; i < T; i++)
            d[i] = (double)((s = s * 6364136223846793005ULL + 1) >> 59) - 16.0;
        for (int k = 0; k < r; k++)
            g[k] = (double)((s = s * 6364136223846793005ULL + 1) >> 59) - 16.0;
        for (int j = 0; j < T; j++) {
            u[j] = v[j] = 0.0;
            for (int k = 0; k < r; k++)
                u[j] += G[j * r + k] * g[k];
            for (int i = 0; i < T; i++)
                v[j] += B[i * T + j] * d[i];
        }
        for (int i = 0; i < m; i++) {
            double want = 0.0, got = 0.0;
            for (int k = 0; k < r; k++)
                want += d[i + k] * g[k];
            for (int j = 0; j < T; j++)
                got += A[j * m + i] * u[j] * v[j];
            if (!(fabs(got - want) <= 1e-11))
                fail_msg("F(%d, %d): y[%d] = %.17g, correlation %.17g", m, r, i, got, want);
        }
    }
}

static void test_matrices(void **state)
{
    (void)state;
    check_matrices_1d(4, 2);
    check_matrices_1d(4, 3);
    check_matrices_1d(4, 5);
    check_matrices_1d(6, 3);
    double A[48], B[64], G[40];
    assert_false(tg_winograd_matrices(4, 4, A, B, G));
    assert_false(tg_winograd_matrices(6, 5, A, B, G));
    assert_int_equal(tg_winograd_tile(4, 4), 0);
    assert_int_equal(tg_winograd_tile(6, 2), 0);
    /* The variant taken: the fewest points, ties to F(4x4, 3x3) (D's 11 x 11 output: 4 tiles
     * of 64 points against 9 of 36; 12 x 12: 4 of 64 against 9 of 36; 13 x 13 and 14 x 14: 9
     * of 64 against 16 of 36, a tie; 28 x 28: 25 of 64 against 49 of 36). */
    assert_int_equal(tg_winograd_out_tile(11, 11, 3), 6);
    assert_int_equal(tg_winograd_out_tile(13, 13, 3), 4);
    assert_int_equal(tg_winograd_out_tile(14, 14, 3), 4);
    assert_int_equal(tg_winograd_out_tile(28, 28, 3), 6);
    assert_int_equal(tg_winograd_out_tile(4, 4, 3), 4);
    assert_int_equal(tg_winograd_out_tile(11, 11, 5), 4);
}

/* ---- against the lowering -------------------------------------------------------------------- */

static tg_tensor *tensor4(const int64_t shape[4], bool grad, uint64_t seed)
{
    tg_tensor *t = tg_tensor_new(4, shape);
    assert_non_null(t);
    tg_rng rng;
    tg_rng_seed(&rng, seed);
    assert_int_equal(tg_tensor_uniform_(t, &rng, -1.0f, 1.0f), TG_OK);
    if (grad)
        assert_int_equal(tg_tensor_set_requires_grad(t, true), TG_OK);
    return t;
}

/* r = 4 stands for the stride-2 path's layers: a 4 x 4 kernel at stride 2
 * (tg_winograd_s2_applies); every other r is at stride 1. */
typedef struct {
    int64_t N, Ci, H, W, Co;
    int r, pad;
} shape;

static int stride_of(const shape *s)
{
    return s->r == 4 ? 2 : 1;
}

typedef struct {
    tg_tensor *x, *w, *b, *dy;
} inputs;

static inputs inputs_new(const shape *s, uint64_t seed)
{
    const int64_t xs[4] = {s->N, s->Ci, s->H, s->W}, ws[4] = {s->Co, s->Ci, s->r, s->r};
    const int st = stride_of(s);
    const int64_t ys[4] = {s->N, s->Co, (s->H + 2 * s->pad - s->r) / st + 1,
                           (s->W + 2 * s->pad - s->r) / st + 1};
    inputs in = {tensor4(xs, true, seed), tensor4(ws, true, seed + 1), NULL,
                 tensor4(ys, false, seed + 3)};
    in.b = tg_tensor_new(1, &s->Co);
    assert_non_null(in.b);
    tg_rng rng;
    tg_rng_seed(&rng, seed + 2);
    assert_int_equal(tg_tensor_uniform_(in.b, &rng, -1.0f, 1.0f), TG_OK);
    assert_int_equal(tg_tensor_set_requires_grad(in.b, true), TG_OK);
    return in;
}

static void inputs_release(inputs *in)
{
    tg_tensor_release(in->x);
    tg_tensor_release(in->w);
    tg_tensor_release(in->b);
    tg_tensor_release(in->dy);
}

/* y, dx, dw, db of one run, with backwards backward calls on the same tape (the second and
 * later ones accumulate). */
typedef struct {
    tg_tensor *y, *dx, *dw, *db;
} result;

/* The op's y of in under a tape: conv2d for a shape, conv_transpose2d for a convt_shape. */
typedef tg_tensor *(*conv_op)(const void *s, const inputs *in);

/* run's body for either op. */
static result run_op(conv_op op, const void *s, const inputs *in, int winograd, int threads,
                     int backwards)
{
    int saved = tg_get_num_threads(), saved_mode = tg_conv_winograd;
    tg_set_num_threads(threads);
    tg_conv_winograd = winograd;
    tg_tensor_zero_grad(in->x);
    tg_tensor_zero_grad(in->w);
    tg_tensor_zero_grad(in->b);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = op(s, in);
    if (!y)
        fail_msg("%s", tg_last_error());
    result res = {tg_tensor_retain(y), NULL, NULL, NULL};
    for (int i = 0; i < backwards; i++)
        assert_int_equal(tg_backward_grad(y, in->dy), TG_OK);
    assert_int_equal(tg_tape_end(tape), TG_OK);
    res.dx = tg_tensor_clone(in->x->grad);
    res.dw = tg_tensor_clone(in->w->grad);
    res.db = tg_tensor_clone(in->b->grad);
    assert_true(res.dx && res.dw && res.db);
    tg_conv_winograd = saved_mode;
    tg_set_num_threads(saved);
    return res;
}

static tg_tensor *conv2d_of(const void *sp, const inputs *in)
{
    const shape *s = sp;
    return tg_conv2d(in->x, in->w, in->b, stride_of(s), s->pad, 1);
}

static result run(const shape *s, const inputs *in, int winograd, int threads, int backwards)
{
    return run_op(conv2d_of, s, in, winograd, threads, backwards);
}

static void result_release(result *r)
{
    tg_tensor_release(r->y);
    tg_tensor_release(r->dx);
    tg_tensor_release(r->dw);
    tg_tensor_release(r->db);
}

/* max |a - b| over max |b|. */
static double max_rel_diff(const tg_tensor *a, const tg_tensor *b)
{
    assert_true(tg_shape_equal(a, b));
    double d = 0.0, m = 0.0;
    for (int64_t i = 0; i < a->numel; i++) {
        d = fmax(d, fabs((double)a->data[i] - b->data[i]));
        m = fmax(m, fabs((double)b->data[i]));
    }
    return m > 0 ? d / m : d;
}

static bool same_bits(const tg_tensor *a, const tg_tensor *b)
{
    return tg_shape_equal(a, b) && memcmp(a->data, b->data, (size_t)a->numel * 4) == 0;
}

static bool applies(const shape *s)
{
    const int st = stride_of(s);
    const int64_t Ho = (s->H + 2 * s->pad - s->r) / st + 1,
                  Wo = (s->W + 2 * s->pad - s->r) / st + 1;
    if (st == 2)
        return tg_winograd_s2_applies(s->N, s->Ci, s->Co, Ho, Wo, s->r, s->r, 2, s->pad, 1);
    return tg_winograd_applies(s->N, s->Ci, s->H, s->W, s->Co, Ho, Wo, s->r, s->r, 1, s->pad, 1);
}

/* Winograd against the lowering, relative to the largest magnitude, at threads threads (and
 * backwards backward calls: 2 checks accumulation); where the path applies (at the AVX-512
 * level) some value of each of y, dx and dw must differ in its last bits, or the path never
 * ran there. */
static void check_shape(const shape *s, int threads, int backwards)
{
    inputs in = inputs_new(s, (uint64_t)(s->H * 131 + s->Ci * 7 + s->r));
    result a = run(s, &in, 1, threads, backwards), b = run(s, &in, 0, threads, backwards);
    const double tol = 2e-5;
    const double dy = max_rel_diff(a.y, b.y), ddx = max_rel_diff(a.dx, b.dx),
                 ddw = max_rel_diff(a.dw, b.dw), ddb = max_rel_diff(a.db, b.db);
    if (!(dy <= tol && ddx <= tol && ddw <= tol && ddb <= tol))
        fail_msg("N %lld Ci %lld %lldx%lld Co %lld r %d pad %d, %d thread(s), %d backward(s): "
                 "Winograd vs lowering off by y %.3g dx %.3g dw %.3g db %.3g",
                 (long long)s->N, (long long)s->Ci, (long long)s->H, (long long)s->W,
                 (long long)s->Co, s->r, s->pad, threads, backwards, dy, ddx, ddw, ddb);
    /* Forward and backward each: rounding differs somewhere in thousands of values. */
    if (applies(s) && (same_bits(a.y, b.y) || same_bits(a.dx, b.dx) || same_bits(a.dw, b.dw)))
        fail_msg("%lldx%lld r %d: y, dx or dw are the lowering's bits: the path did not run",
                 (long long)s->H, (long long)s->W, s->r);
    result_release(&a);
    result_release(&b);
    inputs_release(&in);
}

static void test_against_lowering(void **state)
{
    (void)state;
    /* Sizes where tiles hang over the edge (odd, not multiples of m), the smallest output the
     * path takes, channels at and below the threshold, one image and several. */
    static const int64_t sizes[][2] = {{13, 13}, {14, 14}, {9, 7}, {8, 11}};
    static const int64_t chans[][2] = {{32, 32}, {33, 40}, {48, 35}, {31, 32}};
    int count = 0;
    for (int r = 3; r <= 5; r += 2)
        for (int pad = 0; pad < r; pad++)
            for (int z = 0; z < 4; z++) {
                const int c = (r + pad + z) % 4;
                shape s = {1 + (pad + z) % 3, chans[c][0], sizes[z][0], sizes[z][1],
                           chans[c][1],       r,           pad};
                check_shape(&s, 1 + (count++ % 2), 1);
            }
    /* The smallest output taken: 4 x 4. */
    shape small = {2, 32, 6, 6, 32, 3, 0};
    check_shape(&small, 1, 1);
    check_shape(&small, 2, 1);
}

/* A second backward on the same tape adds to the first one's gradients. */
static void test_accumulate(void **state)
{
    (void)state;
    const shape shapes[] = {{3, 40, 11, 10, 36, 5, 2}, {2, 36, 13, 13, 40, 3, 0}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int threads = 1; threads <= 2; threads++) {
            check_shape(&shapes[i], threads, 2);
            inputs in = inputs_new(&shapes[i], 50 + i);
            result one = run(&shapes[i], &in, 1, threads, 1),
                   two = run(&shapes[i], &in, 1, threads, 2);
            /* Fresh gradients are the first backward's terms; the second adds the same again
             * (term by term into what is there: twice the first within rounding). */
            for (int64_t k = 0; k < one.dx->numel; k++)
                one.dx->data[k] *= 2.0f;
            for (int64_t k = 0; k < one.dw->numel; k++)
                one.dw->data[k] *= 2.0f;
            const double ddx = max_rel_diff(two.dx, one.dx), ddw = max_rel_diff(two.dw, one.dw);
            if (!(ddx <= 1e-6 && ddw <= 1e-6))
                fail_msg("shape %zu: two backwards vs twice one off by dx %.3g dw %.3g", i, ddx,
                         ddw);
            result_release(&one);
            result_release(&two);
            inputs_release(&in);
        }
}

/* y and dx bit for bit at 1 and 2 threads (and at the batch split into other images per
 * thread), dw within rounding: each thread sums its own images' part. On the lowering and on
 * the Winograd path, at the AVX-512 level (our GEMM's columns never depend on the split). */
static void test_threads_bitwise(void **state)
{
    (void)state;
    /* Batches of 3-5 images take the lowering (too many empty lanes for Winograd), 13-16 the
     * Winograd path. */
    const shape shapes[] = {{5, 48, 14, 14, 32, 5, 2},  {3, 32, 13, 13, 48, 3, 0},
                            {4, 32, 9, 7, 32, 3, 1},    {16, 48, 14, 14, 32, 5, 2},
                            {13, 32, 13, 13, 48, 3, 0}, {14, 32, 9, 7, 32, 3, 1}};
    if (!tg_sgemm_avx512_active()) {
        /* Below the AVX-512 level (TG_ISA=avx2) neither runs on our GEMM: the lowering's
         * products are OpenBLAS's, whose last bits may depend on the thread count. */
        printf("SKIP: no AVX-512 GEMM here\n");
        return;
    }
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        if (applies(&shapes[i]) != (shapes[i].N >= 13))
            fail_msg("shape %zu: Winograd %s", i,
                     applies(&shapes[i]) ? "applies" : "does not apply");
        inputs in = inputs_new(&shapes[i], 70 + i);
        result a = run(&shapes[i], &in, 1, 1, 1), b = run(&shapes[i], &in, 1, 2, 1);
        if (!same_bits(a.y, b.y) || !same_bits(a.dx, b.dx))
            fail_msg("shape %zu: y or dx differ between 1 and 2 threads", i);
        if (!(max_rel_diff(b.dw, a.dw) <= 2e-5) || !same_bits(a.db, b.db))
            fail_msg("shape %zu: dw off by %.3g or db differs between 1 and 2 threads", i,
                     max_rel_diff(b.dw, a.dw));
        result_release(&a);
        result_release(&b);
        inputs_release(&in);
    }
}

/* Groups of 16 images, one a vector lane: batches that end inside a group (1, 15, 17, 33
 * images), threads' shares that end inside one (17 and 33 at 2 threads: 16 and the rest; 40 at
 * 3: 16, 16, 8), tiles mostly in the padding (4 x 4 images, pad r - 1), one tile per image
 * (several groups a chunk) and a group's tiles over several chunks (28 x 28): against the
 * lowering, and y and dx bit for bit at 1, 2 and 3 threads at the AVX-512 level. */
static void test_lane_groups(void **state)
{
    (void)state;
    const shape shapes[] = {{1, 32, 9, 9, 32, 3, 1},    {15, 32, 4, 4, 40, 5, 4},
                            {17, 36, 7, 6, 32, 3, 2},   {33, 32, 6, 6, 32, 3, 0},
                            {17, 32, 28, 28, 32, 5, 2}, {40, 32, 5, 5, 32, 3, 1}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        check_shape(&shapes[i], 1 + i % 2, 1 + (i / 2) % 2);
        if (!tg_sgemm_avx512_active())
            continue; /* the lowering on OpenBLAS ran: no promise of bits (design.md) */
        inputs in = inputs_new(&shapes[i], 130 + i);
        result a = run(&shapes[i], &in, 1, 1, 1);
        for (int threads = 2; threads <= 3; threads++) {
            result b = run(&shapes[i], &in, 1, threads, 1);
            if (!same_bits(a.y, b.y) || !same_bits(a.dx, b.dx))
                fail_msg("shape %zu: y or dx differ between 1 and %d threads", i, threads);
            result_release(&b);
        }
        result_release(&a);
        inputs_release(&in);
    }
}

/* 4 x 4 kernels at stride 2, as F(4x4, 2x2) over the input's four phases: against the
 * lowering at every padding the path takes (0 to 3), odd and even sizes, outputs of one tile
 * and of several, batches that end inside a lane group, one and two backwards; y and dx bit for
 * bit at 1, 2 and 3 threads; and a layer it does not take (4 Ci below the channel threshold),
 * which must be the lowering's bits. */
static void test_stride2(void **state)
{
    (void)state;
    const shape shapes[] = {
        {16, 8, 14, 14, 32, 4, 1}, {13, 16, 15, 13, 40, 4, 0}, {29, 9, 12, 16, 32, 4, 2},
        {16, 8, 9, 9, 36, 4, 3},   {30, 8, 28, 28, 33, 4, 1},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        if (tg_sgemm_avx512_active() && !applies(&shapes[i]))
            fail_msg("stride-2 shape %zu: the path does not take it", i);
        check_shape(&shapes[i], 1 + i % 2, 1 + (i / 2) % 2);
        if (!tg_sgemm_avx512_active())
            continue;
        inputs in = inputs_new(&shapes[i], 150 + i);
        result a = run(&shapes[i], &in, 1, 1, 1);
        for (int threads = 2; threads <= 3; threads++) {
            result b = run(&shapes[i], &in, 1, threads, 1);
            if (!same_bits(a.y, b.y) || !same_bits(a.dx, b.dx))
                fail_msg("stride-2 shape %zu: y or dx differ between 1 and %d threads", i, threads);
            result_release(&b);
        }
        result_release(&a);
        inputs_release(&in);
    }
    const shape below = {16, 7, 14, 14, 32, 4, 1};
    assert_false(applies(&below));
    inputs in = inputs_new(&below, 160);
    result a = run(&below, &in, 1, 1, 1), b = run(&below, &in, 0, 1, 1);
    if (!same_bits(a.y, b.y) || !same_bits(a.dx, b.dx) || !same_bits(a.dw, b.dw))
        fail_msg("4 Ci = 28 channels: the stride-2 path ran");
    result_release(&a);
    result_release(&b);
    inputs_release(&in);
}

/* conv_transpose2d with a 4 x 4 kernel at stride 2 runs the conv2d of test_stride2 backwards
 * (its y is that conv2d's dx, its dx that conv2d's y, its dw that conv2d's weight gradient
 * with x and dy swapped): y, dx, dw and db against the lowering after backwards backward
 * calls, the path seen to run, and y and dx bit for bit at 1 and 2 threads. */
typedef struct {
    int64_t N, C, H, W, O;
    int pad, op;
} convt_shape;

static tg_tensor *convt_of(const void *sp, const inputs *in)
{
    const convt_shape *s = sp;
    return tg_conv_transpose2d(in->x, in->w, in->b, 2, s->pad, s->op);
}

static result run_convt(const convt_shape *s, const inputs *in, int winograd, int threads,
                        int backwards)
{
    return run_op(convt_of, s, in, winograd, threads, backwards);
}

static void test_stride2_transposed(void **state)
{
    (void)state;
    const convt_shape shapes[] = {
        {16, 32, 7, 7, 16, 1, 0}, {13, 40, 6, 5, 9, 2, 1}, {16, 33, 9, 8, 8, 0, 1}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const convt_shape *s = &shapes[i];
        const int64_t Hy = 2 * s->H - 2 * s->pad + 2 + s->op,
                      Wy = 2 * s->W - 2 * s->pad + 2 + s->op;
        const int64_t xs[4] = {s->N, s->C, s->H, s->W}, ws[4] = {s->C, s->O, 4, 4};
        const int64_t ys[4] = {s->N, s->O, Hy, Wy};
        inputs in = {tensor4(xs, true, 170 + i), tensor4(ws, true, 180 + i), NULL,
                     tensor4(ys, false, 190 + i)};
        in.b = tg_tensor_new(1, &s->O);
        assert_non_null(in.b);
        assert_int_equal(tg_tensor_fill_(in.b, 0.25f), TG_OK);
        assert_int_equal(tg_tensor_set_requires_grad(in.b, true), TG_OK);
        const bool takes = tg_winograd_s2_applies(s->N, s->O, s->C, s->H, s->W, 4, 4, 2, s->pad, 1);
        if (tg_sgemm_avx512_active() && !takes)
            fail_msg("convT shape %zu: the path does not take it", i);
        const int backwards = 1 + (int)(i % 2);
        result a = run_convt(s, &in, 1, 1, backwards), b = run_convt(s, &in, 0, 1, backwards);
        const double dy = max_rel_diff(a.y, b.y), ddx = max_rel_diff(a.dx, b.dx),
                     ddw = max_rel_diff(a.dw, b.dw), ddb = max_rel_diff(a.db, b.db);
        if (!(dy <= 2e-5 && ddx <= 2e-5 && ddw <= 2e-5 && ddb <= 2e-5))
            fail_msg("convT shape %zu, %d backward(s): Winograd vs lowering off by y %.3g dx %.3g "
                     "dw %.3g db %.3g",
                     i, backwards, dy, ddx, ddw, ddb);
        if (takes && (same_bits(a.y, b.y) || same_bits(a.dx, b.dx) || same_bits(a.dw, b.dw)))
            fail_msg("convT shape %zu: y, dx or dw are the lowering's bits: the path did not run",
                     i);
        if (takes) {
            result c = run_convt(s, &in, 1, 2, backwards);
            if (!same_bits(a.y, c.y) || !same_bits(a.dx, c.dx))
                fail_msg("convT shape %zu: y or dx differ between 1 and 2 threads", i);
            result_release(&c);
        }
        result_release(&a);
        result_release(&b);
        inputs_release(&in);
    }
}

/* An image's y and dx do not depend on the rest of the batch (data-parallel ranks each get a
 * part of it): the first two images alone against the same two within a batch of five. */
static void test_batch_split(void **state)
{
    (void)state;
    const shape whole = {5, 40, 12, 12, 64, 5, 0}, part = {2, 40, 12, 12, 64, 5, 0};
    inputs a = inputs_new(&whole, 110), b = inputs_new(&part, 120);
    memcpy(b.x->data, a.x->data, (size_t)b.x->numel * sizeof(float));
    memcpy(b.w->data, a.w->data, (size_t)b.w->numel * sizeof(float));
    memcpy(b.b->data, a.b->data, (size_t)b.b->numel * sizeof(float));
    memcpy(b.dy->data, a.dy->data, (size_t)b.dy->numel * sizeof(float));
    result ra = run(&whole, &a, 1, 1, 1), rb = run(&part, &b, 1, 1, 1);
    if (memcmp(ra.y->data, rb.y->data, (size_t)rb.y->numel * sizeof(float)) != 0 ||
        memcmp(ra.dx->data, rb.dx->data, (size_t)rb.dx->numel * sizeof(float)) != 0)
        fail_msg("y or dx of the first two images depend on the rest of the batch");
    result_release(&ra);
    result_release(&rb);
    inputs_release(&a);
    inputs_release(&b);
}

/* Sum of a[i] * b[i] in double; *mag += the sum of their magnitudes. */
static double dot(const tg_tensor *a, const tg_tensor *b, double *mag)
{
    double s = 0.0;
    for (int64_t i = 0; i < a->numel; i++) {
        s += (double)a->data[i] * b->data[i];
        *mag += fabs((double)a->data[i] * b->data[i]);
    }
    return s;
}

/* dx and dw are the adjoints of the forward, without reference to the lowering (gradcheck's
 * inputs are too small for the path): y = conv(x, w) is bilinear, so
 * <y, dy> = <x, dx> = <w, dw>, here within 1e-6 of the terms' magnitudes. */
static void test_adjoints(void **state)
{
    (void)state;
    const shape shapes[] = {{16, 32, 9, 7, 40, 5, 3}, {14, 36, 11, 12, 32, 3, 1}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const shape *s = &shapes[i];
        if (!applies(s))
            skip(); /* below the AVX-512 level the path is off */
        inputs in = inputs_new(s, 90 + i);
        tg_tensor_fill_(in.b, 0.0f);
        result r = run(s, &in, 1, 2, 1);
        double scale = 0.0; /* the terms' magnitude: the sums cancel to far less */
        const double yy = dot(r.y, in.dy, &scale), xx = dot(in.x, r.dx, &scale),
                     ww = dot(in.w, r.dw, &scale);
        if (!(fabs(xx - yy) <= 1e-6 * scale && fabs(ww - yy) <= 1e-6 * scale))
            fail_msg("shape %zu: <y, dy> %.9g, <x, dx> %.9g, <w, dw> %.9g", i, yy, xx, ww);
        result_release(&r);
        inputs_release(&in);
    }
}

/* The GAN's layers take the path (at the AVX-512 level), its first and last convs do not, nor
 * small or ragged batches. */
static void test_gan_layers(void **state)
{
    (void)state;
    const shape g8 = {128, 128, 14, 14, 64, 5, 2}, d4 = {128, 64, 13, 13, 128, 3, 0};
    const shape g_last = {128, 64, 28, 28, 1, 5, 2}, d_first = {128, 1, 28, 28, 64, 3, 0};
    const bool on = tg_sgemm_avx512_active();
    assert_true(applies(&g8) == on && applies(&d4) == on);
    assert_false(applies(&g_last) || applies(&d_first));
    /* Batches that would leave over a quarter of a 16-image group empty take the lowering:
     * the GAN's last batch of 96 and a batch of 100 do not, 1, 17 and 33 do. */
    const int64_t batches[][2] = {{96, 1}, {100, 1}, {1, 0}, {17, 0}, {33, 0}};
    for (size_t i = 0; i < sizeof batches / sizeof batches[0]; i++) {
        shape b = g8;
        b.N = batches[i][0];
        assert_true(applies(&b) == (on && batches[i][1]));
    }
    int saved = tg_conv_winograd;
    tg_conv_winograd = 0;
    assert_false(applies(&g8) || applies(&d4));
    tg_conv_winograd = saved;
    /* One image of each, run: the error of the bench's shapes, relative to the largest
     * magnitude. */
    const shape one[] = {{2, 128, 14, 14, 64, 5, 2}, {2, 64, 13, 13, 128, 3, 0}};
    for (int i = 0; i < 2; i++)
        check_shape(&one[i], 2, 1);
}

/* F(6x6, 3x3) where it has fewer points than F(4x4, 3x3), against the lowering and against
 * F(4x4) (tg_winograd_m6 0): its own bits (it ran), both within the tolerance, with the
 * errors printed; batches ending inside a lane group, 1 and 2 threads. */
static void test_out_tile_six(void **state)
{
    (void)state;
    const shape shapes[] = {
        {16, 64, 13, 13, 128, 3, 0}, {29, 33, 9, 9, 40, 3, 1}, {13, 32, 28, 28, 32, 3, 1}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const shape *s = &shapes[i];
        const int64_t Ho = s->H + 2 * s->pad - 2;
        assert_int_equal(tg_winograd_out_tile(Ho, Ho, 3), 6);
        if (!applies(s))
            skip(); /* below the AVX-512 level the path is off */
        check_shape(s, 1 + (int)(i % 2), 1 + (int)(i % 2));
        inputs in = inputs_new(s, 200 + i);
        result six = run(s, &in, 1, 2, 1), low = run(s, &in, 0, 2, 1);
        tg_winograd_m6 = 0;
        result four = run(s, &in, 1, 2, 1);
        tg_winograd_m6 = 1;
        if (same_bits(six.y, four.y) || same_bits(six.dx, four.dx) || same_bits(six.dw, four.dw))
            fail_msg("shape %zu: F(6x6, 3x3) gave F(4x4, 3x3)'s bits: it did not run", i);
        print_message("%lldx%lld, Ci %lld: F(6x6, 3x3) y %.2g dx %.2g dw %.2g, F(4x4, 3x3) y %.2g "
                      "dx %.2g dw %.2g from the lowering\n",
                      (long long)s->H, (long long)s->W, (long long)s->Ci,
                      max_rel_diff(six.y, low.y), max_rel_diff(six.dx, low.dx),
                      max_rel_diff(six.dw, low.dw), max_rel_diff(four.y, low.y),
                      max_rel_diff(four.dx, low.dx), max_rel_diff(four.dw, low.dw));
        result_release(&six);
        result_release(&four);
        result_release(&low);
        inputs_release(&in);
    }
}

/* Channels past the GEMM's depth block of 256 (tensor/gemm.c): U packed whole and V and Z in
 * the kernel's panels over more than one block (Ci 261 and Co 270 are also off the 8-row and
 * 32-column panels), against the lowering at 1 and 2 threads. Then bf16 mode
 * (tg_set_matmul_precision), where they stay in rows (winograd.c, wino_run.packed): near the
 * FP32 results, and not their bits (its kernels ran). */
static void test_deep_channels(void **state)
{
    (void)state;
    const shape s = {16, 261, 9, 9, 270, 3, 1};
    check_shape(&s, 1, 1);
    check_shape(&s, 2, 1);
    if (!applies(&s) || !tg_isa_has_bf16()) {
        printf("SKIP (bf16 part): no Winograd or no AVX512_BF16 here\n");
        return;
    }
    inputs in = inputs_new(&s, 150);
    result f = run(&s, &in, 1, 2, 1);
    assert_int_equal(tg_set_matmul_precision(TG_MATMUL_BF16), TG_OK);
    result h = run(&s, &in, 1, 2, 1);
    assert_int_equal(tg_set_matmul_precision(TG_MATMUL_FP32), TG_OK);
    const double dy = max_rel_diff(h.y, f.y), ddx = max_rel_diff(h.dx, f.dx),
                 ddw = max_rel_diff(h.dw, f.dw);
    /* Measured 0.064, 0.034 and 0.052, as before the packed operands came: the
     * transforms' large values lose their low bits to bf16 and cancel in the sums. */
    if (!(dy <= 0.2 && ddx <= 0.2 && ddw <= 0.2) || same_bits(h.y, f.y) || same_bits(h.dx, f.dx) ||
        same_bits(h.dw, f.dw))
        fail_msg("bf16 against FP32: y %.3g dx %.3g dw %.3g (0: the same bits)", dy, ddx, ddw);
    print_message("bf16 against FP32: y %.3g dx %.3g dw %.3g\n", dy, ddx, ddw);
    result_release(&f);
    result_release(&h);
    inputs_release(&in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TG_TEST(test_matrices),           TG_TEST(test_against_lowering),
        TG_TEST(test_accumulate),         TG_TEST(test_threads_bitwise),
        TG_TEST(test_batch_split),        TG_TEST(test_adjoints),
        TG_TEST(test_gan_layers),         TG_TEST(test_lane_groups),
        TG_TEST(test_deep_channels),      TG_TEST(test_stride2),
        TG_TEST(test_stride2_transposed), TG_TEST(test_out_tile_six),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
