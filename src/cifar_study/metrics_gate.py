"""Compare reproduced metrics with committed expectations, each with its own tolerance.

    python -m cifar_study.metrics_gate --expected ci/expected/digits.json --root build/ci

`dvc metrics diff` shows changes but has no tolerance, so it cannot gate CI. The expectations
file names, per metrics file, each metric (dotted path into the JSON) with its expected value
and the largest absolute difference allowed:

    {"metrics/eval/resnet/metrics.json": {"test.acc": {"expected": 0.80, "tolerance": 0.01}}}

Prints a table of expected, got and tolerance; exits 1 when any metric is missing or drifts.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from cifar_study.cli import user_errors_exit
from cifar_study.errors import ConfigError, StudyError

# Per metrics file, per dotted metric: {"expected": value, "tolerance": largest |difference|}.
Expectations = dict[str, dict[str, dict[str, float]]]


def lookup(document: Any, dotted: str) -> Any:
    """`document["a"]["b"]` for "a.b"; KeyError when any part is missing."""
    for part in dotted.split("."):
        if not isinstance(document, dict) or part not in document:
            raise KeyError(dotted)
        document = document[part]
    return document


def check(expectations: Expectations, root: Path) -> list[dict]:
    """One row per expected metric: file, metric, expected, got (None if missing), tolerance, ok."""
    rows = []
    for file, metrics in expectations.items():
        try:
            document = json.loads((root / file).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            document = None
        for name, spec in metrics.items():
            try:
                expected, tolerance = float(spec["expected"]), float(spec["tolerance"])
            except (KeyError, TypeError, ValueError):
                raise ConfigError(
                    f"{file}: {name}: needs numeric 'expected' and 'tolerance', got {spec!r}"
                ) from None
            try:
                got = float(lookup(document, name))
            except (KeyError, TypeError, ValueError):
                got = None
            ok = got is not None and math.isfinite(got) and abs(got - expected) <= tolerance
            rows.append(
                {
                    "file": file,
                    "metric": name,
                    "expected": expected,
                    "got": got,
                    "tolerance": tolerance,
                    "ok": ok,
                }
            )
    return rows


def format_table(rows: list[dict]) -> str:
    header = ("file", "metric", "expected", "got", "tolerance", "")
    lines = [header] + [
        (
            r["file"],
            r["metric"],
            f"{r['expected']:.6g}",
            "missing" if r["got"] is None else f"{r['got']:.6g}",
            f"±{r['tolerance']:.3g}",
            "ok" if r["ok"] else "DRIFT",
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in lines
    )


def updated_expectations(expectations: Expectations, root: Path) -> Expectations:
    """`expectations` with every expected value replaced by the one reproduced under `root`."""
    rows = {(r["file"], r["metric"]): r["got"] for r in check(expectations, root)}
    missing = [f"{file}: {metric}" for (file, metric), got in rows.items() if got is None]
    if missing:
        raise StudyError("cannot update, metrics missing: " + ", ".join(missing))
    return {
        file: {
            metric: {**spec, "expected": rows[(file, metric)]} for metric, spec in metrics.items()
        }
        for file, metrics in expectations.items()
    }


def read_expectations(path: Path) -> Expectations:
    """Load an expectations file; ConfigError when it is unreadable or not a non-empty mapping."""
    try:
        expectations = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read expectations {path}: {exc}") from None
    if not isinstance(expectations, dict) or not expectations:
        raise ConfigError(f"{path}: expected a non-empty mapping of metrics files")
    return expectations


def gate(expectations: Expectations, root: Path) -> int:
    """Print the table and a verdict; 0 when every metric is within tolerance, else 1."""
    rows = check(expectations, root)
    print(format_table(rows))
    failed = [r for r in rows if not r["ok"]]
    if failed:
        print(f"FAILED: {len(failed)} of {len(rows)} metrics missing or outside their tolerance")
        return 1
    print(f"all {len(rows)} metrics within tolerance")
    return 0


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expected", type=Path, required=True, help="expectations JSON")
    parser.add_argument("--root", type=Path, default=Path("."), help="project the files are in")
    args = parser.parse_args(argv)
    return gate(read_expectations(args.expected), args.root)


if __name__ == "__main__":
    raise SystemExit(main())
