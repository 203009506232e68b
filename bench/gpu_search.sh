#!/usr/bin/env bash
# Recipe searches on one GPU, validation only, then the DenseNet compiled: a single command for a
# CUDA machine without network access, inside a time budget.
#
#   bench/gpu_search.sh ARCHIVE OUT BUDGET_S SEARCH...   # SEARCH: a bench/searches/*.txt file
#
# ARCHIVE is a local CIFAR-10 (the official tarball, or an image-folder .tar.gz). Its splits are
# prepared as params.yaml's data section says, then each SEARCH runs through bench/recipe_sweep.py
# (at most its own --budget-s, and never past BUDGET_S), then bench/gpu.py measures the DenseNet
# compiled in bf16 with what is left (BENCH_ARGS adds arguments, e.g. a CPU smoke run's tiny sizes). OUT receives each search's printed
# table and, per variant, its params, log and validation curve; no weights.
set -euo pipefail

[ $# -ge 4 ] || { echo "usage: $0 ARCHIVE OUT BUDGET_S SEARCH..." >&2; exit 2; }
archive=$(realpath "$1")
out=$(realpath -m "$2")
budget=$3
shift 3
[ -f "$archive" ] || { echo "error: no archive at $archive" >&2; exit 2; }
[[ $budget =~ ^[0-9]+$ ]] || { echo "error: BUDGET_S must be whole seconds, got '$budget'" >&2; exit 2; }
for search in "$@"; do
    [ -f "$search" ] || { echo "error: no search file at $search" >&2; exit 2; }
done
mapfile -t searches < <(realpath "$@")
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=2
start=$SECONDS
left() { echo $((budget - (SECONDS - start))); }
within_budget() {  # within_budget COMMAND...: run it for what is left of BUDGET_S, if anything is
    local seconds
    seconds=$(left)
    [ "$seconds" -gt 0 ] || { echo "skipped, out of time: $*"; return 1; }
    timeout "$seconds" "$@"
}
work=$(mktemp -d)
mkdir -p "$out"
{ nvidia-smi || true; "$py" -c 'import torch; print("torch", torch.__version__)'; } > "$out/machine.txt"

echo "== prepare ($(left) s left)"
"$py" - "$archive" "$work/params.yaml" <<'PY'
import sys, yaml
params = yaml.safe_load(open("params.yaml"))
params["data"]["source"] = sys.argv[1]
yaml.safe_dump(params, open(sys.argv[2], "w"), sort_keys=False)
PY
"$py" -m cifar_study.stages.download --params "$work/params.yaml" --out "$work/raw"
"$py" -m cifar_study.stages.prepare --params "$work/params.yaml" --raw "$work/raw" \
    --out "$work/prepared" --samples "$work/samples.png"

for search in "${searches[@]}"; do
    name=$(basename "$search" .txt)
    echo "== search $name ($(left) s left)"
    # The file's --budget-s bounds the search; `timeout` keeps it within BUDGET_S as well (on
    # SIGTERM the sweep stops its variants and still prints what they logged).
    within_budget "$py" bench/recipe_sweep.py --data "$work/prepared" --out "$work/$name" \
        "@$search" 2>&1 | tee "$out/$name.txt" || echo "search $name stopped early" | tee -a "$out/$name.txt"
    [ -d "$work/$name" ] && (cd "$work/$name" && find . \( -name variant.txt -o -name params.yaml -o -name train.log \
        -o -path '*/plots/metrics/*' \) -print0 | tar czf "$out/$name.tar.gz" --null -T -)
done

echo "== DenseNet compiled ($(left) s left)"
read -r -a bench_args <<< "${BENCH_ARGS:-}"  # a CPU smoke run passes tiny sizes
within_budget "$py" bench/gpu.py --models densenet --modes compile --precisions bf16 \
    "${bench_args[@]}" 2>&1 | tee "$out/densenet-compiled.txt" || true
echo "done after $((SECONDS - start)) s"
