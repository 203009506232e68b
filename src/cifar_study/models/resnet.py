"""The study's ResNet: ResNet-18 layout (He et al., 2016) with a CIFAR stem and base width 32.

With the defaults it has exactly 2,797,610 parameters, the count the seed study reports.
"""

import torch
from torch import nn

from cifar_study.architectures import ResNetSettings
from cifar_study.models import register_model


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1; bias-free because a BatchNorm follows."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution for projection shortcuts; bias-free because a BatchNorm follows."""
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut, ReLU after the sum (He et al., 2016, Fig. 2)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        # Projection shortcut (option B of the paper) only where the shape changes.
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


@register_model("resnet", ResNetSettings)
class ResNet(nn.Module):
    """CIFAR ResNet: 3x3 stem without max-pool, one stage per entry of ``blocks``, linear head.

    The settings checked their own ranges when they were made."""

    def __init__(self, settings: ResNetSettings, num_classes: int = 10) -> None:
        super().__init__()
        width = settings.width
        # 32x32 inputs are too small for ImageNet's 7x7 stride-2 stem and max-pool (He et al. 4.2).
        self.stem = nn.Sequential(conv3x3(3, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        stages: list[nn.Module] = []
        in_channels = width
        for index, num_blocks in enumerate(settings.blocks):
            out_channels = width * 2**index
            # Every stage after the first halves the resolution as it doubles the channels.
            first_stride = 1 if index == 0 else 2
            layers = [BasicBlock(in_channels, out_channels, first_stride)]
            layers += [BasicBlock(out_channels, out_channels) for _ in range(num_blocks - 1)]
            stages.append(nn.Sequential(*layers))
            in_channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.dropout = nn.Dropout(settings.dropout)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))  # (N, width * 2**(S-1), 32 / 2**(S-1), same)
        # mean, not AdaptiveAvgPool2d: the latter's CUDA backward is non-deterministic.
        x = x.mean((2, 3))  # (N, C)
        return self.fc(self.dropout(x))
