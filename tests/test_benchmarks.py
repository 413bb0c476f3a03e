"""The benchmark scripts run end to end in ``--smoke`` mode (tiny sizes, few steps); no timing is asserted."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def run_all(monkeypatch):
    """The ``benchmarks/run_all.py`` module, importable with its sibling modules."""
    monkeypatch.syspath_prepend(str(BENCH))
    import run_all as module

    return module


def test_smoke_run_writes_report_json_and_plots(run_all, tmp_path):
    out = tmp_path / "results"
    extra = tmp_path / "extra"
    run_all._smoke_data(extra)
    md = tmp_path / "BENCHMARKS.md"
    assert run_all.main(["--smoke", "--out", str(out), "--markdown", str(md), "--data", str(extra)]) == 0

    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == "smoke"
    assert results["machine"]["threads"] == 2
    for key in ("latency", "latency_sr2", "channels_last", "train_step", "memory", "compile", "gpu", "onnx_latency",
                "quality_sr", "distill_cost", "quality_enhance", "quality_folders"):
        assert key in results, key
    row = results["latency"][0]
    for name in ("hdrnet", "deformable-hdrnet", "reference"):
        t = row["times"][name]
        assert 0 < t["min_ms"] <= t["median_ms"]
    assert results["memory"]["rows"][0]["peak_bytes"] > 0
    arch = results["architectures"]
    assert set(arch["quality"]) == set(arch["models"]) and arch["params"]["compact"] > 0
    assert all(t["min_ms"] > 0 for t in arch["latency"]["32x32"].values())
    assert "## SR architectures (kdcore-spandrel)" in md.read_text()
    kd = results["kd_table"]
    assert set(kd["students"]) == {"deformable-hdrnet", "compact", "edsr"}
    for name, entry in kd["students"].items():
        rows = {"alone", "init-only", "init-distilled", "init-forward-adaptation"} if name == "edsr" else {
            "alone", "distilled", "feature-matching", "unlabeled"}
        assert set(entry["rows"]) == rows
        assert all(len(runs) == len(kd["config"]["seeds"]) for runs in entry["rows"].values())
    # alone and init-only of the edsr student are the baselines of its teacher-init run, trained beside it
    edsr = kd["students"]["edsr"]["rows"]
    assert edsr["alone"][0]["run"].endswith("kd-edsr-init-distilled-seed0/alone")
    assert edsr["init-only"][0]["run"].endswith("kd-edsr-init-distilled-seed0/init-only")
    assert set(kd["latency"]) == {"teacher", "deformable-hdrnet", "compact", "edsr"}
    kd_text = md.read_text().split("<!-- kd-table:start -->")[1]
    assert "## KD table" in kd_text and "| `compact` | distilled + unlabelled zoom-in |" in kd_text
    assert "| `edsr` | teacher init only (no teacher losses) |" in kd_text
    assert "the teacher initialisation alone gives" in kd_text
    sr = results["quality_sr"]
    assert len(sr["distilled"]) == len(sr["alone"]) == len(sr["seeds"])
    assert set(results["distill_cost"]["variants"]) == {"plain", "distill-cache-memory", "distill-cache-off"}
    # the compile attempt is capped at 2 s in smoke mode: it must be recorded, not crash the run
    assert results["compile"]["timed_out"] or results["compile"]["rows"] or results["compile"].get("error")

    text = md.read_text()
    for heading in ("## Machine", "## Targets at a glance", "### Latency, ms (min / median)", "### Peak memory",
                    "### Training step", "### torch.compile", "## 2. Distillation step cost", "### sr ×2 on",
                    "### enhance:", "### Extra folder", "## 4. GPU"):
        assert heading in text, heading
    assert "| hdrnet |" in text and "| reference |" not in text.split("### Latency")[0]
    for png in ("latency.png", "quality_sr.png", "distill_cost.png"):
        assert (out / png).stat().st_size > 0
        assert f"]({png})" in text.replace("results/", "")  # linked relative to the report


def test_kd_table_trains_only_the_students_asked_for_and_keeps_the_others(run_all, tmp_path):
    import kd_table

    data = run_all._smoke_data(tmp_path / "data")
    cfg = dict(kd_table.CONFIGS["smoke"], seeds=[0])
    teacher_dir, _ = kd_table.train_teacher(cfg, tmp_path / "runs", data)
    earlier = {"teacher": {"spec": cfg["teacher"], "psnr": 30.0},
               "students": {"compact": {"spec": {"name": "compact", "params": {}}, "feature": "body.9", "measured": "2026-01-01",
                                        "rows": {row: [{"seed": 0, "psnr": psnr, "ssim": 0.9, "params": 9,
                                                        "run": str(tmp_path / "gone")}]
                                                 for row, psnr in (("alone", 31.0), ("distilled", 31.1))}}},
               "latency": {"compact": {"min_ms": 5.0, "median_ms": 6.0}}}
    result = kd_table.measure(cfg, tmp_path / "runs", data, students=["edsr"], teacher_run=teacher_dir,
                              previous=earlier)
    assert list(result["students"]) == ["compact", "edsr"]
    assert result["students"]["compact"] == earlier["students"]["compact"]  # kept as it was
    # its run folder is gone: timed again, built from its spec, beside the others
    assert result["latency"]["compact"] != earlier["latency"]["compact"] and result["latency"]["compact"]["min_ms"] > 0
    assert set(result["latency"]) == {"teacher", "compact", "edsr"}
    assert result["teacher"]["run"] == str(teacher_dir)  # reused, not trained again
    assert "kept from an earlier run of this benchmark (2026-01-01" in kd_table.markdown(result)


def test_unknown_data_folder_is_a_usage_error(run_all, tmp_path):
    assert run_all.main(["--smoke", "--out", str(tmp_path), "--data", str(tmp_path / "missing")]) == 2


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_cpu_model_comes_from_proc_cpuinfo(run_all):
    import common

    assert common.cpu_model() != ""
