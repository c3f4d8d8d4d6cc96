/* Recurrent cells. GRUCell follows PyTorch's equations, gate order and parameter names, so a
 * state dict moves between the two unchanged:
 *     r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
 *     z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
 *     n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))
 *     h' = (1 - z) * n + z * h
 * with weight_ih = [W_ir; W_iz; W_in] ([3h, in]), weight_hh = [W_hr; W_hz; W_hn] ([3h, h]) and
 * the biases stacked the same way. A sequence is a loop over the cell (examples/char_lm). */
#include "internal.h"

#include <math.h>

typedef struct {
    int64_t in, hidden;
} gru_config;

/* The weight, or TG_NONE for a cell built without biases (so no misspelt name passes). */
static tg_tensor *optional_param(tg_module *m, const char *name)
{
    return tg_module_has_param(m, name) ? tg_module_param(m, name) : TG_NONE;
}

static tg_status gru_forward(tg_module *m, int64_t n_in, tg_tensor *const *in, int64_t n_out,
                             tg_tensor **out)
{
    const gru_config *c = tg_module_config(m);
    const char *fn = "tg_module_forward";
    if (n_in != 2 || n_out != 1)
        return tg_set_error(TG_ERR_ARG,
                            "%s: GRUCell \"%s\" takes 2 inputs (x, h) and gives 1 output, "
                            "not %lld and %lld",
                            fn, tg_module_name(m), (long long)n_in, (long long)n_out);
    tg_tensor *x = in[0], *h = in[1];
    if (x == TG_NONE)
        return tg_set_error(TG_ERR_ARG, "%s: GRUCell \"%s\": x is TG_NONE; only h may be", fn,
                            tg_module_name(m));
    if (x->ndim == 2 && h == TG_NONE) /* PyTorch's hx=None: a zero state */
        h = tg_zeros(TG_DIMS(x->shape[0], c->hidden));
    if (!h)
        return tg_last_status();
    if (x->ndim != 2 || x->shape[1] != c->in || h->ndim != 2 || h->shape[0] != x->shape[0] ||
        h->shape[1] != c->hidden) {
        char sx[96], sh[96];
        return tg_set_error(TG_ERR_SHAPE,
                            "%s: GRUCell \"%s\" (%lld -> %lld) got x %s and h %s; it takes "
                            "x [N, %lld] and h [N, %lld] or TG_NONE",
                            fn, tg_module_name(m), (long long)c->in, (long long)c->hidden,
                            tg_shape_str(x->ndim, x->shape, sx, sizeof sx),
                            h == TG_NONE ? "TG_NONE"
                                         : tg_shape_str(h->ndim, h->shape, sh, sizeof sh),
                            (long long)c->in, (long long)c->hidden);
    }
    const int64_t H = c->hidden;
    /* One GEMM each for the input and the hidden projections of all three gates. */
    tg_tensor *gi =
        tg_linear(x, tg_module_param(m, "weight_ih"), optional_param(m, "bias_ih")); /* [N,3H] */
    tg_tensor *gh = tg_linear(h, tg_module_param(m, "weight_hh"), optional_param(m, "bias_hh"));
    /* One add of all 3H columns (n's third of it unused) and a slice per gate: the fewest
     * slices, each a copy forward and a zero-filled gradient backward. */
    tg_tensor *s = tg_add(gi, gh);
    tg_tensor *r = tg_sigmoid(tg_slice(s, 1, 0, H, 1)),
              *z = tg_sigmoid(tg_slice(s, 1, H, 2 * H, 1));
    tg_tensor *n = tg_tanh(
        tg_add(tg_slice(gi, 1, 2 * H, 3 * H, 1), tg_mul(r, tg_slice(gh, 1, 2 * H, 3 * H, 1))));
    /* (1 - z) n + z h = n + z (h - n): PyTorch's fused kernel computes the same form. */
    out[0] = tg_add(n, tg_mul(z, tg_sub(h, n)));
    return out[0] ? TG_OK : tg_last_status();
}

tg_module *tg_nn_gru_cell(int64_t in, int64_t hidden, bool bias, tg_rng *rng)
{
    const char *fn = "tg_nn_gru_cell";
    if (in < 1 || hidden < 1 || !rng) {
        tg_set_error(TG_ERR_ARG, "%s: in %lld, hidden %lld%s: need both >= 1 and an rng", fn,
                     (long long)in, (long long)hidden, rng ? "" : ", rng NULL");
        return NULL;
    }
    /* The weights have 3 * hidden rows: a size whose 3 * hidden overflows cannot be made. */
    if (hidden > INT64_MAX / 3) {
        tg_set_error(TG_ERR_ARG, "%s: hidden %lld is too large: 3 * hidden overflows int64", fn,
                     (long long)hidden);
        return NULL;
    }
    gru_config c = {.in = in, .hidden = hidden};
    tg_module *m = tg_module_new_multi("GRUCell", gru_forward, &c, sizeof c);
    if (!m)
        return NULL;
    /* PyTorch's RNNBase/RNNCellBase reset_parameters: every weight and bias ~ U(-k, k),
     * k = 1/sqrt(hidden), drawn in registration order. */
    const float k = 1.0f / sqrtf((float)hidden);
    tg_status st = tg_module_add_param(m, "weight_ih",
                                       tg_nn_uniform_param(fn, TG_DIMS(3 * hidden, in), k, rng));
    if (st == TG_OK)
        st = tg_module_add_param(m, "weight_hh",
                                 tg_nn_uniform_param(fn, TG_DIMS(3 * hidden, hidden), k, rng));
    if (st == TG_OK && bias)
        st =
            tg_module_add_param(m, "bias_ih", tg_nn_uniform_param(fn, TG_DIMS(3 * hidden), k, rng));
    if (st == TG_OK && bias)
        st =
            tg_module_add_param(m, "bias_hh", tg_nn_uniform_param(fn, TG_DIMS(3 * hidden), k, rng));
    if (st != TG_OK) {
        tg_module_free(m);
        return NULL;
    }
    return m;
}
