#!/usr/bin/python3
"""Writes tests/fixtures/gan_conformance.safetensors: three training iterations of mnist_gan's
models, run by PyTorch, for tests/test_gan_conformance.c to repeat with tapegrad.

Run once with Debian's Python (torch 1.13, numpy) from the repository root:
    /usr/bin/python3 examples/mnist_gan/conformance/make_fixture.py
Tests never need Python: the fixture is committed.

The models mirror examples/mnist_gan/core/models.c layer for layer, at the same nn.Sequential
indices, so PyTorch's state_dict names ("0.weight", "1.running_mean", ...) are tapegrad's
qualified names. tapegrad keeps BatchNorm's num_batches_tracked too (a float count), so it is
saved (as F32) and checked: it counts the training-mode forwards of each model. The
iteration is the tutorial's loop (examples/mnist_gan/core/step.c, top comment) in each of the
program's three step modes:

  tutorial    PaddlePaddle 1.8's semantics: a backward overwrites the gradients it reaches, i.e.
              every gradient is zeroed before each backward; nothing is detached; one z serves
              the fake-D and the G step. Each update sees exactly its own loss's gradient.
  accumulate  the same code where gradients accumulate until cleared (Paddle >= 2.0, or the loop
              ported line by line to PyTorch): D's are cleared after each D update, G's only
              after the G update. So G's update carries loss_fake's gradient too, and the next
              real-D update carries what loss_g left in D's gradients.
  clean       the textbook step: gradients cleared before every backward, G(z1) detached for D,
              a second z2 for G.

"Clearing" frees the gradient (set_to_none=True), as tg_module_zero_grad does; torch 1.13's
default would keep zero tensors, and Adam steps a parameter whose gradient is a zero tensor but
skips one whose gradient is None. (In these steps every optimizer's parameters always have a
fresh gradient, so both spellings give the same numbers; we write the one tapegrad means.)

The two tutorial configurations run as the program's tutorial recipe does by default, as
PaddlePaddle 1.8 did: Paddle's initialisers (init_paddle, nn.h's tg_nn_init_paddle) and Paddle's
Adam (PaddleAdam: eps added to sqrt(v) before the bias correction, optim.h's
TG_ADAM_EPS_BEFORE_CORRECTION). dcgan keeps PyTorch's initialisation and torch.optim.Adam. The
initial weights are stored, so the C test loads them and never repeats these random draws.

Widths are reduced so the fixture stays small (under 1 MB with all nine cases); the C test reads
them from the metadata and builds the same shapes with an explicit gan_widths. The learning
rate is 10x the program's default: Adam's first steps move each parameter by about lr whatever
the gradient's size (Paddle's Adam too, once |g| is well above eps / sqrt(1 - beta2) = 3e-7), so
with lr = 2e-4 three iterations would change parameters by less than the 1e-3 the test allows,
and a wrong gradient could pass.

Fixture layout (all F32):
  real.<it>                         [B,1,28,28]  MNIST training images 0.. in [-1, 1]
  z.<it>.<k>                        [B,nz]       k = 0: fake-D step (and the G step of the
                                                 tutorial and accumulate modes);
                                                 k = 1: the clean mode's G step
  init.<cfg>.G.<name>, init.<cfg>.D.<name>       initial parameters and buffers
  loss.<cfg>.<mode>                 [iters,3]    d_real, d_fake, g of each iteration
  final.<cfg>.<mode>.G.<name>, ...D.<name>       parameters and buffers after the iterations
with <cfg> in tutorial_upsample, tutorial_convt, dcgan and <mode> in tutorial, accumulate, clean.
Metadata: widths, batch, iters, lr, configs, modes, and per config beta1.<cfg>, recipe.<cfg>,
generator.<cfg>, init.<cfg> (paddle | torch: the distributions the stored initial weights were
drawn from) and adam.<cfg> (paddle: eps before the bias correction | torch); torch version, source.
"""
import copy
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "examples", "common"))
from fixture import write_safetensors  # noqa: E402
OUT = os.path.join(ROOT, "tests", "fixtures", "gan_conformance.safetensors")
MNIST = os.path.join(ROOT, "data-cache", "mnist", "train-images-idx3-ubyte")

# Reduced widths: every layer kept, channels small and unequal (a swapped in/out channel
# count cannot hide behind a square weight).
W = dict(nz=32, g_fc=32, g_ch1=4, g_ch2=3, d_ch1=3, d_ch2=5, d_fc=24)
WIDTH_ORDER = ("nz", "g_fc", "g_ch1", "g_ch2", "d_ch1", "d_ch2", "d_fc")
B, ITERS, LR = 8, 3, 2e-3
# (name, recipe, generator, beta1, init, adam): each recipe's defaults (step.c's
# gan_config_default): the tutorial as Paddle 1.8 ran it, dcgan as PyTorch.
CONFIGS = (("tutorial_upsample", "tutorial", "upsample", 0.9, "paddle", "paddle"),
           ("tutorial_convt", "tutorial", "convt", 0.9, "paddle", "paddle"),
           ("dcgan", "dcgan", "convt", 0.5, "torch", "torch"))
MODES = ("tutorial", "accumulate", "clean")
ADAM_BETA2, ADAM_EPS = 0.999, 1e-8  # PyTorch's and Paddle's defaults, as step.c
PADDLE_LEAKY_SLOPE = 0.02  # PaddlePaddle's leaky_relu default, used by the convt G
DCGAN_LEAKY_SLOPE = 0.2


def tutorial_g_upsample(w):
    c1, c2 = w["g_ch1"], w["g_ch2"]
    up = lambda: nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
    return nn.Sequential(
        nn.Linear(w["nz"], w["g_fc"]), nn.BatchNorm1d(w["g_fc"]), nn.Tanh(),      # 0 1 2
        nn.Linear(w["g_fc"], c1 * 49), nn.BatchNorm1d(c1 * 49), nn.Tanh(),      # 3 4 5
        nn.Unflatten(1, (c1, 7, 7)),                                           # 6
        up(), nn.Conv2d(c1, c2, 5, 1, 2), nn.BatchNorm2d(c2), nn.Tanh(),         # 7 8 9 10
        up(), nn.Conv2d(c2, 1, 5, 1, 2), nn.Tanh())                            # 11 12 13


def tutorial_g_convt(w):
    c1, c2 = w["g_ch1"], w["g_ch2"]
    lk = lambda: nn.LeakyReLU(PADDLE_LEAKY_SLOPE)
    return nn.Sequential(
        nn.Linear(w["nz"], w["g_fc"]), nn.BatchNorm1d(w["g_fc"]), lk(),          # 0 1 2
        nn.Linear(w["g_fc"], c1 * 49), nn.BatchNorm1d(c1 * 49), lk(),          # 3 4 5
        nn.Unflatten(1, (c1, 7, 7)),                                           # 6
        nn.ConvTranspose2d(c1, c2, 4, 2, 1), nn.BatchNorm2d(c2), lk(),          # 7 8 9
        nn.ConvTranspose2d(c2, 1, 4, 2, 1), lk())                              # 10 11


def tutorial_d(w):
    c1, c2 = w["d_ch1"], w["d_ch2"]
    return nn.Sequential(
        nn.Conv2d(1, c1, 3), nn.BatchNorm2d(c1), nn.ReLU(), nn.MaxPool2d(2, 2),  # 0 1 2 3
        nn.Conv2d(c1, c2, 3), nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(2, 2), # 4 5 6 7
        nn.Flatten(),                                                          # 8
        nn.Linear(c2 * 25, w["d_fc"]), nn.BatchNorm1d(w["d_fc"]), nn.ReLU(),     # 9 10 11
        nn.Linear(w["d_fc"], 1))                                               # 12


def dcgan_g(w):
    c1, c2 = w["g_ch1"], w["g_ch2"]
    return nn.Sequential(
        nn.Linear(w["nz"], c1 * 49), nn.Unflatten(1, (c1, 7, 7)),              # 0 1
        nn.BatchNorm2d(c1), nn.ReLU(),                                         # 2 3
        nn.ConvTranspose2d(c1, c2, 4, 2, 1), nn.BatchNorm2d(c2), nn.ReLU(),     # 4 5 6
        nn.ConvTranspose2d(c2, 1, 4, 2, 1), nn.Tanh())                         # 7 8


def dcgan_d(w):
    c1, c2 = w["d_ch1"], w["d_ch2"]
    lk = lambda: nn.LeakyReLU(DCGAN_LEAKY_SLOPE)
    return nn.Sequential(
        nn.Conv2d(1, c1, 4, 2, 1), lk(),                                       # 0 1
        nn.Conv2d(c1, c2, 4, 2, 1), nn.BatchNorm2d(c2), lk(),                   # 2 3 4
        nn.Flatten(), nn.Linear(c2 * 49, 1))                                   # 5 6


@torch.no_grad()
def init_paddle(m):
    """PaddlePaddle 1.8 dygraph's default initialisers (../shared/seed/paddle-1.8.md, 2), as
    nn.h's tg_nn_init_paddle: Linear weight Xavier-uniform (limit sqrt(6 / (in + out)));
    Conv2d weight Normal(0, sqrt(2 / (k*k*Cin))); ConvTranspose2d weight Xavier-uniform (torch's
    fans for its [Cin, Cout, k, k] weight are Paddle's: fan_in = Cout*k*k, fan_out = Cin*k*k);
    every bias 0; BatchNorm weight 1, bias 0 (running statistics as constructed)."""
    for layer in m.modules():
        if isinstance(layer, (nn.Linear, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(layer.weight)
        elif isinstance(layer, nn.Conv2d):
            k = layer.kernel_size[0] * layer.kernel_size[1]
            nn.init.normal_(layer.weight, 0.0, (2.0 / (k * layer.in_channels)) ** 0.5)
        elif isinstance(layer, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(layer.weight)
        else:
            continue
        nn.init.zeros_(layer.bias)


def build(recipe, gen, w, init="torch"):
    """G and D for the recipe, with PyTorch's initialisation or (init "paddle") Paddle's,
    G's weights drawn first."""
    if recipe == "dcgan":
        g, d = dcgan_g(w), dcgan_d(w)
    else:
        g = tutorial_g_convt(w) if gen == "convt" else tutorial_g_upsample(w)
        d = tutorial_d(w)
    if init == "paddle":
        init_paddle(g)
        init_paddle(d)
    return g, d


def bce(logits, label):
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, label))


class PaddleAdam:
    """PaddlePaddle 1.x's adam op (paddle/fluid/operators/optimizers/adam_op.h), by hand:
        m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
        p -= lr * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps)
    eps added to sqrt(v) before the bias correction (torch.optim.Adam adds it to
    sqrt(v / (1 - beta2^t))). Its own moments and step count per parameter, as each Paddle
    optimizer object; a parameter whose gradient is None is skipped, as torch.optim.Adam."""

    def __init__(self, params, lr, beta1, beta2=ADAM_BETA2, eps=ADAM_EPS):
        self.params = list(params)
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.state = [None] * len(self.params)

    @torch.no_grad()
    def step(self):
        b1, b2 = self.beta1, self.beta2
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            if self.state[i] is None:
                self.state[i] = [0, torch.zeros_like(p), torch.zeros_like(p)]
            st = self.state[i]
            st[0] += 1
            t, m, v = st
            g = p.grad
            m.mul_(b1).add_(g, alpha=1.0 - b1)
            v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
            lr_t = self.lr * (1.0 - b2 ** t) ** 0.5 / (1.0 - b1 ** t)
            p.sub_(lr_t * m / (v.sqrt() + self.eps))


def adams(G, D, lr, beta1, style="torch"):
    """step.c's three optimizers, each with its own state: two over D (real and fake steps), one
    over G; torch.optim.Adam or (style "paddle") PaddleAdam."""
    if style == "paddle":
        adam = lambda m: PaddleAdam(m.parameters(), lr, beta1)
    else:
        adam = lambda m: torch.optim.Adam(m.parameters(), lr=lr, betas=(beta1, ADAM_BETA2),
                                          eps=ADAM_EPS)
    return adam(D), adam(D), adam(G)


def step(G, D, opts, mode, real, z, z2):
    """One iteration of the tutorial's loop in the step mode (tutorial, accumulate, clean; see
    the top comment); returns the losses (d_real, d_fake, g). z serves the fake-D step (and the
    G step of the tutorial and accumulate modes), z2 the clean mode's G step."""
    assert mode in MODES
    opt_d_real, opt_d_fake, opt_g = opts
    clean = mode == "clean"

    def backward(loss):
        # tutorial: Paddle 1.8's backward overwrites every gradient it reaches, which is zeroing
        # them all before it. clean: the textbook's clearing before every backward. accumulate:
        # gradients add up until the loop's own clear_gradients calls.
        if mode != "accumulate":
            D.zero_grad(set_to_none=True)
            G.zero_grad(set_to_none=True)
        loss.backward()

    loss_real = bce(D(real), 1.0)
    backward(loss_real)
    opt_d_real.step()
    D.zero_grad(set_to_none=True)  # d.clear_gradients()

    fake = G(z)
    if clean:
        fake = fake.detach()
    loss_fake = bce(D(fake), 0.0)
    backward(loss_fake)
    opt_d_fake.step()
    D.zero_grad(set_to_none=True)  # d.clear_gradients()
    if clean:
        z = z2

    loss_g = bce(D(G(z)), 1.0)
    backward(loss_g)
    opt_g.step()
    G.zero_grad(set_to_none=True)  # g.clear_gradients()
    return loss_real.item(), loss_fake.item(), loss_g.item()


def train(G, D, mode, beta1, adam_style, reals, zs):
    """The step, ITERS times; returns the losses [ITERS, 3]."""
    opts = adams(G, D, LR, beta1, adam_style)
    losses = [step(G, D, opts, mode, reals[it], zs[it][0], zs[it][1]) for it in range(ITERS)]
    return np.array(losses, dtype=np.float32)


def model_tensors(prefix, G, D):
    out = {}
    for part, m in (("G", G), ("D", D)):
        for name, t in m.state_dict().items():
            out[f"{prefix}{part}.{name}"] = t.detach().numpy().astype(np.float32)
    return out


def real_batches():
    """ITERS batches of B real MNIST images scaled to [-1, 1] (x/255*2-1); deterministic
    synthetic strokes when MNIST has not been fetched (scripts/fetch-mnist.sh)."""
    n = ITERS * B
    if os.path.exists(MNIST):
        with open(MNIST, "rb") as f:
            magic, count, rows, cols = struct.unpack(">IIII", f.read(16))
            assert magic == 2051 and rows == 28 and cols == 28 and count >= n
            x = np.frombuffer(f.read(n * 784), dtype=np.uint8).astype(np.float32)
        source = "MNIST train-images-idx3-ubyte, images 0..%d" % (n - 1)
    else:
        rng = np.random.default_rng(7)
        yy, xx = np.mgrid[0:28, 0:28]
        x = np.zeros((n, 28, 28), np.float32)
        for i in range(n):
            cy, cx, r = rng.uniform(10, 18), rng.uniform(10, 18), rng.uniform(4, 9)
            d = np.abs(np.hypot(yy - cy, xx - cx) - r)
            x[i] = 255.0 * np.clip(1.5 - d, 0.0, 1.0)
        source = "synthetic rings (MNIST was not fetched)"
    x = x.reshape(ITERS, B, 1, 28, 28) / 255.0 * 2.0 - 1.0
    batches = [torch.from_numpy(np.ascontiguousarray(x[i], dtype=np.float32)) for i in range(ITERS)]
    return batches, source


def main():
    torch.set_num_threads(1)
    torch.manual_seed(20240611)
    reals, source = real_batches()
    zs = [[torch.randn(B, W["nz"]) for _ in range(2)] for _ in range(ITERS)]

    tensors = {}
    for it in range(ITERS):
        tensors[f"real.{it}"] = reals[it].numpy()
        for k in range(2):
            tensors[f"z.{it}.{k}"] = zs[it][k].numpy()
    meta = {"widths": " ".join(str(W[k]) for k in WIDTH_ORDER),
            "widths_order": " ".join(WIDTH_ORDER), "batch": str(B), "iters": str(ITERS),
            "lr": repr(LR), "configs": " ".join(c[0] for c in CONFIGS),
            "modes": " ".join(MODES), "torch": torch.__version__, "real": source,
            "made_by": "examples/mnist_gan/conformance/make_fixture.py"}
    for cfg, recipe, gen, beta1, init, adam_style in CONFIGS:
        meta.update({f"beta1.{cfg}": repr(beta1), f"recipe.{cfg}": recipe,
                     f"generator.{cfg}": gen, f"init.{cfg}": init, f"adam.{cfg}": adam_style})
        G0, D0 = build(recipe, gen, W, init)
        tensors.update(model_tensors(f"init.{cfg}.", G0, D0))
        for mode in MODES:
            G, D = copy.deepcopy(G0), copy.deepcopy(D0)
            losses = train(G, D, mode, beta1, adam_style, reals, zs)
            tensors[f"loss.{cfg}.{mode}"] = losses
            tensors.update(model_tensors(f"final.{cfg}.{mode}.", G, D))
            print(f"{cfg:18s} {mode:10s} losses", " ".join("%.5f" % v for v in losses.ravel()))

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    write_safetensors(OUT, tensors, meta)
    print(f"wrote {OUT}: {len(tensors)} tensors, {os.path.getsize(OUT)} bytes")
    if os.path.getsize(OUT) >= 1 << 20:
        sys.exit("the fixture is over 1 MB: reduce the widths")


if __name__ == "__main__":
    main()
