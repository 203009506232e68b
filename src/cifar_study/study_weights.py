"""Convert a checkpoint saved by the study's own code into a model folder this pipeline reads.

    python -m cifar_study.study_weights resnet_best.pth --out models/resnet
    python -m cifar_study.stages.evaluate --model-dir models/resnet ...   (or predict)

The study's `resnet_model.py` names the stem `conv1`/`bn1`, the stages `layer1`…`layer4` (blocks
`conv1, bn1, conv2, bn2, shortcut.0, shortcut.1`) and the head `fc`. This project's ResNet has
the same 122 tensors in the same order and shapes under other names (`stem.0`, `stem.1`,
`stages.0`…`stages.3`, `fc`), so conversion is a renaming, checked tensor by tensor.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import torch

from cifar_study.architectures import ResNetSettings
from cifar_study.card import ConvertedFrom, ModelCard, Normalization
from cifar_study.cli import user_errors_exit
from cifar_study.errors import DataError
from cifar_study.fileio import file_digest
from cifar_study.inference import save_trained
from cifar_study.models import build_model
from cifar_study.models.size import count_parameters, macs_per_image
from cifar_study.training.checkpoint import load_checkpoint

# What the study trained with: CIFAR-10's official class order and its normalisation constants.
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
STUDY_MEAN = (0.4914, 0.4822, 0.4465)
STUDY_STD = (0.2470, 0.2435, 0.2616)
STUDY_ARCHITECTURE = ResNetSettings(dropout=0.2)

# Study name prefix → this project's, applied to the start of each key.
_RENAMES = (
    (re.compile(r"^conv1\."), "stem.0."),
    (re.compile(r"^bn1\."), "stem.1."),
    (re.compile(r"^layer([1-9])\."), lambda m: f"stages.{int(m.group(1)) - 1}."),
)
# Containers that training scripts commonly save around the state dict.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")


def study_state_dict(checkpoint: Any) -> dict[str, torch.Tensor]:
    """The tensors of a loaded checkpoint: a bare state dict or one inside a common wrapper,
    with DataParallel's `module.` prefix removed."""
    if isinstance(checkpoint, dict):
        for key in _WRAPPER_KEYS:
            if isinstance(checkpoint.get(key), dict):
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, dict) or not all(
        isinstance(v, torch.Tensor) for v in checkpoint.values()
    ):
        raise DataError("the checkpoint holds no state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in checkpoint.items()}


def rename(study_key: str) -> str:
    """This project's name for a tensor the study's code calls `study_key`."""
    for pattern, replacement in _RENAMES:
        renamed, count = pattern.subn(replacement, study_key)
        if count:
            return renamed
    return study_key


def convert(study: dict[str, torch.Tensor], num_classes: int) -> dict[str, torch.Tensor]:
    """The study's tensors under this project's names, checked against the ResNet's layout in
    order; the first key or shape that does not fit is named in the error."""
    expected = build_model("resnet", STUDY_ARCHITECTURE, num_classes=num_classes)
    ours = expected.state_dict()
    theirs = list(study.items())
    for position, (name, tensor) in enumerate(ours.items()):
        if position >= len(theirs):
            raise DataError(f"the checkpoint ends before '{name}' ({len(theirs)} tensors)")
        study_key, value = theirs[position]
        if rename(study_key) != name:
            raise DataError(
                f"tensor {position} is '{study_key}', where the study's ResNet has "
                f"'{_study_name(name)}': not a checkpoint of the study's ResNet"
            )
        if value.shape != tensor.shape:
            raise DataError(
                f"'{study_key}' has shape {list(value.shape)}, the study's ResNet "
                f"{list(tensor.shape)}: another width or number of classes"
            )
    if len(theirs) > len(ours):
        raise DataError(f"unexpected tensor '{theirs[len(ours)][0]}' after the classifier")
    return {rename(k): v.detach().to("cpu", torch.float32).contiguous() for k, v in theirs}


def _study_name(name: str) -> str:
    """The study's name for one of this project's tensors, for error messages."""
    name = re.sub(r"^stem\.0\.", "conv1.", name)
    name = re.sub(r"^stem\.1\.", "bn1.", name)
    return re.sub(r"^stages\.(\d)\.", lambda m: f"layer{int(m.group(1)) + 1}.", name)


def describe(checkpoint: Path, state: dict[str, torch.Tensor]) -> ModelCard:
    """The card (model.json) of converted weights: what evaluation and prediction read, and
    the source."""
    model = build_model("resnet", STUDY_ARCHITECTURE, num_classes=len(CIFAR10_CLASSES))
    model.load_state_dict(state)
    return ModelCard(
        model="resnet",
        architecture=STUDY_ARCHITECTURE,
        classes=CIFAR10_CLASSES,
        normalization=Normalization(STUDY_MEAN, STUDY_STD),
        parameters=count_parameters(model),
        macs_per_image=macs_per_image(model),
        converted_from=ConvertedFrom(str(checkpoint), file_digest(checkpoint)),
    )


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="a .pth file saved by the study's code")
    parser.add_argument("--out", type=Path, required=True, help="model folder to (re)write")
    args = parser.parse_args(argv)
    if not args.checkpoint.is_file():
        raise DataError(f"{args.checkpoint}: no such file")
    loaded = load_checkpoint(args.checkpoint)  # its errors name the file already
    try:
        state = convert(study_state_dict(loaded), len(CIFAR10_CLASSES))
    except DataError as exc:
        raise DataError(f"{args.checkpoint}: {exc}") from None
    save_trained(args.out, state, describe(args.checkpoint, state))
    print(f"{args.out}: the study's ResNet ({len(state)} tensors) from {args.checkpoint}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
