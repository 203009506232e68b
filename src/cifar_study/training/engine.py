"""One training engine for every model: batches on the device, mixed precision, checkpoints.

The engine owns the loop and its state (model, optimizer, schedule, scaler, EMA, RNG, position in
the epoch) and nothing else: where metrics go is the caller's `on_epoch`, and what to train is
the caller's model. It resumes bitwise-exactly (on CPU) from a checkpoint taken at any step.
"""

from __future__ import annotations

import contextlib
import functools
import math
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from cifar_study.config import Params
from cifar_study.data.prepared import PreparedData, evenly_spaced
from cifar_study.device import Augment, DeviceSplit, Runtime, evaluate
from cifar_study.errors import ConfigError, StudyError
from cifar_study.training.augment import Augmentation, alternating_flips, flip_parity
from cifar_study.training.checkpoint import (
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from cifar_study.training.ema import WeightAverage
from cifar_study.training.optim import build_optimizer, build_scheduler

CHECKPOINT_FORMAT = 1
# Steps between host reads of the running loss (finiteness check, progress bar): each read
# waits for the GPU to drain its queue of work.
SYNC_EVERY = 50
# The learning rate is recorded at this many evenly spaced steps of every epoch, its first and
# last included, under LR_SAMPLES in the epoch's metrics: [epochs completed + step fraction, lr]
# pairs, so that a figure can draw the schedule within epochs (warm-up included).
LR_SAMPLES_PER_EPOCH = 8
LR_SAMPLES = "lr_samples"
EpochCallback = Callable[[dict[str, Any]], None]


class TrainingInterrupted(StudyError):
    """A signal asked training to stop; the state after the last finished step is saved."""

    def __init__(self, signum: int, checkpoint: Path) -> None:
        self.signum = signum
        super().__init__(
            f"stopped by {signal.Signals(signum).name}; checkpoint saved to {checkpoint}. "
            "Run the same command (or `dvc repro`) again to resume."
        )


class NonFiniteLoss(StudyError):
    """The loss became NaN or infinite; the last good checkpoint is kept, nothing is saved."""


class StopSignal:
    """Set by SIGINT/SIGTERM; the loop checks it between steps. A second SIGINT aborts at once."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopSignal]:
        """Catch SIGINT and SIGTERM for the duration, then restore the previous handlers."""
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


class Trainer:
    """Trains one model on prepared data under one recipe; see the module docstring."""

    def __init__(
        self,
        model: nn.Module,
        data: PreparedData,
        params: Params,
        runtime: Runtime,
        checkpoint_path: Path,
        fingerprint: str,
        stop: StopSignal | None = None,
    ) -> None:
        self.params = params
        self.runtime = runtime
        self.checkpoint_path = checkpoint_path
        self.fingerprint = fingerprint
        self.stop = stop or StopSignal()
        device = runtime.device

        train = data.splits["train"]
        self.train_split = DeviceSplit(train.images, train.labels, data.mean, data.std, device)
        val = data.splits["val"]
        self.val_split = (
            DeviceSplit(val.images, val.labels, data.mean, data.std, device) if len(val) else None
        )
        if params.batch_size % runtime.world_size:
            raise ConfigError(
                f"batch_size = {params.batch_size} must be divisible by the number of "
                f"processes ({runtime.world_size})"
            )
        if not params.drop_last and runtime.distributed:
            # A short last batch cannot be split into equal shards, one per process.
            raise ConfigError("drop_last: false needs a single process; set drop_last: true")
        self.steps_per_epoch = (
            len(self.train_split) // params.batch_size
            if params.drop_last
            else math.ceil(len(self.train_split) / params.batch_size)
        )
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"batch_size = {params.batch_size} is larger than the training set "
                f"({len(self.train_split)} images); lower batch_size or set drop_last: false"
            )
        self.augmentation = Augmentation(
            crop_padding=params.crop_padding,
            flip=params.flip,
            color_jitter=params.color_jitter,
            rotation=params.rotation,
            erasing=params.random_erasing,
            cutout=params.cutout,
        )

        if runtime.distributed and device.type == "cuda":
            # Batch statistics over the global batch, as on one device with the full batch.
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        memory_format = torch.channels_last if runtime.channels_last else torch.contiguous_format
        self.model = model.to(device, memory_format=memory_format)
        self.optimizer = build_optimizer(self.model, params)
        self.scheduler = build_scheduler(self.optimizer, params, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(device.type, enabled=runtime.needs_grad_scaler)
        self.ema = WeightAverage(self.model, params.ema_decay) if params.ema_decay > 0 else None
        self.criterion = nn.CrossEntropyLoss(label_smoothing=params.label_smoothing)
        forward_model: nn.Module = self.model
        if runtime.distributed:
            forward_model = DistributedDataParallel(
                forward_model, device_ids=[device.index] if device.type == "cuda" else None
            )
        self.forward_model = torch.compile(forward_model) if runtime.compile else forward_model

        # Every rank must visit samples in the same order, so the order has its own generator;
        # augmentation and dropout draw from the global ones, which differ between ranks so
        # that each shard is augmented independently.
        self.order_rng = torch.Generator().manual_seed(params.seed)
        # Alternating flip: a parity bit per training image says in which epochs it is mirrored;
        # its own generator leaves the order of the samples as it was.
        self.flip_parity = (
            flip_parity(len(self.train_split), params.seed).to(device)
            if params.alternating_flip
            else None
        )
        if runtime.distributed:
            torch.manual_seed(params.seed + 1_000_003 * runtime.rank)

        # Position in the run; all of it goes into the checkpoint.
        self.epoch = 0  # epochs completed
        self.step_in_epoch = 0  # steps completed within the current epoch
        self.perm: torch.Tensor | None = None  # the current epoch's sample order
        self.epoch_sums = _empty_epoch_sums()  # running sums of the current epoch
        self.history: list[dict[str, Any]] = []
        self.last_lr = params.lr  # the lr of the latest step, for logging
        self.lr_samples: list[list[float]] = []  # the current epoch's, see LR_SAMPLES
        self._lr_sample_steps = frozenset(
            evenly_spaced(self.steps_per_epoch, LR_SAMPLES_PER_EPOCH).tolist()
        )
        # Kept on the device during an epoch (see _train_epoch): the running loss sum and
        # correct count, and the first step whose loss was not finite with that loss.
        self._sums = torch.zeros(2, dtype=torch.float64)
        self._first_bad = torch.zeros(2, dtype=torch.float64)

    # -- checkpoints ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": self.fingerprint,
            "complete": self.epoch >= self.params.epochs,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "perm": self.perm,
            "epoch_sums": dict(self.epoch_sums),
            "history": list(self.history),
            "last_lr": self.last_lr,
            "lr_samples": list(self.lr_samples),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "order_rng": self.order_rng.get_state(),
            "rng": self._rng_states(),
        }

    def resume(self) -> bool:
        """Continue from the checkpoint if it is an unfinished run of this same configuration.

        A finished or foreign checkpoint is ignored: DVC re-runs a stage only when something it
        depends on changed, so that run must start from scratch.
        """
        if not self.checkpoint_path.is_file():
            return False
        state = self._read_checkpoint()
        if state.get("format") != CHECKPOINT_FORMAT or state.get("fingerprint") != self.fingerprint:
            self._say(f"{self.checkpoint_path}: from another configuration; starting afresh")
            return False
        if state["complete"]:
            self._say(f"{self.checkpoint_path}: from a finished run; starting afresh")
            return False
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise self._unusable(
                f"{self.checkpoint_path} matches this configuration but cannot be restored "
                f"({str(exc).splitlines()[0]})"
            ) from None
        self.epoch, self.step_in_epoch, self.perm = (
            state["epoch"],
            state["step_in_epoch"],
            state["perm"],
        )
        self.epoch_sums, self.history = dict(state["epoch_sums"]), list(state["history"])
        self.last_lr = state["last_lr"]
        self.lr_samples = list(state["lr_samples"])
        self.order_rng.set_state(state["order_rng"])
        set_rng_state(state["rng"][self.runtime.rank])
        where = f"epoch {self.epoch + 1} step {self.step_in_epoch}"
        self._say(f"resuming from {self.checkpoint_path}: {where}")
        return True

    def _read_checkpoint(self) -> dict[str, Any]:
        """The checkpoint's contents, or the error to delete it: a file that will not load as a
        dict would otherwise block every later run."""
        try:
            state = load_checkpoint(self.checkpoint_path)
        except StudyError as exc:
            raise self._unusable(str(exc)) from None
        if not isinstance(state, dict):
            raise self._unusable(
                f"{self.checkpoint_path} holds a {type(state).__name__}, not a training checkpoint"
            )
        return state

    def _unusable(self, reason: str) -> StudyError:
        """The error for a checkpoint that cannot be resumed: why, and how to train anew."""
        return StudyError(
            f"{reason}; delete {self.checkpoint_path} (or move it away) to start training "
            "from scratch"
        )

    def save(self) -> None:
        """Checkpoint (rank 0 writes; every rank must call it, since it gathers RNG states)."""
        state = self.state_dict()
        if self.runtime.is_main:
            save_checkpoint(state, self.checkpoint_path)

    def _rng_states(self) -> list[dict[str, Any]]:
        """Every rank's generator states, indexed by rank, so each resumes its own stream."""
        if not self.runtime.distributed:
            return [rng_state()]
        states: list[Any] = [None] * self.runtime.world_size
        dist.all_gather_object(states, rng_state())
        return states

    # -- the loop ---------------------------------------------------------------------------

    def fit(self, on_epoch: EpochCallback | None = None) -> list[dict[str, Any]]:
        """Train until `params.epochs`; checkpoint after every epoch and when a signal arrives."""
        self.forward_model.train()
        try:
            while self.epoch < self.params.epochs:
                metrics = self._train_epoch()
                self._require_finite_weights()
                if self.ema is not None:
                    # The average's BatchNorm statistics, for its weights (see training/ema.py).
                    self.ema.recalibrate(
                        self.train_split, self.params.eval_batch_size, self.runtime
                    )
                if self.val_split is not None:
                    val = evaluate(
                        self.eval_model, self.val_split, self.params.eval_batch_size, self.runtime
                    )
                    metrics.update({"val/loss": val["loss"], "val/acc": val["acc"]})
                self.history.append(metrics)
                self.epoch, self.step_in_epoch, self.perm = self.epoch + 1, 0, None
                self.epoch_sums, self.lr_samples = _empty_epoch_sums(), []
                # Checkpoint before reporting: a crash in between replays from the checkpoint.
                self.save()
                if on_epoch is not None:
                    on_epoch(metrics)
        except torch.cuda.OutOfMemoryError:
            raise StudyError(
                f"CUDA ran out of memory with batch_size = {self.params.batch_size}; lower "
                "batch_size in params.yaml (e.g. `dvc exp run -S batch_size=256`)"
            ) from None
        return self.history

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are evaluated and exported: the EMA average when enabled."""
        return self.ema.module if self.ema is not None else self.model

    def _train_epoch(self) -> dict[str, Any]:
        params, runtime = self.params, self.runtime
        if self.perm is None:
            self.perm = torch.randperm(len(self.train_split), generator=self.order_rng)
        order = self.perm.to(runtime.device)  # copied once, not one host copy per step
        local = params.batch_size // runtime.world_size
        start_time = time.perf_counter() - self.epoch_sums["seconds"]
        bar = tqdm(
            range(self.step_in_epoch, self.steps_per_epoch),
            initial=self.step_in_epoch,
            total=self.steps_per_epoch,
            desc=f"epoch {self.epoch + 1}/{params.epochs}",
            leave=False,
            disable=None if runtime.is_main else True,
        )
        # The epoch's running sums stay on the device: reading them stalls a GPU until every
        # queued step has run, so the host looks only every SYNC_EVERY steps (see _sync).
        self._sums = torch.tensor(
            [self.epoch_sums["loss_sum"], self.epoch_sums["correct"]],
            dtype=torch.float64,
            device=runtime.device,
        )
        self._first_bad = torch.zeros(2, dtype=torch.float64, device=runtime.device)
        since_sync = 0
        for b in bar:
            batch_index = order[b * params.batch_size : (b + 1) * params.batch_size]
            index = batch_index[runtime.rank * local : (runtime.rank + 1) * local]
            x, y = self.train_split.batch(
                index, self._augmentation_for(index), runtime.channels_last
            )
            loss, correct = self._step(x, y)
            if b in self._lr_sample_steps:
                self.lr_samples.append([self.epoch + b / self.steps_per_epoch, self.last_lr])
            self._watch_finite(loss, b + 1)
            self._sums += torch.stack([loss.detach().double() * len(y), correct.double()])
            self.step_in_epoch = b + 1
            self.epoch_sums["seen"] += len(y)
            since_sync += 1
            stop = self.stop.signum is not None
            # One process can act on a signal at once; processes must agree, which costs a sync.
            if (
                since_sync >= SYNC_EVERY
                or self.step_in_epoch == self.steps_per_epoch
                or (stop and not runtime.distributed)
            ):
                self._sync(bar)
                since_sync = 0
                if self._agreed(stop):
                    self.epoch_sums["seconds"] = time.perf_counter() - start_time
                    self._require_finite_weights()
                    self.save()
                    raise TrainingInterrupted(
                        self.stop.signum or signal.SIGTERM, self.checkpoint_path
                    )
        bar.close()
        self.epoch_sums["seconds"] = time.perf_counter() - start_time
        seen, seconds = self.epoch_sums["seen"], self.epoch_sums["seconds"]
        totals = torch.tensor(
            [self.epoch_sums["loss_sum"], self.epoch_sums["correct"], seen],
            dtype=torch.float64,
            device=runtime.device,
        )
        if runtime.distributed:
            dist.all_reduce(totals)
        return {
            "train/loss": totals[0].item() / totals[2].item(),
            "train/acc": totals[1].item() / totals[2].item(),
            "lr": self.last_lr,
            LR_SAMPLES: self.lr_samples,
            "epoch_time_s": seconds,
            "images_per_s": totals[2].item() / seconds,
        }

    def _augmentation_for(self, index: torch.Tensor) -> Augment:
        """The augmentation for the training images at `index` in the current epoch."""
        if self.flip_parity is None:
            return self.augmentation
        flips = alternating_flips(self.flip_parity[index], self.epoch)
        return functools.partial(self.augmentation, flips=flips)

    def _watch_finite(self, loss: torch.Tensor, step: int) -> None:
        """Remember, on the device, the first step whose loss was not finite and that loss."""
        bad = ~torch.isfinite(loss.detach()) & (self._first_bad[0] == 0)
        # torch.full launches a kernel; torch.tensor(step, device=...) would copy from the host.
        at = torch.full((), float(step), dtype=torch.float64, device=loss.device)
        found = torch.stack([at, loss.detach().double()])
        self._first_bad = torch.where(bad, found, self._first_bad)

    def _sync(self, bar: tqdm) -> None:
        """Bring the running sums to the host, stop on a non-finite loss, refresh the bar."""
        loss_sum, correct = self._sums.tolist()
        self.epoch_sums["loss_sum"], self.epoch_sums["correct"] = loss_sum, correct
        bad_step, bad_loss = self._first_bad.tolist()
        if self._agreed(bad_step > 0):
            raise NonFiniteLoss(
                f"the loss became {bad_loss} at epoch {self.epoch + 1}, step {int(bad_step)}; "
                f"training stopped and the last good checkpoint ({self.checkpoint_path}, "
                f"after epoch {self.epoch}) was kept. Try a lower {self._lr_hint()}."
            )
        bar.set_postfix(loss=f"{loss_sum / max(self.epoch_sums['seen'], 1):.3f}")

    def _require_finite_weights(self) -> None:
        """Stop before a save if an update left NaN or infinite weights: each loss is computed
        before its step's update, so the loss check cannot see what the last update did."""
        state = [*self.model.parameters(), *self.model.buffers()]
        finite = torch.stack([torch.isfinite(t).all() for t in state if t.is_floating_point()])
        if self._agreed(not bool(finite.all())):  # one host read per epoch
            raise NonFiniteLoss(
                f"the weights became non-finite in epoch {self.epoch + 1}, by step "
                f"{self.step_in_epoch}; training stopped and the last good checkpoint "
                f"({self.checkpoint_path}, after epoch {self.epoch}) was kept. Try a lower "
                f"{self._lr_hint()}."
            )

    def _lr_hint(self) -> str:
        """The learning rates to lower after a non-finite loss or weights, with their values."""
        hint = f"lr (now {self.params.lr})"
        if self.params.optimizer == "muon":
            hint += f" or muon_lr (now {self.params.muon_lr})"
        return hint

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step; returns this process's batch loss and correct count, on the
        device (reading them would wait for the step to finish)."""
        mix = self._mixup_lambda()
        if mix is not None:
            partner = torch.randperm(len(y), device=y.device)
            x = mix * x + (1 - mix) * x[partner]
        with self.runtime.autocast():
            logits = self.forward_model(x)
            loss = self.criterion(logits, y)
            if mix is not None:
                loss = mix * loss + (1 - mix) * self.criterion(logits, y[partner])
        self.last_lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return loss.detach(), (logits.argmax(1) == y).sum()

    def _mixup_lambda(self) -> float | None:
        """Mixup's mixing weight for this step (Zhang et al., 2018), or None when off.

        As in the study, alpha can decay linearly to zero over the run, after every step or
        (`schedule_per: epoch`, the study's way) once per epoch.
        """
        alpha = self.params.mixup_alpha
        if self.params.mixup_decay:
            if self.params.schedule_per == "epoch":
                done = self.epoch / self.params.epochs
            else:
                done = (self.epoch * self.steps_per_epoch + self.step_in_epoch) / (
                    self.params.epochs * self.steps_per_epoch
                )
            alpha *= 1.0 - done
        if alpha <= 0:
            return None
        return float(torch.distributions.Beta(alpha, alpha).sample())

    def _agreed(self, flag: bool) -> bool:
        """True if `flag` is true in any process: every rank must leave the loop together."""
        if not self.runtime.distributed:
            return flag
        t = torch.tensor([float(flag)], device=self.runtime.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def _say(self, message: str) -> None:
        if self.runtime.is_main:
            print(message, flush=True)


def _empty_epoch_sums() -> dict[str, float]:
    return {"loss_sum": 0.0, "correct": 0.0, "seen": 0.0, "seconds": 0.0}
