"""File helpers shared by every stage: atomic writes and checksums.

A crash (or a full disk) while writing must never leave a truncated file where a good one stood,
so every product is written to a temporary file beside its target and renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cifar_study.errors import StudyError

_CHUNK = 1 << 20


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `target`; on success rename it over `target`, else delete it."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def check_replaceable(target: str | Path, marker: str) -> None:
    """Refuse an output folder whose replacement would delete what this step did not write (the
    working folder or one above it, a file, a non-empty folder without `marker` in it) or would
    fail after the work (a link, which is not a folder to replace)."""
    target = Path(target)
    resolved, here = target.resolve(), Path.cwd().resolve()
    if resolved == here or resolved in here.parents:
        raise StudyError(
            f"{target}: the output would replace the working folder or one above it; "
            "name a folder of its own"
        )
    if target.is_symlink():
        raise StudyError(
            f"{target}: is a link (to {resolved}); name the folder itself, which is replaced whole"
        )
    if resolved.exists() and not resolved.is_dir():
        raise StudyError(f"{target}: is a file; the output must be a folder")
    if resolved.is_dir() and any(resolved.iterdir()) and not (resolved / marker).is_file():
        raise StudyError(
            f"{target}: holds files but no {marker}, so it is not an earlier output of this step "
            "and replacing it would delete them; name a new or empty folder, or remove it first"
        )


@contextlib.contextmanager
def atomic_dir(target: str | Path, marker: str) -> Iterator[Path]:
    """Yield an empty temporary folder beside `target`; on success it replaces `target` whole.

    `target` is checked first (`check_replaceable`): only an earlier output, which holds
    `marker`, or an empty folder is ever replaced.
    """
    target = Path(target)
    check_replaceable(target, marker)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in chunks so large archives need little memory."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
