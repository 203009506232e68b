"""The canonical prepared data set: train/val/test uint8 arrays, with stats and checksums.

Arrays are plain `.npy` files (no pickle: they load with `allow_pickle=False` and can be
memory-mapped); `dataset.json` beside them holds the class names, the normalisation computed on
the training split alone, the sha256 of every array, per-class counts and the train/test
duplicates. Training refuses arrays whose checksum no longer matches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from cifar_study.data.raw import RawDataset
from cifar_study.errors import DataError
from cifar_study.fileio import atomic_dir, file_digest, write_json

SPLITS = ("train", "val", "test")
SUMMARY = "dataset.json"
# What training and evaluation read from the summary.
_SUMMARY_KEYS = ("classes", "normalization", "sha256")
_STATS_CHUNK = 4096


def evenly_spaced(n: int, count: int) -> np.ndarray:
    """Up to `count` distinct indices spread evenly over 0 .. n - 1, both ends included, in
    order (all n when count >= n): a sample that covers a split sorted by class."""
    return np.unique(np.linspace(0, n - 1, min(count, n)).round().astype(np.int64))


@dataclasses.dataclass(frozen=True)
class Split:
    """One split: images N×32×32×3 uint8 and labels N int64."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """What training and evaluation read: the splits loaded and how to normalise them."""

    classes: tuple[str, ...]
    mean: tuple[float, float, float]  # per channel, on the 0..1 scale, train split only
    std: tuple[float, float, float]
    splits: dict[str, Split]
    # dataset.json's sha256 per array file: the data's identity (empty for data made in memory).
    checksums: dict[str, str] = dataclasses.field(default_factory=dict)


def split_indices(labels: np.ndarray, val_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices of a stratified, seeded train/validation split of the training set."""
    everything = np.arange(len(labels))
    if val_size == 0:
        return everything, everything[:0]
    try:
        train_idx, val_idx = train_test_split(
            everything, test_size=val_size, stratify=labels, random_state=seed
        )
    except ValueError as exc:  # too few images on one side for a stratified split
        advice = "raise val_size or set it to 0" if val_size < 0.5 else "lower val_size"
        raise DataError(
            f"data.val_size = {val_size} cannot be split stratified from {len(labels)} training "
            f"images in {len(np.unique(labels))} classes ({exc}); {advice}"
        ) from None
    return np.sort(train_idx), np.sort(val_idx)


def train_subset(data: PreparedData, fraction: float, seed: int, key: str) -> PreparedData:
    """`data` with its train split cut to a stratified, seeded `fraction` (budgets on slow
    machines); `data` itself at 1. `key` names the setting in errors."""
    if fraction >= 1:
        return data
    train = data.splits["train"]
    try:
        keep, _ = train_test_split(
            np.arange(len(train)), train_size=fraction, stratify=train.labels, random_state=seed
        )
    except ValueError as exc:  # fewer images kept, or left out, than classes
        advice = f"raise {key}" if fraction < 0.5 else f"lower {key}, or set it to 1 (all images)"
        raise DataError(
            f"{key} = {fraction} of {len(train)} training images cannot keep every one of the "
            f"{len(data.classes)} classes ({exc}); {advice}"
        ) from None
    keep = np.sort(keep)
    splits = {**data.splits, "train": Split(train.images[keep], train.labels[keep])}
    return dataclasses.replace(data, splits=splits)


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std on the 0..1 scale, in chunks so memory stays flat."""
    total = np.zeros(3)
    total_sq = np.zeros(3)
    for start in range(0, len(images), _STATS_CHUNK):
        chunk = images[start : start + _STATS_CHUNK].reshape(-1, 3).astype(np.float64) / 255.0
        total += chunk.sum(axis=0)
        total_sq += np.square(chunk).sum(axis=0)
    count = len(images) * images.shape[1] * images.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0.0))
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


def find_duplicates(train: np.ndarray, test: np.ndarray) -> list[tuple[int, int]]:
    """Pairs (train index, test index) of byte-identical images shared by the two sets."""
    seen: dict[bytes, int] = {}
    for i, image in enumerate(train):
        seen.setdefault(hashlib.sha1(image.tobytes()).digest(), i)
    pairs = []
    for j, image in enumerate(test):
        i = seen.get(hashlib.sha1(image.tobytes()).digest())
        if i is not None:
            pairs.append((i, j))
    return pairs


def prepare(
    raw: RawDataset,
    out_dir: Path,
    val_size: float,
    seed: int,
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
) -> dict:
    """Split, measure and save `raw` into `out_dir` (replaced whole); return the summary.

    `normalization` (mean, std per channel, 0..1 scale) replaces the train split's own
    statistics, e.g. with the constants a published recipe used."""
    train_idx, val_idx = split_indices(raw.train_labels, val_size, seed)
    splits = {
        "train": Split(raw.train_images[train_idx], raw.train_labels[train_idx]),
        "val": Split(raw.train_images[val_idx], raw.train_labels[val_idx]),
        "test": Split(raw.test_images, raw.test_labels),
    }
    mean, std = normalization or channel_stats(splits["train"].images)
    # Duplicates are looked up in the whole official training set, then placed in train or val.
    in_val = np.zeros(len(raw.train_labels), dtype=bool)
    in_val[val_idx] = True
    duplicates = [
        {"source_train_index": i, "lands_in": "val" if in_val[i] else "train", "test_index": j}
        for i, j in find_duplicates(raw.train_images, raw.test_images)
    ]
    summary = {
        "classes": list(raw.classes),
        "normalization": {"mean": list(mean), "std": list(std)},
        "counts": {
            name: {
                "total": len(split),
                "per_class": {
                    cls: int(n)
                    for cls, n in zip(
                        raw.classes,
                        np.bincount(split.labels, minlength=len(raw.classes)),
                        strict=True,
                    )
                },
            }
            for name, split in splits.items()
        },
        "train_test_duplicates": {"count": len(duplicates), "pairs": duplicates},
        "split": {"val_size": val_size, "seed": seed},
        "sha256": {},
    }
    with atomic_dir(out_dir, SUMMARY) as staging:
        for name, split in splits.items():
            for kind, array in (("images", split.images), ("labels", split.labels)):
                filename = f"{name}_{kind}.npy"
                np.save(staging / filename, np.ascontiguousarray(array), allow_pickle=False)
                summary["sha256"][filename] = file_digest(staging / filename)
        write_json(staging / SUMMARY, summary)
    return summary


def read_summary(folder: Path) -> dict:
    """The prepared data set's `dataset.json`: classes, normalisation, checksums, counts."""
    path = folder / SUMMARY
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path} is missing: run the prepare stage first") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); rerun the prepare stage") from None
    missing = [key for key in _SUMMARY_KEYS if not isinstance(summary, dict) or key not in summary]
    if missing:
        raise DataError(f"{path} lacks {', '.join(missing)}; rerun the prepare stage")
    return summary


def load_prepared(
    folder: Path, mmap: bool = False, splits: tuple[str, ...] = SPLITS
) -> PreparedData:
    """Load the prepared `splits` (all by default) after checking each array against its
    recorded sha256; the others are neither read nor hashed."""
    summary = read_summary(folder)
    path = folder / SUMMARY
    loaded = {}
    for name in splits:
        arrays = []
        for kind in ("images", "labels"):
            array_path = folder / f"{name}_{kind}.npy"
            expected = summary["sha256"].get(array_path.name)
            if not array_path.is_file():
                raise DataError(f"{array_path} is missing: rerun the prepare stage")
            actual = file_digest(array_path)
            if actual != expected:
                raise DataError(
                    f"{array_path}: sha256 {actual} does not match {path} ({expected}); "
                    "the prepared data changed after the prepare stage: rerun it"
                )
            arrays.append(np.load(array_path, allow_pickle=False, mmap_mode="r" if mmap else None))
        loaded[name] = Split(*arrays)
    norm = summary["normalization"]
    return PreparedData(
        tuple(summary["classes"]),
        tuple(norm["mean"]),
        tuple(norm["std"]),
        loaded,
        dict(summary["sha256"]),
    )
