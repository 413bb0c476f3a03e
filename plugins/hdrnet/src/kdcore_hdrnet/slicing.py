"""Bilateral-grid slicing and the per-pixel affine apply.

Grid layout: ``B×C×D×Gh×Gw`` (C coefficients, D luma bins, Gh×Gw spatial cells). A pixel
``(x, y)`` of an ``H×W`` image with guide value ``g`` in [0, 1] samples the grid at the continuous
cell coordinates ``((x + 0.5)·Gw/W, (y + 0.5)·Gh/H, g·D)``, where cell ``i`` has its centre at
``i + 0.5``; the value is the trilinear interpolation between the two nearest cell centres along
each axis, and positions outside the outermost centres take the border cell's value. This is
``grid_sample(align_corners=False, padding_mode="border")`` with pixel-centre coordinates
normalised to [-1, 1] (``2·(x + 0.5)/W - 1`` and ``2·g - 1``).

The fast slice is separable: the grid is first interpolated along y at every image row (a small
``(B·H)×C×D×Gw`` tensor), then each row is sampled with one 2-D ``grid_sample`` over (x, luma).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange


def pixel_centres(
    n: int, *, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Normalised coordinates (``align_corners=False``) of the centres of ``n`` pixels."""
    return (torch.arange(n, device=device, dtype=dtype) * 2 + 1) / n - 1


def interpolate_rows(
    grid: torch.Tensor, height: int, start: int = 0, stop: int | None = None
) -> torch.Tensor:
    """Linear interpolation of ``grid`` (B×C×D×Gh×Gw) along y at image rows ``start:stop``.

    Returns ``(B·n)×C×D×Gw`` (row-major over batch then rows), ready for :func:`slice_rows`.
    """
    stop = height if stop is None else stop
    gh = grid.shape[3]
    rows = torch.arange(start, stop, device=grid.device, dtype=grid.dtype)
    gy = ((rows + 0.5) * (gh / height) - 0.5).clamp(0, gh - 1)
    y0 = gy.floor()
    w = (gy - y0).view(1, 1, 1, -1, 1)
    y0 = y0.long()
    y1 = (y0 + 1).clamp(max=gh - 1)
    per_row = torch.lerp(grid.index_select(3, y0), grid.index_select(3, y1), w)
    return rearrange(per_row, "b c d h w -> (b h) c d w").contiguous()


def slice_rows(
    rows: torch.Tensor, guide: torch.Tensor, xs: torch.Tensor, coords: torch.Tensor | None = None
) -> torch.Tensor:
    """Samples per-row grids (``N×C×D×Gw``) at (x, guide) for ``N`` rows of width ``W``.

    ``guide``: ``N×W`` in [0, 1]; ``xs``: the ``W`` normalised column centres
    (:func:`pixel_centres`). ``coords``: optional reusable ``≥N×1×W×2`` buffer whose x half
    already holds ``xs`` (inference only: it is written in place). Returns ``N×C×W``.
    """
    n, width = guide.shape
    if coords is None:
        zs = guide.reshape(n, 1, width) * 2 - 1
        coords = torch.stack([xs.view(1, 1, width).expand(n, 1, width), zs], dim=-1)
    else:
        coords = coords[:n]
        torch.add(guide.new_full((), -1.0), guide.view(n, 1, width), alpha=2, out=coords[..., 1])
    out = F.grid_sample(rows, coords, mode="bilinear", padding_mode="border", align_corners=False)
    return out.view(n, rows.shape[1], width)


def coordinate_buffer(rows: int, xs: torch.Tensor) -> torch.Tensor:
    """A ``rows×1×W×2`` buffer for :func:`slice_rows` with the x half filled in."""
    coords = xs.new_empty(rows, 1, xs.shape[0], 2)
    coords[..., 0] = xs
    return coords


def slice_grid(grid: torch.Tensor, guide: torch.Tensor, offsets: torch.Tensor | None = None) -> torch.Tensor:
    """Trilinear slice of ``grid`` (B×C×D×Gh×Gw) at every pixel of ``guide`` (B×1×H×W).

    ``offsets`` (optional, B×2×H×W, channel 0 = x, 1 = y) shift each pixel's spatial sampling
    position, in units of grid cells. Returns ``B×C×H×W``.
    """
    b, _c, _d, _gh, _gw = grid.shape
    height, width = guide.shape[-2:]
    if offsets is None:
        rows = interpolate_rows(grid, height)
        xs = pixel_centres(width, device=grid.device, dtype=grid.dtype)
        sliced = slice_rows(rows, guide.reshape(b * height, width), xs)
        return rearrange(sliced, "(b h) c w -> b c h w", b=b)
    return slice_grid_5d(grid, guide, offsets)


def slice_grid_5d(
    grid: torch.Tensor, guide: torch.Tensor, offsets: torch.Tensor | None = None
) -> torch.Tensor:
    """The same slice as :func:`slice_grid` with a single 5-D ``grid_sample`` (any offsets)."""
    b, _c, _d, gh, gw = grid.shape
    height, width = guide.shape[-2:]
    ys = (
        pixel_centres(height, device=grid.device, dtype=grid.dtype)
        .view(1, height, 1)
        .expand(b, height, width)
    )
    xs = pixel_centres(width, device=grid.device, dtype=grid.dtype).view(1, 1, width).expand(b, height, width)
    if offsets is not None:
        xs = xs + offsets[:, 0] * (2.0 / gw)
        ys = ys + offsets[:, 1] * (2.0 / gh)
    zs = guide[:, 0].to(grid.dtype) * 2 - 1
    coords = torch.stack([xs, ys, zs], dim=-1).unsqueeze(1)  # B×1×H×W×3 (x, y, z)
    out = F.grid_sample(grid, coords, mode="bilinear", padding_mode="border", align_corners=False)
    return out[:, :, 0]


def apply_coefficients(
    coeffs: torch.Tensor,
    image: torch.Tensor,
    details: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Applies sliced coefficients to ``image`` (…×3×H×W; any leading layout ``coeffs`` shares).

    ``coeffs[..., 4·o + k, :, :]`` (k < 3) multiplies input channel ``k`` for output ``o`` and
    ``coeffs[..., 4·o + 3, :, :]`` is its offset. With ``details`` (…×3L×H×W, level-major), the
    gain ``coeffs[..., 12 + 3·l + o]`` multiplies ``details[..., 3·l + o]`` and is added.
    Works on any layout where the channel axis is dimension -3.
    """
    a = coeffs[..., :12, :, :].unflatten(-3, (3, 4))  # …×3×4×H×W
    r, g, b = image[..., 0:1, :, :], image[..., 1:2, :, :], image[..., 2:3, :, :]
    if out is None:
        out = torch.addcmul(a[..., 3, :, :], a[..., 0, :, :], r)
    else:
        torch.addcmul(a[..., 3, :, :], a[..., 0, :, :], r, out=out)
    out.addcmul_(a[..., 1, :, :], g).addcmul_(a[..., 2, :, :], b)
    if details is not None and details.shape[-3] > 0:
        levels = details.shape[-3] // 3
        gains = coeffs[..., 12 : 12 + 3 * levels, :, :]
        out.add_((gains * details).unflatten(-3, (levels, 3)).sum(-4))
    return out
