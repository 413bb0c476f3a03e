"""``kdcore inspect`` on the spandrel architectures: native paths, token outputs marked, checkpoints."""

from __future__ import annotations

import json

import torch
from spandrel.architectures.Compact import Compact
from spandrel_helpers import TINY

from kdcore.cli import main


def test_named_architecture_paths(capsys) -> None:
    assert main(["inspect", "student", "edsr", "--params", json.dumps(TINY["edsr"]), "--size", "12", "10"]) == 0
    out = capsys.readouterr().out
    assert "body.1.body.0" in out and "1×8×12×10" in out and "1×3×24×20" in out


def test_swinir_tokens_are_marked(capsys) -> None:
    assert main(["inspect", "student", "swinir", "--params", json.dumps(TINY["swinir"]), "--json"]) == 0
    rows = {r["path"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["layers.0"]["kind"] == "tokens" and rows["layers.0.conv"]["kind"] == "map"


def test_spandrel_teacher_needs_and_takes_a_checkpoint(tmp_path, capsys) -> None:
    assert main(["inspect", "teacher", "spandrel"]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    path = tmp_path / "c.pth"
    torch.save(Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=2).state_dict(), path)
    assert main(["inspect", "teacher", "spandrel", "--checkpoint", str(path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_path = {r["path"]: r for r in rows}
    assert rows[0]["path"] == "body.0" and by_path["upsampler"]["shape"] == [1, 3, 64, 64]
    assert by_path["body"]["kind"] == "not called"  # a ModuleList is iterated, never called
