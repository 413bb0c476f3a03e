"""Optimizer and learning-rate schedule from timm, as the spec's ``train`` section says."""

from __future__ import annotations

from typing import Any

import timm.optim
import timm.scheduler
import torch

from kdcore.errors import SpecError
from kdcore.spec import TrainSpec


def make_optimizer(train: TrainSpec, module: torch.nn.Module) -> torch.optim.Optimizer:
    try:
        return timm.optim.create_optimizer_v2(
            module, opt=train.optimizer, lr=train.lr, weight_decay=train.weight_decay
        )
    except (AssertionError, ValueError) as exc:
        raise SpecError(f"train.optimizer: {train.optimizer!r} is not a timm optimizer ({exc})") from None


def make_scheduler(train: TrainSpec, optimizer: torch.optim.Optimizer):
    warm: dict[str, Any] = {
        "warmup_t": train.warmup_steps,
        "warmup_lr_init": train.lr * 0.01,
        "t_in_epochs": False,
    }
    if train.schedule == "cosine":
        return timm.scheduler.CosineLRScheduler(
            optimizer, t_initial=train.steps, lr_min=train.lr * 0.01, **warm
        )
    return timm.scheduler.StepLRScheduler(optimizer, decay_t=train.steps + 1, decay_rate=1.0, **warm)
