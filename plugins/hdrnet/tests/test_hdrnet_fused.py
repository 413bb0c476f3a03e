"""The fused CPU inference path equals the PyTorch path, and is used only where it should be."""

from __future__ import annotations

import warnings

import pytest
import torch
from hdrnet_helpers import make_model, perturb
from kdcore_hdrnet import fused

TOL = 1e-5


def _both_paths(model, x, monkeypatch):
    """(default path, forced PyTorch path) outputs; counts fused kernel calls in the first."""
    calls = []
    real = fused.run
    monkeypatch.setattr(fused, "run", lambda *a, **k: calls.append(1) or real(*a, **k))
    with torch.no_grad():
        got = model(x)
        monkeypatch.setenv(fused.ENV_VAR, "0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            want = model(x)
        monkeypatch.delenv(fused.ENV_VAR)
    return got, want, len(calls)


@pytest.mark.parametrize(
    ("kind", "scale", "guide", "shape", "levels"),
    [
        ("enhance", 1, "pointwise-curve", (2, 3, 37, 53), 0),
        ("enhance", 1, "conv", (3, 3, 19, 11), 0),
        ("enhance", 1, "pointwise-curve", (2, 3, 29, 41), 2),
        ("sr", 2, "pointwise-curve", (2, 3, 17, 23), 2),
        ("sr", 3, "conv", (2, 3, 13, 9), 1),
        ("sr", 4, "pointwise-curve", (1, 3, 11, 15), 3),
    ],
)
def test_fused_equals_pytorch_path(kind, scale, guide, shape, levels, monkeypatch):
    model = make_model(kind, scale, guide=guide, sr_detail_levels=levels, enhance_detail_levels=levels)
    perturb(model, 0.05)
    model.eval()
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(1)) * 1.2 - 0.1  # some out of [0, 1]
    got, want, calls = _both_paths(model, x, monkeypatch)
    assert got.shape == (shape[0], 3, shape[2] * scale, shape[3] * scale)
    assert calls == (1 if fused.available() else 0)
    assert (got - want).abs().max().item() <= TOL


def test_fallback_warns_once_and_keeps_results(monkeypatch):
    model = make_model()
    perturb(model, 0.05)
    model.eval()
    x = torch.rand(1, 3, 20, 24)
    monkeypatch.setenv(fused.ENV_VAR, "0")
    monkeypatch.setattr(fused, "_warned", False)
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        first, second = model(x), model(x)
    messages = [str(w.message) for w in caught if "fused CPU inference is off" in str(w.message)]
    assert len(messages) == 1 and fused.ENV_VAR in messages[0]
    assert torch.equal(first, second)


def test_not_used_in_training_with_grad_or_while_exporting(monkeypatch):
    model = make_model()
    perturb(model, 0.05)
    monkeypatch.setattr(fused, "run", lambda *a, **k: pytest.fail("fused path taken"))
    x = torch.rand(2, 3, 20, 24)
    model.train()
    model(x).sum().backward()  # training: autograd ops
    model.eval()
    out = model(x)  # grad enabled: PyTorch ops
    assert out.requires_grad
    with torch.no_grad():
        monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
        model(x)
        monkeypatch.undo()
        monkeypatch.setattr(fused, "run", lambda *a, **k: pytest.fail("fused path taken"))
        monkeypatch.setattr(torch.jit, "is_tracing", lambda: True)
        model(x)


def test_jit_trace_records_pytorch_ops(monkeypatch):
    model = make_model().eval()
    monkeypatch.setattr(fused, "run", lambda *a, **k: pytest.fail("fused path taken"))
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, x, check_trace=False)
    assert any(n.kind() == "aten::grid_sampler" for n in traced.graph.nodes())


def test_fused_helpers_match_torch():
    if not fused.available():
        pytest.skip("the fused kernels are not importable here; the model tests cover the fallback")
    import torch.nn.functional as F
    from kdcore_hdrnet.detail import gaussian_levels

    x = torch.rand(2, 3, 9, 14) * 1.4 - 0.2
    for scale in (2, 3, 4):
        want = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)
        assert (fused.bicubic_clamped(x, scale) - want).abs().max().item() <= TOL
    img = torch.rand(2, 3, 27, 18)
    for a, b in zip(fused.gaussian_levels(img, 3), gaussian_levels(img, 3)):
        assert a.shape == b.shape and (a - b).abs().max().item() <= TOL
