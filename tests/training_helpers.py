"""Small data and recipes for the training tests: fast on two CPU cores, easy to learn."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cifar_study.config import Params, parse_params
from cifar_study.data.prepared import PreparedData, Split
from cifar_study.data.raw import RawDataset
from cifar_study.workspace import pipeline_env

PARAMS_FILE = Path(__file__).resolve().parents[1] / "params.yaml"
CLASSES = ("red", "green", "blue", "grey")
COLOURS = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [120, 120, 120]])

# What every model logs each epoch, under the same names (README and dvc.yaml rely on them).
EPOCH_METRICS = (
    "train/loss",
    "train/acc",
    "val/loss",
    "val/acc",
    "lr",
    "epoch_time_s",
    "images_per_s",
)

TINY_RECIPE: dict[str, Any] = {
    "epochs": 2,
    "batch_size": 16,
    "lr": 0.05,
    "warmup_epochs": 0,
    "cutout": 4,
    "eval_batch_size": 64,
    "channels_last": False,
    "resnet": {"width": 4, "blocks": [1, 1], "dropout": 0.1},
    "densenet": {"growth_rate": 4, "blocks": [1, 1]},
}


# The whole DVC pipeline on digits with tiny networks (workspace overrides): minutes of DVC,
# seconds of training. The end-to-end DVC tests start from it.
TINY_PIPELINE: dict[str, Any] = {
    "data.source": "digits",
    "epochs": 2,
    "batch_size": 64,
    "lr": 0.05,
    "warmup_epochs": 0,
    "flip": False,
    "cutout": 0,
    "resnet.width": 8,
    "resnet.blocks": [1, 1],
    "densenet.growth_rate": 4,
    "densenet.blocks": [2, 2],
}


def tiny_params(**overrides: Any) -> Params:
    """The committed params.yaml with a tiny model and run, plus `overrides` (top-level keys)."""
    raw = yaml.safe_load(PARAMS_FILE.read_text())
    raw.update(TINY_RECIPE)
    raw.update(overrides)
    return parse_params(raw)


def coloured_images(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy images whose class is their colour: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(CLASSES)), n_per_class)
    noise = rng.integers(-30, 30, size=(len(labels), 32, 32, 3))
    images = np.clip(COLOURS[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)


def tiny_raw(n_train: int = 24, n_test: int = 6) -> RawDataset:
    train_images, train_labels = coloured_images(n_train, seed=1)
    test_images, test_labels = coloured_images(n_test, seed=2)
    return RawDataset(CLASSES, train_images, train_labels, test_images, test_labels)


def tiny_prepared(n_train: int = 24, n_val: int = 4) -> PreparedData:
    """In-memory prepared data: `n_train` and `n_val` images per class."""
    train = Split(*coloured_images(n_train, seed=1))
    val = Split(*coloured_images(n_val, seed=3))
    test = Split(*coloured_images(n_val, seed=2))
    return PreparedData(
        CLASSES, (0.4, 0.4, 0.4), (0.3, 0.3, 0.3), {"train": train, "val": val, "test": test}
    )


def writing_bytecode(env: dict[str, str]) -> dict[str, str]:
    """`env` with Python's bytecode writing on, as on users' machines: DVC hashes the package
    folders that stages depend on, so tests of DVC behaviour must see the __pycache__ it makes."""
    return {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run_in(cwd: Path, *command: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run `command` in `cwd` as a user would: this environment, bytecode on, no DVC analytics,
    the checkout's src/ importable; a failure shows its output."""
    env = {
        **writing_bytecode(pipeline_env()),
        "DVC_NO_ANALYTICS": "1",
        "PYTHONPATH": "src",
    }
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}"
    return done


def dvc_in(cwd: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """`dvc ARGS` in `cwd`, through `run_in`."""
    return run_in(cwd, sys.executable, "-m", "dvc", *args, timeout=timeout)


def import_every_stage(workspace: Path, env: dict[str, str]) -> None:
    """Import each stage module from `workspace`'s src/ with bytecode writing on."""
    modules = ["download", "prepare", "train", "evaluate", "compare"]
    code = "; ".join(f"import cifar_study.stages.{m}" for m in modules)
    subprocess.run(
        [sys.executable, "-c", code],
        cwd=workspace,
        env={**writing_bytecode(env), "PYTHONPATH": "src"},
        check=True,
    )
    assert list((workspace / "src" / "cifar_study" / "training").glob("__pycache__/*.pyc"))
