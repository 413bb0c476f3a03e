"""HDRNet (Gharbi et al. 2017, deep bilateral learning) as a kdcore student and teacher."""

from __future__ import annotations

from kdcore_hdrnet.model import HDRNet, HDRNetTeacher

__all__ = ["HDRNet", "HDRNetTeacher"]
