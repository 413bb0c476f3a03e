"""The shipped CRAFT ×4 checkpoint as a ``spandrel`` teacher, and checkpoints nobody detects."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from spandrel import ModelLoader
from spandrel.architectures.SPAN import SPAN

from kdcore.cli import main
from kdcore.interfaces import Task
from kdcore_spandrel.matching import closest_architectures
from kdcore_spandrel.teacher import SpandrelTeacher

CRAFT = Path(__file__).resolve().parents[3] / "weights" / "craft_x4.pth"


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / F.mse_loss(a, b)))


@pytest.fixture(scope="module")
def craft_state() -> dict[str, torch.Tensor]:
    return torch.load(CRAFT, map_location="cpu", weights_only=True)["params"]


def _spec(tmp_path: Path, images: dict[str, Path], checkpoint: Path) -> Path:
    spec = {
        "task": {"kind": "sr", "scale": 4},
        "data": {"train": str(images["train"]), "val": str(images["val"]), "patch_size": 16, "batch_size": 2},
        "teacher": {"name": "spandrel", "checkpoint": str(checkpoint)},
        "student": {"name": "compact", "params": {"num_feat": 8, "num_conv": 2}},
        "losses": [{"name": "l1"}],
        "train": {"steps": 1},
        "output": str(tmp_path / "run"),
    }
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return path


def test_craft_teacher_loads_reports_x4_and_beats_bicubic_on_a_crop() -> None:
    teacher = SpandrelTeacher(task=Task(kind="sr", scale=4))
    teacher.load_checkpoint(CRAFT, where="teacher.checkpoint")
    assert teacher.describe().startswith("CRAFT ×4, 753,344 parameters")
    hr = torch.from_numpy(np.ascontiguousarray(skimage.data.astronaut()[120:216, 180:260])).permute(2, 0, 1)
    hr = hr[None].float() / 255  # 96×80: an LR of 24×20, not a multiple of CRAFT's 16-pixel window
    lr = F.interpolate(hr, scale_factor=0.25, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    with torch.no_grad():
        sr = teacher.eval()(lr)
        # no second pad: the same as the network on the input as it is (it pads to its window itself)
        plain = ModelLoader().load_from_file(CRAFT).model.eval()(lr).clamp(0, 1)
    assert sr.shape == hr.shape
    torch.testing.assert_close(sr, plain)
    bicubic = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
    assert _psnr(sr, hr) > _psnr(bicubic, hr) + 1.0


def test_craft_checkpoint_validates_as_a_x4_teacher(tmp_path, spandrel_images, capsys) -> None:
    assert main(["validate", str(_spec(tmp_path, spandrel_images, CRAFT))]) == 0
    assert "teacher: CRAFT ×4" in capsys.readouterr().out


def _span_deploy_form() -> dict[str, torch.Tensor]:
    """A tiny SPAN re-parameterised as challenge entries publish it: each Conv3XC fused into one conv."""
    net = SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=4).eval()
    with torch.no_grad():
        net(torch.rand(1, 3, 8, 8))  # in eval mode the forward fuses the branches into eval_conv
    return {
        k.replace(".eval_conv.", "."): v
        for k, v in net.state_dict().items()
        if ".sk." not in k and ".conv." not in k
    }


@pytest.mark.parametrize("case", ["span-deploy", "craft-renamed"])
def test_undetected_checkpoint_names_what_was_found_and_the_closest_architecture(
    case, tmp_path, spandrel_images, craft_state, capsys
) -> None:
    path = tmp_path / "model.pth"
    if case == "span-deploy":
        state = _span_deploy_form()
        torch.save({"params": state}, path)
        arch, found = "SPAN", f"top-level keys params; {len(state)} tensors, e.g. conv_1.weight"
    else:  # CRAFT with its first conv renamed and its attention temperatures under another name
        state = {
            k.replace("conv_first", "head").replace(".temperature", ".scale"): v
            for k, v in craft_state.items()
        }
        torch.save(state, path)
        arch, found = "CRAFT", f"found: {len(state)} tensors, e.g. relative_position_index_h"
    assert main(["validate", str(_spec(tmp_path, spandrel_images, path))]) == 2
    err = capsys.readouterr().err
    assert f"teacher.checkpoint: {path}: no architecture known to spandrel" in err
    assert found in err
    assert f"closest: {arch} (" in err and f"under other tensor names" in err
    assert "Traceback" not in err


def test_closest_architecture_ranks_the_source_first(craft_state) -> None:
    fused = {k.replace("conv_first", "head"): v for k, v in craft_state.items()}
    ranked = closest_architectures(fused)
    assert ranked[0].arch_id == "CRAFT" and ranked[0].score > 0.9
    assert {"head.weight", "head.bias"} <= set(ranked[0].unexpected)
    assert closest_architectures({"fc.weight": torch.zeros(2, 2)}) == []


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ([torch.zeros(2), 3], "holds a list of 2 items (Tensor, int), not a state dict"),
        (torch.zeros(3, 3), "holds a single tensor of shape (3, 3), not a state dict"),
        ({"epoch": 3, "lr": 0.1}, "holds no tensors (a dict with top-level keys epoch, lr)"),
        ({"fc.weight": torch.zeros(2, 2)}, "closest: none"),
    ],
    ids=["list", "tensor", "no-tensors", "unrelated"],
)
def test_non_state_dict_pickles_say_what_they_hold(obj, expected, tmp_path, spandrel_images, capsys) -> None:
    path = tmp_path / "model.pth"
    torch.save(obj, path)
    assert main(["validate", str(_spec(tmp_path, spandrel_images, path))]) == 2
    err = capsys.readouterr().err
    assert "teacher.checkpoint" in err and str(path) in err and expected in err
    assert err.strip() and "Traceback" not in err
