"""The image-operator teachers: clahe, unsharp-mask, local-contrast."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest
import skimage.data
import torch
from scipy import ndimage
from skimage import color, filters

from kdcore.errors import SpecError
from kdcore.interfaces import Task
from kdcore.operators import (
    ClaheTeacher,
    LocalContrastTeacher,
    OperatorTeacher,
    UnsharpMaskTeacher,
    collapse,
    gaussian_pyramid,
    laplacian_pyramid,
)

ENHANCE = Task(kind="enhance", scale=1)
OPERATORS = [ClaheTeacher, UnsharpMaskTeacher, LocalContrastTeacher]
IDS = [cls.operator_name for cls in OPERATORS]


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """H×W×3 uint8 -> 1×3×H×W float32 in [0, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255


def to_numpy(batch: torch.Tensor, index: int = 0) -> np.ndarray:
    return batch[index].permute(1, 2, 0).double().numpy()


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    return to_tensor(skimage.data.astronaut()[:128, :128])


@pytest.fixture(scope="module")
def photo_pair() -> torch.Tensor:
    return torch.cat([to_tensor(skimage.data.astronaut()[:64, :64]), to_tensor(skimage.data.coffee()[100:164, 200:264])])


def log_luminance(image: np.ndarray) -> np.ndarray:
    return np.log(color.rgb2gray(image) + 1 / 32)


# ------------------------------------------------------------------------------- shared behaviour


@pytest.mark.parametrize("cls", OPERATORS, ids=IDS)
def test_photo_output_is_a_valid_changed_image(cls, photo):
    teacher = cls(cls.Params(), ENHANCE).eval()
    y = teacher(photo)
    assert y.shape == photo.shape and y.dtype == photo.dtype and y.device == photo.device
    assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
    assert (y - photo).abs().mean() > 0.005, "the operator should visibly change a real photo"
    assert torch.equal(y, teacher(photo)), "not deterministic"
    assert torch.equal(y, cls(cls.Params(), ENHANCE)(photo.clone())), "not deterministic across instances"


@pytest.mark.parametrize("cls", OPERATORS, ids=IDS)
def test_batch_is_processed_image_by_image(cls, photo_pair):
    teacher = cls(cls.Params(), ENHANCE)
    batch = teacher(photo_pair)
    singles = torch.cat([teacher(photo_pair[i : i + 1]) for i in range(len(photo_pair))])
    assert torch.equal(batch, singles)


@pytest.mark.parametrize("size", [(16, 16), (5, 9), (1, 1)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("cls", OPERATORS, ids=IDS)
def test_tiny_inputs(cls, size):
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(0))
    y = cls(cls.Params(), ENHANCE)(x)
    assert y.shape == x.shape and torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1


@pytest.mark.parametrize("cls", OPERATORS, ids=IDS)
def test_extreme_images_stay_finite(cls):
    black = torch.zeros(1, 3, 24, 24)
    split = torch.zeros(1, 3, 24, 24)
    split[..., 12:] = 1.0
    y = cls(cls.Params(), ENHANCE)(torch.cat([black, split]))
    assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
    assert torch.equal(y[0], black[0]), "black stays black"


@pytest.mark.parametrize("cls", OPERATORS, ids=IDS)
def test_dtype_is_kept(cls, photo):
    x = photo[..., :32, :32].double()
    assert cls(cls.Params(), ENHANCE)(x).dtype == torch.float64


@pytest.mark.parametrize("cls", OPERATORS, ids=IDS)
def test_sr_task_is_refused(cls):
    with pytest.raises(SpecError, match=f"'{cls.operator_name}'.*'enhance'"):
        cls(cls.Params(), Task(kind="sr", scale=2))


@pytest.mark.parametrize("cls", OPERATORS, ids=IDS)
def test_defaults_need_no_checkpoint_and_default_to_enhance(cls):
    teacher = cls()
    assert isinstance(teacher, OperatorTeacher) and not teacher.needs_checkpoint
    assert teacher.task == ENHANCE
    assert not list(teacher.parameters())
    assert cls.__doc__.strip().splitlines()[0], "the docstring's first line is the summary"


def test_wrong_shape_is_refused():
    with pytest.raises(ValueError, match="B×3×H×W"):
        UnsharpMaskTeacher()(torch.rand(3, 8, 8))


@pytest.mark.parametrize(
    "cls, params",
    [
        (ClaheTeacher, {"clip_limit": -0.1}),
        (ClaheTeacher, {"clip_limit": 1.5}),
        (ClaheTeacher, {"kernel_size": 0}),
        (ClaheTeacher, {"kernel_size": 2.0}),
        (ClaheTeacher, {"nbins": 1}),
        (UnsharpMaskTeacher, {"radius": 0}),
        (UnsharpMaskTeacher, {"amount": -1}),
        (LocalContrastTeacher, {"detail": -0.5}),
        (LocalContrastTeacher, {"tone": 0}),
        (LocalContrastTeacher, {"sigma_r": 0}),
        (LocalContrastTeacher, {"samples": 1}),
        (LocalContrastTeacher, {"strength": 1.0}),
    ],
)
def test_params_reject_bad_values(cls, params):
    with pytest.raises(pydantic.ValidationError):
        cls.Params.model_validate(params)


# ------------------------------------------------------------------------------------------ clahe


def test_clahe_raises_contrast_in_flat_regions_and_keeps_colour(photo):
    x = to_numpy(photo)
    y = to_numpy(ClaheTeacher()(photo))
    lab_x, lab_y = color.rgb2lab(x), color.rgb2lab(y)

    def tile_std(lightness: np.ndarray) -> np.ndarray:  # std of L in 16×16 tiles
        return lightness.reshape(8, 16, 8, 16).std(axis=(1, 3)).ravel()

    before, after = tile_std(lab_x[..., 0]), tile_std(lab_y[..., 0])
    flat = before <= np.quantile(before, 0.25)
    assert after[flat].mean() > 1.5 * before[flat].mean()
    # chroma (a, b) kept; lightness stays within the input's range
    assert np.abs(lab_x[..., 1:] - lab_y[..., 1:]).mean() < 0.5
    assert lab_y[..., 0].max() <= lab_x[..., 0].max() + 0.5


def test_clahe_leaves_a_flat_image_alone():
    grey = torch.full((1, 3, 20, 20), 0.4)
    assert torch.allclose(ClaheTeacher()(grey), grey, atol=1e-6)


def test_clahe_clip_limit_controls_strength(photo):
    weak = ClaheTeacher(ClaheTeacher.Params(clip_limit=0.002))(photo)
    strong = ClaheTeacher(ClaheTeacher.Params(clip_limit=0.05))(photo)
    assert (strong - photo).abs().mean() > (weak - photo).abs().mean()


# ----------------------------------------------------------------------------------- unsharp mask


def test_unsharp_mask_adds_high_frequency_energy(photo):
    x, y = to_numpy(photo), to_numpy(UnsharpMaskTeacher()(photo))
    before = ndimage.laplace(color.rgb2gray(x)).var()
    after = ndimage.laplace(color.rgb2gray(y)).var()
    assert after > 2 * before
    # low frequencies are untouched
    assert np.abs(ndimage.gaussian_filter(y, (6, 6, 0)) - ndimage.gaussian_filter(x, (6, 6, 0))).mean() < 0.01


def test_unsharp_mask_treats_each_channel_like_a_grey_image(photo):
    x = to_numpy(photo)
    y = to_numpy(UnsharpMaskTeacher(UnsharpMaskTeacher.Params(radius=1.5, amount=0.7))(photo.double()))
    for c in range(3):
        reference = np.clip(filters.unsharp_mask(x[..., c], radius=1.5, amount=0.7, preserve_range=True), 0, 1)
        np.testing.assert_allclose(y[..., c], reference, atol=1e-12)


def test_unsharp_mask_with_zero_amount_is_the_identity(photo):
    assert torch.allclose(UnsharpMaskTeacher(UnsharpMaskTeacher.Params(amount=0))(photo), photo, atol=1e-6)


# --------------------------------------------------------------------------------- local contrast


def test_local_contrast_boosts_detail_and_keeps_the_base(photo):
    x, y = to_numpy(photo), to_numpy(LocalContrastTeacher()(photo))
    lx, ly = log_luminance(x), log_luminance(y)

    def detail_energy(log_lum: np.ndarray) -> float:
        return float(np.median(np.abs(log_lum - ndimage.gaussian_filter(log_lum, 2))))

    assert detail_energy(ly) > 1.4 * detail_energy(lx)
    base_x, base_y = ndimage.gaussian_filter(color.rgb2gray(x), 8), ndimage.gaussian_filter(color.rgb2gray(y), 8)
    assert np.corrcoef(base_x.ravel(), base_y.ravel())[0, 1] > 0.95


def test_local_contrast_tone_compresses_the_base(photo):
    x = to_numpy(photo)
    y = to_numpy(LocalContrastTeacher(LocalContrastTeacher.Params(detail=1.0, tone=0.6))(photo))
    spread = lambda image: ndimage.gaussian_filter(log_luminance(image), 8).std()  # noqa: E731
    assert spread(y) < 0.8 * spread(x)


def test_local_contrast_keeps_colour_ratios(photo):
    x, y = to_numpy(photo), to_numpy(LocalContrastTeacher()(photo))
    keep = (x.sum(-1) > 0.1) & (y.sum(-1) > 0.1)
    chroma = lambda image: image[keep] / image[keep].sum(-1, keepdims=True)  # noqa: E731
    assert np.abs(chroma(x) - chroma(y)).max() < 1e-6


def test_local_contrast_with_unit_gains_is_the_identity(photo):
    params = LocalContrastTeacher.Params(detail=1.0, tone=1.0)
    assert torch.allclose(LocalContrastTeacher(params)(photo), photo, atol=1e-5)


def test_laplacian_pyramid_collapses_exactly():
    signal = np.random.default_rng(0).random((37, 50))
    pyramid = laplacian_pyramid(gaussian_pyramid(signal, 3))
    assert [band.shape for band in pyramid] == [(37, 50), (19, 25), (10, 13), (5, 7)]
    np.testing.assert_allclose(collapse(pyramid), signal, atol=1e-12)
