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
    "export",
    "hookimpl",
    "list_components",
    "load",
    "run",
    "validate",
]

_API = {"run", "validate", "create", "load", "list_components"}


def __getattr__(name: str):
    # The API pulls in the engine (torch, timm, ...); import it on first use only.
    if name in _API:
        from kdcore import api

        return getattr(api, name)
    if name == "export":
        # kdcore.export is both the module and, called, the function export(run_dir, path, **options):
        # importing the submodule binds its name on the package, so the module itself is callable.
        import kdcore.export

        return kdcore.export
    raise AttributeError(f"module 'kdcore' has no attribute {name!r}")
