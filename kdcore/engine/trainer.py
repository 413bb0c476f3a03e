"""The Trainer: supervised training or distillation of a RunPlan, with events, checkpoints, resume.

Launched by ``torchrun``, each process trains on its share of every global batch with
DistributedDataParallel on the student and adapters; only rank 0 writes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import cast

import timm.utils
import torch

from kdcore.engine.build import BuiltRun, build_run
from kdcore.engine.checkpoints import STATE, WEIGHTS, load_state, save_state, save_weights
from kdcore.engine.distributed import barrier, init_distributed
from kdcore.engine.evaluate import evaluate
from kdcore.engine.events import (
    Callback,
    CheckpointWritten,
    Evaluated,
    Event,
    Message,
    RunEnded,
    RunStarted,
    StepEnded,
)
from kdcore.engine.feed import TrainingData, cache_report, step_inputs, teacher_caches
from kdcore.engine.optim import make_optimizer, make_scheduler
from kdcore.engine.output import MetricsLog, check_output, finished_run, prepare_output
from kdcore.engine.rng import rng_state, seed_everything, set_rng_state
from kdcore.engine.signals import StopSignals
from kdcore.engine.summary import run_summary
from kdcore.engine.watch import SilentDistillationWatch
from kdcore.errors import Interrupted, SpecError, TrainingError
from kdcore.files import atomic_write
from kdcore.interfaces import Loss
from kdcore.losses import uses_teacher
from kdcore.plan import RunPlan
from kdcore.spec import DEFAULT_VAL


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise SpecError(
                "train.device: 'cuda' was asked for but no CUDA device is available; use 'auto' or 'cpu'"
            )
        return torch.device("cuda")
    return torch.device("cpu")


def preflight(plan: RunPlan, world: int = 1) -> TrainingData:
    """What ``run`` refuses before training, checked without training (``kdcore validate``):
    the device, the data (decoded), the batch split, image sizes, the output folder."""
    pick_device(plan.train.device)
    data = TrainingData.load(plan)
    data.check(world)
    check_output(plan)
    return data


def nonfinite_advice(step: int, loss: str, t, last_checkpoint: int) -> str:
    """The message of a non-finite loss: advice that can be followed (a fresh start, not --resume,
    since train.lr and train.grad_clip change what the run computes)."""
    clip = f"a smaller train.grad_clip (now {t.grad_clip})" if t.grad_clip else "train.grad_clip (e.g. 1.0)"
    kept = (
        f"the checkpoint of step {last_checkpoint} is intact, but a changed train.lr cannot be resumed; "
        if last_checkpoint
        else ""
    )
    return (
        f"step {step}: loss {loss!r} is not finite; {kept}lower train.lr (now {t.lr:g}) or set {clip} and "
        "start again in a new output folder or with --overwrite"
    )


def run_notes(plan: RunPlan, run: BuiltRun, *, replaced: bool) -> list[tuple[str, str]]:
    """(text, level) of what the run log says about choices the spec made implicitly."""
    notes = []
    if replaced:
        notes.append((f"{plan.output} holds a finished run of this spec: it is replaced by this one", "info"))
    if plan.spec.data.val == DEFAULT_VAL and not str(plan.spec.data.train).startswith("builtin:"):
        notes.append(
            (
                f"data.val is not given: validating on the built-in photos ({DEFAULT_VAL}); set data.val "
                "to images like your training data",
                "info",
            )
        )
    if plan.train.teacher_cache != "off" and run.run_teacher and any(t is not None for t in run.teacher_taps):
        notes.append(
            (
                f"train.teacher_cache '{plan.train.teacher_cache}' is not used: a loss compares teacher "
                "features, which are computed live for each patch; set train.teacher_cache to 'off'",
                "warning",
            )
        )
    if plan.train.teacher_cache != "off" and not run.run_teacher:
        notes.append(
            (
                f"train.teacher_cache '{plan.train.teacher_cache}' is not used: no step needs the teacher's "
                "output",
                "warning",
            )
        )
    return notes


class Objective(torch.nn.Module):
    """Student and losses (with their adapters) as one module: what DDP wraps; the teacher stays out."""

    def __init__(self, run: BuiltRun):
        super().__init__()
        self.student = run.student
        self.losses = run.losses
        self._run = [run]  # not a submodule

    def forward(self, x, teacher, target) -> list[torch.Tensor]:
        out = self._run[0].student_forward(x, self.student)
        self.last_features = out.features  # what the silent-distillation watch looks at
        return [loss(out, teacher, target).float() for loss in self.losses]


class Trainer:
    """Trains the plan's student: :meth:`setup`, then :meth:`step` per batch, then :meth:`finish`.

    ``callbacks`` receive the typed events of :mod:`kdcore.engine.events`; :meth:`run` does it all.
    """

    def __init__(
        self,
        plan: RunPlan,
        *,
        callbacks: Sequence[Callback] = (),
        resume: bool = False,
        overwrite: bool = False,
    ):
        self.plan = plan
        self.callbacks = list(callbacks)
        self.resume, self.overwrite = resume, overwrite
        self.step_count = 0
        self.last_checkpoint = 0

    # -- events -------------------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        if self.writer:
            for callback in self.callbacks:
                callback(event)

    # -- setup --------------------------------------------------------------------------------
    def setup(self) -> None:
        """Loads the data, builds the modules, prepares the run folder, optimizer and state."""
        plan, t = self.plan, self.plan.train
        self.t_start = time.perf_counter()
        device = pick_device(t.device)
        seed_everything(t.seed)
        self.rank, self.world, self.device = init_distributed(device)
        self.writer = self.rank == 0
        self.run = build_run(plan, self.device, for_run=True)
        self.data = TrainingData.load(plan)
        self.data.check(self.world)  # the batch split and image sizes, before anything is written
        check_output(plan)
        self.out = plan.output
        self.replaced = finished_run(plan) is not None if not self.resume else False
        if self.writer:
            self.out = prepare_output(plan, resume=self.resume, overwrite=self.overwrite)
        barrier(self.world)
        self.objective = Objective(self.run)
        self.optimizer = make_optimizer(t, self.objective)
        self.scheduler = make_scheduler(t, self.optimizer)
        self.ema = timm.utils.ModelEmaV3(self.run.student, decay=t.ema) if t.ema else None
        self._start_state()
        self.model: torch.nn.Module = self.objective
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.objective, device_ids=ids)
        self.caches = teacher_caches(plan, self.run, self.device, self.data)
        watched = [
            n
            for n, loss in zip(self.run.loss_names, cast("Iterable[Loss]", self.run.losses), strict=True)
            if uses_teacher(loss)
        ]
        self.watch = SilentDistillationWatch(patience=3, losses=watched)
        self.amp = t.amp == "bf16" or (t.amp == "auto" and self.device.type == "cuda")
        for note in self.run.notes:
            self.emit(Message(note))
        self.emit(Message(self.data.describe()))
        for note, level in run_notes(plan, self.run, replaced=self.replaced):
            self.emit(Message(note, level=level))
        if self.run.teachers and (not plan.has_targets() or plan.unlabeled):
            rows = "the unlabelled rows" if plan.has_targets() else "data.train"
            self.emit(
                Message(
                    f"{rows} have no ground truth: losses that compare with the target use the "
                    "teacher's output there"
                )
            )

    def _start_state(self) -> None:
        """Restores the checkpoint (``--resume``) or starts the run folder with its spec.json."""
        if self.resume:
            state = load_state(self.out / STATE)
            self.run.student.load_state_dict(state["student"])
            self.run.losses.load_state_dict(state["losses"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"])
            set_rng_state(state["rng"])
            self.step_count = self.last_checkpoint = int(state["step"])
        elif self.writer:
            self.out.mkdir(parents=True, exist_ok=True)
            self.plan.write_spec(self.out)
        self.log = (
            MetricsLog(self.out, keep_until=self.step_count if self.resume else None) if self.writer else None
        )
        if self.resume:
            self.emit(Message(f"resuming {self.out} at step {self.step_count}"))

    # -- training -----------------------------------------------------------------------------
    def run_all(self) -> dict:
        """Setup, every step, and finish; returns the content of summary.json."""
        self.setup()
        t = self.plan.train
        loaders = self.data.loaders(self.step_count, self.rank, self.world, pin=self.device.type == "cuda")
        self.emit(RunStarted(self.step_count, t.steps, self.out, resumed=self.resume))
        self.run.student.train()
        stop = StopSignals()
        try:
            batches_iter = zip(*loaders, strict=True)
            while self.step_count < t.steps:
                t0 = time.perf_counter()
                batches = next(batches_iter)
                event = self.step(batches, data_seconds=time.perf_counter() - t0, t0=t0)
                self.after_step(event, stop)
        finally:
            stop.restore()
            if self.run.student_taps:
                self.run.student_taps.collect()
        return self.finish()

    def step(self, batches, *, data_seconds: float = 0.0, t0: float | None = None) -> StepEnded:
        """One optimizer step on ``batches`` (labelled, then unlabelled)."""
        t0 = time.perf_counter() if t0 is None else t0
        self.step_count += 1
        step, t = self.step_count, self.plan.train
        x, t_out, target = step_inputs(batches, self.run, self.caches, self.plan.task.scale, self.device)
        self.last_teacher = t_out
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            terms = self.model(x, t_out, target)
        total = sum(w * v for w, v in zip(self.run.loss_weights, terms, strict=True))
        if not torch.isfinite(total):
            bad = next(
                (n for n, v in zip(self.run.loss_names, terms, strict=True) if not torch.isfinite(v)), "total"
            )
            raise TrainingError(nonfinite_advice(step, bad, t, self.last_checkpoint))
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if t.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.objective.parameters(), t.grad_clip)
        self.optimizer.step()
        self.scheduler.step_update(num_updates=step)
        if self.ema is not None:
            self.ema.update(self.run.student, step=step)
        values = {n: float(v) for n, v in zip(self.run.loss_names, terms, strict=True)}
        return StepEnded(
            step,
            t.steps,
            float(total),
            values,
            self.optimizer.param_groups[0]["lr"],
            time.perf_counter() - t0,
            data_seconds,
        )

    def after_step(self, event: StepEnded, stop: StopSignals) -> None:
        """Logging, periodic evaluation and checkpoints, and a clean stop on SIGINT/SIGTERM."""
        t, step = self.plan.train, event.step
        self.emit(event)
        self._window = getattr(self, "_window", [])
        self._window.append(event.seconds)
        self._data_window = getattr(self, "_data_window", [])
        self._data_window.append(event.data_seconds)
        self.data_seconds = getattr(self, "data_seconds", 0.0) + event.data_seconds
        self.step_seconds = getattr(self, "step_seconds", 0.0) + event.seconds
        if self.writer and (step % t.log_every == 0 or step == t.steps):
            rate = len(self._window) / max(sum(self._window), 1e-9)
            waited = sum(self._data_window) / len(self._data_window)
            assert self.log is not None  # the writer has the metrics log
            self.log.log(
                {
                    "step": step,
                    "loss": event.loss,
                    **{f"loss/{k}": v for k, v in event.terms.items()},
                    "lr": event.lr,
                    "steps_per_second": rate,
                    "data_seconds": waited,
                }
            )
            self._window = []
            self._data_window = []
            self._watch(event)
        if t.eval_every and step % t.eval_every == 0 and step != t.steps:
            if self.writer:
                self.evaluate()
            barrier(self.world)
        if t.checkpoint_every and step % t.checkpoint_every == 0 and step != t.steps:
            self.checkpoint()
        if stop.received is not None and step != t.steps:
            self.checkpoint()
            raise Interrupted(
                f"{stop.received} at step {step}: checkpoint written to {self.out / STATE}; "
                "`kdcore run SPEC --resume` continues the run"
            )

    def _watch(self, event: StepEnded) -> None:
        """Warns when a teacher-using loss term or a tapped feature map stays exactly zero."""
        features = {f"student {k}": v for k, v in getattr(self.objective, "last_features", {}).items()}
        teacher = getattr(self, "last_teacher", None)
        if teacher is not None:
            features.update(
                {f"teacher {k}": v for k, v in teacher.features.items() if not k.startswith("0/")}
            )
        for text in self.watch.observe(event.step, event.terms, features):
            self.emit(Message(text, level="warning"))

    # -- evaluation, checkpoints, the end -------------------------------------------------------
    def eval_model(self) -> torch.nn.Module:
        """What is evaluated and saved: the EMA of the student when there is one."""
        return self.ema.module if self.ema is not None else self.run.student

    def evaluate(self, images_dir: Path | None = None) -> dict:
        """Metrics on the validation images, logged and emitted."""
        teacher = self.run.teacher_forward if self.run.teachers else None
        sets = {
            name: evaluate(
                self.eval_model(),
                pairs,
                self.plan.task,
                self.device,
                teacher_forward=teacher,
                images_dir=images_dir if i == 0 else None,  # comparison images of the first set
                degradation=self.plan.degradation,
            )
            for i, (name, pairs) in enumerate(self.data.val_sets.items())
        }
        result = {**next(iter(sets.values())), "sets": sets}
        assert self.log is not None  # only the writer evaluates
        record = {
            "step": self.step_count,
            "eval": True,
            **{f"val/{k}": v for k, v in result["student"].items()},
        }
        if len(sets) > 1:
            for name, one in sets.items():
                record.update({f"val/{name}/{k}": v for k, v in one["student"].items()})
        self.log.log(record)
        self.emit(Evaluated(self.step_count, result))
        return result

    def checkpoint(self) -> None:
        """Writes the resumable state (atomically); only rank 0 writes."""
        self.last_checkpoint = self.step_count
        if not self.writer:
            return
        state = {
            "step": self.step_count,
            "student": self.run.student.state_dict(),
            "losses": self.run.losses.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": rng_state(),
        }
        save_state(state, self.out / STATE)
        self.emit(CheckpointWritten(self.step_count, self.out / STATE))

    def finish(self) -> dict:
        """Final evaluation, weights, summary.json and the last checkpoint; returns the summary."""
        if not self.writer:
            barrier(self.world)
            return json.loads((self.out / "summary.json").read_text())
        result = self.evaluate(images_dir=self.out / "images")
        cache = cache_report(self.caches)
        if cache:
            self.emit(
                Message(
                    f"teacher cache ({cache['mode']}, {cache['location']}): {cache['hits']} hits, "
                    f"{cache['misses']} misses, {cache['entries']} images, {cache['bytes'] / 2**20:.1f} MiB"
                )
            )
        total, waited = getattr(self, "step_seconds", 0.0), getattr(self, "data_seconds", 0.0)
        if total > 0:
            self.emit(
                Message(
                    f"data wait: {waited:.1f} s of {total:.1f} s of training steps ({100 * waited / total:.1f}%)"
                )
            )
        save_weights(self.eval_model(), self.out / WEIGHTS)
        assert self.log is not None  # the writer has the metrics log
        self.log.close()
        summary = run_summary(self, result)
        summary["teacher_cache"] = cache
        summary["data"] = {
            "cache": self.data.train_pairs.mode,
            "workers": self.data.workers(),
            "train_images": len(self.data.train_pairs),
            "data_seconds": waited,
            "step_seconds": total,
        }
        text = json.dumps(summary, indent=2) + "\n"
        atomic_write(self.out / "summary.json", lambda tmp: Path(tmp).write_text(text))
        self.checkpoint()
        self.emit(RunEnded(summary))
        barrier(self.world)
        return summary


def train(
    plan: RunPlan, *, callbacks: Sequence[Callback] = (), resume: bool = False, overwrite: bool = False
) -> dict:
    """Trains (and distils, with a teacher) as the plan says; writes the run folder; returns the summary."""
    return Trainer(plan, callbacks=callbacks, resume=resume, overwrite=overwrite).run_all()
