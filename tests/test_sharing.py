"""Sharing a run the DVC way, offline (slow): push to a local-folder remote, clone, pull, and
fetch a model from the registry, then predict with what came back."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from PIL import Image
from training_helpers import TINY_PIPELINE, dvc, run_in

from cifar_study.tooling.workspace import commit_all, create_workspace

pytestmark = pytest.mark.slow

TINY = {**TINY_PIPELINE, "epochs": 1}


def run(cwd: Path, *command: str) -> str:
    done = run_in(cwd, *command)
    return done.stdout + done.stderr


def predict(cwd: Path, model_dir: Path, image: Path) -> list[dict]:
    """`predict --json` on one image with the model in `model_dir`."""
    command = ["-m", "cifar_study.predict", "--model-dir", str(model_dir), str(image), "--json"]
    return json.loads(run(cwd, sys.executable, *command))


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A run pushed to a local-folder remote, as `dvc remote add -d` and `dvc push` make it."""
    root = tmp_path_factory.mktemp("sharing")
    origin = create_workspace(root / "origin", TINY)
    dvc(origin, "repro")
    dvc(origin, "remote", "add", "-d", "storage", str(root / "remote"))
    commit_all(origin, "run, with a remote")
    dvc(origin, "push")
    # A registered version is a git tag in GTO's format: the registry serves the latest.
    tag = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost", "tag", "-a"]
    for model in ("resnet", "densenet"):
        run(origin, *tag, f"{model}@v1.0.0", "-m", f"{model} v1.0.0")
    image = root / "digit.png"
    Image.new("RGB", (32, 32), (255, 255, 255)).save(image)
    return {"root": root, "origin": origin, "image": image}


def test_a_clone_pulls_the_run_and_has_nothing_to_reproduce(shared: dict[str, Path]) -> None:
    clone = shared["root"] / "clone"
    run(shared["root"], "git", "clone", "-q", str(shared["origin"]), str(clone))
    dvc(clone, "pull")
    assert "up to date" in dvc(clone, "status")
    assert "Running stage" not in dvc(clone, "repro")
    [result] = predict(clone, clone / "models" / "resnet", shared["image"])
    assert result["top"][0]["class"] in [str(digit) for digit in range(10)]


def test_the_registry_serves_each_model_for_predict(shared: dict[str, Path]) -> None:
    for model in ("resnet", "densenet"):
        out = shared["root"] / f"got-{model}"  # into an empty place, no clone of the project
        dvc(shared["root"], "artifacts", "get", str(shared["origin"]), model, "-o", str(out))
        assert (out / "model.pt").is_file() and (out / "model.json").is_file()
        [result] = predict(shared["origin"], out, shared["image"])
        assert result["top"][0]["class"] in [str(digit) for digit in range(10)]
