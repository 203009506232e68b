"""Read a raw folder (official python batches or image folders) into uint8 arrays.

Every file is checked against the manifest written when the data was acquired before any of it
is parsed, and every image is checked for size and mode, so that bad data fails here with the
name of the file instead of as a shape error deep inside training.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from cifar_study.errors import DataError
from cifar_study.fileio import file_digest

MANIFEST = "manifest.json"
OFFICIAL_DIR = "cifar-10-batches-py"
OFFICIAL_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
OFFICIAL_TEST = ("test_batch",)
# md5 of each file of the official release (as published with the dataset and checked by
# torchvision): a flipped byte is caught before the file is unpickled.
OFFICIAL_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGE_SHAPE = (32, 32, 3)


@dataclasses.dataclass(frozen=True)
class RawDataset:
    """A data set as read from its source: the official train and test splits, untouched."""

    classes: tuple[str, ...]
    train_images: np.ndarray  # N×32×32×3 uint8
    train_labels: np.ndarray  # N int64
    test_images: np.ndarray
    test_labels: np.ndarray


def read_raw(raw_dir: Path) -> RawDataset:
    """Verify `raw_dir` against its manifest, then read whichever layout it holds."""
    manifest = verify_manifest(raw_dir)
    if manifest["layout"] == "cifar-python":
        data = read_official(raw_dir / OFFICIAL_DIR)
    else:
        data = read_image_folder(raw_dir)
    for split, labels in (("train", data.train_labels), ("test", data.test_labels)):
        missing = sorted(set(range(len(data.classes))) - set(labels.tolist()))
        if missing:
            names = ", ".join(data.classes[i] for i in missing)
            raise DataError(f"{raw_dir}: the {split} split has no images of class(es) {names}")
    return data


def verify_manifest(raw_dir: Path) -> dict:
    """Check every file in `raw_dir` against the sha256 recorded at download; return the
    manifest."""
    path = raw_dir / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        expected: dict[str, str] = manifest["files"]
    except FileNotFoundError:
        raise DataError(f"{path} is missing: run the download stage first") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(
            f"{path} is not a valid manifest ({exc}); rerun the download stage"
        ) from None
    present = {p.relative_to(raw_dir).as_posix() for p in raw_dir.rglob("*") if p.is_file()} - {
        MANIFEST
    }
    for name in sorted(present ^ set(expected)):
        state = "is not in the manifest" if name in present else "is listed but missing"
        raise DataError(f"{raw_dir / name} {state}; the raw data changed since download")
    for name, digest in expected.items():
        actual = file_digest(raw_dir / name)
        if actual != digest:
            raise DataError(
                f"{raw_dir / name}: sha256 {actual} does not match the manifest ({digest}); "
                "the raw data changed since download: rerun the download stage"
            )
    return manifest


def check_official_files(folder: Path) -> None:
    """Check the official batches against their published md5 before anything unpickles them."""
    for name, md5 in OFFICIAL_MD5.items():
        path = folder / name
        if not path.is_file():
            raise DataError(f"{path} is missing from the official CIFAR-10 batches")
        actual = file_digest(path, "md5")
        if actual != md5:
            raise DataError(
                f"{path}: md5 {actual} does not match the official CIFAR-10 file ({md5}); "
                "it is corrupt or not the official release"
            )


def read_official(folder: Path) -> RawDataset:
    """Read the official python batches (`data_batch_1..5`, `test_batch`, `batches.meta`)."""
    check_official_files(folder)
    classes = tuple(name.decode() for name in _unpickle(folder / "batches.meta")[b"label_names"])
    train_images, train_labels = _read_batches(folder, OFFICIAL_TRAIN, len(classes))
    test_images, test_labels = _read_batches(folder, OFFICIAL_TEST, len(classes))
    return RawDataset(classes, train_images, train_labels, test_images, test_labels)


def _read_batches(
    folder: Path, names: tuple[str, ...], num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in names:
        path = folder / name
        batch = _unpickle(path)
        try:
            rows = np.asarray(batch[b"data"], dtype=np.uint8)
            batch_labels = np.asarray(batch[b"labels"], dtype=np.int64)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{path}: not a CIFAR-10 batch ({exc})") from None
        if rows.ndim != 2 or rows.shape[1] != 3 * 32 * 32 or len(rows) != len(batch_labels):
            raise DataError(f"{path}: expected N×3072 pixel rows and N labels, got {rows.shape}")
        bad = batch_labels[(batch_labels < 0) | (batch_labels >= num_classes)]
        if bad.size:
            raise DataError(f"{path}: label {bad[0]} out of range 0..{num_classes - 1}")
        # Each row is 1024 red, then 1024 green, then 1024 blue values, row-major.
        images.append(rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(batch_labels)
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays and nothing else.

    The official batches are pickles, which can run arbitrary code. Their md5 is checked first;
    this allow-list is the second guard, for copies whose checksum was changed by hand.
    """

    _ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str) -> type:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: cannot be read as a CIFAR-10 batch ({exc})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict, found {type(obj).__name__}")
    return obj


def read_image_folder(root: Path) -> RawDataset:
    """Read `train/<class>/*` and `test/<class>/*`; class names are the sorted train folders."""
    classes = _class_folders(root / "train")
    if not classes:
        raise DataError(f"{root / 'train'} has no class folders")
    test_classes = _class_folders(root / "test")
    unknown = sorted(set(test_classes) - set(classes))
    if unknown:
        raise DataError(
            f"{root / 'test' / unknown[0]}: unknown class folder; the classes (from train/) are "
            + ", ".join(classes)
        )
    train_images, train_labels = _read_split(root / "train", classes)
    test_images, test_labels = _read_split(root / "test", classes)
    return RawDataset(tuple(classes), train_images, train_labels, test_images, test_labels)


def _class_folders(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_split(split_dir: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        folder = split_dir / name
        if not folder.is_dir():
            raise DataError(f"{folder} is missing: every class needs images in train/ and test/")
        for path in sorted(folder.iterdir()):
            if path.name.startswith("."):
                continue
            if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                raise DataError(f"{path}: not an image file (allowed: {', '.join(IMAGE_SUFFIXES)})")
            files.append(path)
            labels.append(label)
    images = np.empty((len(files), *IMAGE_SHAPE), dtype=np.uint8)
    for i, path in enumerate(files):
        images[i] = _read_image(path)
    return images, np.asarray(labels, dtype=np.int64)


def _read_image(path: Path) -> np.ndarray:
    """A training image, which must already be 32×32 RGB (upright by its EXIF orientation, as
    `predict` reads it): its pixels are never converted or resized."""
    image = load_image(path)
    if image.mode != "RGB" or image.size != IMAGE_SHAPE[:2]:
        raise DataError(
            f"{path}: image is {image.size[0]}×{image.size[1]} {image.mode}; expected 32×32 RGB"
        )
    return np.asarray(image)


# EXIF orientation → the transposition that shows the image upright (as Pillow's exif_transpose).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def load_image(path: Path) -> Image.Image:
    """An image file decoded in full and turned upright by its EXIF orientation, or a DataError;
    training and `predict` both read images with it, so the two see the same pixels."""
    try:
        with Image.open(path) as image:
            image.load()
            return _upright(image).copy()  # in memory, independent of the file
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        OSError,
        SyntaxError,
        ValueError,
    ) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None


def _upright(image: Image.Image) -> Image.Image:
    """`image` turned as its EXIF orientation says. Only that tag is read, and an EXIF block too
    damaged to read counts as none: the pixels are still good, unlike what Pillow's
    exif_transpose does with it (it rewrites the whole block, and fails on a malformed entry)."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation)
    except (OSError, SyntaxError, ValueError, struct.error):
        return image
    method = _UPRIGHT.get(orientation)
    return image.transpose(method) if method is not None else image
