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
import dataclasses
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import torch
from dvclive import Live

from cifar_study.architectures import ModelSettings
from cifar_study.card import ModelCard, Normalization, TrainingRecord
from cifar_study.cli import user_errors_exit
from cifar_study.config import SHARED_KEYS, ModelParams, Params, load_params
from cifar_study.data.prepared import PreparedData, load_prepared, train_subset
from cifar_study.device import DeviceSplit, Runtime, process_group, resolve_runtime
from cifar_study.fileio import check_replaceable
from cifar_study.inference import CARD, save_trained
from cifar_study.models import build_model
from cifar_study.models.init import initialise, whiten_first_conv, zero_residual_branches
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


@dataclasses.dataclass(frozen=True)
class TrainingJob:
    """One model's training, resolved once in `main` from params.yaml and the prepared data,
    then handed to everything after it: what to build, on which data, with which recipe."""

    model: str  # the registered name
    settings: ModelSettings  # its params.yaml section
    train_fraction: float  # the share of the train split that `data` keeps
    recipe: dict[str, Any]  # the shared keys and the train fraction, as model.json records them
    data: PreparedData  # the splits, with dataset.json's classes, normalisation and checksums

    @classmethod
    def resolve(cls, params: Params, model: str, data_dir: Path) -> TrainingJob:
        """The job for `model`: ConfigError for an unknown model before any data is read."""
        spec = params.model(model)
        data = train_subset(
            load_prepared(data_dir), spec.train_fraction, params.seed, key=f"train_fraction.{model}"
        )
        return cls(model, spec.settings, spec.train_fraction, recipe_of(params, spec), data)


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_replaceable(args.out, CARD)  # now, not after hours of training
    params = load_params(args.params)
    job = TrainingJob.resolve(params, args.model, args.data)
    torch.manual_seed(params.seed)
    model = build_model(job.model, job.settings, num_classes=len(job.data.classes))
    initialise(model, params.init)
    if params.zero_init_residual:
        zero_residual_branches(model)
    size = {"parameters": count_parameters(model), "macs_per_image": macs_per_image(model)}
    runtime = resolve_runtime(
        params.device, params.precision, params.channels_last, params.compile, params.deterministic
    )
    if params.whiten_stem:
        whiten_first_conv(model, normalised_sample(job.data))
    stop = StopSignal()
    with stop.installed(), process_group(runtime):
        trainer = Trainer(
            model, job.data, params, runtime, args.checkpoint, fingerprint(job, runtime), stop
        )
        trainer.resume()
        live = _open_live(args.live, size, runtime) if runtime.is_main else None
        with live or contextlib.nullcontext():
            for epoch, metrics in enumerate(trainer.history, start=1):
                _log_epoch(live, epoch, metrics)  # replayed from the checkpoint: no gaps
            try:
                trainer.fit(on_epoch=lambda m: _report(live, len(trainer.history), params, m))
            except TrainingInterrupted as exc:
                print(f"error: {exc}", file=sys.stderr, flush=True)
                return 128 + exc.signum
        if runtime.is_main:
            export(trainer, job, size, args.out)
    return 0


def normalised_sample(data: PreparedData, count: int = 10_000) -> torch.Tensor:
    """About `count` training images, evenly strided (the split may be ordered by class),
    normalised as training batches are, N×3×H×W."""
    train = data.splits["train"].images
    sample = train[:: max(1, len(train) // count)]
    split = DeviceSplit(sample, None, data.mean, data.std, torch.device("cpu"))
    return split.batch(torch.arange(len(split)))[0]


def fingerprint(job: TrainingJob, runtime: Runtime) -> str:
    """What a checkpoint must match to be resumed: model, recipe, data, the code that trains
    (the data path on the device included), and the resolved runtime (`auto` may resolve
    differently on another machine)."""
    package = Path(__file__).resolve().parents[1]
    code = hashlib.sha256()
    trains = [*package.glob("training/*.py"), *package.glob("models/*.py"), package / "device.py"]
    for path in sorted(trains):
        code.update(path.read_bytes())
    identity = {
        "model": job.model,
        "architecture": dataclasses.asdict(job.settings),
        "recipe": job.recipe,
        "data": job.data.checksums,
        "code": code.hexdigest(),
        "runtime": [runtime.device.type, runtime.precision_name, runtime.world_size],
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def recipe_of(params: Params, model: ModelParams) -> dict[str, Any]:
    """The training recipe `model` is trained with: the shared keys and its train fraction."""
    return {
        **{key: getattr(params, key) for key in SHARED_KEYS},
        "train_fraction": model.train_fraction,
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


def export(trainer: Trainer, job: TrainingJob, size: dict[str, int], out: Path) -> None:
    """Write `model.pt` (a plain state dict) and `model.json` (the model's card)."""
    state = {k: v.detach().cpu().contiguous() for k, v in trainer.eval_model.state_dict().items()}
    card = ModelCard(
        model=job.model,
        architecture=job.settings,
        classes=job.data.classes,
        normalization=Normalization(job.data.mean, job.data.std),
        parameters=size["parameters"],
        macs_per_image=size["macs_per_image"],
        training=TrainingRecord(
            epochs=trainer.epoch,
            ema=trainer.ema is not None,
            final=_epoch_scalars(trainer.history[-1]) if trainer.history else {},
            history=trainer.history,
            train_time_s=sum(m["epoch_time_s"] for m in trainer.history),
            runtime=resolved_runtime(trainer.runtime),
            params=job.recipe,
        ),
    )
    save_trained(out, state, card)


if __name__ == "__main__":
    raise SystemExit(main())
