"""Turning a validated RunSpec into modules: student, teachers, losses, taps and adapters."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import pydantic
import torch

from kdcore.errors import SpecError
from kdcore.interfaces import AdapterFactory, ModelOutput, Student, Task, Teacher, as_output
from kdcore.registry import Registration, Registry
from kdcore.spec import RunSpec, TeacherSpec, build_params, errors_to_messages, spec_error
from kdcore.engine.checkpoints import load_weights, weights_path
from kdcore.engine.taps import FeatureTaps


class SpecWarning(UserWarning):
    """Something `kdcore validate` cannot confirm yet (e.g. a checkpoint an earlier run will make)."""


def instantiate(reg: Registration, params: dict | pydantic.BaseModel | None, task: Task | None,
                *, where: str = "", **kwargs: Any) -> torch.nn.Module:
    """Builds a registered component from (unvalidated) params; errors name ``where``."""
    if not isinstance(params, pydantic.BaseModel):
        try:
            params = reg.cls.Params.model_validate(params or {})
        except pydantic.ValidationError as exc:
            raise spec_error(errors_to_messages(exc, reg.cls.Params, prefix=f"{where}.params" if where else "params")) from None
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


def adapter_factory(registry: Registry, loss_where: str) -> AdapterFactory:
    def build(name: str, params: dict | None, in_channels: int, out_channels: int, where: str):
        where = where or f"{loss_where}.params"
        if not where.startswith(loss_where):
            where = f"{loss_where}.{where}"
        reg = registry.lookup("adapter", name, where=where)
        return instantiate(reg, params, None, where=where, in_channels=in_channels, out_channels=out_channels)

    return AdapterFactory(build)


def teacher_needs_checkpoint(reg: Registration) -> bool:
    return not (issubclass(reg.cls, Teacher) and not reg.cls.needs_checkpoint)


@dataclass
class BuiltRun:
    """Every module of a run, on its device."""

    student: Student
    teachers: list[torch.nn.Module]
    teacher_weights: list[float]
    losses: torch.nn.ModuleList
    loss_names: list[str]
    loss_weights: list[float]
    student_taps: FeatureTaps | None = None
    teacher_taps: list[FeatureTaps | None] = field(default_factory=list)
    run_teacher: bool = False  # whether each step needs the teacher's output
    missing_init: list[str] = field(default_factory=list)

    def teacher_forward(self, x: torch.Tensor) -> ModelOutput:
        """The weighted ensemble of the teachers' images, and each teacher's requested features.

        With several teachers a feature path ``I/path`` names teacher ``I`` (0-based); a bare path
        names the first teacher.
        """
        feats: dict[str, torch.Tensor] = {}
        with torch.inference_mode():
            outs = [as_output(t(x)) for t in self.teachers]
            for i, taps in enumerate(self.teacher_taps):
                if taps is not None:
                    for path, value in taps.collect().items():
                        feats[path if i == 0 else f"{i}/{path}"] = value
                        if i == 0:
                            feats[f"0/{path}"] = value
        total = sum(self.teacher_weights)
        image = sum(w / total * o.image for w, o in zip(self.teacher_weights, outs))
        # inference tensors cannot be saved for backward: hand the losses ordinary copies
        return ModelOutput(image=image.clone(), features={k: v.clone() for k, v in feats.items()})

    def student_forward(self, x: torch.Tensor, model: torch.nn.Module | None = None) -> ModelOutput:
        out = as_output((model or self.student)(x))
        if self.student_taps:
            out.features.update(self.student_taps.collect())
        return out


def build_run(spec: RunSpec, registry: Registry, device: torch.device, *, for_run: bool) -> BuiltRun:
    """Builds the run's modules. ``for_run=False`` (validate) downgrades a missing checkpoint file to a warning."""
    task = spec.task
    student = instantiate(spec.registration("student"), build_params(spec, "student"), task, where="student")
    missing_init: list[str] = []
    if spec.student.checkpoint:
        path = weights_path(spec.student.checkpoint)
        if path.exists() or for_run:
            missing_init = load_weights(student, path, where="student.checkpoint", partial=True)
        else:
            warnings.warn(f"student.checkpoint: {path} does not exist yet", SpecWarning, stacklevel=2)

    teachers, weights = [], []
    for i, tspec in enumerate(spec.teachers):
        where = spec.teacher_location(i)
        reg = spec.registration(where)
        teacher = instantiate(reg, build_params(spec, where), task, where=where)
        _load_teacher(teacher, reg, tspec, where, for_run)
        teacher.eval().requires_grad_(False)
        teachers.append(teacher)
        weights.append(tspec.weight)

    losses = torch.nn.ModuleList()
    for i, _ in enumerate(spec.losses):
        where = f"losses[{i}]"
        losses.append(instantiate(spec.registration(where), build_params(spec, where), task))

    run = BuiltRun(
        student=student,
        teachers=teachers,
        teacher_weights=weights,
        losses=losses,
        loss_names=[f"{l.name}" if [m.name for m in spec.losses].count(l.name) == 1 else f"{l.name}#{i}"
                    for i, l in enumerate(spec.losses)],
        loss_weights=[l.weight for l in spec.losses],
        missing_init=missing_init,
    )
    _check_loss_needs(spec, losses)
    run.run_teacher = bool(teachers) and (
        any(l.uses_teacher() for l in losses) or not _has_target(spec) or bool(spec.data.unlabeled)
    )
    _setup_taps_and_adapters(spec, registry, run)
    return _to(run, device)


def _to(run: BuiltRun, device: torch.device) -> BuiltRun:
    run.student.to(device)
    for t in run.teachers:
        t.to(device)
    run.losses.to(device)
    return run


def _load_teacher(teacher, reg: Registration, tspec: TeacherSpec, where: str, for_run: bool) -> None:
    if tspec.checkpoint is None:
        if teacher_needs_checkpoint(reg):
            raise SpecError(
                f"{where}.checkpoint: teacher {tspec.name!r} needs trained weights; give a "
                ".safetensors file or the run folder that trained it"
            )
        return
    path = weights_path(tspec.checkpoint)
    if not path.exists() and not for_run:
        warnings.warn(
            f"{where}.checkpoint: {path} does not exist yet (an earlier run may write it)",
            SpecWarning,
            stacklevel=3,
        )
        return
    if isinstance(teacher, Teacher):  # a teacher may read its own checkpoint format
        teacher.load_checkpoint(path, where=f"{where}.checkpoint")
    else:  # a student class used as teacher
        load_weights(teacher, path, where=f"{where}.checkpoint")


def _has_target(spec: RunSpec) -> bool:
    """Whether the training data has ground truth (sr always has: targets are the images)."""
    from kdcore.spec import PairedSource

    return spec.task.kind == "sr" or isinstance(spec.data.train, PairedSource)


def _check_loss_needs(spec: RunSpec, losses: torch.nn.ModuleList) -> None:
    messages = []
    for i, loss in enumerate(losses):
        if not spec.teachers and loss.requires_teacher():
            messages.append(f"losses[{i}]: loss {spec.losses[i].name!r} needs a teacher; add one under 'teacher'")
    if spec.data.unlabeled and not spec.teachers:
        messages.append("data.unlabeled: unlabelled images are learnt from a teacher; add one under 'teacher'")
    if not spec.teachers and not _has_target(spec):
        messages.append(
            "data.train: an 'enhance' run on a plain folder has no targets; give "
            "{\"input\": FOLDER, \"target\": FOLDER} or a teacher (e.g. an operator teacher such as 'clahe')"
        )
    if messages:
        raise spec_error(messages)


def split_teacher_path(path: str, n_teachers: int, where: str) -> tuple[int, str]:
    """``I/path`` -> (I, path); a bare path belongs to the first teacher."""
    head, sep, rest = path.partition("/")
    if sep and head.isdigit():
        if int(head) >= n_teachers:
            raise SpecError(f"{where}: {path!r} names teacher {head}, but the spec has {n_teachers} teacher(s)")
        return int(head), rest
    return 0, path


def _setup_taps_and_adapters(spec: RunSpec, registry: Registry, run: BuiltRun) -> None:
    from kdcore.engine.taps import check_paths

    s_paths: list[str] = []
    t_paths: list[list[str]] = [[] for _ in run.teachers]
    for i, loss in enumerate(run.losses):
        where = f"losses[{i}].params"
        check_paths(run.student, loss.student_features(), where=where, role=f"student {spec.student.name!r}")
        s_paths += loss.student_features()
        if loss.teacher_features() and not run.teachers:
            raise SpecError(f"losses[{i}]: compares teacher features but the spec has no teacher")
        for path in loss.teacher_features():
            t, module_path = split_teacher_path(path, len(run.teachers), where)
            check_paths(run.teachers[t], [module_path], where=where, role=f"teacher {spec.teachers[t].name!r}")
            t_paths[t].append(module_path)
    if s_paths:
        run.student_taps = FeatureTaps(run.student, s_paths, where="losses", role="student")
    run.teacher_taps = [FeatureTaps(t, p, where="losses", role="teacher") if p else None
                        for t, p in zip(run.teachers, t_paths)]
    s_shapes: dict[str, torch.Size] = {}
    t_shapes: dict[str, torch.Size] = {}
    if s_paths or any(t_paths):
        # one tiny forward pass on the CPU gives the shapes the adapters are built from
        side = spec.data.patch_size // spec.task.scale
        x = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0))
        was_training = run.student.training
        run.student.eval()
        with torch.no_grad():
            s_shapes = {k: v.shape for k, v in run.student_forward(x).features.items()}
        run.student.train(was_training)
        if any(t_paths):
            t_shapes = {k: v.shape for k, v in run.teacher_forward(x).features.items()}
    for i, loss in enumerate(run.losses):
        loss.setup(s_shapes, t_shapes, adapter_factory(registry, f"losses[{i}]"))
