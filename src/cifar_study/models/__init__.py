"""Model registry: a name from params.yaml maps to a builder, so one engine trains every model.

Usage: ``build_model("resnet", num_classes=10, dropout=0.2)``.
"""

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from cifar_study.errors import ConfigError

ModelBuilder = Callable[..., nn.Module]
Builder = TypeVar("Builder", bound=ModelBuilder)

_REGISTRY: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Decorator that stores a builder (a model class or function) under ``name``."""

    def decorator(builder: Builder) -> Builder:
        # Two builders under one name would make the config ambiguous: that is a bug.
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = builder
        return builder

    return decorator


def available_models() -> list[str]:
    """Names ``build_model`` accepts, sorted."""
    return sorted(_REGISTRY)


def check_model_name(name: str) -> None:
    """Raise ConfigError naming the known models unless ``name`` is registered."""
    if name not in _REGISTRY:
        known = ", ".join(available_models())
        raise ConfigError(f"unknown model {name!r}; known models: {known}")


def build_model(name: str, num_classes: int = 10, **arch_kwargs: Any) -> nn.Module:
    """Build the model registered as ``name``; an unknown name raises ConfigError."""
    check_model_name(name)
    return _REGISTRY[name](num_classes=num_classes, **arch_kwargs)


# Imported last so their @register_model decorators find the registry defined above.
from cifar_study.models import densenet, resnet  # noqa: E402, F401
