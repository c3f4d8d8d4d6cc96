#!/usr/bin/python3
"""Compares a mnist_gan run's losses.csv with the nine loss lines the tutorial printed.

    examples/mnist_gan/conformance/seed_table.py out/mnist_gan/losses.csv [--window 50]

The tutorial (PaddlePaddle 1.8, 20 epochs) printed single-batch losses every 1000 iterations
(tutorial_losses.csv beside this script, copied from its notebook's output). One batch is
noisy, so for each of those iterations N this prints the median of the run's rows N-w..N+w
(w = 50) beside the tutorial's value, as a markdown table; rows the run has not reached yet
are left out. Only the standard library: run it with any Python 3.
"""
import csv
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 2
    window = 50
    if "--window" in argv:
        window = int(argv[argv.index("--window") + 1])
    with open(argv[1], newline="") as f:
        rows = {int(r["iteration"]): r for r in csv.DictReader(f)}
    with open(os.path.join(HERE, "tutorial_losses.csv"), newline="") as f:
        seed = list(csv.DictReader(f))
    print(f"| iteration (epoch) | d_real: tutorial / median {2 * window + 1} rows "
          "| d_fake: tutorial / median | g: tutorial / median |")
    print("|---|---|---|---|")
    for s in seed:
        n = int(s["iteration"])
        near = [rows[i] for i in range(n - window, n + window + 1) if i in rows]
        if len(near) < 2 * window + 1:
            continue
        cells = []
        for k in ("d_real", "d_fake", "g"):
            med = statistics.median(float(r[k]) for r in near)
            cells.append(f"{float(s[k]):.3f} / {med:.3f}")
        print(f"| {n} ({s['epoch']}) | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
