"""DistributedDataParallel on CPU (gloo): 2 processes match 1 process with the same global batch."""

import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

import kdcore


def test_two_processes_match_one(tiny_spec, tmp_path):
    tiny_spec["data"]["batch_size"] = 4
    tiny_spec["train"] = dict(tiny_spec["train"], steps=3, checkpoint_every=2)
    single = dict(tiny_spec, output=str(tmp_path / "single"))
    kdcore.run(single)

    ddp = dict(tiny_spec, output=str(tmp_path / "ddp"))
    spec_file = tmp_path / "ddp.json"
    spec_file.write_text(json.dumps(ddp))
    out = subprocess.run([sys.executable, "-m", "kdcore", "run", str(spec_file), "--nproc", "2", "--quiet"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("student (tiny-sr)") == 1  # only rank 0 prints and writes
    a = load_file(tmp_path / "single" / "model.safetensors")
    b = load_file(tmp_path / "ddp" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["steps"] == 3


def test_batch_must_divide_among_processes(tiny_spec, tmp_path):
    tiny_spec["data"]["batch_size"] = 3
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(tiny_spec))
    out = subprocess.run([sys.executable, "-m", "kdcore", "run", str(spec_file), "--nproc", "2", "--quiet"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "does not divide among 2 processes" in out.stderr
    assert not Path(tiny_spec["output"]).exists()
