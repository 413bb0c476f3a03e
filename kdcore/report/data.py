"""What a report shows, read from a run folder: the headline table, the curves, the spec.

Everything here comes from the files a run writes (``spec.json``, ``summary.json``,
``metrics.jsonl``); nothing is recomputed, so the page shows exactly what the run measured.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdcore.errors import SpecError

#: rows of the headline table, in order: summary.json key -> label
MODEL_ROWS: tuple[tuple[str, str], ...] = (
    ("baseline", "baseline"),
    ("teacher", "teacher"),
    ("alone", "student alone (no teacher)"),
    ("student", "student"),
)


@dataclass
class RunData:
    """One run folder as the report sees it. ``summary`` is None for a run that has not finished."""

    folder: Path
    label: str
    spec: dict[str, Any]
    summary: dict[str, Any] | None
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def task(self) -> dict[str, Any]:
        task = (self.summary or {}).get("task") or self.spec.get("task") or {}
        return {"kind": task.get("kind", "sr"), "scale": int(task.get("scale", 1))}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SpecError(f"{path}: cannot be read as JSON ({exc}); is the run folder intact?") from None


def read_records(path: Path) -> list[dict[str, Any]]:
    """The objects of ``metrics.jsonl`` in file order (blank lines skipped; a torn last line too)."""
    if not path.is_file():
        return []
    records = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if i == len(lines) - 1:  # a run killed mid-write leaves a torn last line
                break
            raise SpecError(f"{path}: line {i + 1} is not JSON; is the run folder intact?") from None
        if isinstance(record, dict) and "step" in record:
            records.append(record)
    return records


def load_run(folder: str | Path, label: str | None = None) -> RunData:
    """Reads a run folder; a missing folder or one without ``spec.json`` is a :class:`SpecError`."""
    folder = Path(folder)
    if not folder.exists():
        raise SpecError(f"{folder}: no such run folder")
    if not folder.is_dir():
        raise SpecError(f"{folder}: not a folder; give a kdcore run folder (the spec's output)")
    if not (folder / "spec.json").is_file():
        raise SpecError(f"{folder}: not a kdcore run folder (no spec.json); give the folder a run wrote")
    spec = _read_json(folder / "spec.json")
    summary = _read_json(folder / "summary.json") if (folder / "summary.json").is_file() else None
    return RunData(
        folder=folder,
        label=label or folder.name,
        spec=spec,
        summary=summary,
        records=read_records(folder / "metrics.jsonl"),
    )


def expand_run_folders(folders: list[Path]) -> list[Path]:
    """Run folders, with a ``--seeds`` parent (``seed-N/`` runs, no spec.json of its own) opened up."""
    out: list[Path] = []
    for folder in folders:
        seeds = sorted(folder.glob("seed-*/spec.json")) if folder.is_dir() else []
        if not (folder / "spec.json").exists() and seeds:
            out += sorted((p.parent for p in seeds), key=lambda p: _seed_key(p.name))
        else:
            out.append(folder)
    return out


def _seed_key(name: str) -> tuple[int, str]:
    tail = name.rpartition("-")[2]
    return (int(tail), name) if tail.isdigit() else (1 << 30, name)


def unique_labels(folders: list[Path]) -> list[str]:
    """Short distinct names: each folder's last path parts, as few as make them differ."""
    parts = [Path(f).resolve().parts for f in folders]
    for n in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-n:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [f"{'/'.join(p[-1:])} ({i + 1})" for i, p in enumerate(parts)]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _model_name(entry: dict[str, Any]) -> str:
    name = entry.get("name", "")
    return "+".join(name) if isinstance(name, list) else str(name)


def headline_rows(summary: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The table rows: one per model that summary.json holds, values exactly as stored there."""
    if not summary:
        return []
    rows = []
    sets = summary.get("val_sets") or {}
    for key, label in MODEL_ROWS:
        entry = summary.get(key)
        if not isinstance(entry, dict):
            continue
        rows.append(
            {
                "sets": {
                    name: (_number(block[key].get("psnr")), _number(block[key].get("ssim")))
                    for name, block in sets.items()
                    if isinstance(block.get(key), dict)
                },
                "key": key,
                "label": label,
                "name": _model_name(entry),
                "psnr": _number(entry.get("psnr")),
                "ssim": _number(entry.get("ssim")),
                "params": entry.get("params", 0 if key == "baseline" else None),
                "latency_ms": _number(entry.get("latency_ms")),
            }
        )
    return rows


def val_set_names(summaries: list[dict[str, Any] | None]) -> list[str]:
    """The validation sets the runs report, in order, when any run has more than one (else none:
    the single set's figures are the headline columns)."""
    found: dict[str, None] = {}
    for summary in summaries:
        found.update(dict.fromkeys((summary or {}).get("val_sets") or {}))
    return list(found) if len(found) > 1 else []


def kd_gain(summary: dict[str, Any] | None) -> float | None:
    """``kd_gain_db`` of summary.json (student PSNR minus the student trained alone), if present."""
    return _number((summary or {}).get("kd_gain_db"))


def _degradation_words(summary: dict[str, Any]) -> str:
    if summary.get("degradation", "torch-bicubic") == "matlab-bicubic":
        return "MATLAB-style bicubic downscaling (imresize, as published SR results)"
    return "PyTorch's antialiased bicubic downscaling"


def convention(run: RunData) -> str:
    """The metric convention in words (CONTRACT.md §5), with what the scores are measured against."""
    task = run.task
    summary = run.summary or {}
    n = len(summary.get("val_images") or []) or None
    images = f"{n} validation image{'s' if n != 1 else ''}" if n else "the validation images"
    if task["kind"] == "sr":
        s = task["scale"]
        text = (
            f"super-resolution ×{s}: PSNR and SSIM on the luma channel Y = 16 + 65.481·R + 128.553·G + "
            f"24.966·B (peak 255), both images rounded to 8 bits, {s} pixel{'s' if s != 1 else ''} cropped "
            f"at every border; inputs made by {_degradation_words(summary)}; the mean over {images}."
        )
    else:
        text = (
            "enhancement: PSNR and SSIM on RGB in [0, 1], both images rounded to 8 bits; "
            f"the mean over {images}."
        )
    sets = summary.get("val_sets") or {}
    if len(sets) > 1:
        text = text.replace(f"the mean over {images}", "the mean over each validation set's images")
        gains = [
            f"{name} {block['kd_gain_db']:+.2f} dB" for name, block in sets.items() if "kd_gain_db" in block
        ]
        text += f" Validation sets: {', '.join(sets)}" + (
            f"; KD gain per set: {', '.join(gains)}." if gains else "."
        )
    if summary.get("measured_against") == "teacher":
        text += " No ground truth: the scores measure agreement with the teacher's output."
    size = summary.get("latency_input")
    if size:
        text += (
            f" Latency: median of 5 runs on one {size[0]}×{size[1]} input, {summary.get('device', 'cpu')}."
        )
    return text


def curves(records: list[dict[str, Any]]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Series from metrics.jsonl: ``{"loss": {"loss": [...], "loss/l1": [...]}, "val": {"val/psnr": [...]}}``.

    Each series is ``[(step, value), ...]`` in file order; training rows give every ``loss``
    key, evaluation rows (``"eval": true``) every ``val/`` key.
    """
    out: dict[str, dict[str, list[tuple[int, float]]]] = {"loss": {}, "val": {}}
    for record in records:
        step = int(record["step"])
        for key, value in record.items():
            number = _number(value)
            if number is None:
                continue
            if key == "loss" or key.startswith("loss/"):
                out["loss"].setdefault(key, []).append((step, number))
            elif key.startswith("val/"):
                out["val"].setdefault(key, []).append((step, number))
    return out


def plugin_versions(spec: dict[str, Any]) -> dict[str, str]:
    """Distribution -> version of everything the run used (spec.json's ``plugins``)."""
    plugins = spec.get("plugins") or {}
    return {str(k): str(v) for k, v in plugins.items()} if isinstance(plugins, dict) else {}
