"""Adapters that map a student feature map (``in_channels``) onto a teacher's (``out_channels``)."""

from __future__ import annotations

import pydantic
import torch
from torch import nn

from kdcore.errors import KdcoreError, SpecError
from kdcore.interfaces import Adapter
from kdcore.interfaces import Params as BaseParams


def _check_channels(name: str, in_channels: object, out_channels: object) -> None:
    for label, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SpecError(f"adapter {name!r}: {label} must be a positive integer (got {value!r})")


def _check_input(name: str, x: torch.Tensor, in_channels: int) -> None:
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise KdcoreError(
            f"adapter {name!r} expects feature maps B×{in_channels}×H×W, got shape {tuple(x.shape)}"
        )


class Conv1x1Adapter(Adapter):
    """A learned 1×1 convolution from ``in_channels`` to ``out_channels`` (FitNets' regressor).

    Initialised to the identity when the channel counts are equal (training starts from "no
    change"), otherwise to a random orthogonal matrix, which keeps the norm of each pixel's
    feature vector (``in < out``) or projects it onto orthonormal directions (``in > out``).
    """

    class Params(BaseParams):
        """Spec ``params`` of ``conv1x1``."""

        bias: bool = pydantic.Field(
            default=False, description="add a learned per-channel bias (initialised to 0)"
        )

    params: Params

    def __init__(self, params: Params | None, in_channels: int, out_channels: int):
        _check_channels("conv1x1", in_channels, out_channels)
        super().__init__(params, in_channels, out_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=self.params.bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Identity weights when ``in == out``, orthogonal ones otherwise; zero bias."""
        with torch.no_grad():
            weight = self.conv.weight.view(self.out_channels, self.in_channels)
            if self.in_channels == self.out_channels:
                nn.init.eye_(weight)
            else:
                nn.init.orthogonal_(weight)
            if self.conv.bias is not None:
                self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B×in×H×W → B×out×H×W."""
        _check_input("conv1x1", x, self.in_channels)
        return self.conv(x)


class IdentityAdapter(Adapter):
    """Passes the student map through unchanged; needs equal channel counts.

    Use it when the student's map already has the teacher's channels; otherwise use ``conv1x1``.
    """

    class Params(BaseParams):
        """``identity`` takes no params."""

    params: Params

    def __init__(self, params: Params | None, in_channels: int, out_channels: int):
        _check_channels("identity", in_channels, out_channels)
        if in_channels != out_channels:
            raise SpecError(
                f"adapter 'identity' cannot map {in_channels} student channels onto "
                f"{out_channels} teacher channels; use adapter 'conv1x1' (a learned 1×1 "
                f"convolution), or distance 'affinity', which needs no adapter"
            )
        super().__init__(params, in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns ``x`` itself."""
        _check_input("identity", x, self.in_channels)
        return x
