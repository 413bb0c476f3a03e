"""The engine end to end on tiny runs: run folder, distillation, feature taps, adapters, resume."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import kdcore
from kdcore.engine.events import StepEnded
from kdcore.engine.taps import FeatureTaps
from kdcore.errors import SpecError, TrainingError

def test_supervised_run_writes_the_run_folder(tiny_spec):
    summary = kdcore.run(tiny_spec)
    out = tiny_spec["output"]
    saved = json.loads(open(f"{out}/summary.json").read())
    assert saved == summary
    assert summary["steps"] == 3 and summary["teacher"] is None
    assert summary["baseline"]["name"] == "bicubic"
    assert summary["student"]["params"] == sum(p.numel() for p in kdcore.load(out).parameters())
    for key in ("psnr", "ssim"):
        assert summary["student"][key] > 0 and summary["baseline"][key] > 0
    assert 3 <= summary["student"]["latency_runs"] <= 5 and summary["student"]["latency_ms"] > 0
    records = [json.loads(l) for l in open(f"{out}/metrics.jsonl")]
    assert [r["step"] for r in records if not r.get("eval")] == [1, 2, 3]
    assert all("step" in r for r in records) and records[-1]["eval"]
    spec = json.loads(open(f"{out}/spec.json").read())
    assert spec["plugins"]["kdcore"] == kdcore.__version__ and spec["plugins"]["kdcore-tinyplug"] == "0.1.0"
    assert spec["train"]["optimizer"] == "adamw"  # defaults filled in
    images = sorted(p.name for p in (Path(out) / "images").iterdir())
    assert images == ["chelsea.png", "coffee.png", "strips.json"]  # a comparison image per validation image
    student = kdcore.load(out)
    assert not student.training
    weights = load_file(f"{out}/model.safetensors")
    assert all(torch.equal(weights[k], v) for k, v in student.state_dict().items())


def test_distillation_with_features_and_adapters(tiny_spec, tmp_path):
    teacher_run = dict(tiny_spec, output=str(tmp_path / "teacher"))
    teacher_run["student"] = {"name": "tiny-sr", "params": {"channels": 6}}
    kdcore.run(teacher_run)
    spec = dict(tiny_spec, teacher={"name": "tiny-sr", "params": {"channels": 6}, "checkpoint": str(tmp_path / "teacher")})
    spec["losses"] = [{"name": "l1", "params": {"against": "teacher"}}, {"name": "feat-l2", "weight": 0.1}]
    kdcore.validate(spec)
    steps = []
    summary = kdcore.run(spec, callback=lambda e: steps.append(e.terms) if isinstance(e, StepEnded) else None)
    assert summary["teacher"]["name"] == "tiny-sr" and summary["teacher"]["psnr"] is not None
    assert 3 <= summary["teacher"]["latency_runs"] <= 5
    assert set(steps[0]) == {"l1", "feat-l2"}
    state = torch.load(f"{spec['output']}/checkpoint.pt", weights_only=True)
    adapter = state["losses"]["1.adapter.conv.weight"]
    assert adapter.shape == (6, 4, 1, 1)  # channels inferred: student 4 -> teacher 6


def test_wrong_feature_path_is_a_spec_error(tiny_spec, tmp_path):
    spec = dict(tiny_spec, teacher={"name": "bicubic"})
    spec["losses"] = [{"name": "feat-l2", "params": {"student": "hed"}}]
    with pytest.raises(SpecError, match=r"losses\[0\].params: the student 'tiny-sr' has no module 'hed'; did you mean 'head'"):
        kdcore.validate(spec)


def test_feature_taps_capture_only_requested_paths():
    student = kdcore.create("student", "tiny-sr", {"channels": 3})
    taps = FeatureTaps(student, ["head", "body.1"])
    student(torch.rand(1, 3, 8, 8))
    feats = taps.collect()
    assert set(feats) == {"head", "body.1"} and feats["head"].shape == (1, 3, 16, 16)
    assert taps.collect() == {}
    taps.remove()
    student(torch.rand(1, 3, 8, 8))
    assert taps.collect() == {}


def test_interrupted_run_resumes_to_identical_weights(tiny_spec, tmp_path):
    full = dict(tiny_spec, output=str(tmp_path / "full"))
    full["train"] = dict(tiny_spec["train"], steps=4, checkpoint_every=2)
    kdcore.run(full)

    part = dict(full, output=str(tmp_path / "part"))

    def stop_at_3(event):
        if isinstance(event, StepEnded) and event.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        kdcore.run(part, callback=stop_at_3)
    assert torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)["step"] == 2
    changed = dict(part, train=dict(part["train"], lr=0.5))
    with pytest.raises(SpecError, match="resume=True: the spec differs .* train.lr"):
        kdcore.run(changed, resume=True)
    kdcore.run(part, resume=True)
    a = load_file(tmp_path / "full" / "model.safetensors")
    b = load_file(tmp_path / "part" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(l)["step"] for l in open(tmp_path / "part" / "metrics.jsonl")]
    assert steps == [json.loads(l)["step"] for l in open(tmp_path / "full" / "metrics.jsonl")]


def test_existing_different_run_is_refused(tiny_spec):
    kdcore.run(tiny_spec)
    other = dict(tiny_spec, train=dict(tiny_spec["train"], lr=0.01))
    with pytest.raises(SpecError, match="already holds a different run; pass overwrite=True"):
        kdcore.run(other)
    kdcore.run(other, overwrite=True)


def test_nan_loss_stops_with_step_and_term(tiny_spec):
    tiny_spec["losses"] = [{"name": "nan-at", "params": {"step": 2}}]
    with pytest.raises(TrainingError, match="step 2: loss 'nan-at' is not finite"):
        kdcore.run(tiny_spec)


def test_enhance_with_operator_style_teacher_has_no_target(tiny_spec, tmp_path):
    # an enhance run on plain photos: the teacher provides the targets and the reference
    spec = dict(tiny_spec, task={"kind": "enhance"}, teacher={"name": "bicubic"})
    summary = kdcore.run(spec)
    assert summary["measured_against"] == "teacher" and summary["baseline"]["name"] == "identity"
    with pytest.raises(SpecError, match="no targets"):
        kdcore.validate(dict(spec, teacher=None))


class _Sleeper(torch.nn.Module):
    """A model whose every call takes at least ``seconds``."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds, self.calls = seconds, 0

    def forward(self, x):
        import time

        self.calls += 1
        time.sleep(self.seconds)
        return x


def test_latency_stops_at_its_budget_after_the_minimum_runs():
    from kdcore.engine.evaluate import latency_samples

    slow = _Sleeper(0.02)
    times = latency_samples(slow, torch.zeros(1, 3, 4, 4), runs=5, budget_s=0.05, min_runs=3)
    assert len(times) == 3 and slow.calls == 4  # one warm-up call, then the minimum: 60 ms > the 50 ms budget
    assert min(times) >= 20


def test_a_model_slower_than_half_the_budget_is_timed_once():
    from kdcore.engine.evaluate import latency_samples

    slow = _Sleeper(0.05)
    times = latency_samples(slow, torch.zeros(1, 3, 4, 4), runs=5, budget_s=0.06, min_runs=3)
    assert len(times) == 1 and slow.calls == 2 and times[0] >= 50


def test_latency_takes_every_run_within_its_budget():
    from kdcore.engine.evaluate import latency_samples

    fast = _Sleeper(0.0)
    assert len(latency_samples(fast, torch.zeros(1, 3, 4, 4), runs=5, budget_s=60.0, min_runs=3)) == 5
