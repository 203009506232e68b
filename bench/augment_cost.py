"""What each on-device augmentation costs per batch, beside one training step of the ResNet.

    python bench/augment_cost.py [--batch-size 512] [--repeats 20]

Times each operation of the data path on a batch of random 32×32 images on this machine's CPU
(median of `--repeats` after a warm-up), then one training step (forward, backward, SGD update)
of the study's ResNet under the committed params.yaml's runtime settings, and prints each
operation's share of that step.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from training_step import training_step

from cifar_study.architectures import ResNetSettings
from cifar_study.cli import positive_int, user_errors_exit
from cifar_study.config import load_params
from cifar_study.device import resolve_runtime
from cifar_study.models import build_model
from cifar_study.training import augment

ROOT = Path(__file__).resolve().parents[1]


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of `fn()` over `repeats` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=positive_int, default=512)
    parser.add_argument("--repeats", type=positive_int, default=20)
    parser.add_argument(
        "--width", type=positive_int, default=32, help="ResNet width (32: the study's)"
    )
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    n = args.batch_size
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    pixels = images.float()
    operations: dict[str, Callable[[], object]] = {
        "crop (pad 4)": lambda: augment.random_crop(images, 4),
        "flip": lambda: augment.random_flip(images),
        "colour jitter 0.2": lambda: augment.color_jitter(pixels, 0.2),
        "rotation 15°": lambda: augment.random_rotation(pixels, 15.0),
        "random erasing 0.2": lambda: augment.random_erasing(pixels, 0.2),
        "cutout 8": lambda: augment.cutout(pixels, 8),
    }

    params = load_params(ROOT / "params.yaml")
    runtime = resolve_runtime("cpu", params.precision, params.channels_last)
    model = build_model("resnet", ResNetSettings(width=args.width))
    memory_format = torch.channels_last if runtime.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    x = ((pixels - 128) / 64).contiguous(memory_format=memory_format)
    y = torch.randint(0, 10, (n,))
    step = training_step(model, x, y, runtime, lr=0.1)
    step_s = median_seconds(step, max(3, args.repeats // 5))
    print(
        f"batch {n}, {torch.get_num_threads()} threads, {runtime.precision_name}; "
        f"one ResNet training step: {step_s * 1e3:.1f} ms"
    )
    print(f"{'operation':<22}{'ms / batch':>12}{'share of a step':>18}")
    total = 0.0
    for name, fn in operations.items():
        seconds = median_seconds(fn, args.repeats)
        total += seconds
        print(f"{name:<22}{seconds * 1e3:>12.2f}{seconds / step_s:>17.1%}")
    print(f"{'all of them':<22}{total * 1e3:>12.2f}{total / step_s:>17.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
