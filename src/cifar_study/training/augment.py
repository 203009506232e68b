"""Train-time augmentation on the device: uint8 images in, normalised augmented batches out.

The split lives on the device (`cifar_study.device.DeviceSplit`), and every augmentation is done
for the whole batch with tensor operations, each image drawing its own parameters. Randomness
comes from the global torch generators, whose state the checkpoint saves, so a resumed run draws
the same numbers.

The order is the study's: crop → flip → colour jitter → rotation → normalise → erasing/cutout.
Jitter and rotation follow torchvision's definitions (`transforms.v2.ColorJitter`,
`RandomRotation`) on float pixels in [0, 255]; the tests compare them with torchvision's
functional forms on the same drawn parameters.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Which train-time augmentations to apply (all off gives plain normalised images)."""

    crop_padding: int = 4
    flip: bool = True
    color_jitter: float = 0.0  # brightness, contrast, saturation factors in [1 - x, 1 + x]
    rotation: float = 0.0  # degrees: angles uniform in [-rotation, rotation]
    erasing: float = 0.0  # probability of erasing one random rectangle per image
    cutout: int = 0

    def __call__(
        self,
        images: torch.Tensor,
        normalise: Callable[[torch.Tensor], torch.Tensor],
        flips: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """uint8 images N×3×H×W augmented in the study's order, normalised by `normalise` (float
        pixels in [0, 255] in) between rotation and erasing; float32 out. `flips` (N booleans),
        if given, says which images to mirror instead of a coin flip each."""
        x = images
        if self.crop_padding:
            x = random_crop(x, self.crop_padding)
        if flips is not None:
            x = flip_where(x, flips)
        elif self.flip:
            x = random_flip(x)
        x = x.float()
        if self.color_jitter:
            x = color_jitter(x, self.color_jitter)
        if self.rotation:
            x = random_rotation(x, self.rotation)
        x = normalise(x)
        if self.erasing:
            x = random_erasing(x, self.erasing)
        if self.cutout:
            x = cutout(x, self.cutout)
        return x


def random_crop(x: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero-pad by `padding` and crop back to size at a random offset per image."""
    n, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), device=x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)  # n×h
    cols = dx[:, None] + torch.arange(w, device=x.device)  # n×w
    return padded[
        torch.arange(n, device=x.device)[:, None, None, None],
        torch.arange(c, device=x.device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


def random_flip(x: torch.Tensor) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    return flip_where(x, torch.rand(x.shape[0], device=x.device) < 0.5)


def flip_where(x: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the images whose entry of `flips` (N booleans) is true."""
    return torch.where(flips[:, None, None, None], x.flip(3), x)


def flip_parity(count: int, seed: int) -> torch.Tensor:
    """A parity bit per training image for alternating flip, drawn from a generator of its own
    so that the same bits come back on every rank and after a resume."""
    return torch.randint(0, 2, (count,), generator=torch.Generator().manual_seed(seed)).bool()


def alternating_flips(parity: torch.Tensor, epoch: int) -> torch.Tensor:
    """Which images to mirror in `epoch` (0-based) under alternating flip (Jordan, 2024): those
    whose `parity` bit is set in even epochs, the others in odd ones, so every image is seen
    both ways in every two epochs rather than by chance."""
    return parity ^ bool(epoch % 2)


def cutout(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero a size×size square at a random centre per image (DeVries & Taylor, 2017).

    Applied after normalisation, so zero is the data set's mean colour.
    """
    n, _, h, w = x.shape
    top = torch.randint(0, h, (n,), device=x.device) - size // 2
    left = torch.randint(0, w, (n,), device=x.device) - size // 2
    return erase_boxes(x, top, left, torch.full_like(top, size), torch.full_like(left, size))


def erase_boxes(
    x: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    height: torch.Tensor,
    width: torch.Tensor,
) -> torch.Tensor:
    """Zero rows [top, top + height) × columns [left, left + width) of each image (clipped)."""
    _, _, h, w = x.shape
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    in_rows = (rows >= top[:, None]) & (rows < (top + height)[:, None])  # n×h
    in_cols = (cols >= left[:, None]) & (cols < (left + width)[:, None])  # n×w
    mask = in_rows[:, :, None] & in_cols[:, None, :]
    return x.masked_fill(mask[:, None], 0.0)


# --------------------------------------------------------------------------- colour jitter

# ITU-R 601-2 luma, as torchvision's rgb_to_grayscale.
_LUMA = (0.2989, 0.587, 0.114)
_PIXEL_MAX = 255.0


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    """N×1×H×W luma of N×3×H×W RGB, computed in torchvision's order of operations."""
    r, g, b = x.unbind(dim=1)
    return r.mul(_LUMA[0]).add_(g, alpha=_LUMA[1]).add_(b, alpha=_LUMA[2]).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """factor·x + (1 − factor)·other, clamped to the pixel range; `factor` is per image."""
    f = factor.view(-1, 1, 1, 1)
    return (x * f + other * (1.0 - f)).clamp_(0.0, _PIXEL_MAX)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale every pixel by the image's factor (torchvision's adjust_brightness)."""
    return (x * factor.view(-1, 1, 1, 1)).clamp_(0.0, _PIXEL_MAX)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each image with its mean luma (torchvision's adjust_contrast)."""
    return _blend(x, _grayscale(x).mean(dim=(1, 2, 3), keepdim=True), factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each image with its own grayscale version (torchvision's adjust_saturation)."""
    return _blend(x, _grayscale(x), factor)


JITTER_OPERATIONS = (adjust_brightness, adjust_contrast, adjust_saturation)


def draw_jitter(n: int, strength: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: the three factors, uniform in [1 − strength, 1 + strength] (n×3, in the order
    of JITTER_OPERATIONS), and a uniformly random order of the operations (n×3 indices)."""
    factors = torch.empty(n, 3, device=device).uniform_(1.0 - strength, 1.0 + strength)
    order = torch.rand(n, 3, device=device).argsort(dim=1)
    return factors, order


def apply_jitter(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Apply brightness, contrast and saturation changes, each image in its own order."""
    for position in range(3):
        # Every operation on the whole batch, then each image keeps the one its order names.
        chosen = order[:, position].view(-1, 1, 1, 1)
        x = _select([op(x, factors[:, i]) for i, op in enumerate(JITTER_OPERATIONS)], chosen)
    return x


def _select(candidates: list[torch.Tensor], chosen: torch.Tensor) -> torch.Tensor:
    """Per image, the candidate whose index `chosen` (N×1×1×1) names."""
    out = candidates[0]
    for index, candidate in enumerate(candidates[1:], start=1):
        out = torch.where(chosen == index, candidate, out)
    return out


def color_jitter(x: torch.Tensor, strength: float) -> torch.Tensor:
    """torchvision's ColorJitter(brightness=s, contrast=s, saturation=s) on float pixels."""
    factors, order = draw_jitter(x.shape[0], strength, x.device)
    return apply_jitter(x, factors, order)


# --------------------------------------------------------------------------- rotation


def rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image about its centre by its angle (counter-clockwise, nearest neighbour,
    zero fill), with the sampling grid torchvision's rotate builds."""
    n, _, h, w = x.shape
    theta = torch.deg2rad(degrees.double())
    cos, sin = torch.cos(theta).float(), torch.sin(theta).float()
    # Output pixel centres, relative to the image centre, mapped back into the input.
    xs = torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w, device=x.device)
    ys = torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h, device=x.device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    c, s = cos.view(n, 1, 1), sin.view(n, 1, 1)
    grid = torch.stack(((gx * c - gy * s) / (0.5 * w), (gx * s + gy * c) / (0.5 * h)), dim=-1)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def draw_rotation(n: int, max_degrees: float, device: torch.device) -> torch.Tensor:
    """Per image, an angle uniform in [-max_degrees, max_degrees]."""
    return torch.empty(n, device=device).uniform_(-max_degrees, max_degrees)


def random_rotation(x: torch.Tensor, max_degrees: float) -> torch.Tensor:
    """torchvision's RandomRotation(max_degrees) with nearest interpolation and zero fill."""
    return rotate(x, draw_rotation(x.shape[0], max_degrees, x.device))


# --------------------------------------------------------------------------- random erasing

ERASING_SCALE = (0.02, 0.33)  # erased area, as a fraction of the image
ERASING_RATIO = (0.3, 3.3)  # aspect ratio of the erased rectangle
_ERASING_ATTEMPTS = 10


def draw_erasing(
    n: int, h: int, w: int, p: float, device: torch.device
) -> tuple[torch.Tensor, ...]:
    """Per image: top, left, height, width of the rectangle to erase (height 0: none).

    torchvision's RandomErasing.get_params, batched: up to ten tries of an area and a log-uniform
    aspect ratio; the first whose rectangle fits is used, and if none fits nothing is erased.
    """
    area = torch.empty(n, _ERASING_ATTEMPTS, device=device).uniform_(*ERASING_SCALE) * (h * w)
    log_ratio = torch.empty(n, _ERASING_ATTEMPTS, device=device).uniform_(
        math.log(ERASING_RATIO[0]), math.log(ERASING_RATIO[1])
    )
    ratio = torch.exp(log_ratio)
    heights = torch.sqrt(area * ratio).round().long()
    widths = torch.sqrt(area / ratio).round().long()
    fits = (heights < h) & (widths < w)
    first = fits.long().argmax(dim=1, keepdim=True)  # index of the first fitting try
    erase = fits.any(dim=1) & (torch.rand(n, device=device) < p)
    height = heights.gather(1, first).squeeze(1) * erase
    width = widths.gather(1, first).squeeze(1) * erase
    top = (torch.rand(n, device=device) * (h - height + 1)).long()
    left = (torch.rand(n, device=device) * (w - width + 1)).long()
    return top, left, height, width


def random_erasing(x: torch.Tensor, p: float) -> torch.Tensor:
    """torchvision's RandomErasing(p, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0).

    Applied after normalisation, as the study did, so zero is the data set's mean colour.
    """
    n, _, h, w = x.shape
    return erase_boxes(x, *draw_erasing(n, h, w, p, x.device))
