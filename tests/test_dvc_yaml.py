"""dvc.yaml says exactly what each stage depends on: the package files its command imports and
the params keys its code reads. DVC re-runs a stage only when a listed dependency changes, so a
missing entry means stale results and a superfluous one means needless retraining."""

from __future__ import annotations

import dataclasses
import functools
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from training_helpers import TINY_RECIPE

from cifar_study.config import Params, load_params
from cifar_study.stages import compare, download, evaluate, prepare, robustness, train

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("resnet", "densenet")


def pipeline_stages() -> dict[str, dict[str, Any]]:
    """Every stage of dvc.yaml by DVC's name (train@resnet, ...), `${item}` substituted."""
    stages = {}
    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        if "foreach" not in stage:
            stages[name] = stage
            continue
        for item in stage["foreach"]:
            body = yaml.safe_dump(stage["do"]).replace("${item}", item)
            stages[f"{name}@{item}"] = yaml.safe_load(body)
    return stages


def stage_module(stage: dict[str, Any]) -> str:
    """The module a stage's command runs (`python -m <module>`)."""
    words = stage["cmd"].split()
    return words[words.index("-m") + 1]


@functools.cache
def imported_package_files(module: str) -> frozenset[str]:
    """The files of src/cifar_study that importing `module` loads, in a fresh interpreter."""
    probe = (
        "import importlib, pathlib, sys\n"
        f"importlib.import_module({module!r})\n"
        "src = pathlib.Path('src').resolve()\n"
        "for m in list(sys.modules.values()):\n"
        "    f = getattr(m, '__file__', None)\n"
        "    if f and pathlib.Path(f).resolve().is_relative_to(src):\n"
        "        print(pathlib.Path(f).resolve().relative_to(src.parent).as_posix())\n"
    )
    env = {**os.environ, "PYTHONPATH": "src"}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return frozenset(done.stdout.split())


@pytest.mark.parametrize("name", sorted(pipeline_stages()))
def test_each_stage_lists_exactly_the_package_files_its_command_imports(name: str) -> None:
    stage = pipeline_stages()[name]
    listed = {d for d in stage["deps"] if d.startswith("src/")}
    for dep in listed:
        assert (ROOT / dep).is_file(), f"{name}: {dep} is not a file (list files, not folders)"
    assert listed == imported_package_files(stage_module(stage))


# ------------------------------------------------------------------------------------- params


def recording(obj: Any, seen: set[str], prefix: str = "") -> Any:
    """A copy of the (frozen) dataclass `obj` that adds each field read to `seen` as a dotted
    key, sections included; methods see the recording copy, so what they read counts too.

    A field with an entry per model records the entry read under its params.yaml key:
    `train_fraction.resnet`, and `resnet` for the architecture sections, which sit at the top
    level rather than under the field's name."""
    cls = type(obj)
    # Fields whose own name is no params.yaml key: only their entries are recorded.
    unnamed = {f.name for f in dataclasses.fields(cls) if "sections" in f.metadata}
    names = {f.name for f in dataclasses.fields(cls)} - unnamed

    def getattribute(self: Any, name: str) -> Any:
        if name in names:
            seen.add(prefix + name)
        return object.__getattribute__(self, name)

    copy = object.__new__(
        type(f"Recording{cls.__name__}", (cls,), {"__getattribute__": getattribute})
    )
    for field in dataclasses.fields(cls):
        value = getattr(obj, field.name)
        if dataclasses.is_dataclass(value):
            value = recording(value, seen, prefix + field.name + ".")
        elif isinstance(value, Mapping):
            within = prefix if field.name in unnamed else prefix + field.name + "."
            value = RecordingMapping(value, seen, within)
        object.__setattr__(copy, field.name, value)
    return copy


class RecordingMapping(Mapping):
    """A read-only view of an entry-per-model field that records each entry read."""

    def __init__(self, entries: Mapping[str, Any], seen: set[str], prefix: str) -> None:
        self.entries, self.seen, self.prefix = entries, seen, prefix

    def __getitem__(self, key: str) -> Any:
        self.seen.add(self.prefix + key)
        value = self.entries[key]
        if dataclasses.is_dataclass(value):
            return recording(value, self.seen, self.prefix + key + ".")
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


def is_covered(key: str, listed: list[str]) -> bool:
    """A key is covered by its own entry or by an entry for a section that holds it."""
    return any(key == entry or key.startswith(entry + ".") for entry in listed)


def leaves(seen: set[str]) -> set[str]:
    """The recorded keys that are values, not sections (a section read alone is a leaf too)."""
    return {key for key in seen if not any(other.startswith(key + ".") for other in seen)}


@pytest.fixture
def recorded_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, set[str]]:
    """Run every stage in-process on tiny data and record the params keys each one read."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw.update(TINY_RECIPE)
    raw["data"]["source"] = "digits"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    reads: dict[str, set[str]] = {}

    # Provenance (the checkpoint fingerprint, model.json's "params") copies every recipe key:
    # left in, a key the training never used would still count as read.
    monkeypatch.setattr(
        train,
        "recipe_of",
        lambda params, model: {"train_fraction": model.train_fraction},
    )

    def run(name: str, module: Any, argv: list[str]) -> None:
        seen: set[str] = set()
        monkeypatch.setattr(module, "load_params", lambda path: recording(load_params(path), seen))
        assert module.main(argv) == 0, name
        reads[name] = leaves(seen)

    run("download", download, ["--out", "raw", "--download-dir", "downloads"])
    run("prepare", prepare, ["--raw", "raw", "--out", "prepared", "--samples", "samples.png"])
    for model in MODELS:
        out = ["--out", f"models/{model}", "--checkpoint", f"ckpt/{model}.pt"]
        run(
            f"train@{model}",
            train,
            ["--model", model, "--data", "prepared", *out, "--live", f"live/{model}"],
        )
        run(
            f"evaluate@{model}",
            evaluate,
            [
                "--model-dir",
                f"models/{model}",
                "--data",
                "prepared",
                "--live",
                f"eval/{model}",
                "--plots",
                f"plots/{model}",
            ],
        )
        run(
            f"robustness@{model}",
            robustness,
            [
                "--model-dir",
                f"models/{model}",
                "--data",
                "prepared",
                "--live",
                f"robust/{model}",
                "--plots",
                f"plots/robustness/{model}",
            ],
        )
    compare_argv = [
        "--models",
        *MODELS,
        "--model-root",
        "models",
        "--eval-root",
        "eval",
        "--robustness-root",
        "robust",
        "--out",
        "comparison.json",
        "--report",
        "report",
    ]
    assert compare.main(compare_argv) == 0
    reads["compare"] = set()  # it never loads params.yaml
    return reads


def test_each_stage_lists_exactly_the_params_its_code_reads(
    recorded_reads: dict[str, set[str]],
) -> None:
    stages = pipeline_stages()
    assert set(recorded_reads) == set(stages)
    for name, stage in stages.items():
        listed = stage.get("params", [])
        read = recorded_reads[name]
        unlisted = sorted(key for key in read if not is_covered(key, listed))
        unread = sorted(entry for entry in listed if not any(is_covered(k, [entry]) for k in read))
        assert not unlisted, f"{name} reads params that dvc.yaml does not list: {unlisted}"
        assert not unread, f"{name}: dvc.yaml lists params the stage never reads: {unread}"


def test_the_committed_params_are_the_configs_defaults() -> None:
    """params.yaml and the dataclass defaults are one recipe: a key missing from params.yaml
    would silently take the code's value, and a differing one would mislead the reader."""
    assert load_params(ROOT / "params.yaml") == Params()
