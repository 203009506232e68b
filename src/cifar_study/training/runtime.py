"""Where and how training computes: device, precision, memory layout, processes.

Decided once, here, from params.yaml and the environment (`torchrun` sets RANK/WORLD_SIZE), so
that models and the engine never branch on hardware themselves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist

from cifar_study.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Runtime:
    """The resolved compute setup of one training process."""

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
