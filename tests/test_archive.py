"""safe_extract: regular files and folders only, checked before the first byte is written."""

from __future__ import annotations

import io
import random
import re
import tarfile
from pathlib import Path

import pytest
from training_helpers import file_member, make_tar, special_member, tree_listing

from cifar_study.data.archive import is_archive, safe_extract
from cifar_study.errors import DataError

GOOD_FILES = {"a/b.txt": b"hello\n", "a/c/d.bin": bytes(range(256)), "top.txt": b"top"}


def write_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "w:gz" if path.name.endswith(".gz") else "w"
    with tarfile.open(path, mode, format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def good_members() -> list[tuple[tarfile.TarInfo, bytes | None]]:
    folder = tarfile.TarInfo("a")
    folder.type = tarfile.DIRTYPE
    folder.mode = 0o755
    return [(folder, None), *(file_member(n, d) for n, d in GOOD_FILES.items())]


@pytest.mark.parametrize("name", ["ok.tar", "ok.tar.gz"])
def test_extracts_regular_files_and_folders(tmp_path: Path, name: str) -> None:
    archive = write_tar(tmp_path / "archives" / name, good_members())
    dest = tmp_path / "out" / "dest"
    safe_extract(archive, dest)
    found = {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert found == GOOD_FILES
    assert (dest / "a" / "c").is_dir()


def test_extracts_a_tree_made_by_tarfile_add(tmp_path: Path, image_tree: Path) -> None:
    archive = make_tar(image_tree, tmp_path / "archives" / "images.tgz", wrapper="wrap")
    safe_extract(archive, tmp_path / "dest")
    assert tree_listing(tmp_path / "dest" / "wrap") == tree_listing(image_tree)


@pytest.mark.parametrize(
    ("member", "why"),
    [
        pytest.param(file_member("../evil.txt", b"x"), "outside the target folder", id="dotdot"),
        pytest.param(
            file_member("a/../../evil.txt", b"x"), "outside the target folder", id="nested-dotdot"
        ),
        pytest.param(
            file_member("ABSOLUTE/abs-evil.txt", b"x"), "outside the target folder", id="absolute"
        ),
        pytest.param(
            special_member("evil-link", tarfile.SYMTYPE, "/etc/passwd"), "a link", id="symlink-out"
        ),
        pytest.param(
            special_member("inner-link", tarfile.SYMTYPE, "top.txt"), "a link", id="symlink-in"
        ),
        pytest.param(special_member("hard", tarfile.LNKTYPE, "top.txt"), "a link", id="hardlink"),
        pytest.param(special_member("dev", tarfile.CHRTYPE), "a special file", id="chardev"),
        pytest.param(special_member("blk", tarfile.BLKTYPE), "a special file", id="blockdev"),
        pytest.param(special_member("fifo", tarfile.FIFOTYPE), "a special file", id="fifo"),
    ],
)
@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_unsafe_member_is_refused_and_nothing_is_written(
    tmp_path: Path, member: tuple[tarfile.TarInfo, bytes | None], why: str, suffix: str
) -> None:
    info, data = member
    if info.name.startswith("ABSOLUTE/"):
        info.name = str(tmp_path / "abs-evil.txt")  # an absolute path that would be writable
    # Good members first: a checker that extracted as it went would have written them.
    archive = write_tar(tmp_path / "archives" / f"bad{suffix}", [*good_members(), (info, data)])
    parent = tmp_path / "out"
    parent.mkdir()
    dest = parent / "dest"
    with pytest.raises(DataError, match=re.escape(f"refusing member '{info.name}'")) as exc_info:
        safe_extract(archive, dest)
    message = str(exc_info.value)
    assert message.startswith(f"{archive}: ")
    assert why in message
    assert not dest.exists()
    assert list(parent.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["archives", "out"]
    assert [p.name for p in (tmp_path / "archives").iterdir()] == [archive.name]


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("garbage.tar.gz", bytes(range(256)) * 8),
        ("garbage.tar", b"this is not a tar archive" * 40),
        ("empty.tar", b""),
    ],
)
def test_corrupt_archive_is_a_data_error_naming_it(
    tmp_path: Path, name: str, content: bytes
) -> None:
    archive = tmp_path / name
    archive.write_bytes(content)
    dest = tmp_path / "out" / "dest"
    with pytest.raises(DataError, match=re.escape(f"{archive}: not a readable tar archive")):
        safe_extract(archive, dest)
    assert not dest.exists()


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_tar_gz_is_a_data_error_naming_it(tmp_path: Path, keep: float) -> None:
    big = bytes(range(256)) * 2000  # incompressible enough that truncation cuts real data
    noise = random.Random(0).randbytes(200_000)
    whole = write_tar(
        tmp_path / "whole.tar.gz",
        [file_member("a.bin", noise), file_member("b.bin", big), file_member("c.bin", noise)],
    )
    data = whole.read_bytes()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(data[: int(len(data) * keep)])
    dest = tmp_path / "out" / "dest"
    with pytest.raises(DataError, match=re.escape(f"{truncated}: not a readable tar archive")):
        safe_extract(truncated, dest)
    assert not dest.exists()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("x.tar", True),
        ("x.tar.gz", True),
        ("X.TGZ", True),
        ("cifar-10-python.tar.gz", True),
        ("x.zip", False),
        ("x.tar.bz2", False),
        ("x.gz", False),
    ],
)
def test_is_archive_by_name(tmp_path: Path, name: str, expected: bool) -> None:
    path = tmp_path / name
    path.write_bytes(b"")
    assert is_archive(path) is expected


def test_is_archive_is_false_for_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "looks-like.tar"
    folder.mkdir()
    assert is_archive(folder) is False
    assert is_archive(tmp_path / "missing.tar") is False


def test_damage_in_the_gzip_trailer_is_caught(tmp_path: Path) -> None:
    # tarfile stops at the end-of-archive marker and would never read the CRC behind it.
    whole = write_tar(tmp_path / "whole.tar.gz", good_members())
    data = bytearray(whole.read_bytes())
    data[-8] ^= 0xFF  # the first byte of the CRC-32 of the uncompressed data
    damaged = tmp_path / "damaged.tar.gz"
    damaged.write_bytes(bytes(data))
    dest = tmp_path / "out" / "dest"
    with pytest.raises(DataError, match=re.escape(f"{damaged}: not a readable tar archive")):
        safe_extract(damaged, dest)
    assert not dest.exists()
