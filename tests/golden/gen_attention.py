#!/usr/bin/python3
"""Writes attention_golden.h: PyTorch's values for tapegrad's MultiheadAttention and
TransformerEncoderLayer modules (nn/attention.c), so test_attention.c can compare against them
without Python.

Run with Debian's interpreter, which has torch:  /usr/bin/python3 tests/golden/gen_attention.py

Each case builds the PyTorch module (batch_first=True, dropout 0, training mode), runs it on
random inputs, and back-propagates a random upstream gradient dy. Written: every parameter
under its state_dict name with its gradient, the inputs and their gradients, the output, and
for MultiheadAttention the per-head attention weights [N, heads, L, S]. Masks are additive
(0 or -inf); tapegrad takes them broadcasting to [N, heads, L, S], PyTorch as [L, S] or
[N * heads, L, S], so each case stores the mask in tapegrad's shape."""
import torch
import torch.nn as nn

from golden import cfloat, emit, out, write_header

torch.manual_seed(20261206)


def c_shape(shape):
    return "%d, {%s}" % (len(shape), ", ".join(str(s) for s in shape))


def emit_case(case, kind, module, inputs, mask, mask_shape, heads, dims):
    """Runs module on inputs (a dict name -> tensor), emits everything and the case table."""
    for name, t in inputs.items():
        t.requires_grad_()
        emit("%s_%s" % (case, name), t)
    if kind == "mha":
        q, k, v = inputs["q"], inputs.get("k", inputs["q"]), inputs.get("v", inputs["q"])
        y, w = module(q, k, v, attn_mask=mask, need_weights=True, average_attn_weights=False)
    else:
        y, w = module(inputs["x"], src_mask=mask), None
    dy = torch.randn_like(y)
    y.backward(dy)
    emit("%s_dy" % case, dy)
    emit("%s_y" % case, y)
    if w is not None:
        emit("%s_attn" % case, w)
    for name, t in inputs.items():
        emit("%s_d%s" % (case, name), t.grad)
    has_mask = mask is not None
    if has_mask:
        emit("%s_mask" % case, mask.reshape(mask_shape))
    rows = []
    for name, p in module.named_parameters():
        c = "%s_%s" % (case, name.replace(".", "_"))
        emit(c, p)
        emit(c + "_grad", p.grad)
        rows.append('    {"%s", %s, %s, %s_grad},' % (name, c_shape(p.shape), c, c))
    out.append("static const golden_param %s_params[] = {\n%s\n};" % (case, "\n".join(rows)))
    names = ("q", "k", "v") if kind == "mha" else ("x",)
    arrays = ["%s_%s" % (case, n) if n in inputs else "NULL" for n in names]
    grads = ["%s_d%s" % (case, n) if n in inputs else "NULL" for n in names]
    arrays += ["NULL"] * (3 - len(arrays))
    grads += ["NULL"] * (3 - len(grads))
    first, last = inputs[list(inputs)[0]], inputs[list(inputs)[-1]]
    fields = ['"%s"' % case, str(len(inputs)), c_shape(first.shape), c_shape(last.shape),
              str(heads), dims, ", ".join(arrays), ", ".join(grads),
              c_shape(mask_shape) if has_mask else "0, {0}",
              "%s_mask" % case if has_mask else "NULL", "%s_dy" % case, "%s_y" % case,
              "%s_attn" % case if w is not None else "NULL", "true" if kind == "mha" else "false",
              "%s_params" % case, str(len(rows))]
    out.append("static const golden_case %s_case = {\n    %s,\n};" % (case, ",\n    ".join(fields)))


def causal(L):
    return torch.triu(torch.full((L, L), float("-inf")), diagonal=1)


# MultiheadAttention, self-attention (one input x = q = k = v), no mask.
N, L, E, H = 2, 5, 8, 2
mha = nn.MultiheadAttention(E, H, batch_first=True)
emit_case("mha_self", "mha", mha, {"q": torch.randn(N, L, E)}, None, None, H, "true, 0")

# The same module with a causal mask [L, L] (broadcast over batch and heads).
mha = nn.MultiheadAttention(E, H, batch_first=True)
emit_case("mha_causal", "mha", mha, {"q": torch.randn(N, L, E)}, causal(L), (L, L), H,
          "true, 0")

# Cross-attention, no bias, S != L, a mask per batch entry and head [N, heads, L, S] (PyTorch:
# [N * heads, L, S]); every row keeps at least its first key.
S = 7
mha = nn.MultiheadAttention(E, H, bias=False, batch_first=True)
m = torch.where(torch.rand(N * H, L, S) < 0.3, float("-inf"), 0.0)
m[:, :, 0] = 0.0
emit_case("mha_cross", "mha", mha,
          {"q": torch.randn(N, L, E), "k": torch.randn(N, S, E), "v": torch.randn(N, S, E)},
          m, (N, H, L, S), H, "false, 0")

# TransformerEncoderLayer, GELU, no mask.
D, FF = 8, 16
enc = nn.TransformerEncoderLayer(D, H, FF, dropout=0.0, activation="gelu", batch_first=True)
emit_case("enc_gelu", "enc", enc, {"x": torch.randn(N, 6, D)}, None, None, H, "true, %d" % FF)

# TransformerEncoderLayer, ReLU, causal src_mask.
enc = nn.TransformerEncoderLayer(D, H, FF, dropout=0.0, activation="relu", batch_first=True)
emit_case("enc_relu_causal", "enc", enc, {"x": torch.randn(N, 6, D)}, causal(6), (6, 6), H,
          "false, %d" % FF)

TYPES = """/* A parameter under its PyTorch state_dict name, its value and its gradient. */
typedef struct {
    const char *name;
    int ndim;
    int64_t shape[4];
    const float *value, *grad;
} golden_param;

/* One case: n_in inputs (1: x, or q = k = v; 3: q, k, v) of shapes q_shape and kv_shape; an
 * encoder layer when !mha (gelu and dim_ff its settings; for attention, gelu means bias). */
typedef struct {
    const char *name;
    int n_in;
    int q_ndim;
    int64_t q_shape[4];
    int kv_ndim;
    int64_t kv_shape[4];
    int64_t heads;
    bool gelu_or_bias;
    int64_t dim_ff;
    const float *q, *k, *v;
    const float *dq, *dk, *dv;
    int mask_ndim;
    int64_t mask_shape[4];
    const float *mask;
    const float *dy, *y, *attn;
    bool mha;
    const golden_param *params;
    int n_params;
} golden_case;

"""
write_header("attention", TYPES + "\n\n".join(out),
             includes=("math.h", "stdbool.h", "stdint.h"))
