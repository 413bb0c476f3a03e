"""The eight named architectures: native keys, spandrel detection both ways, and the known traps."""

from __future__ import annotations

from pathlib import Path

import pytest
import spandrel
import torch
from kdcore_spandrel import SpandrelTeacher, plugin
from kdcore_spandrel.edsr import EDSR
from safetensors.torch import save_file
from spandrel_helpers import ARCH_IDS, TINY

import kdcore
from kdcore.errors import CheckpointError, SpecError
from kdcore.interfaces import Task

SR2 = Task(kind="sr", scale=2)


def _x(h: int = 12, w: int = 10) -> torch.Tensor:
    return torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(1))


def _save(module: torch.nn.Module, path: Path) -> Path:
    state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def test_registers_eight_students_and_nine_teachers() -> None:
    students, teachers = [], []
    plugin.kdcore_register_students(lambda n, c, **kw: students.append(n))
    plugin.kdcore_register_teachers(lambda n, c, **kw: teachers.append(n))
    names = ["edsr", "rcan", "swinir", "esrgan", "span", "compact", "safmn", "omnisr"]
    assert students == names and teachers == ["spandrel", *names]
    assert set(names) <= set(kdcore.list_components("students"))


@pytest.mark.parametrize("name", list(TINY))
def test_student_is_the_spandrel_module_and_round_trips(name: str, tmp_path: Path) -> None:
    """State-dict keys are the architecture's own: spandrel detects the file as the same
    architecture and scale, and its network computes the same image."""
    student = kdcore.create("student", name, TINY[name], SR2).eval()
    path = _save(student, tmp_path / "model.safetensors")
    desc = spandrel.ModelLoader().load_from_file(path) if name != "edsr" else None
    if desc is None:  # EDSR is detected by the plugin's own copy of the registry
        from kdcore_spandrel import REGISTRY

        desc = spandrel.ModelLoader(registry=REGISTRY).load_from_file(path)
    assert desc.architecture.id == ARCH_IDS[name] and desc.scale == 2
    x = _x(16, 16)
    with torch.no_grad():
        ours = student(x)
        theirs = desc.model.eval()(x.clone()).clamp(0, 1)
    assert ours.shape == (2, 3, 32, 32)
    torch.testing.assert_close(ours, theirs[..., :32, :32])


@pytest.mark.parametrize("name", list(TINY))
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_spandrel_teacher_loads_the_architecture(name: str, suffix: str, tmp_path: Path) -> None:
    """Any size works (padding and cropping back); outputs equal the original model's."""
    original = kdcore.create("student", name, TINY[name], SR2).eval()
    path = _save(original, tmp_path / f"{name}{suffix}")
    teacher = SpandrelTeacher(None, SR2)
    teacher.load_checkpoint(path, where="teacher.checkpoint")
    teacher.eval().requires_grad_(False)
    assert isinstance(original, type(teacher._net))  # detected as the same architecture
    assert "×2" in teacher.describe() and "parameters" in teacher.describe()
    assert {k for k, _ in teacher.named_modules()} >= {k for k, _ in original.named_modules()}
    x = _x(13, 11)  # odd sizes: below SwinIR/OmniSR minimum, not a multiple of 8 for SAFMN
    with torch.no_grad():
        torch.testing.assert_close(teacher(x), original(x))
    named = kdcore.create("teacher", name, TINY[name], SR2)
    named.load_checkpoint(path, where="teacher.checkpoint")
    with torch.no_grad():
        torch.testing.assert_close(named.eval()(x), original(x))


def test_named_teacher_refuses_another_architecture_and_other_settings(tmp_path: Path) -> None:
    path = _save(kdcore.create("student", "compact", TINY["compact"], SR2), tmp_path / "c.pth")
    with pytest.raises(CheckpointError, match="Compact model, not RCAN.*'spandrel'"):
        kdcore.create("teacher", "rcan", TINY["rcan"], SR2).load_checkpoint(path, where="teacher.checkpoint")
    with pytest.raises(CheckpointError, match="num_conv=2 \\(params: 3\\).*teacher.params"):
        kdcore.create("teacher", "compact", {**TINY["compact"], "num_conv": 3}, SR2).load_checkpoint(
            path, where="teacher.checkpoint")


@pytest.mark.parametrize("kind", ["student", "teacher"])
def test_rcan_never_mutates_the_batch(kind: str) -> None:
    """RCAN's forward multiplies its input by 255 in place; the caller's batch stays as it was."""
    model = kdcore.create(kind, "rcan", TINY["rcan"], SR2).eval()
    x = _x()
    before = x.clone()
    with torch.no_grad():
        model(x)
    assert torch.equal(x, before)


def test_spandrel_teacher_output_is_an_ordinary_tensor(tmp_path: Path) -> None:
    """The network is called directly (not spandrel's inference-mode call): a loss can use it."""
    path = _save(kdcore.create("student", "rcan", TINY["rcan"], SR2), tmp_path / "r.pth")
    teacher = SpandrelTeacher(None, SR2)
    teacher.load_checkpoint(path, where="teacher.checkpoint")
    x = _x()
    before = x.clone()
    with torch.no_grad():
        y = teacher.eval()(x)
    assert not torch.is_inference(y) and torch.equal(x, before)
    student = kdcore.create("student", "compact", TINY["compact"], SR2)
    (student(x) - y).abs().mean().backward()


@pytest.mark.parametrize("name", list(TINY))
def test_every_trainable_parameter_gets_a_gradient(name: str) -> None:
    """DistributedDataParallel fails on trainable parameters without a gradient (SPAN's eval convs)."""
    student = kdcore.create("student", name, TINY[name], SR2).train()
    student(_x(16, 16)).mean().backward()
    missing = [n for n, p in student.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing


def test_undetectable_variants_are_refused() -> None:
    with pytest.raises(SpecError, match="×3 is not offered"):
        kdcore.create("student", "esrgan", TINY["esrgan"], Task(kind="sr", scale=3))
    with pytest.raises(SpecError, match="act_type"):
        kdcore.create("student", "compact", {"act_type": "relu"}, SR2)
    with pytest.raises(SpecError, match="img_size"):
        kdcore.create("student", "swinir", {**TINY["swinir"], "img_size": 18}, SR2)


def test_swinir_window_settings_round_trip(tmp_path: Path) -> None:
    """Window 7 is read back by spandrel as a [0, 255] model; the student follows that rule."""
    params = {**TINY["swinir"], "window_size": 7, "img_size": 14}
    student = kdcore.create("student", "swinir", params, SR2).eval()
    desc = spandrel.ModelLoader().load_from_file(_save(student, tmp_path / "s.safetensors"))
    assert desc.model.window_size == 7 and desc.model.img_range == student.img_range == 255.0
    x = _x(16, 16)
    with torch.no_grad():
        torch.testing.assert_close(student(x), desc.model.eval()(x).clamp(0, 1))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_edsr_basicsr_layout_loads(scale: int, tmp_path: Path) -> None:
    """A BasicSR-style EDSR state dict (conv_first, body.N.conv1, upsample.K, ...) is detected."""
    net = EDSR(scale=scale, n_resblocks=2, n_feats=8).eval()
    basicsr = {}
    for k, v in net.state_dict().items():
        parts = k.split(".")
        if parts[0] == "head":
            basicsr[f"conv_first.{parts[-1]}"] = v
        elif parts[0] == "body" and parts[1] == "2":
            basicsr[f"conv_after_body.{parts[-1]}"] = v
        elif parts[0] == "body":
            basicsr[f"body.{parts[1]}.conv{1 if parts[3] == '0' else 2}.{parts[-1]}"] = v
        elif parts[:2] == ["tail", "0"]:
            basicsr[f"upsample.{parts[2]}.{parts[-1]}"] = v
        elif parts[:2] == ["tail", "1"]:
            basicsr[f"conv_last.{parts[-1]}"] = v
    path = tmp_path / "edsr.pth"
    torch.save({"params": basicsr}, path)  # BasicSR wraps the weights like this
    teacher = SpandrelTeacher(None, Task(kind="sr", scale=scale))
    teacher.load_checkpoint(path, where="teacher.checkpoint")
    assert teacher.describe().startswith(f"EDSR ×{scale}")
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(teacher.eval()(x), net(x).clamp(0, 1))


def test_swinir_groups_emit_tokens_and_their_convs_maps() -> None:
    """SwinIR's residual groups emit tokens (B×HW×C); ``layers.N.conv`` is a feature map."""
    from kdcore.engine.taps import FeatureTaps

    student = kdcore.create("student", "swinir", TINY["swinir"], SR2).eval()
    taps = FeatureTaps(student, ["layers.0", "layers.0.conv"])
    with torch.no_grad():
        student(_x(16, 16))
    shapes = {k: tuple(v.shape) for k, v in taps.collect().items()}
    assert len(shapes["layers.0"]) == 3 and len(shapes["layers.0.conv"]) == 4
