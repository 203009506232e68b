"""Weight initialisation, a recipe choice the train stage applies to a freshly built model."""

import torch
import torch.nn.functional as F
from torch import nn

from cifar_study.models.resnet import BasicBlock


def initialise(model: nn.Module, scheme: str) -> None:
    """`he`: He et al., 2015 ("Delving deep into rectifiers") for convolutions, as both the
    ResNet and DenseNet papers use, BatchNorm as the identity. `pytorch`: leave PyTorch's
    default initialisation, which every layer gets when it is built (the study's choice)."""
    if scheme == "pytorch":
        return
    if scheme != "he":
        raise ValueError(f"unknown init scheme {scheme!r}; known: he, pytorch")
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


@torch.no_grad()
def zero_residual_branches(model: nn.Module) -> None:
    """Start each residual branch at zero: the BatchNorm that ends it gets scale 0 (Goyal et al.,
    2017, "Accurate, large minibatch SGD"), so each block starts as its shortcut alone and early
    training sees a shallower network. Models without residual blocks (the DenseNet) are left
    as they are."""
    for module in model.modules():
        if isinstance(module, BasicBlock):
            nn.init.zeros_(module.bn2.weight)


@torch.no_grad()
def whiten_first_conv(model: nn.Module, images: torch.Tensor, eps: float = 5e-4) -> None:
    """Set the first convolution's filters to the whitening transform of its input patches.

    `images` are normalised N×3×H×W training images. The k×k×3 patches they contain have a
    covariance with eigenvectors v_i and eigenvalues λ_i; filter pairs ±v_i / sqrt(λ_i + eps),
    largest λ first, make the layer's outputs decorrelated features of unit variance from the
    first step (the initialisation of Keller Jordan's airbench, after hlb-CIFAR10). Filters
    beyond twice the patch dimension keep their initialisation.
    """
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    c, kh, kw = conv.in_channels, *conv.kernel_size
    dim = c * kh * kw
    # Sums over chunks of images: the patches of all of them at once would take gigabytes.
    total, outer, count = (
        torch.zeros(dim, dtype=torch.float64),
        torch.zeros(dim, dim, dtype=torch.float64),
        0,
    )
    for chunk in images.split(256):
        patches = F.unfold(chunk.float(), (kh, kw)).transpose(1, 2).reshape(-1, dim).double()
        total += patches.sum(0)
        outer += patches.T @ patches
        count += len(patches)
    mean = total / count
    covariance = outer / count - torch.outer(mean, mean)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
    order = eigenvalues.argsort(descending=True)
    eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
    count = min(c * kh * kw, conv.out_channels // 2)
    filters = (eigenvectors[:, :count] / torch.sqrt(eigenvalues[:count] + eps)).T
    filters = filters.reshape(count, c, kh, kw).to(conv.weight.dtype)
    conv.weight[:count] = filters
    conv.weight[count : 2 * count] = -filters
