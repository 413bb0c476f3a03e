"""kdcore-spandrel: pretrained SR checkpoints as teachers and the well-known SR architectures as students."""

from kdcore_spandrel.architectures import ARCHITECTURES
from kdcore_spandrel.edsr import EDSR, EDSRArch
from kdcore_spandrel.loading import REGISTRY, load_descriptor, read_state_dict
from kdcore_spandrel.teacher import SpandrelTeacher

__all__ = [
    "ARCHITECTURES",
    "EDSR",
    "REGISTRY",
    "EDSRArch",
    "SpandrelTeacher",
    "load_descriptor",
    "read_state_dict",
]
