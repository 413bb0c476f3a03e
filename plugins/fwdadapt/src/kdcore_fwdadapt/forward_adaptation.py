"""The forward-adaptation loss: the student's weights pulled towards the teacher's.

Distillation losses compare what two networks compute; forward adaptation compares what they
*are*. When the student is the teacher's architecture with a structural change (Deformable-HDRNet
is HDRNet plus deformable offsets), every teacher tensor has a counterpart in the student, and
the loss keeps those counterparts close while the extras learn freely:

    L = mean over matched tensors k of d(θ_student[k], θ_teacher[k])

with d the mean absolute (``l1``) or mean squared (``l2``) element difference, so that every
matched tensor counts the same whatever its size.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import pydantic
import torch

from kdcore.errors import KdcoreError, SpecError
from kdcore.interfaces import Loss, ModelOutput, check_rename, renamed
from kdcore.interfaces import Params as BaseParams

Norm = Literal["l1", "l2"]


@dataclass
class ParameterMatch:
    """Which student parameters have a teacher counterpart (same name after renaming, same shape)."""

    pairs: list[tuple[str, str]] = field(default_factory=list)
    """(student name, teacher name) of every matched tensor, in the student's order"""
    selected: int = 0
    """student parameters left by ``include`` / ``exclude``"""
    no_counterpart: list[str] = field(default_factory=list)
    """selected student names whose (renamed) name the teacher lacks"""
    other_shape: list[tuple[str, str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    """(student name, teacher name, student shape, teacher shape) where only the shape differs"""


def _selected(name: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in include) and not any(
        fnmatch.fnmatchcase(name, p) for p in exclude
    )


def match_parameters(
    student: torch.nn.Module,
    teacher: torch.nn.Module,
    include: Sequence[str] = ("*",),
    exclude: Sequence[str] = (),
    rename: dict[str, str] | None = None,
) -> ParameterMatch:
    """Pairs each selected student parameter with the teacher's of the same (renamed) name and shape."""
    rename = rename or {}
    t_params = dict(teacher.named_parameters())
    match = ParameterMatch()
    for name, p in student.named_parameters():
        if not _selected(name, include, exclude):
            continue
        match.selected += 1
        t_name = renamed(name, rename)
        t = t_params.get(t_name)
        if t is None:
            match.no_counterpart.append(name)
        elif t.shape != p.shape:
            match.other_shape.append((name, t_name, tuple(p.shape), tuple(t.shape)))
        else:
            match.pairs.append((name, t_name))
    return match


def parameter_distance(
    student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor], norm: str = "l1"
) -> torch.Tensor:
    """Mean over tensor pairs of the mean |s − t| (``l1``) or mean (s − t)² (``l2``).

    ``teacher`` is detached: the gradient reaches the student's tensors only.
    """
    if not student or len(student) != len(teacher):
        raise KdcoreError(
            f"forward-adaptation: needs equally many student and teacher tensors, at least one "
            f"(got {len(student)} and {len(teacher)})"
        )
    terms = []
    for s, t in zip(student, teacher, strict=True):
        diff = s - t.detach().to(device=s.device, dtype=s.dtype)
        terms.append(diff.abs().mean() if norm == "l1" else diff.square().mean())
    return torch.stack(terms).mean()


def _shape(shape: tuple[int, ...]) -> str:
    return "×".join(map(str, shape)) or "scalar"


class ForwardAdaptationLoss(Loss):
    """Distance between the student's parameters and the teacher's of the same name and shape.

    The engine hands the loss the models once (:meth:`bind`) before training; ``forward`` then
    reads the live student parameters, so the gradient pulls exactly the trained tensors towards
    the (frozen) teacher's. Student tensors without a counterpart (a structural addition) are
    left out; a spec where no tensor matches is an error.
    """

    class Params(BaseParams):
        """Spec ``params`` of ``forward-adaptation``."""

        norm: Norm = pydantic.Field(
            default="l1",
            description="'l1': mean |θs − θt| per tensor; 'l2': mean (θs − θt)² per tensor",
        )
        include: list[str] = pydantic.Field(
            default_factory=lambda: ["*"],
            min_length=1,
            description=(
                "glob patterns (fnmatch, case-sensitive) on the student's parameter names, as "
                "model.named_parameters() spells them; only matching names are compared"
            ),
            json_schema_extra={"examples": [["lowres.*", "guide.*"]]},
        )
        exclude: list[str] = pydantic.Field(
            default_factory=list,
            description="glob patterns on the student's parameter names to leave out (after include)",
            json_schema_extra={"examples": [["*.bias"]]},
        )
        rename: dict[str, str] = pydantic.Field(
            default_factory=dict,
            description=(
                "student name -> teacher name: each key is a regular expression matched against "
                "the whole student parameter name; the first that matches (in the order given) "
                "gives the teacher name, its value with \\1… group references expanded. Names "
                "matching no key are looked up unchanged"
            ),
            json_schema_extra={"examples": [{"body\\.(.*)": "model.body.\\1"}]},
        )
        teacher: int = pydantic.Field(
            default=0,
            ge=0,
            description="with several teachers (an ensemble), the 0-based index of the one to adapt to",
        )

        @pydantic.field_validator("norm", mode="before")
        @classmethod
        def _check_norm(cls, value: object) -> object:
            if isinstance(value, str) and value not in ("l1", "l2"):
                raise ValueError(f"unknown norm {value!r}; use 'l1' or 'l2'")
            return value

        @pydantic.field_validator("include", "exclude")
        @classmethod
        def _check_globs(cls, value: list[str]) -> list[str]:
            for i, pattern in enumerate(value):
                if not pattern:
                    raise ValueError(f"pattern [{i}] is empty; use e.g. '*' or 'lowres.*'")
            return value

        @pydantic.field_validator("rename")
        @classmethod
        def _check_rename(cls, value: dict[str, str]) -> dict[str, str]:
            return check_rename(value)

    params: Params

    def __init__(self, params: Params | None = None):
        super().__init__(params)
        # the bound models, in a plain tuple: not submodules, so neither saved nor optimised here
        self._models: tuple[torch.nn.Module, torch.nn.Module] | None = None
        self.match: ParameterMatch | None = None

    def uses_teacher(self) -> bool:
        """False: the teacher's output is not needed (its weights are, through :meth:`bind`)."""
        return False

    def uses_target(self) -> bool:
        """False: the ground truth is not used."""
        return False

    def requires_teacher(self) -> bool:
        """True: there is nothing to adapt to without a teacher."""
        return True

    def bind(self, student: torch.nn.Module, teachers: Sequence[torch.nn.Module]) -> str | None:
        """Matches the student's parameters with the teacher's; says how many matched."""
        p = self.params
        if not teachers:
            raise SpecError("forward-adaptation needs a teacher to adapt the student's weights to; add one")
        if p.teacher >= len(teachers):
            raise SpecError(
                f"params.teacher: {p.teacher} names teacher {p.teacher}, but the spec has "
                f"{len(teachers)} teacher(s); use 0 to {len(teachers) - 1}"
            )
        teacher = teachers[p.teacher]
        match = match_parameters(student, teacher, p.include, p.exclude, p.rename)
        n_teacher = sum(1 for _ in teacher.named_parameters())
        if not match.pairs:
            raise SpecError(self._nothing_matches(student, teacher, match, n_teacher))
        self._models = (student, teacher)
        self.match = match
        note = (
            f"forward-adaptation: {len(match.pairs)} of {match.selected} student tensors match the teacher's"
        )
        details = []
        if match.no_counterpart:
            details.append(
                f"{len(match.no_counterpart)} without a counterpart, e.g. {match.no_counterpart[0]!r}"
            )
        if match.other_shape:
            s, _t, s_shape, t_shape = match.other_shape[0]
            details.append(
                f"{len(match.other_shape)} of another shape, e.g. {s!r} {_shape(s_shape)} vs "
                f"{_shape(t_shape)}"
            )
        return note + (f" ({'; '.join(details)})" if details else "")

    def _nothing_matches(
        self, student: torch.nn.Module, teacher: torch.nn.Module, match: ParameterMatch, n_teacher: int
    ) -> str:
        s_kind, t_kind = type(student).__name__, type(teacher).__name__
        head = (
            f"forward-adaptation: no parameter of the student ({s_kind}) matches one of the "
            f"teacher ({t_kind}) by name and shape"
        )
        if n_teacher == 0:
            return f"{head}: the teacher has no parameters (an image operator); remove this loss"
        if match.selected == 0:
            return (
                f"{head}: params.include / params.exclude leave none of the student's parameters; "
                "widen them (`kdcore inspect student NAME` lists the module paths)"
            )
        if match.other_shape:
            s, t, s_shape, t_shape = match.other_shape[0]
            return (
                f"{head}: {len(match.other_shape)} name(s) match but not in shape, e.g. {s!r} is "
                f"{_shape(s_shape)} in the student and {t!r} {_shape(t_shape)} in the teacher; "
                "give the student the teacher's width params"
            )
        t_example = next(n for n, _ in teacher.named_parameters())
        return (
            f"{head}: the teacher names its tensors differently (e.g. student "
            f"{match.no_counterpart[0]!r}, teacher {t_example!r}); map them with params.rename"
        )

    def forward(
        self,
        student: ModelOutput,
        teacher: ModelOutput | None,
        target: torch.Tensor | None,
    ) -> torch.Tensor:
        """The mean distance over the matched tensors (a scalar); the outputs are not used."""
        if self._models is None or self.match is None:
            raise KdcoreError(
                "forward-adaptation: bind(student, teachers) has not been called, so the loss "
                "knows no parameters to compare; the engine calls it before training"
            )
        s_model, t_model = self._models
        s = [s_model.get_parameter(name) for name, _ in self.match.pairs]
        t = [t_model.get_parameter(name) for _, name in self.match.pairs]
        return parameter_distance(s, t, self.params.norm)
