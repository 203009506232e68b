"""Helpers shared by the test modules: tiny data sets, archives, recipes, faked downloads and
subprocess runners. Fast on two CPU cores, with no network and no real CIFAR-10.

Test modules import from here, never from one another; conftest.py builds its fixtures on it.

- official-format python batches (`cifar-10-batches-py/`), pickled the way the real files are
  (Python 2, protocol 2, `numpy.core.multiarray._reconstruct`);
- an image-folder tree (`train/<class>/*`, `test/<class>/*`) of 32×32 RGB PNGs and JPEGs, and
  tar archives of either, with or without a wrapper folder, or built member by member;
- small in-memory data and recipes for the training tests, and the stage arguments they use;
- a scripted stand-in for the downloader's HTTP opener;
- `dvc` and other commands run in a workspace as a user would.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import pickle
import socket
import struct
import subprocess
import sys
import tarfile
import time
import urllib.error
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from cifar_study.config import Params, parse_params
from cifar_study.data import fetch
from cifar_study.data.prepared import PreparedData, Split
from cifar_study.data.raw import OFFICIAL_DIR, OFFICIAL_TEST, OFFICIAL_TRAIN, RawDataset
from cifar_study.tooling.workspace import pipeline_env

# --------------------------------------------------------------------------- files


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

# Deliberately not in sorted order: the official reader must keep `label_names` order.
OFFICIAL_CLASSES = ("truck", "airplane", "frog")


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


# --------------------------------------------------------------------------- image folders

# Image folders: class names are the sorted folder names. Each class has its own colour, so a
# label can be checked against the pixels even after JPEG compression.
FOLDER_CLASSES = ("bird", "cat", "dog")
CLASS_COLOURS = {"bird": (220, 30, 30), "cat": (30, 220, 30), "dog": (30, 30, 220)}
TRAIN_PER_CLASS = 3
TEST_PER_CLASS = 2


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


# --------------------------------------------------------------------------- archives


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


def file_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    """A regular-file tar member called `name` holding `data`."""
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    return info, data


def special_member(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    """A tar member of type `kind` (a link, device, fifo...) with no data."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    return info, None


# --------------------------------------------------------------------------- network


def closed_port() -> int:
    """A local TCP port that nothing listens on (bound, read, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


FETCH_URL = "https://example.invalid/files/archive.tar.gz"


class FakeResponse:
    """What urllib's opener returns: a context manager with `.headers` and `.read(n)`."""

    def __init__(self, body: bytes, fail_after: int | None = None, error: Exception | None = None):
        self._body = io.BytesIO(body)
        self.headers = {"Content-Length": str(len(body))}
        self._fail_after = fail_after
        self._error = error

    def read(self, n: int = -1) -> bytes:
        if self._fail_after is not None and self._body.tell() >= self._fail_after:
            raise self._error  # type: ignore[misc]
        return self._body.read(n)

    def __enter__(self) -> FakeResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self._body.close()


class FakeOpener:
    """Answers each `.open()` with the next scripted outcome: a response or an exception."""

    def __init__(self, *outcomes: FakeResponse | Exception):
        self.outcomes = list(outcomes)
        self.calls: list[tuple[str, float]] = []

    def open(self, url: str, timeout: float) -> FakeResponse:
        self.calls.append((url, timeout))
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def http_error(code: int, reason: str) -> urllib.error.HTTPError:
    """The error urllib raises for an HTTP error status from `FETCH_URL`."""
    return urllib.error.HTTPError(FETCH_URL, code, reason, hdrs=None, fp=None)  # type: ignore[arg-type]


def install(monkeypatch: pytest.MonkeyPatch, *outcomes: FakeResponse | Exception) -> FakeOpener:
    """Make the downloader's opener a `FakeOpener` answering with `outcomes`, in order."""
    opener = FakeOpener(*outcomes)
    monkeypatch.setattr(fetch, "_OPENER", opener)
    return opener


# --------------------------------------------------------------------------- training data

PARAMS_FILE = Path(__file__).resolve().parents[1] / "params.yaml"
CLASSES = ("red", "green", "blue", "grey")
COLOURS = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [120, 120, 120]])

# What every model logs each epoch, under the same names (README and dvc.yaml rely on them).
EPOCH_METRICS = (
    "train/loss",
    "train/acc",
    "val/loss",
    "val/acc",
    "lr",
    "epoch_time_s",
    "images_per_s",
)

TINY_RECIPE: dict[str, Any] = {
    "epochs": 2,
    "batch_size": 16,
    "lr": 0.05,
    "warmup_epochs": 0,
    "cutout": 4,
    "eval_batch_size": 64,
    "channels_last": False,
    "resnet": {"width": 4, "blocks": [1, 1], "dropout": 0.1},
    "densenet": {"growth_rate": 4, "blocks": [1, 1]},
}


# The whole DVC pipeline on digits with tiny networks (workspace overrides): minutes of DVC,
# seconds of training. The end-to-end DVC tests start from it.
TINY_PIPELINE: dict[str, Any] = {
    "data.source": "digits",
    "epochs": 2,
    "batch_size": 64,
    "lr": 0.05,
    "warmup_epochs": 0,
    "flip": False,
    "cutout": 0,
    "resnet.width": 8,
    "resnet.blocks": [1, 1],
    "densenet.growth_rate": 4,
    "densenet.blocks": [2, 2],
}


def tiny_params(**overrides: Any) -> Params:
    """The committed params.yaml with a tiny model and run, plus `overrides` (top-level keys)."""
    raw = yaml.safe_load(PARAMS_FILE.read_text())
    raw.update(TINY_RECIPE)
    raw.update(overrides)
    return parse_params(raw)


def coloured_images(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy images whose class is their colour: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(CLASSES)), n_per_class)
    noise = rng.integers(-30, 30, size=(len(labels), 32, 32, 3))
    images = np.clip(COLOURS[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)


def tiny_raw(n_train: int = 24, n_test: int = 6) -> RawDataset:
    train_images, train_labels = coloured_images(n_train, seed=1)
    test_images, test_labels = coloured_images(n_test, seed=2)
    return RawDataset(CLASSES, train_images, train_labels, test_images, test_labels)


def tiny_prepared(n_train: int = 24, n_val: int = 4) -> PreparedData:
    """In-memory prepared data: `n_train` and `n_val` images per class."""
    train = Split(*coloured_images(n_train, seed=1))
    val = Split(*coloured_images(n_val, seed=3))
    test = Split(*coloured_images(n_val, seed=2))
    return PreparedData(
        CLASSES, (0.4, 0.4, 0.4), (0.3, 0.3, 0.3), {"train": train, "val": val, "test": test}
    )


# --------------------------------------------------------------------------- the train stage


def write_params(folder: Path, overrides: dict) -> None:
    """`folder/params.yaml`: the committed params with `TINY_RECIPE`, then `overrides`."""
    raw = yaml.safe_load(PARAMS_FILE.read_text())
    raw.update(TINY_RECIPE)
    raw.update(overrides)
    (folder / "params.yaml").write_text(yaml.safe_dump(raw))


def stage_args(model: str = "resnet", run: str = "run") -> list[str]:
    """The `train` stage's arguments for `model`, with its outputs under the folder `run`."""
    return [
        "--model",
        model,
        "--params",
        "params.yaml",
        "--data",
        "data/prepared",
        "--out",
        f"{run}/models/{model}",
        "--checkpoint",
        f"{run}/checkpoints/{model}/last.pt",
        "--live",
        f"{run}/metrics/{model}",
    ]


def logged_steps(live_dir: Path, metric: str = "train/loss") -> list[int]:
    """The steps DVCLive logged `metric` at, in its plots folder under `live_dir`."""
    with open(live_dir / "plots" / "metrics" / f"{metric}.tsv") as f:
        return [int(row["step"]) for row in csv.DictReader(f, delimiter="\t")]


# --------------------------------------------------------------------------- commands


def writing_bytecode(env: dict[str, str]) -> dict[str, str]:
    """`env` with Python's bytecode writing on, as on users' machines: DVC hashes the package
    folders that stages depend on, so tests of DVC behaviour must see the __pycache__ it makes."""
    return {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run_in(cwd: Path, *command: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run `command` in `cwd` as a user would: this environment, bytecode on, no DVC analytics,
    the checkout's src/ importable; a failure shows its output."""
    env = {
        **writing_bytecode(pipeline_env()),
        "DVC_NO_ANALYTICS": "1",
        "PYTHONPATH": "src",
    }
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}"
    return done


def dvc_in(cwd: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """`dvc ARGS` in `cwd`, through `run_in`."""
    return run_in(cwd, sys.executable, "-m", "dvc", *args, timeout=timeout)


def dvc(cwd: Path, *args: str) -> str:
    """`dvc ARGS` in `cwd`, through `run_in`: its output, stdout then stderr."""
    done = dvc_in(cwd, *args)
    return done.stdout + done.stderr


def run_queue(workspace: Path, timeout: float = 900) -> str:
    """Start the workspace's DVC experiment queue, one job at a time, and wait until nothing is
    queued or running; returns the last `dvc queue status` (a failure shows as "Failed")."""
    dvc(workspace, "queue", "start", "-j", "1")
    deadline = time.monotonic() + timeout
    while True:
        status = dvc(workspace, "queue", "status")
        if ("Queued" not in status and "Running" not in status) or time.monotonic() > deadline:
            return status
        time.sleep(5)


def import_every_stage(workspace: Path, env: dict[str, str]) -> None:
    """Import each stage module from `workspace`'s src/ with bytecode writing on."""
    modules = ["download", "prepare", "train", "evaluate", "compare"]
    code = "; ".join(f"import cifar_study.stages.{m}" for m in modules)
    subprocess.run(
        [sys.executable, "-c", code],
        cwd=workspace,
        env={**writing_bytecode(env), "PYTHONPATH": "src"},
        check=True,
    )
    assert list((workspace / "src" / "cifar_study" / "training").glob("__pycache__/*.pyc"))
