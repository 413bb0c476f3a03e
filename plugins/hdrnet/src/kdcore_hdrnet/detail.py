"""Band-pass detail of an image for the sr mode: levels of a small Laplacian pyramid.

``G_0`` is the image, ``G_{l+1}`` is ``G_l`` blurred with the 4-tap binomial kernel
(1, 3, 3, 1)/8 and subsampled by two, so that output pixel ``i`` sits at input position
``2i + 0.5``, the convention of ``align_corners=False`` resizing. Every level is brought back to full size with bilinear interpolation
(``U_l``) and ``detail_l = U_l − U_{l+1}`` (``U_0`` is the image itself), so the details of all
levels sum to the image minus its coarsest blur.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_BINOMIAL = (1.0, 3.0, 3.0, 1.0)


def _blur_subsample(x: torch.Tensor) -> torch.Tensor:
    """Separable binomial blur (edge-replicated), then keep every second pixel."""
    c = int(x.shape[1])  # a constant kernel shape in exported graphs
    k = torch.tensor(_BINOMIAL, device=x.device, dtype=x.dtype) / 8
    x = F.pad(x, (1, 2, 1, 2), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, 4).expand(c, 1, 1, 4), groups=c, stride=(1, 2))
    return F.conv2d(x, k.view(1, 1, 4, 1).expand(c, 1, 4, 1), groups=c, stride=(2, 1))


def gaussian_levels(image: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """The coarser Gaussian levels ``G_1 … G_levels`` of ``image`` (each half the previous size)."""
    out = []
    current = image
    for _ in range(levels):
        current = _blur_subsample(current)
        out.append(current)
    return out


def laplacian_details(image: torch.Tensor, levels: int) -> torch.Tensor:
    """``levels`` band-pass layers of ``image`` (B×3×H×W) at full size: B×3·levels×H×W."""
    if levels <= 0:
        return image.new_zeros(image.shape[0], 0, *image.shape[-2:])
    size = image.shape[-2:]
    current, upsampled = image, image
    bands = []
    for _ in range(levels):
        current = _blur_subsample(current)
        coarse = F.interpolate(current, size=size, mode="bilinear", align_corners=False)
        bands.append(upsampled - coarse)
        upsampled = coarse
    return torch.cat(bands, dim=1)
