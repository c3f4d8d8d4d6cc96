#!/usr/bin/python3
"""PyTorch's side of bench/bench_wgan_gp.c: one WGAN-GP critic step at batch 64, with and
without its gradient penalty, timed the same way, one JSON line per case with the same keys
("side": "torch").

    /usr/bin/python3 bench/torch_wgan_gp.py [--threads T] [--iters N] [--warmup W]

The critic: mnist_gan's dcgan discriminator without BatchNorm and without a sigmoid,
nn.Sequential(Conv2d(1, 64, 4, 2, 1), LeakyReLU(0.2), Conv2d(64, 128, 4, 2, 1), LeakyReLU(0.2),
Flatten(), Linear(128 * 7 * 7, 1)); Adam lr 1e-4, betas (0.5, 0.9). real and fake are fixed
[64, 1, 28, 28] batches in [-1, 1]. critic: loss = D(fake).mean() - D(real).mean(), backward,
Adam step. critic_gp: the same plus x^ = fake + eps * (real - fake) with eps ~ U[0, 1) per
sample, x^.requires_grad_(True), g = torch.autograd.grad(D(x^), x^, ones, create_graph=True),
penalty 10 * ((g.flatten(1).norm(2, dim=1) - 1) ** 2).mean() added to the loss. Each step ends
with the gradients set to None (tg_optim_zero_grad frees them). Run with the thread count in
OMP_NUM_THREADS as well, as bench/compare.sh does."""
import argparse
import json
import time

import torch
import torch.nn as nn

BATCH, C1, C2, LAMBDA = 64, 64, 128, 10.0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    D = nn.Sequential(nn.Conv2d(1, C1, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(C1, C2, 4, 2, 1),
                      nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(C2 * 7 * 7, 1))
    opt = torch.optim.Adam(D.parameters(), lr=1e-4, betas=(0.5, 0.9))
    real = torch.rand(BATCH, 1, 28, 28) * 2 - 1
    fake = torch.rand(BATCH, 1, 28, 28) * 2 - 1

    def step(penalty):
        loss = D(fake).mean() - D(real).mean()
        if penalty:
            eps = torch.rand(BATCH, 1, 1, 1)
            xhat = (fake + eps * (real - fake)).requires_grad_(True)
            d_xhat = D(xhat)
            g, = torch.autograd.grad(d_xhat, xhat, torch.ones_like(d_xhat), create_graph=True)
            loss = loss + LAMBDA * ((g.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for name, penalty in (("critic", False), ("critic_gp", True)):
        for _ in range(a.warmup):
            step(penalty)
        ms = []
        for _ in range(a.iters):
            t0 = time.perf_counter()
            step(penalty)
            ms.append(1e3 * (time.perf_counter() - t0))
        ms.sort()
        print(json.dumps({"bench": "wgan_gp", "side": "torch", "case": name,
                          "threads": a.threads, "batch": BATCH,
                          "median_ms": round(ms[len(ms) // 2], 3), "min_ms": round(ms[0], 3)}),
              flush=True)


if __name__ == "__main__":
    main()
