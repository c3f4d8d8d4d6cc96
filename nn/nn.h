/* tapegrad — neural-network modules built from autograd ops.
 *
 * A module is a tree: a type ("Linear"), named parameters, named buffers (running statistics),
 * named children, a forward function and a small per-layer config. Modules contain no backward
 * code: their forward composes autograd ops, so every result is owned by the innermost open
 * tape like any op's.
 *
 * Ownership: a module owns its parameters, buffers and children; tg_module_free frees the whole
 * tree. Functions that take a tensor or a child ("add") take ownership of it even when they
 * fail, so a constructor call can be passed straight in. Constructors return NULL on failure
 * with tg_last_error() set; a NULL handed to an add or to a Sequential keeps that first error
 * and fails in turn, so a chain of constructor calls needs one check at the end:
 *
 *     tg_module *G = TG_NN_SEQUENTIAL(
 *         tg_nn_linear(nz, 128 * 7 * 7, true, rng), tg_nn_batch_norm1d(128 * 7 * 7),
 *         tg_nn_relu(), tg_nn_reshape(TG_DIMS(-1, 128, 7, 7)),
 *         tg_nn_conv_transpose2d(128, 64, 4, 2, 1, 0, true, rng), tg_nn_batch_norm2d(64),
 *         tg_nn_relu(), tg_nn_conv_transpose2d(64, 1, 4, 2, 1, 0, true, rng), tg_nn_tanh());
 *     if (!G) die(tg_last_error());
 *
 * Qualified names follow PyTorch: a parameter "weight" of the child "1" of the child "fc" is
 * "fc.1.weight"; with a prefix "G" it is "G.fc.1.weight". The root's own name is not part of
 * them. Orders are depth-first in registration order, a module's own tensors before its
 * children's, as PyTorch's named_parameters() and state_dict(). */
#ifndef TAPEGRAD_NN_H
#define TAPEGRAD_NN_H

#include "autograd.h"
#include "optim.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tg_module tg_module;

/* A module's forward: x in, a tape-owned result out, or NULL with the error set. */
typedef tg_tensor *(*tg_forward_fn)(tg_module *m, tg_tensor *x);
/* The forward of a module with several inputs or outputs (a conditional generator's (z, label),
 * a GRU cell's (x, h), attention's (q, k, v, mask)): reads n_in inputs, writes n_out tape-owned
 * results into out[], returns TG_OK or the error. */
typedef tg_status (*tg_forward_multi_fn)(tg_module *m, int64_t n_in, tg_tensor *const *in,
                                         int64_t n_out, tg_tensor **out);

/* ---- the module base --------------------------------------------------------------------- */

/* A new empty module of the given type name (copied) whose forward is forward (may be NULL for
 * a pure container) and whose config is a copy of config_size bytes (config may be NULL). */
tg_module *tg_module_new(const char *type, tg_forward_fn forward, const void *config,
                         size_t config_size);
/* Frees m with its parameters, buffers and children. NULL is ignored. */
void tg_module_free(tg_module *m);

/* Adds a parameter: takes ownership of t (released on failure too) and sets requires_grad.
 * name must be new in m, non-empty and free of '.'. */
tg_status tg_module_add_param(tg_module *m, const char *name, tg_tensor *t);
/* Adds a buffer (saved and loaded with the parameters, never trained): takes ownership of t. */
tg_status tg_module_add_buffer(tg_module *m, const char *name, tg_tensor *t);
/* Adds a child module under name: takes ownership of child (freed on failure too). */
tg_status tg_module_add_child(tg_module *m, const char *name, tg_module *child);

/* A new empty module like tg_module_new whose forward takes several inputs or gives several
 * outputs (tg_module_forward_multi runs it; tg_module_forward and tg_module_forward2 run it
 * with one output). */
tg_module *tg_module_new_multi(const char *type, tg_forward_multi_fn forward, const void *config,
                               size_t config_size);

/* The forward of m on x (tape-owned result), or NULL with the error set; NULL x keeps the
 * error that produced it. */
tg_tensor *tg_module_forward(tg_module *m, tg_tensor *x);
/* The forward of m on two inputs with one output (a GRU cell's (x, h), a conditional model's
 * (z, y)). */
tg_tensor *tg_module_forward2(tg_module *m, tg_tensor *a, tg_tensor *b);
/* The forward of m on n_in inputs into n_out outputs: TG_OK, or the error (out[] then holds
 * NULLs). A NULL input keeps the error that produced it; TG_NONE reaches the forward as an
 * absent optional input (attention's mask). A one-input module runs here too, with n_in = n_out
 * = 1 (other counts are an error naming it). */
tg_status tg_module_forward_multi(tg_module *m, int64_t n_in, tg_tensor *const *in, int64_t n_out,
                                  tg_tensor **out);

/* The type name ("Linear"). */
const char *tg_module_type(const tg_module *m);
/* The name the parent gave m ("fc1"), "" for a root. */
const char *tg_module_name(const tg_module *m);
/* The config bytes given to tg_module_new (owned by m), or NULL. */
void *tg_module_config(const tg_module *m);
/* True in training mode (the default for a new module). */
bool tg_module_is_training(const tg_module *m);
/* Sets training mode on m and every module below it (false: evaluation, as model.eval()). */
void tg_module_train(tg_module *m, bool training);

/* m's own parameter under name (borrowed), or NULL with an error naming the module and the
 * names it has (a misspelt "bais" must not pass as "no bias"); tg_module_has_param asks. */
tg_tensor *tg_module_param(const tg_module *m, const char *name);
/* True when m has its own parameter under name (no error either way). */
bool tg_module_has_param(const tg_module *m, const char *name);
/* m's own buffer under name (borrowed), or NULL with the error set. */
tg_tensor *tg_module_buffer(const tg_module *m, const char *name);
/* m's direct child under name (borrowed), or NULL with the error set. */
tg_module *tg_module_child(const tg_module *m, const char *name);
/* The number of direct children of m. */
int64_t tg_module_num_children(const tg_module *m);
/* Direct child i (borrowed, registration order), or NULL when out of range. */
tg_module *tg_module_child_at(const tg_module *m, int64_t i);

/* Every parameter of the tree in the fixed order (depth-first, registration order) as a
 * malloc'ed array of borrowed pointers; *n gets the count. The caller frees the array (not the
 * tensors) with free(). NULL on failure, or with *n = 0 when there are none. */
tg_tensor **tg_module_parameters(const tg_module *m, int64_t *n);
/* The qualified names of those parameters, same order, each "prefix.path.name" (prefix NULL or
 * "" for none), as one malloc'ed block: free(names) frees the array and the strings. */
char **tg_module_parameter_names(const tg_module *m, const char *prefix, int64_t *n);
/* The total number of parameter elements in the tree (PyTorch's sum(p.numel())). */
int64_t tg_module_num_parameters(const tg_module *m);
/* Frees the gradient of every parameter in the tree. */
void tg_module_zero_grad(tg_module *m);

/* Puts every parameter and buffer of the tree into sd under its qualified name (prefix NULL
 * or "" for none). The dict retains the module's own tensors: it shares their values. */
tg_status tg_module_state_dict(const tg_module *m, const char *prefix, tg_state_dict *sd);
/* Copies values from sd into the tree's parameters and buffers. Everything is validated first
 * — a missing name, an entry under "prefix." (any entry when the prefix is empty) that is not
 * the module's, a shape mismatch, a value the entry cannot hold (tg_module_bad_value) — and
 * on any error nothing is changed. */
tg_status tg_module_load_state_dict(tg_module *m, const char *prefix, const tg_state_dict *sd);
/* The rule tg_module_load_state_dict applies to each value it loads, for programs checking a
 * state dict of their own: the index of the first value of t that an entry named name cannot
 * hold, or -1; *need says what it must be ("a finite value", or for BatchNorm's buffers by their
 * names "a finite variance >= 0" and "a whole number >= 0"). */
int64_t tg_module_bad_value(const char *name, const tg_tensor *t, const char **need);

/* ---- layers ------------------------------------------------------------------------------
 * Each constructor returns a new module, or NULL with the error set. Layers with weights draw
 * their initial values from the caller's rng, in the distribution PyTorch's reset_parameters
 * gives (stated per layer). */

/* Linear (y = x w^T + b; x [N, in], w [out, in], b [out]). PyTorch's default init:
 * kaiming_uniform(a = sqrt(5)) gives w ~ U(-1/sqrt(in), 1/sqrt(in)); b ~ the same bound. */
tg_module *tg_nn_linear(int64_t in, int64_t out, bool bias, tg_rng *rng);
/* Conv2d (x [N, in_ch, H, W], w [out_ch, in_ch, k, k], b [out_ch]). PyTorch's init:
 * fan_in = in_ch * k * k; w and b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)). */
tg_module *tg_nn_conv2d(int64_t in_ch, int64_t out_ch, int kernel, int stride, int padding,
                        int dilation, bool bias, tg_rng *rng);
/* ConvTranspose2d (w [in_ch, out_ch, k, k], b [out_ch]). PyTorch's init takes fan_in from
 * weight dimension 1: fan_in = out_ch * k * k; w and b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)). */
tg_module *tg_nn_conv_transpose2d(int64_t in_ch, int64_t out_ch, int kernel, int stride,
                                  int padding, int output_padding, bool bias, tg_rng *rng);
/* BatchNorm1d over x [N, C]: weight 1, bias 0, buffers running_mean 0, running_var 1 and
 * num_batches_tracked 0 (0-d, counts training forwards); PyTorch's momentum 0.1, eps 1e-5. */
tg_module *tg_nn_batch_norm1d(int64_t channels);
/* BatchNorm2d over x [N, C, H, W], with the same parameters and defaults as batch_norm1d. */
tg_module *tg_nn_batch_norm2d(int64_t channels);
/* MaxPool2d; stride 0 means stride = kernel (PyTorch's default). */
tg_module *tg_nn_max_pool2d(int kernel, int stride, int padding);
/* AvgPool2d; stride 0 means stride = kernel (PyTorch's default); count_include_pad as in
 * tg_avg_pool2d (PyTorch's default true). */
tg_module *tg_nn_avg_pool2d(int kernel, int stride, int padding, bool count_include_pad);
/* Upsample by an integer scale factor with the given mode. */
tg_module *tg_nn_upsample(int scale, tg_upsample_mode mode);
/* Dropout with probability p in [0, 1) while training, identity in eval. Keeps the borrowed
 * rng pointer: rng must outlive the module. */
tg_module *tg_nn_dropout(float p, tg_rng *rng);
/* Flatten from axis 1 to the last (PyTorch's nn.Flatten defaults): [N, ...] -> [N, rest]. */
tg_module *tg_nn_flatten(void);
/* ReLU. */
tg_module *tg_nn_relu(void);
/* LeakyReLU with the given negative slope (PyTorch's default is 0.01). */
tg_module *tg_nn_leaky_relu(float slope);
/* Tanh. */
tg_module *tg_nn_tanh(void);
/* Sigmoid. */
tg_module *tg_nn_sigmoid(void);
/* Reshape to a fixed shape, one size may be -1: tg_nn_reshape(TG_DIMS(-1, 128, 7, 7)). */
tg_module *tg_nn_reshape(int ndim, const int64_t *shape);
/* GELU (tanh_approx: the tanh form), SiLU. */
tg_module *tg_nn_gelu(bool tanh_approx);
tg_module *tg_nn_silu(void);
/* LayerNorm over the last ndim axes, of sizes shape (PyTorch's normalized_shape): weight 1 and
 * bias 0 of that shape when elementwise_affine (PyTorch's default eps 1e-5). */
tg_module *tg_nn_layer_norm(int ndim, const int64_t *shape, float eps, bool elementwise_affine);
/* Embedding of num ids into dim-vectors: weight [num, dim] ~ N(0, 1) (PyTorch's init), the row
 * padding_idx (or -1 for none) zero and never trained. Run it with tg_nn_embed. */
tg_module *tg_nn_embedding(int64_t num, int64_t dim, int64_t padding_idx, tg_rng *rng);
/* An Embedding module's forward on idx: [idx..., dim]. */
tg_tensor *tg_nn_embed(tg_module *embedding, const tg_index *idx);
/* GRUCell (PyTorch's gates and layout: weight_ih [3h, in], weight_hh [3h, h], biases [3h], all
 * ~ U(-1/sqrt(h), 1/sqrt(h))): tg_module_forward2(cell, x [N, in], h [N, h]) -> h' [N, h]; h
 * TG_NONE is the zero state (PyTorch's hx=None). */
tg_module *tg_nn_gru_cell(int64_t in, int64_t hidden, bool bias, tg_rng *rng);
/* MultiheadAttention (batch_first, PyTorch's parameters: in_proj_weight [3e, e] Xavier-uniform,
 * in_proj_bias [3e] 0, out_proj Linear(e, e) with bias 0): tg_module_forward_multi on (q, k, v)
 * or (q, k, v, mask) with q [N, L, e], k and v [N, S, e] and an optional additive mask
 * broadcasting to [N, heads, L, S] (0 to keep, -inf to mask; TG_NONE for none) -> one output
 * [N, L, e]; with n_out 2, out[1] is also the attention weights [N, heads, L, S] (PyTorch's
 * need_weights=True, average_attn_weights=False). tg_module_forward(mha, x) is self-attention
 * (q = k = v = x). Dropout none. */
tg_module *tg_nn_multihead_attention(int64_t embed_dim, int64_t heads, bool bias, tg_rng *rng);
/* TransformerEncoderLayer (batch_first, norm_first false as PyTorch's default, GELU or ReLU
 * activation, no dropout): self-attention, add & LayerNorm, Linear-act-Linear, add & LayerNorm;
 * tg_module_forward on x [N, L, d_model], or tg_module_forward2(layer, x, mask) with an additive
 * mask as MultiheadAttention's (PyTorch's src_mask). Children self_attn, linear1, linear2, norm1,
 * norm2 (LayerNorm eps 1e-5), as PyTorch names them. */
tg_module *tg_nn_transformer_encoder_layer(int64_t d_model, int64_t heads, int64_t dim_ff,
                                           bool gelu, tg_rng *rng);

/* ---- initialisation (init.c) ---------------------------------------------------------------
 * torch.nn.init's initialisers: each fills a tensor in place (bumping its version) and returns
 * a status. Fans follow PyTorch's convention on our (PyTorch) weight layouts: fan_in = dim 1 x
 * receptive field, fan_out = dim 0 x receptive field — [out, in] for Linear, [out, in, k, k]
 * for Conv2d, [in, out, k, k] for ConvTranspose2d (so a transposed convolution's fan_in counts
 * its OUTPUT channels, as in PyTorch and in Paddle 1.8 alike). To re-initialise a model by layer
 * type, walk it with tg_module_apply (PyTorch's model.apply(fn)):
 *
 *     static tg_status dcgan_init(tg_module *m, void *rng) {
 *         const char *t = tg_module_type(m);
 *         if (!strcmp(t, "Conv2d") || !strcmp(t, "ConvTranspose2d"))
 *             return tg_init_normal_(tg_module_param(m, "weight"), rng, 0.0f, 0.02f);
 *         return TG_OK;
 *     }
 *     tg_module_apply(G, dcgan_init, &rng); */

typedef enum { TG_FAN_IN, TG_FAN_OUT } tg_fan_mode;
/* The nonlinearity whose gain (torch.nn.init.calculate_gain) an initialiser should keep. */
typedef enum { TG_NL_LINEAR, TG_NL_RELU, TG_NL_LEAKY_RELU, TG_NL_TANH, TG_NL_SELU } tg_nonlinearity;

/* The recommended gain: 1 (linear, conv, sigmoid), sqrt(2) (ReLU), sqrt(2 / (1 + slope^2))
 * (leaky ReLU, param = slope), 5/3 (tanh), 3/4 (SELU). */
float tg_init_gain(tg_nonlinearity nl, float param);
/* The fans of w (at least 2-D) in the convention above; either pointer may be NULL. */
tg_status tg_init_fans(const tg_tensor *w, int64_t *fan_in, int64_t *fan_out);
/* U(lo, hi), lo <= hi. */
tg_status tg_init_uniform_(tg_tensor *t, tg_rng *rng, float lo, float hi);
/* N(mean, std^2), std >= 0. */
tg_status tg_init_normal_(tg_tensor *t, tg_rng *rng, float mean, float std);
/* Every element = value. */
tg_status tg_init_constant_(tg_tensor *t, float value);
/* Xavier/Glorot: std = gain * sqrt(2 / (fan_in + fan_out)); uniform bound sqrt(3) * std. */
tg_status tg_init_xavier_uniform_(tg_tensor *t, tg_rng *rng, float gain);
tg_status tg_init_xavier_normal_(tg_tensor *t, tg_rng *rng, float gain);
/* Kaiming/He: std = gain / sqrt(fan), fan = fan_in or fan_out by mode; uniform bound
 * sqrt(3) * std. PyTorch's kaiming_*_(w, a, mode, nonlinearity) is gain =
 * tg_init_gain(nonlinearity, a). */
tg_status tg_init_kaiming_uniform_(tg_tensor *t, tg_rng *rng, float gain, tg_fan_mode mode);
tg_status tg_init_kaiming_normal_(tg_tensor *t, tg_rng *rng, float gain, tg_fan_mode mode);

/* What tg_module_apply calls on each module; a status other than TG_OK stops the walk. */
typedef tg_status (*tg_module_fn)(tg_module *m, void *ctx);
/* Calls fn on every module of the tree, children before their parent (PyTorch's order), and
 * returns the first failure. */
tg_status tg_module_apply(tg_module *m, tg_module_fn fn, void *ctx);
/* Re-initialises m's layers as PaddlePaddle 1.8 dygraph's defaults would (Linear: Xavier-
 * uniform; Conv2d: Normal(0, sqrt(2 / (k*k*in_ch))), i.e. Kaiming-normal, ReLU gain, fan_in;
 * ConvTranspose2d: Xavier-uniform; BatchNorm: weight 1; every bias 0), drawing from rng. */
tg_status tg_nn_init_paddle(tg_module *m, tg_rng *rng);

/* ---- training helpers ----------------------------------------------------------------- */

/* Optimizers over every parameter of m, in tg_module_parameters' order (PyTorch's
 * torch.optim.Adam(model.parameters(), ...)); arguments as in optim.h. */
tg_optim *tg_optim_sgd_module(const tg_module *m, float lr, float momentum, float dampening,
                              float weight_decay, bool nesterov);
tg_optim *tg_optim_adam_module(const tg_module *m, float lr, float beta1, float beta2, float eps,
                               float weight_decay);
tg_optim *tg_optim_adamw_module(const tg_module *m, float lr, float beta1, float beta2, float eps,
                                float weight_decay);
/* tg_clip_grad_norm_ and tg_clip_grad_value_ (optim.h) over every parameter of m. */
tg_status tg_module_clip_grad_norm_(tg_module *m, float max_norm, float norm_type,
                                    float *total_norm);
tg_status tg_module_clip_grad_value_(tg_module *m, float clip_value);

/* ---- Sequential --------------------------------------------------------------------------
 * Runs its children in order, each on the previous one's output. */

/* Appends module to seq under name (NULL: its index, "0", "1", ... as PyTorch) and returns
 * seq. Takes ownership of both: when either is NULL or the add fails, both are freed and the
 * result is NULL with the first error kept, so seq = tg_nn_sequential_add(seq, ...) chains. */
tg_module *tg_nn_sequential_add(tg_module *seq, const char *name, tg_module *module);
/* A Sequential of the n >= 0 modules that follow, named "0" .. "n-1" (n = 0: an empty one to
 * fill with tg_nn_sequential_add); takes ownership of all of them (all freed when one is NULL,
 * which keeps its error). */
tg_module *tg_nn_sequential(int64_t n, ...);
/* tg_nn_sequential with the count filled in: TG_NN_SEQUENTIAL(tg_nn_linear(...), ...). */
#define TG_NN_SEQUENTIAL(...)                                                                      \
    tg_nn_sequential((int64_t)(sizeof((tg_module *[]){__VA_ARGS__}) / sizeof(tg_module *)),        \
                     __VA_ARGS__)

#ifdef __cplusplus
}
#endif
#endif
