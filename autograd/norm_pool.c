/* batch_norm_act_pool2d: y = max_pool2d(act(batch_norm(x)), 2, 2, 0) as one op, act relu or
 * leaky_relu (slope > 0), for the convolutional discriminators' conv -> BatchNorm -> ReLU ->
 * MaxPool2d(2, 2) blocks (nn's Sequential fuses the three modules into it).
 *
 * The separate ops write the normalised activation y1 [N, C, H, W] (22 MB for the MNIST GAN's
 * first D block), read it back to pool it, keep it on the tape, and in the backward scatter a
 * dense gradient of it that batch norm's backward reads twice. Here y1 and its gradient exist
 * only in a 16 KB buffer:
 *   forward: batch norm's statistics passes per channel (bn_channel_stats); then plane by plane
 *     in memory order, y1 of a block of rows into the buffer, pooled there by pool.c's
 *     max_pool_2x2_row (the same tie and NaN rule, the same int32 in-plane argmax indices,
 *     kept in scratch);
 *   backward: batch norm's two passes, the sums (a block of channels image by image) and dx
 *     (plane by plane), each taking dy1 a piece at a time as max_pool2d's backward would have
 *     written it (zeros, and each pooled gradient at its argmax), times act'(z) with z made
 *     again from x (bn_act_grad).
 * Every expression, and the pieces the sums take (in each channel's order), are the separate
 * ops', so y, dx, dweight, dbias and the running statistics have the same bits as
 * tg_batch_norm_act followed by tg_max_pool2d(2, 2, 0) (tests/test_norm_pool.c), at any thread
 * count. Synchronised batch norm is not fused: the wrapper runs the two ops then. Scratch:
 * mean[C], invstd[C] (batch norm's layout, so its helpers read this node as their own), the
 * argmax indices [N, C, H/2, W/2], the backward's per-channel coefficients. */
#include "norm_internal.h"
#include "ops.h"
#include "pool_internal.h"

/* Widest x the forward's buffer holds two rows of; the wrapper runs the two ops for wider ones. */
#define BN_POOL_MAX_W 1024
/* The kernels' buffer, in floats (16 KB): the forward's rows of y1, the backward's pieces of
 * dy1, a block at a time. A vector load spanning several stores made just before waits for
 * them to retire (no store forwarding): the first version, which pooled each pair of rows, and
 * took each piece of dy1, right after writing it, stalled there. Written a block ahead of its
 * use, the buffer's stores are done when the loads come. */
#define BN_POOL_BUF 4096
/* Zeros after the forward's rows in the buffer, read by the last windows' unused lanes
 * (max_pool_2x2_row then never takes its slow zero-padded copy). */
#define BN_POOL_SLACK 16

static tg_status bn_pool_check(tg_node *n, int *ndim, int64_t shape[])
{
    const batch_norm_params *p = TG_PARAMS(n, batch_norm_params);
    const tg_tensor *x = n->in[0];
    const char *fn = "tg_batch_norm_act_pool2d";
    char sx[160];
    if (tg_batch_norm_check(n, ndim, shape) != TG_OK)
        return tg_last_status();
    if (p->reduce || p->sync1)
        return tg_set_error(TG_ERR_ARG,
                            "%s: a synchronised batch norm is not fused (run "
                            "tg_batch_norm_act and tg_max_pool2d)",
                            fn);
    if (p->act != TG_ACT_RELU && p->act != TG_ACT_LEAKY_RELU)
        return tg_set_error(TG_ERR_ARG,
                            "%s: act %d must be TG_ACT_RELU (%d) or "
                            "TG_ACT_LEAKY_RELU (%d)",
                            fn, p->act, TG_ACT_RELU, TG_ACT_LEAKY_RELU);
    if (x->ndim != 4)
        return tg_set_error(TG_ERR_SHAPE, "%s: x %s must be 4-D [N, C, H, W]", fn,
                            TG_SHAPE_STR(x, sx));
    const int64_t H = x->shape[2], W = x->shape[3];
    if (H < 2 || W < 2 || W > BN_POOL_MAX_W || H * W > INT32_MAX)
        return tg_set_error(TG_ERR_SHAPE,
                            "%s: x %s: H and W must be at least 2 (one 2 x 2 window), W at most "
                            "%d and H * W at most %d (the int32 argmax indices)",
                            fn, TG_SHAPE_STR(x, sx), BN_POOL_MAX_W, INT32_MAX);
    shape[2] = H / 2;
    shape[3] = W / 2;
    /* after batch norm's mean[C] and invstd[C]: the argmax indices, then the backward's
     * coefficients g[C], a[C], k[C] */
    n->scratch_bytes += (size_t)tg_shape_numel(4, shape) * sizeof(int32_t) +
                        3 * (size_t)(x->shape[1] > 0 ? x->shape[1] : 1) * sizeof(float);
    return TG_OK;
}

/* The argmax indices, after mean[C] and invstd[C] (the batch norm check's scratch). */
static int32_t *bn_pool_arg(const tg_node *n)
{
    const int64_t C = n->in[0]->shape[1];
    return (int32_t *)((float *)n->scratch + 2 * (C > 0 ? C : 1));
}

/* y1 = act(z) of the n values at xp into buf, as batch_norm_act's forward makes them. */
static inline void bn_pool_rows(const batch_norm_params *p, bn_affine f, const float *restrict xp,
                                int64_t n, float *restrict buf)
{
    for (int64_t j = 0; j < n; j++)
        buf[j] = bn_z(f, xp[j]);
    bn_act_apply(p, buf, n);
}

TG_ISA_KERNEL(bn_pool_forward, (tg_node * n), (n))
{
    const batch_norm_params *p = TG_PARAMS(n, batch_norm_params);
    const tg_tensor *x = n->in[0];
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    const int64_t S = H * W, Ho = H / 2, Wo = W / 2;
    float *mean = n->scratch, *invstd = mean + C;
    int32_t *arg = bn_pool_arg(n);
    const float *xd = x->data;
    float *y = n->out->data;
    if (x->numel == 0)
        return; /* no statistics, nothing to pool (as batch_norm's forward) */
    TG_PARALLEL_FOR_WORK(C, N * S)
    for (int64_t c = 0; c < C; c++)
        bn_channel_stats(p, xd, N, C, S, c, N * S, mean, invstd);
    /* Then plane by plane in memory order, in blocks of row pairs (rows 2 oh and 2 oh + 1):
     * x read and y written in sequence. A channel at a time instead (x's third pass from L2)
     * wrote y and the indices in runs of a plane's outputs, C planes apart, and their stores
     * missed (1.15x the two ops' time on D's first block). */
    const int64_t per_block = BN_POOL_BUF / (2 * W);
    TG_PARALLEL_FOR_WORK(N * C, S)
    for (int64_t pl = 0; pl < N * C; pl++) {
        const bn_affine f = bn_affine_of(n, pl % C);
        const float *xp = xd + pl * S;
        float *yp = y + pl * Ho * Wo;
        int32_t *ap = arg + pl * Ho * Wo;
        float buf[BN_POOL_BUF + BN_POOL_SLACK];
        for (int64_t oh0 = 0; oh0 < Ho; oh0 += per_block) {
            const int64_t oh1 = oh0 + per_block < Ho ? oh0 + per_block : Ho;
            const int64_t len = (oh1 - oh0) * 2 * W;
            bn_pool_rows(p, f, xp + 2 * oh0 * W, len, buf);
            memset(buf + len, 0, sizeof(float) * BN_POOL_SLACK);
            for (int64_t oh = oh0; oh < oh1; oh++) {
                const float *r0 = buf + (oh - oh0) * 2 * W;
                max_pool_2x2_row(r0, r0 + W, buf + len + BN_POOL_SLACK, W, 2 * oh * W, Wo,
                                 yp + oh * Wo, ap + oh * Wo);
            }
        }
    }
    if (p->training && p->running_mean) {
        tg_tensor_bump_version(p->running_mean);
        tg_tensor_bump_version(p->running_var);
    }
}

/* The values [j0, j0 + len) of one plane's dy1 (W wide, pooled into Ho x Wo), as max_pool2d's
 * backward writes them into a fresh gradient: zeros, plus each pooled gradient dyp at its
 * argmax ap. The windows do not overlap, so each value gets one at most: 0 + dyp, which is its
 * bits but for -0 (stored, not added to the zero: no load waiting on the store before). */
static inline void bn_pool_dense(const float *restrict dyp, const int32_t *restrict ap, int64_t W,
                                 int64_t Ho, int64_t Wo, int64_t j0, int64_t len,
                                 float *restrict buf)
{
    memset(buf, 0, (size_t)len * sizeof(float));
    if (j0 == 0 && len >= 2 * Ho * W) { /* every window's rows: no index falls outside */
        for (int64_t o = 0; o < Ho * Wo; o++)
            buf[ap[o]] = 0.0f + dyp[o];
        return;
    }
    const int64_t oh0 = j0 / W / 2, oh1 = (j0 + len - 1) / W / 2 + 1;
    for (int64_t o = oh0 * Wo; o < (oh1 < Ho ? oh1 : Ho) * Wo; o++) {
        const int64_t a = ap[o] - j0;
        if (a >= 0 && a < len)
            buf[a] = 0.0f + dyp[o];
    }
}

/* Channels whose sums one task of the backward adds up, image by image. */
#define BN_POOL_CB 16

/* What the backward's passes read and write. */
typedef struct {
    const tg_node *n;
    const batch_norm_params *p;
    const float *x, *dy, *mean, *invstd, *coef; /* coef: g[C], a[C], k[C] */
    const int32_t *arg;
    float *dx;
    int64_t C, S, W, Ho, Wo, piece;
    bool dx_set;
} bn_pool_bw;

/* A place in bn_pool_walk's sequence of planes: plane k, image i, channel c0 + cq, offset j0
 * in the plane. */
typedef struct {
    int64_t k, i, cq, j0;
} bn_pool_pos;

/* a moved past a piece of len values (planes of S values, nc channels an image). */
static inline void bn_pool_step(bn_pool_pos *a, int64_t len, int64_t S, int64_t nc)
{
    a->j0 += len;
    if (a->j0 < S)
        return;
    a->j0 = 0;
    a->k++;
    if (++a->cq == nc)
        a->cq = 0, a->i++;
}

/* One pass over the pieces of the planes k0 <= k < k1 of the sequence (k / nc) * C + c0 +
 * k % nc (a block of nc channels, image by image; nc = C: every plane in memory order): a
 * block of pieces' dy1 built into dense first (bn_pool_dense), then each piece's dz = dy1 *
 * act'(z) either added to its channel's sums acc[2 (c - c0)], acc[2 (c - c0) + 1] or, acc NULL,
 * turned into dx. The pieces are batch norm backward's (bn_piece_len) and a channel's come in
 * its order (image, then offset), so the sums add the same values in the same order. */
static inline void bn_pool_walk(const bn_pool_bw *b, int64_t k0, int64_t k1, int64_t nc, int64_t c0,
                                bn_acc *acc)
{
    const int64_t C = b->C, S = b->S, HWo = b->Ho * b->Wo;
    float dense[BN_POOL_BUF], dz[BN_DZ_RUN];
    /* plane k is image k / nc, channel c0 + k % nc, counted without dividing per piece */
    bn_pool_pos at = {k0, k0 / nc, k0 % nc, 0};
    while (at.k < k1) {
        bn_pool_pos fill = at;
        for (int64_t used = 0; fill.k < k1;) {
            const int64_t len = S - fill.j0 < b->piece ? S - fill.j0 : b->piece;
            if (used + len > BN_POOL_BUF)
                break;
            const int64_t q = (fill.i * C + c0 + fill.cq) * HWo;
            bn_pool_dense(b->dy + q, b->arg + q, b->W, b->Ho, b->Wo, fill.j0, len, dense + used);
            used += len;
            bn_pool_step(&fill, len, S, nc);
        }
        for (int64_t used = 0; at.k != fill.k || at.j0 != fill.j0;) {
            const int64_t c = c0 + at.cq, o = (at.i * C + c) * S + at.j0;
            const int64_t len = S - at.j0 < b->piece ? S - at.j0 : b->piece;
            const float mu = b->mean[c], is = b->invstd[c];
            const float *dzp =
                bn_act_grad(b->p, dense + used, b->x + o, NULL, bn_affine_of(b->n, c), len, dz);
            if (acc)
                bn_acc_dy(&acc[2 * at.cq], &acc[2 * at.cq + 1], b->x + o, dzp, NULL, len, mu, is);
            else
                bn_dx_run(b->dx + o, dzp, b->x + o, len, b->coef[c], b->coef[C + c],
                          b->coef[2 * C + c], mu, is, b->dx_set);
            used += len;
            bn_pool_step(&at, len, S, nc);
        }
    }
}

/* batch_norm_backward's [N, C, S] loop in two passes over x in memory order (see the forward:
 * a channel at a time, the pooled gradient's and the indices' short runs C planes apart cost
 * more than the dense gradient saved): the sums, a block of channels image by image, and their
 * coefficients; then dx, plane by plane. */
TG_ISA_KERNEL(bn_pool_backward, (tg_node * n), (n))
{
    const batch_norm_params *p = TG_PARAMS(n, batch_norm_params);
    const tg_tensor *x = n->in[0];
    const int64_t N = x->shape[0], C = x->shape[1], W = x->shape[3], S = x->shape[2] * W;
    const int64_t Ho = n->out->shape[2], Wo = n->out->shape[3], m = N * S;
    const float *mean = n->scratch, *invstd = mean + C;
    const int32_t *arg = bn_pool_arg(n);
    float *coef = (float *)(void *)(arg + N * C * Ho * Wo);
    const int iw = 1, ib = p->has_weight ? 2 : 1;
    const batch_norm_grads gr = {.dx = tg_grad_of(n, 0),
                                 .dx_set = tg_grad_fresh(n, 0),
                                 .dw = p->has_weight ? tg_grad_of(n, iw) : NULL,
                                 .dw_set = tg_grad_fresh(n, iw),
                                 .db = p->has_bias ? tg_grad_of(n, ib) : NULL,
                                 .db_set = tg_grad_fresh(n, ib)};
    const bool need_sums = gr.dw || gr.db || (gr.dx && p->training);
    if (x->numel == 0) {
        /* Sums over no values: 0 into fresh weight and bias gradients. */
        if (gr.dw && gr.dw_set)
            memset(gr.dw, 0, (size_t)C * sizeof(float));
        if (gr.db && gr.db_set)
            memset(gr.db, 0, (size_t)C * sizeof(float));
        return;
    }
    const bn_pool_bw b = {.n = n,
                          .p = p,
                          .x = x->data,
                          .dy = n->out->grad->data,
                          .mean = mean,
                          .invstd = invstd,
                          .coef = coef,
                          .arg = arg,
                          .dx = gr.dx,
                          .C = C,
                          .S = S,
                          .W = W,
                          .Ho = Ho,
                          .Wo = Wo,
                          .piece = bn_piece_len(p, S), /* <= BN_DZ_RUN <= BN_POOL_BUF */
                          .dx_set = gr.dx_set};
    const int64_t blocks = (C + BN_POOL_CB - 1) / BN_POOL_CB;
    TG_PARALLEL_FOR_WORK(blocks, m * BN_POOL_CB)
    for (int64_t blk = 0; blk < blocks; blk++) {
        const int64_t c0 = blk * BN_POOL_CB, nc = C - c0 < BN_POOL_CB ? C - c0 : BN_POOL_CB;
        bn_acc acc[2 * BN_POOL_CB];
        for (int64_t q = 0; q < 2 * nc; q++)
            acc[q] = (bn_acc){0};
        if (need_sums)
            bn_pool_walk(&b, 0, N * nc, nc, c0, acc);
        for (int64_t q = 0; q < nc; q++) {
            const int64_t c = c0 + q;
            batch_norm_dcoef(p, batch_norm_weight(n), c, m,
                             need_sums ? bn_acc_total(&acc[2 * q]) : 0.0,
                             need_sums ? bn_acc_total(&acc[2 * q + 1]) : 0.0, invstd[c], &gr,
                             &coef[c], &coef[C + c], &coef[2 * C + c]);
        }
    }
    if (!gr.dx)
        return;
    /* groups of whole planes filling the buffer (one plane, in pieces, when it is larger) */
    const int64_t group = S < BN_POOL_BUF ? BN_POOL_BUF / S : 1;
    const int64_t groups = (N * C + group - 1) / group;
    TG_PARALLEL_FOR_WORK(groups, group * S)
    for (int64_t gi = 0; gi < groups; gi++)
        bn_pool_walk(&b, gi * group, gi * group + group < N * C ? gi * group + group : N * C, C, 0,
                     NULL);
}

/* y1 = act(batch_norm(x)) of the whole x into y1, the forward's values (the same kernel
 * expressions at the same ISA level, so the same bits: the same argmax and relu mask). */
TG_ISA_KERNEL(bn_pool_remake, (const tg_node *n, float *y1), (n, y1))
{
    const batch_norm_params *p = TG_PARAMS(n, batch_norm_params);
    const tg_tensor *x = n->in[0];
    const int64_t N = x->shape[0], C = x->shape[1], S = x->shape[2] * x->shape[3];
    TG_PARALLEL_FOR_WORK(C, N * S)
    for (int64_t c = 0; c < C; c++) {
        const bn_affine f = bn_affine_of(n, c);
        for (int64_t i = 0; i < N; i++)
            bn_pool_rows(p, f, x->data + (i * C + c) * S, S, y1 + (i * C + c) * S);
    }
}

/* Second order, as the separate ops': y1 made again as a constant (bn_pool_remake), its
 * gradient the recorded max_pool2d_backward of gout to y1's window maxima, then batch norm's
 * second order with y1's relu mask. */
static tg_status bn_pool_backward_graph(tg_node *n, tg_tensor *gout, uint32_t need, tg_tensor **gin)
{
    tg_tensor *x = n->in[0];
    if (x->numel == 0)
        return tg_batch_norm_graph(n, NULL, NULL, need, gin);
    tg_tensor *y1 = tg_zeros(x->ndim, x->shape);
    if (!y1)
        return tg_last_status();
    bn_pool_remake(n, y1->data);
    tg_tensor *gy1 = tg_max_pool2d_backward_2x2(y1, gout);
    return gy1 ? tg_batch_norm_graph(n, y1, gy1, need, gin) : tg_last_status();
}

/* x of a case: each channel's N * H * W values (an even count) a shuffle of the odd multiples
 * of 0.035, symmetric about 0. The batch mean is then exactly 0, no z is within 0.035 * invstd
 * * weight of relu's kink, and the values of a window are 0.07 apart: a central difference of
 * 1e-2 crosses neither a kink nor a tie. The weight is drawn in [1, 1.5], the bias is 0. */
static void bn_pool_init(int i, tg_tensor *t, tg_rng *rng)
{
    if (i == 1) {
        tg_tensor_uniform_(t, rng, 1.0f, 1.5f);
        return;
    }
    if (i == 2 || t->ndim != 4) {
        memset(t->data, 0, (size_t)t->numel * sizeof(float));
        return;
    }
    const int64_t N = t->shape[0], C = t->shape[1], S = t->shape[2] * t->shape[3], m = N * S;
    int64_t perm[256];
    TG_ASSERT(m <= 256 && m % 2 == 0);
    for (int64_t c = 0; c < C; c++) {
        tg_rng_permutation(rng, m, perm);
        for (int64_t e = 0; e < m; e++)
            t->data[(e / S * C + c) * S + e % S] = 0.035f * (float)(2 * (perm[e] - m / 2) + 1);
    }
}

/* The eval cases' running statistics for their 2 channels: mean 0 keeps z's sign x's. */
static tg_status bn_pool_case_running_stats(void *params, tg_tensor *extra[TG_CASE_EXTRAS])
{
    static const int64_t shape[1] = {2};
    static const float mean[2] = {0.0f, 0.0f}, var[2] = {0.7f, 1.3f};
    batch_norm_params *p = params;
    p->running_mean = extra[0] = tg_tensor_from_data(1, shape, mean);
    p->running_var = extra[1] = tg_tensor_from_data(1, shape, var);
    return extra[0] && extra[1] ? TG_OK : tg_last_status();
}

static const tg_case bn_pool_cases[] = {
    {.shape = {{2, 3, 4, 6}, {3}, {3}},
     .n_in = 3,
     .init = bn_pool_init,
     .name = "train_relu",
     TG_CASE_PARAMS(batch_norm_params, .momentum = 0.1f, .eps = 1e-5f, .training = true,
                    .has_weight = true, .has_bias = true, .act = TG_ACT_RELU)},
    {.shape = {{2, 2, 5, 7}, {2}, {2}},
     .n_in = 3,
     .init = bn_pool_init,
     .name = "train_leaky_relu_odd",
     TG_CASE_PARAMS(batch_norm_params, .momentum = 0.1f, .eps = 1e-5f, .training = true,
                    .has_weight = true, .has_bias = true, .act = TG_ACT_LEAKY_RELU, .slope = 0.2f)},
    {.shape = {{1, 2, 4, 4}},
     .n_in = 1,
     .init = bn_pool_init,
     .name = "train_no_affine_relu",
     TG_CASE_PARAMS(batch_norm_params, .momentum = 0.1f, .eps = 1e-5f, .training = true,
                    .act = TG_ACT_RELU)},
    {.shape = {{2, 2, 5, 4}, {2}},
     .n_in = 2,
     .init = bn_pool_init,
     .init_params = bn_pool_case_running_stats,
     .name = "eval_weight_only_leaky_relu",
     TG_CASE_PARAMS(batch_norm_params, .momentum = 0.1f, .eps = 1e-5f, .has_weight = true,
                    .act = TG_ACT_LEAKY_RELU, .slope = 0.1f)},
    {0},
};
TG_OP_DEFINE(batch_norm_act_pool2d) = {.name = "batch_norm_act_pool2d",
                                       .n_in = -1,
                                       .check = bn_pool_check,
                                       .forward = bn_pool_forward,
                                       .backward = bn_pool_backward,
                                       .backward_graph = bn_pool_backward_graph,
                                       .cases = bn_pool_cases,
                                       .fresh_grads = true};

#if TG_ISA_BASE
tg_tensor *tg_batch_norm_act_pool2d(tg_tensor *x, tg_tensor *weight, tg_tensor *bias,
                                    tg_tensor *running_mean, tg_tensor *running_var, bool training,
                                    float momentum, float eps, tg_act act, float slope)
{
    /* What the op leaves out runs as the two ops, with the same results: a synchronised batch
     * norm (its statistics come from every process), an x wider than the row buffer. */
    if ((training && tg_batch_norm_reduce_hook()) ||
        (x && x != TG_NONE && x->ndim == 4 && x->shape[3] > BN_POOL_MAX_W))
        return tg_max_pool2d(tg_batch_norm_act(x, weight, bias, running_mean, running_var, training,
                                               momentum, eps, act, slope),
                             2, 2, 0);
    return tg_batch_norm_apply(&tg_op_batch_norm_act_pool2d, "tg_batch_norm_act_pool2d", x, weight,
                               bias, running_mean, running_var, training, momentum, eps, act,
                               slope);
}
#endif
