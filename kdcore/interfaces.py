"""The abstract components a plugin provides: Student, Teacher, Loss, Adapter.

Every component is a ``torch.nn.Module`` with a nested pydantic ``Params`` model that validates
its spec ``params`` (unknown keys are rejected).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import pydantic
import torch
from pydantic import ConfigDict

#: True while kdcore exports a graph that a precision converter (fp16, int8) rewrites: students
#: with an export graph of their own built on ONNX Loop subgraphs (HDRNet's tiled slice), which
#: the converters do not handle, export their plain operator path instead.
plain_export_graph: ContextVar[bool] = ContextVar("plain_export_graph", default=False)


class Task(pydantic.BaseModel):
    """What the models are built for: super-resolution by ``scale`` or enhancement (scale 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    kind: Literal["sr", "enhance"]
    scale: int = pydantic.Field(default=1, description="2, 3 or 4 for 'sr'; 1 for 'enhance'")

    @pydantic.model_validator(mode="after")
    def _check_scale(self) -> Task:
        if self.kind == "sr" and self.scale not in (2, 3, 4):
            raise ValueError(f"scale must be 2, 3 or 4 for kind 'sr' (got {self.scale})")
        if self.kind == "enhance" and self.scale != 1:
            raise ValueError(f"scale must be 1 for kind 'enhance' (got {self.scale})")
        return self


@dataclass
class ModelOutput:
    """A model's output image (B×3×H×W, RGB in [0, 1]) and any captured feature maps."""

    image: torch.Tensor
    features: dict[str, torch.Tensor] = field(default_factory=dict)


def as_output(value: ModelOutput | torch.Tensor) -> ModelOutput:
    """Wraps a plain tensor returned by ``forward`` as a :class:`ModelOutput`."""
    if isinstance(value, ModelOutput):
        return value
    if isinstance(value, torch.Tensor):
        return ModelOutput(image=value)
    raise TypeError(f"forward must return a ModelOutput or a tensor, got {type(value).__name__}")


class Params(pydantic.BaseModel):
    """Base of every component's ``Params``: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class _Model(torch.nn.Module):
    Params: ClassVar[type[pydantic.BaseModel]] = Params
    #: the task kinds this model can be built for
    supported_tasks: ClassVar[tuple[str, ...]] = ("sr", "enhance")

    def __init__(self, params: pydantic.BaseModel | None = None, task: Task | None = None):
        super().__init__()
        self.params = params if params is not None else type(self).Params()
        self.task = task if task is not None else Task(kind="sr", scale=2)

    def forward(self, x: torch.Tensor) -> ModelOutput | torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class Student(_Model):
    """A trainable network. ``forward(x)`` maps B×3×h×w in [0, 1] to B×3×(h·s)×(w·s)."""


class Teacher(_Model):
    """A frozen source of knowledge; same constructor and forward as :class:`Student`.

    A teacher may have no weights at all (an image operator); set ``needs_checkpoint = False``
    for teachers that are complete without a checkpoint file.
    """

    needs_checkpoint: ClassVar[bool] = True

    def load_checkpoint(self, path: Path, *, where: str) -> None:
        """Loads trained weights from ``path`` (a file; a run folder is already resolved to its
        ``model.safetensors``). ``where`` names the spec location for errors.

        The default reads safetensors whose names and shapes fit this module; teachers with their
        own checkpoint formats override it (raising :class:`kdcore.errors.CheckpointError`).
        """
        from kdcore.engine.checkpoints import load_weights

        load_weights(self, path, where=where)

    def describe(self) -> str | None:
        """One line about the loaded network (e.g. detected architecture, scale, parameters) that
        ``kdcore validate`` prints; ``None`` says nothing beyond the name."""
        return None


class Loss(torch.nn.Module):
    """A training objective returning a scalar.

    A loss that compares feature maps names the module paths it needs (as
    ``model.named_modules()`` spells them) through :meth:`student_features` and
    :meth:`teacher_features`; the engine captures exactly those with forward hooks and hands them
    over in ``ModelOutput.features``. Once the shapes are known (a first forward pass), the engine
    calls :meth:`setup`, where the loss creates any adapters it needs; their parameters are
    trained with the student. A loss that reads the models themselves (their weights, not their
    outputs) overrides :meth:`bind`, which the engine calls once, after :meth:`setup`, with the
    live student and the teachers.

    What a loss needs, said once by these methods: :meth:`uses_target` (the ground truth),
    :meth:`uses_teacher` (the teacher's image), :meth:`teacher_features` and
    :meth:`student_features` (feature maps by module path), :meth:`bind` (the models' weights);
    :meth:`requires_teacher` refuses a spec without a teacher. Rows that have no ground truth
    (``data.unlabeled``, an ``enhance`` folder without targets) receive the teacher's image as
    ``target``: a loss that compares with the target learns from the teacher there (the run log
    says so).
    """

    Params: ClassVar[type[pydantic.BaseModel]] = Params

    def __init__(self, params: pydantic.BaseModel | None = None):
        super().__init__()
        self.params = params if params is not None else type(self).Params()

    def uses_teacher(self) -> bool:
        """True when ``forward`` needs the teacher's output."""
        return False

    def uses_target(self) -> bool:
        """True when ``forward`` needs the ground-truth target."""
        return not self.uses_teacher()

    def requires_teacher(self) -> bool:
        """True when this loss cannot work without a teacher (a spec without one is refused)."""
        return bool(self.teacher_features())

    def student_features(self) -> list[str]:
        """Module paths of the student whose outputs this loss reads."""
        return []

    def teacher_features(self) -> list[str]:
        """Module paths of the teacher whose outputs this loss reads."""
        return []

    def feature_where(self, role: str, path: str) -> str:
        """Where in the loss's spec entry feature ``path`` of ``role`` ('student' or 'teacher') is
        given, e.g. ``params.pairs[0].teacher``; error messages name it. Default: ``params``."""
        return "params"

    def setup(
        self,
        student_shapes: dict[str, torch.Size],
        teacher_shapes: dict[str, torch.Size],
        make_adapter: AdapterFactory,
    ) -> None:
        """Called once with the captured feature shapes (B×C×H×W) before training starts."""

    def bind(self, student: torch.nn.Module, teachers: Sequence[torch.nn.Module]) -> str | None:
        """Called once before training with the student and the teachers (in spec order).

        For losses that read the models rather than their outputs (e.g. a distance between the
        student's and the teacher's weights). ``student`` is the trained module itself, on the
        run's device: read its parameters when ``forward`` runs (``student.get_parameter(name)``)
        so that the gradient reaches the very tensors the optimizer updates; never copy them, and
        never register the modules as submodules of the loss (that would save them in the loss's
        state and hand the teachers' weights to the optimizer). The teachers are frozen
        (``requires_grad`` off, eval mode) and must stay so. ``kdcore validate`` calls this too,
        with a randomly initialised teacher when its checkpoint does not exist yet.

        Returns an optional one-line description that ``kdcore validate`` prints and the run
        logs (e.g. how many tensors matched). Raise :class:`kdcore.SpecError` when the models
        cannot work with this loss; the engine prefixes the message with the loss's spec
        location (``losses[i]``, or ``losses[i].params.KEY`` when the message starts with
        ``params.KEY:``) and the names of the models.
        """
        return None

    def forward(
        self,
        student: ModelOutput,
        teacher: ModelOutput | None,
        target: torch.Tensor | None,
    ) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class Adapter(torch.nn.Module):
    """Maps a student feature map (``in_channels``) onto a teacher's (``out_channels``)."""

    Params: ClassVar[type[pydantic.BaseModel]] = Params

    def __init__(self, params: pydantic.BaseModel | None, in_channels: int, out_channels: int):
        super().__init__()
        self.params = params if params is not None else type(self).Params()
        self.in_channels = in_channels
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class AdapterFactory:
    """What :meth:`Loss.setup` receives: builds a registered adapter by name."""

    def __init__(self, build):
        self._build = build

    def __call__(
        self, name: str, params: dict | None, in_channels: int, out_channels: int, *, where: str = ""
    ) -> Adapter:
        """Creates adapter ``name`` with ``params``; ``where`` names the spec location for errors."""
        return self._build(name, params, in_channels, out_channels, where)


@dataclass(frozen=True)
class ComponentKind:
    """One kind of component: its name, plural (CLI, `kdcore list`), base class and pluggy hook."""

    name: str
    plural: str
    base: type[torch.nn.Module]
    hook: str


KIND_TABLE: dict[str, ComponentKind] = {
    k.name: k
    for k in (
        ComponentKind("student", "students", Student, "kdcore_register_students"),
        ComponentKind("teacher", "teachers", Teacher, "kdcore_register_teachers"),
        ComponentKind("loss", "losses", Loss, "kdcore_register_losses"),
        ComponentKind("adapter", "adapters", Adapter, "kdcore_register_adapters"),
    )
}
"""The one table of component kinds: hook specs, registry, CLI, schema and scaffold use it."""

COMPONENT_KINDS: dict[str, type[torch.nn.Module]] = {k: v.base for k, v in KIND_TABLE.items()}


def renamed(name: str, rename: Mapping[str, str]) -> str:
    """The name ``name`` maps to under a ``rename`` map (student name → source name).

    Each key is a regular expression matched against the whole name; the first key that matches
    (in the order given) gives the new name, its value with ``\\1``… group references expanded.
    A name that no key matches stays as it is. ``student.init_rename`` and the
    ``forward-adaptation`` loss's ``rename`` both read names this way.
    """
    for pattern, replacement in rename.items():
        m = re.fullmatch(pattern, name)
        if m is not None:
            return m.expand(replacement)
    return name


def check_rename(rename: Mapping[str, str]) -> dict[str, str]:
    """Validates a ``rename`` map for :func:`renamed`: every key a regular expression, every
    ``\\N`` in a value a group of its key. Raises ``ValueError`` naming the faulty entry."""
    for pattern, replacement in rename.items():
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{pattern!r} is not a regular expression ({exc})") from None
        refs = [int(g) for g in re.findall(r"\\(\d+)", replacement)]
        if refs and max(refs) > compiled.groups:
            raise ValueError(
                f"{replacement!r} refers to group {max(refs)} but {pattern!r} has {compiled.groups} group(s)"
            )
    return dict(rename)
