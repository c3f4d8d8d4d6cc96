#!/usr/bin/python3
"""A variational autoencoder on MNIST (Kingma & Welling; PyTorch's examples/vae): the PyTorch
twin of vae.c, layer for layer and flag for flag.

    /usr/bin/python3 examples/vae/torch_vae.py [--data DIR] [--out DIR] [--epochs N] ...
"""
import argparse
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image


def load_mnist(folder, train, limit):
    name = "train" if train else "t10k"
    with open(os.path.join(folder, name + "-images-idx3-ubyte"), "rb") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)[:limit]
    return torch.tensor(x / 255.0, dtype=torch.float32)  # pixels in [0, 1]


class VAE(nn.Module):  # (x [N, 784], eps [N, latent]) -> (logits [N, 784], mu, logvar)
    def __init__(self, hidden=400, latent=20):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(784, hidden), nn.ReLU(),
                                     nn.Linear(hidden, 2 * latent))
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(),
                                     nn.Linear(hidden, 784))

    def forward(self, x, eps):
        mu, logvar = self.encoder(x).chunk(2, 1)
        z = mu + eps * torch.exp(0.5 * logvar)  # the reparameterisation trick
        return self.decoder(z), mu, logvar


def vae_loss(model, x, eps):  # reconstruction + KL divergence, per sample
    logits, mu, logvar = model(x, eps)
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return (bce + kl) / len(x), logits


def save_grid(path, images, cols):  # [N, 784] in [0, 1], one-pixel gaps
    rows = (len(images) + cols - 1) // cols
    grid = np.zeros((rows * 29 - 1, cols * 29 - 1), np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * 29:r * 29 + 28, c * 29:c * 29 + 28] = (img.view(28, 28) * 255).round().byte()
    Image.fromarray(grid).save(path)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", default=os.environ.get("TG_MNIST_DIR", "data-cache/mnist"))
    p.add_argument("--out", default="out/vae")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--limit", type=int, default=60000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    train, test = load_mnist(a.data, True, a.limit), load_mnist(a.data, False, 1000)
    model = VAE()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    os.makedirs(a.out, exist_ok=True)
    for epoch in range(a.epochs):
        perm, total = torch.randperm(len(train)), 0.0
        for b in range(len(train) // a.batch):
            x = train[perm[b * a.batch:(b + 1) * a.batch]]
            loss, _ = vae_loss(model, x, torch.randn(len(x), 20))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        with torch.no_grad():
            test_loss, logits = vae_loss(model, test, torch.randn(len(test), 20))
            print(f"epoch {epoch + 1}  train loss {total / (b + 1):.2f}  test loss "
                  f"{test_loss.item():.2f}")
            # originals (rows 1 and 3) above their reconstructions (rows 2 and 4)
            x, r = test[:20].view(2, 10, 784), torch.sigmoid(logits[:20]).view(2, 10, 784)
            save_grid(os.path.join(a.out, "reconstructions.png"),
                      torch.stack([x, r], 1).view(-1, 784), 10)
            save_grid(os.path.join(a.out, "samples.png"),
                      torch.sigmoid(model.decoder(torch.randn(64, 20))), 8)


if __name__ == "__main__":
    main()
