"""The fwdadapt plugin module registers its loss through the kdcore hooks."""

from __future__ import annotations

import importlib.metadata

import kdcore
import kdcore_fwdadapt
from kdcore.testing import check_component
from kdcore_fwdadapt import ForwardAdaptationLoss, plugin


def test_registers_forward_adaptation() -> None:
    calls: list[tuple] = []

    def register(name, cls, *, aliases=(), summary=None):
        calls.append((name, cls, summary))

    plugin.kdcore_register_losses(register)
    assert [(name, cls) for name, cls, _ in calls] == [("forward-adaptation", ForwardAdaptationLoss)]
    assert calls[0][2]  # a summary for `kdcore list`
    assert issubclass(ForwardAdaptationLoss, kdcore.Loss)


def test_entry_point_names_the_plugin_module() -> None:
    eps = [e for e in importlib.metadata.entry_points(group="kdcore") if e.name == "fwdadapt"]
    assert [e.value for e in eps] == ["kdcore_fwdadapt.plugin"]
    assert eps[0].load() is plugin
    assert importlib.metadata.version("kdcore-fwdadapt") == kdcore_fwdadapt.__version__


def test_passes_the_conformance_check() -> None:
    check_component("loss", "forward-adaptation")
