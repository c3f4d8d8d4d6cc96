/* Normalisation and regularisation ops: batch_norm, dropout, softmax, log_softmax and
 * layer_norm, each fused with its own backward (docs/design.md, section 4), and each with its
 * second order (backward_graph): that backward written with recorded ops. Semantics are
 * PyTorch's; where a formula or a default could differ from another framework, the comment
 * says so. */
#include "norm_internal.h"
#include "ops.h"

/* ---- batch_norm ---------------------------------------------------------------------------
 * Its definition, params, statistics, accumulators and fused activation are in norm_internal.h,
 * shared with norm_pool.c's batch_norm_act_pool2d. */

/* Where the synchronised backward's doubles start in scratch: after mean[C] and invstd[C],
 * rounded up to a double's alignment. */
static size_t batch_norm_sync_offset(int64_t C)
{
    const size_t f = 2 * (size_t)(C > 0 ? C : 1) * sizeof(float);
    return (f + sizeof(double) - 1) / sizeof(double) * sizeof(double);
}

/* Checks that t (named name) is a 1-D [C] tensor. */
static tg_status batch_norm_check_vec(const tg_tensor *x, const tg_tensor *t, const char *name)
{
    if (t->ndim == 1 && t->shape[0] == x->shape[1])
        return TG_OK;
    char sx[160], st[160];
    return tg_set_error(TG_ERR_SHAPE,
                        "tg_batch_norm: x %s has %lld channels; %s %s must be "
                        "[%lld]",
                        TG_SHAPE_STR(x, sx), (long long)x->shape[1], name, TG_SHAPE_STR(t, st),
                        (long long)x->shape[1]);
}

#if TG_ISA_BASE
tg_status tg_batch_norm_check(tg_node *n, int *ndim, int64_t shape[])
{
    const batch_norm_params *p = TG_PARAMS(n, batch_norm_params);
    const tg_tensor *x = n->in[0];
    char sx[160];
    if (n->n_in != 1 + p->has_weight + p->has_bias)
        return tg_set_error(TG_ERR_ARG,
                            "tg_batch_norm: %d inputs, but the params announce %d "
                            "(x%s%s)",
                            n->n_in, 1 + p->has_weight + p->has_bias,
                            p->has_weight ? ", weight" : "", p->has_bias ? ", bias" : "");
    if (x->ndim < 2)
        return tg_set_error(TG_ERR_SHAPE, "tg_batch_norm: x %s must be [N, C] or [N, C, H, W]",
                            TG_SHAPE_STR(x, sx));
    tg_status st = TG_OK;
    if (p->has_weight)
        st = batch_norm_check_vec(x, n->in[1], "weight");
    if (st == TG_OK && p->has_bias)
        st = batch_norm_check_vec(x, n->in[p->has_weight ? 2 : 1], "bias");
    if (st != TG_OK)
        return st;
    if (!p->running_mean != !p->running_var)
        return tg_set_error(TG_ERR_ARG,
                            "tg_batch_norm: running_mean is %s but running_var is "
                            "%s; give both or neither",
                            p->running_mean ? "given" : "TG_NONE",
                            p->running_var ? "given" : "TG_NONE");
    if (p->running_mean && ((st = batch_norm_check_vec(x, p->running_mean, "running_mean")) ||
                            (st = batch_norm_check_vec(x, p->running_var, "running_var"))))
        return st;
    if (!(p->momentum >= 0.0f && p->momentum <= 1.0f))
        return tg_set_error(TG_ERR_ARG, "tg_batch_norm: momentum = %g is outside [0, 1]",
                            (double)p->momentum);
    if (!(p->eps >= 0.0f && isfinite(p->eps)))
        return tg_set_error(TG_ERR_ARG, "tg_batch_norm: eps = %g must be finite and >= 0",
                            (double)p->eps);
    if (p->training && x->shape[0] * batch_norm_spatial(x) <= 1)
        return tg_set_error(TG_ERR_SHAPE,
                            "tg_batch_norm: expected more than 1 value per "
                            "channel when training, got x %s",
                            TG_SHAPE_STR(x, sx));
    if (!p->training && !p->running_mean)
        return tg_set_error(TG_ERR_ARG, "tg_batch_norm: eval mode (training = false) needs "
                                        "running_mean and running_var");
    if (p->act < TG_ACT_NONE || p->act > TG_ACT_TANH)
        return tg_set_error(TG_ERR_ARG,
                            "tg_batch_norm_act: act %d is not a tg_act (NONE %d, RELU %d, "
                            "LEAKY_RELU %d, TANH %d)",
                            p->act, TG_ACT_NONE, TG_ACT_RELU, TG_ACT_LEAKY_RELU, TG_ACT_TANH);
    /* A positive slope keeps leaky_relu's sign: its derivative is then read from y. */
    if (p->act == TG_ACT_LEAKY_RELU && !(p->slope > 0.0f && isfinite(p->slope)))
        return tg_set_error(TG_ERR_ARG,
                            "tg_batch_norm_act: leaky_relu slope %g must be finite and > 0 "
                            "(apply tg_leaky_relu after tg_batch_norm for others)",
                            (double)p->slope);
    *ndim = x->ndim;
    memcpy(shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
    /* mean[C], invstd[C]; room for one channel when C is 0, so that the kernels' pointers into
     * it are never offsets from NULL (UB even for an offset of 0). */
    n->scratch_bytes = 2 * (size_t)(x->shape[1] > 0 ? x->shape[1] : 1) * sizeof(float);
    /* Synchronised: after them, 2C doubles for the backward's sums, made ready now so that the
     * backward, which cannot fail, needs no allocation before its collective. */
    if (p->reduce && p->training)
        n->scratch_bytes = batch_norm_sync_offset(x->shape[1]) +
                           2 * (size_t)(x->shape[1] > 0 ? x->shape[1] : 1) * sizeof(double);
    return TG_OK;
}
#endif

/* Channels per block in the [N, C] layout (S = 1): a block's columns of every row are
 * contiguous, so per-channel sums run down the rows as vector adds over the block. */
#define BN_COLS 64

/* sum(dz) and sum(dz * xhat) over channel c's N runs of S into its accumulators (x, dy and y
 * at the channel's first run; runs C * S apart; f the channel's map to z). */
static void bn_channel_sums(const batch_norm_params *p, const float *x, const float *dy,
                            const float *y, bn_affine f, int64_t N, int64_t C, int64_t S, float mu,
                            float is, bn_acc *sdy, bn_acc *sdyx)
{
    float buf[BN_DZ_RUN];
    const int64_t piece = bn_piece_len(p, S);
    for (int64_t i = 0; i < N; i++)
        for (int64_t j0 = 0; j0 < S; j0 += piece) {
            const int64_t o = i * C * S + j0, len = S - j0 < piece ? S - j0 : piece;
            bn_acc_dy(sdy, sdyx, x + o, bn_act_grad(p, dy + o, x + o, y + o, f, len, buf), NULL,
                      len, mu, is);
        }
}

/* Two passes in double for the statistics: the one-pass sum-of-squares formula loses the
 * variance to cancellation when |mean| >> std. */
TG_ISA_KERNEL(batch_norm_forward, (tg_node * n), (n))
{
    const batch_norm_params *p = TG_PARAMS(n, batch_norm_params);
    const tg_tensor *x = n->in[0];
    const float *w = batch_norm_weight(n), *b = batch_norm_bias(n);
    const int64_t N = x->shape[0], C = x->shape[1], S = batch_norm_spatial(x), m = N * S;
    const int64_t ms = p->sync1 ? p->sync_m : m; /* the count the statistics are over */
    float *mean = n->scratch, *invstd = mean + C;
    const float *xd = x->data;
    float *y = n->out->data;
    if (x->numel == 0)
        return; /* nothing to normalise; N or S may still be huge, and xd is not to offset */

    if (S == 1) {
        /* [N, C]: blocks of BN_COLS channels, each summed down the rows. */
        const int64_t blocks = (C + BN_COLS - 1) / BN_COLS;
        TG_PARALLEL_FOR_WORK(blocks, N * BN_COLS)
        for (int64_t blk = 0; blk < blocks; blk++) {
            const int64_t c0 = blk * BN_COLS, nc = C - c0 < BN_COLS ? C - c0 : BN_COLS;
            double s[BN_COLS] = {0}, ss[BN_COLS] = {0}, mu[BN_COLS] = {0};
            if (p->sync1) {
                for (int64_t k = 0; k < nc; k++) {
                    mu[k] = p->sync1[c0 + k] / (double)ms;
                    ss[k] = p->sync2[c0 + k];
                }
            } else if (p->training) {
                for (int64_t i = 0; i < N; i++)
                    for (int64_t k = 0; k < nc; k++)
                        s[k] += xd[i * C + c0 + k];
                for (int64_t k = 0; k < nc; k++)
                    mu[k] = s[k] / (double)m;
                for (int64_t i = 0; i < N; i++)
                    for (int64_t k = 0; k < nc; k++) {
                        const double d = xd[i * C + c0 + k] - mu[k];
                        ss[k] += d * d;
                    }
            }
            float fmu[BN_COLS], scale[BN_COLS], shift[BN_COLS];
            for (int64_t k = 0; k < nc; k++) {
                const int64_t c = c0 + k;
                batch_norm_stats(p, c, ms, mu[k], ss[k], mean, invstd);
                fmu[k] = mean[c];
                scale[k] = invstd[c] * (w ? w[c] : 1.0f);
                shift[k] = b ? b[c] : 0.0f;
            }
            for (int64_t i = 0; i < N; i++) {
                for (int64_t k = 0; k < nc; k++)
                    y[i * C + c0 + k] = (xd[i * C + c0 + k] - fmu[k]) * scale[k] + shift[k];
                bn_act_apply(p, y + i * C + c0, nc);
            }
        }
    } else {
        /* [N, C, S]: per channel, N contiguous runs of S. */
        TG_PARALLEL_FOR_WORK(C, m)
        for (int64_t c = 0; c < C; c++) {
            bn_channel_stats(p, xd, N, C, S, c, ms, mean, invstd);
            const bn_affine f = bn_affine_of(n, c);
            for (int64_t i = 0; i < N; i++) {
                const float *restrict xc = xd + (i * C + c) * S;
                float *restrict yc = y + (i * C + c) * S;
                for (int64_t j = 0; j < S; j++)
                    yc[j] = bn_z(f, xc[j]);
                bn_act_apply(p, yc, S);
            }
        }
    }
    if (p->training && p->running_mean) {
        tg_tensor_bump_version(p->running_mean);
        tg_tensor_bump_version(p->running_var);
    }
}

TG_ISA_KERNEL(batch_norm_backward, (tg_node * n), (n))
{
    const batch_norm_params *p = TG_PARAMS(n, batch_norm_params);
    const tg_tensor *x = n->in[0];
    const float *w = batch_norm_weight(n);
    const int64_t N = x->shape[0], C = x->shape[1], S = batch_norm_spatial(x), m = N * S;
    const float *mean = n->scratch, *invstd = mean + C;
    const float *xd = x->data, *dy = n->out->grad->data, *y = n->out->data;
    const int iw = 1, ib = p->has_weight ? 2 : 1;
    const batch_norm_grads gr = {.dx = tg_grad_of(n, 0),
                                 .dx_set = tg_grad_fresh(n, 0),
                                 .dw = p->has_weight ? tg_grad_of(n, iw) : NULL,
                                 .dw_set = tg_grad_fresh(n, iw),
                                 .db = p->has_bias ? tg_grad_of(n, ib) : NULL,
                                 .db_set = tg_grad_fresh(n, ib)};
    float *dx = gr.dx;
    const bool need_sums = gr.dw || gr.db || (dx && p->training);
    if (x->numel == 0) {
        /* Sums over no values (see the forward): 0 into fresh weight and bias gradients. */
        if (gr.dw && gr.dw_set)
            memset(gr.dw, 0, (size_t)C * sizeof(float));
        if (gr.db && gr.db_set)
            memset(gr.db, 0, (size_t)C * sizeof(float));
        return;
    }

    if (S == 1) {
        /* a row holds nc channels, each its own map: act' from y (y is small here) */
        const bn_affine none = {0};
        const int64_t blocks = (C + BN_COLS - 1) / BN_COLS;
        TG_PARALLEL_FOR_WORK(blocks, N * BN_COLS)
        for (int64_t blk = 0; blk < blocks; blk++) {
            const int64_t c0 = blk * BN_COLS, nc = C - c0 < BN_COLS ? C - c0 : BN_COLS;
            double sdy[BN_COLS] = {0}, sdyx[BN_COLS] = {0};
            float fmu[BN_COLS], fis[BN_COLS], g[BN_COLS], a[BN_COLS], k[BN_COLS], dz[BN_COLS];
            for (int64_t q = 0; q < nc; q++) {
                fmu[q] = mean[c0 + q];
                fis[q] = invstd[c0 + q];
            }
            if (need_sums)
                for (int64_t i = 0; i < N; i++) {
                    const float *dzr =
                        bn_act_grad(p, dy + i * C + c0, NULL, y + i * C + c0, none, nc, dz);
                    for (int64_t q = 0; q < nc; q++) {
                        const float d = dzr[q];
                        sdy[q] += d;
                        sdyx[q] += (double)d * ((xd[i * C + c0 + q] - fmu[q]) * fis[q]);
                    }
                }
            for (int64_t q = 0; q < nc; q++)
                batch_norm_dcoef(p, w, c0 + q, m, sdy[q], sdyx[q], fis[q], &gr, &g[q], &a[q],
                                 &k[q]);
            if (!dx)
                continue;
            for (int64_t i = 0; i < N; i++) { /* dx may be dy (dx_over_dy): not restrict */
                const float *dyr =
                    bn_act_grad(p, dy + i * C + c0, NULL, y + i * C + c0, none, nc, dz);
                const float *restrict xr = xd + i * C + c0;
                float *dxr = dx + i * C + c0;
                if (gr.dx_set) {
                    TG_PRAGMA(omp simd)
                    for (int64_t q = 0; q < nc; q++)
                        dxr[q] = g[q] * (dyr[q] - a[q] - (xr[q] - fmu[q]) * fis[q] * k[q]);
                } else {
                    TG_PRAGMA(omp simd)
                    for (int64_t q = 0; q < nc; q++)
                        dxr[q] += g[q] * (dyr[q] - a[q] - (xr[q] - fmu[q]) * fis[q] * k[q]);
                }
            }
        }
        return;
    }

    TG_PARALLEL_FOR_WORK(C, m)
    for (int64_t c = 0; c < C; c++) {
        const float mu = mean[c], is = invstd[c];
        const bn_affine f = bn_affine_of(n, c);
        double sdy = 0, sdyx = 0; /* sum(dy), sum(dy * xhat) over the channel */
        if (need_sums) {
            bn_acc acc_dy = {0}, acc_dyx = {0};
            bn_channel_sums(p, xd + c * S, dy + c * S, y + c * S, f, N, C, S, mu, is, &acc_dy,
                            &acc_dyx);
            sdy = bn_acc_total(&acc_dy);
            sdyx = bn_acc_total(&acc_dyx);
        }
        float g, a, k;
        batch_norm_dcoef(p, w, c, m, sdy, sdyx, is, &gr, &g, &a, &k);
        if (!dx)
            continue;
        float buf[BN_DZ_RUN];
        const int64_t piece = bn_piece_len(p, S);
        for (int64_t i = 0; i < N; i++)
            for (int64_t j0 = 0; j0 < S; j0 += piece) {
                const int64_t o = (i * C + c) * S + j0, len = S - j0 < piece ? S - j0 : piece;
                bn_dx_run(dx + o, bn_act_grad(p, dy + o, xd + o, y + o, f, len, buf), xd + o, len,
                          g, a, k, mu, is, gr.dx_set);
            }
    }
}

/* The synchronised backward (p->reduce): this process's sum(dy) and sum(dy * xhat) per channel,
 * summed over the processes by the hook, for the kernel's dx (its dw and db recompute the local
 * sums). The doubles live in scratch, reserved by the check, so nothing here can fail before
 * the collective that every process must reach. */
static void batch_norm_backward_synced(tg_node *n)
{
    batch_norm_params *p = TG_PARAMS(n, batch_norm_params);
    if (!p->reduce || !p->training) {
        batch_norm_backward(n);
        return;
    }
    const tg_tensor *x = n->in[0];
    const int64_t N = x->shape[0], C = x->shape[1], S = batch_norm_spatial(x);
    const float *mean = n->scratch, *invstd = mean + C;
    double *v = (double *)((char *)n->scratch + batch_norm_sync_offset(C));
    const float *xd = x->data, *dy = n->out->grad->data, *y = n->out->data;
    TG_PARALLEL_FOR_WORK(C, N * S)
    for (int64_t c = 0; c < C; c++) {
        bn_acc acc_dy = {0}, acc_dyx = {0};
        if (S > 0 && N > 0)
            bn_channel_sums(p, xd + c * S, dy + c * S, y + c * S, bn_affine_of(n, c), N, C, S,
                            mean[c], invstd[c], &acc_dy, &acc_dyx);
        v[c] = bn_acc_total(&acc_dy);
        v[C + c] = bn_acc_total(&acc_dyx);
    }
    p->reduce(p->reduce_ctx, v, 2 * C);
    p->sync1 = v, p->sync2 = v + C;
    batch_norm_backward(n);
    p->sync1 = p->sync2 = NULL;
}

/* ---- batch_norm and layer_norm: second order -----------------------------------------------
 * The backward above as recorded ops (create_graph), on a view of x: [N, C, S] for batch_norm,
 * normalised over axes 0 and 2; [R, D] for layer_norm, over axis 1. In training (and always
 * for layer_norm) the statistics are functions of x, so xhat comes from the op itself (no
 * affine, no running statistics) and rstd = 1/sqrt(var + eps) from tg_var, both with history;
 * batch_norm's eval statistics are constants, taken from scratch. */

/* The mean of t over the normalised axes, kept: 0 and 2 of [N, C, S] (channels), else 1. */
static tg_tensor *norm_graph_mean(tg_tensor *t, bool channels)
{
    return channels ? tg_mean_axis(tg_mean_axis(t, 2, true), 0, true) : tg_mean_axis(t, 1, true);
}

/* dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat)), gw = dy * w. */
static tg_tensor *norm_graph_dx(tg_tensor *gw, tg_tensor *xhat, tg_tensor *rstd, bool channels)
{
    tg_tensor *a = norm_graph_mean(gw, channels);
    tg_tensor *k = norm_graph_mean(tg_mul(gw, xhat), channels);
    return tg_mul(rstd, tg_sub(tg_sub(gw, a), tg_mul(xhat, k)));
}

/* An empty x: every wanted gradient is a sum over nothing, zeros of the input's shape. */
static tg_status norm_graph_empty(const tg_node *n, uint32_t need, tg_tensor **gin)
{
    for (int i = 0; i < n->n_in; i++)
        if (tg_graph_needs(need, i) && !(gin[i] = tg_zeros(n->in[i]->ndim, n->in[i]->shape)))
            return tg_last_status();
    return TG_OK;
}

/* The gradient of the normalised values from y's, gout * act'(y) (see bn_act_grad): for tanh
 * 1 - y^2 with y's history (its second derivative), for relu and leaky_relu a constant mask
 * (they are piecewise linear). */
#if TG_ISA_BASE
static tg_tensor *batch_norm_act_graph(const tg_node *n, tg_tensor *y, tg_tensor *gout)
{
    const batch_norm_params *p = TG_PARAMS(n, batch_norm_params);
    if (p->act == TG_ACT_TANH)
        return tg_mul(gout, tg_add_scalar(tg_neg(tg_mul(y, y)), 1.0f));
    tg_tensor *mask = tg_zeros(y->ndim, y->shape);
    if (!mask)
        return NULL;
    const float below = p->act == TG_ACT_RELU ? 0.0f : p->slope;
    for (int64_t j = 0; j < y->numel; j++)
        mask->data[j] = y->data[j] > 0.0f ? 1.0f : below;
    return tg_mul(gout, mask);
}

/* dw = sum over (0, 2) of dy * xhat; db = the same of dy; dx = norm_graph_dx (training) or
 * dy * w * invstd (eval); dy being gout, or batch_norm_act_graph's with an activation. */
tg_status tg_batch_norm_graph(const tg_node *n, tg_tensor *y, tg_tensor *gout, uint32_t need,
                              tg_tensor **gin)
{
    const batch_norm_params *p = TG_PARAMS(n, batch_norm_params);
    tg_tensor *x = n->in[0];
    if (p->reduce && p->training) /* the recorded ops below see this process's batch only */
        return tg_set_error(TG_ERR_STATE,
                            "tg_batch_norm: a second-order backward (create_graph) through a "
                            "synchronised batch norm (tg_batch_norm_set_reduce) is not supported");
    if (x->numel == 0)
        return norm_graph_empty(n, need, gin);
    if (p->act != TG_ACT_NONE && !(gout = batch_norm_act_graph(n, y, gout)))
        return tg_last_status();
    const int iw = 1, ib = p->has_weight ? 2 : 1;
    const bool want_x = tg_graph_needs(need, 0), want_w = p->has_weight && tg_graph_needs(need, iw),
               want_b = p->has_bias && tg_graph_needs(need, ib);
    const int64_t N = x->shape[0], C = x->shape[1], S = batch_norm_spatial(x);
    const int64_t v3[3] = {N, C, S}, c3[3] = {1, C, 1};
    tg_tensor *g3 = tg_reshape(gout, 3, v3);
    if (want_b && !(gin[ib] = tg_sum_axis(tg_sum_axis(g3, 2, false), 0, false)))
        return tg_last_status();
    if (!want_x && !want_w)
        return TG_OK;
    tg_tensor *x3 = tg_reshape(x, 3, v3), *xhat, *rstd;
    if (p->training) {
        xhat = tg_reshape(tg_batch_norm(x, TG_NONE, TG_NONE, TG_NONE, TG_NONE, true, 0.0f, p->eps),
                          3, v3);
        /* Each channel's values as a row of the [C, N*S] transpose, for its biased variance. */
        tg_tensor *rows = tg_reshape(tg_transpose(x3, 0, 1), 2, (int64_t[]){C, N * S});
        rstd = tg_reshape(tg_pow_scalar(tg_add_scalar(tg_var(rows, 1, false, 0), p->eps), -0.5f), 3,
                          c3);
    } else {
        const float *mean = n->scratch;
        rstd = tg_from_data(3, c3, mean + C);
        xhat = want_w ? tg_mul(tg_sub(x3, tg_from_data(3, c3, mean)), rstd) : NULL;
    }
    if (want_w && !(gin[iw] = tg_sum_axis(tg_sum_axis(tg_mul(g3, xhat), 2, false), 0, false)))
        return tg_last_status();
    if (!want_x)
        return TG_OK;
    tg_tensor *gw = p->has_weight ? tg_mul(g3, tg_reshape(n->in[iw], 3, c3)) : g3;
    tg_tensor *dx = p->training ? norm_graph_dx(gw, xhat, rstd, true) : tg_mul(gw, rstd);
    return (gin[0] = tg_reshape(dx, x->ndim, x->shape)) ? TG_OK : tg_last_status();
}
#endif

static tg_status batch_norm_backward_graph(tg_node *n, tg_tensor *gout, uint32_t need,
                                           tg_tensor **gin)
{
    return tg_batch_norm_graph(n, n->out, gout, need, gin);
}

/* init_params of the eval-mode cases: fixed running statistics for their 3 channels, made for
 * each run (the test releases them). Eval mode only reads them. */
static tg_status batch_norm_case_running_stats(void *params, tg_tensor *extra[TG_CASE_EXTRAS])
{
    static const int64_t shape[1] = {3};
    static const float mean[3] = {0.2f, -0.3f, 0.1f}, var[3] = {0.6f, 1.4f, 0.9f};
    batch_norm_params *p = params;
    p->running_mean = extra[0] = tg_tensor_from_data(1, shape, mean);
    p->running_var = extra[1] = tg_tensor_from_data(1, shape, var);
    return extra[0] && extra[1] ? TG_OK : tg_last_status();
}

static const tg_case batch_norm_cases[] = {
    {.shape = {{6, 3}, {3}, {3}},
     .n_in = 3,
     .name = "train_2d",
     TG_CASE_PARAMS(batch_norm_params, .momentum = 0.1f, .eps = 1e-5f, .training = true,
                    .has_weight = true, .has_bias = true)},
    {.shape = {{2, 3, 3, 3}, {3}, {3}},
     .n_in = 3,
     .name = "train_4d",
     TG_CASE_PARAMS(batch_norm_params, .momentum = 0.1f, .eps = 1e-5f, .training = true,
                    .has_weight = true, .has_bias = true)},
    {.shape = {{2, 3, 3, 3}},
     .n_in = 1,
     .name = "train_no_affine",
     TG_CASE_PARAMS(batch_norm_params, .momentum = 0.1f, .eps = 1e-5f, .training = true)},
    {.shape = {{5, 3}, {3}},
     .n_in = 2,
     .name = "train_weight_only",
     TG_CASE_PARAMS(batch_norm_params, .momentum = 0.1f, .eps = 1e-5f, .training = true,
                    .has_weight = true)},
    {.shape = {{4, 3}, {3}, {3}},
     .n_in = 3,
     .name = "eval_2d",
     .init_params = batch_norm_case_running_stats,
     TG_CASE_PARAMS(batch_norm_params, .momentum = 0.1f, .eps = 1e-5f, .has_weight = true,
                    .has_bias = true)},
    {.shape = {{2, 3, 2, 2}, {3}},
     .n_in = 2,
     .name = "eval_4d_bias_only",
     .init_params = batch_norm_case_running_stats,
     TG_CASE_PARAMS(batch_norm_params, .momentum = 0.1f, .eps = 1e-5f, .has_bias = true)},
    /* tg_batch_norm_act */
    {.shape = {{2, 3, 3, 3}, {3}, {3}},
     .n_in = 3,
     .name = "train_4d_relu",
     TG_CASE_PARAMS(batch_norm_params, .momentum = 0.1f, .eps = 1e-5f, .training = true,
                    .has_weight = true, .has_bias = true, .act = TG_ACT_RELU)},
    {.shape = {{6, 3}, {3}, {3}},
     .n_in = 3,
     .name = "train_2d_leaky_relu",
     TG_CASE_PARAMS(batch_norm_params, .momentum = 0.1f, .eps = 1e-5f, .training = true,
                    .has_weight = true, .has_bias = true, .act = TG_ACT_LEAKY_RELU, .slope = 0.2f)},
    {.shape = {{2, 3, 3, 3}, {3}, {3}},
     .n_in = 3,
     .name = "train_4d_tanh",
     TG_CASE_PARAMS(batch_norm_params, .momentum = 0.1f, .eps = 1e-5f, .training = true,
                    .has_weight = true, .has_bias = true, .act = TG_ACT_TANH)},
    {.shape = {{4, 3}, {3}, {3}},
     .n_in = 3,
     .name = "eval_2d_tanh",
     .init_params = batch_norm_case_running_stats,
     TG_CASE_PARAMS(batch_norm_params, .momentum = 0.1f, .eps = 1e-5f, .has_weight = true,
                    .has_bias = true, .act = TG_ACT_TANH)},
    {0},
};
TG_OP_DEFINE(batch_norm) = {.name = "batch_norm",
                            .n_in = -1,
                            .check = tg_batch_norm_check,
                            .forward = batch_norm_forward,
                            .backward = batch_norm_backward_synced,
                            .backward_graph = batch_norm_backward_graph,
                            .cases = batch_norm_cases,
                            .fresh_grads = true,
                            .dx_over_dy = true};

#if TG_ISA_BASE
int tg_norm_affine_inputs(tg_tensor *in[3], tg_tensor *x, tg_tensor *weight, tg_tensor *bias)
{
    int k = 0;
    in[k++] = x;
    if (weight != TG_NONE)
        in[k++] = weight;
    if (bias != TG_NONE)
        in[k++] = bias;
    return k;
}
#endif

#if TG_ISA_BASE
/* The hook of synchronised batch norm (tg_batch_norm_set_reduce); NULL: none. */
static tg_batch_norm_reduce_fn bn_reduce;
static void *bn_reduce_ctx;

void tg_batch_norm_set_reduce(tg_batch_norm_reduce_fn fn, void *ctx)
{
    bn_reduce = fn;
    bn_reduce_ctx = fn ? ctx : NULL;
}

tg_batch_norm_reduce_fn tg_batch_norm_reduce_hook(void)
{
    return bn_reduce;
}

/* Running-statistics updates per training forward (tg_batch_norm_set_running_updates). */
static int bn_running_updates = 1;

tg_status tg_batch_norm_set_running_updates(int k)
{
    if (k < 1)
        return tg_set_error(TG_ERR_ARG,
                            "tg_batch_norm_set_running_updates: k = %d; need at least 1", k);
    bn_running_updates = k;
    return TG_OK;
}

int tg_batch_norm_running_updates(void)
{
    return bn_running_updates;
}

/* The synchronised forward's statistics, before the op runs: x's per-channel sums and its
 * count per channel, summed over the processes, then the sums of squared deviations from that
 * global mean, likewise (two passes, as the kernel's, for the same cancellation reason). *out
 * gets [sums C, squares C] (free it), *m the global count. An x the op will refuse is left to
 * its check (no statistics, TG_OK). */
static tg_status batch_norm_sync_stats(const tg_tensor *x, double **out, int64_t *m)
{
    *out = NULL;
    if (!x || x == TG_NONE || x->ndim < 2)
        return TG_OK;
    const int64_t N = x->shape[0], C = x->shape[1], S = batch_norm_spatial(x);
    double *v = malloc(sizeof(double) * (size_t)(2 * C + 1));
    if (!v)
        return tg_set_error(TG_ERR_NOMEM, "tg_batch_norm: out of memory for %lld channels' sums",
                            (long long)C);
    const float *xd = x->data;
    TG_PARALLEL_FOR_WORK(C, N * S)
    for (int64_t c = 0; c < C; c++) {
        bn_acc acc = {0};
        for (int64_t i = 0; i < N && S > 0; i++)
            bn_acc_sum(&acc, xd + (i * C + c) * S, S);
        v[c] = bn_acc_total(&acc);
    }
    v[C] = (double)(N * S);
    bn_reduce(bn_reduce_ctx, v, C + 1);
    *m = (int64_t)v[C];
    double *ss = v + C; /* the count is read: its slot starts the squares */
    TG_PARALLEL_FOR_WORK(C, N * S)
    for (int64_t c = 0; c < C; c++) {
        const double mu = *m > 0 ? v[c] / (double)*m : 0.0;
        bn_acc acc = {0};
        for (int64_t i = 0; i < N && S > 0; i++)
            bn_acc_sq(&acc, xd + (i * C + c) * S, S, mu);
        ss[c] = bn_acc_total(&acc);
    }
    bn_reduce(bn_reduce_ctx, ss, C);
    *out = v;
    return TG_OK;
}

tg_tensor *tg_batch_norm(tg_tensor *x, tg_tensor *weight, tg_tensor *bias, tg_tensor *running_mean,
                         tg_tensor *running_var, bool training, float momentum, float eps)
{
    return tg_batch_norm_act(x, weight, bias, running_mean, running_var, training, momentum, eps,
                             TG_ACT_NONE, 0.0f);
}

tg_tensor *tg_batch_norm_act(tg_tensor *x, tg_tensor *weight, tg_tensor *bias,
                             tg_tensor *running_mean, tg_tensor *running_var, bool training,
                             float momentum, float eps, tg_act act, float slope)
{
    return tg_batch_norm_apply(
        &tg_op_batch_norm, act == TG_ACT_NONE ? "tg_batch_norm" : "tg_batch_norm_act", x, weight,
        bias, running_mean, running_var, training, momentum, eps, act, slope);
}

tg_tensor *tg_batch_norm_apply(const tg_op *op, const char *fn, tg_tensor *x, tg_tensor *weight,
                               tg_tensor *bias, tg_tensor *running_mean, tg_tensor *running_var,
                               bool training, float momentum, float eps, tg_act act, float slope)
{
    if (!tg_optional_ok(fn, "weight", weight) || !tg_optional_ok(fn, "bias", bias) ||
        !tg_optional_ok(fn, "running_mean", running_mean) ||
        !tg_optional_ok(fn, "running_var", running_var))
        return NULL;
    batch_norm_params p = {.running_mean = running_mean == TG_NONE ? NULL : running_mean,
                           .running_var = running_var == TG_NONE ? NULL : running_var,
                           .momentum = momentum,
                           .eps = eps,
                           .training = training,
                           .has_weight = weight != TG_NONE,
                           .has_bias = bias != TG_NONE,
                           .act = (int)act,
                           .slope = slope,
                           .extra_updates = training ? bn_running_updates - 1 : 0};
    tg_tensor *in[3];
    double *sync = NULL;
    if (training && bn_reduce) {
        if (batch_norm_sync_stats(x, &sync, &p.sync_m) != TG_OK)
            return NULL;
        p.reduce = bn_reduce, p.reduce_ctx = bn_reduce_ctx;
        p.sync1 = sync, p.sync2 = sync ? sync + x->shape[1] : NULL;
    }
    tg_tensor *y = tg_apply(op, &p, sizeof p, tg_norm_affine_inputs(in, x, weight, bias), in);
    /* The node keeps a copy of p: the pointers into sync are cleared there, the hook kept. */
    if (y && sync && y->node)
        TG_PARAMS(y->node, batch_norm_params)->sync1 =
            TG_PARAMS(y->node, batch_norm_params)->sync2 = NULL;
    free(sync);
    return y;
}
#endif

/* ---- dropout ------------------------------------------------------------------------------
 * training, 0 < p < 1: element i is zeroed when the i-th uniform draw u_i < p, otherwise
 *   y = x * (1/(1-p));  dx += dy * (1/(1-p)) where kept, 0 where dropped (mask in scratch).
 * not training, or p == 0: y = x, dx += dy.
 * The params hold a copy of the caller's rng state and forward draws from a local copy of
 * that: the gradcheck (and anyone) may re-run forward from the same node and must get the same
 * mask. The wrapper then advances the caller's rng past exactly the draws forward made, so
 * the caller's stream is where drawing the mask from it directly would have left it. */
typedef struct {
    tg_rng rng;
    float p;
    bool training;
} dropout_params;

static bool dropout_active(const dropout_params *p)
{
    return p->training && p->p > 0.0f;
}

static tg_status dropout_check(tg_node *n, int *ndim, int64_t shape[])
{
    const dropout_params *p = TG_PARAMS(n, dropout_params);
    const tg_tensor *x = n->in[0];
    if (!(p->p >= 0.0f && p->p < 1.0f))
        return tg_set_error(TG_ERR_ARG, "tg_dropout: p = %g is outside [0, 1)", (double)p->p);
    *ndim = x->ndim;
    memcpy(shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
    if (dropout_active(p))
        n->scratch_bytes = (size_t)x->numel; /* one keep byte per element */
    return TG_OK;
}

TG_ISA_KERNEL(dropout_forward, (tg_node * n), (n))
{
    const dropout_params *p = TG_PARAMS(n, dropout_params);
    const tg_tensor *x = n->in[0];
    float *y = n->out->data;
    if (!dropout_active(p)) {
        memcpy(y, x->data, sizeof(float) * (size_t)x->numel);
        return;
    }
    tg_rng rng = p->rng;
    const float scale = 1.0f / (1.0f - p->p);
    uint8_t *keep = n->scratch;
    /* One stream, in element order, so a seed gives the same mask at any thread count. */
    for (int64_t i = 0; i < x->numel; i++) {
        keep[i] = tg_rng_uniform01(&rng) >= p->p;
        y[i] = keep[i] ? x->data[i] * scale : 0.0f;
    }
}

TG_ISA_KERNEL(dropout_backward, (tg_node * n), (n))
{
    const dropout_params *p = TG_PARAMS(n, dropout_params);
    const int64_t numel = n->out->numel;
    const float *dy = n->out->grad->data;
    float *dx = tg_grad_of(n, 0);
    if (!dx)
        return;
    if (!dropout_active(p)) {
        TG_PARALLEL_FOR(numel)
        for (int64_t i = 0; i < numel; i++)
            dx[i] += dy[i];
        return;
    }
    const uint8_t *keep = n->scratch;
    const float scale = 1.0f / (1.0f - p->p);
    TG_PARALLEL_FOR(numel)
    for (int64_t i = 0; i < numel; i++)
        dx[i] += keep[i] ? dy[i] * scale : 0.0f;
}

/* Second order: dx = dy * keep * scale, with the saved mask as a constant (dy itself when
 * inactive); the mask does not depend on x. */
static tg_status dropout_backward_graph(tg_node *n, tg_tensor *gout, uint32_t need, tg_tensor **gin)
{
    const dropout_params *p = TG_PARAMS(n, dropout_params);
    if (!tg_graph_needs(need, 0))
        return TG_OK;
    if (!dropout_active(p)) {
        gin[0] = gout;
        return TG_OK;
    }
    tg_tensor *mask = tg_zeros(n->out->ndim, n->out->shape);
    if (!mask)
        return tg_last_status();
    const uint8_t *keep = n->scratch;
    const float scale = 1.0f / (1.0f - p->p);
    for (int64_t i = 0; i < mask->numel; i++)
        mask->data[i] = keep[i] ? scale : 0.0f;
    return (gin[0] = tg_mul(gout, mask)) ? TG_OK : tg_last_status();
}

/* Any non-zero xoshiro state will do; written out so the case does not depend on seeding. */
#define DROPOUT_CASE_RNG                                                                           \
    {                                                                                              \
        .s = { 0x9E3779B9u, 0x243F6A88u, 0xB7E15162u, 0x0BADC0DEu }                                \
    }

static const tg_case dropout_cases[] = {
    {.shape = {{4, 5, 6}},
     .name = "train_p0.3",
     TG_CASE_PARAMS(dropout_params, .rng = DROPOUT_CASE_RNG, .p = 0.3f, .training = true)},
    {.shape = {{4, 5}},
     .name = "eval",
     TG_CASE_PARAMS(dropout_params, .p = 0.3f, .training = false)},
    {.shape = {{7}},
     .name = "train_p0",
     TG_CASE_PARAMS(dropout_params, .rng = DROPOUT_CASE_RNG, .p = 0.0f, .training = true)},
    {0},
};
TG_OP_DEFINE(dropout) = {.name = "dropout",
                         .n_in = 1,
                         .check = dropout_check,
                         .forward = dropout_forward,
                         .backward = dropout_backward,
                         .backward_graph = dropout_backward_graph,
                         .cases = dropout_cases};

#if TG_ISA_BASE
tg_tensor *tg_dropout(tg_tensor *x, float p, bool training, tg_rng *rng)
{
    dropout_params prm = {.p = p, .training = training};
    /* Only a valid p draws; an invalid one is reported by dropout_check. */
    const bool draws = x && training && p > 0.0f && p < 1.0f;
    if (draws && !rng) {
        tg_set_error(TG_ERR_ARG,
                     "tg_dropout: rng is NULL; training with p = %g draws the mask "
                     "from it",
                     (double)p);
        return NULL;
    }
    if (draws)
        prm.rng = *rng;
    tg_tensor *y = tg_apply1(&tg_op_dropout, &prm, sizeof prm, x);
    if (y && draws)
        for (int64_t i = 0; i < x->numel; i++)
            (void)tg_rng_uniform01(rng);
    return y;
}
#endif

/* ---- softmax and log_softmax --------------------------------------------------------------
 * x viewed as [O, D, I]: O = the product of the sizes before axis, D = shape[axis], I = the
 * product after it; each of the O*I rows of D values (stride I) is normalised on its own.
 *   softmax:      y = e^(x - max) / sum(e^(x - max));  dx += y * (dy - sum(dy * y))
 *   log_softmax:  y = (x - max) - log(sum(e^(x - max)));  dx += dy - e^y * sum(dy)
 * Subtracting the row max keeps e^ in [0, 1]: no overflow for any finite input. Both backwards
 * need only the output, so nothing is saved. */
typedef struct {
    int axis; /* as given; check replaces it with the non-negative axis */
} softmax_params;

/* The [O, D, I] view of x along axis. */
static void softmax_geometry(const tg_tensor *x, int axis, int64_t *O, int64_t *D, int64_t *I)
{
    *O = 1;
    *I = 1;
    for (int d = 0; d < axis; d++)
        *O *= x->shape[d];
    for (int d = axis + 1; d < x->ndim; d++)
        *I *= x->shape[d];
    *D = x->shape[axis];
}

static tg_status softmax_check_common(tg_node *n, int *ndim, int64_t shape[], const char *fn)
{
    softmax_params *p = TG_PARAMS(n, softmax_params);
    const tg_tensor *x = n->in[0];
    int axis = tg_axis(p->axis, x->ndim);
    if (axis < 0) {
        char sx[160];
        return tg_set_error(TG_ERR_ARG, "%s: axis %d is out of range for x %s (%d axes)", fn,
                            p->axis, TG_SHAPE_STR(x, sx), x->ndim);
    }
    p->axis = axis;
    *ndim = x->ndim;
    memcpy(shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
    return TG_OK;
}

static tg_status softmax_check(tg_node *n, int *ndim, int64_t shape[])
{
    return softmax_check_common(n, ndim, shape, "tg_softmax");
}

static tg_status log_softmax_check(tg_node *n, int *ndim, int64_t shape[])
{
    return softmax_check_common(n, ndim, shape, "tg_log_softmax");
}

/* e^z for softmax's z = x - max <= 0, vectorised (ew_exp), and exactly 0 below -80, where
 * e^z < 1.8e-35 is nothing next to the row maximum's e^0 = 1: a masked -inf stays an exact 0. */
static inline float softmax_exp(float z)
{
    return z < -80.0f ? 0.0f : ew_exp(z);
}

/* One row of D values at stride I, forward. Inlined twice below, once with I = 1 as a
 * constant, so the common last-axis case runs unit-stride loops; the exponentials and sums
 * vectorise (one row's order of additions, whatever the threads). */
static inline void softmax_row(const float *xr, float *yr, int64_t D, int64_t I, bool log_out)
{
    /* A select, not fmaxf (a call per element here): the same result, NaN skipped alike. */
    float mx = -INFINITY;
    for (int64_t d = 0; d < D; d++)
        mx = xr[d * I] > mx ? xr[d * I] : mx;
    float s = 0.0f;
    if (log_out) {
        EW_SIMD_SUM(s)
        for (int64_t d = 0; d < D; d++)
            s += softmax_exp(xr[d * I] - mx);
        const float ls = logf(s);
        for (int64_t d = 0; d < D; d++)
            yr[d * I] = (xr[d * I] - mx) - ls;
    } else {
        for (int64_t d = 0; d < D; d++)
            yr[d * I] = softmax_exp(xr[d * I] - mx);
        EW_SIMD_SUM(s)
        for (int64_t d = 0; d < D; d++)
            s += yr[d * I];
        const float inv = 1.0f / s;
        for (int64_t d = 0; d < D; d++)
            yr[d * I] *= inv;
    }
}

/* One row, backward, from the output y. */
static inline void softmax_row_backward(const float *yr, const float *dyr, float *dxr, int64_t D,
                                        int64_t I, bool log_out)
{
    float s = 0.0f;
    if (log_out) {
        EW_SIMD_SUM(s)
        for (int64_t d = 0; d < D; d++)
            s += dyr[d * I];
        for (int64_t d = 0; d < D; d++)
            dxr[d * I] += dyr[d * I] - softmax_exp(yr[d * I]) * s;
    } else {
        EW_SIMD_SUM(s)
        for (int64_t d = 0; d < D; d++)
            s += dyr[d * I] * yr[d * I];
        for (int64_t d = 0; d < D; d++)
            dxr[d * I] += yr[d * I] * (dyr[d * I] - s);
    }
}

/* Forward of both over the O*I rows. */
TG_ISA_KERNEL(softmax_rows, (tg_node * n, bool log_out), (n, log_out))
{
    const tg_tensor *x = n->in[0];
    int64_t O, D, I;
    softmax_geometry(x, TG_PARAMS(n, softmax_params)->axis, &O, &D, &I);
    const int64_t rows = O * I;
    float *y = n->out->data;
    if (x->numel == 0)
        return; /* rows of no values: as many as the other sizes make, all empty */
    TG_PARALLEL_FOR_WORK(rows, D)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t base = (r / I) * D * I + r % I;
        if (I == 1)
            softmax_row(x->data + base, y + base, D, 1, log_out);
        else
            softmax_row(x->data + base, y + base, D, I, log_out);
    }
}

static void softmax_forward(tg_node *n)
{
    softmax_rows(n, false);
}

static void log_softmax_forward(tg_node *n)
{
    softmax_rows(n, true);
}

/* Backward of both, from the output y. */
TG_ISA_KERNEL(softmax_rows_backward, (tg_node * n, bool log_out), (n, log_out))
{
    float *dx = tg_grad_of(n, 0);
    if (!dx || n->in[0]->numel == 0)
        return;
    int64_t O, D, I;
    softmax_geometry(n->in[0], TG_PARAMS(n, softmax_params)->axis, &O, &D, &I);
    const int64_t rows = O * I;
    const float *y = n->out->data, *dy = n->out->grad->data;
    TG_PARALLEL_FOR_WORK(rows, D)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t base = (r / I) * D * I + r % I;
        if (I == 1)
            softmax_row_backward(y + base, dy + base, dx + base, D, 1, log_out);
        else
            softmax_row_backward(y + base, dy + base, dx + base, D, I, log_out);
    }
}

static void softmax_backward(tg_node *n)
{
    softmax_rows_backward(n, false);
}

static void log_softmax_backward(tg_node *n)
{
    softmax_rows_backward(n, true);
}

/* Second order from the output y (its history leads back to x):
 * softmax dx = y * (dy - sum(dy * y)); log_softmax dx = dy - e^y * sum(dy), sums along axis. */
static tg_status softmax_backward_graph(tg_node *n, tg_tensor *gout, uint32_t need, tg_tensor **gin)
{
    const int axis = TG_PARAMS(n, softmax_params)->axis;
    tg_tensor *y = n->out;
    if (tg_graph_needs(need, 0) &&
        !(gin[0] = tg_mul(y, tg_sub(gout, tg_sum_axis(tg_mul(gout, y), axis, true)))))
        return tg_last_status();
    return TG_OK;
}

static tg_status log_softmax_backward_graph(tg_node *n, tg_tensor *gout, uint32_t need,
                                            tg_tensor **gin)
{
    const int axis = TG_PARAMS(n, softmax_params)->axis;
    if (tg_graph_needs(need, 0) &&
        !(gin[0] = tg_sub(gout, tg_mul(tg_exp(n->out), tg_sum_axis(gout, axis, true)))))
        return tg_last_status();
    return TG_OK;
}

static const tg_case softmax_cases[] = {
    {.shape = {{2, 4, 3}}, .name = "axis1", TG_CASE_PARAMS(softmax_params, .axis = 1)},
    {.shape = {{3, 2, 5}}, .name = "axis-1", TG_CASE_PARAMS(softmax_params, .axis = -1)},
    {.shape = {{4, 6}},
     .lo = -3.0f,
     .hi = 3.0f,
     .name = "2d_wide",
     TG_CASE_PARAMS(softmax_params, .axis = 1)},
    {0},
};
TG_OP_DEFINE(softmax) = {.name = "softmax",
                         .n_in = 1,
                         .check = softmax_check,
                         .forward = softmax_forward,
                         .backward = softmax_backward,
                         .backward_graph = softmax_backward_graph,
                         .cases = softmax_cases};

static const tg_case log_softmax_cases[] = {
    {.shape = {{2, 4, 3}}, .name = "axis1", TG_CASE_PARAMS(softmax_params, .axis = 1)},
    {.shape = {{3, 2, 5}}, .name = "axis-1", TG_CASE_PARAMS(softmax_params, .axis = -1)},
    {.shape = {{4, 6}},
     .lo = -3.0f,
     .hi = 3.0f,
     .name = "2d_wide",
     TG_CASE_PARAMS(softmax_params, .axis = 1)},
    {0},
};
TG_OP_DEFINE(log_softmax) = {.name = "log_softmax",
                             .n_in = 1,
                             .check = log_softmax_check,
                             .forward = log_softmax_forward,
                             .backward = log_softmax_backward,
                             .backward_graph = log_softmax_backward_graph,
                             .cases = log_softmax_cases};

#if TG_ISA_BASE
tg_tensor *tg_softmax(tg_tensor *x, int axis)
{
    softmax_params p = {.axis = axis};
    return tg_apply1(&tg_op_softmax, &p, sizeof p, x);
}

tg_tensor *tg_log_softmax(tg_tensor *x, int axis)
{
    softmax_params p = {.axis = axis};
    return tg_apply1(&tg_op_log_softmax, &p, sizeof p, x);
}
#endif

/* ---- layer_norm ---------------------------------------------------------------------------
 * x[..., D1..Dk] seen as R rows of D = D1*...*Dk values (k = ndim_norm, the last k axes); per
 * row, in double and in two passes (as batch_norm, for the same cancellation reason):
 *   mean = sum(x)/D,  var = sum((x - mean)^2)/D  (biased),  rstd = 1/sqrt(var + eps)
 *   xhat = (x - mean) * rstd,  y = xhat * w + b     (w, b of the normalised shape, or 1 and 0)
 * Backward, with g = dy * w:
 *   dx += rstd * (g - sum(g)/D - xhat * sum(g * xhat)/D)   (one pass over the row for the two
 *         sums, one to write dx: mean and rstd are functions of the whole row)
 *   dw += sum over rows of dy * xhat;  db += sum over rows of dy
 * Forward saves mean and rstd per row in scratch. The parameter gradients are sums down the
 * rows: each of a fixed number of row chunks (it depends on R only) adds its rows into its own
 * double partial sums in scratch while it writes dx, and the chunks' partials are then added
 * in chunk order, so the result is the same for any thread count.
 * Inputs are x, then weight if has_weight, then bias if has_bias. */
typedef struct {
    int ndim_norm;
    float eps;
    bool has_weight, has_bias;
} layer_norm_params;

/* Most row chunks of the parameter gradients' partial sums, and fewest rows per chunk. */
#define LN_MAX_CHUNKS 64
#define LN_MIN_CHUNK_ROWS 16

/* x as R rows of D values. */
static void layer_norm_geometry(const tg_tensor *x, int k, int64_t *R, int64_t *D)
{
    *R = 1;
    *D = 1;
    for (int d = 0; d < x->ndim; d++)
        *(d < x->ndim - k ? R : D) *= x->shape[d];
}

/* Rows per chunk and chunk count for R rows (a function of R only). */
static int64_t layer_norm_chunks(int64_t R, int64_t *rows_per_chunk)
{
    int64_t n = (R + LN_MIN_CHUNK_ROWS - 1) / LN_MIN_CHUNK_ROWS;
    n = n < 1 ? 1 : n > LN_MAX_CHUNKS ? LN_MAX_CHUNKS : n;
    *rows_per_chunk = (R + n - 1) / n;
    return n;
}

/* Checks that t (weight or bias) has the normalised shape: x's last k sizes. */
static tg_status layer_norm_check_param(const tg_tensor *x, int k, const tg_tensor *t,
                                        const char *name)
{
    bool ok = t->ndim == k;
    for (int d = 0; ok && d < k; d++)
        ok = t->shape[d] == x->shape[x->ndim - k + d];
    if (ok)
        return TG_OK;
    char sx[160], st[160], sn[160];
    return tg_set_error(TG_ERR_SHAPE,
                        "tg_layer_norm: %s %s must have the normalised shape %s (the last %d "
                        "axes of x %s)",
                        name, TG_SHAPE_STR(t, st),
                        tg_shape_str(k, x->shape + x->ndim - k, sn, sizeof sn), k,
                        TG_SHAPE_STR(x, sx));
}

static tg_status layer_norm_check(tg_node *n, int *ndim, int64_t shape[])
{
    const layer_norm_params *p = TG_PARAMS(n, layer_norm_params);
    const tg_tensor *x = n->in[0];
    const int k = p->ndim_norm;
    char sx[160];
    if (n->n_in != 1 + p->has_weight + p->has_bias)
        return tg_set_error(TG_ERR_ARG,
                            "tg_layer_norm: %d inputs, but the params announce %d (x%s%s)", n->n_in,
                            1 + p->has_weight + p->has_bias, p->has_weight ? ", weight" : "",
                            p->has_bias ? ", bias" : "");
    if (k < 1 || k > x->ndim)
        return tg_set_error(TG_ERR_ARG,
                            "tg_layer_norm: ndim_norm = %d is out of range for x %s: it "
                            "normalises the last 1 .. %d axes",
                            k, TG_SHAPE_STR(x, sx), x->ndim);
    tg_status st = TG_OK;
    if (p->has_weight)
        st = layer_norm_check_param(x, k, n->in[1], "weight");
    if (st == TG_OK && p->has_bias)
        st = layer_norm_check_param(x, k, n->in[p->has_weight ? 2 : 1], "bias");
    if (st != TG_OK)
        return st;
    if (!(p->eps >= 0.0f && isfinite(p->eps)))
        return tg_set_error(TG_ERR_ARG, "tg_layer_norm: eps = %g must be finite and >= 0",
                            (double)p->eps);
    *ndim = x->ndim;
    memcpy(shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
    if (x->numel == 0)
        return TG_OK; /* no statistics: R or D may still be huge ([2^40, 0]), nothing to save */
    int64_t R, D, rows;
    layer_norm_geometry(x, k, &R, &D);
    /* [chunks][2][D] double partials of dw and db (only with an affine input), then mean[R] and
     * rstd[R]. */
    const size_t partials =
        p->has_weight || p->has_bias ? (size_t)layer_norm_chunks(R, &rows) * 2 * (size_t)D : 0;
    n->scratch_bytes = partials * sizeof(double) + 2 * (size_t)R * sizeof(float);
    return TG_OK;
}

/* The saved per-row statistics, after the partial sums in scratch. */
static float *layer_norm_stats(const tg_node *n, int64_t R, int64_t D)
{
    const layer_norm_params *p = TG_PARAMS(n, layer_norm_params);
    int64_t rows;
    const size_t partials =
        p->has_weight || p->has_bias ? (size_t)layer_norm_chunks(R, &rows) * 2 * (size_t)D : 0;
    return (float *)((double *)n->scratch + partials);
}

TG_ISA_KERNEL(layer_norm_forward, (tg_node * n), (n))
{
    const layer_norm_params *p = TG_PARAMS(n, layer_norm_params);
    const tg_tensor *x = n->in[0];
    const float *w = p->has_weight ? n->in[1]->data : NULL;
    const float *b = p->has_bias ? n->in[p->has_weight ? 2 : 1]->data : NULL;
    if (x->numel == 0)
        return; /* rows of nothing, or no rows: nothing to normalise (and no scratch) */
    int64_t R, D;
    layer_norm_geometry(x, p->ndim_norm, &R, &D);
    float *mean = layer_norm_stats(n, R, D), *rstd = mean + R;
    const float *xd = x->data;
    float *y = n->out->data;
    TG_PARALLEL_FOR_WORK(R, D)
    for (int64_t r = 0; r < R; r++) {
        const float *restrict xr = xd + r * D;
        float *restrict yr = y + r * D;
        bn_acc acc = {0};
        bn_acc_sum(&acc, xr, D);
        const double mu = bn_acc_total(&acc) / (double)D;
        bn_acc acc2 = {0};
        bn_acc_sq(&acc2, xr, D, mu);
        const double var = bn_acc_total(&acc2) / (double)D;
        const float fmu = (float)mu, rs = (float)(1.0 / sqrt(var + (double)p->eps));
        mean[r] = fmu;
        rstd[r] = rs;
        if (w && b)
            for (int64_t j = 0; j < D; j++)
                yr[j] = (xr[j] - fmu) * rs * w[j] + b[j];
        else if (w)
            for (int64_t j = 0; j < D; j++)
                yr[j] = (xr[j] - fmu) * rs * w[j];
        else if (b)
            for (int64_t j = 0; j < D; j++)
                yr[j] = (xr[j] - fmu) * rs + b[j];
        else
            for (int64_t j = 0; j < D; j++)
                yr[j] = (xr[j] - fmu) * rs;
    }
}

/* dx of one row: dx = rs * (g - a - xhat * c), a = sum(g)/D, c = sum(g * xhat)/D. */
static inline void ln_row_dx(float *restrict dx, const float *restrict x, const float *restrict dy,
                             const float *restrict w, int64_t D, float mu, float rs, bool set)
{
    bn_acc sg = {0}, sgx = {0};
    bn_acc_dy(&sg, &sgx, x, dy, w, D, mu, rs);
    const float a = (float)(bn_acc_total(&sg) / (double)D);
    const float c = (float)(bn_acc_total(&sgx) / (double)D);
    if (w && set)
        for (int64_t j = 0; j < D; j++)
            dx[j] = rs * (dy[j] * w[j] - a - (x[j] - mu) * rs * c);
    else if (w)
        for (int64_t j = 0; j < D; j++)
            dx[j] += rs * (dy[j] * w[j] - a - (x[j] - mu) * rs * c);
    else if (set)
        for (int64_t j = 0; j < D; j++)
            dx[j] = rs * (dy[j] - a - (x[j] - mu) * rs * c);
    else
        for (int64_t j = 0; j < D; j++)
            dx[j] += rs * (dy[j] - a - (x[j] - mu) * rs * c);
}

TG_ISA_KERNEL(layer_norm_backward, (tg_node * n), (n))
{
    const layer_norm_params *p = TG_PARAMS(n, layer_norm_params);
    const tg_tensor *x = n->in[0];
    const int iw = 1, ib = p->has_weight ? 2 : 1;
    const float *w = p->has_weight ? n->in[iw]->data : NULL;
    float *dx = tg_grad_of(n, 0);
    float *dw = p->has_weight ? tg_grad_of(n, iw) : NULL;
    float *db = p->has_bias ? tg_grad_of(n, ib) : NULL;
    const bool dx_set = tg_grad_fresh(n, 0), dw_set = dw && tg_grad_fresh(n, iw),
               db_set = db && tg_grad_fresh(n, ib);
    int64_t R, D, rows;
    layer_norm_geometry(x, p->ndim_norm, &R, &D);
    if (D == 0)
        return; /* nothing in any gradient */
    if (R == 0) {
        /* No rows: the parameter gradients are sums of nothing (no loop over D, which may be
         * huge for an empty x [0, 2^40], when there is no affine gradient to fill). */
        if (dw_set)
            memset(dw, 0, (size_t)D * sizeof(float));
        if (db_set)
            memset(db, 0, (size_t)D * sizeof(float));
        return;
    }
    const float *mean = layer_norm_stats(n, R, D), *rstd = mean + R;
    const int64_t chunks = layer_norm_chunks(R, &rows);
    double *part = n->scratch; /* [chunks][2][D]: dw's partials, then db's */
    const float *xd = x->data, *dy = n->out->grad->data;
    TG_PARALLEL_FOR_WORK(chunks, rows * D)
    for (int64_t c = 0; c < chunks; c++) {
        const int64_t r0 = c * rows, r1 = r0 + rows < R ? r0 + rows : R;
        double *restrict pw = dw || db ? part + c * 2 * D : NULL, *restrict pb = pw ? pw + D : NULL;
        if (pw)
            for (int64_t j = 0; j < 2 * D; j++)
                pw[j] = 0.0;
        for (int64_t r = r0; r < r1; r++) {
            const float *restrict xr = xd + r * D, *restrict dyr = dy + r * D;
            const float mu = mean[r], rs = rstd[r];
            if (dx)
                ln_row_dx(dx + r * D, xr, dyr, w, D, mu, rs, dx_set);
            if (dw)
                for (int64_t j = 0; j < D; j++)
                    pw[j] += (double)(dyr[j] * ((xr[j] - mu) * rs));
            if (db)
                for (int64_t j = 0; j < D; j++)
                    pb[j] += (double)dyr[j];
        }
    }
    if (!dw && !db)
        return;
    TG_PARALLEL_FOR_WORK(D, chunks)
    for (int64_t j = 0; j < D; j++) {
        double sw = 0.0, sb = 0.0;
        for (int64_t c = 0; c < chunks; c++) {
            sw += part[c * 2 * D + j];
            sb += part[c * 2 * D + D + j];
        }
        if (dw)
            dw[j] = (float)sw + (dw_set ? 0.0f : dw[j]);
        if (db)
            db[j] = (float)sb + (db_set ? 0.0f : db[j]);
    }
}

/* Second order on the [R, D] view (see batch_norm's): dw = sum over rows of dy * xhat, db = that
 * of dy, dx = norm_graph_dx with rstd of each row. */
static tg_status layer_norm_backward_graph(tg_node *n, tg_tensor *gout, uint32_t need,
                                           tg_tensor **gin)
{
    const layer_norm_params *p = TG_PARAMS(n, layer_norm_params);
    tg_tensor *x = n->in[0];
    if (x->numel == 0)
        return norm_graph_empty(n, need, gin);
    const int iw = 1, ib = p->has_weight ? 2 : 1;
    tg_tensor *w = p->has_weight ? n->in[iw] : NULL, *b = p->has_bias ? n->in[ib] : NULL;
    const bool want_x = tg_graph_needs(need, 0), want_w = w && tg_graph_needs(need, iw),
               want_b = b && tg_graph_needs(need, ib);
    int64_t rd[2];
    layer_norm_geometry(x, p->ndim_norm, &rd[0], &rd[1]);
    tg_tensor *g2 = tg_reshape(gout, 2, rd);
    if (want_b && !(gin[ib] = tg_reshape(tg_sum_axis(g2, 0, false), b->ndim, b->shape)))
        return tg_last_status();
    if (!want_x && !want_w)
        return TG_OK;
    tg_tensor *x2 = tg_reshape(x, 2, rd);
    tg_tensor *xhat = tg_layer_norm(x2, 1, TG_NONE, TG_NONE, p->eps);
    if (want_w &&
        !(gin[iw] = tg_reshape(tg_sum_axis(tg_mul(g2, xhat), 0, false), w->ndim, w->shape)))
        return tg_last_status();
    if (!want_x)
        return TG_OK;
    tg_tensor *rstd = tg_pow_scalar(tg_add_scalar(tg_var(x2, 1, true, 0), p->eps), -0.5f);
    tg_tensor *gw = w ? tg_mul(g2, tg_reshape(w, 1, &rd[1])) : g2;
    gin[0] = tg_reshape(norm_graph_dx(gw, xhat, rstd, false), x->ndim, x->shape);
    return gin[0] ? TG_OK : tg_last_status();
}

static const tg_case layer_norm_cases[] = {
    {.shape = {{2, 3, 4}, {4}, {4}},
     .n_in = 3,
     .name = "last_axis",
     TG_CASE_PARAMS(layer_norm_params, .ndim_norm = 1, .eps = 1e-5f, .has_weight = true,
                    .has_bias = true)},
    {.shape = {{2, 3, 4}, {3, 4}, {3, 4}},
     .n_in = 3,
     .name = "last_two_axes",
     TG_CASE_PARAMS(layer_norm_params, .ndim_norm = 2, .eps = 1e-5f, .has_weight = true,
                    .has_bias = true)},
    {.shape = {{4, 6}},
     .n_in = 1,
     .name = "no_affine",
     TG_CASE_PARAMS(layer_norm_params, .ndim_norm = 1, .eps = 1e-5f)},
    {.shape = {{3, 2, 5}},
     .n_in = 1,
     .name = "no_affine_two_axes",
     TG_CASE_PARAMS(layer_norm_params, .ndim_norm = 2, .eps = 1e-5f)},
    {.shape = {{5, 6}, {6}},
     .n_in = 2,
     .name = "weight_only",
     TG_CASE_PARAMS(layer_norm_params, .ndim_norm = 1, .eps = 1e-5f, .has_weight = true)},
    {.shape = {{5, 3}, {3}},
     .n_in = 2,
     .name = "bias_only_eps0.1",
     TG_CASE_PARAMS(layer_norm_params, .ndim_norm = 1, .eps = 0.1f, .has_bias = true)},
    {.shape = {{6}, {6}, {6}},
     .n_in = 3,
     .name = "one_row",
     TG_CASE_PARAMS(layer_norm_params, .ndim_norm = 1, .eps = 1e-5f, .has_weight = true,
                    .has_bias = true)},
    {0},
};
TG_OP_DEFINE(layer_norm) = {.name = "layer_norm",
                            .n_in = -1,
                            .check = layer_norm_check,
                            .forward = layer_norm_forward,
                            .backward = layer_norm_backward,
                            .backward_graph = layer_norm_backward_graph,
                            .cases = layer_norm_cases,
                            .fresh_grads = true};

#if TG_ISA_BASE
tg_tensor *tg_layer_norm(tg_tensor *x, int ndim_norm, tg_tensor *weight, tg_tensor *bias, float eps)
{
    if (!tg_optional_ok("tg_layer_norm", "weight", weight) ||
        !tg_optional_ok("tg_layer_norm", "bias", bias))
        return NULL;
    layer_norm_params p = {.ndim_norm = ndim_norm,
                           .eps = eps,
                           .has_weight = weight != TG_NONE,
                           .has_bias = bias != TG_NONE};
    tg_tensor *in[3];
    return tg_apply(&tg_op_layer_norm, &p, sizeof p, tg_norm_affine_inputs(in, x, weight, bias),
                    in);
}
#endif
