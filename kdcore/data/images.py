"""Image files in and out, and the resampling conventions of super-resolution.

Every image in kdcore is a float32 tensor 3×H×W (or B×3×H×W), RGB in [0, 1].
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from kdcore.errors import DataError
from kdcore.files import atomic_write

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
"""File extensions (lower case) that are read as images; other files in a folder are skipped."""

_TIFF_EXTENSIONS = (".tif", ".tiff")


# --------------------------------------------------------------------------- reading


def _to_unit_range(array: np.ndarray, path: Path) -> np.ndarray:
    """Maps integer or float pixel values onto float32 [0, 1] according to their type."""
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.unsignedinteger):
        return array.astype(np.float32) / float(np.iinfo(array.dtype).max)
    if np.issubdtype(array.dtype, np.signedinteger):
        # Pillow's 32-bit mode "I" mostly holds 16-bit data (older Pillow, 16-bit PNG/TIFF).
        top = 65535.0 if array.max(initial=0) <= 65535 else float(np.iinfo(array.dtype).max)
        return np.clip(array.astype(np.float64) / top, 0.0, 1.0).astype(np.float32)
    if np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise DataError(f"cannot use image {path}: it contains NaN or infinite values")
        # Floats are expected in [0, 1]; larger maxima reveal an 8- or 16-bit range.
        peak = float(array.max(initial=0.0))
        if peak > 255.0:
            array = array / 65535.0
        elif peak > 1.0:
            array = array / 255.0
        return np.clip(array, 0.0, 1.0)
    raise DataError(f"cannot use image {path}: unsupported pixel type {array.dtype}")


def _to_rgb(array: np.ndarray, path: Path) -> np.ndarray:
    """H×W or H×W×C (C = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA) -> H×W×3, alpha dropped."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise DataError(f"cannot use image {path}: unexpected array shape {array.shape}")
    channels = array.shape[2]
    if channels in (1, 2):
        array = np.repeat(array[:, :, :1], 3, axis=2)
    elif channels in (3, 4):
        array = array[:, :, :3]
    else:
        raise DataError(f"cannot use image {path}: {channels} channels (expected grey or RGB)")
    return array


def _read_with_pillow(path: Path) -> np.ndarray:
    """Decodes the whole file with Pillow (truncated data is an error) into an H×W[×C] array."""
    with Image.open(path) as opened:
        opened.load()  # full decode: truncated or corrupt data raises here
        image = ImageOps.exif_transpose(opened)
    mode = image.mode
    if mode in ("RGB", "L") or mode.startswith("I") or mode == "F":
        return np.asarray(image)
    if mode == "1":
        return np.asarray(image.convert("L"))
    if mode in ("LA", "La"):
        return np.asarray(image.getchannel("L"))
    if mode in ("P", "PA", "RGBA", "RGBa") or "A" in image.getbands():
        return np.asarray(image.convert("RGBA"))
    return np.asarray(image.convert("RGB"))  # CMYK, YCbCr, LAB, HSV, ...


def _read_with_tifffile(path: Path) -> np.ndarray | None:
    """Reads the first page of a TIFF (16-bit RGB and float TIFFs that Pillow cannot read).

    Returns None when tifffile is unavailable or the file needs Pillow (palette, CMYK, ...).
    """
    try:
        import tifffile
    except ImportError:  # pragma: no cover - tifffile comes with scikit-image
        return None
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            if not isinstance(page, tifffile.TiffPage):  # the first page is always a full page
                return None
            photometric = int(page.photometric)
            if photometric not in (1, 2):  # only min-is-black grey and RGB; Pillow does the rest
                return None
            array = page.asarray()
            axes = page.axes
    except Exception:  # noqa: BLE001 - whatever tifffile cannot read, Pillow tries next
        return None
    if array.ndim == 3 and axes.startswith("S"):
        array = np.moveaxis(array, 0, -1)
    return array


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Reads an image file as a float32 tensor 3×H×W, RGB in [0, 1].

    Grey images are replicated to RGB, alpha is dropped, palettes are expanded, 16-bit data is
    scaled by 65535, and the EXIF orientation is applied. A file that cannot be read or fully
    decoded raises :class:`~kdcore.errors.DataError` naming the file. (16-bit RGB PNGs are
    read with 8-bit precision: Pillow has no 16-bit RGB mode.)
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"cannot read image {path}: no such file")
    if not path.is_file():
        raise DataError(f"cannot read image {path}: not a file")
    array = None
    if path.suffix.lower() in _TIFF_EXTENSIONS:
        array = _read_with_tifffile(path)
    if array is None:
        try:
            array = _read_with_pillow(path)
        except Image.UnidentifiedImageError:
            raise DataError(
                f"cannot decode image {path}: the file is corrupt or not in a supported image "
                f"format (accepted: {', '.join(IMAGE_EXTENSIONS)})"
            ) from None
        except Image.DecompressionBombError as error:
            raise DataError(f"cannot decode image {path}: {error}") from None
        except PermissionError as error:
            raise DataError(f"cannot read image {path}: {error.strerror or error}") from None
        except Exception as error:  # noqa: BLE001 - truncated data, bad CRC, zlib errors, ...
            raise DataError(f"cannot decode image {path}: {error}") from None
    if array.ndim < 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise DataError(f"cannot use image {path}: it is empty ({array.shape})")
    rgb = _to_rgb(_to_unit_range(np.asarray(array), path), path)
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32))


# --------------------------------------------------------------------------- writing


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Clamps to [0, 1] and rounds to the nearest 8-bit level: ``round(x·255) / 255``."""
    return torch.round(x.clamp(0.0, 1.0) * 255.0) / 255.0


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """A 3×H×W (or 1×3×H×W) tensor in [0, 1] as an H×W×3 uint8 array (rounded, clamped)."""
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a 3×H×W image, got shape {tuple(image.shape)}")
    levels = torch.round(image.detach().to("cpu", torch.float32).clamp(0.0, 1.0) * 255.0)
    return np.ascontiguousarray(levels.to(torch.uint8).permute(1, 2, 0).numpy())


def save_image(tensor: torch.Tensor, path: str | os.PathLike) -> None:
    """Writes a 3×H×W image in [0, 1] as an 8-bit PNG, atomically (temp file + rename)."""
    array = to_uint8(tensor)
    atomic_write(Path(path), lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


# --------------------------------------------------------------------------- resampling


def _as_batch(image: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if image.ndim == 3:
        return image.unsqueeze(0), True
    if image.ndim == 4:
        return image, False
    raise ValueError(f"expected a 3×H×W or B×3×H×W image, got shape {tuple(image.shape)}")


def crop_to_multiple(img: torch.Tensor, scale: int) -> torch.Tensor:
    """Crops the last two dimensions (H, W) down to multiples of ``scale``, keeping the top left."""
    height, width = img.shape[-2], img.shape[-1]
    return img[..., : height - height % scale, : width - width % scale]


DEGRADATIONS: tuple[str, ...] = ("matlab-bicubic", "torch-bicubic")
"""How low-resolution inputs (and the bicubic baseline) are made: ``data.degradation``.

``"matlab-bicubic"`` is MATLAB's ``imresize`` (cubic kernel a = −0.5, widened by the scale when
shrinking, mirrored borders), the convention of published SR results. ``"torch-bicubic"`` is
PyTorch's antialiased bicubic (a = −0.75), kdcore's behaviour before version 1.2.
"""

DEFAULT_DEGRADATION = "matlab-bicubic"


def _check_degradation(degradation: str) -> None:
    if degradation not in DEGRADATIONS:
        raise ValueError(f"degradation must be one of {', '.join(DEGRADATIONS)}, got {degradation!r}")


def _cubic(x: torch.Tensor) -> torch.Tensor:
    """The cubic convolution kernel with a = −0.5 (Keys), as MATLAB's imresize uses it."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    near = 1.5 * ax3 - 2.5 * ax2 + 1.0
    far = -0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0
    return torch.where(ax <= 1, near, torch.where(ax <= 2, far, torch.zeros_like(ax)))


@functools.lru_cache(maxsize=64)
def _imresize_matrix(in_len: int, out_len: int, scale: float) -> torch.Tensor:
    """The out_len × in_len resampling matrix of MATLAB's bicubic ``imresize`` along one axis.

    Output pixel ``i`` (1-based) sits at ``u = i / scale + (1 − 1/scale) / 2`` in input
    coordinates; when shrinking, the kernel is stretched by ``1/scale`` (antialiasing). Indices
    past an edge are mirrored (MATLAB's symmetric padding) and each row sums to one.
    """
    antialias = scale < 1
    width = 4.0 / scale if antialias else 4.0
    x = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - width / 2)
    taps = math.ceil(width) + 2
    indices = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]  # 1-based
    distance = u[:, None] - indices
    weights = scale * _cubic(distance * scale) if antialias else _cubic(distance)
    weights = weights / weights.sum(dim=1, keepdim=True)
    # symmetric padding: ..., 2, 1 | 1, 2, ..., n | n, n-1, ...
    zero_based = (indices - 1).long() % (2 * in_len)
    zero_based = torch.where(zero_based >= in_len, 2 * in_len - 1 - zero_based, zero_based)
    matrix = torch.zeros(out_len, in_len, dtype=torch.float64)
    matrix.scatter_add_(1, zero_based, weights)
    return matrix.to(torch.float32)


def imresize(image: torch.Tensor, scale: float) -> torch.Tensor:
    """MATLAB's bicubic ``imresize(image, scale)`` on a 3×H×W or B×C×H×W float tensor.

    Separable and vectorised: one matrix product per axis (rows first, as MATLAB orders equal
    scales). No clamping or rounding: callers decide (see :func:`downscale`).
    """
    batch, squeeze = _as_batch(image)
    height, width = batch.shape[-2:]
    out_h, out_w = math.ceil(height * scale), math.ceil(width * scale)
    rows = _imresize_matrix(height, out_h, float(scale)).to(batch.device)
    cols = _imresize_matrix(width, out_w, float(scale)).to(batch.device)
    out = torch.matmul(torch.matmul(rows, batch.float()), cols.T)
    return out[0] if squeeze else out


def downscale(hr: torch.Tensor, scale: int, degradation: str = DEFAULT_DEGRADATION) -> torch.Tensor:
    """Bicubic downscaling by ``scale``, clamped and rounded to 8 bits: the LR input of SR.

    ``hr`` is 3×H×W or B×3×H×W with H and W multiples of ``scale``; ``degradation`` is one of
    :data:`DEGRADATIONS` (MATLAB's ``imresize`` by default, as published SR results use).
    """
    _check_degradation(degradation)
    batch, squeeze = _as_batch(hr)
    height, width = batch.shape[-2:]
    if scale < 1 or height % scale or width % scale:
        raise ValueError(f"image size {height}×{width} is not a multiple of scale {scale}")
    if scale == 1:
        low = batch
    elif degradation == "matlab-bicubic":
        low = imresize(batch, 1 / scale)
    else:
        low = F.interpolate(
            batch,
            size=(height // scale, width // scale),
            mode="bicubic",
            antialias=True,
            align_corners=False,
        )
    low = quantize(low)
    return low[0] if squeeze else low


def upscale_bicubic(lr: torch.Tensor, scale: int, degradation: str = DEFAULT_DEGRADATION) -> torch.Tensor:
    """Bicubic upscaling by ``scale`` (the SR baseline), clamped to [0, 1].

    The same convention as the degradation: MATLAB's ``imresize`` or PyTorch's bicubic.
    """
    _check_degradation(degradation)
    batch, squeeze = _as_batch(lr)
    height, width = batch.shape[-2:]
    if scale == 1:
        high = batch.clone()
    elif degradation == "matlab-bicubic":
        high = imresize(batch, scale)
    else:
        high = F.interpolate(batch, size=(height * scale, width * scale), mode="bicubic", align_corners=False)
    high = high.clamp(0.0, 1.0)
    return high[0] if squeeze else high
