"""RunPlan: a spec resolved once into typed components, data sources, settings and an output folder.

Everything downstream (the engine, ``kdcore eval``, ``kdcore.load``, ``kdcore validate``) works
from a plan and never re-validates or re-looks-up what the plan already holds. A plan writes the
run folder's ``spec.json`` and is rebuilt from it by :meth:`RunPlan.from_run`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pydantic
import torch

from kdcore._version import __version__
from kdcore.data.sources import DataSource, UnlabeledSource, source_from_spec
from kdcore.errors import ComponentError, KdcoreError, SpecError
from kdcore.interfaces import Task, Teacher
from kdcore.registry import Registration, Registry
from kdcore.spec import (
    DataSpec,
    RunSpec,
    TrainSpec,
    absolute_paths,
    apply_overrides,
    errors_to_messages,
    load_raw,
    parse,
    read_spec_file,
    spec_error,
)

SPEC_FILE = "spec.json"

SpecLike = dict | str | os.PathLike | RunSpec


def build_component(
    reg: Registration,
    params: dict | pydantic.BaseModel | None,
    task: Task | None,
    *,
    where: str = "",
    **kwargs: Any,
) -> torch.nn.Module:
    """Builds a registered component; ``params`` may be a dict (validated here) or a Params object."""
    if not isinstance(params, pydantic.BaseModel):
        params = validate_params(reg, params, where)
    if reg.kind in ("student", "teacher"):
        if task is not None and task.kind not in reg.cls.supported_tasks:
            raise SpecError(
                f"{where + ': ' if where else ''}{reg.kind} {reg.name!r} is for "
                f"{' or '.join(reg.cls.supported_tasks)} tasks, not {task.kind!r}"
            )
        return reg.cls(params, task)
    if reg.kind == "adapter":
        return reg.cls(params, kwargs["in_channels"], kwargs["out_channels"])
    return reg.cls(params)


def create_component(
    kind: str, name: str, params: dict | None = None, task: Task | None = None, **kwargs: Any
) -> torch.nn.Module:
    """A registered component built by name (what :func:`kdcore.create` does); ``task``
    defaults to sr ×2, adapters need ``in_channels`` and ``out_channels``."""
    from kdcore.plugins import get_registry
    from kdcore.registry import PLURAL, SINGULAR

    kind = SINGULAR.get(kind, kind)
    if kind not in PLURAL:
        raise SpecError(f"kind must be one of {', '.join(PLURAL)}, not {kind!r}")
    if kind == "adapter" and not {"in_channels", "out_channels"} <= kwargs.keys():
        raise SpecError("create('adapter', ...) needs in_channels= and out_channels=")
    reg = get_registry().lookup(kind, name)
    return build_component(reg, params, task if task is not None else Task(kind="sr", scale=2), **kwargs)


def validate_params(reg: Registration, params: dict | None, where: str = "") -> pydantic.BaseModel:
    """The component's ``Params`` from a spec dict; errors name ``where.params``."""
    try:
        return reg.cls.Params.model_validate(params or {})
    except pydantic.ValidationError as exc:
        prefix = f"{where}.params" if where else "params"
        raise spec_error(errors_to_messages(exc, reg.cls.Params, prefix=prefix)) from None


@dataclass(frozen=True)
class ComponentPlan:
    """One component of the spec, resolved: its registration, validated params, spec location."""

    where: str  # spec location, e.g. "losses[1]" (what error messages name)
    kind: str  # the kind it was asked for: student, teacher or loss
    name: str  # the name as the spec writes it
    registration: Registration
    params: pydantic.BaseModel
    checkpoint: Path | None = None
    weight: float = 1.0

    @property
    def cls(self) -> type:
        return self.registration.cls

    def build(self, task: Task) -> torch.nn.Module:
        return build_component(self.registration, self.params, task, where=self.where)

    @property
    def needs_checkpoint(self) -> bool:
        """False for teachers that are complete without weights (image operators, bicubic)."""
        return not (issubclass(self.cls, Teacher) and not self.cls.needs_checkpoint)


@dataclass(frozen=True)
class RunPlan:
    """A whole run, resolved: what to build, from which data, how to train, where to write."""

    task: Task
    student: ComponentPlan
    teachers: tuple[ComponentPlan, ...]
    losses: tuple[ComponentPlan, ...]
    train_data: DataSource
    val_sets: dict[str, DataSource]  # name -> source, in the spec's order (one entry for a plain data.val)
    unlabeled: tuple[UnlabeledSource, ...]
    data: DataSpec
    train: TrainSpec
    output: Path
    spec: RunSpec = field(compare=False, repr=False)  # the spec as validated (paths resolved)
    registry: Registry = field(compare=False, repr=False)
    student_init: str | Path | None = None  # "teacher", a weights file / run folder, or None

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def from_spec(
        cls,
        spec: SpecLike,
        overrides: dict[str, Any] | None = None,
        *,
        registry: Registry | None = None,
        check_sources: bool = True,
    ) -> RunPlan:
        """Parses, applies ``overrides`` (dotted keys), resolves paths, components and sources."""
        raw, base = load_raw(spec)
        if overrides:  # paths given as overrides are relative to the current directory
            raw = apply_overrides(
                raw, absolute_paths({k.replace("__", "."): v for k, v in overrides.items()})
            )
        return cls._from_raw(raw, base, registry, check_sources)

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, *, registry: Registry | None = None) -> RunPlan:
        """The plan a run folder's ``spec.json`` records (what ``--resume``, eval and load use)."""
        raw = read_run_spec(run_dir)
        data = raw.get("data")
        if isinstance(data, dict) and "degradation" not in data:
            data["degradation"] = "torch-bicubic"  # a run made before kdcore 1.2 used PyTorch's bicubic
        return cls._from_raw(raw, Path(run_dir).resolve(), registry, check_sources=False)

    @classmethod
    def _from_raw(cls, raw: dict, base: Path, registry: Registry | None, check_sources: bool) -> RunPlan:
        if registry is None:
            from kdcore.plugins import get_registry

            registry = get_registry()
        spec = parse(raw, base)
        student, teachers, losses = _resolve_components(spec, registry)
        _fill_params(spec, student, teachers, losses)
        train_data, val_sets, unlabeled = _resolve_sources(spec, check_sources)
        _check_optimizer(spec.train.optimizer)
        return cls(
            task=spec.task,
            student=student,
            teachers=teachers,
            losses=losses,
            train_data=train_data,
            val_sets=val_sets,
            unlabeled=unlabeled,
            data=spec.data,
            train=spec.train,
            output=Path(spec.output),
            spec=spec,
            registry=registry,
            student_init=_init_of(spec.student.init),
        )

    # -- the run folder ---------------------------------------------------------------------
    def resolved(self) -> dict:
        """The spec as the run folder stores it: defaults filled in, plugin versions recorded."""
        data = self.spec.to_json()
        for comp in self.components():
            node = data
            for part in comp.where.replace("[", ".").replace("]", "").split("."):
                node = node[int(part)] if part.isdigit() else node[part]
            node["params"] = comp.params.model_dump(mode="json")
        used = {"kdcore": __version__}
        for comp in self.components():
            used[comp.registration.distribution] = comp.registration.version
        data["plugins"] = dict(sorted(used.items()))
        return data

    def write_spec(self, folder: Path) -> None:
        from kdcore.files import atomic_write

        text = json.dumps(self.resolved(), indent=2) + "\n"
        atomic_write(folder / SPEC_FILE, lambda tmp: Path(tmp).write_text(text))

    # -- conveniences -----------------------------------------------------------------------
    def components(self) -> list[ComponentPlan]:
        return [self.student, *self.teachers, *self.losses]

    @property
    def val_data(self) -> DataSource:
        """The first validation set (the one the top-level figures of summary.json describe)."""
        return next(iter(self.val_sets.values()))

    @property
    def degradation(self) -> str:
        """How sr inputs and the bicubic baseline are made (``data.degradation``)."""
        return self.data.degradation

    def has_targets(self) -> bool:
        """Whether the training data has ground truth (sr always has: targets are the images)."""
        return self.train_data.has_targets(self.task)

    def with_overrides(self, **overrides: Any) -> RunPlan:
        """A new plan from this one's spec with ``--set``-style overrides (``train__steps=10``)."""
        return RunPlan.from_spec(self.spec, overrides, registry=self.registry)


def _init_of(value: str | None) -> str | Path | None:
    return value if value in (None, "teacher") else Path(value)


def read_run_spec(run_dir: str | os.PathLike) -> dict:
    """The ``spec.json`` of a run folder (the one place that reads it)."""
    folder = Path(run_dir)
    if not folder.is_dir():
        raise SpecError(f"{folder}: no such run folder")
    spec_file = folder / SPEC_FILE
    if not spec_file.exists():
        raise SpecError(f"{folder}: not a kdcore run folder (no {SPEC_FILE})")
    try:
        return read_spec_file(spec_file)
    except SpecError as exc:
        raise KdcoreError(str(exc)) from None


def _resolve_components(spec: RunSpec, registry: Registry):
    messages: list[str] = []

    def resolve(where: str, kind: str, comp, **extra) -> ComponentPlan | None:
        try:
            reg = registry.lookup(kind, comp.name, where=f"{where}.name")
        except ComponentError as exc:
            messages.append(str(exc))
            return None
        try:
            params = reg.cls.Params.model_validate(comp.params)
        except pydantic.ValidationError as exc:
            messages.extend(errors_to_messages(exc, reg.cls.Params, prefix=f"{where}.params"))
            return None
        return ComponentPlan(where, kind, comp.name, reg, params, **extra)

    def path(p: str | None) -> Path | None:
        return Path(p) if p is not None else None

    student = resolve("student", "student", spec.student, checkpoint=path(spec.student.checkpoint))
    teachers = [
        resolve(spec.teacher_location(i), "teacher", t, checkpoint=path(t.checkpoint), weight=t.weight)
        for i, t in enumerate(spec.teachers)
    ]
    losses = [resolve(f"losses[{i}]", "loss", loss, weight=loss.weight) for i, loss in enumerate(spec.losses)]
    if messages:
        raise spec_error(messages)
    return student, tuple(teachers), tuple(losses)


def _fill_params(spec: RunSpec, student: ComponentPlan, teachers, losses) -> None:
    """Writes the validated params (defaults filled in) back into the spec the plan keeps."""
    spec.student.params = student.params.model_dump(mode="json")
    for tspec, comp in zip(spec.teachers, teachers, strict=True):
        tspec.params = comp.params.model_dump(mode="json")
    for lspec, comp in zip(spec.losses, losses, strict=True):
        lspec.params = comp.params.model_dump(mode="json")


def _resolve_sources(spec: RunSpec, check: bool):
    messages: list[str] = []
    degradation = spec.data.degradation
    train = source_from_spec(spec.data.train, where="data.train", degradation=degradation)
    val_spec = spec.data.val
    if isinstance(val_spec, dict):
        if not val_spec:
            raise SpecError(
                "data.val: the object names no validation set; give at least one, e.g. "
                '{"Set5": "builtin:set5"}'
            )
        val = {
            name: source_from_spec(value, where=f"data.val.{name}", degradation=degradation)
            for name, value in val_spec.items()
        }
    else:
        source = source_from_spec(val_spec, where="data.val", degradation=degradation)
        val = {set_name(source): source}
    unlabeled = []
    for i, value in enumerate(spec.data.unlabeled):
        where = f"data.unlabeled[{i}]"
        unlabeled.append(UnlabeledSource(source_from_spec(value, where=where), where=where))  # type: ignore[arg-type]
    if check:
        for source in (train, *val.values(), *unlabeled):
            try:
                source.check()
            except KdcoreError as exc:  # noqa: PERF203 - every source's problem is reported at once
                messages.append(str(exc))
    if messages:
        raise spec_error(messages)
    return train, val, tuple(unlabeled)


def set_name(source: DataSource) -> str:
    """The name a single (unnamed) validation set is reported under: the built-in name, or the folder's."""
    spelled = source.to_spec()
    if isinstance(spelled, dict):
        return Path(spelled["target"]).name
    return spelled.split(":", 1)[1] if spelled.startswith("builtin:") else Path(spelled).name


def _check_optimizer(name: str) -> None:
    import timm.optim

    names = cast(list[str], timm.optim.list_optimizers())  # names only, without descriptions
    if name.lower() not in {o.lower() for o in names}:
        raise SpecError(
            f"train.optimizer: unknown optimizer {name!r}; "
            "timm.optim.list_optimizers() lists the names (e.g. adamw, adam, sgd, lion)"
        )
