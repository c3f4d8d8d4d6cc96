#!/bin/sh
# Measures one finished run of the per-digit experiment (issue 16) with `mnist_gan eval`,
# caching the result next to its checkpoint: RUN/per_digit_eval.jsonl (the JSON line) and
# RUN/per_digit_eval.txt (the table eval printed). per_digit_train.sh calls it as each run
# finishes, per_digit_table.sh for every finished run.
#
#   examples/augment/per_digit_measure.sh BUILD OUT RUN
#
# The cache is kept when it was made with the same N and SEED and the checkpoint is not newer,
# or when the checkpoint is gone: a run kept without its checkpoint (the results committed
# to git, README.md) is represented by its measurement alone. N (default 800: every digit
# has at least 892 test images) generated images against as many real test images of the
# digit, noise seed SEED (default 1); EVAL_FLAGS adds eval flags (--data DIR). The classifier
# is OUT/classifier.safetensors. Exit status 0: measured or cached; 1: eval failed (said on
# stderr, no cache left).
set -eu
build=$1 out=$2 dir=${3%/}
n=${N:-800} seed=${SEED:-1}
cache=$dir/per_digit_eval.jsonl ckpt=$dir/checkpoint.safetensors
if [ -f "$cache" ] && grep -q "\"n\": $n, \"seed\": $seed," "$cache"; then
    [ -f "$ckpt" ] || exit 0
    [ -n "$(find "$ckpt" -newer "$cache")" ] || exit 0
fi
rm -f "$cache.part"
# shellcheck disable=SC2086 # the flag list splits on purpose
if "$build/examples/mnist_gan/mnist_gan" eval --checkpoint "$ckpt" \
    --classifier "$out/classifier.safetensors" --n "$n" --seed "$seed" --threads 1 \
    --json "$cache.part" ${EVAL_FLAGS:-} >"$dir/per_digit_eval.txt"; then
    mv "$cache.part" "$cache"
else
    echo "per_digit_measure.sh: measuring $dir failed (above)" >&2
    rm -f "$cache.part" "$cache"
    exit 1
fi
