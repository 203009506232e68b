"""read_image(), as `predict` reads files: upright by EXIF, deep greyscale scaled, not clipped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image

from cifar_study.data.raw import read_image_folder
from cifar_study.errors import DataError
from cifar_study.inference import read_image

ROTATE_90_CLOCKWISE = 6  # EXIF Orientation: the stored image is shown turned 90° clockwise


def _save_turned(upright: np.ndarray, path: Path) -> None:
    """Store `upright` turned 90° anticlockwise, tagged to be shown turned back, as phones do."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = ROTATE_90_CLOCKWISE
    Image.fromarray(np.ascontiguousarray(np.rot90(upright))).save(path, exif=exif, quality=95)


def test_a_phone_photo_is_read_upright_by_its_exif_orientation(tmp_path: Path) -> None:
    upright = np.zeros((64, 32, 3), np.uint8)  # 32 wide, 64 tall: dark above, bright below
    upright[32:] = 255
    path = tmp_path / "phone.jpg"
    _save_turned(upright, path)
    image, note = read_image(path)
    assert note == "resized from 32×64 to 32×32"
    assert image[:14].mean() < 10 and image[18:].mean() > 245


def test_training_reads_exif_tagged_images_as_predict_does(tmp_path: Path) -> None:
    upright = np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)
    for split in ("train", "test"):
        (tmp_path / split / "cat").mkdir(parents=True)
        _save_turned(upright, tmp_path / split / "cat" / "img.png")
    data = read_image_folder(tmp_path)
    np.testing.assert_array_equal(data.train_images[0], upright)
    np.testing.assert_array_equal(read_image(tmp_path / "train" / "cat" / "img.png")[0], upright)


@pytest.mark.parametrize(
    ("dtype", "suffix", "mode"),
    [(np.uint16, ".png", "I;16"), (np.int32, ".tif", "I")],
)
def test_16_bit_greyscale_is_scaled_to_8_bits_not_clipped(
    tmp_path: Path, dtype: type, suffix: str, mode: str
) -> None:
    grey = np.linspace(0, 65535, 32 * 32).round().astype(dtype).reshape(32, 32)
    path = tmp_path / f"grey{suffix}"
    Image.fromarray(grey).save(path)
    image, note = read_image(path)
    assert note == f"converted from {mode}"
    expected = np.rint(grey / 257).astype(np.uint8)
    np.testing.assert_array_equal(image, np.repeat(expected[..., None], 3, axis=2))
    assert image.min() == 0 and image.max() == 255


@pytest.mark.parametrize(
    "pixels",
    [np.full((32, 32), 0.5, np.float32), np.full((32, 32), 70000, np.int32)],
    ids=["float", "beyond-16-bit"],
)
def test_an_image_with_no_known_range_is_refused(tmp_path: Path, pixels: np.ndarray) -> None:
    path = tmp_path / "deep.tif"
    Image.fromarray(pixels).save(path)
    with pytest.raises(DataError, match="pixel values have no known range to scale to 8 bits"):
        read_image(path)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns of each damaged tag
def test_a_damaged_exif_block_is_read_as_no_orientation_never_a_crash(tmp_path: Path) -> None:
    """Randomly damaged EXIF blocks (Pillow's exif_transpose fails on some when it rewrites
    them): each image is read, or refused as a DataError, never with another exception."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = ROTATE_90_CLOCKWISE
    exif[ExifTags.Base.Make] = "maker"
    intact = exif.tobytes()
    rng = np.random.default_rng(0)
    path = tmp_path / "damaged.jpg"
    read = 0
    for _ in range(400):
        block = bytearray(intact)
        for _ in range(rng.integers(1, 7)):
            block[rng.integers(len(block))] = rng.integers(256)
        if rng.random() < 0.3:
            block = block[: rng.integers(len(block))]
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(path, exif=bytes(block))
        try:
            image, _ = read_image(path)
        except DataError:
            continue
        assert image.shape == (32, 32, 3)
        read += 1
    assert read > 300  # the pixels are intact: nearly every file is read
