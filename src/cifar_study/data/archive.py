"""Extract tar archives without trusting them.

torchvision's downloader extracts with a bare `extractall`, which lets a crafted archive write
anywhere through `../` members, absolute paths or links. Here every member is checked before
anything is written, and extraction itself uses tarfile's "data" filter as a second guard.
"""

from __future__ import annotations

import gzip
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from cifar_study.errors import DataError

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
# What reading a damaged archive raises; write errors (a full disk) are deliberately not here.
_CORRUPT = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


def is_archive(path: Path) -> bool:
    """True when `path` is a file whose name says it is a (compressed) tar archive."""
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract regular files and folders of `archive` into `dest`; refuse anything else.

    Raises DataError naming the archive and the offending member for a corrupt or truncated
    archive, a member that would land outside `dest`, or a link, device or FIFO member. The
    whole archive is checked before the first byte is written.
    """
    try:
        if archive.name.lower().endswith((".gz", ".tgz")):
            _check_gzip_stream(archive)
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(archive, member)
            dest.mkdir(parents=True, exist_ok=True)
            tar.extractall(dest, members=members, filter="data")
    except _CORRUPT as exc:
        raise DataError(
            f"{archive}: not a readable tar archive (corrupt or truncated?): {exc}"
        ) from None


def _check_gzip_stream(archive: Path) -> None:
    """Read the compressed stream to its end, so its CRC and length trailer get checked.

    tarfile stops at the end-of-archive marker and never reaches the trailer, so damage there
    would otherwise pass unnoticed.
    """
    with gzip.open(archive, "rb") as stream:
        while stream.read(1 << 20):
            pass


def _check_member(archive: Path, member: tarfile.TarInfo) -> None:
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        raise DataError(
            f"{archive}: refusing member '{member.name}': "
            "it would be written outside the target folder"
        )
    if not (member.isfile() or member.isdir()):
        kind = "link" if (member.issym() or member.islnk()) else "special file"
        raise DataError(
            f"{archive}: refusing member '{member.name}': it is a {kind}; "
            "only regular files and folders are allowed"
        )
