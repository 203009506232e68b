"""DVC stage `compare`: set the trained models side by side, like the study's README, measured.

    python -m cifar_study.stages.compare --models resnet densenet --model-root models \
        --eval-root metrics/eval --robustness-root metrics/robustness \
        --out metrics/comparison.json --report plots/comparison

The first model is the reference the others are measured against. Without --robustness-root
the comparison leaves robustness out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from cifar_study.card import ModelCard
from cifar_study.cli import user_errors_exit
from cifar_study.errors import DataError
from cifar_study.evaluation.comparison import (
    compare,
    curves_png,
    markdown_report,
    per_class_png,
    robustness_png,
    summarise,
)
from cifar_study.fileio import atomic_path, write_json


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: {exc}; run the stage that writes it first") from None


def _read_model(
    model: str, model_root: Path, eval_root: Path, robustness_root: Path | None
) -> dict[str, Any]:
    """What the comparison needs of one model, from its model.json, eval metrics.json and,
    when given, robustness metrics.json."""
    card_path, eval_path = model_root / model / "model.json", eval_root / model / "metrics.json"
    card, evaluation = ModelCard.read(card_path), _read_json(eval_path)
    robustness_path = None if robustness_root is None else robustness_root / model / "metrics.json"
    robustness = None if robustness_path is None else _read_json(robustness_path)
    training = card.training
    if training is None:
        raise DataError(
            f"{card_path} holds converted weights, with no training record to compare: "
            "run the train stage"
        )
    try:
        runtime = training.runtime
        row = summarise(card, training, evaluation, robustness)
        return {
            "row": row,
            "per_corruption": None
            if robustness is None
            else {
                "clean": robustness["robustness"]["clean_acc"],
                **{
                    name: scores["mean"]
                    for name, scores in robustness["robustness"].items()
                    if isinstance(scores, dict)
                },
            },
            "history": training.history,
            "per_class": evaluation["test"]["per_class_acc"],
            "trained": f"{training.epochs} epochs on {runtime['device']} ({runtime['precision']})",
        }
    except (KeyError, TypeError) as exc:
        read = ", ".join(str(p) for p in (card_path, eval_path, robustness_path) if p)
        raise DataError(f"one of {read} lacks {exc}; rerun the stages that write them") from None


def _paired_outcomes(models: list[str], eval_root: Path) -> dict[str, np.ndarray]:
    """Per model, whether each test image was classified right (plain, no TTA), read from the
    evaluate stage's confusion-matrix data: one {actual, predicted} row per test image, in the
    split's order. Refuses models that were not evaluated on the same images."""
    correct, reference = {}, None
    for model in models:
        path = eval_root / model / "plots" / "sklearn" / "confusion_matrix.json"
        rows = _read_json(path)
        try:
            actual = [row["actual"] for row in rows]
            correct[model] = np.array([row["predicted"] == row["actual"] for row in rows])
        except (KeyError, TypeError):
            raise DataError(f"{path}: expected a list of {{actual, predicted}} rows") from None
        if reference is None:
            reference = (model, actual)
        elif actual != reference[1]:
            raise DataError(
                f"{model} and {reference[0]} were evaluated on different test images (the labels "
                f"in {path} differ): evaluate both on the same prepared data"
            )
    return correct


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True, help="model names, reference first")
    parser.add_argument("--model-root", type=Path, required=True, help="holds <model>/model.json")
    parser.add_argument("--eval-root", type=Path, required=True, help="holds <model>/metrics.json")
    parser.add_argument(
        "--robustness-root", type=Path, help="holds <model>/metrics.json of robustness@<model>"
    )
    parser.add_argument("--out", type=Path, required=True, help="comparison JSON to write")
    parser.add_argument("--report", type=Path, required=True, help="folder for report.md + PNGs")
    args = parser.parse_args(argv)
    if len(args.models) < 2:
        parser.error("--models needs at least two model names")
    repeated = sorted({m for m in args.models if args.models.count(m) > 1})
    if repeated:
        parser.error(f"--models names {', '.join(repeated)} more than once; name each model once")

    models = {
        m: _read_model(m, args.model_root, args.eval_root, args.robustness_root)
        for m in args.models
    }
    correct = _paired_outcomes(args.models, args.eval_root)
    comparison = compare({m: model["row"] for m, model in models.items()}, correct)
    curves_png({m: model["history"] for m, model in models.items()}, args.report / "curves.png")
    per_class_png(
        {m: model["per_class"] for m, model in models.items()},
        args.report / "per_class_accuracy.png",
    )
    charts = ["curves.png", "per_class_accuracy.png"]
    if args.robustness_root is not None:
        robustness_png(
            {m: model["per_corruption"] for m, model in models.items()},
            models[args.models[0]]["row"]["corruption_test_images"],
            args.report / "robustness.png",
        )
        charts.append("robustness.png")
    trained = ", ".join(f"{m} {model['trained']}" for m, model in models.items())
    context = (
        f"Measured by this pipeline run: {trained}; accuracy of the final weights on the test "
        "split, which played no part in training or selection."
    )
    with atomic_path(args.report / "report.md") as tmp:
        tmp.write_text(markdown_report(comparison, charts, context))
    # Last: the metrics file appears only once the report and charts beside it are written.
    write_json(args.out, comparison)
    print(f"comparison: {args.out}, report: {args.report / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
