"""Reading and writing weights (safetensors) and resumable training state, atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from kdcore.errors import CheckpointError
from kdcore.files import atomic_write

WEIGHTS = "model.safetensors"
STATE = "checkpoint.pt"


def weights_path(path: str | os.PathLike) -> Path:
    """A .safetensors file, or the model.safetensors of a run folder."""
    p = Path(path)
    return p / WEIGHTS if p.is_dir() else p


def save_weights(module: torch.nn.Module, path: Path) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))


def read_weights(path: str | os.PathLike, *, where: str = "") -> dict[str, torch.Tensor]:
    p = weights_path(path)
    at = f"{where}: " if where else ""
    if not p.exists():
        raise CheckpointError(f"{at}checkpoint {p} does not exist")
    try:
        return load_file(str(p))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{at}cannot read checkpoint {p} ({exc}); it is truncated or not a safetensors file"
        ) from None


def load_weights(
    module: torch.nn.Module, path: str | os.PathLike, *, where: str = "", partial: bool = False
) -> list[str]:
    """Loads weights into ``module``; refuses tensors that do not fit with their names and shapes.

    With ``partial``, the module may have tensors the file lacks (returned: they keep their
    initial values), but every tensor of the file must fit.
    """
    state = read_weights(path, where=where)
    own = module.state_dict()
    problems = []
    for k, v in state.items():
        if k not in own:
            problems.append(f"unexpected {k} {tuple(v.shape)}")
        elif own[k].shape != v.shape:
            problems.append(f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}")
    missing = [k for k in own if k not in state]
    if missing and not partial:
        problems += [f"missing {k} {tuple(own[k].shape)}" for k in missing]
    if problems:
        at = f"{where}: " if where else ""
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise CheckpointError(
            f"{at}checkpoint {weights_path(path)} does not fit the architecture "
            f"({shown}); check the component name and its params"
        )
    module.load_state_dict(state, strict=not partial)
    return missing


def save_state(state: dict[str, Any], path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means the file cannot be trusted
        raise CheckpointError(f"cannot read the training state {path}: {exc}") from None
