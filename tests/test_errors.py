"""Bad input never crashes and never loses work: the error corpus, generated specs, checkpoints,
signals, a full disk."""

import copy
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import kdcore
from kdcore.errors import CheckpointError, KdcoreError

CORPUS = sorted((Path(__file__).parent / "data" / "bad_specs").glob("*.json"))


def _deep_set(spec: dict, key: str, value) -> None:
    parts = key.split(".")
    node = spec
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def _corpus_case(case: Path, tiny_spec: dict, tmp_path: Path) -> tuple[dict, str]:
    """The spec and the expected message of a corpus file: its files are made under ``tmp_path``,
    and ``{tmp}``, ``{train}``, ``{val}`` in its values name that folder and the tiny images."""
    import numpy as np
    from PIL import Image

    data = json.loads(case.read_text())
    if data.get("needs") == "no-cuda" and torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    places = {"{tmp}": str(tmp_path), "{train}": str(Path(tiny_spec["data"]["train"])),
              "{val}": str(Path(tiny_spec["data"]["val"]))}

    def fill(value):
        if isinstance(value, str):
            for key, path in places.items():
                value = value.replace(key, path)
            return value
        if isinstance(value, list):
            return [fill(v) for v in value]
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return value

    for name, content in data.get("files", {}).items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if "image" in content:
            w, h = content["image"]
            pixels = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path)
        else:
            path.write_text(content["text"])
    spec = copy.deepcopy(tiny_spec)
    for key, value in data["set"].items():
        _deep_set(spec, key, fill(value))
    return spec, fill(data["error"])


@pytest.mark.filterwarnings("ignore:teacher.checkpoint")  # a checkpoint that does not exist yet
@pytest.mark.parametrize("case", CORPUS, ids=lambda p: p.stem)
def test_error_corpus(case, tiny_spec, tmp_path):
    spec, error = _corpus_case(case, tiny_spec, tmp_path)
    existed = Path(spec["output"]).exists()
    with pytest.raises(kdcore.SpecError) as err:
        kdcore.validate(spec)
    assert error in str(err.value)
    assert Path(spec["output"]).exists() == existed


@pytest.mark.filterwarnings("ignore:teacher.checkpoint")
@pytest.mark.parametrize("case", CORPUS, ids=lambda p: p.stem)
def test_run_refuses_what_validate_refuses_with_the_same_message(case, tiny_spec, tmp_path):
    """What validate refuses, run refuses before training with the same message (a teacher checkpoint
    that does not exist yet is only a warning for validate: run names it instead)."""
    spec, error = _corpus_case(case, tiny_spec, tmp_path)
    existed = Path(spec["output"]).exists()
    with pytest.raises(kdcore.SpecError) as refused:
        kdcore.validate(spec)
    with pytest.raises(KdcoreError) as err:
        kdcore.run(spec)
    if isinstance(err.value, CheckpointError) and "does not exist" in str(err.value):
        return
    assert str(err.value) == str(refused.value) and err.value.exit_code == 2
    assert Path(spec["output"]).exists() == existed


def test_corpus_through_the_cli(tmp_path, tiny_spec):
    data = json.loads((Path(__file__).parent / "data" / "bad_specs" / "loss-params-rejected.json").read_text())
    for key, value in data["set"].items():
        _deep_set(tiny_spec, key, value)
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(tiny_spec))
    out = subprocess.run([sys.executable, "-m", "kdcore", "validate", str(path)], capture_output=True, text=True)
    assert out.returncode == 2 and data["error"] in out.stderr and "Traceback" not in out.stderr


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=JSON)
def test_arbitrary_json_only_raises_kdcore_errors(data):
    try:
        kdcore.validate(data)
    except KdcoreError:
        pass


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_mutated_specs_only_raise_kdcore_errors(data, tiny_spec):
    """Replace, delete or add keys of a valid spec at random: validate raises KdcoreError or passes."""
    spec = copy.deepcopy(tiny_spec)
    paths = [p for p in _paths(spec) if p]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        parent = spec
        try:
            for part in path[:-1]:
                parent = parent[part]
            action = data.draw(st.sampled_from(["replace", "delete", "add"]))
            if action == "replace":
                parent[path[-1]] = data.draw(JSON)
            elif action == "delete" and isinstance(parent, dict):
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent[data.draw(st.text(max_size=8))] = data.draw(JSON)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed this path
    spec["output"] = tiny_spec["output"]
    try:
        kdcore.validate(spec)
    except KdcoreError:
        pass
    assert not Path(tiny_spec["output"]).exists()


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['KD_EVIL_MARKER']}",))


def test_malicious_pickle_is_not_executed(tiny_spec, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("KD_EVIL_MARKER", str(marker))
    kdcore.run(tiny_spec)
    state = Path(tiny_spec["output"]) / "checkpoint.pt"
    with open(state, "wb") as fh:
        pickle.dump({"step": 1, "student": _Evil()}, fh)
    with pytest.raises(CheckpointError, match="cannot read the training state"):
        kdcore.run(tiny_spec, resume=True)
    assert not marker.exists()
    # a pickle posing as a safetensors teacher checkpoint is refused as well
    fake = tmp_path / "teacher.safetensors"
    fake.write_bytes(state.read_bytes())
    tiny_spec = dict(tiny_spec, output=str(tmp_path / "other"), teacher={"name": "tiny-sr", "checkpoint": str(fake)})
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        kdcore.run(tiny_spec)
    assert not marker.exists()


def test_checkpoints_that_do_not_fit_or_are_truncated(tiny_spec, tmp_path):
    kdcore.run(tiny_spec)  # tiny-sr with 4 channels
    weights = Path(tiny_spec["output"]) / "model.safetensors"
    spec = dict(tiny_spec, output=str(tmp_path / "d"),
                teacher={"name": "tiny-sr", "params": {"channels": 6}, "checkpoint": str(weights)})
    with pytest.raises(CheckpointError, match=r"teacher.checkpoint: checkpoint .* does not fit the architecture \(.*head.weight: file \(4, 3, 3, 3\) vs model \(6, 3, 3, 3\)"):
        kdcore.run(spec)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(weights.read_bytes()[:-50])
    spec["teacher"] = {"name": "tiny-sr", "params": {"channels": 4}, "checkpoint": str(truncated)}
    with pytest.raises(CheckpointError, match="truncated or not a safetensors file"):
        kdcore.run(spec)
    assert not (tmp_path / "d").exists()
    out = subprocess.run([sys.executable, "-m", "kdcore", "validate", "/dev/null"], capture_output=True, text=True)
    assert out.returncode == 2


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(tiny_spec, monkeypatch):
    tiny_spec["train"] = dict(tiny_spec["train"], steps=4, checkpoint_every=1)
    from kdcore.engine import checkpoints

    real_save = torch.save
    calls = {"n": 0}

    def failing_save(obj, path):
        calls["n"] += 1
        if calls["n"] == 3:
            with open(path, "wb") as fh:
                fh.write(b"partial")
            raise OSError(28, "No space left on device")
        return real_save(obj, path)

    monkeypatch.setattr(checkpoints.torch, "save", failing_save)
    with pytest.raises(KdcoreError, match="No space left on device; any previous version of it is intact"):
        kdcore.run(tiny_spec)
    state = torch.load(Path(tiny_spec["output"]) / "checkpoint.pt", weights_only=True)
    assert state["step"] == 2
    assert [p.name for p in Path(tiny_spec["output"]).iterdir() if p.name.startswith(".")] == []
    monkeypatch.setattr(checkpoints.torch, "save", real_save)
    assert kdcore.run(tiny_spec, resume=True)["steps"] == 4


def test_sigterm_writes_a_checkpoint_and_resume_continues(tiny_spec, tmp_path):
    tiny_spec["losses"] = [{"name": "slow-l1", "params": {"delay": 0.2}}]
    tiny_spec["train"] = dict(tiny_spec["train"], steps=16)
    full = dict(tiny_spec, output=str(tmp_path / "full"))
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(tiny_spec))
    proc = subprocess.Popen([sys.executable, "-m", "kdcore", "run", str(spec_file), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = Path(tiny_spec["output"]) / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "SIGTERM at step" in err and "--resume" in err and "Traceback" not in err
    step = torch.load(Path(tiny_spec["output"]) / "checkpoint.pt", weights_only=True)["step"]
    assert 3 <= step < 16
    kdcore.run(tiny_spec, resume=True)
    kdcore.run(full)
    a = load_file(tmp_path / "full" / "model.safetensors")
    b = load_file(Path(tiny_spec["output"]) / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
