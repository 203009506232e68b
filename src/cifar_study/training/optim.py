"""Optimizers and learning-rate schedules, built from the recipe in params.yaml."""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from cifar_study.config import Params

_BatchNorm = nn.modules.batchnorm._BatchNorm  # every BatchNorm class, SyncBatchNorm included


def parameter_groups(model: nn.Module, params: Params) -> list[dict]:
    """The optimizer's parameter groups, the first holding the convolution and linear weights.

    One group for all parameters by default. `decay_norm_and_bias: false` spares BatchNorm's
    scales and shifts and the biases weight decay: decaying them only fights the normalisation
    (as the fast CIFAR-10 trainers find). `norm_bias_lr_scale` multiplies the lr of BatchNorm's
    shifts (airbench: 64) and divides their weight decay, so that lr × decay, their decay per
    step under SGD, is unchanged and only their gradient steps grow.
    """
    scale = params.norm_bias_lr_scale
    if params.decay_norm_and_bias and scale == 1:
        return [{"params": list(model.parameters())}]
    decay = params.weight_decay if params.decay_norm_and_bias else 0.0
    shifts = set()
    if scale != 1:
        shifts = {id(m.bias) for m in model.modules() if isinstance(m, _BatchNorm) and m.affine}
    weights = [p for p in model.parameters() if p.ndim > 1]
    others = [p for p in model.parameters() if p.ndim <= 1 and id(p) not in shifts]
    groups = [{"params": weights}, {"params": others, "weight_decay": decay}]
    if shifts:
        fast = [p for p in model.parameters() if id(p) in shifts]
        groups.append({"params": fast, "lr": params.lr * scale, "weight_decay": decay / scale})
    return groups


def build_optimizer(model: nn.Module, params: Params) -> torch.optim.Optimizer:
    """SGD (optionally Nesterov), Adam or AdamW over `model`'s parameter groups."""
    groups = parameter_groups(model, params)
    if params.optimizer == "sgd":
        return torch.optim.SGD(
            groups,
            lr=params.lr,
            momentum=params.momentum,
            nesterov=params.nesterov and params.momentum > 0,
            weight_decay=params.weight_decay,
        )
    optimizer = torch.optim.AdamW if params.optimizer == "adamw" else torch.optim.Adam
    return optimizer(groups, lr=params.lr, weight_decay=params.weight_decay)


def lr_factor(
    step: int,
    *,
    total_steps: int,
    warmup_steps: int,
    steps_per_epoch: int,
    schedule: str,
    step_every: int = 30,
    step_gamma: float = 0.1,
    per_epoch: bool = False,
) -> float:
    """Multiplier of the base lr at optimizer step `step` (0-based): linear warm-up, then decay.

    onecycle decays linearly to zero (the triangular schedule of the fast CIFAR trainers),
    cosine follows half a cosine to zero, step multiplies by `step_gamma` every `step_every`
    epochs, constant stays at one. With `per_epoch` a step is an epoch, and warm-up epoch k of W
    runs at (k + 1) / (W + 1): the peak comes with the first epoch after it, so a 1-epoch warm-up
    runs at half the lr rather than at the peak already.
    """
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1 if per_epoch else warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if schedule == "onecycle":
        return max(0.0, 1.0 - progress)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    if schedule == "step":
        return step_gamma ** ((step // steps_per_epoch) // step_every)
    if schedule == "constant":
        return 1.0
    raise ValueError(f"unknown schedule {schedule!r}")


def build_scheduler(
    optimizer: torch.optim.Optimizer, params: Params, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler for `lr_factor`, sized to the whole run and stepped after every optimizer
    step. With `schedule_per: epoch` the lr changes only at epoch boundaries (as torch's
    schedulers stepped once per epoch do, e.g. the study's CosineAnnealingLR(T_max=epochs))."""
    unit = steps_per_epoch if params.schedule_per == "epoch" else 1
    factor = functools.partial(
        lr_factor,
        total_steps=params.epochs * steps_per_epoch // unit,
        warmup_steps=round(params.warmup_epochs * steps_per_epoch / unit),
        steps_per_epoch=steps_per_epoch // unit,
        schedule=params.schedule,
        step_every=params.step_every,
        step_gamma=params.step_gamma,
        per_epoch=params.schedule_per == "epoch",
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: factor(step // unit))
