"""HDRNet: deep bilateral learning (Gharbi et al., SIGGRAPH 2017) for kdcore.

A low-resolution stream predicts a bilateral grid of affine colour transforms from a fixed-size
copy of the input; a full-resolution guide picks, per pixel, where to read the grid; the sliced
transform is applied to the full-resolution image. In ``sr`` mode the full-resolution image is
the bicubic upscale of the input, and the grid also holds per-pixel gains for band-pass detail
of that upscale (see the README).
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import pydantic
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

import kdcore
import kdcore.interfaces
from kdcore_hdrnet import fused, tiled
from kdcore_hdrnet.detail import laplacian_details
from kdcore_hdrnet.guide import ConvGuide, CurveGuide
from kdcore_hdrnet.lowres import LowResStream
from kdcore_hdrnet.slicing import (
    apply_coefficients,
    coordinate_buffer,
    interpolate_rows,
    pixel_centres,
    slice_grid,
    slice_rows,
)

#: enhance training inputs smaller than this fraction of net_input_size get a warning
PATCH_WARN_RATIO = 0.8

#: Pixels per block of rows in the streamed (inference) path; keeps intermediates in cache.
STREAM_BLOCK_PIXELS = 65536


class HDRNetParams(kdcore.interfaces.Params):
    """Params of :class:`HDRNet` (spec ``params``); unknown keys are rejected."""

    channel_multiplier: int = pydantic.Field(
        default=1,
        ge=1,
        le=32,
        description="Width factor of the low-resolution stream (channels = multiplier × luma_bins × 1, 2, 4, 8).",
    )
    luma_bins: int = pydantic.Field(
        default=8, ge=2, le=64, description="Luma (guide) bins of the bilateral grid."
    )
    spatial_bins: int = pydantic.Field(
        default=16,
        ge=2,
        le=256,
        description="Grid cells along each side; must equal net_input_size / 16.",
    )
    net_input_size: int = pydantic.Field(
        default=256,
        ge=32,
        le=4096,
        description="Side of the square low-resolution copy the grid is predicted from.",
    )
    guide: Literal["pointwise-curve", "conv"] = pydantic.Field(
        default="pointwise-curve",
        description="'pointwise-curve': colour matrix + per-channel 16-knot curves + mix (the paper); "
        "'conv': per-pixel network 3 → guide_hidden → 1.",
    )
    guide_hidden: int = pydantic.Field(
        default=16, ge=1, le=256, description="Hidden units of the 'conv' guide."
    )
    batch_norm: bool = pydantic.Field(
        default=False, description="Batch norm in the low-resolution stream (off in the official code)."
    )
    sr_detail_levels: int = pydantic.Field(
        default=2,
        ge=0,
        le=4,
        description="sr only: Laplacian-pyramid detail levels of the bicubic upscale that the grid "
        "can amplify per pixel (3 more coefficients per level).",
    )
    enhance_detail_levels: int = pydantic.Field(
        default=0,
        ge=0,
        le=4,
        description="enhance only: Laplacian-pyramid detail levels of the input that the grid can "
        "amplify per pixel, as in sr (0 = the paper's affine-only model). Local operators "
        "(sharpening, local contrast) need them: see the README, 'Learning operators'.",
    )
    sr_residual_channels: int = pydantic.Field(
        default=0,
        ge=0,
        le=128,
        description="sr only: width of a small learned residual branch on the low-resolution input "
        "(three 3×3 convs, the last to 3·scale² channels, then pixel shuffle) added to the output, "
        "for the detail that gains on the bicubic upscale cannot make; its last conv starts at "
        "zero, so the model starts as without it. 0 = none (the paper's model).",
    )
    lowres_antialias: bool = pydantic.Field(
        default=False,
        description="Antialias when shrinking the input to net_input_size (the official code does not).",
    )

    @pydantic.model_validator(mode="after")
    def _check_grid_size(self) -> HDRNetParams:
        if self.net_input_size != 16 * self.spatial_bins:
            raise ValueError(
                f"net_input_size ({self.net_input_size}) must be 16 × spatial_bins "
                f"({self.spatial_bins}): the low-resolution stream downsamples by 16 to the grid; "
                f"set spatial_bins to {self.net_input_size // 16} or net_input_size to {16 * self.spatial_bins}"
            )
        return self


class SRResidual(nn.Sequential):
    """The optional sr residual branch: conv3×3 → ReLU → conv3×3 → ReLU → conv3×3 → pixel shuffle.

    Maps the B×3×h×w input to a B×3×(h·s)×(w·s) correction; the last conv starts at zero.
    """

    def __init__(self, channels: int, scale: int):
        super().__init__(
            nn.Conv2d(3, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, 3 * scale * scale, 3, padding=1),
            nn.PixelShuffle(scale),
        )
        last = self[4]
        assert isinstance(last, nn.Conv2d)
        nn.init.zeros_(last.weight)
        assert last.bias is not None
        nn.init.zeros_(last.bias)


class HDRNet(kdcore.Student):
    """HDRNet student: ``forward(x)`` maps B×3×h×w in [0, 1] to B×3×(h·s)×(w·s) in [0, 1].

    Named submodules (stable, usable as feature paths): ``lowres.splat``, ``lowres.global_path``,
    ``lowres.local_path``, ``lowres.fusion``, ``lowres.coefficients``, ``guide``; with
    ``sr_residual_channels`` also ``sr_residual`` (and ``sr_residual.1``, ``.3``: its hidden maps).

    Extension points for subclasses: :meth:`_make_local_conv` (the local path's 3×3 convs) and
    :meth:`slice_coefficients` (accepts per-pixel spatial ``offsets``).
    """

    Params = HDRNetParams
    params: HDRNetParams

    def __init__(self, params: HDRNetParams | None = None, task: kdcore.Task | None = None):
        super().__init__(params, task)
        p: HDRNetParams = self.params
        self.scale = self.task.scale
        self.detail_levels = p.sr_detail_levels if self.task.kind == "sr" else p.enhance_detail_levels
        self.n_coeffs = 12 + 3 * self.detail_levels
        self.luma_bins = p.luma_bins
        self.lowres = LowResStream(
            width=p.channel_multiplier * p.luma_bins,
            cells=p.spatial_bins,
            grid_channels=self.n_coeffs * p.luma_bins,
            batch_norm=p.batch_norm,
            make_local_conv=self._make_local_conv,
        )
        # Any guide module with forward(x), prepare() and evaluate(x, prepared).
        self.guide: CurveGuide | ConvGuide = (
            CurveGuide() if p.guide == "pointwise-curve" else ConvGuide(p.guide_hidden)
        )
        self._init_coefficients()
        self.sr_residual: SRResidual | None = None
        if self.task.kind == "sr" and p.sr_residual_channels:
            self.sr_residual = SRResidual(p.sr_residual_channels, self.scale)

    # ----------------------------------------------------------------- extension points
    def _make_local_conv(self, in_ch: int, out_ch: int, bias: bool) -> nn.Module:
        """Builds one 3×3 convolution of the local path (``lowres.local_path.conv1.0`` and
        ``lowres.local_path.conv2``). Override to change the operator; the returned module must
        map B×in_ch×S×S to B×out_ch×S×S. A subclass that keeps an ``nn.Conv2d`` (or a module
        holding ``weight``/``bias`` of the same shapes) keeps HDRNet's state-dict names.
        """
        return nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=bias)

    def slice_coefficients(
        self, grid: torch.Tensor, guide: torch.Tensor, offsets: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Trilinear slice of ``grid`` (B×C×D×S×S) at every pixel of ``guide`` (B×1×H×W, [0, 1]).

        ``offsets``: optional B×2×H×W spatial shifts in grid cells (channel 0 = x, 1 = y) added to
        each pixel's sampling position (cell centres, border clamped). Returns B×C×H×W.
        """
        return slice_grid(grid, guide, offsets)

    # ----------------------------------------------------------------- building blocks
    def _init_coefficients(self) -> None:
        """Start at the identity transform: identity affine bias in every luma bin, zero gains,
        and small random weights (so every layer receives gradient from the first step)."""
        conv = self.lowres.coefficients
        with torch.no_grad():
            conv.weight.normal_(0.0, 1e-3)
            bias = torch.zeros(self.n_coeffs, self.luma_bins)
            bias[[0, 5, 10]] = 1.0
            assert conv.bias is not None  # the coefficients conv is built with a bias
            conv.bias.copy_(bias.flatten())

    def lowres_input(self, x: torch.Tensor) -> torch.Tensor:
        """The input resized to net_input_size × net_input_size (bilinear, half-pixel centres).

        Shrinking without antialiasing samples the input with ``grid_sample`` at the output pixel
        centres: the same values as ``F.interpolate(mode="bilinear", align_corners=False)``
        without touching the pixels no output needs.
        """
        n = self.params.net_input_size
        if torch.onnx.is_in_onnx_export():  # one graph for every input size (same values)
            return F.interpolate(
                x, size=(n, n), mode="bilinear", align_corners=False, antialias=self.params.lowres_antialias
            )
        h, w = x.shape[-2:]
        if (h, w) == (n, n):
            return x
        if h >= n and w >= n and not self.params.lowres_antialias:
            ys = pixel_centres(n, device=x.device, dtype=x.dtype).view(n, 1).expand(n, n)
            xs = pixel_centres(n, device=x.device, dtype=x.dtype).view(1, n).expand(n, n)
            coords = torch.stack([xs, ys], dim=-1).expand(x.shape[0], n, n, 2)
            return F.grid_sample(x, coords, mode="bilinear", padding_mode="border", align_corners=False)
        shrink = h > n or w > n
        return F.interpolate(
            x,
            size=(n, n),
            mode="bilinear",
            align_corners=False,
            antialias=bool(self.params.lowres_antialias and shrink),
        )

    def fullres_input(self, x: torch.Tensor) -> torch.Tensor:
        """The image the grid is applied to: ``x`` (clamped to [0, 1]), or its clamped bicubic upscale in sr."""
        if self.scale == 1:
            if torch.onnx.is_in_onnx_export():  # no data-dependent branch in an exported graph
                return x.clamp(0, 1)
            low, high = torch.aminmax(x)
            return x if low >= 0 and high <= 1 else x.clamp(0, 1)
        if torch.onnx.is_in_onnx_export():  # the same values with operators onnxruntime runs fast
            return tiled.bicubic_upscale(x, self.scale).clamp(0, 1)
        up = F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return up.clamp_(0, 1)

    def predict_grid(self, x: torch.Tensor) -> torch.Tensor:
        """The bilateral grid B×C×D×S×S (C coefficients, D luma bins) from the input ``x``."""
        coeffs = self.lowres(self.lowres_input(x))
        return rearrange(coeffs, "b (c d) h w -> b c d h w", c=self.n_coeffs)

    def details(self, full: torch.Tensor) -> torch.Tensor | None:
        """Band-pass detail of the full-resolution image (sr), B×3L×H×W, or None."""
        return laplacian_details(full, self.detail_levels) if self.detail_levels else None

    # ----------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B×3×h×w in [0, 1] → B×3×(h·scale)×(w·scale) in [0, 1]."""
        if self.training:
            self._check_training_size(x)
        out = self.forward_grid(x)
        if self.sr_residual is None:
            return out
        return (out + self.sr_residual(x)).clamp(0, 1)

    def forward_grid(self, x: torch.Tensor) -> torch.Tensor:
        """The bilateral-grid model's image, without the optional sr residual branch."""
        grid = self.predict_grid(x)
        if self._can_fuse(x, grid):
            return self._forward_fused(grid, x)
        full = self.fullres_input(x)
        details = self.details(full)
        if self._can_stream():
            return self._forward_streamed(grid, full, details).clamp_(0, 1)
        if torch.onnx.is_in_onnx_export() and self._can_tile():
            # the exported graph: tiles of matrix products, which onnxruntime runs fast
            return tiled.sliced_apply(grid, self.guide, full, details).clamp(0, 1)
        guide = self.guide(full)
        coeffs = self.slice_coefficients(grid, guide)
        return apply_coefficients(coeffs, full, details).clamp(0, 1)

    _size_warned = False

    def _check_training_size(self, x: torch.Tensor) -> None:
        """Warns once (enhance) when training inputs are far below ``net_input_size``: the
        low-resolution stream then sees every patch enlarged, so the grid learns an operator at
        another scale than the one it meets on whole images, and stays near the identity."""
        n = self.params.net_input_size
        side = min(x.shape[-2:])
        if self.task.kind != "enhance" or side >= PATCH_WARN_RATIO * n or HDRNet._size_warned:
            return
        HDRNet._size_warned = True
        warnings.warn(
            f"{type(self).__name__}: training patches of {x.shape[-2]}×{x.shape[-1]} pixels are far below "
            f"params.net_input_size ({n}); the grid then learns the operator at a different scale than "
            f"on whole images and stays close to the identity. Raise data.patch_size to at least {n} "
            f"(or lower net_input_size and spatial_bins); see the kdcore-hdrnet README, 'Learning operators'.",
            UserWarning,
            stacklevel=3,
        )

    def _can_fuse(self, x: torch.Tensor, grid: torch.Tensor) -> bool:
        """Whether the fused CPU kernel (:mod:`kdcore_hdrnet.fused`) computes what :meth:`forward`
        would: inference on CPU float32, no export/tracing/compile, HDRNet's own full-resolution
        building blocks and guide. Warns once when only the missing kernel stands in the way."""
        if not (
            self._can_stream()
            and x.device.type == "cpu"
            and grid.device.type == "cpu"
            and x.dtype == torch.float32
            and grid.dtype == torch.float32
            and x.dim() == 4
            and x.shape[1] == 3
            and type(self).fullres_input is HDRNet.fullres_input
            and type(self).details is HDRNet.details
            and type(self.guide) in (CurveGuide, ConvGuide)
            and not fused.exporting()
        ):
            return False
        if not fused.available():
            fused.warn_unavailable_once()
            return False
        return True

    def _forward_fused(self, grid: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Guide, slice, apply and detail gains in one pass of the fused kernel."""
        full = self.fullres_input(x) if self.scale == 1 else fused.bicubic_clamped(x, self.scale)
        guide = fused.guide_arrays(self.guide)
        assert guide is not None
        return fused.run(full, grid, guide, fused.gaussian_levels(full, self.detail_levels))

    def _can_tile(self) -> bool:
        """Whether the tiled export path (:mod:`kdcore_hdrnet.tiled`) computes what :meth:`forward`
        would: HDRNet's own slice and one of its guides, without hooks on the guide."""
        return (
            not kdcore.interfaces.plain_export_graph.get()
            and type(self).slice_coefficients is HDRNet.slice_coefficients
            and type(self.guide) in (CurveGuide, ConvGuide)
            and not self.guide.training
            and not self.guide._forward_hooks
            and not self.guide._forward_pre_hooks
        )

    def _can_stream(self) -> bool:
        """Whether the block-of-rows inference path computes exactly what :meth:`forward` would."""
        return (
            not torch.is_grad_enabled()
            and not self.training
            and not torch.onnx.is_in_onnx_export()  # size-dependent row loop: export the ops path
            and type(self).slice_coefficients is HDRNet.slice_coefficients
            and not self.guide._forward_hooks
            and not self.guide._forward_pre_hooks
            and not getattr(nn.modules.module, "_global_forward_hooks", None)
            and not getattr(nn.modules.module, "_global_forward_pre_hooks", None)
        )

    def _forward_streamed(
        self, grid: torch.Tensor, full: torch.Tensor, details: torch.Tensor | None
    ) -> torch.Tensor:
        """Guide, slice and apply block by block of rows, so intermediates stay small."""
        b, _, height, width = full.shape
        out = torch.empty_like(full, memory_format=torch.contiguous_format)
        xs = pixel_centres(width, device=full.device, dtype=grid.dtype)
        step = max(1, STREAM_BLOCK_PIXELS // max(1, b * width))
        coords = coordinate_buffer(b * min(step, height), xs)
        prepared: Any = self.guide.prepare()  # what this guide's evaluate takes
        for r0 in range(0, height, step):
            r1 = min(height, r0 + step)
            n = r1 - r0
            block = full[:, :, r0:r1]
            guide = self.guide.evaluate(block, prepared)
            rows = interpolate_rows(grid, height, r0, r1)
            coeffs = slice_rows(rows, guide.reshape(b * n, width), xs, coords).view(
                b, n, self.n_coeffs, 1, width
            )
            image = block.permute(0, 2, 1, 3).unsqueeze(-2)
            detail = None if details is None else details[:, :, r0:r1].permute(0, 2, 1, 3).unsqueeze(-2)
            target = out[:, :, r0:r1].permute(0, 2, 1, 3).unsqueeze(-2)
            apply_coefficients(coeffs, image, detail, out=target)
        return out


class HDRNetTeacher(HDRNet, kdcore.Teacher):
    """HDRNet as a teacher: the same network, loaded from a trained checkpoint."""
