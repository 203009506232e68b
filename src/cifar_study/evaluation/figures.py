"""PNG figures of an evaluation, readable without DVC: confusions, calibration, worst mistakes."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # stages run headless
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import ticker

from cifar_study.fileio import atomic_path


def save_figure(fig: plt.Figure, path: Path) -> None:
    """Write `fig` as a PNG atomically and free it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def confusion_matrix_png(
    matrix: np.ndarray, classes: tuple[str, ...], title: str, path: Path
) -> None:
    """Counts with true classes as rows, coloured by the row's share."""
    shares = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.8 + 0.62 * len(classes), 0.8 + 0.55 * len(classes)))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(
            j,
            i,
            str(count),
            ha="center",
            va="center",
            fontsize=7,
            color="white" if shares[i, j] > 0.5 else "black",
        )
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    save_figure(fig, path)


def reliability_png(table: list[dict[str, float]], ece: float, title: str, path: Path) -> None:
    """Accuracy against confidence per bin, a calibrated model following the diagonal, over
    the share of predictions in each bin, which says how much each bar weighs in the ECE."""
    fig, (ax, counts) = plt.subplots(
        2,
        1,
        figsize=(4.4, 5.6),
        sharex=True,
        height_ratios=(3, 1),
        layout="constrained",
    )
    used = [row for row in table if row["count"]]
    lower = [row["lower"] for row in used]
    width = [row["upper"] - row["lower"] for row in used]
    total = sum(row["count"] for row in used)
    bars = {"align": "edge", "width": width, "edgecolor": "black"}
    ax.bar(lower, [row["accuracy"] for row in used], **bars, label="accuracy in the bin")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=f"{title}\nECE {ece:.2%}")
    counts.bar(lower, [row["count"] / max(total, 1) for row in used], **bars, color="grey")
    counts.yaxis.set_major_formatter(ticker.PercentFormatter(1.0, decimals=0))
    counts.set(xlabel="confidence (top predicted probability)", ylabel="share of\npredictions")
    fig.legend(loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    save_figure(fig, path)


def confident_errors_png(
    images: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray,
    classes: tuple[str, ...],
    title: str,
    path: Path,
    count: int = 24,
) -> None:
    """The wrong predictions made with the highest confidence, with true and predicted labels."""
    predicted = probs.argmax(1)
    wrong = np.flatnonzero(predicted != labels)
    worst = wrong[np.argsort(-probs[wrong, predicted[wrong]], kind="stable")][:count]
    columns = 6
    rows = max(1, -(-len(worst) // columns))
    size = (columns * 1.6, 0.5 + rows * 1.9)
    fig, axes = plt.subplots(rows, columns, figsize=size, squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, i in zip(axes.flat, worst, strict=False):
        ax.imshow(images[i], interpolation="nearest")
        ax.set_title(
            f"true {classes[labels[i]]}\npred {classes[predicted[i]]} {probs[i, predicted[i]]:.0%}",
            fontsize=7,
        )
    fig.suptitle(
        f"{title}\ntrue class, predicted class and the probability the model gave it"
        if len(worst)
        else f"{title}: no errors"
    )
    save_figure(fig, path)
