"""What a trained model is judged by: accuracy (with flip TTA), calibration, speed."""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from torch import nn

from cifar_study.training.augment import DeviceSplit
from cifar_study.training.runtime import Runtime


@torch.no_grad()
def predict_proba(
    model: nn.Module, split: DeviceSplit, batch_size: int, runtime: Runtime
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities N×C for a split, plain and averaged with the mirror image (flip TTA).

    One pass computes both, so the plain forward is not run twice.
    """
    model.eval()
    plain, tta = [], []
    for start in range(0, len(split), batch_size):
        index = torch.arange(start, min(start + batch_size, len(split)), device=split.device)
        x, _ = split.batch(index, channels_last=runtime.channels_last)
        with runtime.autocast():
            probs = model(x).float().softmax(1)
            flipped = model(x.flip(3)).float().softmax(1)
        plain.append(probs.cpu())
        tta.append(((probs + flipped) / 2).cpu())
    return torch.cat(plain).numpy(), torch.cat(tta).numpy()


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
    model: nn.Module, runtime: Runtime, batch_size: int, repeats: int = 10
) -> dict[str, float]:
    """Images/s and median per-batch latency of eval-mode forward passes on random input."""
    model.eval()
    x = torch.randn(batch_size, 3, 32, 32, device=runtime.device)
    if runtime.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        with runtime.autocast():
            model(x)
        if runtime.device.type == "cuda":
            torch.cuda.synchronize(runtime.device)
        if i >= 2:  # the first passes pick kernels and allocate
            times.append(time.perf_counter() - start)
    latency = statistics.median(times)
    return {
        "images_per_s": batch_size / latency,
        "batch_latency_ms": latency * 1000,
        "batch_size": batch_size,
    }
