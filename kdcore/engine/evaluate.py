"""Evaluation on whole validation images: metrics, the baseline, comparison images, latency."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kdcore.data import ImagePair, save_image, upscale_bicubic
from kdcore.data.images import DEFAULT_DEGRADATION
from kdcore.interfaces import Task, as_output
from kdcore.metrics import image_metrics, mean_metrics


def baseline_output(x: torch.Tensor, task: Task, degradation: str = DEFAULT_DEGRADATION) -> torch.Tensor:
    """Bicubic upscaling for sr (by the convention of ``degradation``), the unchanged input for enhance."""
    return upscale_bicubic(x, task.scale, degradation) if task.scale > 1 else x.clamp(0, 1)


def baseline_name(task: Task) -> str:
    return "bicubic" if task.scale > 1 else "identity"


@torch.inference_mode()
def evaluate(
    student: torch.nn.Module,
    pairs: list[ImagePair],
    task: Task,
    device: torch.device,
    *,
    teacher_forward=None,
    images_dir: Path | None = None,
    degradation: str = DEFAULT_DEGRADATION,
) -> dict:
    """Metrics of the student, the teacher (if any) and the baseline on whole images.

    Without ground truth the teacher's output is the reference, and the teacher itself gets no score.
    ``degradation`` is the bicubic convention of the baseline (``data.degradation``).
    """
    was_training = student.training
    student.eval()
    rows: dict[str, list[dict[str, float]]] = {"student": [], "teacher": [], "baseline": []}
    against = "target"
    try:
        for pair in pairs:
            x = pair.input.unsqueeze(0).to(device)
            out = as_output(student(x)).image.clamp(0, 1)[0].float().cpu()
            base = baseline_output(x, task, degradation)[0].float().cpu()
            teacher = teacher_forward(x).image.clamp(0, 1)[0].float().cpu() if teacher_forward else None
            reference = pair.target
            if reference is None:
                reference, against = teacher, "teacher"
            assert reference is not None  # pairs without targets are evaluated against a teacher
            rows["student"].append(image_metrics(out, reference, task, name=pair.name))
            rows["baseline"].append(image_metrics(base, reference, task, name=pair.name))
            if teacher is not None and pair.target is not None:
                rows["teacher"].append(image_metrics(teacher, reference, task))
            if images_dir is not None:
                panels = [_nearest(pair.input, out.shape[-2:]), base, out]
                labels = ["input", baseline_name(task), "student"]
                panels += [teacher] if teacher is not None else []
                labels += ["teacher"] if teacher is not None else []
                panels += [pair.target] if pair.target is not None else []
                labels += ["target"] if pair.target is not None else []
                save_image(labelled_strip(panels, labels), images_dir / f"{pair.name}.png")
    finally:
        student.train(was_training)
    if images_dir is not None and pairs:
        from kdcore.report import strip_layout, write_strip_index

        layout = strip_layout(teacher_forward is not None, pairs[0].target is not None)
        write_strip_index(images_dir, layout, [p.name for p in pairs], label_height=LABEL_HEIGHT)
    return {
        "degradation": degradation,
        "against": against,
        "student": mean_metrics(rows["student"]),
        "teacher": mean_metrics(rows["teacher"]) if rows["teacher"] else None,
        "baseline": mean_metrics(rows["baseline"]),
        "images": [p.name for p in pairs],
        "per_image": {"student": rows["student"], "baseline": rows["baseline"]},
    }


LABEL_HEIGHT = 12


def labelled_strip(panels: list[torch.Tensor], labels: list[str]) -> torch.Tensor:
    """The panels side by side (input | baseline | student | teacher | target), each with its label
    written in a small band above it."""
    from PIL import Image, ImageDraw

    strip = torch.cat(panels, dim=-1)
    band = Image.new("RGB", (strip.shape[-1], LABEL_HEIGHT), (0, 0, 0))
    draw = ImageDraw.Draw(band)
    x = 0
    for panel, label in zip(panels, labels, strict=True):
        draw.text((x + 2, 1), label, fill=(255, 255, 255))
        x += panel.shape[-1]
    header = torch.from_numpy(np.asarray(band, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0
    return torch.cat([header, strip.float().cpu()], dim=-2)


def _nearest(img: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(img[None], size=tuple(size), mode="nearest")[0]


#: latency: at most this many timed calls, at least MIN_LATENCY_RUNS, stopping once LATENCY_BUDGET_S is spent
LATENCY_RUNS = 5
MIN_LATENCY_RUNS = 3
LATENCY_BUDGET_S = 10.0


@torch.inference_mode()
def latency_samples(
    model: torch.nn.Module,
    x: torch.Tensor,
    runs: int = LATENCY_RUNS,
    budget_s: float = LATENCY_BUDGET_S,
    min_runs: int = MIN_LATENCY_RUNS,
) -> list[float]:
    """Wall times of ``model(x)`` in milliseconds, after one warm-up call.

    Up to ``runs`` calls; once ``min_runs`` are done, stops when the timed calls have taken
    ``budget_s`` (a multi-second teacher at 1080p would otherwise cost a minute per run folder). A
    model whose warm-up call alone takes more than half the budget (a large teacher at 1080p, tens
    of seconds a frame on a CPU) is timed once.
    """
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    model(x)
    if time.perf_counter() - t0 > budget_s / 2:
        runs = min_runs = 1
    times: list[float] = []
    for _ in range(runs):
        if x.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(x)
        if x.is_cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1000)
        if len(times) >= min_runs and sum(times) >= budget_s * 1000:
            break
    model.train(was_training)
    return times


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
