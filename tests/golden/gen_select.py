#!/usr/bin/python3
"""Writes select_golden.h: PyTorch's values for tapegrad's comparisons, where and masked_fill,
with broadcasting, so test_select.c can compare against them without Python.

Run with Debian's interpreter, which has torch:  /usr/bin/python3 tests/golden/gen_select.py

Comparisons: the six masks (as floats) of a against b, with ties and NaN. where and
masked_fill: the output and the input gradients of sum(y * dy) for a random dy. tapegrad's cond
and mask are float tensors read as != 0, so torch gets (cond != 0)."""
import torch

from golden import emit, emit_shape, out, write_header

torch.manual_seed(20261207)

# ---- comparisons: a [2, 3] against b [3], with ties and NaN on both sides
a = torch.tensor([[1.0, 2.0, float("nan")], [3.0, -0.0, 5.0]])
b = torch.tensor([1.0, 0.0, 4.0])
b[2] = 5.0
emit_shape("cmp_a", a.shape)
emit_shape("cmp_b", b.shape)
emit("cmp_a", a)
emit("cmp_b", b)
for name, fn in (("eq", torch.eq), ("ne", torch.ne), ("lt", torch.lt), ("le", torch.le),
                 ("gt", torch.gt), ("ge", torch.ge)):
    emit("cmp_%s" % name, fn(a, b).float())
# a NaN threshold: everything false but ne
emit("cmp_nan_b", torch.tensor([float("nan")]))


def where_case(name, cshape, ashape, bshape, cond_values=None):
    cond = (torch.rand(cshape) < 0.5).float() if cond_values is None else cond_values
    x = torch.randn(ashape).requires_grad_()
    y_ = torch.randn(bshape).requires_grad_()
    y = torch.where(cond != 0, x, y_)
    dy = torch.randn(y.shape)
    da, db = torch.autograd.grad(y, (x, y_), dy)
    for part, t in (("cond", cond), ("a", x), ("b", y_), ("y", y), ("dy", dy)):
        emit_shape("%s_%s" % (name, part), t.shape)
        emit("%s_%s" % (name, part), t)
    emit("%s_da" % name, da)
    emit("%s_db" % name, db)


# cond [3, 1, 4], a [2, 4], b 0-d: a three-way broadcast, b summed over everything.
where_case("wb", (3, 1, 4), (2, 4), ())
# cond with -0, NaN and a fraction, all read as != 0 (NaN and 0.5 true, -0 false); a [5, 1].
where_case("wn", None, (5, 1), (5, 3), torch.tensor([[0.5, -0.0, float("nan")]]))


def masked_fill_case(name, xshape, mshape, value):
    x = torch.randn(xshape).requires_grad_()
    mask = (torch.rand(mshape) < 0.4).float()
    y = x.masked_fill(mask != 0, value)
    dy = torch.randn(y.shape)
    (dx,) = torch.autograd.grad(y, (x,), dy)
    for part, t in (("x", x), ("mask", mask), ("y", y), ("dy", dy)):
        emit_shape("%s_%s" % (name, part), t.shape)
        emit("%s_%s" % (name, part), t)
    emit("%s_dx" % name, dx)


# An attention mask: x [2, 3, 4], mask [3, 1] broadcast, -inf.
masked_fill_case("mf", (2, 3, 4), (3, 1), float("-inf"))
# Same shapes, a finite value.
masked_fill_case("ms", (3, 5), (3, 5), 0.5)

write_header("select", "\n".join(out), includes=("math.h", "stdint.h"))
