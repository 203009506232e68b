"""DVC stage `prepare`: turn the raw data into checked, split, normalisable uint8 arrays.

    python -m cifar_study.stages.prepare --params params.yaml --raw data/raw \
        --out data/prepared --samples plots/samples.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cifar_study.cli import user_errors_exit
from cifar_study.config import load_params
from cifar_study.data.prepared import SUMMARY, prepare
from cifar_study.data.preview import save_sample_grid
from cifar_study.data.raw import read_raw
from cifar_study.fileio import atomic_path, check_replaceable


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    parser.add_argument("--raw", type=Path, required=True, help="raw folder from `download`")
    parser.add_argument("--out", type=Path, required=True, help="prepared folder to (re)write")
    parser.add_argument("--samples", type=Path, required=True, help="PNG grid of sample images")
    args = parser.parse_args(argv)
    check_replaceable(args.out, SUMMARY)
    params = load_params(args.params)
    raw = read_raw(args.raw)
    # Render the grid first and rename it last: a failure anywhere leaves both outputs as they were.
    with atomic_path(args.samples) as samples:
        save_sample_grid(raw.train_images, raw.train_labels, raw.classes, samples)
        summary = prepare(
            raw,
            args.out,
            params.data.val_size,
            params.data.split_seed,
            normalization=params.data.normalization,
        )
    counts = ", ".join(f"{name} {c['total']}" for name, c in summary["counts"].items())
    print(
        f"{args.out}: {len(raw.classes)} classes; {counts}; "
        f"{summary['train_test_duplicates']['count']} train/test duplicates"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
