"""Reading checkpoint files without running code, and detecting their architecture.

``.pth``/``.pt``/``.ckpt`` go through ``torch.load(weights_only=True)``: a pickle that names
anything but tensors and plain containers is refused before any of it runs. TorchScript archives
(which carry code) are refused too. ``.safetensors`` holds tensors only.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint file's canonical state dict and what its top level held (for error messages)."""

    state: StateDict
    #: e.g. ``a dict with top-level keys params, optimizer``; empty where the file is the state dict itself
    found: str


def _short(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return f"{shown}, ... ({len(names)} in all)" if len(names) > limit else shown


def describe_object(obj: object) -> str:
    """What a loaded checkpoint object is, in a few words: its type, top-level keys or shape."""
    if isinstance(obj, torch.Tensor):
        return f"a single tensor of shape {tuple(obj.shape)}"
    if isinstance(obj, dict):
        return f"a dict with top-level keys {_short([str(k) for k in obj])}" if obj else "an empty dict"
    if isinstance(obj, (list, tuple)):
        kinds = sorted({type(v).__name__ for v in obj})
        return f"a {type(obj).__name__} of {len(obj)} items ({', '.join(kinds) or 'empty'})"
    return f"a {type(obj).__name__}"


def read_checkpoint(path: Path, *, where: str) -> Checkpoint:
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
    found = describe_object(state)
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{at}{path} holds {found}, not a state dict (a dict of tensor names to tensors); "
            "save the network's weights with torch.save(model.state_dict(), ...)"
        )
    try:
        canonical = canonicalize_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - any failure here means the file is not a model's state dict
        raise CheckpointError(f"{at}{path} is not a model state dict ({exc}); it holds {found}") from None
    # the top level is worth naming only where the state dict was found inside it
    return Checkpoint(canonical, "" if canonical.keys() == state.keys() else found)


def read_state_dict(path: Path, *, where: str) -> StateDict:
    """The canonical state dict of a checkpoint file; never unpickles anything but tensors."""
    return read_checkpoint(path, where=where).state


def undetected_message(state: StateDict, path: Path, found: str | None, *, where: str) -> str:
    """The error for a state dict no architecture detects: what was found and the closest match."""
    from kdcore_spandrel.matching import closest_line

    at = f"{where}: " if where else ""
    tensors = [k for k, v in state.items() if isinstance(v, torch.Tensor)]
    holds = f"it holds {found}; " if found else ""
    return "\n".join(
        [
            f"{at}{path}: no architecture known to spandrel {_spandrel_version()} (or EDSR) matches its weights",
            f"  found: {holds}{len(tensors)} tensor{'s' if len(tensors) != 1 else ''}, e.g. {', '.join(tensors[:4])}",
            *closest_line(state),
        ]
    )


def detect(state: StateDict, path: Path, *, where: str, found: str | None = None) -> ModelDescriptor:
    """The spandrel descriptor of a state dict (architecture, scale, channels, size requirements).

    ``found`` says what the file's top level held (from :func:`read_checkpoint`), for the error
    raised when no architecture matches.
    """
    at = f"{where}: " if where else ""
    if not any(isinstance(v, torch.Tensor) for v in state.values()):
        holds = found or describe_object(state)
        raise CheckpointError(
            f"{at}{path} holds no tensors ({holds}); give a file with the network's state dict"
        )
    try:
        return REGISTRY.load(state)
    except UnsupportedModelError:
        raise CheckpointError(undetected_message(state, path, found, where=where)) from None
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
    checkpoint = read_checkpoint(path, where=where)
    descriptor = detect(checkpoint.state, path, where=where, found=checkpoint.found)
    return check_fits(descriptor, task, path, where=where)
