#!/usr/bin/python3
"""char_lm's PyTorch twin: the same character-level GRU language model, data order and training
loop as examples/char_lm/main.c, written as a PyTorch user would. Run with Debian's python3:

    /usr/bin/python3 examples/char_lm/torch_char_lm.py [--text FILE] [--out DIR] [--steps N] ...

Model: Embedding(vocab, 64) -> GRUCell(64, 256) unrolled over --seq characters -> Linear(256,
vocab), trained by truncated backpropagation through time: the text is cut into --batch tracks
read side by side, each step reads the next --seq characters of every track and carries the GRU
state on (detached) to the next step; at the end of the tracks the state starts again at zero.
Adam, gradients clipped to norm 1. Then it samples text with a temperature."""
import argparse
import math
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class CharLM(nn.Module):
    def __init__(self, vocab, embed=64, hidden=256):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.cell = nn.GRUCell(embed, hidden)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, ids, h):
        """ids [B, T], state h [B, hidden] -> logits [B, T, vocab] and the last state."""
        x = self.embed(ids)
        hs = []
        for t in range(ids.shape[1]):
            h = self.cell(x[:, t], h)
            hs.append(h)
        return self.head(torch.stack(hs, 1)), h


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--text", default="/usr/share/common-licenses/GPL-3")
    p.add_argument("--out", default="out/char_lm")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sample", type=int, default=600)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--log-every", type=int, default=100)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)

    text = open(a.text, "rb").read()
    chars = sorted(set(text))
    data = torch.tensor([chars.index(c) for c in text])
    track = (len(data) - 1) // a.batch
    if track < a.seq:
        raise SystemExit("char_lm: %s is too short for %d tracks of %d characters"
                         % (a.text, a.batch, a.seq))
    starts = torch.arange(a.batch) * track

    model = CharLM(len(chars))
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    print("char_lm: %s: %d characters, vocabulary %d; %d parameters"
          % (a.text, len(text), len(chars), sum(q.numel() for q in model.parameters())))

    os.makedirs(a.out, exist_ok=True)
    log = ["step,loss"]
    h, pos, t0, total = torch.zeros(a.batch, 256), 0, time.time(), 0.0
    for step in range(1, a.steps + 1):
        if pos + a.seq > track:  # the tracks are used up: start again, from a zero state
            h, pos = torch.zeros(a.batch, 256), 0
        idx = starts[:, None] + pos + torch.arange(a.seq)
        logits, h = model(data[idx], h)
        loss = F.cross_entropy(logits.reshape(-1, len(chars)), data[idx + 1].reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        h, pos = h.detach(), pos + a.seq
        total += loss.item()
        log.append("%d,%.6f" % (step, loss.item()))
        if step % a.log_every == 0 or step == a.steps:
            n = (step - 1) % a.log_every + 1
            print("step %d/%d  loss %.4f (%.3f bits/char)  %.1f s" % (
                step, a.steps, total / n, total / n / math.log(2), time.time() - t0))
            total = 0.0

    with torch.no_grad():  # sample, starting from the text's first character
        out, h, c = [text[0]], torch.zeros(1, 256), data[:1]
        for _ in range(a.sample - 1):
            logits, h = model(c[None], h)
            c = torch.distributions.Categorical(logits=logits[0, -1] / a.temperature).sample()[None]
            out.append(chars[c.item()])
    sample = bytes(out).decode("utf-8", "replace")
    print(sample)
    with open(os.path.join(a.out, "sample.txt"), "w") as f:
        f.write(sample + "\n")
    with open(os.path.join(a.out, "losses.csv"), "w") as f:
        f.write("\n".join(log) + "\n")


if __name__ == "__main__":
    main()
