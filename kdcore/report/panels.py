"""The comparison images of a run folder, split back into their panels, with per-image PSNR.

The engine writes ``images/NAME.png`` at the end of a run: the panels input (nearest-neighbour
upscaled) | baseline | student | teacher | target glued side by side, each the size of the output,
teacher and target only where the run has them. Every panel is the 8-bit rounding of what the
evaluation scored, and the metric convention rounds to 8 bits too, so the PSNR of a split panel
against the split target is the very per-image value the run averaged into summary.json. Splitting
(rather than running the student again) keeps the report exact and works on any run folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from kdcore.errors import DataError
from kdcore.interfaces import Task
from kdcore.metrics import image_psnr

IMAGES_DIR = "images"
STRIP_INDEX = "strips.json"
"""``images/strips.json``: the panel order of the strips, where the engine records it."""

PANEL_ORDER = ("input", "baseline", "student", "teacher", "target")


def strip_layout(has_teacher: bool, has_target: bool) -> list[str]:
    """The panels of a strip, left to right, as the engine glues them."""
    return [p for p in PANEL_ORDER if (p != "teacher" or has_teacher) and (p != "target" or has_target)]


def write_strip_index(
    images_dir: str | Path, panels: list[str], names: list[str], label_height: int = 0
) -> Path:
    """Records the strips' panel order next to them (``images/strips.json``), and the height of the
    label band above the panels (``label_height`` pixels, cut off when the strips are split).

    For the engine to call after writing the strips, so that a report never has to infer the
    layout from summary.json; old run folders without the file are read by inference.
    """
    unknown = [p for p in panels if p not in PANEL_ORDER]
    if unknown:
        raise ValueError(f"unknown panel names {unknown}; expected some of {PANEL_ORDER}")
    path = Path(images_dir) / STRIP_INDEX
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    record = {"panels": list(panels), "images": list(names), "label_height": int(label_height)}
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)
    return path


def run_layout(folder: Path, summary: dict[str, Any] | None) -> tuple[list[str], bool]:
    """The panel order of a run's strips and whether it was recorded (images/strips.json) rather
    than inferred from summary.json (teacher present? measured against a target?)."""
    index = folder / IMAGES_DIR / STRIP_INDEX
    if index.is_file():
        try:
            panels = json.loads(index.read_text())["panels"]
            if isinstance(panels, list) and all(p in PANEL_ORDER for p in panels):
                return panels, True
        except (OSError, ValueError, KeyError, TypeError):
            pass
    summary = summary or {}
    return strip_layout(
        bool(summary.get("teacher")), summary.get("measured_against", "target") == "target"
    ), False


@dataclass
class Panel:
    """One image of one validation example: ``kind`` is a name of :data:`PANEL_ORDER` or ``alone``."""

    kind: str
    pixels: np.ndarray  # H×W×3 uint8, full output resolution
    run: int  # index of the run it comes from
    psnr: float | None = None


def label_height(folder: Path) -> int:
    """The height of the label band above a run's strips (images/strips.json; 0 for older runs)."""
    try:
        value = json.loads((folder / IMAGES_DIR / STRIP_INDEX).read_text()).get("label_height", 0)
    except (OSError, ValueError, AttributeError):
        return 0
    return value if isinstance(value, int) and value >= 0 else 0


def split_strip(path: Path, layout: list[str], check_scale: int = 1, top: int = 0) -> dict[str, np.ndarray]:
    """The panels of one strip file as H×W×3 uint8 arrays (``top`` rows of labels cut off).

    A width that is not ``len(layout)`` equal panels is a :class:`DataError`; so is, with
    ``check_scale`` > 1 (for an inferred layout), an input panel that is not the nearest-neighbour
    enlargement the engine writes — the sign of a strip with other panels than assumed.
    """
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))[top:]
    width = pixels.shape[1]
    if width % len(layout):
        raise DataError(
            f"{path}: width {width} is not {len(layout)} panels ({' | '.join(layout)}); "
            f"the run's summary.json does not match its images"
        )
    step = width // len(layout)
    parts = {name: pixels[:, i * step : (i + 1) * step] for i, name in enumerate(layout)}
    if check_scale > 1 and "input" in parts and low_resolution(parts["input"], check_scale) is None:
        raise DataError(
            f"{path}: does not split into the panels {' | '.join(layout)} (its first panel is not "
            "an enlarged input); the run's summary.json does not match its images"
        )
    return parts


def strip_names(folder: Path) -> list[str]:
    """Names of the validation images with a strip, in the run's order (summary's val_images first)."""
    images = folder / IMAGES_DIR
    if not images.is_dir():
        return []
    return sorted(p.stem for p in images.glob("*.png") if not p.name.startswith("."))


def as_tensor(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))).float() / 255.0


def panel_psnr(pixels: np.ndarray, reference: np.ndarray, task: dict[str, Any]) -> float:
    """PSNR of a panel against the reference panel, by the run's metric convention."""
    return image_psnr(as_tensor(pixels), as_tensor(reference), Task.model_validate(task))


def low_resolution(input_panel: np.ndarray, scale: int) -> np.ndarray | None:
    """The low-resolution input behind a nearest-neighbour upscaled panel, if it is exactly that.

    The page then embeds scale² fewer pixels and the browser enlarges them without smoothing.
    """
    if scale <= 1 or input_panel.shape[0] % scale or input_panel.shape[1] % scale:
        return None
    low = input_panel[::scale, ::scale]
    if np.array_equal(np.repeat(np.repeat(low, scale, axis=0), scale, axis=1), input_panel):
        return np.ascontiguousarray(low)
    return None
