"""The exported graph (tiled path) computes what the PyTorch path computes, and verifies in onnxruntime."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from hdrnet_helpers import make_model, perturb
from kdcore_hdrnet import tiled
from kdcore_hdrnet.slicing import apply_coefficients

TOL = 1e-5
#: two odd sizes (batch, height, width), neither the traced one
ODD_SIZES = ((1, 37, 53), (2, 29, 41))


def _reference(model, x):
    """The PyTorch operator path: guide, 5-D slice, apply (no fused kernel, no streaming)."""
    grid = model.predict_grid(x)
    full = model.fullres_input(x)
    details = model.details(full)
    return apply_coefficients(model.slice_coefficients(grid, model.guide(full)), full, details).clamp(0, 1)


@pytest.mark.parametrize(
    ("kind", "scale", "guide", "levels", "bins", "shape"),
    [
        ("enhance", 1, "pointwise-curve", 0, 4, (2, 3, 37, 53)),
        ("enhance", 1, "conv", 2, 8, (1, 3, 29, 41)),
        ("sr", 2, "pointwise-curve", 2, 4, (2, 3, 17, 23)),
        ("sr", 3, "conv", 1, 4, (1, 3, 13, 9)),
        ("enhance", 1, "pointwise-curve", 0, 8, (1, 3, 5, 7)),  # smaller than the grid: empty tiles
    ],
)
def test_tiled_path_equals_pytorch_path(kind, scale, guide, levels, bins, shape):
    model = make_model(
        kind,
        scale,
        guide=guide,
        sr_detail_levels=levels,
        enhance_detail_levels=levels,
        spatial_bins=bins,
        net_input_size=16 * bins,
    )
    perturb(model, 0.05)
    model.eval()
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(1)) * 1.2 - 0.1
    with torch.no_grad():
        grid = model.predict_grid(x)
        full = model.fullres_input(x)
        got = tiled.sliced_apply(grid, model.guide, full, model.details(full)).clamp(0, 1)
        want = _reference(model, x)
    assert got.shape == want.shape == (shape[0], 3, shape[2] * scale, shape[3] * scale)
    assert (got - want).abs().max().item() <= TOL


def test_tiled_blocks_do_not_change_results(monkeypatch):
    """Blocks of a few rows (many loop iterations, partial last blocks) give the same output."""
    model = make_model(spatial_bins=4, net_input_size=64)
    perturb(model, 0.05)
    model.eval()
    x = torch.rand(2, 3, 31, 27)
    with torch.no_grad():
        grid, full = model.predict_grid(x), model.fullres_input(x)
        whole = tiled.sliced_apply(grid, model.guide, full, None)
        monkeypatch.setattr(tiled, "BLOCK_PIXELS", 60)
        blocks = tiled.sliced_apply(grid, model.guide, full, None)
    assert (whole - blocks).abs().max().item() <= TOL


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_upscale_equals_interpolate(scale):
    x = torch.rand(2, 3, 9, 14) * 1.4 - 0.2
    want = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
    assert (tiled.bicubic_upscale(x, scale) - want).abs().max().item() <= 1e-5


@pytest.mark.parametrize(
    ("kind", "scale", "params"),
    [
        ("enhance", 1, {}),
        ("sr", 2, {"guide": "conv"}),
    ],
)
def test_export_verifies_at_two_odd_sizes(kind, scale, params, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnx
    from kdcore.onnx import export_student

    model = make_model(kind, scale, spatial_bins=8, net_input_size=128, **params)
    perturb(model, 0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = export_student(model, model.task, tmp_path / "m.onnx", name="hdrnet", sizes=ODD_SIZES)
    assert report["passed"] and report["max_abs_diff"] <= 1e-4
    ops = graph_ops(onnx.load(str(tmp_path / "m.onnx")).graph)
    assert "Loop" in ops  # the tiled path, dynamic in the number of row blocks
    assert "GridSample" not in ops  # the operator onnxruntime runs slowly


def graph_ops(graph) -> set[str]:
    """Operator types of an ONNX graph and of its subgraphs (loop bodies, branches)."""
    ops = set()
    for node in graph.node:
        ops.add(node.op_type)
        for attr in node.attribute:
            if attr.g is not None and attr.g.node:
                ops |= graph_ops(attr.g)
    return ops
