"""Throwaway workspaces: only folders this project made are ever deleted to be re-created."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cifar_study.errors import ConfigError
from cifar_study.tooling import demo, reproduce
from cifar_study.tooling.workspace import MARKER, clear_workspace, create_workspace


def test_a_marked_workspace_is_cleared(tmp_path: Path) -> None:
    (tmp_path / "ws" / "metrics").mkdir(parents=True)
    (tmp_path / "ws" / MARKER).touch()
    clear_workspace(tmp_path / "ws")
    assert not (tmp_path / "ws").exists()


def test_a_missing_or_empty_folder_is_fine(tmp_path: Path) -> None:
    clear_workspace(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    clear_workspace(tmp_path / "empty")
    assert not (tmp_path / "empty").exists()


def test_another_folder_or_a_file_is_refused_and_kept(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("years of work")
    with pytest.raises(ConfigError, match="not a workspace made by this project"):
        clear_workspace(tmp_path)
    with pytest.raises(ConfigError, match="is a file"):
        clear_workspace(tmp_path / "thesis.tex")
    assert (tmp_path / "thesis.tex").read_text() == "years of work"


@pytest.mark.parametrize(
    "main", [demo.main, lambda argv: reproduce.main(["digits", *argv])], ids=["demo", "reproduce"]
)
def test_commands_refuse_a_dest_they_did_not_make(
    main: Callable[[list[str]], int], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    assert main(["--dest", str(tmp_path)]) == 1
    assert "refusing to replace it" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_bad_overrides_leave_the_previous_workspace_as_it_was(tmp_path: Path) -> None:
    (tmp_path / "ws" / "metrics").mkdir(parents=True)
    (tmp_path / "ws" / MARKER).touch()
    with pytest.raises(ConfigError, match=r"workspace overrides: .*seed"):
        create_workspace(tmp_path / "ws", {"seed": -1})
    assert sorted(p.name for p in (tmp_path / "ws").iterdir()) == [MARKER, "metrics"]
