"""Runs that prove distillation helped: the no-teacher baselines beside a run, and several seeds.

``train.baseline: "alone"`` trains the same student with the same seed, data, steps and schedule
but without the teacher in ``RUN/alone/``; ``"init-only"`` trains the teacher-initialised student
without teacher losses in ``RUN/init-only/``. ``kdcore run --seeds 0,1,2`` runs everything once per
seed in ``RUN/seed-N/`` and writes an aggregate ``RUN/summary.json``.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from kdcore.engine.checkpoints import STATE
from kdcore.engine.events import Callback, Message
from kdcore.engine.trainer import train
from kdcore.errors import SpecError
from kdcore.files import atomic_write
from kdcore.interfaces import Loss
from kdcore.losses import uses_teacher
from kdcore.plan import RunPlan, SpecLike

#: summary.json keys of the models a run (and its baselines) reports
MODELS = ("baseline", "teacher", "student", "alone", "init-only")


def baseline_spec(plan: RunPlan, which: str) -> dict:
    """The spec of baseline ``which`` ('alone' or 'init-only') of ``plan``.

    Teacher-using loss terms are dropped and the target losses kept (L1 to the target when none is
    left); unlabelled data (learnt from the teacher) is dropped. 'alone' never uses the teacher,
    not even for initialisation; 'init-only' keeps ``student.init: "teacher"``.
    """
    raw = plan.resolved()
    raw.pop("plugins", None)
    keep = [i for i, comp in enumerate(plan.losses) if not uses_teacher(cast(Loss, comp.build(plan.task)))]
    raw["losses"] = [raw["losses"][i] for i in keep] or [{"name": "l1", "weight": 1.0, "params": {}}]
    raw["data"]["unlabeled"] = []
    raw["train"]["baseline"] = "none"
    raw["output"] = str(plan.output / which)
    if which == "alone":
        raw["teacher"] = None
        if raw["student"].get("init") == "teacher":
            raw["student"]["init"] = None
            raw["student"]["init_rename"] = {}
    return raw


def check_baselines(plan: RunPlan) -> None:
    """Refuses baselines that cannot be trained (no ground truth to train the student alone)."""
    if plan.train.baselines and not plan.has_targets():
        raise SpecError(
            "train.baseline: the student trained without the teacher needs ground truth, and data.train has "
            'none (an \'enhance\' folder); give {"input": FOLDER, "target": FOLDER} or remove train.baseline'
        )


def _model_block(summary: dict) -> dict:
    return {**summary["student"], "output": summary["output"], "steps": summary["steps"]}


def run_with_baselines(
    plan: RunPlan, *, callbacks: Sequence[Callback] = (), resume: bool = False, overwrite: bool = False
) -> dict:
    """Trains ``plan`` and each baseline it asks for; returns the combined summary (summary.json)."""
    check_baselines(plan)
    summary = train(plan, callbacks=callbacks, resume=resume, overwrite=overwrite)
    if plan.train.baselines:
        summary = _train_baselines(plan, summary, callbacks, resume)
    return summary


def _train_baselines(plan: RunPlan, summary: dict, callbacks: Sequence[Callback], resume: bool) -> dict:
    for which in plan.train.baselines:
        sub = RunPlan.from_spec(baseline_spec(plan, which), registry=plan.registry, check_sources=False)
        for callback in callbacks:
            callback(
                Message(f"baseline '{which}': the same student without the teacher's losses in {sub.output}")
            )
        sub_resume = resume and (sub.output / STATE).exists()
        sub_summary = train(sub, callbacks=callbacks, resume=sub_resume, overwrite=True)
        summary[which] = _model_block(sub_summary)
        for name, block in summary.get("val_sets", {}).items():
            block[which] = sub_summary["val_sets"][name]["student"]
    for block in (summary, *summary.get("val_sets", {}).values()):
        student_psnr = block["student"]["psnr"]
        if "alone" in block:
            block["kd_gain_db"] = student_psnr - block["alone"]["psnr"]
        if "init-only" in block:
            block["kd_gain_over_init_only_db"] = student_psnr - block["init-only"]["psnr"]
    if int(os.environ.get("RANK", "0")) == 0:
        text = json.dumps(summary, indent=2) + "\n"
        atomic_write(plan.output / "summary.json", lambda tmp: Path(tmp).write_text(text))
    return summary


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def aggregate(summaries: list[dict], seeds: Sequence[int], folders: Sequence[Path]) -> dict:
    """Mean, std, min and max over seeds of every model's PSNR/SSIM and of the KD gain (also per
    validation set, under ``val_sets``)."""
    out: dict[str, Any] = {"seeds": list(seeds), "runs": [str(f) for f in folders]}
    out.update(_aggregate_models(summaries))
    names = [
        name
        for name in summaries[0].get("val_sets", {})
        if all(name in s.get("val_sets", {}) for s in summaries)
    ]
    if names:
        out["val_sets"] = {
            name: _aggregate_models([s["val_sets"][name] for s in summaries]) for name in names
        }
    return out


def _aggregate_models(summaries: list[dict]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model in MODELS:
        blocks: list[Any] = [s.get(model) for s in summaries]  # a model's block, or None: skipped
        if not all(blocks) or any(b.get("psnr") is None for b in blocks):
            continue
        out[model] = {
            **{k: blocks[0][k] for k in ("name", "params") if k in blocks[0]},
            "psnr": _stats([b["psnr"] for b in blocks]),
            "ssim": _stats([b["ssim"] for b in blocks]),
        }
        if blocks[0].get("latency_ms") is not None:
            out[model]["latency_ms"] = _stats([b["latency_ms"] for b in blocks])
    if all("kd_gain_db" in s for s in summaries):
        out["kd_gain_db"] = _stats([s["kd_gain_db"] for s in summaries])
        student, alone = out["student"]["psnr"], out["alone"]["psnr"]
        overlap = student["min"] <= alone["max"] and alone["min"] <= student["max"]
        out["kd_gain_verdict"] = (
            "within noise" if overlap else ("gain" if student["mean"] > alone["mean"] else "loss")
        )
    return out


def run_seeds(
    spec: SpecLike | RunPlan,
    seeds: Sequence[int],
    *,
    callbacks: Sequence[Callback] = (),
    resume: bool = False,
    overwrite: bool = False,
    **overrides: Any,
) -> dict:
    """One complete run per seed in ``OUTPUT/seed-N/``; writes and returns the aggregate summary."""
    if not seeds:
        raise SpecError("--seeds: give at least one seed, e.g. --seeds 0,1,2")
    base_spec = spec.spec if isinstance(spec, RunPlan) else spec
    base = RunPlan.from_spec(base_spec, overrides)
    plans = [
        RunPlan.from_spec(
            base_spec, {**overrides, "train.seed": seed, "output": str(base.output / f"seed-{seed}")}
        )
        for seed in seeds
    ]
    summaries = []
    for plan in plans:
        for callback in callbacks:
            callback(Message(f"seed {plan.train.seed}: {plan.output}"))
        summaries.append(run_with_baselines(plan, callbacks=callbacks, resume=resume, overwrite=overwrite))
    result = aggregate(summaries, seeds, [p.output for p in plans])
    result["output"] = str(base.output)
    if int(os.environ.get("RANK", "0")) == 0:
        text = json.dumps(result, indent=2) + "\n"
        atomic_write(base.output / "summary.json", lambda tmp: Path(tmp).write_text(text))
    return result
