"""Model size and cost, measured rather than hand-computed so they stay right as models change."""

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    """Number of parameters, trainable or not; buffers (BatchNorm running stats) do not count."""
    return sum(p.numel() for p in model.parameters())


def macs_per_image(model: nn.Module, image_size: int = 32, channels: int = 3) -> int:
    """Multiply-accumulates of one eval-mode forward pass on one image (FLOPs / 2)."""
    was_training = model.training
    parameter = next(model.parameters())
    image = torch.zeros(
        1, channels, image_size, image_size, dtype=parameter.dtype, device=parameter.device
    )
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(image)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2
