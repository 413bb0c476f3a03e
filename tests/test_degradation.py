"""The papers' conventions: MATLAB-style bicubic degradation, the built-in test sets and their
published bicubic rows, DIV2K / BasicSR paired layouts, several validation sets in one run."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import kdcore
from kdcore.data import load_pairs, quantize
from kdcore.data.builtin import test_set_names as set_names_of
from kdcore.data.images import downscale, imresize, upscale_bicubic
from kdcore.errors import DataError, SpecError
from kdcore.interfaces import Task
from kdcore.metrics import image_metrics, mean_metrics

# The bicubic rows published with SR results (Y channel, `scale` pixels shaved, MATLAB imresize).
PUBLISHED = {
    "set5": {2: (33.66, 0.9299), 3: (30.39, 0.8682), 4: (28.42, 0.8104)},
    "set14": {2: (30.24, 0.8688), 3: (27.55, 0.7742), 4: (26.00, 0.7027)},
}


def _keys_cubic(x: float) -> float:
    x = abs(x)
    if x <= 1:
        return 1.5 * x**3 - 2.5 * x**2 + 1
    if x <= 2:
        return -0.5 * x**3 + 2.5 * x**2 - 4 * x + 2
    return 0.0


def _reference_resize_1d(signal: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB's imresize along one axis, one output sample at a time (a plain reading of its
    definition: antialiased kernel when shrinking, mirrored borders)."""
    n = len(signal)
    out_len = math.ceil(n * scale)
    width = 4 / scale if scale < 1 else 4
    out = np.zeros(out_len)
    for i in range(1, out_len + 1):
        u = i / scale + 0.5 * (1 - 1 / scale)
        first = math.floor(u - width / 2)
        weights, values = [], []
        for j in range(first, first + math.ceil(width) + 2):
            w = scale * _keys_cubic(scale * (u - j)) if scale < 1 else _keys_cubic(u - j)
            k = j
            while k < 1 or k > n:  # mirror: 0 -> 1, -1 -> 2, n+1 -> n, ...
                k = 1 - k if k < 1 else 2 * n + 1 - k
            weights.append(w)
            values.append(signal[k - 1])
        weights_arr = np.array(weights)
        out[i - 1] = np.dot(weights_arr / weights_arr.sum(), values)
    return out


@pytest.mark.parametrize(("shape", "scale"), [((12, 18), 1 / 3), ((7, 5), 2.0), ((5, 6), 4.0), ((8, 8), 1 / 4)])
def test_imresize_matches_a_sample_by_sample_reference(shape, scale):
    rng = np.random.default_rng(0)
    image = rng.random(shape)
    rows = np.stack([_reference_resize_1d(image[:, c], scale) for c in range(shape[1])], axis=1)
    expected = np.stack([_reference_resize_1d(rows[r], scale) for r in range(rows.shape[0])])
    got = imresize(torch.tensor(image, dtype=torch.float32)[None, None], scale)[0, 0]
    np.testing.assert_allclose(got.numpy(), expected, atol=2e-6)


def test_matlab_downscale_keeps_constants_rounds_and_batches():
    flat = torch.full((3, 16, 24), 0.5)
    low = downscale(flat, 4)
    assert low.shape == (3, 4, 6)
    torch.testing.assert_close(low, quantize(flat[:, :4, :6]))
    noisy = torch.rand(2, 3, 12, 12)
    low = downscale(noisy, 3)
    assert low.shape == (2, 3, 4, 4)
    torch.testing.assert_close(low * 255, torch.round(low * 255), atol=1e-4, rtol=0)
    torch.testing.assert_close(low[1], downscale(noisy[1], 3))
    assert not torch.equal(low, downscale(noisy, 3, "torch-bicubic"))
    with pytest.raises(ValueError, match="degradation"):
        downscale(noisy, 3, "lanczos")
    up = upscale_bicubic(low, 3)
    assert up.shape == (2, 3, 12, 12) and 0 <= up.min() and up.max() <= 1


@pytest.mark.parametrize("name", ["set5", "set14"])
def test_builtin_test_sets_reproduce_the_published_bicubic_rows(name):
    tolerance = 0.03 if name == "set5" else 0.15  # copies of Set14 differ slightly
    for scale, (psnr, ssim) in PUBLISHED[name].items():
        task = Task(kind="sr", scale=scale)
        pairs = load_pairs(f"builtin:{name}", task, where="data.val")
        rows = [
            image_metrics(quantize(upscale_bicubic(p.input, scale)), p.target, task) for p in pairs
        ]
        got = mean_metrics(rows)
        assert abs(got["psnr"] - psnr) <= tolerance, (name, scale, got)
        if name == "set5":
            assert abs(got["ssim"] - ssim) <= 0.002, (name, scale, got)
    assert len(pairs) == {"set5": 5, "set14": 14}[name]
    assert [p.name for p in pairs] == set_names_of()[name]


def test_torch_bicubic_is_the_older_convention_on_set5():
    task = Task(kind="sr", scale=2)
    pairs = load_pairs("builtin:set5", task, where="data.val", degradation="torch-bicubic")
    rows = [image_metrics(upscale_bicubic(p.input, 2, "torch-bicubic"), p.target, task) for p in pairs]
    assert abs(mean_metrics(rows)["psnr"] - 33.97) < 0.05  # not comparable with published tables


# --------------------------------------------------------------------------- DIV2K / BasicSR layouts


def _write(path, height, width, seed):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)


def _div2k(tmp_path, names, input_names, scale=2):
    hr, lr = tmp_path / "HR", tmp_path / "LR"
    hr.mkdir()
    lr.mkdir()
    for i, (name, input_name) in enumerate(zip(names, input_names, strict=True)):
        _write(hr / f"{name}.png", 8 * scale, 10 * scale, i)
        _write(lr / f"{input_name}.png", 8, 10, 100 + i)
    return {"input": str(lr), "target": str(hr)}


@pytest.mark.parametrize("suffix", ["x2", "_x2", "X2"])
def test_div2k_names_carrying_the_scale_pair_automatically(tmp_path, suffix):
    source = _div2k(tmp_path, ["0001", "0002"], [f"0001{suffix}", f"0002{suffix}"])
    pairs = load_pairs(source, Task(kind="sr", scale=2), where="data.train")
    assert [p.name for p in pairs] == ["0001", "0002"]
    assert pairs[0].input.shape == (3, 8, 10) and pairs[0].target.shape == (3, 16, 20)


def test_div2k_x4_inputs_pair_at_x4(tmp_path):
    source = _div2k(tmp_path, ["0801", "0802"], ["0801x4", "0802x4"], scale=4)
    pairs = load_pairs(source, Task(kind="sr", scale=4), where="data.val")
    assert [p.name for p in pairs] == ["0801", "0802"]
    with pytest.raises(DataError, match="4× the input size|2× the input size"):
        load_pairs(source, Task(kind="sr", scale=2), where="data.val")


def test_input_name_states_the_pairing(tmp_path):
    source = _div2k(tmp_path, ["a", "b"], ["lr_a", "lr_b"])
    with pytest.raises(DataError, match="unmatched images"):
        load_pairs(source, Task(kind="sr", scale=2), where="data.train")
    pairs = load_pairs({**source, "input_name": "lr_{}"}, Task(kind="sr", scale=2), where="data.train")
    assert [p.name for p in pairs] == ["a", "b"]
    with pytest.raises(DataError, match=r"data.train: unmatched images .*no input .* for: b.*input_name 'lr_\{\}'"):
        (tmp_path / "LR" / "lr_b.png").unlink()
        load_pairs({**source, "input_name": "lr_{}"}, Task(kind="sr", scale=2), where="data.train")


def test_a_mismatch_keeps_the_clear_error(tmp_path):
    source = _div2k(tmp_path, ["0001", "0002"], ["0001x2", "0003x2"])
    with pytest.raises(DataError) as info:
        load_pairs(source, Task(kind="sr", scale=2), where="data.train")
    message = str(info.value)
    assert "unmatched images" in message and "0002" in message and "'input_name': '{}x2'" in message


def test_input_name_must_hold_one_placeholder(tiny_spec):
    tiny_spec["data"]["val"] = {"input": "a", "target": "b", "input_name": "x2"}
    with pytest.raises(SpecError, match=r"data.val.input_name: .*must contain '\{\}' exactly once"):
        kdcore.validate(tiny_spec)


# --------------------------------------------------------------------------- several validation sets


def test_three_validation_sets_are_each_evaluated(tiny_spec, tiny_images, tmp_path):
    from kdcore.cli import format_table

    tiny_spec["data"]["val"] = {
        "mine": str(tiny_images["val"]),
        "Set5": "builtin:set5",
        "paired": _div2k(tmp_path, ["p1"], ["p1x2"]),
    }
    tiny_spec["train"]["baseline"] = "alone"
    tiny_spec["teacher"] = {"name": "bicubic"}
    tiny_spec["losses"].append({"name": "l1", "weight": 0.5, "params": {"against": "teacher"}})
    summary = kdcore.run(tiny_spec)
    sets = summary["val_sets"]
    assert list(sets) == ["mine", "Set5", "paired"]
    assert summary["degradation"] == "matlab-bicubic"
    assert sets["Set5"]["images"] == 5 and sets["paired"]["images"] == 1
    for block in sets.values():
        for model in ("baseline", "teacher", "student", "alone"):
            assert set(block[model]) == {"psnr", "ssim"}
        assert block["kd_gain_db"] == pytest.approx(block["student"]["psnr"] - block["alone"]["psnr"])
    assert summary["student"]["psnr"] == sets["mine"]["student"]["psnr"]  # the first set's, on top
    assert sets["Set5"]["baseline"]["psnr"] == pytest.approx(33.68, abs=0.03)
    table = format_table(summary)
    assert "mine PSNR dB" in table and "Set5 PSNR dB" in table and "paired PSNR dB" in table
    assert "by matlab-bicubic" in table
    evals = [json.loads(line) for line in open(summary["output"] + "/metrics.jsonl") if '"eval"' in line]
    assert {"val/psnr", "val/mine/psnr", "val/Set5/psnr", "val/paired/psnr"} <= set(evals[-1])
    page = (Path(summary["output"]) / "report.html").read_text()
    for name in ("mine", "Set5", "paired"):
        assert f"<th>{name} PSNR dB</th>" in page and f'data-set="{name}"' in page
    assert "KD gain per set: mine" in page and "MATLAB-style bicubic" in page
    out = subprocess.run(
        [sys.executable, "-m", "kdcore", "eval", summary["output"], "--json"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert list(json.loads(out.stdout)["val_sets"]) == ["mine", "Set5", "paired"]


def test_an_empty_set_mapping_and_a_bad_set_are_named(tiny_spec):
    tiny_spec["data"]["val"] = {}
    with pytest.raises(SpecError, match="data.val: .*names no validation set"):
        kdcore.validate(tiny_spec)
    tiny_spec["data"]["val"] = {"Set5": "builtin:set5", "other": "builtin:nope"}
    with pytest.raises(SpecError, match="data.val.other: unknown built-in data 'builtin:nope'"):
        kdcore.validate(tiny_spec)


def test_old_run_folders_keep_pytorch_bicubic(tiny_spec):
    from kdcore.plan import RunPlan

    summary = kdcore.run(tiny_spec)
    path = summary["output"] + "/spec.json"
    raw = json.loads(open(path).read())
    assert raw["data"]["degradation"] == "matlab-bicubic"
    del raw["data"]["degradation"]
    open(path, "w").write(json.dumps(raw))
    assert RunPlan.from_run(summary["output"]).degradation == "torch-bicubic"


# --------------------------------------------------------------------------- data at DIV2K scale


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _large_images(folder, count, side):
    folder.mkdir()
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    for i in range(count):
        pixels = (ramp[None, :, None] * 0.5 + ramp[:, None, None] * 0.5 + i * 7) % 256
        Image.fromarray(np.repeat(pixels, 3, axis=2).astype(np.uint8)).save(folder / f"{i:04d}.png", compress_level=1)
    return folder


def test_training_images_on_disk_keep_memory_flat(tmp_path, monkeypatch):
    from kdcore.data import FolderSource, PatchDataset
    from kdcore.data.store import PairStore, to_float

    monkeypatch.setenv("KDCORE_CACHE", str(tmp_path / "cache"))
    task = Task(kind="sr", scale=4)
    source = FolderSource(_large_images(tmp_path / "big", 8, 1024), where="data.train")
    records = source.records(task)
    assert [r.name for r in records][:2] == ["0000", "0001"] and records[0].pixels == 1024 * 1024 + 256 * 256
    PairStore.build(records[:2], "disk")  # decoders, resampling matrices and allocator warmed up
    before = _rss_bytes()
    store = PairStore.build(records, "disk")
    dataset = PatchDataset(store, task, patch_size=64, length=200, seed=0)
    for i in range(len(dataset)):
        dataset[i]
    grown = _rss_bytes() - before
    assert grown < 6 * 2 * 2**20, grown  # under 2 MB for each of the 6 further images (3.3 MB of pixels each)
    in_memory = PairStore.build(records, "memory")  # what the same images take when held
    held = sum(h.value.nbytes for h in (*in_memory._inputs, *in_memory._targets) if h is not None)
    assert held > 8 * 3 * 2**20 > grown
    del in_memory
    # the disk entries give exactly the pixels the images have, and a second build reuses them
    first = source.load(task)[3]
    again = PairStore.build(records, "disk")
    assert torch.equal(again[3].input, first.input) and torch.equal(again[3].target, first.target)
    assert again.key(3) == store.key(3)
    memory = PairStore.build(records[:2], "memory")
    second = source.load(task)[1]
    assert memory._inputs[1].value.dtype == np.uint8  # 8-bit images are held as uint8
    torch.testing.assert_close(to_float(memory.input_crop(1, 5, 7, 16, 16)), second.input[:, 5:21, 7:23])


def test_auto_chooses_disk_for_large_sets_and_a_changed_file_is_read_again(tmp_path, monkeypatch):
    from kdcore.data import FolderSource
    from kdcore.data import store as store_module
    from kdcore.data.store import PairStore

    monkeypatch.setenv("KDCORE_CACHE", str(tmp_path / "cache"))
    task = Task(kind="sr", scale=2)
    folder = _large_images(tmp_path / "imgs", 3, 64)
    records = FolderSource(folder, where="data.train").records(task)
    assert PairStore.build(records, "auto").mode == "memory"
    monkeypatch.setattr(store_module, "MEMORY_LIMIT_BYTES", 1000)
    disk = PairStore.build(records, "auto")
    assert disk.mode == "disk" and len(list((tmp_path / "cache" / "pixels").rglob("*.npy"))) == 6
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(folder / "0001.png")
    changed = PairStore.build(FolderSource(folder, where="data.train").records(task), "disk")
    assert changed[1].target.max() == 0 and disk[1].target.max() > 0


def test_the_new_data_keys_are_in_the_schema():
    import jsonschema

    from kdcore.plugins import get_registry
    from kdcore.spec import json_schema

    schema = json_schema(get_registry())
    data = schema["$defs"]["DataSpec"]["properties"]
    assert data["degradation"]["default"] == "matlab-bicubic" and {"cache", "workers"} <= set(data)
    assert "input_name" in schema["$defs"]["PairedFolders"]["properties"]
    base = {"task": {"kind": "sr", "scale": 2}, "student": {"name": "compact"}, "losses": [{"name": "l1"}], "output": "x"}
    for val in (
        "builtin:set5",
        {"input": "a", "target": "b", "input_name": "{}x2"},
        {"Set5": "builtin:set5", "Set14": "builtin:set14", "mine": {"input": "a", "target": "b"}},
    ):
        jsonschema.validate({**base, "data": {"train": "builtin:photos", "val": val}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**base, "data": {"train": "x", "val": {"Set5": "s", "input": "a"}}}, schema)
