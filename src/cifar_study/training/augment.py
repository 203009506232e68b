"""The data path, on the training device: uint8 images in, normalised augmented batches out.

A PIL/DataLoader pipeline with two CPU workers cannot feed a modern GPU for 32×32 images, so
the whole split lives on the device as one uint8 tensor (150 MB for CIFAR-10) and crop, flip and
cutout are done for the whole batch with tensor operations. Randomness comes from the global
torch generators, whose state the checkpoint saves, so a resumed run draws the same numbers.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Which train-time augmentations to apply (all off gives plain normalised images)."""

    crop_padding: int = 4
    flip: bool = True
    cutout: int = 0


class DeviceSplit:
    """One split held on `device` as uint8 N×3×32×32, turned into float batches on demand."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        device: torch.device,
    ) -> None:
        # N×H×W×3 on disk → N×3×H×W, the layout convolutions index.
        self.images = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2)
        self.labels = torch.from_numpy(np.asarray(labels)).to(device)
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255.0
        self.device = device

    def __len__(self) -> int:
        return len(self.labels)

    def batch(
        self,
        index: torch.Tensor,
        augmentation: Augmentation | None = None,
        channels_last: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images at `index` as normalised float32 (augmented if asked) and their labels."""
        x = self.images[index]
        if augmentation is not None:
            if augmentation.crop_padding:
                x = random_crop(x, augmentation.crop_padding)
            if augmentation.flip:
                x = random_flip(x)
        x = (x.float() - self.mean) / self.std
        if augmentation is not None and augmentation.cutout:
            x = cutout(x, augmentation.cutout)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.labels[index]


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
    flip = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def cutout(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero a size×size square at a random centre per image (DeVries & Taylor, 2017).

    Applied after normalisation, so zero is the data set's mean colour.
    """
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n, 1), device=x.device) - size // 2
    cx = torch.randint(0, w, (n, 1), device=x.device) - size // 2
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    in_rows = (rows >= cy) & (rows < cy + size)  # n×h
    in_cols = (cols >= cx) & (cols < cx + size)  # n×w
    mask = in_rows[:, :, None] & in_cols[:, None, :]
    return x.masked_fill(mask[:, None], 0.0)
