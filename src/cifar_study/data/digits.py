"""An offline stand-in for CIFAR-10: scikit-learn's handwritten digits as 32×32 RGB images.

The 1,797 8×8 scans ship inside scikit-learn, so the whole pipeline can run, and be tested, with
no network. They are upsampled, replicated to three channels and written as an image-folder
tree, so they travel the same code path as any image-folder copy of CIFAR-10.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

TEST_FRACTION = 0.2
# Fixed, unlike data.split_seed: the test set of a dataset must never move between runs.
SPLIT_SEED = 20240601
IMAGE_SIZE = 32


def load_images() -> tuple[np.ndarray, np.ndarray]:
    """Return the digits as uint8 images N×32×32×3 and int64 labels."""
    bunch = load_digits()
    # Pixel values run 0..16; stretch to the full byte range before resampling.
    small = (bunch.images * (255.0 / 16.0)).round().astype(np.uint8)
    images = np.stack(
        [
            np.asarray(
                Image.fromarray(img).resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
            )
            for img in small
        ]
    )
    return np.repeat(images[..., None], 3, axis=-1), bunch.target.astype(np.int64)


def write_image_folder(dest: Path) -> None:
    """Write `train/<digit>/NNNN.png` and `test/<digit>/NNNN.png` under `dest`."""
    images, labels = load_images()
    index = np.arange(len(labels))
    train_idx, test_idx = train_test_split(
        index, test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED
    )
    for split, split_idx in (("train", train_idx), ("test", test_idx)):
        for i in sorted(split_idx):
            folder = dest / split / str(labels[i])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).save(folder / f"{i:04d}.png")
