"""A trained model's folder (`model.pt` + `model.json`): write it, load it, classify with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cifar_study.card import ModelCard, Normalization
from cifar_study.data.prepared import Split, load_prepared
from cifar_study.data.raw import load_image
from cifar_study.device import DeviceSplit, Runtime, split_logits
from cifar_study.errors import DataError, StudyError
from cifar_study.fileio import atomic_dir, write_json
from cifar_study.models import build_model
from cifar_study.training.checkpoint import load_checkpoint

IMAGE_SIZE = 32
UINT16_MAX = 65535
CARD = "model.json"  # beside model.pt; its presence marks a folder as a model folder
PREDICT_RUNTIME = Runtime(torch.device("cpu"), amp_dtype=None, channels_last=False, compile=False)


def save_trained(out: Path, state: dict[str, torch.Tensor], card: ModelCard) -> None:
    """Write `model.pt` (a plain state dict) and `model.json` (its card) into `out`, replaced
    whole.

    Both files or neither: new weights must never sit beside another model's card.
    """
    writers = {
        "model.pt": lambda path: torch.save(state, path),
        CARD: lambda path: write_json(path, card.to_json()),
    }
    with atomic_dir(out, CARD) as staging:
        for name, write in writers.items():
            try:
                write(staging / name)
            except (OSError, RuntimeError) as exc:  # torch.save reports short writes as Runtime
                reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
                raise StudyError(
                    f"could not write {out / name}: {reason}; the previous {out} is kept"
                ) from None


def load_trained(model_dir: Path) -> tuple[torch.nn.Module, ModelCard]:
    """Rebuild a model from its card (`model.json`) and load `model.pt` (tensors only), in eval
    mode."""
    card = ModelCard.read(model_dir / CARD)
    try:
        model = build_model(card.model, card.architecture, num_classes=len(card.classes))
        model.load_state_dict(load_checkpoint(model_dir / "model.pt"))
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError(
            f"{model_dir}: model.json and model.pt do not describe one model "
            f"({str(exc).splitlines()[0]}); rerun the train stage"
        ) from None
    return model.eval(), card


def load_for_test(
    model_dir: Path, data_dir: Path, runtime: Runtime
) -> tuple[torch.nn.Module, ModelCard, Split]:
    """A trained model on the runtime's device and memory format, its card, and the test split
    of the prepared data in `data_dir`, which must have the classes the model was trained on."""
    model, card = load_trained(model_dir)
    memory_format = torch.channels_last if runtime.channels_last else torch.contiguous_format
    model = model.to(runtime.device, memory_format=memory_format)
    data = load_prepared(data_dir, splits=("test",))
    if list(card.classes) != list(data.classes):
        raise DataError(
            f"{model_dir} was trained on classes {list(card.classes)}, but {data_dir} has "
            f"{list(data.classes)}: evaluate it on the data it was trained for"
        )
    return model, card, data.splits["test"]


def read_image(path: Path) -> tuple[np.ndarray, str | None]:
    """An image file as uint8 32×32×3, upright by its EXIF orientation, and a note when it had to
    be converted or resized.

    Integer greyscale beyond 8 bits is scaled, not clipped as Pillow's `convert` would: I;16 (and
    I, as Pillow opens some 16-bit files, when its values lie in 0..65535) maps 0..65535 to 0..255.
    Float (F) images, and I images outside that range, have no known range and are refused.
    """
    image = load_image(path)
    note = None
    try:
        if image.mode != "RGB":
            note = f"converted from {image.mode}"
            image = _to_8_bits(image, path).convert("RGB")
        if image.size != (IMAGE_SIZE, IMAGE_SIZE):
            resized = f"resized from {image.size[0]}×{image.size[1]} to 32×32"
            note = f"{note}; {resized}" if note else resized
            image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
    except (OSError, ValueError) as exc:  # a mode Pillow cannot convert or resize
        raise DataError(f"{path}: cannot be converted to 32×32 RGB ({exc})") from None
    return np.array(image), note  # a writable copy, as torch.from_numpy wants


def _to_8_bits(image: Image.Image, path: Path) -> Image.Image:
    """`image` with 16-bit integer greyscale scaled to 8 bits (L); 8-bit modes as they are."""
    if image.mode != "F" and not image.mode.startswith("I"):
        return image
    pixels = np.asarray(image)
    if image.mode == "F" or pixels.min() < 0 or pixels.max() > UINT16_MAX:
        raise DataError(
            f"{path}: mode {image.mode} pixel values have no known range to scale to 8 bits "
            f"(allowed: 8-bit images, and 16-bit greyscale with values 0..{UINT16_MAX})"
        )
    return Image.fromarray(np.rint(pixels / (UINT16_MAX / 255)).astype(np.uint8))


@torch.no_grad()
def classify(
    model: torch.nn.Module, norm: Normalization, images: np.ndarray, batch_size: int = 1024
) -> np.ndarray:
    """Class probabilities N×C for uint8 images N×32×32×3, normalised as in training (`norm`,
    the card's), on the CPU in fp32 (where `load_trained` leaves the model)."""
    split = DeviceSplit(images, None, norm.mean, norm.std, PREDICT_RUNTIME.device)
    batches = split_logits(model, split, batch_size, PREDICT_RUNTIME)
    return torch.cat([logits.softmax(1) for (logits,), _ in batches]).numpy()
