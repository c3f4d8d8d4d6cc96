#!/bin/sh
# The augmentation study (issue 16): can a GAN's samples augment a small training set?
#
#   examples/augment/study.sh BUILD OUT [WORKER WORKERS]
#
# For every N images per class and seed: a conditional GAN (mnist_gan --recipe cgan) trained
# on those N x 10 images only, 10,000 labelled samples drawn from it (1,000 per digit), then
# mnist_classifier trained four ways on the same N x 10 real images, every arm with the same
# fixed schedule (STEPS optimizer steps of batch 64, Adam 1e-3 x 0.7 at every fifth of the
# run):
#   real     the real images only
#   classic  + classic augmentation (random shift, rotation and scale of every image)
#   cgan     + CGAN samples: half of every batch drawn from the generated set
#   both     + both (the transform applies to real and generated images)
# Each arm tests on the full MNIST test set and writes mnist_classifier's JSON line to
# OUT/n<N>-s<seed>/<arm>.jsonl; each CGAN is measured by `mnist_gan eval` (label accuracy,
# FID, diversity) against a reference classifier trained on all of MNIST (mnist_classifier's
# defaults, seed 1: OUT/classifier.safetensors, trained first unless CLASSIFIER names one).
# At the end study_table writes OUT/study.md and OUT/study.svg from whatever has finished.
#
# Work is shared among WORKERS processes by index, and everything resumes: a finished step
# leaves its output and is skipped, an interrupted GAN resumes from its checkpoint.
# NS (default "10 50 100 500"), SEEDS ("1 2 3"), GAN_ITERS (3000), STEPS (2000), GEN_N (10000),
# EVAL_N (1000) and MNIST_GAN_FLAGS / CLASSIFIER_FLAGS / REFERENCE_FLAGS / EVAL_FLAGS (extra
# flags of the GAN's training, the study's classifiers, the reference classifier and eval: the
# e2e test's toy run shrinks everything with them) change the grid.
set -eu
build=$1 out=$2 worker=${3:-0} workers=${4:-1}
gan=$build/examples/mnist_gan/mnist_gan
clf=$build/examples/mnist_classifier/mnist_classifier
gan_iters=${GAN_ITERS:-3000} steps=${STEPS:-2000} gen_n=${GEN_N:-10000}
mkdir -p "$out"
clf_ref=${CLASSIFIER:-$out/classifier.safetensors}
if [ ! -f "$clf_ref" ]; then
    if [ "$worker" = 0 ]; then
        # shellcheck disable=SC2086
        "$clf" --threads 1 --seed 1 ${REFERENCE_FLAGS:-} --out "$clf_ref.part" &&
            mv "$clf_ref.part" "$clf_ref"
    else
        while [ ! -f "$clf_ref" ]; do sleep 10; done
    fi
fi
i=0
for seed in ${SEEDS:-1 2 3}; do
    for n in ${NS:-10 50 100 500}; do
        if [ $((i % workers)) -eq "$worker" ]; then
            run=$out/n$n-s$seed
            mkdir -p "$run"
            # 1. the CGAN on the N x 10 real images of this seed
            if [ ! -f "$run/gan/done" ]; then
                resume=
                [ -f "$run/gan/checkpoint.safetensors" ] && resume=--resume
                # shellcheck disable=SC2086 # the flag lists split on purpose
                "$gan" train --recipe cgan --train-per-class "$n" --seed "$seed" \
                    --iters "$gan_iters" --batch 64 --threads 1 --out "$run/gan" \
                    ${MNIST_GAN_FLAGS:-} $resume
                touch "$run/gan/done"
            fi
            # 2. its labelled samples (balanced over the digits)
            if [ ! -f "$run/gen-labels-idx1-ubyte" ]; then
                "$gan" sample --checkpoint "$run/gan/checkpoint.safetensors" --label all \
                    --n "$gen_n" --seed "$seed" --threads 1 --out "$run/gen.png" \
                    --idx "$run/gen"
            fi
            # 3. how good the CGAN is: label accuracy, FID, diversity
            if [ ! -f "$run/gan_eval.jsonl" ]; then
                rm -f "$run/gan_eval.jsonl.part"
                # shellcheck disable=SC2086
                "$gan" eval --checkpoint "$run/gan/checkpoint.safetensors" \
                    --classifier "$clf_ref" --n "${EVAL_N:-1000}" --seed "$seed" --threads 1 \
                    --json "$run/gan_eval.jsonl.part" ${EVAL_FLAGS:-} >"$run/gan_eval.txt" &&
                    mv "$run/gan_eval.jsonl.part" "$run/gan_eval.jsonl"
            fi
            # 4. the classifier, four arms, the same schedule
            for arm in real classic cgan both; do
                [ -f "$run/$arm.done" ] && continue
                case $arm in
                real) extra= ;;
                classic) extra="--augment classic" ;;
                cgan) extra="--augment-with $run/gen --ratio 0.5" ;;
                both) extra="--augment classic --augment-with $run/gen --ratio 0.5" ;;
                esac
                # shellcheck disable=SC2086
                "$clf" --train-per-class "$n" --seed "$seed" --steps "$steps" --batch 64 \
                    --lr 1e-3 --lr-decay 0.7 --epochs 5 --threads 1 $extra \
                    ${CLASSIFIER_FLAGS:-} --out "$run/$arm.safetensors" \
                    --json "$run/$arm.jsonl"
                touch "$run/$arm.done"
            done
        fi
        i=$((i + 1))
    done
done
"$build/examples/augment/study_table" "$out"
