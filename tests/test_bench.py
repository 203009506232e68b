"""The benchmark scripts run, on tiny sizes on the CPU, so that they cannot rot unnoticed."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import pytest
from training_helpers import tiny_raw

from cifar_study.data.prepared import prepare

BENCH = Path(__file__).resolve().parents[1] / "bench"


def script(name: str) -> dict[str, Any]:
    return runpy.run_path(str(BENCH / name))


def test_augment_cost_prints_every_operation(capsys: pytest.CaptureFixture[str]) -> None:
    script("augment_cost.py")["main"](["--batch-size", "8", "--repeats", "1", "--width", "4"])
    out = capsys.readouterr().out
    for name in ("crop", "flip", "colour jitter", "rotation", "random erasing", "all of them"):
        assert name in out


def test_gpu_benchmark_runs_on_the_cpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prepare(tiny_raw(n_train=12), tmp_path / "prepared", val_size=0.25, seed=0)
    tiny = "--device cpu --images 32 --batch-size 8 --tiny --modes eager --precisions fp32"
    quick = "--epochs 1 --steps 1 --target 0 --budget-s 60"
    script("gpu.py")["main"]([*tiny.split(), *quick.split(), "--data", str(tmp_path / "prepared")])
    out = capsys.readouterr().out
    for model in ("resnet", "densenet"):
        assert f"{model}: training images/s" in out
    assert out.count("eager   fp32") == 2 and out.count("forward + backward + update") == 2
    assert "reached 0% validation accuracy after epoch 1" in out


def test_densenet_profile_prints_a_row_per_model_and_setting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    script("densenet_profile.py")["main"](
        ["--batch-size", "4", "--steps", "1", "--tiny", "--precisions", "fp32"]
    )
    rows = [
        line for line in capsys.readouterr().out.splitlines() if line.startswith(("dense", "res"))
    ]
    assert len(rows) == 4  # two models × (NCHW, channels_last)
    assert all(line.count("%") == 5 for line in rows)
