"""kdcore plugin hooks: registers ``hdrnet`` as a student and as a teacher."""

from __future__ import annotations

from collections.abc import Callable

import kdcore
from kdcore_hdrnet.model import HDRNet, HDRNetTeacher

_SUMMARY = "HDRNet bilateral-grid network (Gharbi et al. 2017); sr via detail gains on the bicubic upscale"


@kdcore.hookimpl
def kdcore_register_students(register: Callable[..., None]) -> None:
    """Registers the HDRNet student."""
    register("hdrnet", HDRNet, summary=_SUMMARY)


@kdcore.hookimpl
def kdcore_register_teachers(register: Callable[..., None]) -> None:
    """Registers the HDRNet teacher (needs a trained checkpoint)."""
    register("hdrnet", HDRNetTeacher, summary=_SUMMARY + " (trained checkpoint)")
