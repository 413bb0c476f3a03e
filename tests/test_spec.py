"""The spec: schema errors with locations, component params, paths, overrides, JSON Schema."""

import json
from pathlib import Path

import jsonschema
import pytest

import kdcore
from kdcore.plugins import get_registry
from kdcore.spec import apply_overrides, json_schema, parse_set


def _error(spec, **overrides) -> str:
    with pytest.raises(kdcore.SpecError) as err:
        kdcore.validate(spec, **overrides)
    return str(err.value)


def test_valid_spec_fills_defaults(tiny_spec):
    spec = kdcore.validate(tiny_spec)
    assert spec.student.params == {"channels": 4}
    assert spec.losses[0].params == {"against": "target"}
    assert spec.train.optimizer == "adamw" and spec.data.augment is True


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda s: s["train"].update(steps=-1), "train.steps: Input should be greater than or equal to 1"),
        (lambda s: s["task"].update(scale=5), "task: scale must be 2, 3 or 4"),
        (lambda s: s["data"].update(patch_size=33), "data.patch_size: 33 is not a multiple of task.scale (2)"),
        (lambda s: s["data"].update(patch_size=8), "data.patch_size: Input should be greater than or equal to 16"),
        (lambda s: s["data"].update(batch_size=0), "data.batch_size"),
        (lambda s: s.update(losses=[]), "losses: List should have at least 1 item"),
        (lambda s: s["train"].update(stepz=3), "train.stepz: unknown key; did you mean 'steps'?"),
        (lambda s: s["student"].update(name="tiny-sx"), "student.name: unknown student 'tiny-sx'; did you mean 'tiny-sr'?"),
        (lambda s: s["losses"].append({"name": "charbonnier", "params": {"eps": -1}}),
         "losses[1].params.eps: Input should be greater than 0"),
        (lambda s: s["student"]["params"].update(chanels=3), "student.params.chanels: unknown key; did you mean 'channels'?"),
        (lambda s: s["data"].update(train="/nonexistent/folder"), "data.train: folder /nonexistent/folder does not exist"),
        (lambda s: s["data"].update(val="builtin:nope"), "data.val: unknown built-in data 'builtin:nope'"),
        (lambda s: s["train"].update(optimizer="adamz"), "train.optimizer: unknown optimizer 'adamz'"),
        (lambda s: s.update(teacher={"name": "tiny-sr"}), "teacher.checkpoint: teacher 'tiny-sr' needs trained weights"),
        (lambda s: s["losses"].append({"name": "l1", "params": {"against": "teacher"}}), "losses[1]: loss 'l1' needs a teacher"),
    ],
)
def test_errors_name_the_location(tiny_spec, change, expected):
    change(tiny_spec)
    assert expected in _error(tiny_spec)


def test_several_problems_reported_together(tiny_spec):
    tiny_spec["train"]["steps"] = 0
    tiny_spec["data"]["batch_size"] = 0
    message = _error(tiny_spec)
    assert message.startswith("the spec has 2 problems") and "train.steps" in message and "data.batch_size" in message


def test_teacher_list_errors_point_into_the_list(tiny_spec):
    tiny_spec["teacher"] = [{"name": "bicubic"}, {"name": "bicubic", "weight": 0}]
    assert "teacher[1].weight: Input should be greater than 0" in _error(tiny_spec)


def test_relative_paths_resolve_against_the_spec_folder(tmp_path, tiny_spec):
    folder = tmp_path / "specs"
    (folder / "imgs").mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (40, 40), (10, 20, 30)).save(folder / "imgs" / "a.png")
    tiny_spec.update(output="../out/run")
    tiny_spec["data"]["train"] = "imgs"
    (folder / "spec.json").write_text(json.dumps(tiny_spec))
    spec = kdcore.validate(folder / "spec.json")
    assert Path(spec.data.train) == folder / "imgs"
    assert Path(spec.output) == tmp_path / "out" / "run"


def test_overrides(tiny_spec):
    spec = kdcore.validate(tiny_spec, train__steps=7, **{"losses.0.weight": 0.5, "student.params.channels": 2})
    assert spec.train.steps == 7 and spec.losses[0].weight == 0.5 and spec.student.params["channels"] == 2
    assert parse_set(["train.lr=0.01", "output=x"]) == {"train.lr": 0.01, "output": "x"}
    with pytest.raises(kdcore.SpecError, match=r"--set train.stepz: no such key; did you mean 'train.steps'"):
        apply_overrides(tiny_spec, {"train.stepz": 1})
    with pytest.raises(kdcore.SpecError, match=r"--set losses.3.weight"):
        apply_overrides(tiny_spec, {"losses.3.weight": 1})
    with pytest.raises(kdcore.SpecError, match="KEY=VALUE"):
        parse_set(["novalue"])


def test_not_json_and_not_an_object(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"task": {"kind": "sr",}\n}')
    assert "not valid JSON at line 1, column" in _error(bad)
    bad.write_text("[1, 2]")
    assert "must be a JSON object" in _error(bad)
    assert "spec file not found" in _error(tmp_path / "missing.json")


def test_schema_accepts_examples_and_rejects_bad_params(tiny_spec):
    schema = json_schema(get_registry())
    jsonschema.validate(tiny_spec, schema)
    for example in sorted((Path(__file__).parents[1] / "examples").glob("*.json")):
        jsonschema.validate(json.loads(example.read_text()), schema)
    tiny_spec["losses"][0]["params"] = {"against": "nobody"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(tiny_spec, schema)
    tiny_spec["losses"][0] = {"name": "no-such-loss"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(tiny_spec, schema)


@pytest.mark.parametrize("example", sorted((Path(__file__).parents[1] / "examples").glob("*.json")), ids=lambda p: p.name)
def test_examples_validate(example):
    # a teacher checkpoint that an earlier example run writes is only a warning here
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec = kdcore.validate(example)
    assert Path(spec.output).parent.name == "runs"  # runs are written outside examples/


def test_operator_teacher_refuses_sr(tiny_spec):
    tiny_spec["teacher"] = {"name": "clahe"}
    assert "teacher: teacher 'clahe' is for enhance tasks, not 'sr'" in _error(tiny_spec)
