"""A trained model's card, `model.json`: what was built, on which classes, how it was trained.

Written by the train stage (and by `study_weights` for converted weights); read by evaluation,
prediction and comparison, which see typed fields, never the JSON's keys. Reading checks every
field it uses and names the file and the field in the error. The JSON layout is the one the
pipeline has always written: the training record's fields sit beside the card's, not nested.
Torch-free, so that comparing models imports no model code.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cifar_study.architectures import SETTINGS, ModelSettings, as_json
from cifar_study.errors import ConfigError, DataError
from cifar_study.rules import build


@dataclasses.dataclass(frozen=True)
class Normalization:
    """Per-channel mean and std on the 0..1 scale: what the model's input was normalised with."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class TrainingRecord:
    """How the train stage made the weights; converted weights have none."""

    epochs: int
    ema: bool  # whether the weights are the exponential moving average
    final: dict[str, float]  # the last epoch's metrics, its lr samples left out
    history: list[dict[str, Any]]  # every epoch's metrics, lr samples included
    train_time_s: float
    runtime: dict[str, Any]  # what `device: auto` and `precision: auto` became, the torch
    params: dict[str, Any]  # the recipe: the shared keys and the model's train_fraction

    @property
    def train_fraction(self) -> float:
        return self.params["train_fraction"]


@dataclasses.dataclass(frozen=True)
class ConvertedFrom:
    """The checkpoint that converted weights came from (`study_weights`)."""

    checkpoint: str
    sha256: str


@dataclasses.dataclass(frozen=True)
class ModelCard:
    """Everything `model.json` holds: enough to rebuild the model, normalise its input and
    report on it."""

    model: str  # the registered name
    architecture: ModelSettings
    classes: tuple[str, ...]
    normalization: Normalization
    parameters: int
    macs_per_image: int
    training: TrainingRecord | None = None
    converted_from: ConvertedFrom | None = None

    def __post_init__(self) -> None:
        declared = SETTINGS.get(self.model)
        if declared is None or not isinstance(self.architecture, declared):
            raise ValueError(
                f"a card for model {self.model!r} cannot hold {type(self.architecture).__name__}"
            )

    def to_json(self) -> dict[str, Any]:
        """The `model.json` mapping, its keys in the order the pipeline has always used."""
        data: dict[str, Any] = {
            "model": self.model,
            "architecture": as_json(self.architecture),
            "classes": list(self.classes),
            "normalization": {
                "mean": list(self.normalization.mean),
                "std": list(self.normalization.std),
            },
            "parameters": self.parameters,
            "macs_per_image": self.macs_per_image,
        }
        if self.training is not None:
            data.update(dataclasses.asdict(self.training))
        if self.converted_from is not None:
            data["converted_from"] = dataclasses.asdict(self.converted_from)
        return data

    @classmethod
    def from_json(cls, data: Any, path: Path) -> ModelCard:
        """The card in `data`, read from `path`; DataError naming the file and the first field
        that is missing or of the wrong kind. A training record is required unless the weights
        were converted."""
        fields = _Fields(path)
        data = fields.mapping(data)
        model = fields.get(data, "model", _is(str), "a string")
        if model not in SETTINGS:
            raise DataError(
                f"{path}: model {model!r} is not one this code knows "
                f"({', '.join(sorted(SETTINGS))}); rerun the train stage"
            )
        try:
            architecture = build(
                SETTINGS[model], fields.get(data, "architecture"), "architecture.", str(path)
            )
        except ConfigError as exc:
            raise DataError(f"{exc}; rerun the train stage") from None
        norm = fields.mapping(fields.get(data, "normalization"), "normalization")
        converted = data.get("converted_from")
        return cls(
            model=model,
            architecture=architecture,
            classes=tuple(fields.get(data, "classes", _list_of(_is(str)), "a list of strings")),
            normalization=Normalization(
                mean=tuple(
                    fields.get(norm, "mean", _numbers, "a list of numbers", "normalization.")
                ),
                std=tuple(fields.get(norm, "std", _numbers, "a list of numbers", "normalization.")),
            ),
            parameters=fields.get(data, "parameters", _integer, "an integer"),
            macs_per_image=fields.get(data, "macs_per_image", _integer, "an integer"),
            training=None if converted is not None else _training(fields, data),
            converted_from=None if converted is None else _converted(fields, converted),
        )

    @classmethod
    def read(cls, path: Path) -> ModelCard:
        """The card in the `model.json` file at `path`."""
        try:
            data = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: {exc}; run the train stage first") from None
        return cls.from_json(data, path)


def _training(fields: _Fields, data: Mapping[str, Any]) -> TrainingRecord:
    record = TrainingRecord(
        epochs=fields.get(data, "epochs", _integer, "an integer"),
        ema=fields.get(data, "ema", _is(bool), "true or false"),
        final=fields.get(data, "final", _is(dict), "an object"),
        history=fields.get(data, "history", _list_of(_is(dict)), "a list of objects"),
        train_time_s=fields.get(data, "train_time_s", _number, "a number"),
        runtime=fields.get(data, "runtime", _is(dict), "an object"),
        params=fields.get(data, "params", _is(dict), "an object"),
    )
    # What the comparison reads of them.
    for key in ("device", "precision"):
        fields.get(record.runtime, key, _is(str), "a string", within="runtime.")
    fields.get(record.params, "train_fraction", _number, "a number", within="params.")
    return record


def _converted(fields: _Fields, converted: Any) -> ConvertedFrom:
    source = fields.mapping(converted, "converted_from")
    return ConvertedFrom(
        checkpoint=fields.get(source, "checkpoint", _is(str), "a string", within="converted_from."),
        sha256=fields.get(source, "sha256", _is(str), "a string", within="converted_from."),
    )


class _Fields:
    """Reads the fields of one model.json, naming the file and the field when one is wrong."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get(
        self,
        data: Mapping[str, Any],
        name: str,
        check: Callable[[Any], bool] = lambda _: True,
        expected: str = "",
        within: str = "",
    ) -> Any:
        if name not in data:
            raise DataError(f"{self.path} lacks '{within}{name}'; rerun the train stage")
        value = data[name]
        if not check(value):
            raise DataError(
                f"{self.path}: '{within}{name}' must be {expected}, got {_short(value)}; "
                "rerun the train stage"
            )
        return value

    def mapping(self, value: Any, name: str = "") -> Mapping[str, Any]:
        """`value`, the field `name` (the whole file without one), if it is a JSON object."""
        if not isinstance(value, Mapping):
            what = f"'{name}'" if name else "the file"
            raise DataError(
                f"{self.path}: {what} must be a JSON object, got {_short(value)}; "
                "rerun the train stage"
            )
        return value


def _is(kind: type) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, kind)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _list_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, list) and all(check(item) for item in value)


_numbers = _list_of(_number)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
