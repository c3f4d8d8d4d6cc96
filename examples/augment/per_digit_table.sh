#!/bin/sh
# The per-digit experiment (issue 16), the measuring half: measures every finished run of a
# per_digit_train.sh folder with `mnist_gan eval`, then writes OUT/per_digit.md and
# OUT/per_digit.svg with per_digit_table (examples/augment/README.md).
#
#   examples/augment/per_digit_table.sh BUILD OUT
#
# Each run is measured by per_digit_measure.sh, which caches the measurement next to its
# checkpoint and makes it again only when the checkpoint is newer or N or SEED changed (its
# header), so running this again, while training goes on, measures only the runs finished
# since; per_digit_train.sh has measured most of them already. RECIPES, DIGITS and SEEDS give
# the grid, as per_digit_train.sh's.
# A run that eval fails on is said on stderr and left out of the table (listed there as not
# measured); the table is still written, and the exit status is then 1.
set -eu
build=$1 out=$2
failed=0
for dir in "$out"/*-d*-s*/; do
    dir=${dir%/}
    [ -f "$dir/done" ] || continue
    sh "$(dirname "$0")/per_digit_measure.sh" "$build" "$out" "$dir" || failed=1
done
"$build/examples/augment/per_digit_table" "$out"
exit $failed
