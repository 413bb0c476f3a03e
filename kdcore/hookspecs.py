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


def _hooks() -> dict[str, str]:
    from kdcore.interfaces import KIND_TABLE

    return {k: v.hook for k, v in KIND_TABLE.items()}


HOOKS: dict[str, str] = _hooks()
"""kind -> hook name (from :data:`kdcore.interfaces.KIND_TABLE`)."""
