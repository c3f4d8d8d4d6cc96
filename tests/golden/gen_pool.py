#!/usr/bin/python3
"""Writes pool_golden.h: PyTorch's forward and input gradient for tapegrad's pooling and
upsampling ops, so test_pool.c can compare against them without Python.

Run with Debian's interpreter, which has torch:  /usr/bin/python3 tests/golden/gen_pool.py
Each case stores its input x, a fixed random upstream gradient dy, the output y and
dx = (d/dx) sum(y * dy)."""
import torch
import torch.nn.functional as F

from golden import write_header

torch.manual_seed(20240611)

# Inputs: one pooling input and two small upsampling inputs, shared by the cases below.
INPUTS = {
    "pool_x": torch.randn(2, 3, 7, 6),
    "up_x": torch.randn(1, 2, 5, 4),
    "up3_x": torch.randn(1, 1, 3, 4),
}

# name, input, function of x
CASES = [
    ("max_k2s2", "pool_x", lambda x: F.max_pool2d(x, 2, 2, 0)),
    ("max_k3s2p1", "pool_x", lambda x: F.max_pool2d(x, 3, 2, 1)),
    ("avg_k3s2p1", "pool_x", lambda x: F.avg_pool2d(x, 3, 2, 1)),
    ("nearest_x2", "up_x", lambda x: F.interpolate(x, scale_factor=2, mode="nearest")),
    ("aligned_x2", "up_x",
     lambda x: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)),
    ("half_pixel_x2", "up_x",
     lambda x: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)),
    ("aligned_x3", "up3_x",
     lambda x: F.interpolate(x, scale_factor=3, mode="bilinear", align_corners=True)),
    ("half_pixel_x3", "up3_x",
     lambda x: F.interpolate(x, scale_factor=3, mode="bilinear", align_corners=False)),
    # Appended last, so the values above stay what they were. count_include_pad=False
    # (PaddlePaddle's exclusive=True): windows overlapping the padding divide by their real
    # pixels; k2s1p1 has windows over the padding on every side, k3s2p1 on the top and left.
    ("avg_k3s2p1_excl", "pool_x", lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)),
    ("avg_k2s1p1_excl", "pool_x", lambda x: F.avg_pool2d(x, 2, 1, 1, count_include_pad=False)),
]


def c_float(v):
    s = "%.8g" % v
    # Whole numbers (the many zeros of max pool's dx) stay plain integer constants.
    return s + "f" if ("." in s or "e" in s) else s


def c_array(name, t):
    vals = t.detach().reshape(-1).tolist()
    dims = " * ".join(str(d) for d in t.shape)
    lines = []
    for i in range(0, len(vals), 6):
        lines.append("    " + ", ".join(c_float(v) for v in vals[i:i + 6]) + ",")
    return "static const float %s[%s] = {\n%s\n};\n" % (name, dims, "\n".join(lines))


def main():
    out = []
    for name, x in INPUTS.items():
        out.append("/* %s: shape %s */" % (name, list(x.shape)))
        out.append(c_array("golden_" + name, x))
    for name, xname, fn in CASES:
        x = INPUTS[xname].clone().requires_grad_(True)
        y = fn(x)
        dy = torch.rand_like(y) * 2 - 1
        y.backward(dy)
        out.append("/* %s on golden_%s: y and dy %s */" % (name, xname, list(y.shape)))
        out.append(c_array("golden_%s_dy" % name, dy))
        out.append(c_array("golden_%s_y" % name, y))
        out.append(c_array("golden_%s_dx" % name, x.grad))
    # Each array ends its own line already.
    write_header("pool", "\n".join(out).rstrip("\n"))


if __name__ == "__main__":
    main()
