"""Modulated deformable convolution (DCNv2) built on ``grid_sample``.

``torchvision.ops.deform_conv2d`` is the reference. Its CPU backward pass is slow, so the default
path here samples the input bilinearly at the ``K = kh·kw`` shifted kernel positions with
:func:`torch.nn.functional.grid_sample`, multiplies by the mask and contracts with the weight in
one ``einsum``. Both paths share torchvision's conventions:

* ``offset``: B×(2·G·K)×Ho×Wo, for offset group ``g`` and kernel position ``k`` (row-major over
  the kernel) channel ``2·(g·K + k)`` is the vertical shift ``dy`` and the next one ``dx``, in
  input pixels;
* ``mask``: B×(G·K)×Ho×Wo, one modulation scalar per group and kernel position;
* samples outside the image read zero.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.nn.modules.utils import _pair

DeformImpl = Literal["grid_sample", "torchvision"]
IMPLS: tuple[str, ...] = ("grid_sample", "torchvision")


def _sampling_grid(
    offset: torch.Tensor,
    in_size: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    offset_groups: int,
) -> torch.Tensor:
    """Normalised ``grid_sample`` coordinates, (B·G)×(K·Ho)×Wo×2, for the shifted kernel taps."""
    _b, _, ho, wo = offset.shape
    kh, kw = kernel
    h, w = in_size
    dtype, device = offset.dtype, offset.device
    # Base positions of every tap, in input pixels: output position * stride - padding + tap.
    ky = torch.arange(kh, dtype=dtype, device=device) * dilation[0]
    kx = torch.arange(kw, dtype=dtype, device=device) * dilation[1]
    oy = torch.arange(ho, dtype=dtype, device=device) * stride[0] - padding[0]
    ox = torch.arange(wo, dtype=dtype, device=device) * stride[1] - padding[1]
    base_y = rearrange(ky, "i -> i 1 1 1") + rearrange(oy, "p -> 1 1 p 1")  # kh×1×Ho×1
    base_x = rearrange(kx, "j -> 1 j 1 1") + rearrange(ox, "q -> 1 1 1 q")  # 1×kw×1×Wo
    base_y = rearrange(base_y.expand(kh, kw, ho, 1), "i j p q -> (i j) p q")
    base_x = rearrange(base_x.expand(kh, kw, 1, wo), "i j p q -> (i j) p q")
    off = rearrange(offset, "b (g k two) p q -> two (b g) k p q", g=offset_groups, two=2)
    y = off[0] + base_y
    x = off[1] + base_x
    # Pixel centres under align_corners=False: pixel i sits at (2i + 1) / size - 1.
    gy = (2.0 * y + 1.0) / h - 1.0
    gx = (2.0 * x + 1.0) / w - 1.0
    return rearrange(torch.stack((gx, gy), dim=-1), "n k p q two -> n (k p) q two")


def deform_conv2d_grid_sample(
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Modulated deformable convolution with the signature of ``torchvision.ops.deform_conv2d``.

    Differentiable in every tensor argument through autograd; groups are inferred from
    ``weight`` (``C_in / weight.shape[1]``) and offset groups from ``offset``.
    """
    pairs: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] = (
        _pair(stride),
        _pair(padding),
        _pair(dilation),
    )
    stride, padding, dilation = pairs
    b, c, h, w = input.shape
    _out_ch, c_per_group, kh, kw = weight.shape
    k = kh * kw
    if c % c_per_group:
        raise ValueError(f"input has {c} channels, not a multiple of weight's {c_per_group}")
    groups = c // c_per_group
    if offset.shape[1] % (2 * k):
        raise ValueError(f"offset has {offset.shape[1]} channels, not a multiple of 2·{k}")
    offset_groups = offset.shape[1] // (2 * k)
    if c % offset_groups:
        raise ValueError(f"{c} input channels cannot be split into {offset_groups} offset groups")
    ho, wo = offset.shape[-2:]
    grid = _sampling_grid(offset, (h, w), (kh, kw), stride, padding, dilation, offset_groups)
    x = rearrange(input, "b (g c) h w -> (b g) c h w", g=offset_groups)
    cols = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    cols = rearrange(cols, "(b g) c (k p) q -> b g c k p q", b=b, k=k)
    if mask is not None:
        m = rearrange(mask, "b (g k) p q -> b g 1 k p q", g=offset_groups)
        cols = cols * m
    cols = rearrange(cols, "b g c k p q -> b (g c) k (p q)")
    cols = rearrange(cols, "b (n c) k l -> b n (c k) l", n=groups)
    wmat = rearrange(weight, "(n o) c i j -> n o (c i j)", n=groups)
    out = torch.einsum("nos,bnsl->bnol", wmat, cols)
    out = rearrange(out, "b n o (p q) -> b (n o) p q", p=ho, q=wo)
    if bias is not None:
        out = out + rearrange(bias, "o -> 1 o 1 1")
    return out


def deform_conv2d(
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: torch.Tensor | None = None,
    impl: DeformImpl = "grid_sample",
) -> torch.Tensor:
    """Modulated deformable convolution through the chosen implementation (see module doc)."""
    if impl == "grid_sample":
        return deform_conv2d_grid_sample(input, offset, weight, bias, stride, padding, dilation, mask)
    if impl == "torchvision":
        from torchvision.ops import deform_conv2d as tv_deform_conv2d

        return tv_deform_conv2d(
            input,
            offset,
            weight,
            bias,
            stride=_pair(stride),
            padding=_pair(padding),
            dilation=_pair(dilation),
            mask=mask,
        )
    raise ValueError(f"unknown deformable convolution impl {impl!r}; use one of {IMPLS}")


class ModulatedDeformConv2d(nn.Module):
    """A drop-in for ``nn.Conv2d`` whose taps move by learned offsets and carry learned masks.

    ``weight`` and ``bias`` have ``nn.Conv2d``'s names and shapes, so a plain convolution's state
    dict loads into it. ``offset_mask`` is a convolution with the same geometry that predicts,
    from the layer input, ``2·G·K`` offsets (torchvision's layout) and ``G·K`` mask logits; it
    starts at zero, so offsets are 0 and masks are ``2·sigmoid(0) = 1`` and the layer computes
    exactly the plain convolution until training moves it.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        offset_groups: int = 1,
        impl: DeformImpl = "grid_sample",
    ) -> None:
        super().__init__()
        if impl not in IMPLS:
            raise ValueError(f"unknown deformable convolution impl {impl!r}; use one of {IMPLS}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"channels {in_channels}->{out_channels} not divisible by {groups}")
        if in_channels % offset_groups:
            raise ValueError(f"{in_channels} channels not divisible by {offset_groups} groups")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.offset_groups = offset_groups
        self.impl: DeformImpl = impl
        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kh, kw))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        k = kh * kw
        self.offset_mask = nn.Conv2d(
            in_channels,
            3 * offset_groups * k,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Conv2d``'s initialisation for the weights; zero for the offset/mask predictor."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3]
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)
        nn.init.zeros_(self.offset_mask.weight)
        assert self.offset_mask.bias is not None  # the predictor is built with a bias
        nn.init.zeros_(self.offset_mask.bias)

    @classmethod
    def from_conv(
        cls, conv: nn.Conv2d, *, offset_groups: int = 1, impl: DeformImpl = "grid_sample"
    ) -> ModulatedDeformConv2d:
        """A deformable layer that starts as a copy of ``conv`` (same weights, zero offsets)."""
        if not isinstance(conv.padding, tuple) or conv.padding_mode != "zeros":
            raise ValueError("only zero padding with explicit sizes can be made deformable")
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,  # type: ignore[arg-type]
            stride=conv.stride,  # type: ignore[arg-type]
            padding=conv.padding,  # type: ignore[arg-type]
            dilation=conv.dilation,  # type: ignore[arg-type]
            groups=conv.groups,
            bias=conv.bias is not None,
            offset_groups=offset_groups,
            impl=impl,
        ).to(device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(conv.weight)
            if conv.bias is not None and layer.bias is not None:
                layer.bias.copy_(conv.bias)
        return layer

    def offsets_and_mask(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The predicted offsets (B×2GK×Ho×Wo, pixels) and masks (B×GK×Ho×Wo, in (0, 2))."""
        om = self.offset_mask(x)
        n_off = 2 * self.offset_groups * self.kernel_size[0] * self.kernel_size[1]
        return om[:, :n_off], 2.0 * torch.sigmoid(om[:, n_off:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Deformable convolution of ``x`` (B×C×H×W) with predicted offsets and masks."""
        offset, mask = self.offsets_and_mask(x)
        return deform_conv2d(
            x,
            offset,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            mask,
            impl=self.impl,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"groups={self.groups}, offset_groups={self.offset_groups}, impl={self.impl!r}"
        )
