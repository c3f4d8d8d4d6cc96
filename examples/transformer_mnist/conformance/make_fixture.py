#!/usr/bin/python3
"""Writes tests/fixtures/transformer_mnist.safetensors: one forward and backward of a reduced
transformer_mnist model, run by PyTorch, for tests/test_transformer_conformance.c to repeat
with tapegrad.

Run once with Debian's Python (torch 1.13, numpy) from the repository root:
    /usr/bin/python3 examples/transformer_mnist/conformance/make_fixture.py
Tests never need Python: the fixture is committed.

The model is the twin's RowTransformer (torch_transformer_mnist.py) at reduced widths, so its
state_dict names are the C model's qualified names. The positional embedding is drawn with a
larger spread than the program's 0.02, so that it moves the attention noticeably.

Fixture layout (all F32):
  model.<name>   every parameter, under its state_dict name
  grad.<name>    its gradient of the loss
  images         [B, 1, 28, 28] MNIST training images 0..B-1 in [-1, 1]
  labels         [B] their classes
  loss           [1] F.cross_entropy (mean over the batch)
Metadata: d, heads, ff, layers, batch, torch version, source of the images."""
import os
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.dirname(HERE))
from torch_transformer_mnist import RowTransformer, load_mnist  # noqa: E402
sys.path.insert(0, os.path.join(ROOT, "examples", "common"))
from fixture import write_safetensors  # noqa: E402

OUT = os.path.join(ROOT, "tests", "fixtures", "transformer_mnist.safetensors")
MNIST = os.path.join(ROOT, "data-cache", "mnist")
D, HEADS, FF, LAYERS, B = 16, 2, 24, 2, 8


def main():
    torch.set_num_threads(1)
    torch.manual_seed(20261206)
    x, y = load_mnist(MNIST, "train", B)
    model = RowTransformer(D, HEADS, FF, LAYERS)
    with torch.no_grad():
        model.pos.normal_(0.0, 0.5)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    tensors = {"images": x[:, None].numpy(), "labels": y.float().numpy(),
               "loss": loss.detach().reshape(1).numpy()}
    for name, p in model.named_parameters():
        tensors["model." + name] = p.detach().numpy()
        tensors["grad." + name] = p.grad.numpy()
    meta = {"d": str(D), "heads": str(HEADS), "ff": str(FF), "layers": str(LAYERS),
            "batch": str(B), "torch": torch.__version__,
            "images": "MNIST train-images-idx3-ubyte, images 0..%d" % (B - 1),
            "made_by": "examples/transformer_mnist/conformance/make_fixture.py"}
    write_safetensors(OUT, tensors, meta)
    print(f"wrote {OUT}: loss {loss.item():.6f}, {len(tensors)} tensors, "
          f"{os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
