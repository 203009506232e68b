"""Weight initialisation, a recipe choice the train stage applies to a freshly built model."""

from torch import nn


def initialise(model: nn.Module, scheme: str) -> None:
    """`he`: He et al., 2015 ("Delving deep into rectifiers") for convolutions, as both the
    ResNet and DenseNet papers use, BatchNorm as the identity. `pytorch`: leave PyTorch's
    default initialisation, which every layer gets when it is built (the study's choice)."""
    if scheme == "pytorch":
        return
    if scheme != "he":
        raise ValueError(f"unknown init scheme {scheme!r}; known: he, pytorch")
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
