"""The grid_sample deformable convolution against torchvision's, and the module's start state."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops import deform_conv2d as tv_deform_conv2d

from kdcore_deformable_hdrnet.deform_conv import (
    ModulatedDeformConv2d,
    deform_conv2d,
    deform_conv2d_grid_sample,
)

CASES = [
    # stride, padding, dilation, groups, offset_groups
    (1, 1, 1, 1, 1),
    (2, 1, 1, 1, 1),
    (1, 2, 2, 2, 2),
]


def _out_size(n: int, stride: int, padding: int, dilation: int, k: int = 3) -> int:
    return (n + 2 * padding - dilation * (k - 1) - 1) // stride + 1


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("stride,padding,dilation,groups,offset_groups", CASES)
def test_matches_torchvision_values_and_gradients(
    dtype: torch.dtype,
    tol: float,
    stride: int,
    padding: int,
    dilation: int,
    groups: int,
    offset_groups: int,
) -> None:
    gen = torch.Generator().manual_seed(stride * 100 + dilation * 10 + groups)
    b, c, h, w, o = 2, 4, 9, 11, 6
    ho, wo = _out_size(h, stride, padding, dilation), _out_size(w, stride, padding, dilation)

    def leaf(*shape: int, scale: float = 1.0, uniform: bool = False) -> torch.Tensor:
        fn = torch.rand if uniform else torch.randn
        return (fn(*shape, generator=gen, dtype=dtype) * scale).requires_grad_()

    x = leaf(b, c, h, w)
    # Offsets up to a few pixels push many taps across the border (zero padding is exercised).
    offset = leaf(b, 2 * offset_groups * 9, ho, wo, scale=2.5)
    mask = leaf(b, offset_groups * 9, ho, wo, uniform=True)
    weight = leaf(o, c // groups, 3, 3)
    bias = leaf(o)
    inputs = (x, offset, mask, weight, bias)

    ref = tv_deform_conv2d(
        x, offset, weight, bias, stride=(stride,) * 2, padding=(padding,) * 2,
        dilation=(dilation,) * 2, mask=mask,
    )
    out = deform_conv2d_grid_sample(x, offset, weight, bias, stride, padding, dilation, mask)
    assert out.shape == ref.shape == (b, o, ho, wo)
    torch.testing.assert_close(out, ref, atol=tol, rtol=tol)

    grad_out = torch.randn(ref.shape, generator=gen, dtype=dtype)
    ref_grads = torch.autograd.grad(ref, inputs, grad_out)
    grads = torch.autograd.grad(out, inputs, grad_out)
    for name, g, r in zip(("input", "offset", "mask", "weight", "bias"), grads, ref_grads):
        torch.testing.assert_close(g, r, atol=tol * 10, rtol=tol, msg=f"gradient of {name}")


def test_offset_layout_is_dy_then_dx() -> None:
    # A 1×1 identity kernel with offset (dy, dx) = (1, 0) reads the next row down.
    x = torch.arange(20.0).reshape(1, 1, 4, 5)
    weight = torch.ones(1, 1, 1, 1)
    offset = torch.zeros(1, 2, 4, 5)
    offset[:, 0] = 1.0
    out = deform_conv2d_grid_sample(x, offset, weight)
    expected = torch.cat([x[..., 1:, :], torch.zeros(1, 1, 1, 5)], dim=2)
    torch.testing.assert_close(out, expected)
    tv = tv_deform_conv2d(x, offset, weight)
    torch.testing.assert_close(tv, expected)


def test_mask_none_equals_unit_mask() -> None:
    x = torch.randn(1, 3, 6, 6)
    offset = torch.randn(1, 18, 6, 6)
    weight = torch.randn(2, 3, 3, 3)
    a = deform_conv2d(x, offset, weight, padding=1)
    b = deform_conv2d(x, offset, weight, padding=1, mask=torch.ones(1, 9, 6, 6))
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("impl", ["grid_sample", "torchvision"])
@pytest.mark.parametrize("stride", [1, 2])
def test_module_at_init_is_the_plain_convolution(impl: str, stride: int) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 7, 3, stride=stride, padding=1)
    layer = ModulatedDeformConv2d(5, 7, 3, stride=stride, padding=1, impl=impl)
    missing, unexpected = layer.load_state_dict(conv.state_dict(), strict=False)
    assert sorted(missing) == ["offset_mask.bias", "offset_mask.weight"]
    assert unexpected == []
    x = torch.randn(2, 5, 10, 12)
    torch.testing.assert_close(layer(x), conv(x), atol=1e-5, rtol=1e-5)
    copy = ModulatedDeformConv2d.from_conv(conv, impl=impl)
    torch.testing.assert_close(copy(x), conv(x), atol=1e-5, rtol=1e-5)


def test_module_impls_agree_and_offsets_train() -> None:
    torch.manual_seed(0)
    layer = ModulatedDeformConv2d(4, 4, 3, padding=1)
    with torch.no_grad():
        layer.offset_mask.weight.normal_(std=0.3)
    other = ModulatedDeformConv2d(4, 4, 3, padding=1, impl="torchvision")
    other.load_state_dict(layer.state_dict())
    x = torch.randn(1, 4, 8, 8)
    torch.testing.assert_close(layer(x), other(x), atol=1e-5, rtol=1e-5)

    fresh = ModulatedDeformConv2d(4, 4, 3, padding=1)
    opt = torch.optim.SGD(fresh.parameters(), lr=0.1)
    fresh(x).square().mean().backward()
    assert fresh.offset_mask.weight.grad is not None
    assert fresh.offset_mask.weight.grad.abs().sum() > 0
    opt.step()
    offset, mask = fresh.offsets_and_mask(x)
    assert offset.abs().max() > 0


def test_unknown_impl_is_rejected() -> None:
    with pytest.raises(ValueError, match="impl"):
        ModulatedDeformConv2d(2, 2, 3, impl="cuda")  # type: ignore[arg-type]
