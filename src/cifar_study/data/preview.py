"""A picture of the data: a few training images per class, to eyeball labels and orientation."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # stages run headless; never try to open a window
import matplotlib.pyplot as plt
import numpy as np

from cifar_study.fileio import atomic_path


def save_sample_grid(
    images: np.ndarray, labels: np.ndarray, classes: tuple[str, ...], path: Path, per_class: int = 8
) -> None:
    """Save a PNG with one row per class and the first `per_class` images of that class."""
    height = 0.4 + len(classes) * 0.95
    fig, axes = plt.subplots(
        len(classes), per_class, figsize=(per_class * 0.9, height), squeeze=False
    )
    for row, name in enumerate(classes):
        picks = np.flatnonzero(labels == row)[:per_class]
        for col, ax in enumerate(axes[row]):
            ax.set_axis_off()
            if col < len(picks):
                ax.imshow(images[picks[col]], interpolation="nearest")
        axes[row][0].text(
            -0.08, 0.5, name, ha="right", va="center", fontsize=9, transform=axes[row][0].transAxes
        )
    fig.suptitle(f"The first {per_class} training images of each class", y=1 - 0.08 / height)
    fig.subplots_adjust(
        left=0.18, right=0.99, top=1 - 0.4 / height, bottom=0.01, wspace=0.05, hspace=0.05
    )
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
