#!/usr/bin/env bash
# Recipe searches on one GPU, chosen on validation, then the DenseNet compiled: one command for a
# CUDA machine without network access, within a time budget.
#
#   bench/gpu_search.sh ARCHIVE OUT BUDGET_S SEARCH...   # SEARCH: e.g. bench/searches/short5.txt
#
# ARCHIVE is a local CIFAR-10 (the official tarball, or an image-folder .tar.gz). Its splits are
# prepared as params.yaml's data section says, then each SEARCH (recipe_sweep.py's arguments, one
# per line) runs through bench/recipe_sweep.py, bounded by its own --budget-s and by BUDGET_S;
# then bench/gpu.py measures the DenseNet compiled in bf16 with what is left (BENCH_ARGS adds
# arguments, e.g. a CPU smoke run's tiny sizes; BENCH_ARGS=skip leaves it out). OUT receives
# the machine, the prepare log and, per search, its printed table and each variant's params, log
# and curves; no weights.
set -euo pipefail

[ $# -ge 4 ] || { echo "usage: $0 ARCHIVE OUT BUDGET_S SEARCH..." >&2; exit 2; }
archive=$(realpath -m "$1")
out=$(realpath -m "$2")
budget_arg=$3
shift 3
[ -f "$archive" ] || { echo "error: no archive at $archive" >&2; exit 2; }
declare -A seen
for search in "$@"; do
    [ -f "$search" ] || { echo "error: no search file at $search" >&2; exit 2; }
    name=$(basename "$search" .txt)
    [ -z "${seen[$name]:-}" ] || { echo "error: two searches named $name" >&2; exit 2; }
    seen[$name]=1
done
mapfile -t searches < <(realpath "$@")
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
# shellcheck source=bench/budget.sh
source bench/budget.sh
budget_start "$budget_arg"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
record_machine "$out/machine.txt"

echo "== prepare ($(left) s left)"
"$py" - "$archive" "$work/params.yaml" <<'PY'  # params.yaml reading the archive, checked
import sys, yaml
from cifar_study import config
params = config.overridden(yaml.safe_load(open("params.yaml")), {"data.source": sys.argv[1]}, "params.yaml")
yaml.safe_dump(params, open(sys.argv[2], "w"), sort_keys=False)
PY
{
    within_budget "$py" -m cifar_study.stages.download --params "$work/params.yaml" \
        --out "$work/raw"
    within_budget "$py" -m cifar_study.stages.prepare --params "$work/params.yaml" \
        --raw "$work/raw" --out "$work/prepared" --samples "$work/samples.png"
} 2>&1 | tee "$out/prepare.log"

for search in "${searches[@]}"; do
    name=$(basename "$search" .txt)
    echo "== search $name ($(left) s left)"
    # On SIGTERM the sweep stops its variants and still prints what they logged.
    within_budget "$py" bench/recipe_sweep.py --data "$work/prepared" --out "$work/$name" \
        "@$search" 2>&1 | tee "$out/$name.txt" || echo "search $name: exit $?" >> "$out/$name.txt"
    [ -d "$work/$name" ] || continue
    (cd "$work/$name" && find . -type f \( -name variant.txt -o -name params.yaml \
        -o -name train.log -o -path '*/plots/metrics/*' \) -print0 |
        tar czf "$out/$name.tar.gz" --null -T -)
done

if [ "${BENCH_ARGS:-}" != skip ]; then
    echo "== DenseNet compiled ($(left) s left)"
    read -r -a bench_args <<< "${BENCH_ARGS:-}"
    within_budget "$py" bench/gpu.py --models densenet --modes compile --precisions bf16 \
        "${bench_args[@]}" 2>&1 | tee "$out/densenet-compiled.txt" || true
fi
echo "done after $((SECONDS - budget_from)) s"
