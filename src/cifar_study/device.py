"""The device data path: where computation runs, the data held there, logits out of a model.

Training, evaluation and prediction all go through this one module, so that an image is
normalised one way and a split is batched through a model one way, whoever asks:

- `Runtime`: device, precision, memory layout, processes; decided once, by `resolve_runtime`,
  from params.yaml and the environment (`torchrun` sets RANK/WORLD_SIZE), so that models, the
  engine and evaluation never branch on hardware themselves.
- `DeviceSplit`: one split held on the device as one uint8 tensor (150 MB for CIFAR-10; a
  PIL/DataLoader pipeline with two CPU workers cannot feed a modern GPU for 32×32 images), turned
  into normalised float batches on demand by `DeviceSplit.normalise`, the only place an image is
  normalised. Training passes its augmentation (`training/augment.py`) in; nothing else does.
- `split_logits`: a model's logits for a whole split, batch by batch in order, under the
  runtime's autocast and memory layout, with optional test-time views of each batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from cifar_study.errors import ConfigError

# Float pixels in [0, 255] → normalised pixels.
Normalise = Callable[[torch.Tensor], torch.Tensor]
# An augmentation: uint8 images N×3×H×W and the normalisation → augmented normalised floats.
Augment = Callable[[torch.Tensor, Normalise], torch.Tensor]
# Test-time views: a normalised batch → the inputs the model sees, one logits tensor each.
Views = Callable[[torch.Tensor], Iterable[torch.Tensor]]


# --------------------------------------------------------------------------- runtime


@dataclasses.dataclass(frozen=True)
class Runtime:
    """The resolved compute setup of one process."""

    device: torch.device
    amp_dtype: torch.dtype | None  # None: plain fp32
    channels_last: bool
    compile: bool
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Only the main process logs and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def needs_grad_scaler(self) -> bool:
        """fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none."""
        return self.amp_dtype == torch.float16

    @property
    def precision_name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for the forward pass (BatchNorm stays fp32 under autocast)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)


def resolve_runtime(
    device: str = "auto",
    precision: str = "auto",
    channels_last: bool = True,
    compile: bool = False,
    deterministic: bool = False,
) -> Runtime:
    """Pick the device and precision, join the process group under torchrun, set backends."""
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    resolved = _resolve_device(device, local_rank if world_size > 1 else None)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
        # Autotuning picks the fastest kernels but not always the same ones from run to run.
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cuda.matmul.allow_tf32 = not deterministic
        torch.backends.cudnn.allow_tf32 = not deterministic
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo")
    return Runtime(
        device=resolved,
        amp_dtype=_resolve_precision(precision, resolved),
        channels_last=channels_last,
        compile=compile,
        rank=rank,
        world_size=world_size,
    )


def _resolve_device(device: str, local_rank: int | None) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device = {device!r}, but no CUDA device is available; use auto/cpu")
        if local_rank is not None:  # under torchrun each process takes its own GPU
            return torch.device("cuda", local_rank)
        index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"device = {device!r}, but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
        return torch.device("cuda", index)
    return torch.device("cpu")


def _resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "fp32":
        return None
    bf16_ok = (
        # Native bf16 only: emulated bf16 on pre-Ampere GPUs is slower than fp16.
        torch.cuda.is_bf16_supported(including_emulation=False)
        if device.type == "cuda"
        # Only CPUs with native bf16 (AVX-512 BF16 or AMX) gain from it; elsewhere it is emulated.
        else torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    )
    if precision == "bf16":
        if not bf16_ok:
            raise ConfigError(f"precision = 'bf16' is not supported on {device}; use auto or fp32")
        return torch.bfloat16
    if precision == "fp16":
        if device.type != "cuda":
            raise ConfigError("precision = 'fp16' needs a CUDA device; use auto, bf16 or fp32")
        return torch.float16
    # auto
    if bf16_ok:
        return torch.bfloat16
    return torch.float16 if device.type == "cuda" else None


@contextlib.contextmanager
def process_group(runtime: Runtime) -> Iterator[None]:
    """Tear the process group down however training ends, so torchrun exits cleanly."""
    try:
        yield
    finally:
        if runtime.distributed and dist.is_initialized():
            dist.destroy_process_group()


# --------------------------------------------------------------------------- the split


class DeviceSplit:
    """One split held on `device` as uint8 N×3×32×32, turned into float batches on demand.

    `mean` and `std` are per channel on the [0, 1] scale, as prepared data and model.json record
    them. `labels` is None for images whose classes are unknown (prediction).
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | None,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        device: torch.device,
    ) -> None:
        # N×H×W×3 on disk → N×3×H×W, the layout convolutions index.
        self.images = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2)
        self.labels = None if labels is None else torch.from_numpy(np.asarray(labels)).to(device)
        # On the pixel scale: a batch is normalised without first being divided by 255.
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255.0
        self.device = device

    def __len__(self) -> int:
        return len(self.images)

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """Float pixels in [0, 255] standardised per channel with this split's mean and std."""
        return (pixels - self.mean) / self.std

    def batch(
        self,
        index: torch.Tensor,
        augmentation: Augment | None = None,
        channels_last: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images at `index` as normalised float32 (augmented if asked) and their labels."""
        x = self.images[index]
        x = self.normalise(x.float()) if augmentation is None else augmentation(x, self.normalise)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, None if self.labels is None else self.labels[index]


# --------------------------------------------------------------------------- logits


@torch.no_grad()
def split_logits(
    model: nn.Module,
    split: DeviceSplit,
    batch_size: int,
    runtime: Runtime,
    views: Views | None = None,
) -> Iterator[tuple[list[torch.Tensor], torch.Tensor | None]]:
    """The model's float32 logits for every image of `split`: per batch, in order, one tensor per
    view of the batch (the batch itself when `views` is None) and the batch's labels.

    Batches are normalised, not augmented, laid out as the runtime says, and run under its
    autocast with the model in eval mode; the model's mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(split), batch_size):
            index = torch.arange(start, min(start + batch_size, len(split)), device=split.device)
            x, y = split.batch(index, channels_last=runtime.channels_last)
            inputs = [x] if views is None else list(views(x))
            with runtime.autocast():
                logits = [model(v).float() for v in inputs]
            yield logits, y
    finally:
        model.train(was_training)


@torch.no_grad()
def evaluate(
    model: nn.Module, split: DeviceSplit, batch_size: int, runtime: Runtime
) -> dict[str, float]:
    """Mean cross-entropy and accuracy of `model` on a whole split (no augmentation)."""
    loss_sum, correct = torch.zeros((), device=split.device), torch.zeros((), device=split.device)
    for (logits,), y in split_logits(model, split, batch_size, runtime):
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
    return {"loss": loss_sum.item() / len(split), "acc": correct.item() / len(split)}
