"""Plugin discovery and loading.

Each entry point of the group ``kdcore`` is loaded in isolation: a plugin that fails to import,
whose hook raises, or that registers something invalid is recorded as failed (a warning names
it) and everything it registered is withdrawn; every other plugin keeps working.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import threading
import warnings
from dataclasses import dataclass, field
from types import ModuleType

import pluggy

from kdcore import hookspecs
from kdcore.errors import PluginError
from kdcore.registry import Registration, Registry, validate_registration

GROUP = "kdcore"
CORE_PLUGIN = "kdcore"


class PluginLoadWarning(UserWarning):
    """A plugin failed to load and was skipped."""


@dataclass
class PluginRecord:
    """What ``kdcore plugins`` reports about one plugin."""

    name: str
    distribution: str
    version: str
    module: str
    status: str  # "loaded" | "disabled" | "failed"
    reason: str = ""
    components: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "module": self.module,
            "status": self.status,
            "reason": self.reason,
            "components": [{"kind": k, "name": n} for k, n in self.components],
        }


@dataclass
class PluginSet:
    """The result of loading: the plugin manager, the registry and one record per plugin."""

    manager: pluggy.PluginManager
    registry: Registry
    records: list[PluginRecord]


def _env_names(var: str) -> set[str] | None:
    value = os.environ.get(var)
    if value is None:
        return None
    return {n.strip() for n in value.split(",") if n.strip()}


def _strict() -> bool:
    return os.environ.get("KDCORE_STRICT_PLUGINS", "").strip().lower() in {"1", "true", "yes"}


def _collect(manager: pluggy.PluginManager, plugin_name: str, dist: str, version: str) -> list[Registration]:
    """Calls this plugin's hooks only, gathering (and checking) what it registers."""
    staged: list[Registration] = []
    for kind, hook_name in hookspecs.HOOKS.items():
        caller = getattr(manager.hook, hook_name)
        for impl in caller.get_hookimpls():
            if impl.plugin_name != plugin_name:
                continue

            def register(name, cls, *, aliases=(), summary=None, _kind=kind):
                aliases = tuple(aliases)
                validate_registration(_kind, name, cls, aliases)
                doc = (cls.__doc__ or "").strip().splitlines()
                staged.append(
                    Registration(
                        kind=_kind,
                        name=name,
                        cls=cls,
                        plugin=plugin_name,
                        distribution=dist,
                        version=version,
                        aliases=aliases,
                        summary=summary or (doc[0] if doc else ""),
                    )
                )

            impl.function(register=register)
    names = [(r.kind, r.name) for r in staged]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        kind, name = sorted(dupes)[0]
        raise PluginError(f"registers {kind} {name!r} twice")
    return staged


def _check_requirements(ep: md.EntryPoint) -> None:
    """A plugin built for another kdcore version fails to load, saying which version it needs."""
    from packaging.requirements import InvalidRequirement, Requirement

    from kdcore._version import __version__

    for line in (ep.dist.requires or []) if ep.dist is not None else []:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if (
            req.name.lower() == "kdcore"
            and not req.marker
            and req.specifier
            and not req.specifier.contains(__version__, prereleases=True)
        ):
            raise PluginError(
                f"needs kdcore{req.specifier}, but kdcore {__version__} is installed; "
                "upgrade kdcore or install a release of the plugin made for this version"
            )


def _add(pset: PluginSet, module: ModuleType, name: str, dist: str, version: str) -> PluginRecord:
    record = PluginRecord(name, dist, version, module.__name__, "loaded")
    pset.manager.register(module, name=name)
    try:
        staged = _collect(pset.manager, name, dist, version)
    except Exception:
        pset.manager.unregister(name=name)
        raise
    for reg in staged:
        pset.registry.add(reg)
    record.components = [(r.kind, r.name) for r in staged]
    return record


def load_plugins(entry_points: list[md.EntryPoint] | None = None) -> PluginSet:
    """Loads the core's components and every allowed entry point of group ``kdcore``."""
    from kdcore import builtins

    manager = pluggy.PluginManager(GROUP)
    manager.add_hookspecs(hookspecs)
    pset = PluginSet(manager, Registry(), [])
    from kdcore._version import __version__

    pset.records.append(_add(pset, builtins, CORE_PLUGIN, "kdcore", __version__))

    allow = _env_names("KDCORE_LOAD_PLUGINS")
    deny = _env_names("KDCORE_DISABLE_PLUGINS") or set()
    if entry_points is None:
        entry_points = sorted(md.entry_points(group=GROUP), key=lambda e: e.name)
    seen: set[str] = {CORE_PLUGIN}
    for ep in entry_points:
        dist = ep.dist.name if ep.dist is not None else "?"
        version = ep.dist.version if ep.dist is not None else "?"
        if ep.name in seen:
            # The same entry point seen twice (e.g. a package on sys.path twice) is loaded once.
            continue
        seen.add(ep.name)
        if (allow is not None and ep.name not in allow) or ep.name in deny:
            var = "KDCORE_DISABLE_PLUGINS" if ep.name in deny else "KDCORE_LOAD_PLUGINS"
            pset.records.append(
                PluginRecord(ep.name, dist, version, ep.value, "disabled", f"excluded by {var}")
            )
            continue
        try:
            _check_requirements(ep)
            module = ep.load()
            if not isinstance(module, ModuleType):
                raise PluginError(f"entry point {ep.value!r} must name a module")
            pset.records.append(_add(pset, module, ep.name, dist, version))
        except Exception as exc:  # one broken plugin must not break the others
            reason = f"{type(exc).__name__}: {exc}"
            pset.records.append(PluginRecord(ep.name, dist, version, ep.value, "failed", reason))
            message = f"plugin {ep.name!r} ({dist} {version}) failed to load: {reason}"
            if _strict():
                raise PluginError(message + " (KDCORE_STRICT_PLUGINS is set)") from exc
            warnings.warn(
                message + "; it is skipped (`kdcore plugins` shows it)", PluginLoadWarning, stacklevel=2
            )
    return pset


_lock = threading.Lock()
_current: PluginSet | None = None


def get_plugins() -> PluginSet:
    """The plugins of this process, loaded on first use."""
    global _current
    with _lock:
        if _current is None:
            _current = load_plugins()
        return _current


def get_registry() -> Registry:
    return get_plugins().registry


def reset_plugins() -> None:
    """Forgets the loaded plugins; the next use loads them again (tests, notebooks)."""
    global _current
    with _lock:
        _current = None
