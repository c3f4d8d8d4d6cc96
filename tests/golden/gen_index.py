#!/usr/bin/python3
"""Writes index_golden.h: PyTorch's values for tapegrad's indexing ops, so test_index.c can
compare against them without Python.

Run with Debian's interpreter, which has torch:  /usr/bin/python3 tests/golden/gen_index.py
then format it as the sources:                  clang-format -i tests/golden/index_golden.h

embedding (F.embedding, with and without padding_idx, rows picked several times), gather
(torch.gather) and index_select (torch.index_select): the output and the gradient of
sum(y * dy) with respect to the indexed tensor. argmax / argmin (torch.argmax, torch.argmin)
and max with indices (torch.max(x, dim)) on rows with ties, NaN, +-inf. one_hot (F.one_hot)."""
import torch
import torch.nn.functional as F

from golden import emit, emit_int, emit_shape, out, write_header

torch.manual_seed(20261206)

def grad_of(y, dy, x):
    """The gradient of sum(y * dy) with respect to x."""
    return torch.autograd.grad(y, x, dy)[0]


def embedding_case(name, rows, dim, idx, padding_idx):
    w = torch.randn(rows, dim).requires_grad_()
    idx = torch.tensor(idx, dtype=torch.int64)
    y = F.embedding(idx, w, padding_idx=padding_idx)
    dy = torch.randn(*y.shape)
    emit_shape(name + "_w", w.shape)
    emit_shape(name + "_idx", idx.shape)
    out.append("#define %s_PADDING_IDX %d" % (name.upper(), -1 if padding_idx is None
                                               else padding_idx))
    emit(name + "_weight", w)
    emit_int(name + "_index", idx, per_line=12)
    emit(name + "_dy", dy)
    emit(name + "_y", y)
    emit(name + "_dweight", grad_of(y, dy, w))


# Padding row 2 picked three times (it gets no gradient); rows 1 and 5 repeat; row 6 unused.
embedding_case("emb_pad", 7, 5, [[2, 1, 5, 2], [0, 1, 1, 3], [5, 2, 4, 0]], 2)
# No padding: the same rows, so row 2's gradient is the sum of its three picks.
embedding_case("emb", 7, 5, [[2, 1, 5, 2], [0, 1, 1, 3], [5, 2, 4, 0]], None)
# Wide rows (two backward work items of 64 floats) and a 1-D index.
embedding_case("emb_wide", 4, 70, [3, 0, 3, 3, 1], None)


def gather_case(name, xshape, axis, ishape):
    x = torch.randn(*xshape).requires_grad_()
    idx = torch.randint(0, xshape[axis], ishape)
    y = torch.gather(x, axis, idx)
    dy = torch.randn(*y.shape)
    emit_shape(name + "_x", x.shape)
    emit_shape(name + "_idx", idx.shape)
    out.append("#define %s_AXIS %d" % (name.upper(), axis))
    emit(name + "_x", x)
    emit_int(name + "_index", idx, per_line=12)
    emit(name + "_dy", dy)
    emit(name + "_y", y)
    emit(name + "_dx", grad_of(y, dy, x))


gather_case("gather1", (3, 5, 4), 1, (3, 7, 2))  # longer than x along the axis: repeats
gather_case("gather0", (4, 3), 0, (6, 2))
gather_case("gather2", (2, 3, 6), 2, (2, 2, 3))


def index_select_case(name, xshape, axis, idx):
    x = torch.randn(*xshape).requires_grad_()
    idx = torch.tensor(idx, dtype=torch.int64)
    y = torch.index_select(x, axis, idx)
    dy = torch.randn(*y.shape)
    emit_shape(name + "_x", x.shape)
    out.append("#define %s_AXIS %d" % (name.upper(), axis))
    out.append("#define %s_M %d" % (name.upper(), idx.numel()))
    emit(name + "_x", x)
    emit_int(name + "_index", idx, per_line=12)
    emit(name + "_dy", dy)
    emit(name + "_y", y)
    emit(name + "_dx", grad_of(y, dy, x))


index_select_case("isel1", (4, 3, 5), 1, [2, 0, 2, 2, 1])
index_select_case("isel0", (4, 3, 5), 0, [3, 3, 0])
index_select_case("isel2", (4, 3, 5), 2, [4, 1, 1, 0, 4, 4, 2])

# argmax / argmin: ties (the first wins), NaN (PyTorch's max and min both propagate it: its
# position is the answer, the first NaN when there are several), infinities, all equal.
nan, inf = float("nan"), float("inf")
arg_x = torch.tensor([
    [1.0, 3.0, 3.0, -2.0, -2.0, 0.5],
    [0.0, nan, 5.0, nan, -9.0, 1.0],
    [-inf, -inf, -inf, -inf, -inf, -inf],
    [2.0, 2.0, 2.0, 2.0, 2.0, 2.0],
    [-1.0, inf, -inf, inf, 7.0, -inf],
])
emit_shape("arg", arg_x.shape)
emit("arg_x", arg_x)
for axis in (0, 1):
    emit_int("argmax%d" % axis, torch.argmax(arg_x, axis), per_line=12)
    emit_int("argmin%d" % axis, torch.argmin(arg_x, axis), per_line=12)
    values, indices = torch.max(arg_x, axis)
    emit("max%d_values" % axis, values)
    emit_int("max%d_indices" % axis, indices, per_line=12)

oh_idx = torch.tensor([[3, 0, 4], [1, 1, 2]])
emit_int("one_hot_index", oh_idx, per_line=12)
emit("one_hot_y", F.one_hot(oh_idx, 5).float())

write_header("index", "\n".join(out), includes=("math.h", "stdint.h"))
