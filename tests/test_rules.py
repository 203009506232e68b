"""Field rules and `build`: what config and the model card share, on small dataclasses."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import pytest

from cifar_study.errors import ConfigError
from cifar_study.rules import Checked, RuleError, allowed_keys, build, keyed, positive, sections


@dataclasses.dataclass(frozen=True)
class Wheel(Checked):
    size: int = dataclasses.field(default=2, metadata=positive("an integer"))


@dataclasses.dataclass(frozen=True)
class Bike(Checked):
    speed: float = dataclasses.field(default=1.0, metadata=positive())
    share: Mapping[str, float] = dataclasses.field(
        default_factory=lambda: {"front": 0.5, "back": 0.5},
        metadata=keyed(("front", "back"), lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    )
    wheels: Mapping[str, Wheel] = dataclasses.field(
        default_factory=lambda: {"front": Wheel(), "back": Wheel()},
        metadata=sections({"front": Wheel, "back": Wheel}),
    )


def test_sections_sit_beside_the_fields_and_keep_their_defaults() -> None:
    bike = build(Bike, {"speed": 3, "front": {"size": 5}, "share": {"back": 1}})
    assert bike == Bike(
        speed=3.0,
        share={"front": 0.5, "back": 1.0},
        wheels={"front": Wheel(5), "back": Wheel()},
    )
    assert allowed_keys(Bike) == ["back", "front", "share", "speed"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"wheels": {}}, "src: unknown key 'wheels'; allowed keys at the top level: back, front,"),
        ({"front": {"size": 0}}, "src: front.size = 0 is not allowed; expected an integer > 0"),
        ({"front": {"size": 1.5}}, "src: front.size = 1.5 must be an integer"),
        ({"share": {"back": 2}}, "src: share.back = 2 is not allowed; expected a number in [0, 1]"),
        ({"share": {"middle": 0}}, "src: unknown key 'share.middle'; allowed keys at share: back,"),
        ({"share": 0.5}, "src: share must be a mapping, got float"),
        ({"speed": -1}, "src: speed = -1 is not allowed; expected a number > 0"),
    ],
)
def test_build_names_the_dotted_key(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        build(Bike, raw, source="src")
    assert str(error.value).startswith(message)


def test_made_directly_the_rules_hold_too() -> None:
    with pytest.raises(RuleError, match=r"share\.front = 3 is not allowed"):
        Bike(share={"front": 3, "back": 0})
    with pytest.raises(RuleError, match="size = -2 is not allowed"):
        Wheel(-2)
    with pytest.raises(ValueError, match="wheels must map each of front, back"):
        Bike(wheels={"front": Wheel()})
