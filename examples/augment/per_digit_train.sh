#!/bin/sh
# The tutorial's per-digit experiment (issue 16), the training half: for every seed, digit and
# recipe, mnist_gan trains on that digit alone for a fixed budget of generator iterations,
# measuring G every --eval-every iterations (OUT/<recipe>-d<digit>-s<seed>/eval.csv).
#
#   examples/augment/per_digit_train.sh BUILD OUT [WORKER WORKERS]
#
# BUILD is a meson build folder, OUT the study's folder. Runs are shared among WORKERS
# processes by index (run WORKER, WORKER + WORKERS, ...), so two cores can run two at once.
# Everything resumes: a finished run has OUT/<run>/done and is skipped, an interrupted one is
# resumed from its checkpoint (bit-exact), so stopping and restarting costs at most an epoch.
# ITERS (default 1000), SEEDS (default "1 2 3"), DIGITS (default "0 1 2 3 4 5 6 7 8 9"),
# RECIPES (default "tutorial dcgan wgan-gp") and MNIST_GAN_FLAGS (extra train flags; the toy
# run of the e2e test shrinks the models with it) change the grid. The classifier that
# measures G (mnist_classifier's defaults, seed 1) is trained first if OUT has none. Each
# finished run is measured at once (per_digit_measure.sh, the figures per_digit_table.sh
# reads), so a run's small files are its whole result.
# FROM (a folder of this script's runs, for a longer budget) starts each run OUT lacks from
# FROM's finished run of the same name: a copy of it but its done mark and measurement, which
# then resumes to ITERS (at least FROM's budget), bit-exactly the run trained to ITERS from
# the start. OUT takes FROM's classifier if it has none, so that both are measured alike.
set -eu
build=$1 out=$2 worker=${3:-0} workers=${4:-1}
iters=${ITERS:-1000}
mkdir -p "$out"
clf=$out/classifier.safetensors
from=${FROM:-}
if [ -n "$from" ] && [ ! -f "$clf" ] && [ -f "$from/classifier.safetensors" ]; then
    cp "$from/classifier.safetensors" "$clf.part" && mv "$clf.part" "$clf"
fi
if [ ! -f "$clf" ]; then
    if [ "$worker" = 0 ]; then
        # shellcheck disable=SC2086 # the flag list splits on purpose
        "$build/examples/mnist_classifier/mnist_classifier" --threads 1 --seed 1 \
            ${CLASSIFIER_FLAGS:-} --out "$clf.part" && mv "$clf.part" "$clf"
    else
        while [ ! -f "$clf" ]; do sleep 10; done
    fi
fi
i=0
for seed in ${SEEDS:-1 2 3}; do
    for digit in ${DIGITS:-0 1 2 3 4 5 6 7 8 9}; do
        for recipe in ${RECIPES:-tutorial dcgan wgan-gp}; do
            if [ $((i % workers)) -eq "$worker" ]; then
                run=$recipe-d$digit-s$seed
                dir=$out/$run
                # Only a finished run is copied: one still training could change under cp.
                if [ -n "$from" ] && [ ! -e "$dir" ] && [ -f "$from/$run/done" ] &&
                    [ -f "$from/$run/checkpoint.safetensors" ]; then
                    rm -rf "$dir.part"
                    cp -R "$from/$run" "$dir.part"
                    rm -f "$dir.part/done" "$dir.part"/per_digit_eval.*
                    mv "$dir.part" "$dir"
                fi
                if [ ! -f "$dir/done" ]; then
                    resume=
                    [ -f "$dir/checkpoint.safetensors" ] && resume=--resume
                    # shellcheck disable=SC2086 # the flag lists split on purpose
                    "$build/examples/mnist_gan/mnist_gan" train --recipe "$recipe" \
                        --digit "$digit" --seed "$seed" --iters "$iters" --threads 1 \
                        --out "$dir" --eval-every 200 --eval-n 500 --classifier "$clf" \
                        ${MNIST_GAN_FLAGS:-} $resume
                    touch "$dir/done"
                    sh "$(dirname "$0")/per_digit_measure.sh" "$build" "$out" "$dir" ||
                        echo "per_digit_train.sh: $dir is left for per_digit_table.sh" >&2
                fi
            fi
            i=$((i + 1))
        done
    done
done
