"""Slicing against a loop-based reference of the bilateral-grid convention."""

from __future__ import annotations

import math

import pytest
import torch

from kdcore_hdrnet.slicing import apply_coefficients, slice_grid, slice_grid_5d


def loop_slice(grid: torch.Tensor, guide: torch.Tensor, offsets: torch.Tensor | None = None) -> torch.Tensor:
    """Trilinear slice pixel by pixel: cell i centred at i + 0.5, neighbours clamped to the grid."""
    b, c, d, gh, gw = grid.shape
    height, width = guide.shape[-2:]
    out = torch.zeros(b, c, height, width, dtype=torch.float64)
    g = grid.double()
    for n in range(b):
        for y in range(height):
            for x in range(width):
                gx = (x + 0.5) * gw / width
                gy = (y + 0.5) * gh / height
                if offsets is not None:
                    gx += float(offsets[n, 0, y, x])
                    gy += float(offsets[n, 1, y, x])
                gz = float(guide[n, 0, y, x]) * d
                fx, fy, fz = (math.floor(v - 0.5) for v in (gx, gy, gz))
                for xx in (fx, fx + 1):
                    wx = max(1.0 - abs(xx + 0.5 - gx), 0.0)
                    for yy in (fy, fy + 1):
                        wy = max(1.0 - abs(yy + 0.5 - gy), 0.0)
                        for zz in (fz, fz + 1):
                            wz = max(1.0 - abs(zz + 0.5 - gz), 0.0)
                            xi = min(max(xx, 0), gw - 1)
                            yi = min(max(yy, 0), gh - 1)
                            zi = min(max(zz, 0), d - 1)
                            out[n, :, y, x] += wx * wy * wz * g[n, :, zi, yi, xi]
    return out.float()


@pytest.fixture
def case() -> tuple[torch.Tensor, torch.Tensor]:
    grid = torch.randn(2, 3, 5, 3, 4)  # B, C, D=5 bins, 3×4 cells
    guide = torch.rand(2, 1, 7, 9)  # 7×9 image
    guide[0, 0, 0, 0] = 0.0
    guide[0, 0, 1, 1] = 1.0
    return grid, guide


def test_fast_slice_matches_loop_reference(case) -> None:
    grid, guide = case
    torch.testing.assert_close(slice_grid(grid, guide), loop_slice(grid, guide), atol=1e-5, rtol=0)


def test_5d_slice_matches_loop_reference(case) -> None:
    grid, guide = case
    torch.testing.assert_close(slice_grid_5d(grid, guide), loop_slice(grid, guide), atol=1e-5, rtol=0)


def test_slice_with_offsets_matches_loop_reference(case) -> None:
    grid, guide = case
    offsets = torch.randn(2, 2, 7, 9) * 0.7
    expected = loop_slice(grid, guide, offsets)
    torch.testing.assert_close(slice_grid(grid, guide, offsets), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        slice_grid(grid, guide, torch.zeros(2, 2, 7, 9)), loop_slice(grid, guide), atol=1e-5, rtol=0
    )


def test_axes_are_not_swapped() -> None:
    # A grid that varies only along x: the slice must vary only along the image columns.
    grid = torch.arange(4.0).view(1, 1, 1, 1, 4).expand(1, 1, 2, 3, 4).contiguous()
    sliced = slice_grid(grid, torch.rand(1, 1, 6, 8))
    assert torch.allclose(sliced[0, 0, 0], sliced[0, 0, 5])
    assert sliced[0, 0, 0, -1] > sliced[0, 0, 0, 0]


def test_apply_coefficients_is_affine_per_pixel() -> None:
    coeffs = torch.randn(1, 18, 5, 6)
    image = torch.rand(1, 3, 5, 6)
    details = torch.randn(1, 6, 5, 6)
    out = apply_coefficients(coeffs, image, details)
    a = coeffs[:, :12].view(1, 3, 4, 5, 6)
    expected = (a[:, :, :3] * image.unsqueeze(1)).sum(2) + a[:, :, 3]
    expected = expected + coeffs[:, 12:15] * details[:, :3] + coeffs[:, 15:18] * details[:, 3:]
    torch.testing.assert_close(out, expected)
