"""Tests of the relative-difference loss: values, fallback, gradients, features, params."""

from __future__ import annotations

import math

import pydantic
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kdcore import KdcoreError, ModelOutput, SpecError
from kdcore.interfaces import AdapterFactory
from kdcore_reldiff import RelativeDifferenceLoss, channel_scale, relative_difference

Params = RelativeDifferenceLoss.Params


def _no_adapters() -> AdapterFactory:
    def build(name, params, cin, cout, where):  # pragma: no cover - must not be called
        raise AssertionError("relative-difference creates no adapters")

    return AdapterFactory(build)


S = torch.tensor([1.0, 0.5, 0.0, 2.0]).view(1, 1, 2, 2)
T = torch.tensor([0.5, 0.5, 1.0, 1.0]).view(1, 1, 2, 2)


def test_value_matches_hand_computation() -> None:
    loss = RelativeDifferenceLoss(Params(eps=0.01))
    # |S−T| = 0.5, 0, 1, 1; |T| + eps = 0.51, 0.51, 1.01, 1.01
    expected = (0.5 / 0.51 + 0.0 + 1 / 1.01 + 1 / 1.01) / 4
    value = loss(ModelOutput(image=S), ModelOutput(image=T), None)
    assert value.ndim == 0
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_symmetric_value_matches_hand_computation() -> None:
    loss = RelativeDifferenceLoss(Params(eps=0.01, symmetric=True))
    # |S| + |T| + eps = 1.51, 1.01, 1.01, 3.01
    expected = (0.5 / 1.51 + 0.0 + 1 / 1.01 + 1 / 3.01) / 4
    value = loss(ModelOutput(image=S), ModelOutput(image=T), None)
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_default_params() -> None:
    loss = RelativeDifferenceLoss()
    assert loss.params.eps == 0.01
    assert loss.params.symmetric is False
    assert loss.params.compare == "image"
    assert loss.uses_teacher() is True
    assert loss.uses_target() is False
    assert loss.student_features() == [] and loss.teacher_features() == []


def test_zero_for_identical_images() -> None:
    x = torch.rand(2, 3, 5, 5)
    assert RelativeDifferenceLoss()(ModelOutput(x), ModelOutput(x.clone()), None).item() == 0.0


def test_falls_back_to_target_without_teacher() -> None:
    loss = RelativeDifferenceLoss(Params(eps=0.01))
    with_target = loss(ModelOutput(image=S), None, T)
    assert with_target.item() == pytest.approx(relative_difference(S, T, 0.01).item())
    # the teacher is preferred when both are there
    with_both = loss(ModelOutput(image=S), ModelOutput(image=S.clone()), T)
    assert with_both.item() == 0.0


def test_needs_a_teacher_or_a_target() -> None:
    with pytest.raises(KdcoreError, match="neither a teacher nor a target"):
        RelativeDifferenceLoss()(ModelOutput(image=S), None, None)


def test_image_shape_mismatch_is_an_error() -> None:
    with pytest.raises(KdcoreError, match=r"\(1, 1, 2, 2\).*\(1, 1, 4, 4\)"):
        RelativeDifferenceLoss()(ModelOutput(image=S), ModelOutput(torch.rand(1, 1, 4, 4)), None)


def test_gradients_reach_student_not_teacher() -> None:
    torch.manual_seed(0)
    student_net = torch.nn.Conv2d(3, 3, 3, padding=1)
    x = torch.rand(2, 3, 6, 6)
    teacher_image = torch.rand(2, 3, 6, 6, requires_grad=True)
    for symmetric in (False, True):
        student_net.zero_grad()
        loss = RelativeDifferenceLoss(Params(symmetric=symmetric))
        value = loss(ModelOutput(student_net(x)), ModelOutput(teacher_image), None)
        value.backward()
        assert student_net.weight.grad is not None
        assert student_net.weight.grad.abs().sum() > 0
        assert teacher_image.grad is None


# --- feature maps -------------------------------------------------------------------------


def test_feature_paths_are_requested_from_both_models() -> None:
    loss = RelativeDifferenceLoss(Params(compare=["body.0", "tail"]))
    assert loss.student_features() == ["body.0", "tail"]
    assert loss.teacher_features() == ["body.0", "tail"]


def test_channel_scale_is_the_teachers_per_channel_mean_abs() -> None:
    t = torch.tensor([[[[2.0, -2.0], [2.0, -2.0]], [[1.0, 3.0], [0.0, 0.0]]]])  # 1×2×2×2
    scale = channel_scale(t)
    assert scale.shape == (1, 2, 1, 1)
    assert scale.flatten().tolist() == pytest.approx([2.0, 1.0])


def test_channel_scale_of_dead_channels_and_zero_maps() -> None:
    t = torch.zeros(1, 2, 2, 2)
    t[0, 0] = 4.0  # channel 1 is dead: it takes the whole map's mean |value| (2.0)
    assert channel_scale(t).flatten().tolist() == pytest.approx([4.0, 2.0])
    assert channel_scale(torch.zeros(1, 2, 2, 2)).flatten().tolist() == [1.0, 1.0]
    assert channel_scale(torch.full((2, 4), -3.0)).flatten().tolist() == [3.0, 3.0]


def test_feature_value_matches_hand_computation() -> None:
    t = torch.tensor([[[[2.0, -2.0], [2.0, -2.0]], [[1.0, 3.0], [0.0, 0.0]]]])
    s = torch.tensor([[[[3.0, -2.0], [2.0, 0.0]], [[1.0, 1.0], [1.0, 0.0]]]])
    eps = 0.1
    # channel 0, scale 2: |S−T|/2 = .5, 0, 0, 1; |T|/2 + eps = 1.1 everywhere
    # channel 1, scale 1: |S−T| = 0, 2, 1, 0; |T| + eps = 1.1, 3.1, 0.1, 0.1
    expected = (0.5 / 1.1 + 1 / 1.1 + 2 / 3.1 + 1 / 0.1) / 8
    loss = RelativeDifferenceLoss(Params(eps=eps, compare=["body"]))
    image = torch.zeros(1, 3, 2, 2)
    value = loss(
        ModelOutput(image, features={"body": s}), ModelOutput(image, features={"body": t}), None
    )
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_features_are_scale_invariant_and_averaged_over_paths() -> None:
    torch.manual_seed(1)
    s, t = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    image = torch.zeros(2, 3, 3, 3)
    loss = RelativeDifferenceLoss(Params(compare=["a", "b"]))
    base = loss(
        ModelOutput(image, features={"a": s, "b": s}),
        ModelOutput(image, features={"a": t, "b": t}),
        None,
    )
    scaled = loss(
        ModelOutput(image, features={"a": s, "b": 1000 * s}),
        ModelOutput(image, features={"a": t, "b": 1000 * t}),
        None,
    )
    single = RelativeDifferenceLoss(Params(compare=["a"]))(
        ModelOutput(image, features={"a": s}), ModelOutput(image, features={"a": t}), None
    )
    assert scaled.item() == pytest.approx(base.item(), rel=1e-5)
    assert base.item() == pytest.approx(single.item(), rel=1e-6)


def test_feature_gradients_reach_student_not_teacher() -> None:
    s = torch.randn(1, 2, 3, 3, requires_grad=True)
    t = torch.randn(1, 2, 3, 3, requires_grad=True)
    image = torch.zeros(1, 3, 3, 3)
    loss = RelativeDifferenceLoss(Params(compare=["f"]))
    value = loss(ModelOutput(image, features={"f": s}), ModelOutput(image, features={"f": t}), None)
    value.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_features_without_teacher_are_an_error() -> None:
    loss = RelativeDifferenceLoss(Params(compare=["f"]))
    student = ModelOutput(torch.zeros(1, 3, 2, 2), features={"f": torch.ones(1, 2, 2, 2)})
    with pytest.raises(KdcoreError, match="needs a teacher"):
        loss(student, None, torch.zeros(1, 3, 2, 2))


def test_feature_shape_mismatch_names_path_shapes_and_feature_matching() -> None:
    loss = RelativeDifferenceLoss(Params(compare=["body.1"]))
    with pytest.raises(SpecError) as info:
        loss.setup(
            {"body.1": torch.Size([1, 8, 4, 4])},
            {"body.1": torch.Size([1, 16, 4, 4])},
            _no_adapters(),
        )
    message = str(info.value)
    assert "body.1" in message and "(1, 8, 4, 4)" in message and "(1, 16, 4, 4)" in message
    assert "feature-matching" in message

    image = torch.zeros(1, 3, 4, 4)
    with pytest.raises(KdcoreError, match=r"'body.1'.*\(1, 8, 4, 4\).*\(1, 8, 2, 2\)"):
        loss(
            ModelOutput(image, features={"body.1": torch.ones(1, 8, 4, 4)}),
            ModelOutput(image, features={"body.1": torch.ones(1, 8, 2, 2)}),
            None,
        )


def test_setup_accepts_equal_shapes_and_reports_missing_maps() -> None:
    loss = RelativeDifferenceLoss(Params(compare=["f"]))
    shape = {"f": torch.Size([2, 4, 3, 3])}
    loss.setup(shape, dict(shape), _no_adapters())
    with pytest.raises(SpecError, match=r"compare\[0\].*teacher.*'f'"):
        loss.setup(shape, {}, _no_adapters())


def test_missing_captured_feature_is_an_error() -> None:
    loss = RelativeDifferenceLoss(Params(compare=["f"]))
    image = torch.zeros(1, 3, 2, 2)
    with pytest.raises(KdcoreError, match="student's feature map 'f' was not captured"):
        loss(ModelOutput(image), ModelOutput(image, features={"f": image}), None)


def test_dead_teacher_channel_keeps_the_loss_finite() -> None:
    t = torch.zeros(1, 2, 3, 3)
    t[:, 0] = 1.0
    s = torch.rand(1, 2, 3, 3)
    image = torch.zeros(1, 3, 3, 3)
    value = RelativeDifferenceLoss(Params(compare=["f"]))(
        ModelOutput(image, features={"f": s}), ModelOutput(image, features={"f": t}), None
    )
    assert math.isfinite(value.item())


# --- params -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"eps": 0}, "eps must be a finite number > 0"),
        ({"eps": -0.1}, "eps must be a finite number > 0"),
        ({"eps": float("inf")}, "eps must be a finite number > 0"),
        ({"eps": "small"}, "valid number"),
        ({"compare": "features"}, "compare must be 'image' or a list"),
        ({"compare": []}, "at least one"),
        ({"compare": ["a", ""]}, r"compare\[1\] must be a non-empty"),
        ({"compare": ["a", "a"]}, "more than once"),
        ({"symmetric": "sometimes"}, "valid boolean"),
        ({"epsilon": 0.1}, "Extra inputs are not permitted"),
    ],
)
def test_params_reject_bad_values(params: dict, fragment: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=fragment):
        Params.model_validate(params)


def test_params_schema_states_the_bounds() -> None:
    schema = Params.model_json_schema()
    assert schema["additionalProperties"] is False
    assert schema["properties"]["eps"]["exclusiveMinimum"] == 0
    for field in ("eps", "symmetric", "compare"):
        assert schema["properties"][field]["description"]


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    eps=st.floats(1e-4, 1.0),
)
def test_symmetric_never_exceeds_plain_and_both_vanish_on_equality(seed: int, eps: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    s, t = torch.randn(1, 3, 4, 4, generator=gen), torch.randn(1, 3, 4, 4, generator=gen)
    plain = relative_difference(s, t, eps)
    symmetric = relative_difference(s, t, eps, symmetric=True)
    assert 0 <= symmetric.item() <= plain.item() + 1e-6
    assert relative_difference(t, t, eps).item() == 0.0
