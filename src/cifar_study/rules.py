"""Settings as frozen dataclasses whose fields carry their rules, built from parsed YAML.

A rule is field metadata: a predicate on the (type-checked) value and the words that say what
it allows. A class deriving from `Checked` tests its rules when it is made, however it is made
(`ResNetSettings(width=-1)` is refused too); `build` makes one from a parsed mapping (params.yaml,
model.json), checking keys and types first, and names the dotted key in every error. Types are
checked by `build` only: `ResNetSettings(width=2.5)` made directly is not refused.

Two kinds of field hold one entry per name (the models, for params.yaml):
- `keyed(names, ...)`: a mapping in a section of its own (`train_fraction: {resnet: 1.0}`), its
  rule applying to each entry;
- `sections(classes)`: one section per name at the level of the field's class, each built as
  that name's class (`resnet: {...}` at the top level of params.yaml).

Torch-free: reading params.yaml or model.json imports no model code.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from cifar_study.errors import ConfigError

_EXPONENT_NUMERAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def rule(check: Callable[[Any], bool], allowed: str) -> dict[str, Any]:
    """Field metadata: a predicate on the (type-checked) value and the words that describe it."""
    return {"check": check, "allowed": allowed}


def positive(kind: str = "a number") -> dict[str, Any]:
    return rule(lambda v: v > 0, f"{kind} > 0")


def non_negative(kind: str = "a number") -> dict[str, Any]:
    return rule(lambda v: v >= 0, f"{kind} >= 0")


def fraction(allowed: str = "a number in [0, 1)") -> dict[str, Any]:
    return rule(lambda v: 0 <= v < 1, allowed)


def one_of(*choices: str) -> dict[str, Any]:
    return rule(lambda v: v in choices, "one of " + ", ".join(choices))


def all_positive(allowed: str) -> dict[str, Any]:
    """A non-empty sequence of numbers, each > 0."""
    return rule(lambda v: len(v) > 0 and all(x > 0 for x in v), allowed)


def keyed(names: Iterable[str], check: Callable[[Any], bool], allowed: str) -> dict[str, Any]:
    """Metadata of a `Mapping[str, X]` field with an entry per name, each satisfying `check`;
    a params file may set some of them, the others keep the field's default."""
    return {"names": tuple(names), **rule(check, allowed)}


def sections(classes: Mapping[str, type]) -> dict[str, Any]:
    """Metadata of a `Mapping[str, X]` field holding one section per name of `classes`, found
    beside the field's siblings (not under the field's own name) and built as that class."""
    return {"sections": dict(classes)}


class RuleError(ValueError):
    """A field's value breaks its rule; `name` is dotted for an entry of a mapping field."""

    def __init__(self, name: str, value: Any, allowed: str) -> None:
        super().__init__(f"{name} = {value!r} is not allowed; expected {allowed}")
        self.name, self.value, self.allowed = name, value, allowed


class Checked:
    """Base of the settings dataclasses: every field's rule is tested after `__init__`.

    A subclass with its own `__post_init__` (for rules across fields) calls this one first."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            value, meta = getattr(self, field.name), field.metadata
            if "names" in meta or "sections" in meta:
                _check_entries(field, value)
                continue
            if "check" in meta and not _passes(meta["check"], value):
                raise RuleError(field.name, value, meta["allowed"])


def _check_entries(field: dataclasses.Field, entries: Any) -> None:
    """A mapping field holds exactly its names, each of the declared kind and within its rule."""
    meta = field.metadata
    names = meta.get("names") or tuple(meta["sections"])
    if not isinstance(entries, Mapping) or set(entries) != set(names):
        raise ValueError(f"{field.name} must map each of {', '.join(names)}, got {entries!r}")
    for name, value in entries.items():
        if "sections" in meta and not isinstance(value, meta["sections"][name]):
            expected = meta["sections"][name].__name__
            raise ValueError(f"{name} must be a {expected}, got {type(value).__name__}")
        if "check" in meta and not _passes(meta["check"], value):
            raise RuleError(f"{field.name}.{name}", value, meta["allowed"])


def _passes(check: Callable[[Any], bool], value: Any) -> bool:
    try:
        return bool(check(value))
    except (TypeError, AttributeError, ValueError):  # a value of the wrong type made directly
        return False


def allowed_keys(cls: type) -> list[str]:
    """The keys a mapping built into `cls` may hold, sorted: its fields, with a `sections`
    field replaced by its sections' names."""
    keys = set()
    for field in dataclasses.fields(cls):
        keys.update(field.metadata.get("sections", {field.name: None}))
    return sorted(keys)


def build(cls: type, raw: Any, prefix: str = "", source: str = "params") -> Any:
    """Make the dataclass `cls` from the mapping `raw`; a ConfigError names the first unknown
    key, wrong type or value out of range, dotted from `prefix`, after `source`."""
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: {where} must be a mapping, got {type(raw).__name__}")
    allowed = allowed_keys(cls)
    unknown = sorted(str(k) for k in raw if k not in allowed)
    if unknown:
        raise ConfigError(
            f"{source}: unknown key '{prefix}{unknown[0]}'; allowed keys at {where}: "
            + ", ".join(allowed)
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    owner = {name: f for f in fields.values() for name in f.metadata.get("sections", ())}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for name, value in raw.items():
        key = prefix + name
        if name in owner:  # a section of a `sections` field: built as its own class
            field = owner[name]
            entries = values.setdefault(field.name, dict(_default(field)))
            entries[name] = build(field.metadata["sections"][name], value, key + ".", source)
        elif "names" in fields[name].metadata:
            values[name] = _build_keyed(fields[name], hints[name], value, key, source)
        elif dataclasses.is_dataclass(hints[name]):
            values[name] = build(hints[name], value, key + ".", source)
        else:
            values[name] = coerce(value, hints[name], key, source)
    try:
        return cls(**values)
    except RuleError as exc:
        shown = _raw_value(raw, exc.name, exc.value)
        raise ConfigError(
            f"{source}: {prefix}{exc.name} = {shown!r} is not allowed; expected {exc.allowed}"
        ) from None


def _build_keyed(
    field: dataclasses.Field, kind: Any, raw: Any, key: str, source: str
) -> dict[str, Any]:
    """A `keyed` field's entries: those `raw` sets over the defaults, type-checked."""
    names = field.metadata["names"]
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: {key} must be a mapping, got {type(raw).__name__}")
    unknown = sorted(str(k) for k in raw if k not in names)
    if unknown:
        raise ConfigError(
            f"{source}: unknown key '{key}.{unknown[0]}'; allowed keys at {key}: "
            + ", ".join(sorted(names))
        )
    item_kind = typing.get_args(kind)[1]
    entries = dict(_default(field))
    for name, value in raw.items():
        entries[name] = coerce(value, item_kind, f"{key}.{name}", source)
    return entries


def _default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _raw_value(raw: Mapping, dotted: str, fallback: Any) -> Any:
    """The value at `dotted` in `raw` as the user wrote it (`lr: -1`, not -1.0), else
    `fallback` (a default)."""
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return fallback
        node = node[part]
    return node


def coerce(value: Any, kind: Any, key: str, source: str) -> Any:
    """Check `value` against a field type; ints are accepted where floats are expected."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(kind):
            try:
                return coerce(value, option, key, source)
            except ConfigError as error:
                # A list given for a list-or-null field: what is wrong in it says more.
                if typing.get_origin(option) is tuple and isinstance(value, list | tuple):
                    raise error
        raise ConfigError(f"{source}: {key} = {value!r} must be {describe(kind)}")
    if origin is tuple:
        item_kind = typing.get_args(kind)[0]
        if not isinstance(value, list | tuple) or not value:
            raise ConfigError(f"{source}: {key} = {value!r} must be a non-empty list")
        return tuple(coerce(v, item_kind, f"{key}[{i}]", source) for i, v in enumerate(value))
    if kind is type(None) and value is None:
        return None
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return _finite(float(value), key, source)
    # YAML 1.1 reads `1e-3` (no dot) as a string: accept exactly that, never nan or inf.
    if kind is float and isinstance(value, str) and _EXPONENT_NUMERAL.fullmatch(value.strip()):
        return _finite(float(value), key, source)
    # bool is a subclass of int: `epochs: true` must not pass as 1.
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{source}: {key} = {value!r} must be {describe(kind)}")


def _finite(value: float, key: str, source: str) -> float:
    """`value`, refused when YAML's `.inf`/`.nan` (or an overflowing `1e999`) made it non-finite."""
    if not math.isfinite(value):
        raise ConfigError(f"{source}: {key} = {value!r} must be a finite number")
    return value


def describe(kind: Any) -> str:
    """A field type in words, for error messages."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return " or ".join(describe(k) for k in typing.get_args(kind))
    if typing.get_origin(kind) is tuple:
        return f"a list of {describe(typing.get_args(kind)[0])}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        kind, "null" if kind is type(None) else str(kind)
    )
