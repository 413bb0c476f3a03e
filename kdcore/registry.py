"""Name -> component lookup: aliases, collisions between plugins, "did you mean"."""

from __future__ import annotations

import difflib
import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any

import pydantic

from kdcore.errors import ComponentError, PluginError
from kdcore.interfaces import COMPONENT_KINDS, KIND_TABLE

NAME_PATTERN = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")

PLURAL = {k: v.plural for k, v in KIND_TABLE.items()}
SINGULAR = {v: k for k, v in PLURAL.items()}


@dataclass(frozen=True)
class Registration:
    """One component as a plugin registered it."""

    kind: str
    name: str
    cls: type[
        Any
    ]  # a subclass of the kind's base (Student, Teacher, Loss, Adapter); their constructors differ
    plugin: str  # entry-point name ("kdcore" for the core's own components)
    distribution: str
    version: str
    aliases: tuple[str, ...] = ()
    summary: str = ""

    @property
    def qualified_name(self) -> str:
        return f"{self.plugin}:{self.name}"

    def params_schema(self) -> dict:
        return self.cls.Params.model_json_schema()


def validate_registration(kind: str, name: str, cls: object, aliases: tuple[str, ...]) -> None:
    """Raises PluginError when a plugin registers something that cannot work."""
    base = COMPONENT_KINDS[kind]
    for n in (name, *aliases):
        if not isinstance(n, str) or not NAME_PATTERN.fullmatch(n):
            raise PluginError(
                f"invalid {kind} name {n!r}: names are lowercase letters, digits and single dashes"
            )
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise PluginError(f"{kind} {name!r}: {cls!r} is not a subclass of kdcore.{base.__name__}")
    params = getattr(cls, "Params", None)
    if not (isinstance(params, type) and issubclass(params, pydantic.BaseModel)):
        raise PluginError(f"{kind} {name!r}: {cls.__name__}.Params must be a pydantic model")


@dataclass
class Registry:
    """All registered components of every kind, indexed by name and alias."""

    entries: dict[str, list[Registration]] = field(default_factory=lambda: {k: [] for k in COMPONENT_KINDS})

    def add(self, reg: Registration) -> None:
        self.entries[reg.kind].append(reg)

    def _matches(self, kind: str, name: str) -> list[Registration]:
        plugin, sep, bare = name.partition(":")
        if not sep:
            plugin, bare = "", name
        found = [r for r in self.entries[kind] if bare == r.name or bare in r.aliases]
        if plugin:
            found = [r for r in found if r.plugin == plugin]
        return found

    def lookup(self, kind: str, name: str, *, where: str = "") -> Registration:
        """The one registration ``name`` refers to; ``plugin:name`` picks among duplicates.

        A teacher name is looked up among teachers first, then among students.
        """
        kinds = ("teacher", "student") if kind == "teacher" else (kind,)
        for k in kinds:
            found = self._matches(k, name)
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                providers = ", ".join(
                    f"{r.qualified_name} (from {r.distribution} {r.version})" for r in found
                )
                raise ComponentError(
                    f"{_at(where)}{kind} name {name!r} is provided by several plugins: "
                    f"{providers}; write one of them as PLUGIN:NAME"
                )
        raise ComponentError(self._unknown_message(kind, name, where))

    def _unknown_message(self, kind: str, name: str, where: str) -> str:
        kinds = ("teacher", "student") if kind == "teacher" else (kind,)
        known = sorted({n for k in kinds for r in self.entries[k] for n in (r.name, *r.aliases)})
        bare = name.partition(":")[2] or name
        close = difflib.get_close_matches(bare, known, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return (
            f"{_at(where)}unknown {kind} {name!r}{hint} "
            f"(`kdcore list {PLURAL[kind]}` shows the installed ones; "
            f"a plugin providing it may not be installed or may have failed to load: `kdcore plugins`)"
        )

    def list(self, kind: str, pattern: str = "*") -> list[Registration]:
        regs = [r for r in self.entries[kind] if fnmatch.fnmatchcase(r.name, pattern)]
        return sorted(regs, key=lambda r: (r.name, r.plugin))


def _at(where: str) -> str:
    return f"{where}: " if where else ""
