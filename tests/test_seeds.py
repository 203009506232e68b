"""Seed-sweep statistics: spread per model, pairing by seed, the sign test, the chart."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
from PIL import Image

from cifar_study.evaluation.seeds import SeedRun, seeds_png, sentences, summarise

RUNS = [
    SeedRun("s0", 0, {"resnet": 0.90, "densenet": 0.88}),
    SeedRun("s1", 1, {"resnet": 0.91, "densenet": 0.89}),
    SeedRun("s2", 2, {"resnet": 0.89, "densenet": 0.90}),
]


def test_summary_per_model_and_paired_by_seed() -> None:
    summary = summarise(RUNS, ["resnet", "densenet"])
    resnet = summary["models"]["resnet"]
    assert resnet["mean"] == pytest.approx(0.90)
    assert resnet["std"] == pytest.approx(statistics.stdev([0.90, 0.91, 0.89]))
    assert (resnet["min"], resnet["max"]) == (0.89, 0.91)
    paired = summary["resnet_versus"]["densenet"]
    assert paired["mean_difference"] == pytest.approx((0.02 + 0.02 - 0.01) / 3)
    assert paired["std_difference"] == pytest.approx(statistics.stdev([0.02, 0.02, -0.01]))
    assert (paired["ahead_in"], paired["behind_in"]) == (2, 1)
    assert paired["sign_test_p"] == pytest.approx(1.0)  # 2 wins of 3: a coin
    assert summary["seeds"] == [0, 1, 2]
    assert summary["runs"]["s2"] == {"seed": 2, "resnet": 0.89, "densenet": 0.90}


def test_sentences_say_the_spread_and_the_pairing() -> None:
    lines = sentences(summarise(RUNS, ["resnet", "densenet"]))
    assert lines[0].startswith(
        "resnet: test accuracy 90.00% ± 1.00 points (mean ± standard deviation"
    )
    assert "over 3 seeds; range 89.00-91.00%" in lines[0]
    assert lines[2].startswith("resnet minus densenet: +1.00 points ± 1.73 over 3 seeds")
    assert "ahead with 2 of them, behind with 1 (sign test p = 1)" in lines[2]


@pytest.mark.parametrize(
    ("runs", "message"),
    [
        (RUNS[:1], "need runs with at least 2 seeds"),
        ([RUNS[0], SeedRun("again", 0, RUNS[1].test_acc)], "each seed must appear once"),
    ],
)
def test_too_few_or_repeated_seeds_are_refused(runs: list[SeedRun], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        summarise(runs, ["resnet", "densenet"])


def test_chart_is_written(tmp_path: Path) -> None:
    seeds_png(summarise(RUNS, ["resnet", "densenet"]), tmp_path / "seeds.png")
    with Image.open(tmp_path / "seeds.png") as image:
        assert image.format == "PNG" and image.width > 200
