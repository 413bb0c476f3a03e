"""``kdcore inspect``: module paths with output shapes, and clear errors on bad input."""

from __future__ import annotations

import json

import pytest

from kdcore.cli import main
from kdcore.errors import SpecError
from kdcore.inspection import inspect_model, parse_task


def test_lists_every_named_module_with_its_output_shape() -> None:
    infos = inspect_model("student", "hdrnet", {"net_input_size": 64, "spatial_bins": 4}, parse_task("sr:2"), (24, 20))
    by_path = {i.path: i for i in infos}
    assert "lowres.fusion" in by_path and by_path["lowres.fusion"].kind == "map"
    assert by_path["lowres.fusion"].shape[0] == 1 and len(by_path["lowres.fusion"].shape) == 4
    import kdcore

    model = kdcore.create("student", "hdrnet", {"net_input_size": 64, "spatial_bins": 4})
    assert [i.path for i in infos if i.path] and {i.path for i in infos} == {p for p, _ in model.named_modules() if p}


def test_json_output(capsys) -> None:
    assert main(["inspect", "student", "hdrnet", "--params", '{"net_input_size": 64, "spatial_bins": 4}', "--size", "16", "16", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert all({"path", "type", "shape", "params", "kind"} <= row.keys() for row in rows)


@pytest.mark.parametrize("argv, message", [
    (["inspect", "student", "hdrnet", "--params", "{bad"], "--params: not valid JSON"),
    (["inspect", "student", "hdrnet", "--params", "[1]"], "--params: give a JSON object"),
    (["inspect", "student", "hdrnet", "--task", "sr:5"], "--task: 'sr:5'"),
    (["inspect", "student", "hdrnet", "--size", "0", "8"], "--size"),
    (["inspect", "student", "no-such-model"], "no-such-model"),
    (["inspect", "student", "hdrnet", "--params", '{"frobnicate": 1}'], "params.frobnicate"),
])
def test_bad_input_exits_2(argv, message, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_parse_task() -> None:
    assert parse_task("enhance").scale == 1 and parse_task("sr:4").scale == 4
    with pytest.raises(SpecError):
        parse_task("video")
