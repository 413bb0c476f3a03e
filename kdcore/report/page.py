"""report.html: one self-contained page (images as data URIs, styles and script inline, no network)
for one run or several side by side."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
from PIL import Image

from kdcore._version import __version__
from kdcore.errors import SpecError
from kdcore.report.data import (
    RunData,
    convention,
    curves,
    expand_run_folders,
    headline_rows,
    kd_gain,
    load_run,
    plugin_versions,
    unique_labels,
    val_set_names,
)
from kdcore.report.panels import (
    IMAGES_DIR,
    Panel,
    label_height,
    low_resolution,
    panel_psnr,
    run_layout,
    split_strip,
    strip_names,
)
from kdcore.report.plots import line_plot

REPORT_FILE = "report.html"

MAX_IMAGES = 10
"""Validation images shown as comparison views (all of them get a per-image PSNR row)."""
MAX_SIDE = 960
"""Images with a longer side are shown downscaled, with full-resolution crops."""
MIN_SIDE = 384
"""Images with a shorter longer side are shown enlarged by a whole factor (pixels kept sharp)."""
CROP_SIDE = 160
CROPS = 3

_LABELS = {
    "input": "input (upscaled)",
    "baseline": "baseline",
    "student": "student",
    "teacher": "teacher",
    "target": "target",
    "alone": "student alone",
}


# --------------------------------------------------------------------------- images


def _uri(pixels: np.ndarray, fmt: str) -> str:
    buffer = io.BytesIO()
    image = Image.fromarray(pixels)
    if fmt == "jpeg":
        image.save(buffer, format="JPEG", quality=90, subsampling=0)
        mime = "image/jpeg"
    else:
        image.save(buffer, format="PNG", compress_level=6)
        mime = "image/png"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def _downscale(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS))


def detail_crops(reference: np.ndarray, side: int, count: int) -> list[tuple[int, int, int, int]]:
    """``count`` non-overlapping ``side``-pixel squares where the image has the most detail
    (gradient energy of the luma): where differences between models are visible at all."""
    height, width = reference.shape[:2]
    side = min(side, height, width)
    luma = reference.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    energy = np.abs(np.diff(luma, axis=0, append=luma[-1:])) + np.abs(
        np.diff(luma, axis=1, append=luma[:, -1:])
    )
    integral = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    stride = max(side // 4, 1)
    candidates = []
    for y in range(0, height - side + 1, stride):
        for x in range(0, width - side + 1, stride):
            total = (
                integral[y + side, x + side] - integral[y, x + side] - integral[y + side, x] + integral[y, x]
            )
            candidates.append((float(total), x, y))
    candidates.sort(key=lambda c: -c[0])
    chosen: list[tuple[int, int, int, int]] = []
    for _, x, y in candidates:
        if all(abs(x - cx) >= side or abs(y - cy) >= side for cx, cy, _, _ in chosen):
            chosen.append((x, y, side, side))
            if len(chosen) == count:
                break
    return chosen


# --------------------------------------------------------------------------- comparison views


@dataclass
class ViewPanel:
    label: str
    kind: str
    run: int
    src: str
    lowres: bool
    psnr: float | None
    crops: list[str] = field(default_factory=list)


@dataclass
class View:
    """One validation image: its panels (from every run that has it) for the before/after view."""

    name: str
    width: int
    height: int
    panels: list[ViewPanel]
    crops: list[tuple[int, int, int, int]]
    display: tuple[int, int]
    downscaled: bool
    a: int
    b: int
    notes: list[str] = field(default_factory=list)

    def meta(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "w": self.width,
                "h": self.height,
                "dw": self.display[0],
                "dh": self.display[1],
                "crops": self.crops,
                "a": self.a,
                "b": self.b,
                "enlarged": self.display[0] > self.width,
                "panels": [{"label": p.label, "lowres": p.lowres} for p in self.panels],
            }
        )


def _run_panels(run: RunData, index: int, name: str) -> list[Panel]:
    """The panels of one image in one run (plus the alone student's, where the run has one)."""
    strip = run.folder / IMAGES_DIR / f"{name}.png"
    if not strip.is_file():
        return []
    layout, recorded = run_layout(run.folder, run.summary)
    scale = int(run.task["scale"])
    parts = split_strip(strip, layout, 1 if recorded else scale, label_height(run.folder))
    panels = [Panel(kind, pixels, index) for kind, pixels in parts.items()]
    alone_dir = run.folder / "alone"
    alone_strip = alone_dir / IMAGES_DIR / f"{name}.png"
    if alone_strip.is_file() and (alone_dir / "spec.json").is_file():
        alone_summary = _maybe_json(alone_dir / "summary.json")
        alone_layout, alone_recorded = run_layout(alone_dir, alone_summary)
        alone_parts = split_strip(
            alone_strip, alone_layout, 1 if alone_recorded else scale, label_height(alone_dir)
        )
        if alone_parts["student"].shape == parts["student"].shape:
            panels.append(Panel("alone", alone_parts["student"], index))
    reference = parts.get("target")
    if reference is None:
        reference = parts.get("teacher")
    for p in panels:
        if (
            reference is not None
            and p.kind not in ("input", "target")
            and not (p.kind == "teacher" and "target" not in parts)
        ):
            p.psnr = panel_psnr(p.pixels, reference, run.task)
    return panels


def _maybe_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def image_names(runs: list[RunData]) -> list[str]:
    """Validation images with strips in any run: summary.json's order first, then by name."""
    names: list[str] = []
    for run in runs:
        have = set(strip_names(run.folder))
        listed = [n for n in (run.summary or {}).get("val_images") or [] if n in have]
        for n in listed + sorted(have - set(listed)):
            if n not in names:
                names.append(n)
    return names


def gather_panels(runs: list[RunData], name: str) -> tuple[list[Panel], list[str], list[str]]:
    """Every distinct panel of one image across runs (identical pixels shown once), their labels,
    and notes on panels left out (a run whose images have another size)."""
    several = len(runs) > 1
    merged: list[tuple[Panel, list[int]]] = []
    seen: dict[bytes, int] = {}
    notes: list[str] = []
    shape = None
    for i, run in enumerate(runs):
        panels = _run_panels(run, i, name)
        if not panels:
            continue
        if shape is None:
            shape = panels[0].pixels.shape
        elif panels[0].pixels.shape != shape:
            notes.append(
                f"{run.label}: {name} has another size ({panels[0].pixels.shape[1]}×"
                f"{panels[0].pixels.shape[0]}), not shown here"
            )
            continue
        for p in panels:
            key = hashlib.sha1(p.kind.encode() + p.pixels.tobytes()).digest()
            if key in seen:
                merged[seen[key]][1].append(i)
            else:
                seen[key] = len(merged)
                merged.append((p, [i]))
    counts: dict[str, int] = {}
    for p, _ in merged:
        counts[p.kind] = counts.get(p.kind, 0) + 1
    order = {k: n for n, k in enumerate(("input", "baseline", "target", "teacher", "alone", "student"))}
    merged.sort(key=lambda m: (order.get(m[0].kind, 9), m[0].run))
    labels = []
    for p, in_runs in merged:
        label = _LABELS.get(p.kind, p.kind)
        if p.kind == "input" and runs[p.run].task["scale"] == 1:
            label = "input"  # enhance: shown as it is
        if several and (counts[p.kind] > 1 or len(in_runs) < len(runs)):
            label += " · " + ", ".join(runs[i].label for i in in_runs)
        labels.append(label)
    return [p for p, _ in merged], labels, notes


def build_view(runs: list[RunData], name: str, *, max_side: int = MAX_SIDE) -> View | None:
    """The before/after view of one validation image, or None where no run has its strip."""
    panels, labels, notes = gather_panels(runs, name)
    if not panels:
        return None
    height, width = panels[0].pixels.shape[:2]
    downscaled = max(height, width) > max_side
    factor = max_side / max(height, width) if downscaled else 1.0
    encoded = (max(1, round(width * factor)), max(1, round(height * factor)))
    # small images are shown enlarged by a whole factor, without smoothing
    enlarge = math.ceil(MIN_SIDE / max(encoded)) if max(encoded) < MIN_SIDE else 1
    display = (encoded[0] * enlarge, encoded[1] * enlarge)
    by_kind = {p.kind: p for p in panels}
    reference = by_kind.get("target") or by_kind.get("teacher") or by_kind.get("student") or panels[0]
    crops = detail_crops(reference.pixels, CROP_SIDE, CROPS) if downscaled else []
    scale = int(runs[panels[0].run].task["scale"])
    view_panels = []
    for p, label in zip(panels, labels, strict=True):
        low = low_resolution(p.pixels, scale) if p.kind == "input" else None
        if downscaled:
            src = _uri(_downscale(p.pixels, encoded), "jpeg")
        else:
            src = _uri(low if low is not None else p.pixels, "png")
        crop_srcs = [
            _uri(np.ascontiguousarray(p.pixels[y : y + h, x : x + w]), "png") for x, y, w, h in crops
        ]
        view_panels.append(
            ViewPanel(label, p.kind, p.run, src, low is not None and not downscaled, p.psnr, crop_srcs)
        )
    kinds = [p.kind for p in panels]
    students = [i for i, k in enumerate(kinds) if k == "student"]
    a = students[0] if students else 0
    if len(students) > 1:
        b = students[1]
    else:
        b = next((kinds.index(k) for k in ("target", "teacher", "baseline") if k in kinds), 0)
    return View(name, width, height, view_panels, crops, display, downscaled, a, b, notes)


# --------------------------------------------------------------------------- the page


def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _plots(runs: list[RunData]) -> list[str]:
    several = len(runs) > 1
    loss: dict[str, list] = {}
    val: dict[str, dict[str, list]] = {}
    for run in runs:
        c = curves(run.records)
        tag = f" · {run.label}" if several else ""
        for key, points in c["loss"].items():
            loss[key + tag] = points
        for key, points in c["val"].items():
            val.setdefault(key, {})[key + tag] = points
    out = []
    if loss:
        out.append(
            line_plot(
                loss,
                title="training loss (total and every term, as logged)",
                ylabel="loss",
                salt="loss",
                log=True,
            )
        )
    for key, series in val.items():
        metric = key.removeprefix("val/")
        refs: dict[str, float] = {}
        if metric in ("psnr", "ssim"):
            for model in ("baseline", "teacher"):
                values = set()
                for r in runs:
                    entry = (r.summary or {}).get(model)
                    if isinstance(entry, dict) and isinstance(entry.get(metric), (int, float)):
                        values.add(float(entry[metric]))
                if len(values) == 1:
                    refs[f"{model} (final)"] = values.pop()
        unit = " dB" if metric == "psnr" else ""
        out.append(
            line_plot(
                series,
                title=f"validation {metric.upper()} of the student over steps",
                ylabel=f"{metric.upper()}{unit}",
                salt=key,
                references=refs,
            )
        )
    return out


def _per_image_table(runs: list[RunData], names: list[str], views: dict[str, View]) -> dict[str, Any]:
    """PSNR per image and panel (columns: every distinct panel label), plus the mean of each column."""
    columns: list[str] = []
    rows = []
    for name in names:
        view = views.get(name)
        if view is None:
            panels, labels, _ = gather_panels(runs, name)
            values = {label: p.psnr for p, label in zip(panels, labels, strict=True)}
        else:
            values = {p.label: p.psnr for p in view.panels}
        values = {k: v for k, v in values.items() if v is not None}
        for label in values:
            if label not in columns:
                columns.append(label)
        rows.append((name, values))
    means = {c: float(np.mean([v[c] for _, v in rows if c in v])) for c in columns}
    counts = {c: sum(c in v for _, v in rows) for c in columns}
    return {
        "columns": columns,
        "rows": [(n, [_fmt(v.get(c), 2) for c in columns]) for n, v in rows],
        "means": [_fmt(means[c], 2) for c in columns],
        "counts": [counts[c] for c in columns],
    }


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("kdcore.report", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = _fmt
    return env


def render(runs: list[RunData], *, max_images: int = MAX_IMAGES, max_side: int = MAX_SIDE) -> str:
    """The page for one run or several (side by side), as a string."""
    names = image_names(runs)
    shown = names[:max_images]
    views: dict[str, View] = {}
    for name in shown:
        view = build_view(runs, name, max_side=max_side)
        if view is not None:
            views[name] = view
    tables = [
        {
            "run": run,
            "rows": headline_rows(run.summary),
            "kd_gain": kd_gain(run.summary),
            "convention": convention(run),
            "plugins": plugin_versions(run.spec),
            "spec": json.dumps(run.spec, indent=2),
        }
        for run in runs
    ]
    template = _environment().get_template("report.html.j2")
    title = runs[0].label if len(runs) == 1 else " vs ".join(r.label for r in runs)
    return template.render(
        title=title,
        runs=runs,
        tables=tables,
        several=len(runs) > 1,
        any_gain=any(t["kd_gain"] is not None for t in tables),
        set_names=val_set_names([run.summary for run in runs]),
        views=[views[n] for n in shown if n in views],
        names=names,
        hidden=len(names) - len(views),
        per_image=_per_image_table(runs, names, views),
        plots=_plots(runs),
        version=__version__,
        max_side=max_side,
        crop_side=CROP_SIDE,
    )


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # an ordinary file, not mkstemp's private one
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def report(
    run_dirs: str | os.PathLike | Iterable[str | os.PathLike],
    path: str | os.PathLike | None = None,
    *,
    max_images: int = MAX_IMAGES,
    max_side: int = MAX_SIDE,
) -> Path:
    """Writes the self-contained HTML report of one run folder (default ``RUN/report.html``) or of
    several side by side (``path`` required); returns its path.

    A ``--seeds`` run folder (``seed-N/`` runs inside) is shown as its seeds side by side.
    Raises :class:`kdcore.SpecError` for a missing folder or one that is not a run folder.
    """
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    given = [Path(d) for d in run_dirs]
    if not given:
        raise SpecError("report: give at least one run folder")
    if max_images < 0 or max_side < 16:
        raise SpecError("report: max_images must be >= 0 and max_side >= 16")
    folders = expand_run_folders(given)
    if path is None:
        if len(given) > 1:
            raise SpecError("report: several run folders need an output file: -o FILE (e.g. -o compare.html)")
        path = given[0] / REPORT_FILE
    runs = [load_run(f, label) for f, label in zip(folders, unique_labels(folders), strict=True)]
    out = Path(path)
    if out.is_dir():
        raise SpecError(f"-o: {out} is a folder; give a file name such as {out / 'compare.html'}")
    _atomic_write(out, render(runs, max_images=max_images, max_side=max_side))
    return out


def report_after_run(output: str | os.PathLike) -> Path | None:
    """``RUN/report.html`` at the end of ``kdcore run``. A failure here only warns: the run is kept."""
    import warnings

    if os.environ.get("RANK", "0") != "0":
        return None
    try:
        return report([output])
    except Exception as exc:  # noqa: BLE001 - the run is complete and must not be lost over its report
        warnings.warn(
            f"{output}: the run is complete, but report.html could not be written ({exc}); "
            f"`kdcore report {output}` tries again",
            stacklevel=2,
        )
        return None
