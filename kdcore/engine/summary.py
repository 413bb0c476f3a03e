"""summary.json: what a finished run reports (student, teacher, baseline, latency, timing)."""

from __future__ import annotations

import time
from statistics import median
from typing import TYPE_CHECKING, Any

import torch

from kdcore.engine.evaluate import baseline_name, count_params, latency_samples

if TYPE_CHECKING:
    from kdcore.engine.trainer import Trainer


class Ensemble(torch.nn.Module):
    """The run's teachers as one module returning the ensemble image (for latency)."""

    def __init__(self, forward):
        super().__init__()
        self._forward = forward

    def forward(self, x):
        return self._forward(x).image


def latency_probe(trainer: Trainer) -> torch.Tensor:
    """The input latency is measured on: ``train.latency_input`` (a random image), else the first
    validation image."""
    size = trainer.plan.train.latency_input
    if size is None:
        return trainer.data.val_pairs[0].input.unsqueeze(0).to(trainer.device)
    generator = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, *size, generator=generator).to(trainer.device)


def run_summary(trainer: Trainer, result: dict) -> dict[str, Any]:
    """The content of summary.json, from the final evaluation ``result``."""
    plan, run = trainer.plan, trainer.run
    task = plan.task
    probe = latency_probe(trainer)
    student_times = latency_samples(trainer.eval_model(), probe)
    summary: dict[str, Any] = {
        "student": {
            "name": plan.student.name,
            "params": count_params(run.student),
            **result["student"],
            "latency_ms": median(student_times),
            "latency_runs": len(student_times),
        },
        "teacher": None,
        "baseline": {"name": baseline_name(task), **result["baseline"]},
        "steps": trainer.step_count,
        "output": str(trainer.out),
        "seconds": time.perf_counter() - trainer.t_start,
        "task": task.model_dump(),
        "measured_against": result["against"],
        "val_images": result["images"],
        "val_data": plan.val_data.to_spec(),
        "degradation": plan.degradation,
        "val_sets": {
            name: {
                "data": plan.val_sets[name].to_spec(),
                "images": len(one["images"]),
                "baseline": one["baseline"],
                "teacher": one["teacher"],
                "student": one["student"],
            }
            for name, one in result["sets"].items()
        },
        "latency_input": list(probe.shape[-2:]),
        "device": str(trainer.device),
        "ema": plan.train.ema is not None,
    }
    if plan.train.onnx_latency:
        summary["student"]["onnx_latency_ms"] = _onnx_latency(trainer.eval_model(), probe)
    if run.teachers:
        teacher_times = latency_samples(Ensemble(run.teacher_forward), probe)
        names = [c.name for c in plan.teachers]
        summary["teacher"] = {
            "name": names[0] if len(names) == 1 else names,
            "params": sum(count_params(m) for m in run.teachers),
            **(result["teacher"] or {"psnr": None, "ssim": None}),
            "latency_ms": median(teacher_times),
            "latency_runs": len(teacher_times),
        }
    return summary


def _onnx_latency(model: torch.nn.Module, probe: torch.Tensor) -> float | None:
    """The student's onnxruntime latency (``train.onnx_latency``), None where it cannot be exported."""
    from kdcore.errors import KdcoreError
    from kdcore.onnx.runtime import onnx_latency_ms

    try:
        return onnx_latency_ms(model, probe.cpu(), threads=torch.get_num_threads())
    except KdcoreError:
        return None
