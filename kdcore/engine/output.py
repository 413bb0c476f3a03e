"""The run folder: may it be used (new, overwrite, resume), and the metrics log written into it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from kdcore.engine.checkpoints import STATE
from kdcore.errors import SpecError
from kdcore.plan import SPEC_FILE, RunPlan
from kdcore.spec import read_spec_file

#: keys that do not change what a run computes: a resumed run may change them
RESUME_FREE_KEYS = {
    ("train", "eval_every"),
    ("train", "checkpoint_every"),
    ("train", "log_every"),
    ("data", "workers"),
    ("train", "device"),
    ("train", "baseline"),
    ("plugins",),
}


def diff_keys(a: Any, b: Any, path: tuple = ()) -> list[str]:
    """Dotted keys whose values differ between two resolved specs (resume-free keys left out)."""
    if path in RESUME_FREE_KEYS:
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += diff_keys(a.get(k), b.get(k), (*path, k))
        return out
    return [] if a == b else [".".join(map(str, path))]


def check_output(plan: RunPlan) -> None:
    """``output`` must be a folder or not exist yet."""
    if plan.output.exists() and not plan.output.is_dir():
        raise SpecError(f"output: {plan.output} exists and is not a folder; choose a folder")


def prepare_output(plan: RunPlan, *, resume: bool, overwrite: bool) -> Path:
    """Checks the run folder may be used; returns it. Raises before anything is written."""
    out = plan.output
    resolved = plan.resolved()
    check_output(plan)
    old_spec_file = out / SPEC_FILE
    if resume:
        if not (out / STATE).exists():
            raise SpecError(f"--resume: {out} holds no checkpoint to resume from; run without --resume")
        differing = diff_keys(read_spec_file(old_spec_file), resolved)
        if differing:
            raise SpecError(
                "--resume: the spec differs from the interrupted run's in "
                + ", ".join(differing[:8])
                + "; restore those keys or start a new output folder"
            )
        return out
    if out.exists() and any(out.iterdir()):
        if not old_spec_file.exists():
            raise SpecError(f"output: {out} is not empty and holds no kdcore run; choose another folder")
        if not overwrite and not _same_run(old_spec_file, resolved):
            raise SpecError(
                f"output: {out} already holds a different run; pass --overwrite to replace it, "
                "--resume to continue it, or choose another folder"
            )
        shutil.rmtree(out)
    return out


def _same_run(old_spec_file: Path, resolved: dict) -> bool:
    try:
        return not diff_keys(read_spec_file(old_spec_file), resolved)
    except SpecError:
        return False


def finished_run(plan: RunPlan) -> dict | None:
    """The summary of a finished run of this same spec in ``plan.output`` (for ``--reuse``), else None."""
    out = plan.output
    summary_file, spec_file = out / "summary.json", out / SPEC_FILE
    if not (summary_file.is_file() and spec_file.is_file() and (out / "model.safetensors").is_file()):
        return None
    if not _same_run(spec_file, plan.resolved()):
        return None
    try:
        summary = json.loads(summary_file.read_text())
    except (OSError, ValueError):
        return None
    if summary.get("steps") != plan.train.steps or any(b not in summary for b in plan.train.baselines):
        return None
    return summary


class MetricsLog:
    """metrics.jsonl (one object per line, each with "step") and TensorBoard scalars."""

    def __init__(self, out: Path, keep_until: int | None):
        self.path = out / "metrics.jsonl"
        if keep_until is not None and self.path.exists():
            # drop what an interrupted run logged after its last checkpoint
            lines = [line for line in self.path.read_text().splitlines() if line.strip()]
            kept = [line for line in lines if json.loads(line).get("step", 0) <= keep_until]
            self.path.write_text("".join(line + "\n" for line in kept))
        self.file = self.path.open("a")
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(log_dir=str(out / "tensorboard"))

    def log(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        step = record["step"]
        for k, v in record.items():
            if k != "step" and isinstance(v, (int, float)):
                self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        self.file.close()
        self.tb.close()
