"""DVC stage `robustness@<model>`: a trained model's accuracy on corrupted test images.

    python -m cifar_study.stages.robustness --model-dir models/resnet --params params.yaml \
        --data data/prepared --live metrics/robustness/resnet --plots plots/robustness/resnet

Each corruption of `params.yaml`'s `robustness` section is applied to the test split at each
severity (made on the fly, seeded: see evaluation/corruptions.py) and the model is scored on the
result. Writes the accuracy per corruption and severity and the mean corruption accuracy
(metrics), DVCLive plots of accuracy by severity and by corruption, and a heat-map PNG.
"""

from __future__ import annotations

import time

from dvclive import Live

from cifar_study.cli import scoring_parser, user_errors_exit
from cifar_study.config import load_params
from cifar_study.data.prepared import evenly_spaced
from cifar_study.device import resolve_runtime
from cifar_study.evaluation.robustness import heatmap_png, measure
from cifar_study.inference import load_for_test


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    parser = scoring_parser(__doc__, "folder for the heat-map PNG")
    args = parser.parse_args(argv)

    params = load_params(args.params)
    settings = params.robustness
    runtime = resolve_runtime(params.device, params.precision, params.channels_last)
    model, card, test = load_for_test(args.model_dir, args.data, runtime)
    # Evenly spaced test images, when the section asks for fewer than all (slow machines).
    count = len(test) if settings.test_images is None else settings.test_images
    index = evenly_spaced(len(test), count)
    count = len(index)

    def report(name: str, row: dict[int, float]) -> None:
        accuracies = ", ".join(f"severity {s} {a:.1%}" for s, a in row.items())
        print(f"{name}: {accuracies} ({time.perf_counter() - started:.0f} s)", flush=True)

    started = time.perf_counter()
    result = measure(
        model,
        test.images[index],
        test.labels[index],
        (card.normalization.mean, card.normalization.std),
        settings.corruptions,
        settings.severities,
        settings.seed,
        params.eval_batch_size,
        runtime,
        progress=report,
    )
    seconds = time.perf_counter() - started

    with Live(str(args.live), dvcyaml=False, save_dvc_exp=False) as live:
        for name, value in result.metrics().items():
            live.log_metric(name, value, plot=False)
        live.log_metric("robustness/test_images", count, plot=False)
        live.log_metric("robustness/seconds", seconds, plot=False)
        # Severity 0 is the clean images: the curve starts where the model stands without harm.
        by_severity = {0: result.clean, **result.per_severity()}
        live.log_plot(
            "accuracy_by_severity",
            [{"severity": s, "accuracy": a} for s, a in by_severity.items()],
            x="severity",
            y="accuracy",
            template="linear",
            title=f"{card.model}: mean accuracy over corruptions by severity (0: clean)",
        )
        live.log_plot(
            "accuracy_by_corruption",
            [{"corruption": n, "accuracy": a} for n, a in result.per_corruption().items()],
            x="accuracy",
            y="corruption",
            template="bar_horizontal",
            title=f"{card.model}: accuracy per corruption, mean over severities",
        )

    heatmap_png(
        result,
        f"{card.model}: test accuracy under corruption ({count:,} images)",
        args.plots / "heatmap.png",
    )
    print(
        f"{card.model}: clean {result.clean:.2%}, mean corruption accuracy "
        f"{result.mean:.2%} over {len(settings.corruptions)} corruptions x "
        f"{len(settings.severities)} severities on {count:,} test images, {seconds:.0f} s "
        f"on {runtime.device}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
