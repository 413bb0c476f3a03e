"""The pluggy hook specifications: one hook per kind of component.

Each hook receives ``register(name, cls, *, aliases=(), summary=None)``.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("kdcore")
hookimpl = pluggy.HookimplMarker("kdcore")


@hookspec
def kdcore_register_students(register):
    """Register :class:`kdcore.Student` subclasses."""


@hookspec
def kdcore_register_teachers(register):
    """Register :class:`kdcore.Teacher` subclasses."""


@hookspec
def kdcore_register_losses(register):
    """Register :class:`kdcore.Loss` subclasses."""


@hookspec
def kdcore_register_adapters(register):
    """Register :class:`kdcore.Adapter` subclasses."""


HOOKS: dict[str, str] = {
    "student": "kdcore_register_students",
    "teacher": "kdcore_register_teachers",
    "loss": "kdcore_register_losses",
    "adapter": "kdcore_register_adapters",
}
