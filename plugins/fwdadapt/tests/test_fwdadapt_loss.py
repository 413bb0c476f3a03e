"""The forward-adaptation loss on real HDRNet / Deformable-HDRNet models and on tiny modules."""

from __future__ import annotations

import kdcore
import pytest
import torch
from kdcore import KdcoreError, ModelOutput, SpecError, Task
from kdcore_fwdadapt import ForwardAdaptationLoss, match_parameters, parameter_distance
from torch import nn

TASK = Task(kind="sr", scale=2)
SMALL = {"net_input_size": 32, "spatial_bins": 2, "luma_bins": 4}
NO_OUTPUT = (ModelOutput(image=torch.zeros(1, 3, 2, 2)), None, None)


def models(seed: int = 0) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    student = kdcore.create("student", "deformable-hdrnet", SMALL, TASK)
    teacher = kdcore.create("teacher", "hdrnet", SMALL, TASK).eval().requires_grad_(False)
    return student, teacher


def loss_with(params: dict | None = None) -> ForwardAdaptationLoss:
    return kdcore.create("loss", "forward-adaptation", params)


def test_every_hdrnet_tensor_has_its_deformable_counterpart() -> None:
    student, teacher = models()
    match = match_parameters(student, teacher)
    t_names = [n for n, _ in teacher.named_parameters()]
    s_names = [n for n, _ in student.named_parameters()]
    assert sorted(t for _, t in match.pairs) == sorted(t_names)  # every teacher tensor is matched
    assert all(s == t for s, t in match.pairs)
    assert match.selected == len(s_names)
    assert match.other_shape == []
    # the deformable extras, and only they, have no counterpart
    assert set(match.no_counterpart) == set(s_names) - set(t_names)
    assert match.no_counterpart and all("offset" in n for n in match.no_counterpart)


def test_bind_describes_the_match() -> None:
    student, teacher = models()
    loss = loss_with()
    note = loss.bind(student, [teacher])
    n_s = sum(1 for _ in student.parameters())
    n_t = sum(1 for _ in teacher.parameters())
    assert note.startswith(f"forward-adaptation: {n_t} of {n_s} student tensors match the teacher's")
    assert f"{n_s - n_t} without a counterpart" in note
    assert "\n" not in note


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_value_is_the_mean_over_tensors_of_the_size_normalised_distance(norm) -> None:
    student, teacher = models()
    loss = loss_with({"norm": norm})
    loss.bind(student, [teacher])
    t = dict(teacher.named_parameters())
    per_tensor = []
    for name, p in student.named_parameters():
        if name in t:
            d = (p.detach() - t[name]).abs()
            per_tensor.append((d if norm == "l1" else d**2).mean())
    expected = torch.stack(per_tensor).mean()
    assert loss(*NO_OUTPUT).item() == pytest.approx(expected.item(), rel=1e-6)


def test_zero_when_the_student_holds_the_teachers_weights() -> None:
    student, teacher = models()
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    assert not unexpected and missing
    loss = loss_with({"norm": "l2"})
    loss.bind(student, [teacher])
    value = loss(*NO_OUTPUT)
    assert value.item() == 0.0
    value.backward()  # finite (zero) gradient at the minimum, even for l2
    assert all(torch.isfinite(p.grad).all() for p in student.parameters() if p.grad is not None)


def test_gradient_reaches_the_live_student_and_never_the_teacher() -> None:
    student, teacher = models()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    loss = loss_with()
    loss.bind(student, [teacher])
    first = loss(*NO_OUTPUT)
    first.backward()
    matched = {s for s, _ in loss.match.pairs}
    for name, p in student.named_parameters():
        if name in matched:
            # d/dθ mean_k mean|θ_k − τ_k| = sign(θ − τ) / (numel · number of tensors)
            t = teacher.get_parameter(name)
            expected = torch.sign(p.detach() - t) / (p.numel() * len(matched))
            assert torch.allclose(p.grad, expected), name
        else:
            assert p.grad is None, name  # the deformable extras learn freely
    assert all(p.grad is None for p in teacher.parameters())
    with torch.no_grad():  # one plain gradient step (torch.optim would import torch._dynamo: slow)
        for p in student.parameters():
            if p.grad is not None:
                p -= 1e-3 * p.grad
    second = loss(*NO_OUTPUT)
    assert second.item() < first.item()  # the loss reads the updated (live) tensors, not copies
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_the_models_are_not_part_of_the_loss() -> None:
    student, teacher = models()
    loss = loss_with()
    loss.bind(student, [teacher])
    assert list(loss.parameters()) == [] and loss.state_dict() == {}
    assert list(loss.children()) == []


def test_parameters_are_looked_up_when_forward_runs() -> None:
    # moving the student after bind (as the engine may) still reads the moved tensors
    student, teacher = models()
    loss = loss_with()
    loss.bind(student, [teacher])
    student.double()
    value = loss(*NO_OUTPUT)
    assert value.dtype == torch.float64
    value.backward()
    assert student.get_parameter(loss.match.pairs[0][0]).grad is not None


def test_include_and_exclude_select_student_tensors() -> None:
    student, teacher = models()
    all_pairs = match_parameters(student, teacher).pairs
    no_bias = match_parameters(student, teacher, exclude=["*.bias"]).pairs
    assert no_bias and all(not s.endswith(".bias") for s, _ in no_bias)
    assert len(no_bias) == sum(1 for s, _ in all_pairs if not s.endswith(".bias"))
    lowres = match_parameters(student, teacher, include=["lowres.*"], exclude=["*.bias"])
    assert lowres.pairs and all(s.startswith("lowres.") and not s.endswith(".bias") for s, _ in lowres.pairs)


class Wrapped(nn.Module):
    """A teacher that keeps its network one level deeper (as wrappers of other libraries do)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.model = inner


def test_rename_maps_student_names_onto_the_teachers() -> None:
    student, teacher = models()
    wrapped = Wrapped(teacher)
    loss = loss_with()
    with pytest.raises(SpecError, match="names its tensors differently.*params.rename"):
        loss.bind(student, [wrapped])
    loss = loss_with({"rename": {r"(.*)": r"model.\1"}})
    note = loss.bind(student, [wrapped])
    n_t = sum(1 for _ in teacher.parameters())
    assert note.startswith(f"forward-adaptation: {n_t} of ")
    assert all(t == f"model.{s}" for s, t in loss.match.pairs)
    # the first pattern that matches wins; other names stay as they are
    tiny_s = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    tiny_t = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    rename = {r"0\.(.*)": r"1.\1", r"0\.weight": "0.weight"}
    assert match_parameters(tiny_s, tiny_t, rename=rename).pairs == [
        ("0.weight", "1.weight"), ("0.bias", "1.bias"), ("1.weight", "1.weight"), ("1.bias", "1.bias"),
    ]


def test_a_shape_mismatch_is_reported_and_left_out() -> None:
    torch.manual_seed(0)
    student = kdcore.create("student", "deformable-hdrnet", SMALL, TASK)
    wide = kdcore.create("teacher", "hdrnet", {**SMALL, "channel_multiplier": 2}, TASK)
    match = match_parameters(student, wide)
    assert match.other_shape and match.pairs
    assert all(student.get_parameter(s).shape == wide.get_parameter(t).shape for s, t in match.pairs)
    note = loss_with().bind(student, [wide])
    assert f"{len(match.other_shape)} of another shape" in note


def test_nothing_matching_is_a_spec_error_naming_both_models() -> None:
    student, teacher = models()
    with pytest.raises(SpecError) as err:
        loss_with({"include": ["slice_offsets.*"]}).bind(student, [teacher])
    message = str(err.value)
    assert "no parameter of the student" in message
    assert type(student).__name__ in message and type(teacher).__name__ in message
    with pytest.raises(SpecError, match="leave none of the student's parameters"):
        loss_with({"include": ["nothing.*"]}).bind(student, [teacher])
    with pytest.raises(SpecError, match="no parameters"):
        loss_with().bind(student, [kdcore.create("teacher", "bicubic", None, TASK)])
    with pytest.raises(SpecError, match=r"1 name\(s\) match but not in shape, e.g. 'weight' is 3×2"):
        loss_with({"exclude": ["bias"]}).bind(nn.Linear(2, 3), [nn.Linear(2, 4)])


def test_teacher_index_picks_an_ensemble_member() -> None:
    student, teacher = models()
    other = Wrapped(teacher)
    loss = loss_with({"teacher": 1, "rename": {r"(.*)": r"model.\1"}})
    assert loss.bind(student, [teacher, other])
    with pytest.raises(SpecError, match=r"^params\.teacher: 2 .* 2 teacher\(s\)"):
        loss_with({"teacher": 2}).bind(student, [teacher, other])


def test_forward_before_bind_says_what_is_missing() -> None:
    with pytest.raises(KdcoreError, match="bind"):
        loss_with()(*NO_OUTPUT)


def test_needs_a_teacher_but_not_its_output_nor_the_target() -> None:
    loss = loss_with()
    assert loss.requires_teacher() is True
    assert loss.uses_teacher() is False  # the engine need not run the teacher every step
    assert loss.uses_target() is False


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"norm": "l3"}, "unknown norm 'l3'"),
        ({"rename": {"(": "x"}}, "not a regular expression"),
        ({"rename": {"a(.*)": r"b\2"}}, "refers to group 2"),
        ({"include": []}, "include"),
        ({"include": [""]}, "empty"),
        ({"teacher": -1}, "teacher"),
        ({"weights": 1}, "weights"),
    ],
)
def test_bad_params_are_spec_errors(params, message) -> None:
    with pytest.raises(SpecError, match=message):
        loss_with(params)


def test_parameter_distance_needs_pairs() -> None:
    with pytest.raises(KdcoreError, match="at least one"):
        parameter_distance([], [])
