"""The DVC workflows of the README, as users type them, in a throwaway copy on digits (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from training_helpers import TINY_PIPELINE, dvc, import_every_stage, run_in, run_queue

from cifar_study import recipes
from cifar_study.config import parse_params
from cifar_study.tooling.workspace import commit_all, create_workspace, pipeline_env

pytestmark = pytest.mark.slow

TINY = TINY_PIPELINE
STAGES = [
    "download",
    "prepare",
    "train@resnet",
    "train@densenet",
    "evaluate@resnet",
    "evaluate@densenet",
    "compare",
]


def ran(output: str) -> set[str]:
    return {stage for stage in STAGES if f"Running stage '{stage}'" in output}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = create_workspace(tmp_path_factory.mktemp("exp") / "ws", TINY)
    output = dvc(ws, "repro")
    assert ran(output) == set(STAGES)
    commit_all(ws, "run")
    return ws


def test_repro_records_every_stage_and_a_second_repro_does_nothing(workspace: Path) -> None:
    lock = (workspace / "dvc.lock").read_text()
    for stage in STAGES:
        assert f"{stage}:" in lock
    assert ran(dvc(workspace, "repro")) == set()
    assert "up to date" in dvc(workspace, "status")


def test_importing_the_package_with_bytecode_on_leaves_the_pipeline_up_to_date(
    workspace: Path,
) -> None:
    import_every_stage(workspace, pipeline_env())
    assert "up to date" in dvc(workspace, "status")
    assert ran(dvc(workspace, "repro")) == set()


def test_metrics_and_plots_show_both_models(workspace: Path) -> None:
    shown = json.loads(dvc(workspace, "metrics", "show", "--json"))
    files = next(iter(shown.values()))["data"]
    assert "metrics/eval/resnet/metrics.json" in files
    assert "metrics/comparison.json" in files
    dvc(workspace, "plots", "show")
    html = (workspace / "dvc_plots" / "index.html").read_text()
    for title in ("Validation accuracy", "Test accuracy per class", "ResNet confusion matrix"):
        assert title in html


def test_exp_run_with_a_changed_lr_then_diff_against_the_baseline(workspace: Path) -> None:
    output = dvc(workspace, "exp", "run", "-n", "lr-low", "-S", "lr=0.01")
    assert {"train@resnet", "train@densenet"} <= ran(output)
    assert not {"download", "prepare"} & ran(output)
    params = dvc(workspace, "params", "diff", "HEAD", "lr-low", "--md")
    assert "lr" in params and "0.01" in params
    metrics = dvc(workspace, "metrics", "diff", "HEAD", "lr-low", "--md")
    assert "metrics/eval/resnet/metrics.json" in metrics
    dvc(workspace, "plots", "diff", "HEAD", "lr-low")
    assert (workspace / "dvc_plots" / "index.html").is_file()


# Runs after the test above (pytest keeps file order): it diffs against its experiment too.
def test_changing_only_densenet_params_does_not_retrain_the_resnet(workspace: Path) -> None:
    output = dvc(
        workspace,
        "exp",
        "run",
        "-n",
        "dense-wider",
        "-S",
        "densenet.growth_rate=6",
        "-S",
        "train_fraction.densenet=0.5",
    )
    assert "train@densenet" in ran(output)
    assert "train@resnet" not in ran(output)
    # Two experiments against each other, not only against the baseline.
    assert "densenet.growth_rate" in dvc(workspace, "params", "diff", "lr-low", "dense-wider")
    assert "test.acc" in dvc(workspace, "metrics", "diff", "lr-low", "dense-wider", "--md")
    dvc(workspace, "plots", "diff", "lr-low", "dense-wider")
    html = (workspace / "dvc_plots" / "index.html").read_text()
    assert "lr-low" in html and "dense-wider" in html


def test_queued_sweep_and_exp_show(workspace: Path) -> None:
    dvc(workspace, "exp", "run", "--queue", "-S", "lr=0.02,0.1")
    status = run_queue(workspace)
    assert "Failed" not in status and "Queued" not in status, status
    shown = json.loads(dvc(workspace, "exp", "show", "--json"))
    lrs = []
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            for rev in exp["revs"]:
                data = rev.get("data") or {}
                lrs.append(data.get("params", {}).get("params.yaml", {}).get("data", {}).get("lr"))
                assert "metrics/comparison.json" in data.get("metrics", {}), rev.get("name")
    assert {0.02, 0.1} <= set(lrs)
    table = dvc(workspace, "exp", "show", "--md", "--only-changed")
    assert "test.acc" in table


def test_the_study_recipe_queues_an_experiment_with_exactly_its_values(workspace: Path) -> None:
    """DVC's own parsing of the recipe's `-S` arguments, and of a --set path that Hydra would
    misread unquoted, gives the values the recipe resolves to."""
    source = "/data/my copy,v2 (JPEG).tar.gz"
    recipe_run = [sys.executable, "-m", "cifar_study.recipes", "run", "study"]
    run_in(workspace, *recipe_run, "--set", f"data.source={source}", "--name", "study-copy",
           "--", "--queue")  # fmt: skip
    try:
        shown = json.loads(dvc(workspace, "exp", "show", "--json"))
        queued = [
            experiment["revs"][0]
            for branch in shown
            for experiment in branch.get("experiments") or []
            if experiment["name"] == "study-copy"
        ]
        assert len(queued) == 1
        assert "Queued" in dvc(workspace, "queue", "status")
        in_dvc = parse_params(queued[0]["data"]["params"]["params.yaml"]["data"])
        recipe = recipes.read_recipe(workspace / "recipes" / "study.yaml")
        recipe["data.source"] = source
        assert in_dvc == recipes.resolve(workspace / "params.yaml", recipe)
        assert in_dvc.data.source == source
    finally:
        dvc(workspace, "queue", "remove", "study-copy")


def test_returning_to_the_baseline_restores_it_from_the_run_cache(workspace: Path) -> None:
    """Earlier tests moved lr and the DenseNet away from the baseline; setting them back must
    not train anything: DVC's run-cache holds every stage's outputs for the baseline's inputs."""
    baseline = {
        "lr": TINY["lr"],
        "densenet.growth_rate": TINY["densenet.growth_rate"],
        "train_fraction.densenet": 1.0,
    }
    overrides = [arg for key, value in baseline.items() for arg in ("-S", f"{key}={value}")]
    output = dvc(workspace, "exp", "run", "-n", "back", *overrides)
    assert ran(output) == set(), output
    assert "is cached - skipping run" in output
    for model in ("resnet", "densenet"):
        for path in (f"metrics/eval/{model}/metrics.json", f"metrics/train/{model}/metrics.json"):
            committed = subprocess.run(
                ["git", "show", f"HEAD:{path}"], cwd=workspace, capture_output=True, text=True
            ).stdout
            assert json.loads((workspace / path).read_text()) == json.loads(committed), path
