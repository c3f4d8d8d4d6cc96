#!/usr/bin/python3
"""Writes loss_golden.h: PyTorch's values for tapegrad's three losses with reduction='sum' and
reduction='none', so test_loss.c can compare against them without Python (the 'mean' goldens
are in norm_golden.h, from gen_norm.py).

Run with Debian's interpreter, which has torch:  /usr/bin/python3 tests/golden/gen_loss.py

For each loss and each reduction: the loss and the gradients of its inputs, for the upstream
gradient 1 (sum) or a random one, dy, of the loss's shape (none)."""
import torch
import torch.nn.functional as F

from golden import emit, emit_int, emit_shape, out, write_header

torch.manual_seed(20261206)

def run(fn, xs, reduction):
    """The loss, its upstream gradient and the inputs' gradients."""
    xs = [x.detach().clone().requires_grad_() for x in xs]
    loss = fn(*xs, reduction)
    dy = torch.ones_like(loss) if reduction == "sum" else torch.randn_like(loss)
    gs = torch.autograd.grad(loss, xs, dy)
    return loss, dy, gs


# bce_with_logits: logits [5, 4] with two saturated ones, targets in [0, 1].
z = torch.randn(5, 4) * 3
z[0, 0], z[1, 2] = 40.0, -40.0
t = torch.rand(5, 4)
emit_shape("lbce", (5, 4))
emit("lbce_z", z)
emit("lbce_t", t)
for red in ("sum", "none"):
    loss, dy, (dz, dt) = run(lambda a, b, r: F.binary_cross_entropy_with_logits(a, b, reduction=r),
                             [z, t], red)
    emit("lbce_%s_loss" % red, loss)
    emit("lbce_%s_dy" % red, dy)
    emit("lbce_%s_dz" % red, dz)
    emit("lbce_%s_dt" % red, dt)

# cross_entropy: logits [6, 5], int64 labels.
logits = torch.randn(6, 5) * 2
labels = torch.randint(0, 5, (6,))
emit_shape("lce", (6, 5))
emit("lce_logits", logits)
emit_int("lce_labels", labels)
for red in ("sum", "none"):
    loss, dy, (dz,) = run(lambda a, r: F.cross_entropy(a, labels, reduction=r), [logits], red)
    emit("lce_%s_loss" % red, loss)
    emit("lce_%s_dy" % red, dy)
    emit("lce_%s_dz" % red, dz)

# mse: pred and target [3, 2, 4], both differentiated.
p = torch.randn(3, 2, 4)
q = torch.randn(3, 2, 4)
emit_shape("lmse", (3, 2, 4))
emit("lmse_pred", p)
emit("lmse_target", q)
for red in ("sum", "none"):
    loss, dy, (dp, dq) = run(lambda a, b, r: F.mse_loss(a, b, reduction=r), [p, q], red)
    emit("lmse_%s_loss" % red, loss)
    emit("lmse_%s_dy" % red, dy)
    emit("lmse_%s_dp" % red, dp)
    emit("lmse_%s_dt" % red, dq)

write_header("loss", "\n".join(out), includes=("stdint.h",))
