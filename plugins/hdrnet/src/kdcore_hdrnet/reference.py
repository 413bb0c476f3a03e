"""The straightforward HDRNet full-resolution path, sharing a model's weights.

Guide with 1×1 ``conv2d`` on the full image (the curves evaluated as the literal sum of ramps),
slice with one 5-D ``grid_sample``, apply with ``einsum``. It computes what
:meth:`kdcore_hdrnet.HDRNet.forward` computes, more slowly; tests compare the two and the
benchmarks use it as the speed baseline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdcore_hdrnet.guide import ConvGuide, CurveGuide
from kdcore_hdrnet.model import HDRNet
from kdcore_hdrnet.slicing import slice_grid_5d


def reference_guide(guide: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``guide``'s output for B×3×H×W ``x``, computed with 1×1 convolutions."""
    if isinstance(guide, CurveGuide):
        v = F.conv2d(x, guide.ccm.t()[:, :, None, None], guide.ccm_bias)
        ramps = (v.unsqueeze(2) - guide.thresholds.view(1, 1, -1, 1, 1)).clamp_min(0)
        curves = (ramps * guide.slopes.view(1, 3, -1, 1, 1)).sum(2)
        return F.conv2d(curves, guide.mix_weight.view(1, 3, 1, 1), guide.mix_bias).clamp(0, 1)
    if isinstance(guide, ConvGuide):
        h = F.conv2d(x, guide.conv1.weight[:, :, None, None], guide.conv1.bias)
        norm = guide.norm
        h = F.batch_norm(h, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps)
        h = F.conv2d(h.relu(), guide.conv2.weight[:, :, None, None], guide.conv2.bias)
        return torch.sigmoid(h)
    raise TypeError(f"unknown guide module {type(guide).__name__}")


def reference_apply(coeffs: torch.Tensor, image: torch.Tensor, details: torch.Tensor | None) -> torch.Tensor:
    """Per-pixel affine transform (+ detail gains) with ``einsum``."""
    b, _, h, w = image.shape
    affine = coeffs[:, :12].reshape(b, 3, 4, h, w)
    out = torch.einsum("bokhw,bkhw->bohw", affine[:, :, :3], image) + affine[:, :, 3]
    if details is not None:
        levels = details.shape[1] // 3
        gains = coeffs[:, 12 : 12 + 3 * levels]
        out = out + (gains * details).reshape(b, levels, 3, h, w).sum(1)
    return out


def reference_forward(model: HDRNet, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` (eval-mode guide statistics) through the straightforward path."""
    grid = model.predict_grid(x)
    full = model.fullres_input(x)
    details = model.details(full)
    guide = reference_guide(model.guide, full)
    coeffs = slice_grid_5d(grid, guide)
    return reference_apply(coeffs, full, details).clamp(0, 1)


class ReferenceHDRNet(nn.Module):
    """Wraps an :class:`HDRNet` so that calling it runs :func:`reference_forward`."""

    def __init__(self, model: HDRNet):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same output as ``self.model(x)`` in eval mode."""
        return reference_forward(self.model, x)
