"""DVC stage `download`: fetch or import the raw data named by params.yaml's `data.source`.

python -m cifar_study.stages.download --params params.yaml --out data/raw
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cifar_study.cli import user_errors_exit
from cifar_study.config import load_params
from cifar_study.data.sources import acquire


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    parser.add_argument("--out", type=Path, required=True, help="raw data folder to (re)write")
    parser.add_argument(
        "--download-dir",
        type=Path,
        default=Path("data/downloads"),
        help="where the official archive is kept between runs, so it is fetched once",
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
