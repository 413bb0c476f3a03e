"""Full-resolution guide maps: one channel in [0, 1] per pixel, from the RGB input.

Both guides are per-pixel functions, so they can be evaluated on any block of rows. They work on
flattened pixels (matrix products and table look-ups) instead of 1×1 convolutions. Each has
``prepare()`` (everything that depends only on the weights) and ``evaluate(x, prepared)``, so a
caller that evaluates many blocks prepares once; ``forward(x)`` is ``evaluate(x, prepare())``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CurveGuide(nn.Module):
    """The paper's guide: a 3×3 colour matrix (plus bias), one piecewise-linear curve per
    channel, and a learned mix of the three channels, clipped to [0, 1].

    Curve ``c`` is ``ρ_c(v) = Σ_i a_{c,i}·max(v − t_i, 0)`` with ``knots`` control points. The
    thresholds ``t_i = i/knots`` are fixed at the published initialisation (the official code
    also trains them); the slopes ``a`` are learned. With thresholds on a uniform lattice each
    curve is exactly a linearly interpolated table over the lattice, and for inputs in [0, 1]
    the colour matrix bounds ``v``, so the table spans every value that can occur. The table
    look-up is one ``grid_sample``, which is what keeps the guide cheap at full resolution.
    Inputs must lie in [0, 1] (the model clamps its full-resolution image).
    """

    thresholds: torch.Tensor  # a buffer, registered in __init__

    def __init__(self, knots: int = 16):
        super().__init__()
        self.knots = knots
        # Identity colour matrix (rows: input channel, columns: output channel), zero bias.
        self.ccm = nn.Parameter(torch.eye(3) + 1e-4 * torch.randn(1))
        self.ccm_bias = nn.Parameter(torch.zeros(3))
        # Identity curves: slope 1 from the first threshold (0), none after.
        slopes = torch.zeros(3, knots)
        slopes[:, 0] = 1.0
        self.slopes = nn.Parameter(slopes)
        self.register_buffer("thresholds", torch.arange(knots, dtype=torch.float32) / knots, persistent=False)
        self.mix_weight = nn.Parameter(torch.full((3,), 1.0 / 3))
        self.mix_bias = nn.Parameter(torch.zeros(1))

    def lattice(self) -> tuple[int, int]:
        """First and last lattice index (units of 1/knots) the curve inputs can reach."""
        with torch.no_grad():
            lo = (self.ccm_bias + self.ccm.clamp(max=0).sum(0)).min().clamp(max=0)
            hi = (self.ccm_bias + self.ccm.clamp(min=0).sum(0)).max().clamp(min=1)
            bounds = torch.stack([lo, hi]).cpu() * self.knots
        return int(bounds[0].floor()), max(int(bounds[1].ceil()), int(bounds[0].floor()) + 1)

    def prepare(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What :meth:`evaluate` needs from the weights: (table 3×M, matrix 3×3, bias 3)."""
        first, last = self.lattice()
        nodes = torch.arange(first, last + 1, device=self.slopes.device, dtype=self.slopes.dtype) / self.knots
        ramps = (nodes.view(1, -1) - self.thresholds.view(-1, 1)).clamp_min(0)  # knots×M
        tables = (self.slopes @ ramps) * self.mix_weight.view(3, 1)  # 3×M, mix folded in
        # Table position in grid_sample's [-1, 1] (align_corners=True), folded into the matrix.
        span = (last - first) / self.knots
        scale, shift = 2.0 / span, -1.0 - 2.0 * first / self.knots / span
        return tables, self.ccm.t() * scale, self.ccm_bias * scale + shift

    def evaluate(
        self, x: torch.Tensor, prepared: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        """The guide of ``x`` (B×3×H×W in [0, 1], any row block) with :meth:`prepare`'s output."""
        tables, matrix, bias = prepared
        b, _, h, w = x.shape
        pos = torch.baddbmm(bias.view(1, 3, 1), matrix.expand(b, 3, 3), x.reshape(b, 3, h * w))  # B×3×N
        n = b * h * w
        coords = pos.transpose(0, 1).reshape(3, 1, n, 1).expand(3, 1, n, 2)  # y is ignored (one row)
        looked_up = F.grid_sample(
            tables.view(3, 1, 1, -1), coords, mode="bilinear", padding_mode="border", align_corners=True
        )
        g = looked_up.view(3, b, h * w).sum(0).add_(self.mix_bias)
        return g.clamp_(0, 1).view(b, 1, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: B×3×H×W in [0, 1] → B×1×H×W guide in [0, 1]."""
        return self.evaluate(x, self.prepare())


class _FoldableBatchNorm1d(nn.BatchNorm1d):
    """Batch norm over pixels (``N×C`` rows) whose eval form is an affine map."""

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) equal to this layer in eval mode."""
        # built with the defaults (affine, track_running_stats)
        assert self.running_var is not None and self.running_mean is not None
        assert self.weight is not None and self.bias is not None
        scale = self.weight / torch.sqrt(self.running_var + self.eps)
        return scale, self.bias - self.running_mean * scale


class ConvGuide(nn.Module):
    """The pointwise-network guide: per-pixel MLP 3 → ``hidden`` (batch norm, ReLU) → 1 (sigmoid).

    Equivalent to two 1×1 convolutions; batch norm is over all pixels of the batch, so it works
    with batch size 1. In eval mode it is folded into the first layer.
    """

    def __init__(self, hidden: int = 16):
        super().__init__()
        self.conv1 = nn.Linear(3, hidden)
        self.norm = _FoldableBatchNorm1d(hidden)
        self.conv2 = nn.Linear(hidden, 1)

    def prepare(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The first layer with batch norm folded in (eval mode), or None (training)."""
        if self.training:
            return None
        scale, shift = self.norm.folded()
        return self.conv1.weight * scale.view(-1, 1), self.conv1.bias * scale + shift

    def evaluate(self, x: torch.Tensor, prepared: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """The guide of ``x`` (B×3×H×W, any row block) with :meth:`prepare`'s output."""
        b, _, h, w = x.shape
        pixels = x.reshape(b, 3, h * w)
        if prepared is None:
            # built with the defaults (momentum 0.1, track_running_stats)
            assert self.norm.momentum is not None and self.norm.num_batches_tracked is not None
            hidden = torch.matmul(self.conv1.weight, pixels) + self.conv1.bias.view(1, -1, 1)  # B×K×N
            hidden = F.batch_norm(
                hidden,
                self.norm.running_mean,
                self.norm.running_var,
                self.norm.weight,
                self.norm.bias,
                training=True,
                momentum=self.norm.momentum,
                eps=self.norm.eps,
            )
            self.norm.num_batches_tracked.add_(1)
        else:
            weight, bias = prepared
            hidden = torch.baddbmm(bias.view(1, -1, 1), weight.expand(b, -1, -1), pixels)
        hidden = hidden.relu_()
        out = torch.baddbmm(self.conv2.bias.view(1, 1, 1), self.conv2.weight.expand(b, -1, -1), hidden)
        return torch.sigmoid_(out).view(b, 1, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: B×3×H×W → B×1×H×W guide in (0, 1)."""
        return self.evaluate(x, self.prepare())
