"""What every stage's command line shares: errors a user can fix end in one line and exit 1."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

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

    return wrapper
