"""DVC stage `evaluate@<model>`: judge a trained model's final weights on the test split.

    python -m cifar_study.stages.evaluate --model-dir models/resnet --params params.yaml \
        --data data/prepared --live metrics/eval/resnet --plots plots/resnet

Accuracy with and without flip test-time augmentation, loss, per-class accuracy, calibration,
the confusion matrix, inference speed. Nothing here feeds back into training or selection.
"""

from __future__ import annotations

import numpy as np
from dvclive import Live
from sklearn.metrics import confusion_matrix

from cifar_study.cli import scoring_parser, user_errors_exit
from cifar_study.config import load_params
from cifar_study.device import DeviceSplit, resolve_runtime
from cifar_study.evaluation import figures
from cifar_study.evaluation.metrics import (
    inference_speed,
    negative_log_likelihood,
    per_class_accuracy,
    predict_proba,
    reliability,
)
from cifar_study.inference import load_for_test


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    parser = scoring_parser(__doc__, "folder for the PNG figures")
    args = parser.parse_args(argv)

    params = load_params(args.params)
    runtime = resolve_runtime(params.device, params.precision, params.channels_last)
    model, card, test = load_for_test(args.model_dir, args.data, runtime)
    classes = card.classes
    # The model's own normalisation (model.json), as predict uses: converted weights may have
    # been trained with other constants than this data's measured ones.
    norm = card.normalization
    split = DeviceSplit(test.images, test.labels, norm.mean, norm.std, runtime.device)

    views = predict_proba(model, split, params.eval_batch_size, runtime, params.tta_translate)
    probs = views["plain"]
    labels = test.labels
    predicted = probs.argmax(1)
    ece, table = reliability(probs, labels)
    per_class = per_class_accuracy(predicted, labels, len(classes))
    speed = inference_speed(model, runtime, params.eval_batch_size)
    metrics = {
        "test/acc": float((predicted == labels).mean()),
        "test/acc_flip_tta": float((views["flip"].argmax(1) == labels).mean()),
        **(
            {
                "test/acc_flip_translate_tta": float(
                    (views["flip_translate"].argmax(1) == labels).mean()
                )
            }
            if "flip_translate" in views
            else {}
        ),
        "test/loss": negative_log_likelihood(probs, labels),
        "test/ece": ece,
        "inference/images_per_s": speed["images_per_s"],
        "inference/batch_latency_ms": speed["batch_latency_ms"],
        "inference/batch_size": speed["batch_size"],
        "parameters": card.parameters,
        "macs_per_image": card.macs_per_image,
        **{f"test/per_class_acc/{c}": float(a) for c, a in zip(classes, per_class, strict=True)},
    }

    with Live(str(args.live), dvcyaml=False, save_dvc_exp=False) as live:
        for name, value in metrics.items():
            live.log_metric(name, value, plot=False)
        # Class names, not indices, so that `dvc plots` labels the matrix readably.
        names = np.asarray(classes)
        live.log_sklearn_plot(
            "confusion_matrix",
            names[labels].tolist(),
            names[predicted].tolist(),
            name="confusion_matrix.json",
        )
        live.log_plot(
            "per_class_accuracy",
            [{"class": c, "accuracy": float(a)} for c, a in zip(classes, per_class, strict=True)],
            x="accuracy",
            y="class",
            template="bar_horizontal",
            title=f"{card.model}: test accuracy per class",
        )

    title = f"{card.model} on the test split"
    figures.confusion_matrix_png(
        confusion_matrix(labels, predicted, labels=range(len(classes))),
        classes,
        title,
        args.plots / "confusion_matrix.png",
    )
    figures.reliability_png(table, ece, title, args.plots / "reliability.png")
    figures.confident_errors_png(
        test.images,
        labels,
        probs,
        classes,
        f"{card.model}: most confident mistakes on the test split",
        args.plots / "confident_errors.png",
    )
    print(
        f"{card.model}: test accuracy {metrics['test/acc']:.2%} "
        f"(flip TTA {metrics['test/acc_flip_tta']:.2%}), loss {metrics['test/loss']:.4f}, "
        f"ECE {ece:.2%}, {speed['images_per_s']:,.0f} images/s on {runtime.device}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
