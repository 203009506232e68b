"""Train recipe variants side by side and print each one's validation accuracy.

    python bench/recipe_sweep.py --data data/prepared --out /tmp/sweep --model resnet \
        base lr=0.2 decay_norm_and_bias=false "ema_decay=0.999 seed=1"

Each positional argument is one variant: space-separated `key=value` overrides of params.yaml
(dotted keys for nested ones, e.g. `resnet.dropout=0.2`; `base` for none). Every variant starts from
--recipe's values, if given (e.g. `--recipe short20` for recipes/short20.yaml, so a search around a
recipe follows the recipe when it changes), then --base's overrides, then its own. Variants train
concurrently, one process each, at most --parallel at once (default: all): a small model leaves most
of a GPU idle, so concurrent runs cost little more than one. Selection reads the validation split
only. --budget-s stops the stragglers (what they logged so far is still reported) and starts no
more; the sweep exits non-zero when no variant finished. `@FILE` reads arguments from FILE, one per
line (`#` starts a comment line), e.g. a search kept in bench/searches/. --apply-best PARAMS writes
the whole params of the variant with the best final validation accuracy, among those that finished
(the recipe's and --base's values included), to PARAMS, e.g. to train it in full. --data's prepared
split is the one every variant trains and validates on, whatever `data.` keys say.
"""

from __future__ import annotations

import argparse
import csv
import functools
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from cifar_study import config
from cifar_study.cli import user_errors_exit
from cifar_study.config import ConfigError
from cifar_study.data.prepared import read_summary
from cifar_study.errors import StudyError
from cifar_study.fileio import atomic_path
from cifar_study.recipes import read_recipe, recipe_file

ROOT = Path(__file__).resolve().parents[1]


def checked(params: dict, label: str, overrides: Callable[[], Mapping[str, Any]]) -> dict:
    """params.yaml's content with `overrides()` set, checked as a whole; any error, reading the
    overrides included, exits naming `label`."""
    try:
        return config.overridden(params, overrides(), "its params")
    except ConfigError as exc:
        raise ConfigError(f"{label}: {exc}") from None


def checked_base(params_file: Path, model: str) -> dict:
    """The params file's content, once it and the model's name are checked."""
    raw = config.read_params_file(params_file)
    config.parse_params(raw, source=str(params_file)).model(model)
    return raw


def check_validation_split(data: Path) -> None:
    """Selection reads the validation split: prepared data without one is refused."""
    if not read_summary(data).get("counts", {}).get("val", {}).get("total", 0):
        raise StudyError(
            f"{data} has no validation split to choose on: prepare it with data.val_size > 0"
        )


def overridden(params: dict, variant: str, label: str = "variant") -> dict:
    """params.yaml's content with the variant's `key=value` overrides applied (values as YAML);
    `base` is no override."""
    items = (item for item in variant.split() if item != "base")
    return checked(params, f"{label} {variant!r}", lambda: config.parse_overrides(items))


def with_recipe(params: dict, recipe: str, folder: Path) -> dict:
    """params.yaml's content with a recipe's values set: a `.yaml` path, or a name in `folder`."""
    return checked(params, f"--recipe {recipe!r}", lambda: read_recipe(recipe_file(recipe, folder)))


def checked_variants(
    base: dict,
    variants: list[str],
    shared: str = "",
    recipe: str = "",
    recipes: Path = ROOT / "recipes",
) -> dict[str, dict]:
    """Each variant's full params (`recipe`'s values first, then the `shared` overrides), all
    validated before any training starts."""
    if len(set(variants)) < len(variants):
        raise ConfigError(f"each variant must differ from the others, got {variants}")
    common = with_recipe(base, recipe, recipes) if recipe else base
    common = overridden(common, shared, "--base") if shared else common
    return {variant: overridden(common, variant) for variant in variants}


class ArgumentFileParser(argparse.ArgumentParser):
    """`@FILE` holds one argument per line (an option and its value may share it); blank lines,
    `#` comment lines and ` #` comments at the end of a line are skipped."""

    def convert_arg_line_to_args(self, arg_line: str) -> list[str]:
        line = arg_line.partition(" #")[0].strip()
        if not line or line.startswith("#"):
            return []
        option_then_value = line.startswith("-") and "=" not in line.split()[0]
        return line.split(None, 1) if option_then_value else [line]


def curve(live: Path) -> list[float]:
    """Validation accuracy per epoch, as DVCLive logged it."""
    path = live / "plots" / "metrics" / "val" / "acc.tsv"
    if not path.exists():
        return []
    with path.open() as f:
        return [float(row["acc"]) for row in csv.DictReader(f, delimiter="\t")]


def launch(folder: Path, params: dict, variant: str, model: str, data: Path) -> subprocess.Popen:
    """Start one variant's training in `folder`, logging to its train.log."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (folder / "variant.txt").write_text(variant + "\n")
    command = [
        sys.executable,
        "-m",
        "cifar_study.stages.train",
        "--model",
        model,
        "--params",
        str(folder / "params.yaml"),
        "--data",
        str(data),
        "--out",
        str(folder / "model"),
        "--checkpoint",
        str(folder / "last.pt"),
        "--live",
        str(folder / "live"),
    ]
    with (folder / "train.log").open("w") as log:  # the child keeps its own handle
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


class Stopped(Exception):
    """SIGTERM or Ctrl-C arrived while variants were running."""


def _stop(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not cut the report
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise Stopped


def run_pool(
    starts: dict[str, Callable[[], subprocess.Popen]],
    at_once: int,
    budget_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[dict[str, subprocess.Popen], bool]:
    """Run the `starts` in order, at most `at_once` at a time, until all end or `budget_s` runs
    out; stop the ones still running then. Returns the processes started (not started: absent)
    and whether a signal stopped the pool early. Variants still running get SIGTERM, and 30 s
    later SIGKILL."""
    waiting = list(starts)
    runs: dict[str, subprocess.Popen] = {}
    deadline = clock() + budget_s
    handlers = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    stopped = False
    try:
        while clock() < deadline:
            running = sum(p.poll() is None for p in runs.values())
            while waiting and running < at_once:
                variant = waiting.pop(0)
                runs[variant] = starts[variant]()
                running += 1
            if not running:
                break
            sleep(1)
    except Stopped:
        stopped = True
    finally:
        for process in runs.values():
            if process.poll() is None:
                process.terminate()
        for process in runs.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return runs, stopped


def report(
    plans: dict[str, dict], folders: dict[str, Path], runs: dict[str, subprocess.Popen]
) -> dict[str, float]:
    """Print each variant's epochs and validation accuracy; return the final accuracy of those
    that finished (exit 0 with a curve)."""
    width = max(len("variant"), *map(len, plans))
    print(f"{'variant':{width}} {'epochs':>6} {'final val':>9} {'best val':>9}  exit")
    finished: dict[str, float] = {}
    for variant in plans:
        process = runs.get(variant)
        accs = curve(folders[variant] / "live") if process else []
        final, best = (f"{accs[-1]:.2%}", f"{max(accs):.2%}") if accs else ("-", "-")
        status = process.returncode if process else "not started"
        print(f"{variant:{width}} {len(accs):6} {final:>9} {best:>9}  {status}")
        if process and process.returncode == 0 and accs:
            finished[variant] = accs[-1]
    return finished


def build_parser() -> ArgumentFileParser:
    """The command line, `@FILE` arguments included."""
    parser = ArgumentFileParser(description=__doc__.splitlines()[0], fromfile_prefix_chars="@")
    parser.add_argument("variants", nargs="+", help="'key=value ...' overrides per variant")
    parser.add_argument("--data", type=Path, required=True, help="prepared data with a val split")
    parser.add_argument("--out", type=Path, required=True, help="folder for each variant's run")
    parser.add_argument("--model", default="resnet")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument(
        "--recipe", default="", help="a recipe to start from: a name in --recipes, or a .yaml path"
    )
    parser.add_argument("--recipes", type=Path, default=ROOT / "recipes", help="recipe folder")
    parser.add_argument("--base", default="", help="'key=value ...' overrides for every variant")
    parser.add_argument("--parallel", type=int, default=0, help="most variants at once; 0: all")
    parser.add_argument("--budget-s", type=float, default=3600.0)
    parser.add_argument(
        "--apply-best", type=Path, help="write the best finished variant's params here"
    )
    return parser


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.parallel < 0:
        parser.error(f"--parallel must be 0 (all) or a positive count, got {args.parallel}")

    base = checked_base(args.params, args.model)
    plans = checked_variants(base, args.variants, args.base, args.recipe, args.recipes)
    check_validation_split(args.data)
    folders = {variant: args.out / f"v{index}" for index, variant in enumerate(plans)}
    starts = {
        variant: functools.partial(
            launch, folders[variant], plans[variant], variant, args.model, args.data
        )
        for variant in plans
    }
    runs, stopped = run_pool(starts, args.parallel or len(plans), args.budget_s)
    finished = report(plans, folders, runs)
    if stopped:
        raise SystemExit("stopped by a signal: the table above is what the variants logged")
    if not finished:
        raise SystemExit(
            "no variant finished (the budget ran out, or each failed): the table above is what "
            f"they logged; each one's train.log under {args.out} says why"
        )
    if args.apply_best:
        chosen = max(finished, key=finished.__getitem__)  # the first of equals
        said = f"chosen on validation: {chosen} ({finished[chosen]:.2%})"
        if plans[chosen] == base and args.apply_best.resolve() == args.params.resolve():
            print(f"{said}: {args.apply_best} stays as it is")  # keeps its comments
        else:
            with atomic_path(args.apply_best) as tmp:
                tmp.write_text(yaml.safe_dump(plans[chosen], sort_keys=False))
            print(f"{said} -> {args.apply_best}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
