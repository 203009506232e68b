"""What a trained model is judged by: accuracy (with flip TTA), calibration, speed."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from cifar_study.device import DeviceSplit, Runtime, split_logits


@torch.no_grad()
def predict_proba(
    model: nn.Module, split: DeviceSplit, batch_size: int, runtime: Runtime, translate: int = 0
) -> dict[str, np.ndarray]:
    """Class probabilities N×C for a split, without and with test-time augmentation.

    "plain": the images as they are; "flip": averaged with the mirror images; with `translate`
    > 0 also "flip_translate": the mean over 6 views, each image and its mirror shifted by
    (0, 0), (+t, +t) and (−t, −t) pixels with reflected borders (the multi-crop TTA of the fast
    CIFAR-10 trainers). One pass computes them all, so no forward is run twice.
    """
    outputs: dict[str, list[torch.Tensor]] = {"plain": [], "flip": []}
    if translate:
        outputs["flip_translate"] = []

    def views(x: torch.Tensor) -> Iterator[torch.Tensor]:
        """The batch and its mirror, then each shifted batch and its mirror."""
        for view in (x, *shifts(x, translate)) if translate else (x,):
            yield view
            yield view.flip(3)

    for logits, _ in split_logits(model, split, batch_size, runtime, views):
        plain, flipped, *shifted = (view.softmax(1) for view in logits)
        outputs["plain"].append(plain.cpu())
        outputs["flip"].append(((plain + flipped) / 2).cpu())
        if translate:
            total = plain + flipped
            for moved, mirrored in zip(shifted[::2], shifted[1::2], strict=True):
                total += moved + mirrored
            outputs["flip_translate"].append((total / 6).cpu())
    return {name: torch.cat(parts).numpy() for name, parts in outputs.items()}


def shifts(x: torch.Tensor, pixels: int) -> list[torch.Tensor]:
    """`x` moved by (+pixels, +pixels) and (−pixels, −pixels), reflecting at the borders."""
    h, w = x.shape[-2:]
    padded = nn.functional.pad(x, (pixels,) * 4, mode="reflect")
    far = 2 * pixels
    return [padded[..., :h, :w], padded[..., far : far + h, far : far + w]]


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of the true class."""
    picked = probs[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(picked, 1e-12, None)).mean())


def per_class_accuracy(predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Accuracy within each true class (NaN for a class with no examples)."""
    correct = np.bincount(labels, weights=predicted == labels, minlength=num_classes)
    counts = np.bincount(labels, minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return correct / counts


def reliability(
    probs: np.ndarray, labels: np.ndarray, bins: int = 15
) -> tuple[float, list[dict[str, float]]]:
    """Expected calibration error (Guo et al., 2017) and the per-bin table behind it.

    Predictions are grouped by confidence into equal-width bins; ECE is the count-weighted mean
    gap between each bin's confidence and its accuracy.
    """
    confidence = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        members = which == b
        count = int(members.sum())
        if count:
            acc, conf = float(correct[members].mean()), float(confidence[members].mean())
            ece += count / len(labels) * abs(acc - conf)
        else:
            acc = conf = float("nan")
        table.append(
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "count": count,
                "accuracy": acc,
                "confidence": conf,
            }
        )
    return ece, table


@torch.no_grad()
def inference_speed(
    model: nn.Module,
    runtime: Runtime,
    batch_size: int,
    repeats: int = 10,
    budget_s: float = 5.0,
) -> dict[str, float]:
    """Images/s and median per-batch latency of eval-mode forward passes on random input: up to
    `repeats` timed passes, fewer (never under 3) once they have taken `budget_s`, so that a
    slow model on a CPU (the DenseNet: about 8 s a batch of 256) is not timed for minutes."""
    model.eval()
    x = torch.randn(batch_size, 3, 32, 32, device=runtime.device)
    if runtime.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    times: list[float] = []
    warmup = 2  # the first passes pick kernels and allocate
    for i in range(warmup + repeats):
        start = time.perf_counter()
        with runtime.autocast():
            model(x)
        if runtime.device.type == "cuda":
            torch.cuda.synchronize(runtime.device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
            if len(times) >= min(3, repeats) and sum(times) >= budget_s:
                break
    latency = statistics.median(times)
    return {
        "images_per_s": batch_size / latency,
        "batch_latency_ms": latency * 1000,
        "batch_size": batch_size,
    }
