"""params.yaml validation: every bad key, type or value is a ConfigError that names it."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from cifar_study.architectures import DenseNetSettings, ResNetSettings
from cifar_study.config import (
    SHARED_KEYS,
    DataConfig,
    Params,
    load_params,
    parse_params,
    set_dotted,
)
from cifar_study.errors import ConfigError, StudyError
from cifar_study.rules import allowed_keys

COMMITTED_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def test_committed_params_validate_and_match_the_file() -> None:
    params = load_params(COMMITTED_PARAMS)
    raw = yaml.safe_load(COMMITTED_PARAMS.read_text())
    assert isinstance(params, Params)
    assert params.seed == raw["seed"]
    assert params.data.source == raw["data"]["source"]
    assert params.data.val_size == pytest.approx(raw["data"]["val_size"])
    assert params.data.split_seed == raw["data"]["split_seed"]


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("# nothing set\n")
    assert load_params(path) == Params()


def test_partial_section_keeps_other_defaults() -> None:
    params = parse_params({"data": {"source": "digits"}})
    assert params.data == DataConfig(source="digits")
    assert params.seed == Params().seed


TOP_LEVEL_KEYS = ", ".join(allowed_keys(Params))
DATA_KEYS = ", ".join(sorted(f.name for f in dataclasses.fields(DataConfig)))


def test_data_section_keys_are_the_documented_ones() -> None:
    assert DATA_KEYS == "mean, source, split_seed, std, val_size"


def test_each_model_has_a_top_level_section_and_no_field_of_its_own() -> None:
    keys = allowed_keys(Params)
    assert {"resnet", "densenet", "train_fraction"} <= set(keys)
    assert "architectures" not in keys
    assert not {"resnet", "densenet", "train_fraction", "architectures"} & set(SHARED_KEYS)


@pytest.mark.parametrize(
    ("raw", "key", "allowed"),
    [
        ({"sede": 1}, "sede", TOP_LEVEL_KEYS),
        ({"seed": 0, "no_such_section": {"x": 1}}, "no_such_section", TOP_LEVEL_KEYS),
        ({"data": {"val_sise": 0.2}}, "data.val_sise", DATA_KEYS),
        ({"data": {"source": "digits", "zzz": 1}}, "data.zzz", DATA_KEYS),
    ],
)
def test_unknown_key_is_named_with_the_allowed_keys(raw: dict, key: str, allowed: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"unknown key '{key}'")) as info:
        parse_params(raw, source="my-params.yaml")
    message = str(info.value)
    assert message.startswith("my-params.yaml: ")
    where = "data" if key.startswith("data.") else "the top level"
    assert message.endswith(f"allowed keys at {where}: {allowed}")


@pytest.mark.parametrize(
    ("raw", "key", "expected"),
    [
        ({"seed": "0"}, "seed", "an integer"),
        ({"seed": 1.5}, "seed", "an integer"),
        ({"seed": None}, "seed", "an integer"),
        ({"data": {"source": 5}}, "data.source", "a string"),
        ({"data": {"source": ["digits"]}}, "data.source", "a string"),
        ({"data": {"val_size": "0.1"}}, "data.val_size", "a number"),
        ({"data": {"split_seed": 2.0}}, "data.split_seed", "an integer"),
    ],
)
def test_wrong_type_is_rejected(raw: dict, key: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=rf"{re.escape(key)} = .* must be {expected}"):
        parse_params(raw)


@pytest.mark.parametrize(
    ("raw", "key", "expected"),
    [
        ({"seed": True}, "seed", "an integer"),
        ({"data": {"split_seed": False}}, "data.split_seed", "an integer"),
        ({"data": {"val_size": True}}, "data.val_size", "a number"),
    ],
)
def test_bool_is_not_a_number(raw: dict, key: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=rf"{re.escape(key)} = (True|False) must be {expected}"):
        parse_params(raw)


def test_yaml_booleans_are_rejected_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("seed: yes\n")  # YAML 1.1: `yes` is true
    with pytest.raises(ConfigError, match=r"seed = True must be an integer"):
        load_params(path)


@pytest.mark.parametrize("val_size", [1.0, 1, -0.1, 1.5])
def test_val_size_out_of_range_is_rejected(val_size: float) -> None:
    with pytest.raises(
        ConfigError, match=r"data\.val_size = .* is not allowed; expected a fraction in \[0, 1\)"
    ):
        parse_params({"data": {"val_size": val_size}})


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"seed": -1}, "seed"),
        ({"data": {"split_seed": -3}}, "data.split_seed"),
        ({"data": {"source": ""}}, "data.source"),
        ({"data": {"source": "   "}}, "data.source"),
        ({"train_fraction": {"densenet": 0}}, "train_fraction.densenet"),
        ({"train_fraction": {"resnet": 1.5}}, "train_fraction.resnet"),
        ({"color_jitter": 1.0}, "color_jitter"),
        ({"color_jitter": -0.1}, "color_jitter"),
        ({"rotation": -5}, "rotation"),
        ({"rotation": 181}, "rotation"),
        ({"crop_padding": 17}, "crop_padding"),
        ({"random_erasing": 1.5}, "random_erasing"),
        ({"schedule_per": "batch"}, "schedule_per"),
        ({"init": "xavier"}, "init"),
        ({"norm_bias_lr_scale": 0}, "norm_bias_lr_scale"),
        ({"optimizer": "lion"}, "optimizer"),
        ({"muon_lr": 0}, "muon_lr"),
        ({"muon_momentum": 1.0}, "muon_momentum"),
        ({"data": {"mean": [0.5, 0.5], "std": [0.2, 0.2, 0.2]}}, "data.mean"),
        ({"data": {"mean": [0.5, 0.5, 1.5], "std": [0.2, 0.2, 0.2]}}, "data.mean"),
        ({"data": {"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.0, 0.2]}}, "data.std"),
    ],
)
def test_other_out_of_range_values_are_rejected(raw: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^params: {re.escape(key)} = .* is not allowed"):
        parse_params(raw)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"alternating_flip": True, "flip": False}, r"so it needs flip: true; set flip: true"),
        (
            {"warmup_epochs": 5, "epochs": 5},
            r"warmup_epochs = 5(\.0)? must be smaller than epochs = 5",
        ),
        (
            {"warmup_epochs": 0.5, "schedule_per": "epoch"},
            r"warmup_epochs = 0\.5 must be a whole number of epochs when schedule_per is epoch",
        ),
    ],
)
def test_settings_that_contradict_each_other_are_rejected(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_params(raw)


@pytest.mark.parametrize(("value", "expected"), [(0, 0.0), (0.0, 0.0), (0.999, 0.999)])
def test_val_size_boundaries_and_int_accepted_for_float(value: float, expected: float) -> None:
    params = parse_params({"data": {"val_size": value}})
    assert params.data.val_size == expected
    assert type(params.data.val_size) is float


@pytest.mark.parametrize(
    ("raw", "where", "kind"),
    [
        ({"data": 3}, "data", "int"),
        ({"data": "digits"}, "data", "str"),
        ({"data": ["digits"]}, "data", "list"),
        ({"data": None}, "data", "NoneType"),
        ({"train_fraction": 0.5}, "train_fraction", "float"),
        (["seed", 0], "the top level", "list"),
        ("seed: 0", "the top level", "str"),
    ],
)
def test_non_mapping_section_is_rejected(raw: object, where: str, kind: str) -> None:
    with pytest.raises(ConfigError, match=rf"{where} must be a mapping, got {kind}$"):
        parse_params(raw)


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken-params.yaml"
    path.write_text("data:\n  source: [digits\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path} is not valid YAML")):
        load_params(path)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "no-such-params.yaml"
    with pytest.raises(ConfigError, match=re.escape(f"params file not found: {path}")):
        load_params(path)


def test_errors_from_a_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("data:\n  val_size: 2\n")
    with pytest.raises(
        ConfigError, match=rf"^{re.escape(str(path))}: data\.val_size = 2(\.0)? is not allowed"
    ):
        load_params(path)


def test_config_error_is_a_study_error() -> None:
    # The stage CLIs turn StudyError into `error: ...` and exit 1.
    assert issubclass(ConfigError, StudyError)


def test_params_are_frozen() -> None:
    params = parse_params({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.seed = 3  # type: ignore[misc]


def test_unknown_keys_of_mixed_types_give_config_error(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("data:\n  source: digits\n  1: x\n  sorce: y\n")
    with pytest.raises(ConfigError, match=r"unknown key 'data\.(1|sorce)'"):
        load_params(path)


def test_exponent_without_a_dot_is_a_number_but_nan_and_inf_are_not() -> None:
    # YAML 1.1 reads `lr: 1e-3` as the string '1e-3'.
    assert parse_params({"lr": "1e-3"}).lr == pytest.approx(0.001)
    for bad in ("inf", "nan", "fast"):
        with pytest.raises(ConfigError, match="lr"):
            parse_params({"lr": bad})


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("lr: .inf", "lr"),
        ("weight_decay: .inf", "weight_decay"),
        ("mixup_alpha: .inf", "mixup_alpha"),
        ("norm_bias_lr_scale: 1e999", "norm_bias_lr_scale"),
        ("warmup_epochs: .nan", "warmup_epochs"),
        ("data: {val_size: .nan}", "data.val_size"),
        ("data: {mean: [0.5, 0.5, 0.5], std: [0.2, -.inf, 0.2]}", "data.std[1]"),
    ],
)
def test_non_finite_numbers_are_refused_from_a_file(
    tmp_path: Path, yaml_text: str, key: str
) -> None:
    # YAML reads `.inf` and `.nan` as floats, which a `> 0` rule alone would let through.
    path = tmp_path / "params.yaml"
    path.write_text(yaml_text + "\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(key)} = .* must be a finite number"):
        load_params(path)


@pytest.mark.parametrize("device", ["cuda:x", "cuda:-1", "gpu", "cuda:"])
def test_malformed_device_is_refused(device: str) -> None:
    with pytest.raises(ConfigError, match="auto, cpu, cuda or cuda:N"):
        parse_params({"device": device})


def test_normalisation_constants_go_together() -> None:
    with pytest.raises(ConfigError, match=r"data\.mean and data\.std go together"):
        parse_params({"data": {"mean": [0.5, 0.5, 0.5]}})
    data = parse_params({"data": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2]}}).data
    assert data.mean == (0.5, 0.4, 0.3) and data.std == (0.2, 0.2, 0.2)


def test_train_fraction_is_per_model() -> None:
    params = parse_params({"train_fraction": {"densenet": 0.05}})
    assert params.model("resnet").train_fraction == 1.0
    assert params.model("densenet").train_fraction == 0.05
    with pytest.raises(ConfigError, match=r"unknown key 'train_fraction\.vgg'; allowed keys at "):
        parse_params({"train_fraction": {"vgg": 0.5}})


def test_a_model_resolves_to_its_section_and_train_fraction() -> None:
    raw = {"resnet": {"dropout": 0.2}, "densenet": {"blocks": [2, 2]}}
    params = parse_params({**raw, "train_fraction": {"resnet": 1}})
    resnet = params.model("resnet")
    assert resnet.name == "resnet" and resnet.settings == ResNetSettings(dropout=0.2)
    assert resnet.train_fraction == 1.0 and type(resnet.train_fraction) is float
    assert params.model("densenet").settings == DenseNetSettings(blocks=(2, 2))
    with pytest.raises(ConfigError, match="unknown model 'vgg'; known models: densenet, resnet"):
        params.model("vgg")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"resnet": {"width": -1}}, "resnet.width = -1 is not allowed; expected an integer > 0"),
        ({"resnet": {"blocks": [2, 0]}}, "resnet.blocks = [2, 0] is not allowed; expected a list"),
        ({"resnet": {"blocks": []}}, "resnet.blocks = [] must be a non-empty list"),
        ({"resnet": {"depth": 3}}, "unknown key 'resnet.depth'; allowed keys at resnet: blocks,"),
        ({"resnet": [32]}, "resnet must be a mapping, got list"),
        ({"densenet": {"compression": 0}}, "densenet.compression = 0 is not allowed"),
        ({"densenet": {"memory_efficient": 1}}, "densenet.memory_efficient = 1 must be true or"),
    ],
)
def test_a_bad_architecture_section_names_the_key(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match="^params.yaml: " + re.escape(message)):
        parse_params(raw, source="params.yaml")


def test_params_made_directly_are_checked_too() -> None:
    with pytest.raises(ValueError, match=r"lr = -1 is not allowed; expected a number > 0"):
        Params(lr=-1)
    with pytest.raises(ValueError, match=r"train_fraction\.resnet = 0 is not allowed"):
        Params(train_fraction={"resnet": 0, "densenet": 1.0})
    with pytest.raises(ValueError, match="train_fraction must map each of resnet, densenet"):
        Params(train_fraction={"resnet": 1.0})
    with pytest.raises(ValueError, match="resnet must be a ResNetSettings, got DenseNetSettings"):
        Params(architectures={"resnet": DenseNetSettings(), "densenet": DenseNetSettings()})


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("lrr", "params.yaml has no key 'lrr'; keys at the top level: lr, data"),
        ("data.val", "params.yaml has no key 'data.val'; keys under data: val_size, source"),
        ("lr.x", "params.yaml has no key 'lr.x': lr is a value, not a section"),
    ],
)
def test_an_unknown_override_key_lists_the_keys_where_it_was_looked_up(
    key: str, message: str
) -> None:
    params = {"lr": 0.4, "data": {"val_size": 0, "source": "digits"}}
    with pytest.raises(ConfigError) as refused:
        set_dotted(params, key, 1)
    assert str(refused.value) == message
    assert params == {"lr": 0.4, "data": {"val_size": 0, "source": "digits"}}
