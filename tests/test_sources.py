"""acquire(): every supported source ends as one raw folder in a known layout, or not at all."""

from __future__ import annotations

import functools
import json
import re
import shutil
from pathlib import Path

import pytest
from training_helpers import (
    FOLDER_CLASSES,
    OFFICIAL_CLASSES,
    TEST_PER_CLASS,
    TRAIN_PER_CLASS,
    OfficialBatches,
    make_tar,
    md5_of,
    tree_listing,
)

from cifar_study.data import fetch, sources
from cifar_study.data.raw import MANIFEST, OFFICIAL_DIR, read_raw
from cifar_study.data.sources import acquire
from cifar_study.errors import DataError, DownloadError


def assert_manifest_matches_folder(raw_dir: Path, manifest: dict) -> None:
    on_disk = tree_listing(raw_dir)
    assert json.loads((raw_dir / MANIFEST).read_text()) == manifest
    del on_disk[MANIFEST]
    assert manifest["files"] == on_disk


def leftovers(folder: Path) -> list[str]:
    """Temp folders atomic_dir could have left beside the raw folder."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def fail_if_called(*args: object, **kwargs: object) -> None:
    raise AssertionError(f"download must not be called (called with {args})")


def test_digits_source(digits_raw: Path) -> None:
    manifest = json.loads((digits_raw / MANIFEST).read_text())
    assert manifest["source"] == "digits"
    assert manifest["layout"] == "image-folder"
    assert_manifest_matches_folder(digits_raw, manifest)
    classes = [str(d) for d in range(10)]
    for split, total in (("train", 1437), ("test", 360)):
        assert sorted(p.name for p in (digits_raw / split).iterdir()) == classes
        pngs = list((digits_raw / split).glob("*/*.png"))
        assert len(pngs) == total
    assert len(manifest["files"]) == 1437 + 360
    # Train and test are disjoint draws from the 1797 scans (file names are scan indices).
    train = {p.name for p in (digits_raw / "train").glob("*/*.png")}
    test = {p.name for p in (digits_raw / "test").glob("*/*.png")}
    assert not train & test


@pytest.mark.parametrize(
    "kind",
    ["folder", "tar", "tar.gz", "tgz-with-wrapper", "tar-with-wrapper", "folder-with-wrapper"],
)
def test_image_folder_sources(tmp_path: Path, image_tree: Path, kind: str) -> None:
    expected = tree_listing(image_tree)
    if kind == "folder":
        source = image_tree
    elif kind == "folder-with-wrapper":
        source = tmp_path / "outer"
        shutil.copytree(image_tree, source / "CINIC-10-tiny")
    else:
        name = {"tar": "images.tar", "tar.gz": "images.tar.gz"}.get(kind, "images.tgz")
        if kind == "tar-with-wrapper":
            name = "images.tar"
        wrapper = "my-dataset" if "wrapper" in kind else None
        source = make_tar(image_tree, tmp_path / "archives" / name, wrapper=wrapper)
    raw_dir = tmp_path / "work" / "raw"
    manifest = acquire(str(source), raw_dir, tmp_path / "work" / "downloads")
    assert manifest["source"] == str(source)
    assert manifest["layout"] == "image-folder"
    assert_manifest_matches_folder(raw_dir, manifest)
    assert manifest["files"] == expected  # same files, same bytes, wrapper folder gone
    assert tree_listing(image_tree) == expected  # the source is copied, not moved
    assert leftovers(raw_dir.parent) == []
    data = read_raw(raw_dir)
    assert data.classes == FOLDER_CLASSES
    assert len(data.train_labels) == TRAIN_PER_CLASS * len(FOLDER_CLASSES)
    assert len(data.test_labels) == TEST_PER_CLASS * len(FOLDER_CLASSES)


@pytest.mark.parametrize("where", ["parent-folder", "batches-folder-itself", "plain-tar"])
def test_official_batches_from_a_folder_or_plain_archive(
    tmp_path: Path, official_batches: OfficialBatches, where: str
) -> None:
    if where == "parent-folder":
        source = official_batches.root
    elif where == "batches-folder-itself":
        source = official_batches.folder
    else:  # not named like the official release: only the per-file md5s are checked
        source = make_tar(official_batches.root, tmp_path / "archives" / "my-cifar.tar")
    raw_dir = tmp_path / "raw"
    manifest = acquire(str(source), raw_dir, tmp_path / "downloads")
    assert manifest["layout"] == "cifar-python"
    assert sorted(manifest["files"]) == sorted(
        f"{OFFICIAL_DIR}/{name}" for name in official_batches.md5s()
    )
    assert_manifest_matches_folder(raw_dir, manifest)
    assert read_raw(raw_dir).classes == OFFICIAL_CLASSES


def test_official_tarball_with_matching_md5(tmp_path: Path, official_tarball: Path) -> None:
    raw_dir = tmp_path / "raw"
    manifest = acquire(str(official_tarball), raw_dir, tmp_path / "downloads")
    assert manifest["layout"] == "cifar-python"
    assert (raw_dir / OFFICIAL_DIR / "data_batch_5").is_file()


def test_official_tarball_with_wrong_md5_keeps_the_previous_raw_folder(
    tmp_path: Path, image_tree: Path, official_batches: OfficialBatches
) -> None:
    raw_dir = tmp_path / "work" / "raw"
    acquire(str(image_tree), raw_dir, tmp_path / "downloads")
    before = tree_listing(raw_dir)
    # Named like the official release, but its md5 is not the official one (CIFAR10_MD5 is real).
    archive = make_tar(official_batches.root, tmp_path / "archives" / sources.CIFAR10_ARCHIVE)
    with pytest.raises(
        DataError,
        match=re.escape(f"{archive}: md5 {md5_of(archive)} does not match the official CIFAR-10"),
    ):
        acquire(str(archive), raw_dir, tmp_path / "downloads")
    assert tree_listing(raw_dir) == before
    assert leftovers(raw_dir.parent) == []


@pytest.mark.parametrize("name", ["data_batch_3", "test_batch", "batches.meta"])
def test_official_batch_with_a_flipped_byte_is_refused(
    tmp_path: Path, official_batches: OfficialBatches, name: str
) -> None:
    path = official_batches.folder / name
    official_md5 = md5_of(path)  # what the patched table expects
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    raw_dir = tmp_path / "work" / "raw"
    with pytest.raises(
        DataError,
        match=re.escape(
            f"{OFFICIAL_DIR}/{name}: md5 {md5_of(path)} does not match "
            f"the official CIFAR-10 file ({official_md5})"
        ),
    ):
        acquire(str(official_batches.root), raw_dir, tmp_path / "downloads")
    assert not raw_dir.exists()
    assert leftovers(raw_dir.parent) == []


def test_official_batches_with_a_missing_file_are_refused(
    tmp_path: Path, official_batches: OfficialBatches
) -> None:
    (official_batches.folder / "data_batch_5").unlink()
    with pytest.raises(DataError, match=r"data_batch_5 is missing from the official CIFAR-10"):
        acquire(str(official_batches.root), tmp_path / "raw", tmp_path / "downloads")


def test_cifar10_uses_a_cached_archive_with_the_right_md5(
    tmp_path: Path, official_tarball: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "download", fail_if_called)
    download_dir = tmp_path / "downloads"
    download_dir.mkdir()
    shutil.copy(official_tarball, download_dir / sources.CIFAR10_ARCHIVE)
    raw_dir = tmp_path / "raw"
    manifest = acquire("cifar10", raw_dir, download_dir)
    assert manifest["source"] == "cifar10"
    assert manifest["layout"] == "cifar-python"
    assert read_raw(raw_dir).classes == OFFICIAL_CLASSES


def test_cifar10_downloads_again_over_a_corrupt_cache(
    tmp_path: Path, official_tarball: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple] = []

    def fake_download(url: str, dest: Path, md5: str, **kwargs: object) -> None:
        calls.append((url, dest, md5))
        shutil.copy(official_tarball, dest)

    monkeypatch.setattr(sources, "download", fake_download)
    download_dir = tmp_path / "downloads"
    download_dir.mkdir()
    (download_dir / sources.CIFAR10_ARCHIVE).write_bytes(b"half an archive")
    manifest = acquire("cifar10", tmp_path / "raw", download_dir)
    assert calls == [
        (sources.CIFAR10_URL, download_dir / sources.CIFAR10_ARCHIVE, sources.CIFAR10_MD5)
    ]
    assert manifest["layout"] == "cifar-python"


def test_cifar10_without_network_is_a_download_error_and_creates_no_raw_folder(
    tmp_path: Path, unreachable_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "CIFAR10_URL", unreachable_url)
    monkeypatch.setattr(
        sources, "download", functools.partial(fetch.download, timeout=0.5, retries=2, backoff=0)
    )
    raw_dir = tmp_path / "work" / "raw"
    download_dir = tmp_path / "work" / "downloads"
    with pytest.raises(DownloadError, match=re.escape(unreachable_url)) as info:
        acquire("cifar10", raw_dir, download_dir)
    assert "data.source" in str(info.value)
    assert not raw_dir.exists()
    assert leftovers(raw_dir.parent) == []
    assert not download_dir.exists() or list(download_dir.iterdir()) == []


def test_nonexistent_source_path(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "data"
    with pytest.raises(DataError, match=re.escape(f"data.source {missing} does not exist")):
        acquire(str(missing), tmp_path / "raw", tmp_path / "downloads")
    assert not (tmp_path / "raw").exists()


@pytest.mark.parametrize("name", ["notes.txt", "images.zip", "images.tar.bz2"])
def test_source_that_is_not_a_folder_or_tar(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"PK\x03\x04 not a tar")
    with pytest.raises(
        DataError, match=re.escape(f"data.source {path} is neither a folder nor a tar")
    ):
        acquire(str(path), tmp_path / "raw", tmp_path / "downloads")
    assert not (tmp_path / "raw").exists()


def test_archive_with_no_known_layout_lists_what_it_found(tmp_path: Path, image_tree: Path) -> None:
    content = tmp_path / "content"
    shutil.copytree(image_tree / "train", content / "images")
    (content / "README.txt").write_text("hello")
    archive = make_tar(content, tmp_path / "archives" / "odd.tar.gz")
    with pytest.raises(DataError, match=r"no known dataset layout.*\(found: README\.txt, images\)"):
        acquire(str(archive), tmp_path / "raw", tmp_path / "downloads")
    assert not (tmp_path / "raw").exists()


def _train_and_notes(root: Path) -> None:
    (root / "train" / "cat").mkdir(parents=True)  # test/ forgotten
    (root / "notes.txt").write_text("x")


@pytest.mark.parametrize(
    ("make", "found"),
    [(_train_and_notes, "notes.txt, train"), (lambda root: None, "nothing")],
)
def test_folder_with_no_known_layout(tmp_path: Path, make, found: str) -> None:
    source = tmp_path / "source"
    source.mkdir()
    make(source)
    with pytest.raises(
        DataError,
        match=rf"^{re.escape(str(source))}: no known dataset layout.*\(found: {found}\)$",
    ):
        acquire(str(source), tmp_path / "raw", tmp_path / "downloads")
    assert not (tmp_path / "raw").exists()


def test_acquire_replaces_the_raw_folder_whole(
    tmp_path: Path, image_tree: Path, official_batches: OfficialBatches
) -> None:
    raw_dir = tmp_path / "raw"
    acquire(str(image_tree), raw_dir, tmp_path / "downloads")
    manifest = acquire(str(official_batches.root), raw_dir, tmp_path / "downloads")
    assert not (raw_dir / "train").exists()  # nothing stale from the previous source
    assert_manifest_matches_folder(raw_dir, manifest)
    assert read_raw(raw_dir).classes == OFFICIAL_CLASSES


def test_hidden_files_in_the_source_are_recorded_and_ignored(
    tmp_path: Path, image_tree: Path
) -> None:
    (image_tree / "train" / "cat" / ".DS_Store").write_bytes(b"\x00\x01")
    (image_tree / "README.txt").write_text("a loose file beside train/ and test/")
    raw_dir = tmp_path / "raw"
    manifest = acquire(str(image_tree), raw_dir, tmp_path / "downloads")
    assert "train/cat/.DS_Store" in manifest["files"]
    assert read_raw(raw_dir).classes == FOLDER_CLASSES


def test_nested_manifest_named_file_does_not_break_read_raw(
    tmp_path: Path, image_tree: Path
) -> None:
    (image_tree / "train" / "manifest.json").write_text('{"note": "from the dataset authors"}')
    raw_dir = tmp_path / "raw"
    acquire(str(image_tree), raw_dir, tmp_path / "downloads")
    assert read_raw(raw_dir).classes == FOLDER_CLASSES


def test_a_lone_train_folder_is_reported_not_unwrapped(tmp_path: Path, image_tree: Path) -> None:
    only_train = tmp_path / "only-train"
    shutil.copytree(image_tree / "train", only_train / "train")
    with pytest.raises(DataError, match=r"found: train\)"):
        acquire(str(only_train), tmp_path / "raw", tmp_path / "downloads")
