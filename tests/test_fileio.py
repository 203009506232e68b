"""Output folders: replaced whole when they are an earlier output, refused when they are not."""

from __future__ import annotations

from pathlib import Path

import pytest

from cifar_study.errors import StudyError
from cifar_study.fileio import atomic_dir, check_replaceable


def test_an_earlier_output_is_replaced_whole(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "marker.json").write_text("old")
    (out / "stale.bin").write_text("old")
    with atomic_dir(out, "marker.json") as staging:
        (staging / "marker.json").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["marker.json"]
    assert (out / "marker.json").read_text() == "new"


@pytest.mark.parametrize("existing", [None, "empty"])
def test_a_new_or_empty_folder_is_written(tmp_path: Path, existing: str | None) -> None:
    out = tmp_path / "a" / "out"
    if existing:
        out.mkdir(parents=True)
    with atomic_dir(out, "marker.json") as staging:
        (staging / "marker.json").write_text("new")
    assert (out / "marker.json").read_text() == "new"


def test_a_folder_of_other_files_is_refused_before_anything_runs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "other").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    ran = False
    with (
        pytest.raises(StudyError, match=r"holds files but no marker\.json"),
        atomic_dir(out, "marker.json"),
    ):
        ran = True
    assert not ran
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "other"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left


def test_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("mine")
    with pytest.raises(StudyError, match="is a file"):
        check_replaceable(tmp_path / "out", "marker.json")


@pytest.mark.parametrize("out", [".", "..", "../.."])
def test_the_working_folder_and_those_above_it_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, out: str
) -> None:
    here = tmp_path / "a" / "b"
    here.mkdir(parents=True)
    (here / "marker.json").write_text("even with the marker")
    monkeypatch.chdir(here)
    with pytest.raises(StudyError, match="working folder or one above it"):
        check_replaceable(out, "marker.json")


def test_a_link_is_refused_naming_what_it_points_to(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "marker.json").write_text("an earlier output")
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(StudyError, match=r"link: is a link \(to .*real\); name the folder itself"):
        check_replaceable(tmp_path / "link", "marker.json")
    assert (real / "marker.json").read_text() == "an earlier output"
