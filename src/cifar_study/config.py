"""Read params.yaml once into frozen dataclasses, rejecting anything a stage could not honour.

DVC checks neither types nor ranges (`dvc exp run -S lr=-1` is accepted), so every key is
validated here, at the edge, before any stage touches data. Errors name the dotted key and say
what is allowed.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from cifar_study.errors import ConfigError

NAMED_SOURCES = ("cifar10", "digits")
_EXPONENT_NUMERAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _rule(check: Callable[[Any], bool], allowed: str) -> dict[str, Any]:
    """Field metadata: a predicate on the (type-checked) value and the words that describe it."""
    return {"check": check, "allowed": allowed}


def _channels(check: Callable[[float], bool], allowed: str) -> dict[str, Any]:
    """null, or one number per RGB channel, each satisfying `check`."""
    return _rule(
        lambda v: v is None or (len(v) == 3 and all(check(x) for x in v)),
        f"null or a list of 3 numbers, each {allowed}",
    )


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the raw data comes from and how the validation split is drawn."""

    # "cifar10" (official archive over https), "digits" (offline, from scikit-learn), or a path
    # to a local archive or image-folder tree.
    source: str = dataclasses.field(
        default="cifar10",
        metadata=_rule(lambda v: v.strip() != "", "'cifar10', 'digits' or a local path"),
    )
    # Fraction of the training set held out, stratified, for validation; 0 disables it.
    val_size: float = dataclasses.field(
        default=0.1, metadata=_rule(lambda v: 0 <= v < 1, "a fraction in [0, 1)")
    )
    split_seed: int = dataclasses.field(
        default=0, metadata=_rule(lambda v: v >= 0, "an integer >= 0")
    )
    # Per-channel normalisation on the 0..1 scale; null: measured on the train split.
    mean: tuple[float, ...] | None = dataclasses.field(
        default=None, metadata=_channels(lambda v: 0 <= v <= 1, "in [0, 1]")
    )
    std: tuple[float, ...] | None = dataclasses.field(
        default=None, metadata=_channels(lambda v: v > 0, "> 0")
    )

    def __post_init__(self) -> None:
        if (self.mean is None) != (self.std is None):
            raise ConfigError("data.mean and data.std go together: set both or neither (null)")

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """(mean, std) when params.yaml gives them; None: measure them on the train split."""
        mean, std = self.mean, self.std
        return None if mean is None or std is None else (mean, std)

    @property
    def is_local_path(self) -> bool:
        """True when `source` names a file or folder rather than a built-in source."""
        return self.source not in NAMED_SOURCES


def _positive(kind: str = "a number") -> dict[str, Any]:
    return _rule(lambda v: v > 0, f"{kind} > 0")


def _non_negative(kind: str = "a number") -> dict[str, Any]:
    return _rule(lambda v: v >= 0, f"{kind} >= 0")


def _fraction(allowed: str = "a number in [0, 1)") -> dict[str, Any]:
    return _rule(lambda v: 0 <= v < 1, allowed)


def _one_of(*choices: str) -> dict[str, Any]:
    return _rule(lambda v: v in choices, "one of " + ", ".join(choices))


def _all_positive(allowed: str) -> dict[str, Any]:
    return _rule(lambda v: all(x > 0 for x in v), allowed)


OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("onecycle", "cosine", "step", "constant")
SCHEDULE_UNITS = ("step", "epoch")
INITS = ("he", "pytorch")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclasses.dataclass(frozen=True)
class ResNetConfig:
    """The study's ResNet: BasicBlocks per stage; channels double from `width` each stage."""

    width: int = dataclasses.field(default=32, metadata=_positive("an integer"))
    blocks: tuple[int, ...] = dataclasses.field(
        default=(2, 2, 2, 2), metadata=_all_positive("a list of integers > 0")
    )
    dropout: float = dataclasses.field(default=0.0, metadata=_fraction())


@dataclasses.dataclass(frozen=True)
class DenseNetConfig:
    """DenseNet-BC: dense blocks of bottleneck layers joined by compressing transitions."""

    growth_rate: int = dataclasses.field(default=38, metadata=_positive("an integer"))
    blocks: tuple[int, ...] = dataclasses.field(
        default=(9, 9, 9), metadata=_all_positive("a list of integers > 0")
    )
    compression: float = dataclasses.field(
        default=0.5, metadata=_rule(lambda v: 0 < v <= 1, "a number in (0, 1]")
    )
    bottleneck_width: int = dataclasses.field(default=4, metadata=_positive("an integer"))
    dropout: float = dataclasses.field(default=0.0, metadata=_fraction())
    # Recompute concatenations in the backward pass: less memory, a little more time.
    memory_efficient: bool = False


def _fraction_of_train() -> Any:
    return dataclasses.field(
        default=1.0, metadata=_rule(lambda v: 0 < v <= 1, "a number in (0, 1]")
    )


@dataclasses.dataclass(frozen=True)
class TrainFractions:
    """Per model, the fraction of the train split it trains on (a stratified, seeded subset).

    A budget for slow machines: on a CPU the DenseNet trains ~20x slower per image than the
    ResNet, so a CPU run can give each model the share of the data its time allows."""

    resnet: float = _fraction_of_train()
    densenet: float = _fraction_of_train()


@dataclasses.dataclass(frozen=True)
class Params:
    """Everything in params.yaml. The training recipe sits at the top level, shared by both
    models, so that `dvc exp run -S lr=0.05` reads as users type it."""

    seed: int = dataclasses.field(default=0, metadata=_non_negative("an integer"))
    data: DataConfig = dataclasses.field(default_factory=DataConfig)

    # Recipe
    epochs: int = dataclasses.field(default=60, metadata=_positive("an integer"))
    batch_size: int = dataclasses.field(default=512, metadata=_positive("an integer"))
    optimizer: str = dataclasses.field(default="sgd", metadata=_one_of(*OPTIMIZERS))
    lr: float = dataclasses.field(default=0.4, metadata=_positive())
    momentum: float = dataclasses.field(default=0.9, metadata=_fraction())
    nesterov: bool = True
    weight_decay: float = dataclasses.field(default=5e-4, metadata=_non_negative())
    decay_norm_and_bias: bool = True
    schedule: str = dataclasses.field(default="onecycle", metadata=_one_of(*SCHEDULES))
    warmup_epochs: float = dataclasses.field(default=2.0, metadata=_non_negative())
    step_every: int = dataclasses.field(default=30, metadata=_positive("an integer"))
    step_gamma: float = dataclasses.field(
        default=0.1, metadata=_rule(lambda v: 0 < v <= 1, "a number in (0, 1]")
    )
    schedule_per: str = dataclasses.field(default="step", metadata=_one_of(*SCHEDULE_UNITS))
    label_smoothing: float = dataclasses.field(default=0.1, metadata=_fraction())
    mixup_alpha: float = dataclasses.field(default=0.0, metadata=_non_negative())
    mixup_decay: bool = True
    ema_decay: float = dataclasses.field(
        default=0.0, metadata=_fraction("0 (off) or a decay in (0, 1)")
    )
    crop_padding: int = dataclasses.field(default=4, metadata=_non_negative("an integer"))
    flip: bool = True
    color_jitter: float = dataclasses.field(
        default=0.0, metadata=_fraction("a number in [0, 1) (0: off)")
    )
    rotation: float = dataclasses.field(
        default=0.0, metadata=_rule(lambda v: 0 <= v <= 180, "degrees in [0, 180] (0: off)")
    )
    random_erasing: float = dataclasses.field(
        default=0.0, metadata=_rule(lambda v: 0 <= v <= 1, "a probability in [0, 1] (0: off)")
    )
    cutout: int = dataclasses.field(
        default=8, metadata=_rule(lambda v: 0 <= v <= 32, "an integer in [0, 32] (0: off)")
    )
    drop_last: bool = True
    init: str = dataclasses.field(default="he", metadata=_one_of(*INITS))
    whiten_stem: bool = False
    train_fraction: TrainFractions = dataclasses.field(default_factory=TrainFractions)
    eval_batch_size: int = dataclasses.field(default=1024, metadata=_positive("an integer"))
    # Read by evaluation only: changing it must not retrain (see SHARED_KEYS).
    tta_translate: int = dataclasses.field(
        default=2,
        metadata={**_rule(lambda v: 0 <= v <= 8, "pixels in [0, 8] (0: off)"), "evaluation": True},
    )

    # Runtime: where and how to compute. None of these changes what is learnt, only how fast.
    device: str = dataclasses.field(
        default="auto",
        metadata=_rule(
            lambda v: re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) is not None,
            "auto, cpu, cuda or cuda:N",
        ),
    )
    precision: str = dataclasses.field(default="auto", metadata=_one_of(*PRECISIONS))
    channels_last: bool = True
    compile: bool = False
    deterministic: bool = False

    # Architectures
    resnet: ResNetConfig = dataclasses.field(default_factory=ResNetConfig)
    densenet: DenseNetConfig = dataclasses.field(default_factory=DenseNetConfig)

    def __post_init__(self) -> None:
        if self.schedule_per == "epoch" and not float(self.warmup_epochs).is_integer():
            raise ConfigError(
                f"warmup_epochs = {self.warmup_epochs} must be a whole number of epochs when "
                "schedule_per is epoch"
            )
        if self.warmup_epochs >= self.epochs:
            raise ConfigError(
                f"warmup_epochs = {self.warmup_epochs} must be smaller than epochs = {self.epochs}"
            )

    def train_fraction_of(self, model: str) -> float:
        """The fraction of the train split `model` trains on."""
        fraction = getattr(self.train_fraction, model, None)
        if fraction is None:
            raise ConfigError(f"params.yaml has no train_fraction.{model}")
        return fraction

    def architecture(self, model: str) -> dict[str, Any]:
        """The keyword arguments of `model`'s builder, from its section of params.yaml."""
        section = getattr(self, model, None)
        if not dataclasses.is_dataclass(section):
            raise ConfigError(f"params.yaml has no architecture section for model '{model}'")
        return dataclasses.asdict(section)


# Seed, recipe and runtime: the top-level keys shared by every model, less the evaluation-only
# ones. `train@<model>` reads all of them (dvc.yaml lists them; tests/test_dvc_yaml.py checks
# that list against what the stage reads).
SHARED_KEYS: tuple[str, ...] = tuple(
    field.name
    for field in dataclasses.fields(Params)
    if not dataclasses.is_dataclass(typing.get_type_hints(Params)[field.name])
    and not field.metadata.get("evaluation")
)


def set_dotted(params: dict, key: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict, as `dvc exp run -S a.b.c=value` does: every key on the
    way must already exist."""
    *parents, last = key.split(".")
    node = params
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            break
    if not isinstance(node, dict) or last not in node:
        raise ConfigError(f"params.yaml has no key '{key}'")
    node[last] = value


def load_params(path: str | Path = "params.yaml") -> Params:
    """Load and validate a params file; raise ConfigError naming the first bad key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"params file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read params file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    return parse_params(raw if raw is not None else {}, source=str(path))


def parse_params(raw: Any, source: str = "params") -> Params:
    """Validate an already-parsed mapping (as found in params.yaml) into `Params`."""
    return _build(Params, raw, prefix="", source=source)


def _build(cls: type, raw: Any, prefix: str, source: str) -> Any:
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: {where} must be a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in raw if k not in fields)
    if unknown:
        raise ConfigError(
            f"{source}: unknown key '{prefix}{unknown[0]}'; allowed keys at {where}: "
            + ", ".join(sorted(fields))
        )
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in raw.items():
        key = prefix + name
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            values[name] = _build(kind, value, prefix=key + ".", source=source)
            continue
        checked = _coerce(value, kind, key, source)
        rule = fields[name].metadata
        if rule and not rule["check"](checked):
            raise ConfigError(
                f"{source}: {key} = {value!r} is not allowed; expected {rule['allowed']}"
            )
        values[name] = checked
    return cls(**values)


def _coerce(value: Any, kind: Any, key: str, source: str) -> Any:
    """Check `value` against a field type; ints are accepted where floats are expected."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(kind):
            try:
                return _coerce(value, option, key, source)
            except ConfigError:
                continue
        raise ConfigError(f"{source}: {key} = {value!r} must be {_describe(kind)}")
    if origin is tuple:
        item_kind = typing.get_args(kind)[0]
        if not isinstance(value, list | tuple) or not value:
            raise ConfigError(f"{source}: {key} = {value!r} must be a non-empty list")
        return tuple(_coerce(v, item_kind, f"{key}[{i}]", source) for i, v in enumerate(value))
    if kind is type(None) and value is None:
        return None
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    # YAML 1.1 reads `1e-3` (no dot) as a string: accept exactly that, never nan or inf.
    if kind is float and isinstance(value, str) and _EXPONENT_NUMERAL.fullmatch(value.strip()):
        return float(value)
    # bool is a subclass of int: `epochs: true` must not pass as 1.
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{source}: {key} = {value!r} must be {_describe(kind)}")


def _describe(kind: Any) -> str:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return " or ".join(_describe(k) for k in typing.get_args(kind))
    if typing.get_origin(kind) is tuple:
        return f"a list of {_describe(typing.get_args(kind)[0])}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        kind, "null" if kind is type(None) else str(kind)
    )
