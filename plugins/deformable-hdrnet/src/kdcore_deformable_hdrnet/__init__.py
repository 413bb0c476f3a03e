"""kdcore plugin: HDRNet with modulated deformable local convolutions and deformable slicing."""

from __future__ import annotations

from kdcore_deformable_hdrnet.deform_conv import ModulatedDeformConv2d, deform_conv2d
from kdcore_deformable_hdrnet.model import DeformableHDRNet, DeformableHDRNetTeacher

__version__ = "0.1.0"

__all__ = [
    "DeformableHDRNet",
    "DeformableHDRNetTeacher",
    "ModulatedDeformConv2d",
    "__version__",
    "deform_conv2d",
]
