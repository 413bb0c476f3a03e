"""Entry point of the ``featmatch`` plugin: the ``feature-matching`` loss and its adapters."""

from __future__ import annotations

import kdcore
from kdcore_featmatch.adapters import Conv1x1Adapter, IdentityAdapter
from kdcore_featmatch.feature_matching import FeatureMatchingLoss


@kdcore.hookimpl
def kdcore_register_losses(register) -> None:
    """Registers ``feature-matching``."""
    register(
        "feature-matching",
        FeatureMatchingLoss,
        summary="L1 / L2 / spatial-affinity distance between adapted student and teacher feature maps",
    )


@kdcore.hookimpl
def kdcore_register_adapters(register) -> None:
    """Registers ``conv1x1`` and ``identity``."""
    register(
        "conv1x1",
        Conv1x1Adapter,
        summary="learned 1×1 convolution from the student's channels to the teacher's",
    )
    register(
        "identity",
        IdentityAdapter,
        summary="no change; the student's and the teacher's channel counts must be equal",
    )
