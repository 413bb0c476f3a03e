"""What each training step eats: patch datasets of the plan's sources, loaders, step inputs.

Sample i of a dataset is a pure function of (seed, i), so any rank, any resume point and any
number of workers see exactly the data an uninterrupted single-process run sees.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from kdcore.data import ImagePair, PatchDataset
from kdcore.data.patches import MIN_PATCH_SIZE
from kdcore.data.store import PairStore, default_pixel_dir
from kdcore.engine.build import BuiltRun
from kdcore.errors import SpecError
from kdcore.interfaces import ModelOutput, Task
from kdcore.metrics import SSIM_KERNEL
from kdcore.plan import RunPlan
from kdcore.spec import unlabeled_rows

MIN_PATCH = MIN_PATCH_SIZE


class StepSampler(Sampler[int]):
    """The sample indices of steps ``start``..``steps-1``, this rank's share of each global batch."""

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


def batch_split(plan: RunPlan, world: int) -> tuple[int, int]:
    """(labelled, unlabelled) samples per global batch; each must divide among the ranks."""
    bs = plan.data.batch_size
    n_u = unlabeled_rows(plan.data)
    n_l = bs - n_u
    if n_l % world or n_u % world:
        raise SpecError(
            f"data.batch_size: {bs} (labelled {n_l}, unlabelled {n_u}) does not divide among {world} "
            "processes; choose a batch size that does"
        )
    return n_l, n_u


def check_val_sizes(plan: RunPlan, pairs: list[ImagePair], name: str | None = None) -> None:
    """Every validation image is large enough for SSIM once the metric's border is cropped.

    scikit-image's SSIM with a Gaussian window (sigma 1.5) uses an 11×11 window, which must fit
    in the image; for sr the metric first crops ``scale`` pixels at every border.
    """
    source = plan.val_sets[name] if name is not None else plan.val_data
    scale = plan.task.scale
    border = scale if plan.task.kind == "sr" else 0
    min_input = -(-(SSIM_KERNEL + 2 * border) // scale)
    for pair in pairs:
        h, w = pair.input.shape[-2:]
        side_h, side_w = h * scale - 2 * border, w * scale - 2 * border
        if min(side_h, side_w) < SSIM_KERNEL:
            sizes = f"{min_input * scale}×{min_input * scale}" + (
                f" (inputs {min_input}×{min_input})" if scale > 1 else ""
            )
            raise SpecError(
                f"{source.where}: image {pair.name!r} of {source.to_spec()} ({w * scale}×{h * scale}) is too small "
                f"for SSIM: {max(side_w, 0)}×{max(side_h, 0)} after cropping the {border}-pixel border, and SSIM "
                f"needs {SSIM_KERNEL}×{SSIM_KERNEL}; use validation images of at least {sizes}"
            )


def _check_unlabeled_sizes(plan: RunPlan, pairs: PairStore) -> None:
    """Unlabelled images are inputs at their own resolution: each must hold an input patch."""
    patch, scale = plan.data.patch_size, plan.task.scale
    side = patch // scale
    for index, name in enumerate(pairs.names):
        h, w = pairs.input_size(index)
        if min(h, w) < side:
            largest = min(h, w) * scale
            fix = f"a smaller data.patch_size (at most {largest}) or " if largest >= MIN_PATCH else ""
            raise SpecError(
                f"data.unlabeled: image {name!r} ({w}×{h}) is smaller than the input patch {side}×{side} "
                f"(data.patch_size {patch} at ×{scale}; unlabelled images are inputs at their own resolution); "
                f"use {fix}unlabelled images of at least {side}×{side}"
            )


def load_unlabeled(plan: RunPlan) -> list[ImagePair]:
    """The unlabelled images of every ``data.unlabeled`` source, as inputs without targets."""
    return [pair for source in plan.unlabeled for pair in source.load(plan.task)]


def training_stores(plan: RunPlan) -> tuple[PairStore, PairStore]:
    """The training pairs and the unlabelled inputs, held as ``data.cache`` says (decoded once)."""
    train = PairStore.build(plan.train_data.records(plan.task), plan.data.cache)
    records = [record for source in plan.unlabeled for record in source.records(plan.task)]
    unlabeled = PairStore.build(records, plan.data.cache) if records else PairStore.from_pairs([])
    return train, unlabeled


@dataclass
class TrainingData:
    """The run's images, loaded once: training pairs, validation pairs, unlabelled inputs."""

    plan: RunPlan
    train_pairs: PairStore
    val_sets: dict[str, list[ImagePair]]  # validation set name -> its images, in the plan's order
    unlabeled_pairs: PairStore = field(default_factory=lambda: PairStore.from_pairs([]))

    @property
    def val_pairs(self) -> list[ImagePair]:
        """The first validation set's images (latency probe, top-level figures)."""
        return next(iter(self.val_sets.values()))

    @classmethod
    def load(cls, plan: RunPlan) -> TrainingData:
        train, unlabeled = training_stores(plan)
        val = {name: source.load(plan.task) for name, source in plan.val_sets.items()}
        for name, pairs in val.items():
            if not plan.teachers and any(p.target is None for p in pairs):
                raise SpecError(
                    f"{plan.val_sets[name].where}: these images have no targets and the spec has no teacher "
                    "to measure against"
                )
        return cls(plan, train, val, unlabeled)

    def describe(self) -> str:
        """Where the training images are held (for the run log)."""
        store = self.train_pairs
        place = "in memory" if store.mode == "memory" else f"on disk ({default_pixel_dir()}), read per patch"
        return f"training data: {len(store)} images, held {place}; {self.workers()} loader workers"

    def check(self, world: int) -> None:
        """What training would refuse, checked before anything is written: the batch split,
        images against the patch size, validation images against SSIM's window."""
        self.datasets(world)
        for name, pairs in self.val_sets.items():
            check_val_sizes(self.plan, pairs, name)

    def datasets(self, world: int) -> list[PatchDataset]:
        """The labelled patch dataset, and the unlabelled one when the batch has unlabelled rows."""
        plan, steps = self.plan, self.plan.train.steps
        n_l, n_u = batch_split(plan, world)
        out = [
            PatchDataset(
                self.train_pairs,
                plan.task,
                plan.data.patch_size,
                length=steps * n_l,
                seed=plan.train.seed,
                augment=plan.data.augment,
                where="data.train",
            )
        ]
        if n_u:
            _check_unlabeled_sizes(plan, self.unlabeled_pairs)
            out.append(
                PatchDataset(
                    self.unlabeled_pairs,
                    Task(kind="enhance"),
                    plan.data.patch_size // plan.task.scale,
                    length=steps * n_u,
                    seed=plan.train.seed + 1,
                    augment=plan.data.augment,
                    where="data.unlabeled",
                )
            )
        return out

    def workers(self) -> int:
        """``data.workers``, or when absent: none for data held in memory (a patch is a slice), else
        up to two processes, one core left to training."""
        if self.plan.data.workers is not None:
            return self.plan.data.workers
        if self.train_pairs.mode == "memory" and self.unlabeled_pairs.mode == "memory":
            return 0
        return max(1, min(2, (os.cpu_count() or 1) - 1))

    def loaders(self, start: int, rank: int, world: int, pin: bool) -> list[DataLoader]:
        n_l, n_u = batch_split(self.plan, world)
        return [
            DataLoader(
                dataset,
                batch_size=size // world,
                sampler=StepSampler(start, self.plan.train.steps, size, rank, world),
                num_workers=self.workers(),
                worker_init_fn=_worker_init,
                pin_memory=pin,
            )
            for dataset, size in zip(
                self.datasets(world), (n_l, n_u), strict=False
            )  # no unlabelled one when n_u == 0
        ]


def teacher_caches(plan: RunPlan, run: BuiltRun, device: torch.device, data: TrainingData):
    """Per dataset, a cache of the teacher's whole-image outputs (``train.teacher_cache``), or None."""
    if plan.train.teacher_cache == "off" or not run.run_teacher or any(run.teacher_taps):
        return None
    from kdcore.engine.teacher_cache import TeacherCache, teacher_key

    description = {
        "teachers": [
            {"name": c.name, "params": c.params.model_dump(mode="json"), "weight": c.weight}
            for c in plan.teachers
        ],
        "task": plan.task.model_dump(),
    }
    key = teacher_key(run.teachers, description)

    def image(x):
        return run.teacher_forward(x.to(device)).image

    return [
        TeacherCache(plan.train.teacher_cache, image, pairs, plan.task.scale, key) if pairs else None
        for pairs in (data.train_pairs, data.unlabeled_pairs)
    ]


def cache_report(caches) -> dict | None:
    """Hits, misses, location and size of the run's teacher caches (None without a cache)."""
    used = [c for c in caches or [] if c is not None]
    if not used:
        return None
    stats = [c.stats() for c in used]
    return {
        "mode": used[0].mode,
        "location": "memory" if used[0].mode == "memory" else str(used[0].folder),
        **{k: sum(st[k] for st in stats) for k in ("hits", "misses", "entries", "bytes")},
    }


def step_inputs(batches, run: BuiltRun, caches, scale: int, device: torch.device):
    """The step's input batch, teacher output and target (labelled rows first, then unlabelled).

    Rows without ground truth (unlabelled data, an ``enhance`` folder without targets) take the
    teacher's output as their target: that is how losses that compare with the target learn
    from the teacher there.
    """
    xs = [b["input"].to(device, non_blocking=True) for b in batches]
    x = torch.cat(xs) if len(xs) > 1 else xs[0]
    t_out = None
    if caches is not None:
        parts = [
            cache.batch(b["image"], b["crop"], b["aug"], b["input"].shape[-1] * scale)
            for cache, b in zip(caches, batches, strict=False)
        ]  # one batch without unlabelled rows
        t_out = ModelOutput(image=torch.cat(parts).to(device))
    elif run.run_teacher:
        t_out = run.teacher_forward(x)
    labelled = batches[0]
    if "target" in labelled:
        target = labelled["target"].to(device, non_blocking=True)
        if len(batches) > 1:
            assert t_out is not None  # unlabelled rows come with a teacher (the plan checks it)
            target = torch.cat([target, t_out.image[len(target) :]])
    else:
        assert t_out is not None  # rows without targets come with a teacher (the plan checks it)
        target = t_out.image
    return x, t_out, target
