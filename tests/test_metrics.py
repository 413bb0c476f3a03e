"""Tests of kdcore.metrics against an independent computation with scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from kdcore.errors import DataError
from kdcore.interfaces import Task
from kdcore.metrics import PSNR_CAP, image_metrics, mean_metrics, quantize, rgb_to_y

SR2 = Task(kind="sr", scale=2)
SR4 = Task(kind="sr", scale=4)
ENHANCE = Task(kind="enhance", scale=1)


def image_pair(height: int = 40, width: int = 48, noise: float = 0.05, seed: int = 0):
    """A smooth target and a noisy, slightly off-grid output, both float in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / 20.0
    target = np.stack([np.sin(xx) * 0.4 + 0.5, np.cos(yy) * 0.4 + 0.5, (xx + yy) % 1.0], 0)
    output = np.clip(target + rng.normal(0, noise, target.shape), 0, 1)
    return torch.tensor(output, dtype=torch.float32), torch.tensor(target, dtype=torch.float32)


def y_by_hand(image: torch.Tensor) -> np.ndarray:
    """Quantized RGB -> luma on the 0..255 scale, written out in numpy."""
    rgb = np.round(np.clip(image.numpy().astype(np.float64), 0, 1) * 255) / 255
    return 16 + 65.481 * rgb[0] + 128.553 * rgb[1] + 24.966 * rgb[2]


def test_quantize_and_rgb_to_y():
    x = torch.tensor([-0.1, 0.0, 0.5, 0.9999, 1.2, 100 / 255 + 0.4 / 255])
    assert torch.allclose(quantize(x), torch.tensor([0.0, 0.0, 128 / 255, 1.0, 1.0, 100 / 255]))
    black, white = torch.zeros(2, 3, 4, 5), torch.ones(3, 4, 5)
    assert rgb_to_y(black).shape == (2, 1, 4, 5) and torch.allclose(rgb_to_y(black), torch.tensor(16.0))
    assert torch.allclose(rgb_to_y(white), torch.tensor(235.0))
    red = torch.zeros(3, 1, 1)
    red[0] = 1
    assert rgb_to_y(red).item() == pytest.approx(16 + 65.481)


@pytest.mark.parametrize("task", [SR2, SR4])
def test_sr_metrics_match_skimage_on_y_with_border_crop(task):
    output, target = image_pair(seed=task.scale)
    got = image_metrics(output, target, task)
    border = task.scale
    y_out = y_by_hand(output)[border:-border, border:-border]
    y_ref = y_by_hand(target)[border:-border, border:-border]
    psnr = peak_signal_noise_ratio(y_ref, y_out, data_range=255)
    ssim = structural_similarity(
        y_ref, y_out, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    assert got["psnr"] == pytest.approx(psnr, abs=1e-3)
    assert got["ssim"] == pytest.approx(ssim, abs=1e-3)
    assert 15 < got["psnr"] < 60 and 0 < got["ssim"] < 1
    # a batch of one is the same image
    assert image_metrics(output[None], target[None], task) == pytest.approx(got)


def test_enhance_metrics_match_skimage_on_rgb():
    output, target = image_pair(seed=9, noise=0.1)
    got = image_metrics(output, target, ENHANCE)
    out = np.round(output.numpy().transpose(1, 2, 0).astype(np.float64) * 255) / 255
    ref = np.round(target.numpy().transpose(1, 2, 0).astype(np.float64) * 255) / 255
    psnr = peak_signal_noise_ratio(ref, out, data_range=1)
    ssim = structural_similarity(
        ref, out, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1,
        channel_axis=2,
    )
    assert got["psnr"] == pytest.approx(psnr, abs=1e-3)
    assert got["ssim"] == pytest.approx(ssim, abs=1e-3)


def test_only_the_border_differs_gives_the_cap():
    _, target = image_pair()
    output = target.clone()
    output[:, :2, :] = 0.0  # the 2-pixel border that scale 2 crops away
    output[:, :, -2:] = 1.0
    assert image_metrics(output, target, SR2) == {"psnr": PSNR_CAP, "ssim": pytest.approx(1.0)}
    assert image_metrics(output, target, ENHANCE)["psnr"] < 30  # no crop for enhance
    output[:, 2, 5] = 0.0
    assert image_metrics(output, target, SR2)["psnr"] < PSNR_CAP


def test_psnr_of_a_uniform_error():
    target = torch.full((3, 24, 24), 100 / 255)
    output = target + 4 / 255
    # enhance: RGB error of 4 levels in 255 -> 20·log10(255/4)
    assert image_metrics(output, target, ENHANCE)["psnr"] == pytest.approx(20 * math.log10(255 / 4), abs=1e-4)
    # sr: the same offset on R, G and B moves Y by 4·219/255 levels
    expected = 20 * math.log10(255 / (4 * 219 / 255))
    assert image_metrics(output, target, SR2)["psnr"] == pytest.approx(expected, abs=1e-4)


def test_both_images_are_rounded_to_8_bits():
    _, target = image_pair()
    target = quantize(target)
    nudged = target + 0.3 / 255  # below half a level: vanishes when rounded
    assert image_metrics(nudged, target, SR2)["psnr"] == PSNR_CAP
    assert image_metrics(nudged, target, ENHANCE)["psnr"] == PSNR_CAP


def test_mean_is_of_per_image_values():
    target = torch.full((3, 16, 16), 0.5)
    near = image_metrics(target + 1 / 255, target, ENHANCE)
    far = image_metrics(target + 10 / 255, target, ENHANCE)
    mean = mean_metrics([near, far])
    assert mean["psnr"] == pytest.approx((near["psnr"] + far["psnr"]) / 2)
    # not the PSNR of the pooled error
    pooled = 10 * math.log10(1 / (((1 / 255) ** 2 + (10 / 255) ** 2) / 2))
    assert abs(mean["psnr"] - pooled) > 1
    assert mean["ssim"] == pytest.approx((near["ssim"] + far["ssim"]) / 2)
    with pytest.raises(ValueError):
        mean_metrics([])
    with pytest.raises(ValueError):
        mean_metrics([{"psnr": 1.0}, {"ssim": 1.0}])


def test_size_errors():
    with pytest.raises(ValueError, match="differ"):
        image_metrics(torch.rand(3, 20, 20), torch.rand(3, 20, 22), SR2)
    with pytest.raises(DataError, match="too small") as info:
        image_metrics(torch.rand(3, 16, 16), torch.rand(3, 16, 16), SR4, name="tiny")
    assert "tiny" in str(info.value)
