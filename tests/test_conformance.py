"""Every registered component passes the conformance check (as timm tests every model)."""

import pytest

from kdcore.plugins import load_plugins
from kdcore.testing import check_component

_registry = load_plugins().registry
CASES = [(kind, reg.qualified_name) for kind in ("student", "teacher", "loss", "adapter")
         for reg in _registry.list(kind)]


@pytest.mark.parametrize("kind, name", CASES, ids=[f"{k}-{n}" for k, n in CASES])
def test_component_conforms(kind, name):
    check_component(kind, name)
