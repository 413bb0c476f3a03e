"""Test helpers for kdcore and plugin authors; also a pytest plugin (loaded automatically).

Fixtures:
    ``kdcore_isolated_plugins`` – forgets loaded plugins before and after the test.
    ``tiny_task`` / ``tiny_batch`` – a small sr ×2 task and a 2×3×16×16 batch in [0, 1].
Functions:
    ``write_fake_plugin`` – an installed distribution (dist-info with a real entry point) in a folder.
    ``check_component`` – the conformance check every registered component passes (a teacher that
    is nothing without its checkpoint provides ``example_checkpoint(folder, task)`` to be loaded first).
"""

from __future__ import annotations

import os
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest


def write_fake_plugin(
    site: str | os.PathLike,
    module: str,
    code: str,
    *,
    entry_point: str | None = None,
    distribution: str | None = None,
    version: str = "0.1.0",
    requires: tuple[str, ...] = ("kdcore",),
) -> Path:
    """Writes ``module`` (with ``code``) and its dist-info into ``site``; put ``site`` on sys.path."""
    site = Path(site)
    dist = distribution or module.replace("_", "-")
    (site / f"{module}.py").write_text(textwrap.dedent(code))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    reqs = "".join(f"Requires-Dist: {r}\n" for r in requires)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n{reqs}")
    (info / "entry_points.txt").write_text(f"[kdcore]\n{entry_point or dist} = {module}\n")
    return site


@pytest.fixture
def kdcore_isolated_plugins():
    """Plugins are loaded afresh for this test and forgotten after it."""
    from kdcore.plugins import reset_plugins

    reset_plugins()
    yield
    reset_plugins()


@pytest.fixture
def tiny_task():
    from kdcore.interfaces import Task

    return Task(kind="sr", scale=2)


@pytest.fixture
def tiny_batch():
    import torch

    return torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def _tasks_for(kind: str, cls: type) -> list:
    from kdcore.interfaces import Task

    if kind in ("student", "teacher"):
        tasks = [Task(kind="sr", scale=2), Task(kind="enhance", scale=1)]
        return [t for t in tasks if t.kind in getattr(cls, "supported_tasks", ("sr", "enhance"))]
    return [None]


def _tiny_model(gen):
    import torch

    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 3, 1)
    )
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


def check_component(
    kind: str, name: str, params: dict | None = None, *, size: int = 24, export: bool = False
) -> None:
    """Conformance: builds from default params, runs a tiny CPU batch, checks what must hold.

    Models: output shape B×3×(h·s)×(w·s) and range [0, 1], finite. Losses: a finite scalar with a
    gradient on the student (student vs target, and vs a teacher; a loss is first bound, through
    ``Loss.bind``, to a tiny student and teacher of one architecture). Adapters: map channels. Every
    component's state dict round-trips through safetensors. ``export=True`` (students and teachers;
    needs ``kdcore[export]``): the model also exports to ONNX and onnxruntime reproduces its output
    within the default tolerance on a 37×53 and a ``size``×``size`` input (what ``kdcore export``
    checks).
    """
    import torch
    from safetensors.torch import load_file, save_file

    from kdcore.engine.build import adapter_factory
    from kdcore.interfaces import ModelOutput, as_output
    from kdcore.plan import create_component
    from kdcore.plugins import get_registry

    registry = get_registry()
    create: Any = create_component  # components of every kind: their own methods are checked
    cls = registry.lookup(kind, name).cls
    if params is None:
        # components whose defaults cannot stand alone (e.g. feature pairs) give example params
        params = getattr(cls, "example_params", None)
    gen = torch.Generator().manual_seed(0)
    for task in _tasks_for(kind, cls):
        if kind == "adapter":
            module = create(kind, name, params, in_channels=4, out_channels=4)
            y = module(torch.rand(2, 4, 8, 8, generator=gen))
            assert y.shape == (2, 4, 8, 8), f"adapter {name}: shape {tuple(y.shape)}"
        elif kind == "loss":
            module = create(kind, name, params)
            s_feats = {
                p: torch.rand(2, 4, 8, 8, generator=gen, requires_grad=True)
                for p in module.student_features()
            }
            t_feats = {p: torch.rand(2, 6, 8, 8, generator=gen) for p in module.teacher_features()}
            module.setup(
                {k: v.shape for k, v in s_feats.items()},
                {k: v.shape for k, v in t_feats.items()},
                adapter_factory(registry, f"loss {name}"),
            )
            # a loss that reads the models is bound to a tiny student and a frozen teacher of one architecture
            student_model = _tiny_model(gen)
            module.bind(student_model, [_tiny_model(gen).eval().requires_grad_(False)])
            s = torch.rand(2, 3, size, size, generator=gen, requires_grad=True)
            t = torch.rand(2, 3, size, size, generator=gen)
            value = module(
                ModelOutput(image=s, features=s_feats), ModelOutput(image=t, features=t_feats), t.clone()
            )
            assert value.ndim == 0 and torch.isfinite(value), f"loss {name}: {value}"
            value.backward()
            grads = [
                t.grad for t in (s, *s_feats.values(), *student_model.parameters()) if t.grad is not None
            ]
            assert grads and all(torch.isfinite(g).all() for g in grads), (
                f"loss {name}: no gradient on the student"
            )
        else:
            module = create(kind, name, params, task).eval()
            example = getattr(type(module), "example_checkpoint", None)
            if kind == "teacher" and example is not None:
                # a teacher that is nothing without its checkpoint writes a small one to load
                with tempfile.TemporaryDirectory() as tmp:
                    module.load_checkpoint(example(Path(tmp), task), where=f"teacher {name}")
                module.eval()
            x = torch.rand(2, 3, size, size, generator=gen)
            with torch.no_grad():
                y = as_output(module(x)).image
            expected = (2, 3, size * task.scale, size * task.scale)
            assert tuple(y.shape) == expected, (
                f"{kind} {name} ({task.kind}): shape {tuple(y.shape)} != {expected}"
            )
            assert torch.isfinite(y).all(), f"{kind} {name}: non-finite output"
            assert y.min() >= 0 and y.max() <= 1, f"{kind} {name}: output outside [0, 1]"
            if export:
                _check_export(module, task, f"{kind} {name}", size)
        state = {k: v.contiguous() for k, v in module.state_dict().items()}
        if state:
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "w.safetensors")
                save_file(state, path)
                back = load_file(path)
            assert back.keys() == state.keys()
            assert all(torch.equal(back[k], state[k]) for k in state)


def _check_export(module, task, label: str, size: int) -> None:
    """The model exports to ONNX and onnxruntime gives its output (raises AssertionError if not)."""
    from kdcore.onnx import ExportError, export_student

    with tempfile.TemporaryDirectory() as tmp:
        try:
            report = export_student(
                module, task, Path(tmp) / "model.onnx", name=label, sizes=((1, 37, 53), (2, size, size))
            )
        except ExportError as exc:
            raise AssertionError(f"{label} ({task.kind}): {exc}") from None
    assert report["passed"], f"{label}: export not verified"
