#!/usr/bin/python3
"""Writes norm_golden.h: PyTorch's values for tapegrad's batch_norm, softmax, log_softmax, the
three losses, layer_norm, var and std, so test_norm.c, test_loss.c and test_reduce_var.c can
compare against them without Python.

Run with Debian's interpreter, which has torch:  /usr/bin/python3 tests/golden/gen_norm.py

batch_norm: for each input, one training step (momentum 0.1, eps 1e-5) from given running
statistics - output, dx, dweight, dbias for the upstream gradient dy, and the running
statistics after the step - and one eval-mode pass with the initial running statistics.
softmax / log_softmax: output and dx for an upstream gradient dy.
Losses: the loss and the gradients of loss.backward() (dL = 1).
layer_norm: output, dx, dweight, dbias for an upstream dy (eps 1e-5), over 1 and 2 axes, and
without affine. var / std: output and dx along each axis of one input, corrections 0, 1, 2."""
import torch
import torch.nn.functional as F

from golden import cfloat, emit, emit_shape, out, write_header

torch.manual_seed(20240612)
MOMENTUM, EPS = 0.1, 1e-5

def grads(y, dy, *xs):
    """Gradients of sum(y * dy) with respect to xs."""
    return torch.autograd.grad(y, xs, dy)


def batch_norm_case(name, shape):
    C = shape[1]
    # Off-centre, non-unit data so that mean and variance matter.
    x = (torch.randn(*shape) * 1.7 + 0.6).requires_grad_()
    w = (torch.rand(C) + 0.5).requires_grad_()
    b = torch.randn(C).requires_grad_()
    rm0 = torch.randn(C) * 0.3
    rv0 = torch.rand(C) + 0.5
    dy = torch.randn(*shape)
    emit_shape(name, shape)
    for n, t in (("x", x), ("w", w), ("b", b), ("rm0", rm0), ("rv0", rv0), ("dy", dy)):
        emit("%s_%s" % (name, n), t)

    rm, rv = rm0.clone(), rv0.clone()
    y = F.batch_norm(x, rm, rv, w, b, training=True, momentum=MOMENTUM, eps=EPS)
    dx, dw, db = grads(y, dy, x, w, b)
    for n, t in (("train_y", y), ("train_dx", dx), ("train_dw", dw), ("train_db", db),
                 ("train_rm", rm), ("train_rv", rv)):
        emit("%s_%s" % (name, n), t)

    y = F.batch_norm(x, rm0.clone(), rv0.clone(), w, b, training=False, momentum=MOMENTUM,
                     eps=EPS)
    dx, dw, db = grads(y, dy, x, w, b)
    for n, t in (("eval_y", y), ("eval_dx", dx), ("eval_dw", dw), ("eval_db", db)):
        emit("%s_%s" % (name, n), t)


batch_norm_case("bn4", (4, 3, 5, 5))
batch_norm_case("bn2", (8, 6))

# softmax and log_softmax of one [3, 4, 5] input with a wide range (scale 4), along axis 1 and
# along the last axis.
sx = (torch.randn(3, 4, 5) * 4).requires_grad_()
sdy = torch.randn(3, 4, 5)
emit_shape("sm", (3, 4, 5))
emit("sm_x", sx)
emit("sm_dy", sdy)
for fn_name, fn in (("softmax", torch.softmax), ("log_softmax", torch.log_softmax)):
    for axis_name, axis in (("axis1", 1), ("axis_last", -1)):
        y = fn(sx, axis)
        (dx,) = grads(y, sdy, sx)
        emit("sm_%s_%s_y" % (fn_name, axis_name), y)
        emit("sm_%s_%s_dx" % (fn_name, axis_name), dx)

# bce_with_logits: logits [6, 5] including large magnitudes, targets in [0, 1].
z = torch.randn(6, 5) * 3
z[0, 0], z[0, 1] = 30.0, -30.0
z = z.requires_grad_()
t = torch.rand(6, 5).requires_grad_()
loss = F.binary_cross_entropy_with_logits(z, t)
dz, dt = torch.autograd.grad(loss, (z, t))
emit_shape("bce", (6, 5))
emit("bce_z", z)
emit("bce_t", t)
emit("bce_loss", loss.reshape(1))
emit("bce_dz", dz)
emit("bce_dt", dt)

# cross_entropy: logits [7, 5], integer labels (stored as floats, as tapegrad takes them).
logits = (torch.randn(7, 5) * 2).requires_grad_()
labels = torch.randint(0, 5, (7,))
loss = F.cross_entropy(logits, labels)
(dlogits,) = torch.autograd.grad(loss, (logits,))
emit_shape("ce", (7, 5))
emit("ce_logits", logits)
emit("ce_labels", labels.float())
emit("ce_loss", loss.reshape(1))
emit("ce_dlogits", dlogits)

# mse: pred and target [4, 6], both differentiated.
p = torch.randn(4, 6).requires_grad_()
q = torch.randn(4, 6).requires_grad_()
loss = F.mse_loss(p, q)
dp, dq = torch.autograd.grad(loss, (p, q))
emit_shape("mse", (4, 6))
emit("mse_pred", p)
emit("mse_target", q)
emit("mse_loss", loss.reshape(1))
emit("mse_dpred", dp)
emit("mse_dtarget", dq)

# ---- layer_norm and var/std. Seeded on their own, so the values above and below do not move
# when a section is added or changed.
torch.manual_seed(20261206)


def layer_norm_case(name, shape, k, affine):
    """F.layer_norm over the last k axes of x: y and the gradients for the upstream dy."""
    ns = shape[len(shape) - k:]
    x = (torch.randn(*shape) * 1.7 + 0.6).requires_grad_()
    dy = torch.randn(*shape)
    emit_shape(name, shape)
    emit(name + "_x", x)
    emit(name + "_dy", dy)
    if affine:
        w = (torch.rand(*ns) + 0.5).requires_grad_()
        b = torch.randn(*ns).requires_grad_()
        emit(name + "_w", w)
        emit(name + "_b", b)
        y = F.layer_norm(x, ns, w, b, eps=EPS)
        dx, dw, db = grads(y, dy, x, w, b)
        emit(name + "_dw", dw)
        emit(name + "_db", db)
    else:
        y = F.layer_norm(x, ns, eps=EPS)
        (dx,) = grads(y, dy, x)
    emit(name + "_y", y)
    emit(name + "_dx", dx)


layer_norm_case("ln1", (4, 5, 8), 1, True)
layer_norm_case("ln2", (3, 4, 6), 2, True)
layer_norm_case("ln0", (6, 7), 1, False)

# var and std of one [4, 6, 5] input along each axis with corrections 0, 1 and 2: the result
# (keepdim=False) and dx for an upstream dy of the result's shape.
vx = (torch.randn(4, 6, 5) * 2 + 3).requires_grad_()
emit_shape("vs", (4, 6, 5))
emit("vs_x", vx)
for axis in (0, 1, 2):
    for corr in (0, 1, 2):
        dy = torch.randn([s for d, s in enumerate(vx.shape) if d != axis])
        emit("vs_dy_a%d_c%d" % (axis, corr), dy)
        for fn_name, fn in (("var", torch.var), ("std", torch.std)):
            y = fn(vx, dim=axis, correction=corr)
            (dx,) = grads(y, dy, vx)
            emit("vs_%s_a%d_c%d_y" % (fn_name, axis, corr), y)
            emit("vs_%s_a%d_c%d_dx" % (fn_name, axis, corr), dx)

write_header("norm", "#define NORM_GOLDEN_MOMENTUM %s\n#define NORM_GOLDEN_EPS %s\n\n%s"
             % (cfloat(MOMENTUM), cfloat(EPS), "\n".join(out)), includes=("stdint.h",))
