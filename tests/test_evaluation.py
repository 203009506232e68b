"""Evaluation metrics, figures, the comparison and `predict`, on data the tests make."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image
from training_helpers import PARAMS_FILE, TINY_RECIPE, tiny_prepared, tiny_raw

from cifar_study import predict
from cifar_study.config import CORRUPTIONS, SEVERITIES
from cifar_study.data.prepared import prepare
from cifar_study.device import DeviceSplit, resolve_runtime
from cifar_study.evaluation import comparison, metrics
from cifar_study.stages import compare, evaluate, robustness, train


def test_ece_is_zero_for_calibrated_and_the_gap_for_overconfident_predictions() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    # Confidence 0.75 everywhere and 75% right: calibrated.
    probs = np.array([[0.75, 0.25]] * 3 + [[0.25, 0.75]] * 4 + [[0.75, 0.25]])
    ece, table = metrics.reliability(probs, labels, bins=4)
    assert ece == pytest.approx(0.0)
    assert sum(row["count"] for row in table) == 8
    # Confidence 0.9 everywhere but only 50% right: ECE = 0.4.
    wrong = np.array([[0.9, 0.1]] * 8)
    assert metrics.reliability(wrong, labels, bins=4)[0] == pytest.approx(0.4)


def test_per_class_accuracy_and_nll() -> None:
    labels = np.array([0, 0, 1, 1, 2])
    predicted = np.array([0, 1, 1, 1, 0])
    assert metrics.per_class_accuracy(predicted, labels, 3).tolist() == [0.5, 1.0, 0.0]
    probs = np.full((5, 3), 1 / 3)
    assert metrics.negative_log_likelihood(probs, labels) == pytest.approx(np.log(3))


def test_shifts_move_the_image_and_reflect_at_the_border() -> None:
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    down_right, up_left = metrics.shifts(x, 1)
    assert torch.equal(down_right[0, 0, 1:, 1:], x[0, 0, :3, :3])  # content moved by (+1, +1)
    assert torch.equal(up_left[0, 0, :3, :3], x[0, 0, 1:, 1:])  # and by (-1, -1)
    assert torch.equal(down_right[0, 0, 0, 1:], x[0, 0, 1, :3])  # reflected row, not zeros


def test_translate_tta_averages_six_views() -> None:
    """With a model that returns its input's mean as logits, every view can be computed by hand."""

    class MeanLogits(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack([x.mean((1, 2, 3)), x[:, :, :, :16].mean((1, 2, 3))], dim=1)

    data = tiny_prepared()
    split = DeviceSplit(
        data.splits["val"].images,
        data.splits["val"].labels,
        data.mean,
        data.std,
        torch.device("cpu"),
    )
    runtime = resolve_runtime("cpu", "fp32", channels_last=False)
    views = metrics.predict_proba(MeanLogits(), split, 5, runtime, translate=2)
    x, _ = split.batch(torch.arange(len(split)))
    inputs = [x, *metrics.shifts(x, 2)]
    expected = sum(MeanLogits()(v).softmax(1) + MeanLogits()(v.flip(3)).softmax(1) for v in inputs)
    assert set(views) == {"plain", "flip", "flip_translate"}
    assert np.allclose(views["flip_translate"], (expected / 6).numpy(), atol=1e-6)
    assert np.allclose(views["plain"], MeanLogits()(x).softmax(1).numpy(), atol=1e-6)
    assert "flip_translate" not in metrics.predict_proba(MeanLogits(), split, 5, runtime)


@pytest.mark.parametrize(("pass_s", "timed"), [(0.0, 10), (0.05, 3)])
def test_inference_speed_times_every_repeat_unless_the_budget_runs_out(
    pass_s: float, timed: int
) -> None:
    """A fast model is timed `repeats` times; a slow one stops at 3 once the budget is spent."""

    class Counted(torch.nn.Module):
        calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            Counted.calls += 1
            time.sleep(pass_s)
            return x.mean((2, 3))

    runtime = resolve_runtime("cpu", "fp32", channels_last=False)
    speed = metrics.inference_speed(Counted(), runtime, 4, repeats=10, budget_s=0.1)
    assert Counted.calls == 2 + timed  # two warm-up passes, then the timed ones
    assert speed["batch_size"] == 4 and speed["images_per_s"] > 0
    if pass_s:
        assert speed["batch_latency_ms"] >= 1000 * pass_s


def test_markdown_report_has_every_model_and_the_gap() -> None:
    row = {
        "test_acc": 0.9,
        "test_acc_flip_tta": 0.91,
        "parameters": 1_000_000,
        "test_acc_per_million_parameters": 0.9,
        "macs_per_image": 10,
        "train_time_s": 10.0,
    }
    other = {
        **row,
        "test_acc": 0.8,
        "test_acc_flip_tta": 0.82,
        "parameters": 1_100_000,
        "test_acc_per_million_parameters": 0.8 / 1.1,
        "macs_per_image": 20,
        "train_time_s": 30.0,
    }
    # 10 images: a gets 8 right, b 7; only a gets images 0, 8 and 9, only b images 1 and 2.
    correct = {
        "a": np.array([1, 0, 0, 1, 1, 1, 1, 1, 1, 1], bool),
        "b": np.array([0, 1, 1, 1, 1, 1, 1, 1, 0, 0], bool),
    }
    result = comparison.compare({"a": row, "b": other}, correct)
    versus = result["a_versus"]["b"]
    assert versus["test_acc_gap"] == pytest.approx(0.1)
    assert versus["parameter_ratio"] == pytest.approx(1.1)
    paired = versus["paired_test"]
    assert (paired["n"], paired["only_a_correct"], paired["only_b_correct"]) == (10, 3, 2)
    assert paired["difference"] == pytest.approx(0.1)
    assert paired["mcnemar_p"] == pytest.approx(1.0)  # 3 against 2 disagreements: a coin
    text = comparison.markdown_report(result, ["curves.png"], "context")
    first_line = text.split("\n")[2]
    assert first_line.startswith("**a is ahead of b by 10.00 points on 10 test images, 95% CI [")
    assert first_line.endswith("not clearly more than chance.**")
    assert text.index(first_line) < text.index("context") < text.index("| Test accuracy")
    assert "| Test accuracy (final weights) | 90.00% | 80.00% |" in text
    # Accuracy is a fraction: 0.9 per million parameters is 90 percentage points, not "90.00%".
    assert "| Test accuracy per million parameters | 90.0 points | 72.7 points |" in text
    assert (
        "The a's test accuracy is 10.00 percentage points higher than the b's (9.00 percentage "
        "points higher with flip TTA); the b has 1.10× the parameters, 2.00× the "
        "multiply-accumulates and took 3.00× the training time of the a." in text
    )
    assert "![curves](curves.png)" in text
    smaller = {**other, "test_acc": 0.95, "parameters": 40_000}
    both = {"a": correct["a"], "c": correct["b"]}
    text = comparison.markdown_report(comparison.compare({"a": row, "c": smaller}, both), [], "")
    assert "5.00 percentage points lower" in text and "the c has 0.04× the parameters" in text


def _history(epochs: int, lr_samples: bool) -> list[dict]:
    """Per-epoch metrics as model.json holds them, with a loss spike in the first epoch."""
    return [
        {
            "train/loss": 50.0 if e == 0 else 1.0 / (e + 1),
            "train/acc": 0.5,
            "val/loss": 0.8 / (e + 1),
            "val/acc": 0.6,
            "lr": 0.1,
            **({"lr_samples": [[e, 0.01 * (e + 1)], [e + 0.5, 0.1]]} if lr_samples else {}),
        }
        for e in range(epochs)
    ]


def test_curves_figure_has_a_log_loss_one_colour_per_model_and_the_lr_within_epochs() -> None:
    fig = comparison.curves_figure({"a": _history(3, True), "b": _history(2, False)})
    loss, accuracy, lr = fig.axes
    assert loss.get_yscale() == "log" and accuracy.get_yscale() == "linear"
    for ax in (loss, accuracy):
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert list(lines) == ["a train", "a validation", "b train", "b validation"]
        assert [lines[f"a {split}"].get_linestyle() for split in ("train", "validation")] == [
            "--",
            "-",
        ]
        assert lines["a train"].get_color() == lines["a validation"].get_color()
        assert lines["a train"].get_color() != lines["b train"].get_color()
        assert list(lines["a validation"].get_xdata()) == [1, 2, 3]  # at each epoch's end
    sampled, fallback = lr.get_lines()
    assert sampled.get_color() == loss.get_lines()[0].get_color()
    assert list(sampled.get_xdata()) == [0, 0.5, 1, 1.5, 2, 2.5]
    assert list(sampled.get_ydata()) == [0.01, 0.1, 0.02, 0.1, 0.03, 0.1]
    assert fallback.get_label() == "b (epoch ends only)"
    assert list(fallback.get_xdata()) == [1, 2] and list(fallback.get_ydata()) == [0.1, 0.1]
    assert all(ax.get_xlabel() == "epoch" and ax.get_ylabel() for ax in fig.axes)
    plt.close(fig)


def test_a_narrow_loss_range_still_gets_labelled_ticks() -> None:
    # A 5-epoch run's training loss, 1.84 down to 1.16: less than a factor of two.
    history = [{"train/loss": v, "train/acc": 0.5, "lr": 0.1} for v in (1.84, 1.44, 1.16)]
    fig = comparison.curves_figure({"a": history})
    loss = fig.axes[0]
    fig.canvas.draw()
    low, high = loss.get_ylim()
    labelled = [t for t in loss.get_yticks() if low <= t <= high]
    assert len(labelled) >= 2, labelled  # a scale to read the values off
    plt.close(fig)


def test_a_loss_spanning_decades_gets_labels_that_do_not_crowd() -> None:
    # A first validation loss of 145 falling to 0.15, as in a 4-epoch digits run.
    history = [{"val/loss": v, "val/acc": 0.5, "lr": 0.1} for v in (145.0, 1.7, 0.25, 0.15)]
    fig = comparison.curves_figure({"a": history})
    loss = fig.axes[0]
    fig.canvas.draw()
    low, high = loss.get_ylim()
    labelled = [t for t in loss.get_yticks() if low <= t <= high]
    assert 4 <= len(labelled) <= 12, labelled  # a scale, every label with room of its own
    plt.close(fig)


@pytest.mark.parametrize("with_val", [True, False])
def test_curves_note_describes_validation_only_when_it_is_drawn(with_val: bool) -> None:
    history = _history(2, True)
    if not with_val:  # data.val_size: 0
        history = [
            {k: v for k, v in epoch.items() if not k.startswith("val/")} for epoch in history
        ]
    fig = comparison.curves_figure({"a": history})
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    note = " ".join(text.get_text() for text in fig.texts)
    assert ("a validation" in labels) == with_val
    assert ("validation: plain cross-entropy" in note) == with_val
    assert ("no validation split" in note) == (not with_val)
    plt.close(fig)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder with both tiny models trained, evaluated and compared."""
    import yaml

    root = tmp_path_factory.mktemp("project")
    prepare(tiny_raw(n_train=32), root / "data" / "prepared", val_size=0.25, seed=0)
    raw = yaml.safe_load(PARAMS_FILE.read_text())
    raw.update(TINY_RECIPE)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    for model in ("resnet", "densenet"):
        assert (
            train.main(
                [
                    "--model",
                    model,
                    "--params",
                    str(root / "params.yaml"),
                    "--data",
                    str(root / "data/prepared"),
                    "--out",
                    str(root / "models" / model),
                    "--checkpoint",
                    str(root / "checkpoints" / model / "last.pt"),
                    "--live",
                    str(root / "metrics/train" / model),
                ]
            )
            == 0
        )
        # The two stages that score the trained model take the same command line.
        for stage, live, plots in (
            (evaluate, root / "metrics/eval" / model, root / "plots" / model),
            (robustness, root / "metrics/robustness" / model, root / "plots/robustness" / model),
        ):
            argv = [
                "--model-dir",
                str(root / "models" / model),
                "--params",
                str(root / "params.yaml"),
            ]
            argv += [
                "--data",
                str(root / "data/prepared"),
                "--live",
                str(live),
                "--plots",
                str(plots),
            ]
            assert stage.main(argv) == 0
    assert (
        compare.main(
            [
                "--models",
                "resnet",
                "densenet",
                "--model-root",
                str(root / "models"),
                "--eval-root",
                str(root / "metrics/eval"),
                "--robustness-root",
                str(root / "metrics/robustness"),
                "--out",
                str(root / "metrics/comparison.json"),
                "--report",
                str(root / "plots/comparison"),
            ]
        )
        == 0
    )
    return root


def test_evaluate_writes_metrics_and_figures(trained: Path) -> None:
    for model in ("resnet", "densenet"):
        m = json.loads((trained / "metrics/eval" / model / "metrics.json").read_text())
        assert 0 <= m["test"]["acc"] <= 1 and 0 <= m["test"]["acc_flip_tta"] <= 1
        assert 0 <= m["test"]["acc_flip_translate_tta"] <= 1  # params.yaml: tta_translate 2
        assert set(m["test"]["per_class_acc"]) == {"red", "green", "blue", "grey"}
        assert m["inference"]["images_per_s"] > 0 and m["parameters"] > 0
        confusion = json.loads(
            (trained / "metrics/eval" / model / "plots/sklearn/confusion_matrix.json").read_text()
        )
        assert len(confusion) == 24  # one {actual, predicted} entry per test image
        assert {"actual", "predicted"} <= set(confusion[0])
        for png in ("confusion_matrix.png", "reliability.png", "confident_errors.png"):
            with Image.open(trained / "plots" / model / png) as image:
                assert image.format == "PNG"


def test_model_json_keeps_lr_samples_in_history_and_out_of_the_final_metrics(
    trained: Path,
) -> None:
    info = json.loads((trained / "models/resnet/model.json").read_text())
    assert all(epoch["lr_samples"] for epoch in info["history"])
    assert info["history"][0]["lr_samples"][0][0] == 0.0
    assert "lr_samples" not in info["final"]
    assert not (trained / "metrics/train/resnet/plots/metrics/lr_samples.tsv").exists()


def test_compare_reports_measured_numbers(trained: Path) -> None:
    result = json.loads((trained / "metrics/comparison.json").read_text())
    resnet = json.loads((trained / "metrics/eval/resnet/metrics.json").read_text())
    assert result["models"]["resnet"]["test_acc"] == resnet["test"]["acc"]
    assert set(result["resnet_versus"]) == {"densenet"}
    report = (trained / "plots/comparison/report.md").read_text()
    assert f"{resnet['test']['acc']:.2%}" in report
    assert "| Share of the train split trained on | 100% | 100% |" in report
    paired = result["resnet_versus"]["densenet"]["paired_test"]
    densenet = json.loads((trained / "metrics/eval/densenet/metrics.json").read_text())
    assert paired["n"] == 24
    assert paired["difference"] == pytest.approx(resnet["test"]["acc"] - densenet["test"]["acc"])
    assert report.split("\n")[2].startswith("**")
    epochs = {
        m: json.loads((trained / "models" / m / "model.json").read_text())["epochs"]
        for m in ("resnet", "densenet")
    }
    assert f"resnet {epochs['resnet']} epochs on cpu" in report
    assert f"densenet {epochs['densenet']} epochs on cpu" in report
    for png in ("curves.png", "per_class_accuracy.png", "robustness.png"):
        assert (trained / "plots/comparison" / png).is_file()
    robust = json.loads((trained / "metrics/robustness/resnet/metrics.json").read_text())
    row = result["models"]["resnet"]
    assert row["corruption_acc_mean"] == robust["robustness"]["mean_corruption_acc"]
    assert f"| Test accuracy under corruption (mean) | {row['corruption_acc_mean']:.2%} |" in report
    gap = result["resnet_versus"]["densenet"]["corruption_acc_gap"]
    densenet_row = result["models"]["densenet"]
    assert gap == pytest.approx(row["corruption_acc_mean"] - densenet_row["corruption_acc_mean"])


def test_robustness_scores_every_corruption_and_severity_of_params_yaml(trained: Path) -> None:
    metrics = json.loads((trained / "metrics/robustness/resnet/metrics.json").read_text())
    scored = metrics["robustness"]
    table = {name: scored[name] for name in CORRUPTIONS}
    assert all(
        set(row) == {"mean", *(f"severity_{s}" for s in SEVERITIES)} for row in table.values()
    )
    every = [row[f"severity_{s}"] for row in table.values() for s in SEVERITIES]
    assert scored["mean_corruption_acc"] == pytest.approx(sum(every) / len(every))
    assert scored["test_images"] == 24
    clean = json.loads((trained / "metrics/eval/resnet/metrics.json").read_text())["test"]["acc"]
    assert scored["clean_acc"] == pytest.approx(clean)  # the same images, the same weights
    plots = trained / "metrics/robustness/resnet/plots/custom"
    by_severity = json.loads((plots / "accuracy_by_severity.json").read_text())
    assert [point["severity"] for point in by_severity] == [0, 1, 2, 3, 4, 5]
    assert len(json.loads((plots / "accuracy_by_corruption.json").read_text())) == len(CORRUPTIONS)
    with Image.open(trained / "plots/robustness/resnet/heatmap.png") as image:
        assert image.format == "PNG"


@pytest.mark.parametrize(
    ("file", "drop"),
    [("models/densenet/model.json", "history"), ("metrics/eval/resnet/metrics.json", "test")],
)
def test_compare_names_a_hand_edited_file_that_lacks_a_key(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture, file: str, drop: str
) -> None:
    root = tmp_path / "copy"
    for folder in ("models", "metrics/eval"):
        shutil.copytree(trained / folder, root / folder)
    edited = json.loads((root / file).read_text())
    del edited[drop]
    (root / file).write_text(json.dumps(edited))
    args = [
        "--models",
        "resnet",
        "densenet",
        "--model-root",
        str(root / "models"),
        "--eval-root",
        str(root / "metrics/eval"),
        "--out",
        str(root / "comparison.json"),
        "--report",
        str(root / "report"),
    ]
    assert compare.main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"lacks '{drop}'" in err and str(root / file) in err
    assert not (root / "comparison.json").exists()


def test_compare_refuses_models_evaluated_on_different_images(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = tmp_path / "copy"
    for folder in ("models", "metrics/eval"):
        shutil.copytree(trained / folder, root / folder)
    matrix = root / "metrics/eval/densenet/plots/sklearn/confusion_matrix.json"
    rows = json.loads(matrix.read_text())
    rows[0]["actual"] = next(r["actual"] for r in rows if r["actual"] != rows[0]["actual"])
    matrix.write_text(json.dumps(rows))
    args = ["--models", "resnet", "densenet", "--model-root", str(root / "models")]
    args += ["--eval-root", str(root / "metrics/eval"), "--out", str(root / "c.json")]
    assert compare.main([*args, "--report", str(root / "report")]) == 1
    assert "were evaluated on different test images" in capsys.readouterr().err
    assert not (root / "c.json").exists()


def test_compare_refuses_a_model_named_twice(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A repeated name would silently collapse into one row and compare against nothing."""
    args = ["--models", "resnet", "resnet", "--model-root", str(tmp_path / "models")]
    args += ["--eval-root", str(tmp_path / "eval"), "--out", str(tmp_path / "c.json")]
    with pytest.raises(SystemExit) as exit_info:
        compare.main([*args, "--report", str(tmp_path / "report")])
    assert exit_info.value.code == 2
    assert "--models names resnet more than once; name each model once" in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()


def test_predict_classifies_good_files_and_names_bad_ones(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    big = tmp_path / "big.jpg"
    Image.fromarray(np.full((64, 48, 3), (200, 40, 40), np.uint8)).save(big)
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((32, 32), 120, np.uint8)).save(grey)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    code = predict.main(
        [
            "--model-dir",
            str(trained / "models/resnet"),
            "--json",
            "--top-k",
            "2",
            str(big),
            str(broken),
            str(grey),
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert f"{broken}: not a readable image" in captured.err
    results = json.loads(captured.out)
    assert [r["file"] for r in results] == [str(big), str(broken), str(grey)]
    assert results[0]["note"] == "resized from 48×64 to 32×32"
    assert results[2]["note"] == "converted from L"
    assert len(results[0]["top"]) == 2
    assert sum(t["probability"] for t in results[0]["top"]) <= 1 + 1e-6


class _Payload:
    def __reduce__(self):
        return (print, ("payload ran",))


def test_predict_refuses_a_model_file_with_a_pickle_payload(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.json").write_text((trained / "models/resnet/model.json").read_text())
    torch.save({"conv": _Payload()}, model_dir / "model.pt")
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    assert predict.main(["--model-dir", str(model_dir), str(image)]) == 1
    captured = capsys.readouterr()
    assert "cannot be loaded safely" in captured.err and "payload ran" not in captured.out


def test_a_model_json_that_does_not_fit_model_pt_is_a_clear_error(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    info = json.loads((trained / "models/resnet/model.json").read_text())
    info["architecture"]["width"] = 6  # not the width the weights were trained at
    (model_dir / "model.json").write_text(json.dumps(info))
    (model_dir / "model.pt").write_bytes((trained / "models/resnet/model.pt").read_bytes())
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    assert predict.main(["--model-dir", str(model_dir), str(image)]) == 1
    assert "model.json and model.pt do not describe one model" in capsys.readouterr().err
