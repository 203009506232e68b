"""Bring raw data from any supported source into one folder, in one of two known layouts.

The raw folder holds either the official python batches (`cifar-10-batches-py/`) or an
image-folder tree (`train/<class>/*`, `test/<class>/*`), plus `manifest.json`: the source and
the sha256 of every file, so that `prepare` can tell whether the raw data changed since.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from cifar_study.data import digits
from cifar_study.data.archive import ARCHIVE_SUFFIXES, is_archive, safe_extract
from cifar_study.data.fetch import download
from cifar_study.data.raw import MANIFEST, OFFICIAL_DIR, check_official_files
from cifar_study.errors import DataError
from cifar_study.fileio import atomic_dir, file_digest, write_json

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"


def acquire(source: str, raw_dir: Path, download_dir: Path) -> dict:
    """Fill `raw_dir` from `source` ("cifar10", "digits" or a local path); return the manifest.

    `raw_dir` is replaced only once the new data is complete and checked; on any error the
    previous contents stay as they were.
    """
    with atomic_dir(raw_dir, MANIFEST) as staging:
        if source == "cifar10":
            archive = download_dir / CIFAR10_ARCHIVE
            if not (archive.is_file() and file_digest(archive, "md5") == CIFAR10_MD5):
                download(CIFAR10_URL, archive, CIFAR10_MD5)
            safe_extract(archive, staging)  # its md5 was just checked
        elif source == "digits":
            digits.write_image_folder(staging)
        else:
            _import_local(Path(source), staging)
        _hoist_layout(staging, source)
        layout = layout_of(staging)
        if layout == "cifar-python":
            check_official_files(staging / OFFICIAL_DIR)
        manifest = {"source": source, "layout": layout, "files": _digests(staging)}
        write_json(staging / MANIFEST, manifest)
    return manifest


def layout_of(folder: Path) -> str:
    """Name the layout of a raw folder: "cifar-python" or "image-folder"."""
    if (folder / OFFICIAL_DIR / "batches.meta").is_file():
        return "cifar-python"
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        return "image-folder"
    raise DataError(
        f"{folder}: no known dataset layout; expected '{OFFICIAL_DIR}/' with the official python "
        "batches, or 'train/<class>/*' and 'test/<class>/*' image folders"
    )


def _import_local(path: Path, staging: Path) -> None:
    if is_archive(path):
        _import_archive(path, staging)
    elif path.is_dir():
        shutil.copytree(path, staging, dirs_exist_ok=True)
    elif path.exists():
        raise DataError(
            f"data.source {path} is neither a folder nor a tar archive "
            f"({', '.join(ARCHIVE_SUFFIXES)})"
        )
    else:
        raise DataError(
            f"data.source {path} does not exist; use 'cifar10', 'digits', or a path to a local "
            "archive or image-folder tree"
        )


def _import_archive(archive: Path, staging: Path) -> None:
    """Extract `archive`; one named like the official release must be byte-exact first."""
    if archive.name == CIFAR10_ARCHIVE:
        digest = file_digest(archive, "md5")
        if digest != CIFAR10_MD5:
            raise DataError(
                f"{archive}: md5 {digest} does not match the official CIFAR-10 archive "
                f"({CIFAR10_MD5}); the file is corrupt, truncated or not the official one"
            )
    safe_extract(archive, staging)


def _hoist_layout(staging: Path, source: str) -> None:
    """Move a dataset found inside a single wrapper folder (`name/train`, ...) up to the top.

    A folder of bare official batches (the user pointed at `cifar-10-batches-py` itself) is
    moved down into its canonical folder name instead.
    """
    entries = [p for p in staging.iterdir() if p.name != MANIFEST]
    if (staging / "batches.meta").is_file():
        (staging / OFFICIAL_DIR).mkdir()
        for entry in entries:
            entry.rename(staging / OFFICIAL_DIR / entry.name)
    try:
        layout_of(staging)
        return
    except DataError:
        # A lone train/ or test/ is half a data set, not a wrapper around one.
        is_wrapper = (
            len(entries) == 1 and entries[0].is_dir() and entries[0].name not in ("train", "test")
        )
        if not is_wrapper:
            raise DataError(
                f"{source}: no known dataset layout; expected '{OFFICIAL_DIR}/' with the official "
                "python batches, or 'train/<class>/*' and 'test/<class>/*' image folders "
                f"(found: {', '.join(sorted(p.name for p in entries)) or 'nothing'})"
            ) from None
    wrapper = entries[0]
    for child in wrapper.iterdir():
        child.rename(staging / child.name)
    wrapper.rmdir()
    _hoist_layout(staging, source)


def _digests(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): file_digest(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path != folder / MANIFEST
    }
