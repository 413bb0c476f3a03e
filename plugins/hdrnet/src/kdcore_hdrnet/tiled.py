"""The full-resolution pass of HDRNet as exported to ONNX: guide, slice and apply as matrix products.

onnxruntime runs ``GridSample`` one sample at a time (about 10 ns per sample and channel on a CPU
core), so the plain operator path (guide look-up and slice as ``GridSample``) is several times
slower there than PyTorch. This module computes the same values almost only with matrix products
(which onnxruntime runs at near the CPU's peak), ``Relu`` and a few element-wise operators, in a
loop over blocks of image rows so that intermediates stay in cache. Every per-pixel quantity is
kept pixel-major (pixels × values), the layout in which those matrix products are fast.

* **Guide.** Both guides are ``out(relu(x·A)·s + c)`` for the pixel ``x = (1, r, g, b)``: the
  curve guide's curves are sums of ramps ``Σ_i a_i·max(v − t_i, 0)`` of the colour-matrix
  outputs ``v`` (``out`` = clamp to [0, 1]); the conv guide is a two-layer network (``out`` =
  sigmoid).
* **Slice.** The slice is trilinear in (x, y, guide). Between two neighbouring cell centres along
  x and along y (a *tile*; the image borders, where the slice clamps, are tiles of their own)
  every pixel reads the same 2×2 cells, and its coefficients are
  ``Σ_d t_d·(base_d + fx·dx_d + fy·(dy_d + fx·dxy_d))``, where ``t_d`` is the linear-interpolation
  ("tent") weight of luma bin ``d`` and ``fx``/``fy`` the pixel's position between the centres.
  A tent is ``relu(z−d+1) − 2·relu(z−d) + relu(z−d−1)`` of the luma coordinate ``z``, and
  ``fx·relu(u) = relu(fx·u)`` for ``fx ≥ 0``, so the tile's coefficients (upper row of cells, and
  change towards the lower row) are one matrix product of ``relu([z, 1, fx·z, fx]·K)`` with a
  per-tile table. The pixels of a block are regrouped by tile column with one ``GatherElements``
  (each tile column padded to the widest one) and put back with another.
* **Apply.** Output channel ``o`` is ``Σ_k value_k·(upper_ko + fy·change_ko)`` over the pixel's
  values ``(1, r, g, b, details…)``: one element-wise product with those values spread out by a
  0/1 matrix product, then a 0/1 matrix product that sums per output channel.

The graph stays dynamic in batch, height and width: the block and tile bounds are computed from
the input size in the graph. Used by :meth:`kdcore_hdrnet.HDRNet.forward_grid` while exporting
to ONNX, and callable in eager mode (the tests compare it with the PyTorch path).
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import torch
import torch.nn.functional as F

from kdcore_hdrnet.guide import ConvGuide, CurveGuide

#: pixels per block of rows in the exported loop (intermediates of a block stay in cache)
BLOCK_PIXELS = 16384

#: guide kinds of :func:`_tiles`
CURVE, CONV = 0, 1


def tile_spans(
    n: int, cells: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tiles along one axis of ``n`` pixels sliced from ``cells`` grid cells.

    Pixel ``i`` sits at cell coordinate ``p = (i + 0.5)·cells/n − 0.5``; tile ``s`` (0 … cells)
    holds the pixels with ``s − 1 ≤ p < s`` (tile 0 and tile ``cells`` are the clamped borders).
    Returns (first pixel of each tile, pixel count of each tile, each pixel's fraction
    ``p − s + 1`` (≥ 0), each pixel's tile).
    """
    pos = (torch.arange(n, dtype=dtype) + 0.5) * (cells / n) - 0.5
    tile = (pos.floor() + 1).clamp(0, cells)
    frac = pos - (tile - 1)
    k = torch.arange(cells + 1, dtype=dtype).view(-1, 1)
    start = (tile.view(1, -1) < k).sum(1)
    count = (tile.view(1, -1) == k).sum(1)
    return start, count, frac, tile.long()


def ramp_matrices(luma_bins: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, H): ``relu([z, 1, fx·z, fx]·K)·H`` = ``[t_0 … t_{D−1}, fx·t_0 … fx·t_{D−1}]``, the tents
    of luma coordinate ``z`` ∈ [0, D−1] and the same times ``fx`` ≥ 0 (ramps at −1 … D)."""
    knots = torch.arange(-1, luma_bins + 1, dtype=dtype)
    r = knots.numel()
    k = torch.zeros(4, 2 * r, dtype=dtype)
    k[0, :r], k[1, :r] = 1.0, -knots
    k[2, r:], k[3, r:] = 1.0, -knots
    h = torch.zeros(2 * r, 2 * luma_bins, dtype=dtype)
    for half in range(2):
        for d in range(luma_bins):  # ramp index of knot d is d + 1
            h[half * r + d, half * luma_bins + d] = 1.0
            h[half * r + d + 1, half * luma_bins + d] = -2.0
            h[half * r + d + 2, half * luma_bins + d] = 1.0
    return k, h


def tile_tables(grid: torch.Tensor) -> torch.Tensor:
    """Per-tile bilinear forms of ``grid`` (B×C×D×Gh×Gw, C = 12 + 3L): (Gh+1)×B×(Gw+1)×2C×2D.

    Column ``q·D + d`` multiplies ``t_d·(1, fx)[q]``. Rows: the 12 affine coefficients on the
    tile's upper row of cells, their change towards the lower row (to be scaled by ``fy``), then
    the same two for the 3L detail gains. Border tiles repeat the edge cells, so their
    differences are zero.
    """
    b, c, d, gh, gw = grid.shape
    padded = F.pad(grid.reshape(b, c * d, gh, gw), (1, 1, 1, 1), mode="replicate").view(
        b, c, d, gh + 2, gw + 2
    )
    c00 = padded[..., :-1, :-1]
    c01 = padded[..., :-1, 1:]
    c10 = padded[..., 1:, :-1]
    c11 = padded[..., 1:, 1:]
    upper = torch.stack([c00, c01 - c00], dim=0)  # 2(q)×B×C×D×Y×X
    change = torch.stack([c10 - c00, c11 - c10 - c01 + c00], dim=0)
    rows = torch.cat([upper[:, :, :12], change[:, :, :12], upper[:, :, 12:], change[:, :, 12:]], dim=2)
    return rows.permute(4, 1, 5, 2, 0, 3).reshape(gh + 1, b, gw + 1, 2 * c, 2 * d)


def affine_order(n_coeffs: int) -> list[int]:
    """Coefficient order used by the tiles: the affine part input-channel-major (column
    ``3k + o`` is HDRNet's coefficient ``4o + k``), then the detail gains unchanged."""
    return [4 * o + k for k in range(4) for o in range(3)] + list(range(12, n_coeffs))


def _guide(
    kind: int,
    rgb: torch.Tensor,
    p0: torch.Tensor,
    p1: torch.Tensor,
    p2: torch.Tensor,
    p3: torch.Tensor,
    p4: torch.Tensor,
) -> torch.Tensor:
    """Guide of ``rgb`` (B×Tx×3×N in [0, 1]) → B×Tx×N, from :func:`guide_parameters`. curve: matrix
    3×3 and bias 3×1 in table-index units, segment intercepts 3×S, slopes 3×S, mix bias; conv:
    W1 K×3 and b1 K×1 with batch norm folded in, w2 1×K, b2 (p4 unused)."""
    if kind == 0:
        last = float(p2.shape[1])
        pos = (torch.matmul(p0, rgb) + p1).clamp(0.0, last)
        segment = pos.floor().clamp(max=last - 1.0).long()
        shape = [rgb.shape[0], rgb.shape[1], rgb.shape[2], p2.shape[1]]  # rgb: B×Tx×3×N
        a = torch.gather(p2.expand(shape), -1, segment)
        s = torch.gather(p3.expand(shape), -1, segment)
        return (torch.addcmul(a, s, pos).sum(-2) + p4).clamp(0.0, 1.0)
    hidden = torch.relu(torch.matmul(p0, rgb) + p1)
    return torch.sigmoid(torch.matmul(p2, hidden).sum(-2) + p3)  # p2 has one row


def _tiles(
    planes: torch.Tensor,
    tables: torch.Tensor,
    columns: torch.Tensor,
    inverse: torch.Tensor,
    fx: torch.Tensor,
    row_start: torch.Tensor,
    row_count: torch.Tensor,
    fy: torch.Tensor,
    ramps: torch.Tensor,
    detail_levels: int,
    luma_bins: int,
    guide_kind: int,
    g0: torch.Tensor,
    g1: torch.Tensor,
    g2: torch.Tensor,
    g3: torch.Tensor,
    g4: torch.Tensor,
    block_pixels: int,
) -> torch.Tensor:
    """Guide, slice and apply, block of rows by block (each within one row of tiles).

    ``planes``: B×(3+3L)×H×W (RGB in [0, 1], detail levels); ``tables``: Ty×B×Tx×2C×R
    (:func:`tile_tables` with the tent matrix folded in); ``columns``: Tx·Lx column
    indices that regroup a row by tile column (each padded to Lx by repeating its last pixel);
    ``inverse``: W positions that undo it; ``fx``: Tx×Lx fractions; ``row_start``/``row_count``:
    Ty tile rows; ``fy``: H fractions; ``ramps``: R×4; ``g0`` … ``g4``: the guide's
    :func:`guide_parameters`. Returns B×3×H×W (not clamped).
    """
    b = planes.shape[0]
    p = planes.shape[1]
    height = planes.shape[2]
    width = planes.shape[3]
    flat = planes.reshape(b, -1)
    tx = fx.shape[0]
    lx = fx.shape[1]
    # gather index of (tile column, plane, ·, position) before the row offset: Tx×P×1×Lx
    base = columns.view(tx, 1, 1, lx) + (torch.arange(p, device=planes.device) * (height * width)).view(
        1, p, 1, 1
    )
    fx3 = fx.view(tx, 1, lx)
    tile_x = torch.div(inverse, lx, rounding_mode="floor")
    pos_x = inverse - tile_x * lx
    step = max(1, block_pixels // max(1, b * width))
    bands: list[torch.Tensor] = []
    for ty in range(row_start.shape[0]):
        band_tables = tables[ty]  # a contiguous block
        first = int(row_start[ty])
        stop = first + int(row_count[ty])
        for r0 in range(first, stop, step):
            rows = min(step, stop - r0)
            n = rows * lx
            row_offsets = torch.arange(r0, r0 + rows, device=planes.device) * width
            where = base + row_offsets.view(1, 1, rows, 1)  # Tx×P×R×Lx
            grouped = torch.gather(flat, 1, where.view(1, -1).expand(b, -1)).view(b, tx, p, rows, lx)
            rgb = grouped[:, :, 0:3]
            z = _guide(guide_kind, rgb.reshape(b, tx, 3, n), g0, g1, g2, g3, g4).view(b, tx, rows, lx)
            z = (z * luma_bins - 0.5).clamp(0.0, float(luma_bins - 1))
            zin = torch.stack([z, torch.ones_like(z), z * fx3, fx3.expand(b, tx, rows, lx)], dim=2)
            forms = torch.matmul(
                band_tables, torch.relu(torch.matmul(ramps, zin.view(b, tx, 4, n)))
            )  # B×Tx×2C×N
            fyb = fy[r0 : r0 + rows].view(rows, 1)
            values = torch.cat([rgb, torch.ones_like(z).unsqueeze(2)], dim=2)  # B×Tx×4×R×Lx: r, g, b, 1
            values = torch.stack([values, values * fyb], dim=2).view(b, tx, 2, 4, 1, n)
            if detail_levels > 0:
                affine, gains = forms.split([24, 6 * detail_levels], dim=2)
                out = (affine.view(b, tx, 2, 4, 3, n) * values).sum([2, 3])
                details = grouped[:, :, 3:p]
                details = torch.stack([details, details * fyb], dim=2).view(b, tx, 2, detail_levels, 3, n)
                out = out + (gains.view(b, tx, 2, detail_levels, 3, n) * details).sum([2, 3])
            else:
                out = (forms.view(b, tx, 2, 4, 3, n) * values).sum([2, 3])  # B×Tx×3×N
            # back to B×3×R×W: element (tile, channel, row, position) of the flattened output
            back = (
                (tile_x * (3 * n) + pos_x).view(1, 1, width)
                + (torch.arange(3, device=planes.device) * n).view(3, 1, 1)
                + (torch.arange(rows, device=planes.device) * lx).view(1, rows, 1)
            )
            bands.append(
                torch.gather(out.reshape(b, -1), 1, back.view(1, -1).expand(b, -1)).view(b, 3, rows, width)
            )
    return torch.cat(bands, dim=2)


@functools.cache
def _scripted() -> Any:
    """:func:`_tiles` compiled by TorchScript, so that the exported graph keeps its loop (the
    number of blocks depends on the input size). Compiled on first use."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script's deprecation notice
        torch.jit.script(_guide)
        return torch.jit.script(_tiles)


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
        return CONV, [weight, bias.view(-1, 1), guide.conv2.weight, guide.conv2.bias, guide.conv2.bias]
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
    ramps, tents = ramp_matrices(d, grid.dtype)
    tables = torch.matmul(tile_tables(grid[:, affine_order(c)]), tents.t().to(grid.device))  # Ty×B×Tx×2C×R
    kind, params = guide_parameters(guide)
    col_start, col_count, fx, tile = tile_spans(w, gw, full.dtype)
    row_start, row_count, fy, _ = tile_spans(h, gh, full.dtype)
    width = col_count.max()
    offsets = torch.arange(width).view(1, -1)  # type: ignore[call-overload]  # a 0-d tensor: dynamic in the graph
    columns = torch.minimum(col_start.view(-1, 1) + offsets, (col_start + col_count - 1).view(-1, 1)).clamp(
        0, w - 1
    )
    inverse = tile * width + (torch.arange(w) - col_start[tile])
    return _scripted()(
        planes,
        tables,
        columns.reshape(-1),
        inverse,
        fx[columns],
        row_start,
        row_count,
        fy,
        ramps.t().to(grid.device),
        levels,
        d,
        kind,
        *params,
        BLOCK_PIXELS,
    )


def _cubic(t: float) -> list[float]:
    """PyTorch's bicubic convolution weights (A = −0.75) of the taps at −1, 0, 1, 2 for fraction ``t``."""
    a = -0.75

    def near(u: float) -> float:  # |u| ≤ 1
        return ((a + 2) * u - (a + 3)) * u * u + 1

    def far(u: float) -> float:  # 1 < |u| < 2
        return ((a * u - 5 * a) * u + 8 * a) * u - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def bicubic_kernel(scale: int) -> torch.Tensor:
    """scale² × 5 × 5 kernels: output phase (py, px) of an integer ``scale`` bicubic upscale
    (``align_corners=False``) as a correlation over input offsets −2 … 2."""
    taps = torch.zeros(scale, 5, dtype=torch.float64)
    for phase in range(scale):
        src = (phase + 0.5) / scale - 0.5  # source position relative to the input pixel
        first = int(torch.tensor(src).floor())
        for i, w in enumerate(_cubic(src - first)):
            taps[phase, first - 1 + i + 2] += w
    return torch.einsum("yi,xj->yxij", taps, taps).reshape(scale * scale, 5, 5).float()


def bicubic_upscale(x: torch.Tensor, scale: int) -> torch.Tensor:
    """``F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)`` for an integer
    ``scale`` as one grouped convolution (edge-replicated input) and a pixel shuffle: onnxruntime
    runs its cubic ``Resize`` one output at a time, about fifty times slower."""
    c = int(x.shape[1])  # a constant kernel shape in exported graphs
    kernel = bicubic_kernel(scale).to(x.device, x.dtype)
    weight = kernel.view(1, scale * scale, 5, 5).expand(c, -1, -1, -1).reshape(c * scale * scale, 1, 5, 5)
    phases = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), weight, groups=c)
    return F.pixel_shuffle(phases, scale)
