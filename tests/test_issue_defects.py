"""What `validate` accepts, `run` finishes: the defects a new user hits following the README.

Bad specs that `validate` must refuse (and `run` refuse with the same message) are in the error
corpus, tests/data/bad_specs/; these tests cover the commands and the run folder.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import kdcore
import kdcore.api
from kdcore.engine.events import Message
from kdcore.errors import SpecError, TrainingError

ROOT = Path(__file__).resolve().parents[1]


def kd(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "kdcore", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def _image(path: Path, w: int, h: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def enhance_run(tmp_path_factory, tiny_images):
    """An enhance run with an operator teacher and no targets; its val folder has x.jpg and x.png.
    Written under umask 022."""
    root = tmp_path_factory.mktemp("enhance")
    _image(root / "val" / "x.png", 40, 32, 1)
    _image(root / "val" / "x.jpg", 40, 32, 2)
    spec = {"task": {"kind": "enhance"}, "data": {"train": str(tiny_images["train"]), "val": str(root / "val"),
                                                  "patch_size": 32, "batch_size": 2},
            "teacher": {"name": "unsharp-mask"}, "student": {"name": "tiny-sr", "params": {"channels": 4}},
            "losses": [{"name": "l1"}], "train": {"steps": 2, "log_every": 1}, "output": str(root / "run")}
    old = os.umask(0o022)
    try:
        kdcore.run(spec)
    finally:
        os.umask(old)
    return root


# 1 -------------------------------------------------------------------------------------------
def test_eval_of_an_enhance_run_without_targets_measures_against_the_teacher(enhance_run):
    out = kd("eval", enhance_run / "run")
    assert out.returncode == 0, out.stderr
    assert "4 images" not in out.stdout and "agreement with the teacher" in out.stdout


# 2 -------------------------------------------------------------------------------------------
def test_nonfinite_loss_advice_can_be_followed(tiny_spec):
    tiny_spec["losses"] = [{"name": "nan-at", "params": {"step": 1}}]
    with pytest.raises(TrainingError) as err:
        kdcore.run(tiny_spec)
    message = str(err.value)
    assert "checkpoint" not in message and "resume" not in message
    assert "lower train.lr (now 0.001) or set train.grad_clip" in message and "overwrite=True" in message
    tiny_spec["losses"] = [{"name": "nan-at", "params": {"step": 3}}]
    tiny_spec["train"]["checkpoint_every"] = 1
    with pytest.raises(TrainingError, match="the checkpoint of step 2 is intact, but a changed train.lr cannot be resumed"):
        kdcore.run(tiny_spec, overwrite=True)


# 5 -------------------------------------------------------------------------------------------
def test_repeated_stems_never_overwrite_each_other(enhance_run, tmp_path):
    images = sorted((enhance_run / "run" / "images").glob("*.png"))
    assert [p.name for p in images] == ["x.jpg.png", "x.png.png"]
    out = kd("enhance", enhance_run / "run", enhance_run / "val" / "x.jpg", enhance_run / "val" / "x.png",
             "-o", tmp_path / "out")
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x.jpg.png", "x.png.png"]


# 8 -------------------------------------------------------------------------------------------
def test_checkpoint_every_defaults_to_a_periodic_checkpoint(tiny_spec):
    del tiny_spec["train"]["log_every"]
    every = kdcore.api.plan(tiny_spec).train.checkpoint_every
    assert every == 250
    assert "checkpoint_every" in (ROOT / "README.md").read_text() and "every 250 steps" in (ROOT / "README.md").read_text()


# 9 -------------------------------------------------------------------------------------------
def test_set_paths_are_relative_to_the_current_directory(tiny_spec, tmp_path):
    (tmp_path / "specs").mkdir()
    (tmp_path / "here").mkdir()
    spec_file = tmp_path / "specs" / "spec.json"
    spec_file.write_text(json.dumps(dict(tiny_spec, output="runs/in-spec")))
    out = kd("validate", spec_file, "--set", "output=runs/x", cwd=tmp_path / "here")
    assert out.returncode == 0, out.stderr
    assert f"-> {tmp_path / 'here' / 'runs' / 'x'})" in out.stdout
    assert kdcore.api.plan(spec_file).output == tmp_path / "specs" / "runs" / "in-spec"  # spec-file paths


# 10 ------------------------------------------------------------------------------------------
def test_default_val_data_is_said_in_the_log_and_the_summary(tiny_spec):
    del tiny_spec["data"]["val"]
    tiny_spec["train"]["steps"] = 1
    messages = []
    summary = kdcore.run(tiny_spec, callback=lambda e: messages.append(e.text) if isinstance(e, Message) else None)
    assert summary["val_data"] == "builtin:photos-val"
    assert any("data.val is not given: validating on the built-in photos" in m for m in messages)


# 11 ------------------------------------------------------------------------------------------
def test_result_files_follow_the_umask(enhance_run, tmp_path):
    run = enhance_run / "run"
    for name in ("model.safetensors", "summary.json", "spec.json", "images/x.png.png"):
        assert (run / name).stat().st_mode & 0o777 == 0o644, name
    old = os.umask(0o022)
    try:
        out = kd("enhance", run, enhance_run / "val" / "x.png", "-o", tmp_path / "o")
    finally:
        os.umask(old)
    assert out.returncode == 0 and (tmp_path / "o" / "x.png").stat().st_mode & 0o777 == 0o644


# 12 ------------------------------------------------------------------------------------------
def test_teacher_cache_says_what_it_does(tiny_spec, tmp_path):
    from safetensors.torch import save_file

    teacher = kdcore.create("teacher", "tiny-sr", {"channels": 4}, kdcore.Task(kind="sr", scale=2))
    save_file(teacher.state_dict(), tmp_path / "teacher.safetensors")
    tiny_spec["teacher"] = {"name": "tiny-sr", "params": {"channels": 4}, "checkpoint": str(tmp_path / "teacher.safetensors")}
    tiny_spec["losses"] = [{"name": "l1"}, {"name": "feat-l2"}]
    tiny_spec["train"].update(steps=1, teacher_cache="memory")
    messages = []
    kdcore.run(tiny_spec, callback=lambda e: messages.append(e) if isinstance(e, Message) else None)
    assert any(m.level == "warning" and "train.teacher_cache 'memory' is not used" in m.text for m in messages)
    tiny_spec["teacher"] = {"name": "gamma-up"}
    tiny_spec["losses"] = [{"name": "l1", "params": {"against": "teacher"}}]
    tiny_spec["output"] = str(tmp_path / "cached")
    messages = []
    summary = kdcore.run(tiny_spec, callback=lambda e: messages.append(e.text) if isinstance(e, Message) else None)
    cache = summary["teacher_cache"]
    assert cache["mode"] == "memory" and cache["location"] == "memory"
    assert cache["misses"] >= 1 and cache["hits"] + cache["misses"] == 2 and cache["bytes"] > 0
    assert any(m.startswith("teacher cache (memory, memory): ") and "hits" in m for m in messages)


# 13 ------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:teacher.checkpoint")
def test_feature_path_errors_name_the_pair_and_the_teacher(tiny_spec):
    tiny_spec["teacher"] = [{"name": "tiny-sr", "checkpoint": "nowhere"}, {"name": "tiny-sr", "checkpoint": "nowhere"}]
    pairs = [{"student": "head", "teacher": "1/head"}, {"student": "head", "teacher": "1/hed"}]
    tiny_spec["losses"] = [{"name": "l1"}, {"name": "feature-matching", "params": {"pairs": pairs}}]
    with pytest.raises(SpecError) as err:
        kdcore.validate(tiny_spec)
    assert str(err.value).startswith("losses[1].params.pairs[1].teacher: the teacher 1 'tiny-sr' "
                                     "(teacher indices start at 0) has no module 'hed'")
    pairs[1]["teacher"] = "2/head"
    with pytest.raises(SpecError, match=r"losses\[1\]\.params\.pairs\[1\]\.teacher: '2/head' names teacher 2, but "
                       r"the spec has 2 teacher\(s\); teacher indices start at 0 \(0 to 1\)"):
        kdcore.validate(tiny_spec)
    pairs[1] = {"student": "head", "teacher": "1/tail", "adapter": "identity"}  # 4 student vs 3 teacher channels
    with pytest.raises(SpecError, match=r"^losses\[1\]\.params\.pairs\[1\]\.adapter: adapter 'identity' cannot map 4"):
        kdcore.validate(tiny_spec)


# 14 ------------------------------------------------------------------------------------------
def test_python_errors_name_keywords_and_the_readme_example_runs(tiny_spec):
    kdcore.run(tiny_spec)
    with pytest.raises(SpecError) as err:
        kdcore.run(tiny_spec, train__steps=2)
    assert "overwrite=True" in str(err.value) and "resume=True" in str(err.value) and "--" not in str(err.value)
    with pytest.raises(SpecError, match="train__stepz=: no such key"):
        kdcore.validate(tiny_spec, train__stepz=2)
    readme = (ROOT / "README.md").read_text()
    assert 'kdcore.run("examples/quickstart.json", train__steps=50, output="runs/try")' in readme


# 15 ------------------------------------------------------------------------------------------
def test_nproc_with_a_batch_that_does_not_divide_fails_once_before_launching(tiny_spec, tmp_path):
    tiny_spec["data"]["batch_size"] = 3
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(tiny_spec))
    out = kd("run", spec_file, "--nproc", "2", "--quiet")
    assert out.returncode == 2
    assert out.stderr.count("does not divide among 2 processes") == 1 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and not Path(tiny_spec["output"]).exists()


# 16 ------------------------------------------------------------------------------------------
def test_enhance_command_line_errors_are_short(enhance_run, tmp_path, capsys):
    from kdcore.cli import main

    run, image = enhance_run / "run", enhance_run / "val" / "x.png"
    (tmp_path / "a-file").write_text("x")
    out = kd("enhance", run, image, "-o", tmp_path / "a-file")
    assert out.returncode == 2 and "exists and is not a folder" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    capsys.readouterr()
    assert main(["enhance", str(run), str(image), "-o", str(tmp_path / "o"), "--tile", "-5"]) == 2
    assert "--tile -5: give a positive tile size" in capsys.readouterr().err
    assert main(["enhance", str(run), str(enhance_run / "val"), "-o", str(tmp_path / "o")]) == 2
    assert "is a folder, not an image file" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_help_shows_defaults_and_list_treats_a_bare_word_as_a_substring(capsys):
    from kdcore.cli import main

    for command in ("enhance", "list"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 16000000)" in text and "(default: 0," in text and "(default: all kinds)" in text
    out = kd("list", "students", "--pattern", "iny")
    assert out.returncode == 0 and "tiny-sr" in out.stdout


def test_webp_images_are_read(tmp_path):
    from kdcore.data import FolderSource

    Image.fromarray(np.zeros((20, 24, 3), dtype=np.uint8)).save(tmp_path / "a.webp", lossless=True)
    pairs = FolderSource(tmp_path).load(kdcore.Task(kind="enhance"))
    assert [(p.name, tuple(p.input.shape)) for p in pairs] == [("a", (3, 20, 24))]


def test_comparison_panels_carry_labels(enhance_run):
    from kdcore.engine.evaluate import LABEL_HEIGHT

    strip = np.asarray(Image.open(enhance_run / "run" / "images" / "x.png.png"))
    assert strip.shape == (32 + LABEL_HEIGHT, 40 * 4, 3)  # input | identity | student | teacher
    band = strip[:LABEL_HEIGHT]
    for panel in range(4):
        assert band[:, panel * 40:(panel + 1) * 40].max() > 0  # text above every panel


def test_strict_types_keep_json_integers_for_floats(tiny_spec):
    tiny_spec["train"]["lr"] = 1  # a JSON integer where the schema says number
    tiny_spec["losses"][0]["weight"] = 2
    assert kdcore.api.plan(tiny_spec).train.lr == 1.0


def test_rerunning_a_finished_spec_says_it_replaces_the_run(tiny_spec):
    tiny_spec["train"]["steps"] = 1
    kdcore.run(tiny_spec)
    messages = []
    kdcore.run(tiny_spec, callback=lambda e: messages.append(e.text) if isinstance(e, Message) else None)
    assert any("holds a finished run of this spec: it is replaced by this one" in m for m in messages)
