"""A throwaway copy of the project as its own git + DVC repository, with params overridden.

`make demo` and the end-to-end tests run the real `dvc.yaml` there, so neither touches the
committed params.yaml, dvc.lock or the user's outputs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from cifar_study.config import overridden
from cifar_study.errors import ConfigError, StudyError

PROJECT_ROOT = Path(__file__).resolve().parents[3]  # src/cifar_study/tooling/workspace.py
# What a pipeline run needs: the pipeline, its params, and the code its stages depend on.
PROJECT_FILES = (
    "dvc.yaml",
    "params.yaml",
    "recipes",
    ".dvcignore",
    ".gitignore",
    "src",
    "data/external/.gitignore",  # the folder the download stage depends on, not what is in it
    "dvc_plots_template",  # `dvc plots` pages that draw offline (see docs/offline-plots.md)
)
# Written into every workspace: only folders carrying it are ever deleted to be re-created.
MARKER = ".cifar-study-workspace"
# Written (holding the stage's name) where `reproduce --stage` re-ran one stage and those it
# depends on: such a run lacks the other stages' metrics by design, not by failing.
PARTIAL_RUN = ".partial-run"


def create_workspace(dest: Path, overrides: Mapping[str, Any], root: Path = PROJECT_ROOT) -> Path:
    """Copy the project into `dest` (replaced), apply dotted-key overrides, git-commit, init DVC.

    The overrides are checked before `dest` is touched."""
    raw = yaml.safe_load((root / "params.yaml").read_text())
    params = overridden(raw, overrides, source="workspace overrides")
    clear_workspace(dest)
    dest.mkdir(parents=True)
    (dest / MARKER).touch()
    for name in PROJECT_FILES:
        source = root / name
        if source.is_dir():
            shutil.copytree(
                source, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
            )
        else:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc = [sys.executable, "-m", "dvc"]
    for command in (
        ["git", "init", "-q"],
        [*dvc, "init", "-q"],
        # A throwaway copy has no use for update checks or usage reports.
        [*dvc, "config", "core.check_update", "false"],
        [*dvc, "config", "core.analytics", "false"],
        # Stage what DVC writes (dvc.lock, .gitignore entries), as a scratch repo wants.
        [*dvc, "config", "core.autostage", "true"],
        # `dvc init` writes a new .dvc/config: keep the project's offline plots template.
        [*dvc, "config", "plots.html_template", "../dvc_plots_template/index.html"],
    ):
        run_checked(command, dest)
    commit_all(dest, "workspace")
    return dest


def clear_workspace(dest: Path) -> None:
    """Delete `dest` if it is a workspace made here; refuse any other non-empty path."""
    if not dest.exists():
        return
    if not dest.is_dir():
        raise ConfigError(f"{dest} is a file; give a new or empty folder")
    if not (dest / MARKER).exists() and any(dest.iterdir()):
        raise ConfigError(
            f"{dest} exists and is not a workspace made by this project; refusing to replace it"
            " (give a new or empty folder)"
        )
    shutil.rmtree(dest)


def commit_all(workspace: Path, message: str) -> None:
    """Commit everything git does not ignore: a baseline for `dvc exp` and `dvc metrics diff`."""
    run_checked(["git", "add", "-A"], workspace)
    author = ["-c", "user.name=cifar-study", "-c", "user.email=cifar-study@localhost"]
    run_checked(["git", *author, "commit", "-qm", message], workspace)


def run_checked(command: list[str], cwd: Path) -> str:
    """Run `command` in the pipeline's environment; its stdout, or a StudyError with its stderr."""
    done = subprocess.run(command, cwd=cwd, env=pipeline_env(), capture_output=True, text=True)
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip()
        raise StudyError(f"`{' '.join(command)}` failed in {cwd}: {output}")
    return done.stdout


def pipeline_env() -> dict[str, str]:
    """The environment for running DVC: stage commands call `python`, which must be this one."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env
