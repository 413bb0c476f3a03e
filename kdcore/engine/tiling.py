"""Tiled inference: huge images in overlapping tiles, blended, so memory stays bounded."""

from __future__ import annotations

import torch

from kdcore.interfaces import as_output


def _starts(size: int, tile: int, step: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, step))
    return [*starts, size - tile]


def _valid(starts: list[int], i: int, tile: int, size: int, margin: int) -> tuple[int, int]:
    """The part of tile ``i`` that is kept: all but ``margin`` pixels on sides facing another tile."""
    lo = 0 if i == 0 else starts[i] + margin
    hi = size if i == len(starts) - 1 else starts[i] + min(tile, size) - margin
    return lo, hi


@torch.inference_mode()
def run_tiled(
    model: torch.nn.Module, x: torch.Tensor, scale: int, tile: int = 512, overlap: int = 32
) -> torch.Tensor:
    """``model(x)`` computed on ``tile``×``tile`` input tiles that overlap by ``overlap`` pixels.

    Each tile keeps its centre (half the overlap is dropped on every side facing another tile), so
    for a translation-equivariant model whose receptive radius is at most ``overlap / 2`` input
    pixels the result equals the untiled one. For models with a global path (HDRNet) each tile
    sees only its own content.
    """
    if tile <= overlap:
        raise ValueError(f"tile ({tile}) must be larger than the overlap ({overlap})")
    b, _, h, w = x.shape
    if h <= tile and w <= tile:
        return as_output(model(x)).image
    margin = overlap // 2
    step = tile - 2 * margin
    ys, xs = _starts(h, tile, step), _starts(w, tile, step)
    out = None
    for i, y in enumerate(ys):
        y_lo, y_hi = _valid(ys, i, tile, h, margin)
        for j, x0 in enumerate(xs):
            x_lo, x_hi = _valid(xs, j, tile, w, margin)
            piece = as_output(model(x[:, :, y : y + min(tile, h), x0 : x0 + min(tile, w)])).image
            if out is None:
                out = piece.new_zeros(b, piece.shape[1], h * scale, w * scale)
            out[:, :, y_lo * scale : y_hi * scale, x_lo * scale : x_hi * scale] = piece[
                :, :, (y_lo - y) * scale : (y_hi - y) * scale, (x_lo - x0) * scale : (x_hi - x0) * scale
            ]
    assert out is not None  # there is at least one tile
    return out
