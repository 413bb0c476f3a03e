"""Turning a RunPlan into modules: student, teachers, losses, taps and adapters."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import cast

import torch

from kdcore.engine.checkpoints import load_weights, weights_path
from kdcore.engine.taps import FeatureTaps
from kdcore.errors import SpecError
from kdcore.interfaces import AdapterFactory, Loss, ModelOutput, Student, Teacher, as_output, renamed
from kdcore.plan import ComponentPlan, RunPlan, build_component
from kdcore.registry import Registry
from kdcore.spec import spec_error


class SpecWarning(UserWarning):
    """Something `kdcore validate` cannot confirm yet (e.g. a checkpoint an earlier run will make)."""


def adapter_factory(registry: Registry, loss_where: str) -> AdapterFactory:
    def build(name: str, params: dict | None, in_channels: int, out_channels: int, where: str):
        where = where or f"{loss_where}.params"
        if not where.startswith(loss_where):
            where = f"{loss_where}.{where}"
        reg = registry.lookup("adapter", name, where=where)
        try:
            return build_component(
                reg, params, None, where=where, in_channels=in_channels, out_channels=out_channels
            )
        except SpecError as exc:
            if str(exc).startswith(where):
                raise
            raise SpecError(f"{where}: {exc}") from None

    return AdapterFactory(build)


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
    notes: list[str] = field(default_factory=list)  # what `validate` prints and the run log says

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
        image = sum(w / total * o.image for w, o in zip(self.teacher_weights, outs, strict=True))
        assert isinstance(image, torch.Tensor)  # called only when the run has teachers
        # inference tensors cannot be saved for backward: hand the losses ordinary copies
        return ModelOutput(image=image.clone(), features={k: v.clone() for k, v in feats.items()})

    def student_forward(self, x: torch.Tensor, model: torch.nn.Module | None = None) -> ModelOutput:
        out = as_output((model or self.student)(x))
        if self.student_taps:
            out.features.update(self.student_taps.collect())
        return out


def build_run(plan: RunPlan, device: torch.device, *, for_run: bool) -> BuiltRun:
    """Builds the run's modules. ``for_run=False`` (validate) downgrades a missing checkpoint file to a warning."""
    student = cast(Student, plan.student.build(plan.task))  # a registered student is a Student
    missing_init = _load_student_init(student, plan.student, for_run)
    teachers = []
    for comp in plan.teachers:
        teacher = comp.build(plan.task)
        _load_teacher(teacher, comp, for_run)
        teachers.append(teacher.eval().requires_grad_(False))
    notes = [init_student(student, plan, teachers, for_run)] if plan.student_init is not None else []
    losses = torch.nn.ModuleList(comp.build(plan.task) for comp in plan.losses)
    names = [c.name for c in plan.losses]
    run = BuiltRun(
        student=student,
        teachers=teachers,
        teacher_weights=[c.weight for c in plan.teachers],
        losses=losses,
        loss_names=[n if names.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(names)],
        loss_weights=[c.weight for c in plan.losses],
        missing_init=missing_init,
        notes=[n for n in notes if n],
    )
    _check_loss_needs(plan, losses)
    run.run_teacher = bool(teachers) and (
        any(loss.uses_teacher() for loss in cast("Iterable[Loss]", losses))
        or not plan.has_targets()
        or bool(plan.unlabeled)
    )
    _setup_taps_and_adapters(plan, run)
    run = _to(run, device)
    run.notes += bind_losses(plan, run)
    return run


def bind_losses(plan: RunPlan, run: BuiltRun) -> list[str]:
    """Calls each loss's ``bind`` once with the live student and the teachers; returns their notes.

    A SpecError from a loss is re-raised with the loss's spec location and the models' names.
    """
    notes = []
    for i, loss in enumerate(cast("Iterable[Loss]", run.losses)):
        try:
            note = loss.bind(run.student, list(run.teachers))
        except SpecError as exc:
            where, message = f"losses[{i}]", str(exc)
            head, sep, rest = message.partition(": ")
            if sep and head.startswith("params"):  # "params.KEY: ..." names the key itself
                where, message = f"{where}.{head}", rest
            models = ", ".join(
                [f"student {plan.student.name!r}"] + [f"{t.where} {t.name!r}" for t in plan.teachers]
            )
            raise SpecError(f"{where}: {message} ({models})") from None
        if note:
            notes.append(f"losses[{i}]: {note}")
    return notes


def _to(run: BuiltRun, device: torch.device) -> BuiltRun:
    run.student.to(device)
    for t in run.teachers:
        t.to(device)
    run.losses.to(device)
    return run


class UninitialisedWarning(UserWarning):
    """A student checkpoint left some of the student's tensors at their initial values."""


def _load_student_init(student: torch.nn.Module, comp: ComponentPlan, for_run: bool) -> list[str]:
    """Loads ``student.checkpoint`` (initial weights); warns naming the tensors it leaves untouched."""
    if comp.checkpoint is None:
        return []
    path = weights_path(comp.checkpoint)
    if not path.exists() and not for_run:
        warnings.warn(f"student.checkpoint: {path} does not exist yet", SpecWarning, stacklevel=3)
        return []
    missing = load_weights(student, path, where="student.checkpoint", partial=True)
    if missing:
        shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
        warnings.warn(
            f"student.checkpoint: {path} has no weights for {len(missing)} student tensor(s) ({shown}); "
            "they keep their random initial values",
            UninitialisedWarning,
            stacklevel=3,
        )
    return missing


class InitWarning(UserWarning):
    """``student.init`` copied no tensor at all."""


def copy_matching(
    student: torch.nn.Module, source: dict[str, torch.Tensor], rename: Mapping[str, str] | None = None
) -> tuple[list[str], list[str]]:
    """Copies into each student tensor the ``source`` tensor of the same name (after ``rename``,
    see :func:`kdcore.interfaces.renamed`) and shape.

    Returns (copied, not copied) student tensor names.
    """
    rename = rename or {}
    own = student.state_dict()
    pairs = {k: renamed(k, rename) for k in own}
    copied = [
        k for k, v in own.items() if pairs[k] in source and tuple(source[pairs[k]].shape) == tuple(v.shape)
    ]
    with torch.no_grad():
        for k in copied:
            own[k].copy_(source[pairs[k]].to(own[k].dtype))
    return copied, [k for k in own if k not in set(copied)]


def init_student(
    student: torch.nn.Module, plan: RunPlan, teachers: list[torch.nn.Module], for_run: bool
) -> str:
    """``student.init``: copies the matching tensors of the teacher or a weights file; says how many."""
    from kdcore.engine.checkpoints import read_weights

    init = plan.student_init
    assert init is not None  # called only when the spec has a student.init
    if init == "teacher":
        source, origin = teachers[0].state_dict(), f"teacher {plan.teachers[0].name!r}"
    else:
        path = weights_path(init)
        if not path.exists() and not for_run:
            warnings.warn(f"student.init: {path} does not exist yet", SpecWarning, stacklevel=3)
            return ""
        source, origin = read_weights(path, where="student.init"), str(path)
    rename = plan.spec.student.init_rename
    unused = [p for p in rename if not any(re.fullmatch(p, k) for k in student.state_dict())]
    if unused:
        warnings.warn(
            f"student.init_rename: {', '.join(map(repr, unused))} matches no tensor of the student "
            f"{plan.student.name!r}; see `kdcore inspect student {plan.student.name}` for its names",
            InitWarning,
            stacklevel=3,
        )
    copied, rest = copy_matching(student, source, rename)
    total = len(copied) + len(rest)
    if not copied:
        warnings.warn(
            f"student.init: no tensor of {origin} matches the student {plan.student.name!r} by name "
            "and shape; the student keeps its random initialisation",
            InitWarning,
            stacklevel=3,
        )
    n_renamed = sum(renamed(k, rename) != k for k in copied)
    shown = ", ".join(rest[:6]) + (f" and {len(rest) - 6} more" if len(rest) > 6 else "")
    return (
        f"student.init: copied {len(copied)} of {total} student tensors from {origin}"
        + (f" ({n_renamed} through student.init_rename)" if n_renamed else "")
        + (f"; not copied: {shown}" if rest else "")
    )


def _load_teacher(teacher, comp: ComponentPlan, for_run: bool) -> None:
    where = comp.where
    if comp.checkpoint is None:
        if comp.needs_checkpoint:
            raise SpecError(
                f"{where}.checkpoint: teacher {comp.name!r} needs trained weights; give a "
                ".safetensors file or the run folder that trained it"
            )
        return
    path = weights_path(comp.checkpoint)
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


def _check_loss_needs(plan: RunPlan, losses: torch.nn.ModuleList) -> None:
    messages = []
    for comp, loss in zip(plan.losses, cast("Iterable[Loss]", losses), strict=True):
        if not plan.teachers and loss.requires_teacher():
            messages.append(f"{comp.where}: loss {comp.name!r} needs a teacher; add one under 'teacher'")
    if plan.unlabeled and not plan.teachers:
        messages.append(
            "data.unlabeled: unlabelled images are learnt from a teacher; add one under 'teacher'"
        )
    if not plan.teachers and not plan.has_targets():
        messages.append(
            "data.train: an 'enhance' run on a plain folder has no targets; give "
            '{"input": FOLDER, "target": FOLDER} or a teacher (e.g. an operator teacher such as \'clahe\')'
        )
    if messages:
        raise spec_error(messages)


def split_teacher_path(path: str, n_teachers: int, where: str) -> tuple[int, str]:
    """``I/path`` -> (I, path); a bare path belongs to the first teacher."""
    head, sep, rest = path.partition("/")
    if sep and head.isdigit():
        if int(head) >= n_teachers:
            raise SpecError(
                f"{where}: {path!r} names teacher {head}, but the spec has {n_teachers} teacher(s); "
                f"teacher indices start at 0 (0 to {n_teachers - 1})"
            )
        return int(head), rest
    return 0, path


def _setup_taps_and_adapters(plan: RunPlan, run: BuiltRun) -> None:
    from kdcore.engine.taps import check_paths

    s_paths: list[str] = []
    t_paths: list[list[str]] = [[] for _ in run.teachers]
    for i, loss in enumerate(cast("Iterable[Loss]", run.losses)):

        def where(role: str, path: str, i: int = i, loss: Loss = loss) -> str:
            return f"losses[{i}].{loss.feature_where(role, path)}"

        for path in loss.student_features():
            check_paths(
                run.student, [path], where=where("student", path), role=f"student {plan.student.name!r}"
            )
        s_paths += loss.student_features()
        if loss.teacher_features() and not run.teachers:
            raise SpecError(f"losses[{i}]: compares teacher features but the spec has no teacher")
        for path in loss.teacher_features():
            t, module_path = split_teacher_path(path, len(run.teachers), where("teacher", path))
            role = f"teacher {t} {plan.teachers[t].name!r} (teacher indices start at 0)"
            check_paths(run.teachers[t], [module_path], where=where("teacher", path), role=role)
            t_paths[t].append(module_path)
    if s_paths:
        run.student_taps = FeatureTaps(run.student, s_paths, where="losses", role="student")
    run.teacher_taps = [
        FeatureTaps(t, p, where="losses", role="teacher") if p else None
        for t, p in zip(run.teachers, t_paths, strict=True)
    ]
    s_shapes: dict[str, torch.Size] = {}
    t_shapes: dict[str, torch.Size] = {}
    if s_paths or any(t_paths):
        # one tiny forward pass on the CPU gives the shapes the adapters are built from
        side = plan.data.patch_size // plan.task.scale
        x = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0))
        was_training = run.student.training
        run.student.eval()
        with torch.no_grad():
            s_shapes = {k: v.shape for k, v in run.student_forward(x).features.items()}
        run.student.train(was_training)
        if any(t_paths):
            t_shapes = {k: v.shape for k, v in run.teacher_forward(x).features.items()}
    for i, loss in enumerate(cast("Iterable[Loss]", run.losses)):
        loss.setup(s_shapes, t_shapes, adapter_factory(plan.registry, f"losses[{i}]"))
