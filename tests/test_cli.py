"""The command line through a subprocess: exit status, messages, nothing written on bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest


def kd(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "kdcore", *map(str, args)], capture_output=True, text=True, cwd=cwd)


@pytest.fixture
def spec_file(tmp_path, tiny_spec):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(tiny_spec))
    return path


def test_validate_ok(spec_file):
    out = kd("validate", spec_file)
    assert out.returncode == 0, out.stderr
    assert "valid" in out.stdout and "student=tiny-sr" in out.stdout


def test_bad_spec_exits_2_names_the_location_and_writes_nothing(spec_file, tiny_spec):
    tiny_spec["losses"].append({"name": "charbonnier", "params": {"eps": "x"}})
    spec_file.write_text(json.dumps(tiny_spec))
    for command in ("validate", "run"):
        out = kd(command, spec_file)
        assert out.returncode == 2
        assert "losses[1].params.eps" in out.stderr and "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) <= 3
    assert not Path(tiny_spec["output"]).exists()


def test_bad_command_line_exits_2(spec_file):
    assert kd("run").returncode == 2
    out = kd("run", spec_file, "--set", "train.stepz=3")
    assert out.returncode == 2 and "did you mean 'train.steps'" in out.stderr
    assert kd("frobnicate").returncode == 2


def test_run_eval_enhance(spec_file, tiny_spec, tiny_images, tmp_path):
    out = kd("run", spec_file, "--quiet", "--set", "train.steps=2")
    assert out.returncode == 0, out.stderr
    for label in ("baseline (bicubic)", "student (tiny-sr)", "PSNR dB"):
        assert label in out.stdout
    run_dir = Path(tiny_spec["output"])
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 2
    # the same spec again is refused only if it differs: a different one needs --overwrite
    out = kd("run", spec_file, "--quiet", "--set", "train.steps=3")
    assert out.returncode == 2 and "--overwrite" in out.stderr

    out = kd("eval", run_dir, "--json")
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout)
    assert metrics["images"] == 2 and metrics["student"]["psnr"] > 0

    image = tiny_images["val"] / "coffee.png"
    out = kd("enhance", run_dir, image, "-o", tmp_path / "enhanced")
    assert out.returncode == 0, out.stderr
    from PIL import Image

    assert Image.open(tmp_path / "enhanced" / "coffee.png").size == (128, 128)  # ×2
    out = kd("enhance", run_dir, tmp_path / "nope.png", "-o", tmp_path / "enhanced2")
    assert out.returncode == 2 and "nope.png" in out.stderr and not (tmp_path / "enhanced2").exists()


def test_schema_plugins_list():
    out = kd("schema")
    assert out.returncode == 0
    schema = json.loads(out.stdout)
    assert "l1" in schema["$defs"]["LossSpec"]["properties"]["name"]["enum"]
    out = kd("plugins", "--json")
    records = {r["name"]: r for r in json.loads(out.stdout)}
    assert records["kdcore"]["status"] == "loaded"
    assert {"kind": "teacher", "name": "bicubic"} in records["kdcore"]["components"]
    out = kd("list", "losses", "--json")
    losses = {r["name"]: r for r in json.loads(out.stdout)["losses"]}
    assert losses["charbonnier"]["params"]["eps"]["default"] == 0.001
    out = kd("list")
    assert out.returncode == 0 and "students:" in out.stdout and "tiny-sr" in out.stdout


def test_unknown_run_folder_is_an_error(tmp_path):
    out = kd("eval", tmp_path)
    assert out.returncode == 2 and "not a kdcore run folder" in out.stderr
