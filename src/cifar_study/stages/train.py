"""DVC stage `train@<model>`: train one registered model on the prepared data.

    python -m cifar_study.stages.train --model resnet --params params.yaml \
        --data data/prepared --out models/resnet --checkpoint checkpoints/resnet/last.pt \
        --live metrics/train/resnet

Runs on the GPU when there is one (params `device: auto`), else on the CPU. Under
`torchrun --nproc_per_node=N` it trains data-parallel, with rank 0 alone logging and saving.
Interrupted (SIGINT/SIGTERM), it saves a checkpoint and exits non-zero; run it again to resume.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from dvclive import Live

from cifar_study.cli import user_errors_exit
from cifar_study.config import SHARED_KEYS, Params, load_params
from cifar_study.data.prepared import PreparedData, load_prepared, read_summary, train_subset
from cifar_study.device import DeviceSplit, Runtime, process_group, resolve_runtime
from cifar_study.errors import ConfigError
from cifar_study.inference import save_trained
from cifar_study.models import build_model, check_model_name
from cifar_study.models.init import initialise, whiten_first_conv
from cifar_study.models.size import count_parameters, macs_per_image
from cifar_study.training.engine import LR_SAMPLES, StopSignal, Trainer, TrainingInterrupted


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="registered model name, e.g. resnet")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    parser.add_argument("--data", type=Path, required=True, help="prepared data folder")
    parser.add_argument("--out", type=Path, required=True, help="folder for model.pt, model.json")
    parser.add_argument("--checkpoint", type=Path, required=True, help="resumable checkpoint file")
    parser.add_argument("--live", type=Path, required=True, help="DVCLive folder for metrics")
    return parser.parse_args(argv)


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    params = load_params(args.params)
    check_model_name(args.model)
    architecture = params.architecture(args.model)
    classes = read_summary(args.data)["classes"]
    torch.manual_seed(params.seed)
    try:
        model = build_model(args.model, num_classes=len(classes), **architecture)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"params.yaml section '{args.model}': {exc}") from None
    initialise(model, params.init)
    size = {"parameters": count_parameters(model), "macs_per_image": macs_per_image(model)}
    runtime = resolve_runtime(
        params.device, params.precision, params.channels_last, params.compile, params.deterministic
    )
    data = train_subset(
        load_prepared(args.data),
        params.train_fraction_of(args.model),
        params.seed,
        key=f"train_fraction.{args.model}",
    )
    if params.whiten_stem:
        whiten_first_conv(model, normalised_sample(data))
    stop = StopSignal()
    with stop.installed(), process_group(runtime):
        trainer = Trainer(
            model,
            data,
            params,
            runtime,
            args.checkpoint,
            fingerprint(args.model, params, args.data, runtime),
            stop,
        )
        trainer.resume()
        live = _open_live(args.live, size, runtime) if runtime.is_main else None
        with live or contextlib.nullcontext():
            for epoch, metrics in enumerate(trainer.history, start=1):
                _log_epoch(live, epoch, metrics)  # replayed from the checkpoint: no gaps
            try:
                trainer.fit(on_epoch=lambda m: _report(live, len(trainer.history), params, m))
            except TrainingInterrupted as exc:
                print(f"error: {exc}", flush=True)
                return 128 + exc.signum
        if runtime.is_main:
            export(trainer, args.model, architecture, classes, data.mean, data.std, size, args.out)
    return 0


def normalised_sample(data: PreparedData, count: int = 10_000) -> torch.Tensor:
    """About `count` training images, evenly strided (the split may be ordered by class),
    normalised as training batches are, N×3×H×W."""
    train = data.splits["train"].images
    sample = train[:: max(1, len(train) // count)]
    split = DeviceSplit(sample, None, data.mean, data.std, torch.device("cpu"))
    return split.batch(torch.arange(len(split)))[0]


def fingerprint(model: str, params: Params, data_dir: Path, runtime: Runtime) -> str:
    """What a checkpoint must match to be resumed: model, recipe, data, the code that trains
    (the data path on the device included), and the resolved runtime (`auto` may resolve
    differently on another machine)."""
    package = Path(__file__).resolve().parents[1]
    code = hashlib.sha256()
    trains = [*package.glob("training/*.py"), *package.glob("models/*.py"), package / "device.py"]
    for path in sorted(trains):
        code.update(path.read_bytes())
    identity = {
        "model": model,
        "architecture": params.architecture(model),
        "recipe": recipe_of(params, model),
        "data": read_summary(data_dir)["sha256"],
        "code": code.hexdigest(),
        "runtime": [runtime.device.type, runtime.precision_name, runtime.world_size],
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def recipe_of(params: Params, model: str) -> dict[str, Any]:
    """The training recipe `model` is trained with: the shared keys and its train fraction."""
    return {
        **{key: getattr(params, key) for key in SHARED_KEYS},
        "train_fraction": params.train_fraction_of(model),
    }


def resolved_runtime(runtime: Runtime) -> dict[str, Any]:
    """What `device: auto` and `precision: auto` became on this machine, and the torch that ran.

    DVC hashes params, not hardware: a run on a GPU and one on a CPU have the same params, so
    these go into the metrics, where `dvc exp show` and `dvc metrics diff` show them."""
    return {
        "device": str(runtime.device),
        "precision": runtime.precision_name,
        "processes": runtime.world_size,
        "torch": torch.__version__,
    }


def _open_live(folder: Path, size: dict[str, int], runtime: Runtime) -> Live:
    """DVCLive for the epoch metrics. dvc.yaml declares metrics and plots by hand, and params
    live in params.yaml (and model.json): DVCLive writes neither; outside DVC, no experiment."""
    live = Live(str(folder), dvcyaml=False, save_dvc_exp=False)
    for name, value in size.items():
        live.log_metric(name, value, plot=False)
    live.summary["runtime"] = resolved_runtime(runtime)
    return live


def _epoch_scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """One epoch's metrics without its within-epoch lr samples: one number per name."""
    return {name: value for name, value in metrics.items() if name != LR_SAMPLES}


def _log_epoch(live: Live | None, epoch: int, metrics: dict[str, Any]) -> None:
    """Log one epoch at step = epoch number, the same names for every model."""
    if live is None:
        return
    live.step = epoch
    for name, value in _epoch_scalars(metrics).items():
        live.log_metric(name, value)
    live.next_step()


def _report(live: Live | None, epoch: int, params: Params, metrics: dict[str, Any]) -> None:
    _log_epoch(live, epoch, metrics)
    if live is None:
        return
    val = (
        f"  val loss {metrics['val/loss']:.4f} acc {metrics['val/acc']:.2%}"
        if "val/loss" in metrics
        else ""
    )
    print(
        f"epoch {epoch}/{params.epochs}  train loss {metrics['train/loss']:.4f} "
        f"acc {metrics['train/acc']:.2%}{val}  lr {metrics['lr']:.4g}  "
        f"{metrics['epoch_time_s']:.1f}s  {metrics['images_per_s']:,.0f} img/s",
        flush=True,
    )


def export(
    trainer: Trainer,
    model_name: str,
    architecture: dict[str, Any],
    classes: list[str],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    size: dict[str, int],
    out: Path,
) -> None:
    """Write `model.pt` (a plain state dict) and `model.json` (what evaluation needs)."""
    state = {k: v.detach().cpu().contiguous() for k, v in trainer.eval_model.state_dict().items()}
    description = {
        "model": model_name,
        "architecture": {
            k: list(v) if isinstance(v, tuple) else v for k, v in architecture.items()
        },
        "classes": classes,
        "normalization": {"mean": list(mean), "std": list(std)},
        **size,
        "epochs": trainer.epoch,
        "ema": trainer.ema is not None,
        "final": _epoch_scalars(trainer.history[-1]) if trainer.history else {},
        "history": trainer.history,
        "train_time_s": sum(m["epoch_time_s"] for m in trainer.history),
        "runtime": resolved_runtime(trainer.runtime),
        "params": recipe_of(trainer.params, model_name),
    }
    save_trained(out, state, description)


if __name__ == "__main__":
    raise SystemExit(main())
