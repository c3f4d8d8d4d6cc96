#!/usr/bin/python3
"""Writes recurrent_golden.h: PyTorch's values for tapegrad's GRUCell and Embedding modules, so
test_recurrent.c can compare against them without Python.

Run with Debian's interpreter, which has torch:  /usr/bin/python3 tests/golden/gen_recurrent.py

GRUCell (with and without biases): the parameters as PyTorch initialised them, x, h and an
upstream gradient dy; the output h' and the gradients of sum(h' * dy) for x, h and every
parameter. Two steps are chained in gru2 (h2 = cell(x2, cell(x1, h0))), as an unrolled sequence
uses the cell. Embedding with padding_idx: the weight (padding row zero, as nn.Embedding makes
it), ids with repeats and the padding id, dy; the output and d weight (the padding row's stays
zero and repeated ids add)."""
import torch
import torch.nn as nn

from golden import emit, emit_int, out, write_header

torch.manual_seed(20251206)
def define(name, value):
    out.append("#define %s %d" % (name, value))


def gru_case(name, n, inp, hid, bias, steps):
    cell = nn.GRUCell(inp, hid, bias=bias)
    xs = [torch.randn(n, inp, requires_grad=True) for _ in range(steps)]
    h0 = torch.randn(n, hid, requires_grad=True)
    dy = torch.randn(n, hid)
    h = h0
    for x in xs:
        h = cell(x, h)
    params = [p for _, p in cell.named_parameters()]
    grads = torch.autograd.grad(h, xs + [h0] + params, dy)
    up = name.upper()
    define(up + "_N", n)
    define(up + "_IN", inp)
    define(up + "_HIDDEN", hid)
    define(up + "_STEPS", steps)
    for k, x in enumerate(xs):
        emit("%s_x%d" % (name, k), x)
    emit(name + "_h0", h0)
    emit(name + "_dy", dy)
    for pname, p in cell.named_parameters():
        emit("%s_%s" % (name, pname), p)
    emit(name + "_y", h)
    for k in range(steps):
        emit("%s_dx%d" % (name, k), grads[k])
    emit(name + "_dh0", grads[steps])
    for (pname, _), g in zip(cell.named_parameters(), grads[steps + 1:]):
        emit("%s_d%s" % (name, pname), g)


gru_case("gru", 3, 5, 4, True, 1)
gru_case("gru_nobias", 2, 3, 6, False, 1)
gru_case("gru2", 4, 3, 5, True, 2)

# Embedding: 7 ids of dimension 3, padding_idx 2; ids [2, 4] with a repeat and the padding id.
emb = nn.Embedding(7, 3, padding_idx=2)
ids = torch.tensor([[1, 2, 5, 1], [6, 0, 2, 1]])
y = emb(ids)
dy = torch.randn(*y.shape)
(dw,) = torch.autograd.grad(y, [emb.weight], dy)
define("EMB_NUM", 7)
define("EMB_DIM", 3)
define("EMB_PADDING_IDX", 2)
emit_int("emb_ids", ids)
emit("emb_weight", emb.weight)
emit("emb_dy", dy)
emit("emb_y", y)
emit("emb_dweight", dw)

write_header("recurrent", "\n".join(out), includes=("stdint.h",))
