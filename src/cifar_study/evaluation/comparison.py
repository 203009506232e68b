"""Compare trained models the way the study did, with every number measured by this run."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import ticker

from cifar_study.card import ModelCard, TrainingRecord
from cifar_study.evaluation.figures import save_figure
from cifar_study.evaluation.significance import PairedComparison, paired_comparison


def summarise(
    card: ModelCard,
    training: TrainingRecord,
    evaluation: dict[str, Any],
    robustness: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One model's row: accuracy, size, cost, fit, time, and robustness when given.
    `training` is the card's training record, `evaluation` the model's eval metrics.json,
    `robustness` its robustness metrics.json."""
    final = training.final
    test = evaluation["test"]
    row = {
        "test_acc": test["acc"],
        "test_acc_flip_tta": test["acc_flip_tta"],
        "test_loss": test["loss"],
        "test_ece": test["ece"],
        "parameters": card.parameters,
        "macs_per_image": card.macs_per_image,
        "test_acc_per_million_parameters": test["acc"] / (card.parameters / 1e6),
        "epochs": training.epochs,
        "train_fraction": training.train_fraction,
        # Logged on augmented, label-smoothed (maybe mixed-up) batches: an upper bound.
        "final_train_loss": final["train/loss"],
        "final_train_acc": final["train/acc"],
        "generalisation_gap_test_minus_train_loss": test["loss"] - final["train/loss"],
        "train_time_s": training.train_time_s,
        "train_images_per_s": float(
            np.median([epoch["images_per_s"] for epoch in training.history])
        ),
        "inference_images_per_s": evaluation["inference"]["images_per_s"],
    }
    if "acc_flip_translate_tta" in test:
        row["test_acc_flip_translate_tta"] = test["acc_flip_translate_tta"]
    if robustness is not None:
        scored = robustness["robustness"]
        row["corruption_acc_mean"] = scored["mean_corruption_acc"]
        row["corruption_acc_relative"] = scored["relative_acc"]
        row["corruption_test_images"] = scored["test_images"]
    if "val/loss" in final:
        row["final_val_loss"] = final["val/loss"]
        row["final_val_acc"] = final["val/acc"]
        row["generalisation_gap_val_minus_train_loss"] = final["val/loss"] - final["train/loss"]
    return row


def compare(rows: dict[str, dict[str, Any]], correct: dict[str, np.ndarray]) -> dict[str, Any]:
    """Rows per model plus how the first model stands against each other one. `correct` holds,
    per model, whether it got each test image right (the same images in the same order), for
    the paired test of the accuracy difference (`paired_test`, model a = the first model)."""
    names = list(rows)
    first = rows[names[0]]
    versus = {
        other: {
            "test_acc_gap": first["test_acc"] - rows[other]["test_acc"],
            "test_acc_flip_tta_gap": first["test_acc_flip_tta"] - rows[other]["test_acc_flip_tta"],
            "parameter_ratio": rows[other]["parameters"] / first["parameters"],
            "macs_ratio": rows[other]["macs_per_image"] / first["macs_per_image"],
            "train_time_ratio": rows[other]["train_time_s"] / first["train_time_s"],
            **(
                {
                    "corruption_acc_gap": first["corruption_acc_mean"]
                    - rows[other]["corruption_acc_mean"]
                }
                if "corruption_acc_mean" in first
                else {}
            ),
            "paired_test": dataclasses.asdict(paired_comparison(correct[names[0]], correct[other])),
        }
        for other in names[1:]
    }
    return {"models": rows, f"{names[0]}_versus": versus}


def _points_per_million(value: float) -> str:
    """Accuracy (a fraction) per million parameters, in percentage points: "32.3 points"."""
    return f"{value * 100:,.1f} points"


# Per row: its label, the row's key, and how a value is written.
_TABLE: list[tuple[str, str, Callable[[Any], str]]] = [
    ("Test accuracy (final weights)", "test_acc", "{:.2%}".format),
    ("Test accuracy, flip TTA", "test_acc_flip_tta", "{:.2%}".format),
    ("Test accuracy, flip + translate TTA", "test_acc_flip_translate_tta", "{:.2%}".format),
    ("Test loss", "test_loss", "{:.4f}".format),
    ("Expected calibration error", "test_ece", "{:.2%}".format),
    ("Test accuracy under corruption (mean)", "corruption_acc_mean", "{:.2%}".format),
    ("Under corruption, relative to clean", "corruption_acc_relative", "{:.1%}".format),
    ("Test images scored under corruption", "corruption_test_images", "{:,}".format),
    ("Parameters", "parameters", "{:,}".format),
    ("Multiply-accumulates per image", "macs_per_image", "{:,}".format),
    (
        "Test accuracy per million parameters",
        "test_acc_per_million_parameters",
        _points_per_million,
    ),
    ("Epochs", "epochs", "{}".format),
    ("Share of the train split trained on", "train_fraction", "{:.0%}".format),
    ("Final train loss (augmented batches)", "final_train_loss", "{:.4f}".format),
    ("Final validation loss", "final_val_loss", "{:.4f}".format),
    ("Gap: test loss − train loss", "generalisation_gap_test_minus_train_loss", "{:+.4f}".format),
    ("Training time", "train_time_s", "{:,.0f} s".format),
    ("Training throughput (median epoch)", "train_images_per_s", "{:,.0f} images/s".format),
    ("Inference throughput", "inference_images_per_s", "{:,.0f} images/s".format),
]


def markdown_report(comparison: dict[str, Any], charts: list[str], context: str) -> str:
    """The comparison as a Markdown table with the charts below it."""
    rows = comparison["models"]
    names = list(rows)
    versus = comparison[f"{names[0]}_versus"]
    verdicts = [
        PairedComparison(**diff["paired_test"]).sentence(names[0], other)
        for other, diff in versus.items()
    ]
    lines = [
        f"# {' vs '.join(names)} on the test split",
        "",
        *[line for verdict in verdicts for line in (f"**{verdict}**", "")],
        context,
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for label, key, fmt in _TABLE:
        if all(key in rows[n] for n in names):
            lines.append(f"| {label} | " + " | ".join(fmt(rows[n][key]) for n in names) + " |")
    for other, diff in versus.items():
        lines += [
            "",
            f"The {names[0]}'s test accuracy is {_points(diff['test_acc_gap'])} than the "
            f"{other}'s ({_points(diff['test_acc_flip_tta_gap'])} with flip TTA); the {other} "
            f"has {diff['parameter_ratio']:.2f}× the parameters, "
            f"{diff['macs_ratio']:.2f}× the multiply-accumulates and took "
            f"{diff['train_time_ratio']:.2f}× the training time of the {names[0]}."
            + (
                f" Under corruption the {names[0]}'s mean accuracy is "
                f"{_points(diff['corruption_acc_gap'])} than the {other}'s."
                if "corruption_acc_gap" in diff
                else ""
            ),
        ]
    lines += ["", *[f"![{Path(c).stem}]({c})" for c in charts], ""]
    return "\n".join(lines)


def _points(gap: float) -> str:
    """An accuracy difference in percentage points, as said: "0.78 percentage points higher"."""
    return f"{abs(gap) * 100:.2f} percentage points {'higher' if gap >= 0 else 'lower'}"


_SPLITS = (("train", "--", "train"), ("val", "-", "validation"))  # key prefix, style, label


def _log_ticks_per_decade(low: float, high: float) -> tuple[float, ...]:
    """Where to label a log axis within each decade: densely where the range is narrow (a short
    run's losses may span less than a factor of two), sparsely where it spans decades (a first
    epoch's loss can be 1000× the last), so the labels never crowd."""
    decades = math.log10(high / low)
    if decades <= 0.7:
        return (1, 1.2, 1.5, 2, 3, 5, 7)
    if decades <= 1.5:
        return (1, 2, 3, 5)
    return (1, 2, 5) if decades <= 4 else (1,)


def curves_figure(histories: dict[str, list[dict[str, Any]]]) -> plt.Figure:
    """Loss (log scale), accuracy and the learning rate over training, every model overlaid.

    One colour per model, dashed for train and solid for validation; the x axis counts epochs
    completed, so epoch k's metrics sit at k and the lr samples between.
    """
    fig, (loss, accuracy, lr) = plt.subplots(1, 3, figsize=(15, 4.4), sharex=True)
    for i, (name, history) in enumerate(histories.items()):
        colour = f"C{i}"
        for prefix, style, label in _SPLITS:
            for ax, metric in ((loss, "loss"), (accuracy, "acc")):
                _plot_metric(ax, history, f"{prefix}/{metric}", colour, style, f"{name} {label}")
        lr_label = name if _has_lr_samples(history) else f"{name} (epoch ends only)"
        lr.plot(*_lr_schedule(history), color=colour, label=lr_label)
    loss.set_yscale("log")
    loss.yaxis.set_major_locator(ticker.LogLocator(subs=_log_ticks_per_decade(*loss.get_ylim())))
    loss.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    loss.yaxis.set_minor_formatter(ticker.NullFormatter())
    loss.set(title="loss", ylabel="cross-entropy (log scale)")
    accuracy.yaxis.set_major_formatter(ticker.PercentFormatter(1.0))
    accuracy.set(title="accuracy", ylabel="accuracy")
    lr.set(title="learning rate", ylabel="learning rate", ylim=(0, None))
    lr.legend(fontsize=8)
    for ax in (loss, accuracy, lr):
        ax.set_xlabel("epoch")
        ax.set_xlim(left=0)
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles, labels = loss.get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), frameon=False)
    note = (
        "train: mean over each epoch's augmented batches while the weights changed, its loss "
        "the training loss (label smoothing and mixup included where on); "
    )
    if any("val/loss" in epoch for history in histories.values() for epoch in history):
        note += (
            "validation: plain cross-entropy of the weights (the EMA average if enabled) at the "
            "epoch's end"
        )
    else:
        note += "no validation split (data.val_size: 0)"
    fig.text(0.5, -0.02, note, ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    return fig


def _plot_metric(
    ax: plt.Axes, history: list[dict[str, Any]], key: str, colour: str, style: str, label: str
) -> None:
    """One per-epoch metric at the end of each epoch that logged it, with a dot per epoch."""
    logged = [(epoch, metrics[key]) for epoch, metrics in enumerate(history, 1) if key in metrics]
    if logged:
        epochs, values = zip(*logged, strict=True)
        ax.plot(epochs, values, style, color=colour, marker="o", markersize=2, label=label)


def _has_lr_samples(history: list[dict[str, Any]]) -> bool:
    """Whether every epoch recorded lr samples (the model.json of an older run has none)."""
    return bool(history) and all("lr_samples" in epoch for epoch in history)


def _lr_schedule(history: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """The learning rate against epochs completed: the samples taken within every epoch, or
    without them, each epoch's last lr at the epoch's end."""
    if _has_lr_samples(history):
        samples = [sample for epoch in history for sample in epoch["lr_samples"]]
        return [at for at, _ in samples], [value for _, value in samples]
    return list(range(1, len(history) + 1)), [epoch["lr"] for epoch in history]


def curves_png(histories: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Write curves_figure as a PNG."""
    save_figure(curves_figure(histories), path)


def per_class_png(per_class: dict[str, dict[str, float]], path: Path) -> None:
    """Test accuracy per class, the models side by side."""
    grouped_bars_png(per_class, "test accuracy per class", path)


def robustness_png(per_corruption: dict[str, dict[str, float]], images: int, path: Path) -> None:
    """Accuracy on the clean test images and under each corruption (mean over severities),
    the models side by side; `images`: how many test images were scored."""
    grouped_bars_png(
        per_corruption,
        f"test accuracy under corruption, mean over severities ({images:,} test images)",
        path,
    )


def grouped_bars_png(values: dict[str, dict[str, float]], title: str, path: Path) -> None:
    """Accuracies per category (the inner keys, in the first model's order), one bar per model."""
    names = list(values)
    categories = list(values[names[0]])
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(categories)), 4))
    for i, name in enumerate(names):
        positions = np.arange(len(categories)) + (i - (len(names) - 1) / 2) * width
        bars = ax.bar(positions, [values[name][c] for c in categories], width, label=name)
        ax.bar_label(bars, fmt="{:.1%}", rotation=90, padding=2, fontsize=7)
    labels = [c.replace("_", " ") for c in categories]
    ax.set_xticks(range(len(categories)), labels, rotation=30, ha="right")
    ax.set_ylim(0, 1.15)  # room for the labels above full bars
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.yaxis.set_major_formatter(ticker.PercentFormatter(1.0))
    ax.set(ylabel="test accuracy", title=title)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.08), ncol=len(names), frameon=False)
    save_figure(fig, path)
