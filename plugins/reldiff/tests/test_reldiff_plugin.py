"""The reldiff plugin module registers its loss through the kdcore hooks."""

from __future__ import annotations

import importlib.metadata

import kdcore
import kdcore_reldiff
from kdcore_reldiff import RelativeDifferenceLoss, plugin


def test_registers_relative_difference() -> None:
    calls: list[tuple] = []

    def register(name, cls, *, aliases=(), summary=None):
        calls.append((name, cls, tuple(aliases), summary))

    plugin.kdcore_register_losses(register)
    assert [(name, cls) for name, cls, _, _ in calls] == [
        ("relative-difference", RelativeDifferenceLoss)
    ]
    assert calls[0][3]  # a summary for `kdcore list`
    assert issubclass(RelativeDifferenceLoss, kdcore.Loss)


def test_entry_point_names_the_plugin_module() -> None:
    eps = [e for e in importlib.metadata.entry_points(group="kdcore") if e.name == "reldiff"]
    assert [e.value for e in eps] == ["kdcore_reldiff.plugin"]
    assert eps[0].load() is plugin
    assert importlib.metadata.version("kdcore-reldiff") == kdcore_reldiff.__version__
