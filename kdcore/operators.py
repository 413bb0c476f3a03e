"""Image-operator teachers: slow photographic operators that a fast student learns to imitate.

Each teacher here has no weights: it runs a classical image operator from scikit-image on the
CPU, one image at a time, in float64 numpy. Distilling such an operator into a small network is
what makes it real-time (the original use of HDRNet). They only make sense for ``enhance`` tasks
(scale 1); building one for an ``sr`` task is a :class:`~kdcore.errors.SpecError`.

- ``clahe`` — contrast-limited adaptive histogram equalisation of the lightness (L of CIE Lab).
- ``unsharp-mask`` — classic unsharp masking of every colour channel.
- ``local-contrast`` — a fast local Laplacian filter on log-luminance: boosts fine detail and
  compresses (or expands) the large-scale tonal range without halos.
"""

from __future__ import annotations

import itertools
import math
import warnings
from typing import ClassVar

import numpy as np
import pydantic
import torch
from einops import rearrange
from skimage import color, exposure, filters, transform

from kdcore.errors import SpecError
from kdcore.interfaces import Params, Task, Teacher

__all__ = ["ClaheTeacher", "LocalContrastTeacher", "OperatorTeacher", "UnsharpMaskTeacher"]


class OperatorTeacher(Teacher):
    """Base of the image-operator teachers: an ``enhance`` teacher computed image by image on the CPU.

    Subclasses implement :meth:`process` on one H×W×3 float64 image in [0, 1]; ``forward`` moves
    the batch to the CPU, processes each image independently, clamps to [0, 1] and returns a
    tensor with the input's shape, dtype and device.
    """

    needs_checkpoint = False
    supported_tasks: ClassVar[tuple[str, ...]] = ("enhance",)
    operator_name: ClassVar[str] = "operator"

    def __init__(self, params: pydantic.BaseModel | None = None, task: Task | None = None):
        super().__init__(params, task if task is not None else Task(kind="enhance", scale=1))
        if self.task.kind not in self.supported_tasks:
            raise SpecError(
                f"teacher '{self.operator_name}': operator teachers are for 'enhance' tasks (scale 1), "
                f"but task.kind is {self.task.kind!r} (scale {self.task.scale}); set task.kind to "
                "'enhance' or choose a network teacher"
            )

    def process(self, image: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        """Applies the operator to one H×W×3 float64 image in [0, 1]; returns the same shape."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies the operator to each image of a B×3×H×W batch in [0, 1]."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"teacher '{self.operator_name}' expects a B×3×H×W batch, got shape {tuple(x.shape)}"
            )
        if x.shape[0] == 0:
            return x.clone()
        images = rearrange(
            x.detach().to(device="cpu", dtype=torch.float64).clamp(0, 1).numpy(), "b c h w -> b h w c"
        )
        out = np.stack([np.clip(self.process(np.ascontiguousarray(image)), 0.0, 1.0) for image in images])
        result = torch.from_numpy(np.ascontiguousarray(rearrange(out, "b h w c -> b c h w")))
        return result.to(device=x.device, dtype=x.dtype)


# --------------------------------------------------------------------------------------------- CLAHE


class ClaheParams(Params):
    clip_limit: float = pydantic.Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="contrast limit of the tile histograms, normalised to [0, 1] (higher gives more "
        "contrast; 0 disables clipping, i.e. plain adaptive histogram equalisation)",
    )
    kernel_size: float = pydantic.Field(
        default=0.125,
        gt=0.0,
        le=1.0,
        description="size of the contextual regions (tiles) as a fraction of the image's height and "
        "width (0.125 = 1/8, about 8×8 tiles); at least one pixel",
    )
    nbins: int = pydantic.Field(
        default=256,
        ge=2,
        le=16384,
        description="number of grey-level bins of the tile histograms",
    )


class ClaheTeacher(OperatorTeacher):
    """Contrast-limited adaptive histogram equalisation (CLAHE) of the lightness; colours kept.

    The image is converted to CIE Lab, ``skimage.exposure.equalize_adapthist`` is applied to the
    lightness L only, and the result is mapped back into the image's own lightness range (so a
    flat or already well-exposed image is not stretched to black and white); a and b (the
    chroma) are kept, then the image is converted back to RGB and clamped to [0, 1].

    ``kernel_size`` is a fraction of each side (the tile size in pixels is rounded and at least
    one pixel), so the operator behaves the same on patches and on whole images.
    """

    Params = ClaheParams
    params: ClaheParams
    operator_name = "clahe"

    def process(self, image: np.ndarray) -> np.ndarray:
        p = self.params
        lab = color.rgb2lab(image)
        lightness = np.clip(lab[..., 0] / 100.0, 0.0, 1.0)
        lo, hi = float(lightness.min()), float(lightness.max())
        if hi - lo < 1e-6:  # a flat image has no contrast to redistribute
            return image.copy()
        height, width = lightness.shape
        kernel = tuple(min(side, max(1, round(p.kernel_size * side))) for side in (height, width))
        equalised = exposure.equalize_adapthist(
            lightness, kernel_size=kernel, clip_limit=p.clip_limit, nbins=p.nbins
        )
        lab[..., 0] = 100.0 * (lo + (hi - lo) * equalised)
        with warnings.catch_warnings():  # out-of-gamut colours are clipped below; no need to warn
            warnings.simplefilter("ignore", UserWarning)
            return color.lab2rgb(lab)


# -------------------------------------------------------------------------------------- unsharp mask


class UnsharpMaskParams(Params):
    radius: float = pydantic.Field(
        default=2.0,
        gt=0.0,
        le=100.0,
        description="standard deviation, in pixels, of the Gaussian blur that is subtracted",
    )
    amount: float = pydantic.Field(
        default=1.0,
        ge=0.0,
        le=10.0,
        description="gain of the detail (image minus blur) added back; 0 is the identity",
    )


class UnsharpMaskTeacher(OperatorTeacher):
    """Unsharp masking (sharpening) of every colour channel.

    ``skimage.filters.unsharp_mask``: ``out = image + amount · (image − gaussian(image, radius))``
    on R, G and B independently, clamped to [0, 1].
    """

    Params = UnsharpMaskParams
    params: UnsharpMaskParams
    operator_name = "unsharp-mask"

    def process(self, image: np.ndarray) -> np.ndarray:
        return filters.unsharp_mask(
            image, radius=self.params.radius, amount=self.params.amount, preserve_range=True, channel_axis=2
        )


# ------------------------------------------------------------------------------------ local contrast

_LOG_OFFSET = 1.0 / 32.0
"""Added to the luminance before the logarithm, so shadow noise is not blown up."""


def _reduce(image: np.ndarray) -> np.ndarray:
    return transform.pyramid_reduce(image, downscale=2, preserve_range=True)


def _expand(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return transform.resize(image, shape, order=1, mode="edge", anti_aliasing=False, preserve_range=True)


def gaussian_pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """``levels + 1`` images, each a blurred half-size copy of the previous one."""
    pyramid = [image]
    for _ in range(levels):
        pyramid.append(_reduce(pyramid[-1]))
    return pyramid


def laplacian_pyramid(gaussian: list[np.ndarray]) -> list[np.ndarray]:
    """Band-pass levels of a Gaussian pyramid plus its coarsest image; :func:`collapse` inverts it."""
    bands = [fine - _expand(coarse, fine.shape) for fine, coarse in itertools.pairwise(gaussian)]
    return [*bands, gaussian[-1]]


def collapse(pyramid: list[np.ndarray]) -> np.ndarray:
    """Rebuilds the image of a Laplacian pyramid (exact inverse of :func:`laplacian_pyramid`)."""
    image = pyramid[-1]
    for band in reversed(pyramid[:-1]):
        image = band + _expand(image, band.shape)
    return image


def local_laplacian(
    signal: np.ndarray, *, detail: float, tone: float, sigma_r: float, samples: int
) -> np.ndarray:
    """Fast local Laplacian filter of a 2-D ``signal`` (here log-luminance).

    Every pyramid coefficient is the coefficient of the signal remapped pointwise around the local
    value ``g`` (the Gaussian pyramid at that position) by
    ``r(i) = g + tone·(i − g) + (detail − tone)·sigma_r·tanh((i − g) / sigma_r)``:
    differences much smaller than ``sigma_r`` (texture) are scaled by ``detail``, larger ones
    (edges, the base) by ``tone``. ``r`` is increasing for every admissible setting, so gradients
    are never reversed and edges get no halos. The remapping is evaluated at ``samples`` values
    of ``g`` and the coefficients interpolated between them; its linear part ``tone·(i − g)``
    is exact (a constant has no band-pass content). The coarsest level, the overall base, is
    scaled by ``tone`` about its mean.
    """
    levels = max(1, math.floor(math.log2(max(min(signal.shape), 1))) - 3)
    gaussian = gaussian_pyramid(signal, levels)
    out = [tone * band for band in laplacian_pyramid(gaussian)[:-1]]
    lo, hi = float(signal.min()), float(signal.max())
    if hi - lo > 1e-9 and detail != tone:
        grid = np.linspace(lo, hi, samples)
        step = grid[1] - grid[0]
        for g in grid:
            remapped = (detail - tone) * sigma_r * np.tanh((signal - g) / sigma_r)
            bands = laplacian_pyramid(gaussian_pyramid(remapped, levels))
            for level in range(levels):
                weight = np.clip(1.0 - np.abs(gaussian[level] - g) / step, 0.0, None)
                out[level] += weight * bands[level]
    base = gaussian[-1]
    mean = float(base.mean())
    out.append(mean + tone * (base - mean))
    return collapse(out)


class LocalContrastParams(Params):
    detail: float = pydantic.Field(
        default=2.0,
        ge=0.0,
        le=10.0,
        description="gain of fine, low-amplitude detail in log-luminance (1 keeps it, >1 boosts, <1 smooths)",
    )
    tone: float = pydantic.Field(
        default=0.8,
        gt=0.0,
        le=3.0,
        description="gain of the large-scale log-luminance variations, the base (<1 compresses the "
        "tonal range, lifting shadows and taming highlights; >1 expands it)",
    )
    sigma_r: float = pydantic.Field(
        default=0.3,
        gt=0.0,
        le=5.0,
        description="log-luminance difference that separates detail (smaller) from edges (larger); "
        "0.3 is about a 35% contrast step",
    )
    samples: int = pydantic.Field(
        default=16,
        ge=2,
        le=64,
        description="intensity samples of the fast local Laplacian filter (more is more faithful and slower)",
    )


class LocalContrastTeacher(OperatorTeacher):
    """Local-contrast and tone operator: a fast local Laplacian filter on log-luminance.

    The luminance ``Y`` (``skimage.color.rgb2gray``) is taken to the log domain,
    ``log(Y + 1/32)``, and filtered with a local Laplacian filter (Paris et al. 2011, sampled as
    in Aubry et al. 2014) built from ``skimage.transform`` pyramids: detail smaller than
    ``sigma_r`` is multiplied by ``detail`` and the large-scale base by ``tone``, without halos.
    The new luminance rescales R, G and B alike (colour ratios kept); a pixel that would leave
    [0, 1] is scaled down as a whole, so hues do not shift. With the defaults a 512×512 image
    takes about 0.4 s of CPU time on one core.
    """

    Params = LocalContrastParams
    params: LocalContrastParams
    operator_name = "local-contrast"

    def process(self, image: np.ndarray) -> np.ndarray:
        p = self.params
        luminance = color.rgb2gray(image)
        log_lum = np.log(luminance + _LOG_OFFSET)
        filtered = local_laplacian(
            log_lum, detail=p.detail, tone=p.tone, sigma_r=p.sigma_r, samples=p.samples
        )
        # the gain on log(Y + c), applied to R, G and B alike; it fades out in the deep shadows
        ratio = np.exp(filtered - log_lum)
        out = image * ratio[..., None]
        peak = out.max(axis=-1, keepdims=True)
        return np.where(peak > 1.0, out / np.maximum(peak, 1.0), out)
