"""Set every tolerance of an expectations file from runs that should agree with the recorded one.

    python -m cifar_study.tooling.tolerances .ci/expected/digits.json build/reproduce/digits \\
        build/reproduce/digits-seed1 build/reproduce/digits-threads1 [--factor 2]

Another machine runs the same seed with other kernels and another summation order; on a CPU
that moves the metrics about as far as a change of seed does. So the perturbed runs are the
same profile with another seed or thread count (`reproduce --seed N`, `OMP_NUM_THREADS=1`), and
each tolerance is `factor` times the largest deviation from the recorded run seen among them,
rounded up to two significant digits. The expected values become the recorded run's. A partial
run (`reproduce --stage`) counts for the metrics files it wrote, any other run for every metric;
each metric needs at least one run that wrote it.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from cifar_study.cli import user_errors_exit
from cifar_study.errors import ConfigError, StudyError
from cifar_study.fileio import write_json
from cifar_study.tooling.metrics_gate import (
    Expectations,
    check,
    present,
    read_expectations,
    updated_expectations,
)
from cifar_study.tooling.workspace import PARTIAL_RUN


def round_up(value: float, digits: int = 2) -> float:
    """`value` rounded up (away from zero) to `digits` significant digits; 0 stays 0."""
    if value == 0:
        return 0.0
    scale = 10.0 ** (math.floor(math.log10(abs(value))) - digits + 1)
    # ceil() gives up to 10**digits, one digit more; the format drops the product's float noise.
    return float(f"{math.ceil(value / scale - 1e-9) * scale:.{digits + 1}g}")


def derived_tolerances(
    expectations: Expectations, recorded: Path, perturbed: list[Path], factor: float
) -> Expectations:
    """`expectations` holding the recorded run's values, each tolerance set from `perturbed`."""
    if not perturbed:
        raise ConfigError("give at least one perturbed run to measure deviations from")
    if not factor >= 1:
        raise ConfigError(f"--factor must be at least 1, got {factor}")
    result = updated_expectations(expectations, recorded)
    largest: dict[tuple[str, str], float] = {}
    for run in perturbed:
        counted = present(result, run) if (run / PARTIAL_RUN).exists() else result
        if not counted:
            raise StudyError(f"{run}: a partial run with none of the expected metrics files")
        for row in check(counted, run):
            if row["got"] is None or not math.isfinite(row["got"]):
                found = "missing" if row["got"] is None else f"{row['got']}, not a finite number"
                raise StudyError(f"{run}: {row['file']}: {row['metric']} is {found}")
            key = (row["file"], row["metric"])
            largest[key] = max(largest.get(key, 0.0), abs(row["got"] - row["expected"]))
    unmeasured = [f"{f}: {m}" for f, ms in result.items() for m in ms if (f, m) not in largest]
    if unmeasured:
        raise StudyError("no perturbed run wrote " + ", ".join(unmeasured))
    for file, metrics in result.items():
        for metric, spec in metrics.items():
            spec["tolerance"] = round_up(factor * largest[(file, metric)])
    return result


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("expected", type=Path, help="expectations JSON to rewrite")
    parser.add_argument("recorded", type=Path, help="workspace of the run to expect")
    parser.add_argument(
        "perturbed",
        type=Path,
        nargs="+",
        help="workspaces of perturbed runs (a partial one counts for the files it wrote)",
    )
    parser.add_argument("--factor", type=float, default=2.0, help="x largest deviation (2)")
    args = parser.parse_args(argv)
    expectations = read_expectations(args.expected)
    result = derived_tolerances(expectations, args.recorded, args.perturbed, args.factor)
    write_json(args.expected, result)
    for file, metrics in result.items():
        for metric, spec in metrics.items():
            print(f"{file}  {metric}: {spec['expected']:.6g} ± {spec['tolerance']:.3g}")
    print(f"wrote {args.expected}; review with `git diff`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
