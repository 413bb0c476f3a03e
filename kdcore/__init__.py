"""kdcore: knowledge distillation for image super-resolution and enhancement.

The public surface is the names in ``__all__``; everything else is private.
"""

from __future__ import annotations

from kdcore.errors import KdcoreError, SpecError
from kdcore.hookspecs import hookimpl
from kdcore.interfaces import Adapter, Loss, ModelOutput, Student, Task, Teacher

__version__ = "0.1.0"

__all__ = [
    "Adapter",
    "KdcoreError",
    "Loss",
    "ModelOutput",
    "SpecError",
    "Student",
    "Task",
    "Teacher",
    "__version__",
    "create",
    "hookimpl",
    "list_components",
    "load",
    "report",
    "run",
    "validate",
]

_API = {"run", "validate", "create", "load", "list_components"}


def __getattr__(name: str):
    # The API pulls in the engine (torch, timm, ...); import it on first use only.
    if name in _API:
        from kdcore import api

        return getattr(api, name)
    if name == "report":
        # the package kdcore.report, callable as kdcore.report(run_dirs, path=None) -> Path
        import importlib

        return importlib.import_module("kdcore.report")
    raise AttributeError(f"module 'kdcore' has no attribute {name!r}")
