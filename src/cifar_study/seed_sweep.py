"""Gather a seed sweep's DVC experiments: mean ± standard deviation per model, paired by seed.

    dvc exp run --queue -S 'seed=range(1,5)' && dvc queue start -j 1   # then wait for the queue
    python -m cifar_study.seed_sweep --out plots/seeds

Reads `dvc exp show --json` in the current repository: the baseline commit and its experiments
that finished (their metrics/comparison.json exists). Runs whose params differ from the
baseline's in anything but `seed` are left out, and named. Writes seeds.json and seeds.png in
--out and prints the summary.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from cifar_study.cli import user_errors_exit
from cifar_study.errors import DataError
from cifar_study.evaluation.seeds import SeedRun, seeds_png, sentences, summarise
from cifar_study.fileio import write_json

COMPARISON = "metrics/comparison.json"


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested params as dotted keys: {'resnet': {'width': 32}} → {'resnet.width': 32}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _params(data: dict[str, Any]) -> dict[str, Any]:
    return flatten(data.get("params", {}).get("params.yaml", {}).get("data", {}))


def _name(state: dict[str, Any]) -> str:
    """An entry's experiment name, or its short commit hash where it has none."""
    return state.get("name") or state["rev"][:7]


def _collection_error(state: dict[str, Any]) -> str:
    """Why DVC could not collect an entry whose `data` is null, as its `error` says."""
    return (state.get("error") or {}).get("msg") or "no reason given"


def _differing(reference: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """The params, other than the seed, whose value differs from the reference's."""
    keys = reference.keys() | params.keys() - {"seed"}
    return sorted(k for k in keys if params.get(k) != reference.get(k))


def seed_runs(entries: list[dict[str, Any]]) -> tuple[list[SeedRun], list[str], list[str]]:
    """The runs of one recipe in `dvc exp show --json` output, the models in the comparison's
    order, and a line for each run left out (unreadable, no metrics, a model missing from its
    comparison, or other params than the seed)."""
    baselines = [entry for entry in entries if entry.get("rev") != "workspace"]
    if not baselines:
        raise DataError("no commit in this repository: commit a run first, then sweep the seed")
    base = baselines[0]
    if base.get("data") is None:
        raise DataError(
            f"DVC could not read the baseline commit {_name(base)} ({_collection_error(base)}), "
            "whose params the runs are matched against: fix what `dvc exp show` reports"
        )
    reference = {k: v for k, v in _params(base["data"]).items() if k != "seed"}
    states = [base, *(experiment["revs"][0] for experiment in base.get("experiments") or [])]
    runs, models, left_out = [], [], []
    for state in states:
        name, data = _name(state), state.get("data")
        if data is None:
            left_out.append(f"{name}: DVC could not read it ({_collection_error(state)})")
            continue
        comparison = data.get("metrics", {}).get(COMPARISON, {}).get("data")
        if not comparison:
            left_out.append(f"{name}: no {COMPARISON} (not run yet, queued or failed)")
            continue
        params = _params(data)
        differing = _differing(reference, params)
        if differing:
            left_out.append(f"{name}: other params than the seed differ ({', '.join(differing)})")
            continue
        scored = comparison.get("models", {})
        models = models or list(scored)
        missing = [m for m in models if "test_acc" not in scored.get(m, {})]
        if missing:
            left_out.append(f"{name}: {COMPARISON} has no test_acc for {', '.join(missing)}")
            continue
        runs.append(SeedRun(name, int(params["seed"]), {m: scored[m]["test_acc"] for m in models}))
    return runs, models, left_out


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for seeds.json, seeds.png")
    args = parser.parse_args(argv)
    shown = subprocess.run(
        [sys.executable, "-m", "dvc", "exp", "show", "--json"], capture_output=True, text=True
    )
    if shown.returncode != 0:
        raise DataError(f"`dvc exp show --json` failed: {shown.stderr.strip()}")
    runs, models, left_out = seed_runs(json.loads(shown.stdout))
    for line in left_out:
        print(f"left out {line}")
    try:
        summary = summarise(runs, models)
    except ValueError as exc:
        raise DataError(
            f"{exc}; run more seeds: dvc exp run --queue -S 'seed=range(1,5)'"
        ) from None
    write_json(args.out / "seeds.json", summary)
    seeds_png(summary, args.out / "seeds.png")
    print("\n".join(sentences(summary)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
