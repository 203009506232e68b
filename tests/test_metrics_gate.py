"""The CI gate on reproduced metrics: passes within tolerance, fails on drift or absence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cifar_study.errors import StudyError
from cifar_study.tooling import metrics_gate

EXPECTED = {
    "metrics/eval/resnet/metrics.json": {
        "test.acc": {"expected": 0.80, "tolerance": 0.01},
        "parameters": {"expected": 2797610, "tolerance": 0},
    }
}


def write(root: Path, acc: float) -> Path:
    path = root / "metrics/eval/resnet/metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"test": {"acc": acc}, "parameters": 2797610}))
    expected = root / "expected.json"
    expected.write_text(json.dumps(EXPECTED))
    return expected


def test_within_tolerance_passes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    expected = write(tmp_path, 0.805)
    assert metrics_gate.main(["--expected", str(expected), "--root", str(tmp_path)]) == 0
    assert "all 2 metrics within tolerance" in capsys.readouterr().out


def test_drift_fails_with_a_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    expected = write(tmp_path, 0.78)
    assert metrics_gate.main(["--expected", str(expected), "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "test.acc" in out and "0.8" in out and "0.78" in out and "±0.01" in out
    assert "DRIFT" in out and "1 of 2 metrics missing or outside their tolerance" in out


def test_missing_metric_or_file_fails(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    expected = write(tmp_path, 0.8)
    (tmp_path / "metrics/eval/resnet/metrics.json").unlink()
    assert metrics_gate.main(["--expected", str(expected), "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert out.count("DRIFT") == 2 and "2 of 2 metrics missing" in out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[]", "expected a non-empty mapping of metrics files"),
        ('{"m.json": {}}', "m.json: expected a non-empty mapping of metrics"),
        ('{"m.json": 5}', "m.json: expected a non-empty mapping of metrics"),
        ('{"m.json": {"acc": {"expected": 0.8}}}', "m.json: acc: expected {'expected'"),
        ('{"m.json": {"acc": {"expected": "0.8", "tolerance": 0}}}', "'0.8' is not a finite"),
        ('{"m.json": {"acc": {"expected": 0.8, "tolerance": Infinity}}}', "inf is not a finite"),
        ('{"m.json": {"acc": {"expected": 0.8, "tolerance": -0.1}}}', "must be >= 0"),
        ("{not json", "cannot read expectations"),
    ],
)
def test_bad_expectations_are_a_clear_error(
    text: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    assert metrics_gate.main(["--expected", str(bad), "--root", str(tmp_path)]) == 1
    assert message in capsys.readouterr().err


def test_update_keeps_metrics_and_tolerances_and_replaces_values(tmp_path: Path) -> None:
    (tmp_path / "m.json").write_text(json.dumps({"test": {"acc": 0.91}, "step": 4}))
    expectations = {
        "m.json": {
            "test.acc": {"expected": 0.5, "tolerance": 0.02},
            "step": {"expected": 1, "tolerance": 0},
        }
    }
    assert metrics_gate.updated_expectations(expectations, tmp_path) == {
        "m.json": {
            "test.acc": {"expected": 0.91, "tolerance": 0.02},
            "step": {"expected": 4.0, "tolerance": 0},
        }
    }


def test_update_refuses_when_a_metric_is_missing(tmp_path: Path) -> None:
    (tmp_path / "m.json").write_text(json.dumps({"test": {}}))
    expectations = {"m.json": {"test.acc": {"expected": 0.5, "tolerance": 0.02}}}
    with pytest.raises(StudyError, match=r"metrics missing or not finite: m\.json: test\.acc"):
        metrics_gate.updated_expectations(expectations, tmp_path)


@pytest.mark.parametrize(("which", "acc"), [("expected", 0.80), ("got", 0.805)])
def test_write_renders_the_gated_metrics_alone_as_metrics_files(
    which: str, acc: float, tmp_path: Path
) -> None:
    expected = write(tmp_path, 0.805)  # the reproduction under tmp_path holds test.acc 0.805
    out = tmp_path / "out"
    args = ["--expected", str(expected), "--root", str(tmp_path), "--write", which]
    assert metrics_gate.main([*args, "--out", str(out)]) == 0
    written = json.loads((out / "metrics/eval/resnet/metrics.json").read_text())
    assert written == {"test": {"acc": acc}, "parameters": 2797610}


def test_write_got_leaves_out_a_metric_this_reproduction_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    expected = write(tmp_path, 0.805)
    spec = {"expected": 0.8, "tolerance": 0.01}
    expectations = json.loads(expected.read_text())
    expectations["metrics/train/resnet/metrics.json"] = {"val.acc": spec}
    expected.write_text(json.dumps(expectations))
    out = tmp_path / "out"
    args = ["--expected", str(expected), "--root", str(tmp_path), "--write", "got"]
    assert metrics_gate.main([*args, "--out", str(out)]) == 0
    assert not (out / "metrics/train/resnet/metrics.json").exists()
    written = json.loads((out / "metrics/eval/resnet/metrics.json").read_text())
    assert written == {"test": {"acc": 0.805}, "parameters": 2797610}
    err = capsys.readouterr().err
    assert "left out: metrics/train/resnet/metrics.json: val.acc" in err


def test_write_needs_out(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    expected = write(tmp_path, 0.8)
    assert metrics_gate.main(["--expected", str(expected), "--write", "got"]) == 1
    assert "--write and --out go together" in capsys.readouterr().err
