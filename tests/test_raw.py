"""read_raw(): right arrays from both layouts, and a DataError naming the file for bad data."""

from __future__ import annotations

import os
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from training_helpers import (
    CLASS_COLOURS,
    FOLDER_CLASSES,
    OFFICIAL_CLASSES,
    TEST_PER_CLASS,
    TRAIN_PER_CLASS,
    OfficialBatches,
    build_official_batches,
    class_image,
)

from cifar_study.data.raw import (
    MANIFEST,
    OFFICIAL_DIR,
    OFFICIAL_TRAIN,
    read_official,
    read_raw,
    verify_manifest,
)
from cifar_study.data.sources import acquire
from cifar_study.errors import DataError


def acquired(tmp_path: Path, source: Path) -> Path:
    raw_dir = tmp_path / "raw"
    acquire(str(source), raw_dir, tmp_path / "downloads")
    return raw_dir


# ------------------------------------------------------------------ image folders: good data


def test_image_folder_arrays(tmp_path: Path, image_tree: Path) -> None:
    data = read_raw(acquired(tmp_path, image_tree))
    assert data.classes == FOLDER_CLASSES  # sorted folder names
    n_train, n_test = TRAIN_PER_CLASS * 3, TEST_PER_CLASS * 3
    assert data.train_images.shape == (n_train, 32, 32, 3)
    assert data.test_images.shape == (n_test, 32, 32, 3)
    assert data.train_images.dtype == np.uint8 and data.test_images.dtype == np.uint8
    assert data.train_labels.dtype == np.int64 and data.test_labels.dtype == np.int64
    assert data.train_labels.tolist() == [c for c in range(3) for _ in range(TRAIN_PER_CLASS)]
    assert data.test_labels.tolist() == [c for c in range(3) for _ in range(TEST_PER_CLASS)]
    # Each label matches the colour of its image, JPEGs included.
    for images, labels in (
        (data.train_images, data.train_labels),
        (data.test_images, data.test_labels),
    ):
        for image, label in zip(images, labels, strict=True):
            dominant = int(np.argmax(image.reshape(-1, 3).mean(axis=0)))
            assert dominant == int(np.argmax(CLASS_COLOURS[FOLDER_CLASSES[label]]))


def test_png_pixels_are_read_exactly(tmp_path: Path, image_tree: Path) -> None:
    data = read_raw(acquired(tmp_path, image_tree))
    # The first train file of each class is img0.png (sorted order), written from a known array.
    expected = np.asarray(Image.open(image_tree / "train" / "cat" / "img0.png"))
    first_cat = int(np.flatnonzero(data.train_labels == FOLDER_CLASSES.index("cat"))[0])
    np.testing.assert_array_equal(data.train_images[first_cat], expected)


def test_digits_read(digits_raw: Path) -> None:
    data = read_raw(digits_raw)
    assert data.classes == tuple(str(d) for d in range(10))
    assert data.train_images.shape == (1437, 32, 32, 3)
    assert data.test_images.shape == (360, 32, 32, 3)
    assert np.bincount(data.train_labels).min() > 100
    # Grey digits replicated to three channels.
    np.testing.assert_array_equal(data.train_images[..., 0], data.train_images[..., 2])


# ------------------------------------------------------------------ official batches: good data


def test_official_arrays(tmp_path: Path, official_batches: OfficialBatches) -> None:
    data = read_raw(acquired(tmp_path, official_batches.root))
    assert data.classes == OFFICIAL_CLASSES  # label_names order, not sorted
    rows = np.concatenate([official_batches.rows[name] for name in OFFICIAL_TRAIN])
    labels = [label for name in OFFICIAL_TRAIN for label in official_batches.labels[name]]
    assert data.train_images.shape == (len(rows), 32, 32, 3)
    assert data.train_images.dtype == np.uint8 and data.train_labels.dtype == np.int64
    assert data.train_labels.tolist() == labels
    assert data.test_labels.tolist() == official_batches.labels["test_batch"]
    assert data.train_images.flags.c_contiguous
    # Row layout: 1024 red, 1024 green, 1024 blue, each row-major.
    i, y, x = 7, 3, 29
    for c in range(3):
        assert data.train_images[i, y, x, c] == rows[i, c * 1024 + y * 32 + x]
    np.testing.assert_array_equal(
        data.test_images.reshape(len(data.test_images), -1, 3).transpose(0, 2, 1).reshape(-1, 3072),
        official_batches.rows["test_batch"],
    )


def test_read_official_checks_md5_itself(official_batches: OfficialBatches) -> None:
    path = official_batches.folder / "data_batch_2"
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(DataError, match=re.escape(f"{path}: md5")):
        read_official(official_batches.folder)


# ------------------------------------------------------------------ image folders: bad data


def _replace(relative: str, writer):
    def mutate(root: Path) -> None:
        target = root / relative
        for old in target.parent.glob(target.stem + ".*"):
            old.unlink()
        target.parent.mkdir(parents=True, exist_ok=True)
        writer(target)

    return mutate


def _save(array: np.ndarray, **kwargs):
    return lambda path: Image.fromarray(array, **kwargs).save(path)


def _truncated_jpeg(path: Path) -> None:
    Image.fromarray(class_image("cat", 99)).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


BAD_IMAGE_CASES = [
    pytest.param(
        _replace("train/cat/img0.png", _save(np.zeros((32, 31, 3), np.uint8))),
        "train/cat/img0.png",
        "image is 31×32 RGB; expected 32×32 RGB",
        id="wrong-size",
    ),
    pytest.param(
        _replace("test/dog/img1.jpg", _save(np.zeros((32, 32), np.uint8))),
        "test/dog/img1.jpg",
        "image is 32×32 L; expected 32×32 RGB",
        id="grayscale",
    ),
    pytest.param(
        _replace("train/bird/img2.png", _save(np.zeros((32, 32, 4), np.uint8))),
        "train/bird/img2.png",
        "32×32 RGBA; expected",
        id="rgba",
    ),
    pytest.param(
        _replace("train/dog/img0.png", lambda p: p.write_bytes(os.urandom(64) + b"garbage")),
        "train/dog/img0.png",
        "not a readable image",
        id="garbage-png",
    ),
    pytest.param(
        _replace("train/dog/img0.png", lambda p: p.write_bytes(b"")),
        "train/dog/img0.png",
        "not a readable image",
        id="empty-png",
    ),
    pytest.param(
        _replace("train/cat/img1.jpg", _truncated_jpeg),
        "train/cat/img1.jpg",
        "not a readable image",
        id="truncated-jpeg",
    ),
    pytest.param(
        _replace("train/cat/labels.txt", lambda p: p.write_text("cat\n")),
        "train/cat/labels.txt",
        "not an image file",
        id="non-image-file",
    ),
    pytest.param(
        _replace("test/cat/sub/img.png", _save(class_image("cat", 5))),
        "test/cat/sub",
        "not an image file",
        id="nested-folder",
    ),
    pytest.param(
        _replace("test/horse/img0.png", _save(class_image("cat", 5))),
        "test/horse",
        "unknown class folder; the classes (from train/) are bird, cat, dog",
        id="unknown-test-class",
    ),
    pytest.param(
        lambda root: shutil.rmtree(root / "test" / "bird"),
        "test/bird",
        "is missing: every class needs images in train/ and test/",
        id="class-folder-missing-in-test",
    ),
]


@pytest.mark.parametrize(("mutate", "relative", "message"), BAD_IMAGE_CASES)
def test_bad_image_folder_data_names_the_file(
    tmp_path: Path, image_tree: Path, mutate, relative: str, message: str
) -> None:
    mutate(image_tree)
    raw_dir = acquired(tmp_path, image_tree)  # acquire does not decode images
    with pytest.raises(DataError, match=re.escape(f"{raw_dir / relative}")) as info:
        read_raw(raw_dir)
    assert message in str(info.value)


@pytest.mark.parametrize(("split", "name"), [("test", "cat"), ("train", "dog")])
def test_class_with_no_images_in_a_split(
    tmp_path: Path, image_tree: Path, split: str, name: str
) -> None:
    for path in (image_tree / split / name).iterdir():
        path.unlink()
    raw_dir = acquired(tmp_path, image_tree)
    with pytest.raises(
        DataError,
        match=re.escape(f"{raw_dir}: the {split} split has no images of class(es) {name}"),
    ):
        read_raw(raw_dir)


def test_train_without_class_folders(tmp_path: Path, image_tree: Path) -> None:
    shutil.rmtree(image_tree / "train")
    (image_tree / "train").mkdir()
    (image_tree / "train" / "README").write_text("no classes here")
    raw_dir = acquired(tmp_path, image_tree)
    with pytest.raises(DataError, match=re.escape(f"{raw_dir / 'train'} has no class folders")):
        read_raw(raw_dir)


# ------------------------------------------------------------------ official batches: bad data


def test_official_label_out_of_range(tmp_path: Path, patch_official_md5) -> None:
    batches = build_official_batches(tmp_path / "official")
    labels = list(batches.labels["data_batch_2"])
    labels[4] = len(OFFICIAL_CLASSES)  # one past the last class
    batches.rewrite("data_batch_2", {b"data": batches.rows["data_batch_2"], b"labels": labels})
    patch_official_md5(batches)  # only the label check can fail now
    raw_dir = acquired(tmp_path, batches.root)
    path = raw_dir / OFFICIAL_DIR / "data_batch_2"
    with pytest.raises(DataError, match=re.escape(f"{path}: label 3 out of range 0..2")):
        read_raw(raw_dir)


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        pytest.param(
            {b"data": np.zeros((2, 3071), np.uint8), b"labels": [0, 1]},
            "expected N×3072 pixel rows and N labels",
            id="short-rows",
        ),
        pytest.param(
            {b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1]},
            "expected N×3072 pixel rows and N labels",
            id="label-count",
        ),
        pytest.param({b"labels": [0, 1]}, "not a CIFAR-10 batch", id="no-data-key"),
        pytest.param(
            {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, -1]},
            "label -1 out of range 0..2",
            id="negative-label",
        ),
        pytest.param([1, 2, 3], "expected a dict, found list", id="not-a-dict"),
    ],
)
def test_malformed_official_batch(
    tmp_path: Path, patch_official_md5, batch: object, message: str
) -> None:
    batches = build_official_batches(tmp_path / "official")
    batches.rewrite("test_batch", batch)
    patch_official_md5(batches)
    with pytest.raises(DataError, match=re.escape(str(batches.folder / "test_batch"))) as info:
        read_official(batches.folder)
    assert message in str(info.value)


class _Payload:
    """Unpickles to a call of os.mkdir: the harmless stand-in for os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


@pytest.mark.parametrize("name", ["batches.meta", "data_batch_1"])
def test_pickle_payload_is_refused_without_running(
    tmp_path: Path, patch_official_md5, name: str
) -> None:
    marker = tmp_path / "payload-ran"
    batches = build_official_batches(tmp_path / "official")
    payload = _Payload(marker)  # one object, pickled once, referenced twice
    evil = {b"data": payload, b"labels": [0], b"label_names": [payload]}
    batches.rewrite(name, evil)  # a Python-2-style pickle, like the real batches
    patch_official_md5(batches)  # the md5 guard passes: only the unpickler stands in the way
    raw_dir = acquired(tmp_path, batches.root)
    path = raw_dir / OFFICIAL_DIR / name
    with pytest.raises(
        DataError,
        match=rf"{re.escape(str(path))}: cannot be read as a CIFAR-10 batch "
        r"\(refusing to load (posix|os|nt)\.mkdir\)",
    ):
        read_raw(raw_dir)
    assert not marker.exists()
    # The payload is live: a plain unpickler would have run it.
    pickle.loads(path.read_bytes())
    assert marker.is_dir()


# ------------------------------------------------------------------ manifest


@pytest.fixture
def raw_from_tree(tmp_path: Path, image_tree: Path) -> Path:
    return acquired(tmp_path, image_tree)


def test_manifest_verifies_untouched_data(raw_from_tree: Path) -> None:
    manifest = verify_manifest(raw_from_tree)
    assert manifest["layout"] == "image-folder"
    assert len(manifest["files"]) == 3 * (TRAIN_PER_CLASS + TEST_PER_CLASS)


def test_modified_file_is_a_sha256_mismatch(raw_from_tree: Path) -> None:
    path = raw_from_tree / "train" / "dog" / "img0.png"
    # Re-saved with different pixels: still a valid 32×32 RGB PNG, so only the manifest can tell.
    Image.fromarray(class_image("dog", 1000)).save(path)
    with pytest.raises(
        DataError,
        match=rf"{re.escape(str(path))}: sha256 [0-9a-f]{{64}} does not match the manifest",
    ):
        read_raw(raw_from_tree)


def test_added_file_is_not_in_the_manifest(raw_from_tree: Path) -> None:
    path = raw_from_tree / "train" / "dog" / "extra.png"
    Image.fromarray(class_image("dog", 1001)).save(path)
    with pytest.raises(DataError, match=re.escape(f"{path} is not in the manifest")):
        read_raw(raw_from_tree)


def test_deleted_file_is_listed_but_missing(raw_from_tree: Path) -> None:
    path = raw_from_tree / "test" / "bird" / "img1.jpg"
    path.unlink()
    with pytest.raises(DataError, match=re.escape(f"{path} is listed but missing")):
        read_raw(raw_from_tree)


def test_missing_manifest(raw_from_tree: Path) -> None:
    (raw_from_tree / MANIFEST).unlink()
    with pytest.raises(
        DataError, match=re.escape(f"{raw_from_tree / MANIFEST} is missing: run the download")
    ):
        read_raw(raw_from_tree)


@pytest.mark.parametrize("content", ["{not json", '{"source": "digits"}', "[1, 2]"])
def test_invalid_manifest(raw_from_tree: Path, content: str) -> None:
    (raw_from_tree / MANIFEST).write_text(content)
    with pytest.raises(
        DataError, match=re.escape(f"{raw_from_tree / MANIFEST} is not a valid manifest")
    ):
        read_raw(raw_from_tree)


def test_read_raw_of_a_folder_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="run the download stage first"):
        read_raw(tmp_path / "never-downloaded")
