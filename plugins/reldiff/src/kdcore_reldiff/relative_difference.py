"""The relative-difference loss: mean |S − T| / (|T| + eps), on images or on feature maps."""

from __future__ import annotations

import math
from typing import Annotated, Literal

import pydantic
import torch

from kdcore.errors import KdcoreError, SpecError
from kdcore.interfaces import AdapterFactory, Loss, ModelOutput
from kdcore.interfaces import Params as BaseParams

FeaturePaths = Annotated[
    list[Annotated[str, pydantic.StringConstraints(min_length=1)]],
    pydantic.Field(min_length=1, json_schema_extra={"uniqueItems": True}),
]
"""A non-empty list of distinct module paths."""

DEAD_CHANNEL_RATIO = 1e-3
"""A teacher channel with mean |value| below this fraction of the map's is scaled like the map."""


def relative_difference(
    student: torch.Tensor, reference: torch.Tensor, eps: float, symmetric: bool = False
) -> torch.Tensor:
    """Mean of |S − R| / (|R| + eps), or |S − R| / (|S| + |R| + eps) when ``symmetric``.

    ``reference`` is detached: gradients reach the student only.
    """
    ref = reference.detach()
    denominator = ref.abs() + eps
    if symmetric:
        denominator = denominator + student.abs()
    return ((student - ref).abs() / denominator).mean()


def channel_scale(teacher_map: torch.Tensor) -> torch.Tensor:
    """The per-sample, per-channel mean absolute value of a teacher feature map.

    Shape B×C×1×…×1 for maps B×C×…; B×1 for vectors B×C (one scale per sample). A (nearly)
    dead channel takes the scale of the whole map, and an all-zero map the scale 1, so that the
    division never blows up. Multiplying the map by a constant multiplies the scale by the same
    constant, which is what makes the normalised comparison scale-invariant.
    """
    t = teacher_map.detach().abs()
    if t.ndim < 2:
        raise KdcoreError(f"feature maps must be at least B×C, got shape {tuple(t.shape)}")
    overall = t.mean(dim=tuple(range(1, t.ndim)), keepdim=True)
    if t.ndim == 2:
        scale = overall
    else:
        per_channel = t.mean(dim=tuple(range(2, t.ndim)), keepdim=True)
        scale = torch.where(per_channel > DEAD_CHANNEL_RATIO * overall, per_channel, overall)
    return torch.where(scale > 0, scale, torch.ones_like(scale))


class RelativeDifferenceLoss(Loss):
    """Relative difference between the student's and the teacher's outputs.

    ``mean(|S − T| / (|T| + eps))`` over every pixel (or ``|S| + |T| + eps`` in the denominator
    when ``symmetric``). Compares the output images (``compare="image"``) or the listed feature
    maps, each normalised by the teacher's per-channel mean absolute value. Without a teacher the
    student's image is compared with the ground-truth target instead.
    """

    class Params(BaseParams):
        """Spec ``params`` of ``relative-difference``."""

        eps: float = pydantic.Field(
            default=1e-2,
            gt=0,
            allow_inf_nan=False,
            description=(
                "added to the denominator so that near-zero references do not blow up; in the "
                "units of the compared values (images in [0, 1]; features after per-channel "
                "normalisation, where a channel's mean |value| is 1). Must be > 0"
            ),
        )
        symmetric: bool = pydantic.Field(
            default=False,
            description="use |S − T| / (|S| + |T| + eps) instead of |S − T| / (|T| + eps)",
        )
        compare: Literal["image"] | FeaturePaths = pydantic.Field(
            default="image",
            description=(
                "'image' to compare output images, or a list of module paths (as "
                "model.named_modules() spells them) whose feature maps are compared; the "
                "student's and the teacher's maps must have the same shape"
            ),
        )

        @pydantic.field_validator("eps", mode="before")
        @classmethod
        def _check_eps(cls, value: object) -> object:
            # Before pydantic's own bound check, for a message that says what to do.
            if (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and (not math.isfinite(value) or value <= 0)
            ):
                raise ValueError(f"eps must be a finite number > 0 (got {value}); try 0.01")
            return value

        @pydantic.field_validator("compare", mode="before")
        @classmethod
        def _check_compare(cls, value: object) -> object:
            if isinstance(value, str):
                if value != "image":
                    raise ValueError(
                        f"compare must be 'image' or a list of feature module paths such as "
                        f"['body.2'] (got {value!r})"
                    )
                return value
            if isinstance(value, (list, tuple)):
                if not value:
                    raise ValueError("compare lists no feature module paths; give at least one, or 'image'")
                for i, path in enumerate(value):
                    if not isinstance(path, str) or not path:
                        raise ValueError(f"compare[{i}] must be a non-empty module path (got {path!r})")
                duplicates = sorted({p for p in value if list(value).count(p) > 1})
                if duplicates:
                    raise ValueError(f"compare lists {duplicates} more than once")
                return list(value)
            raise ValueError(f"compare must be 'image' or a list of feature module paths (got {value!r})")

    params: Params

    def __init__(self, params: Params | None = None):
        super().__init__(params)

    @property
    def feature_paths(self) -> list[str]:
        """The compared module paths; empty when comparing images."""
        compare = self.params.compare
        return [] if compare == "image" else list(compare)

    def uses_teacher(self) -> bool:
        """Always True: the teacher is preferred; without one the target is used (images only)."""
        return True

    def uses_target(self) -> bool:
        """False: the target is only a fallback when the run has no teacher."""
        return False

    def student_features(self) -> list[str]:
        return self.feature_paths

    def teacher_features(self) -> list[str]:
        return self.feature_paths

    def setup(
        self,
        student_shapes: dict[str, torch.Size],
        teacher_shapes: dict[str, torch.Size],
        make_adapter: AdapterFactory,
    ) -> None:
        """Checks that every compared student map has the teacher map's shape."""
        for i, path in enumerate(self.feature_paths):
            where = f"params.compare[{i}]"
            if path not in student_shapes:
                raise SpecError(f"{where}: the student has no captured feature map {path!r}")
            if path not in teacher_shapes:
                raise SpecError(f"{where}: the teacher has no captured feature map {path!r}")
            _check_same_shape(path, student_shapes[path], teacher_shapes[path], where, SpecError)

    def forward(
        self,
        student: ModelOutput,
        teacher: ModelOutput | None,
        target: torch.Tensor | None,
    ) -> torch.Tensor:
        """The relative difference (a scalar), averaged over the compared maps."""
        eps, symmetric = self.params.eps, self.params.symmetric
        paths = self.feature_paths
        if paths:
            if teacher is None:
                raise KdcoreError(
                    "relative-difference: comparing feature maps needs a teacher, and this run "
                    "has none; add a teacher to the spec or set params.compare to 'image'"
                )
            total = student.image.new_zeros(())
            for i, path in enumerate(paths):
                s = _feature(student, path, "student")
                t = _feature(teacher, path, "teacher").detach()
                _check_same_shape(path, s.shape, t.shape, f"params.compare[{i}]", KdcoreError)
                scale = channel_scale(t)
                total = total + relative_difference(s / scale, t / scale, eps, symmetric)
            return total / len(paths)

        if teacher is not None:
            reference, what = teacher.image, "teacher image"
        elif target is not None:
            reference, what = target, "target"
        else:
            raise KdcoreError(
                "relative-difference: there is neither a teacher nor a target to compare the "
                "student's image with"
            )
        if student.image.shape != reference.shape:
            raise KdcoreError(
                f"relative-difference: the student image has shape {tuple(student.image.shape)} "
                f"but the {what} has shape {tuple(reference.shape)}; they must be equal"
            )
        return relative_difference(student.image, reference, eps, symmetric)


def _feature(output: ModelOutput, path: str, who: str) -> torch.Tensor:
    try:
        return output.features[path]
    except KeyError:
        raise KdcoreError(
            f"relative-difference: the {who}'s feature map {path!r} was not captured "
            f"(captured: {sorted(output.features) or 'none'}); check params.compare"
        ) from None


def _check_same_shape(
    path: str,
    student_shape: torch.Size,
    teacher_shape: torch.Size,
    where: str,
    error: type[KdcoreError],
) -> None:
    if tuple(student_shape) != tuple(teacher_shape):
        raise error(
            f"{where}: relative-difference compares feature map {path!r} element by element, "
            f"but the student's has shape {tuple(student_shape)} and the teacher's "
            f"{tuple(teacher_shape)}; use the 'feature-matching' loss, whose adapter maps the "
            f"student's channels onto the teacher's and resizes the map"
        )
