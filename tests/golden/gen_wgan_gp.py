#!/usr/bin/python3
"""Writes wgan_gp_golden.h: PyTorch's WGAN-GP gradient penalty on two small critics, so
test_wgan_gp_golden.c can check tapegrad's gradients of gradients (tg_grad with create_graph)
without Python.

Run with Debian's interpreter, which has torch:  /usr/bin/python3 tests/golden/gen_wgan_gp.py

The critics take [4, 1, 12, 12] images, as WGAN-GP prescribes without BatchNorm:
(a) conv2d(1->4, k4, s2, p1) + leaky_relu(0.2) + conv2d(4->8, k3, s2, p1) + leaky_relu(0.2)
    + flatten + linear(72 -> 1);
(b) the same with layer_norm over [8, 3, 3] (elementwise affine) after the second conv.
For random real and fake batches and eps ~ U[0, 1) per sample, x_hat = eps * real + (1 - eps) *
fake; grad = torch.autograd.grad(D(x_hat), x_hat, ones, create_graph=True); penalty = 10 *
mean((||grad_n||_2 - 1)^2); loss = mean(D(fake)) - mean(D(real)) + penalty. Written: the
inputs, each critic's parameters, D of each batch, grad, its norm per sample, the penalty, the
loss and loss.backward()'s gradient of every parameter."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from golden import cfloat, emit, emit_shape, out, write_header

torch.manual_seed(20261206)
N, SLOPE, LAMBDA, EPS = 4, 0.2, 10.0, 1e-5


class Critic(nn.Module):
    def __init__(self, layer_norm):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 4, 2, 1)
        self.conv2 = nn.Conv2d(4, 8, 3, 2, 1)
        self.ln = nn.LayerNorm([8, 3, 3], eps=EPS) if layer_norm else None
        if self.ln is not None:
            # Away from the initial ones and zeros, so that a wrong weight gradient shows.
            with torch.no_grad():
                self.ln.weight.copy_(torch.rand(8, 3, 3) + 0.5)
                self.ln.bias.copy_(torch.randn(8, 3, 3) * 0.1)
        self.fc = nn.Linear(72, 1)

    def forward(self, x):
        h = F.leaky_relu(self.conv1(x), SLOPE)
        h = self.conv2(h)
        if self.ln is not None:
            h = self.ln(h)
        h = F.leaky_relu(h, SLOPE)
        return self.fc(h.flatten(1))


real = torch.rand(N, 1, 12, 12) * 2 - 1
fake = torch.randn(N, 1, 12, 12) * 0.5
eps = torch.rand(N, 1, 1, 1)
emit_shape("wgp_x", (N, 1, 12, 12))
emit("wgp_real", real)
emit("wgp_fake", fake)
emit("wgp_eps", eps)


def variant(name, layer_norm):
    d = Critic(layer_norm)
    params = list(d.named_parameters())
    for pname, p in params:
        emit("%s_%s" % (name, pname.replace(".", "_")), p)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    d_hat = d(x_hat)
    (grad,) = torch.autograd.grad(d_hat, x_hat, grad_outputs=torch.ones_like(d_hat),
                                  create_graph=True)
    norm = grad.flatten(1).norm(2, dim=1)
    penalty = LAMBDA * ((norm - 1) ** 2).mean()
    d_real, d_fake = d(real), d(fake)
    loss = d_fake.mean() - d_real.mean() + penalty
    loss.backward()
    for n, t in (("d_real", d_real), ("d_fake", d_fake), ("d_hat", d_hat), ("grad_x", grad),
                 ("grad_norm", norm), ("penalty", penalty.reshape(1)), ("loss", loss.reshape(1))):
        emit("%s_%s" % (name, n), t)
    for pname, p in params:
        emit("%s_%s_grad" % (name, pname.replace(".", "_")), p.grad)


variant("wgp_a", False)
variant("wgp_b", True)

write_header("wgan_gp", "#define WGP_SLOPE %s\n#define WGP_LAMBDA %s\n#define WGP_LN_EPS %s\n\n%s"
             % (cfloat(SLOPE), cfloat(LAMBDA), cfloat(EPS), "\n".join(out)),
             includes=("stdint.h",))
