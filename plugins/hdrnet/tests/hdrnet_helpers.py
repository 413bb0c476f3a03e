"""Model builders shared by the HDRNet tests."""

from __future__ import annotations

import kdcore
import torch

from kdcore_hdrnet import HDRNet

SMALL = {"net_input_size": 64, "spatial_bins": 4}


def make_model(kind: str = "enhance", scale: int = 1, **params) -> HDRNet:
    """A small HDRNet (64-pixel low-resolution stream) unless params say otherwise."""
    merged = {**SMALL, **params}
    return HDRNet(HDRNet.Params(**merged), kdcore.Task(kind=kind, scale=scale))


def perturb(model: torch.nn.Module, std: float = 0.05, seed: int = 0) -> None:
    """Moves every parameter away from its initial value, so the model is far from identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * std)
