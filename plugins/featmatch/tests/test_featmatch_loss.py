"""Tests of the feature-matching loss: distances, adapters, resizing, gradients, params."""

from __future__ import annotations

import kdcore
import pydantic
import pytest
import torch
import torch.nn.functional as F
from kdcore import KdcoreError, ModelOutput, SpecError
from kdcore.interfaces import AdapterFactory
from kdcore_featmatch import (
    Conv1x1Adapter,
    FeatureMatchingLoss,
    IdentityAdapter,
    affinity_distance,
    spatial_affinity,
)
from torch import nn

Params = FeatureMatchingLoss.Params
ADAPTERS = {"conv1x1": Conv1x1Adapter, "identity": IdentityAdapter}


def factory(calls: list | None = None) -> AdapterFactory:
    """What the engine hands to setup: builds conv1x1 / identity, records each call."""

    def build(name, params, cin, cout, where):
        if calls is not None:
            calls.append((name, params, cin, cout, where))
        cls = ADAPTERS[name]
        return cls(cls.Params.model_validate(params or {}), cin, cout)

    return AdapterFactory(build)


def outputs(student: dict, teacher: dict) -> tuple[ModelOutput, ModelOutput]:
    image = torch.zeros(1, 3, 2, 2)
    return ModelOutput(image, features=student), ModelOutput(image, features=teacher)


def shapes(features: dict) -> dict:
    return {k: v.shape for k, v in features.items()}


def built(params: dict, student: dict, teacher: dict, calls: list | None = None):
    loss = FeatureMatchingLoss(Params.model_validate(params))
    loss.setup(shapes(student), shapes(teacher), factory(calls))
    return loss


S = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2)
T = torch.tensor([0.0, 2.0, 5.0, 3.0]).view(1, 1, 2, 2)


@pytest.mark.parametrize(
    ("distance", "expected"),
    [("l1", (1 + 0 + 2 + 1) / 4), ("l2", (1 + 0 + 4 + 1) / 4)],
)
@pytest.mark.parametrize("adapter", ["identity", "conv1x1"])
def test_l1_l2_match_hand_computation(distance: str, expected: float, adapter: str) -> None:
    # conv1x1 starts as the identity when the channel counts are equal
    loss = built(
        {"pairs": [{"student": "f", "teacher": "g", "adapter": adapter}], "distance": distance},
        {"f": S},
        {"g": T},
    )
    value = loss(*outputs({"f": S}, {"g": T}), None)
    assert value.ndim == 0
    assert value.item() == pytest.approx(expected)


def test_normalize_divides_by_the_teachers_mean_magnitude() -> None:
    params = {"pairs": [{"student": "f", "teacher": "g", "adapter": "identity"}], "distance": "l1", "normalize": True}
    loss = built(params, {"f": S}, {"g": T})
    scale = T.abs().mean().item()  # 2.5
    assert loss(*outputs({"f": S}, {"g": T}), None).item() == pytest.approx((1 + 0 + 2 + 1) / 4 / scale)
    # scaling both maps by 100 leaves the normalised term unchanged; the plain one grows 100×
    big = built(params, {"f": 100 * S}, {"g": 100 * T})
    assert big(*outputs({"f": 100 * S}, {"g": 100 * T}), None).item() == pytest.approx(1 / scale)
    # an all-zero teacher map is divided by 1, never by 0
    zero = torch.zeros_like(T)
    plain = built(params, {"f": S}, {"g": zero})
    assert plain(*outputs({"f": S}, {"g": zero}), None).item() == pytest.approx(S.abs().mean().item())


def test_weighted_sum_over_pairs() -> None:
    a = {"f": S, "h": 2 * S}
    b = {"g": T, "k": T}
    loss = built(
        {
            "pairs": [
                {"student": "f", "teacher": "g", "adapter": "identity", "weight": 2.0},
                {"student": "h", "teacher": "k", "adapter": "identity", "weight": 0.5},
            ],
            "distance": "l1",
        },
        a,
        b,
    )
    second = (T - 2 * S).abs().mean().item()
    assert loss(*outputs(a, b), None).item() == pytest.approx(2.0 * 1.0 + 0.5 * second)


def test_different_channels_and_sizes_through_conv1x1_and_resize() -> None:
    torch.manual_seed(0)
    student_net = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.rand(2, 3, 4, 4)
    t = torch.randn(2, 6, 8, 8, requires_grad=True)
    s = student_net(x)
    calls: list = []
    # resize "bilinear": the student's map interpolated to the teacher's H×W (the default, "area",
    # pools the larger map down instead; see test_featmatch_resolution.py)
    params = {"pairs": [{"student": "body", "teacher": "trunk"}], "resize": "bilinear"}
    loss = built(params, {"body": s}, {"trunk": t}, calls)
    # the default adapter for l2 is conv1x1, with channel counts inferred from the shapes
    assert calls == [("conv1x1", None, 4, 6, "params.pairs[0].adapter")]
    adapter = loss.adapters[0]
    assert isinstance(adapter, Conv1x1Adapter)
    assert adapter.conv.weight.shape == (6, 4, 1, 1)
    # the adapters are part of the loss's parameters, so the engine trains them with the student
    assert {id(p) for p in adapter.parameters()} <= {id(p) for p in loss.parameters()}

    image = torch.zeros(2, 3, 8, 8)
    value = loss(ModelOutput(image, {"body": s}), ModelOutput(image, {"trunk": t}), None)
    expected = F.mse_loss(
        F.interpolate(adapter(s), size=(8, 8), mode="bilinear", align_corners=False), t
    )
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)

    value.backward()
    assert student_net.weight.grad is not None and student_net.weight.grad.abs().sum() > 0
    assert adapter.conv.weight.grad is not None and adapter.conv.weight.grad.abs().sum() > 0
    assert t.grad is None


def test_training_the_student_and_adapter_lowers_the_loss() -> None:
    torch.manual_seed(0)
    s = torch.randn(1, 3, 4, 4, requires_grad=True)
    t = torch.randn(1, 5, 4, 4)
    loss = built({"pairs": [{"student": "f", "teacher": "f"}]}, {"f": s}, {"f": t})
    opt = torch.optim.Adam([s, *loss.parameters()], lr=0.05)
    first = None
    for _ in range(30):
        opt.zero_grad()
        value = loss(*outputs({"f": s}, {"f": t}), None)
        first = value.item() if first is None else first
        value.backward()
        opt.step()
    assert value.item() < 0.5 * first


def test_teacher_path_defaults_to_student_path() -> None:
    loss = FeatureMatchingLoss(Params.model_validate({"pairs": [{"student": "body.1"}]}))
    assert loss.student_features() == ["body.1"]
    assert loss.teacher_features() == ["body.1"]
    loss = FeatureMatchingLoss(
        Params.model_validate(
            {"pairs": [{"student": "a", "teacher": "x"}, {"student": "a", "teacher": "y"}]}
        )
    )
    assert loss.student_features() == ["a"]
    assert loss.teacher_features() == ["x", "y"]
    assert loss.uses_teacher() is True and loss.uses_target() is False


def test_adapter_given_with_params() -> None:
    calls: list = []
    s, t = torch.randn(1, 2, 3, 3), torch.randn(1, 3, 3, 3)
    loss = built(
        {"pairs": [{"student": "f", "adapter": {"name": "conv1x1", "params": {"bias": True}}}]},
        {"f": s},
        {"f": t},
        calls,
    )
    assert calls == [("conv1x1", {"bias": True}, 2, 3, "params.pairs[0].adapter")]
    assert loss.adapters[0].conv.bias is not None


# --- spatial affinity ---------------------------------------------------------------------


def test_affinity_is_zero_for_identical_maps() -> None:
    t = torch.randn(2, 5, 6, 6)
    assert affinity_distance(t.clone(), t).item() == pytest.approx(0.0, abs=1e-10)


def test_affinity_hand_computation() -> None:
    # two pixels: student vectors (1, 0) and (0, 1) (cosine 0), teacher both (1, 1) (cosine 1)
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 2, 1, 2)
    t = torch.ones(1, 3, 1, 2)
    assert torch.allclose(spatial_affinity(s)[0], torch.eye(2))
    # the two off-diagonal entries differ by 1, out of 4 entries
    assert affinity_distance(s, t).item() == pytest.approx(2 / 4)


def test_affinity_is_invariant_to_the_channel_count() -> None:
    torch.manual_seed(0)
    t = torch.randn(2, 8, 5, 5)
    q, _ = torch.linalg.qr(torch.randn(24, 8))  # 24×8, orthonormal columns
    s = torch.einsum("oc,bchw->bohw", q, t)  # the same map, seen through 24 channels
    assert s.shape == (2, 24, 5, 5)
    assert affinity_distance(s, t).item() == pytest.approx(0.0, abs=1e-8)
    assert affinity_distance(torch.cat([t, t, t], dim=1), t).item() == pytest.approx(0.0, abs=1e-8)
    assert affinity_distance(torch.randn(2, 24, 5, 5), t).item() > 1e-3


def test_affinity_downsamples_large_maps() -> None:
    x = torch.randn(1, 2, 64, 40)
    assert spatial_affinity(x).shape == (1, 32 * 32, 32 * 32)
    assert spatial_affinity(x, max_side=8).shape == (1, 64, 64)
    assert spatial_affinity(torch.randn(1, 2, 4, 6)).shape == (1, 24, 24)


def test_affinity_loss_needs_no_adapter_for_different_channels() -> None:
    torch.manual_seed(0)
    s = torch.randn(1, 3, 4, 4, requires_grad=True)
    t = torch.randn(1, 7, 8, 8, requires_grad=True)
    calls: list = []
    loss = built(
        {"pairs": [{"student": "f", "teacher": "g"}], "distance": "affinity", "affinity_size": 4,
         "resize": "bilinear"},
        {"f": s},
        {"g": t},
        calls,
    )
    assert calls == []  # no adapter by default for the affinity distance
    value = loss(*outputs({"f": s}, {"g": t}), None)
    resized = F.interpolate(s, size=(8, 8), mode="bilinear", align_corners=False)
    assert value.item() == pytest.approx(affinity_distance(resized, t, 4).item(), rel=1e-6)
    value.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_affinity_with_an_explicit_adapter_uses_it() -> None:
    s, t = torch.randn(1, 3, 4, 4), torch.randn(1, 7, 4, 4)
    calls: list = []
    built(
        {"pairs": [{"student": "f", "teacher": "g", "adapter": "conv1x1"}], "distance": "affinity"},
        {"f": s},
        {"g": t},
        calls,
    )
    assert [c[:4] for c in calls] == [("conv1x1", None, 3, 7)]


# --- errors -------------------------------------------------------------------------------


def test_needs_a_teacher() -> None:
    loss = built({"pairs": [{"student": "f"}]}, {"f": S}, {"f": T})
    with pytest.raises(KdcoreError, match="feature-matching needs a teacher"):
        loss(ModelOutput(torch.zeros(1, 3, 2, 2), {"f": S}), None, torch.zeros(1, 3, 2, 2))


def test_forward_before_setup_is_an_error() -> None:
    loss = FeatureMatchingLoss(Params.model_validate({"pairs": [{"student": "f"}]}))
    with pytest.raises(KdcoreError, match="setup"):
        loss(*outputs({"f": S}, {"f": T}), None)


def test_identity_adapter_with_mismatched_channels_fails_at_setup() -> None:
    with pytest.raises(KdcoreError, match=r"2 student channels onto 5 teacher channels.*conv1x1"):
        built(
            {"pairs": [{"student": "f", "adapter": "identity"}]},
            {"f": torch.randn(1, 2, 3, 3)},
            {"f": torch.randn(1, 5, 3, 3)},
        )


def test_setup_names_missing_or_non_map_features() -> None:
    loss = FeatureMatchingLoss(Params.model_validate({"pairs": [{"student": "f", "teacher": "g"}]}))
    with pytest.raises(SpecError, match=r"pairs\[0\].student.*'f'"):
        loss.setup({}, {"g": T.shape}, factory())
    with pytest.raises(SpecError, match=r"pairs\[0\].teacher.*'g'"):
        loss.setup({"f": S.shape}, {}, factory())
    with pytest.raises(SpecError, match=r"B×C×H×W"):
        loss.setup({"f": torch.Size([1, 4])}, {"g": T.shape}, factory())


def test_missing_captured_feature_is_an_error() -> None:
    loss = built({"pairs": [{"student": "f"}]}, {"f": S}, {"f": T})
    with pytest.raises(KdcoreError, match="teacher's feature map 'f' was not captured"):
        loss(*outputs({"f": S}, {}), None)


# --- params -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({}, "pairs\n  Field required"),
        ({"pairs": []}, "pairs is empty"),
        ({"pairs": [{"student": "f"}], "distance": "cosine"}, "unknown distance 'cosine'"),
        ({"pairs": [{"student": "f"}], "distances": "l1"}, "Extra inputs are not permitted"),
        ({"pairs": [{"student": "f", "layer": "x"}]}, "Extra inputs are not permitted"),
        ({"pairs": [{"teacher": "g"}]}, "student\n  Field required"),
        ({"pairs": [{"student": ""}]}, "at least 1 character"),
        ({"pairs": [{"student": "f", "weight": -1}]}, "weight must be a finite number >= 0"),
        ({"pairs": [{"student": "f", "adapter": ""}]}, "adapter name is empty"),
        (
            {"pairs": [{"student": "f", "adapter": {"name": "conv1x1", "bias": True}}]},
            "Extra inputs",
        ),
        ({"pairs": [{"student": "f"}], "affinity_size": 0}, "greater than or equal to 1"),
    ],
)
def test_params_reject_bad_values(params: dict, fragment: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=fragment):
        Params.model_validate(params)


def test_params_defaults_and_schema() -> None:
    params = Params.model_validate({"pairs": [{"student": "f"}]})
    assert params.distance == "l2"
    assert params.affinity_size == 32
    pair = params.pairs[0]
    assert (pair.teacher, pair.adapter, pair.weight) == (None, None, 1.0)
    schema = Params.model_json_schema()
    assert schema["additionalProperties"] is False
    assert schema["properties"]["pairs"]["minItems"] == 1
    assert set(schema["properties"]["distance"]["enum"]) == {"l1", "l2", "affinity"}


def test_setup_checks_the_channels_a_third_party_adapter_produces() -> None:
    class Passthrough(kdcore.Adapter):  # ignores out_channels: a broken adapter
        def forward(self, x):
            return x

    class Crashing(kdcore.Adapter):
        def forward(self, x):
            raise RuntimeError("boom")

    def build_with(cls):
        return AdapterFactory(lambda name, params, cin, cout, where: cls(None, cin, cout))

    loss = FeatureMatchingLoss(Params.model_validate({"pairs": [{"student": "f"}]}))
    student, teacher = {"f": torch.Size([1, 2, 3, 3])}, {"f": torch.Size([1, 4, 3, 3])}
    with pytest.raises(SpecError, match=r"pairs\[0\].adapter.*2 channels.*teacher's has 4"):
        loss.setup(student, teacher, build_with(Passthrough))
    with pytest.raises(SpecError, match=r"pairs\[0\].adapter.*\(1, 2, 3, 3\).*boom"):
        loss.setup(student, teacher, build_with(Crashing))
