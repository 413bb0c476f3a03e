"""The plugin registers student and teacher ``deformable-hdrnet`` and both pass conformance."""

from __future__ import annotations

import kdcore
import pytest
from kdcore.testing import check_component

from kdcore_deformable_hdrnet import plugin
from kdcore_deformable_hdrnet.model import DeformableHDRNet, DeformableHDRNetTeacher


def test_hooks_register_both() -> None:
    registered: dict[str, tuple[type, dict]] = {}

    def register(name: str, cls: type, **kwargs: object) -> None:
        registered[name] = (cls, kwargs)

    plugin.kdcore_register_students(register)
    assert registered["deformable-hdrnet"][0] is DeformableHDRNet
    assert registered["deformable-hdrnet"][1]["summary"]
    plugin.kdcore_register_teachers(register)
    assert registered["deformable-hdrnet"][0] is DeformableHDRNetTeacher


def test_entry_point_is_loaded() -> None:
    assert "deformable-hdrnet" in kdcore.list_components("students", "deformable-*")
    assert "deformable-hdrnet" in kdcore.list_components("teachers", "*hdrnet")
    student = kdcore.create("student", "deformable-hdrnet", {"slice_offset_mode": "pixel"})
    assert isinstance(student, DeformableHDRNet)
    teacher = kdcore.create("teacher", "deformable-hdrnet")
    assert isinstance(teacher, DeformableHDRNetTeacher)


def test_bad_params_are_a_kdcore_error() -> None:
    with pytest.raises(kdcore.KdcoreError, match="slice_lattice"):
        kdcore.create("student", "deformable-hdrnet", {"slice_lattice": 4})


@pytest.mark.parametrize("kind", ["student", "teacher"])
def test_conformance(kind: str) -> None:
    check_component(kind, "deformable-hdrnet", {"net_input_size": 64, "spatial_bins": 4})
