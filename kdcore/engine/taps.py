"""FeatureTaps: capture intermediate outputs of a model by module path with forward hooks."""

from __future__ import annotations

import difflib

import torch

from kdcore.errors import SpecError
from kdcore.interfaces import ModelOutput


def first_tensor(value) -> torch.Tensor | None:
    """The first tensor in a module's output (a tensor, a ModelOutput's image, or inside a tuple/list)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, ModelOutput):
        return value.image
    if isinstance(value, (tuple, list)):
        for v in value:
            t = first_tensor(v)
            if t is not None:
                return t
    return None


def check_paths(model: torch.nn.Module, paths: list[str], *, where: str, role: str) -> None:
    """Raises a SpecError naming ``where`` when a path is not a module of ``model``."""
    modules = dict(model.named_modules())
    for path in paths:
        if path not in modules or path == "":
            names = [n for n in modules if n]
            close = difflib.get_close_matches(path, names, n=3, cutoff=0.4)
            hint = (
                f"; did you mean {', '.join(repr(c) for c in close)}?"
                if close
                else f"; its modules include {', '.join(repr(n) for n in names[:8])}"
            )
            raise SpecError(f"{where}: the {role} has no module {path!r}{hint}")


class FeatureTaps:
    """Registers forward hooks on the named modules and collects their outputs per forward."""

    def __init__(self, model: torch.nn.Module, paths: list[str], *, where: str = "", role: str = "model"):
        self.paths = list(dict.fromkeys(paths))
        check_paths(model, self.paths, where=where, role=role)
        modules = dict(model.named_modules())
        self.features: dict[str, torch.Tensor] = {}
        self._handles = [modules[p].register_forward_hook(self._hook(p)) for p in self.paths]

    def _hook(self, path: str):
        def hook(module, inputs, output):
            tensor = first_tensor(output)
            if tensor is None:
                raise SpecError(f"module {path!r} ({type(module).__name__}) returns no tensor to capture")
            self.features[path] = tensor

        return hook

    def collect(self) -> dict[str, torch.Tensor]:
        """The features captured since the last call (and forgets them)."""
        out, self.features = self.features, {}
        return out

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
