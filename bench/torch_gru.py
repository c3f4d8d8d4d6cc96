#!/usr/bin/python3
"""PyTorch's side of bench/bench_gru.c: a GRU cell's forward + backward at a realistic size,
timed the same way, one JSON line per case with the same keys ("side": "torch").

    /usr/bin/python3 bench/torch_gru.py [--threads T] [--iters N] [--warmup W]

cell: one nn.GRUCell(256, 512) step on a batch of 64, backward of sum(h' * dy) into the
parameters and h. seq: the cell unrolled over 32 steps from a zero state (x[:, t] of an input
[64, 32, 256]), the states stacked to [64, 32, 512], backward of sum(hs * dy). Each run:
forward, backward, gradients set to None (tg_module_zero_grad frees them). Run with the thread
count in OMP_NUM_THREADS as well, as bench/compare.py does for torch_gan.py."""
import argparse
import json
import time

import torch
import torch.nn as nn

BATCH, INPUT, HIDDEN, STEPS = 64, 256, 512, 32


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    cell = nn.GRUCell(INPUT, HIDDEN)
    x1, xs = torch.randn(BATCH, INPUT), torch.randn(BATCH, STEPS, INPUT)
    h = torch.randn(BATCH, HIDDEN, requires_grad=True)
    dy1, dys = torch.randn(BATCH, HIDDEN), torch.randn(BATCH, STEPS, HIDDEN)

    def run(steps, x, dy):
        if steps == 1:
            y = cell(x, h)
        else:
            state, hs = None, []
            for t in range(steps):
                state = cell(x[:, t], state)
                hs.append(state)
            y = torch.stack(hs, 1)
        y.backward(dy)
        cell.zero_grad(set_to_none=True)
        h.grad = None

    for name, steps, x, dy in (("cell", 1, x1, dy1), ("seq", STEPS, xs, dys)):
        for _ in range(a.warmup):
            run(steps, x, dy)
        ms = []
        for _ in range(a.iters):
            t0 = time.perf_counter()
            run(steps, x, dy)
            ms.append(1e3 * (time.perf_counter() - t0))
        ms.sort()
        print(json.dumps({"bench": "gru", "side": "torch", "case": name, "threads": a.threads,
                          "batch": BATCH, "input": INPUT, "hidden": HIDDEN, "steps": steps,
                          "median_ms": round(ms[len(ms) // 2], 3), "min_ms": round(ms[0], 3)}),
              flush=True)


if __name__ == "__main__":
    main()
