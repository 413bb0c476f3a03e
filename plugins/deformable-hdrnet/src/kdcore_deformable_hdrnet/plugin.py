"""The kdcore entry point: registers student and teacher ``deformable-hdrnet``."""

from __future__ import annotations

from collections.abc import Callable

import kdcore

SUMMARY = (
    "HDRNet with modulated deformable (DCNv2) local convolutions and a learned per-pixel "
    "offset of the bilateral-grid slicing; starts as exactly HDRNet"
)


@kdcore.hookimpl
def kdcore_register_students(register: Callable[..., None]) -> None:
    """Registers the trainable ``deformable-hdrnet`` student."""
    from kdcore_deformable_hdrnet.model import DeformableHDRNet

    register("deformable-hdrnet", DeformableHDRNet, summary=SUMMARY)


@kdcore.hookimpl
def kdcore_register_teachers(register: Callable[..., None]) -> None:
    """Registers ``deformable-hdrnet`` as a teacher (a trained checkpoint of it)."""
    from kdcore_deformable_hdrnet.model import DeformableHDRNetTeacher

    register("deformable-hdrnet", DeformableHDRNetTeacher, summary=SUMMARY + " (as a teacher)")
