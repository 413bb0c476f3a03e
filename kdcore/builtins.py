"""The core's own components, registered through the same hooks as any plugin.

Losses ``l1``, ``mse``, ``charbonnier`` and the teacher ``bicubic`` (also the SR baseline).
"""

from __future__ import annotations

from typing import Literal

import pydantic
import torch

from kdcore.errors import SpecError
from kdcore.hookspecs import hookimpl
from kdcore.interfaces import Loss, ModelOutput, Params, Teacher


class PixelLossParams(Params):
    against: Literal["target", "teacher"] = pydantic.Field(
        default="target",
        description="compare the student's image with the ground-truth target or with the teacher's image",
    )


class _PixelLoss(Loss):
    Params = PixelLossParams
    params: PixelLossParams

    def uses_teacher(self) -> bool:
        return self.params.against == "teacher"

    def uses_target(self) -> bool:
        return self.params.against == "target"

    def requires_teacher(self) -> bool:
        return self.params.against == "teacher"

    def reference(self, teacher: ModelOutput | None, target: torch.Tensor | None) -> torch.Tensor:
        ref = teacher.image if self.params.against == "teacher" and teacher is not None else target
        if ref is None:
            raise SpecError(
                f"loss with against={self.params.against!r} has nothing to compare with "
                "(no teacher / no target); set params.against accordingly"
            )
        return ref

    def distance(self, diff: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, student, teacher, target):
        return self.distance(student.image - self.reference(teacher, target)).mean()


class L1Loss(_PixelLoss):
    """Mean absolute difference of images."""

    def distance(self, diff):
        return diff.abs()


class MSELoss(_PixelLoss):
    """Mean squared difference of images."""

    def distance(self, diff):
        return diff.square()


class CharbonnierParams(PixelLossParams):
    eps: float = pydantic.Field(default=1e-3, gt=0, description="smoothing constant of sqrt(d² + eps²)")


class CharbonnierLoss(_PixelLoss):
    """Charbonnier (smooth L1) distance sqrt(d² + eps²) of images."""

    Params = CharbonnierParams
    params: CharbonnierParams

    def distance(self, diff):
        return torch.sqrt(diff.square() + self.params.eps**2)


class BicubicParams(Params):
    method: Literal["matlab-bicubic", "torch-bicubic"] = pydantic.Field(
        default="matlab-bicubic",
        description="MATLAB imresize's bicubic (as published SR baselines) or PyTorch's bicubic",
    )


class BicubicTeacher(Teacher):
    """Bicubic upscaling (identity for enhance): the SR baseline, with no weights."""

    Params = BicubicParams
    params: BicubicParams
    needs_checkpoint = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from kdcore.data import upscale_bicubic

        if self.task.scale == 1:
            return x.clamp(0, 1)
        return upscale_bicubic(x, self.task.scale, self.params.method)


@hookimpl
def kdcore_register_losses(register):
    register("l1", L1Loss, summary="mean absolute difference (student vs target or teacher)")
    register(
        "mse", MSELoss, aliases=("l2",), summary="mean squared difference (student vs target or teacher)"
    )
    register("charbonnier", CharbonnierLoss, summary="Charbonnier distance sqrt(d² + eps²)")


@hookimpl
def kdcore_register_teachers(register):
    from kdcore.operators import ClaheTeacher, LocalContrastTeacher, UnsharpMaskTeacher

    register("bicubic", BicubicTeacher, summary="bicubic upscaling (identity for enhance); the SR baseline")
    register(
        "clahe",
        ClaheTeacher,
        summary="contrast-limited adaptive histogram equalisation of the lightness (enhance only)",
    )
    register(
        "unsharp-mask", UnsharpMaskTeacher, summary="unsharp-mask sharpening of every channel (enhance only)"
    )
    register(
        "local-contrast",
        LocalContrastTeacher,
        summary="local Laplacian detail boost and tone compression of the luminance (enhance only)",
    )
