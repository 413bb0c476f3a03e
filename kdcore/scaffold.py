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
from importlib import resources
from pathlib import Path
from string import Template

from kdcore.errors import KdcoreError, SpecError
from kdcore.interfaces import KIND_TABLE
from kdcore.registry import NAME_PATTERN

KINDS: tuple[str, ...] = ("loss", "student", "teacher", "adapter")  # the order `--kind` lists them in
"""The kinds of component a scaffold can start from."""

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
    suffix = KIND_TABLE[kind].base.__name__
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


def _template(rel: str) -> str:
    """A template file of the package data folder ``kdcore/templates/new-plugin``."""
    return (
        resources.files("kdcore")
        .joinpath("templates", "new-plugin", *rel.split("/"))
        .read_text(encoding="utf-8")
    )


def plugin_files(name: str, kind: str) -> dict[str, str]:
    """The files of the scaffold for component ``name`` of ``kind``: relative path -> text.

    The templates are files under ``kdcore/templates/new-plugin/`` (``$name``, ``$pkg``, ``$cls``,
    ... are filled in with :class:`string.Template`; the files hold no other ``$``).
    """
    pkg = package_name(name)
    values = {
        "name": name,
        "kind": kind,
        "plural": KIND_TABLE[kind].plural,
        "pkg": pkg,
        "dist": f"kdcore-{name}",
        "cls": class_name(name, kind),
        "hook": KIND_TABLE[kind].hook,
        "summary": _SUMMARY[kind],
        "spec_example": Template(_template(f"{kind}/spec_example.tmpl")).substitute(name=name),
        "about": Template(_template(f"{kind}/about.md.tmpl")).substitute(name=name),
        "create_args": _template(f"{kind}/create_args.tmpl"),
    }

    def fill(template: str) -> str:
        return Template(template).substitute(values)

    return {
        "pyproject.toml": fill(_template("pyproject.toml.tmpl")),
        "README.md": fill(_template("README.md.tmpl")),
        ".gitignore": _template("gitignore.tmpl"),
        f"src/{pkg}/__init__.py": fill(_template("__init__.py.tmpl")),
        f"src/{pkg}/plugin.py": fill(_template(f"{kind}/plugin.py.tmpl")),
        "tests/test_plugin.py": fill(_template("test_header.py.tmpl"))
        + fill(_template(f"{kind}/tests.py.tmpl")),
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
