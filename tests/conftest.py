"""Tiny data sets built in tmp_path, so no test needs the network or the real CIFAR-10.

- official-format python batches (`cifar-10-batches-py/`), pickled the way the real files are
  (Python 2, protocol 2, `numpy.core.multiarray._reconstruct`), with the md5 tables patched to
  the tiny files' real md5s where a test needs the "official" checks to pass;
- an image-folder tree (`train/<class>/*`, `test/<class>/*`) of 32×32 RGB PNGs and JPEGs;
- helpers to tar either, with or without a wrapper folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import pickle
import socket
import struct
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cifar_study.data import raw as raw_module
from cifar_study.data import sources as sources_module
from cifar_study.data.raw import OFFICIAL_DIR, OFFICIAL_TEST, OFFICIAL_TRAIN

# Deliberately not in sorted order: the official reader must keep `label_names` order.
OFFICIAL_CLASSES = ("truck", "airplane", "frog")
# Image folders: class names are the sorted folder names. Each class has its own colour, so a
# label can be checked against the pixels even after JPEG compression.
FOLDER_CLASSES = ("bird", "cat", "dog")
CLASS_COLOURS = {"bird": (220, 30, 30), "cat": (30, 220, 30), "dog": (30, 30, 220)}
TRAIN_PER_CLASS = 3
TEST_PER_CLASS = 2


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_listing(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under `folder` (folders alone are not listed)."""
    return {
        p.relative_to(folder).as_posix(): sha256_of(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# --------------------------------------------------------------------------- official batches


class _Py2Pickler(pickle._Pickler):
    """Write pickles like Python 2's cPickle did for the official batches.

    Byte strings (and str) become Python 2 `str` opcodes, which `encoding="bytes"` reads back as
    bytes, and numpy's reconstructor is named `numpy.core.multiarray`, as in the real files.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(data)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str

    def save_global(self, obj, name=None):
        module = obj.__module__
        if module == "numpy._core.multiarray":
            module = "numpy.core.multiarray"
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)

    dispatch[type] = save_global
    dispatch[type(len)] = save_global


def py2_pickle_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


@dataclasses.dataclass
class OfficialBatches:
    """A tiny `cifar-10-batches-py/` folder and what was written into it."""

    root: Path  # the folder that contains `cifar-10-batches-py/`
    rows: dict[str, np.ndarray]  # batch name -> N×3072 uint8, as written
    labels: dict[str, list[int]]
    classes: tuple[str, ...]

    @property
    def folder(self) -> Path:
        return self.root / OFFICIAL_DIR

    def md5s(self) -> dict[str, str]:
        return {p.name: md5_of(p) for p in self.folder.iterdir()}

    def rewrite(self, name: str, obj: object) -> None:
        """Replace one file with a pickle of `obj` (then patch the md5 table again)."""
        (self.folder / name).write_bytes(py2_pickle_bytes(obj))


def build_official_batches(
    root: Path, per_class: int = 2, classes: tuple[str, ...] = OFFICIAL_CLASSES
) -> OfficialBatches:
    """Write `root/cifar-10-batches-py/` with data_batch_1..5, test_batch and batches.meta."""
    folder = root / OFFICIAL_DIR
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1234)
    rows, labels = {}, {}
    for name in OFFICIAL_TRAIN + OFFICIAL_TEST:
        batch_labels = [c for _ in range(per_class) for c in range(len(classes))]
        batch_rows = rng.integers(0, 256, size=(len(batch_labels), 3072), dtype=np.uint8)
        rows[name], labels[name] = batch_rows, batch_labels
        batch = {
            b"batch_label": f"tiny {name}".encode(),
            b"labels": batch_labels,
            b"data": batch_rows,
            b"filenames": [f"{name}_{i}.png".encode() for i in range(len(batch_labels))],
        }
        (folder / name).write_bytes(py2_pickle_bytes(batch))
    meta = {
        b"num_cases_per_batch": len(classes) * per_class,
        b"label_names": [c.encode() for c in classes],
        b"num_vis": 3072,
    }
    (folder / "batches.meta").write_bytes(py2_pickle_bytes(meta))
    return OfficialBatches(root, rows, labels, classes)


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


def class_image(name: str, seed: int) -> np.ndarray:
    """A 32×32 RGB image in the class colour, with a little noise."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(-10, 11, size=(32, 32, 3))
    return np.clip(np.array(CLASS_COLOURS[name]) + noise, 0, 255).astype(np.uint8)


def build_image_tree(
    root: Path, train_per_class: int = TRAIN_PER_CLASS, test_per_class: int = TEST_PER_CLASS
) -> Path:
    """Write `root/train/<class>/*` and `root/test/<class>/*`, alternating PNG and JPEG."""
    seed = 0
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        # Created in reverse order: the reader must sort, not rely on directory order.
        for name in reversed(FOLDER_CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                suffix = ".png" if i % 2 == 0 else ".jpg"
                Image.fromarray(class_image(name, seed)).save(folder / f"img{i}{suffix}")
                seed += 1
    return root


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    """A 3-class image-folder tree (PNG + JPEG) under tmp_path/images/."""
    return build_image_tree(tmp_path / "images")


def make_tar(src: Path, dest: Path, wrapper: str | None = None) -> Path:
    """Tar the contents of `src` into `dest` (.tar, or gzip for .tar.gz/.tgz).

    With `wrapper`, every member sits under that single folder, as many archives are built.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    mode = "w:gz" if dest.name.endswith((".tar.gz", ".tgz")) else "w"
    with tarfile.open(dest, mode) as tar:
        for child in sorted(src.iterdir()):
            arcname = f"{wrapper}/{child.name}" if wrapper else child.name
            tar.add(child, arcname=arcname)
    return dest


# --------------------------------------------------------------------------- network


def closed_port() -> int:
    """A local TCP port that nothing listens on (bound, read, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
