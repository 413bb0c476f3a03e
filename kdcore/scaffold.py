"""``kdcore new-plugin``: a new, installable plugin package with one working component and its tests.

The package follows the layout of the bundled plugins: ``pyproject.toml`` (setuptools, src
layout, the ``kdcore`` entry point), ``README.md``, ``src/kdcore_<name>/plugin.py`` with a small
but real component of the chosen kind registered under ``<name>``, and ``tests/test_plugin.py``
(the conformance check of :func:`kdcore.testing.check_component` plus a behavioural test).
The tree is built in a hidden temporary folder next to the target and renamed into place at the
end, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import keyword
import os
import shutil
import uuid
from pathlib import Path
from string import Template

from kdcore.errors import KdcoreError, SpecError
from kdcore.registry import NAME_PATTERN

KINDS: tuple[str, ...] = ("loss", "student", "teacher", "adapter")
"""The kinds of component a scaffold can start from."""

_HOOKS = {
    "loss": "kdcore_register_losses",
    "student": "kdcore_register_students",
    "teacher": "kdcore_register_teachers",
    "adapter": "kdcore_register_adapters",
}
_SUFFIX = {"loss": "Loss", "student": "Student", "teacher": "Teacher", "adapter": "Adapter"}
_PLURAL = {"loss": "losses", "student": "students", "teacher": "teachers", "adapter": "adapters"}
_SUMMARY = {
    "loss": "L1 distance of image gradients (edges), student vs target or teacher",
    "student": "a small ESPCN-style sub-pixel convolution network, residual over bicubic",
    "teacher": "a gamma curve and a contrast stretch, an image operator with no weights",
    "adapter": "a learned 1×1 convolution to the teacher's channels, then an activation",
}


def package_name(name: str) -> str:
    """The import name of plugin ``name``: ``kdcore_`` plus the name with ``-`` as ``_``."""
    return "kdcore_" + name.replace("-", "_")


def class_name(name: str, kind: str) -> str:
    """A CamelCase class name for component ``name`` of ``kind``, e.g. ``edge`` -> ``EdgeLoss``."""
    camel = "".join(part.capitalize() for part in name.split("-"))
    if camel[0].isdigit():
        camel = "Plugin" + camel
    suffix = _SUFFIX[kind]
    return camel if camel.endswith(suffix) else camel + suffix


def _check(name: str, kind: str, dest: Path) -> Path:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise SpecError(
            f"new-plugin: {name!r} is not a valid component name; use lowercase letters, digits and "
            "single hyphens, e.g. 'edge-loss'"
        )
    if kind not in KINDS:
        raise SpecError(f"new-plugin: --kind must be one of {', '.join(KINDS)} (got {kind!r})")
    if not dest.is_dir():
        raise SpecError(f"new-plugin: {dest} is not an existing folder; create it first or choose another")
    target = dest / name
    if os.path.lexists(target):
        raise SpecError(f"new-plugin: {target} already exists; choose another name or remove it")
    cls = class_name(name, kind)
    if not cls.isidentifier() or keyword.iskeyword(cls):  # pragma: no cover - the pattern rules this out
        raise SpecError(f"new-plugin: cannot derive a Python class name from {name!r}")
    return target


def plugin_files(name: str, kind: str) -> dict[str, str]:
    """The files of the scaffold for component ``name`` of ``kind``: relative path -> text."""
    pkg = package_name(name)
    values = {
        "name": name,
        "kind": kind,
        "plural": _PLURAL[kind],
        "pkg": pkg,
        "dist": f"kdcore-{name}",
        "cls": class_name(name, kind),
        "hook": _HOOKS[kind],
        "summary": _SUMMARY[kind],
        "spec_example": Template(_SPEC_EXAMPLES[kind]).substitute(name=name),
        "about": Template(_ABOUT[kind]).substitute(name=name),
        "create_args": _CREATE_ARGS[kind],
    }

    def fill(template: str) -> str:
        return Template(template).substitute(values)

    return {
        "pyproject.toml": fill(_PYPROJECT),
        "README.md": fill(_README),
        ".gitignore": _GITIGNORE,
        f"src/{pkg}/__init__.py": fill(_INIT),
        f"src/{pkg}/plugin.py": fill(_PLUGINS[kind]),
        "tests/test_plugin.py": fill(_TEST_HEADER) + fill(_TESTS[kind]),
    }


def scaffold_plugin(name: str, kind: str = "loss", dest: str | os.PathLike = ".") -> Path:
    """Creates the plugin package ``dest/NAME/`` and returns its path.

    Raises :class:`kdcore.errors.SpecError` (exit status 2), writing nothing, when ``NAME`` is not
    a valid component name (``[a-z0-9]+(-[a-z0-9]+)*``), ``kind`` is not one of :data:`KINDS`,
    ``dest`` is not a folder, or ``dest/NAME`` already exists; :class:`kdcore.errors.KdcoreError`
    (exit status 1) when writing fails, after removing what was written.
    """
    dest = Path(dest).absolute()
    target = _check(name, kind, dest)
    files = plugin_files(name, kind)
    staging = dest / f".{name}.new-plugin-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir()
        for rel, text in files.items():
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        if os.path.lexists(target):  # appeared while the tree was being written
            raise SpecError(f"new-plugin: {target} already exists; choose another name or remove it")
        os.rename(staging, target)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            raise KdcoreError(f"new-plugin: cannot write {target}: {exc.strerror or exc}") from None
        raise
    return target


def next_steps(folder: str | os.PathLike, kind: str = "loss") -> str:
    """What to do after scaffolding (printed by ``kdcore new-plugin``)."""
    folder = Path(folder)
    name = folder.name
    return (
        f"created {folder} (a {kind} plugin registering {kind} {name!r})\n"
        f"next:\n"
        f"  cd {folder} && pip install -e '.[dev]'\n"
        f"  kdcore plugins                  # shows {name} as loaded\n"
        f"  python -m pytest tests          # conformance and behaviour tests\n"
        f"  edit src/{package_name(name)}/plugin.py"
    )


# --------------------------------------------------------------------------------------------
# Templates ($name, $pkg, $cls, ... are filled in by plugin_files; the text holds no other "$").
# --------------------------------------------------------------------------------------------

_PYPROJECT = '''\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "kdcore plugin: the $kind $name"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["kdcore>=0.1", "torch>=2.3"]

[project.optional-dependencies]
dev = ["pytest>=8"]

[project.entry-points.kdcore]
$name = "$pkg.plugin"

[tool.setuptools.packages.find]
where = ["src"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

_GITIGNORE = """\
__pycache__/
*.egg-info/
build/
dist/
"""

_INIT = '''\
"""kdcore plugin ``$name``: the $kind ``$name`` (see ``plugin.py``)."""

from __future__ import annotations

from $pkg.plugin import $cls

__version__ = "0.1.0"

__all__ = ["$cls", "__version__"]
'''

_README = """\
# $dist

A kdcore plugin that registers the $kind **`$name`**:
$summary.

$about

## Install

```bash
pip install -e '.[dev]'      # or: pip install -e .   (without pytest)
kdcore plugins               # lists "$name" as loaded, with its $kind
kdcore list $plural --pattern '$name'
```

The entry point in `pyproject.toml` (group `kdcore`, name `$name`, module `$pkg.plugin`) is
how kdcore finds the plugin, so it must be installed (an editable install is enough: edits to
the source take effect without reinstalling) before kdcore or the tests can see it.

## Use it in a spec

```json
$spec_example
```

Check a spec without training with `kdcore validate SPEC`. Unknown `params` keys are errors; the
params, with defaults and descriptions, are in `kdcore list $plural --pattern '$name'`.

## What to edit

- `src/$pkg/plugin.py`: the class `$cls` — its `Params` (the spec's `params`, a pydantic
  model: add fields with defaults and descriptions) and its `forward`. The hook `$hook` at the
  bottom registers it under the name `$name`. Register more components in the same module with
  the hooks `kdcore_register_students`, `kdcore_register_teachers`, `kdcore_register_losses` and
  `kdcore_register_adapters`.
- `pyproject.toml`: the description, version and dependencies. Renaming the component? Change the
  entry-point name too, then reinstall (`pip install -e .`).
- `tests/test_plugin.py`: keep the conformance test; adapt the behavioural tests.

## Run the tests

```bash
python -m pytest tests
```

`kdcore.testing.check_component("$kind", "$name")` builds the component from its default params
through the plugin registry, runs a tiny CPU batch and checks what every kdcore component must
satisfy (shapes, value range, finite values, gradients, a safetensors round trip of its weights).
The other tests check what this $kind does.
"""

_ABOUT = {
    "loss": """\
It compares horizontal and vertical finite differences (image gradients) of the student's
image with those of a reference, in L1: `(mean |∂x S − ∂x R| + mean |∂y S − ∂y R|) / 2`. The
reference is the ground-truth target (`"against": "target"`, the default) or the teacher's image
(`"against": "teacher"`). The loss ignores a uniform brightness offset and penalises blurred or
misplaced edges, so it complements `l1`.""",
    "student": """\
A few convolutions on the low-resolution input, then a sub-pixel convolution (PixelShuffle, Shi
et al. 2016) to the output size; the network predicts a residual over the bicubic upscaled input
(the input itself for `enhance`, where the scale is 1). Its last layer starts at zero, so an
untrained model reproduces the bicubic baseline exactly. Params: `channels` (width, default 32)
and `layers` (feature convolutions before the sub-pixel layer, default 2). For feature-based
losses, its feature maps are `features` (the input of the sub-pixel layer) and `features.0`,
`features.1`, … (each of its layers).""",
    "teacher": """\
An image operator with no weights (`needs_checkpoint = False`, so the spec gives no
`checkpoint`): bicubic upscaling for `sr`, then the tone curve `x ** gamma` and a contrast
stretch about mid-grey, `0.5 + contrast · (y − 0.5)`, clipped to [0, 1]. Params: `gamma`
(default 0.8: brightens the shadows) and `contrast` (default 1.2). A student distilled from it
learns the operator.""",
    "adapter": """\
Adapters map a student feature map (`in_channels`) onto a teacher's (`out_channels`) for
feature-based losses; the channel counts are inferred by kdcore, never written in the spec.
This one is a learned 1×1 convolution followed by an activation. Params: `activation` (`relu`,
the default, `gelu`, `silu` or `none`; use `none` when the teacher's map can be negative) and
`bias` (default true).""",
}

_SPEC_EXAMPLES = {
    "loss": """\
"losses": [{"name": "l1", "weight": 1.0},
           {"name": "$name", "weight": 0.5, "params": {"against": "target"}}]""",
    "student": """\
"task":    {"kind": "sr", "scale": 2},
"student": {"name": "$name", "params": {"channels": 32, "layers": 2}}""",
    "teacher": """\
"task":    {"kind": "enhance", "scale": 1},
"teacher": {"name": "$name", "params": {"gamma": 0.8, "contrast": 1.2}},
"losses":  [{"name": "l1", "params": {"against": "teacher"}}]""",
    "adapter": """\
"losses": [{"name": "feature-matching", "weight": 0.1,
            "params": {"pairs": [{"student": "features", "teacher": "features",
                                  "adapter": {"name": "$name", "params": {"activation": "none"}}}]}}]""",
}

_PLUGINS: dict[str, str] = {}

_PLUGINS["loss"] = '''\
"""Entry point of the ``$name`` plugin: registers the loss ``$name``.

Edit :class:`$cls` (its ``Params`` and ``forward``) to make the loss your own; the hook at the
bottom registers it under the name ``$name``.
"""

from __future__ import annotations

from typing import Literal

import kdcore
import pydantic
import torch
from kdcore.interfaces import ModelOutput
from kdcore.interfaces import Params as BaseParams

SUMMARY = "$summary"


def image_gradients(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Horizontal and vertical finite differences of a B×C×H×W image."""
    return image[..., :, 1:] - image[..., :, :-1], image[..., 1:, :] - image[..., :-1, :]


class $cls(kdcore.Loss):
    """L1 distance between the image gradients of the student and of a reference image.

    ``(mean |dx S - dx R| + mean |dy S - dy R|) / 2``: blind to a uniform brightness offset,
    sensitive to blurred or misplaced edges. The reference is the target or the teacher's image
    (``against``); it is detached, so gradients reach the student only.
    """

    class Params(BaseParams):
        """Spec ``params`` of ``$name``; unknown keys are errors."""

        against: Literal["target", "teacher"] = pydantic.Field(
            default="target",
            description="compare the student's edges with the target's or the teacher's",
        )

    params: Params

    def uses_teacher(self) -> bool:
        """True when the edges are compared with the teacher's image."""
        return self.params.against == "teacher"

    def uses_target(self) -> bool:
        """True when the edges are compared with the ground-truth target."""
        return self.params.against == "target"

    def requires_teacher(self) -> bool:
        """A run without a teacher is refused when comparing against the teacher."""
        return self.params.against == "teacher"

    def forward(
        self, student: ModelOutput, teacher: ModelOutput | None, target: torch.Tensor | None
    ) -> torch.Tensor:
        """The edge distance, a scalar."""
        if self.params.against == "teacher":
            reference = teacher.image if teacher is not None else None
        else:
            reference = target
        if reference is None:
            raise kdcore.KdcoreError(
                f"loss $name: params.against is {self.params.against!r} but this run has no "
                f"{self.params.against} to compare with; change params.against"
            )
        image = student.image
        if image.shape != reference.shape or image.shape[-1] < 2 or image.shape[-2] < 2:
            raise kdcore.KdcoreError(
                f"loss $name: the student image {tuple(image.shape)} and the "
                f"{self.params.against} {tuple(reference.shape)} must have one shape, at least 2×2"
            )
        sx, sy = image_gradients(image)
        rx, ry = image_gradients(reference.detach())
        return ((sx - rx).abs().mean() + (sy - ry).abs().mean()) / 2


@kdcore.hookimpl
def $hook(register) -> None:
    """Registers the loss ``$name``."""
    register("$name", $cls, summary=SUMMARY)
'''

_PLUGINS["student"] = '''\
"""Entry point of the ``$name`` plugin: registers the student ``$name``.

Edit :class:`$cls` (its ``Params``, layers and ``forward``) to make the network your own; the
hook at the bottom registers it under the name ``$name``.
"""

from __future__ import annotations

import kdcore
import pydantic
import torch
import torch.nn.functional as F
from kdcore.interfaces import Params as BaseParams
from torch import nn

SUMMARY = "$summary"


class $cls(kdcore.Student):
    """A small ESPCN-style network (sub-pixel convolution, Shi et al. 2016).

    Convolutions on the low-resolution input, then one convolution to ``3 * scale**2`` channels
    rearranged by ``PixelShuffle`` into the output size. The network predicts a residual over the
    bicubic upscaled input (the input itself for enhance, scale 1); the last layer starts at
    zero, so an untrained model is exactly the bicubic baseline.
    """

    class Params(BaseParams):
        """Spec ``params`` of ``$name``; unknown keys are errors."""

        channels: int = pydantic.Field(
            default=32, ge=1, le=1024, description="width of the feature layers"
        )
        layers: int = pydantic.Field(
            default=2, ge=1, le=16, description="feature convolutions before the sub-pixel layer"
        )

    params: Params

    def __init__(self, params: Params | None = None, task: kdcore.Task | None = None):
        super().__init__(params, task)
        c, s = self.params.channels, self.task.scale
        layers: list[nn.Module] = [nn.Conv2d(3, c, 5, padding=2), nn.Tanh()]
        for _ in range(self.params.layers - 1):
            layers += [nn.Conv2d(c, c, 3, padding=1), nn.Tanh()]
        self.features = nn.Sequential(*layers)
        self.to_subpixels = nn.Conv2d(c, 3 * s * s, 3, padding=1)
        self.shuffle = nn.PixelShuffle(s)
        nn.init.zeros_(self.to_subpixels.weight)
        nn.init.zeros_(self.to_subpixels.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B×3×h×w in [0, 1] -> B×3×(h·s)×(w·s) in [0, 1]."""
        s = self.task.scale
        if s == 1:
            base = x
        else:
            base = F.interpolate(x, scale_factor=s, mode="bicubic", align_corners=False)
        residual = self.shuffle(self.to_subpixels(self.features(x)))
        return (base + residual).clamp(0, 1)


@kdcore.hookimpl
def $hook(register) -> None:
    """Registers the student ``$name``."""
    register("$name", $cls, summary=SUMMARY)
'''

_PLUGINS["teacher"] = '''\
"""Entry point of the ``$name`` plugin: registers the teacher ``$name``.

Edit :class:`$cls` (its ``Params`` and ``forward``) to make the operator your own; the hook at
the bottom registers it under the name ``$name``.
"""

from __future__ import annotations

import kdcore
import pydantic
import torch
import torch.nn.functional as F
from kdcore.interfaces import Params as BaseParams

SUMMARY = "$summary"


class $cls(kdcore.Teacher):
    """An image operator with no weights: a gamma curve, then a contrast stretch about mid-grey.

    ``y = clip(0.5 + contrast * (x ** gamma - 0.5), 0, 1)``, after bicubic upscaling for sr.
    """

    needs_checkpoint = False  # complete without a checkpoint file

    class Params(BaseParams):
        """Spec ``params`` of ``$name``; unknown keys are errors."""

        gamma: float = pydantic.Field(
            default=0.8, gt=0, le=10, allow_inf_nan=False,
            description="exponent of the tone curve x ** gamma; below 1 brightens the shadows",
        )
        contrast: float = pydantic.Field(
            default=1.2, ge=0, le=10, allow_inf_nan=False,
            description="slope of the stretch about mid-grey (0.5); 1 keeps the contrast",
        )

    params: Params

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B×3×h×w in [0, 1] -> B×3×(h·s)×(w·s) in [0, 1]."""
        s = self.task.scale
        if s > 1:
            x = F.interpolate(x, scale_factor=s, mode="bicubic", align_corners=False)
        y = x.clamp(0, 1).pow(self.params.gamma)
        return (0.5 + self.params.contrast * (y - 0.5)).clamp(0, 1)


@kdcore.hookimpl
def $hook(register) -> None:
    """Registers the teacher ``$name``."""
    register("$name", $cls, summary=SUMMARY)
'''

_PLUGINS["adapter"] = '''\
"""Entry point of the ``$name`` plugin: registers the adapter ``$name``.

Edit :class:`$cls` (its ``Params``, layers and ``forward``) to make the adapter your own; the
hook at the bottom registers it under the name ``$name``.
"""

from __future__ import annotations

from typing import Literal

import kdcore
import pydantic
import torch
from kdcore.interfaces import Params as BaseParams
from torch import nn

SUMMARY = "$summary"

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "none": nn.Identity,
}


class $cls(kdcore.Adapter):
    """A learned 1×1 convolution from ``in_channels`` to ``out_channels``, then an activation."""

    class Params(BaseParams):
        """Spec ``params`` of ``$name``; unknown keys are errors."""

        activation: Literal["relu", "gelu", "silu", "none"] = pydantic.Field(
            default="relu",
            description="after the convolution; 'none' when the teacher's map can be negative",
        )
        bias: bool = pydantic.Field(default=True, description="add a learned per-channel bias")

    params: Params

    def __init__(self, params: Params | None, in_channels: int, out_channels: int):
        for label, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise kdcore.SpecError(
                    f"adapter $name: {label} must be a positive integer (got {value!r})"
                )
        super().__init__(params, in_channels, out_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=self.params.bias)
        self.activation = ACTIVATIONS[self.params.activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B×in×H×W -> B×out×H×W."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise kdcore.KdcoreError(
                f"adapter $name expects feature maps B×{self.in_channels}×H×W, "
                f"got {tuple(x.shape)}"
            )
        return self.activation(self.conv(x))


@kdcore.hookimpl
def $hook(register) -> None:
    """Registers the adapter ``$name``."""
    register("$name", $cls, summary=SUMMARY)
'''

_TEST_HEADER = '''\
"""Tests of the $kind ``$name``: kdcore's conformance check, then what this $kind does.

The plugin must be installed (``pip install -e .``): kdcore finds it through its entry point.
"""

from __future__ import annotations

import importlib.metadata

import kdcore
import pytest
import torch
from kdcore.testing import check_component

from $pkg.plugin import $cls


def test_the_entry_point_is_installed() -> None:
    names = {ep.name for ep in importlib.metadata.entry_points(group="kdcore")}
    assert "$name" in names, "the plugin is not installed; run `pip install -e .` in its folder"


def test_conformance() -> None:
    check_component("$kind", "$name")


def test_registered_under_its_name() -> None:
    assert "$name" in kdcore.list_components("$kind", "$name")
    component = kdcore.create("$kind", "$name", $create_args)
    assert isinstance(component, $cls)


'''

_CREATE_ARGS = {
    "loss": "None",
    "student": "None, kdcore.Task(kind=\"sr\", scale=2)",
    "teacher": "None, kdcore.Task(kind=\"enhance\", scale=1)",
    "adapter": "None, in_channels=4, out_channels=8",
}

_TESTS: dict[str, str] = {}

_TESTS["loss"] = '''\
def _images() -> torch.Tensor:
    return torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def test_zero_for_identical_images_and_for_a_brightness_offset() -> None:
    x = _images()
    loss = $cls()
    assert loss(kdcore.ModelOutput(image=x), None, x.clone()).item() == 0.0
    assert loss(kdcore.ModelOutput(image=x + 0.1), None, x).item() == pytest.approx(0.0, abs=1e-6)


def test_positive_for_blurred_edges_with_gradient_on_the_student() -> None:
    x = _images()
    blurred = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1).requires_grad_(True)
    value = $cls()(kdcore.ModelOutput(image=blurred), None, x)
    assert value.item() > 0.01
    value.backward()
    assert blurred.grad is not None and blurred.grad.abs().sum() > 0


def test_against_teacher_compares_with_the_teacher() -> None:
    x, other = _images(), torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    loss = kdcore.create("loss", "$name", {"against": "teacher"})
    assert loss.uses_teacher() and loss.requires_teacher() and not loss.uses_target()
    student = kdcore.ModelOutput(image=x)
    assert loss(student, kdcore.ModelOutput(image=x.clone()), other).item() == 0.0
    assert loss(student, kdcore.ModelOutput(image=other), x).item() > 0
    with pytest.raises(kdcore.KdcoreError, match="no teacher"):
        loss(student, None, x)


def test_unknown_params_are_spec_errors() -> None:
    with pytest.raises(kdcore.SpecError, match="against"):
        kdcore.create("loss", "$name", {"against": "nobody"})
    with pytest.raises(kdcore.SpecError):
        kdcore.create("loss", "$name", {"no_such_key": 1})
'''

_TESTS["student"] = '''\
@pytest.mark.parametrize(("kind", "scale"), [("sr", 2), ("sr", 3), ("sr", 4), ("enhance", 1)])
def test_output_shape(kind: str, scale: int) -> None:
    model = $cls($cls.Params(channels=8), kdcore.Task(kind=kind, scale=scale))
    y = model(torch.rand(2, 3, 12, 10))
    assert y.shape == (2, 3, 12 * scale, 10 * scale)


def test_untrained_model_is_the_bicubic_baseline() -> None:
    x = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    up = torch.nn.functional.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
    model = kdcore.create("student", "$name", {"channels": 8}, kdcore.Task(kind="sr", scale=2))
    assert torch.allclose(model(x), up.clamp(0, 1))
    task = kdcore.Task(kind="enhance", scale=1)
    enhance = kdcore.create("student", "$name", {"channels": 8}, task)
    assert torch.equal(enhance(x), x)


def test_a_few_steps_fit_a_target() -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(1, 3, 16, 16, generator=gen)
    x = torch.nn.functional.avg_pool2d(target, 2)
    model = $cls($cls.Params(channels=16), kdcore.Task(kind="sr", scale=2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = (model(x) - target).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]


def test_bad_params_are_spec_errors() -> None:
    with pytest.raises(kdcore.SpecError, match="channels"):
        kdcore.create("student", "$name", {"channels": 0}, kdcore.Task(kind="sr", scale=2))
'''

_TESTS["teacher"] = '''\
ENHANCE = kdcore.Task(kind="enhance", scale=1)


def _images() -> torch.Tensor:
    return torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))


def test_needs_no_checkpoint_and_has_no_weights() -> None:
    teacher = kdcore.create("teacher", "$name", None, ENHANCE)
    assert $cls.needs_checkpoint is False
    assert not teacher.state_dict()


def test_neutral_params_leave_the_image_unchanged() -> None:
    x = _images()
    teacher = kdcore.create("teacher", "$name", {"gamma": 1.0, "contrast": 1.0}, ENHANCE)
    assert torch.allclose(teacher(x), x)


def test_gamma_below_one_brightens_and_the_curve_is_monotonic() -> None:
    x = _images()
    teacher = kdcore.create("teacher", "$name", {"gamma": 0.5, "contrast": 1.0}, ENHANCE)
    y = teacher(x)
    assert (y >= x - 1e-6).all() and y.mean() > x.mean() + 0.05
    ramp = torch.linspace(0, 1, 64).view(1, 1, 1, 64).expand(1, 3, 4, 64)
    out = kdcore.create("teacher", "$name", None, ENHANCE)(ramp)
    assert (out[..., 1:] >= out[..., :-1]).all()


def test_sr_upscales() -> None:
    teacher = kdcore.create("teacher", "$name", None, kdcore.Task(kind="sr", scale=3))
    assert teacher(_images()).shape == (2, 3, 36, 36)


def test_bad_params_are_spec_errors() -> None:
    with pytest.raises(kdcore.SpecError, match="gamma"):
        kdcore.create("teacher", "$name", {"gamma": 0}, ENHANCE)
'''

_TESTS["adapter"] = '''\
def _features() -> torch.Tensor:
    return torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(0))


def test_maps_channels_and_relu_is_non_negative() -> None:
    adapter = kdcore.create("adapter", "$name", None, in_channels=4, out_channels=8)
    y = adapter(_features())
    assert y.shape == (2, 8, 6, 6)
    assert (y >= 0).all()


def test_no_activation_is_a_per_pixel_linear_map() -> None:
    params = {"activation": "none"}
    adapter = kdcore.create("adapter", "$name", params, in_channels=4, out_channels=8)
    x = _features()
    weight = adapter.conv.weight.view(8, 4)
    expected = torch.einsum("oc,bchw->bohw", weight, x) + adapter.conv.bias.view(1, 8, 1, 1)
    assert torch.allclose(adapter(x), expected, atol=1e-5)


def test_gradients_reach_the_weights() -> None:
    params = {"activation": "gelu"}
    adapter = kdcore.create("adapter", "$name", params, in_channels=4, out_channels=3)
    adapter(_features()).square().mean().backward()
    assert adapter.conv.weight.grad is not None and adapter.conv.weight.grad.abs().sum() > 0


def test_wrong_input_and_bad_params_are_errors() -> None:
    adapter = kdcore.create("adapter", "$name", None, in_channels=4, out_channels=8)
    with pytest.raises(kdcore.KdcoreError, match="B×4×H×W"):
        adapter(torch.rand(2, 5, 6, 6))
    with pytest.raises(kdcore.SpecError, match="activation"):
        kdcore.create("adapter", "$name", {"activation": "tanh"}, in_channels=4, out_channels=8)
'''
