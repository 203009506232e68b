"""Checkpoints that survive a crash mid-write and load without unpickling arbitrary objects.

Written to a temporary file and renamed, so the previous checkpoint stays loadable until the new
one is complete; read with `weights_only=True`, so a file carrying a pickle payload is refused.
RNG states are stored as tensors (NumPy's tuple states would break `weights_only`).
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from cifar_study.errors import DataError, StudyError
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


def load_checkpoint(path: Path) -> Any:
    """Read a checkpoint or model file, tensors and plain containers only (which container is
    the caller's to check)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise DataError(_refusal(path, exc)) from None


def _refusal(path: Path, exc: Exception) -> str:
    """Why `path` did not load, in plain words: torch's own message advises turning off
    `weights_only` (which would run any pickled code) and carries terminal escape codes."""
    unsafe = re.search(r"GLOBAL (\S+) was not an allowed global", str(exc))
    if unsafe:
        return (
            f"{path} cannot be loaded safely: it holds pickled Python objects "
            f"({unsafe.group(1)}), which are refused: only tensors and plain containers are "
            "allowed"
        )
    if not zipfile.is_zipfile(path):
        return f"{path} is not a torch file: it is empty, truncated or another kind of file"
    return f"{path} is not a tensors-only torch checkpoint: it is corrupt or not from torch.save"


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
