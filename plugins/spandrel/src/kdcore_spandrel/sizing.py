"""Meeting a model's size requirements by padding (never in place) and cropping back."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from spandrel import SizeRequirements


def pad_to(x: torch.Tensor, req: SizeRequirements) -> torch.Tensor:
    """``x`` padded at the bottom and right (reflect, then replicate) to satisfy ``req``; a new tensor."""
    h, w = x.shape[-2:]
    pad_w, pad_h = req.get_padding(w, h)
    if not (pad_w or pad_h):
        return x
    rw, rh = min(pad_w, w - 1), min(pad_h, h - 1)
    if rw or rh:
        x = F.pad(x, (0, rw, 0, rh), mode="reflect")
    if pad_w - rw or pad_h - rh:
        x = F.pad(x, (0, pad_w - rw, 0, pad_h - rh), mode="replicate")
    return x


def run_sized(
    net: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    scale: int,
    req: SizeRequirements,
    *,
    clamp: bool,
) -> torch.Tensor:
    """``net`` on a copy of ``x`` (some networks scale their input in place), padded as ``req``
    demands; the output is cropped back to ``scale`` times the input size."""
    h, w = x.shape[-2:]
    padded = pad_to(x, req)
    if padded is x:
        padded = x.clone()
    y = net(padded)
    if y.shape[-2:] != (h * scale, w * scale):
        y = y[..., : h * scale, : w * scale]
    return y.clamp(0, 1) if clamp else y
