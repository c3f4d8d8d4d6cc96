#!/usr/bin/python3
"""Conditional DCGAN on MNIST: the PyTorch twin of cgan.c, layer for layer and flag for flag.

    /usr/bin/python3 examples/cgan/torch_cgan.py [--data DIR] [--out DIR] [--epochs N] ...
"""
import argparse
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image


def load_mnist(folder, limit):
    with open(os.path.join(folder, "train-images-idx3-ubyte"), "rb") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[:limit]
    with open(os.path.join(folder, "train-labels-idx1-ubyte"), "rb") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)[:limit]
    return torch.tensor(x / 255.0 * 2 - 1, dtype=torch.float32), torch.tensor(y, dtype=torch.long)


class Generator(nn.Module):  # (z [N, nz], label [N]) -> image [N, 1, 28, 28]
    def __init__(self, nz=100, emb=10, ngf=64):
        super().__init__()
        self.embed = nn.Embedding(10, emb)
        self.net = nn.Sequential(
            nn.Linear(nz + emb, 2 * ngf * 7 * 7), nn.BatchNorm1d(2 * ngf * 7 * 7), nn.ReLU(),
            nn.Unflatten(1, (2 * ngf, 7, 7)),
            nn.ConvTranspose2d(2 * ngf, ngf, 4, 2, 1), nn.BatchNorm2d(ngf), nn.ReLU(),
            nn.ConvTranspose2d(ngf, 1, 4, 2, 1), nn.Tanh())

    def forward(self, z, label):
        return self.net(torch.cat([z, self.embed(label)], 1))


class Discriminator(nn.Module):  # (image, label) -> logit [N, 1]; the label as a 2nd channel
    def __init__(self, ndf=64):
        super().__init__()
        self.embed = nn.Embedding(10, 28 * 28)
        self.net = nn.Sequential(
            nn.Conv2d(2, ndf, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(ndf, 2 * ndf, 4, 2, 1), nn.BatchNorm2d(2 * ndf), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(2 * ndf * 7 * 7, 1))

    def forward(self, image, label):
        return self.net(torch.cat([image, self.embed(label).view(-1, 1, 28, 28)], 1))


def dcgan_init(m):  # the DCGAN paper's initialisation, by layer type
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def d_loss_fn(D, real, fake, label):  # D: real images are 1, G's (detached) are 0
    real_logits, fake_logits = D(real, label), D(fake.detach(), label)
    return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits)) +
            F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def g_loss_fn(D, fake, label):  # G: D should take its images for real ones
    logits = D(fake, label)
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


def save_grid(path, images, cols):  # [N, 1, 28, 28] in [-1, 1], one-pixel gaps
    rows = (len(images) + cols - 1) // cols
    grid = np.zeros((rows * 29 - 1, cols * 29 - 1), np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * 29:r * 29 + 28, c * 29:c * 29 + 28] = ((img[0] + 1) * 127.5).clamp(0, 255).byte()
    Image.fromarray(grid).save(path)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", default=os.environ.get("TG_MNIST_DIR", "data-cache/mnist"))
    p.add_argument("--out", default="out/cgan")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--limit", type=int, default=60000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    images, labels = load_mnist(a.data, a.limit)
    G, D = Generator(ngf=a.ngf), Discriminator(ndf=a.ndf)
    G.apply(dcgan_init)
    D.apply(dcgan_init)
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    fixed_z, fixed_label = torch.randn(100, 100), torch.arange(10).repeat_interleave(10)
    os.makedirs(a.out, exist_ok=True)
    for epoch in range(a.epochs):
        perm, d_sum, g_sum = torch.randperm(len(images)), 0.0, 0.0
        for b in range(len(images) // a.batch):
            idx = perm[b * a.batch:(b + 1) * a.batch]
            real, label = images[idx], labels[idx]
            fake = G(torch.randn(a.batch, 100), label)
            d_loss = d_loss_fn(D, real, fake, label)
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
            g_loss = g_loss_fn(D, fake, label)
            opt_g.zero_grad()
            g_loss.backward()
            opt_g.step()
            d_sum, g_sum = d_sum + d_loss.item(), g_sum + g_loss.item()
        print(f"epoch {epoch + 1}  d_loss {d_sum / (b + 1):.4f}  g_loss {g_sum / (b + 1):.4f}")
        with torch.no_grad():  # one row per digit 0..9
            save_grid(os.path.join(a.out, "samples.png"), G(fixed_z, fixed_label), 10)


if __name__ == "__main__":
    main()
