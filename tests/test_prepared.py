"""prepare()/load_prepared(): the split, the statistics, duplicates, checksums and the files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from cifar_study.data import prepared as prepared_module
from cifar_study.data.prepared import (
    SPLITS,
    SUMMARY,
    channel_stats,
    evenly_spaced,
    find_duplicates,
    load_prepared,
    prepare,
    split_indices,
    train_subset,
)
from cifar_study.data.raw import RawDataset
from cifar_study.errors import DataError

CLASSES = ("a", "b", "c", "d")
# Unequal class sizes, so stratification is visible.
TRAIN_COUNTS = (40, 30, 20, 10)
TEST_PER_CLASS = 5


def make_raw(seed: int = 0) -> RawDataset:
    rng = np.random.default_rng(seed)
    train_labels = np.repeat(np.arange(len(CLASSES)), TRAIN_COUNTS)
    rng.shuffle(train_labels)
    test_labels = np.repeat(np.arange(len(CLASSES)), TEST_PER_CLASS)
    train = rng.integers(0, 256, size=(len(train_labels), 32, 32, 3), dtype=np.uint8)
    # Test images are white: statistics that included them would be far off.
    test = np.full((len(test_labels), 32, 32, 3), 255, dtype=np.uint8)
    return RawDataset(CLASSES, train, train_labels.astype(np.int64), test, test_labels)


@pytest.fixture
def raw() -> RawDataset:
    return make_raw()


def numpy_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scaled = images.reshape(-1, 3).astype(np.float64) / 255.0
    return scaled.mean(axis=0), scaled.std(axis=0)


# ------------------------------------------------------------------ split


def test_split_is_a_partition_of_the_training_set(raw: RawDataset) -> None:
    train_idx, val_idx = split_indices(raw.train_labels, 0.2, seed=0)
    assert len(val_idx) == 20 and len(train_idx) == 80
    assert not set(train_idx) & set(val_idx)
    assert sorted([*train_idx, *val_idx]) == list(range(len(raw.train_labels)))
    assert list(train_idx) == sorted(train_idx) and list(val_idx) == sorted(val_idx)


def test_split_is_stratified(raw: RawDataset) -> None:
    _, val_idx = split_indices(raw.train_labels, 0.2, seed=3)
    per_class = np.bincount(raw.train_labels[val_idx], minlength=len(CLASSES))
    for count, total in zip(per_class, TRAIN_COUNTS, strict=True):
        assert abs(count - 0.2 * total) <= 1


def test_split_is_seeded_and_deterministic(raw: RawDataset) -> None:
    first = split_indices(raw.train_labels, 0.2, seed=7)
    again = split_indices(raw.train_labels.copy(), 0.2, seed=7)
    other = split_indices(raw.train_labels, 0.2, seed=8)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[1], other[1])


def test_val_size_zero_gives_an_empty_val_split(raw: RawDataset) -> None:
    train_idx, val_idx = split_indices(raw.train_labels, 0.0, seed=0)
    assert len(val_idx) == 0
    np.testing.assert_array_equal(train_idx, np.arange(len(raw.train_labels)))


def test_val_comes_only_from_train_in_prepare(raw: RawDataset, tmp_path: Path) -> None:
    prepare(raw, tmp_path / "prepared", val_size=0.2, seed=1)
    data = load_prepared(tmp_path / "prepared")
    train_rows = {image.tobytes() for image in raw.train_images}
    val = data.splits["val"]
    assert len(val) == 20
    assert all(image.tobytes() in train_rows for image in val.images)
    # Test split is the official one, untouched.
    np.testing.assert_array_equal(data.splits["test"].images, raw.test_images)
    np.testing.assert_array_equal(data.splits["test"].labels, raw.test_labels)


# ------------------------------------------------------------------ statistics


@pytest.mark.parametrize("chunk", [4096, 7, 1])
def test_channel_stats_match_numpy(monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    monkeypatch.setattr(prepared_module, "_STATS_CHUNK", chunk)
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, size=(50, 32, 32, 3), dtype=np.uint8)
    images[..., 0] //= 4  # channels with different statistics
    images[..., 2] = 255 - images[..., 2] // 2
    mean, std = channel_stats(images)
    np_mean, np_std = numpy_stats(images)
    np.testing.assert_allclose(mean, np_mean, atol=1e-6, rtol=0)
    np.testing.assert_allclose(std, np_std, atol=1e-6, rtol=0)
    assert len(set(mean)) == 3


def test_channel_stats_of_constant_images() -> None:
    images = np.zeros((3, 32, 32, 3), np.uint8)
    images[..., 1] = 51
    mean, std = channel_stats(images)
    assert mean == (0.0, 0.2, 0.0)
    assert std == (0.0, 0.0, 0.0)


def test_prepare_normalises_with_the_train_split_only(raw: RawDataset, tmp_path: Path) -> None:
    summary = prepare(raw, tmp_path / "prepared", val_size=0.2, seed=0)
    data = load_prepared(tmp_path / "prepared")
    mean, std = numpy_stats(data.splits["train"].images)
    np.testing.assert_allclose(summary["normalization"]["mean"], mean, atol=1e-6, rtol=0)
    np.testing.assert_allclose(summary["normalization"]["std"], std, atol=1e-6, rtol=0)
    assert data.mean == tuple(summary["normalization"]["mean"])
    assert data.std == tuple(summary["normalization"]["std"])
    with_val, _ = numpy_stats(raw.train_images)
    with_test, _ = numpy_stats(np.concatenate([data.splits["train"].images, raw.test_images]))
    assert np.abs(mean - with_val).max() > 1e-5
    assert np.abs(mean - with_test).max() > 0.05


# ------------------------------------------------------------------ duplicates


def test_find_duplicates_finds_injected_copies(raw: RawDataset) -> None:
    test = raw.test_images.copy()
    test[2] = raw.train_images[5]
    test[4] = raw.train_images[0]
    test[9] = raw.train_images[5]
    train = raw.train_images.copy()
    train[60] = train[5]  # a duplicate inside train: the first index is reported
    assert find_duplicates(train, test) == [(5, 2), (0, 4), (5, 9)]


def test_find_duplicates_none(raw: RawDataset) -> None:
    assert find_duplicates(raw.train_images, raw.test_images) == []
    almost = raw.train_images[:1].copy()
    almost[0, 0, 0, 0] ^= 1  # one bit off is not a duplicate
    assert find_duplicates(raw.train_images, almost) == []


def test_prepare_records_duplicates_and_where_they_land(raw: RawDataset, tmp_path: Path) -> None:
    test = raw.test_images.copy()
    _, val_idx = split_indices(raw.train_labels, 0.2, seed=0)
    in_val, in_train = int(val_idx[0]), int(np.setdiff1d(np.arange(100), val_idx)[0])
    test[1], test[3] = raw.train_images[in_train], raw.train_images[in_val]
    data = RawDataset(CLASSES, raw.train_images, raw.train_labels, test, raw.test_labels)
    summary = prepare(data, tmp_path / "prepared", val_size=0.2, seed=0)
    assert summary["train_test_duplicates"] == {
        "count": 2,
        "pairs": [
            {"source_train_index": in_train, "lands_in": "train", "test_index": 1},
            {"source_train_index": in_val, "lands_in": "val", "test_index": 3},
        ],
    }


# ------------------------------------------------------------------ files


def test_round_trip(raw: RawDataset, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    summary = prepare(raw, out, val_size=0.2, seed=4)
    train_idx, val_idx = split_indices(raw.train_labels, 0.2, seed=4)
    data = load_prepared(out)
    assert data.classes == CLASSES
    expected = {
        "train": (raw.train_images[train_idx], raw.train_labels[train_idx]),
        "val": (raw.train_images[val_idx], raw.train_labels[val_idx]),
        "test": (raw.test_images, raw.test_labels),
    }
    for name, (images, labels) in expected.items():
        split = data.splits[name]
        assert split.images.dtype == np.uint8 and split.labels.dtype == np.int64
        np.testing.assert_array_equal(split.images, images)
        np.testing.assert_array_equal(split.labels, labels)
        assert len(split) == len(labels)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [SUMMARY] + [f"{s}_{k}.npy" for s in SPLITS for k in ("images", "labels")]
    )
    assert sorted(summary["sha256"]) == sorted(p.name for p in out.glob("*.npy"))
    assert json.loads((out / SUMMARY).read_text()) == summary


def test_arrays_load_without_pickle(raw: RawDataset, tmp_path: Path) -> None:
    prepare(raw, tmp_path / "prepared", val_size=0.2, seed=0)
    for path in sorted((tmp_path / "prepared").glob("*.npy")):
        array = np.load(path, allow_pickle=False)
        assert array.dtype in (np.uint8, np.int64), path
        assert array.flags.c_contiguous


def test_mmap_load(raw: RawDataset, tmp_path: Path) -> None:
    prepare(raw, tmp_path / "prepared", val_size=0.2, seed=0)
    plain = load_prepared(tmp_path / "prepared")
    mapped = load_prepared(tmp_path / "prepared", mmap=True)
    for name in SPLITS:
        assert isinstance(mapped.splits[name].images, np.memmap)
        assert not mapped.splits[name].images.flags.writeable
        np.testing.assert_array_equal(mapped.splits[name].images, plain.splits[name].images)
        np.testing.assert_array_equal(mapped.splits[name].labels, plain.splits[name].labels)


@pytest.mark.parametrize("name", ["train_images.npy", "val_labels.npy", "test_images.npy"])
def test_modified_array_is_refused(raw: RawDataset, tmp_path: Path, name: str) -> None:
    out = tmp_path / "prepared"
    summary = prepare(raw, out, val_size=0.2, seed=0)
    path = out / name
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # still a loadable .npy of the same shape
    path.write_bytes(bytes(data))
    with pytest.raises(
        DataError,
        match=re.escape(f"{path}: sha256 ")
        + r"[0-9a-f]{64}"
        + re.escape(f" does not match {out / SUMMARY} ({summary['sha256'][name]})"),
    ):
        load_prepared(out)


def test_loading_one_split_neither_reads_nor_checks_the_others(
    raw: RawDataset, tmp_path: Path
) -> None:
    out = tmp_path / "prepared"
    prepare(raw, out, val_size=0.2, seed=0)
    (out / "train_images.npy").unlink()
    (out / "val_labels.npy").write_bytes(b"not an array")
    data = load_prepared(out, splits=("test",))
    assert list(data.splits) == ["test"]
    assert np.array_equal(data.splits["test"].images, np.load(out / "test_images.npy"))


def test_missing_array_is_refused(raw: RawDataset, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    prepare(raw, out, val_size=0.2, seed=0)
    (out / "val_images.npy").unlink()
    with pytest.raises(DataError, match=re.escape(f"{out / 'val_images.npy'} is missing")):
        load_prepared(out)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "is missing"),
        ("{oops", "not valid JSON"),
        ('{"classes": ["a"]}', "lacks normalization, sha256; rerun the prepare stage"),
        ("[]", "lacks classes, normalization, sha256"),
    ],
)
def test_missing_or_broken_summary(
    raw: RawDataset, tmp_path: Path, content: str | None, message: str
) -> None:
    out = tmp_path / "prepared"
    prepare(raw, out, val_size=0.2, seed=0)
    if content is None:
        (out / SUMMARY).unlink()
    else:
        (out / SUMMARY).write_text(content)
    with pytest.raises(DataError, match=re.escape(f"{out / SUMMARY}") + ".*" + message):
        load_prepared(out)


@pytest.mark.parametrize("val_size", [0.0, 0.25])
def test_summary_counts_add_up(raw: RawDataset, tmp_path: Path, val_size: float) -> None:
    summary = prepare(raw, tmp_path / "prepared", val_size=val_size, seed=0)
    counts = summary["counts"]
    assert summary["classes"] == list(CLASSES)
    assert summary["split"] == {"val_size": val_size, "seed": 0}
    for name in SPLITS:
        assert list(counts[name]["per_class"]) == list(CLASSES)
        assert sum(counts[name]["per_class"].values()) == counts[name]["total"]
    assert counts["train"]["total"] + counts["val"]["total"] == len(raw.train_labels)
    assert counts["val"]["total"] == round(val_size * len(raw.train_labels))
    assert counts["test"]["total"] == len(raw.test_labels)
    for cls, total in zip(CLASSES, TRAIN_COUNTS, strict=True):
        assert counts["train"]["per_class"][cls] + counts["val"]["per_class"][cls] == total
        assert counts["test"]["per_class"][cls] == TEST_PER_CLASS


def test_prepare_replaces_the_folder_whole(raw: RawDataset, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    out.mkdir()
    (out / "dataset.json").write_text("{}")  # an earlier output of prepare
    (out / "stale.npy").write_bytes(b"old")
    prepare(raw, out, val_size=0.0, seed=0)
    assert not (out / "stale.npy").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["prepared"]  # no temp folder left
    assert len(load_prepared(out).splits["val"]) == 0


def test_too_small_validation_split_is_a_data_error(tmp_path: Path) -> None:
    images = np.zeros((12, 32, 32, 3), np.uint8)
    labels = np.repeat(np.arange(4), 3).astype(np.int64)  # 4 classes × 3 images
    small = RawDataset(CLASSES, images, labels, images[:4], np.arange(4, dtype=np.int64))
    with pytest.raises(DataError, match="raise val_size or set it to 0"):
        prepare(small, tmp_path / "prepared", val_size=0.1, seed=0)  # 2 val images < 4 classes
    with pytest.raises(DataError, match="lower val_size"):
        prepare(small, tmp_path / "prepared", val_size=0.9, seed=0)  # 2 train images < 4 classes


# ------------------------------------------------------------------ train subset


def test_train_subset_is_stratified_seeded_and_leaves_val_and_test(
    raw: RawDataset, tmp_path: Path
) -> None:
    prepare(raw, tmp_path / "prepared", val_size=0.2, seed=0)
    data = load_prepared(tmp_path / "prepared")
    half = train_subset(data, 0.5, seed=1, key="train_fraction.resnet")
    counts = np.bincount(data.splits["train"].labels, minlength=len(CLASSES))
    np.testing.assert_array_equal(
        np.bincount(half.splits["train"].labels, minlength=len(CLASSES)), counts // 2
    )
    again = train_subset(data, 0.5, seed=1, key="train_fraction.resnet")
    np.testing.assert_array_equal(half.splits["train"].images, again.splits["train"].images)
    other = train_subset(data, 0.5, seed=2, key="train_fraction.resnet")
    assert not np.array_equal(half.splits["train"].images, other.splits["train"].images)
    for name in ("val", "test"):
        assert half.splits[name] is data.splits[name]
    assert train_subset(data, 1.0, seed=1, key="train_fraction.resnet") is data


def test_train_subset_too_small_to_keep_every_class_names_the_key(
    raw: RawDataset, tmp_path: Path
) -> None:
    prepare(raw, tmp_path / "prepared", val_size=0.2, seed=0)
    data = load_prepared(tmp_path / "prepared")
    with pytest.raises(DataError, match=r"train_fraction\.densenet = 0\.01 of 80 .*; raise"):
        train_subset(data, 0.01, seed=0, key="train_fraction.densenet")
    # So close to 1 that fewer images than classes would be left out: the advice turns around.
    with pytest.raises(DataError, match=r"= 0\.99 of 80 .*; lower train_fraction\.densenet"):
        train_subset(data, 0.99, seed=0, key="train_fraction.densenet")


def test_given_normalisation_constants_replace_the_measured_ones(
    raw: RawDataset, tmp_path: Path
) -> None:
    study = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    summary = prepare(raw, tmp_path / "p", 0.2, 0, normalization=study)
    assert summary["normalization"] == {"mean": list(study[0]), "std": list(study[1])}
    loaded = load_prepared(tmp_path / "p")
    assert (loaded.mean, loaded.std) == study


def test_evenly_spaced_reaches_both_ends_without_repeats() -> None:
    assert evenly_spaced(10, 4).tolist() == [0, 3, 6, 9]
    assert evenly_spaced(3, 8).tolist() == [0, 1, 2]
    sample = evenly_spaced(45_000, 4096)
    assert len(sample) == 4096 and sample[0] == 0 and sample[-1] == 44_999
