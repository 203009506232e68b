"""The model card: model.json as typed fields, the JSON layout unchanged, bad files named."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from cifar_study.architectures import DenseNetSettings, ResNetSettings
from cifar_study.card import ConvertedFrom, ModelCard, Normalization
from cifar_study.errors import DataError

EPOCH = {"train/loss": 1.5, "train/acc": 0.5, "lr": 0.1, "epoch_time_s": 2.0, "images_per_s": 9.5}


def trained() -> dict[str, Any]:
    """model.json as the train stage writes it, keys in its order."""
    return {
        "model": "densenet",
        "architecture": {
            "growth_rate": 12,
            "blocks": [4, 4, 4],
            "compression": 0.5,
            "bottleneck_width": 4,
            "dropout": 0.0,
            "memory_efficient": False,
        },
        "classes": ["cat", "dog"],
        "normalization": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2]},
        "parameters": 10,
        "macs_per_image": 20,
        "epochs": 1,
        "ema": False,
        "final": {k: v for k, v in EPOCH.items()},
        "history": [{**EPOCH, "lr_samples": [[0.0, 0.05], [0.5, 0.1]]}],
        "train_time_s": 2.0,
        "runtime": {"device": "cpu", "precision": "fp32", "processes": 1, "torch": "2.5.1"},
        "params": {"seed": 0, "epochs": 1, "train_fraction": 0.5},
    }


def converted() -> dict[str, Any]:
    """A converted model's model.json (study_weights): no training record, its source instead."""
    return {
        "model": "resnet",
        "architecture": {"width": 32, "blocks": [2, 2, 2, 2], "dropout": 0.2},
        "classes": ["cat", "dog"],
        "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]},
        "parameters": 10,
        "macs_per_image": 20,
        "converted_from": {"checkpoint": "study.pth", "sha256": "0" * 64},
    }


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "model.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("data", [trained(), converted()], ids=["trained", "converted"])
def test_a_card_reads_back_the_json_it_was_read_from(tmp_path: Path, data: dict) -> None:
    card = ModelCard.read(write(tmp_path, data))
    assert json.dumps(card.to_json(), indent=2) == json.dumps(data, indent=2)  # order included


def test_a_trained_card_has_typed_fields(tmp_path: Path) -> None:
    card = ModelCard.read(write(tmp_path, trained()))
    assert card.architecture == DenseNetSettings(growth_rate=12, blocks=(4, 4, 4))
    assert card.classes == ("cat", "dog") and card.normalization.std == (0.2, 0.2, 0.2)
    assert card.training is not None and card.converted_from is None
    assert card.training.train_fraction == 0.5 and card.training.runtime["device"] == "cpu"


def test_a_converted_card_needs_no_training_record(tmp_path: Path) -> None:
    card = ModelCard.read(write(tmp_path, converted()))
    assert card.training is None
    assert card.converted_from == ConvertedFrom("study.pth", "0" * 64)
    assert card.architecture == ResNetSettings(dropout=0.2)


def test_a_card_made_in_python_writes_the_json_layout() -> None:
    card = ModelCard(
        model="resnet",
        architecture=ResNetSettings(dropout=0.2),
        classes=("cat", "dog"),
        normalization=Normalization((0.5, 0.5, 0.5), (0.2, 0.2, 0.2)),
        parameters=10,
        macs_per_image=20,
        converted_from=ConvertedFrom("study.pth", "0" * 64),
    )
    assert card.to_json() == converted()


def test_a_card_holds_the_settings_of_its_own_model() -> None:
    with pytest.raises(ValueError, match="model 'resnet' cannot hold DenseNetSettings"):
        ModelCard(
            model="resnet",
            architecture=DenseNetSettings(),
            classes=("cat",),
            normalization=Normalization((0.5,) * 3, (0.2,) * 3),
            parameters=1,
            macs_per_image=1,
        )


def edited(data: dict[str, Any], dotted: str, value: Any = None, drop: bool = False) -> dict:
    data = copy.deepcopy(data)
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        node = node[part]
    if drop:
        del node[last]
    else:
        node[last] = value
    return data


@pytest.mark.parametrize(
    "dropped",
    ["classes", "history", "normalization", "normalization.std", "runtime.device", "params"],
)
def test_a_card_that_lacks_a_field_names_the_file_and_the_field(
    tmp_path: Path, dropped: str
) -> None:
    path = write(tmp_path, edited(trained(), dropped, drop=True))
    with pytest.raises(DataError, match=f"lacks '{dropped}'") as error:
        ModelCard.read(path)
    assert str(error.value).startswith(str(path))


def test_without_a_source_the_training_record_is_required(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="lacks 'epochs'"):
        ModelCard.read(write(tmp_path, edited(converted(), "converted_from", drop=True)))


@pytest.mark.parametrize(
    ("dotted", "value", "message"),
    [
        ("parameters", "10", "'parameters' must be an integer, got '10'"),
        ("ema", 0, "'ema' must be true or false"),
        ("classes", ["cat", 3], "'classes' must be a list of strings"),
        ("normalization", [0.5], "'normalization' must be a JSON object"),
        ("history", {"a": 1}, "'history' must be a list of objects"),
        ("model", "vgg", "model 'vgg' is not one this code knows (densenet, resnet)"),
        ("architecture.growth_rate", -1, "architecture.growth_rate = -1 is not allowed"),
        ("architecture.depth", 3, "unknown key 'architecture.depth'"),
    ],
)
def test_a_card_with_a_wrong_field_names_it(
    tmp_path: Path, dotted: str, value: Any, message: str
) -> None:
    path = write(tmp_path, edited(trained(), dotted, value))
    with pytest.raises(DataError) as error:
        ModelCard.read(path)
    assert str(error.value).startswith(str(path)) and message in str(error.value)


@pytest.mark.parametrize("text", ["{", "[1, 2]"])
def test_a_file_that_is_no_card_is_a_data_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "model.json"
    path.write_text(text)
    with pytest.raises(DataError, match="run the train stage"):
        ModelCard.read(path)


def test_a_missing_card_says_to_train_first(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="run the train stage first"):
        ModelCard.read(tmp_path / "model.json")
