"""student.init, the no-teacher baselines (train.baseline) and several seeds (--seeds)."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import kdcore
from kdcore.engine.build import InitWarning, build_run
from kdcore.errors import SpecError


def kd(*args):
    return subprocess.run([sys.executable, "-m", "kdcore", *map(str, args)], capture_output=True, text=True)


@pytest.fixture
def teacher_run(tiny_spec, tmp_path):
    """A trained tiny-sr teacher (6 channels), the checkpoint of the specs below."""
    spec = dict(tiny_spec, output=str(tmp_path / "teacher"), student={"name": "tiny-sr", "params": {"channels": 6}})
    kdcore.run(spec)
    return tmp_path / "teacher"


def _distil(tiny_spec, teacher_run, **student):
    spec = dict(tiny_spec, teacher={"name": "tiny-sr", "params": {"channels": 6}, "checkpoint": str(teacher_run)})
    spec["student"] = {"name": "tiny-sr", "params": {"channels": 6}, **student}
    spec["losses"] = [{"name": "l1"}, {"name": "l1", "weight": 0.5, "params": {"against": "teacher"}}]
    return spec


def test_init_from_teacher_copies_every_matching_tensor(tiny_spec, teacher_run):
    spec = _distil(tiny_spec, teacher_run, init="teacher")
    plan, built = kdcore.api.check(spec)
    teacher = load_file(teacher_run / "model.safetensors")
    student = built.student.state_dict()
    assert all(torch.equal(student[k], teacher[k]) for k in teacher)
    assert built.notes == [f"student.init: copied {len(teacher)} of {len(teacher)} student tensors from teacher 'tiny-sr'"]
    # the same from a weights file (fine-tuning), printed by validate
    spec["student"]["init"] = str(teacher_run / "model.safetensors")
    spec_file = Path(tiny_spec["output"]).parent / "init.json"
    spec_file.write_text(json.dumps(spec))
    out = kd("validate", spec_file)
    assert out.returncode == 0, out.stderr
    assert f"student.init: copied {len(teacher)} of {len(teacher)}" in out.stdout


def test_init_that_copies_nothing_warns(tiny_spec, teacher_run):
    spec = _distil(tiny_spec, teacher_run, init="teacher")
    spec["teacher"] = {"name": "gamma-up"}  # an operator: no tensors at all
    spec["losses"] = [{"name": "l1"}]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, built = kdcore.api.check(spec)
    assert any(issubclass(w.category, InitWarning) and "no tensor of teacher 'gamma-up'" in str(w.message)
               for w in caught)
    assert built.notes[0].startswith("student.init: copied 0 of ")


def test_init_keys_are_checked(tiny_spec, teacher_run):
    spec = _distil(tiny_spec, teacher_run, init="teacher", checkpoint=str(teacher_run))
    with pytest.raises(SpecError, match="student.init: give student.init or student.checkpoint, not both"):
        kdcore.validate(spec)
    with pytest.raises(SpecError, match="student.init: 'teacher' needs a teacher"):
        kdcore.validate(dict(tiny_spec, student={"name": "tiny-sr", "init": "teacher"}))
    with pytest.raises(SpecError, match="train.baseline: 'init-only' needs"):
        kdcore.validate(dict(_distil(tiny_spec, teacher_run), train=dict(tiny_spec["train"], baseline=["init-only"])))


def test_init_rename_maps_student_names_to_the_source(tiny_spec, teacher_run, tmp_path):
    # a checkpoint saved under other names (a wrapper's "model." prefix): init_rename maps them back
    teacher = load_file(teacher_run / "model.safetensors")
    from safetensors.torch import save_file

    save_file({f"model.{k}": v for k, v in teacher.items()}, tmp_path / "wrapped.safetensors")
    spec = _distil(tiny_spec, teacher_run, init=str(tmp_path / "wrapped.safetensors"))
    with pytest.warns(InitWarning, match="no tensor of"):
        _, built = kdcore.api.check(spec)
    assert built.notes[0].startswith("student.init: copied 0 of ")
    spec["student"]["init_rename"] = {"(.*)": "model.\\1"}
    _, built = kdcore.api.check(spec)
    student = built.student.state_dict()
    assert all(torch.equal(student[k], teacher[k]) for k in teacher)
    n = len(teacher)
    assert built.notes == [f"student.init: copied {n} of {n} student tensors from {tmp_path / 'wrapped.safetensors'}"
                           f" ({n} through student.init_rename)"]


def test_init_rename_skips_teacher_blocks_of_a_deeper_edsr():
    # a 1-block edsr student from a 3-block edsr teacher: head, tail and block 0 by name, the
    # teacher's last body conv (body.3) into the student's (body.1) by init_rename
    task = kdcore.Task(kind="sr", scale=2)
    teacher = kdcore.create("teacher", "edsr", {"n_resblocks": 3, "n_feats": 8}, task)
    student = kdcore.create("student", "edsr", {"n_resblocks": 1, "n_feats": 8}, task)
    from kdcore.engine.build import copy_matching

    _, rest = copy_matching(student, teacher.state_dict())
    assert rest == ["body.1.weight", "body.1.bias"]  # same shape, but the teacher's body.1 is a block
    copied, rest = copy_matching(student, teacher.state_dict(), {"body\\.1\\.(weight|bias)": "body.3.\\1"})
    assert rest == [] and len(copied) == len(student.state_dict())
    assert torch.equal(student.state_dict()["body.1.weight"], teacher.state_dict()["body.3.weight"])


def test_init_rename_errors_and_warnings(tiny_spec, teacher_run):
    spec = _distil(tiny_spec, teacher_run, init_rename={"head\\.(.*)": "head.\\1"})
    with pytest.raises(SpecError, match="student.init_rename: renames the tensors student.init copies"):
        kdcore.validate(spec)
    spec["student"]["init"] = "teacher"
    spec["student"]["init_rename"] = {"head\\.(": "x"}
    with pytest.raises(SpecError, match=r"student.init_rename.*not a regular expression"):
        kdcore.validate(spec)
    spec["student"]["init_rename"] = {"head\\.(.*)": "head.\\2"}
    with pytest.raises(SpecError, match=r"refers to group 2"):
        kdcore.validate(spec)
    spec["student"]["init_rename"] = {"heads\\.(.*)": "head.\\1"}  # a typo: matches nothing
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kdcore.api.check(spec)
    assert any(issubclass(w.category, InitWarning) and "'heads\\\\.(.*)' matches no tensor of the student" in str(w.message)
               for w in caught)


def test_baselines_alone_and_init_only(tiny_spec, teacher_run):
    spec = _distil(tiny_spec, teacher_run, init="teacher", init_rename={"(body)\\.(.*)": "\\1.\\2"})
    spec["train"] = dict(tiny_spec["train"], baseline=["alone", "init-only"])
    summary = kdcore.run(spec)
    out = Path(spec["output"])
    alone = json.loads((out / "alone" / "spec.json").read_text())
    assert alone["teacher"] is None and alone["student"]["init"] is None and alone["student"]["init_rename"] == {}
    assert [l["params"].get("against", "target") for l in alone["losses"]] == ["target"]  # teacher term dropped
    assert alone["train"]["seed"] == spec["train"].get("seed", 0) and alone["train"]["steps"] == 3
    init_only = json.loads((out / "init-only" / "spec.json").read_text())
    assert init_only["student"]["init"] == "teacher" and len(init_only["losses"]) == 1
    assert init_only["student"]["init_rename"] == spec["student"]["init_rename"]
    stored = json.loads((out / "summary.json").read_text())
    assert stored == json.loads(json.dumps(summary))
    assert summary["alone"]["psnr"] == json.loads((out / "alone" / "summary.json").read_text())["student"]["psnr"]
    assert summary["kd_gain_db"] == pytest.approx(summary["student"]["psnr"] - summary["alone"]["psnr"])
    assert summary["kd_gain_over_init_only_db"] == pytest.approx(summary["student"]["psnr"] - summary["init-only"]["psnr"])


def test_seeds_write_an_aggregate(tiny_spec, teacher_run, tmp_path):
    spec = _distil(tiny_spec, teacher_run)
    spec["output"] = str(tmp_path / "seeds")
    spec_file = tmp_path / "seeds.json"
    spec_file.write_text(json.dumps(spec))
    out = kd("run", spec_file, "--seeds", "0,1", "--baseline", "alone", "--quiet", "--set", "train.steps=2")
    assert out.returncode == 0, out.stderr
    assert "2 seeds: 0, 1" in out.stdout and "KD gain:" in out.stdout
    result = json.loads((tmp_path / "seeds" / "summary.json").read_text())
    runs = [json.loads((tmp_path / "seeds" / f"seed-{s}" / "summary.json").read_text()) for s in (0, 1)]
    psnrs = [r["student"]["psnr"] for r in runs]
    assert result["seeds"] == [0, 1]
    assert result["student"]["psnr"]["mean"] == pytest.approx(sum(psnrs) / 2)
    assert result["student"]["psnr"]["min"] == min(psnrs) and result["student"]["psnr"]["max"] == max(psnrs)
    assert result["kd_gain_db"]["mean"] == pytest.approx(sum(r["kd_gain_db"] for r in runs) / 2)
    assert result["kd_gain_verdict"] in {"within noise", "gain", "loss"}
    assert json.loads((tmp_path / "seeds" / "seed-1" / "spec.json").read_text())["train"]["seed"] == 1
    bad = kd("run", spec_file, "--seeds", "0,x")
    assert bad.returncode == 2 and "--seeds" in bad.stderr


def test_aggregate_verdict():
    from kdcore.experiments import aggregate

    def summary(student, alone):
        block = {"name": "s", "params": 1, "ssim": 0.9}
        return {"student": {**block, "psnr": student}, "alone": {**block, "psnr": alone},
                "baseline": {**block, "psnr": 30.0}, "kd_gain_db": student - alone}

    apart = aggregate([summary(33.0, 32.0), summary(33.1, 32.1)], [0, 1], [Path("a"), Path("b")])
    assert apart["kd_gain_verdict"] == "gain" and apart["kd_gain_db"]["mean"] == pytest.approx(1.0)
    close = aggregate([summary(33.0, 32.9), summary(32.8, 33.05)], [0, 1], [Path("a"), Path("b")])
    assert close["kd_gain_verdict"] == "within noise"


def test_enhance_baseline_without_targets_is_refused(tiny_spec):
    spec = dict(tiny_spec, task={"kind": "enhance"}, teacher={"name": "gamma-up"})
    spec["train"] = dict(tiny_spec["train"], baseline="alone")
    with pytest.raises(SpecError, match="train.baseline: the student trained without the teacher needs ground truth"):
        kdcore.validate(spec)


def test_deformable_student_from_hdrnet_teacher_equals_it_at_step_0():
    task = kdcore.Task(kind="sr", scale=2)
    teacher = kdcore.create("teacher", "hdrnet", {}, task).eval()
    student = kdcore.create("student", "deformable-hdrnet", {}, task).eval()
    from kdcore.engine.build import copy_matching

    copied, rest = copy_matching(student, teacher.state_dict())
    assert len(copied) == len(teacher.state_dict()) and rest  # every hdrnet tensor; the deformable extras not
    x = torch.rand(1, 3, 32, 40)
    with torch.no_grad():
        assert torch.allclose(kdcore.as_output(student(x)).image, kdcore.as_output(teacher(x)).image, atol=1e-5)


def test_build_run_from_plan_is_importable():
    assert callable(build_run)


def test_reuse_returns_a_finished_run_of_the_same_spec(tiny_spec):
    first = kdcore.run(tiny_spec)
    weights = (Path(tiny_spec["output"]) / "model.safetensors").read_bytes()
    again = kdcore.run(tiny_spec, reuse=True)
    assert again == json.loads(json.dumps(first))
    assert (Path(tiny_spec["output"]) / "model.safetensors").read_bytes() == weights
    changed = kdcore.run(tiny_spec, reuse=True, overwrite=True, train__steps=2)  # another spec: trained
    assert changed["steps"] == 2


def test_onnx_latency_is_measured_when_asked(tiny_spec):
    tiny_spec["train"] = dict(tiny_spec["train"], steps=1, onnx_latency=True)
    summary = kdcore.run(tiny_spec)
    assert summary["student"]["onnx_latency_ms"] > 0
    from kdcore.cli import format_table

    assert "onnxruntime ms" in format_table(summary)
