"""The real dvc.yaml, run by DVC in a throwaway workspace on the offline digits data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image
from training_helpers import import_every_stage, make_tar

from cifar_study.data.prepared import load_prepared
from cifar_study.tooling.workspace import commit_all, create_workspace

VENV_BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(
    shutil.which("git") is None or not (VENV_BIN / "dvc").exists(),
    reason="needs git and this environment's dvc",
)


@pytest.fixture
def dvc_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This venv first on PATH (for `dvc` and for the stages' `python`); DVC stays offline.

    DVC_NO_ANALYTICS stops the usage report; DVC_TEST stops the background update check.
    """
    monkeypatch.setenv("PATH", f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.setenv("DVC_TEST", "1")
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    return dict(os.environ)  # create_workspace runs `dvc init` with these too


def dvc(workspace: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        ["dvc", *args], cwd=workspace, env=env, capture_output=True, text=True, timeout=120
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_repro_download_and_prepare(tmp_path: Path, dvc_env: dict[str, str]) -> None:
    workspace = create_workspace(tmp_path / "ws", {"data.source": "digits"})
    assert yaml.safe_load((workspace / "params.yaml").read_text())["data"]["source"] == "digits"

    first = dvc(workspace, dvc_env, "repro", "download", "prepare")
    ran = [line.split("'")[1] for line in first.splitlines() if line.startswith("Running stage '")]
    assert ran == ["download", "prepare"]  # in order, and only the stages asked for

    lock = yaml.safe_load((workspace / "dvc.lock").read_text())
    stages = lock["stages"]
    assert {"download", "prepare"} <= set(stages)
    assert stages["download"]["params"]["params.yaml"]["data.source"] == "digits"
    prepare_params = stages["prepare"]["params"]["params.yaml"]
    data_params = yaml.safe_load((workspace / "params.yaml").read_text())["data"]
    assert prepare_params["data.val_size"] == data_params["val_size"]
    assert prepare_params["data.split_seed"] == data_params["split_seed"]
    assert [out["path"] for out in stages["download"]["outs"]] == ["data/raw"]
    assert sorted(out["path"] for out in stages["prepare"]["outs"]) == [
        "data/prepared",
        "plots/samples.png",
    ]
    for stage in ("download", "prepare"):
        for out in stages[stage]["outs"]:
            assert out.get("md5"), f"{stage}: {out['path']} has no recorded hash"
    assert "data/raw" in [dep["path"] for dep in stages["prepare"]["deps"]]

    assert (workspace / "data/raw/manifest.json").is_file()
    data = load_prepared(workspace / "data/prepared")
    assert data.classes == tuple(str(d) for d in range(10))
    assert len(data.splits["train"]) + len(data.splits["val"]) == 1437
    with Image.open(workspace / "plots/samples.png") as image:
        assert image.format == "PNG"

    second = dvc(workspace, dvc_env, "repro", "download", "prepare")
    assert "Running stage" not in second
    assert "didn't change" in second or "up to date" in second
    assert yaml.safe_load((workspace / "dvc.lock").read_text()) == lock

    import_every_stage(workspace, dvc_env)  # writes __pycache__ beside the stages' deps
    status = dvc(workspace, dvc_env, "status", "download", "prepare")
    assert "up to date" in status

    commit_all(workspace, "baseline")  # what `make demo` does after its run
    git = ["git", "-C", str(workspace)]
    assert (
        subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True).stdout == ""
    )
    tracked = subprocess.run([*git, "ls-files"], capture_output=True, text=True).stdout.split()
    assert "dvc.lock" in tracked
    # DVC's own .gitignore, and the one that keeps data/external/ (a dependency) in every clone.
    assert [p for p in tracked if p.startswith("data/")] == [
        "data/.gitignore",
        "data/external/.gitignore",
    ]


def test_replacing_a_local_archive_in_place_is_seen_by_dvc_status(
    tmp_path: Path, dvc_env: dict[str, str], image_tree: Path
) -> None:
    workspace = create_workspace(tmp_path / "ws", {"data.source": "data/external/tiny.tar.gz"})
    archive = workspace / "data" / "external" / "tiny.tar.gz"
    make_tar(image_tree, archive)
    dvc(workspace, dvc_env, "repro", "download")
    assert "up to date" in dvc(workspace, dvc_env, "status", "download")

    extra = image_tree / "train" / "cat" / "extra.png"
    Image.new("RGB", (32, 32), (10, 200, 10)).save(extra)
    make_tar(image_tree, archive)  # the same path, new content
    status = dvc(workspace, dvc_env, "status", "download")
    assert "changed deps" in status and "data/external" in status
