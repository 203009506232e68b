"""Training throughput of the engine against a baseline loop written the way the study's is.

    python bench/train_throughput.py [--model resnet] [--batch-size 512] [--images 5120]
        [--runs 3] [--compile]

Both train the same model at the same batch size on the same images, on this machine, in this
run. The baseline is a torchvision DataLoader with PIL transforms (random crop with padding 4,
horizontal flip, to-tensor, normalise), 2 workers, fp32, NCHW. The engine runs with the
committed params.yaml's runtime settings (on a CPU: bf16 autocast where native, channels_last),
data held as one uint8 tensor on the device, augmentation batched. Prints images/s, the median
of `--runs` timed epochs after one warm-up epoch each.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from cifar_study.cli import positive_int, user_errors_exit
from cifar_study.config import load_params
from cifar_study.data.prepared import PreparedData, Split
from cifar_study.device import resolve_runtime
from cifar_study.models import build_model
from cifar_study.training.engine import Trainer

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
ROOT = Path(__file__).resolve().parents[1]


class PILImages(Dataset):
    """uint8 arrays served as PIL images, as torchvision's CIFAR10 dataset does."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: T.Compose) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def baseline_epoch(model: torch.nn.Module, loader: DataLoader) -> float:
    """One epoch of a plain fp32 loop; returns images per second."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    model.train()
    seen, start = 0, time.perf_counter()
    for x, y in loader:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(y)
    return seen / (time.perf_counter() - start)


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet", help="registered model name")
    parser.add_argument("--batch-size", type=positive_int, default=512)
    parser.add_argument("--images", type=positive_int, default=5120, help="images per timed epoch")
    parser.add_argument("--runs", type=positive_int, default=3, help="timed epochs per loop")
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the engine's model (params: false)"
    )
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.images, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=args.images).astype(np.int64)
    classes = tuple(str(i) for i in range(10))

    params = load_params(ROOT / "params.yaml")
    # One trainer for all epochs, so that compiled kernels and allocators are reused as in a run.
    params = dataclasses.replace(
        params,
        batch_size=args.batch_size,
        epochs=args.runs + 1,
        warmup_epochs=0.0,
        compile=args.compile or params.compile,
    )
    runtime = resolve_runtime(
        params.device, params.precision, params.channels_last, params.compile, params.deterministic
    )
    settings = params.model(args.model).settings
    empty = Split(images[:0], labels[:0])
    data = PreparedData(
        classes, MEAN, STD, {"train": Split(images, labels), "val": empty, "test": empty}
    )
    with tempfile.TemporaryDirectory() as scratch:
        torch.manual_seed(0)
        trainer = Trainer(
            build_model(args.model, settings),
            data,
            params,
            runtime,
            Path(scratch) / "checkpoint.pt",
            "bench",
        )
        # images_per_s times the training steps alone, not the checkpoint writes; the first
        # epoch warms up (and compiles) and is left out.
        engine_rates = [epoch["images_per_s"] for epoch in trainer.fit()[1:]]

    transform = T.Compose(
        [
            T.RandomCrop(32, padding=4),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(MEAN, STD),
        ]
    )
    loader = DataLoader(
        PILImages(images, labels, transform),
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=2,
        drop_last=True,
        persistent_workers=True,
    )
    model = build_model(args.model, settings)
    baseline_rates = [baseline_epoch(model, loader) for _ in range(args.runs + 1)][1:]

    engine, baseline = statistics.median(engine_rates), statistics.median(baseline_rates)
    print(
        f"model {args.model}, batch {args.batch_size}, {args.images} images/epoch, "
        f"median of {args.runs} epochs, device {runtime.device}, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"baseline (DataLoader+PIL, 2 workers, fp32, NCHW): {baseline:8.1f} images/s")
    print(
        f"engine ({runtime.precision_name}, channels_last={runtime.channels_last}, "
        f"compile={runtime.compile}, on-device data): {engine:8.1f} images/s"
    )
    print(f"speed-up: {engine / baseline:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
