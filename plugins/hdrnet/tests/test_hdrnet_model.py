"""HDRNet: sizes, shapes, equality with the straightforward path, training behaviour."""

from __future__ import annotations

import kdcore
import pydantic
import pytest
import torch
import torch.nn.functional as F
from torchmetrics.functional.image import peak_signal_noise_ratio

import kdcore_hdrnet.model as model_module
from kdcore_hdrnet import HDRNet, HDRNetTeacher
from kdcore_hdrnet.reference import ReferenceHDRNet, reference_forward

from hdrnet_helpers import make_model, perturb


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_count_matches_the_paper_and_scales() -> None:
    enhance = kdcore.Task(kind="enhance")
    base = n_params(HDRNet(HDRNet.Params(), enhance))
    assert abs(base - 482_000) / 482_000 < 0.02
    wide = n_params(HDRNet(HDRNet.Params(channel_multiplier=4), enhance))
    assert abs(wide - 7_600_000) / 7_600_000 < 0.03
    conv_guide = n_params(HDRNet(HDRNet.Params(guide="conv"), enhance))
    assert abs(conv_guide - base) < 500


@pytest.mark.parametrize("guide", ["pointwise-curve", "conv"])
@pytest.mark.parametrize(("kind", "scale"), [("enhance", 1), ("sr", 2), ("sr", 3), ("sr", 4)])
def test_output_shape_and_range(kind: str, scale: int, guide: str) -> None:
    model = make_model(kind, scale, guide=guide)
    perturb(model, 0.2)
    x = torch.rand(2, 3, 37, 53)
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            y = model.eval()(x)
        assert y.shape == (2, 3, 37 * scale, 53 * scale)
        assert torch.isfinite(y).all()
        assert y.min() >= 0 and y.max() <= 1


def test_default_model_runs_on_odd_size() -> None:
    model = HDRNet(HDRNet.Params(), kdcore.Task(kind="enhance")).eval()
    x = torch.rand(1, 3, 37, 53)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape
    assert (y - x).abs().max() < 0.05  # starts near the identity


@pytest.mark.parametrize("guide", ["pointwise-curve", "conv"])
@pytest.mark.parametrize(("kind", "scale"), [("enhance", 1), ("sr", 2)])
def test_fast_path_equals_straightforward_path(kind, scale, guide, monkeypatch) -> None:
    model = make_model(kind, scale, guide=guide)
    perturb(model, 0.1)
    model.train()
    model(torch.rand(4, 3, 32, 32))  # moves batch-norm statistics away from their defaults
    model.eval()
    x = torch.rand(2, 3, 29, 41)
    with torch.no_grad():
        expected = reference_forward(model, x)
        assert ReferenceHDRNet(model)(x).shape == expected.shape
        monkeypatch.setattr(model_module, "STREAM_BLOCK_PIXELS", 150)  # several row blocks
        streamed = model(x)
    whole = model(x)  # autograd on: the unstreamed path
    torch.testing.assert_close(streamed, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(whole.detach(), expected, atol=1e-4, rtol=0)
    assert (expected - F.interpolate(x, scale_factor=scale, mode="bicubic")).abs().max() > 0.05


@pytest.mark.parametrize("batch_norm", [False, True])
def test_gradients_reach_every_parameter(batch_norm: bool) -> None:
    model = make_model("sr", 2, batch_norm=batch_norm).train()
    x = torch.rand(2, 3, 24, 24)
    target = torch.rand(2, 3, 48, 48)
    F.l1_loss(model(x), target).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_batch_norm_with_batch_of_one() -> None:
    model = make_model(batch_norm=True, guide="conv")
    model.train()
    model(torch.rand(1, 3, 20, 20)).mean().backward()
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 20, 20)).shape == (1, 3, 20, 20)


@pytest.mark.parametrize("scale", [2, 4])
def test_sr_starts_at_bicubic(scale: int) -> None:
    model = make_model("sr", scale).eval()
    x = torch.rand(1, 3, 20, 24)
    with torch.no_grad():
        y = model(x)
    bicubic = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)
    assert peak_signal_noise_ratio(y, bicubic, data_range=1.0) > 40


def test_a_few_steps_reduce_the_loss() -> None:
    model = make_model(guide="conv")
    x = torch.rand(2, 3, 32, 32)
    target = (x[:, [2, 0, 1]] * 0.8 + 0.1) ** 1.5  # a colour change the affine model can learn
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(15):
        loss = F.l1_loss(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_params_reject_unknown_keys_and_bad_values() -> None:
    with pytest.raises(pydantic.ValidationError):
        HDRNet.Params(unknown=1)
    with pytest.raises(pydantic.ValidationError, match="spatial_bins"):
        HDRNet.Params(net_input_size=128)  # 128 / 16 = 8, not the default 16
    with pytest.raises(pydantic.ValidationError):
        HDRNet.Params(guide="bilateral")
    with pytest.raises(pydantic.ValidationError):
        HDRNet.Params(channel_multiplier=0)
    for name, field in HDRNet.Params.model_fields.items():
        assert field.description, name
    assert HDRNet.Params(net_input_size=128, spatial_bins=8).spatial_bins == 8


def test_named_feature_modules() -> None:
    model = HDRNet(HDRNet.Params(), kdcore.Task(kind="enhance")).eval()
    modules = dict(model.named_modules())
    captured: dict[str, torch.Tensor] = {}
    names = ["lowres.splat", "lowres.global_path", "lowres.local_path", "lowres.fusion", "lowres.coefficients", "guide"]
    for name in names:
        modules[name].register_forward_hook(lambda m, i, o, name=name: captured.__setitem__(name, o))
    with torch.no_grad():
        model(torch.rand(1, 3, 40, 50))
    assert captured["lowres.splat"].shape == (1, 64, 16, 16)
    assert captured["lowres.global_path"].shape == (1, 64)
    assert captured["lowres.local_path"].shape == (1, 64, 16, 16)
    assert captured["lowres.fusion"].shape == (1, 64, 16, 16)
    assert captured["lowres.fusion"].min() >= 0
    assert captured["lowres.coefficients"].shape == (1, 96, 16, 16)
    assert captured["guide"].shape == (1, 1, 40, 50)  # the whole guide, even without autograd


def test_extension_points() -> None:
    class Marked(torch.nn.Conv2d):
        pass

    class Sub(HDRNet):
        def _make_local_conv(self, in_ch: int, out_ch: int, bias: bool) -> torch.nn.Module:
            return Marked(in_ch, out_ch, 3, padding=1, bias=bias)

    params = HDRNet.Params(net_input_size=64, spatial_bins=4)
    task = kdcore.Task(kind="enhance")
    sub, base = Sub(params, task), HDRNet(params, task)
    assert isinstance(sub.lowres.local_path.conv2, Marked)
    assert isinstance(sub.lowres.local_path.conv1[0], Marked)
    assert {k: v.shape for k, v in sub.state_dict().items()} == {k: v.shape for k, v in base.state_dict().items()}
    grid = torch.randn(1, 12, 8, 4, 4)
    guide = torch.rand(1, 1, 9, 11)
    torch.testing.assert_close(
        base.slice_coefficients(grid, guide, torch.zeros(1, 2, 9, 11)), base.slice_coefficients(grid, guide)
    )


def test_teacher_is_the_same_network() -> None:
    assert issubclass(HDRNetTeacher, kdcore.Teacher) and issubclass(HDRNetTeacher, HDRNet)
    assert HDRNetTeacher.needs_checkpoint
    params = HDRNet.Params(net_input_size=64, spatial_bins=4)
    task = kdcore.Task(kind="sr", scale=2)
    teacher = HDRNetTeacher(params, task)
    student = HDRNet(params, task)
    student.load_state_dict(teacher.state_dict())
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(teacher.eval()(x), student.eval()(x))


@pytest.mark.parametrize("cls_name", ["hdrnet", "deformable-hdrnet"])
def test_sr_residual_branch_starts_at_zero_then_learns(cls_name: str) -> None:
    task = kdcore.Task(kind="sr", scale=2)
    params = {"net_input_size": 64, "spatial_bins": 4}
    torch.manual_seed(0)
    plain = kdcore.create("student", cls_name, params, task)
    torch.manual_seed(0)
    wide = kdcore.create("student", cls_name, {**params, "sr_residual_channels": 8}, task)
    assert {n for n, _ in wide.named_modules()} - {n for n, _ in plain.named_modules()} == {
        "sr_residual", *(f"sr_residual.{i}" for i in range(6))}
    missing = wide.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("sr_residual.") for k in missing)
    x = torch.rand(2, 3, 24, 20)
    with torch.no_grad():
        assert torch.equal(wide.eval()(x), plain.eval()(x))  # the last conv starts at zero
    wide.train()
    y = wide(x)
    assert y.shape == (2, 3, 48, 40)
    (y - torch.rand_like(y)).abs().mean().backward()
    last = wide.sr_residual[4]
    assert last.weight.grad is not None and last.weight.grad.abs().sum() > 0
    # enhance models never build it
    enhance = kdcore.create("student", cls_name, {**params, "sr_residual_channels": 8}, kdcore.Task(kind="enhance"))
    assert enhance.sr_residual is None
