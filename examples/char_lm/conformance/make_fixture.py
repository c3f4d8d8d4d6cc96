#!/usr/bin/python3
"""Writes tests/fixtures/char_lm.safetensors: char_lm's whole model against PyTorch, at a reduced
size. The CharLM of examples/char_lm/torch_char_lm.py (vocab 13, embed 8, hidden 16) with
PyTorch's initial weights (model.<name>), one batch of B = 3 tracks of T = 6 characters (ids
and the characters that follow them, next), a non-zero carried state h0, and what one training
step's forward and backward give: logits, the mean cross-entropy loss, the last state h_last and
the gradient of every parameter (grad.<name>) and of h0 (grad.h0: backpropagation through the
whole unrolled sequence into the state carried from the previous step). Read by
tests/test_char_lm_conformance.c. Deterministic; run with Debian's interpreter, which has torch:

    /usr/bin/python3 examples/char_lm/conformance/make_fixture.py"""
import os
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.dirname(HERE))
from torch_char_lm import CharLM  # noqa: E402
sys.path.insert(0, os.path.join(ROOT, "examples", "common"))
from fixture import write_safetensors  # noqa: E402

OUT = os.path.join(ROOT, "tests", "fixtures", "char_lm.safetensors")
VOCAB, EMBED, HIDDEN, B, T = 13, 8, 16, 3, 6


def main():
    torch.set_num_threads(1)
    torch.manual_seed(20251206)
    model = CharLM(VOCAB, EMBED, HIDDEN)
    text = torch.randint(0, VOCAB, (B, T + 1))
    ids, nxt = text[:, :T], text[:, 1:]
    h0 = (0.5 * torch.randn(B, HIDDEN)).requires_grad_()
    logits, h_last = model(ids, h0)
    loss = F.cross_entropy(logits.reshape(-1, VOCAB), nxt.reshape(-1))
    loss.backward()

    tensors = {"model." + name: p.detach().numpy() for name, p in model.named_parameters()}
    tensors.update({"ids": ids.float().numpy(), "next": nxt.float().numpy(),
                    "h0": h0.detach().numpy(), "logits": logits.detach().numpy(),
                    "loss": loss.detach().reshape(1).numpy(), "h_last": h_last.detach().numpy()})
    for name, p in model.named_parameters():
        tensors["grad." + name] = p.grad.numpy()
    tensors["grad.h0"] = h0.grad.numpy()
    meta = {"vocab": str(VOCAB), "embed": str(EMBED), "hidden": str(HIDDEN), "batch": str(B),
            "seq": str(T), "torch": torch.__version__}
    write_safetensors(OUT, tensors, meta)
    print("wrote %s (%d bytes), loss %.6f" % (OUT, os.path.getsize(OUT), loss.item()))


if __name__ == "__main__":
    main()
