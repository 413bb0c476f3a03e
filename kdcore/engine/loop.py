"""The training loop: supervised training or distillation, evaluation, checkpoints, resume."""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import timm.optim
import timm.scheduler
import timm.utils
import torch
from torch.utils.data import DataLoader, Sampler

from kdcore.data import PatchDataset, load_pairs
from kdcore.errors import SpecError, TrainingError
from kdcore.interfaces import ModelOutput
from kdcore.engine.build import BuiltRun, build_run
from kdcore.engine.checkpoints import STATE, WEIGHTS, atomic_write, load_state, save_state, save_weights
from kdcore.engine.evaluate import baseline_name, count_params, evaluate, measure_latency
from kdcore.registry import Registry
from kdcore.spec import RunSpec

Callback = Callable[..., None]

#: keys that do not change what a run computes: a resumed run may change them
RESUME_FREE_KEYS = {("train", "eval_every"), ("train", "checkpoint_every"), ("train", "log_every"),
                    ("data", "workers"), ("train", "device"), ("plugins",)}


def _quiet(event: str, **data: Any) -> None:
    pass


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise SpecError("train.device: 'cuda' was asked for but no CUDA device is available; use 'auto' or 'cpu'")
        return torch.device("cuda")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _StepRange(Sampler[int]):
    """Sample indices start..stop-1 in order: sample i is a pure function of (seed, i)."""

    def __init__(self, start: int, stop: int):
        self.start, self.stop = start, stop

    def __iter__(self):
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


def _worker_init(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def make_optimizer(spec: RunSpec, params: torch.nn.Module):
    t = spec.train
    try:
        return timm.optim.create_optimizer_v2(params, opt=t.optimizer, lr=t.lr, weight_decay=t.weight_decay)
    except (AssertionError, ValueError) as exc:
        raise SpecError(f"train.optimizer: {t.optimizer!r} is not a timm optimizer ({exc})") from None


def make_scheduler(spec: RunSpec, optimizer):
    t = spec.train
    warm = {"warmup_t": t.warmup_steps, "warmup_lr_init": t.lr * 0.01, "t_in_epochs": False}
    if t.schedule == "cosine":
        return timm.scheduler.CosineLRScheduler(optimizer, t_initial=t.steps, lr_min=t.lr * 0.01, **warm)
    return timm.scheduler.StepLRScheduler(optimizer, decay_t=t.steps + 1, decay_rate=1.0, **warm)


def _diff_keys(a: Any, b: Any, path: tuple = ()) -> list[str]:
    if path in RESUME_FREE_KEYS:
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), path + (k,))
        return out
    return [] if a == b else [".".join(map(str, path))]


def prepare_output(spec: RunSpec, resolved: dict, *, resume: bool, overwrite: bool) -> Path:
    """Checks the run folder may be used; returns it. Raises before anything is written."""
    out = Path(spec.output)
    if out.exists() and not out.is_dir():
        raise SpecError(f"output: {out} exists and is not a folder")
    old_spec_file = out / "spec.json"
    if resume:
        if not (out / STATE).exists():
            raise SpecError(f"--resume: {out} holds no checkpoint to resume from; run without --resume")
        old = json.loads(old_spec_file.read_text())
        differing = _diff_keys(old, resolved)
        if differing:
            raise SpecError(
                "--resume: the spec differs from the interrupted run's in "
                + ", ".join(differing[:8]) + "; restore those keys or start a new output folder"
            )
        return out
    if out.exists() and any(out.iterdir()):
        if not old_spec_file.exists():
            raise SpecError(f"output: {out} is not empty and holds no kdcore run; choose another folder")
        if overwrite:
            shutil.rmtree(out)
        else:
            try:
                same = not _diff_keys(json.loads(old_spec_file.read_text()), resolved)
            except (OSError, ValueError):
                same = False
            if not same:
                raise SpecError(
                    f"output: {out} already holds a different run; pass --overwrite to replace it, "
                    "--resume to continue it, or choose another folder"
                )
            shutil.rmtree(out)
    return out


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "python": list(random.getstate()[1]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _Logger:
    """metrics.jsonl (one object per line, each with "step") and TensorBoard scalars."""

    def __init__(self, out: Path, keep_until: int | None):
        self.path = out / "metrics.jsonl"
        if keep_until is not None and self.path.exists():
            # drop what an interrupted run logged after its last checkpoint
            lines = [l for l in self.path.read_text().splitlines() if l.strip()]
            kept = [l for l in lines if json.loads(l).get("step", 0) <= keep_until]
            self.path.write_text("".join(l + "\n" for l in kept))
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


def train(
    spec: RunSpec,
    registry: Registry,
    *,
    resolved: dict,
    resume: bool = False,
    overwrite: bool = False,
    callback: Callback | None = None,
) -> dict:
    """Trains (and distils, with a teacher) as the spec says; writes the run folder; returns the summary."""
    callback = callback or _quiet
    t_start = time.perf_counter()
    device = pick_device(spec.train.device)
    seed_everything(spec.train.seed)
    task, t = spec.task, spec.train

    train_pairs = load_pairs(spec.data.train, task, where="data.train")
    val_pairs = load_pairs(spec.data.val, task, where="data.val")
    if not spec.teachers and any(p.target is None for p in val_pairs):
        raise SpecError("data.val: these images have no targets and the spec has no teacher to measure against")
    dataset = PatchDataset(train_pairs, task, spec.data.patch_size, length=t.steps * spec.data.batch_size,
                           seed=t.seed, augment=spec.data.augment, where="data.train")
    run = build_run(spec, registry, device, for_run=True)
    out = prepare_output(spec, resolved, resume=resume, overwrite=overwrite)

    trainable = torch.nn.ModuleList([run.student, run.losses])
    optimizer = make_optimizer(spec, trainable)
    scheduler = make_scheduler(spec, optimizer)
    ema = timm.utils.ModelEmaV3(run.student, decay=t.ema) if t.ema else None

    start = 0
    if resume:
        state = load_state(out / STATE)
        run.student.load_state_dict(state["student"])
        run.losses.load_state_dict(state["losses"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        _set_rng_state(state["rng"])
        start = int(state["step"])
        callback("message", text=f"resuming {out} at step {start}")
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "spec.json", lambda tmp: Path(tmp).write_text(json.dumps(resolved, indent=2) + "\n"))
    logger = _Logger(out, keep_until=start if resume else None)

    def checkpoint(step: int) -> None:
        save_state(
            {
                "step": step,
                "student": run.student.state_dict(),
                "losses": run.losses.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "rng": _rng_state(),
            },
            out / STATE,
        )

    def eval_model() -> torch.nn.Module:
        return ema.module if ema is not None else run.student

    teacher_fn = run.teacher_forward if run.teachers else None
    cache = None
    if t.teacher_cache != "off" and run.run_teacher and not any(run.teacher_taps):
        from kdcore.engine.teacher_cache import TeacherCache, teacher_key

        description = {"teachers": [ts.model_dump(mode="json", exclude={"checkpoint"}) for ts in spec.teachers],
                       "task": task.model_dump()}
        cache = TeacherCache(
            t.teacher_cache, lambda x: run.teacher_forward(x.to(device)).image, train_pairs, task.scale,
            teacher_key(run.teachers, description),
        )
    amp = t.amp == "bf16" or (t.amp == "auto" and device.type == "cuda")
    bs = spec.data.batch_size
    loader = DataLoader(
        dataset,
        batch_size=bs,
        sampler=_StepRange(start * bs, t.steps * bs),
        num_workers=spec.data.workers,
        worker_init_fn=_worker_init,
        pin_memory=device.type == "cuda",
    )
    callback("start", step=start, total=t.steps, output=str(out))
    run.student.train()
    step, last_ckpt = start, start
    window_t0, window_steps = time.perf_counter(), 0
    try:
        for batch in loader:
            step += 1
            x = batch["input"].to(device, non_blocking=True)
            target = batch["target"].to(device, non_blocking=True) if "target" in batch else None
            if cache is not None:
                t_out = ModelOutput(image=cache.batch(batch["image"], batch["crop"], batch["aug"],
                                                      spec.data.patch_size).to(device))
            else:
                t_out = run.teacher_forward(x) if run.run_teacher else None
            if target is None:
                target = t_out.image
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                s_out = run.student_forward(x)
                terms = [loss(s_out, t_out, target).float() for loss in run.losses]
            total = sum(w * v for w, v in zip(run.loss_weights, terms))
            if not torch.isfinite(total):
                bad = next((n for n, v in zip(run.loss_names, terms) if not torch.isfinite(v)), "total")
                raise TrainingError(
                    f"step {step}: loss {bad!r} is not finite; the last checkpoint (step {last_ckpt}) is "
                    "intact; lower train.lr or set train.grad_clip, then --resume or start again"
                )
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            if t.grad_clip:
                torch.nn.utils.clip_grad_norm_(trainable.parameters(), t.grad_clip)
            optimizer.step()
            scheduler.step_update(num_updates=step)
            if ema is not None:
                ema.update(run.student, step=step)
            window_steps += 1
            values = {n: float(v) for n, v in zip(run.loss_names, terms)}
            lr = optimizer.param_groups[0]["lr"]
            callback("step", step=step, total=t.steps, loss=float(total), terms=values, lr=lr)
            if step % t.log_every == 0 or step == t.steps:
                elapsed = time.perf_counter() - window_t0
                logger.log({"step": step, "loss": float(total), **{f"loss/{k}": v for k, v in values.items()},
                            "lr": lr, "steps_per_second": window_steps / max(elapsed, 1e-9)})
                window_t0, window_steps = time.perf_counter(), 0
            if t.eval_every and step % t.eval_every == 0 and step != t.steps:
                result = evaluate(eval_model(), val_pairs, task, device, teacher_forward=teacher_fn)
                logger.log({"step": step, "eval": True, **{f"val/{k}": v for k, v in result["student"].items()}})
                callback("eval", step=step, metrics=result)
            if t.checkpoint_every and step % t.checkpoint_every == 0 and step != t.steps:
                checkpoint(step)
                last_ckpt = step
    finally:
        if run.student_taps:
            run.student_taps.collect()
    # the end: final evaluation, weights, checkpoint, summary
    final = eval_model()
    result = evaluate(final, val_pairs, task, device, teacher_forward=teacher_fn, images_dir=out / "images")
    logger.log({"step": step, "eval": True, **{f"val/{k}": v for k, v in result["student"].items()}})
    callback("eval", step=step, metrics=result)
    save_weights(final, out / WEIGHTS)
    checkpoint(step)
    logger.close()

    probe = val_pairs[0].input.unsqueeze(0).to(device)
    summary = {
        "student": {
            "name": spec.student.name,
            "params": count_params(run.student),
            **result["student"],
            "latency_ms": measure_latency(final, probe),
        },
        "teacher": None,
        "baseline": {"name": baseline_name(task), **result["baseline"]},
        "steps": step,
        "output": str(out),
        "seconds": time.perf_counter() - t_start,
        "task": task.model_dump(),
        "measured_against": result["against"],
        "val_images": result["images"],
        "latency_input": list(probe.shape[-2:]),
        "device": str(device),
        "ema": t.ema is not None,
    }
    if run.teachers:
        names = [ts.name for ts in spec.teachers]
        summary["teacher"] = {
            "name": names[0] if len(names) == 1 else names,
            "params": sum(count_params(m) for m in run.teachers),
            **(result["teacher"] or {"psnr": None, "ssim": None}),
            "latency_ms": measure_latency(_Ensemble(run), probe),
        }
    atomic_write(out / "summary.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2) + "\n"))
    callback("end", summary=summary)
    return summary


class _Ensemble(torch.nn.Module):
    def __init__(self, run: BuiltRun):
        super().__init__()
        self.run = run

    def forward(self, x):
        return self.run.teacher_forward(x).image
