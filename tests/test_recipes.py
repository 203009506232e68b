"""Named recipes: the study's resolves to exactly what its code did, and bad recipes are refused."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from cifar_study import recipes

ROOT = Path(__file__).resolve().parents[1]
# `recipes run short5` with the committed recipes and params.
RUN_SHORT5 = [
    "run",
    "short5",
    "--recipes",
    str(ROOT / "recipes"),
    "--params",
    str(ROOT / "params.yaml"),
]

# Read from the study's train.py (see docs/study-recipe.md).
STUDY = {
    "seed": 42,
    "epochs": 300,
    "batch_size": 128,
    "drop_last": False,
    "optimizer": "sgd",
    "lr": 0.1,
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 5e-4,
    "schedule": "cosine",
    "schedule_per": "epoch",
    "warmup_epochs": 0.0,
    "mixup_alpha": 0.2,
    "mixup_decay": True,
    "ema_decay": 0.0,
    "crop_padding": 4,
    "flip": True,
    "color_jitter": 0.2,
    "rotation": 15.0,
    "random_erasing": 0.2,
    "cutout": 0,
    "init": "pytorch",
    "precision": "fp32",
}


def test_the_study_recipe_resolves_to_the_studys_values() -> None:
    params = recipes.resolve(ROOT / "params.yaml", recipes.read_recipe(ROOT / "recipes/study.yaml"))
    for key, value in STUDY.items():
        assert getattr(params, key) == value, key
    # 0.1/9 on each wrong class and 0.9 on the right one: torch's label_smoothing = 1/9.
    assert params.label_smoothing == pytest.approx(1 / 9, abs=1e-15)
    resnet = params.model("resnet").settings
    assert resnet.dropout == 0.2
    assert resnet.width == 32 and resnet.blocks == (2, 2, 2, 2)
    assert params.data.val_size == 0
    assert params.data.mean == (0.4914, 0.4822, 0.4465)
    assert params.data.std == (0.2470, 0.2435, 0.2616)


def read_by_dvc(argument: str) -> tuple[str, object]:
    """What `dvc exp run -S argument` sets: the key and value Hydra's override parser reads."""
    override = OverridesParser.create().parse_override(argument)
    assert not override.is_sweep_override(), argument
    return override.key_or_group, override.value()


@pytest.mark.parametrize("name", ["study", "short5", "short20"])
def test_every_set_argument_reads_back_as_the_recipes_value(name: str) -> None:
    recipe = recipes.read_recipe(ROOT / "recipes" / f"{name}.yaml")
    arguments = recipes.set_arguments(recipe)
    assert arguments[::2] == ["-S"] * len(recipe)
    for argument, (key, value) in zip(arguments[1::2], recipe.items(), strict=True):
        assert read_by_dvc(argument) == (key, value)


@pytest.mark.parametrize(
    "value",
    ["/data/a b.tgz", "/data/a,b=c (1).tgz", "~/cifar.tgz", "it's", "1e5", "true", "", None, False],
)
def test_a_value_that_hydra_would_misread_is_quoted(value: object) -> None:
    argument = recipes.set_argument("data.source", value)
    read = read_by_dvc(argument)[1]
    assert read == value and type(read) is type(value)


def test_show_prints_one_dvc_exp_run_line(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "show",
        "study",
        "--recipes",
        str(ROOT / "recipes"),
        "--params",
        str(ROOT / "params.yaml"),
    ]
    assert recipes.main([*argv, "--", "--queue"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("dvc exp run -n study -S seed=42 ")
    assert line.endswith(" --queue") and "-S init=pytorch" in line


def test_set_changes_the_recipe_for_one_run_under_its_own_name(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [
        "show",
        "short5",
        "--recipes",
        str(ROOT / "recipes"),
        "--params",
        str(ROOT / "params.yaml"),
    ]
    sets = ["--set", "data.val_size=0", "--set", "lr=0.3", "--name", "short5-all"]
    assert recipes.main([*argv, *sets, "--", "evaluate@resnet"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("dvc exp run -n short5-all -S epochs=5 ")
    assert line.endswith(" -S data.val_size=0 evaluate@resnet")
    assert " -S batch_size=128 -S lr=0.3 -S warmup_epochs=1 " in line  # replaced, in place


def test_run_starts_this_interpreters_dvc(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    started = []
    monkeypatch.setattr(
        recipes.subprocess,
        "run",
        lambda command, env: started.append((command, env)) or FinishedRun(),
    )
    assert recipes.main(RUN_SHORT5) == 0
    [(command, env)] = started
    assert command[:5] == [sys.executable, "-m", "dvc", "exp", "run"]
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)  # its `python`
    assert capsys.readouterr().out.startswith("running: dvc exp run -n short5 ")


class FinishedRun:
    """What subprocess.run returns for a command that succeeded."""

    returncode = 0


@pytest.fixture
def no_dvc(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test, rather than start an experiment, if a refused input reached DVC."""
    monkeypatch.setattr(recipes.subprocess, "run", lambda *a, **k: pytest.fail("DVC started"))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--set", "data.val_size=2"], "data.val_size = 2 is not allowed"),
        (["--set", "lrr=0.1"], "params.yaml has no key 'lrr'"),
        (["--set", "lr"], "'lr': expected key=value"),
        (["--set", "=0.1"], "expected key=value"),
        (["--set", "lr=[0.1"], "cannot read the value"),
        (["--set", "lr=.inf"], "lr = inf must be a finite number"),
        (["--set", "train_fraction={resnet: 0.5}"], "give each key of a section dotted"),
        (["--set", "seed=1", "--set", "seed=2"], "seed is given twice"),
        (["--name", ""], "--name '': use letters"),
        (["--name", "a/b"], "--name 'a/b': use letters"),
        (["--", "-S", "lr=-1"], "'-S' after --: give values with --set"),
        (["--", "--queue", "--set", "lr=-1"], "'--set' after --"),
        (["--", "-n", "other"], "'-n' after --"),
    ],
)
def test_a_bad_set_or_name_is_refused_before_dvc_starts(
    capsys: pytest.CaptureFixture[str], no_dvc: None, arguments: list[str], message: str
) -> None:
    assert recipes.main([*RUN_SHORT5, *arguments]) == 1
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("lr: -1\n", "lr = -1 is not allowed"),
        ("lrr: 0.1\n", "params.yaml has no key 'lrr'"),
        ("resnet.depth: 3\n", "params.yaml has no key 'resnet.depth'"),
        ("[1, 2]\n", "must map params.yaml keys to values"),
        ("resnet:\n  dropout: 0.1\n", "give each key of resnet dotted"),
        ("lr: [0.1\n", "cannot read recipe"),
    ],
)
def test_a_bad_recipe_is_refused_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_dvc: None, body: str, message: str
) -> None:
    (tmp_path / "bad.yaml").write_text(body)
    argv = ["run", str(tmp_path / "bad.yaml"), "--params", str(ROOT / "params.yaml")]
    assert recipes.main(argv) == 1
    assert message in capsys.readouterr().err


def test_an_unknown_recipe_lists_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert recipes.main(["show", "nope", "--recipes", str(ROOT / "recipes")]) == 1
    assert "recipes in" in (err := capsys.readouterr().err) and "study" in err


@pytest.mark.parametrize("name", ["short5", "short20"])
def test_the_short_recipes_resolve_and_keep_the_studys_resnet(name: str) -> None:
    recipe = recipes.read_recipe(ROOT / "recipes" / f"{name}.yaml")
    params = recipes.resolve(ROOT / "params.yaml", recipe)
    assert params.epochs == int(name.removeprefix("short"))
    assert not [key for key in recipe if key.startswith(("resnet.", "densenet.", "data."))]
