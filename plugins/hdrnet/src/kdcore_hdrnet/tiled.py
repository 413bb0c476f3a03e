"""The full-resolution pass of HDRNet as exported to ONNX: slice and apply as tiles of matrix products.

onnxruntime runs ``GridSample`` one sample at a time (about 10 ns per sample and channel on a CPU
core), so the plain operator path (guide look-up and slice as ``GridSample``) is several times
slower there than PyTorch. This module computes the same values with operators that onnxruntime
runs fast — matrix products, element-wise operators on large planes and ``GatherElements`` — and
with a loop over bands of image rows, so that intermediates stay in cache.

The slice is trilinear in (x, y, guide). Between two neighbouring cell centres along x and along
y (a *tile*; the image borders, where the slice clamps, are tiles of their own) the grid cell
indices are fixed, so every pixel of a tile reads the same 2×2 cells and its coefficients are

    Σ_d t_d(guide) · (base_d + fx·dx_d + fy·dy_d + fx·fy·dxy_d)

where ``t_d`` is the linear-interpolation ("tent") weight of luma bin ``d`` (two are non-zero),
``fx``/``fy`` the pixel's position between the cell centres, and ``base``/``dx``/``dy``/``dxy``
the bilinear form of the four cells. That is one matrix product per tile, C × 4D by
4D × pixels, batched over the tiles of a band of rows. The pixels of a band are regrouped by
tile column with one ``GatherElements`` (each tile column padded to the widest one) and put
back with another. The graph stays dynamic in batch, height and width: the band and tile
bounds are computed from the input size in the graph.

Used by :meth:`kdcore_hdrnet.HDRNet.forward_grid` while exporting to ONNX (and callable in eager
mode: the tests compare it with the PyTorch path).
"""

from __future__ import annotations

from typing import List  # noqa: UP035 - TorchScript needs typing.List

import torch
import torch.nn.functional as F

from kdcore_hdrnet.guide import ConvGuide, CurveGuide


def tile_spans(
    n: int, cells: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tiles along one axis of ``n`` pixels sliced from ``cells`` grid cells.

    Pixel ``i`` sits at cell coordinate ``p = (i + 0.5)·cells/n − 0.5``; tile ``s`` (0 … cells)
    holds the pixels with ``s − 1 ≤ p < s`` (tile 0 and tile ``cells`` are the clamped borders).
    Returns (first pixel of each tile, pixel count of each tile, each pixel's fraction
    ``p − s + 1``, each pixel's tile).
    """
    pos = (torch.arange(n, dtype=dtype) + 0.5) * (cells / n) - 0.5
    tile = (pos.floor() + 1).clamp(0, cells)
    frac = pos - (tile - 1)
    k = torch.arange(cells + 1, dtype=dtype).view(-1, 1)
    start = (tile.view(1, -1) < k).sum(1)
    count = (tile.view(1, -1) == k).sum(1)
    return start, count, frac, tile.long()


def tile_tables(grid: torch.Tensor) -> torch.Tensor:
    """Per-tile bilinear forms of ``grid`` (B×C×D×Gh×Gw): B×(Gh+1)×(Gw+1)×2C×2D.

    Row ``c`` gives coefficient ``c`` on the tile's upper row of cells, row ``C + c`` its change
    towards the lower row (to be scaled by ``fy``); feature ``2d + q`` multiplies
    ``t_d·(1, fx)[q]``. Border tiles repeat the edge cells, so their differences are zero.
    """
    b, c, d, gh, gw = grid.shape
    padded = F.pad(grid.reshape(b, c * d, gh, gw), (1, 1, 1, 1), mode="replicate").view(b, c, d, gh + 2, gw + 2)
    c00 = padded[..., :-1, :-1]
    c01 = padded[..., :-1, 1:]
    c10 = padded[..., 1:, :-1]
    c11 = padded[..., 1:, 1:]
    upper = torch.stack([c00, c01 - c00], dim=-1)  # B×C×D×Y×X×2
    change = torch.stack([c10 - c00, c11 - c10 - c01 + c00], dim=-1)
    forms = torch.stack([upper, change], dim=1)  # B×2×C×D×Y×X×2
    return forms.permute(0, 4, 5, 1, 2, 3, 6).reshape(b, gh + 1, gw + 1, 2 * c, 2 * d)


def affine_order(n_coeffs: int) -> list[int]:
    """Coefficient order used by the tiles: the affine part input-channel-major (row ``3k + o``
    is HDRNet's coefficient ``4o + k``), then the detail gains unchanged."""
    return [4 * o + k for k in range(4) for o in range(3)] + list(range(12, n_coeffs))


#: pixels per block of rows in the exported loop (intermediates of a block stay in cache)
BLOCK_PIXELS = 65536

#: guide kinds of :func:`_tiles`
CURVE, CONV = 0, 1


@torch.jit.script
def _guide(kind: int, rgb: torch.Tensor, params: List[torch.Tensor]) -> torch.Tensor:
    """Guide of ``rgb`` (…×3×N in [0, 1]) → …×N. curve: params = (matrix 3×3 and bias 3×1 in
    table-index units, segment intercepts 3×S, slopes 3×S, mix bias); conv: (W1 K×3 and b1 K×1
    with batch norm folded in, w2 1×K, b2)."""
    if kind == 0:
        matrix, bias, intercept, slope, mix = params[0], params[1], params[2], params[3], params[4]
        last = float(intercept.shape[1])
        pos = (torch.matmul(matrix, rgb) + bias).clamp(0.0, last)
        segment = pos.floor().clamp(max=last - 1.0).long()
        shape = list(rgb.shape[:-1]) + [intercept.shape[1]]
        a = torch.gather(intercept.expand(shape), -1, segment)
        s = torch.gather(slope.expand(shape), -1, segment)
        return (torch.addcmul(a, s, pos).sum(-2) + mix).clamp(0.0, 1.0)
    hidden = torch.relu(torch.matmul(params[0], rgb) + params[1])
    return torch.sigmoid(torch.matmul(params[2], hidden).squeeze(-2) + params[3])


@torch.jit.script
def _tiles(
    planes: torch.Tensor,
    tables: torch.Tensor,
    columns: torch.Tensor,
    inverse: torch.Tensor,
    fx: torch.Tensor,
    row_start: torch.Tensor,
    row_count: torch.Tensor,
    fy: torch.Tensor,
    luma_bins: int,
    detail_levels: int,
    guide_kind: int,
    guide_params: List[torch.Tensor],
    block_pixels: int,
) -> torch.Tensor:
    """Guide, slice and apply, band of tile rows by band, in blocks of about ``block_pixels``.

    ``planes``: B×(3+3L)×H×W (RGB in [0, 1], detail levels); ``tables``: B×Ty×Tx×2C×2D
    (:func:`tile_tables`, coefficients in :func:`affine_order`); ``columns``: Tx·Lx column
    indices that regroup a row by tile column (each padded to Lx by repeating its last pixel);
    ``inverse``: W positions that undo it; ``fx``: Tx×Lx fractions; ``row_start``/``row_count``:
    Ty tile rows; ``fy``: H fractions. Returns B×3×H×W (not clamped).
    """
    b = planes.shape[0]
    p = planes.shape[1]
    width = planes.shape[3]
    flat = planes.reshape(b, p, -1)
    tx = fx.shape[0]
    lx = fx.shape[1]
    n_coeffs = tables.shape[3] // 2
    bins = torch.arange(luma_bins, dtype=planes.dtype, device=planes.device).view(luma_bins, 1)
    step = max(1, block_pixels // max(1, b * width))
    bands: List[torch.Tensor] = []
    for ty in range(row_start.shape[0]):
        band_table = tables[:, ty]
        first = int(row_start[ty])
        stop = first + int(row_count[ty])
        for r0 in range(first, stop, step):
            rows = min(step, stop - r0)
            n = rows * lx
            where = (torch.arange(r0, r0 + rows, device=planes.device) * width).view(rows, 1) + columns.view(1, tx * lx)
            grouped = torch.gather(flat, 2, where.view(1, 1, rows * tx * lx).expand(b, p, rows * tx * lx))
            grouped = grouped.view(b, p, rows, tx, lx).permute(0, 3, 1, 2, 4).reshape(b, tx, p, n)  # B×Tx×P×N
            rgb = grouped[:, :, 0:3]
            guide = _guide(guide_kind, rgb, guide_params)  # B×Tx×N
            z = (guide * luma_bins - 0.5).clamp(0.0, float(luma_bins - 1))
            tents = torch.relu(1.0 - (z.unsqueeze(2) - bins).abs())  # B×Tx×D×N
            fxb = fx.view(tx, 1, 1, lx).expand(tx, 1, rows, lx).reshape(tx, 1, n)
            features = torch.stack([tents, tents * fxb], dim=3).reshape(b, tx, 2 * luma_bins, n)
            forms = torch.matmul(band_table, features)  # B×Tx×2C×N
            fyb = fy[r0 : r0 + rows].view(rows, 1).expand(rows, lx).reshape(n)
            coeffs = torch.addcmul(forms[:, :, 0:n_coeffs], forms[:, :, n_coeffs : 2 * n_coeffs], fyb)
            affine = coeffs[:, :, 0:12].reshape(b, tx, 4, 3, n)
            out = affine[:, :, 3] + (affine[:, :, 0:3] * rgb.unsqueeze(3)).sum(2)  # B×Tx×3×N
            if detail_levels > 0:
                gains = coeffs[:, :, 12:n_coeffs].reshape(b, tx, detail_levels, 3, n)
                details = grouped[:, :, 3:p].reshape(b, tx, detail_levels, 3, n)
                out = out + (gains * details).sum(2)
            out = out.view(b, tx, 3, rows, lx).permute(0, 2, 3, 1, 4).reshape(b, 3, rows, tx * lx)
            bands.append(torch.gather(out, 3, inverse.view(1, 1, 1, width).expand(b, 3, rows, width)))
    return torch.cat(bands, dim=2)


def guide_parameters(guide: torch.nn.Module) -> tuple[int, list[torch.Tensor]]:
    """(kind, parameters) of ``guide`` for :func:`_tiles`, everything that depends only on the weights."""
    if isinstance(guide, CurveGuide):
        tables, matrix, bias = guide.prepare()
        m = tables.shape[1]
        half = 0.5 * (m - 1)  # grid_sample position (align_corners=True) → table index
        slope = tables[:, 1:] - tables[:, :-1]
        intercept = tables[:, :-1] - slope * torch.arange(m - 1, dtype=tables.dtype, device=tables.device)
        return CURVE, [matrix * half, ((bias + 1) * half).view(3, 1), intercept, slope, guide.mix_bias]
    if isinstance(guide, ConvGuide):
        prepared = guide.prepare()
        if prepared is None:
            raise TypeError("the tiled path needs the guide in eval mode")
        weight, bias = prepared
        return CONV, [weight, bias.view(-1, 1), guide.conv2.weight, guide.conv2.bias]
    raise TypeError(f"no tiled evaluation for guide {type(guide).__name__}")


def sliced_apply(
    grid: torch.Tensor, guide: torch.nn.Module, full: torch.Tensor, details: torch.Tensor | None
) -> torch.Tensor:
    """``apply_coefficients(slice_grid(grid, guide(full)), full, details)`` computed tile by tile.

    ``grid``: B×C×D×Gh×Gw (C = 12 + 3L); ``guide``: a :class:`CurveGuide` or :class:`ConvGuide`
    (eval mode); ``full``: B×3×H×W in [0, 1]; ``details``: B×3L×H×W or None. Returns B×3×H×W
    (not clamped).
    """
    _, c, d, gh, gw = grid.shape
    h, w = full.shape[-2:]
    levels = (c - 12) // 3
    planes = full
    if levels:
        assert details is not None and details.shape[1] == 3 * levels
        planes = torch.cat([full, details.to(full.dtype)], 1)
    kind, params = guide_parameters(guide)
    tables = tile_tables(grid[:, affine_order(c)])
    col_start, col_count, fx, tile = tile_spans(w, gw, full.dtype)
    row_start, row_count, fy, _ = tile_spans(h, gh, full.dtype)
    width = col_count.max()
    offsets = torch.arange(width).view(1, -1)
    columns = torch.minimum(col_start.view(-1, 1) + offsets, (col_start + col_count - 1).view(-1, 1)).clamp(0, w - 1)
    inverse = tile * width + (torch.arange(w) - col_start[tile])
    return _tiles(
        planes, tables, columns.reshape(-1), inverse, fx[columns], row_start, row_count, fy, d, levels, kind, params, BLOCK_PIXELS
    )
