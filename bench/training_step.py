"""One plain training step (forward, backward, SGD update) for the benchmarks that time it.

Imported by the scripts beside it (`python bench/<script>.py` puts bench/ on the import path).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from cifar_study.device import Runtime


def training_step(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, runtime: Runtime, lr: float
) -> Callable[[], None]:
    """A closure that runs one SGD (momentum 0.9) step of `model` on the batch `x`, `y`."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)

    def step() -> None:
        with runtime.autocast():
            loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step
