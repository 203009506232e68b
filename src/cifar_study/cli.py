"""What every stage's command line shares: errors a user can fix end in one line and exit 1.

That includes the file system's own errors (a full disk, a read-only folder): products are
written atomically, so one line is all the user needs and the previous outputs are intact.
"""

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
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            print(
                f"error: {where}{exc.strerror or exc}; previous outputs are kept", file=sys.stderr
            )
            return 1

    return wrapper
