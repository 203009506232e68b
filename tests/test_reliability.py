"""Injected faults, seen from the stage commands that users and DVC run.

One or more tests per row of docs/reliability.md's table: damaged or unsafe source data,
an unreachable server, bad params, SIGTERM under `dvc repro`, a full disk, a NaN loss, pickle
payloads, unreadable images, same-seed reruns. The unit-level checks of the same faults live in
test_archive, test_fetch, test_sources, test_prepared, test_engine, test_train_stage and
test_evaluation; this file reuses the helpers they share (training_helpers) and does not
repeat their checks.
"""

from __future__ import annotations

import ast
import csv
import errno
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import matplotlib.figure
import numpy as np
import pytest
import torch
from PIL import Image
from training_helpers import (
    EPOCH_METRICS,
    TINY_PIPELINE,
    OfficialBatches,
    dvc,
    file_member,
    http_error,
    install,
    logged_steps,
    make_tar,
    md5_of,
    special_member,
    stage_args,
    tiny_raw,
    write_params,
)

from cifar_study import inference, predict
from cifar_study.config import Params
from cifar_study.data import fetch, sources
from cifar_study.data.prepared import prepare as prepare_arrays
from cifar_study.data.raw import OFFICIAL_DIR
from cifar_study.fileio import atomic_path
from cifar_study.inference import load_trained
from cifar_study.rules import allowed_keys
from cifar_study.stages import download, prepare, train
from cifar_study.tooling.workspace import commit_all, create_workspace, pipeline_env
from cifar_study.training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
NO_SPACE = "No space left on device"


# --------------------------------------------------------------------------- helpers


def hidden_entries(folder: Path) -> list[str]:
    """Names starting with '.' in `folder`: what an interrupted atomic write could leave."""
    return (
        sorted(p.name for p in folder.iterdir() if p.name.startswith("."))
        if folder.exists()
        else []
    )


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden ones included) with its bytes."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def one_error_line(err: str) -> str:
    """The stage's stderr must be exactly one `error: ...` line, no traceback."""
    assert err.startswith("error: "), err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def exit_status(main: Callable[[list[str] | None], int], args: list[str]) -> int | OSError:
    """A stage's exit code, or the OSError it let escape (a traceback and exit 1 from a shell)."""
    try:
        return main(args)
    except OSError as exc:
        return exc


def fill_disk(path: object) -> None:
    """What writing on a full disk does: part of the file lands, then ENOSPC."""
    Path(str(path)).write_bytes(b"\x00" * 100)
    raise OSError(errno.ENOSPC, NO_SPACE)


def source_params(folder: Path, source: Path | str, val_size: float = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(f"data:\n  source: '{source}'\n  val_size: {val_size}\n")
    return path


def run_download(root: Path, source: Path | str, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """`download --out root/data/raw` from `source`, in-process (so md5 patches apply)."""
    params = source_params(root / "cfg", source)
    args = ["--params", str(params), "--out", str(root / "data" / "raw")]
    args += ["--download-dir", str(root / "data" / "downloads")]
    code = download.main(args)
    return code, capsys.readouterr().err


def read_tsv(path: Path) -> list[dict[str, str]]:
    """A DVCLive metric history, without its wall-clock timestamps."""
    with open(path) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for row in rows:
        row.pop("timestamp", None)
    return rows


def flip_middle_byte(data: bytes) -> bytes:
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0x01
    return bytes(damaged)


# --------------------------------------------------------------------------- damaged sources


@pytest.mark.parametrize("form", ["official-archive", "renamed-archive", "folder"])
def test_flipped_byte_in_a_cifar_batch_fails_the_download_stage_until_repaired(
    tmp_path: Path,
    official_batches: OfficialBatches,
    official_tarball: Path,
    form: str,
    capsys: pytest.CaptureFixture,
) -> None:
    batch = official_batches.folder / "data_batch_3"
    good_batch, good_tarball = batch.read_bytes(), official_tarball.read_bytes()
    bad_batch = flip_middle_byte(good_batch)

    def source(batch_bytes: bytes) -> Path:
        batch.write_bytes(batch_bytes)
        if form == "official-archive":  # named like the release: its md5 is checked first
            if batch_bytes == good_batch:
                official_tarball.write_bytes(good_tarball)
            else:
                make_tar(official_batches.root, official_tarball)
            return official_tarball
        if form == "renamed-archive":  # any other name: each batch's md5 is checked
            return make_tar(official_batches.root, tmp_path / "archives" / "my-cifar.tar.gz")
        return official_batches.root

    def expected(src: Path) -> str:
        if form == "official-archive":
            return f"{src}: md5 {md5_of(src)} does not match the official CIFAR-10 archive"
        return (
            f"{OFFICIAL_DIR}/data_batch_3: md5 {md5_of(batch)} does not match the official "
            f"CIFAR-10 file ({hashlib.md5(good_batch).hexdigest()})"
        )

    raw, data = tmp_path / "data" / "raw", tmp_path / "data"
    damaged = source(bad_batch)
    code, err = run_download(tmp_path, damaged, capsys)
    assert code == 1
    assert expected(damaged) in one_error_line(err)
    assert not raw.exists() and list(data.iterdir()) == []  # nothing half-written, no temp dir

    assert run_download(tmp_path, source(good_batch), capsys)[0] == 0  # repaired: it works
    before = snapshot(raw)

    damaged = source(bad_batch)  # damaged again: the good raw folder stays as it was
    code, err = run_download(tmp_path, damaged, capsys)
    assert code == 1 and expected(damaged) in one_error_line(err)
    assert snapshot(raw) == before
    assert hidden_entries(data) == []


@pytest.mark.parametrize("damage", ["truncated", "flipped-byte"])
def test_damaged_image_folder_archive_fails_the_download_stage_until_repaired(
    tmp_path: Path, image_tree: Path, damage: str, capsys: pytest.CaptureFixture
) -> None:
    archive = make_tar(image_tree, tmp_path / "archives" / "images.tar.gz")
    good = archive.read_bytes()
    raw = tmp_path / "data" / "raw"
    assert run_download(tmp_path, archive, capsys)[0] == 0
    before = snapshot(raw)

    archive.write_bytes(good[: len(good) // 2] if damage == "truncated" else flip_middle_byte(good))
    code, err = run_download(tmp_path, archive, capsys)
    assert code == 1
    assert f"{archive}: not a readable tar archive (corrupt or truncated?)" in one_error_line(err)
    assert snapshot(raw) == before  # the previous raw data is untouched
    assert hidden_entries(raw.parent) == []

    archive.write_bytes(good)
    assert run_download(tmp_path, archive, capsys)[0] == 0
    assert snapshot(raw) == before


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink"])
def test_unsafe_member_in_a_source_archive_is_refused_by_the_download_stage(
    tmp_path: Path, image_tree: Path, kind: str, capsys: pytest.CaptureFixture
) -> None:
    member, content = {
        "dotdot": file_member("../../evil.txt", b"x"),
        "absolute": file_member(str(tmp_path / "evil-absolute.txt"), b"x"),
        "symlink": special_member("train/cat/evil-link.png", tarfile.SYMTYPE, "/etc/passwd"),
        "hardlink": special_member("train/cat/evil-hard.png", tarfile.LNKTYPE, "../../evil"),
    }[kind]
    archive = make_tar(image_tree, tmp_path / "archives" / "images.tar")  # good members first
    with tarfile.open(archive, "a") as tar:
        if content is None:
            tar.addfile(member)
        else:
            member.size = len(content)
            tar.addfile(member, io.BytesIO(content))

    code, err = run_download(tmp_path, archive, capsys)
    assert code == 1
    assert f"{archive}: refusing member '{member.name}'" in one_error_line(err)
    assert list(tmp_path.rglob("*evil*")) == []  # nothing written inside or outside
    assert list((tmp_path / "data").iterdir()) == []


def test_unreachable_url_fails_the_download_stage_in_bounded_time(
    tmp_path: Path,
    unreachable_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.setattr(sources, "CIFAR10_URL", unreachable_url)
    waits: list[float] = []
    monkeypatch.setattr(fetch.time, "sleep", waits.append)  # the stage's own retry policy
    start = time.monotonic()
    code, err = run_download(tmp_path, "cifar10", capsys)
    assert time.monotonic() - start < 10
    assert code == 1
    notes, line = err.splitlines()[:-1], err.splitlines()[-1] + "\n"
    assert len(notes) == 2 and all("retrying in" in n for n in notes), err
    one_error_line(line)
    assert f"could not download {unreachable_url} after 3 attempts" in line
    assert "data.source" in line  # says how to use a local copy instead
    assert waits == [2.0, 4.0]  # bounded: three attempts, 6 s of back-off in all
    assert not (tmp_path / "data" / "raw").exists()
    assert [p for p in (tmp_path / "data").rglob("*") if p.is_file()] == []  # no partial file


@pytest.mark.parametrize(
    ("outcomes", "message"),
    [
        (["503"] * 3, "after 3 attempts: HTTP Error 503: Service Unavailable"),
        (["404"], ": HTTP 404 Not Found"),
    ],
)
def test_server_error_fails_the_download_stage_naming_the_url(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    outcomes: list[str],
    message: str,
) -> None:
    reasons = {"503": "Service Unavailable", "404": "Not Found"}
    opener = install(monkeypatch, *(http_error(int(c), reasons[c]) for c in outcomes))
    monkeypatch.setattr(fetch.time, "sleep", lambda s: None)
    code, err = run_download(tmp_path, "cifar10", capsys)
    assert code == 1
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"error: could not download {sources.CIFAR10_URL}") and message in line
    assert len(opener.calls) == len(outcomes)
    assert not (tmp_path / "data" / "raw").exists()
    assert [p for p in (tmp_path / "data").rglob("*") if p.is_file()] == []


# --------------------------------------------------------------------------- params


@pytest.mark.parametrize(
    ("override", "model", "expected"),
    [
        (
            {"sed": 1},
            "resnet",
            "unknown key 'sed'; allowed keys at the top level: " + ", ".join(allowed_keys(Params)),
        ),
        ({"lr": -1}, "resnet", "lr = -1 is not allowed; expected a number > 0"),
        ({"batch_size": "64"}, "resnet", "batch_size = '64' must be an integer"),
        (
            {"schedule": "linear"},
            "resnet",
            "schedule = 'linear' is not allowed; expected one of onecycle, cosine, step, constant",
        ),
        (
            {"densenet": {"growth_rate": 0}},
            "densenet",
            "densenet.growth_rate = 0 is not allowed; expected an integer > 0",
        ),
        ({}, "vgg", "unknown model 'vgg'; known models: densenet, resnet"),
    ],
)
def test_bad_params_stop_the_train_stage_without_any_data(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    override: dict,
    model: str,
    expected: str,
) -> None:
    # No data folder at all: a stage that read anything before validating would say so instead.
    write_params(tmp_path, override)
    monkeypatch.chdir(tmp_path)
    assert train.main(stage_args(model)) == 1
    assert expected in one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


# --------------------------------------------------------------------------- training projects


@pytest.fixture(scope="module")
def trained_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny prepared data and one finished resnet run under run/ (as test_train_stage lays out)."""
    root = tmp_path_factory.mktemp("trained")
    prepare_arrays(tiny_raw(n_train=64), root / "data" / "prepared", val_size=0.25, seed=0)
    write_params(root, {"precision": "fp32"})
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        assert train.main(stage_args()) == 0
    return root


@pytest.fixture
def project(trained_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the trained project, as the working directory."""
    root = tmp_path / "project"
    shutil.copytree(trained_project, root)
    monkeypatch.chdir(root)
    return root


# 192 training images / batch 16 = 12 steps per epoch.
STEPS_PER_EPOCH = 12


# --------------------------------------------------------------------------- non-finite loss


def test_nan_loss_stops_the_train_stage_and_keeps_epoch_one(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    real = torch.nn.CrossEntropyLoss
    calls = 0

    class Poisoned(real):  # the engine's training criterion; evaluation does not use it
        def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            nonlocal calls
            calls += 1
            loss = super().forward(logits, target)
            return loss * float("nan") if calls == STEPS_PER_EPOCH + 3 else loss

    monkeypatch.setattr(torch.nn, "CrossEntropyLoss", Poisoned)
    write_params(project, {"precision": "fp32", "epochs": 3})
    models_before = snapshot(project / "run" / "models")
    capsys.readouterr()

    assert train.main(stage_args()) == 1
    err = one_error_line(capsys.readouterr().err)
    assert "the loss became nan at epoch 2, step 3" in err
    assert "last good checkpoint (run/checkpoints/resnet/last.pt, after epoch 1) was kept" in err

    state = load_checkpoint(project / "run" / "checkpoints" / "resnet" / "last.pt")
    assert state["epoch"] == 1 and state["step_in_epoch"] == 0 and not state["complete"]
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    live = project / "run" / "metrics" / "resnet"
    for name in EPOCH_METRICS:
        assert logged_steps(live, name) == [1], name  # epoch 1 kept, nothing of epoch 2
    metrics = json.loads((live / "metrics.json").read_text())
    assert metrics["step"] == 1
    assert metrics["train"]["loss"] == pytest.approx(state["history"][0]["train/loss"])
    assert metrics["val"]["acc"] == pytest.approx(state["history"][0]["val/acc"])
    assert snapshot(project / "run" / "models") == models_before  # nothing exported


# --------------------------------------------------------------------------- full disk: train


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    checkpoints = project / "run" / "checkpoints" / "resnet"
    real_save = torch.save
    saves = 0

    def save(obj: object, f: object, *args: object, **kwargs: object) -> None:
        nonlocal saves
        if Path(str(f)).name.startswith(".last.pt."):
            saves += 1
            if saves == 2:  # epoch 2's checkpoint
                fill_disk(f)
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    write_params(project, {"precision": "fp32", "seed": 1})  # a new run: other weights
    models_before = snapshot(project / "run" / "models")
    capsys.readouterr()

    assert train.main(stage_args()) == 1
    err = one_error_line(capsys.readouterr().err)
    assert (
        f"could not write checkpoint run/checkpoints/resnet/last.pt: [Errno 28] {NO_SPACE}" in err
    )
    assert "the previous one is kept" in err
    assert load_checkpoint(checkpoints / "last.pt")["epoch"] == 1
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.pt"]
    assert snapshot(project / "run" / "models") == models_before


@pytest.fixture(scope="module")
def write_limited_run(trained_project: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The train stage in a process whose files may not grow past half a checkpoint.

    RLIMIT_FSIZE makes the kernel refuse the write (EFBIG) the way a full disk refuses it
    (ENOSPC): inside torch.save's C++ writer, not in Python, so nothing is simulated.
    """
    root = tmp_path_factory.mktemp("limited") / "project"
    shutil.copytree(trained_project, root)
    write_params(root, {"precision": "fp32", "seed": 1})  # a new run: starts afresh
    checkpoint = root / "run" / "checkpoints" / "resnet" / "last.pt"
    before = {"checkpoint": checkpoint.read_bytes(), "models": snapshot(root / "run" / "models")}
    limit = len(before["checkpoint"]) // 2

    # The limit is set in the stage's own process, before it imports anything.
    launcher = (
        "import resource, runpy, sys; "
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
        "sys.argv = ['train', *sys.argv[1:]]; "
        "runpy.run_module('cifar_study.stages.train', run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", launcher, *stage_args()],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return {"root": root, "done": done, "before": before}


def test_a_real_write_failure_in_a_checkpoint_keeps_the_previous_one(
    write_limited_run: dict,
) -> None:
    root, done, before = (
        write_limited_run["root"],
        write_limited_run["done"],
        write_limited_run["before"],
    )
    assert done.returncode != 0, done.stdout + done.stderr
    checkpoints = root / "run" / "checkpoints" / "resnet"
    assert (checkpoints / "last.pt").read_bytes() == before["checkpoint"]
    assert load_checkpoint(checkpoints / "last.pt")["complete"]  # the previous run's
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.pt"]  # no temp file
    assert snapshot(root / "run" / "models") == before["models"]


def test_a_real_write_failure_in_a_checkpoint_is_a_one_line_error(
    write_limited_run: dict,
) -> None:
    done = write_limited_run["done"]
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr
    assert "error: could not write checkpoint run/checkpoints/resnet/last.pt" in done.stderr


def inject_export_failure(monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    """Make writing `target` (model.pt or model.json) of the train stage's export fail."""
    if target == "model.pt":
        real_save = torch.save

        def save(obj: object, f: object, *args: object, **kwargs: object) -> None:
            name = Path(str(f)).name
            if name == "model.pt" or name.startswith(".model.pt."):
                fill_disk(f)
            real_save(obj, f, *args, **kwargs)

        monkeypatch.setattr(torch, "save", save)
    else:
        real_write_json = inference.write_json

        def write_json(path: Path, obj: object) -> None:
            if Path(path).name != "model.json":
                return real_write_json(path, obj)
            with atomic_path(path) as tmp:  # the real temp-and-rename, failing half-way
                fill_disk(tmp)

        monkeypatch.setattr(inference, "write_json", write_json)


@pytest.mark.parametrize(
    "target",
    [
        "model.pt",
        "model.json",
    ],
)
def test_disk_full_during_model_export_keeps_the_previous_model(
    project: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    out = project / "run" / "models" / "resnet"
    before = snapshot(out)
    write_params(project, {"precision": "fp32", "seed": 1})  # a new run: other weights
    inject_export_failure(monkeypatch, target)

    assert exit_status(train.main, stage_args()) != 0
    assert snapshot(out) == before  # both files as they were, and no temporary file
    _, card = load_trained(out)  # loads: tensors only, matching architecture
    assert card.training is not None
    assert card.training.epochs == 2 and card.training.params["seed"] == 0


@pytest.mark.parametrize("target", ["model.pt", "model.json"])
def test_disk_full_during_model_export_is_a_one_line_error(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, target: str
) -> None:
    write_params(project, {"precision": "fp32", "seed": 1})
    inject_export_failure(monkeypatch, target)
    capsys.readouterr()
    assert exit_status(train.main, stage_args()) == 1
    err = one_error_line(capsys.readouterr().err)
    assert target in err and NO_SPACE in err


# --------------------------------------------------------------------------- output folders


@pytest.mark.parametrize("out", [".", "..", "run/models"])
def test_train_refuses_an_output_folder_it_did_not_write_before_training(
    project: Path, capsys: pytest.CaptureFixture, out: str
) -> None:
    before = snapshot(project)
    args = stage_args()
    args[args.index("--out") + 1] = out
    capsys.readouterr()
    assert exit_status(train.main, args) == 1
    assert one_error_line(capsys.readouterr().err).startswith(f"error: {out}: ")
    assert snapshot(project) == before  # nothing deleted, and no checkpoint: nothing trained


# --------------------------------------------------------------------------- full disk: prepare


@pytest.fixture
def prepared_once(
    tmp_path: Path, image_tree: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> list[str]:
    """Raw image-folder data and one successful prepare (val_size 0); returns prepare's argv."""
    monkeypatch.chdir(tmp_path)
    assert (
        download.main(["--params", str(source_params(tmp_path, image_tree)), "--out", "data/raw"])
        == 0
    )
    args = ["--params", "params.yaml", "--raw", "data/raw", "--out", "data/prepared"]
    args += ["--samples", "plots/samples.png"]
    assert prepare.main(args) == 0
    source_params(tmp_path, image_tree, val_size=0.34)  # the next run changes data/prepared
    capsys.readouterr()
    return args


def inject_prepare_failure(monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    if target == "train_images.npy":
        real_save = np.save

        def save(file: object, arr: object, *args: object, **kwargs: object) -> None:
            if Path(str(file)).name == target:
                fill_disk(file)
            real_save(file, arr, *args, **kwargs)

        monkeypatch.setattr(np, "save", save)
    else:

        def savefig(self: object, fname: object, *args: object, **kwargs: object) -> None:
            fill_disk(fname)

        monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)


@pytest.mark.parametrize(
    "target",
    [
        "train_images.npy",
        "samples.png",
    ],
)
def test_disk_full_during_prepare_keeps_the_previous_outputs(
    tmp_path: Path, prepared_once: list[str], monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    before = {name: snapshot(tmp_path / name) for name in ("data/prepared", "plots")}
    inject_prepare_failure(monkeypatch, target)
    assert exit_status(prepare.main, prepared_once) != 0
    assert {name: snapshot(tmp_path / name) for name in before} == before
    assert hidden_entries(tmp_path / "data") == [] and hidden_entries(tmp_path / "plots") == []


@pytest.mark.parametrize("target", ["train_images.npy", "samples.png"])
def test_disk_full_during_prepare_is_a_one_line_error(
    prepared_once: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    target: str,
) -> None:
    inject_prepare_failure(monkeypatch, target)
    assert exit_status(prepare.main, prepared_once) == 1
    assert NO_SPACE in one_error_line(capsys.readouterr().err)


# --------------------------------------------------------------------------- pickle payloads


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


TORCH_LOADS = ("torch.load", "torch.serialization.load")
# Calls that unpickle arbitrary objects. `_ArrayUnpickler(...).load()` in data/raw.py is the
# allow-listed unpickler of the official batches, not one of these.
PICKLE_LOADS = ("pickle.load", "pickle.loads", "pickle.Unpickler", "torch.jit.load")


def _is_constant(node: ast.expr, value: bool) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def unsafe_loads(source: str, where: str) -> tuple[list[str], list[str]]:
    """(torch.load calls found, problems) in one file's source."""
    loads, bad = [], []
    for node in ast.walk(ast.parse(source)):
        at = f"{where}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.ImportFrom) and node.module in ("torch", "torch.serialization"):
            # `from torch import load` would hide the calls from the check below.
            bad += [
                f"{at}: imports {a.name} from {node.module}" for a in node.names if a.name == "load"
            ]
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        keywords = {k.arg: k.value for k in node.keywords}
        if name in TORCH_LOADS:
            loads.append(at)
            if not _is_constant(keywords.get("weights_only"), True):
                bad.append(f"{at}: {name} without weights_only=True")
        if name in PICKLE_LOADS:
            bad.append(f"{at}: {name}")
        if "allow_pickle" in keywords and not _is_constant(keywords["allow_pickle"], False):
            bad.append(f"{at}: {name} with allow_pickle={ast.unparse(keywords['allow_pickle'])}")
    return loads, bad


def test_the_load_scan_catches_what_it_looks_for() -> None:
    snippet = """
import pickle, torch, numpy as np
from torch import load
torch.load(p)
torch.load(p, weights_only=False)
torch.load(p, map_location="cpu", weights_only=True)
pickle.loads(b)
np.load(p, allow_pickle=True)
np.save(p, a, allow_pickle=False)
"""
    loads, bad = unsafe_loads(snippet, "x.py")
    assert len(loads) == 3
    assert bad == [
        "x.py:3: imports load from torch",
        "x.py:4: torch.load without weights_only=True",
        "x.py:5: torch.load without weights_only=True",
        "x.py:7: pickle.loads",
        "x.py:8: np.load with allow_pickle=True",
    ]


def test_every_torch_load_in_src_and_bench_passes_weights_only_true() -> None:
    files = sorted([*(ROOT / "src").rglob("*.py"), *(ROOT / "bench").rglob("*.py")])
    assert len(files) > 20
    loads, bad = [], []
    for path in files:
        found, problems = unsafe_loads(path.read_text(), str(path.relative_to(ROOT)))
        loads += found
        bad += problems
    assert loads, "no torch.load found at all: the scan is looking in the wrong place"
    assert bad == []


# --------------------------------------------------------------------------- predict


def test_predict_names_each_unreadable_file_and_classifies_the_rest(
    trained_project: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    good = tmp_path / "good.png"
    Image.fromarray(np.full((32, 32, 3), (40, 200, 40), np.uint8)).save(good)
    truncated = tmp_path / "truncated.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(
        truncated
    )
    truncated.write_bytes(truncated.read_bytes()[:600])  # a valid header, then cut off
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    missing = tmp_path / "missing.png"
    folder = tmp_path / "a-folder.png"
    folder.mkdir()
    bad = [truncated, empty, text, missing, folder]

    model_dir = trained_project / "run" / "models" / "resnet"
    code = predict.main(
        ["--model-dir", str(model_dir), "--json", str(good), *map(str, bad), str(good)]
    )
    captured = capsys.readouterr()
    assert code == 1
    lines = captured.err.splitlines()
    assert len(lines) == len(bad) and "Traceback" not in captured.err
    for line, path in zip(lines, bad, strict=True):
        assert line.startswith(f"error: {path}: not a readable image"), line
    results = json.loads(captured.out)
    assert [r["file"] for r in results] == [str(good), *map(str, bad), str(good)]
    assert results[0]["top"] == results[-1]["top"] and len(results[0]["top"]) == 3
    assert all("error" in r for r in results[1:-1])


# --------------------------------------------------------------------------- same seed twice


@pytest.mark.parametrize("model", ["resnet", "densenet"])
def test_same_seed_twice_with_the_default_precision_gives_identical_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str
) -> None:
    prepare_arrays(tiny_raw(n_train=64), tmp_path / "data" / "prepared", val_size=0.25, seed=0)
    write_params(tmp_path, {"device": "cpu"})  # precision: auto (bf16 where the CPU has it)
    monkeypatch.chdir(tmp_path)
    for run in ("one", "two"):
        assert train.main(stage_args(model, run)) == 0

    def results(run: str) -> tuple[dict, dict[str, list[dict]]]:
        live = tmp_path / run / "metrics" / model
        metrics = json.loads((live / "metrics.json").read_text())
        curves = {
            tsv.relative_to(live).as_posix(): read_tsv(tsv)
            for tsv in sorted((live / "plots" / "metrics").rglob("*.tsv"))
        }
        for timing in ("epoch_time_s", "images_per_s"):
            del metrics[timing], curves[f"plots/metrics/{timing}.tsv"]
        return metrics, curves

    assert results("one") == results("two")
    a = torch.load(tmp_path / "one" / "models" / model / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "two" / "models" / model / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- SIGTERM under DVC


@pytest.mark.slow
def test_sigterm_under_dvc_repro_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    overrides = {**TINY_PIPELINE, "epochs": 4, "device": "cpu"}
    workspace = create_workspace(tmp_path / "interrupted", overrides)
    dvc(workspace, "repro", "download", "prepare")
    commit_all(workspace, "data")
    lock = (workspace / "dvc.lock").read_bytes()
    checkpoint = workspace / "checkpoints" / "resnet" / "last.pt"

    interrupted = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "train@resnet"],
        cwd=workspace,
        env={**pipeline_env(), "DVC_NO_ANALYTICS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not checkpoint.exists():  # the first epoch is done
            assert interrupted.poll() is None, interrupted.communicate()[0]
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.01)
        os.killpg(interrupted.pid, signal.SIGTERM)  # dvc, the shell and the stage alike
        output = interrupted.communicate(timeout=120)[0]  # EOF once the stage has exited too
    finally:
        if interrupted.poll() is None:  # a failed wait: leave no training running behind
            os.killpg(interrupted.pid, signal.SIGKILL)
            interrupted.communicate()

    assert interrupted.returncode != 0, output
    assert "stopped by SIGTERM; checkpoint saved to checkpoints/resnet/last.pt" in output
    assert (workspace / "dvc.lock").read_bytes() == lock
    assert not (workspace / "models" / "resnet").exists()  # nothing exported from a partial run
    state = load_checkpoint(checkpoint)  # saved within an epoch, after the step in progress
    assert 1 <= state["epoch"] < 4 and state["step_in_epoch"] >= 1 and not state["complete"]

    output = dvc(workspace, "repro", "train@resnet")
    assert "resuming from checkpoints/resnet/last.pt" in output
    live = workspace / "metrics" / "train" / "resnet"
    for name in EPOCH_METRICS:
        assert logged_steps(live, name) == [1, 2, 3, 4], name  # no gap, no duplicate
    assert "up to date" in dvc(workspace, "status", "train@resnet")

    straight = create_workspace(tmp_path / "straight", overrides)
    dvc(straight, "repro", "train@resnet")
    a = torch.load(straight / "models" / "resnet" / "model.pt", weights_only=True)
    b = torch.load(workspace / "models" / "resnet" / "model.pt", weights_only=True)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    for name in ("train/loss", "val/loss", "val/acc", "lr"):
        tsv = Path("plots") / "metrics" / f"{name}.tsv"
        expected = read_tsv(straight / "metrics" / "train" / "resnet" / tsv)
        assert read_tsv(live / tsv) == expected, name
