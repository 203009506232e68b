"""The engine on one GPU: throughput per model and setting, where a step's time goes, memory,
and how long the ResNet's committed recipe takes to reach a validation accuracy.

    python bench/gpu.py --data data/prepared              # on a machine with one CUDA GPU
    python bench/gpu.py --device cpu --images 64 --batch-size 16 --tiny   # a CPU smoke run

For each model and each setting (eager or torch.compile; fp32 or the GPU's half precision) it
trains the real engine on random images for a warm-up epoch (compiling, autotuning) and timed
epochs, and prints images/s and peak memory. Then, per model, it times the data path (on-device
augmentation) against forward + backward + update on the same batch. With --data (a prepared
folder with a validation split) it trains the ResNet with the committed params.yaml until its
validation accuracy reaches --target or --budget-s runs out, and prints the time. Every figure
comes from this run, on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from cifar_study.cli import positive_int, user_errors_exit
from cifar_study.config import Params, load_params
from cifar_study.data.prepared import PreparedData, Split, load_prepared
from cifar_study.device import Runtime, resolve_runtime
from cifar_study.models import build_model
from cifar_study.models.init import initialise
from cifar_study.training.engine import Trainer

ROOT = Path(__file__).resolve().parents[1]
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
TINY = {"resnet": {"width": 4, "blocks": (1, 1)}, "densenet": {"growth_rate": 4, "blocks": (1, 1)}}


class ReachedTarget(Exception):
    """Raised from the epoch callback to end the time-to-accuracy run."""


def synthetic(images: int) -> PreparedData:
    """Random images and labels: throughput does not depend on what the pixels show."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(images, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, size=images).astype(np.int64)
    empty = Split(x[:0], y[:0])
    classes = tuple(str(i) for i in range(10))
    return PreparedData(classes, MEAN, STD, {"train": Split(x, y), "val": empty, "test": empty})


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(model: str, params: Params, tiny: bool) -> torch.nn.Module:
    settings = dataclasses.replace(params.model(model).settings, **(TINY[model] if tiny else {}))
    torch.manual_seed(0)
    net = build_model(model, settings)
    initialise(net, params.init)
    return net


def throughput(
    model: str, params: Params, runtime: Runtime, data: PreparedData, epochs: int, tiny: bool
) -> tuple[float, float]:
    """Median training images/s over the timed epochs (after one warm-up), and peak memory."""
    if runtime.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(runtime.device)
    run = dataclasses.replace(params, epochs=epochs + 1, warmup_epochs=0.0)
    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(build(model, run, tiny), data, run, runtime, Path(scratch) / "c.pt", "b")
        rates = [epoch["images_per_s"] for epoch in trainer.fit()[1:]]
    peak = torch.cuda.max_memory_allocated(runtime.device) if runtime.device.type == "cuda" else 0
    return statistics.median(rates), peak / 2**30


def step_breakdown(
    model: str, params: Params, runtime: Runtime, data: PreparedData, steps: int, tiny: bool
) -> tuple[float, float]:
    """Milliseconds per step of the data path alone and of forward + backward + update alone."""
    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(
            build(model, params, tiny), data, params, runtime, Path(scratch) / "c", "b"
        )
    split, n = trainer.train_split, params.batch_size
    index = torch.arange(n, device=runtime.device) % len(split)

    def data_path() -> None:
        split.batch(index, trainer.augmentation, runtime.channels_last)

    x, y = split.batch(index, trainer.augmentation, runtime.channels_last)

    def compute() -> None:
        trainer._step(x, y)

    return timed(data_path, steps, runtime.device), timed(compute, steps, runtime.device)


def timed(fn: Callable[[], None], steps: int, device: torch.device) -> float:
    """Milliseconds per call, after as many warm-up calls, the device drained on both ends."""
    for _ in range(steps):
        fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / steps * 1e3


def time_to_accuracy(
    params: Params,
    runtime: Runtime,
    data: PreparedData,
    target: float,
    budget_s: float,
    tiny: bool,
) -> str:
    """Train the ResNet with the committed recipe until validation accuracy reaches `target`."""
    start = time.perf_counter()
    reached: list[tuple[int, float]] = []

    def on_epoch(metrics: dict[str, float]) -> None:
        elapsed = time.perf_counter() - start
        epoch = len(reached) + 1
        reached.append((epoch, metrics["val/acc"]))
        print(f"  epoch {epoch}: val acc {metrics['val/acc']:.2%} at {elapsed:.0f} s", flush=True)
        if metrics["val/acc"] >= target or elapsed > budget_s:
            raise ReachedTarget

    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(
            build("resnet", params, tiny), data, params, runtime, Path(scratch) / "c", "b"
        )
        with contextlib.suppress(ReachedTarget):
            trainer.fit(on_epoch=on_epoch)
    elapsed = time.perf_counter() - start
    epoch, best = reached[-1] if reached else (0, 0.0)
    if best >= target:
        return f"reached {target:.0%} validation accuracy after epoch {epoch}, {elapsed:.0f} s"
    return f"not reached in {elapsed:.0f} s ({epoch} epochs, last validation accuracy {best:.2%})"


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (the point) or cpu (a smoke run)")
    parser.add_argument("--models", nargs="+", default=["resnet", "densenet"])
    parser.add_argument(
        "--images", type=positive_int, default=25_600, help="random images per epoch"
    )
    parser.add_argument("--epochs", type=positive_int, default=2, help="timed epochs per setting")
    parser.add_argument(
        "--batch-size", type=positive_int, default=None, help="default: params.yaml's"
    )
    parser.add_argument(
        "--steps", type=positive_int, default=20, help="steps timed in the breakdown"
    )
    parser.add_argument("--tiny", action="store_true", help="tiny networks, for a smoke run")
    parser.add_argument("--modes", nargs="+", default=["eager", "compile"], help="eager, compile")
    parser.add_argument(
        "--precisions", nargs="+", default=None, help="default: fp32 and the device's half"
    )
    parser.add_argument("--data", type=Path, help="prepared data for the time-to-accuracy run")
    parser.add_argument("--target", type=float, default=0.94, help="validation accuracy to reach")
    parser.add_argument("--budget-s", type=float, default=240.0, help="time-to-accuracy limit")
    args = parser.parse_args(argv)

    # Checked before minutes of benchmarking, not after.
    prepared = load_prepared(args.data) if args.data else None
    if prepared is not None and not len(prepared.splits["val"]):
        raise SystemExit(f"--data {args.data} has no validation split to measure accuracy on")
    params = load_params(ROOT / "params.yaml")
    if args.batch_size:
        params = dataclasses.replace(params, batch_size=args.batch_size)
    device = torch.device(args.device)
    # The device's native half precision (what `precision: auto` picks): bf16 on CPUs with
    # AVX-512 BF16 or AMX and on Ampere or newer, fp16 on older GPUs, none on other CPUs.
    half = resolve_runtime(args.device, "auto", False, False, False).precision_name
    precisions = args.precisions or list(dict.fromkeys(["fp32", half]))
    data = synthetic(args.images)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}, torch {torch.__version__}, batch {params.batch_size}, {args.images} images")

    for model in args.models:
        print(f"\n{model}: training images/s (median of {args.epochs} epochs after a warm-up)")
        for mode in args.modes:
            for precision in precisions:
                runtime = resolve_runtime(
                    args.device, precision, params.channels_last, mode == "compile", False
                )
                rate, peak = throughput(model, params, runtime, data, args.epochs, args.tiny)
                print(f"  {mode:8}{precision:6}{rate:10,.0f} images/s   peak {peak:6.2f} GiB")
        runtime = resolve_runtime(args.device, precisions[-1], params.channels_last, False, False)
        data_ms, compute_ms = step_breakdown(model, params, runtime, data, args.steps, args.tiny)
        print(
            f"  one step, eager {precisions[-1]}: data path {data_ms:.2f} ms, "
            f"forward + backward + update {compute_ms:.2f} ms"
        )

    if prepared is not None:
        runtime = resolve_runtime(
            args.device, params.precision, params.channels_last, params.compile, False
        )
        print(f"\nresnet, committed recipe ({runtime.precision_name}, compile={runtime.compile}):")
        result = time_to_accuracy(params, runtime, prepared, args.target, args.budget_s, args.tiny)
        print(f"  {result}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
