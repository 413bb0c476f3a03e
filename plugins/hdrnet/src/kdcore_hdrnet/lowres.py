"""The low-resolution stream: predicts the bilateral grid of coefficients from a fixed-size input.

Submodule names are part of the public surface (feature-matching losses refer to them):
``splat``, ``global_path``, ``local_path``, ``fusion``, ``coefficients``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class _AnyBatchMixin(nn.modules.batchnorm._BatchNorm):
    """Batch norm that also runs in training when there is one value per channel (a batch of
    one at the 1×1 or fully connected layers): it then uses, and does not update, the running
    statistics instead of failing."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.numel() == x.shape[1]:
            return nn.functional.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


class _BatchNorm1dAnyBatch(_AnyBatchMixin, nn.BatchNorm1d):
    """Batch norm of the fully connected layers (see :class:`_AnyBatchMixin`)."""


class _BatchNorm2dAnyBatch(_AnyBatchMixin, nn.BatchNorm2d):
    """Batch norm of the convolutions (see :class:`_AnyBatchMixin`)."""


def conv_block(
    in_ch: int, out_ch: int, *, stride: int = 1, batch_norm: bool = False, relu: bool = True
) -> nn.Sequential:
    """3×3 convolution (+ batch norm) (+ ReLU), padding 1."""
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=not batch_norm)]
    if batch_norm:
        layers.append(_BatchNorm2dAnyBatch(out_ch))
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class GlobalPath(nn.Module):
    """Two stride-2 3×3 convolutions, then fully connected layers 32w → 16w → 8w (the last linear)."""

    def __init__(self, width: int, cells: int, batch_norm: bool):
        super().__init__()
        self.convs = nn.Sequential(
            conv_block(8 * width, 8 * width, stride=2, batch_norm=batch_norm),
            conv_block(8 * width, 8 * width, stride=2, batch_norm=batch_norm),
        )
        side = (((cells + 1) // 2) + 1) // 2

        def fc(i: int, o: int) -> nn.Sequential:
            layers: list[nn.Module] = [nn.Linear(i, o, bias=not batch_norm)]
            if batch_norm:
                layers.append(_BatchNorm1dAnyBatch(o))
            layers.append(nn.ReLU(inplace=True))
            return nn.Sequential(*layers)

        self.fc = nn.Sequential(
            fc(8 * width * side * side, 32 * width),
            fc(32 * width, 16 * width),
            nn.Linear(16 * width, 8 * width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B×8w×S×S splat features → B×8w global features."""
        return self.fc(self.convs(x).flatten(1))


class LocalPath(nn.Module):
    """3×3 conv (+ batch norm) + ReLU, then a 3×3 conv without bias or activation."""

    def __init__(self, conv1: nn.Module, conv2: nn.Module):
        super().__init__()
        self.conv1 = conv1
        self.conv2 = conv2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B×8w×S×S → B×8w×S×S."""
        return self.conv2(self.conv1(x))


class Fusion(nn.Module):
    """``relu(local + global)``, the global vector broadcast over the cells."""

    def forward(self, local: torch.Tensor, global_features: torch.Tensor) -> torch.Tensor:
        """B×C×S×S and B×C → B×C×S×S."""
        return torch.relu(local + global_features[:, :, None, None])


class LowResStream(nn.Module):
    """Splat (four stride-2 convs) → global and local paths → fusion → 1×1 conv to the grid.

    ``width`` is ``channel_multiplier × luma_bins`` (the official sizing): the splat layers have
    w, 2w, 4w, 8w channels, the global and local paths 8w. ``make_local_conv(in_ch, out_ch, bias)``
    builds the two 3×3 convolutions of the local path (an extension point).
    """

    def __init__(
        self,
        *,
        width: int,
        cells: int,
        grid_channels: int,
        batch_norm: bool,
        make_local_conv: Callable[[int, int, bool], nn.Module],
    ):
        super().__init__()
        chans = [3, width, 2 * width, 4 * width, 8 * width]
        self.splat = nn.Sequential(
            *[conv_block(chans[i], chans[i + 1], stride=2, batch_norm=batch_norm and i > 0) for i in range(4)]
        )
        self.global_path = GlobalPath(width, cells, batch_norm)
        c = 8 * width
        first: list[nn.Module] = [make_local_conv(c, c, not batch_norm)]
        if batch_norm:
            first.append(_BatchNorm2dAnyBatch(c))
        first.append(nn.ReLU(inplace=True))
        self.local_path = LocalPath(nn.Sequential(*first), make_local_conv(c, c, False))
        self.fusion = Fusion()
        self.coefficients = nn.Conv2d(c, grid_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B×3×n×n (n = 16·cells) → B×(coefficients·luma_bins)×cells×cells."""
        splat = self.splat(x)
        fused = self.fusion(self.local_path(splat), self.global_path(splat))
        return self.coefficients(fused)
