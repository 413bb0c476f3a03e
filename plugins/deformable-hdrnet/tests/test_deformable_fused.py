"""deformable-hdrnet in inference: the fused CPU path (lattice offsets included) equals PyTorch's."""

from __future__ import annotations

import warnings

import pytest
import torch
from kdcore_deformable_hdrnet.model import DeformableHDRNet
from kdcore_hdrnet import fused

import kdcore

SMALL = {"net_input_size": 64, "spatial_bins": 4}


def _model(kind: str, scale: int, **params) -> DeformableHDRNet:
    model = DeformableHDRNet(DeformableHDRNet.Params(**SMALL, **params), kdcore.Task(kind=kind, scale=scale))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():  # offsets and masks far from zero, so they really shift
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval()


@pytest.mark.parametrize(
    ("kind", "scale", "mode", "shape"),
    [("enhance", 1, "lattice", (2, 3, 31, 45)), ("sr", 2, "lattice", (2, 3, 15, 21)),
     ("sr", 3, "lattice", (1, 3, 9, 13)), ("enhance", 1, "pixel", (2, 3, 19, 17))],
)
def test_deformable_fused_equals_pytorch_path(kind, scale, mode, shape, monkeypatch):
    model = _model(kind, scale, slice_offset_mode=mode)
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(2))
    expected_calls = 1 if fused.available() and mode == "lattice" else 0
    calls = []
    real = fused.run
    monkeypatch.setattr(fused, "run", lambda *a, **k: calls.append(1) or real(*a, **k))
    with torch.no_grad():
        got = model(x)
        monkeypatch.setenv(fused.ENV_VAR, "0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            want = model(x)
    # the lattice mode slices a (finer) grid like hdrnet and takes the fused path; pixel mode does not
    assert len(calls) == expected_calls
    assert got.shape == (shape[0], 3, shape[2] * scale, shape[3] * scale)
    assert (got - want).abs().max().item() <= 1e-5
