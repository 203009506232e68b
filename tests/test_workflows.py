"""The GitHub workflows pass a schema check and a security lint, and call targets that exist."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cifar_study.tooling.workspace import PROJECT_ROOT

WORKFLOWS = sorted((PROJECT_ROOT / ".github" / "workflows").glob("*.yml"))
BIN = Path(sys.executable).parent


def lint(*files: Path) -> subprocess.CompletedProcess[str]:
    """GitHub's workflow schema (check-jsonschema), then zizmor's audits, offline."""
    schema = subprocess.run(
        [BIN / "check-jsonschema", "--builtin-schema", "vendor.github-workflows", *files],
        capture_output=True,
        text=True,
    )
    if schema.returncode != 0:
        return schema
    return subprocess.run(
        [BIN / "zizmor", "--offline", "--no-progress", *files], capture_output=True, text=True
    )


def test_there_are_workflows() -> None:
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "gpu.yml"}


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_passes_the_linters(workflow: Path) -> None:
    done = lint(workflow)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("mistake", "replacement"),
    [
        ("runs-on: ubuntu-24.04", "runs_on: ubuntu-24.04"),  # not a workflow key
        # An action by a movable tag: whoever moves the tag runs code in CI.
        (
            "actions/checkout@34e114876b0b11c390a56381ad16ebd13914f8d5  # v4.3.1",
            "actions/checkout@v4",
        ),
    ],
)
def test_the_linters_catch_a_broken_workflow(
    tmp_path: Path, mistake: str, replacement: str
) -> None:
    original = (PROJECT_ROOT / ".github" / "workflows" / "ci.yml").read_text()
    assert mistake in original
    broken = tmp_path / ".github" / "workflows" / "ci.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(original.replace(mistake, replacement))
    assert lint(broken).returncode != 0


def test_workflows_call_existing_make_targets() -> None:
    targets = set(re.findall(r"^([a-z-]+):", (PROJECT_ROOT / "Makefile").read_text(), re.M))
    for workflow in WORKFLOWS:
        for target in re.findall(r"\bmake ([a-z-]+)", workflow.read_text()):
            assert target in targets, f"{workflow.name}: make {target}"


def test_ci_scripts_are_executable() -> None:
    for script in ("run", "reproduce", "report"):
        path = PROJECT_ROOT / ".ci" / script
        assert shutil.which(path.name, path=str(path.parent)), path
