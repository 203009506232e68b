"""Optimizers and learning-rate schedules, built from the recipe in params.yaml."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

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


def orthogonalised(matrix: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """`matrix` with its singular values pushed towards one (U Vᵀ of its SVD, roughly): Muon's
    quintic Newton–Schulz iteration, whose coefficients trade exactness for speed (Jordan et
    al., 2024): singular values above about 1/500 of the Frobenius norm end between about 0.7
    and 1.2, smaller ones lower."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = matrix / (matrix.norm() + 1e-7)  # every singular value now at most one
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


class Muon(torch.optim.Optimizer):
    """Muon (Jordan et al., 2024) for the groups marked `orthogonalise`, SGD for the others.

    Every group takes a (Nesterov) momentum step as torch's SGD does, with its own weight decay.
    In an `orthogonalise` group the step of each filter bank, flattened to out × in·k·k, is
    orthogonalised and scaled by √max(1, out / (in·k·k)), and the bank is first brought back
    to norm √out (a root-mean-square filter norm of one), as airbench does. That assumes each
    of these banks feeds BatchNorms only, so that its scale carries no function; fixing the
    scale fixes the size of each step, and takes the place of weight decay.
    """

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            momentum, decay = group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.add(p, alpha=decay) if decay else p.grad
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = grad.clone()
                else:
                    state["momentum_buffer"].mul_(momentum).add_(grad)
                buffer = state["momentum_buffer"]
                update = grad.add(buffer, alpha=momentum) if group["nesterov"] else buffer
                if group["orthogonalise"]:
                    rows = len(p)
                    p.mul_(rows**0.5 / (p.norm() + 1e-7))
                    flat = update.reshape(rows, -1)
                    scale = max(1.0, rows / flat.size(1)) ** 0.5
                    update = orthogonalised(flat).view_as(p) * scale
                p.add_(update, alpha=-group["lr"])
        return loss


def build_optimizer(model: nn.Module, params: Params) -> torch.optim.Optimizer:
    """SGD (optionally Nesterov), Muon for the convolution filters and SGD for the rest, Adam or
    AdamW, over `model`'s parameter groups. Muon needs every convolution to feed BatchNorms only,
    as in both models here (see `Muon`); its filters take no weight decay."""
    groups = parameter_groups(model, params)
    # Read whatever the optimizer: the train stage lists these params in dvc.yaml, as it does
    # step_every for every schedule, and its test checks that the stage reads each one it lists.
    filter_group = {"lr": params.muon_lr, "momentum": params.muon_momentum}
    if params.optimizer == "muon":
        filters = [p for p in groups[0]["params"] if p.ndim == 4]
        groups[0]["params"] = [p for p in groups[0]["params"] if p.ndim != 4]
        groups.append(
            {**filter_group, "params": filters, "weight_decay": 0.0, "orthogonalise": True}
        )
        return Muon(
            groups,
            {
                "lr": params.lr,
                "momentum": params.momentum,
                "nesterov": params.nesterov,
                "weight_decay": params.weight_decay,
                "orthogonalise": False,
            },
        )
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
