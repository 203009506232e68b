"""Named recipes: committed sets of params.yaml values, run as one DVC experiment.

    python -m cifar_study.recipes show study      # print the `dvc exp run -S ...` line
    python -m cifar_study.recipes run study       # run it (extra dvc args after --, e.g. --queue)
    python -m cifar_study.recipes run short5 --set data.val_size=0 --name short5-all

A recipe is `recipes/<name>.yaml`: params.yaml keys (dotted for sections) mapped to values. It is
checked against params.yaml before anything runs, so a misspelt key or an out-of-range value is
an error here rather than halfway through an experiment; so are `--set` values, which change a
recipe for one run (e.g. all 50,000 training images once the choices are made on validation).
The experiment itself is a plain `dvc exp run -n <name> -S key=value ...`: DVC records every
value, and `dvc params diff` shows them.
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from cifar_study.cli import user_errors_exit
from cifar_study.config import Params, parse_params, set_dotted
from cifar_study.errors import ConfigError


def read_recipe(path: Path) -> dict[str, Any]:
    """The key → value mapping of a recipe file."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        known = ", ".join(sorted(p.stem for p in path.parent.glob("*.yaml"))) or "none"
        raise ConfigError(f"no recipe file {path}; recipes in {path.parent}: {known}") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read recipe {path}: {exc}") from None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path} must map params.yaml keys to values")
    return {str(key): value for key, value in raw.items()}


def resolve(params_file: Path, recipe: Mapping[str, Any]) -> Params:
    """params.yaml with the recipe's values set, validated as a stage would."""
    raw = yaml.safe_load(params_file.read_text()) or {}
    merged = copy.deepcopy(raw)
    for key, value in recipe.items():
        set_dotted(merged, key, value)
    return parse_params(merged, source=f"{params_file} with the recipe")


def set_arguments(recipe: Mapping[str, Any]) -> list[str]:
    """`-S key=value` for every entry; values written as compact JSON, which DVC's (Hydra's)
    override grammar reads back as the same numbers, booleans, strings and lists."""
    arguments = []
    for key, value in recipe.items():
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        arguments += ["-S", f"{key}={text}"]
    return arguments


def parse_set(items: list[str]) -> dict[str, Any]:
    """`--set key=value` items as a key → value mapping, the values read as YAML (as DVC reads
    `-S` values)."""
    pairs = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set data.val_size=0")
        try:
            pairs[key] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: cannot read the value ({exc})") from None
    return pairs


def exp_run_command(name: str, recipe: Mapping[str, Any], extra: list[str]) -> list[str]:
    """The `dvc exp run` command line that runs `recipe` as an experiment called `name`."""
    return ["dvc", "exp", "run", "-n", name, *set_arguments(recipe), *extra]


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("show", "run"), help="print the command, or run it")
    parser.add_argument("recipe", help="a name in --recipes (e.g. study) or a .yaml path")
    parser.add_argument("--recipes", type=Path, default=Path("recipes"), help="recipe folder")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a params.yaml key for this run, over the recipe's value if it has one",
    )
    parser.add_argument("--name", help="the experiment's name (default: the recipe's)")
    parser.epilog = "Arguments after -- go to `dvc exp run` (e.g. -- --queue)."
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: len(argv) - len(extra) - (1 if "--" in argv else 0)])
    path = (
        Path(args.recipe) if args.recipe.endswith(".yaml") else args.recipes / f"{args.recipe}.yaml"
    )
    recipe = read_recipe(path) | parse_set(args.set)
    resolve(args.params, recipe)
    command = exp_run_command(args.name or path.stem, recipe, extra)
    if args.action == "show":
        print(shlex.join(command))
        return 0
    print(f"running: {shlex.join(command)}", flush=True)
    return subprocess.run(command).returncode


if __name__ == "__main__":
    sys.exit(main())
