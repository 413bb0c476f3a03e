"""Training you can trust: teacher cache, exact resume after kill -9, multi-teacher, EMA, AMP."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import kdcore
from kdcore.engine.events import StepEnded
from kdcore.errors import SpecError


def _weights(folder) -> dict:
    return load_file(Path(folder) / "model.safetensors")


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _distill(tiny_spec, out, **train):
    spec = dict(tiny_spec, output=str(out), teacher={"name": "gamma-up"})
    spec["losses"] = [{"name": "l1", "params": {"against": "teacher"}}]
    spec["train"] = dict(tiny_spec["train"], steps=4, **train)
    return spec


def test_teacher_cache_gives_the_live_targets(tiny_spec, tmp_path, monkeypatch):
    monkeypatch.setenv("KDCORE_CACHE", str(tmp_path / "cache"))
    kdcore.run(_distill(tiny_spec, tmp_path / "live"))
    kdcore.run(_distill(tiny_spec, tmp_path / "memory", teacher_cache="memory"))
    # the teacher is exactly equivariant to aligned crops and flips: training is bit-identical
    assert _same(_weights(tmp_path / "live"), _weights(tmp_path / "memory"))

    kdcore.run(_distill(tiny_spec, tmp_path / "disk", teacher_cache="disk"))
    files = sorted((tmp_path / "cache" / "teacher-outputs").rglob("*.safetensors"))
    assert 1 <= len(files) <= 3  # at most one per training image (computed when first sampled)
    assert load_file(files[0])["image"].dtype == torch.float16
    live, disk = _weights(tmp_path / "live"), _weights(tmp_path / "disk")
    assert all(torch.allclose(live[k], disk[k], atol=1e-3) for k in live)
    stamp = [f.stat().st_mtime_ns for f in files]
    warm = kdcore.run(_distill(tiny_spec, tmp_path / "disk2", teacher_cache="disk"))
    assert [f.stat().st_mtime_ns for f in files] == stamp  # reused, not recomputed
    assert warm["teacher_cache"]["misses"] == 0 and warm["teacher_cache"]["hits"] == 4 * 2  # every patch read
    assert _same(_weights(tmp_path / "disk"), _weights(tmp_path / "disk2"))
    # another teacher (other params) gets other entries
    spec = _distill(tiny_spec, tmp_path / "disk3", teacher_cache="disk")
    spec["teacher"]["params"] = {"gamma": 0.5}
    kdcore.run(spec)
    assert len(list((tmp_path / "cache" / "teacher-outputs").rglob("*.safetensors"))) == 2 * len(files)


def test_kill_9_then_resume_is_bit_identical(tiny_spec, tmp_path):
    spec = dict(tiny_spec)
    spec["losses"] = [{"name": "slow-l1", "params": {"delay": 0.15}}]
    spec["train"] = dict(tiny_spec["train"], steps=12, checkpoint_every=1)
    # both runs in fresh processes: state an earlier test left in this one must not
    # change the arithmetic of one side only
    full = dict(spec, output=str(tmp_path / "full"))
    (tmp_path / "full.json").write_text(json.dumps(full))
    done = subprocess.run([sys.executable, "-m", "kdcore", "run", str(tmp_path / "full.json"), "--quiet"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    part = dict(spec, output=str(tmp_path / "part"))
    spec_file = tmp_path / "part.json"
    spec_file.write_text(json.dumps(part))
    proc = subprocess.Popen([sys.executable, "-m", "kdcore", "run", str(spec_file), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = Path(part["output"]) / "checkpoint.pt"
    deadline = time.time() + 120
    while time.time() < deadline:
        if state.exists() and torch.load(state, weights_only=True)["step"] >= 4:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    step = torch.load(state, weights_only=True)["step"]
    assert 4 <= step < 12, "the run was not interrupted mid-way"
    assert not (Path(part["output"]) / "summary.json").exists()

    out = subprocess.run([sys.executable, "-m", "kdcore", "run", str(spec_file), "--resume", "--quiet"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"resuming" in out.stderr
    assert _same(_weights(tmp_path / "full"), _weights(tmp_path / "part"))
    steps = [json.loads(l)["step"] for l in open(tmp_path / "part" / "metrics.jsonl")]
    assert steps == sorted(steps) and len(steps) == len(set(steps)) + 1  # each step once, plus the final eval


def test_resume_without_checkpoint_is_refused(tiny_spec):
    with pytest.raises(SpecError, match="holds no checkpoint"):
        kdcore.run(tiny_spec, resume=True)


def test_multi_teacher_ensemble_and_features_by_index(tiny_spec, tmp_path):
    for name, channels in (("t0", 5), ("t1", 7)):
        kdcore.run(dict(tiny_spec, output=str(tmp_path / name), student={"name": "tiny-sr", "params": {"channels": channels}}))
    teachers = [
        {"name": "tiny-sr", "params": {"channels": 5}, "checkpoint": str(tmp_path / "t0"), "weight": 1},
        {"name": "tiny-sr", "params": {"channels": 7}, "checkpoint": str(tmp_path / "t1"), "weight": 3},
    ]
    spec = dict(tiny_spec, teacher=teachers, output=str(tmp_path / "student"))
    spec["losses"] = [{"name": "l1", "params": {"against": "teacher"}},
                      {"name": "feat-l2", "params": {"teacher": "1/head"}},
                      {"name": "feat-l2", "params": {"teacher": "head"}}]
    summary = kdcore.run(spec)
    assert summary["teacher"]["name"] == ["tiny-sr", "tiny-sr"]
    state = torch.load(tmp_path / "student" / "checkpoint.pt", weights_only=True)
    assert state["losses"]["1.adapter.conv.weight"].shape == (7, 4, 1, 1)  # teacher 1 has 7 channels
    assert state["losses"]["2.adapter.conv.weight"].shape == (5, 4, 1, 1)  # a bare path: teacher 0
    spec["losses"][1]["params"]["teacher"] = "2/head"
    with pytest.raises(SpecError, match=r"losses\[1\].params: '2/head' names teacher 2, but the spec has 2"):
        kdcore.validate(spec)

    from kdcore.engine.build import build_run

    spec["losses"] = [{"name": "l1", "params": {"against": "teacher"}}]
    run = build_run(kdcore.RunPlan.from_spec(spec), torch.device("cpu"), for_run=True)
    x = torch.rand(1, 3, 8, 8)
    a, b = (torch.nn.Sequential(t).eval() for t in run.teachers)
    with torch.no_grad():
        expected = 0.25 * a(x) + 0.75 * b(x)
    assert torch.allclose(run.teacher_forward(x).image, expected, atol=1e-6)


def test_ema_is_evaluated_and_saved(tiny_spec):
    tiny_spec["train"] = dict(tiny_spec["train"], ema=0.5, steps=4)
    kdcore.run(tiny_spec)
    state = torch.load(Path(tiny_spec["output"]) / "checkpoint.pt", weights_only=True)
    saved = _weights(tiny_spec["output"])
    ema = {k.removeprefix("module."): v for k, v in state["ema"].items()}
    assert _same(saved, {k: ema[k] for k in saved})
    assert not _same(saved, {k: state["student"][k] for k in saved})


def test_bf16_autocast_runs(tiny_spec):
    tiny_spec["train"] = dict(tiny_spec["train"], amp="bf16")
    summary = kdcore.run(tiny_spec)
    assert summary["student"]["psnr"] > 10


def test_unlabeled_zoom_in_data(tiny_spec, tiny_images):
    from kdcore.data import load_image
    from kdcore.engine.feed import load_unlabeled

    tiny_spec["teacher"] = {"name": "gamma-up"}
    tiny_spec["data"].update(batch_size=4, unlabeled=[str(tiny_images["val"])], unlabeled_ratio=0.5)
    pairs = load_unlabeled(kdcore.RunPlan.from_spec(tiny_spec))
    # zoom-in: the unlabelled images are inputs at their own resolution (not downscaled), no target
    assert [p.target for p in pairs] == [None, None]
    assert torch.equal(pairs[1].input, load_image(tiny_images["val"] / "coffee.png"))
    steps = []
    summary = kdcore.run(tiny_spec, callback=lambda e: steps.append(e) if isinstance(e, StepEnded) else None)
    assert summary["steps"] == 3 and len(steps) == 3
    with pytest.raises(SpecError, match="data.unlabeled: unlabelled images are learnt from a teacher"):
        kdcore.validate(dict(tiny_spec, teacher=None))


def test_step_inputs_mix_labelled_and_unlabelled(tiny_spec, tiny_images):
    from kdcore.data import PatchDataset
    from kdcore.engine.build import build_run
    from kdcore.engine.feed import load_unlabeled, step_inputs
    from kdcore.interfaces import Task

    tiny_spec["teacher"] = {"name": "gamma-up"}
    tiny_spec["data"].update(batch_size=4, unlabeled=[str(tiny_images["val"])])
    plan = kdcore.RunPlan.from_spec(tiny_spec)
    run = build_run(plan, torch.device("cpu"), for_run=True)
    labelled = PatchDataset(plan.train_data.load(plan.task), plan.task, 32, length=2, seed=0)
    unlabelled = PatchDataset(load_unlabeled(plan), Task(kind="enhance"), 16, length=2, seed=1)
    collate = torch.utils.data.default_collate
    batches = [collate([labelled[0], labelled[1]]), collate([unlabelled[0], unlabelled[1]])]
    x, t_out, target = step_inputs(batches, run, None, plan.task.scale, torch.device("cpu"))
    assert x.shape == (4, 3, 16, 16)
    assert torch.equal(target[:2], batches[0]["target"])  # ground truth for the labelled rows
    assert torch.equal(target[2:], t_out.image[2:])  # the teacher's output for the unlabelled rows
