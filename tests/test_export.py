"""ONNX export (``kdcore export``, ``kdcore.export``), its verification, and the onnxruntime backend."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import kdcore
from kdcore.export import ExportError, OnnxStudent, export_student

TINY = {"net_input_size": 64, "spatial_bins": 4}


@pytest.fixture(scope="module")
def hdrnet_run(tmp_path_factory, tiny_images) -> Path:
    """A 2-step sr ×2 hdrnet run folder at a tiny grid, trained on small crops."""
    out = tmp_path_factory.mktemp("export") / "run"
    kdcore.run({"task": {"kind": "sr", "scale": 2},
                "data": {"train": str(tiny_images["train"]), "val": str(tiny_images["val"]), "patch_size": 32,
                         "batch_size": 2},
                "student": {"name": "hdrnet", "params": TINY}, "losses": [{"name": "l1"}],
                "train": {"steps": 2}, "output": str(out)})
    return out


@pytest.fixture(scope="module")
def exported(hdrnet_run) -> dict:
    return kdcore.export(hdrnet_run)


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kdcore", *args], check=False, capture_output=True, text=True, cwd=cwd)


def test_export_writes_model_and_report_with_odd_size(hdrnet_run, exported):
    assert (hdrnet_run / "model.onnx").is_file()
    assert not list(hdrnet_run.glob("*.tmp"))
    on_disk = json.loads((hdrnet_run / "export.json").read_text())
    assert on_disk["max_abs_diff"] == exported["max_abs_diff"] <= 1e-4
    sizes = [tuple(r["size"]) for r in on_disk["verification"]]
    assert (37, 53) in sizes and len(sizes) >= 2
    assert {r["batch"] for r in on_disk["verification"]} == {1, 2}  # the batch axis is dynamic too
    assert on_disk["student"]["name"] == "hdrnet" and on_disk["passed"]


def test_onnx_metadata_names_the_student(hdrnet_run, exported):
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(hdrnet_run / "model.onnx")).metadata_props}
    assert meta["task_kind"] == "sr" and meta["scale"] == "2" and meta["student"] == "hdrnet"
    assert json.loads(meta["student_params"]).items() >= TINY.items()
    assert meta["kdcore_version"] == kdcore.__version__
    assert "kdcore-hdrnet" in json.loads(meta["plugins"])
    assert int(meta["parameters"]) == exported["student"]["parameters"] > 0


def test_plain_onnxruntime_session_reproduces_pytorch(hdrnet_run, exported, tmp_path):
    """Someone who never used kdcore: onnxruntime and numpy only, in a fresh process, any size."""
    x = np.random.default_rng(1).random((1, 3, 41, 29), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np, onnxruntime as ort; "
            f"s = ort.InferenceSession({str(hdrnet_run / 'model.onnx')!r}, providers=['CPUExecutionProvider']); "
            f"np.save({str(tmp_path / 'y.npy')!r}, s.run(None, {{'input': np.load({str(tmp_path / 'x.npy')!r})}})[0]); "
            "assert 'kdcore' not in sys.modules and 'torch' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with torch.inference_mode():
        ref = kdcore.load(hdrnet_run)(torch.from_numpy(x)).numpy()
    y = np.load(tmp_path / "y.npy")
    assert y.shape == (1, 3, 82, 58)
    assert np.abs(y - ref).max() <= 1e-4


def test_tolerance_failure_names_size_and_leaves_nothing(hdrnet_run, exported, tmp_path, monkeypatch):
    """Weights perturbed in the exported file: verification fails, exit 1, nothing written."""
    import onnx
    from onnx import numpy_helper

    import kdcore.export as ex

    real_add_metadata = ex._add_metadata

    def perturb(path, metadata):
        real_add_metadata(path, metadata)
        model = onnx.load(str(path))
        init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + 0.05, init.name))
        onnx.save(model, str(path))

    monkeypatch.setattr(ex, "_add_metadata", perturb)
    target = tmp_path / "bad.onnx"
    with pytest.raises(ExportError) as info:
        kdcore.export(hdrnet_run, target)
    message = str(info.value)
    assert "1×3×37×53" in message and "max abs difference" in message and "tolerance 0.0001" in message
    assert not target.exists() and not list(tmp_path.iterdir())
    assert json.loads((hdrnet_run / "export.json").read_text())["passed"]  # the earlier report stands


class _Unexportable(torch.nn.Module):
    def forward(self, x):
        return torch.linalg.svd(x).U


class _Wrapped(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), _Unexportable())

    def forward(self, x):
        return self.body(x).clamp(0, 1)


def test_unexportable_module_is_a_short_error_naming_it(tmp_path, capfd):
    target = tmp_path / "m.onnx"
    with pytest.raises(ExportError) as info:
        export_student(_Wrapped(), kdcore.Task(kind="enhance", scale=1), target, name="toy")
    printed = capfd.readouterr()
    assert "graph" not in printed.out + printed.err  # the exporter's C++ log of the whole graph is silenced
    message = str(info.value)
    assert "student toy" in message and "'body.1' (_Unexportable)" in message
    assert "\n" not in message and "Traceback" not in message
    assert not list(tmp_path.iterdir())


def test_cli_export_of_a_missing_run_folder_exits_2_without_traceback(tmp_path, capsys):
    from kdcore.cli import main

    assert main(["export", str(tmp_path / "missing")]) == 2  # bad input, as for a missing image
    err = capsys.readouterr().err
    assert "no such run folder" in err and "Traceback" not in err


def test_cli_export_rejects_an_opset_the_exporter_cannot_write(hdrnet_run, capsys):
    from kdcore.cli import main

    assert main(["export", str(hdrnet_run), "-o", str(hdrnet_run / "x.onnx"), "--opset", "30"]) == 2
    assert "--opset: 30" in capsys.readouterr().err and not (hdrnet_run / "x.onnx").exists()


@pytest.mark.parametrize("name, params, kind", [
    ("hdrnet", TINY, "enhance"),  # sr: through the run folder above
    ("deformable-hdrnet", TINY, "sr"),
    ("deformable-hdrnet", {**TINY, "slice_offset_mode": "pixel"}, "enhance"),
])
def test_bundled_students_export(name, params, kind, tmp_path):
    """Random weights, with the deformable parts made non-zero so the offsets matter."""
    task = kdcore.Task(kind=kind, scale=2 if kind == "sr" else 1)
    model = kdcore.create("student", name, params, task).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "offset" in n:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    report = export_student(model, task, tmp_path / "m.onnx", name=name, sizes=((1, 37, 53), (2, 24, 32)))
    assert report["max_abs_diff"] <= 1e-4


def test_check_component_export_option():
    from kdcore.testing import check_component

    check_component("student", "hdrnet", TINY, export=True)


def test_enhance_onnxruntime_matches_torch_backend(hdrnet_run, exported, tmp_path):
    from PIL import Image

    from kdcore.cli import main
    from kdcore.data import save_image

    img = tmp_path / "odd.png"
    save_image(torch.rand(3, 37, 53, generator=torch.Generator().manual_seed(2)), img)
    done = _cli("enhance", str(hdrnet_run), str(img), "-o", str(tmp_path / "ort"), "--backend", "onnxruntime")
    assert done.returncode == 0, done.stderr
    in_process = {
        "torch": [str(hdrnet_run), str(img), "-o", str(tmp_path / "torch")],
        "file-tiled": [str(hdrnet_run / "model.onnx"), str(img), "-o", str(tmp_path / "file"), "--tile", "24"],
        "torch-tiled": [str(hdrnet_run), str(img), "-o", str(tmp_path / "torch-tiled"), "--tile", "24"],
    }
    for args in in_process.values():
        assert main(["enhance", *args]) == 0

    def read(folder: str) -> np.ndarray:
        return np.asarray(Image.open(tmp_path / folder / "odd.png")).astype(int)

    assert read("torch").shape == (74, 106, 3)
    assert np.abs(read("torch") - read("ort")).max() <= 1
    assert np.abs(read("torch-tiled") - read("file")).max() <= 1  # tiling works for both backends
    assert main(["enhance", str(hdrnet_run / "model.onnx"), str(img), "-o", str(tmp_path / "x"),
                 "--backend", "torch"]) == 2


def test_eval_onnxruntime_reports_the_same_quality(hdrnet_run, exported, capsys):
    from kdcore.cli import main

    assert main(["eval", str(hdrnet_run), "--json"]) == 0
    a = json.loads(capsys.readouterr().out)
    assert main(["eval", str(hdrnet_run), "--backend", "onnxruntime", "--json"]) == 0
    b = json.loads(capsys.readouterr().out)
    assert a["backend"] == "torch" and b["backend"] == "onnxruntime"
    assert abs(a["student"]["psnr"] - b["student"]["psnr"]) < 0.01
    assert main(["eval", str(hdrnet_run), "--onnx", str(hdrnet_run / "nope.onnx")]) == 2


def test_onnx_student_and_latency(hdrnet_run, exported):
    from kdcore.export import onnx_latency_ms

    model = OnnxStudent(hdrnet_run / "model.onnx", threads=1)
    assert model.task == kdcore.Task(kind="sr", scale=2)
    probe = torch.rand(1, 3, 32, 32)
    assert onnx_latency_ms(hdrnet_run / "model.onnx", probe, threads=1, runs=2) > 0
    assert onnx_latency_ms(model, probe, threads=1, runs=1) > 0


def test_int8_reports_psnr_against_float(hdrnet_run, exported, tmp_path):
    report = kdcore.export(hdrnet_run, tmp_path / "m.onnx", int8=True)
    q = report["int8"]
    assert (tmp_path / "m.int8.onnx").is_file() and q["bytes"] < report["bytes"]
    assert q["min_psnr_db_vs_float"] is None or q["min_psnr_db_vs_float"] > 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.int8.onnx", "m.onnx"]


def test_summary_table_shows_onnxruntime_latency_when_present():
    from kdcore.cli import format_table

    summary = {"baseline": {"name": "bicubic", "psnr": 30.0, "ssim": 0.9}, "teacher": None,
               "student": {"name": "hdrnet", "psnr": 31.0, "ssim": 0.91, "params": 5, "latency_ms": 8.0,
                           "onnx_latency_ms": 5.5}}
    table = format_table(summary)
    assert "onnxruntime ms" in table.splitlines()[0] and table.splitlines()[2].rstrip().endswith("5.5")
    del summary["student"]["onnx_latency_ms"]
    assert "onnxruntime" not in format_table(summary)
