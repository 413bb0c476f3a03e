"""RunPlan (the spec resolved once) and data sources that load themselves, paired folders included."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import kdcore
from kdcore.engine.events import StepEnded
from kdcore.data import BuiltinSource, FolderSource, PairedSource, UnlabeledSource, source_from_spec
from kdcore.errors import DataError, SpecError
from kdcore.plan import RunPlan


def kd(*args):
    return subprocess.run([sys.executable, "-m", "kdcore", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def paired_images(tmp_path_factory, tiny_images) -> dict[str, Path]:
    """An enhance pair (a gamma retouch of each image, same size) and an sr pair (×2) of folders."""
    root = tmp_path_factory.mktemp("paired")
    out = {}
    for split in ("train", "val"):
        for kind in ("enh-in", "enh-tg", "sr-in", "sr-tg"):
            (root / f"{split}-{kind}").mkdir()
        for path in sorted(tiny_images[split].glob("*.png")):
            image = Image.open(path).convert("RGB")
            image.save(root / f"{split}-enh-in" / path.name)
            image.point(lambda v: int(255 * (v / 255) ** 0.7)).save(root / f"{split}-enh-tg" / path.name)
            w, h = image.size
            image.save(root / f"{split}-sr-tg" / path.name)
            image.resize((w // 2, h // 2), Image.BICUBIC).save(root / f"{split}-sr-in" / path.name)
        for kind in ("enh", "sr"):
            out[f"{split}-{kind}"] = {"input": str(root / f"{split}-{kind}-in"), "target": str(root / f"{split}-{kind}-tg")}
    return out


def _paired_spec(tmp_path, paired_images, kind: str) -> dict:
    task = {"kind": "enhance", "scale": 1} if kind == "enh" else {"kind": "sr", "scale": 2}
    return {
        "task": task,
        "data": {"train": paired_images[f"train-{kind}"], "val": paired_images[f"val-{kind}"],
                 "patch_size": 32, "batch_size": 2},
        "student": {"name": "tiny-sr", "params": {"channels": 4}},
        "losses": [{"name": "l1"}],
        "train": {"steps": 4, "lr": 0.001, "log_every": 1, "checkpoint_every": 2},
        "output": str(tmp_path / f"run-{kind}"),
    }


@pytest.mark.parametrize("kind", ["enh", "sr"])
def test_paired_folders_train_evaluate_and_resume(tmp_path, paired_images, kind):
    spec = _paired_spec(tmp_path, paired_images, kind)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    out = kd("validate", spec_file)
    assert out.returncode == 0, out.stderr
    out = kd("run", spec_file, "--quiet")
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / f"run-{kind}" / "summary.json").read_text())
    assert summary["measured_against"] == "target" and summary["student"]["psnr"] > 10
    # evaluation on a pair given on the command line, as JSON
    out = kd("eval", tmp_path / f"run-{kind}", "--data", json.dumps(paired_images[f"val-{kind}"]), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["images"] == 2
    # an interrupted paired run resumes to the same weights
    part = dict(spec, output=str(tmp_path / f"part-{kind}"))

    def stop_at_3(event):
        if isinstance(event, StepEnded) and event.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        kdcore.run(part, callback=stop_at_3)
    kdcore.run(part, resume=True)
    # the uninterrupted run to compare with, in this same process, like the resumed one
    kdcore.run(dict(spec, output=str(tmp_path / f"full-{kind}")))
    a = (tmp_path / f"full-{kind}" / "model.safetensors").read_bytes()
    b = (tmp_path / f"part-{kind}" / "model.safetensors").read_bytes()
    assert a == b


def _write(folder: Path, name: str, size=(40, 40)):
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 120, 200)).save(folder / name)


@pytest.mark.parametrize("problem", ["missing-stem", "sizes", "empty"])
def test_paired_data_errors_exit_2_and_write_nothing(tmp_path, problem):
    inp, tgt = tmp_path / "in", tmp_path / "tg"
    _write(inp, "a.png")
    _write(tgt, "a.png")
    if problem == "missing-stem":
        _write(inp, "lonely.png")
    elif problem == "sizes":
        _write(tgt, "b.png", (41, 40))
        _write(inp, "b.png")
    else:
        (tmp_path / "none").mkdir()
        tgt = tmp_path / "none"
    spec = {"task": {"kind": "enhance"}, "data": {"train": {"input": str(inp), "target": str(tgt)},
                                                   "val": {"input": str(inp), "target": str(tgt)},
                                                   "patch_size": 16, "batch_size": 1},
            "student": {"name": "tiny-sr"}, "losses": [{"name": "l1"}], "train": {"steps": 1},
            "output": str(tmp_path / "run")}
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    out = kd("run", spec_file, "--quiet")
    assert out.returncode == 2, out.stderr
    expected = {"missing-stem": "lonely", "sizes": "b.png", "empty": str(tgt)}[problem]
    assert expected in out.stderr and "data.train" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "run").exists()


def test_plan_round_trip_through_spec_json(tmp_path, tiny_spec, paired_images):
    tiny_spec["data"]["val"] = paired_images["val-sr"]
    tiny_spec["data"]["unlabeled"] = [tiny_spec["data"]["train"]]
    tiny_spec["teacher"] = {"name": "gamma-up", "params": {}}
    first, again = RunPlan.from_spec(tiny_spec), RunPlan.from_spec(tiny_spec)
    assert first == again
    folder = tmp_path / "stored"
    folder.mkdir()
    first.write_spec(folder)
    assert RunPlan.from_run(folder) == first
    stored = json.loads((folder / "spec.json").read_text())
    assert stored["teacher"]["params"] == {"gamma": 0.8}  # defaults filled in
    assert stored["plugins"]["kdcore"] == kdcore.__version__
    # each component is resolved once, to its registered class, with its spec location
    assert first.student.registration.cls.__name__ == "TinySR" and first.losses[0].where == "losses[0]"
    assert isinstance(first.train_data, FolderSource) and isinstance(first.val_data, PairedSource)
    assert isinstance(first.unlabeled[0], UnlabeledSource)
    assert first != RunPlan.from_spec(tiny_spec, {"train__steps": 99})


def test_sources_from_spec_values(tmp_path, tiny_images):
    assert source_from_spec("builtin:photos-val", where="data.val") == BuiltinSource("photos-val")
    folder = source_from_spec(str(tiny_images["val"]), where="data.val")
    assert folder == FolderSource(Path(tiny_images["val"]))
    pairs = folder.load(kdcore.Task(kind="sr", scale=2))
    assert [p.name for p in pairs] == ["chelsea", "coffee"] and pairs[0].target is not None
    assert folder.load(kdcore.Task(kind="enhance"))[0].target is None  # enhance: inputs without targets
    with pytest.raises(DataError, match="data.val: unknown built-in data 'builtin:nope'"):
        BuiltinSource("nope", where="data.val").check()
    with pytest.raises(DataError, match="needs the keys 'input' and 'target'"):
        source_from_spec({"input": "x"}, where="data.train")


def test_unknown_builtin_is_a_spec_error_in_validate(tiny_spec):
    tiny_spec["data"]["val"] = "builtin:nope"
    with pytest.raises(SpecError, match="data.val: unknown built-in data"):
        kdcore.validate(tiny_spec)
