#!/usr/bin/python3
"""transformer_mnist's PyTorch twin: the same model, data, optimizer and outputs, line for line.

    /usr/bin/python3 examples/transformer_mnist/torch_transformer_mnist.py [--data DIR]
        [--out DIR] [--epochs N] [--batch N] [--lr X] [--seed S] [--threads T] [--limit N]
        [--test-limit N]

Each MNIST image is a sequence of its 28 rows (28 pixels each): Linear(28, 64) plus a learned
positional embedding, two post-norm encoder layers (4 heads, feed-forward 128, GELU), the mean
over the rows, Linear(64, 10). AdamW, cross-entropy; test accuracy after every epoch, and
OUT/attention.png: test digits beside their first layer's attention maps, one per head."""
import argparse
import os
import struct
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image


def load_mnist(folder, split, limit):
    """Images [N, 28, 28] in [-1, 1] (x / 255 * 2 - 1, as tapegrad's loader) and labels [N]."""
    with open(os.path.join(folder, f"{split}-images-idx3-ubyte"), "rb") as f:
        n = struct.unpack(">IIII", f.read(16))[1]
        x = np.frombuffer(f.read(n * 784), np.uint8).reshape(n, 28, 28)
    with open(os.path.join(folder, f"{split}-labels-idx1-ubyte"), "rb") as f:
        y = np.frombuffer(f.read()[8:], np.uint8)
    n = min(n, limit) if limit else n
    x, y = x[:n] / 255.0 * 2 - 1, y[:n].astype(np.int64)
    return torch.from_numpy(x).float(), torch.from_numpy(y)


class RowTransformer(nn.Module):
    def __init__(self, d=64, heads=4, ff=128, layers=2):
        super().__init__()
        self.pos = nn.Parameter(torch.randn(28, d) * 0.02)  # learned positional embedding
        self.embed = nn.Linear(28, d)
        self.layers = nn.Sequential(*[nn.TransformerEncoderLayer(
            d, heads, ff, dropout=0.0, activation="gelu", batch_first=True)
            for _ in range(layers)])
        self.head = nn.Linear(d, 10)

    def forward(self, x):  # x [N, 28, 28]: 28 rows of 28 pixels
        h = self.layers(self.embed(x) + self.pos)
        return self.head(h.mean(1))

    def attention(self, x):  # the first layer's attention weights [N, heads, 28, 28]
        h = self.embed(x) + self.pos
        return self.layers[0].self_attn(h, h, h, average_attn_weights=False)[1]


def write_grid(path, tiles, cols):
    """Tiles [N, 28, 28] each stretched to its own range, 2x nearest, gaps of gray 128."""
    tiles = tiles.repeat_interleave(2, 1).repeat_interleave(2, 2)
    n, h, w = tiles.shape
    rows = (n + cols - 1) // cols
    grid = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), 128, np.uint8)
    for i, t in enumerate(tiles):
        t = (t - t.min()) / max(t.max() - t.min(), 1e-12) * 255
        r, c = i // cols * (h + 1), i % cols * (w + 1)
        grid[r:r + h, c:c + w] = t.round().byte().numpy()
    Image.fromarray(grid).save(path + ".tmp", format="PNG")
    os.replace(path + ".tmp", path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("TG_MNIST_DIR", "data-cache/mnist"))
    ap.add_argument("--out", default="out/transformer_mnist")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--test-limit", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)
    x_train, y_train = load_mnist(a.data, "train", a.limit)
    x_test, y_test = load_mnist(a.data, "t10k", a.test_limit)
    model = RowTransformer()
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    print(f"{sum(p.numel() for p in model.parameters())} parameters, "
          f"{len(x_train)} training and {len(x_test)} test images")
    batches = len(x_train) // a.batch
    for epoch in range(1, a.epochs + 1):
        t0, total = time.time(), 0.0
        perm = torch.randperm(len(x_train))
        for b in range(batches):
            i = perm[b * a.batch:(b + 1) * a.batch]
            loss = F.cross_entropy(model(x_train[i]), y_train[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        with torch.no_grad():
            correct = sum((model(x).argmax(1) == y).sum().item()
                          for x, y in zip(x_test.split(500), y_test.split(500)))
        print(f"epoch {epoch}/{a.epochs}  train loss {total / batches:.4f}  test accuracy "
              f"{100 * correct / len(x_test):.2f}%  {time.time() - t0:.1f} s", flush=True)
    with torch.no_grad():
        x = x_test[:8]
        w = model.attention(x)  # each digit, then its heads' maps: query row down, key row across
        tiles = torch.cat([x[:, None], w], 1).flatten(0, 1)
        write_grid(os.path.join(a.out, "attention.png"), tiles, 1 + w.shape[1])
    print(f"wrote {a.out}/attention.png")


if __name__ == "__main__":
    main()
