"""The plugin module registers both components."""

from __future__ import annotations

import kdcore

from kdcore_hdrnet import HDRNet, HDRNetTeacher, plugin


def _record(hook) -> list[tuple]:
    calls: list[tuple] = []
    hook(lambda name, cls, **kw: calls.append((name, cls, kw)))
    return calls


def test_registers_student_and_teacher() -> None:
    students = _record(plugin.kdcore_register_students)
    teachers = _record(plugin.kdcore_register_teachers)
    assert [(n, c) for n, c, _ in students] == [("hdrnet", HDRNet)]
    assert [(n, c) for n, c, _ in teachers] == [("hdrnet", HDRNetTeacher)]
    assert students[0][2]["summary"] and teachers[0][2]["summary"]
    assert issubclass(HDRNet, kdcore.Student) and issubclass(HDRNetTeacher, kdcore.Teacher)


def test_hooks_are_marked_for_pluggy() -> None:
    for hook in (plugin.kdcore_register_students, plugin.kdcore_register_teachers):
        assert hasattr(hook, "kdcore_impl")
