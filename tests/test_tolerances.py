"""Tolerances set from perturbed runs: factor x the largest deviation, rounded up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cifar_study.errors import ConfigError, StudyError
from cifar_study.tooling import tolerances
from cifar_study.tooling.workspace import PARTIAL_RUN

FILE = "metrics/eval/resnet/metrics.json"


def run(root: Path, acc: float, loss: float) -> Path:
    path = root / FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"test": {"acc": acc, "loss": loss}, "parameters": 7}))
    return root


@pytest.mark.parametrize(
    ("value", "rounded"),
    [
        (0.0, 0.0),
        (0.0123, 0.013),
        (0.013, 0.013),
        (1.2301, 1.3),
        (0.0098, 0.0098),
        (0.00995, 0.01),
        (250.1, 260.0),
        (3e-13, 3e-13),  # a tiny deviation stays a tolerance, not zero
        (1.01e-15, 1.1e-15),
    ],
)
def test_round_up_keeps_two_significant_digits(value: float, rounded: float) -> None:
    assert tolerances.round_up(value) == pytest.approx(rounded, rel=1e-9, abs=0)


def test_tolerance_is_factor_times_the_largest_deviation(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    expected = tmp_path / "expected.json"
    spec = {"expected": 0, "tolerance": 0}
    expected.write_text(
        json.dumps({FILE: {"test.acc": spec, "test.loss": spec, "parameters": spec}})
    )
    recorded = run(tmp_path / "recorded", acc=0.80, loss=0.60)
    seed1 = run(tmp_path / "seed1", acc=0.79, loss=0.64)
    threads1 = run(tmp_path / "threads1", acc=0.815, loss=0.61)
    args = [str(expected), str(recorded), str(seed1), str(threads1), "--factor", "2"]
    assert tolerances.main(args) == 0
    written = json.loads(expected.read_text())[FILE]
    assert written["test.acc"] == {"expected": 0.80, "tolerance": pytest.approx(0.03)}
    assert written["test.loss"] == {"expected": 0.60, "tolerance": pytest.approx(0.08)}
    assert written["parameters"] == {"expected": 7, "tolerance": 0}
    assert "review with `git diff`" in capsys.readouterr().out


def test_a_metric_missing_from_a_perturbed_run_is_an_error(tmp_path: Path) -> None:
    expectations = {FILE: {"test.acc": {"expected": 0, "tolerance": 0}}}
    run(tmp_path / "recorded", acc=0.8, loss=0.6)
    (tmp_path / "broken" / FILE).parent.mkdir(parents=True)
    (tmp_path / "broken" / FILE).write_text("{}")
    with pytest.raises(StudyError, match=r"broken: metrics/eval/resnet/metrics.json: test.acc"):
        tolerances.derived_tolerances(
            expectations, tmp_path / "recorded", [tmp_path / "broken"], factor=2
        )


def test_a_partial_run_counts_for_the_files_it_wrote(tmp_path: Path) -> None:
    other = "metrics/eval/densenet/metrics.json"
    spec = {"expected": 0, "tolerance": 0}
    expectations = {FILE: {"test.acc": spec}, other: {"test.acc": dict(spec)}}
    recorded = run(tmp_path / "recorded", acc=0.8, loss=0.6)
    (recorded / other).parent.mkdir(parents=True)
    (recorded / other).write_text(json.dumps({"test": {"acc": 0.4}}))
    partial = tmp_path / "densenet-only"
    (partial / other).parent.mkdir(parents=True)
    (partial / other).write_text(json.dumps({"test": {"acc": 0.43}}))
    # Unmarked, it is a run that failed to write the ResNet's metrics.
    with pytest.raises(
        StudyError, match=r"densenet-only: metrics/eval/resnet.*test.acc is missing"
    ):
        tolerances.derived_tolerances(expectations, recorded, [partial], factor=2)
    (partial / PARTIAL_RUN).write_text("evaluate@densenet\n")
    with pytest.raises(StudyError, match=r"no perturbed run wrote metrics/eval/resnet.*test.acc"):
        tolerances.derived_tolerances(expectations, recorded, [partial], factor=2)
    whole = run(tmp_path / "seed1", acc=0.81, loss=0.6)
    (whole / other).parent.mkdir(parents=True)
    (whole / other).write_text(json.dumps({"test": {"acc": 0.41}}))
    result = tolerances.derived_tolerances(expectations, recorded, [partial, whole], factor=2)
    assert result[FILE]["test.acc"]["tolerance"] == pytest.approx(0.02)
    assert result[other]["test.acc"]["tolerance"] == pytest.approx(0.06)  # the partial run's
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / PARTIAL_RUN).write_text("prepare\n")
    with pytest.raises(StudyError, match="a partial run with none of the expected metrics files"):
        tolerances.derived_tolerances(expectations, recorded, [tmp_path / "empty"], factor=2)


def test_a_non_finite_metric_is_an_error_not_a_zero_deviation(tmp_path: Path) -> None:
    expectations = {FILE: {"test.acc": {"expected": 0, "tolerance": 0}}}
    recorded = run(tmp_path / "recorded", acc=0.8, loss=0.6)
    diverged = run(tmp_path / "diverged", acc=float("nan"), loss=0.6)
    with pytest.raises(StudyError, match=r"diverged: .*test.acc is nan, not a finite number"):
        tolerances.derived_tolerances(expectations, recorded, [diverged], factor=2)
    # Nor is a diverged run recorded as the one to expect.
    with pytest.raises(StudyError, match=r"missing or not finite: .*test.acc = nan"):
        tolerances.derived_tolerances(expectations, diverged, [recorded], factor=2)


@pytest.mark.parametrize(("perturbed", "factor"), [([], 2.0), (["x"], 0.5), (["x"], float("nan"))])
def test_no_runs_or_a_factor_below_one_is_refused(perturbed: list[str], factor: float) -> None:
    expectations = {FILE: {"test.acc": {"expected": 0, "tolerance": 0}}}
    with pytest.raises(ConfigError):
        tolerances.derived_tolerances(expectations, Path("r"), [Path(p) for p in perturbed], factor)
