"""Checkpoints that survive a crash mid-write and load without unpickling arbitrary objects.

Written to a temporary file and renamed, so the previous checkpoint stays loadable until the new
one is complete; read with `weights_only=True`, so a file carrying a pickle payload is refused.
RNG states are stored as tensors (NumPy's tuple states would break `weights_only`).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from cifar_study.errors import StudyError
from cifar_study.fileio import atomic_path


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write `state` atomically; a failure (a full disk, say) leaves the old file untouched."""
    try:
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    except (OSError, RuntimeError) as exc:  # torch.save reports a short write as RuntimeError
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StudyError(
            f"could not write checkpoint {path}: {reason}; the previous one is kept"
        ) from None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint or model file, tensors and plain containers only."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise StudyError(
            f"{path} cannot be loaded safely ({str(exc).splitlines()[0]}); "
            "it is corrupt or carries objects other than tensors"
        ) from None


def rng_state() -> dict[str, Any]:
    """Every generator training draws from: torch's CPU generator and each CUDA device's."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
