#!/bin/sh
# The per-digit experiment end to end at toy size (meson's test 'per_digit', suite e2e):
# per_digit_train.sh trains digit 3 with every recipe for 4 iterations (small models, a
# classifier of one epoch on 500 images), per_digit_table.sh measures the runs and writes
# per_digit.md and per_digit.svg, and both are checked: the table's rows, its figures, the runs
# counted, the plot's line per run with its points and verdict; a longer budget started FROM
# these runs is bit-exact with one trained to it from the start; a second call measures
# nothing again; a hand-made collapsed run gets its verdict and the eval.csv
# iteration where it began; runs not finished or not started are listed as such; a run eval
# cannot read is listed as not measured (exit 1); a missing OUT is refused (exit 2); a run
# without its checkpoint counts by its cached measurement.
#
#   test_per_digit.sh BUILD SRC MNIST_DIR      (SKIP, exit 77, without MNIST in MNIST_DIR)
set -eu
build=$1 src=$2 data=$3
test_name=test_per_digit test_table=per_digit.md
# shellcheck source=examples/augment/test_common.sh
. "$src/examples/augment/test_common.sh"
export ITERS=4 SEEDS=1 DIGITS=3 N=50 EVAL_FLAGS="--data $data"
export CLASSIFIER_FLAGS="--epochs 1 --limit 500 --data $data"
export MNIST_GAN_FLAGS="--width-div 8 --batch 16 --eval-n 50 --data $data"
sh "$src/examples/augment/per_digit_train.sh" "$build" "$out" >"$tmp/train.log" 2>&1 ||
    fail "per_digit_train.sh failed: $(tail -n 5 "$tmp/train.log")"
for recipe in tutorial dcgan wgan-gp; do # measured as each run finished
    [ -f "$out/$recipe-d3-s1/per_digit_eval.jsonl" ] || fail "$recipe-d3-s1: not measured"
done
sh "$src/examples/augment/per_digit_table.sh" "$build" "$out" >"$tmp/table.log" 2>&1 ||
    fail "per_digit_table.sh failed: $(tail -n 5 "$tmp/table.log")"
md=$out/per_digit.md
[ -f "$md" ] || fail "no $md"
grep -q "3 of 3 runs measured" "$md" || fail "not 3 of 3 runs measured"
# One row per recipe for digit 3: 1/1 measured, its seed counted once, the four figures numbers
# (white, diversity, digit share, FID).
for recipe in tutorial dcgan wgan-gp; do
    awk -F'|' -v r="$recipe" '
        function num(s) { gsub(/ /, "", s); return s ~ /^-?[0-9]+(\.[0-9]+)?$/ }
        $2 == " 3 " && $3 == " " r " " {
            found = 1
            if ($4 != " 1/1 " || $5 + $6 + $7 + $8 != 1 || !num($9) || !num($10) || !num($11) ||
                !num($12))
                bad = 1
        }
        END { exit !(found && !bad) }' "$md" || fail "row for digit 3, $recipe: missing or wrong"
    grep -q '"digit_share": ' "$out/$recipe-d3-s1/per_digit_eval.jsonl" ||
        fail "$recipe-d3-s1: eval wrote no digit share for a G of one digit"
    grep -q "^| $recipe-d3-s1 | 4 | " "$md" || fail "no line for run $recipe-d3-s1 at iteration 4"
    [ -f "$out/$recipe-d3-s1/per_digit_eval.jsonl" ] || fail "$recipe-d3-s1: no cached measurement"
done
grep -q "^## Not finished or not measured (0)" "$md" || fail "runs left unmeasured"
# The totals name each recipe's generator, as eval read it from the checkpoints.
grep -q "^| tutorial | upsample | 1/1 | " "$md" && grep -q "^| dcgan | dcgan | 1/1 | " "$md" &&
    grep -q "^| wgan-gp | dcgan | 1/1 | " "$md" || fail "the totals do not name the generators"
# The plot: a panel per recipe, in it a line per run with a point per row of its eval.csv.
svg=$out/per_digit.svg
points() { # the points of run $1's line in the plot, and its verdict
    line=".*<polyline data-run=\"$1\" data-verdict=\"\([^\"]*\)\".* points=\"\([^\"]*\)\".*"
    sed -n "s/$line/\2 \1/p" "$svg" | awk '{ print NF - 1, $NF }'
}
for recipe in tutorial dcgan wgan-gp; do
    grep -q "<g class=\"panel\" data-recipe=\"$recipe\">" "$svg" || fail "no panel for $recipe"
    rows=$(($(wc -l <"$out/$recipe-d3-s1/eval.csv") - 1))
    verdict=$(grep "^| $recipe-d3-s1 | " "$md" | sed 's/.* | \([a-z-]*\) |$/\1/')
    [ "$rows" -ge 1 ] && [ "$(points "$recipe-d3-s1")" = "$rows $verdict" ] ||
        fail "$recipe-d3-s1's line: $(points "$recipe-d3-s1"), not $rows points and its verdict"
done

# A longer budget from these runs (FROM): the tutorial run copied at 4 iterations and resumed to
# 8 is the run trained to 8 from the start, bit for bit (its losses, and its eval.csv: G
# measured every 2 iterations, but at 2 in FROM's run); the copy is measured anew and FROM's
# run is left as it was.
cp "$out/tutorial-d3-s1/per_digit_eval.jsonl" "$tmp/from_eval"
mkdir "$tmp/fresh"
cp "$out/classifier.safetensors" "$tmp/fresh/"
for o in longer fresh; do
    from=
    [ "$o" = longer ] && from=$out
    FROM=$from ITERS=8 RECIPES=tutorial MNIST_GAN_FLAGS="$MNIST_GAN_FLAGS --eval-every 2" \
        sh "$src/examples/augment/per_digit_train.sh" "$build" "$tmp/$o" >"$tmp/$o.log" 2>&1 ||
        fail "per_digit_train.sh ($o) failed: $(tail -n 5 "$tmp/$o.log")"
done
grep -q "from 4" "$tmp/longer.log" ||
    fail "the longer run did not resume from 4: $(cat "$tmp/longer.log")"
for f in eval.csv losses.csv; do
    skip='^$'
    [ "$f" = eval.csv ] && skip='^2,'
    grep -v "$skip" "$tmp/fresh/tutorial-d3-s1/$f" | cut -d, -f1-6 >"$tmp/fresh.$f"
    cut -d, -f1-6 "$tmp/longer/tutorial-d3-s1/$f" >"$tmp/longer.$f"
    [ "$(wc -l <"$tmp/fresh.$f")" -ge 4 ] && cmp -s "$tmp/fresh.$f" "$tmp/longer.$f" ||
        fail "$f of the longer run differs from the run trained to 8:" \
            "$(diff "$tmp/fresh.$f" "$tmp/longer.$f")"
done
grep -q '"iteration": 8,' "$tmp/longer/tutorial-d3-s1/per_digit_eval.jsonl" &&
    cmp -s "$tmp/longer/classifier.safetensors" "$out/classifier.safetensors" ||
    fail "the longer run is not measured at 8 with FROM's classifier"
from_run=$out/tutorial-d3-s1
cmp -s "$tmp/from_eval" "$from_run/per_digit_eval.jsonl" && [ -f "$from_run/done" ] &&
    grep -q "^4," "$from_run/losses.csv" && ! grep -q "^5," "$from_run/losses.csv" ||
    fail "FROM's run changed"

# A run kept without its checkpoint (the results in git) still counts, by its measurement.
rm "$out/wgan-gp-d3-s1/checkpoint.safetensors"
sh "$src/examples/augment/per_digit_table.sh" "$build" "$out" >"$tmp/table.log" 2>&1 ||
    fail "per_digit_table.sh failed without a checkpoint: $(tail -n 5 "$tmp/table.log")"
grep -q "3 of 3 runs measured" "$md" && grep -q "^| wgan-gp-d3-s1 | 4 | " "$md" ||
    fail "the run without its checkpoint is not counted"

# Again: every measurement is cached, nothing is measured twice.
cp "$out/dcgan-d3-s1/per_digit_eval.jsonl" "$tmp/cache"
sleep 1
sh "$src/examples/augment/per_digit_table.sh" "$build" "$out" >"$tmp/table.log" 2>&1 ||
    fail "per_digit_table.sh failed the second time: $(tail -n 5 "$tmp/table.log")"
cmp -s "$tmp/cache" "$out/dcgan-d3-s1/per_digit_eval.jsonl" || fail "measured again"
[ -z "$(find "$out" -name per_digit_eval.jsonl -newer "$tmp/cache")" ] || fail "measured again"

# A collapsed run made by hand (seed 9): black at its end, and from iteration 8 in its eval.csv
# (single mode at 4, black from 8: the first row with the run's own verdict counts); a run
# stopped half-way (seed 7) and one not started (seed 8).
run=$out/tutorial-d3-s9
mkdir "$run" "$out/dcgan-d3-s7"
cp "$out/tutorial-d3-s1/checkpoint.safetensors" "$out/tutorial-d3-s1/done" "$run/"
printf 'iteration,epoch,batch,d_real,d_fake,g,seconds\n1,0,0,1,1,1,0.1\n3,0,2,1,1,1,0.2\n' \
    >"$out/dcgan-d3-s7/losses.csv"
sed 's/"generated": {\([^}]*\)"white": [^,]*,/"generated": {\1"white": 0.01,/' \
    "$out/tutorial-d3-s1/per_digit_eval.jsonl" >"$run/per_digit_eval.jsonl"
printf 'iteration,fid,score,rarest_share,rarest_class,classes_5pct,confidence,white,n,diversity\n%s\n%s\n%s\n' \
    '4,10,1,0,0,1,0.9,0.5,50,0.1' '8,10,1,0,0,1,0.9,0.01,50,0.9' '12,10,1,0,0,1,0.9,0.012,50,0.9' \
    >"$run/eval.csv"
SEEDS="1 7 8 9" sh "$src/examples/augment/per_digit_table.sh" "$build" "$out" \
    >"$tmp/table.log" 2>&1 || fail "per_digit_table.sh failed: $(tail -n 5 "$tmp/table.log")"
awk -F'|' '$2 == " 3 " && $3 == " tutorial " && $4 == " 2/4 " && $5 >= 1 &&
    $5 + $6 + $7 + $8 == 2 && $13 ~ /black: s9 at 8( |;|$)/ { found = 1 } END { exit !found }' \
    "$md" || fail "the hand-made black run is not counted black from iteration 8"
grep -q "^| tutorial-d3-s9 | 4 | 0.0100 | .* | black |$" "$md" || fail "no line for tutorial-d3-s9"
[ "$(points tutorial-d3-s9)" = "3 black" ] && ! grep -q 'data-run="dcgan-d3-s7"' "$svg" &&
    grep -q 'data-run="tutorial-d3-s9" data-verdict="black" fill="none" stroke="#000000"' "$svg" ||
    fail "the plot's line of tutorial-d3-s9 is not black with 3 points, or s7 has one"
grep -q "^- dcgan-d3-s7: unfinished, at iteration 3$" "$md" || fail "dcgan-d3-s7 not unfinished"
grep -q "^- tutorial-d3-s8: not started$" "$md" || fail "tutorial-d3-s8 not listed"
# Two runs off digit made by hand, neither black nor single mode: seed 4 by its digit_share
# (10%), seed 5 by the counts of a line from before eval wrote one (20 of 50 images a 3: 40%).
gen_white='s/"generated": {\([^}]*\)"white": [^,]*,/"generated": {\1"white": 0.5,/'
gen_div='s/"generated": {\([^}]*\)"diversity": [^,}]*/"generated": {\1"diversity": 1.0/'
for seed in 4 5; do
    mkdir "$out/wgan-gp-d3-s$seed"
    touch "$out/wgan-gp-d3-s$seed/done"
done
sed -e "$gen_white" -e "$gen_div" -e 's/"digit_share": [^,]*/"digit_share": 0.1/' \
    "$out/wgan-gp-d3-s1/per_digit_eval.jsonl" >"$out/wgan-gp-d3-s4/per_digit_eval.jsonl"
sed -e "$gen_white" -e "$gen_div" -e 's/, "digit_share": [^,]*//' \
    -e 's/"counts": \[[^]]*\]/"counts": [0, 0, 0, 20, 30, 0, 0, 0, 0, 0]/' \
    "$out/wgan-gp-d3-s1/per_digit_eval.jsonl" >"$out/wgan-gp-d3-s5/per_digit_eval.jsonl"
SEEDS="4 5" sh "$src/examples/augment/per_digit_table.sh" "$build" "$out" \
    >"$tmp/table.log" 2>&1 || fail "per_digit_table.sh failed: $(tail -n 5 "$tmp/table.log")"
grep -q "^| wgan-gp-d3-s4 | 4 | 0.5000 | 1.000 | 0.100 | .* | off-digit |$" "$md" &&
    grep -q "^| wgan-gp-d3-s5 | 4 | 0.5000 | 1.000 | 0.400 | .* | off-digit |$" "$md" ||
    fail "the hand-made runs are not off digit: $(grep 'wgan-gp-d3-s[45]' "$md")"
awk -F'|' '$2 == " 3 " && $3 == " wgan-gp " && $4 == " 2/2 " && $7 == 2 && $11 == " 0.250 " &&
    $13 ~ /off-digit: s4; off-digit: s5 / { found = 1 } END { exit !found }' \
    "$md" || fail "the wgan-gp row of digit 3 does not count two runs off digit"
# A finished run whose checkpoint eval cannot read (seed 6): said, listed as not measured, the
# table written all the same, exit 1.
mkdir "$out/dcgan-d3-s6"
echo "not a checkpoint" >"$out/dcgan-d3-s6/checkpoint.safetensors"
touch "$out/dcgan-d3-s6/done"
code=0
SEEDS="1 6" sh "$src/examples/augment/per_digit_table.sh" "$build" "$out" >"$tmp/table.log" 2>&1 ||
    code=$?
[ "$code" = 1 ] && grep -q "measuring .*dcgan-d3-s6 failed" "$tmp/table.log" ||
    fail "a bad checkpoint: exit $code, $(cat "$tmp/table.log")"
grep -q "^- dcgan-d3-s6: finished, not measured" "$md" && grep -q "3 of 6 runs measured" "$md" ||
    fail "the unreadable run is not listed as not measured"

# Bad input: one line naming it, exit 2, nothing written.
code=0
"$build/examples/augment/per_digit_table" "$tmp/none" 2>"$tmp/err" || code=$?
[ "$code" = 2 ] && grep -q "$tmp/none: No such file" "$tmp/err" && [ "$(wc -l <"$tmp/err")" = 1 ] ||
    fail "a missing OUT: exit $code, $(cat "$tmp/err")"
echo "test_per_digit: ok"
