"""Fixtures: tiny data sets built in tmp_path, so no test needs the network or the real CIFAR-10.

The data itself is built by the helpers in training_helpers.py:

- official-format python batches (`cifar-10-batches-py/`), with the md5 tables patched to the
  tiny files' real md5s where a test needs the "official" checks to pass;
- an image-folder tree (`train/<class>/*`, `test/<class>/*`) of 32×32 RGB PNGs and JPEGs;
- the official batches as the official archive; a URL nothing answers; the digits source.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from training_helpers import (
    OfficialBatches,
    build_image_tree,
    build_official_batches,
    closed_port,
    make_tar,
    md5_of,
)

from cifar_study.data import raw as raw_module
from cifar_study.data import sources as sources_module

# --------------------------------------------------------------------------- official batches


@pytest.fixture
def patch_official_md5(monkeypatch: pytest.MonkeyPatch) -> Callable[[OfficialBatches], None]:
    """Make `raw.OFFICIAL_MD5` the md5s of the given tiny batches, as they are now."""

    def patch(batches: OfficialBatches) -> None:
        monkeypatch.setattr(raw_module, "OFFICIAL_MD5", batches.md5s())

    return patch


@pytest.fixture
def official_batches(tmp_path: Path, patch_official_md5) -> OfficialBatches:
    """Tiny official batches under tmp_path/official/, accepted as the official files."""
    batches = build_official_batches(tmp_path / "official")
    patch_official_md5(batches)
    return batches


@pytest.fixture
def official_tarball(
    official_batches: OfficialBatches, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """`cifar-10-python.tar.gz` of the tiny batches, accepted as the official archive."""
    archive = make_tar(
        official_batches.root, tmp_path / "archives" / sources_module.CIFAR10_ARCHIVE
    )
    monkeypatch.setattr(sources_module, "CIFAR10_MD5", md5_of(archive))
    return archive


# --------------------------------------------------------------------------- image folders


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    """A 3-class image-folder tree (PNG + JPEG) under tmp_path/images/."""
    return build_image_tree(tmp_path / "images")


# --------------------------------------------------------------------------- network


@pytest.fixture
def unreachable_url() -> str:
    return f"https://127.0.0.1:{closed_port()}/x"


# --------------------------------------------------------------------------- digits


@pytest.fixture(scope="session")
def digits_raw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The digits source acquired once per session (read-only: copy it to modify it)."""
    root = tmp_path_factory.mktemp("digits")
    sources_module.acquire("digits", root / "raw", root / "downloads")
    yield root / "raw"
