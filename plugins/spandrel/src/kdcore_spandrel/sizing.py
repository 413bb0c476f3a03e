"""Meeting a model's size requirements by padding (never in place) and cropping back.

In eager mode the padding is decided in Python, per input. While the model is traced (ONNX
export), the same padding is written as graph operations on the input's dynamic size, without
Python branches, so the exported graph pads and crops any input size the way eager mode does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, cast

import torch
import torch.nn.functional as F
from spandrel import SizeRequirements

#: an architecture's own padding to its window: (multiple, F.pad mode)
InnerPadding = tuple[int, Literal["reflect", "constant"]]


def pad_to(x: torch.Tensor, req: SizeRequirements) -> torch.Tensor:
    """``x`` padded at the bottom and right (reflect, then replicate) to satisfy ``req``; a new tensor."""
    if torch.jit.is_tracing():
        return _traced_pad_to(x, req)
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


def _traced_sizes(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Height and width while tracing: 0-d tensors the graph computes from the input's shape."""
    h, w = x.shape[-2:]
    return cast(torch.Tensor, h), cast(torch.Tensor, w)


def _traced_pad_to(x: torch.Tensor, req: SizeRequirements) -> torch.Tensor:
    """:func:`pad_to` as graph operations: traced sizes are 0-d tensors, every pad may be 0."""
    h, w = _traced_sizes(x)
    m = req.multiple_of
    th, tw = torch.clamp(h, min=req.minimum), torch.clamp(w, min=req.minimum)
    th, tw = (th + m - 1) // m * m, (tw + m - 1) // m * m
    if req.square:
        th = tw = torch.maximum(th, tw)
    pad_h, pad_w = th - h, tw - w
    rh, rw = torch.minimum(pad_h, h - 1), torch.minimum(pad_w, w - 1)
    x = F.pad(x, _pads(rw, rh), mode="reflect")
    return F.pad(x, _pads(pad_w - rw, pad_h - rh), mode="replicate")


def _traced_pad_to_multiple(x: torch.Tensor, inner: InnerPadding) -> torch.Tensor:
    """An architecture's own ``pad_to_multiple`` (window padding) as graph operations."""
    m, mode = inner
    h, w = _traced_sizes(x)
    return F.pad(x, _pads((m - w % m) % m, (m - h % m) % m), mode=mode)


def _pads(right: torch.Tensor, bottom: torch.Tensor) -> list[int]:
    """``F.pad``'s amounts; traced 0-d tensors, which the exporter writes as dynamic pads."""
    return cast(list[int], [0, right, 0, bottom])


def run_sized(
    net: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    scale: int,
    req: SizeRequirements,
    *,
    clamp: bool,
    inner: InnerPadding | None = None,
) -> torch.Tensor:
    """``net`` on a copy of ``x`` (some networks scale their input in place), padded as ``req``
    demands; the output is cropped back to ``scale`` times the input size.

    ``inner``: the padding the architecture applies itself (SwinIR's and Omni-SR's window). In
    eager mode the architecture does it; while tracing it is done here, on dynamic sizes, so the
    architecture's own Python-level check sees a multiple and leaves the graph alone.
    """
    h, w = x.shape[-2:]
    tracing = torch.jit.is_tracing()
    padded = pad_to(x, req)
    if tracing and inner is not None:
        padded = _traced_pad_to_multiple(padded, inner)
    if padded is x:
        padded = x.clone()
    y = net(padded)
    if tracing or y.shape[-2:] != (h * scale, w * scale):
        y = y[..., : h * scale, : w * scale]
    return y.clamp(0, 1) if clamp else y
