"""The CI reproduction command: profiles, expectations files, and a real run on digits (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cifar_study.config import parse_params, set_dotted
from cifar_study.errors import ConfigError
from cifar_study.recipes import read_recipe
from cifar_study.tooling import reproduce
from cifar_study.tooling.workspace import PARTIAL_RUN, PROJECT_ROOT

DECLARED_METRICS = {
    path
    for stage in yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"].values()
    for item in stage.get("foreach", [None])
    for entry in (stage["do"] if "foreach" in stage else stage).get("metrics", [])
    for path in [next(iter(entry)).replace("${item}", str(item))]
}


@pytest.mark.parametrize("profile", sorted(reproduce.PROFILES))
def test_every_profile_gives_valid_params(profile: str, tmp_path: Path) -> None:
    source = tmp_path if profile in reproduce.NEEDS_SOURCE else None
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    for key, value in reproduce.overrides_for(profile, source).items():
        set_dotted(params, key, value)
    parse_params(params)


@pytest.mark.parametrize("profile", sorted(reproduce.PROFILES))
def test_every_profile_has_expectations_for_both_models(profile: str) -> None:
    expectations = json.loads((reproduce.EXPECTED_DIR / f"{profile}.json").read_text())
    assert set(expectations) <= DECLARED_METRICS
    # Validation metrics are gated where the profile keeps a validation split, and only there:
    # a gated metric the run cannot log would fail the gate as missing.
    has_val = reproduce.PROFILES[profile].get("data.val_size") != 0
    for model in ("resnet", "densenet"):
        assert "test.acc" in expectations[f"metrics/eval/{model}/metrics.json"]
        train_metrics = expectations[f"metrics/train/{model}/metrics.json"]
        assert ("val.acc" in train_metrics) == has_val
        assert "train.loss" in train_metrics
    for metrics in expectations.values():
        for spec in metrics.values():
            assert set(spec) == {"expected", "tolerance"} and spec["tolerance"] >= 0


@pytest.mark.parametrize(
    ("profile", "source", "message"),
    [
        ("imagenet", None, "unknown profile 'imagenet'; known: cifar10-cpu, digits"),
        ("cifar10-cpu", None, "needs --source"),
        ("cifar10-cpu", Path("no/such/copy.tar.gz"), "no/such/copy.tar.gz does not exist"),
        ("digits", Path("."), "brings its own data; drop --source"),
    ],
)
def test_bad_profile_or_source_is_refused(profile: str, source: Path | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        reproduce.overrides_for(profile, source)


def test_source_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "copy.tar.gz").touch()
    monkeypatch.chdir(tmp_path)
    overrides = reproduce.overrides_for("cifar10-cpu", Path("copy.tar.gz"))
    assert overrides["data.source"] == str(tmp_path / "copy.tar.gz")


def test_ci_reproduces_the_short_recipe_on_real_data() -> None:
    recipe = read_recipe(PROJECT_ROOT / "recipes" / "short5.yaml")
    overrides = reproduce.overrides_for("cifar10-cpu", Path(__file__))
    assert {key: overrides[key] for key in recipe} == recipe


@pytest.mark.parametrize("profile", sorted(reproduce.PROFILES))
def test_every_profile_pins_fp32_so_its_numerics_do_not_depend_on_the_cpu(profile: str) -> None:
    # `precision: auto` is bf16 on CPUs with AVX-512 BF16 or AMX and fp32 elsewhere.
    assert reproduce.PROFILES[profile]["precision"] == "fp32"


def test_bad_expectations_fail_before_any_workspace_is_made(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "expected.json").write_text("{}")
    dest = tmp_path / "ws"
    args = ["digits", "--dest", str(dest), "--expected", str(tmp_path / "expected.json")]
    assert reproduce.main(args) == 1
    assert "expected a non-empty mapping" in capsys.readouterr().err
    assert not dest.exists()


def test_seed_makes_a_perturbed_run_that_cannot_update_expectations(
    capsys: pytest.CaptureFixture,
) -> None:
    assert reproduce.main(["digits", "--seed", "3", "--update-expected"]) == 1
    assert "records the profile's own seed; drop --seed" in capsys.readouterr().err


def test_a_partial_run_cannot_update_expectations(capsys: pytest.CaptureFixture) -> None:
    assert reproduce.main(["digits", "--stage", "evaluate@densenet", "--update-expected"]) == 1
    assert "records every stage's metrics; drop --stage" in capsys.readouterr().err


def test_an_unknown_stage_is_refused_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    dest = tmp_path / "ws"
    assert reproduce.main(["digits", "--stage", "evaluate@vgg", "--dest", str(dest)]) == 1
    err = capsys.readouterr().err
    assert "--stage evaluate@vgg: no such stage; known: " in err and "evaluate@densenet" in err
    assert not dest.exists()


@pytest.mark.slow
def test_a_partial_perturbed_run_reruns_one_models_stages_and_gates_their_metrics(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["digits", "--seed", "1", "--stage", "evaluate@densenet", "--dest", str(tmp_path)]
    reproduce.main(args)  # a perturbed run: its gate may fail
    out = capsys.readouterr().out
    assert "4 stages (evaluate@densenet and those it depends on) re-run" in out
    assert "metrics/eval/densenet/metrics.json" in out
    assert "resnet" not in out.split("expected: ")[1]  # the ResNet's metrics are not gated
    assert not (tmp_path / "metrics" / "eval" / "resnet").exists()
    assert (tmp_path / PARTIAL_RUN).read_text() == "evaluate@densenet\n"  # for tolerances


@pytest.mark.slow
def test_digits_reproduction_reruns_every_stage_and_meets_its_expectations(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert reproduce.main(["digits", "--dest", str(tmp_path / "ws")]) == 0
    out = capsys.readouterr().out
    expectations = json.loads((reproduce.EXPECTED_DIR / "digits.json").read_text())
    assert "all 9 stages re-run" in out
    assert f"all {sum(map(len, expectations.values()))} metrics within tolerance" in out
