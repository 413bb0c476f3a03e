"""The feature-matching loss: student feature maps, adapted and resized, against the teacher's."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import pydantic
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from kdcore.errors import KdcoreError, SpecError
from kdcore.interfaces import AdapterFactory, Loss, ModelOutput
from kdcore.interfaces import Params as BaseParams

Distance = Literal["l1", "l2", "affinity"]
DISTANCES: tuple[str, ...] = ("l1", "l2", "affinity")
Resize = Literal["area", "bilinear", "error"]
RESIZES: tuple[str, ...] = ("area", "bilinear", "error")


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a B×C×H×W map to ``size`` (H, W); unchanged when already that size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def match_resolution(
    student: torch.Tensor, teacher: torch.Tensor, mode: str = "area"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Brings two B×C×H×W maps of different H×W to one H×W, as ``mode`` says.

    ``area``: each map larger than the other along a side is area-pooled
    (``adaptive_avg_pool2d``) down to the smaller size, ``min(Hs, Ht) × min(Ws, Wt)``; any
    factor works, integer or not, and no map is ever upsampled (an upsampled map would invent
    detail the comparison then rewards). ``bilinear``: the student's map is interpolated
    bilinearly to the teacher's H×W (up or down); the teacher's map is left as it is.
    ``error``: differing H×W is an error. Maps of equal H×W are returned unchanged.
    """
    s_size = (int(student.shape[-2]), int(student.shape[-1]))
    t_size = (int(teacher.shape[-2]), int(teacher.shape[-1]))
    if s_size == t_size:
        return student, teacher
    if mode == "area":
        size = (min(s_size[0], t_size[0]), min(s_size[1], t_size[1]))
        if s_size != size:
            student = F.adaptive_avg_pool2d(student, size)
        if t_size != size:
            teacher = F.adaptive_avg_pool2d(teacher, size)
        return student, teacher
    if mode == "bilinear":
        return resize_to(student, t_size), teacher
    if mode == "error":
        raise KdcoreError(
            f"feature-matching: the student's map is {_hw(s_size)} but the teacher's is "
            f"{_hw(t_size)}, and params.resize is 'error'; set it to 'area' or 'bilinear'"
        )
    raise KdcoreError(f"unknown resize mode {mode!r}; use one of {list(RESIZES)}")


def teacher_normalised(student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both maps divided by the teacher map's per-sample mean |value| (detached; 1 for a zero map).

    An l1 or l2 distance between the results is relative to the teacher's feature magnitude, so
    it does not grow with the scale of the teacher's activations (an EDSR body can run in the
    hundreds) and a loss weight means the same for any teacher.
    """
    t = teacher.detach()
    scale = t.abs().mean(dim=tuple(range(1, t.ndim)), keepdim=True)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return student / scale, t / scale


def _hw(size: tuple[int, ...]) -> str:
    return f"{size[0]}×{size[1]}"


def spatial_affinity(x: torch.Tensor, max_side: int = 32) -> torch.Tensor:
    """Per-sample cosine similarity between all pixel positions of a B×C×H×W map: B×N×N.

    Each pixel's C-channel vector is compared with every other's, so the result does not depend
    on C. Maps larger than ``max_side`` on a side are average-pooled down to at most
    ``max_side``×``max_side`` first, which bounds N = H·W (and the N×N matrix).
    """
    h, w = x.shape[-2:]
    if h > max_side or w > max_side:
        x = F.adaptive_avg_pool2d(x, (min(h, max_side), min(w, max_side)))
    vectors = F.normalize(rearrange(x, "b c h w -> b (h w) c"), dim=-1, eps=1e-8)
    return vectors @ vectors.transpose(1, 2)


def affinity_distance(student: torch.Tensor, teacher: torch.Tensor, max_side: int = 32) -> torch.Tensor:
    """Mean squared difference of the spatial-affinity matrices of two maps of equal H×W."""
    return F.mse_loss(spatial_affinity(student, max_side), spatial_affinity(teacher, max_side))


def feature_distance(
    student: torch.Tensor, teacher: torch.Tensor, distance: str, max_side: int = 32
) -> torch.Tensor:
    """``l1`` (mean |S − T|), ``l2`` (mean (S − T)²) or ``affinity`` between two maps."""
    teacher = teacher.detach()
    if distance == "l1":
        return F.l1_loss(student, teacher)
    if distance == "l2":
        return F.mse_loss(student, teacher)
    if distance == "affinity":
        return affinity_distance(student, teacher, max_side)
    raise KdcoreError(f"unknown feature distance {distance!r}; use one of {list(DISTANCES)}")


class AdapterChoice(BaseParams):
    """An adapter by registered name, with its params."""

    name: str = pydantic.Field(
        default="conv1x1",
        min_length=1,
        description=("registered adapter name (`kdcore list adapters`), e.g. 'conv1x1' or 'identity'"),
    )
    params: dict[str, Any] = pydantic.Field(
        default_factory=dict, description="the adapter's params, validated by the adapter"
    )


class FeaturePair(BaseParams):
    """One student map matched against one teacher map."""

    student: str = pydantic.Field(
        min_length=1,
        description="module path in the student (as model.named_modules() spells it)",
    )
    teacher: str | None = pydantic.Field(
        default=None,
        min_length=1,
        description="module path in the teacher; default: the same path as `student`",
    )
    adapter: str | AdapterChoice | None = pydantic.Field(
        default=None,
        description=(
            "adapter applied to the student's map: a registered name or {name, params}; "
            "default 'conv1x1' for distances l1 / l2 and none for 'affinity'. Channel counts "
            "are inferred from the models"
        ),
    )
    weight: float = pydantic.Field(
        default=1.0, ge=0, allow_inf_nan=False, description="weight of this pair in the sum"
    )

    @property
    def teacher_path(self) -> str:
        """The teacher's module path (the student's when not given)."""
        return self.teacher if self.teacher is not None else self.student

    @pydantic.field_validator("adapter", mode="before")
    @classmethod
    def _check_adapter(cls, value: object) -> object:
        if isinstance(value, str) and not value:
            raise ValueError("adapter name is empty; use e.g. 'conv1x1' or 'identity'")
        return value

    @pydantic.field_validator("weight", mode="before")
    @classmethod
    def _check_weight(cls, value: object) -> object:
        if (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and (not math.isfinite(value) or value < 0)
        ):
            raise ValueError(f"weight must be a finite number >= 0 (got {value})")
        return value


class FeatureMatchingLoss(Loss):
    """Distance between student and teacher feature maps, summed over pairs by weight.

    Each student map goes through its adapter (which maps its channels onto the teacher's); when
    its H×W differs from the teacher map's, the larger of the two is area-pooled down to the
    smaller (``resize``: see :func:`match_resolution`); the two are then compared, the teacher's
    detached, by L1, L2 (mean squared) or the spatial-affinity distance.
    """

    #: params for conformance checks (``pairs`` has no default); paths are the checker's fakes
    example_params: ClassVar[dict[str, Any]] = {"pairs": [{"student": "features", "teacher": "features"}]}

    class Params(BaseParams):
        """Spec ``params`` of ``feature-matching``."""

        pairs: list[FeaturePair] = pydantic.Field(
            min_length=1,
            description="the student/teacher feature maps to match (at least one)",
            json_schema_extra={
                "examples": [[{"student": "body.2", "teacher": "body.4", "adapter": "conv1x1"}]]
            },
        )
        distance: Distance = pydantic.Field(
            default="l2",
            description=(
                "'l1' (mean |S − T|), 'l2' (mean (S − T)²) or 'affinity' (mean squared "
                "difference of the H·W×H·W cosine-similarity matrices; free of channel counts)"
            ),
        )
        affinity_size: int = pydantic.Field(
            default=32,
            ge=1,
            description=(
                "with distance 'affinity', maps larger than this on a side are average-pooled "
                "down to at most affinity_size×affinity_size first, to bound the cost"
            ),
        )

        normalize: bool = pydantic.Field(
            default=False,
            description=(
                "divide both maps by the teacher map's per-sample mean |value| before the l1/l2 "
                "distance, so the term does not scale with the teacher's activations (advised "
                "when the teacher's features are large, as in EDSR or RCAN bodies); 'affinity' "
                "is scale-free already"
            ),
        )

        resize: Resize = pydantic.Field(
            default="area",
            description=(
                "when a student map's H×W differs from the teacher's: 'area' pools the larger "
                "map down to the smaller's H×W (adaptive average pooling, any factor); "
                "'bilinear' interpolates the student's map to the teacher's H×W; 'error' "
                "refuses maps of different H×W"
            ),
        )

        @pydantic.field_validator("pairs", mode="before")
        @classmethod
        def _check_pairs(cls, value: object) -> object:
            if isinstance(value, (list, tuple)) and not value:
                raise ValueError(
                    "pairs is empty; list at least one "
                    "{'student': PATH, 'teacher': PATH} pair of feature module paths"
                )
            return value

        @pydantic.field_validator("distance", mode="before")
        @classmethod
        def _check_distance(cls, value: object) -> object:
            if isinstance(value, str) and value not in DISTANCES:
                raise ValueError(f"unknown distance {value!r}; use one of {list(DISTANCES)}")
            return value

        @pydantic.field_validator("resize", mode="before")
        @classmethod
        def _check_resize(cls, value: object) -> object:
            if isinstance(value, str) and value not in RESIZES:
                raise ValueError(f"unknown resize {value!r}; use one of {list(RESIZES)}")
            return value

    params: Params

    def __init__(self, params: Params | None = None):
        super().__init__(params)
        self.adapters: nn.ModuleList | None = None

    def uses_teacher(self) -> bool:
        """True: the teacher's feature maps are the reference."""
        return True

    def uses_target(self) -> bool:
        """False: the ground truth is not used."""
        return False

    def student_features(self) -> list[str]:
        return list(dict.fromkeys(p.student for p in self.params.pairs))

    def teacher_features(self) -> list[str]:
        return list(dict.fromkeys(p.teacher_path for p in self.params.pairs))

    def feature_where(self, role: str, path: str) -> str:
        """``params.pairs[J].student`` / ``.teacher``: the first pair that names ``path``."""
        for j, pair in enumerate(self.params.pairs):
            if (pair.student if role == "student" else pair.teacher_path) == path:
                given = role == "student" or pair.teacher is not None
                return f"params.pairs[{j}].{role if given else 'student'}"
        return "params"

    def adapter_choice(self, pair: FeaturePair) -> tuple[str, dict | None] | None:
        """The (name, params) of a pair's adapter, or None when the map is used as it is."""
        if isinstance(pair.adapter, AdapterChoice):
            return pair.adapter.name, dict(pair.adapter.params)
        if isinstance(pair.adapter, str):
            return pair.adapter, None
        return None if self.params.distance == "affinity" else ("conv1x1", None)

    def setup(
        self,
        student_shapes: dict[str, torch.Size],
        teacher_shapes: dict[str, torch.Size],
        make_adapter: AdapterFactory,
    ) -> None:
        """Creates one adapter per pair, with channel counts taken from the captured maps."""
        adapters = nn.ModuleList()
        for j, pair in enumerate(self.params.pairs):
            where = f"params.pairs[{j}]"
            s_shape = _shape(student_shapes, pair.student, "student", f"{where}.student")
            t_shape = _shape(teacher_shapes, pair.teacher_path, "teacher", f"{where}.teacher")
            choice = self.adapter_choice(pair)
            if choice is None:
                adapter: nn.Module = nn.Identity()
            else:
                name, params = choice
                adapter = make_adapter(
                    name, params, int(s_shape[1]), int(t_shape[1]), where=f"{where}.adapter"
                )
            adapters.append(adapter)
            if self.params.resize == "error" and tuple(s_shape[-2:]) != tuple(t_shape[-2:]):
                raise SpecError(
                    f"{where}: the student's map {pair.student!r} is {_hw(tuple(s_shape[-2:]))} "
                    f"but the teacher's {pair.teacher_path!r} is {_hw(tuple(t_shape[-2:]))}, and "
                    "params.resize is 'error'; set it to 'area' (the default) or 'bilinear'"
                )
            if self.params.distance != "affinity":
                self._check_adapted_channels(adapter, s_shape, t_shape, where)
        self.adapters = adapters

    @staticmethod
    def _check_adapted_channels(
        adapter: nn.Module, s_shape: torch.Size, t_shape: torch.Size, where: str
    ) -> None:
        # One tiny pass through the adapter, so that a mismatch fails before training starts.
        parameter = next(adapter.parameters(), None)
        probe = torch.zeros(
            1,
            *s_shape[1:],
            device=parameter.device if parameter is not None else None,
            dtype=parameter.dtype if parameter is not None else None,
        )
        try:
            with torch.no_grad():
                channels = adapter(probe).shape[1]
        except KdcoreError:
            raise
        except Exception as error:  # a third-party adapter that cannot take the map
            raise SpecError(
                f"{where}.adapter: the adapter fails on the student map of shape "
                f"{tuple(s_shape)}: {type(error).__name__}: {error}"
            ) from error
        if channels != t_shape[1]:
            raise SpecError(
                f"{where}.adapter: the adapted student map has {channels} channels but the "
                f"teacher's has {t_shape[1]}; distances l1 / l2 compare channel by channel, so "
                f"use adapter 'conv1x1', or distance 'affinity'"
            )

    def forward(
        self,
        student: ModelOutput,
        teacher: ModelOutput | None,
        target: torch.Tensor | None,
    ) -> torch.Tensor:
        """Σ_pairs weight · distance(adapter(S), T) at a common H×W, a scalar."""
        if teacher is None:
            raise KdcoreError(
                "feature-matching needs a teacher: it compares the student's feature maps with "
                "the teacher's; add a teacher to the spec or remove this loss"
            )
        if self.adapters is None or len(self.adapters) != len(self.params.pairs):
            raise KdcoreError(
                "feature-matching: setup() has not been called with the feature shapes, so its "
                "adapters do not exist yet"
            )
        total = student.image.new_zeros(())
        for j, (pair, adapter) in enumerate(zip(self.params.pairs, self.adapters, strict=True)):
            where = f"params.pairs[{j}]"
            s = adapter(_feature(student, pair.student, "student", where))
            t = _feature(teacher, pair.teacher_path, "teacher", where).detach()
            if s.ndim != 4 or t.ndim != 4 or s.shape[0] != t.shape[0]:
                raise KdcoreError(
                    f"feature-matching {where}: expects B×C×H×W maps with the same batch size, "
                    f"got student {tuple(s.shape)} and teacher {tuple(t.shape)}"
                )
            try:
                s, t = match_resolution(s, t, self.params.resize)
            except KdcoreError as exc:
                detail = str(exc).removeprefix("feature-matching: ")
                raise KdcoreError(f"feature-matching {where}: {detail}") from None
            if self.params.distance != "affinity" and s.shape[1] != t.shape[1]:
                raise KdcoreError(
                    f"feature-matching {where}: the adapted student map has {s.shape[1]} "
                    f"channels but the teacher's has {t.shape[1]}; use adapter 'conv1x1'"
                )
            if self.params.normalize:
                s, t = teacher_normalised(s, t)
            d = feature_distance(s, t, self.params.distance, self.params.affinity_size)
            total = total + pair.weight * d
        return total


def _shape(shapes: dict[str, torch.Size], path: str, who: str, where: str) -> torch.Size:
    if path not in shapes:
        raise SpecError(
            f"{where}: the {who} has no captured feature map {path!r} (captured: {sorted(shapes) or 'none'})"
        )
    shape = shapes[path]
    if len(shape) != 4:
        raise SpecError(
            f"{where}: the {who}'s module {path!r} outputs shape {tuple(shape)}; "
            "feature-matching needs B×C×H×W feature maps (pick a convolutional layer)"
        )
    return shape


def _feature(output: ModelOutput, path: str, who: str, where: str) -> torch.Tensor:
    try:
        return output.features[path]
    except KeyError:
        raise KdcoreError(
            f"feature-matching {where}: the {who}'s feature map {path!r} was not captured "
            f"(captured: {sorted(output.features) or 'none'})"
        ) from None
