"""Which known architecture a state dict nobody detects comes closest to (for its error message).

spandrel detects an architecture by a few key names (its ``KeyCondition``). A file that fails
every condition (a re-parameterised deploy form with fused convolutions, renamed tensors, a
different model altogether) gets compared with the registry in two ways:

* the detection keys of every registered architecture: a key present counts 1, a key whose
  module is present under other tensor names (``conv_1.sk.weight`` where the file has
  ``conv_1.weight``) counts 1/2;
* for the few best of those, the full tensor names of a reference model built on the ``meta``
  device (no memory, no weights): kdcore's wrapper with its default params, else the
  architecture's own defaults. Names are compared with their numeric parts (``layers.3``)
  made generic, so depth does not matter.

Only called on the error path; it builds at most :data:`REFERENCES` models.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from spandrel import ArchRegistry, StateDict

#: how many of the best detection-key matches are compared with a full reference model
REFERENCES = 3

_NUM = re.compile(r"(?<=\.)\d+(?=\.|$)|^\d+(?=\.)")


@dataclass(frozen=True)
class Match:
    """How close a state dict comes to one architecture."""

    arch_id: str
    #: 0..1; 1 when every name matches
    score: float
    #: names the architecture has and the file lacks, and the reverse (a few of each)
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    #: the file's layers are the architecture's, under other tensor names (fused or renamed)
    renamed: bool


def generic(key: str) -> str:
    """``layers.3.blocks.0.weight`` -> ``layers.#.blocks.#.weight``."""
    return _NUM.sub("#", key)


def _prefixes(keys: set[str]) -> set[str]:
    out: set[str] = set()
    for key in keys:
        parts = key.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return out


def _module(key: str) -> str:
    return key.rsplit(".", 1)[0] if "." in key else ""


def _condition(cond: object, keys: set[str], prefixes: set[str]) -> tuple[float, int, list[str]]:
    """(points, keys, missing) of a spandrel ``KeyCondition`` (an ``any`` takes its best branch)."""
    if isinstance(cond, str):
        if cond in keys:
            return 1.0, 1, []
        owner = cond.rsplit(".", 2)[0] if cond.count(".") >= 2 else ""
        return (0.5 if owner and owner in prefixes else 0.0), 1, [cond]
    parts = [_condition(k, keys, prefixes) for k in getattr(cond, "_keys", ())]
    if not parts:
        return 0.0, 0, []
    if getattr(cond, "_kind", "all") == "any":
        return max(parts, key=lambda p: p[0] / max(p[1], 1))
    return sum(p[0] for p in parts), sum(p[1] for p in parts), [k for p in parts for k in p[2]]


def _reference_keys(arch_id: str) -> set[str] | None:
    """The tensor names of a default model of ``arch_id``, built on the meta device; None if it cannot be."""
    from kdcore.interfaces import Task
    from kdcore_spandrel.architectures import ARCHITECTURES, _ArchModel
    from kdcore_spandrel.loading import REGISTRY

    builders: list[Callable[[], torch.nn.Module]] = []
    for student, _, _ in ARCHITECTURES.values():
        if issubclass(student, _ArchModel) and student.arch_id == arch_id:
            wrapper: type[_ArchModel] = student
            kwargs = wrapper.arch_kwargs(wrapper.Params(), Task(kind="sr", scale=4))
            builders.append(functools.partial(wrapper.arch_cls, **kwargs))
    for support in REGISTRY:
        if support.architecture.id == arch_id:
            module = importlib.import_module(type(support.architecture).__module__)
            names = [n for n in getattr(module, "__all__", []) if n != type(support.architecture).__name__]
            if names:
                builders.append(getattr(module, names[0]))
    for build in builders:
        for device in ("meta", "cpu"):
            keys = _built_keys(build, device)
            if keys is not None:
                return keys
    return None


def _built_keys(build: Callable[[], torch.nn.Module], device: str) -> set[str] | None:
    """The state dict keys of ``build()`` on ``device``; None where it fails there (many
    architectures call ``.item()`` while building, which the meta device cannot)."""
    try:
        with warnings.catch_warnings(), torch.device(device):
            warnings.simplefilter("ignore")
            return set(build().state_dict())
    except Exception:  # noqa: BLE001 - an architecture that cannot be built this way
        return None


def closest_architectures(state: StateDict, registry: ArchRegistry | None = None) -> list[Match]:
    """The registry's architectures ranked by how well the state dict's tensor names match theirs.

    Architectures none of whose names match are left out; the list may be empty.
    """
    from kdcore_spandrel.loading import REGISTRY

    keys = {k for k, v in state.items() if isinstance(v, torch.Tensor)}
    prefixes = _prefixes(keys)
    by_detection: list[tuple[float, str, list[str]]] = []
    for support in registry if registry is not None else REGISTRY:
        cond = getattr(support.architecture, "_detect", None)
        if cond is None or not hasattr(cond, "_keys"):
            continue
        points, n, missing = _condition(cond, keys, prefixes)
        if n and points > 0:
            by_detection.append((points / n, support.architecture.id, missing))
    by_detection.sort(key=lambda t: -t[0])

    file_generic = {generic(k) for k in keys}
    file_modules = {_module(k) for k in file_generic} - {""}
    matches = []
    for rank, (score, arch_id, missing) in enumerate(by_detection):
        ref = _reference_keys(arch_id) if rank < REFERENCES else None
        if ref is None:
            matches.append(Match(arch_id, score, tuple(missing), (), renamed=False))
            continue
        ref_generic = {generic(k) for k in ref}
        exact = len(file_generic & ref_generic) / len(file_generic | ref_generic)
        covered = len(file_modules & (_prefixes(ref_generic) | {_module(k) for k in ref_generic}))
        coverage = covered / max(len(file_modules), 1)
        matches.append(
            Match(
                arch_id,
                max(score, (exact + coverage) / 2),
                tuple(sorted(ref_generic - file_generic)),
                tuple(sorted(file_generic - ref_generic)),
                renamed=coverage >= 0.8 and exact < 0.9,
            )
        )
    return sorted(matches, key=lambda m: -m.score)


def _short(names: list[str] | tuple[str, ...], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return f"{shown}, ... ({len(names)} in all)" if len(names) > limit else shown


def closest_line(state: StateDict) -> list[str]:
    """The lines of an error message naming the closest architecture and what differs."""
    with contextlib.suppress(Exception):
        matches = closest_architectures(state)
        if not matches:
            return [
                "  closest: none (no architecture spandrel knows shares its tensor names); "
                "it is not a supported image model"
            ]
        best = matches[0]
        diff = []
        if best.missing:
            diff.append(f"lacks {best.arch_id}'s {_short(best.missing)}")
        if best.unexpected:
            diff.append(f"has {_short(best.unexpected)} which {best.arch_id} has not")
        others = f"; next: {', '.join(m.arch_id for m in matches[1:3])}" if len(matches) > 1 else ""
        lines = [
            f"  closest: {best.arch_id} ({best.score:.0%} of names match; the file {'; '.join(diff)}){others}"
        ]
        if best.renamed:
            lines.append(
                f"  its layers are {best.arch_id}'s under other tensor names: a re-parameterised (deploy-form, "
                "fused) or renamed checkpoint; give the training-form checkpoint its authors publish, or "
                f"rename the tensors to {best.arch_id}'s"
            )
        return lines
    return []
