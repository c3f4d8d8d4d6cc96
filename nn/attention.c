/* MultiheadAttention and TransformerEncoderLayer, in PyTorch's layout (batch_first): the same
 * parameter names and shapes, so a PyTorch state_dict loads as it is. Each forward composes
 * autograd ops: the heads are a batch axis of tg_matmul ([N, heads, L, hd] @ [N, heads, hd, S]),
 * never a broadcast [N, L, S, hd] product. */
#include "internal.h"

#include <math.h>

/* ---- MultiheadAttention ------------------------------------------------------------------ */

typedef struct {
    int64_t embed_dim, heads;
} mha_config;

/* q, k, v projected and split into heads: out[0] = q / sqrt(hd) and out[2] = v as
 * [N, heads, L or S, hd], out[1] = k transposed for the product, [N, heads, hd, S]. Each uses its
 * third of the packed in_proj_weight and in_proj_bias; the scale is applied to those rows of the
 * weight and bias (e^2 + e values) rather than to q itself (N L e values, forward and backward),
 * and k's permutation gives k^T directly: no copy of any activation besides the permutations. */
static tg_status project(tg_module *m, tg_tensor *const *x, tg_tensor **out)
{
    const mha_config *c = tg_module_config(m);
    const int64_t e = c->embed_dim, hd = e / c->heads;
    tg_tensor *w = tg_module_param(m, "in_proj_weight");
    tg_tensor *b = tg_nn_optional_param(m, "in_proj_bias");
    const float scale = 1.0f / sqrtf((float)hd);
    static const int perm[3][4] = {{0, 2, 1, 3}, {0, 2, 3, 1}, {0, 2, 1, 3}};
    for (int i = 0; i < 3; i++) {
        tg_tensor *wi = tg_slice(w, 0, i * e, (i + 1) * e, 1);
        tg_tensor *bi = b == TG_NONE ? TG_NONE : tg_slice(b, 0, i * e, (i + 1) * e, 1);
        if (i == 0) {
            wi = tg_mul_scalar(wi, scale);
            bi = bi == TG_NONE ? TG_NONE : tg_mul_scalar(bi, scale);
        }
        const int64_t n = x[i]->shape[0], len = x[i]->shape[1];
        out[i] =
            tg_permute(tg_reshape(tg_linear(x[i], wi, bi), TG_DIMS(n, len, c->heads, hd)), perm[i]);
        if (!out[i])
            return tg_last_status();
    }
    return TG_OK;
}

/* The shape checks of a forward: q [N, L, e], k and v [N, S, e], a mask broadcasting to
 * [N, heads, L, S]. */
static tg_status mha_check(const tg_module *m, const tg_tensor *q, const tg_tensor *k,
                           const tg_tensor *v, const tg_tensor *mask)
{
    const mha_config *c = tg_module_config(m);
    const char *fn = "tg_nn_multihead_attention";
    if (q == TG_NONE || k == TG_NONE || v == TG_NONE)
        return tg_set_error(TG_ERR_ARG, "%s: %s \"%s\": q, k and v are required, one is TG_NONE",
                            fn, tg_module_type(m), tg_module_name(m));
    const int64_t e = c->embed_dim;
    if (q->ndim != 3 || k->ndim != 3 || v->ndim != 3 || q->shape[2] != e || k->shape[2] != e ||
        v->shape[2] != e || k->shape[0] != q->shape[0] || v->shape[0] != q->shape[0] ||
        v->shape[1] != k->shape[1]) {
        char sq[96], sk[96], sv[96];
        return tg_set_error(TG_ERR_SHAPE,
                            "%s: %s \"%s\" (embed_dim %lld) got q %s, k %s, v %s; it takes "
                            "q [N, L, %lld], k and v [N, S, %lld]",
                            fn, tg_module_type(m), tg_module_name(m), (long long)e,
                            tg_shape_str(q->ndim, q->shape, sq, sizeof sq),
                            tg_shape_str(k->ndim, k->shape, sk, sizeof sk),
                            tg_shape_str(v->ndim, v->shape, sv, sizeof sv), (long long)e,
                            (long long)e);
    }
    if (mask == TG_NONE)
        return TG_OK;
    const int64_t want[4] = {q->shape[0], c->heads, q->shape[1], k->shape[1]};
    bool fits = mask->ndim <= 4;
    for (int i = 0; fits && i < mask->ndim; i++) {
        int64_t s = mask->shape[mask->ndim - 1 - i];
        fits = s == 1 || s == want[3 - i];
    }
    if (!fits) {
        char sm[96], sw[96];
        return tg_set_error(TG_ERR_SHAPE,
                            "%s: %s \"%s\": mask %s does not broadcast to [N, heads, L, S] = %s",
                            fn, tg_module_type(m), tg_module_name(m),
                            tg_shape_str(mask->ndim, mask->shape, sm, sizeof sm),
                            tg_shape_str(4, want, sw, sizeof sw));
    }
    return TG_OK;
}

/* (x) for self-attention, (q, k, v) or (q, k, v, mask) -> out[0] [N, L, e] and, with n_out 2,
 * out[1] the attention weights [N, heads, L, S]. */
static tg_status mha_forward(tg_module *m, int64_t n_in, tg_tensor *const *in, int64_t n_out,
                             tg_tensor **out)
{
    const mha_config *c = tg_module_config(m);
    if ((n_in != 1 && n_in != 3 && n_in != 4) || n_out > 2)
        return tg_set_error(TG_ERR_ARG,
                            "tg_nn_multihead_attention: %s \"%s\" called with %lld inputs and "
                            "%lld outputs; it takes (x), (q, k, v) or (q, k, v, mask) and gives "
                            "the output and optionally the attention weights",
                            tg_module_type(m), tg_module_name(m), (long long)n_in,
                            (long long)n_out);
    tg_tensor *q = in[0], *k = n_in > 1 ? in[1] : q, *v = n_in > 1 ? in[2] : q;
    tg_tensor *mask = n_in > 3 ? in[3] : TG_NONE;
    tg_status st = mha_check(m, q, k, v, mask);
    tg_tensor *h[3];
    if (st != TG_OK || (st = project(m, (tg_tensor *[]){q, k, v}, h)) != TG_OK)
        return st;
    const int64_t n = q->shape[0], len = q->shape[1];
    /* softmax(q k^T / sqrt(hd) + mask) v, all heads and batch entries in one batched matmul. */
    tg_tensor *scores = tg_matmul(h[0], h[1]);
    if (mask != TG_NONE)
        scores = tg_add(scores, mask);
    tg_tensor *p = tg_softmax(scores, -1);
    tg_tensor *o = tg_permute(tg_matmul(p, h[2]), (const int[]){0, 2, 1, 3});
    out[0] = tg_module_forward(tg_module_child(m, "out_proj"),
                               tg_reshape(o, TG_DIMS(n, len, c->embed_dim)));
    if (n_out == 2)
        out[1] = p;
    return out[0] ? TG_OK : tg_last_status();
}

tg_module *tg_nn_multihead_attention(int64_t embed_dim, int64_t heads, bool bias, tg_rng *rng)
{
    const char *fn = "tg_nn_multihead_attention";
    if (embed_dim < 1 || heads < 1 || embed_dim % heads != 0 || !rng) {
        tg_set_error(TG_ERR_ARG,
                     "%s: embed_dim %lld, heads %lld%s: need embed_dim >= 1 divisible by "
                     "heads >= 1, and an rng",
                     fn, (long long)embed_dim, (long long)heads, rng ? "" : ", rng NULL");
        return NULL;
    }
    /* in_proj has 3 * embed_dim rows: a size whose 3 * embed_dim overflows cannot be made. */
    if (embed_dim > INT64_MAX / 3) {
        tg_set_error(TG_ERR_ARG, "%s: embed_dim %lld is too large: 3 * embed_dim overflows int64",
                     fn, (long long)embed_dim);
        return NULL;
    }
    const mha_config c = {.embed_dim = embed_dim, .heads = heads};
    tg_module *m = tg_module_new_multi("MultiheadAttention", mha_forward, &c, sizeof c);
    if (!m)
        return NULL;
    /* PyTorch's _reset_parameters: in_proj_weight Xavier-uniform (fans e and 3e), both biases
     * 0; out_proj keeps Linear's weight init. An add given NULL keeps the error that made it. */
    tg_tensor *w = tg_tensor_new(TG_DIMS(3 * embed_dim, embed_dim));
    if (w && tg_init_xavier_uniform_(w, rng, 1.0f) != TG_OK) {
        tg_tensor_release(w);
        w = NULL;
    }
    tg_status st = tg_module_add_param(m, "in_proj_weight", w);
    if (st == TG_OK && bias)
        st = tg_module_add_param(m, "in_proj_bias", tg_tensor_zeros(TG_DIMS(3 * embed_dim)));
    if (st == TG_OK) {
        tg_module *proj = tg_nn_linear(embed_dim, embed_dim, bias, rng);
        if (proj && bias && tg_init_constant_(tg_module_param(proj, "bias"), 0.0f) != TG_OK) {
            tg_module_free(proj);
            proj = NULL;
        }
        st = tg_module_add_child(m, "out_proj", proj);
    }
    if (st != TG_OK) {
        tg_module_free(m);
        return NULL;
    }
    return m;
}

/* ---- TransformerEncoderLayer ------------------------------------------------------------- */

typedef struct {
    bool gelu;
} encoder_config;

/* (x) or (x, mask): norm_first false, no dropout (PyTorch's post-norm layer in eval mode):
 *     h = norm1(x + self_attn(x, x, x, mask)),  out = norm2(h + linear2(act(linear1(h)))). */
static tg_status encoder_forward(tg_module *m, int64_t n_in, tg_tensor *const *in, int64_t n_out,
                                 tg_tensor **out)
{
    const encoder_config *c = tg_module_config(m);
    if (n_in > 2 || n_out != 1)
        return tg_set_error(TG_ERR_ARG,
                            "tg_nn_transformer_encoder_layer: %s \"%s\" called with %lld inputs "
                            "and %lld outputs; it takes (x) or (x, mask) and gives one output",
                            tg_module_type(m), tg_module_name(m), (long long)n_in,
                            (long long)n_out);
    tg_tensor *x = in[0];
    tg_tensor *qkvm[4] = {x, x, x, n_in > 1 ? in[1] : TG_NONE}, *a;
    tg_status st = tg_module_forward_multi(tg_module_child(m, "self_attn"), 4, qkvm, 1, &a);
    if (st != TG_OK)
        return st;
    tg_tensor *h = tg_module_forward(tg_module_child(m, "norm1"), tg_add(x, a));
    tg_tensor *f = tg_module_forward(tg_module_child(m, "linear1"), h);
    f = c->gelu ? tg_gelu(f) : tg_relu(f);
    f = tg_module_forward(tg_module_child(m, "linear2"), f);
    out[0] = tg_module_forward(tg_module_child(m, "norm2"), tg_add(h, f));
    return out[0] ? TG_OK : tg_last_status();
}

tg_module *tg_nn_transformer_encoder_layer(int64_t d_model, int64_t heads, int64_t dim_ff,
                                           bool gelu, tg_rng *rng)
{
    if (dim_ff < 1) {
        tg_set_error(TG_ERR_ARG, "tg_nn_transformer_encoder_layer: dim_ff %lld: need >= 1",
                     (long long)dim_ff);
        return NULL;
    }
    const encoder_config c = {.gelu = gelu};
    tg_module *m = tg_module_new_multi("TransformerEncoderLayer", encoder_forward, &c, sizeof c);
    if (!m)
        return NULL;
    /* PyTorch's registration order, which is its state_dict's order. */
    const int64_t d[1] = {d_model};
    tg_status st =
        tg_module_add_child(m, "self_attn", tg_nn_multihead_attention(d_model, heads, true, rng));
    if (st == TG_OK)
        st = tg_module_add_child(m, "linear1", tg_nn_linear(d_model, dim_ff, true, rng));
    if (st == TG_OK)
        st = tg_module_add_child(m, "linear2", tg_nn_linear(dim_ff, d_model, true, rng));
    if (st == TG_OK)
        st = tg_module_add_child(m, "norm1", tg_nn_layer_norm(1, d, 1e-5f, true));
    if (st == TG_OK)
        st = tg_module_add_child(m, "norm2", tg_nn_layer_norm(1, d, 1e-5f, true));
    if (st != TG_OK) {
        tg_module_free(m);
        return NULL;
    }
    return m;
}
