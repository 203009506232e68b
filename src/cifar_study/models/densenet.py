"""DenseNet-BC for CIFAR (Huang et al., 2017): the study's comparator.

With the defaults (k=38, blocks (9, 9, 9)) it has 3,070,243 parameters, about 9.7% more than
the ResNet, as the seed study reports.
"""

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from cifar_study.architectures import DenseNetSettings
from cifar_study.models import register_model


class Bottleneck(nn.Module):
    """BN-ReLU-1x1 conv to ``bottleneck_width * k`` channels, BN-ReLU-3x3 conv to k channels.

    It reads the concatenation of every earlier feature map of its block and returns its own k
    new maps. With `memory_efficient`, the concatenation and the first BN-ReLU-conv are
    recomputed in the backward pass instead of stored (Pleiss et al., 2017): a block's memory
    grows linearly with its depth instead of quadratically, for one more forward of those layers.
    """

    def __init__(
        self, in_channels: int, growth_rate: int, bottleneck_width: int, memory_efficient: bool
    ) -> None:
        super().__init__()
        inner = bottleneck_width * growth_rate
        self.layers = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, inner, 1, bias=False),
            nn.BatchNorm2d(inner),
            nn.ReLU(inplace=True),
            nn.Conv2d(inner, growth_rate, 3, padding=1, bias=False),
        )
        self.memory_efficient = memory_efficient

    def _squeeze(self, *maps: torch.Tensor) -> torch.Tensor:
        """BN-ReLU-1x1 conv of the concatenated maps: (N, sum C, H, W) -> (N, 4k, H, W)."""
        return self.layers[2](self.layers[1](self.layers[0](torch.cat(maps, dim=1))))

    @contextlib.contextmanager
    def _recomputation(self) -> Iterator[None]:
        """While the backward pass recomputes `_squeeze`, its BatchNorm (plain or synchronised)
        must not update its running statistics a second time: momentum 0 keeps them as they are,
        and the step counter is put back afterwards."""
        bn = self.layers[0]
        momentum, counted = bn.momentum, bn.num_batches_tracked.clone()
        bn.momentum = 0.0
        try:
            yield
        finally:
            bn.momentum = momentum
            bn.num_batches_tracked.copy_(counted)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        if self.memory_efficient and torch.is_grad_enabled():
            squeezed = checkpoint(
                self._squeeze,
                *maps,
                use_reentrant=False,
                context_fn=lambda: (contextlib.nullcontext(), self._recomputation()),
            )
        else:
            squeezed = self._squeeze(*maps)
        return self.layers[5](self.layers[4](self.layers[3](squeezed)))  # (N, k, H, W)


class Transition(nn.Sequential):
    """BN-ReLU-1x1 conv then 2x2 average pool: shrinks channels and halves the resolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.AvgPool2d(2),
        )


@register_model("densenet", DenseNetSettings)
class DenseNet(nn.Module):
    """DenseNet-BC: a 3x3 stem, dense blocks joined by compressing transitions, linear head.

    The settings checked their own ranges when they were made."""

    def __init__(self, settings: DenseNetSettings, num_classes: int = 10) -> None:
        super().__init__()
        growth_rate, blocks = settings.growth_rate, settings.blocks
        # DenseNet-BC's CIFAR stem: one 3x3 conv to 2k channels (Huang et al., section 3).
        channels = 2 * growth_rate
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1, bias=False)]
        for index, num_layers in enumerate(blocks):
            for _ in range(num_layers):
                layers.append(
                    Bottleneck(
                        channels, growth_rate, settings.bottleneck_width, settings.memory_efficient
                    )
                )
                channels += growth_rate
            if index < len(blocks) - 1:
                # Compression theta: a transition keeps floor(theta * m) of its m channels.
                out_channels = int(settings.compression * channels)
                layers.append(Transition(channels, out_channels))
                channels = out_channels
        # Pre-activation layers leave the last block un-normalised: one final BN-ReLU.
        layers += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(settings.dropout)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = [x]  # the current dense block's feature maps, concatenated only where read
        for layer in self.features:
            if isinstance(layer, Bottleneck):
                maps.append(layer(maps))
            else:
                x = layer(torch.cat(maps, dim=1) if len(maps) > 1 else maps[0])
                maps = [x]
        x = maps[0]  # (N, C, 32 / 2**(B-1), same), after the final BN-ReLU
        # mean, not AdaptiveAvgPool2d: the latter's CUDA backward is non-deterministic.
        x = x.mean((2, 3))  # (N, C)
        return self.fc(self.dropout(x))
