"""Compare reproduced metrics with committed expectations, each with its own tolerance.

    python -m cifar_study.tooling.metrics_gate --expected .ci/expected/digits.json \\
        --root build/reproduce/digits

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
import sys
from pathlib import Path
from typing import Any

from cifar_study.cli import user_errors_exit
from cifar_study.errors import ConfigError, StudyError
from cifar_study.fileio import write_json

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
            expected, tolerance = spec["expected"], spec["tolerance"]
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


def present(expectations: Expectations, root: Path) -> Expectations:
    """The part of `expectations` whose metrics files exist under `root`."""
    return {file: metrics for file, metrics in expectations.items() if (root / file).exists()}


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


def reproduced(expectations: Expectations, root: Path) -> tuple[Expectations, list[str]]:
    """The expected metrics found under `root`, valued as found there, and those missing
    (or not finite: a NaN would make an expectations file that cannot be read back)."""
    found: Expectations = {}
    missing = []
    for row in check(expectations, root):
        file, metric = row["file"], row["metric"]
        if row["got"] is None:
            missing.append(f"{file}: {metric}")
        elif not math.isfinite(row["got"]):
            missing.append(f"{file}: {metric} = {row['got']}")
        else:
            spec = {**expectations[file][metric], "expected": row["got"]}
            found.setdefault(file, {})[metric] = spec
    return found, missing


def updated_expectations(expectations: Expectations, root: Path) -> Expectations:
    """`expectations` with every expected value replaced by the one reproduced under `root`."""
    found, missing = reproduced(expectations, root)
    if missing:
        raise StudyError("cannot update, metrics missing or not finite: " + ", ".join(missing))
    return found


def expected_documents(expectations: Expectations) -> dict[str, dict[str, Any]]:
    """Per metrics file, the JSON the expected values make ("a.b": 1 nests as {"a": {"b": 1}})."""
    documents: dict[str, dict[str, Any]] = {}
    for file, metrics in expectations.items():
        document = documents.setdefault(file, {})
        for name, spec in metrics.items():
            *parents, last = name.split(".")
            node = document
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = spec["expected"]
    return documents


def read_expectations(path: Path) -> Expectations:
    """Load an expectations file; ConfigError when it is unreadable or not a non-empty mapping."""
    try:
        expectations = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read expectations {path}: {exc}") from None
    if not isinstance(expectations, dict) or not expectations:
        raise ConfigError(f"{path}: expected a non-empty mapping of metrics files")
    for file, metrics in expectations.items():
        if not isinstance(metrics, dict) or not metrics:
            raise ConfigError(f"{path}: {file}: expected a non-empty mapping of metrics")
        for name, spec in metrics.items():
            metrics[name] = _valid_spec(spec, f"{path}: {file}: {name}")
    return expectations


def _valid_spec(spec: Any, where: str) -> dict[str, float]:
    """{"expected": finite number, "tolerance": finite number >= 0}, as floats."""
    if not isinstance(spec, dict) or set(spec) != {"expected", "tolerance"}:
        raise ConfigError(f"{where}: expected {{'expected': ..., 'tolerance': ...}}, got {spec!r}")
    values = {}
    for key, value in spec.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ConfigError(f"{where}: {key} = {value!r} is not a finite number")
        values[key] = float(value)
    if values["tolerance"] < 0:
        raise ConfigError(f"{where}: tolerance = {values['tolerance']} must be >= 0")
    return values


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
    parser.add_argument(
        "--write",
        choices=["expected", "got"],
        help="instead of checking, write the gated metrics alone, their expected values or those"
        " found under --root, as metrics files under --out (for `dvc metrics diff`)",
    )
    parser.add_argument("--out", type=Path, help="where --write writes")
    args = parser.parse_args(argv)
    if (args.write is None) != (args.out is None):
        raise ConfigError("--write and --out go together")
    expectations = read_expectations(args.expected)
    if args.write is None:
        return gate(expectations, args.root)
    if args.write == "got":
        # A metric the expectations name but this reproduction lacks (a profile that stopped
        # logging it) is left out, so that `dvc metrics diff` shows it as removed.
        expectations, missing = reproduced(expectations, args.root)
        for name in missing:
            print(f"missing or not finite in this reproduction, left out: {name}", file=sys.stderr)
    for file, document in expected_documents(expectations).items():
        write_json(args.out / file, document)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
