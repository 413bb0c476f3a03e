"""forward-adaptation through the engine: bind at build time, `kdcore validate`, a short run."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import kdcore
from kdcore.engine.events import Message
import numpy as np
import pytest
import torch
from kdcore import SpecError, Task
from kdcore.cli import main
from PIL import Image
from safetensors.torch import save_file

SMALL = {"net_input_size": 32, "spatial_bins": 2, "luma_bins": 4}
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def spec(tmp_path: Path) -> dict:
    """A tiny sr ×2 spec: hdrnet teacher (random weights saved as its checkpoint), deformable student."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 2), ("val", 1)):
        (tmp_path / split).mkdir()
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(tmp_path / split / f"{i}.png")
    torch.manual_seed(1)
    teacher = kdcore.create("teacher", "hdrnet", SMALL, Task(kind="sr", scale=2))
    save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, tmp_path / "teacher.safetensors")
    return {
        "task": {"kind": "sr", "scale": 2},
        "data": {"train": str(tmp_path / "train"), "val": str(tmp_path / "val"), "patch_size": 32, "batch_size": 2},
        "teacher": {"name": "hdrnet", "params": SMALL, "checkpoint": str(tmp_path / "teacher.safetensors")},
        "student": {"name": "deformable-hdrnet", "params": SMALL},
        "losses": [{"name": "l1"}, {"name": "forward-adaptation", "weight": 1.0}],
        "train": {"steps": 3, "lr": 0.003, "warmup_steps": 0, "log_every": 1},
        "output": str(tmp_path / "run"),
    }


def test_validate_prints_the_match(spec, tmp_path, capsys) -> None:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "losses[1]: forward-adaptation: 28 of 34 student tensors match the teacher's" in out


def test_nothing_matching_fails_validate_naming_the_loss_and_both_models(spec, tmp_path, capsys) -> None:
    spec["losses"][1]["params"] = {"include": ["slice_offsets.*"]}
    with pytest.raises(SpecError) as err:
        kdcore.validate(spec)
    message = str(err.value)
    assert message.startswith("losses[1]: forward-adaptation: no parameter of the student")
    assert "(student 'deformable-hdrnet', teacher 'hdrnet')" in message
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    assert main(["validate", str(path)]) == 2
    assert "losses[1]" in capsys.readouterr().err


def test_a_params_error_from_bind_is_located_at_the_param(spec) -> None:
    spec["losses"][1]["params"] = {"teacher": 1}
    located = r"^losses\[1\]\.params\.teacher: 1 names teacher 1.*\(student 'deformable-hdrnet'"
    with pytest.raises(SpecError, match=located):
        kdcore.validate(spec)


def test_a_missing_teacher_checkpoint_still_binds_in_validate(spec, tmp_path, capsys) -> None:
    spec["teacher"]["checkpoint"] = str(tmp_path / "not-yet" / "model.safetensors")
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["validate", str(path)]) == 0
    assert "28 of 34 student tensors match" in capsys.readouterr().out


def test_without_a_teacher_the_spec_is_refused(spec) -> None:
    del spec["teacher"]
    with pytest.raises(SpecError, match=r"losses\[1\].*needs a teacher"):
        kdcore.validate(spec)


def test_a_run_pulls_the_students_weights_towards_the_teachers(spec) -> None:
    spec["losses"] = [{"name": "forward-adaptation"}]
    messages: list[str] = []

    def callback(event) -> None:
        if isinstance(event, Message):
            messages.append(event.text)

    kdcore.run(spec, callback=callback)
    assert any("forward-adaptation: 28 of 34 student tensors match" in m for m in messages)
    out = Path(spec["output"])
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    values = [r["loss/forward-adaptation"] for r in logged if "loss/forward-adaptation" in r]
    assert len(values) == 3 and values[0] > values[1] > values[2] > 0
    # the student's weights are saved, never the teacher's
    student = kdcore.load(out)
    assert any("offset" in n for n, _ in student.named_parameters())


def test_the_example_spec_validates(capsys) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the quickstart teacher may not have been trained yet
        assert main(["validate", str(ROOT / "examples" / "distill-forward-adaptation.json")]) == 0
    assert "forward-adaptation: 28 of 34 student tensors match the teacher's" in capsys.readouterr().out
