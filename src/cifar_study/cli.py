"""What every stage's command line shares: errors a user can fix end in one line and exit 1.

That includes the file system's own errors (a full disk, a read-only folder). Model and data
folders are written atomically (`fileio`), so they stay whole; metrics and plots, which DVCLive
writes as it goes, may not, and DVC then records the stage as failed until it runs again.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path

from cifar_study.errors import StudyError


def user_errors_exit(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Wrap a `main(argv)` so a StudyError prints `error: ...` on stderr and returns 1."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except StudyError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
            return 1

    return wrapper


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (a count of images, steps, repeats...)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def scoring_parser(doc: str, plots_help: str) -> argparse.ArgumentParser:
    """The command line of a stage that scores a trained model on the prepared test split:
    --model-dir, --params, --data, --live (DVCLive metrics) and --plots (`plots_help`)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="folder with model.pt/.json")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    parser.add_argument("--data", type=Path, required=True, help="prepared data folder")
    parser.add_argument("--live", type=Path, required=True, help="DVCLive folder for metrics")
    parser.add_argument("--plots", type=Path, required=True, help=plots_help)
    return parser
