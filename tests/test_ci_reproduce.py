"""`.ci/reproduce` picks CIFAR-10 or, saying so, digits; a stub stands in for the reproduction."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cifar_study.tooling.workspace import PROJECT_ROOT

STUB = """#!/usr/bin/env bash
echo "reproduce called with: $*"
exit "${STUB_EXIT:-0}"
"""


def run_script(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """.ci/reproduce in a checkout at tmp_path/clone, with `python` a stub that echoes its args."""
    clone = tmp_path / "clone"
    (clone / ".ci").mkdir(parents=True, exist_ok=True)
    shutil.copy2(PROJECT_ROOT / ".ci" / "reproduce", clone / ".ci" / "reproduce")
    stubs = tmp_path / "bin"
    stubs.mkdir(exist_ok=True)
    (stubs / "python").write_text(STUB)
    (stubs / "python").chmod(0o755)
    base = {k: v for k, v in os.environ.items() if k not in {"CIFAR10_SOURCE", "GITHUB_ACTIONS"}}
    base["PATH"] = f"{stubs}{os.pathsep}{base['PATH']}"
    return subprocess.run(
        [clone / ".ci" / "reproduce"], env={**base, **env}, capture_output=True, text=True
    )


def test_without_a_copy_it_says_so_and_reproduces_digits(tmp_path: Path) -> None:
    done = run_script(tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("CIFAR-10 reproduction: NOT RUN, no copy at ../shared/datasets/")
    assert "reproduce called with: -m cifar_study.tooling.reproduce digits" in lines
    assert lines[-1].startswith("CIFAR-10 reproduction: NOT RUN")  # the last word, too
    assert "::warning::" not in done.stdout
    assert (tmp_path / "clone/build/reproduce/profile").read_text() == "digits\n"


def test_on_github_actions_the_notice_is_also_a_warning(tmp_path: Path) -> None:
    done = run_script(tmp_path, GITHUB_ACTIONS="true")
    assert "::warning::CIFAR-10 reproduction: NOT RUN" in done.stdout


def test_a_copy_found_runs_the_cifar_profile(tmp_path: Path) -> None:
    copy = tmp_path / "cifar10.tar.gz"
    copy.touch()
    done = run_script(tmp_path, CIFAR10_SOURCE=str(copy))
    assert done.returncode == 0, done.stderr
    assert f"-m cifar_study.tooling.reproduce cifar10-cpu --source {copy}" in done.stdout
    assert "NOT RUN" not in done.stdout
    assert (tmp_path / "clone/build/reproduce/profile").read_text() == "cifar10-cpu\n"


def test_a_named_copy_that_is_missing_is_an_error(tmp_path: Path) -> None:
    done = run_script(tmp_path, CIFAR10_SOURCE=str(tmp_path / "nowhere.tar.gz"))
    assert done.returncode == 1
    assert "nowhere.tar.gz does not exist" in done.stderr
    assert "reproduce called" not in done.stdout


@pytest.mark.parametrize("copy", [True, False], ids=["cifar10", "digits"])
def test_a_failed_reproduction_fails_and_never_says_passed(tmp_path: Path, copy: bool) -> None:
    env = {"STUB_EXIT": "1"}
    if copy:
        (tmp_path / "c.tar.gz").touch()
        env["CIFAR10_SOURCE"] = str(tmp_path / "c.tar.gz")
    done = run_script(tmp_path, **env)
    assert done.returncode == 1
    assert "passed" not in done.stdout
