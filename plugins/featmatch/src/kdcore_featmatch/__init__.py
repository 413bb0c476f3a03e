"""kdcore plugin: the ``feature-matching`` loss and the ``conv1x1`` / ``identity`` adapters."""

from __future__ import annotations

from kdcore_featmatch.adapters import Conv1x1Adapter, IdentityAdapter
from kdcore_featmatch.feature_matching import (
    AdapterChoice,
    FeatureMatchingLoss,
    FeaturePair,
    affinity_distance,
    feature_distance,
    match_resolution,
    resize_to,
    spatial_affinity,
)

__version__ = "0.1.0"

__all__ = [
    "AdapterChoice",
    "Conv1x1Adapter",
    "FeatureMatchingLoss",
    "FeaturePair",
    "IdentityAdapter",
    "__version__",
    "affinity_distance",
    "feature_distance",
    "match_resolution",
    "resize_to",
    "spatial_affinity",
]
