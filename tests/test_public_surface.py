"""Plugins, tutorials and benchmarks use kdcore's public surface only (no name with a leading `_`)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import kdcore

ROOT = Path(__file__).resolve().parents[1]


def _sources() -> list[tuple[str, str]]:
    out = []
    for folder in ("plugins", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if ".venv" not in path.parts and "build" not in path.parts:
                out.append((str(path.relative_to(ROOT)), path.read_text(encoding="utf-8")))
    for path in sorted((ROOT / "tutorials").glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        code = "\n".join(_python_of("".join(c["source"])) for c in cells if c["cell_type"] == "code")
        out.append((str(path.relative_to(ROOT)), code))
    return out


def _python_of(cell: str) -> str:
    """The Python in a notebook cell: line magics dropped; ``%%writefile X.py`` bodies kept."""
    lines = cell.splitlines()
    if lines and lines[0].startswith("%%"):
        return "\n".join(lines[1:]) if lines[0].startswith("%%writefile") and lines[0].rstrip().endswith(".py") else ""
    return "\n".join(line for line in lines if not line.lstrip().startswith(("!", "%")))


def private_kdcore_uses(code: str) -> list[str]:
    """Every import of, or attribute access to, a kdcore name that starts with an underscore."""
    found = []
    tree = ast.parse(code)
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "kdcore":
            parts = node.module.split(".")
            found += [node.module for p in parts if p.startswith("_")]
            found += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_") and a.name != "__version__"]
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "kdcore":
                    found += [a.name for p in a.name.split(".") if p.startswith("_")]
                    aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else "kdcore"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in aliases:
                found.append(f"{aliases[base.id]}...{node.attr}")
    return found


@pytest.mark.parametrize("where,code", _sources(), ids=[p for p, _ in _sources()])
def test_no_private_kdcore_names(where, code):
    assert private_kdcore_uses(code) == [], f"{where} uses private kdcore names"


def test_the_check_finds_private_names():
    assert private_kdcore_uses("from kdcore.engine.trainer import _x") == ["kdcore.engine.trainer._x"]
    assert private_kdcore_uses("import kdcore.engine.feed as f\nf._loader = 1") == ["kdcore.engine.feed..._loader"]
    assert private_kdcore_uses("from kdcore import _api") == ["kdcore._api"]
    assert private_kdcore_uses("import kdcore\nkdcore.__version__") == []


def test_everything_in_all_exists():
    for name in kdcore.__all__:
        assert getattr(kdcore, name) is not None, name


def test_engine_functions_are_short():
    """The engine is made of short, single-purpose functions (no 150-line train())."""
    long = []
    for path in sorted((ROOT / "kdcore" / "engine").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert long == []


def test_scaffold_templates_are_files():
    scaffold = (ROOT / "kdcore" / "scaffold.py").read_text(encoding="utf-8")
    assert "'''" not in scaffold and len(scaffold.splitlines()) < 200
    assert (ROOT / "kdcore" / "templates" / "new-plugin" / "loss" / "plugin.py.tmpl").is_file()


def test_export_is_the_api_function_and_onnx_names_are_importable():
    import kdcore.onnx
    from kdcore import api

    assert kdcore.export is api.export and callable(kdcore.export)
    for name in ("export_student", "load_onnx", "OnnxStudent", "onnx_latency_ms", "ExportError", "compare"):
        assert getattr(kdcore.onnx, name) is not None, name
    assert not (ROOT / "kdcore" / "export.py").exists()


def _kdcore_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every kdcore import in a file; ``from kdcore import x`` as ``kdcore.x``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "kdcore"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "kdcore":
            if node.module == "kdcore":
                out += [(node.lineno, f"kdcore.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, node.module))
    return out


def test_no_module_imports_up_the_layers():
    """Only the package's re-exports and the command line (the top) import the API or the bare
    package; the engine reaches ONNX only through the runtime's latency helper."""
    top = {"__init__.py", "__main__.py", "cli.py"}
    submodules = {p.stem for p in (ROOT / "kdcore").iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    upward = []
    for path in sorted((ROOT / "kdcore").rglob("*.py")):
        if path.parent == ROOT / "kdcore" and path.name in top:
            continue
        for line, module in _kdcore_imports(path):
            parts = module.split(".")
            if module == "kdcore" or parts[1] == "api" or parts[1] not in submodules:
                upward.append(f"{path.relative_to(ROOT)}:{line}: {module}")
    assert upward == []
    engine_onnx = {
        module
        for path in (ROOT / "kdcore" / "engine").glob("*.py")
        for _, module in _kdcore_imports(path)
        if module.startswith("kdcore.onnx")
    }
    assert engine_onnx <= {"kdcore.onnx.runtime"}
