#!/usr/bin/python3
"""PyTorch's side of bench/compare.sh: the mnist_gan training iteration and each of its layers,
timed the same way as bench/bench_gan.c times tapegrad.

    /usr/bin/python3 bench/torch_gan.py step   [--generator upsample|convt] [--threads T]
                                               [--iters N] [--warmup W]
    /usr/bin/python3 bench/torch_gan.py layers [--threads T] [--reps N] [--warmup W]
    /usr/bin/python3 bench/torch_gan.py serve  [--generator upsample|convt] [--threads T]
    /usr/bin/python3 bench/torch_gan.py serve-layers [--threads T]
    /usr/bin/python3 bench/torch_gan.py tiny   [--threads T]
    /usr/bin/python3 bench/torch_gan.py info   [--threads T]

The models are examples/mnist_gan/models.c's tutorial recipe layer for layer, at the same
nn.Sequential indices (so a layer key such as "G_upsample.8" names the same layer on both
sides), and the iteration is examples/mnist_gan/step.c's tutorial step statement by statement:
three Adams (lr 2e-4, beta1 0.9, beta2 0.999, eps 1e-8), gradients cleared by setting them to
None (tg_module_zero_grad frees them), nothing detached, one z for the fake-D and G steps.
Batch 128; the real batches are uniform in [-1, 1] (no dataset needed).

step: one JSON line: median seconds per iteration (wall, and CPU time of the process), peak RSS
(resource.getrusage ru_maxrss) and the RSS before the first iteration.
layers: forward + backward of each layer alone at its real input shape (y.backward(dy) with a
random dy); one JSON line per layer.
tiny: the recording overhead of a tiny op, as bench_core measures it: a 1-element add with
requires_grad and its backward, one op per graph and a chain of 100.
info: torch's version, threads and BLAS (OpenBLAS's kernels, through ctypes), oneDNN.
serve, serve-layers: one measurement per request line ("step", "layer K REPS WARMUP", "rss",
"quit"), so bench/compare.py can interleave both sides; bench_gan.c documents the protocol.

Run with the thread count in OMP_NUM_THREADS as well: compare.py sets it before starting us,
and torch.set_num_threads is called here too.
"""
import argparse
import json
import os
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

BATCH = 128
NZ, G_FC, G_CH1, G_CH2, D_CH1, D_CH2, D_FC = 100, 1024, 128, 64, 64, 128, 1024
LR, BETA1, BETA2, EPS = 2e-4, 0.9, 0.999, 1e-8
PADDLE_LEAKY_SLOPE = 0.02  # models.c: PaddlePaddle's leaky_relu default, used by the convt G
N_REAL = 4


def g_upsample():
    up = lambda: nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
    return nn.Sequential(
        nn.Linear(NZ, G_FC), nn.BatchNorm1d(G_FC), nn.Tanh(),                     # 0 1 2
        nn.Linear(G_FC, G_CH1 * 49), nn.BatchNorm1d(G_CH1 * 49), nn.Tanh(),       # 3 4 5
        nn.Unflatten(1, (G_CH1, 7, 7)),                                           # 6
        up(), nn.Conv2d(G_CH1, G_CH2, 5, 1, 2), nn.BatchNorm2d(G_CH2), nn.Tanh(), # 7 8 9 10
        up(), nn.Conv2d(G_CH2, 1, 5, 1, 2), nn.Tanh())                            # 11 12 13


def g_convt():
    lk = lambda: nn.LeakyReLU(PADDLE_LEAKY_SLOPE)
    return nn.Sequential(
        nn.Linear(NZ, G_FC), nn.BatchNorm1d(G_FC), lk(),                          # 0 1 2
        nn.Linear(G_FC, G_CH1 * 49), nn.BatchNorm1d(G_CH1 * 49), lk(),            # 3 4 5
        nn.Unflatten(1, (G_CH1, 7, 7)),                                           # 6
        nn.ConvTranspose2d(G_CH1, G_CH2, 4, 2, 1), nn.BatchNorm2d(G_CH2), lk(),   # 7 8 9
        nn.ConvTranspose2d(G_CH2, 1, 4, 2, 1), lk())                              # 10 11


def discriminator():
    return nn.Sequential(
        nn.Conv2d(1, D_CH1, 3), nn.BatchNorm2d(D_CH1), nn.ReLU(), nn.MaxPool2d(2, 2),      # 0-3
        nn.Conv2d(D_CH1, D_CH2, 3), nn.BatchNorm2d(D_CH2), nn.ReLU(), nn.MaxPool2d(2, 2),  # 4-7
        nn.Flatten(),                                                                      # 8
        nn.Linear(D_CH2 * 25, D_FC), nn.BatchNorm1d(D_FC), nn.ReLU(),                     # 9-11
        nn.Linear(D_FC, 1))                                                                # 12


def generator(name):
    return g_convt() if name == "convt" else g_upsample()


def peak_rss_kb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def rss_now_kb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (os.sysconf("SC_PAGESIZE") // 1024)




def median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


# ---- the training iteration --------------------------------------------------------------

class StepBench:
    def __init__(self, gen):
        torch.manual_seed(1)
        self.G, self.D = generator(gen), discriminator()
        adam = lambda m: torch.optim.Adam(m.parameters(), lr=LR, betas=(BETA1, BETA2), eps=EPS)
        self.opt_d_real, self.opt_d_fake, self.opt_g = adam(self.D), adam(self.D), adam(self.G)
        g = torch.Generator().manual_seed(7)
        self.real = [torch.rand(BATCH, 1, 28, 28, generator=g) * 2 - 1 for _ in range(N_REAL)]
        self.it = 0

    @staticmethod
    def bce(logits, label):
        return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, label))

    def step(self):
        """step.c's gan_step in the tutorial mode."""
        G, D = self.G, self.D
        real = self.real[self.it % N_REAL]
        self.it += 1
        loss_real = self.bce(D(real), 1.0)
        loss_real.backward()
        self.opt_d_real.step()
        D.zero_grad(set_to_none=True)

        z = torch.randn(BATCH, NZ)
        loss_fake = self.bce(D(G(z)), 0.0)
        loss_fake.backward()
        self.opt_d_fake.step()
        D.zero_grad(set_to_none=True)

        loss_g = self.bce(D(G(z)), 1.0)
        loss_g.backward()
        self.opt_g.step()
        G.zero_grad(set_to_none=True)
        return loss_real.item(), loss_fake.item(), loss_g.item()

    def timed_step(self):
        """Wall and CPU seconds (every thread, as bench_gan.c's CLOCK_PROCESS_CPUTIME_ID)."""
        c0, t0 = time.process_time(), time.perf_counter()
        self.step()
        return time.perf_counter() - t0, time.process_time() - c0


def run_step(args):
    b = StepBench(args.generator)
    rss0 = rss_now_kb()
    for _ in range(args.warmup):
        b.timed_step()
    wall, cpu = [], []
    for _ in range(args.iters):
        w, c = b.timed_step()
        wall.append(w)
        cpu.append(c)
    print(json.dumps({"side": "torch", "generator": args.generator, "threads": args.threads,
                      "iters": args.iters, "warmup": args.warmup,
                      "sec_per_iter": round(median(wall), 6),
                      "cpu_sec_per_iter": round(median(cpu), 6),
                      "sec_min": round(min(wall), 6), "cpu_sec_min": round(min(cpu), 6),
                      "rss_start_kb": rss0,
                      "peak_rss_kb": peak_rss_kb(), "torch": torch.__version__}))


# ---- single layers -----------------------------------------------------------------------

def shape_str(t):
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


class Layer:
    """A layer, its label, and a random input and output gradient made once (not timed)."""

    def __init__(self, key, module, x, y, x_grad, label):
        self.key, self.m, self.label = key, module, label
        self.x = torch.randn(x.shape).requires_grad_(x_grad)
        self.dy = torch.randn(y.shape)


def collect(layers, model, name, x_shape, skip_until):
    """Walks model on an input of x_shape, recording each layer's input shape (as bench_gan.c's
    collect; views are left out, and so are the convt G's first six layers, which have the
    upsampling G's shapes)."""
    x = torch.randn(*x_shape)
    with torch.no_grad():
        for i, m in enumerate(model):
            y = m(x)
            if i >= skip_until and not isinstance(m, (nn.Unflatten, nn.Flatten)):
                label = "%s %s -> %s" % (type(m).__name__, shape_str(x), shape_str(y))
                layers.append(Layer("%s.%d" % (name, i), m, x, y,
                                    not (name.startswith("G") and i == 0), label))
            x = y


def make_layers():
    torch.manual_seed(3)
    layers = []
    collect(layers, g_upsample(), "G_upsample", (BATCH, NZ), 0)
    collect(layers, g_convt(), "G_convt", (BATCH, NZ), 6)
    collect(layers, discriminator(), "D", (BATCH, 1, 28, 28), 0)
    return layers


def layer_time(l, reps, warmup):
    """Wall and CPU seconds of reps forward+backward passes (after warmup untimed ones)."""
    wall, cpu = [], []
    for r in range(-warmup, reps):
        c0, t0 = time.process_time(), time.perf_counter()
        y = l.m(l.x)
        y.backward(l.dy)
        del y
        if r >= 0:
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        # as bench_gan.c's zero_grad, outside the timed region
        for p in l.m.parameters():
            p.grad = None
        l.x.grad = None
    return wall, cpu


def run_layers(args):
    for l in make_layers():
        wall, cpu = layer_time(l, args.reps, args.warmup)
        print(json.dumps({"side": "torch", "key": l.key, "label": l.label,
                          "threads": args.threads, "reps": args.reps,
                          "sec": round(median(wall), 7), "cpu_sec": round(median(cpu), 7)}))


# ---- the tiny op -------------------------------------------------------------------------

def tiny(ops, reps):
    """ns per (record + backward) of a chain of ops 1-element adds; median of reps runs."""
    x = torch.ones(1, requires_grad=True)
    c = torch.tensor([0.5])
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        y = x
        for _ in range(ops):
            y = y + c
        y.backward()
        times.append((time.perf_counter() - t0) * 1e9 / ops)
        x.grad = None
    return median(times)


def run_tiny(args):
    print(json.dumps({"side": "torch", "threads": args.threads,
                      "tiny_total_ns": round(tiny(1, 20001), 1),
                      "tiny_chain_total_ns": round(tiny(100, 2001), 1)}))


# ---- info --------------------------------------------------------------------------------

def loaded_libraries():
    with open("/proc/self/maps") as f:
        return sorted({l.split()[-1] for l in f if ".so" in l})


def openblas_info():
    """OpenBLAS's version and kernels as loaded into this process (torch's BLAS), or None."""
    import ctypes
    for path in loaded_libraries():
        if "openblas" in os.path.basename(path) or "libblas" in os.path.basename(path):
            try:
                lib = ctypes.CDLL(path)
                lib.openblas_get_corename.restype = ctypes.c_char_p
                lib.openblas_get_config.restype = ctypes.c_char_p
                flavour = {0: "sequential", 1: "pthreads", 2: "openmp"}.get(
                    lib.openblas_get_parallel(), "unknown")
                return {"path": path, "config": lib.openblas_get_config().decode(),
                        "flavour": flavour, "corename": lib.openblas_get_corename().decode()}
            except (OSError, AttributeError):
                continue
    return None


def run_info(args):
    par = torch.__config__.parallel_info().splitlines()
    keep = ("at::get_num_threads", "at::get_num_interop_threads", "OpenMP", "omp_get_max",
            "MKL", "MKL-DNN", "ATen parallel backend")
    summary = "; ".join(l.strip() for l in par if any(k in l for k in keep))
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                      "parallel_info": summary, "mkldnn": torch.backends.mkldnn.is_available(),
                      "openblas": openblas_info(),
                      "cpu_capability": next((l.strip(" -") for l in torch.__config__.show()
                                              .splitlines() if "CPU capability" in l), "")}))


# ---- serve -------------------------------------------------------------------------------

def serve(args, layers_mode):
    out = sys.stdout
    if layers_mode:
        layers = make_layers()
        out.write("ready %d layers\n" % len(layers))
        for l in layers:
            out.write("%s\t%s\n" % (l.key, l.label))
    else:
        b = StepBench(args.generator)
        out.write("ready rss_kb %d\n" % rss_now_kb())
    out.flush()
    for line in sys.stdin:
        w = line.split()
        if not w:
            continue
        if w[0] == "quit":
            break
        if w[0] == "rss":
            out.write("%d %d\n" % (peak_rss_kb(), rss_now_kb()))
        elif w[0] == "step" and not layers_mode:
            out.write("%.6f %.6f\n" % b.timed_step())
        elif w[0] == "layer" and layers_mode and len(w) == 4:
            wall, cpu = layer_time(layers[int(w[1])], int(w[2]), int(w[3]))
            out.write(" ".join("%.7f,%.7f" % p for p in zip(wall, cpu)) + "\n")
        else:
            out.write("error: unknown request %s\n" % line.strip())
        out.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=("step", "layers", "serve", "serve-layers", "tiny", "info"))
    ap.add_argument("--generator", choices=("upsample", "convt"), default="upsample")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.mode == "step":
        run_step(args)
    elif args.mode == "layers":
        run_layers(args)
    elif args.mode == "tiny":
        run_tiny(args)
    elif args.mode == "info":
        run_info(args)
    else:
        serve(args, args.mode == "serve-layers")


if __name__ == "__main__":
    main()
