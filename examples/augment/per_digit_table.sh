#!/bin/sh
# The per-digit experiment (issue 16), the measuring half: measures every finished run of a
# per_digit_train.sh folder with `mnist_gan eval`, then writes OUT/per_digit.md with
# per_digit_table (examples/augment/README.md).
#
#   examples/augment/per_digit_table.sh BUILD OUT
#
# Each run's measurement is cached next to its checkpoint (OUT/<run>/per_digit_eval.jsonl, the
# table eval printed in per_digit_eval.txt) and made again only when the checkpoint is newer
# or N or SEED changed, so running this again, while training goes on, measures only the runs
# finished since. N (default 800: every digit has at least 892 test images) generated images
# against as many real test images of the digit, noise seed SEED (default 1); EVAL_FLAGS adds
# eval flags (--data DIR). RECIPES, DIGITS and SEEDS give the grid, as per_digit_train.sh's.
# A run that eval fails on is said on stderr and left out of the table (listed there as not
# measured); the table is still written, and the exit status is then 1.
set -eu
build=$1 out=$2
n=${N:-800} seed=${SEED:-1}
clf=$out/classifier.safetensors
failed=0
for dir in "$out"/*-d*-s*/; do
    dir=${dir%/}
    [ -f "$dir/done" ] && [ -f "$dir/checkpoint.safetensors" ] || continue
    cache=$dir/per_digit_eval.jsonl
    if [ -f "$cache" ] && grep -q "\"n\": $n, \"seed\": $seed," "$cache" &&
        [ -z "$(find "$dir/checkpoint.safetensors" -newer "$cache")" ]; then
        continue
    fi
    rm -f "$cache.part"
    # shellcheck disable=SC2086 # the flag list splits on purpose
    if "$build/examples/mnist_gan/mnist_gan" eval --checkpoint "$dir/checkpoint.safetensors" \
        --classifier "$clf" --n "$n" --seed "$seed" --threads 1 --json "$cache.part" \
        ${EVAL_FLAGS:-} >"$dir/per_digit_eval.txt"; then
        mv "$cache.part" "$cache"
    else
        echo "per_digit_table.sh: measuring $dir failed (above)" >&2
        rm -f "$cache.part" "$cache"
        failed=1
    fi
done
"$build/examples/augment/per_digit_table" "$out"
exit $failed
