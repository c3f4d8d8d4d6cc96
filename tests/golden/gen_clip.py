#!/usr/bin/python3
"""Writes clip_golden.h: torch.nn.utils.clip_grad_norm_ and clip_grad_value_ on three
parameters, so test_optim.c can compare tg_clip_grad_norm_ / tg_clip_grad_value_ without Python.

Run with Debian's interpreter, which has torch:  /usr/bin/python3 tests/golden/gen_clip.py

Parameters: a [7] vector, a [2, 3] matrix and a [4] vector without a gradient (skipped, as
PyTorch skips p.grad None). Each case starts from the same gradients."""
import math

import torch

from golden import c_list, cfloat, write_header

torch.manual_seed(20261206)
SHAPES = [(7,), (2, 3), (4,)]
GRADS = [torch.randn(7) * 3.0, torch.randn(2, 3) * 0.5, None]

# name, max_norm, norm_type (norm cases); clip_value (value cases)
NORM_CASES = [
    ("l2_clipped", 1.0, 2.0),
    ("l2_unclipped", 100.0, 2.0),
    ("l1_clipped", 2.5, 1.0),
    ("inf_clipped", 0.75, math.inf),
    ("p3_clipped", 1.5, 3.0),
    ("zero_max", 0.0, 2.0),
]
VALUE_CASES = [("value_half", 0.5), ("value_big", 100.0), ("value_zero", 0.0)]


def params():
    ps = [torch.zeros(s, requires_grad=True) for s in SHAPES]
    for p, g in zip(ps, GRADS):
        p.grad = None if g is None else g.clone()
    return ps


def main():
    lines = ["/* Gradients of parameter 0 ([7]) and 1 ([2, 3]); parameter 2 ([4]) has none. */",
             "static const float clip_grad_a[7] = %s;" % c_list(GRADS[0]),
             "static const float clip_grad_b[6] = %s;" % c_list(GRADS[1]),
             "",
             "typedef struct {",
             "    const char *name;",
             "    float max_norm, norm_type; /* clip_grad_norm_ */",
             "    float clip_value;          /* clip_grad_value_ when max_norm < 0 */",
             "    float total_norm;          /* clip_grad_norm_'s result */",
             "    float a[7], b[6];          /* the gradients after */",
             "} clip_golden_case;",
             "",
             "static const clip_golden_case clip_golden_cases[] = {"]
    for name, max_norm, norm_type in NORM_CASES:
        ps = params()
        total = torch.nn.utils.clip_grad_norm_(ps, max_norm, norm_type).item()
        assert ps[2].grad is None
        lines.append("    {\"%s\", %s, %s, 0.0f, %s," % (name, cfloat(max_norm),
                                                        cfloat(norm_type), cfloat(total)))
        lines.append("     %s," % c_list(ps[0].grad))
        lines.append("     %s}," % c_list(ps[1].grad))
    for name, value in VALUE_CASES:
        ps = params()
        torch.nn.utils.clip_grad_value_(ps, value)
        lines.append("    {\"%s\", -1.0f, 0.0f, %s, 0.0f," % (name, cfloat(value)))
        lines.append("     %s," % c_list(ps[0].grad))
        lines.append("     %s}," % c_list(ps[1].grad))
    lines.append("};")
    write_header("clip", "\n".join(lines), includes=("math.h",))


if __name__ == "__main__":
    main()
