#!/usr/bin/python3
"""PyTorch's side of bench/bench_transformer.c: a transformer encoder layer's forward + backward
at a realistic size, timed the same way, one JSON line per case with the same keys ("side":
"torch").

    /usr/bin/python3 bench/torch_transformer.py [--threads T] [--iters N] [--warmup W]

attention: nn.MultiheadAttention(256, 8, batch_first=True) self-attention on x [32, 128, 256]
(need_weights=False, so PyTorch takes its fused scaled-dot-product path where it has one);
layer: nn.TransformerEncoderLayer(256, 8, 1024, dropout=0, activation="gelu", batch_first=True)
on the same x. Each run: forward, backward of sum(y * dy) into the parameters and x, gradients
set to None (tg_module_zero_grad frees them). Run with the thread count in OMP_NUM_THREADS as
well, as bench/compare.py does for torch_gan.py."""
import argparse
import json
import time

import torch
import torch.nn as nn

BATCH, SEQ, D_MODEL, HEADS, FF = 32, 128, 256, 8, 1024


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    x = torch.randn(BATCH, SEQ, D_MODEL, requires_grad=True)
    dy = torch.randn(BATCH, SEQ, D_MODEL)
    mha = nn.MultiheadAttention(D_MODEL, HEADS, batch_first=True)
    layer = nn.TransformerEncoderLayer(D_MODEL, HEADS, FF, dropout=0.0, activation="gelu",
                                       batch_first=True)
    cases = (("attention", mha, lambda: mha(x, x, x, need_weights=False)[0]),
             ("layer", layer, lambda: layer(x)))
    for name, module, forward in cases:
        def run():
            forward().backward(dy)
            module.zero_grad(set_to_none=True)
            x.grad = None

        for _ in range(a.warmup):
            run()
        ms = []
        for _ in range(a.iters):
            t0 = time.perf_counter()
            run()
            ms.append(1e3 * (time.perf_counter() - t0))
        ms.sort()
        print(json.dumps({"bench": "transformer", "side": "torch", "case": name,
                          "threads": a.threads, "batch": BATCH, "seq": SEQ, "d_model": D_MODEL,
                          "heads": HEADS, "ff": FF, "median_ms": round(ms[len(ms) // 2], 3),
                          "min_ms": round(ms[0], 3)}), flush=True)


if __name__ == "__main__":
    main()
