"""Accuracy under corruption: the table, its summary and the heat-map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cifar_study.device import Runtime
from cifar_study.evaluation.robustness import Robustness, heatmap_png, measure

CPU = Runtime(device=torch.device("cpu"), amp_dtype=None, channels_last=False, compile=False)


class Brightness(nn.Module):
    """Class 1 when the image's mean (normalised) value is above zero, else class 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x.mean((1, 2, 3))
        return torch.stack([-score, score], 1)


def _dark_and_bright(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    labels = np.arange(n) % 2
    images = np.where(labels[:, None, None, None] == 1, 160, 70).astype(np.uint8)
    return np.broadcast_to(images, (n, 8, 8, 3)).copy(), labels.astype(np.int64)


def test_the_summary_averages_over_corruptions_and_severities() -> None:
    result = Robustness(clean=0.9, accuracy={"a": {1: 0.8, 2: 0.6}, "b": {1: 0.7, 2: 0.3}})
    assert result.mean == pytest.approx(0.6)
    assert result.per_corruption() == pytest.approx({"a": 0.7, "b": 0.5})
    assert result.per_severity() == pytest.approx({1: 0.75, 2: 0.45})
    metrics = result.metrics()
    assert metrics["robustness/relative_acc"] == pytest.approx(0.6 / 0.9)
    assert metrics["robustness/b/severity_2"] == 0.3
    assert metrics["robustness/a/mean"] == pytest.approx(0.7)


def test_measure_scores_the_clean_images_and_each_corrupted_copy() -> None:
    images, labels = _dark_and_bright()
    mean_std = ((115 / 255,) * 3, (0.2,) * 3)  # the threshold sits halfway between the classes
    result = measure(
        Brightness(), images, labels, mean_std, ["brightness", "contrast"], [1, 5], 0, 16, CPU
    )
    assert result.clean == 1.0
    # Brightening pushes the dark images over the threshold; the strongest severity more so.
    assert result.accuracy["brightness"][5] == 0.5
    assert set(result.accuracy) == {"brightness", "contrast"}
    assert set(result.accuracy["contrast"]) == {1, 5}


def test_measure_reports_each_corruption_as_it_finishes() -> None:
    images, labels = _dark_and_bright()
    heard: list[tuple[str, dict[int, float]]] = []
    result = measure(
        Brightness(),
        images,
        labels,
        ((0.5,) * 3, (0.2,) * 3),
        ["contrast", "pixelate"],
        [2, 4],
        0,
        16,
        CPU,
        progress=lambda name, row: heard.append((name, dict(row))),
    )
    assert heard == [(name, result.accuracy[name]) for name in ("contrast", "pixelate")]


def test_measure_leaves_the_images_alone_and_is_repeatable() -> None:
    images, labels = _dark_and_bright()
    before = images.copy()
    args = (Brightness(), images, labels, ((0.5,) * 3, (0.2,) * 3), ["gaussian_noise"], [3], 7)
    first = measure(*args, 16, CPU)
    assert np.array_equal(images, before)
    assert measure(*args, 16, CPU) == first


def test_the_heatmap_is_a_png(tmp_path: Path) -> None:
    result = Robustness(clean=0.9, accuracy={"a": {1: 0.8, 2: 0.6}, "b": {1: 0.7, 2: 0.3}})
    heatmap_png(result, "model", tmp_path / "sub" / "heatmap.png")
    with Image.open(tmp_path / "sub" / "heatmap.png") as image:
        assert image.format == "PNG" and image.width > 100
