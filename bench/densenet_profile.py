"""Where a DenseNet-BC training step spends its time, by kind of operation, per setting.

    python bench/densenet_profile.py [--batch-size 64] [--steps 3] [--device cpu]

Profiles forward + backward + SGD update of the configured DenseNet (params.yaml) with
torch.profiler for fp32 and the device's native half precision (if it has one), NCHW and
channels_last, and prints the step time and the share of the operators' own time (forward and
backward) taken by convolutions, BatchNorm, concatenation, ReLU and the rest. The ResNet is
measured beside it for scale.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from training_step import training_step

from cifar_study.architectures import ModelSettings
from cifar_study.cli import positive_int, user_errors_exit
from cifar_study.config import PRECISIONS, load_params
from cifar_study.device import Runtime, resolve_runtime
from cifar_study.models import build_model

ROOT = Path(__file__).resolve().parents[1]
# Profiler op names (forward and backward kernels) → the kind of work they do.
KINDS = (
    ("convolution", ("conv", "mkldnn_convolution", "cudnn_convolution")),
    ("batchnorm", ("batch_norm",)),
    ("concatenation", ("cat",)),
    ("relu", ("relu", "threshold")),
)


def kind_of(name: str) -> str:
    lowered = name.lower()
    for kind, needles in KINDS:
        if any(n in lowered for n in needles):
            return kind
    return "other"


def measure(
    name: str, settings: ModelSettings, runtime: Runtime, batch: int, steps: int
) -> tuple[float, dict[str, float]]:
    """Seconds per step and the self time per kind of operation, over `steps` steps."""
    torch.manual_seed(0)
    fmt = torch.channels_last if runtime.channels_last else torch.contiguous_format
    model = build_model(name, settings).to(runtime.device, memory_format=fmt).train()
    x = torch.randn(batch, 3, 32, 32, device=runtime.device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), device=runtime.device)
    step = training_step(model, x, y, runtime, lr=0.01)
    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - start) / steps
    activities = [ProfilerActivity.CPU]
    if runtime.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        step()
    shares: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        if event.key.startswith("aten::"):
            time_us = event.self_device_time_total if runtime.device.type == "cuda" else 0
            shares[kind_of(event.key)] += time_us or event.self_cpu_time_total
    total = sum(shares.values()) or 1.0
    return seconds, {kind: value / total for kind, value in shares.items()}


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--steps", type=positive_int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=[p for p in PRECISIONS if p != "auto"],
        help="default: fp32 and the device's half precision, if it has a native one",
    )
    parser.add_argument("--tiny", action="store_true", help="tiny networks, for a smoke run")
    args = parser.parse_args(argv)
    half = resolve_runtime(args.device, "auto", False).precision_name  # checks the device too
    precisions = args.precisions or list(dict.fromkeys(["fp32", half]))
    params = load_params(ROOT / "params.yaml")
    tiny = {"densenet": {"growth_rate": 4, "blocks": (2, 2)}, "resnet": {"width": 4}}
    kinds = ["convolution", "batchnorm", "concatenation", "relu", "other"]
    print(f"batch {args.batch_size}, {torch.get_num_threads()} threads, device {args.device}")
    header = f"{'model':10}{'setting':22}{'s/step':>8}{'img/s':>8}  "
    print(header + "".join(f"{k:>14}" for k in kinds))
    for precision in precisions:
        for channels_last in (False, True):
            runtime = resolve_runtime(args.device, precision, channels_last)
            setting = f"{precision} {'channels_last' if channels_last else 'NCHW'}"
            for name in ("densenet", "resnet"):
                settings = params.model(name).settings
                if args.tiny:
                    settings = dataclasses.replace(settings, **tiny[name])
                seconds, shares = measure(name, settings, runtime, args.batch_size, args.steps)
                row = "".join(f"{shares.get(k, 0):>14.0%}" for k in kinds)
                print(
                    f"{name:10}{setting:22}{seconds:>8.3f}{args.batch_size / seconds:>8.0f}  {row}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
