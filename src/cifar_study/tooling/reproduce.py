"""Re-run the pipeline in a fresh workspace and hold its metrics to committed expectations.

    python -m cifar_study.tooling.reproduce cifar10-cpu --source path/to/cifar10.tar.gz
    python -m cifar_study.tooling.reproduce digits

Every stage (or the `--stage` and those it depends on) runs again (`dvc repro --force
--no-run-cache` in a new repository with an empty cache), so nothing is restored from an earlier
run. The metrics are then compared with `.ci/expected/<profile>.json` (see
`cifar_study.tooling.metrics_gate`); drift fails the command.
`--update-expected` writes the reproduced values into that file instead, keeping its metrics and
tolerances, for a deliberate update reviewed in `git diff`. `--seed N` makes a perturbed run (in
build/reproduce/<profile>-seedN), from which `cifar_study.tooling.tolerances` sets the tolerances;
`--stage evaluate@densenet` re-runs only that stage and those it depends on, and gates the metrics
files they write: a perturbed run of one model at a fraction of the cost.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cifar_study.cli import user_errors_exit
from cifar_study.errors import ConfigError, StudyError
from cifar_study.fileio import write_json
from cifar_study.recipes import read_recipe
from cifar_study.tooling.demo import DEMO_OVERRIDES
from cifar_study.tooling.metrics_gate import (
    gate,
    present,
    read_expectations,
    updated_expectations,
)
from cifar_study.tooling.workspace import (
    PARTIAL_RUN,
    PROJECT_ROOT,
    create_workspace,
    pipeline_env,
    run_checked,
)

EXPECTED_DIR = PROJECT_ROOT / ".ci" / "expected"

# What each profile overrides in params.yaml. cifar10-cpu is recipes/short5.yaml, the 5-epoch
# recipe for the ResNet, fitted to a 2-core CPU: the ResNet trains on all 50,000 training images
# (no validation split: nothing is chosen here, and the DenseNet's validation passes would cost
# more than its training); the DenseNet-BC, ~20x slower per image on a CPU, on a stratified 2% of
# them. digits is `make demo`'s offline run. Both run in fp32: `precision: auto` would pick bf16
# on CPUs with AVX-512 BF16 or AMX and fp32 on others, numerics that one set of tolerances does
# not cover, and CI's machine may be either.
PROFILES: dict[str, dict[str, Any]] = {
    "cifar10-cpu": {
        **read_recipe(PROJECT_ROOT / "recipes" / "short5.yaml"),
        "data.val_size": 0,
        "eval_batch_size": 256,
        # Plain and flip TTA only: 6-view TTA would triple the DenseNet's evaluation on a CPU.
        "tta_translate": 0,
        "train_fraction.densenet": 0.02,
        # Every corruption at severity 3 on 100 evenly spaced test images (11 passes; the
        # default is 51 over 10,000): the DenseNet's stage took 45 s on a 2-core CPU, against
        # 99 s at severities 1, 3 and 5. No gated metric depends on it: it shows the stage runs.
        "robustness.severities": [3],
        "robustness.test_images": 100,
        "precision": "fp32",
    },
    "digits": {**DEMO_OVERRIDES, "precision": "fp32"},
}
# Profiles whose data the user supplies with --source (their data.source is a local path).
NEEDS_SOURCE = {"cifar10-cpu"}
_RUNNING = re.compile(r"Running stage '([^']+)'")


def overrides_for(profile: str, source: Path | None) -> dict[str, Any]:
    """The params overrides of `profile`, with `data.source` set where the profile needs one."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile '{profile}'; known: {', '.join(sorted(PROFILES))}")
    overrides = dict(PROFILES[profile])
    if profile in NEEDS_SOURCE:
        if source is None:
            raise ConfigError(f"profile '{profile}' needs --source: a copy of CIFAR-10")
        if not source.exists():
            raise ConfigError(f"--source {source} does not exist")
        overrides["data.source"] = str(source.resolve())
    elif source is not None:
        raise ConfigError(f"profile '{profile}' brings its own data; drop --source")
    return overrides


def stages_of(workspace: Path) -> set[str]:
    """Every stage of the workspace's pipeline, `foreach` items expanded (e.g. train@resnet)."""
    listed = run_checked([sys.executable, "-m", "dvc", "stage", "list", "--name-only"], workspace)
    return set(listed.split())


def repro_forced(workspace: Path, stage: str | None = None) -> set[str]:
    """Run every stage (or `stage` and those it depends on), streaming DVC's output; return the
    stages DVC reported running."""
    targets = [stage] if stage else []
    process = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "--force", "--no-run-cache", *targets],
        cwd=workspace,
        env=pipeline_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    ran = set()
    for line in process.stdout:
        print(line, end="", flush=True)
        ran.update(_RUNNING.findall(line))
    if process.wait() != 0:
        raise StudyError(f"dvc repro failed (exit {process.returncode}): see its output above")
    return ran


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", help="one of: " + ", ".join(sorted(PROFILES)))
    parser.add_argument("--source", type=Path, help="the CIFAR-10 copy (cifar10-* profiles)")
    parser.add_argument(
        "--dest",
        type=Path,
        help="workspace (default build/reproduce/<profile>[-seedN][-STAGE, its @ as -])",
    )
    parser.add_argument("--expected", type=Path, help="default .ci/expected/<profile>.json")
    parser.add_argument(
        "--update-expected",
        action="store_true",
        help="write the reproduced values into the expectations file instead of checking",
    )
    parser.add_argument(
        "--seed",
        type=int,
        help="run with another seed: a perturbed run, for cifar_study.tooling.tolerances",
    )
    parser.add_argument(
        "--stage",
        help="re-run only this stage and those it depends on (e.g. evaluate@densenet), gating"
        " the metrics it writes: a partial perturbed run",
    )
    args = parser.parse_args(argv)
    overrides = overrides_for(args.profile, args.source)
    run_name = args.profile
    if args.seed is not None:
        if args.update_expected:
            raise ConfigError("--update-expected records the profile's own seed; drop --seed")
        overrides["seed"] = args.seed
        run_name = f"{args.profile}-seed{args.seed}"
    if args.stage is not None:
        if args.update_expected:
            raise ConfigError("--update-expected records every stage's metrics; drop --stage")
        stages = stages_of(PROJECT_ROOT)  # the workspace's too: `foreach` lists are fixed
        if args.stage not in stages:
            known = ", ".join(sorted(stages))
            raise ConfigError(f"--stage {args.stage}: no such stage; known: {known}")
        run_name += "-" + args.stage.replace("@", "-")
    expected_path = args.expected or EXPECTED_DIR / f"{args.profile}.json"
    expectations = read_expectations(expected_path)  # a bad file fails before hours of training
    dest = args.dest or PROJECT_ROOT / "build" / "reproduce" / run_name

    start = time.monotonic()
    workspace = create_workspace(dest, overrides)
    print(f"reproducing '{args.profile}' in {workspace} with {overrides}", flush=True)
    if args.stage is not None:
        (workspace / PARTIAL_RUN).write_text(args.stage + "\n")
    ran = repro_forced(workspace, args.stage)
    not_run = ({args.stage} if args.stage else stages_of(workspace)) - ran
    if not_run:
        raise StudyError(f"stages not re-run: {', '.join(sorted(not_run))}")
    minutes = (time.monotonic() - start) / 60
    which = (
        f"{len(ran)} stages ({args.stage} and those it depends on)"
        if args.stage
        else f"all {len(ran)} stages"
    )
    print(f"\n{which} re-run in {minutes:.1f} min\n", flush=True)

    if args.update_expected:
        write_json(expected_path, updated_expectations(expectations, workspace))
        print(f"wrote the reproduced values into {expected_path}; review with `git diff`")
        return 0
    print(f"expected: {expected_path}")
    if args.stage is not None:
        expectations = present(expectations, workspace)
        if not expectations:
            raise StudyError(f"{args.stage} and those it depends on write no gated metrics file")
        print(f"gated: the metrics files written by {args.stage} and those it depends on")
    return gate(expectations, workspace)


if __name__ == "__main__":
    raise SystemExit(main())
