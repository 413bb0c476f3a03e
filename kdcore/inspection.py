"""``kdcore inspect``: every named module of a student or teacher with its output shape.

Shapes come from forward hooks during one pass over a random sample input, so a user can pick
``feature-matching`` pairs (module paths, ``named_modules()`` spelling) without reading model code.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch

from kdcore.engine.taps import first_tensor
from kdcore.errors import SpecError
from kdcore.interfaces import Task, Teacher


@dataclass
class ModuleInfo:
    """One named module: its path, class, own-and-below parameter count and output shape(s).

    ``shape`` is ``None`` for a module the sample forward pass never called; ``kind`` says whether
    the output is a feature map (B×C×H×W, usable by feature-matching), tokens (B×N×C) or other.
    """

    path: str
    type: str
    params: int
    shape: list[int] | None
    kind: str
    calls: int = 0


def _kind(shape: list[int] | None) -> str:
    if shape is None:
        return "not called"
    return {4: "map", 3: "tokens"}.get(len(shape), "other")


def parse_task(text: str) -> Task:
    """``sr:2``, ``sr:4`` or ``enhance`` (the ``--task`` spelling) -> Task."""
    kind, _, scale = text.partition(":")
    try:
        if kind == "enhance" and not scale:
            return Task(kind="enhance", scale=1)
        return Task(kind=kind, scale=int(scale) if scale else 2)  # type: ignore[arg-type]
    except (ValueError, TypeError) as exc:
        detail = next((r.strip() for r in str(exc).splitlines() if "scale must" in r), "")
        detail = detail.split("Value error, ", 1)[-1].split(" [", 1)[0]
        raise SpecError(
            f"--task: {text!r} is not a task; write sr:2, sr:3, sr:4 or enhance"
            + (f" ({detail})" if detail else "")
        ) from None


def inspect_model(
    kind: str,
    name: str,
    params: dict | None = None,
    task: Task | None = None,
    size: tuple[int, int] = (32, 32),
    checkpoint: str | os.PathLike | None = None,
) -> list[ModuleInfo]:
    """Builds ``kind`` (student or teacher) ``name`` and reports each named module's output shape
    for a 1×3×H×W sample input (``size`` is H, W); modules in the order they first ran."""
    from kdcore.engine.checkpoints import load_weights, weights_path
    from kdcore.plan import create_component as create

    kind = {"students": "student", "teachers": "teacher"}.get(kind, kind)
    if kind not in ("student", "teacher"):
        raise SpecError(
            f"inspect: KIND must be student or teacher, not {kind!r} (losses and adapters have no modules to tap)"
        )
    h, w = size
    if h < 1 or w < 1:
        raise SpecError(f"--size: {h} {w} is not an image size; give two positive integers H W")
    model = create(kind, name, params, task)
    if checkpoint is not None:
        path = weights_path(checkpoint)
        if isinstance(model, Teacher):
            model.load_checkpoint(path, where="--checkpoint")
        else:
            load_weights(model, path, where="--checkpoint")
    model.eval()
    modules = {p: m for p, m in model.named_modules() if p}
    seen: dict[str, ModuleInfo] = {}
    order: list[str] = []

    def hook(path: str):
        def record(module, inputs, output):
            t = first_tensor(output)
            shape = list(t.shape) if t is not None else None
            if path not in seen:
                order.append(path)
                seen[path] = ModuleInfo(path, type(module).__name__, 0, shape, _kind(shape))
            seen[path].calls += 1

        return record

    handles = [m.register_forward_hook(hook(p)) for p, m in modules.items()]
    try:
        x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    out = []
    for path in order + [p for p in modules if p not in seen]:
        info = seen.get(path) or ModuleInfo(path, type(modules[path]).__name__, 0, None, "not called")
        info.params = sum(p.numel() for p in modules[path].parameters())
        out.append(info)
    return out


def as_rows(infos: list[ModuleInfo]) -> list[dict]:
    """JSON-ready rows."""
    return [asdict(i) for i in infos]


def format_table(infos: list[ModuleInfo]) -> str:
    """A plain table: path, type, output shape, parameters; token outputs are marked."""
    rows = [("path", "type", "output", "params")]
    for i in infos:
        shape = "×".join(map(str, i.shape)) if i.shape else "-"
        if i.kind == "tokens":
            shape += "  (tokens: not a feature map)"
        elif i.kind == "not called":
            shape = "(not called)"
        rows.append((i.path, i.type, shape, f"{i.params:,}"))
    widths = [max(len(r[c]) for r in rows) for c in range(3)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]:>}" for r in rows)
