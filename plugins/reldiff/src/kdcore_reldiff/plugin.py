"""Entry point of the ``reldiff`` plugin: registers the ``relative-difference`` loss."""

from __future__ import annotations

import kdcore
from kdcore_reldiff.relative_difference import RelativeDifferenceLoss


@kdcore.hookimpl
def kdcore_register_losses(register) -> None:
    """Registers ``relative-difference``."""
    register(
        "relative-difference",
        RelativeDifferenceLoss,
        summary="mean |S − T| / (|T| + eps) between student and teacher images or feature maps",
    )
