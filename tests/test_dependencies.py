"""Declared dependencies match the imports, and uv.lock is the portable, tested set.

deptry (configured in the root pyproject.toml) checks the core and every bundled plugin: a package
imported but not declared where it is imported, declared but never imported, or imported while
only a transitive dependency, is an error naming the file and the package.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = sorted(p.parent for p in ROOT.glob("plugins/*/pyproject.toml"))
# (project folder, code folder scanned there)
PROJECTS = [(ROOT, "kdcore")] + [(p, "src") for p in PLUGINS]
TESTED = {"torch": "2.14.1", "torchvision": "0.29.1", "timm": "1.0.31"}


def _lock() -> dict:
    return tomllib.loads((ROOT / "uv.lock").read_text())


def _name(project: Path) -> str:
    return tomllib.loads((project / "pyproject.toml").read_text())["project"]["name"]


@pytest.mark.parametrize(("project", "code"), PROJECTS, ids=lambda v: getattr(v, "name", v))
def test_declared_dependencies_match_imports(project: Path, code: str) -> None:
    assert importlib.util.find_spec("deptry"), "deptry is missing from the environment: run `make setup`"
    done = subprocess.run(
        [sys.executable, "-m", "deptry", code],  # with the pyproject.toml of ``project``
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{project.relative_to(ROOT) or '.'}: {done.stdout}{done.stderr}"


def test_every_plugin_folder_is_in_the_lock() -> None:
    members = set(_lock()["manifest"]["members"])
    missing = {_name(p) for p in [ROOT, *PLUGINS]} - members
    assert not missing, f"uv.lock lacks {sorted(missing)}: run `make lock` and commit uv.lock"


def test_lock_pins_the_tested_versions() -> None:
    versions = {p["name"]: p["version"] for p in _lock()["package"] if p["name"] in TESTED}
    assert versions == TESTED


def test_lock_has_no_machine_local_source() -> None:
    text = (ROOT / "uv.lock").read_text()
    registries = set(re.findall(r'registry = "([^"]*)"', text))
    assert registries == {"https://pypi.org/simple"}
    assert not re.search(r"file://|/opt/|/root/|/home/|/tmp/", text)
    for package in _lock()["package"]:  # the workspace members: paths relative to the root
        for key in ("editable", "directory", "path"):
            where = package["source"].get(key)
            assert where is None or not Path(where).is_absolute(), (package["name"], where)
