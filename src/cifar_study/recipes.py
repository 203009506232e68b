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
import functools
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from cifar_study.cli import user_errors_exit
from cifar_study.config import (
    Params,
    parse_overrides,
    parse_params,
    read_params_file,
    with_overrides,
)
from cifar_study.errors import ConfigError
from cifar_study.tooling.workspace import pipeline_env


def recipe_file(recipe: str, folder: Path) -> Path:
    """The file a recipe argument names: a `.yaml` path as it is, else `<folder>/<name>.yaml`."""
    return Path(recipe) if recipe.endswith(".yaml") else folder / f"{recipe}.yaml"


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
    for key, value in raw.items():
        if isinstance(value, dict):  # it would replace the whole section, dropping its other keys
            raise ConfigError(f"{path}: give each key of {key} dotted, e.g. {key}.x: 1")
    return {str(key): value for key, value in raw.items()}


def resolve(params_file: Path, recipe: Mapping[str, Any]) -> Params:
    """params.yaml with the recipe's values set, validated as a stage would."""
    raw = read_params_file(params_file)
    parse_params(raw, source=str(params_file))  # the file alone first, so its errors name it
    return parse_params(with_overrides(raw, recipe), source=f"{params_file} with the recipe")


def set_argument(key: str, value: Any) -> str:
    """`key=value` as `dvc exp run -S` reads it back (Hydra's override grammar): plain where
    that gives `value` again, else as a quoted string; an error where neither does."""
    if isinstance(value, str):
        quoted = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        candidates = [value, quoted]
    else:
        # Validation has refused NaN and infinities already (rules.coerce).
        candidates = [json.dumps(value, separators=(",", ":"), allow_nan=False)]
    for text in candidates:
        if _reads_back(f"{key}={text}", value):
            return f"{key}={text}"
    raise ConfigError(f"{key} = {value!r} cannot be passed to `dvc exp run -S` as it is")


@functools.cache
def _dvc_parser() -> Any:
    """Hydra's override parser, which `dvc exp run -S` reads its arguments with; built once."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def _reads_back(argument: str, value: Any) -> bool:
    """Whether DVC's parser reads `argument` as a single `value`, of the same type."""
    from hydra.errors import HydraException

    try:
        override = _dvc_parser().parse_override(argument)
    except HydraException:
        return False
    if override.is_sweep_override():
        return False
    read = override.value()
    return type(read) is type(value) and read == value


def set_arguments(recipe: Mapping[str, Any]) -> list[str]:
    """`-S key=value` for every entry, each checked to read back as its value."""
    arguments = []
    for key, value in recipe.items():
        arguments += ["-S", set_argument(key, value)]
    return arguments


def refuse_unchecked(extra: list[str]) -> None:
    """Refuse params or a name given to `dvc exp run` directly, after `--`, where they would
    pass unchecked (argparse also takes `--set`, `--na`, ... for its long options)."""
    for argument in extra:
        head = argument.split("=", 1)[0]
        if head.startswith("--"):
            stands_for = len(head) > 3 and any(
                option.startswith(head) for option in ("--set-param", "--name")
            )
        else:
            stands_for = head[:2] in ("-S", "-n")
        if stands_for:
            raise ConfigError(
                f"{argument!r} after --: give values with --set key=value and the name with "
                "--name, before --, so that they are checked"
            )


def experiment_name(name: str | None, recipe_path: Path) -> str:
    """--name, or the recipe's file name; refused where git would refuse it as a ref name."""
    name = recipe_path.stem if name is None else name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or ".." in name:
        raise ConfigError(
            f"--name {name!r}: use letters, digits, '.', '_' and '-', starting with a letter "
            "or digit"
        )
    return name


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
    path = recipe_file(args.recipe, args.recipes)
    refuse_unchecked(extra)
    recipe = read_recipe(path) | parse_overrides(args.set)
    resolve(args.params, recipe)
    command = exp_run_command(experiment_name(args.name, path), recipe, extra)
    if args.action == "show":
        print(shlex.join(command))
        return 0
    print(f"running: {shlex.join(command)}", flush=True)
    # This interpreter's DVC, and its `python` for the stages: a venv need not be activated.
    return subprocess.run([sys.executable, "-m", *command], env=pipeline_env()).returncode


if __name__ == "__main__":
    sys.exit(main())
