"""Feature maps of different H×W: the larger is pooled down to the smaller (or as params.resize says)."""

from __future__ import annotations

import pydantic
import pytest
import torch
import torch.nn.functional as F
from kdcore import KdcoreError, ModelOutput, SpecError
from kdcore.interfaces import AdapterFactory
from kdcore_featmatch import Conv1x1Adapter, FeatureMatchingLoss, IdentityAdapter, match_resolution

ADAPTERS = {"conv1x1": Conv1x1Adapter, "identity": IdentityAdapter}


def factory(calls: list | None = None) -> AdapterFactory:
    def build(name, params, cin, cout, where):
        if calls is not None:
            calls.append((name, cin, cout))
        cls = ADAPTERS[name]
        return cls(cls.Params.model_validate(params or {}), cin, cout)

    return AdapterFactory(build)


def built(params: dict, s: torch.Tensor, t: torch.Tensor, calls: list | None = None):
    loss = FeatureMatchingLoss(FeatureMatchingLoss.Params.model_validate(params))
    loss.setup({"f": s.shape}, {"g": t.shape}, factory(calls))
    return loss


def value(loss: FeatureMatchingLoss, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    image = torch.zeros(s.shape[0], 3, 2, 2)
    return loss(ModelOutput(image, {"f": s}), ModelOutput(image, {"g": t}), None)


PAIR = [{"student": "f", "teacher": "g", "adapter": "identity"}]


def test_area_is_the_default() -> None:
    assert FeatureMatchingLoss.Params.model_validate({"pairs": PAIR}).resize == "area"


def test_student_larger_by_an_integer_factor_is_pooled_to_the_teacher() -> None:
    torch.manual_seed(0)
    s = torch.randn(2, 3, 8, 8, requires_grad=True)
    t = torch.randn(2, 3, 4, 4)
    loss = built({"pairs": PAIR, "distance": "l1"}, s, t)
    v = value(loss, s, t)
    # area pooling by 2: each teacher pixel against the mean of a 2×2 student block
    blocks = s.detach().unfold(2, 2, 2).unfold(3, 2, 2).mean(dim=(-1, -2))
    assert v.item() == pytest.approx((blocks - t).abs().mean().item(), rel=1e-6)
    v.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_teacher_larger_is_pooled_to_the_student_not_the_student_upsampled() -> None:
    torch.manual_seed(0)
    s = torch.randn(1, 2, 16, 16, requires_grad=True)  # HDRNet's grid: 16×16
    t = torch.randn(1, 2, 48, 48, requires_grad=True)  # a teacher at the LR resolution
    loss = built({"pairs": PAIR}, s, t)
    v = value(loss, s, t)
    assert v.item() == pytest.approx(F.mse_loss(s, F.adaptive_avg_pool2d(t, 16)).item(), rel=1e-6)
    v.backward()
    assert s.grad is not None and t.grad is None  # the teacher's map is detached


@pytest.mark.parametrize(
    ("s_size", "t_size", "common"),
    [((12, 12), (8, 8), (8, 8)), ((7, 10), (5, 5), (5, 5)), ((6, 9), (9, 6), (6, 6))],
)
def test_non_integer_factors_and_mixed_sides(s_size, t_size, common) -> None:
    torch.manual_seed(0)
    s = torch.randn(1, 4, *s_size)
    t = torch.randn(1, 4, *t_size)
    a, b = match_resolution(s, t, "area")
    assert tuple(a.shape[-2:]) == common and tuple(b.shape[-2:]) == common
    # area pooling keeps the mean of a map (up to overlapping windows at non-integer factors)
    if s_size[0] % common[0] == 0 and s_size[1] % common[1] == 0:
        assert a.mean().item() == pytest.approx(s.mean().item(), abs=1e-5)
    loss = built({"pairs": PAIR}, s, t)
    assert value(loss, s, t).item() == pytest.approx(F.mse_loss(a, b).item(), rel=1e-6)


def test_channels_are_still_inferred_across_resolutions() -> None:
    torch.manual_seed(0)
    s = torch.randn(2, 4, 12, 12, requires_grad=True)
    t = torch.randn(2, 6, 8, 8)
    calls: list = []
    loss = built({"pairs": [{"student": "f", "teacher": "g"}]}, s, t, calls)
    assert calls == [("conv1x1", 4, 6)]
    v = value(loss, s, t)
    expected = F.mse_loss(F.adaptive_avg_pool2d(loss.adapters[0](s), (8, 8)), t)
    assert v.item() == pytest.approx(expected.item(), rel=1e-6)


def test_equal_sizes_are_left_alone() -> None:
    s, t = torch.randn(1, 2, 5, 5), torch.randn(1, 2, 5, 5)
    for mode in ("area", "bilinear", "error"):
        a, b = match_resolution(s, t, mode)
        assert a is s and b is t


def test_bilinear_interpolates_the_student_to_the_teacher() -> None:
    torch.manual_seed(0)
    s, t = torch.randn(1, 2, 4, 4), torch.randn(1, 2, 10, 10)
    a, b = match_resolution(s, t, "bilinear")
    assert b is t
    assert torch.allclose(a, F.interpolate(s, size=(10, 10), mode="bilinear", align_corners=False))


def test_error_mode_refuses_at_setup_naming_the_pair_and_sizes() -> None:
    s, t = torch.randn(1, 2, 8, 8), torch.randn(1, 2, 4, 4)
    with pytest.raises(SpecError, match=r"params\.pairs\[0\].*'f' is 8×8.*'g' is 4×4.*resize"):
        built({"pairs": PAIR, "resize": "error"}, s, t)
    # equal sizes pass in error mode
    built({"pairs": PAIR, "resize": "error"}, s, torch.randn(1, 2, 8, 8))


def test_error_mode_refuses_a_runtime_mismatch() -> None:
    loss = built({"pairs": PAIR, "resize": "error"}, torch.randn(1, 2, 8, 8), torch.randn(1, 2, 8, 8))
    with pytest.raises(KdcoreError, match=r"params\.pairs\[0\].*8×8.*6×6"):
        value(loss, torch.randn(1, 2, 8, 8), torch.randn(1, 2, 6, 6))


def test_unknown_resize_is_a_params_error() -> None:
    with pytest.raises(pydantic.ValidationError, match="unknown resize 'nearest'"):
        FeatureMatchingLoss.Params.model_validate({"pairs": PAIR, "resize": "nearest"})
