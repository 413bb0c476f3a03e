"""kdcore plugin hooks: the ``spandrel`` teacher and eight named SR architectures as students and teachers."""

from __future__ import annotations

from collections.abc import Callable

import kdcore
from kdcore_spandrel.architectures import ARCHITECTURES
from kdcore_spandrel.teacher import SpandrelTeacher


@kdcore.hookimpl
def kdcore_register_students(register: Callable[..., None]) -> None:
    """Registers edsr, rcan, swinir, esrgan, span, compact, safmn and omnisr as students."""
    for name, (student, _, summary) in ARCHITECTURES.items():
        register(name, student, summary=summary)


@kdcore.hookimpl
def kdcore_register_teachers(register: Callable[..., None]) -> None:
    """Registers ``spandrel`` (any detected checkpoint) and the named architectures as teachers."""
    register(
        "spandrel",
        SpandrelTeacher,
        summary="any pretrained SR checkpoint spandrel detects, plus EDSR (.pth, .pt, .ckpt, .safetensors)",
    )
    for name, (_, teacher, summary) in ARCHITECTURES.items():
        register(
            name, teacher, summary=summary + " (checkpoint: a run folder or a file of this architecture)"
        )
