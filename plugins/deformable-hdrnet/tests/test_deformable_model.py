"""DeformableHDRNet: starts as exactly HDRNet, keeps its state dict, and its new parts train."""

from __future__ import annotations

import kdcore
import pydantic
import pytest
import torch
from kdcore_hdrnet import HDRNet
from kdcore_hdrnet.slicing import slice_grid_5d

import kdcore_deformable_hdrnet.model as model_module
from kdcore_deformable_hdrnet.deform_conv import ModulatedDeformConv2d
from kdcore_deformable_hdrnet.model import (
    DeformableHDRNet,
    DeformableHDRNetTeacher,
    deform_grid,
    slice_rows_with_offsets,
)

SMALL = {"net_input_size": 64, "spatial_bins": 4}
TASKS = {
    "sr": kdcore.Task(kind="sr", scale=2),
    "enhance": kdcore.Task(kind="enhance", scale=1),
}
NEW_KEYS = {
    "lowres.local_path.conv1.0.offset_mask.weight",
    "lowres.local_path.conv1.0.offset_mask.bias",
    "lowres.local_path.conv2.offset_mask.weight",
    "lowres.local_path.conv2.offset_mask.bias",
    "slice_offsets.head.weight",
    "slice_offsets.head.bias",
}


def _perturb(module: torch.nn.Module, std: float, seed: int, only: str = "") -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if only in name:
                p.add_(torch.randn(p.shape, generator=gen) * std)


def _pair(kind: str, **params) -> tuple[HDRNet, DeformableHDRNet]:
    """A perturbed (far from identity) HDRNet and a DeformableHDRNet holding its weights."""
    task = TASKS[kind]
    base = HDRNet(HDRNet.Params(**SMALL), task)
    _perturb(base, 0.05, seed=1)
    deform = DeformableHDRNet(DeformableHDRNet.Params(**SMALL, **params), task)
    missing, unexpected = deform.load_state_dict(base.state_dict(), strict=False)
    assert set(missing) == NEW_KEYS
    assert unexpected == []
    return base, deform


@pytest.mark.parametrize("mode", ["lattice", "pixel"])
@pytest.mark.parametrize("kind", ["sr", "enhance"])
def test_starts_as_exactly_hdrnet(kind: str, mode: str) -> None:
    base, deform = _pair(kind, slice_offset_mode=mode)
    x = torch.rand(2, 3, 20, 26)
    for train in (True, False):
        base.train(train)
        deform.train(train)
        torch.testing.assert_close(deform(x), base(x), atol=1e-6, rtol=0)
        with torch.no_grad():  # the streamed inference path
            torch.testing.assert_close(deform(x), base(x), atol=1e-6, rtol=0)


def test_state_dict_holds_every_hdrnet_tensor() -> None:
    base, deform = _pair("sr")
    base_state, state = base.state_dict(), deform.state_dict()
    for name, tensor in base_state.items():
        assert name in state, name
        assert state[name].shape == tensor.shape, name
    assert set(state) - set(base_state) == NEW_KEYS
    assert isinstance(deform.lowres.local_path.conv2, ModulatedDeformConv2d)


def test_switches_off_to_plain_hdrnet() -> None:
    params = DeformableHDRNet.Params(**SMALL, deformable_local=False, deformable_slicing=False)
    deform = DeformableHDRNet(params, TASKS["enhance"])
    base = HDRNet(HDRNet.Params(**SMALL), TASKS["enhance"])
    assert deform.state_dict().keys() == base.state_dict().keys()


@pytest.mark.parametrize("mode", ["lattice", "pixel"])
@pytest.mark.parametrize("kind", ["sr", "enhance"])
def test_output_shape_and_range(kind: str, mode: str) -> None:
    _, deform = _pair(kind, slice_offset_mode=mode)
    _perturb(deform, 0.5, seed=2, only="offset")
    x = torch.rand(2, 3, 16, 22)
    y = deform(x)
    scale = TASKS[kind].scale
    assert y.shape == (2, 3, 16 * scale, 22 * scale)
    assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1


def _slice_offset_field(model: DeformableHDRNet, x: torch.Tensor) -> torch.Tensor:
    assert model.slice_offsets is not None
    grid = HDRNet.predict_grid(model, x)
    return model.slice_offsets.bound(model.slice_offsets(grid))


@pytest.mark.parametrize("mode", ["lattice", "pixel"])
def test_one_step_moves_every_new_part(mode: str) -> None:
    base, deform = _pair("sr", slice_offset_mode=mode)
    x = torch.rand(2, 3, 16, 16)
    target = torch.rand(2, 3, 32, 32)
    convs = [deform.lowres.local_path.conv1[0], deform.lowres.local_path.conv2]
    features = {}
    hook = deform.lowres.splat.register_forward_hook(lambda m, i, o: features.update(splat=o))
    assert _slice_offset_field(deform, x).abs().max() == 0
    opt = torch.optim.Adam(deform.parameters(), lr=1e-3)
    (deform(x) - target).abs().mean().backward()
    for name in NEW_KEYS:
        grad = deform.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, f"no gradient reaches {name}"
    opt.step()
    with torch.no_grad():
        deform(x)
        assert _slice_offset_field(deform, x).abs().max() > 0
        offset, mask = convs[0].offsets_and_mask(features["splat"])
        assert offset.abs().max() > 0 and (mask - 1).abs().max() > 0
        assert (deform(x) - base(x)).abs().max() > 0
    hook.remove()


@pytest.mark.parametrize("kind", ["sr", "enhance"])
def test_pixel_mode_streamed_equals_batched(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _, deform = _pair(kind, slice_offset_mode="pixel")
    _perturb(deform, 0.5, seed=3, only="offset")
    deform.eval()
    x = torch.rand(1, 3, 15, 19)
    full = deform(x)  # gradients on: one block
    monkeypatch.setattr(model_module, "STREAM_BLOCK_PIXELS", 40)  # blocks of two rows
    with torch.no_grad():
        torch.testing.assert_close(deform(x), full, atol=1e-6, rtol=0)


def test_deform_impls_agree() -> None:
    _, a = _pair("enhance", deform_impl="grid_sample")
    _perturb(a, 0.3, seed=4, only="offset_mask")
    b = DeformableHDRNet(DeformableHDRNet.Params(**SMALL, deform_impl="torchvision"), TASKS["enhance"])
    b.load_state_dict(a.state_dict())
    x = torch.rand(1, 3, 12, 12)
    torch.testing.assert_close(a(x), b(x), atol=1e-5, rtol=1e-5)


def test_pixel_slice_matches_5d_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    dtype = torch.float64
    grid = torch.randn(2, 5, 4, 3, 6, generator=gen, dtype=dtype, requires_grad=True)
    guide = torch.rand(2, 1, 7, 11, generator=gen, dtype=dtype)
    offsets = (torch.randn(2, 2, 7, 11, generator=gen, dtype=dtype) * 1.5).requires_grad_()
    ref = slice_grid_5d(grid, guide, offsets)
    out = slice_rows_with_offsets(grid, guide, offsets, height=7, start=0)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=0)
    # A block of rows reads the same values as the whole image.
    block = slice_rows_with_offsets(grid, guide[:, :, 2:5], offsets[:, :, 2:5], height=7, start=2)
    torch.testing.assert_close(block, ref[:, :, 2:5], atol=1e-10, rtol=0)
    grad_out = torch.randn(ref.shape, generator=gen, dtype=dtype)
    ref_grads = torch.autograd.grad(ref, (grid, offsets), grad_out)
    grads = torch.autograd.grad(out, (grid, offsets), grad_out)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, atol=1e-9, rtol=0)


def test_deformed_lattice_with_zero_offsets_slices_like_the_grid() -> None:
    gen = torch.Generator().manual_seed(0)
    grid = torch.randn(1, 4, 3, 5, 4, generator=gen, dtype=torch.float64)
    guide = torch.rand(1, 1, 13, 17, generator=gen, dtype=torch.float64)
    fine = deform_grid(grid, torch.zeros(1, 2, 3, 15, 12, dtype=torch.float64), factor=3)
    assert fine.shape == (1, 4, 3, 15, 12)
    torch.testing.assert_close(slice_grid_5d(fine, guide), slice_grid_5d(grid, guide))
    # A shift of one whole cell to the right reads the neighbouring cell's centre.
    shifted = deform_grid(grid, torch.ones(1, 2, 3, 5, 4, dtype=torch.float64), factor=1)
    torch.testing.assert_close(shifted[..., :-1, :-1], grid[..., 1:, 1:])


def test_params_extend_hdrnet_params() -> None:
    assert set(HDRNet.Params.model_fields) < set(DeformableHDRNet.Params.model_fields)
    with pytest.raises(pydantic.ValidationError, match="odd"):
        DeformableHDRNet.Params(slice_lattice=2)
    with pytest.raises(pydantic.ValidationError):
        DeformableHDRNet.Params(deform_impl="cuda")
    with pytest.raises(pydantic.ValidationError):
        DeformableHDRNet.Params(unknown_key=1)


def test_teacher_is_a_teacher_and_a_deformable_hdrnet() -> None:
    assert issubclass(DeformableHDRNetTeacher, kdcore.Teacher)
    assert issubclass(DeformableHDRNetTeacher, DeformableHDRNet)
    assert issubclass(DeformableHDRNet, kdcore.Student)
    assert issubclass(DeformableHDRNet, HDRNet)
