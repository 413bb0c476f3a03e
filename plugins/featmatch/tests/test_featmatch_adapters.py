"""Tests of the conv1x1 and identity adapters."""

from __future__ import annotations

import pydantic
import pytest
import torch
from kdcore import KdcoreError, SpecError
from kdcore_featmatch import Conv1x1Adapter, IdentityAdapter


def test_conv1x1_starts_as_identity_for_equal_channels() -> None:
    adapter = Conv1x1Adapter(None, 6, 6)
    x = torch.randn(2, 6, 5, 4)
    assert torch.allclose(adapter(x), x)
    assert adapter.conv.bias is None


@pytest.mark.parametrize(("cin", "cout"), [(4, 9), (9, 4)])
def test_conv1x1_starts_orthogonal_for_different_channels(cin: int, cout: int) -> None:
    torch.manual_seed(0)
    adapter = Conv1x1Adapter(Conv1x1Adapter.Params(bias=True), cin, cout)
    w = adapter.conv.weight.detach().view(cout, cin)
    gram = w.T @ w if cin < cout else w @ w.T
    assert torch.allclose(gram, torch.eye(min(cin, cout)), atol=1e-5)
    assert adapter.conv.bias is not None and adapter.conv.bias.abs().sum() == 0
    x = torch.randn(2, cin, 3, 3)
    y = adapter(x)
    assert y.shape == (2, cout, 3, 3)
    if cin < cout:  # each pixel's feature vector keeps its norm
        assert torch.allclose(y.norm(dim=1), x.norm(dim=1), atol=1e-5)


def test_conv1x1_gradients() -> None:
    adapter = Conv1x1Adapter(None, 3, 5)
    x = torch.randn(1, 3, 2, 2, requires_grad=True)
    adapter(x).square().sum().backward()
    assert adapter.conv.weight.grad is not None and x.grad is not None


def test_conv1x1_rejects_wrong_input_and_bad_channel_counts() -> None:
    adapter = Conv1x1Adapter(None, 3, 5)
    with pytest.raises(KdcoreError, match=r"B×3×H×W.*\(1, 4, 2, 2\)"):
        adapter(torch.randn(1, 4, 2, 2))
    with pytest.raises(SpecError, match="in_channels must be a positive integer"):
        Conv1x1Adapter(None, 0, 5)
    with pytest.raises(pydantic.ValidationError, match="Extra inputs are not permitted"):
        Conv1x1Adapter.Params.model_validate({"bias": True, "groups": 2})


def test_identity_passes_maps_through() -> None:
    adapter = IdentityAdapter(None, 4, 4)
    x = torch.randn(1, 4, 3, 3)
    assert adapter(x) is x
    assert list(adapter.parameters()) == []


def test_identity_refuses_mismatched_channels() -> None:
    with pytest.raises(KdcoreError) as info:
        IdentityAdapter(None, 8, 16)
    message = str(info.value)
    assert "8" in message and "16" in message and "conv1x1" in message


def test_identity_takes_no_params() -> None:
    IdentityAdapter.Params.model_validate({})
    with pytest.raises(pydantic.ValidationError, match="Extra inputs are not permitted"):
        IdentityAdapter.Params.model_validate({"scale": 2})
