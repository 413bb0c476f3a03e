"""Questions about losses that several parts of the core ask."""

from __future__ import annotations

from kdcore.interfaces import Loss


def uses_teacher(loss: Loss) -> bool:
    """Whether a loss term needs the teacher (its image, its features or its weights)."""
    return bool(loss.uses_teacher() or loss.requires_teacher() or loss.teacher_features())
