"""The featmatch plugin module registers its loss and adapters through the kdcore hooks."""

from __future__ import annotations

import importlib.metadata

import kdcore
import kdcore_featmatch
from kdcore_featmatch import Conv1x1Adapter, FeatureMatchingLoss, IdentityAdapter, plugin


def _recorder(calls: list):
    def register(name, cls, *, aliases=(), summary=None):
        calls.append((name, cls, summary))

    return register


def test_registers_the_loss() -> None:
    calls: list = []
    plugin.kdcore_register_losses(_recorder(calls))
    assert [(n, c) for n, c, _ in calls] == [("feature-matching", FeatureMatchingLoss)]
    assert all(summary for _, _, summary in calls)
    assert issubclass(FeatureMatchingLoss, kdcore.Loss)


def test_registers_the_adapters() -> None:
    calls: list = []
    plugin.kdcore_register_adapters(_recorder(calls))
    assert [(n, c) for n, c, _ in calls] == [
        ("conv1x1", Conv1x1Adapter),
        ("identity", IdentityAdapter),
    ]
    assert all(summary for _, _, summary in calls)
    assert all(issubclass(c, kdcore.Adapter) for _, c, _ in calls)


def test_entry_point_names_the_plugin_module() -> None:
    eps = [e for e in importlib.metadata.entry_points(group="kdcore") if e.name == "featmatch"]
    assert [e.value for e in eps] == ["kdcore_featmatch.plugin"]
    assert eps[0].load() is plugin
    assert importlib.metadata.version("kdcore-featmatch") == kdcore_featmatch.__version__
