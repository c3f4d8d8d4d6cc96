#!/usr/bin/python3
"""Writes tests/fixtures/cgan.safetensors: one batch through a reduced-width copy of the
conditional DCGAN (examples/cgan/torch_cgan.py's Generator and Discriminator, DCGAN init), for
tests/test_cgan_conformance.c to repeat with tapegrad. Run from anywhere with Debian's Python:
    /usr/bin/python3 examples/cgan/conformance/make_fixture.py

Layout (all F32; labels as whole floats):
  real [B,1,28,28] (MNIST training images 0..B-1 in [-1, 1]), label [B], z [B,nz]
  G.<name>, D.<name>            initial parameters and buffers (state_dict names)
  d_loss, g_loss                the losses of cgan_d_loss and cgan_g_loss (0-d)
  grad.G.<name>, grad.D.<name>  D's gradients from d_loss, G's from g_loss (no update between)
Metadata: nz, emb, ngf, ndf, batch, torch version, source.
"""
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..", "..")
sys.path.insert(0, os.path.join(HERE, ".."))
import torch_cgan as tc  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "examples", "common"))
from fixture import write_safetensors  # noqa: E402

# Small, unequal widths: every layer kept, the fixture stays ~100 KB.
W = dict(nz=8, emb=4, ngf=2, ndf=3)
B = 8


def main():
    torch.set_num_threads(1)
    torch.manual_seed(20261206)
    images, labels = tc.load_mnist(os.path.join(ROOT, "data-cache", "mnist"), B)
    G = tc.Generator(nz=W["nz"], emb=W["emb"], ngf=W["ngf"])
    D = tc.Discriminator(ndf=W["ndf"])
    G.apply(tc.dcgan_init)
    D.apply(tc.dcgan_init)
    z = torch.randn(B, W["nz"])
    t = {"real": images, "label": labels.float(), "z": z}
    for part, m in (("G", G), ("D", D)):
        t.update({f"{part}.{k}": v.clone().float() for k, v in m.state_dict().items()})

    fake = G(z, labels)
    d_loss = tc.d_loss_fn(D, images, fake, labels)
    d_loss.backward()
    t.update({f"grad.D.{k}": p.grad.clone() for k, p in D.named_parameters()})
    D.zero_grad()
    g_loss = tc.g_loss_fn(D, fake, labels)
    g_loss.backward()
    t.update({f"grad.G.{k}": p.grad.clone() for k, p in G.named_parameters()})
    t["d_loss"], t["g_loss"] = d_loss.detach(), g_loss.detach()

    meta = {k: str(v) for k, v in W.items()}
    meta.update(batch=str(B), torch=torch.__version__,
                source="MNIST train images 0..%d" % (B - 1),
                made_by="examples/cgan/conformance/make_fixture.py")
    out = os.path.join(ROOT, "tests", "fixtures", "cgan.safetensors")
    write_safetensors(out, {k: v.detach().numpy() for k, v in t.items()}, meta)
    print("wrote %s (%d bytes): d_loss %.6f g_loss %.6f" %
          (os.path.normpath(out), os.path.getsize(out), d_loss.item(), g_loss.item()))


if __name__ == "__main__":
    main()
