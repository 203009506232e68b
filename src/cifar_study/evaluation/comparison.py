"""Compare trained models the way the study did, with every number measured by this run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from cifar_study.evaluation.figures import save_figure


def summarise(model_info: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
    """One model's row: accuracy, size, cost, fit, time. `evaluation` is its eval metrics.json."""
    final = model_info["final"]
    test = evaluation["test"]
    row = {
        "test_acc": test["acc"],
        "test_acc_flip_tta": test["acc_flip_tta"],
        "test_loss": test["loss"],
        "test_ece": test["ece"],
        "parameters": model_info["parameters"],
        "macs_per_image": model_info["macs_per_image"],
        "test_acc_per_million_parameters": test["acc"] / (model_info["parameters"] / 1e6),
        "epochs": model_info["epochs"],
        "train_fraction": model_info["params"]["train_fraction"],
        # Logged on augmented, label-smoothed (maybe mixed-up) batches: an upper bound.
        "final_train_loss": final["train/loss"],
        "final_train_acc": final["train/acc"],
        "generalisation_gap_test_minus_train_loss": test["loss"] - final["train/loss"],
        "train_time_s": model_info["train_time_s"],
        "train_images_per_s": float(
            np.median([epoch["images_per_s"] for epoch in model_info["history"]])
        ),
        "inference_images_per_s": evaluation["inference"]["images_per_s"],
    }
    if "acc_flip_translate_tta" in test:
        row["test_acc_flip_translate_tta"] = test["acc_flip_translate_tta"]
    if "val/loss" in final:
        row["final_val_loss"] = final["val/loss"]
        row["final_val_acc"] = final["val/acc"]
        row["generalisation_gap_val_minus_train_loss"] = final["val/loss"] - final["train/loss"]
    return row


def compare(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Rows per model plus how the first model stands against each other one."""
    names = list(rows)
    first = rows[names[0]]
    versus = {
        other: {
            "test_acc_gap": first["test_acc"] - rows[other]["test_acc"],
            "test_acc_flip_tta_gap": first["test_acc_flip_tta"] - rows[other]["test_acc_flip_tta"],
            "parameter_ratio": rows[other]["parameters"] / first["parameters"],
            "macs_ratio": rows[other]["macs_per_image"] / first["macs_per_image"],
            "train_time_ratio": rows[other]["train_time_s"] / first["train_time_s"],
        }
        for other in names[1:]
    }
    return {"models": rows, f"{names[0]}_versus": versus}


_TABLE = [
    ("Test accuracy (final weights)", "test_acc", "{:.2%}"),
    ("Test accuracy, flip TTA", "test_acc_flip_tta", "{:.2%}"),
    ("Test accuracy, flip + translate TTA", "test_acc_flip_translate_tta", "{:.2%}"),
    ("Test loss", "test_loss", "{:.4f}"),
    ("Expected calibration error", "test_ece", "{:.2%}"),
    ("Parameters", "parameters", "{:,}"),
    ("Multiply-accumulates per image", "macs_per_image", "{:,}"),
    ("Test accuracy per million parameters", "test_acc_per_million_parameters", "{:.2%}"),
    ("Epochs", "epochs", "{}"),
    ("Share of the train split trained on", "train_fraction", "{:.0%}"),
    ("Final train loss (augmented batches)", "final_train_loss", "{:.4f}"),
    ("Final validation loss", "final_val_loss", "{:.4f}"),
    ("Gap: test loss − train loss", "generalisation_gap_test_minus_train_loss", "{:+.4f}"),
    ("Training time", "train_time_s", "{:,.0f} s"),
    ("Training throughput (median epoch)", "train_images_per_s", "{:,.0f} images/s"),
    ("Inference throughput", "inference_images_per_s", "{:,.0f} images/s"),
]


def markdown_report(comparison: dict[str, Any], charts: list[str], context: str) -> str:
    """The comparison as a Markdown table with the charts below it."""
    rows = comparison["models"]
    names = list(rows)
    lines = [
        f"# {' vs '.join(names)} on the test split",
        "",
        context,
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for label, key, fmt in _TABLE:
        if all(key in rows[n] for n in names):
            lines.append(
                f"| {label} | " + " | ".join(fmt.format(rows[n][key]) for n in names) + " |"
            )
    for other, diff in comparison[f"{names[0]}_versus"].items():
        lines += [
            "",
            f"{names[0]} against {other}: test accuracy {diff['test_acc_gap']:+.2%} "
            f"({diff['test_acc_flip_tta_gap']:+.2%} with flip TTA); {other} has "
            f"{diff['parameter_ratio'] - 1:+.1%} parameters, {diff['macs_ratio']:.2f}× the "
            f"multiply-accumulates and took {diff['train_time_ratio']:.2f}× the training time.",
        ]
    lines += ["", *[f"![{Path(c).stem}]({c})" for c in charts], ""]
    return "\n".join(lines)


def curves_png(histories: dict[str, list[dict[str, float]]], path: Path) -> None:
    """Loss, accuracy and learning rate per epoch, every model overlaid."""
    panels = [
        ("loss", ["train/loss", "val/loss"]),
        ("accuracy", ["train/acc", "val/acc"]),
        ("learning rate", ["lr"]),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, (title, keys) in zip(axes, panels, strict=True):
        for name, history in histories.items():
            for key in keys:
                values = [epoch[key] for epoch in history if key in epoch]
                if values:
                    style = "--" if key.startswith("train") else "-"
                    ax.plot(range(1, len(values) + 1), values, style, label=f"{name} {key}")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend(fontsize=7)
    save_figure(fig, path)


def per_class_png(per_class: dict[str, dict[str, float]], path: Path) -> None:
    """Test accuracy per class, the models side by side."""
    names = list(per_class)
    classes = list(per_class[names[0]])
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(classes)), 4))
    for i, name in enumerate(names):
        positions = np.arange(len(classes)) + (i - (len(names) - 1) / 2) * width
        ax.bar(positions, [per_class[name][c] for c in classes], width, label=name)
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("test accuracy")
    ax.legend()
    save_figure(fig, path)
