#!/usr/bin/python3
"""tapegrad against PyTorch on the mnist_gan iteration, interleaved; run by bench/compare.sh.

Starts bench_gan and bench/torch_gan.py as servers (their "serve" modes) and asks them for one
measurement at a time, alternating between the two (and which one goes first), so that what
the machine's other load does hits both sides alike. Prints one table (row, tapegrad, PyTorch,
PyTorch/tapegrad: above 1 means tapegrad is faster or smaller) and writes it as JSON and as a
markdown table with the machine it ran on.

Rows: seconds per training iteration (median, wall and CPU time) for each step (--steps) and
both generators at each thread count; peak RSS and its growth during training; forward+backward
of each layer alone at 1 thread; the recording overhead of a tiny op (bench_core's and
torch_gan.py's).

Steps (--steps, default tutorial,clean; bench/README.md, "Which step is timed"): each names the
step both sides run, bench_gan's --step and torch_gan.py's --step, the same except for
tutorial-detached: tapegrad's tutorial step (which detaches G(z) for the fake-D loss) against
PyTorch's tutorial step with the same detach. bench_gan is not given --step for accumulate, its
default, so that builds older than the option (compare.sh --build) can still be timed on it.

Standard library only: PyTorch is imported by torch_gan.py, never here.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TORCH_SCRIPT = os.path.join(HERE, "torch_gan.py")
PYTHON = "/usr/bin/python3"  # Debian's, which has torch (another python3 may come first)
GENERATORS = ("upsample", "convt")
# --steps name -> (bench_gan's --step, torch_gan.py's --step)
STEPS = {"tutorial": ("tutorial", "tutorial"), "clean": ("clean", "clean"),
         "accumulate": ("accumulate", "accumulate"),
         "tutorial-detached": ("tutorial", "tutorial-detached")}
# The machine counts as quiet below this 1-minute load average (2 cores): above it, wall times
# (2-thread ones above all: OpenMP threads spin-wait for descheduled peers) mean little.
QUIET_LOAD = 3.0


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def load1():
    return os.getloadavg()[0]


class Server:
    """One side's serve process: a request line in, one answer line out."""

    def __init__(self, side, argv, threads):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        self.side = side
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  env=env, text=True, bufsize=1)
        head = self.p.stdout.readline().split()
        if not head or head[0] != "ready":
            raise SystemExit("%s: %s did not start (%r)" % (side, " ".join(argv), head))
        self.head = head
        self.lines = []
        if len(head) == 3 and head[2] == "layers":
            self.lines = [self.p.stdout.readline().rstrip("\n") for _ in range(int(head[1]))]

    def ask(self, request):
        self.p.stdin.write(request + "\n")
        self.p.stdin.flush()
        answer = self.p.stdout.readline()
        if not answer or answer.startswith("error"):
            raise SystemExit("%s: request %r failed: %r" % (self.side, request, answer))
        return answer.split()

    def close(self):
        try:
            self.p.stdin.write("quit\n")
            self.p.stdin.close()
        except BrokenPipeError:
            pass
        self.p.wait(timeout=60)


def servers(args, mode, threads, generator=None, step=None, precision="fp32"):
    tg = [args.bench_gan, mode, "--threads", str(threads)]
    if precision != "fp32":  # tapegrad's GEMM inputs; PyTorch runs FP32 throughout
        tg += ["--precision", precision]
    th = [PYTHON, TORCH_SCRIPT, mode, "--threads", str(threads)]
    if generator:
        tg += ["--generator", generator]
        th += ["--generator", generator]
    if step:
        tg_step, torch_step = STEPS[step]
        if tg_step != "accumulate":  # bench_gan's default: older builds have no --step
            tg += ["--step", tg_step]
        th += ["--step", torch_step]
    return Server("tapegrad", tg, threads), Server("torch", th, threads)


def steps(args, step, generator, thread_counts, precision="fp32"):
    """Iterations of both sides at every thread count, interleaved: one server per side and
    count, each asked for one step in turn, the order rotating every iteration. Medians and
    memory, one result per thread count. The 1- and 2-thread rows, and so the thread scaling,
    come from the same minutes: on a shared host each vCPU's speed drifts by up to a third for
    seconds at a time (bench/README.md, fifteenth session), and counts timed minutes apart
    compared different machines."""
    srv = []
    for threads in thread_counts:
        srv += [(threads, s) for s in servers(args, "serve", threads, generator, step, precision)]
    res = {(t, s.side): {"rss_start_kb": int(s.head[2]), "wall": [], "cpu": []} for t, s in srv}
    loads = [load1()]
    for i in range(args.warmup + args.iters):
        k = i % len(srv)
        this = {}  # this iteration's wall time of each server (warm-up ones too, for the log)
        for t, s in srv[k:] + srv[:k]:
            wall, cpu = (float(v) for v in s.ask("step"))
            this[t, s.side] = wall
            if i >= args.warmup:
                res[t, s.side]["wall"].append(wall)
                res[t, s.side]["cpu"].append(cpu)
        loads.append(load1())
        log("  %s step, %s G, %s, iteration %d/%d: %s (load %.1f)" % (
            step, generator, precision, i + 1, args.warmup + args.iters,
            ", ".join("%s %dt %.3f s" % (side, t, w) for (t, side), w in this.items()),
            loads[-1]))
    for t, s in srv:
        peak, now = (int(v) for v in s.ask("rss"))
        r = res[t, s.side]
        r.update(peak_rss_kb=peak, rss_end_kb=now,
                 sec_per_iter=statistics.median(r["wall"]),
                 cpu_sec_per_iter=statistics.median(r["cpu"]))
        s.close()
    return [{"step": step, "generator": generator, "threads": t, "precision": precision,
             "iters": args.iters, "warmup": args.warmup, "interleaved": list(thread_counts),
             "load_min": min(loads), "load_max": max(loads),
             "tapegrad": res[t, "tapegrad"], "torch": res[t, "torch"]} for t in thread_counts]


def layers(args, threads):
    """Each layer's forward+backward, both sides interleaved in chunks of reps."""
    a, b = servers(args, "serve-layers", threads)
    keys_a = [l.split("\t") for l in a.lines]
    keys_b = dict(l.split("\t") for l in b.lines)
    out = []
    chunks = max(1, min(4, args.reps))
    for k, (key, label) in enumerate(keys_a):
        if keys_b.get(key) != label:
            raise SystemExit("layer %s differs: tapegrad %r, torch %r" % (key, label,
                                                                          keys_b.get(key)))
        times = {"tapegrad": ([], []), "torch": ([], [])}
        loads = [load1()]
        for c in range(chunks):
            n = args.reps // chunks + (1 if c < args.reps % chunks else 0)
            for s in ((a, b) if c % 2 == 0 else (b, a)):
                for pair in s.ask("layer %d %d %d" % (k, n, 1 if c == 0 else 0)):
                    w, u = pair.split(",")
                    times[s.side][0].append(float(w))
                    times[s.side][1].append(float(u))
            loads.append(load1())
        row = {"key": key, "label": label, "threads": threads, "reps": args.reps,
               "load_max": max(loads)}
        for side, (w, u) in times.items():
            row[side] = {"sec": statistics.median(w), "cpu_sec": statistics.median(u)}
        log("  layer %-14s %-58s tapegrad %8.2f ms, torch %8.2f ms (cpu)" % (
            key, label, 1e3 * row["tapegrad"]["cpu_sec"], 1e3 * row["torch"]["cpu_sec"]))
        out.append(row)
    a.close()
    b.close()
    return out


def tiny(args):
    """bench_core's tiny-op numbers and torch_gan.py's, alternately, args.tiny_runs times each;
    the median run."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    tg, th = [], []
    for _ in range(args.tiny_runs):
        out = subprocess.run([args.bench_core, "--threads", "1", "--json"], env=env, text=True,
                             capture_output=True, check=True).stdout
        tg.append(json.loads(out))
        out = subprocess.run([PYTHON, TORCH_SCRIPT, "tiny", "--threads", "1"], env=env,
                             text=True, capture_output=True, check=True).stdout
        th.append(json.loads(out))
    pick = lambda runs, k: statistics.median(r[k] for r in runs)
    return {k: {"tapegrad": pick(tg, k), "torch": pick(th, k)}
            for k in ("tiny_total_ns", "tiny_chain_total_ns")}


def machine(args):
    info = {"python": platform.python_version(), "uname": " ".join(platform.uname()[:3])}
    try:
        lscpu = subprocess.run(["lscpu"], text=True, capture_output=True).stdout
        for line in lscpu.splitlines():
            k, _, v = line.partition(":")
            if k.strip() in ("Model name", "CPU(s)", "Core(s) per socket", "Thread(s) per core",
                             "Socket(s)"):
                info[k.strip()] = v.strip()
        flags = next((l for l in lscpu.splitlines() if l.startswith("Flags")), "")
        info["avx512f"] = " avx512f" in flags
    except OSError:
        pass
    info["nproc"] = os.cpu_count()
    env = dict(os.environ, OMP_NUM_THREADS="2")
    info["tapegrad"] = json.loads(subprocess.run([args.bench_gan, "info"], env=env, text=True,
                                                 capture_output=True, check=True).stdout)
    info["torch"] = json.loads(subprocess.run([PYTHON, TORCH_SCRIPT, "info", "--threads", "2"],
                                              env=env, text=True, capture_output=True,
                                              check=True).stdout)
    info["OMP_WAIT_POLICY"] = os.environ.get("OMP_WAIT_POLICY", "")
    info["OPENBLAS_CORETYPE"] = os.environ.get("OPENBLAS_CORETYPE", "")
    info["OPENBLAS_L2_SIZE"] = os.environ.get("OPENBLAS_L2_SIZE", "")
    try:
        root = os.path.dirname(HERE)
        rev = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], text=True,
                             capture_output=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               text=True, capture_output=True).stdout.strip()
        info["git"] = rev + ("+uncommitted changes" if dirty else "")
    except OSError:
        pass
    return info


# ---- the table -------------------------------------------------------------------------------

def precision_note(s):
    """"" for FP32 GEMMs (and results from before the precisions), else the row's note."""
    p = s.get("precision", "fp32")
    return "" if p == "fp32" else ", tapegrad's GEMMs in %s (PyTorch FP32)" % p


def table_rows(res):
    """(row, tapegrad, torch, unit) for every row, with the numbers in the unit shown."""
    rows = []
    for s in res["steps"]:
        # results written before the steps were named timed the accumulate step
        t = "%s step, %s G, %d thread%s%s" % (s.get("step", "accumulate"), s["generator"],
                                              s["threads"], "s" if s["threads"] > 1 else "",
                                              precision_note(s))
        note = "" if s["load_max"] < QUIET_LOAD else " [load %.0f-%.0f]" % (s["load_min"],
                                                                           s["load_max"])
        rows.append(("iteration, %s: wall s%s" % (t, note), s["tapegrad"]["sec_per_iter"],
                     s["torch"]["sec_per_iter"], "s"))
        rows.append(("iteration, %s: CPU s (all threads)" % t, s["tapegrad"]["cpu_sec_per_iter"],
                     s["torch"]["cpu_sec_per_iter"], "s"))
    kinds = list(dict.fromkeys((s.get("step", "accumulate"), precision_note(s))
                               for s in res["steps"]))
    for step, note in kinds:
        for g in GENERATORS:
            runs = [s for s in res["steps"] if s["generator"] == g and
                    (s.get("step", "accumulate"), precision_note(s)) == (step, note)]
            if not runs:
                continue
            peak = lambda side: max(r[side]["peak_rss_kb"] for r in runs) / 1024
            grow = lambda side: max(r[side]["peak_rss_kb"] - r[side]["rss_start_kb"]
                                    for r in runs) / 1024
            rows.append(("peak RSS, %s step, %s G%s: MB" % (step, g, note), peak("tapegrad"),
                         peak("torch"), "MB"))
            rows.append(("peak RSS growth from the first iteration on, %s step, %s G%s: MB"
                         % (step, g, note), grow("tapegrad"), grow("torch"), "MB"))
    for l in res["layers"]:
        metric = "sec" if l["load_max"] < QUIET_LOAD else "cpu_sec"
        rows.append(("layer %s %s, %d thread: %s ms" % (
            l["key"], l["label"], l["threads"], "wall" if metric == "sec" else "CPU"),
            1e3 * l["tapegrad"][metric], 1e3 * l["torch"][metric], "ms"))
    names = {"tiny_total_ns": "tiny op: 1-element add + backward, one per graph: ns",
             "tiny_chain_total_ns": "tiny op: chain of 100 adds + backward, per add: ns"}
    for k, v in res.get("tiny", {}).items():
        rows.append((names[k], v["tapegrad"], v["torch"], "ns"))
    return rows


def scaling_rows(res):
    """(row, tapegrad, torch) for every step whose thread counts ran interleaved: the wall time
    at the lowest count over that at each other (the speed-up), and the CPU time at each other
    over that at the lowest (1.00: the added threads waste nothing)."""
    rows = []
    for s in res["steps"]:
        counts = s.get("interleaved") or []
        if len(counts) < 2 or s["threads"] == min(counts):
            continue
        base = next(b for b in res["steps"] if b.get("interleaved") == counts and
                    b["threads"] == min(counts) and
                    (b["step"], b["generator"], b["precision"]) ==
                    (s["step"], s["generator"], s["precision"]))
        t = "%s step, %s G%s" % (s["step"], s["generator"], precision_note(s))
        pair = "%d -> %d threads" % (base["threads"], s["threads"])
        rows.append(("speed-up %s, %s: wall at %d / wall at %d" % (
            pair, t, base["threads"], s["threads"]),
            base["tapegrad"]["sec_per_iter"] / s["tapegrad"]["sec_per_iter"],
            base["torch"]["sec_per_iter"] / s["torch"]["sec_per_iter"]))
        rows.append(("CPU time %s, %s: CPU at %d / CPU at %d" % (
            pair, t, s["threads"], base["threads"]),
            s["tapegrad"]["cpu_sec_per_iter"] / base["tapegrad"]["cpu_sec_per_iter"],
            s["torch"]["cpu_sec_per_iter"] / base["torch"]["cpu_sec_per_iter"]))
        # The same two ratios taken iteration by iteration, then their median. Each iteration
        # asked every count once within about a second, so a ratio of one iteration's pair
        # cancels the host's drift (20% over seconds on some hosts), which a ratio of the two
        # columns' medians, taken from different iterations, does not.
        rows.append(("speed-up %s, %s: median over iterations of the same iteration's wall at "
                     "%d / wall at %d" % (pair, t, base["threads"], s["threads"]),
                     paired_median(base, s, "tapegrad", "wall", False),
                     paired_median(base, s, "torch", "wall", False)))
        rows.append(("CPU time %s, %s: median over iterations of the same iteration's CPU at "
                     "%d / CPU at %d" % (pair, t, s["threads"], base["threads"]),
                     paired_median(base, s, "tapegrad", "cpu", True),
                     paired_median(base, s, "torch", "cpu", True)))
    return rows


def paired_median(base, other, side, what, other_over_base):
    """Median over the iterations of base's time over other's in the same iteration (or other's
    over base's)."""
    pairs = zip(base[side][what], other[side][what])
    return statistics.median(o / b if other_over_base else b / o for b, o in pairs)


def fmt(v):
    return "%.4g" % v if v < 1000 else "%.0f" % v


def print_table(rows):
    w = max(len(r[0]) for r in rows)
    print("%-*s %12s %12s %10s" % (w, "row", "tapegrad", "PyTorch", "PT/tg"))
    for name, a, b, _ in rows:
        print("%-*s %12s %12s %10.2f" % (w, name, fmt(a), fmt(b), b / a if a else float("nan")))


def markdown(res, rows):
    m = res["machine"]
    tgi, thi = m["tapegrad"], m["torch"]
    ob = thi.get("openblas") or {}
    lines = [
        "# tapegrad against PyTorch: the mnist_gan training iteration",
        "",
        "Made by `bench/compare.sh` on %s (git %s). Ratio = PyTorch / tapegrad: above 1, "
        "tapegrad is faster (or smaller)." % (res["date"], m.get("git", "?")),
        "",
        "- CPU: %s, %s CPUs (%s cores per socket, %s threads per core), AVX-512: %s" % (
            m.get("Model name", "?"), m.get("CPU(s)", m["nproc"]),
            m.get("Core(s) per socket", "?"), m.get("Thread(s) per core", "?"),
            "yes" if m.get("avx512f") else "no"),
        "- tapegrad: `tg_blas_info()` = %s" % tgi["blas"],
        "- PyTorch %s: %s; OpenBLAS as loaded by torch: %s, %s kernels; oneDNN available: %s; "
        "%s" % (thi["torch"], thi["parallel_info"], ob.get("flavour", "?"),
                ob.get("corename", "?"), thi["mkldnn"], thi.get("cpu_capability", "")),
        "- OPENBLAS_CORETYPE=%s, OPENBLAS_L2_SIZE=%s in the environment (the machine's "
        "setting; both sides ran with it); OMP_WAIT_POLICY=%s" % (
            m["OPENBLAS_CORETYPE"] or "(unset)", m["OPENBLAS_L2_SIZE"] or "(unset)",
            m.get("OMP_WAIT_POLICY") or "(unset: libgomp spins, then sleeps)"),
        "- 1-minute load average during the run: %.1f to %.1f (2 cores; other jobs were "
        "running). %s" % (res["load_min"], res["load_max"], res["load_note"]),
        "- Iterations: tutorial recipe, batch 128, Adam lr 2e-4 beta1 0.9, the steps named in "
        "each row (bench/README.md, \"Which step is timed\"): %s; median of %d after %d "
        "warm-up, both sides and every thread count taking turns (one process each); layers: "
        "median of %d forward+backward passes, both sides interleaved." % (
            res["args"].get("steps", "accumulate"), res["args"]["iters"],
            res["args"]["warmup"], res["args"]["reps"]),
        "",
        "| row | tapegrad | PyTorch | PyTorch / tapegrad |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, a, b, _ in rows:
        lines.append("| %s | %s | %s | %.2f |" % (name, fmt(a), fmt(b),
                                                 b / a if a else float("nan")))
    scaling = [(r["row"], r["tapegrad"], r["torch"]) for r in res["scaling"]]
    if scaling:
        lines += ["", "Thread scaling, from the same interleaved iterations as the rows above "
                  "(each side's own ratio; the counts took turns, so host drift hits both): "
                  "first the ratio of the two columns' medians, then the median of each "
                  "iteration's own ratio, which also cancels drift between iterations:", "",
                  "| row | tapegrad | PyTorch |", "| --- | ---: | ---: |"]
        lines += ["| %s | %.2f | %.2f |" % r for r in scaling]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench-gan", required=True)
    ap.add_argument("--bench-core", required=True)
    ap.add_argument("--threads", default="1,2", help="thread counts for the iterations")
    ap.add_argument("--layer-threads", default="1", help="thread counts for the layers")
    ap.add_argument("--generators", default="upsample,convt")
    ap.add_argument("--steps", default="tutorial,clean",
                    help="steps to time, in order: tutorial, clean, accumulate, "
                    "tutorial-detached (PyTorch's tutorial step detaching G(z) as tapegrad's)")
    ap.add_argument("--precisions", default="fp32",
                    help="tapegrad's GEMM input precisions, each a set of iteration rows: fp32, "
                    "bf16 (bench_gan --precision; PyTorch runs FP32 in every row)")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--tiny-runs", type=int, default=3)
    ap.add_argument("--no-layers", action="store_true")
    ap.add_argument("--no-tiny", action="store_true")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--md", help="write the markdown table here")
    args = ap.parse_args()
    for step in args.steps.split(","):
        if step not in STEPS:
            ap.error("--steps: unknown step %r (known: %s)" % (step, ", ".join(STEPS)))

    t0 = time.time()
    res = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "args": vars(args), "steps": [],
           "layers": []}
    res["machine"] = machine(args)
    loads = [load1()]
    log("tapegrad: %s" % res["machine"]["tapegrad"]["blas"])
    ob = res["machine"]["torch"].get("openblas") or {}
    log("torch %s: OpenBLAS %s kernels, %s" % (res["machine"]["torch"]["torch"],
                                               ob.get("corename", "?"), ob.get("flavour", "?")))
    counts = [int(t) for t in args.threads.split(",")]
    for precision in args.precisions.split(","):
        for step in args.steps.split(","):
            for g in args.generators.split(","):
                log("iterations: %s step, %s G, %s thread(s) interleaved, %s" % (
                    step, g, args.threads, precision))
                res["steps"] += steps(args, step, g, counts, precision)
                loads += [res["steps"][-1]["load_min"], res["steps"][-1]["load_max"]]
    if not args.no_layers:
        for threads in (int(t) for t in args.layer_threads.split(",")):
            log("layers, %d thread(s)" % threads)
            res["layers"] += layers(args, threads)
            loads += [l["load_max"] for l in res["layers"]]
    if not args.no_tiny:
        log("tiny op")
        res["tiny"] = tiny(args)
    loads.append(load1())
    res["load_min"], res["load_max"] = min(loads), max(loads)
    res["load_note"] = (
        "Quiet enough: wall times are meaningful." if res["load_max"] < QUIET_LOAD else
        "Wall times are noisy (2-thread ones most: OpenMP threads spin-wait for descheduled "
        "peers); CPU times, 1-thread ones above all, are the comparable numbers. Layer rows "
        "measured under load show CPU time.")
    res["seconds"] = round(time.time() - t0, 1)
    rows = table_rows(res)
    res["table"] = [{"row": r[0], "tapegrad": r[1], "torch": r[2], "unit": r[3],
                     "ratio_torch_over_tapegrad": (r[2] / r[1]) if r[1] else None}
                    for r in rows]
    print_table(rows)
    res["scaling"] = [{"row": r[0], "tapegrad": r[1], "torch": r[2]} for r in scaling_rows(res)]
    for r in res["scaling"]:
        print("%s: tapegrad %.2f, PyTorch %.2f" % (r["row"], r["tapegrad"], r["torch"]))
    print("load average %.1f .. %.1f; %s" % (res["load_min"], res["load_max"], res["load_note"]))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
            f.write("\n")
    if args.md:
        os.makedirs(os.path.dirname(os.path.abspath(args.md)), exist_ok=True)
        with open(args.md, "w") as f:
            f.write(markdown(res, rows))


if __name__ == "__main__":
    main()
