"""Distillation that silently does nothing, made loud.

A teacher-using loss term that is exactly zero, or a tapped feature map that is all zero, teaches
the student nothing, and the run still looks healthy: the total loss goes down through the other
terms. A typical cause is dying ReLUs (HDRNet's fusion layer at a high learning rate), after
which a feature-matching term compares zeros with whatever the teacher gives. The training loop
feeds :class:`SilentDistillationWatch` every logged step and emits the warnings it returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch


@dataclass
class _Streak:
    first: int
    last: int
    length: int = 1


class SilentDistillationWatch:
    """Counts, per loss term and per feature map, the logged steps in a row at exactly zero.

    ``patience``: how many consecutive logged steps at zero make a warning. ``losses``: the names
    of the loss terms to watch (the teacher-using ones); ``None`` watches every term it is given.
    Each name is warned about once per run. A streak ends at a non-zero value, and also at a
    logged step where the name is not reported.
    """

    def __init__(self, patience: int = 3, losses: Iterable[str] | None = None):
        if patience < 1:
            raise ValueError(f"patience must be at least 1 (got {patience})")
        self.patience = patience
        self.losses = None if losses is None else set(losses)
        self._streaks: dict[tuple[str, str], _Streak] = {}
        self._warned: set[tuple[str, str]] = set()

    def observe(
        self,
        step: int,
        losses: Mapping[str, float] | None = None,
        features: Mapping[str, torch.Tensor] | None = None,
    ) -> list[str]:
        """Takes one logged step's loss terms (name -> value) and feature maps (path -> tensor,
        the path as the warning should name it, e.g. ``student lowres.fusion``); returns the
        warnings to emit now, each naming its loss or path."""
        losses = {n: v for n, v in (losses or {}).items() if self.losses is None or n in self.losses}
        features = features or {}
        for name, value in losses.items():
            self._seen(("loss", name), float(value) == 0.0, step)
        for path, tensor in features.items():
            self._seen(("feature", path), not bool(torch.any(tensor.detach())), step)
        seen = {("loss", n) for n in losses} | {("feature", p) for p in features}
        for key in [k for k in self._streaks if k not in seen]:
            del self._streaks[key]  # not reported this step: the run of zeros is broken
        warnings = []
        for key, streak in self._streaks.items():
            if streak.length >= self.patience and key not in self._warned:
                self._warned.add(key)
                warnings.append(self._message(key, streak))
        return warnings

    def _seen(self, key: tuple[str, str], is_zero: bool, step: int) -> None:
        if not is_zero:
            self._streaks.pop(key, None)
        elif key in self._streaks:
            streak = self._streaks[key]
            streak.last, streak.length = step, streak.length + 1
        else:
            self._streaks[key] = _Streak(first=step, last=step)

    @staticmethod
    def _message(key: tuple[str, str], streak: _Streak) -> str:
        kind, name = key
        span = f"{streak.length} logged steps in a row (steps {streak.first}-{streak.last})"
        if kind == "loss":
            return (
                f"loss {name!r} has been exactly 0 for {span}: it teaches the student nothing; "
                "check the feature maps it compares (dead units?) or lower train.lr"
            )
        return (
            f"feature map {name!r} has been all zero for {span}: its units have died (e.g. ReLUs "
            "after a too high train.lr), so nothing is distilled through it; lower train.lr or "
            "compare another layer"
        )
