"""The training loop: supervised training or distillation, evaluation, checkpoints, resume."""

from __future__ import annotations

import json
import os
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
from kdcore.errors import Interrupted, SpecError, TrainingError
from kdcore.interfaces import ModelOutput, Task
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


class StepSampler(Sampler[int]):
    """The sample indices of steps ``start``..``steps-1``, this rank's share of each global batch.

    Sample i is a pure function of (seed, i), so any rank, any resume point and any number of
    workers see exactly the data an uninterrupted single-process run sees.
    """

    def __init__(self, start: int, steps: int, global_batch: int, rank: int = 0, world: int = 1):
        self.start, self.steps, self.global_batch = start, steps, global_batch
        self.share = global_batch // world
        self.offset = rank * self.share

    def __iter__(self):
        for step in range(self.start, self.steps):
            base = step * self.global_batch + self.offset
            yield from range(base, base + self.share)

    def __len__(self) -> int:
        return (self.steps - self.start) * self.share


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


class _Objective(torch.nn.Module):
    """Student and losses (with their adapters) as one module: what DDP wraps; the teacher stays out."""

    def __init__(self, run: BuiltRun):
        super().__init__()
        self.student = run.student
        self.losses = run.losses
        self._run = [run]  # not a submodule

    def forward(self, x, teacher, target) -> list[torch.Tensor]:
        out = self._run[0].student_forward(x, self.student)
        return [loss(out, teacher, target).float() for loss in self.losses]


def _distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """(rank, world size, device) — initialises torch.distributed when launched by torchrun."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return dist.get_rank(), dist.get_world_size(), device


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _batch_split(spec: RunSpec, world: int) -> tuple[int, int]:
    """(labelled, unlabelled) samples per global batch; each must divide among the ranks."""
    bs = spec.data.batch_size
    n_u = round(bs * spec.data.unlabeled_ratio) if spec.data.unlabeled else 0
    n_l = bs - n_u
    if n_l % world or n_u % world:
        raise SpecError(
            f"data.batch_size: {bs} (labelled {n_l}, unlabelled {n_u}) does not divide among {world} "
            "processes; choose a batch size that does"
        )
    return n_l, n_u


def _loader(dataset, start: int, steps: int, global_batch: int, rank: int, world: int, workers: int, pin: bool):
    return DataLoader(
        dataset,
        batch_size=global_batch // world,
        sampler=StepSampler(start, steps, global_batch, rank, world),
        num_workers=workers,
        worker_init_fn=_worker_init,
        pin_memory=pin,
    )


def train(
    spec: RunSpec,
    registry: Registry,
    *,
    resolved: dict,
    resume: bool = False,
    overwrite: bool = False,
    callback: Callback | None = None,
) -> dict:
    """Trains (and distils, with a teacher) as the spec says; writes the run folder; returns the summary.

    Launched by ``torchrun``, each process trains on its share of every global batch with
    DistributedDataParallel on the student and adapters; only rank 0 writes.
    """
    callback = callback or _quiet
    t_start = time.perf_counter()
    task, t = spec.task, spec.train
    device = pick_device(t.device)
    seed_everything(t.seed)

    train_pairs = load_pairs(spec.data.train, task, where="data.train")
    val_pairs = load_pairs(spec.data.val, task, where="data.val")
    if not spec.teachers and any(p.target is None for p in val_pairs):
        raise SpecError("data.val: these images have no targets and the spec has no teacher to measure against")
    rank, world, device = _distributed(device)
    n_l, n_u = _batch_split(spec, world)
    dataset = PatchDataset(train_pairs, task, spec.data.patch_size, length=t.steps * n_l,
                           seed=t.seed, augment=spec.data.augment, where="data.train")
    unlabeled, unlabeled_pairs = None, []
    if n_u:
        unlabeled_pairs = load_unlabeled(spec)
        unlabeled = PatchDataset(unlabeled_pairs, Task(kind="enhance"), spec.data.patch_size // task.scale,
                                 length=t.steps * n_u, seed=t.seed + 1, augment=spec.data.augment,
                                 where="data.unlabeled")
    run = build_run(spec, registry, device, for_run=True)
    writer = rank == 0
    out = Path(spec.output)
    if writer:
        out = prepare_output(spec, resolved, resume=resume, overwrite=overwrite)
    _barrier(world)

    objective = _Objective(run)
    optimizer = make_optimizer(spec, objective)
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
    elif writer:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "spec.json", lambda tmp: Path(tmp).write_text(json.dumps(resolved, indent=2) + "\n"))
    logger = _Logger(out, keep_until=start if resume else None) if writer else None
    for note in run.loss_notes if writer else []:
        callback("message", text=note)

    model = objective
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None)

    def checkpoint(step: int) -> None:
        if not writer:
            return
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
    caches = _teacher_caches(spec, run, device, train_pairs, unlabeled_pairs)
    amp = t.amp == "bf16" or (t.amp == "auto" and device.type == "cuda")
    pin = device.type == "cuda"
    loaders = [_loader(dataset, start, t.steps, n_l, rank, world, spec.data.workers, pin)]
    if unlabeled is not None:
        loaders.append(_loader(unlabeled, start, t.steps, n_u, rank, world, spec.data.workers, pin))
    callback("start", step=start, total=t.steps, output=str(out))
    run.student.train()
    step, last_ckpt = start, start
    window_t0, window_steps = time.perf_counter(), 0
    stop = _StopSignals()
    try:
        for batches in zip(*loaders):
            step += 1
            x, t_out, target = _step_inputs(batches, run, caches, spec, device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                terms = model(x, t_out, target)
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
                torch.nn.utils.clip_grad_norm_(objective.parameters(), t.grad_clip)
            optimizer.step()
            scheduler.step_update(num_updates=step)
            if ema is not None:
                ema.update(run.student, step=step)
            window_steps += 1
            values = {n: float(v) for n, v in zip(run.loss_names, terms)}
            lr = optimizer.param_groups[0]["lr"]
            if writer:
                callback("step", step=step, total=t.steps, loss=float(total), terms=values, lr=lr)
            if writer and (step % t.log_every == 0 or step == t.steps):
                elapsed = time.perf_counter() - window_t0
                logger.log({"step": step, "loss": float(total), **{f"loss/{k}": v for k, v in values.items()},
                            "lr": lr, "steps_per_second": window_steps / max(elapsed, 1e-9)})
                window_t0, window_steps = time.perf_counter(), 0
            if t.eval_every and step % t.eval_every == 0 and step != t.steps:
                if writer:
                    result = evaluate(eval_model(), val_pairs, task, device, teacher_forward=teacher_fn)
                    logger.log({"step": step, "eval": True, **{f"val/{k}": v for k, v in result["student"].items()}})
                    callback("eval", step=step, metrics=result)
                _barrier(world)
            if t.checkpoint_every and step % t.checkpoint_every == 0 and step != t.steps:
                checkpoint(step)
                last_ckpt = step
            if stop.received is not None and step != t.steps:
                checkpoint(step)
                raise Interrupted(
                    f"{stop.received} at step {step}: checkpoint written to {out / STATE}; "
                    "`kdcore run SPEC --resume` continues the run"
                )
    finally:
        stop.restore()
        if run.student_taps:
            run.student_taps.collect()
    if not writer:
        _barrier(world)
        return json.loads((out / "summary.json").read_text())
    summary = _finish(spec, run, val_pairs, device, out, eval_model(), step, t_start, logger, callback)
    checkpoint(step)
    _barrier(world)
    return summary


class _StopSignals:
    """SIGINT/SIGTERM during training: finish the current step, write a checkpoint, stop."""

    def __init__(self):
        import signal
        import threading

        self.received: str | None = None
        self._old = {}
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        import signal

        if self.received is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def restore(self) -> None:
        import signal

        for sig, old in self._old.items():
            signal.signal(sig, old)


def load_unlabeled(spec: RunSpec) -> list:
    """Unlabelled images as inputs at their own resolution ("zoom-in" for sr: high-resolution crops
    become extra low-resolution inputs; the teacher's output is their target)."""
    pairs = []
    for i, source in enumerate(spec.data.unlabeled):
        where = f"data.unlabeled[{i}]"
        src = source if source.startswith("builtin:") else Path(source)
        pairs += load_pairs(src, Task(kind="enhance"), where=where)
    return [p._replace(target=None) for p in pairs]


def _teacher_caches(spec: RunSpec, run: BuiltRun, device, train_pairs, unlabeled_pairs):
    t = spec.train
    if t.teacher_cache == "off" or not run.run_teacher or any(run.teacher_taps):
        return None
    from kdcore.engine.teacher_cache import TeacherCache, teacher_key

    description = {"teachers": [ts.model_dump(mode="json", exclude={"checkpoint"}) for ts in spec.teachers],
                   "task": spec.task.model_dump()}
    key = teacher_key(run.teachers, description)

    def image(x):
        return run.teacher_forward(x.to(device)).image

    return [TeacherCache(t.teacher_cache, image, pairs, spec.task.scale, key) if pairs else None
            for pairs in (train_pairs, unlabeled_pairs)]


def _step_inputs(batches, run: BuiltRun, caches, spec: RunSpec, device):
    """The step's input batch, teacher output and target (labelled rows first, then unlabelled)."""
    xs = [b["input"].to(device, non_blocking=True) for b in batches]
    x = torch.cat(xs) if len(xs) > 1 else xs[0]
    t_out = None
    if caches is not None:
        parts = [cache.batch(b["image"], b["crop"], b["aug"], b["input"].shape[-1] * spec.task.scale)
                 for cache, b in zip(caches, batches)]
        t_out = ModelOutput(image=torch.cat(parts).to(device))
    elif run.run_teacher:
        t_out = run.teacher_forward(x)
    labelled = batches[0]
    if "target" in labelled:
        target = labelled["target"].to(device, non_blocking=True)
        if len(batches) > 1:
            target = torch.cat([target, t_out.image[len(target):]])
    else:
        target = t_out.image
    return x, t_out, target


def _finish(spec: RunSpec, run: BuiltRun, val_pairs, device, out: Path, final, step: int, t_start: float,
            logger: _Logger, callback) -> dict:
    """The end of a run: final evaluation, weights, summary.json."""
    task = spec.task
    teacher_fn = run.teacher_forward if run.teachers else None
    result = evaluate(final, val_pairs, task, device, teacher_forward=teacher_fn, images_dir=out / "images")
    logger.log({"step": step, "eval": True, **{f"val/{k}": v for k, v in result["student"].items()}})
    callback("eval", step=step, metrics=result)
    save_weights(final, out / WEIGHTS)
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
        "ema": spec.train.ema is not None,
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
