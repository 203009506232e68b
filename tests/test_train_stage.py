"""The `train` stage as users and DVC run it: outputs, DVCLive logs, bad params, interruption."""

from __future__ import annotations

import csv
import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from training_helpers import EPOCH_METRICS, logged_steps, stage_args, tiny_raw, write_params

from cifar_study.card import ModelCard
from cifar_study.config import load_params
from cifar_study.data.prepared import prepare
from cifar_study.device import resolve_runtime
from cifar_study.models import build_model
from cifar_study.stages import train


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with prepared tiny data and a params.yaml for a tiny, quick run."""
    prepare(tiny_raw(n_train=64), tmp_path / "data" / "prepared", val_size=0.25, seed=0)
    write_params(tmp_path, {"precision": "fp32"})
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("model", ["resnet", "densenet"])
def test_stage_writes_a_loadable_model_and_aligned_metrics(project: Path, model: str) -> None:
    assert train.main(stage_args(model)) == 0

    info = json.loads((project / "run" / "models" / model / "model.json").read_text())
    assert info["model"] == model and info["classes"] == ["red", "green", "blue", "grey"]
    assert info["epochs"] == 2 and info["parameters"] > 0 and info["macs_per_image"] > 0
    card = ModelCard.read(project / "run" / "models" / model / "model.json")
    assert card.architecture == load_params(project / "params.yaml").model(model).settings
    state = torch.load(project / "run" / "models" / model / "model.pt", weights_only=True)
    net = build_model(model, card.architecture, num_classes=4)
    net.load_state_dict(state)

    live = project / "run" / "metrics" / model
    metrics = json.loads((live / "metrics.json").read_text())
    assert metrics["step"] == 2 and metrics["parameters"] == info["parameters"]
    # What `auto` resolved to, where `dvc exp show` and `dvc metrics diff` display it.
    assert metrics["runtime"] == info["runtime"]
    assert metrics["runtime"]["device"] == "cpu" and metrics["runtime"]["processes"] == 1
    assert metrics["runtime"]["torch"] == torch.__version__
    for name in EPOCH_METRICS:
        assert logged_steps(live, name) == [1, 2], name


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"lr": -1}, "lr = -1 is not allowed; expected a number > 0"),
        ({"optimizer": "rmsprop"}, "expected one of sgd, muon, adam, adamw"),
        ({"epochs": "ten"}, "epochs = 'ten' must be an integer"),
        ({"resnet": {"width": 4, "blocks": [1, 1], "depth": 3}}, "unknown key 'resnet.depth'"),
    ],
)
def test_bad_params_fail_before_any_data_is_read(
    project: Path, override: dict, message: str, capsys: pytest.CaptureFixture
) -> None:
    write_params(project, override)
    (project / "data" / "prepared" / "train_images.npy").unlink()  # would fail if it were read
    assert train.main(stage_args()) == 1
    assert message in capsys.readouterr().err
    assert not (project / "run").exists()


def test_unknown_model_lists_the_known_ones(project: Path, capsys: pytest.CaptureFixture) -> None:
    assert train.main(stage_args("vgg")) == 1
    assert "known models: densenet, resnet" in capsys.readouterr().err


def test_modified_prepared_data_is_refused(project: Path, capsys: pytest.CaptureFixture) -> None:
    labels = project / "data" / "prepared" / "train_labels.npy"
    labels.write_bytes(labels.read_bytes()[:-1] + b"\x01")
    assert train.main(stage_args()) == 1
    assert "train_labels.npy: sha256" in capsys.readouterr().err


def _run_stage(args: list[str], cwd: Path, stderr: int = subprocess.STDOUT) -> subprocess.Popen:
    """The stage as a process, its stderr merged into stdout unless `stderr` says otherwise."""
    return subprocess.Popen(
        [sys.executable, "-m", "cifar_study.stages.train", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )


def test_sigterm_saves_and_a_rerun_resumes_to_the_identical_result(project: Path) -> None:
    write_params(project, {"epochs": 4})
    straight = _run_stage(stage_args(run="straight"), project)
    assert straight.wait(timeout=300) == 0, straight.stdout.read()

    interrupted = _run_stage(stage_args(run="resumed"), project, stderr=subprocess.PIPE)
    checkpoint = project / "resumed" / "checkpoints" / "resnet" / "last.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline:  # first epoch done
        time.sleep(0.01)
    interrupted.send_signal(signal.SIGTERM)
    output, err = interrupted.communicate(timeout=120)
    assert interrupted.returncode == 128 + signal.SIGTERM, output + err
    assert "error: stopped by SIGTERM; checkpoint saved" in err, err
    assert "stopped by SIGTERM" not in output
    assert not (project / "resumed" / "models").exists()  # nothing exported from a partial run

    rerun = _run_stage(stage_args(run="resumed"), project)
    output = rerun.communicate(timeout=300)[0]
    assert rerun.returncode == 0, output
    assert "resuming from" in output

    a = torch.load(project / "straight" / "models" / "resnet" / "model.pt", weights_only=True)
    b = torch.load(project / "resumed" / "models" / "resnet" / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert logged_steps(project / "resumed" / "metrics" / "resnet") == [1, 2, 3, 4]
    for name in ("train/loss", "val/acc"):
        with open(
            project / "straight" / "metrics" / "resnet" / "plots" / "metrics" / f"{name}.tsv"
        ) as f:
            expected = [row[name.split("/")[1]] for row in csv.DictReader(f, delimiter="\t")]
        with open(
            project / "resumed" / "metrics" / "resnet" / "plots" / "metrics" / f"{name}.tsv"
        ) as f:
            got = [row[name.split("/")[1]] for row in csv.DictReader(f, delimiter="\t")]
        assert got == expected, name


def test_same_seed_twice_gives_identical_metrics(project: Path) -> None:
    assert train.main(stage_args(run="one")) == 0
    assert train.main(stage_args(run="two")) == 0
    one = json.loads((project / "one" / "metrics" / "resnet" / "metrics.json").read_text())
    two = json.loads((project / "two" / "metrics" / "resnet" / "metrics.json").read_text())
    for m in (one, two):
        m.pop("epoch_time_s"), m.pop("images_per_s")
    assert one == two


def test_each_model_has_its_own_train_fraction(project: Path) -> None:
    write_params(project, {"precision": "fp32", "train_fraction": {"resnet": 0.5, "densenet": 1}})
    assert train.main(stage_args("resnet")) == 0
    info = json.loads((project / "run" / "models" / "resnet" / "model.json").read_text())
    assert info["params"]["train_fraction"] == 0.5
    params = load_params(project / "params.yaml")
    runtime = resolve_runtime("cpu", "fp32", channels_last=False)
    data = project / "data" / "prepared"

    def fingerprint_with(fractions: dict[str, float]) -> str:
        changed = dataclasses.replace(params, train_fraction=fractions)
        return train.fingerprint(train.TrainingJob.resolve(changed, "resnet", data), runtime)

    base = fingerprint_with({"resnet": 0.5, "densenet": 1.0})
    assert fingerprint_with({"resnet": 0.5, "densenet": 0.1}) == base
    assert fingerprint_with({"resnet": 0.25, "densenet": 1.0}) != base


@pytest.mark.parametrize(
    ("option", "function"),
    [("whiten_stem", "whiten_first_conv"), ("zero_init_residual", "zero_residual_branches")],
)
@pytest.mark.parametrize("on", [True, False])
def test_an_initialisation_option_runs_only_when_set(
    project: Path, monkeypatch: pytest.MonkeyPatch, option: str, function: str, on: bool
) -> None:
    calls = []
    real = getattr(train, function)
    monkeypatch.setattr(train, function, lambda *args: calls.append(real(*args)))
    write_params(project, {"precision": "fp32", option: on, "epochs": 1})
    assert train.main(stage_args("resnet")) == 0
    assert len(calls) == on
    info = json.loads((project / "run" / "models" / "resnet" / "model.json").read_text())
    assert info["params"][option] is on
