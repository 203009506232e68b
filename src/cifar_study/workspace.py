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

from cifar_study.config import parse_params

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# What a pipeline run needs: the pipeline, its params, and the code its stages depend on.
PROJECT_FILES = ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", "src")


def create_workspace(dest: Path, overrides: Mapping[str, Any], root: Path = PROJECT_ROOT) -> Path:
    """Copy the project into `dest` (replaced), apply dotted-key overrides, git-commit, init DVC."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in PROJECT_FILES:
        source = root / name
        if source.is_dir():
            shutil.copytree(
                source, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
            )
        else:
            shutil.copy2(source, dest / name)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    for key, value in overrides.items():
        set_dotted(params, key, value)
    parse_params(params, source="workspace overrides")  # fail here, not halfway through a run
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
    ):
        subprocess.run(command, cwd=dest, check=True, env=pipeline_env())
    commit_all(dest, "workspace")
    return dest


def commit_all(workspace: Path, message: str) -> None:
    """Commit everything git does not ignore: a baseline for `dvc exp` and `dvc metrics diff`."""
    subprocess.run(["git", "add", "-A"], cwd=workspace, check=True)
    author = ["-c", "user.name=cifar-study", "-c", "user.email=cifar-study@localhost"]
    subprocess.run(["git", *author, "commit", "-qm", message], cwd=workspace, check=True)


def pipeline_env() -> dict[str, str]:
    """The environment for running DVC: stage commands call `python`, which must be this one."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def set_dotted(params: dict, key: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict; every key on the way must already exist, as with `-S`."""
    *parents, last = key.split(".")
    node = params
    for part in parents:
        node = node[part]
    if last not in node:
        raise KeyError(f"params.yaml has no key '{key}'")
    node[last] = value
