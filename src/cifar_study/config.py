"""Read params.yaml once into frozen dataclasses, rejecting anything a stage could not honour.

DVC checks neither types nor ranges (`dvc exp run -S lr=-1` is accepted), so every key is
validated here, at the edge, before any stage touches data. Errors name the dotted key and say
what is allowed.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from cifar_study.architectures import SETTINGS, ModelSettings, settings_class
from cifar_study.errors import ConfigError
from cifar_study.rules import (
    Checked,
    build,
    fraction,
    keyed,
    non_negative,
    one_of,
    positive,
    rule,
    sections,
)


def _channels(check: Callable[[float], bool], allowed: str) -> dict[str, Any]:
    """null, or one number per RGB channel, each satisfying `check`."""
    return rule(
        lambda v: v is None or (len(v) == 3 and all(check(x) for x in v)),
        f"null or a list of 3 numbers, each {allowed}",
    )


@dataclasses.dataclass(frozen=True)
class DataConfig(Checked):
    """Where the raw data comes from and how the validation split is drawn."""

    # "cifar10" (official archive over https), "digits" (offline, from scikit-learn), or a path
    # to a local archive or image-folder tree.
    source: str = dataclasses.field(
        default="cifar10",
        metadata=rule(lambda v: v.strip() != "", "'cifar10', 'digits' or a local path"),
    )
    # Fraction of the training set held out, stratified, for validation; 0 disables it.
    val_size: float = dataclasses.field(
        default=0.1, metadata=rule(lambda v: 0 <= v < 1, "a fraction in [0, 1)")
    )
    split_seed: int = dataclasses.field(default=0, metadata=non_negative("an integer"))
    # Per-channel normalisation on the 0..1 scale; null: measured on the train split.
    mean: tuple[float, ...] | None = dataclasses.field(
        default=None, metadata=_channels(lambda v: 0 <= v <= 1, "in [0, 1]")
    )
    std: tuple[float, ...] | None = dataclasses.field(
        default=None, metadata=_channels(lambda v: v > 0, "> 0")
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.mean is None) != (self.std is None):
            raise ConfigError("data.mean and data.std go together: set both or neither (null)")

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """(mean, std) when params.yaml gives them; None: measure them on the train split."""
        mean, std = self.mean, self.std
        return None if mean is None or std is None else (mean, std)


OPTIMIZERS = ("sgd", "muon", "adam", "adamw")
SCHEDULES = ("onecycle", "cosine", "step", "constant")
SCHEDULE_UNITS = ("step", "epoch")
INITS = ("he", "pytorch")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


# The corruptions of CIFAR-10-C that need no image assets (Hendrycks & Dietterich, 2019), made
# by evaluation/corruptions.py, and their severities.
CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "gaussian_blur",
    "brightness",
    "contrast",
    "saturate",
    "jpeg_compression",
    "pixelate",
)
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)


def _distinct_among(choices: tuple, allowed: str) -> dict[str, Any]:
    """A non-empty list of distinct entries, each one of `choices`."""
    return rule(lambda v: len(set(v)) == len(v) and all(x in choices for x in v), allowed)


@dataclasses.dataclass(frozen=True)
class RobustnessConfig(Checked):
    """Which corrupted copies of the test split `robustness@<model>` scores each model on."""

    corruptions: tuple[str, ...] = dataclasses.field(
        default=CORRUPTIONS,
        metadata=_distinct_among(
            CORRUPTIONS, "a list of distinct names among " + ", ".join(CORRUPTIONS)
        ),
    )
    severities: tuple[int, ...] = dataclasses.field(
        default=SEVERITIES,
        metadata=_distinct_among(SEVERITIES, "a list of distinct integers in 1..5"),
    )
    # Evenly spaced test images scored, for slow machines; null: all of them.
    test_images: int | None = dataclasses.field(
        default=None, metadata=rule(lambda v: v is None or v > 0, "null (all) or an integer > 0")
    )
    # Seeds the noise corruptions' draws.
    seed: int = dataclasses.field(default=0, metadata=non_negative("an integer"))


@dataclasses.dataclass(frozen=True)
class ModelParams:
    """One model's share of params.yaml: its `<model>:` section and `train_fraction.<model>`."""

    name: str
    settings: ModelSettings
    # The fraction of the train split it trains on (a stratified, seeded subset).
    train_fraction: float


@dataclasses.dataclass(frozen=True)
class Params(Checked):
    """Everything in params.yaml. The training recipe sits at the top level, shared by both
    models, so that `dvc exp run -S lr=0.05` reads as users type it; what belongs to one model
    is read from the table of models (`architectures.SETTINGS`)."""

    seed: int = dataclasses.field(default=0, metadata=non_negative("an integer"))
    data: DataConfig = dataclasses.field(default_factory=DataConfig)

    # Recipe
    epochs: int = dataclasses.field(default=60, metadata=positive("an integer"))
    batch_size: int = dataclasses.field(default=512, metadata=positive("an integer"))
    optimizer: str = dataclasses.field(default="sgd", metadata=one_of(*OPTIMIZERS))
    lr: float = dataclasses.field(default=0.4, metadata=positive())
    momentum: float = dataclasses.field(default=0.9, metadata=fraction())
    nesterov: bool = True
    muon_lr: float = dataclasses.field(default=0.04, metadata=positive())
    muon_momentum: float = dataclasses.field(default=0.6, metadata=fraction())
    weight_decay: float = dataclasses.field(default=5e-4, metadata=non_negative())
    decay_norm_and_bias: bool = True
    norm_bias_lr_scale: float = dataclasses.field(default=1.0, metadata=positive())
    schedule: str = dataclasses.field(default="onecycle", metadata=one_of(*SCHEDULES))
    warmup_epochs: float = dataclasses.field(default=2.0, metadata=non_negative())
    step_every: int = dataclasses.field(default=30, metadata=positive("an integer"))
    step_gamma: float = dataclasses.field(
        default=0.1, metadata=rule(lambda v: 0 < v <= 1, "a number in (0, 1]")
    )
    schedule_per: str = dataclasses.field(default="step", metadata=one_of(*SCHEDULE_UNITS))
    label_smoothing: float = dataclasses.field(default=0.1, metadata=fraction())
    mixup_alpha: float = dataclasses.field(default=0.0, metadata=non_negative())
    mixup_decay: bool = True
    ema_decay: float = dataclasses.field(
        default=0.0, metadata=fraction("0 (off) or a decay in (0, 1)")
    )
    crop_padding: int = dataclasses.field(
        default=4, metadata=rule(lambda v: 0 <= v <= 16, "pixels in [0, 16] (0: off)")
    )
    flip: bool = True
    alternating_flip: bool = False
    color_jitter: float = dataclasses.field(
        default=0.0, metadata=fraction("a number in [0, 1) (0: off)")
    )
    rotation: float = dataclasses.field(
        default=0.0, metadata=rule(lambda v: 0 <= v <= 180, "degrees in [0, 180] (0: off)")
    )
    random_erasing: float = dataclasses.field(
        default=0.0, metadata=rule(lambda v: 0 <= v <= 1, "a probability in [0, 1] (0: off)")
    )
    cutout: int = dataclasses.field(
        default=8, metadata=rule(lambda v: 0 <= v <= 32, "an integer in [0, 32] (0: off)")
    )
    drop_last: bool = True
    init: str = dataclasses.field(default="he", metadata=one_of(*INITS))
    whiten_stem: bool = False
    zero_init_residual: bool = False
    # Per model, the fraction of the train split it trains on (a stratified, seeded subset). A
    # budget for slow machines: on a CPU the DenseNet trains ~20x slower per image than the
    # ResNet, so a CPU run can give each model the share of the data its time allows.
    train_fraction: Mapping[str, float] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(SETTINGS, 1.0),
        metadata=keyed(SETTINGS, lambda v: 0 < v <= 1, "a number in (0, 1]"),
    )
    eval_batch_size: int = dataclasses.field(default=1024, metadata=positive("an integer"))
    # Read by evaluation only: changing it must not retrain (see SHARED_KEYS).
    tta_translate: int = dataclasses.field(
        default=2,
        metadata={**rule(lambda v: 0 <= v <= 8, "pixels in [0, 8] (0: off)"), "evaluation": True},
    )

    robustness: RobustnessConfig = dataclasses.field(default_factory=RobustnessConfig)

    # Runtime: where and how to compute. None of these changes what is learnt, only how fast.
    device: str = dataclasses.field(
        default="auto",
        metadata=rule(
            lambda v: re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) is not None,
            "auto, cpu, cuda or cuda:N",
        ),
    )
    precision: str = dataclasses.field(default="auto", metadata=one_of(*PRECISIONS))
    channels_last: bool = True
    compile: bool = False
    deterministic: bool = False

    # Architectures: one section per model, at the top level (`resnet:`, `densenet:`), each
    # validated by the model's settings class.
    architectures: Mapping[str, ModelSettings] = dataclasses.field(
        default_factory=lambda: {name: settings() for name, settings in SETTINGS.items()},
        metadata=sections(SETTINGS),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.schedule_per == "epoch" and not float(self.warmup_epochs).is_integer():
            raise ConfigError(
                f"warmup_epochs = {self.warmup_epochs} must be a whole number of epochs when "
                "schedule_per is epoch"
            )
        if self.alternating_flip and not self.flip:
            raise ConfigError(
                "alternating_flip: true says which images flip mirrors, so it needs flip: true; "
                "set flip: true or alternating_flip: false"
            )
        if self.warmup_epochs >= self.epochs:
            raise ConfigError(
                f"warmup_epochs = {self.warmup_epochs} must be smaller than epochs = {self.epochs}"
            )

    def model(self, name: str) -> ModelParams:
        """What params.yaml says of the model `name`; ConfigError naming the known models."""
        settings_class(name)
        return ModelParams(name, self.architectures[name], self.train_fraction[name])


def _is_section(kind: Any) -> bool:
    """A field that holds a section (data:) or an entry per model, not a single value."""
    return dataclasses.is_dataclass(kind) or typing.get_origin(kind) is Mapping


# Seed, recipe and runtime: the top-level keys shared by every model, less the evaluation-only
# ones. `train@<model>` reads all of them (dvc.yaml lists them; tests/test_dvc_yaml.py checks
# that list against what the stage reads).
SHARED_KEYS: tuple[str, ...] = tuple(
    field.name
    for field in dataclasses.fields(Params)
    if not _is_section(typing.get_type_hints(Params)[field.name])
    and not field.metadata.get("evaluation")
)


def set_dotted(params: dict, key: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict, as `dvc exp run -S a.b.c=value` does: every key on the
    way must already exist."""
    parts = key.split(".")
    node: Any = params
    for depth, part in enumerate(parts):
        above = ".".join(parts[:depth])
        if not isinstance(node, dict):
            raise ConfigError(f"params.yaml has no key '{key}': {above} is a value, not a section")
        if part not in node:
            where = f"under {above}" if depth else "at the top level"
            raise ConfigError(
                f"params.yaml has no key '{key}'; keys {where}: {', '.join(map(str, node))}"
            )
        if depth < len(parts) - 1:
            node = node[part]
    node[parts[-1]] = value


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """`key=value` items (dotted keys for sections) as a key → value mapping, each value read as
    YAML; a malformed item, a mapping (give its keys dotted) or a key given twice is an error."""
    pairs: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{item!r}: expected key=value, e.g. data.val_size=0")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{item!r}: cannot read the value ({exc.problem})") from None
        if isinstance(value, dict):
            raise ConfigError(f"{item!r}: give each key of a section dotted, e.g. {key}.x=1")
        if key in pairs:
            raise ConfigError(f"{key} is given twice; give it once")
        pairs[key] = value
    return pairs


def with_overrides(raw: dict, overrides: Mapping[str, Any]) -> dict:
    """A copy of params.yaml's content `raw` with dotted-key `overrides` set, not yet validated."""
    params = copy.deepcopy(raw)
    for key, value in overrides.items():
        set_dotted(params, key, value)
    return params


def overridden(raw: dict, overrides: Mapping[str, Any], source: str) -> dict:
    """`with_overrides`, validated as a whole (ConfigError naming `source` and the key), so a
    run fails before it starts."""
    params = with_overrides(raw, overrides)
    parse_params(params, source=source)
    return params


def read_params_file(path: str | Path) -> Any:
    """A params file's content as parsed YAML, not yet validated (an empty file is {});
    ConfigError naming the file when it is missing, unreadable or not YAML."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"params file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read params file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    return raw if raw is not None else {}


def load_params(path: str | Path = "params.yaml") -> Params:
    """Load and validate a params file; raise ConfigError naming the first bad key."""
    return parse_params(read_params_file(path), source=str(path))


def parse_params(raw: Any, source: str = "params") -> Params:
    """Validate an already-parsed mapping (as found in params.yaml) into `Params`."""
    return build(Params, raw, prefix="", source=source)
