"""Typed events the Trainer emits; callbacks (progress bars, notebooks, benchmarks) receive them.

The engine never prints: everything a user sees during a run comes from these events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunStarted:
    """Training is about to start (or resume) at ``step`` of ``total``."""

    step: int
    total: int
    output: Path
    resumed: bool = False


@dataclass(frozen=True)
class StepEnded:
    """One optimizer step finished. ``seconds`` is its wall time, ``data_seconds`` the part of it
    spent waiting for the data loader."""

    step: int
    total: int
    loss: float
    terms: dict[str, float]
    lr: float
    seconds: float
    data_seconds: float


@dataclass(frozen=True)
class Evaluated:
    """An evaluation on the validation images: ``metrics`` has student / teacher / baseline."""

    step: int
    metrics: dict[str, Any]


@dataclass(frozen=True)
class CheckpointWritten:
    step: int
    path: Path


@dataclass(frozen=True)
class Message:
    """Something worth telling the user (resuming, a warning about the run)."""

    text: str
    level: str = "info"  # "info" or "warning"


@dataclass(frozen=True)
class RunEnded:
    summary: dict[str, Any] = field(default_factory=dict)


Event = RunStarted | StepEnded | Evaluated | CheckpointWritten | Message | RunEnded
Callback = Callable[[Event], None]

__all__ = [
    "Callback",
    "CheckpointWritten",
    "Evaluated",
    "Event",
    "Message",
    "RunEnded",
    "RunStarted",
    "StepEnded",
]
