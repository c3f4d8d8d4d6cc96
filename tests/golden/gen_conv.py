#!/usr/bin/python3
"""Writes conv_golden.h: PyTorch's forward and gradients of conv2d and conv_transpose2d for
test_conv.c, so the tests never need Python.

Run with Debian's interpreter, which has torch:  /usr/bin/python3 tests/golden/gen_conv.py
Each case stores the inputs x, w, b, a fixed random upstream gradient dy, the output y and
dx, dw, db = the gradients of sum(y * dy). Inputs are multiples of 1/16 in [-1, 1] (exact in
float32 and short to print); the results are printed with 9 significant digits."""
import torch
import torch.nn.functional as F

from golden import cfloat, write_header

torch.manual_seed(20240612)


def quantized(*shape):
    return torch.randint(-16, 17, shape).to(torch.float32) / 16


# name, transpose, x shape, w shape, stride, padding, dilation, output_padding
CASES = [
    ("conv2d_s2_p1", False, (2, 3, 7, 7), (4, 3, 3, 3), 2, 1, 1, 0),
    ("conv2d_dil2", False, (2, 3, 7, 7), (4, 3, 3, 3), 1, 2, 2, 0),
    # One output channel: conv.c's direct loops (the GAN generator's last layer, small).
    ("conv2d_o1_k5_p2", False, (2, 3, 7, 7), (1, 3, 5, 5), 1, 2, 1, 0),
    ("convt_k4_s2_p1", True, (2, 3, 4, 4), (3, 4, 4, 4), 2, 1, 1, 0),
    ("convt_k3_s2_p1_op1", True, (2, 3, 4, 4), (3, 4, 3, 3), 2, 1, 1, 1),
]


def c_floats(t):
    vals = [cfloat(v) for v in t.detach().flatten().tolist()]
    lines, line = [], "    "
    for s in vals:
        if len(line) + len(s) + 2 > 100:
            lines.append(line.rstrip())
            line = "    "
        line += s + ", "
    lines.append(line.rstrip())
    return "\n".join(lines)


def main():
    out = [
        "/* One case: y = conv(x, w, b) and the gradients of sum(y * dy). */",
        "typedef struct {",
        "    const char *name;",
        "    bool transpose; /* conv_transpose2d, else conv2d */",
        "    int stride, padding, dilation, output_padding;",
        "    int64_t x_shape[4], w_shape[4], y_shape[4];",
        "    const float *x, *w, *b, *dy, *y, *dx, *dw, *db;",
        "} conv_golden;",
        "",
    ]
    table = []
    for name, transpose, xs, ws, s, p, d, op in CASES:
        x = quantized(*xs).requires_grad_()
        w = quantized(*ws).requires_grad_()
        o = ws[1] if transpose else ws[0]
        b = quantized(o).requires_grad_()
        if transpose:
            y = F.conv_transpose2d(x, w, b, stride=s, padding=p, output_padding=op)
        else:
            y = F.conv2d(x, w, b, stride=s, padding=p, dilation=d)
        dy = quantized(*y.shape)
        (y * dy).sum().backward()
        arrays = {"x": x, "w": w, "b": b, "dy": dy, "y": y, "dx": x.grad, "dw": w.grad,
                  "db": b.grad}
        for k, t in arrays.items():
            out.append("static const float %s_%s[%d] = {" % (name, k, t.numel()))
            out.append(c_floats(t))
            out.append("};")
        shp = lambda t: "{%s}" % ", ".join(str(v) for v in t)
        table.append(
            '    {"%s", %s, %d, %d, %d, %d, %s, %s, %s,\n     %s},'
            % (name, "true" if transpose else "false", s, p, d, op, shp(xs), shp(ws),
               shp(y.shape), ",\n     ".join("%s_%s" % (name, k) for k in arrays)))
    out.append("")
    out.append("static const conv_golden conv_goldens[] = {")
    out.extend(table)
    out.append("};")
    write_header("conv", "\n".join(out), includes=("stdbool.h", "stdint.h"))


if __name__ == "__main__":
    main()
