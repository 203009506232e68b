"""Weight initialisation shared by the networks."""

from torch import nn


def he_init(model: nn.Module) -> None:
    """He et al., 2015 ("Delving deep into rectifiers") for convolutions, as both the ResNet
    and DenseNet papers use; BatchNorm starts as the identity."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
