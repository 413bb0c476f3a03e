"""Cost of a distillation step in the real training engine (``kdcore.run``), side by side.

Three runs with the same student, data, batch and seed: plain supervised training, distillation
with ``train.teacher_cache: "memory"`` and with ``"off"``. Step times are the intervals between
the engine's ``StepEnded`` events (median over the steps after the first few, so the
one-off warm-up and the teacher-cache fill are excluded from the median and reported separately).
The time spent waiting for data is the ``data_seconds`` of each ``StepEnded`` event.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import kdcore
from kdcore.engine.events import Event, RunStarted, StepEnded

#: targets for the distillation/plain step-time ratio
CACHE_ON_TARGET = 1.10
CACHE_OFF_TARGET = 1.5


def timed_run(spec: dict, skip: int) -> dict[str, Any]:
    """Runs ``spec`` through ``kdcore.run``; returns step-time statistics and the data-wait fraction."""
    stamps: list[float] = []
    start: list[float] = []
    waits: list[float] = []

    def callback(event: Event) -> None:
        if isinstance(event, RunStarted):
            start.append(time.perf_counter())
        elif isinstance(event, StepEnded):
            stamps.append(time.perf_counter())
            waits.append(event.data_seconds)

    t0 = time.perf_counter()
    summary = kdcore.run(spec, overwrite=True, callback=callback)
    total = time.perf_counter() - t0
    intervals = [b - a for a, b in zip(start + stamps, stamps)]
    steady = intervals[skip:] or intervals
    steady_waits = waits[skip: len(intervals)]
    return {
        "steps": len(intervals),
        "step_median_s": statistics.median(steady),
        "step_min_s": min(steady),
        "steady_steps": len(steady),
        "first_steps_s": intervals[:skip],
        "train_loop_s": sum(intervals),
        "data_wait_fraction": (sum(steady_waits) / sum(steady)) if steady_waits else None,
        "data_wait_median_ms": statistics.median(steady_waits) * 1e3 if steady_waits else None,
        "run_total_s": total,
        "student_psnr": summary["student"]["psnr"],
    }


def step_cost(teacher: dict, student: dict, task: dict, data: dict, steps: int, out: Path, skip: int,
              rounds: int = 1) -> dict[str, Any]:
    """Plain vs distillation (cache memory / off) step time; ratios from runs made one after another.

    With ``rounds`` > 1 the three runs repeat in that order and each ratio is the median over rounds.
    The distillation losses compare images only (l1 to the target, l1 and relative difference to
    the teacher), so the cache can stand in for the teacher; a feature loss would keep the teacher live.
    """
    base = {"task": task, "data": data, "student": student,
            "train": {"steps": steps, "lr": 0.001, "seed": 0, "log_every": steps}}
    distill_losses = [{"name": "l1"}, {"name": "l1", "weight": 0.5, "params": {"against": "teacher"}},
                      {"name": "relative-difference", "weight": 0.5}]
    variants = {
        "plain": {**base, "losses": [{"name": "l1"}]},
        "distill-cache-memory": {**base, "teacher": teacher, "losses": distill_losses,
                                 "train": {**base["train"], "teacher_cache": "memory"}},
        "distill-cache-off": {**base, "teacher": teacher, "losses": distill_losses,
                              "train": {**base["train"], "teacher_cache": "off"}},
    }
    results: dict[str, list[dict]] = {k: [] for k in variants}
    for r in range(rounds):
        for name, spec in variants.items():
            results[name].append(timed_run({**spec, "output": str(out / f"{name}-{r}")}, skip))
    ratios = {}
    for name in ("distill-cache-memory", "distill-cache-off"):
        per_round = [d["step_median_s"] / p["step_median_s"] for d, p in zip(results[name], results["plain"])]
        ratios[name] = {"median": statistics.median(per_round), "rounds": per_round}
    summary = {name: {
        "step_median_ms": statistics.median(r["step_median_s"] for r in rs) * 1e3,
        "step_min_ms": min(r["step_min_s"] for r in rs) * 1e3,
        "data_wait_fraction": statistics.median(r["data_wait_fraction"] for r in rs)
        if all(r["data_wait_fraction"] is not None for r in rs) else None,
        "first_steps_s": rs[0]["first_steps_s"],
        "runs": rs,
    } for name, rs in results.items()}
    return {"teacher": teacher, "student": student, "task": task, "data": data, "steps": steps,
            "skipped_steps": skip, "rounds": rounds, "variants": summary, "ratios": ratios,
            "targets": {"distill-cache-memory": CACHE_ON_TARGET, "distill-cache-off": CACHE_OFF_TARGET}}
