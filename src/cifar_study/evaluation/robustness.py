"""Accuracy on corrupted copies of the test split, per corruption and severity, and its summary.

The corrupted images are made on the fly (`corruptions.py`), so no CIFAR-10-C download is
needed. The summary follows Hendrycks & Dietterich (2019): the mean corruption accuracy is the
plain mean over every corruption and severity evaluated, beside the clean accuracy it falls from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # stages run headless
import matplotlib.pyplot as plt
import numpy as np
from torch import nn

from cifar_study.device import DeviceSplit, Runtime, evaluate
from cifar_study.evaluation.corruptions import corrupt
from cifar_study.evaluation.figures import save_figure


@dataclass(frozen=True)
class Robustness:
    """Accuracy on the clean images and on each (corruption, severity) copy of them."""

    clean: float
    accuracy: dict[str, dict[int, float]]  # corruption -> severity -> accuracy

    @property
    def mean(self) -> float:
        """The mean corruption accuracy: over every corruption and severity evaluated."""
        return float(np.mean([a for row in self.accuracy.values() for a in row.values()]))

    def per_corruption(self) -> dict[str, float]:
        """Each corruption's accuracy averaged over its severities."""
        return {name: float(np.mean(list(row.values()))) for name, row in self.accuracy.items()}

    def per_severity(self) -> dict[int, float]:
        """Each severity's accuracy averaged over the corruptions."""
        severities = next(iter(self.accuracy.values())).keys()
        return {s: float(np.mean([row[s] for row in self.accuracy.values()])) for s in severities}

    def metrics(self) -> dict[str, float]:
        """Flat metrics, as `metrics.json` holds them."""
        return {
            "robustness/clean_acc": self.clean,
            "robustness/mean_corruption_acc": self.mean,
            "robustness/relative_acc": self.mean / self.clean if self.clean else 0.0,
            **{f"robustness/{name}/mean": acc for name, acc in self.per_corruption().items()},
            **{
                f"robustness/{name}/severity_{s}": acc
                for name, row in self.accuracy.items()
                for s, acc in row.items()
            },
        }


def measure(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    normalization: tuple[Sequence[float], Sequence[float]],
    corruptions: Sequence[str],
    severities: Sequence[int],
    seed: int,
    batch_size: int,
    runtime: Runtime,
    progress: Callable[[str, dict[int, float]], None] | None = None,
) -> Robustness:
    """Evaluate `model` on `images` as they are and under each corruption at each severity;
    `progress` hears each corruption's accuracies as soon as they are known."""
    mean, std = normalization

    def on(x: np.ndarray) -> float:
        split = DeviceSplit(x, labels, tuple(mean), tuple(std), runtime.device)
        return evaluate(model, split, batch_size, runtime)["acc"]

    clean, table = on(images), {}
    for name in corruptions:
        table[name] = {s: on(corrupt(images, name, s, seed)) for s in severities}
        if progress is not None:
            progress(name, table[name])
    return Robustness(clean=clean, accuracy=table)


def heatmap_png(result: Robustness, title: str, path: Path) -> None:
    """Accuracy per corruption (rows) and severity (columns), the clean accuracy in the title."""
    names = list(result.accuracy)
    severities = list(next(iter(result.accuracy.values())))
    grid = np.array([[result.accuracy[n][s] for s in severities] for n in names])
    fig, ax = plt.subplots(figsize=(2.6 + 0.7 * len(severities), 1.2 + 0.42 * len(names)))
    image = ax.imshow(grid * 100, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="test accuracy (%)")
    for (i, j), value in np.ndenumerate(grid):
        ax.text(
            j,
            i,
            f"{100 * value:.1f}",
            ha="center",
            va="center",
            fontsize=8,
            color="black" if value > 0.6 else "white",
        )
    ax.set_xticks(range(len(severities)), [str(s) for s in severities])
    ax.set_yticks(range(len(names)), [n.replace("_", " ") for n in names])
    ax.set_xlabel("severity")
    ax.set_title(
        f"{title}\nclean {100 * result.clean:.1f}%, mean over corruptions {100 * result.mean:.1f}%",
        fontsize=10,
    )
    save_figure(fig, path)
