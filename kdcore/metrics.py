"""PSNR and SSIM with the conventions of published super-resolution results.

For "sr": both images rounded to 8 bits, compared on the luma channel
``Y = 16 + 65.481·R + 128.553·G + 24.966·B`` (0..255 scale, peak 255) with ``scale`` pixels
cropped at every border. For "enhance": RGB in [0, 1], both rounded to 8 bits, no crop.
SSIM uses an 11×11 Gaussian window with sigma 1.5 and is averaged over the positions where the
window lies wholly inside the image (as the usual SR evaluation code does; computed with
scikit-image). Identical images would have an infinite PSNR, which JSON cannot hold: PSNR is capped at :data:`PSNR_CAP` dB.
"""

from __future__ import annotations

import torch
from skimage.metrics import structural_similarity
from torchmetrics.functional.image import peak_signal_noise_ratio

from kdcore.data.images import quantize
from kdcore.errors import DataError
from kdcore.interfaces import Task

PSNR_CAP = 100.0
"""Upper bound of the reported PSNR in dB (identical images)."""

SSIM_KERNEL = 11
SSIM_SIGMA = 1.5

_Y_WEIGHTS = (65.481, 128.553, 24.966)

__all__ = ["PSNR_CAP", "image_metrics", "image_psnr", "mean_metrics", "quantize", "rgb_to_y"]


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """Luma of RGB in [0, 1] (…×3×H×W) on the 0..255 scale, in [16, 235] (…×1×H×W)."""
    if x.ndim < 3 or x.shape[-3] != 3:
        raise ValueError(f"expected …×3×H×W, got shape {tuple(x.shape)}")
    weights = torch.tensor(_Y_WEIGHTS, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x * weights).sum(dim=-3, keepdim=True) + 16.0


def _single(image: torch.Tensor, label: str) -> torch.Tensor:
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        raise ValueError(f"{label} must be 3×H×W or 1×3×H×W, got shape {tuple(image.shape)}")
    return image.detach().to(torch.float64)


def _by_convention(
    output: torch.Tensor, target: torch.Tensor, task: Task, name: str | None
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Both images rounded to 8 bits, as luma with the border cropped for "sr"; the data range."""
    out, ref = _single(output, "output"), _single(target, "target")
    if out.shape != ref.shape:
        raise ValueError(
            f"output {tuple(out.shape)} and target {tuple(ref.shape)} differ in size"
            + (f" (image {name})" if name else "")
        )
    out, ref = quantize(out), quantize(ref)
    if task.kind == "sr":
        border = task.scale
        out, ref = rgb_to_y(out), rgb_to_y(ref)
        out = out[..., border:-border, border:-border]
        ref = ref[..., border:-border, border:-border]
        data_range = 255.0
    else:
        data_range = 1.0
    return out, ref, data_range


def image_metrics(
    output: torch.Tensor, target: torch.Tensor, task: Task, *, name: str | None = None
) -> dict[str, float]:
    """``{"psnr", "ssim"}`` of one output image against its target, by the task's convention.

    ``name`` (an image name) is only used in error messages.
    """
    out, ref, data_range = _by_convention(output, target, task, name)
    height, width = out.shape[-2:]
    if min(height, width) < SSIM_KERNEL:
        what = f"image {name}" if name else "an image"
        raise DataError(
            f"{what} is too small for SSIM: {width}×{height} after cropping the border, "
            f"needs at least {SSIM_KERNEL}×{SSIM_KERNEL}; use larger validation images"
        )
    psnr = float(peak_signal_noise_ratio(out, ref, data_range=data_range))
    # scikit-image's SSIM (Wang et al.'s Gaussian window, population covariances) averages over
    # the "valid" region where the window lies inside the image, as published SR results do; it is
    # also far faster on large images than a convolution-based implementation on the CPU.
    a, b = out[0].cpu().numpy(), ref[0].cpu().numpy()  # C×H×W
    channel_axis = 0 if a.shape[0] > 1 else None
    if channel_axis is None:
        a, b = a[0], b[0]
    ssim = float(
        structural_similarity(
            a,
            b,
            data_range=data_range,
            channel_axis=channel_axis,
            gaussian_weights=True,
            sigma=SSIM_SIGMA,
            use_sample_covariance=False,
        )
    )
    if psnr > PSNR_CAP:  # identical images: inf
        psnr = PSNR_CAP
    return {"psnr": psnr, "ssim": ssim}


def image_psnr(output: torch.Tensor, target: torch.Tensor, task: Task, *, name: str | None = None) -> float:
    """PSNR alone of one output image against its target, by the same convention as
    :func:`image_metrics` (cheaper: no SSIM), capped at :data:`PSNR_CAP`."""
    out, ref, data_range = _by_convention(output, target, task, name)
    return min(float(peak_signal_noise_ratio(out, ref, data_range=data_range)), PSNR_CAP)


def mean_metrics(per_image: list[dict]) -> dict[str, float]:
    """The mean over images of each metric (every dict must have the same keys)."""
    if not per_image:
        raise ValueError("mean_metrics needs at least one image")
    keys = list(per_image[0])
    for values in per_image[1:]:
        if set(values) != set(keys):
            raise ValueError(f"metric keys differ between images: {sorted(keys)} vs {sorted(values)}")
    return {key: float(sum(float(values[key]) for values in per_image) / len(per_image)) for key in keys}
