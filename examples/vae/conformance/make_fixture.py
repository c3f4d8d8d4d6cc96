#!/usr/bin/python3
"""Writes tests/fixtures/vae.safetensors: one batch through a reduced-width copy of the VAE
(examples/vae/torch_vae.py's VAE and vae_loss), for tests/test_vae_conformance.c to repeat
with tapegrad. Run from anywhere with Debian's Python:
    /usr/bin/python3 examples/vae/conformance/make_fixture.py

Layout (all F32):
  x [B,784] (MNIST training images 0..B-1 in [0, 1]), eps [B,latent] (the reparameterisation's
  noise), vae.<name> (initial parameters, state_dict names), loss (0-d, per sample),
  grad.<name> (every parameter's gradient of loss)
Metadata: hidden, latent, batch, torch version, source.
"""
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..", "..")
sys.path.insert(0, os.path.join(HERE, ".."))
import torch_vae as tv  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "examples", "common"))
from fixture import write_safetensors  # noqa: E402

W = dict(hidden=8, latent=3)  # small and unequal: the fixture stays ~130 KB
B = 8


def main():
    torch.set_num_threads(1)
    torch.manual_seed(20261206)
    x = tv.load_mnist(os.path.join(ROOT, "data-cache", "mnist"), True, B)
    model = tv.VAE(hidden=W["hidden"], latent=W["latent"])
    eps = torch.randn(B, W["latent"])
    t = {"x": x, "eps": eps}
    t.update({f"vae.{k}": v.clone() for k, v in model.state_dict().items()})
    loss, _ = tv.vae_loss(model, x, eps)
    loss.backward()
    t.update({f"grad.{k}": p.grad.clone() for k, p in model.named_parameters()})
    t["loss"] = loss.detach()
    meta = {k: str(v) for k, v in W.items()}
    meta.update(batch=str(B), torch=torch.__version__,
                source="MNIST train images 0..%d" % (B - 1),
                made_by="examples/vae/conformance/make_fixture.py")
    out = os.path.join(ROOT, "tests", "fixtures", "vae.safetensors")
    write_safetensors(out, {k: v.detach().numpy() for k, v in t.items()}, meta)
    print("wrote %s (%d bytes): loss %.6f" % (os.path.normpath(out), os.path.getsize(out),
                                              loss.item()))


if __name__ == "__main__":
    main()
