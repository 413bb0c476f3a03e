"""Deformable HDRNet: HDRNet with deformable local convolutions and deformable slicing.

Two changes to :class:`kdcore_hdrnet.HDRNet`, each switchable and each starting as the identity:

* **deformable local path** — the two 3×3 convolutions of ``lowres.local_path`` become modulated
  deformable convolutions (:class:`~kdcore_deformable_hdrnet.deform_conv.ModulatedDeformConv2d`)
  whose offsets and masks are predicted from their own input by a zero-initialised convolution.
* **deformable slicing** — the bilateral grid is read at spatially shifted positions, each shift
  at most ``slice_offset_range`` grid cells (``range·tanh``), predicted from the grid of
  coefficients by a zero-initialised 3×3 conv, per luma bin (so the shift depends on the guide:
  pixels on either side of an edge can move to different cells). Two ways to apply it:

  - ``"lattice"`` (default): the grid is resampled at the shifted positions of a lattice
    ``slice_lattice`` (odd) times finer than the grid, and the full-resolution slice is HDRNet's
    own fast one on that finer grid. Each pixel's effective shift is the trilinear interpolation
    of the lattice shifts at its (x, y, guide). Full-resolution cost: about HDRNet's.
  - ``"pixel"``: the shift is interpolated to every pixel (at its guide value) and added to that
    pixel's slicing coordinates, which needs a non-separable slice (two 2-D samples per pixel):
    literal per-pixel offsets, about twice HDRNet's full-resolution cost on CPU.

With the new parts at zero the network computes what ``hdrnet`` computes with the same weights
(an odd lattice factor contains every grid cell centre, so resampling is exact); every ``hdrnet``
tensor keeps its name and shape in the state dict.
"""

from __future__ import annotations

from typing import Literal

import pydantic
import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

import kdcore
from kdcore_deformable_hdrnet.deform_conv import ModulatedDeformConv2d
from kdcore_hdrnet import HDRNet
from kdcore_hdrnet.model import STREAM_BLOCK_PIXELS, HDRNetParams
from kdcore_hdrnet.slicing import apply_coefficients, interpolate_rows


class DeformableHDRNetParams(HDRNetParams):
    """Params of :class:`DeformableHDRNet`: every ``hdrnet`` param, plus the deformable parts."""

    deformable_local: bool = pydantic.Field(
        default=True,
        description="Make the local path's two 3×3 convs modulated deformable convs (DCNv2).",
    )
    deformable_slicing: bool = pydantic.Field(
        default=True,
        description="Shift the grid's slicing positions by learned, bounded, guide-dependent offsets.",
    )
    slice_offset_mode: Literal["lattice", "pixel"] = pydantic.Field(
        default="lattice",
        description="'lattice': offsets on a grid slice_lattice× finer than the bilateral grid, "
        "full-resolution cost ≈ hdrnet's; 'pixel': offsets added to every pixel's slicing "
        "coordinates, ≈ 2× hdrnet's full-resolution cost.",
    )
    slice_lattice: int = pydantic.Field(
        default=3,
        ge=1,
        le=9,
        description="'lattice' only: refinement factor of the offset lattice (odd).",
    )
    slice_offset_range: float = pydantic.Field(
        default=1.0,
        gt=0.0,
        le=4.0,
        description="Largest slicing offset, in grid cells (offset = range · tanh(·)).",
    )
    deform_impl: Literal["grid_sample", "torchvision"] = pydantic.Field(
        default="grid_sample",
        description="Deformable conv implementation: 'grid_sample' (fast backward on CPU) or "
        "'torchvision' (torchvision.ops.deform_conv2d); both compute the same values.",
    )

    @pydantic.model_validator(mode="after")
    def _check_lattice(self) -> DeformableHDRNetParams:
        if self.slice_lattice % 2 == 0:
            raise ValueError(
                f"slice_lattice ({self.slice_lattice}) must be odd, so that the finer lattice "
                f"contains every grid cell centre; use {self.slice_lattice + 1}"
            )
        return self


def _cell_positions(n: int, factor: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Positions, in cells of an ``n``-cell axis, of the ``n·factor`` points of a finer lattice."""
    return (torch.arange(n * factor, device=device, dtype=dtype) + 0.5) / factor - 0.5


class SliceOffsets(nn.Module):
    """Predicts slicing offsets (grid cells, x then y) per luma bin from the grid of coefficients.

    ``head`` (3×3 conv, zero-initialised) maps the B×(C·D)×S×S grid to 2·D offset logits; they are
    interpolated bilinearly to the positions where offsets are needed and bounded with
    ``range·tanh``, so they start at exactly zero.
    """

    def __init__(self, grid_channels: int, luma_bins: int, offset_range: float = 1.0):
        super().__init__()
        self.offset_range = offset_range
        self.luma_bins = luma_bins
        self.head = nn.Conv2d(grid_channels, 2 * luma_bins, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        assert self.head.bias is not None  # Conv2d's default bias=True
        nn.init.zeros_(self.head.bias)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        """B×C×D×S×S grid → B×2×D×S×S offset logits (a grid that :func:`slice_grid` can read)."""
        logits = self.head(rearrange(grid, "b c d h w -> b (c d) h w"))
        return rearrange(logits, "b (o d) h w -> b o d h w", o=2)

    def bound(self, logits: torch.Tensor) -> torch.Tensor:
        """Offsets in grid cells, in (−range, range)."""
        return self.offset_range * torch.tanh(logits)

    def on_lattice(self, logits: torch.Tensor, factor: int) -> torch.Tensor:
        """Offsets at a lattice ``factor``× finer than the grid: B×2×D×(S·f)×(S·f)."""
        _b, o, _d, gh, gw = logits.shape
        fine = F.interpolate(
            rearrange(logits, "b o d h w -> b (o d) h w"),
            size=(gh * factor, gw * factor),
            mode="bilinear",
            align_corners=False,
        )
        return self.bound(rearrange(fine, "b (o d) h w -> b o d h w", o=o))


def deform_grid(grid: torch.Tensor, offsets: torch.Tensor, factor: int) -> torch.Tensor:
    """The grid resampled at the points of a ``factor``× finer lattice shifted by ``offsets``.

    ``grid``: B×C×D×S×S; ``offsets``: B×2×D×(S·f)×(S·f), grid cells, x then y. Bilinear in space
    within each luma bin, border-clamped like the slice. Returns B×C×D×(S·f)×(S·f); with zero
    offsets and odd ``factor``, slicing the result equals slicing ``grid``.
    """
    b, _c, _d, gh, gw = grid.shape
    ys = _cell_positions(gh, factor, grid.device, grid.dtype)
    xs = _cell_positions(gw, factor, grid.device, grid.dtype)
    # Cell coordinate u -> normalised (align_corners=False): (2u + 1) / n - 1.
    gx = (2 * (xs.view(1, 1, 1, -1) + offsets[:, 0]) + 1) / gw - 1  # B×D×h×w
    gy = (2 * (ys.view(1, 1, -1, 1) + offsets[:, 1]) + 1) / gh - 1
    coords = rearrange(torch.stack([gx, gy], dim=-1), "b d h w two -> (b d) h w two")
    per_bin = rearrange(grid, "b c d h w -> (b d) c h w")
    out = F.grid_sample(per_bin, coords, mode="bilinear", padding_mode="border", align_corners=False)
    return rearrange(out, "(b d) c h w -> b c d h w", b=b)


def slice_rows_with_offsets(
    grid: torch.Tensor, guide: torch.Tensor, offsets: torch.Tensor, height: int, start: int
) -> torch.Tensor:
    """Trilinear slice of ``grid`` (B×C×D×Gh×Gw) for image rows ``start:start+n`` of a
    ``height``-row image, each pixel's spatial position shifted by ``offsets`` (B×2×n×W, cells).

    Coordinates as in :func:`kdcore_hdrnet.slicing.slice_grid` (border-clamped): the grid is laid
    out as one 2-D image per coefficient, (luma) × (row-major cells), and each pixel takes two
    bilinear samples — at its x in the cell rows just above and below its y — blended along y.
    Returns B×C×n×W.
    """
    _b, _c, _d, gh, gw = grid.shape
    n, width = guide.shape[-2:]
    dtype, device = grid.dtype, grid.device
    cols = torch.arange(width, device=device, dtype=dtype)
    rows = torch.arange(start, start + n, device=device, dtype=dtype)
    # Continuous cell coordinates (cell centres at integers), clamped like border padding.
    cx = ((cols + 0.5) * (gw / width) - 0.5 + offsets[:, 0]).clamp(0, gw - 1)
    cy = ((rows.view(n, 1) + 0.5) * (gh / height) - 0.5 + offsets[:, 1]).clamp(0, gh - 1)
    y0 = cy.detach().floor().clamp_(max=max(gh - 2, 0))
    wy = cy - y0
    flat_x = y0 * gw + cx  # column in the row-major (cells) axis, upper row
    flat_x = torch.cat([flat_x, flat_x + gw if gh > 1 else flat_x], dim=1)  # B×2n×W
    gx = (2 * flat_x + 1) / (gh * gw) - 1
    gz = repeat(guide[:, 0].to(dtype) * 2 - 1, "b n w -> b (two n) w", two=2)
    flat = rearrange(grid, "b c d h w -> b c d (h w)")
    samples = F.grid_sample(
        flat, torch.stack([gx, gz], dim=-1), mode="bilinear", padding_mode="border", align_corners=False
    )  # B×C×2n×W
    return torch.lerp(samples[:, :, :n], samples[:, :, n:], wy.unsqueeze(1))


class DeformableHDRNet(HDRNet):
    """HDRNet with deformable local convolutions and deformable slicing (see the module doc).

    Named submodules: those of ``hdrnet`` (``lowres.splat``, ``lowres.global_path``,
    ``lowres.local_path``, ``lowres.fusion``, ``lowres.coefficients``, ``guide``), plus
    ``lowres.local_path.conv1.0.offset_mask`` and ``lowres.local_path.conv2.offset_mask`` (the
    deformable convs' offset/mask predictors) and ``slice_offsets`` (the slicing offsets).
    """

    Params = DeformableHDRNetParams
    params: DeformableHDRNetParams

    def __init__(self, params: DeformableHDRNetParams | None = None, task: kdcore.Task | None = None):
        super().__init__(params, task)
        p: DeformableHDRNetParams = self.params
        self.slice_offsets: SliceOffsets | None = None
        if p.deformable_slicing:
            grid_channels = self.lowres.coefficients.out_channels
            self.slice_offsets = SliceOffsets(grid_channels, p.luma_bins, p.slice_offset_range)

    def _make_local_conv(self, in_ch: int, out_ch: int, bias: bool) -> nn.Module:
        """A modulated deformable 3×3 conv (``weight``/``bias`` named and shaped as HDRNet's)."""
        p: DeformableHDRNetParams = self.params
        if not p.deformable_local:
            return super()._make_local_conv(in_ch, out_ch, bias)
        return ModulatedDeformConv2d(in_ch, out_ch, 3, padding=1, bias=bias, impl=p.deform_impl)

    def predict_grid(self, x: torch.Tensor) -> torch.Tensor:
        """The grid to slice: HDRNet's, resampled on the shifted finer lattice in 'lattice' mode."""
        grid = super().predict_grid(x)
        p: DeformableHDRNetParams = self.params
        if self.slice_offsets is None or p.slice_offset_mode != "lattice":
            return grid
        offsets = self.slice_offsets.on_lattice(self.slice_offsets(grid), p.slice_lattice)
        return deform_grid(grid, offsets, p.slice_lattice)

    def forward_grid(self, x: torch.Tensor) -> torch.Tensor:
        """The bilateral-grid model's image, B×3×(h·scale)×(w·scale) in [0, 1]."""
        if self.slice_offsets is None or self.params.slice_offset_mode != "pixel":
            return super().forward_grid(x)
        grid = self.predict_grid(x)
        logits = self.slice_offsets(grid)
        full = self.fullres_input(x)
        details = self.details(full)
        b, _, height, width = full.shape
        # The exported graph takes the one-block path: its row loop would depend on the size.
        streamed = not torch.is_grad_enabled() and not self.training and not torch.onnx.is_in_onnx_export()
        step = max(1, STREAM_BLOCK_PIXELS // max(1, b * width)) if streamed else height
        out = torch.empty_like(full, memory_format=torch.contiguous_format) if streamed else None
        blocks = []
        for r0 in range(0, height, step):
            r1 = min(height, r0 + step)
            block = full[:, :, r0:r1]
            guide = self.guide(block)
            offsets = self._pixel_offsets(logits, guide, height, r0)
            coeffs = slice_rows_with_offsets(grid, guide, offsets, height, r0)
            detail = None if details is None else details[:, :, r0:r1]
            if out is not None:
                apply_coefficients(coeffs, block, detail, out=out[:, :, r0:r1])
            else:
                blocks.append(apply_coefficients(coeffs, block, detail))
        if out is not None:
            return out.clamp_(0, 1)
        return torch.cat(blocks, dim=2).clamp(0, 1)

    def _pixel_offsets(
        self, logits: torch.Tensor, guide: torch.Tensor, height: int, start: int
    ) -> torch.Tensor:
        """Per-pixel offsets (B×2×n×W) for rows ``start:start+n``: the offset grid sliced at
        each pixel's (x, y, guide), bounded."""
        assert self.slice_offsets is not None
        b, _, n, width = guide.shape
        per_row = interpolate_rows(logits, height, start, start + n)  # (B·n)×2×D×S
        xs = (torch.arange(width, device=guide.device, dtype=logits.dtype) * 2 + 1) / width - 1
        zs = rearrange(guide, "b 1 n w -> (b n) 1 w") * 2 - 1
        coords = torch.stack([xs.view(1, 1, width).expand_as(zs), zs], dim=-1)
        sampled = F.grid_sample(
            per_row, coords, mode="bilinear", padding_mode="border", align_corners=False
        )  # (B·n)×2×1×W
        return self.slice_offsets.bound(rearrange(sampled, "(b n) o 1 w -> b o n w", b=b))


class DeformableHDRNetTeacher(DeformableHDRNet, kdcore.Teacher):
    """Deformable HDRNet as a teacher: the same network, loaded from a trained checkpoint."""
