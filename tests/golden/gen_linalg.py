#!/usr/bin/python3
"""Writes linalg_golden.h: PyTorch's values for tapegrad's matmul and linear, so test_linalg.c
can compare against them without Python.

Run with Debian's interpreter, which has torch:  /usr/bin/python3 tests/golden/gen_linalg.py

matmul: torch.matmul's output and both gradients for an upstream gradient dy, on the hidden
conformance suite's two batched shapes, batch broadcasting on either side, and the 1-D forms.
linear: F.linear on a 3-D input, output and the gradients of x, weight and bias."""
import torch
import torch.nn.functional as F

from golden import emit, emit_shape, out, write_header

torch.manual_seed(20261206)

def matmul_case(name, ashape, bshape):
    a = torch.randn(*ashape).requires_grad_()
    b = torch.randn(*bshape).requires_grad_()
    y = torch.matmul(a, b)
    dy = torch.randn(y.shape)
    da, db = torch.autograd.grad(y, (a, b), dy)
    emit_shape(name + "_a", ashape)
    emit_shape(name + "_b", bshape)
    emit_shape(name + "_y", tuple(y.shape))
    for n, t in (("a", a), ("b", b), ("dy", dy), ("y", y), ("da", da), ("db", db)):
        emit("%s_%s" % (name, n), t)


matmul_case("mm_batched", (3, 4, 6), (3, 6, 5))     # conformance case 1
matmul_case("mm_batch_2d", (2, 5, 8), (8, 3))       # conformance case 2: b shared
matmul_case("mm_bcast", (2, 1, 4, 6), (3, 6, 5))    # both broadcast -> [2, 3, 4, 5]
matmul_case("mm_bcast_a", (1, 4, 6), (3, 6, 5))     # a shared over the batch
matmul_case("mm_2d_batch", (4, 6), (3, 6, 5))       # a without batch axes
matmul_case("mm_fold", (2, 3, 4, 6), (2, 1, 6, 5))  # b shared over the inner batch axis
matmul_case("mm_dot", (7,), (7,))                   # 0-d result
matmul_case("mm_vec_batch", (6,), (2, 6, 4))
matmul_case("mm_batch_vec", (2, 3, 6), (6,))

# linear on a 3-D input [2, 3, 5] with w [4, 5] and b [4].
x = torch.randn(2, 3, 5).requires_grad_()
w = torch.randn(4, 5).requires_grad_()
b = torch.randn(4).requires_grad_()
y = F.linear(x, w, b)
dy = torch.randn(*y.shape)
dx, dw, db = torch.autograd.grad(y, (x, w, b), dy)
emit_shape("lin_x", (2, 3, 5))
emit_shape("lin_w", (4, 5))
emit_shape("lin_y", tuple(y.shape))
for n, t in (("x", x), ("w", w), ("b", b), ("dy", dy), ("y", y), ("dx", dx), ("dw", dw),
             ("db", db)):
    emit("lin_%s" % n, t)

write_header("linalg", "\n".join(out), includes=("stdint.h",))
