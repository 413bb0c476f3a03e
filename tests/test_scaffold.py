"""Tests of ``kdcore new-plugin`` (kdcore.scaffold): the generated packages install, load and pass
their own tests; refusals write nothing."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from kdcore.errors import KdcoreError, SpecError
from kdcore.scaffold import KINDS, class_name, next_steps, package_name, plugin_files, scaffold_plugin

# One plugin of each kind; the adapter's name starts with a digit (class name derivation).
NAMES = {"loss": "scaf-edge", "student": "scaf-espcn", "teacher": "scaf-gamma", "adapter": "2x-proj"}


def _env(site: Path) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    # tiny tensors: one thread avoids oversubscribing shared cores
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def _install(folders: list[Path], site: Path) -> None:
    """A real, non-editable pip install into ``site`` (offline, no dependencies, no isolation)."""
    if importlib.util.find_spec("pip") and importlib.util.find_spec("setuptools"):
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
               "--no-index", "--no-cache-dir", "--target", str(site), *map(str, folders)]
        done = subprocess.run(cmd, env=_env(site), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        return
    # Without pip: the package and a dist-info carrying its entry point, as an install would leave.
    for folder in folders:
        meta = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
        pkg = package_name(folder.name)
        shutil.copytree(folder / "src" / pkg, site / pkg)
        info = site / f"{pkg}-{meta['version']}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n")
        eps = "".join(f"{k} = {v}\n" for k, v in meta["entry-points"]["kdcore"].items())
        (info / "entry_points.txt").write_text(f"[kdcore]\n{eps}")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """All four kinds scaffolded, installed into one target folder, and their tests run once."""
    root = tmp_path_factory.mktemp("scaffolds")
    folders = {kind: scaffold_plugin(name, kind, root) for kind, name in NAMES.items()}
    site = tmp_path_factory.mktemp("site")
    _install(list(folders.values()), site)
    report = root / "report.xml"
    # importlib mode: the four tests/test_plugin.py share a base name
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--import-mode=importlib",
         f"--rootdir={root}", f"--junitxml={report}", "-o", "junit_family=xunit1",
         *(str(f / "tests") for f in folders.values())],
        env=_env(site), capture_output=True, text=True, timeout=300, cwd=root,
    )
    plugins = subprocess.run([sys.executable, "-m", "kdcore", "plugins", "--json"], env=_env(site),
                             capture_output=True, text=True, timeout=300)
    return {"folders": folders, "site": site, "run": run, "report": report, "plugins": plugins}


@pytest.mark.parametrize("kind", KINDS)
def test_generated_tests_pass_when_installed(installed: dict, kind: str) -> None:
    run = installed["run"]
    assert installed["report"].exists(), run.stdout + run.stderr
    folder = NAMES[kind]
    cases = [c for c in ET.parse(installed["report"]).getroot().iter("testcase")
             if Path(c.get("file", "")).parts[:1] == (folder,)]
    bad = {c.get("name"): [e.get("message") for e in c if e.tag in ("failure", "error", "skipped")]
           for c in cases if any(e.tag in ("failure", "error", "skipped") for e in c)}
    assert not bad, f"{folder}: {bad}\n{run.stdout[-4000:]}"
    names = {c.get("name") for c in cases}
    common = {"test_conformance", "test_the_entry_point_is_installed", "test_registered_under_its_name"}
    assert common <= names
    assert len(cases) >= 6, names  # conformance plus behaviour
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


@pytest.mark.parametrize("kind", KINDS)
def test_kdcore_plugins_lists_the_plugin_as_loaded(installed: dict, kind: str) -> None:
    done = installed["plugins"]
    assert done.returncode == 0, done.stderr
    records = {p["name"]: p for p in json.loads(done.stdout)}
    name = NAMES[kind]
    record = records[name]
    assert record["status"] == "loaded", record
    assert record["distribution"] == f"kdcore-{name}"
    assert record["version"] == "0.1.0"
    assert record["module"] == f"{package_name(name)}.plugin"
    assert record["components"] == [{"kind": kind, "name": name}]


def test_package_layout_and_metadata(installed: dict) -> None:
    folder = installed["folders"]["loss"]
    pkg = package_name("scaf-edge")
    assert pkg == "kdcore_scaf_edge"
    for rel in ("pyproject.toml", "README.md", f"src/{pkg}/__init__.py", f"src/{pkg}/plugin.py",
                "tests/test_plugin.py"):
        assert (folder / rel).is_file(), rel
    meta = tomllib.loads((folder / "pyproject.toml").read_text())
    assert meta["build-system"]["build-backend"] == "setuptools.build_meta"
    project = meta["project"]
    assert project["name"] == "kdcore-scaf-edge"
    assert project["dependencies"] == ["kdcore>=0.1", "torch>=2.3"]
    assert project["entry-points"]["kdcore"] == {"scaf-edge": "kdcore_scaf_edge.plugin"}
    assert any(d.startswith("pytest") for d in project["optional-dependencies"]["dev"])
    assert meta["tool"]["setuptools"]["packages"]["find"]["where"] == ["src"]
    readme = (folder / "README.md").read_text()
    assert "pip install -e ." in readme and '"name": "scaf-edge"' in readme and "pytest" in readme
    assert (installed["site"] / pkg / "plugin.py").is_file()


@pytest.mark.parametrize("kind", KINDS)
def test_templates_are_complete_python(kind: str) -> None:
    files = plugin_files("2x-demo", kind)
    for rel, text in files.items():
        assert "$" not in text, f"{rel}: unfilled placeholder"
        if rel.endswith(".py"):
            compile(text, rel, "exec")
    assert f'register("2x-demo", {class_name("2x-demo", kind)}' in files["src/kdcore_2x_demo/plugin.py"]


def test_class_names() -> None:
    assert class_name("edge", "loss") == "EdgeLoss"
    assert class_name("edge-loss", "loss") == "EdgeLoss"
    assert class_name("tiny-espcn", "student") == "TinyEspcnStudent"
    assert class_name("2x-proj", "adapter") == "Plugin2xProjAdapter"


def test_returns_the_new_folder_and_leaves_nothing_else(tmp_path: Path) -> None:
    folder = scaffold_plugin("edge", dest=tmp_path)
    assert folder == tmp_path / "edge" and folder.is_dir()
    assert os.listdir(tmp_path) == ["edge"]
    assert "class EdgeLoss(kdcore.Loss)" in (folder / "src/kdcore_edge/plugin.py").read_text()
    steps = next_steps(folder, "loss")
    assert str(folder) in steps and "pip install -e" in steps and "pytest" in steps


def test_refuses_an_existing_folder_or_file(tmp_path: Path) -> None:
    (tmp_path / "edge").mkdir()
    (tmp_path / "edge" / "mine.txt").write_text("keep")
    (tmp_path / "taken").write_text("a file")
    for name in ("edge", "taken"):
        with pytest.raises(SpecError, match="already exists") as info:
            scaffold_plugin(name, "loss", tmp_path)
        assert info.value.exit_code == 2
    assert sorted(os.listdir(tmp_path)) == ["edge", "taken"]
    assert os.listdir(tmp_path / "edge") == ["mine.txt"]


BAD_NAMES = ["", "Edge", "edge_loss", "-edge", "edge-", "edge--loss", "a b", "../edge", "é", "edge\n"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_refuses_a_bad_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(SpecError, match="not a valid component name"):
        scaffold_plugin(name, "loss", tmp_path)
    assert os.listdir(tmp_path) == []
    assert not (tmp_path.parent / "edge").exists()


def test_refuses_a_bad_kind_or_destination(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="--kind must be one of loss, student, teacher, adapter"):
        scaffold_plugin("edge", "model", tmp_path)
    with pytest.raises(SpecError, match="not an existing folder"):
        scaffold_plugin("edge", "loss", tmp_path / "missing")
    assert os.listdir(tmp_path) == []


def test_a_failure_while_writing_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = Path.write_text

    def failing(self, *args, **kwargs):
        calls.append(self)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", failing)
    with pytest.raises(KdcoreError, match="No space left on device") as info:
        scaffold_plugin("edge", "student", tmp_path)
    assert info.value.exit_code == 1
    assert len(calls) == 3
    assert os.listdir(tmp_path) == []
