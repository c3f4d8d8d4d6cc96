#!/usr/bin/python3
"""Trains mnist_gan's GAN with PyTorch, for the quality comparison at equal iterations: the same
models (make_fixture.py's, at full width), the same step (make_fixture.step, step.c's gan_step:
tutorial = PaddlePaddle 1.8's overwriting backward, accumulate, clean), the recipe's initialisation
and Adam (the tutorial's: Paddle's, make_fixture.init_paddle and PaddleAdam; dcgan's: PyTorch's),
the same data pipeline (MNIST training images x/255*2-1, a fresh shuffle every epoch — for the
tutorial recipe within blocks of 30,000 as paddle.reader.shuffle(reader, 30000), as mnist_gan's
--shuffle paddle — batches of 128 with the incomplete last one dropped), and the same outputs
that matter for comparing:

    OUT/losses.csv                    iteration,epoch,batch,d_real,d_fake,g,seconds (as mnist_gan)
    OUT/samples_<iteration>.png       G (eval mode) on a fixed batch of 128 z, 16 columns, a
                                      one-pixel gray gap, -1 black and 1 white (mnist_gan's grid)
    OUT/generated-images-idx3-ubyte   --n images of G in eval mode, for
                                      `mnist_gan eval --images OUT/generated-images-idx3-ubyte`

Run with Debian's Python (python3-torch) from the repository root, after scripts/fetch-mnist.sh:
    /usr/bin/python3 examples/mnist_gan/conformance/torch_train.py --recipe dcgan --iters 468 \\
        --out out/torch_dcgan
Only the measurements use it; no test needs Python. Seeds are PyTorch's own, so the run is the
same recipe on other random numbers than tapegrad's: compare what does not hang on one seed.
"""
import argparse
import os
import struct
import sys
import time
import zlib

import numpy as np
import torch

from make_fixture import MODES, adams, build, step

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
FULL = dict(nz=100, g_fc=1024, g_ch1=128, g_ch2=64, d_ch1=64, d_ch2=128, d_fc=1024)
GRID_N, GRID_COLS, GAP = 128, 16, 128  # data/png.c's GRID_GAP_VALUE


def read_idx_images(path):
    with open(path, "rb") as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        if magic != 2051:
            sys.exit(f"{path}: not an idx3 image file (magic {magic:#x})")
        x = np.frombuffer(f.read(n * rows * cols), dtype=np.uint8)
    if x.size != n * rows * cols:
        sys.exit(f"{path}: truncated")
    return torch.from_numpy(x.astype(np.float32).reshape(n, 1, rows, cols) / 255.0 * 2.0 - 1.0)


def to_bytes(images):
    """[-1, 1] -> 0..255, as data/idx.c writes them."""
    v = ((images.detach().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return v.reshape(v.shape[0], -1).numpy()


def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_idx_images(path, images):
    px = to_bytes(images)
    write_atomic(path, struct.pack(">IIII", 2051, px.shape[0], 28, 28) + px.tobytes())


def write_grid_png(path, images):
    """mnist_gan's fixed-scale grid: 16 columns, one-pixel gap of gray 128."""
    px = to_bytes(images).reshape(-1, 28, 28)
    n = px.shape[0]
    c = min(n, GRID_COLS)
    rows = (n + c - 1) // c
    W, H = c * 29 - 1, rows * 29 - 1
    canvas = np.full((H, W), GAP, dtype=np.uint8)
    for i in range(n):
        r0, c0 = (i // c) * 29, (i % c) * 29
        canvas[r0:r0 + 28, c0:c0 + 28] = px[i]
    raw = b"".join(b"\x00" + canvas[y].tobytes() for y in range(H))

    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body +
                struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, 8, 0, 0, 0, 0)) +
           chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    write_atomic(path, png)


@torch.no_grad()
def generate(G, z):
    G.eval()
    out = torch.cat([G(z[i:i + 500]) for i in range(0, z.shape[0], 500)])
    G.train()
    return out


def epoch_order(n, block, gen):
    """One epoch's order: a permutation of all n images (block 0), or of each consecutive block
    in turn (the last may be shorter), as paddle.reader.shuffle's buffer does."""
    if not block:
        return torch.randperm(n, generator=gen)
    return torch.cat([start + torch.randperm(min(block, n - start), generator=gen)
                      for start in range(0, n, block)])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", choices=("tutorial", "dcgan"), default="tutorial")
    ap.add_argument("--generator", choices=("upsample", "convt"), default="upsample")
    ap.add_argument("--step", choices=MODES, default=None,
                    help="default: tutorial for the tutorial recipe, clean for dcgan")
    ap.add_argument("--init", choices=("paddle", "torch"), default=None,
                    help="default: paddle for the tutorial recipe, torch for dcgan")
    ap.add_argument("--adam", choices=("paddle", "torch"), default=None,
                    help="paddle: eps before the bias correction; default: paddle for the "
                    "tutorial recipe, torch for dcgan")
    ap.add_argument("--shuffle", choices=("paddle", "full"), default=None,
                    help="paddle: shuffle images 0-29999 and 30000-59999 apart each epoch; "
                    "default: paddle for the tutorial recipe, full for dcgan")
    ap.add_argument("--iters", type=int, default=468)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--beta1", type=float, default=None,
                    help="default: 0.9 for the tutorial recipe, 0.5 for dcgan")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log-every", type=int, default=117)
    ap.add_argument("--n", type=int, default=10000, help="images in the idx file at the end")
    ap.add_argument("--data", default=os.path.join(ROOT, "data-cache", "mnist"))
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    dcgan = a.recipe == "dcgan"
    mode = a.step or ("clean" if dcgan else "tutorial")
    init = a.init or ("torch" if dcgan else "paddle")
    adam_style = a.adam or ("torch" if dcgan else "paddle")
    block = 30000 if (a.shuffle or ("full" if dcgan else "paddle")) == "paddle" else 0
    beta1 = a.beta1 if a.beta1 is not None else (0.5 if a.recipe == "dcgan" else 0.9)

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    os.makedirs(a.out, exist_ok=True)
    images = read_idx_images(os.path.join(a.data, "train-images-idx3-ubyte"))
    G, D = build(a.recipe, a.generator, FULL, init)
    opts = adams(G, D, a.lr, beta1, adam_style)
    z_fixed = torch.randn(GRID_N, FULL["nz"], generator=torch.Generator().manual_seed(a.seed))
    shuffle = torch.Generator().manual_seed(a.seed + 1)
    per_epoch = images.shape[0] // a.batch

    log = open(os.path.join(a.out, "losses.csv"), "w")
    log.write("iteration,epoch,batch,d_real,d_fake,g,seconds\n")
    t0 = time.time()
    order = None
    for it in range(1, a.iters + 1):
        epoch, b = divmod(it - 1, per_epoch)
        if b == 0:
            order = epoch_order(images.shape[0], block, shuffle)
        real = images[order[b * a.batch:(b + 1) * a.batch]]
        z = torch.randn(a.batch, FULL["nz"])
        z2 = torch.randn(a.batch, FULL["nz"]) if mode == "clean" else None
        losses = step(G, D, opts, mode, real, z, z2)
        log.write("%d,%d,%d,%.9g,%.9g,%.9g,%.3f\n" % (it, epoch, b, *losses, time.time() - t0))
        if it % a.log_every == 0 or it == a.iters:
            log.flush()
            write_grid_png(os.path.join(a.out, f"samples_{it}.png"), generate(G, z_fixed))
            print("epoch = %d, batch = %d, real_d_loss = %.4f, fake_d_loss = %.4f, "
                  "g_loss = %.4f  (%.2f s/it)" % (epoch, b, *losses, (time.time() - t0) / it),
                  flush=True)
    log.close()
    z = torch.randn(a.n, FULL["nz"], generator=torch.Generator().manual_seed(a.seed + 2))
    write_idx_images(os.path.join(a.out, "generated-images-idx3-ubyte"), generate(G, z))
    print(f"wrote {a.out}: losses.csv, samples_*.png, generated-images-idx3-ubyte ({a.n})")


if __name__ == "__main__":
    main()
