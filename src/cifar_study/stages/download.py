"""DVC stage `download`: fetch or import the raw data named by params.yaml's `data.source`.

python -m cifar_study.stages.download --params params.yaml --out data/raw

A local source belongs in data/external/ (copied there, or `dvc import-url`-ed there to version
the copy): dvc.yaml makes that folder a dependency, so replacing an archive in it re-runs this
stage. A source elsewhere is read as is, but DVC cannot see it change.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cifar_study.cli import user_errors_exit
from cifar_study.config import load_params
from cifar_study.data.sources import acquire


def default_download_dir() -> Path:
    """A per-user cache outside the repository, like torchvision's: the archive is an input
    fetched once per machine, not a product of the pipeline, so no stage needs to declare it."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "cifar-study"


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    parser.add_argument("--out", type=Path, required=True, help="raw data folder to (re)write")
    parser.add_argument(
        "--download-dir",
        type=Path,
        default=default_download_dir(),
        help="where the official archive is kept between runs, so it is fetched once "
        "(default: $XDG_CACHE_HOME/cifar-study, else ~/.cache/cifar-study)",
    )
    args = parser.parse_args(argv)
    params = load_params(args.params)
    manifest = acquire(params.data.source, args.out, args.download_dir)
    print(
        f"{args.out}: {len(manifest['files'])} files, layout {manifest['layout']}, "
        f"from {manifest['source']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
