"""Entry point of the ``fwdadapt`` plugin: registers the ``forward-adaptation`` loss."""

from __future__ import annotations

import kdcore
from kdcore_fwdadapt.forward_adaptation import ForwardAdaptationLoss


@kdcore.hookimpl
def kdcore_register_losses(register) -> None:
    """Registers ``forward-adaptation``."""
    register(
        "forward-adaptation",
        ForwardAdaptationLoss,
        summary="mean distance between the student's weights and the teacher's of the same name and shape",
    )
