"""The data stages on a real copy of CIFAR-10, when there is one (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cifar_study.tooling.workspace import PROJECT_ROOT, create_workspace, pipeline_env

# Where .ci/reproduce looks too: $CIFAR10_SOURCE, else beside the project.
REAL_COPY = Path(
    os.environ.get("CIFAR10_SOURCE")
    or PROJECT_ROOT.parent / "shared" / "datasets" / "cifar10-images.tar.gz"
).resolve()
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not REAL_COPY.exists(), reason=f"no real CIFAR-10 copy at {REAL_COPY}"),
]


def test_download_and_prepare_the_real_copy_with_dvc(tmp_path: Path) -> None:
    workspace = create_workspace(tmp_path / "ws", {"data.source": str(REAL_COPY)})
    done = subprocess.run(
        [sys.executable, "-m", "dvc", "repro", "download", "prepare"],
        cwd=workspace,
        env=pipeline_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((workspace / "data" / "prepared" / "dataset.json").read_text())
    assert summary["classes"] == CLASSES
    totals = {split: counts["total"] for split, counts in summary["counts"].items()}
    assert totals == {"train": 45_000, "val": 5_000, "test": 10_000}
    assert set(summary["counts"]["val"]["per_class"].values()) == {500}
    # CIFAR-10's well-known statistics; the JPEG copy moves them only in the third decimal.
    assert summary["normalization"]["mean"] == pytest.approx([0.4914, 0.4822, 0.4465], abs=3e-3)
    assert summary["normalization"]["std"] == pytest.approx([0.2470, 0.2435, 0.2616], abs=3e-3)
