#!/bin/bash
# dist/ over MPI (issue 20), with `mpirun --oversubscribe` on this machine:
#   - test_dist_ranks (every collective of dist.h against closed-form values, the sharded
#     loader's slices disjoint and covering each epoch) with 2 and with 3 ranks;
#   - equivalence: dist_mlp, a BatchNorm-free MLP on MNIST (or, without MNIST, on synthetic
#     images), 2 ranks x batch 32 against 1 process x batch 64 after 20 steps of SGD with
#     momentum and of Adam (the gradients in buckets of 1000 bytes, so several buckets a step):
#     every parameter tensor within 1e-5 of the one-process run, relative to that tensor's
#     largest absolute value (measured: about 3e-7, float32's rounding of sums taken in
#     another order);
#   - a bad launch is refused with one line on rank 0 and exit status 2 on every rank, within a
#     timeout (a hang fails): ranks launched with different flags (mpirun's MPMD form), a flag
#     that only one rank cannot parse, and a global batch that 3 ranks cannot split.
#   - mnist_classifier (phase 2), with MNIST only: 2 ranks x batch 32 against 1 process x batch
#     64, --dropout 0, --steps 20 of Adam: every parameter within 1e-3 of the one-process
#     run, relative to the tensor's largest absolute value (measured 1.9e-5 with the
#     convolutions lowered to GEMMs, 1.6e-4 to 2.1e-4 since the 5x5 conv 32 -> 64 runs as
#     Winograd, 0.497 with the averaging removed: Adam divides each gradient by its own running
#     size, so float32's rounding of sums taken in another order shows more than under SGD,
#     and the Winograd run's rounding leads it where it shows more still); and
#     its refusal of a batch 3 ranks cannot split;
#   - mnist_gan train (phase 2), with MNIST only, --width-div 8, batch 32, 200 iterations: the
#     loss curves of 2 ranks and of 1 process, as means over windows of 50 iterations (d_real,
#     d_fake, g), within 0.01 of each other with --sync-bn on and within 0.1 with off. Measured
#     0.002-0.005 with on (0.005 in the sanitizer build), 0.023 with off: the bands are 2-4x
#     those, and off misses on's band (so the first check fails when the statistics are not
#     synchronised). With sync BN the two runs compute the same thing up to rounding, which
#     the GAN amplifies slowly; without it each rank normalises over its 16 images, a
#     different model in the same regime. And --resume with another number of ranks is
#     refused.
# SKIP (77) without mpirun. As root, mpirun needs OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM), set here.
#
# usage: test_dist.sh TEST_DIST_RANKS DIST_MLP MNIST_CLASSIFIER MNIST_GAN
#        ($TG_MNIST_DIR: MNIST's folder, if any)
set -u
ranks_prog=$(realpath -- "$1") mlp=$(realpath -- "$2") # the runs start in a temporary folder
clf=$(realpath -- "$3") gan=$(realpath -- "$4")

skip() { echo "SKIP: $*"; exit 77; }
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
pass() { echo "ok: $*"; }

command -v mpirun >/dev/null 2>&1 || skip "no mpirun (apt-get install openmpi-bin)"
# The flags below are Open MPI's (MPICH's mpirun has no --oversubscribe or -q).
mpirun --version 2>/dev/null | grep -q 'Open MPI' ||
    skip "mpirun is not Open MPI's: $(mpirun --version 2>&1 | head -1)"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# One OpenMP thread per rank (2 ranks on a 2-core machine). The refusals run with -q, which
# keeps mpirun's own banners out of stderr, so what is left there is the program's.
export OMP_NUM_THREADS=1
# In the sanitizer build: Open MPI's own allocations that it never frees are suppressed by
# library (lsan_mpi.supp), which needs the slow unwinder to see through Open MPI's frames; a
# leak of ours still shows, its stack holding none of those libraries.
here=$(dirname -- "$(realpath -- "$0")")
export LSAN_OPTIONS="suppressions=$here/lsan_mpi.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}fast_unwind_on_malloc=0"
mpi=(mpirun --oversubscribe)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tg-dist.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1

# run NAME SECONDS CMD...: runs CMD with a timeout, stdout and stderr in $tmp/out, $tmp/err;
# sets rc (124: the timeout hit).
run() {
    local name=$1 secs=$2
    shift 2
    timeout -k 10 "$secs" "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        fail "$name: no answer within $secs s (a hang)"
    fi
}
show() { sed 's/^/    /' "$tmp/out" "$tmp/err"; }

# ---- the collectives and the sharded loader, 2 and 3 ranks --------------------------------
for np in 2 3; do
    run "test_dist_ranks, $np ranks" 120 "${mpi[@]}" -np "$np" "$ranks_prog"
    if [ "$rc" -eq 0 ]; then pass "test_dist_ranks, $np ranks"; else
        fail "test_dist_ranks, $np ranks: exit status $rc"; show; fi
done

# ---- equivalence: 2 ranks x B/2 against 1 process x B ------------------------------------
data=(--synthetic)
mnist=${TG_MNIST_DIR:-}
if [ -n "$mnist" ] && [ -f "$mnist/train-images-idx3-ubyte" ]; then
    data=(--data "$mnist")
else
    echo "(no MNIST in TG_MNIST_DIR='$mnist': synthetic images)"
fi
for opt in "sgd --lr 0.05" "adam --lr 0.001"; do
    # shellcheck disable=SC2206  # $opt is two flags
    common=(train "${data[@]}" --images 4096 --batch 64 --steps 20 --optim $opt
        --bucket-bytes 1000)
    name="equivalence, ${opt%% *}"
    run "$name: 2 ranks" 120 "${mpi[@]}" -np 2 "$mlp" "${common[@]}" --out "$tmp/two.st"
    [ "$rc" -eq 0 ] || { fail "$name: 2 ranks: exit status $rc"; show; continue; }
    run "$name: 1 process" 120 "$mlp" "${common[@]}" --out "$tmp/one.st"
    [ "$rc" -eq 0 ] || { fail "$name: 1 process: exit status $rc"; show; continue; }
    run "$name: compare" 60 "$mlp" compare "$tmp/two.st" "$tmp/one.st" --tol 1e-5
    if [ "$rc" -eq 0 ]; then pass "$name: $(cat "$tmp/out")"; else
        fail "$name: the parameters differ"; show; fi
done

# ---- bad launches: one line from rank 0, status 2 everywhere, no hang ----------------------
# refused NAME EXPECT: the last run exited 2 with exactly one line on stderr, holding EXPECT,
# and nothing on stdout.
refused() {
    local lines
    lines=$(wc -l <"$tmp/err")
    if [ "$rc" -eq 2 ] && [ "$lines" -eq 1 ] && grep -qF -- "$2" "$tmp/err" && [ ! -s "$tmp/out" ]
    then
        pass "$1: $(cat "$tmp/err")"
    else
        fail "$1: exit status $rc, $lines line(s) on stderr, expected 2 and one line with '$2'"
        show
    fi
}
run "different flags" 60 "${mpi[@]}" -q -np 1 "$mlp" train --synthetic --lr 0.1 : \
    -np 1 "$mlp" train --synthetic --lr 0.2
refused "ranks with different flags" \
    "dist_mlp: tg_dist_check_same: the settings of rank 1 differ from rank 0's (1 of 2 ranks differ)"
run "a bad flag on rank 1" 60 "${mpi[@]}" -q -np 1 "$mlp" train --synthetic : \
    -np 1 "$mlp" train --synthetic --steps x
refused "a flag only rank 1 cannot parse" "dist_mlp: tg_dist_agree: rank 1 of 2: --steps: 'x'"
run "batch 64 over 3 ranks" 60 "${mpi[@]}" -q -np 3 "$mlp" train --synthetic --batch 64
refused "a batch 3 ranks cannot split" "global batch 64 does not split over 3 ranks"

# ---- phase 2: mnist_classifier and mnist_gan under mpirun (MNIST needed) -------------------
if [ "${data[0]}" = --data ]; then
    common=(--data "$mnist" --limit 4096 --batch 64 --steps 20 --epochs 1 --dropout 0
        --threads 1)
    run "classifier: 2 ranks" 180 "${mpi[@]}" -np 2 "$clf" "${common[@]}" --out "$tmp/c2.st"
    [ "$rc" -eq 0 ] || { fail "classifier: 2 ranks: exit status $rc"; show; }
    run "classifier: 1 process" 180 "$clf" "${common[@]}" --out "$tmp/c1.st"
    [ "$rc" -eq 0 ] || { fail "classifier: 1 process: exit status $rc"; show; }
    run "classifier: compare" 60 "$mlp" compare "$tmp/c2.st" "$tmp/c1.st" --tol 1e-3
    if [ "$rc" -eq 0 ]; then pass "classifier equivalence: $(cat "$tmp/out")"; else
        fail "classifier: the parameters differ"; show; fi
    run "classifier: batch 64 over 3 ranks" 60 "${mpi[@]}" -q -np 3 "$clf" "${common[@]}" \
        --out "$tmp/c3.st"
    refused "classifier: a batch 3 ranks cannot split" "global batch 64 does not split over 3"

    g=(train --data "$mnist" --width-div 8 --batch 32 --iters 200 --log-every 200 --threads 1)
    run "gan: 1 process" 120 "$gan" "${g[@]}" --out "$tmp/g1"
    [ "$rc" -eq 0 ] || { fail "gan: 1 process: exit status $rc"; show; }
    for sync in "on 0.01" "off 0.1"; do
        band=${sync#* } sync=${sync% *}
        run "gan: 2 ranks, sync-bn $sync" 120 "${mpi[@]}" -np 2 "$gan" "${g[@]}" --sync-bn "$sync" \
            --out "$tmp/g2$sync"
        [ "$rc" -eq 0 ] || { fail "gan: 2 ranks, sync-bn $sync: exit status $rc"; show; continue; }
        # the largest difference of 50-iteration window means over the three losses
        worst=$(awk -F, 'FNR == 1 { f++; next }
            { w = int((FNR - 2) / 50); for (k = 4; k <= 6; k++) m[f, w, k] += $k / 50 }
            END { d = 0; for (w = 0; w < 4; w++) for (k = 4; k <= 6; k++) {
                x = m[1, w, k] - m[2, w, k]; if (x < 0) x = -x; if (x > d) d = x }
                printf "%.4g", d }' "$tmp/g1/losses.csv" "$tmp/g2$sync/losses.csv")
        if awk -v d="$worst" -v b="$band" 'BEGIN { exit !(d <= b) }'; then
            pass "gan band, sync-bn $sync: window means within $worst (band $band)"
        else
            fail "gan band, sync-bn $sync: window means differ by $worst (band $band)"
        fi
    done
    run "gan: resume with 1 of 2 ranks" 60 "$gan" "${g[@]}" --iters 210 --resume --out "$tmp/g2on"
    refused "gan: resume with another number of ranks" "was trained by 2 ranks"
    run "gan: batch 32 over 3 ranks" 60 "${mpi[@]}" -q -np 3 "$gan" "${g[@]}" --out "$tmp/g3"
    refused "gan: a batch 3 ranks cannot split" "global batch 32 does not split over 3 ranks"
else
    echo "(no MNIST: mnist_classifier and mnist_gan under mpirun not run)"
fi

if [ "$fails" -gt 0 ]; then
    echo "$fails check(s) failed"
    exit 1
fi
echo "all checks passed"
