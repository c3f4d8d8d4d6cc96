/* Batch norm's parts shared by its ops (norm.c: batch_norm, batch_norm_act; norm_pool.c:
 * batch_norm_act_pool2d): the params, the statistics, the accumulators, the fused activation
 * and the backward's coefficients. Static inline: each ISA compilation of a family file
 * (tensor/isa.h) gets its own copy, so the fused and the separate ops compute the same bits. */
#ifndef TAPEGRAD_AUTOGRAD_NORM_INTERNAL_H
#define TAPEGRAD_AUTOGRAD_NORM_INTERNAL_H

#include "internal.h"
#include "ew_math.h"

#include "../tensor/parallel.h"

#include <math.h>
#include <string.h>

/* ---- batch_norm ---------------------------------------------------------------------------
 * x[N,C,S...] (S = the product of the sizes after C, 1 for x[N,C]); statistics per channel c
 * over the m = N*S values x[:,c,...].
 *   training:  mean = sum(x)/m,  var = sum((x - mean)^2)/m  (biased),  invstd = 1/sqrt(var+eps)
 *   eval:      mean = running_mean,  invstd = 1/sqrt(running_var + eps)
 *   y = (x - mean) * invstd * w + b         (w = 1, b = 0 without affine)
 * Backward, with xhat = (x - mean) * invstd and dxhat = dy * w:
 *   dw += sum(dy * xhat);  db += sum(dy)
 *   training: dx += invstd/m * (m*dxhat - sum(dxhat) - xhat * sum(dxhat * xhat))
 *             (mean and invstd are functions of x, so every x in the channel gets a share)
 *   eval:     dx += dxhat * invstd  (the statistics are constants)
 * Running statistics, in training when given, as PyTorch's BatchNorm:
 *   running_mean = (1 - momentum) * running_mean + momentum * mean
 *   running_var  = (1 - momentum) * running_var  + momentum * var * m/(m-1)   (unbiased)
 * PaddlePaddle differs on both counts: its momentum weighs the old value (moving = moving *
 * momentum + batch * (1 - momentum), default 0.9) and it averages the biased batch variance;
 * weights converted from it need momentum' = 1 - momentum and slightly different statistics.
 *
 * Inputs are x, then weight if has_weight, then bias if has_bias. The running buffers are not
 * inputs but borrowed pointers in the params: they get no gradient, and in training they are
 * a side effect of forward, not data the output depends on. As inputs they would be retained
 * and version-checked, so a GAN discriminator run twice on one tape (real batch, then fake
 * batch, each updating the running statistics in place) would fail its first backward with
 * "modified in place". Forward reads them while tg_batch_norm runs (the caller holds them
 * then) and saves what backward needs (mean, invstd) in scratch, so nothing touches them
 * after the call returns. */
typedef struct {
    /* borrowed, used only during forward; NULL for none (the wrapper's TG_NONE) */
    tg_tensor *running_mean, *running_var;
    float momentum, eps;
    bool training, has_weight, has_bias;
    /* Synchronised batch norm (tg_batch_norm_set_reduce): the hook in force when the forward
     * ran, for its backward to use too; NULL: this process's batch alone. */
    tg_batch_norm_reduce_fn reduce;
    void *reduce_ctx;
    /* Synchronised only: the values per channel over every process's batch, set while a kernel
     * runs (forward: sum(x) and sum((x - mean)^2); backward: sum(dy) and sum(dy * xhat)), and
     * the count of values per channel over them all (from the forward, kept for the backward). */
    const double *sync1, *sync2;
    int64_t sync_m;
    /* tg_batch_norm_act's activation of the normalised values (a tg_act) and leaky_relu's
     * slope; TG_ACT_NONE for tg_batch_norm. */
    int act;
    float slope;
    /* Training: the running statistics' update is applied 1 + extra_updates times
     * (tg_batch_norm_set_running_updates when the forward ran). */
    int extra_updates;
} batch_norm_params;

/* The affine parameters' data, NULL when absent. */
static inline const float *batch_norm_weight(const tg_node *n)
{
    return TG_PARAMS(n, batch_norm_params)->has_weight ? n->in[1]->data : NULL;
}

static inline const float *batch_norm_bias(const tg_node *n)
{
    const batch_norm_params *p = TG_PARAMS(n, batch_norm_params);
    return p->has_bias ? n->in[p->has_weight ? 2 : 1]->data : NULL;
}

/* Values per channel after C: 1 for [N,C], H*W for [N,C,H,W]. */
static inline int64_t batch_norm_spatial(const tg_tensor *x)
{
    int64_t S = 1;
    for (int d = 2; d < x->ndim; d++)
        S *= x->shape[d];
    return S;
}

/* Partial sums in the [N, C, S] layout: a channel's N runs of S go into one bn_acc, whose
 * BN_FLANES float lanes (a GCC vector: one vector add per BN_FLANES values, on any ISA, in the
 * same order) are folded into BN_LANES doubles after every BN_CHUNK values, across runs (a fold
 * per short run would cost more than the run). Double lanes throughout cost twice the
 * instructions plus a conversion each, and scalar lanes did not vectorise: batch norm was an
 * eighth of the GAN step. A float lane holds about BN_CHUNK / BN_FLANES = 32 terms, so its
 * rounding stays far below the float result's, and long channels keep double's accuracy. The
 * order of every addition is fixed: thread-independent. */
#define BN_LANES 8
#define BN_FLANES 16
#define BN_CHUNK 512
/* GCC and clang warn that a 64-byte vector changes the ABI where AVX-512 is off: only static,
 * inlined functions here take or return one. */
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float bn_vec __attribute__((vector_size(BN_FLANES * sizeof(float))));

static inline bn_vec bn_load(const float *p)
{
    bn_vec v;
    memcpy(&v, p, sizeof v);
    return v;
}

typedef struct {
    double d[BN_LANES]; /* the folded chunks */
    bn_vec f;           /* the current chunk */
    int64_t pending;    /* terms in f */
} bn_acc;

static inline void bn_acc_fold(bn_acc *a)
{
    for (int l = 0; l < BN_FLANES; l++)
        a->d[l % BN_LANES] += a->f[l];
    a->f = (bn_vec){0};
    a->pending = 0;
}

/* How many of the next n terms go into a's current chunk (folding a full one first). */
static inline int64_t bn_acc_room(bn_acc *a, int64_t n)
{
    if (a->pending >= BN_CHUNK)
        bn_acc_fold(a);
    const int64_t take = n < BN_CHUNK - a->pending ? n : BN_CHUNK - a->pending;
    a->pending += take;
    return take;
}

static inline double bn_acc_total(bn_acc *a)
{
    bn_acc_fold(a);
    double t = 0;
    for (int l = 0; l < BN_LANES; l++)
        t += a->d[l];
    return t;
}

/* sum(x[0..n)) into a. */
static inline void bn_acc_sum(bn_acc *a, const float *restrict x, int64_t n)
{
    for (int64_t j0 = 0; j0 < n;) {
        const int64_t e = j0 + bn_acc_room(a, n - j0);
        bn_vec f = a->f;
        int64_t j = j0;
        for (; j + BN_FLANES <= e; j += BN_FLANES)
            f += bn_load(x + j);
        for (int l = 0; j + l < e; l++)
            f[l] += x[j + l];
        a->f = f;
        j0 = e;
    }
}

/* sum((x - mu)^2) over a run into a, likewise. x - (float)mu is exact to half an ulp of the
 * difference, and mu's own rounding adds only m (mu - (float)mu)^2 to the sum: the two passes
 * still protect the variance when |mean| >> std. */
static inline void bn_acc_sq(bn_acc *a, const float *restrict x, int64_t n, double mu)
{
    const float fmu = (float)mu;
    for (int64_t j0 = 0; j0 < n;) {
        const int64_t e = j0 + bn_acc_room(a, n - j0);
        bn_vec f = a->f;
        int64_t j = j0;
        for (; j + BN_FLANES <= e; j += BN_FLANES) {
            const bn_vec d = bn_load(x + j) - fmu;
            f += d * d;
        }
        for (int l = 0; j + l < e; l++) {
            const float d = x[j + l] - fmu;
            f[l] += d * d;
        }
        a->f = f;
        j0 = e;
    }
}

/* sum(g) into sg and sum(g * xhat) into sgx over a run, g = dy (w NULL) or dy * w, xhat =
 * (x - mu) * is, likewise (the two fill and fold in step). Batch norm's backward passes no w;
 * layer norm's its per-element weight. */
static inline void bn_acc_dy(bn_acc *sg, bn_acc *sgx, const float *restrict x,
                             const float *restrict dy, const float *restrict w, int64_t n, float mu,
                             float is)
{
    for (int64_t j0 = 0; j0 < n;) {
        const int64_t e = j0 + bn_acc_room(sg, n - j0);
        bn_acc_room(sgx, n - j0);
        bn_vec f = sg->f, fx = sgx->f;
        int64_t j = j0;
        for (; j + BN_FLANES <= e; j += BN_FLANES) {
            const bn_vec g = w ? bn_load(dy + j) * bn_load(w + j) : bn_load(dy + j);
            f += g;
            fx += g * ((bn_load(x + j) - mu) * is);
        }
        for (int l = 0; j + l < e; l++) {
            const float g = w ? dy[j + l] * w[j + l] : dy[j + l];
            f[l] += g;
            fx[l] += g * ((x[j + l] - mu) * is);
        }
        sg->f = f, sgx->f = fx;
        j0 = e;
    }
}

/* ---- batch_norm's fused activation (tg_batch_norm_act) ----
 * y = act(z) for z the normalised value, which is never stored: one activation-sized tensor
 * less on the tape, and no pass of its own either way. The backward turns dy into dz = dy *
 * act'(z): relu's and leaky_relu's from z > 0, z made again from x by the forward's own
 * expression (so the same bits, the same mask), tanh's 1 - tanh(z)^2 as 1 - y^2 from y. Not
 * reading y for relu left the backward's two passes over a channel with x and dy alone, which
 * for D's [128, 64, 26, 26] (346 KB a channel each) stay in L2 between the passes: with y too
 * they did not: the backward went from 8.7% to 6.4% of the clean step's perf samples. Each
 * act' is the expression of the separate op (elementwise.def), so batch_norm followed by the
 * activation and batch_norm_act give the same bits, forward and backward, for runs (H * W) of
 * up to BN_DZ_RUN values; beyond, the backward's sums take a longer run in pieces and may
 * round differently. */
#define BN_DZ_RUN 1024

static inline void bn_act_apply(const batch_norm_params *p, float *restrict y, int64_t n)
{
    const float slope = p->slope;
    switch (p->act) {
    case TG_ACT_RELU:
        TG_PRAGMA(omp simd)
        for (int64_t j = 0; j < n; j++)
            y[j] = y[j] < 0.0f ? 0.0f : y[j];
        break;
    case TG_ACT_LEAKY_RELU:
        TG_PRAGMA(omp simd)
        for (int64_t j = 0; j < n; j++)
            y[j] = y[j] > 0.0f ? y[j] : slope * y[j];
        break;
    case TG_ACT_TANH:
        TG_PRAGMA(omp simd)
        for (int64_t j = 0; j < n; j++)
            y[j] = ew_tanh(y[j]);
        break;
    default: break;
    }
}

/* The forward's affine map of one channel: z = (x - mu) * scale + shift. */
typedef struct {
    float mu, scale, shift;
} bn_affine;

static inline bn_affine bn_affine_of(const tg_node *n, int64_t c)
{
    const float *mean = n->scratch, *invstd = mean + n->in[0]->shape[1];
    const float *w = batch_norm_weight(n), *b = batch_norm_bias(n);
    return (bn_affine){mean[c], invstd[c] * (w ? w[c] : 1.0f), b ? b[c] : 0.0f};
}

/* z for x: the forward's values before the activation, and the backward's mask made again
 * from them, one expression for both, so the same bits. */
static inline float bn_z(bn_affine f, float x)
{
    return (x - f.mu) * f.scale + f.shift;
}

/* dz = dy * act'(z) over n <= BN_DZ_RUN values, into buf, z = f's map of x (x NULL: from y =
 * act(z), as tanh always is); dy itself without an activation. */
static inline const float *bn_act_grad(const batch_norm_params *p, const float *dy,
                                       const float *restrict x, const float *restrict y,
                                       bn_affine f, int64_t n, float *restrict buf)
{
    const float slope = p->slope;
    switch (p->act) {
    case TG_ACT_RELU:
    case TG_ACT_LEAKY_RELU: {
        const float low = p->act == TG_ACT_RELU ? 0.0f : slope;
        if (x) {
            TG_PRAGMA(omp simd)
            for (int64_t j = 0; j < n; j++)
                buf[j] = dy[j] * (bn_z(f, x[j]) > 0.0f ? 1.0f : low);
        } else {
            TG_PRAGMA(omp simd)
            for (int64_t j = 0; j < n; j++)
                buf[j] = dy[j] * (y[j] > 0.0f ? 1.0f : low);
        }
        return buf;
    }
    case TG_ACT_TANH:
        TG_PRAGMA(omp simd)
        for (int64_t j = 0; j < n; j++)
            buf[j] = dy[j] * (1.0f - y[j] * y[j]);
        return buf;
    default: return dy;
    }
}

/* The pieces the backward walks a run of S in: whole without an activation, else as many
 * values as bn_act_grad's buffer holds. */
static inline int64_t bn_piece_len(const batch_norm_params *p, int64_t S)
{
    return p->act == TG_ACT_NONE || S < BN_DZ_RUN ? S : BN_DZ_RUN;
}

/* Channel c's statistics from its sum of x and sum of squared deviations (training), or the
 * running ones (eval); updates the running statistics in training. */
static inline void batch_norm_stats(const batch_norm_params *p, int64_t c, int64_t m, double mu,
                                    double ss, float *mean, float *invstd)
{
    float *rm = p->running_mean ? p->running_mean->data : NULL;
    float *rv = p->running_var ? p->running_var->data : NULL;
    if (p->training) {
        const double var = ss / (double)m;
        mean[c] = (float)mu;
        invstd[c] = (float)(1.0 / sqrt(var + (double)p->eps));
        /* each update rounds to float, as that many forwards on this batch would */
        for (int u = 0; rm && u <= p->extra_updates; u++) {
            const double mom = p->momentum;
            rm[c] = (float)((1.0 - mom) * rm[c] + mom * mu);
            rv[c] = (float)((1.0 - mom) * rv[c] + mom * var * (double)m / (double)(m - 1));
        }
    } else {
        mean[c] = rm[c];
        invstd[c] = (float)(1.0 / sqrt((double)rv[c] + (double)p->eps));
    }
}

/* Channel c's statistics into mean[c] and invstd[c] (updating the running ones in training)
 * from its N runs of S values, C * S apart, in x (the [N, C, S] layout): the two passes in
 * double, or the synchronised sums; ms is the count they are over. */
static inline void bn_channel_stats(const batch_norm_params *p, const float *xd, int64_t N,
                                    int64_t C, int64_t S, int64_t c, int64_t ms, float *mean,
                                    float *invstd)
{
    const int64_t m = N * S;
    double mu = 0, ss = 0;
    if (p->sync1) {
        mu = p->sync1[c] / (double)ms;
        ss = p->sync2[c];
    } else if (p->training) {
        bn_acc acc = {0};
        for (int64_t i = 0; i < N; i++)
            bn_acc_sum(&acc, xd + (i * C + c) * S, S);
        mu = bn_acc_total(&acc) / (double)m;
        bn_acc acc2 = {0};
        for (int64_t i = 0; i < N; i++)
            bn_acc_sq(&acc2, xd + (i * C + c) * S, S, mu);
        ss = bn_acc_total(&acc2);
    }
    batch_norm_stats(p, c, ms, mu, ss, mean, invstd);
}

/* Channel c's parameter gradients from its sums, and the coefficients of its dx:
 * dx = g * (dy - a - xhat * k). With sum(dxhat) = w*sdy and sum(dxhat*xhat) = w*sdyx the
 * training formula becomes dx = w*invstd * (dy - sdy/m - xhat * sdyx/m). */
typedef struct {
    float *dx, *dw, *db;         /* NULL when not wanted */
    bool dx_set, dw_set, db_set; /* fresh (tg_grad_fresh): assign instead of adding */
} batch_norm_grads;

static inline void batch_norm_dcoef(const batch_norm_params *p, const float *w, int64_t c,
                                    int64_t m, double sdy, double sdyx, float is,
                                    const batch_norm_grads *gr, float *g, float *a, float *k)
{
    if (gr->dw)
        gr->dw[c] = (float)sdyx + (gr->dw_set ? 0.0f : gr->dw[c]);
    if (gr->db)
        gr->db[c] = (float)sdy + (gr->db_set ? 0.0f : gr->db[c]);
    *g = is * (w ? w[c] : 1.0f);
    /* Synchronised, dx takes the sums over every process's batch; dw and db above stay this
     * process's. */
    if (p->sync1)
        sdy = p->sync1[c], sdyx = p->sync2[c], m = p->sync_m;
    *a = p->training ? (float)(sdy / (double)m) : 0.0f;
    *k = p->training ? (float)(sdyx / (double)m) : 0.0f;
}

/* dx over a run of len values from their dz (dyc) and x, with the channel's coefficients from
 * batch_norm_dcoef: assigned when set (a fresh gradient), else added. dx may be dy
 * (dx_over_dy): not restrict. */
static inline void bn_dx_run(float *dxc, const float *dyc, const float *restrict xc, int64_t len,
                             float g, float a, float k, float mu, float is, bool set)
{
    if (set) {
        TG_PRAGMA(omp simd)
        for (int64_t j = 0; j < len; j++)
            dxc[j] = g * (dyc[j] - a - (xc[j] - mu) * is * k);
    } else {
        TG_PRAGMA(omp simd)
        for (int64_t j = 0; j < len; j++)
            dxc[j] += g * (dyc[j] - a - (xc[j] - mu) * is * k);
    }
}

/* Batch norm's check (norm.c), for an op with batch_norm_params: the inputs, the params and
 * the statistics' scratch (mean[C], invstd[C], then the synchronised backward's sums); the
 * output shape is x's. */
tg_status tg_batch_norm_check(tg_node *n, int *ndim, int64_t shape[]);
/* The second order of a batch norm node n with batch_norm_params (norm.c; see
 * batch_norm_backward_graph): y is the activation's output for its mask (relu, leaky_relu) or
 * its derivative (tanh), gout the gradient of y. The node's scratch starts with mean[C] and
 * invstd[C]. */
tg_status tg_batch_norm_graph(const tg_node *n, tg_tensor *y, tg_tensor *gout, uint32_t need,
                              tg_tensor **gin);
/* The inputs of a normalisation op: x, then weight and bias where they are not TG_NONE (the
 * op's params say which are there). Returns their count. */
int tg_norm_affine_inputs(tg_tensor *in[3], tg_tensor *x, tg_tensor *weight, tg_tensor *bias);
/* tg_batch_norm_act's body for op, an op with batch_norm_params (fn names the caller in
 * messages): the params from the arguments, and the synchronised statistics when a hook is set
 * in training. */
tg_tensor *tg_batch_norm_apply(const tg_op *op, const char *fn, tg_tensor *x, tg_tensor *weight,
                               tg_tensor *bias, tg_tensor *running_mean, tg_tensor *running_var,
                               bool training, float momentum, float eps, tg_act act, float slope);
/* The synchronised batch norm's hook in force (tg_batch_norm_set_reduce), NULL for none. */
tg_batch_norm_reduce_fn tg_batch_norm_reduce_hook(void);

#endif
