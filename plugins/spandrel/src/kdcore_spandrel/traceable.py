"""Forwards that compute what an architecture's own forward computes, in operations the ONNX
exporter writes with dynamic height and width (used only while a student is traced)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from spandrel.architectures.SwinIR.__arch.SwinIR import SwinTransformerBlock


def _safm(safm: Any, x: torch.Tensor) -> torch.Tensor:
    """SAFM (spatially-adaptive feature modulation) on an input whose sides are multiples of
    ``2 ** (n_levels - 1)``: there ``adaptive_max_pool2d`` to ``(h // k, w // k)`` is a k×k max
    pooling, and nearest upsampling back to ``(h, w)`` is nearest upsampling by k."""
    chunks = x.chunk(safm.n_levels, dim=1)
    out = [safm.mfr[0](chunks[0])]
    for i in range(1, safm.n_levels):
        k = 2**i
        s = safm.mfr[i](F.max_pool2d(chunks[i], k))
        out.append(F.interpolate(s, scale_factor=k, mode="nearest"))
    return safm.act(safm.aggr(torch.cat(out, dim=1))) * x


def safmn_forward(model: Any, x: torch.Tensor) -> torch.Tensor:
    """``SAFMN.forward`` (``model``: a SAFMN) for inputs padded to a multiple of 8 (the architecture's size requirement)."""
    feat = model.to_feat(x)
    y = feat
    for block in model.feats:
        y = _safm(block.safm, block.norm1(y)) + y
        y = block.ccm(block.norm2(y)) + y
    return model.to_img(y + feat)


def _window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """B×H×W×C -> (B·nW)×ws×ws×C, with every size taken from the tensor (nothing frozen)."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, ws, ws, c)


def _window_reverse(windows: torch.Tensor, ws: int, b: Any, h: Any, w: Any) -> torch.Tensor:
    """The inverse of :func:`_window_partition`; spandrel's reads the batch size back with
    ``int(...)``, which tracing freezes to the traced batch."""
    x = windows.view(b, h // ws, w // ws, ws, ws, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, -1)


def _shifted_window_mask(h: Any, w: Any, ws: int, shift: int, like: torch.Tensor) -> torch.Tensor:
    """SwinTransformerBlock.calculate_mask for a dynamic size: the three regions per axis
    (``[0, n-ws)``, ``[n-ws, n-shift)``, ``[n-shift, n)``) labelled by comparisons, not slices."""

    def region(n: Any) -> torch.Tensor:
        i = torch.arange(n, device=like.device)
        return (i >= n - ws).to(torch.int64) + (i >= n - shift).to(torch.int64)

    label = (3 * region(h)[:, None] + region(w)[None, :]).to(like.dtype)
    windows = _window_partition(label[None, :, :, None], ws).reshape(-1, ws * ws)
    diff = windows.unsqueeze(1) - windows.unsqueeze(2)
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


def _swin_block_forward(block: Any, x: torch.Tensor, x_size: Any) -> torch.Tensor:
    """SwinTransformerBlock.forward with sizes kept dynamic. At sizes other than the block's
    ``input_resolution`` spandrel computes the shifted-window mask even for unshifted blocks,
    where it is all zeros: no mask is the same."""
    h, w = x_size
    b, _, c = x.shape
    ws, shift = block.window_size, block.shift_size
    shortcut = x
    x = block.norm1(x).view(b, h, w, c)
    if shift > 0:
        x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
    windows = _window_partition(x, ws).view(-1, ws * ws, c)
    mask = _shifted_window_mask(h, w, ws, shift, x) if shift > 0 else None
    attn = block.attn(windows, mask=mask).view(-1, ws, ws, c)
    x = _window_reverse(attn, ws, b, h, w)
    if shift > 0:
        x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
    x = shortcut + block.drop_path(x.reshape(b, h * w, c))
    return x + block.drop_path(block.mlp(block.norm2(x)))


@contextlib.contextmanager
def traceable_swin_blocks(model: torch.nn.Module) -> Iterator[None]:
    """While active, every SwinTransformerBlock of ``model`` runs :func:`_swin_block_forward`
    (an instance attribute, removed on exit: the modules are otherwise untouched)."""
    blocks = [m for m in model.modules() if isinstance(m, SwinTransformerBlock)]
    try:
        for block in blocks:
            block.forward = functools.partial(_swin_block_forward, block)
        yield
    finally:
        for block in blocks:
            block.__dict__.pop("forward", None)
