"""Reading checkpoint files without running code, and detecting their architecture.

``.pth``/``.pt``/``.ckpt`` go through ``torch.load(weights_only=True)``: a pickle that names
anything but tensors and plain containers is refused before any of it runs. TorchScript archives
(which carry code) are refused too. ``.safetensors`` holds tensors only.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from spandrel import MAIN_REGISTRY as _SPANDREL_REGISTRY
from spandrel import (
    ArchRegistry,
    ArchSupport,
    ImageModelDescriptor,
    ModelDescriptor,
    StateDict,
    UnsupportedModelError,
    canonicalize_state_dict,
)

from kdcore.errors import CheckpointError, KdcoreError, SpecError
from kdcore.interfaces import Task
from kdcore_spandrel.edsr import EDSRArch

EXTENSIONS = (".pth", ".pt", ".ckpt", ".safetensors")


def _make_registry() -> ArchRegistry:
    """spandrel's architectures plus EDSR, checked first (its keys are specific; others' are looser)."""
    registry = ArchRegistry()
    registry.add(ArchSupport.from_architecture(EDSRArch()), *_SPANDREL_REGISTRY.architectures("insertion"))
    return registry


#: the plugin's own architecture registry: spandrel's global registry is left untouched
REGISTRY = _make_registry()


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.split("/", 1)[-1].startswith("code/") for n in zf.namelist())


def read_state_dict(path: Path, *, where: str) -> StateDict:
    """The canonical state dict of a checkpoint file; never unpickles anything but tensors."""
    at = f"{where}: " if where else ""
    ext = path.suffix.lower()
    if ext not in EXTENSIONS:
        raise SpecError(
            f"{at}{path} is not a checkpoint kdcore can read; give a {', '.join(EXTENSIONS)} file"
        )
    if not path.is_file():
        raise CheckpointError(f"{at}checkpoint {path} does not exist")
    try:
        if ext == ".safetensors":
            try:
                state = load_file(str(path))
            except (SafetensorError, ValueError) as exc:
                raise CheckpointError(
                    f"{at}cannot read checkpoint {path} ({exc}); it is truncated or not a safetensors file"
                ) from None
        else:
            if _is_torchscript(path):
                raise CheckpointError(
                    f"{at}{path} is a TorchScript archive, which carries code; kdcore loads weights only: "
                    "save the model's state_dict() (or a .safetensors file) instead"
                )
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as exc:
                reason = str(exc).strip().splitlines()
                detail = next(
                    (line for line in reason if "GLOBAL" in line or "Unsupported" in line),
                    reason[0] if reason else "",
                )
                raise CheckpointError(
                    f"{at}{path} refers to Python objects other than tensors ({detail.strip()}); it was not "
                    "loaded and none of its code ran. Re-save only the state dict (torch.save(model.state_dict(), ...)) "
                    "or convert it to .safetensors"
                ) from None
            except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, IndexError) as exc:
                raise CheckpointError(
                    f"{at}cannot read checkpoint {path} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                    "it is truncated or not a PyTorch checkpoint"
                ) from None
    except OSError as exc:
        raise KdcoreError(f"{at}cannot read {path}: {exc.strerror or exc}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{at}{path} holds a {type(state).__name__}, not a state dict of tensors")
    try:
        return canonicalize_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - any failure here means the file is not a model's state dict
        raise CheckpointError(f"{at}{path} is not a model state dict ({exc})") from None


def detect(state: StateDict, path: Path, *, where: str) -> ModelDescriptor:
    """The spandrel descriptor of a state dict (architecture, scale, channels, size requirements)."""
    at = f"{where}: " if where else ""
    if not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{at}{path} holds no tensors")
    try:
        return REGISTRY.load(state)
    except UnsupportedModelError:
        raise CheckpointError(
            f"{at}{path}: no architecture known to spandrel {_spandrel_version()} (or EDSR) matches its "
            f"weights (first keys: {', '.join(list(state)[:4])})"
        ) from None
    except Exception as exc:  # noqa: BLE001 - a detected architecture whose weights do not fit
        raise CheckpointError(
            f"{at}{path}: its weights look like a known architecture but do not load "
            f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]}); the file may be damaged"
        ) from None


def _spandrel_version() -> str:
    import spandrel

    return spandrel.__version__


def arch_name(descriptor: ModelDescriptor) -> str:
    """E.g. ``RCAN`` or ``RealESRGAN Compact``."""
    return descriptor.architecture.name


def check_fits(descriptor: ModelDescriptor, task: Task, path: Path, *, where: str) -> ImageModelDescriptor:
    """Refuses a model that is not a 3-channel image-to-image model of the task's scale."""
    at = f"{where}: " if where else ""
    name = arch_name(descriptor)
    if not isinstance(descriptor, ImageModelDescriptor):
        raise CheckpointError(
            f"{at}{path} is a {name} model for {descriptor.purpose.lower()} (it needs more than an image); "
            "kdcore teachers map an image to an image"
        )
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise CheckpointError(
            f"{at}{path} is a {name} model with {descriptor.input_channels} input and "
            f"{descriptor.output_channels} output channels; kdcore needs RGB to RGB (3 and 3)"
        )
    if descriptor.scale != task.scale:
        what = (
            f"task.scale is {task.scale}"
            if task.kind == "sr"
            else "task 'enhance' needs a ×1 restoration model"
        )
        raise CheckpointError(f"{at}{path} is a {name} model; model is ×{descriptor.scale}, {what}")
    return descriptor


def load_descriptor(path: Path, task: Task, *, where: str) -> ImageModelDescriptor:
    """Reads, detects and checks a checkpoint for ``task``."""
    descriptor = detect(read_state_dict(path, where=where), path, where=where)
    return check_fits(descriptor, task, path, where=where)
