"""Read params.yaml once into frozen dataclasses, rejecting anything a stage could not honour.

DVC checks neither types nor ranges (`dvc exp run -S lr=-1` is accepted), so every key is
validated here, at the edge, before any stage touches data. Errors name the dotted key and say
what is allowed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from cifar_study.errors import ConfigError

NAMED_SOURCES = ("cifar10", "digits")


def _rule(check: Callable[[Any], bool], allowed: str) -> dict[str, Any]:
    """Field metadata: a predicate on the (type-checked) value and the words that describe it."""
    return {"check": check, "allowed": allowed}


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

    @property
    def is_local_path(self) -> bool:
        """True when `source` names a file or folder rather than a built-in source."""
        return self.source not in NAMED_SOURCES


@dataclasses.dataclass(frozen=True)
class Params:
    """Everything in params.yaml."""

    seed: int = dataclasses.field(default=0, metadata=_rule(lambda v: v >= 0, "an integer >= 0"))
    data: DataConfig = dataclasses.field(default_factory=DataConfig)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Load and validate a params file; raise ConfigError naming the first bad key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"params file not found: {path}") from None
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
    unknown = sorted(set(raw) - set(fields))
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
        value = _coerce(value, kind, key, source)
        rule = fields[name].metadata
        if rule and not rule["check"](value):
            raise ConfigError(
                f"{source}: {key} = {value!r} is not allowed; expected {rule['allowed']}"
            )
        values[name] = value
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
