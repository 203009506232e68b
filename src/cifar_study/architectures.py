"""Each model's settings, declared once: the `<model>:` section of params.yaml.

One frozen dataclass per model, its fields carrying their rules (checked however it is made),
and `SETTINGS`, the table of model names. `config` reads params.yaml's sections from the table,
`cifar_study.models` registers each builder with its class here, and model.json (`card`) records
them. Torch-free, so that the stages that only read params.yaml import no model code.

A new model: its settings class and table entry here, its module in `cifar_study/models/`
(`@register_model(name, Settings)`, imported in `models/__init__.py`), its `params.yaml`
section and `train_fraction` entry, and its name in `dvc.yaml`'s lists.
"""

from __future__ import annotations

import dataclasses

from cifar_study.errors import ConfigError
from cifar_study.rules import Checked, all_positive, fraction, positive, rule


@dataclasses.dataclass(frozen=True)
class ResNetSettings(Checked):
    """The study's ResNet: BasicBlocks per stage; channels double from `width` each stage."""

    width: int = dataclasses.field(default=32, metadata=positive("an integer"))
    blocks: tuple[int, ...] = dataclasses.field(
        default=(2, 2, 2, 2), metadata=all_positive("a list of integers > 0")
    )
    dropout: float = dataclasses.field(default=0.0, metadata=fraction())


@dataclasses.dataclass(frozen=True)
class DenseNetSettings(Checked):
    """DenseNet-BC: dense blocks of bottleneck layers joined by compressing transitions."""

    growth_rate: int = dataclasses.field(default=38, metadata=positive("an integer"))
    blocks: tuple[int, ...] = dataclasses.field(
        default=(9, 9, 9), metadata=all_positive("a list of integers > 0")
    )
    compression: float = dataclasses.field(
        default=0.5, metadata=rule(lambda v: 0 < v <= 1, "a number in (0, 1]")
    )
    bottleneck_width: int = dataclasses.field(default=4, metadata=positive("an integer"))
    dropout: float = dataclasses.field(default=0.0, metadata=fraction())
    # Recompute concatenations in the backward pass: less memory, a little more time.
    memory_efficient: bool = False


ModelSettings = ResNetSettings | DenseNetSettings

# Model name (the params.yaml section, the `--model` of the train stage) → its settings.
SETTINGS: dict[str, type[ModelSettings]] = {
    "resnet": ResNetSettings,
    "densenet": DenseNetSettings,
}


def settings_class(name: str) -> type[ModelSettings]:
    """The settings class of the model `name`; ConfigError naming the known models."""
    if name not in SETTINGS:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(sorted(SETTINGS))}")
    return SETTINGS[name]


def as_json(settings: ModelSettings) -> dict[str, object]:
    """`settings` as model.json records them: lists for tuples."""
    return {
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(settings).items()
    }
