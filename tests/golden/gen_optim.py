#!/usr/bin/python3
"""Writes optim_golden.h: parameters after each of three steps of torch.optim's SGD, Adam and
AdamW, so test_optim.c can compare tapegrad's optimizers without Python.

Run with Debian's interpreter, which has torch:  /usr/bin/python3 tests/golden/gen_optim.py

Two parameters: a [7] vector with a gradient on every step, and a [2, 3] matrix whose gradient
is None on step 2 (the optimizer must skip it: no update, and for Adam its step count does not
advance). The gradients are fixed per step, not computed from a loss, so each step's update
comes from the formula alone."""
import torch

from golden import c_list, cfloat, write_header

torch.manual_seed(20240612)
STEPS = 3
P0 = [torch.randn(7), torch.randn(2, 3)]
GRADS = [[torch.randn(7) * 0.5, torch.randn(2, 3) * 2.0] for _ in range(STEPS)]
GRADS[1][1] = None

# name, kind (0 SGD, 1 Adam, 2 AdamW), constructor, hyper-parameters for the C side
CASES = [
    ("sgd_momentum", 0, dict(lr=0.1, momentum=0.9)),
    ("sgd_nesterov_wd", 0, dict(lr=0.1, momentum=0.9, weight_decay=0.05, nesterov=True)),
    ("sgd_dampening_wd", 0, dict(lr=0.1, momentum=0.8, dampening=0.3, weight_decay=0.02)),
    ("sgd_plain", 0, dict(lr=0.2)),
    ("adam", 1, dict(lr=0.05)),
    ("adam_l2_betas", 1, dict(lr=0.05, betas=(0.5, 0.99), weight_decay=0.1)),
    ("adamw", 2, dict(lr=0.05, weight_decay=0.01)),
    ("adamw_big_decay", 2, dict(lr=0.05, betas=(0.8, 0.9), eps=1e-3, weight_decay=0.5)),
]
CTORS = {0: torch.optim.SGD, 1: torch.optim.Adam, 2: torch.optim.AdamW}


def run(kind, hp):
    ps = [p.clone().requires_grad_(True) for p in P0]
    opt = CTORS[kind](ps, **hp)
    out = []
    for s in range(STEPS):
        for p, g in zip(ps, GRADS[s]):
            p.grad = None if g is None else g.clone()
        opt.step()
        out.append([p.detach().clone() for p in ps])
    return out


def main():
    lines = [             "#define OPTIM_GOLDEN_STEPS %d" % STEPS,
             "/* Parameter 0 is [7], parameter 1 is [2, 3] (no gradient on step 2). */",
             "static const float golden_p0_a[7] = %s;" % c_list(P0[0]),
             "static const float golden_p0_b[6] = %s;" % c_list(P0[1]),
             "static const float golden_grad_a[OPTIM_GOLDEN_STEPS][7] = {%s};"
             % ", ".join(c_list(g[0]) for g in GRADS),
             "static const float golden_grad_b[OPTIM_GOLDEN_STEPS][6] = {%s};"
             % ", ".join(c_list(g[1]) if g[1] is not None else "{0}" for g in GRADS),
             "static const int golden_has_grad_b[OPTIM_GOLDEN_STEPS] = {%s};"
             % ", ".join("0" if g[1] is None else "1" for g in GRADS),
             "",
             "typedef struct {",
             "    const char *name;",
             "    int kind; /* 0 SGD, 1 Adam, 2 AdamW */",
             "    float lr, momentum, dampening, weight_decay;",
             "    int nesterov;",
             "    float beta1, beta2, eps;",
             "    float a[OPTIM_GOLDEN_STEPS][7]; /* parameter 0 after each step */",
             "    float b[OPTIM_GOLDEN_STEPS][6]; /* parameter 1 after each step */",
             "} optim_golden_case;",
             "",
             "static const optim_golden_case golden_optim_cases[] = {"]
    for name, kind, hp in CASES:
        out = run(kind, hp)
        # Fill every hyper-parameter with PyTorch's default where the case leaves it out.
        opt = CTORS[kind]([torch.zeros(1, requires_grad=True)], **hp)
        g = opt.param_groups[0]
        betas = g.get("betas", (0.0, 0.0))
        lines.append("    {\"%s\", %d, %s, %s, %s, %s, %d, %s, %s, %s," % (
            name, kind, cfloat(g["lr"]), cfloat(g.get("momentum", 0.0)),
            cfloat(g.get("dampening", 0.0)), cfloat(g["weight_decay"]),
            int(g.get("nesterov", False)), cfloat(betas[0]), cfloat(betas[1]),
            cfloat(g.get("eps", 0.0))))
        lines.append("     {%s}," % ", ".join(c_list(s[0]) for s in out))
        lines.append("     {%s}}," % ", ".join(c_list(s[1]) for s in out))
    lines.append("};")
    write_header("optim", "\n".join(lines))


if __name__ == "__main__":
    main()
