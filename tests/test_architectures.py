"""Each model's settings: declared once, checked however they are made, read without torch."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cifar_study.architectures import (
    SETTINGS,
    DenseNetSettings,
    ResNetSettings,
    as_json,
    settings_class,
)
from cifar_study.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("settings", "fields", "message"),
    [
        (ResNetSettings, {"width": 0}, "width = 0 is not allowed; expected an integer > 0"),
        (ResNetSettings, {"blocks": ()}, "blocks = () is not allowed; expected a list of"),
        (ResNetSettings, {"blocks": (2, 0)}, "blocks = (2, 0) is not allowed"),
        (ResNetSettings, {"dropout": 1.0}, "dropout = 1.0 is not allowed; expected a number in"),
        (ResNetSettings, {"dropout": -0.1}, "dropout = -0.1 is not allowed"),
        (DenseNetSettings, {"growth_rate": 0}, "growth_rate = 0 is not allowed"),
        (DenseNetSettings, {"blocks": ()}, "blocks = () is not allowed"),
        (DenseNetSettings, {"compression": 0.0}, "expected a number in (0, 1]"),
        (DenseNetSettings, {"compression": 1.5}, "compression = 1.5 is not allowed"),
        (DenseNetSettings, {"bottleneck_width": 0}, "bottleneck_width = 0 is not allowed"),
        (DenseNetSettings, {"dropout": 1.0}, "dropout = 1.0 is not allowed"),
        (DenseNetSettings, {"growth_rate": "12"}, "growth_rate = '12' is not allowed"),
    ],
)
def test_settings_made_directly_are_checked(
    settings: type, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        settings(**fields)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_the_defaults_are_valid_and_frozen(name: str) -> None:
    settings = SETTINGS[name]()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.dropout = 0.5  # type: ignore[misc]


def test_the_table_names_each_models_settings() -> None:
    assert settings_class("resnet") is ResNetSettings
    assert settings_class("densenet") is DenseNetSettings
    with pytest.raises(ConfigError, match="unknown model 'vgg'; known models: densenet, resnet"):
        settings_class("vgg")


def test_as_json_writes_lists_for_tuples() -> None:
    assert as_json(ResNetSettings(dropout=0.2)) == {
        "width": 32,
        "blocks": [2, 2, 2, 2],
        "dropout": 0.2,
    }


def test_the_declarations_import_no_model_code() -> None:
    """The data stages read params.yaml through these: they must not depend on torch models."""
    probe = (
        "import sys\n"
        "import cifar_study.architectures, cifar_study.config, cifar_study.card\n"
        "loaded = [m for m in sys.modules if m == 'torch' or m.startswith('cifar_study.models')]\n"
        "print(sorted(loaded))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
