"""The Python API (what notebooks and scripts use; the command line is built on it)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

import kdcore
from kdcore.errors import KdcoreError, SpecError
from kdcore.interfaces import Task
from kdcore.plugins import get_plugins, get_registry
from kdcore.registry import PLURAL, SINGULAR
from kdcore.spec import (
    BUILTIN_PREFIX,
    PairedSource,
    RunSpec,
    apply_overrides,
    components_of,
    load_raw,
    parse,
    resolve_components,
    spec_error,
)


def _overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    return {k.replace("__", "."): v for k, v in overrides.items()}


def _check_sources(spec: RunSpec) -> None:
    from kdcore.data import IMAGE_EXTENSIONS, builtin_names

    messages = []
    sources = [(f"data.{key}", getattr(spec.data, key)) for key in ("train", "val")]
    sources += [(f"data.unlabeled[{i}]", u) for i, u in enumerate(spec.data.unlabeled)]
    for where, src in sources:
        folders = []
        if isinstance(src, PairedSource):
            folders = [(f"{where}.input", src.input), (f"{where}.target", src.target)]
        elif src.startswith(BUILTIN_PREFIX):
            names = builtin_names()
            if src[len(BUILTIN_PREFIX):] not in names:
                valid = ", ".join(BUILTIN_PREFIX + n for n in names)
                messages.append(f"{where}: unknown built-in data {src!r}; valid: {valid}")
        else:
            folders = [(where, src)]
        for w, folder in folders:
            p = Path(folder)
            if not p.is_dir():
                messages.append(f"{w}: folder {p} does not exist" if not p.exists() else f"{w}: {p} is not a folder")
            elif not any(f.suffix.lower() in IMAGE_EXTENSIONS for f in p.iterdir() if not f.name.startswith(".")):
                messages.append(f"{w}: folder {p} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    if messages:
        raise spec_error(messages)


def prepare(spec: dict | str | os.PathLike | RunSpec, overrides: dict[str, Any] | None = None) -> RunSpec:
    """Parses, applies overrides, resolves paths and components; no model is built."""
    raw, base = load_raw(spec)
    if overrides:
        raw = apply_overrides(raw, _overrides(overrides))
    run_spec = parse(raw, base)
    resolve_components(run_spec, get_registry())
    _check_sources(run_spec)
    import timm.optim

    if run_spec.train.optimizer.lower() not in {o.lower() for o in timm.optim.list_optimizers()}:
        raise SpecError(
            f"train.optimizer: unknown optimizer {run_spec.train.optimizer!r}; "
            "timm.optim.list_optimizers() lists the names (e.g. adamw, adam, sgd, lion)"
        )
    return run_spec


def validate(spec: dict | str | os.PathLike | RunSpec, **overrides: Any) -> RunSpec:
    """Everything that can be checked without training, including a tiny forward pass that checks
    feature-layer paths and builds the adapters. Raises :class:`kdcore.SpecError`."""
    from kdcore.engine.build import build_run

    run_spec = prepare(spec, overrides)
    build_run(run_spec, get_registry(), torch.device("cpu"), for_run=False)
    return run_spec


def resolved_spec(spec: RunSpec) -> dict:
    """The spec as a run folder stores it: defaults filled in, plugin versions recorded."""
    data = spec.to_json()
    used = {"kdcore": kdcore.__version__}
    for where, _, _ in components_of(spec):
        reg = spec.registration(where)
        used[reg.distribution] = reg.version
    data["plugins"] = dict(sorted(used.items()))
    return data


def run(
    spec: dict | str | os.PathLike | RunSpec,
    *,
    resume: bool = False,
    overwrite: bool = False,
    callback: Callable[..., None] | None = None,
    **overrides: Any,
) -> dict:
    """Trains as the spec says (``kdcore run``) and returns the content of summary.json.

    ``overrides`` use the ``--set`` spelling with ``__`` for dots: ``train__steps=10``.
    """
    from kdcore.engine.loop import train

    run_spec = prepare(spec, overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = train(run_spec, get_registry(), resolved=resolved_spec(run_spec), resume=resume,
                        overwrite=overwrite, callback=callback)
    kdcore.report.report_after_run(summary["output"])  # RUN/report.html; a failure only warns
    return summary


def create(kind: str, name: str, params: dict | None = None, task: Task | None = None, **kwargs: Any):
    """Builds a registered component by name: ``kind`` is student, teacher, loss or adapter.

    Adapters also need ``in_channels`` and ``out_channels``.
    """
    from kdcore.engine.build import instantiate

    kind = SINGULAR.get(kind, kind)
    if kind not in PLURAL:
        raise SpecError(f"kind must be one of {', '.join(PLURAL)}, not {kind!r}")
    if kind == "adapter" and not {"in_channels", "out_channels"} <= kwargs.keys():
        raise SpecError("create('adapter', ...) needs in_channels= and out_channels=")
    reg = get_registry().lookup(kind, name)
    task = task if task is not None else Task(kind="sr", scale=2)
    return instantiate(reg, params, task, **kwargs)


def load(run_dir: str | os.PathLike) -> torch.nn.Module:
    """The trained student of a run folder, in eval mode, with its weights loaded."""
    from kdcore.engine.build import instantiate
    from kdcore.engine.checkpoints import WEIGHTS, load_weights

    folder = Path(run_dir)
    spec_file = folder / "spec.json"
    if not spec_file.exists():
        raise KdcoreError(f"{folder}: not a kdcore run folder (no spec.json)")
    raw = json.loads(spec_file.read_text())
    task = Task.model_validate(raw["task"])
    student = raw["student"]
    reg = get_registry().lookup("student", student["name"], where=f"{spec_file}: student.name")
    model = instantiate(reg, student.get("params", {}), task, where="student")
    load_weights(model, folder / WEIGHTS, where=str(folder))
    return model.eval()


def list_components(kind: str, pattern: str = "*") -> list[str]:
    """Registered names of one kind (students, teachers, losses, adapters), with timm-style wildcards."""
    kind = SINGULAR.get(kind, kind)
    if kind not in PLURAL:
        raise SpecError(f"kind must be one of {', '.join(PLURAL)}, not {kind!r}")
    return sorted({r.name for r in get_registry().list(kind, pattern)})


def plugins_report() -> list[dict]:
    return [r.as_dict() for r in get_plugins().records]
