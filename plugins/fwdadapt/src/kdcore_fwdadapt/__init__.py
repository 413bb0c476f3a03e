"""kdcore plugin: the ``forward-adaptation`` loss."""

from __future__ import annotations

from kdcore_fwdadapt.forward_adaptation import (
    ForwardAdaptationLoss,
    ParameterMatch,
    match_parameters,
    parameter_distance,
)

__version__ = "0.1.0"

__all__ = [
    "ForwardAdaptationLoss",
    "ParameterMatch",
    "__version__",
    "match_parameters",
    "parameter_distance",
]
