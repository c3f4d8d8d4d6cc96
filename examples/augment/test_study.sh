#!/bin/sh
# The augmentation study end to end at toy size (meson's test 'augment_study', suite e2e):
# study.sh with one N (7 images per class), one seed, a 3-iteration CGAN at width/8, 100
# samples and classifiers of 10 steps, then the table and plot it wrote are checked: every
# arm's accuracy is the one its JSON line holds, the CGAN's figures are there, the generated
# set is labelled and balanced, the plot has a line per arm; a second call redoes nothing;
# a missing run shows as such.
#
#   test_study.sh BUILD SRC MNIST_DIR      (SKIP, exit 77, without MNIST in MNIST_DIR)
set -eu
build=$1 src=$2 data=$3
test_name=test_study test_table=study.md
# shellcheck source=examples/augment/test_common.sh
. "$src/examples/augment/test_common.sh"
export NS=7 SEEDS=1 GAN_ITERS=3 STEPS=10 GEN_N=100 EVAL_N=100
export REFERENCE_FLAGS="--epochs 1 --limit 500 --data $data" EVAL_FLAGS="--data $data"
export CLASSIFIER_FLAGS="--data $data" MNIST_GAN_FLAGS="--width-div 8 --data $data"
sh "$src/examples/augment/study.sh" "$build" "$out" >"$tmp/study.log" 2>&1 ||
    fail "study.sh failed: $(tail -n 5 "$tmp/study.log")"
md=$out/study.md run=$out/n7-s1
[ -f "$md" ] && [ -f "$out/study.svg" ] || fail "no study.md or study.svg"
# The generated set: 100 labels, i % 10 (an idx1 file: an 8-byte header, then one byte each).
[ "$(wc -c <"$run/gen-labels-idx1-ubyte")" -eq 108 ] || fail "the labels file is not 100 labels"
[ "$(od -An -tu1 -j8 -N12 "$run/gen-labels-idx1-ubyte" | tr -s ' ')" = " 0 1 2 3 4 5 6 7 8 9 0 1" ] ||
    fail "the generated labels are not i % 10"
# Each arm's cell in the every-run table is its JSON line's accuracy, in percent.
row=$(grep '^| 7 | 1 |' "$md" | grep -v '%' | tail -n 1)
col=4
for arm in real classic cgan both; do
    acc=$(sed 's/.*"test_accuracy": \([0-9.]*\).*/\1/' "$run/$arm.jsonl")
    want=$(awk -v a="$acc" 'BEGIN { printf "%.2f", 100 * a }')
    got=$(echo "$row" | awk -F'|' -v c="$col" '{ gsub(/ /, "", $c); print $c }')
    [ "$got" = "$want" ] || fail "$arm: the table says $got, its JSON line $want"
    grep -q "\"train_per_class\": 7, \"train_images\": 70, \"seed\": 1, \"steps\": 10" \
        "$run/$arm.jsonl" || fail "$arm did not train 10 steps on 7 images per class"
    col=$((col + 1))
done
grep -q '"augment": "classic", "augment_with": null' "$run/classic.jsonl" || fail "classic arm"
grep -q '"augment": "none", "augment_with": "' "$run/cgan.jsonl" || fail "cgan arm"
grep -q '"augment": "classic", "augment_with": "' "$run/both.jsonl" || fail "both arm"
# The CGAN's row: label accuracy, FID, diversity from its eval line.
grep -q '"label_accuracy": ' "$run/gan_eval.jsonl" || fail "eval gave no label accuracy"
grep -Eq '^\| 7 \| 1 \| [0-9.]+% \| [0-9.]+ \| [0-9.]+ \|$' "$md" || fail "no CGAN row"
# The plot: one line per arm with one point.
for arm in real classic cgan both; do
    grep -Eq "data-name=\"$arm\"[^>]*points=\"[0-9.]+,[0-9.]+ \"" "$out/study.svg" ||
        fail "the plot has no $arm line"
done
# A second call redoes nothing (every step's output is there) and writes the same table.
cp "$md" "$tmp/first.md"
before=$(find "$out" -newer "$tmp/first.md" | wc -l)
sh "$src/examples/augment/study.sh" "$build" "$out" >"$tmp/again.log" 2>&1 || fail "second call"
grep -q "mnist_gan:\|mnist_classifier:" "$tmp/again.log" && fail "the second call ran again"
cmp -s "$md" "$tmp/first.md" || fail "the second call changed the table"
# A seed not run yet: its cells are "-" and the means say how many seeds they hold.
SEEDS="1 2" "$build/examples/augment/study_table" "$out" >/dev/null || fail "study_table"
grep -q '^| 7 | 2 | - | - | - | - |$' "$md" || fail "seed 2 is not shown as not run"
grep -q '\[1/2\]' "$md" || fail "the means do not say they hold 1 of 2 seeds"
: "$before"
echo "test_study: OK"
