"""ONNX export (``kdcore export``, ``kdcore.export``, :mod:`kdcore.onnx`): verification, fp16 and int8,
every bundled architecture, and the onnxruntime backend."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import kdcore
from kdcore.onnx import ExportError, OnnxStudent, export_student

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
def fitted_run(hdrnet_run, tmp_path_factory) -> Path:
    """A copy of ``hdrnet_run`` whose validation targets are its own fp32 outputs (8-bit): its fp32
    PSNR is the cap, so any error of a lower-precision export is a positive PSNR drop."""
    import shutil

    from kdcore.data import load_image, save_image

    root = tmp_path_factory.mktemp("fitted")
    run = shutil.copytree(hdrnet_run, root / "run")
    spec = json.loads((run / "spec.json").read_text())
    pairs = kdcore.RunPlan.from_run(run).val_data.load(kdcore.Task(kind="sr", scale=2))
    student = kdcore.load(run)
    for folder in ("input", "target"):
        (root / folder).mkdir()
    for pair in pairs:
        save_image(pair.input, root / "input" / f"{pair.name}.png")
        with torch.inference_mode():
            out = student(load_image(root / "input" / f"{pair.name}.png")[None])[0]
        save_image(out, root / "target" / f"{pair.name}.png")
    spec["data"]["val"] = {"input": str(root / "input"), "target": str(root / "target")}
    (run / "spec.json").write_text(json.dumps(spec))
    (run / "export.json").write_text("{}")
    return run


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

    import kdcore.onnx.export as ex

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


#: tiny params of every bundled student (the spandrel plugin's eight architectures, both HDRNets)
BUNDLED = {
    "edsr": {"n_resblocks": 1, "n_feats": 8},
    "rcan": {"n_resgroups": 1, "n_resblocks": 1, "n_feats": 16, "reduction": 4},
    "swinir": {"embed_dim": 12, "depths": [2], "num_heads": [2], "window_size": 4, "img_size": 16},
    "esrgan": {"num_filters": 8, "num_blocks": 1},
    "span": {"feature_channels": 8},
    "compact": {"num_feat": 8, "num_conv": 2},
    "safmn": {"dim": 8, "n_blocks": 1},
    "omnisr": {"num_feat": 8, "res_num": 1, "window_size": 4},
    "hdrnet": TINY,
    "deformable-hdrnet": TINY,
}


@pytest.mark.parametrize("name, params, kind", [
    *[(name, params, "sr") for name, params in BUNDLED.items()],
    ("hdrnet", TINY, "enhance"),
    ("deformable-hdrnet", {**TINY, "slice_offset_mode": "pixel"}, "enhance"),
    ("swinir", {**BUNDLED["swinir"], "upsampler": "pixelshuffle"}, "enhance"),
])
def test_bundled_students_export(name, params, kind, tmp_path):
    """Random weights (the deformable parts made non-zero so the offsets matter), verified on two
    odd sizes other than the traced one: windowed attention (swinir, omnisr) pads to its window
    inside the graph, and safmn's pooling sizes follow the input."""
    task = kdcore.Task(kind=kind, scale=2 if kind == "sr" else 1)
    model = kdcore.create("student", name, params, task).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "offset" in n:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    report = export_student(model, task, tmp_path / "m.onnx", name=name, sizes=((1, 37, 53), (2, 29, 43)))
    assert report["max_abs_diff"] <= 1e-4
    assert [r["size"] for r in report["verification"]] == [[37, 53], [29, 43]]


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
    from kdcore.onnx import onnx_latency_ms

    model = OnnxStudent(hdrnet_run / "model.onnx", threads=1)
    assert model.task == kdcore.Task(kind="sr", scale=2)
    probe = torch.rand(1, 3, 32, 32)
    assert onnx_latency_ms(hdrnet_run / "model.onnx", probe, threads=1, runs=2) > 0
    assert onnx_latency_ms(model, probe, threads=1, runs=1) > 0


def test_fp16_is_written_verified_and_reports_its_psnr_drop(hdrnet_run, exported, tmp_path):
    import onnx

    report = kdcore.export(hdrnet_run, tmp_path / "m16.onnx", dtype="fp16")
    model = onnx.load(str(tmp_path / "m16.onnx"))
    kinds = {onnx.TensorProto.DataType.Name(t.data_type) for t in model.graph.initializer}
    assert "FLOAT16" in kinds and "FLOAT" not in kinds  # weights in fp16
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 in and out
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["precision"] == "fp16" and meta["scale"] == "2"
    assert report["precision"] == "fp16" and 0 < report["bytes"] < report["bytes_fp32"]
    assert abs(report["psnr_drop_db"]) <= 0.1 and report["max_drop_db"] == 0.1
    assert report["psnr_fp32_db"] > 0 and report["min_psnr_vs_fp32_db"] > 40
    assert {r["name"] for r in report["precision_verification"]} == {"coffee", "chelsea"}
    assert report["latency_ms"] > 0 and report["latency_input"] == [1, 3, 32, 32]
    on_disk = json.loads((hdrnet_run / "export.json").read_text())
    assert on_disk["psnr_drop_db"] == report["psnr_drop_db"] and on_disk["file"] == str(tmp_path / "m16.onnx")
    y = OnnxStudent(tmp_path / "m16.onnx")(torch.rand(1, 3, 29, 43))
    assert y.dtype == torch.float32 and y.shape == (1, 3, 58, 86)


def test_cli_quantize_int8_writes_a_static_int8_model(hdrnet_run, exported, tmp_path, capsys):
    import onnx

    from kdcore.cli import main

    target = tmp_path / "m8.onnx"
    assert main(["export", str(hdrnet_run), "-o", str(target), "--quantize", "int8", "--max-drop", "50"]) == 0
    out = capsys.readouterr().out
    assert "int8: PSNR" in out and "drop" in out and str(target) in out
    ops = {n.op_type for n in onnx.load(str(target)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # static: activations quantised with calibrated ranges
    report = json.loads((hdrnet_run / "export.json").read_text())
    assert report["precision"] == "int8" and report["calibration"]["patches"] > 0
    assert report["psnr_drop_db"] <= 50 and report["bytes"] == target.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m8.onnx"]


def test_a_drop_beyond_max_drop_is_exit_1_naming_it_and_writes_nothing(fitted_run, capsys):
    from kdcore.cli import main

    assert main(["export", str(fitted_run), "--int8", "--max-drop", "0.5"]) == 1
    err = capsys.readouterr().err
    assert "deprecated" in err and "--quantize int8" in err  # --int8 is the old spelling of --quantize int8
    drop = re.search(r"the int8 model loses ([\d.]+) dB PSNR \(100\.00 -> ([\d.]+) dB on 2 validation images\)", err)
    assert drop and float(drop.group(1)) > 0.5, err
    assert "more than --max-drop 0.5 dB (nothing written)" in err and "Traceback" not in err
    assert not (fitted_run / "model.int8.onnx").exists()
    assert (fitted_run / "export.json").read_text() == "{}"  # the earlier report stands


@pytest.mark.parametrize("args, message", [
    (["--dtype", "bf16"], "invalid choice: 'bf16'"),
    (["--quantize", "int4"], "invalid choice: 'int4'"),
    (["--max-drop", "-1"], "--max-drop: -1.0 dB must be at least 0"),
    (["--max-drop", "x"], "invalid float value: 'x'"),
    (["--quantize", "int8", "--dtype", "fp16"], "--quantize int8 and --dtype fp16: give one of them"),
])
def test_cli_export_bad_values_exit_2(hdrnet_run, tmp_path, capsys, args, message):
    from kdcore.cli import main

    try:
        code = main(["export", str(hdrnet_run), "-o", str(tmp_path / "x.onnx"), *args])
    except SystemExit as exc:  # argparse's own checks
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_python_export_options_are_spelled_as_keywords(hdrnet_run):
    with pytest.raises(kdcore.SpecError, match=r"dtype='bf16' is not one of fp32, fp16"):
        kdcore.export(hdrnet_run, dtype="bf16")
    with pytest.raises(kdcore.SpecError, match=r"max_drop=-1 dB must be at least 0"):
        kdcore.export(hdrnet_run, quantize="int8", max_drop=-1)


def test_summary_table_shows_onnxruntime_latency_when_present():
    from kdcore.cli import format_table

    summary = {"baseline": {"name": "bicubic", "psnr": 30.0, "ssim": 0.9}, "teacher": None,
               "student": {"name": "hdrnet", "psnr": 31.0, "ssim": 0.91, "params": 5, "latency_ms": 8.0,
                           "onnx_latency_ms": 5.5}}
    table = format_table(summary)
    assert "onnxruntime ms" in table.splitlines()[0] and table.splitlines()[2].rstrip().endswith("5.5")
    del summary["student"]["onnx_latency_ms"]
    assert "onnxruntime" not in format_table(summary)
