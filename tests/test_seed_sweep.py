"""Gathering a seed sweep from `dvc exp show --json`: which runs count, and the whole command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from training_helpers import TINY_PIPELINE, dvc, run_in, run_queue

from cifar_study import seed_sweep
from cifar_study.errors import DataError
from cifar_study.seed_sweep import COMPARISON, flatten, seed_runs
from cifar_study.tooling.workspace import commit_all, create_workspace


def run_data(seed: int, lr: float = 0.1, acc: float | None = 0.9) -> dict[str, Any]:
    """One entry's `data` as `dvc exp show --json` writes it."""
    params = {"params.yaml": {"data": {"seed": seed, "lr": lr, "resnet": {"width": 32}}}}
    metrics = (
        {
            "metrics/comparison.json": {
                "data": {
                    "models": {"resnet": {"test_acc": acc}, "densenet": {"test_acc": acc - 0.01}}
                }
            }
        }
        if acc is not None
        else {}
    )
    return {"params": params, "metrics": metrics}


def shown(*experiments: tuple[str, dict[str, Any] | None]) -> list[dict[str, Any]]:
    return [
        {"rev": "workspace", "data": run_data(0)},
        {
            "rev": "abc1234def",
            "name": "main",
            "data": run_data(0),
            "experiments": [
                {"revs": [{"rev": "f" * 40, "name": n, "data": d}]} for n, d in experiments
            ],
        },
    ]


def test_flatten_makes_dotted_keys() -> None:
    assert flatten({"a": 1, "b": {"c": [2], "d": {"e": None}}}) == {
        "a": 1,
        "b.c": [2],
        "b.d.e": None,
    }


def test_runs_of_the_same_recipe_count_and_others_are_named() -> None:
    runs, models, left_out = seed_runs(
        shown(
            ("s1", run_data(1, acc=0.8)),
            ("lr-low", run_data(2, lr=0.01)),
            ("queued", run_data(3, acc=None)),
        )
    )
    assert [(r.name, r.seed, r.test_acc["resnet"]) for r in runs] == [
        ("main", 0, 0.9),
        ("s1", 1, 0.8),
    ]
    assert models == ["resnet", "densenet"]
    assert left_out == [
        "lr-low: other params than the seed differ (lr)",
        "queued: no metrics/comparison.json (not run yet, queued or failed)",
    ]


def test_unreadable_runs_and_runs_missing_a_model_are_named_not_fatal() -> None:
    """DVC writes `data: null` and an `error` for a run it could not collect."""
    one_model = run_data(2)
    del one_model["metrics"][COMPARISON]["data"]["models"]["densenet"]
    entries = shown(("s1", run_data(1, acc=0.8)), ("one-model", one_model), ("broken", None))
    entries[1]["experiments"][2]["revs"][0]["error"] = {"msg": "bad yaml", "type": "YAMLError"}
    runs, models, left_out = seed_runs(entries)
    assert [r.name for r in runs] == ["main", "s1"] and models == ["resnet", "densenet"]
    assert left_out == [
        "one-model: metrics/comparison.json has no test_acc for densenet",
        "broken: DVC could not read it (bad yaml)",
    ]


def test_an_unreadable_baseline_is_an_error() -> None:
    entries = shown()
    entries[1]["data"] = None
    with pytest.raises(DataError, match="could not read the baseline commit main"):
        seed_runs(entries)


def test_a_repository_without_a_commit_is_an_error() -> None:
    with pytest.raises(DataError, match="no commit in this repository"):
        seed_runs([{"rev": "workspace", "data": run_data(0)}])


def test_too_few_runs_suggest_seeds_other_than_the_baselines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """The baseline commit is seed 0: the hint must not queue seed 0 again."""
    output = subprocess.CompletedProcess([], 0, stdout=json.dumps(shown()), stderr="")
    monkeypatch.setattr(seed_sweep.subprocess, "run", lambda *args, **kwargs: output)
    assert seed_sweep.main(["--out", str(tmp_path)]) == 1
    assert "dvc exp run --queue -S 'seed=range(1,5)'" in capsys.readouterr().err


@pytest.mark.slow
def test_seed_sweep_over_three_seeds_on_digits(tmp_path: Path) -> None:
    workspace = create_workspace(tmp_path / "ws", TINY_PIPELINE)
    dvc(workspace, "repro")
    commit_all(workspace, "seed 0")
    dvc(workspace, "exp", "run", "--queue", "-S", "seed=range(1,3)")
    dvc(workspace, "exp", "run", "--queue", "-n", "lr-low", "-S", "lr=0.01")
    status = run_queue(workspace)
    assert "Failed" not in status and "Queued" not in status, status
    done = run_in(workspace, sys.executable, "-m", "cifar_study.seed_sweep", "--out", "plots/seeds")
    assert "left out lr-low: other params than the seed differ (lr)" in done.stdout
    assert "over 3 seeds" in done.stdout and "resnet minus densenet" in done.stdout
    summary = json.loads((workspace / "plots/seeds/seeds.json").read_text())
    assert sorted(summary["seeds"]) == [0, 1, 2]
    assert set(summary["models"]) == {"resnet", "densenet"}
    assert (workspace / "plots/seeds/seeds.png").stat().st_size > 0
