"""Model registry: a name from params.yaml maps to a builder and its settings, so one engine
trains every model.

Usage: ``build_model("resnet", ResNetSettings(dropout=0.2), num_classes=10)``; without settings,
the declared defaults. The settings are declared, and checked, in `cifar_study.architectures`.
"""

from collections.abc import Callable
from typing import TypeVar

from torch import nn

from cifar_study.architectures import SETTINGS, ModelSettings
from cifar_study.errors import ConfigError

ModelBuilder = Callable[..., nn.Module]
Builder = TypeVar("Builder", bound=ModelBuilder)

_REGISTRY: dict[str, tuple[ModelBuilder, type[ModelSettings]]] = {}


def register_model(name: str, settings: type[ModelSettings]) -> Callable[[Builder], Builder]:
    """Decorator that stores a builder (a model class or function, called as
    ``builder(settings, num_classes=...)``) under ``name``, whose settings class it names."""

    def decorator(builder: Builder) -> Builder:
        # Two builders under one name would make the config ambiguous: that is a bug.
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        if SETTINGS.get(name) is not settings:
            declared = SETTINGS[name].__name__ if name in SETTINGS else "nothing"
            raise ValueError(
                f"model {name!r} registered with {settings.__name__}, but "
                f"cifar_study.architectures.SETTINGS declares {declared} for it"
            )
        _REGISTRY[name] = (builder, settings)
        return builder

    return decorator


def available_models() -> list[str]:
    """Names ``build_model`` accepts, sorted."""
    return sorted(_REGISTRY)


def build_model(
    name: str, settings: ModelSettings | None = None, num_classes: int = 10
) -> nn.Module:
    """Build the model registered as ``name`` from its settings (the defaults when None); an
    unknown name raises ConfigError."""
    if name not in _REGISTRY:
        known = ", ".join(available_models())
        raise ConfigError(f"unknown model {name!r}; known models: {known}")
    builder, settings_class = _REGISTRY[name]
    if settings is None:
        settings = settings_class()
    elif not isinstance(settings, settings_class):
        raise TypeError(
            f"model {name!r} is built from {settings_class.__name__}, not {type(settings).__name__}"
        )
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return builder(settings, num_classes=num_classes)


# Imported last so their @register_model decorators find the registry defined above.
from cifar_study.models import densenet, resnet  # noqa: E402, F401

# Every model in the settings table has a builder: a module not imported above would leave
# params.yaml accepting a model that cannot be trained.
_unbuilt = sorted(set(SETTINGS) - set(_REGISTRY))
if _unbuilt:
    raise ImportError(f"no module in cifar_study.models registers {', '.join(_unbuilt)}")
