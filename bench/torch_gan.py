#!/usr/bin/python3
"""PyTorch's side of bench/compare.sh: the mnist_gan training iteration and each of its layers,
timed the same way as bench/bench_gan.c times tapegrad.

    /usr/bin/python3 bench/torch_gan.py step   [--generator upsample|convt] [--step S]
                                               [--threads T] [--iters N] [--warmup W]
    /usr/bin/python3 bench/torch_gan.py layers [--threads T] [--reps N] [--warmup W]
    /usr/bin/python3 bench/torch_gan.py serve  [--generator upsample|convt] [--step S]
                                               [--threads T]
    /usr/bin/python3 bench/torch_gan.py serve-layers [--threads T]
    /usr/bin/python3 bench/torch_gan.py tiny   [--threads T]
    /usr/bin/python3 bench/torch_gan.py info   [--threads T]
    /usr/bin/python3 bench/torch_gan.py check  [--generator upsample|convt]

The models are examples/mnist_gan/models.c's tutorial recipe layer for layer, at the same
nn.Sequential indices (so a layer key such as "G_upsample.8" names the same layer on both
sides), and the iteration is examples/mnist_gan/core/step.c's gan_step statement by statement:
three Adams (lr 2e-4, beta1 0.9, beta2 0.999, eps 1e-8), gradients cleared by setting them to
None (tg_module_zero_grad frees them). Batch 128; the real batches are uniform in [-1, 1] (no
dataset needed). --step S (as bench_gan's; default accumulate, so that older tables and runs
stay comparable; compare.py always names the step):
  accumulate          the tutorial's loop ported line by line: gradients accumulate until the
                      loop's clear calls, nothing detached, one z for the fake-D and G steps;
  tutorial            Paddle 1.8's semantics as PyTorch code writes them: D's and G's gradients
                      zeroed (set to None) before every backward, nothing detached (so
                      loss_fake's backward runs on through G, whose gradient the G step's
                      zeroing then discards), one z;
  tutorial-detached   the same with G(z) detached for the fake-D loss, as tapegrad's tutorial
                      step does (bit-identical results; a PyTorch user porting Paddle 1.8's
                      semantics would not know that backward into G is dead): what PyTorch
                      would gain from the same insight (and D's parameters switched off for
                      the G update, whose gradient in D is discarded, as tapegrad's step does);
  clean               the textbook step: zeroed before every backward, G(z) detached for D, a
                      fresh z for G, D's parameters switched off for the G update (as
                      tapegrad's, and the usual PyTorch idiom: requires_grad_(False)).
The step logic is examples/mnist_gan/conformance/make_fixture.py's step(), which the
conformance tests check against gan_step, copied here rather than imported (that module also
builds the fixtures' small models and reads MNIST); the optimizer stays torch.optim.Adam (not
the conformance's PaddleAdam, a Python loop over the parameters no PyTorch user would time).

step: one JSON line: median seconds per iteration (wall, and CPU time of the process), peak RSS
(resource.getrusage ru_maxrss) and the RSS before the first iteration.
layers: forward + backward of each layer alone at its real input shape (y.backward(dy) with a
random dy); one JSON line per layer.
tiny: the recording overhead of a tiny op, as bench_core measures it: a 1-element add with
requires_grad and its backward, one op per graph and a chain of 100.
info: torch's version, threads and BLAS (OpenBLAS's kernels, through ctypes), oneDNN.
check: every --step against make_fixture.py's step() (the copy below must not drift from it):
3 iterations each from one state and the same z; exits 1 unless the losses and the models'
state dicts are equal (tutorial-detached against step()'s tutorial: detaching changes nothing).
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

STEPS = ("accumulate", "tutorial", "tutorial-detached", "clean")


class StepBench:
    def __init__(self, gen, mode):
        assert mode in STEPS
        self.mode = mode
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
        """step.c's gan_step in self.mode (make_fixture.py's step(), copied; see the top)."""
        G, D, mode = self.G, self.D, self.mode
        real = self.real[self.it % N_REAL]
        self.it += 1

        def backward(loss):
            # tutorial*: Paddle 1.8's backward overwrites every gradient it reaches, which is
            # zeroing them all before it. clean: the textbook's clearing before every backward.
            # accumulate: gradients add up until the loop's own clear calls.
            if mode != "accumulate":
                D.zero_grad(set_to_none=True)
                G.zero_grad(set_to_none=True)
            loss.backward()

        loss_real = self.bce(D(real), 1.0)
        backward(loss_real)
        self.opt_d_real.step()
        D.zero_grad(set_to_none=True)  # d.clear_gradients()

        z = torch.randn(BATCH, NZ)
        fake = G(z)
        if mode in ("clean", "tutorial-detached"):
            fake = fake.detach()
        loss_fake = self.bce(D(fake), 0.0)
        backward(loss_fake)
        self.opt_d_fake.step()
        D.zero_grad(set_to_none=True)  # d.clear_gradients()
        if mode == "clean":
            z = torch.randn(BATCH, NZ)

        # tapegrad's tutorial and clean steps switch D's parameters off for the G update,
        # whose gradient in D is discarded unread (step.c's params_freeze): here the PyTorch
        # idiom for the same saving where this side mirrors tapegrad's insights (clean, and
        # tutorial-detached), so that both run the same work; tutorial stays the plain port.
        freeze = mode in ("clean", "tutorial-detached")
        if freeze:
            D.requires_grad_(False)
        loss_g = self.bce(D(G(z)), 1.0)
        backward(loss_g)
        if freeze:
            D.requires_grad_(True)
        self.opt_g.step()
        G.zero_grad(set_to_none=True)  # g.clear_gradients()
        return loss_real.item(), loss_fake.item(), loss_g.item()

    def timed_step(self):
        """Wall and CPU seconds (every thread, as bench_gan.c's CLOCK_PROCESS_CPUTIME_ID)."""
        c0, t0 = time.process_time(), time.perf_counter()
        self.step()
        return time.perf_counter() - t0, time.process_time() - c0


def run_step(args):
    b = StepBench(args.generator, args.step)
    rss0 = rss_now_kb()
    for _ in range(args.warmup):
        b.timed_step()
    wall, cpu = [], []
    for _ in range(args.iters):
        w, c = b.timed_step()
        wall.append(w)
        cpu.append(c)
    print(json.dumps({"side": "torch", "generator": args.generator, "step": args.step,
                      "threads": args.threads,
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


# ---- check: the copied step against make_fixture.step -------------------------------------

def run_check(args):
    import copy
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                    "examples", "mnist_gan", "conformance"))
    import make_fixture
    ok = True
    for mode in STEPS:
        ours = StepBench(args.generator, mode)
        ref = copy.deepcopy(ours)  # the optimizers come along, over the copied parameters
        ref_mode = "tutorial" if mode == "tutorial-detached" else mode
        for it in range(3):
            rng = torch.get_rng_state()
            got = ours.step()
            torch.set_rng_state(rng)  # the same z (and z2) as step drew
            z = torch.randn(BATCH, NZ)
            z2 = torch.randn(BATCH, NZ) if mode == "clean" else None
            want = make_fixture.step(ref.G, ref.D, (ref.opt_d_real, ref.opt_d_fake, ref.opt_g),
                                     ref_mode, ref.real[it % N_REAL], z, z2)
        same = got == want and all(
            torch.equal(a, b) for m, n in ((ours.G, ref.G), (ours.D, ref.D))
            for a, b in zip(m.state_dict().values(), n.state_dict().values()))
        print("%-18s against make_fixture.step(%s): %s" % (mode, ref_mode,
                                                             "same" if same else "DIFFERENT"))
        ok = ok and same
    sys.exit(0 if ok else 1)


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
        b = StepBench(args.generator, args.step)
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
    ap.add_argument("mode", choices=("step", "layers", "serve", "serve-layers", "tiny", "info",
                                     "check"))
    ap.add_argument("--generator", choices=("upsample", "convt"), default="upsample")
    ap.add_argument("--step", choices=STEPS, default="accumulate")
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
    elif args.mode == "check":
        run_check(args)
    else:
        serve(args, args.mode == "serve-layers")


if __name__ == "__main__":
    main()
