"""Train recipe variants side by side and print each one's validation accuracy.

    python bench/recipe_sweep.py --data data/prepared --out /tmp/sweep --model resnet \
        base lr=0.2 decay_norm_and_bias=false "ema_decay=0.999 seed=1"

Each positional argument is one variant: space-separated `key=value` overrides of params.yaml
(dotted keys for nested ones, e.g. `resnet.dropout=0.2`; `base` for none). All variants train at
once, one process each: a small model leaves most of a GPU idle, so concurrent runs cost little
more than one. Selection reads the validation split only. --budget-s stops the stragglers; what
they logged so far is still reported. --apply-best PARAMS writes the params of the variant with the
best final validation accuracy, among those that finished, to PARAMS (e.g. to train it in full).
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

import yaml

from cifar_study import config
from cifar_study.config import ConfigError
from cifar_study.fileio import atomic_path

ROOT = Path(__file__).resolve().parents[1]


def overridden(params: dict, variant: str) -> dict:
    """params.yaml's content with the variant's `key=value` overrides applied (values as YAML),
    checked as a whole; `base` is no override."""
    pairs = [item.partition("=") for item in variant.split() if item != "base"]
    try:
        return config.overridden(
            params, {key: yaml.safe_load(value) for key, _, value in pairs}, "its params"
        )
    except ConfigError as exc:
        raise SystemExit(f"variant {variant!r}: {exc}") from None


def checked_variants(base: dict, variants: list[str]) -> dict[str, dict]:
    """Each variant's full params, all validated before any training starts."""
    if len(set(variants)) < len(variants):
        raise SystemExit(f"each variant must differ from the others, got {variants}")
    return {variant: overridden(base, variant) for variant in variants}


def curve(live: Path) -> list[float]:
    """Validation accuracy per epoch, as DVCLive logged it."""
    path = live / "plots" / "metrics" / "val" / "acc.tsv"
    if not path.exists():
        return []
    with path.open() as f:
        return [float(row["acc"]) for row in csv.DictReader(f, delimiter="\t")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", help="'key=value ...' overrides per variant")
    parser.add_argument("--data", type=Path, required=True, help="prepared data with a val split")
    parser.add_argument("--out", type=Path, required=True, help="folder for each variant's run")
    parser.add_argument("--model", default="resnet")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--budget-s", type=float, default=3600.0)
    parser.add_argument(
        "--apply-best", type=Path, help="write the best finished variant's params here"
    )
    args = parser.parse_args(argv)

    base = yaml.safe_load(args.params.read_text())
    plans = checked_variants(base, args.variants)
    runs: dict[str, tuple[Path, subprocess.Popen]] = {}
    for index, (variant, params) in enumerate(plans.items()):
        folder = args.out / f"v{index}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        (folder / "variant.txt").write_text(variant + "\n")
        command = [
            sys.executable,
            "-m",
            "cifar_study.stages.train",
            "--model",
            args.model,
            "--params",
            str(folder / "params.yaml"),
            "--data",
            str(args.data),
            "--out",
            str(folder / "model"),
            "--checkpoint",
            str(folder / "last.pt"),
            "--live",
            str(folder / "live"),
        ]
        log = (folder / "train.log").open("w")
        runs[variant] = folder, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    deadline = time.monotonic() + args.budget_s
    while any(p.poll() is None for _, p in runs.values()) and time.monotonic() < deadline:
        time.sleep(1)
    for _, process in runs.values():
        if process.poll() is None:
            process.terminate()
    for _, process in runs.values():
        process.wait()

    print(f"{'variant':44} {'epochs':>6} {'final val':>9} {'best val':>9}  exit")
    finished: dict[str, float] = {}
    for variant, (folder, process) in runs.items():
        accs = curve(folder / "live")
        final, best = (f"{accs[-1]:.2%}", f"{max(accs):.2%}") if accs else ("-", "-")
        print(f"{variant:44} {len(accs):6} {final:>9} {best:>9}  {process.returncode}")
        if process.returncode == 0 and accs:
            finished[variant] = accs[-1]
    if args.apply_best:
        if not finished:
            raise SystemExit("no variant finished with a validation curve: nothing to apply")
        chosen = max(finished, key=finished.__getitem__)  # the first of equals
        said = f"chosen on validation: {chosen} ({finished[chosen]:.2%})"
        if plans[chosen] == base and args.apply_best.resolve() == args.params.resolve():
            print(f"{said}: {args.apply_best} stays as it is")  # keeps its comments
        else:
            with atomic_path(args.apply_best) as tmp:
                tmp.write_text(yaml.safe_dump(plans[chosen], sort_keys=False))
            print(f"{said} -> {args.apply_best}")


if __name__ == "__main__":
    main()
