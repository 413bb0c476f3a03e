"""Deformable HDRNet's exported graph verifies in onnxruntime; lattice mode takes HDRNet's tiled path."""

from __future__ import annotations

import warnings

import kdcore
import pytest
import torch
from kdcore_hdrnet import tiled
from kdcore_hdrnet.slicing import apply_coefficients

from kdcore_deformable_hdrnet.model import DeformableHDRNet

SMALL = {"net_input_size": 64, "spatial_bins": 4}
#: two odd sizes (batch, height, width), neither the traced one
ODD_SIZES = ((1, 37, 53), (2, 29, 41))


def _model(kind: str, scale: int, **params) -> DeformableHDRNet:
    model = DeformableHDRNet(DeformableHDRNet.Params(**SMALL, **params), kdcore.Task(kind=kind, scale=scale))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # away from the identity, offsets included
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval()


@pytest.mark.parametrize(("kind", "scale"), [("enhance", 1), ("sr", 2)])
def test_tiled_path_on_the_lattice_grid_equals_pytorch_path(kind, scale):
    model = _model(kind, scale)
    x = torch.rand(2, 3, 23, 31, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        grid = model.predict_grid(x)  # the finer, shifted lattice grid
        full = model.fullres_input(x)
        details = model.details(full)
        got = tiled.sliced_apply(grid, model.guide, full, details).clamp(0, 1)
        want = apply_coefficients(model.slice_coefficients(grid, model.guide(full)), full, details).clamp(
            0, 1
        )
    assert (got - want).abs().max().item() <= 1e-5


def test_export_verifies_at_two_odd_sizes(tmp_path):
    pytest.importorskip("onnxruntime")
    import onnx
    from kdcore.onnx import export_student

    model = _model("enhance", 1)  # sr exports through the same path (kdcore-hdrnet's tests)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = export_student(
            model, model.task, tmp_path / "m.onnx", name="deformable-hdrnet", sizes=ODD_SIZES
        )
    assert report["passed"] and report["max_abs_diff"] <= 1e-4
    ops = {node.op_type for node in onnx.load(str(tmp_path / "m.onnx")).graph.node}
    assert "Loop" in ops  # lattice mode: HDRNet's tiled path (GridSample stays for the low-resolution parts)
