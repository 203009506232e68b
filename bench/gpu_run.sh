#!/usr/bin/env bash
# The whole GPU measurement as one command, for a CUDA machine without network access: the
# committed pipeline on a local copy of CIFAR-10 and bench/gpu.py, inside a time budget.
#
#   bench/gpu_run.sh ARCHIVE OUT [BUDGET_S]      # BUDGET_S: seconds for everything (default 500)
#
# ARCHIVE is a local CIFAR-10 (the official tarball, or an image-folder .tar.gz): it is copied to
# data/external/ and data.source points at it. In order:
#   0. only if SWEEP is set (recipe variants separated by ';', in bench/recipe_sweep.py's syntax,
#      e.g. SWEEP='base;mixup_alpha=0.2'): the ResNet variants train side by side for at most
#      SWEEP_S seconds (default 240), and the one with the best final validation accuracy among
#      those that finish becomes the params.yaml of everything below (SWEEP_S must leave time
#      for step 1, or the run ends there);
#   1. `dvc repro evaluate@resnet`: the ResNet with params.yaml, in full;
#   2. bench/gpu.py, eager, for the DenseNet: its training images/s;
#   3. the DenseNet with the same recipe for as many epochs as fit what is left of the budget at
#      that speed (all of them if they fit), then its evaluation, both models' robustness and
#      `compare`; none of these if fewer than 3 epochs fit (the log says so);
#   4. bench/gpu.py for the rest (ResNet eager and both models compiled) while time remains.
# The run's params.yaml and dvc.lock record what each stage ran with. OUT receives results.tar.gz
# (dvc.lock, params.yaml, metrics/, plots/, model cards, logs, the sweep's params, logs and
# curves) and each trained model.pt, also when a step fails or runs out of time. Needs dvc and
# dvclive importable by $PYTHON (python3).
# BENCH_ARGS adds arguments to every bench/gpu.py call (a CPU smoke run passes tiny sizes).
set -euo pipefail

[ $# -ge 2 ] || { echo "usage: $0 ARCHIVE OUT [BUDGET_S]" >&2; exit 2; }
archive=$(realpath -m "$1")
out=$(realpath -m "$2")
budget=${3:-500}
[ -f "$archive" ] || { echo "error: no archive at $1" >&2; exit 2; }
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
read -r -a bench_args <<< "${BENCH_ARGS:-}"
# shellcheck source=bench/budget.sh
source bench/budget.sh
budget_start "$budget"
start=$SECONDS
logs=$(mktemp -d)
mkdir -p "$out"

pack() {
    cp -r "$logs" logs
    tar czf "$out/results.tar.gz" --ignore-failed-read dvc.lock params.yaml metrics plots \
        models/*/model.json logs sweep/*/{variant.txt,params.yaml,train.log,live} 2>/dev/null || true
    for model in models/*/; do
        [ -f "$model/model.pt" ] && cp "$model/model.pt" "$out/$(basename "$model").pt"
    done
    echo "packed after $((SECONDS - start)) s:" && ls -l "$out"
}
trap pack EXIT

# Stage commands call `PYTHONPATH=src python`; the machine may only have `python3`, and packages
# carried in through PYTHONPATH would be lost. A wrapper, not a link: a virtual environment's
# interpreter finds its packages by its own path.
shims=$(mktemp -d)
{
    echo '#!/bin/sh'
    [ -z "${PYTHONPATH:-}" ] || echo "export PYTHONPATH=\"\${PYTHONPATH:+\$PYTHONPATH:}$PYTHONPATH\""
    echo "exec \"$(command -v "$py")\" \"\$@\""
} > "$shims/python"
chmod +x "$shims/python" && export PATH="$shims:$PATH"
dvc() { "$py" -m dvc "$@"; }
[ -d .git ] || dvc config --local core.no_scm true
record_machine "$logs/machine.txt"

set_param() {  # set_param KEY VALUE: rewrite the line `KEY: ...` of params.yaml, checked.
    sed -i "s|^\(\s*$1:\) [^#]*|\1 $2 |" params.yaml
    grep -qE "^\s*$1: $2 " params.yaml || { echo "error: could not set $1 in params.yaml" >&2; exit 1; }
}
mkdir -p data/external && cp "$archive" data/external/
set_param source "data/external/$(basename "$archive")"

if [ -n "${SWEEP:-}" ]; then
    echo "== 0. Recipe variants, chosen on validation ($(left) s left)"
    IFS=';' read -r -a variants <<< "$SWEEP"
    within_budget "$py" -m dvc repro prepare 2>&1 | tee "$logs/prepare.log"
    within_budget env PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=2 \
        "$py" bench/recipe_sweep.py --data data/prepared --out sweep --budget-s "${SWEEP_S:-240}" \
        --apply-best params.yaml "${variants[@]}" 2>&1 | tee "$logs/sweep.log" \
        || echo "the sweep chose nothing (logs/sweep.log says why): params.yaml stays"
fi

echo "== 1. ResNet with params.yaml ($(left) s left)"
within_budget "$py" -m dvc repro evaluate@resnet 2>&1 | tee "$logs/resnet.log"

echo "== 2. DenseNet throughput ($(left) s left)"
within_budget env PYTHONPATH=src "$py" bench/gpu.py --models densenet --modes eager \
    --images 20480 --epochs 1 "${bench_args[@]}" 2>&1 | tee "$logs/bench-densenet-eager.log"
# The last eager line is the precision `precision: auto` trains in: the device's native half
# precision, or fp32 where it has none.
rate=$(awk '$1 == "eager" { gsub(",", "", $3); r = $3 } END { print r }' \
    "$logs/bench-densenet-eager.log")

# Seconds kept for the DenseNet's evaluation, both robustness stages (their corruptions are
# made on the CPU), `compare`, the rest of the benchmark and packing.
reserve=${RESERVE_S:-240}
train_images=$("$py" -c 'import json; print(json.load(open("data/prepared/dataset.json"))["counts"]["train"]["total"])')
full=$(awk '/^epochs:/ { print $2 }' params.yaml)
# 10% for validation passes, epoch ends and start-up.
epochs=$(awk -v t="$(( $(left) - reserve ))" -v r="${rate:-0}" -v n="$train_images" -v e="$full" \
    'BEGIN { k = int(t * r / (n * 1.1)); print (k < e ? k : e) }')
echo "== 3. DenseNet: $epochs of $full epochs fit at ${rate:-?} images/s ($(left) s left)"
if [ "$epochs" -ge 3 ]; then
    set_param epochs "$epochs"
    for stage in train@densenet evaluate@densenet robustness@resnet robustness@densenet compare; do
        within_budget "$py" -m dvc repro --single-item "$stage" 2>&1 | tee -a "$logs/densenet.log"
    done
else
    echo "under 3 epochs fit: no DenseNet training, robustness or compare in this run"
fi

echo "== 4. The rest of the benchmark ($(left) s left)"
for models in "resnet --modes eager compile" "densenet --modes compile"; do
    [ "$(left)" -gt 20 ] || break
    read -r -a args <<< "$models"
    timeout "$(( $(left) - 10 ))" env PYTHONPATH=src "$py" bench/gpu.py --models "${args[@]}" \
        --images 20480 --epochs 1 "${bench_args[@]}" 2>&1 | tee -a "$logs/bench-rest.log" || true
done
