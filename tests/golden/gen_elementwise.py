#!/usr/bin/python3
"""Writes elementwise_golden.h: PyTorch's values for tapegrad's GELU (erf and tanh forms), SiLU
and softplus, so test_elementwise.c can compare against them without Python.

Run with Debian's interpreter, which has torch:  /usr/bin/python3 tests/golden/gen_elementwise.py

Each activation is evaluated at the same points: fixed ones (0, tiny, around the kinks and
thresholds, large magnitudes up to 100, where naive formulas overflow or cancel) and random
ones; the output and its derivative (the gradient of sum(y)) at every point."""
import torch
import torch.nn.functional as F

from golden import emit, out, write_header

torch.manual_seed(20261206)

fixed = [0.0, 1e-4, -1e-4, 0.5, -0.5, 1.0, -1.0, 2.0, -2.0, 3.0, -3.0, 4.5, -4.5, 6.0, -6.0,
         8.0, -8.0, 9.5, -9.5, 10.5, -10.5, 15.0, -15.0, 19.0, -19.0, 21.0, -21.0, 30.0, -30.0,
         50.0, -50.0, 100.0, -100.0]
points = torch.cat([torch.tensor(fixed), torch.randn(31) * 3])
out.append("#define EW_GOLDEN_N %d" % points.numel())
emit("ew_x", points)

cases = [
    ("gelu", lambda x: F.gelu(x)),
    ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh")),
    ("silu", F.silu),
    ("softplus", lambda x: F.softplus(x)),  # beta 1, threshold 20
    ("softplus_b2_t5", lambda x: F.softplus(x, beta=2.0, threshold=5.0)),
    ("softplus_b0.5_t20", lambda x: F.softplus(x, beta=0.5, threshold=20.0)),
]
for name, fn in cases:
    x = points.clone().requires_grad_()
    y = fn(x)
    (dx,) = torch.autograd.grad(y.sum(), x)
    cname = name.replace(".", "_")
    emit("ew_%s_y" % cname, y)
    emit("ew_%s_dx" % cname, dx)

write_header("elementwise", "\n".join(out))
