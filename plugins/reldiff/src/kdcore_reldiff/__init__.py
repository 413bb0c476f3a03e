"""kdcore plugin: the ``relative-difference`` distillation loss."""

from __future__ import annotations

from kdcore_reldiff.relative_difference import (
    RelativeDifferenceLoss,
    channel_scale,
    relative_difference,
)

__version__ = "0.1.0"

__all__ = ["RelativeDifferenceLoss", "__version__", "channel_scale", "relative_difference"]
