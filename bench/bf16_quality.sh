#!/bin/sh
# The bf16 mode's quality check (issue 17): the dcgan recipe trained with `--matmul fp32` and
# with `--matmul bf16`, each for seeds 1 and 2, G measured by `mnist_gan eval` after epoch 1
# and after epoch 5; OUT/bf16_quality.md gets one row per measurement and the mean of each
# precision (bench/README.md, "bf16").
#
#   bench/bf16_quality.sh BUILD OUT CLASSIFIER
#
# BUILD is a meson build folder, OUT the study's folder, CLASSIFIER a mnist_classifier
# checkpoint (the features eval measures with). Resumable: a run trains to the first epoch,
# keeps that checkpoint (OUT/<precision>-s<seed>/epoch<E>.safetensors), then resumes to the
# next; a finished epoch or measurement is skipped when the script runs again. Every run and
# eval is one process at THREADS threads (default 1), so the two precisions see the same
# machine. EPOCHS (default "1 5"), SEEDS (default "1 2"), PRECISIONS (default "fp32 bf16"),
# N (eval's images, default 10000) and TRAIN_FLAGS / EVAL_FLAGS (extra flags: --data DIR, or
# the e2e test's --width-div and --iters) change the grid. On a CPU without AVX512_BF16 the
# bf16 runs train in FP32 and their rows say so.
set -eu
build=$1 out=$2 clf=$3
gan=$build/examples/mnist_gan/mnist_gan
threads=${THREADS:-1} n=${N:-10000}
mkdir -p "$out"
for precision in ${PRECISIONS:-fp32 bf16}; do
    for seed in ${SEEDS:-1 2}; do
        dir=$out/$precision-s$seed
        mkdir -p "$dir"
        for epoch in ${EPOCHS:-1 5}; do
            keep=$dir/epoch$epoch.safetensors
            if [ ! -f "$keep" ]; then
                resume='' matmul=''
                [ -f "$dir/checkpoint.safetensors" ] && resume=--resume
                # fp32 is the default: no flag, so a build from before --matmul runs it too
                [ "$precision" = fp32 ] || matmul="--matmul $precision"
                # shellcheck disable=SC2086 # the flag lists split on purpose
                "$gan" train --recipe dcgan $matmul --seed "$seed" \
                    --epochs "$epoch" --threads "$threads" --out "$dir" $resume \
                    ${TRAIN_FLAGS:-} >>"$dir.log"
                cp "$dir/checkpoint.safetensors" "$keep.part"
                mv "$keep.part" "$keep"
            fi
            json=$dir/epoch$epoch.jsonl
            if [ ! -f "$json" ]; then
                rm -f "$json.part"
                # shellcheck disable=SC2086
                "$gan" eval --checkpoint "$keep" --classifier "$clf" --n "$n" --seed 1 \
                    --threads "$threads" --json "$json.part" ${EVAL_FLAGS:-} >"$dir/epoch$epoch.txt"
                mv "$json.part" "$json"
            fi
        done
    done
done

# One row per measurement: the generated set's figures from eval's JSON line, and the
# training's seconds per iteration (its losses.csv: the last row's seconds over its iteration).
field() { # field NAME < line: the generated set's NAME
    sed -n "s/.*\"generated\": {[^}]*\"$1\": \([^,}]*\).*/\1/p"
}
table=$out/bf16_quality.md
{
    echo "| matmul | seed | epoch | FID | score | classes >= 5% | white | diversity |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for precision in ${PRECISIONS:-fp32 bf16}; do
        for epoch in ${EPOCHS:-1 5}; do
            for seed in ${SEEDS:-1 2}; do
                line=$(tail -n 1 "$out/$precision-s$seed/epoch$epoch.jsonl")
                ran=$precision
                if [ "$precision" = bf16 ] &&
                    grep -q "runs fp32" "$out/$precision-s$seed.log"; then
                    ran="bf16 asked, ran fp32"
                fi
                printf '| %s | %s | %s | %.2f | %.3f | %s | %.3f | %.3f |\n' "$ran" "$seed" \
                    "$epoch" "$(echo "$line" | field fid)" "$(echo "$line" | field score)" \
                    "$(echo "$line" | field classes_5pct)" "$(echo "$line" | field white)" \
                    "$(echo "$line" | field diversity)"
            done
        done
    done
} >"$table.part"
mv "$table.part" "$table"
cat "$table"
