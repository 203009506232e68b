"""The `download` and `prepare` stage CLIs, end to end on the offline digits data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cifar_study.data.prepared import SUMMARY, load_prepared
from cifar_study.data.raw import MANIFEST
from cifar_study.stages import download, prepare

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_params(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(body)
    return path


def test_download_then_prepare_on_digits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = write_params(tmp_path, "seed: 0\ndata:\n  source: digits\n  val_size: 0.1\n")
    raw, out, samples = tmp_path / "data/raw", tmp_path / "data/prepared", tmp_path / "plots/s.png"
    downloads = tmp_path / "data/downloads"

    assert (
        download.main(
            ["--params", str(params), "--out", str(raw), "--download-dir", str(downloads)]
        )
        == 0
    )
    printed = capsys.readouterr()
    assert f"{raw}: 1797 files, layout image-folder, from digits" in printed.out
    assert printed.err == ""
    manifest = json.loads((raw / MANIFEST).read_text())
    assert manifest["source"] == "digits" and len(manifest["files"]) == 1797

    assert (
        prepare.main(
            [
                "--params",
                str(params),
                "--raw",
                str(raw),
                "--out",
                str(out),
                "--samples",
                str(samples),
            ]
        )
        == 0
    )
    printed = capsys.readouterr()
    assert "10 classes; train 1293, val 144, test 360" in printed.out
    summary = json.loads((out / SUMMARY).read_text())
    assert summary["split"] == {"val_size": 0.1, "seed": 0}
    assert summary["counts"]["train"]["total"] + summary["counts"]["val"]["total"] == 1437
    data = load_prepared(out)
    assert data.splits["test"].images.shape == (360, 32, 32, 3)
    assert set(np.unique(data.splits["val"].labels)) == set(range(10))

    assert samples.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(samples) as image:
        image.verify()
    with Image.open(samples) as image:
        assert image.format == "PNG"
        assert image.width > 200 and image.height > 200
        # Not a blank canvas: the digits are drawn.
        assert len(np.unique(np.asarray(image.convert("L")))) > 10
    assert not list(downloads.glob("*"))  # digits needs no download
    assert sorted(p.name for p in samples.parent.iterdir()) == ["s.png"]  # no temp files


BAD_PARAMS = [
    pytest.param("data:\n  source: digits\n  sorce: x\n", "data.sorce", id="unknown-nested-key"),
    pytest.param("sed: 1\ndata:\n  source: digits\n", "sed", id="unknown-top-level-key"),
    pytest.param("data:\n  source: digits\n  val_size: 1.5\n", "data.val_size", id="out-of-range"),
    pytest.param("data:\n  source: digits\n  split_seed: true\n", "data.split_seed", id="bool"),
    pytest.param("data:\n  source: 3\n", "data.source", id="wrong-type"),
    pytest.param("data: [digits\n", "not valid YAML", id="invalid-yaml"),
]


@pytest.mark.parametrize(("body", "named"), BAD_PARAMS)
def test_download_with_bad_params_exits_1_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, named: str
) -> None:
    params = write_params(tmp_path / "cfg", body)
    data = tmp_path / "data"
    code = download.main(
        [
            "--params",
            str(params),
            "--out",
            str(data / "raw"),
            "--download-dir",
            str(data / "downloads"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: ")
    assert named in err
    assert "Traceback" not in err
    assert not data.exists()


@pytest.mark.parametrize(("body", "named"), BAD_PARAMS)
def test_prepare_with_bad_params_exits_1_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], digits_raw: Path, body: str, named: str
) -> None:
    params = write_params(tmp_path / "cfg", body)
    out, samples = tmp_path / "data" / "prepared", tmp_path / "plots" / "samples.png"
    code = prepare.main(
        [
            "--params",
            str(params),
            "--raw",
            str(digits_raw),
            "--out",
            str(out),
            "--samples",
            str(samples),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: ") and named in err
    assert not out.parent.exists() and not samples.parent.exists()


def test_download_of_a_nonexistent_source_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere" / "cifar"
    params = write_params(tmp_path, f"data:\n  source: {missing}\n")
    raw = tmp_path / "data" / "raw"
    code = download.main(["--params", str(params), "--out", str(raw)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(f"error: data.source {missing} does not exist")
    assert not raw.exists()
    assert not raw.parent.exists() or list(raw.parent.iterdir()) == []


def test_prepare_before_download_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = write_params(tmp_path, "data:\n  source: digits\n")
    out = tmp_path / "data" / "prepared"
    code = prepare.main(
        [
            "--params",
            str(params),
            "--raw",
            str(tmp_path / "data" / "raw"),
            "--out",
            str(out),
            "--samples",
            str(tmp_path / "s.png"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "run the download stage first" in err
    assert not out.exists() and not (tmp_path / "s.png").exists()


def test_prepare_keeps_old_outputs_when_raw_data_changed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], image_tree: Path
) -> None:
    params = write_params(tmp_path / "cfg", f"data:\n  source: {image_tree}\n  val_size: 0\n")
    raw, out, samples = tmp_path / "raw", tmp_path / "prepared", tmp_path / "s.png"
    assert download.main(["--params", str(params), "--out", str(raw)]) == 0
    args = [
        "--params",
        str(params),
        "--raw",
        str(raw),
        "--out",
        str(out),
        "--samples",
        str(samples),
    ]
    assert prepare.main(args) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (raw / "train" / "cat" / "img0.png").write_bytes(b"changed")
    capsys.readouterr()
    assert prepare.main(args) == 1
    assert "does not match the manifest" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize("stage", ["download", "prepare"])
def test_a_folder_of_other_files_is_refused_as_output_and_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], digits_raw: Path, stage: str
) -> None:
    params = write_params(tmp_path, "data:\n  source: digits\n")
    out = tmp_path / "data"  # `--out data`, forgetting `/raw` or `/prepared`
    (out / "external").mkdir(parents=True)
    (out / "external" / "cifar.tar.gz").write_bytes(b"a user's own archive")
    args = ["--params", str(params), "--out", str(out)]
    if stage == "download":
        code = download.main(args)
    else:
        code = prepare.main([*args, "--raw", str(digits_raw), "--samples", str(tmp_path / "s.png")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(f"error: {out}: holds files but no ") and err.count("\n") == 1
    assert [p.relative_to(out).as_posix() for p in sorted(out.rglob("*"))] == [
        "external",
        "external/cifar.tar.gz",
    ]
    assert not (tmp_path / "s.png").exists()
