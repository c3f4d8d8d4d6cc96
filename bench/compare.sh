#!/bin/bash
# compare.sh — tapegrad against PyTorch on the mnist_gan training iteration, in one command.
#
#   bench/compare.sh [--build DIR] [--quick] [--out PREFIX] [--steps LIST] [--precisions LIST]
#                    [--coretype NAME] [--passive] [--models ROUNDS | --wgan-gp ROUNDS]
#                    [-- compare.py options]
#
# Builds bench_gan and bench_core (in DIR if it is a build directory already, else with
# scripts/tg build; default DIR: $TG_BUILD or build), then runs bench/compare.py: the iteration
# with each step of LIST, tapegrad and torch at 1 and at 2 threads taking turns (one process each,
# the order rotating, so the thread scaling compares the same minutes), one table printed (each
# iteration row names its step, thread scaling after it), PREFIX.json and PREFIX.md written
# (default bench/results/latest).
#
#   --steps LIST      the steps both sides run, in order (default tutorial,clean): tutorial
#                     (Paddle 1.8's, mnist_gan's default), clean (textbook), accumulate (the
#                     loop ported line by line), tutorial-detached (PyTorch's tutorial step
#                     detaching G(z) for the fake-D loss, as tapegrad's does); bench/README.md
#   --precisions LIST tapegrad's GEMM input precisions, each a set of iteration rows (default
#                     fp32): fp32, bf16 (tg_set_matmul_precision; PyTorch runs FP32 in every
#                     row; where the CPU lacks AVX512_BF16 the bf16 rows run FP32, as the table's
#                     machine line says)
#   --quick           5 iterations after 1 warm-up, 5 layer passes: a check that it all runs;
#                     writes nothing unless --out is given
#   --out PREFIX      where the JSON and markdown go
#   --coretype NAME   run everything a second time with OPENBLAS_CORETYPE=NAME for both sides
#                     (native: with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset, so OpenBLAS
#                     picks its own kernels), written to PREFIX-NAME.*
#   --passive         then the iterations again with OMP_WAIT_POLICY=passive for both sides
#                     (PREFIX-passive.*): on a machine shared with other jobs, libgomp's default
#                     spin-waiting makes 2-thread runs of both sides several times slower
#   --models ROUNDS   instead of the GAN: the GRU (bench_gru, torch_gru.py) and the transformer
#                     (bench_transformer, torch_transformer.py) benches, ROUNDS rounds of
#                     tapegrad and PyTorch in turn (which goes first alternates) at 1 and 2
#                     threads (OMP_WAIT_POLICY=passive with --passive); one table of the min
#                     over rounds of each run's min time, with the load; the JSON lines go to
#                     PREFIX-models.jsonl when --out is given
#   --wgan-gp ROUNDS  the same for one WGAN-GP critic step at batch 64 (bench_wgan_gp,
#                     torch_wgan_gp.py): without and with the gradient penalty (create_graph),
#                     the penalty's overhead on each side; JSON lines to PREFIX-wgan-gp.jsonl
#
# docs/design.md, section 9: where OpenBLAS runs its Prescott kernels on a CPU with AVX-512, a
# second run with OPENBLAS_CORETYPE=SkylakeX follows by itself. The environment's own
# OPENBLAS_CORETYPE is otherwise left as it is (this machine's sets Haswell), and the table says
# which kernels ran.
# PyTorch comes from Debian's /usr/bin/python3 (package python3-torch).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
build=${TG_BUILD:-build}
out=bench/results/latest
out_given=0
quick=()
steps=()
precisions=()
coretype=
passive=0
models=0
benches=(gru transformer)
kind=models
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
    --build) build=$2; shift 2 ;;
    --quick) quick=(--iters 5 --warmup 1 --reps 5 --tiny-runs 1); shift ;;
    --out) out=$2; out_given=1; shift 2 ;;
    --steps) steps=(--steps "$2"); shift 2 ;;
    --precisions) precisions=(--precisions "$2"); shift 2 ;;
    --coretype) coretype=$2; shift 2 ;;
    --passive) passive=1; shift ;;
    --models) models=$2; shift 2 ;;
    --wgan-gp) models=$2; benches=(wgan_gp); kind=wgan-gp; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h | --help) sed -n '2,40p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

say() { printf 'compare.sh: %s\n' "$*" >&2; }

if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    say "PyTorch is missing: apt-get install python3-torch (Debian's /usr/bin/python3 is used)"
    exit 1
fi

targets=(bench/bench_gan bench/bench_core)
[ "$models" -gt 0 ] && targets=("${benches[@]/#/bench/bench_}")
if [ -f "$build/build.ninja" ]; then
    ninja -C "$build" --quiet "${targets[@]}"
else
    TG_BUILD=$build scripts/tg build
fi
bench_gan=$build/bench/bench_gan
bench_core=$build/bench/bench_core

outputs() { # prefix
    if [ ${#quick[@]} -gt 0 ] && [ $out_given -eq 0 ]; then
        return 0
    fi
    echo --json "$1.json" --md "$1.md"
}

run() { # prefix, compare.py options (or -), then environment changes (VAR=value or -u VAR)
    local prefix=$1 opts=$2
    shift 2
    [ "$opts" = - ] && opts=
    # shellcheck disable=SC2046,SC2086  # outputs and opts print whole words
    env "$@" /usr/bin/python3 bench/compare.py --bench-gan "$bench_gan" --bench-core "$bench_core" \
        ${quick[@]+"${quick[@]}"} ${steps[@]+"${steps[@]}"} \
        ${precisions[@]+"${precisions[@]}"} $(outputs "$prefix") $opts \
        ${extra[@]+"${extra[@]}"}
}

# --models: one process per measurement (each runs all its cases), the two sides in turn so that
# the machine's other load hits both; every run's min, then the min over rounds per case.
if [ "$models" -gt 0 ]; then
    lines=$(mktemp)
    trap 'rm -f "$lines"' EXIT
    policy=()
    [ $passive -eq 1 ] && policy=(OMP_WAIT_POLICY=passive)
    for ((r = 0; r < models; r++)); do
        for t in 1 2; do
            for b in "${benches[@]}"; do
                order=("$build/bench/bench_$b" "bench/torch_$b.py")
                [ $(((r + t) % 2)) -eq 1 ] && order=("${order[1]}" "${order[0]}")
                for prog in "${order[@]}"; do
                    cmd=("$prog")
                    [[ $prog == *.py ]] && cmd=(/usr/bin/python3 "$prog")
                    env ${policy[@]+"${policy[@]}"} OMP_NUM_THREADS="$t" \
                        "${cmd[@]}" --threads "$t" |
                        sed "s/}\$/, \"load1\": $(cut -d' ' -f1 /proc/loadavg)}/" >>"$lines"
                done
            done
        done
        say "round $((r + 1)) of $models done (load $(cut -d' ' -f1 /proc/loadavg))"
    done
    [ $out_given -eq 1 ] && cp "$lines" "$out-$kind.jsonl"
    /usr/bin/python3 - "$lines" <<'PY'
import json, sys
best, loads = {}, []
for line in open(sys.argv[1]):
    r = json.loads(line)
    loads.append(r["load1"])
    key = (r["bench"], r["case"], r["threads"])
    side = best.setdefault(key, {})
    side[r["side"]] = min(side.get(r["side"], float("inf")), r["min_ms"])
print(f"load average (1 min) during the runs: {min(loads):.1f} to {max(loads):.1f}")
print(f"{'bench':12} {'case':10} {'threads':>7} {'tapegrad ms':>12} {'PyTorch ms':>11} "
      f"{'PyTorch/tapegrad':>17}")
for (bench, case, threads), side in sorted(best.items()):
    tg, pt = side.get("tapegrad"), side.get("torch")
    ratio = f"{pt / tg:17.2f}" if tg and pt else f"{'-':>17}"
    print(f"{bench:12} {case:10} {threads:7d} {tg or 0:12.2f} {pt or 0:11.2f} {ratio}")
# WGAN-GP: the penalty's cost on each side, the step with it over the step without it.
for (bench, case, threads), side in sorted(best.items()):
    plain = best.get((bench, "critic", threads), {})
    if case == "critic_gp" and len(side) == 2 and len(plain) == 2:
        tg, pt = side["tapegrad"] / plain["tapegrad"], side["torch"] / plain["torch"]
        print(f"penalty overhead at {threads} thread(s), critic_gp / critic: tapegrad {tg:.2f}, "
              f"PyTorch {pt:.2f}")
PY
    exit 0
fi

corename=$("$bench_gan" info | sed -n 's/.*, \([A-Za-z0-9]*\) kernels.*/\1/p')
say "OpenBLAS kernels: $corename (OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset})"
run "$out" -

if [ "$corename" = Prescott ] && grep -qw avx512f /proc/cpuinfo; then
    say "OpenBLAS fell back to Prescott on an AVX-512 CPU: again with OPENBLAS_CORETYPE=SkylakeX"
    run "$out-skylakex" - OPENBLAS_CORETYPE=SkylakeX
fi
if [ "$coretype" = native ]; then
    say "again with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (OpenBLAS's own choice)"
    run "$out-native" - -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE
elif [ -n "$coretype" ]; then
    say "again with OPENBLAS_CORETYPE=$coretype"
    run "$out-$coretype" - OPENBLAS_CORETYPE="$coretype"
fi
if [ $passive -eq 1 ]; then
    say "the iterations again with OMP_WAIT_POLICY=passive (threads sleep instead of spinning)"
    run "$out-passive" "--no-layers --no-tiny" OMP_WAIT_POLICY=passive
fi
