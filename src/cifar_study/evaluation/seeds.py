"""Run-to-run noise: the same recipe trained with several seeds, per model and paired by seed.

One run of each model says little about which is better; runs that differ only in the seed
show how far the test accuracy moves by chance, and pairing the models by seed (same data
order, same split) shows whether one stays ahead.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from cifar_study.evaluation.figures import save_figure
from cifar_study.evaluation.significance import format_p, mcnemar_exact


@dataclass(frozen=True)
class SeedRun:
    """One pipeline run: its name (experiment or commit), seed and each model's test accuracy."""

    name: str
    seed: int
    test_acc: dict[str, float]


def summarise(runs: list[SeedRun], models: list[str]) -> dict[str, Any]:
    """Mean, standard deviation and range per model; the first model against each other one,
    paired by seed, with a two-sided sign test on how often it was ahead."""
    if len(runs) < 2:
        raise ValueError(
            f"need runs with at least 2 seeds to measure their spread, got {len(runs)}"
        )
    seeds = [run.seed for run in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"each seed must appear once, got seeds {sorted(seeds)}")
    acc = {m: [run.test_acc[m] for run in runs] for m in models}
    per_model = {
        m: {
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values),
            "min": min(values),
            "max": max(values),
        }
        for m, values in acc.items()
    }
    reference = models[0]
    versus = {}
    for other in models[1:]:
        differences = [a - b for a, b in zip(acc[reference], acc[other], strict=True)]
        ahead = sum(d > 0 for d in differences)
        behind = sum(d < 0 for d in differences)
        versus[other] = {
            "mean_difference": statistics.fmean(differences),
            "std_difference": statistics.stdev(differences),
            "ahead_in": ahead,
            "behind_in": behind,
            "sign_test_p": mcnemar_exact(ahead, behind),  # the same binomial test of wins
        }
    return {
        "seeds": seeds,
        "runs": {run.name: {"seed": run.seed, **run.test_acc} for run in runs},
        "models": per_model,
        f"{reference}_versus": versus,
    }


def sentences(summary: dict[str, Any]) -> list[str]:
    """The summary in plain words, one line per model and per pairing."""
    n = len(summary["seeds"])
    models = summary["models"]
    lines = [
        f"{m}: test accuracy {100 * s['mean']:.2f}% ± {100 * s['std']:.2f} points (mean ± standard "
        f"deviation over {n} seeds; range {100 * s['min']:.2f}-{100 * s['max']:.2f}%)"
        for m, s in models.items()
    ]
    reference = next(iter(models))
    for other, d in summary[f"{reference}_versus"].items():
        lines.append(
            f"{reference} minus {other}: {100 * d['mean_difference']:+.2f} points ± "
            f"{100 * d['std_difference']:.2f} over {n} seeds; {reference} ahead with "
            f"{d['ahead_in']} of them, behind with {d['behind_in']} (sign test "
            f"{format_p(d['sign_test_p'])})"
        )
    return lines


def seeds_png(summary: dict[str, Any], path: Path) -> None:
    """Each model's test accuracy per seed, lines joining the same seed across models, and
    each model's mean ± standard deviation beside its points."""
    models = list(summary["models"])
    fig, ax = plt.subplots(figsize=(2.2 + 1.6 * len(models), 4.2))
    for run in summary["runs"].values():
        ax.plot(range(len(models)), [100 * run[m] for m in models], "o-", color="0.6", lw=1)
    for x, m in enumerate(models):
        s = summary["models"][m]
        ax.errorbar(
            x + 0.15,
            100 * s["mean"],
            yerr=100 * s["std"],
            fmt="s",
            color="C3",
            capsize=4,
            label="mean ± standard deviation" if x == 0 else None,
        )
    ax.set_xticks(range(len(models)), models)
    ax.set_xlim(-0.5, len(models) - 0.5)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Test accuracy over {len(summary['seeds'])} seeds (grey: one seed)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    save_figure(fig, path)
