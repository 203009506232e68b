"""Paired significance of one model's lead: McNemar's exact test and the bootstrap interval."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from cifar_study.evaluation.significance import format_p, mcnemar_exact, paired_comparison


def outcomes(only_a: int, only_b: int, both: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Correct/incorrect flags for two models with the given counts of each kind of image."""
    a = [True] * only_a + [False] * only_b + [True] * both + [False] * neither
    b = [False] * only_a + [True] * only_b + [True] * both + [False] * neither
    return np.array(a), np.array(b)


@pytest.mark.parametrize(
    ("only_a", "only_b", "p"),
    [
        (0, 0, 1.0),
        (0, 5, 2 / 32),  # the one most extreme split of 5 coins, both sides
        (1, 4, 2 * (1 + 5) / 32),
        (3, 3, 1.0),
    ],
)
def test_mcnemar_exact_by_hand(only_a: int, only_b: int, p: float) -> None:
    assert mcnemar_exact(only_a, only_b) == pytest.approx(p)


@pytest.mark.parametrize(("only_a", "only_b"), [(10, 12), (59, 40), (300, 250), (7, 0), (1, 30)])
def test_mcnemar_exact_matches_scipy_binomial_test(only_a: int, only_b: int) -> None:
    expected = binomtest(only_a, only_a + only_b, 0.5).pvalue
    assert mcnemar_exact(only_a, only_b) == pytest.approx(expected, rel=1e-9)


def test_bootstrap_interval_matches_the_paired_normal_interval() -> None:
    """With 10,000 images the percentile bootstrap is close to the Wald interval of a paired
    difference, (b - c)/n ± 1.96 · sqrt((b + c)/n − ((b − c)/n)²) / sqrt(n)."""
    only_a, only_b, n = 420, 342, 10_000
    result = paired_comparison(*outcomes(only_a, only_b, 8_500, n - 8_500 - only_a - only_b))
    d = (only_a - only_b) / n
    half = 1.959964 * math.sqrt((only_a + only_b) / n - d**2) / math.sqrt(n)
    assert result.difference == pytest.approx(0.0078)
    assert result.ci_low == pytest.approx(d - half, abs=0.0006)
    assert result.ci_high == pytest.approx(d + half, abs=0.0006)
    assert result.only_a_correct == only_a and result.only_b_correct == only_b
    assert result.mcnemar_p == pytest.approx(binomtest(only_a, only_a + only_b).pvalue)


def test_same_seed_same_interval_and_identical_models_have_no_difference() -> None:
    a, b = outcomes(30, 20, 900, 50)
    assert paired_comparison(a, b, seed=3) == paired_comparison(a, b, seed=3)
    same = paired_comparison(a, a)
    assert (same.difference, same.ci_low, same.ci_high, same.mcnemar_p) == (0, 0, 0, 1)


def test_sentence_names_the_leader_and_says_whether_it_is_chance() -> None:
    behind = paired_comparison(*outcomes(100, 160, 9_000, 740))
    text = behind.sentence("resnet", "densenet")
    assert text.startswith("densenet is ahead of resnet by 0.60 points on 10,000 test images")
    low, high = (float(x) for x in text.split("CI [")[1].split("]")[0].split(", "))
    assert 0 < low < 0.60 < high
    assert "more than chance would give" in text
    close = paired_comparison(*outcomes(50, 45, 9_000, 905)).sentence("resnet", "densenet")
    assert close.startswith("resnet is ahead of densenet by 0.05 points")
    assert "not clearly more than chance" in close
    level = paired_comparison(*outcomes(40, 40, 9_000, 920)).sentence("resnet", "densenet")
    assert level.startswith("resnet and densenet are level on 10,000 test images")


def test_p_values_read_as_people_write_them() -> None:
    assert [format_p(p) for p in (0.5, 0.0123, 3e-6)] == ["p = 0.5", "p = 0.012", "p < 0.0001"]


@pytest.mark.parametrize(("a", "b"), [([True, False], [True]), ([], []), ([[True]], [[True]])])
def test_unpaired_or_empty_outcomes_are_refused(a: list, b: list) -> None:
    with pytest.raises(ValueError, match="one correct/incorrect flag per image"):
        paired_comparison(np.array(a), np.array(b))
