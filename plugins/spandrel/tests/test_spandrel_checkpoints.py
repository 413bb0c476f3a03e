"""Checkpoints through the command line and the API: a run that trains, and every way a file is wrong."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import spandrel
import torch
from spandrel.architectures.Compact import Compact
from spandrel.architectures.RCAN import RCAN

import kdcore
from kdcore.cli import main


def kd(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kdcore", *map(str, args)], capture_output=True, text=True, check=False)


def _write(spec: dict, tmp_path: Path) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return path


def _rcan(scale: int) -> RCAN:
    """A random-initialised RCAN made with spandrel alone: a checkpoint kdcore never saw."""
    return RCAN(scale=scale, n_resgroups=1, n_resblocks=1, n_feats=16, reduction=4)


class _CreatesAFile:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_spandrel_teacher_validates_and_trains(spandrel_spec, tmp_path, capsys) -> None:
    torch.save(_rcan(2).state_dict(), spandrel_spec["teacher"]["checkpoint"])
    spec = _write(spandrel_spec, tmp_path)
    assert main(["validate", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "teacher: RCAN ×2" in out and "parameters" in out
    summary = kdcore.run(spec)
    assert summary["steps"] == 3 and summary["teacher"]["psnr"] > 0 and summary["student"]["psnr"] > 0
    # the trained student is spandrel's Compact under its own key names
    desc = spandrel.ModelLoader().load_from_file(Path(spandrel_spec["output"]) / "model.safetensors")
    assert desc.architecture.id == "Compact" and desc.scale == 2
    student = kdcore.load(spandrel_spec["output"])
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(student(x), desc.model.eval()(x).clamp(0, 1))


def test_wrong_scale_exits_2_names_the_place_and_writes_nothing(spandrel_spec, tmp_path, capsys) -> None:
    torch.save(_rcan(4).state_dict(), spandrel_spec["teacher"]["checkpoint"])
    spec = _write(spandrel_spec, tmp_path)
    out = kd("run", spec)  # the real command line, once; validate in-process
    assert main(["validate", str(spec)]) == 2
    for err in (out.stderr, capsys.readouterr().err):
        assert "teacher.checkpoint" in err and "RCAN" in err
        assert "model is ×4, task.scale is 2" in err and "Traceback" not in err
    assert out.returncode == 2
    assert not Path(spandrel_spec["output"]).exists()


def test_a_pickle_that_carries_code_is_refused_and_never_runs(spandrel_spec, tmp_path) -> None:
    marker = tmp_path / "pwned"
    with open(spandrel_spec["teacher"]["checkpoint"], "wb") as fh:
        pickle.dump({"weight": _CreatesAFile(str(marker))}, fh)
    spec = _write(spandrel_spec, tmp_path)
    out = kd("run", spec)
    assert out.returncode == 2
    assert "teacher.checkpoint" in out.stderr and "none of its code ran" in out.stderr
    assert not marker.exists() and not Path(spandrel_spec["output"]).exists()
    # the same object in torch's zip format, under every pickle extension
    for suffix in (".pt", ".ckpt"):
        path = tmp_path / f"evil{suffix}"
        torch.save({"weight": _CreatesAFile(str(marker))}, path)
        assert main(["validate", str(spec), "--set", f"teacher.checkpoint={path}"]) == 2
        assert not marker.exists()


@pytest.mark.parametrize("case", ["truncated", "not-an-image-model", "one-channel", "unknown-keys", "torchscript"])
def test_bad_checkpoints_exit_2_with_the_location(case, spandrel_spec, tmp_path, capsys) -> None:
    path = Path(spandrel_spec["teacher"]["checkpoint"])
    if case == "truncated":
        torch.save(_rcan(2).state_dict(), path)
        path.write_bytes(path.read_bytes()[:2000])
        expected = "truncated"
    elif case == "not-an-image-model":
        torch.save(torch.nn.Linear(4, 2).state_dict(), path)
        expected = "no architecture"
    elif case == "one-channel":
        torch.save(Compact(num_in_ch=1, num_out_ch=1, num_feat=8, num_conv=2, upscale=2).state_dict(), path)
        expected = "1 input and 1 output channels"
    elif case == "unknown-keys":
        path = path.with_suffix(".safetensors")
        path.write_bytes(b"not safetensors at all")
        expected = "truncated or not a safetensors file"
    else:
        torch.jit.script(torch.nn.Linear(2, 2)).save(str(path.with_suffix(".pt")))
        path = path.with_suffix(".pt")
        expected = "TorchScript"
    spandrel_spec["teacher"]["checkpoint"] = str(path)
    assert main(["run", str(_write(spandrel_spec, tmp_path))]) == 2
    err = capsys.readouterr().err
    assert "teacher.checkpoint" in err and expected in err
    assert not Path(spandrel_spec["output"]).exists()


def test_unreadable_file_is_an_io_error(spandrel_spec, tmp_path, capsys) -> None:
    path = Path(spandrel_spec["teacher"]["checkpoint"])
    path.mkdir()  # a folder where a file should be: a run folder without model.safetensors
    assert main(["run", str(_write(spandrel_spec, tmp_path))]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_named_teacher_from_a_run_folder_and_token_paths(spandrel_spec, tmp_path, capsys) -> None:
    """A trained run folder is the checkpoint of a named teacher; token outputs are refused by name."""
    teacher_run = tmp_path / "teacher-run"
    spec = {**spandrel_spec, "output": str(teacher_run), "train": {"steps": 1, "log_every": 1}}
    spec.pop("teacher")
    spec["student"] = {"name": "swinir", "params": {"embed_dim": 12, "depths": [2], "num_heads": [2],
                                                    "window_size": 4, "img_size": 16}}
    kdcore.run(spec)
    distil = {**spandrel_spec, "teacher": {"name": "swinir", "params": spec["student"]["params"],
                                            "checkpoint": str(teacher_run)},
              "losses": [{"name": "feature-matching",
                          "params": {"pairs": [{"student": "body.1", "teacher": "layers.0"}]}}]}
    assert main(["validate", str(_write(distil, tmp_path))]) == 2
    err = capsys.readouterr().err
    assert "layers.0" in err and "B×C×H×W" in err
    distil["losses"][0]["params"]["pairs"][0]["teacher"] = "layers.0.conv"
    assert main(["validate", str(_write(distil, tmp_path))]) == 0
    assert "SwinIR ×2" in capsys.readouterr().out
