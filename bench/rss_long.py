#!/usr/bin/env python3
"""Resident memory of a long mnist_gan training run, and the live counters at its exit.

Runs `mnist_gan train --iters N` into a scratch folder, polls /proc/PID/status (VmRSS, RssAnon,
VmHWM) while OUT/losses.csv grows, and reports RSS at iteration A, at every tenth of the run and
at the last iteration, the peak, RSS(N)/RSS(A) against the 5% no-growth criterion of issue 7,
and the library's live tensors/nodes/bytes at exit (mnist_gan's TG_REPORT_LIVE=1 line).

    bench/rss_long.py [--bin PATH] [--iters 2000] [--at 200] [--strict] [train args...]
    nice bench/rss_long.py --recipe dcgan --threads 1

Arguments it does not know go to `mnist_gan train` (--recipe, --width-div, --threads, ...).
A report, not a test: exit 0 whatever the figures (1 with --strict when a criterion fails),
and the program's own exit status when the run itself fails. Python 3 standard library only.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GROWTH_LIMIT = 1.05  # issue 7: RSS after 2,000 iterations within 5% of that after 200


def proc_status(pid):
    """VmRSS, RssAnon and VmHWM in KiB, or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            text = f.read()
    except OSError:
        return None
    kb = {}
    for key in ("VmRSS", "RssAnon", "VmHWM"):
        m = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
        kb[key] = int(m.group(1)) if m else 0
    # A zombie (exited, not yet reaped) has no memory lines left: not a sample.
    return kb if kb["VmRSS"] else None


class RowCounter:
    """Counts the data rows of a CSV that another process appends to, reading only what is new."""

    def __init__(self, path):
        self.path, self.offset, self.newlines = path, 0, 0

    def rows(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except OSError:
            return 0
        self.offset += len(chunk)
        self.newlines += chunk.count(b"\n")
        return max(self.newlines - 1, 0)  # the header line


def main():
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Unknown arguments are passed to `mnist_gan train`.")
    ap.add_argument("--bin", default=os.path.join(ROOT, "build/examples/mnist_gan/mnist_gan"),
                    help="the mnist_gan program (default build/examples/mnist_gan/mnist_gan)")
    ap.add_argument("--iters", type=int, default=2000, help="iterations N (default 2000)")
    ap.add_argument("--at", type=int, default=200, help="the reference iteration A (default 200)")
    ap.add_argument("--points", type=int, default=10,
                    help="intermediate points: every N/points iterations (default 10)")
    ap.add_argument("--interval", type=float, default=0.05, help="polling period, s (0.05)")
    ap.add_argument("--out", help="the run's folder (default: a temporary one, removed after)")
    ap.add_argument("--strict", action="store_true",
                    help="exit 1 when RSS grew more than 5%% or anything is alive at exit")
    args, train_args = ap.parse_known_args()
    if not 0 < args.at < args.iters:
        ap.error(f"--at {args.at} must be between 0 and --iters {args.iters}")
    if any(a in ("--out", "--iters", "--resume", "--epochs") for a in train_args):
        ap.error("--out and --iters are the script's own; --resume/--epochs make no sense here")

    out = args.out or tempfile.mkdtemp(prefix="rss_long.")
    os.makedirs(out, exist_ok=True)
    cmd = [args.bin, "train", "--iters", str(args.iters), "--out", out] + train_args
    marks = sorted({args.at, args.iters} |
                   {args.iters * i // args.points for i in range(1, args.points)})
    env = dict(os.environ, TG_REPORT_LIVE="1")
    print("$ TG_REPORT_LIVE=1 " + " ".join(cmd), flush=True)

    counter = RowCounter(os.path.join(out, "losses.csv"))
    seen = {}  # mark -> (rows when sampled, status), the first sample at or after the mark
    peak, last = None, None
    with open(os.path.join(out, "stdout.log"), "wb") as so, \
            open(os.path.join(out, "stderr.log"), "wb") as se:
        # cwd: the program's default data folder (data-cache/mnist) is relative to the repo.
        p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=so, stderr=se)
        t0 = time.monotonic()
        while p.poll() is None:
            st = proc_status(p.pid)
            rows = counter.rows()
            if st:
                last = (rows, st)
                peak = st["VmHWM"]
                for m in marks:
                    if rows >= m and m not in seen:
                        seen[m] = (rows, st)
            time.sleep(args.interval)
        wall = time.monotonic() - t0
    rc = p.returncode
    with open(os.path.join(out, "stderr.log"), errors="replace") as f:
        stderr = f.read()
    sys.stdout.flush()
    sys.stderr.write(stderr)  # mnist_gan's own messages, the at-exit line among them
    sys.stderr.flush()

    def mib(kb):
        return kb / 1024.0

    print(f"\n{'iteration':>9}  {'VmRSS MiB':>9}  {'RssAnon MiB':>11}  {'VmHWM MiB':>9}")
    for m in marks:
        if m in seen:
            rows, st = seen[m]
            note = f"  (sampled at row {rows})" if rows != m else ""
            print(f"{m:>9}  {mib(st['VmRSS']):9.1f}  {mib(st['RssAnon']):11.1f}  "
                  f"{mib(st['VmHWM']):9.1f}{note}")
        else:
            print(f"{m:>9}  {'-':>9}  {'-':>11}  {'-':>9}  (not reached)")
    if last:
        rows, st = last
        print(f"{'last':>9}  {mib(st['VmRSS']):9.1f}  {mib(st['RssAnon']):11.1f}  "
              f"{mib(st['VmHWM']):9.1f}  (final sample before exit, row {rows})")

    # Seconds per iteration from the program's own clock (losses.csv's last column).
    secs = {}
    try:
        with open(os.path.join(out, "losses.csv")) as f:
            next(f)
            for line in f:
                c = line.strip().split(",")
                secs[int(c[0])] = float(c[6])
    except (OSError, ValueError, IndexError, StopIteration):
        pass
    if args.at in secs and args.iters in secs:
        rate = (secs[args.iters] - secs[args.at]) / (args.iters - args.at)
        print(f"\n{rate:.3f} s/iteration from {args.at} to {args.iters}; wall {wall:.0f} s")

    ok = True
    if args.at in seen and args.iters in seen:
        a, n = seen[args.at][1]["VmRSS"], seen[args.iters][1]["VmRSS"]
        ratio = n / a
        verdict = "PASS" if ratio <= GROWTH_LIMIT else "FAIL"
        ok &= verdict == "PASS"
        print(f"RSS({args.iters})/RSS({args.at}) = {mib(n):.1f}/{mib(a):.1f} MiB = {ratio:.4f}"
              f"  {verdict} (no growth: at most {GROWTH_LIMIT:.2f}); peak VmHWM {mib(peak):.1f}"
              " MiB")
    else:
        ok = False
        print("RSS: FAIL (the run did not reach both iterations)")
    m = re.search(r"at exit: (\d+) live tensors, (\d+) live nodes, (\d+) live bytes", stderr)
    if m:
        zero = all(int(g) == 0 for g in m.groups())
        ok &= zero
        print(f"live at exit: {m.group(1)} tensors, {m.group(2)} nodes, {m.group(3)} bytes  "
              f"{'PASS' if zero else 'FAIL'}")
    else:
        ok = False
        print("live at exit: FAIL (no 'at exit' line: is the program older than TG_REPORT_LIVE?)")

    if not args.out and rc == 0:
        shutil.rmtree(out, ignore_errors=True)
    elif rc != 0:
        print(f"mnist_gan exited {rc}; its output is in {out}")
    if rc != 0:
        return rc
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
